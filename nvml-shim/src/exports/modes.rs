//! Modes and settings as read back: persistence, compute, display, ECC, accounting,
//! virtualization and GSP firmware. MIG lives in exports/mig.rs.

use std::ffi::{c_char, c_uint};

use nvml_abi::consts::*;
use nvml_abi::{nvmlDevice_t, nvmlReturn_t, ret};

use crate::device::Device;
use crate::ffi::{guard, out, put, put_str};
use crate::runtime::device;

/// Reads a setting of `dev` into `value` through `get`.
unsafe fn setting(
    name: &'static str,
    dev: nvmlDevice_t,
    value: *mut c_uint,
    get: fn(&Device) -> Result<c_uint, nvmlReturn_t>,
) -> nvmlReturn_t {
    guard(name, || put(value, get(device(dev)?)?))
}

/// Reads a (current, pending) pair.
unsafe fn pair(
    name: &'static str,
    dev: nvmlDevice_t,
    current: *mut c_uint,
    pending: *mut c_uint,
    get: fn(&Device) -> Result<(c_uint, c_uint), nvmlReturn_t>,
) -> nvmlReturn_t {
    guard(name, || {
        let (now, next) = get(device(dev)?)?;
        let (current, pending) = (out(current)?, out(pending)?);
        (*current, *pending) = (now, next);
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetPersistenceMode(dev: nvmlDevice_t, mode: *mut c_uint) -> nvmlReturn_t {
    setting("nvmlDeviceGetPersistenceMode", dev, mode, |d| Ok(d.profile.persistence_mode as c_uint))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetComputeMode(dev: nvmlDevice_t, mode: *mut c_uint) -> nvmlReturn_t {
    setting("nvmlDeviceGetComputeMode", dev, mode, |_| Ok(NVML_COMPUTEMODE_DEFAULT))
}

/// Whether a display could be initialized (the profile's `board.display_mode`); none is active.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetDisplayMode(dev: nvmlDevice_t, display: *mut c_uint) -> nvmlReturn_t {
    setting("nvmlDeviceGetDisplayMode", dev, display, |d| Ok(d.profile.board.display_mode as c_uint))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetDisplayActive(dev: nvmlDevice_t, isActive: *mut c_uint) -> nvmlReturn_t {
    setting("nvmlDeviceGetDisplayActive", dev, isActive, |_| Ok(NVML_FEATURE_DISABLED))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetEccMode(dev: nvmlDevice_t, current: *mut c_uint, pending: *mut c_uint) -> nvmlReturn_t {
    pair("nvmlDeviceGetEccMode", dev, current, pending, |d| Ok((d.ecc() as c_uint, d.ecc() as c_uint)))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetDefaultEccMode(dev: nvmlDevice_t, defaultMode: *mut c_uint) -> nvmlReturn_t {
    setting("nvmlDeviceGetDefaultEccMode", dev, defaultMode, |d| Ok(d.ecc() as c_uint))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetAccountingMode(dev: nvmlDevice_t, mode: *mut c_uint) -> nvmlReturn_t {
    setting("nvmlDeviceGetAccountingMode", dev, mode, |_| Ok(NVML_FEATURE_DISABLED))
}

/// Accounting keeps records of the last 4000 processes on every board we simulate.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetAccountingBufferSize(dev: nvmlDevice_t, bufferSize: *mut c_uint) -> nvmlReturn_t {
    setting("nvmlDeviceGetAccountingBufferSize", dev, bufferSize, |_| Ok(4000))
}

/// Accounting is disabled, so there are no accounted processes.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetAccountingPids(dev: nvmlDevice_t, count: *mut c_uint, pids: *mut c_uint) -> nvmlReturn_t {
    guard("nvmlDeviceGetAccountingPids", || {
        device(dev)?;
        crate::ffi::put_list::<c_uint>(count, pids, &[])
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetAccountingStats(dev: nvmlDevice_t, _pid: c_uint, stats: *mut u8) -> nvmlReturn_t {
    guard("nvmlDeviceGetAccountingStats", || {
        device(dev)?;
        out(stats)?;
        Err(ret::NOT_FOUND)
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetVirtualizationMode(dev: nvmlDevice_t, pVirtualMode: *mut c_uint) -> nvmlReturn_t {
    setting("nvmlDeviceGetVirtualizationMode", dev, pVirtualMode, |d| Ok(d.profile.virtualization_mode.nvml_value()))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetGspFirmwareVersion(dev: nvmlDevice_t, version: *mut c_char) -> nvmlReturn_t {
    guard("nvmlDeviceGetGspFirmwareVersion", || {
        let d = device(dev)?;
        // NVML_GSP_FIRMWARE_VERSION_BUF_SIZE: the API takes no length.
        put_str(version, 0x40, d.gsp_version.as_deref().ok_or(ret::NOT_SUPPORTED)?)
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetGspFirmwareMode(dev: nvmlDevice_t, isEnabled: *mut c_uint, defaultMode: *mut c_uint) -> nvmlReturn_t {
    pair("nvmlDeviceGetGspFirmwareMode", dev, isEnabled, defaultMode, |d| {
        Ok((d.gsp_version.is_some() as c_uint, d.gsp_version.is_some() as c_uint))
    })
}

// MIG mode and MIG device handles are in exports/mig.rs.
