//! Library lifecycle and system-wide queries: init/shutdown, error strings, versions,
//! process names, units (none) and excluded devices (none).

use std::ffi::{c_char, c_int, c_uint};
use std::sync::OnceLock;

use nvml_abi::{error_string, nvmlDevice_t, nvmlReturn_t, nvmlUnit_t, ret};

use crate::ffi::{guard, out, put, put_list, put_str};
use crate::runtime::{self, runtime};

#[no_mangle]
pub extern "C" fn nvmlInit() -> nvmlReturn_t {
    guard("nvmlInit", runtime::init)
}

#[no_mangle]
pub extern "C" fn nvmlInit_v2() -> nvmlReturn_t {
    guard("nvmlInit_v2", runtime::init)
}

/// Flags (NO_GPUS, NO_ATTACH) change nothing for simulated GPUs: there is nothing to attach.
#[no_mangle]
pub extern "C" fn nvmlInitWithFlags(_flags: c_uint) -> nvmlReturn_t {
    guard("nvmlInitWithFlags", runtime::init)
}

#[no_mangle]
pub extern "C" fn nvmlShutdown() -> nvmlReturn_t {
    guard("nvmlShutdown", runtime::shutdown)
}

/// Static, NUL-terminated texts for every code; never NULL.
#[no_mangle]
pub extern "C" fn nvmlErrorString(result: nvmlReturn_t) -> *const c_char {
    // Inline buffers, not heap strings: nothing to free when the library is unloaded.
    const LEN: usize = 64;
    const CODES: usize = 32;
    static TEXTS: OnceLock<[[c_char; LEN]; CODES]> = OnceLock::new();
    let code_at = |slot: usize| if slot < CODES - 1 { slot as nvmlReturn_t } else { ret::UNKNOWN };
    let texts = TEXTS.get_or_init(|| {
        let mut table = [[0 as c_char; LEN]; CODES];
        for (slot, text) in table.iter_mut().enumerate() {
            crate::ffi::fill_chars(text, error_string(code_at(slot)));
        }
        table
    });
    let slot = (0..CODES).find(|&s| code_at(s) == result).unwrap_or(CODES - 1);
    texts[slot].as_ptr()
}

#[no_mangle]
pub unsafe extern "C" fn nvmlSystemGetDriverVersion(version: *mut c_char, length: c_uint) -> nvmlReturn_t {
    guard("nvmlSystemGetDriverVersion", || put_str(version, length, &runtime()?.driver_version))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlSystemGetNVMLVersion(version: *mut c_char, length: c_uint) -> nvmlReturn_t {
    guard("nvmlSystemGetNVMLVersion", || put_str(version, length, &runtime()?.nvml_version))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlSystemGetCudaDriverVersion(version: *mut c_int) -> nvmlReturn_t {
    guard("nvmlSystemGetCudaDriverVersion", || put(version, runtime()?.node.spec.cuda_driver_version as c_int))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlSystemGetCudaDriverVersion_v2(version: *mut c_int) -> nvmlReturn_t {
    guard("nvmlSystemGetCudaDriverVersion_v2", || put(version, runtime()?.node.spec.cuda_driver_version as c_int))
}

/// The name of a process on a GPU: the live node state's name for a simulated process,
/// else the command name from /proc, as the real library reads it.
#[no_mangle]
pub unsafe extern "C" fn nvmlSystemGetProcessName(pid: c_uint, name: *mut c_char, length: c_uint) -> nvmlReturn_t {
    guard("nvmlSystemGetProcessName", || {
        runtime()?;
        if name.is_null() || length == 0 {
            return Err(ret::INVALID_ARGUMENT);
        }
        let simulated =
            crate::live::with(|snap| snap.gpus.iter().flat_map(|g| &g.processes).find(|p| p.pid == pid).map(|p| p.name.clone()));
        let text = match simulated {
            Some(known) => known,
            None => std::fs::read_to_string(format!("/proc/{pid}/comm")).map_err(|_| ret::NOT_FOUND)?.trim_end().to_string(),
        };
        let text = crate::runtime::cstring(&text);
        // The real library truncates to the caller's buffer rather than failing.
        let bytes = text.as_bytes();
        let n = bytes.len().min(length as usize - 1);
        std::ptr::copy_nonoverlapping(bytes.as_ptr().cast::<c_char>(), name, n);
        *name.add(n) = 0;
        Ok(())
    })
}

/// No HIC (Host Interface Card) boards in a simulated node.
#[no_mangle]
pub unsafe extern "C" fn nvmlSystemGetHicVersion(hwbcCount: *mut c_uint, _hwbcEntries: *mut u8) -> nvmlReturn_t {
    guard("nvmlSystemGetHicVersion", || {
        runtime()?;
        put(hwbcCount, 0)
    })
}

/// Every GPU is reachable from every CPU.
#[no_mangle]
pub unsafe extern "C" fn nvmlSystemGetTopologyGpuSet(
    _cpuNumber: c_uint,
    count: *mut c_uint,
    deviceArray: *mut nvmlDevice_t,
) -> nvmlReturn_t {
    guard("nvmlSystemGetTopologyGpuSet", || {
        let rt = runtime()?;
        let handles: Vec<nvmlDevice_t> = rt.devices.iter().map(|d| rt.handle_of(d)).collect();
        put_list(count, deviceArray, &handles)
    })
}

/// S-class units (external enclosures) do not exist here.
#[no_mangle]
pub unsafe extern "C" fn nvmlUnitGetCount(unitCount: *mut c_uint) -> nvmlReturn_t {
    guard("nvmlUnitGetCount", || {
        runtime()?;
        put(unitCount, 0)
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlUnitGetHandleByIndex(_index: c_uint, unit: *mut nvmlUnit_t) -> nvmlReturn_t {
    guard("nvmlUnitGetHandleByIndex", || {
        runtime()?;
        out(unit)?;
        Err(ret::INVALID_ARGUMENT)
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlGetExcludedDeviceCount(deviceCount: *mut c_uint) -> nvmlReturn_t {
    guard("nvmlGetExcludedDeviceCount", || {
        runtime()?;
        put(deviceCount, 0)
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlGetBlacklistDeviceCount(deviceCount: *mut c_uint) -> nvmlReturn_t {
    guard("nvmlGetBlacklistDeviceCount", || {
        runtime()?;
        put(deviceCount, 0)
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlGetExcludedDeviceInfoByIndex(_index: c_uint, info: *mut u8) -> nvmlReturn_t {
    guard("nvmlGetExcludedDeviceInfoByIndex", || {
        runtime()?;
        out(info)?;
        Err(ret::INVALID_ARGUMENT)
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlGetBlacklistDeviceInfoByIndex(_index: c_uint, info: *mut u8) -> nvmlReturn_t {
    guard("nvmlGetBlacklistDeviceInfoByIndex", || {
        runtime()?;
        out(info)?;
        Err(ret::INVALID_ARGUMENT)
    })
}
