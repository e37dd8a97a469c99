//! The scaler against a real nats-server with JetStream: forecasts and
//! samples in, decisions out on `pas.scale.<namespace>.<workload>` and in
//! PAS_DECISIONS; two scalers running, one acts; a scaler restarted inside a
//! stabilisation window keeps it (its state is in KV `pas-scaler`).
//!
//! No Kubernetes API server can run here, so the StatefulSets are the
//! scaler's simulated cluster (`pas_scaler::cluster::Simulated`); the real
//! Kubernetes calls are tested against kube's mock service in
//! `agents/scaler/src/k8s.rs`.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream;
use chrono::{DateTime, TimeDelta, Utc};
use futures::StreamExt;
use pas_integration_tests::{NatsServer, connect_and_provision, eventually};
use pas_nats::NatsConfig;
use pas_scaler::cluster::{Simulated, SimulatedChange};
use pas_scaler::policy::{RateKind, RatePolicy, Rules, Select};
use pas_scaler::{Config, Metrics, Scaler};
use pas_schemas::subjects::{BUCKET_SCALER, Prefix, STREAM_DECISIONS};
use pas_schemas::{CpuSample, Forecast, ModelRef, Outcome, SCHEMA_VERSION, ScaleDecision};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

fn config(server: &NatsServer, replica: &str) -> Config {
    Config {
        tick: Duration::from_secs(1),
        lease: Duration::from_secs(3),
        replica: Some(replica.into()),
        listen: "127.0.0.1:0".parse().unwrap(),
        // The stage runs as its own user, with the accounts file's permissions.
        nats: NatsConfig {
            ack_timeout: NatsConfig::default().ack_timeout,
            ..server.as_user("scaler")
        },
        ..Config::default()
    }
}

/// Managed, a 50 % target, pods ready 10 s after they start.
const ON: [(&str, &str); 3] = [
    ("pas.io/enabled", "true"),
    ("pas.io/target-utilization", "50"),
    ("pas.io/startup", "10s"),
];

/// A nats-server with the PAS streams and buckets, and a connection to it.
async fn bus() -> (NatsServer, pas_nats::Connection, jetstream::Context) {
    let server = NatsServer::with_accounts();
    let conn = connect_and_provision(&server).await;
    let js = conn.jetstream.clone();
    (server, conn, js)
}

fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn start(config: Config, sim: &Simulated) -> (Metrics, CancellationToken, JoinHandle<()>) {
    let scaler = Scaler::new(config, sim.clone()).unwrap();
    let metrics = scaler.metrics();
    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let stop = stop.clone();
        async move { scaler.run(stop).await.unwrap() }
    });
    (metrics, stop, task)
}

async fn publish<M: pas_schemas::Message>(js: &jetstream::Context, subject: String, msg: &M) {
    let out = pas_nats::Outgoing::new(subject, msg).unwrap();
    pas_nats::publish(js, &out).await.unwrap().await.unwrap();
}

/// A sample of pod `workload-<ordinal>` using `percent` of a 1000m request.
async fn sample(js: &jetstream::Context, workload: &str, ordinal: u32, percent: f64) {
    let s = CpuSample {
        schema_version: SCHEMA_VERSION,
        timestamp: Utc::now(),
        node: "node-1".into(),
        namespace: Some("shop".into()),
        workload: Some(workload.into()),
        pod: Some(format!("{workload}-{ordinal}")),
        cpu_used_millicores: percent * 10.0,
        cpu_requested_millicores: Some(1000.0),
        cpu_capacity_millicores: None,
        cpu_throttled_ratio: None,
    };
    publish(js, Prefix::live().sample(&s).unwrap(), &s).await;
}

