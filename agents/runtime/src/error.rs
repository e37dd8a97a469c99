use std::net::SocketAddr;
use std::path::PathBuf;

/// Errors of the shared stage plumbing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration file could not be read or parsed.
    #[error("cannot read the configuration file {path}: {source}")]
    ConfigFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: Box<config::ConfigError>,
    },
    /// The layered configuration does not fit the stage's `Config` type
    /// (an unknown key, a wrong type, a bad duration).
    #[error("invalid configuration: {0}")]
    Config(#[source] Box<config::ConfigError>),
    /// The health and metrics server could not listen.
    #[error("cannot listen on {addr} for /healthz and /metrics: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}
