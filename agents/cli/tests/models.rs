//! `pas models eval` and `pas models train` as a user runs them, on a real
//! NAB trace (testdata/traces, MIT) and a real libtorch.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn trace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/traces/nab-ec2_cpu_utilization_53ea38.csv")
}

fn pas(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pas"))
        .args(args)
        .output()
        .expect("run pas")
}

#[test]
fn eval_prints_a_table_and_writes_json() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("eval.json");
    let trace = trace();
    let out = pas(&[
        "models",
        "eval",
        "--trace",
        trace.to_str().unwrap(),
        "--models",
        "naive,seasonal-naive,holt-winters",
        "--json",
        json.to_str().unwrap(),
        "--threads",
        "1",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let table = String::from_utf8(out.stdout).unwrap();
    for model in ["naive", "seasonal-naive", "holt-winters"] {
        assert!(
            table
                .lines()
                .any(|l| l.contains("nab-ec2_cpu_utilization_53ea38") && l.contains(model)),
            "{table}"
        );
    }
    assert!(table.contains("mean MASE"), "{table}");
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let series = &doc["series"][0];
    assert_eq!(series["step_seconds"], 300);
    let naive = &series["models"][0];
    assert_eq!(naive["model"], "naive");
    assert_eq!(
        naive["rmse_per_step"].as_array().unwrap().len(),
        10,
        "per-step RMSE for each of 10 steps"
    );
    // The overall MAE is the mean of the per-step ones, and MASE scales it.
    let per_step: Vec<f64> = naive["mae_per_step"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let mae = naive["mae"].as_f64().unwrap();
    assert!((per_step.iter().sum::<f64>() / 10.0 - mae).abs() < 1e-9);
    assert!((naive["mase"].as_f64().unwrap() - mae / series["scale"].as_f64().unwrap()).abs() < 1e-9);
    assert!(mae > 0.0);
    assert_eq!(doc["summary"].as_array().unwrap().len(), 3);
}

#[test]
fn train_writes_weights_whose_digest_the_manifest_names() {
    let tmp = tempfile::tempdir().unwrap();
    // A new directory: train refuses an existing one before training.
    let dir = tmp.path().join("model");
    let trace = trace();
    let out = pas(&[
        "models",
        "train",
        "--trace",
        trace.to_str().unwrap(),
        "--out",
        dir.to_str().unwrap(),
        "--epochs",
        "2",
        "--threads",
        "1",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let progress = String::from_utf8(out.stderr).unwrap();
    assert!(
        progress.contains("epoch   1/2") && progress.contains("epoch   2/2"),
        "loss per epoch: {progress}"
    );
    let weights = std::fs::read(dir.join("weights.safetensors")).unwrap();
    let manifest: pas_schemas::ModelManifest =
        pas_schemas::decode(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest.digest, pas_models::digest(&weights));
    assert_eq!(manifest.architecture, "lstm");
    assert_eq!(manifest.horizon, 10);
}

#[test]
fn a_broken_trace_is_refused_with_the_line_named() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.csv");
    std::fs::write(
        &bad,
        "timestamp,cpu\n2014-02-14T14:30:00Z,1.5\n2014-02-14T14:35:00Z,oops\n",
    )
    .unwrap();
    let out = pas(&[
        "models",
        "eval",
        "--trace",
        bad.to_str().unwrap(),
        "--models",
        "naive",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("line 3") && err.contains("oops"), "{err}");
    let out = pas(&[
        "models",
        "eval",
        "--trace",
        bad.to_str().unwrap(),
        "--models",
        "prophet",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("unknown model `prophet`")
    );
}
