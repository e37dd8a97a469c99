//! The Kubernetes API as a [`Cluster`].
//!
//! - StatefulSets and HorizontalPodAutoscalers are watched (one list, then a
//!   watch, in every namespace) into reflector stores, so a decision reads
//!   no API.
//! - Replicas change only through the `scale` subresource: a JSON merge
//!   patch `{"metadata":{"resourceVersion":…},"spec":{"replicas":…}}` with
//!   field manager `pas-scaler`. The resource version makes the change
//!   conditional on what the decision saw, as the HPA's update of the scale
//!   is. A conflict (409) re-reads the scale: if another writer changed the
//!   replicas the decision is void ([`ClusterError::Changed`]), otherwise
//!   the patch is retried against the new version.
//! - Conflicts, throttling (429) and server errors (5xx) are retried with
//!   capped, jittered exponential backoff ([`Retry`]); 403 and 404 are not.
//! - Each change gets an Event (`events.k8s.io/v1`) on the StatefulSet.
//!
//! The RBAC this needs is in `docs/scaler.md`.

use std::sync::Mutex;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

use crate::cluster::{Cluster, ClusterError, EventKind, Workload};

/// The field manager of every change the scaler makes.
pub const FIELD_MANAGER: &str = "pas-scaler";

/// How Kubernetes calls are retried.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Retry {
    /// First delay.
    pub min_delay: Duration,
    /// Longest delay.
    pub max_delay: Duration,
    /// Retries after the first attempt.
    pub times: usize,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            min_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
            times: 4,
        }
    }
}

/// The Kubernetes API.
#[derive(Clone)]
pub struct Kube {
    client: Client,
    statefulsets: Store<StatefulSet>,
    hpas: Store<HorizontalPodAutoscaler>,
    recorder: Recorder,
    retry: Retry,
}

impl Kube {
    /// A client from the in-cluster service account or the kubeconfig, with
    /// kube's own retry layer off (the scaler retries, once).
    pub async fn client() -> Result<Client, String> {
        let mut config = kube::Config::infer().await.map_err(|e| e.to_string())?;
        config.default_retry = false;
        Client::try_from(config).map_err(|e| e.to_string())
    }

    /// Starts watching StatefulSets and HPAs until `shutdown`. `instance`
    /// names this scaler in Events.
    pub fn start(client: Client, instance: String, retry: Retry, shutdown: CancellationToken) -> Kube {
        let (statefulsets, writer) = reflector::store::<StatefulSet>();
        tokio::spawn(reflect(Api::all(client.clone()), writer, shutdown.clone()));
        let (hpas, writer) = reflector::store::<HorizontalPodAutoscaler>();
        tokio::spawn(reflect(Api::all(client.clone()), writer, shutdown));
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance: Some(instance),
        };
        let recorder = Recorder::new(client.clone(), reporter);
        Kube {
            client,
            statefulsets,
            hpas,
            recorder,
            retry,
        }
    }

    /// Waits until both watches have listed everything once.
    pub async fn ready(&self) {
        let _ = self.statefulsets.wait_until_ready().await;
        let _ = self.hpas.wait_until_ready().await;
    }

    fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.retry.min_delay)
            .with_max_delay(self.retry.max_delay)
            .with_max_times(self.retry.times)
            .with_jitter()
    }
}

async fn reflect<K>(api: Api<K>, writer: reflector::store::Writer<K>, shutdown: CancellationToken)
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default())).default_backoff();
    futures::pin_mut!(stream);
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => return,
            next = stream.next() => next,
        };
        match next {
            None => return,
            Some(Err(error)) => {
                tracing::warn!(%error, kind = K::kind(&K::DynamicType::default()).as_ref(), "Watch failed; retrying.")
            }
            Some(Ok(_)) => {}
        }
    }
}

