use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::Context;
use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::stream::Stream;
use pas_runtime::health::{self, Health};
use pas_schemas::subjects::{Prefix, Stage};
use prometheus_client::registry::Registry;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{Admission, Connection, DeadLetters, Error, NatsConfig, wait_for};

/// What every stage starts with: its NATS connection, its dead letters, and
/// its health, served with its metrics.
#[derive(Debug)]
pub struct StageBus {
    /// The connection.
    pub conn: Connection,
    /// `pas.dlq.<stage>` under the stage's prefix.
    pub dead_letters: DeadLetters,
    /// Readiness, set by the stage.
    pub health: Arc<Health>,
}

/// Connects as `client` (waiting for the server), registers the stage's
/// metrics with `register` and the dead-letter counter, and serves
/// `/healthz`, `/readyz` and `/metrics` on `listen` until `shutdown`.
pub async fn start_stage(
    nats: &NatsConfig,
    client: &str,
    stage: Stage,
    prefix: &Prefix,
    listen: SocketAddr,
    register: impl FnOnce(&mut Registry),
    shutdown: &CancellationToken,
) -> Result<StageBus, Error> {
    let conn = crate::connect(nats, client, true).await?;
    let mut registry = Registry::default();
    register(&mut registry);
    let dead_letters = DeadLetters::new(conn.jetstream.clone(), stage, prefix, &mut registry);
    let health = Arc::new(Health::default());
    let addr = health::serve(listen, health.clone(), Arc::new(registry), shutdown.clone()).await?;
    tracing::info!(%addr, client, "Serving /healthz, /readyz and /metrics.");
    Ok(StageBus {
        conn,
        dead_letters,
        health,
    })
}

/// Runs one step of a stage's way out for at most `limit`: with NATS down a
/// release, an ack or a drain would each wait for its own timeout, one
/// after another, and SIGTERM must end the stage within 10 s. `None`, and a
/// warning naming `step`, when it did not finish in time.
pub async fn within<T>(
    limit: std::time::Duration,
    step: &'static str,
    work: impl std::future::Future<Output = T>,
) -> Option<T> {
    match tokio::time::timeout(limit, work).await {
        Ok(done) => Some(done),
        Err(_) => {
            tracing::warn!(step, "Shutdown step did not finish in time; going on.");
            None
        }
    }
}

impl Connection {
    /// Drains the connection, for at most 2 s (SIGTERM must end a stage in
    /// time, NATS down or not).
    pub async fn drain(&self) {
        let _ = within(
            Duration::from_secs(2),
            "drain the connection",
            self.client.drain(),
        )
        .await;
    }
}

/// A stage's durable consumer on one stream, bound as `nats/jetstream/`
/// defines it.
pub struct Bound {
    /// The stream.
    pub stream: Stream,
    /// The consumer.
    pub consumer: PullConsumer,
    /// The subjects it reads (what a rebuild from the stream reads too).
    pub filter: String,
}

/// Opens the stream `name`.
/// The error says to run `pas bus init` only when the stream is missing.
pub async fn open_stream(js: &Context, name: &str) -> Result<Stream, Error> {
    js.get_stream(name).await.map_err(|e| {
        let hint = if crate::error::says_missing(&e) {
            " (it is missing: run `pas bus init`)"
        } else {
            ""
        };
        Error::js(format!("open stream {name}{hint}"), e)
    })
}

/// The sequence every consuming stage starts with: opens `stream`, looks up
/// `stage`'s consumer definition under `prefix`, and creates or binds it
/// ([`crate::durable`]), waiting for `pas bus init` as [`wait_for`] does.
/// `None` when `shutdown` comes first.
pub async fn bind(
    js: &Context,
    stage: Stage,
    stream: &str,
    prefix: &Prefix,
    shutdown: &CancellationToken,
) -> Result<Option<Bound>, Error> {
    let what = format!("stream {stream} and the {}'s consumer", stage.as_str());
    wait_for(&what, shutdown, || bind_now(js, stage, stream, prefix)).await
}

/// [`bind`] once, without waiting.
pub async fn bind_now(js: &Context, stage: Stage, stream: &str, prefix: &Prefix) -> Result<Bound, Error> {
    let definition = crate::definitions::consumer(stage, stream, prefix)?;
    let opened = open_stream(js, stream).await?;
    let consumer = crate::durable(&opened, &definition).await?;
    Ok(Bound {
        stream: opened,
        consumer,
        filter: definition.filter_subject,
    })
}

/// A consumer running on a task of its own ([`spawn_consume`]).
pub struct Consuming {
    what: &'static str,
    task: JoinHandle<Result<(), Error>>,
}

impl Consuming {
    /// Runs `consume` (its shutdown token decides when it ends) on a task.
    pub fn spawn(
        what: &'static str,
        consume: impl Future<Output = Result<(), Error>> + Send + 'static,
    ) -> Self {
        Consuming {
            what,
            task: tokio::spawn(consume),
        }
    }

    /// Waits at most 2 s for the consumer to end (after its shutdown token
    /// was cancelled), logging how it ended.
    pub async fn stop(self) {
        let what = self.what;
        match within(Duration::from_secs(2), "stop consuming", self.task).await {
            Some(Ok(Ok(()))) | None => {}
            Some(Ok(Err(error))) => tracing::warn!(what, %error, "Consuming stopped with an error."),
            Some(Err(error)) => tracing::warn!(what, %error, "The consumer task failed."),
        }
    }
}

/// [`consume`](crate::consume) on a task of its own until `shutdown`.
pub fn spawn_consume<M, F, Fut>(
    what: &'static str,
    consumer: PullConsumer,
    dead_letters: Arc<DeadLetters>,
    admission: Admission,
    shutdown: CancellationToken,
    handle: F,
) -> Consuming
where
    M: pas_schemas::Message + Send + 'static,
    F: FnMut(M, crate::Delivery) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), crate::HandlerError>> + Send + 'static,
{
    Consuming::spawn(what, async move {
        crate::consume(&consumer, &dead_letters, &admission, shutdown, handle).await
    })
}
