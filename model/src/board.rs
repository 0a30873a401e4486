//! Board facts that nvidia-smi 535 reads through NVML's private export table or through
//! public calls the first profiles did not cover: addressing mode, sparse operation mode, PCIe
//! atomics and host link, HGX module ids, the row-remapper bank count, NVLink fabric
//! membership and NVLink links. One optional `board` object per profile; every key defaults to
//! "the board reports N/A" (NOT_SUPPORTED), so a profile without it reads as before.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The `board` object of a profile.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Board {
    /// How the GPU shares the host's address space; `-q` "Addressing Mode". It depends on the
    /// host (HMM needs the open kernel modules and a recent kernel, ATS a coherent CPU link),
    /// so it is the captured node's. `null`: N/A.
    #[serde(default)]
    pub addressing_mode: Option<AddressingMode>,
    /// `-q` "Sparse Operation Mode": `false` Disabled, `true` Enabled, `null` N/A.
    #[serde(default)]
    pub sparse_operation_mode: Option<bool>,
    /// The host root port's maximum PCIe generation (`-q` "Host Max"); `null`: N/A.
    #[serde(default)]
    pub pcie_host_max_link_gen: Option<u32>,
    /// PCIe atomic operations the GPU completes (inbound) and issues (outbound); an empty list
    /// prints N/A.
    #[serde(default)]
    pub pcie_atomics: PcieAtomics,
    /// `nvmlDeviceGetModuleId` of the GPU at each position of `pci.bus_ids` (or of
    /// `pci_addresses`, where those place the node's GPUs): the HGX baseboard slot, which is not
    /// the PCI order. Empty: position + 1.
    #[serde(default)]
    pub module_ids: Vec<u32>,
    /// Whole PCI addresses (`domain:bus:device.function`) of GPU 0, 1, ..., for layouts
    /// `pci.bus_ids` cannot express (a GPU per PCI domain, a GPU at a device other than 0). Used
    /// for nodes of at most this many GPUs; larger nodes use `pci.bus_ids`. Strictly ascending.
    #[serde(default)]
    pub pci_addresses: Vec<String>,
    /// DRAM banks of the row remapper, all at maximum availability on a healthy board
    /// (`nvmlDeviceGetRowRemapperHistogram`); `null`: NOT_SUPPORTED.
    #[serde(default)]
    pub remap_banks: Option<u32>,
    /// NVLink fabric membership (`nvmlDeviceGetGpuFabricInfo`); `null`: the GPU is on no
    /// fabric (NOT_SUPPORTED).
    #[serde(default)]
    pub fabric: Option<Fabric>,
    /// NVLink links per GPU; `null`: no NVLink (every link call NOT_SUPPORTED).
    #[serde(default)]
    pub nvlink: Option<NvLink>,
    /// `nvmlDeviceGetDisplayMode`: whether a display can be initialized (some HGX A100 boards
    /// report Enabled); `false` by default.
    #[serde(default)]
    pub display_mode: bool,
    /// Spacing of the supported graphics clocks in kHz (15000 before Blackwell, 7500 on it);
    /// `null`: 15000.
    #[serde(default)]
    pub graphics_clock_step_khz: Option<u32>,
    /// Power limits of the whole module (a Grace Blackwell superchip), read as field values
    /// with scope 1; `null`: N/A, as on boards that are not part of a module.
    #[serde(default)]
    pub module_power: Option<ModulePower>,
}

/// Power limits of a module (superchip), milliwatts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModulePower {
    pub default_limit_mw: u32,
    pub min_limit_mw: u32,
    pub max_limit_mw: u32,
}

/// The default spacing of supported graphics clocks, kHz.
pub const GRAPHICS_CLOCK_STEP_KHZ: u32 = 15_000;

/// The graphics clocks a board supports between `min_mhz` and `max_mhz`, highest first, `step_khz`
/// apart. Where the maximum lies on the grid of multiples of the step (truncated to whole MHz,
/// as NVML reports them: 7.5 MHz steps read 1965, 1957, 1950, 1942, ...) the list follows that
/// grid; otherwise it counts down from the maximum.
pub fn supported_graphics_clocks(min_mhz: u32, max_mhz: u32, step_khz: u32) -> Vec<u32> {
    let step = u64::from(step_khz.max(1));
    let (lo, hi) = (u64::from(min_mhz) * 1000, u64::from(max_mhz) * 1000);
    let k_hi = (hi + 999) / step;
    if k_hi * step / 1000 == u64::from(max_mhz) {
        let k_lo = lo.div_ceil(step);
        return (k_lo..=k_hi).rev().map(|k| (k * step / 1000) as u32).collect();
    }
    (0..).map_while(|i| hi.checked_sub(i * step).filter(|c| *c >= lo)).map(|c| (c / 1000) as u32).collect()
}

/// `-q` "Addressing Mode" values (slot 242 of the export table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AddressingMode {
    None,
    Hmm,
    Ats,
}

impl AddressingMode {
    /// The value slot 242 returns.
    pub fn nvml_value(self) -> u32 {
        match self {
            AddressingMode::None => 0,
            AddressingMode::Hmm => 1,
            AddressingMode::Ats => 2,
        }
    }
}

/// PCIe atomic operations, by direction.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PcieAtomics {
    #[serde(default)]
    pub inbound: Vec<AtomicOp>,
    #[serde(default)]
    pub outbound: Vec<AtomicOp>,
}

