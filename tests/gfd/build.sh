#!/usr/bin/env bash
# Builds NVIDIA's gpu-feature-discovery and nvidia-device-plugin (github.com/NVIDIA/k8s-device-plugin,
# pinned by go.mod/go.sum here; nfd/ stands in for sigs.k8s.io/node-feature-discovery, which the
# module proxy refuses and which GFD uses only for --use-node-feature-api) from the Go module
# proxy, once, into a cache keyed by those files and the Go version. Prints the directory that
# holds both binaries.
#
# Env: FAKEGPU_CACHE (default ~/.cache/fake-gpu-operator).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
command -v go >/dev/null || { echo "gfd: the Go toolchain (go) is not on PATH" >&2; exit 2; }
CACHE_ROOT="${FAKEGPU_CACHE:-$HOME/.cache/fake-gpu-operator}"
KEY="$( { cd "$HERE" && find go.mod go.sum tools.go nfd -type f | LC_ALL=C sort | xargs cat; go env GOVERSION; } | sha256sum | cut -c1-16)"
DIR="$CACHE_ROOT/nvidia-k8s-$KEY"
COMMANDS=(gpu-feature-discovery nvidia-device-plugin)
complete() { for c in "${COMMANDS[@]}"; do [ -x "$DIR/$c" ] || return 1; done; }
if ! complete; then
  mkdir -p "$CACHE_ROOT"
  exec 9>"$CACHE_ROOT/.nvidia-k8s-$KEY.lock"
  flock 9
  if ! complete; then
    version=$(awk '$1 == "require" && $2 ~ /k8s-device-plugin/ {print $3}' "$HERE/go.mod")
    tmp="$(mktemp -d "$CACHE_ROOT/.nvidia-k8s-$KEY.XXXXXX")"
    for c in "${COMMANDS[@]}"; do
      echo "gfd: building $c (github.com/NVIDIA/k8s-device-plugin $version)" >&2
      start=$SECONDS
      (cd "$HERE" && CGO_ENABLED=1 GOTOOLCHAIN=local GOFLAGS="-mod=readonly ${GOFLAGS:-}" \
         go build -trimpath -o "$tmp/$c" "github.com/NVIDIA/k8s-device-plugin/cmd/$c" 2> "$tmp/build.log") \
        || { cat "$tmp/build.log" >&2; rm -rf "$tmp"; exit 1; }
      echo "gfd: $c built in $((SECONDS - start)) s" >&2
    done
    rm -f "$tmp/build.log"
    rm -rf "$DIR" && mv "$tmp" "$DIR"
  fi
fi
echo "$DIR"
