//! Finding the cluster: `$FAKEGPU_KUBECONFIG`, else the kubeconfig `cluster up` wrote in the run
//! dir, else `$KUBECONFIG` only when its current context is the one `cluster up` writes, so a
//! developer's real cluster is never used. Absent cluster: panic under CI=true, skip otherwise.

use std::path::PathBuf;
use std::time::Duration;

use fakegpu_cluster::kubeconfig::CONTEXT;

/// A reachable cluster and the admin configuration used to reach it.
#[derive(Clone)]
pub struct TestCluster {
    pub client: kube::Client,
    pub config: kube::Config,
}

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

fn kubeconfig_path() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("FAKEGPU_KUBECONFIG").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let ours = fakegpu_cluster::paths::kubeconfig_in(&fakegpu_cluster::paths::run_dir());
    if ours.is_file() {
        return Ok(ours);
    }
    if let Some(p) = std::env::var_os("KUBECONFIG").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        let kc = kube::config::Kubeconfig::read_from(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        if kc.current_context.as_deref() == Some(CONTEXT) {
            return Ok(p);
        }
        return Err(format!("$KUBECONFIG {} is not a fakegpu cluster (context is not {CONTEXT:?})", p.display()));
    }
    Err(format!("no kubeconfig at {}", ours.display()))
}

/// Connects and checks `/readyz`.
pub async fn connect() -> Result<TestCluster, String> {
    let path = kubeconfig_path()?;
    let config = fakegpu_cluster::kubeconfig::client_config(&path).await.map_err(|e| e.to_string())?;
    let client = kube::Client::try_from(config.clone()).map_err(|e| e.to_string())?;
    let req = http::Request::get("/readyz").body(Vec::new()).map_err(|e| e.to_string())?;
    match tokio::time::timeout(Duration::from_secs(5), client.request_text(req)).await {
        Ok(Ok(body)) if body.trim() == "ok" => Ok(TestCluster { client, config }),
        Ok(Ok(body)) => Err(format!("apiserver not ready: {body}")),
        Ok(Err(e)) => Err(format!("apiserver at {} unreachable: {e}", config.cluster_url)),
        Err(_) => Err(format!("apiserver at {} did not answer /readyz within 5 s", config.cluster_url)),
    }
}

fn absent(test: &str, what: &str, reason: &str) {
    if ci() {
        panic!("{test}: {what} required under CI=true but absent: {reason}");
    }
    // Written to the stderr handle, not via eprintln!, which libtest captures and hides for passing tests.
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "skipping {test}: no {what} ({reason}); start one with `fakegpu cluster up`");
}

/// The running cluster, or `None` after a one-line skip message (panics when CI=true).
pub async fn cluster_or_skip(test: &str) -> Option<TestCluster> {
    match connect().await {
        Ok(c) => Some(c),
        Err(reason) => {
            absent(test, "fakegpu cluster", &reason);
            None
        }
    }
}

/// The directory with the pinned kubectl/helm/… builds: `$FAKEGPU_K8S_BIN_DIR`, the running
/// cluster's, or the newest matching cache entry. `None` after a skip message (panics when CI=true).
pub fn binaries_or_skip(test: &str) -> Option<PathBuf> {
    let found = std::env::var_os("FAKEGPU_K8S_BIN_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| fakegpu_cluster::state::State::load(&fakegpu_cluster::paths::run_dir()).ok().flatten().map(|s| s.bin_dir))
        .or_else(fakegpu_cluster::binaries::find_cached)
        .filter(|d| d.join("kubectl").is_file());
    if found.is_none() {
        absent(test, "control-plane binaries", "run tests/cluster/build.sh");
    }
    found
}

impl TestCluster {
    /// A fresh namespace for one test; see [`crate::TestNamespace`].
    pub async fn namespace(&self, test: &str) -> crate::TestNamespace {
        crate::namespace::TestNamespace::create(self, test).await
    }
}
