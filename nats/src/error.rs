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
    #[error("cannot connect to NATS at {urls}: {source}")]
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

impl Error {
    pub(crate) fn js(
        action: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
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
