"""6. A C program compiled against NVIDIA's nvml.h (libnvidia-ml-dev) and linked with
-lnvidia-ml against the fake: NVIDIA's own struct types receive the values, so matching
values prove the struct layouts (and the header's _v2/_v3 symbol versioning)."""
import subprocess
from functools import lru_cache

import pytest

import fgpu


@lru_cache(maxsize=None)
def binary(tmp):
    exe = tmp / "probe"
    subprocess.run(["gcc", "-Wall", "-Wextra", "-Werror", "-std=c11", f"-I{fgpu.NVML_H.parent}",
                    str(fgpu.HERE / "c/probe.c"), f"-L{fgpu.LIB_DIR}", "-lnvidia-ml", "-o", str(exe)], check=True)
    needed = subprocess.run(["readelf", "-d", str(exe)], capture_output=True, text=True, check=True).stdout
    assert "libnvidia-ml.so.1" in needed  # linked by SONAME, as against the real library
    return exe


@pytest.fixture(scope="module")
def probe_exe(tmp_path_factory):
    return binary(tmp_path_factory.mktemp("cprobe"))


@pytest.mark.parametrize("name", fgpu.BUILTIN)
def test_c_probe(name, probe_exe):
    p, n = fgpu.profile(name), fgpu.gpu_count(name)
    out = fgpu.run([str(probe_exe)], fgpu.env_for(name)).stdout
    kv = dict(line.split("=", 1) for line in out.splitlines())
    assert kv["failures"] == "0", out
    # The header's own struct sizes: what the library must write, byte for byte.
    assert (kv["sizeof.nvmlPciInfo_t"], kv["sizeof.nvmlMemory_t"], kv["sizeof.nvmlMemory_v2_t"]) == ("68", "24", "40")
    assert kv["driver_version"] == p["driver_version"] and kv["cuda_driver_version"] == str(p["cuda_driver_version"])
    assert kv["count"] == str(n) and kv["excluded"] == "0"
    assert kv["after_shutdown_rc"] == "1"  # NVML_ERROR_UNINITIALIZED
    mem, pw, th, c, pci = p["memory"], p["power"], p["thermal"], p["clocks"], p["pci"]
    total, reserved = mem["total_mib"] * fgpu.MIB, mem["reserved_mib"] * fgpu.MIB
    ids = fgpu.cli_identities(name, n)
    for i in range(n):
        g = {k.split(".", 1)[1]: v for k, v in kv.items() if k.startswith(f"gpu{i}.")}
        expect = {
            "index": str(i), "name": p["product_name"], "vbios": p["vbios_version"],
            "board_part_number": p["board_part_number"], "uuid_roundtrip": "1", "pci_roundtrip": "1",
            "pci.device": "0", "pci.pciDeviceId": "0x%08X" % int(pci["device_id"], 16),
            "pci.pciSubSystemId": "0x%08X" % int(pci["subsystem_id"], 16),
            "pci.busId": "%08X:%02X:00.0" % (int(g["pci.domain"]), int(g["pci.bus"])),
            "pci.busIdLegacy": "%04X:%02X:00.0" % (int(g["pci.domain"]), int(g["pci.bus"])),
            "mem.total": str(total), "mem.free": str(total - reserved), "mem.used": str(reserved),
            "mem2.version": "0x02000028", "mem2.total": str(total), "mem2.reserved": str(reserved),
            "mem2.free": str(total - reserved), "mem2.used": "0", "mem2.bad_version_rc": "25",
            "bar1.total": str(mem["bar1_total_mib"] * fgpu.MIB), "bar1.used": str(mem["bar1_used_mib"] * fgpu.MIB),
            "bar1.free": str((mem["bar1_total_mib"] - mem["bar1_used_mib"]) * fgpu.MIB),
            "util.gpu": "0", "util.memory": "0", "temp": str(th["idle_gpu_c"]),
            "temp.shutdown": str(th["shutdown_c"]), "temp.slowdown": str(th["slowdown_c"]),
            "power.usage": str(pw["idle_draw_mw"]), "power.enforced": str(pw["default_limit_mw"]),
            "power.min": str(pw["min_limit_mw"]), "power.max": str(pw["max_limit_mw"]), "energy.positive": "1",
            "compute_capability": f'{p["compute_capability"]["major"]}.{p["compute_capability"]["minor"]}',
            "pstate": str(p["idle_pstate"]), "ecc.current": str(int(p["ecc_enabled"])),
            "ecc.pending": str(int(p["ecc_enabled"])), "persistence": str(int(p["persistence_mode"])),
            "pcie.max_gen": str(pci["max_link_gen"]), "pcie.width": str(pci["current_link_width"]),
            "field.energy.rc": "0", "field.energy.type": "3", "field.energy.positive": "1",
            "field.ecc_current.rc": "0", "field.ecc_current": str(int(p["ecc_enabled"])), "processes": "0",
        }
        for key in ("graphics", "sm", "memory", "video"):
            expect[f"clock.{key}"] = str(c["idle"][f"{key}_mhz"])
            expect[f"maxclock.{key}"] = str(c["max"][f"{key}_mhz"])
        if ids:
            expect.update({"uuid": ids[i]["uuid"], "serial": ids[i]["serial"], "pci.busId": ids[i]["pci_bus_id"]})
        assert {k: g.get(k) for k in expect} == expect