/// A forecast of `values` (demand, millicores; pods request 1000m) whose
/// input window ended a step ago.
fn forecast(workload: &str, version: u64, values: Vec<f64>) -> Forecast {
    let now = Utc::now();
    Forecast {
        schema_version: SCHEMA_VERSION,
        timestamp: now,
        namespace: "shop".into(),
        workload: workload.into(),
        model: ModelRef {
            key: format!("shop/{workload}"),
            kind: "lstm".into(),
            version,
        },
        window_end: DateTime::from_timestamp(now.timestamp() - 5, 0).unwrap(),
        step_seconds: 5.0,
        pod_request_millicores: 1000.0,
        values,
        upper: None,
        quantile: None,
        quantiles: None,
    }
}

async fn send_forecast(js: &jetstream::Context, f: &Forecast) {
    publish(js, Prefix::live().forecast(&f.namespace, &f.workload).unwrap(), f).await;
}

/// Subscribes to every decision; returns once the subscription is known to
/// the server.
async fn decisions(client: &async_nats::Client) -> async_nats::Subscriber {
    let sub = client.subscribe(Prefix::live().all_decisions()).await.unwrap();
    // A round trip, so the server has the subscription (flush is not one).
    let _ = client.request("$JS.API.INFO", "".into()).await;
    sub
}

async fn next_decision(sub: &mut async_nats::Subscriber, workload: &str) -> (String, ScaleDecision) {
    next_decision_where(sub, workload, |_| true).await
}

/// The next decision about `workload` that `wanted` accepts (the scaler
/// also decides on samples every tick).
async fn next_decision_where(
    sub: &mut async_nats::Subscriber,
    workload: &str,
    wanted: impl Fn(&ScaleDecision) -> bool,
) -> (String, ScaleDecision) {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(15), sub.next())
            .await
            .expect("a decision")
            .expect("subscription open");
        let d: ScaleDecision = pas_schemas::decode(&msg.payload).expect("a valid decision");
        if d.workload == workload && wanted(&d) {
            return (msg.subject.to_string(), d);
        }
    }
}

fn on_forecast(d: &ScaleDecision) -> bool {
    d.rule != "hpa-fallback"
}

