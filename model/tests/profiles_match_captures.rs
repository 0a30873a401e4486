//! Checks the built-in profiles against real `nvidia-smi -q -x` captures
//! (`tests/fixtures/hardware/`). Every property the profile and the capture both state must
//! agree; the test lists every mismatch at once.

use std::fmt::Display;
use std::path::PathBuf;

use fakegpu_model::board::{AddressingMode, AtomicOp};
use fakegpu_model::profile::{AppClocks, ClockSet, VirtualizationMode};
use fakegpu_model::{find_builtin, gpu_identity, Profile};
use roxmltree::{Document, Node, ParsingOptions};

/// Profile ↔ capture file.
const PAIRS: &[(&str, &str)] = &[
    ("h100", "qx-h100.xml"),
    ("a100-40gb", "qx-a100.xml"),
    ("b200", "qx-b200.xml"),
    ("gb200", "qx-gb200.xml"),
    ("gb300", "qx-gb300.xml"),
    ("l40s", "qx-l40s.xml"),
    ("t4", "qx-t4.xml"),
];

/// PCI addresses the model cannot express. For these only the bus number is compared; the entry
/// must still differ in full, so that it is removed once the model learns the layout. None now:
/// `board.pci_addresses` places the T4 (device 0x1E) and GB300 (a PCI domain per GPU) captures.
const ADDRESS_DEVIATIONS: &[(&str, &str)] = &[];

fn fixture(file: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/hardware").join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn parse(text: &str) -> Document<'_> {
    let opts = ParsingOptions { allow_dtd: true, ..ParsingOptions::default() };
    Document::parse_with_options(text, opts).expect("capture is well-formed XML")
}

/// Text of the element at `path` (`a/b/c`) below `node`, trimmed.
fn get<'a>(node: Node<'a, 'a>, path: &str) -> Option<&'a str> {
    let mut cur = node;
    for part in path.split('/') {
        cur = cur.children().find(|c| c.has_tag_name(part))?;
    }
    Some(cur.text().unwrap_or("").trim())
}

/// A number followed by an optional unit (`"40960 MiB"`, `"16x"`, `"-5 C"`), or `None`
/// where the board says N/A or "deprecated".
fn number(text: &str) -> Option<f64> {
    let digits: String = text.trim().chars().take_while(|c| c.is_ascii_digit() || *c == '.' || *c == '-').collect();
    digits.parse().ok()
}

struct Check<'a> {
    gpu: Node<'a, 'a>,
    profile: &'a Profile,
    mismatches: Vec<String>,
}

impl<'a> Check<'a> {
    fn eq<T: PartialEq + Display>(&mut self, key: &str, element: &str, profile: T, capture: T) {
        if profile != capture {
            self.mismatches.push(format!("{key} = {profile}, capture <{element}> = {capture}"));
        }
    }

