#!/usr/bin/env bash
# Golden diff: runs NVIDIA's nvidia-smi 535 and ours over the same fake NVML, with the same
# environment, and compares their output line by line. Masked before comparing (the only
# differences allowed by design): the timestamp line and the binary's own version in the banner.
# Prints the share of identical lines per case and fails when a mode misses its threshold
# (100% for the default table, -L, --query-gpu and error cases; 98% for -q and -q -x) or when
# exit codes differ.
#
#   tests/smi-golden/run.sh                 # every built-in profile, every case
#   PROFILES="h100 t4" tests/smi-golden/run.sh
#   KEEP=/tmp/golden tests/smi-golden/run.sh   # keep both outputs for inspection
#   FAKE_LIB_DIR=dir tests/smi-golden/run.sh   # use an already built fake library
#
# Needs NVIDIA's binary (scripts/fetch-nvidia.sh downloads it from Debian non-free; it is never
# committed). Skips with rc 0 and a message when it cannot be fetched (SKIP_OK=0 makes that fail).
set -uo pipefail
cd "$(dirname "$0")/../.."
root=$PWD

PROFILE=${PROFILE:-debug}
flag=(); [ "$PROFILE" = release ] && flag=(--release)
libdir=${FAKE_LIB_DIR:-$(PROFILE=$PROFILE scripts/fake-lib-dir.sh)} || exit 1
cargo build -q -p nvidia-smi "${flag[@]}" || exit 1
ours=${CARGO_TARGET_DIR:-$root/target}/$PROFILE/nvidia-smi
if ! nvroot=$(scripts/fetch-nvidia.sh 2>/dev/null); then
  echo "smi-golden: SKIP: NVIDIA's nvidia-smi could not be fetched" >&2
  [ "${SKIP_OK:-1}" = 1 ] && exit 0 || exit 1
fi
theirs=$nvroot/usr/lib/nvidia/current/nvidia-smi

keep=${KEEP:-$(mktemp -d)}
mkdir -p "$keep"
[ -z "${KEEP:-}" ] && trap 'rm -rf "$keep"' EXIT

# Masks the timestamp and our own version (both binaries' outputs go through this).
mask() {
  sed -E \
    -e '1s/^[A-Z][a-z]{2} [A-Z][a-z]{2} [ 0-9][0-9] [0-9:]{8} [0-9]{4} +$/<timestamp>/' \
    -e 's/^(Timestamp +: ).*/\1<timestamp>/' \
    -e 's#<timestamp>[^<]*</timestamp>#<timestamp/>#' \
    -e 's/NVIDIA-SMI [^ ]+ +/NVIDIA-SMI <version> /' \
    -e 's/^(NVIDIA-SMI version +: ).*/\1<version>/'
}

profiles=${PROFILES:-$(cd profiles && ls *.json | grep -v schema | sed 's/\.json$//')}

# case name | threshold % | gpus | args (one string, word-split)
cases=(
  "table|100|8|"
  "list|100|8|-L"
  "list-i|100|8|-L -i 2"
  "query-basic|100|8|--query-gpu=index,name,uuid,memory.total,memory.used,utilization.gpu,temperature.gpu,power.draw --format=csv"
  "query-noheader|100|8|--query-gpu=index,pci.bus_id,memory.free,memory.reserved,power.limit,pstate,driver_version --format=csv,noheader"
  "query-nounits|100|8|--query-gpu=index,name,memory.total,memory.used,utilization.gpu,utilization.memory,temperature.gpu,power.draw,clocks.sm,clocks.mem --format=csv,noheader,nounits"
  "query-more|100|4|--query-gpu=count,gpu_name,gpu_uuid,gpu_bus_id,serial,vbios_version,persistence_mode,compute_mode,mig.mode.current,ecc.mode.current,fan.speed,clocks.max.sm,clocks.max.mem,power.default_limit,power.max_limit,temperature.memory,pcie.link.gen.max,pcie.link.width.current --format=csv"
  "query-i|100|8|--query-gpu=index,uuid --format=csv -i 3"
  "q|98|2|-q"
  "q-i|98|8|-q -i 1"
  "q-memory|98|2|-q -d MEMORY"
  "q-sections|98|2|-q -d UTILIZATION,TEMPERATURE,POWER,CLOCK,ECC,PERFORMANCE"
  "qx|98|2|-q -x"
  "table-i|100|8|-i 5"
  "err-bad-i|100|8|-i 9"
  "err-bad-flag|100|8|--bogus"
  "err-bad-query|100|8|--query-gpu=nonsense --format=csv"
)
[ -n "${CASES:-}" ] && { sel=(); for c in "${cases[@]}"; do [[ " $CASES " == *" ${c%%|*} "* ]] && sel+=("$c"); done; cases=("${sel[@]}"); }

# TODO(issue 4): live states (loaded, processes, MIG layouts, faults) once `fakegpu state`/`fault`
# land in the shim; each state is a setup command run before both binaries.
states=(idle)

fail=0
printf '%-10s %-6s %-16s %7s %7s %8s  %s\n' profile state case ours nvidia identical result
for p in $profiles; do
  for st in "${states[@]}"; do
    for c in "${cases[@]}"; do
      IFS='|' read -r name thr gpus args <<<"$c"
      d=$keep/$p/$st; mkdir -p "$d"
      # shellcheck disable=SC2086
      env LD_LIBRARY_PATH="$libdir" FAKEGPU_PROFILE="$p" FAKEGPU_GPUS="$gpus" "$theirs" $args >"$d/$name.nvidia.raw" 2>&1; rt=$?
      # shellcheck disable=SC2086
      env LD_LIBRARY_PATH="$libdir" FAKEGPU_PROFILE="$p" FAKEGPU_GPUS="$gpus" "$ours" $args >"$d/$name.ours.raw" 2>&1; ro=$?
      mask <"$d/$name.nvidia.raw" >"$d/$name.nvidia"
      mask <"$d/$name.ours.raw" >"$d/$name.ours"
      n_t=$(wc -l <"$d/$name.nvidia"); n_o=$(wc -l <"$d/$name.ours")
      removed=$(diff "$d/$name.nvidia" "$d/$name.ours" | grep -c '^<')
      total=$(( n_t > n_o ? n_t : n_o )); [ "$total" = 0 ] && total=1
      same=$(( n_t - removed ))
      share=$(awk -v s="$same" -v t="$total" 'BEGIN{printf "%.2f", 100*s/t}')
      ok=PASS
      awk -v s="$share" -v t="$thr" 'BEGIN{exit !(s+0 >= t+0)}' || ok=FAIL
      [ "$rt" != "$ro" ] && ok="FAIL(rc $ro vs $rt)"
      [ "$ok" = PASS ] || fail=1
      printf '%-10s %-6s %-16s %7s %7s %7s%%  %s\n' "$p" "$st" "$name" "$n_o" "$n_t" "$share" "$ok"
      if [ "$ok" != PASS ] && [ -n "${VERBOSE:-}" ]; then diff "$d/$name.nvidia" "$d/$name.ours" | head -20; fi
    done
  done
done
exit $fail
