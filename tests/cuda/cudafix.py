"""Shared helpers for the CUDA suite: where things are, the profiles (expected values), and
running a program over the fake libraries with a fixed node."""
import json
import os
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CACHE = Path(os.environ.get("FAKEGPU_CACHE", Path.home() / ".cache/fake-gpu-operator"))
LIB_DIR = Path(os.environ.get("FAKEGPU_LIB_DIR", REPO / "target/debug/fakegpu-lib"))
NVIDIA_ROOT = Path(os.environ.get("FAKEGPU_NVIDIA_ROOT", CACHE / "nvidia-535.261.03-1/root"))
CUDA_ROOT = Path(os.environ.get("FAKEGPU_CUDA_ROOT", CACHE / "nvidia-cuda-535.261.03-1/root"))
VENV = Path(os.environ.get("FAKEGPU_VENV_CUDA", CACHE / "venv-cuda"))
PYTHON = VENV / "bin/python"
PROBE = Path(os.environ.get("FAKEGPU_CUDA_PROBE", REPO / "target/debug/cuda-probe"))
NVIDIA_SMI = NVIDIA_ROOT / "usr/lib/nvidia/current/nvidia-smi"
FAKEGPU = Path(os.environ.get("FAKEGPU_BIN", REPO / "target/debug/fakegpu"))
OUR_SMI = Path(os.environ.get("FAKEGPU_OUR_SMI", REPO / "target/debug/nvidia-smi"))
REAL_LIBCUDA = CUDA_ROOT / "usr/lib/x86_64-linux-gnu/nvidia/current/libcuda.so.535.261.03"
MIB = 1024 * 1024
NODE = "cuda-node-1"
# The nodes the issue names: profile and GPU count.
NODES = [("h100", 8), ("a100-40gb", 4), ("l4", 1)]


def profile(name):
    return json.loads((REPO / "profiles" / f"{name}.json").read_text())


def env_for(name, n, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FAKEGPU_", "CUDA_VISIBLE", "NVIDIA_VISIBLE"))}
    env.update(LD_LIBRARY_PATH=str(LIB_DIR), FAKEGPU_PROFILE=name, FAKEGPU_GPUS=str(n), FAKEGPU_NODE=NODE, LC_ALL="C.UTF-8")
    env.update(extra)
    return env


def run(args, env, timeout=120, check=True):
    p = subprocess.run([str(a) for a in args], env=env, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"{args} exited {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    return p


def python(code, env, timeout=300):
    return run([PYTHON, "-c", code], env, timeout=timeout)


NVML_VIEW = """
import json, pynvml
pynvml.nvmlInit()
out = []
for i in range(pynvml.nvmlDeviceGetCount()):
    h = pynvml.nvmlDeviceGetHandleByIndex(i)
    m = pynvml.nvmlDeviceGetMemoryInfo(h)
    out.append(dict(uuid=pynvml.nvmlDeviceGetUUID(h), bus=pynvml.nvmlDeviceGetPciInfo(h).busId,
                    name=pynvml.nvmlDeviceGetName(h), total=m.total, free=m.free, used=m.used))
print(json.dumps(out))
"""


def nvml_view(env):
    """What NVML (the fake libnvidia-ml, through NVIDIA's nvidia-ml-py) says about each GPU."""
    return json.loads(python(NVML_VIEW, env).stdout)


def probe_devices(env):
    """The C probe's `discover` lines as dicts."""
    out = run([PROBE, "discover"], env).stdout
    devices = []
    for line in out.splitlines():
        if line.startswith("device "):
            head, rest = line.split(" name=", 1)
            name, rest = rest.split(" uuid=", 1)
            fields = dict(kv.split("=", 1) for kv in ("uuid=" + rest).split())
            fields["name"] = name
            fields["ordinal"] = int(head.split()[1])
            devices.append(fields)
    return out, devices
