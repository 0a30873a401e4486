#!/usr/bin/env bash
# Real-node suite (issue 11): images without Docker, `fakegpu cluster up --real-node` on this
# host, and `down` leaving nothing behind.
#
#   sudo tests/real-node/run.sh
#
# Needs root (bridge, routes, cgroups, mounts). Not root: a failure under CI=true, a skip
# otherwise. Only one real node can exist per host (the kubelet's fixed paths), so the suite holds
# /run/lock/fakegpu-real-node.lock for its whole run; other suites that start a real node take it too.
#
# Env: FAKEGPU_IMAGE_PROFILE (release|debug, default release: the images are built from
# target/<profile>), FAKEGPU_CACHE (binary caches). Logs and the host-state snapshots go to
# target/real-node/.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
OUT="$ROOT/target/real-node"
export FAKEGPU_RUN_DIR="$OUT/run"
export FAKEGPU_NODE_IMAGES="$OUT/images"
PROFILE="${FAKEGPU_IMAGE_PROFILE:-release}"

if [ "$(id -u)" -ne 0 ]; then
  if [ "${CI:-}" = true ]; then
    echo "real-node: FAILED: must run as root under CI=true (it creates a bridge, routes, cgroups)" >&2
    exit 1
  fi
  echo "real-node: skipped (not root; run it with sudo)"
  exit 0
fi

mkdir -p "$OUT" /run/lock
exec 8>/run/lock/fakegpu-real-node.lock
flock 8

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok   $*"; }
bad() { failed=$((failed + 1)); echo "FAIL $*"; }
check() { # name command...
  local name=$1; shift
  if "$@"; then ok "$name"; else bad "$name"; fi
}
die() { echo "real-node: $*" >&2; exit 1; }
ms() { date +%s%3N; }

echo "== binaries"
CP_BIN="$(tests/cluster/build.sh)" || die "control-plane build failed"
NODE_BIN="$(tests/real-node/build.sh)" || die "node build failed"
export FAKEGPU_K8S_BIN_DIR="$CP_BIN" FAKEGPU_NODE_BIN_DIR="$NODE_BIN"
# NVIDIA's device plugin and GFD, for the mock backend's E2E (chart-mock.sh).
FAKEGPU_NVIDIA_K8S_DIR="$(tests/gfd/build.sh)" || die "building NVIDIA's device plugin and GFD failed"
export FAKEGPU_NVIDIA_K8S_DIR FAKEGPU_IMAGES="pause gpu-pod operator nvidia-k8s"
KUBECTL="$CP_BIN/kubectl"
cargo build -q -p fakegpu-cluster --bin fakegpu-cluster || die "cargo build -p fakegpu-cluster failed"
CLUSTER="$ROOT/target/debug/fakegpu-cluster"
if [ "$PROFILE" = release ]; then
  cargo build -q --release -p fake-gpu-operator || die "release build failed"
else
  cargo build -q -p fake-gpu-operator || die "debug build failed"
fi
# What GPU containers get (fake NVML, fake CUDA, nvidia-smi): the glibc 2.17 builds.
scripts/build-portable.sh >/dev/null || die "portable build failed"

