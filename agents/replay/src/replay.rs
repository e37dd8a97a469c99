//! `pas replay`: recorded load onto the bus under `replay.<run>.`.
//!
//! **Demand rule.** A trace row's `cpu` is read as a percentage of `pods`
//! pods' worth of CPU, each pod requesting `pod_cpu` millicores: demand =
//! `cpu / 100 × pods × pod_cpu` millicores. Without `simulate` the demand is
//! spread over exactly `pods` ready pods, so the workload's utilisation (the
//! sum of use over the sum of requests) equals the trace's `cpu`, and every
//! row becomes `pods` samples (`<workload>-<ordinal>`). With `simulate`, the
//! demand goes through a simulated StatefulSet that starts with `pods`
//! replicas and follows the scaler's applied decisions on
//! `replay.<run>.pas.scale.<namespace>.<workload>`: new pods are ready after
//! `startup`, each serves at most `pod_cpu`, and samples reflect the replicas.
//!
//! **Time.** With `speed` N, trace time runs N times faster than the wall
//! clock. Timestamps are `shifted` by default: trace time is compressed by
//! N and moved so the first paced row lands at the start of the replay (rows
//! of a `backfill` share are published at once, dated before it); at `max`
//! speed, so the last row lands now. `original` keeps the trace's times.
//!
//! **Delivery.** Every sample is published to JetStream with its
//! `Nats-Msg-Id` (the sample's, prefixed with the run, so a replay run
//! twice adds nothing and never collides with the live sample it copies), up to `in_flight` unacknowledged at once; a failed publish
//! or ack is retried (the id makes a retry safe) until it succeeds or the
//! replay is stopped, so a NATS restart loses no sample.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::context::PublishAckFuture;
use chrono::{DateTime, TimeDelta, Utc};
use futures::StreamExt;
use pas_nats::{Connection, Outgoing};
use pas_scaler::sim::{PodModel, SimulatedStatefulSet};
use pas_schemas::subjects::{Prefix, STREAM_SAMPLES};
use pas_schemas::{CpuSample, Outcome, ScaleDecision};
use tokio_util::sync::CancellationToken;

use crate::Error;

/// Where the load comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A `timestamp,cpu` CSV trace: demand by the stated rule.
    Trace(PathBuf),
    /// JSON lines of [`CpuSample`]s, published as they are (re-timed).
    Jsonl(PathBuf),
    /// Pod samples read elsewhere (`pas import prometheus`), published as
    /// they are (re-timed).
    Samples(Arc<Vec<CpuSample>>),
    /// Pod samples that PAS_SAMPLES holds on the live subjects from `since`
    /// to `until`, published as they are (re-timed).
    Stream {
        /// Start of the range.
        since: DateTime<Utc>,
        /// End of the range.
        until: DateTime<Utc>,
    },
}

/// How fast.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Speed {
    /// Trace time runs this many times faster than the wall clock.
    Factor(f64),
    /// As fast as acks allow.
    Max,
}

impl std::str::FromStr for Speed {
    type Err = Error;
    fn from_str(s: &str) -> Result<Speed, Error> {
        if s == "max" {
            return Ok(Speed::Max);
        }
        match s.trim_end_matches('x').parse::<f64>() {
            Ok(f) if f > 0.0 && f.is_finite() => Ok(Speed::Factor(f)),
            _ => Err(Error::Input(format!(
                "speed `{s}`: expected a factor above 0 (1 = real time, 60 = a minute per second) or `max`"
            ))),
        }
    }
}

/// Which timestamps the samples carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timestamps {
    /// Compressed by the speed and moved to now (see the module docs).
    Shifted,
    /// The trace's own.
    Original,
}

/// A replay.
#[derive(Debug, Clone)]
pub struct Config {
    /// The run: samples go to `replay.<run>.pas.cpu.…`.
    pub run: String,
    /// The load.
    pub source: Source,
    /// Namespace of the workload (trace sources).
    pub namespace: String,
    /// StatefulSet name (trace sources).
    pub workload: String,
    /// A trace's 100 % is this many pods' worth of CPU; also the replicas.
    pub pods: u32,
    /// CPU request (and most use) of one pod, millicores.
    pub pod_cpu: f64,
    /// How fast.
    pub speed: Speed,
    /// Which timestamps.
    pub timestamps: Timestamps,
    /// Share of the rows published at once before pacing starts.
    pub backfill: f64,
    /// Close the loop through a simulated StatefulSet with this start-up time.
    pub simulate: Option<Duration>,
    /// Most unacknowledged publishes.
    pub in_flight: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            run: "replay".into(),
            source: Source::Trace(PathBuf::new()),
            namespace: "default".into(),
            workload: "replayed".into(),
            pods: 4,
            pod_cpu: 1000.0,
            speed: Speed::Factor(1.0),
            timestamps: Timestamps::Shifted,
            backfill: 0.0,
            simulate: None,
            in_flight: 512,
        }
    }
}

