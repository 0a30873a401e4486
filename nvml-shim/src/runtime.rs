//! Process-wide state: the init reference count and the simulated node, loaded on the
//! first successful init and kept while the library is loaded so that device handles
//! stay valid across shutdown and re-init (they point into it). The last `nvmlShutdown`
//! lets go of the live state file (mapping, parsed state) and the event sets; when the
//! library is unloaded (`dlclose`) after it, a destructor frees the node and the rest, so
//! that a host that loads and unloads NVML repeatedly does not leak.
//!
//! The getters' hot path is one atomic load of the reference count plus one of the node
//! pointer; nothing here takes a lock after loading. The load lock is fork-safe (see `fork`).

use std::ffi::CString;
use std::sync::atomic::{AtomicPtr, AtomicU32, Ordering};
use std::sync::Mutex;

use fakegpu_model::{config, visibility, ConfigError, SimulatedNode};
use nvml_abi::{nvmlDevice_t, nvmlReturn_t, ret};

use crate::device::Device;

pub(crate) struct Runtime {
    pub node: SimulatedNode,
    pub devices: Box<[Device]>,
    /// Handle slots of GPU instances, compute instances and MIG devices (see exports/mig.rs).
    pub mig: crate::exports::mig::MigSlots,
    pub driver_version: CString,
    pub nvml_version: CString,
}

/// The loaded node: null, or a leaked `Box<Runtime>` that only [`unload`] frees.
static LOADED: AtomicPtr<Runtime> = AtomicPtr::new(std::ptr::null_mut());
static INIT_COUNT: AtomicU32 = AtomicU32::new(0);
static LOAD_LOCK: Mutex<()> = Mutex::new(());

/// `nvmlInit*`: loads the node on first use, then counts one more user. The count changes only
/// under the load lock, so that the first init after the last shutdown and that shutdown's
/// release of the state file never interleave.
pub(crate) fn init() -> Result<(), nvmlReturn_t> {
    crate::fork::register();
    let _serialized = lock_load();
    if LOADED.load(Ordering::Acquire).is_null() {
        let runtime = Runtime::load().map_err(|err| {
            eprintln!("fakegpu: nvmlInit failed: {err}");
            init_error_code(&err)
        })?;
        LOADED.store(Box::into_raw(Box::new(runtime)), Ordering::Release);
    } else if INIT_COUNT.load(Ordering::Acquire) == 0 {
        crate::live::reattach();
    }
    INIT_COUNT.fetch_add(1, Ordering::AcqRel);
    Ok(())
}

/// The lock that serializes loading the node (also taken around `fork()`).
pub(crate) fn lock_load() -> std::sync::MutexGuard<'static, ()> {
    LOAD_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// `nvmlShutdown`: one user fewer; UNINITIALIZED when nobody initialized. The last one frees
/// what no racing getter can still be using: the state file's mapping and the state read from
/// it (see `live::release`) and every event set (looked up as `Arc`s). The node tables that
/// handles point into stay until unload, so that a stale handle is refused, never dereferenced
/// after a free; they are reused by the next `nvmlInit`, so cycles do not grow memory.
pub(crate) fn shutdown() -> Result<(), nvmlReturn_t> {
    let _serialized = lock_load();
    let before = INIT_COUNT.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1)).map_err(|_| ret::UNINITIALIZED)?;
    if before == 1 {
        crate::live::release();
        crate::exports::events::clear_registry();
    }
    Ok(())
}

/// The loaded node, or UNINITIALIZED outside an init/shutdown pair.
#[inline]
pub(crate) fn runtime() -> Result<&'static Runtime, nvmlReturn_t> {
    if INIT_COUNT.load(Ordering::Acquire) == 0 {
        return Err(ret::UNINITIALIZED);
    }
    let ptr = LOADED.load(Ordering::Acquire);
    // SAFETY: a non-null pointer is a live Box that only `unload` frees, and `unload` runs
    // only when the library is being unmapped with no user left (count 0).
    unsafe { ptr.as_ref() }.ok_or(ret::UNINITIALIZED)
}

