//! `pas import prometheus`: per-pod CPU history from a Prometheus server,
//! so a new install starts from the weeks of history a cluster already
//! keeps.
//!
//! Three PromQL range queries, each in chunks of at most `chunk` (and of at
//! most 10,000 points per series, under Prometheus's 11,000 limit):
//!
//! - **Use**: `sum by (namespace, pod) (rate(container_cpu_usage_seconds_total{container!="", container!="POD"}[window]))`
//!   (cAdvisor, through the kubelet), in cores; the window is the step
//!   unless `rate_window` says otherwise.
//! - **Requests**: `sum by (namespace, pod) (kube_pod_container_resource_requests{resource="cpu"})`
//!   (kube-state-metrics), in cores.
//! - **Owners**: `max by (namespace, pod, owner_kind, owner_name) (max_over_time(kube_pod_owner{owner_kind=~"StatefulSet|ReplicaSet"}[1h]))`
//!   and `max by (namespace, replicaset, owner_name) (max_over_time(kube_replicaset_owner{owner_kind="Deployment"}[1h]))`
//!   at hourly points (kube-state-metrics): a StatefulSet's pod is named by
//!   it, a ReplicaSet's by the Deployment that owns the ReplicaSet (without
//!   any `kube_replicaset_owner`, by the ReplicaSet's name less its last
//!   `-<hash>`). Pods of other owners, and of ReplicaSets no Deployment
//!   owns, are not scaling targets and are left out, as the node agent
//!   leaves them out.
//!
//! Each (pod, step) with a use value becomes one [`CpuSample`] (node
//! `prometheus`, use and request in millicores), so what the node agent
//! would have published. Failed queries are retried (connection errors,
//! timeouts, 429 and 5xx; jittered exponential backoff); 4xx other than 429
//! are not. Authentication by bearer token or basic auth; TLS with the
//! system's roots, a CA file of your own, or (for a test server only) no
//! verification.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use chrono::{DateTime, TimeDelta, Utc};
use pas_runtime::Secret;
use pas_schemas::{CpuSample, SCHEMA_VERSION};
use serde::Deserialize;

use crate::Error;

/// How to authenticate; the secrets print as `<redacted>` ([`Secret`]).
#[derive(Clone, Default)]
pub enum Auth {
    /// No credentials.
    #[default]
    None,
    /// `Authorization: Bearer <token>`.
    Bearer(Secret),
    /// HTTP basic authentication.
    Basic {
        /// User.
        user: String,
        /// Password.
        password: Secret,
    },
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::None => f.write_str("none"),
            Auth::Bearer(token) => write!(f, "bearer {token:?}"),
            Auth::Basic { user, password } => write!(f, "basic {user}:{password:?}"),
        }
    }
}

/// An import.
#[derive(Debug, Clone)]
pub struct Config {
    /// Base URL of the Prometheus HTTP API (`http://prometheus:9090`).
    pub url: String,
    /// Only this namespace.
    pub namespace: Option<String>,
    /// Only this workload (its StatefulSet's or Deployment's name).
    pub workload: Option<String>,
    /// Start of the history.
    pub start: DateTime<Utc>,
    /// End of the history.
    pub end: DateTime<Utc>,
    /// Resolution of the samples.
    pub step: Duration,
    /// The `rate()` window; when `None`, the step and at least
    /// [`DEFAULT_RATE_WINDOW`].
    pub rate_window: Option<Duration>,
    /// Longest time range of one query.
    pub chunk: Duration,
    /// Credentials.
    pub auth: Auth,
    /// A PEM file of CA certificates to trust besides the system's.
    pub ca_file: Option<PathBuf>,
    /// Accept any TLS certificate (a test server only).
    pub insecure_skip_verify: bool,
    /// Retries of a failed query.
    pub retries: usize,
    /// Time limit of one query.
    pub timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        let end = Utc::now();
        Config {
            url: "http://127.0.0.1:9090".into(),
            namespace: None,
            workload: None,
            start: end - TimeDelta::days(14),
            end,
            step: Duration::from_secs(300),
            rate_window: None,
            chunk: Duration::from_secs(86_400),
            auth: Auth::None,
            ca_file: None,
            insecure_skip_verify: false,
            retries: 4,
            timeout: Duration::from_secs(60),
        }
    }
}

