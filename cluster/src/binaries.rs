//! Finding (or building) the control-plane binaries and the versions they are pinned to.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{ClusterError, Result};

/// The binaries `up` runs plus the client tools `cluster env` puts on PATH.
pub const BINARIES: [&str; 7] = ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "kubectl", "helm"];

/// tests/cluster/versions.env as compiled in; build.sh copies the same file into each cache entry,
/// which is how a cache entry built from other versions is told apart.
pub const VERSIONS_ENV: &str = include_str!("../../tests/cluster/versions.env");

/// Looks up `KEY=value` in versions.env (e.g. `K8S_VERSION`).
pub fn pinned_version(key: &str) -> Option<&'static str> {
    VERSIONS_ENV.lines().find_map(|l| {
        let (k, v) = l.trim().split_once('=')?;
        (k == key).then_some(v.trim())
    })
}

fn build_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/cluster/build.sh")
}

fn complete(dir: &Path) -> bool {
    BINARIES.iter().all(|b| dir.join(b).is_file())
}

/// A cache entry built from the pinned versions, newest first; never builds.
pub fn find_cached() -> Option<PathBuf> {
    let entries = std::fs::read_dir(crate::paths::cache_root()).ok()?;
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("k8s-"))
        .filter(|e| std::fs::read_to_string(e.path().join("versions.env")).is_ok_and(|v| v == VERSIONS_ENV))
        .map(|e| e.path().join("bin"))
        .filter(|bin| complete(bin))
        .filter_map(|bin| Some((bin.metadata().ok()?.modified().ok()?, bin)))
        .collect();
    found.sort();
    found.pop().map(|(_, p)| p)
}

/// Binary directory for `up`: an explicit directory, else build.sh (a no-op when its cache entry
/// exists; a cold build takes 25-40 min on 2 cores), else the newest matching cache entry.
pub fn locate_or_build(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(dir) = explicit {
        return if complete(dir) {
            Ok(dir.to_path_buf())
        } else {
            Err(ClusterError::BinariesMissing(format!("{} lacks one of {}", dir.display(), BINARIES.join(", "))))
        };
    }
    let script = build_script();
    let have_go = Command::new("go").arg("version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    if script.is_file() && have_go {
        if find_cached().is_none() {
            eprintln!("building control-plane binaries with {} (cold: 25-40 min on 2 cores)", script.display());
        }
        let out = Command::new("bash")
            .arg(&script)
            .stderr(Stdio::inherit())
            .output()
            .map_err(ClusterError::io(format!("running {}", script.display())))?;
        if !out.status.success() {
            return Err(ClusterError::BuildFailed { code: out.status.code() });
        }
        let dir = String::from_utf8_lossy(&out.stdout);
        let dir = PathBuf::from(dir.lines().last().unwrap_or("").trim());
        if complete(&dir) {
            return Ok(dir);
        }
    }
    find_cached().ok_or_else(|| {
        ClusterError::BinariesMissing(format!(
            "no build for the pinned versions under {}; run tests/cluster/build.sh (needs Go) \
             or pass --bin-dir / FAKEGPU_K8S_BIN_DIR",
            crate::paths::cache_root().display()
        ))
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn pinned_versions_are_parsed_from_versions_env() {
        assert!(super::pinned_version("K8S_VERSION").is_some_and(|v| v.starts_with("v1.")));
        assert!(super::pinned_version("HELM_VERSION").is_some_and(|v| v.starts_with("v3.")));
        assert_eq!(super::pinned_version("NO_SUCH_KEY"), None);
    }
}
