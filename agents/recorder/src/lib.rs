//! The recorder stage: what flows through PAS, into InfluxDB 2 for Grafana.
//!
//! Three durable consumers (`pas-recorder-samples`, `-forecasts`,
//! `-decisions`, defined in `nats/jetstream/consumers/`) each pull batches
//! of up to [`Config::batch_size`] messages (or what came within
//! [`Config::flush_interval`]), turn them into points ([`points`]: the
//! measurements `cpu_usage_current`, `cpu_usage_predicted` and
//! `scale_decision`) and write each batch in one request ([`influx`]).
//!
//! - A message is acked only after the write holding its points succeeded.
//! - A write that fails because InfluxDB is unavailable is retried with
//!   capped, jittered exponential backoff; the batch in hand is kept alive
//!   with progress acks, and nothing more is pulled, so the backlog waits in
//!   JetStream and memory stays bounded.
//! - A point InfluxDB would reject ([`points::Point::check`]) or does reject
//!   (400, 413, 422: the batch is split until the rejected message is alone)
//!   sends its message to `pas.dlq.recorder` with the reason; a message that
//!   does not decode goes there too. The rest of the batch is written.
//! - Workload points are rewritten whole as their step's samples arrive; on
//!   start the recorder reads the samples it had already acked for the
//!   steps still open, so a redelivered sample never rewrites a step from
//!   half its pods.
//!
//! Start reading at [`Recorder::run`].

pub mod config;
mod error;
pub mod influx;
mod metrics;
pub mod points;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::{self, AckKind};
use backon::{BackoffBuilder, ExponentialBuilder};
use futures::StreamExt;
use influxdb2::models::DataPoint;
use pas_nats::DeadLetters;
use pas_schemas::subjects::{Prefix, STREAM_DECISIONS, STREAM_FORECASTS, STREAM_SAMPLES, Stage};
use pas_schemas::{CpuSample, Forecast, ScaleDecision};
use tokio_util::sync::CancellationToken;

pub use config::{Config, InfluxConfig};
pub use error::Error;
pub use metrics::Metrics;

use crate::influx::{Attempt, Influx, WriteError};
use crate::points::{Point, StepKey, Workloads};

/// How often a batch held through an outage is kept from redelivery; the
/// recorder's consumers wait 30 s for an ack.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// A workload without samples for this long is forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(600);

/// The recorder stage.
#[derive(Debug)]
pub struct Recorder {
    config: Config,
    metrics: Metrics,
}

impl Recorder {
    /// Checks `config`.
    pub fn new(config: Config) -> Result<Recorder, Error> {
        config.check().map_err(Error::Config)?;
        Ok(Recorder {
            config,
            metrics: Metrics::default(),
        })
    }

    /// The metrics it serves (clones share the values).
    pub fn metrics(&self) -> Metrics {
        self.metrics.clone()
    }

    /// Records until `shutdown`; a batch in hand when it comes is left
    /// unacked, for the next recorder.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), Error> {
        let Recorder { config, metrics } = self;
        let prefix = Prefix::for_run(config.run.as_deref()).map_err(Error::Config)?;
        let pas_nats::StageBus {
            conn,
            dead_letters,
            health,
        } = pas_nats::start_stage(
            &config.nats,
            "pas-recorder",
            Stage::Recorder,
            &prefix,
            config.listen,
            |r| metrics.register(r),
            &shutdown,
        )
        .await?;
        let js = conn.jetstream.clone();
        let dead_letters = Arc::new(dead_letters);
        let influx = Arc::new(Influx::new(&config.influx, config.write_timeout));
        tracing::info!(
            url = %config.influx.url,
            org = %config.influx.org,
            bucket = %config.influx.bucket,
            "Writing to InfluxDB."
        );
        let config = Arc::new(config);
        let mut tasks = Vec::new();
        for kind in [Kind::Samples, Kind::Forecasts, Kind::Decisions] {
            // Waits for what `pas bus init` provisions rather than exiting.
            let Some(bound) = pas_nats::bind(&js, Stage::Recorder, kind.stream(), &prefix, &shutdown).await?
            else {
                return Ok(());
            };
            let pipe = Pipe {
                kind,
                consumer: bound.consumer,
                stream: bound.stream,
                samples_filter: prefix.all_pod_cpu(),
                run: config.run.clone().unwrap_or_else(|| "live".into()),
                influx: influx.clone(),
                dead_letters: dead_letters.clone(),
                metrics: metrics.clone(),
                config: config.clone(),
                shutdown: shutdown.clone(),
                workloads: Workloads::new(config.step.as_secs() as u32, config.keep_steps),
                forgot: Instant::now(),
                // A pass takes up to a flush interval and a write, retried
                // up to retry_max apart: three slow passes are a stall.
                beat: health.heartbeat(
                    kind.heartbeat(),
                    3 * (config.flush_interval + config.write_timeout) + config.retry_max,
                ),
            };
            tasks.push(tokio::spawn(pipe.run()));
        }
        health.set_ready(true);
        let mut result = Ok(());
        for task in tasks {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    shutdown.cancel();
                    result = Err(error);
                }
                Err(join) => {
                    shutdown.cancel();
                    tracing::error!(error = %join, "A recorder task ended abnormally.");
                }
            }
        }
        health.set_ready(false);
        conn.drain().await;
        result
    }
}

