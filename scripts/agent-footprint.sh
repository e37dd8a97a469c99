#!/usr/bin/env bash
# Measures the release pas-agent's resident memory while it samples and
# publishes to a local nats-server: peak RSS (VmHWM) and RSS at the end.
#
#   FOOTPRINT_SECONDS  how long to sample (default 60)
#   FOOTPRINT_INTERVAL the agent's interval (default 1s)
set -euo pipefail
cd "$(dirname "$0")/.."
PAS_CACHE=${PAS_CACHE:-$HOME/.cache/pas}
NATS_SERVER=${NATS_SERVER:-$PAS_CACHE/bin/nats-server}
seconds=${FOOTPRINT_SECONDS:-60}
interval=${FOOTPRINT_INTERVAL:-1s}

cargo build --release -q -p pas-cli -p pas-agent
run=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$run"' EXIT
mkdir -p "$run/ports"
"$NATS_SERVER" -js -sd "$run/js" -a 127.0.0.1 -p -1 --ports_file_dir "$run/ports" 2>/dev/null &
for _ in $(seq 100); do ls "$run"/ports/*.ports >/dev/null 2>&1 && break; sleep 0.05; done
url=$(sed -E 's/.*"nats":\["([^"]+)".*/\1/' "$run"/ports/*.ports)
target/release/pas bus init --nats-url "$url" >/dev/null 2>&1
target/release/pas-agent --nats-url "$url" --interval "$interval" --listen 127.0.0.1:0 2>/dev/null &
agent=$!
max=0
for _ in $(seq "$seconds"); do
  sleep 1
  rss=$(awk '/VmRSS/{print $2}' /proc/$agent/status)
  [ "$rss" -gt "$max" ] && max=$rss
done
hwm=$(awk '/VmHWM/{print $2}' /proc/$agent/status)
size=$(stat -c %s target/release/pas-agent)
published=$(target/release/pas bus status --nats-url "$url" --json 2>/dev/null | python3 -c 'import json,sys; print(next(s["messages"] for s in json.load(sys.stdin) if s["stream"]=="PAS_SAMPLES"))')
kill -TERM $agent; wait $agent || true
awk -v s="$seconds" -v i="$interval" -v h="$hwm" -v m="$max" -v b="$size" -v p="$published" 'BEGIN {
  printf "pas-agent footprint over %ss at interval %s: peak RSS (VmHWM) %.1f MiB, max sampled RSS %.1f MiB, binary %.1f MiB, %s samples stored\n", s, i, h/1024, m/1024, b/1048576, p }'
