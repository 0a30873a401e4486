# Sourced by chart.sh with the chart installed on the real node (helpers k, check, ok, bad, ms,
# wait_for, allocatable_is, label_is, node_label, run_pod, workloads_ready and the variables NODE, NS, OUT, ROOT, HELM):
# the mock backend (issue 13). A `gpu.backend: mock` pool of 8 × H100 on the real node: the
# status-updater's nvml-mock-<pool> DaemonSet lays the driver root on the host, and NVIDIA's own
# k8s-device-plugin v0.17.4 (built from the Go module proxy, image nvidia-k8s), configured as
# NVIDIA's GPU Operator configures it (driver root /run/nvidia/driver mounted at /driver-root),
# serves nvidia.com/gpu (and, with a MIG layout, nvidia.com/mig-*) from the fake NVML there.
# Then the pool goes back to `fake` and is
# removed, and the host is listed. NVIDIA's GFD runs over the same root and its labels are
# compared with ours.

echo "== mock backend: NVIDIA's device plugin over the driver root the node agent lays"
DRIVER_ROOT=/var/lib/nvml-mock/driver
ROOT_LIB=$DRIVER_ROOT/usr/lib/x86_64-linux-gnu
FAKEGPU="$ROOT/target/debug/fakegpu"
cargo build -q -p fakegpu || bad "cargo build -p fakegpu"
host_side() { find /var/lib/nvml-mock /run/nvidia /var/run/cdi -mindepth 1 2>/dev/null | LC_ALL=C sort; }
host_side >"$OUT/mock-host-before.txt"
# The agent's hostPath volumes are DirectoryOrCreate: the kubelet makes these if they are missing.
made_by_kubelet=$(for d in /var/lib/nvml-mock /run/nvidia; do [ -e "$d" ] || echo "$d"; done)

t0=$(ms)
if "$HELM" upgrade fgo "$ROOT/helm/fake-gpu-operator" -n "$NS" --reuse-values \
  --set-json 'topology.nodePools.mock={"gpu":{"backend":"mock","profile":"h100","overrides":{"device_count":8}}}' \
  --wait --timeout 180s >"$OUT/helm-upgrade-mock.txt" 2>&1; then
  ok "helm upgrade adding a mock pool of 8 × H100 in $(($(ms) - t0)) ms"
else
  bad "helm upgrade (mock pool): $(tail -3 "$OUT/helm-upgrade-mock.txt")"
fi
k label node "$NODE" run.ai/simulated-gpu-node-pool=mock --overwrite >/dev/null
check "the status-updater marks the node fake-gpu-operator.run.ai/backend=mock" wait_for 60 label_is fake-gpu-operator.run.ai/backend mock
agent_objects() { k -n "$NS" get cm nvml-mock-mock >/dev/null 2>&1 && k -n "$NS" get ds nvml-mock-mock >/dev/null 2>&1; }
check "ConfigMap and DaemonSet nvml-mock-mock exist" wait_for 60 agent_objects
check "the node agent runs as a pod on the real node" workloads_ready "nvml-mock-mock"
laid() { [ -e "$ROOT_LIB/libnvidia-ml.so.1" ] && [ "$(readlink /run/nvidia/driver)" = "$DRIVER_ROOT" ] && [ -f /run/nvidia/validations/toolkit-ready ]; }
check "… and laid the driver root, /run/nvidia/driver → it, toolkit-ready" wait_for 60 laid
our_plugin_gone() { [ -z "$(k -n "$NS" get pods -l app=device-plugin -o name 2>/dev/null)" ]; }
check "our device plugin leaves the mock node (NVIDIA's serves it)" wait_for 60 our_plugin_gone

