"""2. gpustat 1.1.1 `--json` against golden files, and 3. nvitop 1.7.2 `--once`.

The goldens (golden/gpustat-<profile>.json) hold gpustat's stable fields for a node named
fgpu.NODE; they are checked twice: the live output must equal them, and they must agree with
the profile JSON, so a golden regenerated from a broken library does not pass.
Regenerate with UPDATE_GOLDEN=1 after an intended change."""
import json
import os
import re
import subprocess

import pytest

import fgpu

STABLE = ["index", "uuid", "name", "temperature.gpu", "fan.speed", "utilization.gpu", "utilization.enc",
          "utilization.dec", "power.draw", "enforced.power.limit", "memory.used", "memory.total"]


def gpustat(name):
    r = fgpu.run([str(fgpu.VENV_CLIENTS / "bin/gpustat"), "--json"], fgpu.env_for(name))
    doc = json.loads(r.stdout)
    assert doc["driver_version"] == fgpu.driver_version(name)
    return [{k: g[k] for k in STABLE} | {"processes": g["processes"]} for g in doc["gpus"]]


@pytest.mark.parametrize("name", fgpu.BUILTIN)
def test_gpustat_json_golden(name):
    live = gpustat(name)
    path = fgpu.HERE / "golden" / f"gpustat-{name}.json"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_text(json.dumps({"node": fgpu.NODE, "profile": name, "gpus": live}, indent=1) + "\n")
    golden = json.loads(path.read_text())
    assert golden["node"] == fgpu.NODE and golden["profile"] == name
    assert live == golden["gpus"]
    # The golden itself against the profile: names, memory, power and temperature of an idle GPU.
    p = fgpu.profile(name)
    assert len(golden["gpus"]) == fgpu.gpu_count(name)
    for i, g in enumerate(golden["gpus"]):
        assert g["index"] == i and g["name"] == p["product_name"]
        assert re.fullmatch(r"GPU-[0-9a-f-]{36}", g["uuid"])
        assert g["memory.total"] == p["memory"]["total_mib"] and g["memory.used"] == 0
        assert g["temperature.gpu"] == p["thermal"]["idle_gpu_c"]
        assert g["fan.speed"] == p["fan_speed_percent"]
        assert g["power.draw"] == p["power"]["idle_draw_mw"] // 1000
        assert g["enforced.power.limit"] == p["power"]["default_limit_mw"] // 1000
        assert g["utilization.gpu"] == 0 and g["processes"] == []
    assert len({g["uuid"] for g in golden["gpus"]}) == len(golden["gpus"])
    expected = fgpu.cli_identities(name, fgpu.gpu_count(name))
    if expected is not None:
        assert [g["uuid"] for g in golden["gpus"]] == [e["uuid"] for e in expected]


@pytest.mark.parametrize("name", fgpu.BUILTIN)
def test_nvitop_once(name):
    p = fgpu.profile(name)
    r = fgpu.run([str(fgpu.VENV_CLIENTS / "bin/nvitop"), "--once"], fgpu.env_for(name, COLUMNS="80"))
    out = r.stdout
    assert "Driver Version: " + fgpu.driver_version(name) in out
    assert "CUDA Driver Version: " + fgpu.cuda_text(name) in out
    rows = [line for line in out.splitlines() if re.match(r"│\s+\d+\s+\S", line)]
    assert len(rows) == fgpu.gpu_count(name), out
    # nvitop shortens long names ("NVIDIA H100 80GB HBM3" → "H100 80GB HBM3"); look for the model part.
    model = p["product_name"].removeprefix("NVIDIA ")
    for row in rows:
        assert model[:12] in row, row
    mib = p["memory"]["total_mib"]
    # nvitop prints big totals in GiB, rounded to the room it has ("40.00GiB", "179.1GiB").
    totals = re.findall(r"/ (\d+(?:\.\d+)?)(MiB|GiB) │", out)
    assert len(totals) == fgpu.gpu_count(name), out
    for value, unit in totals:
        if unit == "MiB":
            assert int(value) == mib
        else:
            decimals = len(value.split(".")[1]) if "." in value else 0
            assert abs(float(value) - mib / 1024) <= 0.5 * 10 ** -decimals, (value, mib)
    temp = f'{p["thermal"]["idle_gpu_c"]}C'
    assert len(re.findall(rf"\b{temp}\b", out)) >= fgpu.gpu_count(name), out
    limit = f'/ {p["power"]["default_limit_mw"] // 1000}W'
    assert out.count(limit) == fgpu.gpu_count(name), out
    assert "No running processes found" in out


def test_nvitop_lists_processes_from_the_live_state(tmp_path):
    """nvitop's process list (its Python API and `--once`) with processes added to the live
    state by the project's CLI. nvitop takes the host side (user, command, CPU) from psutil,
    so two processes are real `sleep`s; a pid with no host process is listed the way nvitop
    lists a process of another container: "No Such Process"."""
    cli = fgpu.REPO / "target/debug/fakegpu"  # run.sh builds it
    if not cli.exists():
        pytest.skip("fakegpu CLI not built")
    env = fgpu.env_for("h100", 2, FAKEGPU_STATE=str(tmp_path / "state.json"), COLUMNS="120")
    sleepers = [subprocess.Popen(["sleep", "120"]) for _ in range(2)]
    a, b = (s.pid for s in sleepers)
    try:
        for gpu, pid, mem, kind in ((1, a, "3GiB", "C"), (0, b, "2GiB", "C+G"), (0, 4242, "1GiB", "C")):
            fgpu.run([str(cli), "state", "process", "add", "--gpu", str(gpu), "--pid", str(pid), "--name", "p", "--mem", mem, "--type", kind], env)
        code = """
import nvitop
for d in nvitop.Device.all():
    for pid, p in sorted(d.processes().items()):
        print(d.index, pid, p.gpu_memory(), p.type, p.name() if p.is_running() else "-")
"""
        api = fgpu.run([str(fgpu.VENV_CLIENTS / "bin/python"), "-c", code], env).stdout.splitlines()
        out = fgpu.run([str(fgpu.VENV_CLIENTS / "bin/nvitop"), "--once"], env).stdout
    finally:
        for s in sleepers:
            s.kill()
            s.wait()
    rows = [(0, b, f"{2 << 30} C+G sleep"), (0, 4242, f"{1 << 30} C -"), (1, a, f"{3 << 30} C sleep")]
    assert api == [f"{g} {pid} {rest}" for g, pid, rest in sorted(rows)], api
    assert "No running processes found" not in out
    assert re.search(rf"│\s+1\s+{a} C\s+\S+\s+3072MiB .*sleep 120", out), out
    # The table marks a compute+graphics context "X".
    assert re.search(rf"│\s+0\s+{b} X\s+\S+\s+2048MiB .*sleep 120", out), out
    assert re.search(r"│\s+0\s+4242 C\s+N/A\s+1024MiB .*No Such Process", out), out
