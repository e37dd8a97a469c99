use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Message, ValidationError, check_finite, check_name, check_timestamp};

/// The model that produced a forecast.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ModelRef {
    /// Model key: `<namespace>/<workload>` or `global`.
    pub key: String,
    /// Model kind, e.g. `lstm`, `naive`, `holt-winters`.
    pub kind: String,
    /// Version within the key; 0 for a baseline that is not stored.
    pub version: u64,
}

/// Predicted CPU utilisation of one workload for the next steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Forecast {
    /// Schema version of this message; this build writes 1.
    #[schemars(range(min = 1, max = 1))]
    pub schema_version: u32,
    /// When the forecast was made (RFC 3339, UTC).
    pub timestamp: DateTime<Utc>,
    /// Namespace of the workload.
    pub namespace: String,
    /// The StatefulSet.
    pub workload: String,
    /// The model that made it.
    pub model: ModelRef,
    /// End of the input window: the first predicted value is for
    /// `window_end + step_seconds`.
    pub window_end: DateTime<Utc>,
    /// Length of one step, in seconds.
    #[schemars(range(min = 0))]
    pub step_seconds: f64,
    /// Predicted utilisation (percent of requested CPU) per future step.
    pub values: Vec<f64>,
    /// Upper quantile per step, where the model gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upper: Option<Vec<f64>>,
    /// Which quantile `upper` is (for example 0.9).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1))]
    pub quantile: Option<f64>,
}

impl Message for Forecast {
    const KIND: &'static str = "forecast";

    fn timestamp(&self) -> DateTime<Utc> {
        self.timestamp
    }

    fn schema_version(&self) -> u32 {
        self.schema_version
    }

    fn msg_id(&self) -> String {
        format!(
            "forecast:{}/{}:{}:{}",
            self.namespace,
            self.workload,
            self.model.version,
            self.window_end.timestamp_nanos_opt().unwrap_or_default()
        )
    }

    fn validate_fields(&self) -> Result<(), ValidationError> {
        check_name("namespace", &self.namespace)?;
        check_name("workload", &self.workload)?;
        check_timestamp("window_end", self.window_end)?;
        check_finite("step_seconds", self.step_seconds)?;
        if self.step_seconds <= 0.0 {
            return Err(ValidationError::Inconsistent {
                field: "step_seconds",
                reason: "must be greater than zero".into(),
            });
        }
        if self.values.is_empty() {
            return Err(ValidationError::Inconsistent {
                field: "values",
                reason: "a forecast predicts at least one step".into(),
            });
        }
        for v in &self.values {
            check_finite("values", *v)?;
        }
        if let Some(upper) = &self.upper {
            if upper.len() != self.values.len() {
                return Err(ValidationError::Inconsistent {
                    field: "upper",
                    reason: format!("has {} steps, values has {}", upper.len(), self.values.len()),
                });
            }
            for v in upper {
                check_finite("upper", *v)?;
            }
            match self.quantile {
                Some(q) if q.is_finite() && q > 0.0 && q < 1.0 => {}
                _ => {
                    return Err(ValidationError::Inconsistent {
                        field: "quantile",
                        reason: "an upper bound needs its quantile, between 0 and 1".into(),
                    });
                }
            }
        }
        Ok(())
    }
}