    fn text(&self, element: &str) -> &'a str {
        get(self.gpu, element).unwrap_or_else(|| panic!("capture lacks <{element}>"))
    }

    /// A string the profile holds as `Option` (`None` ↔ N/A).
    fn opt_str(&mut self, key: &str, element: &str, profile: Option<&str>) {
        let capture = self.text(element);
        let capture = (capture != "N/A").then_some(capture);
        self.eq(key, element, show(profile), show(capture));
    }

    fn str(&mut self, key: &str, element: &str, profile: &str) {
        let capture = self.text(element);
        self.eq(key, element, profile, capture);
    }

    /// A numeric element times `scale` against a number the profile holds.
    fn num(&mut self, key: &str, element: &str, scale: f64, profile: i64) {
        let text = self.text(element);
        match number(text) {
            Some(v) => self.eq(key, element, profile, (v * scale).round() as i64),
            None => self.mismatches.push(format!("{key} = {profile}, capture <{element}> = {text:?}")),
        }
    }

    /// A numeric element the profile holds as `Option` (`None` ↔ N/A, deprecated, absent).
    fn opt_num(&mut self, key: &str, element: &str, profile: Option<i64>) {
        let capture = get(self.gpu, element).and_then(number).map(|v| v as i64);
        self.eq(key, element, show(profile), show(capture));
    }

    fn flag(&mut self, key: &str, element: &str, profile: bool, yes: &str) {
        let capture = self.text(element) == yes;
        self.eq(key, element, profile, capture);
    }

    fn clock_set(&mut self, key: &str, element: &str, set: ClockSet) {
        for (field, tag, value) in [
            ("graphics_mhz", "graphics_clock", set.graphics_mhz),
            ("sm_mhz", "sm_clock", set.sm_mhz),
            ("memory_mhz", "mem_clock", set.memory_mhz),
            ("video_mhz", "video_clock", set.video_mhz),
        ] {
            self.num(&format!("{key}.{field}"), &format!("{element}/{tag}"), 1.0, value.into());
        }
    }

    fn app_clocks(&mut self, key: &str, element: &str, clocks: Option<AppClocks>) {
        for (field, tag, value) in
            [("graphics_mhz", "graphics_clock", clocks.map(|c| c.graphics_mhz)), ("memory_mhz", "mem_clock", clocks.map(|c| c.memory_mhz))]
        {
            self.opt_num(&format!("{key}.{field}"), &format!("{element}/{tag}"), value.map(i64::from));
        }
    }
}

fn show<T: Display>(v: Option<T>) -> String {
    v.map_or_else(|| "null (N/A)".to_string(), |v| v.to_string())
}

