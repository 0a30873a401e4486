//! The central publisher for KWOK nodes (no kubelet, so no node-local plugin): one process
//! publishes every KWOK node's pool. A node's GPUs are those the status-updater resolved for
//! it from its pool — the node config text (`fakegpu-config.json`) of its per-node topology
//! ConfigMap, resolved as the fake NVML resolves it — so the UUIDs are the model's for that
//! node and agree with the topology, the metrics and the capacity. A KWOK node without such a
//! ConfigMap falls back to its labels `fake-gpu-operator.run.ai/profile` and
//! `fake-gpu-operator.run.ai/gpu-count` (or `--default-profile`). KWOK nodes have no live
//! state; their MIG layouts are those the MIG manager applied (the node annotation
//! `fake-gpu-operator.run.ai/mig-layout`, written with `nvidia.com/mig.config.state`), not the
//! raw `nvidia.com/mig.config` label: a refused or not yet applied request changes nothing
//! here, as on a real node. A resync lists
//! nodes, topology ConfigMaps and slices once and writes only the pools whose content changed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use fakegpu_model::state::{GpuState, NodeState};
use fakegpu_model::{NodeSpec, SimulatedNode};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::api::{Api, ListParams};
use kube::runtime::watcher;
use kube::Client;

use super::{attributes, publish};
use fakegpu_operator_core::mig_manager::{self, MIG_LAYOUT_ANNOTATION};
use fakegpu_operator_core::resource_api::DraApi;
use fakegpu_operator_core::topology::{NODE_NAME_LABEL, NODE_TOPOLOGY_LABEL};

pub const KWOK_ANNOTATION: &str = "kwok.x-k8s.io/node";
pub const PROFILE_LABEL: &str = "fake-gpu-operator.run.ai/profile";
pub const GPU_COUNT_LABEL: &str = "fake-gpu-operator.run.ai/gpu-count";
/// The value of the slices' publisher label.
pub const PUBLISHER: &str = "kwok";

/// Where a KWOK node's GPUs come from.
#[derive(Debug, Clone, Default)]
pub struct Source {
    /// Namespace of the per-node topology ConfigMaps (the status-updater's); None: labels only.
    pub namespace: Option<String>,
    /// Profile of KWOK nodes with neither a topology ConfigMap nor a profile label (None: skipped).
    pub default_profile: Option<String>,
}

/// Whether a Node is a KWOK node (upstream's test: annotation `kwok.x-k8s.io/node=fake`).
pub fn is_kwok(node: &Node) -> bool {
    node.metadata.annotations.as_ref().and_then(|a| a.get(KWOK_ANNOTATION)).map(String::as_str) == Some("fake")
}

/// The simulated node behind a KWOK Node, if it is one with GPUs: from `topology` (the data of
/// its per-node topology ConfigMap) when there is one, else from its labels.
pub fn simulated(node: &Node, topology: Option<&BTreeMap<String, String>>, default_profile: Option<&str>) -> Option<SimulatedNode> {
    if !is_kwok(node) {
        return None;
    }
    let name = node.metadata.name.as_deref()?;
    if let Some(data) = topology {
        return match from_topology(name, data) {
            Ok(sim) => sim,
            Err(e) => {
                tracing::warn!(node = name, "skipping: {e}");
                None
            }
        };
    }
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let profile = labels.get(PROFILE_LABEL).map(String::as_str).or(default_profile)?;
    let gpus = labels.get(GPU_COUNT_LABEL).and_then(|c| c.parse().ok());
    match NodeSpec::builtin(profile, gpus, name) {
        Ok(spec) => Some(SimulatedNode::new(spec)),
        Err(e) => {
            tracing::warn!(node = name, "skipping: {e}");
            None
        }
    }
}

/// The node a per-node topology ConfigMap's data describes; `Ok(None)` for a node of a pool
/// without GPUs.
pub fn from_topology(node: &str, data: &BTreeMap<String, String>) -> Result<Option<SimulatedNode>, String> {
    fakegpu_operator_core::node_files::simulated_from_configmap(node, data)
}

