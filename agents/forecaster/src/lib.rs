//! The PAS forecaster (`pas forecaster`): turns the sample stream into
//! forecasts the scaler acts on.
//!
//! - **Input.** Each replica reads every pod sample of PAS_SAMPLES through
//!   a short-lived ordered consumer of its own, starting
//!   [`Config::history`] steps back (so its windows are whole before its
//!   first tick, also after a restart), and folds each into its workload's
//!   demand series, the newest [`Config::history`] steps
//!   ([`pas_workloads`]: the sum of the pods' CPU use per step in
//!   millicores, and their mean request; the same numbers the trainer trains
//!   on). No durable consumer: nothing another
//!   NATS user could pull from or change. Samples that fail validation go
//!   to `pas.dlq.forecaster`.
//! - **Ticks.** On every multiple of [`Config::tick`] (plus
//!   [`Config::tick_delay`]) it forecasts each workload of its partitions
//!   ([`shard`]) whose newest step has closed since its last forecast, and
//!   publishes to `pas.forecast.<namespace>.<workload>`. The step a window
//!   ends on is closed once a later step has data or its time has passed.
//!   A workload with no sample for [`Config::stale_after`] is not forecast;
//!   after [`Config::forget_after`] it is forgotten.
//! - **Coarse history** ([`history`]): each owned workload's demand at
//!   [`Config::coarse_step`] (5 minutes) for [`Config::coarse_keep`] (14
//!   days), kept in
//!   the key-value bucket `pas-history`, so it survives restarts.
//! - **Models** ([`models`]): the newest accepted version from `pas-models`,
//!   swapped in when it appears; a workload without one gets the naive
//!   forecast (last value, with an upper bound from its recent errors), and
//!   its forecasts say `naive`, version 0.
//! - **Inference** is batched: a tick's windows go in slices of 256, each
//!   one input tensor through [`pas_models::batch::predict_batch`] on a
//!   blocking thread, and a slice's forecasts are published while the next
//!   is inferred (a forecast waits for its slice, not the whole tick). The
//!   global model, which many workloads share, runs through libtorch's
//!   fused LSTM with its weights once.
//! - **One pure core.** A tick is [`window`] per workload (the series up to
//!   its closed step, short holes filled, the model that serves it) and then
//!   [`forecast`] (windows and models in, forecast messages out: no clock,
//!   no I/O). `pas experiment` calls exactly these two, so its numbers are
//!   the pipeline's.

pub mod models;
pub mod shard;

mod config;
mod error;
mod history;
mod metrics;

pub use config::Config;
pub use error::Error;
pub use metrics::Metrics;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::DeliverPolicy;
use chrono::{DateTime, TimeDelta, Utc};
use pas_models::Prediction;
use pas_models::batch::{LstmWeights, predict_batch};
use pas_nats::Outgoing;
use pas_nats::kv_writer::KvWriter;
use pas_nats::model_store::Layout;
use pas_schemas::subjects::{
    BUCKET_FORECASTER, BUCKET_HISTORY, BUCKET_MODELS, Keys, Prefix, STREAM_SAMPLES, Stage,
};
use pas_schemas::{CpuSample, Forecast, ModelRef, QuantileForecast, SCHEMA_VERSION};
use pas_workloads::history::History;
use pas_workloads::{Fold, Steps, WorkloadKey, Workloads};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::history::Histories;
use crate::models::{Loader, Models, Served};
use crate::shard::Shard;

/// What the forecaster knows of one workload besides its series.
#[derive(Debug)]
struct Tracked {
    partition: u32,
    /// Window end of the last forecast this replica published.
    last_end: Option<DateTime<Utc>>,
}

/// The series and bookkeeping of every workload seen.
struct Inputs {
    series: Workloads,
    tracked: HashMap<WorkloadKey, Tracked>,
    /// Coarse histories of the owned workloads.
    histories: Histories,
}

