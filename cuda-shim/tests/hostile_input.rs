//! Hostile input (issue 18) for the fake libcuda: the rules the fake NVML keeps, shown here too.
//!
//! 1. A FIFO or `/dev/zero` as the node config, the profile (by variable or named in a config)
//!    or the live state: `cuInit` returns at once with one line naming the path.
//! 2. A state file with impossible MIG ids is refused ("corrupt state … keeping the last good
//!    state"); no Rust panic text reaches stderr, even from a panic inside an export.
//! 3. Non-UTF-8 `FAKEGPU_*` values fail `cuInit` naming the variable.
//! 4. 1,000 dlopen/dlclose cycles with a state file (context, allocation, free, destroy each
//!    time) leak no memory, descriptor or mapping.

#[path = "../../nvml-shim/tests/common/mod.rs"]
mod common;

use std::ffi::{c_int, c_void, OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Duration;

use cuda::exports::context::{cuCtxCreate_v2, cuCtxDestroy_v2};
use cuda::exports::device::{cuDeviceGet, cuDeviceGetCount};
use cuda::exports::init::cuInit;
use cuda::exports::memory::cuMemGetInfo_v2;
use cuda::types::*;

use common::{assert_no_leak, current_case, measure_cycles, mkfifo, run_with_deadline as run, scratch_dir};

/// `cuInit`, then (when it succeeded) a context and the memory calls that read the live state.
fn case_init() {
    let rc = cuInit(0);
    println!("rc={rc}");
    if rc == CUDA_SUCCESS {
        unsafe {
            let mut n: c_int = 0;
            assert_eq!(cuDeviceGetCount(&mut n), CUDA_SUCCESS);
            println!("count={n}");
            let mut dev = 0;
            assert_eq!(cuDeviceGet(&mut dev, 0), CUDA_SUCCESS);
            let mut ctx = std::ptr::null_mut();
            assert_eq!(cuCtxCreate_v2(&mut ctx, 0, dev), CUDA_SUCCESS);
            let (mut free, mut total) = (0usize, 0usize);
            assert_eq!(cuMemGetInfo_v2(&mut free, &mut total), CUDA_SUCCESS);
            println!("used={}", total - free);
            assert_eq!(cuCtxDestroy_v2(ctx), CUDA_SUCCESS);
        }
    }
}

/// Loads and unloads the cdylib `CYCLES` times; each cycle registers a context and an
/// allocation in the state file and takes them off again.
fn case_dlopen() {
    let lib = std::ffi::CString::new(std::env::var("SHIM_SO").unwrap()).unwrap();
    let cycles: usize = std::env::var("CYCLES").unwrap().parse().unwrap();
    let cycle = || unsafe {
        let handle = libc::dlopen(lib.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
        assert!(!handle.is_null(), "dlopen failed");
        let sym = |name: &[u8]| {
            let f = libc::dlsym(handle, name.as_ptr().cast());
            assert!(!f.is_null());
            f
        };
        let init: extern "C" fn(u32) -> CUresult = std::mem::transmute(sym(b"cuInit\0"));
        let get: extern "C" fn(*mut c_int, c_int) -> CUresult = std::mem::transmute(sym(b"cuDeviceGet\0"));
        let create: extern "C" fn(*mut *mut c_void, u32, c_int) -> CUresult = std::mem::transmute(sym(b"cuCtxCreate_v2\0"));
        let alloc: extern "C" fn(*mut u64, usize) -> CUresult = std::mem::transmute(sym(b"cuMemAlloc_v2\0"));
        let free: extern "C" fn(u64) -> CUresult = std::mem::transmute(sym(b"cuMemFree_v2\0"));
        let info: extern "C" fn(*mut usize, *mut usize) -> CUresult = std::mem::transmute(sym(b"cuMemGetInfo_v2\0"));
        let destroy: extern "C" fn(*mut c_void) -> CUresult = std::mem::transmute(sym(b"cuCtxDestroy_v2\0"));
        assert_eq!(init(0), CUDA_SUCCESS);
        let mut dev = 0;
        assert_eq!(get(&mut dev, 0), CUDA_SUCCESS);
        let mut ctx = std::ptr::null_mut();
        assert_eq!(create(&mut ctx, 0, dev), CUDA_SUCCESS);
        let mut p = 0u64;
        assert_eq!(alloc(&mut p, 1 << 20), CUDA_SUCCESS);
        let (mut f, mut t) = (0, 0);
        // Reads the live state (validated, through the follower).
        assert_eq!(info(&mut f, &mut t), CUDA_SUCCESS);
        assert_eq!(free(p), CUDA_SUCCESS);
        assert_eq!(destroy(ctx), CUDA_SUCCESS);
        assert_eq!(libc::dlclose(handle), 0);
    };
    measure_cycles(20, cycles, cycle);
    // dlclose really unmapped the library (so its destructor ran each cycle).
    let so = std::env::var("SHIM_SO").unwrap();
    println!("still_mapped={}", std::fs::read_to_string("/proc/self/maps").unwrap().contains(&so));
}

#[test]
fn child() {
    let Some(case) = current_case() else { return };
    match case.as_str() {
        "init" => case_init(),
        "dlopen" => case_dlopen(),
        "panic" => println!("rc={}", cuda::test_hooks::panic_inside_an_export()),
        other => panic!("unknown case {other}"),
    }
}

fn os(s: &str) -> OsString {
    OsString::from(s)
}

#[test]
fn fifo_and_dev_zero_as_any_path_return_at_once_with_one_line() {
    let dir = scratch_dir("fifo");
    let fifo = dir.join("fifo");
    mkfifo(&fifo);
    let mut failures = Vec::new();
    for special in [fifo.clone(), PathBuf::from("/dev/zero")] {
        let sp = special.to_str().unwrap();
        let config_naming_profile = dir.join(format!("node-{}.json", special.file_name().unwrap().to_str().unwrap()));
        std::fs::write(&config_naming_profile, format!(r#"{{"profile":"{sp}"}}"#)).unwrap();
        let cases: Vec<(&str, Vec<(&str, OsString)>)> = vec![
            ("FAKEGPU_CONFIG", vec![("FAKEGPU_CONFIG", os(sp))]),
            ("FAKEGPU_PROFILE", vec![("FAKEGPU_PROFILE", os(sp))]),
            ("config's profile", vec![("FAKEGPU_CONFIG", config_naming_profile.clone().into_os_string())]),
            ("FAKEGPU_STATE", vec![("FAKEGPU_STATE", os(sp))]),
        ];
        for (what, env) in cases {
            let env: Vec<(&str, &OsStr)> = env.iter().map(|(k, v)| (*k, v.as_os_str())).collect();
            let r = run("init", &env, Duration::from_secs(5));
            let lines: Vec<&str> = r.stderr.lines().collect();
            let rc = r.value("rc");
            if !r.ok || r.elapsed > Duration::from_secs(1) {
                failures.push(format!("{sp} as {what}: did not return within 1 s: {}", r.describe()));
            } else if rc.as_deref() == Some("0") || lines.len() != 1 || !lines[0].contains(sp) {
                failures.push(format!("{sp} as {what}: want a failed cuInit and one line naming the path: {}", r.describe()));
            }
        }
    }
    assert!(!dir.join("fifo.seq").exists(), "no .seq beside a FIFO");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn impossible_mig_state_is_refused_without_panic_text() {
    let dir = scratch_dir("mig-state");
    let state = dir.join("state.json");
    std::fs::write(
        &state,
        r#"{"version":1,"gpus":{"0":{"mig":{"current":true,"pending":true,"gpu_instances":[{"id":842,"profile":0,"placement":{"start":0,"size":1},"compute_instances":[]}]}}}}"#,
    )
    .unwrap();
    let env = [("FAKEGPU_PROFILE", OsStr::new("a100-40gb")), ("FAKEGPU_GPUS", OsStr::new("2")), ("FAKEGPU_STATE", state.as_os_str())];
    let r = run("init", &env, Duration::from_secs(10));
    assert!(r.ok, "{}", r.describe());
    assert_eq!(r.value("rc").as_deref(), Some("0"), "{}", r.describe());
    assert!(!r.stderr.contains("panicked") && !r.stderr.contains("internal error"), "{}", r.describe());
    // The writer (context registration) and the reader (cuMemGetInfo) each say once why the
    // file is not used, naming it; neither takes the impossible layout.
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert!(!lines.is_empty() && lines.len() <= 2, "{}", r.describe());
    for line in &lines {
        assert!(line.contains("corrupt state") && line.contains(state.to_str().unwrap()), "{}", r.describe());
    }
    assert!(r.stderr.contains("keeping the last good state"), "{}", r.describe());
    // What a context alone uses on an idle GPU: the last good state (empty), not the file's.
    let clean = dir.join("clean.json");
    std::fs::write(&clean, r#"{"version":1,"gpus":{}}"#).unwrap();
    let env = [("FAKEGPU_PROFILE", OsStr::new("a100-40gb")), ("FAKEGPU_GPUS", OsStr::new("2")), ("FAKEGPU_STATE", clean.as_os_str())];
    let idle = run("init", &env, Duration::from_secs(10));
    assert!(idle.ok && idle.stderr.is_empty(), "{}", idle.describe());
    assert_eq!(r.value("used"), idle.value("used"), "{}", r.describe());
}

#[test]
fn a_panic_inside_an_export_prints_one_line_of_ours_and_no_rust_panic_text() {
    let r = run("panic", &[], Duration::from_secs(5));
    assert!(r.ok, "{}", r.describe());
    assert_eq!(r.value("rc").as_deref(), Some(&*CUDA_ERROR_UNKNOWN.to_string()), "{}", r.describe());
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "RUST_BACKTRACE=1 and still one line: {}", r.describe());
    assert!(lines[0].starts_with("[fakegpu-cuda] internal error in panic_inside_an_export (index out of bounds"), "{}", r.describe());
    assert!(!r.stderr.contains("panicked") && !r.stderr.contains("backtrace"), "{}", r.describe());
}

#[test]
fn non_utf8_variables_fail_cuinit_naming_the_variable() {
    let bad = OsStr::from_bytes(b"h1\xff\xfe00");
    let missing = OsStr::from_bytes(b"/nonexistent/\xff.json");
    let node = OsStr::from_bytes(b"node-\xff");
    for (var, value) in [("FAKEGPU_PROFILE", bad), ("FAKEGPU_CONFIG", missing), ("FAKEGPU_NODE", node), ("FAKEGPU_STATE", missing)] {
        let r = run("init", &[(var, value)], Duration::from_secs(5));
        assert!(r.ok, "{var}: {}", r.describe());
        assert_ne!(r.value("rc").as_deref(), Some("0"), "{var}: {}", r.describe());
        let lines: Vec<&str> = r.stderr.lines().collect();
        assert!(lines.len() == 1 && lines[0].contains(var) && lines[0].contains("UTF-8"), "{var}: {}", r.describe());
    }
}

#[test]
fn dlopen_dlclose_cycles_leak_nothing() {
    // The cdylib that this test build produced, beside the test binary (target/<profile>/deps).
    let so = std::env::current_exe().unwrap().parent().unwrap().join("libcuda.so");
    assert!(so.exists(), "{} is built with the tests (cdylib)", so.display());
    let dir = scratch_dir("dlopen");
    let state = dir.join("state.json");
    std::fs::write(&state, r#"{"version":1,"gpus":{"0":{"utilization":{"gpu":50}}}}"#).unwrap();
    let env = [
        ("FAKEGPU_PROFILE", OsStr::new("a100-80gb")),
        ("FAKEGPU_GPUS", OsStr::new("8")),
        ("FAKEGPU_STATE", state.as_os_str()),
        ("SHIM_SO", so.as_os_str()),
        ("CYCLES", OsStr::new("1000")),
    ];
    let r = run("dlopen", &env, Duration::from_secs(300));
    let growth = assert_no_leak(&r, 1 << 20);
    eprintln!("1000 dlopen/dlclose cycles: RSS +{growth} bytes, {} fds, {} mappings", r.number("after_fds"), r.number("after_maps"));
    assert_eq!(r.value("still_mapped").as_deref(), Some("false"), "{}", r.describe());
    // Every cycle took its process entry off the GPU again.
    let left = std::fs::read_to_string(&state).unwrap();
    assert!(!left.contains("\"processes\": [\n        {"), "{left}");
}
