//! `--query-gpu=` and `--query-compute-apps=` as CSV (`--format=csv[,noheader][,nounits]`), and
//! the field list `--help-query-gpu` prints. Headers use each field's canonical name; values keep
//! units unless `nounits`; failed calls read `[N/A]` and friends, as in NVIDIA's output.

use crate::args::Format;
use crate::common::{err_text, strftime};
use crate::nvml::{nv, Device, Nvml, R};
use nvml_abi::nvmlDevice_t;
use std::ffi::c_uint;

/// A field's value: a number/text plus the unit that `nounits` drops, or a bare text.
enum Val {
    Num(String),
    Text(String),
}

type Getter = fn(&Nvml, &Device, usize) -> R<Val>;

/// One queryable field.
struct Field {
    names: &'static [&'static str],
    unit: Option<&'static str>,
    help: &'static str,
    get: Getter,
}

fn num(v: impl ToString) -> R<Val> {
    Ok(Val::Num(v.to_string()))
}
fn txt(v: impl Into<String>) -> R<Val> {
    Ok(Val::Text(v.into()))
}
fn enabled(v: u32) -> R<Val> {
    txt(if v == 1 { "Enabled" } else { "Disabled" })
}
fn mib(b: u64) -> R<Val> {
    num(b / (1024 * 1024))
}
fn watts(mw: u32) -> R<Val> {
    num(format!("{:.2}", mw as f64 / 1000.0))
}
/// A field value's own return code decides; a failed field shows its text without brackets.
fn field_val(d: &Device, id: u32, scope: u32, f: impl FnOnce(&nvml_abi::nvmlFieldValue_t) -> String) -> R<Val> {
    let v = d.fields(&[(id, scope)])?;
    let fv = &v[0];
    if fv.nvmlReturn != 0 {
        return Ok(Val::Text(err_text(fv.nvmlReturn).to_string()));
    }
    Ok(Val::Num(f(fv)))
}
fn fv_i64(fv: &nvml_abi::nvmlFieldValue_t) -> i64 {
    // SAFETY: reading the union member named by valueType.
    unsafe {
        match fv.valueType {
            0 => fv.value.dVal as i64,
            1 => fv.value.uiVal as i64,
            3 => fv.value.ullVal as i64,
            4 => fv.value.sllVal,
            5 => fv.value.siVal as i64,
            _ => fv.value.ullVal as i64,
        }
    }
}
fn compute_mode(m: u32) -> &'static str {
    match m {
        0 => "Default",
        1 => "Exclusive_Thread",
        2 => "Prohibited",
        3 => "Exclusive_Process",
        _ => "Unknown",
    }
}
fn ecc_total(d: &Device, etype: u32, counter: u32) -> R<Val> {
    let mut v: u64 = 0;
    nv!(d.nvml(), "nvmlDeviceGetTotalEccErrors", (nvmlDevice_t, c_uint, c_uint, *mut u64), d.raw, etype, counter, &mut v)?;
    num(v)
}
/// One clock-event reason bit: "Active" / "Not Active".
fn reason(d: &Device, bit: u64) -> R<Val> {
    d.u64_of("nvmlDeviceGetCurrentClocksThrottleReasons").and_then(|v| txt(if v & bit != 0 { "Active" } else { "Not Active" }))
}
fn pci_hex(d: &Device, f: fn(&nvml_abi::nvmlPciInfo_t) -> String) -> R<Val> {
    d.pci().and_then(|p| txt(f(&p)))
}
fn limits(d: &Device) -> R<(u32, u32)> {
    d.pair_of("nvmlDeviceGetPowerManagementLimitConstraints")
}

const M: Option<&str> = Some("MiB");
const W: Option<&str> = Some("W");
const MHZ: Option<&str> = Some("MHz");
const PCT: Option<&str> = Some("%");