/// Forecasts become decisions on the workload's subject, stored in
/// PAS_DECISIONS: applied, dry-run, refused for an HPA, and with the bad
/// annotations reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forecasts_in_decisions_out() {
    let (server, conn, js) = bus().await;
    let sim = Simulated::new();
    let on = ON;
    sim.insert("shop", "web", 2, annotations(&on), Some(1000.0));
    sim.insert(
        "shop",
        "db",
        3,
        annotations(&[&on[..], &[("pas.io/dry-run", "true")]].concat()),
        Some(1000.0),
    );
    sim.insert(
        "shop",
        "cache",
        2,
        annotations(&[&on[..], &[("pas.io/mode", "act")]].concat()),
        Some(1000.0),
    );
    sim.set_hpa("shop", "cache", "cache-hpa");
    sim.insert(
        "shop",
        "odd",
        2,
        annotations(&[&on[..], &[("pas.io/max-replicas", "lots")]].concat()),
        Some(1000.0),
    );
    sim.insert(
        "shop",
        "off",
        2,
        annotations(&[("pas.io/target-utilization", "50")]),
        Some(1000.0),
    );
    let mut sub = decisions(&conn.client).await;
    let (metrics, stop, task) = start(config(&server, "a"), &sim);
    eventually(Duration::from_secs(10), "the scaler to lead", || async {
        metrics.is_leader().then_some(())
    })
    .await;

    // Every pod at the 50 % target: the HPA rule alone would keep them.
    for w in ["web", "db", "cache", "odd", "off"] {
        for ordinal in 0..3 {
            sample(&js, w, ordinal, 50.0).await;
        }
    }
    // The scaler has the samples (its sample and forecast consumers are
    // separate) once it decides on them.
    next_decision_where(&mut sub, "web", |d| d.utilization_percent == Some(50.0)).await;
    // A peak demand of 3000m ahead: at 50 % of 1000m per pod, 6 replicas.
    let web = forecast("web", 7, vec![1200.0, 3000.0, 1800.0]);
    send_forecast(&js, &web).await;
    let (subject, d) = next_decision_where(&mut sub, "web", on_forecast).await;
    assert_eq!(subject, "pas.scale.shop.web");
    assert_eq!(
        (d.replicas_before, d.replicas_after, d.outcome),
        (2, 6, Outcome::Applied),
        "{d:?}"
    );
    assert_eq!((d.policy.as_str(), d.rule.as_str()), ("hybrid", "predictive"));
    assert_eq!(d.predicted_peak_millicores, Some(3000.0));
    assert_eq!(d.utilization_percent, Some(50.0));
    let used = d.forecast.expect("the forecast used");
    assert_eq!((used.model, used.window_end), (web.model.clone(), web.window_end));
    assert_eq!(sim.replicas("shop", "web"), Some(6));
    assert!(sim.log().contains(&SimulatedChange::Event {
        workload: "shop/web".into(),
        reason: "SuccessfulRescale".into()
    }));

    // Dry-run: decided and published, not changed.
    send_forecast(&js, &forecast("db", 3, vec![3000.0])).await;
    let (_, d) = next_decision_where(&mut sub, "db", on_forecast).await;
    assert_eq!(
        (d.replicas_before, d.replicas_after, d.outcome),
        (3, 6, Outcome::DryRun),
        "{d:?}"
    );
    assert_eq!(sim.replicas("shop", "db"), Some(3));

    // An HPA targets cache and it is to act: refused, once as an Event.
    send_forecast(&js, &forecast("cache", 1, vec![3000.0])).await;
    let (_, d) = next_decision(&mut sub, "cache").await;
    assert_eq!(
        (d.rule.as_str(), d.outcome, d.replicas_after),
        ("hpa-conflict", Outcome::Refused, 2),
        "{d:?}"
    );
    assert!(d.reason.contains("cache-hpa"));
    assert_eq!(sim.replicas("shop", "cache"), Some(2));

    // Bad annotations: reported on the decision and counted; defaults apply (max 10).
    send_forecast(&js, &forecast("odd", 1, vec![20_000.0])).await;
    let (_, d) = next_decision_where(&mut sub, "odd", on_forecast).await;
    assert!(
        d.warnings
            .iter()
            .any(|w| w.starts_with("pas.io/max-replicas=\"lots\"")),
        "{:?}",
        d.warnings
    );
    assert_eq!((d.replicas_after, d.rule.as_str()), (6, "rate-limit"), "{d:?}");
    assert!(metrics.invalid_settings_count() >= 1);

    // Not enabled: no decisions at all, however high the forecast.
    send_forecast(&js, &forecast("off", 1, vec![20_000.0])).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut ws = Vec::new();
    while let Some(Some(msg)) = futures::FutureExt::now_or_never(sub.next()) {
        ws.push(
            pas_schemas::decode::<ScaleDecision>(&msg.payload)
                .unwrap()
                .workload,
        );
    }
    assert!(!ws.contains(&"off".to_string()), "{ws:?}");
    assert_eq!(sim.replicas("shop", "off"), Some(2));

    // The decisions are in the stream, as JetStream stored them.
    let mut stream = js.get_stream(STREAM_DECISIONS).await.unwrap();
    let stored = stream.info().await.unwrap().state.messages;
    assert!(stored >= 4, "{stored} decisions stored");
    assert!(
        metrics.decisions("applied") >= 1
            && metrics.decisions("dry_run") >= 1
            && metrics.decisions("refused") >= 1
    );
    stop.cancel();
    task.await.unwrap();
}

