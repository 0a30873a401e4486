//! What the E2E tests share: the cluster's kubeconfig, the operator's components as child
//! processes (logged, killed on drop), a plain `/metrics` scrape and reading a node's topology.
#![allow(dead_code)] // each test binary uses part of it

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fake_gpu_operator::topology::{NodeTopology, TOPOLOGY_KEY};
use fakegpu_cluster_support::{wait_for, TestNamespace};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;

/// The kubeconfig `cluster_or_skip` found: `$FAKEGPU_KUBECONFIG`, the local cluster's, else `$KUBECONFIG`.
pub fn kubeconfig() -> PathBuf {
    if let Some(p) = std::env::var_os("FAKEGPU_KUBECONFIG").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let ours = fakegpu_cluster::paths::kubeconfig_in(&fakegpu_cluster::paths::run_dir());
    if ours.is_file() {
        return ours;
    }
    PathBuf::from(std::env::var_os("KUBECONFIG").expect("a kubeconfig (cluster_or_skip found one)"))
}

/// A component process, killed on drop. Its stderr goes to a fresh log file in `log_dir`.
pub struct Component {
    child: Child,
    log: PathBuf,
}

impl Component {
    /// `fake-gpu-operator <name> --namespace <ns> <extra…>`; variables from the test's own
    /// environment that would redirect it (topology namespace, node dir) are removed.
    pub fn start(name: &str, ns: &str, log_dir: &Path, extra: &[&str]) -> Component {
        let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let log = log_dir.join(format!("{name}-{stamp}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_fake-gpu-operator"))
            .arg(name)
            .args(["--namespace", ns])
            .args(extra)
            .env("KUBECONFIG", kubeconfig())
            .env("RUST_LOG", "info")
            .env_remove("TOPOLOGY_CM_NAMESPACE")
            .env_remove("FAKEGPU_NODE_DIR")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start component");
        Component { child, log }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Component {
    fn drop(&mut self) {
        self.kill();
    }
}

/// GET /metrics over plain HTTP/1.0.
pub fn scrape(addr: std::net::SocketAddr) -> std::io::Result<String> {
    http_get(addr, "/metrics")
}

/// The body of `GET path` over plain HTTP/1.0 (it ends when the connection closes).
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> std::io::Result<String> {
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or_default())
}

/// The `topology.yml` of a per-node topology ConfigMap.
pub fn topology(cm: &ConfigMap) -> Option<NodeTopology> {
    NodeTopology::from_yaml(cm.data.as_ref()?.get(TOPOLOGY_KEY)?).ok()
}

/// Waits (60 s) until `node`'s topology in `ns` satisfies `cond`, and returns it.
pub async fn node_topology(ns: &TestNamespace, node: &str, what: &str, cond: impl Fn(&NodeTopology) -> bool) -> NodeTopology {
    let cms: Api<ConfigMap> = ns.api();
    let cm = wait_for(&cms, &format!("topology-{node}"), Duration::from_secs(60), what, |c| topology(c).is_some_and(|t| cond(&t)))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    topology(&cm).unwrap()
}
