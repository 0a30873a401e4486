//! Command lines of the control-plane components, after kwokctl's binary runtime
//! (sigs.k8s.io/kwok pkg/kwokctl/components) trimmed to what a loopback test cluster needs.

use std::path::Path;

use crate::pki::Pki;

/// Loopback ports of one cluster.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub etcd_client: u16,
    pub etcd_peer: u16,
    pub apiserver: u16,
    pub scheduler: u16,
    pub controller_manager: u16,
    pub kwok: u16,
}

impl Ports {
    pub fn allocate() -> crate::error::Result<Ports> {
        let mut taken = std::collections::BTreeSet::new();
        let mut next = || -> crate::error::Result<u16> {
            // The OS may hand back a port it just gave us, since each listener is closed again.
            for _ in 0..50 {
                let p = crate::process::free_port()?;
                if taken.insert(p) {
                    return Ok(p);
                }
            }
            Err(crate::error::ClusterError::InvalidArgument("could not find distinct free ports on 127.0.0.1".into()))
        };
        Ok(Ports {
            etcd_client: next()?,
            etcd_peer: next()?,
            apiserver: next()?,
            scheduler: next()?,
            controller_manager: next()?,
            kwok: next()?,
        })
    }
}

fn s(v: impl std::fmt::Display) -> String {
    v.to_string()
}

pub fn etcd(data_dir: &Path, p: &Ports) -> Vec<String> {
    let client = format!("http://127.0.0.1:{}", p.etcd_client);
    let peer = format!("http://127.0.0.1:{}", p.etcd_peer);
    vec![
        s("--name=node0"),
        format!("--data-dir={}", data_dir.display()),
        // Test data is throw-away; fsync dominates apiserver write latency on shared disks.
        s("--unsafe-no-fsync=true"),
        s("--auto-compaction-retention=1"),
        s("--quota-backend-bytes=8589934592"),
        format!("--listen-client-urls={client}"),
        format!("--advertise-client-urls={client}"),
        format!("--listen-peer-urls={peer}"),
        format!("--initial-advertise-peer-urls={peer}"),
        format!("--initial-cluster=node0={peer}"),
        s("--listen-metrics-urls="),
        s("--log-level=warn"),
    ]
}

pub fn apiserver(pki: &Pki, p: &Ports) -> Vec<String> {
    let crt = pki.admin_cert.display();
    let key = pki.admin_key.display();
    vec![
        format!("--etcd-servers=http://127.0.0.1:{}", p.etcd_client),
        s("--bind-address=127.0.0.1"),
        // Required where there is no default route ("unable to find suitable network address").
        s("--advertise-address=127.0.0.1"),
        format!("--secure-port={}", p.apiserver),
        format!("--tls-cert-file={crt}"),
        format!("--tls-private-key-file={key}"),
        format!("--client-ca-file={}", pki.ca_cert.display()),
        s("--service-account-issuer=https://kubernetes.default.svc.cluster.local"),
        // The verifying side wants a public key; the certificate carries it.
        format!("--service-account-key-file={crt}"),
        format!("--service-account-signing-key-file={key}"),
        s("--service-cluster-ip-range=10.0.0.0/24"),
        s("--allow-privileged=true"),
        s("--authorization-mode=Node,RBAC"),
        // No real endpoints exist; the reconciler would only log loopback-range errors.
        s("--endpoint-reconciler-type=none"),
        // Priority & fairness costs CPU that 2 cores do not have; 0 lifts the plain limits too.
        s("--enable-priority-and-fairness=false"),
        s("--max-requests-inflight=0"),
        s("--max-mutating-requests-inflight=0"),
        // resource.k8s.io/v1 is GA and served by default in 1.37; nothing to switch on.
    ]
}

/// Whether a `--runtime-config` value switches `resource.k8s.io/v1` off (`resource.k8s.io/v1=false`).
pub fn disables_dra_v1(runtime_config: &str) -> bool {
    runtime_config
        .split(',')
        .any(|kv| matches!(kv.trim().split_once('='), Some(("resource.k8s.io/v1", v)) if v.eq_ignore_ascii_case("false")))
}