# NVIDIA's nvidia-smi and ours, run from the root with no environment, list the node's GPUs.
root_uuids=$(LD_LIBRARY_PATH=$ROOT_LIB "$DRIVER_ROOT/usr/bin/nvidia-smi" -L 2>&1 | grep -o 'GPU-[0-9a-f-]*' | sort)
cm_uuids() { k -n "$NS" get cm "topology-$NODE" -o jsonpath='{.data.topology\.yml}' | grep -o 'GPU-[0-9a-f-]*' | sort; }
same_as_topology() { [ -n "$root_uuids" ] && [ "$(cm_uuids)" = "$root_uuids" ]; }
eight() { [ "$(wc -w <<<"$root_uuids")" = 8 ]; }
check "nvidia-smi from the driver root, no environment, lists 8 GPUs" eight
check "… with the UUIDs of the node's topology ConfigMap" wait_for 30 same_as_topology
gpu3=$(LD_LIBRARY_PATH=$ROOT_LIB "$DRIVER_ROOT/usr/bin/nvidia-smi" -L | sed -n 's/^GPU 3: .*(UUID: \(GPU-[0-9a-f-]*\))$/\1/p')

k create namespace nvidia-k8s >/dev/null
cat <<EOF | k apply -f - >/dev/null
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: nvidia-device-plugin, namespace: nvidia-k8s}
spec:
  selector: {matchLabels: {app: nvidia-device-plugin}}
  template:
    metadata: {labels: {app: nvidia-device-plugin}}
    spec:
      nodeSelector: {run.ai/simulated-gpu-node-pool: mock}
      priorityClassName: system-node-critical
      terminationGracePeriodSeconds: 1
      containers:
      - name: plugin
        image: localhost/fakegpu/nvidia-k8s:1
        imagePullPolicy: Never
        # MIG devices: the plugin reads /proc/driver/nvidia-caps/mig-minors, the kernel module's
        # procfs file, from its own /proc; the privileged container puts the root's copy (the
        # driver's fixed table) there on a tmpfs over /proc/driver, as the module would show it.
        command: ["/bin/sh", "-c", "mount -t tmpfs -o mode=0555 nvidia-caps /proc/driver && mkdir /proc/driver/nvidia-caps && cp /driver-root/proc/driver/nvidia-caps/mig-minors /proc/driver/nvidia-caps/ && exec /usr/bin/nvidia-device-plugin"]
        env:
        - {name: MIG_STRATEGY, value: mixed}
        - {name: FAIL_ON_INIT_ERROR, value: "true"}
        - {name: NVIDIA_DRIVER_ROOT, value: /run/nvidia/driver}
        - {name: CONTAINER_DRIVER_ROOT, value: /driver-root}
        - {name: DEVICE_LIST_STRATEGY, value: envvar}
        - {name: DEVICE_ID_STRATEGY, value: uuid}
        # In place of NVIDIA's container runtime, which puts the driver's libraries in the
        # plugin's container under the GPU Operator: its platform check dlopens the library by name.
        - {name: LD_LIBRARY_PATH, value: /driver-root/usr/lib/x86_64-linux-gnu}
        securityContext: {privileged: true}
        volumeMounts:
        - {name: device-plugin, mountPath: /var/lib/kubelet/device-plugins}
        - {name: driver-root, mountPath: /driver-root, readOnly: true}
      volumes:
      - {name: device-plugin, hostPath: {path: /var/lib/kubelet/device-plugins}}
      - {name: driver-root, hostPath: {path: /run/nvidia/driver}}
EOF
nvidia_plugin_ready() { [ "$(k -n nvidia-k8s get ds nvidia-device-plugin -o jsonpath='{.status.numberReady}')" = 1 ]; }
t0=$(ms)
check "NVIDIA's device plugin Ready on the real node" wait_for 120 nvidia_plugin_ready
check "the node advertises nvidia.com/gpu: 8 (NVIDIA's plugin over the fake NVML)" wait_for 60 allocatable_is nvidia.com/gpu 8
echo "   8 GPUs advertised $(($(ms) - t0)) ms after the DaemonSet"
k -n nvidia-k8s logs ds/nvidia-device-plugin >"$OUT/nvidia-device-plugin.log" 2>&1

