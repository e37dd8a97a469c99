//! Layered configuration: defaults, then a file, then `PAS_` environment
//! variables, then command-line flags. Later layers win.
//!
//! Environment variables: `PAS_<KEY>` sets a top-level key, `__` separates
//! nesting levels (`PAS_NATS__URLS=nats://a:4222,nats://b:4222`). Variables
//! whose first key the stage does not have (such as `PAS_CACHE`, used by the
//! set-up script) are left alone, so one environment can serve every stage.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use config::{Config as Layers, Environment, File, FileFormat, Map, Value};
use serde::{Serialize, de::DeserializeOwned};

use crate::Error;

/// Keys whose values are comma-separated lists when given in the environment.
const LIST_KEYS: &[&str] = &["nats.urls", "workload_kinds"];

/// Builds the stage's configuration from its defaults, an optional TOML or
/// JSON file, the `PAS_` variables of `env`, and `overrides` (from flags,
/// as `("nats.urls", value)` pairs).
pub fn load<T>(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    overrides: Vec<(&str, Value)>,
) -> Result<T, Error>
where
    T: DeserializeOwned + Serialize + Default,
{
    let defaults = Layers::try_from(&T::default()).map_err(|e| Error::Config(Box::new(e)))?;
    let known: BTreeSet<String> = serde_json::to_value(T::default())
        .ok()
        .and_then(|v| v.as_object().map(|o| o.keys().cloned().collect()))
        .unwrap_or_default();

    let mut builder = Layers::builder().add_source(defaults);
    if let Some(path) = file {
        let format = match path.extension().and_then(|e| e.to_str()) {
            Some("json") => FileFormat::Json,
            _ => FileFormat::Toml,
        };
        // Read it here to report a missing or broken file by name.
        let text = std::fs::read_to_string(path).map_err(|e| Error::ConfigFile {
            path: path.to_owned(),
            source: Box::new(config::ConfigError::Foreign(Box::new(e))),
        })?;
        Layers::builder()
            .add_source(File::from_str(&text, format))
            .build()
            .map_err(|source| Error::ConfigFile {
                path: path.to_owned(),
                source: Box::new(source),
            })?;
        builder = builder.add_source(File::from_str(&text, format));
    }

    let ours: Map<String, String> = env
        .into_iter()
        .filter(|(k, _)| {
            k.strip_prefix("PAS_")
                .map(|rest| {
                    let first = rest.split("__").next().unwrap_or("").to_ascii_lowercase();
                    known.contains(&first)
                })
                .unwrap_or(false)
        })
        .collect();
    let mut environment = Environment::with_prefix("PAS")
        .prefix_separator("_")
        .separator("__")
        .list_separator(",")
        .try_parsing(true)
        .source(Some(ours));
    for key in LIST_KEYS {
        environment = environment.with_list_parse_key(key);
    }
    builder = builder.add_source(environment);

    for (key, value) in overrides {
        builder = builder
            .set_override(key, value)
            .map_err(|e| Error::Config(Box::new(e)))?;
    }
    builder
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|e| Error::Config(Box::new(e)))
}

/// The configuration as one line of JSON for the start-up log; secrets show
/// as `<redacted>` (see [`crate::Secret`]).
pub fn describe<T: Serialize>(config: &T) -> String {
    serde_json::to_string(config).unwrap_or_else(|e| format!("<unprintable: {e}>"))
}

/// A replica's name as one NATS token (for consumer names and lease
/// holders): the configured name with anything but ASCII letters, digits,
/// `-` and `_` written as `_`, or `<stage>-<random hex>` when none is set.
pub fn replica_id(configured: Option<&str>, stage: &str) -> String {
    match configured {
        Some(name) if !name.is_empty() => name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect(),
        _ => format!("{stage}-{:08x}", fastrand::u32(..)),
    }
}

/// The scaler's default lead time: a pod's default start-up (60 s) plus
/// one tick (5 s). The trainer's and the forecaster's `lead` default to it.
pub const DEFAULT_LEAD: Duration = Duration::from_secs(65);

