//! `pas experiment`: replays recorded traces in virtual time against the
//! real trainer, forecaster and scaler code, and scores each policy.
//!
//! For each trace:
//!
//! 1. **Demand.** The trace's utilisation is read as a percentage of
//!    `reference_pods` pods' worth of CPU: demand in millicores =
//!    `cpu / 100 × reference_pods × capacity`, linear between points (the
//!    rule `pas replay` states too).
//! 2. **Training.** The trainer's own training job
//!    ([`pas_trainer::train_version`]) trains on the demand of the first
//!    `train_fraction` of the trace, on the trace's step. Its wall time is
//!    reported apart.
//! 3. **Forecasts.** The forecaster's own tick: [`pas_forecaster::window`]
//!    (the newest `history` steps up to the closed one, short holes filled,
//!    the model that serves it) and [`pas_forecaster::forecast`] (the
//!    accepted LSTM through batched inference, or the naive baseline),
//!    giving the same forecast messages the stage publishes: demand in
//!    millicores with the per-pod request. One forecast each time a step
//!    closes with its last step observed.
//! 4. **Scaling.** Every `tick`, each policy's [`pas_scaler::policy::decide`]
//!    (the scaler's own evaluation) drives its own [`SimulatedStatefulSet`],
//!    whose pods are ready after a start-up delay and serve at most their
//!    capacity (throttled beyond it); demand is spread over the ready pods,
//!    so what the scaler observes follows its own decisions. The forecast
//!    is handed over as the scaler reads it from the message.
//! 5. **Oracle.** With perfect foresight: at every tick exactly the replicas
//!    the target utilisation needs, each pod started `startup` ahead. It is
//!    the cost a perfect predictive policy would pay at the same target; it
//!    violates the SLO only where `max_replicas` is too few.
//!
//! The score covers the part of the trace after training. With several
//! `targets`, steps 4 and 5 run at each target utilisation, so each policy
//! gives a curve of cost against violation ([`pareto`]).

pub mod manifest;
pub mod pareto;
mod plot;
mod report;

use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use pas_forecaster::models::{Models, Served};
use pas_models::{Series, Trace};
use pas_scaler::policy::{self, ForecastView, History, Policy, Settings, Tuning};
use pas_scaler::sim::{PodModel, SimulatedStatefulSet};
use pas_schemas::{Forecast, TrainingRange};
use pas_workloads::history::History as Coarse;
use pas_workloads::{Steps, WorkloadKey, Workloads};
use serde::Serialize;

pub use pareto::{Comparison, Curve, CurvePoint, Curves};
pub use report::{Report, Summary, curve_table, summary_table, write_report};

