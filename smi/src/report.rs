//! `-q` (text) and `-q -x` (XML): one tree of labelled values per GPU, rendered either as
//! NVIDIA's indented "Label : value" log or as its `nvsmi_device_v12` XML. `-d` keeps only the
//! sections asked for. Values NVIDIA's 535 binary reads only through NVML's private export table
//! (addressing mode, part numbers, PCIe host max and atomics, sparse mode, T.Limit, deferred
//! clocks) are read from the same slots the same way (`nvml_abi::export_table`): a slot past the
//! table's end prints `Uninitialized`, a NULL slot `N/A`.

use crate::common::{ctime_now, cuda_text, err_text};
use crate::nvml::{nv, Device, Nvml, R};
use nvml_abi::{export_table, field, nvmlDevice_t, nvmlFBCStats_t, nvmlFieldValue_t};
use std::ffi::{c_char, c_uint};
use std::fmt::Write;

/// What NVIDIA prints for a value whose export-table slot is not known here: the fake's table
/// holds NULL there (NOT_SUPPORTED); real captures print `N/A` for these rows too.
const NA_SLOT: &str = "N/A";

/// A string slot's text: an empty string prints N/A.
fn part(s: String) -> String {
    if s.is_empty() {
        "N/A".into()
    } else {
        s
    }
}

/// The names of the set bits of a PCIe atomics mask, each followed by a space; N/A for none.
fn atomics(mask: u32) -> String {
    if mask == 0 {
        return "N/A".into();
    }
    export_table::ATOMIC_CAP_NAMES.iter().enumerate().filter(|(i, _)| mask & (1 << i) != 0).map(|(_, n)| format!("{n} ")).collect()
}

/// One node: a value (leaf) or a section, with its text label and XML tag.
struct Node {
    label: Option<&'static str>,
    tag: Option<&'static str>,
    value: Option<String>,
    xval: Option<String>,
    kids: Vec<Node>,
    /// `-d` section this top-level node belongs to.
    sect: &'static str,
}

fn leaf(label: &'static str, tag: &'static str, v: impl Into<String>) -> Node {
    Node { label: Some(label), tag: Some(tag), value: Some(v.into()), xval: None, kids: vec![], sect: "" }
}
fn sec(label: &'static str, tag: &'static str, kids: Vec<Node>) -> Node {
    Node { label: Some(label), tag: Some(tag), value: None, xval: None, kids, sect: "" }
}
impl Node {
    fn x(mut self, xv: impl Into<String>) -> Node {
        self.xval = Some(xv.into());
        self
    }
    fn s(mut self, sect: &'static str) -> Node {
        self.sect = sect;
        self
    }
    fn xml_only(mut self) -> Node {
        self.label = None;
        self
    }
}

fn v<T>(r: R<T>, f: impl FnOnce(T) -> String) -> String {
    match r {
        Ok(x) => f(x),
        Err(e) => err_text(e).to_string(),
    }
}
fn en(x: u32) -> String {
    (if x == 1 { "Enabled" } else { "Disabled" }).into()
}
fn yes_no(x: u32) -> String {
    (if x != 0 { "Yes" } else { "No" }).into()
}

fn fv_num(f: &nvmlFieldValue_t) -> i64 {
    // SAFETY: reading the union member named by valueType.
    unsafe {
        match f.valueType {
            0 => f.value.dVal as i64,
            1 => f.value.uiVal as i64,
            3 => f.value.ullVal as i64,
            4 => f.value.sllVal,
            5 => f.value.siVal as i64,
            _ => f.value.ullVal as i64,
        }
    }
}

/// Field values by id/scope; each shows its own error.
struct Fields(Vec<nvmlFieldValue_t>, Option<u32>);
impl Fields {
    fn get(d: &Device, ids: &[(u32, u32)]) -> Fields {
        match d.fields(ids) {
            Ok(v) => Fields(v, None),
            Err(e) => Fields(vec![], Some(e)),
        }
    }
    /// The value of a field that answered SUCCESS.
    fn ok(&self, id: u32, scope: u32) -> Option<i64> {
        self.0.iter().find(|x| x.fieldId == id && x.scopeId == scope && x.nvmlReturn == 0).map(fv_num)
    }
    fn show(&self, id: u32, scope: u32, f: impl Fn(i64) -> String) -> String {
        if let Some(e) = self.1 {
            return err_text(e).into();
        }
        match self.0.iter().find(|x| x.fieldId == id && x.scopeId == scope) {
            Some(x) if x.nvmlReturn == 0 => f(fv_num(x)),
            Some(x) => err_text(x.nvmlReturn).into(),
            None => "N/A".into(),
        }
    }
}

fn brand(b: u32) -> &'static str {
    match b {
        1 => "Quadro",
        2 => "Tesla",
        3 => "NVS",
        4 => "Grid",
        5 => "GeForce",
        6 => "Titan",
        7 => "NVIDIA Virtual Applications",
        8 => "NVIDIA Virtual PC",
        9 => "NVIDIA Virtual Compute Server",
        10 => "NVIDIA RTX Virtual Workstation",
        11 => "NVIDIA Cloud Gaming",
        12 => "Quadro RTX",
        13 => "NVIDIA RTX",
        14 => "NVIDIA",
        15 => "GeForce RTX",
        16 => "Titan RTX",
        _ => "Unknown",
    }
}
fn arch(a: u32) -> &'static str {
    match a {
        2 => "Kepler",
        3 => "Maxwell",
        4 => "Pascal",
        5 => "Volta",
        6 => "Turing",
        7 => "Ampere",
        8 => "Ada Lovelace",
        9 => "Hopper",
        _ => "Unknown",
    }
}
fn virt(m: u32) -> &'static str {
    match m {
        0 => "None",
        1 => "Pass-Through",
        2 => "VGPU",
        3 => "Host VGPU",
        4 => "Host VSGA",
        _ => "Unknown",
    }
}
fn cmode(m: u32) -> &'static str {
    match m {
        0 => "Default",
        1 => "Exclusive_Thread",
        2 => "Prohibited",
        3 => "Exclusive_Process",
        _ => "Unknown",
    }
}

fn two(
    d: &Device,
    name: &'static str,
    a: &'static str,
    ta: &'static str,
    b: &'static str,
    tb: &'static str,
    f: fn(u32) -> String,
) -> Vec<Node> {
    let r = d.pair_of(name);
    vec![leaf(a, ta, v(r, |p| f(p.0))), leaf(b, tb, v(r, |p| f(p.1)))]
}

fn u32_out2(d: &Device, name: &'static str) -> R<(u32, u32)> {
    let (mut a, mut b) = (0u32, 0u32);
    nv!(d.nvml(), name, (nvmlDevice_t, *mut c_uint, *mut c_uint), d.raw, &mut a, &mut b).map(|_| (a, b))
}

