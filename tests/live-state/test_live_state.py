"""Live node state (issue 4), checked through clients nobody here wrote: NVIDIA's nvidia-smi
535, NVIDIA's nvidia-ml-py (pynvml), gpustat and nvitop, each in its own process, against
state written by `fakegpu state` / `fakegpu fault` in other processes."""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SMI = Path(os.environ["FAKEGPU_NVIDIA_ROOT"]) / "usr/lib/nvidia/current/nvidia-smi"
LIB = os.environ["FAKEGPU_LIB_DIR"]
FAKEGPU = os.environ["FAKEGPU_BIN"]
HAMMER = os.environ.get("FAKEGPU_HAMMER")
VENV = Path(os.environ["FAKEGPU_VENV_CLIENTS"])
PY = str(VENV / "bin/python")


@pytest.fixture
def node(tmp_path):
    """A node (profile, GPU count) with its own state file; returns a helper."""

    class Node:
        def __init__(self):
            self.state = tmp_path / "state.json"
            self.profile, self.gpus = "h100", 4

        def env(self, **extra):
            e = dict(os.environ)
            e.update(
                LD_LIBRARY_PATH=LIB,
                FAKEGPU_PROFILE=self.profile,
                FAKEGPU_GPUS=str(self.gpus),
                FAKEGPU_NODE="live-node",
                FAKEGPU_STATE=str(self.state),
            )
            e.pop("FAKEGPU_CONFIG", None)
            e.update(extra)
            return e

        def run(self, argv, check=True, **kw):
            p = subprocess.run(argv, env=self.env(), capture_output=True, text=True, timeout=60, **kw)
            if check and p.returncode != 0:
                raise AssertionError(f"{argv} -> rc {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}")
            return p

        def fg(self, *args, check=True):
            return self.run([FAKEGPU, *args], check=check)

        def smi(self, *args, check=True):
            return self.run([str(SMI), *args], check=check)

        def py(self, code, check=True):
            return self.run([PY, "-c", code], check=check)

        def raw(self):
            return self.state.read_bytes() if self.state.exists() else b""

    return Node()


def csv(out):
    return [[c.strip() for c in line.split(",")] for line in out.strip().splitlines()[1:]]


# --- state file and CLI -------------------------------------------------------------------


def test_cli_changes_and_refusals_leave_the_file_untouched(node):
    node.fg("state", "set", "--gpu", "0", "--util", "70", "--mem-used", "20GiB")
    node.fg("state", "process", "add", "--gpu", "0", "--pid", "4242", "--name", "python", "--mem", "10GiB")
    st = json.loads(node.fg("state", "show", "--json").stdout)
    g0 = st["gpus"]["0"]
    assert g0["utilization"]["gpu"] == 70 and g0["memory_used_bytes"] == 20 << 30
    assert g0["processes"][0]["pid"] == 4242 and g0["processes"][0]["type"] == "compute"
    before = node.raw()
    bad = [
        (["state", "set", "--gpu", "9", "--util", "5"], "GPU 9 does not exist"),
        (["state", "set", "--gpu", "0", "--util", "101"], "not a percentage"),
        (["state", "set", "--gpu", "0", "--mem-used", "20XB"], "unknown unit"),
        (["state", "set", "--gpu", "0", "--mem-used", "900GiB"], "exceeds"),
        (["state", "process", "add", "--gpu", "0", "--pid", "4242", "--name", "p", "--mem", "1GiB"], "already runs"),
        (["state", "process", "add", "--gpu", "0", "--pid", "5", "--name", "p", "--mem", "1GiB", "--type", "Q"], "--type"),
        (["state", "process", "rm", "--pid", "99"], "no process 99"),
        (["fault", "inject", "--gpu", "7", "--xid", "79"], "GPU 7 does not exist"),
        (["fault", "inject", "--gpu", "0", "--throttle", "hot"], "--throttle"),
        (["fault", "inject", "--gpu", "0"], "say which fault"),
        (["fault", "clear", "--gpu", "4"], "GPU 4 does not exist"),
    ]
    for argv, message in bad:
        p = node.fg(*argv, check=False)
        assert p.returncode == 2, (argv, p.stdout, p.stderr)
        assert message in p.stderr, (argv, p.stderr)
        assert node.raw() == before, argv