/// Two scalers on one bus: only the lease holder consumes and acts; when it
/// stops, the other takes over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_scalers_one_acts() {
    let (server, conn, js) = bus().await;
    let sim = Simulated::new();
    let on = [&ON[..], &[("pas.io/max-replicas", "50")]].concat();
    sim.insert("shop", "web", 2, annotations(&on), Some(1000.0));
    let mut sub = decisions(&conn.client).await;
    let (a, stop_a, task_a) = start(config(&server, "a"), &sim);
    eventually(Duration::from_secs(10), "a to lead", || async {
        a.is_leader().then_some(())
    })
    .await;
    let (b, stop_b, task_b) = start(config(&server, "b"), &sim);

    for round in 0..4 {
        sample(&js, "web", 0, 50.0).await;
        sample(&js, "web", 1, 50.0).await;
        send_forecast(&js, &forecast("web", round, vec![1000.0])).await;
        let (_, d) = next_decision(&mut sub, "web").await;
        assert_eq!(d.outcome, Outcome::Unchanged, "{d:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        a.decisions("unchanged") >= 4,
        "a decided {}",
        a.decisions("unchanged")
    );
    assert_eq!(b.decisions("unchanged"), 0, "the standby decided");
    assert!(!b.is_leader());

    // a stops (and resigns); b takes over and acts.
    stop_a.cancel();
    task_a.await.unwrap();
    eventually(Duration::from_secs(10), "b to lead", || async {
        b.is_leader().then_some(())
    })
    .await;
    sample(&js, "web", 0, 50.0).await;
    sample(&js, "web", 1, 50.0).await;
    send_forecast(&js, &forecast("web", 9, vec![3000.0])).await;
    let d = loop {
        let (_, d) = next_decision(&mut sub, "web").await;
        if d.outcome == Outcome::Applied {
            break d;
        }
    };
    assert_eq!((d.replicas_before, d.replicas_after), (2, 6), "{d:?}");
    assert!(b.decisions("applied") >= 1);
    let scaled: Vec<_> = sim
        .log()
        .into_iter()
        .filter(|c| matches!(c, SimulatedChange::Scaled { .. }))
        .collect();
    assert_eq!(
        scaled,
        vec![SimulatedChange::Scaled {
            workload: "shop/web".into(),
            from: 2,
            to: 6
        }]
    );
    stop_b.cancel();
    task_b.await.unwrap();
}

