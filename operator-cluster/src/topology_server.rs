//! `topology-server`: upstream's read-only HTTP JSON view of the topology ConfigMaps, served
//! from a watch cache (upstream GETs the API server per request). A tiny HTTP/1.1 server on
//! tokio: one request per connection, GET/HEAD only. API in docs/operator.md.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::watcher::{self, Event as WEvent};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, ResourceExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use fakegpu_operator_core::common::{self, Error, TopologyArgs};
use fakegpu_operator_core::resolve::{self, PROFILE_CM_PREFIX};
use fakegpu_operator_core::topology::{NodeTopology, NODE_NAME_LABEL, NODE_TOPOLOGY_LABEL, TOPOLOGY_KEY};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub topology: TopologyArgs,
    /// Address to listen on.
    #[arg(long, env = "TOPOLOGY_SERVER_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: String,
}

/// The ConfigMaps of the topology namespace, by name.
#[derive(Default)]
pub struct Cache {
    pub cms: BTreeMap<String, ConfigMap>,
    pub synced: bool,
}

/// One response: status, body.
pub type Response = (u16, String);

/// Routes a request path against the cache (pure).
pub fn route(cache: &Cache, cluster_cm: &str, path: &str) -> Response {
    let path = path.split('?').next().unwrap_or("");
    if path == "/healthz" || path == "/readyz" {
        return if cache.synced { (200, "\"ok\"".into()) } else { (503, "\"not synced\"".into()) };
    }
    if path == "/topology" {
        let cm = cache.cms.get(cluster_cm);
        let cfg = match common::config_from_cm(cm) {
            Ok(Some(c)) => c,
            Ok(None) => fakegpu_operator_core::config::ClusterConfig::default(),
            Err(e) => return (500, json_str(&e.to_string())),
        };
        let profile_cms: Vec<ConfigMap> = cache.cms.values().filter(|c| c.name_any().starts_with(PROFILE_CM_PREFIX)).cloned().collect();
        let (profiles, _) = common::profiles_from(&profile_cms);
        let resolved = resolve::resolve_all(&cfg, &profiles).unwrap_or_default();
        return (200, cfg.to_go_json(&resolved).to_string());
    }
    if path == "/topology/nodes" || path == "/topology/nodes/" {
        let names: Vec<&String> = cache
            .cms
            .values()
            .filter(|c| c.labels().contains_key(NODE_TOPOLOGY_LABEL))
            .filter_map(|c| c.labels().get(NODE_NAME_LABEL))
            .collect();
        return (200, serde_json::to_string(&names).expect("names serialise"));
    }
    if let Some(node) = path.strip_prefix("/topology/nodes/") {
        if node.is_empty() || node.contains('/') {
            return (400, json_str(&format!("Can't get node name from url {path}")));
        }
        let name = fakegpu_operator_core::topology::node_cm_name(cluster_cm, node);
        return match cache.cms.get(&name).and_then(|c| c.data.as_ref()).and_then(|d| d.get(TOPOLOGY_KEY)) {
            Some(text) => match NodeTopology::from_yaml(text) {
                Ok(t) => (200, t.to_go_json().to_string()),
                Err(e) => (500, json_str(&e.to_string())),
            },
            None => (404, json_str("Node topology not found")),
        };
    }
    (404, json_str("not found"))
}

