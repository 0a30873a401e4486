#!/usr/bin/env bash
# The chart installed for real (issue 11, point 4), on a cluster from `fakegpu cluster up
# --real-node` whose images dir held the operator and gpu-pod archives. Called by run.sh with the
# cluster up; prints ok/FAIL lines and exits non-zero on any failure.
#
# The KWOK nodes get a NoSchedule taint first, so the chart's Deployments run as real containers
# on the real node (on KWOK nodes they would be pods that no process backs).
#
# Env: KUBECONFIG, KUBECTL, HELM, CLUSTER (the fakegpu-cluster binary), OUT (log dir).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
NODE=fakegpu-real-node
NS=gpu-operator
passed=0 failed=0
ok() { passed=$((passed + 1)); echo "ok   $*"; }
bad() { failed=$((failed + 1)); echo "FAIL $*"; }
check() { local name=$1; shift; if "$@"; then ok "$name"; else bad "$name"; fi; }
ms() { date +%s%3N; }
k() { "$KUBECTL" "$@"; }

for n in $(k get nodes -l type=kwok -o jsonpath='{.items[*].metadata.name}'); do
  k taint nodes "$n" kwok.x-k8s.io/node=fake:NoSchedule --overwrite >/dev/null || bad "taint $n"
done

# Every Deployment available and every DaemonSet pod ready, all of them on the real node.
workloads_ready() {
  local want_ds=$1
  k -n "$NS" wait --for=condition=Available deploy --all --timeout=120s >/dev/null || return 1
  local ds
  for ds in $want_ds; do
    local t=0
    until [ "$(k -n "$NS" get ds "$ds" -o jsonpath='{.status.numberReady}')" = 1 ]; do
      t=$((t + 1)); [ $t -gt 120 ] && { echo "   daemonset $ds not ready" >&2; return 1; }; sleep 1
    done
  done
  local elsewhere
  elsewhere=$(k -n "$NS" get pods -o jsonpath='{range .items[*]}{.spec.nodeName}{"\n"}{end}' | grep -vx "$NODE")
  [ -z "$elsewhere" ] || { echo "   pods on other nodes: $elsewhere" >&2; return 1; }
}

# A pod admitted in the moment between a kubelet restart and the plugin's new registration fails
# with UnexpectedAdmissionError; re-registration means a later pod succeeds (within 60 s).
gpu_pod_eventually() { # name
  local i log
  for i in 1 2 3 4 5 6; do
    if log=$(gpu_pod "$1-$i"); then echo "$log"; return 0; fi
    sleep 10
  done
  echo "$log"; return 1
}

# A pod on the real node running `script` in the GPU-pod image with `count` of `resource`, and
# the host directory `host-dir` (optional) mounted read-only at /driver. Through the scheduler
# (not nodeName): the kubelet admits a pod whose extended resources the node does not advertise
# at all, so only the scheduler proves the devices are there.
apply_pod() { # name script resource count [host-dir]
  k delete pod "$1" --ignore-not-found --wait=true >/dev/null
  local mount="" volume=""
  if [ -n "${5:-}" ]; then
    mount="    volumeMounts: [{name: host, mountPath: /driver, readOnly: true}]"
    volume="  volumes: [{name: host, hostPath: {path: $5}}]"
  fi
  cat <<EOF | k apply -f - >/dev/null
apiVersion: v1
kind: Pod
metadata: {name: $1, namespace: default}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  nodeSelector: {kubernetes.io/hostname: $NODE}
  containers:
  - name: main
    image: localhost/fakegpu/gpu-pod:1
    imagePullPolicy: Never
    command: ["/bin/sh", "-c", "$2"]
    resources: {limits: {$3: $4}}
$mount
$volume
EOF
}

run_pod() { # as apply_pod -> prints the pod's log once it ended (90 s at most); fails unless it Succeeded
  apply_pod "$@"
  local t=0 phase
  while :; do
    phase=$(k get pod "$1" -o jsonpath='{.status.phase}')
    case "$phase" in Succeeded | Failed) break ;; esac
    t=$((t + 1)); [ $t -gt 90 ] && break; sleep 1
  done
  k logs "$1" 2>&1
  [ "$phase" = Succeeded ]
}

# The pod asks for 2 GPUs and runs the injected nvidia-smi.
gpu_pod() { run_pod "$1" 'nvidia-smi -L && echo NODE_NAME=$NODE_NAME' nvidia.com/gpu 2; }

