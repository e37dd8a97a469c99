//! An experiment set up from a workload's manifests instead of flags: the
//! StatefulSet or Deployment (`apps/v1`) and the HorizontalPodAutoscaler
//! (`autoscaling/v2`) that scales it, from YAML files (several documents
//! each, as `kubectl get -o yaml` or a chart renders them).
//!
//! | read | from |
//! |---|---|
//! | a pod's CPU request (and capacity) | the sum of the pod template's containers' `resources.requests.cpu` (required) |
//! | start-up | the workload's `pas.io/startup` annotation, else its first container's readiness probe (`initialDelaySeconds` + `periodSeconds`, the earliest a pod can be ready), else unchanged |
//! | target utilisation | the HPA's CPU `Utilization` metric, else the workload's `pas.io/target-utilization` |
//! | replica bounds | the HPA's `minReplicas` (1 when unset) and `maxReplicas` |
//! | stabilisation and rate limits | the HPA's `behavior`, each unset field at the HPA's default |
//!
//! The `behavior` applies to every policy the experiment runs, so PAS is
//! held to the same guardrails as the HPA it is compared with.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::{HPAScalingRules, HorizontalPodAutoscaler};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use pas_scaler::policy::{Behavior, RateKind, RatePolicy, Rules, Select};
use pas_scaler::settings::{parse_startup, parse_target};
use serde::Serialize;

use crate::{Config, Error};

/// What the manifests said, and where each setting came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Manifests {
    /// `Kind/namespace/name` of the workload.
    pub workload: String,
    /// The HPA that targets it, if one was given.
    pub hpa: Option<String>,
    /// A pod's CPU request, millicores.
    pub pod_cpu_millicores: f64,
    /// The pod start-up, if the manifests say.
    #[serde(with = "humantime_serde")]
    pub startup: Option<Duration>,
    /// Target CPU utilisation, percent, if the manifests say.
    pub target_utilization: Option<f64>,
    /// Replica bounds, if an HPA gives them.
    pub replicas: Option<(u32, u32)>,
    /// The HPA's `behavior` with its defaults filled in, if an HPA is given.
    #[serde(skip)]
    pub behavior: Option<Behavior>,
    /// One line per setting: what was read, from where.
    pub notes: Vec<String>,
}

/// A workload read from a manifest.
struct Found {
    kind: &'static str,
    namespace: String,
    name: String,
    annotations: std::collections::BTreeMap<String, String>,
    template: PodTemplateSpec,
}

