use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{MAX_CPU_MILLICORES, Message, ValidationError, check_bounded, check_name, check_namespace};

/// CPU use measured on one node, either of the whole node or of one pod of a
/// StatefulSet.
///
/// A node sample has no `namespace`, `workload` or `pod` and gives the node's
/// capacity; a pod sample gives all three, the pod's CPU request and how much
/// of the interval it was CPU-throttled. A workload's **demand** is the sum
/// of its pods' use in millicores (what models forecast); its utilisation is
/// the sum of use over the sum of requests, in percent, as the HPA defines it
/// (what the HPA rule observes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CpuSample {
    /// Schema version of this message; this build writes 2.
    #[schemars(range(min = 2, max = 2))]
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
    /// Share of the interval the pod was CPU-throttled, 0 to 1: of its CFS
    /// quota periods in the interval, those in which the quota ran out
    /// (cgroup v2 `cpu.stat` `nr_throttled` over `nr_periods`; pod samples
    /// only, where known). At [`SATURATED_THROTTLED_SHARE`] or more the pod wanted more
    /// CPU than it got, so its use is a lower bound of its demand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1))]
    pub cpu_throttled_ratio: Option<f64>,
}

/// A pod throttled in at least this share of an interval's periods is
/// saturated: it wanted more CPU than its limit let it use, and its use
/// understates its demand. 5 %: a pod that never reaches its limit is
/// throttled in no period, and one that sits at it is throttled in most.
pub const SATURATED_THROTTLED_SHARE: f64 = 0.05;

impl CpuSample {
    /// Whether this is a pod sample (names namespace, workload and pod).
    pub fn is_pod(&self) -> bool {
        self.pod.is_some()
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
        if let Some(v) = self.cpu_throttled_ratio {
            check_bounded("cpu_throttled_ratio", v, 1.0)?;
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
