#!/usr/bin/env bash
# Conformance suite (issue 2): real NVML clients nobody here wrote, run against the fake
# libnvidia-ml.so.1 and checked against the profile JSON and real-hardware captures.
#
#   tests/conformance/run.sh [pytest args]      e.g. -k nvidia_smi, -x
#
# Installs what it needs on a fresh Debian machine, under ${FAKEGPU_CACHE:-~/.cache/fake-gpu-operator}:
# two Python venvs with pinned PyPI packages, and NVIDIA's nvidia-smi 535 / nvml.h / libnvidia-ml
# from Debian non-free (scripts/fetch-nvidia.sh, unpacked, never installed). Then it builds the
# library (debug, as `cargo test` does; PROFILE=release for release), runs the pytest suite and
# the nvml-wrapper cargo test (skip with FAKEGPU_SKIP_CARGO_TEST=1).
set -euo pipefail
cd "$(dirname "$0")/../.."
HERE=tests/conformance
CACHE=${FAKEGPU_CACHE:-$HOME/.cache/fake-gpu-operator}
export FAKEGPU_CACHE=$CACHE
PROFILE=${PROFILE:-debug}

venv() { # venv <dir> <requirements>: (re)creates the venv when the pinned list changed
  local dir=$1 req=$2 stamp
  stamp=$(sha256sum "$req" | cut -c1-16)
  if [ "$(cat "$dir/.fakegpu-stamp" 2>/dev/null)" != "$stamp" ]; then
    echo "conformance: installing $(basename "$req") into $dir" >&2
    rm -rf "$dir"
    python3 -m venv "$dir"
    "$dir/bin/pip" install -q --disable-pip-version-check -r "$req"
    echo "$stamp" > "$dir/.fakegpu-stamp"
  fi
}

venv "$CACHE/venv-clients" "$HERE/requirements-clients.txt"
venv "$CACHE/venv-pynvml" "$HERE/requirements-pynvml.txt"
FAKEGPU_NVIDIA_ROOT=$(scripts/fetch-nvidia.sh)
export FAKEGPU_NVIDIA_ROOT
export FAKEGPU_VENV_CLIENTS=$CACHE/venv-clients FAKEGPU_VENV_PYNVML=$CACHE/venv-pynvml
FAKEGPU_LIB_DIR=$(PROFILE=$PROFILE scripts/fake-lib-dir.sh)
export FAKEGPU_LIB_DIR
# The CLI is the oracle for identities (tests fall back to consistency checks without it).
flag=(); [ "$PROFILE" = release ] && flag=(--release)
cargo build -q -p fakegpu "${flag[@]}" 2>/dev/null || echo "conformance: fakegpu CLI not built; identities checked for consistency only" >&2

status=0
"$CACHE/venv-clients/bin/python" -m pytest -p no:cacheprovider -q -rfEs "$HERE" "$@" || status=$?
if [ "${FAKEGPU_SKIP_CARGO_TEST:-0}" != 1 ] && [ $# -eq 0 ]; then
  cargo test -q -p fakegpu-conformance-nvml-wrapper || status=$?
fi
exit $status
