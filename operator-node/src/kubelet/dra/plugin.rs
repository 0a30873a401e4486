//! The DRA kubelet plugin edge: serves `pluginregistration.Registration` on
//! `<plugins_registry>/gpu.nvidia.com-reg.sock` and `v1.DRAPlugin` on
//! `<plugins>/gpu.nvidia.com/dra.sock`. NodePrepareResources reads each claim (through a
//! [`ClaimSource`]), decides with [`super::prepare`], writes the CDI spec, checkpoints and
//! annotates the reserving pods; errors stay in the failing claim's entry.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fakegpu_model::SimulatedNode;
use k8s_openapi::api::resource::v1::ResourceClaim;
use tokio::sync::Mutex;
use tonic::{Request, Response, Status};

use super::checkpoint::{ClaimRecord, DeviceRecord, Store};
use super::{cdi, prepare, DRIVER};
use crate::kubelet::pod_view::HostFiles;
use crate::kubelet::proto::dra as pb;
use crate::kubelet::proto::dra::dra_plugin_server::{DraPlugin, DraPluginServer};
use crate::kubelet::proto::registration as reg;
use crate::kubelet::proto::registration::registration_server::{Registration, RegistrationServer};
use crate::kubelet::{devices, uds, KubeletDirs, NodeFiles};

/// The service name the kubelet must use, as the Go library advertises it.
pub const SUPPORTED_VERSION: &str = "v1.DRAPlugin";

/// Where a claim comes from: the API server in production.
#[tonic::async_trait]
pub trait ClaimSource: Send + Sync {
    async fn get(&self, namespace: &str, name: &str) -> Result<ResourceClaim, String>;
    /// Records the GPUs granted to the pods reserving the claim (best effort).
    async fn report_grant(&self, _claim: &ResourceClaim, _uuids: &[String]) {}
}

/// Claims read from the API server (in the version it serves); grants written as pod annotations.
pub struct ApiClaims(pub fakegpu_operator_core::resource_api::DraApi);

#[tonic::async_trait]
impl ClaimSource for ApiClaims {
    async fn get(&self, namespace: &str, name: &str) -> Result<ResourceClaim, String> {
        self.0.get::<ResourceClaim>(Some(namespace), name).await.map_err(|e| format!("reading claim {namespace}/{name}: {e}"))
    }

    async fn report_grant(&self, claim: &ResourceClaim, uuids: &[String]) {
        let ns = claim.metadata.namespace.clone().unwrap_or_default();
        for consumer in claim.status.iter().flat_map(|s| s.reserved_for.iter().flatten()) {
            if consumer.resource == "pods" {
                if let Err(e) = crate::kubelet::grant::annotate_pod(self.0.client(), &ns, &consumer.name, uuids).await {
                    tracing::warn!(pod = %consumer.name, "recording the grant: {e}");
                }
            }
        }
    }
}

/// The plugin's paths.
#[derive(Debug, Clone)]
pub struct Paths {
    pub registration_socket: PathBuf,
    pub plugin_socket: PathBuf,
    pub cdi_root: PathBuf,
    pub checkpoint: PathBuf,
}

impl Paths {
    pub fn new(dirs: &KubeletDirs, cdi_root: &Path) -> Paths {
        Paths::for_driver(dirs, cdi_root, DRIVER)
    }

    /// The paths of the kubelet plugin of `driver`.
    pub fn for_driver(dirs: &KubeletDirs, cdi_root: &Path, driver: &str) -> Paths {
        let plugin_dir = dirs.plugins.join(driver);
        Paths {
            registration_socket: dirs.plugins_registry.join(format!("{driver}-reg.sock")),
            plugin_socket: plugin_dir.join("dra.sock"),
            cdi_root: cdi_root.to_path_buf(),
            checkpoint: plugin_dir.join("checkpoint.json"),
        }
    }
}

/// `pluginregistration.Registration`.
pub struct RegistrationService {
    /// The DRA driver name the plugin registers as.
    pub driver: String,
    pub endpoint: String,
}

#[tonic::async_trait]
impl Registration for RegistrationService {
    async fn get_info(&self, _: Request<reg::InfoRequest>) -> Result<Response<reg::PluginInfo>, Status> {
        Ok(Response::new(reg::PluginInfo {
            r#type: "DRAPlugin".into(),
            name: self.driver.clone(),
            endpoint: self.endpoint.clone(),
            supported_versions: vec![SUPPORTED_VERSION.into()],
        }))
    }

