//! `nvmlInternalGetExportTable`, the undocumented entry point NVIDIA's nvidia-smi calls
//! right after init and refuses to run without.
//!
//! nvidia-smi reads the table's first word as its size and only calls a slot that lies
//! inside it, so a table holding nothing but its own size makes it fall back to the
//! public API for everything it can.

use std::ffi::c_void;

use nvml_abi::{nvmlReturn_t, ret};

use crate::ffi::{guard, out};

/// A table whose only entry is its own size in bytes.
static SIZE_ONLY_TABLE: [u64; 1] = [8];

#[no_mangle]
pub unsafe extern "C" fn nvmlInternalGetExportTable(table: *mut *const c_void, id: *const [u8; 16]) -> nvmlReturn_t {
    guard("nvmlInternalGetExportTable", || {
        if id.is_null() {
            return Err(ret::INVALID_ARGUMENT);
        }
        *out(table)? = SIZE_ONLY_TABLE.as_ptr().cast();
        Ok(())
    })
}
