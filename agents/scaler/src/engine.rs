//! The decision engine of the leading scaler: each workload's forecast,
//! samples and history in, an [`Evaluation`] out (the decision, applied
//! through the [`Cluster`], and the history to keep). It holds no NATS
//! handle, so it is tested without a server; [`crate::outputs`] publishes
//! what it returns and keeps the histories in KV `pas-scaler`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use pas_schemas::{Forecast, ForecastRef, Outcome, SCHEMA_VERSION, ScaleDecision};

use crate::cluster::{Cluster, ClusterError, EventKind, Workload};
use crate::policy::{ForecastView, History, Mode, Observed, PodUsage, Rule, Settings, Tuning};
use crate::samples::{Key, PodSample, Pods};
use crate::shadow::{Reading, Shadow};
use crate::{Config, Metrics, policy, settings};

/// Samples older than this are dropped; workloads silent for
/// [`FORGET_AFTER`] are forgotten.
const KEEP_SAMPLES: TimeDelta = TimeDelta::minutes(5);
const FORGET_AFTER: Duration = Duration::from_secs(900);

/// What one evaluation produced, for the stage to publish and keep.
#[derive(Debug, Clone)]
pub(crate) struct Evaluation {
    /// The decision, for `pas.scale.<namespace>.<workload>`.
    pub(crate) decision: ScaleDecision,
    /// The rule that made it.
    pub(crate) rule: Rule,
    /// The workload's history after it, for KV `pas-scaler` (none when
    /// nothing was decided on it: a refusal for an HPA).
    pub(crate) history: Option<(Key, History)>,
    /// Whether the history changed ([`History::differs_from`]): only then
    /// is it written (or when a write failed since).
    pub(crate) changed: bool,
    /// A Kubernetes Event to record on the workload.
    pub(crate) event: Option<Event>,
}

/// A Kubernetes Event about a decision.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    pub(crate) workload: Workload,
    pub(crate) kind: EventKind,
    pub(crate) reason: &'static str,
    pub(crate) note: String,
}

/// The leader's state and what it decides with.
pub(crate) struct Engine<C> {
    pub(crate) cluster: C,
    config: Config,
    tuning: Tuning,
    metrics: Metrics,
    /// Unix ms until which this scaler holds the lease.
    until: Arc<AtomicI64>,
    pub(crate) pods: Arc<Mutex<Pods>>,
    forecasts: HashMap<Key, (Forecast, Instant)>,
    /// Histories in memory; one missing is read as the last leader left it.
    pub(crate) histories: HashMap<Key, History>,
    evaluated: HashMap<Key, Instant>,
    problems: HashMap<Key, Vec<String>>,
    /// Workloads refused for an HPA, so the Event is recorded once.
    refused: HashMap<Key, String>,
}

/// A workload that is managed and not refused: what the policy decides on.
struct Managed {
    workload: Workload,
    settings: Settings,
    decision: ScaleDecision,
    /// Decide beside what scales it, never patch ([`crate::shadow`]).
    shadow: bool,
}

impl<C: Cluster> Engine<C> {
    /// An engine that acts on `cluster` while the lease is held until `until`.
    pub(crate) fn new(cluster: C, until: Arc<AtomicI64>, config: &Config, metrics: &Metrics) -> Engine<C> {
        Engine {
            cluster,
            tuning: config.tuning(),
            config: config.clone(),
            metrics: metrics.clone(),
            until,
            pods: Arc::default(),
            forecasts: HashMap::new(),
            histories: HashMap::new(),
            evaluated: HashMap::new(),
            problems: HashMap::new(),
            refused: HashMap::new(),
        }
    }

    /// Whether this scaler may act now.
    pub(crate) fn leading(&self) -> bool {
        Utc::now().timestamp_millis() < self.until.load(Ordering::Relaxed)
    }

