#!/usr/bin/env python3
"""Template tests of helm/fake-gpu-operator: renders the chart with `helm template` (the real helm
binary) for several values files and namespaces and checks objects, namespaces, RBAC and schema.

Usage: template_test.py HELM_BINARY. Prints one line per check and 'N passed, N failed'."""
import json
import os
import re
import subprocess
import sys

import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CHART = os.path.join(ROOT, "helm", "fake-gpu-operator")
HERE = os.path.dirname(os.path.abspath(__file__))
HELM = sys.argv[1]
passed, failed = 0, 0


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print(f"ok   {name}")
    else:
        failed += 1
        print(f"FAIL {name} {detail}")


def render(ns="gpu-operator", values=(), sets=(), release="fgo", api_versions=()):
    cmd = [HELM, "template", release, CHART, "-n", ns]
    for a in api_versions:
        cmd += ["--api-versions", a]
    for v in values:
        cmd += ["-f", os.path.join(HERE, "values", v)]
    for s in sets:
        cmd += ["--set", s]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {out.stderr}")
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def components():
    """Subcommands of the binary, from the clap enum in operator/src/main.rs (kebab-case)."""
    src = open(os.path.join(ROOT, "operator", "src", "main.rs")).read()
    body = src.split("enum Component", 1)[1].split("\n}", 1)[0]
    names = re.findall(r"^\s{4}([A-Z]\w*)\s*[,(]", body, re.M)
    return {re.sub(r"(?<!^)([A-Z])", r"-\1", n).lower() for n in names}


def by_kind(docs, kind):
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


CLUSTER_SCOPED = {"ClusterRole", "ClusterRoleBinding", "RuntimeClass", "DeviceClass", "CustomResourceDefinition"}


