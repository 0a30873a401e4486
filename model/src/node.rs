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
        let board = &spec.profile.board;
        // Whole addresses where the profile places every GPU of a node this size.
        let addresses = board.addresses_for(spec.gpu_count);
        let module_ids = if bus_ids.is_empty() && addresses.is_none() { &[][..] } else { &board.module_ids[..] };
        let gpus = (0..spec.gpu_count)
            .map(|i| {
                let mut id = gpu_identity(&spec.node_name, i, &bus_ids);
                if let Some(pci) = addresses.as_ref().map(|a| a[i as usize]) {
                    (id.pci, id.board_id, id.module_id) = (pci, pci.board_id(), i + 1);
                }
                // The baseboard slot of the GPU at this position, where the profile knows it.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::resolve;

    fn node(profile: &str, gpus: &str) -> SimulatedNode {
        let env = |k: &str| match k {
            "FAKEGPU_PROFILE" => Some(profile.to_string()),
            "FAKEGPU_GPUS" => Some(gpus.to_string()),
            "FAKEGPU_NODE" => Some("n".to_string()),
            _ => None,
        };
        SimulatedNode::new(resolve(&env, "host").unwrap())
    }

    #[test]
    fn whole_addresses_place_small_nodes_and_module_ids_follow() {
        let gb300 = node("gb300", "4");
        let ids: Vec<_> = gb300.gpus.iter().map(|g| (g.pci.bus_id(), g.board_id, g.module_id)).collect();
        assert_eq!(ids[0], ("00000008:06:00.0".to_string(), 0x80600, 2));
        assert_eq!(ids[3], ("00000019:06:00.0".to_string(), 0x190600, 3));
        let t4 = node("t4", "1");
        assert_eq!((t4.gpus[0].pci.bus_id(), t4.gpus[0].board_id), ("00000000:00:1E.0".to_string(), 0x1e));
        // Larger than the captured node: the server layout, module ids by position.
        let t4x2 = node("t4", "2");
        assert_eq!(t4x2.gpus[0].pci.device, 0);
        let h100 = node("h100", "8");
        assert_eq!(h100.gpus.iter().map(|g| g.module_id).collect::<Vec<_>>(), vec![7, 5, 6, 8, 1, 3, 4, 2]);
    }
}