static FIELDS: &[Field] = &[
    Field {
        names: &["timestamp"],
        unit: None,
        help: "The timestamp of when the query was made in format \"YYYY/MM/DD HH:MM:SS.msec\".",
        get: |_, _, _| txt(strftime("%Y/%m/%d %H:%M:%S.%3N")),
    },
    Field {
        names: &["driver_version"],
        unit: None,
        help: "The version of the installed NVIDIA display driver.",
        get: |n, _, _| n.driver_version().and_then(txt),
    },
    Field {
        names: &["count"],
        unit: None,
        help: "The number of NVIDIA GPUs in the system.",
        get: |n, _, _| n.device_count().and_then(num),
    },
    Field {
        names: &["name", "gpu_name"],
        unit: None,
        help: "The official product name of the GPU.",
        get: |_, d, _| d.name().and_then(txt),
    },
    Field {
        names: &["serial", "gpu_serial"],
        unit: None,
        help: "The serial number printed on the board.",
        get: |_, d, _| d.string_of("nvmlDeviceGetSerial", 30).and_then(txt),
    },
    Field {
        names: &["uuid", "gpu_uuid"],
        unit: None,
        help: "The globally unique immutable identifier of the GPU.",
        get: |_, d, _| d.uuid(80).and_then(txt),
    },
    Field {
        names: &["pci.bus_id", "gpu_bus_id"],
        unit: None,
        help: "PCI bus id as \"domain:bus:device.function\", in hex.",
        get: |_, d, _| d.bus_id().and_then(txt),
    },
    Field {
        names: &["pci.domain"],
        unit: None,
        help: "PCI domain number, in hex.",
        get: |_, d, _| pci_hex(d, |p| format!("0x{:04X}", p.domain)),
    },
    Field { names: &["pci.bus"], unit: None, help: "PCI bus number, in hex.", get: |_, d, _| pci_hex(d, |p| format!("0x{:02X}", p.bus)) },
    Field {
        names: &["pci.device"],
        unit: None,
        help: "PCI device number, in hex.",
        get: |_, d, _| pci_hex(d, |p| format!("0x{:02X}", p.device)),
    },
    Field {
        names: &["pci.device_id"],
        unit: None,
        help: "PCI vendor device id, in hex.",
        get: |_, d, _| pci_hex(d, |p| format!("0x{:08X}", p.pciDeviceId)),
    },
    Field {
        names: &["pci.sub_device_id"],
        unit: None,
        help: "PCI Sub System id, in hex.",
        get: |_, d, _| pci_hex(d, |p| format!("0x{:08X}", p.pciSubSystemId)),
    },
    Field {
        names: &["pcie.link.gen.current"],
        unit: None,
        help: "The current PCI-E link generation.",
        get: |_, d, _| d.u32_of("nvmlDeviceGetCurrPcieLinkGeneration").and_then(num),
    },
    Field {
        names: &["pcie.link.gen.max"],
        unit: None,
        help: "The maximum PCI-E link generation possible with this GPU and system configuration.",
        get: |_, d, _| d.u32_of("nvmlDeviceGetMaxPcieLinkGeneration").and_then(num),
    },
    Field {
        names: &["pcie.link.gen.hostmax"],
        unit: None,
        help: "The maximum PCI-E link generation supported by the root port corresponding to this GPU.",
        // NVIDIA's binary reads this one through the private export table.
        get: |_, d, _| d.slot_u32(nvml_abi::export_table::PCIE_HOST_MAX_GEN).and_then(num),
    },
    Field {
        names: &["pcie.link.width.current"],
        unit: None,
        help: "The current PCI-E link width.",
        get: |_, d, _| d.u32_of("nvmlDeviceGetCurrPcieLinkWidth").and_then(num),
    },
    Field {
        names: &["pcie.link.width.max"],
        unit: None,
        help: "The maximum PCI-E link width possible with this GPU and system configuration.",
        get: |_, d, _| d.u32_of("nvmlDeviceGetMaxPcieLinkWidth").and_then(num),
    },
    Field { names: &["index"], unit: None, help: "Zero based index of the GPU.", get: |_, d, _| d.index().and_then(num) },
    Field {
        names: &["display_mode"],
        unit: None,
        help: "Whether a physical display is connected to any of the GPU's connectors.",
        get: |_, d, _| d.u32_of("nvmlDeviceGetDisplayMode").and_then(enabled),
    },
    Field {
        names: &["display_active"],
        unit: None,
        help: "Whether a display is initialized on the GPU.",
        get: |_, d, _| d.u32_of("nvmlDeviceGetDisplayActive").and_then(enabled),
    },
    Field {
        names: &["persistence_mode"],
        unit: None,
        help: "Whether persistence mode is enabled.",
        get: |_, d, _| d.u32_of("nvmlDeviceGetPersistenceMode").and_then(enabled),
    },
    Field {
        names: &["addressing_mode"],
        unit: None,
        help: "The type of addressing mode enabled for the GPU: \"HMM\", \"ATS\" or \"None\".",
        get: |_, d, _| {
            d.slot_u32(nvml_abi::export_table::ADDRESSING_MODE)
                .and_then(|m| txt(*["None", "HMM", "ATS"].get(m as usize).unwrap_or(&"Unknown")))
        },
    },
    Field {
        names: &["accounting.mode"],
        unit: None,
        help: "Whether accounting mode is enabled.",
        get: |_, d, _| d.u32_of("nvmlDeviceGetAccountingMode").and_then(enabled),
    },
    Field {
        names: &["accounting.buffer_size"],
        unit: None,
        help: "Size of the circular accounting buffer.",
        get: |_, d, _| d.u32_of("nvmlDeviceGetAccountingBufferSize").and_then(num),
    },
    Field {
        names: &["vbios_version"],
        unit: None,
        help: "The BIOS of the GPU board.",
        get: |_, d, _| d.string_of("nvmlDeviceGetVbiosVersion", 32).and_then(txt),
    },
    Field {
        names: &["inforom.img", "inforom.image"],
        unit: None,
        help: "Global version of the infoROM image.",
        get: |_, d, _| d.string_of("nvmlDeviceGetInforomImageVersion", 16).and_then(txt),
    },
    Field {
        names: &["fan.speed"],
        unit: PCT,
        help: "The fan speed value is the percent of maximum speed.",
        get: |_, d, _| d.u32_of("nvmlDeviceGetFanSpeed").and_then(num),
    },
    Field {
        names: &["pstate"],
        unit: None,
        help: "The current performance state for the GPU.",
        get: |_, d, _| {
            d.u32_of("nvmlDeviceGetPerformanceState").and_then(|p| txt(if p == 32 { "Unknown".into() } else { format!("P{p}") }))
        },
    },
    Field {
        names: &["clocks_event_reasons.supported", "clocks_throttle_reasons.supported"],
        unit: None,
        help: "Bitmask of supported clock event reasons.",
        get: |_, d, _| d.u64_of("nvmlDeviceGetSupportedClocksThrottleReasons").and_then(|v| txt(format!("0x{v:016X}"))),
    },
    Field {
        names: &["clocks_event_reasons.active", "clocks_throttle_reasons.active"],
        unit: None,
        help: "Bitmask of active clock event reasons.",
        get: |_, d, _| d.u64_of("nvmlDeviceGetCurrentClocksThrottleReasons").and_then(|v| txt(format!("0x{v:016X}"))),
    },
    Field {
        names: &["clocks_event_reasons.gpu_idle", "clocks_throttle_reasons.gpu_idle"],
        unit: None,
        help: "Nothing is running on the GPU and the clocks are dropping to Idle state.",
        get: |_, d, _| reason(d, 0x1),
    },
    Field {
        names: &["clocks_event_reasons.applications_clocks_setting", "clocks_throttle_reasons.applications_clocks_setting"],
        unit: None,
        help: "GPU clocks are limited by the applications clocks setting.",
        get: |_, d, _| reason(d, 0x2),
    },
    Field {
        names: &["clocks_event_reasons.sw_power_cap", "clocks_throttle_reasons.sw_power_cap"],
        unit: None,
        help: "The SW power scaling algorithm is reducing the clocks below requested clocks.",
        get: |_, d, _| reason(d, 0x4),
    },
    Field {
        names: &["clocks_event_reasons.hw_slowdown", "clocks_throttle_reasons.hw_slowdown"],
        unit: None,
        help: "HW Slowdown (reducing the core clocks by a factor of 2 or more) is engaged.",
        get: |_, d, _| reason(d, 0x8),
    },
    Field {
        names: &["clocks_event_reasons.hw_thermal_slowdown", "clocks_throttle_reasons.hw_thermal_slowdown"],
        unit: None,
        help: "HW Thermal Slowdown is engaged (temperature being too high).",
        get: |_, d, _| reason(d, 0x40),
    },
    Field {
        names: &["clocks_event_reasons.hw_power_brake_slowdown", "clocks_throttle_reasons.hw_power_brake_slowdown"],
        unit: None,
        help: "HW Power Brake Slowdown is engaged (external power brake assertion).",
        get: |_, d, _| reason(d, 0x80),
    },
    Field {
        names: &["clocks_event_reasons.sw_thermal_slowdown", "clocks_throttle_reasons.sw_thermal_slowdown"],
        unit: None,
        help: "SW Thermal capping algorithm is reducing clocks below requested clocks.",
        get: |_, d, _| reason(d, 0x20),
    },
    Field {
        names: &["clocks_event_reasons.sync_boost", "clocks_throttle_reasons.sync_boost"],
        unit: None,
        help: "Sync Boost: this GPU's clocks are held to the lowest of its sync-boost group.",
        get: |_, d, _| reason(d, 0x10),
    },
    Field { names: &["memory.total"], unit: M, help: "Total installed GPU memory.", get: |_, d, _| d.memory().and_then(|m| mib(m.total)) },
    Field {
        names: &["memory.reserved"],
        unit: M,
        help: "Total memory reserved by the NVIDIA driver and firmware.",
        get: |_, d, _| d.memory().and_then(|m| mib(m.reserved)),
    },
    Field {
        names: &["memory.used"],
        unit: M,
        help: "Total memory allocated by active contexts.",
        get: |_, d, _| d.memory().and_then(|m| mib(m.used)),
    },
    Field { names: &["memory.free"], unit: M, help: "Total free memory.", get: |_, d, _| d.memory().and_then(|m| mib(m.free)) },
    Field {
        names: &["compute_mode"],
        unit: None,
        help: "The compute mode flag indicates whether individual or multiple compute applications may run on the GPU.",
        get: |_, d, _| d.u32_of("nvmlDeviceGetComputeMode").and_then(|m| txt(compute_mode(m))),
    },
    Field {
        names: &["compute_cap"],
        unit: None,
        help: "The CUDA Compute Capability, represented as Major DOT Minor.",
        get: |_, d, _| {
            let (mut a, mut b) = (0i32, 0i32);
            nv!(d.nvml(), "nvmlDeviceGetCudaComputeCapability", (nvmlDevice_t, *mut i32, *mut i32), d.raw, &mut a, &mut b)?;
            txt(format!("{a}.{b}"))
        },
    },
    Field {
        names: &["utilization.gpu"],
        unit: PCT,
        help: "Percent of time over the past sample period during which one or more kernels was executing on the GPU.",
        get: |_, d, _| d.utilization().and_then(|u| num(u.gpu)),
    },
    Field {
        names: &["utilization.memory"],
        unit: PCT,
        help: "Percent of time over the past sample period during which global (device) memory was being read or written.",
        get: |_, d, _| d.utilization().and_then(|u| num(u.memory)),
    },
    Field {
        names: &["ecc.mode.current"],
        unit: None,
        help: "The ECC mode that the GPU is currently operating under.",
        get: |_, d, _| d.pair_of("nvmlDeviceGetEccMode").and_then(|p| enabled(p.0)),
    },
    Field {
        names: &["ecc.mode.pending"],
        unit: None,
        help: "The ECC mode that the GPU will operate under after the next reboot.",
        get: |_, d, _| d.pair_of("nvmlDeviceGetEccMode").and_then(|p| enabled(p.1)),
    },
    Field {
        names: &["ecc.errors.corrected.volatile.total"],
        unit: None,
        help: "Total errors detected across entire chip (volatile).",
        get: |_, d, _| ecc_total(d, 0, 0),
    },
    Field {
        names: &["ecc.errors.corrected.aggregate.total"],
        unit: None,
        help: "Total errors detected across entire chip (aggregate).",
        get: |_, d, _| ecc_total(d, 0, 1),
    },
    Field {
        names: &["ecc.errors.uncorrected.volatile.total"],
        unit: None,
        help: "Total uncorrected errors detected across entire chip (volatile).",
        get: |_, d, _| ecc_total(d, 1, 0),
    },
    Field {
        names: &["ecc.errors.uncorrected.aggregate.total"],
        unit: None,
        help: "Total uncorrected errors detected across entire chip (aggregate).",
        get: |_, d, _| ecc_total(d, 1, 1),
    },
    Field {
        names: &["temperature.gpu"],
        unit: None,
        help: "Core GPU temperature, in degrees C.",
        get: |_, d, _| d.temperature().and_then(num),
    },
    Field {
        names: &["temperature.gpu.tlimit"],
        unit: None,
        help: "GPU T.Limit temperature, in degrees C.",
        get: |_, d, _| d.slot_i32(nvml_abi::export_table::TLIMIT_TEMPERATURE).and_then(num),
    },
    Field {
        names: &["temperature.memory"],
        unit: None,
        help: "HBM memory temperature, in degrees C.",
        get: |_, d, _| field_val(d, nvml_abi::field::MEMORY_TEMP, 0, |f| fv_i64(f).to_string()),
    },
    Field {
        names: &["power.management"],
        unit: None,
        help: "Whether power management is enabled.",
        get: |_, d, _| d.u32_of("nvmlDeviceGetPowerManagementMode").and_then(|m| txt(if m == 1 { "Enabled" } else { "Disabled" })),
    },
    Field {
        names: &["power.draw"],
        unit: W,
        help: "The last measured power draw for the entire board, in watts.",
        get: |_, d, _| d.u32_of("nvmlDeviceGetPowerUsage").and_then(watts),
    },
    Field {
        names: &["power.draw.average"],
        unit: W,
        help: "The average power draw for the entire board over the last sample period, in watts.",
        get: |_, d, _| d.u32_of("nvmlDeviceGetPowerUsage").and_then(watts),
    },
    Field {
        names: &["power.draw.instant"],
        unit: W,
        help: "The instantaneous power draw for the entire board, in watts.",
        get: |_, d, _| d.u32_of("nvmlDeviceGetPowerUsage").and_then(watts),
    },
    Field {
        names: &["power.limit"],
        unit: W,
        help: "The software power limit, in watts.",
        get: |_, d, _| d.u32_of("nvmlDeviceGetPowerManagementLimit").and_then(watts),
    },
    Field {
        names: &["enforced.power.limit"],
        unit: W,
        help: "The power management algorithm's power ceiling, in watts.",
        // NVIDIA's binary reads this one through the private export table.
        get: |_, d, _| d.slot_u32(nvml_abi::export_table::ENFORCED_POWER_LIMIT).and_then(watts),
    },
    Field {
        names: &["power.default_limit"],
        unit: W,
        help: "The default power management algorithm's power ceiling, in watts.",
        get: |_, d, _| d.u32_of("nvmlDeviceGetPowerManagementDefaultLimit").and_then(watts),
    },
    Field {
        names: &["power.min_limit"],
        unit: W,
        help: "The minimum value in watts that power limit can be set to.",
        get: |_, d, _| limits(d).and_then(|l| watts(l.0)),
    },
    Field {
        names: &["power.max_limit"],
        unit: W,
        help: "The maximum value in watts that power limit can be set to.",
        get: |_, d, _| limits(d).and_then(|l| watts(l.1)),
    },
    Field {
        names: &["clocks.current.graphics", "clocks.gr"],
        unit: MHZ,
        help: "Current frequency of graphics (shader) clock.",
        get: |_, d, _| d.clock("nvmlDeviceGetClockInfo", 0).and_then(num),
    },
    Field {
        names: &["clocks.current.sm", "clocks.sm"],
        unit: MHZ,
        help: "Current frequency of SM (Streaming Multiprocessor) clock.",
        get: |_, d, _| d.clock("nvmlDeviceGetClockInfo", 1).and_then(num),
    },
    Field {
        names: &["clocks.current.memory", "clocks.mem"],
        unit: MHZ,
        help: "Current frequency of memory clock.",
        get: |_, d, _| d.clock("nvmlDeviceGetClockInfo", 2).and_then(num),
    },
    Field {
        names: &["clocks.current.video", "clocks.video"],
        unit: MHZ,
        help: "Current frequency of video encoder/decoder clock.",
        get: |_, d, _| d.clock("nvmlDeviceGetClockInfo", 3).and_then(num),
    },
    Field {
        names: &["clocks.applications.graphics", "clocks.applications.gr"],
        unit: MHZ,
        help: "User specified frequency of graphics (shader) clock.",
        get: |_, d, _| d.clock("nvmlDeviceGetApplicationsClock", 0).and_then(num),
    },
    Field {
        names: &["clocks.applications.memory", "clocks.applications.mem"],
        unit: MHZ,
        help: "User specified frequency of memory clock.",
        get: |_, d, _| d.clock("nvmlDeviceGetApplicationsClock", 2).and_then(num),
    },
    Field {
        names: &["clocks.default_applications.graphics", "clocks.default_applications.gr"],
        unit: MHZ,
        help: "Default frequency of applications graphics (shader) clock.",
        get: |_, d, _| d.clock("nvmlDeviceGetDefaultApplicationsClock", 0).and_then(num),
    },
    Field {
        names: &["clocks.default_applications.memory", "clocks.default_applications.mem"],
        unit: MHZ,
        help: "Default frequency of applications memory clock.",
        get: |_, d, _| d.clock("nvmlDeviceGetDefaultApplicationsClock", 2).and_then(num),
    },
    Field {
        names: &["clocks.max.graphics", "clocks.max.gr"],
        unit: MHZ,
        help: "Maximum frequency of graphics (shader) clock.",
        get: |_, d, _| d.clock("nvmlDeviceGetMaxClockInfo", 0).and_then(num),
    },
    Field {
        names: &["clocks.max.sm", "clocks.max.sm"],
        unit: MHZ,
        help: "Maximum frequency of SM (Streaming Multiprocessor) clock.",
        get: |_, d, _| d.clock("nvmlDeviceGetMaxClockInfo", 1).and_then(num),
    },
    Field {
        names: &["clocks.max.memory", "clocks.max.mem"],
        unit: MHZ,
        help: "Maximum frequency of memory clock.",
        get: |_, d, _| d.clock("nvmlDeviceGetMaxClockInfo", 2).and_then(num),
    },
    Field {
        names: &["mig.mode.current"],
        unit: None,
        help: "The MIG mode that the GPU is currently operating under.",
        get: |_, d, _| d.pair_of("nvmlDeviceGetMigMode").and_then(|p| enabled(p.0)),
    },
    Field {
        names: &["mig.mode.pending"],
        unit: None,
        help: "The MIG mode that the GPU will operate under after reset.",
        get: |_, d, _| d.pair_of("nvmlDeviceGetMigMode").and_then(|p| enabled(p.1)),
    },
];

