//! The private export table of `nvmlInternalGetExportTable`, as NVIDIA's nvidia-smi 535.261.03
//! reads it (found in its disassembly; evidence per slot in docs/nvml-library.md).
//!
//! The table is an array of 8-byte words: word 0 is the table's size in bytes, word `n` is the
//! function of slot `n` (byte offset `8 * n`). A reader calls slot `n` only when
//! `size > 8 * n` and the word is not NULL; a short table reads as `UNINITIALIZED` (nvidia-smi
//! prints "Uninitialized"), a NULL word as `NOT_SUPPORTED` ("N/A"). Both the fake library (which
//! fills the table) and our nvidia-smi (which reads it the same way) use these numbers.

use std::ffi::{c_char, c_int, c_uint};

use crate::{nvmlDevice_t, nvmlReturn_t};

/// The 16 bytes nvidia-smi 535 passes as the table's id (in its `.rodata`).
pub const ID: [u8; 16] = [0xc4, 0xfe, 0x3e, 0x6c, 0xc9, 0x8f, 0x6c, 0x4e, 0xa3, 0x27, 0xee, 0x69, 0x6e, 0x12, 0xf7, 0xc4];

/// Slot 108 (0x360): the enforced power limit in mW, `(device, unsigned *mW)`;
/// `--query-gpu=enforced.power.limit`.
pub const ENFORCED_POWER_LIMIT: usize = 108;
/// Slot 213 (0x6a8): processes with a compute context, `(device, unsigned *count, ProcessEntry *)`.
pub const COMPUTE_PROCESSES: usize = 213;
/// Slot 214 (0x6b0): MPS clients, same signature.
pub const MPS_PROCESSES: usize = 214;
/// Slot 215 (0x6b8): processes with a graphics context, same signature.
pub const GRAPHICS_PROCESSES: usize = 215;
/// Slot 226 (0x710): PCIe atomic capabilities, `(device, AtomicCaps *)`; `-q` "Atomic Caps
/// Inbound/Outbound".
pub const PCIE_ATOMIC_CAPS: usize = 226;
/// Slot 230 (0x730): the host's (root port's) maximum PCIe generation, `(device, unsigned *)`;
/// `-q` "Host Max", `--query-gpu=pcie.link.gen.hostmax`.
pub const PCIE_HOST_MAX_GEN: usize = 230;
/// Slot 231 (0x738): the GPU (chip) part number, `(device, char *buf, unsigned length)`, asked
/// with length 80; `-q` "GPU Part Number". An empty string prints `N/A`.
pub const GPU_PART_NUMBER: usize = 231;
/// Slot 232 (0x740): the deferred memory clock; `-q` "Deferred Clocks / Memory". Never answered
/// here (every capture prints N/A), so its signature is not needed.
pub const DEFERRED_MEMORY_CLOCK: usize = 232;
/// Slot 237 (0x768): the FRU part number, `(device, char *buf, unsigned length)`, asked with
/// length 20; `-q` "FRU Part Number". Never answered (every capture prints N/A).
pub const FRU_PART_NUMBER: usize = 237;
/// Slot 240 (0x780): the T.Limit temperature (degrees below the slowdown reference),
/// `(device, int *)`; `-q` "GPU T.Limit Temp", `--query-gpu=temperature.gpu.tlimit`. Its result
/// also picks `-q`'s thresholds: SUCCESS prints the T.Limit thresholds (field values 193, 194,
/// 196), NOT_SUPPORTED the absolute ones (`nvmlDeviceGetTemperatureThreshold`).
pub const TLIMIT_TEMPERATURE: usize = 240;
/// Slot 242 (0x790): the addressing mode, `(device, unsigned *)`: [`ADDRESSING_MODE_NONE`],
/// [`ADDRESSING_MODE_HMM`], [`ADDRESSING_MODE_ATS`]; `-q` "Addressing Mode".
pub const ADDRESSING_MODE: usize = 242;
/// Slot 243 (0x798): the sparse operation mode, `(device, unsigned *)`: 0 Disabled, else
/// Enabled; `-q` "Sparse Operation Mode".
pub const SPARSE_OPERATION_MODE: usize = 243;
/// The last slot nvidia-smi 535 reads (0x7a0, `--sparse-operation-mode` set).
pub const LAST_SLOT: usize = 244;

pub const ADDRESSING_MODE_NONE: c_uint = 0;
pub const ADDRESSING_MODE_HMM: c_uint = 1;
pub const ADDRESSING_MODE_ATS: c_uint = 2;

/// Slot 226's out struct: two bit masks, outbound first. Bit `n` names, in order:
/// FETCHADD_32, FETCHADD_64, SWAP_32, SWAP_64, CAS_32, CAS_64, CAS_128. A zero mask prints N/A.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AtomicCaps {
    pub outbound: c_uint,
    pub inbound: c_uint,
}

/// The names of [`AtomicCaps`] bits, as nvidia-smi prints them (each followed by a space).
pub const ATOMIC_CAP_NAMES: [&str; 7] = ["FETCHADD_32", "FETCHADD_64", "SWAP_32", "SWAP_64", "CAS_32", "CAS_64", "CAS_128"];

/// `(device, unsigned *)` slots.
pub type U32Slot = unsafe extern "C" fn(nvmlDevice_t, *mut c_uint) -> nvmlReturn_t;
/// `(device, int *)` slots.
pub type I32Slot = unsafe extern "C" fn(nvmlDevice_t, *mut c_int) -> nvmlReturn_t;
/// `(device, char *, unsigned length)` slots.
pub type StrSlot = unsafe extern "C" fn(nvmlDevice_t, *mut c_char, c_uint) -> nvmlReturn_t;
/// Slot 226.
pub type AtomicCapsSlot = unsafe extern "C" fn(nvmlDevice_t, *mut AtomicCaps) -> nvmlReturn_t;
