//! DRA on the real control plane (`fakegpu cluster up`): ResourceSlices from the node-local
//! publisher (one node) and from kwok-dra-plugin (100 KWOK nodes) are accepted by the API
//! server; a resync with no change writes nothing; the real scheduler allocates pods with
//! ResourceClaimTemplates for 1 and 2 GPUs, a claim shared by two pods and a CEL selector on
//! productName to devices whose UUIDs are the model's for that node. MIG: a node whose GPUs
//! are partitioned publishes MIG devices (not its GPUs whole) that the API server accepts, and
//! claims of DeviceClass `mig.nvidia.com` with a CEL selector on `profile` get the model's MIG
//! devices of that profile. Skips without a cluster (fails under CI=true).

use std::collections::BTreeSet;
use std::time::Duration;

use fake_gpu_operator::kubelet::dra::{attributes, kwok, publish, DRIVER};
use fakegpu_cluster_support::{cluster_or_skip, objects::test_node, wait_for};
use fakegpu_model::{NodeSpec, SimulatedNode};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::resource::v1::{ResourceClaim, ResourceClaimTemplate, ResourceSlice};
use kube::api::{Api, DeleteParams, ListParams, PostParams};

const TEST: &str = "kubelet-dra-e2e";
const KWOK_NODES: usize = 100;
const LOCAL: &str = "dra-e2e-local";

fn kwok_name(i: usize) -> String {
    format!("dra-e2e-{i:03}")
}

/// Even nodes are H100 x8, odd ones A100-80GB x4.
fn kwok_profile(i: usize) -> (&'static str, u32) {
    if i.is_multiple_of(2) {
        ("h100", 8)
    } else {
        ("a100-80gb", 4)
    }
}

fn model_uuids(profile: &str, gpus: u32, node: &str) -> BTreeSet<String> {
    SimulatedNode::new(NodeSpec::builtin(profile, Some(gpus), node).unwrap()).gpus.iter().map(|g| g.uuid.to_lowercase()).collect()
}

fn pod(name: &str, claim: serde_json::Value, node: Option<&str>) -> Pod {
    let mut spec = serde_json::json!({
        "containers": [{"name": "c", "image": "busybox", "resources": {"claims": [{"name": "gpu"}]}}],
        "resourceClaims": [claim],
        "tolerations": [{"operator": "Exists"}]
    });
    if let Some(n) = node {
        spec["nodeSelector"] = serde_json::json!({"kubernetes.io/hostname": n});
    }
    serde_json::from_value(serde_json::json!({"metadata": {"name": name}, "spec": spec})).unwrap()
}

fn template(name: &str, count: u32, cel: Option<&str>) -> ResourceClaimTemplate {
    let mut exactly = serde_json::json!({"deviceClassName": DRIVER, "allocationMode": "ExactCount", "count": count});
    if let Some(expr) = cel {
        exactly["selectors"] = serde_json::json!([{"cel": {"expression": expr}}]);
    }
    serde_json::from_value(
        serde_json::json!({"metadata": {"name": name}, "spec": {"spec": {"devices": {"requests": [{"name": "gpu", "exactly": exactly}]}}}}),
    )
    .unwrap()
}

/// The claim the pod's `gpu` entry resolved to, once scheduled and allocated; (node, devices).
async fn allocation(pods: &Api<Pod>, claims: &Api<ResourceClaim>, name: &str) -> (String, Vec<String>) {
    let p = wait_for(pods, name, Duration::from_secs(60), "scheduled with its claim", |p: &Pod| {
        p.spec.as_ref().and_then(|s| s.node_name.clone()).is_some() && claim_of(p).is_some()
    })
    .await
    .unwrap_or_else(|e| panic!("pod {name}: {e}"));
    let node = p.spec.clone().unwrap().node_name.unwrap();
    let claim_name = claim_of(&p).unwrap();
    let claim = wait_for(claims, &claim_name, Duration::from_secs(30), "allocated", |c: &ResourceClaim| {
        c.status.as_ref().and_then(|s| s.allocation.as_ref()).is_some()
    })
    .await
    .unwrap();
    let results = claim.status.unwrap().allocation.unwrap().devices.unwrap().results.unwrap_or_default();
    for r in &results {
        assert_eq!(r.driver, DRIVER);
        assert_eq!(r.pool, node, "pool = node name");
    }
    (node, results.into_iter().map(|r| r.device).collect())
}