fn compare(profile: &Profile, gpus: &[Node<'_, '_>]) -> Vec<String> {
    let gpu = gpus[0];
    let mut c = Check { gpu, profile, mismatches: Vec::new() };
    let p = c.profile;

    c.str("product_name", "product_name", &p.product_name);
    c.str("brand", "product_brand", p.brand.display());
    c.str("architecture", "product_architecture", p.architecture.display());
    c.str("vbios_version", "vbios_version", &p.vbios_version);
    c.str("board_part_number", "board_part_number", &p.board_part_number);
    c.opt_str("gpu_part_number", "gpu_part_number", p.gpu_part_number.as_deref());
    c.flag("multi_gpu_board", "multigpu_board", p.multi_gpu_board, "Yes");
    c.str("inforom.image", "inforom_version/img_version", &p.inforom.image);
    c.opt_str("inforom.oem", "inforom_version/oem_object", p.inforom.oem.as_deref());
    c.opt_str("inforom.ecc", "inforom_version/ecc_object", p.inforom.ecc.as_deref());
    c.opt_str("inforom.power", "inforom_version/pwr_object", p.inforom.power.as_deref());

    // PCI
    let hex = |text: &str| u32::from_str_radix(text, 16).unwrap_or(u32::MAX);
    let (dev, sub) = (hex(c.text("pci/pci_device_id")), hex(c.text("pci/pci_sub_system_id")));
    c.eq("pci.device_id", "pci/pci_device_id", format!("0x{:08X}", p.pci.device_id.0), format!("0x{dev:08X}"));
    c.eq("pci.subsystem_id", "pci/pci_sub_system_id", format!("0x{:08X}", p.pci.subsystem_id.0), format!("0x{sub:08X}"));
    let link = "pci/pci_gpu_link_info";
    for (key, element, value) in [
        ("pci.max_link_gen", "pcie_gen/max_link_gen", p.pci.max_link_gen),
        ("pci.gpu_max_link_gen", "pcie_gen/max_device_link_gen", p.pci.gpu_max_link_gen),
        ("pci.current_link_gen", "pcie_gen/current_link_gen", p.pci.current_link_gen),
        ("pci.max_link_width", "link_widths/max_link_width", p.pci.max_link_width),
        ("pci.current_link_width", "link_widths/current_link_width", p.pci.current_link_width),
    ] {
        c.num(key, &format!("{link}/{element}"), 1.0, value.into());
    }

    // Bus ids of every GPU in the capture, as the model computes them.
    let bus_ids: Vec<u32> = p.pci.bus_ids.iter().map(|b| b.0).collect();
    let deviation = ADDRESS_DEVIATIONS.iter().find(|(n, _)| *n == p.name);
    let mut any_full_mismatch = false;
    for (index, node) in gpus.iter().enumerate() {
        let want = node.attribute("id").expect("<gpu id=...>");
        let placed = p.board.addresses_for(gpus.len() as u32);
        let have = placed.map_or_else(|| gpu_identity("node", index as u32, &bus_ids).pci, |a| a[index]);
        let key = format!("pci.bus_ids (GPU {index})");
        if have.bus_id() != want {
            any_full_mismatch = true;
        }
        match deviation {
            None => c.eq(&key, "gpu id", have.bus_id(), want.to_string()),
            Some(_) => {
                let bus = get(*node, "pci/pci_bus").map(hex).unwrap_or(u32::MAX);
                c.eq(&key, "pci/pci_bus", have.bus, bus);
            }
        }
    }
    if let Some((_, why)) = deviation {
        if !any_full_mismatch {
            c.mismatches.push(format!("ADDRESS_DEVIATIONS lists `{}` ({why}) but its addresses now match: remove the entry", p.name));
        }
    }

    // Memory, MiB
    c.num("memory.total_mib", "fb_memory_usage/total", 1.0, p.memory.total_mib as i64);
    c.num("memory.reserved_mib", "fb_memory_usage/reserved", 1.0, p.memory.reserved_mib as i64);
    c.num("memory.bar1_total_mib", "bar1_memory_usage/total", 1.0, p.memory.bar1_total_mib as i64);
    c.num("memory.bar1_used_mib", "bar1_memory_usage/used", 1.0, p.memory.bar1_used_mib as i64);

    // Clocks, MHz
    c.clock_set("clocks.idle", "clocks", p.clocks.idle);
    c.clock_set("clocks.max", "max_clocks", p.clocks.max);
    c.app_clocks("clocks.applications", "applications_clocks", p.clocks.applications);
    c.app_clocks("clocks.default_applications", "default_applications_clocks", p.clocks.default_applications);
    c.opt_num("clocks.max_customer_boost_mhz", "max_customer_boost_clocks/graphics_clock", p.clocks.max_customer_boost_mhz.map(i64::from));

    // Power, W in the capture, mW in the profile
    let pw = "gpu_power_readings";
    for (key, element, value) in [
        ("power.idle_draw_mw", "instant_power_draw", p.power.idle_draw_mw),
        ("power.default_limit_mw", "default_power_limit", p.power.default_limit_mw),
        ("power.min_limit_mw", "min_power_limit", p.power.min_limit_mw),
        ("power.max_limit_mw", "max_power_limit", p.power.max_limit_mw),
    ] {
        c.num(key, &format!("{pw}/{element}"), 1000.0, value.into());
    }

    // Temperatures, °C
    let t = p.thermal;
    c.num("thermal.idle_gpu_c", "temperature/gpu_temp", 1.0, t.idle_gpu_c.into());
    c.opt_num("thermal.idle_memory_c", "temperature/memory_temp", t.idle_memory_c.map(i64::from));
    // Absolute thresholds, where the driver still reports them.
    for (key, element, value) in [
        ("thermal.shutdown_c", "gpu_temp_max_threshold", Some(t.shutdown_c)),
        ("thermal.slowdown_c", "gpu_temp_slow_threshold", Some(t.slowdown_c)),
        ("thermal.gpu_max_c", "gpu_temp_max_gpu_threshold", t.gpu_max_c),
        ("thermal.memory_max_c", "gpu_temp_max_mem_threshold", t.memory_max_c),
    ] {
        let element = format!("temperature/{element}");
        if get(gpu, &element).is_some() {
            c.opt_num(key, &element, value.map(i64::from));
        }
    }
    // Thresholds relative to T.Limit (Hopper, Ada and later on recent drivers).
    let tlimit_margin = get(gpu, "temperature/gpu_temp_tlimit")
        .and_then(number)
        .filter(|_| get(gpu, "temperature/gpu_temp_max_tlimit_threshold").is_some());
    match (tlimit_margin, t.tlimit) {
        (None, tlimit) => c.eq("thermal.tlimit", "temperature/gpu_temp_tlimit", show(tlimit.map(|_| "set")), show(None::<&str>)),
        (Some(_), None) => c.mismatches.push("thermal.tlimit = null, but the capture reports T.Limit thresholds".into()),
        (Some(margin), Some(tl)) => {
            for (key, element, value) in [
                ("shutdown_c", "gpu_temp_max_tlimit_threshold", Some(tl.shutdown_c)),
                ("slowdown_c", "gpu_temp_slow_tlimit_threshold", Some(tl.slowdown_c)),
                ("gpu_max_c", "gpu_temp_max_gpu_tlimit_threshold", Some(tl.gpu_max_c)),
                ("memory_max_c", "gpu_temp_max_mem_tlimit_threshold", tl.memory_max_c),
            ] {
                c.opt_num(&format!("thermal.tlimit.{key}"), &format!("temperature/{element}"), value.map(i64::from));
            }
            // The absolute thresholds follow from T.Limit = current temperature + margin.
            let limit = i64::from(t.idle_gpu_c) + margin as i64;
            for (key, absolute, offset) in [
                ("thermal.shutdown_c", Some(t.shutdown_c), tl.shutdown_c),
                ("thermal.slowdown_c", Some(t.slowdown_c), tl.slowdown_c),
                ("thermal.gpu_max_c", t.gpu_max_c, tl.gpu_max_c),
            ] {
                c.eq(
                    key,
                    "temperature/gpu_temp + gpu_temp_tlimit - offset",
                    show(absolute.map(i64::from)),
                    show(Some(limit - i64::from(offset))),
                );
            }
        }
    }

    // Modes
    let fan = get(gpu, "fan_speed").and_then(number).map(|v| v as i64);
    c.eq("fan_speed_percent", "fan_speed", show(p.fan_speed_percent.map(i64::from)), show(fan));
    c.flag("ecc_enabled", "ecc_mode/current_ecc", p.ecc_enabled, "Enabled");
    c.flag("persistence_mode", "persistence_mode", p.persistence_mode, "Enabled");
    let gsp = c.text("gsp_firmware_version") != "N/A";
    c.eq("gsp_firmware", "gsp_firmware_version", p.gsp_firmware, gsp);
    let virt = match c.text("gpu_virtualization_mode/virtualization_mode") {
        "None" => "none",
        "Pass-Through" => "passthrough",
        other => other,
    };
    let have = match p.virtualization_mode {
        VirtualizationMode::None => "none",
        VirtualizationMode::Passthrough => "passthrough",
    };
    c.eq("virtualization_mode", "gpu_virtualization_mode/virtualization_mode", have, virt);
    let pstate = c.text("performance_state").trim_start_matches('P').to_string();
    c.eq("idle_pstate", "performance_state", p.idle_pstate.to_string(), pstate);
    let mig = c.text("mig_mode/current_mig") != "N/A";
    c.eq("mig_capable", "mig_mode/current_mig", p.mig_capable, mig);

    board(&mut c, gpus);
    c.mismatches
}

