//! `pas-agent`: the PAS node agent. See the library for how it works.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use pas_agent::{Agent, Config};
use pas_runtime::config as layered;

/// Samples this node's CPU and the CPU of every StatefulSet and Deployment pod on it, and
/// publishes the samples to NATS (`pas.cpu.node.<node>`,
/// `pas.cpu.pod.<namespace>.<statefulset>.<pod>`).
///
/// Settings are layered: defaults, then --config FILE, then PAS_*
/// environment variables (PAS_INTERVAL=10s, PAS_NATS__URLS=nats://a:4222),
/// then these flags.
#[derive(Debug, Parser)]
#[command(name = "pas-agent", version, after_help = CONFIG_KEYS)]
struct Cli {
    /// Configuration file (TOML, or JSON by extension).
    #[arg(long, short = 'c', env = "PAS_CONFIG")]
    config: Option<PathBuf>,
    /// Node name [default: $NODE_NAME, else the host name].
    #[arg(long)]
    node_name: Option<String>,
    /// Time between samples, e.g. 5s or 500ms [default: 5s].
    #[arg(long)]
    interval: Option<String>,
    /// Publish under replay.<RUN>. instead of the live subjects.
    #[arg(long)]
    run: Option<String>,
    /// Mount point of the cgroup v2 hierarchy [default: /sys/fs/cgroup].
    #[arg(long)]
    cgroup_root: Option<PathBuf>,
    /// Map pod cgroups to pods through Kubernetes: auto, on or off [default: auto].
    #[arg(long, value_parser = ["auto", "on", "off"])]
    kubernetes: Option<String>,
    /// Samples kept while NATS is unreachable; the oldest go first [default: 10000].
    #[arg(long)]
    buffer_capacity: Option<u64>,
    /// Address for /healthz, /readyz and /metrics [default: 0.0.0.0:9464].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// NATS server URL; repeat for several [default: nats://127.0.0.1:4222].
    #[arg(long = "nats-url")]
    nats_urls: Vec<String>,
    /// NATS user (the password comes from the file or PAS_NATS__PASSWORD).
    #[arg(long)]
    nats_user: Option<String>,
    /// NATS credentials file (.creds).
    #[arg(long)]
    nats_creds: Option<PathBuf>,
    /// Log JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
    /// Print the effective configuration as JSON (secrets redacted) and exit.
    #[arg(long)]
    print_config: bool,
}

