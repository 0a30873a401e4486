//! Initialization and the driver version.

use std::ffi::{c_int, c_uint};

use crate::ffi::{guard, put};
use crate::types::*;

#[no_mangle]
pub extern "C" fn cuInit(flags: c_uint) -> CUresult {
    guard("cuInit", || crate::runtime::init(flags))
}

/// Answers before `cuInit` too (as the driver does): the version of the node's profile.
#[no_mangle]
pub unsafe extern "C" fn cuDriverGetVersion(version: *mut c_int) -> CUresult {
    guard("cuDriverGetVersion", || {
        let v = match crate::runtime::runtime() {
            Ok(rt) => rt.driver_version,
            Err(_) => fakegpu_model::config::resolve_for_process()
                .map(|s| fakegpu_model::cuda::driver_version(s.cuda_driver_version))
                .unwrap_or(fakegpu_model::cuda::driver_version(fakegpu_model::config::DEFAULT_CUDA_DRIVER_VERSION)),
        };
        put(version, v)
    })
}
