//! Fuzz suite of the C boundary (issue 18): every export of the built `libnvidia-ml.so`
//! × argument patterns × library states, each call in a forked child. A child that dies
//! from a signal (crash) or runs past 5 s (hang; `alarm` kills it) fails the test.
//!
//! Argument patterns come from each function's signature in `include/fakegpu_nvml.h`:
//! a handle is NULL, garbage, misaligned, of the wrong type, or valid; a data pointer is
//! NULL or a large zeroed buffer (a garbage data pointer is the caller's fault, so it is
//! never passed); an integer is small (lengths never exceed the buffer) or, when signed,
//! negative; a timeout is 0 or 1 ms. Exports without a header entry (the NOT_SUPPORTED
//! stubs, `nvmlErrorString`) are called with NULL/zero and with garbage arguments.
//!
//! States: before init, initialized, after shutdown (handles now stale), a child forked while
//! another thread is inside the library, and an A100 node with a MIG layout (GPU instance,
//! compute instance and MIG device handles valid).
//!
//! The budget is fixed: per function and state, every parameter through each of its
//! patterns (the others valid), plus `FUZZ_RANDOM_PER_FUNCTION` (default 8) combinations
//! from a seeded generator, so a run is reproducible.

mod common;

use std::collections::BTreeMap;
use std::ffi::{c_void, CString};
use std::path::PathBuf;

use common::{current_case, run_case, scratch_dir, workspace_root};

type Fn8 = unsafe extern "C" fn(usize, usize, usize, usize, usize, usize, usize, usize) -> u32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Handle {
    Device,
    GpuInstance,
    ComputeInstance,
    EventSet,
    Unit,
}

#[derive(Debug, Clone, Copy)]
enum Param {
    Handle(Handle),
    Pointer,
    Unsigned,
    Signed,
    Timeout,
}

/// Parameters of every function the header declares.
fn signatures() -> BTreeMap<String, Vec<Param>> {
    let header = std::fs::read_to_string(workspace_root().join("include/fakegpu_nvml.h")).unwrap();
    let mut out = BTreeMap::new();
    for line in header.lines() {
        let Some(rest) = line.strip_prefix("nvmlReturn_t ") else { continue };
        let Some((name, params)) = rest.split_once('(') else { continue };
        let params = params.trim_end_matches(");");
        let parsed = params
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty() && *p != "void")
            .map(|p| {
                let name = p.rsplit([' ', '*']).next().unwrap_or("").to_ascii_lowercase();
                if p.contains('*') {
                    Param::Pointer
                } else if p.starts_with("nvmlDevice_t") {
                    Param::Handle(Handle::Device)
                } else if p.starts_with("nvmlGpuInstance_t") {
                    Param::Handle(Handle::GpuInstance)
                } else if p.starts_with("nvmlComputeInstance_t") {
                    Param::Handle(Handle::ComputeInstance)
                } else if p.starts_with("nvmlEventSet_t") {
                    Param::Handle(Handle::EventSet)
                } else if p.starts_with("nvmlUnit_t") {
                    Param::Handle(Handle::Unit)
                } else if name.contains("timeout") {
                    Param::Timeout
                } else if p.starts_with("int ") || p.starts_with("long ") {
                    Param::Signed
                } else {
                    Param::Unsigned
                }
            })
            .collect();
        out.insert(name.to_string(), parsed);
    }
    out
}

/// Every export of the real 535 library (the shim exports exactly these).
fn exports() -> Vec<String> {
    let text = std::fs::read_to_string(workspace_root().join("nvml-shim/exports-535.txt")).unwrap();
    text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_string).collect()
}

const GARBAGE: usize = 0xdead_beef_f000;
/// Zeroed, writable, and larger than any list or string a call fills with the lengths below.
const BUFFER_BYTES: usize = 16 << 20;

/// A small deterministic generator (splitmix64).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[(self.next() % items.len() as u64) as usize]
    }
}

/// The values one parameter may take in this state.
fn choices(p: Param, valid: &BTreeMap<Handle, usize>, buffer: usize) -> Vec<usize> {
    match p {
        Param::Handle(kind) => {
            let mut v = vec![0, GARBAGE];
            if let Some(&h) = valid.get(&kind) {
                v.extend([h, h + 1]);
            }
            v.extend(valid.iter().filter(|(k, _)| **k != kind).map(|(_, h)| *h));
            v
        }
        Param::Pointer => vec![0, buffer],
        Param::Unsigned => vec![0, 1, 2, 7, 64, 4096],
        Param::Signed => vec![0, 1, 7, 64, u32::MAX as usize, i64::MIN as usize],
        Param::Timeout => vec![0, 1],
    }
}

