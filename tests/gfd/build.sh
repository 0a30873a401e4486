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
# shellcheck source=../lib/go-build.sh
. "$HERE/../lib/go-build.sh"
go_build_cached nvidia-k8s "$HERE" "go.mod go.sum tools.go nfd" 1 \
  gpu-feature-discovery=github.com/NVIDIA/k8s-device-plugin/cmd/gpu-feature-discovery \
  nvidia-device-plugin=github.com/NVIDIA/k8s-device-plugin/cmd/nvidia-device-plugin
