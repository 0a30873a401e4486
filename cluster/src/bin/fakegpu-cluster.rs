//! `fakegpu-cluster up|down|env|status`: the cluster subcommands without the full `fakegpu` CLI,
//! for scripts/cluster-ci.sh.

use clap::Parser;

#[derive(Parser)]
#[command(name = "fakegpu-cluster", about = "Real Kubernetes control plane on loopback with KWOK nodes")]
struct Cli {
    #[command(subcommand)]
    cmd: fakegpu_cluster::ClusterCommand,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let code = fakegpu_cluster::run(Cli::parse().cmd)?;
    std::process::exit(code)
}
