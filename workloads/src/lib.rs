//! Per-workload demand series built from pod samples: the one folding of
//! samples into workload steps, shared by the trainer, the forecaster, the
//! recorder, `pas experiment`, `pas record` and `pas import prometheus`
//! (stages meet on the bus; this is what each does to what it reads from
//! it). No libtorch: a series comes out as plain
//! [`Steps`], which `pas-models` turns into its `Series`.
//!
//! A workload's step ([`Step`], [`summarise`]) is, over the pods that
//! reported in it: its **demand**, the sum of each pod's mean CPU use in
//! millicores (what models learn and forecast: it does not change when the
//! replica count does); the pods' mean CPU request (what the scaler divides
//! by); how many pods reported; and whether any pod was saturated (CPU-
//! throttled for [`pas_schemas::SATURATED_THROTTLED_SHARE`] of the interval
//! or more), which makes the demand a lower bound.
//!
//! Start at [`Workloads::fold`]. Nothing a sample says sizes an allocation:
//! a gap as long as the history keeps nothing from before it, an open step
//! holds at most [`MAX_SAMPLES_PER_STEP`] samples, and silent workloads can
//! be forgotten ([`Workloads::forget_silent`]).

pub mod history;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use pas_schemas::{CpuSample, SATURATED_THROTTLED_SHARE, TrainingRange};

/// A workload's series: one entry per step from `start` (`NaN`, no pods,
/// where a step had no sample).
#[derive(Debug, Clone, PartialEq)]
pub struct Steps {
    /// Start of the first step.
    pub start: DateTime<Utc>,
    /// Step length, in seconds.
    pub step_seconds: u32,
    /// Demand per step, millicores: the sum of the pods' mean use.
    pub values: Vec<f64>,
    /// Mean CPU request of one pod per step, millicores.
    pub requests: Vec<f64>,
    /// Whether a step's demand is a lower bound (a pod was saturated).
    pub saturated: Vec<bool>,
}

impl Steps {
    /// The per-pod request of the newest step at or before `index` that has
    /// one.
    pub fn request_at(&self, index: usize) -> Option<f64> {
        self.requests
            .get(..=index.min(self.requests.len().saturating_sub(1)))?
            .iter()
            .rev()
            .copied()
            .find(|r| r.is_finite() && *r > 0.0)
    }
}

/// One workload's step, from its pods' samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    /// Sum over the pods of their mean CPU use, millicores.
    pub demand: f64,
    /// Sum over the pods of their mean CPU request, millicores.
    pub requested: f64,
    /// Pods that reported.
    pub pods: u32,
    /// The highest mean throttled share of a pod, 0 to 1.
    pub throttled: f64,
}

impl Step {
    /// A step with no sample.
    pub const MISSING: Step = Step {
        demand: f64::NAN,
        requested: f64::NAN,
        pods: 0,
        throttled: 0.0,
    };

    /// Utilisation as the HPA defines it: use over requests, percent.
    pub fn utilisation(&self) -> f64 {
        if self.requested > 0.0 {
            100.0 * self.demand / self.requested
        } else {
            f64::NAN
        }
    }

    /// The mean CPU request of one pod, millicores.
    pub fn request_per_pod(&self) -> f64 {
        if self.pods > 0 {
            self.requested / f64::from(self.pods)
        } else {
            f64::NAN
        }
    }

    /// Whether a pod was saturated, so the demand is a lower bound.
    pub fn saturated(&self) -> bool {
        self.throttled >= SATURATED_THROTTLED_SHARE
    }
}

/// One pod's sample in a step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PodSample<'a> {
    /// The pod.
    pub pod: &'a str,
    /// CPU used, millicores.
    pub used: f64,
    /// CPU requested, millicores.
    pub requested: f64,
    /// Throttled share of the interval, 0 when not known.
    pub throttled: f64,
}

