//! The trainer against a real nats-server with JetStream and a real
//! libtorch: recorded samples replayed into PAS_SAMPLES become an accepted
//! model version in `pas-models` with the right digest; a restart stores no
//! duplicate; a diverging run stores a rejected version and leaves the
//! accepted one in place.

use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::object_store::ObjectStore;
use futures::StreamExt;
use pas_integration_tests::{NatsServer, Process, connect_and_provision, eventually, repo_root, spawn_pas};
use pas_models::Forecaster;
use pas_models::Trace;
use pas_models::lstm::{Lstm, LstmConfig};
use pas_nats::NatsConfig;
use pas_schemas::subjects::{BUCKET_MODELS, Prefix, STREAM_DLQ};
use pas_schemas::{CpuSample, ModelManifest, SCHEMA_VERSION};
use pas_trainer::{Config, Metrics, Trainer};
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

const RUN: &str = "trainer-test";

fn config(server: &NatsServer) -> Config {
    Config {
        run: Some(RUN.into()),
        step: Duration::from_secs(300),
        min_history: 1500,
        max_history: 5000,
        retrain_after: Duration::from_secs(86_400),
        check_interval: Duration::from_millis(200),
        keep_versions: 1,
        threads: 1,
        // One workload's own model; the global model has its test below.
        global: false,
        model: LstmConfig {
            window: 24,
            hidden: 16,
            max_epochs: 8,
            patience: 0,
            ..LstmConfig::default()
        },
        listen: "127.0.0.1:0".parse().unwrap(),
        // The stage runs as its own user, with the accounts file's permissions.
        nats: NatsConfig {
            ack_timeout: NatsConfig::default().ack_timeout,
            ..server.as_user("trainer")
        },
        ..Config::default()
    }
}

/// Publishes trace rows as one pod's samples (1000 m requested, so the
/// workload's utilisation equals the trace's CPU percentage).
async fn replay(js: &jetstream::Context, rows: &[(chrono::DateTime<chrono::Utc>, f64)]) -> u64 {
    replay_as(js, RUN, "web", rows, 10.0).await
}

/// Publishes trace rows as the samples of `workload`'s one pod under
/// `run`, its use `scale` × the trace's value.
async fn replay_as(
    js: &jetstream::Context,
    run: &str,
    workload: &str,
    rows: &[(chrono::DateTime<chrono::Utc>, f64)],
    scale: f64,
) -> u64 {
    let prefix = Prefix::replay(run).unwrap();
    let mut last = 0;
    for &(at, cpu) in rows {
        let sample = CpuSample {
            schema_version: SCHEMA_VERSION,
            timestamp: at,
            node: "node-1".into(),
            namespace: Some("shop".into()),
            workload: Some(workload.into()),
            pod: Some(format!("{workload}-0")),
            cpu_used_millicores: cpu * scale,
            cpu_requested_millicores: Some(1000.0),
            cpu_capacity_millicores: None,
            cpu_throttled_ratio: None,
        };
        let out = pas_nats::Outgoing::new(prefix.sample(&sample).unwrap(), &sample).unwrap();
        last = pas_nats::publish(js, &out).await.unwrap().await.unwrap().sequence;
    }
    last
}

async fn read(store: &ObjectStore, name: &str) -> Option<Vec<u8>> {
    let mut object = store.get(name).await.ok()?;
    let mut bytes = Vec::new();
    object.read_to_end(&mut bytes).await.unwrap();
    Some(bytes)
}

async fn manifest(store: &ObjectStore, version: u64) -> Option<ModelManifest> {
    let bytes = read(store, &format!("replay/{RUN}/shop/web/v{version}/manifest.json")).await?;
    Some(pas_schemas::decode(&bytes).unwrap())
}

