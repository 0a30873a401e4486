//! The built client tools and servers report the versions pinned in tests/cluster/versions.env,
//! i.e. build.sh's ldflags stamping took effect.

use std::process::Command;

use fakegpu_cluster::binaries::pinned_version;
use fakegpu_cluster_support::binaries_or_skip;

fn output(bin: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(bin).args(args).output().unwrap_or_else(|e| panic!("running {}: {e}", bin.display()));
    assert!(out.status.success(), "{} {args:?}: {}", bin.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn kubectl_client_version_is_pinned() {
    let Some(bin) = binaries_or_skip("kubectl_client_version_is_pinned") else { return };
    let v: serde_json::Value = serde_json::from_str(&output(&bin.join("kubectl"), &["version", "--client", "-o", "json"])).expect("json");
    assert_eq!(v["clientVersion"]["gitVersion"], pinned_version("K8S_VERSION").expect("pinned"));
}

#[test]
fn helm_version_is_pinned() {
    let Some(bin) = binaries_or_skip("helm_version_is_pinned") else { return };
    let v = output(&bin.join("helm"), &["version", "--template", "{{.Version}}"]);
    assert_eq!(v.trim(), pinned_version("HELM_VERSION").expect("pinned"));
}

#[test]
fn servers_report_pinned_versions() {
    let Some(bin) = binaries_or_skip("servers_report_pinned_versions") else { return };
    let k8s = pinned_version("K8S_VERSION").expect("pinned");
    for b in ["kube-apiserver", "kube-controller-manager", "kube-scheduler"] {
        assert_eq!(output(&bin.join(b), &["--version"]).trim(), format!("Kubernetes {k8s}"), "{b}");
    }
    let etcd = pinned_version("ETCD_VERSION").expect("pinned").trim_start_matches('v');
    assert!(output(&bin.join("etcd"), &["--version"]).contains(&format!("etcd Version: {etcd}")));
    let kwok = pinned_version("KWOK_VERSION").expect("pinned");
    assert!(output(&bin.join("kwok"), &["--version"]).contains(&format!("kwok version {kwok}")));
}
