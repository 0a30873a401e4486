//! `statusUpdater.runaiIntegration` on the real control plane with the prometheus-operator
//! PrometheusRule CRD installed: no rule while namespace `runai` is absent; the status-updater
//! creates `runai/fake-gpu-operator-kwok-dcgm` (upstream's name, labels and group) within its
//! polling interval once the namespace exists; it goes with the namespace and comes back with
//! it. Without the CRD the status-updater keeps running. Skips without a cluster (fails under
//! CI=true).

mod components;

use std::time::{Duration, Instant};

use components::Component;
use fake_gpu_operator::runai_rule::{self, NAMESPACE, RULE_NAME};
use fake_gpu_operator::topology::TOPOLOGY_KEY;
use fakegpu_cluster_support::cluster_or_skip;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, DynamicObject, PostParams};
use kube::Api;
use serde_json::json;

const T: Duration = Duration::from_secs(90);

/// The CRD's shape as prometheus-operator installs it, minus the schema (this test only needs
/// the API to serve the kind).
fn prometheus_rule_crd() -> CustomResourceDefinition {
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "prometheusrules.monitoring.coreos.com"},
        "spec": {
            "group": "monitoring.coreos.com",
            "names": {"kind": "PrometheusRule", "listKind": "PrometheusRuleList", "plural": "prometheusrules", "singular": "prometheusrule"},
            "scope": "Namespaced",
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]
        }
    }))
    .unwrap()
}

async fn until<F: std::future::Future<Output = bool>>(what: &str, mut f: impl FnMut() -> F) {
    let deadline = Instant::now() + T;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_rule_follows_the_runai_namespace() {
    let Some(cluster) = cluster_or_skip("prometheus_rule_follows_the_runai_namespace").await else { return };
    let client = cluster.client.clone();
    let ns = cluster.namespace("runai-rule").await;
    let log_dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("runai-rule-e2e").join(&ns.name);
    std::fs::create_dir_all(&log_dir).unwrap();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let _ = namespaces.delete(NAMESPACE, &DeleteParams::default()).await;
    until("no runai namespace", || async { namespaces.get_opt(NAMESPACE).await.unwrap().is_none() }).await;

    // Its own pool label key, so that it manages no node of the cluster's own operator.
    let cms: Api<ConfigMap> = ns.api();
    let topology = format!(
        "nodePoolLabelKey: {}.fgo.test/pool\nnodePools:\n  p:\n    gpuProduct: Tesla-K80\n    gpuCount: 2\n    gpuMemory: 11441\n",
        ns.name
    );
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "topology"}, "data": {TOPOLOGY_KEY: topology}})).unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    // The status-updater with the integration on (as the chart's env sets it), 1 s polling.
    let updater = |extra: &[&str]| {
        let mut args = vec!["--no-node-files", "--runai-integration", "--runai-integration-polling-interval", "1s"];
        args.extend_from_slice(extra);
        Component::start("status-updater", &ns.name, &log_dir, &args)
    };
    let mut su = updater(&[]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(su.log().contains("Run:ai integration"), "no CRD: logged and running:\n{}", su.log());

    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let _ = crds.create(&PostParams::default(), &prometheus_rule_crd()).await;
    let rules: Api<DynamicObject> = Api::namespaced_with(client.clone(), NAMESPACE, &runai_rule::resource());
    until("the PrometheusRule API", || async {
        client
            .list_api_group_resources("monitoring.coreos.com/v1")
            .await
            .is_ok_and(|l| l.resources.iter().any(|r| r.name == "prometheusrules"))
    })
    .await;
    // Started after the CRD: no namespace, no rule.
    su.kill();
    su = updater(&[]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(namespaces.get_opt(NAMESPACE).await.unwrap().is_none());

    let runai: Namespace = serde_json::from_value(json!({"metadata": {"name": NAMESPACE}})).unwrap();
    namespaces.create(&PostParams::default(), &runai).await.expect("create namespace runai");
    let start = Instant::now();
    until("the rule in runai", || async { rules.get_opt(RULE_NAME).await.is_ok_and(|r| r.is_some()) }).await;
    assert!(start.elapsed() < Duration::from_secs(10), "1 s polling took {:?}", start.elapsed());
    let rule = rules.get(RULE_NAME).await.unwrap();
    let labels = rule.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels.get("app").map(String::as_str), Some("nvidia-dcgm-exporter"));
    assert_eq!(labels.get("component").map(String::as_str), Some("status-exporter-kwok"));
    assert_eq!(rule.data["spec"], runai_rule::rule()["spec"], "stored as built");

    // Gone with the namespace; back with it.
    namespaces.delete(NAMESPACE, &DeleteParams::default()).await.unwrap();
    until("namespace runai gone", || async { namespaces.get_opt(NAMESPACE).await.unwrap().is_none() }).await;
    namespaces.create(&PostParams::default(), &runai).await.expect("re-create namespace runai");
    until("the rule again", || async { rules.get_opt(RULE_NAME).await.is_ok_and(|r| r.is_some()) }).await;
    assert!(su.log().contains("PrometheusRule created"), "{}", su.log());

    su.kill();
    let _ = namespaces.delete(NAMESPACE, &DeleteParams::default()).await;
}
