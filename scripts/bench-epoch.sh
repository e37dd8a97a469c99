#!/usr/bin/env bash
# Seconds per training epoch: PAS's tch loop against the same network on the
# same examples in PyTorch, on the same libtorch version and thread count.
#
#   scripts/bench-epoch.sh [TRACE]     (THREADS=1 EPOCHS=5 by default)
#
# Installs PyTorch (the PyPI wheel, with its CUDA dependencies: several GB,
# once) into $PAS_CACHE/bench-venv; nothing else uses it.
set -euo pipefail
cd "$(dirname "$0")/.."
TRACE=${1:-testdata/traces/nab-ec2_cpu_utilization_53ea38.csv}
THREADS=${THREADS:-1}
EPOCHS=${EPOCHS:-5}
PAS_CACHE=${PAS_CACHE:-$HOME/.cache/pas}
TORCH_VERSION=$(sed -n 's/^TORCH_VERSION=\(.*\)$/\1/p' scripts/setup.sh | tr -d "'\"")
venv="$PAS_CACHE/bench-venv"
if ! "$venv/bin/python" -c "import torch, numpy; assert torch.__version__.startswith('$TORCH_VERSION')" 2>/dev/null; then
  echo "bench-epoch: installing torch==$TORCH_VERSION into $venv (once)" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "torch==$TORCH_VERSION" numpy
fi
eval "$(make -s env)"
cargo build -q --release -p pas-cli
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
printf '%-10s %8s %8s %12s %12s %7s\n' model threads examples "tch s/epoch" "torch s/epoch" "ratio"
for model in lstm-seed lstm; do
  out="$work/$model"
  line=$(target/release/pas models train --trace "$TRACE" --model "$model" --epochs "$EPOCHS" \
    --threads "$THREADS" --out "$out" --export-examples "$work/$model.npz" --quiet 2>/dev/null)
  tch=$(sed -n 's/.* \([0-9.]*\) s per epoch.*/\1/p' <<<"$line")
  py=$("$venv/bin/python" scripts/bench_epoch.py --examples "$work/$model.npz" \
    --manifest "$out/manifest.json" --epochs "$EPOCHS" --threads "$THREADS")
  torch_s=$(python3 -c 'import json,sys; print("%.3f" % json.loads(sys.argv[1])["seconds_per_epoch"])' "$py")
  n=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["examples"])' "$py")
  printf '%-10s %8s %8s %12s %12s %7s\n' "$model" "$THREADS" "$n" "$tch" "$torch_s" \
    "$(python3 -c "print('%.2f' % ($tch / $torch_s))")"
done
