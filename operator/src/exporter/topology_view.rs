//! Per-node topology ([`crate::topology::NodeTopology`], what the status-updater writes) →
//! the exporter's [`NodeView`]: the model profile to compute readings with, and per GPU its
//! holder and the pods' usage.

use std::sync::Arc;

use fakegpu_model::profile::Profile;
use fakegpu_model::{builtin_profiles, find_builtin};

use super::node::{GpuView, NodeView, Owner};
use super::sample::PodUsage;
use crate::topology::NodeTopology;

/// Profile used when the topology names none and its product matches no built-in board.
pub const FALLBACK_PROFILE: &str = "h100";

/// The model profile of a node: the named one (`custom` first, for profile ConfigMaps, then
/// the built-ins), else the built-in whose product name is the topology's, else
/// [`FALLBACK_PROFILE`]. The topology's product name and framebuffer size win over the
/// profile's (pool overrides), as they do for labels.
pub fn resolve_profile(topo: &NodeTopology, custom: &dyn Fn(&str) -> Option<Profile>) -> Profile {
    let named = topo.profile.as_deref().and_then(|n| custom(n).or_else(|| find_builtin(n).ok().cloned()));
    let product = product_key(&topo.gpu_product);
    let mut p = named
        .or_else(|| builtin_profiles().ok()?.iter().find(|p| product_key(&p.product_name) == product).cloned())
        .unwrap_or_else(|| find_builtin(FALLBACK_PROFILE).expect("fallback profile is built in").clone());
    if !topo.gpu_product.is_empty() {
        p.product_name.clone_from(&topo.gpu_product);
    }
    if topo.gpu_memory > 0 && topo.gpu_memory != p.memory.total_mib {
        p.memory.total_mib = topo.gpu_memory;
        p.memory.reserved_mib = p.memory.reserved_mib.min(topo.gpu_memory);
    }
    p
}

/// A product name compared loosely: lower-case alphanumerics only (`Tesla-K80` = `Tesla K80`).
fn product_key(name: &str) -> String {
    name.chars().filter(char::is_ascii_alphanumeric).map(|c| c.to_ascii_lowercase()).collect()
}

/// The view of node `name` described by `topo`.
pub fn node_view(name: &str, topo: &NodeTopology, custom: &dyn Fn(&str) -> Option<Profile>) -> NodeView {
    let profile = Arc::new(resolve_profile(topo, custom));
    let gpus = topo
        .gpus
        .iter()
        .enumerate()
        .map(|(i, g)| GpuView {
            index: i as u32,
            uuid: g.id.clone(),
            owner: (!g.status.is_free()).then(|| Owner {
                namespace: g.status.allocated_by.namespace.clone(),
                pod: g.status.allocated_by.pod.clone(),
                container: g.status.allocated_by.container.clone(),
            }),
            usages: g
                .status
                .pod_gpu_usage_status
                .iter()
                .map(|(uid, u)| PodUsage {
                    pod_uid: uid.clone(),
                    util_min: u.utilization.min,
                    util_max: u.utilization.max,
                    fb_used_mib: u.fb_used,
                    use_knative: u.use_knative_utilization,
                })
                .collect(),
            ..GpuView::default()
        })
        .collect();
    NodeView { name: name.to_owned(), model_name: topo.gpu_product.clone(), profile, gpus }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOPO: &str = r#"
gpuMemory: 40960
gpuProduct: NVIDIA A100-SXM4-40GB
migStrategy: none
gpus:
  - id: GPU-aaaa
    status:
      allocatedBy: {namespace: ns, pod: p, container: c}
      podGpuUsageStatus:
        uid-1: {utilization: {min: 40, max: 60}, fbUsed: 20480, useKnativeUtilization: false}
  - id: GPU-bbbb
    status:
      allocatedBy: {namespace: "", pod: "", container: ""}
      podGpuUsageStatus: {}
profile: a100-40gb
"#;

    #[test]
    fn topology_becomes_a_view() {
        let topo = NodeTopology::from_yaml(TOPO).unwrap();
        let v = node_view("n1", &topo, &|_| None);
        assert_eq!(v.model_name, "NVIDIA A100-SXM4-40GB");
        assert_eq!(v.profile.memory.total_mib, 40960);
        assert_eq!(v.gpus.len(), 2);
        assert_eq!(v.gpus[0].owner, Some(Owner { namespace: "ns".into(), pod: "p".into(), container: "c".into() }));
        assert_eq!(
            v.gpus[0].usages,
            vec![PodUsage { pod_uid: "uid-1".into(), util_min: 40, util_max: 60, fb_used_mib: 20480, use_knative: false }]
        );
        assert_eq!(v.gpus[1].owner, None);
        assert!(v.gpus[1].usages.is_empty());
    }

    #[test]
    fn profile_resolution_order() {
        let mut topo = NodeTopology::from_yaml(TOPO).unwrap();
        let mut custom = find_builtin("h100").unwrap().clone();
        custom.name = "a100-40gb".into();
        custom.power.idle_draw_mw = 12_345;
        assert_eq!(resolve_profile(&topo, &|n| (n == "a100-40gb").then(|| custom.clone())).power.idle_draw_mw, 12_345);
        topo.profile = None;
        let by_product = resolve_profile(&topo, &|_| None);
        assert_eq!(by_product.product_name, "NVIDIA A100-SXM4-40GB");
        topo.gpu_product = "Tesla-K80".into();
        let k80 = resolve_profile(&topo, &|_| None);
        assert_eq!((k80.name.as_str(), k80.product_name.as_str()), ("k80", "Tesla-K80"));
        topo.gpu_product = "Mystery GPU".into();
        topo.gpu_memory = 1000;
        let fallback = resolve_profile(&topo, &|_| None);
        assert_eq!((fallback.name.as_str(), fallback.product_name.as_str()), (FALLBACK_PROFILE, "Mystery GPU"));
        assert_eq!(fallback.memory.total_mib, 1000);
        assert!(fallback.memory.reserved_mib <= 1000);
    }
}
