//! Hostile input (issue 18): each defect the independent probe found, shown fixed.
//!
//! 1. A FIFO or `/dev/zero` as the node config, the profile (by variable or named in a config)
//!    or the live state: `nvmlInit` returns at once with one line naming the path.
//! 2. A state file with impossible MIG ids or duplicate placements is refused at load ("corrupt
//!    state … keeping the last good state"); no Rust panic text reaches stderr.
//! 3. Non-UTF-8 `FAKEGPU_*` values fail init naming the variable; `FAKEGPU_GPUS` is canonical
//!    decimal only.
//! 4. 1,000 dlopen/dlclose cycles with a state file leak no memory, descriptor or mapping.
//! 6. No `<state>.seq` appears beside a state path that is not a regular file.
//!
//! And the last `nvmlShutdown` lets go of the state file: 1,000 init/shutdown cycles in one
//! process leave descriptors and mappings as they were, no `.seq` mapping outlives the last
//! shutdown, and a thread hammering getters (and an event wait) with handles that go stale
//! while another thread shuts down and re-inits never crashes.
//!
//! (5, the absurd values, is shown where they are checked: `fakegpu_model::{profile, state}`.)

mod common;

use std::ffi::{c_uint, OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Duration;

use nvidia_ml::exports::device_ids::{nvmlDeviceGetCount_v2, nvmlDeviceGetHandleByIndex_v2};
use nvidia_ml::exports::events::{nvmlDeviceRegisterEvents, nvmlEventSetCreate, nvmlEventSetWait_v2};
use nvidia_ml::exports::mig::nvmlDeviceGetMigDeviceHandleByIndex;
use nvidia_ml::exports::system::{nvmlInit_v2, nvmlShutdown};
use nvidia_ml::exports::telemetry::{nvmlDeviceGetMemoryInfo, nvmlDeviceGetTemperature, nvmlDeviceGetUtilizationRates};
use nvml_abi::ret;

use common::{assert_no_leak, current_case, measure_cycles, mkfifo, run_with_deadline as run, scratch_dir};

fn case_init() {
    let rc = nvmlInit_v2();
    println!("rc={rc}");
    if rc == ret::SUCCESS {
        let mut n: c_uint = 0;
        let mut h = std::ptr::null_mut();
        // The first getters read the live state: they must not block either.
        unsafe {
            assert_eq!(nvmlDeviceGetCount_v2(&mut n), ret::SUCCESS);
            assert_eq!(nvmlDeviceGetHandleByIndex_v2(0, &mut h), ret::SUCCESS);
        }
        println!("count={n}");
        assert_eq!(nvmlShutdown(), ret::SUCCESS);
    }
}

/// Asks for every MIG device of GPU 0 (the call that panicked on impossible ids).
fn case_mig() {
    assert_eq!(nvmlInit_v2(), ret::SUCCESS);
    let mut h = std::ptr::null_mut();
    unsafe { assert_eq!(nvmlDeviceGetHandleByIndex_v2(0, &mut h), ret::SUCCESS) };
    let mut codes = Vec::new();
    for i in 0..8 {
        let mut mig = std::ptr::null_mut();
        codes.push(unsafe { nvmlDeviceGetMigDeviceHandleByIndex(h, i, &mut mig) });
    }
    println!("codes={codes:?}");
    assert_eq!(nvmlShutdown(), ret::SUCCESS);
}

/// Loads and unloads the cdylib `CYCLES` times, reporting RSS, descriptors and mappings
/// after a warm-up and at the end.
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
        let init: extern "C" fn() -> u32 = std::mem::transmute(sym(b"nvmlInit_v2\0"));
        let count: extern "C" fn(*mut c_uint) -> u32 = std::mem::transmute(sym(b"nvmlDeviceGetCount_v2\0"));
        let temp: extern "C" fn(*mut libc::c_void, u32, *mut c_uint) -> u32 = std::mem::transmute(sym(b"nvmlDeviceGetTemperature\0"));
        let handle_by_index: extern "C" fn(c_uint, *mut *mut libc::c_void) -> u32 =
            std::mem::transmute(sym(b"nvmlDeviceGetHandleByIndex_v2\0"));
        let shutdown: extern "C" fn() -> u32 = std::mem::transmute(sym(b"nvmlShutdown\0"));
        assert_eq!(init(), 0);
        let mut n = 0;
        assert_eq!(count(&mut n), 0);
        let mut dev = std::ptr::null_mut();
        assert_eq!(handle_by_index(0, &mut dev), 0);
        let mut t = 0;
        // Reads the live state: maps `<state>.seq`.
        assert_eq!(temp(dev, 0, &mut t), 0);
        assert_eq!(shutdown(), 0);
        assert_eq!(libc::dlclose(handle), 0);
    };
    measure_cycles(20, cycles, cycle);
}

