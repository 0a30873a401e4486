# Sourced by chart.sh with the chart installed on the real node (helpers k, check, ok, bad, ms,
# wait_for, label_is, allocatable_is, apply_pod, workloads_ready, allocatable_gpus and the variables NODE, NS, OUT, ROOT, HELM, KUBECTL, dra_ds):
# MIG on the real node (issue 14). nvidia.com/mig.config → the node's live state through the
# DaemonSet nvidia-mig-manager → capacity, GFD's labels, a pod's MIG device, per-MIG metrics;
# a change while a pod holds a GPU fails with nothing changed; upstream's run.ai/mig.config; a
# layout made on the node with nvidia-smi reaches the Node.

echo "== MIG on the real node: nvidia.com/mig.config → the node's live state"
NODE_DIR=/var/lib/fake-gpu-operator/nodes/$NODE
STATE_FILE=$NODE_DIR/fakegpu-state.json

# Per GPU: the number of GPU instances in the live state file, "off" when MIG is off.
state_layouts() {
  python3 - "$STATE_FILE" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
out = []
for g in ("0", "1"):
    m = s.get("gpus", {}).get(g, {}).get("mig", {})
    out.append(str(len(m.get("gpu_instances", []))) if m.get("current") else "off")
print(" ".join(out))
EOF
}
layouts_are() { [ "$(state_layouts)" = "$1" ]; }
state_is() { label_is nvidia.com/mig.config.state "$1"; }

# The pool becomes 2 × H100 (upstream's legacy keys); the status-updater labels the node
# nvidia.com/gpu.deploy.mig-manager=true and the DaemonSet nvidia-mig-manager starts on it.
t0=$(ms)
if "$HELM" upgrade fgo "$ROOT/helm/fake-gpu-operator" -n "$NS" --reuse-values --set topology.nodePools.default.gpuProduct=NVIDIA-H100-80GB-HBM3 \
  --set topology.nodePools.default.gpuMemory=81559 --set topology.migStrategy=mixed --wait --timeout 180s >"$OUT/helm-upgrade-mig.txt" 2>&1; then
  ok "helm upgrade to an H100 pool --wait in $(($(ms) - t0)) ms"
else
  bad "helm upgrade (H100 pool): $(tail -3 "$OUT/helm-upgrade-mig.txt")"
fi
h100_labels() { label_is nvidia.com/gpu.product NVIDIA-H100-80GB-HBM3 && label_is nvidia.com/gpu.deploy.mig-manager true; }
check "the node is relabelled for the H100 pool, with nvidia.com/gpu.deploy.mig-manager=true" wait_for 90 h100_labels
check "the node's config file on the host is the H100's" wait_for 60 grep -qi h100 "$NODE_DIR/config.json"
# The kubelet plugins load the node's config when they start: restarted once the new one is on disk.
k -n "$NS" delete pod -l app=device-plugin --wait=true >/dev/null 2>&1
for ds in $dra_ds; do k -n "$NS" rollout restart ds "$ds" >/dev/null 2>&1; done
check "nvidia-mig-manager and the plugins Ready on the real node" workloads_ready "nvidia-mig-manager device-plugin $dra_ds"
check "2 whole GPUs advertised before any MIG request" allocatable_gpus 2

k label node "$NODE" nvidia.com/mig.config=all-1g.10gb --overwrite >/dev/null
t0=$(ms)
check "nvidia.com/mig.config=all-1g.10gb → nvidia.com/mig.config.state=success" wait_for 60 state_is success
echo "   success after $(($(ms) - t0)) ms"
check "the node's live state file holds 7 instances on each GPU" layouts_are "7 7"
# A resource whose plugin endpoint stopped is 0 (or gone, after the kubelet's grace period).
no_whole_gpus() { [ "$(allocatable nvidia.com/gpu)" = 0 ] || [ -z "$(allocatable nvidia.com/gpu)" ]; }
mig14() { allocatable_is nvidia.com/mig-1g.10gb 14 && no_whole_gpus; }
check "capacity: nvidia.com/mig-1g.10gb = 14 (NVIDIA's mixed strategy), nvidia.com/gpu = 0" wait_for 60 mig14
gfd14() { label_is nvidia.com/mig-1g.10gb.count 14 && label_is nvidia.com/mig-1g.10gb.memory 9984; }
check "GFD's MIG labels from the live layout (mig-1g.10gb.count=14, memory=9984 as GFD writes it)" wait_for 30 gfd14

