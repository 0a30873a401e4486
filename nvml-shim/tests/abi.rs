//! ABI discipline of every implemented NVML function, called through the rlib exactly
//! as C calls the cdylib: NULL out-pointers, short and exact-fit string buffers, calls
//! before init and after shutdown, invalid and foreign device handles, struct versions,
//! the two-call count protocol, init reference counting, error strings, 16 threads at
//! once and use after `fork()`.
//!
//! The library loads its node once per process, so each case runs in a fresh child
//! process (see `common`); the parent tests only start children and read what they say.

mod common;

use std::cell::UnsafeCell;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{c_char, c_uint, CStr, CString};
use std::ptr::null_mut;

use nvidia_ml::exports::device_ids::*;
use nvidia_ml::exports::ecc::*;
use nvidia_ml::exports::events::*;
use nvidia_ml::exports::fields::*;
use nvidia_ml::exports::internal::*;
use nvidia_ml::exports::mig::*;
use nvidia_ml::exports::modes::*;
use nvidia_ml::exports::nvlink::*;
use nvidia_ml::exports::processes::*;
use nvidia_ml::exports::system::*;
use nvidia_ml::exports::telemetry::*;
use nvidia_ml::exports::topology::*;
use nvml_abi::consts::*;
use nvml_abi::{
    nvmlDevice_t, nvmlEventSet_t, nvmlMemory_t, nvmlMemory_v2, nvmlMemory_v2_t, nvmlProcessDetailList_v1, nvmlProcessDetailList_v1_t,
    nvmlProcessDetail_v1_t, nvmlReturn_t, ret, struct_version,
};

use common::{current_case, run_case, scratch_dir};

// ---------------------------------------------------------------------------------------
// The tables
// ---------------------------------------------------------------------------------------

/// How many device handles a function takes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Handles {
    None,
    One,
    Two,
}

/// Arguments for one call: the handles to pass, which pointer arguments to pass as NULL
/// (bit i = pointer i), and scratch memory the non-NULL pointers point into.
struct Args {
    dev: nvmlDevice_t,
    peer: nvmlDevice_t,
    set: nvmlEventSet_t,
    uuid: CString,
    serial: CString,
    bus_id: CString,
    mem_clock: c_uint,
    null: u32,
    scratch: [UnsafeCell<[u64; 128]>; 4],
}

impl Args {
    fn new(dev: nvmlDevice_t, peer: nvmlDevice_t) -> Args {
        Args {
            dev,
            peer,
            set: null_mut(),
            uuid: CString::new("GPU-00000000-0000-0000-0000-000000000000").unwrap(),
            serial: CString::new("0").unwrap(),
            bus_id: CString::new("00000000:00:00.0").unwrap(),
            mem_clock: 0,
            null: 0,
            scratch: std::array::from_fn(|_| UnsafeCell::new([0; 128])),
        }
    }

    /// Pointer argument `i`: NULL when its bit is set, else 1 KiB of zeroed scratch.
    fn o<T>(&self, i: usize) -> *mut T {
        if self.null & (1 << i) != 0 {
            return null_mut();
        }
        let cell = self.scratch[i].get();
        // SAFETY: the scratch is ours and nothing else borrows it during a call.
        unsafe { (*cell).fill(0) };
        cell.cast()
    }

    /// A C string argument `i`: NULL when its bit is set.
    fn s(&self, i: usize, text: &CString) -> *const c_char {
        if self.null & (1 << i) != 0 {
            std::ptr::null()
        } else {
            text.as_ptr()
        }
    }
}

/// One exported function: how to call it, how many of its pointer arguments must be
/// checked for NULL, and which device handles it takes.
struct Row {
    name: &'static str,
    handles: Handles,
    /// Pointer arguments that NULL must turn into INVALID_ARGUMENT.
    ptrs: u32,
    /// Whether the function needs nvmlInit (everything but the export table does).
    needs_init: bool,
    /// The function answers INVALID_ARGUMENT (or NOT_SUPPORTED) even to valid arguments in
    /// these configurations (nothing to return: no units, no excluded devices, MIG
    /// disabled), so its NULL check proves little and coverage doesn't require one.
    vacuous: bool,
    call: fn(&Args) -> nvmlReturn_t,
}

impl Row {
    fn no_init(mut self) -> Row {
        self.needs_init = false;
        self
    }
    fn vacuous(mut self) -> Row {
        self.vacuous = true;
        self
    }
}

macro_rules! row {
    ($h:ident, $ptrs:expr, $a:ident => $f:ident($($arg:expr),* $(,)?)) => {
        Row {
            name: stringify!($f),
            handles: Handles::$h,
            ptrs: $ptrs,
            needs_init: true,
            vacuous: false,
            call: |$a: &Args| unsafe { $f($($arg),*) },
        }
    };
}

/// Points a `nvmlMemory_v2_t` at its version, as callers must.
unsafe fn mem_v2(p: *mut nvmlMemory_v2_t) -> *mut nvmlMemory_v2_t {
    if !p.is_null() {
        (*p).version = nvmlMemory_v2;
    }
    p
}

/// Points an `nvmlEccSramErrorStatus_t` (v1, 104 bytes) at its version.
unsafe fn sram_v1(
    p: *mut nvidia_ml::exports::telemetry::nvmlEccSramErrorStatus_t,
) -> *mut nvidia_ml::exports::telemetry::nvmlEccSramErrorStatus_t {
    if !p.is_null() {
        *p.cast::<c_uint>() = struct_version(104, 1);
    }
    p
}

/// An empty, correctly versioned process detail list for compute processes.
unsafe fn detail_list(p: *mut nvmlProcessDetailList_v1_t) -> *mut nvmlProcessDetailList_v1_t {
    if !p.is_null() {
        *p = nvmlProcessDetailList_v1_t { version: nvmlProcessDetailList_v1, mode: 0, numProcArrayEntries: 0, procArray: null_mut() };
    }
    p
}

fn pid() -> c_uint {
    std::process::id()
}

