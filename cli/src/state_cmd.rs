//! `fakegpu state` and `fakegpu fault`: read and change the live node state that the fake
//! NVML in every process on the node reads (format: docs/state.md).
//!
//! Every change is one serialized read-modify-write of the state file; a change that is
//! refused (bad argument, unknown GPU, too much memory) leaves the file untouched and
//! exits 2 with a message naming what was wrong.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use fakegpu_model::state::{self, clock_reason, Fault, NodeState, Pattern, PatternKind, Process, ProcessType, SetRequest, StateError};
use fakegpu_model::state_file::{self, UpdateError};
use fakegpu_model::{dynamics, mig, mig_parted, NodeSpec};

use crate::show::NodeArgs;

#[derive(Args, Clone, Default)]
pub struct StateArgs {
    #[command(flatten)]
    pub node: NodeArgs,
    /// State file (default: FAKEGPU_STATE, else fakegpu-state.json beside the node config).
    #[arg(long, global = true)]
    pub state: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum StateCmd {
    /// Print the live state with the readings it produces now.
    Show {
        #[command(flatten)]
        args: StateArgs,
        /// Print the raw state file JSON.
        #[arg(long)]
        json: bool,
    },
    /// Set utilization, memory use or a utilization pattern of one GPU.
    Set {
        #[command(flatten)]
        args: StateArgs,
        #[arg(long)]
        gpu: u32,
        /// GPU utilization, percent.
        #[arg(long)]
        util: Option<u32>,
        /// Memory-controller utilization, percent.
        #[arg(long)]
        mem_util: Option<u32>,
        #[arg(long)]
        enc_util: Option<u32>,
        #[arg(long)]
        dec_util: Option<u32>,
        /// Framebuffer in use, e.g. 20GiB, 512MiB.
        #[arg(long)]
        mem_used: Option<String>,
        /// Utilization pattern around the set values: steady, sine, burst, range (between --min and --util), none.
        #[arg(long)]
        pattern: Option<String>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Period of the pattern in seconds.
        #[arg(long, default_value_t = 60)]
        period: u32,
        /// `range`: the lowest GPU utilization, percent.
        #[arg(long, default_value_t = 0)]
        min: u32,
    },
    /// Add or remove processes.
    #[command(subcommand)]
    Process(ProcessCmd),
    /// Apply a named MIG configuration (mig-parted's format: `all-disabled`, `all-enabled`,
    /// `all-<profile>`, `all-balanced`, or one from --configs) to the node's GPUs, as NVIDIA's
    /// mig-manager would. Refused, with nothing changed, when a GPU that would change runs processes.
    Mig {
        #[command(flatten)]
        args: StateArgs,
        /// Configuration name.
        #[arg(long)]
        mig_config: String,
        /// A mig-parted file (JSON) whose configurations are added to the built-in ones.
        #[arg(long)]
        mig_configs: Option<PathBuf>,
    },
    /// Replace the state with an empty one (recovers a corrupt file).
    Reset {
        #[command(flatten)]
        args: StateArgs,
    },
}

#[derive(Subcommand)]
pub enum ProcessCmd {
    /// Add a process to a GPU.
    Add {
        #[command(flatten)]
        args: StateArgs,
        #[arg(long)]
        gpu: u32,
        #[arg(long)]
        pid: u32,
        #[arg(long)]
        name: String,
        /// Framebuffer it uses, e.g. 10GiB.
        #[arg(long)]
        mem: String,
        /// C (compute), G (graphics), C+G, or M+C (MPS client).
        #[arg(long = "type", default_value = "C")]
        kind: String,
        /// GPU instance id (MIG).
        #[arg(long)]
        gi: Option<u32>,
        /// Compute instance id (MIG).
        #[arg(long)]
        ci: Option<u32>,
    },
    /// Remove a process (from one GPU, or from every GPU it runs on).
    Rm {
        #[command(flatten)]
        args: StateArgs,
        #[arg(long)]
        gpu: Option<u32>,
        #[arg(long)]
        pid: u32,
    },
}

#[derive(Subcommand)]
pub enum FaultCmd {
    /// Inject a fault into one GPU.
    Inject {
        #[command(flatten)]
        args: StateArgs,
        #[arg(long)]
        gpu: u32,
        /// Raise XID `N` (an nvmlEventTypeXidCriticalError event).
        #[arg(long, group = "fault")]
        xid: Option<u32>,
        /// Add N single-bit (corrected) ECC errors.
        #[arg(long, group = "fault")]
        ecc_sbe: Option<u32>,
        /// Add N double-bit (uncorrected) ECC errors (remaps rows / retires pages, XID 48).
        #[arg(long, group = "fault")]
        ecc_dbe: Option<u32>,
        /// The GPU falls off the bus: every query answers GPU_IS_LOST (XID 79).
        #[arg(long, group = "fault")]
        lost: bool,
        /// Clock-event reason: thermal, hw-thermal, power, hw-slowdown, power-brake, sync-boost.
        #[arg(long, group = "fault")]
        throttle: Option<String>,
    },
    /// Clear injected faults of one GPU or of all.
    Clear {
        #[command(flatten)]
        args: StateArgs,
        #[arg(long)]
        gpu: Option<u32>,
    },
}

impl StateArgs {
    fn resolve(&self) -> Result<(NodeSpec, PathBuf)> {
        let node = self.node.resolve()?;
        let path = match &self.state {
            Some(p) => p.clone(),
            None => {
                let overrides = self.node.env_overrides();
                let lookup =
                    |key: &str| overrides.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone()).or_else(|| std::env::var(key).ok());
                state_file::state_path(&lookup).ok_or_else(|| {
                    anyhow!("no state file: pass --state PATH or set FAKEGPU_STATE (or FAKEGPU_CONFIG, beside which it lives)")
                })?
            }
        };
        Ok((node.spec, path))
    }
}

