//! Which pod each cgroup belongs to: a watch on the pods of this node.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
pub use pas_schemas::cpu_millicores;
use tokio_util::sync::CancellationToken;

/// What the agent needs to know of a pod.
#[derive(Debug, Clone, PartialEq)]
pub struct PodInfo {
    /// Namespace.
    pub namespace: String,
    /// Pod name.
    pub name: String,
    /// The workload that controls it, if of a sampled kind: a StatefulSet,
    /// a Deployment (through its ReplicaSet) or another listed kind.
    pub workload: Option<String>,
    /// Sum of its containers' CPU requests in millicores, if any is set.
    pub cpu_request_millicores: Option<f64>,
}

/// Pods of this node by UID, kept current by [`watch_pods`].
pub type PodMap = Arc<RwLock<HashMap<String, PodInfo>>>;

/// The workload that controls a pod, when its kind is among `kinds`.
///
/// A Deployment's pods are controlled by a ReplicaSet named
/// `<deployment>-<pod-template-hash>`, and carry that hash as the label
/// `pod-template-hash`: the Deployment is the ReplicaSet's name without it.
/// This needs no read of ReplicaSets (no RBAC, no memory for them); a
/// ReplicaSet that no Deployment made has no such label and is not sampled.
/// Any other kind in `kinds` counts when it controls the pod directly.
pub fn controller(pod: &Pod, kinds: &[String]) -> Option<String> {
    let meta = &pod.metadata;
    let owner = meta
        .owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true))?;
    if owner.kind == "ReplicaSet" {
        if !kinds.iter().any(|k| k == "Deployment") {
            return None;
        }
        let hash = meta.labels.as_ref()?.get("pod-template-hash")?;
        let deployment = owner.name.strip_suffix(hash.as_str())?.strip_suffix('-')?;
        return (!deployment.is_empty()).then(|| deployment.to_owned());
    }
    (owner.kind != "Deployment" && kinds.contains(&owner.kind)).then(|| owner.name.clone())
}

/// The UID and facts of a pod; its workload when of one of `kinds`.
pub fn pod_info(pod: &Pod, kinds: &[String]) -> Option<(String, PodInfo)> {
    let meta = &pod.metadata;
    let uid = meta.uid.clone()?;
    let workload = controller(pod, kinds);
    let requests: Vec<f64> = pod
        .spec
        .as_ref()
        .map(|spec| {
            spec.containers
                .iter()
                .filter_map(|c| c.resources.as_ref()?.requests.as_ref()?.get("cpu"))
                .filter_map(|q| cpu_millicores(&q.0))
                .collect()
        })
        .unwrap_or_default();
    let cpu_request_millicores = (!requests.is_empty()).then(|| requests.iter().sum());
    Some((
        uid,
        PodInfo {
            namespace: meta.namespace.clone().unwrap_or_else(|| "default".into()),
            name: meta.name.clone()?,
            workload,
            cpu_request_millicores,
        },
    ))
}

/// Watches the pods scheduled on `node` (field selector `spec.nodeName`) and
/// keeps `map` current until `shutdown`, naming the workloads of `kinds`.
/// Errors are retried with the watcher's default backoff.
pub async fn watch_pods(
    client: Client,
    node: String,
    kinds: Vec<String>,
    map: PodMap,
    shutdown: CancellationToken,
) {
    let api: Api<Pod> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let mut events = watcher(api, config).default_backoff().boxed();
    let mut fresh: Option<HashMap<String, PodInfo>> = None;
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
            e = events.next() => e,
        };
        let Some(event) = event else { return };
        match event {
            Ok(watcher::Event::Apply(pod)) => {
                if let Some((uid, info)) = pod_info(&pod, &kinds) {
                    write(&map).insert(uid, info);
                }
            }
            Ok(watcher::Event::Delete(pod)) => {
                if let Some(uid) = pod.metadata.uid {
                    write(&map).remove(&uid);
                }
            }
            Ok(watcher::Event::Init) => fresh = Some(HashMap::new()),
            Ok(watcher::Event::InitApply(pod)) => {
                if let (Some(buf), Some((uid, info))) = (fresh.as_mut(), pod_info(&pod, &kinds)) {
                    buf.insert(uid, info);
                }
            }
            Ok(watcher::Event::InitDone) => {
                if let Some(buf) = fresh.take() {
                    tracing::debug!(pods = buf.len(), "Pod list of this node refreshed.");
                    *write(&map) = buf;
                }
            }
            Err(error) => tracing::warn!(%error, "Watching pods failed; retrying."),
        }
    }
}

