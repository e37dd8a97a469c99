"""Stages meet only on the bus: no stage crate depends on another, and the
code two stages share lives in small library crates that link no libtorch
(DESIGN.md, Layout). Read from `cargo metadata`, so a dependency added to
any Cargo.toml (normal, dev or build) is caught."""

import json
import pathlib
import subprocess

REPO = pathlib.Path(__file__).resolve().parents[2]

# The pipeline's stages, by package name.
STAGES = {"pas-agent", "pas-trainer", "pas-forecaster", "pas-scaler", "pas-recorder"}
# What stages share: tch-free libraries.
SHARED = {"pas-schemas", "pas-nats", "pas-workloads", "pas-runtime"}


def packages():
    out = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--no-deps", "--offline"],
        cwd=REPO, check=True, capture_output=True, text=True,
    ).stdout
    return {p["name"]: p for p in json.loads(out)["packages"]}


def dependencies(package):
    return {(d["name"], d["kind"] or "normal") for d in package["dependencies"]}


def test_no_stage_crate_depends_on_another_stage_crate():
    found = packages()
    assert STAGES <= found.keys(), sorted(STAGES - found.keys())
    crossings = sorted(
        f"{name} -> {dep} ({kind})"
        for name in STAGES
        for dep, kind in dependencies(found[name])
        if dep in STAGES
    )
    assert not crossings, f"stages meet on the bus, not in Cargo.toml: {crossings}"


def test_shared_crates_link_no_libtorch_and_import_no_stage():
    found = packages()
    for name in SHARED:
        deps = {dep for dep, _ in dependencies(found[name])}
        assert not deps & STAGES, f"{name} depends on a stage: {sorted(deps & STAGES)}"
        assert not deps & {"tch", "torch-sys", "pas-models"}, f"{name} links libtorch"
