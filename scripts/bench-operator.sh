#!/usr/bin/env bash
# Operator benchmark for docs/benchmarks.md ("Operator"): cold start of the operator's
# components against 1,000 labelled KWOK nodes x 8 GPUs, re-labelling all of them to another
# pool, 5,000 one-GPU pods (time from bind to the allocation being recorded, p50/p99/max),
# whole /metrics scrapes (plain and gzip), their deletion; CPU seconds per component and API
# requests per client (the API server's audit log, by User-Agent); RSS at the end.
# A measurement script, not a test: it asserts nothing. Uses its own run dir.
#
# Env: BENCH_NODES (default 1000), BENCH_PODS (default 5000), BENCH_POD_RATE (pods/s, default
#      unpaced), BENCH_PROFILE (release|debug, default release), BENCH_AUDIT (1 = audit log,
#      the default; 0 = none, for timings without the API server's audit cost).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export FAKEGPU_RUN_DIR="$ROOT/target/operator-bench/run"
PROFILE="${BENCH_PROFILE:-release}"
FLAG=(); [ "$PROFILE" = release ] && FLAG=(--release)

FAKEGPU_K8S_BIN_DIR="$(tests/cluster/build.sh)"
export FAKEGPU_K8S_BIN_DIR
cargo build -q "${FLAG[@]}" -p fake-gpu-operator --bin fake-gpu-operator --example bench_operator
cargo build -q -p fakegpu-cluster --bin fakegpu-cluster
export FAKEGPU_OPERATOR_BIN="$ROOT/target/$PROFILE/fake-gpu-operator"
C="$ROOT/target/debug/fakegpu-cluster"
trap '"$C" down >/dev/null 2>&1 || true' EXIT
"$C" down >/dev/null 2>&1 || true
AUDIT=()
if [ "${BENCH_AUDIT:-1}" = 1 ]; then
  export BENCH_AUDIT_LOG="$ROOT/target/operator-bench/audit.log"
  rm -f "$BENCH_AUDIT_LOG"
  AUDIT=(--audit-log "$BENCH_AUDIT_LOG")
fi
"$C" up --nodes 1 --pool idle --no-operator "${AUDIT[@]}"
export KUBECONFIG="$FAKEGPU_RUN_DIR/kubeconfig"
export BENCH_RUN_DIR="$FAKEGPU_RUN_DIR"
echo "== run ($PROFILE build, load: $(cut -d' ' -f1-3 /proc/loadavg))"
"$ROOT/target/$PROFILE/examples/bench_operator"