echo "== images: OCI archives without Docker, reproducible"
t0=$(ms)
FAKEGPU_IMAGE_PROFILE=$PROFILE tests/real-node/images/build.sh "$OUT/images" >"$OUT/images-1.txt" || die "image build failed"
echo "   built in $(($(ms) - t0)) ms: $(tr '\n' ';' <"$OUT/images-1.txt")"
FAKEGPU_IMAGE_PROFILE=$PROFILE tests/real-node/images/build.sh "$OUT/images-again" >"$OUT/images-2.txt" || die "image rebuild failed"
check "same manifest digests from a second build" cmp -s "$OUT/images-1.txt" "$OUT/images-2.txt"
check "byte-identical archives from a second build" diff <(cd "$OUT/images" && sha256sum ./*.tar) <(cd "$OUT/images-again" && sha256sum ./*.tar)
rm -rf "$OUT/images-again"
for img in pause gpu-pod operator; do
  check "$img archive: oci-layout, index.json naming the image, Docker manifest.json" python3 - "$OUT/images/$img.tar" <<'EOF'
import json, sys, tarfile
t = tarfile.open(sys.argv[1])
idx = json.load(t.extractfile("index.json"))
name = idx["manifests"][0]["annotations"]["io.containerd.image.name"]
man = json.load(t.extractfile("blobs/sha256/" + idx["manifests"][0]["digest"][7:]))
cfg = json.load(t.extractfile("blobs/sha256/" + man["config"]["digest"][7:]))
assert json.load(t.extractfile("oci-layout"))["imageLayoutVersion"] == "1.0.0"
assert json.load(t.extractfile("manifest.json"))[0]["RepoTags"] == [name]
assert cfg["rootfs"]["diff_ids"] == [l["digest"] for l in man["layers"]], "uncompressed layer: diff_id = digest"
EOF
done

check "the operator image holds what the Dockerfile's runtime stage holds" \
  python3 tests/real-node/image_matches_dockerfile.py "$OUT/images/operator.tar"
check "podman loads every archive, as a Docker archive (docker load's path) and as an OCI layout" \
  tests/real-node/images/podman-load.sh "$OUT/images"

# Host state that the node may touch; `down` must bring every line back.
snapshot() {
  echo "## mounts"; awk '{print $5, $9}' /proc/self/mountinfo | sort
  echo "## links"; ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | sort
  echo "## routes"; ip -4 route show table all | sort; ip -6 route show table all | sort
  echo "## rules"; ip -4 rule show; ip -6 rule show
  echo "## netns"; ls -A /var/run/netns 2>/dev/null
  echo "## cgroups"; find /sys/fs/cgroup -mindepth 1 -maxdepth 2 -type d 2>/dev/null | sort
  echo "## processes"
  for p in /proc/[0-9]*; do
    exe=$(readlink "$p/exe" 2>/dev/null) || continue
    case "$exe" in
      # Other suites may run clusters from the same binaries: ours name our run dir or node.
      "$CP_BIN"/* | */socat) grep -qs -e "$FAKEGPU_RUN_DIR" -e "bind=10.0.0.1" "$p/cmdline" && echo "$exe" ;;
      "$NODE_BIN"/* | */runc | /pause) echo "$exe" ;;
    esac
    grep -qs ":/fakegpu" "$p/cgroup" && echo "in cgroup /fakegpu: $exe"
  done | sort
  echo "## iptables"
  if command -v iptables-save >/dev/null; then iptables-save 2>/dev/null | grep -v '^#' | sed 's/\[[0-9:]*\]//'; fi
  if command -v nft >/dev/null; then nft list ruleset 2>/dev/null; fi
  echo "## files"
  for d in /var/lib/kubelet /var/log/containers /var/log/pods /run/containerd /var/lib/containerd /opt/containerd /run/fakegpu-node-shims /var/lib/fake-gpu-operator /var/lib/cni /etc/cni /var/run/cdi /etc/cdi /opt/cni /var/lib/nvml-mock /run/nvidia; do
    [ -e "$d" ] && find "$d" -maxdepth 3 | sort
  done
  echo "## sysctls"; cat /proc/sys/kernel/panic /proc/sys/kernel/panic_on_oops /proc/sys/vm/overcommit_memory
}

"$CLUSTER" down >/dev/null 2>&1 || true # a run left by a killed earlier run
snapshot >"$OUT/host-before.txt"

echo "== bad input fails at once and leaves nothing behind"
expect_refusal() { # name expected-text env/command...
  local name=$1 want=$2; shift 2
  local err
  err=$("$@" 2>&1 >/dev/null)
  local rc=$?
  if [ $rc -ne 0 ] && grep -q -- "$want" <<<"$err" && [ ! -e "$FAKEGPU_RUN_DIR" ] && [ ! -e "$FAKEGPU_RUN_DIR.lock" ]; then
    ok "$name: $(grep -m1 -- "$want" <<<"$err")"
  else
    bad "$name (rc $rc; wanted '$want'): $err"
  fi
}
UP=("$CLUSTER" up --real-node --nodes 1 --no-operator)
expect_refusal "not root" "must run as root" setpriv --reuid=65534 --regid=65534 --clear-groups env HOME=/tmp "${UP[@]}"
empty_cg=$(mktemp -d)
expect_refusal "no cgroup controllers" "no usable cgroup controllers" env FAKEGPU_CGROUP_FS="$empty_cg" "${UP[@]}"
rmdir "$empty_cg"
python3 -c 'import socket,time,sys; s=socket.socket(); s.bind(("127.0.0.1",10248)); s.listen(); print("ready",flush=True); time.sleep(60)' >"$OUT/port.txt" &
holder=$!
for _ in $(seq 50); do grep -q ready "$OUT/port.txt" 2>/dev/null && break; sleep 0.1; done
expect_refusal "port in use" "port 10248" "${UP[@]}"
kill "$holder"; wait "$holder" 2>/dev/null
snapshot >"$OUT/host-after-refusals.txt"
check "refusals changed nothing on the host" diff "$OUT/host-before.txt" "$OUT/host-after-refusals.txt"

echo "== up --real-node"
t0=$(ms)
if ! "${UP[@]}"; then
  bad "cluster up --real-node"
  rm -rf "$OUT/logs"; cp -r "$FAKEGPU_RUN_DIR/logs" "$OUT/logs" 2>/dev/null
  "$CLUSTER" down
  echo "$passed passed, $failed failed"; exit 1
fi
echo "   up in $(($(ms) - t0)) ms"
KC=(--kubeconfig "$FAKEGPU_RUN_DIR/kubeconfig")
NODE=fakegpu-real-node
STATE="$FAKEGPU_RUN_DIR/state.json"

