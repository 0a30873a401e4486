//! NodeResourceTopology (`topology.node.k8s.io/v1alpha2`, cluster-scoped, name = node) for the
//! nodes of pools with a `numa` block (upstream reference §12.1): zones `node-0..node-(N-1)`,
//! the node's GPUs split over them (`gpusPerZone`, else evenly with the remainder to the lowest
//! zones, GPU indices in order), CPU and memory per zone (`cpuPerZone`/`memPerZone`, else the
//! node's allocatable / N), costs from `distances`, the topology-manager attributes and
//! upstream's legacy `topologyPolicies`. Better than upstream: a zone's available GPUs are its
//! free ones (upstream published capacity as available). Pure: [`NumaConfig::parse`] and
//! [`build`]; [`publish`] is the kube edge (server-side apply, owner reference to the Node).

use fakegpu_model::numa::{cores_of_millis, NumaLayout};
use serde_json::{json, Value};

use crate::topology::NodeTopology;

pub const GROUP: &str = "topology.node.k8s.io";
pub const VERSION: &str = "v1alpha2";
pub const KIND: &str = "NodeResourceTopology";
pub const PLURAL: &str = "noderesourcetopologies";

/// A pool's `numa` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumaConfig {
    /// Zones; below 1: no NodeResourceTopology for the pool.
    pub zones: i64,
    pub gpus_per_zone: Option<Vec<u64>>,
    pub policy: String,
    pub scope: String,
    /// Millicores per zone, when configured.
    pub cpu_per_zone: Option<u64>,
    /// Bytes per zone, when configured.
    pub mem_per_zone: Option<u64>,
    pub self_distance: u64,
    pub remote_distance: u64,
}

impl NumaConfig {
    /// Parses a `numa` block; the error names the key.
    pub fn parse(v: &Value) -> Result<NumaConfig, String> {
        let m = v.as_object().ok_or_else(|| format!("`numa`: expected a mapping, found {v}"))?;
        for k in m.keys() {
            if !["zones", "gpusPerZone", "topologyManagerPolicy", "topologyManagerScope", "cpuPerZone", "memPerZone", "distances"]
                .contains(&k.as_str())
            {
                return Err(format!(
                    "`numa.{k}`: unknown key (known: zones, gpusPerZone, topologyManagerPolicy, topologyManagerScope, cpuPerZone, memPerZone, distances)"
                ));
            }
        }
        let zones = m.get("zones").and_then(Value::as_i64).ok_or("`numa.zones`: required, a whole number")?;
        let gpus_per_zone = match m.get("gpusPerZone") {
            None | Some(Value::Null) => None,
            Some(Value::Array(a)) => Some(
                a.iter()
                    .map(|x| x.as_u64().ok_or_else(|| format!("`numa.gpusPerZone`: {x} is not a whole number")))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            Some(other) => return Err(format!("`numa.gpusPerZone`: expected a list, found {other}")),
        };
        let text = |key: &str, default: &str| -> Result<String, String> {
            match m.get(key) {
                None | Some(Value::Null) => Ok(default.to_string()),
                Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
                Some(other) => Err(format!("`numa.{key}`: expected a string, found {other}")),
            }
        };
        let policy = text("topologyManagerPolicy", "single-numa-node")?;
        let scope = text("topologyManagerScope", "container")?;
        let quantity = |key: &str, millis: bool| -> Result<Option<u64>, String> {
            match m.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => {
                    let s = match v {
                        Value::String(s) => s.clone(),
                        Value::Number(n) => n.to_string(),
                        other => return Err(format!("`numa.{key}`: expected a quantity, found {other}")),
                    };
                    parse_quantity(&s, millis).map(Some).ok_or_else(|| format!("`numa.{key}`: `{s}` is not a quantity"))
                }
            }
        };
        let cpu_per_zone = quantity("cpuPerZone", true)?;
        let mem_per_zone = quantity("memPerZone", false)?;
        let (mut self_distance, mut remote_distance) = (10, 21);
        match m.get("distances") {
            None | Some(Value::Null) => {}
            Some(Value::Object(d)) => {
                for (k, v) in d {
                    let n = v.as_u64().ok_or_else(|| format!("`numa.distances.{k}`: expected a whole number, found {v}"))?;
                    match k.as_str() {
                        "self" => self_distance = n,
                        "remote" => remote_distance = n,
                        _ => return Err(format!("`numa.distances.{k}`: unknown key (known: self, remote)")),
                    }
                }
            }
            Some(other) => return Err(format!("`numa.distances`: expected a mapping, found {other}")),
        }
        Ok(NumaConfig { zones, gpus_per_zone, policy, scope, cpu_per_zone, mem_per_zone, self_distance, remote_distance })
    }