fn claim_of(p: &Pod) -> Option<String> {
    p.status.as_ref()?.resource_claim_statuses.as_ref()?.iter().find(|c| c.name == "gpu")?.resource_claim_name.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slices_accepted_and_scheduler_allocates_model_uuids() {
    let Some(cluster) = cluster_or_skip(TEST).await else { return };
    let client = cluster.client.clone();
    let dra = fake_gpu_operator::resource_api::DraApi::new(client.clone()).await.unwrap();
    let ns = cluster.namespace("dra-e2e").await;
    let nodes: Api<Node> = Api::all(client.clone());
    let slices: Api<ResourceSlice> = Api::all(client.clone());

    // Nodes: 100 KWOK GPU nodes for kwok-dra-plugin, one "real" node for the node-local publisher.
    let mut names = vec![LOCAL.to_string()];
    let _ = nodes.delete(LOCAL, &DeleteParams::default()).await;
    nodes.create(&PostParams::default(), &test_node(LOCAL, TEST, &[])).await.unwrap();
    for i in 0..KWOK_NODES {
        let (profile, gpus) = kwok_profile(i);
        let gpus = gpus.to_string();
        let n = test_node(&kwok_name(i), TEST, &[(kwok::PROFILE_LABEL, profile), (kwok::GPU_COUNT_LABEL, &gpus)]);
        let _ = nodes.delete(&kwok_name(i), &DeleteParams::default()).await;
        nodes.create(&PostParams::default(), &n).await.unwrap();
        names.push(kwok_name(i));
    }

    publish::ensure_device_class(&dra).await.unwrap();
    // Node-local publisher (what dra-plugin does at start).
    let local = SimulatedNode::new(NodeSpec::builtin("h100", Some(8), LOCAL).unwrap());
    assert_eq!(publish::publish_node(&dra, LOCAL, attributes::node_devices(&local)).await.unwrap(), 1);
    assert_eq!(publish::publish_node(&dra, LOCAL, attributes::node_devices(&local)).await.unwrap(), 0, "no change, no write");
    let local_slices = slices.list(&ListParams::default().fields(&format!("spec.nodeName={LOCAL}"))).await.unwrap().items;
    assert_eq!(local_slices.len(), 1);
    let owner = &local_slices[0].metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("Node", LOCAL));
    assert_eq!(local_slices[0].spec.devices.as_ref().unwrap().len(), 8);

    // Central KWOK publisher: every KWOK node's pool, then a resync that writes nothing.
    let first = kwok::sync_once(&dra, &kwok::Source::default()).await.unwrap();
    assert!(first.nodes >= KWOK_NODES);
    let second = kwok::sync_once(&dra, &kwok::Source::default()).await.unwrap();
    assert_eq!(second.writes, 0, "unchanged resync must not write");
    for i in [0usize, 1, 99] {
        let (profile, gpus) = kwok_profile(i);
        let s = slices.list(&ListParams::default().fields(&format!("spec.nodeName={}", kwok_name(i)))).await.unwrap().items;
        assert_eq!(s.len(), 1);
        let got: BTreeSet<String> = s[0].spec.devices.iter().flatten().map(|d| d.name.clone()).collect();
        assert_eq!(got, model_uuids(profile, gpus, &kwok_name(i)));
    }

    // Scheduling with the real scheduler.
    let pods: Api<Pod> = ns.api();
    let claims: Api<ResourceClaim> = ns.api();
    let templates: Api<ResourceClaimTemplate> = ns.api();
    templates.create(&PostParams::default(), &template("one", 1, None)).await.unwrap();
    templates.create(&PostParams::default(), &template("two", 2, None)).await.unwrap();
    templates
        .create(
            &PostParams::default(),
            &template("a100", 1, Some("device.attributes['gpu.nvidia.com'].productName == 'NVIDIA A100-SXM4-80GB'")),
        )
        .await
        .unwrap();
    let local_uuids = model_uuids("h100", 8, LOCAL);

    pods.create(&PostParams::default(), &pod("p1", serde_json::json!({"name": "gpu", "resourceClaimTemplateName": "one"}), Some(LOCAL)))
        .await
        .unwrap();
    pods.create(&PostParams::default(), &pod("p2", serde_json::json!({"name": "gpu", "resourceClaimTemplateName": "two"}), Some(LOCAL)))
        .await
        .unwrap();
    let (n1, d1) = allocation(&pods, &claims, "p1").await;
    let (n2, d2) = allocation(&pods, &claims, "p2").await;
    assert_eq!((n1.as_str(), n2.as_str()), (LOCAL, LOCAL));
    assert_eq!((d1.len(), d2.len()), (1, 2));
    let all: BTreeSet<&String> = d1.iter().chain(&d2).collect();
    assert_eq!(all.len(), 3, "distinct GPUs");
    assert!(all.iter().all(|d| local_uuids.contains(*d)), "devices {all:?} are the model's UUIDs of {LOCAL}");

    // One claim shared by two pods.
    let shared: ResourceClaim = serde_json::from_value(serde_json::json!({"metadata": {"name": "shared"}, "spec": {"devices": {"requests": [{"name": "gpu", "exactly": {"deviceClassName": DRIVER, "allocationMode": "ExactCount", "count": 1}}]}}})).unwrap();
    claims.create(&PostParams::default(), &shared).await.unwrap();
    pods.create(&PostParams::default(), &pod("s1", serde_json::json!({"name": "gpu", "resourceClaimName": "shared"}), Some(LOCAL)))
        .await
        .unwrap();
    pods.create(&PostParams::default(), &pod("s2", serde_json::json!({"name": "gpu", "resourceClaimName": "shared"}), Some(LOCAL)))
        .await
        .unwrap();
    for p in ["s1", "s2"] {
        wait_for(&pods, p, Duration::from_secs(60), "scheduled", |p: &Pod| p.spec.as_ref().and_then(|s| s.node_name.clone()).is_some())
            .await
            .unwrap();
    }
    let c = wait_for(&claims, "shared", Duration::from_secs(30), "reserved by both", |c: &ResourceClaim| {
        c.status.as_ref().and_then(|s| s.reserved_for.as_ref()).is_some_and(|r| r.len() == 2)
    })
    .await
    .unwrap();
    let results = c.status.unwrap().allocation.unwrap().devices.unwrap().results.unwrap();
    assert_eq!(results.len(), 1);
    assert!(local_uuids.contains(&results[0].device));
    assert!(!all.contains(&results[0].device), "the shared claim got a GPU none of p1/p2 hold");

    // CEL selector on productName: lands on an A100 node, on one of its GPUs.
    pods.create(&PostParams::default(), &pod("cel", serde_json::json!({"name": "gpu", "resourceClaimTemplateName": "a100"}), None))
        .await
        .unwrap();
    let (node, devs) = allocation(&pods, &claims, "cel").await;
    let i: usize = node.strip_prefix("dra-e2e-").and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("CEL pod went to {node}"));
    assert_eq!(kwok_profile(i).0, "a100-80gb");
    assert!(model_uuids("a100-80gb", 4, &node).contains(&devs[0]));

    // Clean up our nodes (their slices go with them by owner reference, and by the publisher).
    for p in ["p1", "p2", "s1", "s2", "cel"] {
        let _ = pods.delete(p, &DeleteParams::default().grace_period(0)).await;
    }
    for n in &names {
        let _ = nodes.delete(n, &DeleteParams::default()).await;
    }
    kwok::sync_once(&dra, &kwok::Source::default()).await.unwrap();
    let left = slices.list(&ListParams::default().fields(&format!("spec.driver={DRIVER}"))).await.unwrap().items;
    let ours: Vec<_> = left.iter().filter(|s| s.spec.node_name.as_deref().is_some_and(|n| n.starts_with("dra-e2e-"))).collect();
    assert!(ours.is_empty(), "slices of deleted nodes remain: {}", ours.len());
}