/// Frees everything the library allocated, when it is unloaded after its last shutdown.
/// With users left (a host exiting with NVML still initialized, other threads possibly
/// still inside it) nothing is freed: the process is ending and reclaims it anyway.
extern "C" fn unload() {
    if INIT_COUNT.load(Ordering::Acquire) != 0 {
        return;
    }
    let _serialized = lock_load();
    crate::exports::events::clear_registry();
    crate::live::free();
    crate::ffi::remove_panic_hook();
    let ptr = LOADED.swap(std::ptr::null_mut(), Ordering::AcqRel);
    if !ptr.is_null() {
        // SAFETY: `ptr` came from Box::into_raw in `init` and was just unpublished.
        drop(unsafe { Box::from_raw(ptr) });
    }
    // SAFETY: the library keeps no reference to a built-in profile (the node holds clones).
    unsafe { fakegpu_model::builtin::release_builtin_profiles() };
}

/// Runs `unload` when the shared library is unloaded (`dlclose`) or the process exits.
#[used]
#[link_section = ".fini_array"]
static UNLOAD: extern "C" fn() = unload;

/// A caller's device handle as one of our devices. Handles are addresses inside the
/// device table; anything else (NULL, stale, foreign) is INVALID_ARGUMENT and is never
/// dereferenced.
#[inline]
pub(crate) fn device(handle: nvmlDevice_t) -> Result<&'static Device, nvmlReturn_t> {
    let rt = runtime()?;
    let base = rt.devices.as_ptr() as usize;
    let offset = (handle as usize).wrapping_sub(base);
    let size = std::mem::size_of::<Device>();
    if !offset.is_multiple_of(size) || offset / size >= rt.devices.len() {
        // A MIG device is a device too, but only the getters that know it accept it.
        return Err(if rt.mig.device(handle).is_some() { ret::NOT_SUPPORTED } else { ret::INVALID_ARGUMENT });
    }
    let d = &rt.devices[offset / size];
    if crate::live::lost(d.host_index) {
        return Err(ret::GPU_IS_LOST);
    }
    Ok(d)
}

impl Runtime {
    fn load() -> Result<Runtime, ConfigError> {
        // Both the node and the state path come from one view of the environment, in which the
        // config beside this library stands for FAKEGPU_CONFIG when no variable is set.
        let env = config::library_env(crate::exports::system::nvmlInit_v2 as extern "C" fn() -> nvml_abi::nvmlReturn_t as usize)?;
        let spec = config::resolve(&env, &config::host_name())?;
        let node = SimulatedNode::new(spec);
        // As in a container: only the GPUs NVIDIA_VISIBLE_DEVICES names, renumbered from 0.
        // `node.gpus` keeps every GPU with its host index (find a device's by its UUID).
        let visible = visibility::container_view(
            std::env::var(visibility::ENV_NVIDIA_VISIBLE_DEVICES).ok().as_deref(),
            &node.spec.node_name,
            &node.gpus,
        );
        let devices = visible
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                let mut device = Device::new(&node.spec, node.gpus[v.host].clone());
                device.id.index = i as u32;
                device.mig_filter = v.mig;
                device
            })
            .collect();
        // A FIFO or device as the state would block or flood every reader: refuse it.
        let state_path = fakegpu_model::state_file::checked_state_path(&env)?;
        crate::live::init(&node.spec, state_path);
        let mig = crate::exports::mig::MigSlots::new(&node.spec);
        Ok(Runtime {
            mig,
            driver_version: cstring(&node.spec.driver_version),
            nvml_version: cstring(&node.spec.nvml_version()),
            devices,
            node,
        })
    }

    pub fn handle_of(&self, device: &Device) -> nvmlDevice_t {
        (device as *const Device).cast_mut().cast()
    }
}

/// Unreadable files mean there is no driver to talk to; contents that are wrong are an
/// invalid argument. Both come with a stderr line that names the file, key and reason.
fn init_error_code(err: &ConfigError) -> nvmlReturn_t {
    match err {
        ConfigError::Read { .. } | ConfigError::Profile(fakegpu_model::ProfileError::Read { .. }) => ret::DRIVER_NOT_LOADED,
        _ => ret::INVALID_ARGUMENT,
    }
}

pub(crate) fn cstring(text: &str) -> CString {
    CString::new(text.replace('\0', "")).expect("NULs removed")
}