/// Every implemented function but init/shutdown, nvmlErrorString and nvmlEventSetFree
/// (cases of their own), each with valid arguments. List functions appear here with
/// their count pointer; their array protocol is checked by [`list_rows`].
fn rows() -> Vec<Row> {
    vec![
        // device_ids.rs
        row!(None, 1, a => nvmlDeviceGetCount(a.o(0))),
        row!(None, 1, a => nvmlDeviceGetCount_v2(a.o(0))),
        row!(None, 1, a => nvmlDeviceGetHandleByIndex(0, a.o(0))),
        row!(None, 1, a => nvmlDeviceGetHandleByIndex_v2(0, a.o(0))),
        row!(None, 2, a => nvmlDeviceGetHandleByUUID(a.s(1, &a.uuid), a.o(0))),
        row!(None, 2, a => nvmlDeviceGetHandleBySerial(a.s(1, &a.serial), a.o(0))),
        row!(None, 2, a => nvmlDeviceGetHandleByPciBusId(a.s(1, &a.bus_id), a.o(0))),
        row!(None, 2, a => nvmlDeviceGetHandleByPciBusId_v2(a.s(1, &a.bus_id), a.o(0))),
        row!(One, 1, a => nvmlDeviceGetIndex(a.dev, a.o(0))),
        row!(One, 1, a => nvmlDeviceGetMinorNumber(a.dev, a.o(0))),
        row!(One, 1, a => nvmlDeviceGetName(a.dev, a.o(0), 256)),
        row!(One, 1, a => nvmlDeviceGetUUID(a.dev, a.o(0), 256)),
        row!(One, 1, a => nvmlDeviceGetSerial(a.dev, a.o(0), 256)),
        row!(One, 1, a => nvmlDeviceGetBrand(a.dev, a.o(0))),
        row!(One, 1, a => nvmlDeviceGetArchitecture(a.dev, a.o(0))),
        row!(One, 2, a => nvmlDeviceGetCudaComputeCapability(a.dev, a.o(0), a.o(1))),
        row!(One, 1, a => nvmlDeviceGetBoardPartNumber(a.dev, a.o(0), 256)),
        row!(One, 1, a => nvmlDeviceGetBoardId(a.dev, a.o(0))),
        row!(One, 1, a => nvmlDeviceGetModuleId(a.dev, a.o(0))),
        row!(One, 1, a => nvmlDeviceGetMultiGpuBoard(a.dev, a.o(0))),
        row!(One, 1, a => nvmlDeviceGetVbiosVersion(a.dev, a.o(0), 256)),
        row!(One, 1, a => nvmlDeviceGetInforomImageVersion(a.dev, a.o(0), 256)),
        row!(One, 1, a => nvmlDeviceGetInforomVersion(a.dev, NVML_INFOROM_OEM, a.o(0), 256)),
        row!(One, 0, a => nvmlDeviceValidateInforom(a.dev)),
        row!(One, 1, a => nvmlDeviceGetNumGpuCores(a.dev, a.o(0))),
        row!(One, 1, a => nvmlDeviceGetMemoryBusWidth(a.dev, a.o(0))),
        row!(One, 1, a => nvmlDeviceGetPciInfo(a.dev, a.o(0))),
        row!(One, 1, a => nvmlDeviceGetPciInfo_v2(a.dev, a.o(0))),
        row!(One, 1, a => nvmlDeviceGetPciInfo_v3(a.dev, a.o(0))),
        row!(One, 1, a => nvmlDeviceGetMaxPcieLinkGeneration(a.dev, a.o(0))),
        row!(One, 1, a => nvmlDeviceGetGpuMaxPcieLinkGeneration(a.dev, a.o(0))),
        row!(One, 1, a => nvmlDeviceGetMaxPcieLinkWidth(a.dev, a.o(0))),
        row!(One, 1, a => nvmlDeviceGetCurrPcieLinkGeneration(a.dev, a.o(0))),
        row!(One, 1, a => nvmlDeviceGetCurrPcieLinkWidth(a.dev, a.o(0))),
        row!(One, 1, a => nvmlDeviceGetPcieLinkMaxSpeed(a.dev, a.o(0))),
        row!(One, 1, a => nvmlDeviceGetPcieSpeed(a.dev, a.o(0))),
        row!(One, 1, a => nvmlDeviceGetBusType(a.dev, a.o(0))),
        // telemetry.rs
        row!(One, 1, a => nvmlDeviceGetMemoryInfo(a.dev, a.o(0))),
        row!(One, 1, a => nvmlDeviceGetMemoryInfo_v2(a.dev, mem_v2(a.o(0)))),
        row!(One, 1, a => nvmlDeviceGetBAR1MemoryInfo(a.dev, a.o(0))),
        row!(One, 1, a => nvmlDeviceGetUtilizationRates(a.dev, a.o(0))),
        row!(One, 2, a => nvmlDeviceGetEncoderUtilization(a.dev, a.o(0), a.o(1))),
        row!(One, 2, a => nvmlDeviceGetDecoderUtilization(a.dev, a.o(0), a.o(1))),
        row!(One, 2, a => nvmlDeviceGetJpgUtilization(a.dev, a.o(0), a.o(1))),
        row!(One, 2, a => nvmlDeviceGetOfaUtilization(a.dev, a.o(0), a.o(1))),
        row!(One, 1, a => nvmlDeviceGetTemperature(a.dev, NVML_TEMPERATURE_GPU, a.o(0))),
        row!(One, 1, a => nvmlDeviceGetTemperatureThreshold(a.dev, NVML_TEMPERATURE_THRESHOLD_SLOWDOWN, a.o(0))),
        row!(One, 1, a => nvmlDeviceGetFanSpeed(a.dev, a.o(0))),
        row!(One, 1, a => nvmlDeviceGetFanSpeed_v2(a.dev, 0, a.o(0))),
        row!(One, 1, a => nvmlDeviceGetTargetFanSpeed(a.dev, 0, a.o(0))),
        row!(One, 1, a => nvmlDeviceGetNumFans(a.dev, a.o(0))),
        row!(One, 1, a => nvmlDeviceGetPowerUsage(a.dev, a.o(0))),
        row!(One, 1, a => nvmlDeviceGetPowerManagementMode(a.dev, a.o(0))),
        row!(One, 1, a => nvmlDeviceGetPowerManagementLimit(a.dev, a.o(0))),
        row!(One, 1, a => nvmlDeviceGetPowerManagementDefaultLimit(a.dev, a.o(0))),
        row!(One, 1, a => nvmlDeviceGetEnforcedPowerLimit(a.dev, a.o(0))),
        row!(One, 2, a => nvmlDeviceGetPowerManagementLimitConstraints(a.dev, a.o(0), a.o(1))),
        row!(One, 1, a => nvmlDeviceGetPowerSource(a.dev, a.o(0))),
        row!(One, 1, a => nvmlDeviceGetTotalEnergyConsumption(a.dev, a.o(0))),
        row!(One, 1, a => nvmlDeviceGetPerformanceState(a.dev, a.o(0))),
        row!(One, 1, a => nvmlDeviceGetPowerState(a.dev, a.o(0))),
        row!(One, 1, a => nvmlDeviceGetSupportedPerformanceStates(a.dev, a.o(0), 128)),
        row!(One, 1, a => nvmlDeviceGetClockInfo(a.dev, NVML_CLOCK_GRAPHICS, a.o(0))),
        row!(One, 1, a => nvmlDeviceGetMaxClockInfo(a.dev, NVML_CLOCK_GRAPHICS, a.o(0))),
        row!(One, 1, a => nvmlDeviceGetApplicationsClock(a.dev, NVML_CLOCK_GRAPHICS, a.o(0))),
        row!(One, 1, a => nvmlDeviceGetDefaultApplicationsClock(a.dev, NVML_CLOCK_GRAPHICS, a.o(0))),
        row!(One, 1, a => nvmlDeviceGetMaxCustomerBoostClock(a.dev, NVML_CLOCK_GRAPHICS, a.o(0))),
        row!(One, 1, a => nvmlDeviceGetClock(a.dev, NVML_CLOCK_SM, NVML_CLOCK_ID_CURRENT, a.o(0))),
        row!(One, 2, a => nvmlDeviceGetMinMaxClockOfPState(a.dev, NVML_CLOCK_GRAPHICS, 0, a.o(0), a.o(1))),
        row!(One, 1, a => nvmlDeviceGetSupportedMemoryClocks(a.dev, a.o(0), a.o(1))),
        row!(One, 1, a => nvmlDeviceGetSupportedGraphicsClocks(a.dev, a.mem_clock, a.o(0), a.o(1))),
        row!(One, 1, a => nvmlDeviceGetCurrentClocksThrottleReasons(a.dev, a.o(0))),
        row!(One, 1, a => nvmlDeviceGetCurrentClocksEventReasons(a.dev, a.o(0))),
        row!(One, 1, a => nvmlDeviceGetSupportedClocksThrottleReasons(a.dev, a.o(0))),
        row!(One, 1, a => nvmlDeviceGetSupportedClocksEventReasons(a.dev, a.o(0))),
        row!(One, 1, a => nvmlDeviceGetViolationStatus(a.dev, 0, a.o(0))),
        row!(One, 1, a => nvmlDeviceGetPcieThroughput(a.dev, NVML_PCIE_UTIL_TX_BYTES, a.o(0))),
        row!(One, 1, a => nvmlDeviceGetPcieReplayCounter(a.dev, a.o(0))),
        row!(One, 1, a => nvmlDeviceGetConfComputeProtectedMemoryUsage(a.dev, a.o(0))),
        row!(One, 1, a => nvmlDeviceGetSramEccErrorStatus(a.dev, sram_v1(a.o(0)))),
        // ecc.rs
        row!(One, 1, a => nvmlDeviceGetTotalEccErrors(a.dev, NVML_MEMORY_ERROR_TYPE_CORRECTED, NVML_VOLATILE_ECC, a.o(0))),
        row!(One, 1, a => nvmlDeviceGetDetailedEccErrors(a.dev, NVML_MEMORY_ERROR_TYPE_CORRECTED, NVML_VOLATILE_ECC, a.o(0))),
        row!(One, 1, a => nvmlDeviceGetMemoryErrorCounter(a.dev, NVML_MEMORY_ERROR_TYPE_CORRECTED, NVML_VOLATILE_ECC, 0, a.o(0))),
        row!(One, 1, a => nvmlDeviceGetRetiredPages(a.dev, 0, a.o(0), a.o(1))),
        row!(One, 1, a => nvmlDeviceGetRetiredPages_v2(a.dev, 0, a.o(0), a.o(1), a.o(2))),
        row!(One, 1, a => nvmlDeviceGetRetiredPagesPendingStatus(a.dev, a.o(0))),
        row!(One, 4, a => nvmlDeviceGetRemappedRows(a.dev, a.o(0), a.o(1), a.o(2), a.o(3))),
        row!(One, 1, a => nvmlDeviceGetRowRemapperHistogram(a.dev, a.o(0))),
        row!(One, 1, a => nvmlDeviceGetGpuFabricInfo(a.dev, a.o(0))),
        row!(One, 1, a => nvmlDeviceGetNvLinkState(a.dev, 0, a.o(0))),
        row!(One, 1, a => nvmlDeviceGetNvLinkVersion(a.dev, 0, a.o(0))),
        row!(One, 1, a => nvmlDeviceGetNvLinkCapability(a.dev, 0, 0, a.o(0))),
        row!(One, 1, a => nvmlDeviceGetNvLinkRemoteDeviceType(a.dev, 0, a.o(0))),
        row!(One, 1, a => nvmlDeviceGetNvLinkRemotePciInfo(a.dev, 0, a.o(0))),
        row!(One, 1, a => nvmlDeviceGetNvLinkRemotePciInfo_v2(a.dev, 0, a.o(0))),
        // events.rs (nvmlEventSetFree: see `events`)
        row!(None, 1, a => nvmlEventSetCreate(a.o(0))),
        row!(One, 1, a => nvmlDeviceGetSupportedEventTypes(a.dev, a.o(0))),
        row!(One, 0, a => nvmlDeviceRegisterEvents(a.dev, nvml_abi::event::PSTATE, a.set)),
        row!(None, 1, a => nvmlEventSetWait_v2(a.set, a.o(0), 0)),
        row!(None, 1, a => nvmlEventSetWait(a.set, a.o(0), 0)),
        // fields.rs
        row!(One, 1, a => nvmlDeviceGetFieldValues(a.dev, 1, a.o(0))),
        // internal.rs
        row!(None, 2, a => nvmlInternalGetExportTable(a.o(0), a.o::<[u8; 16]>(1))).no_init(),
        // modes.rs
        row!(One, 1, a => nvmlDeviceGetPersistenceMode(a.dev, a.o(0))),
        row!(One, 1, a => nvmlDeviceGetComputeMode(a.dev, a.o(0))),
        row!(One, 1, a => nvmlDeviceGetDisplayMode(a.dev, a.o(0))),
        row!(One, 1, a => nvmlDeviceGetDisplayActive(a.dev, a.o(0))),
        row!(One, 2, a => nvmlDeviceGetEccMode(a.dev, a.o(0), a.o(1))),
        row!(One, 1, a => nvmlDeviceGetDefaultEccMode(a.dev, a.o(0))),
        row!(One, 1, a => nvmlDeviceGetAccountingMode(a.dev, a.o(0))),
        row!(One, 1, a => nvmlDeviceGetAccountingBufferSize(a.dev, a.o(0))),
        row!(One, 1, a => nvmlDeviceGetAccountingPids(a.dev, a.o(0), a.o(1))),
        row!(One, 1, a => nvmlDeviceGetAccountingStats(a.dev, pid(), a.o(0))),
        row!(One, 1, a => nvmlDeviceGetVirtualizationMode(a.dev, a.o(0))),
        row!(One, 1, a => nvmlDeviceGetGspFirmwareVersion(a.dev, a.o(0))),
        row!(One, 2, a => nvmlDeviceGetGspFirmwareMode(a.dev, a.o(0), a.o(1))),
        row!(One, 2, a => nvmlDeviceGetMigMode(a.dev, a.o(0), a.o(1))),
        row!(One, 1, a => nvmlDeviceGetMaxMigDeviceCount(a.dev, a.o(0))),
        row!(One, 1, a => nvmlDeviceIsMigDeviceHandle(a.dev, a.o(0))),
        // INVALID_ARGUMENT while MIG is disabled, as in these configurations.
        row!(One, 1, a => nvmlDeviceGetMigDeviceHandleByIndex(a.dev, 0, a.o(0))).vacuous(),
        row!(One, 1, a => nvmlDeviceGetDeviceHandleFromMigDeviceHandle(a.dev, a.o(0))).vacuous(),
        row!(One, 1, a => nvmlDeviceGetGpuInstanceId(a.dev, a.o(0))),
        row!(One, 1, a => nvmlDeviceGetComputeInstanceId(a.dev, a.o(0))),
        // mig.rs (device-level queries; MIG is disabled in these configurations)
        row!(One, 1, a => nvmlDeviceGetGpuInstanceProfileInfo(a.dev, 0, a.o(0))),
        row!(One, 1, a => nvmlDeviceGetGpuInstancePossiblePlacements(a.dev, 0, a.o(1), a.o(0))),
        row!(One, 1, a => nvmlDeviceGetGpuInstancePossiblePlacements_v2(a.dev, 0, a.o(1), a.o(0))),
        // NOT_SUPPORTED before it looks at the pointer while MIG is disabled.
        row!(One, 1, a => nvmlDeviceGetGpuInstanceRemainingCapacity(a.dev, 0, a.o(0))).vacuous(),
        row!(One, 1, a => nvmlDeviceGetGpuInstances(a.dev, 0, a.o(1), a.o(0))),
        row!(One, 1, a => nvmlDeviceGetGpuInstanceById(a.dev, 1, a.o(0))),
        row!(One, 1, a => nvmlDeviceGetAttributes(a.dev, a.o(0))),
        row!(One, 1, a => nvmlDeviceGetAttributes_v2(a.dev, a.o(0))),
        // processes.rs
        row!(One, 1, a => nvmlDeviceGetComputeRunningProcesses(a.dev, a.o(0), a.o(1))),
        row!(One, 1, a => nvmlDeviceGetComputeRunningProcesses_v2(a.dev, a.o(0), a.o(1))),
        row!(One, 1, a => nvmlDeviceGetComputeRunningProcesses_v3(a.dev, a.o(0), a.o(1))),
        row!(One, 1, a => nvmlDeviceGetGraphicsRunningProcesses(a.dev, a.o(0), a.o(1))),
        row!(One, 1, a => nvmlDeviceGetGraphicsRunningProcesses_v2(a.dev, a.o(0), a.o(1))),
        row!(One, 1, a => nvmlDeviceGetGraphicsRunningProcesses_v3(a.dev, a.o(0), a.o(1))),
        row!(One, 1, a => nvmlDeviceGetMPSComputeRunningProcesses(a.dev, a.o(0), a.o(1))),
        row!(One, 1, a => nvmlDeviceGetMPSComputeRunningProcesses_v2(a.dev, a.o(0), a.o(1))),
        row!(One, 1, a => nvmlDeviceGetMPSComputeRunningProcesses_v3(a.dev, a.o(0), a.o(1))),
        row!(One, 1, a => nvmlDeviceGetRunningProcessDetailList(a.dev, detail_list(a.o(0)))),
        row!(One, 1, a => nvmlDeviceGetProcessUtilization(a.dev, a.o(1), a.o(0), 0)),
        row!(One, 3, a => nvmlDeviceGetEncoderStats(a.dev, a.o(0), a.o(1), a.o(2))),
        row!(One, 1, a => nvmlDeviceGetEncoderSessions(a.dev, a.o(0), a.o(1))),
        row!(One, 1, a => nvmlDeviceGetFBCStats(a.dev, a.o(0))),
        row!(One, 1, a => nvmlDeviceGetFBCSessions(a.dev, a.o(0), a.o(1))),
        // system.rs
        row!(None, 1, a => nvmlSystemGetDriverVersion(a.o(0), 256)),
        row!(None, 1, a => nvmlSystemGetNVMLVersion(a.o(0), 256)),
        row!(None, 1, a => nvmlSystemGetCudaDriverVersion(a.o(0))),
        row!(None, 1, a => nvmlSystemGetCudaDriverVersion_v2(a.o(0))),
        row!(None, 1, a => nvmlSystemGetProcessName(pid(), a.o(0), 64)),
        row!(None, 1, a => nvmlSystemGetHicVersion(a.o(0), a.o(1))),
        row!(None, 1, a => nvmlSystemGetTopologyGpuSet(0, a.o(0), a.o(1))),
        row!(None, 1, a => nvmlUnitGetCount(a.o(0))),
        row!(None, 1, a => nvmlUnitGetHandleByIndex(0, a.o(0))).vacuous(),
        row!(None, 1, a => nvmlGetExcludedDeviceCount(a.o(0))),
        row!(None, 1, a => nvmlGetBlacklistDeviceCount(a.o(0))),
        row!(None, 1, a => nvmlGetExcludedDeviceInfoByIndex(0, a.o(0))).vacuous(),
        row!(None, 1, a => nvmlGetBlacklistDeviceInfoByIndex(0, a.o(0))).vacuous(),
        // topology.rs
        row!(One, 1, a => nvmlDeviceGetCpuAffinity(a.dev, 4, a.o(0))),
        row!(One, 1, a => nvmlDeviceGetCpuAffinityWithinScope(a.dev, 4, a.o(0), NVML_AFFINITY_SCOPE_NODE)),
        row!(One, 1, a => nvmlDeviceGetMemoryAffinity(a.dev, 4, a.o(0), NVML_AFFINITY_SCOPE_NODE)),
        row!(Two, 1, a => nvmlDeviceGetTopologyCommonAncestor(a.dev, a.peer, a.o(0))),
        row!(One, 1, a => nvmlDeviceGetTopologyNearestGpus(a.dev, NVML_TOPOLOGY_SYSTEM, a.o(0), a.o(1))),
        row!(Two, 1, a => nvmlDeviceGetP2PStatus(a.dev, a.peer, NVML_P2P_CAPS_INDEX_READ, a.o(0))),
        row!(Two, 1, a => nvmlDeviceOnSameBoard(a.dev, a.peer, a.o(0))),
    ]
}