    /// GPUs per zone for `gpus` GPUs: the model's split ([`fakegpu_model::numa::split_gpus`]),
    /// the one the fake NVML, the DRA attributes and podresources use.
    pub fn split(&self, gpus: u64) -> Result<Vec<u64>, String> {
        let zones = u64::try_from(self.zones).unwrap_or(0);
        fakegpu_model::numa::split_gpus(zones, self.gpus_per_zone.as_deref(), gpus).map_err(|e| format!("`numa`: {e}"))
    }

    /// The layout a node of `gpus` GPUs carries in its node config: None when the block
    /// disables NUMA (`zones` < 1) or does not fit the node (the NodeResourceTopology
    /// publisher reports why), so that every consumer falls back alike.
    pub fn layout(&self, gpus: u32) -> Option<NumaLayout> {
        let split = self.split(u64::from(gpus)).ok()?;
        Some(NumaLayout {
            zones: u32::try_from(self.zones).ok()?,
            gpus_per_zone: self.gpus_per_zone.as_ref().map(|_| split.iter().map(|n| *n as u32).collect()),
            cpus_per_zone: self.cpu_per_zone.map(cores_of_millis).filter(|c| *c > 0).and_then(|c| u32::try_from(c).ok()),
        })
    }

    /// Upstream's legacy `topologyPolicies` value.
    pub fn legacy_policy(&self) -> String {
        let level = if self.scope == "pod" { "PodLevel" } else { "ContainerLevel" };
        match self.policy.as_str() {
            "single-numa-node" => format!("SingleNUMANode{level}"),
            "restricted" => format!("Restricted{level}"),
            "best-effort" => format!("BestEffort{level}"),
            _ => "None".into(),
        }
    }
}

/// A Kubernetes quantity in millis (`millis`) or units, truncated; None if malformed.
pub fn parse_quantity(s: &str, millis: bool) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let value: f64 = num.parse().ok()?;
    let scale: f64 = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        _ => return None,
    };
    let v = value * scale * if millis { 1000.0 } else { 1.0 };
    (v.is_finite() && v >= 0.0).then_some(v as u64)
}

/// Millicores as a quantity (`16`, `1500m`).
pub fn cpu_text(millis: u64) -> String {
    if millis.is_multiple_of(1000) {
        (millis / 1000).to_string()
    } else {
        format!("{millis}m")
    }
}

/// Bytes as a BinarySI quantity (`128Gi`, `1000`).
pub fn memory_text(bytes: u64) -> String {
    for (suffix, exp) in [("Ei", 6), ("Pi", 5), ("Ti", 4), ("Gi", 3), ("Mi", 2), ("Ki", 1)] {
        let unit = 1024u64.pow(exp);
        if bytes >= unit && bytes.is_multiple_of(unit) {
            return format!("{}{suffix}", bytes / unit);
        }
    }
    bytes.to_string()
}

/// The node's allocatable CPU (millicores) and memory (bytes), 0 when absent.
pub fn allocatable(node: &k8s_openapi::api::core::v1::Node) -> (u64, u64) {
    let a = node.status.as_ref().and_then(|s| s.allocatable.as_ref());
    let get = |k: &str, millis: bool| a.and_then(|a| a.get(k)).and_then(|q| parse_quantity(&q.0, millis)).unwrap_or(0);
    (get("cpu", true), get("memory", false))
}

