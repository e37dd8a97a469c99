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

/// An error and its causes on one line, each said once: a cause whose text
/// the line already holds (a wrapper that prints its source) is left out.
pub fn report(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !text.is_empty() && !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        next = cause.source();
    }
    line
}

/// What `main` returns: on an error, prints `error: <report>` to stderr
/// (no backtrace: the message says what went wrong and what to do) and
/// exits with status 1.
pub fn exit_code<E: AsRef<dyn std::error::Error + Send + Sync + 'static>>(
    result: Result<(), E>,
) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", report(e.as_ref()));
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot open {0}: {1}")]
    struct Outer(&'static str, #[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("starting the stage")]
    struct Top(#[source] Outer);

    #[test]
    fn each_cause_is_said_once() {
        let e = Top(Outer("a.csv", std::io::Error::other("no such file")));
        // The io error is already in Outer's text; Top's is not.
        assert_eq!(report(&e), "starting the stage: cannot open a.csv: no such file");
    }
}