/// Functions checked by cases of their own rather than by [`rows`].
const OWN_CASES: &[&str] = &["nvmlInit", "nvmlInit_v2", "nvmlInitWithFlags", "nvmlShutdown", "nvmlErrorString", "nvmlEventSetFree"];

/// Not yet in these tables: the MIG functions that change the node (they need a live
/// state file) or take GPU/compute-instance handles (they need MIG enabled and instances
/// created), and the versioned profile query. Each name here is a known gap; the coverage
/// test fails when one is no longer implemented, so the list can only shrink.
const NOT_YET_COVERED: &[&str] = &[
    "nvmlDeviceSetMigMode",
    "nvmlDeviceGetGpuInstanceProfileInfoV",
    "nvmlDeviceCreateGpuInstance",
    "nvmlDeviceCreateGpuInstanceWithPlacement",
    "nvmlGpuInstanceDestroy",
    "nvmlGpuInstanceGetInfo",
    "nvmlGpuInstanceGetComputeInstanceProfileInfo",
    "nvmlGpuInstanceGetComputeInstanceProfileInfoV",
    "nvmlGpuInstanceGetComputeInstanceRemainingCapacity",
    "nvmlGpuInstanceGetComputeInstancePossiblePlacements",
    "nvmlGpuInstanceCreateComputeInstance",
    "nvmlGpuInstanceCreateComputeInstanceWithPlacement",
    "nvmlComputeInstanceDestroy",
    "nvmlGpuInstanceGetComputeInstances",
    "nvmlGpuInstanceGetComputeInstanceById",
    "nvmlComputeInstanceGetInfo",
    "nvmlComputeInstanceGetInfo_v2",
];

