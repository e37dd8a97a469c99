//! Stream limits that follow the fleet (`pas bus init --workloads N`).
//!
//! The definition files' limits (PAS_SAMPLES 4 GiB for 7 days) suit a few
//! hundred workloads: at 10,000 workloads of 3 pods sampled every 5 s,
//! 4 GiB of samples last under half an hour. Given the fleet, each stream
//! that grows with it keeps `retention` of messages:
//!
//! ```text
//! samples   = workloads × pods ÷ sample interval × retention × (340 B + 10 B × name length)
//! forecasts = workloads ÷ forecast interval × retention × (1,820 B + 8 B × name length)
//! decisions = workloads ÷ forecast interval × retention × (620 B + 8 B × name length)
//! ```
//!
//! each at least [`MIN_STREAM_BYTES`], with `max_age` = `retention`. The
//! byte sizes are what JetStream stores per message (payload, subject,
//! the `Nats-Msg-Id` header and its own record); names (namespace,
//! workload, pod, node) appear in the subject, the payload and the
//! message id, so a message grows with their length: 63 characters, the
//! most a Kubernetes namespace has, unless told. A test publishes messages
//! with names of 10 and 63 characters and checks the stream holds no more
//! per message than the formula, and not much less.
//!
//! No stage needs samples older than its own durable state to restart: the
//! forecaster rebuilds its windows (minutes) and reads its 14 days of
//! coarse history from `pas-history`; the scaler keeps its state in
//! `pas-scaler`; the recorder resumes from its durable consumer; the
//! trainer trains on what the stream holds (its models in `pas-models` say
//! what it did). So `retention` must only cover the trainer's
//! `min_history` (3 h at the defaults) with room: 6 h by default, at least 1 h.

use std::time::Duration;

/// Bytes JetStream stores for one pod sample: this plus
/// [`SAMPLE_BYTES_PER_CHAR`] per character of the names (namespace,
/// workload, pod, node). Measured 429 B at 10 characters and 959 B at 63
/// (`integration-tests/tests/sizing.rs`).
pub const SAMPLE_BYTES: u64 = 340;
/// Bytes per character of the names in a stored sample.
pub const SAMPLE_BYTES_PER_CHAR: u64 = 10;
/// Bytes stored for one forecast (10 steps, an upper bound and 5
/// calibrated quantiles, numbers at full precision), plus
/// [`MESSAGE_BYTES_PER_CHAR`] per character of the names: measured 1,890 B
/// at 10 characters and 2,314 B at 63.
pub const FORECAST_BYTES: u64 = 1_820;
/// Bytes stored for one scale decision, plus [`MESSAGE_BYTES_PER_CHAR`] per
/// character of the names: measured 692 B at 10 characters and 1,116 B at 63.
pub const DECISION_BYTES: u64 = 620;
/// Bytes per character of the names in a stored forecast or decision.
pub const MESSAGE_BYTES_PER_CHAR: u64 = 8;
/// The least any sized stream keeps.
pub const MIN_STREAM_BYTES: u64 = 64 << 20;
/// The shortest retention `pas bus init` accepts.
pub const MIN_RETENTION: Duration = Duration::from_secs(3600);

/// The fleet the streams are sized for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fleet {
    /// Workloads PAS scales.
    pub workloads: u64,
    /// Pods per workload, on average.
    pub pods: u64,
    /// How often a node agent samples each pod.
    pub sample_interval: Duration,
    /// How often each workload is forecast and decided (the forecaster's tick).
    pub forecast_interval: Duration,
    /// How long samples, forecasts and decisions are kept.
    pub retention: Duration,
    /// Characters in a namespace, workload, pod or node name, on average
    /// (63, the most, unless told).
    pub name_length: u64,
}

impl Default for Fleet {
    fn default() -> Self {
        Fleet {
            workloads: 1_000,
            pods: 3,
            sample_interval: Duration::from_secs(5),
            forecast_interval: Duration::from_secs(15),
            retention: Duration::from_secs(6 * 3600),
            name_length: 63,
        }
    }
}

