//! Multi-Instance GPU: mode, GPU-instance and compute-instance profiles, lifecycle and MIG
//! device handles. The tables and rules are the model's (`fakegpu_model::mig`); the layout
//! lives in the live node state, so an instance created in one process is seen by the next.
//!
//! Handles: GPU instances, compute instances and MIG devices are addresses of fixed slots
//! in [`MigSlots`], one per (GPU, GI id[, CI id]), validated by address and then against
//! the current layout, so a handle of a destroyed instance is INVALID_ARGUMENT, never a
//! dangling pointer.

use std::ffi::{c_char, c_uint, CString};

use fakegpu_model::mig::{self, GiProfile, MigError, MigLayout, MAX_CI_ID, MAX_GI_ID};
use fakegpu_model::state::{self as model_state, NodeState, NO_INSTANCE};
use fakegpu_model::{state_file, NodeSpec};
use nvml_abi::consts::*;
use nvml_abi::{
    nvmlComputeInstanceInfo_t, nvmlComputeInstanceProfileInfo_t, nvmlComputeInstanceProfileInfo_v2, nvmlComputeInstanceProfileInfo_v2_t,
    nvmlComputeInstance_t, nvmlDeviceAttributes_t, nvmlDevice_t, nvmlGpuInstanceInfo_t, nvmlGpuInstancePlacement_t,
    nvmlGpuInstanceProfileInfo_t, nvmlGpuInstanceProfileInfo_v2, nvmlGpuInstanceProfileInfo_v2_t, nvmlGpuInstance_t, nvmlMemory_t,
    nvmlMemory_v2, nvmlMemory_v2_t, nvmlReturn_t, ret,
};

use crate::device::Device;
use crate::ffi::{fill_chars, guard, out, put, put_str, NvmlResult};
use crate::runtime::{device, runtime, Runtime};

const GIS: usize = MAX_GI_ID as usize + 1;
const CIS: usize = MAX_CI_ID as usize + 1;

/// What a GI / CI / MIG-device handle points at.
pub(crate) struct MigRef {
    /// Index in the device table.
    pub gpu: u32,
    pub gi: u32,
    pub ci: u32,
}

pub(crate) struct MigSlots {
    gis: Box<[MigRef]>,
    cis: Box<[MigRef]>,
    devs: Box<[MigRef]>,
}

fn slot_of(slots: &[MigRef], handle: usize) -> Option<&MigRef> {
    let base = slots.as_ptr() as usize;
    let size = std::mem::size_of::<MigRef>();
    let offset = handle.wrapping_sub(base);
    (offset.is_multiple_of(size) && offset / size < slots.len()).then(|| &slots[offset / size])
}

impl MigSlots {
    pub fn new(spec: &NodeSpec) -> MigSlots {
        let gpus = if spec.profile.mig_capable { spec.gpu_count } else { 0 };
        let gis = (0..gpus).flat_map(|g| (0..GIS as u32).map(move |gi| MigRef { gpu: g, gi, ci: 0 })).collect();
        let pairs =
            |_: ()| (0..gpus).flat_map(|g| (0..(GIS * CIS) as u32).map(move |k| MigRef { gpu: g, gi: k / CIS as u32, ci: k % CIS as u32 }));
        MigSlots { gis, cis: pairs(()).collect(), devs: pairs(()).collect() }
    }

    fn gi_handle(&self, gpu: u32, gi: u32) -> nvmlGpuInstance_t {
        (&self.gis[gpu as usize * GIS + gi as usize] as *const MigRef).cast_mut().cast()
    }
    fn ci_handle(&self, gpu: u32, gi: u32, ci: u32) -> nvmlComputeInstance_t {
        (&self.cis[(gpu as usize * GIS + gi as usize) * CIS + ci as usize] as *const MigRef).cast_mut().cast()
    }
    fn dev_handle(&self, gpu: u32, gi: u32, ci: u32) -> nvmlDevice_t {
        (&self.devs[(gpu as usize * GIS + gi as usize) * CIS + ci as usize] as *const MigRef).cast_mut().cast()
    }

    /// The MIG device a handle names (by address only).
    pub fn device(&self, handle: nvmlDevice_t) -> Option<&MigRef> {
        slot_of(&self.devs, handle as usize)
    }
}

/// The MIG layout of a device, from the live state.
fn layout(d: &Device) -> MigLayout {
    crate::live::with_gpu(d.host_index, |g| g.mig.clone()).unwrap_or_default()
}

fn code(e: MigError) -> nvmlReturn_t {
    e.nvml_code()
}

/// A parent device that supports MIG.
fn mig_parent(dev: nvmlDevice_t) -> Result<&'static Device, nvmlReturn_t> {
    let d = device(dev)?;
    if !d.profile.mig_capable {
        return Err(ret::NOT_SUPPORTED);
    }
    Ok(d)
}

