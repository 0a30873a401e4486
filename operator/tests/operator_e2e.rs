//! The status-updater and kwok-gpu-device-plugin against the real control plane with KWOK
//! nodes: pool labelling, allocation and release, pool switch, restart, bad config, shared
//! (fractional) GPUs through reservation pods, PodGroup priority classes; and the components
//! `fakegpu cluster up` itself runs (metrics and topology for its KWOK nodes).
//!
//! Each test runs its own component processes against its own namespace (the topology
//! namespace) and its own pool label key, so tests run in parallel with each other and with an
//! operator that `fakegpu cluster up` started. Without a cluster they skip (one line), under
//! CI=true they fail.

mod components;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use components::{node_topology, Component};
use fake_gpu_operator::topology::{NodeTopology, TOPOLOGY_KEY};
use fakegpu_cluster_support::objects::{node_ready, pod_running, test_node};
use fakegpu_cluster_support::{cluster_or_skip, wait_for, TestNamespace};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Namespace, Node, Pod, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use serde_json::json;

const T: Duration = Duration::from_secs(60);

/// The test's operator: namespace, pool label key, components.
struct Operator {
    key: String,
    dir: PathBuf,
    updater: Component,
    _plugin: Component,
    updater_flags: &'static [&'static str],
}

impl Operator {
    async fn start(ns: &TestNamespace, pools: &str) -> Operator {
        Operator::start_with(ns, pools, &[]).await
    }

    /// `updater_flags`: extra flags of the status-updater.
    async fn start_with(ns: &TestNamespace, pools: &str, updater_flags: &'static [&'static str]) -> Operator {
        let key = format!("{}.fgo.test/pool", ns.name);
        put_config(ns, &format!("nodePoolLabelKey: {key}\nmigStrategy: none\nnodePools:\n{pools}")).await;
        // Logs and node files stay for inspection: target/tmp/operator-e2e/<namespace>/.
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("operator-e2e").join(&ns.name);
        std::fs::create_dir_all(&dir).expect("log dir");
        let updater = start_updater(ns, &dir, updater_flags);
        let plugin = Component::start("kwok-gpu-device-plugin", &ns.name, &dir, &[]);
        Operator { key, dir, updater, _plugin: plugin, updater_flags }
    }

    fn restart_updater(&mut self, ns: &TestNamespace) {
        self.updater.kill();
        self.updater = start_updater(ns, &self.dir, self.updater_flags);
    }
}

fn start_updater(ns: &TestNamespace, dir: &std::path::Path, flags: &[&str]) -> Component {
    let nodes = dir.join("nodes");
    let mut args = vec!["--node-dir", nodes.to_str().unwrap(), "--node-files-for-kwok"];
    args.extend(flags);
    Component::start("status-updater", &ns.name, dir, &args)
}

async fn put_config(ns: &TestNamespace, text: &str) {
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "topology"}, "data": {TOPOLOGY_KEY: text}})).unwrap();
    let api: Api<ConfigMap> = ns.api();
    api.patch("topology", &PatchParams::apply("e2e").force(), &Patch::Apply(&cm)).await.expect("topology ConfigMap");
}

async fn ready_node(ns: &TestNamespace, suffix: &str) -> String {
    let name = ns.prefixed(suffix);
    let nodes: Api<Node> = Api::all(ns.client.clone());
    nodes.create(&PostParams::default(), &test_node(&name, &ns.name, &[])).await.expect("create node");
    ns.track::<Node>(&name);
    wait_for(&nodes, &name, T, "node Ready", node_ready).await.expect("node Ready");
    name
}

async fn set_pool(ns: &TestNamespace, node: &str, key: &str, pool: Option<&str>) {
    let nodes: Api<Node> = Api::all(ns.client.clone());
    nodes.patch(node, &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {key: pool}}}))).await.expect("label node");
}

fn label<'a>(n: &'a Node, k: &str) -> Option<&'a str> {
    n.metadata.labels.as_ref()?.get(k).map(String::as_str)
}

fn allocatable(n: &Node, r: &str) -> Option<String> {
    n.status.as_ref()?.allocatable.as_ref()?.get(r).map(|q| q.0.clone())
}

fn gpu_pod(name: &str, node: &str, gpus: u32, util: Option<&str>) -> Pod {
    let ann = util.map(|u| json!({"run.ai/simulated-gpu-utilization": u})).unwrap_or(json!({}));
    serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": ann},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node},
            "containers": [{"name": "main", "image": "registry.invalid/fake:1",
                            "resources": {"limits": {"nvidia.com/gpu": gpus.to_string()}}}]
        }
    }))
    .unwrap()
}

fn holders(t: &NodeTopology) -> Vec<String> {
    t.gpus.iter().map(|g| g.status.allocated_by.pod.clone()).collect()
}

