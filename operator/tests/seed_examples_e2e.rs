//! Upstream's examples, applied as written (operator/tests/seed/*.yaml), against the operator
//! `fakegpu cluster up` runs (namespace `gpu-operator`, the default pool label, the chart's
//! default pool: 2 × Tesla-K80), checking what upstream says happens:
//!
//! * KWOK + DRA: a KWOK node from the manifest (pool label, `type: kwok`, the KWOK annotation
//!   and taint; no profile label) gets a `gpu.nvidia.com` ResourceSlice from kwok-dra-plugin
//!   whose devices are its pool's GPUs (the UUIDs of its topology ConfigMap); the example's
//!   ResourceClaimTemplate and pod are allocated one of them and the allocation is recorded.
//! * the device-plugin pod: `nvidia.com/gpu: 1` is scheduled on a pool node and holds one GPU
//!   in that node's topology, which the metrics name.
//! * the utilization annotation: `50-80` is the recorded range and the metric stays in it.
//! * the inference pod: Knative utilization recorded, its GPU exported (0 without Prometheus).
//!
//! One test, examples in sequence: the pods share the pool nodes' GPUs. Skips without a
//! cluster; under CI=true a missing cluster or `cluster up` operator fails.

mod components;

use std::time::{Duration, Instant};

use components::Component;
use fake_gpu_operator::kubelet::dra::DRIVER;
use fake_gpu_operator::topology::NodeTopology;
use fakegpu_cluster_support::objects::pod_running;
use fakegpu_cluster_support::{cluster_or_skip, wait_for, TestNamespace};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use k8s_openapi::api::resource::v1::{ResourceClaim, ResourceClaimTemplate, ResourceSlice};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::Api;
use serde::de::DeserializeOwned;
use serde::Deserialize;

const T: Duration = Duration::from_secs(60);
const OPERATOR_NS: &str = fakegpu_cluster::operator::NAMESPACE;

/// The documents of a seed file.
fn seed(file: &str) -> Vec<serde_json::Value> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/seed").join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| serde_json::Value::deserialize(doc).unwrap_or_else(|e| panic!("{file}: {e}")))
        .collect()
}

/// The one document of `kind` in a seed file.
fn seed_doc<K: DeserializeOwned>(file: &str, kind: &str) -> K {
    let doc = seed(file).into_iter().find(|d| d["kind"] == kind).unwrap_or_else(|| panic!("{file} has no {kind}"));
    serde_json::from_value(doc).unwrap_or_else(|e| panic!("{file} {kind}: {e}"))
}

async fn topology_of(client: &kube::Client, node: &str, what: &str, cond: impl Fn(&NodeTopology) -> bool) -> NodeTopology {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), OPERATOR_NS);
    let cm = wait_for(&cms, &format!("topology-{node}"), T, what, |c| components::topology(c).is_some_and(|t| cond(&t)))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    components::topology(&cm).unwrap()
}

/// Creates a seed pod in `ns` and waits until it is Running on a node; returns (pod, node).
async fn run_pod(ns: &TestNamespace, file: &str) -> (Pod, String) {
    let pods: Api<Pod> = ns.api();
    let pod: Pod = seed_doc(file, "Pod");
    let name = pod.metadata.name.clone().unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap_or_else(|e| panic!("create {file}: {e}"));
    let p = wait_for(&pods, &name, T, "Running", pod_running).await.unwrap_or_else(|e| panic!("{file}: {e}"));
    let node = p.spec.as_ref().unwrap().node_name.clone().unwrap();
    (p, node)
}

