//! A workload's long, coarse demand history: what the load did at this time
//! yesterday and last week, kept for weeks at a few bytes per step, in a
//! form that survives restarts (the forecaster stores it in the key-value
//! bucket `pas-history`, one entry per [`Block`]).
//!
//! Fine steps (the series' own, seconds long) are averaged into coarse
//! slots ([`History::record`]; 5 minutes live). [`SLOTS`] slots make a
//! block, so at 5 minutes a block is one UTC day. A block encodes to
//! [`Block::ENCODED_LEN`] bytes ([`Block::encode`]): a header, then each
//! slot as a `u16` fraction of the block's largest value (missing is
//! `u16::MAX`), so the rounding error is below 1/65,534 of that largest
//! value, far below what a CPU sample can tell. At 5 minutes and 16 blocks
//! (14 whole days plus today and the day the oldest is cut from) a workload
//! holds 16 × 597 B ≈ 9.3 KiB in the store (10,000 workloads ≈ 91 MiB)
//! and 16 × 288 `f64` ≈ 36 KiB in memory.
//!
//! Nothing a stored entry says sizes an allocation: [`Block::decode`] takes
//! exactly [`Block::ENCODED_LEN`] bytes and refuses anything else.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

/// Coarse slots in one block: a day at 5 minutes.
pub const SLOTS: usize = 288;

/// The default coarse step: 5 minutes.
pub const DEFAULT_STEP_SECONDS: u32 = 300;

/// How far back a history reaches by default: 14 days.
pub const DEFAULT_KEEP_SECONDS: u64 = 14 * 86_400;

/// The coarse step for a series of `step_seconds`: the smallest whole
/// multiple of it that is at least [`DEFAULT_STEP_SECONDS`].
pub fn coarse_step_for(step_seconds: u32) -> u32 {
    let step = step_seconds.max(1);
    DEFAULT_STEP_SECONDS.div_ceil(step) * step
}

/// What a block starts with, so a stray entry is never read as history.
const MAGIC: &[u8; 4] = b"PASH";
/// The encoding's version.
const VERSION: u8 = 1;
/// The slot code of a missing slot.
const MISSING: u16 = u16::MAX;

/// One block of a workload's coarse history: [`SLOTS`] slots of
/// `step_seconds`, the first starting at `index × SLOTS × step_seconds`
/// seconds after the Unix epoch. Values are mean demand in millicores;
/// `NaN` where nothing was recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    /// The coarse step, seconds.
    pub step_seconds: u32,
    /// Which block since the Unix epoch.
    pub index: i64,
    /// Mean demand per slot, millicores; `NaN` when missing.
    pub values: Vec<f64>,
}

impl Block {
    /// Bytes of an encoded block: magic, version, step, index, scale, slots.
    pub const ENCODED_LEN: usize = 4 + 1 + 4 + 8 + 4 + 2 * SLOTS;

    /// An empty block.
    pub fn empty(step_seconds: u32, index: i64) -> Block {
        Block {
            step_seconds,
            index,
            values: vec![f64::NAN; SLOTS],
        }
    }

