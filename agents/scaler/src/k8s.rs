//! The Kubernetes API as a [`Cluster`].
//!
//! - The workloads of every kind in `workload_kinds` (StatefulSets and
//!   Deployments by default) and the HorizontalPodAutoscalers are watched
//!   (one list, then a watch, in every namespace) into reflector stores, so
//!   a decision reads no API. A workload is read as a dynamic object:
//!   `spec.replicas`, `status.readyReplicas` and the CPU requests of the
//!   pod template at `spec.template`.
//! - Replicas change only through the `scale` subresource of the workload's
//!   kind: a JSON merge patch
//!   `{"metadata":{"resourceVersion":…},"spec":{"replicas":…}}` with field
//!   manager `pas-scaler`. The resource version makes the change
//!   conditional on what the decision saw, as the HPA's update of the scale
//!   is. A conflict (409) re-reads the scale: if another writer changed the
//!   replicas the decision is void ([`ClusterError::Changed`]), otherwise
//!   the patch is retried against the new version.
//! - Conflicts, throttling (429) and server errors (5xx) are retried with
//!   capped, jittered exponential backoff ([`Retry`]); 403 and 404 are not.
//! - Each change gets an Event (`events.k8s.io/v1`) on the workload.
//!
//! The RBAC this needs is in `docs/scaler.md`.

use std::sync::Mutex;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use futures::StreamExt;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

use crate::cluster::{Cluster, ClusterError, EventKind, Workload, WorkloadKind};

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

/// One managed kind: how to reach it and what is known of it.
#[derive(Clone)]
struct Kind {
    resource: ApiResource,
    store: Store<DynamicObject>,
}

/// The Kubernetes API.
#[derive(Clone)]
pub struct Kube {
    client: Client,
    kinds: Vec<Kind>,
    hpas: Store<HorizontalPodAutoscaler>,
    recorder: Recorder,
    retry: Retry,
}

fn api_resource(kind: &WorkloadKind) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(&kind.group, &kind.version, &kind.kind),
        &kind.plural,
    )
}

impl Kube {
    /// A client from the in-cluster service account or the kubeconfig, with
    /// kube's own retry layer off (the scaler retries, once).
    pub async fn client() -> Result<Client, String> {
        let mut config = kube::Config::infer().await.map_err(|e| e.to_string())?;
        config.default_retry = false;
        Client::try_from(config).map_err(|e| e.to_string())
    }

    /// Starts watching the workloads of `kinds` and the HPAs until
    /// `shutdown`. `instance` names this scaler in Events.
    pub fn start(
        client: Client,
        kinds: &[WorkloadKind],
        instance: String,
        retry: Retry,
        shutdown: CancellationToken,
    ) -> Kube {
        let kinds = kinds
            .iter()
            .map(|kind| {
                let resource = api_resource(kind);
                let writer = reflector::store::Writer::new(resource.clone());
                let store = writer.as_reader();
                let api = Api::<DynamicObject>::all_with(client.clone(), &resource);
                tokio::spawn(reflect(api, writer, kind.kind.clone(), shutdown.clone()));
                Kind { resource, store }
            })
            .collect();
        let (hpas, writer) = reflector::store::<HorizontalPodAutoscaler>();
        let api = Api::all(client.clone());
        tokio::spawn(reflect(api, writer, "HorizontalPodAutoscaler".into(), shutdown));
        Kube::with(client, kinds, hpas, instance, retry)
    }

    fn with(
        client: Client,
        kinds: Vec<Kind>,
        hpas: Store<HorizontalPodAutoscaler>,
        instance: String,
        retry: Retry,
    ) -> Kube {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance: Some(instance),
        };
        let recorder = Recorder::new(client.clone(), reporter);
        Kube {
            client,
            kinds,
            hpas,
            recorder,
            retry,
        }
    }

    /// Waits until every watch has listed everything once.
    pub async fn ready(&self) {
        for kind in &self.kinds {
            let _ = kind.store.wait_until_ready().await;
        }
        let _ = self.hpas.wait_until_ready().await;
    }

    fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.retry.min_delay)
            .with_max_delay(self.retry.max_delay)
            .with_max_times(self.retry.times)
            .with_jitter()
    }

    /// The scale API of `workload`'s kind in its namespace.
    fn scale_api(&self, workload: &Workload) -> Result<Api<DynamicObject>, ClusterError> {
        let kind = self
            .kinds
            .iter()
            .find(|k| k.resource.kind == workload.kind && k.resource.api_version == workload.api_version)
            .ok_or_else(|| ClusterError::Request(format!("{} is not a managed kind", workload.kind)))?;
        Ok(Api::namespaced_with(
            self.client.clone(),
            &workload.namespace,
            &kind.resource,
        ))
    }
}