def sa_rules(docs, ns, sa):
    """(namespace or '*', apiGroup, resource, verb) tuples granted to ServiceAccount `sa`."""
    roles = {(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): d for d in docs if d["kind"] in ("Role", "ClusterRole")}
    grants = set()
    for b in docs:
        if b["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        if not any(s["kind"] == "ServiceAccount" and s["name"] == sa and s["namespace"] == ns for s in b["subjects"]):
            continue
        ref = b["roleRef"]
        role = roles[(ref["kind"], b["metadata"].get("namespace") if ref["kind"] == "Role" else None, ref["name"])]
        scope = b["metadata"]["namespace"] if b["kind"] == "RoleBinding" else "*"
        for r in role["rules"]:
            for g in r["apiGroups"]:
                for res in r["resources"]:
                    for v in r["verbs"]:
                        grants.add((scope, g, res, v))
    return grants


def can(grants, ns, group, resource, verb):
    return any(s in ("*", ns) and g in (group, "*") and r in (resource, "*") and v in (verb, "*") for s, g, r, v in grants)


known = components()
check("components parsed from main.rs", {"status-exporter", "status-updater"} <= known, str(known))

# Defaults, in two namespaces: everything namespaced lands in the release namespace.
for ns in ("gpu-operator", "team-gpu-sim"):
    docs = render(ns)
    wrong = [f"{d['kind']}/{d['metadata']['name']}" for d in docs if d["kind"] not in CLUSTER_SCOPED and d["metadata"].get("namespace") != ns]
    check(f"[{ns}] namespaced objects in the release namespace", not wrong, str(wrong))
    text = yaml.safe_dump_all(docs)
    if ns != "gpu-operator":
        leaks = [l for l in text.splitlines() if re.search(r"(namespace|value): gpu-operator$|\.gpu-operator\b", l)]
        check(f"[{ns}] no hard-coded gpu-operator namespace", not leaks, str(leaks))
    for b in docs:
        for s in b.get("subjects", []) if b["kind"].endswith("Binding") else []:
            check(f"[{ns}] {b['kind']}/{b['metadata']['name']} subject namespace", s.get("namespace") == ns, str(s))
    cluster_names = [d["metadata"]["name"] for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    check(f"[{ns}] cluster RBAC names are release-prefixed", all(n.startswith("fgo-fake-gpu-operator-") for n in cluster_names), str(cluster_names))

docs = render()
deploys, dsets, svcs = by_kind(docs, "Deployment"), by_kind(docs, "DaemonSet"), by_kind(docs, "Service")
check("default: upstream workloads", set(deploys) == {"status-updater", "kwok-gpu-device-plugin", "nvidia-dcgm-exporter-kwok", "topology-server", "gpu-operator", "mig-manager"}
      and set(dsets) == {"device-plugin", "nvidia-dcgm-exporter", "nvidia-mig-manager"}, f"{sorted(deploys)} {sorted(dsets)}")
check("default: upstream services", set(svcs) == {"nvidia-dcgm-exporter", "nvidia-dcgm-exporter-kwok", "topology-server"}, str(sorted(svcs)))
check("default: dcgm service port 9400 gpu-metrics + scrape annotation",
      svcs["nvidia-dcgm-exporter"]["spec"]["ports"][0] == {"name": "gpu-metrics", "port": 9400, "targetPort": "http"}
      and svcs["nvidia-dcgm-exporter"]["metadata"]["annotations"]["prometheus.io/scrape"] == "true")
check("default: topology-server service 80 -> 8080", svcs["topology-server"]["spec"]["ports"][0]["port"] == 80)
check("default: RuntimeClass nvidia/runc", by_kind(docs, "RuntimeClass").get("nvidia", {}).get("handler") == "runc")
topo = yaml.safe_load(by_kind(docs, "ConfigMap")["topology"]["data"]["topology.yml"])
check("default: legacy topology", topo["nodePools"]["default"] == {"gpuProduct": "Tesla-K80", "gpuCount": 2, "gpuMemory": 11441}
      and topo["nodePoolLabelKey"] == "run.ai/simulated-gpu-node-pool", str(topo))
sas = set(by_kind(docs, "ServiceAccount"))
placeholder = deploys.pop("gpu-operator")
check("gpuOperator off: placeholder Deployment gpu-operator, no replicas, upstream's selector",
      placeholder["spec"]["replicas"] == 0 and placeholder["spec"]["selector"]["matchLabels"] == {"app": "gpu-operator", "app.kubernetes.io/component": "gpu-operator"}
      and placeholder["spec"]["template"]["spec"]["containers"][0]["args"] == ["version"], str(placeholder["spec"]))
check("gpuOperator on: no placeholder", "gpu-operator" not in by_kind(render(sets=["gpuOperator.enabled=true"]), "Deployment"))
for w in list(deploys.values()) + list(dsets.values()):
    spec = w["spec"]["template"]["spec"]
    c = spec["containers"][0]
    check(f"{w['kind']}/{w['metadata']['name']}: runs a known component", c["args"][0] in known, c["args"][0])
    check(f"{w['kind']}/{w['metadata']['name']}: its ServiceAccount is rendered", spec["serviceAccountName"] in sas, spec["serviceAccountName"])
    check(f"{w['kind']}/{w['metadata']['name']}: image from the chart", c["image"] == "ghcr.io/fake-gpu-operator/fake-gpu-operator:0.1.0", c["image"])
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    check(f"{w['kind']}/{w['metadata']['name']}: topology namespace = release namespace", env.get("TOPOLOGY_CM_NAMESPACE") == "gpu-operator")
    sel = w["spec"]["selector"]["matchLabels"]
    check(f"{w['kind']}/{w['metadata']['name']}: selector matches pod labels", all(w["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in sel.items()))
    privileged = c.get("securityContext", {}).get("privileged", False)
    if privileged:
        # A privileged container as the image's user 65532 has no capabilities (issue 11).
        user = c.get("securityContext", {}).get("runAsUser", spec.get("securityContext", {}).get("runAsUser"))
        check(f"{w['kind']}/{w['metadata']['name']}: privileged container runs as root (runAsUser: 0)", user == 0, str(user))
    if w["metadata"]["name"] not in ("device-plugin",):
        check(f"{w['kind']}/{w['metadata']['name']}: non-root", spec.get("securityContext", {}).get("runAsNonRoot") is True and not privileged)
kwok_exp = deploys["nvidia-dcgm-exporter-kwok"]["spec"]["template"]["spec"]["containers"][0]
check("kwok exporter serves all KWOK nodes", kwok_exp["args"] == ["status-exporter", "--kwok-only"], str(kwok_exp["args"]))
ds_exp = dsets["nvidia-dcgm-exporter"]["spec"]["template"]["spec"]
check("node-local exporter gets NODE_NAME", any(e["name"] == "NODE_NAME" and e["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName" for e in ds_exp["containers"][0]["env"]))
check("node-local exporter nodeSelector", ds_exp["nodeSelector"] == {"nvidia.com/gpu.deploy.dcgm-exporter": "true"})
# Node files: the node-local exporter writes them into the hostPath the plugins read.
def host_mount(spec, c):
    vols = {v["name"]: v for v in spec.get("volumes", [])}
    return {m["mountPath"]: vols[m["name"]].get("hostPath", {}) for m in c.get("volumeMounts", []) if m["name"] in vols}
c_exp = ds_exp["containers"][0]
env_exp = {e["name"]: e.get("value") for e in c_exp["env"]}
check("node-local exporter writes node files", c_exp["args"] == ["status-exporter", "--write-node-files"], str(c_exp["args"]))
check("node-local exporter: hostPath /var/lib/fake-gpu-operator (DirectoryOrCreate)",
      host_mount(ds_exp, c_exp).get("/var/lib/fake-gpu-operator") == {"path": "/var/lib/fake-gpu-operator", "type": "DirectoryOrCreate"}, str(host_mount(ds_exp, c_exp)))
init_exp = ds_exp["initContainers"][0]
check("node-local exporter: node dir handed to its non-root user",
      "chown 65532:65532 /var/lib/fake-gpu-operator/nodes" in init_exp["args"][0] and host_mount(ds_exp, init_exp).get("/var/lib/fake-gpu-operator", {}).get("path") == "/var/lib/fake-gpu-operator")
dp = dsets["device-plugin"]["spec"]["template"]["spec"]
env_dp = {e["name"]: e.get("value") for e in dp["containers"][0]["env"]}
check("node dir: exporter and device plugin agree", env_exp.get("FAKEGPU_NODE_DIR") == env_dp.get("FAKEGPU_NODE_DIR") == "/var/lib/fake-gpu-operator/nodes", f"{env_exp} {env_dp}")
check("node dir: device plugin mounts the same hostPath", host_mount(dp, dp["containers"][0]).get("/var/lib/fake-gpu-operator", {}).get("path") == "/var/lib/fake-gpu-operator")
su_spec = deploys["status-updater"]["spec"]["template"]["spec"]
check("status-updater writes no node files (no emptyDir)", su_spec["containers"][0]["args"] == ["status-updater", "--no-node-files"]
      and not su_spec.get("volumes") and not su_spec["containers"][0].get("volumeMounts"), str(su_spec["containers"][0]["args"]))

# Least privilege per ServiceAccount.
NS = "gpu-operator"
g = {sa: sa_rules(docs, NS, sa) for sa in sas}
everything = set().union(*g.values())
check("no wildcard verbs/resources/groups", not [x for x in everything if "*" in x[1:]], str([x for x in everything if "*" in x[1:]]))
check("nobody reads secrets", not any(can(rules, NS, "", "secrets", v) for rules in g.values() for v in ("get", "list", "watch")))
se = g["status-exporter"]
check("status-exporter: reads topology ConfigMaps", all(can(se, NS, "", "configmaps", v) for v in ("get", "list", "watch")))
check("status-exporter: only that", se == {(NS, "", "configmaps", v) for v in ("get", "list", "watch")}, str(sorted(se)))
check("status-exporter: not in other namespaces", not can(se, "kube-system", "", "configmaps", "get"))
su = g["status-updater"]
check("status-updater: writes ConfigMaps in its namespace only", can(su, NS, "", "configmaps", "create") and not can(su, "default", "", "configmaps", "create"))
check("status-updater: patches nodes, watches pods and claims", all([can(su, NS, "", "nodes", "patch"), can(su, NS, "", "pods", "watch"), can(su, NS, "resource.k8s.io", "resourceclaims", "list")]))
check("status-updater: cannot delete nodes or pods", not can(su, NS, "", "nodes", "delete") and not can(su, NS, "", "pods", "delete"))
check("status-updater: watches PodGroups (pod types)", all(can(su, NS, "scheduling.run.ai", "podgroups", v) for v in ("get", "list", "watch"))
      and not can(su, NS, "scheduling.run.ai", "podgroups", "update"))
check("status-updater: patches pods (reservation annotation) by default", can(su, NS, "", "pods", "patch"))
env_su = {e["name"]: e.get("value") for e in by_kind(docs, "Deployment")["status-updater"]["spec"]["template"]["spec"]["containers"][0]["env"]}
check("status-updater: RESOURCE_RESERVATION_NAMESPACE", env_su.get("RESOURCE_RESERVATION_NAMESPACE") == "runai-reservation", str(env_su))
check("status-updater: sets KWOK capacity with the labels while the kwok plugin runs",
      env_su.get("FAKEGPU_KWOK_CAPACITY") == "true" and can(su, NS, "", "nodes/status", "patch"), str(env_su))
check("status-updater: manages the mock backend's DaemonSets in its namespace only",
      all(can(su, NS, "apps", "daemonsets", v) for v in ("get", "list", "watch", "create", "update", "delete"))
      and not can(su, "default", "apps", "daemonsets", "create"))
su_img = by_kind(docs, "Deployment")["status-updater"]["spec"]["template"]["spec"]["containers"][0]
check("status-updater: the mock agent runs the operator's own image", env_su.get("FAKEGPU_NVML_MOCK_IMAGE") == su_img["image"]
      and env_su.get("IMAGE_PULL_POLICY") == su_img["imagePullPolicy"], str(env_su))
nd = render(sets=["statusUpdater.podPatchRbac.enabled=false", "environment.resourceReservationNamespace=resv"])
su_nopatch = sa_rules(nd, NS, "status-updater")
check("podPatchRbac off: status-updater cannot patch pods", not can(su_nopatch, NS, "", "pods", "patch") and can(su_nopatch, NS, "", "pods", "watch"))
nk = render(sets=["kwokGpuDevicePlugin.enabled=false"])
env_nk = {e["name"]: e.get("value") for e in by_kind(nk, "Deployment")["status-updater"]["spec"]["template"]["spec"]["containers"][0]["env"]}
check("kwok plugin off: the status-updater leaves node capacity alone",
      env_nk.get("FAKEGPU_KWOK_CAPACITY") == "false" and not can(sa_rules(nk, NS, "status-updater"), NS, "", "nodes/status", "patch"), str(env_nk))
env_nd = {e["name"]: e.get("value") for e in by_kind(nd, "Deployment")["status-updater"]["spec"]["template"]["spec"]["containers"][0]["env"]}
check("environment.resourceReservationNamespace reaches the status-updater", env_nd.get("RESOURCE_RESERVATION_NAMESPACE") == "resv", str(env_nd))
kd = g["kwok-gpu-device-plugin"]
check("kwok-gpu-device-plugin: patches node status, not nodes", can(kd, NS, "", "nodes/status", "patch") and not can(kd, NS, "", "nodes", "patch"))
mm = g["mig-manager"]
check("mig-manager: patches nodes, creates Events, reads ConfigMaps, cannot write them",
      can(mm, NS, "", "nodes", "patch") and can(mm, "default", "", "events", "create") and can(mm, NS, "", "configmaps", "watch")
      and not can(mm, NS, "", "configmaps", "update") and not can(mm, NS, "", "nodes/status", "patch"), str(sorted(mm)))
check("topology-server: read-only ConfigMaps", g["topology-server"] == {(NS, "", "configmaps", v) for v in ("get", "list", "watch")})
dp = g["nvidia-device-plugin"]
check("device-plugin: patches pods (grant annotation), cannot create them", can(dp, NS, "", "pods", "patch") and not can(dp, NS, "", "pods", "create"))

# MIG manager: migFaker.enabled turns on the run.ai annotation path; either value renders it.
def mig_env(docs):
    d = by_kind(docs, "Deployment").get("mig-manager")
    return d and {e["name"]: e.get("value") for e in d["spec"]["template"]["spec"]["containers"][0]["env"]}
env_mm = mig_env(render())
check("mig-manager default: run.ai path on (upstream migFaker.enabled=true), built-in configs only",
      env_mm.get("FAKEGPU_MIG_RUNAI") == "true" and "FAKEGPU_MIG_CONFIGS_CM" not in env_mm, str(env_mm))
env_mm = mig_env(render(sets=["migFaker.enabled=false", "migManager.configsConfigMap=default-mig-parted-config"]))
check("mig-manager without migFaker: label path only, custom configs ConfigMap passed",
      env_mm.get("FAKEGPU_MIG_RUNAI") == "false" and env_mm.get("FAKEGPU_MIG_CONFIGS_CM") == "default-mig-parted-config", str(env_mm))
check("mig-manager: off when both are off", mig_env(render(sets=["migFaker.enabled=false", "migManager.enabled=false"])) is None)
check("mig-manager: on for migFaker alone", mig_env(render(sets=["migManager.enabled=false"])) is not None)
# The node side: a DaemonSet on real MIG-capable nodes, same flags, writing the node dir as the
# node-local exporter's non-root user.
def node_mig(docs):
    return by_kind(docs, "DaemonSet").get("nvidia-mig-manager")
nm = node_mig(render(sets=["migManager.configsConfigMap=default-mig-parted-config"]))
nm_spec = nm["spec"]["template"]["spec"]
nm_c = nm_spec["containers"][0]
nm_env = {e["name"]: e.get("value") for e in nm_c["env"]}
check("nvidia-mig-manager: node-mig-manager on nodes labelled nvidia.com/gpu.deploy.mig-manager=true",
      nm_c["args"] == ["node-mig-manager"] and nm_spec["nodeSelector"] == {"nvidia.com/gpu.deploy.mig-manager": "true"}, str(nm_spec["nodeSelector"]))
check("nvidia-mig-manager: its node, the node dir, the same request flags as the Deployment",
      "NODE_NAME" in nm_env and nm_env.get("FAKEGPU_NODE_DIR") == "/var/lib/fake-gpu-operator/nodes"
      and nm_env.get("FAKEGPU_MIG_RUNAI") == "true" and nm_env.get("FAKEGPU_MIG_CONFIGS_CM") == "default-mig-parted-config", str(nm_env))
check("nvidia-mig-manager: non-root, unprivileged, the host dir mounted",
      nm_spec["securityContext"].get("runAsNonRoot") is True and not nm_c["securityContext"].get("privileged")
      and any(v.get("hostPath", {}).get("path") == "/var/lib/fake-gpu-operator" for v in nm_spec["volumes"]), str(nm_c["securityContext"]))
# Nodes of mock pools are NVIDIA's components' (docs/mock-backend.md): our node plugins stay off them.
NOT_MOCK = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
    {"matchExpressions": [{"key": "fake-gpu-operator.run.ai/backend", "operator": "NotIn", "values": ["mock"]}]}]}}}
all_ds = by_kind(render(sets=["draPlugin.enabled=true", "computeDomainDraPlugin.enabled=true"]), "DaemonSet")
off_mock = sorted(n for n, d in all_ds.items() if d["spec"]["template"]["spec"].get("affinity") == NOT_MOCK)
check("device plugin, DRA plugin, compute-domain plugin and node MIG manager avoid mock-pool nodes; the exporter does not",
      len(off_mock) == 4 and "nvidia-dcgm-exporter" not in off_mock and "device-plugin" in off_mock and "nvidia-mig-manager" in off_mock, str(off_mock))
user_aff = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "x", "operator": "Exists"}]}]}}}
dra_ds = [d for n, d in by_kind(render(sets=["draPlugin.enabled=true", "draPlugin.kubeletPlugin.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].key=x",
                                             "draPlugin.kubeletPlugin.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator=Exists"]), "DaemonSet").items() if n.endswith("-kubeletplugin")]