/// A string getter `(buffer, length)` and the buffer size NVIDIA documents for it.
struct StrRow {
    label: &'static str,
    nvml_size: usize,
    call: fn(&Args, *mut c_char, c_uint) -> nvmlReturn_t,
}

macro_rules! str_row {
    ($label:expr, $size:expr, $a:ident, $buf:ident, $len:ident => $call:expr) => {
        StrRow { label: $label, nvml_size: $size, call: |$a: &Args, $buf: *mut c_char, $len: c_uint| unsafe { $call } }
    };
}

fn str_rows() -> Vec<StrRow> {
    vec![
        str_row!("nvmlDeviceGetName", 64, a, b, n => nvmlDeviceGetName(a.dev, b, n)),
        str_row!("nvmlDeviceGetUUID", 80, a, b, n => nvmlDeviceGetUUID(a.dev, b, n)),
        str_row!("nvmlDeviceGetSerial", 30, a, b, n => nvmlDeviceGetSerial(a.dev, b, n)),
        str_row!("nvmlDeviceGetBoardPartNumber", 80, a, b, n => nvmlDeviceGetBoardPartNumber(a.dev, b, n)),
        str_row!("nvmlDeviceGetVbiosVersion", 32, a, b, n => nvmlDeviceGetVbiosVersion(a.dev, b, n)),
        str_row!("nvmlDeviceGetInforomImageVersion", 16, a, b, n => nvmlDeviceGetInforomImageVersion(a.dev, b, n)),
        str_row!("nvmlDeviceGetInforomVersion(OEM)", 16, a, b, n => nvmlDeviceGetInforomVersion(a.dev, NVML_INFOROM_OEM, b, n)),
        str_row!("nvmlDeviceGetInforomVersion(ECC)", 16, a, b, n => nvmlDeviceGetInforomVersion(a.dev, NVML_INFOROM_ECC, b, n)),
        str_row!("nvmlDeviceGetInforomVersion(POWER)", 16, a, b, n => nvmlDeviceGetInforomVersion(a.dev, NVML_INFOROM_POWER, b, n)),
        str_row!("nvmlSystemGetDriverVersion", 80, _a, b, n => nvmlSystemGetDriverVersion(b, n)),
        str_row!("nvmlSystemGetNVMLVersion", 80, _a, b, n => nvmlSystemGetNVMLVersion(b, n)),
    ]
}

/// A list getter in the two-call protocol: `*count` is the capacity in, the size out.
struct ListRow {
    label: &'static str,
    elem: usize,
    call: fn(&Args, *mut c_uint, *mut u8) -> nvmlReturn_t,
}

macro_rules! list_row {
    ($ty:ty, $a:ident, $count:ident, $arr:ident => $f:ident($($arg:expr),* $(,)?)) => {
        ListRow {
            label: stringify!($f),
            elem: std::mem::size_of::<$ty>(),
            call: |$a: &Args, $count: *mut c_uint, $arr: *mut u8| unsafe { $f($($arg),*) },
        }
    };
}

/// The detail list's own counter and array, driven like the other lists.
unsafe fn detail_list_protocol(a: &Args, count: *mut c_uint, arr: *mut u8) -> nvmlReturn_t {
    if count.is_null() {
        return nvmlDeviceGetRunningProcessDetailList(a.dev, null_mut());
    }
    let mut list =
        nvmlProcessDetailList_v1_t { version: nvmlProcessDetailList_v1, mode: 0, numProcArrayEntries: *count, procArray: arr.cast() };
    let rc = nvmlDeviceGetRunningProcessDetailList(a.dev, &mut list);
    *count = list.numProcArrayEntries;
    rc
}

fn list_rows() -> Vec<ListRow> {
    use nvml_abi::{nvmlEncoderSessionInfo_t, nvmlProcessInfo_t, nvmlProcessInfo_v1_t};
    vec![
        list_row!(nvmlProcessInfo_v1_t, a, c, p => nvmlDeviceGetComputeRunningProcesses(a.dev, c, p.cast())),
        list_row!(nvmlProcessInfo_t, a, c, p => nvmlDeviceGetComputeRunningProcesses_v2(a.dev, c, p.cast())),
        list_row!(nvmlProcessInfo_t, a, c, p => nvmlDeviceGetComputeRunningProcesses_v3(a.dev, c, p.cast())),
        list_row!(nvmlProcessInfo_v1_t, a, c, p => nvmlDeviceGetGraphicsRunningProcesses(a.dev, c, p.cast())),
        list_row!(nvmlProcessInfo_t, a, c, p => nvmlDeviceGetGraphicsRunningProcesses_v2(a.dev, c, p.cast())),
        list_row!(nvmlProcessInfo_t, a, c, p => nvmlDeviceGetGraphicsRunningProcesses_v3(a.dev, c, p.cast())),
        list_row!(nvmlProcessInfo_v1_t, a, c, p => nvmlDeviceGetMPSComputeRunningProcesses(a.dev, c, p.cast())),
        list_row!(nvmlProcessInfo_t, a, c, p => nvmlDeviceGetMPSComputeRunningProcesses_v2(a.dev, c, p.cast())),
        list_row!(nvmlProcessInfo_t, a, c, p => nvmlDeviceGetMPSComputeRunningProcesses_v3(a.dev, c, p.cast())),
        list_row!(nvmlProcessDetail_v1_t, a, c, p => detail_list_protocol(a, c, p)),
        list_row!(c_uint, a, c, p => nvmlDeviceGetAccountingPids(a.dev, c, p.cast())),
        list_row!(nvmlEncoderSessionInfo_t, a, c, p => nvmlDeviceGetEncoderSessions(a.dev, c, p.cast())),
        list_row!(u8, a, c, p => nvmlDeviceGetFBCSessions(a.dev, c, p)),
        list_row!(c_uint, a, c, p => nvmlDeviceGetSupportedMemoryClocks(a.dev, c, p.cast())),
        list_row!(c_uint, a, c, p => nvmlDeviceGetSupportedGraphicsClocks(a.dev, a.mem_clock, c, p.cast())),
        list_row!(nvmlDevice_t, a, c, p => nvmlDeviceGetTopologyNearestGpus(a.dev, NVML_TOPOLOGY_SYSTEM, c, p.cast())),
        list_row!(nvmlDevice_t, _a, c, p => nvmlSystemGetTopologyGpuSet(0, c, p.cast())),
        list_row!(u64, a, c, p => nvmlDeviceGetRetiredPages(a.dev, 0, c, p.cast())),
        list_row!(u64, a, c, p => nvmlDeviceGetRetiredPages_v2(a.dev, 0, c, p.cast(), vec![0u64; 4096].as_mut_ptr())),
    ]
}

// ---------------------------------------------------------------------------------------
// Helpers for the child cases
// ---------------------------------------------------------------------------------------

#[track_caller]
fn expect(rc: nvmlReturn_t, want: nvmlReturn_t, what: &str) {
    assert_eq!(rc, want, "{what}: got {rc} ({}), want {want} ({})", nvml_abi::error_string(rc), nvml_abi::error_string(want));
}

fn init() {
    expect(nvmlInit_v2(), ret::SUCCESS, "nvmlInit_v2");
}

fn handles() -> Vec<nvmlDevice_t> {
    let mut n = 0;
    unsafe { expect(nvmlDeviceGetCount_v2(&mut n), ret::SUCCESS, "count") };
    (0..n)
        .map(|i| {
            let mut h = null_mut();
            unsafe { expect(nvmlDeviceGetHandleByIndex_v2(i, &mut h), ret::SUCCESS, "handle by index") };
            h
        })
        .collect()
}

fn string_of(call: impl Fn(*mut c_char, c_uint) -> nvmlReturn_t) -> String {
    let text = maybe_string(call);
    expect(text.as_ref().err().copied().unwrap_or(ret::SUCCESS), ret::SUCCESS, "string getter");
    text.unwrap()
}

fn maybe_string(call: impl Fn(*mut c_char, c_uint) -> nvmlReturn_t) -> Result<String, nvmlReturn_t> {
    let mut buf = [0 as c_char; 256];
    match call(buf.as_mut_ptr(), buf.len() as c_uint) {
        ret::SUCCESS => Ok(unsafe { CStr::from_ptr(buf.as_ptr()) }.to_str().unwrap().to_string()),
        rc => Err(rc),
    }
}

/// Arguments aimed at device `index` of an initialized library.
fn args_for(devs: &[nvmlDevice_t], index: usize) -> Args {
    let mut a = Args::new(devs[index], devs[(index + 1) % devs.len()]);
    let dev = a.dev;
    a.uuid = CString::new(string_of(|b, n| unsafe { nvmlDeviceGetUUID(dev, b, n) })).unwrap();
    a.serial = CString::new(string_of(|b, n| unsafe { nvmlDeviceGetSerial(dev, b, n) })).unwrap();
    let mut pci = unsafe { std::mem::zeroed() };
    unsafe { expect(nvmlDeviceGetPciInfo_v3(dev, &mut pci), ret::SUCCESS, "pci info") };
    a.bus_id = unsafe { CStr::from_ptr(pci.busId.as_ptr()) }.to_owned();
    unsafe { expect(nvmlDeviceGetMaxClockInfo(dev, NVML_CLOCK_MEM, &mut a.mem_clock), ret::SUCCESS, "memory clock") };
    unsafe { expect(nvmlEventSetCreate(&mut a.set), ret::SUCCESS, "event set") };
    a
}

