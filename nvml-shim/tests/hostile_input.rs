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
//! (5, the absurd values, is shown where they are checked: `fakegpu_model::{profile, state}`.)

mod common;

use std::ffi::{c_uint, OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nvidia_ml::exports::device_ids::{nvmlDeviceGetCount_v2, nvmlDeviceGetHandleByIndex_v2};
use nvidia_ml::exports::mig::nvmlDeviceGetMigDeviceHandleByIndex;
use nvidia_ml::exports::system::{nvmlInit_v2, nvmlShutdown};
use nvml_abi::ret;

use common::{current_case, scratch_dir, CASE_VAR};

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
    let measure = || {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
        let rss_pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
        let fds = std::fs::read_dir("/proc/self/fd").unwrap().count();
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap().lines().count();
        (rss_pages * 4096, fds, maps)
    };
    for _ in 0..20 {
        cycle();
    }
    let before = measure();
    for _ in 0..cycles {
        cycle();
    }
    let after = measure();
    println!(
        "rss_before={}\nrss_after={}\nfds_before={}\nfds_after={}\nmaps_before={}\nmaps_after={}",
        before.0, after.0, before.1, after.1, before.2, after.2
    );
}

#[test]
fn child() {
    let Some(case) = current_case() else { return };
    match case.as_str() {
        "init" => case_init(),
        "mig" => case_mig(),
        "dlopen" => case_dlopen(),
        "panic" => println!("rc={}", nvidia_ml::test_hooks::panic_inside_an_export()),
        other => panic!("unknown case {other}"),
    }
}

/// What a child did, within a deadline (a hang is killed and reported, not waited for).
struct Run {
    stdout: String,
    stderr: String,
    elapsed: Duration,
    ok: bool,
}

impl Run {
    fn value(&self, key: &str) -> Option<String> {
        let prefix = format!("{key}=");
        self.stdout.lines().find_map(|l| l.strip_prefix(&prefix).map(str::to_string))
    }
    fn describe(&self) -> String {
        format!("ok={} after {:?}\n--- stdout\n{}\n--- stderr\n{}", self.ok, self.elapsed, self.stdout, self.stderr)
    }
}

fn run(case: &str, env: &[(&str, &OsStr)], deadline: Duration) -> Run {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["child", "--exact", "--nocapture", "--test-threads=1", "-q"]);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("FAKEGPU_") {
            cmd.env_remove(key);
        }
    }
    cmd.env(CASE_VAR, case).env("RUST_BACKTRACE", "1").stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let start = Instant::now();
    let mut child = cmd.spawn().unwrap();
    let mut ok = None;
    while start.elapsed() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            ok = Some(status.success());
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let elapsed = start.elapsed();
    if ok.is_none() {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    Run {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed,
        ok: ok.unwrap_or(false),
    }
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo {}", path.display());
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
    assert!(r.ok, "{}", r.describe());
    let v = |k: &str| r.value(k).unwrap().parse::<u64>().unwrap();
    let growth = v("rss_after").saturating_sub(v("rss_before"));
    eprintln!("1000 cycles: RSS {} -> {} bytes (+{growth})", v("rss_before"), v("rss_after"));
    assert!(growth <= 1 << 20, "RSS grew by {growth} bytes: {}", r.describe());
    assert_eq!(v("fds_after"), v("fds_before"), "{}", r.describe());
    assert_eq!(v("maps_after"), v("maps_before"), "{}", r.describe());
}
