//! What the scaler needs of Kubernetes, behind one trait: the real API
//! ([`crate::k8s::Kube`]) or a simulated cluster ([`Simulated`]) for demos
//! and experiments where no cluster is configured.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use serde::{Deserialize, Serialize};

use crate::sim::{PodModel, SimulatedStatefulSet};

/// A kind of workload the scaler manages: any kind with a `scale`
/// subresource, `spec.replicas`, `status.readyReplicas` and a pod template
/// at `spec.template` (StatefulSet and Deployment by default).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadKind {
    /// API group (`apps`; empty for the core group).
    pub group: String,
    /// API version (`v1`).
    pub version: String,
    /// Kind (`StatefulSet`), as HPAs and owner references name it.
    pub kind: String,
    /// Resource (`statefulsets`), as URLs and RBAC name it.
    pub plural: String,
}

impl WorkloadKind {
    /// `apps/v1` StatefulSet.
    pub fn statefulset() -> WorkloadKind {
        WorkloadKind::apps("StatefulSet", "statefulsets")
    }

    /// `apps/v1` Deployment.
    pub fn deployment() -> WorkloadKind {
        WorkloadKind::apps("Deployment", "deployments")
    }

    fn apps(kind: &str, plural: &str) -> WorkloadKind {
        WorkloadKind {
            group: "apps".into(),
            version: "v1".into(),
            kind: kind.into(),
            plural: plural.into(),
        }
    }

    /// `group/version`, or `version` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

/// A workload (a StatefulSet, a Deployment, …) as the scaler sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Its kind (`StatefulSet`, `Deployment`, …).
    pub kind: String,
    /// Its API version (`apps/v1`).
    pub api_version: String,
    /// `spec.replicas`.
    pub replicas: u32,
    /// `status.readyReplicas`.
    pub ready_replicas: u32,
    /// Its annotations (the `pas.io/` ones are the settings).
    pub annotations: BTreeMap<String, String>,
    /// CPU request of one pod (sum over the pod template's containers), millicores.
    pub cpu_request_millicores: Option<f64>,
    /// Version of the object the replicas were read from; a change is made
    /// against it, so a concurrent change is noticed.
    pub resource_version: Option<String>,
    /// The object's UID (for Events).
    pub uid: Option<String>,
    /// A HorizontalPodAutoscaler that targets this workload, if any.
    pub hpa: Option<String>,
}

/// A Kubernetes call that failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClusterError {
    /// The workload does not exist (any more).
    #[error("the workload was not found")]
    NotFound,
    /// Workloads of more than one kind have this name: samples name only
    /// the workload, so PAS cannot tell whose pods they are.
    #[error("{0}")]
    Ambiguous(String),
    /// RBAC refused the call.
    #[error("forbidden ({0}); the scaler's service account needs the RBAC in docs/scaler.md")]
    Forbidden(String),
    /// Someone else changed the replicas since they were read.
    #[error("the replicas were changed to {0} by another writer")]
    Changed(u32),
    /// The object changed since it was read (retried).
    #[error("conflict: {0}")]
    Conflict(String),
    /// Too many requests (retried).
    #[error("throttled by the API server: {0}")]
    Throttled(String),
    /// The API server failed (retried).
    #[error("API server error {code}: {message}")]
    Server {
        /// HTTP status.
        code: u16,
        /// Its message.
        message: String,
    },
    /// Any other failure: a bad request, a connection that failed.
    #[error("Kubernetes request failed: {0}")]
    Request(String),
}

impl ClusterError {
    /// A fixed label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ClusterError::NotFound => "not_found",
            ClusterError::Ambiguous(_) => "ambiguous",
            ClusterError::Forbidden(_) => "forbidden",
            ClusterError::Changed(_) => "changed",
            ClusterError::Conflict(_) => "conflict",
            ClusterError::Throttled(_) => "throttled",
            ClusterError::Server { .. } => "server",
            ClusterError::Request(_) => "request",
        }
    }

    /// Whether trying again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ClusterError::Conflict(_) | ClusterError::Throttled(_) | ClusterError::Server { .. }
        )
    }
}

