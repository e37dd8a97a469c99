use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use pas_nats::NatsConfig;
use serde::{Deserialize, Serialize};

/// Whether the agent asks Kubernetes which pod each cgroup belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KubeMode {
    /// Use Kubernetes when in a cluster or a kubeconfig works; otherwise run
    /// node-only.
    Auto,
    /// Require Kubernetes; failing to reach it is an error.
    On,
    /// Node samples only.
    Off,
}

/// Node agent configuration. Layers: these defaults, then `--config FILE`
/// (TOML or JSON), then `PAS_*` environment variables (`PAS_INTERVAL=10s`,
/// `PAS_NATS__URLS=nats://a:4222,nats://b:4222`), then flags.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Name of this node. Default: `$NODE_NAME` (set it from the downward
    /// API in a DaemonSet), else the host name.
    pub node_name: Option<String>,
    /// Time between two samples.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Publish under `replay.<run>.` instead of the live `pas.` subjects.
    pub run: Option<String>,
    /// Where the cgroup v2 hierarchy is mounted.
    pub cgroup_root: PathBuf,
    /// `auto`, `on` or `off`: map pod cgroups to pods through the Kubernetes API.
    pub kubernetes: KubeMode,
    /// Kinds of workload whose pods are sampled: `StatefulSet`,
    /// `Deployment` (a pod's ReplicaSet names it), and any kind that
    /// controls its pods directly.
    pub workload_kinds: Vec<String>,
    /// Samples kept while NATS is unreachable; when full, the oldest are
    /// dropped (and counted in `pas_agent_dropped_total`).
    pub buffer_capacity: usize,
    /// Address of `/healthz`, `/readyz` and `/metrics`.
    pub listen: SocketAddr,
    /// Log one JSON object per line instead of text.
    pub log_json: bool,
    /// The NATS connection.
    pub nats: NatsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node_name: None,
            interval: Duration::from_secs(5),
            run: None,
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            kubernetes: KubeMode::Auto,
            workload_kinds: vec!["StatefulSet".into(), "Deployment".into()],
            buffer_capacity: 10_000,
            listen: SocketAddr::from(([0, 0, 0, 0], 9464)),
            log_json: false,
            nats: NatsConfig::default(),
        }
    }
}

impl Config {
    /// The node name to report: the configured one, `$NODE_NAME`, or the
    /// host name.
    pub fn resolved_node_name(&self) -> String {
        if let Some(name) = self.node_name.clone().filter(|n| !n.is_empty()) {
            return name;
        }
        if let Ok(name) = std::env::var("NODE_NAME")
            && !name.is_empty()
        {
            return name;
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".to_owned())
    }
}
