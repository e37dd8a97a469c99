//! The PAS trainer (`pas trainer`): turns the sample stream into forecasting
//! models.
//!
//! Each replica reads every pod sample of PAS_SAMPLES through a
//! short-lived ordered consumer of its own and folds it into its workload's
//! demand series ([`pas_workloads::Workloads`]: the sum of its pods' CPU
//! use per step, in millicores, missing steps kept missing), so any
//! replica can train any workload. Demand, not utilisation: it does not move when the
//! replicas do, so a model learns the load and not the scaler's actions.
//! A step with a saturated pod (throttled, so its use is a lower bound) is
//! left out of the loss and the backtest's score ([`train_version`]).
//!
//! **Jobs go through a work queue.** Every [`Config::check_interval`] each
//! replica looks for workloads with [`Config::min_history`] steps and no
//! model yet, or with [`Config::retrain_after`] of data beyond their newest
//! model (and for the global model, [`GLOBAL`]), and queues a
//! [`pas_schemas::TrainJob`] on `pas.train.…` in the work-queue stream
//! PAS_TRAINING, which holds one job per model: a job already queued by
//! another replica is not queued twice. The replicas take jobs one at a
//! time from the shared durable consumer `pas-trainer-training`; a job is
//! acked only once its version is stored (its ack wait extended while it
//! trains), so a replica that dies leaves its job to another, and a replica
//! that finds the model already trained that far by another skips it. For
//! each workload job it trains the LSTM on the head of the series, backtests it against naive,
//! seasonal naive and Holt-Winters on the tail, and stores the weights and a
//! manifest as the next version in the `pas-models` bucket
//! ([`pas_nats::model_store`]),
//! accepted only if it beat naive; then announces the manifest on
//! `pas.model.<namespace>.<workload>` and deletes versions beyond
//! [`Config::keep_versions`] (never the newest accepted one).
//!
//! State is rebuilt on start from the stream itself (folding is idempotent),
//! and what was trained is read back from the bucket (and before each job,
//! what other replicas stored since), so a restart resumes where it stopped
//! and trains nothing twice. Start at [`Trainer::run`].

mod config;
mod error;

pub use config::Config;
pub use error::Error;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::{DeliverPolicy, PullConsumer};
use async_nats::jetstream::object_store::ObjectStore;
use chrono::Utc;
use futures::StreamExt;
use pas_models::eval::{self, EvalConfig};
use pas_models::holt_winters::HoltWinters;
use pas_models::lstm::Lstm;
use pas_models::naive::{Naive, SeasonalNaive};
use pas_models::{Forecaster, ModelKind};
use pas_schemas::subjects::{Prefix, STREAM_SAMPLES, STREAM_TRAINING, Stage};
use pas_schemas::{CpuSample, ModelManifest, SCHEMA_VERSION, TrainJob, TrainingRange};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use pas_nats::model_store::{self as store, Layout, Versions};
use pas_workloads::history::{DEFAULT_KEEP_SECONDS, History, coarse_step_for};
use pas_workloads::{Fold, WorkloadKey, Workloads};

/// A fixed label set: one word from a known list.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

/// The trainer's metrics, served on `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// `pas_trainer_samples_total`: samples folded into a series.
    samples: Counter,
    /// `pas_trainer_ignored_samples_total{reason}`: samples not used.
    ignored: Family<Reason, Counter>,
    /// `pas_trainer_workloads`: workloads with data.
    workloads: Gauge,
    /// `pas_trainer_versions_total{outcome}`: versions stored (accepted, rejected, diverged).
    versions: Family<Outcome, Counter>,
    /// `pas_trainer_training_failures_total`: training runs that stored nothing.
    failures: Counter,
    /// `pas_trainer_history_reads_total{outcome}`: reads of a workload's
    /// stored history before training it (ok, failed).
    history_reads: Family<Outcome, Counter>,
    /// `pas_trainer_jobs_total{outcome}`: training jobs queued
    /// (`queued`, `already_queued`, `failed`) and taken (`done`,
    /// `done_before`: another replica had trained that far, `invalid`).
    jobs: Family<Outcome, Counter>,
}

impl Metrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "pas_trainer_samples",
            "Samples folded into a workload series.",
            self.samples.clone(),
        );
        registry.register(
            "pas_trainer_ignored_samples",
            "Samples not used, by reason.",
            self.ignored.clone(),
        );
        registry.register(
            "pas_trainer_workloads",
            "Workloads with data.",
            self.workloads.clone(),
        );
        registry.register(
            "pas_trainer_versions",
            "Model versions stored, by outcome.",
            self.versions.clone(),
        );
        registry.register(
            "pas_trainer_training_failures",
            "Training runs that stored nothing.",
            self.failures.clone(),
        );
        registry.register(
            "pas_trainer_history_reads",
            "Reads of a workload's stored coarse history before training, by outcome (ok, failed).",
            self.history_reads.clone(),
        );
        registry.register(
            "pas_trainer_jobs",
            "Training jobs queued (queued, already_queued, failed) and taken (done, done_before, invalid).",
            self.jobs.clone(),
        );
    }

    /// Training jobs with `outcome` (see `pas_trainer_jobs_total`).
    pub fn jobs(&self, outcome: &'static str) -> u64 {
        self.jobs.get_or_create(&Outcome { outcome }).get()
    }

    /// Samples folded so far.
    pub fn samples(&self) -> u64 {
        self.samples.get()
    }

    /// Workloads held now.
    pub fn workloads(&self) -> i64 {
        self.workloads.get()
    }

    /// Reads of stored history with `outcome` (`ok` or `failed`).
    pub fn history_reads(&self, outcome: &'static str) -> u64 {
        self.history_reads.get_or_create(&Outcome { outcome }).get()
    }

    /// Versions stored with `outcome` (`accepted`, `rejected` or `diverged`).
    pub fn versions(&self, outcome: &'static str) -> u64 {
        self.versions.get_or_create(&Outcome { outcome }).get()
    }
}

/// A configured trainer.
pub struct Trainer {
    config: Config,
    prefix: Prefix,
    metrics: Metrics,
}

