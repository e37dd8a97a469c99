//! Per-workload settings from the workload's annotations (a StatefulSet's,
//! a Deployment's).
//!
//! | annotation | value | setting |
//! |---|---|---|
//! | `pas.io/enabled` | `true` / `false` | [`Settings::enabled`] |
//! | `pas.io/mode` | `auto`, `act`, `shadow` | [`Settings::mode`] |
//! | `pas.io/policy` | `hpa`, `threshold`, `predictive`, `hybrid` | [`Settings::policy`] |
//! | `pas.io/min-replicas` | integer ≥ 1 | [`Settings::min_replicas`] |
//! | `pas.io/max-replicas` | integer ≥ min | [`Settings::max_replicas`] |
//! | `pas.io/target-utilization` | percent, > 0 (`70`) | [`Settings::target_utilization`] |
//! | `pas.io/startup` | duration (`45s`, `2m`) | [`Settings::startup`] |
//! | `pas.io/learn-startup` | `true` / `false` | [`Settings::learn_startup`] |
//! | `pas.io/risk` | between 0 and 1, exclusive (`0.05`) | [`Settings::risk`] |
//! | `pas.io/dry-run` | `true` / `false` | [`Settings::dry_run`] |
//! | `pas.io/paused` | `true` / `false` | [`Settings::paused`] |
//!
//! A value that does not parse leaves that setting at its default and is
//! reported; so does an unknown `pas.io/` key. Bounds that contradict each
//! other (min above max) fall back to the default bounds.

use std::collections::BTreeMap;

use crate::policy::Settings;

/// The annotation prefix.
pub const PREFIX: &str = "pas.io/";

/// The settings for a workload: `defaults` overridden by its annotations,
/// and one message per annotation that could not be used.
pub fn from_annotations(
    defaults: &Settings,
    annotations: &BTreeMap<String, String>,
) -> (Settings, Vec<String>) {
    let mut s = defaults.clone();
    let mut problems = Vec::new();
    for (key, value) in annotations {
        let Some(name) = key.strip_prefix(PREFIX) else {
            continue;
        };
        let v = value.trim();
        let result: Result<(), String> = match name {
            "enabled" => parse_bool(v).map(|b| s.enabled = b),
            "dry-run" => parse_bool(v).map(|b| s.dry_run = b),
            "paused" => parse_bool(v).map(|b| s.paused = b),
            "learn-startup" => parse_bool(v).map(|b| s.learn_startup = b),
            "policy" => v.parse().map(|p| s.policy = p),
            "mode" => v.parse().map(|m| s.mode = m),
            "min-replicas" => parse_count(v).map(|n| s.min_replicas = n),
            "max-replicas" => parse_count(v).map(|n| s.max_replicas = n),
            "target-utilization" => parse_target(v).map(|t| s.target_utilization = t),
            "startup" => parse_startup(v).map(|d| s.startup = d),
            "risk" => match v.parse::<f64>() {
                Ok(r) if r > 0.0 && r < 1.0 => {
                    s.risk = r;
                    Ok(())
                }
                _ => Err("expected a chance between 0 and 1, such as 0.05".into()),
            },
            _ => Err("unknown setting".into()),
        };
        if let Err(why) = result {
            problems.push(format!("{key}={value:?}: {why}"));
        }
    }
    if s.min_replicas > s.max_replicas {
        problems.push(format!(
            "{PREFIX}min-replicas ({}) is above {PREFIX}max-replicas ({}); using {}..{}",
            s.min_replicas, s.max_replicas, defaults.min_replicas, defaults.max_replicas
        ));
        s.min_replicas = defaults.min_replicas;
        s.max_replicas = defaults.max_replicas;
    }
    (s, problems)
}

/// `pas.io/target-utilization`: a percentage above 0 (`70`, `70%`).
pub fn parse_target(v: &str) -> Result<f64, String> {
    match v.trim().trim_end_matches('%').parse::<f64>() {
        Ok(t) if t > 0.0 && t.is_finite() => Ok(t),
        _ => Err("expected a percentage above 0".into()),
    }
}

/// `pas.io/startup`: a duration of at most an hour (`45s`, `2m`).
pub fn parse_startup(v: &str) -> Result<std::time::Duration, String> {
    match humantime::parse_duration(v.trim()) {
        Ok(d) if d <= std::time::Duration::from_secs(3600) => Ok(d),
        Ok(_) => Err("a start-up of more than an hour is not a pod start-up".into()),
        Err(e) => Err(e.to_string()),
    }
}

fn parse_bool(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" => Ok(true),
        "false" | "no" | "0" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

fn parse_count(v: &str) -> Result<u32, String> {
    match v.parse::<u32>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err("expected a whole number of at least 1".into()),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::policy::{Mode, Policy};

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_annotation_overrides_its_default() {
        let (s, problems) = from_annotations(
            &Settings::default(),
            &annotations(&[
                ("pas.io/enabled", "true"),
                ("pas.io/policy", "predictive"),
                ("pas.io/min-replicas", "2"),
                ("pas.io/max-replicas", "20"),
                ("pas.io/target-utilization", "55%"),
                ("pas.io/startup", "45s"),
                ("pas.io/risk", "0.05"),
                ("pas.io/learn-startup", "false"),
                ("pas.io/dry-run", "yes"),
                ("pas.io/paused", "false"),
                ("pas.io/mode", "shadow"),
                ("app.kubernetes.io/name", "web"),
            ]),
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            s,
            Settings {
                enabled: true,
                mode: Mode::Shadow,
                policy: Policy::Predictive,
                min_replicas: 2,
                max_replicas: 20,
                target_utilization: 55.0,
                startup: Duration::from_secs(45),
                learn_startup: false,
                risk: 0.05,
                dry_run: true,
                paused: false,
            }
        );
    }

    #[test]
    fn bad_values_fall_back_to_the_defaults_and_are_reported() {
        let defaults = Settings::default();
        let (s, problems) = from_annotations(
            &defaults,
            &annotations(&[
                ("pas.io/enabled", "true"),
                ("pas.io/policy", "magic"),
                ("pas.io/target-utilization", "-5"),
                ("pas.io/startup", "soon"),
                ("pas.io/max-replicas", "0"),
                ("pas.io/risk", "1"),
                ("pas.io/colour", "blue"),
            ]),
        );
        assert!(s.enabled);
        assert_eq!(s.risk, defaults.risk);
        assert_eq!(
            (s.policy, s.target_utilization, s.startup, s.max_replicas),
            (
                defaults.policy,
                defaults.target_utilization,
                defaults.startup,
                defaults.max_replicas
            )
        );
        assert_eq!(problems.len(), 6, "{problems:?}");
        assert!(
            problems.iter().any(|p| p.starts_with("pas.io/policy=\"magic\"")),
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p.contains("pas.io/colour") && p.contains("unknown")),
            "{problems:?}"
        );

        let (s, problems) = from_annotations(
            &defaults,
            &annotations(&[("pas.io/min-replicas", "8"), ("pas.io/max-replicas", "4")]),
        );
        assert_eq!(
            (s.min_replicas, s.max_replicas),
            (defaults.min_replicas, defaults.max_replicas)
        );
        assert_eq!(problems.len(), 1, "{problems:?}");
    }
}
