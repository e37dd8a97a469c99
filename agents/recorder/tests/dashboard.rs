//! The Grafana dashboard (`helm/pas/files/grafana/dashboards/pas.json`, which the chart provisions) is a dashboard
//! Grafana can provision, and every query asks only for what the recorder
//! writes. No Grafana or InfluxDB 2 runs here: the Flux is checked against
//! the recorder's schema ([`pas_recorder::points::SCHEMA`]), not run.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use pas_recorder::points::SCHEMA;
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn dashboard() -> Value {
    let path = repo().join("helm/pas/files/grafana/dashboards/pas.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

/// (where, Flux) of every query: panel targets, variables, annotations.
fn queries(d: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            out.push((
                format!("panel {:?} {}", p["title"], t["refId"]),
                t["query"].as_str().unwrap_or_default().to_owned(),
            ));
        }
    }
    for v in d["templating"]["list"].as_array().unwrap() {
        if v["type"] == "query" {
            out.push((
                format!("variable {}", v["name"]),
                v["query"].as_str().unwrap_or_default().to_owned(),
            ));
        }
    }
    for a in d["annotations"]["list"].as_array().unwrap() {
        if let Some(q) = a["target"]["query"].as_str() {
            out.push((format!("annotation {}", a["name"]), q.to_owned()));
        }
    }
    out
}

/// The quoted names in `r.<key> == "<name>"` comparisons of `flux`.
fn compared(flux: &str, key: &str) -> BTreeSet<String> {
    let needle = format!("r.{key} == \"");
    flux.match_indices(&needle)
        .map(|(i, _)| {
            let rest = &flux[i + needle.len()..];
            rest[..rest.find('"').unwrap()].to_owned()
        })
        .collect()
}

