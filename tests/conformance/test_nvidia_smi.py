"""5. NVIDIA's own nvidia-smi 535.261.03 (from Debian non-free) over the fake library: the
default table, -L, -q, -q -x, -q -d, and --query-gpu CSV. Every printed value that the
profile determines is compared with the profile JSON; no ERR! anywhere, exit code 0. The driver
and CUDA version printed are each profile's own, also where that is not the binary's 535.

(535's -d does not accept PCI; the PCI section is checked in the full -q.)"""
import csv
import io
import re
import xml.etree.ElementTree as ET
from functools import lru_cache

import pytest

import fgpu

DISPLAY = "MEMORY,POWER,CLOCK,TEMPERATURE,ECC,PERFORMANCE"


@lru_cache(maxsize=None)
def smi(name, *args):
    r = fgpu.run([str(fgpu.NVIDIA_SMI), *args], fgpu.env_for(name))
    assert "ERR!" not in r.stdout and "Function Not Found" not in r.stdout, r.stdout
    # One Unknown Error is NVIDIA's own: 535 asks for supported graphics clocks with room for 256,
    # and Grace Blackwell boards support 260 (docs/nvml-library.md, test_fidelity.py).
    rest = r.stdout.replace("<supported_graphics_clock>Unknown Error</supported_graphics_clock>", "") if len(
        fgpu.supported_graphics_clocks(name)) > 256 else r.stdout
    assert "Unknown Error" not in rest, r.stdout
    return r.stdout


def parse_q(text):
    """`nvidia-smi -q` as {gpu bus id: {"Section/Sub/Key": value}} (indentation gives the path)."""
    gpus, cur, stack = {}, None, []
    for line in text.splitlines():
        m = re.match(r"^GPU ([0-9A-F]{8}:[0-9A-F]{2}:[0-9A-F]{2}\.[0-9A-F])$", line)
        if m:
            cur, stack = gpus.setdefault(m.group(1), {}), []
            continue
        if cur is None or not line.strip():
            continue
        depth = (len(line) - len(line.lstrip())) // 4 - 1
        key, sep, value = line.strip().partition(":")
        key = key.strip()
        stack = stack[:depth]
        if sep and value.strip() != "" or (sep and line.rstrip().endswith(": ")):
            cur["/".join(stack + [key])] = value.strip()
        elif sep:
            cur["/".join(stack + [key])] = value.strip()
        else:
            stack.append(key)
    return gpus


def watts(mw):
    return f"{mw / 1000:.2f} W"


def identities(name):
    return fgpu.cli_identities(name, fgpu.gpu_count(name))


@pytest.mark.parametrize("name", fgpu.BUILTIN)
def test_default_table(name):
    p, n = fgpu.profile(name), fgpu.gpu_count(name)
    out = smi(name)
    assert f"Driver Version: {fgpu.driver_version(name)}" in out and f"CUDA Version: {fgpu.cuda_text(name)}" in out
    rows = re.findall(r"^\|\s+(\d+)\s+(.+?)\s+(On|Off)\s+\|\s+([0-9A-F:.]+)\s+(On|Off)\s+\|", out, re.M)
    assert [int(r[0]) for r in rows] == list(range(n)), out
    for r in rows:  # the table cuts long names
        assert r[1].strip() == p["product_name"] or (len(r[1].strip()) >= 12 and p["product_name"].startswith(r[1].strip()))
    assert all(r[2] == ("On" if p["persistence_mode"] else "Off") for r in rows)
    ids = identities(name)
    if ids:
        assert [r[3] for r in rows] == [e["pci_bus_id"] for e in ids]
    second = re.findall(r"^\|\s+(\S+)\s+(\d+)C\s+P(\d+)\s+(.+?) \|\s+(.+?) \|\s+(\d+)%\s+(\S+) \|", out, re.M)
    assert len(second) == n, out
    fan = "N/A" if p["fan_speed_percent"] is None else f'{p["fan_speed_percent"]}%'

    def fits(cell, full):  # 535's table ends a cell that does not fit with "..." (e.g. "165W / 1...")
        return cell == full or (cell.endswith("...") and full.startswith(cell[:-3]) and len(cell) > 6)

    for row in second:
        assert row[:3] == (fan, str(p["thermal"]["idle_gpu_c"]), str(p["idle_pstate"])), row
        power = f'{p["power"]["idle_draw_mw"] // 1000}W / {p["power"]["default_limit_mw"] // 1000}W'
        memory = f'0MiB / {p["memory"]["total_mib"]}MiB'
        assert fits(re.sub(r"\s+", " ", row[3].strip()), power), (row[3], power)
        assert fits(re.sub(r"\s+", " ", row[4].strip()), memory), (row[4], memory)
        assert row[5:] == ("0", "Default"), row
    assert "No running processes found" in out


