//! The PAS node agent (`pas-agent`): samples this node's CPU and the CPU of
//! every StatefulSet and Deployment pod on it, and publishes them to NATS.
//!
//! Every [`Config::interval`] it reads the whole node through sysinfo
//! ([`node`]) and each pod's cgroup v2 usage counter ([`cgroup`]); in a
//! cluster a watch on the node's pods ([`pods`]) names each pod cgroup
//! (namespace, pod, owning StatefulSet or Deployment, CPU request). Samples go into a
//! bounded [`outbox::Outbox`] and are published to JetStream with
//! `Nats-Msg-Id`; only an acknowledged sample leaves the outbox, so while
//! NATS is unreachable samples wait (oldest dropped first when full, and
//! counted) and are flushed on reconnect.
//!
//! The agent links neither libtorch nor InfluxDB. Start at [`Agent::run`].

pub mod cgroup;
pub mod node;
pub mod outbox;
pub mod pods;

mod config;
mod error;

pub use config::{Config, KubeMode};
pub use error::Error;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::Utc;
use pas_nats::{Connection, Outgoing};
use pas_runtime::health::{self, Health};
use pas_schemas::subjects::Prefix;
use pas_schemas::{CpuSample, SCHEMA_VERSION};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::outbox::Outbox;
use crate::pods::PodMap;

/// Messages published per round trip while flushing.
const BATCH: usize = 256;
/// How long a shutdown waits for the outbox to drain.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The agent's counters, served on `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// `pas_agent_samples_total`: samples taken.
    pub samples: Counter,
    /// `pas_agent_published_total`: samples JetStream acknowledged.
    pub published: Counter,
    /// `pas_agent_dropped_total`: samples dropped because the outbox was full.
    pub dropped: Counter,
    /// `pas_agent_publish_errors_total`: failed publish attempts (retried).
    pub publish_errors: Counter,
    /// `pas_agent_buffered_samples`: samples waiting for an ack.
    pub buffered: Gauge,
    /// `pas_agent_pods`: Workload pods sampled in the last interval.
    pub pods: Gauge,
}

impl Metrics {
    fn register(&self, registry: &mut Registry) {
        registry.register("pas_agent_samples", "CPU samples taken.", self.samples.clone());
        registry.register(
            "pas_agent_published",
            "Samples acknowledged by JetStream.",
            self.published.clone(),
        );
        registry.register(
            "pas_agent_dropped",
            "Samples dropped because the outbox was full.",
            self.dropped.clone(),
        );
        registry.register(
            "pas_agent_publish_errors",
            "Failed publish attempts (retried).",
            self.publish_errors.clone(),
        );
        registry.register(
            "pas_agent_buffered_samples",
            "Samples waiting for an acknowledgement.",
            self.buffered.clone(),
        );
        registry.register(
            "pas_agent_pods",
            "Workload pods sampled in the last interval.",
            self.pods.clone(),
        );
    }
}

/// A configured node agent.
pub struct Agent {
    config: Config,
    node: String,
    prefix: Prefix,
    metrics: Metrics,
    registry: Registry,
    health: Arc<Health>,
    pod_map: Option<PodMap>,
}

impl Agent {
    /// Checks the configuration and registers the metrics.
    pub fn new(config: Config) -> Result<Self, Error> {
        if config.interval < sysinfo::MINIMUM_CPU_UPDATE_INTERVAL {
            return Err(Error::Config(format!(
                "interval {:?} is shorter than the {:?} the CPU counters need",
                config.interval,
                sysinfo::MINIMUM_CPU_UPDATE_INTERVAL
            )));
        }
        if config.buffer_capacity == 0 {
            return Err(Error::Config("buffer_capacity must be at least 1".into()));
        }
        let node = config.resolved_node_name();
        let prefix = Prefix::for_run(config.run.as_deref()).map_err(Error::Config)?;
        prefix
            .node_cpu(&node)
            .map_err(|e| Error::Config(format!("node name {node:?}: {e}")))?;
        let metrics = Metrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        Ok(Agent {
            config,
            node,
            prefix,
            metrics,
            registry,
            health: Arc::new(Health::default()),
            pod_map: None,
        })
    }

    /// The agent's counters (shared with the running agent).
    pub fn metrics(&self) -> Metrics {
        self.metrics.clone()
    }

    /// Names pod cgroups from `map` instead of watching Kubernetes (for
    /// tests, and for callers that know the pods another way).
    pub fn with_pod_map(mut self, map: PodMap) -> Self {
        self.pod_map = Some(map);
        self
    }

