//! The PAS scaler (`pas scaler`): turns forecasts into replica changes of
//! StatefulSets.
//!
//! - **Policies** ([`policy`]): `hpa`, `threshold`, `predictive` and
//!   `hybrid` (the default), with the HPA's tolerance, stabilisation windows
//!   and rate limits, min/max, a stale-forecast fallback, pause and dry-run.
//!   Pure functions of the time and the inputs; start reading there.
//! - **Settings** ([`settings`]): the config file's defaults, overridden per
//!   StatefulSet by `pas.io/` annotations.
//! - **Inputs.** Forecasts from the durable consumer `pas-scaler-forecasts`
//!   on PAS_FORECASTS: each fresh one is evaluated at once. Pod samples from
//!   an ordered consumer on PAS_SAMPLES (from [`Config::sample_max_age`]
//!   back, read to its end before a new leader decides anything) give the
//!   measured utilisation the `hpa` rule needs. Every
//!   [`Config::tick`] the workloads not evaluated since are evaluated on
//!   samples alone.
//! - **Kubernetes** ([`cluster`], [`k8s`]): replicas change only through the
//!   `scale` subresource with field manager `pas-scaler`, each change gets an
//!   Event; a StatefulSet an HPA targets is refused. Without a cluster, a
//!   simulated one ([`cluster::Simulated`]).
//! - **State and leadership** ([`leader`]): each workload's [`policy::History`]
//!   is kept in KV `pas-scaler` after every evaluation and read back by a new
//!   leader, so a restart keeps the stabilisation windows and rate limits. A
//!   lease in the same bucket keeps one scaler active; standbys consume nothing.
//! - **Decisions** go to `pas.scale.<namespace>.<workload>` (PAS_DECISIONS),
//!   one per evaluation of an enabled workload: replicas before and after,
//!   policy, the rule that decided and why, the forecast used, and whether
//!   it was applied, dry-run, refused or unchanged.

pub mod cluster;
pub mod k8s;
pub mod leader;
pub mod policy;
pub mod settings;
pub mod sim;

mod config;
mod error;
mod metrics;
mod state;

pub use config::{ClusterKind, Config};
pub use error::Error;
pub use metrics::Metrics;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use async_nats::jetstream::kv::Store;
use chrono::{DateTime, TimeDelta, Utc};
use futures::StreamExt;
use pas_nats::{DeadLetters, HandlerError, Outgoing};
use pas_schemas::subjects::{BUCKET_SCALER, Keys, Prefix, STREAM_FORECASTS, STREAM_SAMPLES, Stage};
use pas_schemas::{CpuSample, Forecast, ForecastRef, Outcome, SCHEMA_VERSION, ScaleDecision};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::cluster::{Cluster, ClusterError, EventKind, Simulated, Workload};
use crate::k8s::{Kube, Retry};
use crate::leader::Leader;
use crate::policy::{ForecastView, History, Observed, PodUsage, Tuning};
use crate::state::StateWriter;

/// Every rule a decision can name.
pub use crate::policy::Rule;

/// How long a new leader waits for the samples already in the stream.
const CATCH_UP: Duration = Duration::from_secs(10);

/// Samples older than this are dropped; workloads silent for
/// [`FORGET_AFTER`] are forgotten.
const KEEP_SAMPLES: TimeDelta = TimeDelta::minutes(5);
const FORGET_AFTER: Duration = Duration::from_secs(900);

/// Runs the scaler on the cluster [`Config::cluster`] chooses, until `shutdown`.
pub async fn run(mut config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    // One name for the lease and the Events.
    config.replica = Some(config.replica_id());
    let simulated = || {
        Simulated::creating(
            config.simulated_replicas,
            BTreeMap::new(),
            config.defaults.enabled.then_some(1000.0),
        )
        // Pods take the start-up time the policies plan for.
        .with_startup(config.defaults.startup)
    };
    let client = match config.cluster {
        ClusterKind::Simulated => None,
        ClusterKind::Kube => Some(
            Kube::client()
                .await
                .map_err(|e| Error::Config(format!("no Kubernetes configuration: {e}")))?,
        ),
        ClusterKind::Auto => match Kube::client().await {
            Ok(client) => Some(client),
            Err(error) => {
                tracing::info!(%error, "No Kubernetes configuration found; acting on a simulated cluster.");
                None
            }
        },
    };
    let Some(client) = client else {
        return Scaler::new(config.clone(), simulated())?.run(shutdown).await;
    };
    let retry = Retry {
        max_delay: config.kube_retry_max,
        times: config.kube_retries,
        ..Retry::default()
    };
    let kube = Kube::start(client, config.replica_id(), retry, shutdown.clone());
    tokio::select! {
        _ = shutdown.cancelled() => return Ok(()),
        _ = kube.ready() => tracing::info!("Listed StatefulSets and HorizontalPodAutoscalers."),
    }
    Scaler::new(config, kube)?.run(shutdown).await
}

