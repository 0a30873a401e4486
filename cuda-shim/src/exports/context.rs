//! Primary contexts, created contexts and the current context of a thread.

use std::ffi::{c_int, c_uint, c_void};
use std::sync::atomic::Ordering;

use crate::context::{self as ctx, handle};
use crate::ffi::{guard, out, put};
use crate::runtime::device;
use crate::types::*;

/// The flags `cuCtxCreate` and `cuDevicePrimaryCtxSetFlags` accept (scheduling, map-host,
/// keep-local-memory, coredump flags).
const CTX_FLAGS_MASK: c_uint = 0x07 | 0x08 | 0x10 | 0x20;

#[no_mangle]
pub unsafe extern "C" fn cuDevicePrimaryCtxRetain(pctx: *mut CUcontext, dev: CUdevice) -> CUresult {
    guard("cuDevicePrimaryCtxRetain", || {
        let out = out(pctx)?;
        let d = device(dev)?;
        *out = handle(ctx::retain_primary(d.ordinal)?);
        Ok(())
    })
}

unsafe fn release(name: &'static str, dev: CUdevice) -> CUresult {
    guard(name, || ctx::release_primary(device(dev)?.ordinal))
}

#[no_mangle]
pub unsafe extern "C" fn cuDevicePrimaryCtxRelease(dev: CUdevice) -> CUresult {
    release("cuDevicePrimaryCtxRelease", dev)
}

#[no_mangle]
pub unsafe extern "C" fn cuDevicePrimaryCtxRelease_v2(dev: CUdevice) -> CUresult {
    release("cuDevicePrimaryCtxRelease_v2", dev)
}

unsafe fn reset(name: &'static str, dev: CUdevice) -> CUresult {
    guard(name, || ctx::reset_primary(device(dev)?.ordinal))
}

#[no_mangle]
pub unsafe extern "C" fn cuDevicePrimaryCtxReset(dev: CUdevice) -> CUresult {
    reset("cuDevicePrimaryCtxReset", dev)
}

#[no_mangle]
pub unsafe extern "C" fn cuDevicePrimaryCtxReset_v2(dev: CUdevice) -> CUresult {
    reset("cuDevicePrimaryCtxReset_v2", dev)
}

#[no_mangle]
pub unsafe extern "C" fn cuDevicePrimaryCtxGetState(dev: CUdevice, flags: *mut c_uint, active: *mut c_int) -> CUresult {
    guard("cuDevicePrimaryCtxGetState", || {
        let (flags, active) = (out(flags)?, out(active)?);
        let p = ctx::primary(device(dev)?.ordinal)?;
        *flags = p.flags.load(Ordering::Relaxed);
        *active = c_int::from(p.refs.load(Ordering::Acquire) > 0);
        Ok(())
    })
}

