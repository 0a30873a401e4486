//! `nvidia-smi mig -lgip/-lgipp/-lgi/-lci`: GPU-instance profiles, their possible placements,
//! the GPU instances and the compute instances of the MIG-enabled GPUs, over the public MIG calls
//! (profile info `V`, placements `_v2`, remaining capacity, `GetGpuInstances`,
//! `GpuInstanceGetComputeInstanceProfileInfoV`, `GetComputeInstances`). Layout, order and messages
//! follow NVIDIA's 535 binary.

use crate::args::MigCmd;
use crate::common;
use crate::nvml::{c_string, nv, Device, Nvml, R};
use nvml_abi::*;
use std::ffi::c_uint;
use std::fmt::Write;

/// `NVML_GPU_INSTANCE_PROFILE_COUNT` and `NVML_COMPUTE_INSTANCE_PROFILE_COUNT` in 535's nvml.h.
const GI_PROFILE_COUNT: u32 = 10;
const CI_PROFILE_COUNT: u32 = 8;
/// `NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED`.
const ENGINE_SHARED: u32 = 0;
/// Room for any profile's instances (NVML sizes the arrays by `instanceCount`, at most 8).
const MAX_INSTANCES: usize = 32;

/// A GPU-instance profile the device supports.
pub struct GiProfile {
    pub info: nvmlGpuInstanceProfileInfo_v2_t,
}
impl GiProfile {
    pub fn name(&self) -> String {
        c_string(&self.info.name)
    }
}

/// A GPU instance with its info and profile.
pub struct Gi {
    pub raw: nvmlGpuInstance_t,
    pub info: nvmlGpuInstanceInfo_t,
    pub profile_name: String,
}

/// Supported GPU-instance profiles, in NVIDIA's order: by slice count, then profile index.
pub fn gi_profiles(d: &Device) -> Vec<GiProfile> {
    let mut v: Vec<GiProfile> = (0..GI_PROFILE_COUNT)
        .filter_map(|p| {
            // SAFETY: plain-old-data struct.
            let mut info: nvmlGpuInstanceProfileInfo_v2_t = unsafe { std::mem::zeroed() };
            info.version = nvmlGpuInstanceProfileInfo_v2;
            nv!(
                d.nvml(),
                "nvmlDeviceGetGpuInstanceProfileInfoV",
                (nvmlDevice_t, c_uint, *mut nvmlGpuInstanceProfileInfo_v2_t),
                d.raw,
                p,
                &mut info
            )
            .ok()
            .map(|_| GiProfile { info })
        })
        .collect();
    v.sort_by_key(|p| p.info.sliceCount);
    v
}

/// GPU instances of one profile.
fn gpu_instances(d: &Device, profile_id: u32) -> R<Vec<nvmlGpuInstance_t>> {
    let mut buf = vec![std::ptr::null_mut(); MAX_INSTANCES];
    let mut n: c_uint = MAX_INSTANCES as c_uint;
    nv!(
        d.nvml(),
        "nvmlDeviceGetGpuInstances",
        (nvmlDevice_t, c_uint, *mut nvmlGpuInstance_t, *mut c_uint),
        d.raw,
        profile_id,
        buf.as_mut_ptr(),
        &mut n
    )?;
    buf.truncate((n as usize).min(MAX_INSTANCES));
    Ok(buf)
}

