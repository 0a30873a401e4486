//! status-exporter: dcgm-exporter-compatible GPU metrics for simulated nodes.
//!
//! * [`component`]: the Kubernetes wiring (watch ConfigMaps, serve, refresh inference rates).
//! * [`families`]: metric names, types, help texts.
//! * [`sample`]: per-GPU values from the model (`fakegpu_model::telemetry`).
//! * [`render`]: Prometheus text exposition with upstream's label set.
//! * [`node`]: a node's view (from its topology) → series.
//! * [`topology_view`]: per-node topology ConfigMap → node view.
//! * [`server`]: the thin HTTP edge (`/metrics`, `/healthz`).
//!
//! [`Exporter`] holds the nodes one process serves: one (node-local mode, a DaemonSet pod per
//! node) or all nodes of the pools (one Deployment for every KWOK node). A scrape renders the
//! current topology only, so the series of a pod that finished disappear with its allocation.

pub mod component;
pub mod families;
pub mod node;
pub mod render;
pub mod sample;
pub mod server;
pub mod topology_view;

use std::collections::BTreeMap;

pub use node::{GpuView, HostnameLabel, NodeView, Owner};
pub use sample::PodUsage;

/// The nodes one exporter process serves and the state that outlives a scrape.
#[derive(Debug, Default)]
pub struct Exporter {
    nodes: BTreeMap<String, NodeView>,
    hostname: HostnameLabel,
    energy: sample::EnergyMeter,
    round: u64,
    series: Vec<render::Series>,
}

impl Exporter {
    pub fn new(hostname: HostnameLabel) -> Exporter {
        Exporter { hostname, ..Exporter::default() }
    }

    /// Adds or replaces a node.
    pub fn upsert(&mut self, node: NodeView) {
        self.nodes.insert(node.name.clone(), node);
    }

    /// Drops a node and its series (and its energy counters).
    pub fn remove(&mut self, name: &str) {
        if let Some(node) = self.nodes.remove(name) {
            let gone: std::collections::HashSet<String> = node.gpus.into_iter().map(|g| g.uuid).collect();
            self.energy.retain(|u| !gone.contains(u));
        }
    }