impl Trainer {
    /// Checks the configuration.
    pub fn new(config: Config) -> Result<Trainer, Error> {
        config.check().map_err(Error::Config)?;
        let prefix = Prefix::for_run(config.run.as_deref()).map_err(Error::Config)?;
        Ok(Trainer {
            config,
            prefix,
            metrics: Metrics::default(),
        })
    }

    /// A handle on the metrics (for tests and embedding).
    pub fn metrics(&self) -> Metrics {
        self.metrics.clone()
    }

    /// Runs until `shutdown`: consumes samples, trains, stores models.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), Error> {
        let Trainer {
            config,
            prefix,
            metrics,
        } = self;
        pas_models::runtime::configure(config.threads, config.model.seed as i64)
            .map_err(|e| Error::Config(e.to_string()))?;
        let pas_nats::StageBus {
            conn,
            dead_letters,
            health,
        } = pas_nats::start_stage(
            &config.nats,
            "pas-trainer",
            Stage::Trainer,
            &prefix,
            config.listen,
            |r| metrics.register(r),
            &shutdown,
        )
        .await?;
        let js = conn.jetstream.clone();
        // Waits for what `pas bus init` provisions rather than exiting.
        let opened = pas_nats::wait_for("the pas-models and pas-history buckets", &shutdown, || async {
            let bucket = js
                .get_object_store(pas_schemas::subjects::BUCKET_MODELS)
                .await
                .map_err(|e| pas_nats::Error::js("open the pas-models bucket", e))?;
            let chunks = pas_nats::open_stream(&js, &pas_nats::definitions::object_stream()).await?;
            let history = js
                .get_key_value(pas_schemas::subjects::BUCKET_HISTORY)
                .await
                .map_err(|e| pas_nats::Error::js("open the pas-history bucket", e))?;
            Ok((bucket, chunks, history))
        })
        .await?;
        let Some((bucket, chunks, history)) = opened else {
            return Ok(());
        };
        let Some(jobs) = pas_nats::bind(&js, Stage::Trainer, STREAM_TRAINING, &prefix, &shutdown).await?
        else {
            return Ok(());
        };
        let samples = pas_nats::wait_for("stream PAS_SAMPLES", &shutdown, || {
            pas_nats::open_stream(&js, STREAM_SAMPLES)
        })
        .await?;
        let Some(samples) = samples else {
            return Ok(());
        };
        let layout = Layout::new(&prefix);
        let models = store::load(&bucket, &chunks, &layout).await?;
        tracing::info!(keys = models.len(), "Read stored model versions.");
        let (state, from) = rebuild(&config, &prefix, &metrics, &samples).await?;
        health.set_ready(true);
        // Each replica holds every workload's series, so any can take any job.
        let consuming = {
            let (state, metrics) = (state.clone(), metrics.clone());
            pas_nats::follow_pod_samples(
                samples,
                &prefix,
                "trainer".into(),
                from,
                (dead_letters, config.admission),
                shutdown.clone(),
                move |sample, sequence| fold(&state, &metrics, &sample, sequence),
            )
        };
        // Readiness fails when the training loop stops advancing; each job beats.
        let beat = health.heartbeat(
            "training loop",
            (3 * config.check_interval).max(Duration::from_secs(600)),
        );
        let mut training = Training {
            config,
            prefix,
            metrics,
            bucket,
            chunks,
            history,
            layout,
            js: js.clone(),
            client: conn.client.clone(),
            global: None,
            global_attempt: None,
            global_checked: None,
            models,
            state,
            attempts: HashMap::new(),
        };
        training.global = training.load_global().await;
        training.run(&jobs.consumer, &beat, &shutdown).await;
        health.set_ready(false);
        // Each step of the way out is bounded, so SIGTERM exits in time even
        // with NATS down.
        consuming.stop().await;
        conn.drain().await;
        Ok(())
    }
}

/// Each workload's series, rebuilt from the samples the stream holds
/// (through the same door as live samples), and where to follow the
/// stream from.
async fn rebuild(
    config: &Config,
    prefix: &Prefix,
    metrics: &Metrics,
    samples: &async_nats::jetstream::stream::Stream,
) -> Result<(Arc<Mutex<Workloads>>, DeliverPolicy), Error> {
    let step = config.step.as_secs() as u32;
    let open_steps = config.lateness.as_secs().div_ceil(u64::from(step)) as usize;
    let state = Arc::new(Mutex::new(Workloads::new(step, config.max_history, open_steps)));
    let lookback = config.step * config.max_history as u32 + Duration::from_secs(3600);
    let since = time::OffsetDateTime::now_utc() - lookback;
    let door = Some((&config.admission, prefix.run().is_some()));
    let mut last = None;
    let rebuilt = pas_nats::read_samples(
        samples,
        &prefix.all_pod_cpu(),
        since,
        None,
        door,
        |sample, sequence| {
            last = Some(sequence);
            fold(&state, metrics, &sample, sequence)
        },
    )
    .await?;
    tracing::info!(samples = rebuilt, "Rebuilt workload series from the stream.");
    let from = match last {
        Some(sequence) => DeliverPolicy::ByStartSequence {
            start_sequence: sequence + 1,
        },
        None => DeliverPolicy::ByStartTime { start_time: since },
    };
    Ok((state, from))
}

/// The training loop's state: what is stored, what is folded, what was tried.
struct Training {
    config: Config,
    prefix: Prefix,
    metrics: Metrics,
    bucket: ObjectStore,
    /// The bucket's stream, for reading objects whole.
    chunks: async_nats::jetstream::stream::Stream,
    /// The workloads' coarse history (`pas-history`), read for the
    /// seasonal context.
    history: async_nats::jetstream::kv::Store,
    layout: Layout,
    js: async_nats::jetstream::Context,
    client: async_nats::Client,
    /// What is stored, by model key: read at start, then kept up to date
    /// with what this replica stores and, before each job, what the others
    /// did ([`Training::refresh`]).
    models: HashMap<String, Versions>,
    state: Arc<Mutex<Workloads>>,
    /// When this replica last queued each workload's job (end of its data).
    attempts: HashMap<WorkloadKey, chrono::DateTime<Utc>>,
    /// The newest accepted global model (its version and network), which
    /// each workload's own model is fine-tuned from and compared with.
    /// (Behind a lock only so the loop's future may move between threads.)
    global: Option<(u64, Mutex<Lstm>)>,
    /// When the global model was last tried (end of its data).
    global_attempt: Option<chrono::DateTime<Utc>>,
    /// When this replica last read the bucket for newer global versions.
    global_checked: Option<Instant>,
}