def test_readings_follow_the_state_in_other_processes(node):
    q = "--query-gpu=index,utilization.gpu,utilization.memory,memory.used,power.draw,clocks.sm,pstate,temperature.gpu"
    idle = csv(node.smi(q, "--format=csv,nounits").stdout)
    node.fg("state", "set", "--gpu", "1", "--util", "80", "--mem-util", "35", "--mem-used", "30GiB")
    busy = csv(node.smi(q, "--format=csv,nounits").stdout)
    assert busy[0] == idle[0], "other GPUs unchanged"
    assert busy[1][1:4] == ["80", "35", str(30 * 1024)]
    assert float(busy[1][4]) > float(idle[1][4]) + 100, "power rises with load"
    assert int(busy[1][5]) > int(idle[1][5]), "SM clock steps up"
    assert busy[1][6] == "P0"
    # Temperature moves toward its load value over time, not at once.
    t0 = int(busy[1][7])
    time.sleep(2.5)
    t1 = int(csv(node.smi(q, "--format=csv,nounits").stdout)[1][7])
    assert t1 > t0 >= int(idle[1][7])


def test_energy_is_monotonic_across_processes_and_changes(node):
    code = "import pynvml as n; n.nvmlInit(); h=n.nvmlDeviceGetHandleByIndex(0); print(n.nvmlDeviceGetTotalEnergyConsumption(h))"
    values = [int(node.py(code).stdout)]
    for util in ["90", "0", "50"]:
        node.fg("state", "set", "--gpu", "0", "--util", util)
        time.sleep(0.3)
        values.append(int(node.py(code).stdout))
    assert values == sorted(values) and values[-1] > values[0], values


def test_processes_through_public_clients(node):
    node.fg("state", "process", "add", "--gpu", "0", "--pid", "4242", "--name", "python", "--mem", "10GiB")
    node.fg("state", "process", "add", "--gpu", "2", "--pid", "77", "--name", "Xorg", "--mem", "512MiB", "--type", "G")
    code = """
import pynvml as n
n.nvmlInit()
for i in range(n.nvmlDeviceGetCount()):
    h = n.nvmlDeviceGetHandleByIndex(i)
    for kind, f in (("C", n.nvmlDeviceGetComputeRunningProcesses), ("G", n.nvmlDeviceGetGraphicsRunningProcesses)):
        for p in f(h):
            print(i, kind, p.pid, p.usedGpuMemory, hex(p.gpuInstanceId), hex(p.computeInstanceId))
"""
    lines = node.py(code).stdout.split("\n")
    assert f"0 C 4242 {10 << 30} 0xffffffff 0xffffffff" in lines
    assert f"2 G 77 {512 << 20} 0xffffffff 0xffffffff" in lines
    assert len([l for l in lines if l]) == 2
    # Simulated pids have no /proc entry: their names come from the state.
    names = node.py("import pynvml as n; n.nvmlInit(); print(n.nvmlSystemGetProcessName(4242), n.nvmlSystemGetProcessName(77))")
    assert names.stdout.split() == ["python", "Xorg"], names.stdout
    # gpustat, like on hardware, lists only processes that exist on this host (psutil).
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        node.fg("state", "process", "add", "--gpu", "1", "--pid", str(sleeper.pid), "--name", "sleep", "--mem", "3GiB")
        gs = json.loads(node.run([str(VENV / "bin/gpustat"), "--json"]).stdout)
    finally:
        sleeper.kill()
    procs = {g["index"]: [(p["pid"], p["gpu_memory_usage"]) for p in g["processes"]] for g in gs["gpus"]}
    assert procs[1] == [(sleeper.pid, 3072)] and procs[0] == [], procs
    node.fg("state", "process", "rm", "--pid", "4242")
    assert "4242" not in node.py(code).stdout


# Process rows of nvidia-smi's default table: GPU, GI, CI, PID, Type, name, MiB.
PROCESS_ROW = re.compile(r"^\|\s+(\d+)\s+(\S+)\s+(\S+)\s+(\d+)\s+([CGM+]+)\s+([^|\s]+)\s+(\d+)MiB \|$", re.M)