/// A workload's step from its pods' samples: per pod the mean of its
/// samples, then summed (use, request) or the highest (throttling).
pub fn summarise<'a>(samples: impl IntoIterator<Item = PodSample<'a>>) -> Step {
    let mut pods: HashMap<&str, (f64, f64, f64, f64)> = HashMap::new();
    for s in samples {
        let p = pods.entry(s.pod).or_default();
        *p = (p.0 + s.used, p.1 + s.requested, p.2 + s.throttled, p.3 + 1.0);
    }
    if pods.is_empty() {
        return Step::MISSING;
    }
    let mut step = Step {
        demand: 0.0,
        requested: 0.0,
        pods: pods.len() as u32,
        throttled: 0.0,
    };
    for (used, requested, throttled, n) in pods.values() {
        step.demand += used / n;
        step.requested += requested / n;
        step.throttled = step.throttled.max(throttled / n);
    }
    step
}

/// A workload: namespace and StatefulSet.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkloadKey {
    /// Namespace.
    pub namespace: String,
    /// StatefulSet name.
    pub workload: String,
}

impl WorkloadKey {
    /// The model key: `<namespace>/<workload>`.
    pub fn model_key(&self) -> String {
        format!("{}/{}", self.namespace, self.workload)
    }
}

/// What folding a sample did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fold {
    /// The sample is part of its workload's series now.
    Folded,
    /// The same sample (pod and time) was folded before; nothing changed.
    Duplicate,
    /// The sample cannot be used; the reason is a fixed label for metrics.
    Ignored(&'static str),
}

/// One pod's sample in a step, by pod and time: CPU used, requested,
/// throttled share, and its stream sequence.
type PodSamples = HashMap<(String, i64), (f64, f64, f64, u64)>;

/// A settled step and the stream sequences of its samples.
#[derive(Debug, Clone, Copy)]
struct Settled {
    step: Step,
    sequences: Option<(u64, u64)>,
}

/// The most samples one open step of one workload holds (pods times
/// samples per pod); more are ignored, so a burst of made-up pod names
/// cannot grow a workload without bound.
pub const MAX_SAMPLES_PER_STEP: usize = 20_000;

/// One workload's data: settled steps as numbers, the newest steps (still
/// open to late samples) as samples.
#[derive(Debug, Clone)]
struct Workload {
    /// Step index of `settled[0]`.
    first: i64,
    settled: VecDeque<Settled>,
    /// The step after the newest settled one: older samples are late. Kept
    /// apart from `settled`, which may be emptied when it falls out of the
    /// history.
    next: Option<i64>,
    open: BTreeMap<i64, PodSamples>,
    /// When a sample was last folded in.
    touched: Instant,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            first: 0,
            settled: VecDeque::new(),
            next: None,
            open: BTreeMap::new(),
            touched: Instant::now(),
        }
    }
}

impl Workload {
    /// The step after the last settled one, if any step has settled.
    fn next_settled(&self) -> Option<i64> {
        self.next
    }

    fn first_step(&self) -> Option<i64> {
        if self.settled.is_empty() {
            self.open.first_key_value().map(|(k, _)| *k)
        } else {
            Some(self.first)
        }
    }

    fn newest_step(&self) -> Option<i64> {
        match self.open.last_key_value() {
            Some((k, _)) => Some(*k),
            None if !self.settled.is_empty() => self.next.map(|n| n - 1),
            None => None,
        }
    }