impl Training {
    /// Until `shutdown`: every `check_interval`, forgets silent workloads
    /// and queues a job for each model due ([`Training::schedule`]); in
    /// between, takes jobs from the queue one at a time
    /// ([`Training::work`]), whichever replica queued them.
    async fn run(
        &mut self,
        jobs: &PullConsumer,
        beat: &pas_runtime::health::Heartbeat,
        shutdown: &CancellationToken,
    ) {
        let mut next_check = Instant::now();
        while !shutdown.is_cancelled() {
            if Instant::now() >= next_check {
                self.forget();
                self.schedule(shutdown).await;
                next_check = Instant::now() + self.config.check_interval;
            }
            let wait = next_check
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(50));
            let fetched = async {
                let mut batch = jobs.fetch().max_messages(1).expires(wait).messages().await?;
                batch.next().await.transpose()
            };
            let job = tokio::select! {
                _ = shutdown.cancelled() => break,
                job = fetched => job,
            };
            match job {
                // Ready while jobs can be taken: a consumer that keeps
                // failing stops the beat.
                Ok(Some(msg)) => {
                    beat.beat();
                    if self.work(msg, shutdown).await.is_break() {
                        return;
                    }
                }
                Ok(None) => beat.beat(),
                Err(error) => {
                    tracing::warn!(%error, "Taking a job from the queue failed; trying again.");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }

    /// Queues a job for the global model when it is due and for each
    /// workload due, once per `retrain_after` of data from this replica.
    /// The queue holds one job per model: a job another replica queued
    /// and no one has finished yet is not queued twice.
    async fn schedule(&mut self, shutdown: &CancellationToken) {
        let mut queue = Vec::new();
        if self.config.global
            && let Some(to) = self.global_due()
        {
            self.global_attempt = Some(to);
            queue.push((None, to));
        }
        for (key, to) in due(&self.config, &self.state, &self.models, &self.attempts) {
            self.attempts.insert(key.clone(), to);
            queue.push((Some(key), to));
        }
        let mut queue = queue.into_iter();
        for (key, to) in queue.by_ref() {
            if shutdown.is_cancelled() {
                break;
            }
            let job = TrainJob {
                schema_version: SCHEMA_VERSION,
                timestamp: Utc::now(),
                namespace: key.as_ref().map(|k| k.namespace.clone()),
                workload: key.as_ref().map(|k| k.workload.clone()),
                data_to: to,
            };
            let outcome = self.queue(&job).await;
            self.metrics.jobs.get_or_create(&Outcome { outcome }).inc();
            if outcome == "failed" {
                // Queued again at the next check, with the rest: with NATS
                // down each would wait for its ack timeout.
                self.forget_attempt(key.as_ref());
                break;
            }
        }
        for (key, _) in queue {
            self.forget_attempt(key.as_ref());
        }
    }

    /// Forgets that a workload's (or, for `None`, the global model's) job
    /// was queued, so the next check queues it.
    fn forget_attempt(&mut self, key: Option<&WorkloadKey>) {
        match key {
            Some(key) => {
                self.attempts.remove(key);
            }
            None => self.global_attempt = None,
        }
    }

    /// Publishes one job: `queued`, `already_queued` (the queue holds one
    /// for that model), or `failed` (logged).
    async fn queue(&self, job: &TrainJob) -> &'static str {
        let subject = self
            .prefix
            .train(job.namespace.as_deref().zip(job.workload.as_deref()));
        let sent = async {
            let subject = subject.map_err(pas_nats::Error::Subject)?;
            let out = pas_nats::Outgoing::new(subject, job)?;
            pas_nats::publish(&self.js, &out)
                .await?
                .await
                .map_err(|e| pas_nats::Error::js("queue a training job", e))
        };
        match sent.await {
            Ok(_) => "queued",
            Err(error) if error.to_string().contains("maximum messages per subject") => "already_queued",
            Err(error) => {
                tracing::warn!(key = job.key(), %error, "Queuing a training job failed; will try again.");
                "failed"
            }
        }
    }

    /// Does one job: trains and stores the version, then acks. A job whose
    /// model was trained on data at least as new since (by another
    /// replica) is acked as done; a job that cannot be read, or that was
    /// handed out [`MAX_DELIVERIES`] times, is logged, counted (`invalid`,
    /// `poisoned`) and dropped (`Term`: a work queue keeps a message past
    /// its deliveries, and this one allows one job per model). A job whose
    /// version could not be stored, or whose workload this replica does not
    /// hold, is handed back for another try in 10 s (`Nak`); on shutdown at
    /// once. While it works, the job's `ack_wait` is extended every 10 s,
    /// so only a replica that died leaves it to another.
    async fn work(
        &mut self,
        msg: async_nats::jetstream::Message,
        shutdown: &CancellationToken,
    ) -> std::ops::ControlFlow<()> {
        let jobs = self.metrics.jobs.clone();
        let count = move |outcome: &'static str| jobs.get_or_create(&Outcome { outcome }).inc();
        let job = match pas_schemas::decode::<TrainJob>(&msg.payload) {
            Ok(job) => job,
            Err(error) => {
                tracing::warn!(subject = %msg.subject, %error, "A training job that cannot be read; dropping it.");
                count("invalid");
                let _ = msg.ack_with(AckKind::Term).await;
                return std::ops::ControlFlow::Continue(());
            }
        };
        let key = job.key();
        if msg.info().is_ok_and(|i| i.delivered > MAX_DELIVERIES) {
            tracing::warn!(
                key,
                "A training job was handed out {MAX_DELIVERIES} times without finishing; dropping it (the next check queues it again)."
            );
            count("poisoned");
            let _ = msg.ack_with(AckKind::Term).await;
            return std::ops::ControlFlow::Continue(());
        }
        let keepalive = {
            let msg = msg.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_secs(10));
                every.tick().await;
                loop {
                    every.tick().await;
                    if let Err(error) = msg.ack_with(AckKind::Progress).await {
                        tracing::warn!(%error, "Extending a job's ack wait failed.");
                    }
                }
            })
        };
        self.refresh(&key).await;
        let trained_to = self
            .models
            .get(&key)
            .and_then(|v| v.values().map(|m| m.training.to).max());
        let flow = if trained_to.is_some_and(|t| t >= job.data_to) {
            tracing::info!(key, "Job already done by another replica; skipping it.");
            count("done_before");
            std::ops::ControlFlow::Continue(true)
        } else if job.namespace.is_none() {
            self.train_global(shutdown).await
        } else {
            // What other replicas made of the global model, read at most
            // once per check rather than before every job.
            if self
                .global_checked
                .is_none_or(|at| at.elapsed() >= self.config.check_interval)
            {
                self.refresh(GLOBAL).await;
                self.follow_global().await;
                self.global_checked = Some(Instant::now());
            }
            let due = job
                .namespace
                .clone()
                .zip(job.workload.clone())
                .and_then(|(namespace, workload)| self.series_of(&WorkloadKey { namespace, workload }));
            match due {
                Some(due) => self.train(due, shutdown).await,
                None => {
                    tracing::info!(key, "No series for this job's workload here; handing it back.");
                    std::ops::ControlFlow::Continue(false)
                }
            }
        };
        keepalive.abort();
        match flow {
            std::ops::ControlFlow::Break(()) => {
                // Another replica takes it now, not after ack_wait.
                let _ = msg.ack_with(AckKind::Nak(None)).await;
                std::ops::ControlFlow::Break(())
            }
            std::ops::ControlFlow::Continue(false) => {
                count("retry");
                let _ = msg.ack_with(AckKind::Nak(Some(Duration::from_secs(10)))).await;
                std::ops::ControlFlow::Continue(())
            }
            std::ops::ControlFlow::Continue(true) => {
                count("done");
                if let Err(error) = msg.double_ack().await {
                    tracing::warn!(key, %error, "Acking a finished job failed; another replica may find it done.");
                }
                std::ops::ControlFlow::Continue(())
            }
        }
    }

    /// Reads the versions of `key` other replicas stored since this one
    /// last looked: every manifest after the newest it knows, as far as
    /// `keep_versions` + 1 ahead (older ones may be pruned), again from the
    /// newest found until none is.
    async fn refresh(&mut self, key: &str) {
        let reach = self.config.keep_versions as u64 + 1;
        loop {
            let known = self
                .models
                .get(key)
                .and_then(|v| v.keys().next_back().copied())
                .unwrap_or(0);
            let mut found = false;
            for version in known + 1..=known + reach {
                let name = self.layout.object(key, version, "manifest.json");
                let Ok(bytes) = store::read(&self.bucket, &self.chunks, &name).await else {
                    continue;
                };
                if let Ok(m) = pas_schemas::decode::<ModelManifest>(&bytes)
                    && m.key == key
                    && m.version == version
                {
                    self.models.entry(key.to_owned()).or_default().insert(version, m);
                    found = true;
                }
            }
            if !found {
                return;
            }
        }
    }

    /// Loads the newest accepted global version when another replica
    /// stored a newer one than this replica holds.
    async fn follow_global(&mut self) {
        let newest = self
            .models
            .get(GLOBAL)
            .and_then(|v| v.values().rev().find(|m| m.accepted))
            .map(|m| m.version);
        let held = self.global.as_ref().map(|(v, _)| *v);
        if newest.is_some()
            && newest > held
            && let Some(global) = self.load_global().await
        {
            self.global = Some(global);
        }
    }

    /// `key`'s series, ready to train, if this replica holds it.
    fn series_of(&self, key: &WorkloadKey) -> Option<Due> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (steps, range) = state.series(key)?;
        let saturated = steps.saturated.clone();
        Some((key.clone(), steps.into(), saturated, range))
    }

    /// Forgets workloads with no samples for `forget_after`.
    fn forget(&mut self) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let forgot = state.forget_silent(self.config.forget_after);
        if forgot > 0 {
            self.attempts.retain(|key, _| state.steps(key) > 0);
            self.metrics.workloads.set(state.len() as i64);
            tracing::info!(
                workloads = forgot,
                "Forgot workloads with no samples for forget_after."
            );
        }
    }

    /// Trains and stores one version of `key`'s model. `Break` when
    /// `shutdown` came first (the fit ends at its next batch; the version is
    /// trained again after a restart).
    async fn train(
        &mut self,
        (key, series, lower_bounds, range): Due,
        shutdown: &CancellationToken,
    ) -> std::ops::ControlFlow<(), bool> {
        self.attempts.insert(key.clone(), range.to);
        let series = self.with_history(&key, series).await;
        let versions = self.models.entry(key.model_key()).or_default();
        let version = versions.keys().next_back().copied().unwrap_or(0) + 1;
        tracing::info!(
            workload = key.model_key(),
            version,
            steps = series.len(),
            "Training a version."
        );
        let stop = Arc::new(AtomicBool::new(false));
        let global = match &self.global {
            Some((v, model)) => match model.lock().unwrap_or_else(|p| p.into_inner()).try_clone() {
                Ok(copy) => Some((*v, copy)),
                Err(error) => {
                    tracing::warn!(%error, "Copying the global model failed; training this workload's model alone.");
                    None
                }
            },
            None => None,
        };
        let job = Job {
            key: key.clone(),
            version,
            series,
            lower_bounds,
            range,
            config: self.config.clone(),
            stop: stop.clone(),
            global,
        };
        let started = Instant::now();
        let Some(outcome) = off_runtime(move || job.train(), &stop, shutdown).await else {
            tracing::info!(
                workload = key.model_key(),
                version,
                "Stopping: left this version's training unfinished."
            );
            return std::ops::ControlFlow::Break(());
        };
        if let Some((manifest, weights)) = self.trained(&key.model_key(), outcome) {
            let stored = self.store(Some(&key), manifest, &weights, started).await;
            if !stored {
                // Train again at the next check: the version was not recorded.
                self.attempts.remove(&key);
                return std::ops::ControlFlow::Continue(false);
            }
        }
        std::ops::ControlFlow::Continue(true)
    }

    /// What a training run made, or None after logging and counting why
    /// it made nothing.
    fn trained<T>(
        &self,
        key: &str,
        outcome: Result<Result<T, pas_models::Error>, tokio::task::JoinError>,
    ) -> Option<T> {
        match outcome {
            Ok(Ok(made)) => Some(made),
            Ok(Err(error)) => {
                self.metrics.failures.inc();
                tracing::warn!(key, %error, "Training failed; will try again with more data.");
                None
            }
            Err(error) => {
                self.metrics.failures.inc();
                tracing::error!(key, %error, "Training panicked.");
                None
            }
        }
    }

    /// Stores, announces and counts a version of `key` (a workload's, or
    /// the global model's for `None`); false when it could not be stored.
    async fn store(
        &mut self,
        key: Option<&WorkloadKey>,
        manifest: ModelManifest,
        weights: &[u8],
        started: Instant,
    ) -> bool {
        let label = outcome_label(&manifest);
        let (name, version) = (manifest.key.clone(), manifest.version);
        let versions = self.models.entry(name.clone()).or_default();
        let stored = store_version(
            &self.bucket,
            &self.layout,
            &self.client,
            &self.prefix,
            key,
            versions,
            manifest,
            weights,
            self.config.keep_versions,
        )
        .await;
        match stored {
            Ok(()) => {
                self.metrics
                    .versions
                    .get_or_create(&Outcome { outcome: label })
                    .inc();
                tracing::info!(
                    key = name,
                    version,
                    outcome = label,
                    seconds = started.elapsed().as_secs_f64(),
                    "Stored a model version."
                );
                true
            }
            Err(error) => {
                self.metrics.failures.inc();
                tracing::warn!(key = name, version, %error, "Storing a model version failed.");
                false
            }
        }
    }
}

