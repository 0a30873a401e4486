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
            // A node that does not resolve (cuInit reports why) still has a version: the
            // default profile's, as a node without any configuration would have.
            Err(_) => fakegpu_model::config::resolve_for_library(cuInit as extern "C" fn(c_uint) -> CUresult as usize)
                .map(|s| s.cuda_driver_version)
                .or_else(|_| fakegpu_model::find_builtin(fakegpu_model::config::DEFAULT_PROFILE).map(|p| p.cuda_driver_version))
                .map(fakegpu_model::cuda::driver_version)
                .unwrap_or(0),
        };
        put(version, v)
    })
}
