use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    outcome: &'static str,
    rule: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    error_type: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

/// The scaler's metrics, served on `/metrics`. Clones share the values.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    decisions: Family<DecisionLabels, Counter>,
    kube_errors: Family<ErrorLabels, Counter>,
    invalid_settings: Counter,
    ignored: Family<Reason, Counter>,
    forecasts: Counter,
    leader: Gauge,
    workloads: Gauge,
}

impl Metrics {
    pub(crate) fn register(&self, r: &mut Registry) {
        r.register(
            "pas_scaler_decisions",
            "Decisions published, by outcome and deciding rule.",
            self.decisions.clone(),
        );
        r.register(
            "pas_scaler_kube_errors",
            "Kubernetes calls that failed after retries, by error type.",
            self.kube_errors.clone(),
        );
        r.register(
            "pas_scaler_invalid_settings",
            "pas.io/ annotations that could not be used (counted when a workload's problems change).",
            self.invalid_settings.clone(),
        );
        r.register(
            "pas_scaler_ignored",
            "Inputs not used, by reason.",
            self.ignored.clone(),
        );
        r.register(
            "pas_scaler_forecasts",
            "Forecasts received.",
            self.forecasts.clone(),
        );
        r.register(
            "pas_scaler_leader",
            "1 while this scaler holds the lease and acts.",
            self.leader.clone(),
        );
        r.register(
            "pas_scaler_workloads",
            "Workloads with recent samples or forecasts.",
            self.workloads.clone(),
        );
    }

    pub(crate) fn decision(&self, outcome: &'static str, rule: crate::Rule) {
        self.decisions
            .get_or_create(&DecisionLabels {
                outcome,
                rule: rule.as_str(),
            })
            .inc();
    }

    /// Decisions so far with this outcome (`applied`, `dry_run`, `refused`,
    /// `unchanged`), over all rules.
    pub fn decisions(&self, outcome: &'static str) -> u64 {
        crate::Rule::ALL
            .iter()
            .map(|rule| {
                self.decisions
                    .get(&DecisionLabels {
                        outcome,
                        rule: rule.as_str(),
                    })
                    .map_or(0, |c| c.get())
            })
            .sum()
    }

    pub(crate) fn kube_error(&self, error_type: &'static str) {
        self.kube_errors.get_or_create(&ErrorLabels { error_type }).inc();
    }

    /// Kubernetes errors so far of this type.
    pub fn kube_errors(&self, error_type: &'static str) -> u64 {
        self.kube_errors
            .get(&ErrorLabels { error_type })
            .map_or(0, |c| c.get())
    }

    pub(crate) fn invalid_settings(&self) {
        self.invalid_settings.inc();
    }

    /// Times a workload's annotations were found invalid.
    pub fn invalid_settings_count(&self) -> u64 {
        self.invalid_settings.get()
    }

    pub(crate) fn ignored(&self, reason: &'static str) {
        self.ignored.get_or_create(&Reason { reason }).inc();
    }

    pub(crate) fn forecast(&self) {
        self.forecasts.inc();
    }

    pub(crate) fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// Whether this scaler is the active one.
    pub fn is_leader(&self) -> bool {
        self.leader.get() == 1
    }

    pub(crate) fn set_workloads(&self, n: usize) {
        self.workloads.set(n as i64);
    }
}
