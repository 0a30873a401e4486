"""9. Fidelity against real hardware (issue 17): for every board with a capture
(tests/fixtures/hardware/qx-*.xml), NVIDIA's nvidia-smi 535 `-q -x` over the fake library prints
every static field the capture holds exactly as the capture does, on every GPU of the capture,
except the fields listed in EXCEPTIONS below with the reason; and pynvml reads the module id,
the row-remapper histogram and the fabric registration the capture shows.

fidelity.py says which elements are compared (identifiers NVIDIA scrubbed, driver versions and
moment-to-moment readings are not). An exception that stops being a mismatch fails the test too,
so that the list stays true."""
import json
import re

import pytest

import fgpu
import fidelity

BOARDS = {
    "h100": "qx-h100.xml",
    "a100-40gb": "qx-a100.xml",
    "b200": "qx-b200.xml",
    "gb200": "qx-gb200.xml",
    "gb300": "qx-gb300.xml",
    "l40s": "qx-l40s.xml",
    "t4": "qx-t4.xml",
}

# Where NVIDIA's 535 binary over the fake prints a static field differently from the capture,
# and why: {board: {regex over fidelity.py paths ("gpu[i]/element/..."): reason}}. Every
# pattern must still match a mismatch (else the test fails: remove it).
ANY = r"gpu\[\d+\]"
OTHER = r"gpu\[[1-9]\d*\]"  # every GPU but the first, whose readings the profile holds
FB_ROUNDING = ("the capture's byte counts are not whole MiB and nvidia-smi rounds each figure, so its free is total - "
               "reserved + 1; the model keeps whole MiB, so free = total - reserved")
IDLE_SPREAD = "each GPU of the captured node idled at its own temperature; the profile holds GPU 0's idle readings"
NO_BLACKWELL = "nvidia-smi 535 predates Blackwell and prints architecture 10 as Unknown"
CLOCK_ROOM = ("nvidia-smi 535 asks for supported graphics clocks with room for 256; these boards support 260 (7.5 MHz "
              "steps), so the library answers INSUFFICIENT_SIZE as NVIDIA's does and 535 prints Unknown Error")
EXCEPTIONS = {
    "a100-40gb": {ANY + "/fb_memory_usage/free": FB_ROUNDING},
    "h100": {
        ANY + "/fb_memory_usage/free": FB_ROUNDING,
        OTHER + "/temperature/(gpu_temp|gpu_temp_tlimit|memory_temp)": IDLE_SPREAD,
        r"gpu\[3\]/board_part_number": "one GPU of the captured node is a different board revision (965-2G520-A800-000)",
    },
    "b200": {
        ANY + "/fb_memory_usage/free": FB_ROUNDING,
        OTHER + "/temperature/(gpu_temp|gpu_temp_tlimit|memory_temp)": IDLE_SPREAD,
        ANY + "/product_architecture": NO_BLACKWELL,
    },
    "gb200": {
        ANY + "/fb_memory_usage/free": FB_ROUNDING,
        ANY + "/supported_clocks/supported_mem_clock/supported_graphics_clock": CLOCK_ROOM,
        OTHER + "/temperature/(gpu_temp|gpu_temp_tlimit|memory_temp)": IDLE_SPREAD,
        ANY + "/product_architecture": NO_BLACKWELL,
    },
    "gb300": {
        ANY + "/fb_memory_usage/free": FB_ROUNDING,
        ANY + "/supported_clocks/supported_mem_clock/supported_graphics_clock": CLOCK_ROOM,
        OTHER + "/temperature/(gpu_temp|gpu_temp_tlimit|memory_temp)": IDLE_SPREAD,
        ANY + "/product_architecture": NO_BLACKWELL,
    },
    "l40s": {ANY + "/fb_memory_usage/free": FB_ROUNDING},
    "t4": {
        ANY + "/fb_memory_usage/free": FB_ROUNDING,
        ANY + "/ecc_errors/aggregate/dram_correctable": "the captured board had corrected one DRAM error in its life; a fresh simulated board has none",
        ANY + r"/supported_clocks/supported_mem_clock\[2\]/.*": "the board's second memory clock is 405 MHz (a low-power state the model does not simulate; it reports the idle reading 5000 MHz)",
    },
}


def capture_path(name):
    return fgpu.REPO / "tests/fixtures/hardware" / BOARDS[name]


def gpus_in(capture):
    return len(re.findall(r"<gpu id=", capture.read_text()))


def exception_for(name, path):
    return next((p for p in EXCEPTIONS.get(name, {}) if re.fullmatch(p, path)), None)


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_every_static_field_equals_the_capture(name):
    capture = capture_path(name)
    gpus = gpus_in(capture)
    out = fgpu.run([str(fgpu.NVIDIA_SMI), "-q", "-x"], fgpu.env_for(name, n=gpus)).stdout
    compared, mismatches = fidelity.compare(out, capture.read_text())
    print(f"\nfidelity {name}: {compared - len(mismatches)}/{compared} fields equal over {gpus} GPU(s)")
    unexpected = [(p, o, r) for p, o, r in mismatches if exception_for(name, p) is None]
    used = {exception_for(name, p) for p, _, _ in mismatches}
    stale = sorted(set(EXCEPTIONS.get(name, {})) - used)
    for p, o, r in unexpected:
        print(f"  {p}: ours={o!r} real={r!r}")
    assert compared >= 100 * gpus, "too few comparable fields: the comparison itself is broken"
    assert not unexpected, f"{len(unexpected)} static fields differ from the capture"
    assert not stale, f"listed exceptions that no longer occur (remove them): {stale}"


