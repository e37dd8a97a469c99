//! One active scaler: a lease in the key-value bucket `pas-scaler`.
//!
//! The key `<scope>.leader` holds the holder's name and an expiry. Every
//! change is a compare-and-set on the key's revision, so two scalers can
//! never both hold it. The holder renews it every third of the lease; a
//! standby takes it when it is free, released, or expired (plus a second for
//! clock skew). A scaler acts only while its own lease is ahead by that
//! margin, so an old leader stops before a new one can start. A scaler that
//! restarts under the same name takes its lease back at once.

use std::time::Duration;

use async_nats::jetstream::kv::{Operation, Store};
use bytes::Bytes;
use chrono::Utc;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    holder: String,
    /// Unix milliseconds; 0 when released.
    expires_ms: i64,
}

/// Clock skew allowed between scalers.
const SKEW_MS: i64 = 1000;

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
