use std::net::SocketAddr;
use std::time::Duration;

use pas_models::lstm::LstmConfig;
use pas_nats::{Admission, NatsConfig};
use serde::{Deserialize, Serialize};

/// Trainer configuration. Layers: these defaults, then `--config FILE`
/// (TOML or JSON), then `PAS_*` environment variables (`PAS_STEP=5s`,
/// `PAS_MODEL__HIDDEN=32`), then flags.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Read samples under `replay.<run>.` instead of the live `pas.` subjects
    /// (and store and announce models for that run).
    pub run: Option<String>,
    /// Step of the demand series a workload's samples are put on.
    #[serde(with = "humantime_serde")]
    pub step: Duration,
    /// The scaler's lead time (its pod start-up plus one tick): the model's
    /// horizon × `step` must reach past it, or training is refused at start.
    #[serde(with = "humantime_serde")]
    pub lead: Duration,
    /// Steps of history a workload needs before its first model.
    pub min_history: usize,
    /// Most steps of history kept per workload (the newest).
    pub max_history: usize,
    /// How long a step stays open to late samples (a node's agent flushing
    /// after an outage) once newer steps have arrived; later ones are
    /// ignored and counted as `late`.
    #[serde(with = "humantime_serde")]
    pub lateness: Duration,
    /// Train a workload again once its data reaches this far past the end of
    /// the data its newest model was trained on.
    #[serde(with = "humantime_serde")]
    pub retrain_after: Duration,
    /// How often the trainer looks for workloads due for training.
    #[serde(with = "humantime_serde")]
    pub check_interval: Duration,
    /// A workload with no sample for this long is forgotten (its series and
    /// training attempts); its stored models stay.
    #[serde(with = "humantime_serde")]
    pub forget_after: Duration,
    /// Model versions kept per workload (the newest accepted one is always kept).
    pub keep_versions: usize,
    /// Holes of at most this many steps are interpolated; longer ones stay missing.
    pub max_fill: usize,
    /// Share of a workload's history (its newest part) the backtest scores on.
    pub test_fraction: f64,
    /// libtorch threads for training.
    pub threads: i32,
    /// The LSTM to train (its fields as in `pas models train --lstm-config`).
    pub model: LstmConfig,
    /// Train the global model (key `global`): one network across every
    /// workload with `min_history` steps, each window scaled on its own,
    /// which serves any workload without an accepted model of its own, a
    /// new one from its first full window. Each workload's own model is
    /// then fine-tuned from it and kept only where it beats it.
    pub global: bool,
    /// Most training examples the global model draws, spread evenly over
    /// the workloads.
    pub global_pool: usize,
    /// Most workloads (spread evenly) the global model's backtest scores it
    /// on; it is accepted when its mean MASE beats the naive forecast's.
    pub global_gate: usize,
    /// Epochs of fine-tuning a workload's own model from the global one.
    pub fine_tune_epochs: usize,
    /// Training examples per fine-tuning epoch.
    pub fine_tune_examples: usize,
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
            min_history: 720,
            max_history: 17_280,
            lateness: Duration::from_secs(600),
            retrain_after: Duration::from_secs(3600),
            check_interval: Duration::from_secs(30),
            forget_after: Duration::from_secs(6 * 3600),
            keep_versions: 5,
            max_fill: 3,
            test_fraction: 0.2,
            threads: 1,
            model: LstmConfig::default(),
            global: true,
            global_pool: pas_models::global::DEFAULT_POOL,
            global_gate: 256,
            fine_tune_epochs: 2,
            fine_tune_examples: 1_000,
            listen: SocketAddr::from(([0, 0, 0, 0], 9465)),
            log_json: false,
            nats: NatsConfig::default(),
            admission: Admission::default(),
        }
    }
}

impl Config {
    pub(crate) fn check(&self) -> Result<(), String> {
        let step = self.step.as_secs();
        if step == 0 || self.step.subsec_nanos() != 0 {
            return Err(format!(
                "step must be a whole number of seconds, not {:?}",
                self.step
            ));
        }
        let needed = self.model.window + self.model.horizon;
        let test = (self.min_history as f64 * self.test_fraction) as usize;
        if test < self.model.horizon + 1 || self.min_history - test < 4 * needed {
            return Err(format!(
                "min_history ({}) is too short for a window of {} and a horizon of {} with test_fraction {}",
                self.min_history, self.model.window, self.model.horizon, self.test_fraction
            ));
        }
        pas_runtime::config::check_horizon("the model's horizon", self.model.horizon, self.step, self.lead)?;
        if self.max_history < self.min_history {
            return Err("max_history must be at least min_history".into());
        }
        if self.global && (self.global_pool == 0 || self.global_gate == 0 || self.fine_tune_epochs == 0) {
            return Err("global_pool, global_gate and fine_tune_epochs must be at least 1".into());
        }
        if self.keep_versions == 0 {
            return Err("keep_versions must be at least 1".into());
        }
        if !(0.0..0.9).contains(&self.test_fraction) || self.test_fraction == 0.0 {
            return Err("test_fraction must be in (0, 0.9)".into());
        }
        Ok(())
    }
}
