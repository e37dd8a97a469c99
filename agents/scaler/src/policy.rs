//! The scaling policies: a pure function of the time, the workload's
//! settings, what is observed of its pods, its forecast and its history
//! ([`decide`]). Nothing here reads a clock or does I/O, so the live scaler
//! and experiments run the same code.
//!
//! The `hpa` rule is the Kubernetes HPA v2 algorithm
//! (`pkg/controller/podautoscaler` in kubernetes/kubernetes): the replica
//! calculator (tolerance, missing and not-ready pods), then
//! `stabilizeRecommendationWithBehaviors` (the highest recommendation of the
//! scale-down window, the lowest of the scale-up window), then
//! `convertDesiredReplicasWithBehaviorRate` (scaling policies per period and
//! min/max). The other policies replace only the first step.
//!
//! The `predictive` rule plans from **demand**, the workload's total CPU in
//! millicores: replicas = ceil(peak forecast demand over the lead time /
//! (target utilisation × one pod's CPU request)), which does not depend on
//! the current replicas (Crane and AWS predictive scaling do the same). A
//! pod that is CPU-throttled hides how much it wanted, so when a ready pod
//! is saturated the observed demand is a lower bound and the rule never
//! recommends fewer replicas than the HPA rule (which scales out at 100 %).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

/// Which rule recommends the replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum Policy {
    /// The HPA rule on the latest samples.
    Hpa,
    /// The older system's rule: one more replica when any predicted value
    /// passes the threshold (85 %); never fewer.
    Threshold,
    /// Replicas for the peak forecast demand over the lead time.
    Predictive,
    /// The larger of `predictive` and `hpa`: never scales in on a forecast alone.
    Hybrid,
}

impl Policy {
    /// Every policy.
    pub const ALL: [Policy; 4] = [Policy::Hpa, Policy::Threshold, Policy::Predictive, Policy::Hybrid];

    /// Its name in settings and decisions.
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Hpa => "hpa",
            Policy::Threshold => "threshold",
            Policy::Predictive => "predictive",
            Policy::Hybrid => "hybrid",
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Policy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let name = s.trim();
        Policy::ALL
            .into_iter()
            .find(|p| p.as_str() == name)
            .ok_or_else(|| {
                let all: Vec<&str> = Policy::ALL.iter().map(|p| p.as_str()).collect();
                format!("unknown policy {name:?}: the policies are {}", all.join(", "))
            })
    }
}

impl TryFrom<String> for Policy {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

/// Whether PAS acts on a workload or only shadows what scales it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum Mode {
    /// Shadow a workload an HPA targets, act on the others.
    Auto,
    /// Act: change the replicas (refused while an HPA targets the workload).
    Act,
    /// Decide and publish with outcome `shadow`, keep a scorecard against
    /// what runs, never change the replicas ([`crate::shadow`]).
    Shadow,
}

impl Mode {
    /// Every mode.
    pub const ALL: [Mode; 3] = [Mode::Auto, Mode::Act, Mode::Shadow];

    /// Its name in settings.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Auto => "auto",
            Mode::Act => "act",
            Mode::Shadow => "shadow",
        }
    }
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let name = s.trim();
        Mode::ALL
            .into_iter()
            .find(|m| m.as_str() == name)
            .ok_or_else(|| format!("unknown mode {name:?}: the modes are auto, act, shadow"))
    }
}

impl TryFrom<String> for Mode {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

/// The rule that decided a decision: its `rule` field, a metrics label, and
/// the list in docs/scaler.md (a test keeps that list equal to [`Rule::ALL`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    /// The HPA rule on the latest samples.
    Hpa,
    /// The HPA rule because the forecast is missing or stale.
    HpaFallback,
    /// Replicas for the peak forecast demand over the lead time.
    Predictive,
    /// The older system's rule: one more replica past the threshold.
    Threshold,
    /// The stabilisation window held the replicas.
    Stabilisation,
    /// A scale-up or scale-down policy limited the change.
    RateLimit,
    /// The minimum replicas.
    MinReplicas,
    /// The maximum replicas.
    MaxReplicas,
    /// No usable measurement: nothing changes.
    NoMetrics,
    /// Scaling is paused for the workload.
    Paused,
    /// The workload is scaled to zero: left alone.
    ScaledToZero,
    /// An HPA targets the workload: PAS refuses to fight it.
    HpaConflict,
}

impl Rule {
    /// Every rule, in the order docs/scaler.md lists them.
    pub const ALL: [Rule; 12] = [
        Rule::Hpa,
        Rule::HpaFallback,
        Rule::Predictive,
        Rule::Threshold,
        Rule::Stabilisation,
        Rule::RateLimit,
        Rule::MinReplicas,
        Rule::MaxReplicas,
        Rule::NoMetrics,
        Rule::Paused,
        Rule::ScaledToZero,
        Rule::HpaConflict,
    ];

    /// Its name in decisions, metrics and docs.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Hpa => "hpa",
            Rule::HpaFallback => "hpa-fallback",
            Rule::Predictive => "predictive",
            Rule::Threshold => "threshold",
            Rule::Stabilisation => "stabilisation",
            Rule::RateLimit => "rate-limit",
            Rule::MinReplicas => "min-replicas",
            Rule::MaxReplicas => "max-replicas",
            Rule::NoMetrics => "no-metrics",
            Rule::Paused => "paused",
            Rule::ScaledToZero => "scaled-to-zero",
            Rule::HpaConflict => "hpa-conflict",
        }
    }

    /// Whether the rule acted on a forecast.
    pub fn uses_forecast(self) -> bool {
        matches!(self, Rule::Predictive | Rule::Threshold)
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a rate policy counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RateKind {
    /// A number of pods per period.
    Pods,
    /// A percentage of the replicas at the start of the period.
    Percent,
}

/// One scaling policy (`HPAScalingPolicy`): at most `value` pods or percent per `period`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RatePolicy {
    /// `Pods` or `Percent`.
    #[serde(rename = "type")]
    pub kind: RateKind,
    /// Pods or percent.
    pub value: u32,
    /// The period the changes are counted over.
    #[serde(with = "humantime_serde")]
    pub period: Duration,
}

/// Which of several policies applies (`selectPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Select {
    /// The policy allowing the largest change.
    Max,
    /// The policy allowing the smallest change.
    Min,
    /// No scaling in this direction.
    Disabled,
}

/// Rules for one direction (`HPAScalingRules`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    /// Recommendations of this long ago are considered: the highest for
    /// scale-down, the lowest for scale-up.
    #[serde(with = "humantime_serde")]
    pub stabilization_window: Duration,
    /// Which policy applies when there are several.
    pub select_policy: Select,
    /// The rate limits.
    pub policies: Vec<RatePolicy>,
}

/// Scaling behaviour (`HorizontalPodAutoscalerBehavior`); the HPA's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Behavior {
    /// Scale-up: no window; 100 % or 4 pods per 15 s, whichever is more.
    pub scale_up: Rules,
    /// Scale-down: a 300 s window; 100 % per 15 s.
    pub scale_down: Rules,
}

impl Default for Behavior {
    fn default() -> Self {
        let period = Duration::from_secs(15);
        Behavior {
            scale_up: Rules {
                stabilization_window: Duration::ZERO,
                select_policy: Select::Max,
                policies: vec![
                    RatePolicy {
                        kind: RateKind::Percent,
                        value: 100,
                        period,
                    },
                    RatePolicy {
                        kind: RateKind::Pods,
                        value: 4,
                        period,
                    },
                ],
            },
            scale_down: Rules {
                stabilization_window: Duration::from_secs(300),
                select_policy: Select::Max,
                policies: vec![RatePolicy {
                    kind: RateKind::Percent,
                    value: 100,
                    period,
                }],
            },
        }
    }
}

impl Behavior {
    pub(crate) fn check(&self) -> Result<(), String> {
        for (name, rules) in [("scale_up", &self.scale_up), ("scale_down", &self.scale_down)] {
            if rules.select_policy != Select::Disabled && rules.policies.is_empty() {
                return Err(format!(
                    "behavior.{name} needs at least one policy unless select_policy is Disabled"
                ));
            }
            if rules.policies.iter().any(|p| p.value == 0 || p.period.is_zero()) {
                return Err(format!(
                    "behavior.{name}: every policy needs a value and a period above 0"
                ));
            }
        }
        Ok(())
    }
}

