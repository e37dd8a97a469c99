//! Model versions in the `pas-models` object store.
//!
//! Version `N` of the model for workload key `<namespace>/<workload>` is two
//! objects: `<key>/v<N>/weights.safetensors` and `<key>/v<N>/manifest.json`
//! (under `replay/<run>/` for a replay run). The manifest is written last, so
//! a version exists exactly when its manifest does.

use std::collections::{BTreeMap, HashMap};

use async_nats::jetstream::object_store::ObjectStore;
use async_nats::jetstream::stream::Stream;
use futures::StreamExt;
use pas_schemas::ModelManifest;
use pas_schemas::subjects::Prefix;

use crate::Error;

/// Stored versions of one key, by version number.
pub type Versions = BTreeMap<u64, ModelManifest>;

/// Where a run's models live in the bucket.
#[derive(Debug, Clone)]
pub struct Layout {
    root: String,
}

impl Layout {
    /// The layout for live models or a replay run's.
    pub fn new(prefix: &Prefix) -> Layout {
        Layout {
            root: prefix.model_root(),
        }
    }

    /// Object name of one file of one version.
    pub fn object(&self, key: &str, version: u64, file: &str) -> String {
        pas_schemas::subjects::model_object(&self.root, key, version, file)
    }

    /// The key and version of a manifest object, if `name` is one of ours.
    pub fn manifest_of<'a>(&self, name: &'a str) -> Option<(&'a str, u64)> {
        let rest = name.strip_prefix(self.root.as_str())?;
        if self.root.is_empty() && rest.starts_with(pas_schemas::subjects::MODELS_OF_RUNS) {
            return None;
        }
        let rest = rest.strip_suffix("/manifest.json")?;
        let (key, version) = rest.rsplit_once("/v")?;
        Some((key, version.parse().ok()?))
    }
}

/// Reads every manifest of this layout, by key. `chunks` is the bucket's
/// stream (`OBJ_pas-models`), see [`read`].
///
/// An entry that cannot be read (object metadata that does not parse, such
/// as an empty `mtime`, or a manifest that fails validation) is logged and
/// skipped: one bad object must not stop a stage from starting.
pub async fn load(
    store: &ObjectStore,
    chunks: &Stream,
    layout: &Layout,
) -> Result<HashMap<String, Versions>, Error> {
    let mut list = store
        .list()
        .await
        .map_err(|e| Error::js("list the model bucket", e))?;
    let mut names = Vec::new();
    while let Some(entry) = list.next().await {
        match entry {
            Ok(info) => names.push(info.name),
            Err(error) => tracing::warn!(%error, "Unreadable entry in the model bucket; skipping it."),
        }
    }
    let mut out: HashMap<String, Versions> = HashMap::new();
    for name in names {
        let Some((key, version)) = layout.manifest_of(&name) else {
            continue;
        };
        let bytes = match read(store, chunks, &name).await {
            Ok(bytes) => bytes,
            Err(error) if chunks.get_info().await.is_ok() => {
                // The bucket answers, so the fault is this object's (metadata
                // that does not parse, deleted since it was listed).
                tracing::warn!(object = name, %error, "Unreadable model object; skipping it.");
                continue;
            }
            Err(error) => return Err(error),
        };
        match pas_schemas::decode::<ModelManifest>(&bytes) {
            Ok(m) if m.key == key && m.version == version => {
                out.entry(key.to_owned()).or_default().insert(version, m);
            }
            Ok(_) => tracing::warn!(
                object = name,
                "Manifest names another key or version; ignoring it."
            ),
            Err(error) => tracing::warn!(object = name, %error, "Unreadable manifest; ignoring it."),
        }
    }
    Ok(out)
}

/// Reads one object whole: its info, then its chunks by direct gets on the
/// bucket's stream `chunks`. The client's own `get` creates a consumer per
/// object, and a thousand of them in a row (a forecaster starting with a
/// model per workload) stalled the client; direct gets need none.
pub async fn read(store: &ObjectStore, chunks: &Stream, name: &str) -> Result<Vec<u8>, Error> {
    let info = store
        .info(name)
        .await
        .map_err(|e| Error::js("read a model object", e))?;
    let subject = pas_schemas::subjects::object_chunks(&info.bucket, &info.nuid);
    let mut bytes = Vec::with_capacity(info.size);
    let mut next = 1;
    for _ in 0..info.chunks {
        let chunk = chunks
            .direct_get_next_for_subject(subject.as_str(), Some(next))
            .await
            .map_err(|e| Error::js("read a model object", e))?;
        bytes.extend_from_slice(&chunk.payload);
        next = chunk.sequence + 1;
    }
    if bytes.len() != info.size {
        return Err(Error::ShortObject {
            name: name.to_owned(),
            read: bytes.len(),
            size: info.size,
        });
    }
    Ok(bytes)
}

/// Stores a version: weights first, then the manifest.
pub async fn save(
    store: &ObjectStore,
    layout: &Layout,
    manifest: &ModelManifest,
    weights: &[u8],
) -> Result<(), Error> {
    let (key, version) = (manifest.key.as_str(), manifest.version);
    store
        .put(
            layout.object(key, version, "weights.safetensors").as_str(),
            &mut &weights[..],
        )
        .await
        .map_err(|e| Error::js("store model weights", e))?;
    let json = pas_schemas::encode(manifest).map_err(Error::Encode)?;
    store
        .put(
            layout.object(key, version, "manifest.json").as_str(),
            &mut &json[..],
        )
        .await
        .map_err(|e| Error::js("store a manifest", e))?;
    Ok(())
}

/// Deletes all but the newest `keep` versions, never the newest accepted one.
/// Manifests go first, so a half-deleted version is no version.
pub async fn prune(
    store: &ObjectStore,
    layout: &Layout,
    key: &str,
    versions: &mut Versions,
    keep: usize,
) -> Result<(), Error> {
    let newest_accepted = versions.values().rev().find(|m| m.accepted).map(|m| m.version);
    let doomed: Vec<u64> = versions
        .keys()
        .rev()
        .skip(keep)
        .copied()
        .filter(|v| Some(*v) != newest_accepted)
        .collect();
    for version in doomed {
        for file in ["manifest.json", "weights.safetensors"] {
            match store.delete(layout.object(key, version, file)).await {
                Ok(()) => {}
                Err(e) if e.kind() == async_nats::jetstream::object_store::DeleteErrorKind::NotFound => {}
                Err(e) => return Err(Error::js("delete an old model version", e)),
            }
        }
        versions.remove(&version);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_round_trip_and_runs_stay_apart() {
        let live = Layout::new(&Prefix::live());
        let run = Layout::new(&Prefix::replay("exp1").unwrap());
        assert_eq!(
            live.object("shop/web", 3, "manifest.json"),
            "shop/web/v3/manifest.json"
        );
        assert_eq!(
            run.object("shop/web", 3, "manifest.json"),
            "replay/exp1/shop/web/v3/manifest.json"
        );
        assert_eq!(
            live.manifest_of("shop/web/v3/manifest.json"),
            Some(("shop/web", 3))
        );
        assert_eq!(
            run.manifest_of("replay/exp1/shop/web/v12/manifest.json"),
            Some(("shop/web", 12))
        );
        assert_eq!(live.manifest_of("replay/exp1/shop/web/v12/manifest.json"), None);
        assert_eq!(run.manifest_of("shop/web/v3/manifest.json"), None);
        assert_eq!(live.manifest_of("shop/web/v3/weights.safetensors"), None);
    }
}
