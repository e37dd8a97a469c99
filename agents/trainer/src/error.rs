/// Why a stage (the trainer, the forecaster) stopped or could not do something.
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
    /// A model could not be built or saved.
    #[error(transparent)]
    Model(#[from] pas_models::Error),
}

impl Error {
    /// A failed JetStream request: what was being done, and the cause.
    pub fn js(what: &'static str, source: impl std::error::Error + Send + Sync + 'static) -> Error {
        Error::JetStream {
            what,
            source: Box::new(source),
        }
    }
}
