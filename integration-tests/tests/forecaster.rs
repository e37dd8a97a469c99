//! The forecaster against a real nats-server with JetStream and a real
//! libtorch: live samples become a forecast every tick; a model version
//! stored mid-run is served from the next ticks on without a tick missed; a
//! corrupted or unloadable version is refused while the previous one keeps
//! serving; bad samples go to the dead-letter subject; two replicas together
//! forecast every workload exactly once per tick, also while one joins and
//! one leaves.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use pas_forecaster::{Config, Forecaster, Metrics};
use pas_integration_tests::{NatsServer, connect_and_provision, eventually, repo_root};
use pas_models::Forecaster as _;
use pas_models::lstm::{Lstm, LstmConfig};
use pas_models::{Series, Trace};
use pas_nats::NatsConfig;
use pas_schemas::subjects::{BUCKET_MODELS, Prefix, STREAM_DLQ};
use pas_schemas::{CpuSample, Forecast, ModelManifest, SCHEMA_VERSION, TrainingRange};
use pas_trainer::store::{self, Layout};
use tokio_util::sync::CancellationToken;

fn config(server: &NatsServer, run: &str, replica: &str) -> Config {
    Config {
        run: Some(run.into()),
        step: Duration::from_secs(1),
        tick_delay: Duration::from_millis(300),
        history: 40,
        lateness: Duration::from_secs(3),
        partitions: 8,
        replica: Some(replica.into()),
        lease: Duration::from_secs(3),
        listen: "127.0.0.1:0".parse().unwrap(),
        nats: NatsConfig { urls: vec![server.url()], ..NatsConfig::default() },
        ..Config::default()
    }
}

fn sample(at: DateTime<Utc>, workload: &str, percent: f64) -> CpuSample {
    CpuSample {
        schema_version: SCHEMA_VERSION,
        timestamp: at,
        node: "node-1".into(),
        namespace: Some("shop".into()),
        workload: Some(workload.into()),
        pod: Some(format!("{workload}-0")),
        cpu_used_millicores: percent * 5.0,
        cpu_requested_millicores: Some(500.0),
        cpu_capacity_millicores: None,
    }
}

/// Publishes a sample of every workload four times a second, stamped now,
/// following the trace's values, after `backfill` seconds of history; until
/// `stop`.
fn feed(js: jetstream::Context, run: &str, workloads: Vec<String>, backfill: i64, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    let prefix = Prefix::replay(run).unwrap();
    let values = trace_values();
    tokio::spawn(async move {
        let publish = |s: CpuSample| {
            let out = pas_nats::Outgoing::new(prefix.sample(&s).unwrap(), &s).unwrap();
            let js = js.clone();
            async move { pas_nats::publish(&js, &out).await.unwrap().await.unwrap() }
        };
        let now = Utc::now();
        for back in (1..=backfill).rev() {
            for (k, w) in workloads.iter().enumerate() {
                let at = now - chrono::TimeDelta::seconds(back);
                publish(sample(at, w, values[(at.timestamp() as usize + k) % values.len()])).await;
            }
        }
        // Every second gets samples, also one the backfill took too long
        // for: a hole would be interpolated and the window would differ
        // from the trace's values.
        let mut last = now.timestamp() - 1;
        let mut ticker = tokio::time::interval(Duration::from_millis(250));
        while !stop.is_cancelled() {
            ticker.tick().await;
            let current = Utc::now();
            let mut stamps: Vec<DateTime<Utc>> = (last + 1..current.timestamp())
                .filter_map(|t| DateTime::from_timestamp(t, 500_000_000))
                .collect();
            stamps.push(current);
            last = current.timestamp();
            for at in stamps {
                for (k, w) in workloads.iter().enumerate() {
                    publish(sample(at, w, values[(at.timestamp() as usize + k) % values.len()])).await;
                }
            }
        }
    })
}

