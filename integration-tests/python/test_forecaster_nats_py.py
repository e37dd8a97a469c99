"""The forecaster seen by a client nobody here wrote.

nats-py replays a recorded NAB trace as pod samples of two workloads under a
run prefix; the real ``pas forecaster`` binary forecasts them; every forecast
on ``replay.<run>.pas.forecast.>`` must be on its workload's subject and
validate against the committed JSON Schema (checked by ``jsonschema``).
"""

import asyncio
import csv
import json
import signal
import subprocess
from datetime import datetime

import jsonschema
import nats

from conftest import ROOT

RUN = "pyfc"
TRACE = ROOT / "testdata" / "traces" / "nab-ec2_cpu_utilization_53ea38.csv"
# A dot in a Kubernetes name becomes "_" in a subject token.
WORKLOADS = {"web": "web", "web.v2": "web_v2"}


def rows(limit):
    with TRACE.open() as f:
        return [(r["timestamp"], float(r["cpu"])) for r in list(csv.DictReader(f))[:limit]]


def parse(stamp):
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


async def replay_and_collect(url, wanted, timeout):
    last = parse(rows(300)[-1][0])
    nc = await nats.connect(url)
    js = nc.jetstream()
    got = []
    done = asyncio.Event()

    async def on_msg(msg):
        got.append(msg)
        at_end = {json.loads(m.data)["workload"] for m in got if parse(json.loads(m.data)["window_end"]) == last}
        if at_end >= set(WORKLOADS) and len(got) >= wanted:
            done.set()

    await nc.subscribe(f"replay.{RUN}.pas.forecast.>", cb=on_msg)
    await nc.flush()
    for at, cpu in rows(300):
        for name, token in WORKLOADS.items():
            sample = {"schema_version": 2, "timestamp": at, "node": "node-1", "namespace": "shop",
                      "workload": name, "pod": f"{name}-0", "cpu_used_millicores": cpu * 10,
                      "cpu_requested_millicores": 1000.0}
            await js.publish(f"replay.{RUN}.pas.cpu.pod.shop.{token}.{token}-0", json.dumps(sample).encode())
    try:
        await asyncio.wait_for(done.wait(), timeout)
    finally:
        await nc.drain()
    return got


def test_replayed_trace_yields_forecasts_that_validate_against_the_committed_schema(nats_server, pas_bin, schema_dir):
    subprocess.run([str(pas_bin), "bus", "init", "--nats-url", nats_server.url], check=True, capture_output=True)
    schema = json.loads((schema_dir / "forecast.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    forecaster = subprocess.Popen(
        [str(pas_bin), "forecaster", "--nats-url", nats_server.url, "--run", RUN, "--step", "300s",
         "--tick", "1s", "--replica", "py-1", "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        msgs = asyncio.run(replay_and_collect(nats_server.url, len(WORKLOADS), timeout=30))
    finally:
        forecaster.send_signal(signal.SIGTERM)
        out, err = forecaster.communicate(timeout=20)
    assert forecaster.returncode == 0, err.decode()
    last_sample = parse(rows(300)[-1][0])
    for msg in msgs:
        body = json.loads(msg.data)
        errors = sorted(validator.iter_errors(body), key=str)
        assert not errors, f"{body} fails the schema: {errors}"
        assert msg.subject == f"replay.{RUN}.pas.forecast.shop.{WORKLOADS[body['workload']]}"
        assert msg.headers and msg.headers.get("Nats-Msg-Id"), "published with a de-duplication id"
        assert body["step_seconds"] == 300
        assert len(body["values"]) == 10
        # No model is stored for this run: the baseline serves, and says so.
        assert body["model"] == {"key": f"shop/{body['workload']}", "kind": "naive", "version": 0}
        end = parse(body["window_end"])
        assert end.timestamp() % 300 == 0 and end <= last_sample
        assert all(v >= 0 for v in body["values"])
        if "upper" in body:
            assert all(u >= v for u, v in zip(body["upper"], body["values"]))
    # Both workloads were forecast from the window that ends on the trace's last point.
    at_end = {json.loads(m.data)["workload"] for m in msgs if parse(json.loads(m.data)["window_end"]) == last_sample}
    assert at_end == set(WORKLOADS)


def test_schema_rejects_a_forecast_the_forecaster_must_never_send(schema_dir):
    """The schema is not vacuous: it refuses what validation guards against."""
    schema = json.loads((schema_dir / "forecast.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    good = {"schema_version": 2, "timestamp": "2026-11-23T17:00:00Z", "namespace": "shop", "workload": "web",
            "model": {"key": "shop/web", "kind": "lstm", "version": 3}, "window_end": "2026-11-23T16:59:55Z",
            "step_seconds": 5.0, "pod_request_millicores": 500.0, "values": [1500.0, 1530.0]}
    assert validator.is_valid(good)
    for bad in (dict(good, step_seconds=-5), dict(good, schema_version=1), {k: v for k, v in good.items() if k != "model"},
                {k: v for k, v in good.items() if k != "pod_request_millicores"},
                dict(good, pod_request_millicores=0), dict(good, quantile=1.5)):
        assert not validator.is_valid(bad), bad
