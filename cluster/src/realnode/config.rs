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