OTHER_DRIVER = [n for n in fgpu.BUILTIN if fgpu.driver_version(n) != fgpu.BINARY_VERSION]


def test_some_profiles_claim_another_driver_than_the_binary():
    """The boards newer than the 535 driver (B200 and the Grace Blackwell boards) claim a later
    one, so the test below runs the 535 binary over a library newer than itself."""
    newer = [n for n in OTHER_DRIVER if int(fgpu.driver_version(n).split(".")[0]) > int(fgpu.BINARY_VERSION.split(".")[0])]
    assert {"b200", "gb200", "gb300"} <= set(newer), OTHER_DRIVER


@pytest.mark.parametrize("name", OTHER_DRIVER)
def test_binary_runs_over_another_driver(name):
    """NVIDIA's 535 nvidia-smi over a node whose library claims another driver (580 for a B200,
    470 for a K80): the default table, -q and -q -x exit 0 (fgpu.run checks) and print the
    library's driver and CUDA version, never the binary's own."""
    drv, cuda = fgpu.driver_version(name), fgpu.cuda_text(name)
    table = smi(name)
    assert re.search(rf"NVIDIA-SMI {re.escape(fgpu.BINARY_VERSION)}\s+Driver Version: {re.escape(drv)}\s+CUDA Version: {re.escape(cuda)}\s", table), table
    q = smi(name, "-q")
    assert re.search(rf"^Driver Version\s+: {re.escape(drv)}$", q, re.M) and re.search(rf"^CUDA Version\s+: {re.escape(cuda)}$", q, re.M), q[:600]
    assert fgpu.BINARY_VERSION not in q.replace(f"NVIDIA-SMI {fgpu.BINARY_VERSION}", "")
    root = ET.fromstring(smi(name, "-q", "-x"))
    assert (root.findtext("driver_version"), root.findtext("cuda_version")) == (drv, cuda)
    if fgpu.profile(name).get("gsp_firmware"):
        assert {g.findtext("gsp_firmware_version") for g in root.findall("gpu")} == {drv}


@pytest.mark.parametrize("name", fgpu.BUILTIN)
def test_list(name):
    p = fgpu.profile(name)
    lines = smi(name, "-L").strip().splitlines()
    assert len(lines) == fgpu.gpu_count(name)
    got = [re.fullmatch(r"GPU (\d+): (.+) \(UUID: (GPU-[0-9a-f-]{36})\)", line).groups() for line in lines]
    assert [(int(i), nm) for i, nm, _ in got] == [(i, p["product_name"]) for i in range(len(lines))]
    ids = identities(name)
    if ids:
        assert [u for *_, u in got] == [e["uuid"] for e in ids]


