//! The real node's configuration files: containerd's (CDI on, restrict_oom_score_adj, netns
//! mounts under its own state dir, private CNI conf dir), the bridge CNI network and the kubelet
//! configuration. Values that the host setup also uses live in [`super::Layout`].

use std::fmt::Write as _;

use super::Layout;

/// containerd 2.x, config version 3.
pub fn containerd(l: &Layout, runc: &std::path::Path) -> String {
    let mut t = String::new();
    let q = |p: &std::path::Path| format!("'{}'", p.display());
    let _ = writeln!(t, "version = 3");
    let _ = writeln!(t, "root = {}", q(&l.containerd_root()));
    let _ = writeln!(t, "state = {}", q(&l.containerd_state()));
    // Tracing exporters would dial out; the other snapshotters are not built or not needed.
    let _ = writeln!(t, "disabled_plugins = ['io.containerd.tracing.processor.v1.otlp', 'io.containerd.internal.v1.tracing']");
    let _ = writeln!(t, "\n[grpc]\n  address = {}", q(&l.containerd_socket()));
    let _ = writeln!(t, "\n[ttrpc]\n  address = {}", q(&l.containerd_state().join("ttrpc.sock")));
    let _ = writeln!(t, "\n[debug]\n  level = 'info'");
    let _ = writeln!(t, "\n[plugins.'io.containerd.grpc.v1.cri']");
    let _ = writeln!(t, "  disable_tcp_service = true");
    let _ = writeln!(t, "  stream_server_address = '127.0.0.1'");
    let _ = writeln!(t, "  stream_server_port = '0'");
    let _ = writeln!(t, "\n[plugins.'io.containerd.cri.v1.runtime']");
    // This host cannot lower oom_score_adj (no CAP_SYS_RESOURCE): runc fails without it.
    let _ = writeln!(t, "  restrict_oom_score_adj = true");
    // Pod network namespaces are bind-mounted here rather than under the host's /var/run/netns.
    let _ = writeln!(t, "  netns_mounts_under_state_dir = true");
    let _ = writeln!(t, "  cdi_spec_dirs = ['/etc/cdi', '/var/run/cdi']");
    let _ = writeln!(t, "\n[plugins.'io.containerd.cri.v1.runtime'.containerd]\n  default_runtime_name = 'runc'");
    let _ = writeln!(t, "\n[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]\n  runtime_type = 'io.containerd.runc.v2'");
    let _ = writeln!(t, "\n[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]");
    let _ = writeln!(t, "  BinaryName = {}", q(runc));
    // runc's state would go to /run/containerd/runc otherwise.
    let _ = writeln!(t, "  Root = {}", q(&l.containerd_state().join("runc")));
    let _ = writeln!(t, "  SystemdCgroup = false");
    let _ = writeln!(t, "\n[plugins.'io.containerd.cri.v1.runtime'.cni]");
    let _ = writeln!(t, "  bin_dirs = ['/usr/lib/cni']");
    let _ = writeln!(t, "  conf_dir = {}", q(&l.cni_conf_dir()));
    // Shim sockets would go to /run/containerd/s; the path must stay under 42 bytes.
    let _ = writeln!(t, "\n[plugins.'io.containerd.shim.v1.manager']\n  socket_dir = '{}'", super::SHIM_SOCKET_DIR);
    // The "opt" plugin would create /opt/containerd on the host otherwise.
    let _ = writeln!(t, "\n[plugins.'io.containerd.internal.v1.opt']\n  path = {}", q(&l.node_dir.join("opt")));
    let _ = writeln!(t, "\n[plugins.'io.containerd.cri.v1.images']\n  snapshotter = 'overlayfs'");
    let _ = writeln!(t, "\n[plugins.'io.containerd.cri.v1.images'.pinned_images]\n  sandbox = '{}'", super::PAUSE_IMAGE);
    t
}

/// A bridge network without gateway or masquerading: pods reach the host's bridge address and
/// the Service VIP on it, nothing else (the host keeps unreachable routes for both ranges).
pub fn cni(l: &Layout) -> String {
    serde_json::to_string_pretty(&serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "fakegpu",
        "plugins": [{
            "type": "bridge",
            "bridge": super::BRIDGE,
            "isGateway": false,
            "ipMasq": false,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                // host-local keeps its leases under /var/lib/cni unless told otherwise.
                "dataDir": l.node_dir.join("cni-ipam"),
                "ranges": [[{"subnet": super::POD_SUBNET, "gateway": super::NODE_IP.to_string()}]],
                "routes": [{"dst": super::SERVICE_RANGE, "gw": super::NODE_IP.to_string()}],
            },
        }, {"type": "loopback"}],
    }))
    .expect("static JSON")
}

