#!/usr/bin/env bash
# make demo: the whole pipeline as separate processes over a local
# nats-server with JetStream.
#
#   1. `pas replay` publishes a bundled NAB trace (testdata/traces) as the pod
#      samples of StatefulSet demo/web under replay.demo., 60× faster than it
#      was recorded (a 5-minute step becomes the pipeline's 5-second step):
#      the first 2364 rows (8 days) at once as history, then 32 rows paced,
#      through a simulated StatefulSet that follows the scaler's decisions.
#   2. `pas trainer` trains an LSTM on the history and stores it in pas-models.
#   3. `pas forecaster` loads it and forecasts every 5 s.
#   4. `pas scaler` (policy hybrid) decides and scales the simulated
#      StatefulSet. Each step is printed as it completes: the demand
#      measured (the pods' use together, in cores), what the model forecast
#      for it 15 s before, the decision (scripts/demo/watch.py).
#   5. `pas recorder` writes samples, forecasts and decisions through
#      InfluxDB 2's write API to a local VictoriaMetrics (or to
#      DEMO_INFLUX_URL); the points it wrote are counted at the end.
#   6. `pas experiment` compares every policy and the oracle on the whole
#      trace in virtual time: the table, report.md and plots.
#
#   DEMO_STATEFULSET=namespace/name  drive that real StatefulSet (kubeconfig
#                                    as kubectl finds it; the StatefulSet
#                                    needs the annotation pas.io/enabled=true)
#   DEMO_REPORT=dir                  where the report goes (default target/demo-report)
#   DEMO_LOGS=dir                    where the stages' logs are kept (default target/demo-logs)
#   DEMO_INFLUX_URL=url              record to that InfluxDB 2 instead (with
#                                    PAS_INFLUX__ORG, PAS_INFLUX__BUCKET and
#                                    PAS_INFLUX__TOKEN), e.g. for the Grafana
#                                    dashboard in helm/pas/files/grafana/
set -euo pipefail
cd "$(dirname "$0")/.."
PAS_CACHE=${PAS_CACHE:-$HOME/.cache/pas}
NATS_SERVER=${NATS_SERVER:-$PAS_CACHE/bin/nats-server}
VICTORIA_METRICS=${VICTORIA_METRICS:-$PAS_CACHE/bin/victoria-metrics}
trace=testdata/traces/nab-ec2_cpu_utilization_77c1ca.csv
report=${DEMO_REPORT:-target/demo-report}
history_rows=2364
live_rows=32
started=$(date +%s)

namespace=demo workload=web cluster=simulated
if [[ -n "${DEMO_STATEFULSET:-}" ]]; then
  namespace=${DEMO_STATEFULSET%%/*} workload=${DEMO_STATEFULSET##*/} cluster=kube
fi

echo "==> building pas (shares target/ with make test)"
cargo build -q -p pas-cli
pas=target/debug/pas

run=$(mktemp -d "${TMPDIR:-/tmp}/pas-demo.XXXXXX")
# The stores go with the run; the logs stay for reading afterwards.
logs=${DEMO_LOGS:-target/demo-logs}
mkdir -p "$logs" && rm -f "$logs"/*.log "$logs"/replay.out
pids=()
cleanup() {
  # Stages first, while nats-server is still up for their hand-over; the
  # server (pids[0]) last.
  for ((i = ${#pids[@]} - 1; i >= 1; i--)); do kill "${pids[i]}" 2>/dev/null || true; done
  for _ in $(seq 100); do
    alive=0
    for ((i = 1; i < ${#pids[@]}; i++)); do kill -0 "${pids[i]}" 2>/dev/null && alive=1; done
    ((alive)) || break
    sleep 0.1
  done
  for ((i = 1; i < ${#pids[@]}; i++)); do kill -9 "${pids[i]}" 2>/dev/null || true; done
  kill "${pids[0]}" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$run"
}
trap cleanup EXIT INT TERM

echo "==> nats-server with JetStream (store in $run)"
mkdir -p "$run/ports"
"$NATS_SERVER" -js -sd "$run/js" -a 127.0.0.1 -p -1 --ports_file_dir "$run/ports" 2>"$logs/nats.log" &
pids+=($!)
for _ in $(seq 100); do ls "$run"/ports/*.ports >/dev/null 2>&1 && break; sleep 0.05; done
url=$(sed -E 's/.*"nats":\["([^"]+)".*/\1/' "$run"/ports/*.ports)
export PAS_NATS__URLS="$url"
"$pas" bus init --nats-url "$url" >/dev/null
echo "    $url; streams and buckets provisioned"

