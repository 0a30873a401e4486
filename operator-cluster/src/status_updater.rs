//! `status-updater`: keeps every pool node's per-node topology ConfigMap, GFD/deploy labels and
//! (real nodes) node config file equal to what the [`Index`] decides. Thin edge: watchers feed
//! the index, a writer drains the set of changed nodes and applies each node's view.
//!
//! Restart-safe: before watching, the per-node ConfigMaps are read and their allocations seeded
//! into the index; ConfigMaps of nodes that are gone are deleted. The cluster config is watched
//! (hot reload); an invalid one is logged, reported as a Warning Event on the ConfigMap, and the
//! last good config stays in force.
//!
//! Pools with `gpu.backend: mock` get their ConfigMap and DaemonSet `nvml-mock-<pool>` from
//! [`crate::nvml_mock`], level-triggered: after each config change and every
//! `--nvml-mock-resync-seconds`.
//!
//! Shared GPUs: reservation pods get `run.ai/reserve_for_gpu_index` (the index decides which,
//! the writer patches). PodGroups (`scheduling.run.ai/v2alpha2`) are watched for their priority
//! class, which gives pods without a `workloadKind` label their type; a cluster without the
//! CRD is logged once and the watch keeps retrying (the CRD may be installed later).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod};
use kube::api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event as WEvent};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::sync::{mpsc, Notify};

use crate::kwok_device_plugin::{self, KwokNode};
use crate::work_queue::WorkQueue;
use fakegpu_operator_core::common::{self, Error, TopologyArgs, FIELD_MANAGER};
use fakegpu_operator_core::config::ClusterConfig;
use fakegpu_operator_core::index::{Index, IndexOptions, NodeInfo, NodeView, PodAnnotation};
use fakegpu_operator_core::labels;
use fakegpu_operator_core::node_files::NodeFiles;
use fakegpu_operator_core::nvml_mock;
use fakegpu_operator_core::pod::{PodInfo, DEFAULT_RESERVATION_NAMESPACE};
use fakegpu_operator_core::resolve::Profiles;
use fakegpu_operator_core::topology::{node_cm_name, NodeTopology, NODE_NAME_LABEL, NODE_TOPOLOGY_LABEL, TOPOLOGY_KEY};

/// Flags of `fake-gpu-operator status-updater`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub topology: TopologyArgs,
    /// Directory for real nodes' fake NVML files: `<dir>/<node>/config.json`.
    #[arg(long, env = "FAKEGPU_NODE_DIR", default_value = "/var/lib/fake-gpu-operator/nodes")]
    pub node_dir: PathBuf,
    /// Also write node files for KWOK nodes (local development: every node is "this host").
    #[arg(long, env = "FAKEGPU_NODE_FILES_FOR_KWOK")]
    pub node_files_for_kwok: bool,
    /// Write no node files at all: the node dir is not the nodes' disk (the chart's Deployment);
    /// the node-local status-exporter (`--write-node-files`) writes them from the ConfigMap.
    #[arg(long, env = "FAKEGPU_NO_NODE_FILES", conflicts_with = "node_files_for_kwok")]
    pub no_node_files: bool,
    /// Do not write the deploy labels (upstream `DISABLE_NODE_LABELING`).
    #[arg(long, env = "DISABLE_NODE_LABELING")]
    pub disable_node_labeling: bool,
    /// API writes in flight.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Set a KWOK node's capacity (as the kwok-gpu-device-plugin of the same namespace would)
    /// in the same write as its labels, before its ConfigMap: one node write instead of two.
    /// The chart sets it when that plugin runs; it keeps fixing what drifts.
    #[arg(long, env = "FAKEGPU_KWOK_CAPACITY")]
    pub kwok_capacity: bool,
    /// Namespace of the reservation pods that hold shared (fractional) GPUs.
    #[arg(long, env = "RESOURCE_RESERVATION_NAMESPACE", default_value = DEFAULT_RESERVATION_NAMESPACE)]
    pub reservation_namespace: String,
    /// Run:ai integration: keep the PrometheusRule `runai/fake-gpu-operator-kwok-dcgm` while
    /// namespace `runai` exists (upstream `RUNAI_INTEGRATION_ENABLED`).
    #[arg(long, env = "RUNAI_INTEGRATION_ENABLED")]
    pub runai_integration: bool,
    /// How often the Run:ai integration looks (a Go duration; invalid or 0: 30s, as upstream).
    #[arg(long, env = "RUNAI_INTEGRATION_POLLING_INTERVAL", default_value = "30s")]
    pub runai_integration_polling_interval: String,
    /// Publish NodeResourceTopology objects for nodes of pools with a `numa` block (upstream's
    /// `NODE_RESOURCE_TOPOLOGY_ENABLED`, which its status-exporter read).
    #[arg(long, env = "NODE_RESOURCE_TOPOLOGY_ENABLED")]
    pub node_resource_topology: bool,
    /// Seconds between NodeResourceTopology syncs.
    #[arg(long, default_value_t = 10)]
    pub node_resource_topology_seconds: u64,
    /// Image of the mock backend's node agent (DaemonSets `nvml-mock-<pool>`): this operator's
    /// image, which holds the agent, the fake libraries and nvidia-smi. NVIDIA's nvml-mock image
    /// cannot stand in for it.
    #[arg(long, env = "FAKEGPU_NVML_MOCK_IMAGE", default_value = concat!("ghcr.io/fake-gpu-operator/fake-gpu-operator:", env!("CARGO_PKG_VERSION")))]
    pub nvml_mock_image: String,
    /// Pull policy of the agent's image (upstream's `IMAGE_PULL_POLICY`).
    #[arg(long, env = "IMAGE_PULL_POLICY", default_value = "IfNotPresent")]
    pub nvml_mock_image_pull_policy: String,
    /// Seconds between resyncs of the mock backend's objects (upstream: 30).
    #[arg(long, default_value_t = 30)]
    pub nvml_mock_resync_seconds: u64,
}

