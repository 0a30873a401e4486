//! The allocation index: a pure in-memory view of nodes, pods and which pod holds which GPU,
//! in the style of linkerd2's policy-controller index. Adapters feed it API objects (and, at
//! start, the allocations already recorded in the per-node ConfigMaps) and read back, per node,
//! the desired topology, labels, capacity and node config. It never does I/O.
//!
//! Allocation per node, recomputed whenever something on the node changes, in three passes
//! over the node's GPU pods ordered by (creation time, namespace, name):
//! 1. pods with a valid grant annotation take exactly the granted GPUs;
//! 2. pods keep the GPUs they held before (in this process, or as recorded in the ConfigMap
//!    when the process started) if those are all still free;
//! 3. the rest take the lowest free indices, all or nothing.
//!
//! No GPU is ever held by two pods, and a pod holds all the GPUs it wants or none.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use fakegpu_model::config::{NodeConfigFile, NodeSpec, ProfileRef};
use fakegpu_model::SimulatedNode;

use crate::config::{ClusterConfig, ConfigError, GPU_RESOURCE};
use crate::labels::{self, LabelOptions};
use crate::pod::{PodInfo, PodKey};
use crate::resolve::{self, Profiles, ResolvedPool, NODE_GPUS_LABEL, NODE_PROFILE_LABEL};
use crate::topology::{ContainerDetails, GpuDetails, GpuStatus, NodeTopology};

/// The parts of a Node the index uses.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeInfo {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Annotation `kwok.x-k8s.io/node`, if any (`fake` = KWOK node).
    pub kwok_annotation: Option<String>,
}

impl NodeInfo {
    pub fn from_node(n: &k8s_openapi::api::core::v1::Node) -> NodeInfo {
        NodeInfo {
            name: n.metadata.name.clone().unwrap_or_default(),
            labels: n.metadata.labels.clone().unwrap_or_default(),
            kwok_annotation: n.metadata.annotations.as_ref().and_then(|a| a.get(crate::topology::KWOK_NODE_ANNOTATION).cloned()),
        }
    }

    pub fn is_kwok(&self) -> bool {
        self.kwok_annotation.as_deref() == Some("fake")
    }
}

/// Options that are not part of the cluster config.
#[derive(Debug, Clone, Default)]
pub struct IndexOptions {
    pub disable_deploy_labels: bool,
}

#[derive(Debug, Clone)]
struct NodeEntry {
    info: NodeInfo,
    /// `Ok(None)`: not in any pool. `Err`: in a pool but unusable (unknown pool, bad labels).
    resolved: Result<Option<ResolvedPool>, String>,
    uuids: Vec<String>,
    holders: Vec<Option<PodKey>>,
    /// Holders read from the ConfigMap at start: (namespace, pod, pod uid if recorded).
    recorded: Vec<Option<(String, String, Option<String>)>>,
}

/// Everything a node should look like.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeView {
    pub topology: NodeTopology,
    pub labels: BTreeMap<String, String>,
    /// Extended resources for KWOK node capacity/allocatable.
    pub capacity: BTreeMap<String, u64>,
    pub config_file: NodeConfigFile,
    /// The resolved node, as the fake NVML will resolve `config_file`.
    pub spec: NodeSpec,
    pub kwok: bool,
    pub kwok_annotation: Option<String>,
}

/// The index.
#[derive(Debug, Default)]
pub struct Index {
    cfg: ClusterConfig,
    profiles: Profiles,
    pools: BTreeMap<String, ResolvedPool>,
    opts: IndexOptions,
    nodes: BTreeMap<String, NodeEntry>,
    pods: HashMap<PodKey, PodInfo>,
    by_node: HashMap<String, BTreeSet<PodKey>>,
    pending_seeds: HashMap<String, NodeTopology>,
}

impl Index {
    /// An index over a valid config.
    pub fn new(cfg: ClusterConfig, profiles: Profiles, opts: IndexOptions) -> Result<Index, ConfigError> {
        let pools = resolve::resolve_all(&cfg, &profiles)?;
        Ok(Index { cfg, profiles, pools, opts, ..Index::default() })
    }

    pub fn config(&self) -> &ClusterConfig {
        &self.cfg
    }

    pub fn pools(&self) -> &BTreeMap<String, ResolvedPool> {
        &self.pools
    }

