//! Command-line edges of the three compute-domain components: parse, connect, run until
//! SIGTERM/SIGINT.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use super::{channels, controller, kwok, plugin, DRIVER};
use crate::kubelet::cli::{runtime, terminated, NodeArgs};
use crate::kubelet::dra::liveness;
use crate::kubelet::dra::plugin::ApiClaims;
use crate::kubelet::dra::publish;

/// Kubeconfig file [default: $KUBECONFIG, ~/.kube/config, else in-cluster].
#[derive(clap::Args, Debug, Clone)]
pub struct ApiArgs {
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
}

impl ApiArgs {
    async fn client(&self) -> anyhow::Result<kube::Client> {
        Ok(fakegpu_operator_core::common::api_client(self.kubeconfig.as_deref()).await?)
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct ControllerArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// Seconds between full passes when nothing changes.
    #[arg(long, default_value_t = 30)]
    pub resync_seconds: u64,
    /// Milliseconds to gather further changes before a pass.
    #[arg(long, default_value_t = 100)]
    pub debounce_ms: u64,
    /// Run one pass, print the report and exit.
    #[arg(long)]
    pub once: bool,
    /// Apply the chart's CRDs first (where no Helm installs them, e.g. `fakegpu cluster up`).
    #[arg(long)]
    pub install_crds: bool,
}

#[derive(clap::Args, Debug, Clone)]
pub struct NodePluginArgs {
    #[command(flatten)]
    pub node: NodeArgs,
    /// Where CDI specs are written.
    #[arg(long, env = "CDI_ROOT", default_value = "/var/run/cdi")]
    pub cdi_root: PathBuf,
    /// IMEX channels this node offers.
    #[arg(long, env = "IMEX_CHANNELS", default_value_t = channels::DEFAULT_CHANNELS)]
    pub channels: u32,
    /// Seconds between ResourceSlice resyncs (no change: no write).
    #[arg(long, default_value_t = 60)]
    pub resync_seconds: u64,
    /// TCP port of the gRPC health service (grpc.health.v1; negative: off).
    #[arg(long, env = "HEALTHCHECK_PORT", default_value_t = -1, allow_negative_numbers = true)]
    pub healthcheck_port: i32,
}

#[derive(clap::Args, Debug, Clone)]
pub struct KwokPluginArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// Profile of KWOK nodes that carry no `fake-gpu-operator.run.ai/profile` label (none: skipped).
    #[arg(long)]
    pub default_profile: Option<String>,
    /// IMEX channels each KWOK node offers.
    #[arg(long, env = "IMEX_CHANNELS", default_value_t = channels::DEFAULT_CHANNELS)]
    pub channels: u32,
    #[arg(long, default_value_t = 60)]
    pub resync_seconds: u64,
    /// Sync once, print the report and exit.
    #[arg(long)]
    pub once: bool,
}

pub fn controller(args: ControllerArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        let client = args.api.client().await?;
        if args.install_crds {
            super::crds::install(&client).await.map_err(anyhow::Error::msg)?;
        }
        if args.once {
            let r = controller::pass(&fakegpu_operator_core::resource_api::DraApi::new(client.clone()).await?).await?;
            println!("domains={} writes={} ms={}", r.domains, r.writes, r.took.as_millis());
            return Ok(());
        }
        tokio::select! {
            r = controller::run(client, Duration::from_secs(args.resync_seconds.max(1)), Duration::from_millis(args.debounce_ms)) => r?,
            _ = terminated() => {}
        }
        Ok(())
    })
}

pub fn kwok_plugin(args: KwokPluginArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        let client = args.api.client().await?;
        if args.once {
            let dra = fakegpu_operator_core::resource_api::DraApi::new(client.clone()).await?;
            kwok::ensure_device_classes(&dra).await?;
            let r = kwok::sync_once(&dra, args.default_profile.as_deref(), args.channels).await?;
            println!("nodes={} writes={} ms={}", r.nodes, r.writes, r.took.as_millis());
            return Ok(());
        }
        tokio::select! {
            r = kwok::run(client, args.default_profile, args.channels, Duration::from_secs(args.resync_seconds.max(1))) => r?,
            _ = terminated() => {}
        }
        Ok(())
    })
}

pub fn node_plugin(args: NodePluginArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        let client = fakegpu_operator_core::common::api_client(None).await.context("connecting to the API server")?;
        let (nf, _) = args.node.files();
        let node = args.node.node(&nf).await?;
        let name = args.node.node_name.clone();
        let clique = fakegpu_model::fabric::clique_for_node(&node.spec.profile, node.spec.gpu_count, &name).map(|c| c.label());
        let dirs = args.node.dirs();
        let (paths, _) = plugin::paths(&dirs, &args.cdi_root);
        let dra = fakegpu_operator_core::resource_api::DraApi::new_or_v1(client.clone()).await;
        let service = plugin::ChannelService::new(&name, args.channels, &dirs, &args.cdi_root, Arc::new(ApiClaims(dra.clone())))?;
        if let Err(e) = kwok::ensure_device_classes(&dra).await {
            tracing::warn!("DeviceClasses: {e}");
        }
        let devices = channels::pool_devices(args.channels, clique.as_deref());
        let resync = Duration::from_secs(args.resync_seconds.max(1));
        let publisher = tokio::spawn(async move {
            loop {
                let published = async {
                    let node = kube::Api::<k8s_openapi::api::core::v1::Node>::all(client.clone()).get(&name).await?;
                    let existing = publish::list_driver_pools(&dra, DRIVER, Some(&name)).await?;
                    let wanted = vec![(name.clone(), devices.clone(), publish::node_owner(&node))];
                    let writes = publish::sync_driver_pools(&dra, DRIVER, wanted, &existing, "node").await?;
                    Ok::<_, kube::Error>(writes)
                };
                match published.await {
                    Ok(writes) => tracing::debug!(writes, "IMEX channel slices published"),
                    Err(e) => tracing::warn!("publishing IMEX channel slices: {e}"),
                }
                tokio::time::sleep(resync).await;
            }
        });
        let health = match u16::try_from(args.healthcheck_port) {
            Ok(port) => {
                let listener = tokio::net::TcpListener::bind(("0.0.0.0", port)).await.with_context(|| format!("health port {port}"))?;
                let paths = paths.clone();
                Some(tokio::spawn(async move {
                    if let Err(e) = liveness::serve_on(listener, paths, std::future::pending()).await {
                        tracing::error!("health server: {e}");
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
