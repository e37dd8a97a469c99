//! The JetStream streams, buckets and consumers PAS uses.
//!
//! They are JSON files under `nats/jetstream/` in the format of the JetStream
//! API, so an operator can also create them by hand with
//! `nats stream add --config nats/jetstream/streams/PAS_SAMPLES.json` and
//! `nats consumer add PAS_SAMPLES --config nats/jetstream/consumers/…`. The
//! key-value buckets `pas-scaler` and `pas-forecaster` and the object store
//! `pas-models` are streams too (`KV_pas-scaler`, `KV_pas-forecaster`,
//! `OBJ_pas-models`), with the settings
//! async-nats gives buckets it creates itself.

use async_nats::jetstream::{consumer::pull, stream};
use pas_schemas::subjects::{BUCKET_FORECASTER, BUCKET_HISTORY, BUCKET_MODELS, BUCKET_SCALER, Prefix, Stage};

use crate::Error;

/// Every stream definition file, by file stem.
pub const STREAM_FILES: [(&str, &str); 9] = [
    (
        "PAS_SAMPLES",
        include_str!("../jetstream/streams/PAS_SAMPLES.json"),
    ),
    (
        "PAS_FORECASTS",
        include_str!("../jetstream/streams/PAS_FORECASTS.json"),
    ),
    (
        "PAS_DECISIONS",
        include_str!("../jetstream/streams/PAS_DECISIONS.json"),
    ),
    ("PAS_DLQ", include_str!("../jetstream/streams/PAS_DLQ.json")),
    (
        "PAS_TRAINING",
        include_str!("../jetstream/streams/PAS_TRAINING.json"),
    ),
    (
        "KV_pas-scaler",
        include_str!("../jetstream/streams/KV_pas-scaler.json"),
    ),
    (
        "KV_pas-forecaster",
        include_str!("../jetstream/streams/KV_pas-forecaster.json"),
    ),
    (
        "KV_pas-history",
        include_str!("../jetstream/streams/KV_pas-history.json"),
    ),
    (
        "OBJ_pas-models",
        include_str!("../jetstream/streams/OBJ_pas-models.json"),
    ),
];

/// Every consumer definition file, as (stream, durable name, JSON).
pub const CONSUMER_FILES: [(&str, &str, &str); 5] = [
    (
        "PAS_SAMPLES",
        "pas-recorder-samples",
        include_str!("../jetstream/consumers/PAS_SAMPLES.pas-recorder-samples.json"),
    ),
    (
        "PAS_FORECASTS",
        "pas-scaler-forecasts",
        include_str!("../jetstream/consumers/PAS_FORECASTS.pas-scaler-forecasts.json"),
    ),
    (
        "PAS_FORECASTS",
        "pas-recorder-forecasts",
        include_str!("../jetstream/consumers/PAS_FORECASTS.pas-recorder-forecasts.json"),
    ),
    (
        "PAS_DECISIONS",
        "pas-recorder-decisions",
        include_str!("../jetstream/consumers/PAS_DECISIONS.pas-recorder-decisions.json"),
    ),
    (
        "PAS_TRAINING",
        "pas-trainer-training",
        include_str!("../jetstream/consumers/PAS_TRAINING.pas-trainer-training.json"),
    ),
];

/// The stage whose live durable consumer `durable` is (`pas-<stage>-…`).
pub fn consumer_stage(durable: &str) -> Result<Stage, Error> {
    [Stage::Trainer, Stage::Forecaster, Stage::Scaler, Stage::Recorder]
        .into_iter()
        .find(|stage| durable.starts_with(&format!("pas-{stage}-")))
        .ok_or_else(|| Error::NoConsumer {
            stage: durable.to_owned(),
            stream: String::new(),
        })
}

/// Stream name of the key-value bucket `pas-scaler`.
pub fn kv_stream() -> String {
    pas_schemas::subjects::kv_stream(BUCKET_SCALER)
}

/// Stream name of the key-value bucket `pas-forecaster`.
pub fn forecaster_kv_stream() -> String {
    pas_schemas::subjects::kv_stream(BUCKET_FORECASTER)
}

/// Stream name of the key-value bucket `pas-history`.
pub fn history_kv_stream() -> String {
    pas_schemas::subjects::kv_stream(BUCKET_HISTORY)
}

