//! The fake kubelet podresources socket and its sysfs NUMA tree (upstream reference §12.2,
//! `statusExporter.podResources.enabled`): what NUMA-aware consumers (KAI's
//! numa-placement-exporter) read on a node whose pool has a `numa` block.
//!
//! * [`build`] (pure): the `v1.PodResourcesLister/List` answer and each zone's cpulist from the
//!   node's topology (`allocatedBy`), its pool's `numa` block (zones through the model's split,
//!   the one the fake NVML, DRA and NodeResourceTopology use), its allocatable CPU and the pods'
//!   requests.
//! * [`write_sysfs`]: `<sys-root>/devices/system/node/node<z>/cpulist`, purged and rewritten.
//! * [`serve`]: the gRPC server on a unix socket answering `List` from a precomputed response
//!   swapped whole ([`tokio::sync::watch`]); `GetAllocatableResources` and `Get` are
//!   Unimplemented, as upstream.
//! * [`Reconciler`]: the kube edge the node-local status-exporter runs: reads the node, its
//!   topology, the cluster topology and the node's pods, rebuilds, swaps, rewrites sysfs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fakegpu_model::numa::{cores_of_millis, gpu_zones, zone_cpus};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use kube::api::{Api, ListParams};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::kubelet::proto::podresources as pb;
use crate::kubelet::proto::podresources::pod_resources_lister_server::{PodResourcesLister, PodResourcesListerServer};
use fakegpu_operator_core::nrt::{parse_quantity, NumaConfig};
use fakegpu_operator_core::topology::{node_cm_name, NodeTopology, TOPOLOGY_KEY};

/// Where upstream serves the socket (the chart mounts the host's directory there).
pub const DEFAULT_SOCKET: &str = "/var/lib/fake-gpu-operator/pod-resources/kubelet.sock";
/// The root of the fake sysfs tree (consumers take it as `--sysfs-root`).
pub const DEFAULT_SYS_ROOT: &str = "/var/lib/fake-gpu-operator/sys";
/// The GPU resource the devices are listed under.
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";

/// A pod's requests summed over its containers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Requests {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
}

/// The requests of `pod`: Σ of its (non-init) containers' `resources.requests` cpu and memory.
pub fn pod_requests(pod: &Pod) -> Requests {
    let mut r = Requests::default();
    for c in pod.spec.iter().flat_map(|s| &s.containers) {
        let Some(req) = c.resources.as_ref().and_then(|r| r.requests.as_ref()) else { continue };
        let get = |k: &str, millis: bool| req.get(k).and_then(|q| parse_quantity(&q.0, millis)).unwrap_or(0);
        r.cpu_millis = r.cpu_millis.saturating_add(get("cpu", true));
        r.memory_bytes = r.memory_bytes.saturating_add(get("memory", false));
    }
    r
}

/// What the socket answers and the sysfs tree holds for one node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Answer {
    pub list: pb::ListPodResourcesResponse,
    /// Per zone, its `cpulist` file (a Linux cpulist and `\n`); empty without a layout.
    pub cpulists: Vec<String>,
}

/// `total` split in proportion to `weights`, the units left over by flooring going one each to
/// the largest remainders (ties: the lower index). All zero when the weights are.
pub fn largest_remainder(total: u64, weights: &[u64]) -> Vec<u64> {
    let sum: u128 = weights.iter().map(|w| u128::from(*w)).sum();
    if sum == 0 {
        return vec![0; weights.len()];
    }
    let parts: Vec<(u64, u128)> = weights
        .iter()
        .map(|w| {
            let exact = u128::from(total) * u128::from(*w);
            ((exact / sum) as u64, exact % sum)
        })
        .collect();
    let mut out: Vec<u64> = parts.iter().map(|p| p.0).collect();
    let left = total - out.iter().sum::<u64>();
    let mut order: Vec<usize> = (0..parts.len()).collect();
    order.sort_by(|a, b| parts[*b].1.cmp(&parts[*a].1).then(a.cmp(b)));
    for i in order.into_iter().take(left as usize) {
        out[i] += 1;
    }
    out
}

/// A Linux cpulist of a contiguous block (`0-15`, `7`, empty) and its newline.
fn cpulist(ids: std::ops::Range<u64>) -> String {
    match ids.end.saturating_sub(ids.start) {
        0 => "\n".into(),
        1 => format!("{}\n", ids.start),
        _ => format!("{}-{}\n", ids.start, ids.end - 1),
    }
}

