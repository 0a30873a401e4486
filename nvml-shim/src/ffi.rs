//! The C boundary: every export runs its body through [`guard`], which stops panics
//! from unwinding into C and traces the call when `FAKEGPU_LOG=debug`. The helpers
//! turn caller pointers into references only after checking them.
//!
//! A panic inside an export is a bug of ours, not the host's business: the panic hook of
//! `fakegpu_model::boundary` (silent only for panics raised in the library's own code) keeps
//! Rust's message and backtrace off the host's stderr; the boundary prints one line of its own.

use std::ffi::{c_char, c_uint, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

use nvml_abi::{nvmlReturn_t, ret};

/// What an export body returns: `Err` carries the NVML error code.
pub(crate) type NvmlResult = Result<(), nvmlReturn_t>;

/// Writes one trace line to stderr when tracing is on. A host process owns its own
/// logging, so the library does not install a subscriber of any kind.
pub(crate) fn trace(name: &str, code: nvmlReturn_t) {
    if fakegpu_model::log::debug_enabled() {
        eprintln!("[fakegpu-nvml] {name} -> {code} ({})", nvml_abi::error_string(code));
    }
}

/// Removes the hook (the library is being unloaded; its code is about to go away).
pub(crate) fn remove_panic_hook() {
    fakegpu_model::boundary::remove_panic_hook();
}

/// Runs an export body, converting its result (or a panic) into an NVML return code.
#[inline]
pub(crate) fn guard(name: &'static str, body: impl FnOnce() -> NvmlResult) -> nvmlReturn_t {
    fakegpu_model::boundary::install_quiet_panic_hook();
    let code = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => ret::SUCCESS,
        Ok(Err(code)) => code,
        Err(payload) => {
            let what = fakegpu_model::boundary::panic_text(&*payload);
            eprintln!("[fakegpu-nvml] internal error in {name} ({what}); returning NVML_ERROR_UNKNOWN");
            ret::UNKNOWN
        }
    };
    trace(name, code);
    code
}

/// A caller's out-pointer as a reference; NULL is INVALID_ARGUMENT.
#[inline]
pub(crate) unsafe fn out<'a, T>(ptr: *mut T) -> Result<&'a mut T, nvmlReturn_t> {
    ptr.as_mut().ok_or(ret::INVALID_ARGUMENT)
}

/// Writes `value` through `ptr`.
#[inline]
pub(crate) unsafe fn put<T>(ptr: *mut T, value: T) -> NvmlResult {
    *out(ptr)? = value;
    Ok(())
}

/// Copies a string with its NUL into a caller buffer of `len` bytes.
/// NULL is INVALID_ARGUMENT; a buffer too short for the whole string is INSUFFICIENT_SIZE
/// and is left untouched.
pub(crate) unsafe fn put_str(buf: *mut c_char, len: c_uint, value: &CStr) -> NvmlResult {
    if buf.is_null() {
        return Err(ret::INVALID_ARGUMENT);
    }
    let bytes = value.to_bytes_with_nul();
    if (len as usize) < bytes.len() {
        return Err(ret::INSUFFICIENT_SIZE);
    }
    std::ptr::copy_nonoverlapping(bytes.as_ptr().cast::<c_char>(), buf, bytes.len());
    Ok(())
}

/// Reads a caller's C string argument; NULL or non-UTF-8 is INVALID_ARGUMENT.
pub(crate) unsafe fn arg_str<'a>(ptr: *const c_char) -> Result<&'a str, nvmlReturn_t> {
    if ptr.is_null() {
        return Err(ret::INVALID_ARGUMENT);
    }
    CStr::from_ptr(ptr).to_str().map_err(|_| ret::INVALID_ARGUMENT)
}

/// Fills a fixed `char[N]` field with `text`, NUL-terminated and truncated to fit.
pub(crate) fn fill_chars(field: &mut [c_char], text: &str) {
    field.fill(0);
    let room = field.len().saturating_sub(1);
    for (dst, src) in field.iter_mut().zip(text.bytes().take(room)) {
        *dst = src as c_char;
    }
}

/// The two-call list protocol: `*count` holds the caller's capacity on entry and the
/// number of entries on return. A NULL array or a short capacity reports the needed count
/// with INSUFFICIENT_SIZE (SUCCESS when the list is empty).
pub(crate) unsafe fn put_list<T: Copy>(count: *mut c_uint, array: *mut T, items: &[T]) -> NvmlResult {
    let count = out(count)?;
    let needed = items.len() as c_uint;
    if items.is_empty() {
        *count = 0;
        return Ok(());
    }
    if array.is_null() || *count < needed {
        *count = needed;
        return Err(ret::INSUFFICIENT_SIZE);
    }
    std::ptr::copy_nonoverlapping(items.as_ptr(), array, items.len());
    *count = needed;
    Ok(())
}
