//! The node files on real nodes (the chart's layout) against the real control plane: a
//! status-updater that writes no node files (`--no-node-files`, the chart's Deployment) and a
//! node-local status-exporter with `--write-node-files` (the chart's DaemonSet) for one KWOK
//! node. The exporter alone materializes `<node-dir>/<node>/config.json` and the live state;
//! the fake NVML over those files (our nvidia-smi through the built libnvidia-ml.so.1, with
//! `FAKEGPU_CONFIG` pointing at the config) lists the topology's UUIDs, and for a pod on 2 GPUs
//! at 40-60 % its utilization and memory used equal the exporter's `DCGM_FI_DEV_GPU_UTIL` and
//! `DCGM_FI_DEV_FB_USED` in the same draw window.
//!
//! Needs `cargo build -p nvidia-smi -p nvml-shim` (skips that part with a line otherwise; fails
//! under CI=true, where scripts/test.sh builds them first).
//! Without a cluster the test skips (one line); under CI=true it fails.

mod components;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use components::{scrape, topology, Component};
use fake_gpu_operator::kubelet::{load_node, NodeFiles};
use fake_gpu_operator::node_state::RANGE_PERIOD_S;
use fake_gpu_operator::topology::TOPOLOGY_KEY;
use fakegpu_cluster_support::objects::{node_ready, pod_running, test_node};
use fakegpu_cluster_support::{cluster_or_skip, wait_for, TestNamespace};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::json;

const T: Duration = Duration::from_secs(60);

/// `family`'s value per `UUID` label.
fn by_uuid(text: &str, family: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")))
        .filter_map(|l| {
            let uuid = l.split("UUID=\"").nth(1)?.split('"').next()?.to_string();
            let value = l.rsplit(' ').next()?.parse().ok()?;
            Some((uuid, value))
        })
        .collect()
}

/// The workspace's target dir (this test binary lives in `<target>/debug/deps`).
fn target_debug() -> PathBuf {
    std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().to_path_buf()
}

/// Our nvidia-smi and a directory holding the fake NVML as `libnvidia-ml.so.1`, if built.
fn fake_nvml_smi(dir: &Path) -> Option<(PathBuf, PathBuf)> {
    let (smi, lib) = (target_debug().join("nvidia-smi"), target_debug().join("libnvidia_ml.so"));
    if !smi.is_file() || !lib.is_file() {
        return None;
    }
    let libdir = dir.join("lib");
    std::fs::create_dir_all(&libdir).unwrap();
    let link = libdir.join("libnvidia-ml.so.1");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&lib, &link).unwrap();
    Some((smi, libdir))
}

/// `uuid, utilization.gpu, memory.used` (MiB) per GPU as a pod on the node sees them: the fake
/// NVML over the node's files, as the device plugin's Allocate points it there.
fn nvml_view(smi: &Path, libdir: &Path, files: &NodeFiles, node: &str) -> Vec<(String, u32, u64)> {
    let out = Command::new(smi)
        .args(["--query-gpu=uuid,utilization.gpu,memory.used", "--format=csv,noheader,nounits"])
        .env("LD_LIBRARY_PATH", libdir)
        .env("FAKEGPU_CONFIG", files.config())
        .env("FAKEGPU_NODE", node)
        .env_remove("FAKEGPU_STATE")
        .env_remove("FAKEGPU_PROFILE")
        .env_remove("FAKEGPU_GPUS")
        .env_remove("NVIDIA_VISIBLE_DEVICES")
        .output()
        .expect("run nvidia-smi");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "nvidia-smi failed: {text} {}", String::from_utf8_lossy(&out.stderr));
    text.lines()
        .map(|l| {
            let f: Vec<&str> = l.split(',').map(str::trim).collect();
            (f[0].to_string(), f[1].parse().expect("utilization"), f[2].parse().expect("memory.used"))
        })
        .collect()
}

