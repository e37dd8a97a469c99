use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    MAX_STEP_SECONDS, MAX_STEPS, Message, ValidationError, check_bounded, check_finite, check_non_negative,
    check_timestamp,
};

/// The most hyper-parameters, and validation scores, a manifest may list.
pub const MAX_MANIFEST_ENTRIES: usize = 64;

/// How inputs were scaled before training; applied again at inference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Normalisation {
    /// Values used as they are.
    None,
    /// `(x - mean) / std`.
    Standard {
        /// Mean of the training data.
        mean: f64,
        /// Standard deviation of the training data.
        std: f64,
    },
    /// `(x - min) / (max - min)`.
    MinMax {
        /// Minimum of the training data.
        min: f64,
        /// Maximum of the training data.
        max: f64,
    },
    /// Each window scaled on its own: `x / s`, where `s` is the larger of
    /// the window's mean absolute value and its standard deviation. What a
    /// model trained across workloads (the `global` key) uses, so one
    /// network serves loads of any size.
    Window,
}

/// The samples a model was trained on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TrainingRange {
    /// First stream sequence used.
    pub first_sequence: u64,
    /// Last stream sequence used.
    pub last_sequence: u64,
    /// Time of the first sample.
    pub from: DateTime<Utc>,
    /// Time of the last sample.
    pub to: DateTime<Utc>,
}

/// Metadata of one stored model version in the `pas-models` bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ModelManifest {
    /// Schema version of this message; this build writes 2.
    #[schemars(range(min = 2, max = 2))]
    pub schema_version: u32,
    /// When the version was stored (RFC 3339, UTC).
    pub timestamp: DateTime<Utc>,
    /// `<namespace>/<workload>` or `global`.
    pub key: String,
    /// Version number within the key, starting at 1.
    #[schemars(range(min = 1))]
    pub version: u64,
    /// Architecture, e.g. `lstm` or `lstm-seed`.
    pub architecture: String,
    /// Hyper-parameters as given to the trainer.
    pub hyper_parameters: BTreeMap<String, serde_json::Value>,
    /// Step length of the series, in seconds.
    #[schemars(range(min = 0))]
    pub step_seconds: f64,
    /// Input window, in steps.
    #[schemars(range(min = 1))]
    pub window: u32,
    /// Forecast horizon, in steps.
    #[schemars(range(min = 1))]
    pub horizon: u32,
    /// Input scaling.
    pub normalisation: Normalisation,
    /// Data the version was trained on.
    pub training: TrainingRange,
    /// Validation score (MASE, lower is better) per model, the baselines included.
    pub validation: BTreeMap<String, f64>,
    /// Digest of the weights object, `sha256:<hex>`.
    pub digest: String,
    /// Whether the version beat the naive baseline and may be served.
    pub accepted: bool,
    /// How far actual demand fell from the point forecast on the held-out
    /// part of the training data: what turns the point forecast into
    /// calibrated quantiles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<Calibration>,
    /// Why the version is or is not served, in words: for a workload's own
    /// model, how its backtest compared with the global model's on the same
    /// origins (it is kept only where it beats it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<String>,
}

/// Split-conformal calibration: per quantile level and horizon step, the
/// level's quantile of (actual − point forecast) over the backtest's
/// held-out origins, in millicores. The level-q forecast of a step is the
/// point forecast plus its offset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Calibration {
    /// Levels, ascending, between 0 and 1.
    pub levels: Vec<f64>,
    /// Per level, one offset per horizon step, millicores.
    pub offsets: Vec<Vec<f64>>,
    /// Held-out forecasts the offsets come from.
    pub origins: u64,
}

impl ModelManifest {
    /// A workload's version that the global model beat on the workload's
    /// own backtest (validation `global` ≤ `lstm`), and so not accepted:
    /// the global model serves the workload, not an older version of its own.
    pub fn defers_to_global(&self) -> bool {
        !self.accepted
            && matches!(
                (self.validation.get("global"), self.validation.get("lstm")),
                (Some(g), Some(o)) if g <= o
            )
    }
}

impl Message for ModelManifest {
    const KIND: &'static str = "model-manifest";

    fn timestamp(&self) -> DateTime<Utc> {
        self.timestamp
    }

    fn schema_version(&self) -> u32 {
        self.schema_version
    }

    fn msg_id(&self) -> String {
        format!("model:{}:{}", self.key, self.version)
    }

    fn validate_fields(&self) -> Result<(), ValidationError> {
        let bad = |field: &'static str, reason: &str| {
            Err(ValidationError::Inconsistent {
                field,
                reason: reason.into(),
            })
        };
        if self.key.is_empty() || self.key.len() > 320 {
            return bad("key", "must have 1 to 320 characters");
        }
        if self.architecture.len() > 64 {
            return bad("architecture", "has at most 64 characters");
        }
        if self.version == 0 {
            return bad("version", "versions start at 1");
        }
        if self.window == 0 || self.horizon == 0 {
            return bad("window/horizon", "must be at least one step");
        }
        if self.window as usize > MAX_STEPS || self.horizon as usize > MAX_STEPS {
            return bad("window/horizon", &format!("at most {MAX_STEPS} steps"));
        }
        check_bounded("step_seconds", self.step_seconds, MAX_STEP_SECONDS)?;
        if self.hyper_parameters.len() > MAX_MANIFEST_ENTRIES || self.validation.len() > MAX_MANIFEST_ENTRIES
        {
            return bad(
                "hyper_parameters/validation",
                &format!("at most {MAX_MANIFEST_ENTRIES} entries each"),
            );
        }
        check_timestamp("training.from", self.training.from)?;
        check_timestamp("training.to", self.training.to)?;
        if self.training.from > self.training.to || self.training.first_sequence > self.training.last_sequence
        {
            return bad("training", "the range ends before it starts");
        }
        if let Some(c) = &self.calibration {
            if c.levels.is_empty()
                || c.levels.len() > crate::MAX_QUANTILES
                || c.offsets.len() != c.levels.len()
            {
                return bad(
                    "calibration",
                    &format!("1 to {} levels, one row of offsets each", crate::MAX_QUANTILES),
                );
            }
            let mut below = 0.0;
            for (q, row) in c.levels.iter().zip(&c.offsets) {
                if !(q.is_finite() && *q > below && *q < 1.0) {
                    return bad("calibration", "levels are between 0 and 1 and ascending");
                }
                below = *q;
                if row.len() != self.horizon as usize {
                    return bad("calibration", "one offset per horizon step");
                }
                for o in row {
                    check_finite("calibration.offsets", *o)?;
                }
            }
        }
        if self.verdict.as_ref().is_some_and(|v| v.len() > 1024) {
            return bad("verdict", "has at most 1024 characters");
        }
        match self.normalisation {
            Normalisation::None | Normalisation::Window => {}
            Normalisation::Standard { mean, std } => {
                check_finite("normalisation.mean", mean)?;
                check_non_negative("normalisation.std", std)?;
            }
            Normalisation::MinMax { min, max } => {
                check_finite("normalisation.min", min)?;
                check_finite("normalisation.max", max)?;
            }
        }
        for score in self.validation.values() {
            check_finite("validation", *score)?;
        }
        let hex = self.digest.strip_prefix("sha256:").unwrap_or("");
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return bad("digest", "must be sha256:<64 hex digits>");
        }
        Ok(())
    }
}