    /// The node name it reports.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Runs until `shutdown`, then drains the outbox (for at most five
    /// seconds) and the NATS connection.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), Error> {
        let Agent {
            config,
            node,
            prefix,
            metrics,
            registry,
            health,
            pod_map,
        } = self;
        let addr = health::serve(
            config.listen,
            health.clone(),
            Arc::new(registry),
            shutdown.clone(),
        )
        .await?;
        tracing::info!(%addr, node, "Serving /healthz, /readyz and /metrics.");

        let pods = match pod_map {
            Some(map) => Some(map),
            None => start_pod_watch(&config, &node, shutdown.clone()).await?,
        };
        let conn = pas_nats::connect(&config.nats, &format!("pas-agent-{node}"), true).await?;
        let mut node_sampler = node::NodeSampler::new()?;
        let mut pod_reader = cgroup::PodCpuReader::new(&config.cgroup_root);
        pod_reader.sample(Instant::now());

        let outbox = Arc::new(Mutex::new(Outbox::new(config.buffer_capacity)));
        let wake = Arc::new(Notify::new());
        let stop_publishing = CancellationToken::new();
        let publisher = tokio::spawn(publish_loop(
            conn.clone(),
            outbox.clone(),
            wake.clone(),
            metrics.clone(),
            stop_publishing.clone(),
        ));
        health.set_ready(true);

        let mut ticks = tokio::time::interval(config.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await; // the first tick is immediate: let the counters advance first
        let mut warned_unmapped = false;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = ticks.tick() => {}
            }
            let now = Utc::now();
            let mut batch = Vec::new();
            let (used, capacity) = node_sampler.sample();
            batch.push(CpuSample {
                schema_version: SCHEMA_VERSION,
                timestamp: now,
                node: node.clone(),
                namespace: None,
                workload: None,
                pod: None,
                cpu_used_millicores: used,
                cpu_requested_millicores: None,
                cpu_capacity_millicores: Some(capacity),
                cpu_throttled_ratio: None,
            });
            let pod_usage = pod_reader.sample(Instant::now());
            match &pods {
                Some(map) => batch.extend(pod_samples(map, &pod_usage, &node, now)),
                None if !pod_usage.is_empty() && !warned_unmapped => {
                    tracing::info!(
                        pods = pod_usage.len(),
                        "Pod cgroups found but Kubernetes is off: publishing node samples only."
                    );
                    warned_unmapped = true;
                }
                None => {}
            }
            metrics.pods.set(batch.len() as i64 - 1);
            enqueue(&outbox, &prefix, &metrics, &batch);
            wake.notify_one();
        }

        health.set_ready(false);
        let drained = drain_outbox(&outbox, &wake).await;
        stop_publishing.cancel();
        let _ = publisher.await;
        if !drained {
            let left = outbox.lock().unwrap_or_else(|p| p.into_inner()).len();
            tracing::warn!(left, "Stopped with samples not yet acknowledged.");
        }
        if let Err(error) = conn.client.drain().await {
            tracing::debug!(%error, "NATS drain at shutdown failed.");
        }
        Ok(())
    }
}

