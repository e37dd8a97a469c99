//! The live loop equals the experiment: a bundled trace slice replayed
//! through the real forecaster and scaler stages (their own `run` loops,
//! over a real nats-server with JetStream) and a simulated StatefulSet
//! (`pas replay --simulate`), against `pas experiment` on the same slice and
//! settings. Both must make the same forecast for the same window and ask
//! for the same replicas at the same step.
//!
//! The trainer is the one part run once, not twice: the experiment's version
//! (trained by the trainer's own job) is stored in `pas-models` for the live
//! forecaster, so both serve the same weights.
//!
//! **Where the two must differ: message timing.** The experiment acts at the
//! tick; the live loop a fraction of a step later (the forecaster ticks
//! 500 ms after a step closes, the scaler decides when the forecast arrives).
//! The settings keep every boundary away from that fraction, so nothing
//! depends on it while a decision lands within a second of the step's
//! start (the forecast's fifth step joins the lead past that):
//!
//! - steps of 2 s; a pod's start-up of 5 s (2.5 steps), so a pod created at
//!   the tick or 0.5–1 s later is ready at the same step;
//! - the lead time is 7 s (3.5 steps) in both: the experiment's 5 s start-up
//!   plus its 2 s tick; the live scaler's 3 s start-up plus a 4 s tick, so
//!   its sweep (every workload not decided on for 0.9 tick) never decides
//!   between two forecasts, which come every step;
//! - the rate limits' periods and the scale-down window (9 s each, short so
//!   the replicas move often in 60 steps) are whole steps plus half a step.
//!
//! The tolerance is then none: the same forecast values and upper bounds
//! (to 1e-9, the same arithmetic) for every window both made, and the same replicas at every
//! step the live scaler decided in. Coverage is checked too: the live loop
//! must have forecast and decided nearly every scored step.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use futures::StreamExt;
use pas_integration_tests::{NatsServer, connect_and_provision, eventually, repo_root};
use pas_models::Trace;
use pas_nats::NatsConfig;
use pas_nats::model_store::{self, Layout};
use pas_scaler::cluster::Simulated;
use pas_scaler::policy::{Behavior, Policy, Settings, Tuning};
use pas_scaler::sim::PodModel;
use pas_schemas::subjects::{BUCKET_MODELS, Prefix};
use pas_schemas::{Forecast, ScaleDecision};
use tokio_util::sync::CancellationToken;

const RUN: &str = "parity";
const STEP: i64 = 2;
/// Rows of the slice: the first 340 are history (published at once), the
/// last 60 are scored, one per step.
const ROWS: usize = 400;
const TRAIN_FRACTION: f64 = 0.85;
/// Replicas at the start, and the pods the trace's 100 % is worth.
const PODS: u32 = 8;

/// The HPA's default behaviour with its periods and scale-down window at
/// 9 s (4.5 steps).
fn behavior() -> Behavior {
    let nine = Duration::from_secs(9);
    let mut b = Behavior::default();
    b.scale_down.stabilization_window = nine;
    for p in b.scale_up.policies.iter_mut().chain(&mut b.scale_down.policies) {
        p.period = nine;
    }
    b
}

fn settings(startup: Duration) -> Settings {
    Settings {
        enabled: true,
        policy: Policy::Predictive,
        min_replicas: 1,
        max_replicas: 20,
        target_utilization: 70.0,
        startup,
        // The live scaler's clock would time message delays as start-up
        // too; the experiment's is exact. Both plan over the configured one.
        learn_startup: false,
        ..Settings::default()
    }
}

/// 400 rows of a bundled NAB trace (spiky: idle, then bursts to 100 %; the
/// replicas move 18 times in the scored part), re-timed onto 2 s steps.
fn slice(dir: &std::path::Path) -> std::path::PathBuf {
    let trace = Trace::read(&repo_root().join("testdata/traces/nab-ec2_cpu_utilization_77c1ca.csv")).unwrap();
    let start = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
    let mut csv = String::from("timestamp,cpu\n");
    for (k, (_, v)) in trace.points[2000..2000 + ROWS].iter().enumerate() {
        let at = start + TimeDelta::seconds(STEP * k as i64);
        csv.push_str(&format!(
            "{},{v}\n",
            at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ));
    }
    let path = dir.join("parity.csv");
    std::fs::write(&path, csv).unwrap();
    path
}

