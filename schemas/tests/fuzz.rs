//! Fuzzing every decoder and validator a message or file goes through:
//! samples, forecasts, decisions, model manifests, trace files, the
//! admission check and the name rules. Property tests (proptest) on random
//! bytes, on the fixtures mutated field by field with the values that broke
//! stages before (1e308, negative, dates in 1970 and 9999, `..`, huge
//! strings and arrays) and on the fixtures' bytes flipped.
//!
//! Each property: nothing panics, and whatever is accepted is what the rest
//! of PAS may rely on (validates again, re-encodes to itself, values finite
//! and inside the bounds, names usable as subject tokens).
//!
//! `make test` runs 256 cases of each; `make fuzz` runs many more
//! (`PROPTEST_CASES`). A failure is shrunk and written to
//! `schemas/tests/fuzz.proptest-regressions`, which is committed and
//! replayed first on every later run: the corpus of what once broke.

use chrono::{DateTime, TimeZone, Utc};
use pas_schemas::subjects::{Prefix, dns1123_label, dns1123_subdomain, token};
use pas_schemas::{
    CpuSample, Forecast, MAX_CPU_MILLICORES, MAX_FORECAST_VALUE, MAX_STEP_SECONDS, MAX_STEPS, Message,
    ModelManifest, ScaleDecision, check_admission, decode, encode, trace,
};
use proptest::prelude::*;
use serde_json::Value;

fn fixture(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

const FIXTURES: [&str; 5] = [
    "cpu-sample.pod.json",
    "cpu-sample.node.json",
    "forecast.json",
    "scale-decision.json",
    "model-manifest.json",
];

/// Values that stopped a stage once, or could.
fn hostile() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        Just(Value::Bool(true)),
        Just(serde_json::json!(1e308)),
        Just(serde_json::json!(-1e308)),
        Just(serde_json::json!(-1.0)),
        Just(serde_json::json!(0)),
        Just(serde_json::json!(u64::MAX)),
        Just(serde_json::json!(i64::MIN)),
        Just(serde_json::json!(1e7 + 1.0)),
        Just(serde_json::json!("NaN")),
        Just(serde_json::json!("")),
        Just(serde_json::json!("..")),
        Just(serde_json::json!(".a")),
        Just(serde_json::json!("b.")),
        Just(serde_json::json!("pas.>")),
        Just(serde_json::json!("*")),
        Just(serde_json::json!("1970-01-01T00:00:00Z")),
        Just(serde_json::json!("9999-12-31T23:59:59Z")),
        Just(serde_json::json!("+262142-12-31T23:59:59Z")),
        Just(Value::String("x".repeat(100_000))),
        Just(Value::Array(vec![serde_json::json!(1.0); MAX_STEPS + 1])),
        Just(Value::Array(vec![serde_json::json!(1e308); 3])),
        Just(serde_json::json!([[[[[[[[[[[[1]]]]]]]]]]]])),
        Just(serde_json::json!({"nested": {"deeper": [1, "two", null]}})),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |f| f.is_finite())
            .prop_map(|f| serde_json::json!(f)),
        any::<i64>().prop_map(|i| serde_json::json!(i)),
        "[a-z0-9.\\-]{0,70}".prop_map(Value::String),
        "\\PC{0,40}".prop_map(Value::String),
    ]
}

/// What to do to one value of a fixture.
#[derive(Debug, Clone)]
enum Mutation {
    Replace(Value),
    Remove,
    Add(String, Value),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => hostile().prop_map(Mutation::Replace),
        1 => Just(Mutation::Remove),
        1 => ("[a-z_]{1,12}", hostile()).prop_map(|(k, v)| Mutation::Add(k, v)),
    ]
}

/// Applies `mutation` at the `pick`-th value of `value` (depth first).
fn mutate(value: &mut Value, pick: &mut usize, mutation: &Mutation) -> bool {
    if *pick == 0 {
        match mutation {
            Mutation::Replace(v) => *value = v.clone(),
            Mutation::Remove => *value = Value::Null,
            Mutation::Add(k, v) => {
                if let Value::Object(map) = value {
                    map.insert(k.clone(), v.clone());
                } else {
                    *value = v.clone();
                }
            }
        }
        return true;
    }
    *pick -= 1;
    match value {
        Value::Object(map) => {
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                if *pick == 0 && matches!(mutation, Mutation::Remove) {
                    map.remove(&key);
                    return true;
                }
                if mutate(map.get_mut(&key).unwrap(), pick, mutation) {
                    return true;
                }
            }
            false
        }
        Value::Array(items) => items.iter_mut().any(|item| mutate(item, pick, mutation)),
        _ => false,
    }
}

/// Whether `name` becomes one subject token (dots become `_`).
fn subject_safe(name: &str) -> bool {
    token(name).is_ok_and(|t| !t.is_empty() && !t.contains(['.', '*', '>', ' ', '\t', '\n', '\r']))
}

/// Decodes `payload` as message type `M`; whatever is accepted must validate
/// again and survive its own encoding unchanged.
fn accepted<M: Message + PartialEq + std::fmt::Debug>(payload: &[u8]) -> Option<M> {
    let msg = decode::<M>(payload).ok()?;
    assert!(msg.validate().is_ok());
    let again = encode(&msg).expect("an accepted message encodes");
    assert_eq!(decode::<M>(&again).expect("its encoding decodes"), msg);
    Some(msg)
}

