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
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let series = e.scrape(at(400_000), &|_| None).lines().filter(|l| !l.starts_with('#')).count();
    println!(
        "exporter scrape, 8000 GPUs: min {:.1} ms, median {:.1} ms, max {:.1} ms; body {:.1} MiB, {series} series",
        times[0],
        times[times.len() / 2],
        times[times.len() - 1],
        size as f64 / 1_048_576.0,
    );
}
