//! `fakegpu exec`: runs a program with the fake NVML in place of libnvidia-ml.so.1 and the
//! fake CUDA driver in place of libcuda.so.1, on the node selected by the flags, passing its
//! exit code through.

use std::os::unix::process::ExitStatusExt;
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::library::lib_dir;
use crate::show::NodeArgs;

#[derive(Args)]
pub struct ExecArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// Load the libraries with LD_PRELOAD as well as putting them first on LD_LIBRARY_PATH
    /// (for programs that load NVML or libcuda by absolute path).
    #[arg(long)]
    preload: bool,
    /// The program and its arguments.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

pub fn exec(args: &ExecArgs) -> Result<i32> {
    // Resolve first so that a bad profile or count fails here, with the same message the
    // library would print, rather than inside the program.
    args.node.resolve()?;
    let dir = lib_dir()?;
    let (program, rest) = args.command.split_first().context("no command given")?;
    let mut cmd = Command::new(program);
    cmd.args(rest).envs(args.node.env_overrides());
    if args.preload {
        let libs = format!("{}:{}", dir.join("libnvidia-ml.so.1").display(), dir.join("libcuda.so.1").display());
        let preload = match std::env::var("LD_PRELOAD") {
            Ok(existing) if !existing.is_empty() => format!("{libs}:{existing}"),
            _ => libs,
        };
        cmd.env("LD_PRELOAD", preload);
    }
    let path = match std::env::var("LD_LIBRARY_PATH") {
        Ok(existing) if !existing.is_empty() => format!("{}:{existing}", dir.display()),
        _ => dir.display().to_string(),
    };
    cmd.env("LD_LIBRARY_PATH", path);
    let status = match cmd.status() {
        Ok(status) => status,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => bail!("{program}: command not found"),
        Err(err) => return Err(err).with_context(|| format!("running {program}")),
    };
    // A program killed by a signal exits as shells report it: 128 + the signal number.
    Ok(status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}