/// Applies `change` to the GPU's layout in the state file (serialized with every other
/// writer) and returns its result.
fn update<T>(d: &Device, change: impl FnOnce(&NodeSpec, &mut MigLayout, bool) -> Result<T, MigError>) -> Result<T, nvmlReturn_t> {
    let rt = runtime()?;
    let Some(path) = crate::live::live().and_then(|l| l.path.clone()) else {
        eprintln!("fakegpu: MIG changes need a live state file (set FAKEGPU_STATE or FAKEGPU_CONFIG)");
        return Err(ret::NO_PERMISSION);
    };
    let spec = &rt.node.spec;
    let index = d.host_index;
    let result = state_file::update(&path, spec, |state: &mut NodeState| -> Result<T, MigChange> {
        let now = state_file::now();
        let busy = state.gpu(index).is_some_and(|g| !g.processes.is_empty());
        let before = state.gpu(index).map(|g| g.mig.clone()).unwrap_or_default();
        let mut layout = before.clone();
        let out = change(spec, &mut layout, busy).map_err(MigChange)?;
        if layout != before {
            state.gpu_mut(spec, index, now).map_err(|_| MigChange(MigError::NoSuchInstance(index)))?.mig = layout;
            state.push_event(index, model_state::event_type::MIG_CONFIG_CHANGE, 0, NO_INSTANCE, NO_INSTANCE, now);
        }
        Ok(out)
    });
    match result {
        Ok(v) => Ok(v),
        Err(state_file::UpdateError::Rejected(MigChange(e))) => Err(code(e)),
        Err(state_file::UpdateError::Invalid(e)) => {
            eprintln!("fakegpu: {e}");
            Err(ret::INVALID_ARGUMENT)
        }
        Err(state_file::UpdateError::File(e)) => {
            eprintln!("fakegpu: {e}");
            Err(ret::UNKNOWN)
        }
    }
}

#[derive(Debug)]
struct MigChange(MigError);
impl std::fmt::Display for MigChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}
impl std::error::Error for MigChange {}

const _: () = assert!(std::mem::size_of::<nvmlGpuInstanceProfileInfo_v2_t>() == 152);
const _: () = assert!(std::mem::size_of::<nvmlComputeInstanceProfileInfo_v2_t>() == 136);

fn gi_info_v1(p: &GiProfile) -> nvmlGpuInstanceProfileInfo_t {
    nvmlGpuInstanceProfileInfo_t {
        id: p.id,
        isP2pSupported: 0,
        sliceCount: p.compute_slices,
        instanceCount: p.instance_count,
        multiprocessorCount: p.multiprocessors,
        copyEngineCount: p.copy_engines,
        decoderCount: p.decoders,
        encoderCount: p.encoders,
        jpegCount: p.jpegs,
        ofaCount: p.ofas,
        memorySizeMB: p.memory_mib,
    }
}

fn gi_profile_by_id(d: &Device, profile_id: c_uint) -> Result<GiProfile, nvmlReturn_t> {
    mig::gi_profile_by_id(&d.profile, profile_id).ok_or(ret::INVALID_ARGUMENT)
}

// ---------------------------------------------------------------------------------------
// Mode.

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMigMode(dev: nvmlDevice_t, currentMode: *mut c_uint, pendingMode: *mut c_uint) -> nvmlReturn_t {
    guard("nvmlDeviceGetMigMode", || {
        let d = mig_parent(dev)?;
        let (current, pending) = (out(currentMode)?, out(pendingMode)?);
        let l = layout(d);
        (*current, *pending) = (l.current as c_uint, l.pending as c_uint);
        Ok(())
    })
}

/// Enables or disables MIG. An idle GPU switches at once (SUCCESS); with processes running
/// the mode stays pending and `activationStatus` says IN_USE, as a GPU that needs a reset does.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceSetMigMode(dev: nvmlDevice_t, mode: c_uint, activationStatus: *mut nvmlReturn_t) -> nvmlReturn_t {
    guard("nvmlDeviceSetMigMode", || {
        let d = mig_parent(dev)?;
        let status = out(activationStatus)?;
        if mode > NVML_DEVICE_MIG_ENABLE {
            return Err(ret::INVALID_ARGUMENT);
        }
        let active = update(d, |spec, l, busy| mig::set_mode(&spec.profile, l, mode == NVML_DEVICE_MIG_ENABLE, busy))?;
        *status = if active { ret::SUCCESS } else { ret::IN_USE };
        Ok(())
    })
}

/// The most MIG devices the GPU can have: 7 in MIG mode, 0 otherwise (NVML's documentation).
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMaxMigDeviceCount(dev: nvmlDevice_t, count: *mut c_uint) -> nvmlReturn_t {
    guard("nvmlDeviceGetMaxMigDeviceCount", || {
        let d = device(dev)?;
        let n = if d.profile.mig_capable && layout(d).current { mig::MAX_MIG_DEVICES } else { 0 };
        put(count, n)
    })
}

