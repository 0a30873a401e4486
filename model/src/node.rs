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
        let mut bus_ids: Vec<u32> = spec.profile.pci.bus_ids.iter().map(|b| b.0).collect();
        // A layout captured on a smaller machine (one GPU at bus 06, say) would put a
        // bigger node's GPUs in one bus slot across many PCI domains; use a server layout.
        if bus_ids.len() < spec.gpu_count as usize && bus_ids.len() < 8 {
            bus_ids.clear();
        }
        let module_ids = if bus_ids.is_empty() { &[][..] } else { &spec.profile.board.module_ids[..] };
        let gpus = (0..spec.gpu_count)
            .map(|i| {
                let mut id = gpu_identity(&spec.node_name, i, &bus_ids);
                // The baseboard slot of the GPU at this bus position, where the profile knows it.
                if let Some(&m) = module_ids.get(id.module_id as usize - 1) {
                    id.module_id = m;
                }
                id
            })
            .collect();
        SimulatedNode { spec, gpus }
    }

    /// Every MIG device of the node under the live `state` (GPUs in index order, each GPU's
    /// in NVML order); empty for GPUs whose MIG mode is not current.
    pub fn mig_devices(&self, state: &crate::state::NodeState) -> Vec<crate::mig::MigDevice> {
        self.gpus
            .iter()
            .filter_map(|g| state.gpu(g.index).map(|s| (g, &s.mig)))
            .flat_map(|(g, layout)| crate::mig::gpu_mig_devices(&self.spec.profile, &self.spec.node_name, g.index, &g.uuid, layout))
            .collect()
    }
}
