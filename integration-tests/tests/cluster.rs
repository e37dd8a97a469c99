//! NATS as a three-node JetStream cluster: three real nats-servers on
//! loopback routed to each other, every stream and bucket with three
//! replicas (`pas bus init --replicas 3`), the forecaster and the scaler
//! running with all three URLs. Mid-run the server leading PAS_SAMPLES is
//! killed: no acknowledged sample is lost, and forecasts and decisions
//! resume within the time stated below.
//!
//! No Kubernetes API server can run here: the scaler scales its simulated
//! StatefulSet.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use futures::StreamExt;
use pas_integration_tests::{binary, eventually, free_port, stream_info};
use pas_nats::NatsConfig;
use pas_nats::provision::{self, Options};
use pas_scaler::cluster::Simulated;
use pas_schemas::subjects::{Prefix, STREAM_SAMPLES};
use pas_schemas::{CpuSample, SCHEMA_VERSION};
use tokio_util::sync::CancellationToken;

/// Forecasts and decisions must resume within this after the leader of
/// PAS_SAMPLES dies. Measured over ten runs here: 6 to 14 s mostly, once
/// 51 s (when the dead server also led the cluster's metadata, elections
/// and the recreation of the forecaster's ordered consumer take longer).
const RESUME_WITHIN: Duration = Duration::from_secs(90);

struct Node {
    name: String,
    port: u16,
    child: Option<Child>,
}

struct Cluster {
    _dir: tempfile::TempDir,
    nodes: Vec<Node>,
}

impl Cluster {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, r)| format!("nats-route://127.0.0.1:{r}"))
            .collect();
        let mut nodes = Vec::new();
        for (i, (client, route)) in ports.iter().enumerate() {
            let name = format!("n{i}");
            let store = dir.path().join(&name);
            let config = dir.path().join(format!("{name}.conf"));
            std::fs::write(
                &config,
                format!(
                    "server_name: {name}\nlisten: 127.0.0.1:{client}\nlame_duck_grace_period: 1s\n\
                     jetstream {{ store_dir: \"{}\", max_memory_store: 256MB, max_file_store: 20GB }}\n\
                     cluster {{ name: pas, listen: 127.0.0.1:{route}, routes: [{}] }}\n",
                    store.display(),
                    routes.join(", ")
                ),
            )
            .unwrap();
            let log = std::fs::File::create(dir.path().join(format!("{name}.log"))).unwrap();
            let child = Command::new(binary())
                .arg("-c")
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(Stdio::from(log))
                .spawn()
                .expect("start nats-server");
            nodes.push(Node {
                name,
                port: *client,
                child: Some(child),
            });
        }
        Cluster { _dir: dir, nodes }
    }

    fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.port))
            .collect()
    }

    fn kill(&mut self, name: &str) {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.name == name)
            .expect("a node of that name");
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn nats(cluster: &Cluster) -> NatsConfig {
    NatsConfig {
        urls: cluster.urls(),
        reconnect_max_delay: Duration::from_secs(2),
        ..NatsConfig::default()
    }
}

fn sample(at: chrono::DateTime<Utc>) -> CpuSample {
    CpuSample {
        schema_version: SCHEMA_VERSION,
        timestamp: at,
        node: "node-1".into(),
        namespace: Some("shop".into()),
        workload: Some("web".into()),
        pod: Some("web-0".into()),
        cpu_used_millicores: 400.0 + (at.timestamp() % 7) as f64 * 20.0,
        cpu_requested_millicores: Some(1000.0),
        cpu_capacity_millicores: None,
        cpu_throttled_ratio: None,
    }
}

