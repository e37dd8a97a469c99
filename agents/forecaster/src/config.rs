use std::net::SocketAddr;
use std::time::Duration;

use pas_nats::{Admission, NatsConfig};
use serde::{Deserialize, Serialize};

/// Forecaster configuration. Layers: these defaults, then `--config FILE`
/// (TOML or JSON), then `PAS_*` environment variables (`PAS_STEP=5s`), then
/// flags.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Read samples under `replay.<run>.` instead of the live `pas.` subjects,
    /// serve that run's models, and forecast under the same prefix.
    pub run: Option<String>,
    /// Step of the demand series; a model trained on another step is refused.
    #[serde(with = "humantime_serde")]
    pub step: Duration,
    /// The scaler's lead time (its pod start-up plus one tick): the
    /// baseline's `horizon` × `step` must reach past it.
    #[serde(with = "humantime_serde")]
    pub lead: Duration,
    /// How often to forecast; the step when not set. Ticks fall on whole
    /// multiples of it (UTC), so replicas tick together.
    #[serde(with = "humantime_serde")]
    pub tick: Option<Duration>,
    /// Wait after a tick's boundary for samples still in flight.
    #[serde(with = "humantime_serde")]
    pub tick_delay: Duration,
    /// Steps of history kept per workload; a model with a longer window is refused.
    pub history: usize,
    /// Slot of each workload's long, coarse demand history (bucket
    /// `pas-history`): a whole multiple of `step`; when not set, the
    /// smallest one of at least 5 minutes (what the trainer assumes).
    #[serde(with = "humantime_serde")]
    pub coarse_step: Option<Duration>,
    /// How far back the coarse history reaches (whole blocks of 288 slots,
    /// a day at 5 minutes, plus the current one).
    #[serde(with = "humantime_serde")]
    pub coarse_keep: Duration,
    /// How long a step stays open to late samples once newer ones arrived.
    #[serde(with = "humantime_serde")]
    pub lateness: Duration,
    /// A workload with no sample for this long is no longer forecast.
    #[serde(with = "humantime_serde")]
    pub stale_after: Duration,
    /// A workload with no sample for this long is forgotten.
    #[serde(with = "humantime_serde")]
    pub forget_after: Duration,
    /// Holes of at most this many steps are interpolated before forecasting.
    pub max_fill: usize,
    /// Horizon of the baseline (naive) forecast served where no model is accepted.
    pub horizon: usize,
    /// Upper quantile of the baseline forecast.
    pub quantile: f64,
    /// Workloads are hashed into this many partitions, which replicas lease.
    /// Every replica must use the same number.
    pub partitions: u32,
    /// This replica's name: unique among the running replicas (in Kubernetes,
    /// the pod name). A random one when not set.
    pub replica: Option<String>,
    /// How long a partition lease lasts without renewal (a crashed replica's
    /// partitions move after this).
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// Models per batched inference pass (their weights stay in cache).
    pub chunk: usize,
    /// libtorch threads for inference.
    pub threads: i32,
    /// Address of `/healthz`, `/readyz` and `/metrics`.
    pub listen: SocketAddr,
    /// Log one JSON object per line instead of text.
    pub log_json: bool,
    /// The NATS connection.
    pub nats: NatsConfig,
    /// Which message times are admitted, against when the stream stored them.
    pub admission: Admission,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            run: None,
            step: Duration::from_secs(15),
            lead: pas_runtime::config::DEFAULT_LEAD,
            tick: None,
            tick_delay: Duration::from_millis(500),
            history: 96,
            coarse_step: None,
            coarse_keep: Duration::from_secs(pas_workloads::history::DEFAULT_KEEP_SECONDS),
            lateness: Duration::from_secs(30),
            stale_after: Duration::from_secs(60),
            forget_after: Duration::from_secs(900),
            max_fill: 3,
            horizon: 10,
            quantile: 0.9,
            partitions: 32,
            replica: None,
            lease: Duration::from_secs(45),
            chunk: 64,
            threads: 1,
            listen: SocketAddr::from(([0, 0, 0, 0], 9466)),
            log_json: false,
            nats: NatsConfig::default(),
            admission: Admission::default(),
        }
    }
}

impl Config {
    /// This replica's name as one NATS token: the configured name with
    /// anything but ASCII letters, digits, `-` and `_` written as `_`, or a
    /// random name.
    pub fn replica_id(&self) -> String {
        pas_runtime::config::replica_id(self.replica.as_deref(), "forecaster")
    }

    /// The coarse history's step ([`Config::coarse_step`]).
    pub fn coarse_step(&self) -> Duration {
        self.coarse_step.unwrap_or_else(|| {
            let step = u32::try_from(self.step.as_secs()).unwrap_or(u32::MAX);
            Duration::from_secs(pas_workloads::history::coarse_step_for(step).into())
        })
    }

    /// The tick interval.
    pub fn tick(&self) -> Duration {
        self.tick.unwrap_or(self.step)
    }

    pub(crate) fn check(&self) -> Result<(), String> {
        if self.step.as_secs() == 0 || self.step.subsec_nanos() != 0 {
            return Err(format!(
                "step must be a whole number of seconds, not {:?}",
                self.step
            ));
        }
        if self.tick().as_millis() < 100 {
            return Err("tick must be at least 100ms".into());
        }
        if self.tick_delay >= self.tick() {
            return Err("tick_delay must be shorter than the tick".into());
        }
        if self.history < 2 || self.horizon == 0 {
            return Err("history must be at least 2 steps and horizon at least 1".into());
        }
        let (step, coarse) = (self.step.as_secs(), self.coarse_step().as_secs());
        if coarse < step || coarse % step != 0 || self.coarse_step().subsec_nanos() != 0 {
            return Err(format!(
                "coarse_step ({:?}) must be a whole multiple of step ({:?})",
                self.coarse_step(),
                self.step
            ));
        }
        if self.coarse_keep < self.coarse_step() {
            return Err("coarse_keep must be at least one coarse_step".into());
        }
        // pas-history keeps an entry 15 days after its last write; each
        // block is one read per workload new to a replica.
        let block = 288 * self.coarse_step().as_secs();
        if self.coarse_keep > Duration::from_secs(14 * 86_400) || self.coarse_keep.as_secs() / block > 64 {
            return Err(format!(
                "coarse_keep ({:?}) may reach back at most 14 days (pas-history keeps 15) and 64 blocks of 288 coarse_step",
                self.coarse_keep
            ));
        }
        pas_runtime::config::check_horizon("the baseline's horizon", self.horizon, self.step, self.lead)?;
        if self.stale_after > self.forget_after {
            return Err("stale_after must not be longer than forget_after".into());
        }
        if !(0.5..1.0).contains(&self.quantile) {
            return Err("quantile must be in [0.5, 1)".into());
        }
        if self.partitions == 0 || self.chunk == 0 || self.threads < 1 {
            return Err("partitions, chunk and threads must be at least 1".into());
        }
        if self.lease < 2 * self.tick() {
            return Err(format!(
                "lease ({:?}) must be at least two ticks, so it is renewed in time",
                self.lease
            ));
        }
        Ok(())
    }
}