/// Builds one GPU's tree.
fn gpu(nvml: &Nvml, d: &Device, pstate: &str) -> Vec<Node> {
    let mut n = Vec::new();
    let archr = d.u32_of("nvmlDeviceGetArchitecture");
    n.push(leaf("Product Name", "product_name", v(d.name(), |s| s)));
    n.push(leaf("Product Brand", "product_brand", v(d.u32_of("nvmlDeviceGetBrand"), |b| brand(b).into())));
    n.push(leaf("Product Architecture", "product_architecture", v(archr, |a| arch(a).into())));
    n.push(leaf("Display Mode", "display_mode", v(d.u32_of("nvmlDeviceGetDisplayMode"), en)));
    n.push(leaf("Display Active", "display_active", v(d.u32_of("nvmlDeviceGetDisplayActive"), en)));
    n.push(leaf("Persistence Mode", "persistence_mode", v(d.u32_of("nvmlDeviceGetPersistenceMode"), en)));
    let addressing = |m: u32| ["None", "HMM", "ATS"].get(m as usize).unwrap_or(&"Unknown").to_string();
    n.push(leaf("Addressing Mode", "addressing_mode", v(d.slot_u32(export_table::ADDRESSING_MODE), addressing)));
    let mig = d.pair_of("nvmlDeviceGetMigMode");
    n.push(sec(
        "MIG Mode",
        "mig_mode",
        vec![leaf("Current", "current_mig", v(mig, |p| en(p.0))), leaf("Pending", "pending_mig", v(mig, |p| en(p.1)))],
    ));
    if matches!(mig, Ok((1, _))) {
        let migs = crate::list::mig_devices(d);
        if migs.is_empty() {
            n.push(leaf("MIG Devices", "mig_devices", "None").x("\n\t\t\tNone\n\t\t").xml_only());
        } else {
            let kids = migs
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    let mem = m.memory();
                    let bar = m.bar1();
                    let at = m.attributes();
                    let a = |f: fn(&nvml_abi::nvmlDeviceAttributes_t) -> u32| v(at, |x| f(&x).to_string());
                    sec(
                        "MIG Device",
                        "mig_device",
                        vec![
                            leaf("Index", "index", i.to_string()),
                            leaf("GPU Instance ID", "gpu_instance_id", v(m.u32_of("nvmlDeviceGetGpuInstanceId"), |x| x.to_string())),
                            leaf(
                                "Compute Instance ID",
                                "compute_instance_id",
                                v(m.u32_of("nvmlDeviceGetComputeInstanceId"), |x| x.to_string()),
                            ),
                            sec(
                                "Device Attributes",
                                "device_attributes",
                                vec![sec(
                                    "Shared",
                                    "shared",
                                    vec![
                                        leaf("Multiprocessor count", "multiprocessor_count", a(|x| x.multiprocessorCount)),
                                        leaf("Copy Engine count", "copy_engine_count", a(|x| x.sharedCopyEngineCount)),
                                        leaf("Encoder count", "encoder_count", a(|x| x.sharedEncoderCount)),
                                        leaf("Decoder count", "decoder_count", a(|x| x.sharedDecoderCount)),
                                        leaf("OFA count", "ofa_count", a(|x| x.sharedOfaCount)),
                                        leaf("JPG count", "jpg_count", a(|x| x.sharedJpgCount)),
                                    ],
                                )],
                            ),
                            sec(
                                "ECC Errors",
                                "ecc_error_count",
                                vec![sec(
                                    "Volatile",
                                    "volatile_count",
                                    vec![leaf("SRAM Uncorrectable", "sram_uncorrectable", mem_err(m, 1, 0, 7))],
                                )],
                            ),
                            sec(
                                "FB Memory Usage",
                                "fb_memory_usage",
                                vec![
                                    leaf("Total", "total", v(mem, |x| format!("{} MiB", x.total >> 20))),
                                    leaf("Reserved", "reserved", v(mem, |x| format!("{} MiB", x.reserved >> 20))),
                                    leaf("Used", "used", v(mem, |x| format!("{} MiB", x.used >> 20))),
                                    leaf("Free", "free", v(mem, |x| format!("{} MiB", x.free >> 20))),
                                ],
                            ),
                            sec(
                                "BAR1 Memory",
                                "bar1_memory_usage",
                                vec![
                                    leaf("Total", "total", v(bar, |x| format!("{} MiB", x.bar1Total >> 20))),
                                    leaf("Used", "used", v(bar, |x| format!("{} MiB", x.bar1Used >> 20))),
                                    leaf("Free", "free", v(bar, |x| format!("{} MiB", x.bar1Free >> 20))),
                                ],
                            ),
                        ],
                    )
                })
                .collect();
            n.push(sec("MIG Devices", "mig_devices", kids));
        }
    } else {
        n.push(leaf("MIG Devices", "mig_devices", "").x("\n\t\t\tNone\n\t\t").xml_only());
    }
    n.push(leaf("Accounting Mode", "accounting_mode", v(d.u32_of("nvmlDeviceGetAccountingMode"), en)).s("ACCOUNTING"));
    n.push(
        leaf(
            "Accounting Mode Buffer Size",
            "accounting_mode_buffer_size",
            v(d.u32_of("nvmlDeviceGetAccountingBufferSize"), |x| x.to_string()),
        )
        .s("ACCOUNTING"),
    );
    n.push(sec(
        "Driver Model",
        "driver_model",
        two(d, "nvmlDeviceGetDriverModel", "Current", "current_dm", "Pending", "pending_dm", |x| {
            (if x == 0 { "WDDM" } else { "TCC" }).into()
        }),
    ));
    n.push(leaf("Serial Number", "serial", v(d.string_of("nvmlDeviceGetSerial", 30), |s| s)));
    n.push(leaf("GPU UUID", "uuid", v(d.uuid(96), |s| s)));
    n.push(leaf("Minor Number", "minor_number", v(d.u32_of("nvmlDeviceGetMinorNumber"), |x| x.to_string())));
    n.push(leaf("VBIOS Version", "vbios_version", v(d.string_of("nvmlDeviceGetVbiosVersion", 32), |s| s)));
    n.push(leaf("MultiGPU Board", "multigpu_board", v(d.u32_of("nvmlDeviceGetMultiGpuBoard"), yes_no)));
    n.push(leaf("Board ID", "board_id", v(d.u32_of("nvmlDeviceGetBoardId"), |x| format!("{x:#x}"))));
    n.push(leaf("Board Part Number", "board_part_number", v(d.string_of("nvmlDeviceGetBoardPartNumber", 80), |s| s)));
    n.push(leaf("GPU Part Number", "gpu_part_number", v(d.slot_string(export_table::GPU_PART_NUMBER, 80), part)));
    n.push(leaf("FRU Part Number", "gpu_fru_part_number", v(d.slot_string(export_table::FRU_PART_NUMBER, 20), part)));
    n.push(leaf("Module ID", "gpu_module_id", v(d.u32_of("nvmlDeviceGetModuleId"), |x| x.to_string())));
    let inforom = |obj: u32| -> String {
        let mut buf = [0 as c_char; 16];
        let r = nv!(d.nvml(), "nvmlDeviceGetInforomVersion", (nvmlDevice_t, c_uint, *mut c_char, c_uint), d.raw, obj, buf.as_mut_ptr(), 16);
        v(r, |_| crate::nvml::c_string(&buf))
    };
    n.push(sec(
        "Inforom Version",
        "inforom_version",
        vec![
            leaf("Image Version", "img_version", v(d.string_of("nvmlDeviceGetInforomImageVersion", 16), |s| s)),
            leaf("OEM Object", "oem_object", inforom(0)),
            leaf("ECC Object", "ecc_object", inforom(1)),
            leaf("Power Management Object", "pwr_object", inforom(2)),
        ],
    ));
    let bbx = {
        let (mut ts, mut dur) = (0u64, 0u64);
        nv!(d.nvml(), "nvmlDeviceGetLastBBXFlushTime", (nvmlDevice_t, *mut u64, *mut u64), d.raw, &mut ts, &mut dur).map(|_| (ts, dur))
    };
    n.push(sec(
        "Inforom BBX Object Flush",
        "inforom_bbx_flush",
        vec![
            leaf("Latest Timestamp", "latest_timestamp", v(bbx, |x| x.0.to_string())),
            leaf("Latest Duration", "latest_duration", v(bbx, |x| x.1.to_string())),
        ],
    ));
    let gom = |x: u32| -> String { ["All On", "Compute", "Low Double Precision"].get(x as usize).unwrap_or(&"Unknown").to_string() };
    n.push(sec(
        "GPU Operation Mode",
        "gpu_operation_mode",
        two(d, "nvmlDeviceGetGpuOperationMode", "Current", "current_gom", "Pending", "pending_gom", gom),
    ));
    n.push(
        leaf("GSP Firmware Version", "gsp_firmware_version", v(d.string_of("nvmlDeviceGetGspFirmwareVersion", 80), |s| s))
            .s("GSP_FIRMWARE_VERSION"),
    );
    n.push(sec(
        "GPU Virtualization Mode",
        "gpu_virtualization_mode",
        vec![
            leaf("Virtualization Mode", "virtualization_mode", v(d.u32_of("nvmlDeviceGetVirtualizationMode"), |m| virt(m).into())),
            leaf(
                "Host VGPU Mode",
                "host_vgpu_mode",
                v(d.u32_of("nvmlDeviceGetHostVgpuMode"), |m| (if m == 1 { "SR-IOV" } else { "Non SR-IOV" }).into()),
            ),
        ],
    ));
    let rf = Fields::get(d, &[(226, 0), (227, 0)]);
    n.push(
        sec(
            "GPU Reset Status",
            "gpu_reset_status",
            vec![
                leaf("Reset Required", "reset_required", rf.show(226, 0, |x| yes_no(x as u32))),
                leaf("Drain and Reset Recommended", "drain_and_reset_recommended", rf.show(227, 0, |x| yes_no(x as u32))),
            ],
        )
        .s("RESET_STATUS"),
    );
    n.push(sec("IBMNPU", "ibmnpu", vec![leaf("Relaxed Ordering Mode", "relaxed_ordering_mode", NA_SLOT)]));
    n.push(pci(d));
    n.push(leaf("Fan Speed", "fan_speed", v(d.u32_of("nvmlDeviceGetFanSpeed"), |x| format!("{x} %"))));
    n.push(leaf("Performance State", "performance_state", pstate).s("PERFORMANCE"));
    n.push(clock_events(d).s("PERFORMANCE"));
    let sparse = v(d.slot_u32(export_table::SPARSE_OPERATION_MODE), |m| (if m == 0 { "Disabled" } else { "Enabled" }).into());
    n.push(leaf("Sparse Operation Mode", "sparse_operation_mode", sparse).s("PERFORMANCE"));
    let mem = d.memory();
    let mib = |x: u64| format!("{} MiB", x >> 20);
    n.push(
        sec(
            "FB Memory Usage",
            "fb_memory_usage",
            vec![
                leaf("Total", "total", v(mem, |m| mib(m.total))),
                leaf("Reserved", "reserved", v(mem, |m| mib(m.reserved))),
                leaf("Used", "used", v(mem, |m| mib(m.used))),
                leaf("Free", "free", v(mem, |m| mib(m.free))),
            ],
        )
        .s("MEMORY"),
    );
    let bar = d.bar1();
    n.push(
        sec(
            "BAR1 Memory Usage",
            "bar1_memory_usage",
            vec![
                leaf("Total", "total", v(bar, |m| mib(m.bar1Total))),
                leaf("Used", "used", v(bar, |m| mib(m.bar1Used))),
                leaf("Free", "free", v(bar, |m| mib(m.bar1Free))),
            ],
        )
        .s("MEMORY"),
    );
    let cc = {
        let mut m = [0u64; 6];
        nv!(d.nvml(), "nvmlDeviceGetConfComputeProtectedMemoryUsage", (nvmlDevice_t, *mut u64), d.raw, m.as_mut_ptr()).map(|_| m)
    };
    n.push(
        sec(
            "Conf Compute Protected Memory Usage",
            "cc_protected_memory_usage",
            vec![
                leaf("Total", "total", v(cc, |m| mib(m[0]))),
                leaf("Used", "used", v(cc, |m| mib(m[2]))),
                leaf("Free", "free", v(cc, |m| mib(m[1]))),
            ],
        )
        .s("MEMORY"),
    );
    n.push(leaf("Compute Mode", "compute_mode", v(d.u32_of("nvmlDeviceGetComputeMode"), |m| cmode(m).into())).s("COMPUTE"));
    let u = d.utilization();
    let codec = |name: &'static str| v(u32_out2(d, name), |x| format!("{} %", x.0));
    n.push(
        sec(
            "Utilization",
            "utilization",
            vec![
                leaf("Gpu", "gpu_util", v(u, |x| format!("{} %", x.gpu))),
                leaf("Memory", "memory_util", v(u, |x| format!("{} %", x.memory))),
                leaf("Encoder", "encoder_util", codec("nvmlDeviceGetEncoderUtilization")),
                leaf("Decoder", "decoder_util", codec("nvmlDeviceGetDecoderUtilization")),
                leaf("JPEG", "jpeg_util", codec("nvmlDeviceGetJpgUtilization")),
                leaf("OFA", "ofa_util", codec("nvmlDeviceGetOfaUtilization")),
            ],
        )
        .s("UTILIZATION"),
    );
    n.push(samples(d, "GPU Utilization Samples", "gpu_util_samples", 1, "%", 1.0, "S:UTILIZATION"));
    n.push(samples(d, "Memory Utilization Samples", "mem_util_samples", 2, "%", 1.0, "S:UTILIZATION"));
    n.push(samples(d, "ENC Utilization Samples", "enc_util_samples", 3, "%", 1.0, "S:UTILIZATION"));
    n.push(samples(d, "DEC Utilization Samples", "dec_util_samples", 4, "%", 1.0, "S:UTILIZATION"));
    let enc = {
        let (mut a, mut b, mut c) = (0u32, 0u32, 0u32);
        nv!(d.nvml(), "nvmlDeviceGetEncoderStats", (nvmlDevice_t, *mut c_uint, *mut c_uint, *mut c_uint), d.raw, &mut a, &mut b, &mut c)
            .map(|_| (a, b, c))
    };
    n.push(
        sec(
            "Encoder Stats",
            "encoder_stats",
            vec![
                leaf("Active Sessions", "session_count", v(enc, |x| x.0.to_string())),
                leaf("Average FPS", "average_fps", v(enc, |x| x.1.to_string())),
                leaf("Average Latency", "average_latency", v(enc, |x| x.2.to_string())),
            ],
        )
        .s("ENCODER_STATS"),
    );
    let fbc = {
        let mut s = nvmlFBCStats_t::default();
        nv!(d.nvml(), "nvmlDeviceGetFBCStats", (nvmlDevice_t, *mut nvmlFBCStats_t), d.raw, &mut s).map(|_| s)
    };
    n.push(
        sec(
            "FBC Stats",
            "fbc_stats",
            vec![
                leaf("Active Sessions", "session_count", v(fbc, |x| x.sessionsCount.to_string())),
                leaf("Average FPS", "average_fps", v(fbc, |x| x.averageFPS.to_string())),
                leaf("Average Latency", "average_latency", v(fbc, |x| x.averageLatency.to_string())),
            ],
        )
        .s("FBC_STATS"),
    );
    let eccm = d.pair_of("nvmlDeviceGetEccMode");
    n.push(
        sec(
            "ECC Mode",
            "ecc_mode",
            vec![leaf("Current", "current_ecc", v(eccm, |p| en(p.0))), leaf("Pending", "pending_ecc", v(eccm, |p| en(p.1)))],
        )
        .s("ECC"),
    );
    let a = archr.unwrap_or(0);
    n.push(ecc_errors(d, a).s("ECC"));
    n.push(retired(d).s("PAGE_RETIREMENT"));
    n.push(remapped(d).s("ROW_REMAPPER"));
    n.extend(temperature(d));
    let mut pw = power(d, pstate);
    pw.insert(1, samples(d, "Power Samples", "power_samples", 0, "W", 1000.0, "S:POWER"));
    n.extend(pw);
    let mut ck = clocks(d);
    ck.insert(6, samples(d, "Memory Clock Samples", "mem_clk_samples", 6, "MHz", 1.0, "S:CLOCK"));
    ck.insert(6, samples(d, "SM Clock Samples", "sm_clk_samples", 5, "MHz", 1.0, "S:CLOCK"));
    n.extend(ck);
    n.push(sec("Voltage", "voltage", vec![leaf("Graphics", "graphics_volt", NA_SLOT)]).s("VOLTAGE"));
    n.push(fabric(d));
    n.push(supported_clocks(d).s("SUPPORTED_CLOCKS"));
    n.push(processes(nvml, d).s("PIDS"));
    n.push(leaf("Accounted Processes", "accounted_processes", "None").x("\n\t\t").s("ACCOUNTING_PIDS"));
    n
}

