//! `nvmlInternalGetExportTable`, the undocumented entry point NVIDIA's nvidia-smi calls
//! right after init and refuses to run without.
//!
//! nvidia-smi 535 reads the table's first word as its size in bytes and calls the slot at
//! byte offset `off` only when `size > off` and the slot is not NULL (a short table reads as
//! UNINITIALIZED and prints "Uninitialized", a NULL slot as NOT_SUPPORTED and prints "N/A").
//! The slots it reads were found in the 535.261.03 binary's disassembly
//! (`nvml_abi::export_table` numbers them, docs/nvml-library.md gives the evidence):
//!
//! | slot (offset) | what                                              |
//! |---------------|---------------------------------------------------|
//! | 108 (0x360)   | enforced power limit (`--query-gpu`)              |
//! | 213 (0x6a8)   | processes with a compute context                  |
//! | 214 (0x6b0)   | MPS clients                                       |
//! | 215 (0x6b8)   | graphics processes                                |
//! | 226 (0x710)   | PCIe atomic capabilities                          |
//! | 230 (0x730)   | host's maximum PCIe generation                    |
//! | 231 (0x738)   | GPU part number                                   |
//! | 240 (0x780)   | T.Limit temperature                               |
//! | 242 (0x790)   | addressing mode                                   |
//! | 243 (0x798)   | sparse operation mode                             |
//!
//! The process lists are `(device, unsigned *capacity_in_count_out, entry *array)` with
//! [`ProcessEntry`]s; nvidia-smi derives the Type column from the lists a pid is in: compute
//! `C`, graphics `G`, both `C+G`; an MPS client is also in the compute list, which makes it
//! `M+C`. The table reaches the last slot nvidia-smi 535 reads (244), so that no field prints
//! "Uninitialized"; every other slot is NULL (N/A, as the real boards print those fields).

use std::ffi::{c_char, c_int, c_uint, c_void};

use fakegpu_model::board::atomic_mask;
use fakegpu_model::telemetry::tlimit_margin_c;
use nvml_abi::export_table::{self as slot, AtomicCaps};
use nvml_abi::{nvmlDevice_t, nvmlReturn_t, ret};

use crate::exports::mig::{is_mig_handle, mig_device};
use crate::exports::processes::{processes, Kind};
use crate::exports::system::nvmlSystemGetProcessName;
use crate::exports::telemetry::nvmlDeviceGetEnforcedPowerLimit;
use crate::ffi::{guard, out, put, put_list, put_str};
use crate::runtime::cstring;
use crate::runtime::device;

/// One process as the internal lists return it: 4128 bytes.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ProcessEntry {
    pub pid: u32,
    pub used_gpu_memory: u64,
    pub gpu_instance_id: u32,
    pub compute_instance_id: u32,
    /// Confidential-computing protected memory; nvidia-smi 535 does not print it.
    pub used_gpu_cc_protected_memory: u64,
    /// NUL-terminated; the default table drops a row whose name is empty.
    pub name: [c_char; PROCESS_NAME_LEN],
}

const PROCESS_NAME_LEN: usize = 4096;
const _: () = assert!(std::mem::size_of::<ProcessEntry>() == 0x1020);

type ListSlot = unsafe extern "C" fn(nvmlDevice_t, *mut c_uint, *mut ProcessEntry) -> nvmlReturn_t;

/// One word of the table after the size: a function of one of the slot signatures, or NULL.
#[derive(Clone, Copy)]
#[repr(C)]
union Slot {
    none: Option<slot::U32Slot>,
    list: ListSlot,
    u32: slot::U32Slot,
    i32: slot::I32Slot,
    str: slot::StrSlot,
    atomics: slot::AtomicCapsSlot,
}

/// The table: its size in bytes, then slots 1..=LAST_SLOT.
#[repr(C)]
struct ExportTable {
    size: u64,
    slots: [Slot; slot::LAST_SLOT],
}

