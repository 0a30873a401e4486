//! Command-line edges of the three kubelet-side components: parse, load the node, run until
//! SIGTERM/SIGINT. Each builds its own tokio runtime.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use super::allocation::MigStrategy;
use super::dra::{attributes, plugin, publish};
use super::grant::ApiAnnotator;
use super::granter::GrantConfig;
use super::pod_view::HostFiles;
use super::{device_plugin, load_node, KubeletDirs, NodeFiles};

/// Options shared by the node-local plugins.
#[derive(clap::Args, Debug, Clone)]
pub struct NodeArgs {
    /// This node's name.
    #[arg(long, env = "NODE_NAME")]
    pub node_name: String,
    /// Directory of the per-node config/state written by the status-updater (`<dir>/<node>/config.json`).
    #[arg(long, env = "FAKEGPU_NODE_DIR", default_value = "/var/lib/fake-gpu-operator/nodes")]
    pub node_dir: PathBuf,
    /// Host path of the fake NVML to mount into GPU containers as libnvidia-ml.so.1.
    #[arg(long, env = "FAKEGPU_NVML_LIB")]
    pub nvml_lib: Option<PathBuf>,
    /// Host path of the fake CUDA driver to mount into GPU containers as libcuda.so.1.
    #[arg(long, env = "FAKEGPU_CUDA_LIB")]
    pub cuda_lib: Option<PathBuf>,
    /// Host path of nvidia-smi to mount into GPU containers.
    #[arg(long, env = "FAKEGPU_NVIDIA_SMI")]
    pub nvidia_smi: Option<PathBuf>,
    /// Kubelet directory holding device-plugins/, plugins_registry/ and plugins/.
    #[arg(long, env = "KUBELET_ROOT", default_value = "/var/lib/kubelet")]
    pub kubelet_root: PathBuf,
}

impl NodeArgs {
    pub(crate) fn dirs(&self) -> KubeletDirs {
        KubeletDirs {
            device_plugins: self.kubelet_root.join("device-plugins"),
            plugins_registry: self.kubelet_root.join("plugins_registry"),
            plugins: self.kubelet_root.join("plugins"),
        }
    }

    pub(crate) fn files(&self) -> (NodeFiles, HostFiles) {
        let nf = NodeFiles::new(&self.node_dir, &self.node_name);
        let hf = HostFiles {
            nvml_lib: self.nvml_lib.clone(),
            cuda_lib: self.cuda_lib.clone(),
            nvidia_smi: self.nvidia_smi.clone(),
            node_dir: nf.dir.clone(),
            node_name: self.node_name.clone(),
        };
        (nf, hf)
    }

