//! NVLink: the fabric a GPU registered with (`nvmlDeviceGetGpuFabricInfo`, which GPU Feature
//! Discovery turns into `nvidia.com/gpu.clique`) and each link's state, version, capabilities
//! and far end (which NVIDIA's go-gpuallocator reads for NVLink-aware placement). Values come
//! from `fakegpu_model::fabric`, a function of the node name and the profile's `board`.

use std::ffi::c_uint;

use fakegpu_model::board::NVLINK_MAX_LINKS;
use fakegpu_model::fabric::{fabric_info, nvlink_remote, LinkRemote};
use fakegpu_model::PciAddress;
use nvml_abi::{nvmlDevice_t, nvmlGpuFabricInfo_t, nvmlPciInfo_t, nvmlReturn_t, ret};

use crate::device::Device;
use crate::ffi::{fill_chars, guard, out, put, NvmlResult};
use crate::runtime::{device, runtime};

/// `nvmlNvLinkCapability_t`: P2P, system memory access, P2P atomics, system memory atomics,
/// SLI bridge, valid.
const CAP_P2P_SUPPORTED: c_uint = 0;
const CAP_P2P_ATOMICS: c_uint = 2;
const CAP_VALID: c_uint = 5;
const CAP_COUNT: c_uint = 6;

/// `nvmlIntNvLinkDeviceType_t`.
const REMOTE_GPU: c_uint = 0;
const REMOTE_SWITCH: c_uint = 2;

/// PCI device id NVSwitches report (the Hopper-generation NVSwitch, 0x22A3).
const NVSWITCH_DEVICE_ID: u32 = 0x22A3_10DE;

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetGpuFabricInfo(dev: nvmlDevice_t, gpuFabricInfo: *mut nvmlGpuFabricInfo_t) -> nvmlReturn_t {
    guard("nvmlDeviceGetGpuFabricInfo", || {
        let d = device(dev)?;
        let f = fabric_info(&runtime()?.node.spec.node_name, &d.profile, runtime()?.node.spec.gpu_count).ok_or(ret::NOT_SUPPORTED)?;
        put(
            gpuFabricInfo,
            nvmlGpuFabricInfo_t {
                clusterUuid: f.cluster_uuid,
                status: ret::SUCCESS,
                cliqueId: f.clique_id,
                state: f.state,
                _padding: [0; 3],
            },
        )
    })
}

/// The far end of `link` of `d`: INVALID_ARGUMENT past NVML's link range, NOT_SUPPORTED for a
/// link the board does not have.
fn remote(d: &Device, link: c_uint) -> Result<LinkRemote, nvmlReturn_t> {
    if d.profile.board.nvlink.is_none() {
        return Err(ret::NOT_SUPPORTED);
    }
    if link >= NVLINK_MAX_LINKS {
        return Err(ret::INVALID_ARGUMENT);
    }
    let gpus = runtime()?.node.gpus.len() as u32;
    nvlink_remote(&d.profile, d.host_index, d.id.pci, gpus, link).ok_or(ret::NOT_SUPPORTED)
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetNvLinkState(dev: nvmlDevice_t, link: c_uint, isActive: *mut c_uint) -> nvmlReturn_t {
    guard("nvmlDeviceGetNvLinkState", || {
        remote(device(dev)?, link)?;
        put(isActive, 1)
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetNvLinkVersion(dev: nvmlDevice_t, link: c_uint, version: *mut c_uint) -> nvmlReturn_t {
    guard("nvmlDeviceGetNvLinkVersion", || {
        let d = device(dev)?;
        remote(d, link)?;
        put(version, d.profile.board.nvlink.map_or(0, |n| n.version))
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetNvLinkCapability(
    dev: nvmlDevice_t,
    link: c_uint,
    capability: c_uint,
    capResult: *mut c_uint,
) -> nvmlReturn_t {
    guard("nvmlDeviceGetNvLinkCapability", || {
        remote(device(dev)?, link)?;
        if capability >= CAP_COUNT {
            return Err(ret::INVALID_ARGUMENT);
        }
        // x86 hosts reach system memory over PCIe, not NVLink; there is no SLI bridge.
        put(capResult, matches!(capability, CAP_P2P_SUPPORTED | CAP_P2P_ATOMICS | CAP_VALID) as c_uint)
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetNvLinkRemoteDeviceType(
    dev: nvmlDevice_t,
    link: c_uint,
    pNvLinkDeviceType: *mut c_uint,
) -> nvmlReturn_t {
    guard("nvmlDeviceGetNvLinkRemoteDeviceType", || {
        let kind = match remote(device(dev)?, link)? {
            LinkRemote::Switch(_) => REMOTE_SWITCH,
            LinkRemote::Gpu(_) => REMOTE_GPU,
        };
        put(pNvLinkDeviceType, kind)
    })
}

unsafe fn remote_pci(name: &'static str, dev: nvmlDevice_t, link: c_uint, pci: *mut nvmlPciInfo_t) -> nvmlReturn_t {
    guard(name, || {
        let (addr, device_id, subsystem_id) = match remote(device(dev)?, link)? {
            LinkRemote::Switch(addr) => (addr, NVSWITCH_DEVICE_ID, 0),
            LinkRemote::Gpu(peer) => {
                let rt = runtime()?;
                let p = &rt.node.spec.profile;
                (rt.node.gpus[peer as usize].pci, p.pci.device_id.0, p.pci.subsystem_id.0)
            }
        };
        fill_pci(out(pci)?, addr, device_id, subsystem_id)
    })
}

fn fill_pci(info: &mut nvmlPciInfo_t, addr: PciAddress, device_id: u32, subsystem_id: u32) -> NvmlResult {
    fill_chars(&mut info.busIdLegacy, &addr.bus_id_legacy());
    fill_chars(&mut info.busId, &addr.bus_id());
    (info.domain, info.bus, info.device) = (addr.domain, addr.bus, addr.device);
    info.pciDeviceId = device_id;
    info.pciSubSystemId = subsystem_id;
    Ok(())
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetNvLinkRemotePciInfo(dev: nvmlDevice_t, link: c_uint, pci: *mut nvmlPciInfo_t) -> nvmlReturn_t {
    remote_pci("nvmlDeviceGetNvLinkRemotePciInfo", dev, link, pci)
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetNvLinkRemotePciInfo_v2(dev: nvmlDevice_t, link: c_uint, pci: *mut nvmlPciInfo_t) -> nvmlReturn_t {
    remote_pci("nvmlDeviceGetNvLinkRemotePciInfo_v2", dev, link, pci)
}
