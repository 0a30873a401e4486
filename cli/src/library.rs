//! Finding the fake NVML library and presenting it under the names clients load.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The built library: `FAKEGPU_LIBRARY`, else beside this executable (a cargo target
/// directory) or in the install layout `../lib/fake-gpu-operator/`.
pub fn find_library() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("FAKEGPU_LIBRARY") {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("FAKEGPU_LIBRARY={} is not a file", path.display());
        }
        return Ok(path);
    }
    let exe = std::env::current_exe().context("cannot locate the fakegpu executable")?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    let candidates = [
        dir.join("libnvidia_ml.so"),
        dir.join("../libnvidia_ml.so"),
        dir.join("../lib/fake-gpu-operator/libnvidia-ml.so.1"),
        dir.join("../lib/libnvidia-ml.so.1"),
    ];
    candidates.iter().find(|p| p.is_file()).cloned().with_context(|| {
        format!(
            "the fake NVML library was not found beside {} (build it with `cargo build -p nvml-shim`, or set FAKEGPU_LIBRARY)",
            exe.display()
        )
    })
}

/// A private directory where the library is reachable as `libnvidia-ml.so.1` and
/// `libnvidia-ml.so`, the two names NVML clients dlopen.
pub fn lib_dir() -> Result<PathBuf> {
    let library = find_library()?.canonicalize().context("resolving the library path")?;
    let key = fakegpu_model::identity::stable_hash(&[&library.to_string_lossy()]);
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    let dir = std::env::temp_dir().join(format!("fakegpu-{uid}")).join(format!("lib-{key:016x}"));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for name in ["libnvidia-ml.so.1", "libnvidia-ml.so"] {
        let link = dir.join(name);
        if std::fs::read_link(&link).ok().as_deref() != Some(library.as_path()) {
            let staged = dir.join(format!(".{name}.{}", std::process::id()));
            let _ = std::fs::remove_file(&staged);
            std::os::unix::fs::symlink(&library, &staged).with_context(|| format!("linking {}", staged.display()))?;
            std::fs::rename(&staged, &link).with_context(|| format!("placing {}", link.display()))?;
        }
    }
    Ok(dir)
}