/// A configured scaler acting on cluster `C`.
pub struct Scaler<C: Cluster> {
    config: Config,
    prefix: Prefix,
    replica: String,
    metrics: Metrics,
    cluster: C,
}

impl<C: Cluster> Scaler<C> {
    /// Checks the configuration.
    pub fn new(mut config: Config, cluster: C) -> Result<Scaler<C>, Error> {
        config.check().map_err(Error::Config)?;
        let prefix = Prefix::for_run(config.run.as_deref()).map_err(Error::Config)?;
        let replica = config.replica_id();
        config.replica = Some(replica.clone());
        Ok(Scaler {
            config,
            prefix,
            replica,
            metrics: Metrics::default(),
            cluster,
        })
    }

    /// A handle on the metrics (for tests and embedding).
    pub fn metrics(&self) -> Metrics {
        self.metrics.clone()
    }

    /// Runs until `shutdown`: campaigns for the lease, and while it holds it
    /// consumes forecasts and samples and decides.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), Error> {
        let Scaler {
            config,
            prefix,
            replica,
            metrics,
            cluster,
        } = self;
        let pas_nats::StageBus {
            conn,
            dead_letters,
            health,
        } = pas_nats::start_stage(
            &config.nats,
            &format!("pas-scaler-{replica}"),
            Stage::Scaler,
            &prefix,
            config.listen,
            |r| metrics.register(r),
            &shutdown,
        )
        .await?;
        let js = conn.jetstream.clone();
        let dead_letters = Arc::new(dead_letters);
        // Waits for what `pas bus init` provisions rather than exiting.
        let opened = pas_nats::wait_for("the pas-scaler bucket", &shutdown, || async {
            js.get_key_value(BUCKET_SCALER)
                .await
                .map_err(|e| pas_nats::Error::JetStream {
                    action: "open the pas-scaler bucket".into(),
                    source: Box::new(e),
                })
        })
        .await?;
        let Some(kv) = opened else { return Ok(()) };
        let keys = prefix.keys();
        // The lease is renewed on its own task, so a long evaluation never
        // delays it; the engine acts only while `until` is ahead.
        let mut leader = Leader::new(kv.clone(), keys.leader(), replica.clone(), config.lease);
        let until = Arc::new(AtomicI64::new(0));
        let (lead_tx, mut lead_rx) = watch::channel(false);
        let resign = CancellationToken::new();
        let campaigning = tokio::spawn({
            let until = until.clone();
            let resign = resign.clone();
            let mut renew = tokio::time::interval(config.lease / 3);
            async move {
                loop {
                    tokio::select! {
                        _ = resign.cancelled() => break,
                        _ = renew.tick() => {
                            let held = leader.campaign().await;
                            until.store(leader.valid_until_ms(), Ordering::Relaxed);
                            lead_tx.send_if_modified(|l| std::mem::replace(l, held) != held);
                        }
                    }
                }
                until.store(0, Ordering::Relaxed);
                leader.resign().await;
            }
        });
        let mut engine = Engine {
            cluster,
            js: js.clone(),
            state: StateWriter::start(kv.clone(), until.clone()),
            kv,
            prefix: prefix.clone(),
            keys,
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
        };
        health.set_ready(true);