/// A gap in a workload's history: steps with no sample of any of its pods.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Gap {
    /// `namespace/workload`.
    pub workload: String,
    /// The last step with samples before it.
    pub after: DateTime<Utc>,
    /// The first step with samples after it.
    pub before: DateTime<Utc>,
}

/// What an import read.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Imported {
    /// Every sample, by time, then namespace, workload and pod.
    #[serde(skip)]
    pub samples: Vec<CpuSample>,
    /// Samples per `namespace/workload`.
    pub workloads: BTreeMap<String, usize>,
    /// Pods whose owner is not a StatefulSet or Deployment (or unknown),
    /// left out.
    pub pods_left_out: usize,
    /// Pods with use but no CPU request: their samples carry none.
    pub pods_without_request: usize,
    /// Stretches of more than one step with no sample of a workload.
    pub gaps: Vec<Gap>,
    /// Queries made (retries not counted).
    pub queries: usize,
}

#[derive(Debug, Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: Vec<Series>,
}

#[derive(Debug, Deserialize)]
struct Series {
    metric: BTreeMap<String, String>,
    values: Vec<(f64, String)>,
}

/// A pod's points: time (Unix seconds) → (used, requested), in cores.
type PodPoints = BTreeMap<i64, (Option<f64>, Option<f64>)>;

/// A query that failed, and whether trying again may help.
#[derive(Debug)]
struct Failure {
    message: String,
    retry: bool,
}

/// Prometheus's HTTP API.
struct Api {
    client: reqwest::Client,
    base: String,
    auth: Auth,
    retries: usize,
}

impl Api {
    fn new(config: &Config) -> Result<Api, Error> {
        let url =
            url::Url::parse(&config.url).map_err(|e| Error::Input(format!("--url {:?}: {e}", config.url)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Error::Input(format!(
                "--url {:?}: expected an http:// or https:// URL",
                config.url
            )));
        }
        if !url.username().is_empty() || url.password().is_some() {
            // It would be printed in every message about the server.
            return Err(Error::Input(
                "--url holds credentials: give the user with --user and the password in PAS_PROMETHEUS_PASSWORD, or a bearer token".into(),
            ));
        }
        let mut builder = reqwest::Client::builder()
            .timeout(config.timeout)
            .danger_accept_invalid_certs(config.insecure_skip_verify);
        if let Some(path) = &config.ca_file {
            let pem = std::fs::read(path).map_err(Error::io(path))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| Error::Input(format!("{}: not PEM certificates: {e}", path.display())))?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder
            .build()
            .map_err(|e| Error::Input(format!("the HTTP client: {e}")))?;
        Ok(Api {
            client,
            base: config.url.trim_end_matches('/').to_owned(),
            auth: config.auth.clone(),
            retries: config.retries,
        })
    }