/// Runs a training job on a blocking thread (it takes seconds to
/// minutes); None when `shutdown` came first: `stop` is set, so the fit
/// ends at its next batch, and SIGTERM does not wait for it.
async fn off_runtime<T: Send + 'static>(
    job: impl FnOnce() -> T + Send + 'static,
    stop: &AtomicBool,
    shutdown: &CancellationToken,
) -> Option<Result<T, tokio::task::JoinError>> {
    let mut training = tokio::task::spawn_blocking(job);
    tokio::select! {
        outcome = &mut training => Some(outcome),
        _ = shutdown.cancelled() => {
            stop.store(true, Ordering::Relaxed);
            let _ = pas_nats::within(Duration::from_secs(3), "stop training", training).await;
            None
        }
    }
}

impl Training {
    /// `series` with its workload's coarse history: the series' own steps,
    /// and the older days the forecasters stored in `pas-history` (14 days;
    /// the series holds at most `max_history` steps). Without the stored
    /// part when it cannot be read: the model then sees fewer seasons.
    async fn with_history(&self, key: &WorkloadKey, mut series: pas_models::Series) -> pas_models::Series {
        let coarse = coarse_step_for(series.step_seconds);
        let span = u64::from(series.step_seconds) * series.len() as u64;
        let mut history = History::new(coarse, span.max(DEFAULT_KEEP_SECONDS));
        let newest = history.block_of(series.time_at(series.len().saturating_sub(1)));
        let blocks: Vec<i64> = (newest + 1 - history.keep_blocks() as i64..=newest).collect();
        let keys = self.prefix.keys();
        let read =
            pas_nats::history::read(&self.history, &keys, &key.namespace, &key.workload, &blocks).await;
        let outcome = if read.is_ok() { "ok" } else { "failed" };
        self.metrics
            .history_reads
            .get_or_create(&Outcome { outcome })
            .inc();
        match read {
            Ok(read) => {
                for block in read.blocks {
                    if let Err(error) = history.merge(block) {
                        tracing::warn!(
                            workload = key.model_key(),
                            error,
                            "A stored history block was refused."
                        );
                    }
                }
            }
            Err(error) => {
                tracing::warn!(workload = key.model_key(), %error, "Reading the stored history failed; training on the series' own.");
            }
        }
        // The stored blocks first: the series' first slot, seen only in
        // part, then fills a gap but never replaces a stored mean.
        history.record_series(series.start, series.step_seconds, &series.values);
        series.seasonal = Some(Arc::new(history));
        series
    }
}