/// The MIG layouts of a KWOK node: those the MIG manager applied (GPUs whole without them; an
/// unreadable annotation or a layout the board cannot hold is logged and ignored).
pub fn mig_state(node: &Node, sim: &SimulatedNode) -> NodeState {
    let mut state = NodeState::default();
    let Some(text) = node.metadata.annotations.as_ref().and_then(|a| a.get(MIG_LAYOUT_ANNOTATION)) else { return state };
    let applied = match mig_manager::parse_applied(text) {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(node = %sim.spec.node_name, "ignoring: {e}");
            return state;
        }
    };
    for g in &sim.gpus {
        let Some(layout) = applied.get(&g.index) else { continue };
        if let Err(e) = fakegpu_model::mig::validate_layout(&sim.spec.profile, layout) {
            tracing::warn!(node = %sim.spec.node_name, gpu = g.index, "ignoring applied MIG layout: {e}");
            continue;
        }
        state.gpus.insert(g.index.to_string(), GpuState { mig: layout.clone(), ..Default::default() });
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

/// The data of the per-node topology ConfigMaps in `namespace`, by node.
async fn topologies(client: &Client, namespace: Option<&str>) -> Result<BTreeMap<String, BTreeMap<String, String>>, kube::Error> {
    let Some(ns) = namespace else { return Ok(BTreeMap::new()) };
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let list = cms.list(&ListParams::default().labels(&format!("{NODE_TOPOLOGY_LABEL}=true"))).await?;
    Ok(list
        .items
        .into_iter()
        .filter_map(|cm| Some((cm.metadata.labels.as_ref()?.get(NODE_NAME_LABEL)?.clone(), cm.data.unwrap_or_default())))
        .collect())
}

/// One full resync.
pub async fn sync_once(client: &DraApi, source: &Source) -> Result<SyncReport, kube::Error> {
    let start = Instant::now();
    let nodes = Api::<Node>::all(client.client().clone()).list(&ListParams::default()).await?.items;
    let topologies = topologies(client.client(), source.namespace.as_deref()).await?;
    let existing = publish::list_pools(client, None).await?;
    let mut wanted = Vec::new();
    let mut names = BTreeSet::new();
    for n in &nodes {
        let Some(name) = n.metadata.name.clone() else { continue };
        if let Some(sim) = simulated(n, topologies.get(&name), source.default_profile.as_deref()) {
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

/// Resyncs on every Node or topology ConfigMap change (debounced) and every `resync`, until
/// the process ends.
pub async fn run(client: Client, source: Source, resync: Duration) -> Result<(), kube::Error> {
    let dra = DraApi::new(client.clone()).await?;
    publish::ensure_device_class(&dra).await?;
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
    if let Some(ns) = &source.namespace {
        let n3 = notify.clone();
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
        tokio::spawn(async move {
            let cfg = watcher::Config::default().labels(&format!("{NODE_TOPOLOGY_LABEL}=true"));
            let mut events = watcher(cms, cfg).boxed();
            while let Some(e) = events.next().await {
                if let Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone) = e {
                    n3.notify_one();
                }
            }
        });
    }
    loop {
        match sync_once(&dra, &source).await {
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
    use fakegpu_operator_core::mig_manager::MIG_CONFIG_LABEL;
    use fakegpu_operator_core::node_files::CONFIG_KEY;
    use fakegpu_operator_core::topology::{NodeTopology, TOPOLOGY_KEY};

    fn kwok_node(labels: serde_json::Value) -> Node {
        serde_json::from_value(
            serde_json::json!({"metadata": {"name": "kw-1", "annotations": {KWOK_ANNOTATION: "fake"}, "labels": labels}}),
        )
        .unwrap()
    }

    /// A KWOK node with `config` applied by the MIG manager to each of its GPUs.
    fn applied_node(labels: serde_json::Value, sim: &SimulatedNode, config: &str) -> Node {
        let mut n = kwok_node(labels);
        let labels = BTreeMap::from([(MIG_CONFIG_LABEL.to_string(), config.to_string())]);
        let out = mig_manager::decide(
            mig_manager::NodeInput {
                labels: &labels,
                annotations: &BTreeMap::new(),
                node: sim,
                holders: &BTreeMap::new(),
                applied: &Ok(Default::default()),
            },
            None,
            mig_manager::Options::default(),
        );
        let w = mig_manager::write(&labels, &BTreeMap::new(), &out);
        if let Some(Some(v)) = w.annotations.get(MIG_LAYOUT_ANNOTATION) {
            n.metadata.annotations.get_or_insert_with(Default::default).insert(MIG_LAYOUT_ANNOTATION.into(), v.clone());
        }
        n
    }

    /// A KWOK node as upstream's manifest makes it (pool label, `type: kwok`, the KWOK
    /// annotation, no profile label) gets the GPUs the status-updater resolved for its pool.
    #[test]
    fn pool_node_gets_its_gpus_from_its_topology_configmap() {
        let cfg = fakegpu_operator_core::config::ClusterConfig::parse(
            "nodePools:\n  default:\n    gpuProduct: NVIDIA-A100-SXM4-40GB\n    gpuCount: 2\n    gpuMemory: 40960\n",
        )
        .unwrap();
        let pools = fakegpu_operator_core::resolve::resolve_all(&cfg, &Default::default()).unwrap();
        let r = &pools["default"];
        let node_name = "kwok-gpu-node-1";
        let uuids = fakegpu_operator_core::index::gpu_uuids(node_name, r);
        assert_eq!(uuids.len(), 2);
        let topology = NodeTopology {
            gpus: uuids.iter().map(|id| fakegpu_operator_core::topology::GpuDetails { id: id.clone(), ..Default::default() }).collect(),
            ..Default::default()
        };
        let mut data = BTreeMap::from([
            (TOPOLOGY_KEY.to_string(), topology.to_yaml()),
            (
                CONFIG_KEY.to_string(),
                fakegpu_operator_core::node_files::config_text(&fakegpu_operator_core::index::config_file(node_name, r)),
            ),
        ]);
        let node: Node = serde_json::from_value(serde_json::json!({"metadata": {"name": node_name,
            "annotations": {KWOK_ANNOTATION: "fake"},
            "labels": {"run.ai/simulated-gpu-node-pool": "default", "type": "kwok"}}}))
        .unwrap();
        assert!(simulated(&node, None, None).is_none(), "neither a ConfigMap nor a profile label");
        let sim = simulated(&node, Some(&data), None).unwrap();
        assert_eq!(sim.gpus.iter().map(|g| g.uuid.clone()).collect::<Vec<_>>(), uuids);
        assert_eq!(sim.spec.profile.product_name, "NVIDIA A100-SXM4-40GB");
        let devices = attributes::pool_devices(&sim, &NodeState::default());
        assert_eq!(devices.len(), 2);
        // Not a KWOK node: the node-local plugin publishes it, not this one.
        let mut real = node.clone();
        real.metadata.annotations = None;
        assert!(simulated(&real, Some(&data), None).is_none());
        // Broken config text: skipped (logged), nothing invented.
        data.insert(CONFIG_KEY.to_string(), "{\"gpus\": \"two\"}".into());
        assert!(from_topology(node_name, &data).unwrap_err().contains(CONFIG_KEY));
        assert!(simulated(&node, Some(&data), None).is_none());
        // A pool without GPUs: no slice.
        let empty = BTreeMap::from([(TOPOLOGY_KEY.to_string(), NodeTopology::default().to_yaml())]);
        assert!(from_topology(node_name, &empty).unwrap().is_none());
    }

    #[test]
    fn applied_layouts_partition_the_gpus_not_the_label() {
        let labels = serde_json::json!({PROFILE_LABEL: "a100-80gb", GPU_COUNT_LABEL: "2", MIG_CONFIG_LABEL: "all-2g.20gb"});
        // The label alone (not applied yet, or refused): GPUs whole.
        let requested = kwok_node(labels.clone());
        let sim = simulated(&requested, None, None).unwrap();
        assert_eq!(mig_state(&requested, &sim), NodeState::default());
        assert_eq!(attributes::pool_devices(&sim, &mig_state(&requested, &sim)).len(), 2);
        let n = applied_node(labels.clone(), &sim, "all-2g.20gb");
        let devices = attributes::pool_devices(&sim, &mig_state(&n, &sim));
        // 3 × 2g.20gb per GPU, no whole GPU.
        assert_eq!(devices.len(), 6);
        let profiles: Vec<_> = devices.iter().map(|d| d.attributes.as_ref().unwrap()["profile"].string.clone().unwrap()).collect();
        assert!(profiles.iter().all(|p| p == "2g.20gb"), "{profiles:?}");
        // The UUIDs are those the fake NVML would report for that layout on that node.
        let uuids: Vec<_> = devices.iter().map(|d| d.attributes.as_ref().unwrap()["uuid"].string.clone().unwrap()).collect();
        let want: Vec<_> = sim.mig_devices(&mig_state(&n, &sim)).into_iter().map(|m| m.uuid).collect();
        assert_eq!(uuids, want);
        // The built-in balanced configuration: 2 × 1g + 1 × 2g + 1 × 3g on each GPU.
        let balanced = applied_node(labels.clone(), &sim, "all-balanced");
        assert_eq!(attributes::pool_devices(&sim, &mig_state(&balanced, &sim)).len(), 8);
        // An unreadable annotation, or a layout this board cannot hold: GPUs whole.
        let mut odd = kwok_node(labels.clone());
        odd.metadata.annotations.as_mut().unwrap().insert(MIG_LAYOUT_ANNOTATION.into(), "nope".into());
        assert_eq!(mig_state(&odd, &sim), NodeState::default());
        let l40s = SimulatedNode::new(NodeSpec::builtin("l40s", Some(2), "kw-1").unwrap());
        assert_eq!(mig_state(&n, &l40s), NodeState::default(), "a board without MIG keeps its GPUs whole");
    }
}
