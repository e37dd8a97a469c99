//! What each message becomes in InfluxDB: pure functions, no I/O.
//!
//! | measurement | tags | fields | time |
//! |---|---|---|---|
//! | `cpu_usage_current` | `level=pod`, `run`, `namespace`, `workload`, `pod`, `node` | `value` (utilisation %, when the pod requests CPU), `used_millicores`, `requested_millicores`, `throttled` (share of the interval, where known) | the sample's |
//! | `cpu_usage_current` | `level=workload`, `run`, `namespace`, `workload` | `demand_cores` (the sum of the pods' use), `requested_cores`, `value` (utilisation %), `used_millicores`, `requested_millicores`, `pods`, `throttled` (the most throttled pod's share) | start of the step |
//! | `cpu_usage_current` | `level=node`, `run`, `node` | `used_millicores`, `capacity_millicores`, `value` (% of capacity) | the sample's |
//! | `cpu_usage_predicted` | `run`, `namespace`, `workload`, `horizon`, `model_kind`, `model_version` | `value` (demand, cores), `upper` (cores, when the model gives it), `pod_request_cores` | the step predicted for |
//! | `scale_decision` | `run`, `namespace`, `workload`, `policy`, `rule`, `outcome` | `replicas_before`, `replicas_after`, `applied`, `reason`, `utilization_percent`, `predicted_peak_cores`, `target_utilization_percent`, `model` | the decision's |
//!
//! A workload's point for a step comes from the pipeline's one folding of
//! samples into steps ([`pas_workloads`], which the trainer and the
//! forecaster use too): its demand, the sum of its pods' mean use, on the
//! same step grid the forecaster predicts on, so actual and predicted demand
//! of a step share a timestamp and a unit (cores). It is written again,
//! whole, whenever a sample of its step arrives.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use pas_schemas::{CpuSample, Forecast, Outcome, ScaleDecision};

/// Measurement of measured CPU (as in the older system).
pub const CURRENT: &str = "cpu_usage_current";
/// Measurement of predicted CPU (as in the older system).
pub const PREDICTED: &str = "cpu_usage_predicted";
/// Measurement of scale decisions.
pub const DECISION: &str = "scale_decision";

/// Every measurement the recorder writes, with its tags and its fields:
/// all a dashboard can query (the dashboard's test checks its queries
/// against this).
pub const SCHEMA: [(&str, &[&str], &[&str]); 3] = [
    (
        CURRENT,
        &["level", "run", "namespace", "workload", "pod", "node"],
        &[
            "value",
            "demand_cores",
            "requested_cores",
            "used_millicores",
            "requested_millicores",
            "capacity_millicores",
            "pods",
            "throttled",
        ],
    ),
    (
        PREDICTED,
        &[
            "run",
            "namespace",
            "workload",
            "horizon",
            "model_kind",
            "model_version",
        ],
        &["value", "upper", "pod_request_cores"],
    ),
    (
        DECISION,
        &["run", "namespace", "workload", "policy", "rule", "outcome"],
        &[
            "replicas_before",
            "replicas_after",
            "applied",
            "reason",
            "utilization_percent",
            "predicted_peak_cores",
            "target_utilization_percent",
            "model",
        ],
    ),
];

/// A field value.
#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    /// A float.
    F64(f64),
    /// An integer.
    I64(i64),
    /// A boolean.
    Bool(bool),
    /// A string.
    Str(String),
}