/// The next message on `sub`, waiting up to a minute.
async fn next(sub: &mut async_nats::Subscriber) -> Option<async_nats::Message> {
    tokio::time::timeout(RESUME_WITHIN + Duration::from_secs(30), sub.next())
        .await
        .ok()
        .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_leader_of_pas_samples_loses_no_sample_and_forecasts_and_decisions_resume() {
    let mut cluster = Cluster::start();
    let admin = pas_nats::connect(&nats(&cluster), "admin", true).await.unwrap();
    let js = admin.jetstream.clone();
    // Until the cluster has elected its meta leader, stream creation fails.
    eventually(
        Duration::from_secs(60),
        "the streams created with three replicas",
        || {
            let js = js.clone();
            async move {
                provision::init(
                    &js,
                    Options {
                        replicas: Some(3),
                        ..Options::default()
                    },
                )
                .await
                .ok()
            }
        },
    )
    .await;
    let status = provision::status(
        &js,
        Options {
            replicas: Some(3),
            ..Options::default()
        },
    )
    .await
    .unwrap();
    assert!(
        status
            .iter()
            .all(|s| s.exists && s.replicas == 3 && s.drift.is_empty()),
        "{status:?}"
    );

    // A minute of history, then a sample a second, each retried until acked
    // (as the agent's outbox does), each with its own message id.
    let prefix = Prefix::live();
    let acked = Arc::new(AtomicU64::new(0));
    let stop_feed = CancellationToken::new();
    let now = Utc::now();
    for back in (1..=60).rev() {
        let s = sample(now - TimeDelta::seconds(back));
        let out = pas_nats::Outgoing::new(prefix.sample(&s).unwrap(), &s).unwrap();
        pas_nats::publish(&js, &out).await.unwrap().await.unwrap();
        acked.fetch_add(1, Ordering::Relaxed);
    }
    let feeding = tokio::spawn({
        let (js, acked, stop, prefix) = (js.clone(), acked.clone(), stop_feed.clone(), prefix.clone());
        async move {
            let mut ticks = tokio::time::interval(Duration::from_secs(1));
            while !stop.is_cancelled() {
                ticks.tick().await;
                let s = sample(Utc::now());
                let out = pas_nats::Outgoing::new(prefix.sample(&s).unwrap(), &s).unwrap();
                loop {
                    let sent = match pas_nats::publish(&js, &out).await {
                        Ok(ack) => ack.await.is_ok(),
                        Err(_) => false,
                    };
                    if sent {
                        acked.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    });

    let mut forecasts = admin.client.subscribe(prefix.all_forecasts()).await.unwrap();
    let mut decisions = admin.client.subscribe(prefix.all_decisions()).await.unwrap();
    // (Decisions come every tick from what the scaler holds; which forecast
    // it decided on is read from its consumer below.)
    admin.client.flush().await.unwrap();

    let stop = CancellationToken::new();
    let forecaster = pas_forecaster::Forecaster::new(pas_forecaster::Config {
        step: Duration::from_secs(1),
        // Seconds-long steps: a lead time to match (the baseline's 10 steps reach past it).
        lead: Duration::from_secs(5),
        tick_delay: Duration::from_millis(300),
        history: 40,
        lateness: Duration::from_secs(3),
        partitions: 4,
        replica: Some("f0".into()),
        lease: Duration::from_secs(3),
        listen: "127.0.0.1:0".parse().unwrap(),
        nats: nats(&cluster),
        ..pas_forecaster::Config::default()
    })
    .unwrap();
    let forecasting = tokio::spawn(forecaster.run(stop.clone()));
    let sim = Simulated::new();
    let on: BTreeMap<String, String> = [
        ("pas.io/enabled", "true"),
        ("pas.io/target-utilization", "50"),
        ("pas.io/startup", "10s"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    sim.insert("shop", "web", 2, on, Some(1000.0));
    let scaler = pas_scaler::Scaler::new(
        pas_scaler::Config {
            tick: Duration::from_secs(1),
            lease: Duration::from_secs(3),
            replica: Some("s0".into()),
            listen: "127.0.0.1:0".parse().unwrap(),
            nats: nats(&cluster),
            ..pas_scaler::Config::default()
        },
        sim.clone(),
    )
    .unwrap();
    let scaling = tokio::spawn(scaler.run(stop.clone()));

    assert!(
        next(&mut forecasts).await.is_some(),
        "no forecast before the kill"
    );
    assert!(
        next(&mut decisions).await.is_some(),
        "no decision before the kill"
    );

    // Kill the server leading PAS_SAMPLES.
    let info = stream_info(&js, STREAM_SAMPLES).await.clone();
    let leader = info
        .cluster
        .and_then(|c| c.leader)
        .expect("PAS_SAMPLES has a leader");
    cluster.kill(&leader);
    let killed = Instant::now();
    let killed_at = Utc::now();
    // What counts: a forecast whose window holds samples published after
    // the kill (so PAS_SAMPLES is read again), and a decision on such a
    // forecast (so PAS_FORECASTS is read again), not a forecast or decision
    // made from what the stages already held.
    let forecast_after = loop {
        let msg = next(&mut forecasts)
            .await
            .expect("forecasts resume after the kill");
        let f: pas_schemas::Forecast = pas_schemas::decode(&msg.payload).unwrap();
        if f.window_end > killed_at {
            break killed.elapsed();
        }
    };
    // The scaler acks a forecast once it has decided on it: its consumer's
    // ack floor passing that forecast is a decision made on it.
    let forecasts_now = eventually(Duration::from_secs(10), "PAS_FORECASTS' last sequence", || {
        let js = js.clone();
        async move {
            Some(
                js.get_stream("PAS_FORECASTS")
                    .await
                    .ok()?
                    .info()
                    .await
                    .ok()?
                    .state
                    .last_sequence,
            )
        }
    })
    .await;
    eventually(
        RESUME_WITHIN,
        "the scaler deciding on a forecast made after the kill",
        || {
            let js = js.clone();
            async move {
                let stream = js.get_stream("PAS_FORECASTS").await.ok()?;
                let floor = stream
                    .consumer_info("pas-scaler-forecasts")
                    .await
                    .ok()?
                    .ack_floor
                    .stream_sequence;
                (floor >= forecasts_now).then_some(())
            }
        },
    )
    .await;
    let decision_after = killed.elapsed();
    assert!(next(&mut decisions).await.is_some(), "decisions are published");
    println!(
        "leader {leader} killed: first forecast after {forecast_after:?}, first decision after {decision_after:?}"
    );
    assert!(
        forecast_after < RESUME_WITHIN,
        "forecasts resumed after {forecast_after:?}"
    );
    assert!(
        decision_after < RESUME_WITHIN,
        "decisions resumed after {decision_after:?}"
    );

    // Every acknowledged sample is held by the surviving servers, once.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop_feed.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), feeding).await;
    let sent = acked.load(Ordering::Relaxed);
    let held = eventually(Duration::from_secs(20), "the samples held", || {
        let js = js.clone();
        async move {
            let mut stream = js.get_stream(STREAM_SAMPLES).await.ok()?;
            let info = stream.info().await.ok()?;
            (info.state.messages >= sent).then_some(info.state.messages)
        }
    })
    .await;
    assert_eq!(held, sent, "acked {sent} samples, the stream holds {held}");
    let new_leader = stream_info(&js, STREAM_SAMPLES)
        .await
        .cluster
        .clone()
        .and_then(|c| c.leader);
    assert!(
        new_leader.is_some_and(|l| l != leader),
        "a new leader was elected"
    );

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(15), forecasting)
        .await
        .expect("the forecaster stops")
        .unwrap()
        .unwrap();
    tokio::time::timeout(Duration::from_secs(15), scaling)
        .await
        .expect("the scaler stops")
        .unwrap()
        .unwrap();
}