/// The trace the samples follow, in percent: second `t` of workload `k` is
/// `values[(t + k) % len]`.
fn trace_values() -> Vec<f64> {
    let trace = Trace::read(&repo_root().join("testdata/traces/nab-ec2_cpu_utilization_53ea38.csv")).unwrap();
    trace.points.iter().map(|p| p.1 * 10.0).collect()
}

/// Every forecast seen on the run's subjects, as published (a core
/// subscription sees duplicates the stream would drop).
#[derive(Default, Clone)]
struct Seen(Arc<Mutex<Vec<(String, Forecast)>>>);

impl Seen {
    async fn start(client: &async_nats::Client, run: &str) -> Seen {
        let seen = Seen::default();
        let mut sub = client.subscribe(format!("replay.{run}.pas.forecast.>")).await.unwrap();
        // A round trip, so the subscription is in place before anything is published.
        client.flush().await.unwrap();
        let _ = client.request("$JS.API.INFO", "".into()).await;
        let out = seen.clone();
        tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                let forecast: Forecast = pas_schemas::decode(&msg.payload).expect("every forecast decodes and validates");
                out.0.lock().unwrap().push((msg.subject.to_string(), forecast));
            }
        });
        seen
    }

    fn of(&self, workload: &str) -> Vec<Forecast> {
        self.0.lock().unwrap().iter().filter(|(_, f)| f.workload == workload).map(|(_, f)| f.clone()).collect()
    }

    fn all(&self) -> Vec<(String, Forecast)> {
        self.0.lock().unwrap().clone()
    }
}

/// A small LSTM for a 1 s step, trained on the head of the trace.
fn trained(seed: u64) -> Lstm {
    let values = trace_values()[..1200].to_vec();
    let config = LstmConfig { window: 12, hidden: 8, max_epochs: 2, patience: 0, seed, ..LstmConfig::default() };
    let mut model = Lstm::new(config).unwrap();
    model.fit(&Series { start: DateTime::UNIX_EPOCH, step_seconds: 1, values }, &mut |_| {}).unwrap();
    model
}

fn manifest(model: &Lstm, version: u64, weights: &[u8]) -> ModelManifest {
    ModelManifest {
        schema_version: SCHEMA_VERSION,
        timestamp: Utc::now(),
        key: "shop/web".into(),
        version,
        architecture: "lstm".into(),
        hyper_parameters: model.config().hyper_parameters(),
        step_seconds: 1.0,
        window: model.config().window as u32,
        horizon: model.config().horizon as u32,
        normalisation: model.normalisation(),
        training: TrainingRange { first_sequence: 1, last_sequence: 2, from: DateTime::UNIX_EPOCH, to: DateTime::UNIX_EPOCH },
        validation: [("lstm".to_owned(), 0.5), ("naive".to_owned(), 1.0)].into(),
        digest: pas_models::digest(weights),
        accepted: true,
    }
}

fn start(config: Config) -> (CancellationToken, Metrics, tokio::task::JoinHandle<Result<(), pas_forecaster::Error>>) {
    let forecaster = Forecaster::new(config).unwrap();
    let metrics = forecaster.metrics();
    let stop = CancellationToken::new();
    let task = tokio::spawn(forecaster.run(stop.clone()));
    (stop, metrics, task)
}

