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

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use pas_schemas::{CpuSample, SCHEMA_VERSION};

/// How a simulated StatefulSet's pods behave.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PodModel {
    /// From creation to ready.
    pub startup: Duration,
    /// Most CPU one ready pod serves, millicores (its CPU limit).
    pub capacity_millicores: f64,
    /// CPU request of one pod, millicores (the HPA's denominator).
    pub request_millicores: f64,
}

impl Default for PodModel {
    fn default() -> Self {
        PodModel {
            startup: Duration::from_secs(60),
            capacity_millicores: 1000.0,
            request_millicores: 1000.0,
        }
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
    /// Creation time of each pod, by ordinal.
    created: Vec<DateTime<Utc>>,
}

impl SimulatedStatefulSet {
    /// A StatefulSet whose `replicas` pods are ready at `now` (they were
    /// created `startup` earlier).
    pub fn new(model: PodModel, replicas: u32, now: DateTime<Utc>) -> SimulatedStatefulSet {
        let ready_since = now - delta(model.startup);
        SimulatedStatefulSet {
            model,
            created: vec![ready_since; replicas as usize],
        }
    }

    /// The pod model.
    pub fn model(&self) -> &PodModel {
        &self.model
    }

    /// `spec.replicas`.
    pub fn replicas(&self) -> u32 {
        self.created.len() as u32
    }

    /// Pods ready at `now`.
    pub fn ready(&self, now: DateTime<Utc>) -> u32 {
        let startup = delta(self.model.startup);
        self.created.iter().filter(|&&c| c + startup <= now).count() as u32
    }

    /// CPU the ready pods can serve at `now`, millicores.
    pub fn capacity(&self, now: DateTime<Utc>) -> f64 {
        f64::from(self.ready(now)) * self.model.capacity_millicores
    }

    /// Sets the replicas at `now`: new pods start, surplus pods go at once.
    pub fn scale(&mut self, replicas: u32, now: DateTime<Utc>) {
        self.created.resize(replicas as usize, now);
    }

    /// Spreads `demand_millicores` over the pods ready at `now`.
    pub fn serve(&self, demand_millicores: f64, now: DateTime<Utc>) -> Served {
        let startup = delta(self.model.startup);
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
            .created
            .iter()
            .map(|&c| {
                if c + startup <= now {
                    (per_pod, share)
                } else {
                    (0.0, 0.0)
                }
            })
            .unzip();
        let unmet_millicores = (demand - per_pod * f64::from(ready)).max(0.0);
        Served {
            used_millicores,
            throttled,
            unmet_millicores,
        }
    }

    /// What the scaler observes of the pods when they serve `served` at
    /// `now` (as its samples give it): readiness by ordinal (StatefulSet
    /// pods start in order, so the ready ones come first), use, request and
    /// throttling.
    pub fn observed(&self, served: &Served, now: DateTime<Utc>) -> crate::policy::Observed {
        let ready = self.ready(now);
        crate::policy::Observed {
            replicas: self.replicas(),
            pods: served
                .used_millicores
                .iter()
                .zip(&served.throttled)
                .enumerate()
                .map(|(ordinal, (&used, &throttled))| crate::policy::PodUsage {
                    ready: (ordinal as u32) < ready,
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
}