/// An audit policy that records every request's metadata (who, verb, resource, user agent) once,
/// when its response is complete.
pub const AUDIT_POLICY: &str =
    "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived, ResponseStarted]\nrules:\n  - level: Metadata\n";

/// API server flags that write the audit log as JSON lines to `log` (`up --audit-log`).
pub fn apiserver_audit(policy: &Path, log: &Path) -> Vec<String> {
    vec![
        format!("--audit-policy-file={}", policy.display()),
        format!("--audit-log-path={}", log.display()),
        s("--audit-log-format=json"),
        // Written before the response (the default "blocking" mode): a reader that saw a
        // response finds its line.
        s("--audit-log-mode=blocking"),
        s("--audit-log-maxsize=0"),
    ]
}

/// API server flags for a real node: it verifies the kubelet's serving certificate and presents
/// the admin certificate to it, so logs/exec pass the kubelet's webhook authn/authz.
pub fn apiserver_kubelet_client(pki: &Pki) -> Vec<String> {
    vec![
        format!("--kubelet-client-certificate={}", pki.admin_cert.display()),
        format!("--kubelet-client-key={}", pki.admin_key.display()),
        format!("--kubelet-certificate-authority={}", pki.ca_cert.display()),
        s("--kubelet-preferred-address-types=InternalIP"),
    ]
}

fn component_common(kubeconfig: &Path, port: u16, cert_dir: &Path) -> Vec<String> {
    let kc = kubeconfig.display();
    vec![
        format!("--kubeconfig={kc}"),
        format!("--authentication-kubeconfig={kc}"),
        format!("--authorization-kubeconfig={kc}"),
        s("--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics"),
        s("--leader-elect=false"),
        s("--bind-address=127.0.0.1"),
        format!("--secure-port={port}"),
        format!("--cert-dir={}", cert_dir.display()),
        s("--kube-api-qps=500"),
        s("--kube-api-burst=1000"),
    ]
}

pub fn scheduler(kubeconfig: &Path, p: &Ports, cert_dir: &Path) -> Vec<String> {
    component_common(kubeconfig, p.scheduler, cert_dir)
}

pub fn controller_manager(kubeconfig: &Path, pki: &Pki, p: &Ports, cert_dir: &Path) -> Vec<String> {
    let mut a = component_common(kubeconfig, p.controller_manager, cert_dir);
    a.extend([
        s("--use-service-account-credentials=false"),
        format!("--service-account-private-key-file={}", pki.admin_key.display()),
        format!("--root-ca-file={}", pki.ca_cert.display()),
        s("--controllers=*"),
        // kwok renews Leases every ~10 s (a quarter of 40 s); 40 s grace leaves margin on a busy host.
        s("--node-monitor-grace-period=40s"),
        s("--node-monitor-period=5s"),
    ]);
    a
}

pub fn kwok(kubeconfig: &Path, stages: &Path, p: &Ports) -> Vec<String> {
    vec![
        format!("--kubeconfig={}", kubeconfig.display()),
        format!("--config={}", stages.display()),
        s("--manage-all-nodes=false"),
        s("--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake"),
        s("--manage-nodes-with-label-selector="),
        s("--manage-single-node="),
        s("--cidr=10.0.0.0/16"),
        s("--node-ip=127.0.0.1"),
        s("--node-lease-duration-seconds=40"),
        format!("--server-address=127.0.0.1:{}", p.kwok),
    ]
}

/// The stage file kwok needs (it exits with "no stages found" without one).
pub const KWOK_STAGES: &str = include_str!("kwok-stages.yaml");

#[cfg(test)]
mod tests {
    #[test]
    fn runtime_config_that_disables_dra_v1() {
        assert!(super::disables_dra_v1("resource.k8s.io/v1=false,resource.k8s.io/v1beta2=true"));
        assert!(super::disables_dra_v1("resource.k8s.io/v1beta1=true, resource.k8s.io/v1=false"));
        assert!(!super::disables_dra_v1("resource.k8s.io/v1beta1=false"));
        assert!(!super::disables_dra_v1("resource.k8s.io/v1=true"));
        assert!(!super::disables_dra_v1("api/all=true"));
    }
}
