//! Names of subjects, streams, consumers and buckets, and builders for them.
//!
//! Live subjects start with `pas.`; a replay publishes the same subjects under
//! `replay.<run>.` (see [`Prefix`]), and every stream also captures the replay
//! form, so an experiment never touches live subjects.
//!
//! | subject | message |
//! |---|---|
//! | `pas.cpu.node.<node>` | [`crate::CpuSample`] of a whole node |
//! | `pas.cpu.pod.<namespace>.<workload>.<pod>` | [`crate::CpuSample`] of one pod of a StatefulSet |
//! | `pas.forecast.<namespace>.<workload>` | [`crate::Forecast`] |
//! | `pas.scale.<namespace>.<workload>` | [`crate::ScaleDecision`] |
//! | `pas.model.<namespace>.<workload>` or `pas.model.global` | [`crate::ModelManifest`] |
//! | `pas.train.<namespace>.<workload>` or `pas.train.global` | [`crate::TrainJob`] |
//! | `pas.dlq.<stage>` | a message a stage could not decode, as it arrived |
//!
//! Names become subject tokens through [`token`]: Kubernetes names may hold
//! dots, which are subject separators, so a dot is written as `_` (which a
//! Kubernetes name never holds, so the mapping can be undone).

use std::borrow::Cow;
use std::fmt;

/// Stream of CPU samples (`pas.cpu.>`).
pub const STREAM_SAMPLES: &str = "PAS_SAMPLES";
/// Stream of forecasts (`pas.forecast.>`).
pub const STREAM_FORECASTS: &str = "PAS_FORECASTS";
/// Stream of scale decisions (`pas.scale.>`).
pub const STREAM_DECISIONS: &str = "PAS_DECISIONS";
/// Stream of dead letters (`pas.dlq.>`): messages a stage could not decode.
pub const STREAM_DLQ: &str = "PAS_DLQ";
/// Work queue of training jobs (`pas.train.>`): each taken by one trainer
/// replica and removed when it acks.
pub const STREAM_TRAINING: &str = "PAS_TRAINING";
/// Every stream PAS provisions, in provisioning order.
pub const STREAMS: [&str; 5] = [
    STREAM_SAMPLES,
    STREAM_FORECASTS,
    STREAM_DECISIONS,
    STREAM_DLQ,
    STREAM_TRAINING,
];

/// Object store bucket holding model weights and manifests.
pub const BUCKET_MODELS: &str = "pas-models";
/// Key-value bucket holding scaler state and its leader lease.
pub const BUCKET_SCALER: &str = "pas-scaler";
/// Key-value bucket holding forecaster replicas and their partition leases.
pub const BUCKET_FORECASTER: &str = "pas-forecaster";
/// Key-value bucket holding each workload's coarse demand history (weeks of
/// it, for seasonal context), written by the forecasters.
pub const BUCKET_HISTORY: &str = "pas-history";

/// Header naming why a message was sent to the dead-letter subject.
pub const HEADER_ERROR: &str = "Pas-Error";
/// Header naming the kind of failure (`malformed` or `invalid`).
pub const HEADER_ERROR_TYPE: &str = "Pas-Error-Type";
/// Header set on a dead letter whose payload was cut to fit the server's
/// `max_payload` (the original plus the error headers did not).
pub const HEADER_TRUNCATED: &str = "Pas-Truncated";
/// Header giving a truncated dead letter's original payload size, in bytes.
pub const HEADER_ORIGINAL_SIZE: &str = "Pas-Original-Size";
/// Header naming the subject a dead letter originally arrived on.
pub const HEADER_ORIGINAL_SUBJECT: &str = "Pas-Original-Subject";

/// The stages of the pipeline: used in dead-letter subjects, consumer names and
/// metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// The node agent.
    Agent,
    /// The trainer.
    Trainer,
    /// The forecaster.
    Forecaster,
    /// The scaler.
    Scaler,
    /// The recorder.
    Recorder,
}

impl Stage {
    /// Every stage.
    pub const ALL: [Stage; 5] = [
        Stage::Agent,
        Stage::Trainer,
        Stage::Forecaster,
        Stage::Scaler,
        Stage::Recorder,
    ];

