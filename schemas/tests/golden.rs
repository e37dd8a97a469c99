//! Golden files: every message type round-trips through its committed JSON
//! fixture, and the committed JSON Schemas match the types.
//!
//! Regenerate the schemas after changing a type with
//! `PAS_BLESS=1 cargo test -p pas-schemas --test golden` (or `make schemas`).

use std::path::{Path, PathBuf};

use pas_schemas::{
    CpuSample, DecodeError, Forecast, Message, ModelManifest, ScaleDecision, TrainJob, ValidationError,
    decode, encode,
};
use serde_json::Value;

fn dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(name)
}

fn round_trip<M: Message + std::fmt::Debug + PartialEq>(fixture: &str) -> M {
    let text = std::fs::read_to_string(dir("fixtures").join(fixture)).unwrap();
    let msg: M = decode(text.as_bytes()).unwrap_or_else(|e| panic!("{fixture}: {e}"));
    let again: Value = serde_json::from_slice(&encode(&msg).unwrap()).unwrap();
    let original: Value = serde_json::from_str(&text).unwrap();
    // Timestamps may be written in another but equal form (…:05Z vs …:05.000Z),
    // so compare after a second decode as well as field by field.
    let reparsed: M = serde_json::from_value(again.clone()).unwrap();
    assert_eq!(reparsed, msg, "{fixture}: decode(encode(x)) != x");
    assert_eq!(
        again.as_object().unwrap().keys().collect::<Vec<_>>(),
        original.as_object().unwrap().keys().collect::<Vec<_>>(),
        "{fixture}: the fields written differ from the fixture's"
    );
    msg
}

#[test]
fn fixtures_round_trip() {
    let node: CpuSample = round_trip("cpu-sample.node.json");
    assert!(!node.is_pod());
    assert_eq!(node.cpu_capacity_millicores, Some(4000.0));
    let pod: CpuSample = round_trip("cpu-sample.pod.json");
    assert_eq!(pod.workload.as_deref(), Some("pas-ss"));
    let f: Forecast = round_trip("forecast.json");
    assert_eq!(f.values.len(), f.upper.as_ref().unwrap().len());
    let d: ScaleDecision = round_trip("scale-decision.json");
    assert_eq!(d.replicas_after, 4);
    let m: ModelManifest = round_trip("model-manifest.json");
    assert!(m.accepted);
    let j: TrainJob = round_trip("train-job.json");
    assert_eq!(j.key(), "shop/web");
    let global = TrainJob {
        namespace: None,
        workload: None,
        ..j.clone()
    };
    assert_eq!(global.key(), "global");
    assert!(global.validate().is_ok());
    let half = TrainJob { workload: None, ..j };
    assert!(half.validate().is_err(), "a namespace without a workload");
}

#[test]
fn committed_json_schemas_match_the_types() {
    let bless = std::env::var_os("PAS_BLESS").is_some();
    let mut drifted = Vec::new();
    for (file, text) in pas_schemas::json_schemas() {
        let path = dir("json").join(&file);
        if bless {
            std::fs::write(&path, &text).unwrap();
            continue;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        if committed != text {
            drifted.push(file);
        }
    }
    assert!(
        drifted.is_empty(),
        "JSON Schemas out of date: {drifted:?}; run `make schemas` and commit schemas/json/"
    );
}

fn sample() -> CpuSample {
    serde_json::from_str(&std::fs::read_to_string(dir("fixtures").join("cpu-sample.pod.json")).unwrap())
        .unwrap()
}

#[test]
fn validation_refuses_bad_values() {
    let mut s = sample();
    s.cpu_used_millicores = -1.0;
    assert!(matches!(
        s.validate(),
        Err(ValidationError::Negative {
            field: "cpu_used_millicores",
            ..
        })
    ));

    let mut s = sample();
    s.cpu_requested_millicores = Some(f64::NAN);
    assert!(matches!(s.validate(), Err(ValidationError::NotFinite { .. })));

    let mut s = sample();
    s.schema_version = 3;
    assert!(matches!(
        s.validate(),
        Err(ValidationError::UnknownSchemaVersion { found: 3, .. })
    ));

    let mut s = sample();
    s.cpu_throttled_ratio = Some(1.5);
    assert!(matches!(
        s.validate(),
        Err(ValidationError::TooLarge {
            field: "cpu_throttled_ratio",
            ..
        })
    ));

    let mut s = sample();
    s.timestamp = chrono::Utc::now() + chrono::Duration::days(3);
    assert!(matches!(s.validate(), Err(ValidationError::Timestamp { .. })));

    let mut s = sample();
    s.workload = None;
    assert!(matches!(s.validate(), Err(ValidationError::Inconsistent { .. })));

    let mut s = sample();
    s.pod = Some("web 0".into());
    assert!(matches!(
        s.validate(),
        Err(ValidationError::BadName { field: "pod", .. })
    ));

    assert!(sample().validate().is_ok());
}

#[test]
fn decode_tells_malformed_from_invalid() {
    let e = decode::<CpuSample>(b"{not json").unwrap_err();
    assert!(matches!(e, DecodeError::Json(_)));
    assert_eq!(e.kind(), "malformed");

    let mut v: Value = serde_json::to_value(sample()).unwrap();
    v["cpu_used_millicores"] = Value::from(-5);
    let e = decode::<CpuSample>(v.to_string().as_bytes()).unwrap_err();
    assert_eq!(e.kind(), "invalid");

    let mut f: Forecast =
        serde_json::from_str(&std::fs::read_to_string(dir("fixtures").join("forecast.json")).unwrap())
            .unwrap();
    f.upper.as_mut().unwrap().pop();
    assert!(matches!(
        f.validate(),
        Err(ValidationError::Inconsistent { field: "upper", .. })
    ));
}

/// A version-1 forecast (utilisation in percent, no per-pod request) is
/// refused for its version, with what changed, not for the field it lacks,
/// and never read as demand.
#[test]
fn a_version_1_forecast_is_refused_for_its_version() {
    let v1 = r#"{"schema_version": 1, "timestamp": "2026-11-23T17:00:06Z", "namespace": "shop",
        "workload": "web", "model": {"key": "shop/web", "kind": "lstm", "version": 7},
        "window_end": "2026-11-23T17:00:05Z", "step_seconds": 5.0, "values": [61.5, 63.0]}"#;
    let e = decode::<Forecast>(v1.as_bytes()).unwrap_err();
    assert!(
        matches!(
            e,
            DecodeError::Invalid(ValidationError::UnknownSchemaVersion {
                found: 1,
                supported: 2
            })
        ),
        "{e}"
    );
    assert_eq!(e.kind(), "invalid");
    let text = e.to_string();
    assert!(
        text.contains("version 1 is not supported") && text.contains("demand"),
        "{text}"
    );
    // The same message at version 2 lacks its request: a field error.
    let v2 = v1.replace("\"schema_version\": 1", "\"schema_version\": 2");
    let e = decode::<Forecast>(v2.as_bytes()).unwrap_err();
    assert!(e.to_string().contains("pod_request_millicores"), "{e}");
}

#[test]
fn msg_ids_are_stable_and_distinct() {
    let a = sample();
    let mut b = a.clone();
    assert_eq!(a.msg_id(), b.msg_id(), "the same sample must dedupe");
    b.timestamp += chrono::Duration::seconds(5);
    assert_ne!(a.msg_id(), b.msg_id());
    let mut c = a.clone();
    c.pod = Some("pas-ss-2".into());
    assert_ne!(a.msg_id(), c.msg_id());
}