/// Per-workload settings: the config file's defaults, overridden by the
/// StatefulSet's `pas.io/` annotations ([`crate::settings`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Whether the scaler manages the workload at all.
    pub enabled: bool,
    /// `auto` (shadow when an HPA targets the workload, else act), `act`
    /// or `shadow`.
    pub mode: Mode,
    /// The policy.
    pub policy: Policy,
    /// Never fewer replicas.
    pub min_replicas: u32,
    /// Never more replicas.
    pub max_replicas: u32,
    /// Target CPU utilisation, percent of the pods' requests.
    pub target_utilization: f64,
    /// How long a new pod takes to serve; the lead time is this plus one tick.
    #[serde(with = "humantime_serde")]
    pub startup: Duration,
    /// Plan over the start-up measured from the workload's scale-outs once
    /// there are enough ([`StartupHistory`]); off: always `startup`.
    pub learn_startup: bool,
    /// The chance of demand above the plan the workload accepts: `predictive`
    /// plans on the (1 − risk) quantile of the forecast (0.05: its 95th
    /// percentile; 0.5: its median).
    pub risk: f64,
    /// Decide and publish, never change the StatefulSet.
    pub dry_run: bool,
    /// Decide nothing and change nothing.
    pub paused: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            enabled: false,
            mode: Mode::Auto,
            policy: Policy::Hybrid,
            min_replicas: 1,
            max_replicas: 10,
            target_utilization: 70.0,
            startup: Duration::from_secs(60),
            learn_startup: true,
            risk: DEFAULT_RISK,
            dry_run: false,
            paused: false,
        }
    }
}

impl Settings {
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.min_replicas == 0 || self.min_replicas > self.max_replicas {
            return Err(format!(
                "min_replicas ({}) must be at least 1 and at most max_replicas ({})",
                self.min_replicas, self.max_replicas
            ));
        }
        if !(self.risk > 0.0 && self.risk < 1.0) {
            return Err(format!(
                "risk must be between 0 and 1 (exclusive), not {}",
                self.risk
            ));
        }
        if !(self.target_utilization > 0.0 && self.target_utilization.is_finite()) {
            return Err(format!(
                "target_utilization must be above 0, not {}",
                self.target_utilization
            ));
        }
        Ok(())
    }
}

/// The default risk: plan on the forecast's calibrated median. The target
/// already leaves headroom, and on the shared traces the 90th percentile
/// (risk 0.1) cost more for the violation it saved than a lower target
/// would have (docs/results.md).
pub const DEFAULT_RISK: f64 = 0.5;

/// Settings that hold for every workload.
#[derive(Debug, Clone, PartialEq)]
pub struct Tuning {
    /// Ratios within this of 1 change nothing (the HPA's 0.1).
    pub tolerance: f64,
    /// The `threshold` policy's trigger, percent.
    pub threshold: f64,
    /// One tick; part of the lead time.
    pub tick: Duration,
    /// A forecast older than this (from the end of its input window) is not used.
    pub forecast_max_age: Duration,
    /// Stabilisation and rate limits.
    pub behavior: Behavior,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            tolerance: 0.1,
            threshold: 85.0,
            tick: Duration::from_secs(5),
            forecast_max_age: Duration::from_secs(30),
            behavior: Behavior::default(),
        }
    }
}

/// What is known of one pod the StatefulSet should have.
#[derive(Debug, Clone, PartialEq)]
pub struct PodUsage {
    /// Whether the pod counts as ready (the HPA also sets aside pods still
    /// starting).
    pub ready: bool,
    /// CPU used in millicores from a recent sample; `None` when the pod has
    /// no recent sample ("missing" to the HPA).
    pub used_millicores: Option<f64>,
    /// The pod's CPU request in millicores.
    pub requested_millicores: Option<f64>,
    /// Share of the sample's interval the pod was CPU-throttled, 0 to 1,
    /// where known.
    pub throttled: Option<f64>,
}

impl PodUsage {
    /// Whether the pod is ready and was throttled enough that its use
    /// understates its demand.
    pub fn saturated(&self) -> bool {
        self.ready
            && self
                .throttled
                .is_some_and(|t| t >= pas_schemas::SATURATED_THROTTLED_SHARE)
    }
}

/// The StatefulSet now.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    /// `spec.replicas` (of the scale subresource).
    pub replicas: u32,
    /// One entry per pod the HPA would count (running, not being deleted).
    pub pods: Vec<PodUsage>,
}

/// A forecast of the workload's demand.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ForecastView<'a> {
    /// Start of the last input step; value `i` is for the step starting
    /// `(i + 1)` steps later.
    pub window_end: DateTime<Utc>,
    /// Step length in seconds.
    pub step_seconds: f64,
    /// Predicted demand per step, millicores (all pods together).
    pub values: &'a [f64],
    /// Upper quantile per step, if the model gives one.
    pub upper: Option<&'a [f64]>,
    /// Its level, where there is one.
    pub quantile: Option<f64>,
    /// Calibrated quantiles per step, levels ascending, where given.
    pub quantiles: Option<&'a [pas_schemas::QuantileForecast]>,
    /// The per-pod CPU request the forecast assumed, millicores: used when
    /// no pod's request is observed.
    pub request_millicores: f64,
}

/// A forecast message as the policy reads it.
impl<'a> From<&'a pas_schemas::Forecast> for ForecastView<'a> {
    fn from(f: &'a pas_schemas::Forecast) -> ForecastView<'a> {
        ForecastView {
            window_end: f.window_end,
            step_seconds: f.step_seconds,
            values: &f.values,
            upper: f.upper.as_deref(),
            quantile: f.quantile,
            quantiles: f.quantiles.as_deref(),
            request_millicores: f.pod_request_millicores,
        }
    }
}

impl ForecastView<'_> {
    fn step(&self) -> TimeDelta {
        TimeDelta::milliseconds((self.step_seconds * 1000.0).round() as i64)
    }

    /// Whether the forecast is older than `max_age` at `now`, measured from
    /// the end of its input window.
    pub fn is_stale(&self, now: DateTime<Utc>, max_age: Duration) -> bool {
        let closed = self.window_end + self.step();
        now - closed > TimeDelta::from_std(max_age).unwrap_or(TimeDelta::MAX)
    }

    /// The values to plan on for quantile `level` and the level they are:
    /// the calibrated quantile of the lowest level at or above it (the
    /// highest there is above them all); without calibrated quantiles, the
    /// upper forecast for a level above the median and the point forecast
    /// otherwise.
    pub fn at_level(&self, level: f64) -> (&[f64], Option<f64>) {
        if let Some(qs) = self.quantiles.filter(|q| !q.is_empty()) {
            let q = qs
                .iter()
                .find(|q| q.q >= level - 1e-9)
                .or(qs.last())
                .filter(|q| q.values.len() == self.values.len());
            if let Some(q) = q {
                return (&q.values, Some(q.q));
            }
        }
        match self.upper {
            Some(u) if level > 0.5 + 1e-9 && u.len() == self.values.len() => (u, self.quantile),
            _ => (self.values, None),
        }
    }

    /// The highest value at quantile `level` ([`Self::at_level`]) of the
    /// steps that overlap `[now, now + lead]`, how many there were, and the
    /// level planned on (`None`: the point forecast).
    pub fn peak(&self, now: DateTime<Utc>, lead: Duration, level: f64) -> Option<(f64, usize, Option<f64>)> {
        let step = self.step();
        let until = now + TimeDelta::from_std(lead).unwrap_or(TimeDelta::MAX);
        let (values, planned) = self.at_level(level);
        let mut peak: Option<f64> = None;
        let mut steps = 0;
        for (i, &v) in values.iter().enumerate() {
            let start = self.window_end + step * (i as i32 + 1);
            if start + step <= now || start >= until {
                continue;
            }
            if v.is_finite() {
                peak = Some(peak.map_or(v, |p| p.max(v)));
                steps += 1;
            }
        }
        peak.map(|p| (p, steps, planned))
    }
}

/// Past recommendations (before stabilisation) of one value in a row:
/// `replicas` at every evaluation from `at` to `until`. A window's lowest
/// and highest recommendation depend on the newest time of each, so a run
/// of equal ones is kept as one, and the history changes (and is written
/// to KV `pas-scaler`) only when the value does, not at every evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recommendation {
    /// When first.
    pub at: DateTime<Utc>,
    /// Replicas recommended.
    pub replicas: u32,
    /// When last; absent: only at `at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
}

impl Recommendation {
    /// The newest evaluation that recommended it.
    pub fn last(&self) -> DateTime<Utc> {
        self.until.unwrap_or(self.at)
    }
}

/// A replica change that was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScaleEvent {
    /// When.
    pub at: DateTime<Utc>,
    /// Replicas added (positive) or removed (negative).
    pub change: i64,
}

