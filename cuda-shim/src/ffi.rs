//! The C boundary: every export runs its body through [`guard`], which stops panics from
//! unwinding into C and traces the call when `FAKEGPU_LOG=debug`. The helpers turn caller
//! pointers into references only after checking them.
//!
//! A panic inside an export is a bug of ours: the hook of `fakegpu_model::boundary` keeps
//! Rust's message and backtrace off the host's stderr, and the boundary prints one line.
//! The boundary also counts the calls in flight, so that the unload destructor frees nothing
//! while another thread is inside (a process exiting while it uses CUDA); CUDA calls are not
//! nanosecond getters, so two uncontended atomic operations per call cost nothing measurable.

use std::ffi::{c_char, c_int, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::types::{result_text, CUresult, CUDA_ERROR_DEINITIALIZED, CUDA_ERROR_INVALID_VALUE, CUDA_ERROR_UNKNOWN, CUDA_SUCCESS};

/// Calls inside the boundary now.
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
/// Set by the unload destructor: calls from then on answer DEINITIALIZED without entering.
static UNLOADING: AtomicBool = AtomicBool::new(false);

/// Closes the boundary and says whether no call is inside it. Both sides use SeqCst (a
/// Dekker pair): either a call entering sees `UNLOADING`, or this sees its count.
pub(crate) fn quiesce() -> bool {
    UNLOADING.store(true, Ordering::SeqCst);
    IN_FLIGHT.load(Ordering::SeqCst) == 0
}

struct Inside;
impl Drop for Inside {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::Release);
    }
}

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
    IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
    let inside = Inside;
    if UNLOADING.load(Ordering::SeqCst) {
        return CUDA_ERROR_DEINITIALIZED;
    }
    fakegpu_model::boundary::install_quiet_panic_hook();
    let code = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => CUDA_SUCCESS,
        Ok(Err(code)) => code,
        Err(payload) => {
            let what = fakegpu_model::boundary::panic_text(&*payload);
            eprintln!("[fakegpu-cuda] internal error in {name} ({what}); returning CUDA_ERROR_UNKNOWN");
            CUDA_ERROR_UNKNOWN
        }
    };
    drop(inside);
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
