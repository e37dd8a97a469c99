//! `pas replay` and `pas record` against a real nats-server with JetStream.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use pas_integration_tests::{NatsServer, connect_and_provision, repo_root};
use pas_replay::{record, replay};
use pas_schemas::subjects::{Prefix, STREAM_SAMPLES};
use pas_schemas::{CpuSample, Outcome, SCHEMA_VERSION, ScaleDecision};
use tokio_util::sync::CancellationToken;

/// The first `rows` rows of a bundled NAB trace, in a temporary file.
fn short_trace(dir: &Path, rows: usize) -> (PathBuf, Vec<(DateTime<Utc>, f64)>) {
    let text =
        std::fs::read_to_string(repo_root().join("testdata/traces/nab-rds_cpu_utilization_cc0c53.csv"))
            .unwrap();
    let points: Vec<_> = pas_schemas::trace::parse(&text)
        .unwrap()
        .into_iter()
        .take(rows)
        .collect();
    let path = dir.join("short.csv");
    std::fs::write(&path, pas_schemas::trace::to_csv(&points)).unwrap();
    (path, points)
}

/// Every sample PAS_SAMPLES holds under `filter`.
async fn stored(conn: &pas_nats::Connection, filter: String) -> Vec<CpuSample> {
    let stream = conn.jetstream.get_stream(STREAM_SAMPLES).await.unwrap();
    let mut consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: filter,
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .unwrap();
    let pending = consumer.info().await.unwrap().num_pending;
    let mut out = Vec::new();
    if pending == 0 {
        return out;
    }
    let mut messages = consumer.messages().await.unwrap();
    while let Some(m) = messages.next().await {
        let m = m.unwrap();
        out.push(pas_schemas::decode(&m.payload).unwrap());
        if m.info().unwrap().pending == 0 {
            break;
        }
    }
    out
}

fn config(run: &str, source: PathBuf) -> replay::Config {
    replay::Config {
        run: run.into(),
        source: replay::Source::Trace(source),
        namespace: "shop".into(),
        workload: "web".into(),
        pods: 2,
        pod_cpu: 500.0,
        speed: replay::Speed::Max,
        timestamps: replay::Timestamps::Original,
        ..Default::default()
    }
}

