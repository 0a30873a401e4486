//! The cluster's PKI, shaped like kwokctl's: one CA and one ECDSA P-256 "admin" certificate
//! (O=system:masters) that serves the apiserver, authenticates every component and signs
//! ServiceAccount tokens. Fine for a throw-away loopback cluster, and it keeps startup fast.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose};

use crate::error::{ClusterError, Result};

/// Paths of the generated PEM files.
#[derive(Debug, Clone)]
pub struct Pki {
    pub ca_cert: PathBuf,
    pub admin_cert: PathBuf,
    pub admin_key: PathBuf,
    /// Present when a real node was asked for ([`generate`] got a [`NodeIdentity`]).
    pub node: Option<NodePki>,
}

/// The real node's name and address, which its certificates carry.
#[derive(Debug, Clone)]
pub struct NodeIdentity {
    pub name: String,
    pub ip: std::net::Ipv4Addr,
}

/// A real node's kubelet certificates: a serving certificate the API server verifies against
/// the CA (for logs/exec), and a client certificate as `system:node:<name>` (group
/// `system:nodes`), so that the Node authorizer treats the kubelet as that node.
#[derive(Debug, Clone)]
pub struct NodePki {
    pub serving_cert: PathBuf,
    pub serving_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

/// Writes ca.crt, admin.crt and admin.key into `dir`, and with `node` the kubelet's
/// certificates (kubelet-serving.*, kubelet-client.*).
pub fn generate(dir: &Path, node: Option<&NodeIdentity>) -> Result<Pki> {
    std::fs::create_dir_all(dir).map_err(ClusterError::io(format!("creating {}", dir.display())))?;

    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name.push(DnType::CommonName, "fake-gpu-operator-ca");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let admin_key = KeyPair::generate()?;
    let sans: Vec<String> = [
        "localhost",
        "127.0.0.1",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
        "10.0.0.1",
    ]
    .map(String::from)
    .to_vec();
    let mut admin = CertificateParams::new(sans)?;
    admin.distinguished_name.push(DnType::CommonName, "kwok-admin");
    admin.distinguished_name.push(DnType::OrganizationName, "system:masters");
    admin.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    let admin_cert = admin.signed_by(&admin_key, &issuer)?;

    let mut pki = Pki { ca_cert: dir.join("ca.crt"), admin_cert: dir.join("admin.crt"), admin_key: dir.join("admin.key"), node: None };
    write(&pki.ca_cert, &ca_cert.pem())?;
    write(&pki.admin_cert, &admin_cert.pem())?;
    write(&pki.admin_key, &admin_key.serialize_pem())?;
    if let Some(node) = node {
        let files = NodePki {
            serving_cert: dir.join("kubelet-serving.crt"),
            serving_key: dir.join("kubelet-serving.key"),
            client_cert: dir.join("kubelet-client.crt"),
            client_key: dir.join("kubelet-client.key"),
        };
        let key = KeyPair::generate()?;
        let mut serving = CertificateParams::new(vec![node.name.clone(), node.ip.to_string()])?;
        serving.distinguished_name.push(DnType::CommonName, format!("system:node:{}", node.name));
        serving.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        write(&files.serving_cert, &serving.signed_by(&key, &issuer)?.pem())?;
        write(&files.serving_key, &key.serialize_pem())?;

        let key = KeyPair::generate()?;
        let mut client = CertificateParams::new(Vec::<String>::new())?;
        client.distinguished_name.push(DnType::CommonName, format!("system:node:{}", node.name));
        client.distinguished_name.push(DnType::OrganizationName, "system:nodes");
        client.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        write(&files.client_cert, &client.signed_by(&key, &issuer)?.pem())?;
        write(&files.client_key, &key.serialize_pem())?;
        pki.node = Some(files);
    }
    Ok(pki)
}

fn write(path: &Path, contents: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(ClusterError::io(format!("writing {}", path.display())))?;
    f.write_all(contents.as_bytes()).map_err(ClusterError::io(format!("writing {}", path.display())))
}