const fn table() -> ExportTable {
    let mut slots = [Slot { none: None }; slot::LAST_SLOT];
    slots[slot::ENFORCED_POWER_LIMIT - 1] = Slot { u32: nvmlDeviceGetEnforcedPowerLimit };
    slots[slot::COMPUTE_PROCESSES - 1] = Slot { list: compute_processes };
    slots[slot::MPS_PROCESSES - 1] = Slot { list: mps_processes };
    slots[slot::GRAPHICS_PROCESSES - 1] = Slot { list: graphics_processes };
    slots[slot::PCIE_ATOMIC_CAPS - 1] = Slot { atomics: pcie_atomic_caps };
    slots[slot::PCIE_HOST_MAX_GEN - 1] = Slot { u32: pcie_host_max_gen };
    slots[slot::GPU_PART_NUMBER - 1] = Slot { str: gpu_part_number };
    slots[slot::TLIMIT_TEMPERATURE - 1] = Slot { i32: tlimit_temperature };
    slots[slot::ADDRESSING_MODE - 1] = Slot { u32: addressing_mode };
    slots[slot::SPARSE_OPERATION_MODE - 1] = Slot { u32: sparse_operation_mode };
    ExportTable { size: std::mem::size_of::<ExportTable>() as u64, slots }
}

static TABLE: ExportTable = table();
const _: () = assert!(std::mem::size_of::<Slot>() == 8);
const _: () = assert!(std::mem::size_of::<ExportTable>() == (slot::LAST_SLOT + 1) * 8);

#[no_mangle]
pub unsafe extern "C" fn nvmlInternalGetExportTable(table: *mut *const c_void, id: *const [u8; 16]) -> nvmlReturn_t {
    guard("nvmlInternalGetExportTable", || {
        if id.is_null() {
            return Err(ret::INVALID_ARGUMENT);
        }
        *out(table)? = (&TABLE as *const ExportTable).cast();
        Ok(())
    })
}

/// The entries of one list, with each process's name as nvmlSystemGetProcessName
/// gives it. nvidia-smi asks a GPU in MIG mode once per MIG device: those are the
/// processes that run in its GPU and compute instance.
unsafe fn entries(dev: nvmlDevice_t, kind: Kind) -> Result<Vec<ProcessEntry>, nvmlReturn_t> {
    let (d, instance) = if is_mig_handle(dev) {
        let (parent, gi, ci) = mig_device(dev)?;
        (parent, Some((gi.id, ci.id)))
    } else {
        (device(dev)?, None)
    };
    let mut list = Vec::new();
    for p in processes(d, kind) {
        if instance.is_some_and(|ids| ids != (p.gpuInstanceId, p.computeInstanceId)) {
            continue;
        }
        let mut e = ProcessEntry {
            pid: p.pid,
            used_gpu_memory: p.usedGpuMemory,
            gpu_instance_id: p.gpuInstanceId,
            compute_instance_id: p.computeInstanceId,
            used_gpu_cc_protected_memory: 0,
            name: [0; PROCESS_NAME_LEN],
        };
        if nvmlSystemGetProcessName(p.pid, e.name.as_mut_ptr(), PROCESS_NAME_LEN as c_uint) != ret::SUCCESS {
            e.name[0] = 0;
        }
        list.push(e);
    }
    Ok(list)
}

unsafe fn list(name: &'static str, dev: nvmlDevice_t, count: *mut c_uint, array: *mut ProcessEntry, kind: Kind) -> nvmlReturn_t {
    guard(name, || put_list(count, array, &entries(dev, kind)?))
}

/// Slot 213: every process with a compute context, MPS clients included, as in the public
/// compute list (nvidia-smi marks a pid that is in this list and in slot 214's as `M+C`).
unsafe extern "C" fn compute_processes(dev: nvmlDevice_t, count: *mut c_uint, array: *mut ProcessEntry) -> nvmlReturn_t {
    list("nvmlInternalGetExportTable[213]", dev, count, array, Kind::Compute)
}

/// Slot 214: MPS clients.
unsafe extern "C" fn mps_processes(dev: nvmlDevice_t, count: *mut c_uint, array: *mut ProcessEntry) -> nvmlReturn_t {
    list("nvmlInternalGetExportTable[214]", dev, count, array, Kind::MpsCompute)
}

/// Slot 215: graphics processes.
unsafe extern "C" fn graphics_processes(dev: nvmlDevice_t, count: *mut c_uint, array: *mut ProcessEntry) -> nvmlReturn_t {
    list("nvmlInternalGetExportTable[215]", dev, count, array, Kind::Graphics)
}

