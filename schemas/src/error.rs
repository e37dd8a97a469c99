use chrono::{DateTime, Utc};

/// Why a message failed validation. Each variant names the offending field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ValidationError {
    /// The message was written by a schema version this build does not know.
    #[error(
        "schema version {found} is not supported (this build reads version {supported}; {history}); upgrade every PAS stage to the same release",
        history = crate::SCHEMA_HISTORY
    )]
    UnknownSchemaVersion {
        /// Version in the message.
        found: u32,
        /// Version this build reads and writes.
        supported: u32,
    },
    /// A timestamp before 1970 or more than a day ahead of the local clock.
    #[error("{field} {at} is before 1970 or more than a day in the future")]
    Timestamp {
        /// The field.
        field: &'static str,
        /// Its value.
        at: DateTime<Utc>,
    },
    /// A number is NaN or infinite.
    #[error("{field} is not a finite number")]
    NotFinite {
        /// The field.
        field: &'static str,
    },
    /// A number that must be zero or more is negative.
    #[error("{field} is negative ({value})")]
    Negative {
        /// The field.
        field: &'static str,
        /// Its value.
        value: f64,
    },
    /// A number above the largest the field may hold.
    #[error("{field} is {value}, above the bound of {max}")]
    TooLarge {
        /// The field.
        field: &'static str,
        /// Its value.
        value: f64,
        /// The bound.
        max: f64,
    },
    /// A message's time too far from when the stream stored it.
    #[error("timestamp {at} is {reason} (stored at {stored})")]
    Admission {
        /// The message's time.
        at: DateTime<Utc>,
        /// When the stream stored it.
        stored: DateTime<Utc>,
        /// How far off, and which bound it broke.
        reason: String,
    },
    /// A name Kubernetes would refuse, so it cannot name a workload.
    #[error("{field} {value:?} is not a usable name: {reason}")]
    BadName {
        /// The field.
        field: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Fields that must be given together, or a value out of its range.
    #[error("{field}: {reason}")]
    Inconsistent {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// Why a payload could not be turned into a message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The payload is not JSON of the expected shape.
    #[error("the payload is not a valid message: {0}")]
    Json(#[source] serde_json::Error),
    /// The payload parsed but its values are not acceptable.
    #[error("the message failed validation: {0}")]
    Invalid(#[source] ValidationError),
}

impl DecodeError {
    /// A short, fixed label for metrics (`error_type`).
    pub fn kind(&self) -> &'static str {
        match self {
            DecodeError::Json(_) => "malformed",
            DecodeError::Invalid(_) => "invalid",
        }
    }
}