fn start(
    config: Config,
) -> (
    CancellationToken,
    Metrics,
    tokio::task::JoinHandle<Result<(), pas_trainer::Error>>,
) {
    let trainer = Trainer::new(config).unwrap();
    let metrics = trainer.metrics();
    let stop = CancellationToken::new();
    let task = tokio::spawn(trainer.run(stop.clone()));
    (stop, metrics, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trains_an_accepted_model_once_and_keeps_it_when_a_run_diverges() {
    let server = NatsServer::with_accounts();
    let conn = connect_and_provision(&server).await;
    let js = conn.jetstream.clone();
    let store = js.get_object_store(BUCKET_MODELS).await.unwrap();
    let trace = Trace::read(&repo_root().join("testdata/traces/nab-ec2_cpu_utilization_53ea38.csv")).unwrap();
    let mut announcements = conn
        .client
        .subscribe(format!("replay.{RUN}.pas.model.>"))
        .await
        .unwrap();
    conn.client.flush().await.unwrap();

    let last_sequence = replay(&js, &trace.points[..2000]).await;
    // Bad input on the trainer's subject goes to the DLQ; the trainer goes on.
    js.publish(
        format!("replay.{RUN}.pas.cpu.pod.shop.web.web-0"),
        "not json".into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();

    // First run: one accepted version from the replayed history.
    let (stop, metrics, task) = start(config(&server));
    let v1 = eventually(Duration::from_secs(120), "version 1 stored", || async {
        manifest(&store, 1).await
    })
    .await;
    assert!(
        v1.accepted,
        "the LSTM beat naive on this trace: {:?}",
        v1.validation
    );
    assert!(v1.validation["lstm"] < v1.validation["naive"]);
    assert!(v1.validation.contains_key("holt-winters"), "{:?}", v1.validation);
    assert_eq!(v1.key, "shop/web");
    assert_eq!(v1.architecture, "lstm");
    assert_eq!(v1.step_seconds, 300.0);
    assert_eq!(
        v1.training.last_sequence, last_sequence,
        "trained on everything replayed"
    );
    assert_eq!(v1.training.to, trace.points[1999].0);
    let weights = read(&store, &format!("replay/{RUN}/shop/web/v1/weights.safetensors"))
        .await
        .unwrap();
    assert_eq!(
        v1.digest,
        pas_models::digest(&weights),
        "the manifest's digest is the stored weights'"
    );
    // The stored weights are a working model.
    let lstm_config: LstmConfig =
        serde_json::from_value(serde_json::to_value(&v1.hyper_parameters).unwrap()).unwrap();
    let model = Lstm::from_safetensors(lstm_config, &v1.normalisation, &weights).unwrap();
    let history: Vec<f64> = trace.points[1900..2000].iter().map(|p| p.1).collect();
    let p = model.predict(&history).unwrap();
    assert!(p.values.iter().all(|v| (0.0..10.0).contains(v)), "{p:?}");
    let announced = tokio::time::timeout(Duration::from_secs(5), announcements.next())
        .await
        .unwrap()
        .unwrap();
    let announced: ModelManifest = pas_schemas::decode(&announced.payload).unwrap();
    assert_eq!(announced, v1);
    assert_eq!(metrics.versions("accepted"), 1);
    // It read the workload's stored seasonal history first, as its own user.
    assert!(metrics.history_reads("ok") >= 1 && metrics.history_reads("failed") == 0);
    assert!(metrics.samples() >= 2000);
    stop.cancel();
    task.await.unwrap().unwrap();

    // Restart: the state is rebuilt, nothing is due, nothing is stored twice.
    let (stop, metrics, task) = start(config(&server));
    eventually(Duration::from_secs(30), "state rebuilt", || async {
        (metrics.samples() >= 2000).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(manifest(&store, 2).await.is_none(), "a restart trained again");
    assert!(
        tokio::time::timeout(Duration::from_millis(200), announcements.next())
            .await
            .is_err()
    );
    stop.cancel();
    task.await.unwrap().unwrap();

    // A run that diverges (absurd learning rate) on new data: version 2 is
    // stored rejected, and version 1 stays although only one version is kept.
    let mut diverging = config(&server);
    diverging.retrain_after = Duration::from_secs(3600);
    diverging.model.learning_rate = 1e30;
    diverging.model.clip_norm = 0.0;
    let (stop, metrics, task) = start(diverging);
    replay(&js, &trace.points[2000..2100]).await;
    let v2 = eventually(Duration::from_secs(120), "version 2 stored", || async {
        manifest(&store, 2).await
    })
    .await;
    assert!(!v2.accepted);
    assert!(v2.validation.contains_key("diverged"), "{:?}", v2.validation);
    assert_eq!(metrics.versions("diverged"), 1);
    let kept = manifest(&store, 1)
        .await
        .expect("the newest accepted version is never pruned");
    assert_eq!(kept, v1);
    stop.cancel();
    task.await.unwrap().unwrap();

    // The bad message was dead-lettered, not dropped.
    let mut dlq = js.get_stream(STREAM_DLQ).await.unwrap();
    assert!(dlq.info().await.unwrap().state.messages >= 1);
}

/// A trainer started before `pas bus init` waits for its bucket, stream
/// and consumer (the chart's bus-init job may run after it) instead of
/// exiting; and SIGTERM with NATS down exits within 10 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_for_bus_init_and_exits_within_ten_seconds_with_nats_down() {
    let mut server = NatsServer::with_accounts();
    let (stop, metrics, task) = start(config(&server));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !task.is_finished(),
        "the trainer gave up before the bus was provisioned: {:?}",
        task.await
    );

    let conn = connect_and_provision(&server).await;
    let trace = Trace::read(&repo_root().join("testdata/traces/nab-ec2_cpu_utilization_53ea38.csv")).unwrap();
    replay(&conn.jetstream, &trace.points[..20]).await;
    eventually(Duration::from_secs(30), "the samples consumed", || async {
        (metrics.samples() >= 20).then_some(())
    })
    .await;

    server.kill();
    pas_integration_tests::exits_within_ten_seconds("the trainer", || stop.cancel(), task)
        .await
        .unwrap();
}

/// SIGTERM to the real `pas trainer` process in the middle of training a
/// large model: it exits within 10 s, leaving the version unfinished (it
/// is trained again after a restart), rather than when the training ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_training_exits_within_ten_seconds() {
    let server = NatsServer::with_accounts();
    let conn = connect_and_provision(&server).await;
    let trace = Trace::read(&repo_root().join("testdata/traces/nab-ec2_cpu_utilization_53ea38.csv")).unwrap();
    replay(&conn.jetstream, &trace.points[..2000]).await;

    // Minutes of training on one thread.
    let (mut child, rx) = spawn_trainer(
        &server,
        RUN,
        &[("PAS_MODEL__HIDDEN", "256"), ("PAS_MODEL__MAX_EPOCHS", "1000")],
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut log = Vec::new();
    // The global model trains first (issue 19): SIGTERM stops that one.
    while !log
        .iter()
        .any(|l: &String| l.contains("Training a global model version"))
    {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => log.push(line),
            Err(_) => panic!("no training started:\n{}", log.join("\n")),
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let asked = std::time::Instant::now();
    let exit = child
        .terminate(Duration::from_secs(60))
        .expect("the trainer did not exit within a minute");
    let took = asked.elapsed();
    log.extend(rx.try_iter());
    println!("the trainer: exit on SIGTERM mid-training took {took:?}");
    assert!(exit.success(), "{exit}:\n{}", log.join("\n"));
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(
        log.iter()
            .any(|l| l.contains("left the global model's training unfinished")),
        "{}",
        log.join("\n")
    );
}

/// The reproduction: the trainer never forgot a workload (15,006
/// held after a burst of 5,000 names). Now a workload with no sample for
/// `forget_after` is forgotten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_workload_names_is_forgotten_after_the_silence() {
    let server = NatsServer::with_accounts();
    let conn = connect_and_provision(&server).await;
    let js = conn.jetstream.clone();
    let config = Config {
        forget_after: Duration::from_secs(3),
        ..config(&server)
    };
    let (stop, metrics, task) = start(config);

    let prefix = Prefix::replay(RUN).unwrap();
    let now = chrono::Utc::now();
    for chunk in (0..2000).collect::<Vec<_>>().chunks(500) {
        let mut acks = Vec::new();
        for i in chunk {
            let sample = CpuSample {
                schema_version: SCHEMA_VERSION,
                timestamp: now,
                node: "node-1".into(),
                namespace: Some("burst".into()),
                workload: Some(format!("w{i}")),
                pod: Some(format!("w{i}-0")),
                cpu_used_millicores: 100.0,
                cpu_requested_millicores: Some(1000.0),
                cpu_capacity_millicores: None,
                cpu_throttled_ratio: None,
            };
            let out = pas_nats::Outgoing::new(prefix.sample(&sample).unwrap(), &sample).unwrap();
            acks.push(pas_nats::publish(&js, &out).await.unwrap());
        }
        for ack in acks {
            ack.await.unwrap();
        }
    }
    eventually(Duration::from_secs(30), "2,000 workloads held", || async {
        (metrics.workloads() == 2000).then_some(())
    })
    .await;
    eventually(Duration::from_secs(15), "every workload forgotten", || async {
        (metrics.workloads() == 0).then_some(())
    })
    .await;
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// `pas trainer --run <run>` as a process of its own, as the trainer user,
/// on 5-minute steps with `min_history` 1500; its log lines arrive on the
/// receiver.
fn spawn_trainer(
    server: &NatsServer,
    run: &str,
    env: &[(&str, &str)],
) -> (Process, std::sync::mpsc::Receiver<String>) {
    let url = server.url();
    let mut all = vec![
        ("PAS_NATS__URLS", url.as_str()),
        ("PAS_NATS__USER", "trainer"),
        ("PAS_NATS__PASSWORD", "trainer-pw"),
        ("PAS_LISTEN", "127.0.0.1:0"),
        ("PAS_STEP", "300s"),
        ("PAS_MIN_HISTORY", "1500"),
        ("PAS_MAX_HISTORY", "5000"),
        ("PAS_CHECK_INTERVAL", "200ms"),
        ("PAS_THREADS", "1"),
        ("PAS_MODEL__PATIENCE", "0"),
    ];
    all.extend_from_slice(env);
    spawn_pas(&["trainer", "--run", run], &all)
}

/// Issue 19: training shared through the work queue `PAS_TRAINING`. Two
/// trainer processes train five models (the global one and four
/// workloads'); one is killed (SIGKILL) in the middle of a job. Every model
/// ends with exactly one version: the killed trainer's job was done by
/// the other once its ack wait ran out, and nothing was trained twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_trainers_share_the_jobs_and_a_killed_ones_job_is_done_by_the_other() {
    const QUEUE_RUN: &str = "trainer-queue";
    let server = NatsServer::with_accounts();
    let conn = connect_and_provision(&server).await;
    let js = conn.jetstream.clone();
    let store = js.get_object_store(BUCKET_MODELS).await.unwrap();
    let dir = repo_root().join("testdata/traces");
    let traces = [
        ("web", "nab-ec2_cpu_utilization_53ea38.csv", 10.0),
        ("db", "nab-rds_cpu_utilization_cc0c53.csv", 2000.0),
        ("api", "nab-ec2_cpu_utilization_77c1ca.csv", 50.0),
        ("cache", "nab-ec2_cpu_utilization_53ea38.csv", 300.0),
    ];
    for (workload, file, scale) in traces {
        let trace = Trace::read(&dir.join(file)).unwrap();
        replay_as(&js, QUEUE_RUN, workload, &trace.points[..1800], scale).await;
    }
    // Seconds of training per job, so the kill lands in the middle of one.
    let env = [("PAS_MODEL__HIDDEN", "48"), ("PAS_MODEL__MAX_EPOCHS", "25")];
    let (mut doomed, doomed_log) = spawn_trainer(&server, QUEUE_RUN, &env);
    let (mut survivor, survivor_log) = spawn_trainer(&server, QUEUE_RUN, &env);
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let started = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = doomed_log
            .recv_timeout(left)
            .expect("the first trainer took no job");
        if line.contains("Training a") {
            break line;
        }
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    doomed.kill().unwrap();
    doomed.wait().unwrap();
    let killed_key = if started.contains("global") {
        "global".to_owned()
    } else {
        let at = started.find("workload=").unwrap() + "workload=".len();
        started[at..]
            .split_whitespace()
            .next()
            .unwrap()
            .trim_matches('"')
            .to_owned()
    };
    let keys = ["global", "shop/web", "shop/db", "shop/api", "shop/cache"];
    assert!(keys.contains(&killed_key.as_str()), "{started}");
    let get = |name: String| {
        let store = store.clone();
        async move { read(&store, &format!("replay/{QUEUE_RUN}/{name}")).await }
    };
    // The queue's ack wait is 30 s: then the survivor gets the killed job.
    for key in keys {
        eventually(Duration::from_secs(240), "a first version of every model", || {
            get(format!("{key}/v1/manifest.json"))
        })
        .await;
    }
    // The survivor ends up idle with the queue empty: nothing left, and
    // nothing was queued again and trained twice.
    let training = js
        .get_stream(pas_schemas::subjects::STREAM_TRAINING)
        .await
        .unwrap();
    eventually(Duration::from_secs(30), "an empty queue", || {
        let mut training = training.clone();
        async move { (training.info().await.ok()?.state.messages == 0).then_some(()) }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for key in keys {
        assert!(
            get(format!("{key}/v2/manifest.json")).await.is_none(),
            "{key} was trained twice"
        );
    }
    survivor.kill().unwrap();
    survivor.wait().unwrap();
    let log: Vec<String> = survivor_log.try_iter().collect();
    let stored = |key: &str| {
        log.iter()
            .any(|l| l.contains("Stored a model version") && l.contains(&format!("key=\"{key}\"")))
    };
    assert!(
        stored(&killed_key),
        "the killed trainer's job ({killed_key}) was left undone by the survivor:\n{}",
        log.join("\n")
    );
}

/// Issue 19: the global model. Two workloads of very different sizes: the
/// trainer stores a `global` version trained across both (each window
/// scaled on its own, backtest-gated against naive), then fine-tunes each
/// workload's own model from it and keeps it only where it beats the global
/// model on that workload's backtest, saying which and why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trains_a_global_model_and_keeps_a_workloads_own_only_where_it_beats_it() {
    const GLOBAL_RUN: &str = "trainer-global";
    let server = NatsServer::with_accounts();
    let conn = connect_and_provision(&server).await;
    let js = conn.jetstream.clone();
    let store = js.get_object_store(BUCKET_MODELS).await.unwrap();
    let web = Trace::read(&repo_root().join("testdata/traces/nab-ec2_cpu_utilization_53ea38.csv")).unwrap();
    let db = Trace::read(&repo_root().join("testdata/traces/nab-rds_cpu_utilization_cc0c53.csv")).unwrap();
    replay_as(&js, GLOBAL_RUN, "web", &web.points[..1800], 10.0).await;
    replay_as(&js, GLOBAL_RUN, "db", &db.points[..1800], 2000.0).await;
    let global_config = || Config {
        run: Some(GLOBAL_RUN.into()),
        global: true,
        keep_versions: 5,
        ..config(&server)
    };
    let (stop, metrics, task) = start(global_config());
    let get = |name: String| {
        let store = store.clone();
        async move {
            let bytes = read(&store, &format!("replay/{GLOBAL_RUN}/{name}")).await?;
            Some(pas_schemas::decode::<ModelManifest>(&bytes).unwrap())
        }
    };
    let global = eventually(Duration::from_secs(180), "global version 1 stored", || {
        get("global/v1/manifest.json".into())
    })
    .await;
    assert_eq!(global.key, "global");
    assert_eq!(global.normalisation, pas_schemas::Normalisation::Window);
    assert_eq!(global.validation["series"], 2.0, "{:?}", global.validation);
    assert_eq!(global.validation["workloads"], 2.0, "scored on both");
    assert_eq!(
        global.accepted,
        global.validation["global"] < global.validation["naive"],
        "{global:?}"
    );
    assert!(
        global.accepted,
        "across two NAB traces it beats naive: {:?}",
        global.validation
    );
    assert!(
        global
            .verdict
            .as_deref()
            .is_some_and(|v| v.contains("trained on 2 workloads"))
    );
    // Each workload's own: fine-tuned from global v1 and scored beside it.
    for workload in ["web", "db"] {
        let own = eventually(Duration::from_secs(180), "a workload's version 1", || {
            get(format!("shop/{workload}/v1/manifest.json"))
        })
        .await;
        let (ours, theirs, naive) = (
            own.validation["lstm"],
            own.validation["global"],
            own.validation["naive"],
        );
        assert_eq!(own.accepted, ours < theirs && ours < naive, "{own:?}");
        assert_eq!(own.defers_to_global(), theirs <= ours);
        let verdict = own.verdict.clone().unwrap();
        assert!(verdict.contains("fine-tuned from global v1"), "{verdict}");
        assert_eq!(own.normalisation, pas_schemas::Normalisation::Window);
        assert_eq!(
            own.hyper_parameters["max_epochs"],
            serde_json::json!(pas_trainer::Config::default().fine_tune_epochs),
            "fine-tuned for fine_tune_epochs, not trained from scratch"
        );
    }
    assert_eq!(
        metrics.versions("accepted") + metrics.versions("rejected"),
        3,
        "one global version and one per workload"
    );
    stop.cancel();
    task.await.unwrap().unwrap();

    // A restart reads the global model back and trains nothing again.
    let (stop, metrics, task) = start(global_config());
    eventually(Duration::from_secs(30), "state rebuilt", || async {
        (metrics.samples() >= 3600).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        get("global/v2/manifest.json".into()).await.is_none(),
        "a restart trained the global model again"
    );
    stop.cancel();
    task.await.unwrap().unwrap();
}