/// A scaler restarted inside a scale-down stabilisation window keeps the
/// window: it scales in when the window that began before the restart ends,
/// not a full window after the restart (which is what a scaler that had
/// forgotten would do, starting a new window at the current replicas).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_the_stabilisation_window() {
    const WINDOW: i64 = 20;
    let (server, conn, js) = bus().await;
    let sim = Simulated::new();
    let on = [
        ("pas.io/enabled", "true"),
        ("pas.io/target-utilization", "50"),
        ("pas.io/policy", "hpa"),
    ];
    sim.insert("shop", "web", 2, annotations(&on), Some(1000.0));
    let mut cfg = config(&server, "a");
    cfg.behavior.scale_down = Rules {
        stabilization_window: Duration::from_secs(WINDOW as u64),
        select_policy: Select::Max,
        policies: vec![RatePolicy {
            kind: RateKind::Percent,
            value: 100,
            period: Duration::from_secs(15),
        }],
    };
    let mut sub = decisions(&conn.client).await;
    let (metrics, stop, task) = start(cfg.clone(), &sim);
    eventually(Duration::from_secs(10), "the scaler to lead", || async {
        metrics.is_leader().then_some(())
    })
    .await;

    // Two pods at 100 % of a 50 % target: 4 replicas.
    sample(&js, "web", 0, 100.0).await;
    sample(&js, "web", 1, 100.0).await;
    loop {
        let (_, d) = next_decision(&mut sub, "web").await;
        if d.outcome == Outcome::Applied {
            assert_eq!(d.replicas_after, 4);
            break;
        }
    }
    // Load drops: every pod at 10 % recommends 1, the window holds 4.
    let low = CancellationToken::new();
    let low_at = Utc::now();
    let feeding = tokio::spawn({
        let js = js.clone();
        let low = low.clone();
        async move {
            while !low.is_cancelled() {
                for ordinal in 0..4 {
                    sample(&js, "web", ordinal, 10.0).await;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    });
    let held = loop {
        let (_, d) = next_decision(&mut sub, "web").await;
        if d.rule == "stabilisation" {
            break d;
        }
    };
    assert_eq!((held.replicas_before, held.replicas_after), (4, 4), "{held:?}");

    // Restart 12 s into the window.
    tokio::time::sleep(
        (low_at + TimeDelta::seconds(12) - Utc::now())
            .to_std()
            .unwrap_or_default(),
    )
    .await;
    stop.cancel();
    task.await.unwrap();
    let kv = js.get_key_value(BUCKET_SCALER).await.unwrap();
    assert!(
        kv.get("live.state.shop.web").await.unwrap().is_some(),
        "the state is in the bucket"
    );
    let restarted_at = Utc::now();
    let (metrics, stop, task) = start(cfg, &sim);
    eventually(
        Duration::from_secs(10),
        "the restarted scaler to lead",
        || async { metrics.is_leader().then_some(()) },
    )
    .await;

    let (scaled_at, after_restart) = loop {
        let (_, d) = next_decision(&mut sub, "web").await;
        if d.timestamp < restarted_at {
            continue;
        }
        if d.outcome == Outcome::Applied {
            break (d.timestamp, d);
        }
        assert_eq!((d.replicas_after, d.rule.as_str()), (4, "stabilisation"), "{d:?}");
    };
    // To 1, or to 3 first when an evaluation saw the pods' new samples
    // only in part (a recommendation of 3 just after the drop) — either way
    // the first scale-in, which the window delays.
    assert!(after_restart.replicas_after < 4, "{after_restart:?}");
    let waited = (scaled_at - low_at).num_milliseconds() as f64 / 1000.0;
    println!("scaled in {waited:.1}s after the load dropped (window {WINDOW}s, restart at 12s)");
    // The window counts from the last recommendation of 4, just after
    // `low_at`; a forgetful scaler would wait until restart + 20 s (> 32 s).
    assert!(
        waited >= (WINDOW - 1) as f64 && waited <= (WINDOW + 5) as f64,
        "scaled in {waited:.1}s after the drop"
    );
    low.cancel();
    feeding.await.unwrap();
    stop.cancel();
    task.await.unwrap();
}

/// SIGTERM with NATS down: the scaler exits within 10 s (it took 24 s,
/// waiting on the lease release and its consumers one timeout after another).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_nats_down_exits_within_ten_seconds() {
    let (mut server, conn, js) = bus().await;
    let sim = Simulated::new();
    sim.insert("shop", "web", 2, annotations(&ON), Some(1000.0));
    let mut sub = decisions(&conn.client).await;
    let (metrics, stop, task) = start(config(&server, "a"), &sim);
    eventually(Duration::from_secs(10), "the scaler to lead", || async {
        metrics.is_leader().then_some(())
    })
    .await;
    sample(&js, "web", 0, 50.0).await;
    send_forecast(&js, &forecast("web", 1, vec![1000.0; 6])).await;
    next_decision(&mut sub, "web").await;

    server.kill();
    pas_integration_tests::exits_within_ten_seconds("the scaler", || stop.cancel(), task).await;
}

/// Every decision for every workload over all outcomes.
fn all_decisions(metrics: &Metrics) -> u64 {
    ["applied", "dry_run", "refused", "unchanged"]
        .iter()
        .map(|o| metrics.decisions(o))
        .sum()
}

/// The reproduction: one workload's slow key-value call held the
/// single decision loop (decisions for every workload came every 65–130 s).
/// Now state writes and publish acks happen beside the loop, each with its
/// own timeout: with the NATS server stopped (SIGSTOP: every call hangs),
/// the scaler, still inside its lease, goes on deciding for all of its 30
/// workloads every tick.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_nats_call_holds_up_no_other_workload() {
    let (server, _conn, js) = bus().await;
    let sim = Simulated::new();
    let workloads: Vec<String> = (0..30).map(|i| format!("w{i}")).collect();
    for w in &workloads {
        sim.insert("shop", w, 2, annotations(&ON), Some(1000.0));
    }
    let config = Config {
        lease: Duration::from_secs(30),
        ..config(&server, "a")
    };
    let (metrics, stop, task) = start(config, &sim);
    eventually(Duration::from_secs(10), "the scaler to lead", || async {
        metrics.is_leader().then_some(())
    })
    .await;
    for w in &workloads {
        sample(&js, w, 0, 50.0).await;
        sample(&js, w, 1, 50.0).await;
    }
    // Every workload decided on once: its state read and cached.
    eventually(
        Duration::from_secs(20),
        "a decision for every workload",
        || async { (all_decisions(&metrics) >= 2 * workloads.len() as u64).then_some(()) },
    )
    .await;

    server.pause();
    let before = all_decisions(&metrics);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let during = all_decisions(&metrics) - before;
    server.resume();
    println!("decisions while NATS hung for 4 s: {during}");
    assert!(
        during >= workloads.len() as u64,
        "only {during} decisions in 4 s with NATS hanging"
    );
    assert!(metrics.is_leader());
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(15), task)
        .await
        .expect("the scaler stops")
        .unwrap();
}