apply_pod mig-pod 'nvidia-smi -L && echo listed; exec sleep 600' nvidia.com/mig-1g.10gb 1
listed() { k logs mig-pod 2>/dev/null | grep -qx listed; }
wait_for 90 listed
log=$(k logs mig-pod 2>&1)
echo "$log" | sed 's/^/   | /'
check "a pod asking nvidia.com/mig-1g.10gb: 1 runs" grep -qx listed <<<"$log"
check "nvidia-smi in the pod sees one GPU and exactly one MIG device" \
  test "$(grep -c '^GPU [0-9]: ' <<<"$log")" = 1 -a "$(grep -c 'MIG 1g.10gb *Device *[0-9]*:' <<<"$log")" = 1
mig_id=$(grep -o 'MIG-[0-9a-f-]*' <<<"$log" | head -1)
held_in_topology() {
  k -n "$NS" get cm "topology-$NODE" -o jsonpath='{.data.topology\.yml}' | python3 -c "
import sys, yaml
t = yaml.safe_load(sys.stdin)
held = [m for g in t['gpus'] for m in (g.get('mig') or []) if m['id'] == '$mig_id' and (m.get('allocatedBy') or {}).get('pod') == 'mig-pod']
sys.exit(0 if held else 1)"
}
# The plugin's grant (the pod's allocated-gpus annotation) names the device; the status-updater
# records it (docs/kubelet-plugins.md: grants are written once the kubelet reports the pod).
if wait_for 90 held_in_topology; then
  ok "the topology ConfigMap records $mig_id as held by default/mig-pod"
else
  bad "the topology ConfigMap records ${mig_id:-the MIG device} as held by default/mig-pod; it has: $(k -n "$NS" get cm "topology-$NODE" -o jsonpath='{.data.topology\.yml}' | grep -B1 -A2 'pod: mig-pod' | tr '\n' ' '); the pod's annotations: $(k get pod mig-pod -o jsonpath='{.metadata.annotations}')"
fi
exp_ip=$(k -n "$NS" get pod -l app=nvidia-dcgm-exporter -o jsonpath='{.items[0].status.podIP}')
scrape() { python3 -c "import urllib.request,sys; sys.stdout.write(urllib.request.urlopen('http://$exp_ip:9400/metrics', timeout=10).read().decode())" 2>/dev/null; }
# dcgm-exporter's MIG series carry the parent's UUID, the instance in GPU_I_PROFILE/GPU_I_ID.
pod_series() { [ "$(scrape | grep '^DCGM_FI_DEV_FB_USED{' | grep 'GPU_I_PROFILE="1g.10gb"' | grep -c 'pod="mig-pod"')" = 1 ]; }
check "exactly one of the node-local exporter's MIG series carries the pod, with GPU_I_PROFILE=\"1g.10gb\"" wait_for 30 pod_series
check "… one FB_USED series per MIG device (14)" test "$(scrape | grep '^DCGM_FI_DEV_FB_USED{' | grep -c 'GPU_I_PROFILE="1g.10gb"')" = 14

k label node "$NODE" nvidia.com/mig.config=all-disabled --overwrite >/dev/null
check "a change while the pod holds a MIG device → nvidia.com/mig.config.state=failed" wait_for 60 state_is failed
reason=$(node_annotation fake-gpu-operator.run.ai/mig.config.reason)
echo "   reason: $reason"
reason_ok() { grep -q 'default/mig-pod' <<<"$reason" && grep -q 'nothing was changed' <<<"$reason"; }
check "the reason names the pod and says nothing was changed" reason_ok
check "a Warning Event MigConfigFailed about the node" \
  sh -c "'$KUBECTL' get events -n default --field-selector reason=MigConfigFailed,involvedObject.name=$NODE -o name | grep -q ."
