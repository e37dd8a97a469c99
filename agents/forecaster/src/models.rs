//! The models the forecaster serves, kept in step with the `pas-models` bucket.
//!
//! [`Loader`] reads every manifest at start and then watches the bucket. For a
//! key (`<namespace>/<workload>`, or `global` for any workload without its
//! own) it serves the newest accepted version that loads: it downloads the
//! weights, checks their digest against the manifest, checks the step and
//! shape, and builds the network on a blocking thread, off the tick. Only
//! then does it swap the model in, by replacing one pointer under a lock the
//! tick holds for a lookup. A version that fails any check is refused (logged
//! and counted in `pas_forecaster_model_refusals_total{reason}`) and never
//! tried again; the version already served keeps serving.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::jetstream::object_store::ObjectStore;
use async_nats::jetstream::stream::Stream;
use futures::StreamExt;
use pas_models::batch::LstmWeights;
use pas_models::lstm::{Lstm, LstmConfig};
use pas_nats::model_store::{self as store, Layout};
use pas_runtime::health::Heartbeat;
use pas_schemas::ModelManifest;
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::metrics::Metrics;

/// A model ready to serve.
#[derive(Debug)]
pub struct Served {
    /// Its key in the bucket.
    pub key: String,
    /// Its version.
    pub version: u64,
    /// Its kind (`lstm`).
    pub kind: String,
    /// Its quantile for the upper forecast.
    pub quantile: f64,
    /// The weights, ready for batched inference.
    pub weights: LstmWeights,
    /// Its calibration: levels, and per level the offsets per step that
    /// turn its point forecast into quantiles (none for versions trained
    /// before calibration).
    pub calibration: Option<(Vec<f64>, Vec<Vec<f64>>)>,
}

/// The served models by key. Cheap to read from the tick.
#[derive(Debug, Default)]
pub struct Models {
    map: RwLock<HashMap<String, Arc<Served>>>,
}

/// The key of the model every workload without its own falls back to.
pub const GLOBAL: &str = "global";

impl Models {
    /// The model for a workload key: its own, else the global one.
    pub fn get(&self, key: &str) -> Option<Arc<Served>> {
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        map.get(key).or_else(|| map.get(GLOBAL)).cloned()
    }

    /// The served version of a key, if any.
    pub fn version(&self, key: &str) -> Option<u64> {
        self.map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .map(|s| s.version)
    }

    /// How many keys have a model.
    pub(crate) fn len(&self) -> usize {
        self.map.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Serves `served` under its key (replacing what was served).
    pub fn insert(&self, served: Served) {
        self.swap(served);
    }

    /// Stops serving `key`'s own model (the global one serves it then).
    /// True when one was served.
    pub fn remove(&self, key: &str) -> bool {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        map.remove(key).is_some()
    }

    fn swap(&self, served: Served) {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        map.insert(served.key.clone(), Arc::new(served));
    }
}

/// Why a version was refused: a fixed label for the metric, and the detail.
#[derive(Debug)]
pub struct Refusal {
    /// A fixed label (`step`, `window`, `digest`, ...).
    pub reason: &'static str,
    /// What was wrong.
    pub detail: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.reason, self.detail)
    }
}

impl Served {
    /// Checks a manifest against what the forecaster serves (an LSTM
    /// trained on `step_seconds`, a window within `history` steps, a
    /// horizon that reaches past `lead`, its hyper-parameters consistent);
    /// the network's configuration.
    pub fn check(
        manifest: &ModelManifest,
        step_seconds: u64,
        (history, lead): (usize, std::time::Duration),
    ) -> Result<LstmConfig, Refusal> {
        if manifest.architecture != pas_models::ModelKind::Lstm.name() {
            return Err(refuse(
                "architecture",
                format!("the forecaster serves `lstm`, not `{}`", manifest.architecture),
            ));
        }
        if manifest.step_seconds != step_seconds as f64 {
            return Err(refuse(
                "step",
                format!(
                    "trained on a step of {} s, the forecaster's is {step_seconds} s",
                    manifest.step_seconds
                ),
            ));
        }
        if manifest.window as usize > history {
            return Err(refuse(
                "window",
                format!("needs {} steps, history keeps {history}", manifest.window),
            ));
        }
        pas_runtime::config::check_horizon(
            "its horizon",
            manifest.horizon as usize,
            Duration::from_secs(step_seconds),
            lead,
        )
        .map_err(|e| refuse("horizon", e))?;
        let mut params: serde_json::Map<String, serde_json::Value> =
            manifest.hyper_parameters.clone().into_iter().collect();
        // A version trained before the seasonal inputs existed has none.
        params.entry("seasonal").or_insert(serde_json::Value::Bool(false));
        let params = serde_json::Value::Object(params);
        let config: LstmConfig = serde_json::from_value(params)
            .map_err(|e| refuse("manifest", format!("hyper-parameters: {e}")))?;
        if config.window != manifest.window as usize || config.horizon != manifest.horizon as usize {
            return Err(refuse(
                "manifest",
                "window or horizon differ from the hyper-parameters",
            ));
        }
        Ok(config)
    }