    /// Settles open steps older than `newest - open_steps`, filling skipped
    /// steps as missing, and drops settled steps more than `max_history`
    /// behind the newest. Nothing here allocates in proportion to the time
    /// between two samples: a gap as long as the history (a node's clock
    /// that jumped, a workload back after a day away) keeps nothing from
    /// before it.
    fn settle(&mut self, open_steps: i64, max_history: usize) {
        let Some(newest) = self.open.last_key_value().map(|(k, _)| *k) else {
            return;
        };
        let max_history = max_history as i64;
        while let Some(first) = self.open.first_entry() {
            if *first.key() > newest - open_steps {
                break;
            }
            let (step, samples) = first.remove_entry();
            match self.next {
                Some(next) if !self.settled.is_empty() && step - next < max_history => {
                    for _ in next..step {
                        self.settled.push_back(Settled {
                            step: Step::MISSING,
                            sequences: None,
                        });
                    }
                }
                _ => {
                    self.settled.clear();
                    self.first = step;
                }
            }
            self.settled.push_back(settle(&samples));
            self.next = Some(step + 1);
        }
        while !self.settled.is_empty() && newest - self.first >= max_history {
            self.settled.pop_front();
            self.first += 1;
        }
    }
}

/// One step from its samples ([`summarise`]), with their stream sequences.
fn settle(samples: &PodSamples) -> Settled {
    let sequences = samples
        .values()
        .map(|s| s.3)
        .fold(None, |acc: Option<(u64, u64)>, seq| {
            Some(acc.map_or((seq, seq), |(a, b)| (a.min(seq), b.max(seq))))
        });
    let step = summarise(
        samples
            .iter()
            .map(|((pod, _), &(used, requested, throttled, _))| PodSample {
                pod,
                used,
                requested,
                throttled,
            }),
    );
    Settled { step, sequences }
}

/// The series of every workload seen, each limited to its newest
/// `max_history` steps. A step stays open to late samples (a node's agent
/// flushing after an outage) for `open_steps` steps behind the newest; then
/// it settles into one number, and a sample for it is ignored as late.
#[derive(Debug, Clone)]
pub struct Workloads {
    step: i64,
    max_history: usize,
    open_steps: i64,
    map: HashMap<WorkloadKey, Workload>,
}

impl Workloads {
    /// Empty state for a step of `step_seconds`.
    pub fn new(step_seconds: u32, max_history: usize, open_steps: usize) -> Workloads {
        Workloads {
            step: i64::from(step_seconds),
            max_history,
            open_steps: open_steps.max(1) as i64,
            map: HashMap::new(),
        }
    }

    /// Folds one pod sample in; idempotent per pod and timestamp.
    pub fn fold(&mut self, sample: &CpuSample, sequence: u64) -> Fold {
        let (Some(namespace), Some(workload), Some(pod)) = (&sample.namespace, &sample.workload, &sample.pod)
        else {
            return Fold::Ignored("not_a_workload_pod");
        };
        let requested = match sample.cpu_requested_millicores {
            Some(r) if r > 0.0 => r,
            _ => return Fold::Ignored("no_cpu_request"),
        };
        let key = WorkloadKey {
            namespace: namespace.clone(),
            workload: workload.clone(),
        };
        let step = sample.timestamp.timestamp().div_euclid(self.step);
        let w = self.map.entry(key).or_default();
        if w.next_settled().is_some_and(|next| step < next) {
            return Fold::Ignored("late");
        }
        let samples = w.open.entry(step).or_default();
        let id = (pod.clone(), sample.timestamp.timestamp_millis());
        if samples.contains_key(&id) {
            return Fold::Duplicate;
        }
        if samples.len() >= MAX_SAMPLES_PER_STEP {
            return Fold::Ignored("too_many_samples");
        }
        samples.insert(
            id,
            (
                sample.cpu_used_millicores,
                requested,
                sample.cpu_throttled_ratio.unwrap_or(0.0),
                sequence,
            ),
        );
        w.touched = Instant::now();
        w.settle(self.open_steps, self.max_history);
        Fold::Folded
    }

    /// Forgets every workload with no sample folded for `silence`; returns
    /// how many.
    pub fn forget_silent(&mut self, silence: Duration) -> usize {
        let before = self.map.len();
        self.map.retain(|_, w| w.touched.elapsed() < silence);
        before - self.map.len()
    }