/// How far a replay is.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Rows (trace) or samples (JSONL, stream) done.
    pub done: usize,
    /// Of this many.
    pub total: usize,
    /// Samples acknowledged by the stream.
    pub acked: u64,
    /// Replicas of the simulated StatefulSet (with `simulate`).
    pub replicas: Option<u32>,
    /// Timestamp of the newest sample.
    pub at: Option<DateTime<Utc>>,
}

/// What a replay did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    /// The subject prefix published under.
    pub prefix: String,
    /// Rows or samples read.
    pub rows: usize,
    /// Samples published and acknowledged.
    pub samples: u64,
    /// Of those, ones the stream already had (same `Nats-Msg-Id`).
    pub duplicates: u64,
    /// Publishes that failed and were retried.
    pub retries: u64,
    /// First and last sample timestamps.
    pub first: Option<DateTime<Utc>>,
    /// Newest sample timestamp.
    pub last: Option<DateTime<Utc>>,
    /// Wall seconds.
    pub seconds: f64,
    /// Scale decisions applied to the simulated StatefulSet.
    pub decisions_applied: u64,
    /// Its replicas at the end.
    pub final_replicas: Option<u32>,
}

/// One thing to publish at trace time `t`.
enum Item {
    Demand(f64),
    Sample(Box<CpuSample>),
}

fn read_items(config: &Config) -> Result<Vec<(DateTime<Utc>, Item)>, Error> {
    match &config.source {
        Source::Trace(path) => {
            let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
            let points = pas_schemas::trace::parse(&text)
                .map_err(|e| Error::Input(format!("{}: {e}", path.display())))?;
            let scale = f64::from(config.pods) * config.pod_cpu / 100.0;
            Ok(points
                .into_iter()
                .map(|(t, cpu)| (t, Item::Demand(cpu.max(0.0) * scale)))
                .collect())
        }
        Source::Jsonl(path) => {
            let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
            let mut items = Vec::new();
            for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                let sample: CpuSample = pas_schemas::decode(line.as_bytes())
                    .map_err(|e| Error::Input(format!("{}: line {}: {e}", path.display(), n + 1)))?;
                items.push((sample.timestamp, Item::Sample(Box::new(sample))));
            }
            items.sort_by_key(|(t, _)| *t);
            Ok(items)
        }
        Source::Samples(samples) => {
            let mut items: Vec<_> = samples
                .iter()
                .map(|s| (s.timestamp, Item::Sample(Box::new(s.clone()))))
                .collect();
            items.sort_by_key(|(t, _)| *t);
            Ok(items)
        }
        Source::Stream { .. } => Ok(Vec::new()),
    }
}

/// Reads the pod samples PAS_SAMPLES holds on the live subjects whose
/// timestamps are in `since..=until`. A sample is stored after it was taken,
/// so reading starts at messages stored from `since`; it goes on to the end
/// of the stream, since an agent flushing its outbox after an outage stores
/// old samples late.
pub async fn read_range(
    conn: &Connection,
    prefix: &Prefix,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    mut each: impl FnMut(CpuSample),
) -> Result<u64, Error> {
    let stream = conn
        .jetstream
        .get_stream(STREAM_SAMPLES)
        .await
        .map_err(|e| Error::js("open PAS_SAMPLES", e))?;
    let start_time =
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(since.timestamp_nanos_opt().unwrap_or(0)))
            .map_err(|e| Error::Input(format!("--since: {e}")))?;
    let mut read = 0;
    pas_nats::read_samples(
        &stream,
        &prefix.all_pod_cpu(),
        start_time,
        None,
        // A range is copied as stored; whoever reads the copy checks it.
        None,
        |sample, _| {
            if sample.timestamp >= since && sample.timestamp <= until {
                each(sample);
                read += 1;
            }
        },
    )
    .await?;
    Ok(read)
}

/// An unacknowledged publish.
struct Pending {
    msg: Outgoing,
    ack: PublishAckFuture,
}

struct Publisher<'a> {
    conn: &'a Connection,
    pending: VecDeque<Pending>,
    in_flight: usize,
    acked: u64,
    duplicates: u64,
    retries: u64,
    shutdown: CancellationToken,
}

