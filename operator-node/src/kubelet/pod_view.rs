//! What a container needs so that its NVML and CUDA view is the simulated node's, restricted
//! to the GPUs it was given: `NVIDIA_VISIBLE_DEVICES`, the fake NVML mounted as
//! `libnvidia-ml.so.1` and the fake CUDA driver next to it as `libcuda.so.1`, the node's
//! config/state directory read-only, and nvidia-smi.
//! Shared by the device plugin's Allocate response and the DRA plugin's CDI specs.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// Where the fake NVML appears in the container (the path the NVIDIA container runtime uses on Debian/Ubuntu).
pub const CONTAINER_NVML: &str = "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1";
/// Where the fake CUDA driver appears in the container: next to the NVML, as the NVIDIA
/// container runtime places the driver's libcuda.
pub const CONTAINER_CUDA: &str = "/usr/lib/x86_64-linux-gnu/libcuda.so.1";
/// Where nvidia-smi appears in the container.
pub const CONTAINER_NVIDIA_SMI: &str = "/usr/bin/nvidia-smi";
/// Where the node directory (config and live state) appears in the container, read-only.
pub const CONTAINER_NODE_DIR: &str = "/var/lib/fake-gpu-operator/node";

/// Host paths of what gets mounted into GPU containers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostFiles {
    /// The fake NVML (`libnvidia_ml.so` built from nvml-shim); not mounted when None.
    pub nvml_lib: Option<PathBuf>,
    /// The fake CUDA driver (`libcuda.so` built from cuda-shim); not mounted when None.
    pub cuda_lib: Option<PathBuf>,
    /// The project's nvidia-smi; not mounted when None.
    pub nvidia_smi: Option<PathBuf>,
    /// The node directory holding `config.json` and the live state (`fakegpu-state.json`).
    pub node_dir: PathBuf,
    /// The node's name (the container's host name is the pod's, so the NVML is told).
    pub node_name: String,
}

/// One bind mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub host_path: PathBuf,
    pub container_path: String,
    pub read_only: bool,
}

/// Environment and mounts for one container.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerEdits {
    pub env: BTreeMap<String, String>,
    pub mounts: Vec<Mount>,
}

/// The edits for a container given the GPUs `uuids` (in the order given: that order becomes
/// the container's NVML indices).
pub fn container_edits(files: &HostFiles, uuids: &[String]) -> ContainerEdits {
    let mut env = BTreeMap::new();
    env.insert("NVIDIA_VISIBLE_DEVICES".to_string(), if uuids.is_empty() { "void".to_string() } else { uuids.join(",") });
    env.insert(fakegpu_model::config::ENV_CONFIG.to_string(), format!("{CONTAINER_NODE_DIR}/config.json"));
    env.insert(
        fakegpu_model::state_file::ENV_STATE.to_string(),
        format!("{CONTAINER_NODE_DIR}/{}", fakegpu_model::state_file::DEFAULT_FILE_NAME),
    );
    env.insert(fakegpu_model::config::ENV_NODE.to_string(), files.node_name.clone());
    env.insert("NODE_NAME".to_string(), files.node_name.clone());
    let mut mounts = vec![Mount { host_path: files.node_dir.clone(), container_path: CONTAINER_NODE_DIR.into(), read_only: true }];
    if let Some(lib) = &files.nvml_lib {
        mounts.push(Mount { host_path: lib.clone(), container_path: CONTAINER_NVML.into(), read_only: true });
    }
    if let Some(lib) = &files.cuda_lib {
        mounts.push(Mount { host_path: lib.clone(), container_path: CONTAINER_CUDA.into(), read_only: true });
    }
    if let Some(smi) = &files.nvidia_smi {
        mounts.push(Mount { host_path: smi.clone(), container_path: CONTAINER_NVIDIA_SMI.into(), read_only: true });
    }
    ContainerEdits { env, mounts }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_name_the_gpus_and_mount_the_node_read_only() {
        let files = HostFiles {
            nvml_lib: Some("/opt/fgo/libnvidia-ml.so.1".into()),
            cuda_lib: Some("/opt/fgo/libcuda.so.1".into()),
            nvidia_smi: None,
            node_dir: "/var/lib/fake-gpu-operator/nodes/n1".into(),
            node_name: "n1".into(),
        };
        let e = container_edits(&files, &["GPU-b".into(), "GPU-a".into()]);
        assert_eq!(e.env["NVIDIA_VISIBLE_DEVICES"], "GPU-b,GPU-a");
        assert_eq!(e.env["FAKEGPU_CONFIG"], "/var/lib/fake-gpu-operator/node/config.json");
        assert_eq!(e.env["FAKEGPU_NODE"], "n1");
        assert_eq!(e.mounts.len(), 3);
        assert!(e.mounts.iter().any(|m| m.container_path == CONTAINER_CUDA && m.host_path.ends_with("libcuda.so.1")));
        assert!(e.mounts.iter().all(|m| m.read_only));
        assert_eq!(container_edits(&files, &[]).env["NVIDIA_VISIBLE_DEVICES"], "void");
    }
}
