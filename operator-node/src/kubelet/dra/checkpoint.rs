//! The DRA plugin's checkpoint: which claims are prepared and what the kubelet was told, so
//! that a repeated NodePrepareResources (after a plugin or kubelet restart) answers the same
//! without asking the API server, and NodeUnprepareResources is idempotent.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One device as returned to the kubelet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRecord {
    pub request_names: Vec<String>,
    pub pool_name: String,
    pub device_name: String,
    pub cdi_device_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share_id: Option<String>,
    pub uuid: String,
}

/// A prepared claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimRecord {
    pub namespace: String,
    pub name: String,
    pub devices: Vec<DeviceRecord>,
}

/// The file: prepared claims by UID.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub version: u32,
    pub claims: BTreeMap<String, ClaimRecord>,
}

/// A checkpoint bound to its file.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    pub data: Checkpoint,
}

impl Store {
    /// Opens `path`, empty when it does not exist.
    pub fn open(path: &Path) -> std::io::Result<Store> {
        let data = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {e}", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Checkpoint { version: 1, claims: BTreeMap::new() },
            Err(e) => return Err(e),
        };
        Ok(Store { path: path.to_path_buf(), data })
    }

    /// Writes the checkpoint atomically.
    pub fn save(&self) -> std::io::Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&self.data).expect("JSON"))?;
        std::fs::rename(&tmp, &self.path)
    }
}
