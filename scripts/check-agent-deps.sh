#!/usr/bin/env bash
# The node agent must stay small: no libtorch, no InfluxDB client, none of
# kube's heavy features (ws, derive, oauth, openssl). Checks the dependency
# graph and the built binary.
set -euo pipefail
cd "$(dirname "$0")/.."
fail=0
tree=$(cargo tree -p pas-agent -e normal --prefix none --no-dedupe 2>/dev/null | awk '{print $1}' | sort -u)
for banned in tch torch-sys pas-models influxdb2 kube-derive openssl openssl-sys tokio-tungstenite; do
  if grep -qx "$banned" <<<"$tree"; then
    echo "check-agent: pas-agent depends on $banned" >&2
    fail=1
  fi
done
bin=target/debug/pas-agent
[ -x target/release/pas-agent ] && [ target/release/pas-agent -nt "$bin" ] && bin=target/release/pas-agent
if [ -x "$bin" ]; then
  # Library names only: a load address (0x…7c10…) must not match.
  if ldd "$bin" | awk '{print $1}' | grep -Ei '^lib(torch|c10|gomp|cudart)'; then
    echo "check-agent: $bin links libtorch libraries" >&2
    fail=1
  fi
else
  echo "check-agent: $bin not built; run cargo build -p pas-agent" >&2
  fail=1
fi
[ "$fail" = 0 ] && echo "check-agent: pas-agent links no libtorch, InfluxDB or heavy kube features ($(grep -c . <<<"$tree") crates)"
exit "$fail"
