//! GPU profiles: the facts about one board model, read from strict JSON.
//!
//! A profile says what a board *is* (names, ids, limits, totals) and how it reads
//! when idle. It never holds per-GPU identities; those come from [`crate::identity`].
//! Every field is checked: unknown keys, wrong types and impossible values are
//! errors that name the file and the key.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::path::Path;

use crate::error::ProfileError;

/// One GPU board model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Short key used on the command line and in configs, e.g. `h100`.
    pub name: String,
    /// Other keys that select this profile (case-insensitive), e.g. upstream's `gpuProduct` strings.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// `nvmlDeviceGetName`: the marketing name as the driver reports it.
    pub product_name: String,
    pub brand: Brand,
    pub architecture: Architecture,
    pub compute_capability: ComputeCapability,
    /// GPUs per node when a config does not say.
    pub default_gpu_count: u32,
    /// `nvmlSystemGetDriverVersion` of a node of this board unless its config says otherwise: a
    /// driver the board really runs (the 535 reference driver where that supports the board,
    /// else the driver of a capture or of the branch the board needs), cited in `sources`.
    pub driver_version: String,
    /// `nvmlSystemGetCudaDriverVersion` / `cuDriverGetVersion` of that driver: `major * 1000 +
    /// minor * 10` (12020 = CUDA 12.2).
    pub cuda_driver_version: u32,
    /// CUDA cores (`nvmlDeviceGetNumGpuCores`).
    pub cuda_cores: Option<u32>,
    /// Streaming multiprocessors.
    pub multiprocessor_count: Option<u32>,
    #[serde(default)]
    pub multi_gpu_board: bool,
    pub vbios_version: String,
    pub board_part_number: String,
    pub gpu_part_number: Option<String>,
    /// Facts read through the private export table and the newer public calls (addressing
    /// mode, PCIe atomics, module ids, remapper banks, NVLink fabric and links); all N/A when absent.
    #[serde(default)]
    pub board: crate::board::Board,
    pub inforom: Inforom,
    pub pci: Pci,
    pub memory: Memory,
    pub clocks: Clocks,
    pub power: Power,
    pub thermal: Thermal,
    /// Fan speed in percent when idle; `null` for passively cooled boards (N/A).
    pub fan_speed_percent: Option<u32>,
    pub ecc_enabled: bool,
    #[serde(default = "yes")]
    pub persistence_mode: bool,
    /// Whether the driver runs the GPU System Processor firmware (its version is the driver's).
    #[serde(default)]
    pub gsp_firmware: bool,
    /// Virtualization mode as `nvidia-smi -q` shows it on the captured board.
    #[serde(default)]
    pub virtualization_mode: VirtualizationMode,
    /// Performance state when idle (0 = P0).
    #[serde(default)]
    pub idle_pstate: u32,
    /// Whether the board supports MIG; the partition tables are defined elsewhere.
    #[serde(default)]
    pub mig_capable: bool,
    /// What the CUDA driver API reports beyond the fields above (`cuDeviceGetAttribute`).
    pub cuda: Cuda,
    /// Where the values come from: captures, datasheets.
    pub sources: Vec<String>,
}

/// Plausibility bounds of profile values (no board comes near them).
pub mod limits {
    /// 4 TiB of framebuffer, in MiB.
    pub const MAX_MEMORY_MIB: u64 = 4 << 20;
    /// 10 kW.
    pub const MAX_POWER_MW: u64 = 10_000_000;
    /// 20 GHz.
    pub const MAX_CLOCK_MHZ: u64 = 20_000;
    pub const MAX_TEMPERATURE_C: u64 = 200;
    pub const MAX_MULTIPROCESSORS: u64 = 10_000;
    pub const MAX_CUDA_CORES: u64 = 1_000_000;
    pub const MAX_PCIE_GEN: u64 = 8;
    pub const MAX_PCIE_WIDTH: u64 = 32;
}

