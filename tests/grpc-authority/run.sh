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
# shellcheck source=../lib/go-build.sh
. "$ROOT/tests/lib/go-build.sh"
BIN="$(go_build_cached grpc-info "$HERE" "go.mod go.sum main.go" 0 grpc-info=.)/grpc-info"

cd "$ROOT"
FAKEGPU_GRPC_INFO="$BIN" cargo test -q -p fake-gpu-operator --test grpc_authority -- --ignored