/// Whether this process maps the `.seq` companion of the state file `FAKEGPU_STATE`.
fn seq_mapped() -> bool {
    let seq = format!("{}.seq", std::env::var("FAKEGPU_STATE").unwrap());
    std::fs::read_to_string("/proc/self/maps").unwrap().lines().any(|l| l.ends_with(&seq))
}

/// Reads every live-state getter of GPU 0 once; the utilization it reports.
unsafe fn read_gpu0() -> (u32, u32) {
    let mut h = std::ptr::null_mut();
    assert_eq!(nvmlDeviceGetHandleByIndex_v2(0, &mut h), ret::SUCCESS);
    let mut u: nvml_abi::nvmlUtilization_t = std::mem::zeroed();
    let mut m: nvml_abi::nvmlMemory_t = std::mem::zeroed();
    let mut t = 0;
    assert_eq!(nvmlDeviceGetUtilizationRates(h, &mut u), ret::SUCCESS);
    assert_eq!(nvmlDeviceGetMemoryInfo(h, &mut m), ret::SUCCESS);
    assert_eq!(nvmlDeviceGetTemperature(h, 0, &mut t), ret::SUCCESS);
    (u.gpu, t)
}

/// `CYCLES` init / read / shutdown cycles in one process, measured after a warm-up; the
/// `.seq` mapping exists while initialized and not after the last shutdown.
fn case_init_cycles() {
    let cycles: usize = std::env::var("CYCLES").unwrap().parse().unwrap();
    let mut mapped_while_initialized = true;
    let mut mapped_after_shutdown = false;
    let mut utilization = 0;
    measure_cycles(5, cycles, || {
        assert_eq!(nvmlInit_v2(), ret::SUCCESS);
        utilization = unsafe { read_gpu0() }.0;
        mapped_while_initialized &= seq_mapped();
        assert_eq!(nvmlShutdown(), ret::SUCCESS);
        mapped_after_shutdown |= seq_mapped();
    });
    println!(
        "utilization={utilization}\nmapped_while_initialized={mapped_while_initialized}\nmapped_after_shutdown={mapped_after_shutdown}"
    );
}

