//! The per-node topology: what the status-updater writes to the `topology-<node>` ConfigMap
//! (key `topology.yml`) and what every other component (metrics exporter, device plugins,
//! topology-server, nvidia-smi) reads back.
//!
//! The YAML shape is upstream fake-gpu-operator's `NodeTopology` (camelCase keys), so existing
//! consumers keep working. Two optional keys are ours (`profile`, `pool`): upstream's Go YAML
//! decoder ignores unknown keys, and they let our consumers find the model profile
//! (`fakegpu_model::find_builtin` / the profile ConfigMaps) for `telemetry::readings`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Data key of both the cluster and the per-node topology ConfigMaps.
pub const TOPOLOGY_KEY: &str = "topology.yml";
/// Label on every per-node topology ConfigMap.
pub const NODE_TOPOLOGY_LABEL: &str = "node-topology";
/// Label naming the node of a per-node topology ConfigMap.
pub const NODE_NAME_LABEL: &str = "node-name";
/// Annotation copied from KWOK nodes onto their ConfigMap (`fake` for KWOK nodes).
pub const KWOK_NODE_ANNOTATION: &str = "kwok.x-k8s.io/node";

/// Name of the per-node ConfigMap: `<cluster ConfigMap name>-<node>`, i.e. `topology-<node>`.
pub fn node_cm_name(cluster_cm_name: &str, node: &str) -> String {
    format!("{cluster_cm_name}-{node}")
}

/// One node's simulated GPUs and who holds them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeTopology {
    /// Framebuffer per GPU, MiB.
    pub gpu_memory: u64,
    /// Product name as configured (legacy `gpuProduct`, or the profile's product name);
    /// metrics use it raw as `modelName`, labels use it sanitised.
    pub gpu_product: String,
    /// Driver version, e.g. `535.261.03`; omitted when empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub driver_version: String,
    /// CUDA version the driver supports, e.g. `12.2`; omitted when empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cuda_version: String,
    /// `none`, `single` or `mixed`, copied from the cluster config.
    #[serde(default)]
    pub mig_strategy: String,
    /// Extra extended resources of the pool, sorted by name; omitted when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub other_devices: Vec<OtherDevice>,
    /// GPUs in index order (index = position).
    #[serde(default)]
    pub gpus: Vec<GpuDetails>,
    /// Ours: the model profile simulated (built-in name or custom profile name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// Ours: the pool the node is in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
}

/// An extra extended resource (`nvidia.com/mig-1g.10gb: 7`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct OtherDevice {
    pub name: String,
    pub count: u64,
}

/// One GPU.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GpuDetails {
    /// `GPU-<uuid>`, from `fakegpu_model::gpu_identity` (the same UUID the fake NVML reports).
    pub id: String,
    #[serde(default)]
    pub status: GpuStatus,
    /// Ours: the GPU's MIG devices when MIG mode is on (an empty list: on, no instances),
    /// from the layout the MIG manager applied; omitted (upstream's decoder ignores it) while
    /// the GPU is whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mig: Option<Vec<MigDeviceDetails>>,
}

/// One MIG device of a GPU, as the fake NVML reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MigDeviceDetails {
    /// `MIG-<uuid>` (`fakegpu_model::mig::mig_uuid`).
    pub id: String,
    /// NVIDIA's profile name, e.g. `1g.10gb`.
    pub profile: String,
    pub gpu_instance_id: u32,
    pub compute_instance_id: u32,
    /// First memory slice of its GPU instance.
    pub position: u32,
    /// Framebuffer of its GPU instance, MiB (as NVML reports the MIG device's total).
    #[serde(default)]
    pub memory: u64,
    /// The pod it is allocated to (an `nvidia.com/mig-<profile>` request); omitted while free.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocated_by: Option<ContainerDetails>,
    /// That pod's use of it (as `podGpuUsageStatus` for a whole GPU, `fbUsed` out of
    /// [`Self::memory`]), keyed by the pod's UID; omitted while free.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub usage: BTreeMap<String, GpuUsageStatus>,
}

/// NVIDIA device plugin's resource of a MIG profile under the `mixed` strategy: `+` of the
/// media-extension profiles becomes `.` (`1g.10gb+me` → `nvidia.com/mig-1g.10gb.me`).
pub fn mig_resource_name(profile: &str) -> String {
    format!("{}{}", crate::pod::MIG_RESOURCE_PREFIX, profile.replace('+', "."))
}

