//! Benchmark of the fake NVML as clients meet it: the release cdylib loaded with
//! dlopen, called through function pointers. Not a timed test: it prints numbers and
//! the goals next to them (scripts/bench-nvml.sh runs it; docs/benchmarks.md records a run).
//!
//!   cargo bench -p nvml-shim --bench nvml             # everything but nvidia-smi
//!   NVIDIA_SMI=/path/to/nvidia-smi cargo bench ...    # plus `nvidia-smi -q` on 8 GPUs
//!
//! Each measurement runs in a fresh child process (this binary re-executed with a mode
//! argument), so every load is a first load and the node comes from the environment:
//! FAKEGPU_PROFILE=h100, FAKEGPU_GPUS=8.
//!
//! Environment: FAKEGPU_NVML_LIB (the cdylib; default: next to this binary's deps dir),
//! BENCH_LOADS (fresh-process loads, default 200), BENCH_SMI_RUNS (default 20).

use std::ffi::{c_char, c_uint, c_void, CString};
use std::hint::black_box;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

type Ret = c_uint;
type Dev = *mut c_void;

const GOAL_GETTER_NS: f64 = 100.0;
const GOAL_LOAD_MS: f64 = 2.0;
const GOAL_RSS_KIB: i64 = 2048;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    match args.first().map(String::as_str) {
        Some("load-once") => load_once(),
        Some("getters") => getters(args.get(1).and_then(|t| t.parse().ok()).unwrap_or(1)),
        _ => orchestrate(),
    }
}

fn lib_path() -> PathBuf {
    if let Some(p) = std::env::var_os("FAKEGPU_NVML_LIB") {
        return PathBuf::from(p);
    }
    // target/<profile>/deps/nvml-<hash> -> target/<profile>/libnvidia_ml.so
    let exe = std::env::current_exe().expect("own path");
    exe.parent().and_then(|d| d.parent()).expect("target dir").join("libnvidia_ml.so")
}

struct Lib(*mut c_void);

impl Lib {
    fn open() -> Lib {
        let path = CString::new(lib_path().to_str().expect("UTF-8 path")).unwrap();
        // SAFETY: dlopen of our own library; its initializers are Rust statics only.
        let handle = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        assert!(!handle.is_null(), "dlopen {}: {}", lib_path().display(), dlerror());
        Lib(handle)
    }

    /// The function `name` as a pointer of type `F`.
    fn sym<F: Copy>(&self, name: &str) -> F {
        assert_eq!(std::mem::size_of::<F>(), std::mem::size_of::<*mut c_void>());
        let cname = CString::new(name).unwrap();
        // SAFETY: the handle is open; the symbol's C type is what the caller names.
        let p = unsafe { libc::dlsym(self.0, cname.as_ptr()) };
        assert!(!p.is_null(), "dlsym {name}");
        // SAFETY: F is a function pointer type of the symbol's signature.
        unsafe { std::mem::transmute_copy(&p) }
    }
}

fn dlerror() -> String {
    // SAFETY: dlerror returns NULL or a C string.
    let e = unsafe { libc::dlerror() };
    if e.is_null() {
        return "unknown error".into();
    }
    unsafe { std::ffi::CStr::from_ptr(e) }.to_string_lossy().into_owned()
}

/// (VmRSS KiB, threads) of this process.
fn proc_status() -> (i64, i64) {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |key: &str| {
        text.lines().find_map(|l| l.strip_prefix(key)).and_then(|v| v.split_whitespace().next()).and_then(|v| v.parse().ok()).unwrap_or(-1)
    };
    (field("VmRSS:"), field("Threads:"))
}

