//! The `status-exporter` component: watches per-node topology ConfigMaps and the custom
//! profile ConfigMaps, keeps an [`Exporter`] up to date and serves it. Node-local mode
//! (`--node`, one DaemonSet pod per node) or all-nodes mode (one Deployment serving every node
//! of the pools, optionally only KWOK nodes). The selection of ConfigMaps is the pure
//! [`select`]; the rest is wiring.
//!
//! With `--write-node-files` (node-local mode), the component is also its node's writer of the
//! files the fake NVML and the kubelet plugins read (`fakegpu_operator_core::node_files`): the node config the
//! status-updater put into the topology ConfigMap, and the live state from the allocations.
//! The chart's status-updater is a Deployment whose disk is not the node's; this DaemonSet pod
//! runs on the node, with the node dir mounted from the host.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::watcher::{self, Event};
use kube::Api;

use fakegpu_model::profile::Profile;

use super::node::HostnameLabel;
use super::server::{bind_and_serve, GzipOptions, Scrape};
use super::topology_view::{node_view, ProfileInputs};
use super::Exporter;
use crate::inference::{PrometheusClient, DEFAULT_FULL_SCALE_RPS};
use fakegpu_operator_core::common::profiles_from;
use fakegpu_operator_core::node_files::{NodeFiles, CONFIG_KEY};
use fakegpu_operator_core::resolve::{Profiles, PROFILE_CM_LABEL};
use fakegpu_operator_core::topology::{NodeTopology, KWOK_NODE_ANNOTATION, NODE_NAME_LABEL, NODE_TOPOLOGY_LABEL, TOPOLOGY_KEY};

/// `Hostname` label choice on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HostnameArg {
    /// The node name.
    Node,
    /// `nvidia-dcgm-exporter-<sha1 prefix>` like upstream's DaemonSet.
    DcgmPod,
}

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Serve only this node (node-local mode). Without it, every node of the pools.
    #[arg(long, env = "NODE_NAME")]
    pub node: Option<String>,
    /// All-nodes mode: only nodes whose ConfigMap carries `kwok.x-k8s.io/node=fake`.
    #[arg(long, env = "KWOK_ONLY", default_value_t = false)]
    pub kwok_only: bool,
    /// All-nodes mode: only these pools (comma-separated; empty = all).
    #[arg(long, env = "POOLS", value_delimiter = ',')]
    pub pools: Vec<String>,
    #[command(flatten)]
    pub topology: fakegpu_operator_core::common::TopologyArgs,
    /// Address of `/metrics`.
    #[arg(long, env = "METRICS_LISTEN", default_value = "0.0.0.0:9400")]
    pub listen: SocketAddr,
    /// `Hostname` label: default `dcgm-pod` with `--node` (upstream DaemonSet), else `node`.
    #[arg(long, env = "HOSTNAME_LABEL", value_enum)]
    pub hostname_label: Option<HostnameArg>,
    /// Prometheus queried for inference pods' request rates.
    #[arg(long, env = "PROMETHEUS_URL", default_value = "http://prometheus-operated.runai:9090")]
    pub prometheus_url: String,
    /// Requests per second reported as 100 % utilization.
    #[arg(long, env = "INFERENCE_FULL_SCALE_RPS", default_value_t = DEFAULT_FULL_SCALE_RPS)]
    pub inference_full_scale_rps: f64,
    /// How often inference request rates are refreshed, seconds.
    #[arg(long, env = "INFERENCE_REFRESH_SECONDS", default_value_t = 10)]
    pub inference_refresh_seconds: u64,
    /// The status-updater's node directory: a node with `<dir>/<node>/fakegpu-state.json`
    /// (real nodes) is exported from that state, exactly as its fake NVML reads it.
    #[arg(long, env = "FAKEGPU_NODE_DIR")]
    pub node_dir: Option<PathBuf>,
    /// Node-local mode: write the node's files into `--node-dir` (config from the topology
    /// ConfigMap's `fakegpu-config.json`, live state from its allocations), as the
    /// status-updater does where its node dir is the nodes' disk.
    #[arg(long, env = "FAKEGPU_WRITE_NODE_FILES")]
    pub write_node_files: bool,
    /// Node-local mode: serve the fake kubelet podresources socket and the sysfs NUMA tree for
    /// the node (upstream's `POD_RESOURCES_ENABLED`; `crate::podresources_server`).
    #[arg(long = "pod-resources", env = "POD_RESOURCES_ENABLED", default_value_t = false)]
    pub pod_resources: bool,
    /// The podresources socket.
    #[arg(long, env = "POD_RESOURCES_SOCKET", default_value = crate::podresources_server::DEFAULT_SOCKET)]
    pub pod_resources_socket: PathBuf,
    /// The root of the fake sysfs tree (`<root>/devices/system/node/node<z>/cpulist`).
    #[arg(long, env = "POD_RESOURCES_SYS_ROOT", default_value = crate::podresources_server::DEFAULT_SYS_ROOT)]
    pub pod_resources_sys_root: PathBuf,
    /// How often the podresources answer is rebuilt, seconds (upstream: ≤ 10).
    #[arg(long, env = "POD_RESOURCES_SECONDS", default_value_t = 5)]
    pub pod_resources_seconds: u64,
    /// Gzip scrapes (Prometheus) are served from a body rendered ahead of the scraper's next
    /// request while it is at most this old, milliseconds (docs/metrics.md).
    #[arg(long, env = "METRICS_GZIP_MAX_AGE_MS", default_value_t = 5000)]
    pub gzip_max_age_ms: u64,
}