check("draPlugin.kubeletPlugin.affinity, when set, replaces the default", len(dra_ds) == 1 and dra_ds[0]["spec"]["template"]["spec"]["affinity"] == user_aff)
check("nvidia-mig-manager: off with the Deployment", node_mig(render(sets=["migFaker.enabled=false", "migManager.enabled=false"])) is None)

# Toggles.
docs = render(values=["mixed-mode.yaml"], ns="fgo-mixed")
names = {(d["kind"], d["metadata"]["name"]) for d in docs}
check("mixed mode: no device-plugin, dcgm exporter, RuntimeClass",
      not ({("DaemonSet", "device-plugin"), ("DaemonSet", "nvidia-dcgm-exporter"), ("RuntimeClass", "nvidia")} & names), str(sorted(names)))
check("mixed mode: KWOK capacity and status-updater still there", {("Deployment", "kwok-gpu-device-plugin"), ("Deployment", "status-updater")} <= names)

docs = render(values=["upstream-e2e.yaml"])
names = {(d["kind"], d["metadata"]["name"]) for d in docs}
check("e2e values: DRA plugin, kwok-dra, DeviceClass", {("DaemonSet", "fgo-fake-gpu-operator-kubeletplugin"), ("Deployment", "kwok-dra-plugin"), ("DeviceClass", "gpu.nvidia.com")} <= names, str(sorted(names)))
check("e2e values: no kwok-gpu-device-plugin", ("Deployment", "kwok-gpu-device-plugin") not in names)
dra_c = by_kind(docs, "DaemonSet")["fgo-fake-gpu-operator-kubeletplugin"]["spec"]["template"]["spec"]["containers"][0]
check("node dir: the DRA plugin reads where the node-local exporter writes",
      {e["name"]: e.get("value") for e in dra_c["env"]}.get("FAKEGPU_NODE_DIR") == "/var/lib/fake-gpu-operator/nodes")
