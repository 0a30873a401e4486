//! Finding the fake NVML and CUDA libraries and presenting them under the names clients load.

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

/// The fake CUDA driver: `FAKEGPU_CUDA_LIBRARY`, else beside the NVML library (the build and
/// install layouts keep them together).
pub fn find_cuda_library(nvml: &Path) -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("FAKEGPU_CUDA_LIBRARY") {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("FAKEGPU_CUDA_LIBRARY={} is not a file", path.display());
        }
        return Ok(path);
    }
    let dir = nvml.parent().unwrap_or(Path::new("."));
    [dir.join("libcuda.so"), dir.join("libcuda.so.1")].into_iter().find(|p| p.is_file()).with_context(|| {
        format!(
            "the fake CUDA library was not found beside {} (build it with `cargo build -p cuda-shim`, or set FAKEGPU_CUDA_LIBRARY)",
            nvml.display()
        )
    })
}

/// A private directory where the libraries are reachable under the names clients dlopen:
/// `libnvidia-ml.so.1`, `libnvidia-ml.so`, `libcuda.so.1`, `libcuda.so` and
/// `libcuda.so.<driver version>`.
pub fn lib_dir() -> Result<PathBuf> {
    let library = find_library()?.canonicalize().context("resolving the library path")?;
    let cuda = find_cuda_library(&library)?.canonicalize().context("resolving the CUDA library path")?;
    let key = fakegpu_model::identity::stable_hash(&[&library.to_string_lossy(), &cuda.to_string_lossy()]);
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    let dir = std::env::temp_dir().join(format!("fakegpu-{uid}")).join(format!("lib-{key:016x}"));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let versioned = format!("libcuda.so.{}", fakegpu_model::driver::REFERENCE_DRIVER_VERSION);
    let links = [
        ("libnvidia-ml.so.1", &library),
        ("libnvidia-ml.so", &library),
        ("libcuda.so.1", &cuda),
        ("libcuda.so", &cuda),
        (versioned.as_str(), &cuda),
    ];
    for (name, target) in links {
        let link = dir.join(name);
        if std::fs::read_link(&link).ok().as_deref() != Some(target.as_path()) {
            let staged = dir.join(format!(".{name}.{}", std::process::id()));
            let _ = std::fs::remove_file(&staged);
            std::os::unix::fs::symlink(target, &staged).with_context(|| format!("linking {}", staged.display()))?;
            std::fs::rename(&staged, &link).with_context(|| format!("placing {}", link.display()))?;
        }
    }
    Ok(dir)
}