/// Runs one change; a refusal is reported as `fakegpu: <reason>` with exit code 2.
fn change(path: &std::path::Path, spec: &NodeSpec, f: impl FnOnce(&mut NodeState) -> std::result::Result<(), StateError>) -> Result<i32> {
    match state_file::update(path, spec, f) {
        Ok(()) => Ok(0),
        Err(UpdateError::Rejected(e) | UpdateError::Invalid(e)) => {
            eprintln!("fakegpu: {e} (state unchanged)");
            Ok(2)
        }
        Err(UpdateError::File(e)) => Err(anyhow!(e)).context("state file unchanged"),
    }
}

fn parse_pattern(kind: &str, seed: u64, period: u32, min: u32) -> Result<Option<Pattern>> {
    let kind = match kind.to_ascii_lowercase().as_str() {
        "steady" => PatternKind::Steady,
        "sine" => PatternKind::Sine,
        "burst" => PatternKind::Burst,
        "range" => PatternKind::Range,
        "none" => return Ok(None),
        other => bail!("unknown pattern `{other}` (steady, sine, burst, range, none)"),
    };
    if min != 0 && kind != PatternKind::Range {
        bail!("--min applies to --pattern range only");
    }
    Ok(Some(Pattern { kind, seed, period_s: period, min }))
}