/// One workload's input to a tick ([`window`]).
#[derive(Debug, Clone)]
pub struct Window {
    /// The workload.
    pub key: WorkloadKey,
    /// Start of the window's last step, which has closed.
    pub window_end: DateTime<Utc>,
    /// Demand per step up to `window_end`, millicores, short holes filled.
    pub values: Vec<f64>,
    /// The per-pod CPU request of the newest step that has one, millicores.
    pub request: f64,
    /// The model that serves the workload (its own or the global one, when
    /// its window fits); the naive baseline when `None`.
    pub model: Option<Arc<Served>>,
    /// The seasonal context for the model's horizon
    /// ([`pas_models::seasonal::lags`]) when it reads one and the workload's
    /// coarse history is known; empty otherwise.
    pub lags: Vec<f64>,
}

/// How a tick forecasts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TickSettings {
    /// Steps the naive baseline predicts (a model predicts its own horizon).
    pub horizon: usize,
    /// Upper quantile of the naive baseline.
    pub quantile: f64,
    /// Models per batched inference pass.
    pub chunk: usize,
    /// The series' step, seconds.
    pub step_seconds: u32,
}

impl Config {
    /// What a tick forecasts with.
    pub fn tick_settings(&self) -> TickSettings {
        TickSettings {
            horizon: self.horizon,
            quantile: self.quantile,
            chunk: self.chunk,
            step_seconds: self.step.as_secs() as u32,
        }
    }
}

/// A workload's window for a forecast from its step `closed`: its demand
/// series up to and including that step, holes of at most `max_fill` steps
/// interpolated, with the per-pod request of its newest step that has one,
/// the model `models` serves it (when its window fits) and, when that model
/// reads it, the seasonal context from the workload's coarse `history`.
/// `None` when the closed step has no value or no request is known.
pub fn window(
    key: &WorkloadKey,
    steps: Steps,
    closed: DateTime<Utc>,
    max_fill: usize,
    models: &Models,
    history: Option<&History>,
) -> Option<Window> {
    let step = i64::from(steps.step_seconds.max(1));
    let n = usize::try_from((closed - steps.start).num_seconds().div_euclid(step) + 1).ok()?;
    let request = steps.request_at(n.checked_sub(1)?)?;
    let mut s = pas_models::Series::from(steps);
    if n > s.values.len() {
        return None;
    }
    s.values.truncate(n);
    s.fill_gaps(max_fill);
    if s.values.last().is_none_or(|v| v.is_nan()) {
        return None;
    }
    let model = models
        .get(&key.model_key())
        .filter(|m| s.values.len() >= m.weights.shape().window);
    let lags = match (&model, history) {
        (Some(m), Some(history)) if m.weights.shape().seasonal > 0 => {
            let horizon = m.weights.shape().horizon;
            pas_models::seasonal::lags(history, closed, s.step_seconds, horizon)
        }
        _ => Vec::new(),
    };
    Some(Window {
        key: key.clone(),
        window_end: closed,
        values: s.values,
        request,
        model,
        lags,
    })
}

/// A configured forecaster.
pub struct Forecaster {
    config: Config,
    prefix: Prefix,
    replica: String,
    metrics: Metrics,
    manual: Option<mpsc::Receiver<()>>,
}

impl Forecaster {
    /// Checks the configuration.
    pub fn new(config: Config) -> Result<Forecaster, Error> {
        config.check().map_err(Error::Config)?;
        let prefix = Prefix::for_run(config.run.as_deref()).map_err(Error::Config)?;
        let replica = config.replica_id();
        Ok(Forecaster {
            config,
            prefix,
            replica,
            metrics: Metrics::default(),
            manual: None,
        })
    }

    /// A handle on the metrics (for tests and embedding).
    pub fn metrics(&self) -> Metrics {
        self.metrics.clone()
    }

    /// Ticks when told through the returned sender instead of on the clock
    /// (for benchmarks that leave out the wait for the tick). Partition
    /// leases still follow the clock.
    pub fn manual_ticks(&mut self) -> mpsc::Sender<()> {
        let (tx, rx) = mpsc::channel(16);
        self.manual = Some(rx);
        tx
    }

