//! The forecast quantity is demand, and the pipeline's one core carries it:
//! a simulated StatefulSet's samples, folded as every stage folds them
//! ([`pas_workloads`]), forecast by the forecaster's own tick
//! ([`pas_forecaster::window`], [`pas_forecaster::forecast`]) and decided on
//! by the scaler's own evaluation ([`pas_scaler::policy::decide`]). No
//! server: these are the pure functions the stages and `pas experiment` run.

use std::time::Duration;

use chrono::{DateTime, Utc};
use pas_forecaster::models::Models;
use pas_scaler::policy::{
    self, Behavior, ForecastView, History, Observed, PodUsage, Policy, RateKind, RatePolicy, Rules, Select,
    Settings, Tuning,
};
use pas_scaler::sim::{PodModel, SimulatedStatefulSet};
use pas_schemas::{Forecast, TrainingRange};
use pas_workloads::{Fold, WorkloadKey, Workloads};

const STEP: i64 = 15;

fn at(s: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
}

fn key() -> WorkloadKey {
    WorkloadKey {
        namespace: "shop".into(),
        workload: "web".into(),
    }
}

/// No stabilisation and no rate limit, so a decision is the rule's own
/// recommendation.
fn free() -> Tuning {
    let rules = Rules {
        stabilization_window: Duration::ZERO,
        select_policy: Select::Max,
        policies: vec![RatePolicy {
            kind: RateKind::Percent,
            value: 10_000,
            period: Duration::from_secs(15),
        }],
    };
    Tuning {
        behavior: Behavior {
            scale_up: rules.clone(),
            scale_down: rules,
        },
        ..Tuning::default()
    }
}

fn settings(policy: Policy, target: f64) -> Settings {
    Settings {
        enabled: true,
        policy,
        min_replicas: 1,
        max_replicas: 50,
        target_utilization: target,
        startup: Duration::from_secs(30),
        ..Settings::default()
    }
}

/// A simulated StatefulSet under `demand(t)`, sampled every 5 s and folded
/// into 15 s steps; at each step boundary, the forecaster's tick (naive
/// baseline: no model is served) and the scaler's evaluation on what the
/// pods show. `scale` changes the replicas by hand at a time.
struct Loop {
    sts: SimulatedStatefulSet,
    folded: Workloads,
    sequence: u64,
}

impl Loop {
    fn new(pod: PodModel, replicas: u32) -> Loop {
        Loop::keeping(pod, replicas, 96)
    }

    /// As [`Loop::new`], keeping `history` steps.
    fn keeping(pod: PodModel, replicas: u32, history: usize) -> Loop {
        Loop {
            sts: SimulatedStatefulSet::new(pod, replicas, at(0)),
            folded: Workloads::new(STEP as u32, history, 1),
            sequence: 0,
        }
    }

    /// Samples from `from` to `to` (exclusive) every 5 s.
    fn run(&mut self, from: i64, to: i64, demand: f64) {
        for t in (from..to).step_by(5) {
            for s in self.sts.samples("shop", "web", demand, at(t)) {
                self.sequence += 1;
                assert_eq!(self.folded.fold(&s, self.sequence), Fold::Folded);
            }
        }
    }

    /// The forecaster's tick for the step that closed at `now`.
    fn forecast(&self, now: i64) -> Forecast {
        let (steps, _) = self.folded.series(&key()).unwrap();
        let closed = at(now - STEP);
        let window = pas_forecaster::window(&key(), steps, closed, 3, &Models::default(), None).unwrap();
        let config = pas_forecaster::Config::default();
        let mut made = pas_forecaster::forecast(vec![window], &config.tick_settings(), at(now));
        made.pop().unwrap().1.unwrap()
    }

    /// What the scaler sees of the pods at `now` (the simulated samples).
    fn observed(&self, demand: f64, now: i64) -> Observed {
        self.sts.observed(&self.sts.serve(demand, at(now)), at(now))
    }
}

fn decide(policy: Policy, target: f64, now: i64, observed: &Observed, f: &Forecast) -> policy::Decision {
    policy::decide(
        at(now),
        &settings(policy, target),
        &free(),
        observed,
        Some(ForecastView::from(f)),
        &mut History::default(),
    )
}

