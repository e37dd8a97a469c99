//! Key-value writes made beside a stage's loop rather than in it: one slow
//! or failing put (NATS slow, a bucket unavailable) never holds up the
//! loop. The scaler writes its per-workload state (`pas-scaler`) through
//! it, the forecaster the workloads' coarse history (`pas-history`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::kv::Store;
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Longest wait for one key-value write.
pub const NATS_CALL: Duration = Duration::from_secs(2);
/// Puts in flight at once.
const CONCURRENCY: usize = 16;

/// Queues writes and makes them on its own task: the newest value of a key
/// replaces one still queued, and a key is written again only after its
/// previous write ended, so the bucket ends with the latest.
#[derive(Debug)]
pub struct KvWriter {
    pending: Arc<Mutex<HashMap<String, Bytes>>>,
    wake: Arc<Notify>,
    task: JoinHandle<()>,
    stop: CancellationToken,
    what: &'static str,
}

impl KvWriter {
    /// Starts writing to `kv`, `what` naming the values in logs. A write is
    /// made only while `gate()` holds (a scaler writes only while it leads:
    /// a former leader's queued writes must not overwrite the new leader's);
    /// `done` hears whether each write made it.
    pub fn start(
        kv: Store,
        what: &'static str,
        gate: impl Fn() -> bool + Send + Sync + 'static,
        done: impl Fn(bool) + Send + Sync + 'static,
    ) -> Self {
        let (gate, done) = (Arc::new(gate), Arc::new(done));
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
                            let (kv, open, done) = (kv.clone(), gate(), done.clone());
                            async move {
                                if !open {
                                    tracing::debug!(key, what, "Dropped a queued write: the gate is shut.");
                                    return;
                                }
                                let ok = match tokio::time::timeout(NATS_CALL, kv.put(&key, value)).await {
                                    Ok(Ok(_)) => true,
                                    Ok(Err(error)) => {
                                        tracing::warn!(key, what, %error, "A key-value write failed.");
                                        false
                                    }
                                    Err(_) => {
                                        tracing::warn!(key, what, "A key-value write timed out.");
                                        false
                                    }
                                };
                                done(ok);
                            }
                        })
                        .await;
                }
            }
        });
        KvWriter {
            pending,
            wake,
            task,
            stop,
            what,
        }
    }

    /// Queues `value` under `key`.
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
            tracing::warn!(
                what = self.what,
                "Key-value writes did not finish in time; going on."
            );
        }
    }
}