#[tokio::test]
async fn replay_publishes_exactly_the_trace_under_the_prefix() {
    let server = NatsServer::start();
    let conn = connect_and_provision(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let (path, points) = short_trace(dir.path(), 300);

    let mut seen = Vec::new();
    let summary = replay::replay(
        &conn,
        &config("count", path.clone()),
        CancellationToken::new(),
        &mut |p| seen.push(p.done),
    )
    .await
    .unwrap();
    assert_eq!(summary.rows, 300);
    assert_eq!(summary.samples, 600, "two pods per row");
    assert_eq!(seen.last(), Some(&300), "progress reached the end");

    // Counted via the stream: every row's two samples, nothing on the live subjects.
    let samples = stored(&conn, Prefix::replay("count").unwrap().all_pod_cpu()).await;
    assert_eq!(samples.len(), 600);
    assert!(
        stored(&conn, Prefix::live().all_cpu()).await.is_empty(),
        "a replay never touches live subjects"
    );
    // Each row: the stated rule, so utilisation equals the trace's cpu.
    for (i, (at, cpu)) in points.iter().enumerate() {
        let pair = &samples[2 * i..2 * i + 2];
        assert!(pair.iter().all(|s| s.timestamp == *at));
        let pods: Vec<_> = pair.iter().map(|s| s.pod.clone().unwrap()).collect();
        assert_eq!(pods, ["web-0", "web-1"]);
        let used: f64 = pair.iter().map(|s| s.cpu_used_millicores).sum();
        assert!(
            (100.0 * used / 1000.0 - cpu).abs() < 1e-9,
            "row {i}: {used} of 1000m against {cpu} %"
        );
    }

    // Replaying again adds nothing: the message ids are the same.
    let again = replay::replay(
        &conn,
        &config("count", path),
        CancellationToken::new(),
        &mut |_| {},
    )
    .await
    .unwrap();
    assert_eq!(again.duplicates, 600);
    assert_eq!(
        stored(&conn, Prefix::replay("count").unwrap().all_pod_cpu())
            .await
            .len(),
        600
    );
}

/// Records run `run` live while `path` is replayed under it; returns the file's text.
async fn record_while_replaying(
    conn: &pas_nats::Connection,
    run: &str,
    path: &Path,
    samples: u64,
    out: PathBuf,
) -> String {
    let rec = record::Config {
        run: Some(run.into()),
        namespace: None,
        workload: Some("web".into()),
        from: record::From::Live {
            count: Some(samples),
            duration: Some(Duration::from_secs(60)),
        },
        step: Duration::from_secs(5),
        pods: None,
        out: out.clone(),
    };
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let recorder = {
        let conn = conn.clone();
        tokio::spawn(async move {
            record::record(
                &conn,
                &rec,
                CancellationToken::new(),
                || {
                    let _ = ready_tx.send(());
                },
                &mut |_| {},
            )
            .await
        })
    };
    ready_rx.await.unwrap();
    replay::replay(
        conn,
        &config(run, path.to_owned()),
        CancellationToken::new(),
        &mut |_| {},
    )
    .await
    .unwrap();
    let summary = recorder.await.unwrap().unwrap();
    assert_eq!(summary.samples, samples);
    assert_eq!(summary.files, vec![(out.clone(), (samples / 2) as usize)]);
    std::fs::read_to_string(&out).unwrap()
}

#[tokio::test]
async fn record_then_replay_round_trips_a_trace() {
    let server = NatsServer::start();
    let conn = connect_and_provision(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let (path, points) = short_trace(dir.path(), 200);

    let first = record_while_replaying(&conn, "rt", &path, 400, dir.path().join("recorded.csv")).await;
    let recorded = pas_schemas::trace::parse(&first).unwrap();
    assert_eq!(recorded.len(), points.len());
    for ((t0, v0), (t1, v1)) in points.iter().zip(&recorded) {
        assert_eq!(t0, t1);
        assert!((v0 - v1).abs() < 1e-6, "{t0}: {v0} recorded as {v1}");
    }
    // The recording replays (under another run) to the same recording.
    let recorded_path = dir.path().join("recorded.csv");
    let second =
        record_while_replaying(&conn, "rt2", &recorded_path, 400, dir.path().join("again.csv")).await;
    assert_eq!(first, second);
}

#[tokio::test]
async fn a_simulated_statefulset_follows_applied_decisions() {
    let server = NatsServer::start();
    let conn = connect_and_provision(&server).await;
    let dir = tempfile::tempdir().unwrap();
    // 24 rows 5 min apart at 600× speed: a row every 0.5 s.
    let (path, _) = short_trace(dir.path(), 24);
    let mut cfg = config("sim", path);
    cfg.speed = replay::Speed::Factor(600.0);
    cfg.timestamps = replay::Timestamps::Shifted;
    cfg.simulate = Some(Duration::from_secs(2));
    let prefix = Prefix::replay("sim").unwrap();
    let mut sub = conn.client.subscribe(prefix.all_pod_cpu()).await.unwrap();
    conn.jetstream.query_account().await.unwrap(); // a round trip: the subscription is in place
    let task = {
        let conn = conn.clone();
        tokio::spawn(async move { replay::replay(&conn, &cfg, CancellationToken::new(), &mut |_| {}).await })
    };
    // Two pods until the scaler applies 2 → 4.
    let first: CpuSample = pas_schemas::decode(&sub.next().await.unwrap().payload).unwrap();
    assert!(first.pod.as_deref().is_some_and(|p| p.starts_with("web-")));
    let decision = ScaleDecision {
        schema_version: SCHEMA_VERSION,
        timestamp: Utc::now(),
        namespace: "shop".into(),
        workload: "web".into(),
        replicas_before: 2,
        replicas_after: 4,
        policy: "hybrid".into(),
        rule: "predictive".into(),
        reason: "test".into(),
        outcome: Outcome::Applied,
        hpa: None,
        forecast: None,
        utilization_percent: None,
        predicted_peak_millicores: None,
        lead_seconds: None,
        target_utilization_percent: None,
        warnings: Vec::new(),
    };
    let applied_at = Utc::now();
    conn.client
        .publish(
            prefix.scale("shop", "web").unwrap(),
            pas_schemas::encode(&decision).unwrap().into(),
        )
        .await
        .unwrap();
    // New pods publish samples at once (using nothing while they start),
    // then take their share after the start-up time.
    let (mut starting, mut serving) = (None, None);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while starting.is_none() || serving.is_none() {
        let m = tokio::time::timeout_at(deadline, sub.next())
            .await
            .expect("web-3 starts, then serves")
            .unwrap();
        let s: CpuSample = pas_schemas::decode(&m.payload).unwrap();
        if s.pod.as_deref() == Some("web-3") {
            if s.cpu_used_millicores == 0.0 && starting.is_none() {
                starting = Some(s.timestamp);
            }
            if s.cpu_used_millicores > 0.0 && serving.is_none() {
                serving = Some(s.timestamp);
            }
        }
    }
    let summary = task.await.unwrap().unwrap();
    assert_eq!(summary.decisions_applied, 1);
    assert_eq!(summary.final_replicas, Some(4));
    let (starting, serving) = (starting.unwrap(), serving.unwrap());
    assert!(
        starting < applied_at + chrono::TimeDelta::seconds(2),
        "web-3 appears right after the decision"
    );
    assert!(
        serving >= applied_at + chrono::TimeDelta::seconds(2),
        "and serves only after the 2 s start-up"
    );
}

#[tokio::test]
async fn a_range_of_pas_samples_records_and_replays() {
    let server = NatsServer::start();
    let conn = connect_and_provision(&server).await;
    // Live samples as node agents publish them: 3 pods, 20 steps of 5 s.
    let start = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
    for step in 0..20i64 {
        for pod in 0..3 {
            let sample = CpuSample {
                schema_version: SCHEMA_VERSION,
                timestamp: start + chrono::TimeDelta::seconds(5 * step),
                node: format!("node-{pod}"),
                namespace: Some("shop".into()),
                workload: Some("web".into()),
                pod: Some(format!("web-{pod}")),
                cpu_used_millicores: 100.0 * (step % 5) as f64 + 10.0 * pod as f64,
                cpu_requested_millicores: Some(1000.0),
                cpu_capacity_millicores: None,
                cpu_throttled_ratio: None,
            };
            let msg = pas_nats::Outgoing::new(Prefix::live().sample(&sample).unwrap(), &sample).unwrap();
            pas_nats::publish(&conn.jetstream, &msg)
                .await
                .unwrap()
                .await
                .unwrap();
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let since = start + chrono::TimeDelta::seconds(25);
    let until = start + chrono::TimeDelta::seconds(74);
    // Steps 5..=14 of the range, as utilisation.
    let out = dir.path().join("range.csv");
    let rec = record::Config {
        run: None,
        namespace: Some("shop".into()),
        workload: None,
        from: record::From::Stream { since, until },
        step: Duration::from_secs(5),
        pods: None,
        out: out.clone(),
    };
    let summary = record::record(&conn, &rec, CancellationToken::new(), || {}, &mut |_| {})
        .await
        .unwrap();
    assert_eq!(summary.samples, 30);
    let rows = pas_schemas::trace::parse(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(rows.len(), 10);
    assert_eq!(rows[0].0, since);
    for (i, (_, cpu)) in rows.iter().enumerate() {
        let step = (5 + i as i64) % 5;
        let want = 100.0 * (3.0 * 100.0 * step as f64 + 30.0) / 3000.0;
        assert!((cpu - want).abs() < 1e-6, "row {i}: {cpu} against {want}");
    }
    // The same range re-published under a run, sample for sample.
    let mut cfg = config("again", PathBuf::new());
    cfg.source = replay::Source::Stream { since, until };
    let summary = replay::replay(&conn, &cfg, CancellationToken::new(), &mut |_| {})
        .await
        .unwrap();
    assert_eq!(summary.samples, 30);
    let again = stored(&conn, Prefix::replay("again").unwrap().all_pod_cpu()).await;
    assert_eq!(again.len(), 30);
    assert!(again.iter().all(|s| s.timestamp >= since && s.timestamp <= until));
    assert_eq!(
        stored(&conn, Prefix::live().all_pod_cpu()).await.len(),
        60,
        "the live samples are untouched"
    );
    // A range recorded with --run reads that run's subjects, not the live ones
    // (the copy is re-timed to now, so the range is the copy's).
    let (first, last) = (summary.first.unwrap(), summary.last.unwrap());
    let rec = record::Config {
        run: Some("again".into()),
        namespace: None,
        workload: None,
        from: record::From::Stream {
            since: first,
            until: last,
        },
        step: Duration::from_secs(5),
        pods: None,
        out: dir.path().join("again.jsonl"),
    };
    let summary = record::record(&conn, &rec, CancellationToken::new(), || {}, &mut |_| {})
        .await
        .unwrap();
    assert_eq!(summary.samples, 30, "the run's samples, none of the live ones");
}