pub fn run_state(cmd: &StateCmd) -> Result<i32> {
    match cmd {
        StateCmd::Show { args, json } => show(args, *json),
        StateCmd::Set { args, gpu, util, mem_util, enc_util, dec_util, mem_used, pattern, seed, period, min } => {
            let (spec, path) = args.resolve()?;
            let memory_used_bytes = match mem_used {
                Some(text) => Some(state::parse_size(text).map_err(|e| anyhow!("--mem-used: {e}"))?),
                None => None,
            };
            let pattern = match pattern {
                Some(kind) => Some(parse_pattern(kind, *seed, *period, *min)?),
                None => None,
            };
            let req = SetRequest {
                gpu_util: *util,
                memory_util: *mem_util,
                encoder_util: *enc_util,
                decoder_util: *dec_util,
                memory_used_bytes,
                pattern,
            };
            change(&path, &spec, |s| state::set(s, &spec, *gpu, &req, state_file::now()))
        }
        StateCmd::Process(ProcessCmd::Add { args, gpu, pid, name, mem, kind, gi, ci }) => {
            let (spec, path) = args.resolve()?;
            let used_memory_bytes = state::parse_size(mem).map_err(|e| anyhow!("--mem: {e}"))?;
            let kind = ProcessType::parse(kind).ok_or_else(|| anyhow!("--type `{kind}`: use C, G, C+G or M+C"))?;
            let p = Process {
                pid: *pid,
                name: name.clone(),
                used_memory_bytes,
                kind,
                gpu_instance_id: *gi,
                compute_instance_id: *ci,
                pid_namespace: None,
            };
            change(&path, &spec, |s| state::add_process(s, &spec, *gpu, p, state_file::now()))
        }
        StateCmd::Process(ProcessCmd::Rm { args, gpu, pid }) => {
            let (spec, path) = args.resolve()?;
            change(&path, &spec, |s| state::remove_process(s, &spec, *gpu, *pid, state_file::now()))
        }
        StateCmd::Mig { args, mig_config: config, mig_configs: configs } => {
            let (spec, path) = args.resolve()?;
            let mut named = mig_parted::MigConfigs::builtin(&spec.profile);
            if let Some(file) = configs {
                let text = std::fs::read_to_string(file).with_context(|| format!("--mig-configs {}", file.display()))?;
                let doc: serde_json::Value =
                    serde_json::from_str(&text).with_context(|| format!("--mig-configs {}: not JSON", file.display()))?;
                named = named.overlaid(&mig_parted::MigConfigs::parse(&doc).with_context(|| format!("--mig-configs {}", file.display()))?);
            }
            apply_mig(&path, &spec, &named, config)
        }
        StateCmd::Reset { args } => {
            let (spec, path) = args.resolve()?;
            state_file::reset(&path, &spec, &NodeState::default())?;
            Ok(0)
        }
    }
}

pub fn run_fault(cmd: &FaultCmd) -> Result<i32> {
    match cmd {
        FaultCmd::Inject { args, gpu, xid, ecc_sbe, ecc_dbe, lost, throttle } => {
            let (spec, path) = args.resolve()?;
            let fault = if let Some(x) = xid {
                Fault::Xid(*x)
            } else if let Some(n) = ecc_sbe {
                Fault::EccSbe(*n)
            } else if let Some(n) = ecc_dbe {
                Fault::EccDbe(*n)
            } else if *lost {
                Fault::Lost
            } else if let Some(name) = throttle {
                let names: Vec<&str> = clock_reason::NAMES.iter().map(|(n, _)| *n).collect();
                Fault::Throttle(clock_reason::parse(name).ok_or_else(|| anyhow!("--throttle `{name}`: use one of {}", names.join(", ")))?)
            } else {
                bail!("say which fault: --xid N, --ecc-sbe N, --ecc-dbe N, --lost or --throttle REASON");
            };
            change(&path, &spec, |s| state::inject(s, &spec, *gpu, &fault, state_file::now()))
        }
        FaultCmd::Clear { args, gpu } => {
            let (spec, path) = args.resolve()?;
            change(&path, &spec, |s| state::clear_faults(s, &spec, *gpu, state_file::now()))
        }
    }
}