    async fn notify_registration_status(
        &self,
        request: Request<reg::RegistrationStatus>,
    ) -> Result<Response<reg::RegistrationStatusResponse>, Status> {
        let s = request.into_inner();
        if s.plugin_registered {
            tracing::info!("registered with the kubelet");
        } else {
            tracing::error!(error = %s.error, "the kubelet refused the registration");
        }
        Ok(Response::new(reg::RegistrationStatusResponse {}))
    }
}

/// `v1.DRAPlugin`.
pub struct DraService {
    node: Arc<SimulatedNode>,
    files: HostFiles,
    cdi_root: PathBuf,
    checkpoint: Mutex<Store>,
    claims: Arc<dyn ClaimSource>,
}

impl DraService {
    pub fn new(node: Arc<SimulatedNode>, files: HostFiles, paths: &Paths, claims: Arc<dyn ClaimSource>) -> std::io::Result<DraService> {
        Ok(DraService { node, files, cdi_root: paths.cdi_root.clone(), checkpoint: Mutex::new(Store::open(&paths.checkpoint)?), claims })
    }

    fn reply(record: &ClaimRecord) -> pb::NodePrepareResourceResponse {
        pb::NodePrepareResourceResponse {
            devices: record
                .devices
                .iter()
                .map(|d| pb::Device {
                    request_names: d.request_names.clone(),
                    pool_name: d.pool_name.clone(),
                    device_name: d.device_name.clone(),
                    cdi_device_ids: d.cdi_device_ids.clone(),
                    share_id: d.share_id.clone(),
                })
                .collect(),
            error: String::new(),
        }
    }

    async fn prepare_claim(&self, claim: &pb::Claim) -> Result<pb::NodePrepareResourceResponse, String> {
        if claim.uid.is_empty() || claim.name.is_empty() || claim.namespace.is_empty() {
            return Err(format!("malformed claim reference (namespace {:?}, name {:?}, uid {:?})", claim.namespace, claim.name, claim.uid));
        }
        if let Some(record) = self.checkpoint.lock().await.data.claims.get(&claim.uid).cloned() {
            let path = cdi::spec_path(&self.cdi_root, &claim.uid);
            if path.exists() {
                return Ok(Self::reply(&record));
            }
        }
        let object = self.claims.get(&claim.namespace, &claim.name).await?;
        // MIG devices exist as the live state's layout says now (the slices were published from it).
        let state_path = NodeFiles { dir: self.files.node_dir.clone() }.state();
        let state = devices::read_state(&state_path, &self.node.spec).map_err(|e| format!("reading {}: {e}", state_path.display()))?;
        let devices = prepare::prepare(&object, &claim.uid, &self.node, &state).map_err(|e| e.to_string())?;
        let spec = cdi::spec(&claim.uid, &devices, &self.files);
        cdi::write(&cdi::spec_path(&self.cdi_root, &claim.uid), &spec).map_err(|e| format!("writing the CDI spec: {e}"))?;
        let record = ClaimRecord {
            namespace: claim.namespace.clone(),
            name: claim.name.clone(),
            devices: devices
                .iter()
                .map(|d| DeviceRecord {
                    request_names: vec![d.request.clone()],
                    pool_name: d.pool.clone(),
                    device_name: d.device.clone(),
                    cdi_device_ids: cdi::device_ids(&claim.uid, &d.device),
                    share_id: d.share_id.clone(),
                    uuid: d.uuid.clone(),
                })
                .collect(),
        };
        {
            let mut store = self.checkpoint.lock().await;
            store.data.claims.insert(claim.uid.clone(), record.clone());
            store.save().map_err(|e| format!("writing the checkpoint: {e}"))?;
        }
        let uuids: Vec<String> = devices.iter().map(|d| d.uuid.clone()).collect();
        tracing::info!(claim = %format!("{}/{}", claim.namespace, claim.name), gpus = %uuids.join(","), "prepared");
        self.claims.report_grant(&object, &uuids).await;
        Ok(Self::reply(&record))
    }