enum Msg {
    Node(Box<Node>),
    NodeGone(String),
    NodesListed(HashSet<String>),
    Pod(Box<PodInfo>),
    PodGone((String, String)),
    PodsListed(HashSet<(String, String)>),
    ConfigMaps,
    /// A ResourceClaim: (namespace, name) → gpu.nvidia.com devices, pods it is reserved for.
    Claim((String, String), Option<(Vec<String>, Vec<String>)>),
    /// A PodGroup: (namespace, name) → `spec.priorityClassName` (`None`: deleted or none).
    PodGroup((String, String), Option<String>),
    /// The PodGroups listed by a (re)list (those not in it are gone); `None`: the list failed,
    /// what is known stays.
    PodGroupsListed(Option<HashSet<(String, String)>>),
}

/// Upstream's PodGroup: `scheduling.run.ai/v2alpha2`, plural `podgroups`.
fn pod_group_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("scheduling.run.ai", "v2alpha2", "PodGroup"), "podgroups")
}

/// Synced bits: the writer starts when nodes, pods and PodGroups were listed once.
const SYNCED_NODES: u8 = 1;
const SYNCED_PODS: u8 = 2;
const SYNCED_POD_GROUPS: u8 = 4;
const SYNCED_ALL: u8 = SYNCED_NODES | SYNCED_PODS | SYNCED_POD_GROUPS;

/// DRA driver whose devices are GPUs of the topology.
const DRA_DRIVER: &str = "gpu.nvidia.com";

/// The pods with ResourceClaims and what their claims hold (DRA allocations without a grant
/// annotation are taken from `status.allocation.devices.results`, as upstream).
#[derive(Default)]
struct Claims {
    claims: HashMap<(String, String), (Vec<String>, Vec<String>)>,
    pods: HashMap<(String, String), PodInfo>,
}

impl Claims {
    fn devices_for(&self, ns: &str, pod: &str) -> Vec<String> {
        let mut d: Vec<String> = self
            .claims
            .iter()
            .filter(|((cns, _), (_, pods))| cns == ns && pods.iter().any(|p| p == pod))
            .flat_map(|(_, (devs, _))| devs.iter().cloned())
            .collect();
        d.sort();
        d.dedup();
        d
    }
}

struct Shared {
    index: Mutex<Index>,
    /// KWOK nodes' capacity as the kwok-gpu-device-plugin records it (with `--kwok-capacity`).
    kwok_nodes: Mutex<HashMap<String, KwokNode>>,
    /// Nodes whose view changed.
    queue: Arc<WorkQueue>,
    /// `SYNCED_*` bits; the writer starts at `SYNCED_ALL`.
    synced: std::sync::atomic::AtomicU8,
    ready: Notify,
    /// Whether the config in force is one the user gave (or no ConfigMap at all): the defaults
    /// standing in for an invalid config at start must not delete the mock pools' objects.
    config_valid: std::sync::atomic::AtomicBool,
    /// Wakes the mock backend's reconciler after a config change.
    mock_trigger: Arc<Notify>,
}

impl Shared {
    fn synced(&self, bit: u8) {
        let before = self.synced.fetch_or(bit, std::sync::atomic::Ordering::SeqCst);
        if before | bit == SYNCED_ALL && before != SYNCED_ALL {
            self.ready.notify_one();
        }
    }

    /// Keeps a KWOK node's recorded capacity, unless it is older than the one known (a watch
    /// event from before our own patch, whose response came first).
    fn record_kwok(&self, name: &str, node: KwokNode) {
        let mut known = self.kwok_nodes.lock().expect("kwok nodes lock");
        if !known.get(name).is_some_and(|k| node.older_than(k)) {
            known.insert(name.to_string(), node);
        }
    }

    /// Takes a node as our write left it (the response) ahead of its watch event: a reconcile
    /// before that event must not find the labels unwritten and write them again.
    fn written_node(&self, node: &Node) {
        if self.index.lock().expect("index lock").upsert_node(NodeInfo::from_node(node)) {
            self.mark(node.metadata.name.clone());
        }
    }

    fn mark<I: IntoIterator<Item = String>>(&self, nodes: I) {
        self.queue.mark(nodes);
    }
}

