//! status-exporter: dcgm-exporter-compatible GPU metrics for simulated nodes.
//!
//! * [`component`]: the Kubernetes wiring (watch topology and profile ConfigMaps, serve,
//!   refresh inference rates).
//! * [`families`]: metric names, types, help texts.
//! * [`sample`]: per-GPU values from the model's dynamics on the GPU's live state.
//! * [`render`]: Prometheus text exposition with upstream's label set.
//! * [`node`]: a node's view (from its topology) and its label blocks.
//! * [`topology_view`]: per-node topology ConfigMap → node view.
//! * [`server`]: the thin HTTP edge (`/metrics`, `/healthz`).
//!
//! [`Exporter`] holds the nodes one process serves: one (node-local mode, a DaemonSet pod per
//! node) or all nodes of the pools (one Deployment for every KWOK node). Each node has a live
//! state (`fakegpu_model::state::NodeState`): the node's state file when there is one (real
//! nodes: what the status-updater wrote and the fake NVML reads), else one the exporter keeps
//! itself, built by the same [`fakegpu_operator_core::node_state`] path from the topology. A scrape computes
//! every value from that state at the scrape time, and renders the current topology only, so
//! the series of a pod that finished disappear with its allocation.

pub mod component;
pub mod families;
pub mod node;
pub mod render;
pub mod sample;
pub mod server;
pub mod topology_view;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fakegpu_model::config::NodeSpec;
use fakegpu_model::state::{GpuState, NodeState, Now};
use fakegpu_model::state_file;

pub use fakegpu_operator_core::node_state::PodUsage;
use fakegpu_operator_core::node_state::{self, GpuLoad};
pub use node::{Entity, GpuView, HostnameLabel, MigView, NodeView, Owner};

/// The nodes one exporter process serves and the state that outlives a scrape.
#[derive(Debug, Default)]
pub struct Exporter {
    nodes: BTreeMap<String, Node>,
    hostname: HostnameLabel,
    /// `<dir>/<node>/fakegpu-state.json`: the state files the status-updater writes.
    node_dir: Option<PathBuf>,
    /// Inference pods' utilization at the last scrape, for topology changes between scrapes.
    inference: HashMap<String, u32>,
}

#[derive(Debug)]
struct Node {
    view: NodeView,
    /// Shared with the [`Snapshot`]s of scrapes still being sent.
    labels: Vec<(Arc<str>, Entity)>,
    /// Some GPU is used by an inference pod.
    inference: bool,
    /// The exporter's own state, used while the node has no state file.
    state: NodeState,
    file: Option<StateFile>,
}

/// A node's state file as last read, with what identifies that version of it.
#[derive(Debug)]
struct StateFile {
    stamp: (Option<std::time::SystemTime>, u64, u64),
    state: NodeState,
}

/// The pods using a GPU: whole, or through its MIG devices.
fn all_usages(g: &GpuView) -> impl Iterator<Item = &PodUsage> {
    g.usages.iter().chain(g.mig.iter().flatten().flat_map(|m| &m.usages))
}

fn loads(view: &NodeView, knative: &dyn Fn(&str) -> Option<u32>) -> Vec<GpuLoad> {
    view.gpus
        .iter()
        .map(|g| match &g.mig {
            None => node_state::gpu_load(&g.uuid, &g.usages, knative),
            Some(devices) => node_state::mig_parent_load(&g.uuid, devices.iter().map(|m| (m.sm_share_micro, &m.usages[..])), knative),
        })
        .collect()
}

