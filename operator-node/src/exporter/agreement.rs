//! A real node with a state file: the status-updater's path (its index → node view →
//! `node_state` → `fakegpu-state.json` beside `config.json`) read back by the fake NVML's
//! computation (the node spec from `config.json` as the library resolves it, `dynamics` on the
//! file's GPU state) and by the exporter's scrape, at the same moments: every value agrees.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use fakegpu_model::config::{self as model_config, ENV_CONFIG};
use fakegpu_model::state::Now;
use fakegpu_model::telemetry::MIB;
use fakegpu_model::{dynamics, state_file, NodeSpec};

use super::topology_view::node_view;
use super::{Exporter, HostnameLabel};
use fakegpu_operator_core::config::ClusterConfig;
use fakegpu_operator_core::index::{Index, IndexOptions, NodeInfo};
use fakegpu_operator_core::node_state;
use fakegpu_operator_core::pod::{PodInfo, UTILIZATION_ANNOTATION};
use fakegpu_operator_core::resolve::Profiles;

const POOL_KEY: &str = "run.ai/simulated-gpu-node-pool";
const NODE: &str = "real-1";

fn at(ms: u64) -> Now {
    Now { unix_ms: 1_764_000_000_000 + ms, boot_ms: 7_200_000 + ms }
}

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fgo-exporter-agreement-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// What the status-updater's `write_node_files` does for a real node at `now`.
fn write_node_files(dir: &Path, ix: &Index, now: Now) {
    let v = ix.view(NODE).unwrap();
    let node_dir = dir.join(NODE);
    std::fs::create_dir_all(&node_dir).unwrap();
    std::fs::write(node_dir.join("config.json"), serde_json::to_string_pretty(&v.config_file).unwrap()).unwrap();
    let targets = node_state::targets(&v.topology);
    state_file::update(&node_dir.join(state_file::DEFAULT_FILE_NAME), &v.spec, |st| node_state::apply(st, &v.spec, &targets, now)).unwrap();
}

/// The node as the fake NVML on it sees it (`FAKEGPU_CONFIG` pointing at the node config).
fn library_spec(dir: &Path) -> NodeSpec {
    let config = dir.join(NODE).join("config.json").display().to_string();
    model_config::resolve(&|k| (k == ENV_CONFIG).then(|| config.clone()), "localhost").unwrap()
}

