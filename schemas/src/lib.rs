//! Message types and names shared by every PAS stage.
//!
//! Every message that crosses NATS is one of the types here: [`CpuSample`],
//! [`Forecast`], [`ScaleDecision`], [`ModelManifest`] and [`TrainJob`]. Each is JSON, carries
//! [`SCHEMA_VERSION`] and an RFC 3339 UTC timestamp, and implements
//! [`Message`], which gives it a validation step ([`Message::validate`]) and a
//! de-duplication id for JetStream (`Nats-Msg-Id`).
//!
//! The JSON Schemas under `schemas/json/` are generated from these types by
//! [`json_schemas`]; a test fails when the committed files drift from the code.
//!
//! Names of subjects, streams, consumers and buckets live in [`subjects`]: no
//! other crate spells them as string literals.
//!
//! Start reading at [`CpuSample`] and [`subjects`].

mod decision;
mod error;
mod forecast;
mod job;
mod manifest;
mod quantity;
mod sample;
pub mod subjects;
pub mod trace;

pub use decision::{ForecastRef, Outcome, ScaleDecision};
pub use error::{DecodeError, ValidationError};
pub use forecast::{Forecast, ModelRef, QuantileForecast};
pub use job::TrainJob;
pub use manifest::{Calibration, MAX_MANIFEST_ENTRIES, ModelManifest, Normalisation, TrainingRange};
pub use quantity::cpu_millicores;
pub use sample::{CpuSample, SATURATED_THROTTLED_SHARE};

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde::{Serialize, de::DeserializeOwned};

/// The schema version every message of this build writes and accepts.
pub const SCHEMA_VERSION: u32 = 2;

/// What each schema version changed, newest first (for error messages and
/// the docs).
///
/// - 2: forecasts carry **demand** (millicores, the sum of the pods' use)
///   and the per-pod CPU request they assumed, not utilisation; samples
///   carry the throttled share of their interval; decisions give the
///   predicted peak in millicores.
/// - 1: the first version.
pub const SCHEMA_HISTORY: &str = "2: forecasts of demand in millicores; 1: forecasts of utilisation";

/// How far ahead of the local clock a timestamp may be before it is refused
/// by [`Message::validate`] (a sanity bound; stages admit samples only within
/// their configured clock skew of the time the stream stored them, see
/// [`check_admission`]).
pub const MAX_FUTURE_SKEW: Duration = Duration::hours(24);

/// The most CPU a sample may report, in millicores: 10,000 cores, more than
/// any machine has. A larger value is refused as impossible.
pub const MAX_CPU_MILLICORES: f64 = 1.0e7;

/// The largest value a forecast may carry (a prediction or its upper bound).
/// A larger one is refused, not acted on.
pub const MAX_FORECAST_VALUE: f64 = 1.0e7;

/// The most steps a forecast may predict and a model may take as its window
/// or give as its horizon.
pub const MAX_STEPS: usize = 10_080;

/// The quantile levels PAS calibrates and forecasts: the median, and the
/// levels a workload's risk setting plans on (risk 0.05 → 0.95).
pub const QUANTILE_LEVELS: [f64; 5] = [0.5, 0.8, 0.9, 0.95, 0.99];

/// Most quantile levels a forecast or a calibration may carry.
pub const MAX_QUANTILES: usize = 16;

/// The longest step a forecast or a model may have: one day.
pub const MAX_STEP_SECONDS: f64 = 86_400.0;

/// A message type carried over NATS.
pub trait Message: Serialize + DeserializeOwned + schemars::JsonSchema {
    /// Short name used in file names and logs, e.g. `cpu-sample`.
    const KIND: &'static str;

    /// The message's timestamp.
    fn timestamp(&self) -> DateTime<Utc>;

    /// The message's schema version.
    fn schema_version(&self) -> u32;

    /// An id that is the same for the same logical message, so JetStream
    /// drops a re-publication (`Nats-Msg-Id`).
    fn msg_id(&self) -> String;

    /// Checks the type-specific fields. [`Message::validate`] calls it after the
    /// checks every message shares.
    fn validate_fields(&self) -> Result<(), ValidationError>;

    /// Full validation: known schema version, sane timestamp, then the fields.
    fn validate(&self) -> Result<(), ValidationError> {
        if self.schema_version() != SCHEMA_VERSION {
            return Err(ValidationError::UnknownSchemaVersion {
                found: self.schema_version(),
                supported: SCHEMA_VERSION,
            });
        }
        check_timestamp("timestamp", self.timestamp())?;
        self.validate_fields()
    }
}

/// Parses and validates a message from a JSON payload. A message of another
/// schema version is refused for its version: validation checks it before
/// any field, and one that does not parse is read again for it, so it is
/// not refused for a field that version lacks (nor, where it parses, read
/// with another meaning: a version-1 forecast's utilisation as demand).
pub fn decode<M: Message>(payload: &[u8]) -> Result<M, DecodeError> {
    let msg: M = match serde_json::from_slice(payload) {
        Ok(msg) => msg,
        // Only a message that does not parse is read again, for its version
        // (a message that parses has it checked by `validate`).
        Err(error) => return Err(other_version(payload).unwrap_or(DecodeError::Json(error))),
    };
    msg.validate().map_err(DecodeError::Invalid)?;
    Ok(msg)
}