impl Node {
    /// Re-reads the node's state file when it changed; `None` when there is none (or it is unreadable).
    fn refresh_file(&mut self, dir: &Path) {
        use std::os::unix::fs::MetadataExt;
        let path = dir.join(&self.view.name).join(state_file::DEFAULT_FILE_NAME);
        // A CUDA process that died without cleaning up (kill -9) leaves its entry behind; sweep
        // it so that FB_USED follows (a rewrite changes the stamp and is read below).
        let registered = |f: &StateFile| f.state.gpus.values().flat_map(|g| &g.processes).any(|p| p.pid_namespace.is_some());
        if self.file.as_ref().is_some_and(registered) {
            if let Err(e) = state_file::sweep_exited(&path, &node_spec(&self.view)) {
                tracing::debug!(node = %self.view.name, error = %e, "could not sweep exited processes");
            }
        }
        let Ok(meta) = std::fs::metadata(&path) else {
            self.file = None;
            return;
        };
        let stamp = (meta.modified().ok(), meta.len(), meta.ino());
        if self.file.as_ref().is_some_and(|f| f.stamp == stamp) {
            return;
        }
        // Checked against the node as the fake NVML checks it: both refuse the same files.
        self.file = match state_file::read_checked(&path, &node_spec(&self.view)) {
            Ok(state) => Some(StateFile { stamp, state }),
            Err(e) => {
                tracing::warn!(node = %self.view.name, error = %e, "node state file unusable; using the topology");
                None
            }
        };
    }
}

/// The model's node for a view: what `node_state` needs to bring its live state to its load. Built
/// when needed rather than kept, so that 1,000 nodes share one profile (the view's `Arc`).
fn node_spec(view: &NodeView) -> NodeSpec {
    NodeSpec {
        node_name: view.name.clone(),
        profile: (*view.profile).clone(),
        gpu_count: view.gpus.len() as u32,
        driver_version: view.profile.driver_version.clone(),
        cuda_driver_version: view.profile.cuda_driver_version,
        numa: None,
    }
}

impl Exporter {
    pub fn new(hostname: HostnameLabel) -> Exporter {
        Exporter { hostname, ..Exporter::default() }
    }

    /// Reads real nodes' state from `<dir>/<node>/fakegpu-state.json` where it exists.
    pub fn with_node_dir(mut self, dir: Option<PathBuf>) -> Exporter {
        self.node_dir = dir;
        self
    }

    /// Adds or replaces a node, its state following the new topology from `now` on.
    pub fn upsert(&mut self, view: NodeView, now: Now) {
        let spec = node_spec(&view);
        let prev = self.nodes.remove(&view.name);
        // The counters run on while the node keeps its GPUs; other GPUs (pool switch) start afresh.
        let same_gpus =
            |p: &Node| p.view.profile == view.profile && p.view.gpus.iter().map(|g| &g.uuid).eq(view.gpus.iter().map(|g| &g.uuid));
        let (mut state, file) = match prev {
            Some(p) if same_gpus(&p) => (p.state, p.file),
            _ => (NodeState::default(), None),
        };
        let rates = &self.inference;
        if let Err(e) = node_state::apply(&mut state, &spec, &loads(&view, &|uid| rates.get(uid).copied()), now) {
            tracing::warn!(node = %view.name, error = %e, "node state not updated");
        }
        let inference = view.gpus.iter().flat_map(all_usages).any(|u| u.use_knative);
        let labels = node::label_blocks(&view, self.hostname).into_iter().map(|(l, e)| (Arc::from(l), e)).collect();
        self.nodes.insert(view.name.clone(), Node { view, labels, inference, state, file });
    }

    /// Drops a node and its series.
    pub fn remove(&mut self, name: &str) {
        self.nodes.remove(name);
    }