/// Who holds a GPU and what they do with it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GpuStatus {
    /// Empty strings when the GPU is free.
    #[serde(default)]
    pub allocated_by: ContainerDetails,
    /// Keyed by pod UID.
    #[serde(default)]
    pub pod_gpu_usage_status: BTreeMap<String, GpuUsageStatus>,
    /// Ours: the shared (fractional) pods whose `podGpuUsageStatus` entries are on this GPU, by
    /// pod UID, while `allocatedBy` names the reservation pod holding it. Upstream kept only the
    /// UIDs, so consumers could attribute a shared GPU to the reservation pod alone; omitted
    /// when empty (upstream's decoder ignores it).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub shared_by: BTreeMap<String, ContainerDetails>,
}

impl GpuStatus {
    pub fn is_free(&self) -> bool {
        self.allocated_by.pod.is_empty()
    }
}

/// The container a GPU is allocated to.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ContainerDetails {
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub pod: String,
    #[serde(default)]
    pub container: String,
}

/// What one pod does on one GPU.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GpuUsageStatus {
    /// Utilization range in percent. Both ends are reachable: samplers draw from `min..=max`
    /// (upstream excluded `max`, its defect 14.1/6).
    pub utilization: Range,
    /// Framebuffer used, MiB (`gpuMemory × gpu-fraction`, truncated).
    pub fb_used: u64,
    /// Utilization comes from Knative request rates (inference pods).
    #[serde(default)]
    pub use_knative_utilization: bool,
}

/// An inclusive percent range.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Range {
    pub min: u32,
    pub max: u32,
}

impl NodeTopology {
    /// Parses the `topology.yml` value of a per-node ConfigMap.
    pub fn from_yaml(text: &str) -> Result<NodeTopology, serde_yaml::Error> {
        serde_yaml::from_str(text)
    }

    /// The `topology.yml` value.
    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).expect("topology serialises")
    }

    /// The extended resources NVIDIA's device plugin would advertise for these GPUs under
    /// `migStrategy` ([`crate::mig_strategy`]; `mixed` when unset), as counts (KWOK capacity),
    /// plus the pool's static `otherDevices` (a name both give takes the applied layout's
    /// count). A layout the `single` strategy refuses advertises `nvidia.com/gpu: 0`.
    pub fn resources(&self) -> BTreeMap<String, u64> {
        use crate::mig_strategy::{self, GpuDevices, MigStrategy, Resource};
        let mut r: BTreeMap<String, u64> = self.other_devices.iter().map(|d| (d.name.clone(), d.count)).collect();
        let gpus = self
            .gpus
            .iter()
            .enumerate()
            .map(|(i, g)| GpuDevices {
                index: i as u32,
                whole: (),
                mig: g.mig.as_ref().map(|devices| devices.iter().map(|m| (m.profile.clone(), ())).collect()),
            })
            .collect();
        let strategy = MigStrategy::parse(&self.mig_strategy).unwrap_or(MigStrategy::Mixed);
        // A layout NVIDIA's plugin refuses under `single` advertises nothing.
        let exposed = mig_strategy::resources(gpus, strategy).unwrap_or_default();
        for (resource, devices) in exposed {
            let count = devices.len() as u64;
            match resource {
                // The applied layout's count replaces a static one of the same name.
                Resource::Mig(profile) => r.insert(mig_resource_name(&profile), count),
                Resource::Gpu => r.insert(crate::config::GPU_RESOURCE.to_string(), count),
            };
        }
        r.entry(crate::config::GPU_RESOURCE.to_string()).or_insert(0);
        r
    }

    /// GPU index of a UUID (case-insensitive, as upstream matches DRA device names).
    pub fn gpu_index(&self, uuid: &str) -> Option<usize> {
        self.gpus.iter().position(|g| g.id.eq_ignore_ascii_case(uuid))
    }

    /// Upstream topology-server's JSON: Go field names (`GpuMemory`, `Gpus[{ID, Status{…}}]`),
    /// empty strings emitted, pod-UID map keys untouched.
    pub fn to_go_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).expect("topology serialises");
        go_keys(&mut v, false);
        v
    }
}

