//! Idempotent provisioning of the streams and buckets (`pas bus init`) and
//! their status (`pas bus status`).

use async_nats::jetstream::{self, stream};
use futures::TryStreamExt;
use serde::Serialize;

use crate::Error;
use crate::definitions::{self, StreamDefinition};

/// What provisioning did to one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// It did not exist and was created.
    Created,
    /// It existed with other settings and was updated.
    Updated,
    /// It existed as defined.
    Unchanged,
}

/// One stream's provisioning result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Provisioned {
    /// Stream name.
    pub stream: String,
    /// What was done.
    pub action: Action,
    /// The settings that differed, for `Updated`.
    pub changed: Vec<String>,
}

/// How to provision.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// Replicas of every stream and bucket (3 on a three-node cluster).
    /// `None` creates them with the definitions' one replica and leaves an
    /// existing stream's replicas as they are.
    pub replicas: Option<usize>,
    /// The fleet the growing streams are sized for ([`crate::sizing`]):
    /// their `max_bytes` and `max_age` replace the definition files'. Like
    /// every limit, part of what `status` compares: pass the same fleet.
    pub fleet: Option<crate::sizing::Fleet>,
}

/// A definition with the fleet's limits in place of the file's, where the
/// fleet sizes that stream.
fn sized(def: &StreamDefinition, fleet: Option<&crate::sizing::Fleet>) -> StreamDefinition {
    let Some(r) = fleet.and_then(|f| f.reserve().into_iter().find(|r| r.stream == def.config.name)) else {
        return def.clone();
    };
    let mut out = def.clone();
    out.config.max_bytes = r.max_bytes as i64;
    out.config.max_age = r.max_age;
    if let Some(raw) = out.raw.as_object_mut() {
        raw.insert("max_bytes".into(), r.max_bytes.into());
        raw.insert("max_age".into(), (r.max_age.as_nanos() as u64).into());
    }
    out
}

/// Creates every stream and bucket that is missing and updates those whose
/// settings differ from the definitions (a `sources` entry or a subject
/// transform someone added is removed), then creates the live durable
/// consumers that are missing: only the admin may, so the stages wait for
/// them. (The forecaster has none: each replica reads through a short-lived
/// ordered consumer of its own.) Running it twice changes nothing.
pub async fn init(js: &jetstream::Context, options: Options) -> Result<Vec<Provisioned>, Error> {
    let mut out = Vec::new();
    let reserved = reserved_bytes(options.fleet.as_ref());
    for (def, info) in current(js).await? {
        let def = sized(&def, options.fleet.as_ref());
        let name = def.config.name.clone();
        let mut config = def.config.clone();
        if let Some(replicas) = options.replicas {
            config.num_replicas = replicas;
        } else if let Some(info) = &info {
            config.num_replicas = info.config.num_replicas;
        }
        let Some(info) = info else {
            js.create_stream(config).await.map_err(|e| {
                let short = storage_exceeded(e.kind());
                Error::js(
                    format!("create stream {name}{}", storage_hint(short, reserved)),
                    e,
                )
            })?;
            out.push(Provisioned {
                stream: name,
                action: Action::Created,
                changed: vec![],
            });
            continue;
        };
        let changed = differences(&def, &info.config, options.replicas);
        if changed.is_empty() {
            out.push(Provisioned {
                stream: name,
                action: Action::Unchanged,
                changed,
            });
        } else {
            js.update_stream(config).await.map_err(|e| {
                let short = storage_exceeded(e.kind());
                Error::js(
                    format!(
                        "update stream {name} ({}){}",
                        changed.join(", "),
                        storage_hint(short, reserved)
                    ),
                    e,
                )
            })?;
            out.push(Provisioned {
                stream: name,
                action: Action::Updated,
                changed,
            });
        }
    }
    // The buckets must open through the client's own KV and object store APIs.
    js.get_key_value(pas_schemas::subjects::BUCKET_SCALER)
        .await
        .map_err(|e| Error::js("open key-value bucket pas-scaler", e))?;
    js.get_key_value(pas_schemas::subjects::BUCKET_FORECASTER)
        .await
        .map_err(|e| Error::js("open key-value bucket pas-forecaster", e))?;
    js.get_key_value(pas_schemas::subjects::BUCKET_HISTORY)
        .await
        .map_err(|e| Error::js("open key-value bucket pas-history", e))?;
    js.get_object_store(pas_schemas::subjects::BUCKET_MODELS)
        .await
        .map_err(|e| Error::js("open object store pas-models", e))?;
    for (stream, durable, _) in definitions::CONSUMER_FILES {
        let stage = definitions::consumer_stage(durable)?;
        let config = definitions::consumer(stage, stream, &pas_schemas::subjects::Prefix::live())?;
        let handle = js
            .get_stream(stream)
            .await
            .map_err(|e| Error::js(format!("get stream {stream}"), e))?;
        let (action, changed) = match handle.consumer_info(durable).await {
            Ok(info) => {
                let changed = consumer_differences(durable, &info.config);
                if changed.is_empty() {
                    continue;
                }
                (Action::Updated, changed)
            }
            Err(e) if e.kind() == jetstream::context::ConsumerInfoErrorKind::NotFound => {
                (Action::Created, vec![])
            }
            Err(e) => return Err(Error::js(format!("consumer info {durable} on {stream}"), e)),
        };
        // Creates, or updates one that drifted (a changed filter or limit).
        handle.create_consumer(config).await.map_err(|e| {
            Error::js(
                format!(
                    "create or update consumer {durable} on {stream} ({})",
                    changed.join(", ")
                ),
                e,
            )
        })?;
        out.push(Provisioned {
            stream: format!("{stream}/{durable}"),
            action,
            changed,
        });
    }
    Ok(out)
}