PROBE = r"""
import json, sys
import pynvml as n
n.nvmlInit()
out = []
for i in range(n.nvmlDeviceGetCount()):
    h = n.nvmlDeviceGetHandleByIndex(i)
    g = {}
    def read(key, f):
        try:
            g[key] = f()
        except n.NVMLError as e:
            g[key] = "error %d" % e.value
    read("module_id", lambda: n.nvmlDeviceGetModuleId(h))
    read("board_id", lambda: n.nvmlDeviceGetBoardId(h))
    def hist():
        v = n.nvmlDeviceGetRowRemapperHistogram(h)
        return [v.max, v.high, v.partial, v.low, v.none]
    read("histogram", hist)
    def fabric():
        fi = n.c_nvmlGpuFabricInfo_t()
        n.nvmlDeviceGetGpuFabricInfo(h, n.byref(fi))
        return {"state": fi.state, "status": fi.status, "clique": fi.cliqueId,
                "cluster": "%08x-%04x-%04x-%04x-%012x" % tuple(int(bytes(fi.clusterUuid)[a:b].hex(), 16)
                           for a, b in ((0, 4), (4, 6), (6, 8), (8, 10), (10, 16)))}
    read("fabric", fabric)
    def links():
        active = []
        for l in range(18):
            try:
                if n.nvmlDeviceGetNvLinkState(h, l):
                    r = n.nvmlDeviceGetNvLinkRemotePciInfo(h, l)
                    active.append([n.nvmlDeviceGetNvLinkVersion(h, l), n.nvmlDeviceGetNvLinkRemoteDeviceType(h, l),
                                   r.busId.decode() if isinstance(r.busId, bytes) else r.busId])
            except n.NVMLError as e:
                active.append("error %d" % e.value)
        return active
    read("nvlink", links)
    out.append(g)
n.nvmlShutdown()
print(json.dumps(out))
"""

FABRIC_STATES = {"Completed": 3, "In Progress": 2, "Not Started": 1}


def number(text):
    return int(re.match(r"\s*(-?\d+)", text).group(1))


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_pynvml_reads_equal_the_capture(name):
    capture = capture_path(name)
    gpus = gpus_in(capture)
    py = fgpu.VENV_CLIENTS / "bin/python"
    reads = json.loads(fgpu.run([str(py), "-c", PROBE], fgpu.env_for(name, n=gpus)).stdout)
    real = fidelity.gpus(capture.read_text())
    profile = fgpu.profile(name)
    nvlink = profile.get("board", {}).get("nvlink")
    for i, (got, cap) in enumerate(zip(reads, real)):
        where = f"{name} GPU {i}"
        if exception_for(name, f"gpu[{i}]/gpu_module_id") is None:
            assert got["module_id"] == number(cap["platformInfo/module_id"]), where
        hist = [k for k in ("max", "high", "partial", "low", "none")]
        if cap.get("remapped_rows/row_remapper_histogram/row_remapper_histogram_max") is None:
            assert got["histogram"] == "error 3", where
        else:
            want = [number(cap[f"remapped_rows/row_remapper_histogram/row_remapper_histogram_{k}"]) for k in hist]
            assert got["histogram"] == want, where
        state = cap["fabric/state"]
        if state == "N/A":
            assert got["fabric"] == "error 3", where
        else:
            assert got["fabric"]["state"] == FABRIC_STATES[state], where
            assert got["fabric"]["status"] == 0 and cap["fabric/status"] == "Success", where
            assert got["fabric"]["clique"] == int(cap["fabric/cliqueId"]), where
            # NVIDIA scrubbed cluster UUIDs to placeholders: HGX boards report all zeros, NVL
            # racks a UUID of their NVLink domain (model/src/fabric.rs), the same on every tray.
            zero = cap["fabric/clusterUuid"] == "00000000-0000-0000-0000-000000000000"
            assert (got["fabric"]["cluster"] == "00000000-0000-0000-0000-000000000000") == zero, where
        # The captures hold no NVLink rows (nvidia-smi -q prints none); the profile's board
        # facts decide: every link active, of its version, to an NVSwitch (type 2).
        if nvlink is None:
            assert got["nvlink"] == ["error 3"] * 18, where
        else:
            active = got["nvlink"][: nvlink["links"]]
            assert all(l[0] == nvlink["version"] and l[1] == 2 for l in active), where
            assert got["nvlink"][nvlink["links"]:] == ["error 3"] * (18 - nvlink["links"]), where
            assert len({l[2] for l in active}) == nvlink["switches"], where