/// All GPU instances of a device, profile by profile (the order `-lgi` prints).
pub fn all_gpu_instances(d: &Device) -> R<Vec<Gi>> {
    let mut out = Vec::new();
    let mut first_err = None;
    for p in gi_profiles(d) {
        match gpu_instances(d, p.info.id) {
            Ok(v) => {
                for raw in v {
                    // SAFETY: plain-old-data struct.
                    let mut info: nvmlGpuInstanceInfo_t = unsafe { std::mem::zeroed() };
                    if nv!(d.nvml(), "nvmlGpuInstanceGetInfo", (nvmlGpuInstance_t, *mut nvmlGpuInstanceInfo_t), raw, &mut info).is_ok() {
                        out.push(Gi { raw, info, profile_name: p.name() });
                    }
                }
            }
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    match (out.is_empty(), first_err) {
        (true, Some(e)) => Err(e),
        _ => Ok(out),
    }
}

/// A compute instance: its info and its profile's name.
struct Ci {
    info: nvmlComputeInstanceInfo_t,
    name: String,
}

fn compute_instances(n: &Nvml, gi: &Gi) -> Vec<Ci> {
    let mut out = Vec::new();
    for p in 0..CI_PROFILE_COUNT {
        // SAFETY: plain-old-data struct.
        let mut pinfo: nvmlComputeInstanceProfileInfo_v2_t = unsafe { std::mem::zeroed() };
        pinfo.version = nvmlComputeInstanceProfileInfo_v2;
        let r = nv!(
            n,
            "nvmlGpuInstanceGetComputeInstanceProfileInfoV",
            (nvmlGpuInstance_t, c_uint, c_uint, *mut nvmlComputeInstanceProfileInfo_v2_t),
            gi.raw,
            p,
            ENGINE_SHARED,
            &mut pinfo
        );
        if r.is_err() {
            continue;
        }
        let mut buf = vec![std::ptr::null_mut(); MAX_INSTANCES];
        let mut cnt: c_uint = MAX_INSTANCES as c_uint;
        let r = nv!(
            n,
            "nvmlGpuInstanceGetComputeInstances",
            (nvmlGpuInstance_t, c_uint, *mut nvmlComputeInstance_t, *mut c_uint),
            gi.raw,
            pinfo.id,
            buf.as_mut_ptr(),
            &mut cnt
        );
        if r.is_err() {
            continue;
        }
        for &raw in buf.iter().take((cnt as usize).min(MAX_INSTANCES)) {
            // SAFETY: plain-old-data struct.
            let mut info: nvmlComputeInstanceInfo_t = unsafe { std::mem::zeroed() };
            if nv!(n, "nvmlComputeInstanceGetInfo_v2", (nvmlComputeInstance_t, *mut nvmlComputeInstanceInfo_t), raw, &mut info).is_ok() {
                out.push(Ci { info, name: c_string(&pinfo.name) });
            }
        }
    }
    out
}

fn placements(d: &Device, profile_id: u32) -> R<Vec<nvmlGpuInstancePlacement_t>> {
    type P = nvmlGpuInstancePlacement_t;
    let name = "nvmlDeviceGetGpuInstancePossiblePlacements_v2";
    let mut n: c_uint = 0;
    nv!(d.nvml(), name, (nvmlDevice_t, c_uint, *mut P, *mut c_uint), d.raw, profile_id, std::ptr::null_mut(), &mut n)?;
    let mut v = vec![P::default(); n as usize];
    nv!(d.nvml(), name, (nvmlDevice_t, c_uint, *mut P, *mut c_uint), d.raw, profile_id, v.as_mut_ptr(), &mut n)?;
    v.truncate(n as usize);
    Ok(v)
}

fn is_mig_on(d: &Device) -> bool {
    matches!(d.pair_of("nvmlDeviceGetMigMode"), Ok((1, _)))
}

const LGIP_RULE: &str = "+-----------------------------------------------------------------------------+";
const LGI_RULE: &str = "+-------------------------------------------------------+";
const LCI_RULE: &str = "+--------------------------------------------------------------------+";

/// Runs one listing; returns the exit code.
pub fn run(n: &Nvml, c: &MigCmd, ids: Option<&[String]>, out: &mut dyn FnMut(&str)) -> i32 {
    let devs = match common::select(n, ids) {
        Ok(d) => d,
        Err(e) => {
            let (text, code) = e.report();
            out(&text);
            return code;
        }
    };
    let migs: Vec<&Device> = devs.iter().filter(|d| is_mig_on(d)).collect();
    if migs.is_empty() {
        out("No MIG-enabled devices found.\n");
        return 6;
    }
    let mut o = String::new();
    let code = match c {
        MigCmd::Lgip => lgip(&mut o, &migs),
        MigCmd::Lgipp => lgipp(&mut o, &migs),
        MigCmd::Lgi => lgi(&mut o, &migs),
        MigCmd::Lci => lci(&mut o, n, &migs),
    };
    out(&o);
    code
}

fn lgip(o: &mut String, devs: &[&Device]) -> i32 {
    let _ = writeln!(o, "{LGIP_RULE}");
    let _ = writeln!(o, "| GPU instance profiles:                                                      |");
    let _ = writeln!(o, "| GPU   Name             ID    Instances   Memory     P2P    SM    DEC   ENC  |");
    let _ = writeln!(o, "|                              Free/Total   GiB              CE    JPEG  OFA  |");
    let _ = writeln!(o, "|=============================================================================|");
    for d in devs {
        let gpu = d.index().unwrap_or(0);
        for p in gi_profiles(d) {
            let i = &p.info;
            let mut free: c_uint = 0;
            let free =
                nv!(d.nvml(), "nvmlDeviceGetGpuInstanceRemainingCapacity", (nvmlDevice_t, c_uint, *mut c_uint), d.raw, i.id, &mut free)
                    .map_or(0, |_| free);
            let mem = format!("{:.2}", i.memorySizeMB as f64 / 1024.0);
            let p2p = if i.isP2pSupported != 0 { "Yes" } else { "No" };
            let _ = writeln!(
                o,
                "|{gpu:>4}  {:<16}{:>4}{free:>6}/{:<9}{mem:<11}{p2p:<7}{:<6}{:>2}{:>6}   |",
                p.name(),
                i.id,
                i.instanceCount,
                i.multiprocessorCount,
                i.decoderCount,
                i.encoderCount
            );
            let _ = writeln!(o, "|{:>62}{:>6}{:>6}   |", i.copyEngineCount, i.jpegCount, i.ofaCount);
            let _ = writeln!(o, "{LGIP_RULE}");
        }
    }
    0
}

fn lgipp(o: &mut String, devs: &[&Device]) -> i32 {
    for d in devs {
        let gpu = d.index().unwrap_or(0);
        for p in gi_profiles(d) {
            let Ok(pl) = placements(d, p.info.id) else { continue };
            let starts: Vec<String> = pl.iter().map(|x| x.start.to_string()).collect();
            let size = pl.first().map_or(0, |x| x.size);
            let word = if pl.len() == 1 { "Placement " } else { "Placements" };
            let _ = writeln!(o, "GPU {gpu:>2} Profile ID {:>2} {word}: {{{}}}:{size}", p.info.id, starts.join(","));
        }
    }
    0
}

fn lgi(o: &mut String, devs: &[&Device]) -> i32 {
    let mut rows = String::new();
    let mut err = None;
    for d in devs {
        let gpu = d.index().unwrap_or(0);
        match all_gpu_instances(d) {
            Ok(gis) => {
                for g in gis {
                    let pl = g.info.placement;
                    let _ = writeln!(
                        rows,
                        "|{gpu:>4}  {:<16}{:>6}{:>9}{:>11}:{:<6}|",
                        g.profile_name, g.info.profileId, g.info.id, pl.start, pl.size
                    );
                    let _ = writeln!(rows, "{LGI_RULE}");
                }
            }
            Err(e) => {
                err.get_or_insert(e);
            }
        }
    }
    if rows.is_empty() {
        return not_found(o, "No GPU instances found", err);
    }
    let _ = writeln!(o, "{LGI_RULE}");
    let _ = writeln!(o, "| GPU instances:                                        |");
    let _ = writeln!(o, "| GPU   Name             Profile  Instance   Placement  |");
    let _ = writeln!(o, "|                          ID       ID       Start:Size |");
    let _ = writeln!(o, "|=======================================================|");
    o.push_str(&rows);
    0
}

fn lci(o: &mut String, n: &Nvml, devs: &[&Device]) -> i32 {
    let mut rows = String::new();
    let mut any_gi = false;
    let mut err = None;
    for d in devs {
        let gpu = d.index().unwrap_or(0);
        let gis = match all_gpu_instances(d) {
            Ok(g) => g,
            Err(e) => {
                err.get_or_insert(e);
                continue;
            }
        };
        for g in &gis {
            any_gi = true;
            for c in compute_instances(n, g) {
                let pl = c.info.placement;
                let _ = writeln!(
                    rows,
                    "|{gpu:>4}{:>7}       {:<16}{:>6}{:>10}{:>11}:{:<6}|",
                    g.info.id, c.name, c.info.profileId, c.info.id, pl.start, pl.size
                );
                let _ = writeln!(rows, "{LCI_RULE}");
            }
        }
    }
    if rows.is_empty() {
        if !any_gi {
            return not_found(o, "No GPU instances found", err);
        }
        return not_found(o, "No compute instances found", Some(ret::NOT_FOUND));
    }
    let _ = writeln!(o, "{LCI_RULE}");
    let _ = writeln!(o, "| Compute instances:                                                 |");
    let _ = writeln!(o, "| GPU     GPU       Name             Profile   Instance   Placement  |");
    let _ = writeln!(o, "|       Instance                       ID        ID       Start:Size |");
    let _ = writeln!(o, "|         ID                                                         |");
    let _ = writeln!(o, "|====================================================================|");
    o.push_str(&rows);
    0
}

/// "No GPU instances found: Not Found" and NVML's NOT_FOUND code (6), as NVIDIA prints them.
fn not_found(o: &mut String, what: &str, err: Option<u32>) -> i32 {
    let e = match err {
        None | Some(ret::NOT_FOUND) => ret::NOT_FOUND,
        Some(e) => e,
    };
    let text = if e == ret::NOT_FOUND { "Not Found" } else { common::err_text(e) };
    let _ = writeln!(o, "{what}: {text}");
    e as i32
}
