#!/usr/bin/env bash
# NVIDIA's `nvidia-ctk cdi generate` (nvidia-container-toolkit v1.20.2, built from the Go module
# proxy, pinned by go.mod/go.sum here, cached by those files and the Go version) over a driver
# root laid by `fakegpu driver-root install` (issue 13): it finds the fake NVML in the root,
# enumerates every GPU by index and by UUID (the UUIDs our nvidia-smi lists from the root), and
# its device nodes and libraries are the root's. Our own CDI spec (the node agent's) names the
# same devices.
#
# Needs root (the root's device nodes are made with mknod). Env: FAKEGPU_CACHE.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
[ "$(id -u)" = 0 ] || { echo "nvidia-ctk: must run as root (device nodes in the driver root)" >&2; exit 2; }
# shellcheck source=../lib/go-build.sh
. "$ROOT/tests/lib/go-build.sh"
CTK="$(go_build_cached nvidia-ctk "$HERE" "go.mod go.sum tools.go" 1 nvidia-ctk=github.com/NVIDIA/nvidia-container-toolkit/cmd/nvidia-ctk)/nvidia-ctk"

cd "$ROOT"
cargo build -q -p fakegpu -p nvml-shim -p cuda-shim -p nvidia-smi
FAKEGPU="$ROOT/target/debug/fakegpu"
WORK="$(mktemp -d "$ROOT/target/nvidia-ctk.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
passed=0 failed=0
check() { local name=$1; shift; if "$@"; then passed=$((passed + 1)); echo "ok   $name"; else failed=$((failed + 1)); echo "FAIL $name"; fi; }

echo '{"profile": "h100", "gpus": 8, "node": "ctk-node"}' >"$WORK/node.json"
DR="$WORK/driver"
"$FAKEGPU" driver-root install --root "$DR" --config "$WORK/node.json" \
  --cdi-spec "$WORK/ours.json" >/dev/null
LIB="$DR/usr/lib/x86_64-linux-gnu"
LD_LIBRARY_PATH="$LIB" "$DR/usr/bin/nvidia-smi" -L >"$WORK/smi.txt"
"$CTK" cdi generate --driver-root "$DR" --dev-root "$DR" --format json --output "$WORK/ctk.json" 2>"$WORK/ctk.log" \
  || { cat "$WORK/ctk.log" >&2; echo "nvidia-ctk cdi generate failed"; exit 1; }
grep -m1 "Using .*libnvidia-ml" "$WORK/ctk.log" | sed 's/^/   /'

python3 - "$WORK" "$DR" <<'EOF'
import json, re, sys
work, root = sys.argv[1], sys.argv[2]
ctk = json.load(open(f"{work}/ctk.json"))
ours = json.load(open(f"{work}/ours.json"))
smi = open(f"{work}/smi.txt").read()
uuids = re.findall(r"^GPU (\d+): .*\(UUID: (GPU-[0-9a-f-]+)\)$", smi, re.M)
failed = 0
def check(name, ok, detail=""):
    global failed
    print(("ok   " if ok else "FAIL ") + name + ("" if ok else f"\n     {detail}"))
    failed += not ok
names = [d["name"] for d in ctk["devices"]]
want = [i for i, _ in uuids] + [u for _, u in uuids] + ["all"]
check(f"nvidia-ctk lists {len(uuids)} GPUs by index and by UUID, and all", len(uuids) == 8 and sorted(names) == sorted(want), f"{names} vs {want}")
by_name = {d["name"]: d for d in ctk["devices"]}
nodes_ok = all(
    [(n["path"], n["hostPath"]) for n in by_name[i]["containerEdits"]["deviceNodes"]] == [(f"/dev/nvidia{i}", f"{root}/dev/nvidia{i}")]
    for i, _ in uuids
)
check("each GPU's device node is the root's /dev/nvidia<minor>", nodes_ok, json.dumps(by_name["0"]["containerEdits"]["deviceNodes"]))
mounts = [m["hostPath"] for m in ctk["containerEdits"].get("mounts", [])]
check("the fake NVML and nvidia-smi are mounted from the root", any(m.startswith(f"{root}/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.") for m in mounts)
      and f"{root}/usr/bin/nvidia-smi" in mounts, str(mounts))
our_names = sorted(d["name"] for d in ours["devices"])
check("our CDI spec (the node agent's) names the same devices", our_names == sorted(names), f"{our_names} vs {sorted(names)}")
check("the same kind", ours["kind"] == ctk["kind"] == "nvidia.com/gpu", f"{ours['kind']} {ctk['kind']}")
sys.exit(1 if failed else 0)
EOF
rc=$?

# MIG: nvidia-ctk reads the MIG capability minors from /proc/driver/nvidia-caps/mig-minors, the
# kernel module's procfs file, not under the driver root. Here it runs in a private mount
# namespace with a tmpfs over /proc/driver holding the root's copy of that (fixed) table, as the
# module would show it; the host's /proc is untouched.
"$FAKEGPU" state mig --config "$LIB/fakegpu/config.json" --mig-config all-balanced >/dev/null
"$FAKEGPU" driver-root install --root "$DR" --config "$WORK/node.json" --cdi-spec "$WORK/ours-mig.json" >/dev/null 2>&1
LD_LIBRARY_PATH="$LIB" "$DR/usr/bin/nvidia-smi" -L >"$WORK/smi-mig.txt"
unshare --mount --propagation private -- sh -c 'mount -t tmpfs -o mode=0555 fakegpu-nvidia-caps /proc/driver &&
  mkdir /proc/driver/nvidia-caps && cp "$1/proc/driver/nvidia-caps/mig-minors" /proc/driver/nvidia-caps/ &&
  exec "$2" cdi generate --driver-root "$1" --dev-root "$1" --format json --output "$3"' sh "$DR" "$CTK" "$WORK/ctk-mig.json" 2>"$WORK/ctk-mig.log" \
  || { cat "$WORK/ctk-mig.log" >&2; echo "FAIL nvidia-ctk cdi generate with MIG"; rc=1; }
python3 - "$WORK" <<'EOF' || rc=1
import json, re, sys
work = sys.argv[1]
ctk = json.load(open(f"{work}/ctk-mig.json"))
ours = json.load(open(f"{work}/ours-mig.json"))
smi = open(f"{work}/smi-mig.txt").read()
mig_uuids = sorted(re.findall(r"\(UUID: (MIG-[0-9a-f-]+)\)", smi))
names = sorted(d["name"] for d in ctk["devices"])
ctk_mig = sorted(n for n in names if n.startswith("MIG-"))
ok = len(mig_uuids) == 8 * 4 and ctk_mig == mig_uuids and sum(":" in n for n in names) == 32
print(("ok   " if ok else "FAIL ") + f"with all-balanced on 8 GPUs nvidia-ctk lists every MIG device by <gpu>:<index> and by the {len(mig_uuids)} MIG UUIDs nvidia-smi lists")
same = sorted(d["name"] for d in ours["devices"]) == names
print(("ok   " if same else "FAIL ") + "our CDI spec names the same devices (GPUs in MIG mode through their MIG devices only)")
if not (ok and same):
    print(f"     ctk: {names}\n     ours: {sorted(d['name'] for d in ours['devices'])}")
sys.exit(0 if ok and same else 1)
EOF

"$FAKEGPU" driver-root remove --root "$DR" >/dev/null
check "the root removed leaves its directory empty" test -z "$(find "$DR" -mindepth 1 2>/dev/null)"
[ $rc -eq 0 ] && [ $failed -eq 0 ]
