//! The live loop equals the experiment: a bundled trace slice replayed
//! through the real forecaster and scaler stages (`pas forecaster` and `pas
//! scaler` as processes of their own, each on a configuration file, over a
//! real nats-server with JetStream; the scaler on its simulated cluster) and
//! a simulated StatefulSet (`pas replay --simulate`), against `pas
//! experiment` on the same slice and settings. Both must make the same
//! forecast for the same window and ask for the same replicas at the same
//! step.
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
//!   between two forecasts, which come every step (its simulated cluster's
//!   pods still take 5 s, `simulated_startup`, as the replay's do);
//! - the rate limits' periods and the scale-down window (9 s each, short so
//!   the replicas move often in 60 steps) are whole steps plus half a step.
//!
//! What the settings cannot rule out on a loaded machine: a decision a
//! second or more into its step, and a start the experiment cannot have (a
//! decision before the first scored step's forecast, or none in that
//! step); see `Live::untimely`. The live loop then runs again, at most three
//! times in all, and says so; a run within the tolerance is compared whole.
//!
//! The tolerance is then none: the same forecast values and upper bounds
//! (to 1e-9, the same arithmetic) for every window both made, and the same replicas at every
//! step the live scaler decided in. Coverage is checked too: the live loop
//! must have forecast and decided nearly every scored step.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use futures::StreamExt;
use pas_integration_tests::{
    NatsServer, Process, connect_and_provision, free_port, metric, repo_root, spawn_pas,
};
use pas_models::Trace;
use pas_nats::model_store::{self, Layout};
use pas_scaler::policy::{Behavior, Policy, Settings, Tuning};
use pas_scaler::sim::PodModel;
use pas_schemas::subjects::{BUCKET_MODELS, Prefix};
use pas_schemas::{Forecast, ScaleDecision};
use tokio_util::sync::CancellationToken;

const RUN: &str = "parity";
const STEP: i64 = 2;
/// Rows of the slice: the first 340 are history (the experiment trains on
/// them; the live loop gets the last [`LIVE_HISTORY`], published at once),
/// the last 60 are scored, one per step.
const ROWS: usize = 400;
const TRAIN_FRACTION: f64 = 0.85;
/// Rows of history the live loop is given before the scored ones: what the
/// forecaster holds (its `history`, 96 steps) and more, not the experiment's
/// 340. The served window is the newest 96 steps either way, and the
/// model's seasonal inputs (a day and a week before) are unknown in both; a
/// smaller burst of history is in before the first forecast on a loaded
/// machine too.
const LIVE_HISTORY: usize = 120;
/// How late in its step a live decision may be made: past it, the
/// forecast's fifth step joins the lead (see the module's doc).
const TIMING_MARGIN_MS: i64 = 1000;
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
fn slice(dir: &std::path::Path, from: usize) -> std::path::PathBuf {
    let trace = Trace::read(&repo_root().join("testdata/traces/nab-ec2_cpu_utilization_77c1ca.csv")).unwrap();
    let mut csv = String::from("timestamp,cpu\n");
    for (k, (_, v)) in trace.points[2000..2000 + ROWS].iter().enumerate().skip(from) {
        let at = row_time(k);
        csv.push_str(&format!(
            "{},{v}\n",
            at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ));
    }
    // The experiment names the workload after its file: `parity`.
    let path = dir.join(if from == 0 { "parity.csv" } else { "live.csv" });
    std::fs::write(&path, csv).unwrap();
    path
}

/// The start of the step `at` is in, in seconds.
fn step_start(at: DateTime<Utc>) -> i64 {
    at.timestamp() - at.timestamp().rem_euclid(STEP)
}

/// The trace time of row `k` of the slice.
fn row_time(k: usize) -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000 + STEP * k as i64, 0).unwrap()
}

