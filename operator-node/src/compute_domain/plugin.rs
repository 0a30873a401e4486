//! The kubelet plugin of `compute-domain.nvidia.com` on a node: registration
//! (`<plugins_registry>/compute-domain.nvidia.com-reg.sock`) and `v1.DRAPlugin`
//! (`<plugins>/compute-domain.nvidia.com/dra.sock`). NodePrepareResources reads the claim,
//! decides with [`super::channels::prepare`], makes the fake channel files, writes the claim's
//! CDI spec and checkpoints; a repeated prepare (plugin or kubelet restart) answers from the
//! checkpoint without the API. Errors stay in the failing claim's entry.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use super::channels;
use super::DRIVER;
use crate::kubelet::dra::cdi;
use crate::kubelet::dra::plugin::{ClaimHandler, ClaimSource, Paths};
use crate::kubelet::proto::dra as pb;
use crate::kubelet::KubeletDirs;

/// The plugin's paths: the kubelet's sockets, the CDI root, the checkpoint and the directory
/// of fake channel files.
pub fn paths(dirs: &KubeletDirs, cdi_root: &Path) -> (Paths, PathBuf) {
    let mut p = Paths::for_driver(dirs, cdi_root, DRIVER);
    let plugin_dir = dirs.plugins.join(DRIVER);
    p.checkpoint = plugin_dir.join("computedomain-checkpoint.json");
    (p, plugin_dir.join("imex-channels"))
}

/// A prepared claim, as told to the kubelet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreparedRecord {
    pub namespace: String,
    pub name: String,
    #[serde(rename = "domainID")]
    pub domain_id: String,
    pub devices: Vec<DeviceRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRecord {
    pub request_names: Vec<String>,
    pub pool_name: String,
    pub device_name: String,
    pub cdi_device_ids: Vec<String>,
}

/// The checkpoint file: prepared claims by UID.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub version: u32,
    pub claims: BTreeMap<String, PreparedRecord>,
}

impl Checkpoint {
    /// Reads `path`; empty when it does not exist; a file that does not parse is an error
    /// naming it (the plugin must not forget prepared claims silently).
    pub fn load(path: &Path) -> std::io::Result<Checkpoint> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Checkpoint { version: 1, claims: BTreeMap::new() }),
            Err(e) => Err(e),
        }
    }

    /// Writes atomically (temporary file, then rename).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self).expect("JSON"))?;
        std::fs::rename(&tmp, path)
    }
}

/// `v1.DRAPlugin` for IMEX channels.
pub struct ChannelService {
    node: String,
    channels: u32,
    cdi_root: PathBuf,
    channel_dir: PathBuf,
    checkpoint_path: PathBuf,
    checkpoint: Mutex<Checkpoint>,
    claims: Arc<dyn ClaimSource>,
}

impl ChannelService {
    pub fn new(
        node: &str,
        channels: u32,
        dirs: &KubeletDirs,
        cdi_root: &Path,
        claims: Arc<dyn ClaimSource>,
    ) -> std::io::Result<ChannelService> {
        let (p, channel_dir) = paths(dirs, cdi_root);
        let checkpoint = Checkpoint::load(&p.checkpoint)?;
        Ok(ChannelService {
            node: node.into(),
            channels,
            cdi_root: cdi_root.into(),
            channel_dir,
            checkpoint_path: p.checkpoint,
            checkpoint: Mutex::new(checkpoint),
            claims,
        })
    }

    fn reply(record: &PreparedRecord) -> pb::NodePrepareResourceResponse {
        pb::NodePrepareResourceResponse {
            devices: record
                .devices
                .iter()
                .map(|d| pb::Device {
                    request_names: d.request_names.clone(),
                    pool_name: d.pool_name.clone(),
                    device_name: d.device_name.clone(),
                    cdi_device_ids: d.cdi_device_ids.clone(),
                    share_id: None,
                })
                .collect(),
            error: String::new(),
        }
    }

