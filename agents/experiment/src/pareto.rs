//! Cost against violation: each policy's curve over the target
//! utilisations, and how it compares with the HPA at the same cost.
//!
//! One target gives one point, and a policy can "win" on violations at one
//! target by spending more. So every policy runs at several targets, and the
//! comparison is made along its curve: its violation at the HPA's
//! replica-hours (the HPA at the reference target), and the replica-hours
//! it needs for the HPA's violation. Both are read off the policy's Pareto
//! frontier (the targets no other target beats on both cost and violation:
//! an operator would pick among those), linearly between neighbouring
//! targets (an estimate: the targets between were not run). Beyond the
//! targets run nothing is invented: a cost below the cheapest target has
//! no answer, and a cost above the dearest is given that target's violation
//! (spending more could only lower it), so there the figures are bounds in
//! the HPA's favour.

use serde::Serialize;

use crate::Score;

/// One policy at one target.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CurvePoint {
    /// Target utilisation, percent.
    pub target: f64,
    /// Cost: replica-hours.
    pub replica_hours: f64,
    /// Time with demand above the ready capacity, hours.
    pub violation_hours: f64,
    /// Used over ready core-seconds.
    pub used_core_seconds: f64,
    /// Ready core-seconds.
    pub ready_core_seconds: f64,
}

impl CurvePoint {
    /// 1 − used / ready capacity.
    pub fn slack(&self) -> Option<f64> {
        (self.ready_core_seconds > 0.0).then(|| 1.0 - self.used_core_seconds / self.ready_core_seconds)
    }
}

/// A policy's points, by target, from scores (of one trace or summed).
pub fn points(scores: &[Score]) -> Vec<(String, CurvePoint)> {
    scores
        .iter()
        .map(|s| {
            (
                s.policy.clone(),
                CurvePoint {
                    target: s.target_utilization,
                    replica_hours: s.replica_hours,
                    violation_hours: s.violation_seconds / 3600.0,
                    used_core_seconds: s.used_core_seconds,
                    ready_core_seconds: s.ready_core_seconds,
                },
            )
        })
        .collect()
}

/// Sums points of the same policy and target (over traces).
pub fn sum(all: impl IntoIterator<Item = (String, CurvePoint)>) -> Vec<(String, CurvePoint)> {
    let mut out: Vec<(String, CurvePoint)> = Vec::new();
    for (policy, p) in all {
        match out
            .iter_mut()
            .find(|(name, q)| *name == policy && q.target == p.target)
        {
            Some((_, q)) => {
                q.replica_hours += p.replica_hours;
                q.violation_hours += p.violation_hours;
                q.used_core_seconds += p.used_core_seconds;
                q.ready_core_seconds += p.ready_core_seconds;
            }
            None => out.push((policy, p)),
        }
    }
    out
}

/// How a policy compares with the HPA at the reference target.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Comparison {
    /// Its violation at the HPA's replica-hours, hours (`None` when even
    /// its cheapest target costs more).
    pub violation_at_hpa_cost_hours: Option<f64>,
    /// That over the HPA's violation.
    pub violation_vs_hpa: Option<f64>,
    /// Replica-hours it needs for the HPA's violation (`None` when no
    /// target reaches it).
    pub cost_at_hpa_violation: Option<f64>,
    /// That over the HPA's replica-hours.
    pub cost_vs_hpa: Option<f64>,
}

/// One policy's curve.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Curve {
    /// The policy.
    pub policy: String,
    /// Its points, by target.
    pub points: Vec<CurvePoint>,
    /// Against the HPA at the reference target.
    pub against_hpa: Comparison,
}

/// Every policy's curve, and the HPA's reference point.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Curves {
    /// The reference target, percent.
    pub reference_target: f64,
    /// The HPA at the reference target: replica-hours and violation hours.
    pub hpa: Option<(f64, f64)>,
    /// Per policy, in the order first seen.
    pub policies: Vec<Curve>,
}

impl Curves {
    /// The curves of `points`, compared with the HPA's point at `reference`.
    pub fn new(points: &[(String, CurvePoint)], reference: f64) -> Curves {
        let hpa = points
            .iter()
            .find(|(name, p)| name == "hpa" && p.target == reference)
            .map(|(_, p)| (p.replica_hours, p.violation_hours));
        let mut policies: Vec<Curve> = Vec::new();
        for (name, p) in points {
            match policies.iter_mut().find(|c| c.policy == *name) {
                Some(c) => c.points.push(*p),
                None => policies.push(Curve {
                    policy: name.clone(),
                    points: vec![*p],
                    against_hpa: Comparison::default(),
                }),
            }
        }
        for c in &mut policies {
            c.points.sort_by(|a, b| a.target.total_cmp(&b.target));
            let Some((cost, violation)) = hpa else { continue };
            let front = frontier(
                &c.points
                    .iter()
                    .map(|p| (p.replica_hours, p.violation_hours))
                    .collect::<Vec<_>>(),
            );
            let v = violation_at(&front, cost);
            let k = cost_at(&front, violation);
            c.against_hpa = Comparison {
                violation_at_hpa_cost_hours: v,
                violation_vs_hpa: v.filter(|_| violation > 0.0).map(|v| v / violation),
                cost_at_hpa_violation: k,
                cost_vs_hpa: k.filter(|_| cost > 0.0).map(|k| k / cost),
            };
        }
        Curves {
            reference_target: reference,
            hpa,
            policies,
        }
    }

    /// The curve of one policy.
    pub fn policy(&self, name: &str) -> Option<&Curve> {
        self.policies.iter().find(|c| c.policy == name)
    }
}

