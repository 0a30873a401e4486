"""One node state: a process with a live CUDA context is listed by NVIDIA's nvidia-smi 535 (and
ours) with the memory it allocated through cuMemAlloc, the GPU's used memory follows, and the
entry disappears when the process dies, even by kill -9. Allocations past the free memory fail
with CUDA_ERROR_OUT_OF_MEMORY."""
import signal
import subprocess

import pytest

import cudafix
from cudafix import env_for, run


@pytest.fixture
def node(tmp_path):
    return env_for("h100", 8, FAKEGPU_STATE=str(tmp_path / "state.json"))


def start_holder(env, gpu, mib):
    p = subprocess.Popen([str(cudafix.PROBE), "hold", str(gpu), str(mib)], env=env, stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    assert line.startswith("ready "), line
    return p


def compute_apps(smi, env):
    out = run([smi, "--query-compute-apps=gpu_uuid,pid,used_memory", "--format=csv,noheader"], env).stdout
    return [tuple(f.strip() for f in line.split(",")) for line in out.splitlines() if line.strip()]


def used_mib(smi, env, gpu):
    out = run([smi, "-i", str(gpu), "--query-gpu=memory.used", "--format=csv,noheader,nounits"], env).stdout
    return int(out.strip())


@pytest.mark.parametrize("smi", ["nvidia", "ours"])
def test_holder_is_listed_then_swept_after_kill_9(node, smi):
    smi = cudafix.NVIDIA_SMI if smi == "nvidia" else cudafix.OUR_SMI
    uuid1 = run([smi, "-i", "1", "--query-gpu=uuid", "--format=csv,noheader"], node).stdout.strip()
    before = used_mib(smi, node, 1)
    holder = start_holder(node, 1, 3072)
    try:
        assert compute_apps(smi, node) == [(uuid1, str(holder.pid), "3072 MiB")]
        assert used_mib(smi, node, 1) == before + 3072
        table = run([smi], node).stdout
        row = [line for line in table.splitlines() if f" {holder.pid} " in line]
        assert len(row) == 1 and "3072MiB" in row[0] and row[0].split()[1] == "1", table
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert compute_apps(smi, node) == []
    assert used_mib(smi, node, 1) == before
    assert "No running processes found" in run([smi], node).stdout


def test_allocation_beyond_free_memory_is_out_of_memory(node):
    total = cudafix.profile("h100")["memory"]["total_mib"]
    holder = start_holder(node, 1, 40_000)
    try:
        # The second process finds only what the first left.
        p = run([cudafix.PROBE, "hold", "1", str(total - 40_000)], node, check=False, timeout=30)
        assert p.returncode == 1 and "CUDA_ERROR_OUT_OF_MEMORY" in p.stdout, p.stdout
        # Other GPUs are unaffected.
        other = start_holder(node, 2, 40_000)
        other.kill()
        other.wait()
    finally:
        holder.kill()
        holder.wait()


def test_clean_exit_unregisters(node):
    code = """
import ctypes
cuda = ctypes.CDLL("libcuda.so.1")
ctx, ptr = ctypes.c_void_p(), ctypes.c_uint64()
assert cuda.cuInit(0) == 0
assert cuda.cuCtxCreate_v2(ctypes.byref(ctx), 0, 3) == 0
assert cuda.cuMemAlloc_v2(ctypes.byref(ptr), ctypes.c_size_t(512 << 20)) == 0
assert cuda.cuCtxDestroy_v2(ctx) == 0
"""
    run([cudafix.PYTHON, "-c", code], node)
    assert compute_apps(cudafix.NVIDIA_SMI, node) == []
    assert used_mib(cudafix.NVIDIA_SMI, node, 3) == 0