/// What the stabilisation windows and rate limits remember of a workload.
/// The live scaler keeps it in KV `pas-scaler`, so a restart changes nothing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// Recommendations within the longer stabilisation window.
    pub recommendations: Vec<Recommendation>,
    /// Changes within the longest rate-limit period.
    pub scale_events: Vec<ScaleEvent>,
    /// How long this workload's scale-outs took to become ready.
    #[serde(default)]
    pub startup: StartupHistory,
    /// What PAS would have run beside what runs, and its scorecard, while
    /// it shadows the workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<crate::shadow::Shadow>,
}

impl History {
    /// Whether the two differ in more than how long the newest run of
    /// recommendations has lasted: what is written to KV `pas-scaler`, so a
    /// workload whose recommendation holds is not written at each
    /// evaluation.
    pub fn differs_from(&self, other: &History) -> bool {
        let stored = |h: &History| {
            let mut h = h.clone();
            if let Some(newest) = h.recommendations.last_mut() {
                newest.until = None;
            }
            // The scorecard changes at every evaluation: written on its own clock.
            h.shadow = None;
            h
        };
        stored(self) != stored(other)
    }

    /// The history as a new leader takes it over at `now`: the newest run of
    /// recommendations counts as lasting until now (its stored end is where
    /// it was last written, not where it ended), which keeps a scale-down
    /// stabilisation window at least as long as without the change of leader.
    pub fn resumed(mut self, now: DateTime<Utc>) -> History {
        if let Some(newest) = self.recommendations.last_mut() {
            newest.until = Some(newest.last().max(now));
        }
        self
    }
}

/// Scale-outs measured: from the change to the ready pods reaching the new
/// count (`readyReplicas`), the workload's real start-up time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StartupHistory {
    /// The scale-out being timed: when, and to how many replicas.
    pub pending: Option<(DateTime<Utc>, u32)>,
    /// The newest measurements, seconds, oldest first.
    pub seconds: Vec<f64>,
}

/// Measurements kept per workload.
pub const STARTUP_KEPT: usize = 10;
/// Measurements needed before they replace the configured start-up.
pub const STARTUP_NEEDED: usize = 3;
/// The quantile of the measurements planned on: most scale-outs are ready
/// within the estimate.
pub const STARTUP_QUANTILE: f64 = 0.9;

impl StartupHistory {
    /// Times the pending scale-out against the pods ready at `now`.
    pub fn observe(&mut self, now: DateTime<Utc>, replicas: u32, ready: u32) {
        let Some((since, to)) = self.pending else { return };
        if replicas < to {
            // Scaled in before it was ready: nothing to measure.
            self.pending = None;
        } else if ready >= to {
            let took = (now - since).num_milliseconds() as f64 / 1000.0;
            self.seconds.push(took.max(0.0));
            let excess = self.seconds.len().saturating_sub(STARTUP_KEPT);
            self.seconds.drain(..excess);
            self.pending = None;
        }
    }

    /// Starts timing a scale-out (a newer one replaces one still pending:
    /// its time would include the wait for the first).
    pub fn scaled(&mut self, now: DateTime<Utc>, from: u32, to: u32) {
        if to > from {
            self.pending = Some((now, to));
        } else if self.pending.is_some_and(|(_, p)| to < p) {
            self.pending = None;
        }
    }

    /// The start-up to plan on: the 90th percentile (nearest rank) of the
    /// measurements once there are enough, else `configured`.
    pub fn estimate(&self, configured: Duration) -> Duration {
        if self.seconds.len() < STARTUP_NEEDED {
            return configured;
        }
        let mut sorted = self.seconds.clone();
        sorted.sort_by(f64::total_cmp);
        let i = ((sorted.len() as f64 * STARTUP_QUANTILE).ceil() as usize).clamp(1, sorted.len()) - 1;
        Duration::from_secs_f64(sorted[i].clamp(0.0, 86_400.0))
    }
}

impl History {
    /// Remembers a change that was made (applied to the StatefulSet).
    pub fn record_scale(&mut self, now: DateTime<Utc>, from: u32, to: u32, behavior: &Behavior) {
        self.startup.scaled(now, from, to);
        if from != to {
            self.scale_events.push(ScaleEvent {
                at: now,
                change: i64::from(to) - i64::from(from),
            });
        }
        let longest = behavior
            .scale_up
            .policies
            .iter()
            .chain(&behavior.scale_down.policies)
            .map(|p| p.period)
            .max()
            .unwrap_or_default();
        let cutoff = now - TimeDelta::from_std(longest).unwrap_or(TimeDelta::MAX);
        self.scale_events.retain(|e| e.at > cutoff);
    }

    /// The pods added and removed within `period` before `now`.
    fn changes_within(&self, now: DateTime<Utc>, period: Duration) -> (i64, i64) {
        let cutoff = now - TimeDelta::from_std(period).unwrap_or(TimeDelta::MAX);
        self.scale_events
            .iter()
            .filter(|e| e.at > cutoff)
            .fold((0, 0), |(added, removed), e| {
                if e.change > 0 {
                    (added + e.change, removed)
                } else {
                    (added, removed - e.change)
                }
            })
    }
}

/// The outcome of [`decide`].
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Replicas to have.
    pub replicas: u32,
    /// The rule that decided.
    pub rule: Rule,
    /// Why, in one sentence.
    pub reason: String,
    /// Measured utilisation of the ready pods, percent.
    pub utilization: Option<f64>,
    /// Peak forecast demand over the lead time, millicores.
    pub predicted_peak: Option<f64>,
    /// The lead time planned over: the start-up (measured, else configured)
    /// plus one tick.
    pub lead: Duration,
    /// Whether the forecast was used.
    pub used_forecast: bool,
}

/// What a policy recommends before stabilisation and rate limits.
struct Raw {
    replicas: u32,
    rule: Rule,
    reason: String,
}

/// Decides the replicas for one workload at `now`, and records the
/// recommendation in `history` (call [`History::record_scale`] once the
/// change is made).
pub fn decide(
    now: DateTime<Utc>,
    settings: &Settings,
    tuning: &Tuning,
    observed: &Observed,
    forecast: Option<ForecastView<'_>>,
    history: &mut History,
) -> Decision {
    let current = observed.replicas;
    let ready = observed.pods.iter().filter(|p| p.ready).count() as u32;
    history.startup.observe(now, current, ready);
    let startup = if settings.learn_startup {
        history.startup.estimate(settings.startup)
    } else {
        settings.startup
    };
    let lead = startup + tuning.tick;
    if let Some(held) = held(settings, current) {
        return Decision { lead, ..held };
    }
    let target = settings.target_utilization;
    let fresh = forecast.filter(|f| !f.is_stale(now, tuning.forecast_max_age));
    // One pod's request: the observed pods' mean, else the forecast's.
    let requests: Vec<f64> = observed
        .pods
        .iter()
        .filter_map(|p| p.requested_millicores.filter(|r| *r > 0.0))
        .collect();
    let request = if requests.is_empty() {
        fresh.map(|f| f.request_millicores).filter(|r| *r > 0.0)
    } else {
        Some(requests.iter().sum::<f64>() / requests.len() as f64)
    };
    let basis = Basis {
        current,
        target,
        measured: hpa_replicas(current, &observed.pods, target, tuning.tolerance),
        forecast_given: forecast.is_some(),
        fresh,
        peak: fresh.and_then(|f| f.peak(now, lead, 1.0 - settings.risk)),
        lead,
        request,
        saturated: observed.pods.iter().any(PodUsage::saturated),
    };
    let utilization = basis.measured.as_ref().ok().map(|m| m.utilization);
    let peak = basis.peak.map(|p| p.0);
    match recommend(&basis, settings, tuning) {
        Ok(raw) => Decision {
            lead,
            ..guard(now, raw, current, settings, tuning, history, (utilization, peak))
        },
        Err(e) => {
            // Like the HPA without metrics: change nothing, remember nothing.
            let mut d = hold(
                current,
                Rule::NoMetrics,
                format!("{e}; keeping {current} replicas."),
            );
            d.predicted_peak = peak;
            d.lead = lead;
            d
        }
    }
}

/// A decision to keep `current` replicas.
fn hold(current: u32, rule: Rule, reason: String) -> Decision {
    Decision {
        replicas: current,
        rule,
        reason,
        utilization: None,
        predicted_peak: None,
        used_forecast: false,
        lead: Duration::ZERO,
    }
}

