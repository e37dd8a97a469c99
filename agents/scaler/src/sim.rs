//! A model of a StatefulSet under load, in any clock (wall or virtual).
//!
//! Pods are numbered by ordinal as Kubernetes numbers them: a scale-up
//! creates ordinals `replicas..new` (all at once, like `podManagementPolicy:
//! Parallel`), a scale-down deletes the highest ordinals at once. A pod is
//! ready `startup` after it was created and serves at most `capacity`
//! millicores (its CPU limit). Demand is spread evenly over the ready pods;
//! what they cannot serve is unmet (the SLO is violated while it is). A pod
//! that is not ready serves nothing, so samples reflect the current replicas:
//! the loop from decision to utilisation is closed. A pod asked for more
//! than its limit is throttled, as the kernel's CFS quota would: it reports
//! the throttled share of the interval, 1 − served / wanted, so its use is
//! marked a lower bound of its demand.
//!
//! Pods need not start alike: with a `startup_spread`, each pod's start-up
//! is drawn from `startup × [1 − spread, 1 + spread]`, by a hash of its
//! ordinal and creation time, so a run repeats exactly and a scale-out is
//! ready only when its slowest pod is.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use pas_schemas::{CpuSample, SCHEMA_VERSION};

/// How a simulated StatefulSet's pods behave.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PodModel {
    /// From creation to ready (the middle of the range with a spread).
    pub startup: Duration,
    /// How much one pod's start-up varies: each is `startup × (1 + spread ×
    /// u)` for a `u` in `[−1, 1]` drawn per pod. 0: every pod alike.
    pub startup_spread: f64,
    /// Most CPU one ready pod serves, millicores (its CPU limit).
    pub capacity_millicores: f64,
    /// CPU request of one pod, millicores (the HPA's denominator).
    pub request_millicores: f64,
}

impl Default for PodModel {
    fn default() -> Self {
        PodModel {
            startup: Duration::from_secs(60),
            startup_spread: 0.0,
            capacity_millicores: 1000.0,
            request_millicores: 1000.0,
        }
    }
}

impl PodModel {
    /// The start-up of the pod with `ordinal` created at `created`.
    pub fn startup_of(&self, ordinal: usize, created: DateTime<Utc>) -> Duration {
        let spread = self.startup_spread.clamp(0.0, 1.0);
        if spread == 0.0 {
            return self.startup;
        }
        // splitmix64 of the creation instant and the ordinal: the same pod
        // created at the same instant always takes as long.
        let mut z = (created.timestamp_millis() as u64)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(ordinal as u64)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let u = (z >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
        self.startup.mul_f64(1.0 + spread * u)
    }
}

/// What the pods did with the demand at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct Served {
    /// CPU each pod used, by ordinal (0 for pods not ready).
    pub used_millicores: Vec<f64>,
    /// Share of the interval each pod was throttled, by ordinal: 1 − served
    /// / wanted where it wanted more than its limit, else 0.
    pub throttled: Vec<f64>,
    /// Demand no ready pod could serve, millicores.
    pub unmet_millicores: f64,
}

/// One simulated StatefulSet.
#[derive(Debug, Clone, PartialEq)]
pub struct SimulatedStatefulSet {
    model: PodModel,
    /// When each pod is (or was) ready, by ordinal.
    ready_at: Vec<DateTime<Utc>>,
}

impl SimulatedStatefulSet {
    /// A StatefulSet whose `replicas` pods are ready at `now`.
    pub fn new(model: PodModel, replicas: u32, now: DateTime<Utc>) -> SimulatedStatefulSet {
        SimulatedStatefulSet {
            model,
            ready_at: vec![now; replicas as usize],
        }
    }

    /// The pod model.
    pub fn model(&self) -> &PodModel {
        &self.model
    }

    /// `spec.replicas`.
    pub fn replicas(&self) -> u32 {
        self.ready_at.len() as u32
    }

    /// Pods ready at `now`.
    pub fn ready(&self, now: DateTime<Utc>) -> u32 {
        self.ready_at.iter().filter(|&&r| r <= now).count() as u32
    }

    /// CPU the ready pods can serve at `now`, millicores.
    pub fn capacity(&self, now: DateTime<Utc>) -> f64 {
        f64::from(self.ready(now)) * self.model.capacity_millicores
    }