/// Severity of an Event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A change was made.
    Normal,
    /// A change failed or was refused.
    Warning,
}

/// The cluster the scaler acts on.
pub trait Cluster: Send + Sync + 'static {
    /// The workload `namespace/name` of any managed kind, or `None` when
    /// there is none.
    fn workload(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<Workload>, ClusterError>> + Send;

    /// Changes `workload`'s replicas (as read) to `replicas`.
    fn scale(
        &self,
        workload: &Workload,
        replicas: u32,
    ) -> impl Future<Output = Result<(), ClusterError>> + Send;

    /// Records an Event on the workload.
    fn event(
        &self,
        workload: &Workload,
        kind: EventKind,
        reason: &str,
        note: String,
    ) -> impl Future<Output = Result<(), ClusterError>> + Send;
}

/// A simulated StatefulSet.
#[derive(Debug, Clone, PartialEq)]
pub struct SimulatedSet {
    /// Its pods, which become ready after the cluster's start-up delay.
    pub pods: SimulatedStatefulSet,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
    /// CPU request per pod, millicores.
    pub cpu_request_millicores: Option<f64>,
    /// A HorizontalPodAutoscaler said to target it.
    pub hpa: Option<String>,
    /// Its kind (a StatefulSet unless [`Simulated::set_kind`] says otherwise).
    pub kind: WorkloadKind,
    version: u64,
}

/// A change or Event on the simulated cluster.
#[derive(Debug, Clone, PartialEq)]
pub enum SimulatedChange {
    /// Replicas changed.
    Scaled {
        /// `namespace/name`.
        workload: String,
        /// Before.
        from: u32,
        /// After.
        to: u32,
    },
    /// An Event.
    Event {
        /// `namespace/name`.
        workload: String,
        /// The Event's reason.
        reason: String,
    },
}

#[derive(Debug, Default)]
struct SimulatedState {
    sets: BTreeMap<(String, String), SimulatedSet>,
    /// Template for StatefulSets created on first sight.
    template: Option<(u32, BTreeMap<String, String>, Option<f64>)>,
    /// Time from pod creation to ready.
    startup: Duration,
    log: Vec<SimulatedChange>,
}

impl SimulatedState {
    fn set(
        &self,
        replicas: u32,
        annotations: BTreeMap<String, String>,
        cpu_request: Option<f64>,
    ) -> SimulatedSet {
        let model = PodModel {
            startup: self.startup,
            startup_spread: 0.0,
            capacity_millicores: cpu_request.unwrap_or(1000.0),
            request_millicores: cpu_request.unwrap_or(0.0),
        };
        SimulatedSet {
            pods: SimulatedStatefulSet::new(model, replicas, Utc::now()),
            annotations,
            cpu_request_millicores: cpu_request,
            hpa: None,
            kind: WorkloadKind::statefulset(),
            version: 1,
        }
    }
}

/// An in-memory cluster of StatefulSets, for `make demo` when no cluster is
/// configured, and for tests of the stage over a real nats-server (no
/// Kubernetes API server can run there). Pods are ready after a start-up
/// delay (none unless [`Simulated::with_startup`] sets one), on the wall
/// clock. Clones share the cluster.
#[derive(Debug, Clone, Default)]
pub struct Simulated {
    state: Arc<Mutex<SimulatedState>>,
}

impl Simulated {
    /// An empty cluster.
    pub fn new() -> Simulated {
        Simulated::default()
    }

    /// A cluster that creates a StatefulSet for every workload it is asked
    /// about, with `replicas` and `annotations`.
    pub fn creating(
        replicas: u32,
        annotations: BTreeMap<String, String>,
        cpu_request_millicores: Option<f64>,
    ) -> Simulated {
        let sim = Simulated::default();
        sim.lock().template = Some((replicas, annotations, cpu_request_millicores));
        sim
    }