/// One thread hammers the live-state getters and an event wait with the handles it got once
/// (stale whenever the count is 0) while the main thread shuts down and re-inits, and a third
/// rewrites the state file. Every call must answer SUCCESS, UNINITIALIZED or (a freed event
/// set) INVALID_ARGUMENT; a crash kills the child and fails the test.
fn case_hammer() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    assert_eq!(nvmlInit_v2(), ret::SUCCESS);
    let mut h = std::ptr::null_mut();
    unsafe { assert_eq!(nvmlDeviceGetHandleByIndex_v2(0, &mut h), ret::SUCCESS) };
    let mut set = std::ptr::null_mut();
    unsafe {
        assert_eq!(nvmlEventSetCreate(&mut set), ret::SUCCESS);
        assert_eq!(nvmlDeviceRegisterEvents(h, nvml_abi::event::XID_CRITICAL_ERROR, set), ret::SUCCESS);
    }
    let (h, set) = (h as usize, set as usize);
    let stop = AtomicBool::new(false);
    let (ok, uninit, other) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    let count = |rc: u32| match rc {
        ret::SUCCESS => ok.fetch_add(1, Ordering::Relaxed),
        ret::UNINITIALIZED => uninit.fetch_add(1, Ordering::Relaxed),
        ret::INVALID_ARGUMENT | ret::TIMEOUT => 0,
        rc => {
            println!("unexpected={rc}");
            other.fetch_add(1, Ordering::Relaxed)
        }
    };
    let path = PathBuf::from(std::env::var("FAKEGPU_STATE").unwrap());
    let spec = fakegpu_model::NodeSpec::builtin("a100-80gb", Some(2), "hammer").unwrap();
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let dev = h as nvml_abi::nvmlDevice_t;
                    let mut u: nvml_abi::nvmlUtilization_t = unsafe { std::mem::zeroed() };
                    let mut m: nvml_abi::nvmlMemory_t = unsafe { std::mem::zeroed() };
                    let mut t = 0;
                    count(unsafe { nvmlDeviceGetUtilizationRates(dev, &mut u) });
                    count(unsafe { nvmlDeviceGetMemoryInfo(dev, &mut m) });
                    count(unsafe { nvmlDeviceGetTemperature(dev, 0, &mut t) });
                }
            });
        }
        scope.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                let mut data: nvml_abi::nvmlEventData_t = unsafe { std::mem::zeroed() };
                count(unsafe { nvmlEventSetWait_v2(set as nvml_abi::nvmlEventSet_t, &mut data, 5) });
            }
        });
        scope.spawn(|| {
            let mut k = 0u32;
            while !stop.load(Ordering::Relaxed) {
                k = k % 100 + 1;
                let req = fakegpu_model::state::SetRequest { gpu_util: Some(k), ..Default::default() };
                let now = fakegpu_model::state_file::now();
                fakegpu_model::state_file::update(&path, &spec, |s| fakegpu_model::state::set(s, &spec, 0, &req, now)).unwrap();
            }
        });
        for _ in 0..2000 {
            assert_eq!(nvmlShutdown(), ret::SUCCESS);
            std::thread::yield_now();
            assert_eq!(nvmlInit_v2(), ret::SUCCESS);
        }
        stop.store(true, Ordering::Relaxed);
    });
    assert_eq!(nvmlShutdown(), ret::SUCCESS);
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    println!("success={}\nuninitialized={}\nother={}", load(&ok), load(&uninit), load(&other));
}

#[test]
fn child() {
    let Some(case) = current_case() else { return };
    match case.as_str() {
        "init" => case_init(),
        "mig" => case_mig(),
        "dlopen" => case_dlopen(),
        "init_cycles" => case_init_cycles(),
        "hammer" => case_hammer(),
        "panic" => println!("rc={}", nvidia_ml::test_hooks::panic_inside_an_export()),
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
                failures.push(format!("{sp} as {what}: want a failed init and one line naming the path: {}", r.describe()));
            }
        }
    }
    assert!(!dir.join("fifo.seq").exists(), "no .seq beside a FIFO");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn impossible_mig_state_is_refused_at_load_without_panic_text() {
    let dir = scratch_dir("mig-state");
    let gi = |id: u32, start: u32| format!(r#"{{"id":{id},"profile":0,"placement":{{"start":{start},"size":1}},"compute_instances":[]}}"#);
    for (what, instances) in [("impossible ids", vec![gi(842, 0), gi(843, 1)]), ("duplicate placements", vec![gi(7, 0), gi(7, 0)])] {
        let state = dir.join(format!("{}.json", what.replace(' ', "-")));
        std::fs::write(
            &state,
            format!(
                r#"{{"version":1,"gpus":{{"0":{{"mig":{{"current":true,"pending":true,"gpu_instances":[{}]}}}}}}}}"#,
                instances.join(",")
            ),
        )
        .unwrap();
        let env = [("FAKEGPU_PROFILE", OsStr::new("a100-40gb")), ("FAKEGPU_GPUS", OsStr::new("2")), ("FAKEGPU_STATE", state.as_os_str())];
        let r = run("mig", &env, Duration::from_secs(10));
        assert!(r.ok, "{what}: {}", r.describe());
        assert!(!r.stderr.contains("panicked") && !r.stderr.contains("internal error"), "{what}: {}", r.describe());
        let lines: Vec<&str> = r.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{what}: {}", r.describe());
        assert!(lines[0].contains("corrupt state") && lines[0].contains("keeping the last good state"), "{what}: {}", r.describe());
        // The last good state (none yet: MIG off) is what the calls see: INVALID_ARGUMENT,
        // not UNKNOWN (a caught panic).
        assert_eq!(r.value("codes").as_deref(), Some("[2, 2, 2, 2, 2, 2, 2, 2]"), "{what}: {}", r.describe());
    }
}

#[test]
fn a_panic_inside_an_export_prints_one_line_of_ours_and_no_rust_panic_text() {
    let r = run("panic", &[], Duration::from_secs(5));
    assert!(r.ok, "{}", r.describe());
    assert_eq!(r.value("rc").as_deref(), Some("999"), "{}", r.describe());
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "RUST_BACKTRACE=1 and still one line: {}", r.describe());
    assert!(lines[0].starts_with("[fakegpu-nvml] internal error in panic_inside_an_export (index out of bounds"), "{}", r.describe());
    assert!(!r.stderr.contains("panicked") && !r.stderr.contains("backtrace"), "{}", r.describe());
}

