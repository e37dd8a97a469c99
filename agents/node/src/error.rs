/// Why the agent could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is not usable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// NATS could not be set up.
    #[error(transparent)]
    Nats(#[from] pas_nats::Error),
    /// The health and metrics server could not start.
    #[error(transparent)]
    Runtime(#[from] pas_runtime::Error),
    /// The operating system's CPU counters could not be read.
    #[error("cannot read CPU counters: {0}")]
    System(String),
    /// `kubernetes = "on"` and the Kubernetes API is not reachable.
    #[error("cannot reach the Kubernetes API: {0}")]
    Kube(#[source] Box<kube::Error>),
}