wait_for() { # seconds command... : polls once a second until the command succeeds
  local limit=$1 t=0
  shift
  until "$@"; do
    t=$((t + 1)); [ $t -gt "$limit" ] && return 1; sleep 1
  done
}
# A Node field by jsonpath-style dotted key under labels/annotations/allocatable.
node_label() { k get node "$NODE" -o jsonpath="{.metadata.labels.${1//./\\.}}"; }
node_annotation() { k get node "$NODE" -o jsonpath="{.metadata.annotations.${1//./\\.}}"; }
allocatable() { k get node "$NODE" -o jsonpath="{.status.allocatable.${1//./\\.}}"; }
label_is() { [ "$(node_label "$1")" = "$2" ]; }
allocatable_is() { [ "$(allocatable "$1")" = "$2" ]; }
uuids() { grep -o 'GPU-[0-9a-f-]*' | sort -u; }

allocatable_gpus() { # wait until the node advertises N nvidia.com/gpu
  local t=0
  until [ "$(k get node "$NODE" -o jsonpath='{.status.allocatable.nvidia\.com/gpu}')" = "$1" ]; do
    t=$((t + 1)); [ $t -gt 90 ] && return 1; sleep 1
  done
}

echo "== helm install (default values, imagePullPolicy Never)"
t0=$(ms)
if "$HELM" install fgo "$ROOT/helm/fake-gpu-operator" -n "$NS" --create-namespace --set image.pullPolicy=Never --wait --timeout 180s >"$OUT/helm-install.txt" 2>&1; then
  ok "helm install --wait in $(($(ms) - t0)) ms"
else
  bad "helm install: $(tail -3 "$OUT/helm-install.txt")"
fi
if workloads_ready "device-plugin nvidia-dcgm-exporter"; then
  ok "every workload Ready, on the real node (status-updater, topology-server, kwok plugins, device plugin, exporter): $(($(ms) - t0)) ms after helm install started"
else
  bad "every workload Ready, on the real node"
fi
check "the node advertises its 2 GPUs (device plugin registered)" allocatable_gpus 2

t0=$(ms)
log=$(gpu_pod gpu-a) && ok "a pod asking nvidia.com/gpu: 2 ran the injected nvidia-smi ($(($(ms) - t0)) ms)" || bad "gpu pod: $log"
echo "$log" | sed 's/^/   | /'
check "nvidia-smi -L lists exactly 2 GPUs" test "$(echo "$log" | grep -c '^GPU [0-9]: ')" = 2
check "NODE_NAME in the GPU pod is the node" grep -qx "NODE_NAME=$NODE" <<<"$log"
pod_ids=$(echo "$log" | uuids)
cm_ids=$(k -n "$NS" get cm "topology-$NODE" -o jsonpath='{.data.topology\.yml}' | uuids)
exp_ip=$(k -n "$NS" get pod -l app=nvidia-dcgm-exporter -o jsonpath='{.items[0].status.podIP}')
exp_ids=$(python3 -c "import urllib.request,sys; sys.stdout.write(urllib.request.urlopen('http://$exp_ip:9400/metrics', timeout=10).read().decode())" 2>/dev/null | grep '^DCGM_FI_DEV_GPU_UTIL{' | uuids)
check "the pod's UUIDs = the node's topology ConfigMap" test -n "$pod_ids" -a "$pod_ids" = "$cm_ids"
check "the pod's UUIDs = the node-local exporter's series" test -n "$exp_ids" -a "$pod_ids" = "$exp_ids"

echo "== device plugin re-registration"
"$CLUSTER" restart-kubelet 2>"$OUT/restart-kubelet.txt" || bad "restart-kubelet: $(cat "$OUT/restart-kubelet.txt")"
check "after a kubelet restart: 2 GPUs advertised again" allocatable_gpus 2
log=$(gpu_pod_eventually gpu-b) && ok "after a kubelet restart: a 2-GPU pod runs" || bad "gpu pod after kubelet restart: $log"
check "after a kubelet restart: same 2 UUIDs" test -n "$pod_ids" -a "$(echo "$log" | uuids)" = "$pod_ids"
check "sysctls back after the kubelet restart" diff <(sed -n '/^## sysctls/,$p' "$OUT/host-before.txt") <(echo "## sysctls"; cat /proc/sys/kernel/panic /proc/sys/kernel/panic_on_oops /proc/sys/vm/overcommit_memory)
old=$(k -n "$NS" get pod -l app=device-plugin -o jsonpath='{.items[0].metadata.name}' 2>/dev/null)
[ -n "$old" ] || old=$(k -n "$NS" get pods -o name | grep -m1 '/device-plugin-' | cut -d/ -f2)
k -n "$NS" delete pod "$old" --wait=true >/dev/null
check "after its pod is deleted: the DaemonSet's new pod is ready" workloads_ready "device-plugin"
log=$(gpu_pod_eventually gpu-c) && ok "after the device plugin pod was replaced: a 2-GPU pod runs" || bad "gpu pod after plugin restart: $log"
k delete pod --all -n default --wait=false >/dev/null 2>&1

