//! Scheduling, DRA, DaemonSet and RBAC behaviour of the real control plane with KWOK nodes.
//! Each test needs `fakegpu cluster up`; without one they skip locally and fail under CI=true.

use std::collections::BTreeSet;
use std::time::Duration;

use fakegpu_cluster_support::objects::{node_ready, pod_condition, pod_running, test_node};
use fakegpu_cluster_support::{cluster_or_skip, wait_for, wait_for_list, TestNamespace};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::api::resource::v1::{DeviceClass, ResourceClaim, ResourceClaimTemplate, ResourceSlice};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::Api;
use serde::de::DeserializeOwned;
use serde_json::json;

const T: Duration = Duration::from_secs(60);

fn obj<K: DeserializeOwned>(v: serde_json::Value) -> K {
    serde_json::from_value(v).expect("test object shape")
}

/// Creates a KWOK node for this test and waits until kwok reports it Ready.
async fn ready_node(ns: &TestNamespace, suffix: &str, extra: &[(&str, &str)]) -> String {
    let name = ns.prefixed(suffix);
    let nodes: Api<Node> = Api::all(ns.client.clone());
    nodes.create(&PostParams::default(), &test_node(&name, &ns.name, extra)).await.expect("create node");
    ns.track::<Node>(&name);
    wait_for(&nodes, &name, T, "node Ready", node_ready).await.expect("node Ready");
    name
}

