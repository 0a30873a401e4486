//! Inference utilization against a real Prometheus (Debian's package; tests/prometheus/run.sh
//! installs it into the cache). The test starts, on loopback: a test exporter of Knative's
//! `revision_app_request_count` (20 req/s for pod `infer-0`) and kube-state-metrics'
//! `kube_pod_info`; our status-exporter HTTP edge; and Prometheus scraping both every second.
//! It then checks that the exporter's Prometheus client turns the rate into 50 % (full scale
//! 40 req/s), and that Prometheus, parsing our exposition, reads DCGM_FI_DEV_GPU_UTIL = 50 for
//! the inference pod.
//!
//! No Prometheus binary and none installable: skipped, or failed when CI=true.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fake_gpu_operator::exporter::server::{serve, Scrape};
use fake_gpu_operator::exporter::{Exporter, GpuView, HostnameLabel, NodeView, Owner, PodUsage};
use fake_gpu_operator::inference::PrometheusClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const UID: &str = "5f0c-inference-uid";
const RPS: f64 = 20.0;
const FULL_SCALE: f64 = 40.0;

fn prometheus_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FAKEGPU_PROMETHEUS") {
        return Some(PathBuf::from(p));
    }
    let cache = std::env::var_os("FAKEGPU_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/fake-gpu-operator")))?;
    let cached = cache.join("prometheus/root/usr/bin/prometheus");
    if cached.is_file() {
        return Some(cached);
    }
    if let Some(p) = std::env::var_os("PATH")?.to_str()?.split(':').map(|d| PathBuf::from(d).join("prometheus")).find(|p| p.is_file()) {
        return Some(p);
    }
    // Self-installing: Debian's package into the cache (needs apt's package lists).
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/prometheus/install.sh");
    let out = Command::new("bash").arg(script).stderr(Stdio::inherit()).output().ok()?;
    let path = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    (out.status.success() && path.is_file()).then_some(path)
}

/// Serves the Knative + kube-state-metrics series; the counter grows RPS per second of wall time.
async fn knative_exporter(listener: TcpListener) {
    let start = Instant::now();
    loop {
        let Ok((mut s, _)) = listener.accept().await else { return };
        let count = 1000.0 + RPS * start.elapsed().as_secs_f64();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let body = format!(
                "# TYPE revision_app_request_count counter\n\
                 revision_app_request_count{{namespace=\"serving\",pod=\"infer-0\",response_code=\"200\"}} {count}\n\
                 revision_app_request_count{{namespace=\"serving\",pod=\"other-0\",response_code=\"200\"}} {count}\n\
                 # TYPE kube_pod_info gauge\n\
                 kube_pod_info{{namespace=\"serving\",pod=\"infer-0\",uid=\"{UID}\"}} 1\n\
                 kube_pod_info{{namespace=\"serving\",pod=\"other-0\",uid=\"other-uid\"}} 1\n"
            );
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(resp.as_bytes()).await;
        });
    }
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn node() -> NodeView {
    let profile = Arc::new(fakegpu_model::find_builtin("h100").unwrap().clone());
    NodeView {
        name: "kwok-inf-1".into(),
        model_name: profile.product_name.clone(),
        profile,
        gpus: vec![GpuView {
            index: 0,
            uuid: "GPU-inference-0".into(),
            owner: Some(Owner { namespace: "serving".into(), pod: "infer-0".into(), container: "queue".into() }),
            usages: vec![PodUsage { pod_uid: UID.into(), util_min: 0, util_max: 0, fb_used_mib: 4096, use_knative: true }],
            mig: None,
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_rate_becomes_utilization() {
    let Some(bin) = prometheus_binary() else {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI=true and no prometheus binary (run tests/prometheus/run.sh)");
        eprintln!("skipping request_rate_becomes_utilization: no prometheus binary (tests/prometheus/run.sh installs one)");
        return;
    };
    let knative = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let knative_addr: SocketAddr = knative.local_addr().unwrap();
    tokio::spawn(knative_exporter(knative));

    let exporter = Arc::new(Mutex::new(Exporter::new(HostnameLabel::NodeName)));
    exporter.lock().unwrap().upsert(node(), fakegpu_model::state_file::now());
    let rates: Arc<Mutex<Option<u32>>> = Arc::default();
    let scrape: Scrape = {
        let (exporter, rates) = (exporter.clone(), rates.clone());
        Arc::new(move |out| {
            let r = *rates.lock().unwrap();
            exporter.lock().unwrap().scrape_out(out, fakegpu_model::state_file::now(), &|uid| if uid == UID { r } else { None })
        })
    };
    let metrics = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_addr = metrics.local_addr().unwrap();
    tokio::spawn(serve(metrics, scrape, Default::default(), std::future::pending()));

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: knative\n    static_configs: [{{targets: ['{knative_addr}']}}]\n  - job_name: fake-dcgm\n    static_configs: [{{targets: ['{metrics_addr}']}}]\n"
        ),
    )
    .unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let _prom = Killed(
        Command::new(&bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus"),
    );
    let client = PrometheusClient::new(&format!("http://127.0.0.1:{port}")).unwrap();

    // rate(...[1m]) divides by the whole minute, so it reaches the true rate only once Prometheus
    // holds a minute of samples: poll until it does (about 60 s).
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = Vec::new();
    let util = loop {
        let u = client.pod_utilization(UID, FULL_SCALE).await;
        if let Ok(u) = u {
            if seen.last() != Some(&u) {
                seen.push(u);
            }
            if u >= 48 {
                break u;
            }
        }
        let log = std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();
        assert!(Instant::now() < deadline, "utilization never reached 50 %: {u:?}, seen {seen:?}\n{log}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    let util = util.max(client.pod_utilization(UID, FULL_SCALE).await.unwrap());
    eprintln!("utilization while the window filled: {seen:?}");
    // 20 req/s of 40 = 50 %; rate()'s extrapolation over a few 1 s samples may move it a little.
    assert!((48..=52).contains(&util), "utilization {util}");
    let rps = client.query(&fake_gpu_operator::inference::query_for_pod(UID)).await.unwrap().unwrap();
    assert!((RPS - 1.0..=RPS + 1.0).contains(&rps), "rate {rps}: one pod's series, not the other pod's, and no +1 from kube_pod_info");
    assert_eq!(client.pod_utilization("no-such-uid", FULL_SCALE).await.unwrap(), 0);
    eprintln!("Prometheus rate {rps:.3} req/s -> {util} % (full scale {FULL_SCALE} req/s)");

    // The exporter serves it, and Prometheus parses our exposition and sees it.
    *rates.lock().unwrap() = Some(util);
    let q = "DCGM_FI_DEV_GPU_UTIL{pod=\"infer-0\",namespace=\"serving\",UUID=\"GPU-inference-0\",Hostname=\"kwok-inf-1\"}";
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if client.query(q).await.unwrap() == Some(f64::from(util)) {
            break;
        }
        assert!(Instant::now() < deadline, "Prometheus never read DCGM_FI_DEV_GPU_UTIL = {util}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let fb = client.query("DCGM_FI_DEV_FB_USED{pod=\"infer-0\"}").await.unwrap();
    assert_eq!(fb, Some(4096.0));
    let families = client.query("count(count by (__name__) ({job=\"fake-dcgm\",__name__=~\"DCGM_.*\"}))").await.unwrap();
    assert_eq!(families, Some(17.0), "every family scraped");
}
