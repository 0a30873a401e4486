//! Operator benchmark driver (scripts/bench-operator.sh runs it against a private cluster with
//! the status-updater and kwok-gpu-device-plugin already started):
//!
//! 1. N KWOK nodes (default 1,000), Ready, then all labelled into pool `bench` (8 GPUs each):
//!    time from the first label to every node having labels, allocatable and an 8-GPU topology.
//! 2. P one-GPU pods (default 5,000) placed by the real scheduler: for each pod, the time between
//!    this driver seeing it bound and seeing it in its node's topology ConfigMap (p50/p99/max).
//! 3. With BENCH_METRICS_ADDR (host:port of the status-exporter): five whole `/metrics` scrapes.
//! 4. All pods deleted: time until every GPU is free again.
//!
//! Env: KUBECONFIG, BENCH_NODES, BENCH_PODS, BENCH_POD_RATE (creates per second, default: no
//! pacing), BENCH_NS (topology namespace, default gpu-operator).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fake_gpu_operator::topology::{NodeTopology, NODE_TOPOLOGY_LABEL, TOPOLOGY_KEY};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, ResourceExt};
use serde_json::json;

const POOL_KEY: &str = "run.ai/simulated-gpu-node-pool";
const PODS_NS: &str = "bench-pods";

fn env_num(k: &str, d: usize) -> usize {
    std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d)
}