    /// Takes a forecast in; its workload when it is to be evaluated now (a
    /// fresh forecast, not older than the one held).
    pub(crate) fn on_forecast(&mut self, forecast: Forecast, now: DateTime<Utc>) -> Option<Key> {
        self.metrics.forecast();
        let key = (forecast.namespace.clone(), forecast.workload.clone());
        if self
            .forecasts
            .get(&key)
            .is_some_and(|(f, _)| f.window_end > forecast.window_end)
        {
            self.metrics.ignored("older_forecast");
            return None;
        }
        let stale = ForecastView::from(&forecast).is_stale(now, self.config.forecast_max_age);
        self.forecasts.insert(key.clone(), (forecast, Instant::now()));
        if stale {
            // A backlog after a pause: the tick decides on samples instead.
            self.metrics.ignored("stale_forecast");
            return None;
        }
        Some(key)
    }

    /// Forgets the silent workloads; the others, to evaluate if
    /// [`Engine::is_due`].
    pub(crate) fn workloads(&mut self, now: DateTime<Utc>) -> Vec<Key> {
        let mut keys: HashSet<Key> = {
            let mut pods = self.pods.lock().unwrap_or_else(|p| p.into_inner());
            for samples in pods.values_mut() {
                samples.retain(|_, s| now - s.at < KEEP_SAMPLES);
            }
            pods.retain(|_, samples| !samples.is_empty());
            pods.keys().cloned().collect()
        };
        self.forecasts
            .retain(|_, (_, received)| received.elapsed() < FORGET_AFTER);
        keys.extend(self.forecasts.keys().cloned());
        self.evaluated.retain(|k, _| keys.contains(k));
        self.histories.retain(|k, _| keys.contains(k));
        self.problems.retain(|k, _| keys.contains(k));
        self.refused.retain(|k, _| keys.contains(k));
        self.metrics.set_workloads(keys.len());
        keys.into_iter().collect()
    }

    /// Whether `key` was not evaluated for (nine tenths of) a tick; asked
    /// just before evaluating, so a slow sweep still picks up what fell due.
    pub(crate) fn is_due(&self, key: &Key) -> bool {
        let due = self.config.tick.mul_f64(0.9);
        self.evaluated.get(key).is_none_or(|at| at.elapsed() >= due)
    }

    /// Evaluates one workload at `now`: the policy's decision, applied
    /// unless dry-run. `load` reads the workload's history as the last
    /// leader left it when this engine holds none; `None` from it (the read
    /// did not answer) leaves the workload for the next tick.
    pub(crate) async fn evaluate(
        &mut self,
        key: &Key,
        now: DateTime<Utc>,
        load: impl AsyncFnOnce(&Key) -> Option<History>,
    ) -> Option<Evaluation> {
        if !self.leading() {
            return None;
        }
        self.evaluated.insert(key.clone(), Instant::now());
        let Managed {
            workload,
            settings,
            mut decision,
            shadow,
        } = match self.managed(key, now).await? {
            Ok(managed) => managed,
            Err(refusal) => return Some(refusal),
        };
        let observed = self.observe(&workload, now);
        let forecast = self.forecasts.get(key).map(|(f, _)| f.clone());
        let view = forecast.as_ref().map(ForecastView::from);
        let mut history = match self.histories.remove(key) {
            Some(history) => history,
            // Tried again next tick; the other workloads go on.
            None => load(key).await?.resumed(now),
        };
        if !shadow && history.shadow.take().is_some() {
            // Acting now: PAS's would-be changes are not changes that were made.
            history.scale_events.clear();
        }
        let before = history.clone();
        // In shadow mode PAS decides on its own would-be pods (their count,
        // readiness and changes, as if it had acted all along) and learns
        // the start-up from what runs.
        let shadowed =
            shadow.then(|| Self::shadow_before(&workload, &observed, &settings, now, &mut history));
        let policy_view = match &shadowed {
            Some((_, _, pods)) => pods,
            None => &observed,
        };
        let d = policy::decide(now, &settings, &self.tuning, policy_view, view, &mut history);
        decision.replicas_after = d.replicas;
        decision.rule = d.rule.as_str().into();
        decision.reason = d.reason.clone();
        decision.utilization_percent = d.utilization;
        decision.predicted_peak_millicores = d.predicted_peak;
        // A start-up of more than a day is not a lead time to report.
        decision.lead_seconds = Some(d.lead.as_secs_f64().min(pas_schemas::MAX_STEP_SECONDS));
        if d.used_forecast {
            decision.forecast = forecast.map(|f| ForecastRef {
                model: f.model,
                window_end: f.window_end,
            });
        }
        decision.outcome = if let Some((reading, learned, _)) = shadowed {
            decision.hpa = workload.hpa.clone();
            self.shadow_after(&workload, &reading, d.replicas, d.lead, now, &mut history);
            history.startup = learned;
            Outcome::Shadow
        } else if d.replicas == workload.replicas {
            Outcome::Unchanged
        } else if settings.dry_run {
            Outcome::DryRun
        } else {
            self.apply(&workload, d.replicas, now, &mut history, &mut decision.reason)
                .await
        };
        // Written only when it changed (not for a recommendation that
        // held), and a shadow's scorecard every `shadow_write_every`.
        let changed = history.differs_from(&before)
            || history
                .shadow
                .as_ref()
                .is_some_and(|s| s.due(now, self.config.shadow_write_every));
        if changed && let Some(s) = history.shadow.as_mut() {
            s.written = Some(now);
        }
        self.histories.insert(key.clone(), history.clone());
        let event = match decision.outcome {
            Outcome::Applied => Some(Event {
                kind: EventKind::Normal,
                reason: "SuccessfulRescale",
                note: format!("New size: {}; {}", d.replicas, d.reason),
                workload,
            }),
            Outcome::Refused => Some(Event {
                kind: EventKind::Warning,
                reason: "FailedRescale",
                note: format!("Could not scale to {}: {}", d.replicas, decision.reason),
                workload,
            }),
            _ => None,
        };
        Some(Evaluation {
            decision,
            rule: d.rule,
            history: Some((key.clone(), history)),
            changed,
            event,
        })
    }