/// Sorts a failed call into what the scaler does about it.
fn classify(error: kube::Error) -> ClusterError {
    match error {
        kube::Error::Api(status) => match status.code {
            404 => ClusterError::NotFound,
            403 => ClusterError::Forbidden(status.message),
            409 => ClusterError::Conflict(status.message),
            429 => ClusterError::Throttled(status.message),
            code @ 500..=599 => ClusterError::Server {
                code,
                message: status.message,
            },
            code => ClusterError::Request(format!("{code}: {}", status.message)),
        },
        other => ClusterError::Request(other.to_string()),
    }
}

fn to_workload(sts: &StatefulSet, hpa: Option<String>) -> Workload {
    let spec = sts.spec.as_ref();
    let requests: Vec<f64> = spec
        .and_then(|s| s.template.spec.as_ref())
        .map(|p| {
            p.containers
                .iter()
                .filter_map(|c| c.resources.as_ref()?.requests.as_ref()?.get("cpu"))
                .filter_map(|q| pas_schemas::cpu_millicores(&q.0))
                .collect()
        })
        .unwrap_or_default();
    Workload {
        namespace: sts.metadata.namespace.clone().unwrap_or_default(),
        name: sts.metadata.name.clone().unwrap_or_default(),
        replicas: spec.and_then(|s| s.replicas).unwrap_or(1).max(0) as u32,
        ready_replicas: sts
            .status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0)
            .max(0) as u32,
        annotations: sts.metadata.annotations.clone().unwrap_or_default(),
        cpu_request_millicores: (!requests.is_empty()).then(|| requests.iter().sum()),
        resource_version: sts.metadata.resource_version.clone(),
        uid: sts.metadata.uid.clone(),
        hpa,
    }
}

impl Cluster for Kube {
    async fn workload(&self, namespace: &str, name: &str) -> Result<Option<Workload>, ClusterError> {
        let Some(sts) = self.statefulsets.get(&ObjectRef::new(name).within(namespace)) else {
            return Ok(None);
        };
        let hpa = self
            .hpas
            .find(|h| {
                h.metadata.namespace.as_deref() == Some(namespace)
                    && h.spec.as_ref().is_some_and(|s| {
                        s.scale_target_ref.kind == "StatefulSet" && s.scale_target_ref.name == name
                    })
            })
            .and_then(|h| h.metadata.name.clone());
        Ok(Some(to_workload(&sts, hpa)))
    }

    async fn scale(&self, workload: &Workload, replicas: u32) -> Result<(), ClusterError> {
        let api: Api<StatefulSet> = Api::namespaced(self.client.clone(), &workload.namespace);
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        let version = Mutex::new(workload.resource_version.clone());
        let attempt = || async {
            let rv = version.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let mut patch = serde_json::json!({"spec": {"replicas": replicas}});
            if let Some(rv) = rv {
                patch["metadata"] = serde_json::json!({"resourceVersion": rv});
            }
            match api
                .patch_scale(&workload.name, &params, &Patch::Merge(&patch))
                .await
            {
                Ok(_) => Ok(()),
                Err(error) => match classify(error) {
                    ClusterError::Conflict(message) => {
                        // Someone wrote the StatefulSet: is our decision still valid?
                        let scale = api.get_scale(&workload.name).await.map_err(classify)?;
                        let now = scale.spec.and_then(|s| s.replicas).unwrap_or(0).max(0) as u32;
                        if now != workload.replicas {
                            return Err(ClusterError::Changed(now));
                        }
                        *version.lock().unwrap_or_else(|p| p.into_inner()) = scale.metadata.resource_version;
                        Err(ClusterError::Conflict(message))
                    }
                    other => Err(other),
                },
            }
        };
        attempt
            .retry(self.backoff())
            .when(ClusterError::is_retryable)
            .notify(|error, after| {
                tracing::warn!(namespace = %workload.namespace, workload = %workload.name, %error, ?after, "Scale patch failed; retrying.");
            })
            .await
    }