def test_processes_in_nvidia_smi_with_their_type(node):
    """NVIDIA's nvidia-smi reads processes only through its internal export table (slots
    213-215, docs/nvml-library.md); its Type column comes from the lists a pid is in."""
    node.profile, node.gpus = "a100-40gb", 2
    assert "No running processes found" in node.smi().stdout
    for gpu, pid, name, mem, kind in (
        (0, 4242, "python", "10GiB", "C"),
        (0, 77, "Xorg", "512MiB", "G"),
        (0, 300, "blender", "2GiB", "C+G"),
        (1, 200, "mps-client", "3GiB", "M+C"),
    ):
        node.fg("state", "process", "add", "--gpu", str(gpu), "--pid", str(pid), "--name", name, "--mem", mem, "--type", kind)
    table = node.smi().stdout
    # One row per process, per GPU in pid order, as nvidia-smi sorts them.
    assert PROCESS_ROW.findall(table) == [
        ("0", "N/A", "N/A", "77", "G", "Xorg", "512"),
        ("0", "N/A", "N/A", "300", "C+G", "blender", "2048"),
        ("0", "N/A", "N/A", "4242", "C", "python", "10240"),
        ("1", "N/A", "N/A", "200", "M+C", "mps-client", "3072"),
    ], table
    assert "No running processes found" not in table
    # --query-compute-apps lists the processes with a compute context: not the graphics-only one.
    apps = csv(node.smi("--query-compute-apps=pid,process_name,used_memory", "--format=csv").stdout)
    assert sorted(apps) == [["200", "mps-client", "3072 MiB"], ["300", "blender", "2048 MiB"], ["4242", "python", "10240 MiB"]]
    q = node.smi("-q", "-d", "PIDS", "-i", "0").stdout
    procs = re.findall(r"Process ID\s+: (\d+)\s+Type\s+: (\S+)\s+Name\s+: (\S+)\s+Used GPU Memory\s+: (\d+) MiB", q)
    assert procs == [("77", "G", "Xorg", "512"), ("300", "C+G", "blender", "2048"), ("4242", "C", "python", "10240")], q
    x = node.smi("-q", "-x", "-i", "1").stdout
    assert re.search(r"<pid>200</pid>\s*<type>M\+C</type>\s*<process_name>mps-client</process_name>\s*<used_memory>3072 MiB", x), x
    # Changes made by another process show in the next run.
    node.fg("state", "process", "rm", "--pid", "4242")
    node.fg("state", "process", "rm", "--pid", "77")
    assert [r[3] for r in PROCESS_ROW.findall(node.smi().stdout)] == ["300", "200"]


def test_mig_processes_in_nvidia_smi(node):
    node.profile, node.gpus = "a100-40gb", 2
    node.smi("-i", "0", "-mig", "1")
    node.smi("mig", "-i", "0", "-cgi", "9,14", "-C")
    node.fg("state", "process", "add", "--gpu", "0", "--pid", "100", "--name", "train", "--mem", "1GiB", "--gi", "2", "--ci", "0")
    node.fg("state", "process", "add", "--gpu", "0", "--pid", "101", "--name", "infer", "--mem", "2GiB", "--gi", "4", "--ci", "0")
    node.fg("state", "process", "add", "--gpu", "1", "--pid", "102", "--name", "whole", "--mem", "3GiB")
    table = node.smi().stdout
    assert PROCESS_ROW.findall(table) == [
        ("0", "2", "0", "100", "C", "train", "1024"),
        ("0", "4", "0", "101", "C", "infer", "2048"),
        ("1", "N/A", "N/A", "102", "C", "whole", "3072"),
    ], table
    q = node.smi("-q", "-d", "PIDS", "-i", "0").stdout
    found = re.findall(r"GPU instance ID\s+: (\S+)\s+Compute instance ID\s+: (\S+)\s+Process ID\s+: (\d+)", q)
    assert found == [("2", "0", "100"), ("4", "0", "101")], q
    apps = csv(node.smi("--query-compute-apps=pid,used_memory", "--format=csv").stdout)
    assert sorted(apps) == [["100", "1024 MiB"], ["101", "2048 MiB"], ["102", "3072 MiB"]]


# --- faults and events --------------------------------------------------------------------

