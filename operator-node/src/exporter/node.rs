//! The exporter's view of a node (what the Kubernetes adapter reads from the per-node
//! topology) and the label blocks of its series, one per whole GPU or MIG device.

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
    /// In MIG mode: its MIG devices, each reported as dcgm-exporter reports a GPU instance (a
    /// series of its own with `GPU_I_PROFILE` and `GPU_I_ID`) instead of the whole GPU.
    pub mig: Option<Vec<MigView>>,
}

/// One MIG device (its GPU instance).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MigView {
    pub uuid: String,
    /// NVML's profile name, e.g. `1g.10gb`: the `GPU_I_PROFILE` label.
    pub profile: String,
    /// The `GPU_I_ID` label.
    pub gpu_instance_id: u32,
    pub memory_mib: u64,
    /// Its share of the GPU's SMs, millionths (`fakegpu_model::mig::sm_share_micro`).
    pub sm_share_micro: u32,
    pub owner: Option<Owner>,
    /// The holder's use of it.
    pub usages: Vec<PodUsage>,
}

/// What one series describes: GPU `i` of the view whole, or MIG device `j` of GPU `i`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entity {
    Gpu(usize),
    Mig(usize, usize),
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

/// The label block of every series of `node`: each whole GPU, and each MIG device of a GPU in
/// MIG mode, in the order of its `gpus`.
pub fn label_blocks(node: &NodeView, hostname: HostnameLabel) -> Vec<(String, Entity)> {
    let host = hostname.for_node(&node.name);
    let empty = Owner::default();
    let block = |gpu: &GpuView, owner: Option<&Owner>, instance: Option<(&str, u32)>| {
        let owner = owner.unwrap_or(&empty);
        label_block(&SeriesLabels {
            gpu: gpu.index,
            uuid: &gpu.uuid,
            model_name: &node.model_name,
            instance,
            hostname: &host,
            container: &owner.container,
            namespace: &owner.namespace,
            pod: &owner.pod,
        })
    };
    let mut out = Vec::with_capacity(node.gpus.len());
    for (i, gpu) in node.gpus.iter().enumerate() {
        match &gpu.mig {
            None => out.push((block(gpu, gpu.owner.as_ref(), None), Entity::Gpu(i))),
            Some(devices) => {
                for (j, m) in devices.iter().enumerate() {
                    out.push((block(gpu, m.owner.as_ref(), Some((&m.profile, m.gpu_instance_id))), Entity::Mig(i, j)));
                }
            }
        }
    }
    out
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
