//! The default table: banner with driver and CUDA versions, three rows per GPU, the MIG devices
//! section when a GPU has MIG on, and the processes section (from the public process calls).

use crate::common::{ctime_now, cuda_text, fit, or_short};
use crate::list::mig_devices;
use crate::nvml::{nv, Device, Nvml};
use nvml_abi::nvmlDevice_t;
use std::ffi::c_uint;
use std::fmt::Write;

const MIG_RULE: &str = "+------------------+--------------------------------+-----------+-----------------------+";
const MIG_RULE_SHARED: &str = "+------------------+                                +-----------+-----------------------+";
const RULE: &str = "+-----------------------------------------+----------------------+----------------------+";

fn compute_mode(m: u32) -> &'static str {
    match m {
        0 => "Default",
        1 => "E. Thread",
        2 => "Prohibited",
        3 => "E. Process",
        _ => "Unknown",
    }
}

fn on_off(v: u32) -> String {
    (if v == 1 { "On" } else { "Off" }).to_string()
}

/// The volatile uncorrected ECC cell: the count when ECC is on, "Off" when off.
fn ecc_cell(d: &Device) -> String {
    match d.pair_of("nvmlDeviceGetEccMode") {
        // With MIG on the counters belong to the MIG devices (their own section).
        Ok((1, _)) if matches!(d.pair_of("nvmlDeviceGetMigMode"), Ok((1, _))) => "On".into(),
        Ok((1, _)) => {
            let mut v: u64 = 0;
            let r = nv!(d.nvml(), "nvmlDeviceGetTotalEccErrors", (nvmlDevice_t, c_uint, c_uint, *mut u64), d.raw, 1, 0, &mut v);
            or_short(r.map(|_| v), |v| v.to_string())
        }
        Ok(_) => "Off".into(),
        Err(e) => or_short::<()>(Err(e), |_| String::new()),
    }
}

/// Renders the whole table (`banner` is our own version string).
pub fn render(nvml: &Nvml, devs: &[Device], version: &str) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "{:<31}", ctime_now());
    let es = nvml.event_set();
    let drv = or_short(nvml.driver_version(), |s| s);
    let cuda = or_short(nvml.cuda_version(), cuda_text);
    let _ = writeln!(o, "+---------------------------------------------------------------------------------------+");
    let _ = writeln!(o, "| NVIDIA-SMI {:<22} Driver Version: {:<13}CUDA Version: {:<9}|", version, drv, cuda);
    let _ = writeln!(o, "|-----------------------------------------+----------------------+----------------------+");
    let _ = writeln!(o, "| GPU  Name                 Persistence-M | Bus-Id        Disp.A | Volatile Uncorr. ECC |");
    let _ = writeln!(o, "| Fan  Temp   Perf          Pwr:Usage/Cap |         Memory-Usage | GPU-Util  Compute M. |");
    let _ = writeln!(o, "|                                         |                      |               MIG M. |");
    let _ = writeln!(o, "|=========================================+======================+======================|");
    let mut any_mig = false;
    for d in devs {
        let idx = or_short(d.index(), |i| i.to_string());
        let name = or_short(d.name(), |s| s);
        let bus = or_short(d.bus_id(), |s| s);
        let pers = or_short(d.u32_of("nvmlDeviceGetPersistenceMode"), on_off);
        let disp = or_short(d.u32_of("nvmlDeviceGetDisplayActive"), on_off);
        let ecc = ecc_cell(d);
        let fan = or_short(d.u32_of("nvmlDeviceGetFanSpeed"), |v| format!("{v}%"));
        let temp = or_short(d.temperature(), |v| format!("{v}C"));
        let perf = or_short(d.u32_of("nvmlDeviceGetPerformanceState"), |p| format!("P{p}"));
        let pwr = or_short(d.u32_of("nvmlDeviceGetPowerUsage"), |v| format!("{}W", v / 1000));
        let cap = or_short(d.u32_of("nvmlDeviceGetEnforcedPowerLimit"), |v| format!("{}W", v / 1000));
        let (used, total) = match d.memory() {
            Ok(m) => (format!("{}MiB", m.used >> 20), format!("{}MiB", m.total >> 20)),
            Err(e) => {
                let s = or_short::<()>(Err(e), |_| String::new());
                (s.clone(), s)
            }
        };
        let util = or_short(d.utilization(), |u| format!("{}%", u.gpu));
        let cm = or_short(d.u32_of("nvmlDeviceGetComputeMode"), |m| compute_mode(m).to_string());
        let mig = or_short(d.pair_of("nvmlDeviceGetMigMode"), |(c, _)| {
            any_mig |= c == 1;
            (if c == 1 { "Enabled" } else { "Disabled" }).to_string()
        });
        let _ = writeln!(o, "| {:>3}  {:<30} {:<4}| {:<16} {:>3} | {:>20} |", idx, fit(&name, 30), pers, bus, disp, ecc);
        let _ = writeln!(
            o,
            "| {:>3}   {:>3}    {:<2}{:>17} / {:>4} | {:>9} / {:>8} | {:>7} {:>12} |",
            fan,
            temp,
            perf,
            // NVIDIA cuts both power cells to 4 characters ("1..." for 1119W).
            fit(&pwr, 4),
            fit(&cap, 4),
            fit(&used, 9),
            fit(&total, 8),
            util,
            cm
        );
        let _ = writeln!(o, "|                                         |                      | {:>20} |", mig);
        let _ = writeln!(o, "{RULE}");
    }
    if any_mig {
        mig_section(&mut o, devs);
    }
    let _ = writeln!(o, "{:89}", "");
    processes(&mut o, nvml, devs);
    if let Ok(s) = es {
        nvml.event_set_free(s);
    }
    o
}

