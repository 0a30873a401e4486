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
//!
//! Shared (fractional) pods hold nothing: each gets a usage entry under the GPU of the
//! reservation pod it names (same `runai-gpu-group` label, else `runai-gpu` = the reservation
//! pod's `run.ai/reserve_for_gpu_index`) on its node. Reservation pods hold GPUs like any other
//! pod, have no usage entry, and get that annotation (their GPU's UUID) unless they carry it.
//! PodGroups are kept by (namespace, name) → priority class and fill in pods' types.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use fakegpu_model::config::{NodeConfigFile, NodeSpec, ProfileRef};
use fakegpu_model::SimulatedNode;

use crate::config::{ClusterConfig, ConfigError, GPU_RESOURCE};
use crate::labels::{self, LabelOptions};
use crate::mig_strategy::MigStrategy;
use crate::pod::{PodInfo, PodKey, DEFAULT_RESERVATION_NAMESPACE, RESERVED_GPU_ANNOTATION};
use crate::resolve::{self, Profiles, ResolvedPool, NODE_GPUS_LABEL, NODE_PROFILE_LABEL};
use crate::topology::{ContainerDetails, GpuDetails, GpuStatus, NodeTopology};

/// The parts of a Node the index uses.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeInfo {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Annotation `kwok.x-k8s.io/node`, if any (`fake` = KWOK node).
    pub kwok_annotation: Option<String>,
    /// The object's resourceVersion, when it is a number (as etcd's are).
    pub version: Option<u64>,
    /// The MIG layouts the MIG manager applied (annotation
    /// [`crate::mig_manager::MIG_LAYOUT_ANNOTATION`], raw), if any.
    pub mig_layout: Option<String>,
}

impl NodeInfo {
    pub fn from_node(n: &k8s_openapi::api::core::v1::Node) -> NodeInfo {
        NodeInfo {
            name: n.metadata.name.clone().unwrap_or_default(),
            labels: n.metadata.labels.clone().unwrap_or_default(),
            kwok_annotation: n.metadata.annotations.as_ref().and_then(|a| a.get(crate::topology::KWOK_NODE_ANNOTATION).cloned()),
            version: n.metadata.resource_version.as_deref().and_then(|v| v.parse().ok()),
            mig_layout: n.metadata.annotations.as_ref().and_then(|a| a.get(crate::mig_manager::MIG_LAYOUT_ANNOTATION).cloned()),
        }
    }

    /// Whether this is an older version of the node than `known`: a watch event that arrives
    /// after the response to our own write of the node.
    pub fn older_than(&self, known: &NodeInfo) -> bool {
        matches!((self.version, known.version), (Some(mine), Some(theirs)) if mine < theirs)
    }

    /// The same node as far as the index cares (the version aside).
    fn same_as(&self, other: &NodeInfo) -> bool {
        (&self.name, &self.labels, &self.kwok_annotation, &self.mig_layout)
            == (&other.name, &other.labels, &other.kwok_annotation, &other.mig_layout)
    }

    pub fn is_kwok(&self) -> bool {
        self.kwok_annotation.as_deref() == Some("fake")
    }
}

/// Options that are not part of the cluster config.
#[derive(Debug, Clone)]
pub struct IndexOptions {
    pub disable_deploy_labels: bool,
    /// Namespace of the reservation pods (upstream `RESOURCE_RESERVATION_NAMESPACE`).
    pub reservation_namespace: String,
}

impl Default for IndexOptions {
    fn default() -> IndexOptions {
        IndexOptions { disable_deploy_labels: false, reservation_namespace: DEFAULT_RESERVATION_NAMESPACE.to_string() }
    }
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
    /// MIG device UUID → the pod holding it.
    mig_holders: BTreeMap<String, PodKey>,
    /// MIG holders read from the ConfigMap at start: MIG device UUID → (namespace, pod).
    recorded_mig: BTreeMap<String, (String, String)>,
}