/// Runs the recorder until `shutdown`.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    Recorder::new(config)?.run(shutdown).await
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Samples,
    Forecasts,
    Decisions,
}

impl Kind {
    fn stream(self) -> &'static str {
        match self {
            Kind::Samples => STREAM_SAMPLES,
            Kind::Forecasts => STREAM_FORECASTS,
            Kind::Decisions => STREAM_DECISIONS,
        }
    }

    /// The name of its pipe's loop in readiness.
    fn heartbeat(self) -> &'static str {
        match self {
            Kind::Samples => "recording samples",
            Kind::Forecasts => "recording forecasts",
            Kind::Decisions => "recording decisions",
        }
    }
}

/// One message in hand: its points, or why it goes to the dead letters.
struct Unit {
    msg: jetstream::Message,
    sequence: u64,
    points: Vec<Point>,
    problem: Option<(&'static str, Box<dyn std::error::Error + Send + Sync>)>,
}

/// One stream into InfluxDB.
struct Pipe {
    kind: Kind,
    consumer: PullConsumer,
    stream: jetstream::stream::Stream,
    samples_filter: String,
    run: String,
    influx: Arc<Influx>,
    dead_letters: Arc<DeadLetters>,
    metrics: Metrics,
    config: Arc<Config>,
    shutdown: CancellationToken,
    workloads: Workloads,
    forgot: Instant,
    /// Readiness fails when this pipe stops advancing (an InfluxDB outage
    /// holding its batch included).
    beat: pas_runtime::health::Heartbeat,
}

impl Pipe {
    async fn run(mut self) -> Result<(), Error> {
        if self.kind == Kind::Samples {
            match self.rebuild().await {
                Ok(0) => {}
                Ok(read) => tracing::info!(
                    read,
                    workloads = self.workloads.len(),
                    "Read the samples of the open steps."
                ),
                Err(error) => {
                    tracing::warn!(%error, "Could not read the samples of the open steps; a redelivered sample may rewrite its step from part of its pods.")
                }
            }
        }
        let stream = self.kind.stream();
        while !self.shutdown.is_cancelled() {
            self.beat.beat();
            let pulled = tokio::select! {
                _ = self.shutdown.cancelled() => return Ok(()),
                pulled = self
                    .consumer
                    .batch()
                    .max_messages(self.config.batch_size)
                    .expires(self.config.flush_interval)
                    .messages() => pulled,
            };
            let mut batch = match pulled {
                Ok(batch) => batch,
                Err(error) => {
                    tracing::warn!(stream, %error, "Pulling a batch failed; trying again.");
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            let mut messages = Vec::new();
            loop {
                tokio::select! {
                    biased;
                    // Unacked, the batch is redelivered to whoever records next.
                    _ = self.shutdown.cancelled() => return Ok(()),
                    next = batch.next() => match next {
                        None => break,
                        Some(Ok(msg)) => messages.push(msg),
                        Some(Err(error)) => {
                            tracing::debug!(stream, %error, "Batch ended early.");
                            break;
                        }
                    },
                }
            }
            if !messages.is_empty() && self.record(messages).await.is_err() {
                return Ok(());
            }
            if self.forgot.elapsed() >= Duration::from_secs(60) {
                self.workloads.forget_idle(FORGET_AFTER);
                self.forgot = Instant::now();
            }
            if self.kind == Kind::Samples {
                self.metrics.set_workloads(self.workloads.len());
            }
        }
        Ok(())
    }

    /// Folds in the samples already acked for steps that may still change:
    /// from `keep_steps + 2` steps before the ack floor's message up to it.
    async fn rebuild(&mut self) -> Result<u64, Error> {
        let info = self
            .consumer
            .info()
            .await
            .map_err(|e| Error::js("read the sample consumer's state", e))?;
        let floor = info.ack_floor.stream_sequence;
        if floor == 0 {
            return Ok(0);
        }
        let stored = self
            .stream
            .get_raw_message(floor)
            .await
            .map_err(|e| Error::js("read the last acked sample", e))?
            .time;
        let window = self.config.step * (self.config.keep_steps as u32 + 2);
        let start = stored - window;
        let workloads = &mut self.workloads;
        Ok(pas_nats::read_samples(
            &self.stream,
            &self.samples_filter,
            start,
            Some(floor),
            Some((&self.config.admission, self.dead_letters.is_replay())),
            |sample, _| {
                workloads.fold(&sample);
            },
        )
        .await?)
    }

    /// Writes a batch and acks it; `Err` only when shutting down.
    async fn record(&mut self, messages: Vec<jetstream::Message>) -> Result<(), Attempt> {
        let (mut units, data) = self.decode(messages);
        self.write(&mut units, &data).await?;
        self.settle(&units).await;
        Ok(())
    }

    /// Each message's points (and the point of each step of a workload it
    /// changed), or why it cannot be written; and the points as InfluxDB
    /// takes them.
    fn decode(&mut self, messages: Vec<jetstream::Message>) -> (Vec<Unit>, Vec<Vec<DataPoint>>) {
        let mut units = Vec::with_capacity(messages.len());
        let mut touched: HashMap<StepKey, (usize, Point)> = HashMap::new();
        let (admission, replay) = (self.config.admission, self.dead_letters.is_replay());
        for msg in messages {
            let (sequence, stored) = msg
                .info()
                .map(|i| (i.stream_sequence, i.published.unix_timestamp_nanos()))
                .unwrap_or_default();
            let decoded = match self.kind {
                Kind::Samples => admission
                    .decode::<CpuSample>(&msg.payload, stored, replay)
                    .map(|sample| {
                        // The step's point as of this sample: a batch may span
                        // more steps than are kept, so it is taken now.
                        if let Some(key) = self.workloads.fold(&sample)
                            && let Some(point) = self.workloads.point(&key, &self.run)
                        {
                            touched.insert(key, (units.len(), point));
                        }
                        vec![points::sample_point(&sample, &self.run)]
                    }),
                Kind::Forecasts => admission
                    .decode::<Forecast>(&msg.payload, stored, replay)
                    .map(|f| points::forecast_points(&f, &self.run)),
                Kind::Decisions => admission
                    .decode::<ScaleDecision>(&msg.payload, stored, replay)
                    .map(|d| vec![points::decision_point(&d, &self.run)]),
            };
            let (points, problem) = match decoded {
                Ok(points) => (points, None),
                Err(error) => (Vec::new(), Some((error.kind(), Box::new(error) as _))),
            };
            units.push(Unit {
                msg,
                sequence,
                points,
                problem,
            });
        }
        // Each step's workload point rides with the last sample that changed it.
        for (i, point) in touched.into_values() {
            units[i].points.push(point);
        }
        let mut data: Vec<Vec<DataPoint>> = Vec::with_capacity(units.len());
        for unit in &mut units {
            let converted: Result<Vec<DataPoint>, String> =
                unit.points.iter().map(Point::to_data_point).collect();
            match converted {
                Ok(points) => data.push(points),
                Err(reason) => {
                    if unit.problem.is_none() {
                        unit.problem = Some(("rejected", Box::new(WriteError::Rejected(reason))));
                    }
                    data.push(Vec::new());
                }
            }
        }
        (units, data)
    }

    /// Writes the points of the units that have no problem, splitting the
    /// batch where InfluxDB rejects a point; a rejected unit gets its reason.
    async fn write(&self, units: &mut [Unit], data: &[Vec<DataPoint>]) -> Result<(), Attempt> {
        let good: Vec<usize> = (0..units.len()).filter(|&i| units[i].problem.is_none()).collect();
        let verdicts = {
            let (influx, metrics, config, shutdown) =
                (&*self.influx, &self.metrics, &*self.config, &self.shutdown);
            let (units, good) = (&*units, &good);
            influx::place(good.len(), |range| {
                let points: Vec<DataPoint> = good[range]
                    .iter()
                    .flat_map(|&i| data[i].iter().cloned())
                    .collect();
                write_retrying(influx, points, units, metrics, config, shutdown)
            })
            .await?
        };
        for (&i, verdict) in good.iter().zip(verdicts) {
            if let Some(reason) = verdict {
                units[i].problem = Some(("rejected", Box::new(WriteError::Rejected(reason))));
            }
        }
        Ok(())
    }

    /// Dead-letters the units with a problem and acks every unit (never one
    /// whose dead letter failed: it is redelivered).
    async fn settle(&self, units: &[Unit]) {
        let stream = self.kind.stream();
        let (mut written, mut dead) = (0, 0);
        for unit in units {
            if let Some((error_type, error)) = &unit.problem {
                let id = format!("{stream}:{}", unit.sequence);
                if let Err(dlq_error) = self
                    .dead_letters
                    .send(
                        unit.msg.subject.as_str(),
                        unit.msg.payload.clone(),
                        &id,
                        error_type,
                        error.as_ref(),
                    )
                    .await
                {
                    // Never ack what is not safely stored elsewhere.
                    tracing::warn!(stream, error = %dlq_error, "Dead-letter publish failed; the message will be redelivered.");
                    let _ = unit
                        .msg
                        .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                        .await;
                    continue;
                }
                dead += 1;
            } else {
                written += 1;
                for point in &unit.points {
                    self.metrics.points(point.measurement, 1);
                }
            }
            if let Err(error) = unit.msg.ack().await {
                tracing::warn!(stream, %error, "Ack failed; the message may be written again (the same point, harmlessly).");
            }
        }
        self.metrics.messages(stream, "written", written);
        self.metrics.messages(stream, "dead_lettered", dead);
    }
}

/// Writes `points`, retrying while InfluxDB is unavailable (capped,
/// jittered exponential backoff) and keeping `held` from redelivery
/// meanwhile. Returns once written, rejected, or shutting down.
async fn write_retrying(
    influx: &Influx,
    points: Vec<DataPoint>,
    held: &[Unit],
    metrics: &Metrics,
    config: &Config,
    shutdown: &CancellationToken,
) -> Result<(), Attempt> {
    let mut backoff = ExponentialBuilder::default()
        .with_min_delay(config.retry_min)
        .with_max_delay(config.retry_max)
        .with_jitter()
        .without_max_times()
        .build();
    let mut progressed = Instant::now();
    let mut attempt = 0u32;
    loop {
        match influx.write(points.clone()).await {
            Ok(()) => {
                metrics.set_influx_up(true);
                if attempt > 0 {
                    tracing::info!(attempts = attempt + 1, "InfluxDB took the write again.");
                }
                return Ok(());
            }
            Err(WriteError::Rejected(reason)) => {
                metrics.write_error("rejected");
                return Err(Attempt::Rejected(reason));
            }
            Err(WriteError::Unavailable(reason)) => {
                metrics.write_error("unavailable");
                metrics.set_influx_up(false);
                attempt += 1;
                let wait = backoff.next().unwrap_or(config.retry_max);
                tracing::warn!(error = reason, attempt, retry_in = ?wait, points = points.len(), "Write to InfluxDB failed; retrying.");
                if progressed.elapsed() >= PROGRESS_EVERY {
                    for unit in held {
                        let _ = unit.msg.ack_with(AckKind::Progress).await;
                    }
                    progressed = Instant::now();
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return Err(Attempt::Stopped),
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}
