//! How forecaster replicas share the workloads: partition leases in the
//! key-value bucket `pas-forecaster`.
//!
//! A workload belongs to partition `fnv1a(namespace/workload) mod P`
//! ([`partition`]); `P` ([`crate::Config::partitions`], 32 by default) is the
//! same on every replica. Each partition is leased to at most one replica:
//! the key `<scope>.partition.<p>` holds the owner and an expiry time, and
//! every change is a compare-and-set on the key's revision, so two replicas
//! can never both hold it. A replica forecasts only the workloads of the
//! partitions whose lease it holds and whose expiry is still ahead.
//!
//! Replicas announce themselves under `<scope>.member.<replica>` with an
//! expiry, renewed every tick. From the live members each computes its fair
//! share, `ceil(P / members)`, and:
//! - right after forecasting, releases the partitions it holds beyond its
//!   share (writes them expired) — [`Shard::release_extras`];
//! - half a tick later renews its leases and claims free or expired
//!   partitions up to its share — [`Shard::coordinate`].
//!
//! A partition released after one replica's tick is claimed half a tick
//! later and forecast by its new owner at the next tick. A replica that is
//! shut down forecasts one more tick and then releases everything
//! ([`Shard::leave`]). So rebalancing when a replica joins or leaves misses
//! no tick and doubles none.
//! A replica that crashes keeps its partitions until their leases expire
//! ([`crate::Config::lease`], three ticks by default); those are the only
//! ticks that go unforecast. Forecasts carry `Nats-Msg-Id`, so even a
//! duplicate after a long pause would be dropped by the stream.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::kv::{Operation, Store};
use bytes::Bytes;
use chrono::Utc;
use futures::TryStreamExt;
use pas_schemas::subjects::Keys;
use serde::{Deserialize, Serialize};

use crate::Error;

/// Partition of a workload: FNV-1a (64 bit) of `namespace/workload`, modulo
/// `partitions`. Stable across processes, versions and platforms.
pub fn partition(namespace: &str, workload: &str, partitions: u32) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in namespace
        .bytes()
        .chain(std::iter::once(b'/'))
        .chain(workload.bytes())
    {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % u64::from(partitions.max(1))) as u32
}

/// A lease or membership record.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Lease {
    owner: String,
    /// Unix milliseconds; 0 for a released partition.
    expires_ms: i64,
}

/// Leases are judged expired this long after their time, for clock skew
/// between replicas.
const SKEW: i64 = 1000;

/// This replica's view of the partition leases.
pub struct Shard {
    kv: Store,
    keys: Keys,
    replica: String,
    partitions: u32,
    lease: Duration,
    /// Held partitions: revision of our lease and its expiry (Unix ms).
    held: BTreeMap<u32, (u64, i64)>,
    members: usize,
}

impl Shard {
    /// `keys` ([`Prefix::keys`](pas_schemas::subjects::Prefix::keys)) keep
    /// live and replay runs apart.
    pub fn new(kv: Store, keys: Keys, replica: String, partitions: u32, lease: Duration) -> Shard {
        Shard {
            kv,
            keys,
            replica,
            partitions,
            lease,
            held: BTreeMap::new(),
            members: 1,
        }
    }

    fn partition_key(&self, p: u32) -> String {
        self.keys.partition(p)
    }

    fn record(&self, expires_ms: i64) -> Bytes {
        let lease = Lease {
            owner: self.replica.clone(),
            expires_ms,
        };
        serde_json::to_vec(&lease).unwrap_or_default().into()
    }

    fn expiry(&self) -> i64 {
        Utc::now().timestamp_millis() + self.lease.as_millis() as i64
    }

    /// Partitions whose lease this replica holds and which have not expired.
    pub fn owned(&self) -> Vec<u32> {
        let now = Utc::now().timestamp_millis();
        self.held
            .iter()
            .filter(|(_, (_, expires))| *expires > now)
            .map(|(p, _)| *p)
            .collect()
    }

    /// Live replicas at the last [`Shard::coordinate`], this one included.
    pub fn members(&self) -> usize {
        self.members
    }

    fn share(&self) -> usize {
        (self.partitions as usize).div_ceil(self.members.max(1))
    }

