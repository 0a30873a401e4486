//! `fakegpu cluster`: a real Kubernetes control plane (etcd, kube-apiserver, kube-scheduler,
//! kube-controller-manager and kwok, all built from Go modules by `tests/cluster/build.sh`)
//! run as plain processes on 127.0.0.1, with KWOK nodes standing in for GPU hosts.
//!
//! The `fakegpu` CLI embeds [`ClusterCommand`] as a subcommand and calls [`run`]; the
//! `fakegpu-cluster` binary in this crate does the same for scripts that run without the CLI.

pub mod binaries;
mod commands;
pub mod components;
pub mod error;
pub mod health;
pub mod kubeconfig;
pub mod nodes;
pub mod operator;
pub mod paths;
pub mod pki;
pub mod process;
pub mod realnode;
pub mod state;

pub use error::ClusterError;

/// Subcommands of `fakegpu cluster`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ClusterCommand {
    /// Start the control plane and create KWOK nodes; returns once everything is Ready.
    Up(Box<UpArgs>),
    /// Stop the processes `up` started and remove the run directory.
    Down,
    /// Print shell exports (KUBECONFIG, PATH with the built kubectl and helm).
    Env,
    /// Show the components, their pids and whether they are alive, and the node count.
    Status,
    /// Restart the real node's kubelet with the same command line (e.g. to check that device
    /// plugins register again); waits until the node is Ready and puts its sysctls back.
    RestartKubelet,
}

/// Options of `fakegpu cluster up`.
#[derive(Debug, Clone, clap::Args)]
pub struct UpArgs {
    /// Number of KWOK nodes to create.
    #[arg(long, default_value_t = 2)]
    pub nodes: u32,
    /// Value of the `run.ai/simulated-gpu-node-pool` label on the nodes.
    #[arg(long, default_value = "default")]
    pub pool: String,
    /// GPU profile the operator should simulate on these nodes (recorded, used by the operator).
    #[arg(long)]
    pub profile: Option<String>,
    /// GPUs per node the operator should simulate (recorded, used by the operator).
    #[arg(long)]
    pub gpus: Option<u32>,
    /// Directory with the control-plane binaries; default: build or reuse them via
    /// tests/cluster/build.sh, or the newest matching build in the cache.
    #[arg(long, env = "FAKEGPU_K8S_BIN_DIR")]
    pub bin_dir: Option<std::path::PathBuf>,
    /// Also run one real node on this host (kubelet + containerd; needs root, cgroups, and the
    /// images from tests/real-node/images/build.sh). See docs/cluster.md.
    #[arg(long)]
    pub real_node: bool,
    /// Directory with kubelet, containerd, ctr and containerd-shim-runc-v2; default: build or
    /// reuse them via tests/real-node/build.sh.
    #[arg(long, env = "FAKEGPU_NODE_BIN_DIR")]
    pub node_bin_dir: Option<std::path::PathBuf>,
    /// Do not start the operator's components (status-updater, kwok-gpu-device-plugin,
    /// status-exporter, topology-server) as local processes.
    #[arg(long)]
    pub no_operator: bool,
    /// Also run the compute-domain controller and the KWOK IMEX-channel publisher, after
    /// installing the ComputeDomain CRD (docs/compute-domains.md).
    #[arg(long)]
    pub compute_domains: bool,
    /// Write the API server's audit log (metadata of every request, JSON lines) to this file:
    /// what each client (its User-Agent) asked for, e.g. for scripts/bench-operator.sh.
    #[arg(long)]
    pub audit_log: Option<std::path::PathBuf>,
    /// Passed to kube-apiserver as `--runtime-config`, e.g.
    /// `resource.k8s.io/v1=false,resource.k8s.io/v1beta2=true` to serve DRA only in an older
    /// version (docs/cluster.md).
    #[arg(long)]
    pub runtime_config: Option<String>,
    /// Run this kube-scheduler binary instead of the one in the bin dir (e.g. an older release
    /// from tests/cluster/build-legacy.sh, which allocates DRA claims through v1beta1).
    #[arg(long)]
    pub scheduler_bin: Option<std::path::PathBuf>,
    /// Extra kube-scheduler flag (repeatable), e.g. `--scheduler-arg=--feature-gates=DynamicResourceAllocation=true`.
    #[arg(long = "scheduler-arg", allow_hyphen_values = true)]
    pub scheduler_args: Vec<String>,
}

/// Runs one `fakegpu cluster` subcommand and returns the process exit code.
pub fn run(cmd: ClusterCommand) -> anyhow::Result<i32> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(commands::run(cmd))
}
