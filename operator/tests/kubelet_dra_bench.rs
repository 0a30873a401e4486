//! Benchmark (ignored by default; docs/benchmarks.md "DRA slices"): kwok-dra-plugin publishing
//! slices for 1,000 KWOK nodes x 8 GPUs on the real control plane, then a resync with no change.
//! Run: `cargo test -p fake-gpu-operator --release --test kubelet_dra_bench -- --ignored --nocapture`.

use std::time::{Duration, Instant};

use fake_gpu_operator::kubelet::dra::{kwok, publish, DRIVER};
use fakegpu_cluster_support::{cluster_or_skip, objects::test_node};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::resource::v1::ResourceSlice;
use kube::api::{Api, DeleteParams, ListParams, PostParams};

const TEST: &str = "kubelet-dra-bench";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn publish_1000_nodes_x_8_gpus() {
    let Some(cluster) = cluster_or_skip(TEST).await else { return };
    let client = cluster.client.clone();
    let dra = fake_gpu_operator::resource_api::DraApi::new(client.clone()).await.unwrap();
    let n: usize = std::env::var("BENCH_NODES").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let nodes: Api<Node> = Api::all(client.clone());
    let names: Vec<String> = (0..n).map(|i| format!("dra-bench-{i:04}")).collect();
    let t = Instant::now();
    futures::stream::iter(names.iter().map(|name| {
        let nodes = nodes.clone();
        async move {
            let _ = nodes.delete(name, &DeleteParams::default()).await;
            nodes
                .create(&PostParams::default(), &test_node(name, TEST, &[(kwok::PROFILE_LABEL, "h100"), (kwok::GPU_COUNT_LABEL, "8")]))
                .await
                .map(|_| ())
        }
    }))
    .buffer_unordered(32)
    .try_collect::<Vec<_>>()
    .await
    .unwrap();
    println!("created {n} nodes in {:.1}s", t.elapsed().as_secs_f64());
    publish::ensure_device_class(&dra).await.unwrap();

    let first = kwok::sync_once(&dra, &kwok::Source::default()).await.unwrap();
    println!("publish: nodes={} writes={} took={:.2}s", first.nodes, first.writes, first.took.as_secs_f64());
    let second = kwok::sync_once(&dra, &kwok::Source::default()).await.unwrap();
    println!("resync (no change): nodes={} writes={} took={:.2}s", second.nodes, second.writes, second.took.as_secs_f64());
    let slices: Api<ResourceSlice> = Api::all(client.clone());
    let count = slices
        .list(&ListParams::default().fields(&format!("spec.driver={DRIVER}")))
        .await
        .unwrap()
        .items
        .iter()
        .filter(|s| s.spec.node_name.as_deref().is_some_and(|n| n.starts_with("dra-bench-")))
        .count();
    println!("slices in the API: {count}");
    assert_eq!(count, n);
    assert_eq!(second.writes, 0);
    assert!(first.took <= Duration::from_secs(30), "goal: 30 s");

    futures::stream::iter(names.iter().map(|name| {
        let nodes = nodes.clone();
        async move { nodes.delete(name, &DeleteParams::default()).await.map(|_| ()) }
    }))
    .buffer_unordered(32)
    .try_collect::<Vec<_>>()
    .await
    .unwrap();
    kwok::sync_once(&dra, &kwok::Source::default()).await.unwrap();
}