    /// The workload, its settings and a decision to fill in when PAS manages
    /// it; `Err` with the refusal when an HPA targets it; `None` when there
    /// is nothing to decide (no StatefulSet, not enabled, the read failed).
    async fn managed(&mut self, key: &Key, now: DateTime<Utc>) -> Option<Result<Managed, Evaluation>> {
        let (namespace, name) = key;
        let workload = match self.cluster.workload(namespace, name).await {
            Ok(Some(w)) => w,
            Ok(None) => {
                self.metrics.ignored("no_workload");
                return None;
            }
            Err(error) => {
                tracing::warn!(%namespace, workload = %name, %error, "Reading the workload failed.");
                self.metrics.kube_error(error.kind());
                return None;
            }
        };
        let (settings, problems) = settings::from_annotations(&self.config.defaults, &workload.annotations);
        if self.problems.get(key) != Some(&problems) {
            if !problems.is_empty() {
                self.metrics.invalid_settings();
                tracing::warn!(%namespace, workload = %name, ?problems, "Some pas.io/ annotations are invalid; their defaults apply.");
            }
            self.problems.insert(key.clone(), problems.clone());
        }
        if !settings.enabled {
            return None;
        }
        let mut decision = ScaleDecision {
            schema_version: SCHEMA_VERSION,
            timestamp: now,
            namespace: namespace.clone(),
            workload: name.clone(),
            replicas_before: workload.replicas,
            replicas_after: workload.replicas,
            policy: settings.policy.to_string(),
            rule: String::new(),
            reason: String::new(),
            outcome: Outcome::Unchanged,
            hpa: None,
            forecast: None,
            utilization_percent: None,
            predicted_peak_millicores: None,
            target_utilization_percent: Some(settings.target_utilization),
            lead_seconds: None,
            warnings: problems,
        };
        let shadow = match (settings.mode, &workload.hpa) {
            (Mode::Shadow, _) | (Mode::Auto, Some(_)) => true,
            (Mode::Act | Mode::Auto, _) => false,
        };
        let hpa = match workload.hpa.clone() {
            Some(hpa) if !shadow => hpa,
            _ => {
                self.refused.remove(key);
                return Some(Ok(Managed {
                    workload,
                    settings,
                    decision,
                    shadow,
                }));
            }
        };
        decision.rule = Rule::HpaConflict.as_str().into();
        decision.hpa = Some(hpa.clone());
        decision.reason = format!(
            "HorizontalPodAutoscaler {hpa} targets this {}; PAS leaves it alone in mode act (pas.io/mode: shadow or auto compares beside it).",
            workload.kind
        );
        decision.outcome = Outcome::Refused;
        let mut event = None;
        if self.refused.get(key) != Some(&hpa) {
            tracing::warn!(%namespace, workload = %name, %hpa, "An HPA targets this workload; not acting on it.");
            self.refused.insert(key.clone(), hpa);
            event = Some(Event {
                kind: EventKind::Warning,
                reason: "ManagedByHPA",
                note: decision.reason.clone(),
                workload,
            });
        }
        Some(Err(Evaluation {
            decision,
            rule: Rule::HpaConflict,
            history: None,
            changed: false,
            event,
        }))
    }

