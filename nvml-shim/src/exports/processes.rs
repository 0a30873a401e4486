//! Process lists in every layout NVML has had, per-process utilization, and encoder /
//! frame-buffer-capture sessions. A node without workloads lists nothing.

use std::ffi::c_uint;

use nvml_abi::{
    nvmlDevice_t, nvmlEncoderSessionInfo_t, nvmlFBCStats_t, nvmlProcessDetailList_v1, nvmlProcessDetailList_v1_t, nvmlProcessDetail_v1_t,
    nvmlProcessInfo_t, nvmlProcessInfo_v1_t, nvmlProcessUtilizationSample_t, nvmlReturn_t, ret,
};

use fakegpu_model::state::NO_INSTANCE;

use crate::device::Device;
use crate::ffi::{guard, out, put, put_list};
use crate::runtime::device;

/// Which list a query asks for.
#[derive(Clone, Copy)]
pub(crate) enum Kind {
    Compute,
    Graphics,
    MpsCompute,
}

/// The processes of `kind` running on the device, from the live node state.
pub(crate) fn processes(d: &Device, kind: Kind) -> Vec<nvmlProcessInfo_t> {
    crate::live::sweep_exited(d.host_index);
    crate::live::with_gpu(d.host_index, |g| {
        g.processes
            .iter()
            .filter(|p| match kind {
                Kind::Compute => p.kind.in_compute(),
                Kind::Graphics => p.kind.in_graphics(),
                Kind::MpsCompute => p.kind.in_mps(),
            })
            .map(|p| nvmlProcessInfo_t {
                pid: p.pid,
                usedGpuMemory: p.used_memory_bytes,
                gpuInstanceId: p.gpu_instance_id.unwrap_or(NO_INSTANCE),
                computeInstanceId: p.compute_instance_id.unwrap_or(NO_INSTANCE),
            })
            .collect()
    })
    .unwrap_or_default()
}

unsafe fn list_v1(name: &'static str, dev: nvmlDevice_t, count: *mut c_uint, infos: *mut nvmlProcessInfo_v1_t, kind: Kind) -> nvmlReturn_t {
    guard(name, || {
        let items: Vec<nvmlProcessInfo_v1_t> =
            processes(device(dev)?, kind).iter().map(|p| nvmlProcessInfo_v1_t { pid: p.pid, usedGpuMemory: p.usedGpuMemory }).collect();
        put_list(count, infos, &items)
    })
}

unsafe fn list_v2(name: &'static str, dev: nvmlDevice_t, count: *mut c_uint, infos: *mut nvmlProcessInfo_t, kind: Kind) -> nvmlReturn_t {
    guard(name, || put_list(count, infos, &processes(device(dev)?, kind)))
}

macro_rules! process_lists {
    ($kind:expr, $v1:ident, $v2:ident, $v3:ident) => {
        #[no_mangle]
        pub unsafe extern "C" fn $v1(dev: nvmlDevice_t, infoCount: *mut c_uint, infos: *mut nvmlProcessInfo_v1_t) -> nvmlReturn_t {
            list_v1(stringify!($v1), dev, infoCount, infos, $kind)
        }
        #[no_mangle]
        pub unsafe extern "C" fn $v2(dev: nvmlDevice_t, infoCount: *mut c_uint, infos: *mut nvmlProcessInfo_t) -> nvmlReturn_t {
            list_v2(stringify!($v2), dev, infoCount, infos, $kind)
        }
        #[no_mangle]
        pub unsafe extern "C" fn $v3(dev: nvmlDevice_t, infoCount: *mut c_uint, infos: *mut nvmlProcessInfo_t) -> nvmlReturn_t {
            list_v2(stringify!($v3), dev, infoCount, infos, $kind)
        }
    };
}