    /// Keeps only the nodes for which `keep` is true.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        let gone: Vec<String> = self.nodes.keys().filter(|n| !keep(n)).cloned().collect();
        for n in gone {
            self.remove(&n);
        }
    }

    pub fn node_names(&self) -> impl Iterator<Item = &str> {
        self.nodes.keys().map(String::as_str)
    }

    pub fn gpu_count(&self) -> usize {
        self.nodes.values().map(|n| n.gpus.len()).sum()
    }

    /// UIDs of the pods whose utilization comes from their request rate.
    pub fn inference_pods(&self) -> Vec<String> {
        let mut uids: Vec<String> = self
            .nodes
            .values()
            .flat_map(|n| n.gpus.iter())
            .flat_map(|g| g.usages.iter())
            .filter(|u| u.use_knative)
            .map(|u| u.pod_uid.clone())
            .collect();
        uids.sort_unstable();
        uids.dedup();
        uids
    }

    /// One scrape at `now_ms`: every node (by name), every GPU (by index order in its view).
    pub fn scrape(&mut self, now_ms: u64, knative: &dyn Fn(&str) -> Option<u32>) -> String {
        self.round = self.round.wrapping_add(1);
        self.series.clear();
        for node in self.nodes.values() {
            node::series_into(&mut self.series, node, self.hostname, self.round, now_ms, knative, &mut self.energy);
        }
        render::render(&self.series)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fakegpu_model::find_builtin;
    use std::sync::Arc;

    fn node(name: &str, owner: Option<(&str, &str)>) -> NodeView {
        let profile = Arc::new(find_builtin("a100-80gb").unwrap().clone());
        let gpus = (0..2)
            .map(|i| {
                let owned = owner.filter(|_| i == 0);
                GpuView {
                    index: i,
                    uuid: format!("GPU-{name}-{i}"),
                    owner: owned.map(|(ns, pod)| Owner { namespace: ns.into(), pod: pod.into(), container: "c".into() }),
                    usages: owned
                        .map(|(_, pod)| PodUsage {
                            pod_uid: format!("uid-{pod}"),
                            util_min: 100,
                            util_max: 100,
                            fb_used_mib: 2048,
                            use_knative: false,
                        })
                        .into_iter()
                        .collect(),
                    ..GpuView::default()
                }
            })
            .collect();
        NodeView { name: name.into(), model_name: profile.product_name.clone(), profile, gpus }
    }

    fn lines_with<'a>(text: &'a str, needle: &str) -> Vec<&'a str> {
        text.lines().filter(|l| !l.starts_with('#') && l.contains(needle)).collect()
    }

    #[test]
    fn finished_pod_series_disappear() {
        let mut e = Exporter::new(HostnameLabel::NodeName);
        e.upsert(node("n1", Some(("team", "train-0"))));
        let first = e.scrape(1_000, &|_| None);
        assert_eq!(lines_with(&first, "pod=\"train-0\"").len(), families::FAMILIES.len());
        assert!(first.contains("DCGM_FI_DEV_GPU_UTIL{gpu=\"0\",UUID=\"GPU-n1-0\",device=\"nvidia0\",modelName=\"NVIDIA A100-SXM4-80GB\",Hostname=\"n1\",container=\"c\",namespace=\"team\",pod=\"train-0\"} 100\n"));
        assert!(first.contains("DCGM_FI_DEV_FB_USED{gpu=\"0\","));
        e.upsert(node("n1", None));
        let second = e.scrape(2_000, &|_| None);
        assert!(lines_with(&second, "train-0").is_empty());
        assert!(second.contains("DCGM_FI_DEV_GPU_UTIL{gpu=\"0\",UUID=\"GPU-n1-0\",device=\"nvidia0\",modelName=\"NVIDIA A100-SXM4-80GB\",Hostname=\"n1\",container=\"\",namespace=\"\",pod=\"\"} 0\n"));
    }

    #[test]
    fn all_nodes_mode_serves_every_node_and_removal_drops_them() {
        let mut e = Exporter::new(HostnameLabel::NodeName);
        for n in ["kwok-b", "kwok-a", "kwok-c"] {
            e.upsert(node(n, None));
        }
        assert_eq!(e.gpu_count(), 6);
        let text = e.scrape(0, &|_| None);
        let hosts: Vec<&str> = lines_with(&text, "DCGM_FI_DEV_GPU_TEMP{")
            .iter()
            .map(|l| l.split("Hostname=\"").nth(1).unwrap().split('"').next().unwrap())
            .collect();
        assert_eq!(hosts, ["kwok-a", "kwok-a", "kwok-b", "kwok-b", "kwok-c", "kwok-c"]);
        e.retain(|n| n != "kwok-b");
        assert!(!e.scrape(1, &|_| None).contains("kwok-b"));
    }

    #[test]
    fn node_local_mode_uses_upstream_pod_hostname() {
        let mut e = Exporter::new(HostnameLabel::DcgmPod);
        e.upsert(node("node-1", None));
        assert!(e.scrape(0, &|_| None).contains("Hostname=\"nvidia-dcgm-exporter-b36828\""));
    }

    #[test]
    fn energy_counter_grows_between_scrapes() {
        let mut e = Exporter::new(HostnameLabel::NodeName);
        e.upsert(node("n", Some(("t", "p"))));
        let energy = |text: &str| -> u64 {
            lines_with(text, "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{gpu=\"0\"")[0].rsplit(' ').next().unwrap().parse().unwrap()
        };
        let a = energy(&e.scrape(10_000, &|_| None));
        let b = energy(&e.scrape(20_000, &|_| None));
        assert_eq!(a, 0);
        let power = find_builtin("a100-80gb")
            .map(|p| {
                fakegpu_model::telemetry::readings(
                    p,
                    &fakegpu_model::telemetry::Load { gpu_util: 100, memory_util: 50, memory_used_bytes: 2048 << 20, ..Default::default() },
                )
                .power_mw
            })
            .unwrap();
        assert_eq!(b, u64::from(power) * 10);
    }

    #[test]
    fn inference_pods_are_listed_once() {
        let mut e = Exporter::new(HostnameLabel::NodeName);
        let mut n = node("n", Some(("t", "p")));
        n.gpus[0].usages[0].use_knative = true;
        n.gpus[1].usages = n.gpus[0].usages.clone();
        e.upsert(n);
        assert_eq!(e.inference_pods(), ["uid-p"]);
        assert!(e.scrape(0, &|uid| (uid == "uid-p").then_some(42)).contains("pod=\"p\"} 42\n"));
    }
}
