//! Recorded load onto the bus and back: `pas replay`, `pas record` and
//! `pas loadgen`.
//!
//! - [`replay`] publishes a trace (CSV of `shared/data/traces`, or JSONL of
//!   our sample messages, or a time range of PAS_SAMPLES) as pod samples of
//!   one workload under `replay.<run>.`, at real time, a speed factor, or as
//!   fast as acks allow. Trace utilisation becomes demand by a stated rule:
//!   `cpu` percent of `pods` pods' worth of CPU. With `simulate`, the demand
//!   goes through a simulated StatefulSet that follows the scaler's applied
//!   decisions, so the samples reflect the replicas (the loop is closed).
//! - [`record`] writes pod samples from the bus (live, or a stream range)
//!   to a trace file, so production load can be replayed later.
//! - [`loadgen`] burns CPU to follow a trace: the example StatefulSet's container.
//! - [`prometheus`] reads per-pod CPU history from a Prometheus server
//!   (`pas import prometheus`), to write as trace files, publish under a
//!   run, or store as the workloads' coarse history.

pub mod loadgen;
pub mod prometheus;
pub mod record;
pub mod replay;

/// Why a replay or a recording failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input: a file, a flag, a name.
    #[error("{0}")]
    Input(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// NATS failed.
    #[error(transparent)]
    Nats(#[from] pas_nats::Error),
}

impl Error {
    pub(crate) fn js(action: impl Into<String>, e: impl std::error::Error + Send + Sync + 'static) -> Error {
        Error::Nats(pas_nats::Error::js(action, e))
    }

    pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
        move |source| Error::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// Subscribes, then makes a round trip through the server (a flush is not
/// one), so the subscription is in place before anything it should see.
pub(crate) async fn subscribe(
    conn: &pas_nats::Connection,
    subject: String,
) -> Result<async_nats::Subscriber, Error> {
    let sub = conn
        .client
        .subscribe(subject.clone())
        .await
        .map_err(|e| Error::js(format!("subscribe to {subject}"), e))?;
    conn.jetstream
        .query_account()
        .await
        .map_err(|e| Error::js("reach the server", e))?;
    Ok(sub)
}
