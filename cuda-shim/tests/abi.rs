//! ABI discipline of the fake CUDA driver, called through the rlib exactly as C calls the
//! cdylib: calls before `cuInit`, NULL out-pointers, invalid devices and handles, `fork()`
//! after init, 16 threads at once, no thread started, and every exported name reachable
//! through `cuGetProcAddress`.
//!
//! The library loads its node once per process, so each case runs in a fresh child process
//! (this test binary, re-run on one test with `CUDA_ABI_CASE` set).

use std::ffi::{c_char, c_int, c_uint, c_void, CString};
use std::process::Command;
use std::ptr::{null, null_mut};

use cuda::exports::context::*;
use cuda::exports::device::*;
use cuda::exports::errors::*;
use cuda::exports::init::*;
use cuda::exports::memory::*;
use cuda::exports::proc_address::*;
use cuda::exports::stream::*;
use cuda::types::*;

const GPUS: c_int = 4;

/// Runs `body` in a child process with a fixed 4-GPU H100 node and no live state.
fn case(name: &str, body: impl FnOnce()) {
    case_of("h100", name, body)
}

/// [`case`] with a node of another profile.
fn case_of(profile: &str, name: &str, body: impl FnOnce()) {
    if std::env::var("CUDA_ABI_CASE").as_deref() == Ok(name) {
        body();
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env("CUDA_ABI_CASE", name)
        .env("FAKEGPU_PROFILE", profile)
        .env("FAKEGPU_GPUS", GPUS.to_string())
        .env("FAKEGPU_NODE", "abi-node")
        .env_remove("FAKEGPU_STATE")
        .env_remove("FAKEGPU_CONFIG")
        .env_remove("NVIDIA_VISIBLE_DEVICES")
        .env_remove("CUDA_VISIBLE_DEVICES")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("1 passed"), "{name} failed in its child:\n{text}");
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// Every per-device getter, with valid out-pointers, on device `dev`.
unsafe fn device_calls(dev: CUdevice) -> Vec<(&'static str, CUresult)> {
    let mut i = 0;
    let mut sz = 0usize;
    let mut name = [0 as c_char; 64];
    let mut u = CUuuid { bytes: [0; 16] };
    let mut ctx = null_mut();
    let (mut flags, mut active) = (0u32, 0);
    vec![
        ("cuDeviceGetName", cuDeviceGetName(name.as_mut_ptr(), 64, dev)),
        ("cuDeviceGetUuid", cuDeviceGetUuid(&mut u, dev)),
        ("cuDeviceGetUuid_v2", cuDeviceGetUuid_v2(&mut u, dev)),
        ("cuDeviceTotalMem_v2", cuDeviceTotalMem_v2(&mut sz, dev)),
        ("cuDeviceGetAttribute", cuDeviceGetAttribute(&mut i, 16, dev)),
        ("cuDeviceComputeCapability", cuDeviceComputeCapability(&mut i, &mut i as *mut c_int, dev)),
        ("cuDeviceGetPCIBusId", cuDeviceGetPCIBusId(name.as_mut_ptr(), 64, dev)),
        ("cuDevicePrimaryCtxGetState", cuDevicePrimaryCtxGetState(dev, &mut flags, &mut active)),
        ("cuDevicePrimaryCtxSetFlags_v2", cuDevicePrimaryCtxSetFlags_v2(dev, 0)),
        ("cuDevicePrimaryCtxRetain", cuDevicePrimaryCtxRetain(&mut ctx, dev)),
    ]
}

#[test]
fn calls_before_init_are_not_initialized() {
    case("calls_before_init_are_not_initialized", || unsafe {
        let mut n = -1;
        assert_eq!(cuDeviceGetCount(&mut n), CUDA_ERROR_NOT_INITIALIZED);
        for (name, code) in device_calls(0) {
            assert_eq!(code, CUDA_ERROR_NOT_INITIALIZED, "{name}");
        }
        let mut ctx = null_mut();
        assert_eq!(cuCtxGetCurrent(&mut ctx), CUDA_ERROR_NOT_INITIALIZED);
        assert_eq!(cuCtxCreate_v2(&mut ctx, 0, 0), CUDA_ERROR_NOT_INITIALIZED);
        let mut p = 0u64;
        assert_eq!(cuMemAlloc_v2(&mut p, 16), CUDA_ERROR_NOT_INITIALIZED);
        // What needs no driver state answers anyway.
        assert_eq!(cuDriverGetVersion(&mut n), CUDA_SUCCESS);
        assert_eq!(n, 12020);
        let mut s: *const c_char = null();
        assert_eq!(cuGetErrorName(CUDA_ERROR_NOT_INITIALIZED, &mut s), CUDA_SUCCESS);
        assert_eq!(std::ffi::CStr::from_ptr(s).to_str().unwrap(), "CUDA_ERROR_NOT_INITIALIZED");
    });
}

/// `cuDriverGetVersion` is the node's profile's CUDA version, before and after `cuInit`: a
/// B200 node (driver 580) says CUDA 13.0, not the 12.2 of the 535 driver.
#[test]
fn driver_version_is_the_profiles() {
    case_of("b200", "driver_version_is_the_profiles", || unsafe {
        let want = fakegpu_model::find_builtin("b200").unwrap().cuda_driver_version as c_int;
        assert_eq!(want, 13000);
        let mut n = -1;
        assert_eq!(cuDriverGetVersion(&mut n), CUDA_SUCCESS);
        assert_eq!(n, want);
        assert_eq!(cuInit(0), CUDA_SUCCESS);
        n = -1;
        assert_eq!(cuDriverGetVersion(&mut n), CUDA_SUCCESS);
        assert_eq!(n, want);
    });
}

#[test]
fn null_out_pointers_are_invalid_value() {
    case("null_out_pointers_are_invalid_value", || unsafe {
        assert_eq!(cuInit(0), CUDA_SUCCESS);
        assert_eq!(cuDeviceGetCount(null_mut()), CUDA_ERROR_INVALID_VALUE);
        assert_eq!(cuDeviceGet(null_mut(), 0), CUDA_ERROR_INVALID_VALUE);
        assert_eq!(cuDeviceGetName(null_mut(), 64, 0), CUDA_ERROR_INVALID_VALUE);
        assert_eq!(cuDeviceGetUuid(null_mut(), 0), CUDA_ERROR_INVALID_VALUE);
        assert_eq!(cuDeviceGetUuid_v2(null_mut(), 0), CUDA_ERROR_INVALID_VALUE);
        assert_eq!(cuDeviceTotalMem_v2(null_mut(), 0), CUDA_ERROR_INVALID_VALUE);
        assert_eq!(cuDeviceGetAttribute(null_mut(), 1, 0), CUDA_ERROR_INVALID_VALUE);
        assert_eq!(cuDeviceGetPCIBusId(null_mut(), 64, 0), CUDA_ERROR_INVALID_VALUE);
        assert_eq!(cuDeviceGetByPCIBusId(null_mut(), c"0000:53:00.0".as_ptr()), CUDA_ERROR_INVALID_VALUE);
        assert_eq!(cuDevicePrimaryCtxRetain(null_mut(), 0), CUDA_ERROR_INVALID_VALUE);
        assert_eq!(cuDevicePrimaryCtxGetState(0, null_mut(), null_mut()), CUDA_ERROR_INVALID_VALUE);
        assert_eq!(cuCtxCreate_v2(null_mut(), 0, 0), CUDA_ERROR_INVALID_VALUE);
        assert_eq!(cuCtxGetCurrent(null_mut()), CUDA_ERROR_INVALID_VALUE);
        assert_eq!(cuDriverGetVersion(null_mut()), CUDA_ERROR_INVALID_VALUE);
        assert_eq!(cuGetErrorString(0, null_mut()), CUDA_ERROR_INVALID_VALUE);
        assert_eq!(cuGetProcAddress_v2(null(), &mut null_mut(), 12000, 0, null_mut()), CUDA_ERROR_INVALID_VALUE);
        assert_eq!(cuGetProcAddress_v2(c"cuInit".as_ptr(), null_mut(), 12000, 0, null_mut()), CUDA_ERROR_INVALID_VALUE);
        let mut ctx = null_mut();
        assert_eq!(cuCtxCreate_v2(&mut ctx, 0, 0), CUDA_SUCCESS);
        assert_eq!(cuCtxGetDevice(null_mut()), CUDA_ERROR_INVALID_VALUE);
        assert_eq!(cuMemAlloc_v2(null_mut(), 16), CUDA_ERROR_INVALID_VALUE);
        assert_eq!(cuMemGetInfo_v2(null_mut(), null_mut()), CUDA_ERROR_INVALID_VALUE);
        assert_eq!(cuMemHostAlloc(null_mut(), 16, 0), CUDA_ERROR_INVALID_VALUE);
        assert_eq!(cuStreamCreate(null_mut(), 0), CUDA_ERROR_INVALID_VALUE);
        assert_eq!(cuEventCreate(null_mut(), 0), CUDA_ERROR_INVALID_VALUE);
        assert_eq!(cuEventElapsedTime(null_mut(), null_mut(), null_mut()), CUDA_ERROR_INVALID_VALUE);
        assert_eq!(cuMemcpyHtoD_v2(0, null(), 16), CUDA_ERROR_INVALID_VALUE);
        assert_eq!(cuMemFree_v2(0), CUDA_ERROR_INVALID_VALUE);
        assert_eq!(cuMemFreeHost(null_mut()), CUDA_ERROR_INVALID_VALUE);
        assert_eq!(cuCtxDestroy_v2(ctx), CUDA_SUCCESS);
    });
}

#[test]
fn invalid_devices_and_handles_are_refused() {
    case("invalid_devices_and_handles_are_refused", || unsafe {
        assert_eq!(cuInit(0), CUDA_SUCCESS);
        for dev in [-1, GPUS, c_int::MAX, c_int::MIN] {
            for (name, code) in device_calls(dev) {
                assert_eq!(code, CUDA_ERROR_INVALID_DEVICE, "{name}({dev})");
            }
            let mut d = 0;
            assert_eq!(cuDeviceGet(&mut d, dev), CUDA_ERROR_INVALID_DEVICE);
        }
        let mut v = 0;
        for attr in [0, -1, 133, c_int::MAX] {
            assert_eq!(cuDeviceGetAttribute(&mut v, attr, 0), CUDA_ERROR_INVALID_VALUE, "attribute {attr}");
        }
        let foreign = &mut v as *mut c_int as *mut c_void;
        assert_eq!(cuCtxSetCurrent(foreign), CUDA_ERROR_INVALID_CONTEXT);
        assert_eq!(cuCtxDestroy_v2(foreign), CUDA_ERROR_INVALID_CONTEXT);
        assert_eq!(cuCtxPushCurrent_v2(foreign), CUDA_ERROR_INVALID_CONTEXT);
        assert_eq!(cuDevicePrimaryCtxRelease_v2(0), CUDA_ERROR_INVALID_CONTEXT);
        let mut ctx = null_mut();
        assert_eq!(cuDevicePrimaryCtxRetain(&mut ctx, 1), CUDA_SUCCESS);
        assert_eq!(cuCtxPushCurrent_v2(ctx), CUDA_SUCCESS);
        assert_eq!(cuStreamSynchronize(foreign), CUDA_ERROR_INVALID_HANDLE);
        assert_eq!(cuEventSynchronize(foreign), CUDA_ERROR_INVALID_HANDLE);
        assert_eq!(cuMemFree_v2(foreign as u64), CUDA_ERROR_INVALID_VALUE);
        let mut d = -1;
        assert_eq!(cuCtxGetDevice(&mut d), CUDA_SUCCESS);
        assert_eq!(d, 1);
        assert_eq!(cuDevicePrimaryCtxRelease_v2(1), CUDA_SUCCESS);
        // Released: the handle is dead, never dereferenced.
        assert_eq!(cuCtxGetDevice(&mut d), CUDA_ERROR_INVALID_CONTEXT);
        assert_eq!(cuCtxSetCurrent(ctx), CUDA_ERROR_CONTEXT_IS_DESTROYED);
        // Unknown result codes have no name.
        let mut s: *const c_char = null();
        assert_eq!(cuGetErrorName(4242, &mut s), CUDA_ERROR_INVALID_VALUE);
        assert!(s.is_null());
    });
}

#[test]
fn fork_after_init_leaves_the_child_uninitialized() {
    case("fork_after_init_leaves_the_child_uninitialized", || unsafe {
        assert_eq!(cuInit(0), CUDA_SUCCESS);
        let pid = libc::fork();
        if pid == 0 {
            let mut n = 0;
            let ok = cuInit(0) == CUDA_ERROR_NOT_INITIALIZED && cuDeviceGetCount(&mut n) == CUDA_ERROR_NOT_INITIALIZED;
            libc::_exit(if ok { 0 } else { 1 });
        }
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "child status {status}");
        let mut n = 0;
        assert_eq!(cuDeviceGetCount(&mut n), CUDA_SUCCESS);
        assert_eq!(n, GPUS);
    });
}