        let mut check = tokio::time::interval(config.lease / 3);
        let mut sweep = tokio::time::interval(config.tick);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut active: Option<Active> = None;
        // Readiness fails when the decision loop stops advancing (the lease
        // check below runs every lease/3 whether leading or not).
        let beat = health.heartbeat("decision loop", (3 * config.lease).max(Duration::from_secs(30)));
        loop {
            beat.beat();
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Ok(()) = lead_rx.changed() => {}
                _ = check.tick() => {}
                Some((forecast, done)) = next_forecast(&mut active) => {
                    if engine.leading() {
                        engine.on_forecast(forecast).await;
                    }
                    let _ = done.send(());
                    continue;
                }
                _ = sweep.tick(), if active.is_some() => {
                    engine.sweep().await;
                    continue;
                }
            }
            // Consume while leading, nothing while standing by.
            let held = *lead_rx.borrow_and_update();
            if held && active.is_none() {
                match Active::start(
                    &js,
                    &prefix,
                    &config,
                    &dead_letters,
                    engine.pods.clone(),
                    &metrics,
                )
                .await
                {
                    Ok(a) => {
                        // What a previous leader decided is in the bucket.
                        engine.histories.clear();
                        active = Some(a);
                        tracing::info!(replica, "Leading: consuming forecasts and scaling.");
                    }
                    Err(error) => {
                        tracing::warn!(%error, "Could not start consuming; will try again.")
                    }
                }
            } else if !held && let Some(a) = active.take() {
                a.stop().await;
                tracing::info!(replica, "Standing by: another scaler holds the lease.");
            }
            metrics.set_leader(active.is_some());
        }
        health.set_ready(false);
        // Each step of the way out is bounded, so SIGTERM exits in time even
        // with NATS down (the lease then expires on its own).
        if let Some(a) = active.take() {
            let _ = pas_nats::within(Duration::from_secs(2), "stop consuming", a.stop()).await;
        }
        engine.state.close(Duration::from_secs(2)).await;
        resign.cancel();
        let _ = pas_nats::within(Duration::from_secs(2), "release the lease", campaigning).await;
        metrics.set_leader(false);
        let _ = pas_nats::within(
            Duration::from_secs(2),
            "drain the connection",
            conn.client.drain(),
        )
        .await;
        Ok(())
    }
}

type Done = oneshot::Sender<()>;

async fn next_forecast(active: &mut Option<Active>) -> Option<(Forecast, Done)> {
    match active {
        Some(a) => a.forecasts.recv().await,
        None => std::future::pending().await,
    }
}