/// The key of the global model in `pas-models`.
pub const GLOBAL: &str = "global";

/// Times a job is handed out before it is dropped as poisoned (a replica
/// that dies on it each time, or keeps handing it back).
const MAX_DELIVERIES: i64 = 5;

impl Training {
    /// The newest accepted global version from the bucket, as a network
    /// (at start: what a restarted trainer fine-tunes from). None when
    /// there is none or it cannot be read (the next global round makes one).
    async fn load_global(&self) -> Option<(u64, Mutex<Lstm>)> {
        let manifest = self
            .models
            .get(GLOBAL)?
            .values()
            .rev()
            .find(|m| m.accepted)?
            .clone();
        let name = self
            .layout
            .object(GLOBAL, manifest.version, "weights.safetensors");
        let bytes = store::read(&self.bucket, &self.chunks, &name).await;
        let built = bytes.map_err(|e| e.to_string()).and_then(|bytes| {
            let params = serde_json::Value::Object(manifest.hyper_parameters.clone().into_iter().collect());
            let config: pas_models::lstm::LstmConfig =
                serde_json::from_value(params).map_err(|e| format!("hyper-parameters: {e}"))?;
            Lstm::from_safetensors(config, &manifest.normalisation, &bytes).map_err(|e| e.to_string())
        });
        match built {
            Ok(model) => {
                tracing::info!(version = manifest.version, "Read the global model.");
                Some((manifest.version, Mutex::new(model)))
            }
            Err(error) => {
                tracing::warn!(version = manifest.version, %error, "Reading the global model failed; the next global round trains one.");
                None
            }
        }
    }

