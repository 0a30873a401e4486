//! The devices a node offers to pods, shared by the device plugin and the DRA driver so both
//! hand out what the fake NVML shows: every GPU whose MIG mode is off as a whole GPU, and for a
//! GPU whose MIG mode is on its MIG devices instead (NVIDIA's plugins never offer a MIG-enabled
//! GPU whole). MIG devices come from the live node state's MIG layout, through the model
//! ([`fakegpu_model::SimulatedNode::mig_devices`]), which also gives the fake NVML its MIG UUIDs.

use fakegpu_model::mig::MigDevice;
use fakegpu_model::state::NodeState;
use fakegpu_model::{GpuIdentity, SimulatedNode};

/// One device offered to pods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeDevice {
    Gpu(GpuIdentity),
    Mig(Box<MigDevice>),
}

impl NodeDevice {
    /// What `NVIDIA_VISIBLE_DEVICES` names it by: `GPU-…` or `MIG-…`.
    pub fn uuid(&self) -> &str {
        match self {
            NodeDevice::Gpu(g) => &g.uuid,
            NodeDevice::Mig(m) => &m.uuid,
        }
    }

    /// The host index of the physical GPU: faults, NUMA node and NVLink are its.
    pub fn parent_index(&self) -> u32 {
        match self {
            NodeDevice::Gpu(g) => g.index,
            NodeDevice::Mig(m) => m.parent_index,
        }
    }
}

/// The live state at `path`, validated against the node `spec` as the fake NVML validates it
/// (GPU keys, MIG ids and placements from the profile's tables, every value possible); empty
/// (no MIG, all healthy) when the file does not exist yet.
pub fn read_state(path: &std::path::Path, spec: &fakegpu_model::NodeSpec) -> Result<NodeState, fakegpu_model::state_file::StateFileError> {
    fakegpu_model::state_file::read_checked(path, spec)
}

/// Whether GPU `index` is in MIG mode now.
pub fn mig_enabled(state: &NodeState, index: u32) -> bool {
    state.gpu(index).is_some_and(|g| g.mig.current)
}

/// What the node offers: GPUs in index order, each either whole (MIG off) or as its MIG
/// devices in NVML order (MIG on; none while no instances exist).
pub fn offered(node: &SimulatedNode, state: &NodeState) -> Vec<NodeDevice> {
    let mut migs = node.mig_devices(state).into_iter().peekable();
    let mut out = Vec::new();
    for g in &node.gpus {
        if mig_enabled(state, g.index) {
            while let Some(m) = migs.next_if(|m| m.parent_index == g.index) {
                out.push(NodeDevice::Mig(Box::new(m)));
            }
        } else {
            out.push(NodeDevice::Gpu(g.clone()));
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use fakegpu_model::{mig, state_file, NodeSpec};

    /// A node whose GPUs in `mig_gpus` are in MIG mode with the mig-parted layout `config`.
    pub fn node_with_mig(profile: &str, gpus: u32, name: &str, mig_gpus: &[u32], config: &str) -> (SimulatedNode, NodeState) {
        let node = SimulatedNode::new(NodeSpec::builtin(profile, Some(gpus), name).unwrap());
        let mut state = NodeState::default();
        for i in mig_gpus {
            let layout = mig::named_layout(&node.spec.profile, config).unwrap();
            state.gpu_mut(&node.spec, *i, state_file::now()).unwrap().mig = layout;
        }
        (node, state)
    }

    #[test]
    fn mig_enabled_gpus_are_offered_as_their_mig_devices() {
        let (node, mut state) = node_with_mig("a100-80gb", 4, "dev-node", &[1], "all-3g.40gb");
        let d = offered(&node, &state);
        let uuids: Vec<&str> = d.iter().map(NodeDevice::uuid).collect();
        let migs = node.mig_devices(&state);
        assert_eq!(migs.len(), 2);
        assert_eq!(uuids, [node.gpus[0].uuid.as_str(), &migs[0].uuid, &migs[1].uuid, &node.gpus[2].uuid, &node.gpus[3].uuid]);
        assert_eq!(d.iter().map(NodeDevice::parent_index).collect::<Vec<_>>(), [0, 1, 1, 2, 3]);
        // MIG mode on without instances: the GPU offers nothing.
        state.gpus.get_mut("1").unwrap().mig.gpu_instances.clear();
        assert_eq!(offered(&node, &state).len(), 3);
        // No live state: every GPU whole.
        assert_eq!(offered(&node, &NodeState::default()).len(), 4);
    }
}