    /// Runs until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), Error> {
        let Forecaster {
            config,
            prefix,
            replica,
            metrics,
            manual,
        } = self;
        pas_models::runtime::configure(config.threads, 0).map_err(|e| Error::Config(e.to_string()))?;
        let client = format!("pas-forecaster-{replica}");
        let pas_nats::StageBus {
            conn,
            dead_letters,
            health,
        } = pas_nats::start_stage(
            &config.nats,
            &client,
            Stage::Forecaster,
            &prefix,
            config.listen,
            |r| metrics.register(r),
            &shutdown,
        )
        .await?;
        let js = conn.jetstream.clone();

        // Waits for what `pas bus init` provisions rather than exiting.
        let opened = open_stores(&js, &shutdown).await?;
        let Some((bucket, chunks, stream, kv, history_kv)) = opened else {
            return Ok(());
        };

        // Models: everything stored now, then whatever appears.
        let served = Arc::new(Models::default());
        let step = config.step.as_secs();
        let rescan = Duration::from_secs(300);
        let loader = Loader::new(
            (bucket, chunks),
            Layout::new(&prefix),
            step,
            (config.history, config.lead),
            (served.clone(), metrics.clone()),
            health.heartbeat("model loader", 2 * rescan + Duration::from_secs(60)),
        );
        let loading = tokio::spawn(loader.run(shutdown.clone(), rescan));

        let open_steps = config.lateness.as_secs().div_ceil(step) as usize;
        let inputs = Arc::new(Mutex::new(Inputs {
            series: Workloads::new(step as u32, config.history, open_steps),
            tracked: HashMap::new(),
            histories: Histories::new(
                config.coarse_step().as_secs() as u32,
                config.coarse_keep.as_secs(),
            ),
        }));
        // Samples keep flowing until the last tick is done.
        let stop_consuming = CancellationToken::new();
        let consuming = follow_samples(
            stream,
            &config,
            &prefix,
            &replica,
            (inputs.clone(), metrics.clone()),
            dead_letters,
            stop_consuming.clone(),
        );

        let mut shard = Shard::new(
            kv,
            prefix.keys(),
            replica.clone(),
            config.partitions,
            config.lease,
        );
        if let Err(error) = shard.coordinate().await {
            tracing::warn!(%error, "Claiming partitions failed; will try again.");
        }
        health.set_ready(true);
        let written = metrics.clone();
        let ticks = Ticks {
            js,
            keys: prefix.keys(),
            prefix,
            config,
            metrics,
            inputs,
            served,
            history: (
                history_kv.clone(),
                KvWriter::start(
                    history_kv,
                    "history",
                    || true,
                    move |ok| written.history_write(ok),
                ),
            ),
        };
        ticks.run(&mut shard, manual, &health, &shutdown).await;
        health.set_ready(false);
        // The history blocks the last tick changed.
        ticks.history.1.close(Duration::from_secs(2)).await;
        // Each step of the way out is bounded, so SIGTERM exits in time even
        // with NATS down (the leases then expire on their own).
        let _ = pas_nats::within(Duration::from_secs(2), "release partitions", shard.leave()).await;
        stop_consuming.cancel();
        loading.abort();
        consuming.stop().await;
        conn.drain().await;
        Ok(())
    }
}

/// What the forecaster reads and writes besides the samples' consumer.
type Stores = (
    async_nats::jetstream::object_store::ObjectStore,
    async_nats::jetstream::stream::Stream,
    async_nats::jetstream::stream::Stream,
    async_nats::jetstream::kv::Store,
    async_nats::jetstream::kv::Store,
);

