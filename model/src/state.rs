//! The live node state: the per-GPU values that change while a node runs (utilization,
//! memory, processes, MIG layout, injected faults, clock-event reasons, events).
//!
//! This module is the format and the operations on it, pure and deterministic: every
//! operation takes the time it happens at ([`Now`]) and either changes the state or
//! returns a [`StateError`] without touching it. [`crate::state_file`] stores it; the fake
//! NVML, the `fakegpu` CLI and the operator share both. The format is documented in
//! docs/state.md.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::config::NodeSpec;
use crate::dynamics;
use crate::mig::{self, MigLayout};
use crate::profile::Profile;

/// Version of the state format this code reads and writes.
pub const STATE_VERSION: u32 = 1;
/// Events kept per GPU; older ones are dropped (a waiter that falls this far behind misses them).
pub const MAX_EVENTS_PER_GPU: usize = 64;
/// `gpuInstanceId` / `computeInstanceId` of an event or process that is not on a MIG device.
pub const NO_INSTANCE: u32 = 0xFFFF_FFFF;

/// NVML event types (bit masks): the ABI crate's definitions.
pub use nvml_abi::event as event_type;

/// Clock-event ("throttle") reason bits, as `nvmlClocksEventReason*` defines them.
pub mod clock_reason {
    pub use nvml_abi::clocks_event::{
        GPU_IDLE, HW_POWER_BRAKE_SLOWDOWN, HW_SLOWDOWN, HW_THERMAL_SLOWDOWN, SW_POWER_CAP, SW_THERMAL_SLOWDOWN, SYNC_BOOST,
    };
    /// Reasons that hold the clocks below what the load asks for.
    pub const SLOWING: u64 = SW_POWER_CAP | HW_SLOWDOWN | SW_THERMAL_SLOWDOWN | HW_THERMAL_SLOWDOWN | HW_POWER_BRAKE_SLOWDOWN;

    /// The names `fakegpu fault inject --throttle` accepts, with their bits.
    pub const NAMES: [(&str, u64); 6] = [
        ("thermal", SW_THERMAL_SLOWDOWN),
        ("hw-thermal", HW_THERMAL_SLOWDOWN | HW_SLOWDOWN),
        ("power", SW_POWER_CAP),
        ("hw-slowdown", HW_SLOWDOWN),
        ("power-brake", HW_POWER_BRAKE_SLOWDOWN | HW_SLOWDOWN),
        ("sync-boost", SYNC_BOOST),
    ];

    pub fn parse(name: &str) -> Option<u64> {
        NAMES.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, b)| *b)
    }
}

/// A moment, on the two clocks the state uses: wall time (shared by every process and
/// stored in the file) and time since boot (the base of the energy counter before any write).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    pub unix_ms: u64,
    pub boot_ms: u64,
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeState {
    /// Format version; [`STATE_VERSION`].
    #[serde(default = "state_version")]
    pub version: u32,
    /// Sequence number the next event gets; event numbers only grow.
    #[serde(default)]
    pub next_event_seq: u64,
    /// Per-GPU state by index (as a decimal string key). A GPU that is absent is idle and healthy.
    #[serde(default)]
    pub gpus: BTreeMap<String, GpuState>,
}

fn state_version() -> u32 {
    STATE_VERSION
}

impl Default for NodeState {
    fn default() -> NodeState {
        NodeState { version: STATE_VERSION, next_event_seq: 0, gpus: BTreeMap::new() }
    }
}

/// Utilization in percent, 0..=100.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Utilization {
    #[serde(default)]
    pub gpu: u32,
    #[serde(default)]
    pub memory: u32,
    #[serde(default)]
    pub encoder: u32,
    #[serde(default)]
    pub decoder: u32,
}

/// How utilization moves over time around the set values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PatternKind {
    #[default]
    Steady,
    Sine,
    Burst,
    /// GPU utilization drawn from `min..=utilization.gpu` per window of `period_s` (seeded),
    /// the other engines scaled with it: a pod's `run.ai/simulated-gpu-utilization: 40-60`.
    Range,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pattern {
    pub kind: PatternKind,
    #[serde(default)]
    pub seed: u64,
    /// Period of the sine, or length of one burst or range window, in seconds.
    #[serde(default = "default_period")]
    pub period_s: u32,
    /// `range`: the lowest GPU utilization (percent); the set `utilization.gpu` is the highest.
    /// Absent (0) in files written before `range` existed, which is what they mean.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub min: u32,
}

fn default_period() -> u32 {
    60
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// What kind of GPU context a process holds (`nvidia-smi`'s Type column).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessType {
    /// `C`: a compute context (CUDA).
    #[default]
    Compute,
    /// `G`: a graphics context.
    Graphics,
    /// `C+G`: both.
    ComputeGraphics,
    /// `M+C`: a client of the MPS server.
    Mps,
}

impl ProcessType {
    pub fn parse(text: &str) -> Option<ProcessType> {
        match text.to_ascii_lowercase().as_str() {
            "c" | "compute" => Some(ProcessType::Compute),
            "g" | "graphics" => Some(ProcessType::Graphics),
            "c+g" | "compute+graphics" | "compute_graphics" => Some(ProcessType::ComputeGraphics),
            "m+c" | "mps" => Some(ProcessType::Mps),
            _ => None,
        }
    }