/// The settings of a live consumer's definition file its server config
/// does not match.
fn consumer_differences(durable: &str, actual: &jetstream::consumer::Config) -> Vec<String> {
    let Some((_, _, text)) = definitions::CONSUMER_FILES.iter().find(|(_, d, _)| *d == durable) else {
        return vec![];
    };
    let wanted: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
    let actual = serde_json::to_value(actual).unwrap_or_default();
    let Some(wanted) = wanted.as_object() else {
        return vec![];
    };
    wanted
        .iter()
        .filter(|(key, value)| {
            key.as_str() != "description"
                && !same(
                    value,
                    &actual
                        .get(key.as_str())
                        .cloned()
                        .unwrap_or(serde_json::Value::Null),
                )
        })
        .map(|(key, _)| key.clone())
        .collect()
}

/// Drift of the live consumers on `stream`, as `<consumer>: <setting>` (or
/// `<consumer>: missing`).
async fn consumers_drift(js: &jetstream::Context, stream: &str) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(handle) = js.get_stream(stream).await else {
        return out;
    };
    for (_, durable, _) in definitions::CONSUMER_FILES
        .iter()
        .filter(|(s, _, _)| *s == stream)
    {
        match handle.consumer_info(*durable).await {
            Ok(info) => out.extend(
                consumer_differences(durable, &info.config)
                    .into_iter()
                    .map(|k| format!("{durable}: {k}")),
            ),
            Err(_) => out.push(format!("{durable}: missing")),
        }
    }
    out
}

fn storage_exceeded(kind: jetstream::context::CreateStreamErrorKind) -> bool {
    matches!(kind, jetstream::context::CreateStreamErrorKind::JetStream(e)
        if e.error_code() == jetstream::ErrorCode::STORAGE_RESOURCES_EXCEEDED)
}

/// What to do when the server has too little file storage for the streams'
/// `max_bytes`: JetStream reserves each stream's limit when it is created,
/// and a server without `max_file_store` offers only 75 % of its free disk.
fn storage_hint(exceeded: bool, reserved: u64) -> String {
    if !exceeded {
        return String::new();
    }
    format!(
        ": the server has too little JetStream file storage left; the PAS streams reserve {:.1} GiB \
         in all, so set its `jetstream {{ max_file_store }}` to more than that (nats/server.conf sets 20GB, \
         the chart `nats.jetstream.maxFile`) or free disk",
        reserved as f64 / (1u64 << 30) as f64
    )
}

/// Bytes every stream PAS defines reserves together, sized for `fleet`.
pub fn reserved_bytes(fleet: Option<&crate::sizing::Fleet>) -> u64 {
    definitions::streams()
        .map(|defs| {
            defs.iter()
                .map(|d| sized(d, fleet).config.max_bytes.max(0) as u64)
                .sum()
        })
        .unwrap_or(0)
}

/// Settings a definition file may leave out but that change where messages
/// come from or go, or how much is kept: the server's value must be the
/// default then. (A `sources` entry with a subject transform is how another
/// user's messages could be written into a bucket.)
const WATCHED: [&str; 20] = [
    "subjects",
    "retention",
    "storage",
    "discard",
    "deny_delete",
    "deny_purge",
    "allow_rollup_hdrs",
    "allow_direct",
    "no_ack",
    "sources",
    "mirror",
    "subject_transform",
    "republish",
    "max_bytes",
    "max_msgs",
    "max_age",
    "max_msg_size",
    "max_msgs_per_subject",
    "sealed",
    "placement",
];

