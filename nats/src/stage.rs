use std::net::SocketAddr;
use std::sync::Arc;

use pas_runtime::health::{self, Health};
use pas_schemas::subjects::{Prefix, Stage};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::{Connection, DeadLetters, Error, NatsConfig};

/// What every stage starts with: its NATS connection, its dead letters, and
/// its health, served with its metrics.
#[derive(Debug)]
pub struct StageBus {
    /// The connection.
    pub conn: Connection,
    /// `pas.dlq.<stage>` under the stage's prefix.
    pub dead_letters: DeadLetters,
    /// Readiness, set by the stage.
    pub health: Arc<Health>,
}

/// Connects as `client` (waiting for the server), registers the stage's
/// metrics with `register` and the dead-letter counter, and serves
/// `/healthz`, `/readyz` and `/metrics` on `listen` until `shutdown`.
pub async fn start_stage(
    nats: &NatsConfig,
    client: &str,
    stage: Stage,
    prefix: &Prefix,
    listen: SocketAddr,
    register: impl FnOnce(&mut Registry),
    shutdown: &CancellationToken,
) -> Result<StageBus, Error> {
    let conn = crate::connect(nats, client, true).await?;
    let mut registry = Registry::default();
    register(&mut registry);
    let dead_letters = DeadLetters::new(conn.jetstream.clone(), stage, prefix, &mut registry);
    let health = Arc::new(Health::default());
    let addr = health::serve(listen, health.clone(), Arc::new(registry), shutdown.clone()).await?;
    tracing::info!(%addr, client, "Serving /healthz, /readyz and /metrics.");
    Ok(StageBus {
        conn,
        dead_letters,
        health,
    })
}

/// Runs one step of a stage's way out for at most `limit`: with NATS down a
/// release, an ack or a drain would each wait for its own timeout, one
/// after another, and SIGTERM must end the stage within 10 s. `None`, and a
/// warning naming `step`, when it did not finish in time.
pub async fn within<T>(
    limit: std::time::Duration,
    step: &'static str,
    work: impl std::future::Future<Output = T>,
) -> Option<T> {
    match tokio::time::timeout(limit, work).await {
        Ok(done) => Some(done),
        Err(_) => {
            tracing::warn!(step, "Shutdown step did not finish in time; going on.");
            None
        }
    }
}