    /// nvidia-smi's Type column.
    pub fn column(self) -> &'static str {
        match self {
            ProcessType::Compute => "C",
            ProcessType::Graphics => "G",
            ProcessType::ComputeGraphics => "C+G",
            ProcessType::Mps => "M+C",
        }
    }

    /// Whether the compute / graphics / MPS-compute process lists include it. An MPS client
    /// has a compute context too: the driver lists it in both the compute and the MPS list
    /// (nvidia-smi shows `M+C` only for a pid that is in both).
    pub fn in_compute(self) -> bool {
        matches!(self, ProcessType::Compute | ProcessType::ComputeGraphics | ProcessType::Mps)
    }
    pub fn in_graphics(self) -> bool {
        matches!(self, ProcessType::Graphics | ProcessType::ComputeGraphics)
    }
    pub fn in_mps(self) -> bool {
        matches!(self, ProcessType::Mps)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Process {
    pub pid: u32,
    pub name: String,
    pub used_memory_bytes: u64,
    #[serde(default, rename = "type")]
    pub kind: ProcessType,
    /// GPU instance and compute instance the process runs on, on a MIG-enabled GPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_instance_id: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute_instance_id: Option<u32>,
    /// Set for a real process of this host that registered itself (the fake libcuda, for its
    /// contexts): the inode of its pid namespace. Such an entry is swept once the process is
    /// gone ([`sweep_exited`]); entries without it are simulated and stay until removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_namespace: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EccCounts {
    /// Single-bit (corrected) errors.
    #[serde(default)]
    pub sbe: u64,
    /// Double-bit (uncorrected) errors.
    #[serde(default)]
    pub dbe: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemappedRows {
    #[serde(default)]
    pub correctable: u32,
    #[serde(default)]
    pub uncorrectable: u32,
    #[serde(default)]
    pub pending: bool,
    #[serde(default)]
    pub failure: bool,
}

/// Injected faults of one GPU.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    /// The GPU fell off the bus: every query of it answers NVML_ERROR_GPU_IS_LOST.
    #[serde(default)]
    pub lost: bool,
    /// XIDs injected, oldest first.
    #[serde(default)]
    pub xids: Vec<u32>,
    /// ECC errors since the driver loaded.
    #[serde(default)]
    pub ecc_volatile: EccCounts,
    /// ECC errors over the board's life.
    #[serde(default)]
    pub ecc_aggregate: EccCounts,
    /// Retired page addresses (boards before Ampere), by cause.
    #[serde(default)]
    pub retired_pages_sbe: Vec<u64>,
    #[serde(default)]
    pub retired_pages_dbe: Vec<u64>,
    /// Remapped rows (Ampere and later).
    #[serde(default)]
    pub remapped_rows: RemappedRows,
    /// Injected clock-event reason bits (`nvmlClocksEventReason*`), on top of GPU_IDLE.
    #[serde(default)]
    pub clock_event_reasons: u64,
}

impl Faults {
    pub fn is_clear(&self) -> bool {
        *self == Faults::default()
    }
}

/// One NVML event, as `nvmlEventSetWait` hands it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    pub seq: u64,
    #[serde(rename = "type")]
    pub event_type: u64,
    pub data: u64,
    #[serde(default = "no_instance")]
    pub gpu_instance_id: u32,
    #[serde(default = "no_instance")]
    pub compute_instance_id: u32,
    #[serde(default)]
    pub at_unix_ms: u64,
}

fn no_instance() -> u32 {
    NO_INSTANCE
}

/// Where the energy counter stood at a moment; readers integrate power from there.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mark {
    pub value: u64,
    pub at_unix_ms: u64,
}

/// One GPU's dynamic values.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuState {
    #[serde(default)]
    pub utilization: Utilization,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<Pattern>,
    /// Framebuffer in use besides the listed processes' (bytes); the GPU reports the larger
    /// of this and the processes' sum.
    #[serde(default)]
    pub memory_used_bytes: u64,
    #[serde(default)]
    pub processes: Vec<Process>,
    #[serde(default)]
    pub mig: MigLayout,
    #[serde(default)]
    pub faults: Faults,
    #[serde(default)]
    pub events: Vec<Event>,
    /// Energy counter (mJ) at the last write; absent = never written (counter = idle power × uptime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub energy_mj: Option<Mark>,
    /// GPU temperature (°C) at the last write, from which it moves toward its load value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature_c: Option<Mark>,
}

/// Why an operation was refused. Each maps to one NVML return code (see [`StateError::nvml_code`]).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StateError {
    #[error("GPU {index} does not exist (the node has {count} GPUs)")]
    UnknownGpu { index: u32, count: u32 },
    #[error("invalid value: {0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    NotSupported(String),
    #[error("{0}")]
    InsufficientResources(String),
    #[error("{0}")]
    InUse(String),
    #[error("GPU {0} is lost")]
    GpuLost(u32),
    #[error("unsupported state format version {0} (this build reads version {STATE_VERSION})")]
    Version(u32),
}

impl StateError {
    /// The NVML return code an NVML call refused for this reason returns.
    pub fn nvml_code(&self) -> u32 {
        match self {
            StateError::UnknownGpu { .. } | StateError::Invalid(_) => 2,
            StateError::NotFound(_) => 6,
            StateError::AlreadyExists(_) | StateError::InsufficientResources(_) => 23,
            StateError::NotSupported(_) | StateError::Version(_) => 3,
            StateError::InUse(_) => 19,
            StateError::GpuLost(_) => 15,
        }
    }
}

/// Parses a size such as `20GiB`, `512MiB`, `1.5GB`, `1024` (bytes).
pub fn parse_size(text: &str) -> Result<u64, StateError> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num.parse().map_err(|_| StateError::Invalid(format!("`{text}` is not a size (e.g. 20GiB, 512MiB)")))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "m" | "mib" => 1024.0 * 1024.0,
        "g" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tib" => 1024f64.powi(4),
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        _ => return Err(StateError::Invalid(format!("`{text}`: unknown unit `{unit}` (use B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)"))),
    };
    let bytes = value * mult;
    if !bytes.is_finite() || !(0.0..=1e18).contains(&bytes) {
        return Err(StateError::Invalid(format!("`{text}` is out of range")));
    }
    Ok(bytes.round() as u64)
}

impl NodeState {
    /// Checks what serde cannot: the version.
    pub fn check(&self) -> Result<(), StateError> {
        if self.version != STATE_VERSION {
            return Err(StateError::Version(self.version));
        }
        Ok(())
    }

    /// The state of GPU `index`, if anything was ever written for it.
    pub fn gpu(&self, index: u32) -> Option<&GpuState> {
        self.gpus.get(index.to_string().as_str())
    }

    /// Checks `index` against the node and returns its state to modify, creating it (with
    /// energy and temperature marks continuing the readings so far) on first use.
    pub fn gpu_mut(&mut self, spec: &NodeSpec, index: u32, now: Now) -> Result<&mut GpuState, StateError> {
        if index >= spec.gpu_count {
            return Err(StateError::UnknownGpu { index, count: spec.gpu_count });
        }
        let gpu = self.gpus.entry(index.to_string()).or_default();
        // Freeze the counters at `now` under the old values so that the change applies from now on.
        gpu.energy_mj = Some(Mark { value: dynamics::energy_mj(&spec.profile, gpu, now), at_unix_ms: now.unix_ms });
        gpu.temperature_c = Some(Mark { value: dynamics::temperature_c(&spec.profile, gpu, now) as u64, at_unix_ms: now.unix_ms });
        Ok(gpu)
    }

