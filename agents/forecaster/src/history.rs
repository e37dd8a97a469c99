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

/// A workload whose stored history is to be read: its key, generation and
/// blocks.
pub(crate) type Due = (WorkloadKey, u64, Vec<i64>);

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
    /// Which sighting of the workload this is: a read started for an
    /// earlier one (before its partition moved away and back) is dropped.
    generation: u64,
}

/// The coarse histories of the workloads this replica forecasts.
#[derive(Debug)]
pub(crate) struct Histories {
    step_seconds: u32,
    keep_seconds: u64,
    map: HashMap<WorkloadKey, Entry>,
    generations: u64,
}

impl Histories {
    /// Histories of `step_seconds` slots reaching `keep_seconds` back.
    pub(crate) fn new(step_seconds: u32, keep_seconds: u64) -> Histories {
        Histories {
            step_seconds,
            keep_seconds,
            map: HashMap::new(),
            generations: 0,
        }
    }

    /// Records `key`'s steps after the newest recorded one, up to and
    /// including `closed` (missing steps stay missing), once its stored
    /// blocks are merged: recorded earlier, the first slot, seen only in
    /// part, would sit in an empty block and win over the stored value.
    /// Until then the steps wait in the series (its whole window is
    /// recorded then).
    pub(crate) fn record(&mut self, key: &WorkloadKey, steps: &Steps, closed: DateTime<Utc>) {
        let (step_seconds, keep_seconds) = (self.step_seconds, self.keep_seconds);
        let generations = &mut self.generations;
        let entry = self.map.entry(key.clone()).or_insert_with(|| {
            *generations += 1;
            Entry {
                history: History::new(step_seconds, keep_seconds),
                load: Load::Due,
                generation: *generations,
            }
        });
        if entry.load != Load::Done {
            return;
        }
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
    /// its generation and the blocks to read (the kept ones up to `now`'s).
    pub(crate) fn due(&mut self, now: DateTime<Utc>) -> Vec<Due> {
        self.map
            .iter_mut()
            .filter(|(_, e)| e.load == Load::Due)
            .map(|(k, e)| {
                e.load = Load::Reading;
                let newest = e.history.block_of(now);
                let oldest = newest - e.history.keep_blocks() as i64 + 1;
                (k.clone(), e.generation, (oldest..=newest).collect())
            })
            .collect()
    }

    /// Merges what was read for `key`'s `generation`; `None` (the read
    /// failed) asks again next tick. A read for an earlier generation is
    /// dropped. Returns the blocks refused.
    pub(crate) fn loaded(&mut self, key: &WorkloadKey, generation: u64, blocks: Option<Vec<Block>>) -> usize {
        let Some(entry) = self.map.get_mut(key).filter(|e| e.generation == generation) else {
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
    due: Vec<Due>,
    metrics: Metrics,
    merge: impl Fn(&WorkloadKey, u64, Option<Vec<Block>>),
) {
    futures::stream::iter(due)
        .for_each_concurrent(LOAD_CONCURRENCY, |(key, generation, blocks)| {
            let (kv, keys, metrics, merge) = (&kv, &keys, &metrics, &merge);
            async move {
                let read = load(kv, keys, &key, &blocks, metrics).await;
                metrics.history_load(read.is_some());
                merge(&key, generation, read);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> WorkloadKey {
        WorkloadKey {
            namespace: "shop".into(),
            workload: "web".into(),
        }
    }

    /// 2 s steps from `start`, all at `value`.
    fn steps(start: i64, n: usize, value: f64) -> Steps {
        Steps {
            start: DateTime::from_timestamp(start, 0).unwrap(),
            step_seconds: 2,
            values: vec![value; n],
            requests: vec![500.0; n],
            saturated: vec![false; n],
        }
    }

    #[test]
    fn nothing_is_recorded_or_written_before_the_store_is_read_and_a_stale_read_is_dropped() {
        // 10 s slots; the stored block holds slot 0 (1,000,000 s) at 7.
        let mut h = Histories::new(10, 3600);
        let t0 = 1_000_000;
        let now = DateTime::from_timestamp(t0 + 60, 0).unwrap();
        // Seen from mid-slot 0 (t0 + 4) on: not recorded until read.
        h.record(&key(), &steps(t0 + 4, 10, 50.0), now);
        assert!(h.changed().is_empty() && h.get(&key()).is_none());
        let first = h.due(now);
        assert_eq!(first.len(), 1);
        // The partition moves away and back: a new sighting.
        h.retain(|_| false);
        h.record(&key(), &steps(t0 + 4, 10, 50.0), now);
        let second = h.due(now);
        assert_ne!(first[0].1, second[0].1);
        let mut stored = History::new(10, 3600);
        stored.record_series(DateTime::from_timestamp(t0, 0).unwrap(), 2, &[7.0; 5]);
        let blocks = stored.take_changed();
        // The first sighting's read lands late: dropped.
        assert_eq!(h.loaded(&key(), first[0].1, Some(blocks.clone())), 0);
        assert!(h.get(&key()).is_none(), "still waiting for its own read");
        h.loaded(&key(), second[0].1, Some(blocks));
        // Now the window is recorded: slot 0, seen only from t0 + 4, keeps
        // the stored 7; slot 1 (whole) is 50.
        h.record(&key(), &steps(t0 + 4, 10, 50.0), now);
        let history = h.get(&key()).unwrap();
        let at = |s: i64| history.at(DateTime::from_timestamp(s, 0).unwrap());
        assert_eq!(at(t0), Some(7.0));
        assert_eq!(at(t0 + 10), Some(50.0));
        let written = h.changed();
        assert_eq!(written.len(), 1);
        let slot = (t0 / 10).rem_euclid(288) as usize;
        assert_eq!(written[0].1.values[slot..slot + 2], [7.0, 50.0]);
    }
}
