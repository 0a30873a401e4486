//! Kubelet-side plugins: the device plugin (`nvidia.com/gpu` over device plugin v1beta1) and
//! the DRA kubelet plugin (driver `gpu.nvidia.com` over plugin registration v1 + DRA v1), plus
//! the central KWOK ResourceSlice publisher.
//!
//! Pure decision modules ([`devices`], [`allocation`], [`pod_view`], [`health`], [`dra::slices`],
//! [`dra::prepare`], [`dra::cdi`], the planning halves of [`grant`] and [`podresources`]) are
//! tested without sockets or a cluster; [`device_plugin`], [`granter`], [`dra::plugin`],
//! [`dra::publish`] and [`dra::kwok`] are the thin tonic / kube-rs edges. Every plugin server
//! connection passes through [`authority`] (with [`hpack`]), which turns the kubelet's
//! socket-path `:authority` into one h2 accepts.

pub mod allocation;
pub mod authority;
pub mod cli;
pub mod device_plugin;
pub mod devices;
pub mod dra;
pub mod grant;
pub mod granter;
pub mod health;
pub mod hpack;
pub mod pod_view;
pub mod podresources;
pub mod proto;
pub mod uds;

use std::path::PathBuf;

/// Annotation the plugins put on a pod naming the GPUs it was really given (docs/operator-interfaces.md §2).
pub const ALLOCATED_GPUS_ANNOTATION: &str = "fake-gpu-operator.run.ai/allocated-gpus";

/// Where the kubelet and the plugins meet. Defaults are the kubelet's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeletDirs {
    /// Device plugin sockets and the kubelet's `kubelet.sock` (`/var/lib/kubelet/device-plugins`).
    pub device_plugins: PathBuf,
    /// Plugin registration sockets the kubelet's plugin watcher dials (`/var/lib/kubelet/plugins_registry`).
    pub plugins_registry: PathBuf,
    /// Per-driver plugin sockets (`/var/lib/kubelet/plugins`).
    pub plugins: PathBuf,
}

impl Default for KubeletDirs {
    fn default() -> Self {
        KubeletDirs {
            device_plugins: "/var/lib/kubelet/device-plugins".into(),
            plugins_registry: "/var/lib/kubelet/plugins_registry".into(),
            plugins: "/var/lib/kubelet/plugins".into(),
        }
    }
}

/// Node-local files the status-updater or the node-local status-exporter writes
/// (docs/operator-interfaces.md §3).
pub use fakegpu_operator_core::node_files::NodeFiles;

/// Resolves the simulated node from its config file, exactly as the fake NVML in a pod
/// does with `FAKEGPU_CONFIG` pointing at it and `FAKEGPU_NODE` = the node name.
pub fn load_node(files: &NodeFiles, node: &str) -> Result<fakegpu_model::SimulatedNode, fakegpu_model::ConfigError> {
    Ok(fakegpu_model::SimulatedNode::new(files.spec(node)?))
}
