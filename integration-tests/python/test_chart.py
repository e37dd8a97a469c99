"""The Helm chart helm/pas, with the real Helm v4 SDK (helm-python-sdk, Go's
Helm as a library: no helm binary, no cluster): it lints, renders with the
default values and with every optional part on, every rendered manifest is
valid against the Kubernetes JSON schemas of current releases
(kubernetes-validate: 1.37 and 1.35), and the RBAC rules and pod security are exactly what
docs/scaler.md and the chart's README promise."""

import json
import os
import pathlib
import subprocess

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "helm/pas"
# The newest release kubernetes-validate knows, and the one the scaler's
# k8s-openapi is built for.
KUBERNETES = ["1.37.0", "1.35.0"]

ALL_ON = {
    "influxdb": {"enabled": True},
    "grafana": {"enabled": True},
    "recorder": {"enabled": True},
    "example": {"enabled": True},
    "metrics": {"serviceMonitor": {"enabled": True}},
}
EXTERNAL = {
    "nats": {"enabled": False, "existingSecret": "my-nats-users", "external": {"url": "nats://nats.example:4222"}},
    "recorder": {"enabled": True, "influx": {"url": "https://influx.example", "existingSecret": "influx", "tokenKey": "write"}},
}
CONFIGS = {"default": {}, "all-on": ALL_ON, "external": EXTERNAL}
WORKLOADS = {"Deployment", "DaemonSet", "StatefulSet", "Job"}