/// The case: the replicas of a simulated StatefulSet double while its
/// load is flat. Utilisation halves; demand, the forecast made from it and
/// the predictive recommendation do not move. (On utilisation, the forecast
/// would have halved and the rule would have followed its own action.)
#[test]
fn doubling_the_replicas_under_flat_load_moves_neither_forecast_nor_recommendation() {
    let pod = PodModel {
        startup: Duration::from_secs(30),
        startup_spread: 0.0,
        capacity_millicores: 1000.0,
        request_millicores: 1000.0,
    };
    let demand = 2000.0;
    let mut l = Loop::new(pod, 4);
    l.run(0, 300, demand);
    let before = l.forecast(300);
    let observed_before = l.observed(demand, 300);
    let d_before = decide(Policy::Predictive, 50.0, 300, &observed_before, &before);
    // 4 → 8 by hand; the new pods are ready 30 s later and share the load.
    l.sts.scale(8, at(300));
    l.run(300, 600, demand);
    let after = l.forecast(600);
    let observed_after = l.observed(demand, 600);
    assert_eq!(observed_after.pods.iter().filter(|p| p.ready).count(), 8);
    let used = |o: &Observed| o.pods[0].used_millicores.unwrap();
    assert_eq!(
        (used(&observed_before), used(&observed_after)),
        (500.0, 250.0),
        "utilisation halved"
    );
    assert_eq!(before.values, vec![demand; before.values.len()]);
    assert_eq!(after.values, before.values, "the forecast did not move");
    assert_eq!(after.pod_request_millicores, 1000.0);
    let d_after = decide(Policy::Predictive, 50.0, 600, &observed_after, &after);
    assert_eq!(
        (d_before.replicas, d_before.rule.as_str()),
        (4, "predictive"),
        "{}",
        d_before.reason
    );
    assert_eq!(
        (d_after.replicas, d_after.rule.as_str()),
        (4, "predictive"),
        "{}",
        d_after.reason
    );
    assert_eq!(d_before.predicted_peak, d_after.predicted_peak);
}

/// Saturation is not demand: when the load passes what the pods' limits let
/// them use, the simulated pods report throttling, the folded steps are
/// marked lower bounds, and the scaler treats them as "at least this": it
/// scales out as the HPA does at 100 %, even on a forecast made before the
/// surge that says otherwise.
#[test]
fn a_saturated_workload_is_a_lower_bound_that_scales_out() {
    // Pods request 500m and may use 1000m (their limit).
    let pod = PodModel {
        startup: Duration::from_secs(30),
        startup_spread: 0.0,
        capacity_millicores: 1000.0,
        request_millicores: 500.0,
    };
    let mut l = Loop::new(pod, 4);
    l.run(0, 150, 1400.0);
    let calm = l.forecast(150);
    // The surge: 6000m wanted, 4000m served.
    l.run(150, 300, 6000.0);
    let (steps, _) = l.folded.series(&key()).unwrap();
    let last = steps.values.len() - 1;
    assert!(!steps.saturated[..10].iter().any(|s| *s), "{:?}", steps.saturated);
    assert!(steps.saturated[last], "the surge's steps are lower bounds");
    assert_eq!(
        steps.values[last], 4000.0,
        "what the pods could use, not what they wanted"
    );

    let observed = l.observed(6000.0, 300);
    assert!(observed.pods.iter().all(PodUsage::saturated));
    // The HPA rule: 200 % of requests against 70 % → ceil(4 × 2.86) = 12.
    let hpa = decide(Policy::Hpa, 70.0, 300, &observed, &calm);
    assert_eq!(hpa.replicas, 12, "{}", hpa.reason);
    // The forecast from before the surge asks for 4 (1400m at 70 % of
    // 500m); throttled pods make it at least the HPA's 12.
    let stale_plan = decide(Policy::Predictive, 70.0, 160, &observed, &calm);
    assert_eq!(stale_plan.replicas, 12, "{}", stale_plan.reason);
    assert!(stale_plan.reason.contains("throttled"), "{}", stale_plan.reason);
    // The same forecast on unthrottled pods is taken at its word.
    let mut calm_pods = observed.clone();
    for p in &mut calm_pods.pods {
        p.throttled = Some(0.0);
    }
    assert_eq!(
        decide(Policy::Predictive, 70.0, 160, &calm_pods, &calm).replicas,
        4
    );
}