    /// Makes new pods ready `startup` after they are created.
    pub fn with_startup(self, startup: Duration) -> Simulated {
        self.lock().startup = startup;
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SimulatedState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds or replaces a StatefulSet.
    pub fn insert(
        &self,
        namespace: &str,
        name: &str,
        replicas: u32,
        annotations: BTreeMap<String, String>,
        cpu_request_millicores: Option<f64>,
    ) {
        let mut state = self.lock();
        let set = state.set(replicas, annotations, cpu_request_millicores);
        state.sets.insert((namespace.into(), name.into()), set);
    }

    /// Says an HPA targets a StatefulSet.
    pub fn set_hpa(&self, namespace: &str, name: &str, hpa: &str) {
        if let Some(set) = self.lock().sets.get_mut(&(namespace.into(), name.into())) {
            set.hpa = Some(hpa.into());
        }
    }

    /// Makes a workload of another kind (a Deployment).
    pub fn set_kind(&self, namespace: &str, name: &str, kind: WorkloadKind) {
        if let Some(set) = self.lock().sets.get_mut(&(namespace.into(), name.into())) {
            set.kind = kind;
        }
    }

    /// The replicas of a StatefulSet.
    pub fn replicas(&self, namespace: &str, name: &str) -> Option<u32> {
        self.lock()
            .sets
            .get(&(namespace.into(), name.into()))
            .map(|s| s.pods.replicas())
    }

    /// The replicas of a StatefulSet that are ready now.
    pub fn ready(&self, namespace: &str, name: &str) -> Option<u32> {
        self.lock()
            .sets
            .get(&(namespace.into(), name.into()))
            .map(|s| s.pods.ready(Utc::now()))
    }

    /// Every change and Event so far, oldest first.
    pub fn log(&self) -> Vec<SimulatedChange> {
        self.lock().log.clone()
    }
}

impl Cluster for Simulated {
    async fn workload(&self, namespace: &str, name: &str) -> Result<Option<Workload>, ClusterError> {
        let mut state = self.lock();
        let key = (namespace.to_string(), name.to_string());
        if !state.sets.contains_key(&key)
            && let Some((replicas, annotations, request)) = state.template.clone()
        {
            let set = state.set(replicas, annotations, request);
            state.sets.insert(key.clone(), set);
        }
        let now = Utc::now();
        Ok(state.sets.get(&key).map(|s| Workload {
            namespace: namespace.into(),
            name: name.into(),
            kind: s.kind.kind.clone(),
            api_version: s.kind.api_version(),
            replicas: s.pods.replicas(),
            ready_replicas: s.pods.ready(now),
            annotations: s.annotations.clone(),
            cpu_request_millicores: s.cpu_request_millicores,
            resource_version: Some(s.version.to_string()),
            uid: None,
            hpa: s.hpa.clone(),
        }))
    }

    async fn scale(&self, workload: &Workload, replicas: u32) -> Result<(), ClusterError> {
        let mut state = self.lock();
        let set = state
            .sets
            .get_mut(&(workload.namespace.clone(), workload.name.clone()))
            .ok_or(ClusterError::NotFound)?;
        if set.pods.replicas() != workload.replicas {
            return Err(ClusterError::Changed(set.pods.replicas()));
        }
        set.pods.scale(replicas, Utc::now());
        set.version += 1;
        let change = SimulatedChange::Scaled {
            workload: format!("{}/{}", workload.namespace, workload.name),
            from: workload.replicas,
            to: replicas,
        };
        state.log.push(change);
        Ok(())
    }

    async fn event(
        &self,
        workload: &Workload,
        _kind: EventKind,
        reason: &str,
        _note: String,
    ) -> Result<(), ClusterError> {
        let change = SimulatedChange::Event {
            workload: format!("{}/{}", workload.namespace, workload.name),
            reason: reason.into(),
        };
        self.lock().log.push(change);
        Ok(())
    }
}