/// Reads the workload and its HPA from `files` (name, YAML text). Exactly
/// one StatefulSet or Deployment; at most one HPA, which must target it.
/// Other kinds are skipped.
pub fn read(files: &[(String, String)]) -> Result<Manifests, Error> {
    let mut workloads = Vec::new();
    let mut hpas = Vec::new();
    for (file, text) in files {
        let docs: Vec<serde_json::Value> =
            serde_saphyr::from_multiple(text).map_err(|e| Error::Input(format!("{file}: not YAML: {e}")))?;
        for doc in docs.into_iter().filter(|d| !d.is_null()) {
            let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
            let api = doc["apiVersion"].as_str().unwrap_or_default().to_owned();
            let bad = |e: serde_json::Error| {
                Error::Input(format!("{file}: a {kind} that does not read as {api}: {e}"))
            };
            match (api.as_str(), kind.as_str()) {
                ("apps/v1", "StatefulSet") => {
                    let s: StatefulSet = serde_json::from_value(doc).map_err(bad)?;
                    let template = s.spec.map(|s| s.template).unwrap_or_default();
                    workloads.push(found("StatefulSet", s.metadata, template));
                }
                ("apps/v1", "Deployment") => {
                    let d: Deployment = serde_json::from_value(doc).map_err(bad)?;
                    let template = d.spec.map(|s| s.template).unwrap_or_default();
                    workloads.push(found("Deployment", d.metadata, template));
                }
                ("autoscaling/v2", "HorizontalPodAutoscaler") => {
                    let h: HorizontalPodAutoscaler = serde_json::from_value(doc).map_err(bad)?;
                    hpas.push((file.clone(), h));
                }
                (_, "HorizontalPodAutoscaler") => {
                    return Err(Error::Input(format!(
                        "{file}: an HPA of {api}: give it as autoscaling/v2 (`kubectl get hpa NAME -o yaml` prints that)"
                    )));
                }
                _ => {}
            }
        }
    }
    let w = match workloads.len() {
        1 => workloads.remove(0),
        0 => {
            return Err(Error::Input(
                "the manifests hold no StatefulSet or Deployment (apps/v1)".into(),
            ));
        }
        n => {
            return Err(Error::Input(format!(
                "the manifests hold {n} StatefulSets and Deployments: give one workload's"
            )));
        }
    };
    let id = format!("{}/{}/{}", w.kind, w.namespace, w.name);
    let mut notes = Vec::new();

    let requests: Vec<f64> = w
        .template
        .spec
        .as_ref()
        .map(|p| {
            p.containers
                .iter()
                .filter_map(|c| c.resources.as_ref()?.requests.as_ref()?.get("cpu"))
                .filter_map(|q| pas_schemas::cpu_millicores(&q.0))
                .collect()
        })
        .unwrap_or_default();
    if requests.is_empty() {
        return Err(Error::Input(format!(
            "{id}: no container of the pod template requests CPU (resources.requests.cpu); the HPA and PAS both measure utilisation against it, so set one"
        )));
    }
    let pod_cpu: f64 = requests.iter().sum();
    notes.push(format!("CPU request {pod_cpu}m per pod (pod template of {id})"));

    let startup = match w.annotations.get("pas.io/startup") {
        Some(v) => {
            // As the scaler reads the annotation.
            let d = parse_startup(v).map_err(|e| Error::Input(format!("{id}: pas.io/startup {v:?}: {e}")))?;
            notes.push(format!(
                "start-up {} (pas.io/startup)",
                humantime::format_duration(d)
            ));
            Some(d)
        }
        None => {
            let probe = w
                .template
                .spec
                .as_ref()
                .and_then(|p| p.containers.first())
                .and_then(|c| c.readiness_probe.as_ref());
            probe.map(|p| {
                let secs = p.initial_delay_seconds.unwrap_or(0).max(0) + p.period_seconds.unwrap_or(10).max(1);
                let d = Duration::from_secs(secs as u64);
                notes.push(format!(
                    "start-up {} (readiness probe: initialDelaySeconds + periodSeconds, the earliest a pod is ready; set pas.io/startup for the real one)",
                    humantime::format_duration(d)
                ));
                d
            })
        }
    };

    let mut target = None;
    if let Some(v) = w.annotations.get("pas.io/target-utilization") {
        let t = parse_target(v)
            .map_err(|e| Error::Input(format!("{id}: pas.io/target-utilization {v:?}: {e}")))?;
        target = Some((t, "pas.io/target-utilization".to_owned()));
    }

    let mut hpa_name = None;
    let mut replicas = None;
    let mut behavior = None;
    match hpas.len() {
        0 => notes.push("no HPA given: the replica bounds and behaviour are the experiment's".into()),
        1 => {
            let (file, h) = hpas.remove(0);
            let name = h.metadata.name.clone().unwrap_or_default();
            let spec = h
                .spec
                .ok_or_else(|| Error::Input(format!("{file}: HPA {name} has no spec")))?;
            let t = &spec.scale_target_ref;
            if t.kind != w.kind || t.name != w.name {
                return Err(Error::Input(format!(
                    "{file}: HPA {name} targets {} {}, not {id}",
                    t.kind, t.name
                )));
            }
            let cpu = spec.metrics.iter().flatten().find_map(|m| {
                let r = m.resource.as_ref().filter(|r| r.name == "cpu")?;
                (r.target.type_ == "Utilization").then_some(r.target.average_utilization?)
            });
            match cpu {
                Some(u) => target = Some((f64::from(u), format!("HPA {name}'s CPU Utilization metric"))),
                None => {
                    return Err(Error::Input(format!(
                        "{file}: HPA {name} has no CPU Utilization target (type: Resource, name: cpu, target.type: Utilization); PAS compares on CPU only"
                    )));
                }
            }
            if spec.metrics.as_ref().is_some_and(|m| m.len() > 1) {
                notes.push(format!(
                    "HPA {name} also scales on other metrics; the experiment replays CPU only"
                ));
            }
            let min = spec.min_replicas.unwrap_or(1).max(1) as u32;
            let max = spec.max_replicas.max(1) as u32;
            notes.push(format!("replicas {min}..{max} (HPA {name})"));
            replicas = Some((min, max.max(min)));
            let b = spec.behavior.unwrap_or_default();
            let defaults = Behavior::default();
            behavior = Some(Behavior {
                scale_up: rules(b.scale_up.as_ref(), &defaults.scale_up, &file)?,
                scale_down: rules(b.scale_down.as_ref(), &defaults.scale_down, &file)?,
            });
            notes.push(format!(
                "stabilisation and rate limits: HPA {name}'s behavior (its defaults where unset)"
            ));
            hpa_name = Some(name);
        }
        n => {
            return Err(Error::Input(format!(
                "the manifests hold {n} HPAs: give the one that scales {id}"
            )));
        }
    }
    if let Some((t, from)) = &target {
        notes.push(format!("target {t}% ({from})"));
    }
    Ok(Manifests {
        workload: id,
        hpa: hpa_name,
        pod_cpu_millicores: pod_cpu,
        startup,
        target_utilization: target.map(|(t, _)| t),
        replicas,
        behavior,
        notes,
    })
}

