//! `nvidia-smi -L`: one line per GPU, plus its MIG devices when MIG is on.

use crate::nvml::{Device, R};
use std::fmt::Write;

/// Renders the list.
pub fn render(devs: &[Device]) -> String {
    let mut out = String::new();
    for (i, d) in devs.iter().enumerate() {
        let name = d.name().unwrap_or_default();
        match d.uuid(96) {
            Ok(u) => {
                let _ = writeln!(out, "GPU {i}: {name} (UUID: {u})");
            }
            Err(_) => {
                let _ = writeln!(out, "GPU {i}: {name}");
            }
        }
        for (j, m) in mig_devices(d).into_iter().enumerate() {
            let name = m.name().unwrap_or_default();
            let uuid = m.uuid(96).unwrap_or_default();
            let _ = writeln!(out, "  {name} Device {j:>4}: (UUID: {uuid})");
        }
    }
    out
}

/// The MIG devices of a GPU (none unless MIG is on and the library reports some).
pub fn mig_devices<'a>(d: &Device<'a>) -> Vec<Device<'a>> {
    let max: R<u32> = d.u32_of("nvmlDeviceGetMaxMigDeviceCount");
    let Ok(max) = max else { return Vec::new() };
    if max == 0 || !matches!(d.pair_of("nvmlDeviceGetMigMode"), Ok((1, _))) {
        return Vec::new();
    }
    (0..max).filter_map(|i| d.mig_device(i).ok()).collect()
}
