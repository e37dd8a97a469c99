//! The forecaster against a real nats-server with JetStream and a real
//! libtorch: live samples become a forecast every tick; a model version
//! stored mid-run is served from the next ticks on without a tick missed; a
//! corrupted or unloadable version is refused while the previous one keeps
//! serving; bad samples go to the dead-letter subject; two replicas together
//! forecast every workload exactly once per tick, also while one joins and
//! one leaves.
//!
//! Hostile input (issue 15), each case once a stopped forecaster: samples
//! dated 1970 or 23 h ahead, a namespace `..`, `cpu 1e308` and a message of
//! the whole max payload end in dead letters; a replayed 1970 sample
//! allocates nothing for the gap; 5,100 workloads are all forecast in one
//! tick; a manifest claiming `hidden = 20000` is refused and an object
//! entry with an empty `mtime` skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use chrono::{DateTime, TimeDelta, Utc};
use futures::StreamExt;
use pas_forecaster::{Config, Forecaster, Metrics};
use pas_integration_tests::{NatsServer, connect_and_provision, eventually, repo_root, stream_info};
use pas_models::Forecaster as _;
use pas_models::lstm::{Lstm, LstmConfig};
use pas_models::{Series, Trace};
use pas_nats::NatsConfig;
use pas_nats::model_store::{self as store, Layout};
use pas_schemas::subjects::{BUCKET_MODELS, Prefix, STREAM_DLQ};
use pas_schemas::{CpuSample, Forecast, ModelManifest, SCHEMA_VERSION, TrainingRange};
use tokio_util::sync::CancellationToken;

fn config(server: &NatsServer, run: &str, replica: &str) -> Config {
    Config {
        run: Some(run.into()),
        step: Duration::from_secs(1),
        // Seconds-long steps: a lead time to match (the baseline's 10 steps reach past it).
        lead: Duration::from_secs(5),
        tick_delay: Duration::from_millis(300),
        history: 40,
        lateness: Duration::from_secs(3),
        partitions: 8,
        replica: Some(replica.into()),
        lease: Duration::from_secs(3),
        listen: "127.0.0.1:0".parse().unwrap(),
        // The stage runs as its own user, with the accounts file's permissions.
        nats: NatsConfig {
            ack_timeout: NatsConfig::default().ack_timeout,
            ..server.as_user("forecaster")
        },
        ..Config::default()
    }
}

/// One pod's sample; it is the workload's only pod, so `demand` (millicores)
/// is the workload's demand, what the forecaster forecasts.
fn sample(at: DateTime<Utc>, workload: &str, demand: f64) -> CpuSample {
    CpuSample {
        schema_version: SCHEMA_VERSION,
        timestamp: at,
        node: "node-1".into(),
        namespace: Some("shop".into()),
        workload: Some(workload.into()),
        pod: Some(format!("{workload}-0")),
        cpu_used_millicores: demand,
        cpu_requested_millicores: Some(500.0),
        cpu_capacity_millicores: None,
        cpu_throttled_ratio: None,
    }
}

/// Publishes a sample of every workload four times a second, stamped now,
/// following the trace's values, after `backfill` seconds of history; until
/// `stop`.
fn feed(
    js: jetstream::Context,
    prefix: Prefix,
    workloads: Vec<String>,
    backfill: i64,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
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
                publish(sample(
                    at,
                    w,
                    values[(at.timestamp() as usize + k) % values.len()],
                ))
                .await;
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
                    publish(sample(
                        at,
                        w,
                        values[(at.timestamp() as usize + k) % values.len()],
                    ))
                    .await;
                }
            }
        }
    })
}

/// The demand the samples follow, millicores (a trace's values read as
/// millicores): second `t` of workload `k` is
/// `values[(t + k) % len]`.
fn trace_values() -> Vec<f64> {
    let trace = Trace::read(&repo_root().join("testdata/traces/nab-ec2_cpu_utilization_53ea38.csv")).unwrap();
    trace.points.iter().map(|p| p.1 * 10.0).collect()
}

/// Every forecast seen on `subjects`, as published (a core
/// subscription sees duplicates the stream would drop).
#[derive(Default, Clone)]
struct Seen(Arc<Mutex<Vec<(String, Forecast)>>>);

impl Seen {
    async fn start(client: &async_nats::Client, subjects: String) -> Seen {
        let seen = Seen::default();
        let mut sub = client.subscribe(subjects).await.unwrap();
        // A round trip, so the subscription is in place before anything is published.
        client.flush().await.unwrap();
        let _ = client.request("$JS.API.INFO", "".into()).await;
        let out = seen.clone();
        tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                let forecast: Forecast =
                    pas_schemas::decode(&msg.payload).expect("every forecast decodes and validates");
                out.0.lock().unwrap().push((msg.subject.to_string(), forecast));
            }
        });
        seen
    }

    fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    fn workloads(&self) -> BTreeSet<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(_, f)| f.workload.clone())
            .collect()
    }

    fn of(&self, workload: &str) -> Vec<Forecast> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, f)| f.workload == workload)
            .map(|(_, f)| f.clone())
            .collect()
    }

    fn all(&self) -> Vec<(String, Forecast)> {
        self.0.lock().unwrap().clone()
    }
}