/// The "MIG devices" box.
fn mig_section(o: &mut String, devs: &[Device]) {
    let _ = writeln!(o);
    let _ = writeln!(o, "+---------------------------------------------------------------------------------------+");
    let _ = writeln!(o, "| MIG devices:                                                                          |");
    let _ = writeln!(o, "+------------------+--------------------------------+-----------+-----------------------+");
    let _ = writeln!(o, "| GPU  GI  CI  MIG |                   Memory-Usage |        Vol|      Shared           |");
    let _ = writeln!(o, "|      ID  ID  Dev |                     BAR1-Usage | SM     Unc| CE ENC DEC OFA JPG    |");
    let _ = writeln!(o, "|                  |                                |        ECC|                       |");
    let _ = writeln!(o, "|==================+================================+===========+=======================|");
    let mut any = false;
    let mut prev: Option<(u32, String)> = None;
    for d in devs {
        let gpu = d.index().unwrap_or(0);
        for (j, m) in mig_devices(d).into_iter().enumerate() {
            let gi = or_short(m.u32_of("nvmlDeviceGetGpuInstanceId"), |v| v.to_string());
            // Compute instances of one GPU instance share its memory: NVIDIA prints it once.
            let same_gi = prev.as_ref() == Some(&(gpu, gi.clone()));
            if any {
                let _ = writeln!(o, "{}", if same_gi { MIG_RULE_SHARED } else { MIG_RULE });
            }
            any = true;
            prev = Some((gpu, gi.clone()));
            let ci = or_short(m.u32_of("nvmlDeviceGetComputeInstanceId"), |v| v.to_string());
            let mib = |used: u64, total: u64| format!("{:<32}", format!("{:>16}MiB / {:>5}MiB", used >> 20, total >> 20));
            let mem = or_short(m.memory(), |x| mib(x.used, x.total));
            let bar = or_short(m.bar1(), |x| mib(x.bar1Used, x.bar1Total));
            let mut ecc: u64 = 0;
            let ecc = or_short(
                // Uncorrected, volatile, SRAM (NVML_MEMORY_LOCATION_SRAM = 7).
                nv!(
                    m.nvml(),
                    "nvmlDeviceGetMemoryErrorCounter",
                    (nvmlDevice_t, c_uint, c_uint, c_uint, *mut u64),
                    m.raw,
                    1,
                    0,
                    7,
                    &mut ecc
                )
                .map(|_| ecc),
                |v| v.to_string(),
            );
            let a = m.attributes().ok();
            let sm = a.map_or("N/A".into(), |a| a.multiprocessorCount.to_string());
            let sh = a.map_or("N/A".into(), |a| {
                format!(
                    " {:>2}  {:>2}   {:>2}   {:>2}   {:>2} ",
                    a.sharedCopyEngineCount, a.sharedEncoderCount, a.sharedDecoderCount, a.sharedOfaCount, a.sharedJpgCount
                )
            });
            let (mem, bar) = if same_gi { (String::new(), String::new()) } else { (mem, bar) };
            let _ = writeln!(o, "|{:>3}  {:>3} {:>3} {:>3}  |{:>32}| {:>2}    {:>3} |{:<23}|", gpu, gi, ci, j, mem, sm, ecc, sh);
            let _ = writeln!(o, "|                  |{:>32}|           |                       |", bar);
        }
    }
    if any {
        let _ = writeln!(o, "{MIG_RULE}");
    }
    if !any {
        let _ = writeln!(o, "|  No MIG devices found                                                                 |");
        let _ = writeln!(o, "+---------------------------------------------------------------------------------------+");
    }
}

