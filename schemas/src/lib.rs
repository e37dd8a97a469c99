//! Message types and names shared by every PAS stage.
//!
//! Every message that crosses NATS is one of the types here: [`CpuSample`],
//! [`Forecast`], [`ScaleDecision`] and [`ModelManifest`]. Each is JSON, carries
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
mod manifest;
mod quantity;
mod sample;
pub mod subjects;
pub mod trace;

pub use decision::{ForecastRef, Outcome, ScaleDecision};
pub use error::{DecodeError, ValidationError};
pub use forecast::{Forecast, ModelRef};
pub use manifest::{ModelManifest, Normalisation, TrainingRange};
pub use quantity::cpu_millicores;
pub use sample::{CpuSample, workload_utilisation};

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde::{Serialize, de::DeserializeOwned};

/// The schema version every message of this build writes and accepts.
pub const SCHEMA_VERSION: u32 = 1;

/// How far ahead of the local clock a timestamp may be before it is refused.
pub const MAX_FUTURE_SKEW: Duration = Duration::hours(24);

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

/// Parses and validates a message from a JSON payload.
pub fn decode<M: Message>(payload: &[u8]) -> Result<M, DecodeError> {
    let msg: M = serde_json::from_slice(payload).map_err(DecodeError::Json)?;
    msg.validate().map_err(DecodeError::Invalid)?;
    Ok(msg)
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

pub(crate) fn check_name(field: &'static str, value: &str) -> Result<(), ValidationError> {
    subjects::token(value).map(|_| ()).map_err(|reason| ValidationError::BadName {
        field,
        value: value.to_owned(),
        reason,
    })
}

pub(crate) fn check_timestamp(field: &'static str, at: DateTime<Utc>) -> Result<(), ValidationError> {
    let earliest = Utc.timestamp_opt(0, 0).single().expect("the epoch exists");
    let latest = Utc::now() + MAX_FUTURE_SKEW;
    if at < earliest || at > latest {
        return Err(ValidationError::Timestamp { field, at });
    }
    Ok(())
}
