//! NATS plumbing shared by every PAS stage.
//!
//! - [`NatsConfig`] and [`connect`]: connection options (URLs, user and
//!   password, token, nkey, creds file, TLS) and a client that reconnects
//!   forever with capped, jittered backoff.
//! - [`definitions`]: the streams, buckets and consumers PAS uses, read from
//!   the JSON files under `nats/jetstream/` (the same files
//!   `nats stream add --config` and `nats consumer add --config` accept).
//! - [`provision`]: idempotent creation of those streams and buckets
//!   (`pas bus init`) and their status (`pas bus status`).
//! - [`Outgoing`] and [`publish`]: typed publishing that validates, encodes
//!   and sets `Nats-Msg-Id`.
//! - [`DeadLetters`] and [`consume`]: typed consuming; a message that does
//!   not decode is republished to `pas.dlq.<stage>` with the error in a
//!   header, counted, logged once per interval, and acked only then.
//! - [`read_samples`]: what a stream holds from a time on, without a durable
//!   consumer (state rebuilt at start, ranges read by `pas replay`).
//! - [`wait_for`] and [`durable`]: a stage waits for the streams, buckets
//!   and live consumers `pas bus init` provisions instead of exiting.
//! - [`history`]: workloads' coarse demand history in `pas-history`.
//! - [`kv_writer`]: key-value writes beside a stage's loop, the newest value
//!   of a key replacing one still queued.
//! - [`model_store`]: model versions in the `pas-models` object store, as
//!   the trainer writes and the forecaster reads them.

pub mod definitions;
pub mod history;
pub mod kv_writer;
pub mod model_store;
pub mod provision;
pub mod sizing;

mod admission;
mod connect;
mod consume;
mod dlq;
mod error;
mod publish;
mod read;
mod stage;
mod wait;

pub use admission::Admission;
pub use connect::{Connection, NatsConfig, TlsConfig, connect, reconnect_delay};
pub use consume::{Delivery, HandlerError, consume, consume_ordered, follow_pod_samples};
pub use dlq::DeadLetters;
pub use error::Error;
pub use publish::{Outgoing, publish};
pub use read::{ordered_name, read_samples};
pub use stage::{
    Bound, Consuming, StageBus, bind, bind_now, open_stream, spawn_consume, start_stage, within,
};
pub use wait::{durable, wait_for};
