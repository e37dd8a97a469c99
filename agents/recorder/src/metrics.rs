use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MessageLabels {
    stream: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Measurement {
    measurement: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    error_type: &'static str,
}

/// The recorder's metrics, served on `/metrics`. Clones share the values.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    messages: Family<MessageLabels, Counter>,
    points: Family<Measurement, Counter>,
    write_errors: Family<ErrorLabels, Counter>,
    influx_up: Gauge,
    workloads: Gauge,
}

impl Metrics {
    pub(crate) fn register(&self, r: &mut Registry) {
        r.register(
            "pas_recorder_messages",
            "Messages acked, by stream and outcome (written, dead_lettered).",
            self.messages.clone(),
        );
        r.register(
            "pas_recorder_points",
            "Points written, by measurement.",
            self.points.clone(),
        );
        r.register(
            "pas_recorder_write_errors",
            "Failed writes, by error type (unavailable: retried; rejected: split, then dead-lettered).",
            self.write_errors.clone(),
        );
        r.register(
            "pas_recorder_influx_up",
            "1 after a write succeeded, 0 after one failed because InfluxDB was unavailable.",
            self.influx_up.clone(),
        );
        r.register(
            "pas_recorder_workloads",
            "Workloads whose recent steps are held for their workload points.",
            self.workloads.clone(),
        );
    }

    pub(crate) fn messages(&self, stream: &'static str, outcome: &'static str, n: usize) {
        self.messages
            .get_or_create(&MessageLabels { stream, outcome })
            .inc_by(n as u64);
    }

    /// Messages of `stream` acked with `outcome` (`written`, `dead_lettered`).
    pub fn messages_total(&self, stream: &'static str, outcome: &'static str) -> u64 {
        self.messages
            .get_or_create(&MessageLabels { stream, outcome })
            .get()
    }

    pub(crate) fn points(&self, measurement: &'static str, n: usize) {
        self.points
            .get_or_create(&Measurement { measurement })
            .inc_by(n as u64);
    }

    /// Points of `measurement` written.
    pub fn points_total(&self, measurement: &'static str) -> u64 {
        self.points.get_or_create(&Measurement { measurement }).get()
    }

    pub(crate) fn write_error(&self, error_type: &'static str) {
        self.write_errors.get_or_create(&ErrorLabels { error_type }).inc();
    }

    /// Failed writes of `error_type` (`unavailable`, `rejected`).
    pub fn write_errors_total(&self, error_type: &'static str) -> u64 {
        self.write_errors.get_or_create(&ErrorLabels { error_type }).get()
    }

    pub(crate) fn set_influx_up(&self, up: bool) {
        self.influx_up.set(i64::from(up));
    }

    pub(crate) fn set_workloads(&self, n: usize) {
        self.workloads.set(n as i64);
    }
}