/// The settings where the server's config does not match the definition:
/// every key of the definition file, the [`WATCHED`] ones it leaves at
/// their defaults, and the replicas when `replicas` is given.
fn differences(def: &StreamDefinition, actual: &stream::Config, replicas: Option<usize>) -> Vec<String> {
    let actual = serde_json::to_value(actual).unwrap_or_default();
    let defaults = serde_json::to_value(&def.config).unwrap_or_default();
    let Some(wanted) = def.raw.as_object() else {
        return vec![];
    };
    let have = |key: &str| actual.get(key).cloned().unwrap_or(serde_json::Value::Null);
    let mut out: Vec<String> = wanted
        .iter()
        .filter(|(key, _)| key.as_str() != "num_replicas")
        .filter(|(key, value)| !same(value, &have(key)))
        .map(|(key, _)| key.clone())
        .collect();
    for key in WATCHED {
        if wanted.contains_key(key) {
            continue;
        }
        let default = defaults.get(key).cloned().unwrap_or(serde_json::Value::Null);
        if !same(&default, &have(key)) {
            out.push(key.to_owned());
        }
    }
    if let Some(replicas) = replicas
        && actual.get("num_replicas").and_then(|v| v.as_u64()) != Some(replicas as u64)
    {
        out.push("num_replicas".into());
    }
    out
}

fn same(wanted: &serde_json::Value, have: &serde_json::Value) -> bool {
    use serde_json::Value;
    let empty = |v: &Value| match v {
        Value::Null | Value::Bool(false) => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::String(s) => s.is_empty(),
        _ => false,
    };
    match (wanted, have) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (a, b) if empty(a) && empty(b) => true,
        (a, b) => a == b,
    }
}

/// One stream's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamStatus {
    /// Stream name.
    pub stream: String,
    /// Whether it exists.
    pub exists: bool,
    /// Messages held.
    pub messages: u64,
    /// Bytes held.
    pub bytes: u64,
    /// Number of consumers.
    pub consumers: usize,
    /// Sequence of the last message.
    pub last_sequence: u64,
    /// Replicas.
    pub replicas: usize,
    /// Definition settings the server's config does not match.
    pub drift: Vec<String>,
}

/// The state of every stream and bucket PAS defines; with `replicas`, a
/// stream with another number of replicas has drifted, and with `fleet`
/// the limits are the fleet's.
pub async fn status(js: &jetstream::Context, options: Options) -> Result<Vec<StreamStatus>, Error> {
    let mut out: Vec<StreamStatus> = current(js)
        .await?
        .into_iter()
        .map(|(def, info)| (sized(&def, options.fleet.as_ref()), info))
        .map(|(def, info)| match info {
            None => StreamStatus {
                stream: def.config.name.clone(),
                exists: false,
                messages: 0,
                bytes: 0,
                consumers: 0,
                last_sequence: 0,
                replicas: 0,
                drift: vec![],
            },
            Some(info) => StreamStatus {
                stream: def.config.name.clone(),
                exists: true,
                messages: info.state.messages,
                bytes: info.state.bytes,
                consumers: info.state.consumer_count,
                last_sequence: info.state.last_sequence,
                replicas: info.config.num_replicas,
                drift: differences(&def, &info.config, options.replicas),
            },
        })
        .collect();
    for s in out.iter_mut().filter(|s| s.exists) {
        let consumers = consumers_drift(js, &s.stream).await;
        s.drift.extend(consumers);
    }
    Ok(out)
}

/// Every definition with the server's info of its stream, `None` where the
/// stream does not exist.
async fn current(js: &jetstream::Context) -> Result<Vec<(StreamDefinition, Option<stream::Info>)>, Error> {
    let existing: Vec<String> = js
        .stream_names()
        .try_collect()
        .await
        .map_err(|e| Error::js("list streams", e))?;
    let mut out = Vec::new();
    for def in definitions::streams()? {
        let name = def.config.name.clone();
        if !existing.contains(&name) {
            out.push((def, None));
            continue;
        }
        let mut s = js
            .get_stream(&name)
            .await
            .map_err(|e| Error::js(format!("get stream {name}"), e))?;
        let info = s
            .info()
            .await
            .map_err(|e| Error::js(format!("stream info {name}"), e))?
            .clone();
        out.push((def, Some(info)));
    }
    Ok(out)
}