    async fn event(
        &self,
        workload: &Workload,
        kind: EventKind,
        reason: &str,
        note: String,
    ) -> Result<(), ClusterError> {
        let reference = ObjectReference {
            api_version: Some("apps/v1".into()),
            kind: Some("StatefulSet".into()),
            name: Some(workload.name.clone()),
            namespace: Some(workload.namespace.clone()),
            uid: workload.uid.clone(),
            ..ObjectReference::default()
        };
        let event = Event {
            type_: match kind {
                EventKind::Normal => EventType::Normal,
                EventKind::Warning => EventType::Warning,
            },
            reason: reason.into(),
            note: Some(note),
            action: "Scale".into(),
            secondary: None,
        };
        self.recorder.publish(&event, &reference).await.map_err(classify)
    }
}

#[cfg(test)]
mod tests {
    //! No Kubernetes API server can run here, so these run the real kube
    //! client against kube's tower-test mock service: each scenario asserts
    //! the exact requests (verb, path, query, body) and answers them.

    use std::collections::BTreeMap;

    use http::{Method, Request, Response, StatusCode};
    use kube::client::Body;
    use tower_test::mock::Handle;

    use super::*;

    type Mock = Handle<Request<Body>, Response<Body>>;

    fn fast() -> Retry {
        Retry {
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
            times: 3,
        }
    }