    /// Adds an event to GPU `index`'s log (trimmed to [`MAX_EVENTS_PER_GPU`]).
    pub fn push_event(&mut self, index: u32, event_type: u64, data: u64, gi: u32, ci: u32, now: Now) {
        let seq = self.next_event_seq;
        self.next_event_seq = seq.saturating_add(1);
        let gpu = self.gpus.entry(index.to_string()).or_default();
        gpu.events.push(Event { seq, event_type, data, gpu_instance_id: gi, compute_instance_id: ci, at_unix_ms: now.unix_ms });
        let excess = gpu.events.len().saturating_sub(MAX_EVENTS_PER_GPU);
        gpu.events.drain(..excess);
    }

    /// The highest event sequence number so far (a new waiter starts after it).
    pub fn last_event_seq(&self) -> u64 {
        self.next_event_seq
    }
}

/// What `state set` changes; `None` leaves a value as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SetRequest {
    pub gpu_util: Option<u32>,
    pub memory_util: Option<u32>,
    pub encoder_util: Option<u32>,
    pub decoder_util: Option<u32>,
    pub memory_used_bytes: Option<u64>,
    /// `Some(None)` removes the pattern.
    pub pattern: Option<Option<Pattern>>,
}

fn percent(name: &str, value: Option<u32>) -> Result<Option<u32>, StateError> {
    match value {
        Some(v) if v > 100 => Err(StateError::Invalid(format!("{name} {v} is not a percentage (0..=100)"))),
        other => Ok(other),
    }
}

fn usable_memory(profile: &Profile) -> u64 {
    profile.memory.total_mib.saturating_sub(profile.memory.reserved_mib).saturating_mul(crate::telemetry::MIB)
}

/// `fakegpu state set`: changes utilization, memory use and the pattern of one GPU.
pub fn set(state: &mut NodeState, spec: &NodeSpec, index: u32, req: &SetRequest, now: Now) -> Result<(), StateError> {
    let gpu_util = percent("--util", req.gpu_util)?;
    let memory_util = percent("--mem-util", req.memory_util)?;
    let encoder_util = percent("--enc-util", req.encoder_util)?;
    let decoder_util = percent("--dec-util", req.decoder_util)?;
    if let Some(bytes) = req.memory_used_bytes {
        let usable = usable_memory(&spec.profile);
        if bytes > usable {
            return Err(StateError::Invalid(format!(
                "--mem-used {bytes} bytes exceeds the {} MiB the GPU can hand out",
                usable / crate::telemetry::MIB
            )));
        }
    }
    if let Some(Some(p)) = req.pattern {
        if p.period_s == 0 {
            return Err(StateError::Invalid("pattern period must be at least 1 second".into()));
        }
        if p.min > 100 {
            return Err(StateError::Invalid(format!("pattern minimum {} is not a percentage (0..=100)", p.min)));
        }
    }
    check_live(state, index)?;
    let gpu = state.gpu_mut(spec, index, now)?;
    let u = &mut gpu.utilization;
    u.gpu = gpu_util.unwrap_or(u.gpu);
    u.memory = memory_util.unwrap_or(u.memory);
    u.encoder = encoder_util.unwrap_or(u.encoder);
    u.decoder = decoder_util.unwrap_or(u.decoder);
    if let Some(bytes) = req.memory_used_bytes {
        gpu.memory_used_bytes = bytes;
    }
    if let Some(p) = req.pattern {
        gpu.pattern = p;
    }
    Ok(())
}

fn check_live(state: &NodeState, index: u32) -> Result<(), StateError> {
    if state.gpu(index).is_some_and(|g| g.faults.lost) {
        return Err(StateError::GpuLost(index));
    }
    Ok(())
}

/// `fakegpu state process add`.
pub fn add_process(state: &mut NodeState, spec: &NodeSpec, index: u32, process: Process, now: Now) -> Result<(), StateError> {
    if process.pid == 0 {
        return Err(StateError::Invalid("--pid must be a positive process id".into()));
    }
    if process.name.is_empty() || process.name.len() > 1024 || process.name.contains('\0') {
        return Err(StateError::Invalid("--name must be 1 to 1024 bytes without NUL".into()));
    }
    if index >= spec.gpu_count {
        return Err(StateError::UnknownGpu { index, count: spec.gpu_count });
    }
    check_live(state, index)?;
    let existing = state.gpu(index).cloned().unwrap_or_default();
    if existing.processes.iter().any(|p| p.pid == process.pid) {
        return Err(StateError::AlreadyExists(format!("process {} already runs on GPU {index}", process.pid)));
    }
    match (process.gpu_instance_id, process.compute_instance_id) {
        (None, None) => {
            if existing.mig.current {
                return Err(StateError::Invalid(format!(
                    "GPU {index} is in MIG mode: give the process a GPU instance and compute instance (--gi, --ci)"
                )));
            }
        }
        (Some(gi), Some(ci)) => {
            if !existing.mig.current {
                return Err(StateError::Invalid(format!("GPU {index} is not in MIG mode; --gi/--ci need MIG")));
            }
            let g = existing
                .mig
                .gpu_instances
                .iter()
                .find(|g| g.id == gi)
                .ok_or_else(|| StateError::NotFound(format!("GPU {index} has no GPU instance {gi}")))?;
            if !g.compute_instances.iter().any(|c| c.id == ci) {
                return Err(StateError::NotFound(format!("GPU instance {gi} of GPU {index} has no compute instance {ci}")));
            }
        }
        _ => return Err(StateError::Invalid("--gi and --ci go together".into())),
    }
    if existing.processes.len() >= limits::MAX_PROCESSES_PER_GPU {
        return Err(StateError::InsufficientResources(format!("GPU {index} already lists {} processes", limits::MAX_PROCESSES_PER_GPU)));
    }
    let used = existing.processes.iter().fold(0u64, |sum, p| sum.saturating_add(p.used_memory_bytes));
    let usable = usable_memory(&spec.profile);
    if used.saturating_add(process.used_memory_bytes) > usable {
        return Err(StateError::InsufficientResources(format!(
            "GPU {index} has {} MiB free for processes; the process asks for {} MiB",
            usable.saturating_sub(used) / crate::telemetry::MIB,
            process.used_memory_bytes.div_ceil(crate::telemetry::MIB)
        )));
    }
    state.gpu_mut(spec, index, now)?.processes.push(process);
    Ok(())
}