async fn reflect<K>(
    api: Api<K>,
    writer: reflector::store::Writer<K>,
    kind: String,
    shutdown: CancellationToken,
) where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
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
            Some(Err(error)) => tracing::warn!(%error, %kind, "Watch failed; retrying."),
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

/// Reads a workload of any managed kind from its JSON.
fn to_workload(object: &DynamicObject, resource: &ApiResource, hpa: Option<String>) -> Workload {
    let data = &object.data;
    let count = |v: &serde_json::Value| v.as_i64().map(|n| n.clamp(0, i64::from(u32::MAX)) as u32);
    let requests: Vec<f64> = data["spec"]["template"]["spec"]["containers"]
        .as_array()
        .map(|containers| {
            containers
                .iter()
                .filter_map(|c| {
                    c["resources"]["requests"]["cpu"]
                        .as_str()
                        .map(str::to_owned)
                        .or_else(|| {
                            // A bare number is a quantity too.
                            c["resources"]["requests"]["cpu"].as_f64().map(|n| n.to_string())
                        })
                })
                .filter_map(|q| pas_schemas::cpu_millicores(&q))
                .collect()
        })
        .unwrap_or_default();
    Workload {
        namespace: object.metadata.namespace.clone().unwrap_or_default(),
        name: object.metadata.name.clone().unwrap_or_default(),
        kind: resource.kind.clone(),
        api_version: resource.api_version.clone(),
        replicas: count(&data["spec"]["replicas"]).unwrap_or(1),
        ready_replicas: count(&data["status"]["readyReplicas"]).unwrap_or(0),
        annotations: object.metadata.annotations.clone().unwrap_or_default(),
        cpu_request_millicores: (!requests.is_empty()).then(|| requests.iter().sum()),
        resource_version: object.metadata.resource_version.clone(),
        uid: object.metadata.uid.clone(),
        hpa,
    }
}

/// Whether an HPA's target is this workload: same kind, same name and,
/// where the target names one, the same API group.
fn targets(hpa: &HorizontalPodAutoscaler, resource: &ApiResource, namespace: &str, name: &str) -> bool {
    hpa.metadata.namespace.as_deref() == Some(namespace)
        && hpa.spec.as_ref().is_some_and(|s| {
            let target = &s.scale_target_ref;
            let group = target
                .api_version
                .as_deref()
                .map(|v| v.rsplit_once('/').map_or("", |(g, _)| g));
            target.kind == resource.kind && target.name == name && group.is_none_or(|g| g == resource.group)
        })
}

impl Cluster for Kube {
    async fn workload(&self, namespace: &str, name: &str) -> Result<Option<Workload>, ClusterError> {
        let mut found = self.kinds.iter().filter_map(|kind| {
            let key = ObjectRef::new_with(name, kind.resource.clone()).within(namespace);
            kind.store.get(&key).map(|object| (kind, object))
        });
        let Some((kind, object)) = found.next() else {
            return Ok(None);
        };
        if let Some((other, _)) = found.next() {
            return Err(ClusterError::Ambiguous(format!(
                "a {} and a {} are both named {namespace}/{name}; samples name only the workload, so PAS \
                 cannot tell their pods apart: rename one, or leave one kind out of workload_kinds",
                kind.resource.kind, other.resource.kind
            )));
        }
        let hpa = self
            .hpas
            .find(|h| targets(h, &kind.resource, namespace, name))
            .and_then(|h| h.metadata.name.clone());
        Ok(Some(to_workload(&object, &kind.resource, hpa)))
    }

