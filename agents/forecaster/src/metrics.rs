use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// A fixed label: one word from a known list.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Model {
    model: &'static str,
}

/// The forecaster's metrics, served on `/metrics`. Clones share the values.
#[derive(Debug, Clone)]
pub struct Metrics {
    samples: Counter,
    ignored: Family<Reason, Counter>,
    forecasts: Family<Model, Counter>,
    failures: Counter,
    workloads: Gauge,
    stale: Gauge,
    forgotten: Counter,
    partitions: Gauge,
    replicas: Gauge,
    models: Gauge,
    loads: Counter,
    refusals: Family<Reason, Counter>,
    ticks: Counter,
    tick_seconds: Histogram,
    history_workloads: Gauge,
    history_bytes: Gauge,
    history_loads: Family<Outcome, Counter>,
    history_writes: Family<Outcome, Counter>,
    history_refusals: Counter,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

fn outcome(ok: bool) -> Outcome {
    Outcome {
        outcome: if ok { "ok" } else { "failed" },
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let buckets = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
        Metrics {
            samples: Counter::default(),
            ignored: Family::default(),
            forecasts: Family::default(),
            failures: Counter::default(),
            workloads: Gauge::default(),
            stale: Gauge::default(),
            forgotten: Counter::default(),
            partitions: Gauge::default(),
            replicas: Gauge::default(),
            models: Gauge::default(),
            loads: Counter::default(),
            refusals: Family::default(),
            ticks: Counter::default(),
            tick_seconds: Histogram::new(buckets),
            history_workloads: Gauge::default(),
            history_bytes: Gauge::default(),
            history_loads: Family::default(),
            history_writes: Family::default(),
            history_refusals: Counter::default(),
        }
    }
}

impl Metrics {
    pub(crate) fn register(&self, r: &mut Registry) {
        r.register(
            "pas_forecaster_samples",
            "Samples folded into a workload window.",
            self.samples.clone(),
        );
        r.register(
            "pas_forecaster_ignored_samples",
            "Samples not used, by reason.",
            self.ignored.clone(),
        );
        r.register(
            "pas_forecaster_forecasts",
            "Forecasts published, by model (lstm or baseline).",
            self.forecasts.clone(),
        );
        r.register(
            "pas_forecaster_forecast_failures",
            "Forecasts that could not be made or published.",
            self.failures.clone(),
        );
        r.register(
            "pas_forecaster_workloads",
            "Workloads with data, all partitions.",
            self.workloads.clone(),
        );
        r.register(
            "pas_forecaster_stale_workloads",
            "Owned workloads not forecast because no sample came lately.",
            self.stale.clone(),
        );
        r.register(
            "pas_forecaster_forgotten_workloads",
            "Workloads forgotten after no sample for forget_after.",
            self.forgotten.clone(),
        );
        r.register(
            "pas_forecaster_partitions",
            "Partitions this replica holds.",
            self.partitions.clone(),
        );
        r.register(
            "pas_forecaster_replicas",
            "Live forecaster replicas seen.",
            self.replicas.clone(),
        );
        r.register("pas_forecaster_models", "Model keys served.", self.models.clone());
        r.register(
            "pas_forecaster_model_loads",
            "Model versions loaded and swapped in.",
            self.loads.clone(),
        );
        r.register(
            "pas_forecaster_model_refusals",
            "Model versions refused, by reason.",
            self.refusals.clone(),
        );
        r.register("pas_forecaster_ticks", "Ticks run.", self.ticks.clone());
        r.register(
            "pas_forecaster_tick_seconds",
            "From a tick's start to the last forecast acknowledged by JetStream.",
            self.tick_seconds.clone(),
        );
        r.register(
            "pas_forecaster_history_workloads",
            "Owned workloads whose coarse history this replica keeps.",
            self.history_workloads.clone(),
        );
        r.register(
            "pas_forecaster_history_bytes",
            "Bytes those histories take in the pas-history bucket.",
            self.history_bytes.clone(),
        );
        r.register(
            "pas_forecaster_history_loads",
            "Reads of a workload's stored history, by outcome (ok, failed).",
            self.history_loads.clone(),
        );
        r.register(
            "pas_forecaster_history_writes",
            "Writes of a history block, by outcome (ok, failed).",
            self.history_writes.clone(),
        );
        r.register(
            "pas_forecaster_history_refusals",
            "Stored history blocks that did not decode, refused.",
            self.history_refusals.clone(),
        );
    }

    pub(crate) fn history(&self, workloads: usize, bytes: usize) {
        self.history_workloads.set(workloads as i64);
        self.history_bytes.set(bytes as i64);
    }

    pub(crate) fn history_load(&self, ok: bool) {
        self.history_loads.get_or_create(&outcome(ok)).inc();
    }

    pub(crate) fn history_write(&self, ok: bool) {
        self.history_writes.get_or_create(&outcome(ok)).inc();
    }

    pub(crate) fn history_refused(&self) {
        self.history_refusals.inc();
    }

    /// Stored history reads (`true`: succeeded) and block writes so far.
    pub fn history_io(&self, ok: bool) -> (u64, u64) {
        (
            self.history_loads.get_or_create(&outcome(ok)).get(),
            self.history_writes.get_or_create(&outcome(ok)).get(),
        )
    }

    /// Stored history blocks refused so far.
    pub fn history_refusals(&self) -> u64 {
        self.history_refusals.get()
    }

    pub(crate) fn folded(&self) {
        self.samples.inc();
    }

    pub(crate) fn ignored(&self, reason: &'static str) {
        self.ignored.get_or_create(&Reason { reason }).inc();
    }

    pub(crate) fn forecast(&self, lstm: bool) {
        self.forecasts
            .get_or_create(&Model {
                model: if lstm { "lstm" } else { "baseline" },
            })
            .inc();
    }

    pub(crate) fn failed(&self) {
        self.failures.inc();
    }

    pub(crate) fn model_loaded(&self) {
        self.loads.inc();
    }

    pub(crate) fn model_refused(&self, reason: &'static str) {
        self.refusals.get_or_create(&Reason { reason }).inc();
    }

    pub(crate) fn tick(
        &self,
        seconds: f64,
        workloads: usize,
        stale: usize,
        partitions: usize,
        replicas: usize,
        models: usize,
    ) {
        self.ticks.inc();
        self.tick_seconds.observe(seconds);
        self.workloads.set(workloads as i64);
        self.stale.set(stale as i64);
        self.partitions.set(partitions as i64);
        self.replicas.set(replicas as i64);
        self.models.set(models as i64);
    }

    pub(crate) fn forgot(&self, n: usize) {
        self.forgotten.inc_by(n as u64);
    }

    /// Samples folded so far.
    pub fn samples(&self) -> u64 {
        self.samples.get()
    }

    /// Forecasts published by the LSTM (`true`) or the baseline.
    pub fn forecasts(&self, lstm: bool) -> u64 {
        self.forecasts
            .get_or_create(&Model {
                model: if lstm { "lstm" } else { "baseline" },
            })
            .get()
    }

    /// Model versions refused for `reason` (`digest`, `load`, `step`, …).
    pub fn refusals(&self, reason: &'static str) -> u64 {
        self.refusals.get_or_create(&Reason { reason }).get()
    }

    /// Model versions swapped in so far.
    pub fn loads(&self) -> u64 {
        self.loads.get()
    }

    /// Partitions held at the last tick.
    pub fn partitions(&self) -> i64 {
        self.partitions.get()
    }
}
