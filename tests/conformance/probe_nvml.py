"""Calls every getter the fake NVML implements through NVIDIA's nvidia-ml-py (module `pynvml`)
and prints one JSON document: {"system": {...}, "devices": [{...}], "lookups": {...}}.

Each call is recorded as {"ok": value} or {"err": <NVML return code>}; the pytest side
(test_nvml_py.py) compares the values with the profile JSON. Run it in a fresh process per
node configuration: the library loads its node once per process.
"""
import ctypes
import json
import sys
import time

import pynvml as N


def plain(value):
    """ctypes results as JSON values."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, ctypes.Structure):
        return {name: plain(getattr(value, name)) for name, *_ in value._fields_}
    if isinstance(value, ctypes.Array):
        return [plain(v) for v in value]
    if hasattr(value, "value") and not isinstance(value, (int, float, str)):
        return plain(value.value)
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    return repr(value)


def call(fn, *args, **kwargs):
    try:
        return {"ok": plain(fn(*args, **kwargs))}
    except N.NVMLError as e:
        return {"err": e.value}


def field_value(v):
    """The member of nvmlValue_t that valueType names (a raw ctypes union is not JSON)."""
    raw = fv_raw.pop(0)
    member = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal"}.get(raw.valueType)
    return getattr(raw.value, member) if member else None


fv_raw = []
FIELD_IDS = [N.NVML_FI_DEV_ECC_CURRENT, N.NVML_FI_DEV_POWER_INSTANT, N.NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION,
             N.NVML_FI_DEV_MEMORY_TEMP, N.NVML_FI_DEV_POWER_MIN_LIMIT, N.NVML_FI_DEV_POWER_MAX_LIMIT,
             N.NVML_FI_DEV_POWER_DEFAULT_LIMIT]


def probe_device(h, handles):
    d = {}

    def rec(key, fn, *args, **kwargs):
        d[key] = call(fn, h, *args, **kwargs)

    for name in [
        "nvmlDeviceGetIndex", "nvmlDeviceGetMinorNumber", "nvmlDeviceGetName", "nvmlDeviceGetUUID",
        "nvmlDeviceGetSerial", "nvmlDeviceGetBrand", "nvmlDeviceGetArchitecture",
        "nvmlDeviceGetCudaComputeCapability", "nvmlDeviceGetBoardPartNumber", "nvmlDeviceGetBoardId",
        "nvmlDeviceGetMultiGpuBoard", "nvmlDeviceGetVbiosVersion",
        "nvmlDeviceGetInforomImageVersion", "nvmlDeviceValidateInforom", "nvmlDeviceGetNumGpuCores",
        "nvmlDeviceGetMemoryBusWidth", "nvmlDeviceGetPciInfo", "nvmlDeviceGetPciInfo_v3",
        "nvmlDeviceGetMaxPcieLinkGeneration", "nvmlDeviceGetGpuMaxPcieLinkGeneration",
        "nvmlDeviceGetMaxPcieLinkWidth", "nvmlDeviceGetCurrPcieLinkGeneration", "nvmlDeviceGetCurrPcieLinkWidth",
        "nvmlDeviceGetPcieLinkMaxSpeed", "nvmlDeviceGetPcieSpeed", "nvmlDeviceGetBusType",
        "nvmlDeviceGetRetiredPagesPendingStatus", "nvmlDeviceGetRemappedRows",
        "nvmlDeviceGetPersistenceMode", "nvmlDeviceGetComputeMode", "nvmlDeviceGetDisplayMode",
        "nvmlDeviceGetDisplayActive", "nvmlDeviceGetEccMode", "nvmlDeviceGetDefaultEccMode",
        "nvmlDeviceGetAccountingMode", "nvmlDeviceGetAccountingBufferSize", "nvmlDeviceGetAccountingPids",
        "nvmlDeviceGetVirtualizationMode", "nvmlDeviceGetGspFirmwareVersion", "nvmlDeviceGetGspFirmwareMode",
        "nvmlDeviceGetMigMode", "nvmlDeviceGetMaxMigDeviceCount", "nvmlDeviceIsMigDeviceHandle",
        "nvmlDeviceGetGpuInstanceId", "nvmlDeviceGetComputeInstanceId",
        "nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses",
        "nvmlDeviceGetMPSComputeRunningProcesses", "nvmlDeviceGetEncoderStats", "nvmlDeviceGetEncoderSessions",
        "nvmlDeviceGetFBCStats", "nvmlDeviceGetFBCSessions",
        "nvmlDeviceGetMemoryInfo", "nvmlDeviceGetBAR1MemoryInfo", "nvmlDeviceGetUtilizationRates",
        "nvmlDeviceGetEncoderUtilization", "nvmlDeviceGetDecoderUtilization", "nvmlDeviceGetJpgUtilization",
        "nvmlDeviceGetOfaUtilization", "nvmlDeviceGetFanSpeed", "nvmlDeviceGetNumFans", "nvmlDeviceGetPowerUsage",
        "nvmlDeviceGetPowerManagementMode", "nvmlDeviceGetPowerManagementLimit",
        "nvmlDeviceGetPowerManagementDefaultLimit", "nvmlDeviceGetEnforcedPowerLimit",
        "nvmlDeviceGetPowerManagementLimitConstraints", "nvmlDeviceGetPowerSource",
        "nvmlDeviceGetTotalEnergyConsumption", "nvmlDeviceGetPerformanceState", "nvmlDeviceGetPowerState",
        "nvmlDeviceGetSupportedPerformanceStates", "nvmlDeviceGetSupportedMemoryClocks",
        "nvmlDeviceGetCurrentClocksThrottleReasons", "nvmlDeviceGetCurrentClocksEventReasons",
        "nvmlDeviceGetSupportedClocksThrottleReasons", "nvmlDeviceGetSupportedClocksEventReasons",
        "nvmlDeviceGetSupportedEventTypes", "nvmlDeviceGetModuleId", "nvmlDeviceGetRowRemapperHistogram",
    ]:
        rec(name, getattr(N, name))

    d["nvmlDeviceGetMemoryInfo_v2"] = call(N.nvmlDeviceGetMemoryInfo, h, version=N.nvmlMemory_v2)
    d["nvmlDeviceGetPciInfo_v2"] = d["nvmlDeviceGetPciInfo"]  # pynvml's GetPciInfo binds _v3; _v2 is covered by probe.c
    for obj, key in [(N.NVML_INFOROM_OEM, "oem"), (N.NVML_INFOROM_ECC, "ecc"), (N.NVML_INFOROM_POWER, "power")]:
        d[f"nvmlDeviceGetInforomVersion.{key}"] = call(N.nvmlDeviceGetInforomVersion, h, obj)
    for sensor in range(0, 2):
        d[f"nvmlDeviceGetTemperature.{sensor}"] = call(N.nvmlDeviceGetTemperature, h, sensor)
    for t in range(0, 8):
        d[f"nvmlDeviceGetTemperatureThreshold.{t}"] = call(N.nvmlDeviceGetTemperatureThreshold, h, t)
    d["nvmlDeviceGetFanSpeed_v2.0"] = call(N.nvmlDeviceGetFanSpeed_v2, h, 0)
    d["nvmlDeviceGetTargetFanSpeed.0"] = call(N.nvmlDeviceGetTargetFanSpeed, h, 0)
    for ct in range(4):
        for key, fn in [("nvmlDeviceGetClockInfo", N.nvmlDeviceGetClockInfo),
                        ("nvmlDeviceGetMaxClockInfo", N.nvmlDeviceGetMaxClockInfo),
                        ("nvmlDeviceGetApplicationsClock", N.nvmlDeviceGetApplicationsClock),
                        ("nvmlDeviceGetDefaultApplicationsClock", N.nvmlDeviceGetDefaultApplicationsClock),
                        ("nvmlDeviceGetMaxCustomerBoostClock", N.nvmlDeviceGetMaxCustomerBoostClock)]:
            d[f"{key}.{ct}"] = call(fn, h, ct)
        for cid in range(4):
            d[f"nvmlDeviceGetClock.{ct}.{cid}"] = call(N.nvmlDeviceGetClock, h, ct, cid)
        d[f"nvmlDeviceGetMinMaxClockOfPState.{ct}.0"] = call(N.nvmlDeviceGetMinMaxClockOfPState, h, ct, 0)
    mem_clocks = d["nvmlDeviceGetSupportedMemoryClocks"].get("ok") or []
    if mem_clocks:
        d["nvmlDeviceGetSupportedGraphicsClocks"] = call(N.nvmlDeviceGetSupportedGraphicsClocks, h, mem_clocks[0])
    for counter in (0, 1):
        d[f"nvmlDeviceGetPcieThroughput.{counter}"] = call(N.nvmlDeviceGetPcieThroughput, h, counter)
    d["nvmlDeviceGetPcieReplayCounter"] = call(N.nvmlDeviceGetPcieReplayCounter, h)
    d["nvmlDeviceGetViolationStatus.0"] = call(N.nvmlDeviceGetViolationStatus, h, 0)
    for et in (0, 1):
        for ct in (0, 1):
            d[f"nvmlDeviceGetTotalEccErrors.{et}.{ct}"] = call(N.nvmlDeviceGetTotalEccErrors, h, et, ct)
            d[f"nvmlDeviceGetDetailedEccErrors.{et}.{ct}"] = call(N.nvmlDeviceGetDetailedEccErrors, h, et, ct)
            d[f"nvmlDeviceGetMemoryErrorCounter.{et}.{ct}.1"] = call(N.nvmlDeviceGetMemoryErrorCounter, h, et, ct, 1)
    for src in (0, 1):
        d[f"nvmlDeviceGetRetiredPages.{src}"] = call(N.nvmlDeviceGetRetiredPages, h, src)
        d[f"nvmlDeviceGetRetiredPages_v2.{src}"] = call(N.nvmlDeviceGetRetiredPages_v2, h, src)
    fabric = N.c_nvmlGpuFabricInfo_t()
    d["nvmlDeviceGetGpuFabricInfo"] = call(lambda: N.nvmlDeviceGetGpuFabricInfo(h, ctypes.byref(fabric)) and None or fabric)
    for link in (0, 17):
        d[f"nvmlDeviceGetNvLinkState.{link}"] = call(N.nvmlDeviceGetNvLinkState, h, link)
        d[f"nvmlDeviceGetNvLinkVersion.{link}"] = call(N.nvmlDeviceGetNvLinkVersion, h, link)
        d[f"nvmlDeviceGetNvLinkCapability.{link}.0"] = call(N.nvmlDeviceGetNvLinkCapability, h, link, 0)
        d[f"nvmlDeviceGetNvLinkRemoteDeviceType.{link}"] = call(N.nvmlDeviceGetNvLinkRemoteDeviceType, h, link)
        # pynvml binds nvmlDeviceGetNvLinkRemotePciInfo_v2; the v1 symbol takes the same struct.
        d[f"nvmlDeviceGetNvLinkRemotePciInfo_v2.{link}"] = call(N.nvmlDeviceGetNvLinkRemotePciInfo, h, link)
    d["nvmlDeviceGetAccountingStats.1"] = call(N.nvmlDeviceGetAccountingStats, h, 1)
    d["nvmlDeviceGetMigDeviceHandleByIndex.0"] = call(N.nvmlDeviceGetMigDeviceHandleByIndex, h, 0)
    d["nvmlDeviceGetDeviceHandleFromMigDeviceHandle"] = call(N.nvmlDeviceGetDeviceHandleFromMigDeviceHandle, h)
    d["nvmlDeviceGetProcessUtilization"] = call(N.nvmlDeviceGetProcessUtilization, h, 0)
    d["nvmlDeviceGetRunningProcessDetailList"] = call(
        N.nvmlDeviceGetRunningProcessDetailList, h, N.nvmlProcessDetailList_v1, 0)
    d["nvmlDeviceGetCpuAffinity"] = call(N.nvmlDeviceGetCpuAffinity, h, 4)
    d["nvmlDeviceGetCpuAffinityWithinScope"] = call(N.nvmlDeviceGetCpuAffinityWithinScope, h, 4, 0)
    d["nvmlDeviceGetMemoryAffinity"] = call(N.nvmlDeviceGetMemoryAffinity, h, 1, 0)
    d["nvmlDeviceGetTopologyNearestGpus.0"] = call(N.nvmlDeviceGetTopologyNearestGpus, h, 0)
    d["nvmlDeviceGetTopologyCommonAncestor.self"] = call(N.nvmlDeviceGetTopologyCommonAncestor, h, h)
    d["nvmlDeviceOnSameBoard.self"] = call(N.nvmlDeviceOnSameBoard, h, h)
    other = handles[-1]
    d["nvmlDeviceGetP2PStatus.last.0"] = call(N.nvmlDeviceGetP2PStatus, h, other, 0)
    d["nvmlDeviceGetTopologyCommonAncestor.last"] = call(N.nvmlDeviceGetTopologyCommonAncestor, h, other)
    d["nvmlDeviceOnSameBoard.last"] = call(N.nvmlDeviceOnSameBoard, h, other)
    try:
        raw = N.nvmlDeviceGetFieldValues(h, FIELD_IDS)
        fv_raw[:] = list(raw)
        fv = {"ok": plain(list(raw))}
    except N.NVMLError as e:
        fv = {"err": e.value}
    if "ok" in fv:
        fv = {"ok": [{"fieldId": v["fieldId"], "nvmlReturn": v["nvmlReturn"], "valueType": v["valueType"],
                      "value": field_value(v)} for v in fv["ok"]]}
    d["nvmlDeviceGetFieldValues"] = fv
    e1 = N.nvmlDeviceGetTotalEnergyConsumption(h)
    time.sleep(0.05)
    d["energy_delta_50ms"] = N.nvmlDeviceGetTotalEnergyConsumption(h) - e1
    return d


def main():
    N.nvmlInit()
    out = {"system": {}, "devices": [], "lookups": {}}
    s = out["system"]
    for name in ["nvmlSystemGetDriverVersion", "nvmlSystemGetNVMLVersion", "nvmlSystemGetCudaDriverVersion",
                 "nvmlSystemGetCudaDriverVersion_v2", "nvmlDeviceGetCount", "nvmlUnitGetCount",
                 "nvmlGetExcludedDeviceCount", "nvmlSystemGetHicVersion"]:
        s[name] = call(getattr(N, name))
    s["nvmlSystemGetProcessName.self"] = call(N.nvmlSystemGetProcessName, __import__("os").getpid())
    s["nvmlSystemGetTopologyGpuSet.0"] = call(N.nvmlSystemGetTopologyGpuSet, 0)
    s["nvmlErrorString.3"] = call(N.nvmlErrorString, 3)
    s["nvmlErrorString.999"] = call(N.nvmlErrorString, 999)
    s["nvmlUnitGetHandleByIndex.0"] = call(N.nvmlUnitGetHandleByIndex, 0)
    s["nvmlGetExcludedDeviceInfoByIndex.0"] = call(N.nvmlGetExcludedDeviceInfoByIndex, 0)
    # The event set API: create, register, wait (times out: nothing happens on an idle GPU), free.
    count = N.nvmlDeviceGetCount()
    handles = [N.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
    es = N.nvmlEventSetCreate()
    s["nvmlDeviceRegisterEvents"] = call(N.nvmlDeviceRegisterEvents, handles[0], N.nvmlEventTypeXidCriticalError, es)
    s["nvmlEventSetWait_v2"] = call(N.nvmlEventSetWait_v2, es, 10)
    s["nvmlEventSetWait"] = call(N.nvmlEventSetWait, es, 10)
    s["nvmlEventSetFree"] = call(N.nvmlEventSetFree, es)
    s["nvmlDeviceGetHandleByIndex.out_of_range"] = call(N.nvmlDeviceGetHandleByIndex, count)

    for i, h in enumerate(handles):
        out["devices"].append(probe_device(h, handles))
    # Lookups: every identity resolves back to the same device.
    lk = out["lookups"]
    for i, dev in enumerate(out["devices"]):
        for key, fn, arg in [("uuid", N.nvmlDeviceGetHandleByUUID, dev["nvmlDeviceGetUUID"].get("ok")),
                             ("serial", N.nvmlDeviceGetHandleBySerial, dev["nvmlDeviceGetSerial"].get("ok")),
                             ("pci", N.nvmlDeviceGetHandleByPciBusId,
                              (dev["nvmlDeviceGetPciInfo"].get("ok") or {}).get("busId"))]:
            r = call(fn, (arg or "").encode())
            if "ok" in r:
                r = {"ok": N.nvmlDeviceGetIndex(fn((arg or "").encode()))}
            lk.setdefault(key, []).append(r)
    lk["uuid.unknown"] = call(N.nvmlDeviceGetHandleByUUID, b"GPU-00000000-0000-4000-8000-000000000000")
    lk["serial.unknown"] = call(N.nvmlDeviceGetHandleBySerial, b"0000000000000")
    lk["pci.unknown"] = call(N.nvmlDeviceGetHandleByPciBusId, b"0000ABCD:FF:1F.0")
    N.nvmlShutdown()
    s["after_shutdown"] = call(N.nvmlDeviceGetCount)
    json.dump(out, sys.stdout, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