// The build script finds exports by the `extern "C" fn` text, so name each one here too:
// extern "C" fn nvmlDeviceGetComputeRunningProcesses, nvmlDeviceGetComputeRunningProcesses_v2, nvmlDeviceGetComputeRunningProcesses_v3
// extern "C" fn nvmlDeviceGetGraphicsRunningProcesses, nvmlDeviceGetGraphicsRunningProcesses_v2, nvmlDeviceGetGraphicsRunningProcesses_v3
// extern "C" fn nvmlDeviceGetMPSComputeRunningProcesses, nvmlDeviceGetMPSComputeRunningProcesses_v2, nvmlDeviceGetMPSComputeRunningProcesses_v3
process_lists!(
    Kind::Compute,
    nvmlDeviceGetComputeRunningProcesses,
    nvmlDeviceGetComputeRunningProcesses_v2,
    nvmlDeviceGetComputeRunningProcesses_v3
);
process_lists!(
    Kind::Graphics,
    nvmlDeviceGetGraphicsRunningProcesses,
    nvmlDeviceGetGraphicsRunningProcesses_v2,
    nvmlDeviceGetGraphicsRunningProcesses_v3
);
process_lists!(
    Kind::MpsCompute,
    nvmlDeviceGetMPSComputeRunningProcesses,
    nvmlDeviceGetMPSComputeRunningProcesses_v2,
    nvmlDeviceGetMPSComputeRunningProcesses_v3
);

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetRunningProcessDetailList(dev: nvmlDevice_t, plist: *mut nvmlProcessDetailList_v1_t) -> nvmlReturn_t {
    guard("nvmlDeviceGetRunningProcessDetailList", || {
        let d = device(dev)?;
        let list = out(plist)?;
        if list.version != nvmlProcessDetailList_v1 {
            return Err(ret::ARGUMENT_VERSION_MISMATCH);
        }
        let kind = match list.mode {
            0 => Kind::Compute,
            1 => Kind::Graphics,
            2 => Kind::MpsCompute,
            _ => return Err(ret::INVALID_ARGUMENT),
        };
        let items: Vec<nvmlProcessDetail_v1_t> = processes(d, kind)
            .iter()
            .map(|p| nvmlProcessDetail_v1_t {
                pid: p.pid,
                usedGpuMemory: p.usedGpuMemory,
                gpuInstanceId: p.gpuInstanceId,
                computeInstanceId: p.computeInstanceId,
                usedGpuCcProtectedMemory: 0,
            })
            .collect();
        put_list(&mut list.numProcArrayEntries, list.procArray, &items)
    })
}

/// No process has run, so there are no utilization samples.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetProcessUtilization(
    dev: nvmlDevice_t,
    utilization: *mut nvmlProcessUtilizationSample_t,
    processSamplesCount: *mut c_uint,
    _lastSeenTimeStamp: u64,
) -> nvmlReturn_t {
    guard("nvmlDeviceGetProcessUtilization", || {
        device(dev)?;
        let count = out(processSamplesCount)?;
        let _ = utilization;
        *count = 0;
        Err(ret::NOT_FOUND)
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetEncoderStats(
    dev: nvmlDevice_t,
    sessionCount: *mut c_uint,
    averageFps: *mut c_uint,
    averageLatency: *mut c_uint,
) -> nvmlReturn_t {
    guard("nvmlDeviceGetEncoderStats", || {
        device(dev)?;
        let outs = [sessionCount, averageFps, averageLatency];
        if outs.iter().any(|p| p.is_null()) {
            return Err(ret::INVALID_ARGUMENT);
        }
        outs.iter().for_each(|p| **p = 0);
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetEncoderSessions(
    dev: nvmlDevice_t,
    sessionCount: *mut c_uint,
    sessionInfos: *mut nvmlEncoderSessionInfo_t,
) -> nvmlReturn_t {
    guard("nvmlDeviceGetEncoderSessions", || {
        device(dev)?;
        put_list::<nvmlEncoderSessionInfo_t>(sessionCount, sessionInfos, &[])
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetFBCStats(dev: nvmlDevice_t, fbcStats: *mut nvmlFBCStats_t) -> nvmlReturn_t {
    guard("nvmlDeviceGetFBCStats", || {
        device(dev)?;
        put(fbcStats, nvmlFBCStats_t::default())
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetFBCSessions(dev: nvmlDevice_t, sessionCount: *mut c_uint, sessionInfo: *mut u8) -> nvmlReturn_t {
    guard("nvmlDeviceGetFBCSessions", || {
        device(dev)?;
        put_list::<u8>(sessionCount, sessionInfo, &[])
    })
}
