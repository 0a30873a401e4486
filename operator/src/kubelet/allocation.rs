//! Device plugin decisions: the device list (UUIDs, health, NUMA node) and the preferred
//! allocation. NUMA nodes are as the fake NVML reports them: the first half of a node's GPUs
//! on NUMA node 0, the rest on 1. On boards with two GPUs per board (`multi_gpu_board`) the
//! pair (2k, 2k+1) is the closest NVLink neighbourhood.

use std::collections::BTreeSet;

use fakegpu_model::SimulatedNode;

use super::proto::deviceplugin::{Device, NumaNode, TopologyInfo};

pub const HEALTHY: &str = "Healthy";
pub const UNHEALTHY: &str = "Unhealthy";

/// NUMA node of GPU `index` on a node of `count` GPUs (as nvml-shim's `Device::numa_node`).
pub fn numa_node(index: u32, count: u32) -> u32 {
    if count > 1 {
        index * 2 / count
    } else {
        0
    }
}

/// The ListAndWatch device list; `healthy[i]` is GPU i's health (missing = healthy).
pub fn devices(node: &SimulatedNode, healthy: &[bool]) -> Vec<Device> {
    let count = node.spec.gpu_count;
    node.gpus
        .iter()
        .map(|g| Device {
            id: g.uuid.clone(),
            health: if healthy.get(g.index as usize).copied().unwrap_or(true) { HEALTHY } else { UNHEALTHY }.into(),
            topology: Some(TopologyInfo { nodes: vec![NumaNode { id: i64::from(numa_node(g.index, count)) }] }),
        })
        .collect()
}

/// Host index of a device id (a GPU UUID, any case), if it is one of the node's GPUs.
pub fn index_of(node: &SimulatedNode, id: &str) -> Option<u32> {
    node.gpus.iter().find(|g| g.uuid.eq_ignore_ascii_case(id)).map(|g| g.index)
}

/// Picks `size` devices from `available`, always including `must_include`: first the NUMA node
/// the must-include devices are on (or the one whose free GPUs fit the request most tightly,
/// leaving bigger free blocks whole), filling NVLink pairs before splitting one, then the rest by
/// index. Unknown ids are ignored; the result is in index order.
pub fn preferred(node: &SimulatedNode, available: &[String], must_include: &[String], size: usize) -> Vec<String> {
    let count = node.spec.gpu_count;
    let avail: BTreeSet<u32> = available.iter().filter_map(|id| index_of(node, id)).collect();
    let mut chosen: BTreeSet<u32> = must_include.iter().filter_map(|id| index_of(node, id)).collect();
    let need = size.saturating_sub(chosen.len());
    let free: Vec<u32> = avail.iter().copied().filter(|i| !chosen.contains(i)).collect();
    let numa_nodes = if count > 1 { 2 } else { 1 };
    let free_on = |n: u32| free.iter().filter(|i| numa_node(**i, count) == n).count();
    let home: u32 = match chosen.iter().next() {
        Some(first) => numa_node(*first, count),
        None => (0..numa_nodes)
            .filter(|n| free_on(*n) >= need)
            .min_by_key(|n| (free_on(*n), *n))
            .unwrap_or_else(|| (0..numa_nodes).max_by_key(|n| (free_on(*n), u32::MAX - n)).unwrap_or(0)),
    };
    let pair_free = |i: u32| free.contains(&(i ^ 1));
    let mut order: Vec<u32> = free.clone();
    // Home NUMA first; within it, GPUs whose NVLink partner is also free (whole pairs) first
    // when an even count is wanted, so pairs are not split needlessly; then by index.
    let pairs = node.spec.profile.multi_gpu_board;
    order.sort_by_key(|i| (numa_node(*i, count) != home, pairs && !(pair_free(*i) || chosen.contains(&(i ^ 1))), *i));
    for i in order.into_iter().take(need) {
        chosen.insert(i);
    }
    chosen.into_iter().map(|i| node.gpus[i as usize].uuid.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use fakegpu_model::NodeSpec;

    fn node(profile: &str, gpus: u32) -> SimulatedNode {
        SimulatedNode::new(NodeSpec::builtin(profile, Some(gpus), "alloc-node").unwrap())
    }

    fn ids(n: &SimulatedNode, idx: &[usize]) -> Vec<String> {
        idx.iter().map(|i| n.gpus[*i].uuid.clone()).collect()
    }

    #[test]
    fn devices_carry_uuid_health_and_numa() {
        let n = node("h100", 8);
        let d = devices(&n, &[true, false]);
        assert_eq!(d.len(), 8);
        assert_eq!(d[0].id, n.gpus[0].uuid);
        assert_eq!(d[1].health, UNHEALTHY);
        assert_eq!(d[2].health, HEALTHY);
        assert_eq!(d[3].topology.as_ref().unwrap().nodes[0].id, 0);
        assert_eq!(d[4].topology.as_ref().unwrap().nodes[0].id, 1);
    }

    #[test]
    fn preferred_stays_on_one_numa_node() {
        let n = node("h100", 8);
        // 0,1,2 taken: NUMA 0 has one free GPU (3), NUMA 1 four; asking for 2 takes NUMA 1.
        let avail = ids(&n, &[3, 4, 5, 6, 7]);
        assert_eq!(preferred(&n, &avail, &[], 2), ids(&n, &[4, 5]));
        // asking for 1 takes the tightest fit: GPU 3 alone on NUMA 0.
        assert_eq!(preferred(&n, &avail, &[], 1), ids(&n, &[3]));
        // must-include on NUMA 1 keeps the rest there.
        assert_eq!(preferred(&n, &avail, &ids(&n, &[6]), 3), ids(&n, &[4, 5, 6]));
        // more than a NUMA node holds spills over.
        let all = ids(&n, &[0, 1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(preferred(&n, &all, &[], 6).len(), 6);
    }

    #[test]
    fn preferred_keeps_nvlink_pairs_whole_on_dual_gpu_boards() {
        let dual = fakegpu_model::builtin_profiles().unwrap().iter().find(|p| p.multi_gpu_board).map(|p| p.name.clone());
        let Some(profile) = dual else { return };
        let n = node(&profile, 8);
        // 1 is taken, so 0 is a lone half: a pair request takes 2,3, not 0 plus 2.
        let avail = ids(&n, &[0, 2, 3]);
        assert_eq!(preferred(&n, &avail, &[], 2), ids(&n, &[2, 3]));
    }
}