/// Child: one dlopen + nvmlInit_v2 in a fresh process, with RSS and threads around it.
fn load_once() {
    let (rss0, thr0) = proc_status();
    let t0 = Instant::now();
    let lib = Lib::open();
    let t1 = Instant::now();
    let init: extern "C" fn() -> Ret = lib.sym("nvmlInit_v2");
    let rc = init();
    let t2 = Instant::now();
    assert_eq!(rc, 0, "nvmlInit_v2");
    let (rss1, thr1) = proc_status();
    let count: unsafe extern "C" fn(*mut c_uint) -> Ret = lib.sym("nvmlDeviceGetCount_v2");
    let mut n = 0;
    assert_eq!(unsafe { count(&mut n) }, 0);
    println!(
        "dlopen_ns={} init_ns={} rss_kib={} threads={} gpus={n}",
        (t1 - t0).as_nanos(),
        (t2 - t1).as_nanos(),
        rss1 - rss0,
        thr1 - thr0
    );
}

type Getter = Box<dyn Fn(Dev, u32) -> Ret + Send + Sync>;

/// The ten getters clients call most, each as one closure over the library.
fn getter_table(lib: &Lib) -> Vec<(&'static str, Getter)> {
    type Str = unsafe extern "C" fn(Dev, *mut c_char, c_uint) -> Ret;
    type Out<T> = unsafe extern "C" fn(Dev, *mut T) -> Ret;
    type Typed<T> = unsafe extern "C" fn(Dev, c_uint, *mut T) -> Ret;
    type ByIndex = unsafe extern "C" fn(c_uint, *mut Dev) -> Ret;
    let name: Str = lib.sym("nvmlDeviceGetName");
    let uuid: Str = lib.sym("nvmlDeviceGetUUID");
    let mem: Out<[u64; 5]> = lib.sym("nvmlDeviceGetMemoryInfo_v2");
    let util: Out<[c_uint; 2]> = lib.sym("nvmlDeviceGetUtilizationRates");
    let temp: Typed<c_uint> = lib.sym("nvmlDeviceGetTemperature");
    let power: Out<c_uint> = lib.sym("nvmlDeviceGetPowerUsage");
    let clock: Typed<c_uint> = lib.sym("nvmlDeviceGetClockInfo");
    let pci: Out<[u8; 68]> = lib.sym("nvmlDeviceGetPciInfo_v3");
    let by_index: ByIndex = lib.sym("nvmlDeviceGetHandleByIndex_v2");
    let pstate: Out<c_uint> = lib.sym("nvmlDeviceGetPerformanceState");
    vec![
        ("nvmlDeviceGetName", Box::new(move |d, _| unsafe { name(d, black_box([0; 96]).as_mut_ptr(), 96) })),
        ("nvmlDeviceGetUUID", Box::new(move |d, _| unsafe { uuid(d, black_box([0; 96]).as_mut_ptr(), 96) })),
        (
            "nvmlDeviceGetMemoryInfo_v2",
            Box::new(move |d, _| {
                let mut m = [0u64; 5];
                m[0] = 0x0200_0028;
                unsafe { mem(d, black_box(&mut m)) }
            }),
        ),
        ("nvmlDeviceGetUtilizationRates", Box::new(move |d, _| unsafe { util(d, black_box(&mut [0; 2])) })),
        ("nvmlDeviceGetTemperature", Box::new(move |d, _| unsafe { temp(d, 0, black_box(&mut 0)) })),
        ("nvmlDeviceGetPowerUsage", Box::new(move |d, _| unsafe { power(d, black_box(&mut 0)) })),
        ("nvmlDeviceGetClockInfo(SM)", Box::new(move |d, _| unsafe { clock(d, 1, black_box(&mut 0)) })),
        ("nvmlDeviceGetPciInfo_v3", Box::new(move |d, _| unsafe { pci(d, black_box(&mut [0; 68])) })),
        ("nvmlDeviceGetHandleByIndex_v2", Box::new(move |_, i| unsafe { by_index(i, black_box(&mut std::ptr::null_mut())) })),
        ("nvmlDeviceGetPerformanceState", Box::new(move |d, _| unsafe { pstate(d, black_box(&mut 0)) })),
    ]
}

const BATCH: u32 = 2_000;
const BATCHES: usize = 60;

