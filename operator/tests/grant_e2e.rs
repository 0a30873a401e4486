//! One GPU identity from the kubelet to the metrics, on the real control plane (`fakegpu
//! cluster up`): the UUIDs a pod was granted are the UUIDs the status-updater records for it
//! in the node's topology ConfigMap and the UUIDs its status-exporter series carry.
//!
//! * Device plugin: the fake kubelet allocates GPUs 5 and 6 of 8 (not what first-fit picks) to
//!   a pod bound to a KWOK node in a pool; the in-process device plugin finds the pod through
//!   PodResources and annotates it; the status-updater moves the pod onto exactly those GPUs.
//! * DRA: the real scheduler allocates a ResourceClaimTemplate's GPU on a KWOK node in a pool;
//!   the claim's device is what the status-updater records and the metrics report.
//!
//! Each test runs its own status-updater, kwok-gpu-device-plugin and status-exporter processes
//! against its own namespace and pool label key (as operator_e2e.rs). Without a cluster they
//! skip (one line); under CI=true they fail.

mod components;
mod fake_kubelet;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fake_gpu_operator::kubelet::device_plugin::{self, Config};
use fake_gpu_operator::kubelet::dra::{attributes, publish, DRIVER};
use fake_gpu_operator::kubelet::grant::ApiAnnotator;
use fake_gpu_operator::kubelet::granter::GrantConfig;
use fake_gpu_operator::kubelet::pod_view::HostFiles;
use fake_gpu_operator::kubelet::{load_node, NodeFiles, ALLOCATED_GPUS_ANNOTATION};
use fake_gpu_operator::topology::{NodeTopology, TOPOLOGY_KEY};
use fakegpu_cluster_support::objects::{node_ready, pod_running, test_node};
use fakegpu_cluster_support::{cluster_or_skip, wait_for, TestNamespace};
use fakegpu_model::SimulatedNode;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use k8s_openapi::api::resource::v1::{ResourceClaim, ResourceClaimTemplate};
use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::json;

use components::{node_topology, scrape, Component};
use fake_kubelet::Kubelet;

const T: Duration = Duration::from_secs(60);
const POOL: &str = "  p:\n    gpu:\n      profile: h100\n      overrides: {device_count: 8}\n";

/// The test's operator: status-updater (node files for KWOK nodes, as `fakegpu cluster up`),
/// kwok-gpu-device-plugin (node capacity) and an all-nodes status-exporter on a free port.
struct Operator {
    key: String,
    dir: PathBuf,
    metrics: std::net::SocketAddr,
    _components: Vec<Component>,
}

