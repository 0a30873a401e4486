#!/usr/bin/env bash
# `helm install` of the chart into a running `fakegpu cluster` (real apiserver, RBAC on): the
# objects are created, workloads on KWOK nodes become available, and each component's
# ServiceAccount may do what it needs and not more (`kubectl auth can-i --as`). A second release
# in mixed mode goes into another namespace next to the first. Both are uninstalled at the end.
#
# Env: KUBECONFIG (or FAKEGPU_KUBECONFIG) of a fakegpu cluster; helm and kubectl on PATH
# (`eval "$(fakegpu cluster env)"`) or HELM/KUBECTL.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export KUBECONFIG="${FAKEGPU_KUBECONFIG:-${KUBECONFIG:?set KUBECONFIG to a fakegpu cluster}}"
HELM="${HELM:-helm}"
KUBECTL="${KUBECTL:-kubectl}"
ctx="$("$KUBECTL" config current-context)"
[ "$ctx" = fake-gpu-operator ] || { echo "refusing to install into context $ctx (not a fakegpu cluster)" >&2; exit 1; }

NS="fgo-install-$$"
NS2="fgo-mixed-$$"
pass=0 fail=0
ok() { pass=$((pass + 1)); echo "ok   $*"; }
bad() { fail=$((fail + 1)); echo "FAIL $*"; }
cleanup() {
  "$HELM" uninstall fgo -n "$NS" --wait >/dev/null 2>&1 || true
  "$HELM" uninstall mixed -n "$NS2" --wait >/dev/null 2>&1 || true
  "$KUBECTL" delete ns "$NS" "$NS2" --wait=false >/dev/null 2>&1 || true
}
trap cleanup EXIT

echo "== helm install fgo -n $NS"
"$HELM" install fgo "$ROOT/helm/fake-gpu-operator" -n "$NS" --create-namespace --wait --timeout 180s \
  --set kwokDraPlugin.enabled=true --set kwokComputeDomainDraPlugin.enabled=true >/dev/null
status="$("$HELM" status fgo -n "$NS")"
grep -q 'STATUS: deployed' <<<"$status" && ok "release deployed" || bad "release not deployed: $status"

for d in status-updater kwok-gpu-device-plugin nvidia-dcgm-exporter-kwok topology-server kwok-dra-plugin computedomain-controller kwok-compute-domain-dra-plugin; do
  avail="$("$KUBECTL" -n "$NS" get deploy "$d" -o jsonpath='{.status.availableReplicas}' 2>/dev/null || true)"
  [ "$avail" = 1 ] && ok "deployment $d available" || bad "deployment $d available=$avail"
done
for ds in device-plugin nvidia-dcgm-exporter; do
  "$KUBECTL" -n "$NS" get ds "$ds" >/dev/null 2>&1 && ok "daemonset $ds" || bad "daemonset $ds missing"
done
for s in nvidia-dcgm-exporter nvidia-dcgm-exporter-kwok topology-server; do
  "$KUBECTL" -n "$NS" get svc "$s" >/dev/null 2>&1 && ok "service $s" || bad "service $s missing"
done
"$KUBECTL" -n "$NS" get cm topology -o jsonpath='{.data.topology\.yml}' | grep -q 'nodePoolLabelKey: run.ai/simulated-gpu-node-pool' \
  && ok "topology ConfigMap" || bad "topology ConfigMap"
"$KUBECTL" get runtimeclass nvidia -o jsonpath='{.handler}' | grep -qx runc && ok "RuntimeClass nvidia" || bad "RuntimeClass nvidia"
"$KUBECTL" get deviceclass gpu.nvidia.com >/dev/null 2>&1 && ok "DeviceClass gpu.nvidia.com" || bad "DeviceClass missing"
for dc in compute-domain-default-channel.nvidia.com compute-domain-daemon.nvidia.com; do
  "$KUBECTL" get deviceclass "$dc" >/dev/null 2>&1 && ok "DeviceClass $dc" || bad "DeviceClass $dc missing"
done
"$KUBECTL" get crd computedomains.resource.nvidia.com -o jsonpath='{.status.conditions[?(@.type=="Established")].status}' | grep -qx True \
  && ok "CRD computedomains.resource.nvidia.com established" || bad "CRD computedomains missing"
"$KUBECTL" get crd clusterpolicies.nvidia.com >/dev/null 2>&1 && ok "CRD clusterpolicies.nvidia.com" || bad "CRD clusterpolicies missing"

# can SA VERB RESOURCE [flags...]: expect yes; cannot ...: expect no.
can() {
  local sa=$1; shift
  if "$KUBECTL" auth can-i --as="system:serviceaccount:$NS:$sa" "$@" >/dev/null 2>&1; then ok "$sa can $*"; else bad "$sa cannot $*"; fi
}
cannot() {
  local sa=$1; shift
  if "$KUBECTL" auth can-i --as="system:serviceaccount:$NS:$sa" "$@" >/dev/null 2>&1; then bad "$sa can $*"; else ok "$sa cannot $*"; fi
}
can status-exporter list configmaps -n "$NS"
can status-exporter watch configmaps -n "$NS"
cannot status-exporter list configmaps -n default
cannot status-exporter get secrets -n "$NS"
cannot status-exporter patch nodes
can status-updater create configmaps -n "$NS"
can status-updater patch nodes
can status-updater watch pods --all-namespaces
can status-updater list resourceclaims.resource.k8s.io --all-namespaces
cannot status-updater create configmaps -n default
cannot status-updater delete nodes
cannot status-updater get secrets -n "$NS"
can kwok-gpu-device-plugin patch nodes --subresource=status
cannot kwok-gpu-device-plugin patch nodes
cannot kwok-gpu-device-plugin delete configmaps -n "$NS"
can topology-server get configmaps -n "$NS"
cannot topology-server update configmaps -n "$NS"
can nvidia-device-plugin patch pods -n default
cannot nvidia-device-plugin create pods -n default
can kwok-dra-plugin create resourceslices.resource.k8s.io
cannot kwok-dra-plugin delete nodes
can computedomain-controller patch computedomains.resource.nvidia.com/status -n default
can computedomain-controller create resourceclaimtemplates.resource.k8s.io -n default
can computedomain-controller watch resourceclaims.resource.k8s.io --all-namespaces
cannot computedomain-controller delete computedomains.resource.nvidia.com -n default
cannot computedomain-controller create resourceslices.resource.k8s.io
can kwok-compute-domain-dra-plugin create resourceslices.resource.k8s.io
cannot kwok-compute-domain-dra-plugin get resourceclaims.resource.k8s.io -n default
cannot default list configmaps -n "$NS"

echo "== second release (mixed mode) in $NS2"
if "$HELM" install mixed "$ROOT/helm/fake-gpu-operator" -n "$NS2" --create-namespace --wait --timeout 180s \
  -f "$ROOT/tests/helm/values/mixed-mode.yaml" >/dev/null; then ok "second release installs next to the first"; else bad "second release"; fi
"$KUBECTL" -n "$NS2" get ds device-plugin >/dev/null 2>&1 && bad "mixed mode rendered device-plugin" || ok "mixed mode: no device-plugin"
"$KUBECTL" -n "$NS2" get deploy status-updater -o jsonpath='{.spec.template.spec.containers[0].env[?(@.name=="TOPOLOGY_CM_NAMESPACE")].value}' | grep -qx "$NS2" \
  && ok "mixed mode: topology namespace is its own" || bad "mixed mode topology namespace"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
