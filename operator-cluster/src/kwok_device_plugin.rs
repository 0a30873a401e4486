//! `kwok-gpu-device-plugin`: KWOK nodes have no kubelet, so their `nvidia.com/gpu` (and the
//! pool's other resources) capacity/allocatable is patched here to match their per-node
//! topology ConfigMap — on create, on every change (pool switch), and back when something
//! else overwrites it. Resources it set are listed in a node annotation so that it removes
//! exactly those when the node leaves all pools, and never touches capacity it did not set.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::api::{Patch, PatchParams};
use kube::runtime::watcher::{self, Event as WEvent};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, ResourceExt};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::work_queue::WorkQueue;
use fakegpu_operator_core::common::{self, Error, TopologyArgs};
use fakegpu_operator_core::topology::{
    node_cm_name, NodeTopology, KWOK_NODE_ANNOTATION, NODE_NAME_LABEL, NODE_TOPOLOGY_LABEL, TOPOLOGY_KEY,
};

/// Node annotation: the extended resources this component set (comma-separated).
pub const MANAGED_RESOURCES_ANNOTATION: &str = "fake-gpu-operator.run.ai/kwok-resources";
/// Node annotation: the topology namespace of the instance that set them (instances in other
/// namespaces leave the node alone unless it has a topology in theirs).
pub const OWNER_ANNOTATION: &str = "fake-gpu-operator.run.ai/kwok-resources-owner";

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub topology: TopologyArgs,
    /// Node patches in flight.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// How long a node must stay unlike its topology before it is patched. The status-updater
    /// writes a KWOK node's capacity with its labels just before the node's ConfigMap, so a
    /// node may look ahead of the ConfigMap seen here for a moment; patching it then would
    /// put the old capacity back.
    #[arg(long, default_value_t = 1000)]
    pub settle_ms: u64,
}

/// What a node's capacity should hold, from its topology: NVIDIA's device plugin's resources
/// under the topology's MIG strategy and applied MIG layouts ([`NodeTopology::resources`]).
pub fn desired_resources(t: &NodeTopology) -> BTreeMap<String, u64> {
    t.resources()
}

/// The node's state as far as this component cares.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KwokNode {
    pub kwok: bool,
    pub capacity: BTreeMap<String, String>,
    pub allocatable: BTreeMap<String, String>,
    pub managed: BTreeSet<String>,
    pub owner: Option<String>,
    /// The object's resourceVersion, when it is a number (as etcd's are).
    pub version: Option<u64>,
}

impl KwokNode {
    pub fn from_node(n: &Node) -> KwokNode {
        let q = |m: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>| {
            m.map(|m| m.iter().map(|(k, v)| (k.clone(), v.0.clone())).collect()).unwrap_or_default()
        };
        let st = n.status.as_ref();
        KwokNode {
            kwok: n.annotations().get(KWOK_NODE_ANNOTATION).map(String::as_str) == Some("fake"),
            capacity: q(st.and_then(|s| s.capacity.as_ref())),
            allocatable: q(st.and_then(|s| s.allocatable.as_ref())),
            managed: n
                .annotations()
                .get(MANAGED_RESOURCES_ANNOTATION)
                .map(|v| v.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect())
                .unwrap_or_default(),
            owner: n.annotations().get(OWNER_ANNOTATION).cloned(),
            version: n.metadata.resource_version.as_deref().and_then(|v| v.parse().ok()),
        }
    }

    /// Whether this is an older version of the node than `known` (a watch event delivered
    /// after the response to our own patch): it would make the node look unpatched.
    pub fn older_than(&self, known: &KwokNode) -> bool {
        matches!((self.version, known.version), (Some(mine), Some(theirs)) if mine < theirs)
    }
}