    /// When the global model is due, the newest step of the data: some
    /// workload has `min_history` steps, and the data reaches
    /// `retrain_after` past the newest global version's (or its last
    /// attempt's), or there is none.
    fn global_due(&self) -> Option<chrono::DateTime<Utc>> {
        let newest = {
            let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            state
                .keys()
                .into_iter()
                .filter(|k| state.steps(k) >= self.config.min_history)
                .filter_map(|k| state.newest(&k))
                .max()
        };
        let newest = newest?;
        let trained_to = self
            .models
            .get(GLOBAL)
            .and_then(|v| v.values().map(|m| m.training.to).max());
        let retrain =
            chrono::TimeDelta::from_std(self.config.retrain_after).unwrap_or(chrono::TimeDelta::MAX);
        trained_to
            .max(self.global_attempt)
            .is_none_or(|t| newest - t >= retrain)
            .then_some(newest)
    }

    /// Trains and stores a version of the global model across every
    /// workload with `min_history` steps. `Break` when `shutdown` came first.
    async fn train_global(&mut self, shutdown: &CancellationToken) -> std::ops::ControlFlow<(), bool> {
        let eligible: Vec<Due> = due(&self.config, &self.state, &HashMap::new(), &HashMap::new())
            .into_iter()
            .filter_map(|(key, _)| self.series_of(&key))
            .collect();
        let mut series = Vec::with_capacity(eligible.len());
        let mut range: Option<TrainingRange> = None;
        for (key, s, lower_bounds, r) in eligible {
            let mut s = self.with_history(&key, s).await;
            s.fill_gaps(self.config.max_fill);
            s.mask(&lower_bounds);
            series.push(s);
            range = Some(match range {
                None => r,
                Some(a) => TrainingRange {
                    first_sequence: a.first_sequence.min(r.first_sequence),
                    last_sequence: a.last_sequence.max(r.last_sequence),
                    from: a.from.min(r.from),
                    to: a.to.max(r.to),
                },
            });
        }
        let Some(range) = range else {
            return std::ops::ControlFlow::Continue(true);
        };
        let versions = self.models.entry(GLOBAL.to_owned()).or_default();
        let version = versions.keys().next_back().copied().unwrap_or(0) + 1;
        tracing::info!(
            version,
            workloads = series.len(),
            "Training a global model version."
        );
        let stop = Arc::new(AtomicBool::new(false));
        let job = GlobalJob {
            version,
            series,
            range,
            config: self.config.clone(),
            stop: stop.clone(),
        };
        let started = Instant::now();
        let Some(outcome) = off_runtime(move || job.train(), &stop, shutdown).await else {
            tracing::info!(version, "Stopping: left the global model's training unfinished.");
            return std::ops::ControlFlow::Break(());
        };
        if let Some((manifest, weights, model)) = self.trained(GLOBAL, outcome) {
            let accepted = manifest.accepted;
            if !self.store(None, manifest, &weights, started).await {
                self.global_attempt = None;
                return std::ops::ControlFlow::Continue(false);
            } else if accepted {
                self.global = Some((version, Mutex::new(model)));
            }
        }
        std::ops::ControlFlow::Continue(true)
    }
}

/// One training run of the global model, off the async runtime.
struct GlobalJob {
    version: u64,
    /// Every eligible workload's series, gaps filled and saturated steps masked.
    series: Vec<pas_models::Series>,
    range: TrainingRange,
    config: Config,
    stop: Arc<AtomicBool>,
}

impl GlobalJob {
    /// Trains on the head of every series (at most `global_pool` examples),
    /// then backtests it against the naive forecast on the tails of at most
    /// `global_gate` of them: accepted when its mean MASE is lower.
    fn train(self) -> Result<(ModelManifest, Vec<u8>, Lstm), pas_models::Error> {
        let c = &self.config;
        let heads: Vec<pas_models::Series> = self
            .series
            .iter()
            .map(|s| s.slice(0..((s.len() as f64) * (1.0 - c.test_fraction)) as usize))
            .collect();
        let (model, fit) = pas_models::global::train(
            &heads,
            &c.model,
            c.global_pool,
            Some(self.stop.clone()),
            &mut |_| {},
        )?;
        let gate: Vec<&pas_models::Series> = spread(&self.series, c.global_gate);
        let eval_config = EvalConfig {
            horizon: c.model.horizon,
            test_fraction: c.test_fraction,
            stride: 1,
            max_fill: c.max_fill,
            step_seconds: None,
        };
        let (mut ours, mut naive, mut scored) = (0.0, 0.0, 0usize);
        if !fit.diverged {
            for (i, s) in gate.iter().enumerate() {
                let mut frozen = model.frozen()?;
                let mut baseline = Naive::new(c.model.horizon, c.model.quantile);
                let mut models: [&mut dyn Forecaster; 2] = [&mut baseline, &mut frozen];
                let Ok(report) = eval::backtest(
                    &format!("gate-{i}"),
                    s,
                    Default::default(),
                    &mut models,
                    &eval_config,
                    &mut |_| {},
                ) else {
                    continue;
                };
                if let [n, g] = &report.models[..]
                    && n.error.is_none()
                    && g.error.is_none()
                {
                    naive += n.mase;
                    ours += g.mase;
                    scored += 1;
                }
            }
        }
        let mut validation = std::collections::BTreeMap::new();
        if scored > 0 {
            validation.insert(ModelKind::Global.name().to_owned(), ours / scored as f64);
            validation.insert(ModelKind::Naive.name().to_owned(), naive / scored as f64);
        }
        validation.insert("workloads".into(), scored as f64);
        validation.insert("series".into(), self.series.len() as f64);
        if fit.diverged {
            validation.insert("diverged".into(), 1.0);
        }
        let accepted = !fit.diverged && scored > 0 && ours < naive;
        let verdict = if scored == 0 {
            "not scored: no workload had a usable backtest".to_owned()
        } else {
            format!(
                "trained on {} workloads; mean MASE {:.3} against naive {:.3} on {scored} of them",
                self.series.len(),
                ours / scored as f64,
                naive / scored as f64
            )
        };
        let weights = model.to_safetensors()?;
        let manifest = ModelManifest {
            schema_version: SCHEMA_VERSION,
            timestamp: Utc::now(),
            key: GLOBAL.to_owned(),
            version: self.version,
            architecture: ModelKind::Lstm.name().to_owned(),
            hyper_parameters: model.config().hyper_parameters(),
            step_seconds: self.config.step.as_secs_f64(),
            window: c.model.window as u32,
            horizon: c.model.horizon as u32,
            normalisation: model.normalisation(),
            training: self.range,
            validation,
            digest: pas_models::digest(&weights),
            accepted,
            // Offsets in millicores mean nothing across workloads of every size.
            calibration: None,
            verdict: Some(verdict),
        };
        Ok((manifest, weights, model))
    }
}

