#!/usr/bin/env bash
# Operator benchmark for docs/benchmarks.md ("Operator"): 1,000 KWOK nodes x 8 GPUs from
# labelling to converged (labels, allocatable, per-node topology), 5,000 one-GPU pods (time from
# bind to the allocation being recorded, p50/p99/max), their deletion, and the RSS of the
# status-updater and kwok-gpu-device-plugin. A measurement script, not a test: it asserts nothing.
# Uses its own run dir; the operator's components are the ones `cluster up` starts.
#
# Env: BENCH_NODES (default 1000), BENCH_PODS (default 5000), BENCH_POD_RATE (pods/s, default
#      unpaced), BENCH_PROFILE (release|debug,
#      default release).
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
"$C" up --nodes 1 --pool idle
export KUBECONFIG="$FAKEGPU_RUN_DIR/kubeconfig"

rss() {
  python3 - "$FAKEGPU_RUN_DIR/state.json" <<'PY'
import json, sys
for p in json.load(open(sys.argv[1]))["processes"]:
    if p["name"] in ("status-updater", "kwok-gpu-device-plugin", "status-exporter", "topology-server"):
        f = {l.split(":")[0]: l.split()[1] for l in open(f"/proc/{p['pid']}/status") if l.startswith(("VmRSS", "VmHWM"))}
        print(f"  {p['name']:<24} RSS {int(f['VmRSS'])/1024:6.1f} MiB  peak {int(f['VmHWM'])/1024:6.1f} MiB")
PY
}
echo "== idle"
rss
BENCH_METRICS_ADDR="127.0.0.1:$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ports"]["status-exporter"])' "$FAKEGPU_RUN_DIR/state.json")"
export BENCH_METRICS_ADDR
echo "== run ($PROFILE build, load: $(cut -d' ' -f1-3 /proc/loadavg))"
"$ROOT/target/$PROFILE/examples/bench_operator"
echo "== after"
rss