    /// How long since a sample of `key` was last folded in.
    pub fn silence(&self, key: &WorkloadKey) -> Option<Duration> {
        self.map.get(key).map(|w| w.touched.elapsed())
    }

    /// Forgets a workload and its data.
    pub fn remove(&mut self, key: &WorkloadKey) -> bool {
        self.map.remove(key).is_some()
    }

    /// How many workloads have data.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no workload has data.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Workloads with data, sorted.
    pub fn keys(&self) -> Vec<WorkloadKey> {
        let mut keys: Vec<_> = self.map.keys().cloned().collect();
        keys.sort();
        keys
    }

    /// Steps spanned by a workload's kept data.
    pub fn steps(&self, key: &WorkloadKey) -> usize {
        self.map
            .get(key)
            .and_then(|w| Some((w.newest_step()? - w.first_step()? + 1) as usize))
            .unwrap_or(0)
    }

    /// Start of the newest step of a workload.
    pub fn newest(&self, key: &WorkloadKey) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp(self.map.get(key)?.newest_step()? * self.step, 0)
    }

    /// One step of a workload, settled or still open; `None` when it is
    /// not held (before the history, or after the newest step).
    pub fn step(&self, key: &WorkloadKey, at: DateTime<Utc>) -> Option<Step> {
        let w = self.map.get(key)?;
        let step = at.timestamp().div_euclid(self.step);
        if let Some(samples) = w.open.get(&step) {
            return Some(settle(samples).step);
        }
        let i = usize::try_from(step - w.first).ok()?;
        w.settled.get(i).map(|s| s.step)
    }

    /// The starts of a workload's steps that hold a sample, oldest first:
    /// sparse, however far apart they are (unlike [`Workloads::series`]).
    pub fn held(&self, key: &WorkloadKey) -> Vec<DateTime<Utc>> {
        let Some(w) = self.map.get(key) else {
            return Vec::new();
        };
        let settled = w
            .settled
            .iter()
            .enumerate()
            .filter(|(_, s)| s.step.pods > 0)
            .map(|(i, _)| w.first + i as i64);
        settled
            .chain(w.open.keys().copied())
            .filter_map(|step| DateTime::from_timestamp(step.checked_mul(self.step)?, 0))
            .collect()
    }

    /// A workload's demand series ([`Steps`]): per step, the sum over pods
    /// of their mean CPU use, their mean request and whether one was
    /// saturated; steps with no sample are missing. With it, the stream
    /// sequences and times it covers.
    pub fn series(&self, key: &WorkloadKey) -> Option<(Steps, TrainingRange)> {
        let w = self.map.get(key)?;
        let (first, last) = (w.first_step()?, w.newest_step()?);
        let len = (last - first + 1) as usize;
        let mut series = Steps {
            start: DateTime::from_timestamp(first * self.step, 0)?,
            step_seconds: self.step as u32,
            values: vec![f64::NAN; len],
            requests: vec![f64::NAN; len],
            saturated: vec![false; len],
        };
        let (mut min_seq, mut max_seq) = (u64::MAX, 0);
        let open = w.open.iter().map(|(&step, samples)| (step, settle(samples)));
        let settled = w
            .settled
            .iter()
            .enumerate()
            .map(|(i, s)| (w.first + i as i64, *s));
        for (step, s) in settled.chain(open) {
            let i = (step - first) as usize;
            series.values[i] = s.step.demand;
            series.requests[i] = s.step.request_per_pod();
            series.saturated[i] = s.step.saturated();
            if let Some((a, b)) = s.sequences {
                min_seq = min_seq.min(a);
                max_seq = max_seq.max(b);
            }
        }
        let range = TrainingRange {
            first_sequence: min_seq,
            last_sequence: max_seq,
            from: series.start,
            to: series.start + TimeDelta::seconds((last - first) * self.step),
        };
        Some((series, range))
    }
}

#[cfg(test)]
mod tests {
    use pas_schemas::SCHEMA_VERSION;