impl Operator {
    async fn start(ns: &TestNamespace) -> Operator {
        let key = format!("{}.fgo.test/pool", ns.name);
        let cm: ConfigMap = serde_json::from_value(
            json!({"metadata": {"name": "topology"}, "data": {TOPOLOGY_KEY: format!("nodePoolLabelKey: {key}\nmigStrategy: none\nnodePools:\n{POOL}")}}),
        )
        .unwrap();
        ns.api::<ConfigMap>().patch("topology", &PatchParams::apply("e2e").force(), &Patch::Apply(&cm)).await.expect("topology ConfigMap");
        // Logs and node files stay for inspection: target/tmp/grant-e2e/<namespace>/.
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("grant-e2e").join(&ns.name);
        std::fs::create_dir_all(&dir).expect("test dir");
        let metrics = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
            l.local_addr().unwrap()
        };
        let nodes = dir.join("nodes");
        let components = vec![
            Component::start("status-updater", &ns.name, &dir, &["--node-dir", nodes.to_str().unwrap(), "--node-files-for-kwok"]),
            Component::start("kwok-gpu-device-plugin", &ns.name, &dir, &[]),
            Component::start("status-exporter", &ns.name, &dir, &["--listen", &metrics.to_string()]),
        ];
        Operator { key, dir, metrics, _components: components }
    }

    /// A Ready KWOK node in the pool, once the status-updater has written its node config.
    async fn pool_node(&self, ns: &TestNamespace) -> (String, NodeFiles, SimulatedNode) {
        let name = ns.prefixed("n");
        let nodes: Api<Node> = Api::all(ns.client.clone());
        nodes.create(&PostParams::default(), &test_node(&name, &ns.name, &[(self.key.as_str(), "p")])).await.expect("create node");
        ns.track::<Node>(&name);
        wait_for(&nodes, &name, T, "node Ready with 8 GPUs allocatable", |n| {
            node_ready(n)
                && n.status.as_ref().and_then(|s| s.allocatable.as_ref()).and_then(|a| a.get("nvidia.com/gpu")).map(|q| q.0.as_str())
                    == Some("8")
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        let files = NodeFiles::new(&self.dir.join("nodes"), &name);
        let deadline = Instant::now() + T;
        while !files.config().is_file() {
            assert!(Instant::now() < deadline, "status-updater wrote no {}", files.config().display());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let model = load_node(&files, &name).expect("node config");
        (name, files, model)
    }

    /// `UUID` labels of the status-exporter's series for pod `namespace/pod`, once `cond` holds.
    async fn metric_uuids(&self, namespace: &str, pod: &str, cond: impl Fn(&BTreeSet<String>) -> bool) -> BTreeSet<String> {
        let deadline = Instant::now() + T;
        loop {
            let text = scrape(self.metrics).unwrap_or_default();
            let uuids: BTreeSet<String> = text
                .lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(labels)
                .filter(|l| l.get("namespace").map(String::as_str) == Some(namespace) && l.get("pod").map(String::as_str) == Some(pod))
                .filter_map(|l| l.get("UUID").cloned())
                .collect();
            if cond(&uuids) {
                return uuids;
            }
            assert!(Instant::now() < deadline, "metrics for {namespace}/{pod}: UUIDs {uuids:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The labels of one exposition line `name{k="v",…} value`.
fn labels(line: &str) -> Option<BTreeMap<String, String>> {
    let body = &line[line.find('{')? + 1..];
    let mut out = BTreeMap::new();
    let mut chars = body.chars();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect::<String>().trim_start_matches(',').to_string();
        if key.is_empty() || key.starts_with('}') {
            return Some(out);
        }
        if chars.next() != Some('"') {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()? {
                '\\' => value.push(chars.next()?),
                '"' => break,
                c => value.push(c),
            }
        }
        out.insert(key, value);
    }
}

fn held(t: &NodeTopology, ns: &str, pod: &str) -> Vec<usize> {
    t.gpus
        .iter()
        .enumerate()
        .filter(|(_, g)| g.status.allocated_by.pod == pod && g.status.allocated_by.namespace == ns)
        .map(|(i, _)| i)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_plugin_grant_is_what_the_topology_and_metrics_record() {
    let Some(cluster) = cluster_or_skip("device_plugin_grant_is_what_the_topology_and_metrics_record").await else { return };
    let ns = cluster.namespace("grant-dp").await;
    let op = Operator::start(&ns).await;
    let (node, files, model) = op.pool_node(&ns).await;
    let uuids: Vec<String> = model.gpus.iter().map(|g| g.uuid.clone()).collect();

    // A 2-GPU pod bound to the node: without a grant the status-updater records first-fit 0, 1.
    let pods: Api<Pod> = ns.api();
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "train"},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node},
            "tolerations": [{"operator": "Exists"}],
            "containers": [{"name": "main", "image": "registry.invalid/fake:1", "resources": {"limits": {"nvidia.com/gpu": "2"}}}]
        }
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.expect("create pod");
    wait_for(&pods, "train", T, "pod Running", pod_running).await.expect("pod runs");
    node_topology(&ns, &node, "first-fit allocation", |t| held(t, &ns.name, "train") == [0, 1]).await;

    // The node's kubelet (fake) with the device plugin (in-process, reporting through the API).
    // Sockets under /tmp: unix socket paths are limited to 107 bytes.
    let ktmp = tempfile::tempdir().unwrap();
    let kdir = ktmp.path();
    let dp_dir = kdir.join("device-plugins");
    std::fs::create_dir_all(&dp_dir).unwrap();
    let mut kubelet = Kubelet::start(&dp_dir);
    let socket = kdir.join("pod-resources/kubelet.sock");
    let _pod_resources = fake_kubelet::serve_pod_resources(&socket, kubelet.devices.clone());
    let config = Config {
        device_plugins_dir: dp_dir.clone(),
        resource_name: "nvidia.com/gpu".into(),
        socket_name: device_plugin::PLUGIN_SOCKET.into(),
        files: HostFiles { nvml_lib: None, cuda_lib: None, nvidia_smi: None, node_dir: files.dir.clone(), node_name: node.clone() },
        state_path: files.state(),
        health_interval: Duration::from_millis(500),
        grants: Some(GrantConfig {
            pod_resources_socket: socket,
            annotator: Arc::new(ApiAnnotator(ns.client.clone())),
            resync: Duration::from_secs(30),
            wait: Duration::from_secs(30),
        }),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let plugin = tokio::spawn(device_plugin::run(config, Arc::new(model), async {
        let _ = stopped.await;
    }));
    let reg = kubelet.next_registration(Duration::from_secs(10)).await.expect("device plugin registers");
    let mut client = kubelet.plugin(&reg.endpoint).await;

    // GPUs 5 and 6 for container main of the pod.
    let granted = vec![uuids[5].clone(), uuids[6].clone()];
    kubelet.allocate(&mut client, "nvidia.com/gpu", (&ns.name, "train", "main"), &granted).await.expect("Allocate");

    let annotated = wait_for(&pods, "train", T, "grant annotation", |p: &Pod| {
        p.metadata.annotations.as_ref().and_then(|a| a.get(ALLOCATED_GPUS_ANNOTATION)).is_some()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(annotated.metadata.annotations.unwrap()[ALLOCATED_GPUS_ANNOTATION], granted.join(","));

    let t = node_topology(&ns, &node, "the pod on GPUs 5 and 6", |t| held(t, &ns.name, "train") == [5, 6]).await;
    let recorded: BTreeSet<String> = held(&t, &ns.name, "train").into_iter().map(|i| t.gpus[i].id.clone()).collect();
    let granted_set: BTreeSet<String> = granted.iter().cloned().collect();
    assert_eq!(recorded, granted_set, "topology records the granted UUIDs");
    assert_eq!(t.gpus[5].status.allocated_by.container, "main");

    let reported = op.metric_uuids(&ns.name, "train", |u| u == &granted_set).await;
    assert_eq!(reported, granted_set, "metrics report the granted UUIDs");

    let _ = stop.send(());
    plugin.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dra_claim_device_is_what_the_topology_and_metrics_record() {
    let Some(cluster) = cluster_or_skip("dra_claim_device_is_what_the_topology_and_metrics_record").await else { return };
    let ns = cluster.namespace("grant-dra").await;
    let op = Operator::start(&ns).await;
    let (node, _files, model) = op.pool_node(&ns).await;

    // The node's GPUs as DRA devices, from the node config the status-updater wrote.
    let dra = fake_gpu_operator::resource_api::DraApi::new(ns.client.clone()).await.expect("DRA version discovery");
    publish::ensure_device_class(&dra).await.expect("DeviceClass");
    publish::publish_node(&dra, &node, attributes::node_devices(&model)).await.expect("ResourceSlice");

    let templates: Api<ResourceClaimTemplate> = ns.api();
    let template: ResourceClaimTemplate = serde_json::from_value(json!({
        "metadata": {"name": "one"},
        "spec": {"spec": {"devices": {"requests": [{"name": "gpu", "exactly": {"deviceClassName": DRIVER, "allocationMode": "ExactCount", "count": 1}}]}}}
    }))
    .unwrap();
    templates.create(&PostParams::default(), &template).await.expect("ResourceClaimTemplate");
    let pods: Api<Pod> = ns.api();
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "dra"},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node},
            "tolerations": [{"operator": "Exists"}],
            "resourceClaims": [{"name": "gpu", "resourceClaimTemplateName": "one"}],
            "containers": [{"name": "c", "image": "registry.invalid/fake:1", "resources": {"claims": [{"name": "gpu"}]}}]
        }
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.expect("create pod");

    // The scheduler's choice: the claim's one device, a GPU of this node.
    let p = wait_for(&pods, "dra", T, "scheduled with its claim", |p: &Pod| {
        p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some()
            && p.status.as_ref().and_then(|s| s.resource_claim_statuses.as_ref()).is_some_and(|c| c.iter().any(|c| c.name == "gpu"))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.spec.unwrap().node_name.as_deref(), Some(node.as_str()));
    let claim_name =
        p.status.unwrap().resource_claim_statuses.unwrap().into_iter().find(|c| c.name == "gpu").unwrap().resource_claim_name.unwrap();
    let claims: Api<ResourceClaim> = ns.api();
    let claim = wait_for(&claims, &claim_name, T, "allocated and reserved for the pod", |c: &ResourceClaim| {
        c.status
            .as_ref()
            .is_some_and(|s| s.allocation.is_some() && s.reserved_for.as_ref().is_some_and(|r| r.iter().any(|r| r.name == "dra")))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let results = claim.status.unwrap().allocation.unwrap().devices.unwrap().results.unwrap_or_default();
    assert_eq!(results.len(), 1);
    assert_eq!((results[0].driver.as_str(), results[0].pool.as_str()), (DRIVER, node.as_str()));
    let uuid = model
        .gpus
        .iter()
        .find(|g| attributes::device_name(&g.uuid) == results[0].device)
        .unwrap_or_else(|| panic!("device {} is not a GPU of {node}", results[0].device))
        .uuid
        .clone();

    let t = node_topology(&ns, &node, "the DRA pod recorded", |t| held(t, &ns.name, "dra").len() == 1).await;
    let i = held(&t, &ns.name, "dra")[0];
    assert_eq!(t.gpus[i].id, uuid, "topology records the claim's device");
    assert_eq!(t.gpus[i].status.allocated_by.container, "c");

    let want = BTreeSet::from([uuid]);
    let reported = op.metric_uuids(&ns.name, "dra", |u| !u.is_empty()).await;
    assert_eq!(reported, want, "metrics report the claim's device");
}
