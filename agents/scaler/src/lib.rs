//! The PAS scaler (`pas scaler`): turns forecasts into replica changes of
//! StatefulSets. Start reading at [`policy`], then `engine`.
//!
//! - **Policies** ([`policy`]): `hpa`, `threshold`, `predictive` and
//!   `hybrid` (the default), with the HPA's tolerance, stabilisation windows
//!   and rate limits, min/max, a stale-forecast fallback, pause and dry-run.
//!   Pure functions of the time and the inputs; the rule that decided is a
//!   [`Rule`].
//! - **Settings** ([`settings`]): the config file's defaults, overridden per
//!   StatefulSet by `pas.io/` annotations.
//! - **The engine** (`engine.rs`): each workload's forecast, samples and
//!   history in, an evaluation out (the decision, applied through the
//!   cluster, and the history to keep). It holds no NATS handle and is
//!   tested without a server; `outputs.rs` publishes the decisions and keeps
//!   the histories in KV `pas-scaler`.
//! - **Inputs** (`active.rs`, `samples.rs`, while leading). Forecasts from
//!   the durable consumer `pas-scaler-forecasts` on PAS_FORECASTS: each
//!   fresh one is evaluated at once. Pod samples from an ordered consumer
//!   on PAS_SAMPLES (from [`Config::sample_max_age`] back, read to its end
//!   before a new leader decides anything) give the measured utilisation
//!   the `hpa` rule needs. Every [`Config::tick`] the workloads not
//!   evaluated since are evaluated on samples alone.
//! - **Kubernetes** ([`cluster`], [`k8s`]): replicas change only through the
//!   `scale` subresource with field manager `pas-scaler`, each change gets an
//!   Event; a StatefulSet an HPA targets is refused. Without a cluster, a
//!   simulated one ([`cluster::Simulated`]).
//! - **State and leadership** ([`leader`]): each workload's [`policy::History`]
//!   is kept in KV `pas-scaler` when it changes (not when a recommendation
//!   holds: [`policy::Recommendation`]) and read back by a new
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
pub mod shadow;
pub mod sim;

mod active;
mod config;
mod engine;
mod error;
mod metrics;
mod outputs;
mod samples;

pub use config::{ClusterKind, Config};
pub use error::Error;
pub use metrics::Metrics;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use pas_nats::DeadLetters;
use pas_schemas::subjects::{BUCKET_SCALER, Prefix, Stage};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::active::{Active, next_forecast};
use crate::cluster::{Cluster, Simulated};
use crate::engine::Engine;
use crate::k8s::{Kube, Retry};
use crate::leader::{Campaign, Leader};
use crate::outputs::Outputs;
use crate::samples::Key;

/// Every rule a decision can name.
pub use crate::policy::Rule;

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
        // Pods take the start-up time the policies plan for, unless told.
        .with_startup(config.simulated_startup.unwrap_or(config.defaults.startup))
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
    let kube = Kube::start(
        client,
        &config.workload_kinds,
        config.replica_id(),
        retry,
        shutdown.clone(),
    );
    tokio::select! {
        _ = shutdown.cancelled() => return Ok(()),
        _ = kube.ready() => tracing::info!(kinds = ?config.workload_kinds.iter().map(|k| &k.kind).collect::<Vec<_>>(), "Listed the workloads and HorizontalPodAutoscalers."),
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
    /// consumes forecasts and samples and scales; while another scaler holds
    /// it, consumes nothing.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), Error> {
        let Scaler {
            config,
            prefix,
            replica,
            metrics,
            cluster,
        } = self;
        let bus = pas_nats::start_stage(
            &config.nats,
            &format!("pas-scaler-{replica}"),
            Stage::Scaler,
            &prefix,
            config.listen,
            |r| metrics.register(r),
            &shutdown,
        )
        .await?;
        let js = bus.conn.jetstream.clone();
        // Waits for what `pas bus init` provisions rather than exiting.
        let opened = pas_nats::wait_for("the pas-scaler bucket", &shutdown, || async {
            js.get_key_value(BUCKET_SCALER)
                .await
                .map_err(|e| pas_nats::Error::js("open the pas-scaler bucket", e))
        })
        .await?;
        let Some(kv) = opened else { return Ok(()) };
        let leader = Leader::new(kv.clone(), prefix.keys().leader(), replica.clone(), config.lease);
        let campaign = Campaign::start(leader, config.lease);
        let engine = Engine::new(cluster, campaign.until.clone(), &config, &metrics);
        let lead = Lead {
            config: &config,
            prefix: &prefix,
            replica: &replica,
            metrics: &metrics,
            dead_letters: Arc::new(bus.dead_letters),
            outputs: Outputs::new(js.clone(), kv, campaign.until.clone(), &prefix, &metrics),
            js,
        };
        bus.health.set_ready(true);
        let active = lead
            .decide(engine, campaign.held.clone(), &bus.health, &shutdown)
            .await;
        bus.health.set_ready(false);
        // Each step of the way out is bounded, so SIGTERM exits in time even
        // with NATS down (the lease then expires on its own).
        if let Some(a) = active {
            let _ = pas_nats::within(Duration::from_secs(2), "stop consuming", a.stop()).await;
        }
        lead.outputs.state.close(Duration::from_secs(2)).await;
        campaign.end(Duration::from_secs(2)).await;
        metrics.set_leader(false);
        bus.conn.drain().await;
        Ok(())
    }
}