/// The model store (and its stream), PAS_SAMPLES and the pas-forecaster
/// and pas-history buckets, once `pas bus init` has made them; `None` on
/// shutdown.
async fn open_stores(
    js: &async_nats::jetstream::Context,
    shutdown: &CancellationToken,
) -> Result<Option<Stores>, Error> {
    Ok(pas_nats::wait_for(
        "the pas-models, pas-forecaster and pas-history buckets and PAS_SAMPLES",
        shutdown,
        || async {
            let bucket = js
                .get_object_store(BUCKET_MODELS)
                .await
                .map_err(|e| pas_nats::Error::js("open the pas-models bucket", e))?;
            let chunks = pas_nats::open_stream(js, &pas_nats::definitions::object_stream()).await?;
            let stream = pas_nats::open_stream(js, STREAM_SAMPLES).await?;
            let kv = js
                .get_key_value(BUCKET_FORECASTER)
                .await
                .map_err(|e| pas_nats::Error::js("open the pas-forecaster bucket", e))?;
            let history = js
                .get_key_value(BUCKET_HISTORY)
                .await
                .map_err(|e| pas_nats::Error::js("open the pas-history bucket", e))?;
            Ok((bucket, chunks, stream, kv, history))
        },
    )
    .await?)
}

/// Every pod sample from a window back into `inputs`, through a
/// short-lived ordered consumer of this replica's own (each replica needs
/// them all; no durable consumer another user could reach), until `stop`.
fn follow_samples(
    stream: async_nats::jetstream::stream::Stream,
    config: &Config,
    prefix: &Prefix,
    replica: &str,
    (inputs, metrics): (Arc<Mutex<Inputs>>, Metrics),
    dead_letters: pas_nats::DeadLetters,
    stop: CancellationToken,
) -> pas_nats::Consuming {
    let step = config.step.as_secs();
    let open_steps = config.lateness.as_secs().div_ceil(step) as usize;
    let lookback = config.step * (config.history + open_steps) as u32;
    let partitions = config.partitions;
    pas_nats::follow_pod_samples(
        stream,
        prefix,
        format!(
            "forecaster-{}",
            pas_schemas::subjects::token(replica).unwrap_or_default()
        ),
        DeliverPolicy::ByStartTime {
            start_time: time::OffsetDateTime::now_utc() - lookback,
        },
        (dead_letters, config.admission),
        stop,
        move |sample, sequence| fold(&inputs, &metrics, partitions, &sample, sequence),
    )
}

/// What each tick forecasts with.
struct Ticks {
    js: async_nats::jetstream::Context,
    prefix: Prefix,
    keys: Keys,
    config: Config,
    metrics: Metrics,
    inputs: Arc<Mutex<Inputs>>,
    served: Arc<Models>,
    /// The pas-history bucket, and the writer of its blocks.
    history: (async_nats::jetstream::kv::Store, KvWriter),
}

