//! Scrape cost of the status-exporter: 1,000 nodes × 8 GPUs (8,000 GPUs), half of them held by
//! a pod with a utilization range. Run: `cargo bench -p fake-gpu-operator --bench exporter_scrape`.
//! Prints min/median/max wall time of one full scrape (every value from the model's dynamics on
//! each GPU's live state, and the text) and the body size.

use std::sync::Arc;
use std::time::Instant;

use fake_gpu_operator::exporter::{Exporter, GpuView, HostnameLabel, NodeView, Owner, PodUsage};
use fakegpu_model::state::Now;

const T0: Now = Now { unix_ms: 1_764_000_000_000, boot_ms: 3_600_000 };

fn at(ms: u64) -> Now {
    Now { unix_ms: T0.unix_ms + ms, boot_ms: T0.boot_ms + ms }
}

fn main() {
    let profile = Arc::new(fakegpu_model::find_builtin("h100").unwrap().clone());
    let mut e = Exporter::new(HostnameLabel::NodeName);
    for n in 0..1000 {
        let name = format!("kwok-pool-{n}");
        let gpus = (0..8u32)
            .map(|i| {
                let uuid = fakegpu_model::gpu_identity(&name, i, &[]).uuid;
                let busy = i % 2 == 0;
                GpuView {
                    index: i,
                    owner: busy.then(|| Owner { namespace: "team-a".into(), pod: format!("train-{n}-{i}"), container: "main".into() }),
                    usages: if busy {
                        vec![PodUsage {
                            pod_uid: format!("uid-{n}-{i}"),
                            util_min: 60,
                            util_max: 100,
                            fb_used_mib: 40_000,
                            use_knative: false,
                        }]
                    } else {
                        vec![]
                    },
                    uuid,
                    mig: None,
                }
            })
            .collect();
        e.upsert(NodeView { name, model_name: profile.product_name.clone(), profile: profile.clone(), gpus }, T0);
    }
    assert_eq!(e.gpu_count(), 8000);
    let mut times = Vec::new();
    let mut size = 0;
    for round in 0..30u64 {
        let t = Instant::now();
        let body = e.scrape(at(round * 10_000), &|_| None);
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        size = body.len();
    }
    let series = e.scrape(at(400_000), &|_| None).lines().filter(|l| !l.starts_with('#')).count();
    println!("exporter scrape, 8000 GPUs: {}; body {:.1} MiB, {series} series", spread(&mut times), size as f64 / 1_048_576.0);
    let body = e.scrape(at(410_000), &|_| None);
    let t = Instant::now();
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut enc, body.as_bytes()).unwrap();
    let packed = enc.finish().unwrap();
    println!("gzip (level 1) of that body: {:.1} ms, {:.2} MiB", t.elapsed().as_secs_f64() * 1000.0, packed.len() as f64 / 1_048_576.0);
    over_http(e);
}

/// The same exporter behind the component's HTTP server on loopback: whole `GET /metrics`
/// round trips, and the process's peak RSS afterwards.
fn over_http(e: Exporter) {
    use std::io::{Read, Write};
    let exporter = Arc::new(std::sync::Mutex::new(e));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    let round = std::sync::atomic::AtomicU64::new(0);
    let scrape: fake_gpu_operator::exporter::server::Scrape = Arc::new(move |out| {
        let r = round.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        exporter.lock().unwrap().scrape_out(out, at(500_000 + r * 10_000), &|_| None)
    });
    rt.spawn(fake_gpu_operator::exporter::server::serve(listener, scrape, Default::default(), std::future::pending()));
    let get = |gzip: bool| {
        let t = Instant::now();
        let mut conn = std::net::TcpStream::connect(addr).unwrap();
        let accept = if gzip { "Accept-Encoding: gzip\r\n" } else { "" };
        conn.write_all(format!("GET /metrics HTTP/1.0\r\nHost: bench\r\n{accept}\r\n").as_bytes()).unwrap();
        let mut response = Vec::new();
        conn.read_to_end(&mut response).unwrap();
        assert!(response.starts_with(b"HTTP/1.") && response[8..13] == *b" 200 ", "not a 200 response");
        (t.elapsed().as_secs_f64() * 1000.0, response)
    };
    let mut times: Vec<f64> = (0..10).map(|_| get(false).0).collect();
    // A Prometheus-like scraper: gzip, every second. The first two requests render on the
    // request (the interval is not known yet); from the third on the body was rendered ahead.
    let mut gz_times = Vec::new();
    let mut gz_size = 0;
    let mut inflate_ms = 0.0;
    for i in 0..12 {
        let (ms, response) = get(true);
        if i >= 2 {
            gz_times.push(ms);
        }
        let split = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        gz_size = response.len() - split;
        let t = Instant::now();
        let mut text = Vec::new();
        flate2::read::GzDecoder::new(&response[split..]).read_to_end(&mut text).unwrap();
        inflate_ms = t.elapsed().as_secs_f64() * 1000.0;
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    println!(
        "gzip over HTTP, scraped every 1 s: {}; body {:.2} MiB (inflating it: {:.0} ms in the client)",
        spread(&mut gz_times),
        gz_size as f64 / 1_048_576.0,
        inflate_ms
    );
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let mib = |key: &str| {
        status.lines().find(|l| l.starts_with(key)).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok()).unwrap_or(0.0) / 1024.0
    };
    println!(
        "over HTTP on loopback: {}; process RSS {:.1} MiB after, peak {:.1} MiB (the bench's own copies included)",
        spread(&mut times),
        mib("VmRSS"),
        mib("VmHWM")
    );
}

/// `min … ms, median … ms, max … ms` of `times` (milliseconds; sorted in place).
fn spread(times: &mut [f64]) -> String {
    times.sort_by(f64::total_cmp);
    format!("min {:.1} ms, median {:.1} ms, max {:.1} ms", times[0], times[times.len() / 2], times[times.len() - 1])
}
