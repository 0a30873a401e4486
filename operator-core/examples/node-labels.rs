//! Prints, as JSON, the labels the status-updater gives a node: the cluster index's view of a
//! node in a one-pool cluster, with the MIG layouts the MIG manager applied (the node
//! annotation `fake-gpu-operator.run.ai/mig-layout`). tests/gfd compares them with NVIDIA's
//! gpu-feature-discovery run over the fake NVML for the same node.
//!
//! node-labels --profile NAME --gpus N --mig-strategy none|single|mixed [--mig-layout JSON] [--real]

use std::collections::BTreeMap;

use fakegpu_operator_core::config::ClusterConfig;
use fakegpu_operator_core::index::{Index, IndexOptions, NodeInfo};
use fakegpu_operator_core::resolve::Profiles;

const POOL_KEY: &str = "run.ai/simulated-gpu-node-pool";

fn main() {
    match run() {
        Ok(text) => println!("{text}"),
        Err(e) => {
            eprintln!("node-labels: {e}");
            std::process::exit(2);
        }
    }
}

fn run() -> Result<String, String> {
    let mut args: BTreeMap<String, String> = BTreeMap::new();
    let mut real = false;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--real" => real = true,
            "--profile" | "--gpus" | "--mig-strategy" | "--mig-layout" | "--node" => {
                let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
                args.insert(flag[2..].to_string(), value);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let profile = args.get("profile").ok_or("--profile is required")?;
    let gpus: u32 = args.get("gpus").ok_or("--gpus is required")?.parse().map_err(|e| format!("--gpus: {e}"))?;
    let strategy = args.get("mig-strategy").map(String::as_str).unwrap_or("none");
    let yaml = format!("migStrategy: {strategy}\nnodePools:\n  p:\n    gpu: {{profile: {profile}, overrides: {{device_count: {gpus}}}}}\n");
    let cfg = ClusterConfig::parse(&yaml).map_err(|e| e.to_string())?;
    let mut index = Index::new(cfg, Profiles::new(), IndexOptions::default()).map_err(|e| e.to_string())?;
    let name = args.get("node").cloned().unwrap_or_else(|| "node-labels".to_string());
    index.upsert_node(NodeInfo {
        name: name.clone(),
        labels: BTreeMap::from([(POOL_KEY.to_string(), "p".to_string())]),
        kwok_annotation: (!real).then(|| "fake".to_string()),
        version: None,
        mig_layout: args.get("mig-layout").cloned(),
    });
    if let Some(e) = index.node_error(&name) {
        return Err(e.to_string());
    }
    let view = index.view(&name).ok_or("the node is in no pool")?;
    serde_json::to_string_pretty(&view.labels).map_err(|e| e.to_string())
}