fn held(t: &NodeTopology, pod: &str) -> Vec<usize> {
    t.gpus.iter().enumerate().filter(|(_, g)| g.status.allocated_by.pod == pod).map(|(i, _)| i).collect()
}

const POOLS: &str = "  small:\n    gpu: {profile: k80}\n  big:\n    gpu:\n      profile: h100\n      overrides: {device_count: 4}\n    resources:\n      - example.com/nic: 2\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_labelling_allocation_release_and_switch() {
    let Some(cluster) = cluster_or_skip("pool_labelling_allocation_release_and_switch").await else { return };
    labelling_allocation_release_and_switch(&cluster.namespace("op-pool").await, &[]).await;
}

/// The same with the status-updater setting KWOK capacity with the labels (as the chart runs
/// it beside the kwok plugin): the plugin then has nothing left to write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_labelling_with_capacity_written_by_the_status_updater() {
    let Some(cluster) = cluster_or_skip("pool_labelling_with_capacity_written_by_the_status_updater").await else { return };
    let ns = cluster.namespace("op-cap").await;
    let since = chrono_free::now();
    let node = labelling_allocation_release_and_switch(&ns, &["--kwok-capacity"]).await;
    if std::env::var_os("FAKEGPU_AUDIT_LOG").is_some() {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let plugin = writes_since("kwok-gpu-device-plugin", since, &ns.name, &node);
        assert!(plugin.iter().all(|w| w.3 == 409), "the kwok plugin wrote {plugin:?}");
        let updater = writes_since("status-updater", since, &ns.name, &node);
        let node_writes = updater.iter().filter(|w| w.1 == "nodes").count();
        // In pool big, then small, then out of every pool: one node write each.
        assert_eq!(node_writes, 3, "status-updater node writes: {updater:?}");
    }
}