/// Which ConfigMaps an exporter serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    pub cm_prefix: String,
    pub node: Option<String>,
    pub kwok_only: bool,
    pub pools: Vec<String>,
}

/// The node a per-node topology ConfigMap describes, if this exporter serves it.
pub fn select(
    sel: &Selection,
    cm_name: &str,
    labels: &std::collections::BTreeMap<String, String>,
    annotations: &std::collections::BTreeMap<String, String>,
    pool: Option<&str>,
) -> Option<String> {
    let node = labels
        .get(NODE_NAME_LABEL)
        .cloned()
        .or_else(|| cm_name.strip_prefix(&sel.cm_prefix).and_then(|n| n.strip_prefix('-')).map(str::to_owned))?;
    if let Some(only) = &sel.node {
        return (only == &node).then_some(node);
    }
    if sel.kwok_only && annotations.get(KWOK_NODE_ANNOTATION).map(String::as_str) != Some("fake") {
        return None;
    }
    if !sel.pools.is_empty() && !pool.is_some_and(|p| sel.pools.iter().any(|s| s == p)) {
        return None;
    }
    Some(node)
}

pub type Shared<T> = Arc<Mutex<T>>;

/// What the watchers share: the exporter, the custom profiles, and what decides the profile of
/// every node served (to resolve it again when the profiles change; not the whole topology,
/// whose GPUs and pods the node's view holds already).
#[derive(Clone)]
pub struct Watched {
    exporter: Shared<Exporter>,
    profiles: Shared<Profiles>,
    profile_inputs: Shared<BTreeMap<String, ProfileInputs>>,
    /// The distinct profiles in use: nodes of one board share one (1,000 nodes, not 1,000 copies).
    in_use: Shared<Vec<Arc<Profile>>>,
    /// `--write-node-files`: the served node and its files.
    files: Option<Arc<(String, NodeFiles)>>,
}

impl Watched {
    /// Watched state around `exporter`, without custom profiles or node files.
    pub fn new(exporter: Shared<Exporter>) -> Watched {
        Watched { exporter, profiles: Arc::default(), profile_inputs: Arc::default(), in_use: Arc::default(), files: None }
    }

    /// Node `node` as its topology ConfigMap now describes it.
    pub fn upsert(&self, node: &str, topo: &NodeTopology) {
        let mut view = node_view(node, topo, &self.profiles.lock().expect("profiles lock"));
        view.profile = self.shared(view.profile);
        self.exporter.lock().expect("exporter lock").upsert(view, fakegpu_model::state_file::now());
        self.profile_inputs.lock().expect("profile inputs lock").insert(node.to_owned(), ProfileInputs::of(topo));
    }

    /// The profile in use equal to `profile`, else `profile`, now in use.
    fn shared(&self, profile: Arc<Profile>) -> Arc<Profile> {
        let mut in_use = self.in_use.lock().expect("profiles in use lock");
        // Profiles no node has any more (held here only) go.
        in_use.retain(|p| Arc::strong_count(p) > 1);
        if let Some(same) = in_use.iter().find(|p| ***p == *profile) {
            return same.clone();
        }
        in_use.push(profile.clone());
        profile
    }

    fn remove(&self, node: &str) {
        self.exporter.lock().expect("exporter lock").remove(node);
        self.profile_inputs.lock().expect("profile inputs lock").remove(node);
    }

