//! One active scaler: a lease in the key-value bucket `pas-scaler`.
//!
//! The key `<scope>.leader` holds the holder's name and an expiry. Every
//! change is a compare-and-set on the key's revision, so two scalers can
//! never both hold it. The holder renews it every third of the lease; a
//! standby takes it when it is free, released, or expired (plus a second for
//! clock skew). A scaler acts only while its own lease is ahead by that
//! margin, so an old leader stops before a new one can start. A scaler that
//! restarts under the same name takes its lease back at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use async_nats::jetstream::kv::{Operation, Store};
use bytes::Bytes;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    holder: String,
    /// Unix milliseconds; 0 when released.
    expires_ms: i64,
}

/// Clock skew allowed between scalers.
const SKEW_MS: i64 = 1000;

/// The lease, renewed on its own task every third of it, so a long
/// evaluation never delays it.
pub(crate) struct Campaign {
    /// Unix ms until which this scaler holds the lease (0: not held); the
    /// engine acts only while it is ahead.
    pub(crate) until: Arc<AtomicI64>,
    /// Whether the lease is held, as it changes.
    pub(crate) held: watch::Receiver<bool>,
    resign: CancellationToken,
    task: JoinHandle<()>,
}

impl Campaign {
    /// Campaigns for `leader`'s lease until [`Campaign::end`].
    pub(crate) fn start(mut leader: Leader, lease: Duration) -> Campaign {
        let until = Arc::new(AtomicI64::new(0));
        let (held_tx, held) = watch::channel(false);
        let resign = CancellationToken::new();
        let task = tokio::spawn({
            let until = until.clone();
            let resign = resign.clone();
            let mut renew = tokio::time::interval(lease / 3);
            async move {
                loop {
                    tokio::select! {
                        _ = resign.cancelled() => break,
                        _ = renew.tick() => {
                            let won = leader.campaign().await;
                            until.store(leader.valid_until_ms(), Ordering::Relaxed);
                            held_tx.send_if_modified(|l| std::mem::replace(l, won) != won);
                        }
                    }
                }
                until.store(0, Ordering::Relaxed);
                leader.resign().await;
            }
        });
        Campaign {
            until,
            held,
            resign,
            task,
        }
    }

    /// Stops campaigning and releases the lease, waiting at most `bound`
    /// (with NATS down the lease expires on its own).
    pub(crate) async fn end(self, bound: Duration) {
        self.resign.cancel();
        let _ = pas_nats::within(bound, "release the lease", self.task).await;
    }
}

/// This scaler's side of the lease.
pub struct Leader {
    kv: Store,
    key: String,
    me: String,
    lease: Duration,
    /// Revision and expiry of the lease while held.
    held: Option<(u64, i64)>,
}

impl Leader {
    /// `key` is the run's [`pas_schemas::subjects::Keys::leader`], so live
    /// and replay runs never share a lease.
    pub fn new(kv: Store, key: String, me: String, lease: Duration) -> Leader {
        Leader {
            kv,
            key,
            me,
            lease,
            held: None,
        }
    }

    fn record(&self, expires_ms: i64) -> Bytes {
        serde_json::to_vec(&Record {
            holder: self.me.clone(),
            expires_ms,
        })
        .unwrap_or_default()
        .into()
    }

    /// Until when (Unix ms) this scaler may act: its lease's expiry less the
    /// allowed skew; 0 when it holds no lease.
    pub fn valid_until_ms(&self) -> i64 {
        self.held.map_or(0, |(_, expires)| expires - SKEW_MS)
    }

    /// Renews the lease, or takes it if it is free. Returns whether it is held.
    pub async fn campaign(&mut self) -> bool {
        let expires = Utc::now().timestamp_millis() + self.lease.as_millis() as i64;
        if let Some((revision, _)) = self.held {
            match self.kv.update(&self.key, self.record(expires), revision).await {
                Ok(revision) => {
                    self.held = Some((revision, expires));
                    return true;
                }
                Err(error) => {
                    tracing::warn!(%error, "Lost the scaler lease.");
                    self.held = None;
                }
            }
        }
        let taken = match self.kv.entry(&self.key).await {
            Ok(None) => self.kv.create(&self.key, self.record(expires)).await.ok(),
            Ok(Some(entry)) => {
                let now = Utc::now().timestamp_millis();
                let free = entry.operation != Operation::Put
                    || serde_json::from_slice::<Record>(&entry.value)
                        .map_or(true, |r| r.holder == self.me || r.expires_ms + SKEW_MS < now);
                if free {
                    self.kv
                        .update(&self.key, self.record(expires), entry.revision)
                        .await
                        .ok()
                } else {
                    None
                }
            }
            Err(error) => {
                tracing::warn!(%error, "Reading the scaler lease failed.");
                None
            }
        };
        self.held = taken.map(|revision| (revision, expires));
        self.held.is_some()
    }

    /// Gives the lease up, so a standby takes over without waiting for it
    /// to expire.
    pub async fn resign(&mut self) {
        if let Some((revision, _)) = self.held.take()
            && let Err(error) = self.kv.update(&self.key, self.record(0), revision).await
        {
            tracing::warn!(%error, "Releasing the scaler lease failed; it expires by itself.");
        }
    }
}
