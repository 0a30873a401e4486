//! Where things live: the run directory (state, PKI, logs, etcd data) and the binary cache.

use std::path::PathBuf;

/// `$FAKEGPU_RUN_DIR`, else `$HOME/.local/state/fake-gpu-operator/cluster`.
pub fn run_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("FAKEGPU_RUN_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    home().join(".local/state/fake-gpu-operator/cluster")
}

/// `$FAKEGPU_CACHE`, else `$HOME/.cache/fake-gpu-operator`; build.sh uses the same rule.
pub fn cache_root() -> PathBuf {
    if let Some(d) = std::env::var_os("FAKEGPU_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    home().join(".cache/fake-gpu-operator")
}

/// The kubeconfig that `up` writes inside a run directory.
pub fn kubeconfig_in(run_dir: &std::path::Path) -> PathBuf {
    run_dir.join("kubeconfig")
}

fn home() -> PathBuf {
    std::env::var_os("HOME").filter(|h| !h.is_empty()).map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/tmp"))
}
