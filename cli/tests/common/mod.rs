//! What the CLI's integration tests share (and operator/tests/nvml_mock_agent.rs, by path): the
//! native artifacts they run.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The target directory holding the fake NVML, the fake libcuda and our nvidia-smi, built once
/// per test binary (a dependency would not build the cdylibs).
pub fn built() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-q", "-p", "nvml-shim", "-p", "cuda-shim", "-p", "nvidia-smi"])
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building the libraries and nvidia-smi failed");
        std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
            .join("debug")
    })
}
