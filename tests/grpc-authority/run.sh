#!/usr/bin/env bash
# The kubelet's gRPC client against our plugin sockets: builds grpc-info (main.go; grpc-go from
# the Go module proxy at the version kubelet v1.37.2 uses) once into a cache keyed by its sources
# and the Go version, then runs operator/tests/grpc_authority.rs, which serves the DRA plugin's
# registration and service sockets and has grpc-info call them with the socket path as
# :authority (as the kubelet's plugin watcher does) — and shows that a server without
# kubelet::authority::FixAuthority refuses the same call.
#
# Env: FAKEGPU_CACHE (default ~/.cache/fake-gpu-operator).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
command -v go >/dev/null || { echo "grpc-authority: the Go toolchain (go) is not on PATH" >&2; exit 2; }

CACHE_ROOT="${FAKEGPU_CACHE:-$HOME/.cache/fake-gpu-operator}"
KEY="$( { cat "$HERE/go.mod" "$HERE/go.sum" "$HERE/main.go"; go env GOVERSION; } | sha256sum | cut -c1-16)"
BIN="$CACHE_ROOT/grpc-info-$KEY/grpc-info"
if [ ! -x "$BIN" ]; then
  mkdir -p "$CACHE_ROOT"
  exec 9>"$CACHE_ROOT/.grpc-info-$KEY.lock"
  flock 9
  if [ ! -x "$BIN" ]; then
    echo "grpc-authority: building grpc-info (google.golang.org/grpc $(awk '$1 ~ /google.golang.org\/grpc$/ {print $2}' "$HERE/go.mod"))" >&2
    tmp="$(mktemp -d "$CACHE_ROOT/.grpc-info-$KEY.XXXXXX")"
    (cd "$HERE" && CGO_ENABLED=0 GOFLAGS=-mod=readonly go build -trimpath -o "$tmp/grpc-info" . 2> "$tmp/build.log") \
      || { cat "$tmp/build.log" >&2; rm -rf "$tmp"; exit 1; }
    mkdir -p "$(dirname "$BIN")" && mv "$tmp/grpc-info" "$BIN" && rm -rf "$tmp"
  fi
fi

cd "$ROOT"
FAKEGPU_GRPC_INFO="$BIN" cargo test -q -p fake-gpu-operator --test grpc_authority -- --ignored