mock_pod() { # name [resource count]: asks for them (2 GPUs), runs nvidia-smi -L from the driver root
  run_pod "$1" 'echo NVIDIA_VISIBLE_DEVICES=$NVIDIA_VISIBLE_DEVICES; LD_LIBRARY_PATH=/driver/usr/lib/x86_64-linux-gnu /driver/usr/bin/nvidia-smi -L' \
    "${2:-nvidia.com/gpu}" "${3:-2}" "$DRIVER_ROOT"
}
log=$(mock_pod mock-a) && ok "a pod asking nvidia.com/gpu: 2 ran nvidia-smi -L from the driver root" || bad "mock pod: $log"
echo "$log" | sed 's/^/   | /'
granted=$(sed -n 's/^NVIDIA_VISIBLE_DEVICES=//p' <<<"$log" | tr ',' '\n' | sort)
seen=$(grep '^GPU [0-9]*: ' <<<"$log" | grep -o 'GPU-[0-9a-f-]*' | sort)
granted_are_ours() { [ "$(wc -w <<<"$granted")" = 2 ] && [ -z "$(comm -23 <(echo "$granted") <(echo "$root_uuids"))" ]; }
check "NVIDIA's plugin granted 2 device IDs (NVIDIA_VISIBLE_DEVICES), and they are our UUIDs" granted_are_ours
check "nvidia-smi in the pod sees exactly its 2 GPUs" test -n "$seen" -a "$seen" = "$granted"
check "… of the pool's profile (H100, not a fixed A100)" test "$(grep -c '^GPU [0-9]: NVIDIA H100 80GB HBM3 ' <<<"$log")" = 2

echo "== mock backend: an XID on GPU 3 → NVIDIA's plugin marks it Unhealthy"
config=$ROOT_LIB/fakegpu/config.json
t0=$(ms)
"$FAKEGPU" fault inject --config "$config" --gpu 3 --xid 79 >/dev/null || bad "fakegpu fault inject"
check "allocatable nvidia.com/gpu drops to 7" wait_for 60 allocatable_is nvidia.com/gpu 7
echo "   7 after $(($(ms) - t0)) ms"
logged_xid() { k -n nvidia-k8s logs ds/nvidia-device-plugin 2>&1 | grep 'Xid=79' | grep -q -- "${gpu3:-none}"; }
check "NVIDIA's plugin logged XID 79 on GPU 3 ($gpu3)" logged_xid
"$FAKEGPU" fault clear --config "$config" --gpu 3 >/dev/null || bad "fakegpu fault clear"
# NVIDIA's plugin v0.17.4 never marks a device healthy again by itself: its new pod does.
k -n nvidia-k8s delete pod -l app=nvidia-device-plugin --wait=true >/dev/null
check "fault cleared and the plugin restarted: nvidia.com/gpu back to 8" wait_for 90 allocatable_is nvidia.com/gpu 8

echo "== mock backend: NVIDIA's GPU Feature Discovery over the root, labels compared"
# GFD reads /sys/bus/pci/devices/<bdf>/… for each GPU: the root's fake tree is mounted there.
cat <<EOF | k apply -f - >/dev/null
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: gpu-feature-discovery, namespace: nvidia-k8s}
spec:
  selector: {matchLabels: {app: gpu-feature-discovery}}
  template:
    metadata: {labels: {app: gpu-feature-discovery}}
    spec:
      nodeSelector: {run.ai/simulated-gpu-node-pool: mock}
      terminationGracePeriodSeconds: 1
      containers:
      - name: gfd
        image: localhost/fakegpu/nvidia-k8s:1
        imagePullPolicy: Never
        command: ["/bin/sh", "-c", "gpu-feature-discovery --oneshot --no-timestamp --fail-on-init-error --mig-strategy=mixed --output-file=/tmp/labels --machine-type-file=/driver-root/sys/class/dmi/id/product_name 2>/tmp/gfd.log; echo gfd-exit=\$?; cat /tmp/labels; tail -5 /tmp/gfd.log; exec sleep 600"]
        env:
        - {name: LD_LIBRARY_PATH, value: /driver-root/usr/lib/x86_64-linux-gnu}
        - {name: NODE_NAME, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}
        volumeMounts:
        - {name: driver-root, mountPath: /driver-root, readOnly: true}
        - {name: pci, mountPath: /sys/bus/pci/devices, readOnly: true}
      volumes:
      - {name: driver-root, hostPath: {path: /run/nvidia/driver}}
      - {name: pci, hostPath: {path: $DRIVER_ROOT/sys/bus/pci/devices}}
