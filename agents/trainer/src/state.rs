//! Per-workload utilisation series built from pod samples.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, TimeDelta, Utc};
use pas_models::Series;
use pas_schemas::{CpuSample, TrainingRange};

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

/// One pod's sample in a step: CPU used and requested, and its stream sequence.
type PodSamples = HashMap<(String, i64), (f64, f64, u64)>;

#[derive(Debug, Default)]
struct Workload {
    steps: BTreeMap<i64, PodSamples>,
}

/// The series of every workload seen, each limited to its newest `max_history` steps.
#[derive(Debug)]
pub struct Workloads {
    step: i64,
    max_history: usize,
    map: HashMap<WorkloadKey, Workload>,
}

impl Workloads {
    /// Empty state for a step of `step_seconds`.
    pub fn new(step_seconds: u32, max_history: usize) -> Workloads {
        Workloads { step: i64::from(step_seconds), max_history, map: HashMap::new() }
    }

    /// Folds one pod sample in; idempotent per pod and timestamp.
    pub fn fold(&mut self, sample: &CpuSample, sequence: u64) -> Fold {
        let (Some(namespace), Some(workload), Some(pod)) = (&sample.namespace, &sample.workload, &sample.pod) else {
            return Fold::Ignored("not_a_workload_pod");
        };
        let requested = match sample.cpu_requested_millicores {
            Some(r) if r > 0.0 => r,
            _ => return Fold::Ignored("no_cpu_request"),
        };
        let key = WorkloadKey { namespace: namespace.clone(), workload: workload.clone() };
        let step = sample.timestamp.timestamp().div_euclid(self.step);
        let w = self.map.entry(key).or_default();
        if let Some((&newest, _)) = w.steps.last_key_value()
            && step <= newest - self.max_history as i64
        {
            return Fold::Ignored("too_old");
        }
        let samples = w.steps.entry(step).or_default();
        let id = (pod.clone(), sample.timestamp.timestamp_millis());
        if samples.contains_key(&id) {
            return Fold::Duplicate;
        }
        samples.insert(id, (sample.cpu_used_millicores, requested, sequence));
        let newest = *w.steps.last_key_value().expect("just inserted").0;
        while let Some((&oldest, _)) = w.steps.first_key_value() {
            if oldest > newest - self.max_history as i64 {
                break;
            }
            w.steps.pop_first();
        }
        Fold::Folded
    }

    /// Workloads with data.
    pub fn keys(&self) -> Vec<WorkloadKey> {
        let mut keys: Vec<_> = self.map.keys().cloned().collect();
        keys.sort();
        keys
    }

    /// Steps spanned by a workload's kept data.
    pub fn steps(&self, key: &WorkloadKey) -> usize {
        self.map.get(key).and_then(|w| Some((w.steps.last_key_value()?.0 - w.steps.first_key_value()?.0 + 1) as usize)).unwrap_or(0)
    }

    /// Start of the newest step of a workload.
    pub fn newest(&self, key: &WorkloadKey) -> Option<DateTime<Utc>> {
        let step = *self.map.get(key)?.steps.last_key_value()?.0;
        DateTime::from_timestamp(step * self.step, 0)
    }

    /// A workload's utilisation series, in percent: per step, the sum over pods
    /// of their mean CPU use over the sum of their mean CPU requests (the HPA's
    /// definition); steps with no sample are missing. With it, the stream
    /// sequences and times it covers.
    pub fn series(&self, key: &WorkloadKey) -> Option<(Series, TrainingRange)> {
        let w = self.map.get(key)?;
        let (&first, _) = w.steps.first_key_value()?;
        let (&last, _) = w.steps.last_key_value()?;
        let mut values = vec![f64::NAN; (last - first + 1) as usize];
        let (mut min_seq, mut max_seq) = (u64::MAX, 0);
        for (&step, samples) in &w.steps {
            let mut pods: HashMap<&str, (f64, f64, f64)> = HashMap::new();
            for ((pod, _), &(used, requested, seq)) in samples {
                let p = pods.entry(pod.as_str()).or_default();
                *p = (p.0 + used, p.1 + requested, p.2 + 1.0);
                min_seq = min_seq.min(seq);
                max_seq = max_seq.max(seq);
            }
            let used: f64 = pods.values().map(|(u, _, n)| u / n).sum();
            let requested: f64 = pods.values().map(|(_, r, n)| r / n).sum();
            if requested > 0.0 {
                values[(step - first) as usize] = 100.0 * used / requested;
            }
        }
        let start = DateTime::from_timestamp(first * self.step, 0)?;
        let series = Series { start, step_seconds: self.step as u32, values };
        let range = TrainingRange {
            first_sequence: min_seq,
            last_sequence: max_seq,
            from: start,
            to: start + TimeDelta::seconds((last - first) * self.step),
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
        }
    }

    #[test]
    fn utilisation_is_sum_of_use_over_sum_of_requests_with_gaps_kept() {
        let mut w = Workloads::new(5, 100);
        // Step 0: two pods, 100 + 300 used of 500 + 500 requested -> 40 %.
        assert_eq!(w.fold(&sample(0, "web-0", 100.0, Some(500.0)), 1), Fold::Folded);
        assert_eq!(w.fold(&sample(1, "web-1", 300.0, Some(500.0)), 2), Fold::Folded);
        // A redelivery changes nothing.
        assert_eq!(w.fold(&sample(1, "web-1", 300.0, Some(500.0)), 2), Fold::Duplicate);
        // Step 1 missing; step 2: one pod, two samples averaged -> 250 / 500.
        w.fold(&sample(10, "web-0", 200.0, Some(500.0)), 3);
        w.fold(&sample(12, "web-0", 300.0, Some(500.0)), 4);
        assert_eq!(w.fold(&sample(13, "web-0", 1.0, None), 5), Fold::Ignored("no_cpu_request"));
        let key = WorkloadKey { namespace: "shop".into(), workload: "web".into() };
        let (s, range) = w.series(&key).unwrap();
        assert_eq!(s.values.len(), 3);
        assert_eq!(s.values[0], 40.0);
        assert!(s.values[1].is_nan());
        assert_eq!(s.values[2], 50.0);
        assert_eq!((range.first_sequence, range.last_sequence), (1, 4));
        assert_eq!(range.to, DateTime::from_timestamp(10, 0).unwrap());
    }

    #[test]
    fn history_is_bounded_and_old_samples_ignored() {
        let mut w = Workloads::new(5, 10);
        for i in 0..30 {
            w.fold(&sample(i * 5, "web-0", 1.0, Some(2.0)), i as u64 + 1);
        }
        let key = WorkloadKey { namespace: "shop".into(), workload: "web".into() };
        assert_eq!(w.steps(&key), 10);
        assert_eq!(w.fold(&sample(0, "web-0", 1.0, Some(2.0)), 99), Fold::Ignored("too_old"));
        assert_eq!(w.series(&key).unwrap().1.first_sequence, 21);
    }
}