impl Publisher<'_> {
    async fn publish(&mut self, msg: Outgoing) -> Result<(), Error> {
        while self.pending.len() >= self.in_flight {
            self.settle_one().await?;
        }
        let ack = self.send(&msg).await?;
        self.pending.push_back(Pending { msg, ack });
        Ok(())
    }

    /// Publishes, retrying with a growing pause until the server takes it.
    async fn send(&mut self, msg: &Outgoing) -> Result<PublishAckFuture, Error> {
        let mut pause = Duration::from_millis(100);
        loop {
            match pas_nats::publish(&self.conn.jetstream, msg).await {
                Ok(ack) => return Ok(ack),
                Err(error) => {
                    self.retries += 1;
                    tracing::warn!(%error, subject = msg.subject, "Publishing failed; retrying.");
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        () = self.shutdown.cancelled() => return Err(Error::Input("stopped before every sample was acknowledged".into())),
                    }
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Waits for the oldest publish's ack, publishing it again if it fails.
    async fn settle_one(&mut self) -> Result<(), Error> {
        let Some(mut p) = self.pending.pop_front() else {
            return Ok(());
        };
        loop {
            match p.ack.await {
                Ok(ack) => {
                    self.acked += 1;
                    self.duplicates += u64::from(ack.duplicate);
                    return Ok(());
                }
                Err(error) => {
                    self.retries += 1;
                    tracing::warn!(%error, subject = p.msg.subject, "No acknowledgement; publishing again.");
                    p.ack = self.send(&p.msg).await?;
                }
            }
        }
    }

    async fn drain(&mut self) -> Result<(), Error> {
        while !self.pending.is_empty() {
            self.settle_one().await?;
        }
        Ok(())
    }
}

impl Config {
    /// Checks the settings and that the source file can be read, before
    /// anything is published (and before connecting: the CLI calls it
    /// first, so a missing file is reported as such). The run's prefix.
    pub fn check(&self) -> Result<Prefix, Error> {
        let prefix =
            Prefix::replay(&self.run).map_err(|e| Error::Input(format!("run `{}`: {e}", self.run)))?;
        if self.pods == 0 || self.pod_cpu.is_nan() || self.pod_cpu <= 0.0 {
            return Err(Error::Input("pods must be at least 1 and pod CPU above 0".into()));
        }
        if let Speed::Factor(f) = self.speed
            && !(f.is_finite() && f > 0.0)
        {
            return Err(Error::Input(format!("speed must be a factor above 0, not {f}")));
        }
        if !(0.0..=1.0).contains(&self.backfill) {
            return Err(Error::Input(format!(
                "backfill must be a share between 0 and 1, not {}",
                self.backfill
            )));
        }
        if self.simulate.is_some() && (self.speed == Speed::Max || self.timestamps == Timestamps::Original) {
            return Err(Error::Input("a simulated StatefulSet needs a paced replay with shifted timestamps, so the scaler acts in time".into()));
        }
        for (what, name) in [("namespace", &self.namespace), ("workload", &self.workload)] {
            pas_schemas::subjects::token(name).map_err(|e| Error::Input(format!("{what} `{name}`: {e}")))?;
        }
        if let Source::Trace(path) | Source::Jsonl(path) = &self.source {
            std::fs::File::open(path).map_err(Error::io(path))?;
        }
        Ok(prefix)
    }
}

/// Replays `config.source`, reporting progress, until done or `shutdown`.
pub async fn replay(
    conn: &Connection,
    config: &Config,
    shutdown: CancellationToken,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<Summary, Error> {
    let prefix = config.check()?;
    // Without the stream every publish would wait for an ack that never comes.
    pas_nats::open_stream(&conn.jetstream, STREAM_SAMPLES).await?;
    let mut items = read_items(config)?;
    if let Source::Stream { since, until } = config.source {
        read_range(conn, &Prefix::live(), since, until, |s| {
            items.push((s.timestamp, Item::Sample(Box::new(s))))
        })
        .await?;
        items.sort_by_key(|(t, _)| *t);
    }
    if items.is_empty() {
        return Err(Error::Input(
            "nothing to replay: the source holds no samples".into(),
        ));
    }

    // Time: trace time `t` → sample time, and when to publish it.
    let compress = match config.speed {
        Speed::Factor(f) => f,
        Speed::Max => 1.0,
    };
    let paced_from = ((items.len() as f64) * config.backfill).floor() as usize;
    let anchor_trace = items[paced_from.min(items.len() - 1)].0;
    let last_trace = items[items.len() - 1].0;
    let started_wall = Utc::now();
    let started = Instant::now();
    let scaled =
        |d: TimeDelta| TimeDelta::milliseconds((d.num_milliseconds() as f64 / compress).round() as i64);
    let stamp = |t: DateTime<Utc>| match (config.timestamps, config.speed) {
        (Timestamps::Original, _) => t,
        (Timestamps::Shifted, Speed::Factor(_)) => started_wall + scaled(t - anchor_trace),
        (Timestamps::Shifted, Speed::Max) => started_wall - scaled(last_trace - t),
    };
    let due = |i: usize, t: DateTime<Utc>| match config.speed {
        Speed::Factor(f) if i >= paced_from => {
            Some(started + Duration::from_secs_f64(((t - anchor_trace).as_seconds_f64() / f).max(0.0)))
        }
        _ => None,
    };

    // The StatefulSet the demand runs through.
    let model = PodModel {
        startup: config.simulate.unwrap_or_default(),
        startup_spread: 0.0,
        capacity_millicores: config.pod_cpu,
        request_millicores: config.pod_cpu,
    };
    let sts = Arc::new(Mutex::new(SimulatedStatefulSet::new(
        model,
        config.pods,
        stamp(items[0].0),
    )));
    let applied = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let follower = if config.simulate.is_some() {
        let subject = prefix
            .scale(&config.namespace, &config.workload)
            .map_err(|e| Error::Input(e.into()))?;
        let mut sub = crate::subscribe(conn, subject).await?;
        let (sts, applied, stop) = (sts.clone(), applied.clone(), shutdown.clone());
        Some(tokio::spawn(async move {
            loop {
                let msg = tokio::select! {
                    m = sub.next() => m,
                    () = stop.cancelled() => None,
                };
                let Some(msg) = msg else { break };
                let Ok(d) = pas_schemas::decode::<ScaleDecision>(&msg.payload) else {
                    continue;
                };
                let mut sts = sts.lock().unwrap_or_else(|p| p.into_inner());
                let now = Utc::now();
                if d.outcome == Outcome::Applied {
                    sts.scale(d.replicas_after, now);
                    applied.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                } else if d.replicas_before != sts.replicas() {
                    // The scaler's cluster started elsewhere: follow it.
                    sts.scale(d.replicas_before, now);
                }
            }
        }))
    } else {
        None
    };

    let mut publisher = Publisher {
        conn,
        pending: VecDeque::new(),
        in_flight: config.in_flight.max(1),
        acked: 0,
        duplicates: 0,
        retries: 0,
        shutdown: shutdown.clone(),
    };
    let (mut first, mut last) = (None, None);
    let total = items.len();
    let mut stopped = false;
    let mut last_report = Instant::now();
    for (i, (t, item)) in items.into_iter().enumerate() {
        if let Some(when) = due(i, t) {
            let wait = when.saturating_duration_since(Instant::now());
            if !wait.is_zero() {
                // Pacing: settle acks while waiting.
                tokio::select! {
                    r = async {
                        let deadline = tokio::time::Instant::from_std(when);
                        while !publisher.pending.is_empty() && tokio::time::Instant::now() < deadline {
                            publisher.settle_one().await?;
                        }
                        tokio::time::sleep_until(deadline).await;
                        Ok::<(), Error>(())
                    } => r?,
                    () = shutdown.cancelled() => { stopped = true; }
                }
            }
        }
        if stopped || shutdown.is_cancelled() {
            stopped = true;
            break;
        }
        let at = stamp(t);
        let samples = match item {
            Item::Demand(demand) => {
                let sts = sts.lock().unwrap_or_else(|p| p.into_inner());
                sts.samples(&config.namespace, &config.workload, demand, at)
            }
            Item::Sample(mut s) => {
                s.timestamp = at;
                vec![*s]
            }
        };
        for sample in samples {
            let subject = prefix
                .sample(&sample)
                .map_err(|e| Error::Input(format!("sample of {:?}: {e}", sample.pod)))?;
            let mut msg = Outgoing::new(subject, &sample)?;
            // The stream de-duplicates ids across subjects: a replayed
            // sample must never pass for the live one it copies.
            msg.msg_id = format!("replay:{}:{}", config.run, msg.msg_id);
            publisher.publish(msg).await?;
        }
        first = first.or(Some(at));
        last = Some(at);
        if last_report.elapsed() >= Duration::from_millis(200) || i + 1 == total {
            last_report = Instant::now();
            let replicas = config
                .simulate
                .map(|_| sts.lock().unwrap_or_else(|p| p.into_inner()).replicas());
            progress(Progress {
                done: i + 1,
                total,
                acked: publisher.acked,
                replicas,
                at: last,
            });
        }
    }
    publisher.drain().await?;
    let final_replicas = config
        .simulate
        .map(|_| sts.lock().unwrap_or_else(|p| p.into_inner()).replicas());
    if let Some(f) = follower {
        f.abort();
    }
    if stopped {
        return Err(Error::Input(format!("stopped after {} samples", publisher.acked)));
    }
    Ok(Summary {
        prefix: format!("replay.{}.", config.run),
        rows: total,
        samples: publisher.acked,
        duplicates: publisher.duplicates,
        retries: publisher.retries,
        first,
        last,
        seconds: started.elapsed().as_secs_f64(),
        decisions_applied: applied.load(std::sync::atomic::Ordering::Relaxed),
        final_replicas,
    })
}