#[test]
fn fork_before_init_lets_the_child_initialize() {
    case("fork_before_init_lets_the_child_initialize", || unsafe {
        let pid = libc::fork();
        if pid == 0 {
            let mut n = 0;
            let ok = cuInit(0) == CUDA_SUCCESS && cuDeviceGetCount(&mut n) == CUDA_SUCCESS && n == GPUS;
            libc::_exit(if ok { 0 } else { 1 });
        }
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "child status {status}");
    });
}

#[test]
fn sixteen_threads_and_no_thread_of_our_own() {
    case("sixteen_threads_and_no_thread_of_our_own", || unsafe {
        let before = threads();
        assert_eq!(cuInit(0), CUDA_SUCCESS);
        assert_eq!(threads(), before, "cuInit started a thread");
        let workers: Vec<_> = (0..16)
            .map(|t| {
                std::thread::spawn(move || {
                    let dev = t % GPUS;
                    let mut ctx = null_mut();
                    assert_eq!(cuCtxCreate_v2(&mut ctx, 0, dev), CUDA_SUCCESS);
                    for i in 0..2000 {
                        let mut v = 0;
                        assert_eq!(cuDeviceGetAttribute(&mut v, 1 + i % 132, dev), CUDA_SUCCESS);
                        let mut p = 0u64;
                        if i % 100 == 0 {
                            assert_eq!(cuMemAlloc_v2(&mut p, 4096), CUDA_SUCCESS);
                            let data = [t as u8; 4096];
                            let mut back = [0u8; 4096];
                            assert_eq!(cuMemcpyHtoD_v2(p, data.as_ptr().cast(), 4096), CUDA_SUCCESS);
                            assert_eq!(cuMemcpyDtoH_v2(back.as_mut_ptr().cast(), p, 4096), CUDA_SUCCESS);
                            assert_eq!(data, back);
                            assert_eq!(cuMemFree_v2(p), CUDA_SUCCESS);
                        }
                    }
                    let mut d = -1;
                    assert_eq!(cuCtxGetDevice(&mut d), CUDA_SUCCESS);
                    assert_eq!(d, dev);
                    assert_eq!(cuCtxDestroy_v2(ctx), CUDA_SUCCESS);
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
    });
}

#[test]
fn every_exported_name_resolves_through_get_proc_address() {
    case("every_exported_name_resolves_through_get_proc_address", || unsafe {
        let names = include_str!("../exports-535.txt");
        for name in names.split_whitespace() {
            // Per-thread and versioned variants are reached through their base names.
            if name.ends_with("_ptds") || name.ends_with("_ptsz") || name.rsplit_once("_v").is_some_and(|(_, n)| n.parse::<u32>().is_ok()) {
                continue;
            }
            let c = CString::new(name).unwrap();
            let (mut pfn, mut status) = (null_mut(), -1);
            assert_eq!(cuGetProcAddress_v2(c.as_ptr(), &mut pfn, 12020, 0, &mut status), CUDA_SUCCESS, "{name}");
            assert!(!pfn.is_null() && status == 0, "{name}");
        }
        // Not found: NOT_FOUND with status SYMBOL_NOT_FOUND and a NULL pointer.
        let (mut pfn, mut status) = (std::ptr::dangling_mut::<c_void>(), -1);
        assert_eq!(cuGetProcAddress_v2(c"cuNotAFunction".as_ptr(), &mut pfn, 12020, 0, &mut status), CUDA_ERROR_NOT_FOUND);
        assert!(pfn.is_null() && status == 1);
        // A stub found this way answers NOT_SUPPORTED.
        assert_eq!(cuGetProcAddress_v2(c"cuGraphCreate".as_ptr(), &mut pfn, 12020, 0, &mut status), CUDA_SUCCESS);
        let stub: extern "C" fn() -> CUresult = std::mem::transmute(pfn);
        assert_eq!(stub(), CUDA_ERROR_NOT_SUPPORTED);
        let _ = c_uint::default();
    });
}