/// Runs until SIGINT/SIGTERM.
pub async fn run(args: Args) -> Result<(), Error> {
    let client = args.topology.client().await?;
    let ns = args.topology.namespace();
    ensure_namespace(&client, &ns).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);

    // Config: a missing ConfigMap means the chart defaults; an invalid one the defaults too,
    // reported, until a valid one appears.
    let cluster_cm = cms.get_opt(&args.topology.topology_cm).await?;
    let (profiles, perr) = common::profiles_from(&common::list_profiles(&client, &ns).await?);
    for e in &perr {
        tracing::warn!(error = %e, "ignoring profile ConfigMap");
    }
    let mut config_valid = true;
    let cfg = match common::config_from_cm(cluster_cm.as_ref()) {
        Ok(Some(c)) => c,
        Ok(None) => {
            tracing::warn!(namespace = %ns, name = %args.topology.topology_cm, "no topology ConfigMap: using the chart defaults (pool `default`: 2 × Tesla-K80)");
            ClusterConfig::default()
        }
        Err(e) => {
            report_config_error(&client, &ns, &args.topology.topology_cm, cluster_cm.as_ref(), &e.to_string()).await;
            config_valid = false;
            ClusterConfig::default()
        }
    };
    let opts =
        IndexOptions { disable_deploy_labels: args.disable_node_labeling, reservation_namespace: args.reservation_namespace.clone() };
    let index = match Index::new(cfg.clone(), profiles.clone(), opts.clone()) {
        Ok(i) => i,
        Err(e) => {
            report_config_error(&client, &ns, &args.topology.topology_cm, cluster_cm.as_ref(), &e.to_string()).await;
            config_valid = false;
            Index::new(ClusterConfig::default(), Profiles::default(), opts)?
        }
    };
    let shared = Arc::new(Shared {
        index: Mutex::new(index),
        kwok_nodes: Mutex::default(),
        queue: Arc::default(),
        synced: Default::default(),
        ready: Notify::new(),
        config_valid: config_valid.into(),
        mock_trigger: Arc::default(),
    });

    // Restart: what the ConfigMaps recorded.
    let existing = cms.list(&ListParams::default().labels(&format!("{NODE_TOPOLOGY_LABEL}=true"))).await?;
    let mut written: HashMap<String, CmFingerprint> = HashMap::new();
    {
        let mut ix = shared.index.lock().expect("index lock");
        for cm in &existing.items {
            let Some(node) = cm.labels().get(NODE_NAME_LABEL).cloned() else { continue };
            if let Some(t) = cm.data.as_ref().and_then(|d| d.get(TOPOLOGY_KEY)).and_then(|t| NodeTopology::from_yaml(t).ok()) {
                ix.seed_recorded(&node, &t);
            }
            // What it holds, so that a ConfigMap already right is not written again.
            let data = cm.data.iter().flatten().map(|(k, v)| (k.as_str(), v.as_str()));
            written.insert(
                node,
                cm_fingerprint(data, cm.annotations().get(fakegpu_operator_core::topology::KWOK_NODE_ANNOTATION).map(String::as_str)),
            );
        }
    }
    tracing::info!(namespace = %ns, seeded = existing.items.len(), "status-updater starting");

    if args.runai_integration {
        let interval = crate::runai_rule::polling_interval(&args.runai_integration_polling_interval);
        tracing::info!(every = ?interval, "Run:ai integration on");
        tokio::spawn(crate::runai_rule::RuleKeeper::new(client.clone()).run(interval));
    }

    if args.node_resource_topology {
        let publisher = fakegpu_operator_core::nrt::Publisher::new(client.clone(), ns.clone(), args.topology.topology_cm.clone());
        tokio::spawn(publisher.run(Duration::from_secs(args.node_resource_topology_seconds.max(1))));
    }

    {
        let settings = nvml_mock::Settings {
            namespace: ns.clone(),
            image: args.nvml_mock_image.clone(),
            image_pull_policy: args.nvml_mock_image_pull_policy.clone(),
            owner: None,
        };
        let trigger = shared.mock_trigger.clone();
        let shared = shared.clone();
        let desired = move |owner: Option<nvml_mock::Owner>| {
            if !shared.config_valid.load(std::sync::atomic::Ordering::SeqCst) {
                return None;
            }
            let settings = nvml_mock::Settings { owner, ..settings.clone() };
            let ix = shared.index.lock().expect("index lock");
            Some(nvml_mock::desired(ix.config(), ix.pools(), &settings))
        };
        let every = Duration::from_secs(args.nvml_mock_resync_seconds.max(1));
        let owner = args.topology.topology_cm.clone();
        tokio::spawn(crate::nvml_mock::run(client.clone(), ns.clone(), owner, desired, trigger, every));
    }

    let (tx, rx) = mpsc::channel::<Msg>(4096);
    tokio::spawn(watch_nodes(client.clone(), tx.clone()));
    tokio::spawn(watch_pods(client.clone(), tx.clone()));
    tokio::spawn(watch_configmaps(client.clone(), ns.clone(), tx.clone()));
    tokio::spawn(watch_claims(client.clone(), tx.clone()));
    tokio::spawn(watch_pod_groups(client.clone(), tx.clone()));
    let writer = Writer {
        client: client.clone(),
        ns: ns.clone(),
        args: args.clone(),
        written: Arc::new(Mutex::new(written)),
        annotated: Arc::new(Mutex::new(HashMap::new())),
    };
    tokio::spawn(writer.run(shared.clone()));
    let apply =
        tokio::spawn(apply_loop(client.clone(), ns.clone(), args.topology.topology_cm.clone(), args.kwok_capacity, shared.clone(), rx));
    tokio::select! {
        _ = common::shutdown_signal() => tracing::info!("shutting down"),
        r = apply => tracing::error!(?r, "event loop ended"),
    }
    Ok(())
}