/// The first row the live loop replays, and the share of its rows that are
/// history.
fn live_rows() -> (usize, f64) {
    // As the experiment splits.
    let scored_from = (ROWS as f64 * TRAIN_FRACTION).round() as usize;
    let from = scored_from - LIVE_HISTORY;
    (from, (LIVE_HISTORY as f64 + 0.5) / (ROWS - from) as f64)
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
    let path = slice(dir.path(), 0);

    // The experiment, in virtual time.
    let config = experiment_config();
    let result = pas_experiment::run_trace(&Trace::read(&path).unwrap(), &config, &mut |_| {})
        .expect("the experiment");
    let run = &result.runs[0];
    assert_eq!(run.policy, "predictive");

    // The slice is chosen so the LSTM is served (its backtest beats naive),
    // not the baseline: model choice and batched inference are compared too.
    let (manifest, _) = result.model.as_ref().expect("a trained version");
    assert!(manifest.accepted, "{:?}", manifest.validation);

    // The live loop, again (at most twice more) when its timing left the
    // tolerance: see `Live::untimely`.
    let mut attempt = 1;
    let live = loop {
        let live = live_loop(dir.path(), &config, &result).await;
        match live.untimely(run) {
            None => break live,
            Some(why) if attempt < 3 => eprintln!("parity: live loop {attempt}: {why}; again"),
            Some(why) => panic!("the live loop's timing left the tolerance {attempt} times; the last: {why}"),
        }
        attempt += 1;
    };
    let (live_forecasts, live_replicas) = (&live.forecasts, &live.replicas);

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
        if got != want {
            let before: Vec<String> = run.at[..k]
                .iter()
                .zip(&run.replicas)
                .rev()
                .take(5)
                .map(|(at, r)| format!("{at}: experiment {r}, live {:?}", live_replicas.get(at)))
                .collect();
            panic!(
                "step {k} ({at}): live {got} ({reason}), experiment {want}; the steps before, newest first: {before:#?}"
            );
        }
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

/// Waits up to 30 s for a stage to be `ready` (the forecaster to have loaded
/// the version, the scaler to lead); one that exits first, or never is,
/// fails the test with its log.
async fn ready(
    stage: &str,
    (process, log): &mut (Process, std::sync::mpsc::Receiver<String>),
    ready: impl Fn() -> bool,
) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !ready() {
        let exited = process.try_wait().ok().flatten();
        if exited.is_some() || std::time::Instant::now() > deadline {
            let log: Vec<String> = log.try_iter().collect();
            panic!("the {stage} is not ready ({exited:?}):\n{}", log.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `pas <stage> --config <json>` on `url`, the configuration written from
/// `config` (the bus from the environment); its log lines on the receiver.
fn spawn_stage(
    dir: &std::path::Path,
    stage: &str,
    config: &impl serde::Serialize,
    args: &[&str],
    url: &str,
) -> (Process, std::sync::mpsc::Receiver<String>) {
    let mut json = serde_json::to_value(config).unwrap();
    let fields = json.as_object_mut().unwrap();
    fields.remove("nats");
    fields.retain(|_, v| !v.is_null());
    let path = dir.join(format!("{stage}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(&json).unwrap()).unwrap();
    let mut all = vec![stage, "--config", path.to_str().unwrap()];
    all.extend_from_slice(args);
    spawn_pas(&all, &[("PAS_NATS__URLS", url)])
}

/// What the live loop published, by the trace time of its step: forecasts
/// by their window's end, and the last decision made in each step (its
/// replicas and how it came: reason, when, on which forecast).
struct Live {
    forecasts: BTreeMap<DateTime<Utc>, Forecast>,
    replicas: BTreeMap<DateTime<Utc>, (u32, String)>,
    /// Every decision: its trace time, whether it was made on a forecast,
    /// and what it was.
    decisions: Vec<(DateTime<Utc>, bool, String)>,
}

impl Live {
    /// Why this run cannot be compared with the experiment, if it cannot:
    /// its timing left the tolerance the settings give (see the module's
    /// doc), so a boundary may have moved.
    ///
    /// - A decision made a second or more into its step: the forecast's
    ///   fifth step joins the lead, and the rate limits and scale-down
    ///   window count from a later time.
    /// - A start the experiment cannot have. The experiment's first
    ///   decision is at the first scored step, on the forecast of the
    ///   window before it. The live scaler's sweep can decide before that
    ///   forecast arrives (by the HPA rule, on the first row's samples)
    ///   when it falls in the half second between the first row and the
    ///   forecaster's tick; on a loaded machine the history can arrive
    ///   after that tick, so the first step has no decision, or one on a
    ///   stale forecast. Hence: any decision before the first scored step,
    ///   one on no forecast in the first two, or none in the first.
    fn untimely(&self, run: &pas_experiment::Run) -> Option<String> {
        let first = run.at.first()?;
        let start = *first + TimeDelta::seconds(2 * STEP);

        let untimely = self.decisions.iter().find(|(at, on_forecast, _)| {
            at < first
                || (!on_forecast && *at < start)
                || (at.timestamp_millis() - 1000 * step_start(*at)) >= TIMING_MARGIN_MS
        });
        if let Some((at, _, what)) = untimely {
            return Some(format!(
                "a decision at {at} outside the timing the settings allow: {what}"
            ));
        }
        (!self.replicas.contains_key(first))
            .then(|| format!("no decision in the first scored step ({first})"))
    }
}

/// The live loop once, on a nats-server of its own: the experiment's
/// version in pas-models, the stages as processes, the replay.
async fn live_loop(
    dir: &std::path::Path,
    config: &pas_experiment::Config,
    result: &pas_experiment::TraceResult,
) -> Live {
    let server = NatsServer::start();
    let admin = connect_and_provision(&server).await;
    let prefix = Prefix::replay(RUN).unwrap();
    let (manifest, weights) = result.model.clone().expect("a trained version");
    let bucket = admin.jetstream.get_object_store(BUCKET_MODELS).await.unwrap();
    model_store::save(&bucket, &Layout::new(&prefix), &manifest, &weights)
        .await
        .unwrap();
    let mut forecasts = admin.client.subscribe(prefix.all_forecasts()).await.unwrap();
    let mut decisions = admin.client.subscribe(prefix.all_decisions()).await.unwrap();
    admin.client.flush().await.unwrap();

    // The stages as processes of their own (`pas forecaster`, `pas scaler`
    // on its simulated cluster), each on a JSON file of its configuration.
    let url = server.url();
    let forecaster_port = free_port();
    let forecaster_config = pas_forecaster::Config {
        run: Some(RUN.into()),
        step: Duration::from_secs(STEP as u64),
        replica: Some("parity".into()),
        listen: format!("127.0.0.1:{forecaster_port}").parse().unwrap(),
        ..config.forecaster.clone()
    };
    let mut forecaster = spawn_stage(dir, "forecaster", &forecaster_config, &[], &url);
    ready("forecaster", &mut forecaster, || {
        metric(forecaster_port, "pas_forecaster_model_loads_total").is_some_and(|n| n >= 1.0)
    })
    .await;
    let scaler_port = free_port();
    let scaler_config = pas_scaler::Config {
        run: Some(RUN.into()),
        tick: Duration::from_secs(4),
        forecast_max_age: Duration::from_secs(6),
        defaults: settings(Duration::from_secs(3)),
        behavior: behavior(),
        replica: Some("parity".into()),
        lease: Duration::from_secs(3),
        listen: format!("127.0.0.1:{scaler_port}").parse().unwrap(),
        // The replay's StatefulSet: its pods, their request, their start-up.
        simulated_replicas: PODS,
        simulated_startup: Some(config.pod.startup),
        ..pas_scaler::Config::default()
    };
    let mut scaler = spawn_stage(dir, "scaler", &scaler_config, &["--cluster", "simulated"], &url);
    ready("scaler", &mut scaler, || {
        metric(scaler_port, "pas_scaler_leader") == Some(1.0)
    })
    .await;

    // Start the replay just after a step boundary, so each row's samples
    // are in before the forecaster's tick half a second later.
    let (from, backfill) = live_rows();
    let rows = slice(dir, from);
    let now = Utc::now().timestamp_millis();
    let next = (now.div_euclid(STEP * 1000) + 1) * STEP * 1000 + 50;
    tokio::time::sleep(Duration::from_millis((next - now) as u64)).await;
    let replay = pas_replay::replay::Config {
        run: RUN.into(),
        source: pas_replay::replay::Source::Trace(rows),
        namespace: "experiment".into(),
        workload: "parity".into(),
        pods: PODS,
        pod_cpu: 1000.0,
        speed: pas_replay::replay::Speed::Factor(1.0),
        timestamps: pas_replay::replay::Timestamps::Shifted,
        backfill,
        simulate: Some(config.pod.startup),
        ..pas_replay::replay::Config::default()
    };
    let summary = pas_replay::replay::replay(&admin, &replay, CancellationToken::new(), &mut |_| {})
        .await
        .expect("the replay");
    // The last forecast and decision follow the last row.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (stage, process) in [("forecaster", &mut forecaster), ("scaler", &mut scaler)] {
        let status = process.0.terminate(Duration::from_secs(15));
        let log: Vec<String> = process.1.try_iter().collect();
        assert!(
            status.is_some_and(|s| s.success()),
            "the {stage} ended with {status:?}:\n{}",
            log.join("\n")
        );
    }

    // Live step k of the trace starts at `offset` + its trace time.
    let first = summary.first.expect("rows replayed");
    let trace_start = row_time(from);
    let offset = TimeDelta::seconds(step_start(first)) - (trace_start - DateTime::UNIX_EPOCH);
    let mut live = Live {
        forecasts: BTreeMap::new(),
        replicas: BTreeMap::new(),
        decisions: Vec::new(),
    };
    while let Some(Some(msg)) = futures::FutureExt::now_or_never(forecasts.next()) {
        let f: Forecast = pas_schemas::decode(&msg.payload).unwrap();
        live.forecasts.insert(f.window_end - offset, f);
    }

    while let Some(Some(msg)) = futures::FutureExt::now_or_never(decisions.next()) {
        let d: ScaleDecision = pas_schemas::decode(&msg.payload).unwrap();
        let at = d.timestamp - offset;
        let step = DateTime::from_timestamp(step_start(at), 0).unwrap();
        // The last decision in a step stands. A mismatch says when in the
        // step it was made and on which window's forecast.
        let how = format!(
            "{}; made {} ms into the step on the forecast of window {:?}, peak {:?}",
            d.reason,
            (at - step).num_milliseconds(),
            d.forecast.as_ref().map(|f| f.window_end - offset),
            d.predicted_peak_millicores,
        );
        let what = format!("{} → {}, {how}", d.replicas_before, d.replicas_after);
        live.decisions.push((at, d.forecast.is_some(), what));
        live.replicas.insert(step, (d.replicas_after, how));
    }
    live
}