fn find(name: &str) -> Option<&'static Field> {
    FIELDS.iter().find(|f| f.names.contains(&name))
}

/// A field name that is not valid: NVIDIA's message, exit code 2.
pub fn invalid_field(fields: &[String], known: impl Fn(&str) -> bool) -> Option<String> {
    fields.iter().find(|f| !known(f)).map(|f| format!("Field \"{f}\" is not a valid field to query.\n\n"))
}

/// Checks the requested `--query-gpu` fields.
pub fn check_gpu_fields(fields: &[String]) -> Option<String> {
    invalid_field(fields, |f| find(f).is_some())
}

/// Renders `--query-gpu` for the selected devices.
pub fn render_gpu(nvml: &Nvml, devs: &[Device], fields: &[String], fmt: &Format) -> String {
    let defs: Vec<&Field> = fields.iter().filter_map(|f| find(f)).collect();
    let mut out = String::new();
    if !fmt.noheader {
        let h: Vec<String> = defs
            .iter()
            .map(|f| match f.unit {
                Some(u) => format!("{} [{u}]", f.names[0]),
                None => f.names[0].to_string(),
            })
            .collect();
        out.push_str(&h.join(", "));
        out.push('\n');
    }
    for (i, d) in devs.iter().enumerate() {
        let row: Vec<String> = defs
            .iter()
            .map(|f| match (f.get)(nvml, d, i) {
                Ok(Val::Num(v)) => match f.unit {
                    Some(u) if !fmt.nounits => format!("{v} {u}"),
                    _ => v,
                },
                Ok(Val::Text(t)) => t,
                Err(e) => format!("[{}]", err_text(e)),
            })
            .collect();
        out.push_str(&row.join(", "));
        out.push('\n');
    }
    out
}

