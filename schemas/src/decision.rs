use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Message, ModelRef, ValidationError, check_name, check_namespace, check_timestamp};

/// What became of a scale decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The workload's replicas were patched.
    Applied,
    /// Decided and published, not patched (dry-run mode).
    DryRun,
    /// A guardrail or the Kubernetes API refused the change.
    Refused,
    /// Nothing to change.
    Unchanged,
    /// Decided and published beside what scales the workload (an HPA),
    /// never patched: `replicas_before` is what runs, `replicas_after` what
    /// PAS would run (shadow mode).
    Shadow,
}

/// The forecast a decision was based on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ForecastRef {
    /// Model that made the forecast.
    pub model: ModelRef,
    /// End of the forecast's input window.
    pub window_end: DateTime<Utc>,
}

/// A replica change the scaler decided on for one workload (a StatefulSet,
/// a Deployment).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ScaleDecision {
    /// Schema version of this message; this build writes 2.
    #[schemars(range(min = 2, max = 2))]
    pub schema_version: u32,
    /// When the decision was made (RFC 3339, UTC).
    pub timestamp: DateTime<Utc>,
    /// Namespace of the workload.
    pub namespace: String,
    /// The workload (StatefulSet or Deployment).
    pub workload: String,
    /// Replicas before the decision.
    pub replicas_before: u32,
    /// Replicas the decision asks for.
    pub replicas_after: u32,
    /// Policy in force: `hpa`, `threshold`, `predictive` or `hybrid`.
    pub policy: String,
    /// The rule that decided, e.g. `predictive`, `hpa-fallback`, `max-replicas`.
    pub rule: String,
    /// Why, in one sentence.
    pub reason: String,
    /// Applied, dry-run, refused, unchanged or shadow.
    pub outcome: Outcome,
    /// The HorizontalPodAutoscaler that scales the workload, when PAS
    /// shadows it (or refuses to fight it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hpa: Option<String>,
    /// The forecast used, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forecast: Option<ForecastRef>,
    /// Measured CPU utilisation of the ready pods (percent of requests), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utilization_percent: Option<f64>,
    /// Peak forecast demand over the lead time (millicores, all pods), if a fresh forecast was at hand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicted_peak_millicores: Option<f64>,
    /// The target utilisation in force (percent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_utilization_percent: Option<f64>,
    /// The lead time planned over, seconds: the workload's start-up (as
    /// measured from its recent scale-outs, else as configured) plus a tick.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub lead_seconds: Option<f64>,
    /// Settings that could not be used (bad `pas.io/` annotations), each with why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl Message for ScaleDecision {
    const KIND: &'static str = "scale-decision";

    fn timestamp(&self) -> DateTime<Utc> {
        self.timestamp
    }

    fn schema_version(&self) -> u32 {
        self.schema_version
    }

    fn msg_id(&self) -> String {
        format!(
            "scale:{}/{}:{}",
            self.namespace,
            self.workload,
            self.timestamp.timestamp_nanos_opt().unwrap_or_default()
        )
    }

    fn validate_fields(&self) -> Result<(), ValidationError> {
        check_namespace("namespace", &self.namespace)?;
        check_name("workload", &self.workload)?;
        if let Some(hpa) = &self.hpa {
            check_name("hpa", hpa)?;
        }
        if self.policy.is_empty() || self.rule.is_empty() {
            return Err(ValidationError::Inconsistent {
                field: "policy/rule",
                reason: "a decision names its policy and rule".into(),
            });
        }
        if let Some(f) = &self.forecast {
            check_timestamp("forecast.window_end", f.window_end)?;
        }
        if let Some(lead) = self.lead_seconds {
            crate::check_bounded("lead_seconds", lead, crate::MAX_STEP_SECONDS)?;
        }
        Ok(())
    }
}
