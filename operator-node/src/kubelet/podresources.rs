//! The kubelet's PodResources v1 API as the device plugin reads it: which pod holds which
//! devices of a resource (pure, from a `List` response) and the `List` call over the kubelet's
//! socket. Allocate does not name the pod; this is where the kubelet says which pod it was for.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::grant::PodKey;
use super::proto::podresources as pb;
use super::proto::podresources::pod_resources_lister_client::PodResourcesListerClient;
use super::uds;

/// The kubelet's PodResources socket.
pub const DEFAULT_SOCKET: &str = "/var/lib/kubelet/pod-resources/kubelet.sock";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("dialing the kubelet's pod-resources socket {path}: {source}")]
    Dial { path: String, source: tonic::transport::Error },
    #[error("PodResourcesLister.List: {0}")]
    List(#[from] tonic::Status),
}

/// One `List` call on the kubelet at `socket`. A fresh connection each time: the kubelet may
/// have restarted since the last call.
pub async fn list(socket: &Path) -> Result<pb::ListPodResourcesResponse, Error> {
    let channel = uds::connect(socket).await.map_err(|source| Error::Dial { path: socket.display().to_string(), source })?;
    Ok(PodResourcesListerClient::new(channel).list(pb::ListPodResourcesRequest {}).await?.into_inner())
}

/// What [`held_by_pod`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Held {
    /// Per pod, its topology UUIDs.
    pub pods: BTreeMap<PodKey, Vec<String>>,
    /// Pods left out for holding a device id that is not one of this node's GPUs (one id each).
    pub unknown: Vec<(PodKey, String)>,
}

/// The devices of `resource` each pod holds, all containers together, in container order,
/// each id mapped by `canonical` (device id → topology UUID). A pod with an id `canonical`
/// does not know is left out and reported in [`Held::unknown`]: a grant naming it would be
/// ignored by the status-updater anyway.
pub fn held_by_pod(resp: &pb::ListPodResourcesResponse, resource: &str, canonical: &dyn Fn(&str) -> Option<String>) -> Held {
    let mut held = BTreeMap::new();
    let mut unknown = Vec::new();
    for pod in &resp.pod_resources {
        let key: PodKey = (pod.namespace.clone(), pod.name.clone());
        let ids = pod.containers.iter().flat_map(|c| &c.devices).filter(|d| d.resource_name == resource).flat_map(|d| &d.device_ids);
        let mut uuids: Vec<String> = Vec::new();
        let mut bad = None;
        for id in ids {
            match canonical(id) {
                Some(u) if !uuids.contains(&u) => uuids.push(u),
                Some(_) => {}
                None => bad = Some(id.clone()),
            }
        }
        match bad {
            Some(id) => unknown.push((key, id)),
            None if !uuids.is_empty() => {
                held.insert(key, uuids);
            }
            None => {}
        }
    }
    Held { pods: held, unknown }
}

/// Whether the kubelet has recorded an Allocate: each container's device set (`allocated`)
/// is exactly the `resource` devices of some container in the response (ids compared
/// case-insensitively).
pub fn recorded(resp: &pb::ListPodResourcesResponse, resource: &str, allocated: &[Vec<String>]) -> bool {
    fn set<'a>(ids: impl Iterator<Item = &'a String>) -> BTreeSet<String> {
        ids.map(|i| i.to_ascii_lowercase()).collect()
    }
    let containers: Vec<BTreeSet<String>> = resp
        .pod_resources
        .iter()
        .flat_map(|p| &p.containers)
        .map(|c| set(c.devices.iter().filter(|d| d.resource_name == resource).flat_map(|d| &d.device_ids)))
        .filter(|s| !s.is_empty())
        .collect();
    allocated.iter().filter(|ids| !ids.is_empty()).all(|ids| containers.contains(&set(ids.iter())))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GPU: &str = "nvidia.com/gpu";

    fn container(name: &str, devices: &[(&str, &[&str])]) -> pb::ContainerResources {
        pb::ContainerResources {
            name: name.into(),
            devices: devices
                .iter()
                .map(|(r, ids)| pb::ContainerDevices {
                    resource_name: r.to_string(),
                    device_ids: ids.iter().map(|s| s.to_string()).collect(),
                    topology: None,
                })
                .collect(),
            ..Default::default()
        }
    }

    fn pod(ns: &str, name: &str, containers: Vec<pb::ContainerResources>) -> pb::PodResources {
        pb::PodResources { name: name.into(), namespace: ns.into(), containers }
    }

    /// Ids `GPU-n` for n in 0..8 are the node's; canonical form upper-case.
    fn canonical(id: &str) -> Option<String> {
        let n: u32 = id.to_ascii_uppercase().strip_prefix("GPU-")?.parse().ok()?;
        (n < 8).then(|| format!("GPU-{n}"))
    }

    fn key(ns: &str, name: &str) -> PodKey {
        (ns.into(), name.into())
    }

    #[test]
    fn gpus_per_pod_across_containers_only_of_the_resource() {
        let resp = pb::ListPodResourcesResponse {
            pod_resources: vec![
                pod("a", "two-containers", vec![container("x", &[(GPU, &["gpu-5"])]), container("y", &[(GPU, &["GPU-6"])])]),
                pod("a", "nic-only", vec![container("x", &[("example.com/nic", &["GPU-1"])])]),
                pod("b", "no-devices", vec![container("x", &[])]),
                pod("b", "foreign", vec![container("x", &[(GPU, &["GPU-2", "MIG-abc"])])]),
                pod("b", "mixed", vec![container("x", &[("example.com/nic", &["n0"]), (GPU, &["GPU-3", "GPU-3"])])]),
            ],
        };
        let Held { pods: held, unknown } = held_by_pod(&resp, GPU, &canonical);
        assert_eq!(
            held,
            BTreeMap::from([
                (key("a", "two-containers"), vec!["GPU-5".to_string(), "GPU-6".to_string()]),
                (key("b", "mixed"), vec!["GPU-3".to_string()]),
            ])
        );
        assert_eq!(unknown, vec![(key("b", "foreign"), "MIG-abc".to_string())]);
    }

    #[test]
    fn an_allocation_is_recorded_when_a_container_has_exactly_its_devices() {
        let resp = pb::ListPodResourcesResponse {
            pod_resources: vec![pod("a", "p", vec![container("x", &[(GPU, &["GPU-5", "GPU-6"])]), container("y", &[(GPU, &["GPU-1"])])])],
        };
        let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(recorded(&resp, GPU, &[ids(&["gpu-6", "GPU-5"])]));
        assert!(recorded(&resp, GPU, &[ids(&["GPU-5", "GPU-6"]), ids(&["GPU-1"])]));
        assert!(!recorded(&resp, GPU, &[ids(&["GPU-5"])]), "a subset of a container is another allocation");
        assert!(!recorded(&resp, GPU, &[ids(&["GPU-5", "GPU-6"]), ids(&["GPU-2"])]));
        assert!(!recorded(&resp, "example.com/nic", &[ids(&["GPU-1"])]));
        assert!(!recorded(&pb::ListPodResourcesResponse::default(), GPU, &[ids(&["GPU-1"])]));
    }
}
