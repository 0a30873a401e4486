//! Where GPUs sit: CPU and memory affinity, PCIe common ancestors, nearest GPUs and
//! peer-to-peer status. Each GPU's NUMA node and its CPUs come from the node's NUMA layout
//! (`fakegpu_model::numa`: the pool's `numa` zones, else two halves as on the two-socket
//! servers these boards ship in), the same layout the operator publishes.
//!
//! `nvmlDeviceGetNumaNodeId` is not exported: it is not a function of the 535 library this one
//! mirrors symbol for symbol, and NVIDIA answers it only where the GPU's memory is itself a NUMA
//! node (Grace Hopper). A GPU's NUMA node on a PCIe host is `nvmlDeviceGetMemoryAffinity`'s.

use std::ffi::{c_uint, c_ulong};

use nvml_abi::consts::*;
use nvml_abi::{nvmlDevice_t, nvmlReturn_t, ret};

use crate::device::Device;
use crate::ffi::{guard, out, put, put_list, NvmlResult};
use crate::runtime::{device, runtime};

const BITS: usize = c_ulong::BITS as usize;

/// Sets the bits of `d`'s NUMA node's CPUs in a caller bitmask of `words` longs (ids beyond
/// the mask are left out, as NVML truncates to the size asked for).
unsafe fn write_cpu_mask(d: &Device, words: c_uint, set: *mut c_ulong) -> NvmlResult {
    if set.is_null() || words == 0 {
        return Err(ret::INVALID_ARGUMENT);
    }
    let mask = std::slice::from_raw_parts_mut(set, words as usize);
    mask.fill(0);
    let end = d.cpus.end.min((mask.len() * BITS) as u64);
    for cpu in d.cpus.start..end {
        let cpu = cpu as usize;
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
        let node = d.numa_node as usize;
        // A node beyond the caller's mask cannot be reported: say the mask is too small.
        let word = mask.get_mut(node / BITS).ok_or(ret::INSUFFICIENT_SIZE)?;
        *word = 1 << (node % BITS);
        Ok(())
    })
}

/// The closest PCIe relation between two GPUs: GPUs of one zone share a NUMA node, zones
/// meet only across the CPU interconnect.
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
