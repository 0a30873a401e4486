//! `mig-manager`: NVIDIA mig-manager's contract (and, with `--runai`, Run:ai mig-faker's) for
//! KWOK nodes. Thin edge over [`fakegpu_operator_core::mig_manager`]: watchers keep the nodes,
//! the per-node topology ConfigMaps (GPUs and their holders) and the custom configurations in
//! memory and mark the nodes concerned; a worker per node decides and applies the decision in
//! one merge patch of the node (state label, applied layouts, Run:ai mapping, reason), then
//! emits a Warning Event when a request failed. Level-triggered: every reconcile starts from
//! what is, so a missed event costs nothing but the wait for the periodic resync; a failed
//! write is retried after a pause.
//!
//! A separate component rather than part of the status-updater: it writes what the
//! status-updater reads (the applied-layout annotation becomes the topology's MIG devices and
//! the KWOK capacity), and the status-updater's index is about pods and pools, not requests.
//!
//! Real nodes are the node-side manager's (`fakegpu_operator_node::mig_manager_node`, a
//! DaemonSet): applying a layout there means changing the node's live state file, which this
//! Deployment cannot reach.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::runtime::watcher::{self, Event as WEvent};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, ResourceExt};

use crate::work_queue::WorkQueue;
use fakegpu_operator_core::common::{self, Error, TopologyArgs};
use fakegpu_operator_core::mig_manager::{
    self as core,
    shared_edge::{NodeMeta, RequestArgs},
    MigConfigError, MigConfigs, NodeInput, Options, MIG_CONFIG_LABEL, RUNAI_MIG_CONFIG_ANNOTATION,
};
use fakegpu_operator_core::topology::{KWOK_NODE_ANNOTATION, NODE_NAME_LABEL, NODE_TOPOLOGY_LABEL};

/// Flags of `fake-gpu-operator mig-manager`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub topology: TopologyArgs,
    #[command(flatten)]
    pub request: RequestArgs,
    /// Seconds between full resyncs.
    #[arg(long, default_value_t = 60)]
    pub resync_seconds: u64,
    /// Node writes in flight.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
}

/// Whether the manager has anything to do with a node: a KWOK node with a request.
fn concerned(meta: &NodeMeta, runai: bool) -> bool {
    let kwok = meta.annotations.get(KWOK_NODE_ANNOTATION).map(String::as_str) == Some("fake");
    kwok && (meta.labels.contains_key(MIG_CONFIG_LABEL) || (runai && meta.annotations.contains_key(RUNAI_MIG_CONFIG_ANNOTATION)))
}

#[derive(Default)]
struct State {
    nodes: HashMap<String, NodeMeta>,
    /// Per-node topology ConfigMap data, by node.
    topologies: HashMap<String, BTreeMap<String, String>>,
    custom: Option<Result<MigConfigs, MigConfigError>>,
}

struct Shared {
    state: Mutex<State>,
    queue: Arc<WorkQueue>,
    args: Args,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps a node's metadata unless it is older than the one known (a watch event from
    /// before our own patch, whose response came first).
    fn record_node(&self, name: &str, meta: NodeMeta) {
        let mut st = self.lock();
        let older = st.nodes.get(name).is_some_and(|k| meta.older_than(k));
        if !older {
            st.nodes.insert(name.to_string(), meta);
        }
    }

    /// A node as a watch shows it: kept, and marked when it has a request.
    fn node_event(&self, n: &Node) {
        let name = n.name_any();
        let meta = NodeMeta::of(n);
        let concerned = concerned(&meta, self.args.request.runai);
        self.record_node(&name, meta);
        if concerned {
            self.queue.mark([name]);
        }
    }

    fn mark_all(&self) {
        let runai = self.args.request.runai;
        let names: Vec<String> = self.lock().nodes.iter().filter(|(_, m)| concerned(m, runai)).map(|(n, _)| n.clone()).collect();
        self.queue.mark(names);
    }
}

/// Runs until SIGINT/SIGTERM.
pub async fn run(args: Args) -> Result<(), Error> {
    let client = args.topology.client().await?;
    let ns = args.topology.namespace();
    tracing::info!(namespace = %ns, runai = args.request.runai, configs = ?args.request.configs_configmap, "mig-manager starting");
    let shared = Arc::new(Shared { state: Mutex::default(), queue: Arc::default(), args: args.clone() });
    tokio::spawn(watch_nodes(client.clone(), shared.clone()));
    tokio::spawn(watch_topologies(client.clone(), ns.clone(), shared.clone()));
    if let Some(name) = args.request.configs_configmap.clone() {
        let shared = shared.clone();
        tokio::spawn(core::shared_edge::watch_custom(client.clone(), ns.clone(), name, move |custom| {
            shared.lock().custom = custom;
            shared.mark_all();
        }));
    }
    let resync = shared.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(resync.args.resync_seconds.max(1))).await;
            resync.mark_all();
        }
    });
    let worker = shared.clone();
    let work = tokio::spawn(async move {
        let client = client.clone();
        worker
            .queue
            .clone()
            .run(worker.args.concurrency, Duration::from_secs(2), move |node| {
                let (client, shared) = (client.clone(), worker.clone());
                async move { reconcile(&client, &shared, &node).await }
            })
            .await
    });
    tokio::select! {
        _ = common::shutdown_signal() => tracing::info!("shutting down"),
        r = work => tracing::error!(?r, "worker ended"),
    }
    Ok(())
}

