//! `fakegpu profiles` and `fakegpu show`: what the model simulates, without loading NVML.

use anyhow::Result;
use clap::Args;
use fakegpu_model::config::{ENV_CONFIG, ENV_GPUS, ENV_NODE, ENV_PROFILE};
use fakegpu_model::telemetry::{readings, Load, MIB};
use fakegpu_model::{builtin_profiles, config, SimulatedNode};
use serde_json::json;

#[derive(Args)]
pub struct ProfilesArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Selects a node the way the library does: flags first, then the FAKEGPU_* environment.
#[derive(Args, Clone, Default)]
pub struct NodeArgs {
    /// Built-in profile name or path to a profile JSON.
    #[arg(long)]
    pub profile: Option<String>,
    /// Number of GPUs (1..=256).
    #[arg(long)]
    pub gpus: Option<u32>,
    /// Node name the identities derive from (default: the host name).
    #[arg(long)]
    pub node: Option<String>,
    /// Node config file (as the operator writes it).
    #[arg(long)]
    pub config: Option<String>,
}

impl NodeArgs {
    /// The variables the library would see: each flag given replaces its variable.
    pub fn env_overrides(&self) -> Vec<(&'static str, String)> {
        let mut vars = Vec::new();
        if let Some(p) = &self.profile {
            vars.push((ENV_PROFILE, p.clone()));
        }
        if let Some(g) = self.gpus {
            vars.push((ENV_GPUS, g.to_string()));
        }
        if let Some(n) = &self.node {
            vars.push((ENV_NODE, n.clone()));
        }
        if let Some(c) = &self.config {
            vars.push((ENV_CONFIG, c.clone()));
        }
        vars
    }

    pub fn resolve(&self) -> Result<SimulatedNode> {
        let overrides = self.env_overrides();
        let env = config::process_env()?;
        let lookup = |key: &str| overrides.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone()).or_else(|| env(key));
        Ok(SimulatedNode::new(config::resolve(&lookup, &host_name())?))
    }
}

pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "localhost".into())
}

#[derive(Args)]
pub struct ShowArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn profiles(args: &ProfilesArgs) -> Result<i32> {
    let profiles = builtin_profiles()?;
    if args.json {
        let list: Vec<_> = profiles
            .iter()
            .map(|p| {
                json!({"name": p.name, "product_name": p.product_name, "memory_mib": p.memory.total_mib,
                       "default_gpu_count": p.default_gpu_count, "architecture": p.architecture.display(), "mig_capable": p.mig_capable})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(0);
    }
    println!("{:<12} {:<32} {:>11} {:>5}", "NAME", "PRODUCT", "MEMORY", "GPUS");
    for p in profiles {
        println!("{:<12} {:<32} {:>7} MiB {:>5}", p.name, p.product_name, p.memory.total_mib, p.default_gpu_count);
    }
    Ok(0)
}

pub fn show(args: &ShowArgs) -> Result<i32> {
    let node = args.node.resolve()?;
    let spec = &node.spec;
    let idle = readings(&spec.profile, &Load::default());
    if args.json {
        let gpus: Vec<_> = node
            .gpus
            .iter()
            .map(|g| {
                json!({"index": g.index, "uuid": g.uuid, "serial": g.serial, "pci_bus_id": g.pci.bus_id(),
                       "minor_number": g.minor_number, "board_id": g.board_id, "module_id": g.module_id,
                       "name": spec.profile.product_name, "memory_total_mib": spec.profile.memory.total_mib})
            })
            .collect();
        // The built-in mig-parted configuration names (`fakegpu state mig --config`); only
        // `all-disabled` on a board without MIG.
        let builtin = fakegpu_model::mig_parted::MigConfigs::builtin(&spec.profile);
        let mig_configs: Vec<&str> = builtin.names().collect();
        let doc = json!({"node": spec.node_name, "profile": spec.profile.name, "driver_version": spec.driver_version,
                         "cuda_driver_version": spec.cuda_driver_version, "mig_capable": spec.profile.mig_capable,
                         "mig_configs": mig_configs, "gpus": gpus});
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(0);
    }
    println!(
        "node {}: {} x {} (profile {}), driver {}",
        spec.node_name, spec.gpu_count, spec.profile.product_name, spec.profile.name, spec.driver_version
    );
    println!("{:>3}  {:<40}  {:<13}  {:<16}  {:>10}", "GPU", "UUID", "SERIAL", "PCI BUS ID", "MEMORY");
    for g in &node.gpus {
        println!("{:>3}  {:<40}  {:<13}  {:<16}  {:>6} MiB", g.index, g.uuid, g.serial, g.pci.bus_id(), idle.memory.total / MIB);
    }
    Ok(0)
}
