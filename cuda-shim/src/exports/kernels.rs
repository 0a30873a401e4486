//! Code loading and kernel launch: nothing executes on a simulated GPU. These answer
//! CUDA_ERROR_NOT_SUPPORTED and say why on stderr once per process.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::ffi::guard;
use crate::types::*;

static SAID: AtomicBool = AtomicBool::new(false);

fn refuse(name: &'static str) -> CUresult {
    guard(name, || {
        if !SAID.swap(true, Ordering::Relaxed) {
            eprintln!("fakegpu: {name}: kernels do not run on simulated GPUs (CUDA_ERROR_NOT_SUPPORTED)");
        }
        Err(CUDA_ERROR_NOT_SUPPORTED)
    })
}

/// extern "C" fn cuModuleLoad, cuModuleLoadData, cuModuleLoadDataEx, cuModuleLoadFatBinary, cuLibraryLoadData, cuLibraryLoadFromFile, cuLinkCreate, cuLinkCreate_v2, cuLaunch, cuLaunchGrid, cuLaunchGridAsync, cuLaunchKernel, cuLaunchKernel_ptsz, cuLaunchKernelEx, cuLaunchKernelEx_ptsz, cuLaunchCooperativeKernel, cuLaunchCooperativeKernel_ptsz, cuLaunchCooperativeKernelMultiDevice
macro_rules! refusals {
    ($($name:ident),*) => {$(
        #[no_mangle]
        pub extern "C" fn $name() -> CUresult {
            refuse(stringify!($name))
        }
    )*};
}

refusals!(
    cuModuleLoad,
    cuModuleLoadData,
    cuModuleLoadDataEx,
    cuModuleLoadFatBinary,
    cuLibraryLoadData,
    cuLibraryLoadFromFile,
    cuLinkCreate,
    cuLinkCreate_v2,
    cuLaunch,
    cuLaunchGrid,
    cuLaunchGridAsync,
    cuLaunchKernel,
    cuLaunchKernel_ptsz,
    cuLaunchKernelEx,
    cuLaunchKernelEx_ptsz,
    cuLaunchCooperativeKernel,
    cuLaunchCooperativeKernel_ptsz,
    cuLaunchCooperativeKernelMultiDevice
);