    /// Replaces config and profiles; on error nothing changes (the last good config stays).
    /// Returns every node name (all may change).
    pub fn set_config(&mut self, cfg: ClusterConfig, profiles: Profiles) -> Result<Vec<String>, ConfigError> {
        let pools = resolve::resolve_all(&cfg, &profiles)?;
        self.cfg = cfg;
        self.profiles = profiles;
        self.pools = pools;
        let names: Vec<String> = self.nodes.keys().cloned().collect();
        for n in &names {
            let info = self.nodes[n].info.clone();
            self.upsert_node(info);
        }
        Ok(names)
    }

    fn resolve_node(&self, info: &NodeInfo) -> Result<Option<ResolvedPool>, String> {
        let Some(pool) = info.labels.get(&self.cfg.node_pool_label_key) else { return Ok(None) };
        let Some(r) = self.pools.get(pool) else {
            return Err(format!(
                "node {}: pool `{pool}` (label {}) is not in the topology config",
                info.name, self.cfg.node_pool_label_key
            ));
        };
        let r = resolve::for_node(
            r,
            info.labels.get(NODE_PROFILE_LABEL).map(String::as_str),
            info.labels.get(NODE_GPUS_LABEL).map(String::as_str),
            &self.profiles,
        )
        .map_err(|e| format!("node {}: {e}", info.name))?;
        Ok(Some(r))
    }

    /// Adds or updates a node. Returns whether its desired state may have changed.
    pub fn upsert_node(&mut self, info: NodeInfo) -> bool {
        let resolved = self.resolve_node(&info);
        let uuids = match &resolved {
            Ok(Some(r)) => gpu_uuids(&info.name, r),
            _ => Vec::new(),
        };
        let name = info.name.clone();
        match self.nodes.get_mut(&name) {
            Some(e) if e.info == info && e.resolved == resolved => return false,
            Some(e) => {
                e.info = info;
                e.resolved = resolved;
                if e.uuids != uuids {
                    e.holders = vec![None; uuids.len()];
                    e.uuids = uuids;
                    e.recorded.clear();
                }
            }
            None => {
                let n = uuids.len();
                self.nodes.insert(name.clone(), NodeEntry { info, resolved, uuids, holders: vec![None; n], recorded: Vec::new() });
                if let Some(t) = self.pending_seeds.remove(&name) {
                    self.seed_recorded(&name, &t);
                }
            }
        }
        self.reallocate(&name);
        true
    }

    pub fn remove_node(&mut self, name: &str) -> bool {
        self.nodes.remove(name).is_some()
    }

    /// The labels a known node carries now.
    pub fn node_labels(&self, name: &str) -> Option<BTreeMap<String, String>> {
        self.nodes.get(name).map(|e| e.info.labels.clone())
    }

    /// Every GPU-holding pod the index knows.
    pub fn pod_keys(&self) -> Vec<PodKey> {
        self.pods.keys().cloned().collect()
    }

    pub fn node_names(&self) -> impl Iterator<Item = &String> {
        self.nodes.keys()
    }

    /// A node's problem (unknown pool, bad node labels), for logs and Events.
    pub fn node_error(&self, name: &str) -> Option<&str> {
        self.nodes.get(name).and_then(|e| e.resolved.as_ref().err().map(String::as_str))
    }

    /// Seeds the allocations recorded in a node's ConfigMap (at start, before the node's pods
    /// arrive; kept until the node is seen if it is not known yet). A pod recorded there keeps
    /// its GPUs if it still wants that many and they are free.
    pub fn seed_recorded(&mut self, node: &str, t: &NodeTopology) {
        if !self.nodes.contains_key(node) {
            self.pending_seeds.insert(node.to_string(), t.clone());
            return;
        }
        let recorded = t
            .gpus
            .iter()
            .map(|g| {
                let a = &g.status.allocated_by;
                (!a.pod.is_empty()).then(|| (a.namespace.clone(), a.pod.clone(), g.status.pod_gpu_usage_status.keys().next().cloned()))
            })
            .collect();
        if let Some(e) = self.nodes.get_mut(node) {
            // Only meaningful if the GPUs are the same ones.
            if t.gpus.iter().map(|g| &g.id).eq(e.uuids.iter()) {
                e.recorded = recorded;
            }
        }
        self.reallocate(node);
    }