/// Why an experiment could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A trace, a setting or a model could not be used.
    #[error("{0}")]
    Input(String),
    /// Training or inference failed.
    #[error(transparent)]
    Model(#[from] pas_models::Error),
    /// The report could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A plot could not be drawn.
    #[error("plot {path}: {message}")]
    Plot {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
}

/// How to run an experiment.
#[derive(Debug, Clone)]
pub struct Config {
    /// Policies to compare (the oracle is always added).
    pub policies: Vec<Policy>,
    /// A trace's 100 % is this many pods' worth of CPU.
    pub reference_pods: u32,
    /// The simulated pods: start-up delay, capacity, request.
    pub pod: PodModel,
    /// Replica bounds and target utilisation (the policy is set per run).
    /// Its target is the reference: the HPA's point every policy is
    /// compared with, and the runs the plots and `runs` show.
    pub settings: Settings,
    /// Target utilisations every policy (and the oracle) also runs at, for
    /// the curves of cost against violation; the reference target is always
    /// run.
    pub targets: Vec<f64>,
    /// Scaler tick and behaviour. `forecast_max_age` is raised to the
    /// trace's step plus a tick when it is shorter, since forecasts come once
    /// a step.
    pub tuning: Tuning,
    /// Share of each trace used for training; the rest is scored.
    pub train_fraction: f64,
    /// The trainer's settings (its `step` is set to each trace's step).
    pub trainer: pas_trainer::Config,
    /// The forecaster's settings: its `history`, `max_fill`, baseline
    /// `horizon` and `quantile`, and `chunk` (its `step` is each trace's).
    pub forecaster: pas_forecaster::Config,
    /// How demand moves between a trace's points.
    pub shape: Shape,
    /// How often the `hpa` policy evaluates: the Kubernetes HPA's sync
    /// period (15 s), where PAS's policies evaluate every tick.
    pub hpa_sync: Duration,
    /// Replicas every policy starts the scored part with, at every target;
    /// by default what the oracle starts with at the reference target
    /// (ready for the demand then).
    pub start_replicas: Option<u32>,
    /// Threads the runs of a trace share (each run is independent, so the
    /// results do not depend on it).
    pub workers: usize,
}

impl Default for Config {
    fn default() -> Self {
        let settings = Settings {
            enabled: true,
            max_replicas: 20,
            ..Settings::default()
        };
        Config {
            policies: vec![Policy::Hpa, Policy::Threshold, Policy::Predictive, Policy::Hybrid],
            reference_pods: 4,
            pod: PodModel {
                startup: settings.startup,
                startup_spread: 0.0,
                capacity_millicores: 1000.0,
                request_millicores: 1000.0,
            },
            settings,
            targets: Vec::new(),
            tuning: Tuning::default(),
            train_fraction: 0.7,
            trainer: pas_trainer::Config::default(),
            forecaster: pas_forecaster::Config::default(),
            shape: Shape::Linear,
            hpa_sync: Duration::from_secs(15),
            start_replicas: None,
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

impl Config {
    fn check(&self) -> Result<(), Error> {
        let bad = |m: String| Err(Error::Input(m));
        if !(0.05..=0.95).contains(&self.train_fraction) {
            return bad(format!(
                "the training share must be between 0.05 and 0.95, not {}",
                self.train_fraction
            ));
        }
        if self.reference_pods == 0 {
            return bad("the reference pods must be at least 1".into());
        }
        if !(self.pod.capacity_millicores > 0.0 && self.pod.request_millicores > 0.0) {
            return bad("a pod's capacity and request must be above 0".into());
        }
        if self.tuning.tick.is_zero() {
            return bad("the tick must be above 0".into());
        }
        if self.settings.min_replicas == 0 || self.settings.min_replicas > self.settings.max_replicas {
            return bad("min replicas must be at least 1 and at most max replicas".into());
        }
        if let Some(t) = self
            .targets
            .iter()
            .chain([&self.settings.target_utilization])
            .find(|t| !(**t > 0.0 && **t <= 100.0))
        {
            return bad(format!(
                "a target utilisation must be above 0 and at most 100 %, not {t}"
            ));
        }
        if !(self.settings.risk > 0.0 && self.settings.risk < 1.0) {
            return bad(format!(
                "the risk must be between 0 and 1 (exclusive), not {}",
                self.settings.risk
            ));
        }
        if !(0.0..1.0).contains(&self.pod.startup_spread) {
            return bad(format!(
                "the start-up spread must be at least 0 and below 1, not {}",
                self.pod.startup_spread
            ));
        }
        Ok(())
    }

    /// The targets to run, ascending, the reference among them.
    pub fn targets(&self) -> Vec<f64> {
        let mut t = self.targets.clone();
        t.push(self.settings.target_utilization);
        t.sort_by(f64::total_cmp);
        t.dedup();
        t
    }
}

/// Progress of a long run, for a terminal.
#[derive(Debug, Clone, Copy)]
pub enum Progress<'a> {
    /// Training on a trace started.
    Training {
        /// The trace.
        trace: &'a str,
        /// Steps trained on.
        steps: usize,
    },
    /// The trace was scored.
    Scored {
        /// The trace.
        trace: &'a str,
        /// Training wall time, seconds.
        training_seconds: f64,
        /// Simulation wall time, seconds.
        simulation_seconds: f64,
    },
}

/// One policy's score on one trace.
#[derive(Debug, Clone, Serialize)]
pub struct Score {
    /// `hpa`, `threshold`, `predictive`, `hybrid` or `oracle`.
    pub policy: String,
    /// The target utilisation it ran at, percent.
    pub target_utilization: f64,
    /// Seconds with demand above the ready pods' capacity.
    pub violation_seconds: f64,
    /// Demand the ready pods could not serve, core-seconds.
    pub unserved_core_seconds: f64,
    /// Replicas (starting ones too) times hours: the cost.
    pub replica_hours: f64,
    /// Most replicas at once.
    pub peak_replicas: u32,
    /// Mean replicas.
    pub mean_replicas: f64,
    /// Changes of the replicas.
    pub scaling_actions: u32,
    /// Times demand rose above the ready capacity.
    pub violations: u32,
    /// Mean seconds from demand rising above the ready capacity until the
    /// capacity caught up (or the demand fell back), over those episodes.
    pub mean_time_to_capacity_seconds: Option<f64>,
    /// The longest such episode, seconds.
    pub max_time_to_capacity_seconds: Option<f64>,
    /// Ticks whose decision used a forecast.
    pub forecast_decisions: u32,
    /// CPU the pods used (demand served), core-seconds.
    pub used_core_seconds: f64,
    /// CPU the ready pods could have served, core-seconds.
    pub ready_core_seconds: f64,
    /// 1 − used / ready: the share of ready capacity left idle (Autopilot's
    /// slack).
    pub slack: Option<f64>,
}

/// The forecasts' accuracy over the scored part.
#[derive(Debug, Clone, Serialize)]
pub struct Accuracy {
    /// `lstm` when the trained version was accepted, else `naive`.
    pub model: String,
    /// Whether the trainer accepted its version (it beat naive in its own backtest).
    pub accepted: bool,
    /// Why no version could be trained, if none could.
    pub training_error: Option<String>,
    /// The trainer's validation MASE of its LSTM and of naive.
    pub validation: std::collections::BTreeMap<String, f64>,
    /// Forecasts made.
    pub forecasts: usize,
    /// MASE of the point forecast over every step of every forecast
    /// (scaled by the training part's mean one-step change).
    pub mase: Option<f64>,
    /// MASE of the naive forecast over the same forecasts.
    pub naive_mase: Option<f64>,
    /// Share of actual values at or below the upper forecast.
    pub upper_coverage: Option<f64>,
    /// Per quantile level the forecasts carry (`"0.9"`), the share of
    /// actual values at or below that quantile: calibrated when it is
    /// close to the level.
    pub quantile_coverage: std::collections::BTreeMap<String, f64>,
}

/// One trace's result.
#[derive(Debug, Clone, Serialize)]
pub struct TraceResult {
    /// Trace name (file stem).
    pub trace: String,
    /// Trace step, seconds.
    pub step_seconds: u32,
    /// Steps trained on and scored.
    pub train_steps: usize,
    /// Steps scored.
    pub scored_steps: usize,
    /// First and last scored instant.
    pub scored_from: DateTime<Utc>,
    /// End of the scored part.
    pub scored_to: DateTime<Utc>,
    /// Training wall time, seconds.
    pub training_seconds: f64,
    /// Simulation wall time of all policies, seconds.
    pub simulation_seconds: f64,
    /// Forecast accuracy.
    pub accuracy: Accuracy,
    /// Scores at the reference target, the oracle last.
    pub scores: Vec<Score>,
    /// Scores at every target, ascending, each target's oracle last.
    pub sweep: Vec<Score>,
    /// Each policy's cost against violation over the targets, and how it
    /// compares with the HPA at the reference target.
    pub curves: Curves,
    /// Down-sampled time series for the plots.
    #[serde(skip)]
    pub timeline: Timeline,
    /// The served model's forecasts against what then happened, for a plot.
    #[serde(skip)]
    pub forecast: ForecastTrack,
    /// Each policy's run, tick by tick (the oracle's without forecasts).
    #[serde(skip)]
    pub runs: Vec<Run>,
    /// The version the trainer's job made (its manifest and weights),
    /// accepted or not, if one could be trained.
    #[serde(skip)]
    pub model: Option<(pas_schemas::ModelManifest, Vec<u8>)>,
}

/// One policy's run over the scored part, tick by tick: what a comparison
/// with the live pipeline needs.
#[derive(Debug, Clone, Default)]
pub struct Run {
    /// The policy.
    pub policy: String,
    /// The ticks.
    pub at: Vec<DateTime<Utc>>,
    /// Replicas (`spec.replicas`) at each tick, after its decision.
    pub replicas: Vec<u32>,
    /// The forecasts the policy's scaler was given, as the forecaster made
    /// them from what its pods reported.
    pub forecasts: Vec<Forecast>,
}

/// Each scored step's demand, and what the served model (the accepted LSTM,
/// else the naive baseline) forecast for it `steps_ahead` steps before: the
/// lead time the `predictive` rule plans over (start-up plus one tick).
#[derive(Debug, Clone, Default)]
pub struct ForecastTrack {
    /// Steps between the forecast and the step it is for.
    pub steps_ahead: usize,
    /// The step.
    pub at: Vec<DateTime<Utc>>,
    /// Demand in the step, cores (NaN where the trace has a gap).
    pub actual: Vec<f64>,
    /// The point forecast for it, cores.
    pub forecast: Vec<f64>,
    /// The upper quantile for it, cores (NaN where the model gives none).
    pub upper: Vec<f64>,
}

/// What the plots show, one point per bucket of ticks.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    /// Bucket start.
    pub at: Vec<DateTime<Utc>>,
    /// Highest demand in the bucket, cores.
    pub demand: Vec<f64>,
    /// Per policy (same order as the scores): lowest ready capacity in the
    /// bucket (cores), and most replicas.
    pub policies: Vec<(String, Vec<f64>, Vec<u32>)>,
}

/// How demand moves between two points of a trace. A trace point is the
/// mean over its interval, so neither is the truth: `linear` is the
/// smoothest reading (rises are gradual, which favours reactive scaling),
/// `step` holds each value for its interval (rises come at once, as bursts
/// do).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Shape {
    /// Straight lines between points.
    Linear,
    /// Each value until the next point.
    Step,
}

impl std::str::FromStr for Shape {
    type Err = Error;
    fn from_str(s: &str) -> Result<Shape, Error> {
        match s {
            "linear" => Ok(Shape::Linear),
            "step" => Ok(Shape::Step),
            _ => Err(Error::Input(format!(
                "unknown demand shape `{s}`; known: linear, step"
            ))),
        }
    }
}

/// Demand over time: the trace's points as millicores, shaped between them.
#[derive(Debug, Clone)]
pub struct Demand {
    points: Vec<(i64, f64)>,
    shape: Shape,
}

impl Demand {
    /// The stated rule: `cpu` percent of `reference_pods` pods of
    /// `capacity_millicores` each.
    pub fn from_trace(trace: &Trace, reference_pods: u32, capacity_millicores: f64, shape: Shape) -> Demand {
        let scale = f64::from(reference_pods) * capacity_millicores / 100.0;
        let points = trace
            .points
            .iter()
            .map(|(t, v)| (t.timestamp_millis(), v.max(0.0) * scale))
            .collect();
        Demand { points, shape }
    }

    /// Millicores at `t` (the first or last point outside the trace).
    pub fn at(&self, t: DateTime<Utc>) -> f64 {
        let t = t.timestamp_millis();
        let i = self.points.partition_point(|(p, _)| *p <= t);
        match (i.checked_sub(1).map(|j| self.points[j]), self.points.get(i)) {
            (Some((_, v0)), Some(_)) if self.shape == Shape::Step => v0,
            (Some((t0, v0)), Some(&(t1, v1))) => v0 + (v1 - v0) * (t - t0) as f64 / (t1 - t0) as f64,
            (Some((_, v)), None) | (None, Some(&(_, v))) => v,
            (None, None) => 0.0,
        }
    }
}

/// Reads a trace: a `timestamp,cpu` CSV, or JSON lines of one workload's
/// pod samples (`pas record`, `pas import prometheus`). Samples are folded
/// as the pipeline folds them ([`Workloads`], at their own spacing), and
/// each step's demand (the sum of the pods' mean use) is written as a
/// percentage of `reference_pods` pods of the configured capacity, so the
/// demand rule ([`Demand::from_trace`]) gives it back exactly. Steps with
/// no sample stay missing.
pub fn read_trace(path: &Path, config: &Config) -> Result<Trace, Error> {
    if path.extension().is_none_or(|e| e != "jsonl") {
        return Ok(Trace::read(path)?);
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::Input(format!("{}: {e}", path.display())))?;
    let mut samples = Vec::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let sample: pas_schemas::CpuSample = pas_schemas::decode(line.as_bytes())
            .map_err(|e| Error::Input(format!("{}: line {}: {e}", path.display(), n + 1)))?;
        samples.push(sample);
    }
    samples.sort_by_key(|s| s.timestamp);
    // The step: the median spacing of each pod's own samples (pods on
    // different nodes are sampled out of phase).
    let mut by_pod: std::collections::BTreeMap<Option<&str>, Vec<i64>> = std::collections::BTreeMap::new();
    for s in &samples {
        by_pod
            .entry(s.pod.as_deref())
            .or_default()
            .push(s.timestamp.timestamp());
    }
    let mut gaps: Vec<i64> = by_pod
        .values()
        .flat_map(|t| {
            t.windows(2)
                .map(|w| w[1] - w[0])
                .filter(|g| *g > 0)
                .collect::<Vec<_>>()
        })
        .collect();
    gaps.sort_unstable();
    let step = gaps
        .get(gaps.len() / 2)
        .copied()
        .unwrap_or(1)
        .clamp(1, i64::from(u32::MAX)) as u32;
    // Every step from the first sample to the last is kept, gaps included.
    let span = match (samples.first(), samples.last()) {
        (Some(a), Some(b)) => (b.timestamp - a.timestamp).num_seconds() / i64::from(step),
        _ => 0,
    };
    let mut folded = Workloads::new(step, usize::try_from(span).unwrap_or(0) + 2, 2);
    for (i, sample) in samples.iter().enumerate() {
        folded.fold(sample, i as u64);
    }
    let keys = folded.keys();
    let key = match keys.as_slice() {
        [key] => key,
        [] => {
            return Err(Error::Input(format!(
                "{}: no sample of a workload's pod with a CPU request",
                path.display()
            )));
        }
        many => {
            let names: Vec<String> = many.iter().map(WorkloadKey::model_key).collect();
            return Err(Error::Input(format!(
                "{}: samples of {} workloads ({}): give one workload's (`pas import prometheus --workload`, `pas record --workload`)",
                path.display(),
                many.len(),
                names.join(", ")
            )));
        }
    };
    let (steps, _) = folded
        .series(key)
        .ok_or_else(|| Error::Input(format!("{}: no complete step", path.display())))?;
    let scale = 100.0 / (f64::from(config.reference_pods) * config.pod.capacity_millicores);
    let points = steps
        .values
        .iter()
        .enumerate()
        .filter(|(_, v)| v.is_finite())
        .map(|(i, v)| {
            (
                steps.start + TimeDelta::seconds(i as i64 * i64::from(step)),
                v * scale,
            )
        })
        .collect();
    Ok(Trace {
        name: path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        points,
    })
}