/// Window ends must follow each other one step apart.
fn assert_no_missed_tick(forecasts: &[Forecast], what: &str) {
    let ends: Vec<DateTime<Utc>> = forecasts.iter().map(|f| f.window_end).collect();
    for pair in ends.windows(2) {
        assert_eq!((pair[1] - pair[0]).num_seconds(), 1, "{what}: a tick was missed or doubled between {} and {}", pair[0], pair[1]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_new_versions_without_missing_a_tick_and_refuses_bad_ones() {
    const RUN: &str = "fc-swap";
    let server = NatsServer::start();
    let conn = connect_and_provision(&server).await;
    let js = conn.jetstream.clone();
    let bucket = js.get_object_store(BUCKET_MODELS).await.unwrap();
    let layout = Layout::new(&Prefix::replay(RUN).unwrap());
    let seen = Seen::start(&conn.client, RUN).await;

    // Version 1 is stored before the forecaster starts; 30 s of history too.
    let v1_model = trained(1);
    let v1_weights = v1_model.to_safetensors().unwrap();
    store::save(&bucket, &layout, &manifest(&v1_model, 1, &v1_weights), &v1_weights).await.unwrap();
    let stop_feed = CancellationToken::new();
    let feeding = feed(js.clone(), RUN, vec!["web".into(), "db".into()], 30, stop_feed.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (stop, metrics, task) = start(config(&server, RUN, "solo"));

    // From the first tick: web on its LSTM (its window rebuilt from the
    // stream), db on the baseline.
    let first = eventually(Duration::from_secs(10), "a forecast of web", || async { seen.of("web").first().cloned() }).await;
    assert_eq!((first.model.kind.as_str(), first.model.version), ("lstm", 1), "{first:?}");
    assert_eq!(first.values.len(), 10);
    assert_eq!(first.quantile, Some(v1_model.config().quantile));
    let db = eventually(Duration::from_secs(5), "a forecast of db", || async { seen.of("db").first().cloned() }).await;
    assert_eq!((db.model.kind.as_str(), db.model.version, db.model.key.as_str()), ("naive", 0, "shop/db"));
    // The forecast is the model's own prediction from the window it names.
    let values = trace_values();
    let end = first.window_end.timestamp();
    let window: Vec<f64> = (end - 11..=end).map(|t| values[t as usize % values.len()]).collect();
    let expected = v1_model.predict(&window).unwrap();
    for (got, want) in first.values.iter().zip(&expected.values) {
        assert!((got - want.max(0.0)).abs() < 1e-3 * (1.0 + want.abs()), "{:?} vs {:?}", first.values, expected.values);
    }
    assert_eq!(first.step_seconds, 1.0);
    let (subject, _) = seen.all().into_iter().find(|(_, f)| f.workload == "web").unwrap();
    assert_eq!(subject, format!("replay.{RUN}.pas.forecast.shop.web"));

    // Version 2 arrives mid-run.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let v2_model = trained(2);
    let v2_weights = v2_model.to_safetensors().unwrap();
    store::save(&bucket, &layout, &manifest(&v2_model, 2, &v2_weights), &v2_weights).await.unwrap();
    eventually(Duration::from_secs(10), "version 2 served", || async {
        seen.of("web").last().filter(|f| f.model.version == 2).map(|_| ())
    })
    .await;
    assert_eq!(metrics.loads(), 2);

    // Version 3: weights that do not match the manifest's digest. Version 4:
    // a matching digest over bytes that are no model.
    let mut corrupt = v2_weights.clone();
    let middle = corrupt.len() / 2;
    corrupt[middle] ^= 0xff;
    let mut v3 = manifest(&v2_model, 3, &v2_weights);
    v3.digest = pas_models::digest(&v2_weights);
    store::save(&bucket, &layout, &v3, &corrupt).await.unwrap();
    eventually(Duration::from_secs(10), "version 3 refused", || async { (metrics.refusals("digest") == 1).then_some(()) }).await;
    let garbage = b"not a safetensors file".to_vec();
    store::save(&bucket, &layout, &manifest(&v2_model, 4, &garbage), &garbage).await.unwrap();
    eventually(Duration::from_secs(10), "version 4 refused", || async { (metrics.refusals("load") == 1).then_some(()) }).await;

    // Bad samples go to the dead-letter subject; forecasting goes on.
    let mut dlq = conn.client.subscribe(format!("replay.{RUN}.pas.dlq.forecaster")).await.unwrap();
    conn.client.flush().await.unwrap();
    let subject = format!("replay.{RUN}.pas.cpu.pod.shop.web.web-0");
    js.publish(subject.clone(), "not json".into()).await.unwrap().await.unwrap();
    let mut negative = serde_json::to_value(sample(Utc::now(), "web", 10.0)).unwrap();
    negative["cpu_used_millicores"] = (-5.0).into();
    js.publish(subject, serde_json::to_vec(&negative).unwrap().into()).await.unwrap().await.unwrap();
    for _ in 0..2 {
        let letter = tokio::time::timeout(Duration::from_secs(10), dlq.next()).await.unwrap().unwrap();
        assert!(letter.headers.unwrap().get("Pas-Error").is_some());
    }
    let count_before = seen.of("web").len();
    eventually(Duration::from_secs(10), "three more forecasts", || async { (seen.of("web").len() >= count_before + 3).then_some(()) }).await;

    stop_feed.cancel();
    feeding.await.unwrap();
    stop.cancel();
    task.await.unwrap().unwrap();

    let web = seen.of("web");
    assert_no_missed_tick(&web, "web");
    assert_no_missed_tick(&seen.of("db"), "db");
    let versions: Vec<u64> = web.iter().map(|f| f.model.version).collect();
    let switch = versions.iter().position(|&v| v == 2).unwrap();
    assert!(versions[..switch].iter().all(|&v| v == 1) && versions[switch..].iter().all(|&v| v == 2), "{versions:?}");
    assert!(metrics.forecasts(true) >= web.len() as u64);
    let stream = js.get_stream(STREAM_DLQ).await.unwrap().info().await.unwrap().state.messages;
    assert_eq!(stream, 2, "both bad samples are stored in PAS_DLQ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_forecast_every_workload_exactly_once_while_one_joins_and_leaves() {
    const RUN: &str = "fc-shards";
    let server = NatsServer::start();
    let conn = connect_and_provision(&server).await;
    let js = conn.jetstream.clone();
    let seen = Seen::start(&conn.client, RUN).await;
    let workloads: Vec<String> = (0..24).map(|i| format!("wl-{i}")).collect();
    let stop_feed = CancellationToken::new();
    let feeding = feed(js.clone(), RUN, workloads.clone(), 5, stop_feed.clone());

    let (stop_a, metrics_a, task_a) = start(config(&server, RUN, "a"));
    eventually(Duration::from_secs(10), "a holds every partition", || async { (metrics_a.partitions() == 8).then_some(()) }).await;
    let (stop_b, metrics_b, task_b) = start(config(&server, RUN, "b"));
    eventually(Duration::from_secs(15), "the partitions split", || async {
        (metrics_a.partitions() == 4 && metrics_b.partitions() == 4).then_some(())
    })
    .await;
    let split_at = Utc::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let both_forecast = (metrics_a.forecasts(false), metrics_b.forecasts(false));
    stop_b.cancel();
    task_b.await.unwrap().unwrap();
    eventually(Duration::from_secs(10), "a holds every partition again", || async { (metrics_a.partitions() == 8).then_some(()) }).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop_feed.cancel();
    feeding.await.unwrap();
    stop_a.cancel();
    task_a.await.unwrap().unwrap();

    assert!(both_forecast.0 > 0 && both_forecast.1 > 0, "both replicas forecast: {both_forecast:?}");
    // Per workload, one forecast per window end, none missed, through the
    // join (b started), the split, and the leave (b stopped).
    let all = seen.all();
    let mut per_workload: BTreeMap<&str, Vec<DateTime<Utc>>> = BTreeMap::new();
    for (_, f) in &all {
        per_workload.entry(f.workload.as_str()).or_default().push(f.window_end);
    }
    assert_eq!(per_workload.len(), workloads.len(), "every workload was forecast");
    for (workload, ends) in &per_workload {
        let unique: BTreeSet<_> = ends.iter().collect();
        assert_eq!(unique.len(), ends.len(), "{workload} was forecast twice for a window: {ends:?}");
        let mut sorted = ends.clone();
        sorted.sort();
        for pair in sorted.windows(2) {
            assert_eq!((pair[1] - pair[0]).num_seconds(), 1, "{workload} missed a tick after {}", pair[0]);
        }
        assert!(sorted.first().unwrap() < &split_at && sorted.last().unwrap() > &(split_at + chrono::TimeDelta::seconds(5)));
    }
}
