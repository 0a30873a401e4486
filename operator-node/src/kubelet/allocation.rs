//! Device plugin decisions: which resources a node advertises under NVIDIA's MIG strategies,
//! their device lists (UUIDs, health, NUMA node) and the preferred allocation. NUMA nodes are
//! as the fake NVML reports them, from the node's layout (`NodeSpec::numa_placement`: the pool's
//! `numa` zones, else the first half of the GPUs on node 0 and the rest on 1). On boards with two GPUs per board (`multi_gpu_board`) the pair (2k, 2k+1) is
//! the closest NVLink neighbourhood. A MIG device has its parent GPU's health and NUMA node.

use std::collections::{BTreeMap, BTreeSet};

use fakegpu_model::SimulatedNode;
use fakegpu_operator_core::mig_strategy::GpuDevices;

use super::devices::{self, NodeDevice};
use super::health::Live;
use super::proto::deviceplugin::{Device, NumaNode, TopologyInfo};

pub const HEALTHY: &str = "Healthy";
pub const UNHEALTHY: &str = "Unhealthy";

/// The strategies and their rule are shared with the KWOK capacity (operator-core).
pub use fakegpu_operator_core::mig_strategy::{MigStrategy, Resource as Kind, StrategyError};

/// What one device plugin endpoint serves: `kind` under `strategy`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Serving {
    pub strategy: MigStrategy,
    pub kind: Kind,
}

impl Serving {
    /// Its devices under the live state.
    pub fn devices(&self, node: &SimulatedNode, live: &Live) -> Vec<NodeDevice> {
        devices_of(node, live, self.strategy, &self.kind)
    }
}

/// The resource name of MIG profile `profile` under `mixed`; shared with the KWOK capacity
/// (the topology's resources) so both advertise the same names.
pub use fakegpu_operator_core::topology::mig_resource_name;

/// The socket of a MIG resource: `fake-nvidia-mig-1g.10gb.sock`.
pub fn mig_socket_name(profile: &str) -> String {
    format!("fake-nvidia-mig-{}.sock", profile.replace('+', "."))
}

/// The devices of each endpoint under `strategy`, `Kind::Gpu` always present (possibly empty,
/// so that the kubelet's `nvidia.com/gpu` capacity drops to 0 when every GPU is partitioned).
pub fn resources(node: &SimulatedNode, live: &Live, strategy: MigStrategy) -> Result<BTreeMap<Kind, Vec<NodeDevice>>, StrategyError> {
    let mut migs = node.mig_devices(&live.mig).into_iter().peekable();
    let gpus = node
        .gpus
        .iter()
        .map(|g| {
            let mig = devices::mig_enabled(&live.mig, g.index).then(|| {
                let mut own = Vec::new();
                while let Some(m) = migs.next_if(|m| m.parent_index == g.index) {
                    own.push((m.profile().to_string(), NodeDevice::Mig(Box::new(m))));
                }
                own
            });
            GpuDevices { index: g.index, whole: NodeDevice::Gpu(g.clone()), mig }
        })
        .collect();
    fakegpu_operator_core::mig_strategy::resources(gpus, strategy)
}

/// The devices endpoint `kind` serves now: none when the layout no longer has them or the
/// strategy refuses it (the refusal is logged by whoever chose the endpoints).
pub fn devices_of(node: &SimulatedNode, live: &Live, strategy: MigStrategy, kind: &Kind) -> Vec<NodeDevice> {
    resources(node, live, strategy).ok().and_then(|mut r| r.remove(kind)).unwrap_or_default()
}

/// The ListAndWatch device list; `healthy[i]` is GPU i's health (missing = healthy).
pub fn devices(node: &SimulatedNode, offered: &[NodeDevice], healthy: &[bool]) -> Vec<Device> {
    let numa = node.spec.numa_placement();
    offered
        .iter()
        .map(|d| {
            let parent = d.parent_index();
            Device {
                id: d.uuid().to_string(),
                health: if healthy.get(parent as usize).copied().unwrap_or(true) { HEALTHY } else { UNHEALTHY }.into(),
                topology: Some(TopologyInfo { nodes: vec![NumaNode { id: i64::from(numa.zone_of(parent)) }] }),
            }
        })
        .collect()
}