    /// Builds a checked version from its weights (blocking: it runs
    /// libtorch), after checking their digest. The stage's loader and `pas
    /// experiment` both serve models through this.
    pub fn build(manifest: &ModelManifest, config: LstmConfig, bytes: &[u8]) -> Result<Served, Refusal> {
        let digest = pas_models::digest(bytes);
        if digest != manifest.digest {
            return Err(refuse(
                "digest",
                format!(
                    "the weights hash to {digest}, the manifest says {}",
                    manifest.digest
                ),
            ));
        }
        let quantile = config.quantile;
        let weights = Lstm::from_safetensors(config, &manifest.normalisation, bytes)
            .and_then(|model| LstmWeights::from_lstm(&model))
            .map_err(|e| refuse("load", e.to_string()))?;
        Ok(Served {
            key: manifest.key.clone(),
            version: manifest.version,
            kind: manifest.architecture.clone(),
            quantile,
            weights,
            calibration: manifest
                .calibration
                .as_ref()
                .map(|c| (c.levels.clone(), c.offsets.clone())),
        })
    }
}

fn refuse(reason: &'static str, detail: impl Into<String>) -> Refusal {
    Refusal {
        reason,
        detail: detail.into(),
    }
}

/// Keeps [`Models`] in step with the bucket (its object store and its stream).
pub struct Loader {
    bucket: ObjectStore,
    chunks: Stream,
    layout: Layout,
    step_seconds: u64,
    history: usize,
    lead: Duration,
    models: Arc<Models>,
    refused: HashSet<(String, u64)>,
    metrics: Metrics,
    heartbeat: Heartbeat,
}

impl Loader {
    /// A loader for the models of `layout` trained on a step of `step_seconds`
    /// with windows of at most `history` steps. It reports its failures to
    /// readiness through `heartbeat`, and its rescans as beats.
    pub fn new(
        (bucket, chunks): (ObjectStore, Stream),
        layout: Layout,
        step_seconds: u64,
        (history, lead): (usize, Duration),
        (models, metrics): (Arc<Models>, Metrics),
        heartbeat: Heartbeat,
    ) -> Loader {
        Loader {
            bucket,
            chunks,
            layout,
            step_seconds,
            history,
            lead,
            models,
            refused: HashSet::new(),
            metrics,
            heartbeat,
        }
    }

    /// Loads everything, logging and reporting a failure instead of
    /// returning it: the loader keeps going and the next rescan retries.
    async fn rescan(&mut self) {
        match self.load_all().await {
            Ok(()) => self.heartbeat.beat(),
            Err(error) => {
                tracing::error!(%error, "Reading the model bucket failed; serving what is loaded and retrying at the next rescan.");
                self.heartbeat.fail(format!("reading the model bucket: {error}"));
            }
        }
    }