// ---------------------------------------------------------------------------------------
// GPU-instance profiles.

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetGpuInstanceProfileInfo(
    dev: nvmlDevice_t,
    profile: c_uint,
    info: *mut nvmlGpuInstanceProfileInfo_t,
) -> nvmlReturn_t {
    guard("nvmlDeviceGetGpuInstanceProfileInfo", || {
        let d = mig_parent(dev)?;
        let info = out(info)?;
        if profile >= mig::GI_PROFILE_COUNT {
            return Err(ret::INVALID_ARGUMENT);
        }
        let p = mig::gi_profile(&d.profile, profile).map_err(code)?;
        *info = gi_info_v1(&p);
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetGpuInstanceProfileInfoV(
    dev: nvmlDevice_t,
    profile: c_uint,
    info: *mut nvmlGpuInstanceProfileInfo_v2_t,
) -> nvmlReturn_t {
    guard("nvmlDeviceGetGpuInstanceProfileInfoV", || {
        let d = mig_parent(dev)?;
        let info = out(info)?;
        if info.version != nvmlGpuInstanceProfileInfo_v2 {
            return Err(ret::ARGUMENT_VERSION_MISMATCH);
        }
        if profile >= mig::GI_PROFILE_COUNT {
            return Err(ret::INVALID_ARGUMENT);
        }
        let p = mig::gi_profile(&d.profile, profile).map_err(code)?;
        let v1 = gi_info_v1(&p);
        info.id = v1.id;
        info.isP2pSupported = v1.isP2pSupported;
        info.sliceCount = v1.sliceCount;
        info.instanceCount = v1.instanceCount;
        info.multiprocessorCount = v1.multiprocessorCount;
        info.copyEngineCount = v1.copyEngineCount;
        info.decoderCount = v1.decoderCount;
        info.encoderCount = v1.encoderCount;
        info.jpegCount = v1.jpegCount;
        info.ofaCount = v1.ofaCount;
        info.memorySizeMB = v1.memorySizeMB;
        fill_chars(&mut info.name, &format!("MIG {}", p.name));
        Ok(())
    })
}

unsafe fn placements(dev: nvmlDevice_t, profile_id: c_uint, list: *mut nvmlGpuInstancePlacement_t, count: *mut c_uint) -> NvmlResult {
    let d = mig_parent(dev)?;
    let p = gi_profile_by_id(d, profile_id)?;
    let items: Vec<nvmlGpuInstancePlacement_t> =
        p.placements.iter().map(|s| nvmlGpuInstancePlacement_t { start: *s, size: p.memory_slices }).collect();
    fill_list(count, list, &items)
}

/// NVML's placement lists: a NULL array asks for the count (SUCCESS), a short one is INSUFFICIENT_SIZE.
unsafe fn fill_list<T: Copy>(count: *mut c_uint, array: *mut T, items: &[T]) -> NvmlResult {
    let count = out(count)?;
    if array.is_null() {
        *count = items.len() as c_uint;
        return Ok(());
    }
    if (*count as usize) < items.len() {
        *count = items.len() as c_uint;
        return Err(ret::INSUFFICIENT_SIZE);
    }
    std::ptr::copy_nonoverlapping(items.as_ptr(), array, items.len());
    *count = items.len() as c_uint;
    Ok(())
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetGpuInstancePossiblePlacements(
    dev: nvmlDevice_t,
    profileId: c_uint,
    placements_: *mut nvmlGpuInstancePlacement_t,
    count: *mut c_uint,
) -> nvmlReturn_t {
    guard("nvmlDeviceGetGpuInstancePossiblePlacements", || placements(dev, profileId, placements_, count))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetGpuInstancePossiblePlacements_v2(
    dev: nvmlDevice_t,
    profileId: c_uint,
    placements_: *mut nvmlGpuInstancePlacement_t,
    count: *mut c_uint,
) -> nvmlReturn_t {
    guard("nvmlDeviceGetGpuInstancePossiblePlacements_v2", || placements(dev, profileId, placements_, count))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetGpuInstanceRemainingCapacity(
    dev: nvmlDevice_t,
    profileId: c_uint,
    count: *mut c_uint,
) -> nvmlReturn_t {
    guard("nvmlDeviceGetGpuInstanceRemainingCapacity", || {
        let d = mig_parent(dev)?;
        let p = gi_profile_by_id(d, profileId)?;
        let l = layout(d);
        if !l.current {
            return Err(ret::NOT_SUPPORTED);
        }
        put(count, mig::remaining_capacity(&d.profile, &l, p.index).map_err(code)?)
    })
}

// ---------------------------------------------------------------------------------------
// GPU instances.

fn table_index(rt: &Runtime, d: &Device) -> u32 {
    d.id.index.min(rt.devices.len() as u32)
}

unsafe fn create_gi(dev: nvmlDevice_t, profile_id: c_uint, start: Option<u32>, gi: *mut nvmlGpuInstance_t) -> NvmlResult {
    let rt = runtime()?;
    let d = mig_parent(dev)?;
    let slot = out(gi)?;
    let p = gi_profile_by_id(d, profile_id)?;
    if !layout(d).current {
        return Err(ret::NOT_SUPPORTED);
    }
    let id = update(d, |spec, l, _| mig::create_gpu_instance(&spec.profile, l, p.index, start))?;
    *slot = rt.mig.gi_handle(table_index(rt, d), id);
    Ok(())
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceCreateGpuInstance(
    dev: nvmlDevice_t,
    profileId: c_uint,
    gpuInstance: *mut nvmlGpuInstance_t,
) -> nvmlReturn_t {
    guard("nvmlDeviceCreateGpuInstance", || create_gi(dev, profileId, None, gpuInstance))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceCreateGpuInstanceWithPlacement(
    dev: nvmlDevice_t,
    profileId: c_uint,
    placement: *const nvmlGpuInstancePlacement_t,
    gpuInstance: *mut nvmlGpuInstance_t,
) -> nvmlReturn_t {
    guard("nvmlDeviceCreateGpuInstanceWithPlacement", || {
        let at = placement.as_ref().ok_or(ret::INVALID_ARGUMENT)?;
        let d = mig_parent(dev)?;
        let p = gi_profile_by_id(d, profileId)?;
        if at.size != p.memory_slices {
            return Err(ret::INVALID_ARGUMENT);
        }
        create_gi(dev, profileId, Some(at.start), gpuInstance)
    })
}

/// A GI handle that names an existing GPU instance: (device, its layout, the GI).
fn gpu_instance(handle: nvmlGpuInstance_t) -> Result<(&'static Device, MigLayout, mig::GpuInstance), nvmlReturn_t> {
    let rt = runtime()?;
    let r = slot_of(&rt.mig.gis, handle as usize).ok_or(ret::INVALID_ARGUMENT)?;
    let d = rt.devices.get(r.gpu as usize).ok_or(ret::INVALID_ARGUMENT)?;
    if crate::live::lost(d.host_index) {
        return Err(ret::GPU_IS_LOST);
    }
    let l = layout(d);
    let gi = l.gpu_instances.iter().find(|g| g.id == r.gi).cloned().filter(|_| l.current).ok_or(ret::INVALID_ARGUMENT)?;
    Ok((d, l, gi))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlGpuInstanceDestroy(gpuInstance: nvmlGpuInstance_t) -> nvmlReturn_t {
    guard("nvmlGpuInstanceDestroy", || {
        let (d, _, gi) = gpu_instance(gpuInstance)?;
        let busy = crate::live::with_gpu(d.host_index, |g| g.processes.iter().any(|p| p.gpu_instance_id == Some(gi.id))).unwrap_or(false);
        if busy {
            return Err(ret::IN_USE);
        }
        update(d, |_, l, _| mig::destroy_gpu_instance(l, gi.id))
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetGpuInstances(
    dev: nvmlDevice_t,
    profileId: c_uint,
    gpuInstances: *mut nvmlGpuInstance_t,
    count: *mut c_uint,
) -> nvmlReturn_t {
    guard("nvmlDeviceGetGpuInstances", || {
        let rt = runtime()?;
        let d = mig_parent(dev)?;
        let p = gi_profile_by_id(d, profileId)?;
        let count = out(count)?;
        if gpuInstances.is_null() {
            return Err(ret::INVALID_ARGUMENT);
        }
        let l = layout(d);
        if !l.current {
            return Err(ret::NOT_SUPPORTED);
        }
        let items: Vec<nvmlGpuInstance_t> =
            l.gpu_instances.iter().filter(|g| g.profile == p.index).map(|g| rt.mig.gi_handle(table_index(rt, d), g.id)).collect();
        // The caller's array must hold the profile's instance count (NVML's documentation).
        // `count` is output only: the caller's array holds the profile's instance count.
        std::ptr::copy_nonoverlapping(items.as_ptr(), gpuInstances, items.len());
        *count = items.len() as c_uint;
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetGpuInstanceById(dev: nvmlDevice_t, id: c_uint, gpuInstance: *mut nvmlGpuInstance_t) -> nvmlReturn_t {
    guard("nvmlDeviceGetGpuInstanceById", || {
        let rt = runtime()?;
        let d = mig_parent(dev)?;
        let slot = out(gpuInstance)?;
        let l = layout(d);
        if !l.current {
            return Err(ret::NOT_SUPPORTED);
        }
        if id > MAX_GI_ID {
            return Err(ret::INVALID_ARGUMENT);
        }
        l.gpu_instances.iter().find(|g| g.id == id).ok_or(ret::NOT_FOUND)?;
        *slot = rt.mig.gi_handle(table_index(rt, d), id);
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlGpuInstanceGetInfo(gpuInstance: nvmlGpuInstance_t, info: *mut nvmlGpuInstanceInfo_t) -> nvmlReturn_t {
    guard("nvmlGpuInstanceGetInfo", || {
        let rt = runtime()?;
        let (d, _, gi) = gpu_instance(gpuInstance)?;
        let info = out(info)?;
        let p = mig::gi_profile(&d.profile, gi.profile).map_err(code)?;
        *info = nvmlGpuInstanceInfo_t {
            device: rt.handle_of(d),
            id: gi.id,
            profileId: p.id,
            placement: nvmlGpuInstancePlacement_t { start: gi.placement.start, size: gi.placement.size },
        };
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------
// Compute instances.

fn ci_profile_of(d: &Device, gi: &mig::GpuInstance, profile: c_uint) -> Result<(GiProfile, mig::CiProfile), nvmlReturn_t> {
    let gp = mig::gi_profile(&d.profile, gi.profile).map_err(code)?;
    if profile >= mig::CI_PROFILE_COUNT {
        return Err(ret::INVALID_ARGUMENT);
    }
    let cp = mig::ci_profile(&gp, profile).map_err(|_| ret::NOT_SUPPORTED)?;
    Ok((gp, cp))
}

fn ci_info_v1(gp: &GiProfile, cp: &mig::CiProfile) -> nvmlComputeInstanceProfileInfo_t {
    nvmlComputeInstanceProfileInfo_t {
        id: cp.index,
        sliceCount: cp.slices,
        instanceCount: cp.instance_count,
        multiprocessorCount: cp.multiprocessors,
        sharedCopyEngineCount: gp.copy_engines,
        sharedDecoderCount: gp.decoders,
        sharedEncoderCount: gp.encoders,
        sharedJpegCount: gp.jpegs,
        sharedOfaCount: gp.ofas,
    }
}

/// Only the shared engine profile exists (`NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED` = 0).
fn check_engine_profile(eng: c_uint) -> NvmlResult {
    if eng != 0 {
        return Err(ret::NOT_SUPPORTED);
    }
    Ok(())
}

#[no_mangle]
pub unsafe extern "C" fn nvmlGpuInstanceGetComputeInstanceProfileInfo(
    gpuInstance: nvmlGpuInstance_t,
    profile: c_uint,
    engProfile: c_uint,
    info: *mut nvmlComputeInstanceProfileInfo_t,
) -> nvmlReturn_t {
    guard("nvmlGpuInstanceGetComputeInstanceProfileInfo", || {
        let (d, _, gi) = gpu_instance(gpuInstance)?;
        let info = out(info)?;
        check_engine_profile(engProfile)?;
        let (gp, cp) = ci_profile_of(d, &gi, profile)?;
        *info = ci_info_v1(&gp, &cp);
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlGpuInstanceGetComputeInstanceProfileInfoV(
    gpuInstance: nvmlGpuInstance_t,
    profile: c_uint,
    engProfile: c_uint,
    info: *mut nvmlComputeInstanceProfileInfo_v2_t,
) -> nvmlReturn_t {
    guard("nvmlGpuInstanceGetComputeInstanceProfileInfoV", || {
        let (d, _, gi) = gpu_instance(gpuInstance)?;
        let info = out(info)?;
        if info.version != nvmlComputeInstanceProfileInfo_v2 {
            return Err(ret::ARGUMENT_VERSION_MISMATCH);
        }
        check_engine_profile(engProfile)?;
        let (gp, cp) = ci_profile_of(d, &gi, profile)?;
        let v1 = ci_info_v1(&gp, &cp);
        info.id = v1.id;
        info.sliceCount = v1.sliceCount;
        info.instanceCount = v1.instanceCount;
        info.multiprocessorCount = v1.multiprocessorCount;
        info.sharedCopyEngineCount = v1.sharedCopyEngineCount;
        info.sharedDecoderCount = v1.sharedDecoderCount;
        info.sharedEncoderCount = v1.sharedEncoderCount;
        info.sharedJpegCount = v1.sharedJpegCount;
        info.sharedOfaCount = v1.sharedOfaCount;
        fill_chars(&mut info.name, &format!("MIG {}", cp.name));
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlGpuInstanceGetComputeInstanceRemainingCapacity(
    gpuInstance: nvmlGpuInstance_t,
    profileId: c_uint,
    count: *mut c_uint,
) -> nvmlReturn_t {
    guard("nvmlGpuInstanceGetComputeInstanceRemainingCapacity", || {
        let (d, l, gi) = gpu_instance(gpuInstance)?;
        ci_profile_of(d, &gi, profileId)?;
        put(count, mig::ci_remaining_capacity(&d.profile, &l, gi.id, profileId).map_err(code)?)
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlGpuInstanceGetComputeInstancePossiblePlacements(
    gpuInstance: nvmlGpuInstance_t,
    profileId: c_uint,
    placements_: *mut nvmlGpuInstancePlacement_t,
    count: *mut c_uint,
) -> nvmlReturn_t {
    guard("nvmlGpuInstanceGetComputeInstancePossiblePlacements", || {
        let (d, _, gi) = gpu_instance(gpuInstance)?;
        let (_, cp) = ci_profile_of(d, &gi, profileId)?;
        let items: Vec<nvmlGpuInstancePlacement_t> =
            cp.placements.iter().map(|s| nvmlGpuInstancePlacement_t { start: *s, size: cp.slices }).collect();
        fill_list(count, placements_, &items)
    })
}

unsafe fn create_ci(gpuInstance: nvmlGpuInstance_t, profile_id: c_uint, start: Option<u32>, ci: *mut nvmlComputeInstance_t) -> NvmlResult {
    let rt = runtime()?;
    let (d, _, gi) = gpu_instance(gpuInstance)?;
    let slot = out(ci)?;
    ci_profile_of(d, &gi, profile_id)?;
    let id = update(d, |spec, l, _| mig::create_compute_instance(&spec.profile, l, gi.id, profile_id, start))?;
    *slot = rt.mig.ci_handle(table_index(rt, d), gi.id, id);
    Ok(())
}

#[no_mangle]
pub unsafe extern "C" fn nvmlGpuInstanceCreateComputeInstance(
    gpuInstance: nvmlGpuInstance_t,
    profileId: c_uint,
    computeInstance: *mut nvmlComputeInstance_t,
) -> nvmlReturn_t {
    guard("nvmlGpuInstanceCreateComputeInstance", || create_ci(gpuInstance, profileId, None, computeInstance))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlGpuInstanceCreateComputeInstanceWithPlacement(
    gpuInstance: nvmlGpuInstance_t,
    profileId: c_uint,
    placement: *const nvmlGpuInstancePlacement_t,
    computeInstance: *mut nvmlComputeInstance_t,
) -> nvmlReturn_t {
    guard("nvmlGpuInstanceCreateComputeInstanceWithPlacement", || {
        let at = placement.as_ref().ok_or(ret::INVALID_ARGUMENT)?;
        create_ci(gpuInstance, profileId, Some(at.start), computeInstance)
    })
}

/// A CI handle that names an existing compute instance.
fn compute_instance(handle: nvmlComputeInstance_t) -> Result<(&'static Device, mig::GpuInstance, mig::ComputeInstance), nvmlReturn_t> {
    let rt = runtime()?;
    let r = slot_of(&rt.mig.cis, handle as usize).ok_or(ret::INVALID_ARGUMENT)?;
    let (d, _, gi) = gpu_instance(rt.mig.gi_handle(r.gpu, r.gi))?;
    let ci = gi.compute_instances.iter().find(|c| c.id == r.ci).cloned().ok_or(ret::INVALID_ARGUMENT)?;
    Ok((d, gi, ci))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlComputeInstanceDestroy(computeInstance: nvmlComputeInstance_t) -> nvmlReturn_t {
    guard("nvmlComputeInstanceDestroy", || {
        let (d, gi, ci) = compute_instance(computeInstance)?;
        let busy = crate::live::with_gpu(d.host_index, |g| {
            g.processes.iter().any(|p| p.gpu_instance_id == Some(gi.id) && p.compute_instance_id == Some(ci.id))
        })
        .unwrap_or(false);
        if busy {
            return Err(ret::IN_USE);
        }
        update(d, |_, l, _| mig::destroy_compute_instance(l, gi.id, ci.id))
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlGpuInstanceGetComputeInstances(
    gpuInstance: nvmlGpuInstance_t,
    profileId: c_uint,
    computeInstances: *mut nvmlComputeInstance_t,
    count: *mut c_uint,
) -> nvmlReturn_t {
    guard("nvmlGpuInstanceGetComputeInstances", || {
        let rt = runtime()?;
        let (d, _, gi) = gpu_instance(gpuInstance)?;
        ci_profile_of(d, &gi, profileId)?;
        let count = out(count)?;
        if computeInstances.is_null() {
            return Err(ret::INVALID_ARGUMENT);
        }
        let items: Vec<nvmlComputeInstance_t> = gi
            .compute_instances
            .iter()
            .filter(|c| c.profile == profileId)
            .map(|c| rt.mig.ci_handle(table_index(rt, d), gi.id, c.id))
            .collect();
        // `count` is output only: the caller's array holds the profile's instance count.
        std::ptr::copy_nonoverlapping(items.as_ptr(), computeInstances, items.len());
        *count = items.len() as c_uint;
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlGpuInstanceGetComputeInstanceById(
    gpuInstance: nvmlGpuInstance_t,
    id: c_uint,
    computeInstance: *mut nvmlComputeInstance_t,
) -> nvmlReturn_t {
    guard("nvmlGpuInstanceGetComputeInstanceById", || {
        let rt = runtime()?;
        let (d, _, gi) = gpu_instance(gpuInstance)?;
        let slot = out(computeInstance)?;
        if id > MAX_CI_ID {
            return Err(ret::INVALID_ARGUMENT);
        }
        gi.compute_instances.iter().find(|c| c.id == id).ok_or(ret::NOT_FOUND)?;
        *slot = rt.mig.ci_handle(table_index(rt, d), gi.id, id);
        Ok(())
    })
}

unsafe fn ci_info(handle: nvmlComputeInstance_t, info: *mut nvmlComputeInstanceInfo_t) -> NvmlResult {
    let rt = runtime()?;
    let (d, gi, ci) = compute_instance(handle)?;
    let info = out(info)?;
    *info = nvmlComputeInstanceInfo_t {
        device: rt.handle_of(d),
        gpuInstance: rt.mig.gi_handle(table_index(rt, d), gi.id),
        id: ci.id,
        profileId: ci.profile,
        placement: nvmlGpuInstancePlacement_t { start: ci.placement.start, size: ci.placement.size },
    };
    Ok(())
}

#[no_mangle]
pub unsafe extern "C" fn nvmlComputeInstanceGetInfo(
    computeInstance: nvmlComputeInstance_t,
    info: *mut nvmlComputeInstanceInfo_t,
) -> nvmlReturn_t {
    guard("nvmlComputeInstanceGetInfo", || ci_info(computeInstance, info))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlComputeInstanceGetInfo_v2(
    computeInstance: nvmlComputeInstance_t,
    info: *mut nvmlComputeInstanceInfo_t,
) -> nvmlReturn_t {
    guard("nvmlComputeInstanceGetInfo_v2", || ci_info(computeInstance, info))
}

// ---------------------------------------------------------------------------------------
// MIG devices.

/// A MIG device handle that names an existing MIG device: (parent, GI, CI).
pub(crate) fn mig_device(handle: nvmlDevice_t) -> Result<(&'static Device, mig::GpuInstance, mig::ComputeInstance), nvmlReturn_t> {
    let rt = runtime()?;
    let r = rt.mig.device(handle).ok_or(ret::INVALID_ARGUMENT)?;
    compute_instance(rt.mig.ci_handle(r.gpu, r.gi, r.ci))
}

/// Whether `handle` is a MIG device handle at all (by address).
pub(crate) fn is_mig_handle(handle: nvmlDevice_t) -> bool {
    runtime().is_ok_and(|rt| rt.mig.device(handle).is_some())
}

/// The handle of the MIG device whose UUID is `uuid` (case-insensitive), among those this
/// process may see; `None` when no such MIG device exists now.
pub(crate) fn mig_handle_by_uuid(uuid: &str) -> Result<Option<nvmlDevice_t>, nvmlReturn_t> {
    let rt = runtime()?;
    for d in rt.devices.iter().filter(|d| d.profile.mig_capable) {
        let l = layout(d);
        if !l.current {
            continue;
        }
        if let Some((gi, ci)) = visible_mig_devices(d, &l).into_iter().find(|(gi, ci)| mig_uuid(d, *gi, *ci).eq_ignore_ascii_case(uuid)) {
            return Ok(Some(rt.mig.dev_handle(table_index(rt, d), gi, ci)));
        }
    }
    Ok(None)
}

/// `MIG-<uuid>`: the model's, so the kubelet plugins hand pods the UUIDs this library reports.
pub(crate) fn mig_uuid(d: &Device, gi: u32, ci: u32) -> String {
    let rt = runtime().ok();
    let node = rt.map_or("", |r| r.node.spec.node_name.as_str());
    mig::mig_uuid(node, &d.id.uuid, gi, ci)
}

/// The MIG devices of `d` this process may see, in NVML order: all of them, or only those
/// `NVIDIA_VISIBLE_DEVICES` named by MIG UUID (as in a container given MIG devices).
fn visible_mig_devices(d: &Device, layout: &MigLayout) -> Vec<(u32, u32)> {
    let all = mig::mig_devices(layout);
    match &d.mig_filter {
        None => all,
        Some(allowed) => all.into_iter().filter(|p| allowed.contains(p)).collect(),
    }
}

/// The name NVML gives a MIG device: the board's name and the CI profile, e.g.
/// `NVIDIA A100-SXM4-40GB MIG 3g.20gb`.
pub(crate) fn mig_name(d: &Device, gi: &mig::GpuInstance, ci: &mig::ComputeInstance) -> String {
    let name = mig::gi_profile(&d.profile, gi.profile)
        .ok()
        .and_then(|gp| mig::ci_profile(&gp, ci.profile).ok())
        .map_or_else(String::new, |cp| cp.name);
    format!("{} MIG {}", d.profile.product_name, name)
}

/// Memory of a MIG device: its GI's, used by the processes on the GI.
pub(crate) fn mig_memory(d: &Device, gi: &mig::GpuInstance) -> (u64, u64) {
    let total = mig::gi_profile(&d.profile, gi.profile).map_or(0, |p| p.memory_mib) * fakegpu_model::telemetry::MIB;
    let used = crate::live::with_gpu(d.host_index, |g| {
        g.processes.iter().filter(|p| p.gpu_instance_id == Some(gi.id)).map(|p| p.used_memory_bytes).sum::<u64>()
    })
    .unwrap_or(0);
    (total, used.min(total))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceIsMigDeviceHandle(dev: nvmlDevice_t, isMigDevice: *mut c_uint) -> nvmlReturn_t {
    guard("nvmlDeviceIsMigDeviceHandle", || {
        if is_mig_handle(dev) {
            mig_device(dev)?;
            return put(isMigDevice, 1);
        }
        device(dev)?;
        put(isMigDevice, 0)
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMigDeviceHandleByIndex(
    dev: nvmlDevice_t,
    index: c_uint,
    migDevice: *mut nvmlDevice_t,
) -> nvmlReturn_t {
    guard("nvmlDeviceGetMigDeviceHandleByIndex", || {
        let rt = runtime()?;
        let d = device(dev)?;
        let slot = out(migDevice)?;
        if !d.profile.mig_capable {
            return Err(ret::NOT_SUPPORTED);
        }
        let l = layout(d);
        if !l.current {
            return Err(ret::INVALID_ARGUMENT);
        }
        if index >= mig::MAX_MIG_DEVICES {
            return Err(ret::INVALID_ARGUMENT);
        }
        let (gi, ci) = *visible_mig_devices(d, &l).get(index as usize).ok_or(ret::NOT_FOUND)?;
        *slot = rt.mig.dev_handle(table_index(rt, d), gi, ci);
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetDeviceHandleFromMigDeviceHandle(migDevice: nvmlDevice_t, dev: *mut nvmlDevice_t) -> nvmlReturn_t {
    guard("nvmlDeviceGetDeviceHandleFromMigDeviceHandle", || {
        let rt = runtime()?;
        let slot = out(dev)?;
        if !is_mig_handle(migDevice) {
            device(migDevice)?;
            return Err(ret::INVALID_ARGUMENT);
        }
        let (d, _, _) = mig_device(migDevice)?;
        *slot = rt.handle_of(d);
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetGpuInstanceId(dev: nvmlDevice_t, id: *mut c_uint) -> nvmlReturn_t {
    guard("nvmlDeviceGetGpuInstanceId", || {
        if !is_mig_handle(dev) {
            device(dev)?;
            out(id)?;
            return Err(ret::NOT_SUPPORTED);
        }
        let (_, gi, _) = mig_device(dev)?;
        put(id, gi.id)
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetComputeInstanceId(dev: nvmlDevice_t, id: *mut c_uint) -> nvmlReturn_t {
    guard("nvmlDeviceGetComputeInstanceId", || {
        if !is_mig_handle(dev) {
            device(dev)?;
            out(id)?;
            return Err(ret::NOT_SUPPORTED);
        }
        let (_, _, ci) = mig_device(dev)?;
        put(id, ci.id)
    })
}

unsafe fn attributes(dev: nvmlDevice_t, attrs: *mut nvmlDeviceAttributes_t) -> NvmlResult {
    if !is_mig_handle(dev) {
        device(dev)?;
        out(attrs)?;
        return Err(ret::NOT_SUPPORTED);
    }
    let (d, gi, ci) = mig_device(dev)?;
    let gp = mig::gi_profile(&d.profile, gi.profile).map_err(code)?;
    let cp = mig::ci_profile(&gp, ci.profile).map_err(code)?;
    let a = mig::attributes(&gp, &cp);
    put(
        attrs,
        nvmlDeviceAttributes_t {
            multiprocessorCount: a.multiprocessors,
            sharedCopyEngineCount: a.copy_engines,
            sharedDecoderCount: a.decoders,
            sharedEncoderCount: a.encoders,
            sharedJpgCount: a.jpegs,
            sharedOfaCount: a.ofas,
            gpuInstanceSliceCount: a.gpu_instance_slices,
            computeInstanceSliceCount: a.compute_instance_slices,
            memorySizeMB: a.memory_mib,
        },
    )
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetAttributes(dev: nvmlDevice_t, attrs: *mut nvmlDeviceAttributes_t) -> nvmlReturn_t {
    guard("nvmlDeviceGetAttributes", || attributes(dev, attrs))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetAttributes_v2(dev: nvmlDevice_t, attrs: *mut nvmlDeviceAttributes_t) -> nvmlReturn_t {
    guard("nvmlDeviceGetAttributes_v2", || attributes(dev, attrs))
}

// Getters other modules route MIG handles to.

/// `nvmlDeviceGetName` of a MIG device.
pub(crate) unsafe fn mig_get_name(dev: nvmlDevice_t, name: *mut c_char, length: c_uint) -> NvmlResult {
    let (d, gi, ci) = mig_device(dev)?;
    put_str(name, length, &CString::new(mig_name(d, &gi, &ci)).unwrap_or_default())
}

/// `nvmlDeviceGetUUID` of a MIG device.
pub(crate) unsafe fn mig_get_uuid(dev: nvmlDevice_t, uuid: *mut c_char, length: c_uint) -> NvmlResult {
    let (d, gi, ci) = mig_device(dev)?;
    put_str(uuid, length, &CString::new(mig_uuid(d, gi.id, ci.id)).unwrap_or_default())
}

/// `nvmlDeviceGetMemoryInfo` of a MIG device.
pub(crate) unsafe fn mig_get_memory(dev: nvmlDevice_t, memory: *mut nvmlMemory_t) -> NvmlResult {
    let (d, gi, _) = mig_device(dev)?;
    let (total, used) = mig_memory(d, &gi);
    put(memory, nvmlMemory_t { total, free: total - used, used })
}

/// `nvmlDeviceGetMemoryInfo_v2` of a MIG device.
pub(crate) unsafe fn mig_get_memory_v2(dev: nvmlDevice_t, memory: *mut nvmlMemory_v2_t) -> NvmlResult {
    let (d, gi, _) = mig_device(dev)?;
    let memory = out(memory)?;
    if memory.version != nvmlMemory_v2 {
        return Err(ret::ARGUMENT_VERSION_MISMATCH);
    }
    let (total, used) = mig_memory(d, &gi);
    *memory = nvmlMemory_v2_t { version: nvmlMemory_v2, total, reserved: 0, free: total - used, used };
    Ok(())
}

/// `nvmlDeviceGetIndex` of a MIG device: its index among its parent's MIG devices.
pub(crate) unsafe fn mig_get_index(dev: nvmlDevice_t, index: *mut c_uint) -> NvmlResult {
    let (d, gi, ci) = mig_device(dev)?;
    let pos = visible_mig_devices(d, &layout(d)).iter().position(|p| *p == (gi.id, ci.id)).ok_or(ret::INVALID_ARGUMENT)?;
    put(index, pos as c_uint)
}

/// `nvmlDeviceGetBAR1MemoryInfo` of a MIG device: its share of the BAR1 aperture, unused.
pub(crate) unsafe fn mig_get_bar1(dev: nvmlDevice_t, bar1: *mut nvml_abi::nvmlBAR1Memory_t) -> NvmlResult {
    let (d, gi, _) = mig_device(dev)?;
    let total =
        d.profile.memory.bar1_total_mib * u64::from(gi.placement.size) / u64::from(mig::MEMORY_SLICES) * fakegpu_model::telemetry::MIB;
    put(bar1, nvml_abi::nvmlBAR1Memory_t { bar1Total: total, bar1Free: total, bar1Used: 0 })
}