async fn concurrently<F, Fut>(n: usize, width: usize, f: F)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    futures::stream::iter((0..n).map(f)).buffer_unordered(width).collect::<Vec<_>>().await;
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let nodes_n = env_num("BENCH_NODES", 1000);
    let pods_n = env_num("BENCH_PODS", 5000);
    let topo_ns = std::env::var("BENCH_NS").unwrap_or_else(|_| "gpu-operator".into());
    let client = Client::try_default().await?;
    let nodes: Api<Node> = Api::all(client.clone());
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &topo_ns);

    // The pool: 8 × H100.
    let cfg = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "topology", "namespace": topo_ns},
        "data": {TOPOLOGY_KEY: "nodePools:\n  bench:\n    gpu: {profile: h100, overrides: {device_count: 8}}\n"}});
    cms.patch("topology", &PatchParams::apply("bench").force(), &Patch::Apply(&cfg)).await?;

    // 1. nodes
    eprintln!("creating {nodes_n} KWOK nodes");
    let names: Vec<String> = (0..nodes_n).map(|i| format!("bench-{i}")).collect();
    concurrently(nodes_n, 32, |i| {
        let nodes = nodes.clone();
        let name = names[i].clone();
        async move {
            let n = fakegpu_cluster::nodes::kwok_node(&name, &Default::default());
            let _ = nodes.create(&PostParams::default(), &n).await;
        }
    })
    .await;
    loop {
        let list = nodes.list(&ListParams::default()).await?;
        let ready = list.items.iter().filter(|n| n.name_any().starts_with("bench-") && fakegpu_cluster::nodes::is_ready(n)).count();
        if ready >= nodes_n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!("{nodes_n} nodes Ready; labelling into pool bench");
    let start = Instant::now();
    concurrently(nodes_n, 32, |i| {
        let nodes = nodes.clone();
        let name = names[i].clone();
        async move {
            let _ = nodes.patch(&name, &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {POOL_KEY: "bench"}}}))).await;
        }
    })
    .await;
    let labelled = start.elapsed();
    let converged = loop {
        let list = nodes.list(&ListParams::default()).await?;
        let ok_nodes = list
            .items
            .iter()
            .filter(|n| n.name_any().starts_with("bench-"))
            .filter(|n| {
                n.labels().get("nvidia.com/gpu.count").map(String::as_str) == Some("8")
                    && n.status
                        .as_ref()
                        .and_then(|s| s.allocatable.as_ref())
                        .and_then(|a| a.get("nvidia.com/gpu"))
                        .is_some_and(|q| q.0 == "8")
            })
            .count();
        let cm_list = cms.list(&ListParams::default().labels(&format!("{NODE_TOPOLOGY_LABEL}=true"))).await?;
        let ok_cms = cm_list
            .items
            .iter()
            .filter(|c| c.name_any().starts_with("topology-bench-"))
            .filter(|c| {
                c.data
                    .as_ref()
                    .and_then(|d| d.get(TOPOLOGY_KEY))
                    .and_then(|t| NodeTopology::from_yaml(t).ok())
                    .is_some_and(|t| t.gpus.len() == 8)
            })
            .count();
        if ok_nodes >= nodes_n && ok_cms >= nodes_n {
            break start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!(
        "nodes: {nodes_n} x 8 GPUs; labelling took {:.2}s; converged {:.2}s after the first label",
        labelled.as_secs_f64(),
        converged.as_secs_f64()
    );

    // 2. pods
    let ns_api: Api<Namespace> = Api::all(client.clone());
    let _ = ns_api.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": PODS_NS}}))?).await;
    let bound: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let recorded: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let pods: Api<Pod> = Api::namespaced(client.clone(), PODS_NS);
    {
        let bound = bound.clone();
        let pods = pods.clone();
        tokio::spawn(async move {
            let mut s = watcher::watcher(pods, watcher::Config::default()).default_backoff().boxed();
            while let Some(Ok(ev)) = s.next().await {
                if let Event::Apply(p) | Event::InitApply(p) = ev {
                    if p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some() {
                        bound.lock().unwrap().entry(p.name_any()).or_insert_with(Instant::now);
                    }
                }
            }
        });
    }
    {
        let recorded = recorded.clone();
        let cms = cms.clone();
        tokio::spawn(async move {
            let cfg = watcher::Config::default().labels(&format!("{NODE_TOPOLOGY_LABEL}=true"));
            let mut s = watcher::watcher(cms, cfg).default_backoff().boxed();
            while let Some(Ok(ev)) = s.next().await {
                if let Event::Apply(c) | Event::InitApply(c) = ev {
                    if let Some(t) = c.data.as_ref().and_then(|d| d.get(TOPOLOGY_KEY)).and_then(|t| NodeTopology::from_yaml(t).ok()) {
                        let now = Instant::now();
                        let mut r = recorded.lock().unwrap();
                        for g in &t.gpus {
                            if g.status.allocated_by.namespace == PODS_NS {
                                r.entry(g.status.allocated_by.pod.clone()).or_insert(now);
                            }
                        }
                    }
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    eprintln!("creating {pods_n} one-GPU pods");
    let pstart = Instant::now();
    // BENCH_POD_RATE paces the creates (pods per second); unset = as fast as 32 in flight go.
    let rate = env_num("BENCH_POD_RATE", 0);
    concurrently(pods_n, 32, |i| {
        let pods = pods.clone();
        async move {
            if rate > 0 {
                tokio::time::sleep_until((pstart + Duration::from_secs_f64(i as f64 / rate as f64)).into()).await;
            }
            let p: Pod = serde_json::from_value(json!({
                "metadata": {"name": format!("p-{i}"), "annotations": {"run.ai/simulated-gpu-utilization": "40-60"}},
                "spec": {"nodeSelector": {POOL_KEY: "bench"}, "containers": [{"name": "c", "image": "registry.invalid/x:1",
                         "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}
            }))
            .unwrap();
            let _ = pods.create(&PostParams::default(), &p).await;
        }
    })
    .await;
    let created = pstart.elapsed();
    let deadline = Instant::now() + Duration::from_secs(600);
    while recorded.lock().unwrap().len() < pods_n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let all_recorded = pstart.elapsed();
    let mut lat: Vec<f64> = {
        let b = bound.lock().unwrap();
        let r = recorded.lock().unwrap();
        b.iter().filter_map(|(k, tb)| r.get(k).map(|tr| tr.saturating_duration_since(*tb).as_secs_f64() * 1000.0)).collect()
    };
    lat.sort_by(f64::total_cmp);
    let (nb, nr) = (bound.lock().unwrap().len(), recorded.lock().unwrap().len());
    println!(
        "pods: {pods_n} created in {:.1}s; {nb} bound, {nr} recorded, all recorded {:.1}s after the first create",
        created.as_secs_f64(),
        all_recorded.as_secs_f64()
    );
    println!("allocation recorded behind the bind (ms): p50 {:.0}  p99 {:.0}  max {:.0}", pct(&lat, 0.5), pct(&lat, 0.99), pct(&lat, 1.0));

    // The exporter serving all 8,000 GPUs with half of them busy: whole HTTP scrapes.
    if let Ok(addr) = std::env::var("BENCH_METRICS_ADDR") {
        let mut times = Vec::new();
        let mut bytes = 0;
        for _ in 0..5 {
            let t = Instant::now();
            bytes = scrape(&addr).await?;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        println!(
            "exporter /metrics over HTTP ({} bytes): min {:.0} ms, median {:.0} ms, max {:.0} ms",
            bytes,
            times[0],
            pct(&times, 0.5),
            times[times.len() - 1]
        );
    }

    // 3. delete
    let dstart = Instant::now();
    // One DELETE per pod: a delete-collection of thousands of pods outlives the client's
    // request timeout on a busy API server.
    concurrently(pods_n, 32, |i| {
        let pods = pods.clone();
        async move {
            for _ in 0..5 {
                match pods.delete(&format!("p-{i}"), &DeleteParams::default().grace_period(0)).await {
                    Ok(_) => return,
                    Err(kube::Error::Api(e)) if e.code == 404 => return,
                    Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
                }
            }
        }
    })
    .await;
    loop {
        let cm_list = cms.list(&ListParams::default().labels(&format!("{NODE_TOPOLOGY_LABEL}=true"))).await?;
        let held: usize = cm_list
            .items
            .iter()
            .filter_map(|c| c.data.as_ref().and_then(|d| d.get(TOPOLOGY_KEY)).and_then(|t| NodeTopology::from_yaml(t).ok()))
            .map(|t| t.gpus.iter().filter(|g| g.status.allocated_by.namespace == PODS_NS).count())
            .sum();
        if held == 0 || dstart.elapsed() > Duration::from_secs(600) {
            println!("pods deleted: every GPU free {:.1}s after the delete ({held} still held)", dstart.elapsed().as_secs_f64());
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// One `GET /metrics` (HTTP/1.0, so the server closes the connection); the body's length.
async fn scrape(addr: &str) -> anyhow::Result<usize> {
    use std::io::{Read, Write};
    let addr = addr.to_string();
    tokio::task::spawn_blocking(move || {
        let mut conn = std::net::TcpStream::connect(&addr)?;
        conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n")?;
        let mut response = Vec::new();
        conn.read_to_end(&mut response)?;
        let body = response.windows(4).position(|w| w == b"\r\n\r\n").map_or(0, |i| response.len() - i - 4);
        anyhow::ensure!(response.starts_with(b"HTTP/1.") && body > 0, "bad /metrics response from {addr}");
        Ok(body)
    })
    .await?
}