def render(values: dict) -> list[dict]:
    with helm.Chart.load(CHART) as chart:
        files = chart.render(values, name="pas", namespace="pas", is_install=True)
    docs = []
    for path, text in sorted(files.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc["__file"] = path
                docs.append(doc)
    return docs


def pod_specs(docs: list[dict]):
    for d in docs:
        if d["kind"] in WORKLOADS:
            yield d, d["spec"]["template"]["spec"]
        elif d["kind"] == "Pod":
            yield d, d["spec"]


@pytest.mark.parametrize("config", CONFIGS)
def test_the_chart_lints_clean(config):
    report = helm.lint(CHART, CONFIGS[config], strict=True)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not problems and not report["errors"], report


@pytest.mark.parametrize("version", KUBERNETES)
@pytest.mark.parametrize("config", CONFIGS)
def test_every_manifest_is_valid_kubernetes(config, version):
    docs = render(CONFIGS[config])
    assert len(docs) > 10
    for d in docs:
        where = f"{d.pop('__file')}: {d['kind']} {d['metadata']['name']}"
        if d["apiVersion"].startswith("monitoring.coreos.com/"):
            # A CRD of the Prometheus operator: not in Kubernetes' schemas.
            assert d["spec"]["endpoints"][0]["port"] == "http-metrics", where
            continue
        try:
            kubernetes_validate.validate(d, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{where}: {e.message} at {list(e.path)}")


def test_default_and_all_on_create_what_they_should():
    kinds = lambda docs: {(d["kind"], d["metadata"]["name"]) for d in docs}
    default = kinds(render({}))
    for want in [
        ("StatefulSet", "pas-nats"), ("Job", "pas-bus-init"), ("DaemonSet", "pas-agent"),
        ("Deployment", "pas-trainer"), ("Deployment", "pas-forecaster"), ("Deployment", "pas-scaler"),
        ("Pod", "pas-test-bus"), ("Secret", "pas-nats-users"),
    ]:
        assert want in default, want
    assert not any(k == "Deployment" and n == "pas-grafana" for k, n in default)
    all_on = kinds(render(ALL_ON))
    for want in [
        ("Deployment", "pas-recorder"), ("StatefulSet", "pas-influxdb"), ("Deployment", "pas-grafana"),
        ("StatefulSet", "pas-ss"), ("ServiceMonitor", "pas-scaler"), ("ConfigMap", "pas-grafana-dashboards"),
    ]:
        assert want in all_on, want
    external = kinds(render(EXTERNAL))
    assert ("StatefulSet", "pas-nats") not in external and ("Secret", "pas-nats-users") not in external


def rules(docs, name):
    role = next(d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"] == name)
    return sorted(
        (tuple(r["apiGroups"]), tuple(r["resources"]), tuple(sorted(r["verbs"]))) for r in role["rules"]
    )


def test_rbac_is_exactly_what_each_stage_needs():
    docs = render(ALL_ON)
    assert rules(docs, "pas-agent") == [(("",), ("pods",), ("get", "list", "watch"))]
    assert rules(docs, "pas-scaler") == sorted([
        (("apps",), ("statefulsets", "deployments"), ("get", "list", "watch")),
        (("apps",), ("statefulsets/scale", "deployments/scale"), ("get", "patch")),
        (("autoscaling",), ("horizontalpodautoscalers",), ("get", "list", "watch")),
        (("events.k8s.io",), ("events",), ("create", "patch")),
    ])
    for d in docs:
        if d["kind"] in ("Role", "ClusterRole"):
            for r in d["rules"]:
                assert "*" not in r["verbs"] + r["resources"] + r["apiGroups"], d["metadata"]["name"]
    roles = [d["metadata"]["name"] for d in docs if d["kind"] in ("Role", "ClusterRole")]
    assert sorted(roles) == ["pas-agent", "pas-scaler"]
    # Only the agent and the scaler talk to the API server.
    for d, spec in pod_specs(docs):
        name = d["metadata"]["name"]
        if name in ("pas-agent", "pas-scaler"):
            assert spec["serviceAccountName"] == name
        else:
            assert spec.get("automountServiceAccountToken") is False, name


def test_every_pod_is_locked_down():
    docs = render(ALL_ON)
    seen = 0
    for d, spec in pod_specs(docs):
        name = d["metadata"]["name"]
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] > 0, name
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC"), name
        for c in spec.get("initContainers", []) + spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, (name, c["name"])
            assert sc["readOnlyRootFilesystem"] is True, (name, c["name"])
            assert sc["privileged"] is False, (name, c["name"])
            assert sc["capabilities"] == {"drop": ["ALL"]}, (name, c["name"])
            assert "resources" in c, (name, c["name"])
            seen += 1
        host = [v for v in spec.get("volumes", []) if "hostPath" in v]
        if name == "pas-agent":
            # The agent's one host mount: the cgroup tree, read-only.
            assert [v["hostPath"]["path"] for v in host] == ["/sys/fs/cgroup"]
            mounts = {m["name"]: m for m in spec["containers"][0]["volumeMounts"]}
            assert mounts["cgroup"]["readOnly"] is True
            assert spec["tolerations"] == [{"operator": "Exists"}]
            env = {e["name"]: e for e in spec["containers"][0]["env"]}
            assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
        else:
            assert host == [], name
    assert seen >= 10


def test_stages_have_probes_metrics_and_their_nats_user():
    docs = render(ALL_ON)
    ports = {"pas-agent": 9464, "pas-trainer": 9465, "pas-forecaster": 9466, "pas-scaler": 9467, "pas-recorder": 9468}
    found = {}
    for d, spec in pod_specs(docs):
        name = d["metadata"]["name"]
        if name not in ports:
            continue
        c = spec["containers"][0]
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz", name
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz", name
        assert c["ports"][0]["containerPort"] == ports[name], name
        annotations = d["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == str(ports[name]), name
        env = {e["name"]: e for e in c["env"]}
        user = name.removeprefix("pas-")
        assert env["PAS_NATS__USER"]["value"] == user, name
        assert env["PAS_NATS__PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "pas-nats-users", "key": user}
        found[name] = d
    assert set(found) == set(ports)
    assert found["pas-forecaster"]["spec"]["replicas"] == 2
    # Trainer replicas share the training jobs through the work queue.
    assert found["pas-trainer"]["spec"]["replicas"] == 1
    trainers = [d for d in render({**ALL_ON, "trainer": {"replicas": 3}}) if d["metadata"]["name"] == "pas-trainer" and d["kind"] == "Deployment"]
    assert trainers[0]["spec"]["replicas"] == 3
    recorder = {e["name"]: e for e in found["pas-recorder"]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert recorder["PAS_INFLUX__URL"]["value"] == "http://pas-influxdb:8086"
    assert recorder["PAS_INFLUX__TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "pas-influxdb", "key": "token"}


def test_nats_and_grafana_get_the_repository_files():
    docs = render(ALL_ON)
    by_name = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    nats = by_name[("ConfigMap", "pas-nats")]["data"]
    assert nats["accounts.conf"].strip() == (CHART / "files/nats-accounts.conf").read_text().strip()
    assert 'include "accounts.conf"' in nats["nats.conf"] and "jetstream" in nats["nats.conf"]
    assert 'include "../helm/pas/files/nats-accounts.conf"' in (ROOT / "nats/server.conf").read_text()
    dash = by_name[("ConfigMap", "pas-grafana-dashboards")]["data"]["pas.json"]
    assert dash.strip() == (CHART / "files/grafana/dashboards/pas.json").read_text().strip()
    # The example target is managed by PAS and burns CPU with `pas loadgen`.
    ss = by_name[("StatefulSet", "pas-ss")]
    assert ss["metadata"]["annotations"]["pas.io/enabled"] == "true"
    assert ss["spec"]["template"]["spec"]["containers"][0]["args"][0] == "loadgen"


def test_the_example_can_be_a_deployment():
    docs = render({**ALL_ON, "example": {**ALL_ON.get("example", {}), "enabled": True, "kind": "Deployment"}})
    by_name = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    assert ("StatefulSet", "pas-ss") not in by_name and ("Service", "pas-ss") not in by_name
    deploy = by_name[("Deployment", "pas-ss")]
    assert deploy["metadata"]["annotations"]["pas.io/enabled"] == "true"
    assert "serviceName" not in deploy["spec"] and "podManagementPolicy" not in deploy["spec"]
    assert deploy["spec"]["template"]["spec"]["containers"][0]["args"][0] == "loadgen"
    with pytest.raises(helm.HelmError):
        render({"example": {"enabled": True, "kind": "DaemonSet"}})



def test_the_schema_refuses_bad_values():
    for bad in [{"forecaster": {"replicas": 0}}, {"trainer": {"replicas": 0}}, {"busInit": {"fleet": {"workloads": 0}}},
                {"busInit": {"fleet": {"retention": "soon"}}}, {"scaler": {"policy": "magic"}}, {"nats": {"storage": {"size": "lots"}}}, {"typo": 1},
                # Two servers lose their quorum with one gone.
                {"nats": {"replicas": 2}}]:
        with pytest.raises(helm.HelmError):
            render(bad)
    # An external NATS without the users' passwords is a clear error.
    with pytest.raises(helm.HelmError, match="existingSecret"):
        render({"nats": {"enabled": False, "external": {"url": "nats://x:4222"}}})


def test_the_dockerfiles_match_the_chart():
    """No container engine runs here, so the images are not built; this
    holds the Dockerfiles to what the chart expects of them."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for name, repository in [("pas", values["image"]["repository"]), ("agent", values["agentImage"]["repository"])]:
        text = (ROOT / f"docker/{name}.Dockerfile").read_text()
        stages = [line for line in text.splitlines() if line.startswith("FROM ")]
        assert len(stages) >= 2, f"{name}: multi-stage"
        final = text[text.rindex("\nFROM "):]
        assert "USER 65532:65532" in final, f"{name}: runs as the chart's non-root user"
        assert f"-t {repository}:" in text, f"{name}: builds {repository}"
    agent = (ROOT / "docker/agent.Dockerfile").read_text()
    assert "libtorch" not in agent[agent.rindex("\nFROM "):].lower().replace("no libtorch", "")
    pas = (ROOT / "docker/pas.Dockerfile").read_text()
    assert "scripts/setup.sh libtorch" in pas, "libtorch as on a developer's machine"
    trace = pathlib.PurePosixPath(values["example"]["trace"])
    assert f"COPY testdata/traces/ {trace.parent}/" in pas
    assert (ROOT / "testdata/traces" / trace.name).exists()


def test_every_stage_takes_the_configuration_the_chart_gives_it(agent_bin, pas_bin):
    """The real binaries read the environment the rendered pods would get
    (secrets and downward-API fields stand in as placeholders) and print
    the configuration they would run with: an unknown key or a bad value
    would make them exit 1."""

    docs = render(ALL_ON)
    checked = []
    for d, spec in pod_specs(docs):
        c = spec["containers"][0]
        name = d["metadata"]["name"]
        if name == "pas-agent":
            command = [str(agent_bin)]
        elif name in ("pas-trainer", "pas-forecaster", "pas-scaler", "pas-recorder"):
            command = [str(pas_bin), *c["args"]]
        else:
            continue
        env = {"PATH": os.environ.get("PATH", ""), "LD_LIBRARY_PATH": os.environ.get("LD_LIBRARY_PATH", "")}
        for e in c["env"]:
            env[e["name"]] = e.get("value", f"placeholder-{e['name'].lower()}")
        out = subprocess.run(command + ["--print-config"], env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, f"{name}: {out.stderr}"
        config = json.loads(out.stdout)
        assert config["nats"]["user"] == name.removeprefix("pas-"), name
        assert config["nats"]["password"] == "<redacted>", name
        assert config["log_json"] is True, name
        checked.append((name, config))
    configs = dict(checked)
    assert set(configs) == {"pas-agent", "pas-trainer", "pas-forecaster", "pas-scaler", "pas-recorder"}
    assert configs["pas-agent"]["cgroup_root"] == "/host/cgroup"
    assert configs["pas-agent"]["kubernetes"] == "on"
    assert configs["pas-scaler"]["cluster"] == "kube"
    assert configs["pas-scaler"]["defaults"]["policy"] == "hybrid"
    assert configs["pas-recorder"]["influx"]["url"] == "http://pas-influxdb:8086"
    assert configs["pas-recorder"]["influx"]["token"] == "<redacted>"
    assert configs["pas-recorder"]["listen"] == "0.0.0.0:9468"


def by_kind_name(docs):
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def test_nats_runs_as_a_three_node_cluster_by_default():
    docs = by_kind_name(render({}))
    sts = docs[("StatefulSet", "pas-nats")]
    assert sts["spec"]["replicas"] == 3
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    pod = sts["spec"]["template"]["spec"]
    term = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"]["app.kubernetes.io/component"] == "nats"
    nats = pod["containers"][0]
    assert nats["lifecycle"]["preStop"]["exec"]["command"] == ["nats-server", "--signal", "ldm=/var/run/nats/nats.pid"]
    assert pod["terminationGracePeriodSeconds"] > 40, "lame duck (30 s after a 10 s grace) must fit"
    assert {"name": "cluster", "containerPort": 6222} in nats["ports"]
    pdb = docs[("PodDisruptionBudget", "pas-nats")]
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "nats"
    headless = docs[("Service", "pas-nats-headless")]["spec"]
    assert headless["publishNotReadyAddresses"] is True and any(p["port"] == 6222 for p in headless["ports"])
    conf = docs[("ConfigMap", "pas-nats")]["data"]["nats.conf"]
    for i in range(3):
        assert f"nats://pas-nats-{i}.pas-nats-headless:6222" in conf
    assert "lame_duck_duration" in conf and "pid_file: /var/run/nats/nats.pid" in conf
    # bus init puts every stream and bucket on all three.
    job = docs[("Job", "pas-bus-init")]["spec"]["template"]["spec"]["containers"][0]
    assert job["args"] == ["bus", "init", "--replicas", "3"]
    # helm test checks the same, replicas included.
    assert docs[("Pod", "pas-test-bus")]["spec"]["containers"][0]["args"] == ["bus", "status", "--replicas", "3"]
    # Sized for a fleet: init and the test pass the same limits.
    fleet = by_kind_name(render({"busInit": {"fleet": {"workloads": 10000, "retention": "2h"}}}))
    faster = by_kind_name(render({"busInit": {"fleet": {"workloads": 10}}, "agent": {"interval": "1s"}, "forecaster": {"env": {"PAS_STEP": "5s"}}}))
    assert faster[("Job", "pas-bus-init")]["spec"]["template"]["spec"]["containers"][0]["args"][-4:] == [
        "--sample-interval", "1s", "--forecast-interval", "5s"]
    # The agents' interval and the forecaster's step set the message rates.
    sized = ["--workloads", "10000", "--pods-per-workload", "3", "--retention", "2h", "--name-length", "63",
             "--sample-interval", "5s", "--forecast-interval", "15s"]
    assert fleet[("Job", "pas-bus-init")]["spec"]["template"]["spec"]["containers"][0]["args"] == ["bus", "init", "--replicas", "3"] + sized
    assert fleet[("Pod", "pas-test-bus")]["spec"]["containers"][0]["args"] == ["bus", "status", "--replicas", "3"] + sized
    # The forecaster and the scaler keep one pod up through a drain.
    for name in ["pas-forecaster", "pas-scaler"]:
        assert docs[("PodDisruptionBudget", name)]["spec"]["maxUnavailable"] == 1

    single = by_kind_name(render({"nats": {"replicas": 1}}))
    assert "cluster {" not in single[("ConfigMap", "pas-nats")]["data"]["nats.conf"]
    assert ("PodDisruptionBudget", "pas-nats") not in single
    assert single[("Job", "pas-bus-init")]["spec"]["template"]["spec"]["containers"][0]["args"][-2:] == ["--replicas", "1"]
    external = by_kind_name(render(EXTERNAL))
    assert external[("Job", "pas-bus-init")]["spec"]["template"]["spec"]["containers"][0]["args"] == ["bus", "init"]


def test_the_nats_pods_restart_when_any_of_their_configuration_changes():
    def checksum(values):
        sts = by_kind_name(render(values))[("StatefulSet", "pas-nats")]
        return sts["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    base = checksum({})
    assert checksum({"nats": {"jetstream": {"maxFile": "8GB"}}}) != base
    assert checksum({"nats": {"replicas": 5}}) != base
    assert checksum({}) == base


def test_the_rendered_nats_configuration_is_one_nats_server_accepts(tmp_path):
    from conftest import _nats_server

    data = by_kind_name(render({}))[("ConfigMap", "pas-nats")]["data"]
    for name, text in data.items():
        text = text.replace("/data/jetstream", str(tmp_path / "js")).replace("/var/run/nats", str(tmp_path))
        (tmp_path / name).write_text(text)
    env = {f"PAS_{u.upper()}_PASSWORD": "pw" for u in ["admin", "agent", "trainer", "forecaster", "scaler", "recorder", "viewer"]}
    env |= {"POD_NAME": "pas-nats-0", "PATH": os.environ.get("PATH", "")}
    out = subprocess.run([_nats_server(), "-t", "-c", str(tmp_path / "nats.conf")], env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_component_takes_the_scheduling_values_users_expect():
    scheduling = {
        "nodeSelector": {"pool": "pas"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "pas", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}}},
        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway",
                                       "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "pas"}}}],
        "priorityClassName": "pas-critical",
        "podAnnotations": {"team": "autoscaling"},
    }
    components = ["nats", "busInit", "agent", "trainer", "forecaster", "scaler", "recorder", "influxdb", "grafana", "example"]
    values = {k: dict(v) for k, v in ALL_ON.items()}
    for c in components:
        values.setdefault(c, {}).update(scheduling)
    docs = render(values)
    seen = set()
    for d, spec in pod_specs(docs):
        component = d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component") if d["kind"] != "Pod" else None
        if component is None:
            continue
        seen.add(component)
        for key in ["nodeSelector", "tolerations", "affinity", "topologySpreadConstraints", "priorityClassName"]:
            assert spec.get(key) == scheduling[key], f"{d['metadata']['name']}: {key}"
        assert d["spec"]["template"]["metadata"]["annotations"]["team"] == "autoscaling", d["metadata"]["name"]
    assert seen == {"nats", "bus-init", "agent", "trainer", "forecaster", "scaler", "recorder", "influxdb", "grafana", "example"}
    for version in KUBERNETES:
        for d in docs:
            if d["apiVersion"].startswith("monitoring.coreos.com/"):
                continue
            manifest = {k: v for k, v in d.items() if k != "__file"}
            kubernetes_validate.validate(manifest, version, strict=True)