/// A pod annotation the status-updater should add (it is not on the pod yet).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PodAnnotation {
    pub namespace: String,
    pub pod: String,
    /// The pod this is meant for: the patch must not land on a re-created namesake.
    pub uid: String,
    pub key: String,
    pub value: String,
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
    /// Annotations to add to pods on the node: `run.ai/reserve_for_gpu_index` = GPU UUID on
    /// reservation pods holding a GPU that do not carry it yet.
    pub pod_annotations: Vec<PodAnnotation>,
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
    /// PodGroup (namespace, name) → `spec.priorityClassName`; PodGroups without one are absent.
    pod_groups: HashMap<(String, String), String>,
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

    pub fn reservation_namespace(&self) -> &str {
        &self.opts.reservation_namespace
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
            Some(e) if info.older_than(&e.info) => return false,
            Some(e) if e.info.same_as(&info) && e.resolved == resolved => {
                e.info.version = info.version;
                return false;
            }
            Some(e) => {
                e.info = info;
                e.resolved = resolved;
                if e.uuids != uuids {
                    e.holders = vec![None; uuids.len()];
                    e.uuids = uuids;
                    e.recorded.clear();
                    e.mig_holders.clear();
                    e.recorded_mig.clear();
                }
            }
            None => {
                let n = uuids.len();
                self.nodes.insert(
                    name.clone(),
                    NodeEntry {
                        info,
                        resolved,
                        uuids,
                        holders: vec![None; n],
                        recorded: Vec::new(),
                        mig_holders: BTreeMap::new(),
                        recorded_mig: BTreeMap::new(),
                    },
                );
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

    /// Every pod the index keeps (holding GPUs, or sharing a reserved one).
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
                (!a.pod.is_empty()).then(|| {
                    // The holder's UID is its own usage entry. A reservation pod has none: the
                    // entries under its GPU are its shared pods' (also in ConfigMaps written
                    // before `sharedBy` existed), so it is matched by name alone.
                    let uid = if a.namespace == self.opts.reservation_namespace {
                        None
                    } else {
                        g.status.pod_gpu_usage_status.keys().find(|u| !g.status.shared_by.contains_key(*u)).cloned()
                    };
                    (a.namespace.clone(), a.pod.clone(), uid)
                })
            })
            .collect();
        let recorded_mig = t
            .gpus
            .iter()
            .flat_map(|g| g.mig.iter().flatten())
            .filter_map(|m| m.allocated_by.as_ref().map(|a| (m.id.clone(), (a.namespace.clone(), a.pod.clone()))))
            .collect();
        if let Some(e) = self.nodes.get_mut(node) {
            // Only meaningful if the GPUs are the same ones (MIG UUIDs derive from theirs).
            if t.gpus.iter().map(|g| &g.id).eq(e.uuids.iter()) {
                e.recorded = recorded;
                e.recorded_mig = recorded_mig;
            }
        }
        self.reallocate(node);
    }

    /// Whether the index keeps a pod: it holds GPUs or MIG devices, or uses a shared GPU.
    fn is_relevant(&self, pod: &PodInfo) -> bool {
        pod.holds_gpus() || pod.holds_mig_devices() || pod.shared_ref(&self.opts.reservation_namespace).is_some()
    }

    /// Adds or updates a pod. Returns the nodes whose state changed.
    pub fn upsert_pod(&mut self, mut pod: PodInfo) -> Vec<String> {
        pod.pod_group_priority = pod.pod_group_name().and_then(|g| self.pod_groups.get(&(pod.namespace.clone(), g.to_string()))).cloned();
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
        let relevant = self.is_relevant(&pod);
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

    /// Sets the priority class of PodGroup `namespace/name` (`None`: the PodGroup is gone or
    /// has none). Returns the nodes whose pods' usage changed.
    pub fn upsert_pod_group(&mut self, namespace: &str, name: &str, priority: Option<String>) -> Vec<String> {
        let key = (namespace.to_string(), name.to_string());
        let before = match &priority {
            Some(p) => self.pod_groups.insert(key, p.clone()),
            None => self.pod_groups.remove(&key),
        };
        if before == priority {
            return Vec::new();
        }
        let mut dirty = BTreeSet::new();
        for p in self.pods.values_mut() {
            if p.namespace == namespace && p.pod_group_name() == Some(name) && p.pod_group_priority != priority {
                p.pod_group_priority.clone_from(&priority);
                dirty.extend(p.node.clone());
            }
        }
        dirty.into_iter().collect()
    }

    /// Every PodGroup with a priority class the index knows, as (namespace, name).
    pub fn pod_group_keys(&self) -> Vec<(String, String)> {
        self.pod_groups.keys().cloned().collect()
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
            let grant = p.granted_gpus();
            if grant.is_empty() {
                continue;
            }
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
                let recorded: Vec<usize> = entry
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
                    .collect();
                // A reservation pod's annotation names the GPU it was given (we wrote it), so it
                // keeps that GPU even when the ConfigMap is lost: its shared pods may match on it.
                let annotated = (p.is_reservation(&self.opts.reservation_namespace) && want == 1)
                    .then(|| p.reserved_gpu().and_then(|v| entry.uuids.iter().position(|id| id.eq_ignore_ascii_case(v))))
                    .flatten();
                match annotated {
                    Some(i) if recorded.len() != want => vec![i],
                    _ => recorded,
                }
            };
            if want > 0 && prev.len() == want && prev.iter().all(|&i| new[i].is_none()) {
                for i in prev {
                    new[i] = Some(key.clone());
                }
                done.insert(key);
            }
        }
        // 3. first fit, all or nothing, among the GPUs offered whole: one the MIG manager put in
        //    MIG mode is offered as its MIG devices only (NVIDIA's plugin, mixed strategy), so a
        //    whole-GPU pod never lands on it.
        let partitioned = mig_partitioned(entry.info.mig_layout.as_deref(), n);
        for p in &order {
            if done.contains(&p.key()) {
                continue;
            }
            let want = p.wanted() as usize;
            let free: Vec<usize> = (0..n).filter(|&i| new[i].is_none() && !partitioned[i]).take(want).collect();
            if want > 0 && free.len() == want {
                for i in free {
                    new[i] = Some(p.key());
                }
            }
        }
        let single = MigStrategy::parse(&self.cfg.mig_strategy) == Some(MigStrategy::Single);
        let mig = place_mig_devices(node, entry, &order, single, &new);
        let entry = self.nodes.get_mut(node).expect("checked above");
        entry.holders = new;
        entry.mig_holders = mig;
    }

    /// The desired state of a node in a pool; `None` when the node is unknown or in no pool.
    pub fn view(&self, name: &str) -> Option<NodeView> {
        let e = self.nodes.get(name)?;
        let r = e.resolved.as_ref().ok()?.as_ref()?;
        let res_ns = self.opts.reservation_namespace.as_str();
        let mut gpus: Vec<GpuDetails> = e
            .uuids
            .iter()
            .zip(&e.holders)
            .map(|(id, h)| {
                let mut status = GpuStatus::default();
                if let Some(p) = h.as_ref().and_then(|k| self.pods.get(k)) {
                    status.allocated_by =
                        ContainerDetails { namespace: p.namespace.clone(), pod: p.name.clone(), container: p.container.clone() };
                    if !p.is_reservation(res_ns) {
                        status.pod_gpu_usage_status.insert(p.uid.clone(), p.usage(r.memory_mib));
                    }
                }
                GpuDetails { id: id.clone(), status, mig: None }
            })
            .collect();
        let spec = node_spec(name, r);
        match node_mig_devices(&spec, &e.uuids, e.info.mig_layout.as_deref()) {
            Ok(devices) => {
                let partitioned = mig_partitioned(e.info.mig_layout.as_deref(), gpus.len());
                for (g, on) in gpus.iter_mut().zip(partitioned) {
                    g.mig = on.then(Vec::new);
                }
                for (gpu, mut d) in devices {
                    if let Some(p) = e.mig_holders.get(&d.id).and_then(|k| self.pods.get(k)) {
                        d.allocated_by =
                            Some(ContainerDetails { namespace: p.namespace.clone(), pod: p.name.clone(), container: p.container.clone() });
                        d.usage.insert(p.uid.clone(), p.usage(d.memory));
                    }
                    gpus[gpu].mig.get_or_insert_with(Vec::new).push(d);
                }
            }
            // The GPUs stay whole: the MIG manager reports the value as its failure.
            Err(err) => tracing::warn!(node = %name, "{err}"),
        }
        let shared = self.shared_placement(name, e);
        for (p, gpu) in &shared.placed {
            let status = &mut gpus[*gpu].status;
            status.pod_gpu_usage_status.insert(p.uid.clone(), p.usage(r.memory_mib));
            status.shared_by.insert(
                p.uid.clone(),
                ContainerDetails { namespace: p.namespace.clone(), pod: p.name.clone(), container: p.container.clone() },
            );
        }
        let topology = NodeTopology {
            gpu_memory: r.memory_mib,
            gpu_product: r.product.clone(),
            driver_version: r.driver_version.clone(),
            cuda_version: r.cuda_version(),
            mig_strategy: self.cfg.mig_strategy.clone(),
            other_devices: r.other_devices.clone(),
            gpus,
            profile: Some(r.profile_name.clone()),
            pool: Some(r.pool.clone()),
        };
        let kwok = e.info.is_kwok();
        let layouts = live_layouts(e.info.mig_layout.as_deref(), r.gpu_count as usize);
        let labels = labels::desired(
            r,
            &layouts,
            LabelOptions { node: name, mig_strategy: &self.cfg.mig_strategy, kwok, disable_deploy_labels: self.opts.disable_deploy_labels },
        );
        let capacity = topology.resources();
        Some(NodeView {
            topology,
            labels,
            capacity,
            config_file: config_file(name, r),
            spec,
            kwok,
            kwok_annotation: e.info.kwok_annotation.clone(),
            pod_annotations: shared.annotations,
        })
    }

    /// The reservation pods on `node` holding a GPU, oldest first, with that GPU (the first
    /// if a reservation pod holds several) and the value that identifies it for `runai-gpu`
    /// matching: its `run.ai/reserve_for_gpu_index` annotation, else the UUID we will write.
    fn reservations<'a>(&'a self, node: &str, e: &'a NodeEntry) -> Vec<(&'a PodInfo, usize, &'a str)> {
        let res_ns = self.opts.reservation_namespace.as_str();
        let mut out: Vec<(&PodInfo, usize, &str)> = self
            .by_node
            .get(node)
            .into_iter()
            .flatten()
            .filter_map(|k| self.pods.get(k))
            .filter(|p| p.is_reservation(res_ns))
            .filter_map(|p| {
                let key = p.key();
                let gpu = e.holders.iter().position(|h| h.as_ref() == Some(&key))?;
                Some((p, gpu, p.reserved_gpu().unwrap_or(e.uuids[gpu].as_str())))
            })
            .collect();
        out.sort_by(|a, b| (a.0.created, &a.0.namespace, &a.0.name).cmp(&(b.0.created, &b.0.namespace, &b.0.name)));
        out
    }

    /// Where each shared pod on `node` goes, and the reservation annotations to write.
    fn shared_placement<'a>(&'a self, node: &str, e: &'a NodeEntry) -> SharedPlacement<'a> {
        let res_ns = self.opts.reservation_namespace.as_str();
        let reservations = self.reservations(node, e);
        let annotations = reservations
            .iter()
            .filter(|(p, _, _)| p.reserved_gpu().is_none())
            .map(|(p, gpu, _)| PodAnnotation {
                namespace: p.namespace.clone(),
                pod: p.name.clone(),
                uid: p.uid.clone(),
                key: RESERVED_GPU_ANNOTATION.to_string(),
                value: e.uuids[*gpu].clone(),
            })
            .collect();
        let mut placed = Vec::new();
        for p in self.by_node.get(node).into_iter().flatten().filter_map(|k| self.pods.get(k)) {
            let Some(want) = p.shared_ref(res_ns) else { continue };
            let by_group = want.group.and_then(|g| reservations.iter().find(|(r, _, _)| r.gpu_group.as_deref() == Some(g)));
            let by_gpu = || want.gpu.and_then(|v| reservations.iter().find(|(_, _, id)| id.eq_ignore_ascii_case(v)));
            if let Some((_, gpu, _)) = by_group.or_else(by_gpu) {
                placed.push((p, *gpu));
            }
        }
        SharedPlacement { placed, annotations }
    }
}

