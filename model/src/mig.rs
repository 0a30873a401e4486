//! Multi-Instance GPU: the partition tables of each MIG-capable board and the rules the
//! driver applies when GPU instances (GIs) and compute instances (CIs) are created.
//!
//! A MIG board has 8 memory slices and 7 compute slices. A GI profile occupies a fixed
//! run of memory slices (its placement `start:size`) and a number of compute slices;
//! instances may not overlap and their compute slices may not exceed 7. A GI's id is
//! its node in the driver's placement tree (whole GPU 0; halves 1-2; quarters 3-6;
//! eighths 7-14), so the same placement always gets the same id, as on hardware.
//! Inside a GI, compute-instance profiles of `c` slices sit at multiples of `c`.
//!
//! Values: A100 40GB/80GB and H100 are NVIDIA's documented `nvidia-smi mig -lgip`
//! tables. H200, B200, GB200 and GB300 use the documented profile names with memory
//! scaled from the H100 ratios and SM counts from the board's SM count (see docs/mig.md).

use serde::{Deserialize, Serialize};

use crate::profile::Profile;

pub const MEMORY_SLICES: u32 = 8;
pub const COMPUTE_SLICES: u32 = 7;
/// The most MIG devices (compute instances) one GPU can have.
pub const MAX_MIG_DEVICES: u32 = 7;
/// GI ids run 0..=14 and CI ids 0..=7.
pub const MAX_GI_ID: u32 = 14;
pub const MAX_CI_ID: u32 = 7;

/// NVML GPU-instance profile indexes (`NVML_GPU_INSTANCE_PROFILE_*`).
pub const GI_PROFILE_1_SLICE: u32 = 0;
pub const GI_PROFILE_2_SLICE: u32 = 1;
pub const GI_PROFILE_3_SLICE: u32 = 2;
pub const GI_PROFILE_4_SLICE: u32 = 3;
pub const GI_PROFILE_7_SLICE: u32 = 4;
pub const GI_PROFILE_1_SLICE_REV1: u32 = 7;
pub const GI_PROFILE_1_SLICE_REV2: u32 = 9;
/// `NVML_GPU_INSTANCE_PROFILE_COUNT` in the 535 headers.
pub const GI_PROFILE_COUNT: u32 = 10;
/// `NVML_COMPUTE_INSTANCE_PROFILE_COUNT` in the 535 headers.
pub const CI_PROFILE_COUNT: u32 = 8;

/// One GPU-instance profile as `nvmlDeviceGetGpuInstanceProfileInfoV` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GiProfile {
    /// The NVML profile index (`NVML_GPU_INSTANCE_PROFILE_*`), what callers pass in.
    pub index: u32,
    /// The profile id (`info.id`, nvidia-smi's "ID" column), e.g. 19 for `1g.5gb`.
    pub id: u32,
    /// Name without the `MIG ` prefix, e.g. `1g.5gb`.
    pub name: String,
    pub compute_slices: u32,
    pub memory_slices: u32,
    pub instance_count: u32,
    pub multiprocessors: u32,
    pub copy_engines: u32,
    pub decoders: u32,
    pub encoders: u32,
    pub jpegs: u32,
    pub ofas: u32,
    pub memory_mib: u64,
    /// Starts of its possible placements, in memory slices.
    pub placements: Vec<u32>,
}

/// One compute-instance profile of a GI profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CiProfile {
    /// The NVML CI profile index, also its id.
    pub index: u32,
    pub name: String,
    pub slices: u32,
    pub instance_count: u32,
    pub multiprocessors: u32,
    pub placements: Vec<u32>,
}

/// Where an instance sits: `start` and `size` in slices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Placement {
    pub start: u32,
    pub size: u32,
}

