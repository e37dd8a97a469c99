//! The recorder's configuration: where InfluxDB is, batching, retries.

use std::net::SocketAddr;
use std::time::Duration;

use pas_nats::{Admission, NatsConfig};
use pas_runtime::Secret;
use serde::{Deserialize, Serialize};

/// Where the points go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InfluxConfig {
    /// Base URL of InfluxDB 2 (or of a server speaking its write API).
    pub url: String,
    /// Organisation.
    pub org: String,
    /// Bucket.
    pub bucket: String,
    /// API token with write access to the bucket (PAS_INFLUX__TOKEN); never logged.
    pub token: Secret,
}

impl Default for InfluxConfig {
    fn default() -> Self {
        InfluxConfig {
            url: "http://127.0.0.1:8086".into(),
            org: "pas".into(),
            bucket: "pas".into(),
            token: Secret::default(),
        }
    }
}

/// Recorder configuration. Layers: these defaults, then `--config FILE`
/// (TOML or JSON), then `PAS_*` environment variables, then flags.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Record the subjects under `replay.<run>.` instead of the live ones;
    /// every point is tagged `run=<run>` (`run=live` otherwise).
    pub run: Option<String>,
    /// InfluxDB.
    pub influx: InfluxConfig,
    /// Step of the workload points; the forecaster's step, so that actual
    /// and predicted demand of a step share a timestamp.
    #[serde(with = "humantime_serde")]
    pub step: Duration,
    /// Steps behind a workload's newest that its workload point is still
    /// rewritten for when a late sample arrives.
    pub keep_steps: usize,
    /// Most messages per write (per stream).
    pub batch_size: usize,
    /// Longest a message waits for its batch to fill.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// A write that has not answered after this is retried.
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
    /// First wait before retrying a failed write; it doubles, with jitter.
    #[serde(with = "humantime_serde")]
    pub retry_min: Duration,
    /// Longest wait between retries of a failed write.
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// Address of `/healthz`, `/readyz` and `/metrics`.
    pub listen: SocketAddr,
    /// Log one JSON object per line instead of text.
    pub log_json: bool,
    /// The NATS connection.
    pub nats: NatsConfig,
    /// Which message times are admitted, against when the stream stored them.
    pub admission: Admission,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            run: None,
            influx: InfluxConfig::default(),
            step: Duration::from_secs(15),
            keep_steps: 12,
            batch_size: 1000,
            flush_interval: Duration::from_secs(1),
            write_timeout: Duration::from_secs(10),
            retry_min: Duration::from_millis(500),
            retry_max: Duration::from_secs(30),
            listen: SocketAddr::from(([0, 0, 0, 0], 9468)),
            log_json: false,
            nats: NatsConfig::default(),
            admission: Admission::default(),
        }
    }
}

impl Config {
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.step.as_secs() == 0 || self.step.subsec_nanos() != 0 {
            return Err("step must be a whole number of seconds, at least 1s".into());
        }
        if self.batch_size == 0 || self.keep_steps == 0 {
            return Err("batch_size and keep_steps must be at least 1".into());
        }
        if self.flush_interval < Duration::from_millis(10) {
            return Err("flush_interval must be at least 10ms".into());
        }
        if self.retry_min.is_zero() || self.retry_max < self.retry_min {
            return Err("retry_min must be above zero and retry_max at least retry_min".into());
        }
        if self.write_timeout.is_zero() {
            return Err("write_timeout must be above zero".into());
        }
        match url::Url::parse(&self.influx.url) {
            Ok(u) if (u.scheme() == "http" || u.scheme() == "https") && u.host().is_some() => {}
            Ok(_) => {
                return Err(format!(
                    "influx.url {:?} must be an http:// or https:// URL with a host",
                    self.influx.url
                ));
            }
            Err(e) => return Err(format!("influx.url {:?}: {e}", self.influx.url)),
        }
        if self.influx.bucket.is_empty() || self.influx.org.is_empty() {
            return Err("influx.org and influx.bucket must be set".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_settings_are_clear_errors() {
        assert_eq!(Config::default().check(), Ok(()));
        for (url, says) in [
            ("influxdb:8086", "http:// or https://"),
            ("http://exa mple:8086", "influx.url"),
            ("ftp://influxdb", "http:// or https://"),
            ("", "influx.url"),
        ] {
            let c = Config {
                influx: InfluxConfig {
                    url: url.into(),
                    ..InfluxConfig::default()
                },
                ..Config::default()
            };
            let error = c.check().unwrap_err();
            assert!(error.contains(says), "{url:?}: {error}");
        }
        let c = Config {
            step: Duration::from_millis(1500),
            ..Config::default()
        };
        assert!(c.check().unwrap_err().contains("whole number of seconds"));
        let c = Config {
            retry_max: Duration::from_millis(100),
            ..Config::default()
        };
        assert!(c.check().is_err());
        let c = Config {
            batch_size: 0,
            ..Config::default()
        };
        assert!(c.check().is_err());
    }
}