const MIG_NODE: &str = "mig-e2e-node";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mig_slices_accepted_and_claims_select_by_profile() {
    let Some(cluster) = cluster_or_skip(TEST).await else { return };
    let client = cluster.client.clone();
    let dra = fake_gpu_operator::resource_api::DraApi::new(client.clone()).await.unwrap();
    let ns = cluster.namespace("dra-e2e-mig").await;
    let nodes: Api<Node> = Api::all(client.clone());
    let slices: Api<ResourceSlice> = Api::all(client.clone());
    let _ = nodes.delete(MIG_NODE, &DeleteParams::default()).await;
    nodes.create(&PostParams::default(), &test_node(MIG_NODE, TEST, &[])).await.unwrap();
    publish::ensure_device_class(&dra).await.unwrap();

    // GPU 0 as seven 1g.10gb, GPU 1 as two 3g.40gb (every GPU partitioned, so no whole-GPU
    // claim of the other test lands here).
    let node = SimulatedNode::new(NodeSpec::builtin("a100-80gb", Some(2), MIG_NODE).unwrap());
    let mut state = fakegpu_model::state::NodeState::default();
    for (gpu, config) in [(0u32, "all-1g.10gb"), (1, "all-3g.40gb")] {
        let layout = fakegpu_model::mig::named_layout(&node.spec.profile, config).unwrap();
        state.gpus.insert(gpu.to_string(), fakegpu_model::state::GpuState { mig: layout, ..Default::default() });
    }
    let devices = attributes::pool_devices(&node, &state);
    assert_eq!(publish::publish_node(&dra, MIG_NODE, devices.clone()).await.unwrap(), 1);
    assert_eq!(publish::publish_node(&dra, MIG_NODE, devices.clone()).await.unwrap(), 0, "no change, no write");
    let s = slices.list(&ListParams::default().fields(&format!("spec.nodeName={MIG_NODE}"))).await.unwrap().items;
    assert_eq!(s.len(), 1);
    let stored = s[0].spec.devices.clone().unwrap();
    assert_eq!(stored.len(), 9);
    assert_eq!(stored, devices, "the API server keeps the MIG devices as published");
    let migs = node.mig_devices(&state);
    let names_of =
        |profile: &str| -> BTreeSet<String> { migs.iter().filter(|m| m.profile() == profile).map(attributes::mig_device_name).collect() };

    let templates: Api<ResourceClaimTemplate> = ns.api();
    let pods: Api<Pod> = ns.api();
    let claims: Api<ResourceClaim> = ns.api();
    let mig_template = |name: &str, count: u32, expr: &str| -> ResourceClaimTemplate {
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}, "spec": {"spec": {"devices": {"requests": [{"name": "gpu",
            "exactly": {"deviceClassName": publish::MIG_DEVICE_CLASS, "allocationMode": "ExactCount", "count": count,
                "selectors": [{"cel": {"expression": expr}}]}}]}}}}))
        .unwrap()
    };
    templates
        .create(&PostParams::default(), &mig_template("small", 2, "device.attributes['gpu.nvidia.com'].profile == '1g.10gb'"))
        .await
        .unwrap();
    templates
        .create(
            &PostParams::default(),
            &mig_template(
                "big",
                1,
                "device.attributes['gpu.nvidia.com'].type == 'mig' && device.attributes['gpu.nvidia.com'].profile == '3g.40gb'",
            ),
        )
        .await
        .unwrap();
    pods.create(
        &PostParams::default(),
        &pod("m-small", serde_json::json!({"name": "gpu", "resourceClaimTemplateName": "small"}), Some(MIG_NODE)),
    )
    .await
    .unwrap();
    pods.create(
        &PostParams::default(),
        &pod("m-big", serde_json::json!({"name": "gpu", "resourceClaimTemplateName": "big"}), Some(MIG_NODE)),
    )
    .await
    .unwrap();
    let (n1, small) = allocation(&pods, &claims, "m-small").await;
    let (n2, big) = allocation(&pods, &claims, "m-big").await;
    assert_eq!((n1.as_str(), n2.as_str()), (MIG_NODE, MIG_NODE));
    assert_eq!((small.len(), big.len()), (2, 1));
    assert!(small.iter().all(|d| names_of("1g.10gb").contains(d)), "{small:?} are 1g.10gb MIG devices of the model");
    assert!(names_of("3g.40gb").contains(&big[0]), "{big:?}");

    for p in ["m-small", "m-big"] {
        let _ = pods.delete(p, &DeleteParams::default().grace_period(0)).await;
    }
    let _ = nodes.delete(MIG_NODE, &DeleteParams::default()).await;
}