/// Labels a node into pools and out again; returns its name.
async fn labelling_allocation_release_and_switch(ns: &TestNamespace, updater_flags: &'static [&'static str]) -> String {
    let op = Operator::start_with(ns, POOLS, updater_flags).await;
    let node = ready_node(ns, "n").await;
    let nodes: Api<Node> = Api::all(ns.client.clone());

    // Labelled into a pool: labels, capacity and topology within 2 s.
    let start = Instant::now();
    set_pool(ns, &node, &op.key, Some("big")).await;
    wait_for(&nodes, &node, T, "labels and capacity of pool big", |n| {
        label(n, "nvidia.com/gpu.product") == Some("NVIDIA-H100-80GB-HBM3")
            && label(n, "nvidia.com/gpu.count") == Some("4")
            && label(n, "nvidia.com/gpu.family") == Some("hopper")
            // GFD writes no mig.strategy label for strategy none; neither do we.
            && label(n, "nvidia.com/mig.strategy").is_none()
            && allocatable(n, "nvidia.com/gpu").as_deref() == Some("4")
            && allocatable(n, "example.com/nic").as_deref() == Some("2")
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let t = node_topology(ns, &node, "4 GPUs", |t| t.gpus.len() == 4).await;
    let converged = start.elapsed();
    assert!(converged <= Duration::from_secs(2), "labels, capacity and topology took {converged:?}");
    // The UUIDs are the fake NVML's for this node.
    let spec = fakegpu_model::NodeSpec::builtin("h100", Some(4), &node).unwrap();
    let want: Vec<String> = fakegpu_model::SimulatedNode::new(spec).gpus.into_iter().map(|g| g.uuid).collect();
    assert_eq!(t.gpus.iter().map(|g| g.id.clone()).collect::<Vec<_>>(), want);
    assert_eq!(t.gpu_product, "NVIDIA H100 80GB HBM3");

    // A 2-GPU pod with utilization 40-60: recorded with its pod, namespace and range.
    let pods: Api<Pod> = ns.api();
    pods.create(&PostParams::default(), &gpu_pod("train", &node, 2, Some("40-60"))).await.expect("create pod");
    let pod = wait_for(&pods, "train", T, "pod Running", pod_running).await.expect("pod runs");
    let uid = pod.metadata.uid.clone().unwrap();
    let t = node_topology(ns, &node, "allocation of train", |t| {
        held(t, "train").len() == 2
            && t.gpus.iter().any(|g| g.status.pod_gpu_usage_status.get(&uid).is_some_and(|u| u.utilization.max == 60))
    })
    .await;
    for i in held(&t, "train") {
        let s = &t.gpus[i].status;
        assert_eq!((s.allocated_by.namespace.as_str(), s.allocated_by.container.as_str()), (ns.name.as_str(), "main"));
        let u = s.pod_gpu_usage_status[&uid];
        assert_eq!((u.utilization.min, u.utilization.max, u.fb_used), (40, 60, t.gpu_memory));
    }

    // The node files the fake NVML reads: config and live state (utilization within the pod's
    // range on its GPUs: node_state.rs stores a draw from it or its top with a `range` pattern).
    let node_dir = op.dir.join("nodes").join(&node);
    let cfg = fakegpu_model::config::read_config_file(&node_dir.join("config.json")).expect("node config");
    assert_eq!((cfg.gpus, cfg.node.as_deref()), (Some(4), Some(node.as_str())));
    let state_path = node_dir.join(fakegpu_model::state_file::DEFAULT_FILE_NAME);
    let deadline = Instant::now() + T;
    loop {
        let st = fakegpu_model::state_file::read(&state_path).unwrap_or_default();
        let utils: Vec<u32> = (0..4).map(|i| st.gpu(i).map_or(0, |g| g.utilization.gpu)).collect();
        let held_gpus = held(&t, "train");
        let in_range = (0..4).all(|i| if held_gpus.contains(&i) { (40..=60).contains(&utils[i]) } else { utils[i] == 0 });
        if in_range {
            break;
        }
        assert!(Instant::now() < deadline, "node state utilization {utils:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Deleted: released.
    pods.delete("train", &DeleteParams::default().grace_period(0)).await.expect("delete pod");
    node_topology(ns, &node, "GPUs released", |t| t.gpus.len() == 4 && holders(t).iter().all(String::is_empty)).await;

    // Pool switch: labels, capacity and topology follow; the extra resource goes.
    set_pool(ns, &node, &op.key, Some("small")).await;
    wait_for(&nodes, &node, T, "labels and capacity of pool small", |n| {
        label(n, "nvidia.com/gpu.product") == Some("Tesla-K80")
            && label(n, "nvidia.com/gpu.count") == Some("2")
            && allocatable(n, "nvidia.com/gpu").as_deref() == Some("2")
            && allocatable(n, "example.com/nic").is_none()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    node_topology(ns, &node, "2 K80s", |t| t.gpus.len() == 2 && t.gpu_product == "Tesla K80").await;

    // Out of every pool: our labels, capacity and ConfigMap go.
    set_pool(ns, &node, &op.key, None).await;
    wait_for(&nodes, &node, T, "labels and capacity removed", |n| {
        label(n, "nvidia.com/gpu.product").is_none() && label(n, "run.ai/fake.gpu").is_none() && allocatable(n, "nvidia.com/gpu").is_none()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let cms: Api<ConfigMap> = ns.api();
    let deadline = Instant::now() + T;
    while cms.get_opt(&format!("topology-{node}")).await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "node topology ConfigMap not deleted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    node
}

/// A component's writes to this test's ConfigMaps and nodes that the API server received at or
/// after `since`, from its audit log: (verb, resource, name, response code).
fn writes_since(component: &str, since: chrono_free::Stamp, ns: &str, node_prefix: &str) -> Vec<(String, String, String, u64)> {
    let log = std::env::var("FAKEGPU_AUDIT_LOG").expect("FAKEGPU_AUDIT_LOG");
    let text = std::fs::read_to_string(&log).expect("audit log");
    let agent = format!("({component})");
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["userAgent"].as_str().is_some_and(|a| a.contains(&agent)))
        .filter(|e| matches!(e["verb"].as_str(), Some("create" | "update" | "patch" | "delete")))
        .filter(|e| e["requestReceivedTimestamp"].as_str().and_then(chrono_free::parse).is_some_and(|t| t >= since))
        .filter_map(|e| {
            let r = &e["objectRef"];
            let (resource, name) = (r["resource"].as_str()?.to_string(), r["name"].as_str()?.to_string());
            let ours = match resource.as_str() {
                "configmaps" => r["namespace"].as_str() == Some(ns),
                "nodes" => name.starts_with(node_prefix),
                _ => false,
            };
            let code = e["responseStatus"]["code"].as_u64().unwrap_or(0);
            ours.then(|| (e["verb"].as_str().unwrap_or_default().to_string(), resource, name, code))
        })
        .collect()
}

/// RFC 3339 timestamps (`2026-12-04T22:01:02.123456Z`, as the audit log writes them) as
/// microseconds since the epoch, without a date crate.
mod chrono_free {
    pub type Stamp = i64;

    pub fn now() -> Stamp {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as i64
    }

    pub fn parse(s: &str) -> Option<Stamp> {
        let (date, time) = s.strip_suffix('Z')?.split_once('T')?;
        let mut d = date.split('-').map(|v| v.parse::<i64>());
        let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
        let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
        let mut t = hms.split(':').map(|v| v.parse::<i64>());
        let (h, min, sec) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
        let micros = format!("{frac:0<6}")[..6].parse::<i64>().ok()?;
        // Days from the civil date (Howard Hinnant's algorithm).
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        Some(((days * 86_400 + h * 3_600 + min * 60 + sec) * 1_000_000) + micros)
    }

    #[test]
    fn parses_audit_timestamps() {
        assert_eq!(parse("1970-01-01T00:00:00.000001Z"), Some(1));
        assert_eq!(parse("2026-12-04T22:01:02.5Z"), Some(1_796_421_662_500_000));
        assert_eq!(parse("2000-03-01T00:00:00Z"), Some(951_868_800_000_000));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_convergence_a_restart_finishes_without_rewriting_what_is_right() {
    let Some(cluster) = cluster_or_skip("killed_mid_convergence_a_restart_finishes_without_rewriting_what_is_right").await else { return };
    if std::env::var_os("FAKEGPU_AUDIT_LOG").is_none() {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "FAKEGPU_AUDIT_LOG unset: scripts/cluster-ci.sh writes the audit log");
        eprintln!("skipped: needs the cluster's audit log (FAKEGPU_AUDIT_LOG; scripts/cluster-ci.sh)");
        return;
    }
    let ns = cluster.namespace("op-kill").await;
    let key = format!("{}.fgo.test/pool", ns.name);
    put_config(&ns, &format!("nodePoolLabelKey: {key}\nmigStrategy: none\nnodePools:\n  p:\n    gpu:\n      profile: h100\n      overrides: {{device_count: 8}}\n")).await;
    // Nodes in the pool before the status-updater starts: its cold start.
    const N: usize = 200;
    let nodes: Api<Node> = Api::all(ns.client.clone());
    let names: Vec<String> = (0..N).map(|i| ns.prefixed(&format!("k{i}"))).collect();
    for name in &names {
        nodes.create(&PostParams::default(), &test_node(name, &ns.name, &[(key.as_str(), "p")])).await.expect("create node");
        ns.track::<Node>(name);
    }
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("operator-e2e").join(&ns.name);
    std::fs::create_dir_all(&dir).expect("log dir");
    let cms: Api<ConfigMap> = ns.api();
    let topology_cms = || async {
        let list = cms.list(&ListParams::default().labels("node-topology=true")).await.expect("list ConfigMaps");
        list.items
            .into_iter()
            .filter(|c| {
                c.data
                    .as_ref()
                    .and_then(|d| d.get(TOPOLOGY_KEY))
                    .and_then(|t| NodeTopology::from_yaml(t).ok())
                    .is_some_and(|t| t.gpus.len() == 8)
            })
            .map(|c| c.metadata.name.unwrap_or_default())
            .collect::<BTreeSet<String>>()
    };
    // Killed (SIGKILL) once a part of the nodes is written: seen by a watch, since a poll
    // can miss the whole burst (the nodes are written first, then their ConfigMaps).
    let mut created = watcher::watcher(cms.clone(), watcher::Config::default().labels("node-topology=true")).applied_objects().boxed();
    // As the chart runs it beside the kwok plugin: a node's capacity comes with its labels.
    const FLAGS: &[&str] = &["--kwok-capacity"];
    let mut updater = start_updater(&ns, &dir, FLAGS);
    let mut seen = BTreeSet::new();
    tokio::time::timeout(T, async {
        while seen.len() < N / 8 {
            if let Some(Ok(cm)) = created.next().await {
                seen.insert(cm.metadata.name.unwrap_or_default());
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the status-updater wrote {} of {N} ConfigMaps in {T:?}", seen.len()));
    updater.kill();
    drop(created);
    // Requests the API server had received before the kill complete meanwhile.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let written_before = topology_cms().await;
    assert!(written_before.len() < N, "killed too late to test anything: all {N} written");
    let test_nodes = || async {
        let selector = format!("{}={}", fakegpu_cluster_support::objects::TEST_LABEL, ns.name);
        nodes.list(&ListParams::default().labels(&selector)).await.expect("list nodes").items
    };
    // Node → its nvidia.com/ labels.
    let gpu_labels = |list: &[Node]| -> BTreeMap<String, BTreeMap<String, String>> {
        let ours =
            |n: &Node| n.metadata.labels.clone().unwrap_or_default().into_iter().filter(|(k, _)| k.starts_with("nvidia.com/")).collect();
        list.iter().map(|n| (n.metadata.name.clone().unwrap_or_default(), ours(n))).collect()
    };
    let before = gpu_labels(&test_nodes().await);
    let restarted = chrono_free::now();
    let _updater = start_updater(&ns, &dir, FLAGS);

    // Every node right in the end.
    let start = Instant::now();
    loop {
        let done = topology_cms().await;
        let labelled = test_nodes()
            .await
            .iter()
            .filter(|n| label(n, "nvidia.com/gpu.count") == Some("8") && allocatable(n, "nvidia.com/gpu").as_deref() == Some("8"))
            .count();
        if done.len() == N && labelled == N {
            break;
        }
        assert!(start.elapsed() < T, "after the restart: {} ConfigMaps, {labelled} labelled nodes with capacity of {N}", done.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = gpu_labels(&test_nodes().await);
    // The restarted status-updater wrote only what was not right yet: no ConfigMap that was
    // complete before, no node whose labels were already right; and nothing twice.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let writes = writes_since("status-updater", restarted, &ns.name, &ns.prefixed("k"));
    let mut seen = BTreeSet::new();
    for (verb, resource, name, _) in &writes {
        assert!(seen.insert((resource.clone(), name.clone())), "{verb} {resource}/{name} written twice after the restart: {writes:?}");
        match resource.as_str() {
            "configmaps" => assert!(!written_before.contains(name), "{verb} of ConfigMap {name}, which was right before the restart"),
            _ => assert_ne!(before.get(name), after.get(name), "{verb} of node {name}, whose labels were right before the restart"),
        }
    }
    let cm_writes = writes.iter().filter(|w| w.1 == "configmaps").count();
    assert_eq!(cm_writes, N - written_before.len(), "one write per missing ConfigMap: {writes:?}");
    eprintln!("killed after {} of {N} ConfigMaps; the restart wrote {} objects", written_before.len(), writes.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_allocations_without_duplicates() {
    let Some(cluster) = cluster_or_skip("restart_keeps_allocations_without_duplicates").await else { return };
    let ns = cluster.namespace("op-restart").await;
    let mut op = Operator::start(&ns, "  p:\n    gpuProduct: NVIDIA-A100-SXM4-40GB\n    gpuCount: 8\n    gpuMemory: 40960\n").await;
    let node = ready_node(&ns, "n").await;
    set_pool(&ns, &node, &op.key, Some("p")).await;
    let nodes: Api<Node> = Api::all(ns.client.clone());
    wait_for(&nodes, &node, T, "8 GPUs allocatable", |n| allocatable(n, "nvidia.com/gpu").as_deref() == Some("8"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    let pods: Api<Pod> = ns.api();
    for (name, gpus) in [("a", 2), ("b", 3), ("c", 1)] {
        pods.create(&PostParams::default(), &gpu_pod(name, &node, gpus, None)).await.expect("create pod");
        wait_for(&pods, name, T, "pod Running", pod_running).await.expect("pod runs");
    }
    // a released before the restart: b and c keep GPUs with a hole in front of them.
    pods.delete("a", &DeleteParams::default().grace_period(0)).await.expect("delete a");
    let before = node_topology(&ns, &node, "b and c allocated, a released", |t| {
        held(t, "b").len() == 3 && held(t, "c").len() == 1 && held(t, "a").is_empty()
    })
    .await;

    // Killed mid-way: a pod is created while it is down.
    op.updater.kill();
    pods.create(&PostParams::default(), &gpu_pod("d", &node, 2, None)).await.expect("create pod");
    wait_for(&pods, "d", T, "pod Running", pod_running).await.expect("pod runs");
    op.restart_updater(&ns);
    let after = node_topology(&ns, &node, "d allocated after restart", |t| held(t, "d").len() == 2).await;
    assert_eq!(held(&after, "b"), held(&before, "b"), "b kept its GPUs");
    assert_eq!(held(&after, "c"), held(&before, "c"), "c kept its GPU");
    let taken: Vec<usize> = ["b", "c", "d"].iter().flat_map(|p| held(&after, p)).collect();
    assert_eq!(taken.iter().collect::<BTreeSet<_>>().len(), taken.len(), "no GPU held twice: {:?}", holders(&after));
    // Stable: another restart changes nothing.
    op.restart_updater(&ns);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let again = node_topology(&ns, &node, "topology", |_| true).await;
    assert_eq!(holders(&again), holders(&after));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_config_is_reported_and_the_old_one_served() {
    let Some(cluster) = cluster_or_skip("bad_config_is_reported_and_the_old_one_served").await else { return };
    let ns = cluster.namespace("op-badcfg").await;
    let op = Operator::start(&ns, POOLS).await;
    let node = ready_node(&ns, "n").await;
    set_pool(&ns, &node, &op.key, Some("big")).await;
    node_topology(&ns, &node, "4 GPUs", |t| t.gpus.len() == 4).await;

    // Invalid: a profile that does not exist.
    put_config(&ns, &format!("nodePoolLabelKey: {}\nmigStrategy: none\nnodePools:\n  big:\n    gpu: {{profile: h900}}\n", op.key)).await;
    let events: Api<Event> = ns.api();
    let deadline = Instant::now() + T;
    let event = loop {
        let list = events.list(&ListParams::default()).await.expect("list events");
        if let Some(e) = list.items.into_iter().find(|e| e.reason.as_deref() == Some("InvalidTopologyConfig")) {
            break e;
        }
        assert!(Instant::now() < deadline, "no InvalidTopologyConfig Event");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(event.involved_object.name.as_deref(), Some("topology"));
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert!(event.message.as_deref().unwrap_or("").contains("h900"), "{:?}", event.message);
    assert!(op.updater.log().contains("invalid topology config"), "log: {}", op.updater.log());

    // The old config is still served: a node labelled now gets pool big as it was.
    let node2 = ready_node(&ns, "n2").await;
    set_pool(&ns, &node2, &op.key, Some("big")).await;
    let t = node_topology(&ns, &node2, "4 GPUs from the last good config", |t| t.gpus.len() == 4).await;
    assert_eq!(t.gpu_product, "NVIDIA H100 80GB HBM3");
    let t = node_topology(&ns, &node, "unchanged", |_| true).await;
    assert_eq!(t.gpus.len(), 4);

    // Fixed: applied without a restart.
    put_config(
        &ns,
        &format!(
            "nodePoolLabelKey: {}\nmigStrategy: none\nnodePools:\n  big:\n    gpu: {{profile: t4, overrides: {{device_count: 3}}}}\n",
            op.key
        ),
    )
    .await;
    let t = node_topology(&ns, &node, "3 T4s after the fix", |t| t.gpus.len() == 3).await;
    assert_eq!(t.gpu_product, "Tesla T4");
    let nodes: Api<Node> = Api::all(ns.client.clone());
    wait_for(&nodes, &node2, T, "3 allocatable after the fix", |n| allocatable(n, "nvidia.com/gpu").as_deref() == Some("3"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

const RESERVATION_NS: &str = "runai-reservation";

/// The reservation namespace is shared by every test (and by Run:ai itself): created when
/// absent, never deleted. Pods left there by a failed test go with their (deleted) node.
async fn reservation_namespace(ns: &TestNamespace) -> Api<Pod> {
    let namespaces: Api<Namespace> = Api::all(ns.client.clone());
    if namespaces.get_opt(RESERVATION_NS).await.expect("get namespace").is_none() {
        let obj: Namespace = serde_json::from_value(json!({"metadata": {"name": RESERVATION_NS}})).unwrap();
        match namespaces.create(&PostParams::default(), &obj).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => panic!("creating namespace {RESERVATION_NS}: {e}"),
        }
    }
    let sas: Api<ServiceAccount> = Api::namespaced(ns.client.clone(), RESERVATION_NS);
    wait_for(&sas, "default", T, "default ServiceAccount of runai-reservation", |_| true).await.unwrap_or_else(|e| panic!("{e}"));
    Api::namespaced(ns.client.clone(), RESERVATION_NS)
}

fn pod_from(v: serde_json::Value) -> Pod {
    serde_json::from_value(v).unwrap()
}

fn annotation<'a>(p: &'a Pod, k: &str) -> Option<&'a str> {
    p.metadata.annotations.as_ref()?.get(k).map(String::as_str)
}

/// An operator with pool `p` of 2 × K80 and a Ready KWOK node `n` in it, its GPUs allocatable.
async fn k80_pool_node(ns: &TestNamespace) -> (Operator, String) {
    let op = Operator::start(ns, "  p:\n    gpu: {profile: k80}\n").await;
    let node = ready_node(ns, "n").await;
    set_pool(ns, &node, &op.key, Some("p")).await;
    let nodes: Api<Node> = Api::all(ns.client.clone());
    wait_for(&nodes, &node, T, "2 GPUs allocatable", |n| allocatable(n, "nvidia.com/gpu").as_deref() == Some("2"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    (op, node)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_gpu_through_a_reservation_pod() {
    let Some(cluster) = cluster_or_skip("shared_gpu_through_a_reservation_pod").await else { return };
    let ns = cluster.namespace("op-shared").await;
    let (_op, node) = k80_pool_node(&ns).await;

    // A dedicated pod first, so the reservation pod's GPU is not simply GPU 0.
    let pods: Api<Pod> = ns.api();
    pods.create(&PostParams::default(), &gpu_pod("dedicated", &node, 1, None)).await.expect("create pod");
    wait_for(&pods, "dedicated", T, "pod Running", pod_running).await.expect("pod runs");
    node_topology(&ns, &node, "dedicated allocated", |t| held(t, "dedicated").len() == 1).await;

    // The reservation pod, as Run:ai's binder creates it: runai-reservation, one whole GPU, the
    // shared-GPU group label. Unique names: the namespace is shared.
    let group = ns.name.clone();
    let resv_name = ns.prefixed("resv");
    let resv_pods = reservation_namespace(&ns).await;
    let resv = pod_from(json!({
        "metadata": {"name": resv_name, "labels": {"runai-gpu-group": group, "fake-gpu-operator.run.ai/test": ns.name}},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node},
            "containers": [{"name": "resv", "image": "registry.invalid/fake:1", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]
        }
    }));
    resv_pods.create(&PostParams::default(), &resv).await.expect("create reservation pod");
    let resv = wait_for(&resv_pods, &resv_name, T, "reservation pod Running", pod_running).await.expect("reservation pod runs");
    let resv_uid = resv.metadata.uid.clone().unwrap();

    // The shared pod: half a GPU, same group, no nvidia.com/gpu of its own.
    let shared = pod_from(json!({
        "metadata": {"name": "frac", "labels": {"runai-gpu-group": group},
                     "annotations": {"gpu-fraction": "0.5", "run.ai/simulated-gpu-utilization": "20-30"}},
        "spec": {"nodeSelector": {"kubernetes.io/hostname": node},
                 "containers": [{"name": "main", "image": "registry.invalid/fake:1"}]}
    }));
    pods.create(&PostParams::default(), &shared).await.expect("create shared pod");
    let shared = wait_for(&pods, "frac", T, "shared pod Running", pod_running).await.expect("shared pod runs");
    let shared_uid = shared.metadata.uid.clone().unwrap();

    let t = node_topology(&ns, &node, "shared pod's usage under the reservation pod's GPU", |t| {
        // Its utilization, not just its entry: the entry is there while the updater still sees it
        // Pending (0 %), and the API may show Running before the ConfigMap catches up.
        t.gpus.iter().any(|g| {
            g.status.allocated_by.pod == resv_name
                && g.status.pod_gpu_usage_status.get(&shared_uid).is_some_and(|u| u.utilization.max == 30)
        })
    })
    .await;
    let i = held(&t, &resv_name)[0];
    assert_ne!(Some(i), held(&t, "dedicated").first().copied(), "one GPU, one holder: {:?}", holders(&t));
    let st = &t.gpus[i].status;
    assert_eq!((st.allocated_by.namespace.as_str(), st.allocated_by.container.as_str()), (RESERVATION_NS, "resv"));
    assert!(!st.pod_gpu_usage_status.contains_key(&resv_uid), "a reservation pod has no usage entry");
    let u = st.pod_gpu_usage_status[&shared_uid];
    assert_eq!((u.utilization.min, u.utilization.max, u.fb_used), (20, 30, (t.gpu_memory as f64 * 0.5) as u64));
    assert_eq!(st.shared_by[&shared_uid].pod, "frac");
    assert_eq!(st.shared_by[&shared_uid].namespace, ns.name);
    assert!(held(&t, "frac").is_empty(), "a shared pod holds no GPU");

    // The reservation pod is annotated with its GPU's UUID.
    let uuid = t.gpus[i].id.clone();
    wait_for(&resv_pods, &resv_name, T, "run.ai/reserve_for_gpu_index", |p| {
        annotation(p, "run.ai/reserve_for_gpu_index") == Some(uuid.as_str())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    // Shared pod gone: its entry goes, the reservation pod keeps the GPU.
    pods.delete("frac", &DeleteParams::default().grace_period(0)).await.expect("delete shared pod");
    node_topology(&ns, &node, "shared entry removed", |t| {
        held(t, &resv_name) == [i] && t.gpus[i].status.pod_gpu_usage_status.is_empty() && t.gpus[i].status.shared_by.is_empty()
    })
    .await;
    // Reservation pod gone: the GPU is free.
    resv_pods.delete(&resv_name, &DeleteParams::default().grace_period(0)).await.expect("delete reservation pod");
    node_topology(&ns, &node, "reserved GPU released", |t| held(t, &resv_name).is_empty() && t.gpus[i].status.is_free()).await;
}

/// Run:ai's PodGroup CRD, reduced to what the status-updater reads.
async fn install_pod_group_crd(ns: &TestNamespace) {
    let crds: Api<CustomResourceDefinition> = Api::all(ns.client.clone());
    let name = "podgroups.scheduling.run.ai";
    // Left installed: other runs and a real Run:ai CRD may use it; a deletion in flight would
    // make the next run's create fail.
    if crds.get_opt(name).await.expect("get CRD").is_none() {
        let crd: CustomResourceDefinition = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {
                "group": "scheduling.run.ai",
                "scope": "Namespaced",
                "names": {"plural": "podgroups", "singular": "podgroup", "kind": "PodGroup", "listKind": "PodGroupList"},
                "versions": [{"name": "v2alpha2", "served": true, "storage": true,
                              "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]
            }
        }))
        .unwrap();
        match crds.create(&PostParams::default(), &crd).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => panic!("creating the PodGroup CRD: {e}"),
        }
    }
    wait_for(&crds, name, T, "PodGroup CRD Established", |c| {
        c.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Established" && c.status == "True"))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_group_priority_class_gives_the_pod_type() {
    let Some(cluster) = cluster_or_skip("pod_group_priority_class_gives_the_pod_type").await else { return };
    let ns = cluster.namespace("op-podgroup").await;
    install_pod_group_crd(&ns).await;
    let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("scheduling.run.ai", "v2alpha2", "PodGroup"), "podgroups");
    let groups: Api<DynamicObject> = Api::namespaced_with(ns.client.clone(), &ns.name, &ar);
    let pg = |class: &str| -> DynamicObject {
        serde_json::from_value(json!({"apiVersion": "scheduling.run.ai/v2alpha2", "kind": "PodGroup",
                                      "metadata": {"name": "pg"}, "spec": {"priorityClassName": class, "minMember": 1}}))
        .unwrap()
    };
    // The discovery of a just-established CRD can lag a moment.
    let deadline = Instant::now() + T;
    while let Err(e) = groups.create(&PostParams::default(), &pg("train")).await {
        assert!(Instant::now() < deadline, "creating PodGroup: {e}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let (_op, node) = k80_pool_node(&ns).await;

    // No workloadKind label: the PodGroup's class decides. With the label: the label decides.
    let pods: Api<Pod> = ns.api();
    let mut uids = Vec::new();
    for (name, labels) in [("grouped", json!({})), ("labelled", json!({"workloadKind": "TrainingWorkload"}))] {
        let mut p = gpu_pod(name, &node, 1, None);
        p.metadata.annotations = Some([("pod-group-name".to_string(), "pg".to_string())].into());
        p.metadata.labels = serde_json::from_value(labels).unwrap();
        pods.create(&PostParams::default(), &p).await.expect("create pod");
        let p = wait_for(&pods, name, T, "pod Running", pod_running).await.expect("pod runs");
        uids.push(p.metadata.uid.unwrap());
    }
    let usage = |t: &NodeTopology, uid: &str| {
        t.gpus
            .iter()
            .find_map(|g| g.status.pod_gpu_usage_status.get(uid))
            .map(|u| (u.utilization.min, u.utilization.max, u.use_knative_utilization))
    };
    node_topology(&ns, &node, "train: 80-100", |t| {
        usage(t, &uids[0]) == Some((80, 100, false)) && usage(t, &uids[1]) == Some((80, 100, false))
    })
    .await;

    // The PodGroup changes class: re-evaluated without touching the pod.
    groups
        .patch("pg", &PatchParams::default(), &Patch::Merge(json!({"spec": {"priorityClassName": "inference"}})))
        .await
        .expect("patch PodGroup");
    node_topology(&ns, &node, "inference: Knative utilization", |t| {
        usage(t, &uids[0]) == Some((0, 0, true)) && usage(t, &uids[1]) == Some((80, 100, false))
    })
    .await;

    // Deleted: back to the default type.
    groups.delete("pg", &DeleteParams::default()).await.expect("delete PodGroup");
    node_topology(&ns, &node, "no PodGroup: 100", |t| usage(t, &uids[0]) == Some((100, 100, false))).await;
}

/// `fakegpu cluster up` runs the operator's components itself: its status-exporter serves every
/// GPU of its pool nodes under the UUIDs of their topology, and its topology-server answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_up_components_serve_its_nodes() {
    let Some(cluster) = cluster_or_skip("cluster_up_components_serve_its_nodes").await else { return };
    let run_dir = fakegpu_cluster::paths::run_dir();
    let ports = fakegpu_cluster::state::State::load(&run_dir).ok().flatten().map(|s| s.ports).unwrap_or_default();
    let (Some(&metrics), Some(&server)) = (ports.get("status-exporter"), ports.get("topology-server")) else {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "no `cluster up` operator in {} (CI starts one)", run_dir.display());
        eprintln!("SKIP cluster_up_components_serve_its_nodes: the cluster was not started by `cluster up` with its operator");
        return;
    };
    // The nodes `cluster up` put into its pool, from their topology ConfigMaps in gpu-operator.
    let cms: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), fakegpu_cluster::operator::NAMESPACE);
    let deadline = Instant::now() + T;
    let topologies = loop {
        let list = cms
            .list(&ListParams::default().labels(&format!("{}=true", fake_gpu_operator::topology::NODE_TOPOLOGY_LABEL)))
            .await
            .expect("list topologies");
        let t: Vec<NodeTopology> = list.items.iter().filter_map(components::topology).filter(|t| !t.gpus.is_empty()).collect();
        if !t.is_empty() {
            break t;
        }
        assert!(Instant::now() < deadline, "cluster up's status-updater wrote no topology");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let want: BTreeSet<String> = topologies.iter().flat_map(|t| t.gpus.iter().map(|g| g.id.clone())).collect();
    let metrics_addr: std::net::SocketAddr = format!("127.0.0.1:{metrics}").parse().unwrap();
    let deadline = Instant::now() + T;
    loop {
        let text = components::scrape(metrics_addr).unwrap_or_default();
        let served: BTreeSet<String> = text
            .lines()
            .filter(|l| l.starts_with("DCGM_FI_DEV_GPU_UTIL{"))
            .filter_map(|l| Some(l.split("UUID=\"").nth(1)?.split('"').next()?.to_string()))
            .collect();
        if want.is_subset(&served) {
            break;
        }
        assert!(Instant::now() < deadline, "exporter on :{metrics} serves {served:?}, want {want:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let topology = components::http_get(format!("127.0.0.1:{server}").parse().unwrap(), "/topology").expect("topology-server answers");
    assert!(topology.contains("NodePools"), "GET /topology: {topology}");
}
