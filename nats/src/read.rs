use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use async_nats::jetstream::stream::Stream;
use futures::StreamExt;
use pas_schemas::CpuSample;

use crate::{Admission, Error};

/// Reads what `stream` holds for `filter` from messages stored at
/// `start_time` on, up to the end of the stream as it is now (or up to
/// stream sequence `last_sequence`), with an ordered consumer that leaves
/// no trace. Each sample that decodes, and passes `admission` where one is
/// given (with whether these are a replay run's subjects), goes to `fold`
/// with its stream sequence; bad ones are a durable consumer's to
/// dead-letter, but they stay in the stream, so a stage rebuilding its
/// state reads them through the same door it consumes through. Returns the messages read. The trainer and the forecaster
/// rebuild their state this way, the recorder up to its consumer's ack
/// floor; `pas replay` and `pas record` read ranges.
pub async fn read_samples(
    stream: &Stream,
    filter: &str,
    start_time: time::OffsetDateTime,
    last_sequence: Option<u64>,
    admission: Option<(&Admission, bool)>,
    mut fold: impl FnMut(CpuSample, u64),
) -> Result<u64, Error> {
    let what = || format!("read {filter} from the stream");
    let mut consumer = stream
        .create_consumer(pull::OrderedConfig {
            name: Some(ordered_name("read")),
            filter_subject: filter.to_owned(),
            deliver_policy: DeliverPolicy::ByStartTime { start_time },
            ..Default::default()
        })
        .await
        .map_err(|e| Error::js(what(), e))?;
    let pending = consumer
        .info()
        .await
        .map_err(|e| Error::js(what(), e))?
        .num_pending;
    if pending == 0 {
        return Ok(0);
    }
    let mut messages = consumer.messages().await.map_err(|e| Error::js(what(), e))?;
    let mut read = 0;
    while let Some(msg) = messages.next().await {
        let msg = msg.map_err(|e| Error::js(what(), e))?;
        let info = msg.info().map_err(|e| Error::JetStream {
            action: "read message metadata".into(),
            source: e,
        })?;
        let (sequence, remaining) = (info.stream_sequence, info.pending);
        if last_sequence.is_some_and(|last| sequence > last) {
            break;
        }
        let stored = info.published.unix_timestamp_nanos();
        let decoded = match admission {
            Some((admission, replay)) => admission.decode::<CpuSample>(&msg.payload, stored, replay),
            None => pas_schemas::decode::<CpuSample>(&msg.payload),
        };
        if let Ok(sample) = decoded {
            fold(sample, sequence);
        }
        read += 1;
        if remaining == 0 || last_sequence == Some(sequence) {
            break;
        }
    }
    Ok(read)
}

/// A name for a short-lived ordered consumer. Named, its create request
/// carries the name and filter in the subject, which is what the accounts
/// file lets a stage user create: the unnamed form would let the body name
/// (and so change) another stage's durable consumer.
pub fn ordered_name(purpose: &str) -> String {
    format!("pas-{purpose}-{:016x}", fastrand::u64(..))
}
