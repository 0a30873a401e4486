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
command -v go >/dev/null || { echo "go-nvml: the Go toolchain (go) is not on PATH" >&2; exit 2; }

CACHE_ROOT="${FAKEGPU_CACHE:-$HOME/.cache/fake-gpu-operator}"
KEY="$( { cat "$HERE/go.mod" "$HERE/go.sum" "$HERE/main.go"; go env GOVERSION; } | sha256sum | cut -c1-16)"
BIN="$CACHE_ROOT/go-nvml-$KEY/nvml-list"
if [ ! -x "$BIN" ]; then
  mkdir -p "$CACHE_ROOT"
  exec 9>"$CACHE_ROOT/.go-nvml-$KEY.lock"
  flock 9
  if [ ! -x "$BIN" ]; then
    echo "go-nvml: building nvml-list (github.com/NVIDIA/go-nvml $(awk '$1 == "require" && $2 ~ /go-nvml/ {print $3}' "$HERE/go.mod"))" >&2
    tmp="$(mktemp -d "$CACHE_ROOT/.go-nvml-$KEY.XXXXXX")"
    (cd "$HERE" && CGO_ENABLED=1 GOFLAGS=-mod=readonly go build -trimpath -o "$tmp/nvml-list" . 2> "$tmp/build.log") \
      || { cat "$tmp/build.log" >&2; rm -rf "$tmp"; exit 1; }
    mkdir -p "$(dirname "$BIN")" && mv "$tmp/nvml-list" "$BIN" && rm -rf "$tmp"
  fi
fi

cd "$ROOT"
LIB_DIR="$(PROFILE=debug scripts/fake-lib-dir.sh)"
cargo build -q -p fakegpu
FAKEGPU="$ROOT/target/debug/fakegpu"
python3 "$HERE/check.py" "$BIN" "$LIB_DIR" "$FAKEGPU"
