use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::{DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::stream::Stream as JsStream;
use futures::{Stream, StreamExt};
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
    // Short pulls with 2 s heartbeats: when the server holding the
    // consumer's leader dies, the client notices in seconds and pulls from
    // the new leader (the defaults, 30 s pulls and 15 s heartbeats, took
    // half a minute).
    let messages = consumer
        .stream()
        .expires(Duration::from_secs(4))
        .heartbeat(Duration::from_secs(2))
        .messages()
        .await
        .map_err(|e| Error::js("start pulling", e))?;
    consume_messages(messages, true, dead_letters, admission, &shutdown, &mut handle)
        .await
        .map(|_| ())
}

/// Like [`consume`], through a short-lived ordered consumer on `stream`
/// that `config` describes (its policy acks nothing, so a handler's `Retry`
/// only logs): for a stage that needs every message of a subject from a
/// time on without a durable consumer of its own (each forecaster replica).
/// It is named ([`crate::ordered_name`]), so the accounts file can let the
/// user create it without letting it name another stage's consumer. When
/// the consumer goes away (a server restart), a new one carries on after
/// the last message handled.
pub async fn consume_ordered<M, F, Fut>(
    stream: &JsStream,
    mut config: pull::OrderedConfig,
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
    let purpose = config.name.clone().unwrap_or_else(|| "ordered".into());
    loop {
        config.name = Some(crate::ordered_name(&purpose));
        let opened = async {
            let consumer = stream
                .create_consumer(config.clone())
                .await
                .map_err(|e| Error::js("create an ordered consumer", e))?;
            consumer
                .messages()
                .await
                .map_err(|e| Error::js("start reading", e))
        };
        let last = match tokio::select! { _ = shutdown.cancelled() => return Ok(()), o = opened => o } {
            Ok(messages) => {
                consume_messages(messages, false, dead_letters, admission, &shutdown, &mut handle).await?
            }
            Err(error) => {
                tracing::warn!(%error, "Reading the stream failed; trying again.");
                None
            }
        };
        if shutdown.is_cancelled() {
            return Ok(());
        }
        if let Some(sequence) = last {
            config.deliver_policy = DeliverPolicy::ByStartSequence {
                start_sequence: sequence + 1,
            };
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Every pod sample under `prefix` from `from` on, through a short-lived
/// ordered consumer named `name` of this replica's own (a stage that needs
/// them all: each forecaster and trainer replica), into `fold` with its
/// stream sequence, on a task of its own until `stop`. Samples that fail
/// validation or `admission` go to `dead_letters`. Pulls are short (4 s)
/// with a 2 s heartbeat: a consumer lost with its server (an ordered
/// consumer is not replicated) is noticed and recreated in seconds.
pub fn follow_pod_samples(
    stream: JsStream,
    prefix: &pas_schemas::subjects::Prefix,
    name: String,
    from: DeliverPolicy,
    (dead_letters, admission): (DeadLetters, Admission),
    stop: CancellationToken,
    mut fold: impl FnMut(pas_schemas::CpuSample, u64) + Send + 'static,
) -> crate::Consuming {
    let config = pull::OrderedConfig {
        name: Some(name),
        filter_subject: prefix.all_pod_cpu(),
        deliver_policy: from,
        max_expires: Duration::from_secs(4),
        ..pull::OrderedConfig::default()
    };
    crate::Consuming::spawn("samples", async move {
        consume_ordered::<pas_schemas::CpuSample, _, _>(
            &stream,
            config,
            &dead_letters,
            &admission,
            stop,
            |sample, delivery| {
                fold(sample, delivery.stream_sequence);
                async { Ok::<(), HandlerError>(()) }
            },
        )
        .await
    })
}

/// Handles `messages` until `shutdown` or their end; returns the stream
/// sequence of the last message handled.
async fn consume_messages<M, F, Fut, S, E>(
    messages: S,
    acks: bool,
    dead_letters: &DeadLetters,
    admission: &Admission,
    shutdown: &CancellationToken,
    handle: &mut F,
) -> Result<Option<u64>, Error>
where
    M: Message,
    F: FnMut(M, Delivery) -> Fut,
    Fut: Future<Output = Result<(), HandlerError>>,
    S: Stream<Item = Result<async_nats::jetstream::Message, E>>,
    E: std::fmt::Display,
{
    let mut messages = std::pin::pin!(messages);
    let mut last = None;
    loop {
        let next = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return Ok(last),
            next = messages.next() => next,
        };
        let msg = match next {
            None => return Ok(last),
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
        last = Some(info.stream_sequence);
        let id = info.stream_sequence.to_string();
        let outcome = match admission.decode::<M>(
            &msg.payload,
            info.stored_at_unix_nanos,
            dead_letters.is_replay(),
        ) {
            Err(error) => Err((
                error.kind(),
                Box::new(error) as Box<dyn std::error::Error + Send + Sync>,
            )),
            Ok(decoded) => match handle(decoded, info.clone()).await {
                Ok(()) => Ok(()),
                Err(HandlerError::Retry { reason, after }) => {
                    if !acks {
                        tracing::warn!(subject = %info.subject, reason, "Handler failed; an ordered consumer cannot redeliver, so the message is dropped.");
                        continue;
                    }
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
                .send(
                    &info.subject,
                    msg.payload.clone(),
                    &id,
                    error_type,
                    error.as_ref(),
                )
                .await
        {
            // Never ack what is not safely stored elsewhere.
            tracing::warn!(error = %dlq_error, "Dead-letter publish failed; message will be redelivered.");
            if acks {
                let _ = msg.ack_with(AckKind::Nak(Some(Duration::from_secs(1)))).await;
            }
            continue;
        }
        if !acks {
            continue;
        }
        if let Err(error) = msg.ack().await {
            tracing::warn!(%error, subject = %info.subject, "Ack failed; the message may be redelivered (handlers are idempotent).");
        }
    }
}
