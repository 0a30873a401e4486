//! The admin kubeconfig `up` writes (JSON, which every kubeconfig reader accepts as YAML).

use std::path::Path;

use crate::error::{ClusterError, Result};
use crate::pki::Pki;

/// Context name; the test-support crate only trusts a `$KUBECONFIG` whose current context is this,
/// so tests never run against some other cluster a developer has configured.
pub const CONTEXT: &str = "fake-gpu-operator";

/// Writes a kubeconfig for `server` using the admin certificate.
pub fn write(path: &Path, server: &str, pki: &Pki) -> Result<()> {
    write_for(path, server, &pki.ca_cert, &pki.admin_cert, &pki.admin_key)
}

/// Writes a kubeconfig for `server` that authenticates with the given client certificate.
pub fn write_for(path: &Path, server: &str, ca: &Path, cert: &Path, key: &Path) -> Result<()> {
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CONTEXT, "cluster": {
            "server": server,
            "certificate-authority": ca,
        }}],
        "users": [{"name": "admin", "user": {
            "client-certificate": cert,
            "client-key": key,
        }}],
        "contexts": [{"name": CONTEXT, "context": {"cluster": CONTEXT, "user": "admin"}}],
        "current-context": CONTEXT,
    });
    let text = serde_json::to_string_pretty(&doc).map_err(|e| ClusterError::State { path: path.to_path_buf(), source: e })?;
    std::fs::write(path, text).map_err(ClusterError::io(format!("writing {}", path.display())))
}

/// A kube client configuration for the kubeconfig at `path`.
pub async fn client_config(path: &Path) -> Result<kube::Config> {
    let kc = kube::config::Kubeconfig::read_from(path)?;
    Ok(kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default()).await?)
}
