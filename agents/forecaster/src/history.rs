//! Each owned workload's long, coarse demand history
//! ([`pas_workloads::history`]), kept durable in the key-value bucket
//! `pas-history` so that it survives restarts of the forecaster and does
//! not depend on how long PAS_SAMPLES keeps samples.
//!
//! Every tick the forecaster records each owned workload's newly closed
//! steps ([`Histories::record`]). A workload seen for the first time (after
//! a start, or when its partition moves here) first reads its stored
//! blocks ([`load`]); until they are merged, nothing of it is written, so a
//! replica that has not read the store never overwrites it. Once loaded, a
//! block changed by a closed slot is written after the tick through a
//! [`KvWriter`] (the newest value of a key wins; one write per workload per
//! coarse step: about 600 bytes every 5 minutes). A workload whose
//! partition moves away is dropped here and read again if it comes back.

use std::collections::HashMap;

use async_nats::jetstream::kv::Store;
use chrono::{DateTime, TimeDelta, Utc};
use futures::StreamExt;
use pas_nats::kv_writer::KvWriter;
use pas_schemas::subjects::Keys;
use pas_workloads::history::{Block, History};
use pas_workloads::{Steps, WorkloadKey};

use crate::Metrics;

/// Workloads whose stored history is read at once.
const LOAD_CONCURRENCY: usize = 32;

/// Whether a workload's stored history has been read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Load {
    /// Not yet asked for.
    Due,
    /// Being read.
    Reading,
    /// Merged: its changes may be written.
    Done,
}

#[derive(Debug)]
struct Entry {
    history: History,
    load: Load,
}

/// The coarse histories of the workloads this replica forecasts.
#[derive(Debug)]
pub(crate) struct Histories {
    step_seconds: u32,
    keep_seconds: u64,
    map: HashMap<WorkloadKey, Entry>,
}

impl Histories {
    /// Histories of `step_seconds` slots reaching `keep_seconds` back.
    pub(crate) fn new(step_seconds: u32, keep_seconds: u64) -> Histories {
        Histories {
            step_seconds,
            keep_seconds,
            map: HashMap::new(),
        }
    }

    /// Records `key`'s steps after the newest recorded one, up to and
    /// including `closed` (missing steps stay missing).
    pub(crate) fn record(&mut self, key: &WorkloadKey, steps: &Steps, closed: DateTime<Utc>) {
        let (step_seconds, keep_seconds) = (self.step_seconds, self.keep_seconds);
        let entry = self.map.entry(key.clone()).or_insert_with(|| Entry {
            history: History::new(step_seconds, keep_seconds),
            load: Load::Due,
        });
        let seconds = i64::from(steps.step_seconds.max(1));
        // From the step after the newest recorded one.
        let first = entry.history.recorded().map_or(0, |r| {
            usize::try_from((r - steps.start).num_seconds().div_euclid(seconds) + 1).unwrap_or(0)
        });
        let step = TimeDelta::seconds(seconds);
        for (i, value) in steps.values.iter().enumerate().skip(first) {
            let at = steps.start + step * i as i32;
            if at > closed {
                break;
            }
            entry.history.record(at, *value);
        }
    }

    /// `key`'s history, once its stored blocks are merged (before that, a
    /// forecast would see a season's gap that is not there).
    pub(crate) fn get(&self, key: &WorkloadKey) -> Option<&History> {
        self.map
            .get(key)
            .filter(|e| e.load == Load::Done)
            .map(|e| &e.history)
    }

    /// Keeps only the workloads `keep` says (the owned ones): another
    /// replica writes the rest.
    pub(crate) fn retain(&mut self, keep: impl Fn(&WorkloadKey) -> bool) {
        self.map.retain(|k, _| keep(k));
    }

    /// The workloads whose stored history should be read now, each with
    /// the blocks to read (the kept ones up to `now`'s).
    pub(crate) fn due(&mut self, now: DateTime<Utc>) -> Vec<(WorkloadKey, Vec<i64>)> {
        self.map
            .iter_mut()
            .filter(|(_, e)| e.load == Load::Due)
            .map(|(k, e)| {
                e.load = Load::Reading;
                let newest = e.history.block_of(now);
                let oldest = newest - e.history.keep_blocks() as i64 + 1;
                (k.clone(), (oldest..=newest).collect())
            })
            .collect()
    }

    /// Merges what was read for `key`; `None` (the read failed) asks again
    /// next tick. Returns the blocks refused.
    pub(crate) fn loaded(&mut self, key: &WorkloadKey, blocks: Option<Vec<Block>>) -> usize {
        let Some(entry) = self.map.get_mut(key) else {
            return 0;
        };
        let Some(blocks) = blocks else {
            entry.load = Load::Due;
            return 0;
        };
        let mut refused = 0;
        for block in blocks {
            if let Err(error) = entry.history.merge(block) {
                tracing::warn!(
                    workload = key.model_key(),
                    error,
                    "A stored history block was refused."
                );
                refused += 1;
            }
        }
        entry.load = Load::Done;
        refused
    }

    /// The changed blocks of loaded workloads, to write.
    pub(crate) fn changed(&mut self) -> Vec<(WorkloadKey, Block)> {
        self.map
            .iter_mut()
            .filter(|(_, e)| e.load == Load::Done && e.history.has_changes())
            .flat_map(|(k, e)| e.history.take_changed().into_iter().map(|b| (k.clone(), b)))
            .collect()
    }

    /// Workloads held, and the bytes their blocks take in the store.
    pub(crate) fn size(&self) -> (usize, usize) {
        let bytes = self.map.values().map(|e| e.history.stored_bytes()).sum();
        (self.map.len(), bytes)
    }
}

/// Reads the stored `blocks` of `key` ([`pas_nats::history::read`]),
/// counting refused entries; `None` when the read failed (asked again).
async fn load(
    kv: &Store,
    keys: &Keys,
    key: &WorkloadKey,
    blocks: &[i64],
    metrics: &Metrics,
) -> Option<Vec<Block>> {
    match pas_nats::history::read(kv, keys, &key.namespace, &key.workload, blocks).await {
        Ok(read) => {
            for _ in 0..read.refused {
                metrics.history_refused();
            }
            Some(read.blocks)
        }
        Err(error) => {
            tracing::warn!(workload = key.model_key(), %error, "Reading the history failed; will try again.");
            None
        }
    }
}

/// Reads the stored history of every workload `due`, merging each into
/// `merge` as it arrives.
pub(crate) async fn load_all(
    kv: Store,
    keys: Keys,
    due: Vec<(WorkloadKey, Vec<i64>)>,
    metrics: Metrics,
    merge: impl Fn(&WorkloadKey, Option<Vec<Block>>),
) {
    futures::stream::iter(due)
        .for_each_concurrent(LOAD_CONCURRENCY, |(key, blocks)| {
            let (kv, keys, metrics, merge) = (&kv, &keys, &metrics, &merge);
            async move {
                let read = load(kv, keys, &key, &blocks, metrics).await;
                metrics.history_load(read.is_some());
                merge(&key, read);
            }
        })
        .await;
}

/// Queues the changed blocks for `writer`.
pub(crate) fn write(writer: &KvWriter, keys: &Keys, changed: Vec<(WorkloadKey, Block)>) {
    for (key, block) in changed {
        let name = keys.history(&key.namespace, &key.workload, block.index);
        writer.put(name, block.encode().into());
    }
}
