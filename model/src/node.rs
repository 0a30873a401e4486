//! A simulated node: the resolved spec plus the identity of each of its GPUs.

use crate::config::NodeSpec;
use crate::identity::{gpu_identity, GpuIdentity};

#[derive(Debug, Clone, PartialEq)]
pub struct SimulatedNode {
    pub spec: NodeSpec,
    pub gpus: Vec<GpuIdentity>,
}

impl SimulatedNode {
    pub fn new(spec: NodeSpec) -> SimulatedNode {
        let bus_ids: Vec<u32> = spec.profile.pci.bus_ids.iter().map(|b| b.0).collect();
        let gpus = (0..spec.gpu_count).map(|i| gpu_identity(&spec.node_name, i, &bus_ids)).collect();
        SimulatedNode { spec, gpus }
    }
}
