//! The device plugin edge: serves `v1beta1.DevicePlugin` for `nvidia.com/gpu` (and, under
//! NVIDIA's MIG strategies, the MIG resources: [`run_all`]) on sockets in the device-plugins
//! directory, registers with the kubelet, re-registers whenever the kubelet's socket is
//! recreated (a kubelet restart), and streams health and MIG layout changes read from the live
//! state file. Decisions are in [`super::allocation`] and [`super::pod_view`]; each
//! Allocate is handed to the [`super::granter`] (when configured), which finds the pod through
//! the kubelet's PodResources API and writes its grant annotation.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use fakegpu_model::SimulatedNode;
use futures::{Stream, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::WatchStream;
use tonic::{Request, Response, Status};

use super::allocation::{self, Kind, MigStrategy, Serving};
use super::granter::{Allocation, GrantConfig, Granter};
use super::health::Live;
use super::pod_view::{container_edits, HostFiles};
use super::proto::deviceplugin as pb;
use super::proto::deviceplugin::device_plugin_server::{DevicePlugin, DevicePluginServer};
use super::proto::deviceplugin::registration_client::RegistrationClient;
use super::uds;

pub const RESOURCE_NAME: &str = "nvidia.com/gpu";
pub const KUBELET_SOCKET: &str = "kubelet.sock";
pub const PLUGIN_SOCKET: &str = "fake-nvidia-gpu.sock";

/// What the device plugin serves.
#[derive(Debug, Clone)]
pub struct Config {
    pub device_plugins_dir: PathBuf,
    pub resource_name: String,
    pub socket_name: String,
    pub files: HostFiles,
    /// The live state file health is read from.
    pub state_path: PathBuf,
    pub health_interval: Duration,
    /// Grant annotations through PodResources; `None`: not reported (no API server).
    pub grants: Option<GrantConfig>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("device plugin socket {path}: {source}")]
    Bind { path: String, source: std::io::Error },
    #[error("serving the device plugin: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// The gRPC service.
pub struct Service {
    node: Arc<SimulatedNode>,
    health: watch::Receiver<Live>,
    files: HostFiles,
    allocations: Option<mpsc::Sender<Allocation>>,
    serving: Serving,
}

impl Service {
    pub fn new(node: Arc<SimulatedNode>, health: watch::Receiver<Live>, files: HostFiles) -> Service {
        Service { node, health, files, allocations: None, serving: Serving::default() }
    }

    /// Serves `serving`'s devices instead of every GPU.
    pub fn with_serving(mut self, serving: Serving) -> Service {
        self.serving = serving;
        self
    }

    /// Hands every successful Allocate's device ids to `tx` (the grant reporter).
    pub fn with_allocations(mut self, tx: mpsc::Sender<Allocation>) -> Service {
        self.allocations = Some(tx);
        self
    }
}

type DeviceStream = Pin<Box<dyn Stream<Item = Result<pb::ListAndWatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl DevicePlugin for Service {
    async fn get_device_plugin_options(&self, _: Request<pb::Empty>) -> Result<Response<pb::DevicePluginOptions>, Status> {
        Ok(Response::new(pb::DevicePluginOptions { pre_start_required: false, get_preferred_allocation_available: true }))
    }

    type ListAndWatchStream = DeviceStream;

    async fn list_and_watch(&self, _: Request<pb::Empty>) -> Result<Response<DeviceStream>, Status> {
        let (node, serving) = (self.node.clone(), self.serving.clone());
        let stream = WatchStream::new(self.health.clone()).map(move |live| {
            Ok(pb::ListAndWatchResponse { devices: allocation::devices(&node, &serving.devices(&node, &live), &live.health) })
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_preferred_allocation(
        &self,
        request: Request<pb::PreferredAllocationRequest>,
    ) -> Result<Response<pb::PreferredAllocationResponse>, Status> {
        let offered = self.serving.devices(&self.node, &self.health.borrow());
        let container_responses = request
            .into_inner()
            .container_requests
            .iter()
            .map(|r| pb::ContainerPreferredAllocationResponse {
                device_i_ds: allocation::preferred_of(
                    &self.node,
                    &offered,
                    &r.available_device_i_ds,
                    &r.must_include_device_i_ds,
                    r.allocation_size.max(0) as usize,
                ),
            })
            .collect();
        Ok(Response::new(pb::PreferredAllocationResponse { container_responses }))
    }

    async fn allocate(&self, request: Request<pb::AllocateRequest>) -> Result<Response<pb::AllocateResponse>, Status> {
        let mut container_responses = Vec::new();
        let mut allocated: Allocation = Vec::new();
        let offered = self.serving.devices(&self.node, &self.health.borrow());
        for req in request.into_inner().container_requests {
            let mut uuids = Vec::new();
            for id in &req.devices_ids {
                let device = allocation::find(&offered, id).ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "unknown device {id} (not a device of this resource on node {})",
                        self.node.spec.node_name
                    ))
                })?;
                // A MIG UUID makes the container runtime expose only that MIG device.
                uuids.push(device.uuid().to_string());
            }
            let edits = container_edits(&self.files, &uuids);
            tracing::info!(gpus = %uuids.join(","), "allocate");
            allocated.push(req.devices_ids.clone());
            container_responses.push(pb::ContainerAllocateResponse {
                envs: edits.env.into_iter().collect(),
                mounts: edits
                    .mounts
                    .into_iter()
                    .map(|m| pb::Mount {
                        container_path: m.container_path,
                        host_path: m.host_path.display().to_string(),
                        read_only: m.read_only,
                    })
                    .collect(),
                ..Default::default()
            });
        }
        if let Some(tx) = &self.allocations {
            // Never wait here: the kubelet records the allocation only after we return. A full
            // queue drops the hint; the reporter's resync still finds the pod.
            if tx.try_send(allocated).is_err() {
                tracing::warn!("grant reporter busy; the allocation waits for its resync");
            }
        }
        Ok(Response::new(pb::AllocateResponse { container_responses }))
    }

    async fn pre_start_container(
        &self,
        _: Request<pb::PreStartContainerRequest>,
    ) -> Result<Response<pb::PreStartContainerResponse>, Status> {
        Ok(Response::new(pb::PreStartContainerResponse {}))
    }
}