    /// Before a shadow decision: what runs read as a [`Reading`], the
    /// start-up learned from it (the HPA's scale-outs, timed until
    /// `readyReplicas` reaches the new count), and PAS's own would-be pods
    /// for the policy, carrying the demand: PAS's count, ready as
    /// [`Shadow`] follows them, the demand spread over the ready ones.
    fn shadow_before(
        workload: &Workload,
        observed: &Observed,
        settings: &Settings,
        now: DateTime<Utc>,
        history: &mut History,
    ) -> (Reading, crate::policy::StartupHistory, Observed) {
        let requests: Vec<f64> = observed
            .pods
            .iter()
            .filter_map(|p| p.requested_millicores.filter(|r| *r > 0.0))
            .collect();
        let sampled: Vec<f64> = observed.pods.iter().filter_map(|p| p.used_millicores).collect();
        let reading = Reading {
            demand_millicores: sampled.iter().sum(),
            request_millicores: (!requests.is_empty())
                .then(|| requests.iter().sum::<f64>() / requests.len() as f64),
            replicas: workload.replicas,
            ready: workload.ready_replicas,
        };
        // A scale-out of what runs, timed from now (when PAS saw it) unless
        // its pods are ready already (then the time is not known).
        if let Some(s) = &history.shadow
            && s.last.is_some()
            && s.actual < workload.replicas
            && workload.ready_replicas < workload.replicas
        {
            history.startup.scaled(now, s.actual, workload.replicas);
        }
        history
            .startup
            .observe(now, workload.replicas, workload.ready_replicas);
        let learned = history.startup.clone();
        // The policy's own timing would time PAS's pods, which never start.
        history.startup.pending = None;
        let startup = if settings.learn_startup {
            learned.estimate(settings.startup)
        } else {
            settings.startup
        };
        let shadow = history
            .shadow
            .get_or_insert_with(|| Shadow::start(now, &reading, startup, workload.hpa.clone()));
        if shadow.replicas == 0 && workload.replicas > 0 {
            // Scaled to zero when PAS began (a KEDA ScaledObject's minimum):
            // PAS goes on from what runs now, as an HPA would.
            shadow.resume(now, &reading, startup);
        }
        let pods = shadow.observed(now, &reading, sampled.len(), observed.pods.len());
        (reading, learned, pods)
    }

    /// After a shadow decision of `decided` replicas: the change counts
    /// against PAS's own rate limits, the interval since the last
    /// evaluation is scored, and PAS's pods follow the decision.
    fn shadow_after(
        &self,
        workload: &Workload,
        reading: &Reading,
        decided: u32,
        lead: Duration,
        now: DateTime<Utc>,
        history: &mut History,
    ) {
        let startup = lead.saturating_sub(self.tuning.tick);
        let from = history.shadow.as_ref().map_or(workload.replicas, |s| s.replicas);
        history.record_scale(now, from, decided, &self.tuning.behavior);
        let Some(shadow) = history.shadow.as_mut() else {
            return;
        };
        shadow.hpa = workload.hpa.clone();
        shadow.actual = workload.replicas;
        shadow.namespace.clone_from(&workload.namespace);
        shadow.workload.clone_from(&workload.name);
        shadow.step(
            now,
            reading,
            decided,
            startup,
            self.tuning.tick * Shadow::MAX_GAP_TICKS,
            self.config.shadow_window,
        );
    }