    fn retain(&self, keep: &BTreeSet<String>) {
        if let Some((node, files)) = self.files.as_deref().filter(|(n, f)| !keep.contains(n) && f.dir.exists()) {
            tracing::info!(node, "node not in any pool; removing its node files");
            files.remove();
        }
        self.exporter.lock().expect("exporter lock").retain(|n| keep.contains(n));
        self.profile_inputs.lock().expect("profile inputs lock").retain(|n, _| keep.contains(n));
    }

    /// New custom profiles: every node's profile is resolved again.
    fn set_profiles(&self, profiles: Profiles) {
        if *self.profiles.lock().expect("profiles lock") == profiles {
            return;
        }
        *self.profiles.lock().expect("profiles lock") = profiles;
        let inputs = self.profile_inputs.lock().expect("profile inputs lock").clone();
        let profiles = self.profiles.lock().expect("profiles lock").clone();
        for (node, inputs) in inputs {
            let profile = self.shared(Arc::new(inputs.resolve(&node, &profiles)));
            let mut exporter = self.exporter.lock().expect("exporter lock");
            if let Some(mut view) = exporter.view(&node).cloned() {
                view.profile = profile;
                exporter.upsert(view, fakegpu_model::state_file::now());
            }
        }
    }
}

fn apply(watched: &Watched, sel: &Selection, cm: &ConfigMap) -> Option<String> {
    let name = cm.metadata.name.as_deref().unwrap_or_default();
    let text = cm.data.as_ref().and_then(|d| d.get(TOPOLOGY_KEY))?;
    let topo = match NodeTopology::from_yaml(text) {
        Ok(t) => t,
        Err(e) => {
            // Upstream panics here (defect 14.1/5); a bad ConfigMap only loses its own series.
            tracing::warn!(configmap = name, error = %e, "unparsable topology; node not exported");
            return None;
        }
    };
    let empty = Default::default();
    let labels = cm.metadata.labels.as_ref().unwrap_or(&empty);
    let annotations = cm.metadata.annotations.as_ref().unwrap_or(&empty);
    let node = select(sel, name, labels, annotations, topo.pool.as_deref())?;
    if let Some((_, files)) = watched.files.as_deref() {
        write_files(files, &node, cm, &topo);
    }
    watched.upsert(&node, &topo);
    Some(node)
}

/// The node's files from its ConfigMap, before the exporter reads its state back from them.
fn write_files(files: &NodeFiles, node: &str, cm: &ConfigMap, topo: &NodeTopology) {
    let Some(config) = cm.data.as_ref().and_then(|d| d.get(CONFIG_KEY)) else {
        // A status-updater from before the key: the config cannot be known here, and a guess
        // could disagree with the UUIDs the topology carries.
        tracing::warn!(node, key = CONFIG_KEY, "topology ConfigMap has no node config; node files not written");
        return;
    };
    match files.materialize(node, config, topo) {
        Ok(_) => tracing::debug!(node, dir = %files.dir.display(), "node files written"),
        Err(e) => tracing::warn!(node, error = %e, "node files not written"),
    }
}

async fn watch(api: Api<ConfigMap>, cfg: watcher::Config, sel: Selection, watched: Watched) {
    let mut stream = watcher::watcher(api, cfg).boxed();
    let mut listed: BTreeSet<String> = BTreeSet::new();
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(Event::Init) => listed.clear(),
            Ok(Event::InitApply(cm)) => listed.extend(apply(&watched, &sel, &cm)),
            Ok(Event::InitDone) => watched.retain(&listed),
            Ok(Event::Apply(cm)) => {
                if apply(&watched, &sel, &cm).is_none() {
                    // No longer ours (or unparsable): its series go.
                    if let Some(node) = cm.metadata.labels.as_ref().and_then(|l| l.get(NODE_NAME_LABEL)) {
                        watched.remove(node);
                    }
                }
            }
            Ok(Event::Delete(cm)) => {
                let name = cm.metadata.name.as_deref().unwrap_or_default();
                let node = cm
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(NODE_NAME_LABEL))
                    .cloned()
                    .or_else(|| name.strip_prefix(&sel.cm_prefix).and_then(|n| n.strip_prefix('-')).map(str::to_owned));
                if let Some(node) = node {
                    if let Some((_, files)) = watched.files.as_deref().filter(|(n, _)| *n == node) {
                        tracing::info!(node, "node topology deleted; removing its node files");
                        files.remove();
                    }
                    watched.remove(&node);
                }
            }
            Err(e) => tracing::warn!(error = %e, "topology watch"),
        }
    }
}

