//! What a leader runs: the sample cache's consumer and the shared durable
//! consumer of forecasts, each forecast handed to the decision loop and
//! acked once decided on. A standby runs neither.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pas_nats::HandlerError;
use pas_schemas::Forecast;
use pas_schemas::subjects::{STREAM_FORECASTS, Stage};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::samples::Pods;
use crate::{Error, Lead};

pub(crate) type Done = oneshot::Sender<()>;

pub(crate) async fn next_forecast(active: &mut Option<Active>) -> Option<(Forecast, Done)> {
    match active {
        Some(a) => a.forecasts.recv().await,
        None => std::future::pending().await,
    }
}

/// The consumers a leader runs.
pub(crate) struct Active {
    forecasts: mpsc::Receiver<(Forecast, Done)>,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Active {
    /// Starts following the samples into `pods` (the backlog read first)
    /// and consuming forecasts.
    pub(crate) async fn start(lead: &Lead<'_>, pods: Arc<Mutex<Pods>>) -> Result<Active, Error> {
        let Lead {
            js,
            prefix,
            config,
            dead_letters,
            ..
        } = lead;
        let stop = CancellationToken::new();
        let sample_task = crate::samples::follow(lead, pods, stop.clone()).await?;

        // Forecasts: the shared durable consumer; each is acked once decided on.
        let consumer = pas_nats::bind_now(js, Stage::Scaler, STREAM_FORECASTS, prefix)
            .await?
            .consumer;
        let (tx, rx) = mpsc::channel(64);
        let forecast_task = {
            let stop = stop.clone();
            let dead_letters = dead_letters.clone();
            let admission = config.admission;
            tokio::spawn(async move {
                let result = pas_nats::consume::<Forecast, _, _>(
                    &consumer,
                    &dead_letters,
                    &admission,
                    stop,
                    |forecast, _| {
                        let tx = tx.clone();
                        async move {
                            let (done, decided) = oneshot::channel();
                            let retry = || HandlerError::Retry {
                                reason: "the scaler stopped leading".into(),
                                after: Duration::from_secs(1),
                            };
                            tx.send((forecast, done)).await.map_err(|_| retry())?;
                            decided.await.map_err(|_| retry())
                        }
                    },
                )
                .await;
                if let Err(error) = result {
                    tracing::warn!(%error, "Consuming forecasts stopped.");
                }
            })
        };
        Ok(Active {
            forecasts: rx,
            stop,
            tasks: vec![sample_task, forecast_task],
        })
    }

    pub(crate) async fn stop(self) {
        self.stop.cancel();
        // Let a forecast in hand be answered as "stopped" rather than hang.
        drop(self.forecasts);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}