    /// Scales `workload` to `replicas`: `Applied` (and the change recorded
    /// in `history`), or `Refused` with the error added to `reason`.
    async fn apply(
        &self,
        workload: &Workload,
        replicas: u32,
        now: DateTime<Utc>,
        history: &mut History,
        reason: &mut String,
    ) -> Outcome {
        match self.cluster.scale(workload, replicas).await {
            Ok(()) => {
                history.record_scale(now, workload.replicas, replicas, &self.tuning.behavior);
                Outcome::Applied
            }
            Err(error) => {
                self.metrics.kube_error(error.kind());
                *reason = format!("{reason} Not applied: {error}.");
                let (namespace, name) = (&workload.namespace, &workload.name);
                match &error {
                    ClusterError::Forbidden(_) => {
                        tracing::error!(%namespace, workload = %name, %error, "The scaler may not scale this StatefulSet.");
                    }
                    _ => tracing::warn!(%namespace, workload = %name, %error, "Scaling failed."),
                }
                Outcome::Refused
            }
        }
    }

    /// The pods the StatefulSet should have, with their latest samples.
    fn observe(&self, workload: &Workload, now: DateTime<Utc>) -> Observed {
        let max_age = TimeDelta::from_std(self.config.sample_max_age).unwrap_or(TimeDelta::MAX);
        let pods = self.pods.lock().unwrap_or_else(|p| p.into_inner());
        let samples = pods.get(&(workload.namespace.clone(), workload.name.clone()));
        let fresh: Vec<(&String, &PodSample)> = samples
            .map(|m| m.iter().filter(|(_, s)| now - s.at <= max_age).collect())
            .unwrap_or_default();
        // Pod `<name>-<ordinal>` fills its slot; samples of pods named
        // otherwise (a replayed trace) fill the free slots in order.
        let n = workload.replicas as usize;
        let mut slots: Vec<Option<&PodSample>> = vec![None; n];
        let mut others = Vec::new();
        for (pod, sample) in fresh {
            let ordinal = pod
                .strip_prefix(&workload.name)
                .and_then(|rest| rest.strip_prefix('-'))
                .and_then(|o| o.parse::<usize>().ok());
            match ordinal {
                Some(o) if o < n && slots[o].is_none() => slots[o] = Some(sample),
                Some(_) => {} // a pod being removed
                None => others.push(sample),
            }
        }
        let mut others = others.into_iter();
        for slot in slots.iter_mut().filter(|s| s.is_none()) {
            *slot = others.next();
        }
        Observed {
            replicas: workload.replicas,
            pods: slots
                .into_iter()
                .enumerate()
                .map(|(ordinal, sample)| PodUsage {
                    // StatefulSet pods start in order, so the highest
                    // ordinals are the ones not ready yet.
                    ready: (ordinal as u32) < workload.ready_replicas,
                    used_millicores: sample.map(|s| s.used),
                    requested_millicores: sample
                        .and_then(|s| s.requested)
                        .or(workload.cpu_request_millicores),
                    throttled: sample.and_then(|s| s.throttled),
                })
                .collect(),
        }
    }