/// What one stream keeps for a fleet.
#[derive(Debug, Clone, PartialEq)]
pub struct Reservation {
    /// The stream.
    pub stream: &'static str,
    /// Messages per second the fleet sends it.
    pub per_second: f64,
    /// Its `max_bytes`.
    pub max_bytes: u64,
    /// Its `max_age`.
    pub max_age: Duration,
}

impl Fleet {
    /// Checks the numbers make sense.
    pub fn check(&self) -> Result<(), String> {
        if self.workloads == 0 || self.pods == 0 {
            return Err("workloads and pods per workload must be at least 1".into());
        }
        if self.sample_interval.is_zero() || self.forecast_interval.is_zero() {
            return Err("the sample and forecast intervals must be longer than zero".into());
        }
        if self.retention < MIN_RETENTION {
            return Err(format!(
                "a retention of {} is shorter than {}: the trainer needs its min_history (3 h at the defaults) in the stream",
                humantime_serde::re::humantime::format_duration(self.retention),
                humantime_serde::re::humantime::format_duration(MIN_RETENTION)
            ));
        }
        Ok(())
    }

    /// The limits of the streams that grow with the fleet.
    pub fn reserve(&self) -> Vec<Reservation> {
        use pas_schemas::subjects::{STREAM_DECISIONS, STREAM_FORECASTS, STREAM_SAMPLES};
        let seconds = self.retention.as_secs_f64();
        let one = |stream, per_second: f64, bytes: u64| Reservation {
            stream,
            per_second,
            max_bytes: ((per_second * seconds * bytes as f64).ceil() as u64).max(MIN_STREAM_BYTES),
            max_age: self.retention,
        };
        let workloads = self.workloads as f64;
        let forecasts = workloads / self.forecast_interval.as_secs_f64();
        let [sample, forecast, decision] = self.message_bytes();
        vec![
            one(
                STREAM_SAMPLES,
                workloads * self.pods as f64 / self.sample_interval.as_secs_f64(),
                sample,
            ),
            one(STREAM_FORECASTS, forecasts, forecast),
            one(STREAM_DECISIONS, forecasts, decision),
        ]
    }

    /// Bytes stored per sample, forecast and decision with this fleet's names.
    pub fn message_bytes(&self) -> [u64; 3] {
        let chars = self.name_length;
        [
            SAMPLE_BYTES + SAMPLE_BYTES_PER_CHAR * chars,
            FORECAST_BYTES + MESSAGE_BYTES_PER_CHAR * chars,
            DECISION_BYTES + MESSAGE_BYTES_PER_CHAR * chars,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_thousand_workloads_for_six_hours() {
        let fleet = Fleet {
            workloads: 10_000,
            ..Fleet::default()
        };
        fleet.check().unwrap();
        let r = fleet.reserve();
        // 6,000 samples a second for 21,600 s at 340 + 630 B: 126 GB.
        assert_eq!(r[0].stream, "PAS_SAMPLES");
        assert_eq!(r[0].per_second, 6_000.0);
        assert_eq!(r[0].max_bytes, 6_000 * 21_600 * 970);
        assert_eq!(r[0].max_age, Duration::from_secs(21_600));
        // 667 forecasts a second of 1,820 + 504 B.
        assert_eq!(
            r[1].max_bytes,
            (10_000.0 / 15.0 * 21_600.0 * 2_324.0_f64).ceil() as u64
        );
        // Names of 20 characters: samples of 540 B.
        let short = Fleet {
            name_length: 20,
            ..fleet
        };
        assert_eq!(short.reserve()[0].max_bytes, 6_000 * 21_600 * 540);
        // A small fleet gets the floor, not a few kilobytes.
        let tiny = Fleet {
            workloads: 1,
            pods: 1,
            ..Fleet::default()
        };
        assert!(tiny.reserve().iter().all(|r| r.max_bytes == MIN_STREAM_BYTES));
        assert!(
            Fleet {
                retention: Duration::from_secs(600),
                ..fleet
            }
            .check()
            .is_err()
        );
    }
}