/// Child: ns per call of each getter on `threads` threads (each thread on its own GPU),
/// as the median over batches of all threads. Prints `getter=<name> ns=<median>`.
fn getters(threads: usize) {
    let lib = Lib::open();
    let init: extern "C" fn() -> Ret = lib.sym("nvmlInit_v2");
    assert_eq!(init(), 0);
    let table = getter_table(&lib);
    let by_index: unsafe extern "C" fn(c_uint, *mut Dev) -> Ret = lib.sym("nvmlDeviceGetHandleByIndex_v2");
    let devs: Vec<usize> = (0..8)
        .map(|i| {
            let mut h = std::ptr::null_mut();
            assert_eq!(unsafe { by_index(i, &mut h) }, 0);
            h as usize
        })
        .collect();
    for (name, call) in &table {
        let start = std::sync::Barrier::new(threads);
        let samples: Vec<f64> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..threads)
                .map(|t| {
                    let (call, start, devs) = (call, &start, &devs);
                    s.spawn(move || {
                        let (dev, index) = (devs[t % devs.len()] as Dev, (t % devs.len()) as u32);
                        for _ in 0..BATCH {
                            assert_eq!(call(dev, index), 0, "{name}");
                        }
                        start.wait();
                        (0..BATCHES)
                            .map(|_| {
                                let t0 = Instant::now();
                                for _ in 0..BATCH {
                                    black_box(call(black_box(dev), index));
                                }
                                t0.elapsed().as_nanos() as f64 / f64::from(BATCH)
                            })
                            .collect::<Vec<f64>>()
                    })
                })
                .collect();
            workers.into_iter().flat_map(|w| w.join().expect("worker")).collect()
        });
        println!("getter={name} ns={:.1}", median(samples));
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn child(args: &[&str]) -> String {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(args)
        .env("FAKEGPU_PROFILE", "h100")
        .env("FAKEGPU_GPUS", "8")
        .env_remove("FAKEGPU_CONFIG")
        .env_remove("FAKEGPU_LOG")
        .env("FAKEGPU_NVML_LIB", lib_path())
        .output()
        .expect("run the benchmark child");
    assert!(out.status.success(), "child {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn field(line: &str, key: &str) -> f64 {
    let prefix = format!("{key}=");
    line.split_whitespace().find_map(|w| w.strip_prefix(&prefix)).and_then(|v| v.parse().ok()).unwrap_or(f64::NAN)
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

fn orchestrate() {
    let lib = lib_path();
    assert!(lib.exists(), "{} not found: build it with `cargo build --release -p nvml-shim` or set FAKEGPU_NVML_LIB", lib.display());
    println!("# Fake NVML library benchmark");
    println!("library: {} ({} KiB)", lib.display(), std::fs::metadata(&lib).map_or(0, |m| m.len() / 1024));
    println!("node: FAKEGPU_PROFILE=h100 FAKEGPU_GPUS=8; CPUs online: {}", std::thread::available_parallelism().map_or(0, |n| n.get()));
    println!();

    // Getters, 1 and 8 threads.
    let one = child(&["getters", "1"]);
    let eight = child(&["getters", "8"]);
    println!("## Getter latency (median ns per call; {BATCHES} batches of {BATCH} calls per thread)");
    println!("| getter | 1 thread | 8 threads |");
    println!("|---|---:|---:|");
    let mut worst: f64 = 0.0;
    for (a, b) in one.lines().zip(eight.lines()) {
        let name = a.split_whitespace().next().unwrap_or("").trim_start_matches("getter=");
        let (x, y) = (field(a, "ns"), field(b, "ns"));
        worst = worst.max(x);
        println!("| {name} | {x:.1} | {y:.1} |");
    }
    println!("goal ≤{GOAL_GETTER_NS} ns per getter (1 thread): {} (slowest {worst:.1} ns)", verdict(worst <= GOAL_GETTER_NS));
    println!();

    // dlopen + init in fresh processes.
    let loads: usize = std::env::var("BENCH_LOADS").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let (mut total, mut dl, mut ini, mut rss, mut thr) = (vec![], vec![], vec![], vec![], vec![]);
    for _ in 0..loads {
        let line = child(&["load-once"]);
        let (d, i) = (field(&line, "dlopen_ns"), field(&line, "init_ns"));
        dl.push(d / 1e6);
        ini.push(i / 1e6);
        total.push((d + i) / 1e6);
        rss.push(field(&line, "rss_kib"));
        thr.push(field(&line, "threads"));
    }
    println!("## dlopen + nvmlInit_v2 in a fresh process ({loads} processes)");
    println!("| | median | p90 | min |");
    println!("|---|---:|---:|---:|");
    for (label, v) in [("dlopen (ms)", &dl), ("nvmlInit_v2 (ms)", &ini), ("dlopen + init (ms)", &total)] {
        println!("| {label} | {:.3} | {:.3} | {:.3} |", median(v.clone()), percentile(v.clone(), 0.9), percentile(v.clone(), 0.0));
    }
    let load_ms = median(total.clone());
    println!("goal ≤{GOAL_LOAD_MS} ms: {} (median {load_ms:.3} ms)", verdict(load_ms <= GOAL_LOAD_MS));
    let rss_kib = median(rss.clone()) as i64;
    let max_threads = thr.iter().copied().fold(f64::MIN, f64::max) as i64;
    println!();
    println!("## Memory and threads added by dlopen + init");
    println!("RSS added: median {rss_kib} KiB, max {} KiB", percentile(rss.clone(), 1.0) as i64);
    println!("goal ≤{GOAL_RSS_KIB} KiB: {}", verdict(rss_kib <= GOAL_RSS_KIB));
    println!("threads added: max {max_threads}; goal 0: {}", verdict(max_threads == 0));

    if let Some(smi) = std::env::var_os("NVIDIA_SMI") {
        println!();
        smi_runs(&PathBuf::from(smi));
    }
}

/// `nvidia-smi -q` on 8 GPUs with the fake library, wall time per run.
fn smi_runs(smi: &std::path::Path) {
    let dir = lib_path().parent().unwrap().join("fakegpu-lib");
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join("libnvidia-ml.so.1");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(lib_path(), &link).unwrap();
    let runs: usize = std::env::var("BENCH_SMI_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    // NVIDIA's nvidia-smi writes `-q` in ~35,000 write() calls: into a pipe or a file those
    // cost more than the whole NVML side, so the warm-up run is checked through a file and the
    // timed runs write to /dev/null.
    let run = |stdout: std::process::Stdio| {
        let t0 = Instant::now();
        let status = Command::new(smi)
            .arg("-q")
            .env("LD_LIBRARY_PATH", &dir)
            .env("FAKEGPU_PROFILE", "h100")
            .env("FAKEGPU_GPUS", "8")
            .env_remove("FAKEGPU_CONFIG")
            .stdout(stdout)
            .status()
            .expect("run nvidia-smi");
        assert!(status.success(), "nvidia-smi -q: {status}");
        t0.elapsed()
    };
    let out_path = dir.join("nvidia-smi-q.txt");
    run(std::fs::File::create(&out_path).unwrap().into());
    let text = std::fs::read_to_string(&out_path).unwrap_or_default();
    assert!(text.contains("Attached GPUs                             : 8"), "nvidia-smi -q printed:\n{text}");
    let times: Vec<Duration> = (0..runs).map(|_| run(std::fs::File::create("/dev/null").unwrap().into())).collect();
    let ms: Vec<f64> = times.iter().map(|d: &Duration| d.as_secs_f64() * 1e3).collect();
    println!("## nvidia-smi -q on 8 GPUs, output to /dev/null ({runs} runs after one checked warm-up; {})", smi.display());
    println!(
        "wall time: median {:.1} ms, p90 {:.1} ms, min {:.1} ms",
        median(ms.clone()),
        percentile(ms.clone(), 0.9),
        percentile(ms, 0.0)
    );
}
