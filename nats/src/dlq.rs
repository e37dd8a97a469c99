use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream;
use bytes::Bytes;
use pas_schemas::subjects::{
    HEADER_ERROR, HEADER_ERROR_TYPE, HEADER_ORIGINAL_SIZE, HEADER_ORIGINAL_SUBJECT, HEADER_TRUNCATED, Prefix,
    Stage,
};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::Error;

/// How often, at most, dead letters are logged; the rest are counted.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Labels {
    stage: &'static str,
    error_type: &'static str,
}

/// Sends messages a stage cannot use to `pas.dlq.<stage>` (stream `PAS_DLQ`),
/// as they arrived, with the error in the `Pas-Error` header. Counts them in
/// `pas_dlq_messages_total{stage, error_type}` and logs at most one line per
/// ten seconds, with the number held back since the last.
#[derive(Debug)]
pub struct DeadLetters {
    js: jetstream::Context,
    stage: Stage,
    subject: String,
    replay: bool,
    counter: Family<Labels, Counter>,
    truncated: Counter,
    log: Mutex<(Option<Instant>, u64)>,
}

impl DeadLetters {
    /// Dead letters of `stage` under `prefix`; registers the counter.
    pub fn new(js: jetstream::Context, stage: Stage, prefix: &Prefix, registry: &mut Registry) -> Self {
        let counter = Family::<Labels, Counter>::default();
        registry.register(
            "pas_dlq_messages",
            "Messages sent to the dead-letter subject because they could not be decoded or used.",
            counter.clone(),
        );
        let truncated = Counter::default();
        registry.register(
            "pas_dlq_truncated",
            "Dead letters whose payload was cut to fit the server's max_payload (the Pas-Truncated header says so).",
            truncated.clone(),
        );
        DeadLetters {
            js,
            stage,
            subject: prefix.dlq(stage),
            replay: prefix.run().is_some(),
            counter,
            truncated,
            log: Mutex::new((None, 0)),
        }
    }

    /// Whether this stage reads a replay run's subjects (which carry a
    /// trace's old times on purpose).
    pub fn is_replay(&self) -> bool {
        self.replay
    }

    /// How many dead letters had their payload cut to fit.
    pub fn truncated(&self) -> u64 {
        self.truncated.get()
    }

    /// How many messages of `error_type` (`malformed`, `invalid`, or a
    /// stage's own) this stage sent to the dead-letter subject.
    pub fn count(&self, error_type: &'static str) -> u64 {
        self.counter
            .get_or_create(&Labels {
                stage: self.stage.as_str(),
                error_type,
            })
            .get()
    }

    /// Publishes `payload`, which arrived on `subject`, to the dead-letter
    /// subject and waits for JetStream's acknowledgement. `id` (for example
    /// the stream sequence of the original) makes a redelivered original
    /// land only once. Only after this returns `Ok` may the original be acked.
    pub async fn send(
        &self,
        subject: &str,
        payload: Bytes,
        id: &str,
        error_type: &'static str,
        error: &(dyn std::error::Error + Send + Sync + 'static),
    ) -> Result<(), Error> {
        let reason = error_chain(error);
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_ERROR, one_line(&reason).as_str());
        headers.insert(HEADER_ERROR_TYPE, error_type);
        headers.insert(HEADER_ORIGINAL_SUBJECT, subject);
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            format!("dlq:{}:{id}", self.stage).as_str(),
        );
        // A message of the server's max_payload cannot be republished with
        // headers added: cut its payload to fit and say so, so it is never
        // redelivered until dropped unseen.
        let max = self.js.client().max_payload();
        let header_bytes: usize = 16
            + headers
                .iter()
                .map(|(k, vs)| {
                    vs.iter()
                        .map(|v| AsRef::<str>::as_ref(k).len() + v.as_str().len() + 4)
                        .sum::<usize>()
                })
                .sum::<usize>();
        let payload = if payload.len() + header_bytes + 256 > max {
            let keep = max.saturating_sub(header_bytes + 256);
            headers.insert(HEADER_TRUNCATED, "true");
            headers.insert(HEADER_ORIGINAL_SIZE, payload.len().to_string().as_str());
            self.truncated.inc();
            payload.slice(..keep.min(payload.len()))
        } else {
            payload
        };
        self.js
            .publish_with_headers(self.subject.clone(), headers, payload)
            .await
            .map_err(|e| Error::js(format!("publish to {}", self.subject), e))?
            .await
            .map_err(|e| Error::js(format!("acknowledge {}", self.subject), e))?;
        self.counter
            .get_or_create(&Labels {
                stage: self.stage.as_str(),
                error_type,
            })
            .inc();
        self.log_throttled(subject, error_type, &reason);
        Ok(())
    }

    fn log_throttled(&self, subject: &str, error_type: &str, reason: &str) {
        let mut state = self.log.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let due = state
            .0
            .is_none_or(|last| now.duration_since(last) >= LOG_INTERVAL);
        if due {
            tracing::warn!(
                stage = %self.stage,
                subject,
                error_type,
                error = reason,
                held_back = state.1,
                dlq = %self.subject,
                "Message sent to the dead-letter subject."
            );
            *state = (Some(now), 0);
        } else {
            state.1 += 1;
        }
    }
}

fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

/// Header values are one line of visible characters.
fn one_line(text: &str) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    flat.chars().take(1024).collect()
}
