//! Input that parses but is impossible is refused at the door: each case here
//! was reproduced against the running stages (issue 15) before the checks
//! existed.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use pas_schemas::{CpuSample, Forecast, Message, ModelManifest, ValidationError, check_admission};

fn fixture<M: Message>(name: &str) -> M {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn names_kubernetes_would_refuse_are_refused() {
    for (field, bad) in [
        ("namespace", ".."),
        ("namespace", ".a"),
        ("namespace", "b."),
        ("namespace", "Shop"),
        ("namespace", "a.b"),
        ("workload", ".."),
        ("workload", "a..b"),
        ("workload", "web_1"),
        ("pod", "-web"),
        ("node", "worker.2."),
    ] {
        let mut s: CpuSample = fixture("cpu-sample.pod.json");
        match field {
            "namespace" => s.namespace = Some(bad.into()),
            "workload" => s.workload = Some(bad.into()),
            "pod" => s.pod = Some(bad.into()),
            _ => s.node = bad.into(),
        }
        assert!(
            matches!(s.validate(), Err(ValidationError::BadName { field: f, .. }) if f == field),
            "{field} {bad:?}: {:?}",
            s.validate()
        );
        let mut f: Forecast = fixture("forecast.json");
        match field {
            "namespace" => f.namespace = bad.into(),
            "workload" => f.workload = bad.into(),
            _ => continue,
        }
        assert!(f.validate().is_err(), "forecast {field} {bad:?}");
    }
    // Dotted names Kubernetes allows still pass.
    let mut s: CpuSample = fixture("cpu-sample.pod.json");
    s.workload = Some("web.v2".into());
    s.node = "ip-10-0-0-1.eu-west-1.compute.internal".into();
    assert_eq!(s.validate(), Ok(()));
}

#[test]
fn cpu_values_beyond_any_machine_are_refused() {
    for v in [1e308, 1.1e7, f64::INFINITY] {
        let mut s: CpuSample = fixture("cpu-sample.pod.json");
        s.cpu_used_millicores = v;
        assert!(s.validate().is_err(), "used {v}");
        let mut s: CpuSample = fixture("cpu-sample.pod.json");
        s.cpu_requested_millicores = Some(v);
        assert!(s.validate().is_err(), "requested {v}");
    }
    let mut s: CpuSample = fixture("cpu-sample.pod.json");
    s.cpu_used_millicores = 9.9e6;
    assert_eq!(s.validate(), Ok(()));
}

#[test]
fn forecast_values_are_finite_non_negative_bounded_and_few() {
    for v in [1e308, -1e6, -0.5, f64::NAN] {
        let mut f: Forecast = fixture("forecast.json");
        f.values[1] = v;
        assert!(f.validate().is_err(), "value {v}");
        let mut f: Forecast = fixture("forecast.json");
        f.upper.as_mut().unwrap()[0] = v;
        assert!(f.validate().is_err(), "upper {v}");
    }
    let mut f: Forecast = fixture("forecast.json");
    f.values = vec![1.0; pas_schemas::MAX_STEPS + 1];
    f.upper = None;
    assert!(matches!(
        f.validate(),
        Err(ValidationError::Inconsistent { field: "values", .. })
    ));
    let mut f: Forecast = fixture("forecast.json");
    f.step_seconds = 1e12;
    assert!(f.validate().is_err());
}

#[test]
fn manifests_with_impossible_sizes_are_refused() {
    let mut m: ModelManifest = fixture("model-manifest.json");
    m.window = 1_000_000;
    assert!(m.validate().is_err());
    let mut m: ModelManifest = fixture("model-manifest.json");
    m.horizon = u32::MAX;
    assert!(m.validate().is_err());
    let mut m: ModelManifest = fixture("model-manifest.json");
    for i in 0..100 {
        m.hyper_parameters.insert(format!("k{i}"), 1.into());
    }
    assert!(m.validate().is_err());
    let m: ModelManifest = fixture("model-manifest.json");
    assert_eq!(m.validate(), Ok(()));
}

#[test]
fn admission_is_judged_against_the_servers_clock() {
    let stored = Utc::now();
    let skew = Duration::from_secs(30);
    let age = Some(Duration::from_secs(3600));
    // A node whose clock reset to 1970, and one 23 h ahead.
    let epoch = DateTime::from_timestamp(0, 0).unwrap();
    let e = check_admission(epoch, stored, skew, age).unwrap_err();
    assert!(e.to_string().contains("older than the server's clock"), "{e}");
    let e = check_admission(stored + TimeDelta::hours(23), stored, skew, age).unwrap_err();
    assert!(e.to_string().contains("30 s ahead"), "{e}");
    // Within bounds, and a backlog read late: judged by when it was stored.
    assert!(check_admission(stored + TimeDelta::seconds(29), stored, skew, age).is_ok());
    assert!(check_admission(stored - TimeDelta::minutes(59), stored, skew, age).is_ok());
    // A replay publishes old times on purpose: no age bound, still no future.
    assert!(check_admission(epoch, stored, skew, None).is_ok());
    assert!(check_admission(stored + TimeDelta::minutes(1), stored, skew, None).is_err());
}

#[test]
fn quantiles_and_calibrations_that_cannot_be_are_refused() {
    let f: Forecast = fixture("forecast.json");
    assert_eq!(f.validate(), Ok(()));
    type Break = fn(&mut Forecast);
    let cases: [(&str, Break); 4] = [
        ("levels out of order", |f| {
            f.quantiles.as_mut().unwrap().swap(0, 1)
        }),
        ("a level of 1", |f| f.quantiles.as_mut().unwrap()[2].q = 1.0),
        ("a step short", |f| {
            f.quantiles.as_mut().unwrap()[1].values.pop();
        }),
        ("an infinite value", |f| {
            f.quantiles.as_mut().unwrap()[0].values[0] = f64::INFINITY
        }),
    ];
    for (what, break_it) in cases {
        let mut bad = f.clone();
        break_it(&mut bad);
        assert!(
            matches!(
                bad.validate(),
                Err(ValidationError::Inconsistent {
                    field: "quantiles",
                    ..
                } | ValidationError::NotFinite { .. })
            ),
            "{what}: {:?}",
            bad.validate()
        );
    }
    let m: ModelManifest = fixture("model-manifest.json");
    assert_eq!(m.validate(), Ok(()));
    let mut bad = m.clone();
    bad.calibration.as_mut().unwrap().offsets[1].pop();
    assert!(bad.validate().is_err(), "an offset short of the horizon");
    let mut bad = m.clone();
    bad.calibration.as_mut().unwrap().levels = vec![0.9, 0.5];
    assert!(bad.validate().is_err(), "levels out of order");
    let mut bad = m;
    bad.calibration.as_mut().unwrap().offsets[0][3] = f64::NAN;
    assert!(bad.validate().is_err(), "a NaN offset");
}