/// The consumers a leader runs.
struct Active {
    forecasts: mpsc::Receiver<(Forecast, Done)>,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Active {
    async fn start(
        js: &async_nats::jetstream::Context,
        prefix: &Prefix,
        config: &Config,
        dead_letters: &Arc<DeadLetters>,
        pods: Arc<Mutex<Pods>>,
        metrics: &Metrics,
    ) -> Result<Active, Error> {
        let stop = CancellationToken::new();
        // Pod samples: an ordered consumer from a sample age back.
        let samples = js
            .get_stream(STREAM_SAMPLES)
            .await
            .map_err(|e| Error::js("open stream PAS_SAMPLES (run `pas bus init`)", e))?;
        let start_time = time::OffsetDateTime::now_utc() - config.sample_max_age;
        let ordered = samples
            .create_consumer(pull::OrderedConfig {
                name: Some(pas_nats::ordered_name("scaler-samples")),
                // Lost with its server, noticed in seconds (2 s heartbeats).
                max_expires: Duration::from_secs(4),
                filter_subject: prefix.all_pod_cpu(),
                deliver_policy: DeliverPolicy::ByStartTime { start_time },
                ..pull::OrderedConfig::default()
            })
            .await
            .map_err(|e| Error::js("create the scaler's sample consumer", e))?;
        // The samples already in the stream are read before any evaluation:
        // a leader that decided on half a backlog would mix old and new
        // samples of the same workload.
        let backlog = ordered.cached_info().num_pending;
        let mut messages = ordered
            .messages()
            .await
            .map_err(|e| Error::js("read samples", e))?;
        let (caught_up_tx, caught_up) = oneshot::channel::<()>();
        let mut caught_up_tx = (backlog > 0).then_some(caught_up_tx);
        let sample_task = {
            let stop = stop.clone();
            let metrics = metrics.clone();
            let (admission, replay) = (config.admission, dead_letters.is_replay());
            tokio::spawn(async move {
                loop {
                    let next = tokio::select! {
                        _ = stop.cancelled() => return,
                        next = messages.next() => next,
                    };
                    match next {
                        None => return,
                        Some(Err(error)) => {
                            tracing::warn!(%error, "Reading samples failed; continuing.")
                        }
                        Some(Ok(msg)) => {
                            let info = msg.info().ok();
                            let stored = info
                                .as_ref()
                                .map(|i| i.published.unix_timestamp_nanos())
                                .unwrap_or_default();
                            match admission.decode::<CpuSample>(&msg.payload, stored, replay) {
                                Ok(sample) => record_sample(&pods, sample),
                                // The forecaster dead-letters bad samples; here they are only counted.
                                Err(_) => metrics.ignored("invalid_sample"),
                            }
                            if info.is_some_and(|info| info.pending == 0)
                                && let Some(tx) = caught_up_tx.take()
                            {
                                let _ = tx.send(());
                            }
                        }
                    }
                }
            })
        };
        if backlog > 0 {
            match tokio::time::timeout(CATCH_UP, caught_up).await {
                Ok(_) => tracing::info!(backlog, "Read the samples in the stream."),
                Err(_) => tracing::warn!(
                    backlog,
                    "The sample backlog was not read in {CATCH_UP:?}; deciding on what has been read."
                ),
            }
        }

        // Forecasts: the shared durable consumer; each is acked once decided on.
        let stream = js
            .get_stream(STREAM_FORECASTS)
            .await
            .map_err(|e| Error::js("open stream PAS_FORECASTS (run `pas bus init`)", e))?;
        let consumer_config = pas_nats::definitions::consumer(Stage::Scaler, STREAM_FORECASTS, prefix)?;
        let consumer = pas_nats::durable(&stream, &consumer_config).await?;
        let (tx, rx) = mpsc::channel(64);
        let forecast_task = {
            let stop = stop.clone();
            let dead_letters = dead_letters.clone();
            let admission = config.admission;
            tokio::spawn(async move {
                let result = pas_nats::consume::<Forecast, _, _>(
                    &consumer,
                    &dead_letters,
                    &admission,
                    stop,
                    |forecast, _| {
                        let tx = tx.clone();
                        async move {
                            let (done, decided) = oneshot::channel();
                            let retry = || HandlerError::Retry {
                                reason: "the scaler stopped leading".into(),
                                after: Duration::from_secs(1),
                            };
                            tx.send((forecast, done)).await.map_err(|_| retry())?;
                            decided.await.map_err(|_| retry())
                        }
                    },
                )
                .await;
                if let Err(error) = result {
                    tracing::warn!(%error, "Consuming forecasts stopped.");
                }
            })
        };
        Ok(Active {
            forecasts: rx,
            stop,
            tasks: vec![sample_task, forecast_task],
        })
    }

    async fn stop(self) {
        self.stop.cancel();
        // Let a forecast in hand be answered as "stopped" rather than hang.
        drop(self.forecasts);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// A workload: namespace and StatefulSet name.
type Key = (String, String);

/// The latest sample of one pod.
#[derive(Debug, Clone)]
struct PodSample {
    at: DateTime<Utc>,
    used: f64,
    requested: Option<f64>,
}

/// Latest samples by workload and pod.
type Pods = HashMap<Key, BTreeMap<String, PodSample>>;

fn record_sample(pods: &Mutex<Pods>, sample: CpuSample) {
    let (Some(namespace), Some(workload), Some(pod)) = (sample.namespace, sample.workload, sample.pod) else {
        return;
    };
    let mut pods = pods.lock().unwrap_or_else(|p| p.into_inner());
    let entry = pods
        .entry((namespace, workload))
        .or_default()
        .entry(pod)
        .or_insert(PodSample {
            at: DateTime::<Utc>::MIN_UTC,
            used: 0.0,
            requested: None,
        });
    if sample.timestamp >= entry.at {
        *entry = PodSample {
            at: sample.timestamp,
            used: sample.cpu_used_millicores,
            requested: sample.cpu_requested_millicores,
        };
    }
}

/// The leader's state and what it decides with.
struct Engine<C> {
    cluster: C,
    js: async_nats::jetstream::Context,
    kv: Store,
    /// State writes, beside the decision loop.
    state: StateWriter,
    prefix: Prefix,
    keys: Keys,
    config: Config,
    tuning: Tuning,
    metrics: Metrics,
    /// Unix ms until which this scaler holds the lease.
    until: Arc<AtomicI64>,
    pods: Arc<Mutex<Pods>>,
    forecasts: HashMap<Key, (Forecast, Instant)>,
    histories: HashMap<Key, History>,
    evaluated: HashMap<Key, Instant>,
    problems: HashMap<Key, Vec<String>>,
    /// Workloads refused for an HPA, so the Event is recorded once.
    refused: HashMap<Key, String>,
}

impl<C: Cluster> Engine<C> {
    /// Whether this scaler may act now.
    fn leading(&self) -> bool {
        Utc::now().timestamp_millis() < self.until.load(Ordering::Relaxed)
    }

    async fn on_forecast(&mut self, forecast: Forecast) {
        self.metrics.forecast();
        let key = (forecast.namespace.clone(), forecast.workload.clone());
        if self
            .forecasts
            .get(&key)
            .is_some_and(|(f, _)| f.window_end > forecast.window_end)
        {
            self.metrics.ignored("older_forecast");
            return;
        }
        let now = Utc::now();
        let stale = forecast_view(&forecast).is_stale(now, self.config.forecast_max_age);
        self.forecasts.insert(key.clone(), (forecast, Instant::now()));
        if stale {
            // A backlog after a pause: the tick decides on samples instead.
            self.metrics.ignored("stale_forecast");
            return;
        }
        self.evaluate(&key, now).await;
    }

    /// Evaluates the workloads not evaluated for a tick, and forgets the silent ones.
    async fn sweep(&mut self) {
        let now = Utc::now();
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
        let due = self.config.tick.mul_f64(0.9);
        for key in keys {
            if !self.leading() {
                break;
            }
            if self.evaluated.get(&key).is_none_or(|at| at.elapsed() >= due) {
                self.evaluate(&key, now).await;
            }
        }
    }

    async fn evaluate(&mut self, key: &Key, now: DateTime<Utc>) {
        if !self.leading() {
            return;
        }
        self.evaluated.insert(key.clone(), Instant::now());
        let (namespace, name) = key;
        let workload = match self.cluster.workload(namespace, name).await {
            Ok(Some(w)) => w,
            Ok(None) => {
                self.metrics.ignored("no_statefulset");
                return;
            }
            Err(error) => {
                tracing::warn!(%namespace, workload = %name, %error, "Reading the StatefulSet failed.");
                self.metrics.kube_error(error.kind());
                return;
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
            return;
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
            forecast: None,
            utilization_percent: None,
            predicted_peak_percent: None,
            target_utilization_percent: Some(settings.target_utilization),
            warnings: problems,
        };
        if let Some(hpa) = &workload.hpa {
            decision.rule = Rule::HpaConflict.as_str().into();
            decision.reason =
                format!("HorizontalPodAutoscaler {hpa} targets this StatefulSet; PAS leaves it alone.");
            decision.outcome = Outcome::Refused;
            if self.refused.get(key) != Some(hpa) {
                self.refused.insert(key.clone(), hpa.clone());
                tracing::warn!(%namespace, workload = %name, %hpa, "An HPA targets this StatefulSet; not managing it.");
                self.event(
                    &workload,
                    EventKind::Warning,
                    "ManagedByHPA",
                    decision.reason.clone(),
                )
                .await;
            }
            self.publish(decision, Rule::HpaConflict).await;
            return;
        }
        self.refused.remove(key);

        let observed = self.observe(&workload, now);
        let forecast = self.forecasts.get(key).map(|(f, _)| f.clone());
        let view = forecast.as_ref().map(forecast_view);
        let Some(mut history) = self.take_history(key).await else {
            // Tried again next tick; the other workloads go on.
            return;
        };
        let d = policy::decide(now, &settings, &self.tuning, &observed, view, &mut history);
        decision.replicas_after = d.replicas;
        decision.rule = d.rule.as_str().into();
        decision.reason = d.reason.clone();
        decision.utilization_percent = d.utilization;
        decision.predicted_peak_percent = d.predicted_peak;
        if d.used_forecast {
            decision.forecast = forecast.map(|f| ForecastRef {
                model: f.model,
                window_end: f.window_end,
            });
        }
        decision.outcome = if d.replicas == workload.replicas {
            Outcome::Unchanged
        } else if settings.dry_run {
            Outcome::DryRun
        } else {
            match self.cluster.scale(&workload, d.replicas).await {
                Ok(()) => {
                    history.record_scale(now, workload.replicas, d.replicas, &self.tuning.behavior);
                    Outcome::Applied
                }
                Err(error) => {
                    self.metrics.kube_error(error.kind());
                    decision.reason = format!("{} Not applied: {error}.", decision.reason);
                    match &error {
                        ClusterError::Forbidden(_) => {
                            tracing::error!(%namespace, workload = %name, %error, "The scaler may not scale this StatefulSet.");
                        }
                        _ => {
                            tracing::warn!(%namespace, workload = %name, %error, "Scaling failed.")
                        }
                    }
                    Outcome::Refused
                }
            }
        };
        self.save_history(key, &history);
        self.histories.insert(key.clone(), history);
        match decision.outcome {
            Outcome::Applied => {
                let note = format!("New size: {}; {}", d.replicas, d.reason);
                self.event(&workload, EventKind::Normal, "SuccessfulRescale", note)
                    .await;
            }
            Outcome::Refused => {
                let note = format!("Could not scale to {}: {}", d.replicas, decision.reason);
                self.event(&workload, EventKind::Warning, "FailedRescale", note)
                    .await;
            }
            _ => {}
        }
        self.publish(decision, d.rule).await;
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
                })
                .collect(),
        }
    }

    /// The workload's key in pas-scaler ([`Keys::state`]).
    fn state_key(&self, key: &Key) -> String {
        self.keys.state(&key.0, &key.1)
    }

    /// The workload's history, taken out of memory or read as the last
    /// leader left it; `None` when the read did not answer within
    /// [`state::NATS_CALL`] (the workload waits for the next tick, the others
    /// do not wait for it).
    async fn take_history(&mut self, key: &Key) -> Option<History> {
        if let Some(history) = self.histories.remove(key) {
            return Some(history);
        }
        let read = tokio::time::timeout(state::NATS_CALL, self.kv.get(self.state_key(key))).await;
        Some(match read {
            Ok(Ok(Some(bytes))) => serde_json::from_slice(&bytes).unwrap_or_else(|error| {
                tracing::warn!(namespace = %key.0, workload = %key.1, %error, "Stored scaler state unreadable; starting afresh.");
                History::default()
            }),
            Ok(Ok(None)) => History::default(),
            Ok(Err(error)) => {
                tracing::warn!(namespace = %key.0, workload = %key.1, %error, "Reading the scaler state failed; starting afresh.");
                History::default()
            }
            Err(_) => {
                self.metrics.ignored("state_read_timeout");
                tracing::warn!(namespace = %key.0, workload = %key.1, "Reading the scaler state timed out; trying again next tick.");
                return None;
            }
        })
    }

    /// Queues the workload's history for the bucket; written beside the loop.
    fn save_history(&self, key: &Key, history: &History) {
        let bytes = serde_json::to_vec(history).unwrap_or_default();
        self.state.put(self.state_key(key), bytes.into());
    }

    async fn event(&self, workload: &Workload, kind: EventKind, reason: &str, note: String) {
        if let Err(error) = self.cluster.event(workload, kind, reason, note).await {
            self.metrics.kube_error(error.kind());
            tracing::warn!(namespace = %workload.namespace, workload = %workload.name, %error, "Recording an Event failed.");
        }
    }

    async fn publish(&self, decision: ScaleDecision, rule: Rule) {
        let outcome = match decision.outcome {
            Outcome::Applied => "applied",
            Outcome::DryRun => "dry_run",
            Outcome::Refused => "refused",
            Outcome::Unchanged => "unchanged",
        };
        self.metrics.decision(outcome, rule);
        let subject = match self.prefix.scale(&decision.namespace, &decision.workload) {
            Ok(s) => s,
            Err(error) => {
                tracing::warn!(namespace = %decision.namespace, workload = %decision.workload, error, "No subject for this workload.");
                return;
            }
        };
        // Sent in order from the loop; the acks are awaited beside it, so a
        // slow NATS does not hold up the other workloads' decisions.
        let (namespace, workload) = (decision.namespace.clone(), decision.workload.clone());
        let sent = async {
            let msg = Outgoing::new(subject, &decision).map_err(|e| e.to_string())?;
            match tokio::time::timeout(state::NATS_CALL, pas_nats::publish(&self.js, &msg)).await {
                Ok(ack) => ack.map_err(|e| e.to_string()),
                Err(_) => Err("the client's send buffer stayed full".to_owned()),
            }
        }
        .await;
        match sent {
            Ok(ack) => {
                tokio::spawn(async move {
                    if let Err(error) = ack.await {
                        tracing::warn!(%namespace, %workload, %error, "Publishing a decision failed.");
                    }
                });
            }
            Err(error) => tracing::warn!(%namespace, %workload, %error, "Publishing a decision failed."),
        }
    }
}

fn forecast_view(f: &Forecast) -> ForecastView<'_> {
    ForecastView {
        window_end: f.window_end,
        step_seconds: f.step_seconds,
        values: &f.values,
        upper: f.upper.as_deref(),
    }
}
