//! Event sets: create, register, wait, free. Sets are reference counted in a registry
//! keyed by the handle the caller holds, so a wait that races a free never touches
//! freed memory and an unknown handle is rejected without being dereferenced.

use std::collections::BTreeMap;
use std::ffi::c_uint;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nvml_abi::{event, nvmlDevice_t, nvmlEventData_t, nvmlEventData_v1_t, nvmlEventSet_t, nvmlReturn_t, ret};

use crate::device::Device;
use crate::ffi::{guard, out, put};
use crate::runtime::{device, runtime};

#[derive(Default)]
struct EventSet {
    /// (device table index, event mask) per registration.
    registrations: Mutex<Vec<(u32, u64)>>,
    /// Sequence number of the next live-state event this set may deliver: events that
    /// happened before the set was created are not delivered.
    cursor: Mutex<u64>,
}

/// Holds the registry lock (around `fork()`).
pub(crate) fn lock_registry() -> Box<dyn std::any::Any> {
    Box::new(registry())
}

fn registry() -> MutexGuard<'static, BTreeMap<usize, Arc<EventSet>>> {
    static SETS: Mutex<BTreeMap<usize, Arc<EventSet>>> = Mutex::new(BTreeMap::new());
    // A panic elsewhere cannot leave the map half-updated: every critical section is one map call.
    SETS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Drops every event set (the library is being unloaded).
pub(crate) fn clear_registry() {
    registry().clear();
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
        *created.cursor.lock().unwrap_or_else(|e| e.into_inner()) = crate::live::with(|s| s.next_event_seq);
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

/// One event for the caller: (device handle, type, data, GPU instance, compute instance).
type Delivered = (nvmlDevice_t, u64, u64, u32, u32);

/// The oldest undelivered event of the live state that `set` registered for, if any.
fn next_event(set: &EventSet) -> Option<Delivered> {
    let rt = runtime().ok()?;
    let regs = set.registrations.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut cursor = set.cursor.lock().unwrap_or_else(|e| e.into_inner());
    let found = crate::live::with(|s| {
        let mut best: Option<(u64, Delivered)> = None;
        for (dev_index, mask) in &regs {
            let Some(d) = rt.devices.get(*dev_index as usize) else { continue };
            let Some(gpu) = s.gpus.get(d.host_index as usize) else { continue };
            for e in gpu.events.iter().filter(|e| e.seq >= *cursor && e.event_type & mask != 0) {
                if best.as_ref().is_none_or(|(seq, _)| e.seq < *seq) {
                    best = Some((e.seq, (rt.handle_of(d), e.event_type, e.data, e.gpu_instance_id, e.compute_instance_id)));
                }
            }
        }
        best
    });
    let (seq, event) = found?;
    *cursor = seq + 1;
    Some(event)
}

/// Waits up to `timeout_ms` for an event. Events come from the live node state: the wait
/// blocks on the state's generation word (FUTEX_WAIT, woken by every writer in any
/// process) and checks the state after each change, so it never polls. Without a live
/// state nothing ever happens and the wait just sleeps and times out, as on a healthy GPU.
fn wait(set: nvmlEventSet_t, timeout_ms: c_uint) -> Result<Delivered, nvmlReturn_t> {
    runtime()?;
    let set = lookup(set)?;
    let deadline = std::time::Instant::now() + Duration::from_millis(u64::from(timeout_ms));
    let Some(generation) = crate::live::live().and_then(|l| l.generation.as_ref()) else {
        if timeout_ms > 0 {
            std::thread::sleep(Duration::from_millis(u64::from(timeout_ms)));
        }
        return Err(ret::TIMEOUT);
    };
    loop {
        // The last nvmlShutdown wakes every waiter (see live::release): it returns UNINITIALIZED.
        runtime()?;
        let seen = generation.load();
        if let Some(event) = next_event(&set) {
            return Ok(event);
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(ret::TIMEOUT);
        }
        generation.wait(seen, left);
    }
}

#[no_mangle]
pub unsafe extern "C" fn nvmlEventSetWait_v2(set: nvmlEventSet_t, data: *mut nvmlEventData_t, timeoutms: c_uint) -> nvmlReturn_t {
    guard("nvmlEventSetWait_v2", || {
        let data = out(data)?;
        let (device, eventType, eventData, gpuInstanceId, computeInstanceId) = wait(set, timeoutms)?;
        *data = nvmlEventData_t { device, eventType, eventData, gpuInstanceId, computeInstanceId };
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlEventSetWait(set: nvmlEventSet_t, data: *mut nvmlEventData_v1_t, timeoutms: c_uint) -> nvmlReturn_t {
    guard("nvmlEventSetWait", || {
        let data = out(data)?;
        let (device, eventType, eventData, _, _) = wait(set, timeoutms)?;
        *data = nvmlEventData_v1_t { device, eventType, eventData };
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlEventSetFree(set: nvmlEventSet_t) -> nvmlReturn_t {
    guard("nvmlEventSetFree", || {
        runtime()?;
        registry().remove(&(set as usize)).map(|_| ()).ok_or(ret::INVALID_ARGUMENT)
    })
}