/// The status merge patch and the new managed set; `None` when nothing is to change.
pub fn plan(node: &KwokNode, desired: Option<&BTreeMap<String, u64>>, me: &str) -> Option<(Value, BTreeSet<String>)> {
    if !node.kwok || (desired.is_none() && node.owner.as_deref() != Some(me)) {
        return None;
    }
    let empty = BTreeMap::new();
    let desired = desired.unwrap_or(&empty);
    let mut set = serde_json::Map::new();
    for (k, v) in desired {
        let v = v.to_string();
        if node.capacity.get(k) != Some(&v) || node.allocatable.get(k) != Some(&v) {
            set.insert(k.clone(), json!(v));
        }
    }
    for k in &node.managed {
        if !desired.contains_key(k) && (node.capacity.contains_key(k) || node.allocatable.contains_key(k)) {
            set.insert(k.clone(), Value::Null);
        }
    }
    let managed: BTreeSet<String> = desired.keys().cloned().collect();
    if set.is_empty() && managed == node.managed && node.owner.as_deref() == Some(me) {
        return None;
    }
    Some((json!({"status": {"capacity": set, "allocatable": set}}), managed))
}

/// The whole patch of the node's status subresource for [`plan`]: the capacity and the
/// annotations that record who set which resources change in one write (the status
/// subresource of a node takes its metadata too), so a crash cannot leave one without the
/// other. The status-updater sends the same patch, with the node's labels, for KWOK nodes.
pub fn status_patch(node: &KwokNode, desired: Option<&BTreeMap<String, u64>>, me: &str) -> Option<Value> {
    let (mut patch, managed) = plan(node, desired, me)?;
    let names: Vec<&str> = managed.iter().map(String::as_str).collect();
    let owner = if managed.is_empty() { Value::Null } else { json!(me) };
    patch["metadata"] = json!({"annotations": {MANAGED_RESOURCES_ANNOTATION: names.join(","), OWNER_ANNOTATION: owner}});
    Some(patch)
}

enum Msg {
    Node(String, KwokNode),
    NodeGone(String),
    NodesListed,
    Topology(String, Option<BTreeMap<String, u64>>),
    TopologiesListed,
}

/// What the plugin knows; [`Known::decide`] says what a node needs. A node's capacity is
/// removed only when its ConfigMap was seen deleted (or was absent when everything was first
/// listed) and the node was not set again since — never merely because its ConfigMap has not
/// been seen yet: the status-updater sets a KWOK node's capacity just before it writes the
/// ConfigMap.
struct Known {
    /// This instance's owner name (its topology namespace).
    me: String,
    nodes: HashMap<String, KwokNode>,
    topo: HashMap<String, BTreeMap<String, u64>>,
    /// Nodes whose ConfigMap is known to be gone: deleted, or absent from the first listing.
    without_topology: HashSet<String>,
    nodes_listed: bool,
    topologies_listed: bool,
    /// Nodes found unlike their topology and waiting out the settle time.
    settling: HashSet<String>,
}

impl Known {
    fn new(me: &str) -> Known {
        Known {
            me: me.to_string(),
            nodes: HashMap::new(),
            topo: HashMap::new(),
            without_topology: HashSet::new(),
            nodes_listed: false,
            topologies_listed: false,
            settling: HashSet::new(),
        }
    }

    fn synced(&self) -> bool {
        self.nodes_listed && self.topologies_listed
    }

    fn owned(&self, n: &KwokNode) -> bool {
        n.owner.as_deref() == Some(self.me.as_str()) && !n.managed.is_empty()
    }

    /// The node's status patch, if it needs one now.
    fn decide(&self, name: &str) -> Option<Value> {
        if !self.synced() {
            return None;
        }
        let node = self.nodes.get(name)?;
        let desired = self.topo.get(name);
        if desired.is_none() && !self.without_topology.contains(name) {
            return None;
        }
        status_patch(node, desired, &self.me)
    }

    /// Whether a removal would be decided from what is known, not from a seen topology.
    fn removing(&self, name: &str) -> bool {
        !self.topo.contains_key(name)
    }