/// Keeps the custom profiles (`gpu-profile-<name>` ConfigMaps) as the status-updater reads them.
async fn watch_profiles(api: Api<ConfigMap>, watched: Watched) {
    let cfg = watcher::Config::default().labels(&format!("{PROFILE_CM_LABEL}=true"));
    let mut stream = watcher::watcher(api, cfg).boxed();
    let (mut cms, mut listing): (BTreeMap<String, ConfigMap>, BTreeMap<String, ConfigMap>) = Default::default();
    let publish = |cms: &BTreeMap<String, ConfigMap>| {
        let (profiles, errors) = profiles_from(&cms.values().cloned().collect::<Vec<_>>());
        for e in errors {
            tracing::warn!(error = %e, "ignoring profile ConfigMap");
        }
        watched.set_profiles(profiles);
    };
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(Event::Init) => listing.clear(),
            Ok(Event::InitApply(cm)) => {
                listing.insert(cm.metadata.name.clone().unwrap_or_default(), cm);
            }
            Ok(Event::InitDone) => {
                cms = std::mem::take(&mut listing);
                publish(&cms);
            }
            Ok(Event::Apply(cm)) => {
                cms.insert(cm.metadata.name.clone().unwrap_or_default(), cm);
                publish(&cms);
            }
            Ok(Event::Delete(cm)) => {
                cms.remove(cm.metadata.name.as_deref().unwrap_or_default());
                publish(&cms);
            }
            Err(e) => tracing::warn!(error = %e, "profile watch"),
        }
    }
}

async fn refresh_inference(
    client: PrometheusClient,
    scale: f64,
    every: Duration,
    exporter: Shared<Exporter>,
    rates: Shared<HashMap<String, u32>>,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let pods = exporter.lock().expect("exporter lock").inference_pods();
        let mut fresh = HashMap::with_capacity(pods.len());
        for uid in pods {
            match client.pod_utilization(&uid, scale).await {
                Ok(u) => {
                    fresh.insert(uid, u);
                }
                // Upstream: any error gives 0.
                Err(e) => tracing::debug!(pod_uid = uid, error = %e, "inference utilization"),
            }
        }
        *rates.lock().expect("rates lock") = fresh;
    }
}

/// The server's scrape: `exporter` at the time of the request, inference pods at `rates`.
pub fn scrape_fn(exporter: Shared<Exporter>, rates: Shared<HashMap<String, u32>>) -> Scrape {
    Arc::new(move |out| {
        let rates = rates.lock().expect("rates lock").clone();
        // The values under the lock; the text (and its sending or compressing) after it.
        let snapshot = exporter.lock().expect("exporter lock").snapshot(fakegpu_model::state_file::now(), &|uid| rates.get(uid).copied());
        snapshot.render(out);
    })
}

/// Large blocks straight from the kernel and back to it when freed. glibc otherwise raises its
/// mmap threshold to the size of the largest block freed (up to 32 MiB) and serves later large
/// blocks from its heap, which keeps their pages when they are freed: the gzip body rendered
/// ahead (6 MB, plus its encoder's buffers) and a ConfigMap listing would stay resident after
/// each use — 20–40 MiB more than the heap in use, measured with
/// `cargo run --release -p fake-gpu-operator --example exporter_memory`. A fixed threshold
/// turns the adjustment off; blocks under it (everything the exporter keeps per node and GPU)
/// stay in the heap.
pub fn tune_malloc() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator parameter.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

/// See [`tune_malloc`].
#[cfg(target_env = "gnu")]
const MMAP_THRESHOLD: libc::c_int = 256 * 1024;

/// Runs the component on its own runtime until SIGTERM/SIGINT (the binary's entry point).
pub fn run_blocking(args: Args) -> anyhow::Result<()> {
    tune_malloc();
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?.block_on(run(args))
}

