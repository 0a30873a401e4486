"""A C program compiled with -Werror against NVIDIA's cuda.h (nvidia-cuda-dev 11.8): every
discovery call against the profile and against NVML, the error cases, fork, visibility."""
import pytest

import cudafix
from cudafix import MIB, NODES, env_for, nvml_view, probe_devices, profile, run


@pytest.mark.parametrize("name,n", NODES)
def test_discovery_matches_profile_and_nvml(name, n):
    env = env_for(name, n)
    out, devices = probe_devices(env)
    assert "FAIL" not in out, out
    assert out.splitlines()[0] == f"driver {profile(name)['cuda_driver_version']} count {n}"
    p = profile(name)
    nvml = nvml_view(env)
    assert len(devices) == len(nvml) == n
    for d, g in zip(devices, nvml):
        assert d["name"] == p["product_name"] == g["name"]
        assert d["uuid"] == g["uuid"]
        # CUDA prints the 4-digit domain, NVML the 8-digit one.
        assert g["bus"].lower().endswith(d["bus"]) and len(d["bus"]) == 12
        assert d["cc"] == f"{p['compute_capability']['major']}.{p['compute_capability']['minor']}"
        assert int(d["sms"]) == p["multiprocessor_count"]
        assert int(d["total"]) == p["memory"]["total_mib"] * MIB == g["total"]
        assert int(d["clock_khz"]) == p["clocks"]["max"]["sm_mhz"] * 1000
        assert int(d["mem_clock_khz"]) == p["clocks"]["max"]["memory_mhz"] * 1000
        assert int(d["bus_width"]) == p["memory"]["bus_width_bits"]
        assert int(d["l2"]) == p["cuda"]["l2_cache_bytes"]
        assert int(d["ecc"]) == int(p["ecc_enabled"])
        assert (d["managed"], d["unified"], d["max_threads"]) == ("1", "1", "1024")
    assert len({d["uuid"] for d in devices}) == n


def test_error_cases():
    p = run([cudafix.PROBE, "errors"], env_for("h100", 2), check=False)
    assert p.returncode == 0, p.stdout + p.stderr


def test_fork_after_init_is_not_initialized_in_the_child():
    p = run([cudafix.PROBE, "fork"], env_for("h100", 2), check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "parent still sees 2 devices" in p.stdout


def test_kernel_launch_says_why_once():
    p = run([cudafix.PROBE, "discover"], env_for("l4", 1))
    lines = [line for line in p.stderr.splitlines() if "kernels do not run on simulated GPUs" in line]
    assert len(lines) == 1, p.stderr


def test_visible_devices_container_then_cuda():
    env = env_for("h100", 8)
    hosts = nvml_view(env)
    # The container shows host GPUs 5, 2 and 7 (by UUID and index); CUDA then picks 2 and 0 of those.
    nvidia = f"{hosts[5]['uuid']},2,7"
    _, devices = probe_devices(env_for("h100", 8, NVIDIA_VISIBLE_DEVICES=nvidia, CUDA_VISIBLE_DEVICES="2,0"))
    assert [d["uuid"] for d in devices] == [hosts[7]["uuid"], hosts[5]["uuid"]]
    assert [d["ordinal"] for d in devices] == [0, 1]
    # A UUID prefix works; the list ends at the first entry that names nothing, as in CUDA.
    _, devices = probe_devices(env_for("h100", 8, CUDA_VISIBLE_DEVICES=f"{hosts[3]['uuid'][:12]},99,1"))
    assert [d["uuid"] for d in devices] == [hosts[3]["uuid"]]
    out, devices = probe_devices(env_for("h100", 8, CUDA_VISIBLE_DEVICES=""))
    assert devices == [] and "count 0" in out
    # A MIG UUID in NVIDIA_VISIBLE_DEVICES brings its parent GPU (listed as that GPU).
    _, devices = probe_devices(env_for("h100", 8, NVIDIA_VISIBLE_DEVICES="none"))
    assert devices == []


def test_fakegpu_exec_puts_both_libraries_in_front():
    code = (
        "import ctypes\n"
        "n = ctypes.c_int(-1)\n"
        "cuda = ctypes.CDLL('libcuda.so.1')\n"
        "assert cuda.cuInit(0) == 0 and cuda.cuDeviceGetCount(ctypes.byref(n)) == 0\n"
        "nvml = ctypes.CDLL('libnvidia-ml.so.1')\n"
        "m = ctypes.c_uint(0)\n"
        "assert nvml.nvmlInit_v2() == 0 and nvml.nvmlDeviceGetCount_v2(ctypes.byref(m)) == 0\n"
        "print(n.value, m.value)\n"
    )
    env = {k: v for k, v in env_for("a100-40gb", 4).items() if k not in ("LD_LIBRARY_PATH", "FAKEGPU_PROFILE", "FAKEGPU_GPUS")}
    for flags in ([], ["--preload"]):
        p = run([cudafix.FAKEGPU, "exec", "--profile", "a100-40gb", "--gpus", "3", *flags, "--", cudafix.PYTHON, "-c", code], env)
        assert p.stdout.split() == ["3", "3"], p.stdout + p.stderr


def test_bad_config_fails_cuinit_with_a_line_naming_the_problem():
    p = run([cudafix.PROBE, "discover"], env_for("h900", 1), check=False)
    assert p.returncode != 0
    assert "cuInit failed" in p.stderr and "h900" in p.stderr, p.stderr