/// `fakegpu state process rm`: removes `pid` from GPU `index`, or from every GPU when `index` is None.
pub fn remove_process(state: &mut NodeState, spec: &NodeSpec, index: Option<u32>, pid: u32, now: Now) -> Result<(), StateError> {
    if let Some(i) = index {
        if i >= spec.gpu_count {
            return Err(StateError::UnknownGpu { index: i, count: spec.gpu_count });
        }
    }
    let holders: Vec<u32> = (0..spec.gpu_count)
        .filter(|i| index.is_none_or(|want| want == *i))
        .filter(|i| state.gpu(*i).is_some_and(|g| g.processes.iter().any(|p| p.pid == pid)))
        .collect();
    if holders.is_empty() {
        let place = index.map_or("any GPU".to_string(), |i| format!("GPU {i}"));
        return Err(StateError::NotFound(format!("no process {pid} on {place}")));
    }
    for i in holders {
        state.gpu_mut(spec, i, now)?.processes.retain(|p| p.pid != pid);
    }
    Ok(())
}

/// Records that the real process `pid` (of pid namespace `pid_namespace`) holds a context on
/// GPU `index` with `used_bytes` of memory allocated, replacing what it recorded before. The
/// GPU's memory use must stay within what it can hand out ([`StateError::InsufficientResources`]
/// otherwise: CUDA's out-of-memory).
#[allow(clippy::too_many_arguments)]
pub fn set_live_process(
    state: &mut NodeState,
    spec: &NodeSpec,
    index: u32,
    pid: u32,
    name: &str,
    pid_namespace: u64,
    used_bytes: u64,
    now: Now,
) -> Result<(), StateError> {
    check_live(state, index)?;
    let existing = state.gpu(index).cloned().unwrap_or_default();
    let others: u64 = existing.processes.iter().filter(|p| p.pid != pid).map(|p| p.used_memory_bytes).sum();
    let before = existing.processes.iter().find(|p| p.pid == pid).map_or(0, |p| p.used_memory_bytes);
    let usable = usable_memory(&spec.profile);
    // Growing past the free memory fails; shrinking always succeeds.
    if used_bytes > before && existing.memory_used_bytes.max(others) + used_bytes > usable {
        return Err(StateError::InsufficientResources(format!(
            "GPU {index} has {} MiB free; process {pid} asks for {} MiB in all",
            usable.saturating_sub(existing.memory_used_bytes.max(others) + before) / crate::telemetry::MIB,
            used_bytes.div_ceil(crate::telemetry::MIB)
        )));
    }
    let gpu = state.gpu_mut(spec, index, now)?;
    match gpu.processes.iter_mut().find(|p| p.pid == pid) {
        Some(p) => {
            p.used_memory_bytes = used_bytes;
            p.pid_namespace = Some(pid_namespace);
        }
        None => gpu.processes.push(Process {
            pid,
            name: name.chars().filter(|c| *c != '\0').take(1024).collect(),
            used_memory_bytes: used_bytes,
            kind: ProcessType::Compute,
            gpu_instance_id: None,
            compute_instance_id: None,
            pid_namespace: Some(pid_namespace),
        }),
    }
    Ok(())
}

/// Removes the registered process `pid` from GPU `index` (its last context there is gone).
pub fn remove_live_process(state: &mut NodeState, spec: &NodeSpec, index: u32, pid: u32, now: Now) -> Result<(), StateError> {
    if state.gpu(index).is_some_and(|g| g.processes.iter().any(|p| p.pid == pid && p.pid_namespace.is_some())) {
        state.gpu_mut(spec, index, now)?.processes.retain(|p| p.pid != pid || p.pid_namespace.is_none());
    }
    Ok(())
}

/// Removes every registered process that `exited` says is gone (`exited(pid, namespace)`);
/// returns whether anything was removed. Simulated processes are never touched.
pub fn sweep_exited(state: &mut NodeState, exited: &dyn Fn(u32, u64) -> bool) -> bool {
    let mut removed = false;
    for gpu in state.gpus.values_mut() {
        let before = gpu.processes.len();
        gpu.processes.retain(|p| !p.pid_namespace.is_some_and(|ns| exited(p.pid, ns)));
        removed |= gpu.processes.len() != before;
    }
    removed
}

/// A fault to inject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    Xid(u32),
    EccSbe(u32),
    EccDbe(u32),
    Lost,
    Throttle(u64),
}

/// `fakegpu fault inject`: records the fault and the events a real one raises.
pub fn inject(state: &mut NodeState, spec: &NodeSpec, index: u32, fault: &Fault, now: Now) -> Result<(), StateError> {
    match fault {
        Fault::Xid(0) => return Err(StateError::Invalid("--xid must be a positive XID number".into())),
        Fault::EccSbe(0) | Fault::EccDbe(0) => return Err(StateError::Invalid("the error count must be at least 1".into())),
        Fault::EccSbe(_) | Fault::EccDbe(_) if !spec.profile.ecc_enabled => {
            return Err(StateError::NotSupported(format!("{} has ECC disabled", spec.profile.product_name)))
        }
        Fault::Throttle(0) => return Err(StateError::Invalid("no throttle reason given".into())),
        _ => {}
    }
    let remaps = spec.profile.architecture.nvml_value() >= crate::profile::Architecture::Ampere.nvml_value();
    let gpu = state.gpu_mut(spec, index, now)?;
    let f = &mut gpu.faults;
    let mut events = Vec::new();
    match *fault {
        Fault::Xid(xid) => {
            push_xid(f, xid);
            events.push((event_type::XID_CRITICAL_ERROR, u64::from(xid)));
        }
        Fault::EccSbe(n) => {
            f.ecc_volatile.sbe = add_count(f.ecc_volatile.sbe, n);
            f.ecc_aggregate.sbe = add_count(f.ecc_aggregate.sbe, n);
            events.push((event_type::SINGLE_BIT_ECC_ERROR, 0));
        }
        Fault::EccDbe(n) => {
            f.ecc_volatile.dbe = add_count(f.ecc_volatile.dbe, n);
            f.ecc_aggregate.dbe = add_count(f.ecc_aggregate.dbe, n);
            if remaps {
                f.remapped_rows.uncorrectable = f.remapped_rows.uncorrectable.saturating_add(n);
                f.remapped_rows.pending = true;
            } else {
                let base = 0x1_0000_0000u64 + (u64::from(index) << 24);
                let start = f.retired_pages_dbe.len() as u64;
                let room = limits::MAX_RETIRED_PAGES.saturating_sub(f.retired_pages_dbe.len()) as u64;
                f.retired_pages_dbe.extend((start..start + u64::from(n).min(room)).map(|k| base + k * 0x1000));
            }
            events.push((event_type::DOUBLE_BIT_ECC_ERROR, 0));
            // An uncorrectable error is also reported as XID 48 (DBE) by the driver.
            push_xid(f, 48);
            events.push((event_type::XID_CRITICAL_ERROR, 48));
        }
        Fault::Lost => {
            f.lost = true;
            push_xid(f, 79);
            events.push((event_type::XID_CRITICAL_ERROR, 79));
        }
        Fault::Throttle(bits) => {
            f.clock_event_reasons |= bits;
            events.push((event_type::CLOCK, 0));
        }
    }
    for (t, data) in events {
        state.push_event(index, t, data, NO_INSTANCE, NO_INSTANCE, now);
    }
    Ok(())
}