/// A small LSTM for a 1 s step, trained on the head of the trace.
fn trained(seed: u64) -> Lstm {
    let values = trace_values()[..1200].to_vec();
    let config = LstmConfig {
        window: 12,
        hidden: 8,
        max_epochs: 2,
        patience: 0,
        seed,
        ..LstmConfig::default()
    };
    let mut model = Lstm::new(config).unwrap();
    model
        .fit(
            &Series {
                seasonal: None,
                start: DateTime::UNIX_EPOCH,
                step_seconds: 1,
                values,
            },
            &mut |_| {},
        )
        .unwrap();
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
        training: TrainingRange {
            first_sequence: 1,
            last_sequence: 2,
            from: DateTime::UNIX_EPOCH,
            to: DateTime::UNIX_EPOCH,
        },
        validation: [("lstm".to_owned(), 0.5), ("naive".to_owned(), 1.0)].into(),
        digest: pas_models::digest(weights),
        accepted: true,
        calibration: None,
        verdict: None,
    }
}

fn start(
    config: Config,
) -> (
    CancellationToken,
    Metrics,
    tokio::task::JoinHandle<Result<(), pas_forecaster::Error>>,
) {
    let forecaster = Forecaster::new(config).unwrap();
    let metrics = forecaster.metrics();
    let stop = CancellationToken::new();
    let task = tokio::spawn(forecaster.run(stop.clone()));
    (stop, metrics, task)
}

/// `forecast` of the first workload `feed` publishes is `model`'s own
/// prediction from the 12 trace values its window names (clamped at zero).
fn assert_predicted_by(forecast: &Forecast, model: &Lstm) {
    let values = trace_values();
    let end = forecast.window_end.timestamp();
    let window: Vec<f64> = (end - 11..=end)
        .map(|t| values[t as usize % values.len()])
        .collect();
    let expected = model.predict(&window).unwrap();
    for (got, want) in forecast.values.iter().zip(&expected.values) {
        assert!(
            (got - want.max(0.0)).abs() < 1e-3 * (1.0 + want.abs()),
            "{:?} vs {:?}",
            forecast.values,
            expected.values
        );
    }
}