/// Polls the state file of the node `spec` and publishes GPU health and MIG layouts whenever
/// they change; a corrupt file keeps the last good state (one warning per bad spell).
pub fn spawn_health_watch(state_path: PathBuf, spec: fakegpu_model::NodeSpec, interval: Duration) -> watch::Receiver<Live> {
    let mut follower = fakegpu_model::state_file::Follower::new(state_path, spec);
    let (tx, rx) = watch::channel(super::health::poll_live(&mut follower));
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(interval).await;
            let live = super::health::poll_live(&mut follower);
            tx.send_if_modified(|cur| {
                if *cur != live {
                    let h = &live.health;
                    tracing::info!(unhealthy = ?h.iter().enumerate().filter(|(_, ok)| !**ok).map(|(i, _)| i).collect::<Vec<_>>(), "GPU health or MIG layout changed");
                    *cur = live;
                    true
                } else {
                    false
                }
            });
            if tx.is_closed() {
                return;
            }
        }
    });
    rx
}

/// Registers `socket_name` for `resource_name` with the kubelet at `kubelet_socket`.
pub async fn register(kubelet_socket: &std::path::Path, socket_name: &str, resource_name: &str) -> Result<(), String> {
    let channel = uds::connect(kubelet_socket).await.map_err(|e| format!("dialing {}: {e}", kubelet_socket.display()))?;
    RegistrationClient::new(channel)
        .register(pb::RegisterRequest {
            version: "v1beta1".into(),
            endpoint: socket_name.into(),
            resource_name: resource_name.into(),
            options: Some(pb::DevicePluginOptions { pre_start_required: false, get_preferred_allocation_available: true }),
        })
        .await
        .map_err(|e| format!("Register: {e}"))?;
    Ok(())
}

/// The endpoints `strategy` calls for now: (what it serves, resource name, socket name).
/// `config`'s resource and socket are `nvidia.com/gpu`'s; a MIG profile gets
/// `nvidia.com/mig-<profile>` on `fake-nvidia-mig-<profile>.sock`.
pub fn endpoints(config: &Config, node: &SimulatedNode, live: &Live, strategy: MigStrategy) -> Vec<(Serving, String, String)> {
    let kinds = match allocation::resources(node, live, strategy) {
        Ok(r) => r.into_keys().collect(),
        Err(e) => {
            // NVIDIA's plugin refuses to start; advertising no devices keeps the node honest.
            tracing::error!("{e}: nvidia.com/gpu advertises no devices until the MIG layout is fixed");
            vec![Kind::Gpu]
        }
    };
    kinds
        .into_iter()
        .map(|kind| {
            let (resource, socket) = match &kind {
                Kind::Gpu => (config.resource_name.clone(), config.socket_name.clone()),
                Kind::Mig(p) => (allocation::mig_resource_name(p), allocation::mig_socket_name(p)),
            };
            (Serving { strategy, kind }, resource, socket)
        })
        .collect()
}

