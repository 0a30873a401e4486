//! NVML's C ABI as Rust types: return codes, enum values, struct layouts and struct
//! versions, written from NVIDIA's documented API. No logic lives here; the fake
//! library exports these types and our nvidia-smi imports them, so both sides agree
//! on every byte. Sizes are pinned by tests against the documented layouts.

#![allow(non_camel_case_types, non_snake_case, non_upper_case_globals)]

use std::ffi::{c_char, c_uint, c_ulonglong, c_void};

pub mod export_table;

pub type nvmlReturn_t = c_uint;

/// `nvmlReturn_t` values.
pub mod ret {
    use super::nvmlReturn_t;
    pub const SUCCESS: nvmlReturn_t = 0;
    pub const UNINITIALIZED: nvmlReturn_t = 1;
    pub const INVALID_ARGUMENT: nvmlReturn_t = 2;
    pub const NOT_SUPPORTED: nvmlReturn_t = 3;
    pub const NO_PERMISSION: nvmlReturn_t = 4;
    pub const ALREADY_INITIALIZED: nvmlReturn_t = 5;
    pub const NOT_FOUND: nvmlReturn_t = 6;
    pub const INSUFFICIENT_SIZE: nvmlReturn_t = 7;
    pub const INSUFFICIENT_POWER: nvmlReturn_t = 8;
    pub const DRIVER_NOT_LOADED: nvmlReturn_t = 9;
    pub const TIMEOUT: nvmlReturn_t = 10;
    pub const IRQ_ISSUE: nvmlReturn_t = 11;
    pub const LIBRARY_NOT_FOUND: nvmlReturn_t = 12;
    pub const FUNCTION_NOT_FOUND: nvmlReturn_t = 13;
    pub const CORRUPTED_INFOROM: nvmlReturn_t = 14;
    pub const GPU_IS_LOST: nvmlReturn_t = 15;
    pub const RESET_REQUIRED: nvmlReturn_t = 16;
    pub const OPERATING_SYSTEM: nvmlReturn_t = 17;
    pub const LIB_RM_VERSION_MISMATCH: nvmlReturn_t = 18;
    pub const IN_USE: nvmlReturn_t = 19;
    pub const MEMORY: nvmlReturn_t = 20;
    pub const NO_DATA: nvmlReturn_t = 21;
    pub const VGPU_ECC_NOT_SUPPORTED: nvmlReturn_t = 22;
    pub const INSUFFICIENT_RESOURCES: nvmlReturn_t = 23;
    pub const FREQ_NOT_SUPPORTED: nvmlReturn_t = 24;
    pub const ARGUMENT_VERSION_MISMATCH: nvmlReturn_t = 25;
    pub const DEPRECATED: nvmlReturn_t = 26;
    pub const NOT_READY: nvmlReturn_t = 27;
    pub const GPU_NOT_FOUND: nvmlReturn_t = 28;
    pub const INVALID_STATE: nvmlReturn_t = 29;
    pub const UNKNOWN: nvmlReturn_t = 999;
}