    /// Adds or updates a pod. Returns the nodes whose state changed.
    pub fn upsert_pod(&mut self, pod: PodInfo) -> Vec<String> {
        let key = pod.key();
        let mut dirty = Vec::new();
        if let Some(old) = self.pods.get(&key) {
            if *old == pod {
                return dirty;
            }
            if old.node != pod.node || (old.uid != pod.uid) {
                if let Some(n) = old.node.clone() {
                    self.detach(&key, &n);
                    dirty.push(n);
                }
            }
        }
        let relevant = pod.holds_gpus();
        let node = pod.node.clone();
        if relevant {
            let n = node.clone().expect("holds_gpus implies a node");
            self.by_node.entry(n.clone()).or_default().insert(key.clone());
            self.pods.insert(key, pod);
            self.reallocate(&n);
            if !dirty.contains(&n) {
                dirty.push(n);
            }
        } else if self.pods.remove(&key).is_some() {
            if let Some(n) = node {
                self.detach(&key, &n);
                if !dirty.contains(&n) {
                    dirty.push(n);
                }
            }
        }
        dirty
    }

    /// Removes a pod (deleted). Returns the node it was on.
    pub fn remove_pod(&mut self, key: &PodKey) -> Option<String> {
        let pod = self.pods.remove(key)?;
        let n = pod.node?;
        self.detach(key, &n);
        Some(n)
    }

    fn detach(&mut self, key: &PodKey, node: &str) {
        if let Some(s) = self.by_node.get_mut(node) {
            s.remove(key);
            if s.is_empty() {
                self.by_node.remove(node);
            }
        }
        self.reallocate(node);
    }

    /// GPU indices held by a pod.
    pub fn held_by(&self, key: &PodKey) -> Vec<usize> {
        let Some(n) = self.pods.get(key).and_then(|p| p.node.as_ref()) else { return Vec::new() };
        self.nodes
            .get(n)
            .map(|e| e.holders.iter().enumerate().filter(|(_, h)| h.as_ref() == Some(key)).map(|(i, _)| i).collect())
            .unwrap_or_default()
    }

    fn reallocate(&mut self, node: &str) {
        let Some(entry) = self.nodes.get(node) else { return };
        let n = entry.uuids.len();
        let mut order: Vec<&PodInfo> = self.by_node.get(node).into_iter().flatten().filter_map(|k| self.pods.get(k)).collect();
        order.sort_by(|a, b| (a.created, &a.namespace, &a.name).cmp(&(b.created, &b.namespace, &b.name)));
        let mut new: Vec<Option<PodKey>> = vec![None; n];
        let mut done: BTreeSet<PodKey> = BTreeSet::new();
        // 1. grants
        for p in &order {
            let Some(grant) = p.grant().filter(|g| !g.is_empty()) else { continue };
            let idx: Option<Vec<usize>> = grant.iter().map(|u| entry.uuids.iter().position(|id| id.eq_ignore_ascii_case(u))).collect();
            if let Some(idx) = idx {
                let distinct: BTreeSet<usize> = idx.iter().copied().collect();
                if distinct.len() == idx.len() && idx.iter().all(|&i| new[i].is_none()) {
                    for i in idx {
                        new[i] = Some(p.key());
                    }
                    done.insert(p.key());
                }
            }
        }
        // 2. previous holdings, then ConfigMap records
        for p in &order {
            if done.contains(&p.key()) {
                continue;
            }
            let want = p.wanted() as usize;
            let key = p.key();
            let prev: Vec<usize> = entry.holders.iter().enumerate().filter(|(_, h)| h.as_ref() == Some(&key)).map(|(i, _)| i).collect();
            let prev = if prev.len() == want {
                prev
            } else {
                entry
                    .recorded
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| {
                        r.as_ref().is_some_and(|(ns, name, uid)| {
                            *ns == p.namespace && *name == p.name && uid.as_ref().is_none_or(|u| *u == p.uid)
                        })
                    })
                    .map(|(i, _)| i)
                    .filter(|&i| i < n)
                    .collect()
            };
            if want > 0 && prev.len() == want && prev.iter().all(|&i| new[i].is_none()) {
                for i in prev {
                    new[i] = Some(key.clone());
                }
                done.insert(key);
            }
        }
        // 3. first fit, all or nothing
        for p in &order {
            if done.contains(&p.key()) {
                continue;
            }
            let want = p.wanted() as usize;
            let free: Vec<usize> = (0..n).filter(|&i| new[i].is_none()).take(want).collect();
            if want > 0 && free.len() == want {
                for i in free {
                    new[i] = Some(p.key());
                }
            }
        }
        let entry = self.nodes.get_mut(node).expect("checked above");
        entry.holders = new;
    }

    /// The desired state of a node in a pool; `None` when the node is unknown or in no pool.
    pub fn view(&self, name: &str) -> Option<NodeView> {
        let e = self.nodes.get(name)?;
        let r = e.resolved.as_ref().ok()?.as_ref()?;
        let gpus = e
            .uuids
            .iter()
            .zip(&e.holders)
            .map(|(id, h)| {
                let mut status = GpuStatus::default();
                if let Some(p) = h.as_ref().and_then(|k| self.pods.get(k)) {
                    status.allocated_by =
                        ContainerDetails { namespace: p.namespace.clone(), pod: p.name.clone(), container: p.container.clone() };
                    if !p.is_reservation() {
                        status.pod_gpu_usage_status.insert(p.uid.clone(), p.usage(r.memory_mib));
                    }
                }
                GpuDetails { id: id.clone(), status }
            })
            .collect();
        let topology = NodeTopology {
            gpu_memory: r.memory_mib,
            gpu_product: r.product.clone(),
            driver_version: r.driver_version.clone(),
            cuda_version: r.cuda_version.clone(),
            mig_strategy: self.cfg.mig_strategy.clone(),
            other_devices: r.other_devices.clone(),
            gpus,
            profile: Some(r.profile_name.clone()),
            pool: Some(r.pool.clone()),
        };
        let kwok = e.info.is_kwok();
        let labels = labels::desired(
            r,
            LabelOptions { mig_strategy: &self.cfg.mig_strategy, kwok, disable_deploy_labels: self.opts.disable_deploy_labels },
        );
        let mut capacity = BTreeMap::from([(GPU_RESOURCE.to_string(), u64::from(r.gpu_count))]);
        for d in &r.other_devices {
            capacity.insert(d.name.clone(), d.count);
        }
        Some(NodeView {
            topology,
            labels,
            capacity,
            config_file: config_file(name, r),
            spec: node_spec(name, r),
            kwok,
            kwok_annotation: e.info.kwok_annotation.clone(),
        })
    }
}