/// A GPU or compute instance id that is none (not a MIG process).
const NA: u32 = u32::MAX;

fn id(v: u32) -> String {
    if v == NA {
        "N/A".into()
    } else {
        v.to_string()
    }
}

/// A process name in the table's 38 columns as NVIDIA fits it: counted in bytes, and a longer
/// name keeps its end (the command, not the path) behind `...`. NVIDIA cuts at any byte; this
/// cuts at the next character boundary, so a non-ASCII cut can be a byte or two shorter.
fn name_cell(name: &str) -> String {
    const W: usize = 38;
    let shown = if name.len() <= W {
        name.to_string()
    } else {
        let mut at = name.len() - (W - 3);
        while !name.is_char_boundary(at) {
            at += 1;
        }
        format!("...{}", &name[at..])
    };
    format!("{shown}{}", " ".repeat(W.saturating_sub(shown.len())))
}

/// The "Processes" box: compute, graphics and MPS-client processes from the public NVML calls,
/// merged and typed as NVIDIA's binary does (`Device::typed_processes`).
fn processes(o: &mut String, nvml: &Nvml, devs: &[Device]) {
    let _ = writeln!(o, "+---------------------------------------------------------------------------------------+");
    let _ = writeln!(o, "| Processes:                                                                            |");
    let _ = writeln!(o, "|  GPU   GI   CI        PID   Type   Process name                            GPU Memory |");
    let _ = writeln!(o, "|        ID   ID                                                             Usage      |");
    let _ = writeln!(o, "|=======================================================================================|");
    let mut rows = 0;
    for d in devs {
        let gpu = d.index().unwrap_or(0);
        for (p, t) in d.typed_processes() {
            rows += 1;
            let name = nvml.process_name(p.pid).unwrap_or_else(|_| "N/A".into());
            let mem = if p.usedGpuMemory == u64::MAX { "N/A".to_string() } else { format!("{}MiB", p.usedGpuMemory >> 20) };
            // NVIDIA pads a MIG process's numeric GI/CI ids one column left of where it puts
            // `N/A`, and widens the PID column by the difference.
            let ids = match (p.gpuInstanceId, p.computeInstanceId) {
                (gi, ci) if gi != NA && ci != NA => format!("{gi:>5}{ci:>5}{:>11}", p.pid),
                (gi, ci) => format!("   {:>3}  {:>3}{:>10}", id(gi), id(ci), p.pid),
            };
            let _ = writeln!(o, "|  {gpu:>3}{ids}{t:>7}   {}  {mem:>10} |", name_cell(&name));
        }
    }
    if rows == 0 {
        let _ = writeln!(o, "|  No running processes found                                                           |");
    }
    let _ = writeln!(o, "+---------------------------------------------------------------------------------------+");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_names_fit_in_38_bytes_keeping_their_end() {
        assert_eq!(name_cell("python3"), format!("python3{}", " ".repeat(31)));
        let exact = "abcdefghijklmnopqrstuvwxyz0123456789AB";
        assert_eq!(name_cell(exact), exact);
        assert_eq!(name_cell("abcdefghijklmnopqrstuvwxyz0123456789ABC"), "...efghijklmnopqrstuvwxyz0123456789ABC");
        // Bytes, not characters: 19 two-byte characters fill the cell exactly.
        assert_eq!(name_cell(&"é".repeat(19)).len(), 38);
        let cut = name_cell(&"é".repeat(29));
        assert!(cut.starts_with("...é") && cut.ends_with("é ") && cut.len() == 38, "{cut:?}");
    }
}
