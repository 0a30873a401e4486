//! `fake-gpu-operator`: one binary, one subcommand per component. Thin: parse the
//! command line, set up logging, hand over to the component's `run`.

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "fake-gpu-operator", version, about = "Simulated NVIDIA GPU nodes for Kubernetes")]
struct Cli {
    #[command(subcommand)]
    component: Component,
}

#[derive(Subcommand)]
enum Component {
    /// Print the version and the components this binary provides.
    Version,
    /// Kubelet device plugin for nvidia.com/gpu (device plugin API v1beta1).
    DevicePlugin(fake_gpu_operator::kubelet::cli::DevicePluginArgs),
    /// DRA kubelet plugin for driver gpu.nvidia.com: ResourceSlices, CDI specs.
    DraPlugin(fake_gpu_operator::kubelet::cli::DraPluginArgs),
    /// Publishes gpu.nvidia.com ResourceSlices for every KWOK node from one process.
    KwokDraPlugin(fake_gpu_operator::kubelet::cli::KwokDraPluginArgs),
    /// dcgm-exporter-compatible GPU metrics on :9400 for one node or every node of the pools.
    StatusExporter(fake_gpu_operator::exporter::component::Args),
    /// Per-node topology ConfigMaps, allocations, node labels and node files for pool nodes.
    StatusUpdater(fake_gpu_operator::status_updater::Args),
    /// Keeps KWOK nodes' nvidia.com/gpu (and other) capacity equal to their topology.
    KwokGpuDevicePlugin(fake_gpu_operator::kwok_device_plugin::Args),
    /// NVIDIA mig-manager (and Run:ai mig-faker) contract for KWOK nodes: nvidia.com/mig.config → layouts, state.
    MigManager(fake_gpu_operator::mig_manager::Args),
    /// NVIDIA mig-manager (and Run:ai mig-faker) contract on a real node: layouts applied to its live state.
    NodeMigManager(fake_gpu_operator::mig_manager_node::Args),
    /// Mock backend node agent: lays the fake NVML as a host driver root (DaemonSet nvml-mock-<pool>).
    NvmlMockAgent(fake_gpu_operator::nvml_mock_agent::Args),
    /// Read-only HTTP JSON API of the cluster and per-node topology.
    TopologyServer(fake_gpu_operator::topology_server::Args),
    /// ComputeDomain controller: claim templates, finalizers, status with nodes and cliques.
    ComputeDomainController(fake_gpu_operator::compute_domain::cli::ControllerArgs),
    /// DRA kubelet plugin for driver compute-domain.nvidia.com (IMEX channels).
    ComputeDomainDraPlugin(fake_gpu_operator::compute_domain::cli::NodePluginArgs),
    /// Publishes compute-domain.nvidia.com ResourceSlices for every KWOK GPU node.
    KwokComputeDomainDraPlugin(fake_gpu_operator::compute_domain::cli::KwokPluginArgs),
}

fn main() -> anyhow::Result<()> {
    limit_malloc_arenas();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if let Some(name) = matches.subcommand_name().filter(|n| *n != "version") {
        fake_gpu_operator::common::set_component(name);
    }
    match cli.component {
        Component::Version => {
            println!("fake-gpu-operator {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Component::DevicePlugin(args) => fake_gpu_operator::kubelet::cli::device_plugin(args),
        Component::DraPlugin(args) => fake_gpu_operator::kubelet::cli::dra_plugin(args),
        Component::KwokDraPlugin(args) => fake_gpu_operator::kubelet::cli::kwok_dra_plugin(args),
        Component::StatusExporter(args) => fake_gpu_operator::exporter::component::run_blocking(args),
        Component::StatusUpdater(args) => Ok(runtime()?.block_on(fake_gpu_operator::status_updater::run(args))?),
        Component::KwokGpuDevicePlugin(args) => Ok(runtime()?.block_on(fake_gpu_operator::kwok_device_plugin::run(args))?),
        Component::MigManager(args) => Ok(runtime()?.block_on(fake_gpu_operator::mig_manager::run(args))?),
        Component::NodeMigManager(args) => fake_gpu_operator::mig_manager_node::run(args),
        Component::NvmlMockAgent(args) => fake_gpu_operator::nvml_mock_agent::run(args),
        Component::TopologyServer(args) => Ok(runtime()?.block_on(fake_gpu_operator::topology_server::run(args))?),
        Component::ComputeDomainController(args) => fake_gpu_operator::compute_domain::cli::controller(args),
        Component::ComputeDomainDraPlugin(args) => fake_gpu_operator::compute_domain::cli::node_plugin(args),
        Component::KwokComputeDomainDraPlugin(args) => fake_gpu_operator::compute_domain::cli::kwok_plugin(args),
    }
}

/// glibc gives every thread that allocates its own arena (up to 8 per core), and memory freed in
/// one stays there: the exporter's blocking render threads and tokio's workers would each keep
/// the peak of what they once held. Two arenas serve these few threads without contention.
fn limit_malloc_arenas() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator parameter; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()
}
