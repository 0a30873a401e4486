#!/usr/bin/env bash
# Live node state (issue 4): state file, `fakegpu state`/`fault`, dynamic readings, faults and
# events, MIG — checked with NVIDIA's nvidia-smi 535, pynvml, gpustat and nvitop in separate
# processes.
#
#   tests/live-state/run.sh [pytest args]     e.g. -k mig, -x
#   tests/live-state/run.sh bench             per-call cost, static vs live state (docs/benchmarks.md)
#
# Installs what it needs under ${FAKEGPU_CACHE:-~/.cache/fake-gpu-operator}: the Python venv of
# the conformance suite's pinned clients, and NVIDIA's nvidia-smi 535 (scripts/fetch-nvidia.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
HERE=tests/live-state
CACHE=${FAKEGPU_CACHE:-$HOME/.cache/fake-gpu-operator}
export FAKEGPU_CACHE=$CACHE
PROFILE=${PROFILE:-release}
flag=(); [ "$PROFILE" = release ] && flag=(--release)

REQ=tests/conformance/requirements-clients.txt
VENV=$CACHE/venv-clients
stamp=$(sha256sum "$REQ" | cut -c1-16)
if [ "$(cat "$VENV/.fakegpu-stamp" 2>/dev/null)" != "$stamp" ]; then
  echo "live-state: installing $(basename "$REQ") into $VENV" >&2
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQ"
  echo "$stamp" > "$VENV/.fakegpu-stamp"
fi
FAKEGPU_NVIDIA_ROOT=$(scripts/fetch-nvidia.sh)
FAKEGPU_LIB_DIR=$(PROFILE=$PROFILE scripts/fake-lib-dir.sh)
cargo build -q -p fakegpu "${flag[@]}"
FAKEGPU_BIN=${CARGO_TARGET_DIR:-$PWD/target}/$PROFILE/fakegpu
export FAKEGPU_NVIDIA_ROOT FAKEGPU_LIB_DIR FAKEGPU_BIN FAKEGPU_VENV_CLIENTS=$VENV

# The C probe (32 reader threads; per-call timing), linked against the fake library.
BUILD=${CARGO_TARGET_DIR:-$PWD/target}/live-state
mkdir -p "$BUILD"
FAKEGPU_HAMMER=
if command -v cc >/dev/null; then
  cc -O2 -pthread -I"$FAKEGPU_NVIDIA_ROOT/usr/include" $HERE/hammer.c -L"$FAKEGPU_LIB_DIR" -lnvidia-ml \
    -Wl,-rpath,"$FAKEGPU_LIB_DIR" -o "$BUILD/hammer" && FAKEGPU_HAMMER=$BUILD/hammer
fi
export FAKEGPU_HAMMER

if [ "${1:-}" = bench ]; then
  [ -n "$FAKEGPU_HAMMER" ] || { echo "live-state: no C compiler for the benchmark" >&2; exit 1; }
  iters=${2:-5000000}
  dir=$(mktemp -d)
  trap 'rm -rf "$dir"' EXIT
  export FAKEGPU_PROFILE=h100 FAKEGPU_GPUS=8 FAKEGPU_NODE=bench LD_LIBRARY_PATH=$FAKEGPU_LIB_DIR
  FAKEGPU_STATE=$dir/state.json "$FAKEGPU_BIN" state set --gpu 0 --util 60 --mem-util 40 --mem-used 10GiB
  FAKEGPU_STATE=$dir/state.json "$FAKEGPU_BIN" state process add --gpu 0 --pid 10 --name bench --mem 1GiB
  for round in 1 2 3; do
    echo "== round $round: static (no state file)"
    env -u FAKEGPU_STATE -u FAKEGPU_CONFIG "$FAKEGPU_HAMMER" bench "$iters"
    echo "== round $round: live state (GPU 0 at 60 %, one process)"
    FAKEGPU_STATE=$dir/state.json "$FAKEGPU_HAMMER" bench "$iters"
  done
  exit 0
fi

exec "$VENV/bin/python" -m pytest -p no:cacheprovider -q -rfEs "$HERE" "$@"