/// Plans `config` against the node's current layouts and writes the GPUs that change, in one
/// update of the state file; a GPU with processes refuses the whole configuration.
fn apply_mig(path: &std::path::Path, spec: &NodeSpec, configs: &mig_parted::MigConfigs, config: &str) -> Result<i32> {
    let mut refused: Option<String> = None;
    let code = change(path, spec, |s| {
        let current: Vec<mig::MigLayout> = (0..spec.gpu_count).map(|i| s.gpu(i).map(|g| g.mig.clone()).unwrap_or_default()).collect();
        let holders = mig_parted::state_holders(s, spec.gpu_count);
        match mig_parted::plan(configs, config, &spec.profile, &current, |i| holders.get(&i).cloned()) {
            Ok(plan) => {
                let mut target: std::collections::BTreeMap<u32, mig::MigLayout> =
                    current.into_iter().enumerate().map(|(i, l)| (i as u32, l)).collect();
                target.extend(plan.changes);
                match mig_parted::apply_layouts(s, spec, &target, state_file::now()) {
                    Ok(_) => {}
                    Err(mig_parted::ApplyError::State(e)) => return Err(e),
                    Err(e) => refused = Some(e.to_string()),
                }
            }
            Err(e) => refused = Some(e.to_string()),
        }
        Ok(())
    })?;
    match refused {
        Some(e) => bail!("{e} (state unchanged)"),
        None => Ok(code),
    }
}

fn show(args: &StateArgs, json: bool) -> Result<i32> {
    let (spec, path) = args.resolve()?;
    let st = state_file::read_checked(&path, &spec)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&st)?);
        return Ok(0);
    }
    let now = state_file::now();
    println!("state {} ({} x {})", path.display(), spec.gpu_count, spec.profile.product_name);
    println!(
        "{:>3}  {:>4}  {:>4}  {:>11}  {:>8}  {:>5}  {:>5}  {:<4}  FAULTS",
        "GPU", "UTIL", "MEM%", "MEM USED", "POWER", "TEMP", "SM", "MIG"
    );
    let empty = state::GpuState::default();
    for i in 0..spec.gpu_count {
        let g = st.gpu(i).unwrap_or(&empty);
        let r = dynamics::readings(&spec.profile, g, now);
        let mig_col = if !spec.profile.mig_capable {
            "N/A".to_string()
        } else if g.mig.current {
            format!("{}", mig::mig_devices(&g.mig).len())
        } else {
            "off".into()
        };
        let f = &g.faults;
        let mut faults = Vec::new();
        if f.lost {
            faults.push("LOST".to_string());
        }
        if !f.xids.is_empty() {
            faults.push(format!("xid {:?}", f.xids));
        }
        if f.ecc_volatile.sbe + f.ecc_volatile.dbe > 0 {
            faults.push(format!("ecc sbe {} dbe {}", f.ecc_volatile.sbe, f.ecc_volatile.dbe));
        }
        if f.clock_event_reasons != 0 {
            faults.push(format!("clocks 0x{:x}", f.clock_event_reasons));
        }
        println!(
            "{:>3}  {:>3}%  {:>3}%  {:>7} MiB  {:>6} W  {:>3} C  {:>5}  {:<4}  {}",
            i,
            r.gpu_util,
            r.memory_util,
            r.memory.used / fakegpu_model::telemetry::MIB,
            r.power_mw / 1000,
            r.gpu_temp_c,
            r.clocks.sm_mhz,
            mig_col,
            if faults.is_empty() { "-".into() } else { faults.join("; ") }
        );
        for p in &g.processes {
            let mig = match (p.gpu_instance_id, p.compute_instance_id) {
                (Some(gi), Some(ci)) => format!(" gi {gi} ci {ci}"),
                _ => String::new(),
            };
            println!(
                "       pid {:>7}  {:<3}  {:>7} MiB  {}{}",
                p.pid,
                p.kind.column(),
                p.used_memory_bytes / fakegpu_model::telemetry::MIB,
                p.name,
                mig
            );
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_flags() {
        assert_eq!(parse_pattern("none", 0, 60, 0).unwrap(), None);
        let sine = parse_pattern("Sine", 3, 30, 0).unwrap().unwrap();
        assert_eq!((sine.kind, sine.seed, sine.period_s, sine.min), (PatternKind::Sine, 3, 30, 0));
        let range = parse_pattern("range", 1, 5, 40).unwrap().unwrap();
        assert_eq!((range.kind, range.min), (PatternKind::Range, 40));
        assert!(parse_pattern("sine", 0, 60, 40).is_err(), "--min without range");
        assert!(parse_pattern("square", 0, 60, 0).is_err());
    }
}
