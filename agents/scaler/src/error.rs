/// Why the scaler stopped or could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is inconsistent.
    #[error("bad configuration: {0}")]
    Config(String),
    /// NATS could not be reached or refused a request (a JetStream call
    /// included: [`pas_nats::Error::is_retryable`] tells which may pass).
    #[error(transparent)]
    Nats(#[from] pas_nats::Error),
    /// The health endpoint could not start.
    #[error(transparent)]
    Runtime(#[from] pas_runtime::Error),
}

impl Error {
    pub(crate) fn js(what: &'static str, source: impl std::error::Error + Send + Sync + 'static) -> Error {
        Error::Nats(pas_nats::Error::js(what, source))
    }
}