fn write(map: &PodMap) -> std::sync::RwLockWriteGuard<'_, HashMap<String, PodInfo>> {
    map.write().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds() -> Vec<String> {
        crate::Config::default().workload_kinds
    }

    #[test]
    fn statefulset_pod_with_requests() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "pas-ss-1", "namespace": "shop", "uid": "0b6f6ad4-3a9c-4e27-9d0e-2b4a1c9f7e01",
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": "1"},
                    {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "pas-ss", "uid": "2", "controller": true}
                ]
            },
            "spec": {"nodeName": "n1", "containers": [
                {"name": "app", "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}}},
                {"name": "sidecar", "resources": {"requests": {"cpu": "0.25"}}},
                {"name": "no-request"}
            ]}
        }))
        .unwrap();
        let (uid, info) = pod_info(&pod, &kinds()).unwrap();
        assert_eq!(uid, "0b6f6ad4-3a9c-4e27-9d0e-2b4a1c9f7e01");
        assert_eq!(info.workload.as_deref(), Some("pas-ss"));
        assert_eq!(info.cpu_request_millicores, Some(500.0));
        assert_eq!(info.namespace, "shop");
    }

    fn owned(owner: &str, name: &str, hash: Option<&str>) -> Pod {
        let mut meta = serde_json::json!({"name": "p", "namespace": "shop", "uid": "u1",
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": owner, "name": name, "uid": "3", "controller": true}]});
        if let Some(hash) = hash {
            meta["labels"] = serde_json::json!({"app": "web", "pod-template-hash": hash});
        }
        serde_json::from_value(
            serde_json::json!({"metadata": meta, "spec": {"containers": [{"name": "app"}]}}),
        )
        .unwrap()
    }

    /// Issue 20: a Deployment's pod is named by its Deployment, through its
    /// ReplicaSet's name less the pod-template-hash.
    #[test]
    fn deployment_pod_through_its_replicaset() {
        let pod = owned("ReplicaSet", "web-api-7d9f8b6c5", Some("7d9f8b6c5"));
        let (_, info) = pod_info(&pod, &kinds()).unwrap();
        assert_eq!(info.workload.as_deref(), Some("web-api"));
        assert_eq!(info.cpu_request_millicores, None);
        // Without Deployment among the kinds, not sampled.
        assert_eq!(controller(&pod, &["StatefulSet".into()]), None);
        // A ReplicaSet no Deployment made (no hash label, or a name without it).
        assert_eq!(controller(&owned("ReplicaSet", "web", None), &kinds()), None);
        assert_eq!(
            controller(&owned("ReplicaSet", "web-1", Some("abc")), &kinds()),
            None
        );
        assert_eq!(
            controller(&owned("ReplicaSet", "abc", Some("abc")), &kinds()),
            None
        );
    }

    #[test]
    fn other_controllers_only_when_listed() {
        assert_eq!(controller(&owned("DaemonSet", "logs", None), &kinds()), None);
        assert_eq!(controller(&owned("Job", "batch", None), &kinds()), None);
        let listed = ["StatefulSet".to_string(), "CloneSet".to_string()];
        assert_eq!(
            controller(&owned("CloneSet", "shop-api", None), &listed).as_deref(),
            Some("shop-api")
        );
        // A pod a Deployment claims to own directly is not how Deployments work.
        assert_eq!(controller(&owned("Deployment", "web", None), &kinds()), None);
    }

    /// No Kubernetes API server can run here, so this runs the real watcher
    /// against kube's tower-test mock service and asserts the exact requests
    /// (verb, path, field selector) and how the answers change the pod map.
    #[tokio::test]
    async fn watch_asks_for_this_nodes_pods_and_follows_changes() {
        use http::{Method, Request, Response};
        use kube::client::Body;

        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "default");
        let map = PodMap::default();
        let stop = CancellationToken::new();
        let task = tokio::spawn(watch_pods(
            client,
            "node-a".into(),
            kinds(),
            map.clone(),
            stop.clone(),
        ));

        let pod = |name: &str, uid: &str, cpu: &str| {
            serde_json::json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": "shop", "uid": uid, "resourceVersion": "101",
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "uid": "s", "controller": true}]},
                "spec": {"nodeName": "node-a", "containers": [{"name": "app", "resources": {"requests": {"cpu": cpu}}}]}
            })
        };

        // First the list of the node's pods.
        let (req, send) = handle.next_request().await.expect("a list request");
        assert_eq!(req.method(), Method::GET);
        assert_eq!(req.uri().path(), "/api/v1/pods");
        let query = req.uri().query().unwrap_or_default().to_owned();
        assert!(query.contains("fieldSelector=spec.nodeName%3Dnode-a"), "{query}");
        assert!(!query.contains("watch=true"), "{query}");
        let list = serde_json::json!({
            "apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "101"},
            "items": [pod("web-0", "uid-0", "250m"), pod("web-1", "uid-1", "500m")]
        });
        send.send_response(Response::new(Body::from(serde_json::to_vec(&list).unwrap())));

        // Then a watch from the list's version: web-0 goes, web-2 comes.
        let (req, send) = handle.next_request().await.expect("a watch request");
        let query = req.uri().query().unwrap_or_default().to_owned();
        assert_eq!(req.uri().path(), "/api/v1/pods");
        assert!(
            query.contains("watch=true") && query.contains("resourceVersion=101"),
            "{query}"
        );
        assert!(query.contains("fieldSelector=spec.nodeName%3Dnode-a"), "{query}");
        let events = [
            serde_json::json!({"type": "DELETED", "object": pod("web-0", "uid-0", "250m")}),
            serde_json::json!({"type": "ADDED", "object": pod("web-2", "uid-2", "1")}),
        ]
        .iter()
        .map(|e| format!("{e}\n"))
        .collect::<String>();
        send.send_response(Response::new(Body::from(events.into_bytes())));

        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let names: Vec<_> = {
                let m = map.read().unwrap();
                let mut v: Vec<_> = m
                    .values()
                    .map(|p| (p.name.clone(), p.cpu_request_millicores))
                    .collect();
                v.sort_by(|a, b| a.0.cmp(&b.0));
                v
            };
            if names
                == [
                    ("web-1".to_string(), Some(500.0)),
                    ("web-2".to_string(), Some(1000.0)),
                ]
            {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "pod map never became web-1, web-2: {names:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        stop.cancel();
        task.await.unwrap();
    }
}