fn json_str(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

pub async fn run(args: Args) -> Result<(), Error> {
    let client = args.topology.client().await?;
    let ns = args.topology.namespace();
    let cache = Arc::new(RwLock::new(Cache::default()));
    tokio::spawn(watch(client, ns.clone(), cache.clone()));
    let listener = TcpListener::bind(&args.listen).await.map_err(|e| Error::Io(format!("listening on {}", args.listen), e))?;
    tracing::info!(namespace = %ns, listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "topology-server serving");
    let cm_name = Arc::new(args.topology.topology_cm.clone());
    let serve = async {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else { continue };
            let cache = cache.clone();
            let cm_name = cm_name.clone();
            tokio::spawn(async move {
                let mut buf = Vec::with_capacity(1024);
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
                    match tokio::time::timeout(std::time::Duration::from_secs(10), sock.read(&mut chunk)).await {
                        Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
                        Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf);
                let mut parts = head.lines().next().unwrap_or("").split_whitespace();
                let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                let (status, body) = if method == "GET" || method == "HEAD" {
                    route(&cache.read().expect("cache lock"), &cm_name, path)
                } else {
                    (405, json_str("method not allowed"))
                };
                let reason = match status {
                    200 => "OK",
                    400 => "Bad Request",
                    404 => "Not Found",
                    405 => "Method Not Allowed",
                    503 => "Service Unavailable",
                    _ => "Internal Server Error",
                };
                let body = if method == "HEAD" { String::new() } else { body };
                let resp = format!(
                    "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    };
    tokio::select! {
        _ = common::shutdown_signal() => tracing::info!("shutting down"),
        _ = serve => {}
    }
    Ok(())
}

async fn watch(client: Client, ns: String, cache: Arc<RwLock<Cache>>) {
    let api: Api<ConfigMap> = Api::namespaced(client, &ns);
    let mut s = watcher::watcher(api, watcher::Config::default()).default_backoff().boxed();
    let mut fresh: Option<BTreeMap<String, ConfigMap>> = None;
    while let Some(ev) = s.next().await {
        match ev {
            Ok(WEvent::Init) => fresh = Some(BTreeMap::new()),
            Ok(WEvent::InitApply(c)) => {
                fresh.get_or_insert_with(BTreeMap::new).insert(c.name_any(), c);
            }
            Ok(WEvent::InitDone) => {
                let mut w = cache.write().expect("cache lock");
                w.cms = fresh.take().unwrap_or_default();
                w.synced = true;
            }
            Ok(WEvent::Apply(c)) => {
                cache.write().expect("cache lock").cms.insert(c.name_any(), c);
            }
            Ok(WEvent::Delete(c)) => {
                cache.write().expect("cache lock").cms.remove(&c.name_any());
            }
            Err(e) => tracing::warn!(error = %e, "configmap watch"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn cm(name: &str, labels: Value, key: &str, text: &str) -> ConfigMap {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}, "data": {key: text}})).unwrap()
    }

    fn cache() -> Cache {
        let mut c = Cache { synced: true, ..Default::default() };
        c.cms.insert(
            "topology".into(),
            cm("topology", json!({}), TOPOLOGY_KEY, "nodePools:\n  p:\n    gpu: {profile: h100, overrides: {device_count: 2}}\n"),
        );
        let t = NodeTopology { gpu_memory: 10, gpu_product: "X".into(), gpus: vec![Default::default()], ..Default::default() };
        c.cms.insert(
            "topology-n1".into(),
            cm("topology-n1", json!({NODE_TOPOLOGY_LABEL: "true", NODE_NAME_LABEL: "n1"}), TOPOLOGY_KEY, &t.to_yaml()),
        );
        c
    }

    fn body(r: &Response) -> Value {
        serde_json::from_str(&r.1).unwrap()
    }

    #[test]
    fn cluster_topology_in_go_keys() {
        let r = route(&cache(), "topology", "/topology");
        assert_eq!(r.0, 200);
        let v = body(&r);
        assert_eq!(v["NodePoolLabelKey"], "run.ai/simulated-gpu-node-pool");
        assert_eq!(v["NodePools"]["p"]["GpuCount"], 2);
        assert_eq!(v["NodePools"]["p"]["GpuProduct"], "NVIDIA H100 80GB HBM3");
        assert_eq!(v["MigStrategy"], "mixed");
    }

    #[test]
    fn node_topology_and_errors() {
        let c = cache();
        let r = route(&c, "topology", "/topology/nodes/n1");
        assert_eq!((r.0, body(&r)["GpuMemory"].clone()), (200, json!(10)));
        assert_eq!(body(&r)["Gpus"][0]["Status"]["AllocatedBy"]["Pod"], "");
        assert_eq!(route(&c, "topology", "/topology/nodes/n2"), (404, "\"Node topology not found\"".into()));
        assert_eq!(route(&c, "topology", "/topology/nodes/").0, 200, "the list");
        assert_eq!(body(&route(&c, "topology", "/topology/nodes")), json!(["n1"]));
        assert_eq!(route(&c, "topology", "/topology/nodes/a/b").0, 400);
        assert_eq!(route(&c, "topology", "/nope").0, 404);
        let mut bad = cache();
        bad.cms.insert("topology".into(), cm("topology", json!({}), TOPOLOGY_KEY, "migStrategy: x\n"));
        assert_eq!(route(&bad, "topology", "/topology").0, 500);
        assert_eq!(route(&Cache::default(), "topology", "/healthz").0, 503);
        assert_eq!(route(&c, "topology", "/healthz?x=1").0, 200);
    }
}
