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
# and why. Paths are fidelity.py's ("gpu[i]/element/..."); "*" stands for every GPU.
BUS_LAYOUT = "the model puts every GPU at device 0 of its bus and numbers PCI domains 0, 1, ... (docs/profiles.md)"
EXCEPTIONS = {
    "t4": {
        "*/pci/pci_device": "the cloud VM's GPU is device 0x1E of bus 0; " + BUS_LAYOUT,
        "*/pci/pci_bus_id": "device 0x1E; " + BUS_LAYOUT,
        "*/board_id": "NVIDIA's board id is (domain << 16) | (bus << 8) | device: device 0x1E; " + BUS_LAYOUT,
        "*/@id": "device 0x1E; " + BUS_LAYOUT,
    },
    "gb300": {
        "*/pci/pci_domain": "each GPU sits in its own PCI domain (0x8, 0x9, 0x18, 0x19); " + BUS_LAYOUT,
        "*/pci/pci_bus_id": "PCI domain; " + BUS_LAYOUT,
        "*/board_id": "the board id holds the PCI domain; " + BUS_LAYOUT,
        "*/@id": "PCI domain; " + BUS_LAYOUT,
        "*/gpu_module_id": "module ids follow bus positions, which the model cannot place (profile sources)",
    },
}


def capture_path(name):
    return fgpu.REPO / "tests/fixtures/hardware" / BOARDS[name]


def gpus_in(capture):
    return len(re.findall(r"<gpu id=", capture.read_text()))


def expected_exceptions(name, gpus):
    out = {}
    for pattern, reason in EXCEPTIONS.get(name, {}).items():
        for i in range(gpus):
            out[pattern.replace("*", f"gpu[{i}]")] = reason
    return out


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_every_static_field_equals_the_capture(name):
    capture = capture_path(name)
    gpus = gpus_in(capture)
    out = fgpu.run([str(fgpu.NVIDIA_SMI), "-q", "-x"], fgpu.env_for(name, n=gpus)).stdout
    compared, mismatches = fidelity.compare(out, capture.read_text())
    exceptions = expected_exceptions(name, gpus)
    print(f"\nfidelity {name}: {compared - len(mismatches)}/{compared} fields equal over {gpus} GPU(s)")
    unexpected = {p: (o, r) for p, o, r in mismatches if p not in exceptions}
    matched = {p for p, _, _ in mismatches}
    stale = sorted(p for p in exceptions if p not in matched)
    for p, (o, r) in sorted(unexpected.items()):
        print(f"  {p}: ours={o!r} real={r!r}")
    assert compared >= 150 * gpus, "too few comparable fields: the comparison itself is broken"
    assert not unexpected, f"{len(unexpected)} static fields differ from the capture"
    assert not stale, f"listed exceptions that now match (remove them): {stale}"


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
        if "*/gpu_module_id" not in EXCEPTIONS.get(name, {}):
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