unsafe fn set_flags(name: &'static str, dev: CUdevice, flags: c_uint) -> CUresult {
    guard(name, || {
        if flags & !CTX_FLAGS_MASK != 0 {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        ctx::primary(device(dev)?.ordinal)?.flags.store(flags, Ordering::Relaxed);
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuDevicePrimaryCtxSetFlags(dev: CUdevice, flags: c_uint) -> CUresult {
    set_flags("cuDevicePrimaryCtxSetFlags", dev, flags)
}

#[no_mangle]
pub unsafe extern "C" fn cuDevicePrimaryCtxSetFlags_v2(dev: CUdevice, flags: c_uint) -> CUresult {
    set_flags("cuDevicePrimaryCtxSetFlags_v2", dev, flags)
}

unsafe fn create(name: &'static str, pctx: *mut CUcontext, flags: c_uint, dev: CUdevice) -> CUresult {
    guard(name, || {
        let out = out(pctx)?;
        if flags & !CTX_FLAGS_MASK != 0 {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        *out = handle(ctx::create(device(dev)?.ordinal, flags)?);
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuCtxCreate(pctx: *mut CUcontext, flags: c_uint, dev: CUdevice) -> CUresult {
    create("cuCtxCreate", pctx, flags, dev)
}

#[no_mangle]
pub unsafe extern "C" fn cuCtxCreate_v2(pctx: *mut CUcontext, flags: c_uint, dev: CUdevice) -> CUresult {
    create("cuCtxCreate_v2", pctx, flags, dev)
}

/// With execution-affinity parameters: none is supported, so only an empty list is accepted.
#[no_mangle]
pub unsafe extern "C" fn cuCtxCreate_v3(pctx: *mut CUcontext, params: *mut c_void, count: c_int, flags: c_uint, dev: CUdevice) -> CUresult {
    if count > 0 || (count < 0 && !params.is_null()) {
        return guard("cuCtxCreate_v3", || Err(if count < 0 { CUDA_ERROR_INVALID_VALUE } else { CUDA_ERROR_UNSUPPORTED_EXEC_AFFINITY }));
    }
    create("cuCtxCreate_v3", pctx, flags, dev)
}

#[no_mangle]
pub unsafe extern "C" fn cuCtxDestroy(c: CUcontext) -> CUresult {
    guard("cuCtxDestroy", || ctx::destroy(c))
}

#[no_mangle]
pub unsafe extern "C" fn cuCtxDestroy_v2(c: CUcontext) -> CUresult {
    guard("cuCtxDestroy_v2", || ctx::destroy(c))
}

#[no_mangle]
pub unsafe extern "C" fn cuCtxGetCurrent(pctx: *mut CUcontext) -> CUresult {
    guard("cuCtxGetCurrent", || {
        let out = out(pctx)?;
        crate::runtime::runtime()?;
        *out = ctx::current_handle();
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuCtxSetCurrent(c: CUcontext) -> CUresult {
    guard("cuCtxSetCurrent", || {
        crate::runtime::runtime()?;
        ctx::set_current(c)
    })
}

unsafe fn push(name: &'static str, c: CUcontext) -> CUresult {
    guard(name, || {
        crate::runtime::runtime()?;
        ctx::push(ctx::context(c)?)
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuCtxPushCurrent(c: CUcontext) -> CUresult {
    push("cuCtxPushCurrent", c)
}

#[no_mangle]
pub unsafe extern "C" fn cuCtxPushCurrent_v2(c: CUcontext) -> CUresult {
    push("cuCtxPushCurrent_v2", c)
}

unsafe fn pop(name: &'static str, pctx: *mut CUcontext) -> CUresult {
    guard(name, || {
        crate::runtime::runtime()?;
        let popped = ctx::pop()?;
        if !pctx.is_null() {
            *pctx = popped;
        }
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuCtxPopCurrent(pctx: *mut CUcontext) -> CUresult {
    pop("cuCtxPopCurrent", pctx)
}

#[no_mangle]
pub unsafe extern "C" fn cuCtxPopCurrent_v2(pctx: *mut CUcontext) -> CUresult {
    pop("cuCtxPopCurrent_v2", pctx)
}

/// Nothing runs on a simulated GPU, so there is never work to wait for.
#[no_mangle]
pub extern "C" fn cuCtxSynchronize() -> CUresult {
    guard("cuCtxSynchronize", || {
        crate::runtime::runtime()?;
        ctx::current().map(|_| ())
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuCtxGetDevice(dev: *mut CUdevice) -> CUresult {
    guard("cuCtxGetDevice", || {
        let out = out(dev)?;
        crate::runtime::runtime()?;
        *out = ctx::current()?.ordinal as CUdevice;
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuCtxGetFlags(flags: *mut c_uint) -> CUresult {
    guard("cuCtxGetFlags", || {
        let out = out(flags)?;
        crate::runtime::runtime()?;
        *out = ctx::current()?.flags.load(Ordering::Relaxed);
        Ok(())
    })
}

/// The context API version: 3020 for every context since CUDA 3.2.
#[no_mangle]
pub unsafe extern "C" fn cuCtxGetApiVersion(c: CUcontext, version: *mut c_uint) -> CUresult {
    guard("cuCtxGetApiVersion", || {
        crate::runtime::runtime()?;
        if c.is_null() {
            ctx::current()?;
        } else {
            ctx::context(c)?;
        }
        put(version, 3020)
    })
}
