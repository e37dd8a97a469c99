//! Stages wait for what `pas bus init` provisions instead of exiting: a
//! stage started before the chart's bus-init job (or before its NATS server
//! is up) logs what it waits for and goes on once it is there.

use std::future::Future;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{PullConsumer, pull};
use async_nats::jetstream::context::ConsumerInfoErrorKind;
use async_nats::jetstream::stream::Stream;
use tokio_util::sync::CancellationToken;

use crate::Error;

/// How long between two attempts at most.
const MAX_DELAY: Duration = Duration::from_secs(10);
/// How often a wait is logged again.
const LOG_EVERY: Duration = Duration::from_secs(30);

/// Calls `open` until it succeeds, waiting longer after each failure (up
/// to 10 s), and logs what it waits for and why (at once, then every 30 s).
/// `None` when `shutdown` comes first.
pub async fn wait_for<T, F, Fut>(
    what: &str,
    shutdown: &CancellationToken,
    mut open: F,
) -> Result<Option<T>, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let mut attempt = 0;
    let mut logged: Option<Instant> = None;
    loop {
        let result = tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            r = open() => r,
        };
        match result {
            Ok(value) => {
                if logged.is_some() {
                    tracing::info!(what, "Found what the stage waited for.");
                }
                return Ok(Some(value));
            }
            Err(error) if error.is_retryable() => {
                if logged.is_none_or(|at| at.elapsed() >= LOG_EVERY) {
                    if error.is_missing() {
                        tracing::warn!(
                            what,
                            error = %error,
                            "Waiting for it: run `pas bus init` as the admin user (the chart's bus-init job does)."
                        );
                    } else {
                        tracing::warn!(
                            what,
                            error = %error,
                            "Waiting for NATS to answer: it is down or unreachable; the stage goes on when it is back."
                        );
                    }
                    logged = Some(Instant::now());
                }
                attempt += 1;
                let delay = crate::reconnect_delay(attempt, MAX_DELAY);
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(None),
                    _ = tokio::time::sleep(delay) => {}
                }
            }
            Err(error) => return Err(error),
        }
    }
}

/// The durable pull consumer `config` names on `stream`. A missing one is
/// created where the user may (a replay run's consumers); a live stage user
/// may not, so it waits for `pas bus init`.
pub async fn durable(stream: &Stream, config: &pull::Config) -> Result<PullConsumer, Error> {
    let name = config.durable_name.clone().unwrap_or_default();
    match stream.consumer_info(&name).await {
        Ok(_) => {
            let consumer = stream.get_consumer(&name).await.map_err(|e| Error::JetStream {
                action: format!("open consumer {name}"),
                source: e,
            })?;
            Ok(consumer)
        }
        Err(error) if error.kind() == ConsumerInfoErrorKind::NotFound => {
            let consumer = stream.create_consumer(config.clone()).await.map_err(|e| {
                Error::js(format!("create consumer {name} (only the admin may create live consumers: run `pas bus init`)"), e)
            })?;
            Ok(consumer)
        }
        Err(error) => Err(Error::js(format!("find consumer {name}"), error)),
    }
}
