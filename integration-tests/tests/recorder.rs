//! The recorder against a real nats-server with JetStream and a real
//! server speaking InfluxDB 2's write API: VictoriaMetrics (InfluxDB 2
//! itself cannot be installed here). Points are read back through
//! VictoriaMetrics' export API, where a field is the series
//! `<measurement>_<field>` with the point's tags as labels and times in ms.
//!
//! Every message becomes the right points; an InfluxDB outage loses nothing
//! (the batch waits, kept from redelivery, and is written when the server is
//! back); a point InfluxDB would reject goes to `pas.dlq.recorder` with the
//! reason while the rest is written; a nats-server killed mid-run loses no
//! sample; a restarted recorder never rewrites a
//! workload's step from part of its pods. The last two run the recorder as
//! the `recorder` user of `nats/server.conf`, with only its permissions.
//!
//! VictoriaMetrics accepts every line it is sent, so InfluxDB's own
//! rejections (400/422, which the recorder answers by splitting the batch)
//! are tested on the splitting function in `agents/recorder/src/influx.rs`.

use std::time::Duration;

use async_nats::jetstream;
use chrono::{DateTime, TimeDelta, Utc};
use futures::StreamExt;
use pas_integration_tests::{NatsServer, Series, VictoriaMetrics, connect_and_provision, eventually};
use pas_nats::NatsConfig;
use pas_recorder::{Config, InfluxConfig, Metrics, Recorder};
use pas_schemas::subjects::{
    HEADER_ERROR, HEADER_ERROR_TYPE, Prefix, STREAM_DECISIONS, STREAM_FORECASTS, STREAM_SAMPLES, Stage,
};
use pas_schemas::{CpuSample, Forecast, ForecastRef, ModelRef, Outcome, SCHEMA_VERSION, ScaleDecision};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

fn config(nats: NatsConfig, vm: &VictoriaMetrics) -> Config {
    Config {
        influx: InfluxConfig {
            url: vm.url(),
            org: "pas".into(),
            bucket: "pas".into(),
            token: pas_runtime::Secret::new("test-token"),
        },
        flush_interval: Duration::from_millis(200),
        retry_min: Duration::from_millis(100),
        retry_max: Duration::from_secs(2),
        write_timeout: Duration::from_secs(2),
        // The tests' samples come on a 5 s grid.
        step: Duration::from_secs(5),
        listen: "127.0.0.1:0".parse().unwrap(),
        nats,
        ..Config::default()
    }
}

fn start(config: Config) -> (Metrics, CancellationToken, JoinHandle<()>) {
    let recorder = Recorder::new(config).unwrap();
    let metrics = recorder.metrics();
    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let stop = stop.clone();
        async move { recorder.run(stop).await.unwrap() }
    });
    (metrics, stop, task)
}

async fn publish<M: pas_schemas::Message>(js: &jetstream::Context, subject: String, msg: &M) {
    let out = pas_nats::Outgoing::new(subject, msg).unwrap();
    pas_nats::publish(js, &out).await.unwrap().await.unwrap();
}

fn pod_sample(at: DateTime<Utc>, pod: &str, used: f64) -> CpuSample {
    CpuSample {
        schema_version: SCHEMA_VERSION,
        timestamp: at,
        node: "node-1".into(),
        namespace: Some("shop".into()),
        workload: Some("web".into()),
        pod: Some(pod.into()),
        cpu_used_millicores: used,
        cpu_requested_millicores: Some(500.0),
        cpu_capacity_millicores: None,
        cpu_throttled_ratio: None,
    }
}

async fn send_sample(js: &jetstream::Context, s: &CpuSample) {
    publish(js, Prefix::live().sample(s).unwrap(), s).await;
}

/// The start of a 5 s step some minutes ago (well inside VictoriaMetrics'
/// window for fresh data), and a time inside it.
fn step_start() -> DateTime<Utc> {
    let now = Utc::now().timestamp() - 120;
    DateTime::from_timestamp(now - now.rem_euclid(5), 0).unwrap()
}