async fn ensure_namespace(client: &Client, ns: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    if let Ok(None) = api.get_opt(ns).await {
        let obj: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).expect("namespace shape");
        match api.create(&PostParams::default(), &obj).await {
            Ok(_) => tracing::info!(namespace = ns, "created namespace"),
            Err(e) => tracing::warn!(namespace = ns, error = %e, "could not create namespace"),
        }
    }
}

async fn report_config_error(client: &Client, ns: &str, name: &str, cm: Option<&ConfigMap>, msg: &str) {
    tracing::error!(namespace = ns, configmap = name, error = msg, "invalid topology config; keeping the last good one");
    let uid = cm.and_then(|c| c.metadata.uid.clone());
    common::warning_event(client, ns, common::cm_ref(ns, name, uid), "InvalidTopologyConfig", msg, "status-updater").await;
}

async fn watch_nodes(client: Client, tx: mpsc::Sender<Msg>) {
    let api: Api<Node> = Api::all(client);
    let mut seen: Option<HashSet<String>> = None;
    let mut s = watcher::watcher(api, watcher::Config::default()).default_backoff().boxed();
    while let Some(ev) = s.next().await {
        let msg = match ev {
            Ok(WEvent::Apply(n)) => Msg::Node(Box::new(n)),
            Ok(WEvent::InitApply(n)) => {
                seen.get_or_insert_with(HashSet::new).insert(n.name_any());
                Msg::Node(Box::new(n))
            }
            Ok(WEvent::Delete(n)) => Msg::NodeGone(n.name_any()),
            Ok(WEvent::Init) => {
                seen = Some(HashSet::new());
                continue;
            }
            Ok(WEvent::InitDone) => Msg::NodesListed(seen.take().unwrap_or_default()),
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

async fn watch_pods(client: Client, tx: mpsc::Sender<Msg>) {
    let api: Api<Pod> = Api::all(client);
    let mut seen: Option<HashSet<(String, String)>> = None;
    let mut s = watcher::watcher(api, watcher::Config::default()).default_backoff().boxed();
    while let Some(ev) = s.next().await {
        let msg = match ev {
            Ok(WEvent::Apply(p)) => Msg::Pod(Box::new(PodInfo::from_pod(&p))),
            Ok(WEvent::InitApply(p)) => {
                let info = PodInfo::from_pod(&p);
                seen.get_or_insert_with(HashSet::new).insert(info.key());
                Msg::Pod(Box::new(info))
            }
            Ok(WEvent::Delete(p)) => Msg::PodGone((p.namespace().unwrap_or_default(), p.name_any())),
            Ok(WEvent::Init) => {
                seen = Some(HashSet::new());
                continue;
            }
            Ok(WEvent::InitDone) => Msg::PodsListed(seen.take().unwrap_or_default()),
            Err(e) => {
                tracing::warn!(error = %e, "pod watch");
                continue;
            }
        };
        if tx.send(msg).await.is_err() {
            return;
        }
    }
}

/// Claims in the `resource.k8s.io` version the API server serves.
async fn watch_claims(client: Client, tx: mpsc::Sender<Msg>) {
    use k8s_openapi::api::resource::v1::ResourceClaim;
    let dra = fakegpu_operator_core::resource_api::DraApi::new_or_v1(client).await;
    let mut s = dra.watch::<ResourceClaim>(watcher::Config::default()).default_backoff().boxed();
    while let Some(ev) = s.next().await {
        let msg = match ev {
            Ok(WEvent::Apply(c) | WEvent::InitApply(c)) => {
                let st = c.status.as_ref();
                let devices: Vec<String> = st
                    .and_then(|s| s.allocation.as_ref())
                    .and_then(|a| a.devices.as_ref())
                    .map(|d| d.results.iter().flatten().filter(|r| r.driver == DRA_DRIVER).map(|r| r.device.clone()).collect())
                    .unwrap_or_default();
                let pods: Vec<String> = st
                    .and_then(|s| s.reserved_for.as_ref())
                    .map(|r| r.iter().filter(|r| r.resource == "pods").map(|r| r.name.clone()).collect())
                    .unwrap_or_default();
                Msg::Claim((c.namespace().unwrap_or_default(), c.name_any()), Some((devices, pods)))
            }
            Ok(WEvent::Delete(c)) => Msg::Claim((c.namespace().unwrap_or_default(), c.name_any()), None),
            Ok(_) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "resourceclaim watch");
                continue;
            }
        };
        if tx.send(msg).await.is_err() {
            return;
        }
    }
}

/// PodGroups' priority classes. A missing CRD (404) or missing RBAC (403) is logged once and
/// counts as "listed, none" so the writer does not wait for it; the watcher keeps retrying
/// with backoff, so a CRD installed later is picked up.
async fn watch_pod_groups(client: Client, tx: mpsc::Sender<Msg>) {
    let ar = pod_group_resource();
    let api: Api<DynamicObject> = Api::all_with(client, &ar);
    let mut seen: Option<HashSet<(String, String)>> = None;
    let mut unavailable: Option<u16> = None;
    let mut s = watcher::watcher(api, watcher::Config::default()).default_backoff().boxed();
    while let Some(ev) = s.next().await {
        let priority =
            |o: &DynamicObject| o.data.get("spec").and_then(|s| s.get("priorityClassName")).and_then(|v| v.as_str()).map(str::to_string);
        let key = |o: &DynamicObject| (o.namespace().unwrap_or_default(), o.name_any());
        let msg = match ev {
            Ok(WEvent::Apply(o)) => Msg::PodGroup(key(&o), priority(&o)),
            Ok(WEvent::InitApply(o)) => {
                seen.get_or_insert_with(HashSet::new).insert(key(&o));
                Msg::PodGroup(key(&o), priority(&o))
            }
            Ok(WEvent::Delete(o)) => Msg::PodGroup(key(&o), None),
            Ok(WEvent::Init) => {
                seen = Some(HashSet::new());
                continue;
            }
            Ok(WEvent::InitDone) => {
                if unavailable.take().is_some() {
                    tracing::info!("PodGroups (scheduling.run.ai/v2alpha2) can be listed now; pod types follow their priority classes");
                }
                Msg::PodGroupsListed(Some(seen.take().unwrap_or_default()))
            }
            Err(e) => {
                let code = match &e {
                    watcher::Error::InitialListFailed(kube::Error::Api(s)) | watcher::Error::WatchStartFailed(kube::Error::Api(s)) => {
                        s.code
                    }
                    _ => 0,
                };
                match code {
                    404 | 403 if unavailable != Some(code) => {
                        if code == 404 {
                            tracing::info!(
                                "no PodGroup CRD (scheduling.run.ai/v2alpha2): pod types come from workloadKind only until it appears"
                            );
                        } else {
                            tracing::warn!(error = %e, "PodGroups cannot be listed (RBAC): pod types come from workloadKind only");
                        }
                        unavailable = Some(code);
                    }
                    404 | 403 => tracing::debug!(error = %e, "podgroup watch"),
                    _ => tracing::warn!(error = %e, "podgroup watch"),
                }
                // No CRD: there are no PodGroups. Other errors: keep what is known; the writer
                // need not wait for a list that may never come.
                Msg::PodGroupsListed((code == 404).then(HashSet::new))
            }
        };
        if tx.send(msg).await.is_err() {
            return;
        }
    }
}

/// Any change to a ConfigMap that is not a per-node one (cluster config, profiles) triggers a reload.
async fn watch_configmaps(client: Client, ns: String, tx: mpsc::Sender<Msg>) {
    let api: Api<ConfigMap> = Api::namespaced(client, &ns);
    let cfg = watcher::Config::default().labels(&format!("!{NODE_TOPOLOGY_LABEL}"));
    let mut s = watcher::watcher(api, cfg).default_backoff().touched_objects().boxed();
    let mut last: HashMap<String, Option<BTreeMap<String, String>>> = HashMap::new();
    while let Some(ev) = s.next().await {
        match ev {
            Ok(cm) => {
                let name = cm.name_any();
                let data = if cm.metadata.deletion_timestamp.is_some() { None } else { cm.data.clone() };
                if last.get(&name) == Some(&data) {
                    continue;
                }
                last.insert(name, data);
                if tx.send(Msg::ConfigMaps).await.is_err() {
                    return;
                }
            }
            Err(e) => tracing::warn!(error = %e, "configmap watch"),
        }
    }
}

async fn apply_loop(client: Client, ns: String, cm_name: String, kwok_capacity: bool, shared: Arc<Shared>, mut rx: mpsc::Receiver<Msg>) {
    let mut last_config_text: Option<Option<String>> = None;
    let mut last_error: Option<String> = None;
    let mut claims = Claims::default();
    while let Some(msg) = rx.recv().await {
        let mut dirty: Vec<String> = Vec::new();
        match msg {
            Msg::ConfigMaps => {
                // Re-read config and profiles; apply if they changed and are valid.
                let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
                let cm = match cms.get_opt(&cm_name).await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "reading topology ConfigMap");
                        continue;
                    }
                };
                let profiles_cms = common::list_profiles(&client, &ns).await.unwrap_or_default();
                let text = cm.as_ref().and_then(|c| c.data.as_ref()).and_then(|d| d.get(TOPOLOGY_KEY)).cloned();
                let fingerprint =
                    Some(format!("{text:?}|{:?}", profiles_cms.iter().map(|c| (&c.metadata.name, &c.data)).collect::<Vec<_>>()));
                if last_config_text == Some(fingerprint.clone()) {
                    continue;
                }
                last_config_text = Some(fingerprint);
                let (profiles, perr) = common::profiles_from(&profiles_cms);
                for e in &perr {
                    tracing::warn!(error = %e, "ignoring profile ConfigMap");
                }
                let parsed = match common::config_from_cm(cm.as_ref()) {
                    Ok(Some(c)) => Ok(c),
                    Ok(None) => Ok(ClusterConfig::default()),
                    Err(e) => Err(e),
                };
                let result = parsed.and_then(|c| shared.index.lock().expect("index lock").set_config(c, profiles));
                match result {
                    Ok(nodes) => {
                        if last_error.take().is_some() {
                            tracing::info!("topology config valid again");
                        }
                        tracing::info!(nodes = nodes.len(), "topology config applied");
                        shared.config_valid.store(true, std::sync::atomic::Ordering::SeqCst);
                        shared.mock_trigger.notify_one();
                        dirty = nodes;
                    }
                    Err(e) => {
                        let msg = e.to_string();
                        if last_error.as_deref() != Some(msg.as_str()) {
                            report_config_error(&client, &ns, &cm_name, cm.as_ref(), &msg).await;
                            last_error = Some(msg);
                        }
                    }
                }
            }
            Msg::Node(n) => {
                let info = NodeInfo::from_node(&n);
                let name = info.name.clone();
                if kwok_capacity && info.is_kwok() {
                    shared.record_kwok(&name, KwokNode::from_node(&n));
                }
                let mut ix = shared.index.lock().expect("index lock");
                if ix.upsert_node(info) {
                    if let Some(e) = ix.node_error(&name) {
                        tracing::warn!(node = %name, error = e, "node not simulated");
                    }
                    dirty.push(name);
                }
            }
            Msg::NodeGone(name) => {
                shared.kwok_nodes.lock().expect("kwok nodes lock").remove(&name);
                shared.index.lock().expect("index lock").remove_node(&name);
                dirty.push(name);
            }
            Msg::NodesListed(seen) => {
                let mut ix = shared.index.lock().expect("index lock");
                let gone: Vec<String> = ix.node_names().filter(|n| !seen.contains(*n)).cloned().collect();
                for n in &gone {
                    ix.remove_node(n);
                }
                dirty.extend(gone);
                drop(ix);
                shared.synced(SYNCED_NODES);
            }
            Msg::Pod(p) => {
                let mut p = *p;
                if p.has_claims {
                    p.dra_devices = claims.devices_for(&p.namespace, &p.name);
                    claims.pods.insert(p.key(), p.clone());
                } else {
                    claims.pods.remove(&p.key());
                }
                dirty = shared.index.lock().expect("index lock").upsert_pod(p)
            }
            Msg::PodGone(key) => {
                claims.pods.remove(&key);
                dirty.extend(shared.index.lock().expect("index lock").remove_pod(&key))
            }
            Msg::Claim(key, value) => {
                let old = match value {
                    Some(v) => claims.claims.insert(key.clone(), v),
                    None => claims.claims.remove(&key),
                };
                let mut names: BTreeSet<String> = old.map(|(_, p)| p.into_iter().collect()).unwrap_or_default();
                names.extend(claims.claims.get(&key).map(|(_, p)| p.clone()).unwrap_or_default());
                for name in names {
                    let pk = (key.0.clone(), name.clone());
                    let devices = claims.devices_for(&key.0, &name);
                    if let Some(p) = claims.pods.get_mut(&pk) {
                        if p.dra_devices != devices {
                            p.dra_devices = devices;
                            let p = p.clone();
                            dirty.extend(shared.index.lock().expect("index lock").upsert_pod(p));
                        }
                    }
                }
            }
            Msg::PodsListed(seen) => {
                let mut ix = shared.index.lock().expect("index lock");
                for key in ix.pod_keys().into_iter().filter(|k| !seen.contains(k)) {
                    dirty.extend(ix.remove_pod(&key));
                }
                drop(ix);
                shared.synced(SYNCED_PODS);
            }
            Msg::PodGroup((ns, name), priority) => {
                dirty = shared.index.lock().expect("index lock").upsert_pod_group(&ns, &name, priority);
            }
            Msg::PodGroupsListed(seen) => {
                if let Some(seen) = seen {
                    let mut ix = shared.index.lock().expect("index lock");
                    for (ns, name) in ix.pod_group_keys().into_iter().filter(|k| !seen.contains(k)) {
                        dirty.extend(ix.upsert_pod_group(&ns, &name, None));
                    }
                }
                shared.synced(SYNCED_POD_GROUPS);
            }
        }
        shared.mark(dirty);
    }
}