/// One PCIe atomic operation; the bit order is nvidia-smi's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum AtomicOp {
    #[serde(rename = "FETCHADD_32")]
    FetchAdd32,
    #[serde(rename = "FETCHADD_64")]
    FetchAdd64,
    #[serde(rename = "SWAP_32")]
    Swap32,
    #[serde(rename = "SWAP_64")]
    Swap64,
    #[serde(rename = "CAS_32")]
    Cas32,
    #[serde(rename = "CAS_64")]
    Cas64,
    #[serde(rename = "CAS_128")]
    Cas128,
}

impl AtomicOp {
    /// The bit of this operation in the export table's masks.
    pub fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

/// The mask of a list of operations.
pub fn atomic_mask(ops: &[AtomicOp]) -> u32 {
    ops.iter().fold(0, |m, op| m | op.bit())
}

/// How the board joins an NVLink fabric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Fabric {
    /// `true` for multi-node NVLink (GB200/GB300 NVL racks): the cluster UUID names the
    /// rack's NVLink domain. `false` for one baseboard's NVSwitches (HGX), whose cluster UUID
    /// is all zeros.
    pub multi_node: bool,
    /// The clique (fabric partition) the GPUs are in, as the fabric manager assigned it.
    pub clique_id: u32,
}

/// NVLink links of one GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NvLink {
    /// Active links per GPU (`NVML_NVLINK_MAX_LINKS` is 18).
    pub links: u32,
    /// `nvmlDeviceGetNvLinkVersion` (4 = Hopper, 5 = Blackwell).
    pub version: u32,
    /// NVSwitches on the baseboard the links spread over, round-robin; 0: direct GPU links.
    pub switches: u32,
}

/// The most NVLink links NVML addresses per GPU (`NVML_NVLINK_MAX_LINKS`).
pub const NVLINK_MAX_LINKS: u32 = 18;

impl Board {
    /// The PCI addresses of a node of `gpus` GPUs where `pci_addresses` covers it (validated).
    pub fn addresses_for(&self, gpus: u32) -> Option<Vec<crate::identity::PciAddress>> {
        if self.pci_addresses.is_empty() || (gpus as usize) > self.pci_addresses.len() {
            return None;
        }
        self.pci_addresses.iter().take(gpus as usize).map(|t| crate::identity::PciAddress::parse(t)).collect()
    }

    /// Checks the relations the types cannot express; `Err((key, reason))` names the key
    /// below `board`. `bus_positions` is the length of the profile's `pci.bus_ids`.
    pub fn validate(&self, bus_positions: usize) -> Result<(), (&'static str, String)> {
        let mut addresses = Vec::new();
        for text in &self.pci_addresses {
            let a = crate::identity::PciAddress::parse(text)
                .ok_or_else(|| ("board.pci_addresses", format!("`{text}` is not a PCI address like 0008:06:00.0")))?;
            addresses.push(a);
        }
        if !addresses.windows(2).all(|w| w[0] < w[1]) {
            return Err(("board.pci_addresses", "must be strictly ascending (NVML enumerates in PCI order)".into()));
        }
        let positions = bus_positions.max(addresses.len());
        if self.module_ids.len() > positions {
            return Err(("board.module_ids", format!("{} ids for {positions} GPU positions", self.module_ids.len())));
        }
        if self.module_ids.contains(&0) {
            return Err(("board.module_ids", "module ids start at 1".into()));
        }
        if self.pcie_host_max_link_gen.is_some_and(|g| !(1..=6).contains(&g)) {
            return Err(("board.pcie_host_max_link_gen", "PCIe generations are 1..=6".into()));
        }
        if let Some(n) = self.nvlink {
            if !(1..=NVLINK_MAX_LINKS).contains(&n.links) {
                return Err(("board.nvlink.links", format!("{} is outside 1..={NVLINK_MAX_LINKS}", n.links)));
            }
            if n.switches > NVLINK_MAX_LINKS {
                return Err(("board.nvlink.switches", "at most one NVSwitch per link (18)".into()));
            }
        }
        if self.graphics_clock_step_khz == Some(0) {
            return Err(("board.graphics_clock_step_khz", "must be above 0".into()));
        }
        if let Some(m) = self.module_power {
            if !(m.min_limit_mw <= m.default_limit_mw && m.default_limit_mw <= m.max_limit_mw) {
                return Err(("board.module_power", "needs min_limit_mw <= default_limit_mw <= max_limit_mw".into()));
            }
        }
        if self.fabric.is_some() && self.nvlink.is_none() {
            return Err(("board.fabric", "an NVLink fabric needs board.nvlink".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supported_clocks_follow_the_step_and_truncate() {
        let h100 = supported_graphics_clocks(345, 1980, 15_000);
        assert_eq!((h100.len(), h100[0], h100[1], *h100.last().unwrap()), (110, 1980, 1965, 345));
        let b200 = supported_graphics_clocks(120, 1965, 7_500);
        assert_eq!((b200.len(), &b200[..4], *b200.last().unwrap()), (247, &[1965, 1957, 1950, 1942][..], 120));
        let gb200 = supported_graphics_clocks(120, 2062, 7_500);
        assert_eq!((gb200.len(), &gb200[..3]), (260, &[2062, 2055, 2047][..]));
        assert_eq!(supported_graphics_clocks(1590, 1590, 15_000), vec![1590]);
        // Off the grid (K80's 875 MHz): from the maximum down.
        assert_eq!(&supported_graphics_clocks(562, 875, 15_000)[..3], &[875, 860, 845]);
    }
}
