//! The operator's components (`status-updater`, `kwok-gpu-device-plugin`, `status-exporter`,
//! `topology-server` from crate `fake-gpu-operator`) as local processes against the cluster,
//! started by `up` unless `--no-operator`. Node-local files go under `<run dir>/nodes` (the
//! exporter reads the same live states the fake NVML does), the topology ConfigMaps into
//! namespace `gpu-operator`. See docs/operator.md.

use std::path::{Path, PathBuf};

/// Name of the operator binary.
pub const BINARY: &str = "fake-gpu-operator";
/// Env var naming the operator binary explicitly (an absent file is then an error).
pub const ENV_BINARY: &str = "FAKEGPU_OPERATOR_BIN";
/// Namespace of the topology ConfigMaps.
pub const NAMESPACE: &str = "gpu-operator";

/// Where the binary is: `$FAKEGPU_OPERATOR_BIN` (`Err` when it names no file), else next to
/// the running executable (same cargo target dir), else on `PATH`; `Ok(None)` when nowhere.
pub fn locate() -> Result<Option<PathBuf>, String> {
    if let Some(p) = std::env::var_os(ENV_BINARY).filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_file() { Ok(Some(p)) } else { Err(format!("{ENV_BINARY}={} is not a file", p.display())) };
    }
    let sibling = std::env::current_exe().ok().and_then(|e| {
        let dir = e.parent()?.to_path_buf();
        // Test and example binaries live one level deeper (target/debug/deps).
        [dir.join(BINARY), dir.parent()?.join(BINARY)].into_iter().find(|p| p.is_file())
    });
    if sibling.is_some() {
        return Ok(sibling);
    }
    Ok(std::env::var_os("PATH").and_then(|path| std::env::split_paths(&path).map(|d| d.join(BINARY)).find(|p| p.is_file())))
}

/// Loopback ports of the components that serve HTTP.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub topology_server: u16,
    pub metrics: u16,
}

/// `(component, args)` for each process, in start order; the topology-server comes last
/// (readiness is its /healthz).
pub fn components(kubeconfig: &Path, run_dir: &Path, ports: Ports) -> Vec<(&'static str, Vec<String>)> {
    let common = |name: &str| {
        vec![name.to_string(), "--kubeconfig".into(), kubeconfig.display().to_string(), "--namespace".into(), NAMESPACE.into()]
    };
    let node_dir = run_dir.join("nodes").display().to_string();
    let mut updater = common("status-updater");
    // The kwok plugin runs beside it: a KWOK node's capacity comes with its labels.
    updater.extend(["--node-dir".into(), node_dir.clone(), "--node-files-for-kwok".into(), "--kwok-capacity".into()]);
    let mut exporter = common("status-exporter");
    exporter.extend(["--listen".into(), format!("127.0.0.1:{}", ports.metrics), "--node-dir".into(), node_dir]);
    let mut server = common("topology-server");
    server.extend(["--listen".into(), format!("127.0.0.1:{}", ports.topology_server)]);
    vec![
        ("status-updater", updater),
        ("kwok-gpu-device-plugin", common("kwok-gpu-device-plugin")),
        ("status-exporter", exporter),
        ("topology-server", server),
    ]
}

/// `(component, args)` of the compute-domain components (`up --compute-domains`): the
/// controller installs the CRDs first.
pub fn compute_domain_components(kubeconfig: &Path) -> Vec<(&'static str, Vec<String>)> {
    let kc = kubeconfig.display().to_string();
    vec![
        ("compute-domain-controller", vec!["compute-domain-controller".into(), "--kubeconfig".into(), kc.clone(), "--install-crds".into()]),
        ("kwok-compute-domain-dra-plugin", vec!["kwok-compute-domain-dra-plugin".into(), "--kubeconfig".into(), kc]),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn component_args() {
        let c = components(Path::new("/r/kubeconfig"), Path::new("/r"), Ports { topology_server: 1234, metrics: 5678 });
        assert_eq!(
            c.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            ["status-updater", "kwok-gpu-device-plugin", "status-exporter", "topology-server"]
        );
        assert!(c[0].1.join(" ").contains("--node-dir /r/nodes --node-files-for-kwok --kwok-capacity"));
        assert!(c[2].1.join(" ").ends_with("--listen 127.0.0.1:5678 --node-dir /r/nodes"));
        assert!(c[3].1.join(" ").ends_with("--listen 127.0.0.1:1234"));
        assert!(c.iter().all(|(n, a)| a[0] == *n && a.join(" ").contains("--kubeconfig /r/kubeconfig --namespace gpu-operator")));
    }

    #[test]
    fn compute_domain_component_args() {
        let c = compute_domain_components(Path::new("/r/kubeconfig"));
        assert_eq!(c[0].1.join(" "), "compute-domain-controller --kubeconfig /r/kubeconfig --install-crds");
        assert_eq!(c[1].1.join(" "), "kwok-compute-domain-dra-plugin --kubeconfig /r/kubeconfig");
    }
}
