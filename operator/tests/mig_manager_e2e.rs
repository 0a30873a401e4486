//! The mig-manager against the real control plane with a KWOK node, beside the status-updater
//! and the kwok-gpu-device-plugin: NVIDIA mig-manager's label contract (state, capacity, the
//! topology's MIG devices), a pod holding MIG devices (recorded in the topology), a refused
//! change while a pod holds a GPU or MIG devices (Event, nothing changed, applied once the pod
//! is gone), custom configurations from a ConfigMap, and Run:ai
//! mig-faker's annotation (`run.ai/mig-mapping`).
//!
//! Own namespace, pool label key and component processes, so it runs beside the other tests.
//! Without a cluster it skips (one line); under CI=true it fails.

mod components;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use components::{node_topology, scrape, Component};
use fake_gpu_operator::mig_manager_core::{
    FAILED_EVENT_REASON, MIG_CONFIG_LABEL, MIG_CONFIG_STATE_LABEL, MIG_LAYOUT_ANNOTATION, MIG_REASON_ANNOTATION,
    RUNAI_MIG_CONFIG_ANNOTATION, RUNAI_MIG_MAPPING_ANNOTATION,
};
use fake_gpu_operator::topology::TOPOLOGY_KEY;
use fakegpu_cluster_support::objects::{node_ready, pod_running, test_node};
use fakegpu_cluster_support::{cluster_or_skip, wait_for, TestNamespace};
use k8s_openapi::api::core::v1::{ConfigMap, Event, Node, Pod};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::json;

const T: Duration = Duration::from_secs(60);

fn label<'a>(n: &'a Node, k: &str) -> Option<&'a str> {
    n.metadata.labels.as_ref()?.get(k).map(String::as_str)
}

fn annotation<'a>(n: &'a Node, k: &str) -> Option<&'a str> {
    n.metadata.annotations.as_ref()?.get(k).map(String::as_str)
}

fn allocatable(n: &Node, r: &str) -> Option<String> {
    n.status.as_ref()?.allocatable.as_ref()?.get(r).map(|q| q.0.clone())
}

async fn patch_node(ns: &TestNamespace, node: &str, patch: serde_json::Value) {
    let nodes: Api<Node> = Api::all(ns.client.clone());
    nodes.patch(node, &PatchParams::default(), &Patch::Merge(patch)).await.expect("patch node");
}

