#!/usr/bin/env bash
# Loop mode of our nvidia-smi (`-lms`): runs it for a bounded time under `timeout` over the fake
# library and checks that it printed repeated, well-formed reports, and that it re-reads the live
# state every round (a `fakegpu state set` made mid-loop shows up in later rounds).
#
#   tests/smi-golden/loop.sh          # needs no NVIDIA binary
#
# Checks, for the default table and for `--query-gpu ... --format=csv,noheader`:
#  * exit code 124 (still looping when timeout stopped it);
#  * between 4 and 2x the expected number of rounds in the time given (100 ms interval);
#  * every table round has the same shape as a single run (same line count, same lines once the
#    timestamp and the utilization/power/temperature/memory numbers are masked and runs of
#    spaces collapsed);
#  * every CSV round has one well-formed line per GPU;
#  * utilization 0% in the first round and 66% in the last, after a mid-loop `state set`.
set -uo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
PROFILE=${PROFILE:-debug}
flag=(); [ "$PROFILE" = release ] && flag=(--release)
libdir=${FAKE_LIB_DIR:-$(PROFILE=$PROFILE scripts/fake-lib-dir.sh)} || exit 1
cargo build -q -p nvidia-smi -p fakegpu "${flag[@]}" || exit 1
bin=${CARGO_TARGET_DIR:-$root/target}/$PROFILE
ours=$bin/nvidia-smi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
export LD_LIBRARY_PATH=$libdir FAKEGPU_PROFILE=${LOOP_PROFILE:-h100} FAKEGPU_GPUS=2 FAKEGPU_STATE=$tmp/state.json
secs=${LOOP_SECONDS:-2}
fail=0
check() { # name condition-text: prints PASS/FAIL
  if [ "$2" = ok ]; then printf 'loop  %-34s PASS\n' "$1"; else printf 'loop  %-34s FAIL (%s)\n' "$1" "$2"; fail=1; fi
}

# Masks what legitimately changes between rounds.
shape() {
  sed -E -e '1s/^[A-Z][a-z]{2} [A-Z][a-z]{2} [ 0-9][0-9] [0-9:]{8} [0-9]{4} +$/<ts>/' \
    -e 's/^([A-Z][a-z]{2} [A-Z][a-z]{2} [ 0-9][0-9] [0-9:]{8} [0-9]{4}) +$/<ts>/' \
    -e 's/[0-9]+(%|C|W|MiB)/N\1/g' -e 's/ +/ /g'
}

# 1. The default table.
"$ours" >"$tmp/single" 2>&1
single_lines=$(wc -l <"$tmp/single")
(sleep 0.8; "$bin/fakegpu" state set --gpu 0 --util 66 >/dev/null) &
timeout "$secs" "$ours" -lms 100 >"$tmp/table" 2>&1; rc=$?
wait
check "table: exit code" "$([ $rc = 124 ] && echo ok || echo "rc $rc, want 124")"
# Split into rounds at each timestamp line (the first line of every round).
awk -v dir="$tmp" '/^[A-Z][a-z][a-z] [A-Z][a-z][a-z] [ 0-9][0-9] [0-9][0-9]:[0-9][0-9]:[0-9][0-9] [0-9][0-9][0-9][0-9] +$/ { n++ } { print > (dir "/round." n) }' "$tmp/table"
rounds=$(ls "$tmp"/round.* 2>/dev/null | wc -l)
max=$(( secs * 10 * 2 ))
check "table: rounds ($rounds in ${secs}s)" "$([ "$rounds" -ge 4 ] && [ "$rounds" -le "$max" ] && echo ok || echo "$rounds rounds")"
shape <"$tmp/single" >"$tmp/single.shape"
bad=0
for ((k = 1; k < rounds; k++)); do # the last round may be cut by timeout
  r=$tmp/round.$k
  [ "$(wc -l <"$r")" = "$single_lines" ] || { bad=$((bad + 1)); continue; }
  shape <"$r" | cmp -s - "$tmp/single.shape" || bad=$((bad + 1))
done
check "table: every round well-formed" "$([ $bad = 0 ] && echo ok || echo "$bad malformed rounds")"
first_util=$(grep -m1 -E '^\| N/A ' "$tmp/round.1" | awk -F'|' '{print $4}' | awk '{print $1}')
prev=$tmp/round.$((rounds - 1))
last_util=$(grep -m1 -E '^\| N/A ' "$prev" | awk -F'|' '{print $4}' | awk '{print $1}')
check "table: live state re-read" "$([ "$first_util" = 0% ] && [ "$last_util" = 66% ] && echo ok || echo "first $first_util, last $last_util")"

# 2. CSV query.
"$bin/fakegpu" state reset >/dev/null
(sleep 0.8; "$bin/fakegpu" state set --gpu 1 --util 66 >/dev/null) &
timeout "$secs" "$ours" --query-gpu=index,utilization.gpu,memory.used --format=csv,noheader -lms 100 >"$tmp/csv" 2>&1; rc=$?
wait
check "csv: exit code" "$([ $rc = 124 ] && echo ok || echo "rc $rc, want 124")"
lines=$(wc -l <"$tmp/csv")
check "csv: rounds ($((lines / 2)) in ${secs}s)" "$([ "$lines" -ge 8 ] && [ "$lines" -le $((max * 2)) ] && echo ok || echo "$lines lines")"
badl=$(grep -cvE '^[01], [0-9]+ %, [0-9]+ MiB$' "$tmp/csv")
order=$(awk -F, '{ if ($1 != (NR - 1) % 2) bad++ } END { print bad + 0 }' "$tmp/csv")
check "csv: every line well-formed" "$([ "$badl" = 0 ] && [ "$order" = 0 ] && echo ok || echo "$badl bad lines, $order out of order")"
check "csv: live state re-read" "$(head -2 "$tmp/csv" | grep -q '^1, 0 %' && grep '^1, ' "$tmp/csv" | tail -1 | grep -q '^1, 66 %' && echo ok || echo "no 0% -> 66% on GPU 1")"
exit $fail