/// The argument lists for one function: all-minimal, each parameter through its choices
/// with the others valid, then `random` seeded random combinations.
fn argument_lists(params: &[Param], valid: &BTreeMap<Handle, usize>, buffer: usize, random: usize, rng: &mut Rng) -> Vec<[usize; 8]> {
    let per: Vec<Vec<usize>> = params.iter().map(|p| choices(*p, valid, buffer)).collect();
    let preferred: Vec<usize> = params
        .iter()
        .zip(&per)
        .map(|(p, c)| match p {
            Param::Handle(kind) => valid.get(kind).copied().unwrap_or(c[0]),
            Param::Pointer => buffer,
            _ => c[0],
        })
        .collect();
    let mut lists = vec![[0usize; 8]];
    for (i, c) in per.iter().enumerate() {
        for &value in c {
            let mut args = [0usize; 8];
            args[..preferred.len()].copy_from_slice(&preferred);
            args[i] = value;
            lists.push(args);
        }
    }
    if params.is_empty() {
        lists.push([GARBAGE; 8]);
    }
    for _ in 0..if params.is_empty() { 0 } else { random } {
        let mut args = [0usize; 8];
        for (i, c) in per.iter().enumerate() {
            args[i] = rng.pick(c);
        }
        lists.push(args);
    }
    lists
}

/// Calls `f(args)` in a forked child with a 5 s alarm; describes a crash or hang.
fn call_in_child(name: &str, f: Fn8, args: [usize; 8]) -> Option<String> {
    // SAFETY: the child only makes the call and exits; stderr goes to /dev/null (refusals print lines).
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        unsafe {
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY);
            libc::dup2(null, 2);
            libc::alarm(5);
            f(args[0], args[1], args[2], args[3], args[4], args[5], args[6], args[7]);
            libc::_exit(0);
        }
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        let what = if sig == libc::SIGALRM { "hung (> 5 s)".to_string() } else { format!("died from signal {sig}") };
        Some(format!("{name}{args:x?}: {what}"))
    } else if libc::WEXITSTATUS(status) != 0 {
        Some(format!("{name}{args:x?}: exit status {}", libc::WEXITSTATUS(status)))
    } else {
        None
    }
}

struct Lib(*mut c_void);
// SAFETY: a dlopen handle may be used from any thread.
unsafe impl Send for Lib {}
unsafe impl Sync for Lib {}
impl Lib {
    fn open() -> Lib {
        let path = std::env::var("SHIM_SO").unwrap();
        let c = CString::new(path.clone()).unwrap();
        // SAFETY: loading our own library.
        let h = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        assert!(!h.is_null(), "dlopen {path}");
        Lib(h)
    }
    fn sym(&self, name: &str) -> Fn8 {
        let c = CString::new(name).unwrap();
        // SAFETY: every export is a C function; extra arguments are ignored by the SysV x86-64 ABI.
        let f = unsafe { libc::dlsym(self.0, c.as_ptr()) };
        assert!(!f.is_null(), "{name} is not exported");
        unsafe { std::mem::transmute::<*mut c_void, Fn8>(f) }
    }
    fn call(&self, name: &str, args: &[usize]) -> u32 {
        let mut a = [0usize; 8];
        a[..args.len()].copy_from_slice(args);
        // SAFETY: as in `sym`; the arguments are valid for `name`.
        unsafe { self.sym(name)(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]) }
    }
}

