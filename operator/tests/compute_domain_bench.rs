//! Benchmark (ignored by default; docs/benchmarks.md "Compute Domains"): 100 ComputeDomains of
//! `numNodes: 4` on 4 GB200 KWOK nodes (one NVL72 clique), one pod per domain and node (400
//! claims the real scheduler allocates), timed from the first create until every domain is
//! Ready; the controller runs in this process, the KWOK plugin published the channels before.
//! Run: `cargo test -p fake-gpu-operator --release --test compute_domain_bench -- --ignored --nocapture`.

use std::time::{Duration, Instant};

use fake_gpu_operator::compute_domain::types::{ComputeDomain, READY};
use fake_gpu_operator::compute_domain::{channels, controller, crds, kwok};
use fake_gpu_operator::kubelet::dra::kwok::{GPU_COUNT_LABEL, PROFILE_LABEL};
use fakegpu_cluster_support::{cluster_or_skip, objects::test_node};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;

const TEST: &str = "compute-domain-bench";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn hundred_domains_x_4_nodes_to_ready() {
    let Some(cluster) = cluster_or_skip(TEST).await else { return };
    let client = cluster.client.clone();
    let dra = fake_gpu_operator::resource_api::DraApi::new(client.clone()).await.unwrap();
    let domains_n: usize = std::env::var("BENCH_DOMAINS").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    crds::install(&client).await.unwrap();
    let ns = cluster.namespace("cd-bench").await;
    let nodes: Api<Node> = Api::all(client.clone());
    let names: Vec<String> = (0..4).map(|i| format!("cd-bench-{i:03}")).collect();
    for n in &names {
        let _ = nodes.delete(n, &DeleteParams::default()).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        nodes.create(&PostParams::default(), &test_node(n, TEST, &[(PROFILE_LABEL, "gb200"), (GPU_COUNT_LABEL, "4")])).await.unwrap();
        ns.track::<Node>(n);
    }
    kwok::ensure_device_classes(&dra).await.unwrap();
    kwok::sync_once(&dra, None, channels::DEFAULT_CHANNELS).await.unwrap();
    // The pool must be visible to the scheduler before the first pod.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ctl = tokio::spawn(controller::run(client.clone(), Duration::from_secs(30), Duration::from_millis(100)));
    let domains: Api<ComputeDomain> = ns.api();
    let pods: Api<Pod> = ns.api();

    let t = Instant::now();
    futures::stream::iter((0..domains_n).map(|d| {
        let (domains, pods, names) = (domains.clone(), pods.clone(), names.clone());
        async move {
            let name = format!("cd-{d:03}");
            let cd: ComputeDomain = serde_json::from_value(json!({
                "apiVersion": "resource.nvidia.com/v1beta1", "kind": "ComputeDomain", "metadata": {"name": name},
                "spec": {"numNodes": 4, "channel": {"resourceClaimTemplate": {"name": format!("{name}-channel")}}}
            }))
            .unwrap();
            domains.create(&PostParams::default(), &cd).await?;
            for (i, node) in names.iter().enumerate() {
                let pod: Pod = serde_json::from_value(json!({
                    "metadata": {"name": format!("{name}-{i}")},
                    "spec": {
                        "containers": [{"name": "c", "image": "busybox", "resources": {"claims": [{"name": "imex"}]}}],
                        "resourceClaims": [{"name": "imex", "resourceClaimTemplateName": format!("{name}-channel")}],
                        "nodeSelector": {"kubernetes.io/hostname": node},
                        "tolerations": [{"operator": "Exists"}]
                    }
                }))
                .unwrap();
                pods.create(&PostParams::default(), &pod).await?;
            }
            Ok::<_, kube::Error>(())
        }
    }))
    .buffer_unordered(16)
    .try_collect::<Vec<_>>()
    .await
    .unwrap();
    let created = t.elapsed();
    loop {
        let list = domains.list(&ListParams::default()).await.unwrap().items;
        let ready = list.iter().filter(|d| d.status.as_ref().is_some_and(|s| s.status == READY)).count();
        if ready == domains_n {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(600), "only {ready}/{domains_n} Ready after 600 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let all_ready = t.elapsed();
    println!(
        "{domains_n} domains x 4 nodes ({} claims): created in {:.1}s, all Ready after {:.1}s",
        domains_n * 4,
        created.as_secs_f64(),
        all_ready.as_secs_f64()
    );
    let again = controller::pass(&dra).await.unwrap();
    println!("a full pass over the settled state: {} writes in {} ms", again.writes, again.took.as_millis());

    // Clean up while the controller runs (finalizers).
    let _ = pods.delete_collection(&DeleteParams::default().grace_period(0), &ListParams::default()).await;
    let _ = domains.delete_collection(&DeleteParams::default(), &ListParams::default()).await;
    for _ in 0..600 {
        if domains.list(&ListParams::default()).await.unwrap().items.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ctl.abort();
}
