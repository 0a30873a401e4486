//! The mock backend's cluster side against the real control plane: the status-updater keeps the
//! ConfigMap and DaemonSet `nvml-mock-<pool>` of a `gpu.backend: mock` pool (upstream's labels,
//! config-hash annotation, node selector), rolls the config hash when the pool's profile
//! changes, follows a changed `nodePoolLabelKey`, recreates what is deleted by hand, and deletes
//! both when the pool is switched to `fake` or removed, leaving nothing with the managed labels.
//! The DaemonSet controller schedules its pod on the pool's KWOK node only. The objects are
//! owned by the topology ConfigMap: deleting it (`helm uninstall`) with the status-updater
//! already gone has the garbage collector delete them.
//!
//! Own namespace, pool label key and status-updater, so it runs beside the other tests.
//! Without a cluster it skips (one line); under CI=true it fails.

mod components;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use components::Component;
use fake_gpu_operator::nvml_mock_core::{managed_selector, CONFIG_HASH_ANNOTATION};
use fake_gpu_operator::topology::TOPOLOGY_KEY;
use fakegpu_cluster_support::objects::{node_ready, test_node};
use fakegpu_cluster_support::wait::wait_for_list;
use fakegpu_cluster_support::{cluster_or_skip, wait_for, TestNamespace};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::json;

const T: Duration = Duration::from_secs(60);

async fn set_topology(ns: &TestNamespace, text: &str) {
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "topology"}, "data": {TOPOLOGY_KEY: text}})).unwrap();
    let cms: Api<ConfigMap> = ns.api();
    cms.patch("topology", &PatchParams::apply("e2e").force(), &Patch::Apply(&cm)).await.expect("topology ConfigMap");
}

fn config_hash(ds: &DaemonSet) -> Option<String> {
    ds.spec.template.metadata.as_ref()?.annotations.as_ref()?.get(CONFIG_HASH_ANNOTATION).cloned()
}

fn node_selector(ds: &DaemonSet) -> Option<BTreeMap<String, String>> {
    ds.spec.template.spec.as_ref()?.node_selector.clone()
}