/// At most `n` of `items`, spread evenly.
fn spread<T>(items: &[T], n: usize) -> Vec<&T> {
    if items.len() <= n {
        return items.iter().collect();
    }
    (0..n).map(|i| &items[i * items.len() / n]).collect()
}

fn outcome_label(manifest: &ModelManifest) -> &'static str {
    if manifest.accepted {
        "accepted"
    } else if manifest.validation.contains_key("diverged") {
        "diverged"
    } else {
        "rejected"
    }
}

fn fold(state: &Mutex<Workloads>, metrics: &Metrics, sample: &CpuSample, sequence: u64) {
    let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
    match state.fold(sample, sequence) {
        Fold::Folded => {
            metrics.samples.inc();
            metrics.workloads.set(state.len() as i64);
        }
        Fold::Duplicate => {
            metrics
                .ignored
                .get_or_create(&Reason { reason: "duplicate" })
                .inc();
        }
        Fold::Ignored(reason) => {
            metrics.ignored.get_or_create(&Reason { reason }).inc();
        }
    }
}

/// A workload due for training: its demand series, which of its steps are
/// lower bounds (saturated), and the range it covers.
type Due = (WorkloadKey, pas_models::Series, Vec<bool>, TrainingRange);

/// Workloads due for training, with the start of their newest step.
fn due(
    config: &Config,
    state: &Mutex<Workloads>,
    models: &HashMap<String, Versions>,
    attempts: &HashMap<WorkloadKey, chrono::DateTime<Utc>>,
) -> Vec<(WorkloadKey, chrono::DateTime<Utc>)> {
    let state = state.lock().unwrap_or_else(|p| p.into_inner());
    let retrain = chrono::TimeDelta::from_std(config.retrain_after).unwrap_or(chrono::TimeDelta::MAX);
    let mut out = Vec::new();
    for key in state.keys() {
        if state.steps(&key) < config.min_history {
            continue;
        }
        let Some(newest) = state.newest(&key) else {
            continue;
        };
        let trained_to = models
            .get(&key.model_key())
            .and_then(|v| v.values().map(|m| m.training.to).max());
        let attempted = attempts.get(&key).copied();
        let last = trained_to.max(attempted);
        if last.is_some_and(|t| newest - t < retrain) {
            continue;
        }
        out.push((key, newest));
    }
    out
}

/// Trains one version of a workload's model exactly as the stage does:
/// the LSTM on the head of `series`, a backtest against the baselines on
/// its tail, accepted only when it beats the naive baseline. Steps marked
/// in `lower_bounds` (a saturated pod: the demand was at least this) are
/// treated as missing after gap filling, so they are never a target of the
/// loss nor scored, and short runs of them are not interpolated over. `pas
/// experiment` calls this to train on the first part of a trace.
pub fn train_version(
    key: WorkloadKey,
    version: u64,
    series: pas_models::Series,
    lower_bounds: &[bool],
    range: TrainingRange,
    config: &Config,
) -> Result<(ModelManifest, Vec<u8>), pas_models::Error> {
    train_version_from(key, version, series, lower_bounds, range, config, None)
}

/// [`train_version`] where a global model is accepted, as the stage does
/// then: the workload's model is fine-tuned from `global` (its version and
/// network), scored beside it, and accepted only where it beats it.
pub fn train_version_from(
    key: WorkloadKey,
    version: u64,
    series: pas_models::Series,
    lower_bounds: &[bool],
    range: TrainingRange,
    config: &Config,
    global: Option<(u64, &Lstm)>,
) -> Result<(ModelManifest, Vec<u8>), pas_models::Error> {
    let global = match global {
        Some((v, model)) => Some((v, model.try_clone()?)),
        None => None,
    };
    Job {
        key,
        version,
        series,
        lower_bounds: lower_bounds.to_vec(),
        range,
        config: config.clone(),
        stop: Arc::default(),
        global,
    }
    .train()
}

/// Trains and backtests a version of the global model on `series` (each
/// a workload's, gaps filled and saturated steps masked) exactly as the
/// stage does: returns its manifest, weights and network.
pub fn train_global_version(
    version: u64,
    series: Vec<pas_models::Series>,
    range: TrainingRange,
    config: &Config,
) -> Result<(ModelManifest, Vec<u8>, Lstm), pas_models::Error> {
    GlobalJob {
        version,
        series,
        range,
        config: config.clone(),
        stop: Arc::default(),
    }
    .train()
}

/// One training run, off the async runtime.
struct Job {
    key: WorkloadKey,
    version: u64,
    series: pas_models::Series,
    /// Steps whose demand is only a lower bound.
    lower_bounds: Vec<bool>,
    range: TrainingRange,
    config: Config,
    /// Set when the trainer stops: the fit ends at its next batch.
    stop: Arc<AtomicBool>,
    /// The global model to fine-tune from and compare with, if one is accepted.
    global: Option<(u64, Lstm)>,
}