env_dra = {e["name"]: e.get("value") for e in dra_c["env"]}
check("dra-plugin: gRPC health on healthcheckPort, liveness probe grpc{port, service: liveness}",
      env_dra.get("HEALTHCHECK_PORT") == "51515" and dra_c["livenessProbe"]["grpc"] == {"port": 51515, "service": "liveness"}
      and dra_c["livenessProbe"]["initialDelaySeconds"] == 30, str(dra_c.get("livenessProbe")))
ge = sa_rules(docs, NS, "fgo-fake-gpu-operator-service-account")
check("dra-plugin: manages ResourceSlices, gets claims", can(ge, NS, "resource.k8s.io", "resourceslices", "create") and can(ge, NS, "resource.k8s.io", "resourceclaims", "get")
      and not can(ge, NS, "resource.k8s.io", "resourceclaims", "update"))
su = sa_rules(docs, NS, "status-updater")
check("runaiIntegration: PrometheusRule rights", can(su, NS, "monitoring.coreos.com", "prometheusrules", "create"))
topo = yaml.safe_load(by_kind(docs, "ConfigMap")["topology"]["data"]["topology.yml"])
check("e2e values: both pools (Helm merges the default pool in, as upstream)", {"default", "highend"} <= set(topo["nodePools"]), str(topo["nodePools"].keys()))