/// The device among `offered` that a device id (a UUID, any case) names.
pub fn find<'a>(offered: &'a [NodeDevice], id: &str) -> Option<&'a NodeDevice> {
    offered.iter().find(|d| d.uuid().eq_ignore_ascii_case(id))
}

/// The preferred allocation among `offered`: whole GPUs by [`preferred`]; MIG devices kept on
/// one parent GPU where they fit — the must-include devices' parent first, else the GPU whose
/// free MIG devices fit the request most tightly, so that others keep their free devices together.
pub fn preferred_of(
    node: &SimulatedNode,
    offered: &[NodeDevice],
    available: &[String],
    must_include: &[String],
    size: usize,
) -> Vec<String> {
    if offered.iter().all(|d| matches!(d, NodeDevice::Gpu(_))) {
        return preferred(node, available, must_include, size);
    }
    let pick = |ids: &[String]| -> Vec<&NodeDevice> { ids.iter().filter_map(|id| find(offered, id)).collect() };
    let mut chosen: Vec<&NodeDevice> = pick(must_include);
    let parents: BTreeSet<u32> = chosen.iter().map(|d| d.parent_index()).collect();
    let mut free: Vec<&NodeDevice> = pick(available).into_iter().filter(|d| !chosen.iter().any(|c| c.uuid() == d.uuid())).collect();
    let free_on = |p: u32, free: &[&NodeDevice]| free.iter().filter(|d| d.parent_index() == p).count();
    let counts: BTreeMap<u32, usize> = free.iter().map(|d| (d.parent_index(), free_on(d.parent_index(), &free))).collect();
    let need = size.saturating_sub(chosen.len());
    // Fitting parents by fewest free devices, then the others by most free ones.
    let fit = |p: u32| if counts[&p] >= need { counts[&p] } else { usize::MAX - counts[&p] };
    free.sort_by_key(|d| (!parents.contains(&d.parent_index()), fit(d.parent_index()), d.parent_index()));
    chosen.extend(free.into_iter().take(need));
    chosen.into_iter().map(|d| d.uuid().to_string()).collect()
}

/// Host index of a device id (a GPU UUID, any case), if it is one of the node's GPUs.
pub fn index_of(node: &SimulatedNode, id: &str) -> Option<u32> {
    node.gpus.iter().find(|g| g.uuid.eq_ignore_ascii_case(id)).map(|g| g.index)
}

/// The id a grant records for a device the kubelet says a pod holds: a GPU's UUID as the node
/// spells it, or a MIG device's `MIG-` UUID as advertised (the kubelet hands back only ids this
/// plugin advertised, and MIG devices come and go with the live layout, which the grant does not
/// need to re-check). Anything else is not ours.
pub fn grant_id(node: &SimulatedNode, id: &str) -> Option<String> {
    if let Some(i) = index_of(node, id) {
        return Some(node.gpus[i as usize].uuid.clone());
    }
    id.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("MIG-")).then(|| id.to_string())
}

