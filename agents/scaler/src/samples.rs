//! The sample cache: each pod's latest sample, which the `hpa` rule and the
//! measured utilisation need. While leading, an ordered consumer on
//! PAS_SAMPLES feeds it from [`Config::sample_max_age`] back; the backlog
//! is read before the first decision.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use pas_schemas::CpuSample;
use pas_schemas::subjects::STREAM_SAMPLES;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{Error, Lead};

/// How long a new leader waits for the samples already in the stream.
const CATCH_UP: Duration = Duration::from_secs(10);

/// A workload: namespace and StatefulSet name.
pub(crate) type Key = (String, String);

/// The latest sample of one pod.
#[derive(Debug, Clone)]
pub(crate) struct PodSample {
    pub(crate) at: DateTime<Utc>,
    pub(crate) used: f64,
    pub(crate) requested: Option<f64>,
    /// Throttled share of the interval, where known.
    pub(crate) throttled: Option<f64>,
}

/// Latest samples by workload and pod.
pub(crate) type Pods = HashMap<Key, BTreeMap<String, PodSample>>;

pub(crate) fn record_sample(pods: &Mutex<Pods>, sample: CpuSample) {
    let (Some(namespace), Some(workload), Some(pod)) = (sample.namespace, sample.workload, sample.pod) else {
        return;
    };
    let mut pods = pods.lock().unwrap_or_else(|p| p.into_inner());
    let entry = pods
        .entry((namespace, workload))
        .or_default()
        .entry(pod)
        .or_insert(PodSample {
            at: DateTime::<Utc>::MIN_UTC,
            used: 0.0,
            requested: None,
            throttled: None,
        });
    if sample.timestamp >= entry.at {
        *entry = PodSample {
            at: sample.timestamp,
            used: sample.cpu_used_millicores,
            requested: sample.cpu_requested_millicores,
            throttled: sample.cpu_throttled_ratio,
        };
    }
}

/// Follows the pod samples into `pods` until `stop`, having read the
/// backlog (or waited [`CATCH_UP`] for it) before it returns.
pub(crate) async fn follow(
    lead: &Lead<'_>,
    pods: Arc<Mutex<Pods>>,
    stop: CancellationToken,
) -> Result<JoinHandle<()>, Error> {
    let Lead {
        js,
        prefix,
        config,
        dead_letters,
        metrics,
        ..
    } = lead;
    // Pod samples: an ordered consumer from a sample age back.
    let samples = pas_nats::open_stream(js, STREAM_SAMPLES).await?;
    let start_time = time::OffsetDateTime::now_utc() - config.sample_max_age;
    let ordered = samples
        .create_consumer(pull::OrderedConfig {
            name: Some(pas_nats::ordered_name("scaler-samples")),
            // Lost with its server, noticed in seconds (2 s heartbeats).
            max_expires: Duration::from_secs(4),
            filter_subject: prefix.all_pod_cpu(),
            deliver_policy: DeliverPolicy::ByStartTime { start_time },
            ..pull::OrderedConfig::default()
        })
        .await
        .map_err(|e| Error::js("create the scaler's sample consumer", e))?;
    // The samples already in the stream are read before any evaluation:
    // a leader that decided on half a backlog would mix old and new
    // samples of the same workload.
    let backlog = ordered.cached_info().num_pending;
    let mut messages = ordered
        .messages()
        .await
        .map_err(|e| Error::js("read samples", e))?;
    let (caught_up_tx, caught_up) = oneshot::channel::<()>();
    let mut caught_up_tx = (backlog > 0).then_some(caught_up_tx);
    let task = {
        let metrics = (*metrics).clone();
        let (admission, replay) = (config.admission, dead_letters.is_replay());
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    _ = stop.cancelled() => return,
                    next = messages.next() => next,
                };
                match next {
                    None => return,
                    Some(Err(error)) => {
                        tracing::warn!(%error, "Reading samples failed; continuing.")
                    }
                    Some(Ok(msg)) => {
                        let info = msg.info().ok();
                        let stored = info
                            .as_ref()
                            .map(|i| i.published.unix_timestamp_nanos())
                            .unwrap_or_default();
                        match admission.decode::<CpuSample>(&msg.payload, stored, replay) {
                            Ok(sample) => record_sample(&pods, sample),
                            // The forecaster dead-letters bad samples; here they are only counted.
                            Err(_) => metrics.ignored("invalid_sample"),
                        }
                        if info.is_some_and(|info| info.pending == 0)
                            && let Some(tx) = caught_up_tx.take()
                        {
                            let _ = tx.send(());
                        }
                    }
                }
            }
        })
    };
    if backlog > 0 {
        match tokio::time::timeout(CATCH_UP, caught_up).await {
            Ok(_) => tracing::info!(backlog, "Read the samples in the stream."),
            Err(_) => tracing::warn!(
                backlog,
                "The sample backlog was not read in {CATCH_UP:?}; deciding on what has been read."
            ),
        }
    }
    Ok(task)
}
