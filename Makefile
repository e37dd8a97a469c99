# PAS: two commands do all the set-up.
#   make test   installs what is missing into $(PAS_CACHE), then runs every test
#   make demo   installs what is missing, then runs the pipeline on this machine
#
# Installs go to PAS_CACHE (default ~/.cache/pas): nats-server, the Python test
# tools and a CPU libtorch. Set LIBTORCH to use a libtorch of your own.

SHELL := /bin/bash
PAS_CACHE ?= $(HOME)/.cache/pas
# The libtorch setup installs (or yours, `make LIBTORCH=DIR`) is linked at
# .libtorch; cargo builds against the link, by hand (.cargo/config.toml) as here.
LIBTORCH_SOURCE := $(LIBTORCH)
export LIBTORCH := $(CURDIR)/.libtorch
LIBTORCH_CXX11_ABI ?= 1
NATS_SERVER ?= $(PAS_CACHE)/bin/nats-server
export PAS_CACHE LIBTORCH_CXX11_ABI NATS_SERVER
export LD_LIBRARY_PATH := $(LIBTORCH)/lib$(if $(LD_LIBRARY_PATH),:$(LD_LIBRARY_PATH))
PY := $(PAS_CACHE)/venv/bin/python

.PHONY: all setup env lint test test-rust test-python check-agent chart demo schemas fuzz footprint bench-models bench-global bench-epoch results clean-cache

all: test

setup:
	@LIBTORCH="$(LIBTORCH_SOURCE)" scripts/setup.sh all

# For `cargo test` by hand (libtorch's lib/ for the test binaries, the nats-server): eval "$$(make -s env)"
env:
	@echo 'export LIBTORCH="$(LIBTORCH)" LIBTORCH_CXX11_ABI=$(LIBTORCH_CXX11_ABI) NATS_SERVER="$(NATS_SERVER)" LD_LIBRARY_PATH="$(LD_LIBRARY_PATH)"'

test: setup lint
	cargo build --workspace --bins
	cargo test --workspace --no-fail-fast
	$(MAKE) --no-print-directory check-agent
	$(PY) -m pytest -q integration-tests/python

# Formatting (rustfmt.toml) and every clippy warning as an error; part of make test.
lint: setup
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

test-rust: setup
	cargo test --workspace --no-fail-fast

test-python: setup
	cargo build -p pas-agent -p pas-cli
	$(PY) -m pytest -q integration-tests/python

# The Helm chart alone: lint, render, validate, RBAC and pod security (part of make test).
chart: setup
	$(PY) -m pytest -q integration-tests/python/test_chart.py

# The node agent links neither libtorch nor InfluxDB nor kube's heavy features.
check-agent:
	@scripts/check-agent-deps.sh

demo: setup
	@scripts/demo.sh

# The decoders and validators on many more random and mutated inputs than
# make test's 256 per property (FUZZ_CASES=…); a failure is shrunk and added
# to schemas/tests/fuzz.proptest-regressions, which every run replays first.
FUZZ_CASES ?= 100000
fuzz: setup
	PROPTEST_CASES=$(FUZZ_CASES) cargo test --release -p pas-schemas --test fuzz

# Regenerate schemas/json/ after changing a message type.
schemas:
	PAS_BLESS=1 cargo test -p pas-schemas --test golden

# Resident memory of the release agent while sampling (README's figure).
footprint: setup
	@scripts/agent-footprint.sh

# docs/benchmarks.md: every model on every shared trace (about 12 min, 1 thread).
TRACES ?= ../shared/data/traces
bench-models: setup
	cargo build --release -p pas-cli
	target/release/pas models eval --trace $(TRACES)/*.csv --threads 1 --quiet --json docs/bench/eval-shared-traces.json

# docs/benchmarks.md "Cold start": the global model trained without a
# family of traces (nab, alibaba2018, bitbrains), scored on that family's
# traces, beside the baselines and each trace's own lstm; about 30 min.
bench-global: setup
	cargo build --release -p pas-cli
	target/release/pas models eval --trace $(TRACES)/*.csv --threads 1 --quiet \
	  --models naive,seasonal-naive,holt-winters,lstm,global --global-train leave-family-out \
	  --json docs/bench/eval-leave-family-out.json

# docs/results.md: every policy and the oracle on every shared trace at
# targets 50-90 %, in four scenarios: demand linear between a trace's points
# or held (a step), pods starting in about 60 s or 180 s; about 45 min.
SCENARIOS := linear-60s step-60s linear-180s step-180s
results: setup
	cargo build --release -p pas-cli
	rm -rf docs/results/*/
	for s in $(SCENARIOS); do \
	  target/release/pas experiment --trace $(TRACES)/*.csv --threads 1 --targets 50,60,70,80,90 \
	    --shape $${s%-*} --startup $${s#*-} --report target/results/$$s || exit 1; \
	  mkdir -p docs/results/$$s; \
	  cp target/results/$$s/results.json target/results/$$s/summary.svg target/results/$$s/pareto.svg \
	    target/results/$$s/nab-ec2_cpu_utilization_77c1ca*.svg docs/results/$$s/; \
	  sed -E '/^!\[[^]]+\]\([^)]+\.svg\)/{/summary|pareto|77c1ca/!d}' target/results/$$s/report.md > docs/results/$$s/report.md; \
	done

# docs/benchmarks.md: seconds per epoch, tch against PyTorch (installs torch into $(PAS_CACHE)/bench-venv).
bench-epoch: setup
	scripts/bench-epoch.sh

clean-cache:
	rm -rf "$(PAS_CACHE)"
