#!/usr/bin/env python3
"""Runs nvml-list (go-nvml) over the fake NVML for several nodes and compares its output with the
model: `fakegpu show --json` (what the library simulates) and profiles/<name>.json (compute
capability). Usage: check.py NVML_LIST LIB_DIR FAKEGPU. Prints one line per check."""
import json
import os
import re
import subprocess
import sys

BIN, LIB_DIR, FAKEGPU = sys.argv[1:4]
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
failed = 0


def check(name, ok, detail=""):
    global failed
    print(("ok   " if ok else "FAIL ") + name + ("" if ok else f" {detail}"))
    failed += not ok


LINE = re.compile(r'gpu (\d+) name="(.*)" uuid=(\S+) memory_total=(\d+) bus=(\S+) cc=(\d+)\.(\d+)$')
for profile, gpus, node in [("a100-40gb", 2, "go-nvml-a"), ("h100", 8, "go-nvml-b"), ("t4", 1, "go-nvml-c")]:
    env = {"PATH": os.environ.get("PATH", ""), "LD_LIBRARY_PATH": LIB_DIR, "FAKEGPU_PROFILE": profile, "FAKEGPU_GPUS": str(gpus), "FAKEGPU_NODE": node}
    run = subprocess.run([BIN], env=env, capture_output=True, text=True, timeout=60)
    check(f"[{profile}] nvml-list exits 0", run.returncode == 0, run.stderr)
    want = json.loads(subprocess.run([FAKEGPU, "show", "--json", "--profile", profile, "--gpus", str(gpus), "--node", node],
                                     capture_output=True, text=True, check=True).stdout)
    prof = json.load(open(os.path.join(ROOT, "profiles", f"{want['profile']}.json")))
    lines = run.stdout.splitlines()
    cuda = want["cuda_driver_version"]
    check(f"[{profile}] driver and CUDA version", lines[:1] == [f"driver {want['driver_version']} cuda {cuda}"], str(lines[:1]))
    got = [LINE.match(l) for l in lines[1:]]
    check(f"[{profile}] {gpus} GPUs listed", len(got) == gpus and all(got), run.stdout)
    for m, g in zip(got, want["gpus"]):
        if not m:
            continue
        i, name, uuid, mem, bus, major, minor = m.groups()
        check(f"[{profile}] GPU {i}: name, UUID, memory, bus id, compute capability",
              int(i) == g["index"] and name == g["name"] and uuid == g["uuid"] and int(mem) == g["memory_total_mib"] * 1048576
              and g["pci_bus_id"].lower().endswith(bus.lower()[4:]) and (int(major), int(minor)) == (prof["compute_capability"]["major"], prof["compute_capability"]["minor"]),
              f"{m.group(0)} vs {g}")
sys.exit(1 if failed else 0)
