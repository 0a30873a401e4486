//! Process-wide state: the init reference count and the simulated node, loaded on the
//! first successful init and kept for the life of the process so that device handles
//! stay valid across shutdown and re-init (they point into it).
//!
//! The getters' hot path is one atomic load of the reference count plus a `OnceLock` read;
//! nothing here takes a lock after loading. The load lock is fork-safe (see `fork`).

use std::ffi::CString;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

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

static LOADED: OnceLock<Runtime> = OnceLock::new();
static INIT_COUNT: AtomicU32 = AtomicU32::new(0);
static LOAD_LOCK: Mutex<()> = Mutex::new(());

/// `nvmlInit*`: loads the node on first use, then counts one more user.
pub(crate) fn init() -> Result<(), nvmlReturn_t> {
    if LOADED.get().is_none() {
        crate::fork::register();
        let _serialized = lock_load();
        if LOADED.get().is_none() {
            let runtime = Runtime::load().map_err(|err| {
                eprintln!("fakegpu: nvmlInit failed: {err}");
                init_error_code(&err)
            })?;
            let _ = LOADED.set(runtime);
        }
    }
    INIT_COUNT.fetch_add(1, Ordering::AcqRel);
    Ok(())
}

/// The lock that serializes loading the node (also taken around `fork()`).
pub(crate) fn lock_load() -> std::sync::MutexGuard<'static, ()> {
    LOAD_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// `nvmlShutdown`: one user fewer; UNINITIALIZED when nobody initialized.
pub(crate) fn shutdown() -> Result<(), nvmlReturn_t> {
    INIT_COUNT.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1)).map(|_| ()).map_err(|_| ret::UNINITIALIZED)
}

/// The loaded node, or UNINITIALIZED outside an init/shutdown pair.
#[inline]
pub(crate) fn runtime() -> Result<&'static Runtime, nvmlReturn_t> {
    if INIT_COUNT.load(Ordering::Acquire) == 0 {
        return Err(ret::UNINITIALIZED);
    }
    LOADED.get().ok_or(ret::UNINITIALIZED)
}

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
        let spec = config::resolve_for_process()?;
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
        crate::live::init(node.gpus.len(), &node.spec.profile);
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
