//! Names and descriptions of result codes (no `cuInit` needed).

use std::ffi::c_char;

use crate::ffi::{guard, out};
use crate::types::*;

unsafe fn text(
    name: &'static str,
    code: CUresult,
    s: *mut *const c_char,
    pick: fn((&'static str, &'static str)) -> &'static str,
) -> CUresult {
    guard(name, || {
        let s = out(s)?;
        match result_text(code) {
            Some(t) => {
                *s = pick(t).as_ptr().cast();
                Ok(())
            }
            None => {
                *s = std::ptr::null();
                Err(CUDA_ERROR_INVALID_VALUE)
            }
        }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuGetErrorName(code: CUresult, s: *mut *const c_char) -> CUresult {
    text("cuGetErrorName", code, s, |(n, _)| n)
}

#[no_mangle]
pub unsafe extern "C" fn cuGetErrorString(code: CUresult, s: *mut *const c_char) -> CUresult {
    text("cuGetErrorString", code, s, |(_, t)| t)
}