/// The node config file the fake NVML reads (`FAKEGPU_CONFIG`).
pub fn config_file(node: &str, r: &ResolvedPool) -> NodeConfigFile {
    NodeConfigFile {
        node: Some(node.to_string()),
        profile: Some(if r.builtin { ProfileRef::Named(r.profile_name.clone()) } else { ProfileRef::Inline(Box::new(r.profile.clone())) }),
        gpus: (r.gpu_count > 0).then_some(r.gpu_count),
        overrides: if r.builtin { r.model_overrides.clone() } else { None },
        driver_version: Some(r.driver_version.clone()),
        cuda_driver_version: Some(r.cuda_driver_version()),
    }
}

/// GPU UUIDs exactly as the fake NVML computes them for this node.
pub fn gpu_uuids(node: &str, r: &ResolvedPool) -> Vec<String> {
    if r.gpu_count == 0 {
        return Vec::new();
    }
    SimulatedNode::new(node_spec(node, r)).gpus.into_iter().map(|g| g.uuid).collect()
}

/// The node the fake NVML simulates for `r`.
pub fn node_spec(node: &str, r: &ResolvedPool) -> NodeSpec {
    NodeSpec {
        node_name: node.to_string(),
        profile: r.profile.clone(),
        gpu_count: r.gpu_count,
        driver_version: r.driver_version.clone(),
        cuda_driver_version: r.cuda_driver_version(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::{GRANT_ANNOTATION, UTILIZATION_ANNOTATION};
    use crate::topology::Range;

    const POOL_KEY: &str = "run.ai/simulated-gpu-node-pool";

    fn index() -> Index {
        let cfg = ClusterConfig::parse(
            "nodePools:\n  k80:\n    gpuProduct: Tesla-K80\n    gpuCount: 2\n    gpuMemory: 11441\n  big:\n    gpuProduct: NVIDIA-A100-SXM4-40GB\n    gpuCount: 8\n    gpuMemory: 40960\n    otherDevices: [{name: nvidia.com/mig-1g.5gb, count: 7}]\n",
        )
        .unwrap();
        Index::new(cfg, Profiles::new(), IndexOptions::default()).unwrap()
    }

    fn node(name: &str, pool: Option<&str>) -> NodeInfo {
        let mut labels = BTreeMap::new();
        if let Some(p) = pool {
            labels.insert(POOL_KEY.to_string(), p.to_string());
        }
        NodeInfo { name: name.into(), labels, kwok_annotation: Some("fake".into()) }
    }

    fn pod(name: &str, node: &str, gpus: u32, created: i64) -> PodInfo {
        PodInfo {
            uid: format!("uid-{name}"),
            namespace: "ns".into(),
            name: name.into(),
            node: Some(node.into()),
            phase: "Running".into(),
            created,
            gpus,
            container: "c".into(),
            ..PodInfo::default()
        }
    }

    fn key(name: &str) -> PodKey {
        ("ns".into(), name.into())
    }

    fn holders(ix: &Index, node: &str) -> Vec<String> {
        ix.view(node).unwrap().topology.gpus.iter().map(|g| g.status.allocated_by.pod.clone()).collect()
    }

    fn assert_invariants(ix: &Index) {
        for name in ix.node_names() {
            let Some(v) = ix.view(name) else { continue };
            let mut count: BTreeMap<String, u32> = BTreeMap::new();
            for g in &v.topology.gpus {
                if !g.status.allocated_by.pod.is_empty() {
                    *count.entry(g.status.allocated_by.pod.clone()).or_default() += 1;
                }
            }
            for (p, c) in count {
                let info = &ix.pods[&("ns".to_string(), p.clone())];
                assert_eq!(c, info.wanted(), "pod {p} holds {c} of {}", info.wanted());
            }
        }
    }

    #[test]
    fn node_in_pool_gets_topology_labels_capacity() {
        let mut ix = index();
        assert!(ix.upsert_node(node("n1", Some("big"))));
        assert!(!ix.upsert_node(node("n1", Some("big"))), "no change, no work");
        let v = ix.view("n1").unwrap();
        assert_eq!(v.topology.gpus.len(), 8);
        assert_eq!(v.topology.gpu_product, "NVIDIA-A100-SXM4-40GB");
        assert_eq!(v.topology.mig_strategy, "mixed");
        assert_eq!(v.capacity, BTreeMap::from([("nvidia.com/gpu".into(), 8), ("nvidia.com/mig-1g.5gb".into(), 7)]));
        assert_eq!(v.labels["nvidia.com/gpu.count"], "8");
        assert!(v.kwok);
        // UUIDs are the fake NVML's for this node.
        let spec = fakegpu_model::NodeSpec::builtin("a100-40gb", Some(8), "n1").unwrap();
        let want: Vec<String> = SimulatedNode::new(spec).gpus.into_iter().map(|g| g.uuid).collect();
        assert_eq!(v.topology.gpus.iter().map(|g| g.id.clone()).collect::<Vec<_>>(), want);
        assert_eq!(v.config_file.gpus, Some(8));
        assert!(matches!(v.config_file.profile, Some(ProfileRef::Named(ref n)) if n == "a100-40gb"));
        // Not in a pool, unknown pool.
        ix.upsert_node(node("n2", None));
        assert!(ix.view("n2").is_none() && ix.node_error("n2").is_none());
        ix.upsert_node(node("n3", Some("nope")));
        assert!(ix.view("n3").is_none());
        assert!(ix.node_error("n3").unwrap().contains("nope"));
    }

    #[test]
    fn first_fit_in_creation_order_and_release() {
        let mut ix = index();
        ix.upsert_node(node("n1", Some("big")));
        assert_eq!(ix.upsert_pod(pod("b", "n1", 2, 20)), ["n1"]);
        ix.upsert_pod(pod("a", "n1", 3, 10));
        // a is older: it is placed first only when both are new; b already held 0,1 and keeps them.
        assert_eq!(ix.held_by(&key("b")), [0, 1]);
        assert_eq!(ix.held_by(&key("a")), [2, 3, 4]);
        ix.upsert_pod(pod("c", "n1", 4, 30));
        assert!(ix.held_by(&key("c")).is_empty(), "only 3 free: all or nothing");
        assert_eq!(ix.remove_pod(&key("a")), Some("n1".into()));
        assert_eq!(ix.held_by(&key("c")), [2, 3, 4, 5]);
        assert_eq!(holders(&ix, "n1"), ["b", "b", "c", "c", "c", "c", "", ""]);
        // Finished pods release.
        let mut done = pod("b", "n1", 2, 20);
        done.phase = "Succeeded".into();
        ix.upsert_pod(done);
        assert_eq!(holders(&ix, "n1"), ["", "", "c", "c", "c", "c", "", ""]);
        assert_invariants(&ix);
    }

    #[test]
    fn usage_recorded_per_pod_uid() {
        let mut ix = index();
        ix.upsert_node(node("n1", Some("k80")));
        let mut p = pod("p", "n1", 2, 1);
        p.annotations.insert(UTILIZATION_ANNOTATION.into(), "40-60".into());
        ix.upsert_pod(p);
        let v = ix.view("n1").unwrap();
        for g in &v.topology.gpus {
            assert_eq!(g.status.allocated_by, ContainerDetails { namespace: "ns".into(), pod: "p".into(), container: "c".into() });
            let u = g.status.pod_gpu_usage_status["uid-p"];
            assert_eq!((u.utilization, u.fb_used), (Range { min: 40, max: 60 }, 11441));
        }
        // A reservation pod: allocatedBy only.
        let mut r = pod("r", "n1", 1, 2);
        r.namespace = crate::pod::RESERVATION_NAMESPACE.into();
        ix.remove_pod(&key("p"));
        ix.upsert_pod(r);
        let v = ix.view("n1").unwrap();
        assert_eq!(v.topology.gpus[0].status.allocated_by.pod, "r");
        assert!(v.topology.gpus[0].status.pod_gpu_usage_status.is_empty());
    }

    #[test]
    fn grants_are_authoritative() {
        let mut ix = index();
        ix.upsert_node(node("n1", Some("big")));
        let uuids: Vec<String> = ix.view("n1").unwrap().topology.gpus.iter().map(|g| g.id.clone()).collect();
        ix.upsert_pod(pod("a", "n1", 2, 1));
        assert_eq!(ix.held_by(&key("a")), [0, 1]);
        // b is granted GPU 1 and 5: a moves off GPU 1.
        let mut b = pod("b", "n1", 2, 2);
        b.annotations.insert(GRANT_ANNOTATION.into(), format!("{},{}", uuids[1].to_uppercase(), uuids[5]));
        ix.upsert_pod(b);
        assert_eq!(ix.held_by(&key("b")), [1, 5]);
        assert_eq!(ix.held_by(&key("a")), [0, 2]);
        // The grant arrives for a later: it moves there.
        let mut a = pod("a", "n1", 2, 1);
        a.annotations.insert(GRANT_ANNOTATION.into(), format!("{},{}", uuids[6], uuids[7]));
        ix.upsert_pod(a);
        assert_eq!(ix.held_by(&key("a")), [6, 7]);
        // Unknown UUIDs: ignored, deterministic choice.
        let mut c = pod("c", "n1", 1, 3);
        c.annotations.insert(GRANT_ANNOTATION.into(), "GPU-unknown".into());
        ix.upsert_pod(c);
        assert_eq!(ix.held_by(&key("c")), [0]);
        // Two pods granted the same GPU: the older wins, the other falls back to first fit.
        let mut d = pod("d", "n1", 1, 4);
        d.annotations.insert(GRANT_ANNOTATION.into(), uuids[6].clone());
        ix.upsert_pod(d);
        assert_eq!(ix.held_by(&key("d")), [2]);
        assert_invariants(&ix);
    }

    #[test]
    fn restart_rebuild_keeps_recorded_allocations() {
        let mut ix = index();
        ix.upsert_node(node("n1", Some("big")));
        ix.upsert_pod(pod("a", "n1", 2, 1));
        ix.upsert_pod(pod("b", "n1", 2, 2));
        ix.remove_pod(&key("a"));
        ix.upsert_pod(pod("c", "n1", 3, 3));
        let before = ix.view("n1").unwrap().topology;
        assert_eq!(holders(&ix, "n1"), ["c", "c", "b", "b", "c", "", "", ""]);

        // A new process: seed from the ConfigMap, then pods arrive in any order.
        let mut ix2 = index();
        ix2.upsert_node(node("n1", Some("big")));
        ix2.seed_recorded("n1", &before);
        ix2.upsert_pod(pod("c", "n1", 3, 3));
        ix2.upsert_pod(pod("b", "n1", 2, 2));
        assert_eq!(ix2.view("n1").unwrap().topology, before);
        // Seeded before the node is known, pods before the node too.
        let mut ix4 = index();
        ix4.seed_recorded("n1", &before);
        ix4.upsert_pod(pod("c", "n1", 3, 3));
        ix4.upsert_pod(pod("b", "n1", 2, 2));
        ix4.upsert_node(node("n1", Some("big")));
        assert_eq!(ix4.view("n1").unwrap().topology, before);
        // A pod of the same name but another uid (re-created) does not inherit.
        let mut ix3 = index();
        ix3.upsert_node(node("n1", Some("big")));
        ix3.seed_recorded("n1", &before);
        let mut b2 = pod("b", "n1", 2, 5);
        b2.uid = "other".into();
        ix3.upsert_pod(b2);
        assert_eq!(ix3.held_by(&key("b")), [0, 1]);
    }

    #[test]
    fn pool_switch_and_node_removal() {
        let mut ix = index();
        ix.upsert_node(node("n1", Some("big")));
        ix.upsert_pod(pod("a", "n1", 2, 1));
        ix.upsert_node(node("n1", Some("k80")));
        let v = ix.view("n1").unwrap();
        assert_eq!((v.topology.gpus.len(), v.capacity["nvidia.com/gpu"]), (2, 2));
        assert_eq!(v.topology.gpu_product, "Tesla-K80");
        assert_eq!(holders(&ix, "n1"), ["a", "a"]);
        ix.upsert_pod(pod("big", "n1", 4, 2));
        assert!(ix.held_by(&key("big")).is_empty());
        ix.upsert_node(node("n1", None));
        assert!(ix.view("n1").is_none());
        ix.upsert_node(node("n1", Some("big")));
        assert_eq!(holders(&ix, "n1")[..6], ["a", "a", "big", "big", "big", "big"]);
        assert!(ix.remove_node("n1"));
        assert!(ix.view("n1").is_none());
        assert_invariants(&ix);
    }

    #[test]
    fn bad_config_keeps_the_old_one() {
        let mut ix = index();
        ix.upsert_node(node("n1", Some("big")));
        let bad = ClusterConfig::parse("nodePools:\n  big:\n    gpu: {profile: h900}\n").unwrap();
        assert!(ix.set_config(bad, Profiles::new()).is_err());
        assert_eq!(ix.view("n1").unwrap().topology.gpus.len(), 8);
        let good = ClusterConfig::parse("nodePools:\n  big:\n    gpu: {profile: h100, overrides: {device_count: 4}}\n").unwrap();
        assert_eq!(ix.set_config(good, Profiles::new()).unwrap(), ["n1"]);
        let v = ix.view("n1").unwrap();
        assert_eq!((v.topology.gpus.len(), v.topology.gpu_product.as_str()), (4, "NVIDIA H100 80GB HBM3"));
    }

    #[test]
    fn node_labels_override_pool() {
        let mut ix = index();
        let mut n = node("n1", Some("k80"));
        n.labels.insert(NODE_PROFILE_LABEL.into(), "h100".into());
        n.labels.insert(NODE_GPUS_LABEL.into(), "4".into());
        ix.upsert_node(n.clone());
        assert_eq!(ix.view("n1").unwrap().topology.gpus.len(), 4);
        n.labels.insert(NODE_GPUS_LABEL.into(), "x".into());
        ix.upsert_node(n);
        assert!(ix.view("n1").is_none() && ix.node_error("n1").is_some());
    }

    /// Many random operations: the invariants always hold.
    #[test]
    fn random_operations_keep_invariants() {
        let mut ix = index();
        let mut seed: u64 = 42;
        let mut next = |m: u64| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) % m
        };
        for step in 0..3000 {
            let n = format!("n{}", next(3));
            match next(6) {
                0 => {
                    let pool = ["big", "k80"][next(2) as usize];
                    ix.upsert_node(node(&n, Some(pool)));
                }
                1 => {
                    ix.remove_pod(&key(&format!("p{}", next(20))));
                }
                _ => {
                    let mut p = pod(&format!("p{}", next(20)), &n, 1 + next(3) as u32, step);
                    if next(4) == 0 {
                        if let Some(v) = ix.view(&n) {
                            let g = &v.topology.gpus[next(v.topology.gpus.len() as u64) as usize];
                            p.annotations.insert(GRANT_ANNOTATION.into(), g.id.clone());
                        }
                    }
                    ix.upsert_pod(p);
                }
            }
            assert_invariants(&ix);
        }
    }
}