check "nothing changed: the live state" layouts_are "7 7"
check "nothing changed: the capacity" allocatable_is nvidia.com/mig-1g.10gb 14
k delete pod mig-pod --wait=true --timeout=60s >/dev/null 2>&1
applied_off() { state_is success && layouts_are "off off"; }
check "the pod gone, the request in force is applied: success, MIG off in the live state" wait_for 90 applied_off
check "2 whole GPUs advertised again" allocatable_gpus 2

# The label removed: no request, nothing changes (as with NVIDIA's mig-manager).
k label node "$NODE" nvidia.com/mig.config- >/dev/null
sleep 3
kept() { layouts_are "off off" && state_is success; }
check "the label removed: the layouts and the state label stay" kept

# Upstream mig-faker's contract, on by default (migFaker.enabled).
k annotate node "$NODE" --overwrite run.ai/mig.config='version: v1
mig-configs:
  selected:
    - devices: ["0"]
      mig-enabled: true
      mig-devices:
        - {name: 3g.40gb, position: 4, size: 4}
' >/dev/null
runai_mapped() {
  node_annotation run.ai/mig-mapping | python3 -c "
import base64, json, sys
m = json.loads(base64.b64decode(sys.stdin.read()) or b'{}')
ok = list(m) == ['0'] and [(d['position'], d['gpu_instance_id']) for d in m['0']] == [(4, 2)] and m['0'][0]['device_uuid'].startswith('MIG-')
sys.exit(0 if ok else 1)" && layouts_are "1 off"
}
check "run.ai/mig.config → run.ai/mig-mapping with the instance at position 4 (GI 2); MIG on GPU 0 only in the live state" wait_for 60 runai_mapped
# Removed: no request any more; GPU 0 keeps its instance.
k annotate node "$NODE" run.ai/mig.config- >/dev/null

# A layout made on the node with NVIDIA's nvidia-smi (over the fake NVML the chart put on the
# host) reaches the annotation, the capacity and the labels. H100 GI profile 19 = 1g.10gb.
nv_root=$("$ROOT/scripts/fetch-nvidia.sh") || bad "fetching NVIDIA's nvidia-smi"
smi() { FAKEGPU_CONFIG="$NODE_DIR/config.json" FAKEGPU_NODE="$NODE" LD_LIBRARY_PATH=/var/lib/fake-gpu-operator/lib "$nv_root/usr/lib/nvidia/current/nvidia-smi" "$@"; }
if smi -i 1 -mig 1 >"$OUT/smi-mig.txt" 2>&1 && smi mig -i 1 -cgi 19,19 -C >>"$OUT/smi-mig.txt" 2>&1; then
  ok "nvidia-smi on the node: MIG on GPU 1 with two 1g.10gb instances"
else
  bad "nvidia-smi mig on the node: $(cat "$OUT/smi-mig.txt")"
fi
mirrored() {
  allocatable_is nvidia.com/mig-1g.10gb 2 && allocatable_is nvidia.com/mig-3g.40gb 1 &&
    node_annotation fake-gpu-operator.run.ai/mig-layout | python3 -c "import json, sys; sys.exit(0 if sorted(json.load(sys.stdin)) == ['0', '1'] else 1)"
}
check "… mirrored in the mig-layout annotation and the capacity (mig-1g.10gb = 2, mig-3g.40gb = 1)" wait_for 60 mirrored
check "… and in GFD's labels (nvidia.com/mig-1g.10gb.count=2)" wait_for 30 label_is nvidia.com/mig-1g.10gb.count 2

# Back to whole GPUs for what follows: the layouts go, and with them the mirrored annotation.
k label node "$NODE" nvidia.com/mig.config=all-disabled --overwrite >/dev/null
whole_again() { state_is success && layouts_are "off off" && [ -z "$(node_annotation fake-gpu-operator.run.ai/mig-layout)" ]; }
check "nvidia.com/mig.config=all-disabled: MIG off, the mig-layout annotation gone" wait_for 60 whole_again
