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
    // Pods start in 45 to 75 s; every policy also runs at 60 % and 80 %.
    let mut config = Config {
        shape: Shape::Step,
        targets: vec![80.0, 60.0],
        ..Config::default()
    };
    config.pod.startup_spread = 0.25;
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

    // Every policy at every target: a curve each, compared with the HPA at 70 %.
    assert_eq!(t.sweep.len(), 15);
    let targets: Vec<f64> = t.sweep.iter().step_by(5).map(|s| s.target_utilization).collect();
    assert_eq!(targets, [60.0, 70.0, 80.0]);
    for c in [&t.curves, &report.curves] {
        assert_eq!(c.policies.len(), 5);
        assert!(c.policies.iter().all(|p| p.points.len() == 3));
        assert_eq!(c.hpa, Some((hpa.replica_hours, hpa.violation_seconds / 3600.0)));
        let hpa_curve = c.policy("hpa").unwrap();
        assert_eq!(hpa_curve.against_hpa.violation_vs_hpa, Some(1.0));
    }
    let hpa_points = &t.curves.policy("hpa").unwrap().points;
    assert!(
        hpa_points[0].replica_hours > hpa_points[2].replica_hours,
        "a lower target costs more: {hpa_points:?}"
    );
    for s in &t.sweep {
        let slack = s.slack.unwrap();
        assert!((0.0..1.0).contains(&slack), "{s:?}");
        assert!(s.used_core_seconds <= s.ready_core_seconds + 1e-6);
    }
    // A 14-day trace: well within the minute the issue allows.
    assert!(
        t.simulation_seconds < 60.0,
        "simulation took {} s",
        t.simulation_seconds
    );

    let dir = tempfile::tempdir().unwrap();
    let written = pas_experiment::write_report(&report, dir.path()).unwrap();
    // Per trace: its busiest day, the whole span, the forecast; the
    // summary and the curves.
    assert_eq!(written.len(), 12);
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
    let pareto = std::fs::read_to_string(dir.path().join("pareto.svg")).unwrap();
    assert!(pareto.contains("hybrid") && pareto.contains("replica-hours"));
    assert!(
        std::fs::read(dir.path().join("pareto.png"))
            .unwrap()
            .starts_with(b"\x89PNG")
    );
    assert!(!t.forecast.at.is_empty() && t.forecast.forecast.len() == t.forecast.actual.len());
    let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    assert!(
        md.contains("| hybrid |")
            && md.contains("| oracle |")
            && md.contains(&format!("![{0}, busiest day]({0}.svg)", t.trace))
            && md.contains(&format!("![{0}, forecast]({0}.forecast.svg)", t.trace))
            && md.contains(&format!("({0}.full.svg)", t.trace))
            && md.contains("## Cost against violation")
            && md.contains("![cost against violation](pareto.svg)")
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("results.json")).unwrap()).unwrap();
    assert_eq!(json["traces"][0]["scores"].as_array().unwrap().len(), 5);
    assert_eq!(json["setup"]["shape"], "step");
    assert_eq!(json["traces"][0]["sweep"].as_array().unwrap().len(), 15);
    // The oracle never violates, so it always reaches the HPA's violation.
    let oracle = &json["curves"]["policies"][4];
    assert_eq!(oracle["policy"], "oracle");
    assert!(
        oracle["against_hpa"]["cost_at_hpa_violation"].is_number(),
        "{oracle}"
    );
}