/// Refuses a forecast horizon that does not reach past the lead time. The
/// scaler plans on the peak over its lead (a pod's start-up plus one tick)
/// from when it decides, and a forecast serves until the next one, a step
/// later: by then its first step is over. So the steps after the first,
/// (`horizon` − 1) × `step`, must reach past the lead.
pub fn check_horizon(what: &str, horizon: usize, step: Duration, lead: Duration) -> Result<(), String> {
    let after_first = step.saturating_mul(u32::try_from(horizon.saturating_sub(1)).unwrap_or(u32::MAX));
    if after_first > lead {
        return Ok(());
    }
    let needed = (lead.as_secs_f64() / step.as_secs_f64().max(1e-9)).floor() as u64 + 2;
    Err(format!(
        "{what} of {horizon} steps × {}s does not reach past the lead time of {}s (the scaler's \
         pod start-up plus one tick): a forecast serves until the next one, a step later, so the \
         {} steps after its first ({}s) must; raise it to at least {needed} steps, lengthen the \
         step, or set lead to the scaler's start-up plus tick",
        step.as_secs_f64(),
        lead.as_secs_f64(),
        horizon.saturating_sub(1),
        after_first.as_secs_f64(),
    ))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde::Deserialize;

    use super::*;
    use crate::Secret;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Nats {
        urls: Vec<String>,
        password: Option<Secret>,
    }

    impl Default for Nats {
        fn default() -> Self {
            Nats {
                urls: vec!["nats://127.0.0.1:4222".into()],
                password: None,
            }
        }
    }

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Cfg {
        #[serde(with = "humantime_serde_shim")]
        interval: Duration,
        buffer_capacity: usize,
        nats: Nats,
    }

    impl Default for Cfg {
        fn default() -> Self {
            Cfg {
                interval: Duration::from_secs(5),
                buffer_capacity: 10,
                nats: Nats::default(),
            }
        }
    }

    /// A minimal humantime-style duration codec, so this test needs no extra crate.
    mod humantime_serde_shim {
        use std::time::Duration;

        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_str(&format!("{}ms", d.as_millis()))
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
            let s = String::deserialize(d)?;
            let ms = s
                .trim_end_matches("ms")
                .parse()
                .map_err(serde::de::Error::custom)?;
            Ok(Duration::from_millis(ms))
        }
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn layers_apply_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("agent.toml");
        std::fs::write(
            &file,
            "buffer_capacity = 20\ninterval = \"2000ms\"\n[nats]\nurls = [\"nats://file:4222\"]\n",
        )
        .unwrap();

        let only_defaults: Cfg = load(None, env(&[]), vec![]).unwrap();
        assert_eq!(only_defaults, Cfg::default());

        let c: Cfg = load(
            Some(&file),
            env(&[
                ("PAS_BUFFER_CAPACITY", "30"),
                ("PAS_NATS__URLS", "nats://a:1,nats://b:2"),
                ("PAS_NATS__PASSWORD", "s3cret"),
                ("PAS_CACHE", "/somewhere"),
                ("HOME", "/root"),
            ]),
            vec![("buffer_capacity", Value::from(40))],
        )
        .unwrap();
        assert_eq!(c.interval, Duration::from_secs(2), "file beats defaults");
        assert_eq!(c.nats.urls, ["nats://a:1", "nats://b:2"], "env beats file");
        assert_eq!(c.buffer_capacity, 40, "flags beat env");
        assert_eq!(c.nats.password.as_ref().unwrap().expose(), "s3cret");
        assert!(!describe(&c).contains("s3cret"));
    }

    #[test]
    fn unknown_keys_and_missing_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, "bufer_capacity = 20\n").unwrap();
        let e = load::<Cfg>(Some(&file), env(&[]), vec![]).unwrap_err();
        assert!(e.to_string().contains("bufer_capacity"), "{e}");

        let e = load::<Cfg>(Some(&dir.path().join("none.toml")), env(&[]), vec![]).unwrap_err();
        assert!(matches!(e, Error::ConfigFile { .. }), "{e}");

        let e = load::<Cfg>(None, env(&[("PAS_BUFFER_CAPACITY", "lots")]), vec![]).unwrap_err();
        assert!(matches!(e, Error::Config(_)), "{e}");
    }

    #[test]
    fn a_horizon_short_of_the_lead_is_refused_naming_both() {
        let five = Duration::from_secs(5);
        let e = check_horizon("horizon", 10, five, Duration::from_secs(65)).unwrap_err();
        assert!(
            e.contains("10 steps × 5s") && e.contains("lead time of 65s"),
            "{e}"
        );
        assert!(e.contains("at least 15 steps"), "{e}");
        // 14 steps: the 13 after the first cover exactly 65 s, not past it.
        assert!(check_horizon("horizon", 14, five, Duration::from_secs(65)).is_err());
        assert!(check_horizon("horizon", 15, five, Duration::from_secs(65)).is_ok());
        assert!(check_horizon("horizon", 10, Duration::from_secs(15), DEFAULT_LEAD).is_ok());
    }
}