/// Picks `size` devices from `available`, always including `must_include`: first the NUMA node
/// the must-include devices are on (or the one whose free GPUs fit the request most tightly,
/// leaving bigger free blocks whole), filling NVLink pairs before splitting one, then the rest by
/// index. Unknown ids are ignored; the result is in index order.
pub fn preferred(node: &SimulatedNode, available: &[String], must_include: &[String], size: usize) -> Vec<String> {
    let numa = node.spec.numa_placement();
    let numa_node = |i: u32| numa.zone_of(i);
    let avail: BTreeSet<u32> = available.iter().filter_map(|id| index_of(node, id)).collect();
    let mut chosen: BTreeSet<u32> = must_include.iter().filter_map(|id| index_of(node, id)).collect();
    let need = size.saturating_sub(chosen.len());
    let free: Vec<u32> = avail.iter().copied().filter(|i| !chosen.contains(i)).collect();
    let numa_nodes = numa.zones;
    let free_on = |n: u32| free.iter().filter(|i| numa_node(**i) == n).count();
    let home: u32 = match chosen.iter().next() {
        Some(first) => numa_node(*first),
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
    order.sort_by_key(|i| (numa_node(*i) != home, pairs && !(pair_free(*i) || chosen.contains(&(i ^ 1))), *i));
    for i in order.into_iter().take(need) {
        chosen.insert(i);
    }
    chosen.into_iter().map(|i| node.gpus[i as usize].uuid.clone()).collect()
}

#[cfg(test)]
mod tests {

    #[test]
    fn grant_ids_are_gpu_uuids_as_spelled_and_mig_uuids() {
        let node = fakegpu_model::SimulatedNode::new(fakegpu_model::NodeSpec::builtin("h100", Some(2), "n").unwrap());
        let gpu = node.gpus[1].uuid.clone();
        assert_eq!(grant_id(&node, &gpu.to_ascii_uppercase()), Some(gpu));
        assert_eq!(
            grant_id(&node, "MIG-2a024b94-915c-4e74-b895-cc23deda0817").as_deref(),
            Some("MIG-2a024b94-915c-4e74-b895-cc23deda0817")
        );
        assert_eq!(grant_id(&node, "GPU-00000000-0000-0000-0000-000000000000"), None, "not this node's");
        assert_eq!(grant_id(&node, "nvidia0"), None);
    }
    use super::*;
    use crate::kubelet::devices::tests::node_with_mig;
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
        let d = devices(&n, &resources(&n, &Live::idle(8), MigStrategy::None).unwrap()[&Kind::Gpu], &[true, false]);
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
    fn a_numa_layout_moves_hints_and_preferences_to_its_zones() {
        let mut spec = NodeSpec::builtin("h100", Some(8), "alloc-node").unwrap();
        spec.numa = Some(fakegpu_model::numa::NumaLayout { zones: 4, gpus_per_zone: Some(vec![1, 3, 2, 2]), cpus_per_zone: None });
        let n = SimulatedNode::new(spec);
        let d = devices(&n, &resources(&n, &Live::idle(8), MigStrategy::None).unwrap()[&Kind::Gpu], &[]);
        let zones: Vec<i64> = d.iter().map(|d| d.topology.as_ref().unwrap().nodes[0].id).collect();
        assert_eq!(zones, vec![0, 1, 1, 1, 2, 2, 3, 3]);
        // Two wanted: zone 2 (GPUs 4, 5) and 3 fit exactly; the lower one is taken, not the
        // two-halves default's GPUs 0 and 1 across zones 0 and 1.
        assert_eq!(preferred(&n, &ids(&n, &[0, 1, 2, 3, 4, 5, 6, 7]), &[], 2), ids(&n, &[4, 5]));
        // Must-include GPU 7 keeps the other in zone 3.
        assert_eq!(preferred(&n, &ids(&n, &[0, 1, 6, 7]), &ids(&n, &[7]), 2), ids(&n, &[6, 7]));
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

    fn uuids(d: &[NodeDevice]) -> Vec<String> {
        d.iter().map(|d| d.uuid().to_string()).collect()
    }

    #[test]
    fn strategies_decide_what_each_resource_lists() {
        // GPU 0 and 1 of 4 in MIG mode, seven 1g.10gb each.
        let (n, state) = node_with_mig("a100-80gb", 4, "strategy-node", &[0, 1], "all-1g.10gb");
        let live = Live::of(&state, 4);
        let migs = n.mig_devices(&state);
        assert_eq!(migs.len(), 14);
        let all_gpus: Vec<String> = n.gpus.iter().map(|g| g.uuid.clone()).collect();

        // none: every GPU whole, MIG or not; no MIG resource.
        let none = resources(&n, &live, MigStrategy::None).unwrap();
        assert_eq!(none.keys().collect::<Vec<_>>(), [&Kind::Gpu]);
        assert_eq!(uuids(&none[&Kind::Gpu]), all_gpus);

        // mixed: GPUs 2, 3 under nvidia.com/gpu; the MIG devices under their profile.
        let mixed = resources(&n, &live, MigStrategy::Mixed).unwrap();
        assert_eq!(mixed.keys().collect::<Vec<_>>(), [&Kind::Gpu, &Kind::Mig("1g.10gb".into())]);
        assert_eq!(uuids(&mixed[&Kind::Gpu]), all_gpus[2..]);
        assert_eq!(uuids(&mixed[&Kind::Mig("1g.10gb".into())]), migs.iter().map(|m| m.uuid.clone()).collect::<Vec<_>>());
        assert_eq!(mig_resource_name("1g.10gb"), "nvidia.com/mig-1g.10gb");
        assert_eq!(mig_resource_name("1g.10gb+me"), "nvidia.com/mig-1g.10gb.me");

        // single: refused while GPUs differ in MIG mode; with all four partitioned alike the
        // MIG devices are nvidia.com/gpu.
        assert_eq!(resources(&n, &live, MigStrategy::Single), Err(StrategyError::MixedModes(2)));
        let (n4, all4) = node_with_mig("a100-80gb", 4, "strategy-node", &[0, 1, 2, 3], "all-1g.10gb");
        let single = resources(&n4, &Live::of(&all4, 4), MigStrategy::Single).unwrap();
        assert_eq!(single.len(), 1);
        assert_eq!(uuids(&single[&Kind::Gpu]), n4.mig_devices(&all4).iter().map(|m| m.uuid.clone()).collect::<Vec<_>>());
        assert_eq!(single[&Kind::Gpu].len(), 28);
        // single without MIG anywhere: the GPUs.
        assert_eq!(uuids(&resources(&n, &Live::idle(4), MigStrategy::Single).unwrap()[&Kind::Gpu]), all_gpus);
        // single with two profiles: refused.
        let mut two = all4.clone();
        two.gpus.get_mut("3").unwrap().mig = fakegpu_model::mig::named_layout(&n4.spec.profile, "all-3g.40gb").unwrap();
        assert!(matches!(resources(&n4, &Live::of(&two, 4), MigStrategy::Single), Err(StrategyError::MixedProfiles(_, _))));
    }

    #[test]
    fn mig_devices_follow_their_parents_health_and_numa() {
        let (n, mut state) = node_with_mig("h100", 8, "health-node", &[5], "all-3g.40gb");
        state.gpus.get_mut("5").unwrap().faults.lost = true;
        let live = Live::of(&state, 8);
        assert!(!live.health[5]);
        let kind = Kind::Mig("3g.40gb".into());
        let migs = devices_of(&n, &live, MigStrategy::Mixed, &kind);
        let listed = devices(&n, &migs, &live.health);
        assert_eq!(listed.len(), 2);
        assert!(listed.iter().all(|d| d.health == UNHEALTHY && d.topology.as_ref().unwrap().nodes[0].id == 1));
        let gpus = devices(&n, &devices_of(&n, &live, MigStrategy::Mixed, &Kind::Gpu), &live.health);
        assert_eq!(gpus.len(), 7);
        assert!(gpus.iter().all(|d| d.health == HEALTHY));
        // Utilization changes are not part of what the plugin follows.
        let mut busy = state.clone();
        busy.gpu_mut(&n.spec, 0, fakegpu_model::state_file::now()).unwrap().utilization.gpu = 80;
        assert_eq!(Live::of(&busy, 8), live);
    }

    #[test]
    fn preferred_mig_devices_pack_onto_one_gpu() {
        let (n, state) = node_with_mig("a100-80gb", 4, "pack-node", &[0, 1, 2, 3], "all-1g.10gb");
        let offered = devices::offered(&n, &state);
        let on = |gpu: u32| -> Vec<String> { offered.iter().filter(|d| d.parent_index() == gpu).map(|d| d.uuid().to_string()).collect() };
        // GPU 2 has 3 free, GPU 3 all 7: a request for 3 takes GPU 2's (tightest fit), one for
        // 4 GPU 3's (GPU 2 cannot hold it).
        let mut avail: Vec<String> = on(2)[..3].to_vec();
        avail.extend(on(3));
        assert_eq!(preferred_of(&n, &offered, &avail, &[], 3), on(2)[..3].to_vec());
        assert_eq!(preferred_of(&n, &offered, &avail, &[], 4), on(3)[..4].to_vec());
        // With a must-include on GPU 3, the rest comes from GPU 3 too.
        assert_eq!(preferred_of(&n, &offered, &avail, &on(3)[6..], 2), vec![on(3)[6].clone(), on(3)[0].clone()]);
        // Unknown ids are ignored.
        assert_eq!(preferred_of(&n, &offered, &["MIG-nope".into()], &[], 1), Vec::<String>::new());
    }
}
