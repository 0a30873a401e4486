//! Process-wide state: whether `cuInit` succeeded, and the simulated node it loaded (kept for
//! the life of the process). The node comes from `fakegpu_model::config` exactly as the fake
//! NVML loads it; the device table is the container's view (`NVIDIA_VISIBLE_DEVICES`) with
//! `CUDA_VISIBLE_DEVICES` applied on top, in CUDA's order.
//!
//! The getters' hot path is one relaxed load of the fork flag and one `OnceLock` read; nothing
//! here takes a lock after loading.

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

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
}

static LOADED: OnceLock<Runtime> = OnceLock::new();
static LOAD_LOCK: Mutex<()> = Mutex::new(());

/// `cuInit`: loads the node on first use; later calls succeed at once.
pub(crate) fn init(flags: u32) -> CuResult {
    if crate::fork::forked_after_init() {
        return Err(CUDA_ERROR_NOT_INITIALIZED);
    }
    if flags != 0 {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    if LOADED.get().is_none() {
        crate::fork::register();
        let _serialized = lock_load();
        if LOADED.get().is_none() {
            let runtime = Runtime::load().map_err(|err| {
                eprintln!("fakegpu: cuInit failed: {err}");
                init_error_code(&err)
            })?;
            let _ = LOADED.set(runtime);
        }
    }
    Ok(())
}

/// Whether `cuInit` succeeded in this process (or in the parent it was forked from).
pub(crate) fn initialized() -> bool {
    LOADED.get().is_some()
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
    LOADED.get().ok_or(CUDA_ERROR_NOT_INITIALIZED)
}

/// The device of ordinal `ordinal`; INVALID_DEVICE for anything else.
#[inline]
pub(crate) fn device(ordinal: CUdevice) -> CuResult<&'static Device> {
    let rt = runtime()?;
    usize::try_from(ordinal).ok().and_then(|i| rt.devices.get(i)).ok_or(CUDA_ERROR_INVALID_DEVICE)
}

impl Runtime {
    fn load() -> Result<Runtime, ConfigError> {
        let spec = config::resolve_for_process()?;
        let node = SimulatedNode::new(spec);
        let container =
            visibility::container_view(std::env::var(ENV_NVIDIA_VISIBLE_DEVICES).ok().as_deref(), &node.spec.node_name, &node.gpus);
        let uuids: Vec<&str> = container.iter().map(|v| node.gpus[v.host].uuid.as_str()).collect();
        let mig_parent = |uuid: &str| {
            container.iter().position(|v| mig::instance_of_uuid(&node.spec.node_name, &node.gpus[v.host].uuid, uuid).is_some())
        };
        let cuda_visible = std::env::var(ENV_CUDA_VISIBLE_DEVICES).ok();
        let picked = visibility::cuda_view(cuda_visible.as_deref(), &uuids, &mig_parent);
        let devices = picked
            .iter()
            .enumerate()
            .map(|(ordinal, &pos)| Device::new(&node.spec, node.gpus[container[pos].host].clone(), ordinal))
            .collect();
        let env = |k: &str| std::env::var(k).ok();
        Ok(Runtime {
            driver_version: cuda::driver_version(node.spec.cuda_driver_version),
            state_path: state_file::state_path(&env),
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