    /// One range query, retried while it fails in a way that may pass.
    async fn range(&self, query: &str, start: i64, end: i64, step: i64) -> Result<Vec<Series>, Error> {
        let attempt = || async { self.range_once(query, start, end, step).await };
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(500))
            .with_max_delay(Duration::from_secs(10))
            .with_max_times(self.retries)
            .with_jitter();
        attempt
            .retry(backoff)
            .when(|f: &Failure| f.retry)
            .notify(|f: &Failure, after| {
                tracing::warn!(error = %f.message, ?after, "A Prometheus query failed; retrying.");
            })
            .await
            .map_err(|f| Error::Input(f.message))
    }

    async fn range_once(&self, query: &str, start: i64, end: i64, step: i64) -> Result<Vec<Series>, Failure> {
        let url = format!("{}/api/v1/query_range", self.base);
        let params = [
            ("query", query.to_owned()),
            ("start", start.to_string()),
            ("end", end.to_string()),
            ("step", step.to_string()),
        ];
        let mut request = self.client.post(&url).form(&params);
        request = match &self.auth {
            Auth::None => request,
            Auth::Bearer(token) => request.bearer_auth(token.expose()),
            Auth::Basic { user, password } => request.basic_auth(user, Some(password.expose())),
        };
        let response = request.send().await.map_err(|e| Failure {
            message: format!("cannot reach Prometheus at {}: {}", self.base, describe(&e)),
            retry: true,
        })?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| Failure {
            message: format!("reading Prometheus's answer from {url}: {}", describe(&e)),
            retry: true,
        })?;
        let answer: Option<Answer> = serde_json::from_slice(&body).ok();
        let said = answer
            .as_ref()
            .and_then(|a| Some(format!("{}: {}", a.error_type.as_deref()?, a.error.as_deref()?)))
            .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned());
        match status.as_u16() {
            200 => {}
            401 | 403 => {
                return Err(Failure {
                    message: format!(
                        "Prometheus at {} refused the request ({status}): check the bearer token or the user and password",
                        self.base
                    ),
                    retry: false,
                });
            }
            429 | 500..=599 => {
                return Err(Failure {
                    message: format!("Prometheus at {} answered {status}: {said}", self.base),
                    retry: true,
                });
            }
            _ => {
                return Err(Failure {
                    message: format!(
                        "Prometheus at {} refused the query `{query}` ({status}): {said}",
                        self.base
                    ),
                    retry: false,
                });
            }
        }
        let Some(Answer {
            status,
            data: Some(data),
            ..
        }) = answer
        else {
            return Err(Failure {
                message: format!("{url} did not answer as the Prometheus HTTP API does: {said}"),
                retry: false,
            });
        };
        if status != "success" || data.result_type != "matrix" {
            return Err(Failure {
                message: format!(
                    "Prometheus answered {status} with a {} to a range query: {said}",
                    data.result_type
                ),
                retry: false,
            });
        }
        Ok(data.result)
    }
}