/// Pointers that are not device handles: NULL, small integers, stack and heap memory,
/// misaligned and out-of-range addresses next to the real table. None may be
/// dereferenced (a dereference would crash the child, failing its parent test).
fn bad_handles(devs: &[nvmlDevice_t], local: &mut u64, heap: &mut [u64]) -> Vec<(String, nvmlDevice_t)> {
    let first = devs[0] as usize;
    let mut bad = vec![
        ("NULL".to_string(), null_mut()),
        ("1".to_string(), 1 as nvmlDevice_t),
        ("0x1000".to_string(), 0x1000 as nvmlDevice_t),
        ("stack".to_string(), (local as *mut u64).cast()),
        ("heap".to_string(), heap.as_mut_ptr().cast()),
        ("first+1".to_string(), (first + 1) as nvmlDevice_t),
        ("first-8".to_string(), first.wrapping_sub(8) as nvmlDevice_t),
        ("usize::MAX".to_string(), usize::MAX as nvmlDevice_t),
    ];
    if devs.len() > 1 {
        let size = devs[1] as usize - first;
        bad.push(("one past the end".to_string(), (first + size * devs.len()) as nvmlDevice_t));
        bad.push(("one before the start".to_string(), first.wrapping_sub(size) as nvmlDevice_t));
        bad.push(("middle of device 0".to_string(), (first + size / 2) as nvmlDevice_t));
    }
    bad
}

/// Device handles shared with worker threads; the handles are plain addresses the library
/// hands out for the life of the process.
struct SharedDevs(Vec<nvmlDevice_t>);
// SAFETY: handles are immutable addresses into the library's device table.
unsafe impl Send for SharedDevs {}
// SAFETY: as above; nothing is written through them.
unsafe impl Sync for SharedDevs {}

impl SharedDevs {
    fn get(&self) -> &[nvmlDevice_t] {
        &self.0
    }
}

fn rc_name(rc: nvmlReturn_t) -> String {
    format!("{rc} ({})", nvml_abi::error_string(rc))
}

// ---------------------------------------------------------------------------------------
// Child cases
// ---------------------------------------------------------------------------------------

/// NULL pointers, bad handles, string buffers and list protocol on one configuration.
/// Prints `row=<name> valid=<rc>` per row for the parent's coverage check.
fn case_table() {
    init();
    let devs = handles();
    let mut args = args_for(&devs, 0);
    let mut local = 0u64;
    let mut heap = vec![0u64; 64];
    let bad = bad_handles(&devs, &mut local, &mut heap);
    let mut failures = Vec::new();

    for row in rows() {
        args.null = 0;
        let valid = (row.call)(&args);
        println!("row={} valid={}", row.name, valid);
        if valid == ret::UNINITIALIZED || (valid == ret::INVALID_ARGUMENT && !row.vacuous) {
            failures.push(format!("{}: valid arguments give {}", row.name, rc_name(valid)));
        }
        // Each pointer NULL on its own, then all of them.
        let masks: Vec<u32> = (0..row.ptrs).map(|i| 1 << i).chain((row.ptrs > 1).then_some((1 << row.ptrs) - 1)).collect();
        let mut all_invalid = !masks.is_empty();
        for mask in masks {
            args.null = mask;
            let rc = (row.call)(&args);
            all_invalid &= rc == ret::INVALID_ARGUMENT;
            let ok = rc == ret::INVALID_ARGUMENT || (valid == ret::NOT_SUPPORTED && rc == ret::NOT_SUPPORTED);
            if !ok {
                failures.push(format!("{}: NULL pointer mask {mask:#b} gives {} (valid call: {})", row.name, rc_name(rc), rc_name(valid)));
            }
        }
        if all_invalid {
            println!("nullchecked={}", row.name);
        }
        args.null = 0;
        let (dev, peer) = (args.dev, args.peer);
        for (what, handle) in &bad {
            let positions: &[(bool, bool)] = match row.handles {
                Handles::None => &[],
                Handles::One => &[(true, false)],
                Handles::Two => &[(true, false), (false, true)],
            };
            for &(as_dev, as_peer) in positions {
                if as_dev {
                    args.dev = *handle;
                }
                if as_peer {
                    args.peer = *handle;
                }
                let rc = (row.call)(&args);
                if rc != ret::INVALID_ARGUMENT {
                    let pos = if as_dev { "first" } else { "second" };
                    failures.push(format!("{}: handle {what} as {pos} device gives {}", row.name, rc_name(rc)));
                }
                (args.dev, args.peer) = (dev, peer);
            }
        }
    }

    // Every device, not just the first, answers its string getters within NVIDIA's sizes.
    for (index, _) in devs.iter().enumerate() {
        let a = args_for(&devs, index);
        for row in str_rows() {
            check_string_row(&a, &row, &mut failures);
        }
    }
    for row in list_rows() {
        check_list_row(&args, &row, &mut failures);
    }
    assert!(failures.is_empty(), "{} ABI violations:\n{}", failures.len(), failures.join("\n"));
}

const FILL: c_char = 0x5A;

fn check_string_row(a: &Args, row: &StrRow, failures: &mut Vec<String>) {
    let label = row.label;
    let mut big = [0 as c_char; 512];
    let rc = (row.call)(a, big.as_mut_ptr(), big.len() as c_uint);
    println!("str={label} valid={rc}");
    if rc == ret::NOT_SUPPORTED {
        return;
    }
    if rc != ret::SUCCESS {
        failures.push(format!("{label}: 512-byte buffer gives {}", rc_name(rc)));
        return;
    }
    let text = unsafe { CStr::from_ptr(big.as_ptr()) }.to_bytes().to_vec();
    let n = text.len();
    if n == 0 {
        failures.push(format!("{label}: empty string"));
    }
    if n + 1 > row.nvml_size {
        failures.push(format!("{label}: {n} bytes + NUL do not fit NVIDIA's documented buffer of {}", row.nvml_size));
    }
    // Too short by the NUL, and zero length: INSUFFICIENT_SIZE, buffer untouched.
    for len in [n, 0] {
        let mut buf = vec![FILL; n + 32];
        let rc = (row.call)(a, buf.as_mut_ptr(), len as c_uint);
        if rc != ret::INSUFFICIENT_SIZE {
            failures.push(format!("{label}: length {len} for {n} bytes + NUL gives {}", rc_name(rc)));
        }
        if buf.iter().any(|&c| c != FILL) {
            failures.push(format!("{label}: length {len} wrote into the caller's buffer"));
        }
    }
    // Exact fit: the string and its NUL, nothing past it.
    let mut buf = vec![FILL; n + 1 + 32];
    let rc = (row.call)(a, buf.as_mut_ptr(), (n + 1) as c_uint);
    if rc != ret::SUCCESS {
        failures.push(format!("{label}: exact-fit length {} gives {}", n + 1, rc_name(rc)));
    } else {
        let got: Vec<u8> = buf[..n].iter().map(|&c| c as u8).collect();
        if got != text || buf[n] != 0 || buf[n + 1..].iter().any(|&c| c != FILL) {
            failures.push(format!("{label}: exact-fit buffer holds {:?}", String::from_utf8_lossy(&got)));
        }
    }
    // NVIDIA's documented size works.
    let mut buf = vec![0 as c_char; row.nvml_size];
    let rc = (row.call)(a, buf.as_mut_ptr(), row.nvml_size as c_uint);
    if rc != ret::SUCCESS {
        failures.push(format!("{label}: documented size {} gives {}", row.nvml_size, rc_name(rc)));
    }
    let rc = (row.call)(a, null_mut(), 256);
    if rc != ret::INVALID_ARGUMENT {
        failures.push(format!("{label}: NULL buffer gives {}", rc_name(rc)));
    }
}

const ELEM_FILL: u8 = 0xA5;