def check_q_values(p, gpu, full):
    """Checks one GPU's -q (or -q -d) values against the profile; `full` = the whole -q."""
    mem, pw, th, c = p["memory"], p["power"], p["thermal"], p["clocks"]
    expect = {
        "FB Memory Usage/Total": f'{mem["total_mib"]} MiB',
        "FB Memory Usage/Reserved": f'{mem["reserved_mib"]} MiB',
        "FB Memory Usage/Used": "0 MiB",
        "FB Memory Usage/Free": f'{mem["total_mib"] - mem["reserved_mib"]} MiB',
        "BAR1 Memory Usage/Total": f'{mem["bar1_total_mib"]} MiB',
        "BAR1 Memory Usage/Used": f'{mem["bar1_used_mib"]} MiB',
        "Performance State": f'P{p["idle_pstate"]}',
        "ECC Mode/Current": "Enabled" if p["ecc_enabled"] else "Disabled",
        "Temperature/GPU Current Temp": f'{th["idle_gpu_c"]} C',
        "Clocks/Graphics": f'{c["idle"]["graphics_mhz"]} MHz',
        "Clocks/SM": f'{c["idle"]["sm_mhz"]} MHz',
        "Clocks/Memory": f'{c["idle"]["memory_mhz"]} MHz',
        "Clocks/Video": f'{c["idle"]["video_mhz"]} MHz',
        "Max Clocks/Graphics": f'{c["max"]["graphics_mhz"]} MHz',
        "Max Clocks/SM": f'{c["max"]["sm_mhz"]} MHz',
        "Max Clocks/Memory": f'{c["max"]["memory_mhz"]} MHz',
        "Max Clocks/Video": f'{c["max"]["video_mhz"]} MHz',
    }
    if c.get("applications"):
        expect["Applications Clocks/Graphics"] = f'{c["applications"]["graphics_mhz"]} MHz'
        expect["Applications Clocks/Memory"] = f'{c["applications"]["memory_mhz"]} MHz'
    if c.get("max_customer_boost_mhz"):
        expect["Max Customer Boost Clocks/Graphics"] = f'{c["max_customer_boost_mhz"]} MHz'
    # The power section is "GPU Power Readings" from Hopper's 535 layout on, "Power Readings" before.
    power = "GPU Power Readings" if "GPU Power Readings/Power Draw" in gpu else "Power Readings"
    expect.update({f"{power}/Power Draw": watts(pw["idle_draw_mw"]),
                   f"{power}/Default Power Limit": watts(pw["default_limit_mw"]),
                   f"{power}/Min Power Limit": watts(pw["min_limit_mw"]),
                   f"{power}/Max Power Limit": watts(pw["max_limit_mw"])})
    if th.get("idle_memory_c") is not None:
        expect["Temperature/Memory Current Temp"] = f'{th["idle_memory_c"]} C'
    if full:
        pci = p["pci"]
        expect.update({
            "Product Name": p["product_name"],
            "VBIOS Version": p["vbios_version"],
            "Board Part Number": p["board_part_number"],
            "Inforom Version/Image Version": p["inforom"]["image"],
            "MultiGPU Board": "Yes" if p["multi_gpu_board"] else "No",
            "Persistence Mode": "Enabled" if p["persistence_mode"] else "Disabled",
            "PCI/Device Id": pci["device_id"].upper().replace("0X", "0x"),
            "PCI/Sub System Id": pci["subsystem_id"].upper().replace("0X", "0x"),
            "PCI/GPU Link Info/PCIe Generation/Max": str(pci["max_link_gen"]),
            "PCI/GPU Link Info/PCIe Generation/Current": str(pci["current_link_gen"]),
            "PCI/GPU Link Info/Link Width/Max": f'{pci["max_link_width"]}x',
            "PCI/GPU Link Info/Link Width/Current": f'{pci["current_link_width"]}x',
            "Compute Mode": "Default",
        })
        if p["inforom"]["oem"]:
            expect["Inforom Version/OEM Object"] = p["inforom"]["oem"]
        if p.get("gsp_firmware"):
            expect["GSP Firmware Version"] = p["driver_version"]
    got = {k: gpu.get(k) for k in expect}
    assert got == expect