    /// Lower-case name, e.g. `forecaster`.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Agent => "agent",
            Stage::Trainer => "trainer",
            Stage::Forecaster => "forecaster",
            Stage::Scaler => "scaler",
            Stage::Recorder => "recorder",
        }
    }

    /// Name of the stage's durable consumer on `stream`, e.g.
    /// `pas-recorder-samples`, or `pas-recorder-samples-<run>` under a replay
    /// prefix.
    pub fn consumer(self, stream: &str, prefix: &Prefix) -> String {
        let what = stream.trim_start_matches("PAS_").to_ascii_lowercase();
        match &prefix.run {
            None => format!("pas-{}-{what}", self.as_str()),
            Some(run) => format!("pas-{}-{what}-{run}", self.as_str()),
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Turns a name into one subject token: `.` becomes `_`; anything but ASCII
/// letters, digits, `-` and `_` is refused, as are empty and over-long names.
pub fn token(name: &str) -> Result<Cow<'_, str>, &'static str> {
    if name.is_empty() {
        return Err("it is empty");
    }
    if name.len() > 253 {
        return Err("it is longer than 253 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err("only ASCII letters, digits, '-', '_' and '.' are allowed");
    }
    if name.contains('.') {
        Ok(Cow::Owned(name.replace('.', "_")))
    } else {
        Ok(Cow::Borrowed(name))
    }
}

/// Checks a Kubernetes DNS-1123 label (a namespace's name): at most 63
/// characters of lower-case ASCII letters, digits and `-`, starting and
/// ending with a letter or digit.
pub fn dns1123_label(name: &str) -> Result<(), &'static str> {
    if name.len() > 63 {
        return Err("a Kubernetes label name has at most 63 characters");
    }
    if name.contains('.') {
        return Err("a Kubernetes label name has only lower-case letters, digits and '-'");
    }
    label(name)
}

/// Checks a Kubernetes DNS-1123 subdomain (the name of a node, pod,
/// StatefulSet or Deployment): at most 253 characters, labels of lower-case
/// letters, digits and `-` joined by single dots. So no name is empty, starts
/// or ends with a dot, or holds `..`, and none can make an empty subject token.
pub fn dns1123_subdomain(name: &str) -> Result<(), &'static str> {
    if name.len() > 253 {
        return Err("a Kubernetes name has at most 253 characters");
    }
    name.split('.').try_for_each(label)
}

/// One dot-free part of a Kubernetes name.
fn label(part: &str) -> Result<(), &'static str> {
    if part.is_empty() {
        return Err("a Kubernetes name is not empty, does not start or end with '.' and holds no '..'");
    }
    if !part
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err("a Kubernetes name has only lower-case letters, digits, '-' and '.'");
    }
    let ends = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_alphanumeric());
    if !ends(part.as_bytes().first()) || !ends(part.as_bytes().last()) {
        return Err("each part of a Kubernetes name starts and ends with a letter or digit");
    }
    Ok(())
}

/// Where a set of subjects lives: live (`pas.…`) or a replay run
/// (`replay.<run>.pas.…`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Prefix {
    run: Option<String>,
}

impl Prefix {
    /// The live subjects.
    pub fn live() -> Self {
        Prefix { run: None }
    }