/// Training treats a saturated step as missing after gap filling: never a
/// target of the loss, never scored. A simulated StatefulSet whose load
/// passes its pods' limits for the last 40 steps reports them throttled;
/// folded, they are the lower bounds the trainer is given, and the backtest
/// scores fewer origins than on the same values unmarked.
#[test]
fn training_leaves_lower_bounds_out_of_the_loss_and_the_score() {
    let n = 400;
    let pod = PodModel {
        startup: Duration::from_secs(30),
        startup_spread: 0.0,
        capacity_millicores: 1000.0,
        request_millicores: 500.0,
    };
    let mut l = Loop::keeping(pod, 4, n);
    for i in 0..n as i64 {
        // A wave within the 4000m the pods may use, then 6000m wanted.
        let demand = if i < n as i64 - 40 {
            2000.0 + 800.0 * (i as f64 * std::f64::consts::TAU / 48.0).sin()
        } else {
            6000.0
        };
        l.run(i * STEP, (i + 1) * STEP, demand);
    }
    let (steps, _) = l.folded.series(&key()).unwrap();
    assert_eq!(steps.values.len(), n);
    let marked = steps.saturated.iter().filter(|s| **s).count();
    assert_eq!(marked, 40, "the surge's steps, and only those, are lower bounds");
    let series = pas_models::Series {
        seasonal: None,
        start: steps.start,
        step_seconds: steps.step_seconds,
        values: steps.values.clone(),
    };
    let mut config = pas_trainer::Config {
        step: Duration::from_secs(STEP as u64),
        ..pas_trainer::Config::default()
    };
    config.model.max_epochs = 2;
    config.model.hidden = 8;
    let range = TrainingRange {
        first_sequence: 1,
        last_sequence: n as u64,
        from: at(0),
        to: at(STEP * (n as i64 - 1)),
    };
    let origins = |lower: &[bool]| {
        let (manifest, _) =
            pas_trainer::train_version(key(), 1, series.clone(), lower, range.clone(), &config).unwrap();
        manifest.validation["origins"]
    };
    let all = origins(&[]);
    let fewer = origins(&steps.saturated);
    assert!(
        fewer < all,
        "{fewer} origins scored with the tail marked, {all} without"
    );
}

/// The trainer calibrates its version on the held-out part of its data, the
/// forecaster turns the point forecast into those quantiles, and the
/// scaler plans on the one the workload's risk asks for: a lower risk, more
/// replicas. The naive baseline carries quantiles from its own errors too.
#[test]
fn calibrated_quantiles_flow_from_the_trainer_to_the_scalers_plan() {
    let n = 600;
    // A daily-like wave with noise the model cannot know.
    let mut x = 7u64;
    let values: Vec<f64> = (0..n)
        .map(|i| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let noise = (x >> 11) as f64 / (1u64 << 53) as f64 * 400.0 - 200.0;
            3000.0 + 1000.0 * (i as f64 * std::f64::consts::TAU / 48.0).sin() + noise
        })
        .collect();
    let step = 300;
    // Recent enough for the messages' clock checks.
    let t0 = (Utc::now().timestamp() / 300 - n as i64) * 300;
    let at = |s: i64| DateTime::from_timestamp(t0 + s, 0).unwrap();
    let series = pas_models::Series {
        seasonal: None,
        start: at(0),
        step_seconds: step,
        values: values.clone(),
    };
    let mut config = pas_trainer::Config {
        step: Duration::from_secs(u64::from(step)),
        ..pas_trainer::Config::default()
    };
    config.model.max_epochs = 3;
    config.model.hidden = 8;
    let range = TrainingRange {
        first_sequence: 1,
        last_sequence: n as u64,
        from: at(0),
        to: at(i64::from(step) * (n as i64 - 1)),
    };
    let (mut manifest, weights) =
        pas_trainer::train_version(key(), 1, series.clone(), &[], range, &config).unwrap();
    let calibration = manifest.calibration.clone().expect("the version is calibrated");
    assert_eq!(calibration.levels, pas_schemas::QUANTILE_LEVELS);
    assert!(calibration.origins > 100, "{calibration:?}");
    pas_schemas::Message::validate(&manifest).unwrap();
    let (lo, hi) = (&calibration.offsets[1], &calibration.offsets[4]);
    assert!(
        lo.iter().zip(hi).all(|(a, b)| a <= b),
        "a higher level, a higher offset"
    );
    // Served whether or not it beat naive in this short fit.
    manifest.accepted = true;
    let lead = Duration::from_secs(65);
    let models = Models::default();
    let lstm_config =
        pas_forecaster::models::Served::check(&manifest, u64::from(step), (config.model.window, lead))
            .unwrap();
    models.insert(pas_forecaster::models::Served::build(&manifest, lstm_config, &weights).unwrap());
    let settings_tick = pas_forecaster::TickSettings {
        horizon: 12,
        quantile: 0.9,
        chunk: 64,
        step_seconds: step,
    };
    let window = |model: bool| {
        let window = config.model.window;
        let from = n - window;
        let steps = pas_workloads::Steps {
            start: at(i64::from(step) * from as i64),
            step_seconds: step,
            values: values[from..].to_vec(),
            requests: vec![1000.0; window],
            saturated: vec![false; window],
        };
        let empty = Models::default();
        let end = at(i64::from(step) * (n as i64 - 1));
        pas_forecaster::window(&key(), steps, end, 0, if model { &models } else { &empty }, None).unwrap()
    };
    let now = at(i64::from(step) * n as i64);
    let (_, made) = pas_forecaster::forecast(vec![window(true)], &settings_tick, now)
        .pop()
        .unwrap();
    let f = made.unwrap();
    assert_eq!(f.model.kind, "lstm");
    let quantiles = f.quantiles.clone().expect("the forecast carries quantiles");
    let want = pas_models::calibrated(&f.values, &calibration.levels, &calibration.offsets);
    assert_eq!(quantiles, want);
    assert_eq!(
        f.upper.as_deref(),
        Some(&quantiles[2].values[..]),
        "upper is the calibrated 0.9"
    );
    pas_schemas::Message::validate(&f).unwrap();

    // The scaler plans on the quantile the risk asks for.
    let plan = |risk: f64| {
        let s = Settings {
            risk,
            ..settings(Policy::Predictive, 70.0)
        };
        let observed = Observed {
            replicas: 4,
            pods: (0..4)
                .map(|_| PodUsage {
                    ready: true,
                    used_millicores: Some(700.0),
                    requested_millicores: Some(1000.0),
                    throttled: Some(0.0),
                })
                .collect(),
        };
        let d = policy::decide(
            now,
            &s,
            &free(),
            &observed,
            Some(ForecastView::from(&f)),
            &mut History::default(),
        );
        (d.replicas, d.reason)
    };
    let (cautious, why) = plan(0.01);
    let (bold, _) = plan(0.5);
    assert!(
        cautious > bold,
        "risk 0.01 plans {cautious}, risk 0.5 plans {bold}"
    );
    assert!(why.contains("quantile 0.99"), "{why}");

    // The baseline: quantiles from naive's errors on the window.
    let (_, made) = pas_forecaster::forecast(vec![window(false)], &settings_tick, now)
        .pop()
        .unwrap();
    let f = made.unwrap();
    assert_eq!(f.model.kind, "naive");
    let q = f.quantiles.expect("the baseline carries quantiles");
    assert_eq!(q.len(), pas_schemas::QUANTILE_LEVELS.len());
    assert!(q[4].values[0] > q[0].values[0], "{q:?}");
}