WAITER = """
import sys, time, pynvml as n
n.nvmlInit()
h = n.nvmlDeviceGetHandleByIndex(int(sys.argv[1]))
s = n.nvmlEventSetCreate()
n.nvmlDeviceRegisterEvents(h, n.nvmlEventTypeXidCriticalError, s)
print("ready", flush=True)
e = n.nvmlEventSetWait_v2(s, 10000)
t = time.time()
print(n.nvmlDeviceGetIndex(e.device), e.eventType, e.eventData, hex(e.gpuInstanceId), hex(e.computeInstanceId), repr(t), flush=True)
"""


def test_injected_xid_reaches_every_waiting_process_quickly(node):
    waiters = [
        subprocess.Popen([PY, "-c", WAITER, "3"], env=node.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    for w in waiters:
        assert w.stdout.readline().strip() == "ready"
    time.sleep(0.2)
    start = time.time()
    node.fg("fault", "inject", "--gpu", "3", "--xid", "79")
    for w in waiters:
        out, err = w.communicate(timeout=15)
        fields = out.split()
        assert fields[:5] == ["3", "8", "79", "0xffffffff", "0xffffffff"], (out, err)
        latency = float(fields[5]) - start
        assert latency < 0.2, f"event after {latency * 1000:.0f} ms"


def test_wait_times_out_without_events_and_does_not_spin(node):
    code = """
import time, resource, pynvml as n
n.nvmlInit(); s = n.nvmlEventSetCreate()
n.nvmlDeviceRegisterEvents(n.nvmlDeviceGetHandleByIndex(0), n.nvmlEventTypeXidCriticalError, s)
t = time.time(); c = time.process_time()
try:
    n.nvmlEventSetWait_v2(s, 700); print("event")
except n.NVMLError_Timeout:
    print("timeout", round(time.time() - t, 2), round(time.process_time() - c, 3))
"""
    # An XID on another GPU, which this set did not register, does not wake it with an event.
    p = subprocess.Popen([PY, "-c", code], env=node.env(), stdout=subprocess.PIPE, text=True)
    time.sleep(0.3)
    node.fg("fault", "inject", "--gpu", "1", "--xid", "13")
    out = p.communicate(timeout=10)[0].split()
    assert out[0] == "timeout" and float(out[1]) >= 0.65 and float(out[2]) < 0.1, out


def test_ecc_remapped_rows_and_throttle_in_nvidia_smi(node):
    node.fg("fault", "inject", "--gpu", "1", "--ecc-dbe", "2")
    node.fg("fault", "inject", "--gpu", "0", "--throttle", "thermal")
    node.fg("state", "set", "--gpu", "0", "--util", "100")
    q = "--query-gpu=index,ecc.errors.uncorrected.volatile.total,ecc.errors.uncorrected.aggregate.total,clocks_event_reasons.sw_thermal_slowdown,clocks.sm"
    rows = csv(node.smi(q, "--format=csv,nounits").stdout)
    assert rows[1][1:3] == ["2", "2"] and rows[0][1:3] == ["0", "0"]
    assert rows[0][3] == "Active" and rows[1][3] == "Not Active"
    q1 = node.smi("-q", "-i", "1").stdout
    assert re.search(r"Remapped Rows\s+Correctable Error\s+: 0\s+Uncorrectable Error\s+: 2\s+Pending\s+: Yes", q1), q1
    node.fg("fault", "clear")
    rows = csv(node.smi(q, "--format=csv,nounits").stdout)
    assert rows[1][1] == "0" and rows[0][3] == "Not Active"


def test_lost_gpu_degrades_clients_as_on_hardware(node):
    node.fg("fault", "inject", "--gpu", "2", "--lost")
    p = node.smi(check=False)
    assert p.returncode == 15 and "GPU is lost" in p.stdout + p.stderr, (p.returncode, p.stdout, p.stderr)
    code = """
import pynvml as n
n.nvmlInit()
try:
    n.nvmlDeviceGetHandleByIndex(2); print("handle")
except n.NVMLError_GpuIsLost:
    print("lost")
print(n.nvmlDeviceGetUtilizationRates(n.nvmlDeviceGetHandleByIndex(1)).gpu)
"""
    assert node.py(code).stdout.split() == ["lost", "0"]
    gs = node.run([str(VENV / "bin/gpustat"), "--no-color"], check=False)
    assert gs.returncode == 0 and "Traceback" not in gs.stderr, gs.stderr
    assert "GPU is lost" in gs.stdout and "[3]" in gs.stdout, gs.stdout
    nv = node.run([str(VENV / "bin/nvitop"), "--once"], check=False)
    assert "Traceback" not in nv.stdout + nv.stderr, nv.stdout + nv.stderr
    assert nv.returncode == 0, (nv.returncode, nv.stdout, nv.stderr)
    node.fg("fault", "clear", "--gpu", "2")
    assert node.smi().returncode == 0


def test_corrupt_state_keeps_the_last_good_one_and_says_so_once(node):
    node.fg("state", "set", "--gpu", "0", "--util", "42")
    code = """
import sys, time, pynvml as n
n.nvmlInit(); h = n.nvmlDeviceGetHandleByIndex(0)
print(n.nvmlDeviceGetUtilizationRates(h).gpu, flush=True)
sys.stdin.readline()
print(*[n.nvmlDeviceGetUtilizationRates(h).gpu for _ in range(200)], flush=True)
"""
    p = subprocess.Popen([PY, "-c", code], env=node.env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "42"
    tmp = node.state.with_suffix(".tmp")
    tmp.write_text('{"version": 1, "gpus": {"0": {"utilization": {"gpu": 9')
    os.replace(tmp, node.state)
    node.fg("state", "show", check=False)  # any reader; the CLI itself refuses to write over it
    seq = Path(str(node.state) + ".seq")
    with open(seq, "r+b") as f:  # bump the generation in place, as a writer does
        gen = int.from_bytes(f.read(4), sys.byteorder)
        f.seek(0)
        f.write((gen + 1).to_bytes(4, sys.byteorder))
    out, err = p.communicate("go\n", timeout=20)
    assert set(out.split()) == {"42"}, out
    assert err.count("corrupt state") == 1, err
    w = node.fg("state", "set", "--gpu", "0", "--util", "1", check=False)
    assert w.returncode == 2 and "corrupt state" in w.stderr
    node.fg("state", "reset")
    assert csv(node.smi("--query-gpu=utilization.gpu", "--format=csv,nounits").stdout)[0] == ["0"]


@pytest.mark.skipif(not HAMMER, reason="hammer probe not built (no C compiler)")
def test_32_reader_threads_never_see_a_torn_state_during_1000_writes(node, tmp_path):
    node.fg("state", "set", "--gpu", "0", "--util", "50", "--mem-util", "50")
    stop = tmp_path / "stop"
    reader = subprocess.Popen([HAMMER, "read", "32", str(stop)], env=node.env(), stdout=subprocess.PIPE, text=True)
    code = f"""
import subprocess, sys
for i in range(1000):
    u = i % 101
    subprocess.run([{FAKEGPU!r}, "state", "set", "--gpu", "0", "--util", str(u), "--mem-util", str(100 - u)], check=True)
"""
    start = time.time()
    subprocess.run([sys.executable, "-c", code], env=node.env(), check=True, timeout=900)
    print(f"1000 writes in {time.time() - start:.1f} s")
    stop.touch()
    out = reader.communicate(timeout=120)[0]
    assert reader.returncode == 0, out
    counts = dict(kv.split("=") for kv in out.split())
    assert counts["torn"] == "0" and counts["errors"] == "0" and int(counts["reads"]) > 100_000, counts
    assert int(counts["generations"]) > 50, counts


# --- MIG ----------------------------------------------------------------------------------

A100_LGIP = [
    ("1g.5gb", 19, "7/7", "4.75", 14, 0, 0, 1, 0, 0),
    ("1g.5gb+me", 20, "1/1", "4.75", 14, 1, 0, 1, 1, 1),
    ("1g.10gb", 15, "4/4", "9.62", 14, 1, 0, 1, 0, 0),
    ("2g.10gb", 14, "3/3", "9.62", 28, 1, 0, 2, 0, 0),
    ("3g.20gb", 9, "2/2", "19.50", 42, 2, 0, 3, 0, 0),
    ("4g.20gb", 5, "1/1", "19.50", 56, 2, 0, 4, 0, 0),
    ("7g.40gb", 0, "1/1", "39.25", 98, 5, 0, 7, 1, 1),
]


def lgip_rows(text):
    rows = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"\|\s+(\d+)\s+MIG (\S+)\s+(\d+)\s+(\d+/\d+)\s+([\d.]+)\s+(\w+)\s+(\d+)\s+(\d+)\s+(\d+)\s+\|", line)
        if m:
            ce, jpeg, ofa = map(int, lines[i + 1].strip("| ").split())
            rows.append((m[2], int(m[3]), m[4], m[5], int(m[7]), int(m[8]), int(m[9]), ce, jpeg, ofa))
    return rows


def test_mig_profiles_a100_match_nvidia(node):
    node.profile, node.gpus = "a100-40gb", 1
    assert "No MIG-enabled devices found" in node.smi("mig", "-lgip", check=False).stdout
    node.smi("-mig", "1")
    assert lgip_rows(node.smi("mig", "-lgip").stdout) == A100_LGIP
    pp = node.smi("mig", "-lgipp").stdout
    for line in ["Profile ID 19 Placements: {0,1,2,3,4,5,6}:1", "Profile ID 14 Placements: {0,2,4}:2",
                 "Profile ID  9 Placements: {0,4}:4", "Profile ID  0 Placement : {0}:8"]:
        assert line in pp, pp


def test_mig_profiles_h100_and_other_boards(node):
    node.gpus = 1
    node.smi("-mig", "1")
    rows = {r[0]: r for r in lgip_rows(node.smi("mig", "-lgip").stdout)}
    assert rows["1g.10gb"][1:5] == (19, "7/7", "9.75", 16)
    assert rows["7g.80gb"][1:5] == (0, "1/1", "79.25", 132)
    for profile, full in [("a100-80gb", "7g.80gb"), ("h200", "7g.141gb"), ("b200", "7g.180gb"), ("gb200", "7g.186gb")]:
        node.profile = profile
        node.state.unlink()
        node.smi("-mig", "1")
        names = [r[0] for r in lgip_rows(node.smi("mig", "-lgip").stdout)]
        assert len(names) == 7 and names[-1] == full, (profile, names)


def test_mig_lifecycle_across_processes(node):
    node.profile, node.gpus = "a100-40gb", 2
    node.smi("-i", "0", "-mig", "1")  # process 1: enable
    out = node.smi("mig", "-i", "0", "-cgi", "9,14", "-C").stdout  # process 2: create
    assert "Successfully created GPU instance ID  2 on GPU  0 using profile MIG 3g.20gb (ID  9)" in out
    assert "Successfully created compute instance ID  0 on GPU  0 GPU instance ID  2 using profile MIG 3g.20gb (ID  2)" in out
    assert "using profile MIG 2g.10gb (ID 14)" in out
    listing = node.smi("-L").stdout  # process 3: observe
    mig_lines = re.findall(r"  MIG (\S+)\s+Device\s+(\d): \(UUID: (MIG-[0-9a-f-]{36})\)", listing)
    assert [(n, d) for n, d, _ in mig_lines] == [("3g.20gb", "0"), ("2g.10gb", "1")], listing
    assert node.smi("-L").stdout == listing, "MIG UUIDs are deterministic"
    # A MIG UUID opens that MIG device (NVIDIA's device plugin checks MIG health this way).
    code = (
        "import pynvml, sys\n"
        "pynvml.nvmlInit()\n"
        "for u in sys.argv[1:]:\n"
        "    h = pynvml.nvmlDeviceGetHandleByUUID(u)\n"
        "    mig = pynvml.nvmlDeviceIsMigDeviceHandle(h)\n"
        "    print(getattr(mig, 'value', mig), pynvml.nvmlDeviceGetUUID(h), pynvml.nvmlDeviceGetName(h))\n"
        "try:\n"
        "    pynvml.nvmlDeviceGetHandleByUUID('MIG-00000000-0000-0000-0000-000000000000')\n"
        "except pynvml.NVMLError_NotFound:\n"
        "    print('unknown: not found')\n"
    )
    uuids = [u for _, _, u in mig_lines]
    out = node.run([PY, "-c", code, *[u.upper() if i else u for i, u in enumerate(uuids)]]).stdout.splitlines()
    assert out[:2] == [f"1 {uuids[0]} NVIDIA A100-SXM4-40GB MIG 3g.20gb", f"1 {uuids[1]} NVIDIA A100-SXM4-40GB MIG 2g.10gb"], out
    assert out[2] == "unknown: not found", out
    lgi = node.smi("mig", "-lgi").stdout
    assert re.search(r"MIG 3g.20gb\s+9\s+2\s+4:4", lgi) and re.search(r"MIG 2g.10gb\s+14\s+4\s+2:2", lgi), lgi
    lci = node.smi("mig", "-lci").stdout
    assert re.search(r"0\s+2\s+MIG 3g.20gb\s+2\s+0\s+0:3", lci), lci
    q = node.smi("-q", "-i", "0").stdout
    assert re.search(r"MIG Mode\s+Current\s+: Enabled\s+Pending\s+: Enabled", q)
    assert re.search(r"MIG Device\s+Index\s+: 0\s+GPU Instance ID\s+: 2\s+Compute Instance ID\s+: 0", q), q
    assert re.search(r"Multiprocessor count\s+: 42", q) and re.search(r"Total\s+: 19968 MiB", q)
    table = node.smi().stdout
    assert re.search(r"\|\s+0\s+2\s+0\s+0\s+\|\s+0MiB / 19968MiB", table), table
    # The GPU instance cannot go while it has compute instances.
    p = node.smi("mig", "-i", "0", "-dgi", "-gi", "2", check=False)
    assert p.returncode == 19 and "In use by another client" in p.stdout, p.stdout
    node.smi("mig", "-i", "0", "-dci")  # process 4: destroy
    node.smi("mig", "-i", "0", "-dgi")
    assert "MIG" not in node.smi("-L").stdout.replace("MIG-", "")
    assert "No GPU instances found" in node.smi("mig", "-lgi", check=False).stdout


def test_mig_refusals(node):
    node.profile, node.gpus = "h100", 1
    node.smi("-mig", "1")
    p = node.smi("mig", "-cgi", "19,19,19,19,19,19,19,19", check=False)
    assert p.returncode == 23 and "Insufficient Resources" in p.stdout, p.stdout
    assert p.stdout.count("Successfully created GPU instance") == 7
    node.smi("mig", "-dgi")
    code = """
import pynvml as n
n.nvmlInit(); h = n.nvmlDeviceGetHandleByIndex(0)
info = n.nvmlDeviceGetGpuInstanceProfileInfo(h, n.NVML_GPU_INSTANCE_PROFILE_4_SLICE)
gi = n.nvmlDeviceCreateGpuInstance(h, info.id)
p2 = n.nvmlDeviceGetGpuInstanceProfileInfo(h, n.NVML_GPU_INSTANCE_PROFILE_2_SLICE)
for start in (2, 6):
    pl = n.c_nvmlGpuInstancePlacement_t(); pl.start, pl.size = start, 2
    try:
        n.nvmlDeviceCreateGpuInstanceWithPlacement(h, p2.id, n.byref(pl)); print("created", start)
    except n.NVMLError as e:
        print(start, e.value)
print("remaining", n.nvmlDeviceGetGpuInstanceRemainingCapacity(h, p2.id))
"""
    # 2 overlaps the 4g instance (INSUFFICIENT_RESOURCES); 6 is not a 2g placement (INVALID_ARGUMENT);
    # only the 2g placement at 4 is left.
    assert node.py(code).stdout.split("\n")[:3] == ["2 23", "6 2", "remaining 1"]
    node.profile = "l4"
    node.state.unlink()
    p = node.smi("-mig", "1", check=False)
    assert "Unable to enable MIG Mode" in p.stdout and "Not Supported" in p.stdout, p.stdout
    code = "import pynvml as n; n.nvmlInit()\ntry:\n n.nvmlDeviceGetMigMode(n.nvmlDeviceGetHandleByIndex(0))\nexcept n.NVMLError_NotSupported: print('ns')"
    assert node.py(code).stdout.strip() == "ns"
