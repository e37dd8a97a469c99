use async_nats::HeaderMap;
use async_nats::jetstream::{self, context::PublishAckFuture};
use bytes::Bytes;
use pas_schemas::Message;

use crate::Error;

/// A message ready to publish: validated, encoded, with its subject and
/// de-duplication id. Cheap to clone, so a publisher can keep it until
/// JetStream acknowledges it.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    /// Subject to publish to.
    pub subject: String,
    /// `Nats-Msg-Id`: JetStream drops a second message with the same id
    /// within the stream's duplicate window.
    pub msg_id: String,
    /// JSON payload.
    pub payload: Bytes,
}

impl Outgoing {
    /// Validates and encodes `msg` for `subject`.
    pub fn new<M: Message>(subject: String, msg: &M) -> Result<Self, Error> {
        let payload = pas_schemas::encode(msg).map_err(Error::Encode)?;
        Ok(Outgoing {
            subject,
            msg_id: msg.msg_id(),
            payload: payload.into(),
        })
    }
}

/// Publishes to JetStream with `Nats-Msg-Id` set. Await the returned future
/// for the stream's acknowledgement where losing the message matters.
pub async fn publish(js: &jetstream::Context, msg: &Outgoing) -> Result<PublishAckFuture, Error> {
    let mut headers = HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, msg.msg_id.as_str());
    js.publish_with_headers(msg.subject.clone(), headers, msg.payload.clone())
        .await
        .map_err(|e| Error::js(format!("publish to {}", msg.subject), e))
}