@pytest.mark.parametrize("name", fgpu.BUILTIN)
def test_query_full(name):
    p = fgpu.profile(name)
    out = smi(name, "-q")
    assert re.search(rf"Driver Version\s+: {re.escape(fgpu.driver_version(name))}$", out, re.M)
    assert re.search(rf"CUDA Version\s+: {re.escape(fgpu.cuda_text(name))}$", out, re.M)
    assert re.search(rf"Attached GPUs\s+: {fgpu.gpu_count(name)}$", out, re.M)
    gpus = parse_q(out)
    assert len(gpus) == fgpu.gpu_count(name)
    ids = identities(name)
    if ids:
        assert list(gpus) == [e["pci_bus_id"] for e in ids]
    for i, (bus_id, gpu) in enumerate(gpus.items()):
        check_q_values(p, gpu, full=True)
        assert gpu["PCI/Bus Id"] == bus_id
        if ids:
            assert gpu["GPU UUID"] == ids[i]["uuid"] and gpu["Serial Number"] == ids[i]["serial"]
        # Thresholds: absolute ones where the profile has no T.Limit, relative T.Limit ones otherwise.
        th = p["thermal"]
        if th.get("tlimit"):
            assert gpu["Temperature/GPU Shutdown T.Limit Temp"] == f'{th["tlimit"]["shutdown_c"]} C'
            assert gpu["Temperature/GPU Slowdown T.Limit Temp"] == f'{th["tlimit"]["slowdown_c"]} C'


@pytest.mark.parametrize("name", fgpu.BUILTIN)
def test_query_display_sections(name):
    p = fgpu.profile(name)
    gpus = parse_q(smi(name, "-q", "-d", DISPLAY))
    assert len(gpus) == fgpu.gpu_count(name)
    for gpu in gpus.values():
        check_q_values(p, gpu, full=False)
        assert "Product Name" not in gpu  # only the sections asked for


@pytest.mark.parametrize("name", fgpu.BUILTIN)
def test_query_xml(name):
    p = fgpu.profile(name)
    root = ET.fromstring(smi(name, "-q", "-x"))
    assert root.findtext("driver_version") == fgpu.driver_version(name)
    assert root.findtext("cuda_version") == fgpu.cuda_text(name)
    assert root.findtext("attached_gpus") == str(fgpu.gpu_count(name))
    gpus = root.findall("gpu")
    assert len(gpus) == fgpu.gpu_count(name)
    ids = identities(name)
    for i, g in enumerate(gpus):
        assert g.findtext("product_name") == p["product_name"]
        assert g.findtext("fb_memory_usage/total") == f'{p["memory"]["total_mib"]} MiB'
        assert g.findtext("fb_memory_usage/reserved") == f'{p["memory"]["reserved_mib"]} MiB'
        assert g.findtext("pci/pci_device_id") == p["pci"]["device_id"].upper().removeprefix("0X")  # XML: no 0x
        assert g.findtext("max_clocks/graphics_clock") == f'{p["clocks"]["max"]["graphics_mhz"]} MHz'
        assert g.findtext("temperature/gpu_temp") == f'{p["thermal"]["idle_gpu_c"]} C'
        assert g.findtext("vbios_version") == p["vbios_version"]
        power = g.find("gpu_power_readings") if g.find("gpu_power_readings") is not None else g.find("power_readings")
        assert power.findtext("default_power_limit") == watts(p["power"]["default_limit_mw"])
        assert power.findtext("power_draw") == watts(p["power"]["idle_draw_mw"])
        if ids:
            assert g.get("id") == ids[i]["pci_bus_id"] and g.findtext("uuid") == ids[i]["uuid"]


FIELDS = ("name,uuid,index,serial,pci.bus_id,pci.domain,pci.bus,pci.device_id,pci.sub_device_id,memory.total,"
          "memory.reserved,memory.used,memory.free,power.limit,power.default_limit,power.min_limit,power.max_limit,"
          "power.draw,temperature.gpu,temperature.memory,clocks.max.graphics,clocks.max.sm,clocks.max.memory,clocks.gr,"
          "clocks.sm,clocks.mem,clocks.video,clocks.applications.graphics,clocks.applications.memory,pstate,"
          "driver_version,persistence_mode,ecc.mode.current,vbios_version,pcie.link.gen.max,pcie.link.width.max,"
          "pcie.link.gen.current,pcie.link.width.current,compute_cap,count,inforom.img,utilization.gpu,"
          "utilization.memory,compute_mode,fan.speed,display_active")


