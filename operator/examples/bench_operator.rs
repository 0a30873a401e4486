//! Operator benchmark driver (scripts/bench-operator.sh runs it against a private cluster that
//! `cluster up --no-operator --audit-log` started; this driver starts the operator's components
//! itself, so that their cold start is measured):
//!
//! 1. Cold start: N KWOK nodes (default 1,000), Ready and already labelled into pool `bench`
//!    (8 × H100) before the components start; time from starting the status-updater,
//!    kwok-gpu-device-plugin, status-exporter and topology-server to every node having its labels,
//!    allocatable `nvidia.com/gpu: 8` and an 8-GPU topology ConfigMap.
//! 2. Re-label: every node moved to pool `bench-b` (8 × A100): time until all of it is right again.
//! 3. P one-GPU pods (default 5,000) placed by the real scheduler: for each pod, the time between
//!    this driver seeing it bound and seeing it in its node's topology ConfigMap (p50/p99/max).
//! 4. Whole `/metrics` scrapes of the exporter serving all 8,000 GPUs: plain, and gzip at a
//!    Prometheus-like interval.
//! 5. All pods deleted: time until every GPU is free again.
//!
//! After phases 1 and 2: CPU seconds of each component, and the API requests each client made
//! (from the API server's audit log, by User-Agent); after phase 2, each component's CPU while
//! idle (converged, nothing changing). At the end: each component's RSS.
//!
//! Env: KUBECONFIG, FAKEGPU_OPERATOR_BIN, BENCH_RUN_DIR (logs and node files), BENCH_AUDIT_LOG,
//! BENCH_NODES, BENCH_PODS, BENCH_POD_RATE (creates per second, default: no pacing).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
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
const TOPOLOGY_NS: &str = fakegpu_cluster::operator::NAMESPACE;
/// How long idle CPU is measured.
const IDLE_WINDOW: Duration = Duration::from_secs(10);

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

/// The operator's components as child processes, killed when dropped.
struct Components {
    children: Vec<(&'static str, std::process::Child)>,
    metrics_addr: String,
}

impl Components {
    fn start(binary: &Path, kubeconfig: &Path, run_dir: &Path) -> anyhow::Result<Components> {
        let free_port = || std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port());
        let ports = fakegpu_cluster::operator::Ports { topology_server: free_port()?, metrics: free_port()? };
        let logs = run_dir.join("logs");
        std::fs::create_dir_all(&logs)?;
        let mut children = Vec::new();
        for (name, args) in fakegpu_cluster::operator::components(kubeconfig, run_dir, ports) {
            let log = std::fs::File::create(logs.join(format!("bench-{name}.log")))?;
            let child = std::process::Command::new(binary).args(&args).stdout(log.try_clone()?).stderr(log).spawn()?;
            children.push((name, child));
        }
        Ok(Components { children, metrics_addr: format!("127.0.0.1:{}", ports.metrics) })
    }

    /// (component, CPU seconds so far).
    fn cpu(&self) -> Vec<(&'static str, f64)> {
        self.children.iter().map(|(n, c)| (*n, cpu_seconds(c.id()))).collect()
    }

    fn print_rss(&self) {
        for (name, c) in &self.children {
            let status = std::fs::read_to_string(format!("/proc/{}/status", c.id())).unwrap_or_default();
            let kib = |k: &str| status.lines().find(|l| l.starts_with(k)).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok());
            println!(
                "  {name:<24} RSS {:6.1} MiB  peak {:6.1} MiB",
                kib("VmRSS:").unwrap_or(0.0) / 1024.0,
                kib("VmHWM:").unwrap_or(0.0) / 1024.0
            );
        }
    }
}

