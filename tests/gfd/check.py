#!/usr/bin/env python3
"""Label equality: NVIDIA's gpu-feature-discovery (GFD), run `--oneshot` over the fake NVML with
the node's fake PCI sysfs (`fakegpu sysfs`) bound over /sys/bus/pci/devices in a private mount
namespace, against the status-updater's labels for the same node (the cluster index's view,
operator-core example `node-labels`). Every built-in profile with strategy none; every MIG board
with strategies none/single/mixed over several layouts, the layouts set in the live state file
(`fakegpu state mig`) that the fake NVML reads and handed to the index as the MIG manager's
`fake-gpu-operator.run.ai/mig-layout` annotation.

Equal on every key both write. Keys only one side writes are listed below with the reason (the
same list is in docs/mig.md, "Node labels and NVIDIA GFD"); any other one-sided key fails.

Usage: check.py GFD LIB_DIR FAKEGPU NODE_LABELS [PROFILE ...]   (PROFILE: only those boards)
"""
import glob
import json
import os
import re
import subprocess
import sys
import tempfile

GFD, LIB_DIR, FAKEGPU, NODE_LABELS = sys.argv[1:5]
ONLY = set(sys.argv[5:])
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

# Written by the status-updater only.
OURS_ONLY = {
    "run.ai/fake.gpu": "upstream fake-gpu-operator's marker of simulated nodes",
    "nvidia.com/gpu.deploy.dcgm-exporter": "GPU Operator's deploy label (the operator, not GFD, writes it)",
    "nvidia.com/gpu.deploy.device-plugin": "GPU Operator's deploy label",
    "nvidia.com/gpu.deploy.dra-plugin-gpu": "GPU Operator's deploy label",
    "nvidia.com/gpu.deploy.compute-domain-dra-plugin": "GPU Operator's deploy label",
    "nvidia.com/gpu.deploy.mig-manager": "GPU Operator's deploy label (real MIG-capable nodes)",
    "nvidia.com/gpu.present": "written by the GPU Operator's NFD rule on real clusters, not by GFD",
}
# Written by GFD only.
GFD_ONLY = {
    "nvidia.com/gfd.timestamp": "GFD's run time (the test passes --no-timestamp; listed in case)",
}

failed = 0
checks = 0


def check(name, ok, detail=""):
    global failed, checks
    checks += 1
    print(("ok   " if ok else "FAIL ") + name + ("" if ok else f"\n     {detail}"))
    failed += not ok


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)


def node_env(profile, gpus, node, state):
    return {"PATH": os.environ.get("PATH", ""), "LD_LIBRARY_PATH": LIB_DIR, "FAKEGPU_PROFILE": profile,
            "FAKEGPU_GPUS": str(gpus), "FAKEGPU_NODE": node, "FAKEGPU_STATE": state}