    /// Records an Event on the workload (after its history was queued, so
    /// a slow Event call never delays keeping it).
    pub(crate) async fn record(&self, event: Event) {
        let Event {
            workload,
            kind,
            reason,
            note,
        } = event;
        if let Err(error) = self.cluster.event(&workload, kind, reason, note).await {
            self.metrics.kube_error(error.kind());
            tracing::warn!(namespace = %workload.namespace, workload = %workload.name, %error, "Recording an Event failed.");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::cluster::Simulated;

    /// An engine holding the lease, over a simulated cluster with
    /// StatefulSet shop/web: `replicas` pods of 1000m, managed at a 50 %
    /// target, each pod using `used` millicores.
    fn engine(replicas: u32, used: f64) -> (Engine<Simulated>, Simulated, Key) {
        let cluster = Simulated::new();
        let annotations = BTreeMap::from([
            ("pas.io/enabled".to_string(), "true".to_string()),
            ("pas.io/target-utilization".to_string(), "50".to_string()),
        ]);
        cluster.insert("shop", "web", replicas, annotations, Some(1000.0));
        let until = Arc::new(AtomicI64::new(i64::MAX));
        let engine = Engine::new(cluster.clone(), until, &Config::default(), &Metrics::default());
        let now = Utc::now();
        for pod in 0..replicas {
            crate::samples::record_sample(
                &engine.pods,
                pas_schemas::CpuSample {
                    schema_version: SCHEMA_VERSION,
                    timestamp: now,
                    node: "n".into(),
                    namespace: Some("shop".into()),
                    workload: Some("web".into()),
                    pod: Some(format!("web-{pod}")),
                    cpu_used_millicores: used,
                    cpu_requested_millicores: Some(1000.0),
                    cpu_capacity_millicores: None,
                    cpu_throttled_ratio: None,
                },
            );
        }
        (engine, cluster, ("shop".into(), "web".into()))
    }

    /// Evaluates `key` at `at`, the history read back empty.
    async fn evaluate_at(engine: &mut Engine<Simulated>, key: &Key, at: DateTime<Utc>) -> Option<Evaluation> {
        engine
            .evaluate(key, at, async |_: &Key| Some(History::default()))
            .await
    }

    #[tokio::test]
    async fn a_busy_workload_is_scaled_and_its_decision_and_history_returned() {
        let (mut engine, cluster, key) = engine(2, 1000.0);
        let e = evaluate_at(&mut engine, &key, Utc::now())
            .await
            .expect("a decision");
        // 100 % against a 50 % target: twice the pods; no forecast, so the HPA rule.
        assert_eq!((e.decision.replicas_after, e.rule), (4, Rule::HpaFallback));
        assert_eq!(e.decision.outcome, Outcome::Applied);
        assert_eq!(cluster.replicas("shop", "web"), Some(4));
        let (kept, _) = e.history.expect("the history to keep");
        assert_eq!(kept, key);
        // The Event is left to the caller, after the history is queued.
        assert_eq!(e.event.map(|ev| ev.reason), Some("SuccessfulRescale"));
    }

    /// Issue 19: the history goes to KV only when it changed. At 50 % of
    /// the target nothing moves: after the first evaluation, none is kept
    /// until the load changes the recommendation.
    #[tokio::test]
    async fn a_steady_workload_keeps_no_history_until_its_recommendation_changes() {
        let (mut engine, cluster, key) = engine(4, 500.0);
        let start = Utc::now();
        let mut kept = Vec::new();
        for i in 0..6 {
            let e = evaluate_at(&mut engine, &key, start + chrono::TimeDelta::seconds(15 * i))
                .await
                .expect("a decision");
            kept.push(e.changed);
        }
        assert_eq!(kept, [true, false, false, false, false, false]);
        assert_eq!(cluster.replicas("shop", "web"), Some(4), "nothing moved");
    }

    fn acting(mode: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("pas.io/enabled".to_string(), "true".to_string()),
            ("pas.io/target-utilization".to_string(), "50".to_string()),
            ("pas.io/mode".to_string(), mode.to_string()),
        ])
    }

    #[tokio::test]
    async fn a_workload_an_hpa_targets_is_refused_in_mode_act_and_no_history_is_kept() {
        let (mut engine, cluster, key) = engine(2, 1000.0);
        cluster.insert("shop", "web", 2, acting("act"), Some(1000.0));
        cluster.set_hpa("shop", "web", "web-hpa");
        let e = evaluate_at(&mut engine, &key, Utc::now())
            .await
            .expect("a refusal");
        assert_eq!(
            (e.rule, e.decision.outcome),
            (Rule::HpaConflict, Outcome::Refused)
        );
        assert!(e.history.is_none());
        assert_eq!(cluster.replicas("shop", "web"), Some(2));
        assert_eq!(e.event.map(|ev| ev.reason), Some("ManagedByHPA"));
        // Said once: the next refusal records no Event.
        let again = evaluate_at(&mut engine, &key, Utc::now())
            .await
            .expect("a refusal");
        assert!(again.event.is_none());
    }