/// The scaler times each scale-out until the ready pods reach the new
/// count, and once it has a few measurements plans over the workload's real
/// start-up (their 90th percentile) instead of the configured one: here
/// pods that take 120 to 180 s, configured as 60 s.
#[test]
fn the_lead_time_is_learned_from_slow_pods() {
    let pod = PodModel {
        startup: Duration::from_secs(150),
        startup_spread: 0.2,
        capacity_millicores: 1000.0,
        request_millicores: 1000.0,
    };
    let s = Settings {
        startup: Duration::from_secs(60),
        ..settings(Policy::Hpa, 50.0)
    };
    let tuning = free();
    let mut sts = SimulatedStatefulSet::new(pod, 1, at(0));
    let mut history = History::default();
    let mut leads = Vec::new();
    // One more core every 10 minutes, for an hour.
    for i in 0..720i64 {
        let now = at(i * 5);
        let demand = 400.0 + 1000.0 * (i / 120) as f64;
        let served = sts.serve(demand, now);
        let observed = sts.observed(&served, now);
        let before = sts.replicas();
        let d = policy::decide(now, &s, &tuning, &observed, None, &mut history);
        leads.push(d.lead.as_secs_f64());
        if d.replicas != before {
            sts.scale(d.replicas, now);
            history.record_scale(now, before, d.replicas, &tuning.behavior);
        }
    }
    assert_eq!(
        leads[0], 65.0,
        "the configured start-up plus a tick until measured"
    );
    let measured = &history.startup.seconds;
    assert!(measured.len() >= 3, "{measured:?}");
    for m in measured {
        assert!(
            (120.0..=185.0).contains(m),
            "a scale-out took {m} s: {measured:?}"
        );
    }
    let last = *leads.last().unwrap();
    assert!(
        (125.0..=190.0).contains(&last),
        "the lead is the measured start-up plus a tick: {last}"
    );
    // The estimate is the nearest-rank 90th percentile of the measurements.
    let mut sorted = measured.clone();
    sorted.sort_by(f64::total_cmp);
    let rank = (sorted.len() as f64 * 0.9).ceil() as usize;
    assert!(
        (last - 5.0 - sorted[rank - 1]).abs() < 1e-6,
        "{last} against {measured:?}"
    );
}
