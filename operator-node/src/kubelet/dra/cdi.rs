//! CDI specs (container-device-interface): one transient spec per claim, kind
//! `k8s.gpu.nvidia.com/gpu`, file `k8s.gpu.nvidia.com-gpu_<claimUID>.json`. Device
//! `<claimUID>` carries the claim-wide edits (`NVIDIA_VISIBLE_DEVICES` of all its GPUs, the
//! NVML/nvidia-smi/node mounts); device `<claimUID>-<device>` carries the per-device variables
//! (`GPU_DEVICE_<ID>`, sharing strategy, interval or partition count).

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::prepare::{PreparedDevice, Sharing};
use crate::kubelet::pod_view::{container_edits, HostFiles};

pub const KIND: &str = "k8s.gpu.nvidia.com/gpu";
pub const CDI_VERSION: &str = "0.5.0";

/// The spec file of a claim.
pub fn spec_path(cdi_root: &Path, claim_uid: &str) -> PathBuf {
    cdi_root.join(format!("k8s.gpu.nvidia.com-gpu_{claim_uid}.json"))
}

/// Fully-qualified CDI ids: the claim-wide device, then the per-device one.
pub fn device_ids(claim_uid: &str, device: &str) -> Vec<String> {
    vec![format!("{KIND}={claim_uid}"), format!("{KIND}={claim_uid}-{device}")]
}

fn env_id(device: &str) -> String {
    device.replace('-', "_").to_ascii_uppercase()
}

/// The spec of a claim.
pub fn spec(claim_uid: &str, devices: &[PreparedDevice], files: &HostFiles) -> Value {
    let uuids: Vec<String> = devices.iter().map(|d| d.uuid.clone()).collect();
    let edits = container_edits(files, &uuids);
    let env: Vec<String> = edits.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mounts: Vec<Value> = edits
        .mounts
        .iter()
        .map(|m| {
            let mut options = vec!["bind", "nosuid", "nodev"];
            if m.read_only {
                options.insert(0, "ro");
            }
            json!({"hostPath": m.host_path, "containerPath": m.container_path, "options": options})
        })
        .collect();
    let mut cdi_devices = vec![json!({"name": claim_uid, "containerEdits": {"env": env, "mounts": mounts}})];
    for d in devices {
        let id = env_id(&d.device);
        let mut env = vec![format!("GPU_DEVICE_{id}={}", d.device)];
        match &d.sharing {
            Sharing::TimeSlicing { interval } => {
                env.push(format!("GPU_DEVICE_{id}_SHARING_STRATEGY=TimeSlicing"));
                env.push(format!("GPU_DEVICE_{id}_TIMESLICE_INTERVAL={interval}"));
            }
            Sharing::SpacePartitioning { partition_count } => {
                env.push(format!("GPU_DEVICE_{id}_SHARING_STRATEGY=SpacePartitioning"));
                env.push(format!("GPU_DEVICE_{id}_PARTITION_COUNT={partition_count}"));
            }
        }
        cdi_devices.push(json!({"name": format!("{claim_uid}-{}", d.device), "containerEdits": {"env": env}}));
    }
    json!({"cdiVersion": CDI_VERSION, "kind": KIND, "devices": cdi_devices, "containerEdits": {}})
}

/// Writes a spec atomically (temporary file, then rename).
pub fn write(path: &Path, spec: &Value) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(spec).expect("JSON"))?;
    std::fs::rename(&tmp, path)
}

/// Removes a spec; a missing one is fine.
pub fn remove(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