echo "== draPlugin.enabled=true"
t0=$(ms)
if "$HELM" upgrade fgo "$ROOT/helm/fake-gpu-operator" -n "$NS" --reuse-values --set draPlugin.enabled=true --wait --timeout 180s >"$OUT/helm-upgrade.txt" 2>&1; then
  ok "helm upgrade --set draPlugin.enabled=true --wait in $(($(ms) - t0)) ms"
else
  bad "helm upgrade: $(tail -3 "$OUT/helm-upgrade.txt")"
fi
dra_ds=$(k -n "$NS" get ds -o name | grep -e kubeletplugin -e dra | cut -d/ -f2 | tr '\n' ' ')
[ -n "$dra_ds" ] || bad "no DRA plugin DaemonSet after the upgrade"
check "every workload Ready with the DRA plugin ($dra_ds)" workloads_ready "device-plugin nvidia-dcgm-exporter $dra_ds"

# The kubelet's plugin watcher sends the socket path as HTTP/2 :authority; the plugin's servers
# rewrite it (operator-node/src/kubelet/authority.rs) so h2 accepts the call and the driver registers.
echo "== a ResourceClaim pod gets its GPU through CDI"
cat <<EOF | k apply -f - >/dev/null
apiVersion: resource.k8s.io/v1
kind: ResourceClaimTemplate
metadata: {name: one-gpu, namespace: default}
spec:
  spec:
    devices:
      requests:
      - name: gpu
        exactly: {deviceClassName: gpu.nvidia.com, allocationMode: ExactCount, count: 1}
---
apiVersion: v1
kind: Pod
metadata: {name: dra-gpu, namespace: default}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  nodeSelector: {kubernetes.io/hostname: $NODE}
  resourceClaims:
  - {name: gpu, resourceClaimTemplateName: one-gpu}
  containers:
  - name: main
    image: localhost/fakegpu/gpu-pod:1
    imagePullPolicy: Never
    command: ["/bin/sh", "-c", "nvidia-smi -L && echo NODE_NAME=\$NODE_NAME"]
    resources: {claims: [{name: gpu}]}
EOF
t=0
until phase=$(k get pod dra-gpu -o jsonpath='{.status.phase}') && { [ "$phase" = Succeeded ] || [ "$phase" = Failed ]; }; do
  t=$((t + 1)); [ $t -gt 90 ] && break; sleep 1
done
log=$(k logs dra-gpu 2>&1)
echo "$log" | sed 's/^/   | /'
check "the claim pod ran (phase $phase)" test "$phase" = Succeeded
check "the claim pod sees exactly 1 GPU" test "$(echo "$log" | grep -c '^GPU [0-9]: ')" = 1
check "the claim pod's NODE_NAME (from the CDI spec) is the node" grep -qx "NODE_NAME=$NODE" <<<"$log"
dra_id=$(echo "$log" | uuids)
check "its UUID is one of the node's topology ConfigMap" sh -c "[ -n '$dra_id' ] && echo '$cm_ids' | grep -qx '$dra_id'"
check "its UUID is one of the node-local exporter's series" sh -c "[ -n '$dra_id' ] && echo '$exp_ids' | grep -qx '$dra_id'"
k delete pod dra-gpu --wait=true --timeout=60s >/dev/null 2>&1
k delete resourceclaimtemplate one-gpu >/dev/null 2>&1

echo "== compute domains: the compute-domain.nvidia.com node plugin on the real node"
k label node "$NODE" nvidia.com/gpu.deploy.compute-domain-dra-plugin=true --overwrite >/dev/null
t0=$(ms)
if "$HELM" upgrade fgo "$ROOT/helm/fake-gpu-operator" -n "$NS" --reuse-values --set computeDomainDraPlugin.enabled=true --wait --timeout 180s >"$OUT/helm-upgrade-cd.txt" 2>&1; then
  ok "helm upgrade --set computeDomainDraPlugin.enabled=true --wait in $(($(ms) - t0)) ms"