/// Stream name of the object store `pas-models`.
pub fn object_stream() -> String {
    pas_schemas::subjects::object_stream(BUCKET_MODELS)
}

/// A stream definition: the parsed config and the file's own JSON (the
/// fields PAS sets, which provisioning compares with the server's).
#[derive(Debug, Clone)]
pub struct StreamDefinition {
    /// The config to create.
    pub config: stream::Config,
    /// The definition file as JSON.
    pub raw: serde_json::Value,
}

/// Every stream PAS provisions: the four streams, then the four buckets.
pub fn streams() -> Result<Vec<StreamDefinition>, Error> {
    STREAM_FILES
        .iter()
        .map(|(name, text)| {
            let parse = |source| Error::Definition {
                name: format!("streams/{name}.json"),
                source,
            };
            let raw: serde_json::Value = serde_json::from_str(text).map_err(parse)?;
            let config = serde_json::from_value(raw.clone()).map_err(parse)?;
            Ok(StreamDefinition { config, raw })
        })
        .collect()
}

/// The durable pull consumer of `stage` on `stream`, for subjects under
/// `prefix`: a replay run gets its own consumer, filtered to the run's
/// subjects, so it never moves the live consumer's position.
pub fn consumer(stage: Stage, stream: &str, prefix: &Prefix) -> Result<pull::Config, Error> {
    let live = stage.consumer(stream, &Prefix::live());
    let (_, name, text) = CONSUMER_FILES
        .iter()
        .find(|(s, n, _)| *s == stream && *n == live)
        .ok_or_else(|| Error::NoConsumer {
            stage: stage.to_string(),
            stream: stream.to_owned(),
        })?;
    let mut config: pull::Config = serde_json::from_str(text).map_err(|source| Error::Definition {
        name: format!("consumers/{stream}.{name}.json"),
        source,
    })?;
    config.durable_name = Some(stage.consumer(stream, prefix));
    if let Some(run) = prefix.run() {
        config.filter_subject = format!("replay.{run}.{}", config.filter_subject);
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pas_schemas::subjects::{STREAM_FORECASTS, STREAM_SAMPLES, STREAM_TRAINING, STREAMS};

    #[test]
    fn definitions_parse_and_match_the_names_in_pas_schemas() {
        let defs = streams().unwrap();
        let names: Vec<_> = defs.iter().map(|d| d.config.name.as_str()).collect();
        for s in STREAMS {
            assert!(names.contains(&s), "no definition for {s}");
        }
        assert!(names.contains(&kv_stream().as_str()));
        assert!(names.contains(&forecaster_kv_stream().as_str()));
        assert!(names.contains(&history_kv_stream().as_str()));
        assert!(names.contains(&object_stream().as_str()));
        for (stem, _) in STREAM_FILES {
            assert!(names.contains(&stem), "file {stem} names another stream");
        }
        let samples = &defs[0].config;
        let live = Prefix::live();
        let replay = Prefix::replay("r1").unwrap();
        // Both live and replay samples land in the stream.
        assert!(samples.subjects.contains(&live.all_cpu()));
        assert!(samples.subjects.iter().any(|s| s == "replay.*.pas.cpu.>"));
        assert!(replay.all_cpu().starts_with("replay.r1."));
    }

    #[test]
    fn consumers_follow_the_prefix() {
        let live = consumer(Stage::Trainer, STREAM_TRAINING, &Prefix::live()).unwrap();
        assert_eq!(live.durable_name.as_deref(), Some("pas-trainer-training"));
        assert_eq!(live.filter_subject, Prefix::live().all_train());
        let run = consumer(Stage::Trainer, STREAM_TRAINING, &Prefix::replay("exp").unwrap()).unwrap();
        assert_eq!(run.durable_name.as_deref(), Some("pas-trainer-training-exp"));
        assert_eq!(run.filter_subject, "replay.exp.pas.train.>");
        let samples = consumer(Stage::Recorder, STREAM_SAMPLES, &Prefix::live()).unwrap();
        assert_eq!(samples.durable_name.as_deref(), Some("pas-recorder-samples"));
        assert!(consumer(Stage::Agent, STREAM_FORECASTS, &Prefix::live()).is_err());
    }
}
