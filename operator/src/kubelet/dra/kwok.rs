//! The central publisher for KWOK nodes (no kubelet, so no node-local plugin): one process
//! publishes every KWOK node's pool. A node's GPUs come from its labels
//! `fake-gpu-operator.run.ai/profile` and `fake-gpu-operator.run.ai/gpu-count` (as
//! `fakegpu cluster up` sets them), so the UUIDs are the model's for that node. KWOK nodes
//! have no live state; their MIG layout is the one NVIDIA's mig-manager would apply for the
//! label `nvidia.com/mig.config` (`all-<profile>` on every GPU, or `all-disabled`). A resync
//! lists nodes and slices once and writes only the pools whose content changed.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use fakegpu_model::state::{GpuState, NodeState};
use fakegpu_model::{NodeSpec, SimulatedNode};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};
use kube::runtime::watcher;
use kube::Client;

use super::{attributes, publish};

pub const KWOK_ANNOTATION: &str = "kwok.x-k8s.io/node";
pub const PROFILE_LABEL: &str = "fake-gpu-operator.run.ai/profile";
pub const GPU_COUNT_LABEL: &str = "fake-gpu-operator.run.ai/gpu-count";
/// NVIDIA mig-manager's label naming a node's MIG configuration.
pub const MIG_CONFIG_LABEL: &str = "nvidia.com/mig.config";
/// The value of the slices' publisher label.
pub const PUBLISHER: &str = "kwok";

/// The simulated node behind a KWOK Node, if it is one with GPUs.
pub fn simulated(node: &Node, default_profile: Option<&str>) -> Option<SimulatedNode> {
    let meta = &node.metadata;
    if meta.annotations.as_ref().and_then(|a| a.get(KWOK_ANNOTATION)).map(String::as_str) != Some("fake") {
        return None;
    }
    let labels = meta.labels.clone().unwrap_or_default();
    let profile = labels.get(PROFILE_LABEL).map(String::as_str).or(default_profile)?;
    let gpus = labels.get(GPU_COUNT_LABEL).and_then(|c| c.parse().ok());
    match NodeSpec::builtin(profile, gpus, meta.name.as_deref()?) {
        Ok(spec) => Some(SimulatedNode::new(spec)),
        Err(e) => {
            tracing::warn!(node = ?meta.name, "skipping: {e}");
            None
        }
    }
}

/// The MIG layouts of a KWOK node: every GPU as `nvidia.com/mig.config` names (none without
/// the label; an unknown config or a board without MIG is logged and ignored).
pub fn mig_state(node: &Node, sim: &SimulatedNode) -> NodeState {
    let mut state = NodeState::default();
    let Some(config) = node.metadata.labels.as_ref().and_then(|l| l.get(MIG_CONFIG_LABEL)) else { return state };
    match fakegpu_model::mig::named_layout(&sim.spec.profile, config) {
        Ok(layout) => {
            for g in &sim.gpus {
                state.gpus.insert(g.index.to_string(), GpuState { mig: layout.clone(), ..Default::default() });
            }
        }
        Err(e) => tracing::warn!(node = %sim.spec.node_name, "ignoring {MIG_CONFIG_LABEL}={config}: {e}"),
    }
    state
}

/// What one resync did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncReport {
    pub nodes: usize,
    pub writes: usize,
    pub took: Duration,
}

/// One full resync.
pub async fn sync_once(client: &Client, default_profile: Option<&str>) -> Result<SyncReport, kube::Error> {
    let start = Instant::now();
    let nodes = Api::<Node>::all(client.clone()).list(&ListParams::default()).await?.items;
    let existing = publish::list_pools(client, None).await?;
    let mut wanted = Vec::new();
    let mut names = BTreeSet::new();
    for n in &nodes {
        let Some(name) = n.metadata.name.clone() else { continue };
        if let Some(sim) = simulated(n, default_profile) {
            names.insert(name.clone());
            wanted.push((name, attributes::pool_devices(&sim, &mig_state(n, &sim)), publish::node_owner(n)));
        }
    }
    let count = wanted.len();
    let mut writes = publish::sync_pools(client, wanted, &existing, PUBLISHER).await?;
    // Pools this publisher wrote for nodes that are gone or lost their GPUs.
    writes += publish::delete_slices(client, publish::orphaned(&existing, PUBLISHER, &|pool| names.contains(pool))).await?;
    Ok(SyncReport { nodes: count, writes, took: start.elapsed() })
}

/// Resyncs on every Node change (debounced) and every `resync`, until the process ends.
pub async fn run(client: Client, default_profile: Option<String>, resync: Duration) -> Result<(), kube::Error> {
    publish::ensure_device_class(&client).await?;
    let notify = std::sync::Arc::new(tokio::sync::Notify::new());
    let n2 = notify.clone();
    let nodes: Api<Node> = Api::all(client.clone());
    tokio::spawn(async move {
        let mut events = watcher(nodes, watcher::Config::default()).boxed();
        while let Some(e) = events.next().await {
            if let Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone) = e {
                n2.notify_one();
            }
        }
    });
    loop {
        match sync_once(&client, default_profile.as_deref()).await {
            Ok(r) => tracing::info!(nodes = r.nodes, writes = r.writes, ms = r.took.as_millis() as u64, "KWOK ResourceSlices synced"),
            Err(e) => tracing::warn!("KWOK ResourceSlice sync failed: {e}"),
        }
        tokio::select! {
            _ = notify.notified() => tokio::time::sleep(Duration::from_millis(500)).await,
            _ = tokio::time::sleep(resync) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kwok_node(labels: serde_json::Value) -> Node {
        serde_json::from_value(
            serde_json::json!({"metadata": {"name": "kw-1", "annotations": {KWOK_ANNOTATION: "fake"}, "labels": labels}}),
        )
        .unwrap()
    }

    #[test]
    fn mig_config_label_partitions_every_gpu() {
        let n = kwok_node(serde_json::json!({PROFILE_LABEL: "a100-80gb", GPU_COUNT_LABEL: "2", MIG_CONFIG_LABEL: "all-2g.20gb"}));
        let sim = simulated(&n, None).unwrap();
        let devices = attributes::pool_devices(&sim, &mig_state(&n, &sim));
        // 3 × 2g.20gb per GPU, no whole GPU.
        assert_eq!(devices.len(), 6);
        let profiles: Vec<_> = devices.iter().map(|d| d.attributes.as_ref().unwrap()["profile"].string.clone().unwrap()).collect();
        assert!(profiles.iter().all(|p| p == "2g.20gb"), "{profiles:?}");
        // The UUIDs are those the fake NVML would report for that layout on that node.
        let uuids: Vec<_> = devices.iter().map(|d| d.attributes.as_ref().unwrap()["uuid"].string.clone().unwrap()).collect();
        let want: Vec<_> = sim.mig_devices(&mig_state(&n, &sim)).into_iter().map(|m| m.uuid).collect();
        assert_eq!(uuids, want);
        // Unknown config or none: GPUs whole.
        let odd = kwok_node(serde_json::json!({PROFILE_LABEL: "a100-80gb", GPU_COUNT_LABEL: "2", MIG_CONFIG_LABEL: "all-balanced"}));
        assert_eq!(attributes::pool_devices(&sim, &mig_state(&odd, &sim)).len(), 2);
        let plain = kwok_node(serde_json::json!({PROFILE_LABEL: "a100-80gb", GPU_COUNT_LABEL: "2"}));
        assert_eq!(mig_state(&plain, &sim), NodeState::default());
    }
}
