use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::PullConsumer;
use futures::StreamExt;
use pas_schemas::Message;
use tokio_util::sync::CancellationToken;

use crate::{Admission, DeadLetters, Error};

/// Where a consumed message came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Subject it was published on.
    pub subject: String,
    /// Its sequence in the stream.
    pub stream_sequence: u64,
    /// How often it has been delivered (1 the first time).
    pub delivered: i64,
    /// When the stream stored it, as Unix nanoseconds.
    pub stored_at_unix_nanos: i128,
}

/// What a handler says about a message it could not process.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// A transient failure (a server down): the message is redelivered after
    /// `after`, up to the consumer's `max_deliver`.
    #[error("retry later: {reason}")]
    Retry {
        /// Why.
        reason: String,
        /// Redelivery delay.
        after: Duration,
    },
    /// The message decoded but cannot be used (for example a workload the
    /// stage refuses): it goes to the dead-letter subject and is acked.
    #[error("{reason}")]
    Reject {
        /// Why, for the `Pas-Error` header.
        reason: String,
    },
}

/// Pulls messages from `consumer` until `shutdown`, decodes each as `M`,
/// checks its time against when the stream stored it ([`Admission`]), and
/// hands it to `handle`. Acks a message only after `handle` succeeded (the
/// side effect is done) or after the message was safely on the dead-letter
/// subject; a message that does not decode never stops the stream.
///
/// Returns when `shutdown` is cancelled (after the message in hand is
/// finished) or with an error when the consumer cannot be read.
pub async fn consume<M, F, Fut>(
    consumer: &PullConsumer,
    dead_letters: &DeadLetters,
    admission: &Admission,
    shutdown: CancellationToken,
    mut handle: F,
) -> Result<(), Error>
where
    M: Message,
    F: FnMut(M, Delivery) -> Fut,
    Fut: Future<Output = Result<(), HandlerError>>,
{
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| Error::js("start pulling", e))?;
    loop {
        let next = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return Ok(()),
            next = messages.next() => next,
        };
        let msg = match next {
            None => return Ok(()),
            Some(Err(error)) => {
                // Missed heartbeats and the like: the stream resumes by itself.
                tracing::warn!(%error, "Pulling from JetStream failed; continuing.");
                continue;
            }
            Some(Ok(msg)) => msg,
        };
        let info = match msg.info() {
            Ok(info) => Delivery {
                subject: msg.subject.to_string(),
                stream_sequence: info.stream_sequence,
                delivered: info.delivered,
                stored_at_unix_nanos: info.published.unix_timestamp_nanos(),
            },
            Err(error) => {
                tracing::warn!(%error, subject = %msg.subject, "Message without JetStream metadata; skipping.");
                continue;
            }
        };
        let id = info.stream_sequence.to_string();
        let outcome = match admission.decode::<M>(&msg.payload, info.stored_at_unix_nanos, dead_letters.is_replay()) {
            Err(error) => Err((error.kind(), Box::new(error) as Box<dyn std::error::Error + Send + Sync>)),
            Ok(decoded) => match handle(decoded, info.clone()).await {
                Ok(()) => Ok(()),
                Err(HandlerError::Retry { reason, after }) => {
                    tracing::warn!(subject = %info.subject, reason, delivered = info.delivered, "Handler failed; message will be redelivered.");
                    if let Err(error) = msg.ack_with(AckKind::Nak(Some(after))).await {
                        tracing::warn!(%error, "Negative ack failed; the ack wait will redeliver.");
                    }
                    continue;
                }
                Err(rejected @ HandlerError::Reject { .. }) => Err(("rejected", Box::new(rejected) as _)),
            },
        };
        if let Err((error_type, error)) = outcome
            && let Err(dlq_error) = dead_letters
                .send(&info.subject, msg.payload.clone(), &id, error_type, error.as_ref())
                .await
            {
                // Never ack what is not safely stored elsewhere.
                tracing::warn!(error = %dlq_error, "Dead-letter publish failed; message will be redelivered.");
                let _ = msg.ack_with(AckKind::Nak(Some(Duration::from_secs(1)))).await;
                continue;
            }
        if let Err(error) = msg.ack().await {
            tracing::warn!(%error, subject = %info.subject, "Ack failed; the message may be redelivered (handlers are idempotent).");
        }
    }
}