/// The series named `name` whose labels include all of `labels`.
fn find<'a>(all: &'a [Series], name: &str, labels: &[(&str, &str)]) -> Vec<&'a Series> {
    all.iter()
        .filter(|s| {
            s.labels.get("__name__").map(String::as_str) == Some(name)
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect()
}

fn plain(nats: &NatsServer) -> NatsConfig {
    NatsConfig {
        urls: vec![nats.url()],
        ..NatsConfig::default()
    }
}

/// A server with `nats/server.conf`'s accounts, provisioned by the admin:
/// the recorder then runs as its own user, with only its permissions.
async fn accounts() -> (NatsServer, pas_nats::Connection) {
    let nats = NatsServer::with_accounts();
    let admin = pas_nats::connect(&nats.as_user("admin"), "admin", false)
        .await
        .unwrap();
    pas_nats::provision::init(&admin.jetstream, Default::default())
        .await
        .unwrap();
    (nats, admin)
}

/// Waits until the series `name` with `labels` holds `want` as (ms, value) points.
async fn wait_for(vm: &VictoriaMetrics, name: &str, labels: &[(&str, &str)], want: &[(i64, f64)]) {
    let mut last = Vec::new();
    let found = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let all = vm.export("cpu_usage.*|scale_decision.*").await;
            let got: Vec<(i64, f64)> = find(&all, name, labels)
                .iter()
                .flat_map(|s| s.points.clone())
                .collect();
            if got == want {
                return;
            }
            last = got;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    if found.is_err() {
        let missing: Vec<_> = want.iter().filter(|p| !last.contains(p)).take(5).collect();
        let extra: Vec<_> = last.iter().filter(|p| !want.contains(p)).take(5).collect();
        panic!(
            "{name} {labels:?}: want {} points, read {}; missing {missing:?}, unexpected {extra:?}",
            want.len(),
            last.len()
        );
    }
}

/// Waits until the series `name` with `labels` has `last` among its values
/// at `at` (ms), and no value outside `allowed`. A workload's step point is
/// rewritten as its samples arrive: InfluxDB keeps the last write of a
/// point, VictoriaMetrics keeps every write, so each is checked.
async fn wait_for_step(
    vm: &VictoriaMetrics,
    name: &str,
    labels: &[(&str, &str)],
    at: i64,
    last: f64,
    allowed: &[f64],
) {
    let mut seen = Vec::new();
    let found = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let all = vm.export("cpu_usage.*").await;
            seen = find(&all, name, labels)
                .iter()
                .flat_map(|s| s.points.clone())
                .filter(|p| p.0 == at)
                .map(|p| p.1)
                .collect();
            if seen.contains(&last) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(
        found.is_ok(),
        "{name} {labels:?} at {at}: want {last}, read {seen:?}"
    );
    for v in &seen {
        assert!(
            *v == last || allowed.contains(v),
            "{name} {labels:?} at {at}: {v} was written (allowed {allowed:?} before {last})"
        );
    }
}

/// Pending and unacked messages of the recorder's consumer on `stream`.
async fn backlog(js: &jetstream::Context, stream: &str, consumer: &str) -> (u64, usize, usize) {
    let mut c: jetstream::consumer::PullConsumer = js
        .get_stream(stream)
        .await
        .unwrap()
        .get_consumer(consumer)
        .await
        .unwrap();
    let info = c.info().await.unwrap();
    (info.num_pending, info.num_ack_pending, info.num_redelivered)
}

async fn all_acked(js: &jetstream::Context) {
    for (stream, consumer) in [
        (STREAM_SAMPLES, "pas-recorder-samples"),
        (STREAM_FORECASTS, "pas-recorder-forecasts"),
        (STREAM_DECISIONS, "pas-recorder-decisions"),
    ] {
        eventually(Duration::from_secs(10), "every message acked", || async {
            let (pending, unacked, _) = backlog(js, stream, consumer).await;
            (pending == 0 && unacked == 0).then_some(())
        })
        .await;
    }
}

fn decision(at: DateTime<Utc>, outcome: Outcome) -> ScaleDecision {
    ScaleDecision {
        schema_version: SCHEMA_VERSION,
        timestamp: at,
        namespace: "shop".into(),
        workload: "web".into(),
        replicas_before: 2,
        replicas_after: 4,
        policy: "hybrid".into(),
        rule: "predictive".into(),
        reason: "predicted peak 90% of a 50% target".into(),
        outcome,
        hpa: None,
        forecast: Some(ForecastRef {
            model: ModelRef {
                key: "shop/web".into(),
                kind: "lstm".into(),
                version: 3,
            },
            window_end: at - TimeDelta::seconds(5),
        }),
        utilization_percent: Some(70.0),
        predicted_peak_millicores: Some(900.0),
        lead_seconds: None,
        target_utilization_percent: Some(50.0),
        warnings: vec![],
    }
}

#[tokio::test]
async fn every_message_becomes_its_points() {
    let nats = NatsServer::start();
    let vm = VictoriaMetrics::start();
    let conn = connect_and_provision(&nats).await;
    let js = conn.jetstream.clone();
    let (metrics, stop, task) = start(config(plain(&nats), &vm));

    let t0 = step_start();
    let ms = |t: DateTime<Utc>| t.timestamp_millis();
    // Step t0: web-0 uses 100 then 300 of 500 (mean 200), web-1 300 of 500: 50 %.
    send_sample(&js, &pod_sample(t0, "web-0", 100.0)).await;
    send_sample(&js, &pod_sample(t0 + TimeDelta::seconds(1), "web-1", 300.0)).await;
    send_sample(&js, &pod_sample(t0 + TimeDelta::seconds(3), "web-0", 300.0)).await;
    // A node sample.
    let node = CpuSample {
        namespace: None,
        workload: None,
        pod: None,
        cpu_requested_millicores: None,
        cpu_capacity_millicores: Some(4000.0),
        cpu_throttled_ratio: None,
        ..pod_sample(t0, "x", 1000.0)
    };
    send_sample(&js, &node).await;
    // A forecast made at the end of step t0 for the next three steps.
    let forecast = Forecast {
        schema_version: SCHEMA_VERSION,
        timestamp: t0 + TimeDelta::seconds(5),
        namespace: "shop".into(),
        workload: "web".into(),
        model: ModelRef {
            key: "shop/web".into(),
            kind: "lstm".into(),
            version: 3,
        },
        window_end: t0,
        step_seconds: 5.0,
        pod_request_millicores: 500.0,
        values: vec![550.0, 600.0, 650.0],
        upper: Some(vec![700.0, 750.0, 800.0]),
        quantile: Some(0.9),
        quantiles: None,
    };
    publish(&js, Prefix::live().forecast("shop", "web").unwrap(), &forecast).await;
    let d = decision(t0 + TimeDelta::seconds(6), Outcome::Applied);
    publish(&js, Prefix::live().scale("shop", "web").unwrap(), &d).await;

    let pod0 = [
        ("level", "pod"),
        ("pod", "web-0"),
        ("namespace", "shop"),
        ("workload", "web"),
        ("node", "node-1"),
        ("run", "live"),
    ];
    wait_for(
        &vm,
        "cpu_usage_current_value",
        &pod0,
        &[(ms(t0), 20.0), (ms(t0) + 3000, 60.0)],
    )
    .await;
    wait_for(
        &vm,
        "cpu_usage_current_used_millicores",
        &pod0,
        &[(ms(t0), 100.0), (ms(t0) + 3000, 300.0)],
    )
    .await;
    wait_for(
        &vm,
        "cpu_usage_current_requested_millicores",
        &[("pod", "web-1")],
        &[(ms(t0) + 1000, 500.0)],
    )
    .await;
    let workload = [
        ("level", "workload"),
        ("namespace", "shop"),
        ("workload", "web"),
        ("run", "live"),
    ];
    // Written as the step's samples arrive: web-0 alone (20 %), then with web-1 (40 %), then whole.
    wait_for_step(
        &vm,
        "cpu_usage_current_value",
        &workload,
        ms(t0),
        50.0,
        &[20.0, 40.0],
    )
    .await;
    wait_for_step(&vm, "cpu_usage_current_pods", &workload, ms(t0), 2.0, &[1.0]).await;
    // Demand, in the forecasts' unit: web-0's mean 200m plus web-1's 300m
    // (0.1 core with web-0's first sample alone, 0.4 with web-1's).
    wait_for_step(
        &vm,
        "cpu_usage_current_demand_cores",
        &workload,
        ms(t0),
        0.5,
        &[0.1, 0.4],
    )
    .await;
    wait_for(
        &vm,
        "cpu_usage_current_value",
        &[("level", "node"), ("node", "node-1")],
        &[(ms(t0), 25.0)],
    )
    .await;
    // Predicted demand in cores, as the actual demand above.
    for (k, (value, upper)) in [(0.55, 0.7), (0.6, 0.75), (0.65, 0.8)].into_iter().enumerate() {
        let horizon = (k + 1).to_string();
        let labels = [
            ("horizon", horizon.as_str()),
            ("model_kind", "lstm"),
            ("model_version", "3"),
            ("workload", "web"),
        ];
        let at = ms(t0) + 5000 * (k as i64 + 1);
        wait_for(&vm, "cpu_usage_predicted_value", &labels, &[(at, value)]).await;
        wait_for(&vm, "cpu_usage_predicted_upper", &labels, &[(at, upper)]).await;
    }
    let tags = [
        ("policy", "hybrid"),
        ("rule", "predictive"),
        ("outcome", "applied"),
        ("workload", "web"),
    ];
    let at = ms(d.timestamp);
    wait_for(&vm, "scale_decision_replicas_before", &tags, &[(at, 2.0)]).await;
    wait_for(&vm, "scale_decision_replicas_after", &tags, &[(at, 4.0)]).await;
    wait_for(&vm, "scale_decision_applied", &tags, &[(at, 1.0)]).await;
    wait_for(&vm, "scale_decision_predicted_peak_cores", &tags, &[(at, 0.9)]).await;

    all_acked(&js).await;
    assert_eq!(metrics.messages_total(STREAM_SAMPLES, "written"), 4);
    assert_eq!(metrics.messages_total(STREAM_FORECASTS, "written"), 1);
    assert_eq!(metrics.messages_total(STREAM_DECISIONS, "written"), 1);
    assert_eq!(metrics.points_total(pas_recorder::points::PREDICTED), 3);
    stop.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn an_influxdb_outage_loses_nothing() {
    let nats = NatsServer::start();
    let mut vm = VictoriaMetrics::start();
    let conn = connect_and_provision(&nats).await;
    let js = conn.jetstream.clone();
    let (metrics, stop, task) = start(config(plain(&nats), &vm));

    let t0 = step_start() - TimeDelta::seconds(600);
    send_sample(&js, &pod_sample(t0, "web-0", 50.0)).await;
    wait_for(
        &vm,
        "cpu_usage_current_used_millicores",
        &[("level", "pod")],
        &[(t0.timestamp_millis(), 50.0)],
    )
    .await;

    // InfluxDB goes away; 300 samples (one per second of pod web-0) arrive.
    vm.stop();
    let times: Vec<DateTime<Utc>> = (1..=300).map(|i| t0 + TimeDelta::seconds(i)).collect();
    for (i, t) in times.iter().enumerate() {
        send_sample(&js, &pod_sample(*t, "web-0", i as f64)).await;
    }
    eventually(Duration::from_secs(10), "failed writes being retried", || async {
        (metrics.write_errors_total("unavailable") >= 3).then_some(())
    })
    .await;
    // Longer than the consumer's 30 s ack wait: the batch in hand is held
    // (with progress acks), the rest waits in the stream.
    tokio::time::sleep(Duration::from_secs(35)).await;
    assert_eq!(
        metrics.messages_total(STREAM_SAMPLES, "written"),
        1,
        "nothing acked while InfluxDB is down"
    );
    let (pending, unacked, _) = backlog(&js, STREAM_SAMPLES, "pas-recorder-samples").await;
    assert_eq!(pending as usize + unacked, 300, "the backlog is in JetStream");
    assert!(unacked > 0, "a batch is in hand");

    vm.restart();
    let want: Vec<(i64, f64)> = std::iter::once((t0.timestamp_millis(), 50.0))
        .chain(
            times
                .iter()
                .enumerate()
                .map(|(i, t)| (t.timestamp_millis(), i as f64)),
        )
        .collect();
    wait_for(
        &vm,
        "cpu_usage_current_used_millicores",
        &[("level", "pod")],
        &want,
    )
    .await;
    // And a workload point for each of the 61 steps, though one batch spans
    // more steps than the recorder keeps open (12).
    let steps: std::collections::BTreeSet<i64> = (0..=60).map(|k| t0.timestamp_millis() + 5000 * k).collect();
    let all = vm.export("cpu_usage_current_pods").await;
    let written: std::collections::BTreeSet<i64> =
        find(&all, "cpu_usage_current_pods", &[("level", "workload")])
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0))
            .collect();
    assert_eq!(written, steps, "one workload point per step");
    all_acked(&js).await;
    // Each once: none redelivered, none written twice.
    assert_eq!(metrics.messages_total(STREAM_SAMPLES, "written"), 301);
    assert_eq!(metrics.messages_total(STREAM_SAMPLES, "dead_lettered"), 0);
    assert_eq!(
        backlog(&js, STREAM_SAMPLES, "pas-recorder-samples").await.2,
        0,
        "nothing redelivered"
    );
    stop.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn a_point_influxdb_rejects_goes_to_the_dead_letters() {
    let (nats, conn) = accounts().await;
    let vm = VictoriaMetrics::start();
    let js = conn.jetstream.clone();
    let mut dlq = conn
        .client
        .subscribe(Prefix::live().dlq(Stage::Recorder))
        .await
        .unwrap();
    conn.jetstream.query_account().await.unwrap();
    let (metrics, stop, task) = start(config(nats.as_user("recorder"), &vm));

    let t0 = step_start();
    // A forecast whose steps are so long its points would fall past 2262,
    // where InfluxDB's nanosecond timestamps end: refused at the door now (a
    // step is at most a day), before the recorder's own range check.
    let far = Forecast {
        schema_version: SCHEMA_VERSION,
        timestamp: t0,
        namespace: "shop".into(),
        workload: "web".into(),
        model: ModelRef {
            key: "shop/web".into(),
            kind: "lstm".into(),
            version: 3,
        },
        window_end: t0,
        step_seconds: 1e10,
        pod_request_millicores: 500.0,
        values: vec![550.0, 600.0],
        upper: None,
        quantile: None,
        quantiles: None,
    };
    js.publish(
        Prefix::live().forecast("shop", "web").unwrap(),
        serde_json::to_vec(&far).unwrap().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    // Between two good decisions, one that does not parse.
    let first = decision(t0, Outcome::Applied);
    publish(&js, Prefix::live().scale("shop", "web").unwrap(), &first).await;
    js.publish(Prefix::live().scale("shop", "web").unwrap(), "{not json".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let second = decision(t0 + TimeDelta::seconds(5), Outcome::DryRun);
    publish(&js, Prefix::live().scale("shop", "web").unwrap(), &second).await;

    let mut reasons = Vec::new();
    for _ in 0..2 {
        let msg = tokio::time::timeout(Duration::from_secs(10), dlq.next())
            .await
            .expect("a dead letter")
            .unwrap();
        let headers = msg.headers.clone().expect("dead letters carry headers");
        let error = headers.get(HEADER_ERROR).expect("Pas-Error").as_str().to_owned();
        let error_type = headers
            .get(HEADER_ERROR_TYPE)
            .expect("Pas-Error-Type")
            .as_str()
            .to_owned();
        reasons.push((error_type, error, msg.payload));
    }
    reasons.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(reasons[0].0, "invalid");
    assert!(
        reasons[0]
            .1
            .contains("step_seconds is 10000000000, above the bound of 86400"),
        "{}",
        reasons[0].1
    );
    assert_eq!(serde_json::from_slice::<Forecast>(&reasons[0].2).unwrap(), far);
    assert_eq!(reasons[1].0, "malformed");
    assert_eq!(&reasons[1].2[..], b"{not json");

    // The good decisions are written; nothing is left unacked.
    let tags = [("workload", "web"), ("policy", "hybrid")];
    wait_for(
        &vm,
        "scale_decision_replicas_after",
        &tags,
        &[
            (first.timestamp.timestamp_millis(), 4.0),
            (second.timestamp.timestamp_millis(), 4.0),
        ],
    )
    .await;
    wait_for(
        &vm,
        "scale_decision_applied",
        &[("outcome", "dry_run")],
        &[(second.timestamp.timestamp_millis(), 0.0)],
    )
    .await;
    all_acked(&js).await;
    assert_eq!(metrics.messages_total(STREAM_FORECASTS, "dead_lettered"), 1);
    assert_eq!(metrics.messages_total(STREAM_DECISIONS, "dead_lettered"), 1);
    assert_eq!(metrics.messages_total(STREAM_DECISIONS, "written"), 2);
    assert!(
        vm.export("cpu_usage_predicted.*").await.is_empty(),
        "no point of the rejected forecast"
    );
    stop.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn a_restarted_recorder_keeps_each_step_whole() {
    let (nats, conn) = accounts().await;
    let vm = VictoriaMetrics::start();
    let js = conn.jetstream.clone();
    let t0 = step_start();
    let workload = [("level", "workload"), ("workload", "web")];

    let (metrics, stop, task) = start(config(nats.as_user("recorder"), &vm));
    send_sample(&js, &pod_sample(t0, "web-0", 100.0)).await;
    wait_for_step(
        &vm,
        "cpu_usage_current_value",
        &workload,
        t0.timestamp_millis(),
        20.0,
        &[],
    )
    .await;
    all_acked(&js).await;
    assert_eq!(metrics.messages_total(STREAM_SAMPLES, "written"), 1);
    stop.cancel();
    task.await.unwrap();

    // web-1's sample of the same step arrives while no recorder runs.
    send_sample(&js, &pod_sample(t0 + TimeDelta::seconds(2), "web-1", 300.0)).await;
    let (metrics, stop, task) = start(config(nats.as_user("recorder"), &vm));
    // Both pods: (100 + 300) / (500 + 500), not web-1's 60 % alone.
    // Never web-1's 60 % alone.
    wait_for_step(
        &vm,
        "cpu_usage_current_value",
        &workload,
        t0.timestamp_millis(),
        40.0,
        &[20.0],
    )
    .await;
    wait_for_step(
        &vm,
        "cpu_usage_current_pods",
        &workload,
        t0.timestamp_millis(),
        2.0,
        &[1.0],
    )
    .await;
    all_acked(&js).await;
    assert_eq!(metrics.messages_total(STREAM_SAMPLES, "written"), 1);
    stop.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn nats_killed_mid_run_loses_no_sample() {
    let mut nats = NatsServer::start();
    let vm = VictoriaMetrics::start();
    let conn = connect_and_provision(&nats).await;
    let js = conn.jetstream.clone();
    let (metrics, stop, task) = start(config(plain(&nats), &vm));

    let t0 = step_start() - TimeDelta::seconds(300);
    let times: Vec<DateTime<Utc>> = (0..100).map(|i| t0 + TimeDelta::seconds(i)).collect();
    for (i, t) in times[..50].iter().enumerate() {
        send_sample(&js, &pod_sample(*t, "web-0", i as f64)).await;
    }
    // The server dies with the recorder mid-stream and comes back on the
    // same port and store; the recorder's consumer resumes where it was.
    nats.restart();
    for (i, t) in times.iter().enumerate().skip(50) {
        // The test's own publisher reconnects too: retried until acked
        // (the message id makes a retry harmless).
        let s = pod_sample(*t, "web-0", i as f64);
        let out = pas_nats::Outgoing::new(Prefix::live().sample(&s).unwrap(), &s).unwrap();
        eventually(
            Duration::from_secs(20),
            "the publish to be acked after the restart",
            || async {
                match pas_nats::publish(&js, &out).await {
                    Ok(ack) => ack.await.ok().map(|_| ()),
                    Err(_) => None,
                }
            },
        )
        .await;
    }
    let want: Vec<(i64, f64)> = times
        .iter()
        .enumerate()
        .map(|(i, t)| (t.timestamp_millis(), i as f64))
        .collect();
    wait_for(
        &vm,
        "cpu_usage_current_used_millicores",
        &[("level", "pod")],
        &want,
    )
    .await;
    all_acked(&js).await;
    assert!(metrics.messages_total(STREAM_SAMPLES, "written") >= 100);
    stop.cancel();
    task.await.unwrap();
}

/// SIGTERM with NATS down: the recorder exits within 10 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_nats_down_exits_within_ten_seconds() {
    let (mut nats, conn) = accounts().await;
    let vm = VictoriaMetrics::start();
    let js = conn.jetstream.clone();
    let (metrics, stop, task) = start(config(nats.as_user("recorder"), &vm));
    send_sample(&js, &pod_sample(step_start(), "web-0", 100.0)).await;
    eventually(Duration::from_secs(20), "the sample written", || async {
        (metrics.messages_total(STREAM_SAMPLES, "written") >= 1).then_some(())
    })
    .await;

    nats.kill();
    pas_integration_tests::exits_within_ten_seconds("the recorder", || stop.cancel(), task).await;
}