fn value(text: &str, family: &str, gpu: u32) -> f64 {
    let prefix = format!("{family}{{gpu=\"{gpu}\",");
    let line = text.lines().find(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("no {prefix}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// Scrapes at `now` and checks every GPU against the fake NVML's readings of the state file.
fn check(e: &mut Exporter, dir: &Path, now: Now) -> Vec<u32> {
    let text = e.scrape(now, &|_| None);
    let spec = library_spec(dir);
    let st = state_file::read(&dir.join(NODE).join(state_file::DEFAULT_FILE_NAME)).unwrap();
    (0..spec.gpu_count)
        .map(|i| {
            let g = st.gpu(i).cloned().unwrap_or_default();
            let r = dynamics::readings(&spec.profile, &g, now);
            let energy = dynamics::energy_mj(&spec.profile, &g, now);
            let at = format!("GPU {i} at {now:?}");
            assert_eq!(value(&text, "DCGM_FI_DEV_GPU_UTIL", i), f64::from(r.gpu_util), "utilization, {at}");
            assert_eq!(value(&text, "DCGM_FI_DEV_MEM_COPY_UTIL", i), f64::from(r.memory_util), "memory utilization, {at}");
            assert_eq!(value(&text, "DCGM_FI_DEV_FB_USED", i), (r.memory.used / MIB) as f64, "memory used, {at}");
            assert_eq!(value(&text, "DCGM_FI_DEV_FB_FREE", i), (r.memory.free / MIB) as f64, "memory free, {at}");
            assert_eq!(value(&text, "DCGM_FI_DEV_POWER_USAGE", i), f64::from(r.power_mw) / 1000.0, "power, {at}");
            assert_eq!(value(&text, "DCGM_FI_DEV_GPU_TEMP", i), f64::from(r.gpu_temp_c), "temperature, {at}");
            assert_eq!(value(&text, "DCGM_FI_DEV_SM_CLOCK", i), f64::from(r.clocks.sm_mhz), "SM clock, {at}");
            assert_eq!(value(&text, "DCGM_FI_DEV_MEM_CLOCK", i), f64::from(r.clocks.memory_mhz), "memory clock, {at}");
            assert_eq!(value(&text, "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", i), energy as f64, "energy, {at}");
            r.gpu_util
        })
        .collect()
}

#[test]
fn exporter_and_fake_nvml_agree_on_a_node_with_a_state_file() {
    let dir = scratch();
    let cfg = ClusterConfig::parse("nodePools:\n  a100:\n    gpu: {profile: a100-80gb, overrides: {device_count: 4}}\n").unwrap();
    let mut ix = Index::new(cfg, Profiles::new(), IndexOptions::default()).unwrap();
    ix.upsert_node(NodeInfo {
        name: NODE.into(),
        labels: BTreeMap::from([(POOL_KEY.into(), "a100".into())]),
        kwok_annotation: None,
        version: None,
        mig_layout: None,
    });
    let mut train = PodInfo {
        uid: "uid-train".into(),
        namespace: "team".into(),
        name: "train".into(),
        node: Some(NODE.into()),
        phase: "Running".into(),
        created: 1,
        gpus: 2,
        container: "main".into(),
        ..PodInfo::default()
    };
    train.annotations.insert(UTILIZATION_ANNOTATION.into(), "40-60".into());
    ix.upsert_pod(train.clone());
    write_node_files(&dir, &ix, at(0));

    // The exporter sees the topology later than the status-updater wrote the state, and its own
    // idea of the node would start from then: the state file is what it must follow.
    let mut e = Exporter::new(HostnameLabel::NodeName).with_node_dir(Some(dir.clone()));
    e.upsert(node_view(NODE, &ix.view(NODE).unwrap().topology, &Profiles::new()), at(4_000));
    assert_eq!(*e.nodes[NODE].view.profile, library_spec(&dir).profile, "the exporter computes with the library's profile");

    let mut seen = std::collections::BTreeSet::new();
    for k in 1..=40 {
        let utils = check(&mut e, &dir, at(4_000 + k * 2_500));
        assert!((40..=60).contains(&utils[0]) && (40..=60).contains(&utils[1]) && utils[2..] == [0, 0], "{utils:?}");
        seen.insert(utils[0]);
    }
    assert!(seen.len() > 5, "the range moves: {seen:?}");

    // The pod finishes; the status-updater writes at 110 s, the exporter hears of it at 113 s.
    ix.remove_pod(&train.key());
    write_node_files(&dir, &ix, at(110_000));
    check(&mut e, &dir, at(111_000));
    e.upsert(node_view(NODE, &ix.view(NODE).unwrap().topology, &Profiles::new()), at(113_000));
    for k in 0..10 {
        assert_eq!(check(&mut e, &dir, at(113_000 + k * 7_000)), [0, 0, 0, 0]);
    }

    // A CUDA process (the fake libcuda's registration) holds 3 GiB on GPU 1: FB_USED counts it;
    // once it has died without unregistering (kill -9), the next scrape sweeps it.
    let state = dir.join(NODE).join(state_file::DEFAULT_FILE_NAME);
    let mut child = std::process::Command::new("sleep").arg("60").spawn().unwrap();
    let (pid, ns) = (child.id(), state_file::pid_namespace());
    let spec = library_spec(&dir);
    state_file::update(&state, &spec, |st| {
        fakegpu_model::state::set_live_process(st, &spec, 1, pid, "/usr/bin/python3", ns, 3 << 30, at(190_000))
    })
    .unwrap();
    let text = e.scrape(at(191_000), &|_| None);
    assert_eq!(value(&text, "DCGM_FI_DEV_FB_USED", 1), 3072.0);
    child.kill().unwrap();
    child.wait().unwrap();
    let text = e.scrape(at(192_000), &|_| None);
    assert_eq!(value(&text, "DCGM_FI_DEV_FB_USED", 1), 0.0, "the dead process is swept");
    assert!(state_file::read(&state).unwrap().gpu(1).unwrap().processes.is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}
