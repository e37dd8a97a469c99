use std::path::PathBuf;

/// Errors of the NATS plumbing. [`Error::is_retryable`] tells a transient
/// server or network problem from one that needs an operator.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting is not valid.
    #[error("{0}")]
    Config(String),
    /// A credentials, nkey or TLS file could not be read.
    #[error("cannot read {what} {path}: {source}")]
    File {
        /// Which setting.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No server answered, or the handshake or authentication failed.
    #[error("cannot connect to NATS at {urls}: {source}. {}", connect_hint(source))]
    Connect {
        /// The URLs tried.
        urls: String,
        /// Why.
        #[source]
        source: async_nats::ConnectError,
    },
    /// A definition file under `nats/jetstream/` does not parse.
    #[error("definition {name} is not valid: {source}")]
    Definition {
        /// The file.
        name: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// No consumer definition exists for this stage and stream.
    #[error("no consumer is defined for stage {stage} on stream {stream}")]
    NoConsumer {
        /// The stage.
        stage: String,
        /// The stream.
        stream: String,
    },
    /// A JetStream API call failed.
    #[error("JetStream {action} failed: {source}")]
    JetStream {
        /// What was being done, e.g. `create stream PAS_SAMPLES`.
        action: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An object of the model store was shorter than its metadata says.
    #[error("object {name}: read {read} bytes of {size}")]
    ShortObject {
        /// The object.
        name: String,
        /// Bytes read.
        read: usize,
        /// Bytes its metadata gives.
        size: usize,
    },
    /// A message could not be encoded (it failed validation).
    #[error("cannot publish an invalid message: {0}")]
    Encode(#[source] pas_schemas::DecodeError),
    /// A subject could not be built from a name.
    #[error("cannot build a subject: {0}")]
    Subject(&'static str),
    /// The stage's health endpoint could not start.
    #[error(transparent)]
    Health(#[from] pas_runtime::Error),
}

/// Whether `error` or one of its causes says something was not found (a
/// stream, a bucket, a consumer: what `pas bus init` creates).
pub(crate) fn says_missing(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.to_string().to_ascii_lowercase().contains("not found") {
            return true;
        }
        next = e.source();
    }
    false
}

/// What to do about a failed connection.
fn connect_hint(e: &async_nats::ConnectError) -> &'static str {
    use async_nats::ConnectErrorKind as K;
    match e.kind() {
        K::Authentication | K::AuthorizationViolation => {
            "Check the user and password (--nats-user, PAS_NATS__PASSWORD) or the credentials file (--nats-creds)"
        }
        K::Tls => "Check the TLS settings (nats.tls_*) against the server's certificate",
        _ => {
            "Is a server running there? Start one with `nats-server -js` (or `make demo`, which starts its own), \
             or point at yours with --nats-url (PAS_NATS__URLS)"
        }
    }
}

impl Error {
    /// Whether the error says something is missing (a stream, a bucket, a
    /// consumer: `pas bus init` creates them) rather than that NATS did not
    /// answer.
    pub fn is_missing(&self) -> bool {
        says_missing(self)
    }

    /// A failed JetStream call: what was being done, and the cause.
    pub fn js(action: impl Into<String>, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Error::JetStream {
            action: action.into(),
            source: Box::new(source),
        }
    }

    /// Whether trying again later may succeed (server down, timeout) rather
    /// than needing a change of configuration or input.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Connect { .. } | Error::JetStream { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_is_told_from_no_answer() {
        let missing = Error::js(
            "open stream PAS_SAMPLES",
            std::io::Error::other("stream not found"),
        );
        let down = Error::js("open stream PAS_SAMPLES", std::io::Error::other("timed out"));
        assert!(missing.is_missing());
        assert!(!down.is_missing());
    }
}