fn pci(d: &Device) -> Node {
    let p = d.pci();
    let g = |name: &'static str| v(d.u32_of(name), |x| x.to_string());
    let tp = |k: u32| v(d.u32_arg("nvmlDeviceGetPcieThroughput", k), |x| format!("{x} KB/s"));
    let bridge = {
        // SAFETY: plain-old-data struct.
        let mut h: nvml_abi::nvmlBridgeChipHierarchy_t = unsafe { std::mem::zeroed() };
        nv!(d.nvml(), "nvmlDeviceGetBridgeChipInfo", (nvmlDevice_t, *mut nvml_abi::nvmlBridgeChipHierarchy_t), d.raw, &mut h).map(|_| h)
    };
    let bridge_ok = bridge.ok().filter(|h| h.bridgeCount > 0);
    let f = Fields::get(d, &[(field::PCIE_REPLAY_ROLLOVER_COUNTER, 0)]);
    let caps = d.slot_atomic_caps();
    sec(
        "PCI",
        "pci",
        vec![
            leaf("Bus", "pci_bus", v(p, |p| format!("0x{:02X}", p.bus))).x(v(p, |p| format!("{:02X}", p.bus))),
            leaf("Device", "pci_device", v(p, |p| format!("0x{:02X}", p.device))).x(v(p, |p| format!("{:02X}", p.device))),
            leaf("Domain", "pci_domain", v(p, |p| format!("0x{:04X}", p.domain))).x(v(p, |p| format!("{:04X}", p.domain))),
            leaf("Device Id", "pci_device_id", v(p, |p| format!("0x{:08X}", p.pciDeviceId))).x(v(p, |p| format!("{:08X}", p.pciDeviceId))),
            leaf("Bus Id", "pci_bus_id", v(p, |p| crate::nvml::c_string(&p.busId))),
            leaf("Sub System Id", "pci_sub_system_id", v(p, |p| format!("0x{:08X}", p.pciSubSystemId)))
                .x(v(p, |p| format!("{:08X}", p.pciSubSystemId))),
            sec(
                "GPU Link Info",
                "pci_gpu_link_info",
                vec![
                    sec(
                        "PCIe Generation",
                        "pcie_gen",
                        vec![
                            leaf("Max", "max_link_gen", g("nvmlDeviceGetMaxPcieLinkGeneration")),
                            leaf("Current", "current_link_gen", g("nvmlDeviceGetCurrPcieLinkGeneration")),
                            leaf("Device Current", "device_current_link_gen", g("nvmlDeviceGetCurrPcieLinkGeneration")),
                            leaf("Device Max", "max_device_link_gen", g("nvmlDeviceGetGpuMaxPcieLinkGeneration")),
                            leaf("Host Max", "max_host_link_gen", v(d.slot_u32(export_table::PCIE_HOST_MAX_GEN), |x| x.to_string())),
                        ],
                    ),
                    sec(
                        "Link Width",
                        "link_widths",
                        vec![
                            leaf("Max", "max_link_width", v(d.u32_of("nvmlDeviceGetMaxPcieLinkWidth"), |x| format!("{x}x"))),
                            leaf("Current", "current_link_width", v(d.u32_of("nvmlDeviceGetCurrPcieLinkWidth"), |x| format!("{x}x"))),
                        ],
                    ),
                ],
            ),
            sec(
                "Bridge Chip",
                "pci_bridge_chip",
                vec![
                    leaf(
                        "Type",
                        "bridge_chip_type",
                        bridge_ok.map_or("N/A".into(), |h| (if h.bridgeChipInfo[0].r#type == 0 { "PLX" } else { "BR04" }).to_string()),
                    ),
                    leaf(
                        "Firmware",
                        "bridge_chip_fw",
                        bridge_ok.map_or("N/A".into(), |h| format!("{:#010x}", h.bridgeChipInfo[0].fwVersion)),
                    ),
                ],
            ),
            leaf("Replays Since Reset", "replay_counter", g("nvmlDeviceGetPcieReplayCounter")),
            leaf("Replay Number Rollovers", "replay_rollover_counter", f.show(field::PCIE_REPLAY_ROLLOVER_COUNTER, 0, |x| x.to_string())),
            leaf("Tx Throughput", "tx_util", tp(0)),
            leaf("Rx Throughput", "rx_util", tp(1)),
            leaf("Atomic Caps Inbound", "atomic_caps_inbound", v(caps, |c| atomics(c.inbound))),
            leaf("Atomic Caps Outbound", "atomic_caps_outbound", v(caps, |c| atomics(c.outbound))),
        ],
    )
}

fn clock_events(d: &Device) -> Node {
    let cur = d.u64_of("nvmlDeviceGetCurrentClocksThrottleReasons");
    let sup = d.u64_of("nvmlDeviceGetSupportedClocksThrottleReasons");
    let bit = |b: u64| -> String {
        match (cur, sup) {
            (Ok(c), Ok(s)) if s & b != 0 => (if c & b != 0 { "Active" } else { "Not Active" }).into(),
            (Ok(_), Ok(_)) => "N/A".into(),
            (Err(e), _) | (_, Err(e)) => err_text(e).into(),
        }
    };
    use nvml_abi::clocks_event as ce;
    let mut hw = leaf("HW Slowdown", "clocks_event_reason_hw_slowdown", bit(ce::HW_SLOWDOWN));
    hw.kids = vec![];
    let kids = vec![
        leaf("Idle", "clocks_event_reason_gpu_idle", bit(ce::GPU_IDLE)),
        leaf("Applications Clocks Setting", "clocks_event_reason_applications_clocks_setting", bit(ce::APPLICATIONS_CLOCKS_SETTING)),
        leaf("SW Power Cap", "clocks_event_reason_sw_power_cap", bit(ce::SW_POWER_CAP)),
        hw,
        // Indented one level deeper in the text, siblings in the XML.
        Node {
            label: Some("    HW Thermal Slowdown"),
            ..leaf("", "clocks_event_reason_hw_thermal_slowdown", bit(ce::HW_THERMAL_SLOWDOWN))
        },
        Node {
            label: Some("    HW Power Brake Slowdown"),
            ..leaf("", "clocks_event_reason_hw_power_brake_slowdown", bit(ce::HW_POWER_BRAKE_SLOWDOWN))
        },
        leaf("Sync Boost", "clocks_event_reason_sync_boost", bit(ce::SYNC_BOOST)),
        leaf("SW Thermal Slowdown", "clocks_event_reason_sw_thermal_slowdown", bit(ce::SW_THERMAL_SLOWDOWN)),
        leaf("Display Clock Setting", "clocks_event_reason_display_clocks_setting", bit(ce::DISPLAY_CLOCK_SETTING)),
    ];
    sec("Clocks Event Reasons", "clocks_event_reasons", kids)
}

fn mem_err(d: &Device, etype: u32, counter: u32, loc: u32) -> String {
    let mut x: u64 = 0;
    let r = nv!(
        d.nvml(),
        "nvmlDeviceGetMemoryErrorCounter",
        (nvmlDevice_t, c_uint, c_uint, c_uint, *mut u64),
        d.raw,
        etype,
        counter,
        loc,
        &mut x
    );
    v(r, |_| x.to_string())
}
fn total_err(d: &Device, etype: u32, counter: u32) -> String {
    let mut x: u64 = 0;
    let r = nv!(d.nvml(), "nvmlDeviceGetTotalEccErrors", (nvmlDevice_t, c_uint, c_uint, *mut u64), d.raw, etype, counter, &mut x);
    v(r, |_| x.to_string())
}

/// `nvmlEccSramErrorStatus_v1_t` (nvml.h 12.2): version + 12 counters + bThresholdExceeded.
#[repr(C)]
#[derive(Default)]
struct SramStatus {
    version: u32,
    agg_unc_parity: u64,
    agg_unc_sec_ded: u64,
    agg_cor: u64,
    vol_unc_parity: u64,
    vol_unc_sec_ded: u64,
    vol_cor: u64,
    agg_unc_l2: u64,
    agg_unc_sm: u64,
    agg_unc_microcontroller: u64,
    agg_unc_pcie: u64,
    agg_unc_other: u64,
    threshold_exceeded: u32,
}

fn ecc_errors(d: &Device, arch: u32) -> Node {
    const DEV: u32 = 2;
    const SRAM: u32 = 7;
    if arch <= 4 && arch != 0 {
        // Kepler..Pascal: per location.
        let locs: [(&str, &str, u32); 7] = [
            ("Device Memory", "device_memory", 2),
            ("Register File", "register_file", 3),
            ("L1 Cache", "l1_cache", 0),
            ("L2 Cache", "l2_cache", 1),
            ("Texture Memory", "texture_memory", 4),
            ("Texture Shared", "texture_shm", 5),
            ("CBU", "cbu", 6),
        ];
        let block = |counter: u32| -> Vec<Node> {
            [("Single Bit            ", "single_bit", 0u32), ("Double Bit            ", "double_bit", 1u32)]
                .iter()
                .map(|&(l, t, et)| {
                    let mut k: Vec<Node> = locs.iter().map(|&(ll, tt, loc)| leaf(ll, tt, mem_err(d, et, counter, loc))).collect();
                    k.push(leaf("Total", "total", total_err(d, et, counter)));
                    sec(l, t, k)
                })
                .collect()
        };
        return sec("ECC Errors", "ecc_errors", vec![sec("Volatile", "volatile", block(0)), sec("Aggregate", "aggregate", block(1))]);
    }
    if arch < 7 {
        let block = |c: u32| -> Vec<Node> {
            vec![
                leaf("SRAM Correctable", "sram_correctable", mem_err(d, 0, c, SRAM)),
                leaf("SRAM Uncorrectable", "sram_uncorrectable", mem_err(d, 1, c, SRAM)),
                leaf("DRAM Correctable", "dram_correctable", mem_err(d, 0, c, DEV)),
                leaf("DRAM Uncorrectable", "dram_uncorrectable", mem_err(d, 1, c, DEV)),
            ]
        };
        return sec("ECC Errors", "ecc_errors", vec![sec("Volatile", "volatile", block(0)), sec("Aggregate", "aggregate", block(1))]);
    }
    let mut s = SramStatus { version: nvml_abi::struct_version(std::mem::size_of::<SramStatus>(), 1), ..Default::default() };
    let sr = nv!(d.nvml(), "nvmlDeviceGetSramEccErrorStatus", (nvmlDevice_t, *mut SramStatus), d.raw, &mut s);
    let sv = |x: u64| v(sr, |_| x.to_string());
    sec(
        "ECC Errors",
        "ecc_errors",
        vec![
            sec(
                "Volatile",
                "volatile",
                vec![
                    leaf("SRAM Correctable", "sram_correctable", sv(s.vol_cor)),
                    leaf("SRAM Uncorrectable Parity", "sram_uncorrectable_parity", sv(s.vol_unc_parity)),
                    leaf("SRAM Uncorrectable SEC-DED", "sram_uncorrectable_secded", sv(s.vol_unc_sec_ded)),
                    leaf("DRAM Correctable", "dram_correctable", mem_err(d, 0, 0, DEV)),
                    leaf("DRAM Uncorrectable", "dram_uncorrectable", mem_err(d, 1, 0, DEV)),
                ],
            ),
            sec(
                "Aggregate",
                "aggregate",
                vec![
                    leaf("SRAM Correctable", "sram_correctable", sv(s.agg_cor)),
                    leaf("SRAM Uncorrectable Parity", "sram_uncorrectable_parity", sv(s.agg_unc_parity)),
                    leaf("SRAM Uncorrectable SEC-DED", "sram_uncorrectable_secded", sv(s.agg_unc_sec_ded)),
                    leaf("DRAM Correctable", "dram_correctable", mem_err(d, 0, 1, DEV)),
                    leaf("DRAM Uncorrectable", "dram_uncorrectable", mem_err(d, 1, 1, DEV)),
                    leaf("SRAM Threshold Exceeded", "sram_threshold_exceeded", v(sr, |_| yes_no(s.threshold_exceeded))),
                ],
            ),
            sec(
                "Aggregate Uncorrectable SRAM Sources",
                "aggregate_uncorrectable_sram_sources",
                vec![
                    leaf("SRAM L2", "sram_l2", sv(s.agg_unc_l2)),
                    leaf("SRAM SM", "sram_sm", sv(s.agg_unc_sm)),
                    leaf("SRAM Microcontroller", "sram_microcontroller", sv(s.agg_unc_microcontroller)),
                    leaf("SRAM PCIE", "sram_pcie", sv(s.agg_unc_pcie)),
                    leaf("SRAM Other", "sram_other", sv(s.agg_unc_other)),
                ],
            ),
        ],
    )
}

fn retired_count(d: &Device, cause: u32) -> R<u32> {
    let mut n: c_uint = 0;
    nv!(d.nvml(), "nvmlDeviceGetRetiredPages", (nvmlDevice_t, c_uint, *mut c_uint, *mut u64), d.raw, cause, &mut n, std::ptr::null_mut())
        .or_else(|e| if e == nvml_abi::ret::INSUFFICIENT_SIZE { Ok(()) } else { Err(e) })
        .map(|_| n)
}

/// The addresses of the pages retired for `cause` (none when the call fails).
fn retired_addresses(d: &Device, cause: u32, n: u32) -> Vec<u64> {
    let mut n: c_uint = n;
    let mut v = vec![0u64; n as usize];
    if n == 0 {
        return v;
    }
    match nv!(d.nvml(), "nvmlDeviceGetRetiredPages", (nvmlDevice_t, c_uint, *mut c_uint, *mut u64), d.raw, cause, &mut n, v.as_mut_ptr()) {
        Ok(()) => {
            v.truncate(n as usize);
            v
        }
        Err(_) => Vec::new(),
    }
}

fn retired(d: &Device) -> Node {
    let sb = retired_count(d, 0);
    let db = retired_count(d, 1);
    let pend = v(d.u32_of("nvmlDeviceGetRetiredPagesPendingStatus"), yes_no);
    let mut n = sec(
        "Retired Pages",
        "retired_pages",
        vec![
            leaf("Single Bit ECC", "multiple_single_bit_retirement", v(sb, |x| x.to_string())),
            leaf("Double Bit ECC", "double_bit_retirement", v(db, |x| x.to_string())),
            leaf("Pending Page Blacklist", "pending_blacklist", pend.clone()),
            leaf("", "pending_retirement", pend).xml_only(),
        ],
    );
    // The XML nests count and page list per cause.
    for (i, r) in [sb, db].into_iter().enumerate() {
        let t = v(r, |x| x.to_string());
        let pages = match r {
            Ok(n) => {
                let list: String = retired_addresses(d, i as u32, n)
                    .iter()
                    .map(|a| format!("\n\t\t\t\t\t<retired_page>\n\t\t\t\t\t\t<retired_page_address>0x{a:016x}</retired_page_address>\n\t\t\t\t\t</retired_page>"))
                    .collect();
                format!("{list}\n\t\t\t\t")
            }
            Err(_) => "N/A".into(),
        };
        n.kids[i].xval =
            Some(format!("\n\t\t\t\t<retired_count>{t}</retired_count>\n\t\t\t\t<retired_pagelist>{pages}</retired_pagelist>\n\t\t\t"));
    }
    n
}

fn remapped(d: &Device) -> Node {
    let (mut c, mut u, mut p, mut f) = (0u32, 0u32, 0u32, 0u32);
    let r = nv!(
        d.nvml(),
        "nvmlDeviceGetRemappedRows",
        (nvmlDevice_t, *mut c_uint, *mut c_uint, *mut c_uint, *mut c_uint),
        d.raw,
        &mut c,
        &mut u,
        &mut p,
        &mut f
    );
    if let Err(e) = r {
        return leaf("Remapped Rows", "remapped_rows", err_text(e));
    }
    let mut h = nvml_abi::nvmlRowRemapperHistogramValues_t::default();
    let hr =
        nv!(d.nvml(), "nvmlDeviceGetRowRemapperHistogram", (nvmlDevice_t, *mut nvml_abi::nvmlRowRemapperHistogramValues_t), d.raw, &mut h);
    let hist = match hr {
        Ok(()) => sec(
            "Bank Remap Availability Histogram",
            "row_remapper_histogram",
            vec![
                leaf("Max", "row_remapper_histogram_max", format!("{} bank(s)", h.max)),
                leaf("High", "row_remapper_histogram_high", format!("{} bank(s)", h.high)),
                leaf("Partial", "row_remapper_histogram_partial", format!("{} bank(s)", h.partial)),
                leaf("Low", "row_remapper_histogram_low", format!("{} bank(s)", h.low)),
                leaf("None", "row_remapper_histogram_none", format!("{} bank(s)", h.none)),
            ],
        ),
        Err(e) => leaf("Bank Remap Availability Histogram", "row_remapper_histogram", err_text(e)),
    };
    sec(
        "Remapped Rows",
        "remapped_rows",
        vec![
            leaf("Correctable Error", "remapped_row_corr", c.to_string()),
            leaf("Uncorrectable Error", "remapped_row_unc", u.to_string()),
            leaf("Pending", "remapped_row_pending", yes_no(p)),
            leaf("Remapping Failure Occurred", "remapped_row_failure", yes_no(f)),
            hist,
        ],
    )
}

fn temperature(d: &Device) -> Vec<Node> {
    let f = Fields::get(d, &[(193, 0), (194, 0), (196, 0)]);
    let mem = Fields::get(d, &[(82, 0), (195, 0)]);
    let c = |x: i64| format!("{x} C");
    let th = |t: u32| v(d.u32_arg("nvmlDeviceGetTemperatureThreshold", t), |x| format!("{x} C"));
    // NVIDIA's binary prints thresholds relative to T.Limit unless the T.Limit slot answers
    // NOT_SUPPORTED; then it prints the absolute ones.
    let tlimit = d.slot_i32(export_table::TLIMIT_TEMPERATURE);
    let absolute = tlimit == Err(nvml_abi::ret::NOT_SUPPORTED);
    let mut rows = vec![
        leaf("GPU Current Temp", "gpu_temp", v(d.temperature(), |x| format!("{x} C"))),
        leaf("GPU T.Limit Temp", "gpu_temp_tlimit", v(tlimit, |x| format!("{x} C"))),
    ];
    if absolute {
        rows.push(leaf("GPU Shutdown Temp", "gpu_temp_max_threshold", th(0)));
        rows.push(leaf("GPU Slowdown Temp", "gpu_temp_slow_threshold", th(1)));
        rows.push(leaf("GPU Max Operating Temp", "gpu_temp_max_gpu_threshold", th(3)));
    } else {
        rows.push(leaf("GPU Shutdown T.Limit Temp", "gpu_temp_max_tlimit_threshold", f.show(193, 0, c)));
        rows.push(leaf("GPU Slowdown T.Limit Temp", "gpu_temp_slow_tlimit_threshold", f.show(194, 0, c)));
        rows.push(leaf("GPU Max Operating T.Limit Temp", "gpu_temp_max_gpu_tlimit_threshold", f.show(196, 0, c)));
    }
    let target = d.u32_arg("nvmlDeviceGetTemperatureThreshold", 5).or_else(|_| d.u32_arg("nvmlDeviceGetTemperatureThreshold", 7));
    rows.push(leaf("GPU Target Temperature", "gpu_target_temperature", target.map_or("N/A".into(), |x| format!("{x} C"))));
    // Any failure of the memory reading prints N/A; the T.Limit maximum shows its own error.
    let mem_temp = if mem.1.is_some() { mem.show(82, 0, c) } else { mem.ok(82, 0).map_or("N/A".into(), c) };
    rows.push(leaf("Memory Current Temp", "memory_temp", mem_temp));
    if absolute {
        rows.push(leaf("Memory Max Operating Temp", "gpu_temp_max_mem_threshold", th(2)));
    } else {
        rows.push(leaf("Memory Max Operating T.Limit Temp", "gpu_temp_max_mem_tlimit_threshold", mem.show(195, 0, c)));
    }
    vec![
        sec("Temperature", "temperature", rows).s("TEMPERATURE"),
        sec(
            "Supported GPU Target Temp",
            "supported_gpu_target_temp",
            vec![leaf("GPU Target Temp Min", "gpu_target_temp_min", th(4)), leaf("GPU Target Temp Max", "gpu_target_temp_max", th(6))],
        )
        .xml_only()
        .s("SUPPORTED_GPU_TARGET_TEMP"),
    ]
}

fn power(d: &Device, pstate: &str) -> Vec<Node> {
    let ids: Vec<(u32, u32)> = [0u32, 1].iter().flat_map(|&s| [190u32, 192, 189, 187, 188].map(|id| (id, s))).chain([(185, 1)]).collect();
    let f = Fields::get(d, &ids);
    let w = |x: i64| format!("{:.2} W", x as f64 / 1000.0);
    let block = |label: &'static str, tag: &'static str, scope: u32, draw: String| {
        sec(
            label,
            tag,
            vec![
                leaf("", "power_state", pstate).xml_only(),
                leaf("Power Draw", "power_draw", draw),
                leaf("Current Power Limit", "current_power_limit", f.show(190, scope, w)),
                leaf("Requested Power Limit", "requested_power_limit", f.show(192, scope, w)),
                leaf("Default Power Limit", "default_power_limit", f.show(189, scope, w)),
                leaf("Min Power Limit", "min_power_limit", f.show(187, scope, w)),
                leaf("Max Power Limit", "max_power_limit", f.show(188, scope, w)),
            ],
        )
        .s("POWER")
    };
    vec![
        block("GPU Power Readings", "gpu_power_readings", 0, v(d.u32_of("nvmlDeviceGetPowerUsage"), |x| w(x as i64))),
        block("Module Power Readings", "module_power_readings", 1, f.show(185, 1, w)),
    ]
}

fn clocks(d: &Device) -> Vec<Node> {
    let mhz = |name: &'static str, k: u32| v(d.u32_arg(name, k), |x| format!("{x} MHz"));
    let ab = u32_out2(d, "nvmlDeviceGetAutoBoostedClocksEnabled");
    let on = |x: u32| (if x == 1 { "On" } else { "Off" }).to_string();
    vec![
        sec(
            "Clocks",
            "clocks",
            vec![
                leaf("Graphics", "graphics_clock", mhz("nvmlDeviceGetClockInfo", 0)),
                leaf("SM", "sm_clock", mhz("nvmlDeviceGetClockInfo", 1)),
                leaf("Memory", "mem_clock", mhz("nvmlDeviceGetClockInfo", 2)),
                leaf("Video", "video_clock", mhz("nvmlDeviceGetClockInfo", 3)),
            ],
        )
        .s("CLOCK"),
        sec(
            "Applications Clocks",
            "applications_clocks",
            vec![
                leaf("Graphics", "graphics_clock", mhz("nvmlDeviceGetApplicationsClock", 0)),
                leaf("Memory", "mem_clock", mhz("nvmlDeviceGetApplicationsClock", 2)),
            ],
        )
        .s("CLOCK"),
        sec(
            "Default Applications Clocks",
            "default_applications_clocks",
            vec![
                leaf("Graphics", "graphics_clock", mhz("nvmlDeviceGetDefaultApplicationsClock", 0)),
                leaf("Memory", "mem_clock", mhz("nvmlDeviceGetDefaultApplicationsClock", 2)),
            ],
        )
        .s("CLOCK"),
        sec(
            "Deferred Clocks",
            "deferred_clocks",
            vec![leaf("Memory", "mem_clock", v(d.slot_u32(export_table::DEFERRED_MEMORY_CLOCK), |x| format!("{x} MHz")))],
        )
        .s("CLOCK"),
        sec(
            "Max Clocks",
            "max_clocks",
            vec![
                leaf("Graphics", "graphics_clock", mhz("nvmlDeviceGetMaxClockInfo", 0)),
                leaf("SM", "sm_clock", mhz("nvmlDeviceGetMaxClockInfo", 1)),
                leaf("Memory", "mem_clock", mhz("nvmlDeviceGetMaxClockInfo", 2)),
                leaf("Video", "video_clock", mhz("nvmlDeviceGetMaxClockInfo", 3)),
            ],
        )
        .s("CLOCK"),
        sec(
            "Max Customer Boost Clocks",
            "max_customer_boost_clocks",
            vec![leaf("Graphics", "graphics_clock", v(d.clock_id(0, 3), |x| format!("{x} MHz")))],
        )
        .s("CLOCK"),
        sec(
            "Clock Policy",
            "clock_policy",
            vec![
                leaf("Auto Boost", "auto_boost", v(ab, |x| on(x.0))),
                leaf("Auto Boost Default", "auto_boost_default", v(ab, |x| on(x.1))),
            ],
        )
        .s("CLOCK"),
    ]
}

fn fabric(d: &Device) -> Node {
    let mut fi = nvml_abi::nvmlGpuFabricInfo_t::default();
    let r = nv!(d.nvml(), "nvmlDeviceGetGpuFabricInfo", (nvmlDevice_t, *mut nvml_abi::nvmlGpuFabricInfo_t), d.raw, &mut fi);
    let state = v(r, |_| ["N/A", "Not Started", "In Progress", "Completed"].get(fi.state as usize).unwrap_or(&"Unknown").to_string());
    let status = match r {
        Ok(()) if fi.state == 3 => (if fi.status == 0 { "Success" } else { err_text(fi.status) }).to_string(),
        Ok(()) => "N/A".into(),
        Err(e) => err_text(e).into(),
    };
    sec("Fabric", "fabric", vec![leaf("State", "state", state), leaf("Status", "status", status)])
}

fn supported_clocks(d: &Device) -> Node {
    let list = |name: &'static str, mem: Option<u32>| -> R<Vec<u32>> {
        let mut n: c_uint = 256;
        let mut v = vec![0u32; 256];
        match mem {
            Some(m) => nv!(d.nvml(), name, (nvmlDevice_t, c_uint, *mut c_uint, *mut c_uint), d.raw, m, &mut n, v.as_mut_ptr()),
            None => nv!(d.nvml(), name, (nvmlDevice_t, *mut c_uint, *mut c_uint), d.raw, &mut n, v.as_mut_ptr()),
        }?;
        v.truncate(n as usize);
        Ok(v)
    };
    let mut x = String::from("\n");
    match list("nvmlDeviceGetSupportedMemoryClocks", None) {
        Ok(mems) => {
            for m in mems {
                let _ = write!(x, "\t\t\t<supported_mem_clock>\n\t\t\t\t<value>{m} MHz</value>\n");
                match list("nvmlDeviceGetSupportedGraphicsClocks", Some(m)) {
                    Ok(clocks) => {
                        for g in clocks {
                            let _ = writeln!(x, "\t\t\t\t<supported_graphics_clock>{g} MHz</supported_graphics_clock>");
                        }
                    }
                    // NVIDIA prints the error in place of the list (more than 256 clocks: Unknown Error).
                    Err(e) => {
                        let _ = writeln!(x, "\t\t\t\t<supported_graphics_clock>{}</supported_graphics_clock>", err_text(e));
                    }
                }
                x.push_str("\t\t\t</supported_mem_clock>\n");
            }
            x.push_str("\t\t");
        }
        Err(e) => x = err_text(e).to_string(),
    }
    leaf("", "supported_clocks", "").x(x).xml_only()
}

fn processes(nvml: &Nvml, d: &Device) -> Node {
    let procs = d.typed_processes();
    if procs.is_empty() {
        return leaf("Processes", "processes", "None").x("\n\t\t");
    }
    let id = |x: u32| if x == u32::MAX { "N/A".to_string() } else { x.to_string() };
    let kids = procs
        .into_iter()
        .map(|(p, t)| {
            let mem = if p.usedGpuMemory == u64::MAX { "N/A".into() } else { format!("{} MiB", p.usedGpuMemory >> 20) };
            let name = nvml.process_name(p.pid).unwrap_or_else(|e| err_text(e).into());
            let mut info = sec(
                "",
                "process_info",
                vec![
                    leaf("GPU instance ID", "gpu_instance_id", id(p.gpuInstanceId)),
                    leaf("Compute instance ID", "compute_instance_id", id(p.computeInstanceId)),
                    leaf("Process ID", "pid", p.pid.to_string()),
                    leaf("    Type", "type", t),
                    leaf("    Name", "process_name", name),
                    leaf("    Used GPU Memory", "used_memory", mem),
                ],
            );
            info.label = None;
            info
        })
        .collect();
    sec("Processes", "processes", kids)
}

/// Sections each `-d` name selects, besides those tagged directly.
fn selected(sect: &str, display: &[String], as_xml: bool) -> bool {
    if display.is_empty() {
        return !sect.starts_with("S:") && (as_xml || sect != "ACCOUNTING_PIDS");
    }
    let want = |s: &str| display.iter().any(|d| d == s);
    match sect {
        "" | "MIGDEV" => false,
        "ACCOUNTING_PIDS" => want("ACCOUNTING"),
        s => want(s.trim_start_matches("S:")),
    }
}

/// `nvmlSample_t`.
#[repr(C)]
#[derive(Clone, Copy)]
struct Sample {
    ts: u64,
    value: nvml_abi::nvmlValue_t,
}

/// A "... Samples" block (`-d UTILIZATION/POWER/CLOCK` only), from `nvmlDeviceGetSamples`.
fn samples(d: &Device, label: &'static str, tag: &'static str, kind: u32, unit: &'static str, scale: f64, sect: &'static str) -> Node {
    let mut vt: c_uint = 0;
    let mut n: c_uint = 0;
    let r = nv!(
        d.nvml(),
        "nvmlDeviceGetSamples",
        (nvmlDevice_t, c_uint, u64, *mut c_uint, *mut c_uint, *mut Sample),
        d.raw,
        kind,
        0,
        &mut vt,
        &mut n,
        std::ptr::null_mut()
    )
    .and_then(|_| {
        // SAFETY: plain-old-data.
        let mut buf: Vec<Sample> = vec![unsafe { std::mem::zeroed() }; n as usize];
        nv!(
            d.nvml(),
            "nvmlDeviceGetSamples",
            (nvmlDevice_t, c_uint, u64, *mut c_uint, *mut c_uint, *mut Sample),
            d.raw,
            kind,
            0,
            &mut vt,
            &mut n,
            buf.as_mut_ptr()
        )?;
        buf.truncate(n as usize);
        Ok(buf)
    });
    let vals = |b: &Vec<Sample>| -> Vec<f64> {
        b.iter()
            .map(|s| {
                let f =
                    nvmlFieldValue_t { fieldId: 0, scopeId: 0, timestamp: 0, latencyUsec: 0, valueType: vt, nvmlReturn: 0, value: s.value };
                fv_num(&f) as f64 / scale
            })
            .collect()
    };
    let fmt = |x: f64| if scale > 1.0 { format!("{x:.2} {unit}") } else { format!("{} {unit}", x as i64) };
    let kids = match &r {
        Ok(b) if !b.is_empty() => {
            let xs = vals(b);
            let dur = (b.last().map_or(0, |s| s.ts) - b[0].ts) as f64 / 1e6;
            let max = xs.iter().cloned().fold(f64::MIN, f64::max);
            let min = xs.iter().cloned().fold(f64::MAX, f64::min);
            let avg = xs.iter().sum::<f64>() / xs.len() as f64;
            vec![
                leaf("Duration", "duration", format!("{dur:.2} sec")),
                leaf("Number of Samples", "number_of_samples", xs.len().to_string()),
                leaf("Max", "max", fmt(max)),
                leaf("Min", "min", fmt(min)),
                leaf("Avg", "avg", fmt(avg)),
            ]
        }
        _ => {
            let e = match r {
                Err(e) => err_text(e),
                Ok(_) => "N/A",
            };
            ["Duration", "Number of Samples", "Max", "Min", "Avg"]
                .iter()
                .zip(["duration", "number_of_samples", "max", "min", "avg"])
                .map(|(l, t)| leaf(l, t, e))
                .collect()
        }
    };
    sec(label, tag, kids).s(sect)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn text(o: &mut String, n: &Node, indent: usize) {
    // Unlabelled containers (process entries) print their children at the same depth.
    let Some(label) = n.label else {
        if n.value.is_none() && n.tag == Some("process_info") {
            for k in &n.kids {
                text(o, k, indent);
            }
        }
        return;
    };
    // A label starting with spaces is one level deeper than its siblings in the text only.
    let extra = label.len() - label.trim_start().len();
    let (indent, label) = (indent + extra, label.trim_start());
    // NVIDIA prints the MIG devices' container only in XML; in text its entries sit at its depth.
    if n.tag == Some("mig_devices") && n.value.is_none() {
        for k in &n.kids {
            text(o, k, indent);
        }
        return;
    }
    match &n.value {
        Some(v) => {
            let w = 42usize.saturating_sub(indent);
            let _ = writeln!(o, "{:indent$}{:<w$}: {}", "", label, v);
        }
        None => {
            let _ = writeln!(o, "{:indent$}{}", "", label);
            for k in &n.kids {
                text(o, k, indent + 4);
            }
        }
    }
}

fn xml(o: &mut String, n: &Node, depth: usize) {
    let Some(tag) = n.tag else { return };
    let tabs = "\t".repeat(depth);
    match (&n.value, &n.xval) {
        (_, Some(x)) => {
            let _ = writeln!(o, "{tabs}<{tag}>{x}</{tag}>");
        }
        (Some(v), None) => {
            let _ = writeln!(o, "{tabs}<{tag}>{}</{tag}>", esc(v));
        }
        (None, None) => {
            let _ = writeln!(o, "{tabs}<{tag}>");
            // NVIDIA's XML keeps `<mig_device>` at the depth of `<mig_devices>`.
            let inner = if tag == "mig_devices" { depth } else { depth + 1 };
            for k in &n.kids {
                xml(o, k, inner);
            }
            let _ = writeln!(o, "{tabs}</{tag}>");
        }
    }
}

/// Renders `-q` / `-q -x` for the selected devices.
pub fn render(nvml: &Nvml, devs: &[Device], as_xml: bool, display: &[String], _by_id: bool) -> String {
    let es = nvml.event_set();
    let drv = v(nvml.driver_version(), |s| s);
    let cuda = v(nvml.cuda_version(), cuda_text);
    let count = nvml.device_count().unwrap_or(devs.len() as u32);
    let now = ctime_now();
    let mut o = String::new();
    if as_xml {
        o.push_str("<?xml version=\"1.0\" ?>\n<!DOCTYPE nvidia_smi_log SYSTEM \"nvsmi_device_v12.dtd\">\n<nvidia_smi_log>\n");
        let _ = write!(o, "\t<timestamp>{now}</timestamp>\n\t<driver_version>{}</driver_version>\n\t<cuda_version>{cuda}</cuda_version>\n\t<attached_gpus>{count}</attached_gpus>\n", esc(&drv));
    } else {
        let _ = write!(
            o,
            "\n==============NVSMI LOG==============\n\n{:<42}: {now}\n{:<42}: {drv}\n{:<42}: {cuda}\n\n{:<42}: {count}\n",
            "Timestamp", "Driver Version", "CUDA Version", "Attached GPUs"
        );
    }
    for d in devs {
        let bus = v(d.bus_id(), |s| s);
        let pstate = v(d.u32_of("nvmlDeviceGetPerformanceState"), |p| if p == 32 { "Unknown".into() } else { format!("P{p}") });
        let nodes: Vec<Node> = gpu(nvml, d, &pstate).into_iter().filter(|n| selected(n.sect, display, as_xml)).collect();
        if as_xml {
            let _ = writeln!(o, "\t<gpu id=\"{bus}\">");
            for n in &nodes {
                xml(&mut o, n, 2);
            }
            o.push_str("\t</gpu>\n\n");
        } else {
            let _ = writeln!(o, "GPU {bus}");
            for n in &nodes {
                text(&mut o, n, 4);
            }
            o.push('\n');
        }
    }
    if as_xml {
        o.push_str("</nvidia_smi_log>\n");
    }
    if let Ok(s) = es {
        nvml.event_set_free(s);
    }
    o
}