    use super::*;

    fn sample(t: i64, pod: &str, used: f64, requested: Option<f64>) -> CpuSample {
        CpuSample {
            schema_version: SCHEMA_VERSION,
            timestamp: DateTime::from_timestamp(t, 0).unwrap(),
            node: "n1".into(),
            namespace: Some("shop".into()),
            workload: Some("web".into()),
            pod: Some(pod.into()),
            cpu_used_millicores: used,
            cpu_requested_millicores: requested,
            cpu_capacity_millicores: None,
            cpu_throttled_ratio: None,
        }
    }

    fn key() -> WorkloadKey {
        WorkloadKey {
            namespace: "shop".into(),
            workload: "web".into(),
        }
    }

    #[test]
    fn demand_is_the_sum_of_use_with_gaps_kept() {
        let mut w = Workloads::new(5, 100, 10);
        // Step 0: two pods, 100 + 300 used of 500 + 500 requested: demand
        // 400m, 40 % utilisation, 500m per pod.
        assert_eq!(w.fold(&sample(0, "web-0", 100.0, Some(500.0)), 1), Fold::Folded);
        assert_eq!(w.fold(&sample(1, "web-1", 300.0, Some(500.0)), 2), Fold::Folded);
        // A redelivery changes nothing.
        assert_eq!(
            w.fold(&sample(1, "web-1", 300.0, Some(500.0)), 2),
            Fold::Duplicate
        );
        // Step 1 missing; step 2: one pod, two samples averaged -> 250m.
        w.fold(&sample(10, "web-0", 200.0, Some(500.0)), 3);
        w.fold(&sample(12, "web-0", 300.0, Some(500.0)), 4);
        assert_eq!(
            w.fold(&sample(13, "web-0", 1.0, None), 5),
            Fold::Ignored("no_cpu_request")
        );
        let key = key();
        let (s, range) = w.series(&key).unwrap();
        assert_eq!(s.values.len(), 3);
        assert_eq!(s.values[0], 400.0);
        assert_eq!(s.requests[0], 500.0);
        assert!(s.values[1].is_nan() && s.requests[1].is_nan());
        assert_eq!(s.values[2], 250.0);
        assert_eq!(s.request_at(1), Some(500.0), "the newest step with a request");
        let step = w.step(&key, DateTime::from_timestamp(0, 0).unwrap()).unwrap();
        assert_eq!((step.pods, step.utilisation()), (2, 40.0));
        assert_eq!((range.first_sequence, range.last_sequence), (1, 4));
        assert_eq!(range.to, DateTime::from_timestamp(10, 0).unwrap());
    }

    #[test]
    fn a_clock_jump_allocates_nothing_in_proportion_to_the_gap() {
        // One sample dated 1970, then samples of today: the trainer and the
        // forecaster were OOM-killed filling one step per 5 s since the epoch.
        let mut w = Workloads::new(5, 100, 3);
        let key = key();
        assert_eq!(w.fold(&sample(0, "web-0", 1.0, Some(2.0)), 1), Fold::Folded);
        let now = 1_790_000_000;
        for i in 0..20 {
            w.fold(&sample(now + i * 5, "web-0", 1.0, Some(2.0)), i as u64 + 2);
        }
        assert!(w.steps(&key) <= 100, "kept {} steps", w.steps(&key));
        let (s, _) = w.series(&key).unwrap();
        assert_eq!(
            s.start,
            DateTime::from_timestamp(now, 0).unwrap(),
            "nothing kept from before the jump"
        );
        assert!(s.values.iter().all(|v| *v == 1.0));
    }