head -n $((1 + history_rows + live_rows)) "$trace" >"$run/trace.csv"
backfill=$(python3 -c "print($history_rows / ($history_rows + $live_rows))")

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
influx=${DEMO_INFLUX_URL:-}
if [[ -z "$influx" ]]; then
  vm_port=$(free_port)
  "$VICTORIA_METRICS" -httpListenAddr "127.0.0.1:$vm_port" -storageDataPath "$run/vm" 2>"$logs/vm.log" &
  pids+=($!)
  influx="http://127.0.0.1:$vm_port"
  for _ in $(seq 100); do curl -fs "$influx/health" >/dev/null 2>&1 && break; sleep 0.1; done
  echo "==> VictoriaMetrics at $influx takes InfluxDB 2 writes (set DEMO_INFLUX_URL for a real InfluxDB 2)"
fi
recorder_metrics=127.0.0.1:$(free_port)
"$pas" recorder --run demo --step 5s --influx-url "$influx" --listen "$recorder_metrics" 2>"$logs/recorder.log" &
pids+=($!)

echo "==> trainer, forecaster and scaler on run 'demo' ($cluster StatefulSet $namespace/$workload); logs in $logs/"
"$pas" trainer -c scripts/demo/trainer.toml --run demo 2>"$logs/trainer.log" &
pids+=($!)
"$pas" forecaster -c scripts/demo/forecaster.toml --run demo 2>"$logs/forecaster.log" &
pids+=($!)
"$pas" scaler -c scripts/demo/scaler.toml --run demo --cluster "$cluster" 2>"$logs/scaler.log" &
pids+=($!)

echo "==> the served model's forecast against what then happened, and the scaler's decisions:"
# Process substitution: killing the tail ends the formatter too.
"$pas" bus tail --nats-url "$url" 'replay.demo.pas.>' 2>/dev/null > >(python3 -u scripts/demo/watch.py 3) &
watch=$!
pids+=("$watch")

echo "==> replaying $trace: $history_rows rows of history at once, then $live_rows rows at 60x (about $((live_rows * 5)) s)"
"$pas" replay --trace "$run/trace.csv" --run demo --namespace "$namespace" --workload "$workload" \
  --pods 4 --speed 60 --backfill "$backfill" --simulate 10s >"$logs/replay.out" 2>"$logs/replay.log" &
replay=$!
pids+=("$replay")
while kill -0 "$replay" 2>/dev/null; do
  sleep 10
  tr '\r' '\n' <"$logs/replay.log" | grep -a '\[' | tail -n 1 | sed 's/^/    replay /' || true
done
wait "$replay" || { cat "$logs/replay.log"; exit 1; }
sleep 2
# The watcher's last line: the forecast's mean error over the steps shown.
kill "$watch" 2>/dev/null || true
sleep 0.5
sed 's/^/    /' "$logs/replay.out"

echo "==> what the stages did"
plain() { sed -E 's/\x1b\[[0-9;]*m//g; s/^/    /'; }
grep -a "Stored a model version" "$logs/trainer.log" | plain || true
grep -a "Serving a new model version" "$logs/forecaster.log" | plain || true
echo "    recorder: points written to $influx (run=demo), by measurement:"
curl -fs "http://$recorder_metrics/metrics" | grep -E '^pas_recorder_(points|messages)_total' | sed 's/^/      /' || true
"$pas" bus status --nats-url "$url" | sed 's/^/    /' || true

echo "==> pas experiment: every policy and the oracle on the whole trace, in virtual time"
"$pas" experiment --trace "$trace" --report "$report" --threads 2 2>"$logs/experiment.log"
echo "==> done in $(( $(date +%s) - started )) s; the report with its plots: $report/report.md; every stage's log: $logs/"