/// The live objects of workload `namespace/name` through `client` (the
/// kubeconfig's): its StatefulSet, else its Deployment, and the HPAs of the
/// namespace that target it, as (source, JSON) for [`read`].
pub async fn from_cluster(
    client: kube::Client,
    namespace: &str,
    name: &str,
) -> Result<Vec<(String, String)>, Error> {
    use kube::Api;
    let failed = |what: &str, e: kube::Error| {
        Error::Input(format!("reading {what} {namespace}/{name} from the cluster: {e}"))
    };
    let as_json = |kind: &str, api: &str, mut v: serde_json::Value| {
        // A typed get leaves these out; `read` needs them.
        v["kind"] = kind.into();
        v["apiVersion"] = api.into();
        v.to_string()
    };
    let mut files = Vec::new();
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
    let deploy: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let kind = if let Some(s) = sts.get_opt(name).await.map_err(|e| failed("StatefulSet", e))? {
        let v = serde_json::to_value(s).map_err(|e| Error::Input(e.to_string()))?;
        files.push((
            format!("StatefulSet {namespace}/{name}"),
            as_json("StatefulSet", "apps/v1", v),
        ));
        "StatefulSet"
    } else if let Some(d) = deploy.get_opt(name).await.map_err(|e| failed("Deployment", e))? {
        let v = serde_json::to_value(d).map_err(|e| Error::Input(e.to_string()))?;
        files.push((
            format!("Deployment {namespace}/{name}"),
            as_json("Deployment", "apps/v1", v),
        ));
        "Deployment"
    } else {
        return Err(Error::Input(format!(
            "the cluster has no StatefulSet or Deployment {namespace}/{name}"
        )));
    };
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client, namespace);
    let list = hpas
        .list(&kube::api::ListParams::default())
        .await
        .map_err(|e| failed("the HPAs of", e))?;
    for h in list.items {
        let targets = h
            .spec
            .as_ref()
            .is_some_and(|s| s.scale_target_ref.kind == kind && s.scale_target_ref.name == name);
        if targets {
            let source = format!("HPA {namespace}/{}", h.metadata.name.clone().unwrap_or_default());
            let v = serde_json::to_value(h).map_err(|e| Error::Input(e.to_string()))?;
            files.push((source, as_json("HorizontalPodAutoscaler", "autoscaling/v2", v)));
        }
    }
    Ok(files)
}

fn found(
    kind: &'static str,
    meta: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    template: PodTemplateSpec,
) -> Found {
    Found {
        kind,
        namespace: meta.namespace.unwrap_or_else(|| "default".into()),
        name: meta.name.unwrap_or_default(),
        annotations: meta.annotations.unwrap_or_default(),
        template,
    }
}

/// An HPA's rules for one direction over the HPA's defaults for it.
fn rules(given: Option<&HPAScalingRules>, default: &Rules, file: &str) -> Result<Rules, Error> {
    let Some(given) = given else {
        return Ok(default.clone());
    };
    let select_policy = match given.select_policy.as_deref() {
        None | Some("Max") => Select::Max,
        Some("Min") => Select::Min,
        Some("Disabled") => Select::Disabled,
        Some(other) => {
            return Err(Error::Input(format!(
                "{file}: selectPolicy {other:?}: expected Max, Min or Disabled"
            )));
        }
    };
    let policies = match &given.policies {
        None => default.policies.clone(),
        Some(list) => list
            .iter()
            .map(|p| {
                let kind = match p.type_.as_str() {
                    "Pods" => RateKind::Pods,
                    "Percent" => RateKind::Percent,
                    other => {
                        return Err(Error::Input(format!(
                            "{file}: policy type {other:?}: expected Pods or Percent"
                        )));
                    }
                };
                if p.value <= 0 || p.period_seconds <= 0 {
                    return Err(Error::Input(format!(
                        "{file}: a {} policy needs a value and a period above 0",
                        p.type_
                    )));
                }
                Ok(RatePolicy {
                    kind,
                    value: p.value as u32,
                    period: Duration::from_secs(p.period_seconds as u64),
                })
            })
            .collect::<Result<_, _>>()?,
    };
    Ok(Rules {
        stabilization_window: given
            .stabilization_window_seconds
            .map_or(default.stabilization_window, |s| {
                Duration::from_secs(s.max(0) as u64)
            }),
        select_policy,
        policies,
    })
}

