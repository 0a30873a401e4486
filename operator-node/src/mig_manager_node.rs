//! `node-mig-manager`: NVIDIA mig-manager's contract on a real node (chart: DaemonSet
//! `nvidia-mig-manager` on nodes labelled `nvidia.com/gpu.deploy.mig-manager=true`, as NVIDIA's
//! GPU Operator deploys its own). Thin edge over [`fakegpu_operator_core::mig_manager`] and its
//! [`live`](fakegpu_operator_core::mig_manager::live) half: the request is decided from the
//! layouts in the node's live state file, a success is written there (so the fake NVML, NVIDIA's
//! nvidia-smi, the device plugin and the DRA plugin see it at once), and the Node's applied-layout
//! annotation mirrors the file, from which the status-updater derives labels, topology MIG
//! devices and metrics as for KWOK nodes.
//!
//! Level-triggered, one node: a reconcile runs when the Node, its topology ConfigMap (the pods
//! holding GPUs), the custom configurations or the state file's layouts change, and every
//! `--resync-seconds`; each starts from what is.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::runtime::watcher::{self, Event as WEvent};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use tokio::sync::Notify;

use crate::kubelet::cli::{runtime, terminated, NodeArgs};
use crate::kubelet::{load_node, NodeFiles};
use fakegpu_model::state_file;
use fakegpu_operator_core::common::TopologyArgs;
use fakegpu_operator_core::mig_manager::shared_edge::{self, NodeMeta, RequestArgs};
use fakegpu_operator_core::mig_manager::{self as core, live, MigConfigError, MigConfigs, NodeInput, Options, Outcome};
use fakegpu_operator_core::topology::{NodeTopology, NODE_NAME_LABEL, NODE_TOPOLOGY_LABEL, TOPOLOGY_KEY};

/// Flags of `fake-gpu-operator node-mig-manager`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub node: NodeArgs,
    #[command(flatten)]
    pub topology: TopologyArgs,
    #[command(flatten)]
    pub request: RequestArgs,
    /// Seconds between full reconciles.
    #[arg(long, default_value_t = 60)]
    pub resync_seconds: u64,
    /// Milliseconds between looks at the state file's layouts (a change made with nvidia-smi).
    #[arg(long, default_value_t = 1000)]
    pub poll_ms: u64,
}

#[derive(Default)]
struct Inputs {
    node: Option<NodeMeta>,
    /// The node's topology ConfigMap data.
    topology: Option<BTreeMap<String, String>>,
    custom: Option<Result<MigConfigs, MigConfigError>>,
    /// The request this process last applied with success ([`live::settled`]).
    last_applied: Option<core::Request>,
}

struct Shared {
    inputs: Mutex<Inputs>,
    changed: Notify,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inputs> {
        self.inputs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps the node's metadata unless older than the one known (a watch event from before
    /// our own patch, whose response came first).
    fn record_node(&self, meta: NodeMeta) {
        let mut st = self.lock();
        let older = st.node.as_ref().is_some_and(|k| meta.older_than(k));
        if !older {
            st.node = Some(meta);
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        let client = args.topology.client().await.context("connecting to the API server")?;
        let ns = args.topology.namespace();
        let name = args.node.node_name.clone();
        tracing::info!(node = %name, namespace = %ns, runai = args.request.runai, "node-mig-manager starting");
        let shared = Arc::new(Shared { inputs: Mutex::default(), changed: Notify::new() });
        let mut tasks = vec![
            tokio::spawn(watch_node(client.clone(), name.clone(), shared.clone())),
            tokio::spawn(watch_topology(client.clone(), ns.clone(), name.clone(), shared.clone())),
        ];
        if let Some(cm) = args.request.configs_configmap.clone() {
            let shared = shared.clone();
            tasks.push(tokio::spawn(shared_edge::watch_custom(client.clone(), ns, cm, move |custom| {
                shared.lock().custom = custom;
                shared.changed.notify_one();
            })));
        }
        let (files, _) = args.node.files();
        tasks.push(tokio::spawn(watch_layouts(files.clone(), name.clone(), Duration::from_millis(args.poll_ms.max(50)), shared.clone())));
        let resync = Duration::from_secs(args.resync_seconds.max(1));
        let work = async {
            loop {
                tokio::select! {
                    _ = shared.changed.notified() => {}
                    _ = tokio::time::sleep(resync) => {}
                }
                if let Err(e) = reconcile(&client, &shared, &files, &name, args.request.runai).await {
                    tracing::warn!(error = %e, "reconcile failed; retrying");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    shared.changed.notify_one();
                }
            }
        };
        tokio::select! {
            _ = terminated() => tracing::info!("shutting down"),
            _ = work => {}
        }
        tasks.iter().for_each(|t| t.abort());
        Ok(())
    })
}

async fn watch_node(client: Client, name: String, shared: Arc<Shared>) {
    let api: Api<Node> = Api::all(client);
    let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut s = watcher::watcher(api, cfg).default_backoff().boxed();
    while let Some(ev) = s.next().await {
        match ev {
            Ok(WEvent::Apply(n) | WEvent::InitApply(n)) => shared.record_node(NodeMeta::of(&n)),
            Ok(WEvent::Delete(_)) => shared.lock().node = None,
            Ok(WEvent::Init | WEvent::InitDone) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "node watch");
                continue;
            }
        }
        shared.changed.notify_one();
    }
}