else
  bad "helm upgrade (compute domains): $(tail -3 "$OUT/helm-upgrade-cd.txt")"
fi
cd_ds=$(k -n "$NS" get ds -o name | grep compute-domain | cut -d/ -f2 | tr '\n' ' ')
[ -n "$cd_ds" ] || bad "no compute-domain plugin DaemonSet after the upgrade"
check "the controller and the compute-domain plugin Ready on the real node ($cd_ds)" workloads_ready "$cd_ds"
cat <<EOF | k apply -f - >/dev/null
apiVersion: resource.nvidia.com/v1beta1
kind: ComputeDomain
metadata: {name: real-cd, namespace: default}
spec:
  numNodes: 1
  channel:
    resourceClaimTemplate: {name: real-cd-channel}
    allocationMode: Single
EOF
t=0
until k get resourceclaimtemplate real-cd-channel >/dev/null 2>&1; do
  t=$((t + 1)); [ $t -gt 60 ] && break; sleep 1
done
check "the controller created the domain's ResourceClaimTemplate" sh -c "$KUBECTL get resourceclaimtemplate real-cd-channel >/dev/null"
cat <<EOF | k apply -f - >/dev/null
apiVersion: v1
kind: Pod
metadata: {name: cd-pod, namespace: default}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  nodeSelector: {kubernetes.io/hostname: $NODE}
  resourceClaims:
  - {name: imex, resourceClaimTemplateName: real-cd-channel}
  containers:
  - name: main
    image: localhost/fakegpu/gpu-pod:1
    imagePullPolicy: Never
    # Stays running: a finished pod's claim is deallocated, and the domain's status follows the
    # allocated claims.
    command: ["/bin/sh", "-c", "ls /dev/nvidia-caps-imex-channels && test -c /dev/nvidia-caps-imex-channels/channel\$IMEX_CHANNELS && echo IMEX_CHANNELS=\$IMEX_CHANNELS NODE=\$KUBERNETES_NODE_NAME; exec sleep 600"]
    resources: {claims: [{name: imex}]}
EOF
t=0
until log=$(k logs cd-pod 2>/dev/null) && grep -q '^IMEX_CHANNELS=' <<<"$log"; do
  t=$((t + 1)); [ $t -gt 90 ] && break; sleep 1
done
log=$(k logs cd-pod 2>&1)
echo "$log" | sed 's/^/   | /'
phase=$(k get pod cd-pod -o jsonpath='{.status.phase}')
check "the channel pod runs (phase $phase)" test "$phase" = Running
check "its IMEX channel is a character device at NVIDIA's path, with the node's name" grep -q "^IMEX_CHANNELS=[0-9]* NODE=$NODE\$" <<<"$log"
t=0
until [ "$(k get computedomain real-cd -o jsonpath='{.status.status}')" = Ready ]; do
  t=$((t + 1)); [ $t -gt 60 ] && break; sleep 1
done
cd_status=$(k get computedomain real-cd -o jsonpath='{.status.status} {.status.nodes[0].name}')
check "the ComputeDomain is Ready with the real node (status: $cd_status)" test "$cd_status" = "Ready $NODE"
k delete pod cd-pod --wait=true --timeout=60s >/dev/null 2>&1
k delete computedomain real-cd --wait=true --timeout=60s >/dev/null 2>&1
check "deleting the domain removes its template" sh -c "! $KUBECTL get resourceclaimtemplate real-cd-channel >/dev/null 2>&1"

# shellcheck source=chart-mig.sh
. "$ROOT/tests/real-node/chart-mig.sh"
# shellcheck source=chart-mock.sh
. "$ROOT/tests/real-node/chart-mock.sh"

echo "== helm uninstall"
k delete pod --all -n default --wait=true --timeout=60s >/dev/null 2>&1
"$HELM" uninstall fgo -n "$NS" --wait --timeout 120s >/dev/null || bad "helm uninstall"
check "uninstall removes the device plugin's socket" test ! -e /var/lib/kubelet/device-plugins/fake-nvidia-gpu.sock
mock_after_uninstall
# Documented (docs/cluster.md): the hostPath files the plugins install stay, as no Kubernetes
# object can remove files from a node; `fakegpu cluster down` removes them on the real node.
find /var/lib/fake-gpu-operator /var/run/cdi -mindepth 1 2>/dev/null | sed 's/^/   left by the chart (documented): /'

echo "chart: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