impl Manifests {
    /// Sets what the manifests say on `config`: the pod's request and
    /// capacity, start-up, target, bounds and behaviour.
    pub fn apply(&self, config: &mut Config) {
        config.pod.capacity_millicores = self.pod_cpu_millicores;
        config.pod.request_millicores = self.pod_cpu_millicores;
        if let Some(s) = self.startup {
            config.pod.startup = s;
            config.settings.startup = s;
        }
        if let Some(t) = self.target_utilization {
            config.settings.target_utilization = t;
        }
        if let Some((min, max)) = self.replicas {
            config.settings.min_replicas = min;
            config.settings.max_replicas = max;
        }
        if let Some(b) = &self.behavior {
            config.tuning.behavior = b.clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STS: &str = r#"
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: web
  namespace: shop
  annotations:
    pas.io/startup: 90s
spec:
  serviceName: web
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: app
          image: web:1
          resources: {requests: {cpu: 250m, memory: 64Mi}}
        - name: side
          image: side:1
          resources: {requests: {cpu: "0.25"}}
"#;

    const HPA: &str = r#"
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: web, namespace: shop}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: StatefulSet, name: web}
  minReplicas: 2
  maxReplicas: 12
  metrics:
    - type: Resource
      resource: {name: cpu, target: {type: Utilization, averageUtilization: 65}}
  behavior:
    scaleDown:
      stabilizationWindowSeconds: 600
      policies: [{type: Pods, value: 1, periodSeconds: 60}]
    scaleUp:
      selectPolicy: Min
"#;

