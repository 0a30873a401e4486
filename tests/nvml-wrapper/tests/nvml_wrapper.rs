//! nvml-wrapper 0.13.0 (struct layouts bindgen-generated from NVIDIA's nvml.h) loads the fake
//! library with `Nvml::builder().lib_path(..)` and reads a few profiles' GPUs. The library loads
//! its node once per process, so each profile runs in a child process of this test binary.

use std::path::PathBuf;
use std::process::Command;

use nvml_wrapper::enum_wrappers::device::{Clock, TemperatureSensor};
use nvml_wrapper::Nvml;
use serde_json::Value;

const CHILD: &str = "FAKEGPU_CONFORMANCE_CHILD";
const PROFILES: [&str; 5] = ["h100", "a100-40gb", "t4", "k80", "b200"];
const NODE: &str = "conformance-node-1";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn library() -> PathBuf {
    if let Some(p) = std::env::var_os("FAKEGPU_NVML_LIB") {
        return p.into();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| repo().join("target"));
    let candidates = ["debug/libnvidia_ml.so", "debug/deps/libnvidia_ml.so", "release/libnvidia_ml.so"];
    candidates
        .iter()
        .map(|c| target.join(c))
        .filter(|p| p.exists())
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
        .unwrap_or_else(|| panic!("no libnvidia_ml.so under {}: cargo build -p nvml-shim", target.display()))
}

fn profile(name: &str) -> Value {
    let text = std::fs::read_to_string(repo().join("profiles").join(format!("{name}.json"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn profiles_through_nvml_wrapper() {
    if std::env::var_os(CHILD).is_some() {
        return; // the child runs `child_probe` only
    }
    let exe = std::env::current_exe().unwrap();
    for name in PROFILES {
        let out = Command::new(&exe)
            .args(["--exact", "child_probe", "--nocapture", "--test-threads=1"])
            .env(CHILD, name)
            .env("FAKEGPU_PROFILE", name)
            .env("FAKEGPU_GPUS", "2")
            .env("FAKEGPU_NODE", NODE)
            .env_remove("FAKEGPU_CONFIG")
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "profile {name}:\n{text}");
        assert!(text.contains(&format!("checked {name}")), "child did not run for {name}:\n{text}");
    }
}

#[test]
fn child_probe() {
    let Ok(name) = std::env::var(CHILD) else { return };
    let p = profile(&name);
    let nvml = Nvml::builder().lib_path(library().as_os_str()).init().expect("nvmlInit_v2");
    // Each profile's own driver (535.261.03 / 12.2 for most, 580 / 13.0 for B200 and the GB boards).
    assert_eq!(nvml.sys_driver_version().unwrap(), p["driver_version"].as_str().unwrap());
    assert_eq!(i64::from(nvml.sys_cuda_driver_version().unwrap()), p["cuda_driver_version"].as_i64().unwrap());
    assert_eq!(nvml.device_count().unwrap(), 2);
    let mib = 1024 * 1024;
    let mut uuids = Vec::new();
    for i in 0..2 {
        let d = nvml.device_by_index(i).unwrap();
        assert_eq!(d.index().unwrap(), i);
        assert_eq!(d.name().unwrap(), p["product_name"].as_str().unwrap());
        let uuid = d.uuid().unwrap();
        assert!(uuid.starts_with("GPU-") && uuid.len() == 40, "{uuid}");
        assert_eq!(nvml.device_by_uuid(uuid.as_str()).unwrap().index().unwrap(), i);
        uuids.push(uuid);
        let mem = d.memory_info().unwrap(); // nvmlDeviceGetMemoryInfo_v2
        let total = u(&p["memory"]["total_mib"]) * mib;
        let reserved = u(&p["memory"]["reserved_mib"]) * mib;
        assert_eq!((mem.total, mem.reserved, mem.used, mem.free), (total, reserved, 0, total - reserved));
        let pci = d.pci_info().unwrap();
        assert_eq!(
            pci.pci_device_id as u64,
            u64::from_str_radix(p["pci"]["device_id"].as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
        );
        assert_eq!(pci.bus_id, format!("{:08X}:{:02X}:00.0", pci.domain, pci.bus));
        assert_eq!(nvml.device_by_pci_bus_id(pci.bus_id.as_str()).unwrap().index().unwrap(), i);
        assert_eq!(d.temperature(TemperatureSensor::Gpu).unwrap() as u64, u(&p["thermal"]["idle_gpu_c"]));
        assert_eq!(d.power_usage().unwrap() as u64, u(&p["power"]["idle_draw_mw"]));
        assert_eq!(d.enforced_power_limit().unwrap() as u64, u(&p["power"]["default_limit_mw"]));
        let c = d.power_management_limit_constraints().unwrap();
        assert_eq!((c.min_limit as u64, c.max_limit as u64), (u(&p["power"]["min_limit_mw"]), u(&p["power"]["max_limit_mw"])));
        assert_eq!(d.max_clock_info(Clock::Graphics).unwrap() as u64, u(&p["clocks"]["max"]["graphics_mhz"]));
        assert_eq!(d.max_clock_info(Clock::Memory).unwrap() as u64, u(&p["clocks"]["max"]["memory_mhz"]));
        assert_eq!(d.clock_info(Clock::SM).unwrap() as u64, u(&p["clocks"]["idle"]["sm_mhz"]));
        let cc = d.cuda_compute_capability().unwrap();
        assert_eq!((cc.major as u64, cc.minor as u64), (u(&p["compute_capability"]["major"]), u(&p["compute_capability"]["minor"])));
        let util = d.utilization_rates().unwrap();
        assert_eq!((util.gpu, util.memory), (0, 0));
        assert!(d.running_compute_processes().unwrap().is_empty()); // _v3, 24-byte elements
        assert_eq!(d.is_ecc_enabled().unwrap().currently_enabled, p["ecc_enabled"].as_bool().unwrap());
    }
    assert_ne!(uuids[0], uuids[1]);
    assert!(nvml.device_by_index(2).is_err());
    nvml.shutdown().unwrap();
    println!("checked {name}");
}