/// The `board` facts: export-table fields, module ids, remapper banks, fabric.
fn board(c: &mut Check<'_>, gpus: &[Node<'_, '_>]) {
    let b = &c.profile.board;
    let addressing = b.addressing_mode.map(|m| match m {
        AddressingMode::None => "None",
        AddressingMode::Hmm => "HMM",
        AddressingMode::Ats => "ATS",
    });
    c.opt_str("board.addressing_mode", "addressing_mode", addressing);
    let sparse = b.sparse_operation_mode.map(|on| if on { "Enabled" } else { "Disabled" });
    c.opt_str("board.sparse_operation_mode", "sparse_operation_mode", sparse);
    c.opt_num("board.pcie_host_max_link_gen", "pci/pci_gpu_link_info/pcie_gen/max_host_link_gen", b.pcie_host_max_link_gen.map(i64::from));
    // nvidia-smi prints the operations in bit order, each followed by a space.
    let names = |ops: &[AtomicOp]| {
        let mut sorted = ops.to_vec();
        sorted.sort_by_key(|op| op.bit());
        let text: Vec<String> = sorted.iter().map(|op| serde_json::to_string(op).unwrap().trim_matches('"').to_string()).collect();
        (!text.is_empty()).then(|| text.join(" "))
    };
    let capture_ops = |c: &Check<'_>, e: &str| Some(c.text(e).trim().to_string()).filter(|t| t != "N/A");
    let (inb, outb) = (capture_ops(c, "pci/atomic_caps_inbound"), capture_ops(c, "pci/atomic_caps_outbound"));
    c.eq("board.pcie_atomics.inbound", "pci/atomic_caps_inbound", show(names(&b.pcie_atomics.inbound)), show(inb));
    c.eq("board.pcie_atomics.outbound", "pci/atomic_caps_outbound", show(names(&b.pcie_atomics.outbound)), show(outb));
    let banks = get(c.gpu, "remapped_rows/row_remapper_histogram/row_remapper_histogram_max").and_then(number).map(|v| v as i64);
    c.eq("board.remap_banks", "row_remapper_histogram_max", show(b.remap_banks.map(i64::from)), show(banks));
    // Module ids of every GPU whose bus position the profile gives one for.
    for (i, gpu) in gpus.iter().enumerate().take(b.module_ids.len()) {
        let m = get(*gpu, "platformInfo/module_id").and_then(number).map(|v| v as i64);
        c.eq(&format!("board.module_ids[{i}]"), "platformInfo/module_id", show(b.module_ids.get(i).map(|&m| i64::from(m))), show(m));
    }
    let state = c.text("fabric/state");
    let clique = get(c.gpu, "fabric/cliqueId").and_then(number).map(|v| v as i64);
    match b.fabric {
        None => c.eq("board.fabric", "fabric/state", "N/A", state),
        Some(f) => {
            c.eq("board.fabric", "fabric/state", "Completed", state);
            c.eq("board.fabric.clique_id", "fabric/cliqueId", show(Some(i64::from(f.clique_id))), show(clique));
            let zero = c.text("fabric/clusterUuid") == "00000000-0000-0000-0000-000000000000";
            c.eq("board.fabric.multi_node", "fabric/clusterUuid (zero on HGX)", f.multi_node, !zero);
        }
    }
}