/// The answer for a node: nothing without a `numa` block (zones < 1 too); an error (nothing
/// served) when `gpusPerZone` does not fit the node. `allocatable_millis`: the node's
/// allocatable CPU, for the CPUs per zone when `cpuPerZone` is not set.
pub fn build(
    numa: Option<&NumaConfig>,
    topology: &NodeTopology,
    allocatable_millis: u64,
    requests: &BTreeMap<(String, String), Requests>,
) -> Result<Answer, String> {
    let Some(numa) = numa.filter(|n| n.zones >= 1) else { return Ok(Answer::default()) };
    let split = numa.split(topology.gpus.len() as u64)?;
    let zone_of = gpu_zones(&split);
    let zones = split.len();
    let cores = cores_of_millis(numa.cpu_per_zone.unwrap_or(allocatable_millis / zones as u64));
    let cpulists = (0..zones as u32).map(|z| cpulist(zone_cpus(z, cores))).collect();

    // Each pod's GPUs per zone, in index order; pods keyed `ns/name` as upstream sorts them.
    let mut pods: BTreeMap<String, (String, String, Vec<Vec<String>>)> = BTreeMap::new();
    for (i, g) in topology.gpus.iter().enumerate() {
        let by = &g.status.allocated_by;
        if by.namespace.is_empty() || by.pod.is_empty() {
            continue;
        }
        let entry = pods
            .entry(format!("{}/{}", by.namespace, by.pod))
            .or_insert_with(|| (by.namespace.clone(), by.pod.clone(), vec![Vec::new(); zones]));
        entry.2[zone_of[i] as usize].push(g.id.clone());
    }
    let pod_resources = pods
        .into_values()
        .map(|(namespace, name, per_zone)| {
            let req = requests.get(&(namespace.clone(), name.clone())).copied().unwrap_or_default();
            let weights: Vec<u64> = per_zone.iter().map(|g| g.len() as u64).collect();
            let topo = |z: usize| Some(pb::TopologyInfo { nodes: vec![pb::NumaNode { id: z as i64 }] });
            let devices = per_zone
                .iter()
                .enumerate()
                .filter(|(_, ids)| !ids.is_empty())
                .map(|(z, ids)| pb::ContainerDevices { resource_name: GPU_RESOURCE.into(), device_ids: ids.clone(), topology: topo(z) })
                .collect();
            let cpu_ids = largest_remainder(cores_of_millis(req.cpu_millis), &weights)
                .iter()
                .enumerate()
                .flat_map(|(z, k)| zone_cpus(z as u32, cores).take((*k).min(cores) as usize))
                .map(|id| id as i64)
                .collect();
            let memory = largest_remainder(req.memory_bytes, &weights)
                .into_iter()
                .enumerate()
                .filter(|(_, size)| *size > 0)
                .map(|(z, size)| pb::ContainerMemory { memory_type: "memory".into(), size, topology: topo(z) })
                .collect();
            pb::PodResources {
                name,
                namespace,
                containers: vec![pb::ContainerResources { name: String::new(), devices, cpu_ids, memory, dynamic_resources: vec![] }],
            }
        })
        .collect();
    Ok(Answer { list: pb::ListPodResourcesResponse { pod_resources }, cpulists })
}

/// Replaces `<sys_root>/devices/system/node` with one `node<z>/cpulist` per zone: built beside
/// it and renamed into place, so a reader sees the old tree or the new one.
pub fn write_sysfs(sys_root: &Path, cpulists: &[String]) -> std::io::Result<()> {
    let parent = sys_root.join("devices/system");
    std::fs::create_dir_all(&parent)?;
    let staging = parent.join(format!(".node.{}.tmp", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    for (z, text) in cpulists.iter().enumerate() {
        let dir = staging.join(format!("node{z}"));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("cpulist"), text)?;
    }
    std::fs::create_dir_all(&staging)?;
    let target = parent.join("node");
    match std::fs::remove_dir_all(&target) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    std::fs::rename(&staging, &target)
}

/// The `PodResourcesLister` service: `List` is a copy of the current answer.
pub struct Lister {
    state: watch::Receiver<Arc<pb::ListPodResourcesResponse>>,
}

#[tonic::async_trait]
impl PodResourcesLister for Lister {
    async fn list(&self, _: Request<pb::ListPodResourcesRequest>) -> Result<Response<pb::ListPodResourcesResponse>, Status> {
        let current = self.state.borrow().clone();
        Ok(Response::new((*current).clone()))
    }

    async fn get_allocatable_resources(
        &self,
        _: Request<pb::AllocatableResourcesRequest>,
    ) -> Result<Response<pb::AllocatableResourcesResponse>, Status> {
        Err(Status::unimplemented("the fake podresources socket implements List only"))
    }

    async fn get(&self, _: Request<pb::GetPodResourcesRequest>) -> Result<Response<pb::GetPodResourcesResponse>, Status> {
        Err(Status::unimplemented("the fake podresources socket implements List only"))
    }
}

/// Why the socket could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("binding {path}: {source}")]
    Bind { path: String, source: std::io::Error },
    #[error("serving {path}: {source}")]
    Serve { path: String, source: tonic::transport::Error },
}

