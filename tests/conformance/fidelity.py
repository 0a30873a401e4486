"""Field-by-field comparison of `nvidia-smi -q -x` (NVIDIA's 535 binary) over the fake library
with a real capture (tests/fixtures/hardware/qx-*.xml), GPU by GPU.

Both documents are flattened to {path: text} over each <gpu>'s leaf elements and its `id`
attribute (a path is "gpu[i]/" plus the element names from <gpu> down, e.g.
"gpu[0]/fb_memory_usage/total", or "gpu[0]/@id"). A path is compared when both documents have
it and no rule below ignores it. Elements the capture's newer driver renamed are compared under
535's name (RENAMED).

Ignored, and why:
  * elements only one side prints: the captures come from drivers 570-595, whose nvidia-smi prints
    elements the 535 binary does not know (platformInfo, C2C, power smoothing, ...) and drops or
    renames some of 535's. Absent elements say nothing about the library.
  * identifiers NVIDIA replaced with placeholders before publishing the captures (uuid, serial,
    pdi, gpu_fabric_guid, cluster uuids, chassis serials); the fake derives its own from the node
    name. PCI placement, board and module ids are real and are compared.
  * versions of the driver stack: driver_version, cuda_version and gsp_firmware_version (GSP
    firmware is the driver's), because the simulation claims driver 535 on purpose.
  * readings that vary from moment to moment or with the host: utilization, encoder/FBC stats,
    PCIe tx/rx throughput, replay counters, processes, accounted processes, clock and power
    samples, violation times, energy consumption, voltage, the inforom flush time and timestamps.
    Idle temperatures, power draw and clocks are compared: the profiles hold the capture's idle
    readings.
  * fields the capture's newer driver reports as "Requested functionality has been deprecated"
    (application clocks of Ada/Turing, display mode, power state, reset status): the driver
    stopped reporting them after 535, so the capture holds no value to compare with.
"""
import re
import xml.etree.ElementTree as ET

IGNORED_NAMES = {
    "uuid", "serial", "pdi", "gpu_fabric_guid", "cluster_uuid", "clusterUuid", "chassis_serial_number",
    "timestamp", "driver_version", "cuda_version", "gsp_firmware_version",
    "tx_util", "rx_util", "replay_counter", "replay_rollover_counter", "total_energy_consumption",
    "latest_timestamp", "latest_duration",
}
IGNORED_SUBTREES = (
    "utilization", "encoder_stats", "fbc_stats", "processes", "accounted_processes", "power_samples",
    "sm_clock_samples", "memory_clock_samples", "clock_event_reasons_counters", "clocks_event_reasons_counters",
    "platformInfo", "voltage",
)
DEPRECATED = "Requested functionality has been deprecated"

# Capture path (newer driver) -> the 535 binary's path for the same value.
RENAMED = {
    "platformInfo/module_id": "gpu_module_id",
}


def _flatten(gpu, index):
    out = {f"gpu[{index}]/@id": gpu.get("id", "")}

    def walk(el, prefix):
        kids = list(el)
        if not kids:
            out[prefix] = (el.text or "").strip()
            return
        seen = {}
        for k in kids:
            seen[k.tag] = seen.get(k.tag, 0) + 1
            name = k.tag if seen[k.tag] == 1 else f"{k.tag}[{seen[k.tag]}]"
            walk(k, f"{prefix}/{name}")

    walk(gpu, f"gpu[{index}]")
    return out


def gpus(xml_text):
    """Each <gpu> of a document as {path below <gpu>: text} (paths without the gpu[i]/ prefix)."""
    root = ET.fromstring(xml_text)
    return [{p.split("/", 1)[1]: v for p, v in _flatten(g, i).items()} for i, g in enumerate(root.findall("gpu"))]


def flatten_all(xml_text, renames=None):
    root = ET.fromstring(xml_text)
    out = {}
    for i, g in enumerate(root.findall("gpu")):
        for path, text in _flatten(g, i).items():
            head, rest = path.split("/", 1)
            rest = (renames or {}).get(rest, rest)
            out[f"{head}/{rest}"] = text
    return out


def ignored(path, real):
    parts = path.split("/")
    if parts[-1] in IGNORED_NAMES or any(p in IGNORED_SUBTREES for p in parts):
        return True
    return real.strip() == DEPRECATED


def normalize(text):
    return re.sub(r"\s+", " ", text).strip()


def compare(ours_xml, real_xml):
    """Returns (compared, mismatches: [(path, ours, real)]) over every GPU both documents have."""
    ours = flatten_all(ours_xml)
    real = flatten_all(real_xml, RENAMED)
    compared, mismatches = 0, []
    for path in sorted(set(ours) & set(real)):
        if ignored(path, real[path]):
            continue
        compared += 1
        if normalize(ours[path]) != normalize(real[path]):
            mismatches.append((path, ours[path], real[path]))
    return compared, mismatches
