"""Field-by-field comparison of `nvidia-smi -q -x` over the fake library with a real capture
(tests/fixtures/hardware/qx-*.xml), for the first <gpu> of each.

Both documents are flattened to {path: text} over their leaf elements (a path is the element
names from <gpu> down, e.g. "fb_memory_usage/total"). A path is compared when both documents
have it and no rule below ignores it; the match ratio is matches / compared.

Ignored, and why:
  * elements only one side prints: the captures come from drivers 570-595, whose nvidia-smi prints
    elements the 535 binary does not know (platformInfo, C2C, power smoothing, ...) and drops or
    renames some of 535's. Absent elements say nothing about the library.
  * identifiers: uuid, serial, pdi, board_id, minor_number, module_id, gpu_fabric_guid, cluster
    uuids, chassis serials and PCI bus placement (pci_bus, pci_bus_id, the gpu id attribute).
    NVIDIA replaced them with placeholders before publishing the captures, and the fake derives
    its own from the node name.
  * versions of the driver stack: driver_version, cuda_version and gsp_firmware_version (GSP
    firmware is the driver's), because the simulation claims driver 535 on purpose.
  * readings that vary from moment to moment or with the host: utilization, encoder/FBC stats,
    PCIe tx/rx throughput, replay counters, processes, accounted processes, clock and power
    samples, violation times, energy consumption, and timestamps.
  * fields the capture's newer driver reports as "Requested functionality has been deprecated"
    (application clocks of Ada/Turing, display mode, power state, reset status): the driver
    stopped reporting them after 535, so the capture holds no value to compare with.
  * values the 535 binary itself cannot fill with a size-only internal export table (printed as
    "Uninitialized" by it, a documented limit of nvidia-smi 535 over any non-NVIDIA library;
    see docs/nvml-clients §1): not a statement about the library either.
"""
import re
import xml.etree.ElementTree as ET

IGNORED_NAMES = {
    "uuid", "serial", "pdi", "board_id", "minor_number", "module_id", "gpu_fabric_guid", "cluster_uuid",
    "chassis_serial_number", "pci_bus", "pci_bus_id", "pci_domain", "pci_device", "timestamp",
    "driver_version", "cuda_version", "gsp_firmware_version",
    "tx_util", "rx_util", "replay_counter", "replay_rollover_counter", "total_energy_consumption",
}
IGNORED_SUBTREES = (
    "utilization", "encoder_stats", "fbc_stats", "processes", "accounted_processes", "power_samples",
    "sm_clock_samples", "memory_clock_samples", "clock_event_reasons_counters", "platformInfo",
    "voltage",
)
IGNORED_VALUES = {"Uninitialized"}
DEPRECATED = "Requested functionality has been deprecated"


def flatten(gpu):
    """{path: text} over the leaf elements of one <gpu>."""
    out = {}

    def walk(el, prefix):
        kids = list(el)
        if not kids:
            out[prefix] = (el.text or "").strip()
            return
        seen = {}
        for k in kids:
            seen[k.tag] = seen.get(k.tag, 0) + 1
            name = k.tag if seen[k.tag] == 1 else f"{k.tag}[{seen[k.tag]}]"
            walk(k, f"{prefix}/{name}" if prefix else name)

    walk(gpu, "")
    return out


def ignored(path, ours, real):
    parts = path.split("/")
    if parts[-1] in IGNORED_NAMES or any(p in IGNORED_SUBTREES for p in parts):
        return True
    return ours in IGNORED_VALUES or real.strip() == DEPRECATED


def normalize(text):
    return re.sub(r"\s+", " ", text).strip()


def compare(ours_xml, real_xml):
    """Returns (matches, compared, mismatches: [(path, ours, real)])."""
    ours = flatten(ET.fromstring(ours_xml).find("gpu"))
    real = flatten(ET.parse(real_xml).getroot().find("gpu") if not isinstance(real_xml, str) or not real_xml.lstrip().startswith("<")
                   else ET.fromstring(real_xml).find("gpu"))
    matches, compared, mismatches = 0, 0, []
    for path in sorted(set(ours) & set(real)):
        if ignored(path, ours[path], real[path]):
            continue
        compared += 1
        if normalize(ours[path]) == normalize(real[path]):
            matches += 1
        else:
            mismatches.append((path, ours[path], real[path]))
    return matches, compared, mismatches