/// Every setting, for `--help`: flags cover the common ones, the rest are set
/// in the file or the environment.
const CONFIG_KEYS: &str = "\
Settings (file key / environment variable; flags above override both):
  node_name                 PAS_NODE_NAME                 node to report [$NODE_NAME, else host name]
  interval                  PAS_INTERVAL                  time between samples [5s]
  run                       PAS_RUN                       publish under replay.<run>. [live]
  cgroup_root               PAS_CGROUP_ROOT               cgroup v2 mount [/sys/fs/cgroup]
  kubernetes                PAS_KUBERNETES                auto | on | off [auto]
  workload_kinds            PAS_WORKLOAD_KINDS            pods of these kinds are sampled [StatefulSet,Deployment]
  buffer_capacity           PAS_BUFFER_CAPACITY           samples kept while NATS is down [10000]
  listen                    PAS_LISTEN                    /healthz /readyz /metrics [0.0.0.0:9464]
  log_json                  PAS_LOG_JSON                  JSON log lines [false]
  nats.urls                 PAS_NATS__URLS                comma-separated servers [nats://127.0.0.1:4222]
  nats.user                 PAS_NATS__USER                user name
  nats.password             PAS_NATS__PASSWORD            password (never logged)
  nats.token                PAS_NATS__TOKEN               token (never logged)
  nats.nkey_seed_file       PAS_NATS__NKEY_SEED_FILE      file with an nkey seed
  nats.creds_file           PAS_NATS__CREDS_FILE          .creds file
  nats.tls.required         PAS_NATS__TLS__REQUIRED       refuse plain connections [false]
  nats.tls.ca_file          PAS_NATS__TLS__CA_FILE        CA of the server certificate (PEM)
  nats.tls.cert_file        PAS_NATS__TLS__CERT_FILE      client certificate for mutual TLS (PEM)
  nats.tls.key_file         PAS_NATS__TLS__KEY_FILE       its key (PEM)
  nats.reconnect_max_delay  PAS_NATS__RECONNECT_MAX_DELAY cap of the jittered reconnect backoff [30s]
  nats.ack_timeout          PAS_NATS__ACK_TIMEOUT         wait for a JetStream ack [5s]
  nats.inbox_prefix         PAS_NATS__INBOX_PREFIX        reply subject prefix [_INBOX_<user>]
RUST_LOG filters the log (default info). SIGTERM drains; a second SIGTERM stops at once.";

impl Cli {
    fn overrides(&self) -> Vec<(&'static str, config::Value)> {
        let mut o: Vec<(&'static str, config::Value)> = Vec::new();
        let mut set = |k: &'static str, v: Option<config::Value>| {
            if let Some(v) = v {
                o.push((k, v));
            }
        };
        set("node_name", self.node_name.clone().map(Into::into));
        set("interval", self.interval.clone().map(Into::into));
        set("run", self.run.clone().map(Into::into));
        set(
            "cgroup_root",
            self.cgroup_root.as_ref().map(|p| p.display().to_string().into()),
        );
        set("kubernetes", self.kubernetes.clone().map(Into::into));
        set("buffer_capacity", self.buffer_capacity.map(Into::into));
        set("listen", self.listen.map(|a| a.to_string().into()));
        set("nats.user", self.nats_user.clone().map(Into::into));
        set(
            "nats.creds_file",
            self.nats_creds.as_ref().map(|p| p.display().to_string().into()),
        );
        if !self.nats_urls.is_empty() {
            set("nats.urls", Some(self.nats_urls.clone().into()));
        }
        if self.log_json {
            set("log_json", Some(true.into()));
        }
        o
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config: Config = layered::load(cli.config.as_deref(), std::env::vars(), cli.overrides())
        .context("loading the configuration")?;
    if cli.print_config {
        println!("{}", serde_json::to_string_pretty(&config)?);
        return Ok(());
    }
    pas_runtime::telemetry::init(config.log_json, "info");
    // One thread is plenty for sampling and publishing, and keeps memory low.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        tracing::info!(config = %layered::describe(&config), "Starting pas-agent.");
        let shutdown = pas_runtime::shutdown::on_signal();
        Agent::new(config)?.run(shutdown).await?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(prefix: &str, value: &serde_json::Value, out: &mut Vec<String>) {
        if let Some(object) = value.as_object() {
            for (k, v) in object {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                if v.is_object() {
                    keys(&key, v, out);
                } else {
                    out.push(key);
                }
            }
        }
    }

    #[test]
    fn help_lists_every_setting() {
        let mut all = Vec::new();
        keys("", &serde_json::to_value(Config::default()).unwrap(), &mut all);
        assert!(all.len() > 15, "{all:?}");
        for key in all {
            let env = format!("PAS_{}", key.to_uppercase().replace('.', "__"));
            let line = CONFIG_KEYS
                .lines()
                .find(|l| l.split_whitespace().next() == Some(key.as_str()));
            let line = line.unwrap_or_else(|| panic!("--help does not list {key}"));
            assert!(line.contains(&env), "--help gives {key} without {env}");
        }
    }

    #[test]
    fn flags_parse_into_overrides() {
        let cli = Cli::try_parse_from([
            "pas-agent",
            "--interval",
            "2s",
            "--nats-url",
            "nats://a:1",
            "--nats-url",
            "nats://b:2",
            "--kubernetes",
            "off",
        ])
        .unwrap();
        let config: Config = layered::load(None, Vec::new(), cli.overrides()).unwrap();
        assert_eq!(config.interval, std::time::Duration::from_secs(2));
        assert_eq!(config.nats.urls, ["nats://a:1", "nats://b:2"]);
        assert_eq!(config.kubernetes, pas_agent::KubeMode::Off);
        assert!(Cli::try_parse_from(["pas-agent", "--kubernetes", "maybe"]).is_err());
    }
}