/// The decision when no policy applies: paused, scaled to zero, or outside
/// the bounds.
fn held(settings: &Settings, current: u32) -> Option<Decision> {
    if settings.paused {
        return Some(hold(
            current,
            Rule::Paused,
            "Scaling is paused for this workload.".into(),
        ));
    }
    if current == 0 {
        return Some(hold(
            current,
            Rule::ScaledToZero,
            "The StatefulSet has 0 replicas; scaling is off until it has one.".into(),
        ));
    }
    // The HPA moves a target outside its bounds straight back in, without
    // metrics, stabilisation or rate limits.
    if current > settings.max_replicas {
        return Some(
            hold(
                current,
                Rule::MaxReplicas,
                format!(
                    "{current} replicas is above the maximum of {}.",
                    settings.max_replicas
                ),
            )
            .with_replicas(settings.max_replicas),
        );
    }
    if current < settings.min_replicas {
        return Some(
            hold(
                current,
                Rule::MinReplicas,
                format!(
                    "{current} replicas is below the minimum of {}.",
                    settings.min_replicas
                ),
            )
            .with_replicas(settings.min_replicas),
        );
    }
    None
}

/// What a policy's recommendation is made from.
struct Basis<'a> {
    current: u32,
    target: f64,
    /// The HPA's replica calculator on the samples.
    measured: Result<Measured, String>,
    /// Whether a forecast was given at all (fresh or stale).
    forecast_given: bool,
    fresh: Option<ForecastView<'a>>,
    /// The peak demand of the fresh forecast over the lead time, its steps,
    /// and the quantile level it is (`None`: the point forecast).
    peak: Option<(f64, usize, Option<f64>)>,
    lead: std::time::Duration,
    /// One pod's CPU request, millicores.
    request: Option<f64>,
    /// Whether a ready pod is saturated (its demand only a lower bound).
    saturated: bool,
}

/// The policy's recommendation, before stabilisation and rate limits; an
/// error when there is no measurement to decide on.
fn recommend(b: &Basis<'_>, settings: &Settings, tuning: &Tuning) -> Result<Raw, String> {
    let hpa = |rule: Rule| -> Result<Raw, String> {
        let m = b.measured.as_ref().map_err(|e| e.clone())?;
        let why = if rule == Rule::HpaFallback {
            let age = if b.forecast_given {
                "the forecast is stale"
            } else {
                "no forecast"
            };
            format!("{age}, so the HPA rule: ")
        } else {
            String::new()
        };
        Ok(Raw {
            replicas: m.replicas,
            rule,
            reason: format!(
                "{why}CPU utilisation {:.0}% of requests against a target of {:.0}% recommends {}.",
                m.utilization, b.target, m.replicas
            ),
        })
    };
    let predictive = |(peak, steps, level): (f64, usize, Option<f64>)| -> Result<Raw, String> {
        let request = b.request.ok_or("No pod's CPU request is known")?;
        // ceil(peak / (target × request)): independent of the replicas now.
        let exact = peak / (b.target / 100.0 * request);
        let replicas = if (exact / f64::from(b.current.max(1)) - 1.0).abs() <= tuning.tolerance {
            b.current
        } else {
            ceil_u32(exact - 1e-9)
        };
        let mut raw = Raw {
            replicas,
            rule: Rule::Predictive,
            reason: format!(
                "Predicted peak demand{} {peak:.0}m over the next {}s ({steps} steps) at {:.0}% of {request:.0}m per pod recommends {replicas}.",
                level.map_or_else(String::new, |q| format!(" (quantile {q})")),
                b.lead.as_secs(),
                b.target
            ),
        };
        // A saturated pod's use is a lower bound: at least what the HPA
        // rule, which scales out at 100 %, asks for.
        if b.saturated
            && let Ok(m) = &b.measured
            && m.replicas > raw.replicas
        {
            raw.replicas = m.replicas;
            raw.reason = format!(
                "{} A pod is CPU-throttled, so demand is at least what it shows: utilisation {:.0}% recommends {}.",
                raw.reason, m.utilization, m.replicas
            );
        }
        Ok(raw)
    };

    match (settings.policy, b.peak) {
        (Policy::Hpa, _) => hpa(Rule::Hpa),
        (_, None) => hpa(Rule::HpaFallback),
        (Policy::Predictive, Some(p)) => predictive(p),
        (Policy::Threshold, Some(_)) => {
            // The older system's rule, on the utilisation the predicted
            // demand would put on the replicas there are.
            let request = b.request.ok_or("No pod's CPU request is known")?;
            let values = b.fresh.map(|f| f.values).unwrap_or_default();
            let peak = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let over = 100.0 * peak / (request * f64::from(b.current.max(1)));
            Ok(if over > tuning.threshold {
                Raw {
                    replicas: b.current + 1,
                    rule: Rule::Threshold,
                    reason: format!(
                        "A predicted value of {over:.0}% passes {:.0}%: one more replica.",
                        tuning.threshold
                    ),
                }
            } else {
                Raw {
                    replicas: b.current,
                    rule: Rule::Threshold,
                    reason: format!(
                        "No predicted value passes {:.0}% (highest {over:.0}%).",
                        tuning.threshold
                    ),
                }
            })
        }
        (Policy::Hybrid, Some(p)) => {
            let pred = predictive(p)?;
            Ok(match hpa(Rule::Hpa) {
                Ok(reactive) if reactive.replicas >= pred.replicas => reactive,
                Ok(_) => pred,
                // No metrics: the forecast may add replicas, never remove them.
                Err(_) if pred.replicas >= b.current => pred,
                Err(e) => Raw {
                    replicas: b.current,
                    rule: Rule::NoMetrics,
                    reason: format!(
                        "{e}; a forecast alone never scales in ({} recommended).",
                        pred.replicas
                    ),
                },
            })
        }
    }
}

/// Stabilisation and rate limits on a recommendation: the decision.
fn guard(
    now: DateTime<Utc>,
    raw: Raw,
    current: u32,
    settings: &Settings,
    tuning: &Tuning,
    history: &mut History,
    (utilization, predicted_peak): (Option<f64>, Option<f64>),
) -> Decision {
    let used_forecast = raw.rule.uses_forecast();

    let b = &tuning.behavior;
    let stabilised = stabilise(now, raw.replicas, current, b, history);
    let (limited, limit_rule) = limit_rate(now, stabilised, current, settings, b, history);
    let (rule, reason) = if limited != stabilised {
        let why = match limit_rule {
            Rule::RateLimit if limited > current => "the scale-up policies allow",
            Rule::RateLimit => "the scale-down policies allow",
            Rule::MaxReplicas => "the maximum is",
            _ => "the minimum is",
        };
        (
            limit_rule,
            format!("{} Limited to {limited}: {why} {limited}.", raw.reason),
        )
    } else if stabilised != raw.replicas {
        let window = if stabilised > raw.replicas {
            &b.scale_down
        } else {
            &b.scale_up
        };
        (
            Rule::Stabilisation,
            format!(
                "{} Stabilised at {stabilised}: the {} recommendation of the last {}s.",
                raw.reason,
                if stabilised > raw.replicas {
                    "highest"
                } else {
                    "lowest"
                },
                window.stabilization_window.as_secs()
            ),
        )
    } else {
        (raw.rule, raw.reason)
    };
    Decision {
        replicas: limited,
        rule,
        reason,
        utilization,
        predicted_peak,
        used_forecast,
        lead: Duration::ZERO,
    }
}

impl Decision {
    fn with_replicas(mut self, replicas: u32) -> Self {
        self.replicas = replicas;
        self
    }
}

fn ceil_u32(x: f64) -> u32 {
    if x.is_finite() && x > 0.0 {
        x.ceil().min(f64::from(u32::MAX)) as u32
    } else {
        0
    }
}

/// The replica calculator's answer.
#[derive(Debug, Clone, PartialEq)]
struct Measured {
    replicas: u32,
    /// Utilisation of the ready pods with samples, percent.
    utilization: f64,
    ready_pods: u32,
}