struct SharedPlacement<'a> {
    /// Shared pod → GPU index.
    placed: Vec<(&'a PodInfo, usize)>,
    annotations: Vec<PodAnnotation>,
}

/// The node config file the fake NVML reads (`FAKEGPU_CONFIG`).
pub fn config_file(node: &str, r: &ResolvedPool) -> NodeConfigFile {
    NodeConfigFile {
        node: Some(node.to_string()),
        profile: Some(if r.builtin { ProfileRef::Named(r.profile_name.clone()) } else { ProfileRef::Inline(Box::new(r.profile.clone())) }),
        gpus: (r.gpu_count > 0).then_some(r.gpu_count),
        overrides: if r.builtin { r.model_overrides.clone() } else { None },
        driver_version: Some(r.driver_version.clone()),
        cuda_driver_version: Some(r.cuda_driver_version),
        numa: r.numa_layout(),
    }
}

/// Each of `n` GPUs' layout as the MIG manager applied it (annotation's raw value); an
/// unreadable value leaves every GPU whole, as [`set_mig_devices`] does.
fn live_layouts(applied: Option<&str>, n: usize) -> Vec<fakegpu_model::mig::MigLayout> {
    let applied = applied.and_then(|t| crate::mig_manager::parse_applied(t).ok()).unwrap_or_default();
    (0..n).map(|i| applied.get(&(i as u32)).cloned().unwrap_or_default()).collect()
}

/// Which of `n` GPUs the MIG manager put in MIG mode (an unreadable value: none).
fn mig_partitioned(applied: Option<&str>, n: usize) -> Vec<bool> {
    let applied = applied.and_then(|t| crate::mig_manager::parse_applied(t).ok()).unwrap_or_default();
    (0..n).map(|i| applied.get(&(i as u32)).is_some_and(|l| l.current)).collect()
}

/// The MIG devices of a node's GPUs (GPU index, device; no holder) under the layouts the MIG
/// manager applied (the node annotation's raw value), in NVML order. A GPU whose layout has MIG
/// mode on but no instances has no device, yet is in MIG mode ([`mig_partitioned`]).
fn node_mig_devices(
    spec: &NodeSpec,
    uuids: &[String],
    applied: Option<&str>,
) -> Result<Vec<(usize, crate::topology::MigDeviceDetails)>, crate::mig_manager::AppliedError> {
    let Some(text) = applied else { return Ok(Vec::new()) };
    let applied = crate::mig_manager::parse_applied(text)?;
    let mut out = Vec::new();
    for (i, uuid) in uuids.iter().enumerate() {
        let Some(layout) = applied.get(&(i as u32)).filter(|l| l.current) else { continue };
        for d in fakegpu_model::mig::gpu_mig_devices(&spec.profile, &spec.node_name, i as u32, uuid, layout) {
            let memory = d.gi_profile.memory_mib;
            let details = crate::topology::MigDeviceDetails {
                profile: d.profile().to_string(),
                id: d.uuid,
                gpu_instance_id: d.gpu_instance,
                compute_instance_id: d.compute_instance,
                position: d.placement.start,
                memory,
                allocated_by: None,
                usage: BTreeMap::new(),
            };
            out.push((i, details));
        }
    }
    Ok(out)
}