/// Runs every trace and collects the results.
pub fn run(
    paths: &[&Path],
    config: &Config,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<Report, Error> {
    config.check()?;
    let mut traces = Vec::new();
    for path in paths {
        let trace = read_trace(path, config)?;
        traces.push(run_trace(&trace, config, progress)?);
    }
    Ok(Report::new(config, traces))
}

/// Runs one trace.
pub fn run_trace(
    trace: &Trace,
    config: &Config,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<TraceResult, Error> {
    config.check()?;
    let step = trace.median_step_seconds();
    // 1. Demand in millicores, the quantity the pipeline forecasts; per
    // step, its mean over the ticks in the step, as the pods would report it.
    let demand = Demand::from_trace(
        trace,
        config.reference_pods,
        config.pod.capacity_millicores,
        config.shape,
    );
    // With the coarse history the forecaster keeps, as if it had run over
    // the whole trace: the trainer and every forecast read their seasonal
    // context from it (always a day or more before the forecast's steps).
    let series = step_means(
        &Series::resample(&trace.points, step)?,
        &demand,
        config.tuning.tick,
    )
    .with_own_history();
    let n = series.len();
    let horizon = config.trainer.model.horizon;
    let split = ((n as f64) * config.train_fraction).round() as usize;
    if split < config.trainer.model.window + horizon || n - split < horizon + 2 {
        return Err(Error::Input(format!(
            "{}: {n} steps of {step}s are too few to train on {:.0}% and score the rest",
            trace.name,
            config.train_fraction * 100.0
        )));
    }

    // Forecasts are made when a step closes, which must fall on a tick.
    let tick_ms = config.tuning.tick.as_millis();
    if tick_ms == 0 || (u128::from(step) * 1000) % tick_ms != 0 {
        return Err(Error::Input(format!(
            "{}: the tick ({:?}) must divide the trace's step ({step}s): a forecast is made on the tick a step closes",
            trace.name, config.tuning.tick
        )));
    }

    // The forecasts must reach past the lead time the scaler plans over.
    let lead = config.settings.startup + config.tuning.tick;
    for (what, horizon) in [
        ("the model's horizon", horizon),
        ("the baseline's horizon", config.forecaster.horizon),
    ] {
        pas_runtime::config::check_horizon(what, horizon, Duration::from_secs(u64::from(step)), lead)
            .map_err(|e| Error::Input(format!("{}: {e}", trace.name)))?;
    }

    // 2. Training, with the trainer's own job.
    progress(Progress::Training {
        trace: &trace.name,
        steps: split,
    });
    let started = Instant::now();
    let mut trainer = config.trainer.clone();
    trainer.step = Duration::from_secs(u64::from(step));
    let train = series.slice(0..split);
    let range = TrainingRange {
        first_sequence: 0,
        last_sequence: split as u64,
        from: series.time_at(0),
        to: series.time_at(split - 1),
    };
    let key = WorkloadKey {
        namespace: "experiment".into(),
        workload: trace.name.clone(),
    };
    // A version that cannot be trained leaves the forecaster on its naive
    // fallback, as in the pipeline; the report says why. A trace has no
    // throttling: no step is a lower bound.
    let trained = pas_trainer::train_version(key.clone(), 1, train.clone(), &[], range, &trainer)
        .map_err(|e| e.to_string());
    let training_seconds = started.elapsed().as_secs_f64();

    // 3. Forecasts at every step of the scored part, by the forecaster's own tick.
    let sim_started = Instant::now();
    let mut forecaster = config.forecaster.clone();
    forecaster.step = Duration::from_secs(u64::from(step));
    let models = Models::default();
    if let Ok((manifest, weights)) = &trained
        && manifest.accepted
    {
        let lstm = Served::check(manifest, u64::from(step), (forecaster.history, lead))
            .and_then(|c| Served::build(manifest, c, weights))
            .map_err(|e| {
                Error::Input(format!(
                    "{}: the trained version cannot be served: {e}",
                    trace.name
                ))
            })?;
        models.insert(lstm);
    }
    let made = forecasts(
        &key,
        &series,
        split,
        &forecaster,
        &models,
        config.pod.request_millicores,
    );
    let origins: Vec<usize> = made
        .iter()
        .map(|m| ((m.window_end - series.start).num_seconds() / i64::from(step)) as usize)
        .collect();
    let horizon = made.first().map_or(horizon, |m| m.values.len());
    let accuracy = accuracy(&series.values, &train.values, &origins, &made, horizon, &trained);
    let steps_ahead = (lead.as_secs_f64() / f64::from(step))
        .ceil()
        .clamp(1.0, horizon as f64) as usize;
    let mut track = ForecastTrack {
        steps_ahead,
        ..ForecastTrack::default()
    };
    for (&i, m) in origins.iter().zip(&made) {
        let Some(&actual) = series.values.get(i + steps_ahead) else {
            continue;
        };
        let f = m;
        track.at.push(series.time_at(i + steps_ahead));
        track.actual.push(actual / 1000.0);
        track.forecast.push(f.values[steps_ahead - 1] / 1000.0);
        track
            .upper
            .push(f.upper.as_ref().map_or(f64::NAN, |u| u[steps_ahead - 1] / 1000.0));
    }

    // 4. and 5. Every policy, then the oracle, over the scored part.
    let from = series.time_at(split);
    let to = trace.points.last().map_or(from, |p| p.0);
    let mut tuning = config.tuning.clone();
    let min_age = Duration::from_secs(u64::from(step)) + tuning.tick;
    tuning.forecast_max_age = tuning.forecast_max_age.max(min_age);
    let ticks = ticks(from, to, tuning.tick);
    // Demand at each tick, millicores: the same for every policy.
    let load: Vec<f64> = ticks.iter().map(|&t| demand.at(t)).collect();
    let bucket = (ticks.len() / 1500).max(1);
    let mut timeline = Timeline::default();
    for (at, chunk) in ticks.chunks(bucket).zip(load.chunks(bucket)) {
        timeline.at.push(at[0]);
        timeline
            .demand
            .push(chunk.iter().map(|d| d / 1000.0).fold(0.0, f64::max));
    }
    // The pods' history before the scored part, as the forecaster holds it.
    let start_replicas = config
        .start_replicas
        .unwrap_or_else(|| needed(load.first().copied().unwrap_or(0.0), config, &config.settings));
    let seed = seed(&key, &series, split, &forecaster, config.pod, start_replicas);
    let forecasting = Forecasting {
        key: &key,
        seed: &seed,
        forecaster: &forecaster,
        models: &models,
        history: series.seasonal.as_deref(),
    };
    // Every policy, then the oracle, at every target; the runs are
    // independent, so they share the cores.
    let reference = config.settings.target_utilization;
    let jobs: Vec<(f64, Option<Policy>)> = config
        .targets()
        .into_iter()
        .flat_map(|t| {
            let policies = config.policies.iter().map(move |&p| (t, Some(p)));
            policies.chain(std::iter::once((t, None)))
        })
        .collect();
    let done = parallel(config.workers, &jobs, |&(target, p)| {
        let mut settings = config.settings.clone();
        settings.target_utilization = target;
        match p {
            Some(p) => {
                settings.policy = p;
                simulate(
                    p.as_str(),
                    (&ticks, &load),
                    start_replicas,
                    (p != Policy::Hpa).then_some(&forecasting),
                    config,
                    &settings,
                    &tuning,
                )
            }
            None => oracle((&ticks, &load), config, &settings, &tuning),
        }
    });
    let mut scores = Vec::new();
    let mut sweep = Vec::new();
    let mut runs = Vec::new();
    for (score, capacity, run) in done {
        if score.target_utilization == reference {
            timeline.policies.push((
                score.policy.clone(),
                bucket_min(&capacity, bucket),
                bucket_max(&run.replicas, bucket),
            ));
            scores.push(score.clone());
            runs.push(run);
        }
        sweep.push(score);
    }
    let curves = Curves::new(&pareto::points(&sweep), reference);
    let simulation_seconds = sim_started.elapsed().as_secs_f64();
    progress(Progress::Scored {
        trace: &trace.name,
        training_seconds,
        simulation_seconds,
    });

    Ok(TraceResult {
        trace: trace.name.clone(),
        step_seconds: step,
        train_steps: split,
        scored_steps: n - split,
        scored_from: from,
        scored_to: to,
        training_seconds,
        simulation_seconds,
        accuracy,
        scores,
        sweep,
        curves,
        timeline,
        forecast: track,
        runs,
        model: trained.ok(),
    })
}

/// `f` on every job, on up to `workers` threads, results in the jobs' order.
fn parallel<T: Sync, R: Send>(workers: usize, jobs: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let workers = workers.min(jobs.len()).max(1);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut done: Vec<(usize, R)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(job) = jobs.get(i) else { break mine };
                        mine.push((i, f(job)));
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

/// Each step's mean demand over the ticks in it, millicores, as the pods
/// would report it if they served it all (missing where the trace is).
fn step_means(points: &Series, demand: &Demand, tick: Duration) -> Series {
    let step = TimeDelta::seconds(i64::from(points.step_seconds));
    let tick = TimeDelta::from_std(tick)
        .unwrap_or(step)
        .min(step)
        .max(TimeDelta::milliseconds(1));
    let mut out = points.clone();
    for (i, v) in out.values.iter_mut().enumerate() {
        if v.is_nan() {
            continue;
        }
        let (start, mut t, mut sum, mut n) = (points.time_at(i), points.time_at(i), 0.0, 0u32);
        while t < start + step {
            sum += demand.at(t);
            n += 1;
            t += tick;
        }
        *v = sum / f64::from(n.max(1));
    }
    out
}

/// The forecaster's state at the start of the scored part: the newest
/// `history` steps before it, each as one round of samples from `replicas`
/// ready pods serving that step's demand (what `pas replay` publishes for a
/// trace row).
fn seed(
    key: &WorkloadKey,
    series: &Series,
    split: usize,
    forecaster: &pas_forecaster::Config,
    pod: PodModel,
    replicas: u32,
) -> Workloads {
    let step = series.step_seconds;
    let open_steps = forecaster.lateness.as_secs().div_ceil(u64::from(step)).max(1) as usize;
    let mut folded = Workloads::new(step, forecaster.history, open_steps);
    let first = split.saturating_sub(forecaster.history);
    let sts = SimulatedStatefulSet::new(pod, replicas, series.time_at(first));
    let mut sequence = 0;
    for i in first..split {
        let demand = series.values[i];
        if demand.is_nan() {
            continue;
        }
        for sample in sts.samples(&key.namespace, &key.workload, demand, series.time_at(i)) {
            sequence += 1;
            folded.fold(&sample, sequence);
        }
    }
    folded
}

/// What a policy's forecasts are made from: the forecaster's own tick on
/// the samples its simulated pods report, from the seeded history on.
struct Forecasting<'a> {
    key: &'a WorkloadKey,
    seed: &'a Workloads,
    forecaster: &'a pas_forecaster::Config,
    models: &'a Models,
    /// The workload's coarse history (the trace's demand).
    history: Option<&'a Coarse>,
}

/// The forecaster's tick at every step of the scored part (from `split`):
/// each origin's window of the newest `history` steps, as the stage holds
/// them, through [`pas_forecaster::window`] and [`pas_forecaster::forecast`].
fn forecasts(
    key: &WorkloadKey,
    series: &Series,
    split: usize,
    forecaster: &pas_forecaster::Config,
    models: &Models,
    request: f64,
) -> Vec<Forecast> {
    let step = series.step_seconds;
    let history = forecaster.history.max(1);
    let windows: Vec<pas_forecaster::Window> = (split..series.len())
        .filter_map(|i| {
            let from = (i + 1).saturating_sub(history);
            let values = series.values[from..=i].to_vec();
            let steps = Steps {
                start: series.time_at(from),
                step_seconds: step,
                requests: vec![request; values.len()],
                saturated: vec![false; values.len()],
                values,
            };
            pas_forecaster::window(
                key,
                steps,
                series.time_at(i),
                forecaster.max_fill,
                models,
                series.seasonal.as_deref(),
            )
        })
        .collect();
    pas_forecaster::forecast(windows, &forecaster.tick_settings(), series.time_at(split))
        .into_iter()
        .filter_map(|(_, f)| f.ok())
        .collect()
}

fn accuracy(
    values: &[f64],
    train: &[f64],
    origins: &[usize],
    made: &[Forecast],
    horizon: usize,
    trained: &Result<(pas_schemas::ModelManifest, Vec<u8>), String>,
) -> Accuracy {
    let manifest = trained.as_ref().ok().map(|t| &t.0);
    let accepted = manifest.is_some_and(|m| m.accepted);
    let scale = pas_models::eval::naive_scale(train);
    let (mut err, mut naive_err, mut n, mut covered, mut with_upper) = (0.0, 0.0, 0usize, 0usize, 0usize);
    let mut by_level: std::collections::BTreeMap<String, Vec<(f64, f64)>> = Default::default();
    for (&i, m) in origins.iter().zip(made) {
        for h in 0..horizon {
            let Some(&actual) = values.get(i + 1 + h) else {
                break;
            };
            if actual.is_nan() {
                continue;
            }
            let Some(&predicted) = m.values.get(h) else {
                break;
            };
            err += (predicted - actual).abs();
            naive_err += (values[i] - actual).abs();
            n += 1;
            if let Some(u) = &m.upper {
                with_upper += 1;
                covered += usize::from(actual <= u[h]);
            }
            for q in m.quantiles.iter().flatten() {
                if let Some(&bound) = q.values.get(h) {
                    by_level.entry(q.q.to_string()).or_default().push((actual, bound));
                }
            }
        }
    }
    let mase = |e: f64| scale.filter(|_| n > 0).map(|s| e / n as f64 / s);
    let mut validation = std::collections::BTreeMap::new();
    for k in ["lstm", "naive"] {
        if let Some(v) = manifest.and_then(|m| m.validation.get(k)) {
            validation.insert(k.to_owned(), *v);
        }
    }
    Accuracy {
        model: if accepted { "lstm" } else { "naive" }.into(),
        accepted,
        training_error: trained.as_ref().err().cloned(),
        validation,
        forecasts: made.len(),
        mase: mase(err),
        naive_mase: mase(naive_err),
        upper_coverage: (with_upper > 0).then(|| covered as f64 / with_upper as f64),
        quantile_coverage: by_level
            .into_iter()
            .filter_map(|(q, pairs)| pas_models::coverage(pairs).map(|c| (q, c)))
            .collect(),
    }
}

fn ticks(from: DateTime<Utc>, to: DateTime<Utc>, tick: Duration) -> Vec<DateTime<Utc>> {
    let tick = TimeDelta::from_std(tick).unwrap_or(TimeDelta::seconds(5));
    let mut out = Vec::new();
    let mut t = from;
    while t < to {
        out.push(t);
        t += tick;
    }
    out
}

fn bucket_min(v: &[f64], n: usize) -> Vec<f64> {
    v.chunks(n)
        .map(|c| c.iter().copied().fold(f64::INFINITY, f64::min))
        .collect()
}

fn bucket_max(v: &[u32], n: usize) -> Vec<u32> {
    v.chunks(n)
        .map(|c| c.iter().copied().max().unwrap_or(0))
        .collect()
}

/// Accumulates a score tick by tick.
struct Meter {
    tick: f64,
    score: Score,
    replica_ticks: f64,
    in_violation: Option<f64>,
    episodes: Vec<f64>,
    ticks: usize,
}

impl Meter {
    fn new(policy: &str, target: f64, tick: Duration) -> Meter {
        Meter {
            tick: tick.as_secs_f64(),
            score: Score {
                policy: policy.to_owned(),
                target_utilization: target,
                violation_seconds: 0.0,
                unserved_core_seconds: 0.0,
                replica_hours: 0.0,
                peak_replicas: 0,
                mean_replicas: 0.0,
                scaling_actions: 0,
                violations: 0,
                mean_time_to_capacity_seconds: None,
                max_time_to_capacity_seconds: None,
                forecast_decisions: 0,
                used_core_seconds: 0.0,
                ready_core_seconds: 0.0,
                slack: None,
            },
            replica_ticks: 0.0,
            in_violation: None,
            episodes: Vec::new(),
            ticks: 0,
        }
    }

    /// One tick: the replicas that exist (and cost), the demand, and what
    /// the ready pods could serve.
    fn tick(&mut self, replicas: u32, demand_millicores: f64, ready_millicores: f64) {
        let unmet_millicores = (demand_millicores - ready_millicores).max(0.0);
        self.ticks += 1;
        self.replica_ticks += f64::from(replicas);
        self.score.used_core_seconds += (demand_millicores - unmet_millicores) / 1000.0 * self.tick;
        self.score.ready_core_seconds += ready_millicores / 1000.0 * self.tick;
        self.score.peak_replicas = self.score.peak_replicas.max(replicas);
        // Rounding noise of a spread is not a violation.
        if unmet_millicores > 1e-6 {
            self.score.violation_seconds += self.tick;
            self.score.unserved_core_seconds += unmet_millicores / 1000.0 * self.tick;
            match &mut self.in_violation {
                Some(s) => *s += self.tick,
                None => {
                    self.in_violation = Some(self.tick);
                    self.score.violations += 1;
                }
            }
        } else if let Some(s) = self.in_violation.take() {
            self.episodes.push(s);
        }
    }

    fn finish(mut self) -> Score {
        if let Some(s) = self.in_violation.take() {
            self.episodes.push(s);
        }
        self.score.replica_hours = self.replica_ticks * self.tick / 3600.0;
        self.score.slack = (self.score.ready_core_seconds > 0.0)
            .then(|| 1.0 - self.score.used_core_seconds / self.score.ready_core_seconds);
        self.score.mean_replicas = if self.ticks == 0 {
            0.0
        } else {
            self.replica_ticks / self.ticks as f64
        };
        if !self.episodes.is_empty() {
            self.score.mean_time_to_capacity_seconds =
                Some(self.episodes.iter().sum::<f64>() / self.episodes.len() as f64);
            self.score.max_time_to_capacity_seconds = Some(self.episodes.iter().copied().fold(0.0, f64::max));
        }
        self.score
    }
}

/// Replicas the target utilisation needs for `demand`, within the bounds.
fn needed(demand_millicores: f64, config: &Config, settings: &Settings) -> u32 {
    let per_pod = config.pod.request_millicores * settings.target_utilization / 100.0;
    let n = (demand_millicores / per_pod - 1e-9).ceil().max(0.0) as u32;
    n.clamp(settings.min_replicas, settings.max_replicas)
}

/// One policy on its own simulated StatefulSet; `load` is the demand at
/// each tick. With `forecasting`, its pods' samples are folded and, each
/// time a step closes, forecast by the forecaster's own tick, as the live
/// loop does: a forecast is made from what the pods reported (a lower bound
/// while they were throttled), so it follows the policy's own decisions.
fn simulate(
    name: &str,
    (ticks, load): (&[DateTime<Utc>], &[f64]),
    start_replicas: u32,
    forecasting: Option<&Forecasting<'_>>,
    config: &Config,
    settings: &Settings,
    tuning: &Tuning,
) -> (Score, Vec<f64>, Run) {
    let mut meter = Meter::new(name, settings.target_utilization, tuning.tick);
    let mut capacity = Vec::with_capacity(ticks.len());
    let mut run = Run {
        policy: name.to_owned(),
        at: ticks.to_vec(),
        replicas: Vec::with_capacity(ticks.len()),
        forecasts: Vec::new(),
    };
    let Some(&first) = ticks.first() else {
        return (meter.finish(), capacity, run);
    };
    let mut sts = SimulatedStatefulSet::new(config.pod, start_replicas, first);
    let mut history = History::default();
    let mut folded = forecasting.map(|f| f.seed.clone());
    let mut sequence = 0;
    // The HPA acts once a sync period; PAS every tick.
    let every = if settings.policy == Policy::Hpa {
        (config.hpa_sync.as_secs_f64() / tuning.tick.as_secs_f64())
            .round()
            .max(1.0) as usize
    } else {
        1
    };
    for (i, (&now, &d)) in ticks.iter().zip(load).enumerate() {
        let served = sts.serve(d, now);
        meter.tick(sts.replicas(), d, sts.capacity(now));
        capacity.push(sts.capacity(now) / 1000.0);
        if let (Some(f), Some(folded)) = (forecasting, folded.as_mut()) {
            for sample in sts.samples(&f.key.namespace, &f.key.workload, d, now) {
                sequence += 1;
                folded.fold(&sample, sequence);
            }
            if let Some(forecast) = tick_forecast(f, folded, now) {
                run.forecasts.push(forecast);
            }
        }
        if i % every == 0 {
            // The newest forecast, as the scaler reads it from its message.
            let forecast = run.forecasts.last().map(ForecastView::from);
            let observed = sts.observed(&served, now);
            let before = sts.replicas();
            let decision = policy::decide(now, settings, tuning, &observed, forecast, &mut history);
            meter.score.forecast_decisions += u32::from(decision.used_forecast);
            if decision.replicas != before {
                sts.scale(decision.replicas, now);
                history.record_scale(now, before, decision.replicas, &tuning.behavior);
                meter.score.scaling_actions += 1;
            }
        }
        run.replicas.push(sts.replicas());
    }
    (meter.finish(), capacity, run)
}

/// The forecaster's tick at `now` when a step has just closed: the forecast
/// from the window ending on the closed step.
fn tick_forecast(f: &Forecasting<'_>, folded: &Workloads, now: DateTime<Utc>) -> Option<Forecast> {
    let step = i64::try_from(f.forecaster.step.as_secs()).ok()?.max(1);
    if now.timestamp_subsec_nanos() != 0 || now.timestamp().rem_euclid(step) != 0 {
        return None;
    }
    let (steps, _) = folded.series(f.key)?;
    let closed = now - TimeDelta::seconds(step);
    let window = pas_forecaster::window(f.key, steps, closed, f.forecaster.max_fill, f.models, f.history)?;
    let (_, made) = pas_forecaster::forecast(vec![window], &f.forecaster.tick_settings(), now).pop()?;
    made.ok()
}

/// Perfect foresight at the target utilisation, pods started `startup`
/// ahead (each ready in time, however long it takes); `load` is the demand
/// at each tick.
fn oracle(
    (ticks, load): (&[DateTime<Utc>], &[f64]),
    config: &Config,
    settings: &Settings,
    tuning: &Tuning,
) -> (Score, Vec<f64>, Run) {
    let mut meter = Meter::new("oracle", settings.target_utilization, tuning.tick);
    let need: Vec<u32> = load.iter().map(|&d| needed(d, config, settings)).collect();
    let longest = config.pod.startup.mul_f64(1.0 + config.pod.startup_spread);
    let ahead = (longest.as_secs_f64() / tuning.tick.as_secs_f64()).ceil() as usize;
    let mut capacity = Vec::with_capacity(load.len());
    let mut run = Run {
        policy: "oracle".into(),
        at: ticks.to_vec(),
        replicas: Vec::with_capacity(load.len()),
        forecasts: Vec::new(),
    };
    let mut last = None;
    for (i, &d) in load.iter().enumerate() {
        // A pod needed within the start-up time already exists.
        let exists = need[i..(i + ahead + 1).min(need.len())]
            .iter()
            .copied()
            .max()
            .unwrap_or(need[i]);
        let cap = f64::from(need[i]) * config.pod.capacity_millicores;
        meter.tick(exists, d, cap);
        if last.is_some_and(|l| l != exists) {
            meter.score.scaling_actions += 1;
        }
        last = Some(exists);
        capacity.push(cap / 1000.0);
        run.replicas.push(exists);
    }
    (meter.finish(), capacity, run)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }

    #[test]
    fn demand_is_the_stated_rule_linear_between_points() {
        let trace = Trace {
            name: "t".into(),
            points: vec![(at(0), 50.0), (at(300), 100.0)],
        };
        let d = Demand::from_trace(&trace, 4, 1000.0, Shape::Linear);
        assert_eq!(d.at(at(0)), 2000.0, "50 % of 4 pods of 1000m");
        assert_eq!(d.at(at(150)), 3000.0);
        assert_eq!(d.at(at(300)), 4000.0);
        assert_eq!(d.at(at(900)), 4000.0, "the last point holds after the trace");
        let d = Demand::from_trace(&trace, 4, 1000.0, Shape::Step);
        assert_eq!(d.at(at(150)), 2000.0);
        assert_eq!(d.at(at(299)), 2000.0);
        assert_eq!(d.at(at(300)), 4000.0);
    }

    /// Issue 20: a JSON-lines trace of samples (`pas import prometheus`) is
    /// its demand: folded per step as the pipeline folds it, and given back
    /// exactly by the demand rule whatever the reference pods.
    #[test]
    fn a_trace_of_samples_is_its_demand() {
        let dir = tempfile::tempdir().unwrap();
        let sample = |t: i64, workload: &str, pod: &str, used: f64| {
            let s = pas_schemas::CpuSample {
                schema_version: pas_schemas::SCHEMA_VERSION,
                timestamp: DateTime::from_timestamp(1_700_000_000 + t, 0).unwrap(),
                node: "prometheus".into(),
                namespace: Some("shop".into()),
                workload: Some(workload.into()),
                pod: Some(pod.into()),
                cpu_used_millicores: used,
                cpu_requested_millicores: Some(500.0),
                cpu_capacity_millicores: None,
                cpu_throttled_ratio: None,
            };
            String::from_utf8(pas_schemas::encode(&s).unwrap()).unwrap()
        };
        let lines: Vec<String> = (0..10)
            .flat_map(|i| {
                [
                    sample(300 * i, "web", "web-0", 100.0 * i as f64),
                    sample(300 * i, "web", "web-1", 50.0),
                ]
            })
            .collect();
        let path = dir.path().join("web.jsonl");
        std::fs::write(&path, lines.join("\n")).unwrap();
        let config = Config {
            reference_pods: 3,
            ..Config::default()
        };
        let trace = read_trace(&path, &config).unwrap();
        assert_eq!(
            (
                trace.name.as_str(),
                trace.points.len(),
                trace.median_step_seconds()
            ),
            ("web", 10, 300)
        );
        let demand = Demand::from_trace(&trace, 3, config.pod.capacity_millicores, Shape::Step);
        for (i, (t, _)) in trace.points.iter().enumerate() {
            assert!((demand.at(*t) - (100.0 * i as f64 + 50.0)).abs() < 1e-9);
        }
        // Pods sampled out of phase (2 s apart, every 5 s) and a day's gap:
        // the step is each pod's 5 s, every step keeps both pods, and the
        // steps before the gap are kept.
        let mut lines = Vec::new();
        for i in (0..20).chain(17_300..17_320) {
            lines.push(sample(5 * i, "web", "web-0", 100.0));
            lines.push(sample(5 * i + 2, "web", "web-1", 50.0));
        }
        std::fs::write(&path, lines.join("\n")).unwrap();
        let gappy = read_trace(&path, &config).unwrap();
        assert_eq!((gappy.median_step_seconds(), gappy.points.len()), (5, 40));
        let demand = Demand::from_trace(&gappy, 3, config.pod.capacity_millicores, Shape::Step);
        assert!(
            gappy
                .points
                .iter()
                .all(|(t, _)| (demand.at(*t) - 150.0).abs() < 1e-9)
        );

        // Two workloads in one file: which one is meant is not guessed.
        std::fs::write(&path, format!("{}\n{}", lines[0], sample(0, "db", "db-0", 1.0))).unwrap();
        let e = read_trace(&path, &config).unwrap_err().to_string();
        assert!(
            e.contains("2 workloads (shop/db, shop/web)") || e.contains("2 workloads (shop/web, shop/db)"),
            "{e}"
        );
        std::fs::write(&path, "{not a sample").unwrap();
        assert!(
            read_trace(&path, &config)
                .unwrap_err()
                .to_string()
                .contains("line 1")
        );
    }

    #[test]
    fn the_meter_counts_violation_episodes_and_cost() {
        let mut m = Meter::new("x", 70.0, Duration::from_secs(5));
        // (replicas, demand, ready capacity)
        for (replicas, demand, ready) in [
            (2, 1000.0, 2000.0),
            (2, 2500.0, 2000.0),
            (3, 2100.0, 2000.0),
            (3, 1500.0, 3000.0),
            (3, 3200.0, 3000.0),
        ] {
            m.tick(replicas, demand, ready);
        }
        let s = m.finish();
        assert_eq!(s.violation_seconds, 15.0);
        assert_eq!(s.violations, 2);
        assert!((s.unserved_core_seconds - 0.8 * 5.0).abs() < 1e-9);
        assert!((s.replica_hours - 13.0 * 5.0 / 3600.0).abs() < 1e-12);
        assert_eq!(s.peak_replicas, 3);
        assert_eq!(s.mean_time_to_capacity_seconds, Some(7.5));
        assert_eq!(s.max_time_to_capacity_seconds, Some(10.0));
        // Used 1 + 2 + 2 + 1.5 + 3 cores, ready 2 + 2 + 2 + 3 + 3, for 5 s each.
        assert!((s.used_core_seconds - 9.5 * 5.0).abs() < 1e-9);
        assert!((s.ready_core_seconds - 12.0 * 5.0).abs() < 1e-9);
        assert!((s.slack.unwrap() - (1.0 - 9.5 / 12.0)).abs() < 1e-12);
    }

    #[test]
    fn the_oracle_starts_pods_ahead_and_never_violates_within_bounds() {
        let config = Config::default();
        // 1 core, then 5 cores from 300 s.
        let trace = Trace {
            name: "t".into(),
            points: vec![(at(0), 25.0), (at(299), 25.0), (at(300), 125.0), (at(900), 125.0)],
        };
        let demand = Demand::from_trace(&trace, 4, 1000.0, Shape::Linear);
        let ticks = ticks(at(0), at(900), Duration::from_secs(5));
        let load: Vec<f64> = ticks.iter().map(|&t| demand.at(t)).collect();
        let (score, capacity, run) = oracle((&ticks, &load), &config, &config.settings, &Tuning::default());
        let replicas = run.replicas;
        assert_eq!(score.violation_seconds, 0.0);
        // 1000m at 70 % needs 2 pods; 5000m needs 8.
        assert_eq!(replicas[0], 2);
        assert_eq!(
            replicas[(300 - 60) / 5],
            8,
            "started one start-up time before the rise"
        );
        assert_eq!(replicas[(300 - 65) / 5], 2);
        assert_eq!(capacity[(300 - 60) / 5], 2.0, "not ready before the rise");
        assert_eq!(capacity[300 / 5], 8.0);
    }

    #[test]
    fn a_trace_too_short_for_the_lstm_is_scored_on_the_naive_fallback() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../testdata/traces/nab-ec2_cpu_utilization_77c1ca.csv");
        let mut trace = Trace::read(&path).unwrap();
        trace.points.truncate(100);
        let r = run_trace(&trace, &Config::default(), &mut |_| {}).unwrap();
        assert_eq!(r.accuracy.model, "naive");
        let why = r.accuracy.training_error.as_deref().unwrap_or_default();
        assert!(why.contains("LSTM"), "the report says why: {why}");
        assert!(r.accuracy.forecasts > 0, "the fallback forecasts");
        assert_eq!(r.scores.len(), 5);
        // Too short to train at all: a clear error, not a panic.
        trace.points.truncate(40);
        let e = run_trace(&trace, &Config::default(), &mut |_| {}).unwrap_err();
        assert!(e.to_string().contains("too few"), "{e}");
    }
}
