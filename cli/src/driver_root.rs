//! `fakegpu driver-root install|remove`: the command line of [`fakegpu_driver_root`], which
//! lays the mock backend's driver root and takes away exactly what it laid. Here: where the
//! built files are found by default, and the summary.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use fakegpu_driver_root::{Install, Majors, Sources};

#[derive(Subcommand)]
pub enum DriverRootCmd {
    /// Lay a driver root: /proc/driver/nvidia files, device nodes, the fake libraries under
    /// their driver names, nvidia-smi and the node config the libraries find beside themselves.
    Install(InstallArgs),
    /// Remove everything `install` laid in a root (and nothing else).
    Remove(RemoveArgs),
}

#[derive(Args)]
pub struct InstallArgs {
    /// The driver root (upstream's path is /var/lib/nvml-mock/driver).
    #[arg(long)]
    root: PathBuf,
    /// The node config (profile, GPUs, node name; docs/nvml-library.md).
    #[arg(long)]
    config: PathBuf,
    /// A directory holding the built libnvidia_ml.so, libcuda.so and nvidia-smi (default:
    /// where `fakegpu lib-dir` finds the libraries; nvidia-smi beside this executable).
    #[arg(long)]
    lib_dir: Option<PathBuf>,
    /// Lay no device nodes under dev/ (creating them needs root).
    #[arg(long)]
    no_device_nodes: bool,
    /// Also write the CDI spec for the root to this file (removed with the root).
    #[arg(long)]
    cdi_spec: Option<PathBuf>,
    /// Majors for nvidia-uvm and nvidia-caps (dynamic on a real host).
    #[arg(long, default_value_t = Majors::default().uvm)]
    uvm_major: u32,
    #[arg(long, default_value_t = Majors::default().caps)]
    caps_major: u32,
}

#[derive(Args)]
pub struct RemoveArgs {
    #[arg(long)]
    root: PathBuf,
}

pub fn run(cmd: &DriverRootCmd) -> Result<i32> {
    match cmd {
        DriverRootCmd::Install(args) => install(args).map(|_| 0),
        DriverRootCmd::Remove(args) => remove(&args.root).map(|_| 0),
    }
}

/// The built files: from `--lib-dir`, else the libraries where `fakegpu lib-dir` finds them and
/// nvidia-smi beside this executable or them.
fn sources(lib_dir: Option<&Path>) -> Result<Sources> {
    if let Some(dir) = lib_dir {
        return Ok(Sources::from_dir(dir, None)?);
    }
    let nvml = crate::library::find_library()?;
    let cuda = crate::library::find_cuda_library(&nvml)?;
    let exe = std::env::current_exe().context("cannot locate the fakegpu executable")?;
    let dirs: Vec<PathBuf> = [exe.parent(), nvml.parent()].into_iter().flatten().map(Path::to_path_buf).collect();
    let smi = dirs.iter().map(|d| d.join("nvidia-smi")).find(|p| p.is_file()).with_context(|| {
        format!("our nvidia-smi was not found beside {} (build it with `cargo build -p nvidia-smi`, or pass --lib-dir)", exe.display())
    })?;
    Ok(Sources { nvml, cuda, smi })
}

pub fn install(args: &InstallArgs) -> Result<()> {
    let laid = fakegpu_driver_root::install(&Install {
        root: args.root.clone(),
        config: args.config.clone(),
        node: None,
        sources: sources(args.lib_dir.as_deref())?,
        device_nodes: !args.no_device_nodes,
        cdi_spec: args.cdi_spec.clone(),
        cdi_root: None,
        majors: Majors { uvm: args.uvm_major, caps: args.caps_major },
    })?;
    eprintln!(
        "fakegpu: driver root {} laid: {} entries, {} GPUs of {} on node {}",
        laid.root.display(),
        laid.entries,
        laid.gpus,
        laid.profile,
        laid.node
    );
    Ok(())
}

pub fn remove(root: &Path) -> Result<()> {
    for left in fakegpu_driver_root::remove(root)? {
        eprintln!("fakegpu: {} left in place: it holds what install did not lay", left.display());
    }
    Ok(())
}
