//! Memory: what is free, device allocations, page-locked host memory and plain copies.
//! The 32-bit `_v1` forms (`cuMemAlloc`, `cuMemGetInfo`, …) stay NOT_SUPPORTED stubs.

use std::ffi::{c_uint, c_void};

use crate::context;
use crate::ffi::{guard, out};
use crate::memory::{self, Copy};
use crate::types::*;

/// NVML's free and total for the current context's GPU (every process's allocations count).
#[no_mangle]
pub unsafe extern "C" fn cuMemGetInfo_v2(free: *mut usize, total: *mut usize) -> CUresult {
    guard("cuMemGetInfo_v2", || {
        let (free, total) = (out(free)?, out(total)?);
        let rt = crate::runtime::runtime()?;
        let c = context::current()?;
        let m = rt.devices[c.ordinal].memory(&rt.spec, memory::used_on_node(c.ordinal)?);
        *free = m.free as usize;
        *total = m.total as usize;
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuMemAlloc_v2(dptr: *mut CUdeviceptr, bytes: usize) -> CUresult {
    guard("cuMemAlloc_v2", || {
        let out = out(dptr)?;
        crate::runtime::runtime()?;
        let c = context::current()?;
        *out = memory::alloc(c.ordinal, bytes)?;
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuMemFree_v2(dptr: CUdeviceptr) -> CUresult {
    guard("cuMemFree_v2", || {
        crate::runtime::runtime()?;
        context::current()?;
        memory::free(dptr)
    })
}

unsafe fn host_alloc(name: &'static str, pp: *mut *mut c_void, bytes: usize) -> CUresult {
    guard(name, || {
        let out = out(pp)?;
        crate::runtime::runtime()?;
        let c = context::current()?;
        *out = memory::host_alloc(c.ordinal, bytes)?;
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuMemHostAlloc(pp: *mut *mut c_void, bytes: usize, flags: c_uint) -> CUresult {
    if flags & !0x0F != 0 {
        return guard("cuMemHostAlloc", || Err(CUDA_ERROR_INVALID_VALUE));
    }
    host_alloc("cuMemHostAlloc", pp, bytes)
}

#[no_mangle]
pub unsafe extern "C" fn cuMemAllocHost_v2(pp: *mut *mut c_void, bytes: usize) -> CUresult {
    host_alloc("cuMemAllocHost_v2", pp, bytes)
}

#[no_mangle]
pub unsafe extern "C" fn cuMemFreeHost(p: *mut c_void) -> CUresult {
    guard("cuMemFreeHost", || {
        crate::runtime::runtime()?;
        memory::host_free(p)
    })
}

unsafe fn copy(name: &'static str, kind: Copy, dst: usize, src: usize, bytes: usize) -> CUresult {
    guard(name, || {
        crate::runtime::runtime()?;
        context::current()?;
        memory::copy(kind, dst, src, bytes)
    })
}

/// extern "C" fn cuMemcpyHtoD_v2, cuMemcpyHtoD_v2_ptds, cuMemcpyDtoH_v2, cuMemcpyDtoH_v2_ptds, cuMemcpyDtoD_v2, cuMemcpyDtoD_v2_ptds
macro_rules! copies {
    ($($name:ident: $kind:ident, $dst:ty, $src:ty;)*) => {$(
        #[no_mangle]
        pub unsafe extern "C" fn $name(dst: $dst, src: $src, bytes: usize) -> CUresult {
            copy(stringify!($name), Copy::$kind, dst as usize, src as usize, bytes)
        }
    )*};
}

copies! {
    cuMemcpyHtoD_v2: HostToDevice, CUdeviceptr, *const c_void;
    cuMemcpyHtoD_v2_ptds: HostToDevice, CUdeviceptr, *const c_void;
    cuMemcpyDtoH_v2: DeviceToHost, *mut c_void, CUdeviceptr;
    cuMemcpyDtoH_v2_ptds: DeviceToHost, *mut c_void, CUdeviceptr;
    cuMemcpyDtoD_v2: DeviceToDevice, CUdeviceptr, CUdeviceptr;
    cuMemcpyDtoD_v2_ptds: DeviceToDevice, CUdeviceptr, CUdeviceptr;
}