fn check_list_row(a: &Args, row: &ListRow, failures: &mut Vec<String>) {
    let label = row.label;
    let buffer = |elems: usize| vec![ELEM_FILL; (elems + 1) * row.elem.max(1)];
    // Step 1: ask for the size.
    let mut count: c_uint = 0;
    let rc = (row.call)(a, &mut count, null_mut());
    println!("list={label} probe={rc} count={count}");
    if rc == ret::NOT_SUPPORTED {
        return;
    }
    let n = count as usize;
    match (rc, n) {
        (ret::SUCCESS, 0) => {}
        (ret::INSUFFICIENT_SIZE, n) if n > 0 => {}
        _ => {
            failures.push(format!("{label}: size probe gives {} with count {n}", rc_name(rc)));
            return;
        }
    }
    // A capacity without an array is still a probe.
    let mut count: c_uint = 5;
    let rc = (row.call)(a, &mut count, null_mut());
    let want = if n == 0 { ret::SUCCESS } else { ret::INSUFFICIENT_SIZE };
    if rc != want || count as usize != n {
        failures.push(format!("{label}: NULL array with capacity 5 gives {} and count {count}", rc_name(rc)));
    }
    // Step 2: an exact-size array.
    let mut buf = buffer(n);
    let mut count = n as c_uint;
    let rc = (row.call)(a, &mut count, buf.as_mut_ptr());
    if rc != ret::SUCCESS || count as usize != n {
        failures.push(format!("{label}: exact array of {n} gives {} and count {count}", rc_name(rc)));
    }
    if buf[n * row.elem..].iter().any(|&b| b != ELEM_FILL) {
        failures.push(format!("{label}: wrote past an exact array of {n}"));
    }
    // A larger array: the same count back.
    let mut buf = buffer(n + 3);
    let mut count = (n + 3) as c_uint;
    let rc = (row.call)(a, &mut count, buf.as_mut_ptr());
    if rc != ret::SUCCESS || count as usize != n {
        failures.push(format!("{label}: array of {} gives {} and count {count}", n + 3, rc_name(rc)));
    }
    // One short: INSUFFICIENT_SIZE, the needed count, the array untouched.
    if n > 0 {
        let mut buf = buffer(n);
        let mut count = (n - 1) as c_uint;
        let rc = (row.call)(a, &mut count, buf.as_mut_ptr());
        if rc != ret::INSUFFICIENT_SIZE || count as usize != n {
            failures.push(format!("{label}: capacity {} for {n} gives {} and count {count}", n - 1, rc_name(rc)));
        }
        if buf.iter().any(|&b| b != ELEM_FILL) {
            failures.push(format!("{label}: a short array was written"));
        }
    }
    let rc = (row.call)(a, null_mut(), buffer(n).as_mut_ptr());
    if rc != ret::INVALID_ARGUMENT {
        failures.push(format!("{label}: NULL count gives {}", rc_name(rc)));
    }
}

/// Before any init, every function that needs init answers UNINITIALIZED; so do stale
/// handles after the last shutdown, which work again after a new init.
fn case_uninitialized() {
    let check_all = |args: &Args, when: &str| {
        let mut failures = Vec::new();
        for row in rows().iter().filter(|r| r.needs_init) {
            let rc = (row.call)(args);
            if rc != ret::UNINITIALIZED {
                failures.push(format!("{} {when}: {}", row.name, rc_name(rc)));
            }
        }
        for row in str_rows() {
            let mut buf = [FILL; 128];
            let rc = (row.call)(args, buf.as_mut_ptr(), 128);
            if rc != ret::UNINITIALIZED || buf.iter().any(|&c| c != FILL) {
                failures.push(format!("{} {when}: {} (or wrote the buffer)", row.label, rc_name(rc)));
            }
        }
        assert!(failures.is_empty(), "not UNINITIALIZED:\n{}", failures.join("\n"));
    };
    let mut garbage = 0u64;
    let never = Args::new((&mut garbage as *mut u64).cast(), null_mut());
    check_all(&never, "before any init");
    expect(nvmlShutdown(), ret::UNINITIALIZED, "shutdown before init");

    // The export table is the one function nvidia-smi calls that works without init.
    let (mut table, id) = (std::ptr::null(), [0u8; 16]);
    expect(unsafe { nvmlInternalGetExportTable(&mut table, &id) }, ret::SUCCESS, "export table without init");
    assert!(!table.is_null());

    init();
    let devs = handles();
    let stale = args_for(&devs, 0);
    expect(nvmlShutdown(), ret::SUCCESS, "shutdown");
    check_all(&stale, "after the last shutdown");

    init();
    let mut index = 99;
    expect(unsafe { nvmlDeviceGetIndex(devs[1 % devs.len()], &mut index) }, ret::SUCCESS, "old handle after re-init");
    assert_eq!(index as usize, 1 % devs.len());
    expect(nvmlShutdown(), ret::SUCCESS, "shutdown");
}

/// Each init entry point counts one user; each shutdown releases one.
fn case_refcount() {
    expect(nvmlShutdown(), ret::UNINITIALIZED, "shutdown without init");
    expect(nvmlInit(), ret::SUCCESS, "nvmlInit");
    expect(nvmlInit_v2(), ret::SUCCESS, "nvmlInit_v2");
    expect(nvmlInitWithFlags(0), ret::SUCCESS, "nvmlInitWithFlags(0)");
    expect(nvmlInitWithFlags(NVML_INIT_FLAG_NO_GPUS | NVML_INIT_FLAG_NO_ATTACH), ret::SUCCESS, "nvmlInitWithFlags(NO_GPUS|NO_ATTACH)");
    let mut n = 0;
    for remaining in (0..4).rev() {
        expect(unsafe { nvmlDeviceGetCount_v2(&mut n) }, ret::SUCCESS, "count while initialized");
        expect(nvmlShutdown(), ret::SUCCESS, "shutdown of a held reference");
        let want = if remaining == 0 { ret::UNINITIALIZED } else { ret::SUCCESS };
        expect(unsafe { nvmlDeviceGetCount_v2(&mut n) }, want, &format!("count with {remaining} references left"));
    }
    expect(nvmlShutdown(), ret::UNINITIALIZED, "one shutdown too many");
    expect(nvmlShutdown(), ret::UNINITIALIZED, "two shutdowns too many");
    // The extra shutdowns did not leave the count negative: one init is enough again.
    expect(nvmlInit_v2(), ret::SUCCESS, "re-init");
    expect(unsafe { nvmlDeviceGetCount_v2(&mut n) }, ret::SUCCESS, "count after re-init");
    expect(nvmlShutdown(), ret::SUCCESS, "shutdown");
    expect(unsafe { nvmlDeviceGetCount_v2(&mut n) }, ret::UNINITIALIZED, "count after shutdown");
}

/// Versioned structs with a wrong version are refused and left untouched.
fn case_versions() {
    init();
    let dev = handles()[0];
    let bad_versions = [0, struct_version(40, 1), struct_version(32, 2), struct_version(48, 2), struct_version(40, 3), u32::MAX];
    for version in bad_versions {
        let mut m: nvmlMemory_v2_t = nvmlMemory_v2_t { version, total: 7, reserved: 7, free: 7, used: 7 };
        expect(
            unsafe { nvmlDeviceGetMemoryInfo_v2(dev, &mut m) },
            ret::ARGUMENT_VERSION_MISMATCH,
            &format!("memory v2 version {version:#x}"),
        );
        assert_eq!((m.version, m.total, m.reserved, m.free, m.used), (version, 7, 7, 7, 7), "a refused struct was written");
    }
    let mut v2 = nvmlMemory_v2_t { version: nvmlMemory_v2, ..Default::default() };
    expect(unsafe { nvmlDeviceGetMemoryInfo_v2(dev, &mut v2) }, ret::SUCCESS, "memory v2");
    assert_eq!(v2.version, 0x0200_0028);
    let mut v1 = nvmlMemory_t::default();
    expect(unsafe { nvmlDeviceGetMemoryInfo(dev, &mut v1) }, ret::SUCCESS, "memory v1");
    // v1 and v2 agree: same total and free; v1's used includes the reserved memory.
    assert_eq!((v1.total, v1.free), (v2.total, v2.free));
    assert_eq!(v1.used, v2.used + v2.reserved);
    assert_eq!(v2.total, v2.reserved + v2.free + v2.used);

    let bad_versions = [0, struct_version(24, 2), struct_version(16, 1), u32::MAX];
    for version in bad_versions {
        let mut list = nvmlProcessDetailList_v1_t { version, mode: 0, numProcArrayEntries: 9, procArray: null_mut() };
        expect(
            unsafe { nvmlDeviceGetRunningProcessDetailList(dev, &mut list) },
            ret::ARGUMENT_VERSION_MISMATCH,
            &format!("detail list {version:#x}"),
        );
        assert_eq!(list.numProcArrayEntries, 9, "a refused list was written");
    }
    for mode in 0..3 {
        let mut list =
            nvmlProcessDetailList_v1_t { version: nvmlProcessDetailList_v1, mode, numProcArrayEntries: 0, procArray: null_mut() };
        expect(unsafe { nvmlDeviceGetRunningProcessDetailList(dev, &mut list) }, ret::SUCCESS, &format!("detail list mode {mode}"));
    }
    let mut list = nvmlProcessDetailList_v1_t { version: nvmlProcessDetailList_v1, mode: 3, numProcArrayEntries: 0, procArray: null_mut() };
    expect(unsafe { nvmlDeviceGetRunningProcessDetailList(dev, &mut list) }, ret::INVALID_ARGUMENT, "detail list mode 3");
    expect(nvmlShutdown(), ret::SUCCESS, "shutdown");
}