    /// Keeps only the nodes for which `keep` is true.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.nodes.retain(|n, _| keep(n));
    }

    /// The view node `name` was last upserted with.
    pub fn view(&self, name: &str) -> Option<&NodeView> {
        self.nodes.get(name).map(|n| &n.view)
    }

    pub fn node_names(&self) -> impl Iterator<Item = &str> {
        self.nodes.keys().map(String::as_str)
    }

    pub fn gpu_count(&self) -> usize {
        self.nodes.values().map(|n| n.view.gpus.len()).sum()
    }

    /// UIDs of the pods whose utilization comes from their request rate.
    pub fn inference_pods(&self) -> Vec<String> {
        let mut uids: Vec<String> = self
            .nodes
            .values()
            .flat_map(|n| n.view.gpus.iter())
            .flat_map(all_usages)
            .filter(|u| u.use_knative)
            .map(|u| u.pod_uid.clone())
            .collect();
        uids.sort_unstable();
        uids.dedup();
        uids
    }

    /// The live state GPU `index` of `node` has now (after the last scrape or upsert): the
    /// node's state file's, else the exporter's own.
    pub fn gpu_state(&self, node: &str, index: u32) -> Option<GpuState> {
        let n = self.nodes.get(node)?;
        let st = n.file.as_ref().map_or(&n.state, |f| &f.state);
        Some(st.gpu(index).cloned().unwrap_or_default())
    }

    /// One scrape at `now`: every node (by name), every GPU (by index order in its view).
    /// `knative(pod_uid)` is an inference pod's utilization.
    pub fn scrape(&mut self, now: Now, knative: &dyn Fn(&str) -> Option<u32>) -> String {
        let mut out = String::new();
        self.scrape_into(&mut out, now, knative);
        out
    }

    /// [`Self::scrape`], appended to `out` (a buffer the caller reuses).
    pub fn scrape_into(&mut self, out: &mut String, now: Now, knative: &dyn Fn(&str) -> Option<u32>) {
        self.scrape_out(ScrapeOut::Text(out), now, knative)
    }

    /// [`Self::scrape`] into a buffer or, in pieces, into a sink.
    pub fn scrape_out(&mut self, out: ScrapeOut<'_>, now: Now, knative: &dyn Fn(&str) -> Option<u32>) {
        self.snapshot(now, knative).render(out)
    }

    /// Every series' labels and values at `now`, to be rendered without the exporter: a caller
    /// that shares the exporter behind a lock takes the snapshot under it (the values, a few ms
    /// for 8,000 GPUs) and renders and sends the text after releasing it, so that a slow client
    /// does not hold up the topology watch.
    pub fn snapshot(&mut self, now: Now, knative: &dyn Fn(&str) -> Option<u32>) -> Snapshot {
        let Exporter { nodes, node_dir, inference, .. } = self;
        let seen = std::cell::RefCell::new(HashMap::new());
        let knative_now = |uid: &str| {
            let v = knative(uid);
            if let Some(v) = v {
                seen.borrow_mut().insert(uid.to_owned(), v);
            }
            v
        };
        let mut overlays: HashMap<String, NodeState> = HashMap::new();
        for (name, node) in nodes.iter_mut() {
            if let Some(dir) = node_dir.as_deref() {
                node.refresh_file(dir);
            }
            if !node.inference {
                continue;
            }
            // (MIG devices' inference pods are asked too: their rates are read again at render.)
            let loads = loads(&node.view, &knative_now);
            let spec = node_spec(&node.view);
            if let Err(e) = node_state::apply(&mut node.state, &spec, &loads, now) {
                tracing::warn!(node = %name, error = %e, "node state not updated");
            }
            if let Some(f) = &node.file {
                // The state file has no inference utilization (its writer cannot know it):
                // add it to the GPUs that have inference pods, for the metrics only.
                let mut st = f.state.clone();
                for (i, (g, load)) in node.view.gpus.iter().zip(&loads).enumerate() {
                    if g.usages.iter().any(|u| u.use_knative) {
                        let _ = node_state::apply_one(&mut st, &spec, i as u32, load, now);
                    }
                }
                overlays.insert(name.clone(), st);
            }
        }
        *inference = seen.into_inner();
        let rates = |uid: &str| inference.get(uid).copied();
        let idle = GpuState::default();
        let mut series = Vec::with_capacity(nodes.values().map(|n| n.view.gpus.len()).sum());
        let mut by_index: Vec<Option<&GpuState>> = Vec::new();
        for (name, node) in nodes.iter() {
            let st = overlays.get(name).or(node.file.as_ref().map(|f| &f.state)).unwrap_or(&node.state);
            by_index.clear();
            by_index.resize(node.view.gpus.len(), None);
            for (key, g) in &st.gpus {
                if let Some(slot) = key.parse::<usize>().ok().and_then(|i| by_index.get_mut(i)) {
                    *slot = Some(g);
                }
            }
            for (labels, entity) in &node.labels {
                let (Entity::Gpu(i) | Entity::Mig(i, _)) = *entity;
                let state = by_index.get(i).copied().flatten().unwrap_or(&idle);
                let gpu = sample::values(&node.view.profile, state, now);
                let values = match *entity {
                    Entity::Gpu(_) => gpu,
                    Entity::Mig(i, j) => match node.view.gpus[i].mig.as_ref().and_then(|m| m.get(j)) {
                        Some(m) => sample::mig_values(&gpu, state, m, &rates, now),
                        None => continue,
                    },
                };
                series.push((labels.clone(), values));
            }
        }
        Snapshot { series }
    }
}