impl Job {
    /// Trains the LSTM on the head of the series, backtests it against the
    /// baselines on the tail, and returns the manifest and weights.
    fn train(mut self) -> Result<(ModelManifest, Vec<u8>), pas_models::Error> {
        let c = &self.config;
        let gaps = self.series.fill_gaps(c.max_fill);
        self.series.mask(&self.lower_bounds);
        let horizon = c.model.horizon;
        let quantile = c.model.quantile;
        // Fine-tuned from the global model where there is one (a few
        // epochs: a fraction of training alone), else trained alone.
        let (mut lstm, mut global) = match self.global.take() {
            Some((version, global)) => {
                let mut tuned = global.try_clone()?;
                tuned.retune(
                    c.fine_tune_epochs,
                    c.fine_tune_examples,
                    global.config().learning_rate / 3.0,
                );
                (tuned, Some((version, global.frozen()?)))
            }
            None => (Lstm::new(c.model.clone())?, None),
        };
        lstm.stop_when(self.stop.clone());
        let mut naive = Naive::new(horizon, quantile);
        let mut seasonal = SeasonalNaive::new(horizon, None, quantile);
        let mut holt = HoltWinters::new(horizon, None, quantile);
        let eval_config = EvalConfig {
            horizon,
            test_fraction: c.test_fraction,
            stride: 1,
            max_fill: c.max_fill,
            step_seconds: None,
        };
        let mut models: Vec<&mut dyn Forecaster> = vec![&mut naive, &mut seasonal, &mut holt];
        if let Some((_, g)) = global.as_mut() {
            models.push(g);
        }
        models.push(&mut lstm);
        let report = eval::backtest(
            &self.key.model_key(),
            &self.series,
            gaps,
            &mut models,
            &eval_config,
            &mut |_| {},
        )?;
        let mut validation = std::collections::BTreeMap::new();
        for m in report.models.iter().filter(|m| m.error.is_none()) {
            validation.insert(m.model.clone(), m.mase);
        }
        let ours = report.models.iter().find(|m| m.model == ModelKind::Lstm.name());
        let diverged = ours.is_some_and(|m| m.fit.diverged);
        if diverged {
            validation.insert("diverged".into(), 1.0);
        }
        if let Some(m) = ours.filter(|m| m.error.is_none()) {
            if let Some(c) = m.coverage {
                validation.insert("lstm_coverage".into(), c);
            }
            validation.insert("lstm_under_rate".into(), m.under_rate);
        }
        validation.insert("origins".into(), report.origins as f64);
        let beats_naive = match (validation.get("lstm"), validation.get("naive")) {
            (Some(l), Some(n)) => l < n,
            _ => false,
        };
        // Kept only where it beats the global model on the same origins.
        let (beats_global, verdict) = verdict(&validation, global.as_ref().map(|(v, _)| *v));
        if let Some(error) = ours.and_then(|m| m.error.as_ref()).filter(|_| !diverged) {
            return Err(pas_models::Error::Input(format!(
                "the LSTM could not be trained: {error}"
            )));
        }
        let weights = lstm.to_safetensors()?;
        // Split-conformal: the LSTM's errors on the held-out origins turn
        // its point forecast into calibrated quantiles.
        let calibration = ours
            .filter(|m| m.error.is_none() && m.residual_quantiles.len() == pas_schemas::QUANTILE_LEVELS.len())
            .filter(|_| report.origins >= pas_models::MIN_CALIBRATION_ORIGINS)
            .map(|m| pas_schemas::Calibration {
                levels: pas_schemas::QUANTILE_LEVELS.to_vec(),
                offsets: m.residual_quantiles.clone(),
                origins: report.origins as u64,
            });
        let manifest = ModelManifest {
            schema_version: SCHEMA_VERSION,
            timestamp: Utc::now(),
            key: self.key.model_key(),
            version: self.version,
            architecture: ModelKind::Lstm.name().to_owned(),
            hyper_parameters: lstm.config().hyper_parameters(),
            step_seconds: f64::from(self.series.step_seconds),
            window: c.model.window as u32,
            horizon: horizon as u32,
            normalisation: lstm.normalisation(),
            training: self.range,
            validation,
            digest: pas_models::digest(&weights),
            accepted: beats_naive && beats_global && !diverged,
            calibration,
            verdict: Some(verdict),
        };
        Ok((manifest, weights))
    }
}

/// Whether a workload's own model beats the global one (`global`: its
/// version, when one was compared) on the backtest's `validation`, and why
/// in words for the manifest.
fn verdict(validation: &std::collections::BTreeMap<String, f64>, global: Option<u64>) -> (bool, String) {
    let ours = validation.get(ModelKind::Lstm.name()).copied();
    let naive = validation.get(ModelKind::Naive.name()).copied();
    let fmt = |v: Option<f64>| v.map_or("none".to_owned(), |v| format!("{v:.3}"));
    let Some(version) = global else {
        return (
            true,
            format!(
                "trained alone (no accepted global model yet): MASE {} against naive {}",
                fmt(ours),
                fmt(naive)
            ),
        );
    };
    let theirs = validation.get(ModelKind::Global.name()).copied();
    match (ours, theirs) {
        (Some(o), Some(g)) if o < g => (
            true,
            format!(
                "fine-tuned from global v{version}; beats it here: MASE {o:.3} against {g:.3} (naive {})",
                fmt(naive)
            ),
        ),
        (Some(o), Some(g)) => (
            false,
            format!(
                "fine-tuned from global v{version}; the global model is as good here (MASE {g:.3} against {o:.3}), so it serves this workload"
            ),
        ),
        _ => (
            false,
            format!(
                "fine-tuned from global v{version}; not scored beside it (MASE {} against {})",
                fmt(ours),
                fmt(theirs)
            ),
        ),
    }
}

/// Stores a version (a workload's, or the global one for `None`),
/// announces it, and prunes old ones.
#[allow(clippy::too_many_arguments)]
async fn store_version(
    bucket: &ObjectStore,
    layout: &Layout,
    client: &async_nats::Client,
    prefix: &Prefix,
    key: Option<&WorkloadKey>,
    versions: &mut Versions,
    manifest: ModelManifest,
    weights: &[u8],
    keep: usize,
) -> Result<(), Error> {
    store::save(bucket, layout, &manifest, weights).await?;
    let subject = prefix
        .model(key.map(|k| (k.namespace.as_str(), k.workload.as_str())))
        .map_err(|e| Error::Config(format!("model {}: {e}", manifest.key)))?;
    let payload = pas_schemas::encode(&manifest).map_err(|e| Error::js("encode a manifest", e))?;
    if let Err(error) = client.publish(subject, payload.into()).await {
        // The bucket is the record; the announcement is a courtesy.
        tracing::warn!(%error, "Announcing a model version failed.");
    }
    let _ = client.flush().await;
    let key = manifest.key.clone();
    versions.insert(manifest.version, manifest);
    if let Err(error) = store::prune(bucket, layout, &key, versions, keep).await {
        // Stored and announced; old versions go at the next successful prune.
        tracing::warn!(workload = key, %error, "Deleting old model versions failed.");
    }
    Ok(())
}