/// Records an XID, dropping the oldest beyond [`limits::MAX_XIDS`].
fn push_xid(f: &mut Faults, xid: u32) {
    f.xids.push(xid);
    let excess = f.xids.len().saturating_sub(limits::MAX_XIDS);
    f.xids.drain(..excess);
}

/// An ECC counter plus `n`, held at [`limits::MAX_ECC_COUNT`].
fn add_count(count: u64, n: u32) -> u64 {
    count.saturating_add(u64::from(n)).min(limits::MAX_ECC_COUNT)
}

/// `fakegpu fault clear`: clears the faults of one GPU or of all.
pub fn clear_faults(state: &mut NodeState, spec: &NodeSpec, index: Option<u32>, now: Now) -> Result<(), StateError> {
    if let Some(i) = index {
        if i >= spec.gpu_count {
            return Err(StateError::UnknownGpu { index: i, count: spec.gpu_count });
        }
    }
    for i in 0..spec.gpu_count {
        if index.is_some_and(|want| want != i) || state.gpu(i).is_none() {
            continue;
        }
        state.gpu_mut(spec, i, now)?.faults = Faults::default();
    }
    Ok(())
}

/// Bounds of live state values: what no GPU reaches, so that a file holding more is corrupt.
pub mod limits {
    /// Processes listed per GPU.
    pub const MAX_PROCESSES_PER_GPU: usize = 1024;
    /// Bytes of a process name.
    pub const MAX_PROCESS_NAME: usize = 1024;
    /// Energy counter (mJ): 10 kW for over 200 years.
    pub const MAX_ENERGY_MJ: u64 = 1 << 56;
    /// XIDs and retired pages kept per GPU (older XIDs are dropped on injection).
    pub const MAX_XIDS: usize = 1024;
    pub const MAX_RETIRED_PAGES: usize = 4096;
    /// ECC error counters.
    pub const MAX_ECC_COUNT: u64 = 1 << 48;
    /// Event sequence numbers.
    pub const MAX_EVENT_SEQ: u64 = 1 << 62;
    /// A pattern's period: one day.
    pub const MAX_PERIOD_S: u32 = 86_400;
}

/// Checks a state against the node (its GPU count, profile and MIG tables): every value a
/// GPU can have and nothing else. Readers call it on every load (a file that fails is
/// corrupt: they keep the last good state) and writers before every write, so a writer
/// never stores what a reader would refuse. Errors name the value's JSON path.
pub fn validate(state: &NodeState, spec: &NodeSpec) -> Result<(), StateError> {
    use limits::*;
    let invalid = |path: String, reason: String| Err(StateError::Invalid(format!("{path}: {reason}")));
    state.check()?;
    if state.next_event_seq > MAX_EVENT_SEQ {
        return invalid("next_event_seq".into(), format!("{} is above {MAX_EVENT_SEQ}", state.next_event_seq));
    }
    let usable = usable_memory(&spec.profile);
    for (key, gpu) in &state.gpus {
        let at = |field: &str| format!("gpus.{key}.{field}");
        let index = crate::config::parse_decimal(key)
            .ok_or_else(|| StateError::Invalid(format!("gpus: key `{key}` is not a GPU index in canonical decimal")))?;
        if index >= spec.gpu_count {
            return invalid(format!("gpus.{key}"), format!("GPU {index} does not exist (the node has {} GPUs)", spec.gpu_count));
        }
        let u = gpu.utilization;
        for (name, v) in [("gpu", u.gpu), ("memory", u.memory), ("encoder", u.encoder), ("decoder", u.decoder)] {
            if v > 100 {
                return invalid(at(&format!("utilization.{name}")), format!("{v} is above 100"));
            }
        }
        if let Some(p) = gpu.pattern {
            if p.min > 100 {
                return invalid(at("pattern.min"), format!("{} is above 100", p.min));
            }
            if !(1..=MAX_PERIOD_S).contains(&p.period_s) {
                return invalid(at("pattern.period_s"), format!("{} is outside 1..={MAX_PERIOD_S}", p.period_s));
            }
        }
        if gpu.memory_used_bytes > usable {
            return invalid(at("memory_used_bytes"), format!("{} is above the {usable} bytes the GPU can hand out", gpu.memory_used_bytes));
        }
        check_processes(gpu, usable, &at)?;
        if gpu.mig.current || gpu.mig.pending || !gpu.mig.gpu_instances.is_empty() {
            if !spec.profile.mig_capable {
                return invalid(at("mig"), format!("{} does not support MIG", spec.profile.product_name));
            }
            mig::validate_layout(&spec.profile, &gpu.mig).map_err(|e| StateError::Invalid(format!("{}: {e}", at("mig"))))?;
        }
        let f = &gpu.faults;
        if f.xids.len() > MAX_XIDS {
            return invalid(at("faults.xids"), format!("{} entries, above {MAX_XIDS}", f.xids.len()));
        }
        for (name, pages) in [("retired_pages_sbe", &f.retired_pages_sbe), ("retired_pages_dbe", &f.retired_pages_dbe)] {
            if pages.len() > MAX_RETIRED_PAGES {
                return invalid(at(&format!("faults.{name}")), format!("{} entries, above {MAX_RETIRED_PAGES}", pages.len()));
            }
        }
        for (name, v) in [
            ("ecc_volatile.sbe", f.ecc_volatile.sbe),
            ("ecc_volatile.dbe", f.ecc_volatile.dbe),
            ("ecc_aggregate.sbe", f.ecc_aggregate.sbe),
            ("ecc_aggregate.dbe", f.ecc_aggregate.dbe),
        ] {
            if v > MAX_ECC_COUNT {
                return invalid(at(&format!("faults.{name}")), format!("{v} is above {MAX_ECC_COUNT}"));
            }
        }
        if gpu.events.len() > MAX_EVENTS_PER_GPU {
            return invalid(at("events"), format!("{} entries, above {MAX_EVENTS_PER_GPU}", gpu.events.len()));
        }
        if let Some(e) = gpu.events.iter().find(|e| e.seq >= state.next_event_seq) {
            return invalid(at("events"), format!("event {} is not below next_event_seq {}", e.seq, state.next_event_seq));
        }
        if let Some(m) = gpu.energy_mj.filter(|m| m.value > MAX_ENERGY_MJ) {
            return invalid(at("energy_mj.value"), format!("{} is above {MAX_ENERGY_MJ}", m.value));
        }
        let max_temp = crate::profile::limits::MAX_TEMPERATURE_C;
        if let Some(m) = gpu.temperature_c.filter(|m| m.value > max_temp) {
            return invalid(at("temperature_c.value"), format!("{} °C is above {max_temp} °C", m.value));
        }
    }
    Ok(())
}