async fn watch_nodes(client: Client, shared: Arc<Shared>) {
    let api: Api<Node> = Api::all(client);
    let mut s = watcher::watcher(api, watcher::Config::default()).default_backoff().boxed();
    // Names a (re)list returned: nodes deleted while the watch was down are dropped at its end.
    let mut seen: HashSet<String> = HashSet::new();
    while let Some(ev) = s.next().await {
        match ev {
            Ok(WEvent::Apply(n)) => shared.node_event(&n),
            Ok(WEvent::InitApply(n)) => {
                seen.insert(n.name_any());
                shared.node_event(&n);
            }
            Ok(WEvent::Delete(n)) => {
                shared.lock().nodes.remove(&n.name_any());
            }
            Ok(WEvent::Init) => seen.clear(),
            Ok(WEvent::InitDone) => {
                shared.lock().nodes.retain(|n, _| seen.contains(n));
                shared.mark_all();
            }
            Err(e) => tracing::warn!(error = %e, "node watch"),
        }
    }
}

/// The per-node topology ConfigMaps: a node's GPUs and the pods holding them.
async fn watch_topologies(client: Client, ns: String, shared: Arc<Shared>) {
    let api: Api<ConfigMap> = Api::namespaced(client, &ns);
    let cfg = watcher::Config::default().labels(&format!("{NODE_TOPOLOGY_LABEL}=true"));
    let mut s = watcher::watcher(api, cfg).default_backoff().boxed();
    let mut seen: HashSet<String> = HashSet::new();
    while let Some(ev) = s.next().await {
        let (cm, gone) = match ev {
            Ok(WEvent::Apply(cm)) => (cm, false),
            Ok(WEvent::InitApply(cm)) => {
                seen.extend(cm.labels().get(NODE_NAME_LABEL).cloned());
                (cm, false)
            }
            Ok(WEvent::Delete(cm)) => (cm, true),
            Ok(WEvent::InitDone) => {
                // ConfigMaps deleted while the watch was down.
                shared.lock().topologies.retain(|n, _| seen.contains(n));
                shared.mark_all();
                continue;
            }
            Ok(WEvent::Init) => {
                seen.clear();
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "topology ConfigMap watch");
                continue;
            }
        };
        let Some(node) = cm.labels().get(NODE_NAME_LABEL).cloned() else { continue };
        let concerned = {
            let mut st = shared.lock();
            if gone {
                st.topologies.remove(&node);
            } else {
                st.topologies.insert(node.clone(), cm.data.clone().unwrap_or_default());
            }
            st.nodes.get(&node).is_some_and(|m| concerned(m, shared.args.request.runai))
        };
        if concerned {
            shared.queue.mark([node]);
        }
    }
}

/// Decides one node and writes what differs.
async fn reconcile(client: &Client, shared: &Shared, name: &str) -> Result<(), Error> {
    let runai = shared.args.request.runai;
    let (meta, write) = {
        let st = shared.lock();
        let Some(meta) = st.nodes.get(name).filter(|m| concerned(m, runai)).cloned() else { return Ok(()) };
        let gpus = match core::node_gpus(name, &meta.labels, st.topologies.get(name)) {
            Ok(Some(g)) => g,
            Ok(None) => {
                tracing::debug!(node = name, "no GPUs known (yet): nothing to partition");
                return Ok(());
            }
            Err(e) => {
                tracing::warn!(node = name, error = %e, "node's GPUs unreadable");
                return Ok(());
            }
        };
        let applied = core::applied(&meta.annotations);
        let input = NodeInput { labels: &meta.labels, annotations: &meta.annotations, node: &gpus.0, holders: &gpus.1, applied: &applied };
        let outcome = core::decide(input, st.custom.as_ref(), Options { runai });
        let write = core::write(&meta.labels, &meta.annotations, &outcome);
        (meta, write)
    };
    if write.is_empty() {
        return Ok(());
    }
    match core::shared_edge::write_node(client, name, &meta, &write).await? {
        Some(patched) => shared.record_node(name, patched),
        // Deleted meanwhile: nothing to do (its Delete event drops it too).
        None => {
            shared.lock().nodes.remove(name);
        }
    }
    Ok(())
}