    /// Takes an event; returns the nodes to look at.
    fn apply(&mut self, msg: Msg) -> Vec<String> {
        match msg {
            Msg::Node(name, n) => {
                let before = self.nodes.get(&name);
                if before.is_some_and(|known| n.older_than(known)) {
                    return vec![];
                }
                // Set again by someone of ours (the status-updater) after its ConfigMap went:
                // the ConfigMap is on its way; the old deletion says nothing any more.
                if before.is_some_and(|b| !self.owned(b)) && self.owned(&n) {
                    self.without_topology.remove(&name);
                }
                self.nodes.insert(name.clone(), n);
                vec![name]
            }
            Msg::NodeGone(name) => {
                self.nodes.remove(&name);
                self.without_topology.remove(&name);
                vec![]
            }
            Msg::Topology(name, Some(t)) => {
                self.without_topology.remove(&name);
                self.topo.insert(name.clone(), t);
                vec![name]
            }
            Msg::Topology(name, None) => {
                self.topo.remove(&name);
                self.without_topology.insert(name.clone());
                vec![name]
            }
            Msg::NodesListed => self.listed(|k| k.nodes_listed = true),
            Msg::TopologiesListed => self.listed(|k| k.topologies_listed = true),
        }
    }

    /// At the first moment both lists are in, every node is looked at; those holding our
    /// capacity without a ConfigMap count as without topology.
    fn listed(&mut self, mark: impl FnOnce(&mut Known)) -> Vec<String> {
        let before = self.synced();
        mark(self);
        if before || !self.synced() {
            return vec![];
        }
        let orphans: Vec<String> =
            self.nodes.iter().filter(|(name, n)| self.owned(n) && !self.topo.contains_key(*name)).map(|(name, _)| name.clone()).collect();
        self.without_topology.extend(orphans);
        self.nodes.keys().cloned().collect()
    }
}

pub async fn run(args: Args) -> Result<(), Error> {
    let client = args.topology.client().await?;
    let ns = args.topology.namespace();
    tracing::info!(namespace = %ns, "kwok-gpu-device-plugin starting");
    let (tx, mut rx) = mpsc::channel::<Msg>(4096);
    tokio::spawn(watch_nodes(client.clone(), tx.clone()));
    tokio::spawn(watch_topologies(client.clone(), ns.clone(), tx));
    let state = Arc::new(Mutex::new(Known::new(&ns)));
    let queue = Arc::new(WorkQueue::default());
    let writer = Writer { client: client.clone(), me: ns, topology_cm: args.topology.topology_cm.clone(), state: state.clone() };
    tokio::spawn(writer.run(queue.clone(), args.concurrency));
    let settle = std::time::Duration::from_millis(args.settle_ms);
    let loop_ = async {
        while let Some(msg) = rx.recv().await {
            let mut st = state.lock().expect("state lock");
            let names = st.apply(msg);
            for name in names {
                if st.decide(&name).is_none() || !st.settling.insert(name.clone()) {
                    continue;
                }
                // Looked at again after the settle time, planned from what is known then.
                let (state, queue) = (state.clone(), queue.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(settle).await;
                    state.lock().expect("state lock").settling.remove(&name);
                    queue.mark([name]);
                });
            }
        }
    };
    tokio::select! {
        _ = common::shutdown_signal() => tracing::info!("shutting down"),
        _ = loop_ => tracing::error!("event loop ended"),
    }
    Ok(())
}

#[derive(Clone)]
struct Writer {
    client: Client,
    me: String,
    topology_cm: String,
    state: Arc<Mutex<Known>>,
}

impl Writer {
    /// Patches each node the queue hands out, planned from the latest state when its turn comes.
    async fn run(self, queue: Arc<WorkQueue>, width: usize) {
        queue
            .run(width, std::time::Duration::from_millis(500), move |name| {
                let w = self.clone();
                async move { w.write(name).await }
            })
            .await
    }

