//! Compute Domains on the real control plane (`fakegpu cluster up`): the chart's CRDs are
//! applied (`crds::install`, the files Helm installs); the controller runs in this process and the KWOK plugin publishes IMEX channels
//! for GB200 KWOK nodes. The seed's manifests (a ComputeDomain + a pod using its template) get a
//! claim the real scheduler allocates on the pod's node, the pod Running (KWOK) and the domain
//! Ready with the node's name, InternalIP and the model's clique. `allocationMode: All` reaches
//! the claims' opaque config; four nodes of one NVL72 clique make a Ready domain, four across
//! two cliques a NotReady one whose reason names both; a controller restart writes nothing;
//! deleting a domain removes its template. Bad specs are refused by the CRD schema with the
//! field's path. Skips without a cluster (fails under CI=true).

use std::collections::BTreeSet;
use std::time::Duration;

use fake_gpu_operator::compute_domain::types::{ComputeDomain, NOT_READY, READY};
use fake_gpu_operator::compute_domain::{channels, controller, crds, kwok, reconcile, CLAIM_DOMAIN_LABEL, DRIVER};
use fake_gpu_operator::kubelet::dra::kwok::{GPU_COUNT_LABEL, PROFILE_LABEL};
use fakegpu_cluster_support::{cluster_or_skip, objects::test_node, wait_for};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::resource::v1::{ResourceClaim, ResourceClaimTemplate, ResourceSlice};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

const TEST: &str = "compute-domain-e2e";

/// Applies the chart's CRDs (the bytes Helm installs) and waits until they are served.
async fn apply_crds(client: &kube::Client) {
    crds::install(client).await.unwrap();
    // Established comes a moment before discovery serves the kind everywhere.
    let domains: Api<ComputeDomain> = Api::all(client.clone());
    for _ in 0..40 {
        if domains.list(&ListParams::default().limit(1)).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("computedomains are not served");
}

fn gb200_node(name: &str) -> Node {
    test_node(name, TEST, &[(PROFILE_LABEL, "gb200"), (GPU_COUNT_LABEL, "4")])
}

fn model_clique(node: &str) -> String {
    fakegpu_model::fabric::clique_for_node(fakegpu_model::find_builtin("gb200").unwrap(), 4, node).unwrap().label()
}

/// The seed's ComputeDomain.
fn domain(name: &str, num_nodes: u32, mode: &str) -> serde_json::Value {
    json!({
        "apiVersion": "resource.nvidia.com/v1beta1", "kind": "ComputeDomain",
        "metadata": {"name": name},
        "spec": {"numNodes": num_nodes, "channel": {"resourceClaimTemplate": {"name": format!("{name}-channel")}, "allocationMode": mode}}
    })
}

/// The seed's workload pod: one container using the domain's channel claim, on `node`.
fn pod(name: &str, template: &str, node: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "containers": [{"name": "c", "image": "busybox", "resources": {"claims": [{"name": "imex"}]}}],
            "resourceClaims": [{"name": "imex", "resourceClaimTemplateName": template}],
            "nodeSelector": {"kubernetes.io/hostname": node},
            "tolerations": [{"operator": "Exists"}]
        }
    }))
    .unwrap()
}

/// Creates a domain from JSON as a client would send it (untyped, so that bad specs reach the
/// API server's validation).
async fn create_domain(api: &Api<ComputeDomain>, value: serde_json::Value) -> Result<DynamicObject, kube::Error> {
    let ns = api.namespace().unwrap_or_default().to_string();
    let raw: Api<DynamicObject> = Api::namespaced_with(api.clone().into_client(), &ns, &ApiResource::erase::<ComputeDomain>(&()));
    raw.create(&PostParams::default(), &serde_json::from_value(value).unwrap()).await
}