fn base64_decode(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let vals: Vec<u32> = s.bytes().filter(|b| *b != b'=').map(|b| ALPHABET.iter().position(|a| *a == b).expect("base64") as u32).collect();
    let mut out = Vec::new();
    for chunk in vals.chunks(4) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, v)| acc | v << (18 - 6 * i));
        for i in 0..chunk.len().saturating_sub(1) {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mig_config_label_and_runai_annotation_on_a_kwok_node() {
    let Some(cluster) = cluster_or_skip("mig_config_label_and_runai_annotation_on_a_kwok_node").await else { return };
    let ns = cluster.namespace("mig-mgr").await;
    let key = format!("{}.fgo.test/pool", ns.name);
    let config = format!(
        "nodePoolLabelKey: {key}\nmigStrategy: mixed\nnodePools:\n  a100:\n    gpu:\n      profile: a100-80gb\n      overrides: {{device_count: 2}}\n"
    );
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "topology"}, "data": {TOPOLOGY_KEY: config}})).unwrap();
    let cms: Api<ConfigMap> = ns.api();
    cms.patch("topology", &PatchParams::apply("e2e").force(), &Patch::Apply(&cm)).await.expect("topology ConfigMap");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("mig-manager-e2e").join(&ns.name);
    std::fs::create_dir_all(&dir).expect("log dir");
    let nodes_dir = dir.join("nodes");
    let _updater = Component::start("status-updater", &ns.name, &dir, &["--node-dir", nodes_dir.to_str().unwrap(), "--no-node-files"]);
    let _plugin = Component::start("kwok-gpu-device-plugin", &ns.name, &dir, &[]);
    let metrics = std::net::TcpListener::bind("127.0.0.1:0").expect("free port").local_addr().unwrap();
    let _exporter = Component::start("status-exporter", &ns.name, &dir, &["--listen", &metrics.to_string()]);
    // Custom configurations, as NVIDIA's default-mig-parted-config: a new name and a built-in
    // name redefined.
    let custom = "version: v1\nmig-configs:\n  half:\n    - devices: [0]\n      mig-enabled: true\n      mig-devices: {\"7g.80gb\": 1}\n    - devices: [1]\n      mig-enabled: false\n  all-balanced:\n    - devices: all\n      mig-enabled: true\n      mig-devices: {\"2g.20gb\": 3}\n";
    let parted: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "mig-parted-config"}, "data": {"config.yaml": custom}})).unwrap();
    cms.create(&PostParams::default(), &parted).await.expect("custom MIG configs");
    let manager =
        Component::start("mig-manager", &ns.name, &dir, &["--runai", "--resync-seconds", "5", "--configs-configmap", "mig-parted-config"]);

    let node = ns.prefixed("n");
    let nodes: Api<Node> = Api::all(ns.client.clone());
    nodes.create(&PostParams::default(), &test_node(&node, &ns.name, &[])).await.expect("create node");
    ns.track::<Node>(&node);
    wait_for(&nodes, &node, T, "node Ready", node_ready).await.expect("node Ready");
    patch_node(&ns, &node, json!({"metadata": {"labels": {key.as_str(): "a100"}}})).await;
    wait_for(&nodes, &node, T, "2 whole GPUs", |n| allocatable(n, "nvidia.com/gpu").as_deref() == Some("2")).await.unwrap();

    // 1. The label: 7 × 1g.10gb on each GPU, success, capacity as NVIDIA's plugin (mixed).
    patch_node(&ns, &node, json!({"metadata": {"labels": {MIG_CONFIG_LABEL: "all-1g.10gb"}}})).await;
    let n = wait_for(&nodes, &node, T, "all-1g.10gb applied", |n| {
        label(n, MIG_CONFIG_STATE_LABEL) == Some("success")
            && allocatable(n, "nvidia.com/mig-1g.10gb").as_deref() == Some("14")
            && allocatable(n, "nvidia.com/gpu").as_deref() == Some("0")
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\nmig-manager log:\n{}", manager.log()));
    assert!(annotation(&n, MIG_LAYOUT_ANNOTATION).is_some());
    let t =
        node_topology(&ns, &node, "MIG devices in the topology", |t| t.gpus.iter().all(|g| g.mig.as_ref().is_some_and(|m| m.len() == 7)))
            .await;
    // The MIG UUIDs are the fake NVML's for those instances on this node.
    let m = &t.gpus[1].mig.as_ref().unwrap()[0];
    assert_eq!(m.id, fakegpu_model::mig::mig_uuid(&node, &t.gpus[1].id, m.gpu_instance_id, m.compute_instance_id));
    assert_eq!(m.profile, "1g.10gb");

    // 1b. A pod asking for 2 MIG devices is scheduled on them and holds two devices of the
    //     topology; repartitioning their GPU is refused while it runs.
    let pods: Api<Pod> = ns.api();
    let mig_pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "mig-user"},
        "spec": {"nodeSelector": {"kubernetes.io/hostname": node},
                 "containers": [{"name": "main", "image": "registry.invalid/fake:1", "resources": {"limits": {"nvidia.com/mig-1g.10gb": "2"}}}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &mig_pod).await.expect("create MIG pod");
    wait_for(&pods, "mig-user", T, "MIG pod Running", pod_running).await.expect("MIG pod runs");
    let t = node_topology(&ns, &node, "mig-user holds 2 MIG devices", |t| {
        t.gpus.iter().flat_map(|g| g.mig.iter().flatten()).filter(|m| m.allocated_by.as_ref().is_some_and(|a| a.pod == "mig-user")).count()
            == 2
    })
    .await;
    let held = t.gpus.iter().flat_map(|g| g.mig.iter().flatten()).find(|m| m.allocated_by.is_some()).unwrap();
    assert_eq!(held.allocated_by.as_ref().map(|a| (a.namespace.as_str(), a.container.as_str())), Some((ns.name.as_str(), "main")));
    assert!(t.gpus.iter().all(|g| g.status.allocated_by.pod.is_empty()), "no whole GPU is held");
    // Its metrics: dcgm-exporter's per-instance series, one per MIG device it holds, with the
    // instance's framebuffer in use (a dedicated holder) and no whole-GPU utilization.
    let mine = format!("namespace=\"{}\",pod=\"mig-user\"", ns.name);
    let deadline = Instant::now() + T;
    let fb_used: Vec<String> = loop {
        let text = scrape(metrics).unwrap_or_default();
        let lines: Vec<String> =
            text.lines().filter(|l| l.starts_with("DCGM_FI_DEV_FB_USED{") && l.contains(&mine)).map(str::to_string).collect();
        if lines.len() == 2 {
            assert!(!text.lines().any(|l| l.starts_with("DCGM_FI_DEV_GPU_UTIL{") && l.contains(&mine)), "{text}");
            break lines;
        }
        assert!(Instant::now() < deadline, "no per-MIG series for mig-user:\n{text}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    for line in &fb_used {
        let gi = t.gpus.iter().flat_map(|g| g.mig.iter().flatten()).find(|m| line.contains(&format!("GPU_I_ID=\"{}\"", m.gpu_instance_id)));
        let gi = gi.unwrap_or_else(|| panic!("GPU_I_ID of {line}"));
        assert!(line.contains("GPU_I_PROFILE=\"1g.10gb\""), "{line}");
        assert!(line.ends_with(&format!(" {}", gi.memory)), "{line} (instance memory {} MiB)", gi.memory);
    }
    patch_node(&ns, &node, json!({"metadata": {"labels": {MIG_CONFIG_LABEL: "all-disabled"}}})).await;
    let n = wait_for(&nodes, &node, T, "repartitioning refused", |n| label(n, MIG_CONFIG_STATE_LABEL) == Some("failed")).await.unwrap();
    let reason = annotation(&n, MIG_REASON_ANNOTATION).unwrap_or_default().to_string();
    assert!(reason.contains(&format!("in use by {}/mig-user", ns.name)), "{reason}");
    assert_eq!(allocatable(&n, "nvidia.com/mig-1g.10gb").as_deref(), Some("14"), "nothing changed");
    pods.delete("mig-user", &DeleteParams::default().grace_period(0)).await.expect("delete MIG pod");

    // 2. Back to whole GPUs (the standing request, once the MIG devices are free).
    wait_for(&nodes, &node, T, "all-disabled applied", |n| {
        allocatable(n, "nvidia.com/gpu").as_deref() == Some("2")
            && allocatable(n, "nvidia.com/mig-1g.10gb").is_none()
            && annotation(n, MIG_LAYOUT_ANNOTATION).is_none()
    })
    .await
    .unwrap();

    // 3. A pod holds a GPU: a config that repartitions it is refused, nothing changes, and an
    //    Event says why.
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "train"},
        "spec": {"nodeSelector": {"kubernetes.io/hostname": node},
                 "containers": [{"name": "main", "image": "registry.invalid/fake:1", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.expect("create pod");
    wait_for(&pods, "train", T, "pod Running", pod_running).await.expect("pod runs");
    node_topology(&ns, &node, "train holds a GPU", |t| t.gpus.iter().any(|g| g.status.allocated_by.pod == "train")).await;
    patch_node(&ns, &node, json!({"metadata": {"labels": {MIG_CONFIG_LABEL: "all-3g.40gb"}}})).await;
    let n = wait_for(&nodes, &node, T, "state failed", |n| label(n, MIG_CONFIG_STATE_LABEL) == Some("failed")).await.unwrap();
    let reason = annotation(&n, MIG_REASON_ANNOTATION).unwrap_or_default().to_string();
    assert!(reason.contains(&format!("in use by {}/train", ns.name)) && reason.contains("all-3g.40gb"), "{reason}");
    assert_eq!(allocatable(&n, "nvidia.com/gpu").as_deref(), Some("2"), "nothing changed");
    assert!(annotation(&n, MIG_LAYOUT_ANNOTATION).is_none(), "nothing changed");
    // Events about a Node live in `default`; this test's node name is its own.
    let events: Api<Event> = Api::namespaced(ns.client.clone(), "default");
    let mine = ListParams::default().fields(&format!("involvedObject.name={node}"));
    let deadline = Instant::now() + T;
    let event = loop {
        let list = events.list(&mine).await.expect("list events");
        // (Step 1b's refusal left an Event of its own, with its own message.)
        if let Some(e) =
            list.items.into_iter().find(|e| e.reason.as_deref() == Some(FAILED_EVENT_REASON) && e.message.as_deref() == Some(&reason))
        {
            break e;
        }
        assert!(Instant::now() < deadline, "no {FAILED_EVENT_REASON} Event");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!((event.involved_object.kind.as_deref(), event.involved_object.name.as_deref()), (Some("Node"), Some(node.as_str())));
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert_eq!(event.message.as_deref(), Some(reason.as_str()));
    // Still refused a few resyncs later, and only one Event for it.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let n = nodes.get(&node).await.unwrap();
    assert_eq!(label(&n, MIG_CONFIG_STATE_LABEL), Some("failed"));
    let events_of = |list: Vec<Event>, message: &str| {
        list.iter().filter(|e| e.reason.as_deref() == Some(FAILED_EVENT_REASON) && e.message.as_deref() == Some(message)).count()
    };
    assert_eq!(events_of(events.list(&mine).await.unwrap().items, &reason), 1);

    // 4. The pod leaves: the standing request is applied (level-triggered).
    pods.delete("train", &DeleteParams::default().grace_period(0)).await.expect("delete pod");
    wait_for(&nodes, &node, T, "all-3g.40gb applied once the GPU is free", |n| {
        label(n, MIG_CONFIG_STATE_LABEL) == Some("success")
            && allocatable(n, "nvidia.com/mig-3g.40gb").as_deref() == Some("4")
            && annotation(n, MIG_REASON_ANNOTATION).is_none()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\nmig-manager log:\n{}", manager.log()));

    // 5. Custom configurations: a name of the ConfigMap, and a built-in it redefines.
    patch_node(&ns, &node, json!({"metadata": {"labels": {MIG_CONFIG_LABEL: "all-balanced"}}})).await;
    wait_for(&nodes, &node, T, "custom all-balanced (3 × 2g.20gb per GPU)", |n| {
        allocatable(n, "nvidia.com/mig-2g.20gb").as_deref() == Some("6") && allocatable(n, "nvidia.com/mig-1g.10gb").is_none()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\nmig-manager log:\n{}", manager.log()));
    patch_node(&ns, &node, json!({"metadata": {"labels": {MIG_CONFIG_LABEL: "half"}}})).await;
    wait_for(&nodes, &node, T, "custom half", |n| {
        label(n, MIG_CONFIG_STATE_LABEL) == Some("success")
            && allocatable(n, "nvidia.com/mig-7g.80gb").as_deref() == Some("1")
            && allocatable(n, "nvidia.com/gpu").as_deref() == Some("1")
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\nmig-manager log:\n{}", manager.log()));

    // 6. Run:ai's annotation (takes precedence over the label): GPU 0 gets 4g.40gb at slice 0 and
    //    1g.10gb at slice 6; the mapping names the NVML UUIDs and GPU instance ids.
    let doc = "version: v1\nmig-configs:\n  selected:\n    - devices: [\"0\"]\n      mig-enabled: true\n      mig-devices:\n        - {name: 1g.10gb, position: 6, size: 1}\n        - {name: 4g.40gb, position: 0, size: 4}\n";
    patch_node(&ns, &node, json!({"metadata": {"annotations": {RUNAI_MIG_CONFIG_ANNOTATION: doc}}})).await;
    let n = wait_for(&nodes, &node, T, "run.ai mapping", |n| {
        annotation(n, RUNAI_MIG_MAPPING_ANNOTATION).is_some()
            && label(n, MIG_CONFIG_STATE_LABEL) == Some("success")
            && allocatable(n, "nvidia.com/mig-4g.40gb").as_deref() == Some("1")
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\nmig-manager log:\n{}", manager.log()));
    // GPU 1 is not selected: it stays whole.
    assert_eq!(allocatable(&n, "nvidia.com/gpu").as_deref(), Some("1"));
    assert_eq!(allocatable(&n, "nvidia.com/mig-1g.10gb").as_deref(), Some("1"));
    assert!(allocatable(&n, "nvidia.com/mig-7g.80gb").is_none());
    let mapping: BTreeMap<String, Vec<serde_json::Value>> =
        serde_json::from_slice(&base64_decode(annotation(&n, RUNAI_MIG_MAPPING_ANNOTATION).unwrap())).expect("mapping JSON");
    let t = node_topology(&ns, &node, "GPU 0 with 2 MIG devices", |t| t.gpus[0].mig.as_ref().is_some_and(|m| m.len() == 2)).await;
    let mut got: Vec<(u64, String, u64)> = mapping["0"]
        .iter()
        .map(|d| (d["position"].as_u64().unwrap(), d["device_uuid"].as_str().unwrap().to_string(), d["gpu_instance_id"].as_u64().unwrap()))
        .collect();
    got.sort();
    let mut want: Vec<(u64, String, u64)> =
        t.gpus[0].mig.as_ref().unwrap().iter().map(|m| (u64::from(m.position), m.id.clone(), u64::from(m.gpu_instance_id))).collect();
    want.sort();
    assert_eq!(got, want);
    assert_eq!(got.iter().map(|g| (g.0, g.2)).collect::<Vec<_>>(), vec![(0, 1), (6, 13)]);
    assert!(!mapping.contains_key("1"), "GPU 1 has no MIG devices: {mapping:?}");
}
