//! Issue 20: shadow mode end to end over a real nats-server with JetStream.
//! A workload an HPA targets, annotated for PAS: the scaler publishes
//! `shadow` decisions beside the replicas the HPA set, patches nothing, and
//! keeps a scorecard in KV `pas-scaler` whose numbers equal a hand
//! computation from the decisions it published; `pas shadow report` (the
//! real binary, as the read-only viewer) prints the same.
//!
//! No Kubernetes API server can run here, so the workload is the scaler's
//! simulated cluster; the Kubernetes calls are tested against kube's mock
//! service in `agents/scaler/src/k8s.rs`.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use pas_integration_tests::{NatsServer, connect_and_provision, eventually, run_pas};
use pas_nats::NatsConfig;
use pas_scaler::cluster::{Simulated, SimulatedChange};
use pas_scaler::shadow::Totals;
use pas_scaler::{Config, Scaler};
use pas_schemas::subjects::Prefix;
use pas_schemas::{CpuSample, Outcome, SCHEMA_VERSION, ScaleDecision};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hpa_scaled_workload_is_shadowed_and_scored() {
    let server = NatsServer::with_accounts();
    let conn = connect_and_provision(&server).await;
    let js = conn.jetstream.clone();

    // web: 2 pods of 1000m, each using 1500m (3000m of demand against the
    // 2000m the HPA's two ready pods serve); PAS targets 50 % and its pods
    // would be ready 3 s (three ticks) after it asked for them.
    let sim = Simulated::new();
    let annotations: BTreeMap<String, String> = [
        ("pas.io/enabled", "true"),
        ("pas.io/target-utilization", "50"),
        ("pas.io/startup", "3s"),
        ("pas.io/learn-startup", "false"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    sim.insert("shop", "web", 2, annotations, Some(1000.0));
    sim.set_hpa("shop", "web", "web-hpa");
    for ordinal in 0..2 {
        let s = CpuSample {
            schema_version: SCHEMA_VERSION,
            timestamp: chrono::Utc::now(),
            node: "node-1".into(),
            namespace: Some("shop".into()),
            workload: Some("web".into()),
            pod: Some(format!("web-{ordinal}")),
            cpu_used_millicores: 1500.0,
            cpu_requested_millicores: Some(1000.0),
            cpu_capacity_millicores: None,
            cpu_throttled_ratio: None,
        };
        let out = pas_nats::Outgoing::new(Prefix::live().sample(&s).unwrap(), &s).unwrap();
        pas_nats::publish(&js, &out).await.unwrap().await.unwrap();
    }

    let mut sub = conn.client.subscribe("pas.scale.shop.web").await.unwrap();
    let config = Config {
        tick: Duration::from_secs(1),
        lease: Duration::from_secs(3),
        shadow_write_every: Duration::from_secs(1),
        replica: Some("a".into()),
        listen: "127.0.0.1:0".parse().unwrap(),
        nats: NatsConfig {
            ack_timeout: NatsConfig::default().ack_timeout,
            ..server.as_user("scaler")
        },
        ..Config::default()
    };
    let scaler = Scaler::new(config, sim.clone()).unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let stop = stop.clone();
        async move { scaler.run(stop).await.unwrap() }
    });

    // Eight shadow decisions, one a tick.
    let mut decisions: Vec<ScaleDecision> = Vec::new();
    while decisions.len() < 8 {
        let msg = tokio::time::timeout(Duration::from_secs(20), sub.next())
            .await
            .expect("a decision within 20 s")
            .unwrap();
        let d: ScaleDecision = pas_schemas::decode(&msg.payload).unwrap();
        assert_eq!(d.outcome, Outcome::Shadow, "{d:?}");
        assert_eq!(d.hpa.as_deref(), Some("web-hpa"));
        assert_eq!(d.replicas_before, 2, "what the HPA set");
        decisions.push(d);
    }
    // Measured on PAS's own ready pods: the HPA's two at first (150 %),
    // all six once PAS's four have started (50 %).
    assert_eq!(decisions[0].utilization_percent, Some(150.0));
    assert!(
        decisions
            .iter()
            .all(|d| [Some(150.0), Some(50.0)].contains(&d.utilization_percent)),
        "{decisions:?}"
    );
    assert_eq!(decisions.last().unwrap().utilization_percent, Some(50.0));
    // 150 % against 50 %: PAS would run 6 (the rate limit allows 2 + 4).
    assert!(decisions.iter().all(|d| d.replicas_after == 6), "{decisions:?}");
    // Nothing was patched, and no Event recorded.
    assert_eq!(sim.replicas("shop", "web"), Some(2));
    assert!(
        !sim.log()
            .iter()
            .any(|c| matches!(c, SimulatedChange::Scaled { .. })),
        "{:?}",
        sim.log()
    );

    // The scorecard as the scaler last wrote it, read as the viewer (who
    // may read but not change anything).
    let viewer = pas_nats::connect(&server.as_user("viewer"), "shadow-test", false)
        .await
        .unwrap();
    let stored = eventually(
        Duration::from_secs(10),
        "a scorecard covering six decisions",
        || async {
            let shadows = pas_scaler::shadow::read(&viewer.jetstream, &Prefix::live().keys(), None)
                .await
                .unwrap();
            let s = shadows.into_iter().next()?;
            let last = s.last?;
            (decisions.iter().filter(|d| d.timestamp <= last).count() >= 6).then_some(s)
        },
    )
    .await;
    assert_eq!(
        (stored.namespace.as_str(), stored.workload.as_str()),
        ("shop", "web")
    );
    assert_eq!(stored.hpa.as_deref(), Some("web-hpa"));

    // By hand, from the decisions up to the scorecard's last evaluation:
    // each interval between two is scored with what the later one read
    // (demand 3000m; 2 pods ran, both ready) and PAS's pods then: as many
    // as it had decided at the earlier one, of which the HPA's two were
    // ready from the start and the four it added at the first decision
    // from 3 s later.
    let mut want = Totals::default();
    let upto: Vec<&ScaleDecision> = decisions
        .iter()
        .filter(|d| Some(d.timestamp) <= stored.last)
        .collect();
    for pair in upto.windows(2) {
        let dt = (pair[1].timestamp - pair[0].timestamp).as_seconds_f64();
        assert!(dt > 0.0 && dt <= 3.0, "{dt}");
        let started = pair[1].timestamp >= decisions[0].timestamp + chrono::TimeDelta::seconds(3);
        let pas_ready = if started { 6.0 } else { 2.0 };
        want.seconds += dt;
        want.pas_replica_seconds += f64::from(pair[0].replicas_after) * dt;
        want.actual_replica_seconds += f64::from(pair[1].replicas_before) * dt;
        if 3000.0 > pas_ready * 1000.0 {
            want.pas_violation_seconds += dt;
        }
        if 3000.0 > 2.0 * 1000.0 {
            want.actual_violation_seconds += dt;
        }
        want.demand_core_seconds += 3.0 * dt;
    }
    let got = stored.since(chrono::Utc::now() - chrono::TimeDelta::hours(2));
    let close = |a: f64, b: f64| (a - b).abs() < 1e-6;
    for (field, g, w) in [
        ("seconds", got.seconds, want.seconds),
        (
            "pas_replica_seconds",
            got.pas_replica_seconds,
            want.pas_replica_seconds,
        ),
        (
            "actual_replica_seconds",
            got.actual_replica_seconds,
            want.actual_replica_seconds,
        ),
        (
            "pas_violation_seconds",
            got.pas_violation_seconds,
            want.pas_violation_seconds,
        ),
        (
            "actual_violation_seconds",
            got.actual_violation_seconds,
            want.actual_violation_seconds,
        ),
        (
            "demand_core_seconds",
            got.demand_core_seconds,
            want.demand_core_seconds,
        ),
    ] {
        assert!(close(g, w), "{field}: {got:?} against {want:?}");
    }
    // PAS was short only while its new pods started; what ran, throughout.
    assert!(want.seconds >= 4.0, "{want:?}");
    assert!(
        want.pas_violation_seconds > 1.0 && want.pas_violation_seconds < want.actual_violation_seconds,
        "{want:?}"
    );

    // `pas shadow report` prints the same, as the viewer.
    stop.cancel();
    task.await.unwrap();
    let stored = pas_scaler::shadow::read(&viewer.jetstream, &Prefix::live().keys(), Some(("shop", "web")))
        .await
        .unwrap()
        .remove(0);
    let report = run_pas(
        &server,
        "viewer",
        &["shadow", "report", "--workload", "shop/web", "--json"],
    );
    assert!(
        report.status.success(),
        "{}",
        String::from_utf8_lossy(&report.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    let row = &rows[0];
    let t = stored.since(chrono::Utc::now() - chrono::TimeDelta::days(7));
    assert_eq!(row["workload"], "web");
    assert_eq!(row["hpa"], "web-hpa");
    assert!(close(
        row["pas_replica_hours"].as_f64().unwrap(),
        t.pas_replica_hours()
    ));
    assert!(close(
        row["actual_replica_hours"].as_f64().unwrap(),
        t.actual_replica_hours()
    ));
    assert!(close(
        row["actual_violation_seconds"].as_f64().unwrap(),
        t.actual_violation_seconds
    ));
    let table = run_pas(&server, "viewer", &["shadow", "report"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.status.success() && text.contains("shop/web") && text.contains("web-hpa"),
        "{text}"
    );
    // A workload PAS does not shadow is a clear error.
    let none = run_pas(
        &server,
        "viewer",
        &["shadow", "report", "--workload", "shop/nope"],
    );
    assert!(!none.status.success());
    assert!(String::from_utf8_lossy(&none.stderr).contains("no shadow of shop/nope"));
}
