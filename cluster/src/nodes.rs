//! KWOK nodes: the Node objects `up` creates (kwok manages those annotated
//! `kwok.x-k8s.io/node=fake`) and waiting until kwok has reported them Ready.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Node;
use kube::api::{ListParams, PostParams};
use kube::Api;

use crate::error::{ClusterError, Result};

pub const POOL_LABEL: &str = "run.ai/simulated-gpu-node-pool";
pub const PROFILE_LABEL: &str = "fake-gpu-operator.run.ai/profile";
pub const GPUS_LABEL: &str = "fake-gpu-operator.run.ai/gpu-count";
pub const KWOK_ANNOTATION: &str = "kwok.x-k8s.io/node";

/// What `up` was asked to create.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub pool: String,
    pub profile: Option<String>,
    pub gpus: Option<u32>,
}

pub fn node_name(pool: &str, i: u32) -> String {
    format!("kwok-{pool}-{i}")
}

/// A KWOK node without the `kwok.x-k8s.io/node` NoSchedule taint: this cluster has no real
/// nodes to protect, and the operator's DaemonSets must land on these nodes without tolerations.
pub fn kwok_node(name: &str, extra_labels: &BTreeMap<String, String>) -> Node {
    let mut labels: BTreeMap<String, String> = [
        ("type", "kwok"),
        ("kubernetes.io/hostname", name),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", "amd64"),
        ("beta.kubernetes.io/os", "linux"),
        ("beta.kubernetes.io/arch", "amd64"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    labels.extend(extra_labels.clone());
    let resources = serde_json::json!({"cpu": "32", "memory": "256Gi", "pods": "110"});
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {KWOK_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
        },
        "status": {"capacity": resources, "allocatable": resources},
    }))
    .expect("static node shape deserialises")
}

pub(crate) fn labels_for(spec: &NodeSpec) -> BTreeMap<String, String> {
    let mut l = BTreeMap::from([(POOL_LABEL.to_string(), spec.pool.clone())]);
    if let Some(p) = &spec.profile {
        l.insert(PROFILE_LABEL.to_string(), p.clone());
    }
    if let Some(g) = spec.gpus {
        l.insert(GPUS_LABEL.to_string(), g.to_string());
    }
    l
}

/// Creates `count` nodes, 32 requests in flight (enough to keep 2 cores busy).
pub async fn create(client: &kube::Client, spec: &NodeSpec, count: u32) -> Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    let labels = labels_for(spec);
    futures::stream::iter(0..count)
        .map(|i| {
            let api = api.clone();
            let node = kwok_node(&node_name(&spec.pool, i), &labels);
            async move { api.create(&PostParams::default(), &node).await.map(|_| ()) }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

pub fn is_ready(n: &Node) -> bool {
    n.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Counts Ready nodes of `pool` until there are `count`, reporting progress through `progress`.
pub async fn wait_ready(
    client: &kube::Client,
    pool: &str,
    count: u32,
    timeout: Duration,
    mut progress: impl FnMut(u32, u32),
) -> Result<Duration> {
    let api: Api<Node> = Api::all(client.clone());
    let lp = ListParams::default().labels(&format!("type=kwok,{POOL_LABEL}={pool}"));
    let start = Instant::now();
    loop {
        let ready = api.list(&lp).await?.items.iter().filter(|n| is_ready(n)).count() as u32;
        progress(ready, count);
        if ready >= count {
            return Ok(start.elapsed());
        }
        if start.elapsed() > timeout {
            return Err(ClusterError::Timeout { what: format!("{count} KWOK nodes to be Ready ({ready} are)"), secs: timeout.as_secs() });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
