//! Whole-node NVLink facts: which fabric (cluster UUID, clique) a node's GPUs joined, and what
//! each NVLink link reaches. Pure functions of the node's identity (name, profile, GPU count), so
//! that the fake NVML in every container (`nvmlDeviceGetGpuFabricInfo`), GPU Feature Discovery's
//! `nvidia.com/gpu.clique` label and the ComputeDomain status agree without sharing state.
//!
//! The multi-node rule (GB200/GB300 NVL72; docs/compute-domains.md): a node name is
//! `<fabric><ordinal>` (trailing decimal digits; none = ordinal 0). Nodes with the same `<fabric>`
//! prefix are one NVLink fabric (cluster UUID = a stable UUID of the prefix); within it,
//! consecutive ordinals fill a clique of `72 / gpus` nodes (18 trays of 4 GPUs): clique id = the
//! board's captured clique id + ordinal / nodes per clique. A single baseboard's NVSwitch fabric
//! (HGX) reports the zero UUID and the captured clique id, as real HGX H100/B200 nodes do.

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

/// GPUs in one NVL72 NVLink domain.
pub const NVL72_GPUS: u32 = 72;

/// Splits `name` into its fabric prefix and trailing ordinal (`gb200-017` → (`gb200-`, 17)).
/// No trailing digits, or too many to be an ordinal: the whole name with ordinal 0.
pub fn split_ordinal(name: &str) -> (&str, u64) {
    let prefix = name.trim_end_matches(|c: char| c.is_ascii_digit());
    match name[prefix.len()..].parse::<u64>() {
        Ok(n) => (prefix, n),
        Err(_) => (name, 0),
    }
}

/// Whether `profile` is a board in a multi-node NVLink fabric.
pub fn has_nvlink_fabric(profile: &Profile) -> bool {
    profile.board.fabric.is_some_and(|f| f.multi_node)
}

/// The fabric registration of every GPU of `node` (with `gpus` GPUs of `profile`), or `None`
/// where the board is on no NVLink fabric.
pub fn fabric_info(node: &str, profile: &Profile, gpus: u32) -> Option<FabricInfo> {
    let fabric = profile.board.fabric?;
    if !fabric.multi_node {
        return Some(FabricInfo { cluster_uuid: [0; 16], clique_id: fabric.clique_id, state: FABRIC_STATE_COMPLETED });
    }
    let nodes_per_clique = u64::from((NVL72_GPUS / gpus.max(1)).max(1));
    let (prefix, ordinal) = split_ordinal(node);
    let offset = u32::try_from(ordinal / nodes_per_clique).unwrap_or(u32::MAX);
    Some(FabricInfo {
        cluster_uuid: uuid_bytes(&["nvlink-fabric", prefix]),
        clique_id: fabric.clique_id.saturating_add(offset),
        state: FABRIC_STATE_COMPLETED,
    })
}

/// A node's place in its multi-node NVLink fabric.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FabricClique {
    /// `nvmlGpuFabricInfo_t.clusterUuid`, formatted `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
    pub cluster_uuid: String,
    /// `nvmlGpuFabricInfo_t.cliqueId`.
    pub clique_id: u32,
}

impl FabricClique {
    /// `<cluster UUID>.<clique id>`: GFD's `nvidia.com/gpu.clique` label value and the
    /// ComputeDomain status `cliqueID`.
    pub fn label(&self) -> String {
        format!("{}.{}", self.cluster_uuid, self.clique_id)
    }
}

/// The clique of node `node_name` with `gpus` GPUs of `profile`; `None` for boards without a
/// multi-node NVLink fabric (an HGX baseboard's NVSwitches join no clique across nodes).
pub fn clique_for_node(profile: &Profile, gpus: u32, node_name: &str) -> Option<FabricClique> {
    if !has_nvlink_fabric(profile) {
        return None;
    }
    let info = fabric_info(node_name, profile, gpus)?;
    Some(FabricClique { cluster_uuid: info.cluster_uuid_text(), clique_id: info.clique_id })
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

    fn gb200() -> &'static Profile {
        find_builtin("gb200").unwrap()
    }

    #[test]
    fn trays_of_one_rack_share_the_cluster_and_other_racks_do_not() {
        let a = fabric_info("rack1-0", gb200(), 4).unwrap();
        assert_eq!(a, fabric_info("rack1-17", gb200(), 4).unwrap());
        assert_ne!(a.cluster_uuid, fabric_info("rack2-0", gb200(), 4).unwrap().cluster_uuid);
        assert_ne!(a.cluster_uuid, [0; 16]);
        assert_eq!(a.state, FABRIC_STATE_COMPLETED);
        assert!(a.clique_label().ends_with(&format!(".{}", a.clique_id)));
    }

    #[test]
    fn eighteen_four_gpu_nodes_per_clique_from_the_captured_id() {
        let base = gb200().board.fabric.unwrap().clique_id;
        let c = |n: &str| clique_for_node(gb200(), 4, n).unwrap();
        assert_eq!(c("rack-000"), c("rack-017"));
        assert_eq!(c("rack-000").clique_id, base);
        assert_eq!(c("rack-018").clique_id, base + 1);
        assert_eq!(c("rack-035").clique_id, base + 1);
        assert_eq!(c("rack-036").clique_id, base + 2);
        assert_eq!(c("rack-018").cluster_uuid, c("rack-000").cluster_uuid, "one fabric, two cliques");
        // 8 GPUs per node: 9 nodes per clique.
        assert_eq!(clique_for_node(gb200(), 8, "rack-009").unwrap().clique_id, base + 1);
        assert_eq!(c("rack-000").label(), fabric_info("rack-000", gb200(), 4).unwrap().clique_label());
    }

    #[test]
    fn prefix_names_the_fabric() {
        let a = clique_for_node(gb200(), 4, "a-1").unwrap();
        let b = clique_for_node(gb200(), 4, "b-1").unwrap();
        assert_ne!(a.cluster_uuid, b.cluster_uuid);
        assert_eq!(a.clique_id, b.clique_id);
        assert_eq!(split_ordinal("node"), ("node", 0));
        assert_eq!(split_ordinal("gb200-017"), ("gb200-", 17));
        assert_eq!(split_ordinal("x99999999999999999999999"), ("x99999999999999999999999", 0));
        let label = clique_for_node(gb200(), 4, "node").unwrap().label();
        let (uuid, _) = label.rsplit_once('.').unwrap();
        assert_eq!(uuid.len(), 36);
        let gb300 = find_builtin("gb300").unwrap();
        assert_eq!(clique_for_node(gb300, 4, "r-20").unwrap().clique_id, gb300.board.fabric.unwrap().clique_id + 1);
    }

    #[test]
    fn hgx_fabric_has_the_zero_uuid_and_no_clique_and_pcie_boards_none() {
        let h100 = find_builtin("h100").unwrap();
        assert_eq!(fabric_info("n", h100, 8).unwrap().cluster_uuid, [0; 16]);
        assert_eq!(fabric_info("n", find_builtin("l40s").unwrap(), 8), None);
        for p in ["h100", "a100-80gb", "b200", "k80"] {
            assert_eq!(clique_for_node(find_builtin(p).unwrap(), 8, "rack-000"), None, "{p}");
        }
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
