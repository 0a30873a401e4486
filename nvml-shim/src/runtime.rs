//! Process-wide state: the init reference count and the simulated node, loaded on the
//! first successful init and kept while the library is loaded so that device handles
//! stay valid across shutdown and re-init (they point into it). When the library is
//! unloaded (`dlclose`) after its last `nvmlShutdown`, a destructor frees the node, the
//! live state (its mapping and descriptor) and every event set, so that a host that loads
//! and unloads NVML repeatedly does not leak.
//!
//! The getters' hot path is one atomic load of the reference count plus one of the node
//! pointer; nothing here takes a lock after loading. The load lock is fork-safe (see `fork`).

use std::ffi::CString;
use std::sync::atomic::{AtomicPtr, AtomicU32, Ordering};
use std::sync::Mutex;

use fakegpu_model::{config, ConfigError, SimulatedNode};
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

/// `nvmlInit*`: loads the node on first use, then counts one more user.
pub(crate) fn init() -> Result<(), nvmlReturn_t> {
    if LOADED.load(Ordering::Acquire).is_null() {
        crate::fork::register();
        let _serialized = lock_load();
        if LOADED.load(Ordering::Acquire).is_null() {
            let runtime = Runtime::load().map_err(|err| {
                eprintln!("fakegpu: nvmlInit failed: {err}");
                init_error_code(&err)
            })?;
            LOADED.store(Box::into_raw(Box::new(runtime)), Ordering::Release);
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
        let spec = config::resolve(&config::process_env()?, &host_name())?;
        let node = SimulatedNode::new(spec);
        // As in a container: only the GPUs NVIDIA_VISIBLE_DEVICES names, renumbered from 0.
        // `node.gpus` keeps every GPU with its host index (find a device's by its UUID).
        let visible = visible_devices(std::env::var(ENV_VISIBLE_DEVICES).ok().as_deref(), &node.spec.node_name, &node.gpus);
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
        if let Some(path) = fakegpu_model::state_file::state_path(&|k| std::env::var(k).ok()) {
            // A FIFO or device as the state would block or flood every reader: refuse it.
            if let Err(fakegpu_model::file::ReadError::Refused(reason)) = fakegpu_model::file::check_regular(&path) {
                let origin = path.display().to_string();
                return Err(ConfigError::Invalid { origin, key: String::new(), reason: format!("live state file {reason}") });
            }
        }
        crate::live::init(&node.spec);
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

/// The variable the NVIDIA container runtime reads to pick a container's GPUs.
pub(crate) const ENV_VISIBLE_DEVICES: &str = "NVIDIA_VISIBLE_DEVICES";

/// One GPU `NVIDIA_VISIBLE_DEVICES` makes visible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Visible {
    /// Host index.
    pub host: usize,
    /// None: the whole GPU with all its MIG devices; Some: named only through MIG UUIDs,
    /// so only those MIG devices (GI id, CI id) show, as the container runtime exposes them.
    pub mig: Option<Vec<(u32, u32)>>,
}

/// The GPUs `NVIDIA_VISIBLE_DEVICES` makes visible, in the order it names them: unset, empty
/// or `all` = every GPU; `none`/`void` = none; otherwise a comma list of UUIDs (`GPU-…` or
/// `MIG-…`, any case) or indices. A MIG UUID brings its parent GPU with only that MIG device
/// (the parent's place is where it is first named); naming the GPU itself shows all of them.
/// Entries naming nothing on `node` are skipped, duplicates kept once.
pub(crate) fn visible_devices(value: Option<&str>, node: &str, gpus: &[fakegpu_model::GpuIdentity]) -> Vec<Visible> {
    let value = value.map(str::trim).unwrap_or("");
    match value {
        "" | "all" => return (0..gpus.len()).map(|host| Visible { host, mig: None }).collect(),
        "none" | "void" => return Vec::new(),
        _ => {}
    }
    let mut picked: Vec<Visible> = Vec::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let found = match entry.parse::<usize>() {
            Ok(index) => (index < gpus.len()).then_some((index, None)),
            Err(_) => gpus.iter().position(|g| g.uuid.eq_ignore_ascii_case(entry)).map(|h| (h, None)).or_else(|| {
                gpus.iter()
                    .enumerate()
                    .find_map(|(h, g)| fakegpu_model::mig::instance_of_uuid(node, &g.uuid, entry).map(|instance| (h, Some(instance))))
            }),
        };
        let Some((host, instance)) = found else { continue };
        match (picked.iter_mut().find(|v| v.host == host), instance) {
            (None, instance) => picked.push(Visible { host, mig: instance.map(|i| vec![i]) }),
            (Some(v), None) => v.mig = None,
            (Some(v), Some(i)) => {
                if let Some(list) = v.mig.as_mut().filter(|l| !l.contains(&i)) {
                    list.push(i);
                }
            }
        }
    }
    picked
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

fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it or truncates.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len() - 1) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use fakegpu_model::{mig, NodeSpec};

    #[test]
    fn mig_uuids_bring_their_parent_with_only_those_mig_devices() {
        let node = SimulatedNode::new(NodeSpec::builtin("h100", Some(4), "vis-node").unwrap());
        let g = &node.gpus;
        let m = |gpu: usize, gi: u32, ci: u32| mig::mig_uuid("vis-node", &g[gpu].uuid, gi, ci);
        let value = format!("{},{},{},{}", m(2, 7, 0), g[1].uuid, m(2, 9, 0).to_uppercase(), m(2, 7, 0));
        let v = visible_devices(Some(&value), "vis-node", g);
        assert_eq!(v, vec![Visible { host: 2, mig: Some(vec![(7, 0), (9, 0)]) }, Visible { host: 1, mig: None }]);
        // The GPU named as well: all its MIG devices show.
        let v = visible_devices(Some(&format!("{},{}", m(3, 1, 0), g[3].uuid)), "vis-node", g);
        assert_eq!(v, vec![Visible { host: 3, mig: None }]);
        // Another node's MIG UUID names nothing here.
        let other = mig::mig_uuid("elsewhere", &g[0].uuid, 7, 0);
        assert!(visible_devices(Some(&other), "vis-node", g).is_empty());
        assert_eq!(visible_devices(None, "vis-node", g).len(), 4);
    }
}