# Compute Domains: the seed's values render the controller, both plugins and the DeviceClasses.
docs = render(values=["upstream-e2e.yaml"], sets=["computeDomainController.enabled=true", "kwokComputeDomainDraPlugin.channels=64"])
names = {(d["kind"], d["metadata"]["name"]) for d in docs}
check("compute domains: controller, KWOK plugin, node plugin, DeviceClasses",
      {("Deployment", "computedomain-controller"), ("Deployment", "kwok-compute-domain-dra-plugin"),
       ("DaemonSet", "fgo-fake-gpu-operator-compute-domain-kubeletplugin"), ("DeviceClass", "compute-domain-default-channel.nvidia.com"),
       ("DeviceClass", "compute-domain-daemon.nvidia.com")} <= names, str(sorted(names)))
cd_deploys, cd_dsets = by_kind(docs, "Deployment"), by_kind(docs, "DaemonSet")

# DRA objects in the highest resource.k8s.io version the API server serves: what a live install
# sees as "<group>/<version>/DeviceClass"; offline (helm's built-in versions only) v1.
DRA_CLASSES = {"gpu.nvidia.com", "mig.nvidia.com", "compute-domain-default-channel.nvidia.com", "compute-domain-daemon.nvidia.com"}
for served, want in [((), "v1"), (("v1", "v1beta2", "v1beta1"), "v1"), (("v1beta2", "v1beta1"), "v1beta2"), (("v1beta1",), "v1beta1")]:
    vdocs = render(values=["upstream-e2e.yaml"], sets=["computeDomainController.enabled=true"],
                   api_versions=[f"resource.k8s.io/{v}/DeviceClass" for v in served])
    vclasses = by_kind(vdocs, "DeviceClass")
    versions = {d["apiVersion"] for d in vclasses.values()}
    check(f"DeviceClasses in resource.k8s.io/{want} when the server serves {served or 'only what helm knows'}",
          set(vclasses) == DRA_CLASSES and versions == {f"resource.k8s.io/{want}"}, f"{sorted(vclasses)} {versions}")
    # The selectors are the same in every version (DeviceClassSpec has one shape in v1beta1, v1beta2 and v1).
    check(f"DeviceClass selector unchanged in {want}",
          vclasses["gpu.nvidia.com"]["spec"]["selectors"][0]["cel"]["expression"]
          == "device.driver == 'gpu.nvidia.com' && device.attributes['gpu.nvidia.com'].type == 'gpu'")
for name, arg in [("computedomain-controller", "compute-domain-controller"), ("kwok-compute-domain-dra-plugin", "kwok-compute-domain-dra-plugin")]:
    spec = cd_deploys[name]["spec"]["template"]["spec"]
    check(f"{name}: runs {arg}, non-root", spec["containers"][0]["args"] == [arg] and spec["securityContext"]["runAsNonRoot"] is True)
cd_ds = cd_dsets["fgo-fake-gpu-operator-compute-domain-kubeletplugin"]["spec"]["template"]["spec"]
check("compute-domain node plugin: nodeSelector, not privileged, kubelet dirs",
      cd_ds["nodeSelector"] == {"nvidia.com/gpu.deploy.compute-domain-dra-plugin": "true"}
      and not cd_ds["containers"][0]["securityContext"].get("privileged")
      and {"/var/lib/kubelet/plugins_registry", "/var/lib/kubelet/plugins", "/var/run/cdi"} <= set(host_mount(cd_ds, cd_ds["containers"][0])), str(cd_ds))
cd_c = cd_ds["containers"][0]
check("compute-domain node plugin: gRPC health on healthcheckPort with a liveness probe",
      {e["name"]: e.get("value") for e in cd_c["env"]}.get("HEALTHCHECK_PORT") == "8082"
      and cd_c["livenessProbe"]["grpc"] == {"port": 8082, "service": "liveness"}, str(cd_c.get("livenessProbe")))
kenv = {e["name"]: e.get("value") for e in cd_deploys["kwok-compute-domain-dra-plugin"]["spec"]["template"]["spec"]["containers"][0]["env"]}
check("kwokComputeDomainDraPlugin.channels reaches the plugin", kenv.get("IMEX_CHANNELS") == "64", str(kenv))
classes = by_kind(docs, "DeviceClass")
check("channel DeviceClass selects channels of the driver",
      classes["compute-domain-default-channel.nvidia.com"]["spec"]["selectors"][0]["cel"]["expression"]
      == "device.driver == 'compute-domain.nvidia.com' && device.attributes['compute-domain.nvidia.com'].type == 'channel'")
ctl = sa_rules(docs, NS, "computedomain-controller")
check("computedomain-controller: templates and domain status, read claims and nodes",
      all([can(ctl, NS, "resource.k8s.io", "resourceclaimtemplates", "create"), can(ctl, NS, "resource.k8s.io", "resourceclaimtemplates", "delete"),
           can(ctl, NS, "resource.nvidia.com", "computedomains/status", "patch"), can(ctl, NS, "resource.nvidia.com", "computedomains", "patch"),
           can(ctl, NS, "resource.k8s.io", "resourceclaims", "list"), can(ctl, NS, "", "nodes", "list")]), str(sorted(ctl)))
