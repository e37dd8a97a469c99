"""The first minutes of a new user: every command starts without a panic,
errors are said once with what to do, and inputs are checked before NATS.

Each command runs as built (target/debug), against a real nats-server where
it needs one, for a few seconds; then it is stopped."""

import os
import re
import signal
import subprocess
import time

from conftest import ROOT

TRACE = ROOT / "testdata/traces/nab-ec2_cpu_utilization_53ea38.csv"
ANSI = re.compile(r"\x1b\[[0-9;]*m")
# A free port nothing listens on: no NATS there.
NOWHERE = "nats://127.0.0.1:9"


def leaves(pas_bin, path=()):
    """Every subcommand that does something, from `pas [path] --help`."""
    out = subprocess.run([str(pas_bin), *path, "--help"], capture_output=True, text=True, check=True).stdout
    if "Commands:" not in out:
        return [path]
    names = []
    for line in out.split("Commands:")[1].split("\n\n")[0].splitlines():
        m = re.match(r"\s{2}(\S+)\s", line)
        if m and m.group(1) != "help":
            names.append(m.group(1))
    return [leaf for n in names for leaf in leaves(pas_bin, (*path, n))]


def invocations(pas_bin, agent_bin, url, tmp):
    nats = ["--nats-url", url]
    listen = ["--listen", "127.0.0.1:0"]
    return {
        ("bus", "init"): ["bus", "init", *nats],
        ("bus", "status"): ["bus", "status", *nats],
        ("bus", "tail"): ["bus", "tail", *nats, "--count", "1"],
        ("trainer",): ["trainer", *nats, *listen, "--run", "start"],
        ("forecaster",): ["forecaster", *nats, *listen, "--run", "start"],
        ("scaler",): ["scaler", *nats, *listen, "--run", "start", "--cluster", "simulated"],
        ("recorder",): ["recorder", *nats, *listen, "--run", "start", "--influx-url", "http://127.0.0.1:9"],
        ("experiment",): ["experiment", "--trace", str(TRACE), "--report", str(tmp / "report")],
        ("replay",): ["replay", *nats, "--run", "start", "--trace", str(TRACE), "--speed", "1000"],
        ("record",): ["record", *nats, "--run", "start", "--out", str(tmp / "rec.csv"), "--duration", "3s"],
        ("loadgen",): ["loadgen", "--trace", str(TRACE), "--speed", "1000"],
        ("models", "eval"): ["models", "eval", "--trace", str(TRACE)],
        ("models", "train"): ["models", "train", "--trace", str(TRACE), "--out", str(tmp / "model")],
        ("shadow", "report"): ["shadow", "report", *nats],
        # Nothing listens there: it retries (with backoff) past the 4 s.
        ("import", "prometheus"): ["import", "prometheus", "--url", "http://127.0.0.1:9", "--out",
                                   str(tmp / "history.jsonl"), "--retries", "20"],
    }