/// `GetResourceReplicas` of the HPA's replica calculator for CPU utilisation.
fn hpa_replicas(current: u32, pods: &[PodUsage], target: f64, tolerance: f64) -> Result<Measured, String> {
    if pods.is_empty() {
        return Err("No pods to measure".into());
    }
    // Pods with a sample and ready; with a sample and not ready; without one.
    let mut ready: Vec<(f64, f64)> = Vec::new();
    let mut unready: Vec<f64> = Vec::new();
    let mut missing: Vec<f64> = Vec::new();
    for pod in pods {
        let request = pod
            .requested_millicores
            .filter(|r| *r > 0.0)
            .ok_or("A pod has no CPU request")?;
        // As the HPA groups them: pods not ready (pending or starting) are
        // set aside, ready pods without a sample are missing.
        match (pod.ready, pod.used_millicores) {
            (false, _) => unready.push(request),
            (true, None) => missing.push(request),
            (true, Some(used)) => ready.push((used, request)),
        }
    }
    if ready.is_empty() {
        return Err("No recent samples from ready pods".into());
    }
    let ratio_of = |metrics: &[(f64, f64)]| {
        let used: f64 = metrics.iter().map(|m| m.0).sum();
        let requested: f64 = metrics.iter().map(|m| m.1).sum();
        (used / requested * 100.0 / target, used / requested * 100.0)
    };
    let (ratio, utilization) = ratio_of(&ready);
    let ready_pods = ready.len() as u32;
    let scale_up_with_unready = !unready.is_empty() && ratio > 1.0;
    if !scale_up_with_unready && missing.is_empty() {
        let replicas = if (1.0 - ratio).abs() <= tolerance {
            current
        } else {
            ceil_u32(ratio * f64::from(ready_pods))
        };
        return Ok(Measured {
            replicas,
            utilization,
            ready_pods,
        });
    }
    let mut metrics = ready.clone();
    if !missing.is_empty() {
        // Scaling down: pods without samples count as fully busy; scaling
        // up: as idle. Either way they damp the change.
        if ratio < 1.0 {
            let fallback = target.max(100.0) / 100.0;
            metrics.extend(missing.iter().map(|r| (r * fallback, *r)));
        } else if ratio > 1.0 {
            metrics.extend(missing.iter().map(|r| (0.0, *r)));
        }
    }
    if scale_up_with_unready {
        metrics.extend(unready.iter().map(|r| (0.0, *r)));
    }
    let (new_ratio, _) = ratio_of(&metrics);
    if (1.0 - new_ratio).abs() <= tolerance
        || (ratio < 1.0 && new_ratio > 1.0)
        || (ratio > 1.0 && new_ratio < 1.0)
    {
        return Ok(Measured {
            replicas: current,
            utilization,
            ready_pods,
        });
    }
    let replicas = ceil_u32(new_ratio * metrics.len() as f64);
    if (new_ratio < 1.0 && replicas > current) || (new_ratio > 1.0 && replicas < current) {
        return Ok(Measured {
            replicas: current,
            utilization,
            ready_pods,
        });
    }
    Ok(Measured {
        replicas,
        utilization,
        ready_pods,
    })
}

/// `stabilizeRecommendationWithBehaviors`: records `raw` and returns it
/// bounded by the lowest recommendation of the scale-up window and the
/// highest of the scale-down window.
fn stabilise(now: DateTime<Utc>, raw: u32, current: u32, b: &Behavior, history: &mut History) -> u32 {
    let window = |d: Duration| now - TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX);
    // A workload seen for the first time starts its scale-down window at the
    // current replicas, as the HPA does.
    if history.recommendations.is_empty() && !b.scale_down.stabilization_window.is_zero() {
        history.recommendations.push(Recommendation {
            at: now,
            replicas: current,
            until: None,
        });
    }
    let up_from = window(b.scale_up.stabilization_window);
    let down_from = window(b.scale_down.stabilization_window);
    let mut up = raw;
    let mut down = raw;
    for r in &history.recommendations {
        if r.last() > up_from {
            up = up.min(r.replicas);
        }
        if r.last() > down_from {
            down = down.max(r.replicas);
        }
    }
    let mut recommendation = current;
    if recommendation < up {
        recommendation = up;
    }
    if recommendation > down {
        recommendation = down;
    }
    let keep_from = up_from.min(down_from);
    history.recommendations.retain(|r| r.last() > keep_from);
    match history.recommendations.last_mut() {
        Some(newest) if newest.replicas == raw => newest.until = Some(now),
        _ => history.recommendations.push(Recommendation {
            at: now,
            replicas: raw,
            until: None,
        }),
    }
    recommendation
}

