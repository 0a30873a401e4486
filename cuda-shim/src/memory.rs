//! Allocations and their place in the node's live state.
//!
//! Device memory is host memory (`mmap`, reserved lazily, so an untouched 3 GiB allocation
//! costs no RSS) whose address is the `CUdeviceptr`; copies are plain `memcpy` between ranges
//! checked against the allocation table. What a process has allocated on a GPU is written to
//! the live state file as its entry in the GPU's process list, so NVML, both nvidia-smis and
//! the exporter see it; the model refuses growth past the GPU's free memory, which is CUDA's
//! out-of-memory. Without a state file the same bound is kept within the process.
//!
//! Allocation and copies take the registry lock (they are not the hot path); attribute and
//! discovery getters never do.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use fakegpu_model::state::{self, StateError};
use fakegpu_model::{dynamics, state_file};

use crate::ffi::CuResult;
use crate::runtime::runtime;
use crate::types::*;

struct Alloc {
    len: usize,
    /// Device ordinal; `None` for page-locked host memory.
    ordinal: Option<usize>,
}

#[derive(Default)]
struct Registry {
    allocs: BTreeMap<usize, Alloc>,
    /// Device bytes allocated by this process, per ordinal.
    device_bytes: Vec<u64>,
}

static REGISTRY: Mutex<Option<Registry>> = Mutex::new(None);
static WARNED: AtomicBool = AtomicBool::new(false);

/// Unmaps every allocation (the library is being unloaded).
pub(crate) fn free_all() {
    if let Some(reg) = REGISTRY.lock().unwrap_or_else(|e| e.into_inner()).take() {
        for (p, a) in reg.allocs {
            unmap(p, a.len);
        }
    }
}

/// Holds the registry lock (around `fork()`).
pub(crate) fn lock_registry() -> Box<dyn std::any::Any> {
    Box::new(REGISTRY.lock().unwrap_or_else(|e| e.into_inner()))
}

fn with<R>(f: impl FnOnce(&mut Registry) -> CuResult<R>) -> CuResult<R> {
    let count = runtime()?.devices.len();
    let mut guard = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    let reg = guard.get_or_insert_with(|| Registry { device_bytes: vec![0; count], ..Registry::default() });
    f(reg)
}

/// Records that this process holds `bytes` on device `ordinal` (and a context there).
fn record(ordinal: usize, bytes: u64) -> CuResult {
    let rt = runtime()?;
    let device = &rt.devices[ordinal];
    let in_process = || {
        if bytes > device.memory(&rt.spec, 0).free {
            Err(CUDA_ERROR_OUT_OF_MEMORY)
        } else {
            Ok(())
        }
    };
    let Some(path) = &rt.state_path else { return in_process() };
    let result = state_file::update(path, &rt.spec, |s| {
        state::sweep_exited(s, &state_file::process_exited);
        state::set_live_process(s, &rt.spec, device.host_index, rt.pid, &rt.process_name, rt.pid_namespace, bytes, state_file::now())
    });
    match result {
        Ok(()) => Ok(()),
        Err(state_file::UpdateError::Rejected(StateError::InsufficientResources(_))) => Err(CUDA_ERROR_OUT_OF_MEMORY),
        Err(state_file::UpdateError::Rejected(StateError::GpuLost(_))) => Err(CUDA_ERROR_DEVICE_UNAVAILABLE),
        Err(e) => {
            if !WARNED.swap(true, Ordering::Relaxed) {
                eprintln!("fakegpu: cannot record GPU memory use in the live state: {e}; counting within this process only");
            }
            in_process()
        }
    }
}

/// The first context on `ordinal`: lists this process on the GPU.
pub(crate) fn register(ordinal: usize) -> CuResult {
    let bytes = with(|r| Ok(r.device_bytes[ordinal]))?;
    record(ordinal, bytes)
}

/// The last context on `ordinal` ended: frees its allocations and takes the process off the GPU.
pub(crate) fn release_device(ordinal: usize) {
    let _ = with(|r| {
        let mine: Vec<usize> = r.allocs.iter().filter(|(_, a)| a.ordinal == Some(ordinal)).map(|(p, _)| *p).collect();
        for p in mine {
            if let Some(a) = r.allocs.remove(&p) {
                unmap(p, a.len);
            }
        }
        r.device_bytes[ordinal] = 0;
        Ok(())
    });
    let Ok(rt) = runtime() else { return };
    if let Some(path) = &rt.state_path {
        let host = rt.devices[ordinal].host_index;
        let _ = state_file::update(path, &rt.spec, |s| state::remove_live_process(s, &rt.spec, host, rt.pid, state_file::now()));
    }
}

/// Memory in use on device `ordinal` by every process of the node (or by this process alone
/// without a state file), as NVML counts it.
pub(crate) fn used_on_node(ordinal: usize) -> CuResult<u64> {
    let rt = runtime()?;
    let mine = with(|r| Ok(r.device_bytes[ordinal]))?;
    let Some(state) = &rt.state else { return Ok(mine) };
    // Validated against the node, as NVML reads it; a corrupt file keeps the last good state.
    let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(kept) = state.refresh() {
        eprintln!("fakegpu: {kept}");
    }
    let node = state.state().gpu(rt.devices[ordinal].host_index).map(dynamics::memory_used).unwrap_or(0);
    Ok(node.max(mine))
}

