//! The scaler's NATS side of a decision: the workload's history read from
//! and written to KV `pas-scaler` (the writes beside the decision loop,
//! [`KvWriter`]), the decision published to
//! `pas.scale.<namespace>.<workload>`. Every call is bounded by
//! [`NATS_CALL`], so a slow NATS holds up no other workload.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_nats::jetstream::kv::Store;
use pas_nats::Outgoing;
use pas_nats::kv_writer::{KvWriter, NATS_CALL};
use pas_schemas::subjects::{Keys, Prefix};
use pas_schemas::{Outcome, ScaleDecision};

use crate::Metrics;
use crate::engine::Evaluation;
use crate::policy::{History, Rule};
use crate::samples::Key;

/// Where decisions and histories go.
pub(crate) struct Outputs {
    js: async_nats::jetstream::Context,
    kv: Store,
    /// State writes, beside the decision loop.
    pub(crate) state: KvWriter,
    /// State writes that failed so far.
    failed: Arc<AtomicU64>,
    /// Per workload, how many writes had failed when its state was last
    /// queued: one queued before a failure is written again.
    written: Mutex<HashMap<Key, u64>>,
    prefix: Prefix,
    keys: Keys,
    metrics: Metrics,
}

impl Outputs {
    /// Writes to `kv` while the lease is held until `until` (unix ms).
    pub(crate) fn new(
        js: async_nats::jetstream::Context,
        kv: Store,
        until: Arc<AtomicI64>,
        prefix: &Prefix,
        metrics: &Metrics,
    ) -> Outputs {
        let failed = Arc::new(AtomicU64::new(0));
        let count = failed.clone();
        Outputs {
            js,
            // A former leader's queued writes must not overwrite the new leader's.
            state: KvWriter::start(
                kv.clone(),
                "scaler state",
                move || chrono::Utc::now().timestamp_millis() < until.load(Ordering::Relaxed),
                move |ok| {
                    if !ok {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                },
            ),
            failed,
            written: Mutex::new(HashMap::new()),
            kv,
            prefix: prefix.clone(),
            keys: prefix.keys(),
            metrics: metrics.clone(),
        }
    }

    /// Queues an evaluation's history for the bucket (written beside the
    /// loop) when it changed, or when a write failed since this workload's
    /// last one (which may have been that write: it is not lost for as long
    /// as the history holds).
    pub(crate) fn keep(&self, evaluation: &Evaluation) {
        let Some((key, history)) = &evaluation.history else {
            return;
        };
        let failed = self.failed.load(Ordering::Relaxed);
        let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        let behind = written.get(key).is_none_or(|at| *at < failed);
        if evaluation.changed || behind {
            written.insert(key.clone(), failed);
            self.save_history(key, history);
        }
    }

    /// The workload's key in pas-scaler ([`Keys::state`]).
    fn state_key(&self, key: &Key) -> String {
        self.keys.state(&key.0, &key.1)
    }

    /// The workload's history as the last leader left it; `None` when the read did not answer within
    /// [`NATS_CALL`] (the workload waits for the next tick, the others
    /// do not wait for it).
    pub(crate) async fn history(&self, key: &Key) -> Option<History> {
        let read = tokio::time::timeout(NATS_CALL, self.kv.get(self.state_key(key))).await;
        Some(match read {
            Ok(Ok(Some(bytes))) => serde_json::from_slice(&bytes).unwrap_or_else(|error| {
                tracing::warn!(namespace = %key.0, workload = %key.1, %error, "Stored scaler state unreadable; starting afresh.");
                History::default()
            }),
            Ok(Ok(None)) => History::default(),
            Ok(Err(error)) => {
                tracing::warn!(namespace = %key.0, workload = %key.1, %error, "Reading the scaler state failed; starting afresh.");
                History::default()
            }
            Err(_) => {
                self.metrics.ignored("state_read_timeout");
                tracing::warn!(namespace = %key.0, workload = %key.1, "Reading the scaler state timed out; trying again next tick.");
                return None;
            }
        })
    }

    /// Queues the workload's history for the bucket; written beside the loop.
    fn save_history(&self, key: &Key, history: &History) {
        let bytes = serde_json::to_vec(history).unwrap_or_default();
        self.state.put(self.state_key(key), bytes.into());
    }

    pub(crate) async fn publish(&self, decision: ScaleDecision, rule: Rule) {
        let outcome = match decision.outcome {
            Outcome::Applied => "applied",
            Outcome::DryRun => "dry_run",
            Outcome::Refused => "refused",
            Outcome::Unchanged => "unchanged",
            Outcome::Shadow => "shadow",
        };
        self.metrics.decision(outcome, rule);
        let subject = match self.prefix.scale(&decision.namespace, &decision.workload) {
            Ok(s) => s,
            Err(error) => {
                tracing::warn!(namespace = %decision.namespace, workload = %decision.workload, error, "No subject for this workload.");
                return;
            }
        };
        // Sent in order from the loop; the acks are awaited beside it, so a
        // slow NATS does not hold up the other workloads' decisions.
        let (namespace, workload) = (decision.namespace.clone(), decision.workload.clone());
        let sent = async {
            let msg = Outgoing::new(subject, &decision).map_err(|e| e.to_string())?;
            match tokio::time::timeout(NATS_CALL, pas_nats::publish(&self.js, &msg)).await {
                Ok(ack) => ack.map_err(|e| e.to_string()),
                Err(_) => Err("the client's send buffer stayed full".to_owned()),
            }
        }
        .await;
        match sent {
            Ok(ack) => {
                tokio::spawn(async move {
                    if let Err(error) = ack.await {
                        tracing::warn!(%namespace, %workload, %error, "Publishing a decision failed.");
                    }
                });
            }
            Err(error) => tracing::warn!(%namespace, %workload, %error, "Publishing a decision failed."),
        }
    }
}