    /// Waits until the status-updater has written this node's config, then loads it.
    pub(crate) async fn node(&self, files: &NodeFiles) -> anyhow::Result<fakegpu_model::SimulatedNode> {
        loop {
            if files.config().exists() {
                return load_node(files, &self.node_name).with_context(|| format!("loading {}", files.config().display()));
            }
            tracing::info!(config = %files.config().display(), "waiting for the node config");
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct DevicePluginArgs {
    #[command(flatten)]
    pub node: NodeArgs,
    #[arg(long, default_value = device_plugin::RESOURCE_NAME)]
    pub resource_name: String,
    /// NVIDIA's MIG strategy: none (GPUs whole), single (MIG devices as nvidia.com/gpu) or
    /// mixed (one nvidia.com/mig-<profile> per profile); the chart passes the topology's.
    #[arg(long, env = "MIG_STRATEGY", value_enum, default_value = "none")]
    pub mig_strategy: MigStrategy,
    /// The kubelet's PodResources socket, read to find which pod an Allocate was for
    /// [default: <kubelet-root>/pod-resources/kubelet.sock].
    #[arg(long, env = "POD_RESOURCES_SOCKET")]
    pub pod_resources_socket: Option<PathBuf>,
    /// Seconds between full grant reconciles (annotations missing or different are rewritten).
    #[arg(long, default_value_t = 30)]
    pub grant_resync_seconds: u64,
}

#[derive(clap::Args, Debug, Clone)]
pub struct DraPluginArgs {
    #[command(flatten)]
    pub node: NodeArgs,
    /// Where CDI specs are written (transient specs: /var/run/cdi).
    #[arg(long, env = "CDI_ROOT", default_value = "/var/run/cdi")]
    pub cdi_root: PathBuf,
    /// Seconds between ResourceSlice resyncs (a resync with no change writes nothing).
    #[arg(long, default_value_t = 60)]
    pub resync_seconds: u64,
    /// TCP port of the gRPC health service (grpc.health.v1; services "" and "liveness");
    /// negative: none (upstream's default; the chart sets 51515).
    #[arg(long, env = "HEALTHCHECK_PORT", default_value_t = -1, allow_negative_numbers = true)]
    pub healthcheck_port: i32,
}

#[derive(clap::Args, Debug, Clone)]
pub struct KwokDraPluginArgs {
    #[command(flatten)]
    pub topology: fakegpu_operator_core::common::TopologyArgs,
    /// Profile of KWOK nodes with neither a topology ConfigMap nor a
    /// `fake-gpu-operator.run.ai/profile` label (none: skipped).
    #[arg(long)]
    pub default_profile: Option<String>,
    #[arg(long, default_value_t = 60)]
    pub resync_seconds: u64,
    /// Sync once, print the report and exit.
    #[arg(long)]
    pub once: bool,
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

pub(crate) async fn terminated() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

pub fn device_plugin(args: DevicePluginArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        let (nf, hf) = args.node.files();
        let node = Arc::new(args.node.node(&nf).await?);
        let grants = match fakegpu_operator_core::common::api_client(None).await {
            Ok(client) => Some(GrantConfig {
                pod_resources_socket: args
                    .pod_resources_socket
                    .clone()
                    .unwrap_or_else(|| args.node.kubelet_root.join("pod-resources").join("kubelet.sock")),
                annotator: Arc::new(ApiAnnotator(client)),
                resync: Duration::from_secs(args.grant_resync_seconds.max(1)),
                wait: Duration::from_secs(30),
            }),
            Err(e) => {
                // Devices still work without the API server; only the status-updater falls
                // back to its own first-fit choice.
                tracing::warn!(error = %e, "no API server: grants are not annotated on pods");
                None
            }
        };
        let config = device_plugin::Config {
            device_plugins_dir: args.node.dirs().device_plugins,
            resource_name: args.resource_name.clone(),
            socket_name: device_plugin::PLUGIN_SOCKET.into(),
            files: hf,
            state_path: nf.state(),
            health_interval: Duration::from_millis(500),
            grants,
        };
        device_plugin::run_all(config, args.mig_strategy, node, terminated()).await?;
        Ok(())
    })
}

pub fn dra_plugin(args: DraPluginArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        let client = fakegpu_operator_core::common::api_client(None).await.context("connecting to the API server")?;
        let (nf, hf) = args.node.files();
        let node = Arc::new(args.node.node(&nf).await?);
        let paths = plugin::Paths::new(&args.node.dirs(), &args.cdi_root);
        let client = fakegpu_operator_core::resource_api::DraApi::new_or_v1(client).await;
        let service = plugin::DraService::new(node.clone(), hf, &paths, Arc::new(plugin::ApiClaims(client.clone())))?;
        if let Err(e) = publish::ensure_device_class(&client).await {
            tracing::warn!("DeviceClass: {e}");
        }
        let publisher = {
            let (client, node, name, state_path) = (client.clone(), node.clone(), args.node.node_name.clone(), nf.state());
            tokio::spawn(async move {
                // The state file is polled so that a MIG layout change reaches the slices within
                // a second; the API server is asked only on a change or at each resync.
                let resync = Duration::from_secs(args.resync_seconds);
                let mut published: Option<(Vec<k8s_openapi::api::resource::v1::Device>, tokio::time::Instant)> = None;
                // Validated against the node like the fake NVML's reads; a corrupt file keeps the
                // last good state (one warning per bad spell), so the slices do not flap.
                let mut follower = fakegpu_model::state_file::Follower::new(state_path, node.spec.clone());
                loop {
                    if let Some(kept) = follower.refresh() {
                        tracing::warn!("{kept}");
                    }
                    let wanted = attributes::pool_devices(&node, follower.state());
                    let due = published.as_ref().is_none_or(|(d, at)| *d != wanted || at.elapsed() >= resync);
                    if due {
                        match publish::publish_node(&client, &name, wanted.clone()).await {
                            Ok(writes) => {
                                tracing::info!(writes, devices = wanted.len(), "ResourceSlices published");
                                published = Some((wanted, tokio::time::Instant::now()));
                            }
                            Err(e) => {
                                tracing::warn!("publishing ResourceSlices: {e}");
                                tokio::time::sleep(Duration::from_secs(9)).await;
                            }
                        }
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            })
        };
        let health = match u16::try_from(args.healthcheck_port) {
            Ok(port) => {
                let addr = std::net::SocketAddr::from(([0, 0, 0, 0], port));
                let paths = paths.clone();
                Some(tokio::spawn(async move {
                    if let Err(e) = super::dra::liveness::serve(addr, paths, std::future::pending()).await {
                        tracing::error!("gRPC health: {e}");
                    }
                }))
            }
            Err(_) => None,
        };
        plugin::serve(&paths, service, terminated()).await.map_err(anyhow::Error::msg)?;
        publisher.abort();
        if let Some(h) = health {
            h.abort();
        }
        Ok(())
    })
}

pub fn kwok_dra_plugin(args: KwokDraPluginArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        let client = args.topology.client().await.context("connecting to the API server")?;
        let source = super::dra::kwok::Source { namespace: Some(args.topology.namespace()), default_profile: args.default_profile.clone() };
        if args.once {
            let dra = fakegpu_operator_core::resource_api::DraApi::new(client).await?;
            publish::ensure_device_class(&dra).await?;
            let r = super::dra::kwok::sync_once(&dra, &source).await?;
            println!("nodes={} writes={} ms={}", r.nodes, r.writes, r.took.as_millis());
            return Ok(());
        }
        super::dra::kwok::run(client, source, Duration::from_secs(args.resync_seconds)).await?;
        Ok(())
    })
}