/// The series of one scrape, detached from the [`Exporter`] ([`Exporter::snapshot`]).
pub struct Snapshot {
    series: Vec<(Arc<str>, sample::GpuValues)>,
}

/// Size of the pieces [`ScrapeOut::Chunks`] gets: small enough that a streamed body holds
/// little (a few pieces rather than the 27 MB text of 8,000 GPUs), large enough that the
/// hand-over of each piece from the rendering thread to the connection stays rare. 128 KiB
/// pieces (210 hand-overs for 8,000 GPUs) were as fast as one whole body on an idle machine but
/// took 116 ms instead of 47 ms (median, plain HTTP scrape from curl) with two CPU hogs on the
/// two cores, each hand-over waiting for a thread to be scheduled; 1 MiB pieces took 37–43 ms.
pub const PIECE_BYTES: usize = 1024 * 1024;

impl Snapshot {
    /// The text, in [`families::FAMILIES`] order.
    pub fn render(&self, out: ScrapeOut<'_>) {
        let series: Vec<render::Series<'_>> =
            self.series.iter().map(|(labels, values)| render::Series { labels, values: *values }).collect();
        match out {
            ScrapeOut::Text(text) => render::render_into(text, &series),
            ScrapeOut::Chunks(sink) => render::render_pieces(&series, PIECE_BYTES, sink),
        }
    }
}

