//! Where the all-KWOK status-exporter's memory goes (issue 19: RSS ≤ 48 MiB at 1,000 nodes × 8
//! GPUs). Builds what the component builds from the topology ConfigMaps — each node's topology
//! parsed from its YAML, its view, the exporter's node, the topology kept for profile changes —
//! for 1,000 nodes × 8 H100 and `PODS` one-GPU pods (default 5,000) arriving one at a time (each
//! a new version of its node's ConfigMap, as the status-updater writes them), then scrapes it
//! over HTTP as Prometheus (gzip) and as a plain-text client would. Prints the live heap (a
//! counting allocator) and the RSS after each step.
//!
//! Run: `cargo run --release -p fake-gpu-operator --example exporter_memory` (`PODS=0` for none).

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fake_gpu_operator::exporter::component::{scrape_fn, tune_malloc, Watched};
use fake_gpu_operator::exporter::{Exporter, HostnameLabel};
use fake_gpu_operator::topology::{ContainerDetails, GpuDetails, GpuUsageStatus, NodeTopology, Range};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn mib(b: isize) -> f64 {
    b as f64 / 1_048_576.0
}

fn rss() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok()).unwrap_or(0.0) / 1024.0
}

fn report(step: &str) {
    println!("{step:<58} heap {:6.1} MiB   RSS {:6.1} MiB", mib(LIVE.load(Ordering::Relaxed)), rss());
}

fn main() {
    // As the binary does (main.rs `limit_malloc_arenas`).
    #[cfg(target_env = "gnu")]
    // SAFETY: sets an allocator parameter before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    // As the component does.
    tune_malloc();
    let pods: usize = std::env::var("PODS").ok().and_then(|v| v.parse().ok()).unwrap_or(5000);
    report("start");
    println!(
        "  size_of GpuState {} B, Profile {} B",
        std::mem::size_of::<fakegpu_model::state::GpuState>(),
        std::mem::size_of::<fakegpu_model::profile::Profile>()
    );
    let exporter = Arc::new(Mutex::new(Exporter::new(HostnameLabel::NodeName)));
    let watched = Watched::new(exporter.clone());
    // The example's own copy of the topologies (to make the next version of each), not counted.
    let mut topologies: BTreeMap<String, NodeTopology> = BTreeMap::new();
    let mut texts: Vec<String> = Vec::with_capacity(1000);
    let upsert = |topologies: &mut BTreeMap<String, NodeTopology>, node: &str, yaml: &str| {
        let topo = NodeTopology::from_yaml(yaml).expect("topology");
        watched.upsert(node, &topo);
        topologies.insert(node.to_owned(), topo);
    };
    for n in 0..1000 {
        let name = format!("bench-{n}");
        let topo = NodeTopology {
            gpu_memory: 81559,
            gpu_product: "NVIDIA-H100-80GB-HBM3".into(),
            mig_strategy: "none".into(),
            gpus: (0..8).map(|i| GpuDetails { id: fakegpu_model::gpu_identity(&name, i, &[]).uuid, ..Default::default() }).collect(),
            profile: Some("h100".into()),
            pool: Some("bench-b".into()),
            ..Default::default()
        };
        let yaml = topo.to_yaml();
        upsert(&mut topologies, &name, &yaml);
        texts.push(yaml);
    }
    report("1,000 nodes x 8 GPUs, no pods");
    // Pods p-0.. land round-robin on the nodes, one ConfigMap version each.
    for p in 0..pods {
        let n = p % 1000;
        let name = format!("bench-{n}");
        let mut topo = topologies[&name].clone();
        let g = &mut topo.gpus[p / 1000];
        g.status.allocated_by = ContainerDetails { namespace: "bench-pods".into(), pod: format!("p-{p}"), container: "c".into() };
        let uid = format!("{:08x}-5e1c-4c4f-9f3a-{:012x}", p * 7919, p * 104_729);
        g.status
            .pod_gpu_usage_status
            .insert(uid, GpuUsageStatus { utilization: Range { min: 40, max: 60 }, fb_used: 0, use_knative_utilization: false });
        let yaml = topo.to_yaml();
        upsert(&mut topologies, &name, &yaml);
        texts[n] = yaml;
    }
    report(&format!("+ {pods} one-GPU pods"));
    drop(texts);
    drop(topologies);
    report("(this example's ConfigMap texts and topologies dropped)");

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let bind = std::env::var("ADDR").unwrap_or_else(|_| "127.0.0.1:0".into());
    let listener = rt.block_on(tokio::net::TcpListener::bind(bind.as_str())).unwrap();
    let addr = listener.local_addr().unwrap();
    let scrape = scrape_fn(exporter.clone(), Arc::default());
    rt.spawn(fake_gpu_operator::exporter::server::serve(listener, scrape, Default::default(), std::future::pending()));
    let get = |gzip: bool| {
        let t = Instant::now();
        let mut conn = std::net::TcpStream::connect(addr).unwrap();
        let accept = if gzip { "Accept-Encoding: gzip\r\n" } else { "" };
        conn.write_all(format!("GET /metrics HTTP/1.0\r\nHost: bench\r\n{accept}\r\n").as_bytes()).unwrap();
        // Read into one small buffer: a client growing a 27 MB Vec would cost this process
        // page faults (and heap) that are not the server's.
        let mut buf = [0u8; 64 * 1024];
        let (mut len, mut head) = (0, Vec::new());
        loop {
            let n = conn.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            if head.len() < 16 {
                head.extend_from_slice(&buf[..n.min(16)]);
            }
            len += n;
        }
        assert!(head.starts_with(b"HTTP/1.") && head[8..13] == *b" 200 ", "not a 200 response");
        (t.elapsed().as_secs_f64() * 1000.0, len)
    };
    let mut gz = Vec::new();
    let mut size = 0;
    for i in 0..8 {
        let (ms, len) = get(true);
        if i >= 2 {
            gz.push(ms);
        }
        size = len;
        std::thread::sleep(Duration::from_secs(1));
    }
    gz.sort_by(f64::total_cmp);
    report(&format!("after gzip scrapes every 1 s ({:.1} MiB)", mib(size as isize)));
    println!("  gzip scrape min / median / max: {:.1} / {:.1} / {:.1} ms", gz[0], gz[gz.len() / 2], gz[gz.len() - 1]);
    let mut plain = Vec::new();
    for _ in 0..10 {
        let (ms, len) = get(false);
        plain.push(ms);
        size = len;
    }
    plain.sort_by(f64::total_cmp);
    std::thread::sleep(Duration::from_millis(500));
    report(&format!("after 10 plain scrapes ({:.1} MiB)", mib(size as isize)));
    println!("  plain scrape min / median / max: {:.1} / {:.1} / {:.1} ms", plain[0], plain[plain.len() / 2], plain[plain.len() - 1]);
    std::thread::sleep(Duration::from_secs(6));
    report("6 s later");
    // SERVE=<seconds>: keep serving on ADDR (default 127.0.0.1:9400 when set) for clients of
    // other processes (curl), e.g. to time scrapes without this process's client in them.
    if let Some(secs) = std::env::var("SERVE").ok().and_then(|v| v.parse::<u64>().ok()) {
        println!("serving on {addr} for {secs} s");
        std::thread::sleep(Duration::from_secs(secs));
        report(&format!("after {secs} s of serving"));
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load: {}", load.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
}