/// An error and its causes, in one line.
fn describe(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

/// `s` inside a PromQL double-quoted string.
fn promql_string(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// A PromQL label matcher for `namespace`, when one is asked for.
fn namespace_matcher(namespace: Option<&str>) -> String {
    namespace
        .map(|ns| format!(r#", namespace="{}""#, promql_string(ns)))
        .unwrap_or_default()
}

/// `s` as a literal in a PromQL regular expression (RE2), inside a string.
fn regex_quote(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c == '\\' {
            // A literal backslash: `\\` to the regex, each doubled in the string.
            out.push_str("\\\\\\");
        } else if ".+*?()|[]{}^$".contains(c) {
            out.push_str("\\\\");
        } else if c == '"' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The `rate()` window unless one is given: the step, and at least this
/// (four scrapes at Prometheus's default minute).
pub const DEFAULT_RATE_WINDOW: Duration = Duration::from_secs(300);

/// The workload a pod's owner names: a StatefulSet itself, a ReplicaSet's
/// Deployment (its name less the last `-<hash>`).
pub fn owner_workload(kind: &str, name: &str) -> Option<String> {
    match kind {
        "StatefulSet" => Some(name.to_owned()),
        "ReplicaSet" => {
            let (deployment, hash) = name.rsplit_once('-')?;
            (!deployment.is_empty() && !hash.is_empty() && hash.chars().all(|c| c.is_ascii_alphanumeric()))
                .then(|| deployment.to_owned())
        }
        _ => None,
    }
}

/// Reads the history, reporting `(queries done, queries in all)`.
pub async fn import(
    config: &Config,
    progress: &mut (dyn FnMut(usize, usize) + Send),
) -> Result<Imported, Error> {
    let step = i64::try_from(config.step.as_secs()).unwrap_or(0);
    if step < 1 {
        return Err(Error::Input("the step must be at least 1s".into()));
    }
    if config.end <= config.start {
        return Err(Error::Input(format!(
            "nothing to import: the history ends ({}) before it starts ({})",
            config.end, config.start
        )));
    }
    let api = Api::new(config)?;
    // Points at whole steps, so a re-import lands on the same times.
    let start = config.start.timestamp().div_euclid(step) * step + step;
    let end = config.end.timestamp().div_euclid(step) * step;
    if end < start {
        return Err(Error::Input("the history is shorter than one step".into()));
    }
    let chunk = (i64::try_from(config.chunk.as_secs())
        .unwrap_or(i64::MAX)
        .max(step)
        / step
        * step)
        .min(10_000 * step);
    let chunks: Vec<(i64, i64)> = (0..)
        .map(|i| start + i * (chunk + step))
        .take_while(|s| *s <= end)
        .map(|s| (s, (s + chunk).min(end)))
        .collect();
    // Owners at hourly points (each the hour's owners), in chunks of
    // whole hours at least as long as `chunk`.
    let hour = 3600;
    let hours: Vec<(i64, i64)> = {
        let (first, last) = (start.div_euclid(hour) * hour, end.div_euclid(hour) * hour + hour);
        let span = (chunk.div_euclid(hour) * hour).clamp(hour, 9_999 * hour);
        (0..)
            .map(|i| first + i * (span + hour))
            .take_while(|s| *s <= last)
            .map(|s| (s, (s + span).min(last)))
            .collect()
    };
    let total = 2 * hours.len() + 2 * chunks.len();
    let mut done = 0;
    progress(done, total);

    let ns = namespace_matcher(config.namespace.as_deref());
    // With a workload named, only pods that can be its (a StatefulSet's
    // `<name>-<ordinal>`, a Deployment's `<name>-<hash>-<id>`) are asked
    // for; which are is then decided by their owners.
    let (pod_matcher, owner_matcher, replicaset_matcher) = match &config.workload {
        Some(name) => {
            let w = regex_quote(name);
            let literal = promql_string(name);
            (
                format!(r#", pod=~"{w}-.+""#),
                format!(r#", owner_name=~"{w}(-[a-z0-9]+)?""#),
                format!(r#", owner_name="{literal}""#),
            )
        }
        None => (String::new(), String::new(), String::new()),
    };
    let window = config
        .rate_window
        .unwrap_or(config.step.max(DEFAULT_RATE_WINDOW))
        .as_secs()
        .max(1);

    // Owners first: they say which pods to keep. A ReplicaSet's pods are
    // its Deployment's (kube_replicaset_owner); one no Deployment owns is
    // not a scaling target, as the node agent sees it too.
    let replicasets_query = format!(
        r#"max by (namespace, replicaset, owner_name) (max_over_time(kube_replicaset_owner{{owner_kind="Deployment"{ns}{replicaset_matcher}}}[1h]))"#
    );
    let mut deployments: BTreeMap<(String, String), String> = BTreeMap::new();
    for (s, e) in &hours {
        for series in api.range(&replicasets_query, *s, *e, hour).await? {
            let m = &series.metric;
            if let (Some(namespace), Some(replicaset), Some(deployment)) =
                (m.get("namespace"), m.get("replicaset"), m.get("owner_name"))
            {
                deployments.insert((namespace.clone(), replicaset.clone()), deployment.clone());
            }
        }
        done += 1;
        progress(done, total);
    }
    let owners_query = format!(
        r#"max by (namespace, pod, owner_kind, owner_name) (max_over_time(kube_pod_owner{{owner_kind=~"StatefulSet|ReplicaSet"{ns}{owner_matcher}}}[1h]))"#
    );
    let mut owners: BTreeMap<(String, String), String> = BTreeMap::new();
    for (s, e) in &hours {
        for series in api.range(&owners_query, *s, *e, hour).await? {
            let m = &series.metric;
            let (Some(namespace), Some(pod), Some(kind), Some(name)) = (
                m.get("namespace"),
                m.get("pod"),
                m.get("owner_kind"),
                m.get("owner_name"),
            ) else {
                continue;
            };
            let workload = match kind.as_str() {
                // Without kube_replicaset_owner at all (an old
                // kube-state-metrics), the name less its hash.
                "ReplicaSet" if !deployments.is_empty() => {
                    deployments.get(&(namespace.clone(), name.clone())).cloned()
                }
                _ => owner_workload(kind, name),
            };
            if let Some(workload) = workload {
                owners.insert((namespace.clone(), pod.clone()), workload);
            }
        }
        done += 1;
        progress(done, total);
    }
    if owners.is_empty() {
        return Err(Error::Input(format!(
            "Prometheus at {} has no kube_pod_owner series of a StatefulSet or ReplicaSet{} between {} and {}: is kube-state-metrics scraped?",
            api.base,
            config
                .namespace
                .as_deref()
                .map(|n| format!(" in namespace {n}"))
                .unwrap_or_default(),
            config.start,
            config.end
        )));
    }
    let keep = |namespace: &str, pod: &str| -> Option<String> {
        let workload = owners.get(&(namespace.to_owned(), pod.to_owned()))?;
        config
            .workload
            .as_ref()
            .is_none_or(|w| w == workload)
            .then(|| workload.clone())
    };

    let use_query = format!(
        r#"sum by (namespace, pod) (rate(container_cpu_usage_seconds_total{{container!="", container!="POD"{ns}{pod_matcher}}}[{window}s]))"#
    );
    let request_query = format!(
        r#"sum by (namespace, pod) (kube_pod_container_resource_requests{{resource="cpu"{ns}{pod_matcher}}})"#
    );
    let mut pods: BTreeMap<(String, String), PodPoints> = BTreeMap::new();
    let mut left_out = BTreeSet::new();
    for (query, is_use) in [(&use_query, true), (&request_query, false)] {
        for (s, e) in &chunks {
            for series in api.range(query, *s, *e, step).await? {
                let (Some(namespace), Some(pod)) = (series.metric.get("namespace"), series.metric.get("pod"))
                else {
                    continue;
                };
                if keep(namespace, pod).is_none() {
                    if is_use {
                        left_out.insert((namespace.clone(), pod.clone()));
                    }
                    continue;
                }
                let points = pods.entry((namespace.clone(), pod.clone())).or_default();
                for (t, v) in &series.values {
                    let Ok(value) = v.parse::<f64>() else { continue };
                    if !value.is_finite() || value < 0.0 {
                        continue;
                    }
                    let slot = points.entry(t.round() as i64).or_default();
                    if is_use {
                        slot.0 = Some(value);
                    } else {
                        slot.1 = Some(value);
                    }
                }
            }
            done += 1;
            progress(done, total);
        }
    }
    let wanted = match (&config.namespace, &config.workload) {
        (Some(n), Some(w)) => format!(" of {n}/{w}"),
        (Some(n), None) => format!(" in namespace {n}"),
        (None, Some(w)) => format!(" of workload {w}"),
        (None, None) => String::new(),
    };
    if !pods.values().any(|p| p.values().any(|(u, _)| u.is_some())) {
        return Err(Error::Input(format!(
            "Prometheus at {} has no container_cpu_usage_seconds_total series{wanted} between {} and {}: is the kubelet's cAdvisor scraped, and is the name right?",
            api.base, config.start, config.end
        )));
    }

    let mut samples = Vec::new();
    let mut without_request = 0;
    // Per `namespace/workload`: the times with a sample, and the samples.
    let mut per_workload: BTreeMap<String, (BTreeSet<i64>, usize)> = BTreeMap::new();
    for ((namespace, pod), points) in &pods {
        let Some(workload) = keep(namespace, pod) else {
            continue;
        };
        if points.values().all(|(_, r)| r.is_none()) && points.values().any(|(u, _)| u.is_some()) {
            without_request += 1;
        }
        for (t, (used, requested)) in points {
            let Some(used) = used else { continue };
            let Some(timestamp) = DateTime::from_timestamp(*t, 0) else {
                continue;
            };
            let seen = per_workload.entry(format!("{namespace}/{workload}")).or_default();
            seen.0.insert(*t);
            seen.1 += 1;
            samples.push(CpuSample {
                schema_version: SCHEMA_VERSION,
                timestamp,
                node: "prometheus".into(),
                namespace: Some(namespace.clone()),
                workload: Some(workload.clone()),
                pod: Some(pod.clone()),
                cpu_used_millicores: used * 1000.0,
                cpu_requested_millicores: requested.map(|r| r * 1000.0).filter(|r| *r > 0.0),
                cpu_capacity_millicores: None,
                cpu_throttled_ratio: None,
            });
        }
    }
    samples.sort_by(|a, b| {
        (a.timestamp, &a.namespace, &a.workload, &a.pod).cmp(&(
            b.timestamp,
            &b.namespace,
            &b.workload,
            &b.pod,
        ))
    });
    let mut gaps = Vec::new();
    for (workload, (times, _)) in &per_workload {
        let times: Vec<i64> = times.iter().copied().collect();
        for pair in times.windows(2) {
            if pair[1] - pair[0] > step {
                gaps.push(Gap {
                    workload: workload.clone(),
                    after: DateTime::from_timestamp(pair[0], 0).unwrap_or_default(),
                    before: DateTime::from_timestamp(pair[1], 0).unwrap_or_default(),
                });
            }
        }
    }
    let workloads = per_workload.into_iter().map(|(w, (_, n))| (w, n)).collect();
    Ok(Imported {
        samples,
        workloads,
        pods_left_out: left_out.len(),
        pods_without_request: without_request,
        gaps,
        queries: total,
    })
}

/// Whether samples of `step` can become the live coarse history: its
/// 5-minute slots (what the forecasters keep at their 5 s step) must be
/// whole steps.
pub fn check_live_step(step: Duration) -> Result<(), Error> {
    let slot = u64::from(pas_workloads::history::DEFAULT_STEP_SECONDS);
    let s = step.as_secs();
    if s == 0 || s > slot || slot % s != 0 || step.subsec_nanos() != 0 {
        return Err(Error::Input(format!(
            "--live stores 5-minute slots, so the step must divide 5m (1m, 5m, …), not {}",
            humantime::format_duration(step)
        )));
    }
    Ok(())
}

/// Each workload's coarse history ([`pas_workloads::history`], 5-minute
/// slots) from `samples` at `step`, folded as the pipeline folds samples
/// ([`pas_workloads::Workloads`]: per step, the sum of the pods' use, pods
/// without a CPU request left out, a pod counted once per time). A rate at
/// `t` measures the step before `t`, so it is folded there. The samples need
/// not come in time order; they are folded in it, so only the newest two
/// steps are held as samples.
pub fn histories(
    samples: &[CpuSample],
    step: Duration,
) -> Result<Vec<(pas_workloads::WorkloadKey, pas_workloads::history::History)>, Error> {
    use pas_workloads::history::{DEFAULT_KEEP_SECONDS, DEFAULT_STEP_SECONDS, History};
    check_live_step(step)?;
    let step_seconds = u32::try_from(step.as_secs()).unwrap_or(u32::MAX).max(1);
    let step = TimeDelta::seconds(i64::from(step_seconds));
    let mut folded = pas_workloads::Workloads::new(step_seconds, crate::record::ALL_STEPS, 2);
    let mut in_order: Vec<&CpuSample> = samples.iter().collect();
    in_order.sort_by_key(|s| s.timestamp);
    for s in in_order {
        folded.fold(
            &CpuSample {
                timestamp: s.timestamp - step,
                ..s.clone()
            },
            0,
        );
    }
    let coarse = TimeDelta::seconds(i64::from(DEFAULT_STEP_SECONDS));
    let mut out = Vec::new();
    for key in folded.keys() {
        let Some((steps, _)) = folded.series(&key) else {
            continue;
        };
        let mut history = History::new(DEFAULT_STEP_SECONDS, DEFAULT_KEEP_SECONDS);
        history.record_series(steps.start, steps.step_seconds, &steps.values);
        // Closes the last slot, however far into it the series ends.
        let end = steps.start + step * steps.values.len() as i32;
        history.record(end + coarse, f64::NAN);
        out.push((key, history));
    }
    Ok(out)
}

/// Stores each workload's demand in `samples` ([`histories`]) as its coarse
/// history in `pas-history` under `keys`: the days
/// the forecasters and trainers read for their seasonal features
/// ([`pas_workloads::history`], 5-minute slots, the last 14 days). Where a
/// slot is already stored, the imported value replaces it; the stored slots
/// the import has no value for are kept. The blocks written.
pub async fn store_history(
    kv: &async_nats::jetstream::kv::Store,
    keys: &pas_schemas::subjects::Keys,
    samples: &[CpuSample],
    step: Duration,
) -> Result<usize, Error> {
    use pas_workloads::history::{DEFAULT_KEEP_SECONDS, DEFAULT_STEP_SECONDS, History};
    let mut written = 0;
    for (pas_workloads::WorkloadKey { namespace, workload }, mut history) in histories(samples, step)? {
        let changed = history.take_changed();
        let indices: Vec<i64> = changed.iter().map(|b| b.index).collect();
        let stored = pas_nats::history::read(kv, keys, &namespace, &workload, &indices).await?;
        let mut merged = History::new(DEFAULT_STEP_SECONDS, DEFAULT_KEEP_SECONDS);
        for block in changed {
            merged.merge(block).map_err(Error::Input)?;
        }
        for block in stored.blocks {
            merged.merge(block).map_err(Error::Input)?;
        }
        for index in indices {
            let Some(block) = merged.block(index) else {
                continue;
            };
            let name = keys.history(&namespace, &workload, index);
            kv.put(&name, block.encode().into())
                .await
                .map_err(|e| Error::js(format!("write {name} to pas-history"), e))?;
            written += 1;
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histories_fold_as_the_pipeline_and_put_a_rate_in_the_step_before_it() {
        let sample = |t: i64, pod: &str, used: f64, requested: Option<f64>| CpuSample {
            cpu_requested_millicores: requested,
            ..crate::record::tests::sample(pod, t, used, 0.0)
        };
        // Rates at the end of each minute of the slot [3000, 3300), out of
        // time order, one seen twice; a pod without a request is left out,
        // as the pipeline leaves it out.
        let mut samples = Vec::new();
        for minute in (1..=5).rev() {
            let t = 3000 + 60 * minute;
            samples.push(sample(t, "web-0", 100.0 * minute as f64, Some(500.0)));
            samples.push(sample(t, "web-1", 50.0, Some(500.0)));
            samples.push(sample(t, "web-2", 9_000.0, None));
        }
        samples.push(sample(3060, "web-1", 50.0, Some(500.0)));
        let out = histories(&samples, Duration::from_secs(60)).unwrap();
        assert_eq!(out.len(), 1);
        let (key, history) = &out[0];
        assert_eq!((key.namespace.as_str(), key.workload.as_str()), ("shop", "web"));
        // The slot holds the five minutes' mean: 300 + 50.
        assert_eq!(
            history.at(DateTime::from_timestamp(3000, 0).unwrap()),
            Some(350.0)
        );
        // Not the slot after, which the last rate (at 3300) would be in if
        // it were not the minute before it.
        assert_eq!(history.at(DateTime::from_timestamp(3300, 0).unwrap()), None);
        assert!(histories(&samples, Duration::from_secs(7)).is_err());
    }

    #[test]
    fn owners_name_statefulsets_and_the_deployments_of_replicasets() {
        assert_eq!(owner_workload("StatefulSet", "db").as_deref(), Some("db"));
        assert_eq!(
            owner_workload("ReplicaSet", "web-api-7d9f8b6c5").as_deref(),
            Some("web-api")
        );
        assert_eq!(owner_workload("ReplicaSet", "web"), None);
        assert_eq!(owner_workload("ReplicaSet", "-abc"), None);
        assert_eq!(owner_workload("DaemonSet", "logs"), None);
        assert_eq!(owner_workload("Job", "x-1"), None);
    }

    #[test]
    fn names_are_quoted_into_promql_regular_expressions() {
        assert_eq!(regex_quote("web-api"), "web-api");
        assert_eq!(regex_quote("web.v2"), r"web\\.v2");
        assert!(check_live_step(Duration::from_secs(60)).is_ok());
        assert!(check_live_step(Duration::from_secs(300)).is_ok());
        for bad in [0, 120 + 7, 420, 600] {
            assert!(check_live_step(Duration::from_secs(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_namespace_is_quoted_into_promql() {
        assert_eq!(namespace_matcher(None), "");
        assert_eq!(namespace_matcher(Some("shop")), r#", namespace="shop""#);
        assert_eq!(namespace_matcher(Some(r#"a"b"#)), r#", namespace="a\"b""#);
    }

    #[test]
    fn secrets_are_never_printed() {
        let basic = Auth::Basic {
            user: "ops".into(),
            password: Secret::new("hunter2"),
        };
        assert_eq!(format!("{basic:?}"), "basic ops:<redacted>");
        assert!(!format!("{:?}", Auth::Bearer(Secret::new("tok"))).contains("tok"));
    }
}
