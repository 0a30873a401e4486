//! `fake-gpu-operator`: one binary, one subcommand per component. Thin: parse the
//! command line, set up logging, hand over to the component's `run`.

use clap::{Parser, Subcommand};

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
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().component {
        Component::Version => {
            println!("fake-gpu-operator {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
    }
}
