//! `kwok-gpu-device-plugin`: KWOK nodes have no kubelet, so their `nvidia.com/gpu` (and the
//! pool's other resources) capacity/allocatable is patched here to match their per-node
//! topology ConfigMap — on create, on every change (pool switch), and back when something
//! else overwrites it. Resources it set are listed in a node annotation so that it removes
//! exactly those when the node leaves all pools, and never touches capacity it did not set.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::api::{Patch, PatchParams};
use kube::runtime::watcher::{self, Event as WEvent};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, ResourceExt};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::common::{self, Error, TopologyArgs};
use crate::config::GPU_RESOURCE;
use crate::topology::{NodeTopology, KWOK_NODE_ANNOTATION, NODE_NAME_LABEL, NODE_TOPOLOGY_LABEL, TOPOLOGY_KEY};
use crate::work_queue::WorkQueue;

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
}

/// What a node's capacity should hold, from its topology.
pub fn desired_resources(t: &NodeTopology) -> BTreeMap<String, u64> {
    let mut r = BTreeMap::from([(GPU_RESOURCE.to_string(), t.gpus.len() as u64)]);
    for d in &t.other_devices {
        r.insert(d.name.clone(), d.count);
    }
    r
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

enum Msg {
    Node(String, KwokNode),
    NodeGone(String),
    Topology(String, Option<BTreeMap<String, u64>>),
}

#[derive(Default)]
struct State {
    nodes: HashMap<String, KwokNode>,
    topo: HashMap<String, BTreeMap<String, u64>>,
}

pub async fn run(args: Args) -> Result<(), Error> {
    let client = args.topology.client().await?;
    let ns = args.topology.namespace();
    tracing::info!(namespace = %ns, "kwok-gpu-device-plugin starting");
    let (tx, mut rx) = mpsc::channel::<Msg>(4096);
    tokio::spawn(watch_nodes(client.clone(), tx.clone()));
    tokio::spawn(watch_topologies(client.clone(), ns.clone(), tx));
    let me = ns.clone();
    let state = Arc::new(Mutex::new(State::default()));
    let queue = Arc::new(WorkQueue::default());
    tokio::spawn(writer(client.clone(), ns, state.clone(), queue.clone(), args.concurrency));
    let loop_ = async {
        while let Some(msg) = rx.recv().await {
            let mut st = state.lock().expect("state lock");
            let name = match msg {
                Msg::Node(name, n) => {
                    if st.nodes.get(&name).is_some_and(|known| n.older_than(known)) {
                        continue;
                    }
                    st.nodes.insert(name.clone(), n);
                    name
                }
                Msg::NodeGone(name) => {
                    st.nodes.remove(&name);
                    continue;
                }
                Msg::Topology(name, t) => {
                    match t {
                        Some(t) => st.topo.insert(name.clone(), t),
                        None => st.topo.remove(&name),
                    };
                    name
                }
            };
            if st.nodes.get(&name).is_some_and(|n| plan(n, st.topo.get(&name), &me).is_some()) {
                queue.mark([name]);
            }
        }
    };
    tokio::select! {
        _ = common::shutdown_signal() => tracing::info!("shutting down"),
        _ = loop_ => tracing::error!("event loop ended"),
    }
    Ok(())
}

/// Patches each node the queue hands out, planned from the latest state when its turn comes, in
/// one write: the status subresource of a node takes its metadata too, so the capacity and the
/// annotation that records it change together (a crash cannot leave one without the other).
async fn writer(client: Client, me: String, state: Arc<Mutex<State>>, queue: Arc<WorkQueue>, width: usize) {
    let api: Api<Node> = Api::all(client);
    queue
        .run(width, std::time::Duration::from_millis(500), move |name| {
            let job = {
                let st = state.lock().expect("state lock");
                st.nodes.get(&name).and_then(|node| plan(node, st.topo.get(&name), &me))
            };
            let (api, me, state) = (api.clone(), me.clone(), state.clone());
            async move {
                let Some((mut patch, managed)) = job else { return Ok(()) };
                let names: Vec<&str> = managed.iter().map(String::as_str).collect();
                let owner = if managed.is_empty() { Value::Null } else { json!(me) };
                patch["metadata"] = json!({"annotations": {MANAGED_RESOURCES_ANNOTATION: names.join(","), OWNER_ANNOTATION: owner}});
                match api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                    // The node as patched: a watch event of the node from before the patch that
                    // arrives now must not make it look unpatched (and patched again).
                    Ok(node) => {
                        let patched = KwokNode::from_node(&node);
                        let mut st = state.lock().expect("state lock");
                        if !st.nodes.get(&name).is_some_and(|known| patched.older_than(known)) {
                            st.nodes.insert(name, patched);
                        }
                        Ok(())
                    }
                    // Deleted meanwhile: its watch event says so.
                    Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
                    Err(e) => Err(e),
                }
            }
        })
        .await
}

async fn watch_nodes(client: Client, tx: mpsc::Sender<Msg>) {
    let api: Api<Node> = Api::all(client);
    let mut s = watcher::watcher(api, watcher::Config::default()).default_backoff().boxed();
    while let Some(ev) = s.next().await {
        let msg = match ev {
            Ok(WEvent::Apply(n) | WEvent::InitApply(n)) => Msg::Node(n.name_any(), KwokNode::from_node(&n)),
            Ok(WEvent::Delete(n)) => Msg::NodeGone(n.name_any()),
            Ok(_) => continue,
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
    while let Some(ev) = s.next().await {
        let (cm, gone) = match ev {
            Ok(WEvent::Apply(c) | WEvent::InitApply(c)) => (c, false),
            Ok(WEvent::Delete(c)) => (c, true),
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "configmap watch");
                continue;
            }
        };
        let Some(node) = cm.labels().get(NODE_NAME_LABEL).cloned() else { continue };
        let desired = if gone {
            None
        } else {
            match cm.data.as_ref().and_then(|d| d.get(TOPOLOGY_KEY)).map(|t| NodeTopology::from_yaml(t)) {
                Some(Ok(t)) => Some(desired_resources(&t)),
                Some(Err(e)) => {
                    tracing::warn!(configmap = %cm.name_any(), error = %e, "unparsable node topology; ignored");
                    continue;
                }
                None => None,
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
}
