use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{MAX_CPU_MILLICORES, Message, ValidationError, check_bounded, check_name, check_namespace};

/// CPU use measured on one node, either of the whole node or of one pod of a
/// StatefulSet.
///
/// A node sample has no `namespace`, `workload` or `pod` and gives the node's
/// capacity; a pod sample gives all three and the pod's CPU request. Workload
/// utilisation is the sum of use over the sum of requests of its pods, in
/// percent, as the HPA defines it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CpuSample {
    /// Schema version of this message; this build writes 1.
    #[schemars(range(min = 1, max = 1))]
    pub schema_version: u32,
    /// End of the measurement interval (RFC 3339, UTC).
    pub timestamp: DateTime<Utc>,
    /// Node the sample was taken on.
    pub node: String,
    /// Namespace of the pod (pod samples only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// StatefulSet owning the pod (pod samples only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
    /// Pod name (pod samples only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// CPU used over the interval, in millicores (1000 = one core busy).
    #[schemars(range(min = 0))]
    pub cpu_used_millicores: f64,
    /// Sum of the pod's containers' CPU requests, in millicores; absent for
    /// node samples and for pods that request no CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub cpu_requested_millicores: Option<f64>,
    /// The node's CPU capacity in millicores (node samples only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub cpu_capacity_millicores: Option<f64>,
}

impl CpuSample {
    /// Whether this is a pod sample (names namespace, workload and pod).
    pub fn is_pod(&self) -> bool {
        self.pod.is_some()
    }
}

/// A workload's CPU utilisation as the HPA defines it, in percent: the sum of
/// its pods' use over the sum of their requests. Each item is one pod's mean
/// use and mean request over the interval, in millicores. `NaN` when nothing
/// is requested. The trainer, the forecaster and the recorder all use this.
pub fn workload_utilisation(pods: impl IntoIterator<Item = (f64, f64)>) -> f64 {
    let (used, requested) = pods
        .into_iter()
        .fold((0.0, 0.0), |(u, r), (pu, pr)| (u + pu, r + pr));
    if requested > 0.0 {
        100.0 * used / requested
    } else {
        f64::NAN
    }
}

impl Message for CpuSample {
    const KIND: &'static str = "cpu-sample";

    fn timestamp(&self) -> DateTime<Utc> {
        self.timestamp
    }

    fn schema_version(&self) -> u32 {
        self.schema_version
    }

    fn msg_id(&self) -> String {
        let nanos = self.timestamp.timestamp_nanos_opt().unwrap_or_default();
        match (&self.namespace, &self.pod) {
            (Some(ns), Some(pod)) => format!("cpu:{}:{ns}/{pod}:{nanos}", self.node),
            _ => format!("cpu:{}:{nanos}", self.node),
        }
    }

    fn validate_fields(&self) -> Result<(), ValidationError> {
        check_name("node", &self.node)?;
        check_bounded(
            "cpu_used_millicores",
            self.cpu_used_millicores,
            MAX_CPU_MILLICORES,
        )?;
        if let Some(v) = self.cpu_requested_millicores {
            check_bounded("cpu_requested_millicores", v, MAX_CPU_MILLICORES)?;
        }
        if let Some(v) = self.cpu_capacity_millicores {
            check_bounded("cpu_capacity_millicores", v, MAX_CPU_MILLICORES)?;
        }
        match (&self.namespace, &self.workload, &self.pod) {
            (None, None, None) => Ok(()),
            (Some(ns), Some(wl), Some(pod)) => {
                check_namespace("namespace", ns)?;
                check_name("workload", wl)?;
                check_name("pod", pod)
            }
            _ => Err(ValidationError::Inconsistent {
                field: "namespace/workload/pod",
                reason: "a pod sample names all three, a node sample none".into(),
            }),
        }
    }
}
