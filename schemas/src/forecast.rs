use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    MAX_FORECAST_VALUE, MAX_STEP_SECONDS, MAX_STEPS, Message, ValidationError, check_bounded, check_name,
    check_namespace, check_timestamp,
};

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

/// One quantile of the demand per future step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct QuantileForecast {
    /// The level, between 0 and 1 (0.95: demand is at or below `values`
    /// in 95 % of cases).
    #[schemars(range(min = 0, max = 1))]
    pub q: f64,
    /// Millicores per step, as many as the point forecast's.
    pub values: Vec<f64>,
}

/// Predicted CPU **demand** of one workload for the next steps: the sum of
/// its pods' use, in millicores, which does not change when the replica count
/// does. The scaler turns it into replicas with the per-pod request:
/// ceil(peak demand / (target utilisation × request)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Forecast {
    /// Schema version of this message; this build writes 2.
    #[schemars(range(min = 2, max = 2))]
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
    /// The CPU request of one pod the forecast assumed (the mean over the
    /// pods of the window's last step), in millicores; above zero.
    #[schemars(extend("exclusiveMinimum" = 0))]
    pub pod_request_millicores: f64,
    /// Predicted demand per future step, millicores (the sum over the pods).
    pub values: Vec<f64>,
    /// Upper quantile of the demand per step, millicores, where the model gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upper: Option<Vec<f64>>,
    /// Which quantile `upper` is (for example 0.9).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1))]
    pub quantile: Option<f64>,
    /// Calibrated quantiles of the demand per step, levels ascending (see
    /// [`crate::QUANTILE_LEVELS`]): what the scaler plans on for a
    /// workload's risk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantiles: Option<Vec<QuantileForecast>>,
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
        check_namespace("namespace", &self.namespace)?;
        check_name("workload", &self.workload)?;
        check_timestamp("window_end", self.window_end)?;
        if self.model.key.len() > 320 || self.model.kind.len() > 64 {
            return Err(ValidationError::Inconsistent {
                field: "model",
                reason: "its key has at most 320 characters and its kind at most 64".into(),
            });
        }
        check_bounded("step_seconds", self.step_seconds, MAX_STEP_SECONDS)?;
        check_bounded(
            "pod_request_millicores",
            self.pod_request_millicores,
            crate::MAX_CPU_MILLICORES,
        )?;
        if self.pod_request_millicores <= 0.0 {
            return Err(ValidationError::Inconsistent {
                field: "pod_request_millicores",
                reason: "must be greater than zero".into(),
            });
        }
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
        if self.values.len() > MAX_STEPS {
            return Err(ValidationError::Inconsistent {
                field: "values",
                reason: format!(
                    "{} steps, more than the {MAX_STEPS} a forecast may have",
                    self.values.len()
                ),
            });
        }
        for v in &self.values {
            check_bounded("values", *v, MAX_FORECAST_VALUE)?;
        }
        if let Some(upper) = &self.upper {
            if upper.len() != self.values.len() {
                return Err(ValidationError::Inconsistent {
                    field: "upper",
                    reason: format!("has {} steps, values has {}", upper.len(), self.values.len()),
                });
            }
            for v in upper {
                check_bounded("upper", *v, MAX_FORECAST_VALUE)?;
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
        if let Some(quantiles) = &self.quantiles {
            if quantiles.len() > crate::MAX_QUANTILES {
                return Err(ValidationError::Inconsistent {
                    field: "quantiles",
                    reason: format!("at most {} levels", crate::MAX_QUANTILES),
                });
            }
            let mut below = 0.0;
            for q in quantiles {
                if !(q.q.is_finite() && q.q > below && q.q < 1.0) {
                    return Err(ValidationError::Inconsistent {
                        field: "quantiles",
                        reason: "levels are between 0 and 1 and ascending".into(),
                    });
                }
                below = q.q;
                if q.values.len() != self.values.len() {
                    return Err(ValidationError::Inconsistent {
                        field: "quantiles",
                        reason: format!(
                            "level {} has {} steps, values has {}",
                            q.q,
                            q.values.len(),
                            self.values.len()
                        ),
                    });
                }
                for v in &q.values {
                    check_bounded("quantiles", *v, MAX_FORECAST_VALUE)?;
                }
            }
        }
        Ok(())
    }
}
