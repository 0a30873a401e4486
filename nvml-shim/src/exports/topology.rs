//! Where GPUs sit: CPU and memory affinity, PCIe common ancestors, nearest GPUs and
//! peer-to-peer status. A node's GPUs are split in two halves, one per NUMA node, as on
//! the two-socket servers these boards ship in.

use std::ffi::{c_uint, c_ulong};

use nvml_abi::consts::*;
use nvml_abi::{nvmlDevice_t, nvmlReturn_t, ret};

use crate::device::Device;
use crate::ffi::{guard, out, put, put_list, NvmlResult};
use crate::runtime::{device, runtime};

const BITS: usize = c_ulong::BITS as usize;

/// The CPUs of the host this process runs on, as the kernel reports them online.
fn online_cpus() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if n > 0 {
        n as usize
    } else {
        1
    }
}

/// Sets the bits of `d`'s NUMA half of the host CPUs in a caller bitmask of `words` longs.
unsafe fn write_cpu_mask(d: &Device, words: c_uint, set: *mut c_ulong) -> NvmlResult {
    if set.is_null() || words == 0 {
        return Err(ret::INVALID_ARGUMENT);
    }
    let mask = std::slice::from_raw_parts_mut(set, words as usize);
    mask.fill(0);
    let cpus = online_cpus();
    let halves = if cpus > 1 && runtime()?.devices.len() > 1 { 2 } else { 1 };
    let per_half = cpus / halves;
    let first = d.numa_node as usize % halves * per_half;
    for cpu in first..(first + per_half).min(mask.len() * BITS) {
        mask[cpu / BITS] |= 1 << (cpu % BITS);
    }
    Ok(())
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetCpuAffinity(dev: nvmlDevice_t, cpuSetSize: c_uint, cpuSet: *mut c_ulong) -> nvmlReturn_t {
    guard("nvmlDeviceGetCpuAffinity", || write_cpu_mask(device(dev)?, cpuSetSize, cpuSet))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetCpuAffinityWithinScope(
    dev: nvmlDevice_t,
    cpuSetSize: c_uint,
    cpuSet: *mut c_ulong,
    scope: c_uint,
) -> nvmlReturn_t {
    guard("nvmlDeviceGetCpuAffinityWithinScope", || {
        let d = device(dev)?;
        if scope > NVML_AFFINITY_SCOPE_SOCKET {
            return Err(ret::INVALID_ARGUMENT);
        }
        write_cpu_mask(d, cpuSetSize, cpuSet)
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMemoryAffinity(
    dev: nvmlDevice_t,
    nodeSetSize: c_uint,
    nodeSet: *mut c_ulong,
    scope: c_uint,
) -> nvmlReturn_t {
    guard("nvmlDeviceGetMemoryAffinity", || {
        let d = device(dev)?;
        if scope > NVML_AFFINITY_SCOPE_SOCKET || nodeSet.is_null() || nodeSetSize == 0 {
            return Err(ret::INVALID_ARGUMENT);
        }
        let mask = std::slice::from_raw_parts_mut(nodeSet, nodeSetSize as usize);
        mask.fill(0);
        mask[0] = 1 << d.numa_node;
        Ok(())
    })
}

/// The closest PCIe relation between two GPUs: GPUs of one half share a NUMA node, the
/// halves meet only across the CPU interconnect.
fn common_ancestor(a: &Device, b: &Device) -> c_uint {
    if a.id.index == b.id.index {
        NVML_TOPOLOGY_INTERNAL
    } else if a.numa_node == b.numa_node {
        NVML_TOPOLOGY_NODE
    } else {
        NVML_TOPOLOGY_SYSTEM
    }
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetTopologyCommonAncestor(
    device1: nvmlDevice_t,
    device2: nvmlDevice_t,
    pathInfo: *mut c_uint,
) -> nvmlReturn_t {
    guard("nvmlDeviceGetTopologyCommonAncestor", || put(pathInfo, common_ancestor(device(device1)?, device(device2)?)))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetTopologyNearestGpus(
    dev: nvmlDevice_t,
    level: c_uint,
    count: *mut c_uint,
    deviceArray: *mut nvmlDevice_t,
) -> nvmlReturn_t {
    guard("nvmlDeviceGetTopologyNearestGpus", || {
        let d = device(dev)?;
        let rt = runtime()?;
        if level > NVML_TOPOLOGY_SYSTEM || !level.is_multiple_of(10) {
            return Err(ret::INVALID_ARGUMENT);
        }
        let near: Vec<nvmlDevice_t> = rt
            .devices
            .iter()
            .filter(|other| other.id.index != d.id.index && common_ancestor(d, other) <= level)
            .map(|other| rt.handle_of(other))
            .collect();
        put_list(count, deviceArray, &near)
    })
}

/// PCIe peer access works between any two GPUs; NVLink is not modelled.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetP2PStatus(
    device1: nvmlDevice_t,
    device2: nvmlDevice_t,
    p2pIndex: c_uint,
    p2pStatus: *mut c_uint,
) -> nvmlReturn_t {
    guard("nvmlDeviceGetP2PStatus", || {
        let (a, b) = (device(device1)?, device(device2)?);
        let status = match p2pIndex {
            2 => NVML_P2P_STATUS_NOT_SUPPORTED,
            NVML_P2P_CAPS_INDEX_READ..=NVML_P2P_CAPS_INDEX_PROP if a.id.index != b.id.index => NVML_P2P_STATUS_OK,
            NVML_P2P_CAPS_INDEX_READ..=NVML_P2P_CAPS_INDEX_PROP => NVML_P2P_STATUS_NOT_SUPPORTED,
            // NVML_P2P_CAPS_INDEX_UNKNOWN answers NVML_P2P_STATUS_UNKNOWN (pynvml's test suite asks for it).
            5 => 6,
            _ => return Err(ret::INVALID_ARGUMENT),
        };
        put(p2pStatus, status)
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceOnSameBoard(device1: nvmlDevice_t, device2: nvmlDevice_t, onSameBoard: *mut c_uint) -> nvmlReturn_t {
    guard("nvmlDeviceOnSameBoard", || {
        let (a, b) = (device(device1)?, device(device2)?);
        let same = a.id.index == b.id.index || (a.profile.multi_gpu_board && a.id.index / 2 == b.id.index / 2);
        let slot = out(onSameBoard)?;
        *slot = same as c_uint;
        Ok(())
    })
}