/// Where a scrape's text goes.
pub enum ScrapeOut<'a> {
    /// Appended to a string.
    Text(&'a mut String),
    /// Handed over in order, in pieces of about [`PIECE_BYTES`] (the last one shorter).
    Chunks(&'a mut dyn FnMut(&str)),
}

#[cfg(test)]
mod agreement;

#[cfg(test)]
mod tests {
    use super::*;
    use fakegpu_model::{dynamics, find_builtin};
    use std::sync::Arc;

    const T0: Now = Now { unix_ms: 1_764_000_000_000, boot_ms: 3_600_000 };

    fn at(ms: u64) -> Now {
        Now { unix_ms: T0.unix_ms + ms, boot_ms: T0.boot_ms + ms }
    }

    fn node(name: &str, owner: Option<(&str, &str)>, range: (u32, u32)) -> NodeView {
        let profile = Arc::new(find_builtin("a100-80gb").unwrap().clone());
        let gpus = (0..2)
            .map(|i| {
                let owned = owner.filter(|_| i == 0);
                GpuView {
                    index: i,
                    uuid: format!("GPU-{name}-{i}"),
                    owner: owned.map(|(ns, pod)| Owner { namespace: ns.into(), pod: pod.into(), container: "c".into() }),
                    usages: owned
                        .map(|(_, pod)| PodUsage {
                            pod_uid: format!("uid-{pod}"),
                            util_min: range.0,
                            util_max: range.1,
                            fb_used_mib: 2048,
                            use_knative: false,
                        })
                        .into_iter()
                        .collect(),
                    mig: None,
                }
            })
            .collect();
        NodeView { name: name.into(), model_name: profile.product_name.clone(), profile, gpus }
    }

    fn lines_with<'a>(text: &'a str, needle: &str) -> Vec<&'a str> {
        text.lines().filter(|l| !l.starts_with('#') && l.contains(needle)).collect()
    }

    fn value(text: &str, family: &str, gpu: u32) -> f64 {
        let prefix = format!("{family}{{gpu=\"{gpu}\",");
        let line = text.lines().find(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("no {prefix}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    }

    #[test]
    fn finished_pod_series_disappear() {
        let mut e = Exporter::new(HostnameLabel::NodeName);
        e.upsert(node("n1", Some(("team", "train-0")), (100, 100)), T0);
        let first = e.scrape(at(1_000), &|_| None);
        assert_eq!(lines_with(&first, "pod=\"train-0\"").len(), families::FAMILIES.len());
        assert!(first.contains("DCGM_FI_DEV_GPU_UTIL{gpu=\"0\",UUID=\"GPU-n1-0\",device=\"nvidia0\",modelName=\"NVIDIA A100-SXM4-80GB\",Hostname=\"n1\",container=\"c\",namespace=\"team\",pod=\"train-0\"} 100\n"));
        assert_eq!(value(&first, "DCGM_FI_DEV_FB_USED", 0), 2048.0);
        e.upsert(node("n1", None, (0, 0)), at(1_500));
        let second = e.scrape(at(2_000), &|_| None);
        assert!(lines_with(&second, "train-0").is_empty());
        assert!(second.contains("DCGM_FI_DEV_GPU_UTIL{gpu=\"0\",UUID=\"GPU-n1-0\",device=\"nvidia0\",modelName=\"NVIDIA A100-SXM4-80GB\",Hostname=\"n1\",container=\"\",namespace=\"\",pod=\"\"} 0\n"));
    }

    /// A GPU in MIG mode is reported per MIG device (dcgm-exporter's GPU instances): its holder
    /// in the pod labels, its framebuffer out of the instance's, activity from the holder's
    /// range, no utilization counters; the whole GPU beside it is unchanged.
    #[test]
    fn mig_devices_are_series_of_their_own() {
        let mut view = node("n1", None, (0, 0));
        let holder = Owner { namespace: "team".into(), pod: "mig-0".into(), container: "c".into() };
        let device = |gi: u32, owner: Option<Owner>| MigView {
            uuid: format!("MIG-{gi}"),
            profile: "3g.40gb".into(),
            gpu_instance_id: gi,
            memory_mib: 40_192,
            sm_share_micro: 428_571,
            usages: owner
                .iter()
                .map(|_| PodUsage { pod_uid: "uid-mig".into(), util_min: 40, util_max: 60, fb_used_mib: 40_192, use_knative: false })
                .collect(),
            owner,
        };
        view.gpus[0].mig = Some(vec![device(1, Some(holder)), device(2, None)]);
        let mut e = Exporter::new(HostnameLabel::NodeName);
        e.upsert(view, T0);
        let text = e.scrape(at(1_000), &|_| None);
        let gpu0: Vec<&str> = text.lines().filter(|l| l.contains("{gpu=\"0\",")).collect();
        assert!(gpu0.iter().all(|l| l.contains(",GPU_I_PROFILE=\"3g.40gb\",GPU_I_ID=")), "GPU 0 only as its instances");
        let of = |family: &str, gi: u32| -> f64 {
            let needle = format!("{family}{{gpu=\"0\",UUID=\"GPU-n1-0\",device=\"nvidia0\",modelName=\"NVIDIA A100-SXM4-80GB\",GPU_I_PROFILE=\"3g.40gb\",GPU_I_ID=\"{gi}\",Hostname=\"n1\",");
            let line = text.lines().find(|l| l.starts_with(&needle)).unwrap_or_else(|| panic!("no {needle}\n{text}"));
            line.rsplit(' ').next().unwrap().parse().unwrap()
        };
        assert_eq!((of("DCGM_FI_DEV_FB_USED", 1), of("DCGM_FI_DEV_FB_FREE", 1)), (40_192.0, 0.0));
        assert_eq!((of("DCGM_FI_DEV_FB_USED", 2), of("DCGM_FI_DEV_FB_FREE", 2)), (0.0, 40_192.0));
        let active = of("DCGM_FI_PROF_GR_ENGINE_ACTIVE", 1);
        assert!((0.4..=0.6).contains(&active), "{active}");
        assert_eq!(of("DCGM_FI_PROF_GR_ENGINE_ACTIVE", 2), 0.0);
        assert_eq!(of("DCGM_FI_DEV_SM_CLOCK", 1), of("DCGM_FI_DEV_SM_CLOCK", 2), "one board's clocks");
        assert_eq!(lines_with(&text, "pod=\"mig-0\"").len(), families::FAMILIES.len() - 4, "no utilization counters");
        assert!(gpu0.iter().all(|l| !l.starts_with("DCGM_FI_DEV_GPU_UTIL")));
        assert_eq!(value(&text, "DCGM_FI_DEV_GPU_UTIL", 1), 0.0, "the whole GPU keeps its series");
        // The board works for its busy instance: more power and a higher clock than the idle
        // whole GPU beside it.
        assert!(of("DCGM_FI_DEV_POWER_USAGE", 2) > value(&text, "DCGM_FI_DEV_POWER_USAGE", 1), "{text}");
        assert!(of("DCGM_FI_DEV_SM_CLOCK", 2) > value(&text, "DCGM_FI_DEV_SM_CLOCK", 1), "{text}");
    }

    #[test]
    fn all_nodes_mode_serves_every_node_and_removal_drops_them() {
        let mut e = Exporter::new(HostnameLabel::NodeName);
        for n in ["kwok-b", "kwok-a", "kwok-c"] {
            e.upsert(node(n, None, (0, 0)), T0);
        }
        assert_eq!(e.gpu_count(), 6);
        let text = e.scrape(T0, &|_| None);
        let hosts: Vec<&str> = lines_with(&text, "DCGM_FI_DEV_GPU_TEMP{")
            .iter()
            .map(|l| l.split("Hostname=\"").nth(1).unwrap().split('"').next().unwrap())
            .collect();
        assert_eq!(hosts, ["kwok-a", "kwok-a", "kwok-b", "kwok-b", "kwok-c", "kwok-c"]);
        e.retain(|n| n != "kwok-b");
        assert!(!e.scrape(at(1), &|_| None).contains("kwok-b"));
    }

    #[test]
    fn node_local_mode_uses_upstream_pod_hostname() {
        let mut e = Exporter::new(HostnameLabel::DcgmPod);
        e.upsert(node("node-1", None, (0, 0)), T0);
        assert!(e.scrape(T0, &|_| None).contains("Hostname=\"nvidia-dcgm-exporter-b36828\""));
    }

    /// A node without a state file (KWOK): the exporter's own state, built by the
    /// status-updater's `node_state` path at the moments the topology changed, gives every value.
    #[test]
    fn own_state_is_the_node_state_path_and_readings_are_its_dynamics() {
        let mut e = Exporter::new(HostnameLabel::NodeName);
        let busy = node("n", Some(("t", "p")), (40, 60));
        let spec = NodeSpec {
            node_name: "n".into(),
            profile: (*busy.profile).clone(),
            gpu_count: 2,
            driver_version: String::new(),
            cuda_driver_version: 0,
            numa: None,
        };
        e.upsert(busy.clone(), at(0));
        let mut want = NodeState::default();
        let topo_loads = loads(&busy, &node_state::no_inference);
        node_state::apply(&mut want, &spec, &topo_loads, at(0)).unwrap();
        let mut utils = std::collections::BTreeSet::new();
        let mut last_energy = 0.0;
        for k in 1..=120u64 {
            let now = at(k * 2_500);
            if k == 60 {
                // The pod finishes: the state follows from the moment the exporter sees it.
                e.upsert(node("n", None, (0, 0)), now);
                node_state::apply(&mut want, &spec, &[GpuLoad::default(), GpuLoad::default()], now).unwrap();
            }
            let text = e.scrape(now, &|_| None);
            for i in 0..2u32 {
                let g = want.gpu(i).cloned().unwrap_or_default();
                assert_eq!(e.gpu_state("n", i), Some(g.clone()));
                let r = dynamics::readings(&spec.profile, &g, now);
                assert_eq!(value(&text, "DCGM_FI_DEV_GPU_UTIL", i), f64::from(r.gpu_util));
                assert_eq!(value(&text, "DCGM_FI_DEV_MEM_COPY_UTIL", i), f64::from(r.memory_util));
                assert_eq!(value(&text, "DCGM_FI_DEV_POWER_USAGE", i), f64::from(r.power_mw) / 1000.0);
                assert_eq!(value(&text, "DCGM_FI_DEV_GPU_TEMP", i), f64::from(r.gpu_temp_c));
                assert_eq!(value(&text, "DCGM_FI_DEV_SM_CLOCK", i), f64::from(r.clocks.sm_mhz));
                assert_eq!(value(&text, "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", i), dynamics::energy_mj(&spec.profile, &g, now) as f64);
            }
            if k < 60 {
                utils.insert(value(&text, "DCGM_FI_DEV_GPU_UTIL", 0) as u32);
            }
            let energy = value(&text, "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", 0);
            assert!(energy > last_energy, "the counter grows at every scrape");
            last_energy = energy;
        }
        assert!(utils.iter().all(|u| (40..=60).contains(u)) && utils.contains(&40) && utils.contains(&60), "{utils:?}");
    }

    #[test]
    fn energy_is_the_models_counter_not_the_exporters() {
        // Two exporters that start at different times report the same counter for the same GPU.
        let mut a = Exporter::new(HostnameLabel::NodeName);
        let mut b = Exporter::new(HostnameLabel::NodeName);
        a.upsert(node("n", None, (0, 0)), at(0));
        a.scrape(at(1_000), &|_| None);
        b.upsert(node("n", None, (0, 0)), at(50_000));
        let p = find_builtin("a100-80gb").unwrap();
        let (ta, tb) = (a.scrape(at(60_000), &|_| None), b.scrape(at(60_000), &|_| None));
        assert_eq!(value(&ta, "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", 1), value(&tb, "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", 1));
        assert_eq!(value(&ta, "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", 1), dynamics::idle_energy_mj(p, at(60_000)) as f64);
    }

    #[test]
    fn inference_pods_are_listed_once_and_add_their_utilization() {
        let mut e = Exporter::new(HostnameLabel::NodeName);
        let mut n = node("n", Some(("t", "p")), (0, 0));
        n.gpus[0].usages[0].use_knative = true;
        n.gpus[1].usages = n.gpus[0].usages.clone();
        e.upsert(n.clone(), T0);
        assert_eq!(e.inference_pods(), ["uid-p"]);
        let text = e.scrape(at(1_000), &|uid| (uid == "uid-p").then_some(42));
        assert!(text.contains("pod=\"p\"} 42\n"));
        assert_eq!(value(&text, "DCGM_FI_DEV_GPU_UTIL", 1), 42.0);
        let p = find_builtin("a100-80gb").unwrap();
        let power = value(&text, "DCGM_FI_DEV_POWER_USAGE", 0);
        assert!(power > f64::from(p.power.idle_draw_mw) / 1000.0, "power follows the inference load");
        // A topology change between scrapes keeps the last known rate.
        e.upsert(n, at(1_500));
        assert_eq!(e.gpu_state("n", 0).unwrap().utilization.gpu, 42);
        assert_eq!(value(&e.scrape(at(2_000), &|_| None), "DCGM_FI_DEV_GPU_UTIL", 0), 0.0, "no rate: 0, as upstream");
    }
}