/// The text `nvmlErrorString` returns for a code, exactly as NVIDIA's 535.261.03 library words it.
pub fn error_string(code: nvmlReturn_t) -> &'static str {
    match code {
        ret::SUCCESS => "Success",
        ret::UNINITIALIZED => "Uninitialized",
        ret::INVALID_ARGUMENT => "Invalid Argument",
        ret::NOT_SUPPORTED => "Not Supported",
        ret::NO_PERMISSION => "Insufficient Permissions",
        ret::ALREADY_INITIALIZED => "Already Initialized",
        ret::NOT_FOUND => "Not Found",
        ret::INSUFFICIENT_SIZE => "Insufficient Size",
        ret::INSUFFICIENT_POWER => "Insufficient External Power",
        ret::DRIVER_NOT_LOADED => "Driver Not Loaded",
        ret::TIMEOUT => "Timeout",
        ret::IRQ_ISSUE => "Interrupt Request Issue",
        ret::LIBRARY_NOT_FOUND => "NVML Shared Library Not Found",
        ret::FUNCTION_NOT_FOUND => "Function Not Found",
        ret::CORRUPTED_INFOROM => "Corrupted infoROM",
        ret::GPU_IS_LOST => "GPU is lost",
        ret::RESET_REQUIRED => "GPU requires reset",
        ret::OPERATING_SYSTEM => "GPU access blocked by the operating system",
        ret::LIB_RM_VERSION_MISMATCH => "Driver/library version mismatch",
        ret::IN_USE => "In use by another client",
        ret::MEMORY => "Insufficient Memory",
        ret::NO_DATA => "No data",
        ret::VGPU_ECC_NOT_SUPPORTED => "vGPU ECC not supported",
        ret::INSUFFICIENT_RESOURCES => "Insufficient Resources",
        ret::FREQ_NOT_SUPPORTED => "Invalid Frequency",
        ret::ARGUMENT_VERSION_MISMATCH => "Argument version mismatch",
        ret::DEPRECATED => "Requested functionality has been deprecated",
        ret::NOT_READY => "System is not in ready state",
        // GPU_NOT_FOUND and INVALID_STATE are younger than the 535 library, which words them so.
        _ => "Unknown Error",
    }
}

/// Opaque device handle.
#[repr(C)]
pub struct nvmlDevice_st {
    _private: [u8; 0],
}
pub type nvmlDevice_t = *mut nvmlDevice_st;

#[repr(C)]
pub struct nvmlUnit_st {
    _private: [u8; 0],
}
pub type nvmlUnit_t = *mut nvmlUnit_st;

#[repr(C)]
pub struct nvmlEventSet_st {
    _private: [u8; 0],
}
pub type nvmlEventSet_t = *mut nvmlEventSet_st;

#[repr(C)]
pub struct nvmlGpuInstance_st {
    _private: [u8; 0],
}
pub type nvmlGpuInstance_t = *mut nvmlGpuInstance_st;

#[repr(C)]
pub struct nvmlComputeInstance_st {
    _private: [u8; 0],
}
pub type nvmlComputeInstance_t = *mut nvmlComputeInstance_st;

/// `NVML_STRUCT_VERSION(size, ver)`: versioned structs carry their size and version in one word.
pub const fn struct_version(size: usize, version: u32) -> c_uint {
    size as c_uint | (version << 24)
}

pub const NVML_DEVICE_PCI_BUS_ID_BUFFER_SIZE: usize = 32;
pub const NVML_DEVICE_PCI_BUS_ID_BUFFER_V2_SIZE: usize = 16;

/// `nvmlPciInfo_t` as the unversioned `nvmlDeviceGetPciInfo` (v1) fills it.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct nvmlPciInfo_v1_t {
    pub busId: [c_char; 16],
    pub domain: c_uint,
    pub bus: c_uint,
    pub device: c_uint,
    pub pciDeviceId: c_uint,
    pub pciSubSystemId: c_uint,
    pub reserved: [c_uint; 4],
}