/// Event sets: unknown, freed and NULL sets are rejected without being dereferenced.
fn case_events() {
    let mut set: nvmlEventSet_t = null_mut();
    expect(unsafe { nvmlEventSetCreate(&mut set) }, ret::UNINITIALIZED, "create before init");
    init();
    let dev = handles()[0];
    expect(unsafe { nvmlEventSetCreate(null_mut()) }, ret::INVALID_ARGUMENT, "create into NULL");
    expect(unsafe { nvmlEventSetCreate(&mut set) }, ret::SUCCESS, "create");
    let mut local = 0u64;
    let foreign: nvmlEventSet_t = (&mut local as *mut u64).cast();
    for bogus in [null_mut(), foreign, 0x10 as nvmlEventSet_t] {
        expect(unsafe { nvmlEventSetFree(bogus) }, ret::INVALID_ARGUMENT, "free of a bogus set");
        expect(unsafe { nvmlDeviceRegisterEvents(dev, nvml_abi::event::PSTATE, bogus) }, ret::INVALID_ARGUMENT, "register on a bogus set");
        let mut data = unsafe { std::mem::zeroed() };
        expect(unsafe { nvmlEventSetWait_v2(bogus, &mut data, 0) }, ret::INVALID_ARGUMENT, "wait on a bogus set");
    }
    expect(unsafe { nvmlDeviceRegisterEvents(dev, nvml_abi::event::PSTATE, set) }, ret::SUCCESS, "register");
    let mut data = unsafe { std::mem::zeroed() };
    expect(unsafe { nvmlEventSetWait_v2(set, &mut data, 1) }, ret::TIMEOUT, "wait on an idle GPU");
    expect(unsafe { nvmlEventSetFree(set) }, ret::SUCCESS, "free");
    expect(unsafe { nvmlEventSetFree(set) }, ret::INVALID_ARGUMENT, "second free");
    expect(unsafe { nvmlEventSetWait_v2(set, &mut data, 0) }, ret::INVALID_ARGUMENT, "wait on a freed set");
    expect(unsafe { nvmlDeviceRegisterEvents(dev, nvml_abi::event::PSTATE, set) }, ret::INVALID_ARGUMENT, "register on a freed set");
    let mut other: nvmlEventSet_t = null_mut();
    expect(unsafe { nvmlEventSetCreate(&mut other) }, ret::SUCCESS, "create");
    expect(nvmlShutdown(), ret::SUCCESS, "shutdown");
    expect(unsafe { nvmlEventSetFree(other) }, ret::UNINITIALIZED, "free after shutdown");
}

/// The texts of NVIDIA's 535.261.03 library, read from it with `nvmlErrorString`.
const NVIDIA_535_ERROR_STRINGS: &[(nvmlReturn_t, &str)] = &[
    (0, "Success"),
    (1, "Uninitialized"),
    (2, "Invalid Argument"),
    (3, "Not Supported"),
    (4, "Insufficient Permissions"),
    (5, "Already Initialized"),
    (6, "Not Found"),
    (7, "Insufficient Size"),
    (8, "Insufficient External Power"),
    (9, "Driver Not Loaded"),
    (10, "Timeout"),
    (11, "Interrupt Request Issue"),
    (12, "NVML Shared Library Not Found"),
    (13, "Function Not Found"),
    (14, "Corrupted infoROM"),
    (15, "GPU is lost"),
    (16, "GPU requires reset"),
    (17, "GPU access blocked by the operating system"),
    (18, "Driver/library version mismatch"),
    (19, "In use by another client"),
    (20, "Insufficient Memory"),
    (21, "No data"),
    (22, "vGPU ECC not supported"),
    (23, "Insufficient Resources"),
    (24, "Invalid Frequency"),
    (25, "Argument version mismatch"),
    (26, "Requested functionality has been deprecated"),
    (27, "System is not in ready state"),
];

fn expected_error_string(code: nvmlReturn_t) -> &'static str {
    NVIDIA_535_ERROR_STRINGS.iter().find(|(c, _)| *c == code).map_or("Unknown Error", |(_, s)| s)
}

fn probe_codes() -> Vec<nvmlReturn_t> {
    (0..=40).chain([998, 999, 1000, 0x7FFF_FFFF, u32::MAX]).collect()
}