    fn files(parts: &[&str]) -> Vec<(String, String)> {
        parts
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("f{i}.yaml"), (*t).to_owned()))
            .collect()
    }

    #[test]
    fn a_statefulset_and_its_hpa_set_up_the_experiment() {
        // One file of two documents, as a chart renders them.
        let m = read(&files(&[&format!("{STS}\n---\n{HPA}")])).unwrap();
        assert_eq!(m.workload, "StatefulSet/shop/web");
        assert_eq!(m.hpa.as_deref(), Some("web"));
        assert_eq!(m.pod_cpu_millicores, 500.0);
        assert_eq!(m.startup, Some(Duration::from_secs(90)));
        assert_eq!(m.target_utilization, Some(65.0));
        assert_eq!(m.replicas, Some((2, 12)));
        let b = m.behavior.clone().unwrap();
        let defaults = Behavior::default();
        // Given: the scale-down window and policy; the scale-up select.
        assert_eq!(b.scale_down.stabilization_window, Duration::from_secs(600));
        assert_eq!(
            b.scale_down.policies,
            [RatePolicy {
                kind: RateKind::Pods,
                value: 1,
                period: Duration::from_secs(60)
            }]
        );
        assert_eq!(b.scale_up.select_policy, Select::Min);
        // Not given: the HPA's defaults.
        assert_eq!(b.scale_up.policies, defaults.scale_up.policies);
        assert_eq!(b.scale_up.stabilization_window, Duration::ZERO);
        assert_eq!(b.scale_down.select_policy, Select::Max);

        let mut config = Config::default();
        m.apply(&mut config);
        assert_eq!(
            (config.pod.request_millicores, config.pod.capacity_millicores),
            (500.0, 500.0)
        );
        assert_eq!(
            (config.settings.min_replicas, config.settings.max_replicas),
            (2, 12)
        );
        assert_eq!(config.settings.target_utilization, 65.0);
        assert_eq!(
            (config.pod.startup, config.settings.startup),
            (Duration::from_secs(90), Duration::from_secs(90))
        );
        assert_eq!(config.tuning.behavior, b);
    }

    #[test]
    fn a_deployment_without_an_hpa_reads_its_probe_and_annotations() {
        let deploy = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
  annotations: {pas.io/target-utilization: "55"}
spec:
  selector: {matchLabels: {app: api}}
  template:
    spec:
      containers:
        - name: api
          resources: {requests: {cpu: "1"}}
          readinessProbe: {httpGet: {path: /ready, port: 8080}, initialDelaySeconds: 20, periodSeconds: 5}
"#;
        let m = read(&files(&[
            deploy,
            "apiVersion: v1\nkind: Service\nmetadata: {name: api}\n",
        ]))
        .unwrap();
        assert_eq!(m.workload, "Deployment/default/api");
        assert_eq!(m.pod_cpu_millicores, 1000.0);
        assert_eq!(m.startup, Some(Duration::from_secs(25)));
        assert_eq!(m.target_utilization, Some(55.0));
        assert_eq!(
            (m.replicas, m.behavior.is_none(), m.hpa.is_none()),
            (None, true, true)
        );
    }

    /// No Kubernetes API server can run here: the real kube client against
    /// kube's tower-test mock service, asserting the exact requests.
    #[tokio::test]
    async fn the_live_objects_are_read_through_the_kubeconfig() {
        use http::{Method, Request, Response, StatusCode};
        use kube::client::Body;

        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(service, "default");
        let task = tokio::spawn(async move { from_cluster(client, "shop", "api").await });
        let json = |v: serde_json::Value| Response::new(Body::from(serde_json::to_vec(&v).unwrap()));
        let (req, send) = handle.next_request().await.unwrap();
        assert_eq!(
            (req.method(), req.uri().path()),
            (&Method::GET, "/apis/apps/v1/namespaces/shop/statefulsets/api")
        );
        let not_found = serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"});
        send.send_response(
            Response::builder()
                .status(StatusCode::NOT_FOUND)
                .body(Body::from(serde_json::to_vec(&not_found).unwrap()))
                .unwrap(),
        );
        let (req, send) = handle.next_request().await.unwrap();
        assert_eq!(
            (req.method(), req.uri().path()),
            (&Method::GET, "/apis/apps/v1/namespaces/shop/deployments/api")
        );
        send.send_response(json(serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "api", "namespace": "shop"},
            "spec": {"selector": {}, "template": {"spec": {"containers": [{"name": "api", "resources": {"requests": {"cpu": "750m"}}}]}}}
        })));
        let (req, send) = handle.next_request().await.unwrap();
        assert_eq!(
            (req.method(), req.uri().path()),
            (
                &Method::GET,
                "/apis/autoscaling/v2/namespaces/shop/horizontalpodautoscalers"
            )
        );
        let hpa = |name: &str, target: &str| {
            serde_json::json!({"metadata": {"name": name, "namespace": "shop"},
            "spec": {"maxReplicas": 9, "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
                "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}}}]}})
        };
        send.send_response(json(serde_json::json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscalerList", "metadata": {},
            "items": [hpa("other", "web"), hpa("api", "api")]
        })));
        let files = task.await.unwrap().unwrap();
        assert_eq!(files.len(), 2, "the Deployment and its one HPA");
        let m = read(&files).unwrap();
        assert_eq!(
            (m.workload.as_str(), m.hpa.as_deref()),
            ("Deployment/shop/api", Some("api"))
        );
        assert_eq!(
            (m.pod_cpu_millicores, m.target_utilization, m.replicas),
            (750.0, Some(60.0), Some((1, 9)))
        );
    }

    #[test]
    fn bad_manifests_are_refused_with_the_reason() {
        let no_request = STS
            .replace(
                "resources: {requests: {cpu: 250m, memory: 64Mi}}",
                "resources: {}",
            )
            .replace(
                "resources: {requests: {cpu: \"0.25\"}}",
                "resources: {requests: {memory: 1Gi}}",
            );
        let e = read(&files(&[&no_request])).unwrap_err().to_string();
        assert!(
            e.contains("requests CPU") && e.contains("StatefulSet/shop/web"),
            "{e}"
        );
        let other = HPA.replace("name: web}", "name: db}");
        let e = read(&files(&[STS, &other])).unwrap_err().to_string();
        assert!(e.contains("targets StatefulSet db"), "{e}");
        let memory = HPA.replace(
            "name: cpu, target: {type: Utilization",
            "name: memory, target: {type: Utilization",
        );
        let e = read(&files(&[STS, &memory])).unwrap_err().to_string();
        assert!(e.contains("no CPU Utilization target"), "{e}");
        let e = read(&files(&["apiVersion: v1\nkind: ConfigMap\n"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no StatefulSet or Deployment"), "{e}");
        let e = read(&files(&["kind: [unclosed"])).unwrap_err().to_string();
        assert!(e.contains("not YAML"), "{e}");
        let v1 = HPA.replace("autoscaling/v2", "autoscaling/v1");
        assert!(
            read(&files(&[STS, &v1]))
                .unwrap_err()
                .to_string()
                .contains("autoscaling/v2")
        );
    }
}
