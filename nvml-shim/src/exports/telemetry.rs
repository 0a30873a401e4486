//! Readings: memory, utilization, temperature, fans, power, energy, performance state,
//! clocks, clock-event reasons and PCIe traffic. Values come from the model's telemetry.

use std::ffi::c_uint;

use fakegpu_model::board::{supported_graphics_clocks, GRAPHICS_CLOCK_STEP_KHZ};
use fakegpu_model::profile::ClockSet;
use nvml_abi::consts::*;
use nvml_abi::{
    clocks_event, nvmlBAR1Memory_t, nvmlDevice_t, nvmlMemory_t, nvmlMemory_v2, nvmlMemory_v2_t, nvmlReturn_t, nvmlUtilization_t,
    nvmlViolationTime_t, ret,
};

use crate::device::Device;
use crate::ffi::{guard, out, put, put_list};
use crate::runtime::device;

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMemoryInfo(dev: nvmlDevice_t, memory: *mut nvmlMemory_t) -> nvmlReturn_t {
    guard("nvmlDeviceGetMemoryInfo", || {
        if crate::exports::mig::is_mig_handle(dev) {
            return crate::exports::mig::mig_get_memory(dev, memory);
        }
        let d = device(dev)?;
        crate::live::sweep_exited(d.host_index);
        let m = d.readings().memory;
        put(memory, nvmlMemory_t { total: m.total, free: m.free, used: m.used_v1() })
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMemoryInfo_v2(dev: nvmlDevice_t, memory: *mut nvmlMemory_v2_t) -> nvmlReturn_t {
    guard("nvmlDeviceGetMemoryInfo_v2", || {
        if crate::exports::mig::is_mig_handle(dev) {
            return crate::exports::mig::mig_get_memory_v2(dev, memory);
        }
        let d = device(dev)?;
        crate::live::sweep_exited(d.host_index);
        let m = d.readings().memory;
        let memory = out(memory)?;
        if memory.version != nvmlMemory_v2 {
            return Err(ret::ARGUMENT_VERSION_MISMATCH);
        }
        *memory = nvmlMemory_v2_t { version: nvmlMemory_v2, total: m.total, reserved: m.reserved, free: m.free, used: m.used };
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetBAR1MemoryInfo(dev: nvmlDevice_t, bar1Memory: *mut nvmlBAR1Memory_t) -> nvmlReturn_t {
    guard("nvmlDeviceGetBAR1MemoryInfo", || {
        if crate::exports::mig::is_mig_handle(dev) {
            return crate::exports::mig::mig_get_bar1(dev, bar1Memory);
        }
        let d = device(dev)?;
        let total = d.profile.memory.bar1_total_mib * fakegpu_model::telemetry::MIB;
        let used = d.readings().bar1_used_bytes;
        put(bar1Memory, nvmlBAR1Memory_t { bar1Total: total, bar1Free: total - used, bar1Used: used })
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetUtilizationRates(dev: nvmlDevice_t, utilization: *mut nvmlUtilization_t) -> nvmlReturn_t {
    guard("nvmlDeviceGetUtilizationRates", || {
        let r = device(dev)?.readings();
        put(utilization, nvmlUtilization_t { gpu: r.gpu_util, memory: r.memory_util })
    })
}

/// Engine utilization getters share one shape: percent plus the sampling period (µs).
unsafe fn engine_util(
    name: &'static str,
    dev: nvmlDevice_t,
    util: *mut c_uint,
    period: *mut c_uint,
    pick: fn(&Device) -> u32,
) -> nvmlReturn_t {
    guard(name, || {
        let d = device(dev)?;
        let (util, period) = (out(util)?, out(period)?);
        *util = pick(d);
        *period = 167_000;
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetEncoderUtilization(
    dev: nvmlDevice_t,
    utilization: *mut c_uint,
    samplingPeriodUs: *mut c_uint,
) -> nvmlReturn_t {
    engine_util("nvmlDeviceGetEncoderUtilization", dev, utilization, samplingPeriodUs, |d| d.readings().encoder_util)
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetDecoderUtilization(
    dev: nvmlDevice_t,
    utilization: *mut c_uint,
    samplingPeriodUs: *mut c_uint,
) -> nvmlReturn_t {
    engine_util("nvmlDeviceGetDecoderUtilization", dev, utilization, samplingPeriodUs, |d| d.readings().decoder_util)
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetJpgUtilization(
    dev: nvmlDevice_t,
    utilization: *mut c_uint,
    samplingPeriodUs: *mut c_uint,
) -> nvmlReturn_t {
    engine_util("nvmlDeviceGetJpgUtilization", dev, utilization, samplingPeriodUs, |_| 0)
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetOfaUtilization(
    dev: nvmlDevice_t,
    utilization: *mut c_uint,
    samplingPeriodUs: *mut c_uint,
) -> nvmlReturn_t {
    engine_util("nvmlDeviceGetOfaUtilization", dev, utilization, samplingPeriodUs, |_| 0)
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetTemperature(dev: nvmlDevice_t, sensorType: c_uint, temp: *mut c_uint) -> nvmlReturn_t {
    guard("nvmlDeviceGetTemperature", || {
        let d = device(dev)?;
        if sensorType != NVML_TEMPERATURE_GPU {
            return Err(ret::INVALID_ARGUMENT);
        }
        put(temp, d.readings().gpu_temp_c)
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetTemperatureThreshold(dev: nvmlDevice_t, thresholdType: c_uint, temp: *mut c_uint) -> nvmlReturn_t {
    guard("nvmlDeviceGetTemperatureThreshold", || {
        let t = &device(dev)?.profile.thermal;
        let value = match thresholdType {
            NVML_TEMPERATURE_THRESHOLD_SHUTDOWN => Some(t.shutdown_c),
            NVML_TEMPERATURE_THRESHOLD_SLOWDOWN => Some(t.slowdown_c),
            NVML_TEMPERATURE_THRESHOLD_MEM_MAX => t.memory_max_c,
            NVML_TEMPERATURE_THRESHOLD_GPU_MAX => t.gpu_max_c,
            4..=7 => None,
            _ => return Err(ret::INVALID_ARGUMENT),
        };
        put(temp, value.ok_or(ret::NOT_SUPPORTED)?)
    })
}

fn fan(d: &Device) -> Result<u32, nvmlReturn_t> {
    d.profile.fan_speed_percent.ok_or(ret::NOT_SUPPORTED)
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetFanSpeed(dev: nvmlDevice_t, speed: *mut c_uint) -> nvmlReturn_t {
    guard("nvmlDeviceGetFanSpeed", || put(speed, fan(device(dev)?)?))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetFanSpeed_v2(dev: nvmlDevice_t, fanIndex: c_uint, speed: *mut c_uint) -> nvmlReturn_t {
    guard("nvmlDeviceGetFanSpeed_v2", || {
        let value = fan(device(dev)?)?;
        if fanIndex != 0 {
            return Err(ret::INVALID_ARGUMENT);
        }
        put(speed, value)
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetTargetFanSpeed(dev: nvmlDevice_t, fanIndex: c_uint, targetSpeed: *mut c_uint) -> nvmlReturn_t {
    guard("nvmlDeviceGetTargetFanSpeed", || {
        let value = fan(device(dev)?)?;
        if fanIndex != 0 {
            return Err(ret::INVALID_ARGUMENT);
        }
        put(targetSpeed, value)
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetNumFans(dev: nvmlDevice_t, numFans: *mut c_uint) -> nvmlReturn_t {
    guard("nvmlDeviceGetNumFans", || put(numFans, fan(device(dev)?).map(|_| 1)?))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetPowerUsage(dev: nvmlDevice_t, power: *mut c_uint) -> nvmlReturn_t {
    guard("nvmlDeviceGetPowerUsage", || put(power, device(dev)?.readings().power_mw))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetPowerManagementMode(dev: nvmlDevice_t, mode: *mut c_uint) -> nvmlReturn_t {
    guard("nvmlDeviceGetPowerManagementMode", || {
        device(dev)?;
        put(mode, NVML_FEATURE_ENABLED)
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetPowerManagementLimit(dev: nvmlDevice_t, limit: *mut c_uint) -> nvmlReturn_t {
    guard("nvmlDeviceGetPowerManagementLimit", || put(limit, device(dev)?.profile.power.default_limit_mw))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetPowerManagementDefaultLimit(dev: nvmlDevice_t, defaultLimit: *mut c_uint) -> nvmlReturn_t {
    guard("nvmlDeviceGetPowerManagementDefaultLimit", || put(defaultLimit, device(dev)?.profile.power.default_limit_mw))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetEnforcedPowerLimit(dev: nvmlDevice_t, limit: *mut c_uint) -> nvmlReturn_t {
    guard("nvmlDeviceGetEnforcedPowerLimit", || put(limit, device(dev)?.profile.power.default_limit_mw))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetPowerManagementLimitConstraints(
    dev: nvmlDevice_t,
    minLimit: *mut c_uint,
    maxLimit: *mut c_uint,
) -> nvmlReturn_t {
    guard("nvmlDeviceGetPowerManagementLimitConstraints", || {
        let p = device(dev)?.profile.power;
        let (min, max) = (out(minLimit)?, out(maxLimit)?);
        (*min, *max) = (p.min_limit_mw, p.max_limit_mw);
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetPowerSource(dev: nvmlDevice_t, powerSource: *mut c_uint) -> nvmlReturn_t {
    guard("nvmlDeviceGetPowerSource", || {
        device(dev)?;
        put(powerSource, NVML_POWER_SOURCE_AC)
    })
}

pub(crate) fn total_energy_mj(d: &Device) -> u64 {
    // Idle power × uptime until the live state changes the load; see fakegpu_model::dynamics.
    d.energy_mj()
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetTotalEnergyConsumption(dev: nvmlDevice_t, energy: *mut u64) -> nvmlReturn_t {
    guard("nvmlDeviceGetTotalEnergyConsumption", || put(energy, total_energy_mj(device(dev)?)))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetPerformanceState(dev: nvmlDevice_t, pState: *mut c_uint) -> nvmlReturn_t {
    guard("nvmlDeviceGetPerformanceState", || put(pState, device(dev)?.readings().pstate))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetPowerState(dev: nvmlDevice_t, pState: *mut c_uint) -> nvmlReturn_t {
    guard("nvmlDeviceGetPowerState", || put(pState, device(dev)?.readings().pstate))
}

/// `NVML_PSTATE_UNKNOWN` fills the unused tail of a P-state list.
const PSTATE_UNKNOWN: c_uint = 32;

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetSupportedPerformanceStates(dev: nvmlDevice_t, pstates: *mut c_uint, size: c_uint) -> nvmlReturn_t {
    guard("nvmlDeviceGetSupportedPerformanceStates", || {
        let d = device(dev)?;
        if pstates.is_null() {
            return Err(ret::INVALID_ARGUMENT);
        }
        let supported: Vec<c_uint> = if d.profile.idle_pstate == 0 { vec![0] } else { vec![0, d.profile.idle_pstate] };
        if (size as usize) < supported.len() * std::mem::size_of::<c_uint>() {
            return Err(ret::INSUFFICIENT_SIZE);
        }
        let slots = std::slice::from_raw_parts_mut(pstates, size as usize / std::mem::size_of::<c_uint>());
        slots.fill(PSTATE_UNKNOWN);
        slots[..supported.len()].copy_from_slice(&supported);
        Ok(())
    })
}

fn pick_clock(set: &ClockSet, clock_type: c_uint) -> Result<u32, nvmlReturn_t> {
    match clock_type {
        NVML_CLOCK_GRAPHICS => Ok(set.graphics_mhz),
        NVML_CLOCK_SM => Ok(set.sm_mhz),
        NVML_CLOCK_MEM => Ok(set.memory_mhz),
        NVML_CLOCK_VIDEO => Ok(set.video_mhz),
        _ => Err(ret::INVALID_ARGUMENT),
    }
}

/// Application clocks exist for graphics (and SM, which follows it) and memory.
fn app_clock(d: &Device, clock_type: c_uint, default: bool) -> Result<u32, nvmlReturn_t> {
    let clocks = &d.profile.clocks;
    let set = if default { clocks.default_applications } else { clocks.applications };
    let set = set.ok_or(ret::NOT_SUPPORTED)?;
    match clock_type {
        NVML_CLOCK_GRAPHICS | NVML_CLOCK_SM => Ok(set.graphics_mhz),
        NVML_CLOCK_MEM => Ok(set.memory_mhz),
        NVML_CLOCK_VIDEO => Err(ret::NOT_SUPPORTED),
        _ => Err(ret::INVALID_ARGUMENT),
    }
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetClockInfo(dev: nvmlDevice_t, clockType: c_uint, clock: *mut c_uint) -> nvmlReturn_t {
    guard("nvmlDeviceGetClockInfo", || put(clock, pick_clock(&device(dev)?.readings().clocks, clockType)?))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMaxClockInfo(dev: nvmlDevice_t, clockType: c_uint, clock: *mut c_uint) -> nvmlReturn_t {
    guard("nvmlDeviceGetMaxClockInfo", || put(clock, pick_clock(&device(dev)?.profile.clocks.max, clockType)?))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetApplicationsClock(dev: nvmlDevice_t, clockType: c_uint, clockMHz: *mut c_uint) -> nvmlReturn_t {
    guard("nvmlDeviceGetApplicationsClock", || put(clockMHz, app_clock(device(dev)?, clockType, false)?))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetDefaultApplicationsClock(
    dev: nvmlDevice_t,
    clockType: c_uint,
    clockMHz: *mut c_uint,
) -> nvmlReturn_t {
    guard("nvmlDeviceGetDefaultApplicationsClock", || put(clockMHz, app_clock(device(dev)?, clockType, true)?))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMaxCustomerBoostClock(dev: nvmlDevice_t, clockType: c_uint, clockMHz: *mut c_uint) -> nvmlReturn_t {
    guard("nvmlDeviceGetMaxCustomerBoostClock", || {
        let d = device(dev)?;
        match clockType {
            NVML_CLOCK_GRAPHICS | NVML_CLOCK_SM => put(clockMHz, d.profile.clocks.max_customer_boost_mhz.ok_or(ret::NOT_SUPPORTED)?),
            NVML_CLOCK_MEM | NVML_CLOCK_VIDEO => Err(ret::NOT_SUPPORTED),
            _ => Err(ret::INVALID_ARGUMENT),
        }
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetClock(dev: nvmlDevice_t, clockType: c_uint, clockId: c_uint, clockMHz: *mut c_uint) -> nvmlReturn_t {
    guard("nvmlDeviceGetClock", || {
        let d = device(dev)?;
        let value = match clockId {
            NVML_CLOCK_ID_CURRENT => pick_clock(&d.readings().clocks, clockType)?,
            NVML_CLOCK_ID_APP_CLOCK_TARGET => app_clock(d, clockType, false)?,
            NVML_CLOCK_ID_APP_CLOCK_DEFAULT => app_clock(d, clockType, true)?,
            NVML_CLOCK_ID_CUSTOMER_BOOST_MAX => match clockType {
                NVML_CLOCK_GRAPHICS | NVML_CLOCK_SM => d.profile.clocks.max_customer_boost_mhz.ok_or(ret::NOT_SUPPORTED)?,
                _ => return Err(ret::NOT_SUPPORTED),
            },
            _ => return Err(ret::INVALID_ARGUMENT),
        };
        put(clockMHz, value)
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMinMaxClockOfPState(
    dev: nvmlDevice_t,
    clockType: c_uint,
    pstate: c_uint,
    minClockMHz: *mut c_uint,
    maxClockMHz: *mut c_uint,
) -> nvmlReturn_t {
    guard("nvmlDeviceGetMinMaxClockOfPState", || {
        let d = device(dev)?;
        if pstate != 0 && pstate != d.profile.idle_pstate {
            return Err(ret::NOT_SUPPORTED);
        }
        let (min, max) = (pick_clock(&d.profile.clocks.idle, clockType)?, pick_clock(&d.profile.clocks.max, clockType)?);
        let (lo, hi) = (out(minClockMHz)?, out(maxClockMHz)?);
        (*lo, *hi) = (min, max);
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetSupportedMemoryClocks(dev: nvmlDevice_t, count: *mut c_uint, clocksMHz: *mut c_uint) -> nvmlReturn_t {
    guard("nvmlDeviceGetSupportedMemoryClocks", || {
        let clocks = &device(dev)?.profile.clocks;
        let mut supported = vec![clocks.max.memory_mhz];
        if clocks.idle.memory_mhz != clocks.max.memory_mhz {
            supported.push(clocks.idle.memory_mhz);
        }
        put_list(count, clocksMHz, &supported)
    })
}

/// Graphics clocks a memory clock allows: from the maximum down to the idle clock in the
/// board's steps (15 MHz, 7.5 MHz on Blackwell; `fakegpu_model::board`).
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetSupportedGraphicsClocks(
    dev: nvmlDevice_t,
    memoryClockMHz: c_uint,
    count: *mut c_uint,
    clocksMHz: *mut c_uint,
) -> nvmlReturn_t {
    guard("nvmlDeviceGetSupportedGraphicsClocks", || {
        let d = device(dev)?;
        let clocks = &d.profile.clocks;
        if memoryClockMHz != clocks.max.memory_mhz && memoryClockMHz != clocks.idle.memory_mhz {
            return Err(ret::NOT_FOUND);
        }
        let step = d.profile.board.graphics_clock_step_khz.unwrap_or(GRAPHICS_CLOCK_STEP_KHZ);
        let supported = supported_graphics_clocks(clocks.idle.graphics_mhz, clocks.max.graphics_mhz, step);
        put_list(count, clocksMHz, &supported)
    })
}

/// An idle GPU reports that it is idle; the live state adds injected reasons (thermal, power...).
fn current_clock_reasons(d: &Device) -> u64 {
    d.clock_event_reasons()
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetCurrentClocksThrottleReasons(dev: nvmlDevice_t, reasons: *mut u64) -> nvmlReturn_t {
    guard("nvmlDeviceGetCurrentClocksThrottleReasons", || put(reasons, current_clock_reasons(device(dev)?)))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetCurrentClocksEventReasons(dev: nvmlDevice_t, reasons: *mut u64) -> nvmlReturn_t {
    guard("nvmlDeviceGetCurrentClocksEventReasons", || put(reasons, current_clock_reasons(device(dev)?)))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetSupportedClocksThrottleReasons(dev: nvmlDevice_t, reasons: *mut u64) -> nvmlReturn_t {
    guard("nvmlDeviceGetSupportedClocksThrottleReasons", || {
        device(dev)?;
        put(reasons, clocks_event::ALL)
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetSupportedClocksEventReasons(dev: nvmlDevice_t, reasons: *mut u64) -> nvmlReturn_t {
    guard("nvmlDeviceGetSupportedClocksEventReasons", || {
        device(dev)?;
        put(reasons, clocks_event::ALL)
    })
}

/// No policy has held the clocks back: the violation time stays zero.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetViolationStatus(
    dev: nvmlDevice_t,
    perfPolicyType: c_uint,
    violTime: *mut nvmlViolationTime_t,
) -> nvmlReturn_t {
    guard("nvmlDeviceGetViolationStatus", || {
        device(dev)?;
        if perfPolicyType > 11 {
            return Err(ret::INVALID_ARGUMENT);
        }
        let now_ns = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        put(violTime, nvmlViolationTime_t { referenceTime: now_ns / 1000, violationTime: 0 })
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetPcieThroughput(dev: nvmlDevice_t, counter: c_uint, value: *mut c_uint) -> nvmlReturn_t {
    guard("nvmlDeviceGetPcieThroughput", || {
        let d = device(dev)?;
        // KB/s: an idle GPU still exchanges a trickle of driver traffic with the host.
        let util = d.readings().gpu_util;
        let kbps = match counter {
            NVML_PCIE_UTIL_TX_BYTES => 500 + util * 200,
            NVML_PCIE_UTIL_RX_BYTES => 550 + util * 300,
            // NVML_PCIE_UTIL_COUNT: drivers accept it (pynvml's own test suite requires success); no traffic.
            2 => 0,
            _ => return Err(ret::INVALID_ARGUMENT),
        };
        put(value, kbps)
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetPcieReplayCounter(dev: nvmlDevice_t, value: *mut c_uint) -> nvmlReturn_t {
    guard("nvmlDeviceGetPcieReplayCounter", || {
        device(dev)?;
        put(value, 0)
    })
}

/// Confidential-computing protected memory: none while CC is off, which is what boards
/// report (0 MiB, not N/A) in `nvidia-smi -q`.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetConfComputeProtectedMemoryUsage(dev: nvmlDevice_t, memory: *mut nvmlMemory_t) -> nvmlReturn_t {
    guard("nvmlDeviceGetConfComputeProtectedMemoryUsage", || {
        device(dev)?;
        put(memory, nvmlMemory_t { total: 0, free: 0, used: 0 })
    })
}

/// `nvmlEccSramErrorStatus_t` (v1, 104 bytes), as declared by NVML 12's nvml.h.
#[repr(C)]
#[allow(non_snake_case)]
pub struct nvmlEccSramErrorStatus_t {
    pub version: c_uint,
    pub aggregateUncParity: u64,
    pub aggregateUncSecDed: u64,
    pub aggregateCor: u64,
    pub volatileUncParity: u64,
    pub volatileUncSecDed: u64,
    pub volatileCor: u64,
    pub aggregateUncBucketL2: u64,
    pub aggregateUncBucketSm: u64,
    pub aggregateUncBucketPcie: u64,
    pub aggregateUncBucketMcu: u64,
    pub aggregateUncBucketOther: u64,
    pub bThresholdExceeded: c_uint,
}

const NVML_ECC_SRAM_ERROR_STATUS_V1: c_uint = (std::mem::size_of::<nvmlEccSramErrorStatus_t>() as c_uint) | (1 << 24);

/// SRAM ECC counters (Ampere and later, ECC on): a healthy board counts zero, below threshold.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetSramEccErrorStatus(dev: nvmlDevice_t, status: *mut nvmlEccSramErrorStatus_t) -> nvmlReturn_t {
    guard("nvmlDeviceGetSramEccErrorStatus", || {
        let d = device(dev)?;
        let status = out(status)?;
        if status.version != NVML_ECC_SRAM_ERROR_STATUS_V1 {
            return Err(ret::ARGUMENT_VERSION_MISMATCH);
        }
        if !d.ecc() || !d.remaps_rows() {
            return Err(ret::NOT_SUPPORTED);
        }
        *status = nvmlEccSramErrorStatus_t { version: NVML_ECC_SRAM_ERROR_STATUS_V1, ..std::mem::zeroed() };
        Ok(())
    })
}