/// The process list of one GPU: real pids, each once, with names, on existing MIG
/// instances, and together within the GPU's memory.
fn check_processes(gpu: &GpuState, usable: u64, at: &dyn Fn(&str) -> String) -> Result<(), StateError> {
    use limits::*;
    let invalid = |path: String, reason: String| Err(StateError::Invalid(format!("{path}: {reason}")));
    if gpu.processes.len() > MAX_PROCESSES_PER_GPU {
        return invalid(at("processes"), format!("{} entries, above {MAX_PROCESSES_PER_GPU}", gpu.processes.len()));
    }
    let mut pids = std::collections::BTreeSet::new();
    let mut sum = 0u64;
    for (i, p) in gpu.processes.iter().enumerate() {
        let at = |field: &str| at(&format!("processes[{i}].{field}"));
        if p.pid == 0 || !pids.insert(p.pid) {
            return invalid(at("pid"), format!("{} is zero or listed twice", p.pid));
        }
        if p.name.is_empty() || p.name.len() > MAX_PROCESS_NAME || p.name.contains('\0') {
            return invalid(at("name"), format!("must be 1 to {MAX_PROCESS_NAME} bytes without NUL"));
        }
        sum = match sum.checked_add(p.used_memory_bytes) {
            Some(s) if s <= usable => s,
            _ => {
                return invalid(
                    at("used_memory_bytes"),
                    format!("the processes' memory adds up to more than the {usable} bytes the GPU can hand out"),
                )
            }
        };
        match (p.gpu_instance_id, p.compute_instance_id) {
            (None, None) if !gpu.mig.current => {}
            (Some(gi), Some(ci)) if gpu.mig.current => {
                let on = gpu.mig.gpu_instances.iter().find(|g| g.id == gi).is_some_and(|g| g.compute_instances.iter().any(|c| c.id == ci));
                if !on {
                    return invalid(at("gpu_instance_id"), format!("no compute instance {gi}/{ci} on this GPU"));
                }
            }
            _ => return invalid(at("gpu_instance_id"), "a process has a GPU and a compute instance exactly when MIG is on".into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(profile: &str, gpus: u32) -> NodeSpec {
        NodeSpec::builtin(profile, Some(gpus), "node-a").unwrap()
    }

    const T0: Now = Now { unix_ms: 1_700_000_000_000, boot_ms: 1_000_000 };

    fn later(ms: u64) -> Now {
        Now { unix_ms: T0.unix_ms + ms, boot_ms: T0.boot_ms + ms }
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("20GiB").unwrap(), 20 << 30);
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("1.5GB").unwrap(), 1_500_000_000);
        assert_eq!(parse_size("1024").unwrap(), 1024);
        for bad in ["", "GiB", "12XB", "-1GiB", "1e9"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn set_changes_only_what_is_given_and_rejects_bad_values_untouched() {
        let s = spec("h100", 8);
        let mut st = NodeState::default();
        set(&mut st, &s, 0, &SetRequest { gpu_util: Some(70), memory_used_bytes: Some(20 << 30), ..Default::default() }, T0).unwrap();
        set(&mut st, &s, 0, &SetRequest { memory_util: Some(30), ..Default::default() }, T0).unwrap();
        let g = st.gpu(0).unwrap();
        assert_eq!(g.utilization, Utilization { gpu: 70, memory: 30, encoder: 0, decoder: 0 });
        assert_eq!(g.memory_used_bytes, 20 << 30);
        let before = st.clone();
        for req in [
            SetRequest { gpu_util: Some(101), ..Default::default() },
            SetRequest { memory_used_bytes: Some(1 << 50), ..Default::default() },
        ] {
            assert!(matches!(set(&mut st, &s, 0, &req, T0), Err(StateError::Invalid(_))));
        }
        assert_eq!(set(&mut st, &s, 8, &SetRequest::default(), T0), Err(StateError::UnknownGpu { index: 8, count: 8 }));
        assert_eq!(st, before);
    }

    #[test]
    fn processes_add_and_remove() {
        let s = spec("h100", 2);
        let mut st = NodeState::default();
        let p = Process {
            pid: 4242,
            name: "python".into(),
            used_memory_bytes: 10 << 30,
            kind: ProcessType::Compute,
            gpu_instance_id: None,
            compute_instance_id: None,
            pid_namespace: None,
        };
        add_process(&mut st, &s, 0, p.clone(), T0).unwrap();
        assert!(matches!(add_process(&mut st, &s, 0, p.clone(), T0), Err(StateError::AlreadyExists(_))));
        let huge = Process { pid: 1, used_memory_bytes: 1 << 40, ..p.clone() };
        assert!(matches!(add_process(&mut st, &s, 0, huge, T0), Err(StateError::InsufficientResources(_))));
        let mig = Process { pid: 2, gpu_instance_id: Some(1), compute_instance_id: Some(0), ..p.clone() };
        assert!(matches!(add_process(&mut st, &s, 0, mig, T0), Err(StateError::Invalid(_))));
        assert_eq!(st.gpu(0).unwrap().processes.len(), 1);
        assert!(matches!(remove_process(&mut st, &s, Some(1), 4242, T0), Err(StateError::NotFound(_))));
        remove_process(&mut st, &s, None, 4242, T0).unwrap();
        assert!(st.gpu(0).unwrap().processes.is_empty());
    }

    #[test]
    fn faults_record_counters_and_events() {
        let s = spec("h100", 4);
        let mut st = NodeState::default();
        inject(&mut st, &s, 3, &Fault::Xid(79), T0).unwrap();
        inject(&mut st, &s, 1, &Fault::EccDbe(2), T0).unwrap();
        inject(&mut st, &s, 2, &Fault::Lost, T0).unwrap();
        inject(&mut st, &s, 0, &Fault::Throttle(clock_reason::parse("thermal").unwrap()), T0).unwrap();
        let g1 = &st.gpu(1).unwrap().faults;
        assert_eq!(g1.ecc_volatile.dbe, 2);
        assert_eq!(g1.ecc_aggregate.dbe, 2);
        assert_eq!(g1.remapped_rows.uncorrectable, 2, "Hopper remaps rows");
        assert!(st.gpu(2).unwrap().faults.lost);
        assert_eq!(st.gpu(0).unwrap().faults.clock_event_reasons, clock_reason::SW_THERMAL_SLOWDOWN);
        let e = st.gpu(3).unwrap().events[0];
        assert_eq!(
            (e.event_type, e.data, e.gpu_instance_id, e.compute_instance_id),
            (event_type::XID_CRITICAL_ERROR, 79, NO_INSTANCE, NO_INSTANCE)
        );
        // Sequence numbers are unique and ascending across GPUs.
        let mut seqs: Vec<u64> = st.gpus.values().flat_map(|g| g.events.iter().map(|e| e.seq)).collect();
        seqs.sort();
        seqs.dedup();
        assert_eq!(seqs.len() as u64, st.next_event_seq);
        // A lost GPU refuses new load.
        assert_eq!(set(&mut st, &s, 2, &SetRequest::default(), T0), Err(StateError::GpuLost(2)));
        clear_faults(&mut st, &s, Some(2), T0).unwrap();
        assert!(st.gpu(2).unwrap().faults.is_clear());
        assert!(!st.gpu(1).unwrap().faults.is_clear());
        clear_faults(&mut st, &s, None, T0).unwrap();
        assert!(st.gpus.values().all(|g| g.faults.is_clear()));
        assert_eq!(clear_faults(&mut st, &s, Some(9), T0), Err(StateError::UnknownGpu { index: 9, count: 4 }));
    }

    #[test]
    fn ecc_on_a_board_without_ecc_is_refused_and_old_boards_retire_pages() {
        let mut st = NodeState::default();
        let l4 = spec("l4", 1);
        if !l4.profile.ecc_enabled {
            assert!(matches!(inject(&mut st, &l4, 0, &Fault::EccDbe(1), T0), Err(StateError::NotSupported(_))));
        }
        let k80 = spec("k80", 2);
        if k80.profile.ecc_enabled {
            inject(&mut st, &k80, 0, &Fault::EccDbe(3), T0).unwrap();
            assert_eq!(st.gpu(0).unwrap().faults.retired_pages_dbe.len(), 3);
        }
    }

    #[test]
    fn events_are_bounded() {
        let s = spec("h100", 1);
        let mut st = NodeState::default();
        for k in 0..200 {
            inject(&mut st, &s, 0, &Fault::Xid(k + 1), later(k as u64)).unwrap();
        }
        let ev = &st.gpu(0).unwrap().events;
        assert_eq!(ev.len(), MAX_EVENTS_PER_GPU);
        assert_eq!(ev.last().unwrap().data, 200);
    }

    #[test]
    fn json_round_trips_and_rejects_unknown_keys() {
        let s = spec("h100", 2);
        let mut st = NodeState::default();
        set(&mut st, &s, 1, &SetRequest { gpu_util: Some(50), ..Default::default() }, T0).unwrap();
        inject(&mut st, &s, 1, &Fault::Xid(13), T0).unwrap();
        let text = serde_json::to_string_pretty(&st).unwrap();
        let back: NodeState = serde_json::from_str(&text).unwrap();
        assert_eq!(back, st);
        validate(&back, &s).unwrap();
        assert!(serde_json::from_str::<NodeState>(r#"{"version":1,"gpus":{"0":{"utilisation":{}}}}"#).is_err());
        let future: NodeState = serde_json::from_str(r#"{"version":2}"#).unwrap();
        assert_eq!(future.check(), Err(StateError::Version(2)));
        let bad: NodeState = serde_json::from_str(r#"{"gpus":{"5":{}}}"#).unwrap();
        assert!(validate(&bad, &s).is_err());
    }

    #[test]
    fn range_pattern_is_compatible_with_files_written_before_it() {
        let s = spec("h100", 1);
        let old: NodeState = serde_json::from_str(r#"{"gpus":{"0":{"pattern":{"kind":"sine","seed":7,"period_s":60}}}}"#).unwrap();
        let p = old.gpu(0).unwrap().pattern.unwrap();
        assert_eq!((p.kind, p.min), (PatternKind::Sine, 0));
        assert!(!serde_json::to_string(&old).unwrap().contains("\"min\""), "a pattern without a minimum is written as before");
        let range: NodeState =
            serde_json::from_str(r#"{"gpus":{"0":{"utilization":{"gpu":60},"pattern":{"kind":"range","seed":1,"period_s":5,"min":40}}}}"#)
                .unwrap();
        validate(&range, &s).unwrap();
        assert_eq!(serde_json::from_str::<NodeState>(&serde_json::to_string(&range).unwrap()).unwrap(), range);
        let bad: NodeState = serde_json::from_str(r#"{"gpus":{"0":{"pattern":{"kind":"range","min":101}}}}"#).unwrap();
        assert!(validate(&bad, &s).is_err());
        let mut st = NodeState::default();
        let req =
            SetRequest { pattern: Some(Some(Pattern { kind: PatternKind::Range, seed: 0, period_s: 5, min: 101 })), ..Default::default() };
        assert!(matches!(set(&mut st, &s, 0, &req, T0), Err(StateError::Invalid(_))));
    }

    /// Each impossible value of issue 18, rejected with its JSON path.
    #[test]
    fn impossible_values_are_refused_with_their_path() {
        let s = spec("a100-40gb", 2);
        let p = |pid: u32, bytes: u64| format!(r#"{{"pid":{pid},"name":"p","used_memory_bytes":{bytes}}}"#);
        let many: Vec<String> = (1..=10_000).map(|pid| p(pid, 1 << 30)).collect();
        let gi = |id: u32, start: u32| format!(r#"{{"id":{id},"profile":0,"placement":{{"start":{start},"size":1}}}}"#);
        let cases = [
            (r#"{"gpus":{"0":{"utilization":{"gpu":1000}}}}"#.to_string(), "gpus.0.utilization.gpu"),
            (r#"{"gpus":{"0":{"memory_used_bytes":1000000000000000}}}"#.to_string(), "gpus.0.memory_used_bytes"),
            (format!(r#"{{"gpus":{{"0":{{"processes":[{}]}}}}}}"#, many.join(",")), "gpus.0.processes"),
            (
                format!(r#"{{"gpus":{{"0":{{"processes":[{},{}]}}}}}}"#, p(1, 1 << 63), p(2, 1 << 63)),
                "gpus.0.processes[0].used_memory_bytes",
            ),
            (format!(r#"{{"gpus":{{"0":{{"processes":[{},{}]}}}}}}"#, p(7, 1), p(7, 1)), "gpus.0.processes[1].pid"),
            (r#"{"gpus":{"2":{}}}"#.to_string(), "gpus.2"),
            (r#"{"gpus":{"zero":{}}}"#.to_string(), "key `zero`"),
            (r#"{"gpus":{"01":{}}}"#.to_string(), "key `01`"),
            (r#"{"gpus":{"0":{"energy_mj":{"value":18446744073709551000,"at_unix_ms":0}}}}"#.to_string(), "gpus.0.energy_mj.value"),
            (r#"{"gpus":{"0":{"temperature_c":{"value":65535,"at_unix_ms":0}}}}"#.to_string(), "gpus.0.temperature_c.value"),
            (r#"{"gpus":{"0":{"pattern":{"kind":"sine","period_s":0}}}}"#.to_string(), "gpus.0.pattern.period_s"),
            (r#"{"next_event_seq":18446744073709551615}"#.to_string(), "next_event_seq"),
            (format!(r#"{{"gpus":{{"0":{{"mig":{{"current":true,"pending":true,"gpu_instances":[{}]}}}}}}}}"#, gi(842, 0)), "gpus.0.mig"),
            (
                format!(r#"{{"gpus":{{"0":{{"mig":{{"current":true,"pending":true,"gpu_instances":[{},{}]}}}}}}}}"#, gi(7, 0), gi(7, 0)),
                "gpus.0.mig",
            ),
        ];
        for (text, path) in cases {
            let st: NodeState = serde_json::from_str(&text).unwrap();
            let err = validate(&st, &s).expect_err(path).to_string();
            assert!(err.contains(path), "{path}: {err}");
        }
        // A layout the writers produce passes.
        let mut st = NodeState::default();
        st.gpu_mut(&s, 0, T0).unwrap().mig = mig::named_layout(&s.profile, "all-1g.5gb").unwrap();
        validate(&st, &s).unwrap();
    }

    #[test]
    fn counters_saturate_instead_of_wrapping() {
        let s = spec("h100", 1);
        let mut st: NodeState =
            serde_json::from_str(&format!(r#"{{"gpus":{{"0":{{"faults":{{"ecc_volatile":{{"sbe":{}}}}}}}}}}}"#, limits::MAX_ECC_COUNT))
                .unwrap();
        inject(&mut st, &s, 0, &Fault::EccSbe(u32::MAX), T0).unwrap();
        assert_eq!(st.gpu(0).unwrap().faults.ecc_volatile.sbe, limits::MAX_ECC_COUNT);
        for k in 0..(limits::MAX_XIDS + 10) {
            inject(&mut st, &s, 0, &Fault::Xid(k as u32 + 1), T0).unwrap();
        }
        assert_eq!(st.gpu(0).unwrap().faults.xids.len(), limits::MAX_XIDS);
        validate(&st, &s).unwrap();
    }

    #[test]
    fn live_processes_grow_within_free_memory_and_are_swept_once_exited() {
        let s = spec("l4", 1);
        let mut st = NodeState::default();
        let usable = usable_memory(&s.profile);
        set_live_process(&mut st, &s, 0, 100, "/usr/bin/python3", 7, 3 << 30, T0).unwrap();
        set_live_process(&mut st, &s, 0, 101, "other", 7, 1 << 30, T0).unwrap();
        // Growth past the free memory is refused and changes nothing.
        let err = set_live_process(&mut st, &s, 0, 100, "/usr/bin/python3", 7, usable, T0).unwrap_err();
        assert!(matches!(err, StateError::InsufficientResources(_)), "{err}");
        assert_eq!(dynamics::memory_used(st.gpu(0).unwrap()), 4 << 30);
        // A simulated process (no namespace) is never swept.
        add_process(
            &mut st,
            &s,
            0,
            Process {
                pid: 5,
                name: "sim".into(),
                used_memory_bytes: 0,
                kind: ProcessType::Compute,
                gpu_instance_id: None,
                compute_instance_id: None,
                pid_namespace: None,
            },
            T0,
        )
        .unwrap();
        assert!(sweep_exited(&mut st, &|pid, ns| pid == 100 && ns == 7));
        let pids: Vec<u32> = st.gpu(0).unwrap().processes.iter().map(|p| p.pid).collect();
        assert_eq!(pids, vec![101, 5]);
        assert!(!sweep_exited(&mut st, &|pid, _| pid == 5));
        remove_live_process(&mut st, &s, 0, 101, T0).unwrap();
        remove_live_process(&mut st, &s, 0, 5, T0).unwrap();
        assert_eq!(st.gpu(0).unwrap().processes.len(), 1, "remove_live_process leaves simulated processes alone");
    }
}