async fn delete_pod(ns: &TestNamespace, name: &str) {
    let pods: Api<Pod> = ns.api();
    let _ = pods.delete(name, &DeleteParams::default().grace_period(0)).await;
    let deadline = Instant::now() + T;
    while pods.get_opt(name).await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "pod {name} not deleted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The GPU indices `pod` holds in `t`.
fn held(t: &NodeTopology, pod: &str) -> Vec<usize> {
    t.gpus.iter().enumerate().filter(|(_, g)| g.status.allocated_by.pod == pod).map(|(i, _)| i).collect()
}

/// `DCGM_FI_DEV_GPU_UTIL` samples naming `pod`: (UUID, value).
fn util_samples(metrics: &str, pod: &str) -> Vec<(String, f64)> {
    let label = format!("pod=\"{pod}\"");
    metrics
        .lines()
        .filter(|l| l.starts_with("DCGM_FI_DEV_GPU_UTIL{") && l.contains(&label))
        .filter_map(|l| {
            let uuid = l.split("UUID=\"").nth(1)?.split('"').next()?.to_string();
            let value = l.rsplit(' ').next()?.parse().ok()?;
            Some((uuid, value))
        })
        .collect()
}

/// Waits until the exporter serves `pod` on `uuid`; returns its utilization samples.
async fn exported(metrics: std::net::SocketAddr, pod: &str, uuid: &str) -> Vec<f64> {
    let deadline = Instant::now() + T;
    loop {
        let text = components::scrape(metrics).unwrap_or_default();
        let s: Vec<f64> = util_samples(&text, pod).into_iter().filter(|(u, _)| u == uuid).map(|(_, v)| v).collect();
        if !s.is_empty() {
            return s;
        }
        assert!(Instant::now() < deadline, "exporter does not name {pod} on {uuid}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_examples_on_the_installed_operator() {
    let Some(cluster) = cluster_or_skip("seed_examples_on_the_installed_operator").await else { return };
    let run_dir = fakegpu_cluster::paths::run_dir();
    let ports = fakegpu_cluster::state::State::load(&run_dir).ok().flatten().map(|s| s.ports).unwrap_or_default();
    let Some(&metrics_port) = ports.get("status-exporter") else {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "no `cluster up` operator in {} (CI starts one)", run_dir.display());
        eprintln!("SKIP seed_examples_on_the_installed_operator: the cluster was not started by `cluster up` with its operator");
        return;
    };
    let metrics: std::net::SocketAddr = format!("127.0.0.1:{metrics_port}").parse().unwrap();
    let client = cluster.client.clone();
    let ns = cluster.namespace("seed").await;
    let log_dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("seed-e2e").join(&ns.name);
    std::fs::create_dir_all(&log_dir).unwrap();

    // ---- KWOK + DRA: the node as written, kwok-dra-plugin as the chart runs it.
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = seed_doc("kwok-node.yaml", "Node");
    let node_name = node.metadata.name.clone().unwrap();
    let _ = nodes.delete(&node_name, &DeleteParams::default()).await;
    wait_gone(&nodes, &node_name).await;
    nodes.create(&PostParams::default(), &node).await.expect("create the seed's KWOK node");
    ns.track::<Node>(&node_name);
    let t = topology_of(&client, &node_name, "the pool's GPUs", |t| !t.gpus.is_empty()).await;
    assert_eq!(t.gpus.len(), 2, "pool default: 2 GPUs");
    assert_eq!(t.gpu_product, "Tesla-K80");
    let uuids: Vec<String> = t.gpus.iter().map(|g| g.id.clone()).collect();

    let mut plugin = Component::start("kwok-dra-plugin", OPERATOR_NS, &log_dir, &["--resync-seconds", "5"]);
    let slices: Api<ResourceSlice> = Api::all(client.clone());
    let deadline = Instant::now() + T;
    let slice = loop {
        let s = slices.list(&ListParams::default().fields(&format!("spec.nodeName={node_name}"))).await.unwrap().items;
        if let Some(s) = s.into_iter().find(|s| s.spec.driver == DRIVER) {
            break s;
        }
        assert!(Instant::now() < deadline, "no ResourceSlice for {node_name}; kwok-dra-plugin log:\n{}", plugin.log());
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(slice.spec.pool.name, node_name, "pool = node name");
    assert_eq!(slice.metadata.name.as_deref(), Some(format!("kwok-{node_name}-gpu").as_str()), "upstream's slice name");
    let devices = slice.spec.devices.clone().unwrap_or_default();
    let mut names: Vec<String> = devices.iter().map(|d| d.name.clone()).collect();
    names.sort();
    let mut want: Vec<String> = uuids.iter().map(|u| u.to_lowercase()).collect();
    want.sort();
    assert_eq!(names, want, "devices are the node's topology GPUs");
    for d in &devices {
        let a = d.attributes.as_ref().unwrap();
        let uuid = a["uuid"].string.clone().unwrap();
        assert!(uuid.starts_with("GPU-") && uuids.contains(&uuid), "uuid attribute {uuid}");
        assert_eq!(a["productName"].string.as_deref(), Some("Tesla K80"), "{a:?}");
    }

    let templates: Api<ResourceClaimTemplate> = ns.api();
    templates.create(&PostParams::default(), &seed_doc("dra-pod.yaml", "ResourceClaimTemplate")).await.unwrap();
    let (pod, on) = run_pod(&ns, "dra-pod.yaml").await;
    let claim_name = pod
        .status
        .as_ref()
        .and_then(|s| s.resource_claim_statuses.as_ref())
        .and_then(|c| c.iter().find(|c| c.name == "gpu")?.resource_claim_name.clone())
        .expect("claim created from the template");
    let claims: Api<ResourceClaim> = ns.api();
    let claim =
        wait_for(&claims, &claim_name, T, "allocated", |c: &ResourceClaim| c.status.as_ref().and_then(|s| s.allocation.as_ref()).is_some())
            .await
            .unwrap();
    let results = claim.status.unwrap().allocation.unwrap().devices.unwrap().results.unwrap();
    assert_eq!(results.len(), 1);
    assert_eq!((results[0].driver.as_str(), results[0].pool.as_str()), (DRIVER, on.as_str()));
    let device = results[0].device.clone();
    let t = topology_of(&client, &on, "the DRA pod recorded", |t| held(t, "dra-gpu-pod").len() == 1).await;
    assert_eq!(t.gpus[held(&t, "dra-gpu-pod")[0]].id.to_lowercase(), device, "the recorded GPU is the allocated device");
    delete_pod(&ns, "dra-gpu-pod").await;
    plugin.kill();

    // ---- The device-plugin pod.
    let (_, on) = run_pod(&ns, "gpu-pod.yaml").await;
    let t = topology_of(&client, &on, "gpu-pod holds one GPU", |t| held(t, "gpu-pod").len() == 1).await;
    let gpu = &t.gpus[held(&t, "gpu-pod")[0]];
    let usage = gpu.status.pod_gpu_usage_status.values().next().expect("usage entry");
    assert_eq!((usage.utilization.min, usage.utilization.max, usage.use_knative_utilization), (100, 100, false), "default: 100 %");
    let s = exported(metrics, "gpu-pod", &gpu.id).await;
    assert!(s.iter().all(|v| *v == 100.0), "{s:?}");
    delete_pod(&ns, "gpu-pod").await;

    // ---- The utilization annotation.
    let (_, on) = run_pod(&ns, "utilization-pod.yaml").await;
    let pod = "gpu-pod-utilization";
    let t = topology_of(&client, &on, "utilization pod recorded", |t| held(t, pod).len() == 1).await;
    let gpu = &t.gpus[held(&t, pod)[0]];
    let usage = gpu.status.pod_gpu_usage_status.values().next().expect("usage entry");
    assert_eq!((usage.utilization.min, usage.utilization.max), (50, 80));
    let s = exported(metrics, pod, &gpu.id).await;
    assert!(s.iter().all(|v| (50.0..=80.0).contains(v)), "{s:?}");
    delete_pod(&ns, pod).await;

    // ---- The inference pod.
    let (_, on) = run_pod(&ns, "inference-pod.yaml").await;
    let pod = "inference-pod";
    let t = topology_of(&client, &on, "inference pod recorded", |t| held(t, pod).len() == 1).await;
    let gpu = &t.gpus[held(&t, pod)[0]];
    let usage = gpu.status.pod_gpu_usage_status.values().next().expect("usage entry");
    assert!(usage.use_knative_utilization, "{usage:?}");
    let s = exported(metrics, pod, &gpu.id).await;
    assert!(s.iter().all(|v| *v == 0.0), "no Prometheus, no requests: {s:?}");
    delete_pod(&ns, pod).await;
    // The node leaves with the test (tracked); its slice goes with it (owner reference).
}

async fn wait_gone(nodes: &Api<Node>, name: &str) {
    let deadline = Instant::now() + T;
    while nodes.get_opt(name).await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "node {name} not deleted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