/// Publishes what is buffered, for at most [`DRAIN_TIMEOUT`]; whether the
/// outbox emptied.
async fn drain_outbox(outbox: &Mutex<Outbox>, wake: &Notify) -> bool {
    tracing::info!("Draining: publishing what is buffered.");
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        loop {
            if outbox.lock().unwrap_or_else(|p| p.into_inner()).is_empty() {
                break;
            }
            wake.notify_one();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    drained.is_ok()
}

/// The samples of the pods of workloads among `usage`.
fn pod_samples(
    map: &PodMap,
    usage: &[cgroup::PodCpu],
    node: &str,
    now: chrono::DateTime<Utc>,
) -> Vec<CpuSample> {
    let map = map.read().unwrap_or_else(|p| p.into_inner());
    usage
        .iter()
        .filter_map(|cpu| {
            let info = map.get(&cpu.uid)?;
            let workload = info.workload.as_ref()?;
            Some(CpuSample {
                schema_version: SCHEMA_VERSION,
                timestamp: now,
                node: node.to_owned(),
                namespace: Some(info.namespace.clone()),
                workload: Some(workload.clone()),
                pod: Some(info.name.clone()),
                cpu_used_millicores: cpu.millicores,
                cpu_requested_millicores: info.cpu_request_millicores,
                cpu_capacity_millicores: None,
                cpu_throttled_ratio: cpu.throttled,
            })
        })
        .collect()
}

/// Puts a tick's samples in the outbox (dropping the oldest when full).
fn enqueue(outbox: &Mutex<Outbox>, prefix: &Prefix, metrics: &Metrics, batch: &[CpuSample]) {
    let mut ob = outbox.lock().unwrap_or_else(|p| p.into_inner());
    for sample in batch {
        let outgoing = prefix
            .sample(sample)
            .map_err(pas_nats::Error::Subject)
            .and_then(|s| Outgoing::new(s, sample));
        match outgoing {
            Ok(out) => {
                metrics.samples.inc();
                metrics.dropped.inc_by(ob.push(out));
            }
            Err(error) => {
                tracing::warn!(%error, pod = ?sample.pod, "Sample skipped: it cannot be published.")
            }
        }
    }
    metrics.buffered.set(ob.len() as i64);
}

/// Starts the pod watch unless Kubernetes is off; `None` means node-only.
async fn start_pod_watch(
    config: &Config,
    node: &str,
    shutdown: CancellationToken,
) -> Result<Option<PodMap>, Error> {
    if config.kubernetes == KubeMode::Off {
        return Ok(None);
    }
    let client = match kube::Client::try_default().await {
        Ok(client) => client,
        Err(error) if config.kubernetes == KubeMode::Auto => {
            tracing::info!(%error, "No Kubernetes API: running node-only.");
            return Ok(None);
        }
        Err(error) => return Err(Error::Kube(Box::new(error))),
    };
    let map = PodMap::default();
    tokio::spawn(pods::watch_pods(
        client,
        node.to_owned(),
        config.workload_kinds.clone(),
        map.clone(),
        shutdown,
    ));
    Ok(Some(map))
}

/// Publishes the outbox in order whenever woken; on failure backs off
/// (exponential with jitter, 200 ms to 30 s, reset on success) and waits for
/// the connection to come back.
async fn publish_loop(
    conn: Connection,
    outbox: Arc<Mutex<Outbox>>,
    wake: Arc<Notify>,
    metrics: Metrics,
    stop: CancellationToken,
) {
    let new_backoff = || {
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(30))
            .with_jitter()
            .without_max_times()
            .build()
    };
    let mut backoff = new_backoff();
    let mut connected = conn.connected.clone();
    loop {
        if !*connected.borrow() {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = connected.changed() => continue,
            }
        }
        let batch = outbox.lock().unwrap_or_else(|p| p.into_inner()).peek(BATCH);
        if batch.is_empty() {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = wake.notified() => continue,
            }
        }
        match publish_batch(&conn, &batch).await {
            (Some(last), None) => {
                ack(&outbox, &metrics, last, &batch);
                backoff = new_backoff();
            }
            (acked, Some(error)) => {
                if let Some(last) = acked {
                    ack(&outbox, &metrics, last, &batch);
                }
                metrics.publish_errors.inc();
                let delay = backoff.next().unwrap_or(Duration::from_secs(30));
                tracing::warn!(%error, retry_in = ?delay, buffered = outbox.lock().unwrap_or_else(|p| p.into_inner()).len(), "Publishing samples failed; retrying.");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                    _ = wait_reconnect(&mut connected) => {}
                }
            }
            (None, None) => {}
        }
    }
}

/// Resolves when the connection goes from down to up.
async fn wait_reconnect(connected: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = connected.wait_for(|up| !*up).await;
    let _ = connected.wait_for(|up| *up).await;
}

fn ack(outbox: &Mutex<Outbox>, metrics: &Metrics, last: u64, batch: &[(u64, Outgoing)]) {
    let n = batch.iter().take_while(|(s, _)| *s <= last).count();
    metrics.published.inc_by(n as u64);
    let mut ob = outbox.lock().unwrap_or_else(|p| p.into_inner());
    ob.ack_through(last);
    metrics.buffered.set(ob.len() as i64);
}

/// Publishes a batch and awaits the acks in order. Returns the position of
/// the last message of the unbroken acknowledged run, and the first error.
async fn publish_batch(
    conn: &Connection,
    batch: &[(u64, Outgoing)],
) -> (Option<u64>, Option<pas_nats::Error>) {
    let mut pending = Vec::with_capacity(batch.len());
    let mut error = None;
    for (seq, msg) in batch {
        match pas_nats::publish(&conn.jetstream, msg).await {
            Ok(ack) => pending.push((*seq, ack)),
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    // Everything in `pending` was sent before any publish failed, so its
    // acknowledged prefix counts even when a later publish failed.
    let mut last = None;
    let mut broken = false;
    for (seq, ack) in pending {
        match ack.await {
            Ok(_) if !broken => last = Some(seq),
            Ok(_) => {}
            Err(e) => {
                broken = true;
                error.get_or_insert_with(|| pas_nats::Error::JetStream {
                    action: "acknowledge a sample".into(),
                    source: Box::new(e),
                });
            }
        }
    }
    (last, error)
}