def test_every_command_starts_without_a_panic(pas_bin, agent_bin, nats_server, tmp_path):
    table = invocations(pas_bin, agent_bin, nats_server.url, tmp_path)
    # The table covers every command `pas --help` lists (a new one must be added).
    assert sorted(leaves(pas_bin)) == sorted(table), "pas has commands this test does not start"
    subprocess.run([str(pas_bin), "bus", "init", "--nats-url", nats_server.url], check=True, capture_output=True)
    env = {**os.environ, "RUST_BACKTRACE": "1"}
    runs = {name: subprocess.Popen([str(pas_bin), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   env=env, cwd=tmp_path)
            for name, args in table.items()}
    runs[("pas-agent",)] = subprocess.Popen(
        [str(agent_bin), "--nats-url", nats_server.url, "--kubernetes", "off", "--interval", "250ms",
         "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    time.sleep(4)
    # Each either finished its job (status 0) or was still at it: a command
    # that failed at once (a flag the table got wrong) would test nothing.
    stopped = set()
    for name, proc in runs.items():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            stopped.add(name)
    for name, proc in runs.items():
        try:
            out, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        text = out.decode(errors="replace")
        assert "panicked" not in text and proc.returncode != 101, f"{name} panicked:\n{text}"
        assert name in stopped or proc.returncode == 0, f"{name} ended with {proc.returncode}:\n{text}"
        assert "Stack backtrace" not in text, f"{name}:\n{text}"
        # Not a terminal: no colour codes in the logs.
        assert not ANSI.search(text), f"{name} wrote colour codes:\n{text[:500]}"


def run(pas_bin, *args, cwd=None):
    env = {**os.environ, "RUST_BACKTRACE": "1"}
    return subprocess.run([str(pas_bin), *args], capture_output=True, text=True, timeout=30, env=env, cwd=cwd)


def test_a_built_pas_runs_without_a_library_path(pas_bin):
    # The binary carries a run path to the libtorch it was built against.
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    r = subprocess.run([str(pas_bin), "--help"], capture_output=True, text=True, env=env, timeout=30)
    assert r.returncode == 0 and "Usage" in r.stdout, r.stderr


def test_a_missing_stream_says_to_run_bus_init(pas_bin, nats_server):
    # A server without `pas bus init`.
    r = run(pas_bin, "replay", "--nats-url", nats_server.url, "--run", "x", "--trace", str(TRACE))
    assert r.returncode == 1 and "PAS_SAMPLES" in r.stderr and "run `pas bus init`" in r.stderr, r.stderr


def test_no_server_says_which_url_and_what_to_do_once(pas_bin):
    r = run(pas_bin, "bus", "status", "--nats-url", NOWHERE)
    assert r.returncode == 1
    err = r.stderr.strip()
    assert err.startswith(f"error: cannot connect to NATS at {NOWHERE}"), err
    assert "--nats-url" in err and "nats-server -js" in err, err
    # Said once: no "Caused by" list repeating it, no backtrace.
    assert err.count("Connection refused") == 1, err
    assert "Caused by" not in err and "backtrace" not in err.lower(), err


def test_inputs_are_checked_before_connecting(pas_bin, tmp_path):
    r = run(pas_bin, "replay", "--nats-url", NOWHERE, "--run", "x", "--trace", "nosuch.csv", cwd=tmp_path)
    assert r.returncode == 1 and "nosuch.csv" in r.stderr and "NATS" not in r.stderr, r.stderr

    r = run(pas_bin, "record", "--nats-url", NOWHERE, "--out", str(tmp_path / "missing/x.csv"))
    assert r.returncode == 1 and "does not exist" in r.stderr and "NATS" not in r.stderr, r.stderr

    existing = tmp_path / "model"
    existing.mkdir()
    start = time.monotonic()
    r = run(pas_bin, "models", "train", "--trace", str(TRACE), "--out", str(existing))
    assert r.returncode == 1 and "already exists" in r.stderr, r.stderr
    assert time.monotonic() - start < 10, "it trained before saying so"


def test_a_wrong_policy_names_the_valid_ones(pas_bin):
    r = run(pas_bin, "scaler", "--nats-url", NOWHERE, "--policy", "magic")
    assert r.returncode == 1
    assert "hpa, threshold, predictive, hybrid" in r.stderr, r.stderr


def test_offline_commands_show_only_their_flags(pas_bin):
    for command in (["experiment"], ["models"], ["models", "eval"], ["models", "train"], ["loadgen"]):
        out = run(pas_bin, *command, "--help").stdout
        assert "--nats-url" not in out and "--config" not in out, (command, out)
    for command in (["bus", "init"], ["replay"], ["record"], ["trainer"]):
        assert "--nats-url" in run(pas_bin, *command, "--help").stdout, command


def test_the_guides_commands_name_flags_that_exist(pas_bin):
    """docs/compare-with-your-hpa.md was run as written; this keeps it so:
    each `pas` command in its shell blocks names a command and flags that
    `pas … --help` lists."""
    guide = (ROOT / "docs/compare-with-your-hpa.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", guide, re.S)
    commands = [line.split("#")[0].split() for b in blocks for line in b.splitlines() if line.startswith("pas ")]
    assert len(commands) >= 3, commands
    paths = {tuple(p) for p in leaves(pas_bin)}
    for words in commands:
        path = tuple(w for w in words[1:] if not w.startswith("-"))
        path = next(path[:n] for n in range(len(path), 0, -1) if path[:n] in paths)
        text = subprocess.run([str(pas_bin), *path, "--help"], capture_output=True, text=True, check=True).stdout
        for flag in (w.split("=")[0] for w in words if w.startswith("--")):
            assert re.search(rf"{re.escape(flag)}(?![\w-])", text), f"`{' '.join(words)}`: pas {' '.join(path)} has no {flag}"
