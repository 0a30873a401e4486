#!/usr/bin/env bash
# Cluster test stage: builds (or reuses) the pinned control-plane binaries, starts a cluster in
# a private run dir, runs the cluster tests with CI=true (absent cluster = failure, not skip) —
# or, given a command, runs that command against the cluster — and stops the cluster whatever
# happens. Component logs are copied to target/cluster-ci/logs.
#
# Env: FAKEGPU_CACHE (binary cache root, default ~/.cache/fake-gpu-operator),
#      FAKEGPU_CLUSTER_NODES (KWOK nodes for `up`, default 2), CARGO_TEST_ARGS (extra args).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

OUT="$ROOT/target/cluster-ci"
export FAKEGPU_RUN_DIR="$OUT/run"
export CI="${CI:-true}"
mkdir -p "$OUT"

echo "== control-plane binaries"
FAKEGPU_K8S_BIN_DIR="$(tests/cluster/build.sh)"
export FAKEGPU_K8S_BIN_DIR

# The `fakegpu` CLI carries `cluster` once it embeds fakegpu_cluster::ClusterCommand; until then
# the stand-alone bin of the cluster crate does the same job.
if cargo run -q -p fakegpu -- cluster --help >/dev/null 2>&1; then
  CLUSTER=(cargo run -q -p fakegpu -- cluster)
else
  cargo build -q -p fakegpu-cluster --bin fakegpu-cluster
  CLUSTER=(cargo run -q -p fakegpu-cluster --bin fakegpu-cluster --)
fi
echo "using: ${CLUSTER[*]}"

stop_cluster() {
  local rc=$?
  if [ -d "$FAKEGPU_RUN_DIR/logs" ]; then
    rm -rf "$OUT/logs" && cp -r "$FAKEGPU_RUN_DIR/logs" "$OUT/logs" || true
  fi
  echo "== cluster down"
  "${CLUSTER[@]}" down || echo "cluster down failed; run dir kept at $FAKEGPU_RUN_DIR" >&2
  exit "$rc"
}
trap stop_cluster EXIT
trap 'exit 130' INT TERM

# `up` starts the operator's components (status-updater, kwok-gpu-device-plugin, topology-server)
# from this binary; the operator E2E tests (operator/tests/operator_e2e.rs) run their own too.
echo "== operator binary"
cargo build -q -p fake-gpu-operator --bin fake-gpu-operator
export FAKEGPU_OPERATOR_BIN="$ROOT/target/debug/fake-gpu-operator"

echo "== cluster up"
"${CLUSTER[@]}" down >/dev/null 2>&1 || true # a run dir left by a killed earlier run
# The audit log lets tests count what a component wrote (operator_e2e: no duplicate writes).
export FAKEGPU_AUDIT_LOG="$OUT/audit.log"
rm -f "$FAKEGPU_AUDIT_LOG"
"${CLUSTER[@]}" up --nodes "${FAKEGPU_CLUSTER_NODES:-2}" --audit-log "$FAKEGPU_AUDIT_LOG"
export FAKEGPU_KUBECONFIG="$FAKEGPU_RUN_DIR/kubeconfig"

if [ $# -gt 0 ]; then
  # scripts/test.sh runs the whole workspace's tests against this cluster.
  echo "== $*"
  "$@"
else
  echo "== cluster tests"
  # shellcheck disable=SC2086
  cargo test -p fakegpu-cluster-support ${CARGO_TEST_ARGS:-}
  echo "== operator E2E"
  # shellcheck disable=SC2086
  cargo test -p fake-gpu-operator --test operator_e2e --test mig_manager_e2e --test nvml_mock_e2e ${CARGO_TEST_ARGS:-}
fi

echo "== helm chart: lint, templates, install into the cluster"
HELM="$FAKEGPU_K8S_BIN_DIR/helm" tests/helm/run.sh
# The DRA and compute-domain tests publish their own cluster-scoped DeviceClasses; the chart owns
# those names, so hand the cluster over without them.
"$FAKEGPU_K8S_BIN_DIR/kubectl" --kubeconfig "$FAKEGPU_KUBECONFIG" delete deviceclass gpu.nvidia.com mig.nvidia.com \
  compute-domain-default-channel.nvidia.com compute-domain-daemon.nvidia.com --ignore-not-found
HELM="$FAKEGPU_K8S_BIN_DIR/helm" KUBECTL="$FAKEGPU_K8S_BIN_DIR/kubectl" tests/helm/install.sh