    /// The subjects of replay run `run` (a single subject token).
    pub fn replay(run: &str) -> Result<Self, &'static str> {
        if run.contains('.') {
            return Err("a run name may not contain '.'");
        }
        Ok(Prefix {
            run: Some(token(run)?.into_owned()),
        })
    }

    /// The subjects of replay run `run`, or the live ones without a run: what
    /// a stage's `run` setting selects. The error names the run.
    pub fn for_run(run: Option<&str>) -> Result<Self, String> {
        match run {
            None => Ok(Prefix::live()),
            Some(run) => Prefix::replay(run).map_err(|e| format!("run {run:?}: {e}")),
        }
    }

    /// The run name, if this is a replay prefix.
    pub fn run(&self) -> Option<&str> {
        self.run.as_deref()
    }

    fn join(&self, rest: fmt::Arguments<'_>) -> String {
        match &self.run {
            None => format!("pas.{rest}"),
            Some(run) => format!("replay.{run}.pas.{rest}"),
        }
    }

    /// `pas.cpu.node.<node>`.
    pub fn node_cpu(&self, node: &str) -> Result<String, &'static str> {
        Ok(self.join(format_args!("cpu.node.{}", token(node)?)))
    }

    /// `pas.cpu.pod.<namespace>.<workload>.<pod>`.
    pub fn pod_cpu(&self, namespace: &str, workload: &str, pod: &str) -> Result<String, &'static str> {
        Ok(self.join(format_args!(
            "cpu.pod.{}.{}.{}",
            token(namespace)?,
            token(workload)?,
            token(pod)?
        )))
    }

    /// The subject of a sample: `pas.cpu.pod.…` for a pod sample,
    /// `pas.cpu.node.<node>` otherwise.
    pub fn sample(&self, sample: &crate::CpuSample) -> Result<String, &'static str> {
        match (&sample.namespace, &sample.workload, &sample.pod) {
            (Some(ns), Some(wl), Some(pod)) => self.pod_cpu(ns, wl, pod),
            _ => self.node_cpu(&sample.node),
        }
    }

    /// `pas.cpu.>`: every CPU sample.
    pub fn all_cpu(&self) -> String {
        self.join(format_args!("cpu.>"))
    }

    /// `pas.cpu.pod.>`: every pod sample (the input of trainer and forecaster).
    pub fn all_pod_cpu(&self) -> String {
        self.join(format_args!("cpu.pod.>"))
    }

    /// `pas.forecast.<namespace>.<workload>`.
    pub fn forecast(&self, namespace: &str, workload: &str) -> Result<String, &'static str> {
        Ok(self.join(format_args!(
            "forecast.{}.{}",
            token(namespace)?,
            token(workload)?
        )))
    }

    /// `pas.forecast.>`.
    pub fn all_forecasts(&self) -> String {
        self.join(format_args!("forecast.>"))
    }

    /// `pas.scale.<namespace>.<workload>`.
    pub fn scale(&self, namespace: &str, workload: &str) -> Result<String, &'static str> {
        Ok(self.join(format_args!("scale.{}.{}", token(namespace)?, token(workload)?)))
    }

    /// `pas.scale.>`.
    pub fn all_decisions(&self) -> String {
        self.join(format_args!("scale.>"))
    }

    /// `pas.train.<namespace>.<workload>`, or `pas.train.global` for `None`.
    pub fn train(&self, workload: Option<(&str, &str)>) -> Result<String, &'static str> {
        Ok(match workload {
            None => self.join(format_args!("train.global")),
            Some((ns, wl)) => self.join(format_args!("train.{}.{}", token(ns)?, token(wl)?)),
        })
    }

    /// `pas.train.>`: every training job.
    pub fn all_train(&self) -> String {
        self.join(format_args!("train.>"))
    }

    /// `pas.model.<namespace>.<workload>`, or `pas.model.global` for `None`.
    pub fn model(&self, workload: Option<(&str, &str)>) -> Result<String, &'static str> {
        Ok(match workload {
            None => self.join(format_args!("model.global")),
            Some((ns, wl)) => self.join(format_args!("model.{}.{}", token(ns)?, token(wl)?)),
        })
    }

    /// `pas.dlq.<stage>`.
    pub fn dlq(&self, stage: Stage) -> String {
        self.join(format_args!("dlq.{}", stage.as_str()))
    }

    /// Where this prefix's models live in the `pas-models` object store:
    /// `""` for the live ones, `replay/<run>/` for a run's.
    pub fn model_root(&self) -> String {
        self.run
            .as_ref()
            .map(|run| format!("{MODELS_OF_RUNS}{run}/"))
            .unwrap_or_default()
    }

    /// The keys of this prefix's run (or the live ones) in the key-value buckets.
    pub fn keys(&self) -> Keys {
        Keys {
            scope: self
                .run
                .as_ref()
                .map(|r| format!("run-{r}"))
                .unwrap_or_else(|| "live".into()),
        }
    }
}

/// Keys in the key-value buckets, each under a scope (`live`, or
/// `run-<run>` for a replay run) so that runs never share a lease, a
/// partition or a workload's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    scope: String,
}