/// Window ends must follow each other one step apart.
fn assert_no_missed_tick(forecasts: &[Forecast], what: &str) {
    let ends: Vec<DateTime<Utc>> = forecasts.iter().map(|f| f.window_end).collect();
    for pair in ends.windows(2) {
        assert_eq!(
            (pair[1] - pair[0]).num_seconds(),
            1,
            "{what}: a tick was missed or doubled between {} and {}",
            pair[0],
            pair[1]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_new_versions_without_missing_a_tick_and_refuses_bad_ones() {
    const RUN: &str = "fc-swap";
    let server = NatsServer::with_accounts();
    let conn = connect_and_provision(&server).await;
    let js = conn.jetstream.clone();
    let bucket = js.get_object_store(BUCKET_MODELS).await.unwrap();
    let layout = Layout::new(&Prefix::replay(RUN).unwrap());
    let seen = Seen::start(&conn.client, Prefix::replay(RUN).unwrap().all_forecasts()).await;

    // Version 1 is stored before the forecaster starts; 30 s of history too.
    let v1_model = trained(1);
    let v1_weights = v1_model.to_safetensors().unwrap();
    store::save(
        &bucket,
        &layout,
        &manifest(&v1_model, 1, &v1_weights),
        &v1_weights,
    )
    .await
    .unwrap();
    let stop_feed = CancellationToken::new();
    let feeding = feed(
        js.clone(),
        Prefix::replay(RUN).unwrap(),
        vec!["web".into(), "db".into()],
        30,
        stop_feed.clone(),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (stop, metrics, task) = start(config(&server, RUN, "solo"));

    // From the first tick: web on its LSTM (its window rebuilt from the
    // stream), db on the baseline.
    let first = eventually(Duration::from_secs(10), "a forecast of web", || async {
        seen.of("web").first().cloned()
    })
    .await;
    assert_eq!(
        (first.model.kind.as_str(), first.model.version),
        ("lstm", 1),
        "{first:?}"
    );
    assert_eq!(first.values.len(), 10);
    assert_eq!(first.quantile, Some(v1_model.config().quantile));
    let db = eventually(Duration::from_secs(5), "a forecast of db", || async {
        seen.of("db").first().cloned()
    })
    .await;
    assert_eq!(
        (db.model.kind.as_str(), db.model.version, db.model.key.as_str()),
        ("naive", 0, "shop/db")
    );
    // The forecast is the model's own prediction from the window it names.
    assert_predicted_by(&first, &v1_model);
    assert_eq!(first.step_seconds, 1.0);
    let (subject, _) = seen.all().into_iter().find(|(_, f)| f.workload == "web").unwrap();
    assert_eq!(subject, format!("replay.{RUN}.pas.forecast.shop.web"));

    // Version 2 arrives mid-run.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let v2_model = trained(2);
    let v2_weights = v2_model.to_safetensors().unwrap();
    store::save(
        &bucket,
        &layout,
        &manifest(&v2_model, 2, &v2_weights),
        &v2_weights,
    )
    .await
    .unwrap();
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
    eventually(Duration::from_secs(10), "version 3 refused", || async {
        (metrics.refusals("digest") == 1).then_some(())
    })
    .await;
    let garbage = b"not a safetensors file".to_vec();
    store::save(&bucket, &layout, &manifest(&v2_model, 4, &garbage), &garbage)
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "version 4 refused", || async {
        (metrics.refusals("load") == 1).then_some(())
    })
    .await;

    // Bad samples go to the dead-letter subject; forecasting goes on.
    let mut dlq = conn
        .client
        .subscribe(format!("replay.{RUN}.pas.dlq.forecaster"))
        .await
        .unwrap();
    conn.client.flush().await.unwrap();
    let subject = format!("replay.{RUN}.pas.cpu.pod.shop.web.web-0");
    js.publish(subject.clone(), "not json".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let mut negative = serde_json::to_value(sample(Utc::now(), "web", 10.0)).unwrap();
    negative["cpu_used_millicores"] = (-5.0).into();
    js.publish(subject, serde_json::to_vec(&negative).unwrap().into())
        .await
        .unwrap()
        .await
        .unwrap();
    for _ in 0..2 {
        let letter = tokio::time::timeout(Duration::from_secs(10), dlq.next())
            .await
            .unwrap()
            .unwrap();
        assert!(letter.headers.unwrap().get("Pas-Error").is_some());
    }
    let count_before = seen.of("web").len();
    eventually(Duration::from_secs(10), "three more forecasts", || async {
        (seen.of("web").len() >= count_before + 3).then_some(())
    })
    .await;

    stop_feed.cancel();
    feeding.await.unwrap();
    stop.cancel();
    task.await.unwrap().unwrap();

    let web = seen.of("web");
    assert_no_missed_tick(&web, "web");
    assert_no_missed_tick(&seen.of("db"), "db");
    let versions: Vec<u64> = web.iter().map(|f| f.model.version).collect();
    let switch = versions.iter().position(|&v| v == 2).unwrap();
    assert!(
        versions[..switch].iter().all(|&v| v == 1) && versions[switch..].iter().all(|&v| v == 2),
        "{versions:?}"
    );
    assert!(metrics.forecasts(true) >= web.len() as u64);
    let stream = stream_info(&js, STREAM_DLQ).await.state.messages;
    assert_eq!(stream, 2, "both bad samples are stored in PAS_DLQ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_forecast_every_workload_exactly_once_while_one_joins_and_leaves() {
    const RUN: &str = "fc-shards";
    let server = NatsServer::with_accounts();
    let conn = connect_and_provision(&server).await;
    let js = conn.jetstream.clone();
    let seen = Seen::start(&conn.client, Prefix::replay(RUN).unwrap().all_forecasts()).await;
    let workloads: Vec<String> = (0..24).map(|i| format!("wl-{i}")).collect();
    let stop_feed = CancellationToken::new();
    let feeding = feed(
        js.clone(),
        Prefix::replay(RUN).unwrap(),
        workloads.clone(),
        5,
        stop_feed.clone(),
    );

    let (stop_a, metrics_a, task_a) = start(config(&server, RUN, "a"));
    eventually(Duration::from_secs(10), "a holds every partition", || async {
        (metrics_a.partitions() == 8).then_some(())
    })
    .await;
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
    eventually(
        Duration::from_secs(10),
        "a holds every partition again",
        || async { (metrics_a.partitions() == 8).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop_feed.cancel();
    feeding.await.unwrap();
    stop_a.cancel();
    task_a.await.unwrap().unwrap();

    assert!(
        both_forecast.0 > 0 && both_forecast.1 > 0,
        "both replicas forecast: {both_forecast:?}"
    );
    // Per workload, one forecast per window end, none missed, through the
    // join (b started), the split, and the leave (b stopped).
    let all = seen.all();
    let mut per_workload: BTreeMap<&str, Vec<DateTime<Utc>>> = BTreeMap::new();
    for (_, f) in &all {
        per_workload
            .entry(f.workload.as_str())
            .or_default()
            .push(f.window_end);
    }
    assert_eq!(per_workload.len(), workloads.len(), "every workload was forecast");
    for (workload, ends) in &per_workload {
        let unique: BTreeSet<_> = ends.iter().collect();
        assert_eq!(
            unique.len(),
            ends.len(),
            "{workload} was forecast twice for a window: {ends:?}"
        );
        let mut sorted = ends.clone();
        sorted.sort();
        for pair in sorted.windows(2) {
            assert_eq!(
                (pair[1] - pair[0]).num_seconds(),
                1,
                "{workload} missed a tick after {}",
                pair[0]
            );
        }
        assert!(
            sorted.first().unwrap() < &split_at
                && sorted.last().unwrap() > &(split_at + chrono::TimeDelta::seconds(5))
        );
    }
}

// Hostile input (issue 15): each case below once stopped the forecaster and
// now ends in a dead letter or a clear refusal while it goes on working.

async fn raw(js: &jetstream::Context, subject: &str, payload: Vec<u8>) {
    js.publish(subject.to_owned(), payload.into())
        .await
        .unwrap()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impossible_samples_are_dead_lettered_and_the_forecaster_goes_on() {
    let server = NatsServer::with_accounts();
    let conn = connect_and_provision(&server).await;
    let js = conn.jetstream.clone();
    let live = Prefix::live();
    let seen = Seen::start(&conn.client, live.forecast("shop", "web").unwrap()).await;
    let mut dlq = conn
        .client
        .subscribe(live.dlq(pas_schemas::subjects::Stage::Forecaster))
        .await
        .unwrap();
    conn.client.flush().await.unwrap();
    let stop_feed = CancellationToken::new();
    let feeding = feed(js.clone(), live.clone(), vec!["web".into()], 2, stop_feed.clone());
    let (stop, metrics, task) = start(Config {
        run: None,
        ..config(&server, "unused", "r1")
    });
    eventually(Duration::from_secs(20), "the first forecasts", || async {
        (seen.count() >= 2).then_some(())
    })
    .await;

    let subject = live.pod_cpu("shop", "web", "web-0").unwrap();
    let json = |s: &CpuSample| serde_json::to_value(s).unwrap();
    // A node whose clock reset to 1970, and one running 23 h ahead.
    let mut epoch = json(&sample(Utc::now(), "web", 20.0));
    epoch["timestamp"] = "1970-01-01T00:00:05Z".into();
    let mut ahead = json(&sample(Utc::now(), "web", 20.0));
    ahead["timestamp"] = serde_json::to_value(Utc::now() + TimeDelta::hours(23)).unwrap();
    // A namespace that passed the old check and emptied a KV key's token.
    let mut dots = json(&sample(Utc::now(), "web", 20.0));
    dots["namespace"] = "..".into();
    // A value that parses but no machine can use.
    let mut huge = json(&sample(Utc::now(), "web", 20.0));
    huge["cpu_used_millicores"] = 1e308.into();
    for bad in [epoch, ahead, dots, huge] {
        raw(&js, &subject, serde_json::to_vec(&bad).unwrap()).await;
    }
    // A message of exactly the server's max payload: its copy plus the error
    // headers cannot be republished whole.
    let max = conn.client.max_payload();
    raw(&js, &subject, vec![b'x'; max]).await;

    let mut reasons = Vec::new();
    let mut truncated = 0;
    for _ in 0..5 {
        let letter = tokio::time::timeout(Duration::from_secs(10), dlq.next())
            .await
            .expect("a dead letter")
            .unwrap();
        let headers = letter.headers.unwrap();
        reasons.push(headers.get("Pas-Error").unwrap().to_string());
        if headers.get("Pas-Truncated").is_some() {
            truncated += 1;
            assert_eq!(
                headers.get("Pas-Original-Size").unwrap().as_str(),
                max.to_string()
            );
            assert!(letter.payload.len() < max);
        }
    }
    let all = reasons.join("\n");
    assert!(all.contains("older than the server's clock"), "{all}");
    assert!(all.contains("ahead of the server's clock"), "{all}");
    assert!(all.contains("namespace \"..\""), "{all}");
    assert!(all.contains("above the bound"), "{all}");
    assert_eq!(truncated, 1, "{all}");

    // The workload is still forecast every tick, from its true samples.
    let before = seen.count();
    eventually(Duration::from_secs(10), "three more forecasts", || async {
        (seen.count() >= before + 3).then_some(())
    })
    .await;
    assert!(metrics.forecasts(false) >= 5);
    stop_feed.cancel();
    feeding.await.unwrap();
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the forecaster stops")
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_sample_from_1970_allocates_nothing_for_the_gap() {
    // A replay admits old times, so this reaches the series: it once filled
    // one step per second since the epoch (1.8 billion) and was OOM-killed.
    const RUN: &str = "epoch";
    let server = NatsServer::with_accounts();
    let conn = connect_and_provision(&server).await;
    let js = conn.jetstream.clone();
    let prefix = Prefix::replay(RUN).unwrap();
    let seen = Seen::start(&conn.client, prefix.forecast("shop", "web").unwrap()).await;
    let s = sample(DateTime::from_timestamp(5, 0).unwrap(), "web", 20.0);
    pas_nats::publish(
        &js,
        &pas_nats::Outgoing::new(prefix.sample(&s).unwrap(), &s).unwrap(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let stop_feed = CancellationToken::new();
    let feeding = feed(
        js.clone(),
        prefix.clone(),
        vec!["web".into()],
        0,
        stop_feed.clone(),
    );
    let (stop, _metrics, task) = start(config(&server, RUN, "r1"));
    eventually(Duration::from_secs(20), "forecasts after the jump", || async {
        (seen.count() >= 3).then_some(())
    })
    .await;
    let first = seen.0.lock().unwrap()[0].1.clone();
    assert!(
        first.window_end > Utc::now() - TimeDelta::minutes(1),
        "forecast from today's samples: {first:?}"
    );
    stop_feed.cancel();
    feeding.await.unwrap();
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the forecaster stops")
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_than_five_thousand_workloads_are_all_forecast_in_one_tick() {
    // async-nats lets 5,000 publishes wait for acks; holding every ack of a
    // tick before awaiting any hung the forecaster at 5,001 workloads.
    const RUN: &str = "many";
    const WORKLOADS: usize = 5_100;
    let server = NatsServer::with_accounts();
    let conn = connect_and_provision(&server).await;
    let js = conn.jetstream.clone();
    let prefix = Prefix::replay(RUN).unwrap();
    let seen = Seen::start(&conn.client, format!("replay.{RUN}.pas.forecast.>")).await;
    // Three closed steps of every workload, published in acked batches.
    let now = Utc::now().timestamp();
    let mut pending = Vec::new();
    for back in [3, 2] {
        for w in 0..WORKLOADS {
            let s = sample(
                DateTime::from_timestamp(now - back, 0).unwrap(),
                &format!("wl-{w}"),
                20.0 + w as f64 % 50.0,
            );
            pending.push(
                pas_nats::publish(
                    &js,
                    &pas_nats::Outgoing::new(prefix.sample(&s).unwrap(), &s).unwrap(),
                )
                .await
                .unwrap(),
            );
            if pending.len() == 1000 {
                for ack in pending.drain(..) {
                    ack.await.unwrap();
                }
            }
        }
    }
    for ack in pending.drain(..) {
        ack.await.unwrap();
    }
    let (stop, metrics, task) = start(Config {
        stale_after: Duration::from_secs(600),
        forget_after: Duration::from_secs(900),
        ..config(&server, RUN, "r1")
    });
    eventually(
        Duration::from_secs(120),
        "a forecast of every workload",
        || async { (seen.workloads().len() == WORKLOADS).then_some(()) },
    )
    .await;
    // A forecast is counted when JetStream acks it, which can come after a
    // subscriber already saw it.
    eventually(
        Duration::from_secs(30),
        "every forecast counted once acked",
        || async { (metrics.forecasts(false) >= WORKLOADS as u64).then_some(()) },
    )
    .await;
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the forecaster stops")
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_model_store_entries_are_refused_and_the_stages_still_start() {
    let server = NatsServer::with_accounts();
    let conn = connect_and_provision(&server).await;
    let js = conn.jetstream.clone();
    let bucket = js.get_object_store(BUCKET_MODELS).await.unwrap();
    let layout = Layout::new(&Prefix::live());

    // A good version 1.
    let small = LstmConfig {
        window: 8,
        hidden: 4,
        max_epochs: 1,
        patience: 0,
        ..LstmConfig::default()
    };
    let mut model = Lstm::new(small.clone()).unwrap();
    let values: Vec<f64> = (0..200).map(|i| 40.0 + (i % 10) as f64).collect();
    pas_models::Forecaster::fit(
        &mut model,
        &Series {
            seasonal: None,
            start: DateTime::UNIX_EPOCH,
            step_seconds: 1,
            values,
        },
        &mut |_| {},
    )
    .unwrap();
    let weights = model.to_safetensors().unwrap();
    store::save(&bucket, &layout, &manifest(&model, 1, &weights), &weights)
        .await
        .unwrap();

    // An object-metadata entry with an empty mtime, as another client writes
    // on delete: the Rust client cannot parse it.
    bucket.put("junk", &mut &b"x"[..]).await.unwrap();
    let mut stream = js
        .get_stream(pas_nats::definitions::object_stream())
        .await
        .unwrap();
    let last = stream.info().await.unwrap().state.last_sequence;
    let meta = stream.get_raw_message(last).await.unwrap();
    assert!(meta.subject.starts_with("$O.pas-models.M."), "{}", meta.subject);
    let mut entry: serde_json::Value = serde_json::from_slice(&meta.payload).unwrap();
    entry["mtime"] = "".into();
    entry["deleted"] = true.into();
    raw(&js, &meta.subject, serde_json::to_vec(&entry).unwrap()).await;
    assert!(
        bucket.info("junk").await.is_err(),
        "the client cannot read the entry"
    );

    // The trainer reads the bucket at start; it must not fail on the entry.
    let versions = store::load(&bucket, &stream, &layout)
        .await
        .expect("the bucket loads past the bad entry");
    assert_eq!(versions["shop/web"].keys().copied().collect::<Vec<_>>(), vec![1]);

    let (stop, metrics, task) = start(Config {
        run: None,
        ..config(&server, "unused", "r1")
    });
    eventually(Duration::from_secs(20), "version 1 served", || async {
        (metrics.loads() == 1).then_some(())
    })
    .await;

    // Version 2 claims a network of hidden = 20000 with 210 bytes of weights.
    let garbage = vec![0u8; 210];
    let mut v2 = manifest(&model, 2, &garbage);
    v2.hyper_parameters = LstmConfig {
        hidden: 20_000,
        ..small
    }
    .hyper_parameters();
    store::save(&bucket, &layout, &v2, &garbage).await.unwrap();
    eventually(Duration::from_secs(20), "version 2 refused", || async {
        (metrics.refusals("load") == 1).then_some(())
    })
    .await;
    assert_eq!(metrics.loads(), 1, "version 1 keeps serving");
    assert!(!task.is_finished(), "the forecaster is still running");
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the forecaster stops")
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_nats_down_exits_within_ten_seconds() {
    // 32 partition releases one after another, each waiting for its 5 s
    // timeout, held the forecaster for 178 s after SIGTERM.
    const RUN: &str = "down";
    let mut server = NatsServer::with_accounts();
    let conn = connect_and_provision(&server).await;
    let js = conn.jetstream.clone();
    let seen = Seen::start(&conn.client, Prefix::replay(RUN).unwrap().all_forecasts()).await;
    let stop_feed = CancellationToken::new();
    let feeding = feed(
        js.clone(),
        Prefix::replay(RUN).unwrap(),
        vec!["web".into()],
        2,
        stop_feed.clone(),
    );
    let config = Config {
        partitions: 32,
        nats: NatsConfig {
            ack_timeout: Duration::from_secs(5),
            ..config(&server, RUN, "r1").nats
        },
        ..config(&server, RUN, "r1")
    };
    let (stop, metrics, task) = start(config);
    eventually(
        Duration::from_secs(20),
        "every partition held and a forecast",
        || async { (metrics.partitions() == 32 && seen.count() >= 1).then_some(()) },
    )
    .await;
    stop_feed.cancel();
    feeding.abort();
    server.kill();
    pas_integration_tests::exits_within_ten_seconds("the forecaster", || stop.cancel(), task)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_rebuilds_through_the_same_door_so_a_stored_future_sample_is_left_out() {
    // The consumer dead-letters a sample dated 23 h ahead, but it stays in
    // PAS_SAMPLES: a restarted forecaster rebuilding its windows from the
    // stream must refuse it too, or the workload's newest step lies a day
    // ahead and every true sample after it is late.
    const RUN: &str = "rebuild";
    let server = NatsServer::with_accounts();
    let conn = connect_and_provision(&server).await;
    let js = conn.jetstream.clone();
    let prefix = Prefix::replay(RUN).unwrap();
    let seen = Seen::start(&conn.client, prefix.all_forecasts()).await;
    let stop_feed = CancellationToken::new();
    let feeding = feed(
        js.clone(),
        prefix.clone(),
        vec!["web".into()],
        5,
        stop_feed.clone(),
    );
    let (stop, _, task) = start(config(&server, RUN, "r1"));
    eventually(Duration::from_secs(20), "the first forecasts", || async {
        (seen.count() >= 2).then_some(())
    })
    .await;
    let mut ahead = serde_json::to_value(sample(Utc::now(), "web", 20.0)).unwrap();
    ahead["timestamp"] = serde_json::to_value(Utc::now() + TimeDelta::hours(23)).unwrap();
    raw(
        &js,
        &prefix.pod_cpu("shop", "web", "web-0").unwrap(),
        serde_json::to_vec(&ahead).unwrap(),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();
    task.await.unwrap().unwrap();

    // The same replica again: its consumer exists, so it rebuilds from the stream.
    let (stop, _, task) = start(config(&server, RUN, "r1"));
    let before = seen.count();
    eventually(Duration::from_secs(15), "forecasts after the restart", || async {
        (seen.count() >= before + 3).then_some(())
    })
    .await;
    stop_feed.cancel();
    feeding.await.unwrap();
    stop.cancel();
    task.await.unwrap().unwrap();
}

/// After the NATS server restarts, the model watch and the sample reader
/// come back by themselves as the forecaster's own user: the client
/// recreates its ordered consumers under new names (deleting the old ones
/// on its own bucket), which the accounts file allows, so a version stored
/// after the restart is served at once, not at the next full rescan (5 min).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_nats_restart_samples_flow_and_new_versions_are_served_at_once() {
    const RUN: &str = "fc-restart";
    let mut server = NatsServer::with_accounts();
    let conn = connect_and_provision(&server).await;
    let js = conn.jetstream.clone();
    let bucket = js.get_object_store(BUCKET_MODELS).await.unwrap();
    let layout = Layout::new(&Prefix::replay(RUN).unwrap());
    let seen = Seen::start(&conn.client, Prefix::replay(RUN).unwrap().all_forecasts()).await;
    let stop_feed = CancellationToken::new();
    let feeding = feed(
        js.clone(),
        Prefix::replay(RUN).unwrap(),
        vec!["web".into()],
        30,
        stop_feed.clone(),
    );
    let (stop, _metrics, task) = start(config(&server, RUN, "solo"));
    eventually(Duration::from_secs(15), "a forecast", || async {
        seen.of("web").first().cloned()
    })
    .await;

    stop_feed.cancel();
    let _ = feeding.await;
    server.restart();
    let restarted = Utc::now();
    let stop_feed = CancellationToken::new();
    let feeding = feed(
        js.clone(),
        Prefix::replay(RUN).unwrap(),
        vec!["web".into()],
        0,
        stop_feed.clone(),
    );
    // Forecasts from windows that hold samples published after the restart.
    eventually(
        Duration::from_secs(30),
        "a forecast from samples after the restart",
        || async {
            seen.of("web")
                .last()
                .filter(|f| f.window_end > restarted)
                .map(|_| ())
        },
    )
    .await;
    let model = trained(1);
    let weights = model.to_safetensors().unwrap();
    store::save(&bucket, &layout, &manifest(&model, 1, &weights), &weights)
        .await
        .unwrap();
    eventually(
        Duration::from_secs(30),
        "version 1 served after the restart",
        || async { seen.of("web").last().filter(|f| f.model.version == 1).map(|_| ()) },
    )
    .await;
    stop_feed.cancel();
    let _ = feeding.await;
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(15), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// Every slot `kv` holds for `web` in the blocks around `now`, by slot
/// start (seconds since the epoch).
async fn stored_slots(kv: &jetstream::kv::Store, prefix: &Prefix, now: DateTime<Utc>) -> BTreeMap<i64, f64> {
    use pas_workloads::history::{Block, SLOTS};
    let index = now.timestamp().div_euclid(2 * SLOTS as i64);
    let mut slots = BTreeMap::new();
    for i in index - 1..=index {
        let key = prefix.keys().history("shop", "web", i);
        if let Some(bytes) = kv.get(&key).await.unwrap() {
            let block = Block::decode(&bytes).unwrap();
            for (s, v) in block.values.iter().enumerate() {
                if !v.is_nan() {
                    slots.insert(block.start() + 2 * s as i64, *v);
                }
            }
        }
    }
    slots
}

/// Issue 18: the coarse history outlives the forecaster. A first
/// forecaster records 2 s slots of a workload's demand into `pas-history`;
/// a second one, started after the slots left its own look-back into
/// PAS_SAMPLES (10 steps), reads them back, refuses a corrupt block beside
/// them, and writes blocks that still hold them along with its new slots.
/// Each slot is the mean of the demand the samples carried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_coarse_history_survives_a_restart_of_the_forecaster() {
    const RUN: &str = "history";
    let server = NatsServer::with_accounts();
    let conn = connect_and_provision(&server).await;
    let js = conn.jetstream.clone();
    let kv = js
        .get_key_value(pas_schemas::subjects::BUCKET_HISTORY)
        .await
        .unwrap();
    let prefix = Prefix::replay(RUN).unwrap();
    let values = trace_values();
    let stop_feed = CancellationToken::new();
    let feeding = feed(
        js.clone(),
        prefix.clone(),
        vec!["web".into()],
        3,
        stop_feed.clone(),
    );
    let settings = || Config {
        history: 10,
        coarse_step: Some(Duration::from_secs(2)),
        coarse_keep: Duration::from_secs(3600),
        ..config(&server, RUN, "r1")
    };

    let (stop, metrics, task) = start(settings());
    let first = eventually(Duration::from_secs(60), "ten slots stored", || async {
        let slots = stored_slots(&kv, &prefix, Utc::now()).await;
        (slots.len() >= 10).then_some(slots)
    })
    .await;
    assert!(metrics.history_io(true).1 >= 1, "writes are counted");
    // Each slot is the mean of its two one-second steps' demand (the
    // first may have seen only its second step).
    for (start, v) in first.iter().skip(1) {
        let expected: f64 = (0..2)
            .map(|d| values[(*start as usize + d) % values.len()])
            .sum::<f64>()
            / 2.0;
        assert!(
            (v - expected).abs() <= 1e-3 * expected.max(1.0) + 0.02,
            "slot {start}: stored {v}, the samples' mean {expected}"
        );
    }
    stop.cancel();
    task.await.unwrap().unwrap();
    let before = stored_slots(&kv, &prefix, Utc::now()).await;

    // Out of the restarted forecaster's look-back (10 steps and 3 s of
    // lateness) only once 14 s have passed.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let restarted_at = Utc::now().timestamp();
    let old: BTreeMap<i64, f64> = before
        .into_iter()
        .filter(|(start, _)| *start + 2 < restarted_at - 14)
        .collect();
    assert!(old.len() >= 3, "slots only the store still has: {old:?}");
    // A corrupt block beside them: refused, and the rest still read.
    let now_block = Utc::now().timestamp().div_euclid(2 * 288);
    kv.put(
        prefix.keys().history("shop", "web", now_block - 3),
        "not a block".into(),
    )
    .await
    .unwrap();

    let (stop, metrics, task) = start(settings());
    // The restarted forecaster records new slots, …
    let after = eventually(Duration::from_secs(30), "slots after the restart", || async {
        let slots = stored_slots(&kv, &prefix, Utc::now()).await;
        slots.keys().any(|s| *s > restarted_at + 2).then_some(slots)
    })
    .await;
    assert!(metrics.history_io(true).0 >= 1, "the stored history was read");
    assert_eq!(metrics.history_refusals(), 1, "the corrupt block");
    // … and its blocks still hold what only the store had.
    for (start, v) in &old {
        let kept = after
            .get(start)
            .unwrap_or_else(|| panic!("slot {start} lost in the restart"));
        assert!((kept - v).abs() <= 0.02, "slot {start}: {v} became {kept}");
    }
    stop_feed.cancel();
    feeding.await.unwrap();
    stop.cancel();
    task.await.unwrap().unwrap();
}

/// Issue 18: a seasonal model is served what the load did a day before,
/// from the history stored in `pas-history` (here by the test, as an
/// earlier forecaster would have): the published forecast is the model's
/// own prediction with those lags, not the one without.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seasonal_model_is_served_the_stored_history_of_a_day_before() {
    use pas_workloads::history::{Block, History};
    const RUN: &str = "seasonal";
    let server = NatsServer::with_accounts();
    let conn = connect_and_provision(&server).await;
    let js = conn.jetstream.clone();
    let prefix = Prefix::replay(RUN).unwrap();
    let seen = Seen::start(&conn.client, prefix.all_forecasts()).await;

    // A small LSTM whose output layer learned to read the seasonal inputs:
    // trained with a day-earlier history that runs 1.5 times the series.
    let values = trace_values()[..1200].to_vec();
    let first = DateTime::from_timestamp(86_400 * 30, 0).unwrap();
    let earlier: Vec<f64> = values.iter().map(|v| v * 1.5).collect();
    let mut train = Series {
        seasonal: Some(Arc::new(History::of_series(
            first - TimeDelta::days(1),
            1,
            &earlier,
            300,
        ))),
        start: first,
        step_seconds: 1,
        values,
    };
    train.fill_gaps(3);
    let mut model = Lstm::new(LstmConfig {
        window: 12,
        hidden: 8,
        max_epochs: 3,
        patience: 0,
        ..LstmConfig::default()
    })
    .unwrap();
    model.fit(&train, &mut |_| {}).unwrap();
    let weights = model.to_safetensors().unwrap();
    let bucket = js.get_object_store(BUCKET_MODELS).await.unwrap();
    store::save(
        &bucket,
        &Layout::new(&prefix),
        &manifest(&model, 1, &weights),
        &weights,
    )
    .await
    .unwrap();

    // Yesterday's history of web around this time, stored block by block.
    let now = Utc::now();
    let from = DateTime::from_timestamp(now.timestamp() - 86_400 - 3_600, 0).unwrap();
    let yesterday: Vec<f64> = (0..7_200)
        .map(|i| 300.0 + 200.0 * (i as f64 / 900.0).sin())
        .collect();
    let mut stored = History::of_series(from, 1, &yesterday, 300);
    let kv = js
        .get_key_value(pas_schemas::subjects::BUCKET_HISTORY)
        .await
        .unwrap();
    // What the forecaster will read: the blocks as encoded.
    let mut read = History::new(300, 2 * 86_400);
    for block in stored.take_changed() {
        let bytes = block.encode();
        read.merge(Block::decode(&bytes).unwrap()).unwrap();
        kv.put(prefix.keys().history("shop", "web", block.index), bytes.into())
            .await
            .unwrap();
    }

    let stop_feed = CancellationToken::new();
    let feeding = feed(
        js.clone(),
        prefix.clone(),
        vec!["web".into()],
        15,
        stop_feed.clone(),
    );
    let (stop, metrics, task) = start(Config {
        coarse_keep: Duration::from_secs(2 * 86_400),
        ..config(&server, RUN, "r1")
    });
    let trace = trace_values();
    let (got, with, without) = eventually(
        Duration::from_secs(30),
        "a forecast with the seasonal context",
        || {
            let (seen, model, read, trace) = (&seen, &model, &read, &trace);
            async move {
                let last = seen
                    .of("web")
                    .into_iter()
                    .rev()
                    .find(|f| f.model.kind == "lstm")?;
                let end = last.window_end.timestamp();
                let window: Vec<f64> = (end - 11..=end)
                    .map(|t| trace[t as usize % trace.len()])
                    .collect();
                let lags = pas_models::seasonal::lags(read, last.window_end, 1, 10);
                let with = model.predict_seasonal(&[&window], &[lags]).unwrap().remove(0);
                let without = model.predict(&window).unwrap();
                let close = |p: &pas_models::Prediction| {
                    last.values
                        .iter()
                        .zip(&p.values)
                        .all(|(g, w)| (g - w.max(0.0)).abs() < 1e-3 * (1.0 + w.abs()))
                };
                close(&with).then_some((last.values.clone(), with.values, without.values))
            }
        },
    )
    .await;
    assert!(metrics.history_io(true).0 >= 1, "the stored history was read");
    let apart = with
        .iter()
        .zip(&without)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(
        apart > 1e-2,
        "the model reads its seasonal inputs: {with:?} without them would be {without:?} (published {got:?})"
    );
    stop_feed.cancel();
    feeding.await.unwrap();
    stop.cancel();
    task.await.unwrap().unwrap();
}

/// The global model (issue 19) for a 1 s step: trained across the trace at
/// three scales, each window scaled on its own.
fn trained_global() -> Lstm {
    let values = trace_values()[..1200].to_vec();
    let series: Vec<Series> = [0.1, 1.0, 30.0]
        .iter()
        .map(|k| Series {
            seasonal: None,
            start: DateTime::UNIX_EPOCH,
            step_seconds: 1,
            values: values.iter().map(|v| v * k).collect(),
        })
        .collect();
    let config = LstmConfig {
        window: 12,
        hidden: 8,
        max_epochs: 2,
        patience: 0,
        ..LstmConfig::default()
    };
    pas_models::global::train(&series, &config, 2000, None, &mut |_| {})
        .unwrap()
        .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_workload_is_forecast_by_the_global_model_from_its_first_window() {
    const RUN: &str = "fc-global";
    let server = NatsServer::with_accounts();
    let conn = connect_and_provision(&server).await;
    let js = conn.jetstream.clone();
    let bucket = js.get_object_store(BUCKET_MODELS).await.unwrap();
    let layout = Layout::new(&Prefix::replay(RUN).unwrap());
    let seen = Seen::start(&conn.client, Prefix::replay(RUN).unwrap().all_forecasts()).await;

    let global = trained_global();
    let weights = global.to_safetensors().unwrap();
    let mut g = manifest(&global, 1, &weights);
    g.key = "global".into();
    assert_eq!(g.normalisation, pas_schemas::Normalisation::Window);
    store::save(&bucket, &layout, &g, &weights).await.unwrap();
    // `old` has an accepted model of its own (v1), but its newest version
    // (v2) lost to the global model on its backtest: the global one serves it.
    let own = trained(1);
    let own_weights = own.to_safetensors().unwrap();
    let mut v1 = manifest(&own, 1, &own_weights);
    v1.key = "shop/old".into();
    store::save(&bucket, &layout, &v1, &own_weights).await.unwrap();
    let mut v2 = v1.clone();
    v2.version = 2;
    v2.accepted = false;
    v2.validation = [
        ("lstm".to_owned(), 0.7),
        ("global".to_owned(), 0.5),
        ("naive".to_owned(), 1.0),
    ]
    .into();
    assert!(v2.defers_to_global());
    store::save(&bucket, &layout, &v2, &own_weights).await.unwrap();

    // No history at all: both workloads start with the forecaster.
    let (stop, _metrics, task) = start(config(&server, RUN, "solo"));
    let stop_feed = CancellationToken::new();
    let feeding = feed(
        js.clone(),
        Prefix::replay(RUN).unwrap(),
        vec!["fresh".into(), "old".into()],
        0,
        stop_feed.clone(),
    );
    let first_global = eventually(Duration::from_secs(30), "a global forecast of fresh", || async {
        seen.of("fresh").into_iter().find(|f| f.model.key == "global")
    })
    .await;
    assert_eq!(
        (first_global.model.kind.as_str(), first_global.model.version),
        ("lstm", 1),
        "{first_global:?}"
    );
    // From its first full window (12 steps): before it, the naive baseline.
    let fresh = seen.of("fresh");
    let first = &fresh[0];
    let steps_before = (first_global.window_end - first.window_end).num_seconds();
    assert!(
        fresh
            .iter()
            .take_while(|f| f.window_end < first_global.window_end)
            .all(|f| f.model.kind == "naive"),
        "{fresh:?}"
    );
    assert!(
        steps_before <= 12,
        "the first global forecast came {steps_before} steps after the first forecast"
    );
    // The forecast is the global model's own prediction from that window.
    assert_predicted_by(&first_global, &global);
    // `old`: once its window fits, only ever the global model, never its v1.
    eventually(Duration::from_secs(10), "a global forecast of old", || async {
        seen.of("old").into_iter().find(|f| f.model.key == "global")
    })
    .await;
    assert!(
        seen.of("old")
            .iter()
            .all(|f| f.model.version == 0 || f.model.key == "global"),
        "{:?}",
        seen.of("old")
    );
    stop_feed.cancel();
    feeding.await.unwrap();
    stop.cancel();
    task.await.unwrap().unwrap();
}