@pytest.mark.parametrize("name", fgpu.BUILTIN)
def test_query_gpu_csv(name):
    p, n = fgpu.profile(name), fgpu.gpu_count(name)
    out = smi(name, f"--query-gpu={FIELDS}", "--format=csv,noheader,nounits")
    rows = [dict(zip(FIELDS.split(","), (v.strip() for v in row))) for row in csv.reader(io.StringIO(out))]
    assert len(rows) == n
    mem, pw, c, pci = p["memory"], p["power"], p["clocks"], p["pci"]
    ids = identities(name)
    for i, r in enumerate(rows):
        expect = {
            "name": p["product_name"], "index": str(i), "count": str(n),
            "pci.device_id": pci["device_id"].upper().replace("0X", "0x"),
            "pci.sub_device_id": pci["subsystem_id"].upper().replace("0X", "0x"),
            "memory.total": str(mem["total_mib"]), "memory.reserved": str(mem["reserved_mib"]), "memory.used": "0",
            "memory.free": str(mem["total_mib"] - mem["reserved_mib"]),
            "power.limit": f'{pw["default_limit_mw"] / 1000:.2f}', "power.default_limit": f'{pw["default_limit_mw"] / 1000:.2f}',
            "power.min_limit": f'{pw["min_limit_mw"] / 1000:.2f}', "power.max_limit": f'{pw["max_limit_mw"] / 1000:.2f}',
            "power.draw": f'{pw["idle_draw_mw"] / 1000:.2f}', "temperature.gpu": str(p["thermal"]["idle_gpu_c"]),
            "temperature.memory": "N/A" if p["thermal"].get("idle_memory_c") is None else str(p["thermal"]["idle_memory_c"]),
            "clocks.max.graphics": str(c["max"]["graphics_mhz"]), "clocks.max.sm": str(c["max"]["sm_mhz"]),
            "clocks.max.memory": str(c["max"]["memory_mhz"]), "clocks.gr": str(c["idle"]["graphics_mhz"]),
            "clocks.sm": str(c["idle"]["sm_mhz"]), "clocks.mem": str(c["idle"]["memory_mhz"]),
            "clocks.video": str(c["idle"]["video_mhz"]), "pstate": f'P{p["idle_pstate"]}',
            "driver_version": p["driver_version"], "persistence_mode": "Enabled" if p["persistence_mode"] else "Disabled",
            "ecc.mode.current": "Enabled" if p["ecc_enabled"] else "Disabled", "vbios_version": p["vbios_version"],
            "pcie.link.gen.max": str(pci["max_link_gen"]), "pcie.link.width.max": str(pci["max_link_width"]),
            "pcie.link.gen.current": str(pci["current_link_gen"]), "pcie.link.width.current": str(pci["current_link_width"]),
            "compute_cap": f'{p["compute_capability"]["major"]}.{p["compute_capability"]["minor"]}',
            "inforom.img": p["inforom"]["image"], "utilization.gpu": "0", "utilization.memory": "0",
            "compute_mode": "Default", "fan.speed": "[N/A]" if p["fan_speed_percent"] is None else str(p["fan_speed_percent"]),
            "display_active": "Disabled",
        }
        if c.get("applications"):
            expect["clocks.applications.graphics"] = str(c["applications"]["graphics_mhz"])
            expect["clocks.applications.memory"] = str(c["applications"]["memory_mhz"])
        assert {k: r[k] for k in expect} == expect
        assert r["pci.bus_id"] == "%08X:%02X:00.0" % (int(r["pci.domain"], 16), int(r["pci.bus"], 16))
        if ids:
            assert (r["uuid"], r["serial"], r["pci.bus_id"]) == (ids[i]["uuid"], ids[i]["serial"], ids[i]["pci_bus_id"])
