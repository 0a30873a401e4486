//! The C boundary: every export runs its body through [`guard`], which stops panics from
//! unwinding into C and traces the call when `FAKEGPU_LOG=debug`. The helpers turn caller
//! pointers into references only after checking them.

use std::ffi::{c_char, c_int, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::types::{result_text, CUresult, CUDA_ERROR_INVALID_VALUE, CUDA_ERROR_UNKNOWN, CUDA_SUCCESS};

/// What an export body returns: `Err` carries the CUDA result code.
pub(crate) type CuResult<T = ()> = Result<T, CUresult>;

/// Writes one trace line to stderr when tracing is on (the host owns its logging).
pub(crate) fn trace(name: &str, code: CUresult) {
    if fakegpu_model::log::debug_enabled() {
        let text = result_text(code).map_or("?", |(n, _)| n.trim_end_matches('\0'));
        eprintln!("[fakegpu-cuda] {name} -> {code} ({text})");
    }
}

/// Runs an export body, converting its result (or a panic) into a CUDA result code.
#[inline]
pub(crate) fn guard(name: &'static str, body: impl FnOnce() -> CuResult) -> CUresult {
    let code = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => CUDA_SUCCESS,
        Ok(Err(code)) => code,
        Err(_) => {
            eprintln!("[fakegpu-cuda] internal error in {name}; returning CUDA_ERROR_UNKNOWN");
            CUDA_ERROR_UNKNOWN
        }
    };
    trace(name, code);
    code
}

/// A caller's out-pointer as a reference; NULL is INVALID_VALUE.
#[inline]
pub(crate) unsafe fn out<'a, T>(ptr: *mut T) -> CuResult<&'a mut T> {
    ptr.as_mut().ok_or(CUDA_ERROR_INVALID_VALUE)
}

/// Writes `value` through `ptr`.
#[inline]
pub(crate) unsafe fn put<T>(ptr: *mut T, value: T) -> CuResult {
    *out(ptr)? = value;
    Ok(())
}

/// Reads a caller's C string argument; NULL or non-UTF-8 is INVALID_VALUE.
pub(crate) unsafe fn arg_str<'a>(ptr: *const c_char) -> CuResult<&'a str> {
    if ptr.is_null() {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    CStr::from_ptr(ptr).to_str().map_err(|_| CUDA_ERROR_INVALID_VALUE)
}

/// Copies `text` into a caller buffer of `len` bytes, truncated to fit and NUL-terminated
/// (CUDA's rule for names); NULL or a non-positive length is INVALID_VALUE.
pub(crate) unsafe fn put_str(buf: *mut c_char, len: c_int, text: &str) -> CuResult {
    if buf.is_null() || len <= 0 {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    let n = text.len().min(len as usize - 1);
    std::ptr::copy_nonoverlapping(text.as_ptr().cast::<c_char>(), buf, n);
    *buf.add(n) = 0;
    Ok(())
}