async fn running_with_claim(pods: &Api<Pod>, claims: &Api<ResourceClaim>, name: &str) -> ResourceClaim {
    let p = wait_for(pods, name, Duration::from_secs(90), "Running with its claim", |p: &Pod| {
        fakegpu_cluster_support::objects::pod_running(p)
            && p.status
                .as_ref()
                .and_then(|s| s.resource_claim_statuses.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.resource_claim_name.is_some()))
    })
    .await
    .unwrap_or_else(|e| panic!("pod {name}: {e}"));
    let claim = p.status.unwrap().resource_claim_statuses.unwrap()[0].resource_claim_name.clone().unwrap();
    claims.get(&claim).await.unwrap()
}

async fn wait_status(api: &Api<ComputeDomain>, name: &str, what: &str, cond: impl Fn(&ComputeDomain) -> bool) -> ComputeDomain {
    wait_for(api, name, Duration::from_secs(60), what, cond).await.unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compute_domains_on_kwok_nodes() {
    let Some(cluster) = cluster_or_skip(TEST).await else { return };
    let client = cluster.client.clone();
    let dra = fake_gpu_operator::resource_api::DraApi::new(client.clone()).await.unwrap();
    apply_crds(&client).await;
    let ns = cluster.namespace("cd-e2e").await;
    let nodes: Api<Node> = Api::all(client.clone());

    // Two fabrics of GB200 x4 KWOK nodes: a-000..a-003 share clique 0; b-016..b-019 straddle
    // cliques 0 and 1 (18 nodes per NVL72 clique).
    let a: Vec<String> = (0..4).map(|i| format!("cd-e2e-a-{i:03}")).collect();
    let b: Vec<String> = (16..20).map(|i| format!("cd-e2e-b-{i:03}")).collect();
    for n in a.iter().chain(&b) {
        let _ = nodes.delete(n, &DeleteParams::default()).await;
        wait_for_gone(&nodes, n).await;
        nodes.create(&PostParams::default(), &gb200_node(n)).await.unwrap();
        ns.track::<Node>(n);
    }
    // Once KWOK has taken a node over (Ready, its own addresses), set the addresses as a kubelet
    // would; KWOK keeps them when both an InternalIP and a Hostname are there.
    for (i, n) in a.iter().chain(&b).enumerate() {
        wait_for(&nodes, n, Duration::from_secs(30), "Ready", fakegpu_cluster_support::objects::node_ready).await.unwrap();
        let ip = format!("127.0.7.{}", i + 1);
        let addresses = json!([{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": n}]);
        nodes.patch_status(n, &PatchParams::default(), &Patch::Merge(json!({"status": {"addresses": addresses}}))).await.unwrap();
        let has_ip =
            |node: &Node| node.status.as_ref().and_then(|s| s.addresses.as_ref()).is_some_and(|a| a.iter().any(|a| a.address == ip));
        wait_for(&nodes, n, Duration::from_secs(10), "our address", has_ip).await.unwrap();
    }
    assert_eq!(model_clique(&a[0]), model_clique(&a[3]));
    assert_ne!(model_clique(&b[1]), model_clique(&b[2]), "b-017 and b-018 are in different cliques");

    // The KWOK plugin: DeviceClasses and every channel of every KWOK GPU node.
    kwok::ensure_device_classes(&dra).await.unwrap();
    let first = kwok::sync_once(&dra, None, channels::DEFAULT_CHANNELS).await.unwrap();
    assert!(first.nodes >= 8);
    assert_eq!(kwok::sync_once(&dra, None, channels::DEFAULT_CHANNELS).await.unwrap().writes, 0, "unchanged resync writes nothing");
    let slices: Api<ResourceSlice> = Api::all(client.clone());
    let mine = slices.list(&ListParams::default().fields(&format!("spec.driver={DRIVER},spec.nodeName={}", a[0]))).await.unwrap().items;
    let devices: Vec<_> = mine.iter().flat_map(|s| s.spec.devices.iter().flatten()).collect();
    assert_eq!(devices.len(), channels::DEFAULT_CHANNELS as usize + 1, "every channel and the daemon device");
    assert!(mine.iter().all(|s| s.spec.pool.name == a[0]), "pool = node");
    let clique_attr = devices[0].attributes.as_ref().unwrap()["cliqueID"].string.clone();
    assert_eq!(clique_attr, Some(model_clique(&a[0])));

    // The controller, in this process.
    let ctl = tokio::spawn(controller::run(client.clone(), Duration::from_secs(30), Duration::from_millis(100)));
    let domains: Api<ComputeDomain> = ns.api();
    let templates: Api<ResourceClaimTemplate> = ns.api();
    let pods: Api<Pod> = ns.api();
    let claims: Api<ResourceClaim> = ns.api();

    // Bad input: refused by the schema, naming the field.
    let mut bad = domain("bad-mode", 1, "Single");
    bad["spec"]["channel"]["allocationMode"] = json!("Most");
    let e = create_domain(&domains, bad).await.unwrap_err().to_string();
    assert!(e.contains("spec.channel.allocationMode") && e.contains("Most"), "{e}");
    let mut bad = domain("bad-template", 1, "Single");
    bad["spec"]["channel"]["resourceClaimTemplate"] = json!({});
    let e = create_domain(&domains, bad).await.unwrap_err().to_string();
    assert!(e.contains("spec.channel.resourceClaimTemplate.name"), "{e}");

    // The seed's manifests: one domain, one pod on one node.
    create_domain(&domains, domain("cd-one", 1, "Single")).await.unwrap();
    let t = wait_for(&templates, "cd-one-channel", Duration::from_secs(30), "the domain's template", |_| true).await.unwrap();
    assert_eq!(t.metadata.labels.as_ref().unwrap()["resource.nvidia.com/computeDomain"], "cd-one");
    let e =
        domains.patch("cd-one", &PatchParams::default(), &Patch::Merge(json!({"spec": {"numNodes": 3}}))).await.unwrap_err().to_string();
    assert!(e.contains("immutable"), "{e}");
    pods.create(&PostParams::default(), &pod("one", "cd-one-channel", &a[0])).await.unwrap();
    let claim = running_with_claim(&pods, &claims, "one").await;
    assert_eq!(claim.metadata.labels.as_ref().unwrap()[CLAIM_DOMAIN_LABEL], "cd-one");
    let results = claim.status.clone().unwrap().allocation.unwrap().devices.unwrap().results.unwrap();
    assert_eq!(results.len(), 1);
    assert_eq!((results[0].driver.as_str(), results[0].pool.as_str()), (DRIVER, a[0].as_str()));
    assert!(results[0].device.starts_with("channel-"), "{}", results[0].device);
    let d = wait_status(&domains, "cd-one", "Ready", |d| d.status.as_ref().is_some_and(|s| s.status == READY)).await;
    let s = d.status.unwrap();
    assert_eq!(s.nodes.len(), 1);
    assert_eq!((s.nodes[0].name.as_str(), s.nodes[0].ip_address.as_str()), (a[0].as_str(), "127.0.7.1"));
    assert_eq!(s.nodes[0].clique_id, model_clique(&a[0]));
    assert_eq!(s.nodes[0].clique_id, reconcile::node_clique(&nodes.get(&a[0]).await.unwrap()).unwrap());

    // allocationMode All: the claims carry it to the plugin (which prepares every channel).
    create_domain(&domains, domain("cd-all", 1, "All")).await.unwrap();
    wait_for(&templates, "cd-all-channel", Duration::from_secs(30), "the domain's template", |_| true).await.unwrap();
    pods.create(&PostParams::default(), &pod("all", "cd-all-channel", &a[1])).await.unwrap();
    let claim = running_with_claim(&pods, &claims, "all").await;
    let config = claim.status.unwrap().allocation.unwrap().devices.unwrap().config.unwrap();
    let params = &config[0].opaque.as_ref().unwrap().parameters.0;
    assert_eq!(params["allocationMode"], "All");
    assert_eq!(params["domainID"], json!(domains.get("cd-all").await.unwrap().metadata.uid.unwrap()));
    wait_status(&domains, "cd-all", "Ready", |d| d.status.as_ref().is_some_and(|s| s.status == READY)).await;

    // Four nodes of one clique: Ready, consistent clique ids. Two channels on a-000 and a-001
    // are now held by two domains: each domain has its own channel there.
    create_domain(&domains, domain("cd-four", 4, "Single")).await.unwrap();
    wait_for(&templates, "cd-four-channel", Duration::from_secs(30), "the domain's template", |_| true).await.unwrap();
    for (i, n) in a.iter().enumerate() {
        pods.create(&PostParams::default(), &pod(&format!("four-{i}"), "cd-four-channel", n)).await.unwrap();
    }
    for i in 0..4 {
        running_with_claim(&pods, &claims, &format!("four-{i}")).await;
    }
    let d = wait_status(&domains, "cd-four", "Ready with 4 nodes", |d| {
        d.status.as_ref().is_some_and(|s| s.status == READY && s.nodes.len() == 4)
    })
    .await;
    let s = d.status.unwrap();
    let names: Vec<&str> = s.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, a.iter().map(String::as_str).collect::<Vec<_>>());
    let cliques: BTreeSet<&str> = s.nodes.iter().map(|n| n.clique_id.as_str()).collect();
    assert_eq!(cliques, BTreeSet::from([model_clique(&a[0]).as_str()]));
    let ips: Vec<&str> = s.nodes.iter().map(|n| n.ip_address.as_str()).collect();
    assert_eq!(ips, ["127.0.7.1", "127.0.7.2", "127.0.7.3", "127.0.7.4"]);

    // Four nodes across two cliques: NotReady, and the reason names both cliques.
    create_domain(&domains, domain("cd-split", 4, "Single")).await.unwrap();
    wait_for(&templates, "cd-split-channel", Duration::from_secs(30), "the domain's template", |_| true).await.unwrap();
    for (i, n) in b.iter().enumerate() {
        pods.create(&PostParams::default(), &pod(&format!("split-{i}"), "cd-split-channel", n)).await.unwrap();
    }
    let d = wait_status(&domains, "cd-split", "4 nodes listed", |d| d.status.as_ref().is_some_and(|s| s.nodes.len() == 4)).await;
    let s = d.status.unwrap();
    assert_eq!(s.status, NOT_READY);
    let c = &s.conditions[0];
    assert_eq!(c.reason, reconcile::REASON_CLIQUES);
    for n in [&b[0], &b[3]] {
        assert!(c.message.contains(&model_clique(n)) && c.message.contains(n.as_str()), "{}", c.message);
    }

    // Restart: a fresh controller finds nothing to write.
    ctl.abort();
    let _ = ctl.await;
    let before: Vec<_> =
        domains.list(&ListParams::default()).await.unwrap().items.into_iter().map(|d| d.metadata.resource_version).collect();
    let report = controller::pass(&dra).await.unwrap();
    assert_eq!(report.writes, 0, "a restarted controller changes nothing");
    let after: Vec<_> =
        domains.list(&ListParams::default()).await.unwrap().items.into_iter().map(|d| d.metadata.resource_version).collect();
    assert_eq!(before, after);
    let ctl = tokio::spawn(controller::run(client.clone(), Duration::from_secs(30), Duration::from_millis(100)));

    // Deletion: the template goes, then the domain.
    domains.delete("cd-one", &DeleteParams::default()).await.unwrap();
    wait_for_gone(&templates, "cd-one-channel").await;
    wait_for_gone(&domains, "cd-one").await;

    // Clean up while the controller runs (the domains' finalizers would hold the namespace).
    let _ = pods.delete_collection(&DeleteParams::default().grace_period(0), &ListParams::default()).await;
    for d in ["cd-all", "cd-four", "cd-split"] {
        domains.delete(d, &DeleteParams::default()).await.unwrap();
    }
    for d in ["cd-all", "cd-four", "cd-split"] {
        wait_for_gone(&domains, d).await;
    }
    assert!(templates.list(&ListParams::default()).await.unwrap().items.is_empty(), "every template removed");
    ctl.abort();
}

async fn wait_for_gone<K>(api: &Api<K>, name: &str)
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug + serde::Serialize,
{
    for _ in 0..240 {
        match api.get_opt(name).await {
            Ok(None) => return,
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
    panic!("{name} still exists after 60 s");
}