impl Ticks {
    /// Forecasts every tick (or each manual one) until `shutdown`, renewing
    /// the partition leases half a tick before each; on shutdown, one more
    /// tick, so the replicas that take the partitions over miss none.
    async fn run(
        &self,
        shard: &mut Shard,
        mut manual: Option<mpsc::Receiver<()>>,
        health: &Arc<pas_runtime::health::Health>,
        shutdown: &CancellationToken,
    ) {
        let tick = self.config.tick();
        let mut next_tick = next_boundary(tick, self.config.tick_delay);
        let mut next_coordination = next_tick - tick / 2;
        if next_coordination < Instant::now() {
            next_coordination += tick;
        }
        let on_clock = manual.is_none();
        // Readiness fails when the tick stops advancing (a publish that never
        // returns, inference that hangs); with manual ticks nothing is due.
        let beat =
            on_clock.then(|| health.heartbeat("forecast tick", (3 * tick).max(Duration::from_secs(30))));
        let mut leaving = false;
        loop {
            let manual_tick = async {
                match manual.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            let clock_tick = tokio::time::sleep_until(next_tick.into());
            tokio::select! {
                _ = shutdown.cancelled(), if !leaving => {
                    leaving = true;
                    tracing::info!("Shutting down after the next tick.");
                    if !on_clock {
                        break;
                    }
                    continue;
                }
                _ = tokio::time::sleep_until(next_coordination.into()), if !leaving => {
                    next_coordination += tick;
                    if let Err(error) = shard.coordinate().await {
                        tracing::warn!(%error, "Renewing partition leases failed; will try again.");
                    }
                    continue;
                }
                t = manual_tick => {
                    if t.is_none() {
                        break;
                    }
                }
                _ = clock_tick, if on_clock => {
                    next_tick = next_boundary(tick, self.config.tick_delay);
                }
            }
            self.tick(shard, leaving).await;
            if let Some(beat) = &beat {
                beat.beat();
            }
            if leaving {
                break;
            }
            shard.release_extras().await;
        }
    }

    /// One tick: forecasts the owned workloads with fresh inputs, publishes.
    async fn tick(&self, shard: &Shard, last: bool) {
        let (config, metrics) = (&self.config, &self.metrics);
        let started = Instant::now();
        let owned = shard.owned();
        let (jobs, stale, tracked) = collect(&self.inputs, config, &owned, &self.served, metrics);
        self.keep_history();
        let publishing = forecast_and_publish(&self.js, &self.prefix, config, jobs, metrics);
        // The last tick, on shutdown, gets a bounded time: with NATS down
        // its acks would each wait for their timeout.
        let published = if last {
            tokio::time::timeout(LAST_TICK, publishing)
                .await
                .unwrap_or_else(|_| {
                    tracing::warn!("The last tick did not finish in time; its forecasts may be missing.");
                    Vec::new()
                })
        } else {
            publishing.await
        };
        {
            let mut inputs = self.inputs.lock().unwrap_or_else(|p| p.into_inner());
            for (key, end) in published {
                if let Some(t) = inputs.tracked.get_mut(&key) {
                    t.last_end = Some(end);
                }
            }
        }
        metrics.tick(
            started.elapsed().as_secs_f64(),
            tracked,
            stale,
            owned.len(),
            shard.members(),
            self.served.len(),
        );
    }
}

impl Ticks {
    /// Writes the history blocks changed by this tick's steps, and starts
    /// reading the stored history of workloads new to this replica (merged
    /// as each arrives, on a task of its own: a slow read holds up no tick).
    fn keep_history(&self) {
        let (due, changed) = {
            let mut inputs = self.inputs.lock().unwrap_or_else(|p| p.into_inner());
            let (workloads, bytes) = inputs.histories.size();
            self.metrics.history(workloads, bytes);
            (inputs.histories.due(Utc::now()), inputs.histories.changed())
        };
        let (kv, writer) = &self.history;
        history::write(writer, &self.keys, changed);
        if due.is_empty() {
            return;
        }
        let (inputs, metrics) = (self.inputs.clone(), self.metrics.clone());
        let merge = move |key: &WorkloadKey, generation, blocks| {
            let mut inputs = inputs.lock().unwrap_or_else(|p| p.into_inner());
            for _ in 0..inputs.histories.loaded(key, generation, blocks) {
                metrics.history_refused();
            }
        };
        tokio::spawn(history::load_all(
            kv.clone(),
            self.keys.clone(),
            due,
            self.metrics.clone(),
            merge,
        ));
    }
}

/// The next multiple of `tick` since the Unix epoch, plus `delay`, as an Instant.
fn next_boundary(tick: Duration, delay: Duration) -> Instant {
    let now = Utc::now();
    let tick_ms = tick.as_millis().max(1) as i64;
    let ms = now.timestamp_millis();
    let mut target = (ms.div_euclid(tick_ms) * tick_ms) + delay.as_millis() as i64;
    while target <= ms {
        target += tick_ms;
    }
    Instant::now() + Duration::from_millis((target - ms) as u64)
}

fn fold(inputs: &Mutex<Inputs>, metrics: &Metrics, partitions: u32, sample: &CpuSample, sequence: u64) {
    let mut inputs = inputs.lock().unwrap_or_else(|p| p.into_inner());
    match inputs.series.fold(sample, sequence) {
        Fold::Folded => {
            metrics.folded();
            let (Some(namespace), Some(workload)) = (&sample.namespace, &sample.workload) else {
                return;
            };
            let key = WorkloadKey {
                namespace: namespace.clone(),
                workload: workload.clone(),
            };
            inputs.tracked.entry(key).or_insert_with(|| Tracked {
                partition: shard::partition(namespace, workload, partitions),
                last_end: None,
            });
        }
        Fold::Duplicate => metrics.ignored("duplicate"),
        Fold::Ignored(reason) => metrics.ignored(reason),
    }
}

/// The workloads to forecast this tick, the number of stale owned ones, and
/// the number tracked. Forgets the long-silent ones.
fn collect(
    inputs: &Mutex<Inputs>,
    config: &Config,
    owned: &[u32],
    served: &Models,
    metrics: &Metrics,
) -> (Vec<Window>, usize, usize) {
    let now = Utc::now();
    let step = TimeDelta::seconds(config.step.as_secs() as i64);
    let mut inputs = inputs.lock().unwrap_or_else(|p| p.into_inner());
    let Inputs {
        series,
        tracked,
        histories,
    } = &mut *inputs;
    let mut forget = Vec::new();
    let mut jobs = Vec::new();
    let mut stale = 0;
    for (key, t) in tracked.iter() {
        // Silence is the series' own: when a sample was last folded in.
        let silent = series.silence(key).unwrap_or(Duration::MAX);
        if silent >= config.forget_after {
            forget.push(key.clone());
            continue;
        }
        if owned.binary_search(&t.partition).is_err() {
            continue;
        }
        if silent >= config.stale_after {
            stale += 1;
            continue;
        }
        let Some(newest) = series.newest(key) else {
            continue;
        };
        let closed = if newest + step <= now {
            newest
        } else {
            newest - step
        };
        if t.last_end.is_some_and(|end| end >= closed) {
            continue;
        }
        let Some((steps, _)) = series.series(key) else {
            continue;
        };
        histories.record(key, &steps, closed);
        if let Some(w) = window(key, steps, closed, config.max_fill, served, histories.get(key)) {
            jobs.push(w);
        }
    }
    for key in &forget {
        tracked.remove(key);
        series.remove(key);
    }
    // Another replica keeps the others' histories.
    histories.retain(|key| {
        tracked
            .get(key)
            .is_some_and(|t| owned.binary_search(&t.partition).is_ok())
    });
    if !forget.is_empty() {
        metrics.forgot(forget.len());
        tracing::info!(
            workloads = forget.len(),
            "Forgot workloads with no samples for forget_after."
        );
    }
    (jobs, stale, tracked.len())
}

/// Makes the tick's forecasts (LSTM batched, baseline for the rest),
/// publishes them, and returns the workloads and window ends JetStream
/// acknowledged. The windows go in slices of [`PUBLISH_SLICE`]: a slice's
/// forecasts are published while the next slice is inferred, so a
/// forecast waits for its own slice, not for the whole tick.
async fn forecast_and_publish(
    js: &async_nats::jetstream::Context,
    prefix: &Prefix,
    config: &Config,
    mut jobs: Vec<Window>,
    metrics: &Metrics,
) -> Vec<(WorkloadKey, DateTime<Utc>)> {
    let settings = config.tick_settings();
    let infer =
        |slice: Vec<Window>| tokio::task::spawn_blocking(move || forecast(slice, &settings, Utc::now()));
    let mut slices = Vec::new();
    while jobs.len() > PUBLISH_SLICE {
        let rest = jobs.split_off(PUBLISH_SLICE);
        slices.push(std::mem::replace(&mut jobs, rest));
    }
    if !jobs.is_empty() {
        slices.push(jobs);
    }
    let mut slices = slices.into_iter();
    // Acks are awaited as they go, never more than MAX_IN_FLIGHT at once:
    // async-nats lets 5,000 publishes wait for acks and then blocks the next
    // publish, so holding every ack of a 5,001-workload tick before awaiting
    // any deadlocked the tick.
    let mut pending = std::collections::VecDeque::with_capacity(MAX_IN_FLIGHT);
    let mut done = Vec::new();
    let mut next = slices.next().map(infer);
    while let Some(inferring) = next.take() {
        next = slices.next().map(infer);
        let made = match inferring.await {
            Ok(made) => made,
            Err(error) => {
                metrics.failed();
                tracing::error!(%error, "Inference panicked; this slice of the tick publishes nothing.");
                continue;
            }
        };
        publish_slice(js, prefix, made, metrics, &mut pending, &mut done).await;
    }
    while let Some(ack) = pending.pop_front() {
        settle_ack(ack, metrics, &mut done).await;
    }
    done
}

/// Windows inferred and published together ([`forecast_and_publish`]).
const PUBLISH_SLICE: usize = 256;

/// Publishes one slice's forecasts, keeping at most [`MAX_IN_FLIGHT`]
/// acks outstanding in `pending`; acknowledged ones go to `done`.
async fn publish_slice(
    js: &async_nats::jetstream::Context,
    prefix: &Prefix,
    made: Vec<(WorkloadKey, Result<Forecast, String>)>,
    metrics: &Metrics,
    pending: &mut std::collections::VecDeque<Pending>,
    done: &mut Vec<(WorkloadKey, DateTime<Utc>)>,
) {
    for (key, forecast) in made {
        let lstm = forecast
            .as_ref()
            .is_ok_and(|f| f.model.kind != pas_models::ModelKind::Naive.name());
        let outgoing = forecast.and_then(|forecast| {
            let subject = prefix
                .forecast(&key.namespace, &key.workload)
                .map_err(|e| e.to_string())?;
            let outgoing = Outgoing::new(subject, &forecast).map_err(|e| e.to_string())?;
            Ok((outgoing, forecast.window_end))
        });
        match outgoing {
            Ok((outgoing, window_end)) => {
                if pending.len() >= MAX_IN_FLIGHT
                    && let Some(oldest) = pending.pop_front()
                {
                    settle_ack(oldest, metrics, done).await;
                }
                match pas_nats::publish(js, &outgoing).await {
                    Ok(ack) => pending.push_back((key, window_end, lstm, ack)),
                    Err(error) => {
                        metrics.failed();
                        tracing::warn!(%error, "Publishing a forecast failed.");
                    }
                }
            }
            Err(error) => {
                metrics.failed();
                tracing::warn!(workload = key.model_key(), error, "A forecast could not be made.");
            }
        }
    }
}

/// The most time the last tick, on shutdown, may take.
const LAST_TICK: Duration = Duration::from_secs(3);

/// Most forecasts of a tick awaiting JetStream's ack at once.
const MAX_IN_FLIGHT: usize = 1024;

type Pending = (
    WorkloadKey,
    DateTime<Utc>,
    bool,
    async_nats::jetstream::context::PublishAckFuture,
);

async fn settle_ack(
    (key, end, lstm, ack): Pending,
    metrics: &Metrics,
    done: &mut Vec<(WorkloadKey, DateTime<Utc>)>,
) {
    match ack.await {
        Ok(_) => {
            metrics.forecast(lstm);
            done.push((key, end));
        }
        Err(error) => {
            metrics.failed();
            tracing::warn!(%error, workload = key.model_key(), "A forecast was not acknowledged.");
        }
    }
}

/// One tick's forecasts, in the order of `windows`: every window a model
/// serves through one batched inference ([`predict_batch`]), the naive
/// baseline (last value, with an upper bound from its recent errors) for the
/// rest and for all of them when the batch fails; values clamped at zero;
/// each forecast stamped `now`. Pure: no clock and no I/O, so `pas
/// experiment` runs exactly this.
pub fn forecast(
    mut windows: Vec<Window>,
    settings: &TickSettings,
    now: DateTime<Utc>,
) -> Vec<(WorkloadKey, Result<Forecast, String>)> {
    type Made = (Result<Prediction, String>, f64, Option<Vec<QuantileForecast>>);
    let mut predictions: Vec<Option<Made>> = vec![None; windows.len()];
    let served: Vec<usize> = (0..windows.len())
        .filter(|&i| windows[i].model.is_some())
        .collect();
    let mut baseline: Vec<bool> = windows.iter().map(|w| w.model.is_none()).collect();
    if !served.is_empty() {
        // Moved, not copied: nothing reads a window's lags after this.
        let lags: Vec<Vec<f64>> = served
            .iter()
            .map(|&i| std::mem::take(&mut windows[i].lags))
            .collect();
        let weights: Vec<&LstmWeights> = served
            .iter()
            .filter_map(|&i| windows[i].model.as_ref().map(|m| &m.weights))
            .collect();
        let inputs: Vec<&[f64]> = served.iter().map(|&i| windows[i].values.as_slice()).collect();
        match predict_batch(&weights, &inputs, &lags, settings.chunk) {
            Ok(made) => {
                for (&i, p) in served.iter().zip(made) {
                    let model = windows[i].model.as_ref();
                    let q = model.map_or(settings.quantile, |m| m.quantile);
                    let quantiles = model
                        .and_then(|m| m.calibration.as_ref())
                        .map(|(levels, offsets)| pas_models::calibrated(&p.values, levels, offsets));
                    predictions[i] = Some((Ok(p), q, quantiles));
                }
            }
            Err(error) => {
                tracing::warn!(%error, "Batched inference failed; serving this tick's workloads with the baseline.");
                for &i in &served {
                    baseline[i] = true;
                }
            }
        }
    }
    windows
        .into_iter()
        .zip(predictions)
        .zip(baseline)
        .map(|((mut w, p), naive)| {
            let (p, quantile, quantiles) = if naive {
                w.model = None;
                let history = std::mem::take(&mut w.values);
                let levels = pas_schemas::QUANTILE_LEVELS;
                let calibration =
                    pas_models::naive::baseline_calibration(&history, settings.horizon, &levels);
                let p = pas_models::naive::baseline(
                    history,
                    settings.step_seconds,
                    settings.horizon,
                    settings.quantile,
                )
                .map_err(|e| e.to_string());
                let quantiles = match (&p, calibration) {
                    (Ok(p), Some(offsets)) => Some(pas_models::calibrated(&p.values, &levels, &offsets)),
                    _ => None,
                };
                (p, settings.quantile, quantiles)
            } else {
                p.unwrap_or_else(|| (Err("no prediction".into()), settings.quantile, None))
            };
            let forecast = p.map(|p| {
                to_message(
                    &w,
                    p,
                    (quantile, quantiles),
                    f64::from(settings.step_seconds),
                    now,
                )
            });
            (w.key, forecast)
        })
        .collect()
}

fn to_message(
    w: &Window,
    p: Prediction,
    (quantile, quantiles): (f64, Option<Vec<QuantileForecast>>),
    step_seconds: f64,
    now: DateTime<Utc>,
) -> Forecast {
    let model = match &w.model {
        Some(m) => ModelRef {
            key: m.key.clone(),
            kind: m.kind.clone(),
            version: m.version,
        },
        None => ModelRef {
            key: w.key.model_key(),
            kind: pas_models::ModelKind::Naive.name().to_owned(),
            version: 0,
        },
    };
    let Prediction { values, upper } = p.clamped();
    // Calibrated, the upper forecast is the calibrated quantile of its level.
    let upper = quantiles
        .as_ref()
        .and_then(|qs| qs.iter().find(|q| (q.q - quantile).abs() < 1e-9))
        .map(|q| q.values.iter().zip(&values).map(|(u, v)| u.max(*v)).collect())
        .or(upper);
    Forecast {
        schema_version: SCHEMA_VERSION,
        timestamp: now,
        namespace: w.key.namespace.clone(),
        workload: w.key.workload.clone(),
        model,
        window_end: w.window_end,
        step_seconds,
        pod_request_millicores: w.request,
        quantile: upper.as_ref().map(|_| quantile),
        values,
        upper,
        quantiles,
    }
}