check "node $NODE is Ready" sh -c "'$KUBECTL' ${KC[*]} get node $NODE -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -qx True"
check "node carries the pool label" sh -c "'$KUBECTL' ${KC[*]} get node $NODE -o jsonpath='{.metadata.labels.run\\.ai/simulated-gpu-node-pool}' | grep -qx default"
check "guard routes are unreachable routes" sh -c "ip -4 route show type unreachable | grep -q '^unreachable 10.244.0.0/16' && ip -4 route show type unreachable | grep -q '^unreachable 10.0.0.0/16'"
check "guards were in place before the kubelet (and so any pod) started" python3 -c "
import json; n = json.load(open('$STATE'))['real_node']
assert 0 < n['guarded_at_ms'] <= n['kubelet_started_at_ms'], n"
check "no route sends the pod or Service ranges out of the host" sh -c "
  for a in 10.244.5.5 10.0.0.77 10.0.5.5; do ip -4 route get \$a 2>&1 | grep -qE 'unreachable|No route' || exit 1; done"
check "a packet from the bridge to any other address would not be forwarded (iif rule → unreachable)" sh -c "
  ip -4 route get 192.0.2.1 from 10.244.77.9 iif fakegpu0 2>&1 | grep -q 'No route to host' &&
  ip -4 route get 10.0.0.1 from 10.244.77.9 iif fakegpu0 | grep -q '^local 10.0.0.1'"
check "the Service VIP 10.0.0.1 is local (on the bridge)" sh -c "ip -4 route get 10.0.0.1 | grep -q '^local 10.0.0.1' && ip -o -4 addr show dev fakegpu0 | grep -q '10.0.0.1/32'"
check "sysctls are back to their values before the kubelet" diff <(sed -n '/^## sysctls/,$p' "$OUT/host-before.txt") <(echo "## sysctls"; cat /proc/sys/kernel/panic /proc/sys/kernel/panic_on_oops /proc/sys/vm/overcommit_memory)
if command -v iptables-save >/dev/null; then
  check "no iptables rule was added" diff <(sed -n '/^## iptables/,/^## files/p' "$OUT/host-before.txt") <(echo "## iptables"; iptables-save 2>/dev/null | grep -v '^#' | sed 's/\[[0-9:]*\]//'; echo "## files")
fi

echo "== a pod from a locally built image"
cat >"$OUT/pod.yaml" <<EOF
apiVersion: v1
kind: Pod
metadata: {name: hello, namespace: default}
spec:
  nodeName: $NODE
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: localhost/fakegpu/gpu-pod:1
    imagePullPolicy: Never
    command: ["/bin/sh", "-c", "echo hello-from-real-node; if printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 \$KUBERNETES_SERVICE_HOST 443 | grep -q 'HTTP/1.0 400'; then echo vip-reachable; fi; trap 'exit 0' TERM; while true; do sleep 1; done"]
EOF
t0=$(ms)
"$KUBECTL" "${KC[@]}" apply -f "$OUT/pod.yaml" >/dev/null
if "$KUBECTL" "${KC[@]}" wait --for=condition=Ready pod/hello --timeout=90s >/dev/null; then
  ok "pod Running after $(($(ms) - t0)) ms"
else
  bad "pod did not become Ready"; "$KUBECTL" "${KC[@]}" describe pod hello | tail -20
fi
sleep 4
check "kubectl logs shows the pod's output" sh -c "'$KUBECTL' ${KC[*]} logs hello | grep -qx hello-from-real-node"
check "the pod reaches the API server through KUBERNETES_SERVICE_HOST (local VIP)" sh -c "'$KUBECTL' ${KC[*]} logs hello | grep -qx vip-reachable"
check "kubectl exec runs in the pod" sh -c "'$KUBECTL' ${KC[*]} exec hello -- sh -c 'echo exec-\$((6*7))' | grep -qx exec-42"
# Asked of the routing table only (`ip route get` sends nothing): no default route in the pod.
check "the pod has no route out of the host" sh -c "'$KUBECTL' ${KC[*]} exec hello -- ip route get 192.0.2.1 2>&1 | grep -q 'unreachable'"
"$KUBECTL" "${KC[@]}" delete pod hello --wait=true --timeout=60s >/dev/null || bad "pod delete"

python3 - "$STATE" <<'EOF'
import json, sys
for p in json.load(open(sys.argv[1]))["processes"]:
    if p["name"] in ("kubelet", "containerd"):
        rss = next(int(l.split()[1]) for l in open(f"/proc/{p['pid']}/status") if l.startswith("VmRSS"))
        print(f"   {p['name']} RSS {rss // 1024} MiB")
EOF

echo "== the chart on the real node"
if [ -z "${SKIP_CHART:-}" ]; then
  KUBECONFIG="$FAKEGPU_RUN_DIR/kubeconfig" KUBECTL="$KUBECTL" HELM="$CP_BIN/helm" CLUSTER="$CLUSTER" OUT="$OUT" \
    tests/real-node/chart.sh && ok "chart E2E (see the lines above)" || bad "chart E2E"
fi

echo "== down removes everything"
rm -rf "$OUT/logs"; cp -r "$FAKEGPU_RUN_DIR/logs" "$OUT/logs" 2>/dev/null
check "cluster down" "$CLUSTER" down
snapshot >"$OUT/host-after.txt"
check "host state after down equals host state before up (mounts, links, routes, netns, cgroups, processes, iptables, files, sysctls)" \
  diff "$OUT/host-before.txt" "$OUT/host-after.txt"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
