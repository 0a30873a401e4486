//! Per-node topology ([`fakegpu_operator_core::topology::NodeTopology`], what the status-updater writes) →
//! the exporter's [`NodeView`]: the model profile to compute readings with, and per GPU its
//! holder and the pods' usage (per MIG device for a GPU in MIG mode).

use std::sync::Arc;

use fakegpu_model::config::DEFAULT_PROFILE;
use fakegpu_model::find_builtin;
use fakegpu_model::profile::Profile;

use super::node::{GpuView, MigView, NodeView, Owner};
use fakegpu_operator_core::node_state::PodUsage;
use fakegpu_operator_core::resolve::{self, Profiles};
use fakegpu_operator_core::topology::NodeTopology;

/// The model profile of a node: the status-updater's resolution of the topology's `profile`,
/// `gpuProduct` and `gpuMemory` ([`resolve::topology_profile`]) with the custom profile
/// ConfigMaps `profiles`. When that fails (a custom profile ConfigMap deleted since), the
/// product decides, and at last the model's default profile.
pub fn profile_of(node: &str, topo: &NodeTopology, profiles: &Profiles) -> Profile {
    ProfileInputs::of(topo).resolve(node, profiles)
}

/// What of a topology decides its node's profile: all that is kept of it to resolve the profile
/// again when the custom profiles change (the rest is in the node's view).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileInputs {
    pub profile: Option<String>,
    pub gpu_product: String,
    pub gpu_memory: u64,
}

impl ProfileInputs {
    pub fn of(topo: &NodeTopology) -> ProfileInputs {
        ProfileInputs { profile: topo.profile.clone(), gpu_product: topo.gpu_product.clone(), gpu_memory: topo.gpu_memory }
    }

    /// [`profile_of`] the topology these were taken from.
    pub fn resolve(&self, node: &str, profiles: &Profiles) -> Profile {
        resolve::topology_profile(self.profile.as_deref(), &self.gpu_product, self.gpu_memory, profiles)
            .or_else(|e| {
                tracing::warn!(node, profile = ?self.profile, error = %e, "profile of the node topology not found; using its product");
                resolve::topology_profile(None, &self.gpu_product, self.gpu_memory, profiles)
            })
            .unwrap_or_else(|_| find_builtin(DEFAULT_PROFILE).expect("the default profile is built in").clone())
    }
}

/// The view of node `name` described by `topo`.
pub fn node_view(name: &str, topo: &NodeTopology, profiles: &Profiles) -> NodeView {
    let profile = Arc::new(profile_of(name, topo, profiles));
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
            usages: g.status.pod_gpu_usage_status.iter().map(|(uid, u)| PodUsage::from_status(uid, u)).collect(),
            mig: g.mig.as_ref().map(|devices| {
                devices
                    .iter()
                    .map(|m| MigView {
                        uuid: m.id.clone(),
                        profile: m.profile.clone(),
                        gpu_instance_id: m.gpu_instance_id,
                        memory_mib: m.memory,
                        sm_share_micro: fakegpu_model::mig::sm_share_micro(&profile, &m.profile).unwrap_or(0),
                        owner: m.allocated_by.as_ref().map(|a| Owner {
                            namespace: a.namespace.clone(),
                            pod: a.pod.clone(),
                            container: a.container.clone(),
                        }),
                        usages: m.usage.iter().map(|(uid, u)| PodUsage::from_status(uid, u)).collect(),
                    })
                    .collect()
            }),
        })
        .collect();
    NodeView { name: name.to_owned(), model_name: topo.gpu_product.clone(), profile, gpus }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fakegpu_operator_core::resolve::{CustomProfile, PROFILE_KEY_MODEL};
    use std::collections::BTreeMap;

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
        let v = node_view("n1", &topo, &Profiles::new());
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
    fn profile_resolution_follows_the_status_updater() {
        let mut topo = NodeTopology::from_yaml(TOPO).unwrap();
        // A custom profile ConfigMap `gpu-profile-a100-40gb` shadows the built-in, as for pools.
        let mut custom = find_builtin("h100").unwrap().clone();
        custom.name = "my-board".into();
        custom.aliases.clear();
        custom.power.idle_draw_mw = 12_345;
        let data = BTreeMap::from([(PROFILE_KEY_MODEL.to_string(), serde_json::to_string(&custom).unwrap())]);
        let profiles = Profiles::from([("a100-40gb".to_string(), CustomProfile::from_data("gpu-profile-a100-40gb", &data).unwrap())]);
        assert_eq!(node_view("n1", &topo, &profiles).profile.power.idle_draw_mw, 12_345);
        assert_eq!(node_view("n1", &topo, &Profiles::new()).profile.name, "a100-40gb");
        topo.profile = None;
        assert_eq!(profile_of("n1", &topo, &Profiles::new()).name, "a100-40gb", "by product");
        topo.gpu_product = "Tesla-K80".into();
        topo.gpu_memory = 0;
        assert_eq!(profile_of("n1", &topo, &Profiles::new()).name, "k80");
        topo.gpu_product = "Mystery GPU".into();
        topo.gpu_memory = 1000;
        let fallback = profile_of("n1", &topo, &Profiles::new());
        assert_eq!((fallback.name.as_str(), fallback.product_name.as_str()), (DEFAULT_PROFILE, "Mystery GPU"));
        assert_eq!(fallback.memory.total_mib, 1000);
        // A custom profile that is gone: the product decides.
        topo.profile = Some("deleted-board".into());
        topo.gpu_product = "Tesla-K80".into();
        assert_eq!(profile_of("n1", &topo, &Profiles::new()).name, "k80");
    }
}