/// Every `r.<identifier>` of `flux`.
fn columns(flux: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in flux.match_indices("r.") {
        if i > 0 && (flux.as_bytes()[i - 1].is_ascii_alphanumeric() || flux.as_bytes()[i - 1] == b'_') {
            continue;
        }
        let ident: String = flux[i + 2..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !ident.is_empty() {
            out.insert(ident);
        }
    }
    out
}

#[test]
fn the_dashboard_is_grafana_dashboard_json() {
    let d = dashboard();
    assert_eq!(d["uid"], "pas-overview");
    assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(
        d["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
        "schemaVersion"
    );
    assert!(
        d.get("id").is_none_or(Value::is_null),
        "a provisioned dashboard has no database id"
    );
    let panels = d["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut cells: BTreeMap<(u64, u64), String> = BTreeMap::new();
    for p in panels {
        let title = p["title"].as_str().expect("every panel has a title").to_owned();
        assert!(
            ids.insert(p["id"].as_u64().expect("numeric panel id")),
            "{title}: duplicate id"
        );
        assert!(
            ["timeseries", "stat"].contains(&p["type"].as_str().unwrap()),
            "{title}: type {}",
            p["type"]
        );
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        let g = &p["gridPos"];
        let (x, y, w, h) = (
            g["x"].as_u64().unwrap(),
            g["y"].as_u64().unwrap(),
            g["w"].as_u64().unwrap(),
            g["h"].as_u64().unwrap(),
        );
        assert!(w > 0 && h > 0 && x + w <= 24, "{title}: gridPos {g}");
        for cx in x..x + w {
            for cy in y..y + h {
                if let Some(other) = cells.insert((cx, cy), title.clone()) {
                    panic!("{title} overlaps {other}");
                }
            }
        }
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        let refs: BTreeSet<&str> = targets.iter().map(|t| t["refId"].as_str().unwrap()).collect();
        assert_eq!(refs.len(), targets.len(), "{title}: refIds repeat");
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}");
        }
    }
    // Variables: each defined once, before the variables that use it, and
    // every ${variable} anywhere is one of them.
    let vars = d["templating"]["list"].as_array().unwrap();
    let mut defined: Vec<String> = Vec::new();
    for v in vars {
        let name = v["name"].as_str().unwrap().to_owned();
        assert!(!defined.contains(&name), "variable {name} twice");
        let text = v.to_string();
        for used in refs(&text) {
            assert!(
                defined.contains(&used) || used == name,
                "variable {name} uses ${{{used}}} before it is defined"
            );
        }
        defined.push(name);
    }
    assert_eq!(vars[0]["type"], "datasource");
    assert_eq!(vars[0]["query"], "influxdb");
    let whole = d.to_string();
    for used in refs(&whole) {
        assert!(defined.contains(&used), "${{{used}}} is not a variable");
    }
    for name in &defined {
        assert!(
            whole.matches(&format!("${{{name}}}")).count() > 0,
            "variable {name} is never used"
        );
    }
}

fn refs(text: &str) -> BTreeSet<String> {
    text.match_indices("${")
        .map(|(i, _)| {
            let rest = &text[i + 2..];
            rest[..rest.find('}').unwrap()].to_owned()
        })
        .collect()
}

#[test]
fn every_query_asks_for_what_the_recorder_writes() {
    let d = dashboard();
    let computed = [
        "_measurement",
        "_field",
        "_value",
        "_time",
        "_value_actual",
        "_value_predicted",
    ];
    for (at, flux) in queries(&d) {
        assert!(!flux.trim().is_empty(), "{at}: empty query");
        for (open, close) in [('(', ')'), ('{', '}'), ('[', ']')] {
            assert_eq!(
                flux.matches(open).count(),
                flux.matches(close).count(),
                "{at}: unbalanced {open}{close}"
            );
        }
        assert_eq!(flux.matches('"').count() % 2, 0, "{at}: unbalanced quotes");
        if flux.contains("from(") {
            assert!(
                flux.contains("range(start: v.timeRangeStart, stop: v.timeRangeStop)"),
                "{at}: every read is bounded by the time picker"
            );
        }
        let measurements = compared(&flux, "_measurement");
        assert!(!measurements.is_empty(), "{at}: names no measurement");
        let mut tags = BTreeSet::new();
        let mut fields = BTreeSet::new();
        for m in &measurements {
            let (_, t, f) = SCHEMA
                .iter()
                .find(|(name, _, _)| name == m)
                .unwrap_or_else(|| panic!("{at}: the recorder writes no {m}"));
            tags.extend(t.iter().map(|s| s.to_string()));
            fields.extend(f.iter().map(|s| s.to_string()));
        }
        for f in compared(&flux, "_field") {
            assert!(fields.contains(&f), "{at}: {measurements:?} have no field {f}");
        }
        for c in columns(&flux) {
            assert!(
                tags.contains(&c) || fields.contains(&c) || computed.contains(&c.as_str()),
                "{at}: r.{c} is neither a tag nor a field of {measurements:?}"
            );
        }
        for level in compared(&flux, "level") {
            assert!(
                ["pod", "workload", "node"].contains(&level.as_str()),
                "{at}: level {level}"
            );
        }
    }
}

#[test]
fn the_panels_show_what_operators_watch() {
    let d = dashboard();
    let panel_queries: Vec<(String, String)> = d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let all: Vec<&str> = p["targets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["query"].as_str().unwrap())
                .collect();
            (p["title"].as_str().unwrap().to_owned(), all.join("\n"))
        })
        .collect();
    let has = |what: &str, test: &dyn Fn(&str) -> bool| {
        assert!(
            panel_queries.iter().any(|(_, q)| test(q)),
            "no panel shows {what}"
        );
    };
    // Forecasts are of demand in cores: the actual they are drawn and
    // compared against is the workload's demand, never its utilisation.
    has("actual and predicted demand together", &|q| {
        q.contains("\"cpu_usage_current\"")
            && q.contains("\"cpu_usage_predicted\"")
            && q.contains("r.level == \"workload\"")
            && q.contains("r._field == \"demand_cores\"")
    });
    has("replicas over time", &|q| q.contains("\"replicas_after\""));
    has("the model version in use", &|q| q.contains("r.model_version"));
    has("forecast error over time", &|q| {
        q.contains("math.abs") && q.contains("join(") && q.contains("r._field == \"demand_cores\"")
    });
    let annotations = d["annotations"]["list"].as_array().unwrap();
    assert!(
        annotations.iter().any(|a| a["target"]["query"]
            .as_str()
            .is_some_and(|q| q.contains("\"scale_decision\""))),
        "decisions are annotations"
    );
    let workload = d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "workload")
        .expect("a workload variable");
    assert_eq!(workload["type"], "query");
    for (title, q) in &panel_queries {
        assert!(
            q.contains("r.workload == \"${workload}\""),
            "{title} ignores the workload variable"
        );
    }
}

#[test]
fn provisioning_points_at_the_dashboard_and_a_flux_data_source() {
    let ds = std::fs::read_to_string(repo().join("helm/pas/files/grafana/provisioning/datasources/pas.yaml"))
        .unwrap();
    for needle in ["type: influxdb", "version: Flux", "defaultBucket:", "token:"] {
        assert!(ds.contains(needle), "datasource provisioning lacks {needle}");
    }
    let dash =
        std::fs::read_to_string(repo().join("helm/pas/files/grafana/provisioning/dashboards/pas.yaml"))
            .unwrap();
    assert!(
        dash.contains("type: file") && dash.contains("path: /var/lib/grafana/dashboards/pas"),
        "{dash}"
    );
}