fn experiment_config() -> pas_experiment::Config {
    let startup = Duration::from_secs(5);
    pas_experiment::Config {
        policies: vec![Policy::Predictive],
        reference_pods: PODS,
        pod: PodModel {
            startup,
            startup_spread: 0.0,
            capacity_millicores: 1000.0,
            request_millicores: 1000.0,
        },
        settings: settings(startup),
        tuning: Tuning {
            tick: Duration::from_secs(STEP as u64),
            forecast_max_age: Duration::from_secs(6),
            behavior: behavior(),
            ..Tuning::default()
        },
        train_fraction: TRAIN_FRACTION,
        forecaster: pas_forecaster::Config {
            lead: Duration::from_secs(7),
            ..pas_forecaster::Config::default()
        },
        shape: pas_experiment::Shape::Step,
        start_replicas: Some(PODS),
        ..pas_experiment::Config::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_live_loop_makes_the_experiments_forecasts_and_decisions() {
    let dir = tempfile::tempdir().unwrap();
    let path = slice(dir.path());

    // The experiment, in virtual time.
    let config = experiment_config();
    let result = pas_experiment::run_trace(&Trace::read(&path).unwrap(), &config, &mut |_| {})
        .expect("the experiment");
    let run = &result.runs[0];
    assert_eq!(run.policy, "predictive");

    // The live loop: the same version in pas-models, the stages, a replay.
    let server = NatsServer::start();
    let admin = connect_and_provision(&server).await;
    let nats = NatsConfig {
        urls: vec![server.url()],
        ..NatsConfig::default()
    };
    let prefix = Prefix::replay(RUN).unwrap();
    let (manifest, weights) = result.model.clone().expect("a trained version");
    // The slice is chosen so the LSTM is served (its backtest beats naive),
    // not the baseline: model choice and batched inference are compared too.
    assert!(manifest.accepted, "{:?}", manifest.validation);
    let bucket = admin.jetstream.get_object_store(BUCKET_MODELS).await.unwrap();
    model_store::save(&bucket, &Layout::new(&prefix), &manifest, &weights)
        .await
        .unwrap();
    let mut forecasts = admin.client.subscribe(prefix.all_forecasts()).await.unwrap();
    let mut decisions = admin.client.subscribe(prefix.all_decisions()).await.unwrap();
    admin.client.flush().await.unwrap();

    let stop = CancellationToken::new();
    let forecaster = pas_forecaster::Forecaster::new(pas_forecaster::Config {
        run: Some(RUN.into()),
        step: Duration::from_secs(STEP as u64),
        replica: Some("parity".into()),
        listen: "127.0.0.1:0".parse().unwrap(),
        nats: nats.clone(),
        ..config.forecaster.clone()
    })
    .unwrap();
    let forecaster_metrics = forecaster.metrics();
    let forecasting = tokio::spawn(forecaster.run(stop.clone()));
    if manifest.accepted {
        eventually(
            Duration::from_secs(20),
            "the forecaster to load the version",
            || async { (forecaster_metrics.loads() >= 1).then_some(()) },
        )
        .await;
    }
    let cluster = Simulated::new().with_startup(config.pod.startup);
    cluster.insert("experiment", "parity", PODS, BTreeMap::new(), Some(1000.0));
    let scaler = pas_scaler::Scaler::new(
        pas_scaler::Config {
            run: Some(RUN.into()),
            tick: Duration::from_secs(4),
            forecast_max_age: Duration::from_secs(6),
            defaults: settings(Duration::from_secs(3)),
            behavior: behavior(),
            replica: Some("parity".into()),
            lease: Duration::from_secs(3),
            listen: "127.0.0.1:0".parse().unwrap(),
            nats: nats.clone(),
            ..pas_scaler::Config::default()
        },
        cluster.clone(),
    )
    .unwrap();
    let scaler_metrics = scaler.metrics();
    let scaling = tokio::spawn(scaler.run(stop.clone()));
    eventually(Duration::from_secs(20), "the scaler to lead", || async {
        scaler_metrics.is_leader().then_some(())
    })
    .await;

    // Start the replay just after a step boundary, so each row's samples
    // are in before the forecaster's tick half a second later.
    let now = Utc::now().timestamp_millis();
    let next = (now.div_euclid(STEP * 1000) + 1) * STEP * 1000 + 50;
    tokio::time::sleep(Duration::from_millis((next - now) as u64)).await;
    let replay = pas_replay::replay::Config {
        run: RUN.into(),
        source: pas_replay::replay::Source::Trace(path.clone()),
        namespace: "experiment".into(),
        workload: "parity".into(),
        pods: PODS,
        pod_cpu: 1000.0,
        speed: pas_replay::replay::Speed::Factor(1.0),
        timestamps: pas_replay::replay::Timestamps::Shifted,
        backfill: TRAIN_FRACTION,
        simulate: Some(config.pod.startup),
        ..pas_replay::replay::Config::default()
    };
    let summary = pas_replay::replay::replay(&admin, &replay, CancellationToken::new(), &mut |_| {})
        .await
        .expect("the replay");
    // The last forecast and decision follow the last row.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.cancel();
    forecasting.await.unwrap().unwrap();
    scaling.await.unwrap().unwrap();

    // Live step k of the trace starts at `offset` + its trace time.
    let first = summary.first.expect("rows replayed");
    let trace_start = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
    let offset = TimeDelta::seconds(first.timestamp() - first.timestamp().rem_euclid(STEP))
        - (trace_start - DateTime::UNIX_EPOCH);
    let mut live_forecasts: BTreeMap<DateTime<Utc>, Forecast> = BTreeMap::new();
    while let Some(Some(msg)) = futures::FutureExt::now_or_never(forecasts.next()) {
        let f: Forecast = pas_schemas::decode(&msg.payload).unwrap();
        live_forecasts.insert(f.window_end - offset, f);
    }
    let mut live_replicas: BTreeMap<DateTime<Utc>, (u32, String)> = BTreeMap::new();
    while let Some(Some(msg)) = futures::FutureExt::now_or_never(decisions.next()) {
        let d: ScaleDecision = pas_schemas::decode(&msg.payload).unwrap();
        let at = d.timestamp - offset;
        let step = DateTime::from_timestamp(at.timestamp() - at.timestamp().rem_euclid(STEP), 0).unwrap();
        // The last decision in a step stands.
        live_replicas.insert(step, (d.replicas_after, d.reason));
    }

    // Forecasts: every window the experiment forecast, the live loop did too,
    // with the same model and values.
    let mut compared = 0;
    for f in &run.forecasts {
        let Some(live) = live_forecasts.get(&f.window_end) else {
            continue;
        };
        compared += 1;
        assert_eq!(live.model, f.model, "window {}", f.window_end);
        assert_eq!(live.pod_request_millicores, f.pod_request_millicores);
        assert_close(f.window_end, "values", &live.values, &f.values);
        assert_eq!(
            (live.upper.is_some(), live.quantile),
            (f.upper.is_some(), f.quantile)
        );
        if let (Some(live_upper), Some(upper)) = (&live.upper, &f.upper) {
            assert_close(f.window_end, "upper", live_upper, upper);
        }
    }
    assert!(
        compared + 2 >= run.forecasts.len(),
        "the live loop forecast {compared} of the experiment's {} windows",
        run.forecasts.len()
    );

    // Replicas: at every step the live scaler decided in, the same.
    let mut decided = 0;
    let mut moved = 0;
    for (k, (at, want)) in run.at.iter().zip(&run.replicas).enumerate() {
        let Some((got, reason)) = live_replicas.get(at) else {
            continue;
        };
        decided += 1;
        moved += usize::from(k > 0 && run.replicas[k - 1] != *want);
        assert_eq!(
            got, want,
            "step {k} ({at}): live {got} ({reason}), experiment {want}"
        );
    }
    assert!(
        decided + 2 >= run.replicas.len(),
        "the live scaler decided in {decided} of {} steps",
        run.replicas.len()
    );
    assert!(
        moved >= 2,
        "the slice should make the replicas move ({moved} changes)"
    );
    eprintln!(
        "parity: {compared} forecasts ({} model) and {decided} decisions equal, {moved} replica changes",
        manifest.architecture
    );
}

/// The same numbers to 1e-9 (the same arithmetic on both sides).
fn assert_close(window: DateTime<Utc>, what: &str, live: &[f64], experiment: &[f64]) {
    assert_eq!(live.len(), experiment.len(), "window {window}: {what}");
    for (a, b) in live.iter().zip(experiment) {
        assert!(
            (a - b).abs() <= 1e-9 * (1.0 + b.abs()),
            "window {window}: live {what} {live:?}, experiment {experiment:?}"
        );
    }
}