def gfd_labels(tmp, env, strategy):
    """GFD's labels for the node `env` selects, or raises with its log."""
    sysfs = os.path.join(tmp, "sys")
    r = run([FAKEGPU, "sysfs", "--out", sysfs, "--profile", env["FAKEGPU_PROFILE"], "--gpus", env["FAKEGPU_GPUS"],
             "--node", env["FAKEGPU_NODE"]])
    if r.returncode != 0:
        raise RuntimeError(f"fakegpu sysfs: {r.stderr}")
    out = os.path.join(tmp, "gfd-labels")
    script = ('mount --bind "$1/bus/pci/devices" /sys/bus/pci/devices && exec "$2" --oneshot --no-timestamp '
              '--fail-on-init-error --device-discovery-strategy=nvml --mig-strategy="$3" --output-file="$4" '
              '--machine-type-file="$1/class/dmi/id/product_name"')
    r = run(["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, "sh", sysfs, GFD, strategy, out], env=env)
    if r.returncode != 0 or not os.path.exists(out):
        raise RuntimeError(f"gpu-feature-discovery exited {r.returncode}:\n{r.stderr[-3000:]}")
    labels = {}
    for line in open(out).read().splitlines():
        if line.strip():
            k, _, v = line.partition("=")
            labels[k] = v
    return labels


def our_labels(profile, gpus, node, strategy, layout):
    cmd = [NODE_LABELS, "--profile", profile, "--gpus", str(gpus), "--node", node, "--mig-strategy", strategy]
    if layout:
        cmd += ["--mig-layout", json.dumps(layout)]
    r = run(cmd)
    if r.returncode != 0:
        raise RuntimeError(f"node-labels: {r.stderr}")
    return json.loads(r.stdout)


def compare(name, gfd, ours):
    both = sorted(set(gfd) & set(ours))
    diff = [f"{k}: GFD {gfd[k]!r}, ours {ours[k]!r}" for k in both if gfd[k] != ours[k]]
    check(f"{name}: {len(both)} labels both write are equal", not diff, "\n     ".join(diff))
    only_gfd = sorted(k for k in set(gfd) - set(ours) if k not in GFD_ONLY)
    only_ours = sorted(k for k in set(ours) - set(gfd) if k not in OURS_ONLY)
    check(f"{name}: no unlisted key on one side only", not only_gfd and not only_ours,
          f"GFD only: {[f'{k}={gfd[k]}' for k in only_gfd]}; ours only: {[f'{k}={ours[k]}' for k in only_ours]}")


def applied_layouts(state_path):
    """The state file's MIG layouts as the MIG manager's annotation holds them (GPUs whose
    layout is not the default one)."""
    if not os.path.exists(state_path):
        return {}
    state = json.load(open(state_path))
    default = {"current": False, "pending": False, "gpu_instances": []}
    return {i: g["mig"] for i, g in state.get("gpus", {}).items() if g.get("mig", default) != default}


def one_slice_config(names):
    """`all-<smallest 1-slice profile>` among the board's built-in configurations."""
    ones = [n for n in names if re.fullmatch(r"all-1g\.\d+gb", n)]
    return min(ones, key=lambda n: int(re.search(r"(\d+)gb", n).group(1)))


def case(tmp_root, profile, gpus, strategy, config=None, custom=None):
    name = f"[{profile} x{gpus} {strategy} {config or 'no MIG state'}]"
    tmp = tempfile.mkdtemp(dir=tmp_root)
    state = os.path.join(tmp, "state.json")
    node = "gfd-" + profile
    env = node_env(profile, gpus, node, state)
    try:
        if config:
            cmd = [FAKEGPU, "state", "mig", "--profile", profile, "--gpus", str(gpus), "--node", node, "--state", state,
                   "--mig-config", config]
            if custom:
                path = os.path.join(tmp, "configs.json")
                json.dump(custom, open(path, "w"))
                cmd += ["--mig-configs", path]
            r = run(cmd)
            if r.returncode != 0:
                raise RuntimeError(f"fakegpu state mig: {r.stderr}")
        gfd = gfd_labels(tmp, env, strategy)
        ours = our_labels(profile, gpus, node, strategy, applied_layouts(state))
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        check(name, False, str(e))
        return
    compare(name, gfd, ours)


def main():
    profiles = sorted(os.path.basename(p)[:-5] for p in glob.glob(os.path.join(ROOT, "profiles", "*.json")))
    profiles = [p for p in profiles if p != "schema" and (not ONLY or p in ONLY)]
    with tempfile.TemporaryDirectory(prefix="gfd-check-") as tmp_root:
        for profile in profiles:
            show = json.loads(run([FAKEGPU, "show", "--json", "--profile", profile]).stdout)
            gpus = len(show["gpus"])
            case(tmp_root, profile, gpus, "none")
            if not show["mig_capable"]:
                continue
            one = one_slice_config(show["mig_configs"])
            # GPU 0 whole, the others all 1-slice: MIG on and off on one node.
            half = {"version": "v1", "mig-configs": {"gfd-half": [
                {"devices": [0], "mig-enabled": False},
                {"devices": "all", "mig-enabled": True, "mig-devices": {one[4:]: 7}}]}}
            for strategy in ["none", "single", "mixed"]:
                for config, custom in [("all-disabled", None), (one, None), ("all-balanced", None),
                                       ("all-enabled", None), ("gfd-half", half)]:
                    case(tmp_root, profile, gpus, strategy, config, custom)
    print(f"{checks - failed}/{checks} checks passed")
    sys.exit(1 if failed else 0)


main()