/// Slot 226: PCIe atomic operations, outbound and inbound masks (a zero mask prints N/A).
unsafe extern "C" fn pcie_atomic_caps(dev: nvmlDevice_t, caps: *mut AtomicCaps) -> nvmlReturn_t {
    guard("nvmlInternalGetExportTable[226]", || {
        let atomics = &device(dev)?.profile.board.pcie_atomics;
        put(caps, AtomicCaps { outbound: atomic_mask(&atomics.outbound), inbound: atomic_mask(&atomics.inbound) })
    })
}

/// Slot 230: the host root port's maximum PCIe generation.
unsafe extern "C" fn pcie_host_max_gen(dev: nvmlDevice_t, gen: *mut c_uint) -> nvmlReturn_t {
    guard("nvmlInternalGetExportTable[230]", || put(gen, device(dev)?.profile.board.pcie_host_max_link_gen.ok_or(ret::NOT_SUPPORTED)?))
}

/// Slot 231: the GPU (chip) part number, a string getter with NVML's buffer rules.
unsafe extern "C" fn gpu_part_number(dev: nvmlDevice_t, buf: *mut c_char, length: c_uint) -> nvmlReturn_t {
    guard("nvmlInternalGetExportTable[231]", || {
        let part = device(dev)?.profile.gpu_part_number.as_deref().ok_or(ret::NOT_SUPPORTED)?;
        put_str(buf, length, &cstring(part))
    })
}

/// Slot 240: degrees below T.Limit at the current temperature.
unsafe extern "C" fn tlimit_temperature(dev: nvmlDevice_t, margin: *mut c_int) -> nvmlReturn_t {
    guard("nvmlInternalGetExportTable[240]", || {
        let d = device(dev)?;
        put(margin, tlimit_margin_c(&d.profile, d.readings().gpu_temp_c).ok_or(ret::NOT_SUPPORTED)?)
    })
}

/// Slot 242: the addressing mode (0 None, 1 HMM, 2 ATS).
unsafe extern "C" fn addressing_mode(dev: nvmlDevice_t, mode: *mut c_uint) -> nvmlReturn_t {
    guard("nvmlInternalGetExportTable[242]", || {
        put(mode, device(dev)?.profile.board.addressing_mode.ok_or(ret::NOT_SUPPORTED)?.nvml_value())
    })
}

/// Slot 243: the sparse operation mode (0 Disabled, 1 Enabled).
unsafe extern "C" fn sparse_operation_mode(dev: nvmlDevice_t, mode: *mut c_uint) -> nvmlReturn_t {
    guard("nvmlInternalGetExportTable[243]", || {
        put(mode, device(dev)?.profile.board.sparse_operation_mode.ok_or(ret::NOT_SUPPORTED)? as c_uint)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The words nvidia-smi 535 reads: the size covers its last slot (0x7a0), the answered slots
    /// are set and every other one is NULL (its "not supported" path).
    #[test]
    fn table_covers_every_slot_nvidia_smi_reads() {
        let mut t: *const c_void = std::ptr::null();
        let id = slot::ID;
        assert_eq!(unsafe { nvmlInternalGetExportTable(&mut t, &id) }, ret::SUCCESS);
        let words = t.cast::<usize>();
        let size = unsafe { *words };
        assert_eq!(size, 0x7a8);
        assert!(size > slot::LAST_SLOT * 8);
        let answered = [
            slot::ENFORCED_POWER_LIMIT,
            slot::COMPUTE_PROCESSES,
            slot::MPS_PROCESSES,
            slot::GRAPHICS_PROCESSES,
            slot::PCIE_ATOMIC_CAPS,
            slot::PCIE_HOST_MAX_GEN,
            slot::GPU_PART_NUMBER,
            slot::TLIMIT_TEMPERATURE,
            slot::ADDRESSING_MODE,
            slot::SPARSE_OPERATION_MODE,
        ];
        for n in 1..=slot::LAST_SLOT {
            let word = unsafe { *words.add(n) };
            assert_eq!(word != 0, answered.contains(&n), "slot {n}");
        }
    }
}