/// The driver and CUDA versions. A board the reference (535) driver does not support (its
/// compute capability needs a later CUDA) states the capture's driver and CUDA version, which it
/// really ran. A board the 535 driver supports keeps 535 (the branch of the libraries this
/// project mirrors and of NVIDIA's nvidia-smi its suites run); its capture then shows a later
/// driver, which the profile's sources must name (so the choice is documented).
/// The GSP firmware the model reports is the driver's version: each capture shows that too.
fn driver(p: &Profile, root: Node<'_, '_>, gpus: &[Node<'_, '_>]) -> Vec<String> {
    use fakegpu_model::driver::{branch, cuda_of_branch, min_cuda_for, parse_cuda_text, REFERENCE_DRIVER_VERSION};
    let mut out = Vec::new();
    let drv = get(root, "driver_version").expect("capture has <driver_version>");
    let cuda = parse_cuda_text(get(root, "cuda_version").expect("capture has <cuda_version>")).expect("capture's <cuda_version>");
    let reference_cuda = cuda_of_branch(branch(REFERENCE_DRIVER_VERSION).unwrap()).unwrap();
    if min_cuda_for(p.compute_capability) > reference_cuda {
        if (p.driver_version.as_str(), p.cuda_driver_version) != (drv, cuda) {
            out.push(format!(
                "driver {} / CUDA {}, capture <driver_version> {drv} / <cuda_version> {cuda}",
                p.driver_version, p.cuda_driver_version
            ));
        }
    } else {
        if (p.driver_version.as_str(), p.cuda_driver_version) != (REFERENCE_DRIVER_VERSION, reference_cuda) {
            out.push(format!(
                "driver {} / CUDA {}: a board the 535 driver runs states the reference 535 driver",
                p.driver_version, p.cuda_driver_version
            ));
        }
        if branch(drv) < branch(REFERENCE_DRIVER_VERSION) || !p.sources.iter().any(|s| s.contains(drv)) {
            out.push(format!("capture <driver_version> {drv}: expected a later driver than 535, named in the profile's sources"));
        }
    }
    for g in gpus {
        let gsp = get(*g, "gsp_firmware_version").unwrap_or("N/A");
        if p.gsp_firmware && gsp != drv {
            out.push(format!("capture <gsp_firmware_version> {gsp} is not the driver version {drv}"));
        }
    }
    out
}

