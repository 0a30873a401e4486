//! Where a node's GPUs sit in an NVLink fabric: GB200/GB300 NVL72 racks, where 72 GPUs (18
//! nodes × 4) share one NVLink domain, called a *clique*. NVML reports it through
//! `nvmlDeviceGetGpuFabricInfo` (cluster UUID + clique id), GPU Feature Discovery labels it
//! `nvidia.com/gpu.clique=<cluster UUID>.<clique id>`, and NVIDIA's ComputeDomain status
//! carries the same string per node. One function decides it, from the node's identity alone
//! (profile, GPU count, node name), so every component agrees without sharing state.
//!
//! The rule (docs/compute-domains.md): a node name is `<fabric><ordinal>` (trailing decimal
//! digits; none = ordinal 0). Nodes with the same `<fabric>` prefix are one NVLink fabric
//! (cluster UUID = a stable UUID of the prefix); within it, consecutive ordinals fill a clique
//! of `72 / gpus` nodes (18 for 4 GPUs): clique id = ordinal / nodes per clique. Boards without
//! a multi-node NVLink fabric (everything but GB200/GB300) have none.

use crate::identity::{format_uuid, uuid_bytes};
use crate::profile::Profile;

/// GPUs in one NVL72 NVLink domain.
pub const NVL72_GPUS: u32 = 72;

/// Built-in profiles whose boards sit in an NVL72 rack.
pub const NVL72_PROFILES: &[&str] = &["gb200", "gb300"];

/// A node's place in its NVLink fabric.
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

/// Whether `profile` is a board in a multi-node NVLink fabric.
pub fn has_nvlink_fabric(profile: &Profile) -> bool {
    NVL72_PROFILES.contains(&profile.name.as_str())
}

/// Splits `name` into its fabric prefix and trailing ordinal (`gb200-017` → (`gb200-`, 17)).
/// No trailing digits, or too many to be an ordinal: the whole name with ordinal 0.
pub fn split_ordinal(name: &str) -> (&str, u64) {
    let prefix = name.trim_end_matches(|c: char| c.is_ascii_digit());
    match name[prefix.len()..].parse::<u64>() {
        Ok(n) => (prefix, n),
        Err(_) => (name, 0),
    }
}

/// The clique of node `node_name` with `gpus` GPUs of `profile`; `None` for boards without an
/// NVLink fabric.
pub fn clique_for_node(profile: &Profile, gpus: u32, node_name: &str) -> Option<FabricClique> {
    if !has_nvlink_fabric(profile) {
        return None;
    }
    let nodes_per_clique = u64::from((NVL72_GPUS / gpus.max(1)).max(1));
    let (fabric, ordinal) = split_ordinal(node_name);
    let clique_id = u32::try_from(ordinal / nodes_per_clique).unwrap_or(u32::MAX);
    Some(FabricClique { cluster_uuid: format_uuid("", uuid_bytes(&["nvlink-fabric", fabric])), clique_id })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::find_builtin;

    fn gb200() -> &'static Profile {
        find_builtin("gb200").unwrap()
    }

    #[test]
    fn eighteen_four_gpu_nodes_per_clique() {
        let c = |n: &str| clique_for_node(gb200(), 4, n).unwrap();
        assert_eq!(c("rack-000"), c("rack-017"));
        assert_eq!(c("rack-000").clique_id, 0);
        assert_eq!(c("rack-018").clique_id, 1);
        assert_eq!(c("rack-035").clique_id, 1);
        assert_eq!(c("rack-036").clique_id, 2);
        assert_eq!(c("rack-018").cluster_uuid, c("rack-000").cluster_uuid, "one fabric, two cliques");
        // 8 GPUs per node: 9 nodes per clique.
        assert_eq!(clique_for_node(gb200(), 8, "rack-009").unwrap().clique_id, 1);
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
        let plain = clique_for_node(gb200(), 4, "node").unwrap();
        assert_eq!(plain.clique_id, 0);
        let label = plain.label();
        let (uuid, id) = label.rsplit_once('.').unwrap();
        assert_eq!((uuid.len(), id), (36, "0"));
        assert_eq!(clique_for_node(find_builtin("gb300").unwrap(), 4, "r-20").unwrap().clique_id, 1);
    }

    #[test]
    fn boards_without_a_fabric_have_no_clique() {
        for p in ["h100", "a100-80gb", "b200", "k80"] {
            assert_eq!(clique_for_node(find_builtin(p).unwrap(), 8, "rack-000"), None, "{p}");
        }
    }
}