/// `--help-query-gpu`.
pub fn help_gpu() -> String {
    let mut s = String::from("List of valid properties to query for the switch \"--query-gpu=\":\n\n");
    for f in FIELDS {
        let names: Vec<String> = f.names.iter().map(|n| format!("\"{n}\"")).collect();
        s.push_str(&format!("Section about {} properties\n{}\n", f.names[0], names.join(" or ")));
        s.push_str(f.help);
        s.push_str("\n\n");
    }
    s
}

/// Compute-app fields: (names, header, unit).
static APP_FIELDS: &[(&[&str], &str, Option<&str>)] = &[
    (&["timestamp"], "timestamp", None),
    (&["gpu_name"], "gpu_name", None),
    (&["gpu_bus_id"], "gpu_bus_id", None),
    (&["gpu_serial"], "gpu_serial", None),
    (&["gpu_uuid"], "gpu_uuid", None),
    (&["pid"], "pid", None),
    (&["process_name", "name"], "process_name", None),
    (&["used_gpu_memory", "used_memory"], "used_gpu_memory", M),
];

/// Checks the requested `--query-compute-apps` fields.
pub fn check_app_fields(fields: &[String]) -> Option<String> {
    invalid_field(fields, |f| APP_FIELDS.iter().any(|a| a.0.contains(&f)))
}

