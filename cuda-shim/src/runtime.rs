//! Process-wide state: whether `cuInit` succeeded, and the simulated node it loaded (kept for
//! the life of the process). The node comes from `fakegpu_model::config` exactly as the fake
//! NVML loads it; the device table is the container's view (`NVIDIA_VISIBLE_DEVICES`) with
//! `CUDA_VISIBLE_DEVICES` applied on top, in CUDA's order.
//!
//! The getters' hot path is one relaxed load of the fork flag and one atomic pointer load;
//! nothing here takes a lock after loading.
//!
//! CUDA has no shutdown: what `cuInit` loaded lives until the library is unloaded. Then a
//! destructor frees it all (node, device table, contexts, streams, events, allocations), so
//! that a host that loads and unloads libcuda repeatedly does not leak — unless a call is in
//! flight or a context is still live, which means the process is exiting while it uses CUDA:
//! then nothing is freed (the process reclaims it) so that no other thread reads freed memory.

use std::path::PathBuf;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::Mutex;

use fakegpu_model::visibility::{self, ENV_CUDA_VISIBLE_DEVICES, ENV_NVIDIA_VISIBLE_DEVICES};
use fakegpu_model::{config, cuda, mig, state_file, ConfigError, NodeSpec, SimulatedNode};

use crate::device::Device;
use crate::ffi::CuResult;
use crate::types::*;

pub(crate) struct Runtime {
    pub spec: NodeSpec,
    pub devices: Box<[Device]>,
    pub driver_version: i32,
    /// The live state file, where this process registers its contexts and allocations.
    pub state_path: Option<PathBuf>,
    pub pid: u32,
    pub pid_namespace: u64,
    /// The process name NVML lists (argv[0], as the driver reports it).
    pub process_name: String,
    /// Each device's primary context (its address is the handle).
    pub primaries: Box<[crate::context::Context]>,
    /// The live state as last read and validated (see `state_file::Follower`).
    pub state: Option<Mutex<state_file::Follower>>,
}

/// The loaded node: null, or a leaked `Box<Runtime>` that only [`unload`] frees.
static LOADED: AtomicPtr<Runtime> = AtomicPtr::new(std::ptr::null_mut());
static LOAD_LOCK: Mutex<()> = Mutex::new(());

/// `cuInit`: loads the node on first use; later calls succeed at once.
pub(crate) fn init(flags: u32) -> CuResult {
    if crate::fork::forked_after_init() {
        return Err(CUDA_ERROR_NOT_INITIALIZED);
    }
    if flags != 0 {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    if LOADED.load(Ordering::Acquire).is_null() {
        crate::fork::register();
        let _serialized = lock_load();
        if LOADED.load(Ordering::Acquire).is_null() {
            let runtime = Runtime::load().map_err(|err| {
                eprintln!("fakegpu: cuInit failed: {err}");
                init_error_code(&err)
            })?;
            LOADED.store(Box::into_raw(Box::new(runtime)), Ordering::Release);
        }
    }
    Ok(())
}

/// Whether `cuInit` succeeded in this process (or in the parent it was forked from).
pub(crate) fn initialized() -> bool {
    !LOADED.load(Ordering::Acquire).is_null()
}

/// The lock that serializes loading the node (also taken around `fork()`).
pub(crate) fn lock_load() -> std::sync::MutexGuard<'static, ()> {
    LOAD_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The loaded node, or NOT_INITIALIZED before `cuInit` and in a child forked after it.
#[inline]
pub(crate) fn runtime() -> CuResult<&'static Runtime> {
    if crate::fork::forked_after_init() {
        return Err(CUDA_ERROR_NOT_INITIALIZED);
    }
    // SAFETY: a non-null pointer is a live Box that only `unload` frees, with no call in flight.
    unsafe { LOADED.load(Ordering::Acquire).as_ref() }.ok_or(CUDA_ERROR_NOT_INITIALIZED)
}

/// Frees everything the library allocated, when it is unloaded (see the module doc for when
/// it frees nothing).
extern "C" fn unload() {
    if !crate::ffi::quiesce() || crate::context::any_live() {
        return;
    }
    let _serialized = lock_load();
    crate::exports::stream::free_all();
    crate::memory::free_all();
    crate::context::free_all();
    fakegpu_model::boundary::remove_panic_hook();
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

/// The device of ordinal `ordinal`; INVALID_DEVICE for anything else.
#[inline]
pub(crate) fn device(ordinal: CUdevice) -> CuResult<&'static Device> {
    let rt = runtime()?;
    usize::try_from(ordinal).ok().and_then(|i| rt.devices.get(i)).ok_or(CUDA_ERROR_INVALID_DEVICE)
}

impl Runtime {
    fn load() -> Result<Runtime, ConfigError> {
        // The same view of the environment as the fake NVML's, so that both find the same
        // config beside themselves in a driver root and agree on the node and its state.
        let env = config::library_env(crate::exports::init::cuInit as extern "C" fn(u32) -> CUresult as usize)?;
        let spec = config::resolve(&env, &config::host_name())?;
        let node = SimulatedNode::new(spec);
        let container =
            visibility::container_view(std::env::var(ENV_NVIDIA_VISIBLE_DEVICES).ok().as_deref(), &node.spec.node_name, &node.gpus);
        let uuids: Vec<&str> = container.iter().map(|v| node.gpus[v.host].uuid.as_str()).collect();
        let mig_parent = |uuid: &str| {
            container.iter().position(|v| mig::instance_of_uuid(&node.spec.node_name, &node.gpus[v.host].uuid, uuid).is_some())
        };
        let cuda_visible = std::env::var(ENV_CUDA_VISIBLE_DEVICES).ok();
        let picked = visibility::cuda_view(cuda_visible.as_deref(), &uuids, &mig_parent);
        let devices: Box<[Device]> = picked
            .iter()
            .enumerate()
            .map(|(ordinal, &pos)| Device::new(&node.spec, node.gpus[container[pos].host].clone(), ordinal))
            .collect();
        // A FIFO or device as the state would block or flood every reader: refuse it.
        let state_path = state_file::checked_state_path(&env)?;
        let primaries = crate::context::primary_table(devices.len());
        Ok(Runtime {
            driver_version: cuda::driver_version(node.spec.cuda_driver_version),
            state: state_path.clone().map(|p| Mutex::new(state_file::Follower::new(p, node.spec.clone()))),
            state_path,
            primaries,
            pid: std::process::id(),
            pid_namespace: state_file::pid_namespace(),
            process_name: process_name(),
            devices,
            spec: node.spec,
        })
    }
}

/// Unreadable files mean there is no GPU to talk to; contents that are wrong are an invalid
/// value. Both come with a stderr line that names the file, key and reason.
fn init_error_code(err: &ConfigError) -> CUresult {
    match err {
        ConfigError::Read { .. } | ConfigError::Profile(fakegpu_model::ProfileError::Read { .. }) => CUDA_ERROR_NO_DEVICE,
        _ => CUDA_ERROR_INVALID_VALUE,
    }
}

fn process_name() -> String {
    let cmdline = std::fs::read("/proc/self/cmdline").unwrap_or_default();
    let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
    let name = String::from_utf8_lossy(argv0).into_owned();
    if name.is_empty() {
        std::fs::read_to_string("/proc/self/comm").map(|c| c.trim_end().to_string()).unwrap_or_else(|_| "cuda".into())
    } else {
        name
    }
}
