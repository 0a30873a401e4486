//! `fakegpu sysfs`: writes the sysfs files a node's GPUs would have (PCI devices and the DMI
//! product name, `fakegpu_model::sysfs`) into a directory, for tools that read the PCI bus
//! beside NVML. The caller bind-mounts `DIR/bus/pci/devices` over `/sys/bus/pci/devices` in
//! a private mount namespace; nothing here touches the host's /sys.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use fakegpu_model::sysfs;

use crate::show::NodeArgs;

#[derive(Args)]
pub struct SysfsArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// Directory to write into (created; must be empty if it exists).
    #[arg(long)]
    out: PathBuf,
}

pub fn sysfs(args: &SysfsArgs) -> Result<i32> {
    let node = args.node.resolve()?;
    if args.out.exists() && std::fs::read_dir(&args.out).with_context(|| args.out.display().to_string())?.next().is_some() {
        bail!("--out {}: not empty (the tree is written whole, never merged)", args.out.display());
    }
    let devices = args.out.join("bus/pci/devices");
    for f in sysfs::pci_devices(&node) {
        let path = devices.join(&f.path);
        std::fs::create_dir_all(path.parent().expect("a file under a device directory"))?;
        std::fs::write(&path, &f.contents).with_context(|| path.display().to_string())?;
    }
    let dmi = args.out.join("class/dmi/id");
    std::fs::create_dir_all(&dmi)?;
    std::fs::write(dmi.join("product_name"), format!("{}\n", sysfs::MACHINE_PRODUCT_NAME))?;
    println!("{}", devices.display());
    Ok(0)
}
