#!/usr/bin/env bash
# Control-plane benchmark for docs/benchmarks.md ("Control plane"): `cluster up` time to
# all-Ready with cached binaries, component RSS idle, and 1,000 KWOK nodes (time to Ready, RSS,
# idle CPU). A measurement script, not a test: it asserts nothing. Uses its own run dir.
#
# Env: BENCH_NODES (default 1000), BENCH_UP_RUNS (default 3), BENCH_IDLE_S (default 30).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export FAKEGPU_RUN_DIR="$ROOT/target/cluster-bench/run"
NODES="${BENCH_NODES:-1000}"
RUNS="${BENCH_UP_RUNS:-3}"
IDLE="${BENCH_IDLE_S:-30}"

FAKEGPU_K8S_BIN_DIR="$(tests/cluster/build.sh)"
export FAKEGPU_K8S_BIN_DIR
# Debug build: the harness only issues requests; the measured work happens in the Go processes.
cargo build -q -p fakegpu-cluster --bin fakegpu-cluster
C="$ROOT/target/debug/fakegpu-cluster"
trap '"$C" down >/dev/null 2>&1 || true' EXIT
"$C" down >/dev/null 2>&1 || true

# Per component: RSS in MiB and CPU seconds (utime+stime) from /proc, pids from state.json.
snapshot() {
  python3 - "$FAKEGPU_RUN_DIR/state.json" <<'PY'
import json, os, sys
st = json.load(open(sys.argv[1]))
tck = os.sysconf("SC_CLK_TCK")
tot_rss = tot_cpu = 0
for p in st["processes"]:
    pid = p["pid"]
    rss = 0
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    cpu = (int(f[11]) + int(f[12])) / tck
    tot_rss += rss
    tot_cpu += cpu
    print(f"{p['name']} {rss:.0f} {cpu:.2f}")
print(f"total {tot_rss:.0f} {tot_cpu:.2f}")
PY
}

report() { # label, idle seconds
  local a b
  a="$(snapshot)"; sleep "$2"; b="$(snapshot)"
  echo "-- $1: RSS MiB and CPU % over ${2}s idle"
  paste <(echo "$a") <(echo "$b") | awk -v s="$2" '{printf "   %-24s RSS %5d MiB  CPU %5.1f %%\n", $1, $5, ($6-$3)*100/s}'
}

echo "== host: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
for i in $(seq 1 "$RUNS"); do
  s=$(date +%s.%N)
  "$C" up --nodes 2 2>&1 | grep -E '^\[|ready in'
  e=$(date +%s.%N)
  printf "== up #%d (2 nodes) wall: %.1f s\n" "$i" "$(echo "$e - $s" | bc)"
  if [ "$i" = "$RUNS" ]; then report "idle, 2 nodes" "$IDLE"; fi
  "$C" down >/dev/null 2>&1
done

s=$(date +%s.%N)
"$C" up --nodes "$NODES" 2>&1 | grep -E '^\[|ready in'
e=$(date +%s.%N)
printf "== up with %d nodes wall: %.1f s\n" "$NODES" "$(echo "$e - $s" | bc)"
report "idle, $NODES nodes" "$IDLE"
echo "== load after: $(cut -d' ' -f1-3 /proc/loadavg)"