/// The error for a payload of another schema version, if it is one.
fn other_version(payload: &[u8]) -> Option<DecodeError> {
    #[derive(serde::Deserialize)]
    struct Version {
        schema_version: Option<serde_json::Value>,
    }
    let found = serde_json::from_slice::<Version>(payload)
        .ok()?
        .schema_version?
        .as_u64()?;
    (found != u64::from(SCHEMA_VERSION)).then(|| {
        DecodeError::Invalid(ValidationError::UnknownSchemaVersion {
            found: u32::try_from(found).unwrap_or(u32::MAX),
            supported: SCHEMA_VERSION,
        })
    })
}

/// Serialises a message after validating it, so nothing invalid is published.
pub fn encode<M: Message>(msg: &M) -> Result<Vec<u8>, DecodeError> {
    msg.validate().map_err(DecodeError::Invalid)?;
    serde_json::to_vec(msg).map_err(DecodeError::Json)
}

/// The JSON Schema of every message type, keyed by file name
/// (`<kind>.schema.json`), as committed under `schemas/json/`.
pub fn json_schemas() -> Vec<(String, String)> {
    fn one<M: Message>() -> (String, String) {
        let schema = schemars::schema_for!(M);
        let mut text = serde_json::to_string_pretty(&schema).expect("a schema serialises");
        text.push('\n');
        (format!("{}.schema.json", M::KIND), text)
    }
    vec![
        one::<CpuSample>(),
        one::<Forecast>(),
        one::<ScaleDecision>(),
        one::<ModelManifest>(),
        one::<TrainJob>(),
    ]
}

pub(crate) fn check_finite(field: &'static str, value: f64) -> Result<(), ValidationError> {
    if value.is_finite() {
        Ok(())
    } else {
        Err(ValidationError::NotFinite { field })
    }
}

pub(crate) fn check_non_negative(field: &'static str, value: f64) -> Result<(), ValidationError> {
    check_finite(field, value)?;
    if value < 0.0 {
        return Err(ValidationError::Negative { field, value });
    }
    Ok(())
}

/// A value that must be finite, zero or more, and at most `max`.
pub(crate) fn check_bounded(field: &'static str, value: f64, max: f64) -> Result<(), ValidationError> {
    check_non_negative(field, value)?;
    if value > max {
        return Err(ValidationError::TooLarge { field, value, max });
    }
    Ok(())
}

/// A namespace: a Kubernetes DNS-1123 label.
pub(crate) fn check_namespace(field: &'static str, value: &str) -> Result<(), ValidationError> {
    subjects::dns1123_label(value).map_err(|reason| ValidationError::BadName {
        field,
        value: value.chars().take(300).collect(),
        reason,
    })
}

/// The name of a node, pod or workload: a Kubernetes DNS-1123 subdomain.
pub(crate) fn check_name(field: &'static str, value: &str) -> Result<(), ValidationError> {
    subjects::dns1123_subdomain(value).map_err(|reason| ValidationError::BadName {
        field,
        value: value.chars().take(300).collect(),
        reason,
    })
}

/// Whether a message dated `at` may be admitted when the stream stored it at
/// `stored`: not more than `max_clock_skew` after (a clock running ahead
/// would otherwise make the newest step lie in the future and every real
/// sample late), and, where `max_age` is given, not more than `max_age`
/// before (a clock reset to 1970). Stages check this at their door, against
/// the server's clock rather than their own, so a backlog read late is not
/// refused for waiting in the stream.
pub fn check_admission(
    at: DateTime<Utc>,
    stored: DateTime<Utc>,
    max_clock_skew: std::time::Duration,
    max_age: Option<std::time::Duration>,
) -> Result<(), ValidationError> {
    let skew = Duration::from_std(max_clock_skew).unwrap_or(Duration::MAX);
    // No bound past the end of time: a huge skew admits every future date.
    if stored.checked_add_signed(skew).is_some_and(|latest| at > latest) {
        return Err(ValidationError::Admission {
            at,
            stored,
            reason: format!("more than {} ahead of the server's clock", humanize(skew)),
        });
    }
    if let Some(age) = max_age {
        let age = Duration::from_std(age).unwrap_or(Duration::MAX);
        if stored.signed_duration_since(at) > age {
            return Err(ValidationError::Admission {
                at,
                stored,
                reason: format!("more than {} older than the server's clock", humanize(age)),
            });
        }
    }
    Ok(())
}

fn humanize(d: Duration) -> String {
    let s = d.num_seconds();
    match s {
        s if s % 3600 == 0 && s > 0 => format!("{} h", s / 3600),
        s if s % 60 == 0 && s > 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

pub(crate) fn check_timestamp(field: &'static str, at: DateTime<Utc>) -> Result<(), ValidationError> {
    let earliest = Utc.timestamp_opt(0, 0).single().expect("the epoch exists");
    let latest = Utc::now() + MAX_FUTURE_SKEW;
    if at < earliest || at > latest {
        return Err(ValidationError::Timestamp { field, at });
    }
    Ok(())
}
