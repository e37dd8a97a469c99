//! Shadow mode: PAS decides beside what scales a workload today (an HPA,
//! or a KEDA ScaledObject's HPA) and never patches it. Each decision is
//! published with outcome `shadow`: `replicas_before` is what runs,
//! `replicas_after` what PAS would run.
//!
//! A [`Shadow`] follows the pods PAS would have run (each new one ready a
//! start-up after PAS asked for it, a removed one gone at once) and keeps a
//! scorecard per hour: replica-seconds and the time demand exceeded the
//! ready capacity, for PAS and for what ran. Each evaluation scores the
//! interval since the previous one with what it reads now (right-point):
//! the demand (the sum of the pods' latest samples), the ready replicas that
//! ran (`status.readyReplicas`) and PAS's pods ready by now. Ready capacity is
//! ready pods × the pod's CPU request: demand above it is a violation, the
//! HPA's 100 % line and the experiment's. An interval longer than
//! [`Shadow::MAX_GAP_TICKS`] ticks (the scaler was away) is not scored.
//!
//! The scaler keeps the shadow in the workload's state in KV `pas-scaler`
//! (`<scope>.state.<namespace>.<workload>`), written at most every
//! `shadow_write_every`; `pas shadow report` reads it from there.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use futures::TryStreamExt;
use pas_schemas::subjects::{BUCKET_SCALER, Keys, kv_stream};
use serde::{Deserialize, Serialize};

use crate::policy::History;

/// The totals of a scorecard over some time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    /// Seconds scored.
    pub seconds: f64,
    /// Replica-seconds PAS would have run.
    pub pas_replica_seconds: f64,
    /// Replica-seconds that ran.
    pub actual_replica_seconds: f64,
    /// Seconds demand exceeded the ready capacity PAS would have had.
    pub pas_violation_seconds: f64,
    /// Seconds demand exceeded the ready capacity that ran.
    pub actual_violation_seconds: f64,
    /// Core-seconds of demand above PAS's ready capacity.
    pub pas_unserved_core_seconds: f64,
    /// Core-seconds of demand above the ready capacity that ran.
    pub actual_unserved_core_seconds: f64,
    /// Core-seconds demanded.
    pub demand_core_seconds: f64,
}

impl Totals {
    fn add(&mut self, other: &Totals) {
        self.seconds += other.seconds;
        self.pas_replica_seconds += other.pas_replica_seconds;
        self.actual_replica_seconds += other.actual_replica_seconds;
        self.pas_violation_seconds += other.pas_violation_seconds;
        self.actual_violation_seconds += other.actual_violation_seconds;
        self.pas_unserved_core_seconds += other.pas_unserved_core_seconds;
        self.actual_unserved_core_seconds += other.actual_unserved_core_seconds;
        self.demand_core_seconds += other.demand_core_seconds;
    }

    /// Replica-hours PAS would have run.
    pub fn pas_replica_hours(&self) -> f64 {
        self.pas_replica_seconds / 3600.0
    }

    /// Replica-hours that ran.
    pub fn actual_replica_hours(&self) -> f64 {
        self.actual_replica_seconds / 3600.0
    }
}

/// What an evaluation of a shadow workload read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// The workload's demand now: the sum of its pods' CPU use, millicores.
    pub demand_millicores: f64,
    /// One pod's CPU request, millicores (unknown: nothing is scored).
    pub request_millicores: Option<f64>,
    /// Replicas that run (`spec.replicas`, as the HPA set them).
    pub replicas: u32,
    /// Of those, ready (`status.readyReplicas`).
    pub ready: u32,
}

/// What PAS would have run beside a workload, and the scorecard.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Shadow {
    /// The workload's namespace.
    #[serde(default)]
    pub namespace: String,
    /// The workload.
    #[serde(default)]
    pub workload: String,
    /// The HPA PAS shadows, if one targets the workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hpa: Option<String>,
    /// The previous evaluation.
    pub last: Option<DateTime<Utc>>,
    /// Replicas PAS would run.
    pub replicas: u32,
    /// Replicas that ran at the previous evaluation (a rise is a scale-out
    /// whose start-up PAS learns).
    #[serde(default)]
    pub actual: u32,
    /// When each of PAS's pods that is not ready yet will be, ascending.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub starting: Vec<DateTime<Utc>>,
    /// Per hour (its start, Unix seconds), the totals.
    pub hours: BTreeMap<i64, Totals>,
    /// When the state holding it was last written to KV.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub written: Option<DateTime<Utc>>,
}

impl Shadow {
    /// An interval longer than this many ticks is not scored.
    pub const MAX_GAP_TICKS: u32 = 3;