/// The reproduction: forecast values `1e308` and `-1e6` parsed and
/// were acted on (scaled to the maximum). Now they are refused at the door:
/// each ends in `pas.dlq.scaler` with its reason, nothing is scaled for
/// them, and the next sound forecast is decided on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impossible_forecast_values_are_dead_lettered_and_the_scaler_goes_on() {
    let (server, conn, js) = bus().await;
    let sim = Simulated::new();
    sim.insert("shop", "web", 2, annotations(&ON), Some(1000.0));
    let mut dead = conn
        .client
        .subscribe(Prefix::live().dlq(pas_schemas::subjects::Stage::Scaler))
        .await
        .unwrap();
    let mut sub = decisions(&conn.client).await;
    let (metrics, stop, task) = start(config(&server, "a"), &sim);
    eventually(Duration::from_secs(10), "the scaler to lead", || async {
        metrics.is_leader().then_some(())
    })
    .await;
    sample(&js, "web", 0, 50.0).await;
    sample(&js, "web", 1, 50.0).await;

    let subject = Prefix::live().forecast("shop", "web").unwrap();
    // Written as raw JSON (the typed encoder would refuse them first); the
    // reason each is dead-lettered for.
    let mut refused = async |f: serde_json::Value| -> String {
        js.publish(subject.clone(), f.to_string().into())
            .await
            .unwrap()
            .await
            .unwrap();
        let letter = tokio::time::timeout(Duration::from_secs(10), dead.next())
            .await
            .expect("a dead letter")
            .unwrap();
        letter
            .headers
            .as_ref()
            .and_then(|h| h.get(pas_schemas::subjects::HEADER_ERROR))
            .map(|v| v.to_string())
            .unwrap_or_default()
    };
    for values in [vec![1e308; 6], vec![-1e6; 6]] {
        let mut f = serde_json::to_value(forecast("web", 1, vec![1000.0; 6])).unwrap();
        f["values"] = serde_json::json!(values);
        let reason = refused(f).await;
        assert!(reason.contains("values"), "{reason}");
    }
    assert_eq!(
        sim.replicas("shop", "web"),
        Some(2),
        "nothing scaled for an impossible forecast"
    );

    // A forecast of the previous schema version (utilisation, no request)
    // is refused for its version, never read as demand.
    let mut old = serde_json::to_value(forecast("web", 1, vec![95.0; 6])).unwrap();
    old["schema_version"] = serde_json::json!(1);
    old.as_object_mut().unwrap().remove("pod_request_millicores");
    let reason = refused(old).await;
    assert!(reason.contains("schema version 1 is not supported"), "{reason}");

    // A sound forecast after them is decided on: a peak demand of 3000m
    // ahead, so 2 replicas become 6.
    send_forecast(&js, &forecast("web", 2, vec![1200.0, 3000.0, 1800.0])).await;
    let (_, d) = next_decision_where(&mut sub, "web", on_forecast).await;
    assert_eq!(d.forecast.map(|f| f.model.version), Some(2), "{:?}", d.reason);
    assert_eq!((d.replicas_before, d.replicas_after), (2, 6));
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(15), task)
        .await
        .expect("the scaler stops")
        .unwrap();
}