    async fn write(&self, name: String) -> Result<(), kube::Error> {
        let api: Api<Node> = Api::all(self.client.clone());
        let Some(mut patch) = self.decide(&name) else { return Ok(()) };
        if self.state.lock().expect("state lock").removing(&name) {
            // A removal: read the ConfigMap first — it may be there and not yet seen.
            let cms: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.me);
            if let Some(cm) = cms.get_opt(&node_cm_name(&self.topology_cm, &name)).await? {
                if let Some(Ok(desired)) = desired_of(&cm) {
                    self.state.lock().expect("state lock").apply(Msg::Topology(name.clone(), Some(desired)));
                }
                let Some(p) = self.decide(&name) else { return Ok(()) };
                patch = p;
            }
        }
        // Only over the version planned from: a node changed meanwhile (the status-updater
        // set it) is planned again from its watch event instead of being written blindly.
        if let Some(v) = self.state.lock().expect("state lock").nodes.get(&name).and_then(|n| n.version) {
            patch["metadata"]["resourceVersion"] = json!(v.to_string());
        }
        match api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            // The node as patched: a watch event of the node from before the patch that
            // arrives now must not make it look unpatched (and patched again).
            Ok(node) => {
                self.state.lock().expect("state lock").apply(Msg::Node(name, KwokNode::from_node(&node)));
                Ok(())
            }
            // Deleted (its watch event says so) or changed meanwhile (its event brings it back).
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn decide(&self, name: &str) -> Option<Value> {
        self.state.lock().expect("state lock").decide(name)
    }
}

/// The resources a topology ConfigMap asks for; `None` when it holds no topology.
fn desired_of(cm: &ConfigMap) -> Option<Result<BTreeMap<String, u64>, String>> {
    let text = cm.data.as_ref().and_then(|d| d.get(TOPOLOGY_KEY))?;
    Some(NodeTopology::from_yaml(text).map(|t| desired_resources(&t)).map_err(|e| e.to_string()))
}

async fn watch_nodes(client: Client, tx: mpsc::Sender<Msg>) {
    let api: Api<Node> = Api::all(client);
    let mut s = watcher::watcher(api, watcher::Config::default()).default_backoff().boxed();
    while let Some(ev) = s.next().await {
        let msg = match ev {
            Ok(WEvent::Apply(n) | WEvent::InitApply(n)) => Msg::Node(n.name_any(), KwokNode::from_node(&n)),
            Ok(WEvent::Delete(n)) => Msg::NodeGone(n.name_any()),
            Ok(WEvent::InitDone) => Msg::NodesListed,
            Ok(WEvent::Init) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "node watch");
                continue;
            }
        };
        if tx.send(msg).await.is_err() {
            return;
        }
    }
}