    /// Sets the replicas at `now`: new pods start, surplus pods go at once.
    pub fn scale(&mut self, replicas: u32, now: DateTime<Utc>) {
        let replicas = replicas as usize;
        self.ready_at.truncate(replicas);
        for ordinal in self.ready_at.len()..replicas {
            let ready = now + delta(self.model.startup_of(ordinal, now));
            self.ready_at.push(ready);
        }
    }

    /// Spreads `demand_millicores` over the pods ready at `now`.
    pub fn serve(&self, demand_millicores: f64, now: DateTime<Utc>) -> Served {
        let ready = self.ready(now);
        let demand = demand_millicores.max(0.0);
        let wanted = if ready == 0 {
            0.0
        } else {
            demand / f64::from(ready)
        };
        let per_pod = wanted.min(self.model.capacity_millicores);
        let share = if wanted > per_pod {
            1.0 - per_pod / wanted
        } else {
            0.0
        };
        let (used_millicores, throttled) = self
            .ready_at
            .iter()
            .map(|&r| if r <= now { (per_pod, share) } else { (0.0, 0.0) })
            .unzip();
        let unmet_millicores = (demand - per_pod * f64::from(ready)).max(0.0);
        Served {
            used_millicores,
            throttled,
            unmet_millicores,
        }
    }

    /// What the scaler observes of the pods when they serve `served` at
    /// `now` (as its samples give it): readiness, use, request and
    /// throttling of each pod.
    pub fn observed(&self, served: &Served, now: DateTime<Utc>) -> crate::policy::Observed {
        crate::policy::Observed {
            replicas: self.replicas(),
            pods: served
                .used_millicores
                .iter()
                .zip(&served.throttled)
                .enumerate()
                .map(|(ordinal, (&used, &throttled))| crate::policy::PodUsage {
                    ready: self.ready_at.get(ordinal).is_some_and(|&r| r <= now),
                    used_millicores: Some(used),
                    requested_millicores: Some(self.model.request_millicores),
                    throttled: Some(throttled),
                })
                .collect(),
        }
    }

    /// The samples the node agents would publish at `now` for this
    /// StatefulSet's pods (`<name>-<ordinal>`), each on its own node.
    pub fn samples(
        &self,
        namespace: &str,
        name: &str,
        demand_millicores: f64,
        now: DateTime<Utc>,
    ) -> Vec<CpuSample> {
        let served = self.serve(demand_millicores, now);
        served
            .used_millicores
            .iter()
            .zip(&served.throttled)
            .enumerate()
            .map(|(ordinal, (&used, &throttled))| CpuSample {
                schema_version: SCHEMA_VERSION,
                timestamp: now,
                node: format!("sim-node-{ordinal}"),
                namespace: Some(namespace.to_owned()),
                workload: Some(name.to_owned()),
                pod: Some(format!("{name}-{ordinal}")),
                cpu_used_millicores: used,
                cpu_requested_millicores: Some(self.model.request_millicores),
                cpu_capacity_millicores: None,
                cpu_throttled_ratio: Some(throttled),
            })
            .collect()
    }
}

fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }

    fn model() -> PodModel {
        PodModel {
            startup: Duration::from_secs(60),
            startup_spread: 0.0,
            capacity_millicores: 1000.0,
            request_millicores: 500.0,
        }
    }

    #[test]
    fn new_pods_are_ready_after_the_startup_delay() {
        let mut sts = SimulatedStatefulSet::new(model(), 2, at(0));
        assert_eq!((sts.replicas(), sts.ready(at(0))), (2, 2));
        sts.scale(5, at(10));
        assert_eq!(sts.replicas(), 5);
        assert_eq!(sts.ready(at(10)), 2);
        assert_eq!(
            sts.ready(at(69)),
            2,
            "59 s after creation the new pods are still starting"
        );
        assert_eq!(sts.ready(at(70)), 5, "60 s after creation they are ready");
        // A scale-up while pods start adds pods with their own clocks.
        sts.scale(6, at(40));
        assert_eq!(sts.ready(at(70)), 5);
        assert_eq!(sts.ready(at(100)), 6);
        // A scale-down removes the highest ordinals at once, ready or not.
        sts.scale(3, at(100));
        assert_eq!((sts.replicas(), sts.ready(at(100))), (3, 3));
    }

    #[test]
    fn demand_is_spread_over_ready_pods_up_to_their_capacity() {
        let mut sts = SimulatedStatefulSet::new(model(), 2, at(0));
        let s = sts.serve(1500.0, at(0));
        assert_eq!(s.used_millicores, vec![750.0, 750.0]);
        assert_eq!(s.unmet_millicores, 0.0);
        assert_eq!(sts.capacity(at(0)), 2000.0);
        // Beyond capacity: each pod serves its limit, the rest is unmet.
        let s = sts.serve(3500.0, at(0));
        assert_eq!(s.used_millicores, vec![1000.0, 1000.0]);
        assert_eq!(s.unmet_millicores, 1500.0);
        // Each wanted 1750m and got 1000m: throttled 3/7 of the time.
        assert!(s.throttled.iter().all(|t| (t - 750.0 / 1750.0).abs() < 1e-12));
        assert_eq!(sts.serve(1500.0, at(0)).throttled, vec![0.0, 0.0]);
        // Starting pods serve nothing: the load stays on the ready ones.
        sts.scale(4, at(0));
        let s = sts.serve(3500.0, at(30));
        assert_eq!(s.used_millicores, vec![1000.0, 1000.0, 0.0, 0.0]);
        assert_eq!(s.unmet_millicores, 1500.0);
        // Once ready the load spreads and utilisation falls with the replicas.
        let s = sts.serve(3500.0, at(60));
        assert_eq!(s.used_millicores, vec![875.0; 4]);
        assert_eq!(s.unmet_millicores, 0.0);
    }

    #[test]
    fn samples_name_pods_by_ordinal_and_give_the_request() {
        let sts = SimulatedStatefulSet::new(model(), 3, at(0));
        let samples = sts.samples("shop", "web", 600.0, at(5));
        let pods: Vec<_> = samples.iter().map(|s| s.pod.clone().unwrap()).collect();
        assert_eq!(pods, ["web-0", "web-1", "web-2"]);
        for s in &samples {
            assert_eq!(s.cpu_used_millicores, 200.0);
            assert_eq!(s.cpu_requested_millicores, Some(500.0));
            assert_eq!(s.timestamp, at(5));
            assert_eq!(s.cpu_throttled_ratio, Some(0.0));
            pas_schemas::Message::validate(s).unwrap();
        }
        // Past the limit, the samples say so: the demand is a lower bound.
        let saturated = sts.samples("shop", "web", 6000.0, at(5));
        assert!(saturated.iter().all(|s| s.cpu_throttled_ratio == Some(0.5)));
        // Utilisation as the HPA computes it: 600 / (3 × 500) = 40 %.
        let used: f64 = samples.iter().map(|s| s.cpu_used_millicores).sum();
        assert!((100.0 * used / 1500.0 - 40.0).abs() < 1e-9);
    }

    #[test]
    fn with_a_spread_each_pod_starts_in_its_own_time_and_runs_repeat() {
        let spread = PodModel {
            startup_spread: 0.5,
            ..model()
        };
        let mut sts = SimulatedStatefulSet::new(spread, 1, at(0));
        sts.scale(41, at(0));
        let times: Vec<f64> = (1..41)
            .map(|o| spread.startup_of(o, at(0)).as_secs_f64())
            .collect();
        assert!(times.iter().all(|t| (30.0..=90.0).contains(t)), "{times:?}");
        let (lo, hi) = times
            .iter()
            .fold((f64::MAX, f64::MIN), |(l, h), &t| (l.min(t), h.max(t)));
        assert!(lo < 40.0 && hi > 80.0, "the range is used: {lo}..{hi}");
        // Readiness follows each pod's own time, not the ordinal.
        let at_60 = 1 + times.iter().filter(|&&t| t <= 60.0).count() as u32;
        assert_eq!(sts.ready(at(60)), at_60);
        assert!(at_60 > 1 && at_60 < 41);
        assert_eq!(
            sts.ready(at(90)),
            41,
            "the slowest pod is ready by 1.5 × start-up"
        );
        let observed = sts.observed(&sts.serve(1000.0, at(60)), at(60));
        for (o, pod) in observed.pods.iter().enumerate().skip(1) {
            assert_eq!(pod.ready, times[o - 1] <= 60.0, "pod {o}");
        }
        // The same pods created at the same time take as long again.
        assert_eq!(spread.startup_of(7, at(0)), spread.startup_of(7, at(0)));
        assert_ne!(spread.startup_of(7, at(0)), spread.startup_of(7, at(5)));
        assert_eq!(model().startup_of(7, at(0)), Duration::from_secs(60));
    }
}
