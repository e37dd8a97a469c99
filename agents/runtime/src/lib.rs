//! What every PAS stage shares, so each stage's `main.rs` stays thin.
//!
//! - [`config::load`]: defaults, then a file, then `PAS_` environment
//!   variables, then command-line flags, into the stage's `Config` struct.
//! - [`telemetry::init`]: tracing to stderr, text or JSON.
//! - [`shutdown::on_signal`]: the first SIGTERM or SIGINT cancels a
//!   [`tokio_util::sync::CancellationToken`] (drain); the second exits at once.
//! - [`health::serve`]: `/healthz`, `/readyz` and `/metrics` (Prometheus text).
//! - [`exit_code`]: what `main` returns; an error said once, with no backtrace.
//! - [`Secret`]: a string that never shows in logs or `Debug` output.

pub mod config;
pub mod health;
pub mod shutdown;
pub mod telemetry;

mod error;
pub use error::{Error, exit_code, report};

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A password, token or key: deserialised like a string, written as
/// `<redacted>` by `Debug` and `Serialize`, so printing a config is safe.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value itself: call only where it is handed to a client.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"<redacted>\"");
        let back: Secret = serde_json::from_str("\"hunter2\"").unwrap();
        assert_eq!(back.expose(), "hunter2");
    }
}
