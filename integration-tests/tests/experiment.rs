//! `pas experiment` end to end on a bundled trace: the trainer's real
//! training (libtorch), the forecaster's batched inference, the scaler's
//! policies on simulated StatefulSets, the report files.

use pas_experiment::{Config, Progress, Shape};
use pas_integration_tests::repo_root;

#[test]
fn an_experiment_writes_its_report_and_the_oracle_is_never_worse() {
    pas_models::runtime::configure(1, 42).unwrap();
    let trace = repo_root().join("testdata/traces/nab-ec2_cpu_utilization_77c1ca.csv");
    // Held demand: rises come at once, so the reactive HPA does violate.
    let config = Config {
        shape: Shape::Step,
        ..Config::default()
    };
    let mut events = Vec::new();
    let report = pas_experiment::run(&[trace.as_path()], &config, &mut |p| {
        events.push(matches!(p, Progress::Scored { .. }));
    })
    .unwrap();
    assert_eq!(events, [false, true], "training, then scored");

    let t = &report.traces[0];
    let names: Vec<_> = t.scores.iter().map(|s| s.policy.as_str()).collect();
    assert_eq!(names, ["hpa", "threshold", "predictive", "hybrid", "oracle"]);
    let oracle = t.scores.last().unwrap();
    let hpa = &t.scores[0];
    assert!(
        hpa.violation_seconds > 0.0,
        "the trace's bursts catch the HPA out: {hpa:?}"
    );
    for s in &t.scores {
        assert!(
            oracle.violation_seconds <= s.violation_seconds,
            "oracle {oracle:?} against {s:?}"
        );
        assert!(
            oracle.unserved_core_seconds <= s.unserved_core_seconds + 1e-9,
            "oracle {oracle:?} against {s:?}"
        );
        assert!(s.replica_hours > 0.0 && s.mean_replicas >= 1.0);
    }
    // The forecasts were made and used.
    assert!(t.accuracy.forecasts > 0 && t.accuracy.mase.is_some());
    assert!(
        t.scores[2].forecast_decisions > 0,
        "predictive planned on forecasts"
    );
    assert!(t.training_seconds > 0.0 && t.simulation_seconds > 0.0);
    // A 14-day trace: well within the minute the issue allows.
    assert!(
        t.simulation_seconds < 60.0,
        "simulation took {} s",
        t.simulation_seconds
    );

    let dir = tempfile::tempdir().unwrap();
    let written = pas_experiment::write_report(&report, dir.path()).unwrap();
    // Per trace: its busiest day, the whole span, the forecast; and the summary.
    assert_eq!(written.len(), 10);
    let png = std::fs::read(dir.path().join(format!("{}.png", t.trace))).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert!(
        std::fs::read(dir.path().join("summary.png"))
            .unwrap()
            .starts_with(b"\x89PNG")
    );
    let svg = std::fs::read_to_string(dir.path().join(format!("{}.svg", t.trace))).unwrap();
    assert!(
        svg.contains("<svg") && svg.contains("demand"),
        "the SVG has its legend text"
    );
    let forecast = std::fs::read_to_string(dir.path().join(format!("{}.forecast.svg", t.trace))).unwrap();
    assert!(
        forecast.contains("what happened") && forecast.contains("forecast made"),
        "the forecast plot has its legend"
    );
    assert!(!t.forecast.at.is_empty() && t.forecast.forecast.len() == t.forecast.actual.len());
    let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    assert!(
        md.contains("| hybrid |")
            && md.contains("| oracle |")
            && md.contains(&format!("![{0}, busiest day]({0}.svg)", t.trace))
            && md.contains(&format!("![{0}, forecast]({0}.forecast.svg)", t.trace))
            && md.contains(&format!("({0}.full.svg)", t.trace))
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("results.json")).unwrap()).unwrap();
    assert_eq!(json["traces"][0]["scores"].as_array().unwrap().len(), 5);
    assert_eq!(json["setup"]["shape"], "step");
}
