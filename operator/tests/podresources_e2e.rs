//! The fake kubelet podresources socket on the real control plane: the node-local
//! status-exporter (`--pod-resources`, the chart's `POD_RESOURCES_ENABLED`) of a node in a pool
//! with a `numa` block answers `v1.PodResourcesLister/List` over its unix socket with the pod
//! the status-updater allocated there — its GPUs per zone, CPU ids and memory split by its
//! requests weighted by its GPUs per zone — writes the sysfs cpulists, and answers nothing once
//! the node leaves the pool. Skips without a cluster (fails under CI=true).

mod components;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use components::{node_topology, Component};
use fake_gpu_operator::kubelet::proto::podresources as pb;
use fake_gpu_operator::topology::TOPOLOGY_KEY;
use fakegpu_cluster_support::objects::{node_ready, pod_running, test_node};
use fakegpu_cluster_support::{cluster_or_skip, wait_for};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::json;

const T: Duration = Duration::from_secs(60);

/// `List` over `socket` until `cond` holds.
async fn list_until(socket: &Path, what: &str, cond: impl Fn(&pb::ListPodResourcesResponse) -> bool) -> pb::ListPodResourcesResponse {
    let deadline = Instant::now() + T;
    loop {
        let last = match fake_gpu_operator::kubelet::podresources::list(socket).await {
            Ok(r) if cond(&r) => return r,
            Ok(r) => format!("{r:?}"),
            Err(e) => e.to_string(),
        };
        assert!(Instant::now() < deadline, "podresources List: {what}; last: {last}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numa_pool_node_answers_podresources_list() {
    let Some(cluster) = cluster_or_skip("numa_pool_node_answers_podresources_list").await else { return };
    let client = cluster.client.clone();
    let ns = cluster.namespace("podres").await;
    // Logs, socket and sysfs stay for inspection: target/tmp/podresources-e2e/<namespace>/.
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("podresources-e2e").join(&ns.name);
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("pod-resources/kubelet.sock");
    let sys = dir.join("sys");

    let key = format!("{}.fgo.test/pool", ns.name);
    let topology = format!(
        "nodePoolLabelKey: {key}\nmigStrategy: none\nnodePools:\n  numa:\n    gpu:\n      profile: a100-80gb\n      overrides: {{device_count: 4}}\n    numa:\n      zones: 2\n"
    );
    let cms: Api<ConfigMap> = ns.api();
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "topology"}, "data": {TOPOLOGY_KEY: topology}})).unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();

    let node = ns.prefixed("n");
    let metrics = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let _components = [
        Component::start("status-updater", &ns.name, &dir, &["--no-node-files"]),
        Component::start("kwok-gpu-device-plugin", &ns.name, &dir, &[]),
        Component::start(
            "status-exporter",
            &ns.name,
            &dir,
            &[
                "--node",
                &node,
                "--listen",
                &metrics.to_string(),
                "--pod-resources",
                "--pod-resources-socket",
                socket.to_str().unwrap(),
                "--pod-resources-sys-root",
                sys.to_str().unwrap(),
                "--pod-resources-seconds",
                "1",
            ],
        ),
    ];

    let nodes: Api<Node> = Api::all(client.clone());
    nodes.create(&PostParams::default(), &test_node(&node, &ns.name, &[(key.as_str(), "numa")])).await.unwrap();
    ns.track::<Node>(&node);
    wait_for(&nodes, &node, T, "Ready", node_ready).await.unwrap();

    // No pod yet: the socket answers an empty list; the KWOK node's 32 CPUs are 16 per zone.
    list_until(&socket, "empty", |r| r.pod_resources.is_empty()).await;
    let cpulist = |z: usize| std::fs::read_to_string(sys.join(format!("devices/system/node/node{z}/cpulist"))).unwrap_or_default();
    let deadline = Instant::now() + T;
    while (cpulist(0), cpulist(1)) != ("0-15\n".into(), "16-31\n".into()) {
        assert!(Instant::now() < deadline, "sysfs cpulists: {:?}", (cpulist(0), cpulist(1)));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Three GPUs (first fit: 0, 1 in zone 0 and 2 in zone 1), 3 CPUs and 3Gi.
    let pods: Api<Pod> = ns.api();
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"nodeSelector": {"kubernetes.io/hostname": node},
        "containers": [{"name": "c", "image": "registry.invalid/x:1", "resources": {
            "limits": {"nvidia.com/gpu": "3"}, "requests": {"cpu": "3", "memory": "3Gi"}}}]}}))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    wait_for(&pods, "p", T, "Running", pod_running).await.unwrap();
    let topo =
        node_topology(&ns, &node, "3 GPUs held by p", |t| t.gpus.iter().filter(|g| g.status.allocated_by.pod == "p").count() == 3).await;
    let held: Vec<String> = topo.gpus.iter().filter(|g| g.status.allocated_by.pod == "p").map(|g| g.id.clone()).collect();
    assert_eq!(held, topo.gpus[..3].iter().map(|g| g.id.clone()).collect::<Vec<_>>(), "first fit");

    let r = list_until(&socket, "pod p listed", |r| r.pod_resources.iter().any(|p| p.name == "p")).await;
    assert_eq!(r.pod_resources.len(), 1, "{r:?}");
    let p = &r.pod_resources[0];
    assert_eq!(p.namespace, ns.name);
    assert_eq!(p.containers.len(), 1);
    let c = &p.containers[0];
    let devices: Vec<(Vec<String>, Vec<i64>)> =
        c.devices.iter().map(|d| (d.device_ids.clone(), d.topology.as_ref().unwrap().nodes.iter().map(|n| n.id).collect())).collect();
    assert_eq!(devices, vec![(held[..2].to_vec(), vec![0]), (held[2..].to_vec(), vec![1])]);
    assert!(c.devices.iter().all(|d| d.resource_name == "nvidia.com/gpu"));
    assert_eq!(c.cpu_ids, vec![0, 1, 16]);
    let memory: Vec<(u64, i64)> = c.memory.iter().map(|m| (m.size, m.topology.as_ref().unwrap().nodes[0].id)).collect();
    assert_eq!(memory, vec![(2 << 30, 0), (1 << 30, 1)]);

    // Out of the pool: nothing to answer.
    nodes.patch(&node, &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {key.as_str(): null}}}))).await.unwrap();
    list_until(&socket, "empty once the node left the pool", |r| r.pod_resources.is_empty()).await;
}