    /// A shadow that starts as what runs: the same replicas, those not
    /// ready yet ready a start-up from `now`.
    pub fn start(now: DateTime<Utc>, reading: &Reading, startup: Duration, hpa: Option<String>) -> Shadow {
        let at = now + TimeDelta::from_std(startup).unwrap_or(TimeDelta::MAX);
        Shadow {
            hpa,
            namespace: String::new(),
            workload: String::new(),
            last: None,
            replicas: reading.replicas,
            actual: reading.replicas,
            starting: vec![at; reading.replicas.saturating_sub(reading.ready) as usize],
            hours: BTreeMap::new(),
            written: None,
        }
    }

    /// PAS's would-be pods as the policy sees them at `now`: its count,
    /// those ready as this shadow follows them, each requesting the
    /// reading's request. `sampled` of the `pods` that run had a sample: the
    /// same share of PAS's ready pods has one (at least one while any did),
    /// each using an equal part of the demand those samples imply for all
    /// of them (their mean use times `pods`); the rest are missing, as the
    /// HPA's rule counts missing pods.
    pub fn observed(
        &self,
        now: DateTime<Utc>,
        reading: &Reading,
        sampled: usize,
        pods: usize,
    ) -> crate::policy::Observed {
        let ready = self.ready(now);
        let (with_sample, share) = if sampled == 0 || ready == 0 {
            (0, None)
        } else {
            let demand = reading.demand_millicores / sampled as f64 * pods.max(sampled) as f64;
            let n = ((f64::from(ready) * sampled as f64 / pods.max(sampled) as f64).round() as u32)
                .clamp(1, ready);
            (n, Some(demand / f64::from(ready)))
        };
        crate::policy::Observed {
            replicas: self.replicas,
            pods: (0..self.replicas)
                .map(|i| crate::policy::PodUsage {
                    ready: i < ready,
                    used_millicores: if i < with_sample { share } else { None },
                    requested_millicores: reading.request_millicores,
                    throttled: None,
                })
                .collect(),
        }
    }

    /// Goes on from what runs (`reading`), keeping the scorecard: PAS's
    /// count becomes the running count, those not ready yet ready a
    /// start-up from `now`.
    pub fn resume(&mut self, now: DateTime<Utc>, reading: &Reading, startup: Duration) {
        let fresh = Shadow::start(now, reading, startup, self.hpa.clone());
        self.replicas = fresh.replicas;
        self.starting = fresh.starting;
    }

    /// PAS's pods ready at `now`.
    pub fn ready(&self, now: DateTime<Utc>) -> u32 {
        let starting = self.starting.iter().filter(|at| **at > now).count() as u32;
        self.replicas.saturating_sub(starting)
    }

    /// Scores the interval since the previous evaluation with `reading`
    /// (at most `max_gap` long, else nothing is scored), then takes PAS's
    /// decision of `decided` replicas, whose new pods are ready `startup`
    /// from now. Hours older than `keep` are dropped.
    pub fn step(
        &mut self,
        now: DateTime<Utc>,
        reading: &Reading,
        decided: u32,
        startup: Duration,
        max_gap: Duration,
        keep: Duration,
    ) {
        self.starting.retain(|at| *at > now);
        if let (Some(last), Some(request)) = (self.last, reading.request_millicores) {
            let dt = (now - last).to_std().unwrap_or_default();
            if !dt.is_zero() && dt <= max_gap {
                let dt = dt.as_secs_f64();
                let demand = reading.demand_millicores.max(0.0);
                let unmet = |ready: u32| (demand - f64::from(ready) * request).max(0.0);
                let pas = unmet(self.ready(now));
                let actual = unmet(reading.ready);
                let violated = |unmet: f64| if unmet > 1e-6 { dt } else { 0.0 };
                let hour = now.timestamp().div_euclid(3600) * 3600;
                self.hours.entry(hour).or_default().add(&Totals {
                    seconds: dt,
                    pas_replica_seconds: f64::from(self.replicas) * dt,
                    actual_replica_seconds: f64::from(reading.replicas) * dt,
                    pas_violation_seconds: violated(pas),
                    actual_violation_seconds: violated(actual),
                    pas_unserved_core_seconds: pas / 1000.0 * dt,
                    actual_unserved_core_seconds: actual / 1000.0 * dt,
                    demand_core_seconds: demand / 1000.0 * dt,
                });
            }
        }
        self.last = Some(now);
        self.scale(now, decided, startup);
        let oldest = now - TimeDelta::from_std(keep).unwrap_or(TimeDelta::MAX);
        self.hours.retain(|hour, _| *hour + 3600 > oldest.timestamp());
    }

