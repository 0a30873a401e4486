//! Event sets: create, register, wait, free. Sets are reference counted in a registry
//! keyed by the handle the caller holds, so a wait that races a free never touches
//! freed memory and an unknown handle is rejected without being dereferenced.

use std::collections::BTreeMap;
use std::ffi::c_uint;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nvml_abi::{event, nvmlDevice_t, nvmlEventData_t, nvmlEventData_v1_t, nvmlEventSet_t, nvmlReturn_t, ret};

use crate::device::Device;
use crate::ffi::{guard, out, put, NvmlResult};
use crate::runtime::{device, runtime};

#[derive(Default)]
struct EventSet {
    /// (device index, event mask) per registration.
    registrations: Mutex<Vec<(u32, u64)>>,
}

fn registry() -> MutexGuard<'static, BTreeMap<usize, Arc<EventSet>>> {
    static SETS: Mutex<BTreeMap<usize, Arc<EventSet>>> = Mutex::new(BTreeMap::new());
    // A panic elsewhere cannot leave the map half-updated: every critical section is one map call.
    SETS.lock().unwrap_or_else(|e| e.into_inner())
}

fn lookup(set: nvmlEventSet_t) -> Result<Arc<EventSet>, nvmlReturn_t> {
    registry().get(&(set as usize)).cloned().ok_or(ret::INVALID_ARGUMENT)
}

fn supported(d: &Device) -> u64 {
    let mut mask = event::SINGLE_BIT_ECC_ERROR | event::DOUBLE_BIT_ECC_ERROR | event::PSTATE | event::XID_CRITICAL_ERROR | event::CLOCK;
    if d.profile.mig_capable {
        mask |= event::MIG_CONFIG_CHANGE;
    }
    if !d.ecc() {
        mask &= !(event::SINGLE_BIT_ECC_ERROR | event::DOUBLE_BIT_ECC_ERROR);
    }
    mask
}

#[no_mangle]
pub unsafe extern "C" fn nvmlEventSetCreate(set: *mut nvmlEventSet_t) -> nvmlReturn_t {
    guard("nvmlEventSetCreate", || {
        runtime()?;
        let slot = out(set)?;
        let created = Arc::new(EventSet::default());
        let handle = Arc::as_ptr(&created) as usize;
        registry().insert(handle, created);
        *slot = handle as nvmlEventSet_t;
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetSupportedEventTypes(dev: nvmlDevice_t, eventTypes: *mut u64) -> nvmlReturn_t {
    guard("nvmlDeviceGetSupportedEventTypes", || put(eventTypes, supported(device(dev)?)))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceRegisterEvents(dev: nvmlDevice_t, eventTypes: u64, set: nvmlEventSet_t) -> nvmlReturn_t {
    guard("nvmlDeviceRegisterEvents", || {
        let d = device(dev)?;
        let set = lookup(set)?;
        if eventTypes & !supported(d) != 0 {
            return Err(ret::NOT_SUPPORTED);
        }
        set.registrations.lock().unwrap_or_else(|e| e.into_inner()).push((d.id.index, eventTypes));
        Ok(())
    })
}

/// Waits up to `timeout_ms` for an event. Nothing happens on a healthy idle GPU, so the
/// wait sleeps (no polling) and times out as it would on hardware.
fn wait(set: nvmlEventSet_t, timeout_ms: c_uint) -> NvmlResult {
    runtime()?;
    let _set = lookup(set)?;
    if timeout_ms > 0 {
        std::thread::sleep(Duration::from_millis(u64::from(timeout_ms)));
    }
    Err(ret::TIMEOUT)
}

#[no_mangle]
pub unsafe extern "C" fn nvmlEventSetWait_v2(set: nvmlEventSet_t, data: *mut nvmlEventData_t, timeoutms: c_uint) -> nvmlReturn_t {
    guard("nvmlEventSetWait_v2", || {
        out(data)?;
        wait(set, timeoutms)
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlEventSetWait(set: nvmlEventSet_t, data: *mut nvmlEventData_v1_t, timeoutms: c_uint) -> nvmlReturn_t {
    guard("nvmlEventSetWait", || {
        out(data)?;
        wait(set, timeoutms)
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlEventSetFree(set: nvmlEventSet_t) -> nvmlReturn_t {
    guard("nvmlEventSetFree", || {
        runtime()?;
        registry().remove(&(set as usize)).map(|_| ()).ok_or(ret::INVALID_ARGUMENT)
    })
}
