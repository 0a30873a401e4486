//! Device enumeration and identity: counts, handles by index/UUID/serial/PCI bus id,
//! names, ids, versions, architecture and PCI information.

use std::ffi::{c_char, c_int, c_uint};

use fakegpu_model::PciAddress;
use nvml_abi::consts::*;
use nvml_abi::{nvmlDevice_t, nvmlPciInfo_t, nvmlPciInfo_v1_t, nvmlReturn_t, ret};

use crate::device::Device;
use crate::ffi::{arg_str, fill_chars, guard, out, put, put_str, NvmlResult};
use crate::runtime::{cstring, device, runtime};

unsafe fn count(name: &'static str, deviceCount: *mut c_uint) -> nvmlReturn_t {
    guard(name, || put(deviceCount, runtime()?.devices.len() as c_uint))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetCount(deviceCount: *mut c_uint) -> nvmlReturn_t {
    count("nvmlDeviceGetCount", deviceCount)
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetCount_v2(deviceCount: *mut c_uint) -> nvmlReturn_t {
    count("nvmlDeviceGetCount_v2", deviceCount)
}

/// Stores the handle of the first device matching `pred`, NOT_FOUND when none does.
unsafe fn handle_where(handle: *mut nvmlDevice_t, pred: impl Fn(&Device) -> bool) -> NvmlResult {
    let rt = runtime()?;
    let slot = out(handle)?;
    let found = rt.devices.iter().find(|d| pred(d)).ok_or(ret::NOT_FOUND)?;
    *slot = rt.handle_of(found);
    Ok(())
}

unsafe fn by_index(name: &'static str, index: c_uint, handle: *mut nvmlDevice_t) -> nvmlReturn_t {
    guard(name, || {
        let rt = runtime()?;
        let slot = out(handle)?;
        let dev = rt.devices.get(index as usize).ok_or(ret::INVALID_ARGUMENT)?;
        // A GPU that fell off the bus (live state) cannot be opened, as on hardware.
        if crate::live::lost(dev.host_index) {
            return Err(ret::GPU_IS_LOST);
        }
        *slot = rt.handle_of(dev);
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetHandleByIndex(index: c_uint, device: *mut nvmlDevice_t) -> nvmlReturn_t {
    by_index("nvmlDeviceGetHandleByIndex", index, device)
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetHandleByIndex_v2(index: c_uint, device: *mut nvmlDevice_t) -> nvmlReturn_t {
    by_index("nvmlDeviceGetHandleByIndex_v2", index, device)
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetHandleByUUID(uuid: *const c_char, device: *mut nvmlDevice_t) -> nvmlReturn_t {
    guard("nvmlDeviceGetHandleByUUID", || {
        runtime()?;
        let uuid = arg_str(uuid)?;
        // A MIG device's UUID opens the MIG device, as NVIDIA's library does (the device
        // plugin's health check and `nvidia-ctk cdi generate` look MIG devices up this way).
        if uuid.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("MIG-")) {
            let slot = out(device)?;
            *slot = crate::exports::mig::mig_handle_by_uuid(uuid)?.ok_or(ret::NOT_FOUND)?;
            return Ok(());
        }
        handle_where(device, |d| d.id.uuid.eq_ignore_ascii_case(uuid))
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetHandleBySerial(serial: *const c_char, device: *mut nvmlDevice_t) -> nvmlReturn_t {
    guard("nvmlDeviceGetHandleBySerial", || {
        runtime()?;
        let serial = arg_str(serial)?;
        handle_where(device, |d| d.id.serial == serial)
    })
}

unsafe fn by_bus_id(name: &'static str, bus_id: *const c_char, handle: *mut nvmlDevice_t) -> nvmlReturn_t {
    guard(name, || {
        runtime()?;
        let wanted = PciAddress::parse(arg_str(bus_id)?).ok_or(ret::INVALID_ARGUMENT)?;
        handle_where(handle, |d| d.id.pci == wanted)
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetHandleByPciBusId(pciBusId: *const c_char, device: *mut nvmlDevice_t) -> nvmlReturn_t {
    by_bus_id("nvmlDeviceGetHandleByPciBusId", pciBusId, device)
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetHandleByPciBusId_v2(pciBusId: *const c_char, device: *mut nvmlDevice_t) -> nvmlReturn_t {
    by_bus_id("nvmlDeviceGetHandleByPciBusId_v2", pciBusId, device)
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetIndex(dev: nvmlDevice_t, index: *mut c_uint) -> nvmlReturn_t {
    guard("nvmlDeviceGetIndex", || {
        if crate::exports::mig::is_mig_handle(dev) {
            return crate::exports::mig::mig_get_index(dev, index);
        }
        put(index, device(dev)?.id.index)
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMinorNumber(dev: nvmlDevice_t, minorNumber: *mut c_uint) -> nvmlReturn_t {
    guard("nvmlDeviceGetMinorNumber", || put(minorNumber, device(dev)?.id.minor_number))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetName(dev: nvmlDevice_t, name: *mut c_char, length: c_uint) -> nvmlReturn_t {
    guard("nvmlDeviceGetName", || {
        if crate::exports::mig::is_mig_handle(dev) {
            return crate::exports::mig::mig_get_name(dev, name, length);
        }
        put_str(name, length, &device(dev)?.name)
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetUUID(dev: nvmlDevice_t, uuid: *mut c_char, length: c_uint) -> nvmlReturn_t {
    guard("nvmlDeviceGetUUID", || {
        if crate::exports::mig::is_mig_handle(dev) {
            return crate::exports::mig::mig_get_uuid(dev, uuid, length);
        }
        put_str(uuid, length, &device(dev)?.uuid)
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetSerial(dev: nvmlDevice_t, serial: *mut c_char, length: c_uint) -> nvmlReturn_t {
    guard("nvmlDeviceGetSerial", || put_str(serial, length, &device(dev)?.serial))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetBrand(dev: nvmlDevice_t, brand: *mut c_uint) -> nvmlReturn_t {
    guard("nvmlDeviceGetBrand", || put(brand, device(dev)?.profile.brand.nvml_value()))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetArchitecture(dev: nvmlDevice_t, arch: *mut c_uint) -> nvmlReturn_t {
    guard("nvmlDeviceGetArchitecture", || put(arch, device(dev)?.profile.architecture.nvml_value()))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetCudaComputeCapability(dev: nvmlDevice_t, major: *mut c_int, minor: *mut c_int) -> nvmlReturn_t {
    guard("nvmlDeviceGetCudaComputeCapability", || {
        let cc = device(dev)?.profile.compute_capability;
        let (major, minor) = (out(major)?, out(minor)?);
        *major = cc.major as c_int;
        *minor = cc.minor as c_int;
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetBoardPartNumber(dev: nvmlDevice_t, partNumber: *mut c_char, length: c_uint) -> nvmlReturn_t {
    guard("nvmlDeviceGetBoardPartNumber", || put_str(partNumber, length, &device(dev)?.board_part_number))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetBoardId(dev: nvmlDevice_t, boardId: *mut c_uint) -> nvmlReturn_t {
    guard("nvmlDeviceGetBoardId", || put(boardId, device(dev)?.id.board_id))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetModuleId(dev: nvmlDevice_t, moduleId: *mut c_uint) -> nvmlReturn_t {
    guard("nvmlDeviceGetModuleId", || put(moduleId, device(dev)?.id.module_id))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMultiGpuBoard(dev: nvmlDevice_t, multiGpuBool: *mut c_uint) -> nvmlReturn_t {
    guard("nvmlDeviceGetMultiGpuBoard", || put(multiGpuBool, device(dev)?.profile.multi_gpu_board as c_uint))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetVbiosVersion(dev: nvmlDevice_t, version: *mut c_char, length: c_uint) -> nvmlReturn_t {
    guard("nvmlDeviceGetVbiosVersion", || put_str(version, length, &device(dev)?.vbios))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetInforomImageVersion(dev: nvmlDevice_t, version: *mut c_char, length: c_uint) -> nvmlReturn_t {
    guard("nvmlDeviceGetInforomImageVersion", || put_str(version, length, &device(dev)?.inforom_image))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetInforomVersion(
    dev: nvmlDevice_t,
    object: c_uint,
    version: *mut c_char,
    length: c_uint,
) -> nvmlReturn_t {
    guard("nvmlDeviceGetInforomVersion", || {
        let inforom = &device(dev)?.profile.inforom;
        let value = match object {
            NVML_INFOROM_OEM => &inforom.oem,
            NVML_INFOROM_ECC => &inforom.ecc,
            NVML_INFOROM_POWER => &inforom.power,
            _ => return Err(ret::INVALID_ARGUMENT),
        };
        put_str(version, length, &cstring(value.as_deref().ok_or(ret::NOT_SUPPORTED)?))
    })
}

/// A valid infoROM: the check passes.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceValidateInforom(dev: nvmlDevice_t) -> nvmlReturn_t {
    guard("nvmlDeviceValidateInforom", || device(dev).map(|_| ()))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetNumGpuCores(dev: nvmlDevice_t, numCores: *mut c_uint) -> nvmlReturn_t {
    guard("nvmlDeviceGetNumGpuCores", || put(numCores, device(dev)?.profile.cuda_cores.ok_or(ret::NOT_SUPPORTED)?))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMemoryBusWidth(dev: nvmlDevice_t, busWidth: *mut c_uint) -> nvmlReturn_t {
    guard("nvmlDeviceGetMemoryBusWidth", || put(busWidth, device(dev)?.profile.memory.bus_width_bits.ok_or(ret::NOT_SUPPORTED)?))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetPciInfo(dev: nvmlDevice_t, pci: *mut nvmlPciInfo_v1_t) -> nvmlReturn_t {
    guard("nvmlDeviceGetPciInfo", || {
        let d = device(dev)?;
        let info = out(pci)?;
        fill_chars(&mut info.busId, &d.bus_id_legacy);
        (info.domain, info.bus, info.device) = (d.id.pci.domain, d.id.pci.bus, d.id.pci.device);
        info.pciDeviceId = d.profile.pci.device_id.0;
        info.pciSubSystemId = d.profile.pci.subsystem_id.0;
        info.reserved = [0; 4];
        Ok(())
    })
}

unsafe fn pci_info(name: &'static str, dev: nvmlDevice_t, pci: *mut nvmlPciInfo_t) -> nvmlReturn_t {
    guard(name, || {
        let d = device(dev)?;
        let info = out(pci)?;
        fill_chars(&mut info.busIdLegacy, &d.bus_id_legacy);
        fill_chars(&mut info.busId, &d.bus_id);
        (info.domain, info.bus, info.device) = (d.id.pci.domain, d.id.pci.bus, d.id.pci.device);
        info.pciDeviceId = d.profile.pci.device_id.0;
        info.pciSubSystemId = d.profile.pci.subsystem_id.0;
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetPciInfo_v2(dev: nvmlDevice_t, pci: *mut nvmlPciInfo_t) -> nvmlReturn_t {
    pci_info("nvmlDeviceGetPciInfo_v2", dev, pci)
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetPciInfo_v3(dev: nvmlDevice_t, pci: *mut nvmlPciInfo_t) -> nvmlReturn_t {
    pci_info("nvmlDeviceGetPciInfo_v3", dev, pci)
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMaxPcieLinkGeneration(dev: nvmlDevice_t, maxLinkGen: *mut c_uint) -> nvmlReturn_t {
    guard("nvmlDeviceGetMaxPcieLinkGeneration", || put(maxLinkGen, device(dev)?.profile.pci.max_link_gen))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetGpuMaxPcieLinkGeneration(dev: nvmlDevice_t, maxLinkGenDevice: *mut c_uint) -> nvmlReturn_t {
    guard("nvmlDeviceGetGpuMaxPcieLinkGeneration", || put(maxLinkGenDevice, device(dev)?.profile.pci.gpu_max_link_gen))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMaxPcieLinkWidth(dev: nvmlDevice_t, maxLinkWidth: *mut c_uint) -> nvmlReturn_t {
    guard("nvmlDeviceGetMaxPcieLinkWidth", || put(maxLinkWidth, device(dev)?.profile.pci.max_link_width))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetCurrPcieLinkGeneration(dev: nvmlDevice_t, currLinkGen: *mut c_uint) -> nvmlReturn_t {
    guard("nvmlDeviceGetCurrPcieLinkGeneration", || put(currLinkGen, device(dev)?.profile.pci.current_link_gen))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetCurrPcieLinkWidth(dev: nvmlDevice_t, currLinkWidth: *mut c_uint) -> nvmlReturn_t {
    guard("nvmlDeviceGetCurrPcieLinkWidth", || put(currLinkWidth, device(dev)?.profile.pci.current_link_width))
}

/// Per-lane transfer rate in MB/s for a PCIe generation (8b/10b up to gen 2, 128b/130b after).
fn lane_speed_mbps(gen: u32) -> u32 {
    match gen {
        1 => 2500,
        2 => 5000,
        3 => 8000,
        4 => 16000,
        5 => 32000,
        _ => 64000,
    }
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetPcieLinkMaxSpeed(dev: nvmlDevice_t, maxSpeed: *mut c_uint) -> nvmlReturn_t {
    guard("nvmlDeviceGetPcieLinkMaxSpeed", || put(maxSpeed, lane_speed_mbps(device(dev)?.profile.pci.max_link_gen)))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetPcieSpeed(dev: nvmlDevice_t, pcieSpeed: *mut c_uint) -> nvmlReturn_t {
    guard("nvmlDeviceGetPcieSpeed", || put(pcieSpeed, lane_speed_mbps(device(dev)?.profile.pci.current_link_gen)))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetBusType(dev: nvmlDevice_t, busType: *mut c_uint) -> nvmlReturn_t {
    guard("nvmlDeviceGetBusType", || {
        device(dev)?;
        put(busType, NVML_BUS_TYPE_PCIE)
    })
}
