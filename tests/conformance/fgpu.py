"""Shared helpers for the conformance suite: where things are, the built-in profiles as the
JSON files say (the expected values), and running a client against the fake library with
a fixed node configuration."""
import json
import os
import re
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PROFILES_DIR = REPO / "profiles"
MIB = 1024 * 1024

# Set by run.sh; the defaults let a developer rerun pytest by hand after one run.sh.
CACHE = Path(os.environ.get("FAKEGPU_CACHE", Path.home() / ".cache/fake-gpu-operator"))
LIB_DIR = Path(os.environ.get("FAKEGPU_LIB_DIR", REPO / "target/debug/fakegpu-lib"))
NVIDIA_ROOT = Path(os.environ.get("FAKEGPU_NVIDIA_ROOT", CACHE / "nvidia-535.261.03-1/root"))
VENV_CLIENTS = Path(os.environ.get("FAKEGPU_VENV_CLIENTS", CACHE / "venv-clients"))
VENV_PYNVML = Path(os.environ.get("FAKEGPU_VENV_PYNVML", CACHE / "venv-pynvml"))
NVIDIA_SMI = NVIDIA_ROOT / "usr/lib/nvidia/current/nvidia-smi"
NVML_H = NVIDIA_ROOT / "usr/include/nvml.h"
REAL_LIB = NVIDIA_ROOT / "usr/lib/x86_64-linux-gnu/nvidia/current/libnvidia-ml.so.535.261.03"

# NVIDIA's nvidia-smi and library from the deb are the 535 driver's (scripts/fetch-nvidia.sh pins
# it). The driver the fake claims is each profile's own (`driver_version`, `cuda_driver_version`):
# 535 for boards that driver supports, a later one for boards that need it (B200, GB200, GB300)
# and R470 for the K80, so NVIDIA's 535 binary also runs over a library claiming another driver.
BINARY_VERSION = re.search(r"NVIDIA_VERSION=([0-9.]+)-", (REPO / "scripts/fetch-nvidia.sh").read_text()).group(1)

BUILTIN = sorted(p.stem for p in PROFILES_DIR.glob("*.json") if p.stem != "schema")
NODE = "conformance-node-1"


def profile(name):
    return json.loads((PROFILES_DIR / f"{name}.json").read_text())


def driver_version(name):
    """nvmlSystemGetDriverVersion of a node of the profile."""
    return profile(name)["driver_version"]


def cuda_version_int(name):
    """nvmlSystemGetCudaDriverVersion of a node of the profile (12020 = CUDA 12.2)."""
    return profile(name)["cuda_driver_version"]


def cuda_text(name):
    """The CUDA version as nvidia-smi prints it ("12.2")."""
    v = cuda_version_int(name)
    return f"{v // 1000}.{v % 1000 // 10}"


def gpu_count(name):
    """GPUs simulated per profile: the profile's default (at most 8) but at least 2, so that
    cross-device calls and uniqueness are exercised."""
    return max(2, min(8, profile(name)["default_gpu_count"]))


def expected_buses(p, n):
    """(domain, bus) per index from the profile's bus layout where it covers the node, or None
    (a layout captured on a smaller machine is replaced by a server layout; the CLI is the
    oracle then)."""
    layout = [int(b, 16) for b in p["pci"]["bus_ids"]]
    if len(layout) < n:
        return None
    return [(0, layout[i]) for i in range(n)]


def supported_graphics_clocks(name):
    """The supported graphics clocks the profile implies (model/src/board.rs): multiples of the
    board's step truncated to MHz where the maximum is on that grid, else counting down from it."""
    p = profile(name)
    lo, hi = p["clocks"]["idle"]["graphics_mhz"] * 1000, p["clocks"]["max"]["graphics_mhz"] * 1000
    step = (p.get("board", {}).get("graphics_clock_step_khz") or 15000)
    k_hi = (hi + 999) // step
    if k_hi * step // 1000 == hi // 1000:
        return [k * step // 1000 for k in range(k_hi, -(-lo // step) - 1, -1)]
    return [c // 1000 for c in range(hi, lo - 1, -step)]


def env_for(name, n=None, node=NODE, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAKEGPU_") or k in ("FAKEGPU_CACHE",)}
    env.update(LD_LIBRARY_PATH=str(LIB_DIR), FAKEGPU_PROFILE=name, FAKEGPU_GPUS=str(n or gpu_count(name)),
               FAKEGPU_NODE=node, LC_ALL="C.UTF-8", TZ="UTC")
    env.update(extra)
    return env


def run(cmd, env, timeout=120, check=True, cwd=None):
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    if check and r.returncode != 0:
        raise AssertionError(f"{cmd} exited {r.returncode}\nstdout:\n{r.stdout[-4000:]}\nstderr:\n{r.stderr[-4000:]}")
    return r


_cli_cache = {}


def cli_identities(name, n, node=NODE):
    """Expected identities from the project's CLI (`fakegpu show --json`), or None when the CLI
    is not part of the workspace (then the suite checks identities for internal consistency)."""
    key = (name, n, node)
    if key in _cli_cache:
        return _cli_cache[key]
    members = (REPO / "Cargo.toml").read_text()
    result = None
    if re.search(r'"cli"', members) and (REPO / "cli/Cargo.toml").exists():
        built = REPO / "target/debug/fakegpu"  # run.sh builds it; otherwise let cargo build it
        cmd = [str(built)] if built.exists() else ["cargo", "run", "-q", "-p", "fakegpu", "--"]
        r = subprocess.run(cmd + ["show", "--profile", name, "--gpus", str(n), "--node", node, "--json"],
                           cwd=REPO, capture_output=True, text=True, timeout=600)
        if r.returncode == 0:
            found = []

            def walk(x):
                if isinstance(x, dict):
                    if "uuid" in x and isinstance(x["uuid"], str) and x["uuid"].startswith("GPU-"):
                        found.append(x)
                    else:
                        for v in x.values():
                            walk(v)
                elif isinstance(x, list):
                    for v in x:
                        walk(v)

            walk(json.loads(r.stdout))
            if len(found) == n:
                result = found
    _cli_cache[key] = result
    return result
