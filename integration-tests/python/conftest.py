"""Fixtures: a real nats-server per test and the binaries built by cargo."""

import json
import os
import pathlib
import shutil
import subprocess
import tempfile
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _binary(name: str) -> pathlib.Path:
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    path = target / os.environ.get("PAS_PROFILE", "debug") / name
    if not path.exists():
        pytest.fail(f"{path} is missing: run `cargo build -p pas-agent -p pas-cli` (make test does)")
    return path


def _nats_server() -> str:
    explicit = os.environ.get("NATS_SERVER")
    if explicit:
        return explicit
    cache = pathlib.Path(os.environ.get("PAS_CACHE", pathlib.Path.home() / ".cache/pas"))
    candidate = cache / "bin/nats-server"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("nats-server")
    if not found:
        pytest.fail("nats-server not found: run `make test` or scripts/setup.sh tools")
    return found


class NatsServer:
    def __init__(self) -> None:
        self.dir = tempfile.TemporaryDirectory()
        ports = pathlib.Path(self.dir.name) / "ports"
        ports.mkdir()
        self.log = open(pathlib.Path(self.dir.name) / "server.log", "wb")
        # JetStream reserves each stream's max_bytes (8 GiB for the PAS
        # streams); without max_file_store a server offers only 75 % of the
        # free disk, which a CI machine may not have. The tests store little.
        config = pathlib.Path(self.dir.name) / "server.conf"
        config.write_text("jetstream {\n  max_memory_store: 256MB\n  max_file_store: 20GB\n}\n")
        self.proc = subprocess.Popen(
            [_nats_server(), "-c", str(config), "-js", "-sd", f"{self.dir.name}/js", "-a", "127.0.0.1", "-p", "-1",
             "--ports_file_dir", str(ports)],
            stdout=subprocess.DEVNULL, stderr=self.log,
        )
        deadline = time.monotonic() + 15
        while True:
            files = list(ports.glob("*.ports"))
            if files:
                try:
                    self.url = json.loads(files[0].read_text())["nats"][0]
                    break
                except (ValueError, KeyError, IndexError):
                    pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("nats-server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.log.close()
        self.dir.cleanup()


@pytest.fixture
def nats_server():
    server = NatsServer()
    yield server
    server.stop()


@pytest.fixture
def agent_bin() -> pathlib.Path:
    return _binary("pas-agent")


@pytest.fixture
def pas_bin() -> pathlib.Path:
    return _binary("pas")


@pytest.fixture
def schema_dir() -> pathlib.Path:
    return ROOT / "schemas" / "json"