    /// Loads the newest loadable accepted version of every key.
    pub async fn load_all(&mut self) -> Result<(), Error> {
        let all = store::load(&self.bucket, &self.chunks, &self.layout)
            .await
            .map_err(|e| Error::js("read the model manifests", e))?;
        for (key, versions) in all {
            // Newest first: a version that lost to the global model ends the
            // search (an older one of its own no longer serves), an
            // accepted one that loads is served.
            for manifest in versions.into_values().rev() {
                if manifest.defers_to_global() {
                    self.defer(&key, manifest.version);
                    break;
                }
                if manifest.accepted && self.consider(manifest).await {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Watches the bucket until `shutdown`, loading each new accepted
    /// version; reads the whole bucket again every `rescan`, in case the
    /// watch missed something (a reconnect).
    ///
    /// When it stops with an error, it says so at once: logged at ERROR and
    /// shown by `/readyz`, while the models already loaded keep serving.
    pub async fn run(self, shutdown: CancellationToken, rescan: Duration) -> Result<(), Error> {
        let heartbeat = self.heartbeat.clone();
        let result = self.watch(shutdown, rescan).await;
        if let Err(error) = &result {
            tracing::error!(%error, "The model loader stopped; no new model version will be served until a restart.");
            heartbeat.fail(format!("stopped: {error}"));
        }
        result
    }

    async fn watch(mut self, shutdown: CancellationToken, rescan: Duration) -> Result<(), Error> {
        let mut watch = self
            .bucket
            .watch()
            .await
            .map_err(|e| Error::js("watch the model bucket", e))?;
        self.rescan().await;
        let mut rescans = tokio::time::interval(rescan);
        rescans.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = rescans.tick() => self.rescan().await,
                event = watch.next() => match event {
                    Some(Ok(info)) if !info.deleted => {
                        let Some((key, version)) = self.layout.manifest_of(&info.name) else { continue };
                        if self.models.version(key).is_some_and(|v| v >= version) {
                            continue;
                        }
                        match store::read(&self.bucket, &self.chunks, &info.name).await {
                            Ok(bytes) => match pas_schemas::decode::<ModelManifest>(&bytes) {
                                                                Ok(m) if m.accepted => {
                                    self.consider(m).await;
                                }
                                Ok(m) if m.defers_to_global() => self.defer(&m.key, m.version),
                                Ok(_) => {}
                                Err(error) => self.refused(key, version, refuse("manifest", error.to_string())),
                            },
                            Err(error) => tracing::warn!(%error, object = info.name, "Reading a new manifest failed; the next rescan will."),
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(error)) => tracing::warn!(%error, "Watching the model bucket failed; continuing."),
                    None => {
                        tracing::warn!("The model bucket watch ended; watching again.");
                        watch = self.bucket.watch().await.map_err(|e| Error::js("watch the model bucket", e))?;
                    }
                },
            }
        }
    }

    /// Loads and swaps in `manifest`'s version if it is newer than the one
    /// served and was not refused before. True when it serves now (or a
    /// newer one does).
    async fn consider(&mut self, manifest: ModelManifest) -> bool {
        let (key, version) = (manifest.key.clone(), manifest.version);
        if self.models.version(&key).is_some_and(|v| v >= version) {
            return true;
        }
        if self.refused.contains(&(key.clone(), version)) {
            return false;
        }
        match self.load(&manifest).await {
            Ok(Some(served)) => {
                tracing::info!(key, version, "Serving a new model version.");
                self.models.swap(served);
                self.metrics.model_loaded();
                true
            }
            Ok(None) => false,
            Err(refusal) => {
                self.refused(&key, version, refusal);
                false
            }
        }
    }

    /// `key`'s version `version` lost to the global model on its own
    /// backtest: an older version of its own no longer serves.
    fn defer(&mut self, key: &str, version: u64) {
        if self.models.version(key).is_some_and(|v| v < version) && self.models.remove(key) {
            tracing::info!(
                key,
                version,
                "The global model beat this workload's own; serving the global model."
            );
        }
    }

    fn refused(&mut self, key: &str, version: u64, refusal: Refusal) {
        tracing::warn!(
            key,
            version,
            reason = refusal.reason,
            detail = refusal.detail,
            "Refused a model version; the previous one keeps serving."
        );
        self.metrics.model_refused(refusal.reason);
        self.refused.insert((key.to_owned(), version));
    }

    /// Ok(None) when the weights could not be read for now (NATS down): not
    /// the version's fault, tried again at the next rescan.
    async fn load(&self, manifest: &ModelManifest) -> Result<Option<Served>, Refusal> {
        let config = Served::check(manifest, self.step_seconds, (self.history, self.lead))?;
        let name = self
            .layout
            .object(&manifest.key, manifest.version, "weights.safetensors");
        let bytes = match store::read(&self.bucket, &self.chunks, &name).await {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::warn!(%error, object = name, "Reading model weights failed; will try again.");
                return Ok(None);
            }
        };
        let manifest = manifest.clone();
        tokio::task::spawn_blocking(move || Served::build(&manifest, config, &bytes))
            .await
            .map_err(|e| refuse("load", e.to_string()))?
            .map(Some)
    }
}