impl Drop for Components {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// utime + stime of a process, seconds (clock ticks of 1/100 s, as Linux reports them).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat, i.e. 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// The audit log read from a byte offset on: requests by client (User-Agent up to the first
/// space or slash-version) → (reads, writes), and the new offset.
fn audit_counts(log: &Path, from: u64) -> (BTreeMap<String, (u64, u64, u64)>, u64) {
    use std::io::{BufRead, Seek};
    let mut counts: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
    let Ok(mut f) = std::fs::File::open(log) else { return (counts, from) };
    let _ = f.seek(std::io::SeekFrom::Start(from));
    let mut reader = std::io::BufReader::new(f);
    let mut offset = from;
    let mut line = String::new();
    while reader.read_line(&mut line).unwrap_or(0) > 0 {
        if !line.ends_with('\n') {
            break; // being written: next time
        }
        offset += line.len() as u64;
        if let Ok(ev) = serde_json::from_str::<serde_json::Value>(&line) {
            let agent = ev["userAgent"].as_str().unwrap_or("");
            // `fake-gpu-operator/0.1.0 (status-updater)` → `status-updater`; Go clients:
            // `kube-scheduler/v1.37.2 (linux/amd64) …` → `kube-scheduler`.
            let client = agent
                .split_once('(')
                .filter(|(head, _)| head.starts_with("fake-gpu-operator/"))
                .map(|(_, tail)| tail.trim_end_matches(')').to_string())
                .unwrap_or_else(|| agent.split(['/', ' ']).next().unwrap_or("").to_string());
            let write = matches!(ev["verb"].as_str(), Some("create" | "update" | "patch" | "delete" | "deletecollection"));
            let e = counts.entry(if client.is_empty() { "(none)".into() } else { client }).or_default();
            // A write refused on its precondition (409) changed nothing: counted apart.
            if write && ev["responseStatus"]["code"].as_u64() == Some(409) {
                e.2 += 1;
            } else if write {
                e.1 += 1;
            } else {
                e.0 += 1;
            }
        }
        line.clear();
    }
    (counts, offset)
}

/// Prints CPU seconds spent per component since `before`, and the audit log's requests since
/// `offset` (returns the new offset).
fn report_costs(c: &Components, before: &[(&'static str, f64)], audit: Option<&Path>, offset: u64) -> u64 {
    let now = c.cpu();
    let total: f64 = now.iter().zip(before).map(|((_, a), (_, b))| a - b).sum();
    let each: Vec<String> = now.iter().zip(before).map(|((n, a), (_, b))| format!("{n} {:.2}", a - b)).collect();
    println!("  CPU seconds: {total:.2} ({})", each.join(", "));
    let Some(log) = audit else { return offset };
    let (counts, next) = audit_counts(log, offset);
    let line: Vec<String> =
        counts.iter().map(|(k, (r, w, c))| if *c > 0 { format!("{k} {r}r/{w}w/{c}c") } else { format!("{k} {r}r/{w}w") }).collect();
    println!("  API requests (reads/writes/conflicts: writes refused, nothing changed) by client: {}", line.join(", "));
    next
}

/// A bench node as the driver sees it: `nvidia.com/gpu.count`, `nvidia.com/gpu.product`,
/// allocatable `nvidia.com/gpu`.
type NodeSeen = (String, String, String);

/// What the driver sees of the bench nodes and their topology ConfigMaps, kept by two watches
/// (polling lists of 1,000 nodes would load the API server more than the operator does).
#[derive(Clone, Default)]
struct Observed {
    nodes: Arc<Mutex<HashMap<String, NodeSeen>>>,
    /// ConfigMap → (GPUs, product)
    cms: Arc<Mutex<HashMap<String, (usize, String)>>>,
}

impl Observed {
    fn start(nodes: Api<Node>, cms: Api<ConfigMap>) -> Observed {
        let o = Observed::default();
        let seen = o.nodes.clone();
        tokio::spawn(async move {
            let mut s = watcher::watcher(nodes, watcher::Config::default()).default_backoff().boxed();
            while let Some(ev) = s.next().await {
                match ev {
                    Ok(Event::Apply(n) | Event::InitApply(n)) if n.name_any().starts_with("bench-") => {
                        let label = |k: &str| n.labels().get(k).cloned().unwrap_or_default();
                        let alloc = n.status.as_ref().and_then(|s| s.allocatable.as_ref()).and_then(|a| a.get("nvidia.com/gpu"));
                        let v = (
                            label("nvidia.com/gpu.count"),
                            label("nvidia.com/gpu.product"),
                            alloc.map(|q| q.0.clone()).unwrap_or_default(),
                        );
                        seen.lock().unwrap().insert(n.name_any(), v);
                    }
                    Ok(Event::Delete(n)) => {
                        seen.lock().unwrap().remove(&n.name_any());
                    }
                    _ => {}
                }
            }
        });
        let seen = o.cms.clone();
        tokio::spawn(async move {
            let cfg = watcher::Config::default().labels(&format!("{NODE_TOPOLOGY_LABEL}=true"));
            let mut s = watcher::watcher(cms, cfg).default_backoff().boxed();
            while let Some(ev) = s.next().await {
                match ev {
                    Ok(Event::Apply(c) | Event::InitApply(c)) if c.name_any().starts_with("topology-bench-") => {
                        let t = c.data.as_ref().and_then(|d| d.get(TOPOLOGY_KEY)).and_then(|t| NodeTopology::from_yaml(t).ok());
                        let v = t.map_or((0, String::new()), |t| (t.gpus.len(), t.gpu_product));
                        seen.lock().unwrap().insert(c.name_any(), v);
                    }
                    Ok(Event::Delete(c)) => {
                        seen.lock().unwrap().remove(&c.name_any());
                    }
                    _ => {}
                }
            }
        });
        o
    }

    /// Every `bench-*` node with `marker` (e.g. "H100") in its product label, 8 GPUs counted and
    /// allocatable, and an 8-GPU topology ConfigMap of that product.
    fn converged(&self, n: usize, marker: &str) -> bool {
        let ok_nodes = self
            .nodes
            .lock()
            .unwrap()
            .values()
            .filter(|(count, product, alloc)| count == "8" && alloc == "8" && product.contains(marker))
            .count();
        let ok_cms = self.cms.lock().unwrap().values().filter(|(gpus, product)| *gpus == 8 && product.contains(marker)).count();
        ok_nodes >= n && ok_cms >= n
    }

    async fn wait_converged(&self, n: usize, marker: &str, start: Instant) -> anyhow::Result<Duration> {
        loop {
            if self.converged(n, marker) {
                return Ok(start.elapsed());
            }
            anyhow::ensure!(start.elapsed() < Duration::from_secs(600), "not converged after 600 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let nodes_n = env_num("BENCH_NODES", 1000);
    let pods_n = env_num("BENCH_PODS", 5000);
    let binary = PathBuf::from(std::env::var("FAKEGPU_OPERATOR_BIN")?);
    let kubeconfig = PathBuf::from(std::env::var("KUBECONFIG")?);
    let run_dir = PathBuf::from(std::env::var("BENCH_RUN_DIR")?);
    let audit = std::env::var_os("BENCH_AUDIT_LOG").map(PathBuf::from);
    let client = Client::try_default().await?;
    let nodes: Api<Node> = Api::all(client.clone());
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), TOPOLOGY_NS);
    let ns_api: Api<Namespace> = Api::all(client.clone());
    let _ = ns_api.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": TOPOLOGY_NS}}))?).await;

    // Two pools of 8 GPUs: H100 and A100.
    let pools = "nodePools:\n  bench:\n    gpu: {profile: h100, overrides: {device_count: 8}}\n  bench-b:\n    gpu: {profile: a100-80gb, overrides: {device_count: 8}}\n";
    let cfg = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "topology", "namespace": TOPOLOGY_NS},
        "data": {TOPOLOGY_KEY: pools}});
    cms.patch("topology", &PatchParams::apply("bench").force(), &Patch::Apply(&cfg)).await?;

    // 1. cold start
    let observed = Observed::start(nodes.clone(), cms.clone());
    eprintln!("creating {nodes_n} KWOK nodes in pool bench");
    let names: Vec<String> = (0..nodes_n).map(|i| format!("bench-{i}")).collect();
    let labels = BTreeMap::from([(POOL_KEY.to_string(), "bench".to_string())]);
    concurrently(nodes_n, 32, |i| {
        let nodes = nodes.clone();
        let n = fakegpu_cluster::nodes::kwok_node(&names[i], &labels);
        async move {
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
    let mut offset = audit.as_deref().and_then(|p| std::fs::metadata(p).ok()).map_or(0, |m| m.len());
    eprintln!("{nodes_n} nodes Ready; starting the operator's components (load: {})", loadavg());
    let start = Instant::now();
    let components = Components::start(&binary, &kubeconfig, &run_dir)?;
    let zero: Vec<(&str, f64)> = components.cpu().into_iter().map(|(n, _)| (n, 0.0)).collect();
    let cold = observed.wait_converged(nodes_n, "H100", start).await?;
    println!("cold start: {nodes_n} x 8 GPUs converged {:.2}s after the components started", cold.as_secs_f64());
    offset = report_costs(&components, &zero, audit.as_deref(), offset);

    // 2. re-label
    tokio::time::sleep(Duration::from_secs(2)).await;
    offset = audit.as_deref().and_then(|p| std::fs::metadata(p).ok()).map_or(offset, |m| m.len());
    let before = components.cpu();
    eprintln!("moving every node to pool bench-b (load: {})", loadavg());
    let start = Instant::now();
    concurrently(nodes_n, 32, |i| {
        let nodes = nodes.clone();
        let name = names[i].clone();
        async move {
            let _ =
                nodes.patch(&name, &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {POOL_KEY: "bench-b"}}}))).await;
        }
    })
    .await;
    let labelled = start.elapsed();
    let relabel = observed.wait_converged(nodes_n, "A100", start).await?;
    println!("re-label: labelling took {:.2}s; converged {:.2}s after the first label", labelled.as_secs_f64(), relabel.as_secs_f64());
    report_costs(&components, &before, audit.as_deref(), offset);

