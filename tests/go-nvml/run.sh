#!/usr/bin/env bash
# go-nvml over the fake NVML: builds nvml-list (main.go, NVIDIA's github.com/NVIDIA/go-nvml from
# the Go module proxy; cgo, dlopens libnvidia-ml.so.1) once into a cache keyed by its sources and
# the Go version, runs it over the fake library for several nodes and checks every line against
# the model (`fakegpu show --json`, profiles/*.json): driver, CUDA version, GPU count, names,
# UUIDs, memory, PCI bus ids, compute capability.
#
# Env: FAKEGPU_CACHE (default ~/.cache/fake-gpu-operator).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
# shellcheck source=../lib/go-build.sh
. "$ROOT/tests/lib/go-build.sh"
BIN="$(go_build_cached go-nvml "$HERE" "go.mod go.sum main.go" 1 nvml-list=.)/nvml-list"

cd "$ROOT"
LIB_DIR="$(PROFILE=debug scripts/fake-lib-dir.sh)"
cargo build -q -p fakegpu
FAKEGPU="$ROOT/target/debug/fakegpu"
python3 "$HERE/check.py" "$BIN" "$LIB_DIR" "$FAKEGPU"