/// Renames camelCase keys to Go's exported field names, except inside maps keyed by data
/// (`podGpuUsageStatus` and `sharedBy`, whose keys are pod UIDs).
pub(crate) fn go_keys(v: &mut serde_json::Value, data_keys: bool) {
    match v {
        serde_json::Value::Object(map) => {
            let old = std::mem::take(map);
            for (k, mut val) in old {
                let is_data_map = k == "podGpuUsageStatus" || k == "sharedBy";
                go_keys(&mut val, is_data_map);
                let key = if data_keys { k } else { go_name(&k) };
                map.insert(key, val);
            }
            if data_keys {
                for val in map.values_mut() {
                    go_keys(val, false);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(|i| go_keys(i, false)),
        _ => {}
    }
}

fn go_name(k: &str) -> String {
    if k == "id" {
        return "ID".into();
    }
    let mut c = k.chars();
    match c.next() {
        Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> NodeTopology {
        let mut usage = BTreeMap::new();
        usage.insert(
            "uid-1".to_string(),
            GpuUsageStatus { utilization: Range { min: 40, max: 60 }, fb_used: 40960, use_knative_utilization: false },
        );
        NodeTopology {
            gpu_memory: 40960,
            gpu_product: "NVIDIA A100-SXM4-40GB".into(),
            driver_version: "550.163.01".into(),
            cuda_version: "12.4".into(),
            mig_strategy: "mixed".into(),
            other_devices: vec![OtherDevice { name: "nvidia.com/mig-1g.10gb".into(), count: 7 }],
            gpus: vec![
                GpuDetails {
                    id: "GPU-aaaa".into(),
                    status: GpuStatus {
                        allocated_by: ContainerDetails { namespace: "ns".into(), pod: "p".into(), container: "c".into() },
                        pod_gpu_usage_status: usage,
                        shared_by: BTreeMap::new(),
                    },
                    mig: None,
                },
                GpuDetails { id: "GPU-bbbb".into(), ..Default::default() },
            ],
            profile: Some("a100-40gb".into()),
            pool: Some("default".into()),
        }
    }

    #[test]
    fn parses_upstream_yaml() {
        let text = r#"
gpuMemory: 11441
gpuProduct: Tesla-K80
migStrategy: mixed
gpus:
  - id: GPU-1
    status:
      allocatedBy: {namespace: ns, pod: p, container: c}
      podGpuUsageStatus:
        u1: {utilization: {min: 80, max: 100}, fbUsed: 11441, useKnativeUtilization: false}
  - id: GPU-2
    status:
      allocatedBy: {namespace: "", pod: "", container: ""}
      podGpuUsageStatus: {}
"#;
        let t = NodeTopology::from_yaml(text).unwrap();
        assert_eq!(t.gpus.len(), 2);
        assert_eq!(t.gpus[0].status.pod_gpu_usage_status["u1"].utilization, Range { min: 80, max: 100 });
        assert!(t.gpus[1].status.is_free());
        assert!(t.driver_version.is_empty() && t.profile.is_none());
    }

    #[test]
    fn yaml_round_trip_and_omissions() {
        let t = sample();
        let text = t.to_yaml();
        assert!(text.contains("gpuMemory: 40960") && text.contains("allocatedBy:") && text.contains("fbUsed: 40960"));
        assert_eq!(NodeTopology::from_yaml(&text).unwrap(), t);
        let bare = NodeTopology { gpu_product: "x".into(), ..Default::default() }.to_yaml();
        assert!(!bare.contains("driverVersion") && !bare.contains("otherDevices") && !bare.contains("profile"));
    }

    #[test]
    fn go_json_keys() {
        let v = sample().to_go_json();
        assert_eq!(v["GpuMemory"], 40960);
        assert_eq!(v["Gpus"][0]["ID"], "GPU-aaaa");
        assert_eq!(v["Gpus"][0]["Status"]["AllocatedBy"]["Namespace"], "ns");
        let usage = &v["Gpus"][0]["Status"]["PodGpuUsageStatus"]["uid-1"];
        assert_eq!(usage["Utilization"]["Min"], 40);
        assert_eq!(usage["FbUsed"], 40960);
        assert_eq!(usage["UseKnativeUtilization"], false);
        assert_eq!(v["OtherDevices"][0]["Count"], 7);
        assert_eq!(v["Gpus"][1]["Status"]["AllocatedBy"]["Pod"], "");
    }

    #[test]
    fn shared_by_round_trips_and_keeps_uid_keys() {
        let mut t = sample();
        t.gpus[1].status.allocated_by = ContainerDetails { namespace: "runai-reservation".into(), pod: "r".into(), container: "c".into() };
        t.gpus[1].status.pod_gpu_usage_status.insert(
            "uid-s".into(),
            GpuUsageStatus { utilization: Range { min: 0, max: 0 }, fb_used: 20480, use_knative_utilization: false },
        );
        t.gpus[1]
            .status
            .shared_by
            .insert("uid-s".into(), ContainerDetails { namespace: "team".into(), pod: "s".into(), container: "m".into() });
        let text = t.to_yaml();
        assert!(text.contains("sharedBy:") && text.matches("sharedBy").count() == 1, "omitted when empty:\n{text}");
        assert_eq!(NodeTopology::from_yaml(&text).unwrap(), t);
        let v = t.to_go_json();
        assert_eq!(v["Gpus"][1]["Status"]["SharedBy"]["uid-s"]["Pod"], "s");
        assert_eq!(v["Gpus"][1]["Status"]["PodGpuUsageStatus"]["uid-s"]["FbUsed"], 20480);
    }

    /// NVIDIA device plugin's resources per strategy for layouts of a 3-GPU node.
    #[test]
    fn resources_follow_the_mig_strategy() {
        let mig = |profiles: &[&str]| {
            Some(profiles.iter().map(|p| MigDeviceDetails { profile: p.to_string(), ..Default::default() }).collect::<Vec<_>>())
        };
        let topo = |strategy: &str, layouts: Vec<Option<Vec<MigDeviceDetails>>>| NodeTopology {
            mig_strategy: strategy.into(),
            other_devices: vec![
                OtherDevice { name: "nvidia.com/mig-1g.10gb".into(), count: 7 },
                OtherDevice { name: "x/y".into(), count: 1 },
            ],
            gpus: layouts.into_iter().map(|m| GpuDetails { mig: m, ..Default::default() }).collect(),
            ..Default::default()
        };
        let r = |pairs: &[(&str, u64)]| pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>();
        let one = || mig(&["1g.10gb"; 7]);
        let cases = [
            // No MIG: every GPU, static otherDevices as configured.
            ("mixed", vec![None, None, None], r(&[("nvidia.com/gpu", 3), ("nvidia.com/mig-1g.10gb", 7), ("x/y", 1)])),
            ("", vec![None, None, None], r(&[("nvidia.com/gpu", 3), ("nvidia.com/mig-1g.10gb", 7), ("x/y", 1)])),
            (
                "mixed",
                vec![one(), mig(&["1g.10gb.me", "3g.40gb"]), None],
                r(&[
                    ("nvidia.com/gpu", 1),
                    ("nvidia.com/mig-1g.10gb", 7),
                    ("nvidia.com/mig-1g.10gb.me", 1),
                    ("nvidia.com/mig-3g.40gb", 1),
                    ("x/y", 1),
                ]),
            ),
            // MIG on, no instances: neither a whole GPU nor a MIG device.
            ("mixed", vec![mig(&[]), None, None], r(&[("nvidia.com/gpu", 2), ("nvidia.com/mig-1g.10gb", 7), ("x/y", 1)])),
            ("none", vec![one(), one(), None], r(&[("nvidia.com/gpu", 3), ("nvidia.com/mig-1g.10gb", 7), ("x/y", 1)])),
            ("single", vec![one(), one(), one()], r(&[("nvidia.com/gpu", 21), ("nvidia.com/mig-1g.10gb", 7), ("x/y", 1)])),
            ("single", vec![None, None, None], r(&[("nvidia.com/gpu", 3), ("nvidia.com/mig-1g.10gb", 7), ("x/y", 1)])),
            // Refused by NVIDIA's plugin: mixed modes, or two profiles.
            ("single", vec![one(), None, None], r(&[("nvidia.com/gpu", 0), ("nvidia.com/mig-1g.10gb", 7), ("x/y", 1)])),
            ("single", vec![one(), one(), mig(&["7g.80gb"])], r(&[("nvidia.com/gpu", 0), ("nvidia.com/mig-1g.10gb", 7), ("x/y", 1)])),
        ];
        for (strategy, layouts, want) in cases {
            let t = topo(strategy, layouts.clone());
            assert_eq!(t.resources(), want, "{strategy:?} {layouts:?}");
        }
        // Mixed with 2 × 7 applied replaces the static 7.
        assert_eq!(topo("mixed", vec![one(), one(), None]).resources()["nvidia.com/mig-1g.10gb"], 14);
        assert_eq!(mig_resource_name("1g.10gb+me"), "nvidia.com/mig-1g.10gb.me");
    }

    #[test]
    fn mig_devices_are_omitted_while_whole_and_round_trip() {
        let mut t = sample();
        assert!(!t.to_yaml().contains("mig:"));
        t.gpus[0].mig = Some(vec![MigDeviceDetails {
            id: "MIG-x".into(),
            profile: "1g.10gb".into(),
            gpu_instance_id: 13,
            compute_instance_id: 0,
            position: 6,
            memory: 9856,
            ..Default::default()
        }]);
        t.gpus[1].mig = Some(Vec::new());
        let text = t.to_yaml();
        assert!(text.contains("gpuInstanceId: 13"), "{text}");
        assert_eq!(NodeTopology::from_yaml(&text).unwrap(), t);
        let holder = ContainerDetails { namespace: "ns".into(), pod: "p".into(), container: "c".into() };
        t.gpus[0].mig.as_mut().unwrap()[0].allocated_by = Some(holder);
        let held = t.to_yaml();
        // A free MIG device carries no holder field; a held one does.
        assert_eq!(held.matches("allocatedBy").count(), text.matches("allocatedBy").count() + 1, "{held}");
        assert_eq!(NodeTopology::from_yaml(&held).unwrap(), t);
    }

    #[test]
    fn gpu_index_ignores_case() {
        assert_eq!(sample().gpu_index("gpu-BBBB"), Some(1));
        assert_eq!(sample().gpu_index("GPU-cccc"), None);
    }
}