fn map(len: usize) -> CuResult<usize> {
    // SAFETY: an anonymous private mapping; the kernel picks the address.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        Err(CUDA_ERROR_OUT_OF_MEMORY)
    } else {
        Ok(p as usize)
    }
}

fn unmap(p: usize, len: usize) {
    // SAFETY: (p, len) is a mapping this module made and removed from the table.
    unsafe { libc::munmap(p as *mut libc::c_void, len) };
}

/// `cuMemAlloc`: `bytes` on device `ordinal`; OUT_OF_MEMORY past the GPU's free memory.
pub(crate) fn alloc(ordinal: usize, bytes: usize) -> CuResult<CUdeviceptr> {
    if bytes == 0 {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    with(|r| {
        let total = r.device_bytes[ordinal].checked_add(bytes as u64).ok_or(CUDA_ERROR_OUT_OF_MEMORY)?;
        record(ordinal, total)?;
        let p = match map(bytes) {
            Ok(p) => p,
            Err(code) => {
                let _ = record(ordinal, r.device_bytes[ordinal]);
                return Err(code);
            }
        };
        r.device_bytes[ordinal] = total;
        r.allocs.insert(p, Alloc { len: bytes, ordinal: Some(ordinal) });
        Ok(p as CUdeviceptr)
    })
}

/// `cuMemFree`: INVALID_VALUE for anything but the start of a live device allocation.
pub(crate) fn free(ptr: CUdeviceptr) -> CuResult {
    with(|r| {
        let p = ptr as usize;
        let ordinal = match r.allocs.get(&p) {
            Some(Alloc { ordinal: Some(o), .. }) => *o,
            _ => return Err(CUDA_ERROR_INVALID_VALUE),
        };
        let a = r.allocs.remove(&p).expect("present");
        unmap(p, a.len);
        r.device_bytes[ordinal] -= a.len as u64;
        let _ = record(ordinal, r.device_bytes[ordinal]);
        Ok(())
    })
}

/// `cuMemHostAlloc`: page-locked host memory, bounded by the current device's free memory.
pub(crate) fn host_alloc(ordinal: usize, bytes: usize) -> CuResult<*mut libc::c_void> {
    if bytes == 0 {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    let rt = runtime()?;
    if bytes as u64 > rt.devices[ordinal].memory(&rt.spec, used_on_node(ordinal)?).free {
        return Err(CUDA_ERROR_OUT_OF_MEMORY);
    }
    with(|r| {
        let p = map(bytes)?;
        r.allocs.insert(p, Alloc { len: bytes, ordinal: None });
        Ok(p as *mut libc::c_void)
    })
}

/// `cuMemFreeHost`.
pub(crate) fn host_free(ptr: *mut libc::c_void) -> CuResult {
    with(|r| match r.allocs.get(&(ptr as usize)) {
        Some(Alloc { ordinal: None, len }) => {
            let len = *len;
            r.allocs.remove(&(ptr as usize));
            unmap(ptr as usize, len);
            Ok(())
        }
        _ => Err(CUDA_ERROR_INVALID_VALUE),
    })
}

/// Which side of a copy is device memory.
#[derive(Clone, Copy)]
pub(crate) enum Copy {
    HostToDevice,
    DeviceToHost,
    DeviceToDevice,
}

/// The device range [ptr, ptr + len) inside one live allocation.
fn device_range(r: &Registry, ptr: CUdeviceptr, len: usize) -> CuResult<*mut u8> {
    let p = ptr as usize;
    let (start, a) = r.allocs.range(..=p).next_back().ok_or(CUDA_ERROR_INVALID_VALUE)?;
    let end = p.checked_add(len).ok_or(CUDA_ERROR_INVALID_VALUE)?;
    if a.ordinal.is_none() || end > start + a.len {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    Ok(p as *mut u8)
}

/// `cuMemcpy{HtoD,DtoH,DtoD}`: device sides must lie inside live allocations; host pointers
/// are the caller's (NULL is INVALID_VALUE).
pub(crate) fn copy(kind: Copy, dst: usize, src: usize, len: usize) -> CuResult {
    if len == 0 {
        return Ok(());
    }
    with(|r| {
        let (d, s) = match kind {
            Copy::HostToDevice => (device_range(r, dst as u64, len)?, src as *const u8),
            Copy::DeviceToHost => (dst as *mut u8, device_range(r, src as u64, len)?.cast_const()),
            Copy::DeviceToDevice => (device_range(r, dst as u64, len)?, device_range(r, src as u64, len)?.cast_const()),
        };
        if d.is_null() || s.is_null() {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        // SAFETY: device sides were checked against the table; host sides are the caller's
        // buffers of `len` bytes, as the API requires. `copy` allows overlap (DtoD).
        unsafe { std::ptr::copy(s, d, len) };
        Ok(())
    })
}