/// Serves every resource `strategy` calls for (one endpoint each, see [`endpoints`]) until
/// `shutdown` resolves. When the MIG layout changes the set of resources, every endpoint is
/// stopped and the new set registered, as NVIDIA's plugin restarts on a MIG reconfiguration.
pub async fn run_all(
    config: Config,
    strategy: MigStrategy,
    node: Arc<SimulatedNode>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Error> {
    let mut live = spawn_health_watch(config.state_path.clone(), node.spec.clone(), config.health_interval);
    let names = |eps: &[(Serving, String, String)]| eps.iter().map(|(_, r, s)| (r.clone(), s.clone())).collect::<Vec<_>>();
    tokio::pin!(shutdown);
    loop {
        let eps = endpoints(&config, &node, &live.borrow_and_update(), strategy);
        let current = names(&eps);
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = tokio::task::JoinSet::new();
        for (serving, resource, socket) in eps {
            // Every resource reports its grants, MIG devices by their `MIG-` UUIDs
            // (`allocation::grant_id`), which the status-updater records as MIG holders.
            let mut cfg = config.clone();
            cfg.resource_name = resource;
            cfg.socket_name = socket;
            let mut stop = stop_rx.clone();
            tasks.spawn(run_serving(cfg, serving, node.clone(), async move {
                let _ = stop.wait_for(|s| *s).await;
            }));
        }
        let done = loop {
            tokio::select! {
                _ = &mut shutdown => break true,
                changed = live.changed() => {
                    let now = endpoints(&config, &node, &live.borrow_and_update(), strategy);
                    if changed.is_err() || names(&now) != current {
                        break false;
                    }
                }
                Some(ended) = tasks.join_next() => {
                    if let Ok(Err(e)) = ended {
                        let _ = stop_tx.send(true);
                        return Err(e);
                    }
                }
            }
        };
        let _ = stop_tx.send(true);
        while let Some(ended) = tasks.join_next().await {
            if let Ok(Err(e)) = ended {
                return Err(e);
            }
        }
        if done {
            return Ok(());
        }
        tracing::info!("the MIG layout changed the resources: re-registering them");
    }
}

/// Serves and registers every GPU as `config.resource_name` until `shutdown` resolves;
/// re-serves and re-registers each time the kubelet socket is recreated or the plugin's own
/// socket disappears.
pub async fn run(config: Config, node: Arc<SimulatedNode>, shutdown: impl std::future::Future<Output = ()>) -> Result<(), Error> {
    run_serving(config, Serving::default(), node, shutdown).await
}

/// [`run`] for the devices `serving` names.
pub async fn run_serving(
    config: Config,
    serving: Serving,
    node: Arc<SimulatedNode>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Error> {
    let health = spawn_health_watch(config.state_path.clone(), node.spec.clone(), config.health_interval);
    let (allocations, granter) = match config.grants.clone() {
        Some(g) => {
            let (tx, rx) = mpsc::channel(64);
            let granter = Granter::new(g, node.clone(), &config.resource_name);
            (Some(tx), Some(tokio::spawn(granter.run(rx))))
        }
        None => (None, None),
    };
    // The reporter outlives any one server (kubelet restarts) and stops with `run`.
    let _granter = granter.map(AbortOnDrop);
    let kubelet = config.device_plugins_dir.join(KUBELET_SOCKET);
    let socket = config.device_plugins_dir.join(&config.socket_name);
    tokio::pin!(shutdown);
    loop {
        // Wait for a kubelet to register with.
        let kubelet_id = loop {
            if let Some(id) = uds::file_id(&kubelet) {
                break id;
            }
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        };
        let incoming = uds::bind(&socket).map_err(|source| Error::Bind { path: socket.display().to_string(), source })?;
        let socket_id = uds::file_id(&socket);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let mut service = Service::new(node.clone(), health.clone(), config.files.clone()).with_serving(serving.clone());
        if let Some(tx) = &allocations {
            service = service.with_allocations(tx.clone());
        }
        let mut server =
            tokio::spawn(tonic::transport::Server::builder().add_service(DevicePluginServer::new(service)).serve_with_incoming_shutdown(
                incoming,
                async {
                    let _ = stop_rx.await;
                },
            ));
        let mut retry_register = match register(&kubelet, &config.socket_name, &config.resource_name).await {
            Ok(()) => {
                tracing::info!(resource = %config.resource_name, socket = %socket.display(), "registered with the kubelet");
                false
            }
            Err(e) => {
                tracing::warn!("registration failed, retrying: {e}");
                true
            }
        };
        // Watch for a kubelet restart (its socket recreated) or our socket removed.
        loop {
            tokio::select! {
                _ = &mut shutdown => {
                    let _ = stop_tx.send(());
                    // An open ListAndWatch stream would hold a graceful stop forever (a MIG
                    // layout change stops endpoints while the kubelet still watches them).
                    if tokio::time::timeout(Duration::from_millis(200), &mut server).await.is_err() {
                        server.abort();
                    }
                    let _ = std::fs::remove_file(&socket);
                    return Ok(());
                }
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
            let now = uds::file_id(&kubelet);
            if now.is_some_and(|id| id != kubelet_id) || uds::file_id(&socket) != socket_id || server.is_finished() {
                tracing::info!("kubelet socket recreated or plugin socket gone: re-registering");
                break;
            }
            if retry_register {
                retry_register = register(&kubelet, &config.socket_name, &config.resource_name).await.is_err();
            }
        }
        // Stop serving the old socket without waiting for open ListAndWatch streams: the
        // kubelet that held them is gone.
        let _ = stop_tx.send(());
        if tokio::time::timeout(Duration::from_millis(200), &mut server).await.is_err() {
            server.abort();
        }
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
