"""The node agent seen by a client nobody here wrote.

nats-py subscribes to ``pas.cpu.>`` as a user would with ``nats sub``, and
every message the real ``pas-agent`` binary publishes must validate against the
committed JSON Schema (checked by the ``jsonschema`` package, not by our code).
"""

import asyncio
import json
import os
import re
import signal
import subprocess
import urllib.request

import jsonschema
import nats


def start_agent(agent_bin, url, listen="127.0.0.1:0"):
    env = dict(os.environ, RUST_LOG="info")
    return subprocess.Popen(
        [str(agent_bin), "--nats-url", url, "--interval", "250ms", "--kubernetes", "off",
         "--node-name", "py-node.example", "--listen", listen],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )


async def collect(url, subject, count, timeout):
    nc = await nats.connect(url)
    got = []
    done = asyncio.Event()

    async def on_msg(msg):
        got.append(msg)
        if len(got) >= count:
            done.set()

    await nc.subscribe(subject, cb=on_msg)
    await nc.flush()
    try:
        await asyncio.wait_for(done.wait(), timeout)
    finally:
        await nc.drain()
    return got


def test_every_agent_message_validates_against_the_committed_schema(nats_server, agent_bin, pas_bin, schema_dir):
    subprocess.run([str(pas_bin), "bus", "init", "--nats-url", nats_server.url], check=True,
                   capture_output=True)
    schema = json.loads((schema_dir / "cpu-sample.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    agent = start_agent(agent_bin, nats_server.url)
    try:
        msgs = asyncio.run(collect(nats_server.url, "pas.cpu.>", 8, timeout=20))
    finally:
        agent.send_signal(signal.SIGTERM)
        out, err = agent.communicate(timeout=15)
    assert agent.returncode == 0, err.decode()
    assert len(msgs) >= 8
    for msg in msgs:
        assert msg.subject == "pas.cpu.node.py-node_example"
        body = json.loads(msg.data)
        errors = sorted(validator.iter_errors(body), key=str)
        assert not errors, f"{body} fails the schema: {errors}"
        assert body["schema_version"] == 2
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", body["timestamp"]), body["timestamp"]
        assert 0 <= body["cpu_used_millicores"] <= body["cpu_capacity_millicores"]
        assert msg.headers and msg.headers.get("Nats-Msg-Id"), "published with a de-duplication id"


def test_schema_rejects_what_the_agent_must_never_send(schema_dir):
    """The schema is not vacuous: it refuses the mistakes validation guards against."""
    schema = json.loads((schema_dir / "cpu-sample.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    good = {"schema_version": 2, "timestamp": "2026-11-23T17:00:00Z", "node": "n",
            "cpu_used_millicores": 1.0}
    assert validator.is_valid(good)
    for bad in (
        dict(good, cpu_used_millicores=-1),
        dict(good, schema_version=1),
        {k: v for k, v in good.items() if k != "node"},
        dict(good, cpu_used_millicores="lots"),
        dict(good, cpu_throttled_ratio=1.5),
    ):
        assert not validator.is_valid(bad), bad


def test_agent_serves_health_and_metrics_and_stops_on_sigterm(nats_server, agent_bin, pas_bin):
    subprocess.run([str(pas_bin), "bus", "init", "--nats-url", nats_server.url], check=True,
                   capture_output=True)
    # Pick a free port for the health server.
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    agent = start_agent(agent_bin, nats_server.url, listen=f"127.0.0.1:{port}")
    try:
        asyncio.run(collect(nats_server.url, "pas.cpu.>", 3, timeout=20))
        base = f"http://127.0.0.1:{port}"
        assert urllib.request.urlopen(base + "/healthz", timeout=5).status == 200
        assert urllib.request.urlopen(base + "/readyz", timeout=5).status == 200
        metrics = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
        published = re.search(r"^pas_agent_published_total (\d+)", metrics, re.M)
        assert published and int(published.group(1)) >= 3, metrics
        assert "pas_agent_dropped_total 0" in metrics
    finally:
        agent.send_signal(signal.SIGTERM)
        _, err = agent.communicate(timeout=15)
    assert agent.returncode == 0, err.decode()
    assert b"Draining" in err


def test_bad_configuration_is_a_clear_error(agent_bin, tmp_path):
    cfg = tmp_path / "agent.toml"
    cfg.write_text('interval = "5s"\nbuffer_capacty = 3\n')
    run = subprocess.run([str(agent_bin), "--config", str(cfg)], capture_output=True, timeout=30)
    assert run.returncode != 0
    assert b"buffer_capacty" in run.stderr, run.stderr
    run = subprocess.run([str(agent_bin), "--interval", "50ms", "--kubernetes", "off",
                          "--listen", "127.0.0.1:0"], capture_output=True, timeout=30)
    assert run.returncode != 0
    assert b"shorter than" in run.stderr, run.stderr