#[derive(Clone)]
struct Writer {
    client: Client,
    ns: String,
    args: Args,
    /// Per node: what its ConfigMap holds, as last written or as read at start ([`cm_fingerprint`]).
    written: Arc<Mutex<HashMap<String, CmFingerprint>>>,
    /// Per node: pod annotations patched (or refused) that the pod watch has not shown yet, so
    /// they are not patched again on every reconcile meanwhile.
    annotated: Arc<Mutex<HashMap<String, BTreeSet<PodAnnotation>>>>,
}

impl Writer {
    async fn run(self, shared: Arc<Shared>) {
        // Nothing is written before nodes and pods are fully listed: a partial view would
        // delete ConfigMaps and move allocations.
        shared.ready.notified().await;
        tracing::info!("nodes and pods listed; reconciling");
        // Nodes whose ConfigMap exists from before: reconcile them once (deletes stale ones).
        let initial: Vec<String> = self.written.lock().expect("written lock").keys().cloned().collect();
        shared.mark(initial);
        // One write per node in flight; changes arriving meanwhile coalesce into its next write.
        let index = shared.clone();
        shared
            .queue
            .clone()
            .run(self.args.concurrency, Duration::from_millis(500), move |node| {
                let (view, labels) = {
                    let ix = index.index.lock().expect("index lock");
                    (ix.view(&node), ix.node_labels(&node))
                };
                let kwok = index.kwok_nodes.lock().expect("kwok nodes lock").get(&node).cloned();
                let w = self.clone();
                let shared = index.clone();
                async move { w.reconcile(&node, view, labels, kwok, &shared).await }
            })
            .await;
    }