    /// Issue 20: by default PAS shadows a workload an HPA targets: it
    /// decides, publishes `shadow` with the HPA's name, patches nothing,
    /// and scores what it would have run against what runs.
    #[tokio::test]
    async fn a_workload_an_hpa_targets_is_shadowed_and_never_patched() {
        let (mut engine, cluster, key) = engine(2, 1000.0);
        cluster.set_hpa("shop", "web", "web-hpa");
        let start = Utc::now();
        let mut written = Vec::new();
        for i in 0..2 {
            let e = evaluate_at(&mut engine, &key, start + chrono::TimeDelta::seconds(5 * i))
                .await
                .expect("a decision");
            // 100 % against a 50 % target: PAS would run 4.
            assert_eq!(
                (
                    e.decision.replicas_before,
                    e.decision.replicas_after,
                    e.decision.outcome
                ),
                (2, 4, Outcome::Shadow)
            );
            assert_eq!(e.decision.hpa.as_deref(), Some("web-hpa"));
            assert!(e.event.is_none());
            written.push(e.changed);
        }
        assert_eq!(cluster.replicas("shop", "web"), Some(2), "nothing patched");
        assert!(cluster.log().is_empty(), "{:?}", cluster.log());
        // Written when first seen, then not before shadow_write_every.
        assert_eq!(written, [true, false]);
        let shadow = engine.histories[&key].shadow.clone().expect("a shadow");
        let t = shadow.since(start - chrono::TimeDelta::hours(1));
        // 5 s of 4 pods (2 of them still starting) against 2 that ran.
        assert_eq!(
            (t.seconds, t.pas_replica_seconds, t.actual_replica_seconds),
            (5.0, 20.0, 10.0)
        );
        assert_eq!((shadow.replicas, shadow.hpa.as_deref()), (4, Some("web-hpa")));

        // PAS goes on from its own count and changes, not the HPA's: at five
        // times the target, 6 at first (the rate limit allows 2 + 4), no more
        // within the period, then on from those 6 to the maximum, while the
        // HPA's 2 stay.
        let (mut engine, cluster, key) = self::engine(2, 5000.0);
        cluster.set_hpa("shop", "web", "web-hpa");
        let mut wanted = Vec::new();
        for s in [0, 10, 20] {
            let e = evaluate_at(&mut engine, &key, start + chrono::TimeDelta::seconds(s))
                .await
                .expect("a decision");
            wanted.push((e.decision.replicas_before, e.decision.replicas_after));
        }
        // At 10 s its own +4 is within the 15 s rate-limit period: it holds.
        assert_eq!(wanted, [(2, 6), (2, 6), (2, 10)]);

        // Without an HPA, pas.io/mode: shadow shadows too.
        let (mut engine, cluster, key) = self::engine(2, 1000.0);
        cluster.insert("shop", "web", 2, acting("shadow"), Some(1000.0));
        let e = evaluate_at(&mut engine, &key, Utc::now())
            .await
            .expect("a decision");
        assert_eq!((e.decision.outcome, e.decision.hpa), (Outcome::Shadow, None));
        assert_eq!(cluster.replicas("shop", "web"), Some(2));
    }

    #[tokio::test]
    async fn an_unanswered_history_read_leaves_the_workload_for_the_next_tick() {
        let (mut engine, cluster, key) = engine(2, 1000.0);
        assert!(
            engine
                .evaluate(&key, Utc::now(), async |_: &Key| None)
                .await
                .is_none()
        );
        assert_eq!(
            cluster.replicas("shop", "web"),
            Some(2),
            "nothing decided without the history"
        );
        // Not leading: nothing at all.
        engine.until.store(0, Ordering::Relaxed);
        let loaded = evaluate_at(&mut engine, &key, Utc::now()).await;
        assert!(loaded.is_none());
    }
}