    /// PAS's pods go from `replicas` to `to`: new ones ready a start-up
    /// from now, and the ones not ready yet are the first to go.
    fn scale(&mut self, now: DateTime<Utc>, to: u32, startup: Duration) {
        if to > self.replicas {
            let at = now + TimeDelta::from_std(startup).unwrap_or(TimeDelta::MAX);
            self.starting.extend((self.replicas..to).map(|_| at));
        } else {
            for _ in to..self.replicas {
                self.starting.pop();
            }
        }
        self.replicas = to;
    }

    /// The totals of the hours that end after `since`.
    pub fn since(&self, since: DateTime<Utc>) -> Totals {
        let mut totals = Totals::default();
        for (_, hour) in self.hours.iter().filter(|(h, _)| **h + 3600 > since.timestamp()) {
            totals.add(hour);
        }
        totals
    }

    /// Whether the state is due to be written: never written, or last
    /// written `every` ago or longer.
    pub fn due(&self, now: DateTime<Utc>, every: Duration) -> bool {
        self.written
            .is_none_or(|at| (now - at).to_std().is_ok_and(|d| d >= every))
    }
}

/// Every shadow kept in KV `pas-scaler` under `keys` (live, or a replay
/// run's), or the one of `only` (namespace, workload); in key order.
/// Needs only read access: the viewer's `STREAM.INFO` and `DIRECT.GET`.
pub async fn read(
    js: &async_nats::jetstream::Context,
    keys: &Keys,
    only: Option<(&str, &str)>,
) -> Result<Vec<Shadow>, String> {
    let kv = js
        .get_key_value(BUCKET_SCALER)
        .await
        .map_err(|e| format!("opening the key-value bucket {BUCKET_SCALER}: {e}"))?;
    let names = match only {
        Some((namespace, workload)) => vec![keys.state(namespace, workload)],
        None => {
            let stream = js
                .get_stream(kv_stream(BUCKET_SCALER))
                .await
                .map_err(|e| format!("reading the {BUCKET_SCALER} bucket's stream: {e}"))?;
            let prefix = format!("$KV.{BUCKET_SCALER}.");
            let filter = format!("{prefix}{}.state.>", keys.scope());
            let subjects: Vec<(String, usize)> = stream
                .info_with_subjects(filter)
                .await
                .map_err(|e| format!("listing the scaler's state keys: {e}"))?
                .try_collect()
                .await
                .map_err(|e| format!("listing the scaler's state keys: {e}"))?;
            let mut names: Vec<String> = subjects
                .into_iter()
                .filter_map(|(subject, _)| subject.strip_prefix(&prefix).map(str::to_owned))
                .collect();
            names.sort();
            names
        }
    };
    let mut shadows = Vec::new();
    for name in names {
        let entry = kv
            .get(&name)
            .await
            .map_err(|e| format!("reading {name} from {BUCKET_SCALER}: {e}"))?;
        let Some(bytes) = entry else { continue };
        match serde_json::from_slice::<History>(&bytes) {
            Ok(History {
                shadow: Some(shadow), ..
            }) => shadows.push(shadow),
            Ok(_) => {}
            Err(error) => tracing::warn!(key = %name, %error, "Unreadable scaler state; skipped."),
        }
    }
    Ok(shadows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    fn reading(demand: f64, replicas: u32, ready: u32) -> Reading {
        Reading {
            demand_millicores: demand,
            request_millicores: Some(1000.0),
            replicas,
            ready,
        }
    }

    const TICK: Duration = Duration::from_secs(5);
    const GAP: Duration = Duration::from_secs(15);
    const WEEK: Duration = Duration::from_secs(7 * 86_400);

    /// A hand computation: the HPA holds 2 pods (2000m) while demand is
    /// 2500m; PAS asks for 3 at t=0 with a 10 s start-up, then 4 at t=10.
    #[test]
    fn the_scorecard_is_the_hand_computation() {
        let startup = Duration::from_secs(10);
        let mut s = Shadow::start(at(0), &reading(2500.0, 2, 2), startup, Some("web".into()));
        assert_eq!((s.replicas, s.ready(at(0))), (2, 2));
        s.step(at(0), &reading(2500.0, 2, 2), 3, startup, GAP, WEEK);
        // Nothing scored at the first evaluation: no interval yet.
        assert_eq!(s.since(at(-3600)), Totals::default());
        // t=5: PAS has 3 pods, 2 ready (the third at t=10): both short.
        s.step(at(5), &reading(2500.0, 2, 2), 3, startup, GAP, WEEK);
        // t=10: the third is ready: PAS serves 3000m ≥ 2500m; PAS asks for 4.
        s.step(at(10), &reading(2500.0, 2, 2), 4, startup, GAP, WEEK);
        // t=15: 4 pods, 3 ready; the HPA went to 3 (2 ready).
        s.step(at(15), &reading(2500.0, 3, 2), 4, startup, GAP, WEEK);
        let t = s.since(at(-3600));
        assert_eq!(t.seconds, 15.0);
        assert_eq!(t.pas_replica_seconds, 3.0 * 5.0 + 3.0 * 5.0 + 4.0 * 5.0);
        assert_eq!(t.actual_replica_seconds, 2.0 * 5.0 + 2.0 * 5.0 + 3.0 * 5.0);
        assert_eq!(t.pas_violation_seconds, 5.0);
        assert_eq!(t.actual_violation_seconds, 15.0);
        assert!((t.pas_unserved_core_seconds - 0.5 * 5.0).abs() < 1e-9);
        assert!((t.actual_unserved_core_seconds - 0.5 * 15.0).abs() < 1e-9);
        assert!((t.demand_core_seconds - 2.5 * 15.0).abs() < 1e-9);
        assert!((t.pas_replica_hours() - 50.0 / 3600.0).abs() < 1e-12);
    }

    #[test]
    fn a_scale_in_removes_the_pods_not_ready_first() {
        let startup = Duration::from_secs(60);
        let mut s = Shadow::start(at(0), &reading(0.0, 2, 2), startup, None);
        s.step(at(0), &reading(0.0, 2, 2), 5, startup, GAP, WEEK);
        assert_eq!((s.replicas, s.ready(at(1))), (5, 2));
        s.step(at(5), &reading(0.0, 2, 2), 3, startup, GAP, WEEK);
        assert_eq!((s.replicas, s.ready(at(6)), s.ready(at(60))), (3, 2, 3));
        s.step(at(10), &reading(0.0, 2, 2), 1, startup, GAP, WEEK);
        assert_eq!((s.replicas, s.ready(at(11)), s.starting.len()), (1, 1, 0));
    }

    #[test]
    fn gaps_and_unknown_requests_are_not_scored_and_old_hours_go() {
        let mut s = Shadow::start(at(0), &reading(500.0, 1, 1), TICK, None);
        s.step(at(0), &reading(500.0, 1, 1), 1, TICK, GAP, WEEK);
        // The scaler was away for a minute: not scored.
        s.step(at(60), &reading(500.0, 1, 1), 1, TICK, GAP, WEEK);
        assert_eq!(s.since(at(-3600)).seconds, 0.0);
        let unknown = Reading {
            request_millicores: None,
            ..reading(500.0, 1, 1)
        };
        s.step(at(65), &unknown, 1, TICK, GAP, WEEK);
        assert_eq!(s.since(at(-3600)).seconds, 0.0);
        s.step(at(70), &reading(500.0, 1, 1), 1, TICK, GAP, WEEK);
        assert_eq!(s.since(at(-3600)).seconds, 5.0);
        // Eight days on (evaluated every tick), the first hour is gone.
        let later = at(8 * 86_400);
        s.step(later, &reading(500.0, 1, 1), 1, TICK, GAP, WEEK);
        s.step(
            later + TimeDelta::seconds(5),
            &reading(500.0, 1, 1),
            1,
            TICK,
            GAP,
            WEEK,
        );
        assert_eq!(s.hours.len(), 1);
        assert_eq!(s.since(at(-3600)).seconds, 5.0);
        // `since` counts whole hours that end after it.
        assert_eq!(s.since(later + TimeDelta::hours(2)).seconds, 0.0);
    }

    #[test]
    fn missing_samples_stay_missing_and_zero_is_left() {
        let mut s = Shadow::start(at(0), &reading(0.0, 0, 0), TICK, None);
        assert_eq!(s.replicas, 0);
        s.resume(at(5), &reading(900.0, 3, 2), TICK);
        assert_eq!((s.replicas, s.ready(at(5)), s.ready(at(10))), (3, 2, 3));
        // 2 of 4 running pods sampled, 900m between them: 1800m implied for
        // all four, spread over PAS's 3 (ready at 10 s); 2 of them sampled.
        let o = s.observed(at(10), &reading(900.0, 4, 4), 2, 4);
        let used: Vec<Option<f64>> = o.pods.iter().map(|p| p.used_millicores).collect();
        assert_eq!(used, [Some(600.0), Some(600.0), None]);
        assert!(o.pods.iter().all(|p| p.ready));
        // None sampled: none has a sample.
        assert!(
            s.observed(at(10), &reading(0.0, 4, 4), 0, 4)
                .pods
                .iter()
                .all(|p| p.used_millicores.is_none())
        );
    }

    #[test]
    fn due_after_the_write_interval() {
        let mut s = Shadow::default();
        assert!(s.due(at(0), Duration::from_secs(60)));
        s.written = Some(at(0));
        assert!(!s.due(at(59), Duration::from_secs(60)));
        assert!(s.due(at(60), Duration::from_secs(60)));
    }
}
