use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Message, ValidationError, check_name, check_namespace, check_timestamp};

/// A training job in the work queue `PAS_TRAINING`
/// (`pas.train.<namespace>.<workload>`, or `pas.train.global` for the
/// global model): train the next version of one model on the data up to
/// `data_to`. Any trainer replica takes it; it is acked only once the
/// version is stored, so a trainer that dies leaves it to another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TrainJob {
    /// Schema version of this message; this build writes 2.
    #[schemars(range(min = 2, max = 2))]
    pub schema_version: u32,
    /// When the job was queued (RFC 3339, UTC).
    pub timestamp: DateTime<Utc>,
    /// The workload's namespace; absent for the global model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The workload; absent for the global model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
    /// End of the data the queuing trainer saw (its newest step): a version
    /// trained this far or further makes the job done.
    pub data_to: DateTime<Utc>,
}

impl TrainJob {
    /// The model key: `<namespace>/<workload>`, or `global`.
    pub fn key(&self) -> String {
        match (&self.namespace, &self.workload) {
            (Some(ns), Some(wl)) => format!("{ns}/{wl}"),
            _ => "global".to_owned(),
        }
    }
}

impl Message for TrainJob {
    const KIND: &'static str = "train-job";

    fn timestamp(&self) -> DateTime<Utc> {
        self.timestamp
    }

    fn schema_version(&self) -> u32 {
        self.schema_version
    }

    fn msg_id(&self) -> String {
        format!("train:{}:{}", self.key(), self.data_to.timestamp())
    }

    fn validate_fields(&self) -> Result<(), ValidationError> {
        match (&self.namespace, &self.workload) {
            (Some(ns), Some(wl)) => {
                check_namespace("namespace", ns)?;
                check_name("workload", wl)?;
            }
            (None, None) => {}
            _ => {
                return Err(ValidationError::Inconsistent {
                    field: "namespace/workload",
                    reason: "both or neither (the global model)".into(),
                });
            }
        }
        check_timestamp("data_to", self.data_to)
    }
}