/// Serves `List` on the unix socket `path` (a stale socket file is replaced) from `state` until
/// `shutdown` resolves.
pub async fn serve(
    path: &Path,
    state: watch::Receiver<Arc<pb::ListPodResourcesResponse>>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let shown = path.display().to_string();
    let incoming = crate::kubelet::uds::bind(path).map_err(|source| ServeError::Bind { path: shown.clone(), source })?;
    tonic::transport::Server::builder()
        .add_service(PodResourcesListerServer::new(Lister { state }))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|source| ServeError::Serve { path: shown, source })
}

/// The kube edge: rebuilds one node's answer from the API server.
pub struct Reconciler {
    pub client: kube::Client,
    pub namespace: String,
    pub topology_cm: String,
    pub node: String,
    pub sys_root: PathBuf,
    pub state: watch::Sender<Arc<pb::ListPodResourcesResponse>>,
    written: Option<Vec<String>>,
}

impl Reconciler {
    pub fn new(
        client: kube::Client,
        namespace: String,
        topology_cm: String,
        node: String,
        sys_root: PathBuf,
        state: watch::Sender<Arc<pb::ListPodResourcesResponse>>,
    ) -> Reconciler {
        Reconciler { client, namespace, topology_cm, node, sys_root, state, written: None }
    }