/// What the decision loop, and the consumers it starts, work with.
pub(crate) struct Lead<'a> {
    pub(crate) config: &'a Config,
    pub(crate) prefix: &'a Prefix,
    replica: &'a str,
    pub(crate) metrics: &'a Metrics,
    pub(crate) dead_letters: Arc<DeadLetters>,
    pub(crate) js: async_nats::jetstream::Context,
    outputs: Outputs,
}

impl Lead<'_> {
    /// Decides until `shutdown`: on each forecast and every tick while
    /// leading; starts and stops consuming as the lease comes and goes.
    /// Returns the consumers still running.
    async fn decide<C: Cluster>(
        &self,
        mut engine: Engine<C>,
        mut held: watch::Receiver<bool>,
        health: &Arc<pas_runtime::health::Health>,
        shutdown: &CancellationToken,
    ) -> Option<Active> {
        let mut check = tokio::time::interval(self.config.lease / 3);
        let mut sweep = tokio::time::interval(self.config.tick);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut active: Option<Active> = None;
        // Readiness fails when the decision loop stops advancing (the lease
        // check below runs every lease/3 whether leading or not).
        let beat = health.heartbeat(
            "decision loop",
            (3 * self.config.lease).max(Duration::from_secs(30)),
        );
        loop {
            beat.beat();
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Ok(()) = held.changed() => {}
                _ = check.tick() => {}
                Some((forecast, done)) = next_forecast(&mut active) => {
                    let now = Utc::now();
                    if engine.leading() && let Some(key) = engine.on_forecast(forecast, now) {
                        self.evaluate(&mut engine, &key, now).await;
                    }
                    let _ = done.send(());
                    continue;
                }
                _ = sweep.tick(), if active.is_some() => {
                    let now = Utc::now();
                    for key in engine.workloads(now) {
                        if !engine.leading() {
                            break;
                        }
                        if engine.is_due(&key) {
                            self.evaluate(&mut engine, &key, now).await;
                        }
                    }
                    continue;
                }
            }
            // Consume while leading, nothing while standing by.
            let leading = *held.borrow_and_update();
            active = self.follow_lease(leading, active, &mut engine).await;
            self.metrics.set_leader(active.is_some());
        }
        active
    }

    /// Evaluates one workload: keeps its history, records its Event,
    /// publishes the decision, in that order (as before the engine was split).
    async fn evaluate<C: Cluster>(&self, engine: &mut Engine<C>, key: &Key, now: DateTime<Utc>) {
        let outputs = &self.outputs;
        let load = async |key: &Key| outputs.history(key).await;
        if let Some(evaluation) = engine.evaluate(key, now, load).await {
            outputs.keep(&evaluation);
            if let Some(event) = evaluation.event {
                engine.record(event).await;
            }
            outputs.publish(evaluation.decision, evaluation.rule).await;
        }
    }

    /// Starts consuming when the lease was won, stops when it was lost.
    async fn follow_lease<C: Cluster>(
        &self,
        leading: bool,
        active: Option<Active>,
        engine: &mut Engine<C>,
    ) -> Option<Active> {
        let replica = self.replica;
        match (leading, active) {
            (true, None) => {
                let started = Active::start(self, engine.pods.clone()).await;
                match started {
                    Ok(a) => {
                        // What a previous leader decided is in the bucket.
                        engine.histories.clear();
                        tracing::info!(replica, "Leading: consuming forecasts and scaling.");
                        Some(a)
                    }
                    Err(error) => {
                        tracing::warn!(%error, "Could not start consuming; will try again.");
                        None
                    }
                }
            }
            (false, Some(a)) => {
                a.stop().await;
                tracing::info!(replica, "Standing by: another scaler holds the lease.");
                None
            }
            (_, active) => active,
        }
    }
}
