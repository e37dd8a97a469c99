//! The scaler's per-workload state in KV `pas-scaler`, written beside the
//! decision loop rather than in it: one slow or failing put (NATS slow, a
//! bucket unavailable) never holds up the other workloads' decisions.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::kv::Store;
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Longest wait for one NATS call of the decision loop (a key-value read
/// or write, sending a decision).
pub const NATS_CALL: Duration = Duration::from_secs(2);
/// Puts in flight at once.
const CONCURRENCY: usize = 16;

/// Queues state writes and writes them on its own task: the newest value
/// of a key replaces one still queued, and a key is written again only
/// after its previous write ended, so the bucket ends with the latest.
#[derive(Debug)]
pub struct StateWriter {
    pending: Arc<Mutex<HashMap<String, Bytes>>>,
    wake: Arc<Notify>,
    task: JoinHandle<()>,
    stop: CancellationToken,
}

impl StateWriter {
    /// Starts writing to `kv` while this scaler holds the lease (`until`,
    /// unix ms): a former leader's queued writes must not overwrite what the
    /// new leader wrote.
    pub fn start(kv: Store, until: Arc<AtomicI64>) -> Self {
        let pending: Arc<Mutex<HashMap<String, Bytes>>> = Arc::default();
        let wake = Arc::new(Notify::new());
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let (pending, wake, stop) = (pending.clone(), wake.clone(), stop.clone());
            async move {
                loop {
                    let batch: Vec<(String, Bytes)> =
                        std::mem::take(&mut *pending.lock().unwrap_or_else(|p| p.into_inner()))
                            .into_iter()
                            .collect();
                    if batch.is_empty() {
                        tokio::select! {
                            _ = wake.notified() => continue,
                            _ = stop.cancelled() => break,
                        }
                    }
                    futures::stream::iter(batch)
                        .for_each_concurrent(CONCURRENCY, |(key, value)| {
                            let kv = kv.clone();
                            let leading =
                                chrono::Utc::now().timestamp_millis() < until.load(Ordering::Relaxed);
                            async move {
                                if !leading {
                                    tracing::debug!(key, "Not leading: dropped a queued state write.");
                                    return;
                                }
                                match tokio::time::timeout(NATS_CALL, kv.put(&key, value)).await {
                                    Ok(Ok(_)) => {}
                                    Ok(Err(error)) => {
                                        tracing::warn!(key, %error, "Saving the scaler state failed.")
                                    }
                                    Err(_) => tracing::warn!(key, "Saving the scaler state timed out."),
                                }
                            }
                        })
                        .await;
                }
            }
        });
        StateWriter {
            pending,
            wake,
            task,
            stop,
        }
    }

    /// Queues `value` as the state under `key`.
    pub fn put(&self, key: String, value: Bytes) {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, value);
        self.wake.notify_one();
    }

    /// How many writes wait.
    pub fn queued(&self) -> usize {
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Writes what is queued, for at most `limit`, and stops.
    pub async fn close(self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while self.queued() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.stop.cancel();
        self.wake.notify_one();
        if tokio::time::timeout_at(deadline, self.task).await.is_err() {
            tracing::warn!("Scaler state writes did not finish in time; going on.");
        }
    }
}
