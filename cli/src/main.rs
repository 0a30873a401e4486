//! `fakegpu`: the command line of fake-gpu-operator. Thin: each subcommand lives in its
//! own module and calls into the model crate.

mod driver_root;
mod exec;
mod library;
mod show;
mod state_cmd;
mod sysfs_cmd;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "fakegpu", version, about = "Simulated NVIDIA GPUs: profiles, devices, and programs run over the fake NVML")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the built-in GPU profiles.
    Profiles(show::ProfilesArgs),
    /// Show the simulated devices of a node, with their identities.
    Show(show::ShowArgs),
    /// Run a program with the fake NVML in place of libnvidia-ml.so.1.
    Exec(exec::ExecArgs),
    /// Print a directory holding the fake NVML as libnvidia-ml.so.1 (for LD_LIBRARY_PATH).
    LibDir,
    /// Write the node's GPUs' sysfs files (PCI devices, DMI product name) into a directory.
    Sysfs(sysfs_cmd::SysfsArgs),
    /// Read and change the live node state (utilization, memory, processes, MIG, faults).
    #[command(subcommand)]
    State(state_cmd::StateCmd),
    /// Inject or clear faults (XID, ECC errors, lost GPU, clock throttling).
    #[command(subcommand)]
    Fault(state_cmd::FaultCmd),
    /// Lay or remove a mock-backend driver root (docs/mock-backend.md).
    #[command(subcommand)]
    DriverRoot(driver_root::DriverRootCmd),
    /// A local Kubernetes control plane with simulated GPU nodes (no Docker, no VM).
    Cluster {
        #[command(subcommand)]
        cmd: fakegpu_cluster::ClusterCommand,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Profiles(args) => show::profiles(&args),
        Command::Show(args) => show::show(&args),
        Command::Exec(args) => exec::exec(&args),
        Command::Sysfs(args) => sysfs_cmd::sysfs(&args),
        Command::State(cmd) => state_cmd::run_state(&cmd),
        Command::Fault(cmd) => state_cmd::run_fault(&cmd),
        Command::LibDir => library::lib_dir().map(|dir| {
            println!("{}", dir.display());
            0
        }),
        Command::DriverRoot(cmd) => driver_root::run(&cmd),
        Command::Cluster { cmd } => fakegpu_cluster::run(cmd),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(err) => {
            eprintln!("fakegpu: {err:#}");
            std::process::exit(2);
        }
    }
}