#[test]
fn non_utf8_variables_fail_init_naming_the_variable() {
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
    for text in [" 8", "+8", "08", "8 "] {
        let r = run("init", &[("FAKEGPU_GPUS", OsStr::new(text))], Duration::from_secs(5));
        assert_eq!(r.value("rc").as_deref(), Some("2"), "{text:?}: {}", r.describe());
        assert!(r.stderr.contains("FAKEGPU_GPUS") && r.stderr.contains("canonical decimal"), "{}", r.describe());
    }
}

#[test]
fn dlopen_dlclose_cycles_leak_nothing() {
    // The cdylib that this test build produced, beside the test binary (target/<profile>/deps);
    // target/<profile>/libnvidia_ml.so is only refreshed by `cargo build`.
    let so = std::env::current_exe().unwrap().parent().unwrap().join("libnvidia_ml.so");
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
}

#[test]
fn init_shutdown_cycles_let_go_of_the_state_file_and_leak_nothing() {
    let dir = scratch_dir("init-cycles");
    let state = dir.join("state.json");
    std::fs::write(&state, r#"{"version":1,"gpus":{"0":{"utilization":{"gpu":50}}}}"#).unwrap();
    let env = [
        ("FAKEGPU_PROFILE", OsStr::new("a100-80gb")),
        ("FAKEGPU_GPUS", OsStr::new("8")),
        ("FAKEGPU_STATE", state.as_os_str()),
        ("CYCLES", OsStr::new("1000")),
    ];
    let r = run("init_cycles", &env, Duration::from_secs(120));
    let growth = assert_no_leak(&r, 1 << 20);
    eprintln!("1000 init/shutdown cycles: RSS +{growth} bytes, {} fds, {} mappings", r.number("after_fds"), r.number("after_maps"));
    // Each re-init reads the state again (50 % from the file, not the idle default).
    assert_eq!(r.value("utilization").as_deref(), Some("50"), "{}", r.describe());
    assert_eq!(r.value("mapped_while_initialized").as_deref(), Some("true"), "{}", r.describe());
    assert_eq!(r.value("mapped_after_shutdown").as_deref(), Some("false"), "the last shutdown keeps no .seq mapping: {}", r.describe());
    assert!(r.stderr.is_empty(), "{}", r.describe());
}

#[test]
fn getters_racing_shutdown_and_reinit_never_crash() {
    let dir = scratch_dir("hammer");
    let state = dir.join("state.json");
    std::fs::write(&state, r#"{"version":1,"gpus":{"0":{"utilization":{"gpu":50}}}}"#).unwrap();
    let env = [
        ("FAKEGPU_PROFILE", OsStr::new("a100-80gb")),
        ("FAKEGPU_GPUS", OsStr::new("2")),
        ("FAKEGPU_NODE", OsStr::new("hammer")),
        ("FAKEGPU_STATE", state.as_os_str()),
    ];
    let r = run("hammer", &env, Duration::from_secs(120));
    assert!(r.ok, "{}", r.describe());
    assert_eq!(r.number("other"), 0, "{}", r.describe());
    // Both sides of the race happened: calls while initialized and calls with stale handles.
    assert!(r.number("success") > 0 && r.number("uninitialized") > 0, "{}", r.describe());
    assert!(!r.stderr.contains("panicked") && !r.stderr.contains("internal error"), "{}", r.describe());
}
