#!/usr/bin/env bash
# All tests, as CI runs them (.ci/run calls this). Installs what it needs; each suite is
# a script of its own so that it can also be run alone.
#
#   scripts/test.sh            # everything
#   SKIP_CLUSTER=1 scripts/test.sh   # without the Kubernetes control plane (not allowed under CI=true)
set -uo pipefail
cd "$(dirname "$0")/.."

failed=()
step() {
  local name=$1; shift
  echo
  echo "=== $name: $*"
  local start=$SECONDS
  if "$@"; then
    echo "=== $name: ok ($((SECONDS - start)) s)"
  else
    echo "=== $name: FAILED ($((SECONDS - start)) s)"
    failed+=("$name")
  fi
}

scripts/ensure-toolchain.sh || exit 1
# A clean clone builds everything once: incremental state would only take disk.
[ "${CI:-}" = true ] && export CARGO_INCREMENTAL=0
df -h . | tail -1 | awk '{print "disk before the suites: " $4 " free"}'

step fmt cargo fmt --all -- --check
step dockerfile python3 tests/docker/check_dockerfile.py
step clippy cargo clippy --workspace --all-targets -q -- -D warnings
# Binaries that tests run as programs (node_files_e2e: our nvidia-smi over the fake NVML).
step build cargo build -q -p nvidia-smi -p nvml-shim -p cuda-shim
# What GPU containers get (fake NVML, nvidia-smi) built for glibc >= 2.17; fails if any needs a newer GLIBC symbol.
step portable scripts/build-portable.sh
# Tests that need Kubernetes run against a real control plane started for the whole run;
# without one they fail under CI=true and skip locally.
if [ -z "${SKIP_CLUSTER:-}" ] || [ "${CI:-}" = true ]; then
  step tests scripts/cluster-ci.sh cargo test --workspace -q
else
  step tests cargo test --workspace -q
fi
# A real kubelet + containerd node on this host (needs root; under CI=true not being root fails).
[ -x tests/real-node/run.sh ] && step real-node tests/real-node/run.sh
[ -x tests/conformance/run.sh ] && step conformance tests/conformance/run.sh
[ -x tests/go-nvml/run.sh ] && step go-nvml tests/go-nvml/run.sh
# NVIDIA's gpu-feature-discovery over the fake NVML: its node labels equal the status-updater's.
[ -x tests/gfd/run.sh ] && step gfd tests/gfd/run.sh
# NVIDIA's nvidia-ctk cdi generate over a driver root laid by fakegpu driver-root install.
[ -x tests/nvidia-ctk/run.sh ] && step nvidia-ctk tests/nvidia-ctk/run.sh
# grpc-go (the kubelet's client) with the socket path as :authority against the DRA plugin sockets.
[ -x tests/grpc-authority/run.sh ] && step grpc-authority tests/grpc-authority/run.sh
[ -x tests/live-state/run.sh ] && step live-state tests/live-state/run.sh
[ -x tests/smi-golden/run.sh ] && step smi-golden tests/smi-golden/run.sh
[ -x tests/cuda/run.sh ] && step cuda tests/cuda/run.sh

echo
df -h . | tail -1 | awk '{print "disk after the suites: " $4 " free"}'
du -sh target 2>/dev/null | awk '{print "target/: " $1}'
if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED suites: ${failed[*]}"
  exit 1
fi
echo "all suites passed"