fn gpu_pod(name: &str, node: &str, gpus: u32, util: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": {"run.ai/simulated-gpu-utilization": util}},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node},
            "containers": [{"name": "main", "image": "registry.invalid/fake:1",
                            "resources": {"limits": {"nvidia.com/gpu": gpus.to_string()}}}]
        }
    }))
    .unwrap()
}

fn window(at: std::time::SystemTime) -> u64 {
    at.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64 / (u64::from(RANGE_PERIOD_S) * 1000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_local_exporter_writes_the_files_nvml_and_metrics_agree() {
    let Some(cluster) = cluster_or_skip("node_local_exporter_writes_the_files_nvml_and_metrics_agree").await else { return };
    let ns: TestNamespace = cluster.namespace("node-files").await;
    let key = format!("{}.fgo.test/pool", ns.name);
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "topology"}, "data": {TOPOLOGY_KEY:
        format!("nodePoolLabelKey: {key}\nmigStrategy: none\nnodePools:\n  p:\n    gpu:\n      profile: h100\n      overrides: {{device_count: 4}}\n")}}))
    .unwrap();
    ns.api::<ConfigMap>().patch("topology", &PatchParams::apply("e2e").force(), &Patch::Apply(&cm)).await.expect("topology ConfigMap");

    // Logs and node files stay for inspection: target/tmp/node-files-e2e/<namespace>/.
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("node-files-e2e").join(&ns.name);
    std::fs::create_dir_all(&dir).expect("test dir");
    let (updater_dir, node_dir) = (dir.join("updater-nodes"), dir.join("nodes"));
    let node = ns.prefixed("n");
    let metrics = std::net::TcpListener::bind("127.0.0.1:0").expect("free port").local_addr().unwrap();
    let _components = [
        // The chart's status-updater: its node dir is not the nodes' disk.
        Component::start("status-updater", &ns.name, &dir, &["--node-dir", updater_dir.to_str().unwrap(), "--no-node-files"]),
        Component::start("kwok-gpu-device-plugin", &ns.name, &dir, &[]),
        // The chart's DaemonSet pod on the node.
        Component::start(
            "status-exporter",
            &ns.name,
            &dir,
            &[
                "--node",
                &node,
                "--node-dir",
                node_dir.to_str().unwrap(),
                "--write-node-files",
                "--listen",
                &metrics.to_string(),
                "--hostname-label",
                "node",
            ],
        ),
    ];

    let nodes: Api<Node> = Api::all(ns.client.clone());
    nodes.create(&PostParams::default(), &test_node(&node, &ns.name, &[(key.as_str(), "p")])).await.expect("create node");
    ns.track::<Node>(&node);
    wait_for(&nodes, &node, T, "node Ready with 4 GPUs allocatable", |n| {
        node_ready(n)
            && n.status.as_ref().and_then(|s| s.allocatable.as_ref()).and_then(|a| a.get("nvidia.com/gpu")).map(|q| q.0.as_str())
                == Some("4")
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    // (a) The exporter wrote the node's config; the fake NVML's GPUs are the topology's.
    let cms: Api<ConfigMap> = ns.api();
    let cm =
        wait_for(&cms, &format!("topology-{node}"), T, "node topology", |c| topology(c).is_some()).await.unwrap_or_else(|e| panic!("{e}"));
    let topo = topology(&cm).unwrap();
    let uuids: Vec<String> = topo.gpus.iter().map(|g| g.id.clone()).collect();
    assert_eq!(uuids.len(), 4);
    let files = NodeFiles::new(&node_dir, &node);
    let deadline = Instant::now() + T;
    // An idle node has no state file yet (no GPU to write): the fake NVML reads it as idle.
    while !files.config().is_file() {
        assert!(Instant::now() < deadline, "the exporter wrote no {}", files.config().display());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let model = load_node(&files, &node).expect("node config");
    assert_eq!(model.gpus.iter().map(|g| g.uuid.clone()).collect::<Vec<_>>(), uuids, "model over the exporter's config");
    assert!(!updater_dir.join(&node).exists(), "the status-updater wrote node files despite --no-node-files");
    let smi = fake_nvml_smi(&dir);
    match &smi {
        Some((smi, libdir)) => {
            let listed: Vec<String> = nvml_view(smi, libdir, &files, &node).into_iter().map(|g| g.0).collect();
            assert_eq!(listed, uuids, "nvidia-smi over the fake NVML");
        }
        None if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("nvidia-smi view: build first: cargo build -p nvidia-smi -p nvml-shim")
        }
        None => eprintln!("SKIP nvidia-smi view: cargo build -p nvidia-smi -p nvml-shim"),
    }

    // (b) A pod on 2 GPUs at 40-60 %: the fake NVML and the metrics read the same values.
    let pods: Api<Pod> = ns.api();
    pods.create(&PostParams::default(), &gpu_pod("train", &node, 2, "40-60")).await.expect("create pod");
    wait_for(&pods, "train", T, "pod Running", pod_running).await.unwrap_or_else(|e| panic!("{e}"));
    let cm = wait_for(&cms, &format!("topology-{node}"), T, "allocation of train", |c| {
        topology(c).is_some_and(|t| t.gpus.iter().filter(|g| g.status.allocated_by.pod == "train").count() == 2)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let held: Vec<usize> =
        topology(&cm).unwrap().gpus.iter().enumerate().filter(|(_, g)| g.status.allocated_by.pod == "train").map(|(i, _)| i).collect();
    // The exporter put the pod's load into the state file: the range's top and its pattern.
    let deadline = Instant::now() + T;
    loop {
        let st = fakegpu_model::state_file::read(&files.state()).unwrap_or_default();
        let loaded = |i: usize| st.gpu(i as u32).is_some_and(|g| g.utilization.gpu == 60 && g.pattern.is_some_and(|p| p.min == 40));
        if held.iter().all(|&i| loaded(i)) {
            break;
        }
        assert!(Instant::now() < deadline, "state file without the pod's load: {st:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let Some((smi, libdir)) = smi else { return };
    let mut compared = 0;
    let mut straddled = 0;
    while compared < 3 {
        let before = std::time::SystemTime::now();
        let text = scrape(metrics).expect("scrape");
        let gpus = nvml_view(&smi, &libdir, &files, &node);
        let after = std::time::SystemTime::now();
        if window(before) != window(after) {
            // The two reads straddle a draw of the range: different moments, read again.
            straddled += 1;
            assert!(straddled < 10, "reads keep straddling draw windows");
            continue;
        }
        let (util, fb) = (by_uuid(&text, "DCGM_FI_DEV_GPU_UTIL"), by_uuid(&text, "DCGM_FI_DEV_FB_USED"));
        let all = format!("nvml {gpus:?}, util {util:?}, fb {fb:?}");
        assert_eq!(gpus.iter().map(|g| g.0.clone()).collect::<Vec<_>>(), uuids);
        for (i, (uuid, u, mem)) in gpus.iter().enumerate() {
            if held.contains(&i) {
                assert!((40..=60).contains(u) && *mem > 0, "{uuid}: {u} % outside 40-60 or no memory; {all}");
            } else {
                assert_eq!(*u, 0, "{uuid}: idle GPU; {all}");
            }
            assert_eq!(util.get(uuid).copied(), Some(f64::from(*u)), "{uuid}: DCGM_FI_DEV_GPU_UTIL vs NVML utilization.gpu; {all}");
            assert_eq!(fb.get(uuid).copied(), Some(*mem as f64), "{uuid}: DCGM_FI_DEV_FB_USED vs NVML memory.used; {all}");
        }
        compared += 1;
        tokio::time::sleep(Duration::from_millis(u64::from(RANGE_PERIOD_S) * 1000 / 2)).await;
    }
}
