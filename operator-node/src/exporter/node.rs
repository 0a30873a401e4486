//! The exporter's view of a node (what the Kubernetes adapter reads from the per-node
//! topology) and the label blocks of its series, one per GPU.

use fakegpu_model::profile::Profile;
use ring::digest::{digest, SHA1_FOR_LEGACY_USE_ONLY};
use std::sync::Arc;

use super::render::{label_block, SeriesLabels};
use fakegpu_operator_core::node_state::PodUsage;

/// The pod a GPU is allocated to (upstream `allocatedBy`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Owner {
    pub namespace: String,
    pub pod: String,
    pub container: String,
}

/// One GPU of a node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GpuView {
    pub index: u32,
    pub uuid: String,
    /// `None`: free; its series carry empty `container`/`namespace`/`pod`.
    pub owner: Option<Owner>,
    /// Pods using the GPU (one for a whole GPU, several for shared ones).
    pub usages: Vec<PodUsage>,
}

/// One node: its name, board profile, product name as the topology states it, and GPUs.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeView {
    pub name: String,
    pub profile: Arc<Profile>,
    /// `modelName` label; upstream uses the topology's raw `gpuProduct`.
    pub model_name: String,
    pub gpus: Vec<GpuView>,
}

/// How the `Hostname` label is filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HostnameLabel {
    /// The node name (upstream's KWOK exporter, and what Run:ai's recording rules join on).
    #[default]
    NodeName,
    /// `nvidia-dcgm-exporter-<6 hex of SHA-1(node)>`: the pod-like name upstream's DaemonSet
    /// exporter reports, as real dcgm-exporter reports its pod's hostname.
    DcgmPod,
}

/// Upstream's DaemonSet `Hostname`: `nvidia-dcgm-exporter-` + hex of the first 3 bytes of SHA-1(node).
pub fn dcgm_pod_hostname(node: &str) -> String {
    let d = digest(&SHA1_FOR_LEGACY_USE_ONLY, node.as_bytes());
    let b = d.as_ref();
    format!("nvidia-dcgm-exporter-{:02x}{:02x}{:02x}", b[0], b[1], b[2])
}

impl HostnameLabel {
    pub fn for_node(self, node: &str) -> String {
        match self {
            HostnameLabel::NodeName => node.to_owned(),
            HostnameLabel::DcgmPod => dcgm_pod_hostname(node),
        }
    }
}

/// The label block of every GPU of `node`, in the order of its `gpus`.
pub fn label_blocks(node: &NodeView, hostname: HostnameLabel) -> Vec<String> {
    let host = hostname.for_node(&node.name);
    let empty = Owner::default();
    node.gpus
        .iter()
        .map(|gpu| {
            let owner = gpu.owner.as_ref().unwrap_or(&empty);
            label_block(&SeriesLabels {
                gpu: gpu.index,
                uuid: &gpu.uuid,
                model_name: &node.model_name,
                hostname: &host,
                container: &owner.container,
                namespace: &owner.namespace,
                pod: &owner.pod,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dcgm_pod_hostname_matches_upstream() {
        // Values from the upstream reference (§4.1).
        assert_eq!(dcgm_pod_hostname("node-1"), "nvidia-dcgm-exporter-b36828");
        assert_eq!(dcgm_pod_hostname(""), "nvidia-dcgm-exporter-da39a3");
        assert_eq!(HostnameLabel::NodeName.for_node("kwok-a-1"), "kwok-a-1");
    }
}