/// Runs the component until SIGTERM/SIGINT.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let sel = Selection {
        cm_prefix: args.topology.topology_cm.clone(),
        node: args.node.clone(),
        kwok_only: args.kwok_only,
        pools: args.pools.clone(),
    };
    let hostname = match args.hostname_label.unwrap_or(if args.node.is_some() { HostnameArg::DcgmPod } else { HostnameArg::Node }) {
        HostnameArg::Node => HostnameLabel::NodeName,
        HostnameArg::DcgmPod => HostnameLabel::DcgmPod,
    };
    let files = match (args.write_node_files, &args.node, &args.node_dir) {
        (false, _, _) => None,
        (true, Some(node), Some(dir)) => Some(Arc::new((node.clone(), NodeFiles::new(dir, node)))),
        (true, _, _) => anyhow::bail!("--write-node-files needs node-local mode (--node) and --node-dir"),
    };
    let exporter: Shared<Exporter> = Arc::new(Mutex::new(Exporter::new(hostname).with_node_dir(args.node_dir.clone())));
    let rates: Shared<HashMap<String, u32>> = Arc::default();
    let watched = Watched { files, ..Watched::new(exporter.clone()) };

    let client = args.topology.client().await?;
    let namespace = args.topology.namespace();
    if args.pod_resources {
        let Some(node) = args.node.clone() else { anyhow::bail!("--pod-resources needs node-local mode (--node)") };
        let (tx, rx) = tokio::sync::watch::channel(Default::default());
        let socket = args.pod_resources_socket.clone();
        tracing::info!(socket = %socket.display(), sys_root = %args.pod_resources_sys_root.display(), "serving podresources");
        tokio::spawn(async move {
            if let Err(e) = crate::podresources_server::serve(&socket, rx, std::future::pending()).await {
                tracing::error!("podresources socket: {e}");
            }
        });
        let reconciler = crate::podresources_server::Reconciler::new(
            client.clone(),
            namespace.clone(),
            args.topology.topology_cm.clone(),
            node,
            args.pod_resources_sys_root.clone(),
            tx,
        );
        tokio::spawn(reconciler.run(Duration::from_secs(args.pod_resources_seconds.max(1))));
    }
    let api: Api<ConfigMap> = Api::namespaced(client, &namespace);
    let mut cfg = watcher::Config::default().labels(&format!("{NODE_TOPOLOGY_LABEL}=true"));
    if let Some(node) = &args.node {
        cfg = cfg.fields(&format!("metadata.name={}", fakegpu_operator_core::topology::node_cm_name(&args.topology.topology_cm, node)));
    }
    tracing::info!(namespace, node = ?args.node, kwok_only = args.kwok_only, node_dir = ?args.node_dir, write_node_files = args.write_node_files, "status-exporter starting");
    tokio::spawn(watch_profiles(api.clone(), watched.clone()));
    tokio::spawn(watch(api, cfg, sel, watched));
    let prom = PrometheusClient::new(&args.prometheus_url)?;
    let every = Duration::from_secs(args.inference_refresh_seconds.max(1));
    tokio::spawn(refresh_inference(prom, args.inference_full_scale_rps, every, exporter.clone(), rates.clone()));

    let scrape = scrape_fn(exporter, rates);
    let gzip = GzipOptions { max_age: Duration::from_millis(args.gzip_max_age_ms) };
    bind_and_serve(args.listen, scrape, gzip, shutdown_signal()).await?;
    Ok(())
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        () = term => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn map(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn selection_modes() {
        let labels = map(&[("node-topology", "true"), ("node-name", "kwok-a-1")]);
        let kwok = map(&[("kwok.x-k8s.io/node", "fake")]);
        let none = BTreeMap::new();
        let all = Selection { cm_prefix: "topology".into(), node: None, kwok_only: false, pools: vec![] };
        assert_eq!(select(&all, "topology-kwok-a-1", &labels, &none, None), Some("kwok-a-1".into()));
        assert_eq!(select(&all, "topology-real-1", &BTreeMap::new(), &none, None), Some("real-1".into()), "name fallback");
        let kwok_only = Selection { kwok_only: true, ..all.clone() };
        assert_eq!(select(&kwok_only, "topology-kwok-a-1", &labels, &none, None), None);
        assert_eq!(select(&kwok_only, "topology-kwok-a-1", &labels, &kwok, None), Some("kwok-a-1".into()));
        let local = Selection { node: Some("kwok-a-1".into()), ..all.clone() };
        assert_eq!(select(&local, "topology-kwok-a-1", &labels, &none, None), Some("kwok-a-1".into()));
        assert_eq!(select(&Selection { node: Some("other".into()), ..all.clone() }, "topology-kwok-a-1", &labels, &none, None), None);
        let pools = Selection { pools: vec!["a100".into()], ..all.clone() };
        assert_eq!(select(&pools, "topology-kwok-a-1", &labels, &none, Some("a100")), Some("kwok-a-1".into()));
        assert_eq!(select(&pools, "topology-kwok-a-1", &labels, &none, Some("h100")), None);
        assert_eq!(select(&pools, "topology-kwok-a-1", &labels, &none, None), None);
        assert_eq!(select(&all, "unrelated", &BTreeMap::new(), &none, None), None);
    }
}