    fn kube() -> (Kube, Mock) {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "default");
        let (statefulsets, _) = reflector::store::<StatefulSet>();
        let (hpas, _) = reflector::store::<HorizontalPodAutoscaler>();
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: FIELD_MANAGER.into(),
                instance: Some("scaler-0".into()),
            },
        );
        (
            Kube {
                client,
                statefulsets,
                hpas,
                recorder,
                retry: fast(),
            },
            handle,
        )
    }

    fn web(replicas: u32) -> Workload {
        Workload {
            namespace: "shop".into(),
            name: "web".into(),
            replicas,
            ready_replicas: replicas,
            annotations: BTreeMap::new(),
            cpu_request_millicores: Some(500.0),
            resource_version: Some("41".into()),
            uid: Some("uid-web".into()),
            hpa: None,
        }
    }

    fn status(code: u16, reason: &str) -> Response<Body> {
        let body = serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("answer {code}"), "reason": reason, "code": code
        });
        Response::builder()
            .status(StatusCode::from_u16(code).unwrap())
            .body(Body::from(serde_json::to_vec(&body).unwrap()))
            .unwrap()
    }

    fn scale_answer(replicas: u32, rv: &str) -> Response<Body> {
        let body = serde_json::json!({
            "kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {"name": "web", "namespace": "shop", "resourceVersion": rv},
            "spec": {"replicas": replicas}, "status": {"replicas": replicas}
        });
        Response::new(Body::from(serde_json::to_vec(&body).unwrap()))
    }

    async fn body_json(req: Request<Body>) -> serde_json::Value {
        let bytes = req.into_body().collect_bytes().await.unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    /// Asserts the request is the scale patch and returns its body.
    async fn expect_patch(
        handle: &mut Mock,
    ) -> (serde_json::Value, tower_test::mock::SendResponse<Response<Body>>) {
        let (req, send) = handle.next_request().await.expect("a patch request");
        assert_eq!(req.method(), Method::PATCH);
        assert_eq!(
            req.uri().path(),
            "/apis/apps/v1/namespaces/shop/statefulsets/web/scale"
        );
        let query = req.uri().query().unwrap_or_default().to_string();
        let params: Vec<&str> = query.split('&').filter(|kv| !kv.is_empty()).collect();
        assert_eq!(params, ["fieldManager=pas-scaler"], "{query}");
        assert_eq!(req.headers()["content-type"], "application/merge-patch+json");
        (body_json(req).await, send)
    }

    async fn expect_get_scale(handle: &mut Mock) -> tower_test::mock::SendResponse<Response<Body>> {
        let (req, send) = handle.next_request().await.expect("a get request");
        assert_eq!(req.method(), Method::GET);
        assert_eq!(
            req.uri().path(),
            "/apis/apps/v1/namespaces/shop/statefulsets/web/scale"
        );
        send
    }

    #[tokio::test]
    async fn scale_patches_the_scale_subresource_against_the_version_read() {
        let (kube, mut handle) = kube();
        let task = tokio::spawn(async move { kube.scale(&web(2), 5).await });
        let (body, send) = expect_patch(&mut handle).await;
        assert_eq!(
            body,
            serde_json::json!({"metadata": {"resourceVersion": "41"}, "spec": {"replicas": 5}})
        );
        send.send_response(scale_answer(5, "42"));
        assert_eq!(task.await.unwrap(), Ok(()));
    }

    #[tokio::test]
    async fn conflict_rereads_and_retries_when_the_replicas_did_not_move() {
        let (kube, mut handle) = kube();
        let task = tokio::spawn(async move { kube.scale(&web(2), 5).await });
        let (_, send) = expect_patch(&mut handle).await;
        send.send_response(status(409, "Conflict"));
        // Someone touched the object but not its replicas: patch again at the new version.
        expect_get_scale(&mut handle)
            .await
            .send_response(scale_answer(2, "43"));
        let (body, send) = expect_patch(&mut handle).await;
        assert_eq!(body["metadata"]["resourceVersion"], "43");
        assert_eq!(body["spec"]["replicas"], 5);
        send.send_response(scale_answer(5, "44"));
        assert_eq!(task.await.unwrap(), Ok(()));
    }

    #[tokio::test]
    async fn conflict_with_moved_replicas_voids_the_decision() {
        let (kube, mut handle) = kube();
        let task = tokio::spawn(async move { kube.scale(&web(2), 5).await });
        expect_patch(&mut handle)
            .await
            .1
            .send_response(status(409, "Conflict"));
        expect_get_scale(&mut handle)
            .await
            .send_response(scale_answer(7, "43"));
        assert_eq!(task.await.unwrap(), Err(ClusterError::Changed(7)));
    }

    #[tokio::test]
    async fn throttling_and_server_errors_are_retried_then_given_up() {
        let (kube, mut handle) = kube();
        let k = kube.clone();
        let task = tokio::spawn(async move { k.scale(&web(2), 3).await });
        expect_patch(&mut handle)
            .await
            .1
            .send_response(status(429, "TooManyRequests"));
        expect_patch(&mut handle)
            .await
            .1
            .send_response(status(500, "InternalError"));
        expect_patch(&mut handle)
            .await
            .1
            .send_response(scale_answer(3, "42"));
        assert_eq!(task.await.unwrap(), Ok(()));

        // Four 500s in a row (the first try and three retries): give up.
        let task = tokio::spawn(async move { kube.scale(&web(2), 3).await });
        for _ in 0..4 {
            expect_patch(&mut handle)
                .await
                .1
                .send_response(status(500, "InternalError"));
        }
        let error = task.await.unwrap().unwrap_err();
        assert_eq!(
            error,
            ClusterError::Server {
                code: 500,
                message: "answer 500".into()
            }
        );
        assert!(error.is_retryable());
    }

    #[tokio::test]
    async fn forbidden_and_not_found_are_not_retried() {
        let (kube, mut handle) = kube();
        let k = kube.clone();
        let task = tokio::spawn(async move { k.scale(&web(2), 3).await });
        expect_patch(&mut handle)
            .await
            .1
            .send_response(status(403, "Forbidden"));
        let error = task.await.unwrap().unwrap_err();
        assert_eq!(error.kind(), "forbidden");
        assert!(error.to_string().contains("docs/scaler.md"), "{error}");

        let task = tokio::spawn(async move { kube.scale(&web(2), 3).await });
        expect_patch(&mut handle)
            .await
            .1
            .send_response(status(404, "NotFound"));
        assert_eq!(task.await.unwrap(), Err(ClusterError::NotFound));
        // Nothing more was asked.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let more = futures::FutureExt::now_or_never(handle.next_request());
        assert!(matches!(more, None | Some(None)), "a request after 403/404");
    }

    #[tokio::test]
    async fn an_event_is_created_on_the_statefulset() {
        let (kube, mut handle) = kube();
        let task = tokio::spawn(async move {
            kube.event(
                &web(2),
                EventKind::Normal,
                "SuccessfulRescale",
                "New size: 5; predicted peak 140%.".into(),
            )
            .await
        });
        let (req, send) = handle.next_request().await.expect("an event request");
        assert_eq!(req.method(), Method::POST);
        assert_eq!(req.uri().path(), "/apis/events.k8s.io/v1/namespaces/shop/events");
        let body = body_json(req).await;
        assert_eq!(body["reason"], "SuccessfulRescale");
        assert_eq!(body["type"], "Normal");
        assert_eq!(body["action"], "Scale");
        assert_eq!(body["note"], "New size: 5; predicted peak 140%.");
        assert_eq!(body["reportingController"], "pas-scaler");
        assert_eq!(body["reportingInstance"], "scaler-0");
        assert_eq!(
            body["regarding"],
            serde_json::json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "namespace": "shop", "uid": "uid-web"})
        );
        send.send_response(Response::new(Body::from(serde_json::to_vec(&body).unwrap())));
        assert_eq!(task.await.unwrap(), Ok(()));
    }

    /// The watches list StatefulSets and HPAs in every namespace; a
    /// StatefulSet an HPA targets says so.
    #[tokio::test]
    async fn watches_fill_the_stores() {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "default");
        let stop = CancellationToken::new();
        let kube = Kube::start(client, "scaler-0".into(), fast(), stop.clone());
        let sts = |name: &str| {
            serde_json::json!({
                "apiVersion": "apps/v1", "kind": "StatefulSet",
                "metadata": {"name": name, "namespace": "shop", "resourceVersion": "7", "uid": format!("uid-{name}"),
                    "annotations": {"pas.io/enabled": "true"}},
                "spec": {"replicas": 3, "selector": {}, "serviceName": name, "template": {"spec": {"containers": [
                    {"name": "app", "resources": {"requests": {"cpu": "250m"}}},
                    {"name": "side", "resources": {"requests": {"cpu": "0.25"}}}]}}},
                "status": {"replicas": 3, "readyReplicas": 2}
            })
        };
        let mut seen = Vec::new();
        for _ in 0..2 {
            let (req, send) = handle.next_request().await.expect("a list request");
            assert_eq!(req.method(), Method::GET);
            let path = req.uri().path().to_string();
            assert!(!req.uri().query().unwrap_or_default().contains("watch=true"));
            let list = if path == "/apis/apps/v1/statefulsets" {
                serde_json::json!({"apiVersion": "apps/v1", "kind": "StatefulSetList", "metadata": {"resourceVersion": "7"},
                    "items": [sts("web"), sts("db")]})
            } else {
                assert_eq!(path, "/apis/autoscaling/v2/horizontalpodautoscalers");
                serde_json::json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscalerList", "metadata": {"resourceVersion": "7"},
                    "items": [{"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                        "metadata": {"name": "db-hpa", "namespace": "shop"},
                        "spec": {"maxReplicas": 5, "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db"}}}]})
            };
            seen.push(path);
            send.send_response(Response::new(Body::from(serde_json::to_vec(&list).unwrap())));
        }
        seen.sort();
        assert_eq!(
            seen,
            [
                "/apis/apps/v1/statefulsets",
                "/apis/autoscaling/v2/horizontalpodautoscalers"
            ]
        );
        tokio::time::timeout(Duration::from_secs(5), kube.ready())
            .await
            .expect("stores ready");

        let web = kube.workload("shop", "web").await.unwrap().expect("web");
        assert_eq!(
            (web.replicas, web.ready_replicas, web.cpu_request_millicores),
            (3, 2, Some(500.0))
        );
        assert_eq!(web.resource_version.as_deref(), Some("7"));
        assert_eq!(
            web.annotations.get("pas.io/enabled").map(String::as_str),
            Some("true")
        );
        assert_eq!(web.hpa, None);
        assert_eq!(
            kube.workload("shop", "db")
                .await
                .unwrap()
                .expect("db")
                .hpa
                .as_deref(),
            Some("db-hpa")
        );
        assert_eq!(kube.workload("shop", "nope").await.unwrap(), None);
        stop.cancel();
    }
}