EOF
gfd_done() { k -n nvidia-k8s logs ds/gpu-feature-discovery 2>/dev/null | grep -q '^gfd-exit='; }
wait_for 120 gfd_done
gfd_log=$(k -n nvidia-k8s logs ds/gpu-feature-discovery 2>&1)
check "GFD ran over the driver root ($(grep -m1 '^gfd-exit=' <<<"$gfd_log"))" grep -qx 'gfd-exit=0' <<<"$gfd_log"
grep -q '^gfd-exit=0' <<<"$gfd_log" || echo "$gfd_log" | tail -8 | sed 's/^/   | /'
k get node "$NODE" -o jsonpath='{.metadata.labels}' >"$OUT/mock-node-labels.json"
grep '^[a-z.]*/[^=]*=' <<<"$gfd_log" >"$OUT/mock-gfd-labels.txt"
# Keys only one side writes, and why: as tests/gfd/check.py and docs/mig.md list them.
gfd_equal() {
  python3 - "$OUT/mock-gfd-labels.txt" "$OUT/mock-node-labels.json" <<'PY'
import json, sys
gfd = dict(l.rstrip("\n").split("=", 1) for l in open(sys.argv[1]) if "=" in l)
node = json.load(open(sys.argv[2]))
ours = {k: v for k, v in node.items() if k.startswith("nvidia.com/") or k == "run.ai/fake.gpu"}
def ours_only_ok(k):
    return k.startswith("nvidia.com/gpu.deploy.") or k.startswith("nvidia.com/mig.config") or k in ("run.ai/fake.gpu", "nvidia.com/gpu.present")
both = sorted(set(gfd) & set(ours))
diff = [f"{k}: GFD {gfd[k]!r}, ours {ours[k]!r}" for k in both if gfd[k] != ours[k]]
gfd_only = sorted(set(gfd) - set(ours))
ours_only = sorted(k for k in set(ours) - set(gfd) if not ours_only_ok(k))
print(f"   {len(both)} keys both write; GFD only: {gfd_only}; ours only (unlisted): {ours_only}")
for d in diff:
    print("   differs:", d)
sys.exit(0 if len(both) >= 20 and not diff and not gfd_only and not ours_only else 1)
PY
}
check "NVIDIA GFD's labels equal the status-updater's on every key both write (product, memory, count, compute, family, CUDA, driver, MIG)" gfd_equal

