/// Why the scaler stopped or could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is inconsistent.
    #[error("bad configuration: {0}")]
    Config(String),
    /// NATS could not be reached or refused a request.
    #[error(transparent)]
    Nats(#[from] pas_nats::Error),
    /// A JetStream request failed; the message says which.
    #[error("JetStream: cannot {what}")]
    JetStream {
        /// What was being done.
        what: &'static str,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The health endpoint could not start.
    #[error(transparent)]
    Runtime(#[from] pas_runtime::Error),
}

impl Error {
    pub(crate) fn js(what: &'static str, source: impl std::error::Error + Send + Sync + 'static) -> Error {
        Error::JetStream {
            what,
            source: Box::new(source),
        }
    }
}
