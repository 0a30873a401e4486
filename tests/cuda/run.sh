#!/usr/bin/env bash
# CUDA suite (issue 12): the fake libcuda.so.1 under real driver-API clients nobody here wrote
# (numba-cuda, cuda-bindings, Ray), a C program compiled with -Werror against NVIDIA's cuda.h,
# and the node state seen by NVIDIA's nvidia-smi 535.
#
#   tests/cuda/run.sh [pytest args]      e.g. -k node_state, -x
#   tests/cuda/run.sh bench [ITERS]      cuInit + count time, threads, RSS, cuDeviceGetAttribute ns/call
#
# Installs what it needs under ${FAKEGPU_CACHE:-~/.cache/fake-gpu-operator}: a venv of its own
# (venv-cuda, keyed by tests/cuda/requirements.txt), NVIDIA's nvidia-smi 535
# (scripts/fetch-nvidia.sh) and NVIDIA's libcuda 535 + cuda.h 11.8 (scripts/fetch-cuda.sh), all
# unpacked, never installed.
set -euo pipefail
cd "$(dirname "$0")/../.."
HERE=tests/cuda
CACHE=${FAKEGPU_CACHE:-$HOME/.cache/fake-gpu-operator}
export FAKEGPU_CACHE=$CACHE
PROFILE=${PROFILE:-debug}
[ "${1:-}" = bench ] && PROFILE=release
flag=(); [ "$PROFILE" = release ] && flag=(--release)

REQ=$HERE/requirements.txt
VENV=$CACHE/venv-cuda
stamp=$(sha256sum "$REQ" | cut -c1-16)
if [ "$(cat "$VENV/.fakegpu-stamp" 2>/dev/null)" != "$stamp" ]; then
  echo "cuda: installing $(basename "$REQ") into $VENV" >&2
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQ"
  echo "$stamp" > "$VENV/.fakegpu-stamp"
fi
FAKEGPU_NVIDIA_ROOT=$(scripts/fetch-nvidia.sh)
FAKEGPU_CUDA_ROOT=$(scripts/fetch-cuda.sh)
FAKEGPU_LIB_DIR=$(PROFILE=$PROFILE scripts/fake-lib-dir.sh)
cargo build -q -p fakegpu -p nvidia-smi "${flag[@]}"
TARGET=${CARGO_TARGET_DIR:-$PWD/target}/$PROFILE
export FAKEGPU_NVIDIA_ROOT FAKEGPU_CUDA_ROOT FAKEGPU_LIB_DIR FAKEGPU_VENV_CUDA=$VENV FAKEGPU_BIN=$TARGET/fakegpu \
  FAKEGPU_OUR_SMI=$TARGET/nvidia-smi

# The C probe, against NVIDIA's header, warnings as errors.
command -v cc >/dev/null || { echo "cuda: a C compiler is required" >&2; exit 1; }
FAKEGPU_CUDA_PROBE=$TARGET/cuda-probe
cc -std=c11 -Wall -Wextra -Werror -O2 -I"$FAKEGPU_CUDA_ROOT/usr/include" $HERE/probe.c -L"$FAKEGPU_LIB_DIR" -lcuda \
  -Wl,-rpath,"$FAKEGPU_LIB_DIR" -o "$FAKEGPU_CUDA_PROBE"
export FAKEGPU_CUDA_PROBE

if [ "${1:-}" = bench ]; then
  iters=${2:-20000000}
  for round in 1 2 3; do
    env -u FAKEGPU_STATE -u FAKEGPU_CONFIG FAKEGPU_PROFILE=h100 FAKEGPU_GPUS=8 FAKEGPU_NODE=bench "$FAKEGPU_CUDA_PROBE" bench "$iters"
  done
  exit 0
fi

exec "$VENV/bin/python" -m pytest -p no:cacheprovider -q -rfEs "$HERE" "$@"