impl Placement {
    fn overlaps(&self, other: &Placement) -> bool {
        self.start < other.start + other.size && other.start < self.start + self.size
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComputeInstance {
    pub id: u32,
    /// CI profile index (`NVML_COMPUTE_INSTANCE_PROFILE_*`).
    pub profile: u32,
    pub placement: Placement,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuInstance {
    pub id: u32,
    /// GI profile index (`NVML_GPU_INSTANCE_PROFILE_*`).
    pub profile: u32,
    pub placement: Placement,
    #[serde(default)]
    pub compute_instances: Vec<ComputeInstance>,
}

/// The MIG part of one GPU's state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigLayout {
    #[serde(default)]
    pub current: bool,
    #[serde(default)]
    pub pending: bool,
    #[serde(default)]
    pub gpu_instances: Vec<GpuInstance>,
}

/// Why a MIG request was refused; the NVML code is in [`MigError::nvml_code`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MigError {
    #[error("{0} does not support MIG")]
    NotCapable(String),
    #[error("MIG mode is not enabled on this GPU")]
    NotEnabled,
    #[error("unknown profile {0}")]
    UnknownProfile(u32),
    #[error("placement {start}:{size} is not a placement of profile {profile}")]
    BadPlacement { profile: u32, start: u32, size: u32 },
    #[error("placement {start}:{size} overlaps an existing instance")]
    Overlap { start: u32, size: u32 },
    #[error("no capacity left for profile {0}")]
    NoCapacity(u32),
    #[error("no instance {0}")]
    NoSuchInstance(u32),
    #[error("instance {0} is in use (it still has compute instances or processes)")]
    InUse(u32),
    #[error("unknown MIG config {0} (known: all-disabled, all-enabled, all-balanced, all-<GPU instance profile>)")]
    UnknownConfig(String),
}

impl MigError {
    pub fn nvml_code(&self) -> u32 {
        match self {
            MigError::NotCapable(_) | MigError::UnknownConfig(_) => 3,
            MigError::NotEnabled => 3,
            MigError::UnknownProfile(_) => 3,
            MigError::BadPlacement { .. } => 2,
            MigError::Overlap { .. } | MigError::NoCapacity(_) => 23,
            MigError::NoSuchInstance(_) => 6,
            MigError::InUse(_) => 19,
        }
    }
}

/// (index, id, name, compute slices, memory slices, instances, SM, CE, DEC, ENC, JPEG, OFA, MiB, placements)
type Row = (u32, u32, &'static str, u32, u32, u32, u32, u32, u32, u32, u32, u32, u64, &'static [u32]);

const P1: &[u32] = &[0, 1, 2, 3, 4, 5, 6];
const P2REV: &[u32] = &[0, 2, 4, 6];
const P2: &[u32] = &[0, 2, 4];
const P3: &[u32] = &[0, 4];
const P0: &[u32] = &[0];

fn rows(names: [&'static str; 7], mem: [u64; 4], sm: [u32; 5], ampere: bool) -> Vec<Row> {
    let [n1, n1me, n1x2, n2, n3, n4, n7] = names;
    let [m1, m2, m4, m8] = mem;
    let [s1, s1x2, s2, s3, s4] = sm;
    if ampere {
        vec![
            (GI_PROFILE_1_SLICE, 19, n1, 1, 1, 7, s1, 1, 0, 0, 0, 0, m1, P1),
            (GI_PROFILE_1_SLICE_REV1, 20, n1me, 1, 1, 1, s1, 1, 1, 0, 1, 1, m1, P1),
            (GI_PROFILE_1_SLICE_REV2, 15, n1x2, 1, 2, 4, s1x2, 1, 1, 0, 0, 0, m2, P2REV),
            (GI_PROFILE_2_SLICE, 14, n2, 2, 2, 3, s2, 2, 1, 0, 0, 0, m2, P2),
            (GI_PROFILE_3_SLICE, 9, n3, 3, 4, 2, s3, 3, 2, 0, 0, 0, m4, P3),
            (GI_PROFILE_4_SLICE, 5, n4, 4, 4, 1, s4, 4, 2, 0, 0, 0, m4, P0),
            (GI_PROFILE_7_SLICE, 0, n7, 7, 8, 1, 98, 7, 5, 0, 1, 1, m8, P0),
        ]
    } else {
        vec![
            (GI_PROFILE_1_SLICE, 19, n1, 1, 1, 7, s1, 1, 1, 0, 1, 0, m1, P1),
            (GI_PROFILE_1_SLICE_REV1, 20, n1me, 1, 1, 1, s1, 1, 1, 0, 1, 1, m1, P1),
            (GI_PROFILE_1_SLICE_REV2, 15, n1x2, 1, 2, 4, s1x2, 1, 1, 0, 1, 0, m2, P2REV),
            (GI_PROFILE_2_SLICE, 14, n2, 2, 2, 3, s2, 2, 2, 0, 2, 0, m2, P2),
            (GI_PROFILE_3_SLICE, 9, n3, 3, 4, 2, s3, 3, 3, 0, 3, 0, m4, P3),
            (GI_PROFILE_4_SLICE, 5, n4, 4, 4, 1, s4, 4, 4, 0, 4, 0, m4, P0),
            (GI_PROFILE_7_SLICE, 0, n7, 7, 8, 1, 0, 8, 7, 0, 7, 1, m8, P0),
        ]
    }
}

/// The GI profiles of a board, `None` when it has no MIG.
pub fn gi_profiles(profile: &Profile) -> Option<Vec<GiProfile>> {
    if !profile.mig_capable {
        return None;
    }
    let sms = profile.multiprocessor_count.unwrap_or(132);
    // (names, memory of a 1/2/4/8-slot placement, SMs of 1g, 1g double-memory, 2g, 3g, 4g; SMs of 7g)
    let (names, mem, sm, sm7, ampere) = match profile.name.as_str() {
        "a100-40gb" => (
            ["1g.5gb", "1g.5gb+me", "1g.10gb", "2g.10gb", "3g.20gb", "4g.20gb", "7g.40gb"],
            [4864, 9856, 19968, 40192],
            [14, 14, 28, 42, 56],
            98,
            true,
        ),
        "a100-80gb" => (
            ["1g.10gb", "1g.10gb+me", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"],
            [9728, 19968, 40192, 81152],
            [14, 14, 28, 42, 56],
            98,
            true,
        ),
        "h100" => (
            ["1g.10gb", "1g.10gb+me", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"],
            [9984, 20096, 40448, 81152],
            [16, 26, 32, 60, 64],
            132,
            false,
        ),
        name => {
            let names = match name {
                "h200" => ["1g.18gb", "1g.18gb+me", "1g.35gb", "2g.35gb", "3g.71gb", "4g.71gb", "7g.141gb"],
                "b200" => ["1g.23gb", "1g.23gb+me", "1g.45gb", "2g.45gb", "3g.90gb", "4g.90gb", "7g.180gb"],
                "gb200" => ["1g.23gb", "1g.23gb+me", "1g.47gb", "2g.47gb", "3g.93gb", "4g.93gb", "7g.186gb"],
                "gb300" => ["1g.35gb", "1g.35gb+me", "1g.70gb", "2g.70gb", "3g.139gb", "4g.139gb", "7g.278gb"],
                _ => return None,
            };
            // Scale H100's memory split (per 81559 MiB) to this board, in 128 MiB units.
            let total = profile.memory.total_mib;
            let scale = |h100: u64| (h100 * total / 81559) / 128 * 128;
            let mem = [scale(9984), scale(20096), scale(40448), scale(81152)];
            // H100 gives 7g 132 of 132 SMs, 1g 16: SMs per slice = total/8 rounded down to even.
            let per = (sms / 8) & !1;
            (names, mem, [per, per * 13 / 8, per * 2, per * 15 / 4, per * 4], sms, false)
        }
    };
    Some(
        rows(names, mem, sm, ampere)
            .into_iter()
            .map(|r| GiProfile {
                index: r.0,
                id: r.1,
                name: r.2.to_string(),
                compute_slices: r.3,
                memory_slices: r.4,
                instance_count: r.5,
                multiprocessors: if r.0 == GI_PROFILE_7_SLICE { sm7 } else { r.6 },
                copy_engines: r.7,
                decoders: r.8,
                encoders: r.9,
                jpegs: r.10,
                ofas: r.11,
                memory_mib: r.12,
                placements: r.13.to_vec(),
            })
            .collect(),
    )
}

/// The GI profile with NVML index `index`.
pub fn gi_profile(profile: &Profile, index: u32) -> Result<GiProfile, MigError> {
    let all = gi_profiles(profile).ok_or_else(|| MigError::NotCapable(profile.product_name.clone()))?;
    all.into_iter().find(|p| p.index == index).ok_or(MigError::UnknownProfile(index))
}

/// The GI profile whose id (nvidia-smi's "ID") is `id`.
pub fn gi_profile_by_id(profile: &Profile, id: u32) -> Option<GiProfile> {
    gi_profiles(profile)?.into_iter().find(|p| p.id == id)
}

/// NVML CI profile index of a `slices`-slice compute instance.
fn ci_index(slices: u32) -> Option<u32> {
    match slices {
        1 => Some(0),
        2 => Some(1),
        3 => Some(2),
        4 => Some(3),
        7 => Some(4),
        _ => None,
    }
}

/// The share of a MIG-mode GPU's SMs that a MIG device of profile `name` (`1g.10gb`,
/// `1c.3g.20gb`) computes with, in millionths of the SMs of the whole-GPU instance; `None` for a
/// name the board has no profile of. What a busy instance adds to its board's load.
pub fn sm_share_micro(profile: &Profile, name: &str) -> Option<u32> {
    let gis = gi_profiles(profile)?;
    let all = gis.iter().map(|g| g.multiprocessors).max().filter(|m| *m > 0)?;
    let ci = gis.iter().flat_map(ci_profiles).find(|c| c.name == name)?;
    Some((u64::from(ci.multiprocessors) * 1_000_000 / u64::from(all)).min(1_000_000) as u32)
}

/// The CI profiles of a GI profile.
pub fn ci_profiles(gi: &GiProfile) -> Vec<CiProfile> {
    let s = gi.compute_slices;
    [1u32, 2, 3, 4, 7]
        .into_iter()
        .filter(|c| *c <= s)
        .map(|c| {
            let name = if c == s { gi.name.clone() } else { format!("{c}c.{}", gi.name) };
            CiProfile {
                index: ci_index(c).unwrap_or(0),
                name,
                slices: c,
                instance_count: s / c,
                multiprocessors: gi.multiprocessors * c / s,
                placements: (0..s).step_by(c as usize).filter(|st| st + c <= s).collect(),
            }
        })
        .collect()
}

/// The CI profile `index` of a GI profile.
pub fn ci_profile(gi: &GiProfile, index: u32) -> Result<CiProfile, MigError> {
    ci_profiles(gi).into_iter().find(|c| c.index == index).ok_or(MigError::UnknownProfile(index))
}

/// GI id of a placement: its node in the placement tree.
pub fn gi_id_of(placement: Placement) -> u32 {
    match placement.size {
        8 => 0,
        4 => 1 + placement.start / 4,
        2 => 3 + placement.start / 2,
        _ => 7 + placement.start,
    }
}

fn used_compute(layout: &MigLayout, profile: &Profile) -> u32 {
    layout.gpu_instances.iter().filter_map(|g| gi_profile(profile, g.profile).ok()).map(|p| p.compute_slices).sum()
}

fn free(layout: &MigLayout, at: Placement) -> bool {
    layout.gpu_instances.iter().all(|g| !g.placement.overlaps(&at))
}

/// How many more GIs of profile `index` fit now (`nvmlDeviceGetGpuInstanceRemainingCapacity`).
pub fn remaining_capacity(profile: &Profile, layout: &MigLayout, index: u32) -> Result<u32, MigError> {
    let p = gi_profile(profile, index)?;
    if !layout.current {
        return Ok(0);
    }
    let same = layout.gpu_instances.iter().filter(|g| g.profile == index).count() as u32;
    let by_count = p.instance_count.saturating_sub(same);
    let by_compute = (COMPUTE_SLICES - used_compute(layout, profile).min(COMPUTE_SLICES)) / p.compute_slices;
    let by_place = p.placements.iter().filter(|s| free(layout, Placement { start: **s, size: p.memory_slices })).count() as u32;
    Ok(by_count.min(by_compute).min(by_place))
}

/// Creates a GI of profile `index` at `start` (or where the driver would put it) and returns its id.
pub fn create_gpu_instance(profile: &Profile, layout: &mut MigLayout, index: u32, start: Option<u32>) -> Result<u32, MigError> {
    let p = gi_profile(profile, index)?;
    if !layout.current {
        return Err(MigError::NotEnabled);
    }
    let same = layout.gpu_instances.iter().filter(|g| g.profile == index).count() as u32;
    if same >= p.instance_count || used_compute(layout, profile) + p.compute_slices > COMPUTE_SLICES {
        return Err(MigError::NoCapacity(p.id));
    }
    let placement = match start {
        Some(start) => {
            let at = Placement { start, size: p.memory_slices };
            if !p.placements.contains(&start) {
                return Err(MigError::BadPlacement { profile: p.id, start, size: p.memory_slices });
            }
            if !free(layout, at) {
                return Err(MigError::Overlap { start, size: p.memory_slices });
            }
            at
        }
        // The driver fills from the top of the GPU down (two 3g instances get ids 2 then 1).
        None => p
            .placements
            .iter()
            .rev()
            .map(|s| Placement { start: *s, size: p.memory_slices })
            .find(|at| free(layout, *at))
            .ok_or(MigError::NoCapacity(p.id))?,
    };
    let id = gi_id_of(placement);
    layout.gpu_instances.push(GpuInstance { id, profile: index, placement, compute_instances: Vec::new() });
    layout.gpu_instances.sort_by_key(|g| g.id);
    Ok(id)
}

/// Destroys GI `id`; refused while it has compute instances.
pub fn destroy_gpu_instance(layout: &mut MigLayout, id: u32) -> Result<(), MigError> {
    let pos = layout.gpu_instances.iter().position(|g| g.id == id).ok_or(MigError::NoSuchInstance(id))?;
    if !layout.gpu_instances[pos].compute_instances.is_empty() {
        return Err(MigError::InUse(id));
    }
    layout.gpu_instances.remove(pos);
    Ok(())
}

fn gi_mut(layout: &mut MigLayout, gi: u32) -> Result<&mut GpuInstance, MigError> {
    layout.gpu_instances.iter_mut().find(|g| g.id == gi).ok_or(MigError::NoSuchInstance(gi))
}

/// How many more CIs of profile `ci` fit in GI `gi`.
pub fn ci_remaining_capacity(profile: &Profile, layout: &MigLayout, gi: u32, ci: u32) -> Result<u32, MigError> {
    let g = layout.gpu_instances.iter().find(|g| g.id == gi).ok_or(MigError::NoSuchInstance(gi))?;
    let cp = ci_profile(&gi_profile(profile, g.profile)?, ci)?;
    let used: u32 = g.compute_instances.iter().map(|c| c.placement.size).sum();
    let gp = gi_profile(profile, g.profile)?;
    let by_slices = (gp.compute_slices - used.min(gp.compute_slices)) / cp.slices;
    let by_place = cp
        .placements
        .iter()
        .filter(|s| {
            let at = Placement { start: **s, size: cp.slices };
            g.compute_instances.iter().all(|c| !c.placement.overlaps(&at))
        })
        .count() as u32;
    Ok(by_slices.min(by_place))
}

/// Creates a CI of profile `ci` in GI `gi` at `start` (or the lowest free place) and returns its id.
pub fn create_compute_instance(profile: &Profile, layout: &mut MigLayout, gi: u32, ci: u32, start: Option<u32>) -> Result<u32, MigError> {
    let gi_profile_index = layout.gpu_instances.iter().find(|g| g.id == gi).ok_or(MigError::NoSuchInstance(gi))?.profile;
    let cp = ci_profile(&gi_profile(profile, gi_profile_index)?, ci)?;
    if ci_remaining_capacity(profile, layout, gi, ci)? == 0 && start.is_none() {
        return Err(MigError::NoCapacity(ci));
    }
    let g = gi_mut(layout, gi)?;
    let taken = |at: &Placement| g.compute_instances.iter().any(|c| c.placement.overlaps(at));
    let placement = match start {
        Some(s) => {
            let at = Placement { start: s, size: cp.slices };
            if !cp.placements.contains(&s) {
                return Err(MigError::BadPlacement { profile: ci, start: s, size: cp.slices });
            }
            if taken(&at) {
                return Err(MigError::Overlap { start: s, size: cp.slices });
            }
            at
        }
        None => {
            cp.placements.iter().map(|s| Placement { start: *s, size: cp.slices }).find(|at| !taken(at)).ok_or(MigError::NoCapacity(ci))?
        }
    };
    let id = (0..=MAX_CI_ID).find(|id| g.compute_instances.iter().all(|c| c.id != *id)).ok_or(MigError::NoCapacity(ci))?;
    g.compute_instances.push(ComputeInstance { id, profile: ci, placement });
    g.compute_instances.sort_by_key(|c| c.id);
    Ok(id)
}

/// Destroys CI `ci` of GI `gi`.
pub fn destroy_compute_instance(layout: &mut MigLayout, gi: u32, ci: u32) -> Result<(), MigError> {
    let g = gi_mut(layout, gi)?;
    let pos = g.compute_instances.iter().position(|c| c.id == ci).ok_or(MigError::NoSuchInstance(ci))?;
    g.compute_instances.remove(pos);
    Ok(())
}

/// Requests MIG mode `enable`. It becomes current at once when nothing runs on the GPU
/// (the driver resets an idle GPU itself); otherwise it stays pending. Disabling while GPU
/// instances exist is refused.
pub fn set_mode(profile: &Profile, layout: &mut MigLayout, enable: bool, busy: bool) -> Result<bool, MigError> {
    if !profile.mig_capable {
        return Err(MigError::NotCapable(profile.product_name.clone()));
    }
    if !enable && !layout.gpu_instances.is_empty() {
        return Err(MigError::InUse(0));
    }
    layout.pending = enable;
    if !busy {
        layout.current = enable;
    }
    Ok(layout.current == layout.pending)
}

/// The MIG devices of a layout (one per CI) in NVML's index order: (GI id, CI id).
pub fn mig_devices(layout: &MigLayout) -> Vec<(u32, u32)> {
    if !layout.current {
        return Vec::new();
    }
    let mut out: Vec<(u32, u32)> =
        layout.gpu_instances.iter().flat_map(|g| g.compute_instances.iter().map(move |c| (g.id, c.id))).collect();
    out.sort();
    out
}

/// One MIG device (a compute instance) as every consumer names it: the fake NVML's MIG
/// device handles, nvidia-smi, the device plugin and the DRA ResourceSlices all take it from
/// here, so a MIG UUID handed to a pod is the one its NVML view reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigDevice {
    /// Host index and UUID of the GPU it is carved from.
    pub parent_index: u32,
    pub parent_uuid: String,
    /// Its position among the parent's MIG devices (`nvmlDeviceGetMigDeviceHandleByIndex`).
    pub index: u32,
    pub gpu_instance: u32,
    pub compute_instance: u32,
    /// Where its GPU instance sits, in memory slices.
    pub placement: Placement,
    pub gi_profile: GiProfile,
    pub ci_profile: CiProfile,
    /// `MIG-…`, see [`mig_uuid`].
    pub uuid: String,
}

impl MigDevice {
    /// NVIDIA's profile name of the device: `1g.10gb`, or `1c.3g.20gb` for a compute
    /// instance smaller than its GPU instance.
    pub fn profile(&self) -> &str {
        &self.ci_profile.name
    }

    /// Framebuffer of the device: its GPU instance's.
    pub fn memory_bytes(&self) -> u64 {
        self.gi_profile.memory_mib * crate::telemetry::MIB
    }
}

/// What `nvmlDeviceGetAttributes` reports for a MIG device: its compute instance's SMs and
/// slices, its GPU instance's engines, slices and memory. GPU Feature Discovery labels MIG
/// devices with exactly these, so the operator's labels and the fake NVML share this one source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MigAttributes {
    pub multiprocessors: u32,
    pub copy_engines: u32,
    pub decoders: u32,
    pub encoders: u32,
    pub jpegs: u32,
    pub ofas: u32,
    pub gpu_instance_slices: u32,
    pub compute_instance_slices: u32,
    pub memory_mib: u64,
}

/// The attributes of a compute instance of profile `ci` in a GPU instance of profile `gi`.
pub fn attributes(gi: &GiProfile, ci: &CiProfile) -> MigAttributes {
    MigAttributes {
        multiprocessors: ci.multiprocessors,
        copy_engines: gi.copy_engines,
        decoders: gi.decoders,
        encoders: gi.encoders,
        jpegs: gi.jpegs,
        ofas: gi.ofas,
        gpu_instance_slices: gi.compute_slices,
        compute_instance_slices: ci.slices,
        memory_mib: gi.memory_mib,
    }
}

impl MigDevice {
    /// See [`attributes`].
    pub fn attributes(&self) -> MigAttributes {
        attributes(&self.gi_profile, &self.ci_profile)
    }
}

/// `MIG-<uuid>`: a pure function of node, parent GPU UUID and instance ids, so every process
/// on the node derives the same UUID without sharing anything but the state file.
pub fn mig_uuid(node: &str, gpu_uuid: &str, gi: u32, ci: u32) -> String {
    crate::identity::format_uuid("MIG-", crate::identity::uuid_bytes(&["mig", node, gpu_uuid, &gi.to_string(), &ci.to_string()]))
}

/// The (GI id, CI id) a MIG UUID of GPU `gpu_uuid` on `node` stands for, whether or not that
/// instance exists now. Every id pair is tried: there are only 15 × 8.
pub fn instance_of_uuid(node: &str, gpu_uuid: &str, uuid: &str) -> Option<(u32, u32)> {
    if !uuid.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("MIG-")) {
        return None;
    }
    (0..=MAX_GI_ID)
        .flat_map(|gi| (0..=MAX_CI_ID).map(move |ci| (gi, ci)))
        .find(|(gi, ci)| mig_uuid(node, gpu_uuid, *gi, *ci).eq_ignore_ascii_case(uuid))
}

/// The MIG devices of GPU `parent_index` (UUID `parent_uuid`) of `profile` on `node` with
/// `layout`, in NVML's index order; none unless MIG mode is current.
pub fn gpu_mig_devices(profile: &Profile, node: &str, parent_index: u32, parent_uuid: &str, layout: &MigLayout) -> Vec<MigDevice> {
    mig_devices(layout)
        .into_iter()
        .filter_map(|(gi_id, ci_id)| {
            let gi = layout.gpu_instances.iter().find(|g| g.id == gi_id)?;
            let ci = gi.compute_instances.iter().find(|c| c.id == ci_id)?;
            let gi_profile = gi_profile(profile, gi.profile).ok()?;
            let ci_profile = ci_profile(&gi_profile, ci.profile).ok()?;
            Some((gi, gi_profile, ci_profile, ci_id))
        })
        .enumerate()
        .map(|(index, (gi, gi_profile, ci_profile, ci_id))| MigDevice {
            parent_index,
            parent_uuid: parent_uuid.to_string(),
            index: index as u32,
            gpu_instance: gi.id,
            compute_instance: ci_id,
            placement: gi.placement,
            gi_profile,
            ci_profile,
            uuid: mig_uuid(node, parent_uuid, gi.id, ci_id),
        })
        .collect()
}

/// The layout of one GPU under one of NVIDIA's built-in mig-parted configurations
/// ([`crate::mig_parted::MigConfigs::builtin`]: `all-disabled`, `all-enabled`, `all-balanced`,
/// `all-<GI profile>`): a one-GPU shorthand for tests and fixtures; nodes get theirs through
/// [`crate::mig_parted::plan`] (the operator's MIG manager).
pub fn named_layout(profile: &Profile, config: &str) -> Result<MigLayout, MigError> {
    if !profile.mig_capable && config != "all-disabled" {
        return Err(MigError::NotCapable(profile.product_name.clone()));
    }
    match crate::mig_parted::MigConfigs::builtin(profile).layouts(config, profile, 1) {
        Ok(mut layouts) => Ok(layouts.pop().flatten().unwrap_or_default()),
        Err(_) => Err(MigError::UnknownConfig(config.to_string())),
    }
}

/// Checks a layout read from a state file against the board's rules.
pub fn validate_layout(profile: &Profile, layout: &MigLayout) -> Result<(), MigError> {
    if !profile.mig_capable {
        return Err(MigError::NotCapable(profile.product_name.clone()));
    }
    let mut rebuilt = MigLayout { current: true, pending: true, gpu_instances: Vec::new() };
    for g in &layout.gpu_instances {
        let id = create_gpu_instance(profile, &mut rebuilt, g.profile, Some(g.placement.start))?;
        if id != g.id {
            return Err(MigError::NoSuchInstance(g.id));
        }
        for c in &g.compute_instances {
            let ci = create_compute_instance(profile, &mut rebuilt, g.id, c.profile, Some(c.placement.start))?;
            if ci != c.id {
                return Err(MigError::NoSuchInstance(c.id));
            }
        }
    }
    if !layout.current && !layout.gpu_instances.is_empty() {
        return Err(MigError::NotEnabled);
    }
    // Sizes and ids are derived from profile and start: the file's must be exactly those.
    let mut given = layout.gpu_instances.clone();
    given.sort_by_key(|g| g.id);
    given.iter_mut().for_each(|g| g.compute_instances.sort_by_key(|c| c.id));
    rebuilt.gpu_instances.iter_mut().for_each(|g| g.compute_instances.sort_by_key(|c| c.id));
    if let Some((g, _)) = given.iter().zip(&rebuilt.gpu_instances).find(|(g, r)| g != r) {
        return Err(MigError::BadPlacement { profile: g.profile, start: g.placement.start, size: g.placement.size });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builtin::find_builtin;

    fn enabled() -> MigLayout {
        MigLayout { current: true, pending: true, gpu_instances: Vec::new() }
    }

    #[test]
    fn sm_shares_add_up_to_the_whole_instance() {
        let p = find_builtin("a100-40gb").unwrap();
        // A100 MIG: 14 SMs per slice, 98 in 7g.40gb.
        assert_eq!(sm_share_micro(p, "1g.5gb"), Some(142_857));
        assert_eq!(sm_share_micro(p, "3g.20gb"), Some(428_571));
        assert_eq!(sm_share_micro(p, "1c.3g.20gb"), Some(142_857));
        assert_eq!(sm_share_micro(p, "7g.40gb"), Some(1_000_000));
        assert_eq!(sm_share_micro(p, "9g.99gb"), None);
        assert_eq!(sm_share_micro(find_builtin("l4").unwrap(), "1g.5gb"), None, "not MIG-capable");
    }

    #[test]
    fn a100_table_matches_nvidia_smi() {
        let p = find_builtin("a100-40gb").unwrap();
        let t = gi_profiles(p).unwrap();
        let row = |id: u32| t.iter().find(|g| g.id == id).unwrap().clone();
        let g = row(19);
        assert_eq!((g.name.as_str(), g.instance_count, g.memory_mib, g.multiprocessors, g.decoders), ("1g.5gb", 7, 4864, 14, 0));
        assert_eq!(row(20).name, "1g.5gb+me");
        assert_eq!((row(20).jpegs, row(20).ofas), (1, 1));
        assert_eq!((row(9).name.as_str(), row(9).memory_mib, row(9).instance_count), ("3g.20gb", 19968, 2));
        assert_eq!((row(0).name.as_str(), row(0).multiprocessors, row(0).copy_engines), ("7g.40gb", 98, 7));
        assert_eq!(row(14).placements, vec![0, 2, 4]);
        assert_eq!(gi_profiles(find_builtin("h100").unwrap()).unwrap().iter().find(|g| g.id == 0).unwrap().multiprocessors, 132);
    }

    #[test]
    fn boards_without_mig_refuse() {
        for name in ["l4", "t4", "l40s", "k80"] {
            let p = find_builtin(name).unwrap();
            assert!(gi_profiles(p).is_none());
            assert!(matches!(set_mode(p, &mut MigLayout::default(), true, false), Err(MigError::NotCapable(_))));
        }
        for name in ["a100-40gb", "a100-80gb", "h100", "h200", "b200", "gb200", "gb300"] {
            let t = gi_profiles(find_builtin(name).unwrap()).unwrap();
            assert_eq!(t.len(), 7, "{name}");
            let full = t.iter().find(|g| g.index == GI_PROFILE_7_SLICE).unwrap();
            assert!(full.memory_mib < find_builtin(name).unwrap().memory.total_mib, "{name}");
            assert!(t.iter().all(|g| g.memory_mib > 0 && g.multiprocessors > 0 && g.multiprocessors <= full.multiprocessors), "{name}");
        }
    }

    #[test]
    fn two_3g_instances_take_ids_2_then_1_and_then_the_gpu_is_full() {
        let p = find_builtin("a100-40gb").unwrap();
        let mut l = enabled();
        assert_eq!(create_gpu_instance(p, &mut l, GI_PROFILE_3_SLICE, None), Ok(2));
        assert_eq!(create_gpu_instance(p, &mut l, GI_PROFILE_3_SLICE, None), Ok(1));
        assert_eq!(remaining_capacity(p, &l, GI_PROFILE_1_SLICE), Ok(0));
        assert_eq!(create_gpu_instance(p, &mut l, GI_PROFILE_1_SLICE, None), Err(MigError::NoCapacity(19)));
    }

    #[test]
    fn capacity_follows_placements_and_compute_slices() {
        let p = find_builtin("h100").unwrap();
        let mut l = enabled();
        assert_eq!(remaining_capacity(p, &l, GI_PROFILE_1_SLICE), Ok(7));
        assert_eq!(remaining_capacity(p, &l, GI_PROFILE_1_SLICE_REV1), Ok(1));
        assert_eq!(remaining_capacity(p, &MigLayout::default(), GI_PROFILE_1_SLICE), Ok(0));
        // 4g at 0 leaves slices 4..8: three 1g, one 3g is impossible (compute 4+3 = 7 fits, placement 4:4 free).
        create_gpu_instance(p, &mut l, GI_PROFILE_4_SLICE, None).unwrap();
        assert_eq!(remaining_capacity(p, &l, GI_PROFILE_3_SLICE), Ok(1));
        assert_eq!(remaining_capacity(p, &l, GI_PROFILE_1_SLICE), Ok(3));
        assert_eq!(remaining_capacity(p, &l, GI_PROFILE_4_SLICE), Ok(0));
        assert_eq!(remaining_capacity(p, &l, GI_PROFILE_7_SLICE), Ok(0));
        // Overlap and bad placements are refused with the driver's codes.
        assert_eq!(create_gpu_instance(p, &mut l, GI_PROFILE_2_SLICE, Some(2)), Err(MigError::Overlap { start: 2, size: 2 }));
        assert_eq!(create_gpu_instance(p, &mut l, GI_PROFILE_2_SLICE, Some(6)).unwrap_err().nvml_code(), 2);
        // 2g at 4 + 1g at 6: 4 + 2 + 1 = 7 compute slices; the last memory slice stays unused.
        assert_eq!(create_gpu_instance(p, &mut l, GI_PROFILE_2_SLICE, Some(4)), Ok(5));
        assert_eq!(create_gpu_instance(p, &mut l, GI_PROFILE_1_SLICE, None), Ok(13));
        assert_eq!(remaining_capacity(p, &l, GI_PROFILE_1_SLICE), Ok(0));
        // 1g.20gb at 6 would cover slices 6..8 and cannot coexist with the 1g at 6.
        assert!(create_gpu_instance(p, &mut l, GI_PROFILE_1_SLICE_REV2, Some(6)).is_err());
    }

    #[test]
    fn seven_1g_instances_get_ids_7_to_13() {
        let p = find_builtin("a100-80gb").unwrap();
        let mut l = enabled();
        let mut ids: Vec<u32> = (0..7).map(|_| create_gpu_instance(p, &mut l, GI_PROFILE_1_SLICE, None).unwrap()).collect();
        ids.sort();
        assert_eq!(ids, (7..=13).collect::<Vec<_>>());
        assert!(create_gpu_instance(p, &mut l, GI_PROFILE_1_SLICE, None).is_err());
        // The media-extended 1g cannot be added: every 1g placement is taken.
        assert_eq!(remaining_capacity(p, &l, GI_PROFILE_1_SLICE_REV1), Ok(0));
    }

    #[test]
    fn compute_instances() {
        let p = find_builtin("a100-40gb").unwrap();
        let mut l = enabled();
        let gi = create_gpu_instance(p, &mut l, GI_PROFILE_3_SLICE, None).unwrap();
        let gp = gi_profile(p, GI_PROFILE_3_SLICE).unwrap();
        let cps = ci_profiles(&gp);
        assert_eq!(cps.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["1c.3g.20gb", "2c.3g.20gb", "3g.20gb"]);
        assert_eq!(cps.iter().map(|c| c.instance_count).collect::<Vec<_>>(), [3, 1, 1]);
        assert_eq!(cps[1].placements, vec![0]);
        assert_eq!(create_compute_instance(p, &mut l, gi, 0, None), Ok(0));
        assert_eq!(ci_remaining_capacity(p, &l, gi, 0), Ok(2));
        // A 2-slice CI only sits at 0, which the 1c now covers.
        assert_eq!(ci_remaining_capacity(p, &l, gi, 1), Ok(0));
        assert!(create_compute_instance(p, &mut l, gi, 1, None).is_err());
        assert_eq!(create_compute_instance(p, &mut l, gi, 0, None), Ok(1));
        assert_eq!(mig_devices(&l), vec![(2, 0), (2, 1)]);
    }

    #[test]
    fn full_ci_and_destroy_order() {
        let p = find_builtin("h100").unwrap();
        let mut l = enabled();
        let gi = create_gpu_instance(p, &mut l, GI_PROFILE_3_SLICE, None).unwrap();
        assert_eq!(create_compute_instance(p, &mut l, gi, 2, None), Ok(0));
        assert_eq!(ci_remaining_capacity(p, &l, gi, 0), Ok(0));
        assert!(create_compute_instance(p, &mut l, gi, 0, None).is_err());
        assert_eq!(create_compute_instance(p, &mut l, gi, 4, None), Err(MigError::UnknownProfile(4)));
        assert_eq!(mig_devices(&l), vec![(2, 0)]);
        assert_eq!(destroy_gpu_instance(&mut l, gi), Err(MigError::InUse(gi)));
        destroy_compute_instance(&mut l, gi, 0).unwrap();
        destroy_gpu_instance(&mut l, gi).unwrap();
        assert_eq!(destroy_gpu_instance(&mut l, gi), Err(MigError::NoSuchInstance(gi)));
        validate_layout(p, &l).unwrap();
    }

    #[test]
    fn mode_switching() {
        let p = find_builtin("h100").unwrap();
        let mut l = MigLayout::default();
        assert_eq!(set_mode(p, &mut l, true, true), Ok(false));
        assert!(l.pending && !l.current);
        assert_eq!(set_mode(p, &mut l, true, false), Ok(true));
        create_gpu_instance(p, &mut l, GI_PROFILE_7_SLICE, None).unwrap();
        assert_eq!(set_mode(p, &mut l, false, false), Err(MigError::InUse(0)));
    }

    #[test]
    fn mig_devices_carry_the_tables_values_and_stable_uuids() {
        let p = find_builtin("h100").unwrap();
        let mut l = enabled();
        let gi3 = create_gpu_instance(p, &mut l, GI_PROFILE_3_SLICE, None).unwrap();
        create_compute_instance(p, &mut l, gi3, 0, None).unwrap();
        create_compute_instance(p, &mut l, gi3, 0, None).unwrap();
        let gi1 = create_gpu_instance(p, &mut l, GI_PROFILE_1_SLICE, None).unwrap();
        create_compute_instance(p, &mut l, gi1, 0, None).unwrap();
        let d = gpu_mig_devices(p, "n1", 3, "GPU-parent", &l);
        // NVML order is by (GI id, CI id): the 3g at 4 is GI 2, the 1g at 3 is GI 10.
        assert_eq!(d.iter().map(|m| (m.index, m.gpu_instance, m.compute_instance)).collect::<Vec<_>>(), [(0, 2, 0), (1, 2, 1), (2, 10, 0)]);
        assert_eq!(d.iter().map(MigDevice::profile).collect::<Vec<_>>(), ["1c.3g.40gb", "1c.3g.40gb", "1g.10gb"]);
        assert_eq!(d[2].memory_bytes(), 9984 * 1024 * 1024);
        assert_eq!((d[2].gi_profile.id, d[2].placement), (19, Placement { start: 3, size: 1 }));
        assert!(d.iter().all(|m| m.parent_index == 3 && m.parent_uuid == "GPU-parent" && m.uuid.starts_with("MIG-")));
        assert_eq!(d[0].uuid, mig_uuid("n1", "GPU-parent", 2, 0));
        assert_ne!(d[0].uuid, d[1].uuid);
        assert_ne!(mig_uuid("n2", "GPU-parent", 2, 0), d[0].uuid, "the node name is part of the UUID");
        // A UUID names its instance back, any case; other GPUs' and non-MIG UUIDs do not.
        assert_eq!(instance_of_uuid("n1", "GPU-parent", &d[2].uuid.to_uppercase().replace("MIG-", "mig-")), Some((10, 0)));
        assert_eq!(instance_of_uuid("n1", "GPU-other", &d[2].uuid), None);
        assert_eq!(instance_of_uuid("n1", "GPU-parent", "GPU-parent"), None);
        // MIG mode off: no devices even with instances recorded.
        l.current = false;
        assert!(gpu_mig_devices(p, "n1", 3, "GPU-parent", &l).is_empty());
    }

    #[test]
    fn named_layouts_fill_the_gpu() {
        let p = find_builtin("a100-80gb").unwrap();
        let l = named_layout(p, "all-1g.10gb").unwrap();
        let d = gpu_mig_devices(p, "n", 0, "GPU-x", &l);
        assert_eq!(d.len(), 7);
        assert!(d.iter().all(|m| m.profile() == "1g.10gb" && m.ci_profile.slices == 1));
        validate_layout(p, &l).unwrap();
        let l = named_layout(p, "all-3g.40gb").unwrap();
        assert_eq!(gpu_mig_devices(p, "n", 0, "GPU-x", &l).iter().map(|m| m.profile()).collect::<Vec<_>>(), ["3g.40gb", "3g.40gb"]);
        assert_eq!(named_layout(p, "all-disabled").unwrap(), MigLayout::default());
        assert!(matches!(named_layout(p, "all-9g.1gb"), Err(MigError::UnknownConfig(_))));
        assert_eq!(gpu_mig_devices(p, "n", 0, "GPU-x", &named_layout(p, "all-balanced").unwrap()).len(), 4);
        assert!(matches!(named_layout(p, "balanced"), Err(MigError::UnknownConfig(_))));
        assert!(matches!(named_layout(find_builtin("l4").unwrap(), "all-1g.10gb"), Err(MigError::NotCapable(_))));
    }

    #[test]
    fn validate_rejects_impossible_layouts() {
        let p = find_builtin("h100").unwrap();
        let bad = MigLayout {
            current: true,
            pending: true,
            gpu_instances: vec![
                GpuInstance { id: 1, profile: GI_PROFILE_4_SLICE, placement: Placement { start: 0, size: 4 }, compute_instances: vec![] },
                GpuInstance { id: 3, profile: GI_PROFILE_2_SLICE, placement: Placement { start: 0, size: 2 }, compute_instances: vec![] },
            ],
        };
        assert!(validate_layout(p, &bad).is_err());
    }
}
