//! Memory health: ECC error counters, retired pages (before Ampere) and remapped rows
//! (Ampere and later). A healthy board counts zero everywhere.

use std::ffi::c_uint;

use nvml_abi::consts::*;
use nvml_abi::{nvmlDevice_t, nvmlEccErrorCounts_t, nvmlReturn_t, nvmlRowRemapperHistogramValues_t, ret};

use crate::device::Device;
use crate::ffi::{guard, put, put_list, NvmlResult};
use crate::runtime::device;

fn check_ecc_args(d: &Device, error_type: c_uint, counter_type: c_uint) -> NvmlResult {
    if error_type > NVML_MEMORY_ERROR_TYPE_UNCORRECTED || counter_type > NVML_AGGREGATE_ECC {
        return Err(ret::INVALID_ARGUMENT);
    }
    if !d.ecc() {
        return Err(ret::NOT_SUPPORTED);
    }
    Ok(())
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetTotalEccErrors(
    dev: nvmlDevice_t,
    errorType: c_uint,
    counterType: c_uint,
    eccCounts: *mut u64,
) -> nvmlReturn_t {
    guard("nvmlDeviceGetTotalEccErrors", || {
        let d = device(dev)?;
        check_ecc_args(d, errorType, counterType)?;
        put(eccCounts, injected_ecc(d, errorType, counterType))
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetDetailedEccErrors(
    dev: nvmlDevice_t,
    errorType: c_uint,
    counterType: c_uint,
    eccCounts: *mut nvmlEccErrorCounts_t,
) -> nvmlReturn_t {
    guard("nvmlDeviceGetDetailedEccErrors", || {
        let d = device(dev)?;
        check_ecc_args(d, errorType, counterType)?;
        // Injected errors are counted in device memory.
        put(eccCounts, nvmlEccErrorCounts_t { deviceMemory: injected_ecc(d, errorType, counterType), ..Default::default() })
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMemoryErrorCounter(
    dev: nvmlDevice_t,
    errorType: c_uint,
    counterType: c_uint,
    locationType: c_uint,
    count: *mut u64,
) -> nvmlReturn_t {
    guard("nvmlDeviceGetMemoryErrorCounter", || {
        if crate::exports::mig::is_mig_handle(dev) {
            // Errors are counted per GPU; a MIG device's own counters stay zero.
            crate::exports::mig::mig_device(dev)?;
            return put(count, 0);
        }
        let d = device(dev)?;
        check_ecc_args(d, errorType, counterType)?;
        if locationType >= NVML_MEMORY_LOCATION_COUNT {
            return Err(ret::INVALID_ARGUMENT);
        }
        // Injected errors are in DRAM (device memory) on every board we simulate.
        let dram = locationType == 2; // NVML_MEMORY_LOCATION_DRAM (= DEVICE_MEMORY)
        put(count, if dram { injected_ecc(d, errorType, counterType) } else { 0 })
    })
}

/// ECC errors injected through the live state (0 on a healthy board).
pub(crate) fn injected_ecc(d: &Device, error_type: c_uint, counter_type: c_uint) -> u64 {
    let f = d.faults();
    let counts = if counter_type == NVML_AGGREGATE_ECC { f.ecc_aggregate } else { f.ecc_volatile };
    if error_type == NVML_MEMORY_ERROR_TYPE_UNCORRECTED {
        counts.dbe
    } else {
        counts.sbe
    }
}

/// Both RetiredPages versions: the addresses retired for `cause` (timestamps are not kept).
unsafe fn retired_pages(dev: nvmlDevice_t, cause: c_uint, page_count: *mut c_uint, addresses: *mut u64) -> NvmlResult {
    let d = device(dev)?;
    retires_pages(d)?;
    if cause > NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR {
        return Err(ret::INVALID_ARGUMENT);
    }
    let f = d.faults();
    let pages = if cause == NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR { f.retired_pages_dbe } else { f.retired_pages_sbe };
    put_list::<u64>(page_count, addresses, &pages)
}

fn retires_pages(d: &Device) -> NvmlResult {
    if d.remaps_rows() || !d.ecc() {
        Err(ret::NOT_SUPPORTED)
    } else {
        Ok(())
    }
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetRetiredPages(
    dev: nvmlDevice_t,
    cause: c_uint,
    pageCount: *mut c_uint,
    addresses: *mut u64,
) -> nvmlReturn_t {
    guard("nvmlDeviceGetRetiredPages", || retired_pages(dev, cause, pageCount, addresses))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetRetiredPages_v2(
    dev: nvmlDevice_t,
    cause: c_uint,
    pageCount: *mut c_uint,
    addresses: *mut u64,
    _timestamps: *mut u64,
) -> nvmlReturn_t {
    guard("nvmlDeviceGetRetiredPages_v2", || retired_pages(dev, cause, pageCount, addresses))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetRetiredPagesPendingStatus(dev: nvmlDevice_t, isPending: *mut c_uint) -> nvmlReturn_t {
    guard("nvmlDeviceGetRetiredPagesPendingStatus", || {
        retires_pages(device(dev)?)?;
        put(isPending, NVML_FEATURE_DISABLED)
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetRemappedRows(
    dev: nvmlDevice_t,
    corrRows: *mut c_uint,
    uncRows: *mut c_uint,
    isPending: *mut c_uint,
    failureOccurred: *mut c_uint,
) -> nvmlReturn_t {
    guard("nvmlDeviceGetRemappedRows", || {
        let d = device(dev)?;
        if !d.remaps_rows() {
            return Err(ret::NOT_SUPPORTED);
        }
        let outs = [corrRows, uncRows, isPending, failureOccurred];
        if outs.iter().any(|p| p.is_null()) {
            return Err(ret::INVALID_ARGUMENT);
        }
        let r = d.faults().remapped_rows;
        (*corrRows, *uncRows, *isPending, *failureOccurred) = (r.correctable, r.uncorrectable, r.pending as c_uint, r.failure as c_uint);
        Ok(())
    })
}

/// Banks by remap availability: a healthy board has every bank at maximum; each remapped row
/// takes one bank from maximum to high availability.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetRowRemapperHistogram(
    dev: nvmlDevice_t,
    values: *mut nvmlRowRemapperHistogramValues_t,
) -> nvmlReturn_t {
    guard("nvmlDeviceGetRowRemapperHistogram", || {
        let d = device(dev)?;
        let banks = d.profile.board.remap_banks.filter(|_| d.remaps_rows()).ok_or(ret::NOT_SUPPORTED)?;
        let r = d.faults().remapped_rows;
        let used = r.correctable.saturating_add(r.uncorrectable).min(banks);
        put(values, nvmlRowRemapperHistogramValues_t { max: banks - used, high: used, partial: 0, low: 0, none: 0 })
    })
}
