//! `nvmlInternalGetExportTable`, the undocumented entry point NVIDIA's nvidia-smi calls
//! right after init and refuses to run without.
//!
//! nvidia-smi 535 reads the table's first word as its size in bytes and calls the slot at
//! byte offset `off` only when `size > off` and the slot is not NULL. It gets running
//! processes nowhere else: the default table's Processes box, `-q` and
//! `--query-compute-apps` read three slots (found in the 535.261.03 binary's disassembly,
//! docs/nvml-library.md):
//!
//! | slot (offset) | list                             |
//! |---------------|----------------------------------|
//! | 213 (0x6a8)   | processes with a compute context |
//! | 214 (0x6b0)   | MPS clients                      |
//! | 215 (0x6b8)   | graphics processes               |
//!
//! each `(device, unsigned *capacity_in_count_out, entry *array)` with [`ProcessEntry`]s.
//! nvidia-smi derives the Type column from the lists a pid is in: compute `C`, graphics `G`,
//! both `C+G`; an MPS client is also in the compute list, which makes it `M+C`.
//!
//! The table is as long as the last of those slots, and every slot before them is NULL.
//! For each of them nvidia-smi takes its own "absent" path (a NULL slot reads as
//! NOT_SUPPORTED where a short table read as UNINITIALIZED): it falls back to the public
//! API as before, and two `-q` rows that printed "Uninitialized" now print "N/A".

use std::ffi::{c_char, c_uint, c_void};

use nvml_abi::{nvmlDevice_t, nvmlReturn_t, ret};

use crate::exports::mig::{is_mig_handle, mig_device};
use crate::exports::processes::{processes, Kind};
use crate::exports::system::nvmlSystemGetProcessName;
use crate::ffi::{guard, out, put_list};
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

const COMPUTE_SLOT: usize = 213;
const MPS_SLOT: usize = 214;
const GRAPHICS_SLOT: usize = 215;

/// The table: its size in bytes, then slots 1..=215.
#[repr(C)]
struct ExportTable {
    size: u64,
    slots: [Option<ListSlot>; GRAPHICS_SLOT],
}

const fn table() -> ExportTable {
    let mut slots: [Option<ListSlot>; GRAPHICS_SLOT] = [None; GRAPHICS_SLOT];
    slots[COMPUTE_SLOT - 1] = Some(compute_processes);
    slots[MPS_SLOT - 1] = Some(mps_processes);
    slots[GRAPHICS_SLOT - 1] = Some(graphics_processes);
    ExportTable { size: std::mem::size_of::<ExportTable>() as u64, slots }
}

static TABLE: ExportTable = table();
const _: () = assert!(std::mem::size_of::<ExportTable>() == (GRAPHICS_SLOT + 1) * 8);

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
