#!/usr/bin/env bash
# NVIDIA's gpu-feature-discovery (GFD) v0.17.4 over the fake NVML, compared label by label with
# the status-updater's labels for the same node (check.py). GFD is built from the Go module proxy
# by build.sh (cached by version). GFD reads /sys/bus/pci/devices/<bdf>/… for each GPU: check.py runs it in a private
# mount namespace with `fakegpu sysfs`'s tree bound there, so the host's /sys is never changed.
#
# Env: FAKEGPU_CACHE (default ~/.cache/fake-gpu-operator). Needs root (mount namespace).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
command -v go >/dev/null || { echo "gfd: the Go toolchain (go) is not on PATH" >&2; exit 2; }
command -v unshare >/dev/null || { echo "gfd: unshare (util-linux) is not on PATH" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "gfd: must run as root (GFD runs in a private mount namespace)" >&2; exit 2; }

BIN="$("$HERE/build.sh")/gpu-feature-discovery"

cd "$ROOT"
LIB_DIR="$(PROFILE=debug scripts/fake-lib-dir.sh)"
cargo build -q -p fakegpu -p fakegpu-operator-core --example node-labels
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}/debug"
python3 "$HERE/check.py" "$BIN" "$LIB_DIR" "$TARGET/fakegpu" "$TARGET/examples/node-labels" "$@"