/// `convertDesiredReplicasWithBehaviorRate`: the scaling policies and min/max.
fn limit_rate(
    now: DateTime<Utc>,
    desired: u32,
    current: u32,
    settings: &Settings,
    b: &Behavior,
    history: &History,
) -> (u32, Rule) {
    let current_i = i64::from(current);
    if desired > current {
        let limit = match b.scale_up.select_policy {
            Select::Disabled => current_i,
            select => {
                let proposals = b.scale_up.policies.iter().map(|p| {
                    let (added, removed) = history.changes_within(now, p.period);
                    let start = current_i - added + removed;
                    match p.kind {
                        RateKind::Pods => start + i64::from(p.value),
                        RateKind::Percent => {
                            (start as f64 * (1.0 + f64::from(p.value) / 100.0)).ceil() as i64
                        }
                    }
                });
                if select == Select::Max {
                    proposals.max()
                } else {
                    proposals.min()
                }
                .unwrap_or(current_i)
            }
        }
        .max(current_i);
        let (maximum, rule) = if i64::from(settings.max_replicas) > limit {
            (limit, Rule::RateLimit)
        } else {
            (i64::from(settings.max_replicas), Rule::MaxReplicas)
        };
        if i64::from(desired) > maximum {
            return (maximum as u32, rule);
        }
    } else if desired < current {
        let limit = match b.scale_down.select_policy {
            Select::Disabled => current_i,
            select => {
                let proposals = b.scale_down.policies.iter().map(|p| {
                    let (added, removed) = history.changes_within(now, p.period);
                    let start = current_i + removed - added;
                    match p.kind {
                        RateKind::Pods => start - i64::from(p.value),
                        RateKind::Percent => (start as f64 * (1.0 - f64::from(p.value) / 100.0)) as i64,
                    }
                });
                if select == Select::Max {
                    proposals.min()
                } else {
                    proposals.max()
                }
                .unwrap_or(current_i)
            }
        }
        .min(current_i);
        let (minimum, rule) = if i64::from(settings.min_replicas) < limit {
            (limit, Rule::RateLimit)
        } else {
            (i64::from(settings.min_replicas), Rule::MinReplicas)
        };
        if i64::from(desired) < minimum {
            return (minimum as u32, rule);
        }
    }
    // Unchanged: the caller names the rule only when the replicas differ.
    (desired, Rule::RateLimit)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs of equal recommendations give exactly the stabilisation that
    /// one entry per evaluation gave (the HPA's own bookkeeping, kept here
    /// as the reference), over a long random sequence with windows on both
    /// sides; and the history changes only when the recommendation does.
    #[test]
    fn runs_of_recommendations_stabilise_as_one_entry_per_evaluation_and_change_only_with_the_value() {
        let mut b = Behavior::default();
        b.scale_up.stabilization_window = Duration::from_secs(45);
        b.scale_down.stabilization_window = Duration::from_secs(300);
        // A small LCG: the sequence repeats, and no crate is needed.
        let mut seed: u64 = 7;
        let mut next = |n: u64| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) % n
        };
        let mut history = History::default();
        let mut reference: Vec<(DateTime<Utc>, u32)> = Vec::new();
        let start = DateTime::from_timestamp(1_780_000_000, 0).unwrap();
        let (mut raw, mut current) = (4u32, 4u32);
        let (mut writes, mut changes) = (0, 0);
        for i in 0..3_000i64 {
            let now = start + TimeDelta::seconds(15 * i + next(3) as i64);
            if next(10) == 0 {
                raw = 1 + next(11) as u32;
            }
            let window = |d: Duration| now - TimeDelta::from_std(d).unwrap();
            if reference.is_empty() {
                reference.push((now, current));
            }
            let (up_from, down_from) = (
                window(b.scale_up.stabilization_window),
                window(b.scale_down.stabilization_window),
            );
            let up = reference
                .iter()
                .filter(|r| r.0 > up_from)
                .fold(raw, |m, r| m.min(r.1));
            let down = reference
                .iter()
                .filter(|r| r.0 > down_from)
                .fold(raw, |m, r| m.max(r.1));
            let expected = current.max(up).min(down);
            reference.retain(|r| r.0 > up_from.min(down_from));
            reference.push((now, raw));

            let before = history.clone();
            let got = stabilise(now, raw, current, &b, &mut history);
            assert_eq!(got, expected, "evaluation {i}");
            writes += usize::from(history.differs_from(&before));
            changes += usize::from(before.recommendations.last().map(|r| r.replicas) != Some(raw));
            current = got;
        }
        // A write for each new value, and for each old run leaving the windows.
        assert!(
            writes >= changes && writes <= 2 * changes + 1,
            "{writes} writes for {changes} changes of value"
        );
        assert!(writes < 700, "{writes} writes in 3,000 evaluations");
        // A new leader counts the newest run as lasting until it took over.
        let later = start + TimeDelta::seconds(15 * 3_000 + 60);
        let resumed = history.clone().resumed(later);
        assert_eq!(resumed.recommendations.last().unwrap().last(), later);
        assert!(!resumed.differs_from(&history));
    }

    /// [`Rule::ALL`] holds every variant once, in order: the match has no
    /// wildcard, so a new variant does not compile until it is placed here.
    #[test]
    fn all_rules_are_listed() {
        let place = |r: Rule| match r {
            Rule::Hpa => 0,
            Rule::HpaFallback => 1,
            Rule::Predictive => 2,
            Rule::Threshold => 3,
            Rule::Stabilisation => 4,
            Rule::RateLimit => 5,
            Rule::MinReplicas => 6,
            Rule::MaxReplicas => 7,
            Rule::NoMetrics => 8,
            Rule::Paused => 9,
            Rule::ScaledToZero => 10,
            Rule::HpaConflict => 11,
        };
        let places: Vec<usize> = Rule::ALL.iter().map(|r| place(*r)).collect();
        assert_eq!(places, (0..12).collect::<Vec<_>>());
    }

    /// docs/scaler.md lists every rule, in [`Rule::ALL`]'s order, and no other.
    #[test]
    fn the_documented_rules_are_the_rules() {
        let docs =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/scaler.md")).unwrap();
        let table = docs
            .split("<!-- rules -->")
            .nth(1)
            .unwrap()
            .split("<!-- /rules -->")
            .next()
            .unwrap();
        let documented: Vec<&str> = table
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split('`').next())
            .collect();
        let code: Vec<&str> = Rule::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(documented, code);
    }

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    fn pods(n: u32, utilization: f64) -> Vec<PodUsage> {
        (0..n)
            .map(|_| PodUsage {
                ready: true,
                used_millicores: Some(utilization * 10.0),
                requested_millicores: Some(1000.0),
                throttled: None,
            })
            .collect()
    }

    fn observed(replicas: u32, utilization: f64) -> Observed {
        Observed {
            replicas,
            pods: pods(replicas, utilization),
        }
    }

    fn settings(policy: Policy, target: f64) -> Settings {
        Settings {
            enabled: true,
            policy,
            min_replicas: 1,
            max_replicas: 100,
            target_utilization: target,
            // The table's forecast cases plan on the upper quantile.
            risk: 0.1,
            ..Settings::default()
        }
    }

    /// No stabilisation, no rate limits: the replica calculator alone.
    fn unlimited() -> Tuning {
        let free = Rules {
            stabilization_window: Duration::ZERO,
            select_policy: Select::Max,
            policies: vec![RatePolicy {
                kind: RateKind::Percent,
                value: 10_000,
                period: Duration::from_secs(15),
            }],
        };
        Tuning {
            behavior: Behavior {
                scale_up: free.clone(),
                scale_down: free,
            },
            ..Tuning::default()
        }
    }

    struct Case {
        name: &'static str,
        policy: Policy,
        target: f64,
        observed: Observed,
        forecast: Option<(i64, Vec<f64>, Option<Vec<f64>>)>,
        want: u32,
        rule: Rule,
    }

    /// The replica calculator and the policies, one evaluation each, with
    /// stabilisation and rate limits out of the way. Forecasts are given as
    /// (window end relative to now in seconds, values, upper), each value the
    /// utilisation the demand would put on the current replicas (turned into
    /// demand below: × replicas × 1000m / 100).
    #[test]
    fn one_evaluation() {
        let mixed = |ready: &[(bool, Option<f64>)]| Observed {
            replicas: ready.len() as u32,
            pods: ready
                .iter()
                .map(|(r, used)| PodUsage {
                    ready: *r,
                    used_millicores: *used,
                    requested_millicores: Some(1000.0),
                    throttled: None,
                })
                .collect(),
        };
        let cases = [
            // HPA docs, algorithm details: 200m used against a target of
            // 100m doubles the replicas...
            Case {
                name: "docs: ratio 2 doubles",
                policy: Policy::Hpa,
                target: 50.0,
                observed: observed(3, 100.0),
                forecast: None,
                want: 6,
                rule: Rule::Hpa,
            },
            // ... and 50m against 100m halves them.
            Case {
                name: "docs: ratio 0.5 halves",
                policy: Policy::Hpa,
                target: 50.0,
                observed: observed(4, 25.0),
                forecast: None,
                want: 2,
                rule: Rule::Hpa,
            },
            Case {
                name: "within tolerance above",
                policy: Policy::Hpa,
                target: 50.0,
                observed: observed(4, 54.9),
                forecast: None,
                want: 4,
                rule: Rule::Hpa,
            },
            Case {
                name: "within tolerance below",
                policy: Policy::Hpa,
                target: 50.0,
                observed: observed(4, 45.1),
                forecast: None,
                want: 4,
                rule: Rule::Hpa,
            },
            Case {
                name: "just outside tolerance",
                policy: Policy::Hpa,
                target: 50.0,
                observed: observed(4, 56.0),
                forecast: None,
                want: 5,
                rule: Rule::Hpa,
            },
            // A ready pod without a sample counts as fully busy on a scale-down:
            // 3 pods at 20% want 2, but (600 + 1000) / 4000 = 40% → ceil(0.8 × 4) = 4.
            Case {
                name: "missing pod damps scale-down",
                policy: Policy::Hpa,
                target: 50.0,
                observed: mixed(&[
                    (true, Some(200.0)),
                    (true, Some(200.0)),
                    (true, Some(200.0)),
                    (true, None),
                ]),
                forecast: None,
                want: 4,
                rule: Rule::Hpa,
            },
            // ... and as idle on a scale-up: 2 pods at 100% of a 50% target want 4,
            // (2000 + 0) / 3000 = 67% → ceil(1.33 × 3) = 4.
            Case {
                name: "missing pod on scale-up",
                policy: Policy::Hpa,
                target: 50.0,
                observed: mixed(&[(true, Some(1000.0)), (true, Some(1000.0)), (true, None)]),
                forecast: None,
                want: 4,
                rule: Rule::Hpa,
            },
            // Not-ready pods count as idle on a scale-up: 2 ready at 60% of a 50%
            // target want 3 of 4, but with 2 idle the ratio turns below 1: no change.
            Case {
                name: "unready pods reverse the scale-up",
                policy: Policy::Hpa,
                target: 50.0,
                observed: mixed(&[
                    (true, Some(600.0)),
                    (true, Some(600.0)),
                    (false, Some(900.0)),
                    (false, Some(900.0)),
                ]),
                forecast: None,
                want: 4,
                rule: Rule::Hpa,
            },
            Case {
                name: "no samples at all",
                policy: Policy::Hpa,
                target: 50.0,
                observed: mixed(&[(true, None), (true, None)]),
                forecast: None,
                want: 2,
                rule: Rule::NoMetrics,
            },
            // Predictive: the peak of the upper quantile over the lead time
            // (60 s start-up + 5 s tick = steps overlapping the next 65 s).
            // The window ended 5 s ago, so value i covers now + 5i s .. + 5 s.
            Case {
                name: "predictive uses upper over the lead time",
                policy: Policy::Predictive,
                target: 50.0,
                observed: observed(2, 50.0),
                forecast: Some((-5, vec![50.0; 10], Some([vec![60.0; 9], vec![150.0]].concat()))),
                want: 6,
                rule: Rule::Predictive,
            },
            Case {
                name: "predictive ignores steps beyond the lead time",
                policy: Policy::Predictive,
                target: 50.0,
                observed: observed(2, 50.0),
                forecast: Some((-5, [vec![50.0; 14], vec![400.0]].concat(), None)),
                want: 2,
                rule: Rule::Predictive,
            },
            Case {
                name: "predictive scales in on the forecast",
                policy: Policy::Predictive,
                target: 50.0,
                observed: observed(4, 50.0),
                forecast: Some((-5, vec![20.0; 10], None)),
                want: 2,
                rule: Rule::Predictive,
            },
            Case {
                name: "stale forecast falls back to hpa",
                policy: Policy::Predictive,
                target: 50.0,
                observed: observed(4, 50.0),
                forecast: Some((-60, vec![20.0; 30], None)),
                want: 4,
                rule: Rule::HpaFallback,
            },
            Case {
                name: "no forecast falls back to hpa",
                policy: Policy::Hybrid,
                target: 50.0,
                observed: observed(2, 100.0),
                forecast: None,
                want: 4,
                rule: Rule::HpaFallback,
            },
            Case {
                name: "hybrid never scales in on a forecast alone",
                policy: Policy::Hybrid,
                target: 50.0,
                observed: observed(4, 50.0),
                forecast: Some((-5, vec![20.0; 10], None)),
                want: 4,
                rule: Rule::Hpa,
            },
            Case {
                name: "hybrid scales in when both agree, to the larger",
                policy: Policy::Hybrid,
                target: 50.0,
                observed: observed(8, 12.5),
                forecast: Some((-5, vec![25.0; 20], None)),
                want: 4,
                rule: Rule::Predictive,
            },
            Case {
                name: "hybrid scales out ahead of the load",
                policy: Policy::Hybrid,
                target: 50.0,
                observed: observed(2, 40.0),
                forecast: Some((-5, vec![100.0; 20], None)),
                want: 4,
                rule: Rule::Predictive,
            },
            Case {
                name: "threshold adds one above 85",
                policy: Policy::Threshold,
                target: 50.0,
                observed: observed(3, 10.0),
                forecast: Some((-5, [vec![10.0; 9], vec![86.0]].concat(), None)),
                want: 4,
                rule: Rule::Threshold,
            },
            Case {
                name: "threshold never removes",
                policy: Policy::Threshold,
                target: 50.0,
                observed: observed(3, 10.0),
                forecast: Some((-5, vec![10.0; 10], None)),
                want: 3,
                rule: Rule::Threshold,
            },
        ];
        let now = t(1000);
        for case in cases {
            let values;
            let upper;
            let demand = |v: &Vec<f64>| -> Vec<f64> {
                v.iter()
                    .map(|u| u * f64::from(case.observed.replicas) * 10.0)
                    .collect()
            };
            let view = match &case.forecast {
                Some((end, v, u)) => {
                    values = demand(v);
                    upper = u.as_ref().map(demand);
                    Some(ForecastView {
                        window_end: now + TimeDelta::seconds(*end),
                        step_seconds: 5.0,
                        values: &values,
                        upper: upper.as_deref(),
                        quantile: Some(0.9),
                        quantiles: None,
                        request_millicores: 1000.0,
                    })
                }
                None => None,
            };
            let d = decide(
                now,
                &settings(case.policy, case.target),
                &unlimited(),
                &case.observed,
                view,
                &mut History::default(),
            );
            assert_eq!(
                (d.replicas, d.rule),
                (case.want, case.rule),
                "{}: {}",
                case.name,
                d.reason
            );
            assert!(!d.reason.is_empty());
        }
    }

    /// Runs evaluations in order; each applies its decision as the live
    /// scaler does, and returns the replicas after each.
    fn run(
        settings: &Settings,
        tuning: &Tuning,
        start: u32,
        steps: &[(i64, f64)],
        history: &mut History,
    ) -> Vec<(u32, Rule)> {
        let mut current = start;
        steps
            .iter()
            .map(|(at, utilization)| {
                let d = decide(
                    t(*at),
                    settings,
                    tuning,
                    &observed(current, *utilization),
                    None,
                    history,
                );
                history.record_scale(t(*at), current, d.replicas, &tuning.behavior);
                current = d.replicas;
                (current, d.rule)
            })
            .collect()
    }

    /// HPA docs, "Default behavior": scale up by 100% or 4 pods per 15 s,
    /// whichever is more.
    #[test]
    fn default_scale_up_rate() {
        let tuning = Tuning::default();
        let s = settings(Policy::Hpa, 50.0);
        // 1 replica at 1000% wants 20: max(2, 1 + 4) = 5 in the first period.
        let got = run(
            &s,
            &tuning,
            1,
            &[(0, 1000.0), (5, 200.0), (15, 200.0), (30, 100.0)],
            &mut History::default(),
        );
        assert_eq!(got[0], (5, Rule::RateLimit));
        // Still inside the period that began at 1: no more.
        assert_eq!(got[1], (5, Rule::RateLimit));
        // Next period: 5 at 200% wants 20; max(10, 9) = 10.
        assert_eq!(got[2], (10, Rule::RateLimit));
        // 10 at 100% wants 20: max(20, 14) = 20.
        assert_eq!(got[3], (20, Rule::Hpa));
    }

    /// HPA docs, "Scaling Policies": a scale-down policy of 10% per minute
    /// takes 80 replicas to 72, and the next minute 72 to 64 (7.2 rounds to 8).
    #[test]
    fn docs_percent_scale_down_policy() {
        let mut tuning = Tuning::default();
        tuning.behavior.scale_down = Rules {
            stabilization_window: Duration::ZERO,
            select_policy: Select::Max,
            policies: vec![RatePolicy {
                kind: RateKind::Percent,
                value: 10,
                period: Duration::from_secs(60),
            }],
        };
        let s = settings(Policy::Hpa, 50.0);
        // 80 pods at 6.25% of a 50% target want 10.
        let got = run(
            &s,
            &tuning,
            80,
            &[(0, 6.25), (30, 6.9), (61, 7.0)],
            &mut History::default(),
        );
        assert_eq!(
            got,
            vec![
                (72, Rule::RateLimit),
                (72, Rule::RateLimit),
                (64, Rule::RateLimit)
            ]
        );
    }

    /// HPA docs, "Stabilization window": with the default 300 s window the
    /// highest recommendation of the last five minutes holds.
    #[test]
    fn scale_down_stabilisation() {
        let tuning = Tuning::default();
        let s = settings(Policy::Hpa, 50.0);
        let mut history = History::default();
        // First sight at 4: the window starts at 4. Load drops at once.
        let got = run(
            &s,
            &tuning,
            4,
            &[(0, 100.0), (10, 12.5), (200, 12.5), (309, 12.5), (311, 50.0)],
            &mut history,
        );
        assert_eq!(got[0], (8, Rule::Hpa));
        assert_eq!(got[1], (8, Rule::Stabilisation));
        assert_eq!(got[2], (8, Rule::Stabilisation));
        // At 309 the 8 of time 0 has left the window; only recommendations
        // of 2 remain.
        assert_eq!(got[3], (2, Rule::Hpa));
        assert_eq!(got[4], (2, Rule::Hpa));
    }

    #[test]
    fn a_new_workload_waits_a_window_before_scaling_in() {
        let tuning = Tuning::default();
        let s = settings(Policy::Hpa, 50.0);
        let got = run(
            &s,
            &tuning,
            8,
            &[(0, 12.5), (299, 12.5), (301, 12.5)],
            &mut History::default(),
        );
        assert_eq!(
            got,
            vec![(8, Rule::Stabilisation), (8, Rule::Stabilisation), (2, Rule::Hpa)]
        );
    }

    #[test]
    fn min_and_max() {
        let tuning = unlimited();
        let mut s = settings(Policy::Hpa, 50.0);
        s.min_replicas = 3;
        s.max_replicas = 6;
        assert_eq!(
            run(&s, &tuning, 4, &[(0, 500.0)], &mut History::default()),
            vec![(6, Rule::MaxReplicas)]
        );
        assert_eq!(
            run(&s, &tuning, 4, &[(0, 1.0)], &mut History::default()),
            vec![(3, Rule::MinReplicas)]
        );
        // Outside the bounds already: moved straight in, whatever the load.
        assert_eq!(
            run(&s, &tuning, 9, &[(0, 500.0)], &mut History::default()),
            vec![(6, Rule::MaxReplicas)]
        );
        assert_eq!(
            run(&s, &tuning, 1, &[(0, 1.0)], &mut History::default()),
            vec![(3, Rule::MinReplicas)]
        );
    }

    #[test]
    fn disabled_direction_and_pause_and_zero() {
        let mut tuning = unlimited();
        tuning.behavior.scale_down.select_policy = Select::Disabled;
        let s = settings(Policy::Hpa, 50.0);
        assert_eq!(
            run(&s, &tuning, 4, &[(0, 1.0)], &mut History::default()),
            vec![(4, Rule::RateLimit)]
        );
        let mut paused = s.clone();
        paused.paused = true;
        assert_eq!(
            run(&paused, &tuning, 4, &[(0, 500.0)], &mut History::default()),
            vec![(4, Rule::Paused)]
        );
        assert_eq!(
            run(&s, &tuning, 0, &[(0, 500.0)], &mut History::default()),
            vec![(0, Rule::ScaledToZero)]
        );
    }

    /// A history that went through JSON (the KV bucket) decides the same.
    #[test]
    fn history_round_trips() {
        let tuning = Tuning::default();
        let s = settings(Policy::Hpa, 50.0);
        let mut history = History::default();
        run(&s, &tuning, 4, &[(0, 100.0)], &mut history);
        let mut restored: History = serde_json::from_slice(&serde_json::to_vec(&history).unwrap()).unwrap();
        assert_eq!(restored, history);
        assert_eq!(
            run(&s, &tuning, 8, &[(100, 12.5)], &mut restored),
            vec![(8, Rule::Stabilisation)]
        );
        // A history lost in a restart would have started a new window at 8
        // and scaled in at 400 instead of at 300.
        assert_eq!(
            run(&s, &tuning, 8, &[(301, 12.5)], &mut restored),
            vec![(2, Rule::Hpa)]
        );
    }

    #[test]
    fn the_startup_estimate_is_a_high_percentile_of_recent_scale_outs() {
        let configured = Duration::from_secs(60);
        let mut h = StartupHistory::default();
        assert_eq!(h.estimate(configured), configured);
        // A scale-out ready 100 s later is measured once.
        h.scaled(t(0), 2, 4);
        h.observe(t(50), 4, 3);
        h.observe(t(100), 4, 4);
        h.observe(t(105), 4, 4);
        assert_eq!(h.seconds, [100.0]);
        // Scaled in before it was ready: not measured.
        h.scaled(t(200), 4, 6);
        h.scaled(t(210), 6, 3);
        h.observe(t(300), 3, 3);
        assert_eq!(h.seconds, [100.0]);
        assert_eq!(h.estimate(configured), configured, "too few to trust");
        for took in [90, 110, 300, 95, 105, 100, 120, 80, 100, 130] {
            h.scaled(t(1000), 1, 2);
            h.observe(t(1000 + took), 2, 2);
        }
        assert_eq!(h.seconds.len(), STARTUP_KEPT, "only the newest are kept");
        assert_eq!(h.seconds[0], 90.0);
        // Nearest-rank 90th percentile of the ten: the ninth smallest.
        assert_eq!(h.estimate(configured), Duration::from_secs(130));
        // It is what decide plans over, and says so.
        let mut history = History {
            startup: h,
            ..History::default()
        };
        let d = decide(
            t(5000),
            &settings(Policy::Hpa, 50.0),
            &unlimited(),
            &observed(2, 50.0),
            None,
            &mut history,
        );
        assert_eq!(d.lead, Duration::from_secs(135));
    }

    #[test]
    fn peak_and_staleness() {
        let now = t(100);
        let values = [10.0, 20.0, 30.0, 40.0];
        let f = ForecastView {
            window_end: t(90),
            step_seconds: 5.0,
            values: &values,
            upper: None,
            quantile: None,
            quantiles: None,
            request_millicores: 1000.0,
        };
        // Value 0 covers 95..100 (past), value 1 100..105, value 2 105..110.
        assert_eq!(f.peak(now, Duration::from_secs(10), 0.9), Some((30.0, 2, None)));
        assert_eq!(f.peak(t(200), Duration::from_secs(10), 0.9), None);
        // The upper quantile counts only for a level above the median.
        let upper = [15.0, 25.0, 45.0, 40.0];
        let f = ForecastView {
            upper: Some(&upper),
            quantile: Some(0.9),
            ..f
        };
        assert_eq!(
            f.peak(now, Duration::from_secs(10), 0.9),
            Some((45.0, 2, Some(0.9)))
        );
        assert_eq!(f.peak(now, Duration::from_secs(10), 0.5), Some((30.0, 2, None)));
        // Calibrated quantiles: the lowest level at or above the one asked
        // for, the highest above them all.
        let q = |q: f64, values: [f64; 4]| pas_schemas::QuantileForecast {
            q,
            values: values.to_vec(),
        };
        let quantiles = [
            q(0.5, [9.0, 19.0, 29.0, 39.0]),
            q(0.9, [20.0, 30.0, 50.0, 60.0]),
            q(0.95, [25.0, 35.0, 60.0, 70.0]),
        ];
        let f = ForecastView {
            quantiles: Some(&quantiles),
            ..f
        };
        let lead = Duration::from_secs(10);
        assert_eq!(f.peak(now, lead, 0.5), Some((29.0, 2, Some(0.5))));
        assert_eq!(f.peak(now, lead, 0.8), Some((50.0, 2, Some(0.9))));
        assert_eq!(f.peak(now, lead, 0.95), Some((60.0, 2, Some(0.95))));
        assert_eq!(f.peak(now, lead, 0.99), Some((60.0, 2, Some(0.95))));
        assert!(!f.is_stale(now, Duration::from_secs(30)));
        assert!(f.is_stale(t(126), Duration::from_secs(30)));
    }

    /// One evaluation at `now` on a fresh forecast of `values` (1000m pods),
    /// with stabilisation and rate limits out of the way.
    fn decide_on(policy: Policy, target: f64, o: &Observed, values: &[f64]) -> Decision {
        let now = t(1000);
        let view = ForecastView {
            window_end: now - TimeDelta::seconds(5),
            step_seconds: 5.0,
            values,
            upper: None,
            quantile: None,
            quantiles: None,
            request_millicores: 1000.0,
        };
        decide(
            now,
            &settings(policy, target),
            &unlimited(),
            o,
            Some(view),
            &mut History::default(),
        )
    }

    /// The predictive rule plans from demand: the same forecast recommends
    /// the same replicas whatever the replicas are now (2000m at 50 % of
    /// 1000m is 4 pods from 2, 4 or 8), where a rule on utilisation would
    /// have halved its forecast after a doubling and followed itself.
    #[test]
    fn predictive_is_independent_of_the_current_replicas() {
        let values = vec![2000.0; 20];
        for current in [2, 4, 8] {
            // The pods share the demand, so their utilisation follows the replicas.
            let o = observed(current, 200.0 / f64::from(current));
            let d = decide_on(Policy::Predictive, 50.0, &o, &values);
            assert_eq!(
                (d.replicas, d.rule),
                (4, Rule::Predictive),
                "from {current}: {}",
                d.reason
            );
            assert_eq!(d.predicted_peak, Some(2000.0));
        }
        // The request divides: pods of 500m need twice as many.
        let o = Observed {
            replicas: 4,
            pods: pods(4, 100.0)
                .into_iter()
                .map(|p| PodUsage {
                    requested_millicores: Some(500.0),
                    ..p
                })
                .collect(),
        };
        assert_eq!(decide_on(Policy::Predictive, 50.0, &o, &values).replicas, 8);
        // With no pod observed, the forecast's request is used.
        let none = Observed {
            replicas: 3,
            pods: Vec::new(),
        };
        let d = decide_on(Policy::Hybrid, 50.0, &none, &values);
        assert_eq!((d.replicas, d.rule), (4, Rule::Predictive), "{}", d.reason);
    }

    /// A throttled pod's use is a lower bound of its demand: the predictive
    /// rule then asks for at least what the HPA rule does (it scales out at
    /// 100 %), however low the forecast; an unthrottled pod changes nothing.
    #[test]
    fn a_saturated_workload_scales_out_at_least_as_the_hpa_does() {
        // 4 pods at their 1000m limit.
        let at_limit = |throttled: f64| Observed {
            replicas: 4,
            pods: pods(4, 100.0)
                .into_iter()
                .map(|p| PodUsage {
                    throttled: Some(throttled),
                    ..p
                })
                .collect(),
        };
        // Forecast to stay at the 4000m they show: 4000m at 70 % of 1000m
        // is 6 pods (5.71), throttled or not.
        let calm = decide_on(Policy::Predictive, 70.0, &at_limit(0.0), &[4000.0; 20]);
        assert_eq!(calm.replicas, 6, "{}", calm.reason);
        // Forecast to fall to 1600m: 3 pods, unless the pods are throttled,
        // when 100 % against 70 % asks for ceil(4 × 1.43) = 6.
        let low = [1600.0; 20];
        let throttled = decide_on(Policy::Predictive, 70.0, &at_limit(0.3), &low);
        assert_eq!(
            (throttled.replicas, throttled.rule),
            (6, Rule::Predictive),
            "{}",
            throttled.reason
        );
        assert!(throttled.reason.contains("throttled"), "{}", throttled.reason);
        let unthrottled = decide_on(Policy::Predictive, 70.0, &at_limit(0.01), &low);
        assert_eq!(unthrottled.replicas, 3, "1600m at 70 %: {}", unthrottled.reason);
    }
}
