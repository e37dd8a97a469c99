//! The node agent against a real nats-server with JetStream: real samples of
//! this machine land in PAS_SAMPLES, and a server killed mid-run loses none of
//! the samples taken during the outage (up to the buffer bound).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pas_agent::{Agent, Config, KubeMode, Metrics};
use pas_integration_tests::{NatsServer, eventually, stream_info};
use pas_nats::NatsConfig;
use pas_schemas::subjects::{Prefix, STREAM_SAMPLES};
use pas_schemas::{CpuSample, Message};
use tokio_util::sync::CancellationToken;

fn agent_config(server: &NatsServer, interval_ms: u64, buffer: usize) -> Config {
    Config {
        node_name: Some("test-node.example.internal".into()),
        interval: Duration::from_millis(interval_ms),
        kubernetes: KubeMode::Off,
        buffer_capacity: buffer,
        listen: "127.0.0.1:0".parse().unwrap(),
        nats: NatsConfig {
            urls: vec![server.url()],
            ack_timeout: Duration::from_millis(500),
            reconnect_max_delay: Duration::from_millis(500),
            ..NatsConfig::default()
        },
        ..Config::default()
    }
}

async fn provision(server: &NatsServer) -> async_nats::jetstream::Context {
    let conn = pas_nats::connect(
        &NatsConfig {
            urls: vec![server.url()],
            ..Default::default()
        },
        "test",
        false,
    )
    .await
    .unwrap();
    pas_nats::provision::init(&conn.jetstream, Default::default())
        .await
        .unwrap();
    conn.jetstream
}

/// Every message in PAS_SAMPLES, decoded, with its Nats-Msg-Id.
async fn stored_samples(js: &async_nats::jetstream::Context) -> Vec<(CpuSample, String, String)> {
    let mut stream = js.get_stream(STREAM_SAMPLES).await.unwrap();
    let info = stream.info().await.unwrap().clone();
    let mut out = Vec::new();
    for seq in info.state.first_sequence..=info.state.last_sequence {
        if info.state.messages == 0 {
            break;
        }
        let raw = stream.get_raw_message(seq).await.unwrap();
        let sample: CpuSample = pas_schemas::decode(&raw.payload).unwrap();
        let id = raw
            .headers
            .get(async_nats::header::NATS_MESSAGE_ID)
            .map(|v| v.to_string())
            .unwrap_or_default();
        out.push((sample, id, raw.subject.to_string()));
    }
    out
}

async fn stream_count(js: &async_nats::jetstream::Context) -> u64 {
    stream_info(js, STREAM_SAMPLES).await.state.messages
}

fn start(
    config: Config,
) -> (
    Metrics,
    CancellationToken,
    tokio::task::JoinHandle<Result<(), pas_agent::Error>>,
) {
    let agent = Agent::new(config).unwrap();
    let metrics = agent.metrics();
    let stop = CancellationToken::new();
    let handle = tokio::spawn(agent.run(stop.clone()));
    (metrics, stop, handle)
}

/// Keeps one core busy so every interval has CPU use to measure.
struct Burner(Arc<AtomicBool>);

impl Burner {
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            let mut x = 0u64;
            while !flag.load(Ordering::Relaxed) {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                std::hint::black_box(x);
            }
        });
        Burner(stop)
    }
}

impl Drop for Burner {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_publishes_real_samples_of_this_machine() {
    let server = NatsServer::start();
    let js = provision(&server).await;
    let _burn = Burner::start();
    let (metrics, stop, handle) = start(agent_config(&server, 250, 1000));

    eventually(Duration::from_secs(20), "five samples in PAS_SAMPLES", || async {
        (stream_count(&js).await >= 5).then_some(())
    })
    .await;
    stop.cancel();
    handle.await.unwrap().unwrap();

