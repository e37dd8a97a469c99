#!/usr/bin/env bash
# make demo: a local nats-server with JetStream, the streams and buckets, and
# the node agent sampling this machine; prints the live samples as
# `nats sub 'pas.cpu.>'` would, then the stream status.
#
#   DEMO_SECONDS  how long the agent runs (default 20)
#
# Later stages (replay of a bundled trace, trainer, forecaster, scaler on a
# simulated StatefulSet) join this script as they are built.
set -euo pipefail
cd "$(dirname "$0")/.."
PAS_CACHE=${PAS_CACHE:-$HOME/.cache/pas}
NATS_SERVER=${NATS_SERVER:-$PAS_CACHE/bin/nats-server}
seconds=${DEMO_SECONDS:-20}

echo "==> building pas and pas-agent (release)"
cargo build --release -q -p pas-cli -p pas-agent
bin=target/release

run=$(mktemp -d "${TMPDIR:-/tmp}/pas-demo.XXXXXX")
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$run"
}
trap cleanup EXIT INT TERM

echo "==> starting nats-server with JetStream (store in $run)"
mkdir -p "$run/ports"
"$NATS_SERVER" -js -sd "$run/js" -a 127.0.0.1 -p -1 --ports_file_dir "$run/ports" 2>"$run/nats.log" &
pids+=($!)
for _ in $(seq 100); do ls "$run"/ports/*.ports >/dev/null 2>&1 && break; sleep 0.05; done
url=$(sed -E 's/.*"nats":\["([^"]+)".*/\1/' "$run"/ports/*.ports)
echo "    $url"

echo "==> pas bus init"
"$bin/pas" --nats-url "$url" bus init

echo "==> pas-agent sampling this machine every second for ${seconds}s (node-only: no cluster configured)"
"$bin/pas-agent" --nats-url "$url" --interval 1s --listen 127.0.0.1:0 2>"$run/agent.log" &
agent=$!
pids+=("$agent")
timeout "$seconds" "$bin/pas" --nats-url "$url" bus tail 'pas.cpu.>' 2>/dev/null || true

kill -TERM "$agent" && wait "$agent" || true
echo "==> pas bus status"
"$bin/pas" --nats-url "$url" bus status || true
echo "==> done: samples of this machine went through JetStream into PAS_SAMPLES"