/// What the stages rely on of anything a decoder accepted.
fn check_everything(payload: &[u8]) {
    if let Some(sample) = accepted::<CpuSample>(payload) {
        for cpu in [
            Some(sample.cpu_used_millicores),
            sample.cpu_requested_millicores,
            sample.cpu_capacity_millicores,
        ]
        .into_iter()
        .flatten()
        {
            assert!(
                cpu.is_finite() && (0.0..=MAX_CPU_MILLICORES).contains(&cpu),
                "{cpu}"
            );
        }
        assert!(subject_safe(&sample.node), "{:?}", sample.node);
        for name in [&sample.namespace, &sample.workload, &sample.pod]
            .into_iter()
            .flatten()
        {
            assert!(subject_safe(name), "{name:?}");
        }
        if let (Some(ns), Some(wl), Some(pod)) = (&sample.namespace, &sample.workload, &sample.pod) {
            Prefix::live()
                .pod_cpu(ns, wl, pod)
                .expect("an accepted sample has a subject");
        }
    }
    if let Some(forecast) = accepted::<Forecast>(payload) {
        assert!(!forecast.values.is_empty() && forecast.values.len() <= MAX_STEPS);
        assert!(forecast.step_seconds > 0.0 && forecast.step_seconds <= MAX_STEP_SECONDS);
        for v in forecast.values.iter().chain(forecast.upper.iter().flatten()) {
            assert!(v.is_finite() && (0.0..=MAX_FORECAST_VALUE).contains(v), "{v}");
        }
        Prefix::live()
            .forecast(&forecast.namespace, &forecast.workload)
            .expect("an accepted forecast has a subject");
    }
    if let Some(decision) = accepted::<ScaleDecision>(payload) {
        Prefix::live()
            .scale(&decision.namespace, &decision.workload)
            .expect("an accepted decision has a subject");
    }
    if let Some(manifest) = accepted::<ModelManifest>(payload) {
        assert!(manifest.validation.len() <= pas_schemas::MAX_MANIFEST_ENTRIES);
    }
}

fn config() -> ProptestConfig {
    // PROPTEST_CASES (make fuzz) overrides the default.
    ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn random_bytes_are_refused_or_sound(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        check_everything(&bytes);
    }

    #[test]
    fn mutated_fixtures_are_refused_or_sound(
        which in 0..FIXTURES.len(),
        edits in proptest::collection::vec((0usize..64, mutation()), 1..4),
    ) {
        let mut value = fixture(FIXTURES[which]);
        for (pick, edit) in &edits {
            let mut pick = *pick;
            mutate(&mut value, &mut pick, edit);
        }
        check_everything(value.to_string().as_bytes());
    }

    #[test]
    fn fixtures_with_bytes_flipped_are_refused_or_sound(
        which in 0..FIXTURES.len(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let mut bytes = fixture(FIXTURES[which]).to_string().into_bytes();
        for (at, byte) in flips {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        check_everything(&bytes);
    }

    #[test]
    fn trace_files_are_refused_or_in_time_order_and_finite(
        rows in proptest::collection::vec((any::<i64>(), hostile()), 0..20),
        header in prop_oneof![Just("timestamp,cpu".to_owned()), "\\PC{0,20}"],
        noise in "\\PC{0,40}",
    ) {
        let mut text = format!("{header}\n");
        for (secs, cpu) in &rows {
            let at = Utc.timestamp_opt(secs % 20_000_000_000, 0).single().map(|t| t.to_rfc3339()).unwrap_or_else(|| secs.to_string());
            let cpu = match cpu { Value::String(s) => s.clone(), other => other.to_string() };
            text.push_str(&format!("{at},{cpu}\n"));
        }
        text.push_str(&noise);
        if let Ok(points) = trace::parse(&text) {
            prop_assert!(points.windows(2).all(|w| w[0].0 < w[1].0));
            prop_assert!(points.iter().all(|(_, v)| v.is_finite()));
        }
    }

    #[test]
    fn admission_never_panics_at_any_time_or_bound(
        at in any::<i64>(),
        stored in any::<i64>(),
        skew in any::<u64>(),
        age in proptest::option::of(any::<u64>()),
    ) {
        let time = |ms: i64| DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or(DateTime::<Utc>::MIN_UTC);
        let (at, stored) = (time(at), time(stored));
        let skew = std::time::Duration::from_millis(skew);
        let age = age.map(std::time::Duration::from_millis);
        let admitted = check_admission(at, stored, skew, age).is_ok();
        // A message dated at the moment the stream stored it is always admitted.
        prop_assert!(check_admission(stored, stored, skew, age).is_ok());
        if admitted {
            prop_assert!(at.signed_duration_since(stored).num_milliseconds() as i128 <= skew.as_millis() as i128);
        }
    }

    #[test]
    fn names_that_pass_the_rules_are_subject_tokens(name in prop_oneof!["\\PC{0,300}", "[a-z0-9.\\-]{0,260}"]) {
        if dns1123_label(&name).is_ok() {
            prop_assert!(subject_safe(&name) && !name.contains('.') && name.len() <= 63, "{name:?}");
        }
        if dns1123_subdomain(&name).is_ok() {
            prop_assert!(name.len() <= 253 && !name.starts_with('.') && !name.ends_with('.') && !name.contains(".."), "{name:?}");
            prop_assert!(token(&name).is_ok(), "{name:?}");
        }
        if let Ok(t) = token(&name) {
            prop_assert!(!t.is_empty() && !t.contains(['.', '*', '>', ' ']), "{t:?}");
        }
    }
}