/// Renders `--query-compute-apps`: one row per running compute process, from the public
/// `nvmlDeviceGetComputeRunningProcesses_v3`.
pub fn render_apps(nvml: &Nvml, devs: &[Device], fields: &[String], fmt: &Format) -> String {
    let defs: Vec<_> = fields.iter().filter_map(|f| APP_FIELDS.iter().find(|a| a.0.contains(&f.as_str()))).collect();
    let mut out = String::new();
    if !fmt.noheader {
        let h: Vec<String> = defs.iter().map(|(_, h, u)| u.map_or(h.to_string(), |u| format!("{h} [{u}]"))).collect();
        out.push_str(&h.join(", "));
        out.push('\n');
    }
    for d in devs {
        let Ok(procs) = d.compute_processes() else { continue };
        for p in procs {
            let row: Vec<String> = defs
                .iter()
                .map(|(_, h, u)| {
                    let r: R<String> = match *h {
                        "timestamp" => Ok(strftime("%Y/%m/%d %H:%M:%S.%3N")),
                        "gpu_name" => d.name(),
                        "gpu_bus_id" => d.bus_id(),
                        "gpu_serial" => d.string_of("nvmlDeviceGetSerial", 30),
                        "gpu_uuid" => d.uuid(80),
                        "pid" => Ok(p.pid.to_string()),
                        "process_name" => nvml.process_name(p.pid),
                        _ => Ok(if p.usedGpuMemory == u64::MAX {
                            "[N/A]".to_string()
                        } else {
                            let v = p.usedGpuMemory / (1024 * 1024);
                            match u {
                                Some(u) if !fmt.nounits => format!("{v} {u}"),
                                _ => v.to_string(),
                            }
                        }),
                    };
                    r.unwrap_or_else(|e| format!("[{}]", err_text(e)))
                })
                .collect();
            out.push_str(&row.join(", "));
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_resolve_to_canonical_headers() {
        assert_eq!(find("gpu_name").unwrap().names[0], "name");
        assert_eq!(find("clocks.mem").unwrap().names[0], "clocks.current.memory");
        assert!(check_gpu_fields(&["nonsense".into()]).unwrap().starts_with("Field \"nonsense\""));
        assert!(check_app_fields(&["pid".into(), "used_memory".into()]).is_none());
    }
}