    /// The host files the channel device nodes stand for: links to /dev/null, the device
    /// [`channels::FAKE_CHANNEL_MAJOR_MINOR`] names.
    fn ensure_channel_files(&self, ids: &[u32]) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.channel_dir)?;
        for id in ids {
            let path = channels::host_channel(&self.channel_dir, *id);
            if std::fs::symlink_metadata(&path).is_err() {
                match std::os::unix::fs::symlink("/dev/null", &path) {
                    Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
                    _ => {}
                }
            }
        }
        Ok(())
    }

    async fn prepare_claim(&self, claim: &pb::Claim) -> Result<pb::NodePrepareResourceResponse, String> {
        if claim.uid.is_empty() || claim.name.is_empty() || claim.namespace.is_empty() {
            return Err(format!("malformed claim reference (namespace {:?}, name {:?}, uid {:?})", claim.namespace, claim.name, claim.uid));
        }
        let spec_path = channels::spec_path(&self.cdi_root, &claim.uid);
        if let Some(record) = self.checkpoint.lock().await.claims.get(&claim.uid).cloned() {
            if spec_path.exists() {
                return Ok(Self::reply(&record));
            }
        }
        let object = self.claims.get(&claim.namespace, &claim.name).await?;
        if object.metadata.uid.as_deref().is_some_and(|u| u != claim.uid) {
            return Err(format!(
                "claim {}/{} has UID {:?}, the kubelet asked for {}",
                claim.namespace, claim.name, object.metadata.uid, claim.uid
            ));
        }
        let prepared = channels::prepare(&object, &self.node, self.channels).map_err(|e| e.to_string())?;
        let ids: Vec<u32> = prepared.devices.iter().flat_map(|d| d.channels.iter().copied()).collect();
        self.ensure_channel_files(&ids).map_err(|e| format!("creating channel files in {}: {e}", self.channel_dir.display()))?;
        let spec = channels::spec(&claim.uid, &self.node, &prepared, &self.channel_dir);
        cdi::write(&spec_path, &spec).map_err(|e| format!("writing the CDI spec: {e}"))?;
        let record = PreparedRecord {
            namespace: claim.namespace.clone(),
            name: claim.name.clone(),
            domain_id: prepared.domain_id.clone(),
            devices: prepared
                .devices
                .iter()
                .map(|d| DeviceRecord {
                    request_names: vec![d.request.clone()],
                    pool_name: d.pool.clone(),
                    device_name: d.device.clone(),
                    cdi_device_ids: vec![channels::device_id(&claim.uid, &d.device)],
                })
                .collect(),
        };
        let mut store = self.checkpoint.lock().await;
        store.claims.insert(claim.uid.clone(), record.clone());
        store.save(&self.checkpoint_path).map_err(|e| format!("writing the checkpoint: {e}"))?;
        tracing::info!(claim = %format!("{}/{}", claim.namespace, claim.name), domain = %prepared.domain_id, mode = %prepared.mode, channels = ids.len(), "prepared");
        Ok(Self::reply(&record))
    }

    async fn unprepare_claim(&self, claim: &pb::Claim) -> Result<(), String> {
        if claim.uid.is_empty() {
            return Err("malformed claim reference: empty uid".into());
        }
        cdi::remove(&channels::spec_path(&self.cdi_root, &claim.uid)).map_err(|e| format!("removing the CDI spec: {e}"))?;
        let mut store = self.checkpoint.lock().await;
        if store.claims.remove(&claim.uid).is_some() {
            store.save(&self.checkpoint_path).map_err(|e| format!("writing the checkpoint: {e}"))?;
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl ClaimHandler for ChannelService {
    async fn prepare_one(&self, claim: &pb::Claim) -> Result<pb::NodePrepareResourceResponse, String> {
        self.prepare_claim(claim).await
    }

    async fn unprepare_one(&self, claim: &pb::Claim) -> Result<(), String> {
        self.unprepare_claim(claim).await
    }
}

/// Serves registration and the DRA service until `shutdown` resolves.
pub async fn serve(
    paths: &Paths,
    service: ChannelService,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    crate::kubelet::dra::plugin::serve_driver(paths, DRIVER, service, shutdown).await
}
