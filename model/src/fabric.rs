//! Whole-node NVLink facts: which fabric (cluster UUID, clique) a node's GPUs joined, and what
//! each NVLink link reaches. Pure functions of the node name and the profile, so that the fake
//! NVML in every container, and later the operator (compute domains, `nvidia.com/gpu.clique`),
//! agree on them without talking to each other.

use crate::identity::{uuid_bytes, PciAddress};
use crate::profile::Profile;

/// `nvmlGpuFabricState_t` COMPLETED: the fabric manager registered the GPU.
pub const FABRIC_STATE_COMPLETED: u8 = 3;

/// A GPU's fabric registration (`nvmlGpuFabricInfo_t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FabricInfo {
    pub cluster_uuid: [u8; 16],
    pub clique_id: u32,
    pub state: u8,
}

impl FabricInfo {
    /// The cluster UUID as GPU Feature Discovery writes it (`8-4-4-4-12`, lower case).
    pub fn cluster_uuid_text(&self) -> String {
        crate::identity::format_uuid("", self.cluster_uuid)
    }

    /// The `nvidia.com/gpu.clique` label value GFD derives: `<cluster uuid>.<clique id>`.
    pub fn clique_label(&self) -> String {
        format!("{}.{}", self.cluster_uuid_text(), self.clique_id)
    }
}

/// The NVLink domain a node belongs to: its name without a trailing `-<number>`, so that the
/// compute trays `rack7-0` … `rack7-17` of one NVL72 rack share `rack7`. A name without such a
/// suffix is a domain of its own.
pub fn nvlink_domain(node: &str) -> &str {
    match node.rsplit_once('-') {
        Some((head, tail)) if !head.is_empty() && !tail.is_empty() && tail.bytes().all(|b| b.is_ascii_digit()) => head,
        _ => node,
    }
}

/// The fabric registration of every GPU of `node`, or `None` where the board is on no NVLink
/// fabric. Multi-node boards (GB200/GB300 NVL) get a cluster UUID derived from the node's
/// NVLink domain; a single baseboard's NVSwitch fabric (HGX) reports the zero UUID, as real
/// HGX H100/B200 nodes do.
pub fn fabric_info(node: &str, profile: &Profile) -> Option<FabricInfo> {
    let fabric = profile.board.fabric?;
    let cluster_uuid = if fabric.multi_node { uuid_bytes(&["nvlink-cluster", nvlink_domain(node)]) } else { [0; 16] };
    Some(FabricInfo { cluster_uuid, clique_id: fabric.clique_id, state: FABRIC_STATE_COMPLETED })
}

/// What the far end of an NVLink link is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkRemote {
    /// An NVSwitch at this PCI address (`NVML_NVLINK_DEVICE_TYPE_SWITCH`).
    Switch(PciAddress),
    /// Another GPU of the node, by index (`NVML_NVLINK_DEVICE_TYPE_GPU`).
    Gpu(u32),
}

/// Bus of NVSwitch `k` in the GPU's PCI domain. An estimate: NVIDIA publishes no HGX NVSwitch
/// addresses, and these buses lie above every profile's GPU buses so they never collide.
const SWITCH_BUS_BASE: u32 = 0xE0;

/// The far end of link `link` of GPU `index` (at `gpu_pci`) among `gpu_count` GPUs, or `None`
/// where the board has no such link. Links spread round-robin over the baseboard's NVSwitches;
/// without switches, links pair the GPU with its neighbours in turn.
pub fn nvlink_remote(profile: &Profile, index: u32, gpu_pci: PciAddress, gpu_count: u32, link: u32) -> Option<LinkRemote> {
    let nvlink = profile.board.nvlink?;
    if link >= nvlink.links {
        return None;
    }
    if nvlink.switches > 0 {
        let k = link % nvlink.switches;
        return Some(LinkRemote::Switch(PciAddress { domain: gpu_pci.domain, bus: SWITCH_BUS_BASE + k, device: 0, function: 0 }));
    }
    if gpu_count < 2 {
        return None;
    }
    let peer = (index + 1 + link % (gpu_count - 1)) % gpu_count;
    Some(LinkRemote::Gpu(peer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::find_builtin;

    #[test]
    fn domain_is_the_name_without_its_tray_number() {
        assert_eq!(nvlink_domain("rack7-0"), "rack7");
        assert_eq!(nvlink_domain("gb200-rack-a-17"), "gb200-rack-a");
        assert_eq!(nvlink_domain("worker"), "worker");
        assert_eq!(nvlink_domain("worker-a"), "worker-a");
        assert_eq!(nvlink_domain("-3"), "-3");
    }

    #[test]
    fn trays_of_one_rack_share_the_cluster_and_other_racks_do_not() {
        let gb200 = find_builtin("gb200").unwrap();
        let a = fabric_info("rack1-0", gb200).unwrap();
        assert_eq!(a, fabric_info("rack1-17", gb200).unwrap());
        assert_ne!(a.cluster_uuid, fabric_info("rack2-0", gb200).unwrap().cluster_uuid);
        assert_ne!(a.cluster_uuid, [0; 16]);
        assert_eq!(a.state, FABRIC_STATE_COMPLETED);
        assert!(a.clique_label().ends_with(&format!(".{}", a.clique_id)));
    }

    #[test]
    fn hgx_fabric_has_the_zero_uuid_and_pcie_boards_none() {
        let h100 = fabric_info("n", find_builtin("h100").unwrap()).unwrap();
        assert_eq!(h100.cluster_uuid, [0; 16]);
        assert_eq!(fabric_info("n", find_builtin("l40s").unwrap()), None);
    }

    #[test]
    fn links_reach_the_switches_round_robin() {
        let h100 = find_builtin("h100").unwrap();
        let n = h100.board.nvlink.unwrap();
        let pci = PciAddress { domain: 0, bus: 0x53, device: 0, function: 0 };
        let remotes: Vec<_> = (0..n.links).map(|l| nvlink_remote(h100, 0, pci, 8, l).unwrap()).collect();
        assert!(matches!(remotes[0], LinkRemote::Switch(p) if p.bus == SWITCH_BUS_BASE));
        assert_eq!(remotes[0], remotes[n.switches as usize]);
        assert_eq!(nvlink_remote(h100, 0, pci, 8, n.links), None);
        assert_eq!(nvlink_remote(find_builtin("t4").unwrap(), 0, pci, 1, 0), None);
    }
}