    /// Applies one node's view, or removes what we wrote when it is in no pool (or gone).
    /// `kwok`: the node's capacity as recorded, when this writer sets KWOK capacity.
    async fn reconcile(
        &self,
        node: &str,
        view: Option<NodeView>,
        current_labels: Option<BTreeMap<String, String>>,
        kwok: Option<KwokNode>,
        shared: &Shared,
    ) -> Result<(), Error> {
        let cms: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.ns);
        let nodes: Api<Node> = Api::all(self.client.clone());
        let cm_name = node_cm_name(&self.args.topology.topology_cm, node);
        let kwok = kwok.filter(|_| self.args.kwok_capacity);
        match view {
            Some(v) => {
                let data = fakegpu_operator_core::node_files::configmap_data(&v);
                let fingerprint = cm_fingerprint(data.iter().map(|(k, v)| (*k, v.as_str())), v.kwok_annotation.as_deref());
                let known = self.written.lock().expect("written lock").get(node).copied();
                let write_cm = async {
                    if known == Some(fingerprint) {
                        return Ok(());
                    }
                    let cm = json!({
                        "apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": cm_name, "namespace": self.ns,
                                     "labels": {NODE_TOPOLOGY_LABEL: "true", NODE_NAME_LABEL: node},
                                     "annotations": {fakegpu_operator_core::topology::KWOK_NODE_ANNOTATION: v.kwok_annotation}},
                        "data": data,
                    });
                    // One that exists gets a merge patch of the same fields (a null annotation
                    // removes it), which costs the API server less than an apply; a new one,
                    // or one deleted behind our back, is applied.
                    let merged = match known {
                        Some(_) => match cms.patch(&cm_name, &PatchParams::default(), &Patch::Merge(&cm)).await {
                            Err(e) if is_not_found(&e) => false,
                            r => r.map(|_| true)?,
                        },
                        None => false,
                    };
                    if !merged {
                        let mut cm = cm;
                        if v.kwok_annotation.is_none() {
                            cm["metadata"]["annotations"] = json!({});
                        }
                        cms.patch(&cm_name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&cm)).await?;
                    }
                    self.written.lock().expect("written lock").insert(node.to_string(), fingerprint);
                    Ok::<(), Error>(())
                };
                let label_patch = current_labels.as_ref().map(|cur| labels::patch(cur, &v.labels)).unwrap_or_default();
                let desired = kwok_device_plugin::desired_resources(&v.topology);
                let capacity = kwok
                    .as_ref()
                    .filter(|_| !label_patch.is_empty())
                    .and_then(|k| kwok_device_plugin::status_patch(k, Some(&desired), &self.ns));
                match capacity {
                    // The node (labels and capacity in one write) before its ConfigMap: the
                    // kwok plugin, seeing the ConfigMap, finds the node right already.
                    Some(mut patch) => {
                        patch["metadata"]["labels"] = json!(label_patch);
                        self.patch_kwok_node(&nodes, node, &patch, shared).await?;
                        write_cm.await?;
                    }
                    // Otherwise the ConfigMap and the labels are independent: written together.
                    None => {
                        let write_labels = async {
                            if !label_patch.is_empty() {
                                let patched = nodes
                                    .patch(node, &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": label_patch}})))
                                    .await?;
                                shared.written_node(&patched);
                            }
                            Ok::<(), Error>(())
                        };
                        tokio::try_join!(write_cm, write_labels)?;
                    }
                }
                if !self.args.no_node_files && (!v.kwok || self.args.node_files_for_kwok) {
                    let text = &data[fakegpu_operator_core::node_files::CONFIG_KEY];
                    NodeFiles::new(&self.args.node_dir, node).write(text, &v.spec, &v.topology)?;
                }
                self.annotate_pods(node, &v.pod_annotations).await?;
            }
            None => {
                self.annotated.lock().expect("annotated lock").remove(node);
                let had = self.written.lock().expect("written lock").contains_key(node);
                // Only a node whose ConfigMap we had loses our labels: a node that was never in
                // our pools may carry labels another operator instance (other namespace) wrote.
                let label_patch = current_labels.filter(|_| had).map(|cur| labels::patch(&cur, &BTreeMap::new())).unwrap_or_default();
                let capacity = kwok.as_ref().and_then(|k| kwok_device_plugin::status_patch(k, None, &self.ns));
                // As when it was set: the node first, so that the kwok plugin, seeing the
                // ConfigMap go, finds nothing of ours left on it.
                if let Some(mut patch) = capacity.clone() {
                    patch["metadata"]["labels"] = json!(label_patch);
                    match self.patch_kwok_node(&nodes, node, &patch, shared).await {
                        Err(Error::Kube(e)) if is_not_found(&e) => {}
                        r => r?,
                    }
                }
                if had {
                    self.written.lock().expect("written lock").remove(node);
                    match cms.delete(&cm_name, &DeleteParams::default()).await {
                        Ok(_) => tracing::info!(node, "deleted node topology"),
                        Err(e) if is_not_found(&e) => {}
                        Err(e) => {
                            self.written.lock().expect("written lock").insert(node.to_string(), UNKNOWN_CONTENT);
                            return Err(e.into());
                        }
                    }
                    if !self.args.no_node_files {
                        NodeFiles::new(&self.args.node_dir, node).remove();
                    }
                }
                if capacity.is_none() && !label_patch.is_empty() {
                    match nodes.patch(node, &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": label_patch}}))).await {
                        Err(e) if !is_not_found(&e) => return Err(e.into()),
                        _ => {}
                    }
                }
            }
        }
        Ok(())
    }

    /// One write of a KWOK node's status subresource (labels, capacity and the kwok plugin's
    /// annotations); the response is kept as the node's recorded capacity.
    async fn patch_kwok_node(&self, nodes: &Api<Node>, node: &str, patch: &serde_json::Value, shared: &Shared) -> Result<(), Error> {
        let patched = nodes.patch_status(node, &PatchParams::default(), &Patch::Merge(patch)).await?;
        shared.record_kwok(node, KwokNode::from_node(&patched));
        shared.written_node(&patched);
        Ok(())
    }

    /// Adds the annotations the index asks for (upstream: reservation pods'
    /// `run.ai/reserve_for_gpu_index`). The patch carries the pod's UID, so a re-created pod of
    /// the same name is refused rather than annotated with another pod's GPU.
    async fn annotate_pods(&self, node: &str, wanted: &[PodAnnotation]) -> Result<(), Error> {
        let todo: Vec<PodAnnotation> = {
            let mut done = self.annotated.lock().expect("annotated lock");
            let entry = done.entry(node.to_string()).or_default();
            // Forget what the index no longer asks for (the pod shows the annotation, or left).
            entry.retain(|a| wanted.contains(a));
            wanted.iter().filter(|a| !entry.contains(*a)).cloned().collect()
        };
        for a in todo {
            let pods: Api<Pod> = Api::namespaced(self.client.clone(), &a.namespace);
            let patch = json!({"metadata": {"uid": a.uid, "annotations": {a.key.as_str(): a.value}}});
            match pods.patch(&a.pod, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => tracing::info!(namespace = %a.namespace, pod = %a.pod, key = %a.key, value = %a.value, "annotated pod"),
                // Gone or re-created: its events will come.
                Err(kube::Error::Api(s)) if matches!(s.code, 404 | 409 | 422) => {}
                Err(kube::Error::Api(s)) if s.code == 403 => {
                    tracing::warn!(namespace = %a.namespace, pod = %a.pod, error = %s, "cannot annotate pod (RBAC: statusUpdater.podPatchRbac)");
                }
                Err(e) => return Err(e.into()),
            }
            self.annotated.lock().expect("annotated lock").entry(node.to_string()).or_default().insert(a);
        }
        Ok(())
    }
}

/// Identifies what a node's ConfigMap holds (its data in key order and the KWOK annotation) by
/// a SHA-256 of it: 1,000 nodes' ConfigMaps are ~10 MB of text, their digests 32 KB.
fn cm_fingerprint<'a>(data: impl Iterator<Item = (&'a str, &'a str)>, kwok_annotation: Option<&str>) -> CmFingerprint {
    let mut entries: Vec<(&str, &str)> = data.collect();
    entries.sort_unstable();
    let text = serde_json::to_string(&(entries, kwok_annotation)).expect("strings serialize");
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// See [`cm_fingerprint`].
type CmFingerprint = [u8; 32];

/// A ConfigMap that exists with content not known (no digest of real content is all zeros).
const UNKNOWN_CONTENT: CmFingerprint = [0; 32];

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}