/// `nvmlPciInfo_t` for `_v2` and `_v3`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct nvmlPciInfo_t {
    pub busIdLegacy: [c_char; NVML_DEVICE_PCI_BUS_ID_BUFFER_V2_SIZE],
    pub domain: c_uint,
    pub bus: c_uint,
    pub device: c_uint,
    pub pciDeviceId: c_uint,
    pub pciSubSystemId: c_uint,
    pub busId: [c_char; NVML_DEVICE_PCI_BUS_ID_BUFFER_SIZE],
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct nvmlMemory_t {
    pub total: c_ulonglong,
    pub free: c_ulonglong,
    pub used: c_ulonglong,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct nvmlMemory_v2_t {
    pub version: c_uint,
    pub total: c_ulonglong,
    pub reserved: c_ulonglong,
    pub free: c_ulonglong,
    pub used: c_ulonglong,
}
pub const nvmlMemory_v2: c_uint = struct_version(std::mem::size_of::<nvmlMemory_v2_t>(), 2);

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct nvmlBAR1Memory_t {
    pub bar1Total: c_ulonglong,
    pub bar1Free: c_ulonglong,
    pub bar1Used: c_ulonglong,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct nvmlUtilization_t {
    pub gpu: c_uint,
    pub memory: c_uint,
}

/// Element of the unversioned `nvmlDevice*RunningProcesses` lists.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct nvmlProcessInfo_v1_t {
    pub pid: c_uint,
    pub usedGpuMemory: c_ulonglong,
}

/// Element of the `_v2` and `_v3` process lists.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct nvmlProcessInfo_t {
    pub pid: c_uint,
    pub usedGpuMemory: c_ulonglong,
    pub gpuInstanceId: c_uint,
    pub computeInstanceId: c_uint,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct nvmlProcessDetail_v1_t {
    pub pid: c_uint,
    pub usedGpuMemory: c_ulonglong,
    pub gpuInstanceId: c_uint,
    pub computeInstanceId: c_uint,
    pub usedGpuCcProtectedMemory: c_ulonglong,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct nvmlProcessDetailList_v1_t {
    pub version: c_uint,
    /// 0 compute, 1 graphics, 2 MPS compute.
    pub mode: c_uint,
    pub numProcArrayEntries: c_uint,
    pub procArray: *mut nvmlProcessDetail_v1_t,
}
pub const nvmlProcessDetailList_v1: c_uint = struct_version(std::mem::size_of::<nvmlProcessDetailList_v1_t>(), 1);

/// `nvmlEventData_t` as `nvmlEventSetWait_v2` fills it.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct nvmlEventData_t {
    pub device: nvmlDevice_t,
    pub eventType: c_ulonglong,
    pub eventData: c_ulonglong,
    pub gpuInstanceId: c_uint,
    pub computeInstanceId: c_uint,
}

/// The shorter record the original `nvmlEventSetWait` fills.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct nvmlEventData_v1_t {
    pub device: nvmlDevice_t,
    pub eventType: c_ulonglong,
    pub eventData: c_ulonglong,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub union nvmlValue_t {
    pub dVal: f64,
    pub siVal: i32,
    pub uiVal: c_uint,
    pub ulVal: u64,
    pub ullVal: c_ulonglong,
    pub sllVal: i64,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct nvmlFieldValue_t {
    pub fieldId: c_uint,
    pub scopeId: c_uint,
    pub timestamp: i64,
    pub latencyUsec: i64,
    pub valueType: c_uint,
    pub nvmlReturn: nvmlReturn_t,
    pub value: nvmlValue_t,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct nvmlEccErrorCounts_t {
    pub l1Cache: c_ulonglong,
    pub l2Cache: c_ulonglong,
    pub deviceMemory: c_ulonglong,
    pub registerFile: c_ulonglong,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct nvmlViolationTime_t {
    pub referenceTime: c_ulonglong,
    pub violationTime: c_ulonglong,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct nvmlBridgeChipInfo_t {
    pub r#type: c_uint,
    pub fwVersion: c_uint,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct nvmlBridgeChipHierarchy_t {
    pub bridgeCount: u8,
    pub bridgeChipInfo: [nvmlBridgeChipInfo_t; 128],
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct nvmlRowRemapperHistogramValues_t {
    pub max: c_uint,
    pub high: c_uint,
    pub partial: c_uint,
    pub low: c_uint,
    pub none: c_uint,
}

/// `nvmlGpuFabricInfo_t` (535): the GPU's NVLink fabric registration.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct nvmlGpuFabricInfo_t {
    /// `NVML_GPU_FABRIC_UUID_LEN` bytes.
    pub clusterUuid: [u8; 16],
    /// The registration's result (an `nvmlReturn_t`); meaningful when `state` is COMPLETED.
    pub status: nvmlReturn_t,
    pub cliqueId: c_uint,
    /// `nvmlGpuFabricState_t` (an `unsigned char`): 0 not supported, 1 not started, 2 in
    /// progress, 3 completed.
    pub state: u8,
    /// The C struct's tail padding, named so that writers zero it (some bindings read `state`
    /// as a 4-byte integer).
    pub _padding: [u8; 3],
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct nvmlEncoderSessionInfo_t {
    pub sessionId: c_uint,
    pub pid: c_uint,
    pub vgpuInstance: c_uint,
    pub codecType: c_uint,
    pub hResolution: c_uint,
    pub vResolution: c_uint,
    pub averageFps: c_uint,
    pub averageLatency: c_uint,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct nvmlFBCStats_t {
    pub sessionsCount: c_uint,
    pub averageFPS: c_uint,
    pub averageLatency: c_uint,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct nvmlProcessUtilizationSample_t {
    pub pid: c_uint,
    pub timeStamp: c_ulonglong,
    pub smUtil: c_uint,
    pub memUtil: c_uint,
    pub encUtil: c_uint,
    pub decUtil: c_uint,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct nvmlClkMonFaultInfo_t {
    pub clkApiDomain: c_uint,
    pub clkDomainFaultMask: c_uint,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct nvmlClkMonStatus_t {
    pub bGlobalStatus: c_uint,
    pub clkMonListSize: c_uint,
    pub clkMonList: [nvmlClkMonFaultInfo_t; 32],
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct nvmlDeviceAttributes_t {
    pub multiprocessorCount: c_uint,
    pub sharedCopyEngineCount: c_uint,
    pub sharedDecoderCount: c_uint,
    pub sharedEncoderCount: c_uint,
    pub sharedJpgCount: c_uint,
    pub sharedOfaCount: c_uint,
    pub gpuInstanceSliceCount: c_uint,
    pub computeInstanceSliceCount: c_uint,
    pub memorySizeMB: c_ulonglong,
}

/// `nvmlGpuInstancePlacement_t` (also the compute-instance placement).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct nvmlGpuInstancePlacement_t {
    pub start: c_uint,
    pub size: c_uint,
}

/// `nvmlGpuInstanceProfileInfo_v2_t`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct nvmlGpuInstanceProfileInfo_v2_t {
    pub version: c_uint,
    pub id: c_uint,
    pub isP2pSupported: c_uint,
    pub sliceCount: c_uint,
    pub instanceCount: c_uint,
    pub multiprocessorCount: c_uint,
    pub copyEngineCount: c_uint,
    pub decoderCount: c_uint,
    pub encoderCount: c_uint,
    pub jpegCount: c_uint,
    pub ofaCount: c_uint,
    pub memorySizeMB: c_ulonglong,
    pub name: [c_char; 96],
}
#[allow(non_upper_case_globals)]
pub const nvmlGpuInstanceProfileInfo_v2: c_uint = struct_version(std::mem::size_of::<nvmlGpuInstanceProfileInfo_v2_t>(), 2);

/// `nvmlGpuInstanceInfo_t`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct nvmlGpuInstanceInfo_t {
    pub device: nvmlDevice_t,
    pub id: c_uint,
    pub profileId: c_uint,
    pub placement: nvmlGpuInstancePlacement_t,
}

/// `nvmlComputeInstanceProfileInfo_v2_t`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct nvmlComputeInstanceProfileInfo_v2_t {
    pub version: c_uint,
    pub id: c_uint,
    pub sliceCount: c_uint,
    pub instanceCount: c_uint,
    pub multiprocessorCount: c_uint,
    pub sharedCopyEngineCount: c_uint,
    pub sharedDecoderCount: c_uint,
    pub sharedEncoderCount: c_uint,
    pub sharedJpegCount: c_uint,
    pub sharedOfaCount: c_uint,
    pub name: [c_char; 96],
}
#[allow(non_upper_case_globals)]
pub const nvmlComputeInstanceProfileInfo_v2: c_uint = struct_version(std::mem::size_of::<nvmlComputeInstanceProfileInfo_v2_t>(), 2);

/// `nvmlComputeInstanceInfo_t`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct nvmlComputeInstanceInfo_t {
    pub device: nvmlDevice_t,
    pub gpuInstance: nvmlGpuInstance_t,
    pub id: c_uint,
    pub profileId: c_uint,
    pub placement: nvmlGpuInstancePlacement_t,
}

/// `nvmlGpuInstanceProfileInfo_t` (v1, unversioned).
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct nvmlGpuInstanceProfileInfo_t {
    pub id: c_uint,
    pub isP2pSupported: c_uint,
    pub sliceCount: c_uint,
    pub instanceCount: c_uint,
    pub multiprocessorCount: c_uint,
    pub copyEngineCount: c_uint,
    pub decoderCount: c_uint,
    pub encoderCount: c_uint,
    pub jpegCount: c_uint,
    pub ofaCount: c_uint,
    pub memorySizeMB: c_ulonglong,
}

/// `nvmlComputeInstanceProfileInfo_t` (v1, unversioned).
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct nvmlComputeInstanceProfileInfo_t {
    pub id: c_uint,
    pub sliceCount: c_uint,
    pub instanceCount: c_uint,
    pub multiprocessorCount: c_uint,
    pub sharedCopyEngineCount: c_uint,
    pub sharedDecoderCount: c_uint,
    pub sharedEncoderCount: c_uint,
    pub sharedJpegCount: c_uint,
    pub sharedOfaCount: c_uint,
}

/// Enum values of the NVML API that the exports interpret.
pub mod consts {
    use std::ffi::c_uint;

    pub const NVML_FEATURE_DISABLED: c_uint = 0;
    pub const NVML_FEATURE_ENABLED: c_uint = 1;

    pub const NVML_TEMPERATURE_GPU: c_uint = 0;

    pub const NVML_TEMPERATURE_THRESHOLD_SHUTDOWN: c_uint = 0;
    pub const NVML_TEMPERATURE_THRESHOLD_SLOWDOWN: c_uint = 1;
    pub const NVML_TEMPERATURE_THRESHOLD_MEM_MAX: c_uint = 2;
    pub const NVML_TEMPERATURE_THRESHOLD_GPU_MAX: c_uint = 3;

    pub const NVML_CLOCK_GRAPHICS: c_uint = 0;
    pub const NVML_CLOCK_SM: c_uint = 1;
    pub const NVML_CLOCK_MEM: c_uint = 2;
    pub const NVML_CLOCK_VIDEO: c_uint = 3;

    pub const NVML_CLOCK_ID_CURRENT: c_uint = 0;
    pub const NVML_CLOCK_ID_APP_CLOCK_TARGET: c_uint = 1;
    pub const NVML_CLOCK_ID_APP_CLOCK_DEFAULT: c_uint = 2;
    pub const NVML_CLOCK_ID_CUSTOMER_BOOST_MAX: c_uint = 3;

    pub const NVML_PCIE_UTIL_TX_BYTES: c_uint = 0;
    pub const NVML_PCIE_UTIL_RX_BYTES: c_uint = 1;

    pub const NVML_INFOROM_OEM: c_uint = 0;
    pub const NVML_INFOROM_ECC: c_uint = 1;
    pub const NVML_INFOROM_POWER: c_uint = 2;

    pub const NVML_COMPUTEMODE_DEFAULT: c_uint = 0;

    pub const NVML_MEMORY_ERROR_TYPE_CORRECTED: c_uint = 0;
    pub const NVML_MEMORY_ERROR_TYPE_UNCORRECTED: c_uint = 1;
    pub const NVML_VOLATILE_ECC: c_uint = 0;
    pub const NVML_AGGREGATE_ECC: c_uint = 1;
    pub const NVML_MEMORY_LOCATION_COUNT: c_uint = 8;

    pub const NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS: c_uint = 0;
    pub const NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR: c_uint = 1;

    pub const NVML_TOPOLOGY_INTERNAL: c_uint = 0;
    pub const NVML_TOPOLOGY_SINGLE: c_uint = 10;
    pub const NVML_TOPOLOGY_MULTIPLE: c_uint = 20;
    pub const NVML_TOPOLOGY_HOSTBRIDGE: c_uint = 30;
    pub const NVML_TOPOLOGY_NODE: c_uint = 40;
    pub const NVML_TOPOLOGY_SYSTEM: c_uint = 50;

    pub const NVML_P2P_CAPS_INDEX_READ: c_uint = 0;
    pub const NVML_P2P_CAPS_INDEX_PROP: c_uint = 4;
    pub const NVML_P2P_STATUS_OK: c_uint = 0;
    pub const NVML_P2P_STATUS_NOT_SUPPORTED: c_uint = 5;

    pub const NVML_BUS_TYPE_PCIE: c_uint = 2;
    pub const NVML_POWER_SOURCE_AC: c_uint = 0;

    pub const NVML_VALUE_TYPE_DOUBLE: c_uint = 0;
    pub const NVML_VALUE_TYPE_UNSIGNED_INT: c_uint = 1;
    pub const NVML_VALUE_TYPE_UNSIGNED_LONG_LONG: c_uint = 3;
    pub const NVML_VALUE_TYPE_SIGNED_LONG_LONG: c_uint = 4;
    pub const NVML_VALUE_TYPE_SIGNED_INT: c_uint = 5;

    pub const NVML_AFFINITY_SCOPE_NODE: c_uint = 0;
    pub const NVML_AFFINITY_SCOPE_SOCKET: c_uint = 1;

    pub const NVML_DEVICE_MIG_DISABLE: c_uint = 0;
    pub const NVML_DEVICE_MIG_ENABLE: c_uint = 1;

    pub const NVML_INIT_FLAG_NO_GPUS: c_uint = 1;
    pub const NVML_INIT_FLAG_NO_ATTACH: c_uint = 2;

    pub const NVML_DEVICE_NAME_BUFFER_SIZE: usize = 64;
    pub const NVML_DEVICE_NAME_V2_BUFFER_SIZE: usize = 96;
    pub const NVML_DEVICE_UUID_V2_BUFFER_SIZE: usize = 96;
}

/// Event type bits (`nvmlEventType*`).
pub mod event {
    pub const SINGLE_BIT_ECC_ERROR: u64 = 0x1;
    pub const DOUBLE_BIT_ECC_ERROR: u64 = 0x2;
    pub const PSTATE: u64 = 0x4;
    pub const XID_CRITICAL_ERROR: u64 = 0x8;
    pub const CLOCK: u64 = 0x10;
    pub const POWER_SOURCE_CHANGE: u64 = 0x80;
    pub const MIG_CONFIG_CHANGE: u64 = 0x100;
    pub const NONE: u64 = 0;
}

/// Clock event ("throttle") reason bits.
pub mod clocks_event {
    pub const GPU_IDLE: u64 = 0x1;
    pub const APPLICATIONS_CLOCKS_SETTING: u64 = 0x2;
    pub const SW_POWER_CAP: u64 = 0x4;
    pub const HW_SLOWDOWN: u64 = 0x8;
    pub const SYNC_BOOST: u64 = 0x10;
    pub const SW_THERMAL_SLOWDOWN: u64 = 0x20;
    pub const HW_THERMAL_SLOWDOWN: u64 = 0x40;
    pub const HW_POWER_BRAKE_SLOWDOWN: u64 = 0x80;
    pub const DISPLAY_CLOCK_SETTING: u64 = 0x100;
    pub const ALL: u64 = 0x1FF;
}

/// `nvmlDeviceGetFieldValues` field ids used by the clients we serve.
pub mod field {
    pub const ECC_CURRENT: u32 = 1;
    pub const ECC_PENDING: u32 = 2;
    pub const ECC_SBE_VOL_TOTAL: u32 = 3;
    pub const ECC_DBE_VOL_TOTAL: u32 = 4;
    pub const ECC_SBE_AGG_TOTAL: u32 = 5;
    pub const ECC_DBE_AGG_TOTAL: u32 = 6;
    pub const RETIRED_SBE: u32 = 29;
    pub const RETIRED_DBE: u32 = 30;
    pub const RETIRED_PENDING: u32 = 31;
    pub const MEMORY_TEMP: u32 = 82;
    pub const TOTAL_ENERGY_CONSUMPTION: u32 = 83;
    pub const NVLINK_LINK_COUNT: u32 = 91;
    pub const RETIRED_PENDING_SBE: u32 = 92;
    pub const RETIRED_PENDING_DBE: u32 = 93;
    pub const PCIE_REPLAY_COUNTER: u32 = 94;
    pub const PCIE_REPLAY_ROLLOVER_COUNTER: u32 = 95;
    pub const REMAPPED_COR: u32 = 142;
    pub const REMAPPED_UNC: u32 = 143;
    pub const REMAPPED_PENDING: u32 = 144;
    pub const REMAPPED_FAILURE: u32 = 145;
    pub const POWER_AVERAGE: u32 = 185;
    pub const POWER_INSTANT: u32 = 186;
    pub const POWER_MIN_LIMIT: u32 = 187;
    pub const POWER_MAX_LIMIT: u32 = 188;
    pub const POWER_DEFAULT_LIMIT: u32 = 189;
    pub const POWER_CURRENT_LIMIT: u32 = 190;
    pub const ENERGY: u32 = 191;
    pub const POWER_REQUESTED_LIMIT: u32 = 192;
    pub const TEMPERATURE_SHUTDOWN_TLIMIT: u32 = 193;
    pub const TEMPERATURE_SLOWDOWN_TLIMIT: u32 = 194;
    pub const TEMPERATURE_MEM_MAX_TLIMIT: u32 = 195;
    pub const TEMPERATURE_GPU_MAX_TLIMIT: u32 = 196;

    /// `scopeId` values for power fields.
    pub const POWER_SCOPE_GPU: u32 = 0;
    pub const POWER_SCOPE_MODULE: u32 = 1;
}

/// Makes `*mut c_void` usable in signatures without importing it at each site.
pub type c_void_ptr = *mut c_void;

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::size_of;

    /// Sizes from the documented C layouts on LP64 Linux.
    #[test]
    fn struct_sizes_match_the_c_layouts() {
        assert_eq!(size_of::<nvmlPciInfo_v1_t>(), 52);
        assert_eq!(size_of::<nvmlPciInfo_t>(), 68);
        assert_eq!(size_of::<nvmlMemory_t>(), 24);
        assert_eq!(size_of::<nvmlMemory_v2_t>(), 40);
        assert_eq!(nvmlMemory_v2, 0x0200_0028);
        assert_eq!(size_of::<nvmlBAR1Memory_t>(), 24);
        assert_eq!(size_of::<nvmlProcessInfo_v1_t>(), 16);
        assert_eq!(size_of::<nvmlProcessInfo_t>(), 24);
        assert_eq!(size_of::<nvmlProcessDetail_v1_t>(), 32);
        assert_eq!(size_of::<nvmlProcessDetailList_v1_t>(), 24);
        assert_eq!(size_of::<nvmlEventData_t>(), 32);
        assert_eq!(size_of::<nvmlEventData_v1_t>(), 24);
        assert_eq!(size_of::<nvmlFieldValue_t>(), 40);
        assert_eq!(size_of::<nvmlBridgeChipHierarchy_t>(), 1028);
        assert_eq!(size_of::<nvmlProcessUtilizationSample_t>(), 32);
        assert_eq!(size_of::<nvmlDeviceAttributes_t>(), 40);
        assert_eq!(size_of::<nvmlClkMonStatus_t>(), 264);
        assert_eq!(size_of::<nvmlGpuInstancePlacement_t>(), 8);
        assert_eq!(size_of::<nvmlGpuInstanceProfileInfo_v2_t>(), 152);
        assert_eq!(nvmlGpuInstanceProfileInfo_v2, 0x0200_0098);
        assert_eq!(size_of::<nvmlGpuInstanceInfo_t>(), 24);
        assert_eq!(size_of::<nvmlComputeInstanceProfileInfo_v2_t>(), 136);
        assert_eq!(nvmlComputeInstanceProfileInfo_v2, 0x0200_0088);
        assert_eq!(size_of::<nvmlComputeInstanceInfo_t>(), 32);
        assert_eq!(size_of::<nvmlGpuFabricInfo_t>(), 28);
        assert_eq!(size_of::<export_table::AtomicCaps>(), 8);
    }
}