    async fn unprepare_claim(&self, claim: &pb::Claim) -> Result<(), String> {
        if claim.uid.is_empty() {
            return Err("malformed claim reference: empty uid".into());
        }
        cdi::remove(&cdi::spec_path(&self.cdi_root, &claim.uid)).map_err(|e| format!("removing the CDI spec: {e}"))?;
        let mut store = self.checkpoint.lock().await;
        if store.data.claims.remove(&claim.uid).is_some() {
            store.save().map_err(|e| format!("writing the checkpoint: {e}"))?;
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl ClaimHandler for DraService {
    async fn prepare_one(&self, claim: &pb::Claim) -> Result<pb::NodePrepareResourceResponse, String> {
        self.prepare_claim(claim).await
    }

    async fn unprepare_one(&self, claim: &pb::Claim) -> Result<(), String> {
        self.unprepare_claim(claim).await
    }
}

/// One claim's preparation and its undoing: what a DRA driver decides. [`ClaimServer`] answers
/// the kubelet's batched calls with it, so every driver reports a failed claim in that claim's
/// entry and goes on with the rest.
#[tonic::async_trait]
pub trait ClaimHandler: Send + Sync + 'static {
    async fn prepare_one(&self, claim: &pb::Claim) -> Result<pb::NodePrepareResourceResponse, String>;
    async fn unprepare_one(&self, claim: &pb::Claim) -> Result<(), String>;
}

/// The kubelet's DRA service over a [`ClaimHandler`].
pub struct ClaimServer<H>(pub H);

#[tonic::async_trait]
impl<H: ClaimHandler> DraPlugin for ClaimServer<H> {
    async fn node_prepare_resources(
        &self,
        request: Request<pb::NodePrepareResourcesRequest>,
    ) -> Result<Response<pb::NodePrepareResourcesResponse>, Status> {
        let mut claims = HashMap::new();
        for claim in request.into_inner().claims {
            let entry = self.0.prepare_one(&claim).await.unwrap_or_else(|error| {
                tracing::warn!(claim = %claim.uid, "prepare failed: {error}");
                pb::NodePrepareResourceResponse { devices: vec![], error }
            });
            claims.insert(claim.uid.clone(), entry);
        }
        Ok(Response::new(pb::NodePrepareResourcesResponse { claims }))
    }

    async fn node_unprepare_resources(
        &self,
        request: Request<pb::NodeUnprepareResourcesRequest>,
    ) -> Result<Response<pb::NodeUnprepareResourcesResponse>, Status> {
        let mut claims = HashMap::new();
        for claim in request.into_inner().claims {
            let error = self.0.unprepare_one(&claim).await.err().unwrap_or_default();
            claims.insert(claim.uid.clone(), pb::NodeUnprepareResourceResponse { error });
        }
        Ok(Response::new(pb::NodeUnprepareResourcesResponse { claims }))
    }
}

/// Serves both sockets until `shutdown` resolves.
pub async fn serve(
    paths: &Paths,
    service: DraService,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    serve_driver(paths, DRIVER, service, shutdown).await
}

/// Serves the registration socket of `driver` and `service` on the plugin socket until
/// `shutdown` resolves.
pub async fn serve_driver<H: ClaimHandler>(
    paths: &Paths,
    driver: &str,
    handler: H,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let reg_incoming = uds::bind(&paths.registration_socket).map_err(|e| format!("{}: {e}", paths.registration_socket.display()))?;
    let dra_incoming = uds::bind(&paths.plugin_socket).map_err(|e| format!("{}: {e}", paths.plugin_socket.display()))?;
    let (tx, rx) = tokio::sync::watch::channel(false);
    let mut rx2 = rx.clone();
    let mut rx1 = rx;
    let dra = tokio::spawn(
        tonic::transport::Server::builder().add_service(DraPluginServer::new(ClaimServer(handler))).serve_with_incoming_shutdown(
            dra_incoming,
            async move {
                let _ = rx1.changed().await;
            },
        ),
    );
    let registration = RegistrationService { driver: driver.to_string(), endpoint: paths.plugin_socket.display().to_string() };
    let reg =
        tokio::spawn(tonic::transport::Server::builder().add_service(RegistrationServer::new(registration)).serve_with_incoming_shutdown(
            reg_incoming,
            async move {
                let _ = rx2.changed().await;
            },
        ));
    shutdown.await;
    let _ = tx.send(true);
    let _ = dra.await;
    let _ = reg.await;
    let _ = std::fs::remove_file(&paths.registration_socket);
    let _ = std::fs::remove_file(&paths.plugin_socket);
    Ok(())
}