/// The node's topology ConfigMap: which pods hold its GPUs.
async fn watch_topology(client: Client, ns: String, name: String, shared: Arc<Shared>) {
    let api: Api<ConfigMap> = Api::namespaced(client, &ns);
    let cfg = watcher::Config::default().labels(&format!("{NODE_TOPOLOGY_LABEL}=true,{NODE_NAME_LABEL}={name}"));
    let mut s = watcher::watcher(api, cfg).default_backoff().boxed();
    while let Some(ev) = s.next().await {
        match ev {
            Ok(WEvent::Apply(cm) | WEvent::InitApply(cm)) => shared.lock().topology = Some(cm.data.unwrap_or_default()),
            Ok(WEvent::Delete(_)) => shared.lock().topology = None,
            Ok(WEvent::Init | WEvent::InitDone) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "topology ConfigMap watch");
                continue;
            }
        }
        shared.changed.notify_one();
    }
}

/// Wakes a reconcile when the state file's layouts change under us (NVIDIA's nvidia-smi `mig`
/// commands, a `fakegpu state mig` edit), so the annotation follows within a poll.
async fn watch_layouts(files: NodeFiles, name: String, every: Duration, shared: Arc<Shared>) {
    let mut last: Option<core::Applied> = None;
    loop {
        tokio::time::sleep(every).await;
        let Ok(node) = load_node(&files, &name) else { continue };
        let Ok(state) = state_file::read_checked(&files.state(), &node.spec) else { continue };
        let now = live::applied_in_state(&state, node.spec.gpu_count);
        if last.as_ref().is_some_and(|l| !core::same_applied(l, &now)) {
            shared.changed.notify_one();
        }
        last = Some(now);
    }
}

/// Decides the node's request from its live state, applies a success there, and writes the
/// outcome and the mirrored layouts to the Node.
async fn reconcile(client: &Client, shared: &Shared, files: &NodeFiles, name: &str, runai: bool) -> anyhow::Result<()> {
    // The config is re-read each time: a pool's profile may change under a running manager.
    let node = match load_node(files, name) {
        Ok(n) => n,
        Err(e) => {
            tracing::info!(error = %e, "no node config yet: nothing to partition");
            return Ok(());
        }
    };
    let state_path = files.state();
    let state = state_file::read_checked(&state_path, &node.spec).with_context(|| format!("reading {}", state_path.display()))?;
    let gpu_count = node.spec.gpu_count;
    let (meta, request, mut outcome) = {
        let st = shared.lock();
        let Some(meta) = st.node.clone() else { return Ok(()) };
        let request = core::request(&meta.labels, &meta.annotations, runai);
        if live::settled(request.as_ref(), st.last_applied.as_ref(), &meta.labels) {
            (meta, request, Outcome::NoRequest)
        } else {
            // Pods the cluster knows of first (they name the pod), then processes on the node.
            let mut holders = st
                .topology
                .as_ref()
                .and_then(|d| d.get(TOPOLOGY_KEY))
                .and_then(|t| NodeTopology::from_yaml(t).ok())
                .map(|t| core::holders(&t))
                .unwrap_or_default();
            for (g, h) in live::state_holders(&state, gpu_count) {
                holders.entry(g).or_insert(h);
            }
            let applied = Ok(live::applied_in_state(&state, gpu_count));
            let input =
                NodeInput { labels: &meta.labels, annotations: &meta.annotations, node: &node, holders: &holders, applied: &applied };
            let outcome = core::decide(input, st.custom.as_ref(), Options { runai });
            (meta, request, outcome)
        }
    };
    if let Outcome::Success { applied, .. } = &outcome {
        let now = state_file::now();
        match state_file::update(&state_path, &node.spec, |s| live::apply_layouts(s, &node.spec, applied, now)) {
            Ok(changed) if !changed.is_empty() => tracing::info!(gpus = ?changed, "MIG layout applied to the live state"),
            Ok(_) => {}
            Err(state_file::UpdateError::Rejected(e)) => outcome = Outcome::Failed { reason: format!("{e}; nothing was changed") },
            Err(e) => outcome = Outcome::Failed { reason: format!("the node's live state refused the layout: {e}; nothing was changed") },
        }
    }
    match &outcome {
        Outcome::Success { .. } => shared.lock().last_applied = request,
        Outcome::Failed { .. } => shared.lock().last_applied = None,
        Outcome::NoRequest => {}
    }
    let state = state_file::read_checked(&state_path, &node.spec).with_context(|| format!("reading {}", state_path.display()))?;
    let write = live::write_live(&meta.labels, &meta.annotations, &outcome, &live::applied_in_state(&state, gpu_count));
    if write.is_empty() {
        return Ok(());
    }
    match shared_edge::write_node(client, name, &meta, &write).await.context("patching the node")? {
        Some(patched) => shared.record_node(patched),
        None => shared.lock().node = None,
    }
    Ok(())
}