/// One InfluxDB point.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// The measurement.
    pub measurement: &'static str,
    /// Tags, in the order added.
    pub tags: Vec<(&'static str, String)>,
    /// Fields, in the order added.
    pub fields: Vec<(&'static str, Field)>,
    /// Its time.
    pub time: DateTime<Utc>,
}

impl Point {
    fn new(measurement: &'static str, time: DateTime<Utc>) -> Point {
        Point {
            measurement,
            tags: Vec::new(),
            fields: Vec::new(),
            time,
        }
    }

    fn tag(mut self, key: &'static str, value: impl Into<String>) -> Point {
        self.tags.push((key, value.into()));
        self
    }

    fn field(mut self, key: &'static str, value: Field) -> Point {
        self.fields.push((key, value));
        self
    }

    fn float(self, key: &'static str, value: Option<f64>) -> Point {
        match value {
            Some(v) => self.field(key, Field::F64(v)),
            None => self,
        }
    }

    /// The value of tag `key`.
    pub fn tag_value(&self, key: &str) -> Option<&str> {
        self.tags.iter().find(|(k, _)| *k == key).map(|(_, v)| v.as_str())
    }

    /// The value of field `key`.
    pub fn field_value(&self, key: &str) -> Option<&Field> {
        self.fields.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// Checks what InfluxDB would reject a point for: a time outside its
    /// range (1677-09-21 to 2262-04-11, nanoseconds in an `i64`), a float that
    /// is not finite, no field, an empty tag value, a control character in a
    /// tag. Returns the time in nanoseconds.
    pub fn check(&self) -> Result<i64, String> {
        let nanos = self.time.timestamp_nanos_opt().ok_or_else(|| {
            format!(
                "{}: time {} is outside InfluxDB's range (years 1677 to 2262)",
                self.measurement, self.time
            )
        })?;
        if self.fields.is_empty() {
            return Err(format!("{}: a point needs at least one field", self.measurement));
        }
        for (key, value) in &self.fields {
            if let Field::F64(v) = value
                && !v.is_finite()
            {
                return Err(format!(
                    "{}: field {key} is {v}, InfluxDB takes finite numbers only",
                    self.measurement
                ));
            }
        }
        for (key, value) in &self.tags {
            if value.is_empty() || value.chars().any(char::is_control) {
                return Err(format!(
                    "{}: tag {key}={value:?} is empty or has a control character",
                    self.measurement
                ));
            }
        }
        Ok(nanos)
    }

    /// The point for the `influxdb2` client; call after [`Point::check`].
    pub fn to_data_point(&self) -> Result<influxdb2::models::DataPoint, String> {
        let nanos = self.check()?;
        let mut b = influxdb2::models::DataPoint::builder(self.measurement).timestamp(nanos);
        for (k, v) in &self.tags {
            b = b.tag(*k, v.clone());
        }
        for (k, v) in &self.fields {
            b = match v {
                Field::F64(x) => b.field(*k, *x),
                Field::I64(x) => b.field(*k, *x),
                Field::Bool(x) => b.field(*k, *x),
                Field::Str(x) => b.field(*k, x.clone()),
            };
        }
        b.build().map_err(|e| e.to_string())
    }
}

/// The pod or node point of a sample.
pub fn sample_point(sample: &CpuSample, run: &str) -> Point {
    let point = Point::new(CURRENT, sample.timestamp);
    match (&sample.namespace, &sample.workload, &sample.pod) {
        (Some(namespace), Some(workload), Some(pod)) => {
            let requested = sample.cpu_requested_millicores.filter(|r| *r > 0.0);
            point
                .tag("level", "pod")
                .tag("run", run)
                .tag("namespace", namespace.as_str())
                .tag("workload", workload.as_str())
                .tag("pod", pod.as_str())
                .tag("node", sample.node.as_str())
                .float("value", requested.map(|r| 100.0 * sample.cpu_used_millicores / r))
                .field("used_millicores", Field::F64(sample.cpu_used_millicores))
                .float("requested_millicores", sample.cpu_requested_millicores)
                .float("throttled", sample.cpu_throttled_ratio)
        }
        _ => {
            let capacity = sample.cpu_capacity_millicores.filter(|c| *c > 0.0);
            point
                .tag("level", "node")
                .tag("run", run)
                .tag("node", sample.node.as_str())
                .float("value", capacity.map(|c| 100.0 * sample.cpu_used_millicores / c))
                .field("used_millicores", Field::F64(sample.cpu_used_millicores))
                .float("capacity_millicores", sample.cpu_capacity_millicores)
        }
    }
}

/// One point per predicted step: `values[k]` is for `window_end + (k + 1)`
/// steps, tagged with `horizon = k + 1`; demand in cores.
pub fn forecast_points(forecast: &Forecast, run: &str) -> Vec<Point> {
    let step_nanos = forecast.step_seconds * 1e9;
    forecast
        .values
        .iter()
        .enumerate()
        .map(|(k, value)| {
            let ahead = step_nanos * (k + 1) as f64;
            // Past InfluxDB's range: `check` refuses the point.
            let time = (ahead < i64::MAX as f64)
                .then(|| {
                    forecast
                        .window_end
                        .checked_add_signed(TimeDelta::nanoseconds(ahead as i64))
                })
                .flatten()
                .unwrap_or(DateTime::<Utc>::MAX_UTC);
            Point::new(PREDICTED, time)
                .tag("run", run)
                .tag("namespace", forecast.namespace.as_str())
                .tag("workload", forecast.workload.as_str())
                .tag("horizon", (k + 1).to_string())
                .tag("model_kind", forecast.model.kind.as_str())
                .tag("model_version", forecast.model.version.to_string())
                .field("value", Field::F64(value / 1000.0))
                .float(
                    "upper",
                    forecast.upper.as_ref().and_then(|u| u.get(k)).map(|u| u / 1000.0),
                )
                .field(
                    "pod_request_cores",
                    Field::F64(forecast.pod_request_millicores / 1000.0),
                )
        })
        .collect()
}

/// The `outcome` tag of a decision.
pub fn outcome_name(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Applied => "applied",
        Outcome::DryRun => "dry_run",
        Outcome::Refused => "refused",
        Outcome::Unchanged => "unchanged",
        Outcome::Shadow => "shadow",
    }
}

/// The point of a scale decision.
pub fn decision_point(decision: &ScaleDecision, run: &str) -> Point {
    let point = Point::new(DECISION, decision.timestamp)
        .tag("run", run)
        .tag("namespace", decision.namespace.as_str())
        .tag("workload", decision.workload.as_str())
        .tag("policy", decision.policy.as_str())
        .tag("rule", decision.rule.as_str())
        .tag("outcome", outcome_name(decision.outcome))
        .field("replicas_before", Field::I64(i64::from(decision.replicas_before)))
        .field("replicas_after", Field::I64(i64::from(decision.replicas_after)))
        .field("applied", Field::Bool(decision.outcome == Outcome::Applied))
        .field("reason", Field::Str(decision.reason.clone()))
        .float("utilization_percent", decision.utilization_percent)
        .float(
            "predicted_peak_cores",
            decision.predicted_peak_millicores.map(|m| m / 1000.0),
        )
        .float("target_utilization_percent", decision.target_utilization_percent);
    match &decision.forecast {
        Some(f) => point.field(
            "model",
            Field::Str(format!("{} v{}", f.model.kind, f.model.version)),
        ),
        None => point,
    }
}

/// A workload and the start of one of its steps (Unix seconds).
pub type StepKey = (String, String, i64);

/// Each workload's newest steps, folded by [`pas_workloads::Workloads`]
/// (the trainer's and the forecaster's folding), to write each step's
/// workload point. A step older than `keep_steps` behind its workload's
/// newest has settled; a sample for it gets its pod point only.
#[derive(Debug)]
pub struct Workloads {
    step: i64,
    folded: pas_workloads::Workloads,
}

impl Workloads {
    /// Empty, for steps of `step_seconds`.
    pub fn new(step_seconds: u32, keep_steps: usize) -> Workloads {
        let keep = keep_steps.max(1);
        Workloads {
            step: i64::from(step_seconds.max(1)),
            folded: pas_workloads::Workloads::new(step_seconds.max(1), keep, keep),
        }
    }

    /// Folds a sample in (a redelivered one changes nothing) and says which
    /// step's workload point it changes; `None` for node samples, pods that
    /// request no CPU, and steps already settled.
    pub fn fold(&mut self, sample: &CpuSample) -> Option<StepKey> {
        match self.folded.fold(sample, 0) {
            pas_workloads::Fold::Folded | pas_workloads::Fold::Duplicate => {}
            pas_workloads::Fold::Ignored(_) => return None,
        }
        let (namespace, workload) = (sample.namespace.clone()?, sample.workload.clone()?);
        let start = sample.timestamp.timestamp().div_euclid(self.step) * self.step;
        Some((namespace, workload, start))
    }

    /// The workload point of a step, from every sample of it folded so far.
    pub fn point(&self, key: &StepKey, run: &str) -> Option<Point> {
        let (namespace, workload, start) = key;
        let time = DateTime::from_timestamp(*start, 0)?;
        let workload_key = pas_workloads::WorkloadKey {
            namespace: namespace.clone(),
            workload: workload.clone(),
        };
        let step = self.folded.step(&workload_key, time).filter(|s| s.pods > 0)?;
        Some(
            Point::new(CURRENT, time)
                .tag("level", "workload")
                .tag("run", run)
                .tag("namespace", namespace.as_str())
                .tag("workload", workload.as_str())
                .field("demand_cores", Field::F64(step.demand / 1000.0))
                .field("requested_cores", Field::F64(step.requested / 1000.0))
                .field("value", Field::F64(step.utilisation()))
                .field("used_millicores", Field::F64(step.demand))
                .field("requested_millicores", Field::F64(step.requested))
                .field("pods", Field::I64(i64::from(step.pods)))
                .field("throttled", Field::F64(step.throttled)),
        )
    }

    /// Workloads held.
    pub fn len(&self) -> usize {
        self.folded.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.folded.is_empty()
    }

    /// Forgets workloads without a sample for `idle`.
    pub fn forget_idle(&mut self, idle: Duration) {
        self.folded.forget_silent(idle);
    }
}

#[cfg(test)]
mod tests {
    use pas_schemas::{ForecastRef, ModelRef, SCHEMA_VERSION};

    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(seconds, 0).unwrap()
    }

    fn pod(t: i64, pod: &str, used: f64, requested: Option<f64>) -> CpuSample {
        CpuSample {
            schema_version: SCHEMA_VERSION,
            timestamp: at(t),
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

    /// Every tag and field of `p` is in [`SCHEMA`].
    fn declared(p: &Point) {
        let (_, tags, fields) = SCHEMA
            .iter()
            .find(|(m, _, _)| *m == p.measurement)
            .expect("a declared measurement");
        for (k, _) in &p.tags {
            assert!(tags.contains(k), "{}: tag {k} is not in SCHEMA", p.measurement);
        }
        for (k, _) in &p.fields {
            assert!(
                fields.contains(k),
                "{}: field {k} is not in SCHEMA",
                p.measurement
            );
        }
    }

    fn line(p: &Point) -> String {
        declared(p);
        use influxdb2::models::WriteDataPoint;
        let mut out = Vec::new();
        p.to_data_point().unwrap().write_data_point_to(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn samples_become_pod_and_node_points() {
        let p = sample_point(&pod(1_700_000_001, "web-0", 250.0, Some(500.0)), "live");
        assert_eq!(
            line(&p),
            "cpu_usage_current,level=pod,namespace=shop,node=n1,pod=web-0,run=live,workload=web \
             requested_millicores=500,used_millicores=250,value=50 1700000001000000000\n"
        );
        // No request: no utilisation.
        let p = sample_point(&pod(1_700_000_001, "web-0", 250.0, None), "r1");
        assert_eq!(p.field_value("value"), None);
        assert_eq!(p.tag_value("run"), Some("r1"));
        let node = CpuSample {
            namespace: None,
            workload: None,
            pod: None,
            cpu_capacity_millicores: Some(4000.0),
            cpu_requested_millicores: None,
            ..pod(1_700_000_001, "x", 1000.0, None)
        };
        let p = sample_point(&node, "live");
        declared(&p);
        assert_eq!(p.tag_value("level"), Some("node"));
        assert_eq!(p.tag_value("pod"), None);
        assert_eq!(p.field_value("value"), Some(&Field::F64(25.0)));
    }

    #[test]
    fn a_workload_step_is_the_demand_of_its_pods_and_ignores_redelivery() {
        let mut w = Workloads::new(5, 3);
        // Step [100, 105): web-0 100 then 300 of 500 (mean 200), web-1 300 of 500.
        let key = w.fold(&pod(100, "web-0", 100.0, Some(500.0))).unwrap();
        assert_eq!(key, ("shop".into(), "web".into(), 100));
        w.fold(&pod(102, "web-0", 300.0, Some(500.0)));
        w.fold(&pod(101, "web-1", 300.0, Some(500.0)));
        // A redelivered sample changes nothing.
        w.fold(&pod(101, "web-1", 300.0, Some(500.0)));
        let p = w.point(&key, "live").unwrap();
        declared(&p);
        assert_eq!(p.time, at(100));
        assert_eq!(p.field_value("value"), Some(&Field::F64(50.0)));
        assert_eq!(p.field_value("demand_cores"), Some(&Field::F64(0.5)));
        assert_eq!(p.field_value("requested_cores"), Some(&Field::F64(1.0)));
        assert_eq!(p.field_value("pods"), Some(&Field::I64(2)));
        assert_eq!(p.tag_value("level"), Some("workload"));
        assert_eq!(p.tag_value("pod"), None);
        // Pods without a request and node samples make no workload point.
        assert_eq!(w.fold(&pod(103, "web-2", 1.0, None)), None);
        // Three steps on, step 100 is forgotten: a late sample for it gets no workload point.
        assert!(w.fold(&pod(115, "web-0", 1.0, Some(500.0))).is_some());
        assert_eq!(w.fold(&pod(104, "web-1", 1.0, Some(500.0))), None);
        assert!(w.point(&key, "live").is_none());
        // Still within the kept steps: folded.
        assert!(w.fold(&pod(106, "web-1", 1.0, Some(500.0))).is_some());
    }

    fn forecast(step_seconds: f64) -> Forecast {
        Forecast {
            schema_version: SCHEMA_VERSION,
            timestamp: at(1_700_000_050),
            namespace: "shop".into(),
            workload: "web".into(),
            model: ModelRef {
                key: "shop/web".into(),
                kind: "lstm".into(),
                version: 3,
            },
            window_end: at(1_700_000_040),
            step_seconds,
            pod_request_millicores: 500.0,
            values: vec![400.0, 450.0, 500.0],
            upper: Some(vec![500.0, 550.0, 600.0]),
            quantile: Some(0.9),
            quantiles: None,
        }
    }

    #[test]
    fn each_predicted_value_is_a_point_at_the_step_it_predicts() {
        let points = forecast_points(&forecast(5.0), "live");
        assert_eq!(points.len(), 3);
        for (k, p) in points.iter().enumerate() {
            assert_eq!(p.time, at(1_700_000_040 + 5 * (k as i64 + 1)));
            assert_eq!(p.tag_value("horizon"), Some((k + 1).to_string().as_str()));
            assert!(p.check().is_ok());
        }
        assert_eq!(
            line(&points[1]),
            "cpu_usage_predicted,horizon=2,model_kind=lstm,model_version=3,namespace=shop,run=live,workload=web \
             pod_request_cores=0.5,upper=0.55,value=0.45 1700000050000000000\n"
        );
        // A step so long the points fall past 2262: InfluxDB would reject them.
        let far = forecast_points(&forecast(1e10), "live");
        let reason = far[2].check().unwrap_err();
        assert!(reason.contains("outside InfluxDB's range"), "{reason}");
    }

    #[test]
    fn a_decision_is_one_point_with_its_outcome() {
        let d = ScaleDecision {
            schema_version: SCHEMA_VERSION,
            timestamp: at(1_700_000_060),
            namespace: "shop".into(),
            workload: "web".into(),
            replicas_before: 2,
            replicas_after: 4,
            policy: "hybrid".into(),
            rule: "predictive".into(),
            reason: "peak 90% \"soon\"".into(),
            outcome: Outcome::Applied,
            hpa: None,
            forecast: Some(ForecastRef {
                model: ModelRef {
                    key: "shop/web".into(),
                    kind: "lstm".into(),
                    version: 3,
                },
                window_end: at(1_700_000_040),
            }),
            utilization_percent: Some(70.0),
            predicted_peak_millicores: Some(2500.0),
            lead_seconds: None,
            target_utilization_percent: Some(50.0),
            warnings: vec![],
        };
        let p = decision_point(&d, "live");
        assert_eq!(
            line(&p),
            "scale_decision,namespace=shop,outcome=applied,policy=hybrid,rule=predictive,run=live,workload=web \
             applied=t,model=\"lstm v3\",predicted_peak_cores=2.5,reason=\"peak 90% \\\"soon\\\"\",\
             replicas_after=4i,replicas_before=2i,target_utilization_percent=50,utilization_percent=70 \
             1700000060000000000\n"
        );
        let unchanged = decision_point(
            &ScaleDecision {
                outcome: Outcome::Unchanged,
                forecast: None,
                ..d
            },
            "live",
        );
        assert_eq!(unchanged.field_value("applied"), Some(&Field::Bool(false)));
        assert_eq!(unchanged.tag_value("outcome"), Some("unchanged"));
        assert_eq!(unchanged.field_value("model"), None);
    }

    #[test]
    fn check_refuses_what_influxdb_refuses() {
        let good = sample_point(&pod(1_700_000_001, "web-0", 1.0, Some(2.0)), "live");
        assert!(good.check().is_ok());
        let mut nan = good.clone();
        nan.fields.push(("x", Field::F64(f64::NAN)));
        assert!(nan.check().unwrap_err().contains("finite"));
        let mut empty_tag = good.clone();
        empty_tag.tags.push(("t", String::new()));
        assert!(empty_tag.check().is_err());
        let mut newline = good.clone();
        newline.tags.push(("t", "a\nb".into()));
        assert!(newline.check().is_err());
        let mut no_fields = good;
        no_fields.fields.clear();
        assert!(no_fields.check().is_err());
    }
}