#[test]
fn profiles_match_their_captures() {
    let mut report = Vec::new();
    for (name, file) in PAIRS {
        let profile = find_builtin(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        let text = fixture(file);
        let doc = parse(&text);
        let gpus: Vec<Node> = doc.root_element().children().filter(|n| n.has_tag_name("gpu")).collect();
        assert!(!gpus.is_empty(), "{file} has no <gpu>");
        let attached = get(doc.root_element(), "attached_gpus").and_then(number);
        assert_eq!(attached, Some(gpus.len() as f64), "{file}: attached_gpus");
        for m in compare(profile, &gpus).into_iter().chain(driver(profile, doc.root_element(), &gpus)) {
            report.push(format!("{name} vs {file}: {m}"));
        }
    }
    assert!(report.is_empty(), "{} mismatch(es) between profiles and captures:\n  {}", report.len(), report.join("\n  "));
}

/// The comparison itself must notice differences: a profile changed in a few places
/// fails with each change named.
#[test]
fn a_changed_profile_is_caught() {
    let mut profile = find_builtin("h100").unwrap().clone();
    profile.memory.total_mib += 1;
    profile.clocks.max.memory_mhz = 1593;
    profile.pci.subsystem_id.0 = 0x1658_10DE;
    profile.thermal.slowdown_c += 1;
    profile.pci.bus_ids.reverse();
    profile.board.module_ids.swap(0, 1);
    profile.board.remap_banks = None;
    let text = fixture("qx-h100.xml");
    let doc = parse(&text);
    let gpus: Vec<Node> = doc.root_element().children().filter(|n| n.has_tag_name("gpu")).collect();
    let found = compare(&profile, &gpus).join("\n");
    // Driver versions: a 535 board that states another driver, a board that needs a later one
    // stating 535, and a 535 board whose sources do not name its capture's driver.
    profile.driver_version = "580.105.08".into();
    assert!(driver(&profile, doc.root_element(), &gpus).iter().any(|m| m.contains("reference 535")));
    let mut b200 = find_builtin("b200").unwrap().clone();
    (b200.driver_version, b200.cuda_driver_version) = ("535.261.03".into(), 12020);
    let b200_text = fixture("qx-b200.xml");
    let b200_doc = parse(&b200_text);
    let b200_gpus: Vec<Node> = b200_doc.root_element().children().filter(|n| n.has_tag_name("gpu")).collect();
    assert!(driver(&b200, b200_doc.root_element(), &b200_gpus).iter().any(|m| m.contains("580.105.08")));
    let mut h100 = find_builtin("h100").unwrap().clone();
    h100.sources.retain(|s| !s.contains("580.105.08"));
    assert!(driver(&h100, doc.root_element(), &gpus).iter().any(|m| m.contains("named in the profile's sources")));
    for key in [
        "memory.total_mib",
        "clocks.max.memory_mhz",
        "pci.subsystem_id",
        "thermal.slowdown_c",
        "pci.bus_ids (GPU 0)",
        "board.module_ids[0]",
        "board.remap_banks",
    ] {
        assert!(found.contains(key), "{key} not reported in:\n{found}");
    }
}
