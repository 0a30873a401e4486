//! The node-local files of a simulated node (docs/operator-interfaces.md §3):
//! `<node-dir>/<node>/config.json` (the node config the fake NVML reads through
//! `FAKEGPU_CONFIG`) and the live state `fakegpu-state.json` beside it.
//!
//! One writer, two callers, so the files are the same whoever writes them:
//! * the status-updater, when the node dir is on the node (`fakegpu cluster up`: every node is
//!   this host), from its index's view;
//! * the node-local status-exporter with `--write-node-files` (the chart's DaemonSet on real
//!   nodes, where the status-updater Deployment cannot reach the node's disk), from the node's
//!   topology ConfigMap: the status-updater puts the config text there ([`CONFIG_KEY`]) beside
//!   `topology.yml`, so the exporter writes it byte for byte instead of computing it again.
//!
//! Only utilization and framebuffer use are driven ([`crate::node_state::apply`] through
//! `state_file::update`); processes, faults and MIG layout that others wrote stay.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use fakegpu_model::config::{NodeConfigFile, NodeSpec};
use fakegpu_model::state::NodeState;
use fakegpu_model::state_file::{self, UpdateError};

use crate::common::Error;
use crate::index::NodeView;
use crate::topology::{NodeTopology, TOPOLOGY_KEY};

/// Key of the node config text in the per-node topology ConfigMap (beside `topology.yml`).
pub const CONFIG_KEY: &str = "fakegpu-config.json";
/// Name of the node config file in the node's directory.
pub const CONFIG_FILE_NAME: &str = "config.json";

/// The node a per-node topology ConfigMap's data describes, resolved as the fake NVML resolves
/// its config text; `Ok(None)` for a node of a pool without GPUs. Every cluster-side reader of
/// a node's GPUs (KWOK DRA publisher, MIG manager) takes them from here.
pub fn simulated_from_configmap(node: &str, data: &BTreeMap<String, String>) -> Result<Option<fakegpu_model::SimulatedNode>, String> {
    let cm = format!("topology ConfigMap of {node}");
    let topology = data.get(TOPOLOGY_KEY).ok_or_else(|| format!("{cm} has no `{TOPOLOGY_KEY}`"))?;
    let topology = NodeTopology::from_yaml(topology).map_err(|e| format!("{cm} `{TOPOLOGY_KEY}`: {e}"))?;
    if topology.gpus.is_empty() {
        return Ok(None);
    }
    let text = data.get(CONFIG_KEY).ok_or_else(|| format!("{cm} has no `{CONFIG_KEY}`"))?;
    let origin = format!("{cm} `{CONFIG_KEY}`");
    let config = fakegpu_model::config::parse_config(text, &origin).map_err(|e| e.to_string())?;
    let spec = fakegpu_model::config::resolve_config(&config, &origin, node).map_err(|e| e.to_string())?;
    Ok(Some(fakegpu_model::SimulatedNode::new(spec)))
}

/// The node config as written to [`CONFIG_KEY`] and to `config.json`.
pub fn config_text(config: &NodeConfigFile) -> String {
    serde_json::to_string_pretty(config).expect("node config serialises") + "\n"
}

/// The data of a node's topology ConfigMap: the topology upstream's components read and the
/// node config node-local writers materialize.
pub fn configmap_data(v: &NodeView) -> BTreeMap<&'static str, String> {
    BTreeMap::from([(TOPOLOGY_KEY, v.topology.to_yaml()), (CONFIG_KEY, config_text(&v.config_file))])
}

/// One node's files: `<node-dir>/<node>/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFiles {
    pub dir: PathBuf,
}

impl NodeFiles {
    pub fn new(node_dir: &Path, node: &str) -> NodeFiles {
        NodeFiles { dir: node_dir.join(node) }
    }

    pub fn config(&self) -> PathBuf {
        self.dir.join(CONFIG_FILE_NAME)
    }

    /// The live state, where the fake NVML looks when `FAKEGPU_CONFIG` points at [`Self::config`].
    pub fn state(&self) -> PathBuf {
        self.dir.join(state_file::DEFAULT_FILE_NAME)
    }

    /// The node the fake NVML resolves from the config file, with `FAKEGPU_CONFIG` pointing
    /// at it and `FAKEGPU_NODE` = `node`.
    pub fn spec(&self, node: &str) -> Result<NodeSpec, fakegpu_model::ConfigError> {
        let config = self.config().display().to_string();
        let env = |key: &str| match key {
            fakegpu_model::config::ENV_CONFIG => Some(config.clone()),
            fakegpu_model::config::ENV_NODE => Some(node.to_string()),
            _ => None,
        };
        fakegpu_model::config::resolve(&env, node)
    }