    /// The compact form stored in `pas-history` (little-endian).
    pub fn encode(&self) -> Vec<u8> {
        let top = self
            .values
            .iter()
            .copied()
            .filter(|v| v.is_finite())
            .fold(0.0_f64, f64::max);
        // Never 0 or subnormal, which decode refuses.
        let scale = (if top > 0.0 {
            top / f64::from(MISSING - 1)
        } else {
            1.0
        } as f32)
            .max(f32::MIN_POSITIVE);
        let mut out = Vec::with_capacity(Block::ENCODED_LEN);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&self.step_seconds.to_le_bytes());
        out.extend_from_slice(&self.index.to_le_bytes());
        out.extend_from_slice(&scale.to_le_bytes());
        for v in &self.values {
            let code = if v.is_finite() {
                (v.max(0.0) / f64::from(scale))
                    .round()
                    .min(f64::from(MISSING - 1)) as u16
            } else {
                MISSING
            };
            out.extend_from_slice(&code.to_le_bytes());
        }
        out
    }

    /// Reads [`Block::encode`]'s form back; anything else is an error that
    /// says what is wrong.
    pub fn decode(bytes: &[u8]) -> Result<Block, String> {
        if bytes.len() != Block::ENCODED_LEN {
            return Err(format!(
                "a history block is {} bytes, not {}",
                Block::ENCODED_LEN,
                bytes.len()
            ));
        }
        if &bytes[..4] != MAGIC {
            return Err("not a history block (no PASH magic)".into());
        }
        if bytes[4] != VERSION {
            return Err(format!("history block version {} is not {VERSION}", bytes[4]));
        }
        let step_seconds = u32::from_le_bytes(field(bytes, 5)?);
        let index = i64::from_le_bytes(field(bytes, 9)?);
        let scale = f32::from_le_bytes(field(bytes, 17)?);
        if step_seconds == 0 || !scale.is_finite() || scale <= 0.0 {
            return Err(format!(
                "a history block with step {step_seconds} s and scale {scale} is impossible"
            ));
        }
        let values = bytes[21..]
            .chunks_exact(2)
            .map(|c| match u16::from_le_bytes([c[0], c[1]]) {
                MISSING => f64::NAN,
                code => f64::from(code) * f64::from(scale),
            })
            .collect();
        Ok(Block {
            step_seconds,
            index,
            values,
        })
    }

    /// Start of the block.
    pub fn start(&self) -> i64 {
        self.index * SLOTS as i64 * i64::from(self.step_seconds)
    }
}

/// The `N` bytes at `at` of an encoded block.
fn field<const N: usize>(bytes: &[u8], at: usize) -> Result<[u8; N], String> {
    bytes
        .get(at..at + N)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| format!("a history block ends before byte {}", at + N))
}

/// The slot being averaged.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Open {
    /// Slot since the Unix epoch.
    slot: i64,
    sum: f64,
    count: u32,
    /// Whether the slot was followed from its first fine step: only then
    /// may it replace a value already held (after a restart the first slot
    /// is seen in part).
    whole: bool,
}

/// One workload's coarse history: the blocks of the last `keep` seconds
/// and the slot being averaged. Blocks changed since [`History::take_changed`]
/// are remembered, so only they are written.
#[derive(Debug, Clone, PartialEq)]
pub struct History {
    step_seconds: u32,
    keep_blocks: usize,
    /// Each kept block's slots (`NaN` missing).
    blocks: BTreeMap<i64, Vec<f64>>,
    open: Option<Open>,
    /// The newest fine step recorded (its start, seconds since the epoch).
    recorded: Option<i64>,
    changed: BTreeSet<i64>,
}

impl History {
    /// An empty history of `step_seconds` slots that keeps at least
    /// `keep_seconds` back from its newest slot (whole blocks, plus the
    /// current one).
    pub fn new(step_seconds: u32, keep_seconds: u64) -> History {
        let block = SLOTS as u64 * u64::from(step_seconds.max(1));
        History {
            step_seconds: step_seconds.max(1),
            keep_blocks: keep_seconds.div_ceil(block) as usize + 1,
            blocks: BTreeMap::new(),
            open: None,
            recorded: None,
            changed: BTreeSet::new(),
        }
    }

    /// Blocks kept at most.
    pub fn keep_blocks(&self) -> usize {
        self.keep_blocks
    }

    /// The coarse step, seconds.
    pub fn step_seconds(&self) -> u32 {
        self.step_seconds
    }

    /// The block index `at` falls in.
    pub fn block_of(&self, at: DateTime<Utc>) -> i64 {
        at.timestamp()
            .div_euclid(i64::from(self.step_seconds))
            .div_euclid(SLOTS as i64)
    }