check("computedomain-controller: cannot delete domains, write claims or slices",
      not any([can(ctl, NS, "resource.nvidia.com", "computedomains", "delete"), can(ctl, NS, "resource.k8s.io", "resourceclaims", "update"),
               can(ctl, NS, "resource.k8s.io", "resourceslices", "create"), can(ctl, NS, "", "nodes", "patch")]))
kcd = sa_rules(docs, NS, "kwok-compute-domain-dra-plugin")
check("kwok-compute-domain-dra-plugin: slices, no claims", can(kcd, NS, "resource.k8s.io", "resourceslices", "create") and not can(kcd, NS, "resource.k8s.io", "resourceclaims", "get"))
ncd = sa_rules(docs, NS, "compute-domain-kubeletplugin")
check("compute-domain node plugin: gets claims, cannot list them", can(ncd, NS, "resource.k8s.io", "resourceclaims", "get") and not can(ncd, NS, "resource.k8s.io", "resourceclaims", "list"))
docs = render(values=["upstream-e2e.yaml"], sets=["computeDomainController.enabled=false"])
check("computeDomainController.enabled=false: no controller", "computedomain-controller" not in by_kind(docs, "Deployment"))
check("defaults: no compute-domain objects", not [d for d in render() if "compute" in d["metadata"]["name"]])
crds = [yaml.safe_load(open(os.path.join(CHART, "crds", f))) for f in sorted(os.listdir(os.path.join(CHART, "crds")))]
crd_names = {c["metadata"]["name"]: c for c in crds}
check("crds/: ComputeDomain and ClusterPolicy", set(crd_names) == {"computedomains.resource.nvidia.com", "clusterpolicies.nvidia.com"}, str(set(crd_names)))
cd_spec = crd_names["computedomains.resource.nvidia.com"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
check("ComputeDomain spec immutable, allocationMode enum", cd_spec["x-kubernetes-validations"][0]["rule"] == "self == oldSelf"
      and cd_spec["properties"]["channel"]["properties"]["allocationMode"]["enum"] == ["All", "Single"])
r = subprocess.run([HELM, "template", "fgo", CHART, "--include-crds", "--set", "kwokComputeDomainDraPlugin.enabled=true"], capture_output=True, text=True)
check("helm template --include-crds renders the CRDs", r.returncode == 0 and "kind: CustomResourceDefinition" in r.stdout, r.stderr[-300:])

docs = render(values=["openshift.yaml"])
for sa in ("nvidia-device-plugin", "status-exporter", "fgo-fake-gpu-operator-service-account"):
    check(f"openshift: {sa} may use the privileged SCC", can(sa_rules(docs, NS, sa), NS, "security.openshift.io", "securitycontextconstraints", "use"))
check("openshift off: no SCC rule", not any(can(r, NS, "security.openshift.io", "securitycontextconstraints", "use") for r in g.values()))

docs = render(values=["new-format.yaml"], ns="sim")
cms = by_kind(docs, "ConfigMap")
topo = yaml.safe_load(cms["topology"]["data"]["topology.yml"])
check("cluster: replaces topology", set(topo["nodePools"]) == {"a100", "custom"} and topo["nodePools"]["a100"]["gpu"]["profile"] == "a100-80gb", str(topo))
prof = cms.get("gpu-profile-my-board")
check("customProfiles: gpu-profile-<name> ConfigMap", prof is not None and prof["metadata"]["labels"]["fake-gpu-operator/gpu-profile"] == "true"
      and yaml.safe_load(prof["data"]["profile.yaml"])["device_count"] == 2)
exp = by_kind(docs, "Deployment")["nvidia-dcgm-exporter-kwok"]["spec"]["template"]["spec"]
env = {e["name"]: e.get("value") for e in exp["containers"][0]["env"]}
check("statusExporter.port / inference scale / prometheus.url reach the exporter",
      env["METRICS_LISTEN"] == "0.0.0.0:9500" and env["INFERENCE_FULL_SCALE_RPS"] == "40" and env["PROMETHEUS_URL"] == "http://prometheus.monitoring:9090"
      and env["INFERENCE_REFRESH_SECONDS"] == "5", str(env))
check("image override and pull secrets", exp["containers"][0]["image"] == "registry.example/fgo:v9" and exp["imagePullSecrets"] == [{"name": "regcred"}])

# Built-in profiles: a gpu-profile-<name> ConfigMap per compiled-in profile (and upstream's `a100`),
# whose profile.yaml resolves to that profile: its product name, memory and default GPU count.
PROFILES = {}
for f in sorted(os.listdir(os.path.join(ROOT, "profiles"))):
    p = json.load(open(os.path.join(ROOT, "profiles", f)))
    if "product_name" in p:
        PROFILES[p["name"]] = p
docs = render()
builtin = {n[len("gpu-profile-"):]: cm for n, cm in by_kind(docs, "ConfigMap").items() if n.startswith("gpu-profile-")}
check("builtinProfiles: one ConfigMap per built-in profile", set(PROFILES) <= set(builtin), f"{sorted(builtin)} vs {sorted(PROFILES)}")
check("builtinProfiles: upstream's gpu-profile-a100 (= a100-40gb)", builtin.get("a100", {}).get("metadata", {}).get("labels", {}).get("fake-gpu-operator/builtin-profile") == "a100-40gb")
for name, cm in sorted(builtin.items()):
    src = PROFILES[cm["metadata"]["labels"]["fake-gpu-operator/builtin-profile"]]
    doc = yaml.safe_load(cm["data"]["profile.yaml"])
    check(f"builtinProfiles: gpu-profile-{name} is labelled and matches profiles/{src['name']}.json",
          cm["metadata"]["labels"].get("fake-gpu-operator/gpu-profile") == "true"
          and doc == {"device_defaults": {"name": src["product_name"], "memory": {"total_bytes": src["memory"]["total_mib"] * 1048576}},
                      "device_count": src["default_gpu_count"]}
          and (src["product_name"] == src["name"] or src["product_name"] in src["aliases"]), str(doc))
check("builtinProfiles.enabled=false: none", not [n for n in by_kind(render(sets=["builtinProfiles.enabled=false"]), "ConfigMap") if n.startswith("gpu-profile-")])

# Values an upstream release leaves behind: `--set image=null` and `helm upgrade --reuse-values`
# (Helm then renders with the old release's chart defaults, i.e. upstream's values.yaml, in place
# of ours: a copy of the chart with that values.yaml does the same).
def images(docs):
    out = set()
    for d in docs:
        spec = (d.get("spec") or {}).get("template", {}).get("spec") or {}
        out |= {c["image"] for c in spec.get("containers", []) + spec.get("initContainers", [])}
    return out


OURS = "ghcr.io/fake-gpu-operator/fake-gpu-operator:0.1.0"
for label, docs in [("--set image=null", render(sets=["image=null"])), ("--set image=null,imagePullSecrets=null", render(sets=["image=null", "imagePullSecrets=null"]))]:
    text = yaml.safe_dump_all(docs)
    check(f"{label}: renders our image, no nil", "%!" not in text and "<nil>" not in text and images(docs) == {OURS}, str(images(docs)))
import shutil
import tempfile
with tempfile.TemporaryDirectory() as tmp:
    reuse = os.path.join(tmp, "fake-gpu-operator")
    shutil.copytree(CHART, reuse, symlinks=False)
    shutil.copy(os.path.join(HERE, "upstream", "values.yaml"), os.path.join(reuse, "values.yaml"))
    for label, extra in [("upstream defaults", []), ("upstream defaults + DRA, kwok DRA, runaiIntegration, openshift",
                          ["--set", "draPlugin.enabled=true,kwokDraPlugin.enabled=true,statusUpdater.runaiIntegration.enabled=true,environment.openshift=true"])]:
        out = subprocess.run([HELM, "template", "fgo", reuse, "-n", "gpu-operator", *extra], capture_output=True, text=True)
        ok = out.returncode == 0 and "%!" not in out.stdout and "<nil>" not in out.stdout
        rdocs = [d for d in yaml.safe_load_all(out.stdout) if d] if out.returncode == 0 else []
        check(f"reuse-values from upstream ({label}): renders, no nil", ok, out.stderr[-400:])
        check(f"reuse-values from upstream ({label}): upstream's per-component images replaced by ours", images(rdocs) == {OURS}, str(images(rdocs)))
        check(f"reuse-values from upstream ({label}): the workloads", {"status-updater", "topology-server", "kwok-gpu-device-plugin"} <= set(by_kind(rdocs, "Deployment")))

# OpenShift: no fixed UID in workloads that run under restricted-v2 (the SCC assigns one).
def run_as_users(docs):
    out = {}
    for d in docs:
        if d["kind"] not in ("Deployment", "DaemonSet"):
            continue
        spec = d["spec"]["template"]["spec"]
        uids = [spec.get("securityContext", {}).get("runAsUser")] + [c.get("securityContext", {}).get("runAsUser") for c in spec["containers"]]
        out[d["metadata"]["name"]] = [u for u in uids if u is not None]
    return out


HOST_ACCESS = {"device-plugin", "nvidia-dcgm-exporter", "fgo-fake-gpu-operator-kubeletplugin"}  # privileged SCC; device-plugin's context: issue 11
ocp = run_as_users(render(sets=["environment.openshift=true", "draPlugin.enabled=true", "kwokDraPlugin.enabled=true"]))
check("openshift: no runAsUser in the other workloads", all(not u for n, u in ocp.items() if n not in HOST_ACCESS), str(ocp))
plain = run_as_users(render(sets=["draPlugin.enabled=true", "kwokDraPlugin.enabled=true"]))
check("not openshift: non-root UID 65532 pinned", all(u == [65532] for n, u in plain.items() if n not in HOST_ACCESS), str(plain))

# NodeResourceTopology: the status-updater publishes, may write the objects, the CRD comes along.
for key in ("statusExporter", "statusUpdater"):
    docs = render(sets=[f"{key}.nodeResourceTopology.enabled=true"])
    crd = by_kind(docs, "CustomResourceDefinition").get("noderesourcetopologies.topology.node.k8s.io")
    env_su = {e["name"]: e.get("value") for e in by_kind(docs, "Deployment")["status-updater"]["spec"]["template"]["spec"]["containers"][0]["env"]}
    su = sa_rules(docs, NS, "status-updater")
    check(f"{key}.nodeResourceTopology: CRD (v1alpha2 stored, kept), env, RBAC",
          crd is not None and crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
          and [v["name"] for v in crd["spec"]["versions"] if v["storage"]] == ["v1alpha2"]
          and env_su.get("NODE_RESOURCE_TOPOLOGY_ENABLED") == "true"
          and can(su, NS, "topology.node.k8s.io", "noderesourcetopologies", "patch") and can(su, NS, "topology.node.k8s.io", "noderesourcetopologies", "delete"))
docs = render(sets=["statusExporter.nodeResourceTopology.enabled=true", "statusExporter.nodeResourceTopology.installCRD=false"])
check("nodeResourceTopology.installCRD=false: no CRD", not by_kind(docs, "CustomResourceDefinition"))
docs = render()
check("nodeResourceTopology off: no CRD, no env, no rights", not by_kind(docs, "CustomResourceDefinition")
      and not can(sa_rules(docs, NS, "status-updater"), NS, "topology.node.k8s.io", "noderesourcetopologies", "get"))

# podresources: the node-local exporter serves the socket and the sysfs tree (env, host paths
# owned by its UID, the rights to read pods and the node); off, none of it.
def exporter_ds(docs):
    return by_kind(docs, "DaemonSet")["nvidia-dcgm-exporter"]["spec"]["template"]["spec"]


docs = render(sets=["statusExporter.podResources.enabled=true"])
ds = exporter_ds(docs)
env_se = {e["name"]: e.get("value") for e in ds["containers"][0]["env"]}
mounts = {m["name"]: m["mountPath"] for m in ds["containers"][0]["volumeMounts"]}
vols = {v["name"]: v.get("hostPath", {}).get("path") for v in ds["volumes"]}
init = " ".join(ds["initContainers"][0]["args"])
se = sa_rules(docs, NS, "status-exporter")
check("podResources: env, hostPath mounts, init chown, RBAC",
      env_se.get("POD_RESOURCES_ENABLED") == "true"
      and env_se.get("POD_RESOURCES_SOCKET") == "/var/lib/fake-gpu-operator/pod-resources/kubelet.sock"
      and env_se.get("POD_RESOURCES_SYS_ROOT") == "/var/lib/fake-gpu-operator/sys"
      and mounts.get("pod-resources") == vols.get("pod-resources") == "/var/lib/fake-gpu-operator/pod-resources"
      and mounts.get("fake-sys") == vols.get("fake-sys") == "/var/lib/fake-gpu-operator/sys"
      and "chown 65532:65532" in init and "/var/lib/fake-gpu-operator/pod-resources" in init and "/var/lib/fake-gpu-operator/sys" in init
      and can(se, "*", "", "pods", "list") and can(se, "*", "", "nodes", "get"),
      f"{env_se} {mounts} {vols} {init}")
off = render()
ds = exporter_ds(off)
check("podResources off: no env, mounts or pod rights",
      not any(e["name"].startswith("POD_RESOURCES") for e in ds["containers"][0]["env"])
      and "pod-resources" not in {v["name"] for v in ds["volumes"]}
      and not can(sa_rules(off, NS, "status-exporter"), "*", "", "pods", "list"))

a = render()
b = render(sets=["topology.nodePools.default.gpuCount=4"])
ck = lambda docs: by_kind(docs, "Deployment")["status-updater"]["spec"]["template"]["metadata"]["annotations"]["checksum/topology"]
check("checksum/topology follows the topology", ck(a) != ck(b) and ck(a) == ck(render()))

# Schema: typos fail, upstream keys pass.
for bad in sorted(os.listdir(os.path.join(HERE, "bad-values"))):
    r = subprocess.run([HELM, "template", "x", CHART, "-f", os.path.join(HERE, "bad-values", bad)], capture_output=True, text=True)
    check(f"schema rejects bad-values/{bad}", r.returncode != 0 and ("not allowed" in r.stderr or "got string, want boolean" in r.stderr or "does not match pattern" in r.stderr), r.stderr[-300:])
for s in ["statusExporter.kwok.prometheusRule.enabled=false", "statusExporter.topologyMaxExportInterval=30s", "migFaker.enabled=false",
          "nvmlMock.image.tag=x", "computeDomainDraPlugin.healthcheckPort=9", "computeDomainController.enabled=true", "gpu-operator.driver.enabled=false", "topologyServer.enabled=true",
          "statusExporter.nodeResourceTopology.installCRD=false", "environment.fakeCSVVersion=1.2.3", "builtinProfiles.enabled=false",
          "statusUpdater.nodeResourceTopology.enabled=true"]:
    try:
        render(sets=[s])
        check(f"upstream key accepted: {s}", True)
    except RuntimeError as e:
        check(f"upstream key accepted: {s}", False, str(e)[-300:])
schema = json.load(open(os.path.join(CHART, "values.schema.json")))


def strict(node, path="$"):
    bad = []
    if isinstance(node, dict):
        if node.get("type") == "object" and "properties" in node and node.get("additionalProperties") is not False:
            bad.append(path)
        for k, v in node.items():
            bad += strict(v, f"{path}.{k}")
    return bad


check("schema: additionalProperties false wherever properties are defined", not strict(schema), str(strict(schema)))
defaults = yaml.safe_load(open(os.path.join(CHART, "values.yaml")))
check("values.yaml keys are all in the schema", set(defaults) <= set(schema["properties"]), str(set(defaults) - set(schema["properties"])))



def container_args_parse(binary):
    """Every container of our image, rendered with each values file, runs a command line the built
    binary accepts: `fake-gpu-operator <args> --help` with the container's literal env exits 0
    (clap rejects unknown subcommands and flags before it prints help)."""
    seen = set()
    for values in [()] + [(v,) for v in sorted(os.listdir(os.path.join(HERE, "values")))]:
        for d in render(values=values):
            spec = (d.get("spec") or {}).get("template", {}).get("spec") or {}
            for c in spec.get("containers", []) + spec.get("initContainers", []):
                args = c.get("args") or []
                if not args or args[0] not in components():
                    continue
                env = {e["name"]: str(e["value"]) for e in c.get("env", []) if "value" in e}
                key = (tuple(args), tuple(sorted(env.items())))
                if key in seen:
                    continue
                seen.add(key)
                r = subprocess.run([binary, *args, "--help"], env={"PATH": os.environ.get("PATH", ""), **env}, capture_output=True, text=True)
                check(f"binary accepts {d['metadata']['name']}/{c['name']} args {' '.join(args)} ({'+'.join(values) or 'defaults'})",
                      r.returncode == 0, r.stderr[-300:])
    check("some container command lines were checked against the binary", len(seen) > 0)


BINARY = os.environ.get("FGO_BINARY") or os.path.join(ROOT, "target", "debug", "fake-gpu-operator")
if os.access(BINARY, os.X_OK):
    container_args_parse(BINARY)
elif os.environ.get("CI") == "true":
    check(f"operator binary for the args check exists ({BINARY})", False)
else:
    print(f"note: {BINARY} not built; container command lines not checked against it")

print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