/// The NodeResourceTopology of `node` (without owner reference), or an error naming the key.
/// `allocatable`: the node's (millicores, bytes).
pub fn build(node: &str, numa: &NumaConfig, topology: &NodeTopology, allocatable: (u64, u64)) -> Result<Value, String> {
    let n = numa.zones as u64;
    let gpus = topology.gpus.len() as u64;
    let split = numa.split(gpus)?;
    let cpu = numa.cpu_per_zone.or((allocatable.0 > 0).then(|| allocatable.0 / n));
    let mem = numa.mem_per_zone.or((allocatable.1 > 0).then(|| allocatable.1 / n));
    let mut first = 0usize;
    let zones: Vec<Value> = split
        .iter()
        .enumerate()
        .map(|(z, count)| {
            let held = topology.gpus[first..first + *count as usize].iter().filter(|g| !g.status.is_free()).count() as u64;
            first += *count as usize;
            let res = |name: &str, capacity: String, available: String| {
                json!({"name": name, "capacity": capacity.clone(), "allocatable": capacity, "available": available})
            };
            let mut resources = vec![res("nvidia.com/gpu", count.to_string(), (count - held).to_string())];
            if let Some(c) = cpu {
                resources.push(res("cpu", cpu_text(c), cpu_text(c)));
            }
            if let Some(m) = mem {
                resources.push(res("memory", memory_text(m), memory_text(m)));
            }
            let costs: Vec<Value> = (0..n)
                .map(|o| {
                    json!({"name": format!("node-{o}"), "value": if o == z as u64 { numa.self_distance } else { numa.remote_distance }})
                })
                .collect();
            json!({"name": format!("node-{z}"), "type": "Node", "costs": costs, "resources": resources})
        })
        .collect();
    Ok(json!({
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "kind": KIND,
        "metadata": {"name": node},
        "attributes": [
            {"name": "topologyManagerPolicy", "value": numa.policy},
            {"name": "topologyManagerScope", "value": numa.scope},
        ],
        "topologyPolicies": [numa.legacy_policy()],
        "zones": zones,
    }))
}

/// Label on the objects this publisher owns, so that it deletes only its own.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "fake-gpu-operator");

pub fn resource() -> kube::api::ApiResource {
    kube::api::ApiResource::from_gvk_with_plural(&kube::api::GroupVersionKind::gvk(GROUP, VERSION, KIND), PLURAL)
}

/// What one sync did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub published: usize,
    pub writes: usize,
    pub deleted: usize,
}

/// The publisher: remembers what it applied so that an unchanged object is not written again.
pub struct Publisher {
    client: kube::Client,
    namespace: String,
    topology_cm: String,
    applied: std::collections::HashMap<String, Value>,
}

impl Publisher {
    pub fn new(client: kube::Client, namespace: String, topology_cm: String) -> Publisher {
        Publisher { client, namespace, topology_cm, applied: Default::default() }
    }

    /// One pass: every node of a pool with `numa` (zones ≥ 1) that has a topology gets its
    /// object; objects of ours for other nodes are deleted.
    pub async fn sync_once(&mut self) -> Result<SyncReport, crate::common::Error> {
        use k8s_openapi::api::core::v1::{ConfigMap, Node};
        use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};