/// The JSON path of the first string under `value` that holds a NUL byte.
fn string_with_nul(value: &serde_json::Value, path: &str) -> Option<String> {
    let join = |k: &str| if path.is_empty() { k.to_string() } else { format!("{path}.{k}") };
    match value {
        serde_json::Value::String(s) => s.contains('\0').then(|| path.to_string()),
        serde_json::Value::Array(items) => items.iter().enumerate().find_map(|(i, v)| string_with_nul(v, &format!("{path}[{i}]"))),
        serde_json::Value::Object(map) => map.iter().find_map(|(k, v)| string_with_nul(v, &join(k))),
        _ => None,
    }
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Brand {
    Unknown,
    Quadro,
    Tesla,
    Nvs,
    Grid,
    Geforce,
    Titan,
    NvidiaVapps,
    NvidiaVpc,
    NvidiaVcs,
    NvidiaVws,
    NvidiaCloudGaming,
    QuadroRtx,
    NvidiaRtx,
    Nvidia,
    GeforceRtx,
    TitanRtx,
}

impl Brand {
    /// The `nvmlBrandType_t` value.
    pub fn nvml_value(self) -> u32 {
        self as u32
    }

    /// How `nvidia-smi -q` prints the brand.
    pub fn display(self) -> &'static str {
        match self {
            Brand::Unknown => "Unknown",
            Brand::Quadro => "Quadro",
            Brand::Tesla => "Tesla",
            Brand::Nvs => "NVS",
            Brand::Grid => "Grid",
            Brand::Geforce => "GeForce",
            Brand::Titan => "Titan",
            Brand::NvidiaVapps => "NVIDIA Virtual Applications",
            Brand::NvidiaVpc => "NVIDIA Virtual PC",
            Brand::NvidiaVcs => "NVIDIA Virtual Compute Server",
            Brand::NvidiaVws => "NVIDIA RTX Virtual Workstation",
            Brand::NvidiaCloudGaming => "NVIDIA Cloud Gaming",
            Brand::QuadroRtx => "Quadro RTX",
            Brand::NvidiaRtx => "NVIDIA RTX",
            Brand::Nvidia => "NVIDIA",
            Brand::GeforceRtx => "GeForce RTX",
            Brand::TitanRtx => "Titan RTX",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Architecture {
    Kepler,
    Maxwell,
    Pascal,
    Volta,
    Turing,
    Ampere,
    Ada,
    Hopper,
    Blackwell,
}

impl Architecture {
    /// The `nvmlDeviceArchitecture_t` value.
    pub fn nvml_value(self) -> u32 {
        match self {
            Architecture::Kepler => 2,
            Architecture::Maxwell => 3,
            Architecture::Pascal => 4,
            Architecture::Volta => 5,
            Architecture::Turing => 6,
            Architecture::Ampere => 7,
            Architecture::Ada => 8,
            Architecture::Hopper => 9,
            Architecture::Blackwell => 10,
        }
    }

    /// Name as GPU Feature Discovery and `nvidia-smi -q` spell it.
    pub fn display(self) -> &'static str {
        match self {
            Architecture::Kepler => "Kepler",
            Architecture::Maxwell => "Maxwell",
            Architecture::Pascal => "Pascal",
            Architecture::Volta => "Volta",
            Architecture::Turing => "Turing",
            Architecture::Ampere => "Ampere",
            Architecture::Ada => "Ada Lovelace",
            Architecture::Hopper => "Hopper",
            Architecture::Blackwell => "Blackwell",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum VirtualizationMode {
    #[default]
    None,
    Passthrough,
}

impl VirtualizationMode {
    /// The `nvmlGpuVirtualizationMode_t` value.
    pub fn nvml_value(self) -> u32 {
        match self {
            VirtualizationMode::None => 0,
            VirtualizationMode::Passthrough => 1,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ComputeCapability {
    pub major: u32,
    pub minor: u32,
}

/// The CUDA device attributes a board fixes (`CUdevice_attribute`), beyond the SM count,
/// clocks, bus width and compute capability stated elsewhere in the profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Cuda {
    /// `CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE`, bytes.
    pub l2_cache_bytes: u32,
    /// `CU_DEVICE_ATTRIBUTE_MAX_PERSISTING_L2_CACHE_SIZE`, bytes (0 before Ampere).
    pub max_persisting_l2_cache_bytes: u32,
    /// `CU_DEVICE_ATTRIBUTE_MAX_ACCESS_POLICY_WINDOW_SIZE`, bytes (0 before Ampere).
    pub max_access_policy_window_bytes: u32,
    /// `CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR`.
    pub max_threads_per_multiprocessor: u32,
    /// `CU_DEVICE_ATTRIBUTE_MAX_BLOCKS_PER_MULTIPROCESSOR`.
    pub max_blocks_per_multiprocessor: u32,
    /// `CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR`, bytes.
    pub shared_memory_per_multiprocessor_bytes: u32,
    /// `CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN`, bytes.
    pub shared_memory_per_block_optin_bytes: u32,
    /// `CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_MULTIPROCESSOR` (32-bit registers).
    pub registers_per_multiprocessor: u32,
    /// `CU_DEVICE_ATTRIBUTE_ASYNC_ENGINE_COUNT`: copy engines.
    pub async_engine_count: u32,
    /// `CU_DEVICE_ATTRIBUTE_SINGLE_TO_DOUBLE_PRECISION_PERF_RATIO`.
    pub single_to_double_precision_perf_ratio: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Inforom {
    /// `nvmlDeviceGetInforomImageVersion`.
    pub image: String,
    pub oem: Option<String>,
    pub ecc: Option<String>,
    pub power: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Pci {
    /// Combined device and vendor id as NVML reports it, e.g. `0x233010DE`.
    pub device_id: HexU32,
    /// Combined subsystem id, e.g. `0x16C110DE`.
    pub subsystem_id: HexU32,
    /// Bus numbers of the GPUs in a node of this board, in index order; repeats in the next
    /// PCI domain for larger counts. Empty means a common 8-GPU server layout.
    #[serde(default)]
    pub bus_ids: Vec<HexU32>,
    pub max_link_gen: u32,
    /// Highest generation the GPU itself supports (`nvmlDeviceGetGpuMaxPcieLinkGeneration`).
    pub gpu_max_link_gen: u32,
    pub max_link_width: u32,
    pub current_link_gen: u32,
    pub current_link_width: u32,
}

/// A `u32` written in JSON as a hex string (`"0x233010DE"`) or a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
#[schemars(transparent)]
pub struct HexU32(#[schemars(with = "String")] pub u32);

impl Serialize for HexU32 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("0x{:X}", self.0))
    }
}

impl<'de> Deserialize<'de> for HexU32 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let digits = text
            .strip_prefix("0x")
            .or_else(|| text.strip_prefix("0X"))
            .ok_or_else(|| serde::de::Error::custom(format!("`{text}` is not a hex string like \"0x10DE\"")))?;
        u32::from_str_radix(digits, 16).map(HexU32).map_err(|e| serde::de::Error::custom(format!("`{text}`: {e}")))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Memory {
    /// Framebuffer total in MiB (`nvmlMemory_t.total`).
    pub total_mib: u64,
    /// Reserved by the driver and firmware in MiB (`nvmlMemory_v2_t.reserved`).
    pub reserved_mib: u64,
    pub bar1_total_mib: u64,
    /// BAR1 in use when idle, in MiB.
    #[serde(default)]
    pub bar1_used_mib: u64,
    pub bus_width_bits: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Clocks {
    /// Current clocks when idle (MHz).
    pub idle: ClockSet,
    /// Maximum clocks (`nvmlDeviceGetMaxClockInfo`).
    pub max: ClockSet,
    /// Application clocks; `null` where the board reports them as deprecated or N/A.
    pub applications: Option<AppClocks>,
    pub default_applications: Option<AppClocks>,
    /// `nvmlDeviceGetMaxCustomerBoostClock` (graphics).
    pub max_customer_boost_mhz: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClockSet {
    pub graphics_mhz: u32,
    pub sm_mhz: u32,
    pub memory_mhz: u32,
    pub video_mhz: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AppClocks {
    pub graphics_mhz: u32,
    pub memory_mhz: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Power {
    /// Draw when idle, milliwatts.
    pub idle_draw_mw: u32,
    pub default_limit_mw: u32,
    pub min_limit_mw: u32,
    pub max_limit_mw: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Thermal {
    /// GPU temperature when idle, °C.
    pub idle_gpu_c: u32,
    /// Memory temperature when idle; `null` where the board has no memory sensor.
    pub idle_memory_c: Option<u32>,
    pub shutdown_c: u32,
    pub slowdown_c: u32,
    /// "GPU Max Operating Temp".
    pub gpu_max_c: Option<u32>,
    /// "Memory Max Operating Temp".
    pub memory_max_c: Option<u32>,
    /// Thresholds relative to the GPU's T.Limit (Hopper and later); `null` where not reported.
    pub tlimit: Option<TLimit>,
}

/// Thresholds as distances from T.Limit, °C (negative: that many degrees past the limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TLimit {
    pub shutdown_c: i32,
    pub slowdown_c: i32,
    pub gpu_max_c: i32,
    pub memory_max_c: Option<i32>,
}

impl Profile {
    /// Parses and validates a profile from JSON text; `origin` names the file in errors.
    pub fn from_json(text: &str, origin: &str) -> Result<Profile, ProfileError> {
        let profile: Profile =
            serde_json::from_str(text).map_err(|e| ProfileError::Parse { origin: origin.to_string(), reason: e.to_string() })?;
        profile.validate(origin)?;
        Ok(profile)
    }

    /// Reads a profile file.
    pub fn from_path(path: &Path) -> Result<Profile, ProfileError> {
        let origin = path.display().to_string();
        let text = crate::file::read_text(path, crate::file::MAX_CONFIG_BYTES)
            .map_err(|e| ProfileError::Read { origin: origin.clone(), reason: e.to_string() })?;
        Profile::from_json(&text, &origin)
    }

    /// Checks the relations between fields that the types alone cannot express, and that no
    /// value is beyond what any GPU has (see [`limits`]), so that every computation on a
    /// profile value stays in range.
    pub fn validate(&self, origin: &str) -> Result<(), ProfileError> {
        let invalid = |key: &str, reason: String| ProfileError::Invalid { origin: origin.to_string(), key: key.to_string(), reason };
        let json = serde_json::to_value(self).expect("profiles serialize");
        if let Some(path) = string_with_nul(&json, "") {
            return Err(invalid(&path, "contains a NUL byte (C strings would end there)".into()));
        }
        self.check_limits().map_err(|(key, reason)| invalid(&key, reason))?;
        if self.name.is_empty() || !self.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(invalid("name", format!("`{}` must be non-empty ASCII letters, digits and '-'", self.name)));
        }
        // nvidia-smi asks for names with a 64-byte buffer.
        if self.product_name.is_empty() || self.product_name.len() > 63 {
            return Err(invalid("product_name", "must be 1 to 63 bytes".into()));
        }
        crate::driver::check_driver_version(&self.driver_version).map_err(|e| invalid("driver_version", e.to_string()))?;
        crate::driver::check_cuda_driver_version(u64::from(self.cuda_driver_version))
            .map_err(|e| invalid("cuda_driver_version", e.to_string()))?;
        if !(1..=crate::MAX_GPUS).contains(&self.default_gpu_count) {
            return Err(invalid("default_gpu_count", format!("{} is outside 1..={}", self.default_gpu_count, crate::MAX_GPUS)));
        }
        for (key, value, limit) in [
            ("vbios_version", &self.vbios_version, 31),
            ("board_part_number", &self.board_part_number, 79),
            ("inforom.image", &self.inforom.image, 79),
        ] {
            if value.is_empty() || value.len() > limit {
                return Err(invalid(key, format!("must be 1 to {limit} bytes")));
            }
        }
        if self.pci.device_id.0 & 0xFFFF != 0x10DE {
            return Err(invalid("pci.device_id", format!("0x{:08X} does not end in NVIDIA's vendor id 10DE", self.pci.device_id.0)));
        }
        if self.pci.current_link_gen > self.pci.max_link_gen || self.pci.max_link_gen > self.pci.gpu_max_link_gen.max(self.pci.max_link_gen)
        {
            return Err(invalid("pci.current_link_gen", "exceeds pci.max_link_gen".into()));
        }
        if self.pci.current_link_width > self.pci.max_link_width {
            return Err(invalid("pci.current_link_width", "exceeds pci.max_link_width".into()));
        }
        if self.pci.bus_ids.iter().any(|b| b.0 > 0xFF) {
            return Err(invalid("pci.bus_ids", "bus numbers are 0x00..=0xFF".into()));
        }
        if !self.pci.bus_ids.windows(2).all(|w| w[0] < w[1]) {
            return Err(invalid("pci.bus_ids", "must be strictly ascending (NVML enumerates in PCI order)".into()));
        }
        if self.memory.reserved_mib >= self.memory.total_mib {
            return Err(invalid("memory.reserved_mib", "must be below memory.total_mib".into()));
        }
        if self.memory.bar1_used_mib > self.memory.bar1_total_mib {
            return Err(invalid("memory.bar1_used_mib", "exceeds memory.bar1_total_mib".into()));
        }
        let p = &self.power;
        if !(p.min_limit_mw <= p.default_limit_mw && p.default_limit_mw <= p.max_limit_mw) {
            return Err(invalid("power", "needs min_limit_mw <= default_limit_mw <= max_limit_mw".into()));
        }
        if p.idle_draw_mw > p.max_limit_mw {
            return Err(invalid("power.idle_draw_mw", "exceeds max_limit_mw".into()));
        }
        let t = &self.thermal;
        if t.slowdown_c > t.shutdown_c {
            return Err(invalid("thermal.slowdown_c", "exceeds thermal.shutdown_c".into()));
        }
        if t.idle_gpu_c >= t.slowdown_c {
            return Err(invalid("thermal.idle_gpu_c", "must be below thermal.slowdown_c".into()));
        }
        let (idle, max) = (&self.clocks.idle, &self.clocks.max);
        for (key, i, m) in [
            ("clocks.idle.graphics_mhz", idle.graphics_mhz, max.graphics_mhz),
            ("clocks.idle.sm_mhz", idle.sm_mhz, max.sm_mhz),
            ("clocks.idle.memory_mhz", idle.memory_mhz, max.memory_mhz),
            ("clocks.idle.video_mhz", idle.video_mhz, max.video_mhz),
        ] {
            if i > m {
                return Err(invalid(key, format!("{i} exceeds the maximum {m}")));
            }
        }
        if self.fan_speed_percent.is_some_and(|f| f > 100) {
            return Err(invalid("fan_speed_percent", "is a percentage".into()));
        }
        if self.idle_pstate > 15 {
            return Err(invalid("idle_pstate", "P-states are 0..=15".into()));
        }
        if self.gpu_part_number.as_ref().is_some_and(|g| g.is_empty() || g.len() > 79) {
            return Err(invalid("gpu_part_number", "must be 1 to 79 bytes".into()));
        }
        self.board.validate(self.pci.bus_ids.len()).map_err(|(key, reason)| invalid(key, reason))?;
        let c = &self.cuda;
        if c.max_persisting_l2_cache_bytes > c.l2_cache_bytes {
            return Err(invalid("cuda.max_persisting_l2_cache_bytes", "exceeds cuda.l2_cache_bytes".into()));
        }
        if c.shared_memory_per_block_optin_bytes > c.shared_memory_per_multiprocessor_bytes {
            return Err(invalid("cuda.shared_memory_per_block_optin_bytes", "exceeds cuda.shared_memory_per_multiprocessor_bytes".into()));
        }
        if c.max_threads_per_multiprocessor == 0 || c.max_blocks_per_multiprocessor == 0 || c.l2_cache_bytes == 0 {
            return Err(invalid("cuda", "per-multiprocessor limits and the L2 size must be positive".into()));
        }
        if self.multiprocessor_count.is_none_or(|n| n == 0) {
            return Err(invalid("multiprocessor_count", "CUDA needs the SM count (CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)".into()));
        }
        if self.sources.is_empty() {
            return Err(invalid("sources", "cite at least one source".into()));
        }
        Ok(())
    }

    /// Upper bounds no board reaches, so that products and sums of profile values never
    /// overflow and no reading is absurd.
    fn check_limits(&self) -> Result<(), (String, String)> {
        use limits::*;
        let over = |key: &str, value: u64, max: u64| -> Result<(), (String, String)> {
            if value > max {
                Err((key.to_string(), format!("{value} is above the plausible maximum {max}")))
            } else {
                Ok(())
            }
        };
        let nonzero = |key: &str, value: Option<u32>| -> Result<(), (String, String)> {
            if value == Some(0) {
                Err((key.to_string(), "must be at least 1 (or null when unknown)".to_string()))
            } else {
                Ok(())
            }
        };
        nonzero("multiprocessor_count", self.multiprocessor_count)?;
        nonzero("cuda_cores", self.cuda_cores)?;
        over("multiprocessor_count", self.multiprocessor_count.unwrap_or(0).into(), MAX_MULTIPROCESSORS)?;
        over("cuda_cores", self.cuda_cores.unwrap_or(0).into(), MAX_CUDA_CORES)?;
        over("compute_capability.major", self.compute_capability.major.into(), 99)?;
        over("compute_capability.minor", self.compute_capability.minor.into(), 99)?;
        let m = &self.memory;
        over("memory.total_mib", m.total_mib, MAX_MEMORY_MIB)?;
        over("memory.bar1_total_mib", m.bar1_total_mib, MAX_MEMORY_MIB)?;
        over("memory.bus_width_bits", m.bus_width_bits.unwrap_or(0).into(), 16_384)?;
        let p = &self.power;
        for (key, v) in [
            ("power.idle_draw_mw", p.idle_draw_mw),
            ("power.default_limit_mw", p.default_limit_mw),
            ("power.min_limit_mw", p.min_limit_mw),
            ("power.max_limit_mw", p.max_limit_mw),
        ] {
            over(key, v.into(), MAX_POWER_MW)?;
        }
        let c = &self.clocks;
        for (set, s) in [("idle", c.idle), ("max", c.max)] {
            for (name, v) in
                [("graphics_mhz", s.graphics_mhz), ("sm_mhz", s.sm_mhz), ("memory_mhz", s.memory_mhz), ("video_mhz", s.video_mhz)]
            {
                over(&format!("clocks.{set}.{name}"), v.into(), MAX_CLOCK_MHZ)?;
            }
        }
        for (set, a) in [("applications", c.applications), ("default_applications", c.default_applications)] {
            if let Some(a) = a {
                over(&format!("clocks.{set}.graphics_mhz"), a.graphics_mhz.into(), MAX_CLOCK_MHZ)?;
                over(&format!("clocks.{set}.memory_mhz"), a.memory_mhz.into(), MAX_CLOCK_MHZ)?;
            }
        }
        over("clocks.max_customer_boost_mhz", c.max_customer_boost_mhz.unwrap_or(0).into(), MAX_CLOCK_MHZ)?;
        let t = &self.thermal;
        for (key, v) in [
            ("thermal.idle_gpu_c", Some(t.idle_gpu_c)),
            ("thermal.idle_memory_c", t.idle_memory_c),
            ("thermal.shutdown_c", Some(t.shutdown_c)),
            ("thermal.slowdown_c", Some(t.slowdown_c)),
            ("thermal.gpu_max_c", t.gpu_max_c),
            ("thermal.memory_max_c", t.memory_max_c),
        ] {
            over(key, v.unwrap_or(0).into(), MAX_TEMPERATURE_C)?;
        }
        if let Some(tl) = t.tlimit {
            for (key, v) in [
                ("thermal.tlimit.shutdown_c", Some(tl.shutdown_c)),
                ("thermal.tlimit.slowdown_c", Some(tl.slowdown_c)),
                ("thermal.tlimit.gpu_max_c", Some(tl.gpu_max_c)),
                ("thermal.tlimit.memory_max_c", tl.memory_max_c),
            ] {
                over(key, v.unwrap_or(0).unsigned_abs().into(), MAX_TEMPERATURE_C)?;
            }
        }
        let pci = &self.pci;
        for (key, v, max) in [
            ("pci.max_link_gen", pci.max_link_gen, MAX_PCIE_GEN),
            ("pci.gpu_max_link_gen", pci.gpu_max_link_gen, MAX_PCIE_GEN),
            ("pci.current_link_gen", pci.current_link_gen, MAX_PCIE_GEN),
            ("pci.max_link_width", pci.max_link_width, MAX_PCIE_WIDTH),
            ("pci.current_link_width", pci.current_link_width, MAX_PCIE_WIDTH),
        ] {
            over(key, v.into(), max)?;
        }
        Ok(())
    }

    /// Whether `key` selects this profile (name or alias, case-insensitive).
    pub fn matches(&self, key: &str) -> bool {
        self.name.eq_ignore_ascii_case(key) || self.aliases.iter().any(|a| a.eq_ignore_ascii_case(key))
    }

    /// The JSON Schema every profile file follows (checked in as `profiles/schema.json`).
    pub fn json_schema() -> String {
        let schema = schemars::schema_for!(Profile);
        serde_json::to_string_pretty(&schema).expect("schema serializes") + "\n"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builtin::find_builtin;

    /// The h100 profile with `patch` merged in (JSON merge patch), validated.
    fn patched(patch: serde_json::Value) -> Result<Profile, crate::ConfigError> {
        crate::config::apply_overrides(find_builtin("h100").unwrap(), &patch, "test.json")
    }

    #[test]
    fn absurd_values_are_refused_with_their_path() {
        use serde_json::json;
        for (patch, path) in [
            (json!({"power": {"max_limit_mw": u32::MAX, "default_limit_mw": u32::MAX}}), "power.default_limit_mw"),
            (json!({"memory": {"total_mib": u64::MAX}}), "memory.total_mib"),
            (json!({"clocks": {"max": {"graphics_mhz": u32::MAX}}}), "clocks.max.graphics_mhz"),
            (json!({"clocks": {"max_customer_boost_mhz": u32::MAX}}), "clocks.max_customer_boost_mhz"),
            (json!({"multiprocessor_count": 0}), "multiprocessor_count"),
            (json!({"cuda_cores": 0}), "cuda_cores"),
            (json!({"product_name": "NVIDIA H100\u{0}X"}), "product_name"),
            (json!({"vbios_version": "96.00\u{0}"}), "vbios_version"),
            (json!({"inforom": {"oem": "2.1\u{0}"}}), "inforom.oem"),
            (json!({"aliases": ["ok", "b\u{0}d"]}), "aliases[1]"),
            (json!({"thermal": {"shutdown_c": 65535}}), "thermal.shutdown_c"),
            (json!({"pci": {"max_link_width": 4096, "current_link_width": 4096}}), "pci.max_link_width"),
        ] {
            let err = patched(patch.clone()).unwrap_err().to_string();
            assert!(err.contains(&format!("key `{path}`")), "{patch}: {err}");
        }
        for p in crate::builtin_profiles().unwrap() {
            p.validate(&p.name).unwrap();
        }
    }

    #[test]
    fn full_load_power_stays_below_the_limit_for_the_largest_allowed_limit() {
        let p = patched(serde_json::json!({"power": {"max_limit_mw": limits::MAX_POWER_MW, "default_limit_mw": limits::MAX_POWER_MW}}))
            .unwrap();
        let r = crate::telemetry::readings(&p, &crate::telemetry::Load { gpu_util: 100, ..Default::default() });
        assert_eq!(u64::from(r.power_mw), limits::MAX_POWER_MW * 9 / 10);
    }
}