/// Every code, with and without init: NVIDIA's text, a stable non-NULL pointer.
fn case_error_strings() {
    for initialized in [false, true] {
        if initialized {
            init();
        }
        for code in probe_codes() {
            let p = nvmlErrorString(code);
            assert!(!p.is_null(), "nvmlErrorString({code}) is NULL");
            let text = unsafe { CStr::from_ptr(p) }.to_str().unwrap();
            assert_eq!(text, expected_error_string(code), "nvmlErrorString({code})");
            assert_eq!(nvmlErrorString(code), p, "nvmlErrorString({code}) moved between calls");
        }
    }
    // Where NVIDIA's own library is at hand (scripts/fetch-nvidia.sh), ask it too.
    if let Some(real) = real_nvml() {
        let lib = CString::new(real.to_str().unwrap()).unwrap();
        let handle = unsafe { libc::dlopen(lib.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        assert!(!handle.is_null(), "dlopen {}", real.display());
        let sym = unsafe { libc::dlsym(handle, c"nvmlErrorString".as_ptr()) };
        assert!(!sym.is_null());
        let theirs: extern "C" fn(nvmlReturn_t) -> *const c_char = unsafe { std::mem::transmute(sym) };
        for code in probe_codes() {
            let (a, b) = unsafe { (CStr::from_ptr(theirs(code)), CStr::from_ptr(nvmlErrorString(code))) };
            assert_eq!(b, a, "nvmlErrorString({code}) differs from NVIDIA's");
        }
        println!("compared with {}", real.display());
    }
}

fn real_nvml() -> Option<std::path::PathBuf> {
    let cache = std::env::var_os("FAKEGPU_CACHE")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cache/fake-gpu-operator")))?;
    let lib = cache.join("nvidia-535.261.03-1/root/usr/lib/x86_64-linux-gnu/nvidia/current/libnvidia-ml.so.535.261.03");
    lib.exists().then_some(lib)
}

/// 16 threads call every getter on every device while another thread takes and drops
/// init references; every answer matches the single-threaded one.
fn case_threads() {
    init();
    let shared = SharedDevs(handles());
    let devs = shared.get();
    let table = rows();
    let skip = |name: &str| name == "nvmlEventSetCreate";
    let baseline: Vec<Vec<nvmlReturn_t>> = (0..devs.len())
        .map(|i| {
            let a = args_for(devs, i);
            table.iter().map(|r| (r.call)(&a)).collect()
        })
        .collect();
    let names: Vec<Vec<Result<String, nvmlReturn_t>>> = (0..devs.len())
        .map(|i| {
            let a = args_for(devs, i);
            str_rows().iter().map(|r| maybe_string(|b, n| (r.call)(&a, b, n))).collect()
        })
        .collect();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let churn = s.spawn(|| {
            let mut cycles = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                expect(nvmlInit_v2(), ret::SUCCESS, "churn init");
                expect(nvmlShutdown(), ret::SUCCESS, "churn shutdown");
                cycles += 1;
            }
            cycles
        });
        let workers: Vec<_> = (0..16)
            .map(|t| {
                let (shared, table, baseline, names) = (&shared, &table, &baseline, &names);
                s.spawn(move || {
                    let devs = shared.get();
                    let args: Vec<Args> = (0..devs.len()).map(|i| args_for(devs, i)).collect();
                    let strs = str_rows();
                    for round in 0..40 {
                        let d = (t + round) % devs.len();
                        for (r, row) in table.iter().enumerate() {
                            if skip(row.name) {
                                continue;
                            }
                            let rc = (row.call)(&args[d]);
                            assert_eq!(rc, baseline[d][r], "thread {t}: {} on device {d}", row.name);
                        }
                        for (r, row) in strs.iter().enumerate() {
                            let got = maybe_string(|b, n| (row.call)(&args[d], b, n));
                            assert_eq!(got, names[d][r], "thread {t}: {} on device {d}", row.label);
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().expect("worker thread");
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let cycles = churn.join().expect("churn thread");
        println!("init/shutdown cycles during the run: {cycles}");
    });
    // The churn left exactly our one reference.
    expect(nvmlShutdown(), ret::SUCCESS, "our shutdown");
    expect(nvmlShutdown(), ret::UNINITIALIZED, "nothing left");
}

/// Forks and checks in the child; returns the child's exit status (0 = all good).
fn in_fork(check: impl FnOnce() -> bool) -> i32 {
    // SAFETY: the child only calls the library and async-signal-safe libc before _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // A deadlock in the child ends it by SIGALRM instead of hanging the test.
        unsafe { libc::alarm(10) };
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(check)).unwrap_or(false);
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut status = 0;
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    status
}

fn forked_child_queries(expect_name: &str, expect_count: c_uint) -> bool {
    if nvmlInit_v2() != ret::SUCCESS {
        return false;
    }
    let (mut n, mut h) = (0, null_mut());
    let mut name = [0 as c_char; 96];
    let ok = unsafe {
        nvmlDeviceGetCount_v2(&mut n) == ret::SUCCESS
            && n == expect_count
            && nvmlDeviceGetHandleByIndex_v2(n - 1, &mut h) == ret::SUCCESS
            && nvmlDeviceGetName(h, name.as_mut_ptr(), 96) == ret::SUCCESS
            && CStr::from_ptr(name.as_ptr()).to_str() == Ok(expect_name)
    };
    ok && nvmlShutdown() == ret::SUCCESS
}

/// A forked child can init and query: from a parent that never initialized, from one
/// that did, and from one whose other threads are busy in the library.
fn case_fork() {
    let want_name = std::env::var("EXPECT_NAME").unwrap();
    let want_count: c_uint = std::env::var("EXPECT_COUNT").unwrap().parse().unwrap();
    assert_eq!(in_fork(|| forked_child_queries(&want_name, want_count)), 0, "child of an uninitialized parent");

    init();
    assert_eq!(in_fork(|| forked_child_queries(&want_name, want_count)), 0, "child of an initialized parent");
    // The child's init and shutdown did not touch the parent's count.
    let mut n = 0;
    expect(unsafe { nvmlDeviceGetCount_v2(&mut n) }, ret::SUCCESS, "parent after its child");

    let stop = std::sync::atomic::AtomicBool::new(false);
    let shared = SharedDevs(handles());
    std::thread::scope(|s| {
        for t in 0..4 {
            let (stop, shared) = (&stop, &shared);
            s.spawn(move || {
                let devs = shared.get();
                let a = args_for(devs, t % devs.len());
                let table = rows();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    for row in table.iter().filter(|r| r.name != "nvmlEventSetCreate") {
                        (row.call)(&a);
                    }
                }
            });
        }
        for i in 0..20 {
            let status = in_fork(|| forked_child_queries(&want_name, want_count));
            assert_eq!(status, 0, "fork {i} while 4 threads call the library: wait status {status}");
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    expect(nvmlShutdown(), ret::SUCCESS, "shutdown");
}

/// A fork while another thread holds the load lock (as the first `nvmlInit` does while it
/// loads the node): the child must still be able to init. The lock is held by the test hook
/// for half a second (config paths can no longer block: FIFOs are refused).
fn case_fork_during_init() {
    let holder = std::thread::spawn(|| nvidia_ml::test_hooks::hold_load_lock(std::time::Duration::from_millis(500)));
    std::thread::sleep(std::time::Duration::from_millis(100));
    // The first init waits for the lock, inside the load.
    let loader = std::thread::spawn(|| nvmlInit_v2());
    std::thread::sleep(std::time::Duration::from_millis(100));
    let status = in_fork(|| forked_child_queries("Tesla T4", 3));
    assert_eq!(status, 0, "child forked during the parent's first init: wait status {status}");
    holder.join().expect("holder");
    expect(loader.join().expect("loader"), ret::SUCCESS, "the parent's own init");
    expect(nvmlShutdown(), ret::SUCCESS, "shutdown");
}

/// The entry point of re-executed children; a plain test run passes through.
#[test]
fn child() {
    let Some(case) = current_case() else { return };
    match case.as_str() {
        "table" => case_table(),
        "uninitialized" => case_uninitialized(),
        "refcount" => case_refcount(),
        "versions" => case_versions(),
        "events" => case_events(),
        "error_strings" => case_error_strings(),
        "threads" => case_threads(),
        "fork" => case_fork(),
        "fork_during_init" => case_fork_during_init(),
        other => panic!("unknown case {other}"),
    }
}

// ---------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------

/// The configurations the table runs on: together they make every getter answer
/// something other than NOT_SUPPORTED at least once.
fn table_configs() -> Vec<(&'static str, Vec<(String, String)>)> {
    let dir = scratch_dir("abi");
    let fans = dir.join("h100-with-fans.json");
    std::fs::write(&fans, r#"{"profile":"h100","gpus":8,"overrides":{"fan_speed_percent":41,"inforom":{"power":"N/A"}}}"#).unwrap();
    let env = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>();
    vec![
        ("h100 x8 with fans", env(&[("FAKEGPU_CONFIG", fans.to_str().unwrap())])),
        ("t4 x2", env(&[("FAKEGPU_PROFILE", "t4"), ("FAKEGPU_GPUS", "2")])),
        ("k80 x3", env(&[("FAKEGPU_PROFILE", "k80"), ("FAKEGPU_GPUS", "3")])),
        ("l4 x1", env(&[("FAKEGPU_PROFILE", "l4"), ("FAKEGPU_GPUS", "1")])),
        ("gb200 x4", env(&[("FAKEGPU_PROFILE", "gb200"), ("FAKEGPU_GPUS", "4")])),
    ]
}

#[test]
fn getters_check_pointers_handles_buffers_and_lists() {
    let mut seen: BTreeMap<String, BTreeSet<nvmlReturn_t>> = BTreeMap::new();
    let mut null_checked = BTreeSet::new();
    let mut nonempty_lists = BTreeSet::new();
    for (label, env) in table_configs() {
        let child = run_case("table", &env);
        assert!(
            child.output.status.success(),
            "{label}: {}\n--- stdout (tail)\n{}\n--- stderr\n{}",
            child.output.status,
            child.stdout().lines().rev().take(20).collect::<Vec<_>>().join("\n"),
            child.stderr()
        );
        for line in child.stdout().lines() {
            if let Some(name) = line.strip_prefix("nullchecked=") {
                null_checked.insert(name.to_string());
            }
            let mut words = line.split_whitespace();
            let (Some(key), Some(valid)) = (words.next(), words.next()) else { continue };
            let Some(rc) = valid.split('=').nth(1).and_then(|v| v.parse().ok()) else { continue };
            if let Some(name) = key.strip_prefix("row=").or(key.strip_prefix("str=")) {
                seen.entry(name.to_string()).or_default().insert(rc);
            }
            if let Some(name) = key.strip_prefix("list=") {
                if words.next().and_then(|c| c.strip_prefix("count=")).is_some_and(|c| c != "0") {
                    nonempty_lists.insert(name.to_string());
                }
            }
        }
    }
    // A NULL check proves something where the getter had something to write, or where
    // it refused every NULL with INVALID_ARGUMENT before deciding it has nothing.
    let never: Vec<String> = rows()
        .iter()
        .filter(|r| r.ptrs > 0 && !r.vacuous && !null_checked.contains(r.name))
        .map(|r| r.name.to_string())
        .chain(str_rows().iter().map(|r| r.label.to_string()))
        .filter(|name| seen.get(name).is_none_or(|codes| codes.iter().all(|&c| c == ret::NOT_SUPPORTED)))
        .collect();
    assert!(never.is_empty(), "never answered anything but NOT_SUPPORTED in any configuration: {never:?}");
    for list in ["nvmlDeviceGetSupportedMemoryClocks", "nvmlDeviceGetSupportedGraphicsClocks", "nvmlDeviceGetTopologyNearestGpus"] {
        assert!(nonempty_lists.contains(list), "{list} never returned entries, so its short-array case never ran");
    }
    assert!(nonempty_lists.contains("nvmlSystemGetTopologyGpuSet"));
}

#[test]
fn calls_before_init_and_after_shutdown_are_uninitialized() {
    run_case("uninitialized", &[("FAKEGPU_PROFILE", "a100-40gb"), ("FAKEGPU_GPUS", "2")]).assert_ok();
}

#[test]
fn init_and_shutdown_are_reference_counted() {
    run_case("refcount", &[("FAKEGPU_PROFILE", "h100")]).assert_ok();
}

#[test]
fn wrong_struct_versions_are_refused() {
    run_case("versions", &[("FAKEGPU_PROFILE", "h100"), ("FAKEGPU_GPUS", "1")]).assert_ok();
}

#[test]
fn event_sets_reject_unknown_handles() {
    run_case("events", &[("FAKEGPU_PROFILE", "h100"), ("FAKEGPU_GPUS", "1")]).assert_ok();
}

#[test]
fn error_strings_match_nvidia_for_every_code() {
    let child = run_case("error_strings", &[] as &[(&str, &str)]);
    child.assert_ok();
    if !child.stdout().contains("compared with") {
        eprintln!("note: NVIDIA's libnvidia-ml.so.535 is not cached (scripts/fetch-nvidia.sh); compared with the recorded texts only");
    }
}

#[test]
fn sixteen_threads_get_the_same_answers() {
    run_case("threads", &[("FAKEGPU_PROFILE", "h100"), ("FAKEGPU_GPUS", "8")]).assert_ok();
}

#[test]
fn forked_children_can_init_and_query() {
    run_case("fork", &[("FAKEGPU_PROFILE", "t4"), ("FAKEGPU_GPUS", "3"), ("EXPECT_NAME", "Tesla T4"), ("EXPECT_COUNT", "3")]).assert_ok();
}

#[test]
fn a_fork_during_the_first_init_does_not_hang_the_child() {
    run_case("fork_during_init", &[("FAKEGPU_PROFILE", "t4"), ("FAKEGPU_GPUS", "3")]).assert_ok();
}

/// Every function under src/exports/ is in a table here or has a case of its own, so a
/// new export cannot skip these checks. Names are found as build.rs finds them.
#[test]
fn every_implemented_function_is_covered() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/exports");
    let mut implemented = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for line in text.lines() {
            let Some(rest) = line.split("extern \"C\" fn ").nth(1) else { continue };
            for part in rest.split(',') {
                let name: String = part.trim().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                if name.starts_with("nvml") {
                    implemented.insert(name);
                }
            }
        }
    }
    assert!(implemented.len() > 100, "found only {} exports under {}", implemented.len(), dir.display());
    let covered: BTreeSet<String> =
        rows().iter().map(|r| r.name.to_string()).chain(OWN_CASES.iter().chain(NOT_YET_COVERED).map(|s| s.to_string())).collect();
    let missing: Vec<_> = implemented.difference(&covered).collect();
    assert!(missing.is_empty(), "implemented but not in tests/abi.rs: {missing:?}");
    let stale: Vec<_> = covered.difference(&implemented).collect();
    assert!(stale.is_empty(), "tested but no longer implemented: {stale:?}");
}