    // Idle: converged and nothing changing (past the components' after-burst memory release).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = components.cpu();
    tokio::time::sleep(IDLE_WINDOW).await;
    let idle: Vec<String> = components
        .cpu()
        .iter()
        .zip(&before)
        .map(|((n, a), (_, b))| format!("{n} {:.2} %", 100.0 * (a - b) / IDLE_WINDOW.as_secs_f64()))
        .collect();
    println!("idle CPU over {} s, % of one core: {}", IDLE_WINDOW.as_secs(), idle.join(", "));

    // 3. pods
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
                "spec": {"nodeSelector": {POOL_KEY: "bench-b"}, "containers": [{"name": "c", "image": "registry.invalid/x:1",
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

    // 4. The exporter serving all 8,000 GPUs with half of them busy: whole HTTP scrapes, gzip
    // every 5 s as Prometheus would (the first two render on the request), then plain text.
    for gzip in [true, false] {
        let mut times = Vec::new();
        let mut bytes = 0;
        for i in 0..7 {
            let t = Instant::now();
            bytes = scrape(&components.metrics_addr, gzip).await?;
            if !gzip || i >= 2 {
                times.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            if gzip {
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
        times.sort_by(f64::total_cmp);
        if gzip {
            // Before any plain-text scrape (whose 27 MB buffer the exporter keeps for the next).
            println!("components after the gzip scrapes:");
            components.print_rss();
        }
        println!(
            "exporter /metrics over HTTP{} ({} bytes): min {:.1} ms, median {:.1} ms, max {:.1} ms",
            if gzip { ", gzip every 5 s" } else { "" },
            bytes,
            times[0],
            pct(&times, 0.5),
            times[times.len() - 1]
        );
    }

    // 5. delete
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
    println!("components at the end:");
    components.print_rss();
    Ok(())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// One `GET /metrics` (HTTP/1.0, so the server closes the connection); the body's length as sent.
async fn scrape(addr: &str, gzip: bool) -> anyhow::Result<usize> {
    use std::io::{Read, Write};
    let addr = addr.to_string();
    tokio::task::spawn_blocking(move || {
        let mut conn = std::net::TcpStream::connect(&addr)?;
        let accept = if gzip { "Accept-Encoding: gzip\r\n" } else { "" };
        conn.write_all(format!("GET /metrics HTTP/1.0\r\nHost: bench\r\n{accept}\r\n").as_bytes())?;
        let mut response = Vec::new();
        conn.read_to_end(&mut response)?;
        let body = response.windows(4).position(|w| w == b"\r\n\r\n").map_or(0, |i| response.len() - i - 4);
        anyhow::ensure!(response.starts_with(b"HTTP/1.") && body > 0, "bad /metrics response from {addr}");
        Ok(body)
    })
    .await?
}
