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
NS3="fgo-upgrade-$$"
TMP="$(mktemp -d)"
pass=0 fail=0
ok() { pass=$((pass + 1)); echo "ok   $*"; }
bad() { fail=$((fail + 1)); echo "FAIL $*"; }
cleanup() {
  "$HELM" uninstall fgo -n "$NS" --wait >/dev/null 2>&1 || true
  "$HELM" uninstall mixed -n "$NS2" --wait >/dev/null 2>&1 || true
  "$HELM" uninstall up -n "$NS3" --wait >/dev/null 2>&1 || true
  "$KUBECTL" delete ns "$NS" "$NS2" "$NS3" --wait=false >/dev/null 2>&1 || true
  rm -rf "$TMP"
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
[ "$("$KUBECTL" -n "$NS" get deploy gpu-operator -o jsonpath='{.spec.replicas}' 2>/dev/null)" = 0 ] && ok "placeholder Deployment gpu-operator" || bad "placeholder gpu-operator"
"$KUBECTL" -n "$NS" get cm gpu-profile-a100 -o jsonpath='{.data.profile\.yaml}' | grep -q 'NVIDIA A100-SXM4-40GB' && ok "built-in profile ConfigMap gpu-profile-a100" || bad "gpu-profile-a100"
notes="$("$HELM" get notes fgo -n "$NS")"
grep -q 'pod-security.kubernetes.io/enforce=privileged' <<<"$notes" && ok "NOTES: Pod Security guidance" || bad "NOTES without Pod Security guidance"
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
can status-updater patch nodes --subresource=status
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

echo "== upgrade from an upstream-format release in $NS3"
# The baseline stands for an upstream release: the chart with upstream's values.yaml as its defaults
# (what `--reuse-values` later reuses), installed with upstream-format legacy values (device
# plugin, status-updater and topology server only), as upstream's upgrade suite does.
cp -rL "$ROOT/helm/fake-gpu-operator" "$TMP/baseline"
cp "$ROOT/tests/helm/upstream/values.yaml" "$TMP/baseline/values.yaml"
LEGACY="$ROOT/tests/helm/upstream/legacy-values.yaml"
ready() { # every Deployment available, every DaemonSet's pods ready, the release deployed
  local what=$1 d
  for d in status-updater topology-server; do
    "$KUBECTL" -n "$NS3" rollout status deploy "$d" --timeout 120s >/dev/null 2>&1 && ok "$what: $d available" || bad "$what: $d not available"
  done
  "$KUBECTL" -n "$NS3" rollout status ds device-plugin --timeout 120s >/dev/null 2>&1 && ok "$what: device-plugin DaemonSet ready" || bad "$what: device-plugin DaemonSet"
  local st  # captured first: with pipefail, grep -q closing the pipe early fails the pipeline (SIGPIPE)
  st="$("$HELM" status up -n "$NS3")"
  grep -q 'STATUS: deployed' <<<"$st" && ok "$what: helm status deployed" || bad "$what: helm status not deployed: $st"
  local uid
  uid="$("$KUBECTL" -n "$NS3" get cm topology -o jsonpath='{.metadata.uid}')"
  [ -n "$uid" ] && [ "$uid" = "$UID0" ] && ok "$what: topology ConfigMap kept its UID" || bad "$what: topology UID $uid, was $UID0"
  "$KUBECTL" -n "$NS3" get cm topology -o jsonpath='{.data.topology\.yml}' | grep -q 'gpuProduct: Tesla-K80' && ok "$what: topology.yml kept" || bad "$what: topology.yml"
}
if "$HELM" install up "$TMP/baseline" -n "$NS3" --create-namespace --wait --timeout 180s -f "$LEGACY" >/dev/null; then
  ok "baseline (upstream defaults, legacy values) installs"
else
  bad "baseline install"
fi
UID0="$("$KUBECTL" -n "$NS3" get cm topology -o jsonpath='{.metadata.uid}')"
if "$HELM" upgrade up "$ROOT/helm/fake-gpu-operator" -n "$NS3" --reuse-values --wait --timeout 180s >/dev/null; then
  ok "helm upgrade --reuse-values"
else
  bad "helm upgrade --reuse-values"
fi
ready "--reuse-values"
if "$HELM" upgrade up "$ROOT/helm/fake-gpu-operator" -n "$NS3" -f "$LEGACY" --wait --timeout 180s >/dev/null; then
  ok "helm upgrade with the same -f"
else
  bad "helm upgrade -f"
fi
ready "same -f"
"$KUBECTL" -n "$NS3" get deploy status-updater -o jsonpath='{.spec.template.spec.containers[0].image}' | grep -q '^ghcr.io/fake-gpu-operator/fake-gpu-operator:' \
  && ok "upgraded status-updater runs our image" || bad "status-updater image"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
