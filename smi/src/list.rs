//! `nvidia-smi -L`: one line per GPU, plus its MIG devices when MIG is on.

use crate::nvml::{Device, Nvml, R};
use std::fmt::Write;

/// `-L` without `-i`: every GPU by index; a GPU whose handle fails gets NVIDIA's message and the
/// listing goes on (the exit code is the last failure's).
pub fn render_all(nvml: &Nvml) -> (String, i32) {
    let n = match nvml.device_count() {
        Ok(0) => return ("No devices found.\n".into(), 0),
        Ok(n) => n,
        Err(e) => return (format!("Unable to determine the device count: {}\n", crate::common::err_text(e)), e as i32),
    };
    let mut out = String::new();
    let mut code = 0;
    for i in 0..n {
        match nvml.device(i) {
            Ok(d) => out.push_str(&render_one(i as usize, &d)),
            Err(e) => {
                out.push_str(&crate::common::handle_error("gpu ", i, e));
                code = e as i32;
            }
        }
    }
    (out, code)
}

/// Renders the list.
pub fn render(devs: &[Device]) -> String {
    devs.iter().enumerate().map(|(i, d)| render_one(i, d)).collect()
}

fn render_one(i: usize, d: &Device) -> String {
    let mut out = String::new();
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
        // NVIDIA shows the profile part of the name ("MIG 3g.20gb"), not the GPU's.
        let full = m.name().unwrap_or_default();
        let name = full.find("MIG ").map_or(full.as_str(), |k| &full[k..]);
        let uuid = m.uuid(96).unwrap_or_default();
        let _ = writeln!(out, "  {name:<15} Device {j:>2}: (UUID: {uuid})");
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