fn gpu_pod(name: &str, node: &str, gpus: u32) -> Pod {
    obj(json!({
        "metadata": {"name": name},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node},
            "containers": [{"name": "c", "image": "registry.invalid/fake:1",
                            "resources": {"limits": {"nvidia.com/gpu": gpus.to_string()}}}]
        }
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_resource_gpu_pod_is_bound_and_running() {
    let Some(cluster) = cluster_or_skip("extended_resource_gpu_pod_is_bound_and_running").await else { return };
    let ns = cluster.namespace("ext-gpu").await;
    let node = ready_node(&ns, "gpu", &[]).await;

    // Patched only once kwok has initialised the node, so kwok's own status write cannot race it.
    let nodes: Api<Node> = Api::all(ns.client.clone());
    let gpus = json!({"status": {"capacity": {"nvidia.com/gpu": "8"}, "allocatable": {"nvidia.com/gpu": "8"}}});
    nodes.patch_status(&node, &PatchParams::default(), &Patch::Merge(&gpus)).await.expect("patch node status");
    wait_for(&nodes, &node, T, "8 allocatable GPUs", |n| {
        n.status.as_ref().and_then(|s| s.allocatable.as_ref()).and_then(|a| a.get("nvidia.com/gpu")).is_some_and(|q| q.0 == "8")
    })
    .await
    .expect("gpu capacity visible");

    let pods: Api<Pod> = ns.api();
    pods.create(&PostParams::default(), &gpu_pod("two", &node, 2)).await.expect("create pod");
    pods.create(&PostParams::default(), &gpu_pod("nine", &node, 9)).await.expect("create pod");

    let two = wait_for(&pods, "two", T, "pod Running", pod_running).await.expect("2-GPU pod runs");
    assert_eq!(two.spec.and_then(|s| s.node_name).as_deref(), Some(node.as_str()));
    // The same node cannot fit 9 of 8 GPUs: the real scheduler must say so rather than bind.
    let nine = wait_for(&pods, "nine", T, "PodScheduled=False", |p| {
        pod_condition(p, "PodScheduled").is_some_and(|(s, r)| s == "False" && r.as_deref() == Some("Unschedulable"))
    })
    .await
    .expect("9-GPU pod is unschedulable");
    assert!(nine.spec.and_then(|s| s.node_name).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dra_claim_from_template_is_allocated_and_pod_runs() {
    let Some(cluster) = cluster_or_skip("dra_claim_from_template_is_allocated_and_pod_runs").await else { return };
    let ns = cluster.namespace("dra").await;
    let node = ready_node(&ns, "dra", &[]).await;
    let driver = format!("{}.fakegpu.test", ns.name);

    let class = ns.prefixed("gpu");
    Api::<DeviceClass>::all(ns.client.clone())
        .create(
            &PostParams::default(),
            &obj(json!({
                "metadata": {"name": class},
                "spec": {"selectors": [{"cel": {"expression": format!("device.driver == '{driver}'")}}]}
            })),
        )
        .await
        .expect("create DeviceClass");
    ns.track::<DeviceClass>(&class);

    let slice = ns.prefixed("slice");
    let devices: Vec<_> = (0..8).map(|i| json!({"name": format!("gpu-{i}"), "attributes": {"index": {"int": i}}})).collect();
    Api::<ResourceSlice>::all(ns.client.clone())
        .create(
            &PostParams::default(),
            &obj(json!({
                "metadata": {"name": slice},
                "spec": {"driver": driver, "nodeName": node,
                         "pool": {"name": node, "generation": 1, "resourceSliceCount": 1},
                         "devices": devices}
            })),
        )
        .await
        .expect("create ResourceSlice");
    ns.track::<ResourceSlice>(&slice);

    ns.api::<ResourceClaimTemplate>()
        .create(
            &PostParams::default(),
            &obj(json!({
                "metadata": {"name": "one-gpu"},
                "spec": {"spec": {"devices": {"requests": [
                    {"name": "gpu", "exactly": {"deviceClassName": class, "allocationMode": "ExactCount", "count": 1}}
                ]}}}
            })),
        )
        .await
        .expect("create ResourceClaimTemplate");

    let pods: Api<Pod> = ns.api();
    pods.create(
        &PostParams::default(),
        &obj(json!({
            "metadata": {"name": "dra"},
            "spec": {
                "resourceClaims": [{"name": "gpu", "resourceClaimTemplateName": "one-gpu"}],
                "containers": [{"name": "c", "image": "registry.invalid/fake:1", "resources": {"claims": [{"name": "gpu"}]}}]
            }
        })),
    )
    .await
    .expect("create pod");

    // No nodeSelector: only the slice can steer the scheduler to this node.
    let pod = wait_for(&pods, "dra", T, "pod Running", pod_running).await.expect("DRA pod runs");
    assert_eq!(pod.spec.as_ref().and_then(|s| s.node_name.as_deref()), Some(node.as_str()));
    let claim_name = pod
        .status
        .as_ref()
        .and_then(|s| s.resource_claim_statuses.as_ref())
        .and_then(|c| c.iter().find(|c| c.name == "gpu"))
        .and_then(|c| c.resource_claim_name.clone())
        .expect("controller-manager recorded the generated claim in the pod status");
    let claim = ns.api::<ResourceClaim>().get(&claim_name).await.expect("generated claim exists");
    let status = claim.status.expect("claim status");
    let results = status.allocation.expect("claim allocated").devices.expect("device results").results.unwrap_or_default();
    assert_eq!(results.len(), 1, "{results:?}");
    assert_eq!(results[0].driver, driver);
    assert_eq!(results[0].pool, node);
    assert!(results[0].device.starts_with("gpu-"), "{}", results[0].device);
    let uid = pod.metadata.uid.expect("pod uid");
    assert!(status.reserved_for.unwrap_or_default().iter().any(|r| r.uid == uid), "claim reserved for the pod");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemonset_gets_one_pod_per_kwok_node() {
    let Some(cluster) = cluster_or_skip("daemonset_gets_one_pod_per_kwok_node").await else { return };
    let ns = cluster.namespace("ds").await;
    let mut ours = BTreeSet::new();
    for i in 0..3 {
        ours.insert(ready_node(&ns, &format!("ds{i}"), &[("fgtest-ds", &ns.name)]).await);
    }
    ns.api::<DaemonSet>()
        .create(
            &PostParams::default(),
            &obj(json!({
                "metadata": {"name": "agent"},
                "spec": {
                    "selector": {"matchLabels": {"app": "agent"}},
                    "template": {
                        "metadata": {"labels": {"app": "agent"}},
                        "spec": {"nodeSelector": {"fgtest-ds": ns.name},
                                 "containers": [{"name": "c", "image": "registry.invalid/fake:1"}]}
                    }
                }
            })),
        )
        .await
        .expect("create DaemonSet");

    let pods: Api<Pod> = ns.api();
    let lp = ListParams::default().labels("app=agent");
    let running = wait_for_list(&pods, &lp, T, "3 running DaemonSet pods", |ps| ps.len() == 3 && ps.iter().all(pod_running))
        .await
        .expect("one running pod per node");
    let placed: BTreeSet<String> = running.iter().filter_map(|p| p.spec.as_ref()?.node_name.clone()).collect();
    assert_eq!(placed, ours, "each of the test's KWOK nodes gets exactly one pod");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_is_refused_what_its_role_does_not_grant() {
    let Some(cluster) = cluster_or_skip("service_account_is_refused_what_its_role_does_not_grant").await else { return };
    let ns = cluster.namespace("rbac").await;
    let pp = PostParams::default();
    ns.api::<ServiceAccount>().create(&pp, &obj(json!({"metadata": {"name": "narrow"}}))).await.expect("create SA");
    ns.api::<Role>()
        .create(
            &pp,
            &obj(json!({"metadata": {"name": "pod-reader"},
                        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]})),
        )
        .await
        .expect("create Role");
    ns.api::<RoleBinding>()
        .create(
            &pp,
            &obj(json!({"metadata": {"name": "narrow-reads-pods"},
                        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
                        "subjects": [{"kind": "ServiceAccount", "name": "narrow", "namespace": ns.name}]})),
        )
        .await
        .expect("create RoleBinding");

    // A real bound token, so the ServiceAccount authenticator is exercised as well as RBAC.
    let tr = ns
        .api::<ServiceAccount>()
        .create_token_request("narrow", &pp, &obj(json!({"spec": {"expirationSeconds": 600}})))
        .await
        .expect("TokenRequest");
    let token = tr.status.and_then(|s| s.token).expect("token in TokenRequest status");
    let mut cfg = ns.config().clone();
    cfg.auth_info = kube::config::AuthInfo { token: Some(token.into()), ..Default::default() };
    let sa = kube::Client::try_from(cfg).expect("SA client");

    let sa_pods: Api<Pod> = Api::namespaced(sa.clone(), &ns.name);
    // The authorizer's informers see the new RoleBinding a moment after it is created.
    let mut allowed = Err(kube::Error::LinesCodecMaxLineLengthExceeded);
    for _ in 0..40 {
        allowed = sa_pods.list(&ListParams::default()).await.map(|_| ());
        if allowed.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    allowed.expect("the Role grants listing pods");

    let forbidden = |r: Result<(), kube::Error>, what: &str| match r {
        Err(kube::Error::Api(s)) if s.code == 403 => {}
        other => panic!("{what}: expected 403 Forbidden, got {other:?}"),
    };
    forbidden(Api::<Secret>::namespaced(sa.clone(), &ns.name).list(&ListParams::default()).await.map(|_| ()), "list secrets");
    forbidden(sa_pods.create(&pp, &gpu_pod("p", "none", 0)).await.map(|_| ()), "create pod");
    forbidden(sa_pods.delete("anything", &Default::default()).await.map(|_| ()), "delete pod");
    forbidden(Api::<Pod>::namespaced(sa, "default").list(&ListParams::default()).await.map(|_| ()), "list pods elsewhere");
}
