//! Device discovery: count, ordinals, names, UUIDs, memory, attributes, PCI bus ids.

use std::ffi::{c_char, c_int, c_void};

use crate::ffi::{arg_str, guard, out, put, put_str};
use crate::runtime::{device, runtime};
use crate::types::*;

#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetCount(count: *mut c_int) -> CUresult {
    guard("cuDeviceGetCount", || {
        let out = out(count)?;
        *out = runtime()?.devices.len() as c_int;
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuDeviceGet(dev: *mut CUdevice, ordinal: c_int) -> CUresult {
    guard("cuDeviceGet", || {
        let out = out(dev)?;
        *out = device(ordinal)?.ordinal as CUdevice;
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetName(name: *mut c_char, len: c_int, dev: CUdevice) -> CUresult {
    guard("cuDeviceGetName", || {
        let d = device(dev)?;
        put_str(name, len, &d.name)
    })
}

unsafe fn uuid(name: &'static str, uuid: *mut CUuuid, dev: CUdevice) -> CUresult {
    guard(name, || {
        let d = device(dev)?;
        put(uuid, CUuuid { bytes: d.uuid })
    })
}

/// The 16 bytes of NVML's `GPU-…` UUID (v1 and v2 agree when MIG is off).
#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetUuid(u: *mut CUuuid, dev: CUdevice) -> CUresult {
    uuid("cuDeviceGetUuid", u, dev)
}

#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetUuid_v2(u: *mut CUuuid, dev: CUdevice) -> CUresult {
    uuid("cuDeviceGetUuid_v2", u, dev)
}

/// NVML's total: the framebuffer the profile states.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceTotalMem_v2(bytes: *mut usize, dev: CUdevice) -> CUresult {
    guard("cuDeviceTotalMem_v2", || {
        let d = device(dev)?;
        put(bytes, d.total_bytes as usize)
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetAttribute(value: *mut c_int, attribute: c_int, dev: CUdevice) -> CUresult {
    guard("cuDeviceGetAttribute", || {
        let out = out(value)?;
        let d = device(dev)?;
        match usize::try_from(attribute) {
            Ok(a @ 1..=fakegpu_model::cuda::MAX_ATTRIBUTE) => {
                *out = d.attributes[a];
                Ok(())
            }
            _ => Err(CUDA_ERROR_INVALID_VALUE),
        }
    })
}

/// The deprecated pair of compute-capability attributes.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceComputeCapability(major: *mut c_int, minor: *mut c_int, dev: CUdevice) -> CUresult {
    guard("cuDeviceComputeCapability", || {
        let (major, minor) = (out(major)?, out(minor)?);
        let d = device(dev)?;
        *major = d.attributes[75];
        *minor = d.attributes[76];
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetPCIBusId(bus_id: *mut c_char, len: c_int, dev: CUdevice) -> CUresult {
    guard("cuDeviceGetPCIBusId", || {
        let d = device(dev)?;
        put_str(bus_id, len, &d.bus_id)
    })
}

/// Accepts `domain:bus:device.function` or `bus:device.function`, any case, any zero padding.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetByPCIBusId(dev: *mut CUdevice, bus_id: *const c_char) -> CUresult {
    guard("cuDeviceGetByPCIBusId", || {
        let out = out(dev)?;
        let text = arg_str(bus_id)?;
        let want = parse_bus_id(text).ok_or(CUDA_ERROR_INVALID_VALUE)?;
        let rt = runtime()?;
        let d = rt
            .devices
            .iter()
            .find(|d| (d.id.pci.domain, d.id.pci.bus, d.id.pci.device, d.id.pci.function) == want)
            .ok_or(CUDA_ERROR_INVALID_DEVICE)?;
        *out = d.ordinal as CUdevice;
        Ok(())
    })
}

fn parse_bus_id(text: &str) -> Option<(u32, u32, u32, u32)> {
    let (head, function) = text.trim().rsplit_once('.')?;
    let parts: Vec<&str> = head.split(':').collect();
    let hex = |s: &str| u32::from_str_radix(s, 16).ok();
    let (domain, bus, device) = match parts.as_slice() {
        [d, b, v] => (hex(d)?, hex(b)?, hex(v)?),
        [b, v] => (0, hex(b)?, hex(v)?),
        _ => return None,
    };
    Some((domain, bus, device, hex(function)?))
}

/// LUIDs exist on Windows only; Linux drivers answer NOT_SUPPORTED.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetLuid(luid: *mut c_char, mask: *mut u32, dev: CUdevice) -> CUresult {
    guard("cuDeviceGetLuid", || {
        let _ = (luid, mask as *mut c_void);
        device(dev)?;
        Err(CUDA_ERROR_NOT_SUPPORTED)
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn bus_ids_parse_in_both_forms() {
        assert_eq!(super::parse_bus_id("0000:53:00.0"), Some((0, 0x53, 0, 0)));
        assert_eq!(super::parse_bus_id("00000001:CA:00.0"), Some((1, 0xCA, 0, 0)));
        assert_eq!(super::parse_bus_id("ca:00.0"), Some((0, 0xCA, 0, 0)));
        assert_eq!(super::parse_bus_id("nonsense"), None);
    }
}