    /// Announces this replica, renews its leases, and claims free partitions
    /// up to its fair share.
    pub async fn coordinate(&mut self) -> Result<(), Error> {
        let member_key = self.keys.member(&self.replica);
        self.kv
            .put(&member_key, self.record(self.expiry()))
            .await
            .map_err(|e| Error::js("announce the replica", e))?;
        self.members = self.count_members().await?.max(1);
        // Renew: a failed compare-and-set means the lease was lost.
        let held: Vec<(u32, u64)> = self.held.iter().map(|(p, (rev, _))| (*p, *rev)).collect();
        for (p, revision) in held {
            let expires = self.expiry();
            match self
                .kv
                .update(self.partition_key(p), self.record(expires), revision)
                .await
            {
                Ok(rev) => {
                    self.held.insert(p, (rev, expires));
                }
                Err(error) => {
                    tracing::warn!(partition = p, %error, "Lost a partition lease.");
                    self.held.remove(&p);
                }
            }
        }
        let share = self.share();
        if self.held.len() >= share {
            return Ok(());
        }
        // Claim, starting at a place that depends on the replica, so replicas
        // starting together do not all race for partition 0.
        let start = partition(self.keys.scope(), &self.replica, self.partitions);
        let now = Utc::now().timestamp_millis();
        let mut newly = Vec::new();
        for k in 0..self.partitions {
            if self.held.len() >= share {
                break;
            }
            let p = (start + k) % self.partitions;
            if self.held.contains_key(&p) {
                continue;
            }
            let key = self.partition_key(p);
            let entry = self
                .kv
                .entry(key.clone())
                .await
                .map_err(|e| Error::js("read a partition lease", e))?;
            let expires = self.expiry();
            let claimed = match entry {
                None => self.kv.create(&key, self.record(expires)).await.ok(),
                Some(e) => {
                    let free = e.operation != Operation::Put
                        || serde_json::from_slice::<Lease>(&e.value)
                            .map_or(true, |l| l.expires_ms + SKEW < now);
                    if free {
                        self.kv.update(&key, self.record(expires), e.revision).await.ok()
                    } else {
                        None
                    }
                }
            };
            if let Some(rev) = claimed {
                self.held.insert(p, (rev, expires));
                newly.push(p);
            }
        }
        if !newly.is_empty() {
            tracing::info!(partitions = ?newly, held = self.held.len(), members = self.members, "Claimed partitions.");
        }
        Ok(())
    }

    async fn count_members(&self) -> Result<usize, Error> {
        let prefix = self.keys.members();
        let keys: Vec<String> = self
            .kv
            .keys()
            .await
            .map_err(|e| Error::js("list replicas", e))?
            .try_filter(|k| futures::future::ready(k.starts_with(&prefix)))
            .try_collect()
            .await
            .map_err(|e| Error::js("list replicas", e))?;
        let now = Utc::now().timestamp_millis();
        let mut live = 0;
        for key in keys {
            if let Ok(Some(e)) = self.kv.entry(key).await
                && e.operation == Operation::Put
                && serde_json::from_slice::<Lease>(&e.value).is_ok_and(|l| l.expires_ms + SKEW >= now)
            {
                live += 1;
            }
        }
        Ok(live)
    }

    /// Releases the partitions held beyond the fair share (the highest
    /// numbered), for the replicas that have too few.
    pub async fn release_extras(&mut self) {
        let extra = self.held.len().saturating_sub(self.share());
        let doomed: Vec<(u32, u64)> = self
            .held
            .iter()
            .rev()
            .take(extra)
            .map(|(p, (rev, _))| (*p, *rev))
            .collect();
        self.release(doomed).await;
    }

    /// Releases every partition and withdraws the replica (on shutdown), so
    /// the others take over at once instead of after the lease.
    pub async fn leave(&mut self) {
        let all: Vec<(u32, u64)> = self.held.iter().map(|(p, (rev, _))| (*p, *rev)).collect();
        self.release(all).await;
        let member_key = self.keys.member(&self.replica);
        let _ = self.kv.put(&member_key, self.record(0)).await;
    }

    async fn release(&mut self, partitions: Vec<(u32, u64)>) {
        if partitions.is_empty() {
            return;
        }
        let released: Vec<u32> = partitions.iter().map(|(p, _)| *p).collect();
        // Forget them first: a failed write leaves a lease that expires.
        for (p, _) in &partitions {
            self.held.remove(p);
        }
        // All at once: with NATS down each write waits for its timeout, and
        // one after another 32 of them held a shutdown for minutes.
        let kv = &self.kv;
        let writes: Vec<_> = partitions
            .iter()
            .map(|&(p, revision)| {
                let (key, record) = (self.partition_key(p), self.record(0));
                async move { (p, kv.update(key, record, revision).await) }
            })
            .collect();
        for (p, result) in futures::future::join_all(writes).await {
            if let Err(error) = result {
                tracing::warn!(partition = p, %error, "Releasing a partition failed; its lease will expire.");
            }
        }
        tracing::info!(partitions = ?released, held = self.held.len(), "Released partitions.");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_stable_and_spread() {
        // Fixed values: a change of hash would move every workload at upgrade.
        assert_eq!(partition("shop", "web", 32), 4);
        assert_eq!(partition("shop", "web", 1000), 708);
        assert_ne!(
            partition("shop", "web", 1 << 30),
            partition("web", "shop", 1 << 30)
        );
        assert_eq!(partition("a", "b", 1), 0);
        let mut counts = [0usize; 8];
        for i in 0..8000 {
            counts[partition("ns", &format!("wl-{i}"), 8) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| (800..1200).contains(&c)), "{counts:?}");
    }
}