    #[test]
    fn a_burst_of_pod_names_is_bounded_and_silent_workloads_are_forgotten() {
        let mut w = Workloads::new(5, 100, 3);
        let mut ignored = 0;
        for i in 0..(MAX_SAMPLES_PER_STEP + 10) {
            if w.fold(&sample(1, &format!("web-{i}"), 1.0, Some(2.0)), i as u64)
                == Fold::Ignored("too_many_samples")
            {
                ignored += 1;
            }
        }
        assert_eq!(ignored, 10);
        assert_eq!(w.forget_silent(Duration::from_secs(3600)), 0);
        assert_eq!(w.forget_silent(Duration::ZERO), 1);
        assert!(w.is_empty());
    }

    #[test]
    fn old_steps_settle_history_is_bounded_and_late_samples_ignored() {
        // Steps stay open for 3 steps, at most 10 are kept.
        let mut w = Workloads::new(5, 10, 3);
        for i in 0..30 {
            if i != 25 {
                w.fold(&sample(i * 5, "web-0", 1.0, Some(2.0)), i as u64 + 1);
            }
        }
        let key = key();
        assert_eq!(w.steps(&key), 10);
        let (s, range) = w.series(&key).unwrap();
        assert_eq!(
            s.start,
            DateTime::from_timestamp(100, 0).unwrap(),
            "steps 20..=29"
        );
        assert_eq!(range.first_sequence, 21);
        assert!(s.values[5].is_nan(), "step 25 settled as missing");
        assert!(s.values.iter().enumerate().all(|(i, v)| i == 5 || *v == 1.0));
        // Step 25 has settled: too late now. Step 28 is still open.
        assert_eq!(
            w.fold(&sample(125, "web-0", 1.0, Some(2.0)), 99),
            Fold::Ignored("late")
        );
        assert_eq!(w.fold(&sample(140, "web-1", 3.0, Some(2.0)), 100), Fold::Folded);
        let (s, range) = w.series(&key).unwrap();
        assert_eq!(s.values[8], 1.0 + 3.0);
        assert_eq!(range.last_sequence, 100);
    }

    /// Demand does not move when the replicas do: 2000m over 4 pods, then
    /// over 8 (utilisation halves, demand stays).
    #[test]
    fn doubling_the_pods_under_flat_load_leaves_demand_alone() {
        let mut w = Workloads::new(5, 100, 1);
        let mut seq = 0;
        for (t, pods) in [(0, 4), (5, 4), (10, 8), (15, 8), (20, 8)] {
            for p in 0..pods {
                seq += 1;
                let used = 2000.0 / f64::from(pods);
                w.fold(&sample(t, &format!("web-{p}"), used, Some(1000.0)), seq);
            }
        }
        let (s, _) = w.series(&key()).unwrap();
        assert!(
            s.values.iter().all(|v| (v - 2000.0).abs() < 1e-9),
            "{:?}",
            s.values
        );
        assert!(s.requests.iter().all(|r| *r == 1000.0));
        let at = |t| w.step(&key(), DateTime::from_timestamp(t, 0).unwrap()).unwrap();
        assert_eq!((at(0).utilisation(), at(20).utilisation()), (50.0, 25.0));
    }

    /// A step with a pod throttled for 5 % of its interval or more is
    /// marked saturated (its demand a lower bound); less is not.
    #[test]
    fn a_throttled_pod_marks_its_step_saturated() {
        let mut w = Workloads::new(5, 100, 1);
        let throttled = |t, pod: &str, ratio| CpuSample {
            cpu_throttled_ratio: Some(ratio),
            ..sample(t, pod, 1000.0, Some(1000.0))
        };
        w.fold(&throttled(0, "web-0", 0.01), 1);
        w.fold(&throttled(1, "web-1", 0.0), 2);
        w.fold(&throttled(5, "web-0", 0.0), 3);
        w.fold(&throttled(6, "web-1", 0.3), 4);
        w.fold(&throttled(10, "web-0", 0.0), 5);
        let (s, _) = w.series(&key()).unwrap();
        assert_eq!(s.saturated, vec![false, true, false]);
        assert_eq!(s.values, vec![2000.0, 2000.0, 1000.0]);
    }
}