async fn watch_topologies(client: Client, ns: String, tx: mpsc::Sender<Msg>) {
    let api: Api<ConfigMap> = Api::namespaced(client, &ns);
    let cfg = watcher::Config::default().labels(&format!("{NODE_TOPOLOGY_LABEL}=true"));
    let mut s = watcher::watcher(api, cfg).default_backoff().boxed();
    let mut last: HashMap<String, BTreeMap<String, u64>> = HashMap::new();
    // Nodes whose ConfigMap a (re)list showed: one deleted while the watch was down has no
    // delete event, only its absence from the list.
    let mut listed: Option<HashSet<String>> = None;
    while let Some(ev) = s.next().await {
        let (cm, gone) = match ev {
            Ok(WEvent::Apply(c)) => (c, false),
            Ok(WEvent::InitApply(c)) => {
                if let Some(node) = c.labels().get(NODE_NAME_LABEL) {
                    listed.get_or_insert_with(HashSet::new).insert(node.clone());
                }
                (c, false)
            }
            Ok(WEvent::Delete(c)) => (c, true),
            Ok(WEvent::Init) => {
                listed = Some(HashSet::new());
                continue;
            }
            Ok(WEvent::InitDone) => {
                let seen = listed.take().unwrap_or_default();
                let vanished: Vec<String> = last.keys().filter(|n| !seen.contains(*n)).cloned().collect();
                for node in vanished {
                    last.remove(&node);
                    if tx.send(Msg::Topology(node, None)).await.is_err() {
                        return;
                    }
                }
                if tx.send(Msg::TopologiesListed).await.is_err() {
                    return;
                }
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "configmap watch");
                continue;
            }
        };
        let Some(node) = cm.labels().get(NODE_NAME_LABEL).cloned() else { continue };
        let desired = match (gone, desired_of(&cm)) {
            (true, _) | (false, None) => None,
            (false, Some(Ok(d))) => Some(d),
            (false, Some(Err(e))) => {
                tracing::warn!(configmap = %cm.name_any(), error = %e, "unparsable node topology; ignored");
                continue;
            }
        };
        // Allocation updates rewrite the ConfigMap without changing resources: skip those.
        if desired.as_ref() == last.get(&node) && desired.is_some() {
            continue;
        }
        match &desired {
            Some(d) => last.insert(node.clone(), d.clone()),
            None => last.remove(&node),
        };
        if tx.send(Msg::Topology(node, desired)).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(cap: &[(&str, &str)], managed: &[&str]) -> KwokNode {
        let m: BTreeMap<String, String> = cap.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        KwokNode {
            kwok: true,
            capacity: m.clone(),
            allocatable: m,
            managed: managed.iter().map(|s| s.to_string()).collect(),
            owner: (!managed.is_empty()).then(|| "ns".to_string()),
            version: None,
        }
    }

    #[test]
    fn sets_missing_and_wrong_values() {
        let want = BTreeMap::from([("nvidia.com/gpu".to_string(), 8u64), ("x.com/nic".to_string(), 2)]);
        let (p, managed) = plan(&node(&[("cpu", "32"), ("nvidia.com/gpu", "2")], &[]), Some(&want), "ns").unwrap();
        assert_eq!(
            p,
            json!({"status": {"capacity": {"nvidia.com/gpu": "8", "x.com/nic": "2"}, "allocatable": {"nvidia.com/gpu": "8", "x.com/nic": "2"}}})
        );
        assert_eq!(managed.len(), 2);
        assert!(plan(&node(&[("nvidia.com/gpu", "8"), ("x.com/nic", "2")], &["nvidia.com/gpu", "x.com/nic"]), Some(&want), "ns").is_none());
    }

    #[test]
    fn removes_only_what_it_set() {
        // Left all pools: drop ours, keep someone else's.
        let n = node(&[("nvidia.com/gpu", "8"), ("x.com/nic", "2"), ("other.com/r", "1")], &["nvidia.com/gpu", "x.com/nic"]);
        let (p, managed) = plan(&n, None, "ns").unwrap();
        assert_eq!(
            p,
            json!({"status": {"capacity": {"nvidia.com/gpu": null, "x.com/nic": null}, "allocatable": {"nvidia.com/gpu": null, "x.com/nic": null}}})
        );
        assert!(managed.is_empty());
        // Set by the instance of another namespace: not ours to remove.
        assert!(plan(&n, None, "other").is_none());
        // Not ours at all (a test patched it by hand): left alone.
        assert!(plan(&node(&[("nvidia.com/gpu", "8")], &[]), None, "ns").is_none());
        // Pool switch dropping a resource.
        let want = BTreeMap::from([("nvidia.com/gpu".to_string(), 2u64)]);
        let (p, _) = plan(&n, Some(&want), "ns").unwrap();
        assert_eq!(p["status"]["capacity"], json!({"nvidia.com/gpu": "2", "x.com/nic": null}));
    }

    #[test]
    fn an_older_version_of_a_node_is_recognized() {
        let at = |v: Option<u64>| KwokNode { version: v, ..node(&[], &[]) };
        assert!(at(Some(41)).older_than(&at(Some(42))));
        assert!(!at(Some(42)).older_than(&at(Some(42))));
        assert!(!at(Some(43)).older_than(&at(Some(42))));
        // Not numbers: nothing can be said, so the event is taken.
        assert!(!at(None).older_than(&at(Some(42))));
        assert!(!at(Some(1)).older_than(&at(None)));
    }

    #[test]
    fn real_nodes_are_not_touched() {
        let mut n = node(&[], &[]);
        n.kwok = false;
        assert!(plan(&n, Some(&BTreeMap::from([("nvidia.com/gpu".to_string(), 1)])), "ns").is_none());
    }

    fn gpus(n: u64) -> BTreeMap<String, u64> {
        BTreeMap::from([("nvidia.com/gpu".to_string(), n)])
    }

    fn synced() -> Known {
        let mut k = Known::new("ns");
        k.apply(Msg::NodesListed);
        k.apply(Msg::TopologiesListed);
        k
    }

    #[test]
    fn nothing_is_decided_before_nodes_and_configmaps_are_listed() {
        let mut k = Known::new("ns");
        k.apply(Msg::Node("a".into(), node(&[], &[])));
        k.apply(Msg::Topology("a".into(), Some(gpus(8))));
        assert!(k.decide("a").is_none());
        assert!(k.apply(Msg::NodesListed).is_empty());
        assert_eq!(k.apply(Msg::TopologiesListed), vec!["a".to_string()]);
        let p = k.decide("a").unwrap();
        assert_eq!(p["status"]["capacity"]["nvidia.com/gpu"], json!("8"));
        assert_eq!(p["metadata"]["annotations"][MANAGED_RESOURCES_ANNOTATION], json!("nvidia.com/gpu"));
        assert_eq!(p["metadata"]["annotations"][OWNER_ANNOTATION], json!("ns"));
    }

    #[test]
    fn capacity_set_before_its_configmap_is_seen_is_kept() {
        // The status-updater writes the node, then the ConfigMap; this plugin may see them in
        // either order.
        let mut k = synced();
        k.apply(Msg::Node("a".into(), node(&[], &[])));
        k.apply(Msg::Node("a".into(), node(&[("nvidia.com/gpu", "8")], &["nvidia.com/gpu"])));
        assert!(k.decide("a").is_none());
        k.apply(Msg::Topology("a".into(), Some(gpus(8))));
        assert!(k.decide("a").is_none());
    }

    #[test]
    fn capacity_goes_with_a_deleted_configmap_and_comes_back_when_set_again() {
        let mut k = synced();
        k.apply(Msg::Topology("a".into(), Some(gpus(8))));
        k.apply(Msg::Node("a".into(), node(&[("nvidia.com/gpu", "8")], &["nvidia.com/gpu"])));
        assert!(k.decide("a").is_none());
        k.apply(Msg::Topology("a".into(), None));
        assert!(k.removing("a"));
        let p = k.decide("a").unwrap();
        assert_eq!(p["status"]["capacity"]["nvidia.com/gpu"], Value::Null);
        assert_eq!(p["metadata"]["annotations"][OWNER_ANNOTATION], Value::Null);
        // Removed (the patch's response), then set again by the status-updater before its
        // new ConfigMap is seen: not removed again.
        k.apply(Msg::Node("a".into(), node(&[], &[])));
        assert!(k.decide("a").is_none());
        k.apply(Msg::Node("a".into(), node(&[("nvidia.com/gpu", "4")], &["nvidia.com/gpu"])));
        assert!(k.decide("a").is_none());
        k.apply(Msg::Topology("a".into(), Some(gpus(4))));
        assert!(k.decide("a").is_none());
    }

    #[test]
    fn ours_without_a_configmap_at_start_is_removed_and_others_are_left() {
        let mut k = Known::new("ns");
        k.apply(Msg::Node("orphan".into(), node(&[("nvidia.com/gpu", "8")], &["nvidia.com/gpu"])));
        let mut theirs = node(&[("nvidia.com/gpu", "8")], &["nvidia.com/gpu"]);
        theirs.owner = Some("other".into());
        k.apply(Msg::Node("theirs".into(), theirs));
        k.apply(Msg::Node("plain".into(), node(&[("nvidia.com/gpu", "8")], &[])));
        k.apply(Msg::TopologiesListed);
        let mut looked = k.apply(Msg::NodesListed);
        looked.sort();
        assert_eq!(looked, ["orphan", "plain", "theirs"]);
        assert!(k.decide("orphan").is_some());
        assert!(k.decide("theirs").is_none());
        assert!(k.decide("plain").is_none());
    }

    #[test]
    fn a_node_seen_again_later_is_not_looked_at_before_the_lists() {
        let mut k = Known::new("ns");
        k.apply(Msg::Topology("a".into(), None));
        k.apply(Msg::Node("a".into(), node(&[("nvidia.com/gpu", "8")], &["nvidia.com/gpu"])));
        assert!(k.decide("a").is_none());
        k.apply(Msg::NodesListed);
        k.apply(Msg::TopologiesListed);
        assert!(k.decide("a").is_some());
        k.apply(Msg::NodeGone("a".into()));
        assert!(k.decide("a").is_none());
    }
}
