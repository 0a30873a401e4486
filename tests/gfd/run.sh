#!/usr/bin/env bash
# NVIDIA's gpu-feature-discovery (GFD) v0.17.4 over the fake NVML, compared label by label with
# the status-updater's labels for the same node (check.py). GFD is built from the Go module proxy
# (github.com/NVIDIA/k8s-device-plugin/cmd/gpu-feature-discovery, pinned by go.mod/go.sum here;
# nfd/ stands in for sigs.k8s.io/node-feature-discovery, which the proxy refuses and which GFD
# uses only for --use-node-feature-api) once into a cache keyed by those files and the Go
# version. GFD reads /sys/bus/pci/devices/<bdf>/… for each GPU: check.py runs it in a private
# mount namespace with `fakegpu sysfs`'s tree bound there, so the host's /sys is never changed.
#
# Env: FAKEGPU_CACHE (default ~/.cache/fake-gpu-operator). Needs root (mount namespace).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
command -v go >/dev/null || { echo "gfd: the Go toolchain (go) is not on PATH" >&2; exit 2; }
command -v unshare >/dev/null || { echo "gfd: unshare (util-linux) is not on PATH" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "gfd: must run as root (GFD runs in a private mount namespace)" >&2; exit 2; }

CACHE_ROOT="${FAKEGPU_CACHE:-$HOME/.cache/fake-gpu-operator}"
KEY="$( { cd "$HERE" && find go.mod go.sum tools.go nfd -type f | LC_ALL=C sort | xargs cat; go env GOVERSION; } | sha256sum | cut -c1-16)"
BIN="$CACHE_ROOT/gfd-$KEY/gpu-feature-discovery"
if [ ! -x "$BIN" ]; then
  mkdir -p "$CACHE_ROOT"
  exec 9>"$CACHE_ROOT/.gfd-$KEY.lock"
  flock 9
  if [ ! -x "$BIN" ]; then
    echo "gfd: building gpu-feature-discovery (github.com/NVIDIA/k8s-device-plugin $(awk '$1 == "require" && $2 ~ /k8s-device-plugin/ {print $3}' "$HERE/go.mod"))" >&2
    tmp="$(mktemp -d "$CACHE_ROOT/.gfd-$KEY.XXXXXX")"
    start=$SECONDS
    (cd "$HERE" && CGO_ENABLED=1 GOTOOLCHAIN=local GOFLAGS="-mod=readonly ${GOFLAGS:-}" \
       go build -trimpath -o "$tmp/gpu-feature-discovery" github.com/NVIDIA/k8s-device-plugin/cmd/gpu-feature-discovery 2> "$tmp/build.log") \
      || { cat "$tmp/build.log" >&2; rm -rf "$tmp"; exit 1; }
    echo "gfd: built in $((SECONDS - start)) s" >&2
    mkdir -p "$(dirname "$BIN")" && mv "$tmp/gpu-feature-discovery" "$BIN" && rm -rf "$tmp"
  fi
fi

cd "$ROOT"
LIB_DIR="$(PROFILE=debug scripts/fake-lib-dir.sh)"
cargo build -q -p fakegpu -p fakegpu-operator-core --example node-labels
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}/debug"
python3 "$HERE/check.py" "$BIN" "$LIB_DIR" "$TARGET/fakegpu" "$TARGET/examples/node-labels" "$@"