echo "== mock backend: a MIG layout (mixed) with NVIDIA's device plugin"
"$FAKEGPU" state mig --config "$config" --mig-config all-1g.10gb >/dev/null || bad "fakegpu state mig all-1g.10gb on the root"
# GPU 7's last 1g.10gb instance (GI 13, CI 0): the agent lays the root again for the new layout.
caps_laid() { [ -f "$DRIVER_ROOT/proc/driver/nvidia/capabilities/gpu7/mig/gi13/ci0/access" ]; }
check "the agent lays the MIG capability files of the new layout" wait_for 30 caps_laid
# NVIDIA's mig-manager restarts the device plugin after a reconfiguration; so does the test.
k -n nvidia-k8s delete pod -l app=nvidia-device-plugin --wait=true >/dev/null
capacity_is() { [ "$(k get node "$NODE" -o jsonpath="{.status.capacity.${1//./\\.}}")" = "$2" ]; }
mig56() { allocatable_is nvidia.com/mig-1g.10gb 56 && capacity_is nvidia.com/mig-1g.10gb 56; }
check "NVIDIA's plugin advertises nvidia.com/mig-1g.10gb: 56, every device healthy (allocatable = capacity)" wait_for 90 mig56
log=$(mock_pod mock-mig nvidia.com/mig-1g.10gb 1) && ok "a pod asking nvidia.com/mig-1g.10gb: 1 ran nvidia-smi -L from the driver root" || bad "MIG pod: $log"
echo "$log" | sed 's/^/   | /'
granted=$(sed -n 's/^NVIDIA_VISIBLE_DEVICES=//p' <<<"$log")
one_mig() { [[ "$granted" =~ ^MIG-[0-9a-f-]+$ ]] && [ "$(grep -c '^GPU [0-9]*: ' <<<"$log")" = 1 ] && [ "$(grep -c 'MIG 1g.10gb *Device *[0-9]*: (UUID: '"$granted"')' <<<"$log")" = 1 ]; }
check "it was granted one MIG device ($granted), and nvidia-smi in it sees that one" one_mig
k delete pod mock-mig --wait=true --timeout=60s >/dev/null 2>&1

echo "== mock backend: cleanup on every way out (force delete, node leaves the pool, back to fake, pool removed, helm uninstall)"
k delete pod mock-a --wait=true --timeout=60s >/dev/null 2>&1
k delete namespace nvidia-k8s --wait=true --timeout=120s >/dev/null
unlaid() { [ "$(host_side)" = "$(cat "$OUT/mock-host-before.txt")" ]; }
unlaid_check() { # what: the host holds what it held before the mock pool (listed when not)
  if wait_for 60 unlaid; then
    ok "$1 left the host as before: /var/lib/nvml-mock, /run/nvidia, /var/run/cdi"
  else
    bad "$1: left on the host: $(diff <(cat "$OUT/mock-host-before.txt") <(host_side) | tr '\n' ' ')"
  fi
}
# What the kubelet created for the agent's volumes stays, empty (documented in
# docs/mock-backend.md); removed here so that the suite's host comparison holds.
remove_kubelet_dirs() {
  local d left
  for d in $made_by_kubelet; do
    left=$(find "$d" -mindepth 1 -not -type d 2>/dev/null)
    [ -z "$left" ] || bad "files left under $d: $left"
    find "$d" -depth -type d -empty -delete 2>/dev/null
  done
}
agent_pod() { k -n "$NS" get pods -l fake-gpu-operator/component=nvml-mock -o jsonpath='{.items[0].metadata.name}' 2>/dev/null; }

# A force-deleted agent pod (upstream leaves its host dirty then): the kubelet stops it while the
# DaemonSet already starts the replacement, whose keeper lays the root again if the old pod's
# preStop removed it after the replacement laid it.
old=$(agent_pod)
k -n "$NS" delete pod "$old" --force --grace-period=0 >/dev/null 2>&1
replaced() { local p; p=$(agent_pod); [ -n "$p" ] && [ "$p" != "$old" ] && laid; }
check "a force-deleted agent pod is replaced and the root laid" wait_for 90 replaced
sleep 6 # two keeper periods: a late preStop of the old pod would show here
eight_gpus() { [ "$(LD_LIBRARY_PATH=$ROOT_LIB "$DRIVER_ROOT/usr/bin/nvidia-smi" -L | grep -c '^GPU ')" = 8 ]; }
laid_eight() { laid && eight_gpus; }
check "… and it stays laid (nvidia-smi from the root lists 8 GPUs)" laid_eight

# The node leaves the pool: the DaemonSet's pod on it goes, its preStop cleans the host.
k label node "$NODE" run.ai/simulated-gpu-node-pool=default --overwrite >/dev/null
no_agent() { [ -z "$(agent_pod)" ]; }
check "the node left the pool: the agent pod goes" wait_for 90 no_agent
unlaid_check "the node leaving the pool"
k label node "$NODE" run.ai/simulated-gpu-node-pool=mock --overwrite >/dev/null
check "back in the mock pool: laid again" wait_for 90 laid

t0=$(ms)
"$HELM" upgrade fgo "$ROOT/helm/fake-gpu-operator" -n "$NS" --reuse-values --set topology.nodePools.mock.gpu.backend=fake \
  --wait --timeout 180s >"$OUT/helm-upgrade-fake.txt" 2>&1 || bad "helm upgrade (mock → fake): $(tail -3 "$OUT/helm-upgrade-fake.txt")"
agent_gone() { ! k -n "$NS" get ds nvml-mock-mock >/dev/null 2>&1 && ! k -n "$NS" get cm nvml-mock-mock >/dev/null 2>&1 && no_agent; }
check "switched to fake: the status-updater deleted nvml-mock-mock (ConfigMap, DaemonSet, pod) in $(($(ms) - t0)) ms" wait_for 90 agent_gone
unlaid_check "switching the pool to fake"
no_backend_label() { [ -z "$(node_label fake-gpu-operator.run.ai/backend)" ]; }
check "the backend label goes with the mock backend" wait_for 60 no_backend_label
check "a fake pool's node: our device plugin serves it again" workloads_ready "device-plugin"

"$HELM" upgrade fgo "$ROOT/helm/fake-gpu-operator" -n "$NS" --reuse-values --set topology.nodePools.mock.gpu.backend=mock \
  --wait --timeout 180s >"$OUT/helm-upgrade-mock-again.txt" 2>&1 || bad "helm upgrade (fake → mock): $(tail -3 "$OUT/helm-upgrade-mock-again.txt")"
check "back to mock: laid again" wait_for 90 laid
# A pool is removed from the values as a user would: the release's values without it, given
# whole (--reuse-values merges maps, so it cannot drop a key).
"$HELM" get values fgo -n "$NS" -o json | python3 -c "
import json, sys
v = json.load(sys.stdin)
del v['topology']['nodePools']['mock']
json.dump(v, open('$OUT/values-without-mock.json', 'w'))"
"$HELM" upgrade fgo "$ROOT/helm/fake-gpu-operator" -n "$NS" -f "$OUT/values-without-mock.json" \
  --wait --timeout 180s >"$OUT/helm-upgrade-nomock.txt" 2>&1 || bad "helm upgrade (pool removed): $(tail -3 "$OUT/helm-upgrade-nomock.txt")"
check "the pool removed: nvml-mock-mock deleted" wait_for 90 agent_gone
unlaid_check "removing the pool"

# Left in a mock pool for helm uninstall (chart.sh checks the host after it: mock_after_uninstall).
"$HELM" upgrade fgo "$ROOT/helm/fake-gpu-operator" -n "$NS" --reuse-values \
  --set-json 'topology.nodePools.mock={"gpu":{"backend":"mock","profile":"h100","overrides":{"device_count":8}}}' \
  --wait --timeout 180s >"$OUT/helm-upgrade-mock-last.txt" 2>&1 || bad "helm upgrade (mock pool again): $(tail -3 "$OUT/helm-upgrade-mock-last.txt")"
check "a mock pool again, for helm uninstall: laid" wait_for 90 laid

# Called by chart.sh after helm uninstall: the topology ConfigMap's deletion has the garbage
# collector delete the agent's DaemonSet, whose pod's preStop cleans the host.
mock_after_uninstall() {
  unlaid_check "helm uninstall (garbage-collected agent)"
  remove_kubelet_dirs
}