/// One state: sets it up, then calls every export with its argument lists.
fn case_state(state: &str) {
    let lib = Lib::open();
    let mut valid = BTreeMap::new();
    let mut out = 0usize;
    let out_ptr = &mut out as *mut usize as usize;
    let mut keep_busy = false;
    match state {
        "uninitialized" => {}
        "initialized" | "shutdown" | "forked" | "mig" => {
            assert_eq!(lib.call("nvmlInit_v2", &[]), 0);
            assert_eq!(lib.call("nvmlDeviceGetHandleByIndex_v2", &[0, out_ptr]), 0);
            valid.insert(Handle::Device, out);
            assert_eq!(lib.call("nvmlEventSetCreate", &[out_ptr]), 0);
            valid.insert(Handle::EventSet, out);
            if state == "mig" {
                let dev = valid[&Handle::Device];
                if lib.call("nvmlDeviceGetMigDeviceHandleByIndex", &[dev, 0, out_ptr]) == 0 {
                    valid.insert(Handle::Device, out); // a MIG device handle where a device goes
                }
                assert_eq!(lib.call("nvmlDeviceGetGpuInstanceById", &[dev, 7, out_ptr]), 0, "the MIG layout has GI 7");
                valid.insert(Handle::GpuInstance, out);
                assert_eq!(lib.call("nvmlGpuInstanceGetComputeInstanceById", &[out, 0, out_ptr]), 0);
                valid.insert(Handle::ComputeInstance, out);
            }
            if state == "shutdown" {
                assert_eq!(lib.call("nvmlShutdown", &[]), 0);
            }
            keep_busy = state == "forked";
        }
        other => panic!("unknown state {other}"),
    }
    // SAFETY: an anonymous private mapping, never written by the parent (children get it zeroed).
    let buffer = unsafe {
        libc::mmap(std::ptr::null_mut(), BUFFER_BYTES, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
    } as usize;
    let random: usize = std::env::var("FUZZ_RANDOM_PER_FUNCTION").ok().and_then(|v| v.parse().ok()).unwrap_or(8);
    let sigs = signatures();
    let mut rng = Rng(0x5eed ^ state.len() as u64);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let mut failures = Vec::new();
    let mut calls = 0;
    std::thread::scope(|s| {
        if keep_busy {
            let (lib, dev, stop) = (&lib, valid[&Handle::Device], &stop);
            s.spawn(move || {
                let mut t = 0usize;
                let tp = &mut t as *mut usize as usize;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    lib.call("nvmlDeviceGetTemperature", &[dev, 0, tp]);
                    lib.call("nvmlDeviceGetComputeRunningProcesses_v3", &[dev, tp, 0]);
                }
            });
        }
        for name in exports() {
            let f = lib.sym(&name);
            let params = sigs.get(&name).cloned().unwrap_or_default();
            for args in argument_lists(&params, &valid, buffer, random, &mut rng) {
                calls += 1;
                if let Some(failure) = call_in_child(&name, f, args) {
                    failures.push(failure);
                }
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    println!("calls={calls}");
    assert!(failures.is_empty(), "{} of {calls} calls failed in state {state}:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn child() {
    let Some(case) = current_case() else { return };
    case_state(&case);
}

fn shim_so() -> PathBuf {
    // The cdylib that this test build produced, beside the test binary (target/<profile>/deps);
    // target/<profile>/libnvidia_ml.so is only refreshed by `cargo build`.
    let so = std::env::current_exe().unwrap().parent().unwrap().join("libnvidia_ml.so");
    assert!(so.exists(), "{} is built with the tests (cdylib)", so.display());
    so
}

#[test]
fn every_export_survives_every_argument_pattern_in_every_state() {
    let so = shim_so();
    let dir = scratch_dir("fuzz");
    let mig_state = dir.join("mig-state.json");
    let header_names = signatures();
    assert!(header_names.len() > 150, "the header parses ({} functions)", header_names.len());
    let mut results = Vec::new();
    for state in ["uninitialized", "initialized", "shutdown", "forked", "mig"] {
        let mut env = vec![("SHIM_SO", so.display().to_string()), ("FAKEGPU_PROFILE", "a100-40gb".into()), ("FAKEGPU_GPUS", "2".into())];
        if state == "mig" {
            // GPU 0 in MIG mode with one 1g.5gb instance (GI 7) holding compute instance 0.
            std::fs::write(
                &mig_state,
                r#"{"version":1,"gpus":{"0":{"mig":{"current":true,"pending":true,"gpu_instances":[
                    {"id":7,"profile":0,"placement":{"start":0,"size":1},"compute_instances":[{"id":0,"profile":0,"placement":{"start":0,"size":1}}]}]}}}}"#,
            )
            .unwrap();
            env.push(("FAKEGPU_STATE", mig_state.display().to_string()));
        }
        let child = run_case(state, &env);
        results.push((state, child.value("calls"), child.output.status.success(), child.stdout(), child.stderr()));
    }
    let failed: Vec<String> = results
        .iter()
        .filter(|r| !r.2)
        .map(|(state, _, _, out, err)| format!("state {state}:\n{out}\n{}", err.lines().rev().take(60).collect::<Vec<_>>().join("\n")))
        .collect();
    for (state, calls, ..) in &results {
        eprintln!("{state}: {} calls", calls.as_deref().unwrap_or("?"));
    }
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
}

/// The harness itself sees a crash (so a passing run means something).
#[test]
fn a_crashing_call_is_reported() {
    unsafe extern "C" fn crashes(_: usize, _: usize, _: usize, _: usize, _: usize, _: usize, _: usize, _: usize) -> u32 {
        libc::abort()
    }
    unsafe extern "C" fn returns(_: usize, _: usize, _: usize, _: usize, _: usize, _: usize, _: usize, _: usize) -> u32 {
        0
    }
    let report = call_in_child("crashes", crashes, [0; 8]).expect("a crash is reported");
    assert!(report.contains(&format!("signal {}", libc::SIGABRT)), "{report}");
    assert_eq!(call_in_child("returns", returns, [0; 8]), None);
}