        let cms: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.namespace);
        let cfg = crate::common::config_from_cm(cms.get_opt(&self.topology_cm).await?.as_ref())?.unwrap_or_default();
        let numa_pools: std::collections::BTreeMap<&String, &NumaConfig> =
            cfg.node_pools.iter().filter_map(|(name, p)| Some((name, p.numa.as_ref().filter(|n| n.zones >= 1)?))).collect();
        let mut wanted = std::collections::BTreeMap::new();
        if !numa_pools.is_empty() {
            let topologies: std::collections::HashMap<String, NodeTopology> = cms
                .list(&ListParams::default().labels(&format!("{}=true", crate::topology::NODE_TOPOLOGY_LABEL)))
                .await?
                .items
                .into_iter()
                .filter_map(|cm| {
                    let node = cm.metadata.labels.as_ref()?.get(crate::topology::NODE_NAME_LABEL)?.clone();
                    let t = NodeTopology::from_yaml(cm.data.as_ref()?.get(crate::topology::TOPOLOGY_KEY)?).ok()?;
                    Some((node, t))
                })
                .collect();
            let nodes = Api::<Node>::all(self.client.clone()).list(&ListParams::default().labels(&cfg.node_pool_label_key)).await?;
            for node in &nodes.items {
                let (Some(name), Some(uid)) = (node.metadata.name.clone(), node.metadata.uid.clone()) else { continue };
                let Some(numa) =
                    node.metadata.labels.as_ref().and_then(|l| l.get(&cfg.node_pool_label_key)).and_then(|p| numa_pools.get(p))
                else {
                    continue;
                };
                let Some(t) = topologies.get(&name) else { continue };
                match build(&name, numa, t, allocatable(node)) {
                    Ok(mut obj) => {
                        obj["metadata"]["labels"] = json!({MANAGED_BY.0: MANAGED_BY.1});
                        obj["metadata"]["ownerReferences"] = json!([{"apiVersion": "v1", "kind": "Node", "name": name, "uid": uid}]);
                        wanted.insert(name, obj);
                    }
                    Err(e) => tracing::warn!(node = %name, "no NodeResourceTopology: {e}"),
                }
            }
        }
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &resource());
        let mut report = SyncReport { published: wanted.len(), ..Default::default() };
        for (name, obj) in &wanted {
            if self.applied.get(name) == Some(obj) {
                continue;
            }
            let patch: DynamicObject = serde_json::from_value(obj.clone()).expect("built object deserialises");
            api.patch(name, &PatchParams::apply(crate::common::FIELD_MANAGER).force(), &Patch::Apply(&patch)).await?;
            self.applied.insert(name.clone(), obj.clone());
            report.writes += 1;
        }
        let ours = api.list(&ListParams::default().labels(&format!("{}={}", MANAGED_BY.0, MANAGED_BY.1))).await?;
        for o in ours.items {
            let Some(name) = o.metadata.name else { continue };
            if !wanted.contains_key(&name) {
                match api.delete(&name, &DeleteParams::default()).await {
                    Ok(_) => report.deleted += 1,
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
                self.applied.remove(&name);
            }
        }
        Ok(report)
    }

    /// Syncs every `interval` until the process ends (upstream republished every ≤ 10 s).
    pub async fn run(mut self, interval: std::time::Duration) {
        let mut failing = false;
        loop {
            match self.sync_once().await {
                Ok(r) => {
                    if r.writes + r.deleted > 0 {
                        tracing::info!(published = r.published, writes = r.writes, deleted = r.deleted, "NodeResourceTopology synced");
                    }
                    failing = false;
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!("NodeResourceTopology (is the CRD noderesourcetopologies.topology.node.k8s.io installed?): {e}");
                    }
                    failing = true;
                    self.applied.clear();
                }
            }
            tokio::time::sleep(interval).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::{ContainerDetails, GpuDetails, GpuStatus};

    fn topology(gpus: usize, held: &[usize]) -> NodeTopology {
        NodeTopology {
            gpus: (0..gpus)
                .map(|i| GpuDetails {
                    id: format!("GPU-{i}"),
                    status: GpuStatus {
                        allocated_by: if held.contains(&i) {
                            ContainerDetails { namespace: "ns".into(), pod: "p".into(), container: "c".into() }
                        } else {
                            ContainerDetails::default()
                        },
                        ..Default::default()
                    },
                    mig: None,
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn even_split_with_node_allocatable_and_free_gpus_available() {
        let numa = NumaConfig::parse(&json!({"zones": 2})).unwrap();
        let nrt = build("n1", &numa, &topology(5, &[0, 4]), (32_000, 256 * 1024u64.pow(3))).unwrap();
        assert_eq!(nrt["apiVersion"], "topology.node.k8s.io/v1alpha2");
        assert_eq!(nrt["topologyPolicies"], json!(["SingleNUMANodeContainerLevel"]));
        assert_eq!(nrt["attributes"][0], json!({"name": "topologyManagerPolicy", "value": "single-numa-node"}));
        let z0 = &nrt["zones"][0];
        assert_eq!(z0["name"], "node-0");
        assert_eq!(z0["costs"], json!([{"name": "node-0", "value": 10}, {"name": "node-1", "value": 21}]));
        // 5 GPUs: 3 + 2; GPU 0 held in zone 0, GPU 4 in zone 1.
        assert_eq!(z0["resources"][0], json!({"name": "nvidia.com/gpu", "capacity": "3", "allocatable": "3", "available": "2"}));
        assert_eq!(nrt["zones"][1]["resources"][0]["available"], "1");
        assert_eq!(z0["resources"][1], json!({"name": "cpu", "capacity": "16", "allocatable": "16", "available": "16"}));
        assert_eq!(z0["resources"][2]["capacity"], "128Gi");
    }

    #[test]
    fn explicit_layout_policies_and_errors() {
        let numa = NumaConfig::parse(&json!({"zones": 2, "gpusPerZone": [1, 3], "topologyManagerPolicy": "best-effort",
            "topologyManagerScope": "pod", "cpuPerZone": "1500m", "memPerZone": "64Gi", "distances": {"self": 11, "remote": 32}}))
        .unwrap();
        let nrt = build("n1", &numa, &topology(4, &[]), (0, 0)).unwrap();
        assert_eq!(nrt["topologyPolicies"], json!(["BestEffortPodLevel"]));
        assert_eq!(nrt["zones"][1]["resources"][0]["capacity"], "3");
        assert_eq!(nrt["zones"][0]["resources"][1]["capacity"], "1500m");
        assert_eq!(nrt["zones"][0]["resources"][2]["capacity"], "64Gi");
        assert_eq!(nrt["zones"][1]["costs"][1]["value"], 11);
        // Mismatch: nothing published, the error says why.
        assert!(build("n1", &numa, &topology(3, &[]), (0, 0)).unwrap_err().contains("gpusPerZone"));
        // No allocatable and no override: GPUs only.
        let plain = NumaConfig::parse(&json!({"zones": 1, "topologyManagerPolicy": "none"})).unwrap();
        let nrt = build("n1", &plain, &topology(2, &[]), (0, 0)).unwrap();
        assert_eq!(nrt["zones"][0]["resources"].as_array().unwrap().len(), 1);
        assert_eq!(nrt["topologyPolicies"], json!(["None"]));
        for (bad, key) in [
            (json!({}), "numa.zones"),
            (json!({"zones": 2, "cpuPerZone": "lots"}), "numa.cpuPerZone"),
            (json!({"zones": 2, "distances": {"near": 1}}), "numa.distances.near"),
            (json!({"zones": 2, "zonez": 1}), "numa.zonez"),
        ] {
            assert!(NumaConfig::parse(&bad).unwrap_err().contains(key), "{bad}");
        }
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("32", true), Some(32_000));
        assert_eq!(parse_quantity("500m", true), Some(500));
        assert_eq!(parse_quantity("128Gi", false), Some(128 * 1024u64.pow(3)));
        assert_eq!(parse_quantity("1G", false), Some(1_000_000_000));
        assert_eq!(parse_quantity("x", false), None);
        assert_eq!(cpu_text(16_000), "16");
        assert_eq!(cpu_text(2_500), "2500m");
        assert_eq!(memory_text(3 * 1024 * 1024), "3Mi");
        assert_eq!(memory_text(1000), "1000");
    }
}
