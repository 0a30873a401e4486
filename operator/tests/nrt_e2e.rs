//! NodeResourceTopology on the real control plane, with the chart's CRD installed: the
//! status-updater (`--node-resource-topology`, the chart's `NODE_RESOURCE_TOPOLOGY_ENABLED`)
//! publishes `topology.node.k8s.io/v1alpha2` objects for the nodes of a pool with a `numa`
//! block — zones, GPUs, CPU and memory per zone from the node's allocatable, costs, policies,
//! an owner reference to the Node — a GPU pod lowers its zone's available GPUs, and the object
//! goes when the node leaves the pool. Skips without a cluster (fails under CI=true).

mod components;

use std::time::{Duration, Instant};

use components::Component;
use fake_gpu_operator::nrt;
use fake_gpu_operator::topology::TOPOLOGY_KEY;
use fakegpu_cluster_support::objects::{node_ready, pod_running, test_node};
use fakegpu_cluster_support::{binaries_or_skip, cluster_or_skip, wait_for};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DynamicObject, Patch, PatchParams, PostParams};
use kube::Api;
use serde::Deserialize;
use serde_json::json;

const T: Duration = Duration::from_secs(60);

/// The chart's CRD, rendered by helm.
fn chart_crd(helm: &std::path::Path) -> CustomResourceDefinition {
    let chart = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../helm/fake-gpu-operator");
    let out = std::process::Command::new(helm)
        .args(["template", "x"])
        .arg(&chart)
        .args(["-s", "templates/noderesourcetopology-crd.yaml", "--set", "statusUpdater.nodeResourceTopology.enabled=true"])
        .output()
        .expect("run helm");
    assert!(out.status.success(), "helm template: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let doc = serde_yaml::Deserializer::from_str(&text).map(|d| serde_json::Value::deserialize(d).unwrap()).find(|d| !d.is_null()).unwrap();
    serde_json::from_value(doc).unwrap()
}

async fn nrt_of(api: &Api<DynamicObject>, node: &str, what: &str, cond: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = Instant::now() + T;
    loop {
        if let Ok(Some(o)) = api.get_opt(node).await {
            let v = serde_json::to_value(&o).unwrap();
            if cond(&v) {
                return v;
            }
        }
        assert!(Instant::now() < deadline, "NodeResourceTopology {node}: {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn gpu(v: &serde_json::Value, zone: usize, field: &str) -> String {
    v["zones"][zone]["resources"][0][field].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numa_pool_nodes_get_node_resource_topology() {
    let Some(cluster) = cluster_or_skip("numa_pool_nodes_get_node_resource_topology").await else { return };
    let Some(bin) = binaries_or_skip("numa_pool_nodes_get_node_resource_topology") else { return };
    let client = cluster.client.clone();
    let ns = cluster.namespace("nrt").await;
    let log_dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("nrt-e2e").join(&ns.name);
    std::fs::create_dir_all(&log_dir).unwrap();

    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = chart_crd(&bin.join("helm"));
    crds.patch(crd.metadata.name.as_deref().unwrap(), &PatchParams::apply("nrt-e2e").force(), &Patch::Apply(&crd))
        .await
        .expect("install the chart's CRD");
    let deadline = Instant::now() + T;
    while !client
        .list_api_group_resources("topology.node.k8s.io/v1alpha2")
        .await
        .is_ok_and(|l| l.resources.iter().any(|r| r.name == nrt::PLURAL))
    {
        assert!(Instant::now() < deadline, "CRD not served");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let key = format!("{}.fgo.test/pool", ns.name);
    let topology = format!(
        "nodePoolLabelKey: {key}\nmigStrategy: none\nnodePools:\n  numa:\n    gpu:\n      profile: a100-80gb\n      overrides: {{device_count: 4}}\n    numa:\n      zones: 2\n      topologyManagerScope: pod\n"
    );
    let cms: Api<ConfigMap> = ns.api();
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "topology"}, "data": {TOPOLOGY_KEY: topology}})).unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    let _updater = Component::start(
        "status-updater",
        &ns.name,
        &log_dir,
        &["--no-node-files", "--node-resource-topology", "--node-resource-topology-seconds", "1"],
    );
    let _capacity = Component::start("kwok-gpu-device-plugin", &ns.name, &log_dir, &[]);

    let nodes: Api<Node> = Api::all(client.clone());
    let name = ns.prefixed("n");
    nodes.create(&PostParams::default(), &test_node(&name, &ns.name, &[(key.as_str(), "numa")])).await.unwrap();
    ns.track::<Node>(&name);
    let node = wait_for(&nodes, &name, T, "Ready", node_ready).await.unwrap();

    let api: Api<DynamicObject> = Api::all_with(client.clone(), &nrt::resource());
    let v = nrt_of(&api, &name, "2 zones", |v| v["zones"].as_array().is_some_and(|z| z.len() == 2)).await;
    assert_eq!(v["topologyPolicies"], json!(["SingleNUMANodePodLevel"]));
    assert_eq!(
        v["attributes"],
        json!([{"name": "topologyManagerPolicy", "value": "single-numa-node"}, {"name": "topologyManagerScope", "value": "pod"}])
    );
    let owner = &v["metadata"]["ownerReferences"][0];
    assert_eq!((owner["kind"].as_str(), owner["uid"].as_str()), (Some("Node"), node.metadata.uid.as_deref()));
    // The KWOK node has 32 CPUs and 256Gi: 16 and 128Gi per zone; 4 GPUs: 2 per zone.
    for z in 0..2 {
        assert_eq!((gpu(&v, z, "capacity"), gpu(&v, z, "available")), ("2".into(), "2".into()), "{v}");
        assert_eq!(v["zones"][z]["resources"][1], json!({"name": "cpu", "capacity": "16", "allocatable": "16", "available": "16"}));
        assert_eq!(v["zones"][z]["resources"][2]["capacity"], "128Gi");
    }
    assert_eq!(v["zones"][0]["costs"], json!([{"name": "node-0", "value": 10}, {"name": "node-1", "value": 21}]));

    // A GPU pod takes the lowest free GPU (index 0, zone node-0).
    let pods: Api<Pod> = ns.api();
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"nodeSelector": {"kubernetes.io/hostname": name},
        "containers": [{"name": "c", "image": "registry.invalid/x:1", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}}))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    wait_for(&pods, "p", T, "Running", pod_running).await.unwrap();
    nrt_of(&api, &name, "zone node-0 has 1 GPU available", |v| gpu(v, 0, "available") == "1" && gpu(v, 1, "available") == "2").await;

    // Out of the pool: the object goes.
    nodes.patch(&name, &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {key.as_str(): null}}}))).await.unwrap();
    let deadline = Instant::now() + T;
    while api.get_opt(&name).await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "NodeResourceTopology of a node out of the pool remains");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