impl Keys {
    /// `live` or `run-<run>`.
    pub fn scope(&self) -> &str {
        &self.scope
    }

    /// `<scope>.leader` in `pas-scaler`: the acting scaler's lease.
    pub fn leader(&self) -> String {
        format!("{}.leader", self.scope)
    }

    /// `<scope>.state.<namespace>.<workload>` in `pas-scaler`: a workload's
    /// scaling history. Each name is one [`token`] (a dot written `_`; a
    /// name that cannot be one is `_`), so no name can add or empty a token.
    pub fn state(&self, namespace: &str, workload: &str) -> String {
        format!("{}.state.{}", self.scope, workload_tokens(namespace, workload))
    }

    /// `<scope>.history.<namespace>.<workload>.<block>` in `pas-history`:
    /// one block of a workload's coarse demand history (names as in
    /// [`Keys::state`]).
    pub fn history(&self, namespace: &str, workload: &str, block: i64) -> String {
        format!(
            "{}.history.{}.{block}",
            self.scope,
            workload_tokens(namespace, workload)
        )
    }

    /// `<scope>.partition.<p>` in `pas-forecaster`: a partition's lease.
    pub fn partition(&self, p: u32) -> String {
        format!("{}.partition.{p}", self.scope)
    }

    /// `<scope>.member.`: the start of every forecaster replica's key.
    pub fn members(&self) -> String {
        format!("{}.member.", self.scope)
    }

    /// `<scope>.member.<replica>` in `pas-forecaster`: a replica's presence.
    pub fn member(&self, replica: &str) -> String {
        format!("{}{replica}", self.members())
    }
}

/// `<namespace>.<workload>`, each one [`token`] (a name that cannot be one
/// is `_`), so no name can add or empty a key's token.
fn workload_tokens(namespace: &str, workload: &str) -> String {
    let one = |name: &str| token(name).map(Cow::into_owned).unwrap_or_else(|_| "_".into());
    format!("{}.{}", one(namespace), one(workload))
}

/// Where replay runs' models live in `pas-models` (`replay/<run>/…`); no
/// live model key starts with it.
pub const MODELS_OF_RUNS: &str = "replay/";

/// `<root><key>/v<version>/<file>`: one file of one model version in
/// `pas-models` (`root` from [`Prefix::model_root`]).
pub fn model_object(root: &str, key: &str, version: u64, file: &str) -> String {
    format!("{root}{key}/v{version}/{file}")
}

/// `$O.<bucket>.C.<nuid>`: the subject of an object's chunks in its
/// bucket's stream.
pub fn object_chunks(bucket: &str, nuid: &str) -> String {
    format!("$O.{bucket}.C.{nuid}")
}

/// `KV_<bucket>`: the stream behind a key-value bucket.
pub fn kv_stream(bucket: &str) -> String {
    format!("KV_{bucket}")
}