    /// The newest fine step recorded, so a caller records each step once.
    pub fn recorded(&self) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp(self.recorded?, 0)
    }

    /// Records one closed fine step starting `at` (`NaN` when it had no
    /// data). Steps at or before the newest recorded one are ignored. When
    /// `at` is in a later slot than the open one, the open slot is closed:
    /// its mean is written (over a value already held only when the slot
    /// was followed whole) and its block marked changed.
    pub fn record(&mut self, at: DateTime<Utc>, value: f64) {
        let t = at.timestamp();
        if self.recorded.is_some_and(|r| t <= r) {
            return;
        }
        self.recorded = Some(t);
        let step = i64::from(self.step_seconds);
        let slot = t.div_euclid(step);
        if self.open.is_some_and(|o| o.slot != slot) {
            self.close();
        }
        let open = self.open.get_or_insert(Open {
            slot,
            sum: 0.0,
            count: 0,
            whole: t == slot * step,
        });
        if value.is_finite() {
            open.sum += value;
            open.count += 1;
        }
    }

    /// Closes the open slot, if any (see [`History::record`]).
    fn close(&mut self) {
        let Some(open) = self.open.take() else {
            return;
        };
        if open.count == 0 {
            return;
        }
        let mean = open.sum / f64::from(open.count);
        let index = open.slot.div_euclid(SLOTS as i64);
        let i = open.slot.rem_euclid(SLOTS as i64) as usize;
        let block = self.blocks.entry(index).or_insert_with(|| vec![f64::NAN; SLOTS]);
        if open.whole || block[i].is_nan() {
            block[i] = mean;
            self.changed.insert(index);
        }
        self.trim();
    }

    /// Drops blocks older than the kept ones.
    fn trim(&mut self) {
        while self.blocks.len() > self.keep_blocks {
            if let Some((index, _)) = self.blocks.pop_first() {
                self.changed.remove(&index);
            }
        }
    }

    /// Adds a stored block: its slots fill those not held (what this
    /// history recorded itself is newer). A block of another step, or
    /// older than the kept ones, is refused.
    pub fn merge(&mut self, block: Block) -> Result<(), String> {
        if block.step_seconds != self.step_seconds {
            return Err(format!(
                "the stored block has {} s slots, this history {} s",
                block.step_seconds, self.step_seconds
            ));
        }
        if block.values.len() != SLOTS {
            return Err(format!("a block has {SLOTS} slots, not {}", block.values.len()));
        }
        let held = self
            .blocks
            .entry(block.index)
            .or_insert_with(|| vec![f64::NAN; SLOTS]);
        for (mine, theirs) in held.iter_mut().zip(block.values) {
            if mine.is_nan() {
                *mine = theirs;
            }
        }
        self.trim();
        Ok(())
    }

    /// The blocks changed since the last call, oldest first.
    pub fn take_changed(&mut self) -> Vec<Block> {
        std::mem::take(&mut self.changed)
            .into_iter()
            .filter_map(|index| self.block(index))
            .collect()
    }

    /// Block `index` as held, if it is.
    pub fn block(&self, index: i64) -> Option<Block> {
        Some(Block {
            step_seconds: self.step_seconds,
            index,
            values: self.blocks.get(&index)?.clone(),
        })
    }

    /// The value of `slot` (since the epoch), if held.
    fn slot(&self, slot: i64) -> Option<f64> {
        let block = self.blocks.get(&slot.div_euclid(SLOTS as i64))?;
        Some(block[slot.rem_euclid(SLOTS as i64) as usize]).filter(|v| !v.is_nan())
    }

    /// Whether blocks changed since [`History::take_changed`].
    pub fn has_changes(&self) -> bool {
        !self.changed.is_empty()
    }

    /// Mean demand of the (closed) slot that holds `at`; `None` when it is
    /// missing or not kept.
    pub fn at(&self, at: DateTime<Utc>) -> Option<f64> {
        self.slot(at.timestamp().div_euclid(i64::from(self.step_seconds)))
    }

    /// Demand at `seconds` since the epoch, interpolated between the means
    /// of the two slots whose middles surround it (the one that has a
    /// value when the other is missing); `None` when neither has one. A
    /// slot that ends after `known_until` (seconds) counts as missing, so
    /// nothing observed after it is read.
    pub fn interpolated(&self, seconds: f64, known_until: f64) -> Option<f64> {
        let step = f64::from(self.step_seconds);
        let x = seconds / step - 0.5;
        let k = x.floor();
        let frac = x - k;
        let value = |slot: i64| -> Option<f64> {
            ((slot + 1) as f64 * step <= known_until)
                .then(|| self.slot(slot))
                .flatten()
        };
        let k = k as i64;
        match (value(k), value(k + 1)) {
            (Some(a), Some(b)) => Some(a + (b - a) * frac),
            (a, b) => a.or(b),
        }
    }

    /// The history of a whole series (steps of `step_seconds` from
    /// `start`, `NaN` where missing) at the coarse step `coarse_seconds`,
    /// keeping all of it and at least [`DEFAULT_KEEP_SECONDS`]: what `pas
    /// experiment` and `pas models eval` build from a trace, and the trainer
    /// from its series, as the forecaster does from its samples.
    pub fn of_series(
        start: DateTime<Utc>,
        step_seconds: u32,
        values: &[f64],
        coarse_seconds: u32,
    ) -> History {
        let span = u64::from(step_seconds) * values.len() as u64;
        let mut history = History::new(coarse_seconds, span.max(DEFAULT_KEEP_SECONDS));
        history.record_series(start, step_seconds, values);
        history
    }

    /// Records every step of a series (see [`History::record`]), and closes
    /// its last slot.
    pub fn record_series(&mut self, start: DateTime<Utc>, step_seconds: u32, values: &[f64]) {
        let step = chrono::TimeDelta::seconds(i64::from(step_seconds));
        for (i, v) in values.iter().enumerate() {
            self.record(start + step * i as i32, *v);
        }
        // The last slot closes with a step past the end.
        self.record(start + step * values.len() as i32, f64::NAN);
    }

    /// Blocks held.
    pub fn blocks(&self) -> usize {
        self.blocks.len()
    }

    /// Bytes the held blocks take in the store.
    pub fn stored_bytes(&self) -> usize {
        self.blocks.len() * Block::ENCODED_LEN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(seconds, 0).unwrap()
    }

    #[test]
    fn a_block_round_trips_within_its_rounding_and_keeps_gaps() {
        let mut block = Block::empty(300, 20_000);
        for (i, v) in block.values.iter_mut().enumerate() {
            if i % 7 != 3 {
                *v = 100.0 + (i as f64 * 13.7) % 900.0;
            }
        }
        block.values[0] = 0.0;
        let bytes = block.encode();
        assert_eq!(bytes.len(), Block::ENCODED_LEN);
        assert_eq!(Block::ENCODED_LEN, 597, "the size the docs state");
        let back = Block::decode(&bytes).unwrap();
        assert_eq!((back.step_seconds, back.index), (300, 20_000));
        let top = 1000.0;
        for (a, b) in block.values.iter().zip(&back.values) {
            if a.is_nan() {
                assert!(b.is_nan());
            } else {
                assert!((a - b).abs() <= top / 65_534.0, "{a} vs {b}");
            }
        }
        assert_eq!(back.start(), 20_000 * 288 * 300);
    }

    #[test]
    fn hostile_blocks_are_refused_with_a_reason() {
        let good = Block::empty(300, 1).encode();
        assert!(Block::decode(&good[..100]).unwrap_err().contains("bytes"));
        let mut long = good.clone();
        long.push(0);
        assert!(Block::decode(&long).is_err());
        let mut magic = good.clone();
        magic[0] = b'X';
        assert!(Block::decode(&magic).unwrap_err().contains("magic"));
        let mut version = good.clone();
        version[4] = 9;
        assert!(Block::decode(&version).unwrap_err().contains("version"));
        let mut step = good.clone();
        step[5..9].copy_from_slice(&0u32.to_le_bytes());
        assert!(Block::decode(&step).is_err());
        let mut scale = good;
        scale[17..21].copy_from_slice(&f32::NAN.to_le_bytes());
        assert!(Block::decode(&scale).is_err());
    }

    #[test]
    fn fine_steps_average_into_slots_and_a_partial_first_slot_fills_only_gaps() {
        // Slots of 10 s from fine steps of 2 s.
        let mut h = History::new(10, 100 * 2880);
        for t in (0..40).step_by(2) {
            h.record(at(1_000_000 + t), (t / 10) as f64 * 10.0 + 5.0);
        }
        // Slots 0..3 are closed (the fourth is still open).
        assert_eq!(h.at(at(1_000_000)), Some(5.0));
        assert_eq!(h.at(at(1_000_019)), Some(15.0));
        assert_eq!(h.at(at(1_000_025)), Some(25.0));
        assert_eq!(h.at(at(1_000_035)), None, "the open slot");
        // Steps already recorded are not counted twice.
        h.record(at(1_000_002), 1e9);
        assert_eq!(h.at(at(1_000_000)), Some(5.0));
        let changed = h.take_changed();
        assert_eq!(changed.len(), 1);
        assert!(h.take_changed().is_empty());

        // A restarted history that sees slot 1 in part does not overwrite it…
        let mut restarted = History::new(10, 100 * 2880);
        restarted.merge(changed[0].clone()).unwrap();
        restarted.record(at(1_000_016), 99.0);
        restarted.record(at(1_000_020), 26.0);
        assert!((restarted.at(at(1_000_010)).unwrap() - 15.0).abs() < 0.01);
        // …but fills a slot it did not hold, and replaces one it saw whole.
        restarted.record(at(1_000_030), 31.0);
        assert!((restarted.at(at(1_000_020)).unwrap() - 26.0).abs() < 0.01);
        // Missing fine steps leave a slot missing, not zero.
        restarted.record(at(1_000_040), f64::NAN);
        restarted.record(at(1_000_050), 1.0);
        assert_eq!(restarted.at(at(1_000_040)), None);
    }

    #[test]
    fn a_series_history_interpolates_between_slot_middles() {
        // 60 s steps into 300 s slots: slot k is the mean of its 5 steps.
        let values: Vec<f64> = (0..20).map(|i| if i < 5 { 10.0 } else { 20.0 }).collect();
        let start = at(3_000_000 * 300);
        let h = History::of_series(start, 60, &values, coarse_step_for(60));
        let t0 = start.timestamp() as f64;
        assert_eq!(h.step_seconds(), 300);
        // The middle of slot 0, then halfway to slot 1's middle.
        assert_eq!(h.interpolated(t0 + 150.0, f64::MAX), Some(10.0));
        assert_eq!(h.interpolated(t0 + 300.0, f64::MAX), Some(15.0));
        assert_eq!(h.interpolated(t0 + 450.0, f64::MAX), Some(20.0));
        // The last slot is closed too; past it, the nearest value; before
        // the start, only the first slot's.
        assert_eq!(h.interpolated(t0 + 1050.0, f64::MAX), Some(20.0));
        assert_eq!(h.interpolated(t0 + 1300.0, f64::MAX), Some(20.0));
        assert_eq!(h.interpolated(t0 - 100.0, f64::MAX), Some(10.0));
        assert_eq!(h.interpolated(t0 - 1000.0, f64::MAX), None);
        // Nothing that ends after what is known: slot 1 ends at t0 + 600.
        assert_eq!(h.interpolated(t0 + 300.0, t0 + 599.0), Some(10.0));
        assert_eq!(h.interpolated(t0 + 300.0, t0 + 600.0), Some(15.0));
        assert_eq!(coarse_step_for(15), 300);
        assert_eq!(coarse_step_for(7), 301);
        assert_eq!(coarse_step_for(600), 600);
    }

    #[test]
    fn old_blocks_are_dropped_and_merges_respect_the_step() {
        // Blocks of 288 s; keep 600 s: three whole blocks plus the current.
        let mut h = History::new(1, 600);
        assert_eq!(h.keep_blocks(), 4);
        for t in 0..(288 * 10) {
            h.record(at(t), 1.0);
        }
        assert_eq!(h.blocks(), 4);
        assert_eq!(h.at(at(288 * 5)), None, "dropped");
        assert_eq!(h.at(at(288 * 9 - 1)), Some(1.0));
        assert_eq!(h.stored_bytes(), 4 * Block::ENCODED_LEN);
        assert!(h.merge(Block::empty(300, 0)).unwrap_err().contains("300 s"));
        // An old stored block is not kept past the limit.
        h.merge(Block::empty(1, 0)).unwrap();
        assert_eq!(h.blocks(), 4);
        assert_eq!(h.block_of(at(288 * 9)), 9);
    }
}