    /// One pass: the answer is swapped in when it changed, sysfs rewritten when its content did.
    pub async fn reconcile_once(&mut self) -> Result<(), fakegpu_operator_core::common::Error> {
        let cms: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.namespace);
        let cfg = fakegpu_operator_core::common::config_from_cm(cms.get_opt(&self.topology_cm).await?.as_ref())?.unwrap_or_default();
        let node = Api::<Node>::all(self.client.clone()).get_opt(&self.node).await?;
        let pool = node.as_ref().and_then(|n| n.metadata.labels.as_ref()?.get(&cfg.node_pool_label_key).cloned());
        let numa = pool.as_ref().and_then(|p| cfg.node_pools.get(p)).and_then(|p| p.numa.clone());
        let topology = cms
            .get_opt(&node_cm_name(&self.topology_cm, &self.node))
            .await?
            .and_then(|cm| cm.data?.get(TOPOLOGY_KEY).and_then(|t| NodeTopology::from_yaml(t).ok()));
        let answer = match (&numa, &topology) {
            (Some(numa), Some(topology)) if numa.zones >= 1 => {
                let pods = Api::<Pod>::all(self.client.clone())
                    .list(&ListParams::default().fields(&format!("spec.nodeName={}", self.node)))
                    .await?;
                let requests = pods
                    .items
                    .iter()
                    .map(|p| {
                        ((p.metadata.namespace.clone().unwrap_or_default(), p.metadata.name.clone().unwrap_or_default()), pod_requests(p))
                    })
                    .collect();
                let allocatable = node.as_ref().map(fakegpu_operator_core::nrt::allocatable).unwrap_or((0, 0)).0;
                build(Some(numa), topology, allocatable, &requests).unwrap_or_else(|e| {
                    tracing::warn!(node = %self.node, "podresources: nothing to answer: {e}");
                    Answer::default()
                })
            }
            _ => Answer::default(),
        };
        self.state.send_if_modified(|cur| {
            let changed = **cur != answer.list;
            if changed {
                *cur = Arc::new(answer.list.clone());
            }
            changed
        });
        if self.written.as_ref() != Some(&answer.cpulists) {
            write_sysfs(&self.sys_root, &answer.cpulists)
                .map_err(|e| fakegpu_operator_core::common::Error::Io(self.sys_root.display().to_string(), e))?;
            self.written = Some(answer.cpulists);
        }
        Ok(())
    }

    /// Reconciles every `interval` until the process ends.
    pub async fn run(mut self, interval: std::time::Duration) {
        let mut failing = false;
        loop {
            match self.reconcile_once().await {
                Ok(()) => failing = false,
                Err(e) => {
                    if !failing {
                        tracing::warn!(node = %self.node, "podresources: {e}");
                    }
                    failing = true;
                }
            }
            tokio::time::sleep(interval).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fakegpu_operator_core::topology::{ContainerDetails, GpuDetails, GpuStatus};
    use serde_json::json;

    /// `gpus` GPUs `GPU-<i>`, held as `owners[i]` = (namespace, pod).
    fn topology(gpus: usize, owners: &[(usize, &str, &str)]) -> NodeTopology {
        NodeTopology {
            gpus: (0..gpus)
                .map(|i| {
                    let by = owners
                        .iter()
                        .find(|(g, _, _)| *g == i)
                        .map(|(_, ns, pod)| ContainerDetails { namespace: (*ns).into(), pod: (*pod).into(), container: "c".into() })
                        .unwrap_or_default();
                    GpuDetails { id: format!("GPU-{i}"), status: GpuStatus { allocated_by: by, ..Default::default() }, mig: None }
                })
                .collect(),
            ..Default::default()
        }
    }

    fn numa(v: serde_json::Value) -> NumaConfig {
        NumaConfig::parse(&v).unwrap()
    }

    fn req(pairs: &[(&str, &str, u64, u64)]) -> BTreeMap<(String, String), Requests> {
        pairs.iter().map(|(ns, n, c, m)| ((ns.to_string(), n.to_string()), Requests { cpu_millis: *c, memory_bytes: *m })).collect()
    }

    fn zones_of(d: &pb::ContainerDevices) -> Vec<i64> {
        d.topology.as_ref().unwrap().nodes.iter().map(|n| n.id).collect()
    }

    #[test]
    fn largest_remainder_splits_exactly() {
        assert_eq!(largest_remainder(3, &[2, 1]), vec![2, 1]);
        assert_eq!(largest_remainder(5, &[1, 1]), vec![3, 2], "tie: the lower zone");
        assert_eq!(largest_remainder(4, &[1, 1, 1]), vec![2, 1, 1]);
        assert_eq!(largest_remainder(10, &[0, 3, 0, 1]), vec![0, 8, 0, 2]);
        assert_eq!(largest_remainder(7, &[0, 0]), vec![0, 0]);
        assert_eq!(largest_remainder(0, &[1, 2]), vec![0, 0]);
        assert_eq!(largest_remainder(u64::MAX, &[1, 1]), vec![u64::MAX / 2 + 1, u64::MAX / 2]);
        // Always sums to the total when any weight is positive.
        for total in 0..40u64 {
            for w in [[1u64, 2, 3], [5, 0, 1], [7, 7, 7]] {
                assert_eq!(largest_remainder(total, &w).iter().sum::<u64>(), total);
            }
        }
    }

    /// Four zones of two GPUs, 8 CPUs each (cpuPerZone): a pod on GPUs 1, 2, 3 (zones 0, 1, 1)
    /// with 3 CPUs and 3 GiB gets one CPU and 1 GiB in zone 0, two and 2 GiB in zone 1.
    #[test]
    fn a_pod_across_zones_gets_split_cpus_memory_and_devices() {
        let n = numa(json!({"zones": 4, "gpusPerZone": [2, 2, 2, 2], "cpuPerZone": "8"}));
        let t = topology(8, &[(1, "ns", "p"), (2, "ns", "p"), (3, "ns", "p")]);
        let a = build(Some(&n), &t, 0, &req(&[("ns", "p", 3000, 3 << 30)])).unwrap();
        assert_eq!(a.cpulists, vec!["0-7\n", "8-15\n", "16-23\n", "24-31\n"]);
        assert_eq!(a.list.pod_resources.len(), 1);
        let p = &a.list.pod_resources[0];
        assert_eq!((p.namespace.as_str(), p.name.as_str()), ("ns", "p"));
        assert_eq!(p.containers.len(), 1);
        let c = &p.containers[0];
        assert_eq!(c.name, "");
        assert_eq!(c.devices.len(), 2);
        assert_eq!(c.devices[0].resource_name, GPU_RESOURCE);
        assert_eq!((c.devices[0].device_ids.clone(), zones_of(&c.devices[0])), (vec!["GPU-1".to_string()], vec![0]));
        assert_eq!((c.devices[1].device_ids.clone(), zones_of(&c.devices[1])), (vec!["GPU-2".to_string(), "GPU-3".to_string()], vec![1]));
        assert_eq!(c.cpu_ids, vec![0, 8, 9]);
        let mem: Vec<(u64, Vec<i64>)> =
            c.memory.iter().map(|m| (m.size, m.topology.as_ref().unwrap().nodes.iter().map(|n| n.id).collect())).collect();
        assert_eq!(mem, vec![(1 << 30, vec![0]), (2 << 30, vec![1])]);
        assert!(c.memory.iter().all(|m| m.memory_type == "memory"));
    }

    /// Upstream's layout: an even split with the remainder to the lowest zones, CPUs per zone
    /// from the node's allocatable (rounded), pods sorted by `ns/name`, no entries for zero.
    #[test]
    fn even_split_allocatable_cpus_sorting_and_zero_entries() {
        let n = numa(json!({"zones": 2}));
        // 5 GPUs: zone 0 = 0, 1, 2; zone 1 = 3, 4. 33.2 allocatable CPUs: 16.6 → 17 per zone.
        let t = topology(5, &[(0, "b", "x"), (4, "a-b", "y"), (3, "a", "z")]);
        let requests = req(&[("b", "x", 1400, 0), ("a", "z", 0, 1000), ("a-b", "y", 2600, 0)]);
        let a = build(Some(&n), &t, 33_200, &requests).unwrap();
        assert_eq!(a.cpulists, vec!["0-16\n", "17-33\n"]);
        let names: Vec<String> = a.list.pod_resources.iter().map(|p| format!("{}/{}", p.namespace, p.name)).collect();
        // `a-b/y` < `a/z`: the string order upstream uses, not the (namespace, name) order.
        assert_eq!(names, ["a-b/y", "a/z", "b/x"]);
        let c = |i: usize| &a.list.pod_resources[i].containers[0];
        assert_eq!(c(0).cpu_ids, vec![17, 18, 19], "2.6 CPUs round to 3, all in zone 1");
        assert!(c(0).memory.is_empty(), "no memory request: no entry");
        assert!(c(1).cpu_ids.is_empty(), "no CPU request: no ids");
        assert_eq!(c(1).memory[0].size, 1000);
        assert_eq!(c(2).cpu_ids, vec![0], "1.4 CPUs round to 1");
        // A pod the API does not know (gone): its devices, nothing else.
        let a = build(Some(&n), &t, 33_200, &BTreeMap::new()).unwrap();
        assert!(a.list.pod_resources.iter().all(|p| p.containers[0].cpu_ids.is_empty() && p.containers[0].memory.is_empty()));
        assert_eq!(a.list.pod_resources.len(), 3);
    }

    #[test]
    fn a_pod_asking_more_cpus_than_a_zone_has_gets_the_whole_zone() {
        let n = numa(json!({"zones": 2, "cpuPerZone": "2"}));
        let t = topology(2, &[(0, "ns", "big")]);
        let a = build(Some(&n), &t, 0, &req(&[("ns", "big", 5000, 0)])).unwrap();
        assert_eq!(a.list.pod_resources[0].containers[0].cpu_ids, vec![0, 1]);
    }

    #[test]
    fn nothing_without_numa_and_an_error_when_the_list_does_not_fit() {
        let t = topology(4, &[(0, "ns", "p")]);
        assert_eq!(build(None, &t, 32_000, &BTreeMap::new()).unwrap(), Answer::default());
        let off = numa(json!({"zones": 0}));
        assert_eq!(build(Some(&off), &t, 32_000, &BTreeMap::new()).unwrap(), Answer::default());
        let bad = numa(json!({"zones": 2, "gpusPerZone": [1, 2]}));
        assert!(build(Some(&bad), &t, 32_000, &BTreeMap::new()).unwrap_err().contains("gpusPerZone"));
        // No allocatable and no cpuPerZone: empty cpulists, no CPU ids.
        let n = numa(json!({"zones": 2}));
        let a = build(Some(&n), &t, 0, &req(&[("ns", "p", 4000, 0)])).unwrap();
        assert_eq!(a.cpulists, vec!["\n", "\n"]);
        assert!(a.list.pod_resources[0].containers[0].cpu_ids.is_empty());
    }

    /// The zones here are the NodeResourceTopology's: same GPU counts per zone.
    #[test]
    fn zones_agree_with_the_node_resource_topology() {
        let n = numa(json!({"zones": 3, "gpusPerZone": [1, 0, 3]}));
        let owners: Vec<(usize, String)> = (0..4).map(|i| (i, format!("p{i}"))).collect();
        let refs: Vec<(usize, &str, &str)> = owners.iter().map(|(i, p)| (*i, "ns", p.as_str())).collect();
        let t = topology(4, &refs);
        let a = build(Some(&n), &t, 0, &BTreeMap::new()).unwrap();
        let nrt = fakegpu_operator_core::nrt::build("n", &n, &t, (0, 0)).unwrap();
        for z in 0..3 {
            let here = a.list.pod_resources.iter().flat_map(|p| &p.containers[0].devices).filter(|d| zones_of(d) == [z]).count();
            assert_eq!(here.to_string(), nrt["zones"][z as usize]["resources"][0]["capacity"].as_str().unwrap(), "zone {z}");
        }
    }

    #[test]
    fn pod_requests_sum_containers_only() {
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {
        "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "8"}}}],
        "containers": [
            {"name": "a", "resources": {"requests": {"cpu": "1500m", "memory": "1Gi"}}},
            {"name": "b", "resources": {"requests": {"cpu": "1"}}},
            {"name": "c"}
        ]}}))
        .unwrap();
        assert_eq!(pod_requests(&pod), Requests { cpu_millis: 2500, memory_bytes: 1 << 30 });
    }

    #[test]
    fn sysfs_is_purged_and_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let node = dir.path().join("devices/system/node");
        write_sysfs(dir.path(), &["0-7\n".into(), "8-15\n".into(), "16-23\n".into()]).unwrap();
        assert_eq!(std::fs::read_to_string(node.join("node2/cpulist")).unwrap(), "16-23\n");
        std::fs::write(node.join("stray"), "x").unwrap();
        write_sysfs(dir.path(), &["0\n".into()]).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(&node).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
        names.sort();
        assert_eq!(names, ["node0"]);
        assert_eq!(std::fs::read_to_string(node.join("node0/cpulist")).unwrap(), "0\n");
        write_sysfs(dir.path(), &[]).unwrap();
        assert_eq!(std::fs::read_dir(&node).unwrap().count(), 0);
        let left: Vec<_> = std::fs::read_dir(dir.path().join("devices/system")).unwrap().collect();
        assert_eq!(left.len(), 1, "no staging directory left");
    }

    /// The server over a real socket: List answers the current state and follows a swap; the
    /// other two methods are Unimplemented; a stale socket file is replaced.
    #[tokio::test]
    async fn socket_round_trip() {
        use crate::kubelet::proto::podresources::pod_resources_lister_client::PodResourcesListerClient;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pod-resources/kubelet.sock");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "stale").unwrap();
        let n = numa(json!({"zones": 2, "cpuPerZone": "4"}));
        let first = build(Some(&n), &topology(2, &[(1, "ns", "p")]), 0, &req(&[("ns", "p", 2000, 0)])).unwrap();
        let (tx, rx) = watch::channel(Arc::new(first.list.clone()));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn({
            let path = path.clone();
            async move {
                serve(&path, rx, async {
                    let _ = stop_rx.await;
                })
                .await
            }
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let channel = loop {
            match crate::kubelet::uds::connect(&path).await {
                Ok(c) => break c,
                Err(e) => {
                    assert!(std::time::Instant::now() < deadline, "connect: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            }
        };
        let mut client = PodResourcesListerClient::new(channel);
        let got = client.list(pb::ListPodResourcesRequest {}).await.unwrap().into_inner();
        assert_eq!(got, first.list);
        assert_eq!(got.pod_resources[0].containers[0].cpu_ids, vec![4, 5]);
        // Through the kubelet client the device plugin uses, too.
        assert_eq!(crate::kubelet::podresources::list(&path).await.unwrap(), first.list);
        tx.send(Arc::new(pb::ListPodResourcesResponse::default())).unwrap();
        assert!(client.list(pb::ListPodResourcesRequest {}).await.unwrap().into_inner().pod_resources.is_empty());
        let e = client.get_allocatable_resources(pb::AllocatableResourcesRequest {}).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unimplemented);
        let e = client.get(pb::GetPodResourcesRequest { pod_name: "p".into(), pod_namespace: "ns".into() }).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unimplemented);
        stop_tx.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
}