/// `OBJ_<bucket>`: the stream behind an object store.
pub fn object_stream(bucket: &str) -> String {
    format!("OBJ_{bucket}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_object_names() {
        let live = Prefix::live();
        let run = Prefix::replay("exp1").unwrap();
        assert_eq!(live.keys().leader(), "live.leader");
        assert_eq!(run.keys().leader(), "run-exp1.leader");
        assert_eq!(live.keys().state("shop", "web"), "live.state.shop.web");
        // A name cannot add or empty a token: a dot is written `_`, and a
        // name that cannot be a token at all is `_`.
        assert_eq!(live.keys().state("..", "a.b"), "live.state.__.a_b");
        assert_eq!(live.keys().state("", "a*"), "live.state._._");
        assert_eq!(run.keys().partition(7), "run-exp1.partition.7");
        assert_eq!(
            live.keys().history("shop", "web", 20_000),
            "live.history.shop.web.20000"
        );
        assert_eq!(live.keys().history("..", "a.b", 1), "live.history.__.a_b.1");
        assert_eq!(live.keys().member("forecaster-0"), "live.member.forecaster-0");
        assert!(live.keys().member("x").starts_with(&live.keys().members()));
        assert_eq!(live.model_root(), "");
        assert_eq!(run.model_root(), "replay/exp1/");
        assert_eq!(
            model_object(&run.model_root(), "shop/web", 3, "manifest.json"),
            "replay/exp1/shop/web/v3/manifest.json"
        );
        assert_eq!(object_chunks(BUCKET_MODELS, "abc"), "$O.pas-models.C.abc");
        assert_eq!(kv_stream(BUCKET_SCALER), "KV_pas-scaler");
        assert_eq!(object_stream(BUCKET_MODELS), "OBJ_pas-models");
    }

    #[test]
    fn live_and_replay_subjects() {
        let live = Prefix::live();
        assert_eq!(live.node_cpu("node-1").unwrap(), "pas.cpu.node.node-1");
        assert_eq!(
            live.pod_cpu("shop", "web", "web-0").unwrap(),
            "pas.cpu.pod.shop.web.web-0"
        );
        assert_eq!(live.dlq(Stage::Forecaster), "pas.dlq.forecaster");
        assert_eq!(live.model(None).unwrap(), "pas.model.global");
        let replay = Prefix::replay("exp1").unwrap();
        assert_eq!(replay.forecast("a", "b").unwrap(), "replay.exp1.pas.forecast.a.b");
        assert_eq!(replay.all_cpu(), "replay.exp1.pas.cpu.>");
        assert!(Prefix::replay("a.b").is_err());
        assert_eq!(Prefix::for_run(None).unwrap(), Prefix::live());
        assert_eq!(Prefix::for_run(Some("exp1")).unwrap(), replay);
        assert_eq!(
            Prefix::for_run(Some("a.b")).unwrap_err(),
            "run \"a.b\": a run name may not contain '.'"
        );
    }

    #[test]
    fn a_sample_picks_its_own_subject() {
        let mut s: crate::CpuSample =
            serde_json::from_str(include_str!("../fixtures/cpu-sample.pod.json")).unwrap();
        assert_eq!(
            Prefix::live().sample(&s).unwrap(),
            "pas.cpu.pod.shop.pas-ss.pas-ss-1"
        );
        s.namespace = None;
        s.workload = None;
        s.pod = None;
        assert_eq!(
            Prefix::replay("r").unwrap().sample(&s).unwrap(),
            "replay.r.pas.cpu.node.worker-2"
        );
    }

    #[test]
    fn dotted_names_stay_one_token() {
        let s = Prefix::live()
            .node_cpu("ip-10-0-0-1.eu-west-1.compute.internal")
            .unwrap();
        assert_eq!(s, "pas.cpu.node.ip-10-0-0-1_eu-west-1_compute_internal");
        assert_eq!(s.split('.').count(), 4);
    }

    #[test]
    fn wildcards_and_spaces_are_refused() {
        for bad in ["", "a*", ">", "a b", "é", "a\tb"] {
            assert!(token(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn kubernetes_names() {
        for good in ["a", "shop", "pas-ss", "a1", &"x".repeat(63)] {
            assert_eq!(dns1123_label(good), Ok(()), "{good}");
            assert_eq!(dns1123_subdomain(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "..",
            ".a",
            "b.",
            "-a",
            "a-",
            "A",
            "a_b",
            "a b",
            "é",
            &"x".repeat(64),
        ] {
            assert!(dns1123_label(bad).is_err(), "{bad:?} is no label");
        }
        assert_eq!(
            dns1123_subdomain("ip-10-0-0-1.eu-west-1.compute.internal"),
            Ok(())
        );
        for bad in [
            "",
            "..",
            ".a",
            "b.",
            "a..b",
            "a.-b",
            "Web",
            "a_b",
            "a*",
            ">",
            &"x".repeat(254),
        ] {
            assert!(dns1123_subdomain(bad).is_err(), "{bad:?} is no subdomain");
        }
    }

    #[test]
    fn consumer_names() {
        assert_eq!(
            Stage::Recorder.consumer(STREAM_SAMPLES, &Prefix::live()),
            "pas-recorder-samples"
        );
        assert_eq!(
            Stage::Trainer.consumer(STREAM_SAMPLES, &Prefix::replay("r7").unwrap()),
            "pas-trainer-samples-r7"
        );
    }
}
