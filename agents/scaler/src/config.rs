use std::net::SocketAddr;
use std::time::Duration;

use pas_nats::{Admission, NatsConfig};
use serde::{Deserialize, Serialize};

use crate::cluster::WorkloadKind;
use crate::policy::{Behavior, Settings, Tuning};

/// Which cluster the scaler acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClusterKind {
    /// The Kubernetes API when an in-cluster service account or a
    /// kubeconfig is found, otherwise the simulated cluster.
    Auto,
    /// The Kubernetes API (in-cluster config or kubeconfig).
    Kube,
    /// An in-memory cluster that creates a StatefulSet for every workload it
    /// hears of (`simulated_replicas` replicas, the default settings).
    Simulated,
}

/// Scaler configuration. Layers: these defaults, then `--config FILE`
/// (TOML or JSON), then `PAS_*` environment variables, then flags.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Read forecasts and samples under `replay.<run>.` and publish decisions there.
    pub run: Option<String>,
    /// Workloads without a fresh forecast are evaluated this often (on
    /// samples); it is also part of the lead time.
    #[serde(with = "humantime_serde")]
    pub tick: Duration,
    /// A forecast older than this (from the end of its input window) is
    /// stale: the `hpa` rule decides instead.
    #[serde(with = "humantime_serde")]
    pub forecast_max_age: Duration,
    /// A pod without a sample this recent counts as missing.
    #[serde(with = "humantime_serde")]
    pub sample_max_age: Duration,
    /// Usage ratios within this of 1 change nothing.
    pub tolerance: f64,
    /// The `threshold` policy's trigger, percent.
    pub threshold: f64,
    /// Settings of every workload unless its `pas.io/` annotations say otherwise.
    pub defaults: Settings,
    /// Stabilisation windows and rate limits (the HPA's `behavior`).
    pub behavior: Behavior,
    /// `auto`, `kube` or `simulated`.
    pub cluster: ClusterKind,
    /// How long a shadow workload's scorecard keeps its hours.
    #[serde(with = "humantime_serde")]
    pub shadow_window: Duration,
    /// A shadow workload's state (with its scorecard) is written to KV at
    /// most this often (and whenever its history changes).
    #[serde(with = "humantime_serde")]
    pub shadow_write_every: Duration,
    /// The kinds of workload managed (each with a `scale` subresource and a
    /// pod template): StatefulSets and Deployments by default. The scaler's
    /// RBAC must allow each (docs/scaler.md).
    pub workload_kinds: Vec<WorkloadKind>,
    /// Replicas of a simulated StatefulSet when it is first heard of.
    pub simulated_replicas: u32,
    /// How long a simulated StatefulSet's new pod takes to become ready;
    /// unset, the default settings' `startup`. Set it to model pods slower
    /// (or faster) than the start-up the policies plan for.
    #[serde(with = "humantime_serde")]
    pub simulated_startup: Option<Duration>,
    /// Retries of a failed Kubernetes call (conflict, 429, 5xx).
    pub kube_retries: usize,
    /// Longest wait between those retries.
    #[serde(with = "humantime_serde")]
    pub kube_retry_max: Duration,
    /// This scaler's name (in Kubernetes, the pod name); random when not set.
    pub replica: Option<String>,
    /// How long the leader's lease lasts without renewal.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
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
        let tuning = Tuning::default();
        Config {
            run: None,
            tick: tuning.tick,
            forecast_max_age: tuning.forecast_max_age,
            sample_max_age: Duration::from_secs(30),
            tolerance: tuning.tolerance,
            threshold: tuning.threshold,
            defaults: Settings::default(),
            behavior: tuning.behavior,
            cluster: ClusterKind::Auto,
            shadow_window: Duration::from_secs(7 * 86_400),
            shadow_write_every: Duration::from_secs(60),
            workload_kinds: vec![WorkloadKind::statefulset(), WorkloadKind::deployment()],
            simulated_replicas: 1,
            simulated_startup: None,
            kube_retries: 4,
            kube_retry_max: Duration::from_secs(5),
            replica: None,
            lease: Duration::from_secs(15),
            listen: SocketAddr::from(([0, 0, 0, 0], 9467)),
            log_json: false,
            nats: NatsConfig::default(),
            admission: Admission::default(),
        }
    }
}

impl Config {
    /// This scaler's name as one NATS token.
    pub fn replica_id(&self) -> String {
        pas_runtime::config::replica_id(self.replica.as_deref(), "scaler")
    }

    /// The settings that hold for every workload.
    pub fn tuning(&self) -> Tuning {
        Tuning {
            tolerance: self.tolerance,
            threshold: self.threshold,
            tick: self.tick,
            forecast_max_age: self.forecast_max_age,
            behavior: self.behavior.clone(),
        }
    }

    pub(crate) fn check(&self) -> Result<(), String> {
        if self.tick.as_millis() < 100 {
            return Err("tick must be at least 100ms".into());
        }
        if !(0.0..1.0).contains(&self.tolerance) {
            return Err("tolerance must be in [0, 1)".into());
        }
        if self.lease < Duration::from_secs(3) {
            return Err("lease must be at least 3s (it is renewed every third of it)".into());
        }
        if self.shadow_window > Duration::from_secs(90 * 86_400)
            || self.shadow_window < Duration::from_secs(3600)
        {
            return Err(format!(
                "shadow_window must be between 1h and 90d (a shadow keeps an entry per hour), not {}",
                humantime::format_duration(self.shadow_window)
            ));
        }
        if self.workload_kinds.is_empty() {
            return Err("workload_kinds names no kind: the scaler would manage nothing".into());
        }
        for (i, kind) in self.workload_kinds.iter().enumerate() {
            if kind.kind.is_empty() || kind.version.is_empty() || kind.plural.is_empty() {
                return Err(format!(
                    "workload_kinds[{i}] needs a kind, a version and a plural: {kind:?}"
                ));
            }
            if self.workload_kinds[..i]
                .iter()
                .any(|k| k.kind == kind.kind && k.group == kind.group)
            {
                return Err(format!("workload_kinds names {} twice", kind.kind));
            }
        }
        self.defaults.check().map_err(|e| format!("defaults: {e}"))?;
        self.behavior.check()
    }
}