fn names<K: kube::Resource>(items: &[K]) -> Vec<String> {
    let mut n: Vec<String> = items.iter().map(|o| o.meta().name.clone().unwrap_or_default()).collect();
    n.sort();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_pools_get_nvml_mock_objects_that_follow_the_config() {
    let Some(cluster) = cluster_or_skip("mock_pools_get_nvml_mock_objects_that_follow_the_config").await else { return };
    let ns = cluster.namespace("nvml-mock").await;
    let key = format!("{}.fgo.test/pool", ns.name);
    let pools = |h100: &str, key: &str| {
        format!(
            "nodePoolLabelKey: {key}\nnodePools:\n  h100:\n    gpu: {h100}\n  l40s:\n    gpu: {{backend: mock, profile: l40s}}\n  plain:\n    gpu: {{backend: fake, profile: a100-80gb}}\n"
        )
    };
    set_topology(&ns, &pools("{backend: mock, profile: h100, overrides: {device_count: 4}}", &key)).await;
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("nvml-mock-e2e").join(&ns.name);
    std::fs::create_dir_all(&dir).expect("log dir");
    let mut updater = Component::start(
        "status-updater",
        &ns.name,
        &dir,
        &["--no-node-files", "--nvml-mock-image", "fgo-test:1", "--nvml-mock-resync-seconds", "2"],
    );

    // A node of the h100 pool, one of the fake pool.
    let nodes: Api<Node> = Api::all(ns.client.clone());
    let (mock_node, fake_node) = (ns.prefixed("mock"), ns.prefixed("fake"));
    for (node, pool) in [(&mock_node, "h100"), (&fake_node, "plain")] {
        nodes.create(&PostParams::default(), &test_node(node, &ns.name, &[(key.as_str(), pool)])).await.expect("create node");
        ns.track::<Node>(node);
        wait_for(&nodes, node, T, "node Ready", node_ready).await.expect("node Ready");
    }

    let cms: Api<ConfigMap> = ns.api();
    let dss: Api<DaemonSet> = ns.api();
    let managed = ListParams::default().labels(&managed_selector());
    let both = wait_for_list(&dss, &managed, T, "two nvml-mock DaemonSets", |l| l.len() == 2).await.unwrap_or_else(|e| {
        panic!("{e}\nstatus-updater log:\n{}", updater.log());
    });
    assert_eq!(names(&both), ["nvml-mock-h100", "nvml-mock-l40s"], "mock pools only");
    let cm = wait_for(&cms, "nvml-mock-h100", T, "ConfigMap nvml-mock-h100", |_| true).await.unwrap();
    let ds = dss.get("nvml-mock-h100").await.unwrap();
    let want_labels = BTreeMap::from([
        ("app.kubernetes.io/managed-by".to_string(), "fake-gpu-operator".to_string()),
        ("fake-gpu-operator/component".to_string(), "nvml-mock".to_string()),
        ("fake-gpu-operator/pool".to_string(), "h100".to_string()),
    ]);
    assert_eq!(cm.metadata.labels.as_ref(), Some(&want_labels));
    assert_eq!(ds.metadata.labels.as_ref(), Some(&want_labels));
    assert_eq!(ds.spec.selector.match_labels.as_ref(), Some(&want_labels));
    assert_eq!(node_selector(&ds), Some(BTreeMap::from([(key.clone(), "h100".to_string())])));
    let container = &ds.spec.template.spec.as_ref().unwrap().containers[0];
    assert_eq!(container.image.as_deref(), Some("fgo-test:1"));
    assert_eq!(container.security_context.as_ref().and_then(|s| s.privileged), Some(true));
    let topology_uid = cms.get("topology").await.unwrap().metadata.uid;
    for owners in [&ds.metadata.owner_references, &cm.metadata.owner_references] {
        let o = &owners.as_ref().expect("an owner")[0];
        assert_eq!((o.kind.as_str(), o.name.as_str(), Some(&o.uid)), ("ConfigMap", "topology", topology_uid.as_ref()));
    }
    // The hash is of the config the pods mount, which is the pool's node config (4 × H100).
    let text = &cm.data.as_ref().unwrap()[fake_gpu_operator::node_files::CONFIG_KEY];
    let hash = config_hash(&ds).expect("config-hash annotation");
    assert_eq!(hash, fake_gpu_operator::nvml_mock_core::sha256_hex(text));
    let file = fakegpu_model::config::parse_config(text, "nvml-mock-h100").unwrap();
    assert_eq!((file.gpus, file.node.clone()), (Some(4), None), "{text}");

    // The DaemonSet controller places the agent on the pool's node only.
    let placed = wait_for(&dss, "nvml-mock-h100", T, "one pod scheduled", |d| {
        d.status.as_ref().is_some_and(|s| s.desired_number_scheduled == 1 && s.current_number_scheduled == 1)
    })
    .await;
    placed.unwrap_or_else(|e| panic!("{e}"));

    // The profile changes: the config and its hash change with it.
    set_topology(&ns, &pools("{backend: mock, profile: h100, overrides: {device_count: 8}}", &key)).await;
    let ds = wait_for(&dss, "nvml-mock-h100", T, "a new config hash", |d| config_hash(d).is_some_and(|h| h != hash)).await.unwrap();
    let cm = cms.get("nvml-mock-h100").await.unwrap();
    let text = &cm.data.as_ref().unwrap()[fake_gpu_operator::node_files::CONFIG_KEY];
    assert_eq!(config_hash(&ds).unwrap(), fake_gpu_operator::nvml_mock_core::sha256_hex(text), "the hash follows the ConfigMap");
    assert_eq!(fakegpu_model::config::parse_config(text, "cm").unwrap().gpus, Some(8));

    // Deleted by hand: the resync brings it back.
    let uid = dss.get("nvml-mock-l40s").await.unwrap().metadata.uid;
    dss.delete("nvml-mock-l40s", &DeleteParams::background()).await.expect("delete DaemonSet");
    wait_for(&dss, "nvml-mock-l40s", T, "DaemonSet recreated", |d| d.metadata.uid != uid && d.metadata.deletion_timestamp.is_none())
        .await
        .unwrap();

    // Another label key selects the pools' nodes: the DaemonSets follow it.
    let key2 = format!("{}.fgo.test/pool2", ns.name);
    set_topology(&ns, &pools("{backend: mock, profile: h100, overrides: {device_count: 8}}", &key2)).await;
    wait_for(&dss, "nvml-mock-h100", T, "the new node selector", |d| {
        node_selector(d) == Some(BTreeMap::from([(key2.clone(), "h100".to_string())]))
    })
    .await
    .unwrap();

    // Switched to fake: both objects go; the other mock pool stays.
    set_topology(&ns, &pools("{backend: fake, profile: h100}", &key2)).await;
    let left = wait_for_list(&dss, &managed, T, "h100's DaemonSet deleted", |l| names(l) == ["nvml-mock-l40s"]).await.unwrap();
    assert_eq!(names(&left), ["nvml-mock-l40s"]);
    wait_for_list(&cms, &managed, T, "h100's ConfigMap deleted", |l| names(l) == ["nvml-mock-l40s"]).await.unwrap();

    // Back to mock, then removed from the config with every other pool: nothing managed is left.
    set_topology(&ns, &pools("{backend: mock, profile: h100}", &key2)).await;
    wait_for_list(&dss, &managed, T, "h100's DaemonSet back", |l| l.len() == 2).await.unwrap();
    set_topology(&ns, &format!("nodePoolLabelKey: {key2}\nnodePools:\n  plain:\n    gpu: {{backend: fake, profile: a100-80gb}}\n")).await;
    wait_for_list(&dss, &managed, T, "no nvml-mock DaemonSet", |l| l.is_empty()).await.unwrap();
    wait_for_list(&cms, &managed, T, "no nvml-mock ConfigMap", |l| l.is_empty()).await.unwrap();

    // An invalid config keeps the last good one: nothing is created or deleted for it.
    set_topology(&ns, &pools("{backend: mock, profile: h100}", &key2)).await;
    wait_for_list(&dss, &managed, T, "both DaemonSets again", |l| l.len() == 2).await.unwrap();
    set_topology(&ns, "nodePools: [").await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(names(&dss.list(&managed).await.unwrap().items), ["nvml-mock-h100", "nvml-mock-l40s"], "{}", updater.log());

    // helm uninstall: the status-updater goes first, then the topology ConfigMap; the garbage
    // collector deletes what it owned.
    updater.kill();
    cms.delete("topology", &DeleteParams::default()).await.expect("delete the topology ConfigMap");
    wait_for_list(&dss, &managed, T, "DaemonSets collected", |l| l.is_empty()).await.unwrap();
    wait_for_list(&cms, &managed, T, "ConfigMaps collected", |l| l.is_empty()).await.unwrap();
}