    /// Writes the config (`config`: [`config_text`]) and brings the live state to `topology`'s
    /// load. `spec` is what the fake NVML resolves from `config`.
    pub fn write(&self, config: &str, spec: &NodeSpec, topology: &NodeTopology) -> Result<(), Error> {
        self.write_config(config)?;
        self.update_state(spec, topology)
    }

    /// [`Self::write`] for a writer that has only the config text (the node-local exporter):
    /// the node is resolved from the written file, as the fake NVML resolves it.
    pub fn materialize(&self, node: &str, config: &str, topology: &NodeTopology) -> Result<NodeSpec, Error> {
        self.write_config(config)?;
        let spec = self.spec(node).map_err(|e| Error::Other(format!("{}: {e}", self.config().display())))?;
        self.update_state(&spec, topology)?;
        Ok(spec)
    }

    /// Removes what [`Self::write`] wrote (the node left the pools).
    pub fn remove(&self) {
        let state = self.state();
        for f in [self.config(), state_file::seq_path(&state), state] {
            let _ = std::fs::remove_file(f);
        }
        // Only if empty: files others put there (a user's) keep the directory.
        let _ = std::fs::remove_dir(&self.dir);
    }

    /// Replaces the config file atomically, and only when its text changes (readers watch it).
    fn write_config(&self, text: &str) -> Result<(), Error> {
        let path = self.config();
        if std::fs::read_to_string(&path).ok().as_deref() == Some(text) {
            return Ok(());
        }
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::Io(self.dir.display().to_string(), e))?;
        let tmp = self.dir.join(format!(".{CONFIG_FILE_NAME}.tmp"));
        std::fs::write(&tmp, text).map_err(|e| Error::Io(tmp.display().to_string(), e))?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::Io(path.display().to_string(), e))
    }

    fn update_state(&self, spec: &NodeSpec, topology: &NodeTopology) -> Result<(), Error> {
        let path = self.state();
        let targets = crate::node_state::targets(topology);
        let now = state_file::now();
        match state_file::update(&path, spec, |st| crate::node_state::apply(st, spec, &targets, now)) {
            Ok(()) => Ok(()),
            Err(UpdateError::Rejected(e)) => {
                // E.g. a GPU a user marked lost: leave their state alone.
                tracing::warn!(path = %path.display(), error = %e, "node state not updated");
                Ok(())
            }
            Err(e) => {
                // A corrupt or foreign state file: start over from the allocations.
                tracing::warn!(path = %path.display(), error = %e, "node state unusable; resetting it");
                let mut st = NodeState::default();
                crate::node_state::apply(&mut st, spec, &targets, now).map_err(|e| Error::Other(e.to_string()))?;
                state_file::reset(&path, spec, &st).map_err(|e| Error::Other(e.to_string()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClusterConfig;
    use crate::index::{Index, IndexOptions, NodeInfo};
    use crate::pod::PodInfo;
    use crate::resolve::Profiles;
    use fakegpu_model::state::{self, Process};
    use fakegpu_model::telemetry::MIB;
    use fakegpu_model::SimulatedNode;

    const POOL_KEY: &str = "run.ai/simulated-gpu-node-pool";

    /// A node of pool `pool` in `pools` holding a 2-GPU pod at 40-60 %, as the status-updater sees it.
    fn view(pools: &str, pool: &str) -> NodeView {
        let cfg = ClusterConfig::parse(&format!("nodePools:\n{pools}")).unwrap();
        let mut ix = Index::new(cfg, Profiles::new(), IndexOptions::default()).unwrap();
        let labels = BTreeMap::from([(POOL_KEY.to_string(), pool.to_string())]);
        ix.upsert_node(NodeInfo { name: "n1".into(), labels, kwok_annotation: None, version: None, mig_layout: None });
        ix.upsert_pod(PodInfo {
            uid: "uid-train".into(),
            namespace: "ns".into(),
            name: "train".into(),
            node: Some("n1".into()),
            phase: "Running".into(),
            gpus: 2,
            container: "c".into(),
            annotations: BTreeMap::from([(crate::pod::UTILIZATION_ANNOTATION.to_string(), "40-60".to_string())]),
            ..PodInfo::default()
        });
        ix.view("n1").expect("node in a pool")
    }

    const BUILTIN: &str = "  big:\n    gpu:\n      profile: h100\n      overrides: {device_count: 4}\n";
    const LEGACY: &str = "  old:\n    gpuProduct: Tesla-K80\n    gpuCount: 2\n    gpuMemory: 11441\n";

    #[test]
    fn configmap_config_materializes_to_what_the_status_updater_writes() {
        for (pools, pool) in [(BUILTIN, "big"), (LEGACY, "old")] {
            let v = view(pools, pool);
            let data = configmap_data(&v);
            assert_eq!(NodeTopology::from_yaml(&data[TOPOLOGY_KEY]).unwrap(), v.topology, "topology.yml unchanged");
            let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            // The status-updater's path and the node-local exporter's (ConfigMap text only).
            let updater = NodeFiles::new(a.path(), "n1");
            updater.write(&config_text(&v.config_file), &v.spec, &v.topology).unwrap();
            let local = NodeFiles::new(b.path(), "n1");
            let topo = NodeTopology::from_yaml(&data[TOPOLOGY_KEY]).unwrap();
            let spec = local.materialize("n1", &data[CONFIG_KEY], &topo).unwrap();
            assert_eq!(spec, v.spec, "{pool}: the fake NVML resolves the status-updater's node");
            let read = |f: &NodeFiles| std::fs::read_to_string(f.config()).unwrap();
            assert_eq!(read(&local), read(&updater));
            let uuids: Vec<String> = SimulatedNode::new(local.spec("n1").unwrap()).gpus.into_iter().map(|g| g.uuid).collect();
            assert_eq!(uuids, v.topology.gpus.iter().map(|g| g.id.clone()).collect::<Vec<_>>(), "{pool}: the topology's UUIDs");
            let (sa, sb) = (state_file::read(&updater.state()).unwrap(), state_file::read(&local.state()).unwrap());
            assert_eq!(sa.gpus.keys().collect::<Vec<_>>(), sb.gpus.keys().collect::<Vec<_>>());
            for (k, g) in &sa.gpus {
                let h = &sb.gpus[k];
                assert_eq!((g.utilization, g.memory_used_bytes, g.pattern), (h.utilization, h.memory_used_bytes, h.pattern));
            }
        }
    }

    #[test]
    fn writer_drives_load_only_and_keeps_what_others_wrote() {
        let v = view(BUILTIN, "big");
        let tmp = tempfile::tempdir().unwrap();
        let files = NodeFiles::new(tmp.path(), "n1");
        let text = config_text(&v.config_file);
        files.write(&text, &v.spec, &v.topology).unwrap();
        assert_eq!(std::fs::read_to_string(files.config()).unwrap(), text);
        let held: Vec<u32> = v.topology.gpus.iter().enumerate().filter(|(_, g)| !g.status.is_free()).map(|(i, _)| i as u32).collect();
        assert_eq!(held.len(), 2);
        let st = state_file::read(&files.state()).unwrap();
        for &i in &held {
            let g = st.gpu(i).unwrap();
            assert_eq!((g.utilization.gpu, g.pattern.map(|p| p.min)), (60, Some(40)));
            // A whole-GPU pod uses all of it: what the board hands out, less what the driver keeps.
            let m = &v.spec.profile.memory;
            assert_eq!(g.memory_used_bytes, (m.total_mib - m.reserved_mib) * MIB);
        }

        // Someone (fakegpu CLI) starts a process; a rewrite keeps it and the config file.
        let inode = |p: PathBuf| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
        let before = inode(files.config());
        let proc = Process {
            pid: 7,
            name: "train.py".into(),
            used_memory_bytes: MIB,
            kind: Default::default(),
            gpu_instance_id: None,
            compute_instance_id: None,
            pid_namespace: None,
        };
        state_file::update(&files.state(), &v.spec, |st| state::add_process(st, &v.spec, held[0], proc.clone(), state_file::now()))
            .unwrap();
        files.write(&text, &v.spec, &v.topology).unwrap();
        assert_eq!(inode(files.config()), before, "unchanged config is not rewritten");
        assert_eq!(state_file::read(&files.state()).unwrap().gpu(held[0]).unwrap().processes, vec![proc]);

        // A corrupt state file starts over from the allocations.
        std::fs::write(files.state(), "not json").unwrap();
        files.write(&text, &v.spec, &v.topology).unwrap();
        assert_eq!(state_file::read(&files.state()).unwrap().gpu(held[1]).unwrap().utilization.gpu, 60);

        // A file someone else put there keeps the directory; ours go.
        std::fs::write(files.dir.join("note"), "mine").unwrap();
        files.remove();
        assert!(!files.config().exists() && !files.state().exists() && files.dir.join("note").exists());
        std::fs::remove_file(files.dir.join("note")).unwrap();
        files.remove();
        assert!(!files.dir.exists());
    }

    #[test]
    fn a_config_the_model_cannot_resolve_is_an_error_not_a_state() {
        let tmp = tempfile::tempdir().unwrap();
        let files = NodeFiles::new(tmp.path(), "n1");
        let err = files.materialize("n1", r#"{"profile": "no-such-gpu"}"#, &NodeTopology::default()).unwrap_err();
        assert!(err.to_string().contains("config.json"), "{err}");
        assert!(!files.state().exists());
    }
}
