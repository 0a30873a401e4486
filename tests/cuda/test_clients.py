"""Real driver-API clients from PyPI over the fake libcuda (and NVML): numba-cuda, NVIDIA's
cuda-bindings and Ray, on the nodes the issue names."""
import json
import shutil
import tempfile

import pytest

from cudafix import MIB, NODES, env_for, nvml_view, profile, python


@pytest.mark.parametrize("name,n", NODES)
def test_numba_cuda_detect_and_gpus(name, n):
    env = env_for(name, n)
    code = """
import json
from numba import cuda
ok = cuda.detect()
gpus = [dict(name=g.name.decode() if isinstance(g.name, bytes) else g.name, cc=list(g.compute_capability), uuid=g.uuid)
        for g in cuda.gpus]
print("JSON" + json.dumps(dict(ok=bool(ok), gpus=gpus)))
"""
    out = python(code, env).stdout
    p = profile(name)
    cc = f"{p['compute_capability']['major']}.{p['compute_capability']['minor']}"
    assert f"Found {n} CUDA devices" in out
    assert out.count(p["product_name"]) >= n and out.count(f"Compute Capability: {cc}") == n
    assert f"{n}/{n} devices are supported" in out
    result = json.loads(out.split("JSON", 1)[1])
    nvml = nvml_view(env)
    assert result["ok"]
    assert [g["uuid"] for g in result["gpus"]] == [g["uuid"] for g in nvml]
    assert all(g["name"] == p["product_name"] and g["cc"] == [p["compute_capability"]["major"], p["compute_capability"]["minor"]]
               for g in result["gpus"])
    for g in nvml:
        assert g["uuid"] in out


CUDA_BINDINGS = """
import json
from cuda.bindings import driver as cu

def ok(result):
    err, *rest = result
    assert err == cu.CUresult.CUDA_SUCCESS, err
    return rest[0] if len(rest) == 1 else rest

ok(cu.cuInit(0))
out = dict(version=ok(cu.cuDriverGetVersion()), devices=[])
for i in range(ok(cu.cuDeviceGetCount())):
    dev = ok(cu.cuDeviceGet(i))
    uuid = bytes(ok(cu.cuDeviceGetUuid(dev)).bytes).hex()
    out["devices"].append(dict(
        name=ok(cu.cuDeviceGetName(256, dev)).split(b"\\0")[0].decode(),
        uuid="GPU-%s-%s-%s-%s-%s" % (uuid[:8], uuid[8:12], uuid[12:16], uuid[16:20], uuid[20:]),
        total=ok(cu.cuDeviceTotalMem(dev)),
        bus=ok(cu.cuDeviceGetPCIBusId(32, dev)).split(b"\\0")[0].decode(),
        major=ok(cu.cuDeviceGetAttribute(cu.CUdevice_attribute.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev)),
        sms=ok(cu.cuDeviceGetAttribute(cu.CUdevice_attribute.CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, dev)),
    ))
ctx = ok(cu.cuDevicePrimaryCtxRetain(ok(cu.cuDeviceGet(0))))
ok(cu.cuCtxSetCurrent(ctx))
free0, total = ok(cu.cuMemGetInfo())
n = 64 << 20
data = bytes(range(256)) * (n // 256)
dptr = ok(cu.cuMemAlloc(n))
free1, _ = ok(cu.cuMemGetInfo())
ok(cu.cuMemcpyHtoD(dptr, data, n))
back = bytearray(n)
ok(cu.cuMemcpyDtoH(back, dptr, n))
import pynvml
pynvml.nvmlInit()
m = pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(0))
out.update(free0=free0, free1=free1, total=total, roundtrip=bytes(back) == data, nvml_free=m.free, nvml_total=m.total)
err, = cu.cuMemAlloc(total)[:1]
out["oom"] = err.name
ok(cu.cuMemFree(dptr))
ok(cu.cuDevicePrimaryCtxRelease(ok(cu.cuDeviceGet(0))))
print("JSON" + json.dumps(out))
"""


@pytest.mark.parametrize("name,n", NODES)
def test_cuda_bindings_discovery_context_and_memory(name, n, tmp_path):
    env = env_for(name, n, FAKEGPU_STATE=str(tmp_path / "state.json"))
    out = json.loads(python(CUDA_BINDINGS, env).stdout.split("JSON", 1)[1])
    p = profile(name)
    nvml = nvml_view(env)
    assert out["version"] == p["cuda_driver_version"]
    assert [d["uuid"] for d in out["devices"]] == [g["uuid"] for g in nvml]
    assert all(d["name"] == p["product_name"] and d["total"] == p["memory"]["total_mib"] * MIB for d in out["devices"])
    assert all(g["bus"].lower().endswith(d["bus"]) for d, g in zip(out["devices"], nvml))
    assert all(d["major"] == p["compute_capability"]["major"] and d["sms"] == p["multiprocessor_count"] for d in out["devices"])
    assert out["roundtrip"]
    assert out["free0"] - out["free1"] == 64 * MIB
    # cuMemGetInfo agrees with NVML (the 64 MiB held counts on both sides).
    assert (out["free1"], out["total"]) == (out["nvml_free"], out["nvml_total"])
    assert out["oom"] == "CUDA_ERROR_OUT_OF_MEMORY"


@pytest.mark.parametrize("name,n", NODES)
def test_ray_reports_gpus_and_accelerator_type(name, n):
    # Ray's session sockets must fit AF_UNIX's 107 bytes: a short private directory.
    short = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    env = env_for(name, n, RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled", RAY_DISABLE_DOCKER_CPU_WARNING="1")
    code = f"""
import json, ray
ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, _temp_dir={short!r})
print("JSON" + json.dumps(ray.cluster_resources()))
ray.shutdown()
"""
    try:
        resources = json.loads(python(code, env, timeout=300).stdout.split("JSON", 1)[1])
    finally:
        shutil.rmtree(short, ignore_errors=True)
    assert resources.get("GPU") == n
    # Ray names the accelerator from NVML's product name (e.g. "H100", "A100", "L4").
    accel = [k.split(":", 1)[1] for k in resources if k.startswith("accelerator_type:")]
    assert accel == [RAY_ACCELERATOR[name]], resources


RAY_ACCELERATOR = {"h100": "H100", "a100-40gb": "A100", "l4": "L4"}