    async fn scale(&self, workload: &Workload, replicas: u32) -> Result<(), ClusterError> {
        let api = self.scale_api(workload)?;
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
                        // Someone wrote the workload: is our decision still valid?
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
            api_version: Some(workload.api_version.clone()),
            kind: Some(workload.kind.clone()),
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
        let kinds = [WorkloadKind::statefulset(), WorkloadKind::deployment()]
            .iter()
            .map(|kind| {
                let resource = api_resource(kind);
                let store = reflector::store::Writer::new(resource.clone()).as_reader();
                Kind { resource, store }
            })
            .collect();
        let (hpas, _) = reflector::store::<HorizontalPodAutoscaler>();
        (Kube::with(client, kinds, hpas, "scaler-0".into(), fast()), handle)
    }

    fn web(replicas: u32) -> Workload {
        Workload {
            namespace: "shop".into(),
            name: "web".into(),
            kind: "StatefulSet".into(),
            api_version: "apps/v1".into(),
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

    const STS_SCALE: &str = "/apis/apps/v1/namespaces/shop/statefulsets/web/scale";
    const DEPLOY_SCALE: &str = "/apis/apps/v1/namespaces/shop/deployments/web/scale";

    /// Asserts the request is the StatefulSet's scale patch and returns its body.
    async fn expect_patch(
        handle: &mut Mock,
    ) -> (serde_json::Value, tower_test::mock::SendResponse<Response<Body>>) {
        expect_patch_at(handle, STS_SCALE).await
    }

    /// Asserts the request is a scale patch of `path` and returns its body.
    async fn expect_patch_at(
        handle: &mut Mock,
        path: &str,
    ) -> (serde_json::Value, tower_test::mock::SendResponse<Response<Body>>) {
        let (req, send) = handle.next_request().await.expect("a patch request");
        assert_eq!(req.method(), Method::PATCH);
        assert_eq!(req.uri().path(), path);
        let query = req.uri().query().unwrap_or_default().to_string();
        let params: Vec<&str> = query.split('&').filter(|kv| !kv.is_empty()).collect();
        assert_eq!(params, ["fieldManager=pas-scaler"], "{query}");
        assert_eq!(req.headers()["content-type"], "application/merge-patch+json");
        (body_json(req).await, send)
    }

    async fn expect_get_scale(handle: &mut Mock) -> tower_test::mock::SendResponse<Response<Body>> {
        expect_get_scale_at(handle, STS_SCALE).await
    }

    async fn expect_get_scale_at(
        handle: &mut Mock,
        path: &str,
    ) -> tower_test::mock::SendResponse<Response<Body>> {
        let (req, send) = handle.next_request().await.expect("a get request");
        assert_eq!(req.method(), Method::GET);
        assert_eq!(req.uri().path(), path);
        send
    }

    fn deployment(replicas: u32) -> Workload {
        Workload {
            kind: "Deployment".into(),
            ..web(replicas)
        }
    }

    /// Issue 20: a Deployment is scaled through `deployments/scale`, with
    /// the same conditional patch and the same conflict handling.
    #[tokio::test]
    async fn a_deployment_is_scaled_through_its_own_scale_subresource() {
        let (kube, mut handle) = kube();
        let k = kube.clone();
        let task = tokio::spawn(async move { k.scale(&deployment(2), 5).await });
        let (body, send) = expect_patch_at(&mut handle, DEPLOY_SCALE).await;
        assert_eq!(
            body,
            serde_json::json!({"metadata": {"resourceVersion": "41"}, "spec": {"replicas": 5}})
        );
        send.send_response(scale_answer(5, "42"));
        assert_eq!(task.await.unwrap(), Ok(()));

        let task = tokio::spawn(async move { kube.scale(&deployment(2), 5).await });
        expect_patch_at(&mut handle, DEPLOY_SCALE)
            .await
            .1
            .send_response(status(409, "Conflict"));
        expect_get_scale_at(&mut handle, DEPLOY_SCALE)
            .await
            .send_response(scale_answer(6, "43"));
        assert_eq!(task.await.unwrap(), Err(ClusterError::Changed(6)));
    }

    /// An Event about a Deployment names the Deployment.
    #[tokio::test]
    async fn an_event_on_a_deployment_names_it() {
        let (kube, mut handle) = kube();
        let task = tokio::spawn(async move {
            kube.event(&deployment(2), EventKind::Warning, "FailedRescale", "x".into())
                .await
        });
        let (req, send) = handle.next_request().await.expect("an event request");
        let body = body_json(req).await;
        assert_eq!(
            body["regarding"],
            serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "namespace": "shop", "uid": "uid-web"})
        );
        send.send_response(Response::new(Body::from(serde_json::to_vec(&body).unwrap())));
        assert_eq!(task.await.unwrap(), Ok(()));
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

    /// The watches list StatefulSets, Deployments and HPAs in every
    /// namespace; a workload an HPA targets says so; a name two kinds share
    /// is refused.
    #[tokio::test]
    async fn watches_fill_the_stores() {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "default");
        let stop = CancellationToken::new();
        let kinds = [WorkloadKind::statefulset(), WorkloadKind::deployment()];
        let kube = Kube::start(client, &kinds, "scaler-0".into(), fast(), stop.clone());
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
        let deploy = |name: &str| {
            serde_json::json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": name, "namespace": "shop", "resourceVersion": "8", "uid": format!("uid-{name}")},
                "spec": {"replicas": 4, "selector": {}, "template": {"spec": {"containers": [
                    {"name": "app", "resources": {"requests": {"cpu": "1"}}}]}}},
                "status": {"replicas": 5, "readyReplicas": 3, "updatedReplicas": 4}
            })
        };
        let hpa = |name: &str, api_version: &str, kind: &str, target: &str| {
            serde_json::json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                "metadata": {"name": name, "namespace": "shop"},
                "spec": {"maxReplicas": 5, "scaleTargetRef": {"apiVersion": api_version, "kind": kind, "name": target}}})
        };
        let mut seen = Vec::new();
        for _ in 0..3 {
            let (req, send) = handle.next_request().await.expect("a list request");
            assert_eq!(req.method(), Method::GET);
            let path = req.uri().path().to_string();
            assert!(!req.uri().query().unwrap_or_default().contains("watch=true"));
            let list = if path == "/apis/apps/v1/statefulsets" {
                serde_json::json!({"apiVersion": "apps/v1", "kind": "StatefulSetList", "metadata": {"resourceVersion": "7"},
                                        "items": [sts("web"), sts("db"), sts("cache")]})
            } else if path == "/apis/apps/v1/deployments" {
                serde_json::json!({"apiVersion": "apps/v1", "kind": "DeploymentList", "metadata": {"resourceVersion": "8"},
                    "items": [deploy("api"), deploy("cache")]})
            } else {
                assert_eq!(path, "/apis/autoscaling/v2/horizontalpodautoscalers");
                serde_json::json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscalerList", "metadata": {"resourceVersion": "7"},
                                        "items": [hpa("db-hpa", "apps/v1", "StatefulSet", "db"), hpa("api-hpa", "apps/v1", "Deployment", "api"),
                        // Another group's kind of the same name is not web.
                        hpa("other", "example.com/v1", "StatefulSet", "web")]})
            };
            seen.push(path);
            send.send_response(Response::new(Body::from(serde_json::to_vec(&list).unwrap())));
        }
        seen.sort();
        assert_eq!(
            seen,
            [
                "/apis/apps/v1/deployments",
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
        assert_eq!(
            (web.kind.as_str(), web.api_version.as_str()),
            ("StatefulSet", "apps/v1")
        );
        // A Deployment: replicas from spec, ready from status (a surge pod
        // counts in status.replicas, not here), its HPA found by kind.
        let api = kube.workload("shop", "api").await.unwrap().expect("api");
        assert_eq!(
            (
                api.kind.as_str(),
                api.replicas,
                api.ready_replicas,
                api.cpu_request_millicores
            ),
            ("Deployment", 4, 3, Some(1000.0))
        );
        assert_eq!(api.hpa.as_deref(), Some("api-hpa"));
        let error = kube.workload("shop", "cache").await.unwrap_err();
        assert_eq!(error.kind(), "ambiguous");
        assert!(
            error.to_string().contains("StatefulSet and a Deployment"),
            "{error}"
        );
        assert_eq!(kube.workload("shop", "nope").await.unwrap(), None);
        stop.cancel();
    }
}