    let samples = stored_samples(&js).await;
    assert_eq!(
        samples.len() as u64,
        metrics.published.get(),
        "every acknowledged sample is stored once"
    );
    assert_eq!(
        metrics.samples.get(),
        metrics.published.get(),
        "shutdown drained the outbox"
    );
    let cores = std::thread::available_parallelism().unwrap().get() as f64;
    let subject = Prefix::live().node_cpu("test-node.example.internal").unwrap();
    let mut last = None;
    for (sample, id, subj) in &samples {
        assert_eq!(subj, &subject);
        assert_eq!(sample.node, "test-node.example.internal");
        assert_eq!(id, &sample.msg_id(), "Nats-Msg-Id is set for de-duplication");
        assert_eq!(sample.cpu_capacity_millicores, Some(cores * 1000.0));
        // A busy core is always measured: a first reading of 0 % (a fresh
        // sysinfo System) would fail here.
        assert!(
            sample.cpu_used_millicores > 100.0 && sample.cpu_used_millicores <= cores * 1000.0,
            "implausible CPU use {} of {} millicores",
            sample.cpu_used_millicores,
            cores * 1000.0
        );
        if let Some(prev) = last {
            assert!(sample.timestamp > prev, "timestamps increase");
        }
        last = Some(sample.timestamp);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_sample_is_lost_when_nats_is_killed_and_restarted() {
    let mut server = NatsServer::start();
    let js = provision(&server).await;
    let interval = 200;
    let (metrics, stop, handle) = start(agent_config(&server, interval, 1000));

    eventually(Duration::from_secs(20), "three published samples", || async {
        (metrics.published.get() >= 3).then_some(())
    })
    .await;
    server.kill();
    let before_outage = metrics.samples.get();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let taken_during_outage = metrics.samples.get() - before_outage;
    assert!(
        taken_during_outage >= 8,
        "the agent kept sampling while NATS was down ({taken_during_outage})"
    );
    assert!(metrics.buffered.get() > 0, "samples wait in the outbox");
    server.restart();

    eventually(
        Duration::from_secs(30),
        "the outbox to drain after the restart",
        || async {
            (metrics.buffered.get() == 0 && metrics.published.get() > before_outage + taken_during_outage)
                .then_some(())
        },
    )
    .await;
    stop.cancel();
    handle.await.unwrap().unwrap();

    drop(js);
    let js = provision(&server).await; // a fresh connection to the restarted server
    let samples = stored_samples(&js).await;
    assert_eq!(metrics.dropped.get(), 0);
    assert_eq!(
        samples.len() as u64,
        metrics.samples.get(),
        "every sample taken is stored, exactly once"
    );
    // No hole in time: consecutive samples are about one interval apart.
    let gaps: Vec<i64> = samples
        .windows(2)
        .map(|w| (w[1].0.timestamp - w[0].0.timestamp).num_milliseconds())
        .collect();
    let worst = gaps.iter().copied().max().unwrap();
    assert!(
        worst < 3 * interval as i64,
        "a gap of {worst} ms in the stored samples"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_outbox_drops_the_oldest_and_counts_them() {
    let mut server = NatsServer::start();
    let js = provision(&server).await;
    let (metrics, stop, handle) = start(agent_config(&server, 200, 4));
    eventually(Duration::from_secs(20), "a published sample", || async {
        (metrics.published.get() >= 1).then_some(())
    })
    .await;
    server.kill();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(metrics.buffered.get(), 4, "the outbox holds at most its capacity");
    assert!(metrics.dropped.get() > 0);
    server.restart();
    eventually(Duration::from_secs(30), "the outbox to drain", || async {
        (metrics.buffered.get() == 0).then_some(())
    })
    .await;
    stop.cancel();
    handle.await.unwrap().unwrap();
    drop(js);
    let js = provision(&server).await;
    let stored = stored_samples(&js).await.len() as u64;
    assert_eq!(
        stored + metrics.dropped.get(),
        metrics.samples.get(),
        "stored plus dropped is every sample"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statefulset_pods_are_sampled_from_their_cgroups() {
    use pas_agent::pods::{PodInfo, PodMap};

    let server = NatsServer::start();
    let js = provision(&server).await;
    // A cgroup v2 tree as the kubelet's cgroupfs driver lays it out, with a
    // usage counter that grows by half a core.
    let cgroups = tempfile::tempdir().unwrap();
    let uid = "0b6f6ad4-3a9c-4e27-9d0e-2b4a1c9f7e01";
    let other = "5c1d2e3f-4a5b-6c7d-8e9f-0a1b2c3d4e5f";
    let dir = cgroups.path().join(format!("kubepods/burstable/pod{uid}"));
    let other_dir = cgroups.path().join(format!("kubepods/besteffort/pod{other}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&other_dir).unwrap();
    let stop_counter = CancellationToken::new();
    let counter = {
        let (dir, other_dir, stop) = (dir.clone(), other_dir.clone(), stop_counter.clone());
        tokio::spawn(async move {
            let start = std::time::Instant::now();
            while !stop.is_cancelled() {
                let usec = start.elapsed().as_micros() as u64 / 2; // 500 millicores
                std::fs::write(dir.join("cpu.stat"), format!("usage_usec {usec}\n")).unwrap();
                std::fs::write(other_dir.join("cpu.stat"), format!("usage_usec {usec}\n")).unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let map = PodMap::default();
    map.write().unwrap().insert(
        uid.into(),
        PodInfo {
            namespace: "shop".into(),
            name: "web-0".into(),
            workload: Some("web".into()),
            cpu_request_millicores: Some(1000.0),
        },
    );
    // A pod of a Deployment: measured, but not published (not a scaling target).
    map.write().unwrap().insert(
        other.into(),
        PodInfo {
            namespace: "shop".into(),
            name: "api-x".into(),
            workload: None,
            cpu_request_millicores: None,
        },
    );
    let mut config = agent_config(&server, 250, 1000);
    config.cgroup_root = cgroups.path().to_owned();
    let agent = Agent::new(config).unwrap().with_pod_map(map);
    let metrics = agent.metrics();
    let stop = CancellationToken::new();
    let handle = tokio::spawn(agent.run(stop.clone()));

    eventually(Duration::from_secs(20), "four pod samples", || async {
        let n = stored_samples(&js)
            .await
            .iter()
            .filter(|(s, _, _)| s.is_pod())
            .count();
        (n >= 4).then_some(())
    })
    .await;
    stop.cancel();
    handle.await.unwrap().unwrap();
    stop_counter.cancel();
    counter.await.unwrap();

    let samples = stored_samples(&js).await;
    let pods: Vec<_> = samples.iter().filter(|(s, _, _)| s.is_pod()).collect();
    assert_eq!(metrics.pods.get(), 1);
    for (sample, _, subject) in &pods {
        assert_eq!(subject, "pas.cpu.pod.shop.web.web-0");
        assert_eq!(sample.workload.as_deref(), Some("web"));
        assert_eq!(sample.cpu_requested_millicores, Some(1000.0));
        assert!(
            (350.0..650.0).contains(&sample.cpu_used_millicores),
            "half a core measured as {} millicores",
            sample.cpu_used_millicores
        );
    }
    assert!(samples.iter().all(|(s, _, _)| s.pod.as_deref() != Some("api-x")));
}
