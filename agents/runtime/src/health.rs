//! `/healthz`, `/readyz` and `/metrics` for every long-running stage.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::Error;

/// Liveness and readiness flags a stage sets as it runs, and the loops it
/// watches: `/readyz` fails while a watched loop has not advanced for its
/// stall limit or has reported a failure, so an orchestrator sees a stage
/// that is stuck, not only one that is down.
#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
    loops: Mutex<Vec<Loop>>,
}

#[derive(Debug)]
struct Loop {
    name: &'static str,
    stall_after: Duration,
    last: Instant,
    failure: Option<String>,
}

/// A watched loop's handle: [`Heartbeat::beat`] each time it advances.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    health: Arc<Health>,
    index: usize,
}

impl Heartbeat {
    /// The loop advanced; clears a reported failure.
    pub fn beat(&self) {
        self.health.update(self.index, |l| {
            l.last = Instant::now();
            l.failure = None;
        });
    }

    /// The loop failed; `/readyz` says why until the next beat.
    pub fn fail(&self, reason: impl Into<String>) {
        let reason = reason.into();
        self.health.update(self.index, |l| l.failure = Some(reason));
    }
}

impl Health {
    /// Marks the stage ready (or not) to do its work; `/readyz` answers 503
    /// until it is.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Whether the stage said it is ready.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Watches a loop called `name` that must beat at least every
    /// `stall_after`; it counts as having beaten now.
    pub fn heartbeat(self: &Arc<Self>, name: &'static str, stall_after: Duration) -> Heartbeat {
        let mut loops = self.loops.lock().unwrap_or_else(|p| p.into_inner());
        loops.push(Loop {
            name,
            stall_after,
            last: Instant::now(),
            failure: None,
        });
        Heartbeat {
            health: self.clone(),
            index: loops.len() - 1,
        }
    }

    /// What keeps the stage from being ready: stalled or failed loops.
    pub fn problems(&self) -> Vec<String> {
        let loops = self.loops.lock().unwrap_or_else(|p| p.into_inner());
        loops
            .iter()
            .filter_map(|l| {
                if let Some(failure) = &l.failure {
                    return Some(format!("{} failed: {failure}", l.name));
                }
                let idle = l.last.elapsed();
                (idle > l.stall_after)
                    .then(|| format!("{} has not advanced for {} s", l.name, idle.as_secs()))
            })
            .collect()
    }

    fn update(&self, index: usize, f: impl FnOnce(&mut Loop)) {
        let mut loops = self.loops.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = loops.get_mut(index) {
            f(l);
        }
    }
}

#[derive(Clone)]
struct Shared {
    health: Arc<Health>,
    registry: Arc<Registry>,
}

/// Listens on `addr` (port 0 picks a free one) and serves until `shutdown`.
/// Returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    health: Arc<Health>,
    registry: Arc<Registry>,
    shutdown: CancellationToken,
) -> Result<SocketAddr, Error> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Listen { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| Error::Listen { addr, source })?;
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(Shared { health, registry });
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "Health and metrics server failed.");
        }
    });
    Ok(bound)
}

async fn readyz(State(s): State<Shared>) -> impl IntoResponse {
    if !s.health.is_ready() {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready\n".to_owned());
    }
    let problems = s.health.problems();
    if problems.is_empty() {
        (StatusCode::OK, "ready\n".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", problems.join("; ")),
        )
    }
}

async fn metrics(State(s): State<Shared>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &s.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        ),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            "cannot encode metrics\n".to_owned(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::counter::Counter;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_health_readiness_and_metrics() {
        let mut registry = Registry::default();
        let counter = Counter::<u64>::default();
        registry.register("pas_test_things", "Things seen.", counter.clone());
        counter.inc_by(3);
        let health = Arc::new(Health::default());
        let stop = CancellationToken::new();
        let addr = serve(
            "127.0.0.1:0".parse().unwrap(),
            health.clone(),
            Arc::new(registry),
            stop.clone(),
        )
        .await
        .unwrap();

        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 503"));
        health.set_ready(true);
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));
        let m = get(addr, "/metrics").await;
        assert!(m.contains("pas_test_things_total 3"), "{m}");

        // A loop that stops advancing, or reports a failure, fails readiness.
        let tick = health.heartbeat("tick", Duration::from_millis(200));
        let loader = health.heartbeat("model loader", Duration::from_secs(600));
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));
        loader.fail("the bucket is gone");
        let r = get(addr, "/readyz").await;
        assert!(
            r.starts_with("HTTP/1.1 503") && r.contains("model loader failed: the bucket is gone"),
            "{r}"
        );
        loader.beat();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let r = get(addr, "/readyz").await;
        assert!(
            r.starts_with("HTTP/1.1 503") && r.contains("tick has not advanced"),
            "{r}"
        );
        tick.beat();
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));
        stop.cancel();
    }
}