/// Which MIG device each pod holds, oldest pod first, all or nothing per pod: what a kubelet
/// plugin granted or a DRA claim was allocated; else what it held already (or what the
/// ConfigMap recorded at start), so a holder never moves; else the first free devices of each
/// profile it asks for (`nvidia.com/mig-<profile>`; under `single`, `nvidia.com/gpu` on a node
/// whose GPUs are partitioned asks for MIG devices of any profile, as NVIDIA's plugin offers
/// them). `whole`: the whole-GPU holders already chosen (a pod holding GPUs asks for no more).
fn place_mig_devices(node: &str, e: &NodeEntry, order: &[&PodInfo], single: bool, whole: &[Option<PodKey>]) -> BTreeMap<String, PodKey> {
    let mut out: BTreeMap<String, PodKey> = BTreeMap::new();
    let Ok(Some(r)) = &e.resolved else { return out };
    if e.info.mig_layout.is_none() {
        return out;
    }
    // Each pod's wants: resource → count, `nvidia.com/gpu` standing for any profile.
    let wants = |p: &PodInfo| -> BTreeMap<String, u32> {
        let mut w = p.mig.clone();
        let holds_whole = whole.iter().any(|h| h.as_ref() == Some(&p.key()));
        if single && p.wanted() > 0 && !holds_whole {
            w.insert(GPU_RESOURCE.to_string(), p.wanted());
        }
        w
    };
    let wanting: Vec<(&PodInfo, BTreeMap<String, u32>)> = order
        .iter()
        .copied()
        .filter(|p| p.is_active())
        .map(|p| (p, wants(p)))
        .filter(|(p, w)| !w.is_empty() || !p.granted_mig_devices().is_empty())
        .collect();
    if wanting.is_empty() {
        return out;
    }
    let devices: Vec<(String, String)> = node_mig_devices(&node_spec(node, r), &e.uuids, e.info.mig_layout.as_deref())
        .unwrap_or_default()
        .into_iter()
        .map(|(_, d)| (d.id, crate::topology::mig_resource_name(&d.profile)))
        .collect();
    let fits = |resource: &str, want: &BTreeMap<String, u32>| -> Option<String> {
        if want.contains_key(resource) {
            Some(resource.to_string())
        } else {
            want.contains_key(GPU_RESOURCE).then(|| GPU_RESOURCE.to_string())
        }
    };
    let mut placed: BTreeSet<PodKey> = BTreeSet::new();
    // 1. What a kubelet plugin granted or a DRA claim was allocated is what the pod has.
    for (p, _) in &wanting {
        let granted = p.granted_mig_devices();
        if granted.is_empty() {
            continue;
        }
        let mine: Option<Vec<&String>> =
            granted.iter().map(|g| devices.iter().map(|(u, _)| u).find(|u| u.eq_ignore_ascii_case(g) && !out.contains_key(*u))).collect();
        if let Some(mine) = mine {
            for u in mine {
                out.insert(u.clone(), p.key());
            }
            placed.insert(p.key());
        }
    }
    // 2. What it held (or the ConfigMap recorded), when that is exactly what it asks for.
    for (p, want) in &wanting {
        let key = p.key();
        if placed.contains(&key) || want.is_empty() {
            continue;
        }
        let had = |uuid: &String| {
            e.mig_holders.get(uuid) == Some(&key)
                || e.recorded_mig.get(uuid).is_some_and(|(ns, name)| *ns == p.namespace && *name == p.name)
        };
        let mine: Vec<&(String, String)> = devices.iter().filter(|(u, _)| had(u) && !out.contains_key(u)).collect();
        let mut counts: BTreeMap<String, u32> = BTreeMap::new();
        for (_, resource) in &mine {
            if let Some(k) = fits(resource, want) {
                *counts.entry(k).or_default() += 1;
            }
        }
        if counts == *want {
            for (u, _) in mine {
                out.insert(u.clone(), key.clone());
            }
            placed.insert(key);
        }
    }
    // 3. First fit.
    for (p, want) in &wanting {
        let key = p.key();
        if placed.contains(&key) || want.is_empty() {
            continue;
        }
        let mut pick: Vec<&String> = Vec::new();
        // Each device fits one of the pod's wants (its profile if named, else "any").
        for (resource, n) in want {
            let free = devices.iter().filter(|(u, r)| !out.contains_key(u) && fits(r, want).as_deref() == Some(resource.as_str()));
            pick.extend(free.map(|(u, _)| u).take(*n as usize));
        }
        if pick.len() as u32 == want.values().sum::<u32>() {
            for u in pick {
                out.insert(u.clone(), key.clone());
            }
        }
    }
    out
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
        cuda_driver_version: r.cuda_driver_version,
        numa: r.numa_layout(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::{FRACTION_ANNOTATION, GRANT_ANNOTATION, POD_GROUP_ANNOTATION, SHARED_GPU_ANNOTATION, UTILIZATION_ANNOTATION};
    use crate::topology::{GpuUsageStatus, Range};

    const RES: &str = DEFAULT_RESERVATION_NAMESPACE;

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
        NodeInfo { name: name.into(), labels, kwok_annotation: Some("fake".into()), version: None, mig_layout: None }
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

    /// A reservation pod (namespace runai-reservation, one GPU), optionally in a GPU group.
    fn reservation(name: &str, node: &str, group: Option<&str>, created: i64) -> PodInfo {
        let mut p = pod(name, node, 1, created);
        p.namespace = RES.into();
        p.gpu_group = group.map(str::to_string);
        p
    }

    /// A shared pod in namespace `team`: no GPU limit, group label and/or `runai-gpu`.
    fn shared(name: &str, node: &str, group: Option<&str>, runai_gpu: Option<&str>, fraction: &str) -> PodInfo {
        let mut p = pod(name, node, 0, 100);
        p.namespace = "team".into();
        p.gpu_group = group.map(str::to_string);
        if let Some(g) = runai_gpu {
            p.annotations.insert(SHARED_GPU_ANNOTATION.into(), g.into());
        }
        p.annotations.insert(FRACTION_ANNOTATION.into(), fraction.into());
        p
    }

    fn uuids(ix: &Index, node: &str) -> Vec<String> {
        ix.view(node).unwrap().topology.gpus.iter().map(|g| g.id.clone()).collect()
    }

    /// Per GPU: the UIDs with a usage entry there.
    fn usage_uids(ix: &Index, node: &str) -> Vec<Vec<String>> {
        ix.view(node).unwrap().topology.gpus.iter().map(|g| g.status.pod_gpu_usage_status.keys().cloned().collect()).collect()
    }

    /// The GPU index of `uid`'s usage entries on `node` (all of them).
    fn entries_of(ix: &Index, node: &str, uid: &str) -> Vec<usize> {
        usage_uids(ix, node).iter().enumerate().filter(|(_, u)| u.iter().any(|x| x == uid)).map(|(i, _)| i).collect()
    }

    fn assert_invariants(ix: &Index) {
        let res_ns = ix.reservation_namespace().to_string();
        for name in ix.node_names() {
            let Some(v) = ix.view(name) else { continue };
            let mut count: BTreeMap<PodKey, u32> = BTreeMap::new();
            let mut shared_seen: BTreeSet<String> = BTreeSet::new();
            for g in &v.topology.gpus {
                let a = &g.status.allocated_by;
                if a.pod.is_empty() {
                    assert!(g.status.pod_gpu_usage_status.is_empty() && g.status.shared_by.is_empty(), "usage on a free GPU: {g:?}");
                    continue;
                }
                let holder = &ix.pods[&(a.namespace.clone(), a.pod.clone())];
                assert_eq!(holder.node.as_deref(), Some(name.as_str()));
                *count.entry(holder.key()).or_default() += 1;
                if a.namespace != res_ns {
                    // A dedicated GPU: exactly its holder's entry, nobody shares it.
                    assert_eq!(g.status.pod_gpu_usage_status.keys().collect::<Vec<_>>(), [&holder.uid]);
                    assert!(g.status.shared_by.is_empty());
                    continue;
                }
                // A reserved GPU: only shared pods of this node, each recorded once.
                assert_eq!(g.status.pod_gpu_usage_status.keys().collect::<Vec<_>>(), g.status.shared_by.keys().collect::<Vec<_>>());
                for (uid, who) in &g.status.shared_by {
                    let p = &ix.pods[&(who.namespace.clone(), who.pod.clone())];
                    assert_eq!((&p.uid, p.node.as_deref()), (uid, Some(name.as_str())));
                    let r = p.shared_ref(&res_ns).expect("only shared pods share");
                    let by_group = r.group.is_some() && r.group == holder.gpu_group.as_deref();
                    let by_gpu = r.gpu.is_some_and(|v| holder.reserved_gpu().unwrap_or(&g.id).eq_ignore_ascii_case(v));
                    assert!(by_group || by_gpu, "{} shares {}'s GPU without naming it", p.name, holder.name);
                    assert!(shared_seen.insert(uid.clone()), "shared pod {uid} recorded twice");
                }
            }
            for (k, c) in count {
                let info = &ix.pods[&k];
                assert_eq!(c, info.wanted(), "pod {k:?} holds {c} of {}", info.wanted());
            }
        }
    }

    #[test]
    fn an_older_version_of_a_node_changes_nothing() {
        let mut ix = index();
        let at = |pool: Option<&str>, v: u64| NodeInfo { version: Some(v), ..node("n1", pool) };
        assert!(ix.upsert_node(at(Some("k80"), 10)));
        // Our own write's response came first (version 12); the watch event of version 11 is
        // older and must not bring back what it showed.
        let mut written = at(Some("k80"), 12);
        written.labels.insert("nvidia.com/gpu.count".into(), "2".into());
        assert!(ix.upsert_node(written.clone()));
        assert!(!ix.upsert_node(at(Some("k80"), 11)));
        assert_eq!(ix.node_labels("n1").unwrap().get("nvidia.com/gpu.count").map(String::as_str), Some("2"));
        // The same node in a newer version: nothing to do, and the version is kept.
        assert!(!ix.upsert_node(NodeInfo { version: Some(13), ..written }));
        assert!(!ix.upsert_node(at(Some("k80"), 12)));
        // Versions that are not numbers: every event is taken.
        assert!(ix.upsert_node(node("n1", Some("k80"))));
    }

    /// The MIG manager's applied layouts (node annotation) become the topology's MIG devices
    /// and the capacity: 1g.5gb × 7 on GPUs 0 and 1 of the A100 pool, the rest whole.
    #[test]
    fn applied_mig_layout_reaches_topology_and_capacity() {
        let mut ix = index();
        ix.upsert_node(node("n1", Some("big")));
        let profile = fakegpu_model::find_builtin("a100-40gb").unwrap();
        let seven = fakegpu_model::mig::named_layout(profile, "all-1g.5gb").unwrap();
        let applied = crate::mig_manager::Applied::from([(0, seven.clone()), (1, seven)]);
        let value = crate::mig_manager::applied_value(&applied).unwrap();
        assert!(ix.upsert_node(NodeInfo { mig_layout: Some(value), ..node("n1", Some("big")) }), "a new layout is a change");
        let v = ix.view("n1").unwrap();
        let migs = v.topology.gpus[0].mig.as_ref().unwrap();
        assert_eq!(migs.len(), 7);
        assert!(migs.iter().all(|m| m.profile == "1g.5gb" && m.id.starts_with("MIG-")));
        // The UUIDs the fake NVML reports for those instances on this node.
        let want = fakegpu_model::mig::mig_uuid("n1", &v.topology.gpus[0].id, migs[0].gpu_instance_id, migs[0].compute_instance_id);
        assert_eq!(migs[0].id, want);
        assert!(v.topology.gpus[2].mig.is_none());
        // The static otherDevices count of the same name gives way to the applied one.
        assert_eq!(v.capacity, BTreeMap::from([("nvidia.com/gpu".into(), 6), ("nvidia.com/mig-1g.5gb".into(), 14)]));
        let text = v.topology.to_yaml();
        assert_eq!(NodeTopology::from_yaml(&text).unwrap(), v.topology);
        // The labels follow the same layouts (mixed strategy): GFD's per-profile MIG labels.
        assert_eq!(v.labels["nvidia.com/mig-1g.5gb.count"], "14");
        assert_eq!(v.labels["nvidia.com/mig-1g.5gb.memory"], "4864");
        assert_eq!(v.labels["nvidia.com/gpu.replicas"], "1", "GPUs 2-7 are whole");
        // A whole-GPU pod goes to a GPU offered whole (2), not to the first free one (0).
        ix.upsert_pod(pod("whole", "n1", 1, 1));
        assert_eq!(ix.view("n1").unwrap().topology.gpus.iter().position(|g| g.status.allocated_by.pod == "whole"), Some(2));
        // Unreadable annotation: GPUs whole (the manager reports it).
        ix.upsert_node(NodeInfo { mig_layout: Some("nope".into()), ..node("n1", Some("big")) });
        let v = ix.view("n1").unwrap();
        assert!(v.topology.gpus.iter().all(|g| g.mig.is_none()));
        assert!(!v.labels.keys().any(|k| k.starts_with("nvidia.com/mig-")), "{:?}", v.labels);
    }

    /// Pods asking for `nvidia.com/mig-<profile>` hold MIG devices of the applied layout; a
    /// holder never moves, and a restart seeded from the ConfigMap gives everyone the same ones.
    #[test]
    fn mig_pods_hold_mig_devices_of_the_applied_layout() {
        let profile = fakegpu_model::find_builtin("a100-40gb").unwrap();
        let layout = |name: &str| fakegpu_model::mig::named_layout(profile, name).unwrap();
        let applied = crate::mig_manager::Applied::from([(0, layout("all-1g.5gb")), (1, layout("all-3g.20gb"))]);
        let annotated = || NodeInfo { mig_layout: crate::mig_manager::applied_value(&applied), ..node("n1", Some("big")) };
        let mig_pod = |name: &str, created: i64, wants: &[(&str, u32)]| PodInfo {
            mig: wants.iter().map(|(r, n)| (r.to_string(), *n)).collect(),
            ..pod(name, "n1", 0, created)
        };
        let held = |ix: &Index| -> BTreeMap<String, Vec<(usize, String)>> {
            let mut out: BTreeMap<String, Vec<(usize, String)>> = BTreeMap::new();
            for (i, g) in ix.view("n1").unwrap().topology.gpus.iter().enumerate() {
                for m in g.mig.iter().flatten() {
                    if let Some(a) = &m.allocated_by {
                        out.entry(a.pod.clone()).or_default().push((i, m.id.clone()));
                    }
                }
            }
            out
        };
        let mut ix = index();
        ix.upsert_node(annotated());
        let migs = |ix: &Index, gpu: usize| -> Vec<String> {
            ix.view("n1").unwrap().topology.gpus[gpu].mig.as_ref().unwrap().iter().map(|m| m.id.clone()).collect()
        };
        let (small, big) = (migs(&ix, 0), migs(&ix, 1));
        assert_eq!((small.len(), big.len()), (7, 2));
        ix.upsert_pod(mig_pod("a", 1, &[("nvidia.com/mig-1g.5gb", 2)]));
        ix.upsert_pod(mig_pod("b", 2, &[("nvidia.com/mig-3g.20gb", 1), ("nvidia.com/mig-1g.5gb", 1)]));
        // More than the node has: all or nothing.
        ix.upsert_pod(mig_pod("c", 3, &[("nvidia.com/mig-3g.20gb", 5)]));
        // A profile the node does not offer.
        ix.upsert_pod(mig_pod("d", 4, &[("nvidia.com/mig-7g.40gb", 1)]));
        let h = held(&ix);
        assert_eq!(h["a"], [(0, small[0].clone()), (0, small[1].clone())]);
        assert_eq!(h["b"], [(0, small[2].clone()), (1, big[0].clone())]);
        assert!(!h.contains_key("c") && !h.contains_key("d"), "{h:?}");
        let c = ix.view("n1").unwrap().topology.gpus[0].mig.as_ref().unwrap()[0].allocated_by.clone().unwrap();
        assert_eq!((c.namespace.as_str(), c.container.as_str()), ("ns", "c"));
        // Its usage: the whole instance's framebuffer (a dedicated holder), the pod's range.
        let d = ix.view("n1").unwrap().topology.gpus[0].mig.as_ref().unwrap()[0].clone();
        let gi = fakegpu_model::mig::gi_profiles(profile).unwrap().into_iter().find(|g| g.name == "1g.5gb").unwrap();
        assert_eq!(d.memory, gi.memory_mib);
        assert_eq!((d.usage["uid-a"].fb_used, d.usage["uid-a"].utilization.max), (gi.memory_mib, 100));
        assert!(ix.view("n1").unwrap().topology.gpus[0].mig.as_ref().unwrap()[6].usage.is_empty(), "a free device has no usage");
        // The MIG manager sees both partitioned GPUs as held.
        assert_eq!(crate::mig_manager::holders(&ix.view("n1").unwrap().topology).keys().copied().collect::<Vec<_>>(), [0, 1]);
        // a leaves; an older pod arriving now takes a free device, b keeps its own.
        ix.remove_pod(&key("a"));
        ix.upsert_pod(mig_pod("e", 0, &[("nvidia.com/mig-1g.5gb", 1)]));
        let h = held(&ix);
        assert_eq!(h["b"], [(0, small[2].clone()), (1, big[0].clone())]);
        assert_eq!(h["e"], [(0, small[0].clone())]);
        // A restart: seeded from the ConfigMap, pods arriving oldest-last, same holders.
        let before = ix.view("n1").unwrap().topology;
        let mut ix2 = index();
        ix2.seed_recorded("n1", &before);
        ix2.upsert_node(annotated());
        ix2.upsert_pod(mig_pod("c", 3, &[("nvidia.com/mig-3g.20gb", 5)]));
        ix2.upsert_pod(mig_pod("b", 2, &[("nvidia.com/mig-3g.20gb", 1), ("nvidia.com/mig-1g.5gb", 1)]));
        ix2.upsert_pod(mig_pod("e", 0, &[("nvidia.com/mig-1g.5gb", 1)]));
        assert_eq!(ix2.view("n1").unwrap().topology, before);
        // Whole-GPU pods never take a partitioned GPU; a finished pod frees its devices.
        ix.upsert_pod(pod("whole", "n1", 6, 5));
        assert_eq!(ix.view("n1").unwrap().topology.gpus.iter().filter(|g| g.status.allocated_by.pod == "whole").count(), 6);
        ix.upsert_pod(PodInfo {
            phase: "Succeeded".into(),
            ..mig_pod("b", 2, &[("nvidia.com/mig-3g.20gb", 1), ("nvidia.com/mig-1g.5gb", 1)])
        });
        assert!(!held(&ix).contains_key("b"));
        // A DRA claim allocated a MIG device (its device name: the lowercased UUID): the pod
        // holds exactly that one, and no whole GPU.
        let before = ix.view("n1").unwrap().topology;
        let mut dra = pod("dra", "n1", 0, 6);
        dra.dra_devices = vec![small[5].to_ascii_lowercase()];
        ix.upsert_pod(dra);
        assert_eq!(held(&ix)["dra"], [(0, small[5].clone())]);
        let after = ix.view("n1").unwrap().topology;
        assert!(after.gpus.iter().zip(&before.gpus).all(|(a, b)| a.status == b.status), "no whole GPU taken");
        // A new layout drops holders of devices that no longer exist.
        let whole = NodeInfo { mig_layout: None, ..node("n1", Some("big")) };
        ix.upsert_node(whole);
        assert!(held(&ix).is_empty());
    }

    /// Under `single`, `nvidia.com/gpu` on a partitioned node means MIG devices (NVIDIA's
    /// plugin offers those as `nvidia.com/gpu`): a pod asking for 3 holds 3 of them.
    #[test]
    fn single_strategy_gpu_requests_take_mig_devices() {
        let cfg = ClusterConfig::parse(
            "migStrategy: single\nnodePools:\n  small:\n    gpu:\n      profile: a100-40gb\n      overrides: {device_count: 2}\n",
        )
        .unwrap();
        let mut ix = Index::new(cfg, Profiles::new(), IndexOptions::default()).unwrap();
        let profile = fakegpu_model::find_builtin("a100-40gb").unwrap();
        let seven = fakegpu_model::mig::named_layout(profile, "all-1g.5gb").unwrap();
        let applied = crate::mig_manager::Applied::from([(0, seven.clone()), (1, seven)]);
        ix.upsert_node(NodeInfo { mig_layout: crate::mig_manager::applied_value(&applied), ..node("n1", Some("small")) });
        assert_eq!(ix.view("n1").unwrap().capacity["nvidia.com/gpu"], 14);
        ix.upsert_pod(pod("three", "n1", 3, 1));
        ix.upsert_pod(pod("twelve", "n1", 12, 2));
        let t = ix.view("n1").unwrap().topology;
        let held = |pod: &str| {
            t.gpus.iter().flat_map(|g| g.mig.iter().flatten()).filter(|m| m.allocated_by.as_ref().is_some_and(|a| a.pod == pod)).count()
        };
        assert_eq!((held("three"), held("twelve")), (3, 0), "all or nothing: 11 left for twelve");
        assert!(t.gpus.iter().all(|g| g.status.is_free()), "no whole GPU held");
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

    /// The pool's `numa` block reaches the node config the fake NVML and the DRA plugins read,
    /// with the zones the NodeResourceTopology publishes for that node; a per-node GPU count
    /// that no longer fits an explicit list drops the layout for every consumer alike.
    #[test]
    fn numa_block_reaches_the_node_config_with_the_nrt_zones() {
        let cfg = ClusterConfig::parse(
            "nodePools:\n  numa:\n    gpu: {profile: h100, overrides: {device_count: 8}}\n    numa: {zones: 4, gpusPerZone: [1, 3, 2, 2], cpuPerZone: '12'}\n  plain:\n    gpu: {profile: h100, overrides: {device_count: 4}}\n",
        )
        .unwrap();
        let mut ix = Index::new(cfg.clone(), Profiles::new(), IndexOptions::default()).unwrap();
        ix.upsert_node(node("n1", Some("numa")));
        let v = ix.view("n1").unwrap();
        let layout = v.config_file.numa.clone().expect("layout in the node config");
        assert_eq!(layout, fakegpu_model::numa::NumaLayout { zones: 4, gpus_per_zone: Some(vec![1, 3, 2, 2]), cpus_per_zone: Some(12) });
        // What the library resolves from the written text is what the NRT says.
        let text = crate::node_files::config_text(&v.config_file);
        let spec = fakegpu_model::config::resolve_config(&fakegpu_model::config::parse_config(&text, "t").unwrap(), "t", "n1").unwrap();
        let nrt = crate::nrt::build("n1", cfg.node_pools["numa"].numa.as_ref().unwrap(), &v.topology, (0, 0)).unwrap();
        let nrt_counts: Vec<u32> =
            nrt["zones"].as_array().unwrap().iter().map(|z| z["resources"][0]["capacity"].as_str().unwrap().parse().unwrap()).collect();
        let zones = spec.numa_placement().gpu_zone;
        assert_eq!(zones, vec![0, 1, 1, 1, 2, 2, 3, 3]);
        assert_eq!((0..4).map(|z| zones.iter().filter(|x| **x == z).count() as u32).collect::<Vec<_>>(), nrt_counts);
        // No block: no layout.
        ix.upsert_node(node("n2", Some("plain")));
        assert_eq!(ix.view("n2").unwrap().config_file.numa, None);
        // A node labelled to 6 GPUs cannot take [1, 3, 2, 2]: no layout (the NRT reports it).
        let mut six = node("n3", Some("numa"));
        six.labels.insert(crate::resolve::NODE_GPUS_LABEL.into(), "6".into());
        ix.upsert_node(six);
        assert_eq!(ix.view("n3").unwrap().config_file.numa, None);
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
        r.namespace = RES.into();
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
            match next(9) {
                0 => {
                    let pool = ["big", "k80"][next(2) as usize];
                    ix.upsert_node(node(&n, Some(pool)));
                }
                1 => {
                    ix.remove_pod(&key(&format!("p{}", next(20))));
                }
                6 => {
                    let group = format!("g{}", next(3));
                    let mut r = reservation(&format!("r{}", next(6)), &n, Some(&group), step);
                    if next(3) == 0 {
                        r.annotations.insert(RESERVED_GPU_ANNOTATION.into(), next(4).to_string());
                    }
                    if next(5) == 0 {
                        r.phase = "Succeeded".into();
                    }
                    ix.upsert_pod(r);
                }
                7 => {
                    let name = format!("s{}", next(10));
                    let group = format!("g{}", next(4));
                    let gpu = next(5).to_string();
                    let mut sp = match next(3) {
                        0 => shared(&name, &n, Some(&group), None, "0.5"),
                        1 => shared(&name, &n, None, Some(&gpu), "0.25"),
                        _ => shared(&name, &n, Some(&group), Some(&gpu), "0.1"),
                    };
                    if next(6) == 0 {
                        sp.phase = "Failed".into();
                    }
                    ix.upsert_pod(sp);
                }
                8 => {
                    let k = if next(2) == 0 {
                        (RES.to_string(), format!("r{}", next(6)))
                    } else {
                        ("team".to_string(), format!("s{}", next(10)))
                    };
                    ix.remove_pod(&k);
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

    #[test]
    fn reservation_pod_holds_a_gpu_and_gets_the_annotation() {
        let mut ix = index();
        ix.upsert_node(node("n1", Some("big")));
        let ids = uuids(&ix, "n1");
        ix.upsert_pod(pod("a", "n1", 1, 1));
        ix.upsert_pod(reservation("r", "n1", None, 2));
        let v = ix.view("n1").unwrap();
        let g = &v.topology.gpus[1];
        assert_eq!(g.status.allocated_by, ContainerDetails { namespace: RES.into(), pod: "r".into(), container: "c".into() });
        assert!(g.status.pod_gpu_usage_status.is_empty(), "no usage entry for a reservation pod");
        assert_eq!(
            v.pod_annotations,
            [PodAnnotation {
                namespace: RES.into(),
                pod: "r".into(),
                uid: "uid-r".into(),
                key: RESERVED_GPU_ANNOTATION.into(),
                value: ids[1].clone()
            }]
        );
        // Once the pod carries it, nothing more to write.
        let mut r = reservation("r", "n1", None, 2);
        r.annotations.insert(RESERVED_GPU_ANNOTATION.into(), ids[1].clone());
        assert_eq!(ix.upsert_pod(r), ["n1"]);
        assert!(ix.view("n1").unwrap().pod_annotations.is_empty());
        // Present already (a pre-2.17 client's GPU index): never overwritten.
        let mut old = reservation("old", "n1", None, 3);
        old.annotations.insert(RESERVED_GPU_ANNOTATION.into(), "5".into());
        ix.upsert_pod(old);
        assert_eq!(ix.held_by(&(RES.into(), "old".into())), [2]);
        assert!(ix.view("n1").unwrap().pod_annotations.is_empty());
        // A reservation pod that gets no GPU (node full) gets no annotation either.
        let mut k80 = index();
        k80.upsert_node(node("n1", Some("k80")));
        k80.upsert_pod(pod("a", "n1", 2, 1));
        k80.upsert_pod(reservation("r", "n1", None, 2));
        assert!(k80.view("n1").unwrap().pod_annotations.is_empty());
        assert_invariants(&ix);
        assert_invariants(&k80);
    }

    #[test]
    fn shared_pod_by_group_label() {
        let mut ix = index();
        ix.upsert_node(node("n1", Some("big")));
        ix.upsert_pod(pod("a", "n1", 1, 1));
        ix.upsert_pod(reservation("r", "n1", Some("g1"), 2));
        let mut s = shared("s", "n1", Some("g1"), None, "0.5");
        s.annotations.insert(UTILIZATION_ANNOTATION.into(), "30-40".into());
        assert_eq!(ix.upsert_pod(s), ["n1"]);
        let v = ix.view("n1").unwrap();
        // Under the reservation pod's GPU (1, not the first GPU), allocatedBy untouched.
        assert_eq!(entries_of(&ix, "n1", "uid-s"), [1]);
        let st = &v.topology.gpus[1].status;
        assert_eq!(st.allocated_by.pod, "r");
        assert_eq!(
            st.pod_gpu_usage_status["uid-s"],
            GpuUsageStatus { utilization: Range { min: 30, max: 40 }, fb_used: 20480, use_knative_utilization: false }
        );
        assert_eq!(st.shared_by["uid-s"], ContainerDetails { namespace: "team".into(), pod: "s".into(), container: "c".into() });
        assert!(ix.held_by(&("team".into(), "s".into())).is_empty(), "a shared pod holds nothing");
        assert_eq!(holders(&ix, "n1")[..3], ["a", "r", ""]);
        // Another group on the node matches nothing.
        ix.upsert_pod(shared("t", "n1", Some("g2"), None, "0.5"));
        assert!(entries_of(&ix, "n1", "uid-t").is_empty());
        assert_invariants(&ix);
    }

    #[test]
    fn shared_pod_by_runai_gpu_index_or_uuid() {
        let mut ix = index();
        ix.upsert_node(node("n1", Some("big")));
        let ids = uuids(&ix, "n1");
        // Pre-2.17: the reservation pod carries a GPU index, the shared pod names the same one.
        let mut old = reservation("old", "n1", None, 1);
        old.annotations.insert(RESERVED_GPU_ANNOTATION.into(), "3".into());
        ix.upsert_pod(pod("a", "n1", 2, 0));
        ix.upsert_pod(old);
        ix.upsert_pod(shared("by-index", "n1", None, Some("3"), "0.25"));
        assert_eq!(ix.held_by(&(RES.into(), "old".into())), [2]);
        assert_eq!(entries_of(&ix, "n1", "uid-by-index"), [2], "the GPU the reservation pod holds, whatever index it names");
        assert_eq!(ix.view("n1").unwrap().topology.gpus[2].status.pod_gpu_usage_status["uid-by-index"].fb_used, 10240);
        // 2.17+: the shared pod names the UUID we write. It matches before the patch lands
        // (the value to be written counts), case-insensitively, and after it.
        ix.upsert_pod(reservation("new", "n1", None, 2));
        assert_eq!(ix.held_by(&(RES.into(), "new".into())), [3]);
        ix.upsert_pod(shared("by-uuid", "n1", None, Some(&ids[3].to_uppercase()), "0.5"));
        assert_eq!(entries_of(&ix, "n1", "uid-by-uuid"), [3]);
        let mut new = reservation("new", "n1", None, 2);
        new.annotations.insert(RESERVED_GPU_ANNOTATION.into(), ids[3].clone());
        ix.upsert_pod(new);
        assert_eq!(entries_of(&ix, "n1", "uid-by-uuid"), [3]);
        // A value no reservation pod has: no entry.
        ix.upsert_pod(shared("lost", "n1", None, Some("7"), "0.5"));
        assert!(entries_of(&ix, "n1", "uid-lost").is_empty());
        assert_invariants(&ix);
    }

    #[test]
    fn group_label_wins_over_runai_gpu_and_falls_back_to_it() {
        let mut ix = index();
        ix.upsert_node(node("n1", Some("big")));
        let ids = uuids(&ix, "n1");
        ix.upsert_pod(reservation("r0", "n1", Some("g0"), 1));
        ix.upsert_pod(reservation("r1", "n1", Some("g1"), 2));
        // Names both: the group decides.
        ix.upsert_pod(shared("both", "n1", Some("g1"), Some(&ids[0]), "0.5"));
        assert_eq!(entries_of(&ix, "n1", "uid-both"), [1]);
        // Its group has no reservation pod here: runai-gpu decides.
        ix.upsert_pod(shared("fallback", "n1", Some("gone"), Some(&ids[0]), "0.5"));
        assert_eq!(entries_of(&ix, "n1", "uid-fallback"), [0]);
        // Two reservation pods of one group: the older one's GPU.
        ix.upsert_pod(reservation("r2", "n1", Some("g1"), 0));
        assert_eq!(ix.held_by(&(RES.into(), "r2".into())), [2]);
        assert_eq!(entries_of(&ix, "n1", "uid-both"), [2]);
        assert_invariants(&ix);
    }

    #[test]
    fn several_shared_pods_on_one_gpu() {
        let mut ix = index();
        ix.upsert_node(node("n1", Some("k80")));
        ix.upsert_pod(reservation("r", "n1", Some("g"), 1));
        for (name, f) in [("s1", "0.25"), ("s2", "0.25"), ("s3", "0.5")] {
            ix.upsert_pod(shared(name, "n1", Some("g"), None, f));
        }
        let v = ix.view("n1").unwrap();
        let st = &v.topology.gpus[0].status;
        assert_eq!(st.pod_gpu_usage_status.keys().collect::<Vec<_>>(), ["uid-s1", "uid-s2", "uid-s3"]);
        assert_eq!(st.pod_gpu_usage_status.values().map(|u| u.fb_used).collect::<Vec<_>>(), [2860, 2860, 5720]);
        assert_eq!(st.shared_by.len(), 3);
        assert_eq!(v.topology.gpus[1].status, GpuStatus::default(), "the other GPU is untouched");
        // And a dedicated pod still fits on the free GPU: shared pods take no GPU.
        ix.upsert_pod(pod("d", "n1", 1, 5));
        assert_eq!(holders(&ix, "n1"), ["r", "d"]);
        assert_invariants(&ix);
    }

    #[test]
    fn shared_pod_finishing_or_vanishing_is_dropped() {
        let mut ix = index();
        ix.upsert_node(node("n1", Some("k80")));
        ix.upsert_pod(reservation("r", "n1", Some("g"), 1));
        ix.upsert_pod(shared("s1", "n1", Some("g"), None, "0.5"));
        ix.upsert_pod(shared("s2", "n1", Some("g"), None, "0.5"));
        let mut done = shared("s1", "n1", Some("g"), None, "0.5");
        done.phase = "Succeeded".into();
        assert_eq!(ix.upsert_pod(done), ["n1"]);
        assert_eq!(usage_uids(&ix, "n1")[0], ["uid-s2"]);
        assert_eq!(ix.remove_pod(&("team".into(), "s2".into())), Some("n1".into()));
        assert!(usage_uids(&ix, "n1")[0].is_empty());
        assert_eq!(holders(&ix, "n1"), ["r", ""], "the reservation pod keeps its GPU");
        // Not running yet: an entry with 0 % (upstream's rule), not dropped.
        let mut pending = shared("s3", "n1", Some("g"), None, "0.5");
        pending.phase = "Pending".into();
        ix.upsert_pod(pending);
        assert_eq!(ix.view("n1").unwrap().topology.gpus[0].status.pod_gpu_usage_status["uid-s3"].utilization, Range { min: 0, max: 0 });
        assert_invariants(&ix);
    }

    #[test]
    fn reservation_pod_leaving_frees_the_gpu_and_drops_shared_entries() {
        let mut ix = index();
        ix.upsert_node(node("n1", Some("k80")));
        ix.upsert_pod(reservation("r", "n1", Some("g"), 1));
        ix.upsert_pod(shared("s", "n1", Some("g"), None, "0.5"));
        assert_eq!(ix.remove_pod(&(RES.into(), "r".into())), Some("n1".into()));
        let v = ix.view("n1").unwrap();
        assert!(v.topology.gpus.iter().all(|g| g.status == GpuStatus::default()), "{:?}", v.topology.gpus);
        // The shared pod is still known: a new reservation pod of its group picks it up.
        ix.upsert_pod(pod("d", "n1", 1, 2));
        ix.upsert_pod(reservation("r2", "n1", Some("g"), 3));
        assert_eq!(entries_of(&ix, "n1", "uid-s"), [1]);
        // Finishing works the same as being deleted.
        let mut r2 = reservation("r2", "n1", Some("g"), 3);
        r2.phase = "Failed".into();
        ix.upsert_pod(r2);
        assert_eq!(holders(&ix, "n1"), ["d", ""]);
        assert!(entries_of(&ix, "n1", "uid-s").is_empty());
        assert_invariants(&ix);
    }

    #[test]
    fn shared_pods_match_only_on_their_node_and_outside_the_reservation_namespace() {
        let mut ix = index();
        ix.upsert_node(node("n1", Some("k80")));
        ix.upsert_node(node("n2", Some("k80")));
        ix.upsert_pod(reservation("r", "n1", Some("g"), 1));
        ix.upsert_pod(shared("elsewhere", "n2", Some("g"), None, "0.5"));
        assert!(usage_uids(&ix, "n2").iter().all(Vec::is_empty));
        assert!(entries_of(&ix, "n1", "uid-elsewhere").is_empty());
        // Moving is a new placement: now it matches.
        ix.upsert_pod(shared("elsewhere", "n1", Some("g"), None, "0.5"));
        assert_eq!(entries_of(&ix, "n1", "uid-elsewhere"), [0]);
        // In the reservation namespace a group label makes nothing shared.
        let mut inside = shared("inside", "n1", Some("g"), None, "0.5");
        inside.namespace = RES.into();
        assert!(ix.upsert_pod(inside).is_empty(), "not relevant");
        // Unbound: nothing.
        let mut unbound = shared("unbound", "n1", Some("g"), None, "0.5");
        unbound.node = None;
        assert!(ix.upsert_pod(unbound).is_empty());
        // With whole GPUs of its own it is a dedicated pod (recorded once, not twice).
        let mut both = shared("both", "n1", Some("g"), None, "0.5");
        both.gpus = 1;
        ix.upsert_pod(both);
        assert_eq!(ix.held_by(&("team".into(), "both".into())), [1]);
        assert_eq!(entries_of(&ix, "n1", "uid-both"), [1]);
        assert_invariants(&ix);
    }

    #[test]
    fn restart_rebuilds_shared_entries_without_moving_anything() {
        let build = |ix: &mut Index| {
            ix.upsert_node(node("n1", Some("big")));
            ix.upsert_pod(pod("a", "n1", 1, 1));
            ix.upsert_pod(reservation("r1", "n1", Some("g1"), 2));
            ix.upsert_pod(pod("b", "n1", 2, 3));
            ix.upsert_pod(reservation("r2", "n1", Some("g2"), 4));
            ix.remove_pod(&key("a"));
            ix.upsert_pod(shared("s1", "n1", Some("g1"), None, "0.5"));
            ix.upsert_pod(shared("s2", "n1", Some("g2"), None, "0.25"));
            ix.upsert_pod(shared("s3", "n1", Some("g2"), None, "0.25"));
        };
        let mut ix = index();
        build(&mut ix);
        let before = ix.view("n1").unwrap().topology;
        assert_eq!(holders(&ix, "n1")[..5], ["", "r1", "b", "b", "r2"]);
        assert_eq!(entries_of(&ix, "n1", "uid-s3"), [4]);

        // A new process: the ConfigMap first, then the pods in another order (shared pods before
        // their reservation pods, those before the dedicated pod).
        let replay = |seed: Option<&NodeTopology>, annotate: bool| {
            let mut ix2 = index();
            ix2.upsert_node(node("n1", Some("big")));
            if let Some(t) = seed {
                ix2.seed_recorded("n1", t);
            }
            for s in [("s3", "g2", "0.25"), ("s1", "g1", "0.5"), ("s2", "g2", "0.25")] {
                ix2.upsert_pod(shared(s.0, "n1", Some(s.1), None, s.2));
            }
            for (name, group, created) in [("r2", "g2", 4), ("r1", "g1", 2)] {
                let mut r = reservation(name, "n1", Some(group), created);
                if annotate {
                    let gpu = if name == "r1" { 1 } else { 4 };
                    r.annotations.insert(RESERVED_GPU_ANNOTATION.into(), before.gpus[gpu].id.clone());
                }
                ix2.upsert_pod(r);
            }
            ix2.upsert_pod(pod("b", "n1", 2, 3));
            assert_invariants(&ix2);
            ix2
        };
        let ix2 = replay(Some(&before), false);
        assert_eq!(ix2.view("n1").unwrap().topology, before);
        // A ConfigMap written by upstream (no sharedBy) is read the same way.
        let mut upstream = before.clone();
        upstream.gpus.iter_mut().for_each(|g| g.status.shared_by.clear());
        assert_eq!(replay(Some(&upstream), false).view("n1").unwrap().topology, before);
        // ConfigMap lost, but the reservation pods carry the UUIDs we wrote: they keep their GPUs.
        let ix3 = replay(None, true);
        assert_eq!(holders(&ix3, "n1")[1], "r1");
        assert_eq!(holders(&ix3, "n1")[4], "r2");
        assert_eq!(entries_of(&ix3, "n1", "uid-s1"), [1]);
        assert_eq!(entries_of(&ix3, "n1", "uid-s2"), [4]);
    }

    #[test]
    fn pod_groups_give_pod_types() {
        let mut ix = index();
        ix.upsert_node(node("n1", Some("k80")));
        let util = |ix: &Index, uid: &str| {
            let v = ix.view("n1").unwrap();
            let u = v.topology.gpus.iter().find_map(|g| g.status.pod_gpu_usage_status.get(uid).copied()).unwrap();
            (u.utilization.min, u.utilization.max, u.use_knative_utilization)
        };
        let mut p = pod("p", "n1", 1, 1);
        p.annotations.insert(POD_GROUP_ANNOTATION.into(), "pg".into());
        ix.upsert_pod(p.clone());
        assert_eq!(util(&ix, "uid-p"), (100, 100, false), "PodGroup unknown: the default");
        assert_eq!(ix.upsert_pod_group("ns", "pg", Some("train".into())), ["n1"]);
        assert_eq!(util(&ix, "uid-p"), (80, 100, false));
        assert!(ix.upsert_pod_group("ns", "pg", Some("train".into())).is_empty(), "no change, no work");
        assert!(ix.upsert_pod_group("other", "pg", Some("inference".into())).is_empty(), "another namespace's PodGroup");
        assert_eq!(ix.upsert_pod_group("ns", "pg", Some("inference".into())), ["n1"]);
        assert_eq!(util(&ix, "uid-p"), (0, 0, true));
        // An update of the pod keeps the PodGroup's class.
        p.annotations.insert("x".into(), "y".into());
        ix.upsert_pod(p.clone());
        assert_eq!(util(&ix, "uid-p"), (0, 0, true));
        // The workloadKind label wins.
        let mut labelled = pod("l", "n1", 1, 2);
        labelled.annotations.insert(POD_GROUP_ANNOTATION.into(), "pg".into());
        labelled.workload_kind = Some("TrainingWorkload".into());
        ix.upsert_pod(labelled);
        assert_eq!(util(&ix, "uid-l"), (80, 100, false));
        // Gone: back to the default.
        assert_eq!(ix.upsert_pod_group("ns", "pg", None), ["n1"]);
        assert_eq!(util(&ix, "uid-p"), (100, 100, false));
        assert_eq!(ix.pod_group_keys(), [("other".to_string(), "pg".to_string())]);
        // A shared pod's type comes from its PodGroup too.
        ix.upsert_pod_group("team", "spg", Some("build".into()));
        ix.remove_pod(&key("l"));
        ix.upsert_pod(reservation("r", "n1", Some("g"), 3));
        let mut s = shared("s", "n1", Some("g"), None, "0.5");
        s.annotations.insert(POD_GROUP_ANNOTATION.into(), "spg".into());
        ix.upsert_pod(s);
        assert_eq!(util(&ix, "uid-s"), (0, 0, false));
        let mut keys = ix.pod_group_keys();
        keys.sort();
        assert_eq!(keys, [("other".to_string(), "pg".to_string()), ("team".to_string(), "spg".to_string())]);
    }

    #[test]
    fn reservation_namespace_is_configurable() {
        let cfg = ClusterConfig::parse("nodePools:\n  k80:\n    gpuProduct: Tesla-K80\n    gpuCount: 2\n    gpuMemory: 11441\n").unwrap();
        let opts = IndexOptions { reservation_namespace: "resv".into(), ..IndexOptions::default() };
        let mut ix = Index::new(cfg, Profiles::new(), opts).unwrap();
        ix.upsert_node(node("n1", Some("k80")));
        let mut r = reservation("r", "n1", Some("g"), 1);
        r.namespace = "resv".into();
        ix.upsert_pod(r);
        // runai-reservation is an ordinary namespace here: its pod gets a usage entry.
        ix.upsert_pod(reservation("plain", "n1", Some("g"), 2));
        ix.upsert_pod(shared("s", "n1", Some("g"), None, "0.5"));
        let v = ix.view("n1").unwrap();
        assert_eq!(v.pod_annotations.len(), 1);
        assert_eq!(v.pod_annotations[0].namespace, "resv");
        assert_eq!(entries_of(&ix, "n1", "uid-s"), [0]);
        assert_eq!(entries_of(&ix, "n1", "uid-plain"), [1]);
        assert_invariants(&ix);
    }
}
