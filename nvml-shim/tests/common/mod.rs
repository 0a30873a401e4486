//! Child-process harness shared by the integration tests.
//!
//! The library resolves its node once per process from the environment and keeps a
//! process-wide init count, so every case that depends on either runs in a fresh child:
//! the test binary re-executes itself, running only its `child` test, with
//! `FAKEGPU_TEST_CASE` naming the case and a clean `FAKEGPU_*` environment.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{Command, Output};

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
    let dir = base.join(format!("nvml-shim-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// The workspace root (tests run with the package directory as cwd).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}
