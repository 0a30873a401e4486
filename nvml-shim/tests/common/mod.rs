//! Child-process harness shared by the integration tests of both fake driver libraries
//! (cuda-shim's tests include this file by path: one copy of the harness, no test crate).
//!
//! A library resolves its node once per process from the environment and keeps process-wide
//! state, so every case that depends on either runs in a fresh child: the test binary
//! re-executes itself, running only its `child` test, with `FAKEGPU_TEST_CASE` naming the case
//! and a clean `FAKEGPU_*` environment. [`run_with_deadline`] also kills a child that hangs,
//! and [`Resources`] is what a leak check compares.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Names the case a re-executed test binary runs.
pub const CASE_VAR: &str = "FAKEGPU_TEST_CASE";

/// The case this process was started for, when it is a child.
pub fn current_case() -> Option<String> {
    std::env::var(CASE_VAR).ok()
}

/// What a child reported.
pub struct Child {
    pub case: String,
    pub output: Output,
}

impl Child {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    /// Panics with everything the child printed unless it passed.
    pub fn assert_ok(&self) -> &Child {
        assert!(
            self.output.status.success(),
            "child case `{}` failed ({})\n--- stdout\n{}\n--- stderr\n{}",
            self.case,
            self.output.status,
            self.stdout(),
            self.stderr()
        );
        self
    }

    /// The value of a `key=value` line the child printed on stdout.
    pub fn value(&self, key: &str) -> Option<String> {
        let prefix = format!("{key}=");
        self.stdout().lines().find_map(|l| l.strip_prefix(&prefix).map(str::to_string))
    }
}

/// Runs `case` in a fresh copy of this test binary with `env` as its only `FAKEGPU_*`
/// variables.
pub fn run_case<K: AsRef<OsStr>, V: AsRef<OsStr>>(case: &str, env: &[(K, V)]) -> Child {
    let exe = std::env::current_exe().expect("test binary path");
    let mut cmd = Command::new(exe);
    cmd.args(["child", "--exact", "--nocapture", "--test-threads=1", "-q"]);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("FAKEGPU_") {
            cmd.env_remove(key);
        }
    }
    cmd.env(CASE_VAR, case).env("RUST_BACKTRACE", "0");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let output = cmd.output().expect("spawn the test binary");
    Child { case: case.to_string(), output }
}

/// A scratch directory private to this process (removed by nobody: it lives in the
/// target directory's tmp, which cargo owns).
pub fn scratch_dir(tag: &str) -> PathBuf {
    let base = option_env!("CARGO_TARGET_TMPDIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!("{}-{tag}-{}", env!("CARGO_PKG_NAME"), std::process::id()));
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// The workspace root (tests run with the package directory as cwd).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// What a child did within its deadline (a hang is killed and reported, not waited for).
pub struct Run {
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
    /// Exited successfully before the deadline.
    pub ok: bool,
}

impl Run {
    /// The value of a `key=value` line the child printed on stdout.
    pub fn value(&self, key: &str) -> Option<String> {
        let prefix = format!("{key}=");
        self.stdout.lines().find_map(|l| l.strip_prefix(&prefix).map(str::to_string))
    }

    /// A numeric `key=value` line; panics with everything the child printed when missing.
    pub fn number(&self, key: &str) -> u64 {
        self.value(key).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("no number `{key}`: {}", self.describe()))
    }

    pub fn describe(&self) -> String {
        format!("ok={} after {:?}\n--- stdout\n{}\n--- stderr\n{}", self.ok, self.elapsed, self.stdout, self.stderr)
    }
}

/// Runs `case` as [`run_case`] does (with `RUST_BACKTRACE=1`, so that any panic text would
/// show), killing it at `deadline`.
pub fn run_with_deadline(case: &str, env: &[(&str, &OsStr)], deadline: Duration) -> Run {
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

pub fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo {}", path.display());
}

/// What a leak would grow: resident memory, open descriptors, mappings.
#[derive(Debug, Clone, Copy)]
pub struct Resources {
    pub rss: u64,
    pub fds: u64,
    pub maps: u64,
}

impl Resources {
    pub fn now() -> Resources {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
        let rss_pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
        let fds = std::fs::read_dir("/proc/self/fd").unwrap().count() as u64;
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap().lines().count() as u64;
        Resources { rss: rss_pages * page, fds, maps }
    }

    /// Prints `<tag>_rss=`, `<tag>_fds=`, `<tag>_maps=` lines for the parent to read.
    pub fn print(&self, tag: &str) {
        println!("{tag}_rss={}\n{tag}_fds={}\n{tag}_maps={}", self.rss, self.fds, self.maps);
    }
}

/// Runs `cycle` `warmup` times, then `cycles` times, printing [`Resources`] before and after
/// the measured cycles (`before_*`, `after_*`).
pub fn measure_cycles(warmup: usize, cycles: usize, mut cycle: impl FnMut()) {
    for _ in 0..warmup {
        cycle();
    }
    let before = Resources::now();
    for _ in 0..cycles {
        cycle();
    }
    Resources::now().print("after");
    before.print("before");
}

/// Checks what [`measure_cycles`] printed: RSS growth at most `max_rss_growth` bytes, and
/// descriptors and mappings unchanged. Returns the RSS growth.
pub fn assert_no_leak(r: &Run, max_rss_growth: u64) -> u64 {
    assert!(r.ok, "{}", r.describe());
    let growth = r.number("after_rss").saturating_sub(r.number("before_rss"));
    assert!(growth <= max_rss_growth, "RSS grew by {growth} bytes: {}", r.describe());
    assert_eq!(r.number("after_fds"), r.number("before_fds"), "descriptors: {}", r.describe());
    assert_eq!(r.number("after_maps"), r.number("before_maps"), "mappings: {}", r.describe());
    growth
}