/// KubeletConfiguration (YAML as JSON).
pub fn kubelet(l: &Layout, pki: &crate::pki::Pki, node: &crate::pki::NodePki) -> String {
    serde_json::to_string_pretty(&serde_json::json!({
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        // 1.37 refuses cgroup v1 hosts unless told not to.
        "failCgroupV1": false,
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": format!("/{}", super::CGROUP_ROOT),
        "failSwapOn": false,
        "containerRuntimeEndpoint": format!("unix://{}", l.containerd_socket().display()),
        "address": super::NODE_IP.to_string(),
        "port": super::KUBELET_PORT,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": super::KUBELET_HEALTHZ_PORT,
        "readOnlyPort": 0,
        "makeIPTablesUtilChains": false,
        "podLogsDir": l.pod_logs_dir(),
        "resolvConf": "",
        "tlsCertFile": node.serving_cert,
        "tlsPrivateKeyFile": node.serving_key,
        "authentication": {
            "anonymous": {"enabled": false},
            "webhook": {"enabled": true},
            "x509": {"clientCAFile": pki.ca_cert},
        },
        "authorization": {"mode": "Webhook"},
        // A shared CI disk must not make the kubelet evict the chart's pods.
        "evictionHard": {"memory.available": "1Mi", "nodefs.available": "1%", "imagefs.available": "1%", "nodefs.inodesFree": "1%"},
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": false,
        "nodeStatusUpdateFrequency": "5s",
        "syncFrequency": "10s",
        "fileCheckFrequency": "10s",
    }))
    .expect("static JSON")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        Layout { node_dir: "/tmp/run/node".into() }
    }

    #[test]
    fn containerd_keeps_its_state_in_the_run_dir_and_cannot_lower_oom_scores() {
        let t = containerd(&layout(), std::path::Path::new("/usr/sbin/runc"));
        assert!(t.contains("restrict_oom_score_adj = true"));
        assert!(t.contains("netns_mounts_under_state_dir = true"));
        assert!(t.contains("cdi_spec_dirs = ['/etc/cdi', '/var/run/cdi']"));
        assert!(t.contains(&format!("sandbox = '{}'", super::super::PAUSE_IMAGE)));
        assert!(t.contains("SystemdCgroup = false"));
        // Host paths containerd would use by default must all be overridden.
        assert!(!t.contains("/run/containerd") && !t.contains("/var/lib/containerd") && !t.contains("/opt/containerd"));
        assert!(super::super::SHIM_SOCKET_DIR.len() <= 42, "containerd rejects longer shim socket dirs");
    }

    #[test]
    fn cni_has_no_gateway_no_masquerade_and_private_ipam_state() {
        let v: serde_json::Value = serde_json::from_str(&cni(&layout())).unwrap();
        let bridge = &v["plugins"][0];
        assert_eq!(bridge["type"], "bridge");
        assert_eq!(bridge["isGateway"], false);
        assert_eq!(bridge["ipMasq"], false);
        assert_eq!(bridge["ipam"]["dataDir"], "/tmp/run/node/cni-ipam");
        assert_eq!(bridge["ipam"]["routes"][0]["dst"], super::super::SERVICE_RANGE);
    }

    #[test]
    fn kubelet_authenticates_every_request_and_leaves_iptables_alone() {
        let pki = crate::pki::Pki { ca_cert: "/p/ca.crt".into(), admin_cert: "/p/a.crt".into(), admin_key: "/p/a.key".into(), node: None };
        let node = crate::pki::NodePki {
            serving_cert: "/p/s.crt".into(),
            serving_key: "/p/s.key".into(),
            client_cert: "/p/c.crt".into(),
            client_key: "/p/c.key".into(),
        };
        let v: serde_json::Value = serde_json::from_str(&kubelet(&layout(), &pki, &node)).unwrap();
        assert_eq!(v["authentication"]["anonymous"]["enabled"], false);
        assert_eq!(v["authentication"]["webhook"]["enabled"], true);
        assert_eq!(v["authorization"]["mode"], "Webhook");
        assert_eq!(v["makeIPTablesUtilChains"], false);
        assert_eq!(v["readOnlyPort"], 0);
        assert_eq!(v["failCgroupV1"], false);
        assert_eq!(v["healthzBindAddress"], "127.0.0.1");
        assert_eq!(v["address"], super::super::NODE_IP.to_string());
    }
}