/// The points no other point beats on both cost and violation, cheapest
/// first (so violation strictly falls along it).
pub fn frontier(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut sorted: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|(c, v)| c.is_finite() && v.is_finite())
        .collect();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    let mut out: Vec<(f64, f64)> = Vec::new();
    for p in sorted {
        if out.last().is_none_or(|last| p.1 < last.1) {
            out.push(p);
        }
    }
    out
}

/// Violation along `frontier` at `cost`: linear between its points, the
/// dearest point's beyond it, `None` below the cheapest.
pub fn violation_at(frontier: &[(f64, f64)], cost: f64) -> Option<f64> {
    let first = frontier.first()?;
    if cost < first.0 {
        return None;
    }
    for w in frontier.windows(2) {
        let ((c0, v0), (c1, v1)) = (w[0], w[1]);
        if cost <= c1 {
            return Some(v0 + (v1 - v0) * (cost - c0) / (c1 - c0));
        }
    }
    frontier.last().map(|p| p.1)
}

/// Cost along `frontier` at `violation`: linear between its points, the
/// cheapest point's when that already violates no more, `None` when no
/// point violates so little.
pub fn cost_at(frontier: &[(f64, f64)], violation: f64) -> Option<f64> {
    let first = frontier.first()?;
    if violation >= first.1 {
        return Some(first.0);
    }
    for w in frontier.windows(2) {
        let ((c0, v0), (c1, v1)) = (w[0], w[1]);
        if violation >= v1 {
            return Some(c0 + (c1 - c0) * (v0 - violation) / (v0 - v1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(target: f64, replica_hours: f64, violation_hours: f64) -> CurvePoint {
        CurvePoint {
            target,
            replica_hours,
            violation_hours,
            used_core_seconds: 1.0,
            ready_core_seconds: 2.0,
        }
    }

    #[test]
    fn the_frontier_drops_dominated_points() {
        // (cost, violation): 12 costs more than 11 and violates more.
        let f = frontier(&[(10.0, 5.0), (12.0, 4.0), (11.0, 3.0), (14.0, 1.0), (13.0, 1.0)]);
        assert_eq!(f, vec![(10.0, 5.0), (11.0, 3.0), (13.0, 1.0)]);
        assert_eq!(frontier(&[(1.0, f64::NAN)]), vec![]);
    }

    #[test]
    fn interpolation_on_a_hand_made_curve() {
        let f = [(10.0, 5.0), (11.0, 3.0), (13.0, 1.0)];
        assert_eq!(violation_at(&f, 10.0), Some(5.0));
        assert_eq!(violation_at(&f, 10.5), Some(4.0));
        assert_eq!(violation_at(&f, 12.0), Some(2.0));
        assert_eq!(violation_at(&f, 13.0), Some(1.0));
        assert_eq!(violation_at(&f, 20.0), Some(1.0), "beyond: the dearest point's");
        assert_eq!(violation_at(&f, 9.0), None, "cheaper than any target: no answer");
        assert_eq!(cost_at(&f, 5.0), Some(10.0));
        assert_eq!(cost_at(&f, 6.0), Some(10.0), "the cheapest already does better");
        assert_eq!(cost_at(&f, 4.0), Some(10.5));
        assert_eq!(cost_at(&f, 2.0), Some(12.0));
        assert_eq!(cost_at(&f, 1.0), Some(13.0));
        assert_eq!(cost_at(&f, 0.5), None, "no target violates so little");
        assert_eq!(violation_at(&[], 1.0), None);
        assert_eq!(cost_at(&[], 1.0), None);
    }

    #[test]
    fn each_policy_is_compared_with_the_hpa_at_the_reference_target() {
        let points = vec![
            ("hpa".to_owned(), point(70.0, 100.0, 2.0)),
            ("hpa".to_owned(), point(50.0, 140.0, 1.0)),
            ("hybrid".to_owned(), point(80.0, 90.0, 1.5)),
            ("hybrid".to_owned(), point(60.0, 110.0, 0.5)),
            ("hybrid".to_owned(), point(70.0, 100.0, 1.0)),
        ];
        let c = Curves::new(&points, 70.0);
        assert_eq!(c.hpa, Some((100.0, 2.0)));
        let hpa = c.policy("hpa").unwrap();
        assert_eq!(hpa.against_hpa.violation_vs_hpa, Some(1.0));
        assert_eq!(hpa.against_hpa.cost_vs_hpa, Some(1.0));
        let hybrid = c.policy("hybrid").unwrap();
        let targets: Vec<f64> = hybrid.points.iter().map(|p| p.target).collect();
        assert_eq!(targets, [60.0, 70.0, 80.0]);
        assert_eq!(hybrid.against_hpa.violation_at_hpa_cost_hours, Some(1.0));
        assert_eq!(hybrid.against_hpa.violation_vs_hpa, Some(0.5));
        // 2 h of violation is above its cheapest point's 1.5 h: 90 at most.
        assert_eq!(hybrid.against_hpa.cost_at_hpa_violation, Some(90.0));
        assert_eq!(hybrid.against_hpa.cost_vs_hpa, Some(0.9));
        assert_eq!(hybrid.points[0].slack(), Some(0.5));
        // Summing two traces adds their points target by target.
        let summed = sum(points.iter().cloned().chain(points.iter().cloned()));
        assert_eq!(summed.len(), 5);
        assert_eq!(summed[0].1.replica_hours, 200.0);
        assert_eq!(Curves::new(&summed, 70.0).hpa, Some((200.0, 4.0)));
    }
}
