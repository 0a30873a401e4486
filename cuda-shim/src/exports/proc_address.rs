//! `cuGetProcAddress` (the way cuda-bindings and the CUDA runtime find every other function)
//! and `cuGetExportTable`.
//!
//! A client asks for a base name (`cuCtxCreate`) with the CUDA version it was written for and
//! whether it uses the per-thread default stream; the driver answers with the ABI variant of
//! that version (`cuCtxCreate_v2` for 3.2 … 11.3, `cuCtxCreate_v3` from 11.4) and, for
//! per-thread streams, the `_ptds`/`_ptsz` form. Names are looked up in the table build.rs
//! generates from the 535 export list, so every exported function can be found and nothing
//! else can.

use std::ffi::{c_char, c_int, c_void};

use crate::ffi::{arg_str, guard, out};
use crate::types::*;

/// One exported function (the table is sorted by name).
pub(crate) struct Proc(pub &'static str, pub *const ());
// SAFETY: the pointers are addresses of functions, immutable for the life of the process.
unsafe impl Sync for Proc {}

static PROCS: &[Proc] = include!(concat!(env!("OUT_DIR"), "/procs.rs"));

/// Implemented functions whose ABI changed: (base name, [(first CUDA version, symbol)]),
/// from cuda.h's `#define cuX cuX_vN` history. A request older than the first version is
/// VERSION_NOT_SUFFICIENT. Names not listed resolve to the base symbol.
const VERSIONED: &[(&str, &[(c_int, &str)])] = &[
    ("cuCtxCreate", &[(2000, "cuCtxCreate"), (3020, "cuCtxCreate_v2"), (11040, "cuCtxCreate_v3")]),
    ("cuCtxDestroy", &[(2000, "cuCtxDestroy"), (4000, "cuCtxDestroy_v2")]),
    ("cuCtxPopCurrent", &[(2000, "cuCtxPopCurrent"), (4000, "cuCtxPopCurrent_v2")]),
    ("cuCtxPushCurrent", &[(2000, "cuCtxPushCurrent"), (4000, "cuCtxPushCurrent_v2")]),
    ("cuDeviceGetUuid", &[(9020, "cuDeviceGetUuid"), (11040, "cuDeviceGetUuid_v2")]),
    ("cuDevicePrimaryCtxRelease", &[(7000, "cuDevicePrimaryCtxRelease"), (11000, "cuDevicePrimaryCtxRelease_v2")]),
    ("cuDevicePrimaryCtxReset", &[(7000, "cuDevicePrimaryCtxReset"), (11000, "cuDevicePrimaryCtxReset_v2")]),
    ("cuDevicePrimaryCtxSetFlags", &[(7000, "cuDevicePrimaryCtxSetFlags"), (11000, "cuDevicePrimaryCtxSetFlags_v2")]),
    ("cuDeviceTotalMem", &[(2000, "cuDeviceTotalMem"), (3020, "cuDeviceTotalMem_v2")]),
    ("cuEventDestroy", &[(2000, "cuEventDestroy"), (4000, "cuEventDestroy_v2")]),
    ("cuGetProcAddress", &[(11030, "cuGetProcAddress"), (12000, "cuGetProcAddress_v2")]),
    ("cuMemAlloc", &[(2000, "cuMemAlloc"), (3020, "cuMemAlloc_v2")]),
    ("cuMemAllocHost", &[(2000, "cuMemAllocHost"), (3020, "cuMemAllocHost_v2")]),
    ("cuMemFree", &[(2000, "cuMemFree"), (3020, "cuMemFree_v2")]),
    ("cuMemGetInfo", &[(2000, "cuMemGetInfo"), (3020, "cuMemGetInfo_v2")]),
    ("cuMemcpyDtoD", &[(2000, "cuMemcpyDtoD"), (3020, "cuMemcpyDtoD_v2")]),
    ("cuMemcpyDtoH", &[(2000, "cuMemcpyDtoH"), (3020, "cuMemcpyDtoH_v2")]),
    ("cuMemcpyHtoD", &[(2000, "cuMemcpyHtoD"), (3020, "cuMemcpyHtoD_v2")]),
    ("cuStreamDestroy", &[(2000, "cuStreamDestroy"), (4000, "cuStreamDestroy_v2")]),
];

/// `CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM`.
const PER_THREAD_DEFAULT_STREAM: u64 = 0x2;
/// `CUdriverProcAddressQueryResult`.
const SYMBOL_FOUND: c_int = 0;
const SYMBOL_NOT_FOUND: c_int = 1;
const VERSION_NOT_SUFFICIENT: c_int = 2;

fn lookup(name: &str) -> Option<*const ()> {
    PROCS.binary_search_by(|p| p.0.cmp(name)).ok().map(|i| PROCS[i].1)
}

/// The address for (`symbol`, `version`, `flags`), or the query result saying why not.
pub(crate) fn resolve(symbol: &str, version: c_int, flags: u64) -> Result<*const (), c_int> {
    let chosen = match VERSIONED.iter().find(|(base, _)| *base == symbol) {
        Some((_, variants)) => variants.iter().rev().find(|(since, _)| *since <= version).map(|(_, s)| *s).ok_or(VERSION_NOT_SUFFICIENT)?,
        None if lookup(symbol).is_some() => symbol,
        None => return Err(SYMBOL_NOT_FOUND),
    };
    if flags & PER_THREAD_DEFAULT_STREAM != 0 {
        for suffix in ["_ptds", "_ptsz"] {
            if let Some(p) = lookup(&format!("{chosen}{suffix}")) {
                return Ok(p);
            }
        }
    }
    lookup(chosen).ok_or(SYMBOL_NOT_FOUND)
}

unsafe fn get(
    name: &'static str,
    symbol: *const c_char,
    pfn: *mut *mut c_void,
    version: c_int,
    flags: u64,
    status: *mut c_int,
) -> CUresult {
    guard(name, || {
        let pfn = out(pfn)?;
        let symbol = arg_str(symbol)?;
        if flags & !0x3 != 0 {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let result = resolve(symbol, version, flags);
        if !status.is_null() {
            *status = result.err().unwrap_or(SYMBOL_FOUND);
        }
        match result {
            Ok(p) => {
                *pfn = p.cast_mut().cast();
                Ok(())
            }
            Err(_) => {
                *pfn = std::ptr::null_mut();
                Err(CUDA_ERROR_NOT_FOUND)
            }
        }
    })
}

/// The CUDA 11.3 form (CUDA 11.x runtimes ask for exactly this one).
#[no_mangle]
pub unsafe extern "C" fn cuGetProcAddress(symbol: *const c_char, pfn: *mut *mut c_void, version: c_int, flags: u64) -> CUresult {
    get("cuGetProcAddress", symbol, pfn, version, flags, std::ptr::null_mut())
}

/// The CUDA 12.0 form, which also says why a lookup failed.
#[no_mangle]
pub unsafe extern "C" fn cuGetProcAddress_v2(
    symbol: *const c_char,
    pfn: *mut *mut c_void,
    version: c_int,
    flags: u64,
    status: *mut c_int,
) -> CUresult {
    get("cuGetProcAddress_v2", symbol, pfn, version, flags, status)
}

/// NVIDIA's private driver tables, which the CUDA runtime (libcudart: PyTorch's `torch.cuda`,
/// CuPy, anything built with nvcc) needs before it does anything else. Their layout is not
/// documented, so they cannot be simulated: the runtime then reports "operation not
/// supported" cleanly. Programs that use the driver API directly are what this library serves.
#[no_mangle]
pub unsafe extern "C" fn cuGetExportTable(table: *mut *const c_void, id: *const c_void) -> CUresult {
    guard("cuGetExportTable", || {
        let table = out(table)?;
        if id.is_null() {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        *table = std::ptr::null();
        Err(CUDA_ERROR_NOT_SUPPORTED)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_complete() {
        assert!(PROCS.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(PROCS.len(), include_str!("../../exports-535.txt").split_whitespace().count());
    }

    #[test]
    fn versions_pick_the_abi_variant() {
        let at = |s: &str, v: c_int, f: u64| resolve(s, v, f).ok();
        assert_eq!(at("cuCtxCreate", 3020, 0), lookup("cuCtxCreate_v2"));
        assert_eq!(at("cuCtxCreate", 12050, 0), lookup("cuCtxCreate_v3"));
        assert_eq!(at("cuGetProcAddress", 11030, 0), lookup("cuGetProcAddress"));
        assert_eq!(at("cuGetProcAddress", 12000, 0), lookup("cuGetProcAddress_v2"));
        assert_eq!(at("cuMemcpyHtoD", 12000, PER_THREAD_DEFAULT_STREAM), lookup("cuMemcpyHtoD_v2_ptds"));
        assert_eq!(at("cuStreamSynchronize", 12000, PER_THREAD_DEFAULT_STREAM), lookup("cuStreamSynchronize_ptsz"));
        assert_eq!(at("cuInit", 2000, 0), lookup("cuInit"));
        assert_eq!(resolve("cuDeviceGetUuid", 9000, 0), Err(VERSION_NOT_SUFFICIENT));
        assert_eq!(resolve("cuNoSuchThing", 12000, 0), Err(SYMBOL_NOT_FOUND));
        // Unimplemented but exported: found (and it answers NOT_SUPPORTED).
        assert!(at("cuGraphCreate", 12000, 0).is_some());
    }
}
