//! Per-GPU metric values, computed by the model ([`fakegpu_model::telemetry::readings`]) from
//! what the topology says the GPU is doing, so that the metrics and nvidia-smi over the fake
//! NVML agree on power, temperature, clocks and memory for the same load.
//!
//! Pure: randomness comes in as a seed, time as milliseconds, Knative rates as a lookup.

use std::collections::HashMap;

use fakegpu_model::identity::stable_hash;
use fakegpu_model::profile::Profile;
use fakegpu_model::telemetry::{self, Load, MIB};

/// Share of the SM utilization reported as memory-copy utilization when the topology gives none.
pub const MEMORY_UTIL_SHARE_PERCENT: u32 = 50;
/// Share of the graphics-engine activity reported as tensor-pipe activity.
pub const TENSOR_SHARE_PERCENT: u32 = 50;

/// One pod's claim on a GPU, as the topology records it (upstream `podGpuUsageStatus`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodUsage {
    pub pod_uid: String,
    /// Utilization range in percent; the exporter draws a value in `min..=max` per scrape.
    pub util_min: u32,
    pub util_max: u32,
    pub fb_used_mib: u64,
    /// Utilization comes from the pod's request rate (inference pods), not from the range.
    pub use_knative: bool,
}

/// What a GPU is doing, as far as the exporter is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Activity {
    pub gpu_util: u32,
    pub memory_util: u32,
    pub fb_used_mib: u64,
    /// Last XID seen (0: none).
    pub last_xid: u32,
    pub pcie_replays: u64,
}

/// Everything one GPU exports. Ratios are in millionths, power in milliwatts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuValues {
    pub sm_clock_mhz: u32,
    pub mem_clock_mhz: u32,
    pub memory_temp_c: Option<u32>,
    pub gpu_temp_c: u32,
    pub power_mw: u32,
    pub energy_mj: u64,
    pub pcie_replays: u64,
    pub gpu_util: u32,
    pub mem_copy_util: u32,
    pub enc_util: u32,
    pub dec_util: u32,
    pub last_xid: u32,
    pub fb_free_mib: u64,
    pub fb_used_mib: u64,
    pub gr_engine_active_micro: u32,
    pub pipe_tensor_active_micro: u32,
    pub dram_active_micro: u32,
}

/// A value drawn from `min..=max` (both ends possible, unlike upstream's `Range.Random`).
/// `min > max` is read as the range the other way round.
pub fn sample_range(min: u32, max: u32, seed: u64) -> u32 {
    let (lo, hi) = if min <= max { (min, max) } else { (max, min) };
    let span = u64::from(hi - lo) + 1;
    lo + (seed % span) as u32
}

/// The seed of pod `pod_uid` on GPU `uuid` in scrape `round`.
pub fn seed(uuid: &str, pod_uid: &str, round: u64) -> u64 {
    stable_hash(&[uuid, pod_uid, &round.to_string()])
}

/// Utilization of a GPU: the sum over its pods of a draw from the pod's range, or of the
/// inference utilization for pods that use it (`knative(pod_uid)`, 0 when unknown), capped at 100.
pub fn combined_utilization(uuid: &str, usages: &[PodUsage], round: u64, knative: &dyn Fn(&str) -> Option<u32>) -> u32 {
    let sum: u64 = usages
        .iter()
        .map(|u| {
            let v = if u.use_knative {
                knative(&u.pod_uid).unwrap_or(0)
            } else {
                sample_range(u.util_min, u.util_max, seed(uuid, &u.pod_uid, round))
            };
            u64::from(v)
        })
        .sum();
    sum.min(100) as u32
}

/// Framebuffer the pods hold, MiB (the sum of their `fbUsed`; the model caps it at what is not reserved).
pub fn fb_used_mib(usages: &[PodUsage]) -> u64 {
    usages.iter().map(|u| u.fb_used_mib).fold(0u64, u64::saturating_add)
}

/// Activity of a GPU whose pods are `usages`.
pub fn activity(uuid: &str, usages: &[PodUsage], round: u64, knative: &dyn Fn(&str) -> Option<u32>) -> Activity {
    let gpu_util = combined_utilization(uuid, usages, round, knative);
    Activity { gpu_util, memory_util: gpu_util * MEMORY_UTIL_SHARE_PERCENT / 100, fb_used_mib: fb_used_mib(usages), ..Activity::default() }
}

/// The exported values of a GPU of `profile` doing `activity`, with energy counter `energy_mj`.
pub fn values(profile: &Profile, activity: &Activity, energy_mj: u64) -> GpuValues {
    let r = telemetry::readings(
        profile,
        &Load {
            gpu_util: activity.gpu_util,
            memory_util: activity.memory_util,
            encoder_util: 0,
            decoder_util: 0,
            memory_used_bytes: activity.fb_used_mib.saturating_mul(MIB),
        },
    );
    let micro = |percent: u32| percent.min(100) * 10_000;
    GpuValues {
        sm_clock_mhz: r.clocks.sm_mhz,
        mem_clock_mhz: r.clocks.memory_mhz,
        memory_temp_c: r.memory_temp_c,
        gpu_temp_c: r.gpu_temp_c,
        power_mw: r.power_mw,
        energy_mj,
        pcie_replays: activity.pcie_replays,
        gpu_util: r.gpu_util,
        mem_copy_util: r.memory_util,
        enc_util: r.encoder_util,
        dec_util: r.decoder_util,
        last_xid: activity.last_xid,
        fb_free_mib: r.memory.free / MIB,
        fb_used_mib: r.memory.used / MIB,
        gr_engine_active_micro: micro(r.gpu_util),
        pipe_tensor_active_micro: micro(r.gpu_util) / 100 * TENSOR_SHARE_PERCENT,
        dram_active_micro: micro(r.memory_util),
    }
}

/// Energy counters per GPU UUID: each reading adds the power of the previous reading over the
/// time since it (the counter only grows). A GPU seen for the first time starts at 0, as a
/// freshly booted board does.
#[derive(Debug, Default)]
pub struct EnergyMeter {
    marks: HashMap<String, (u64, u64, u32)>,
}

impl EnergyMeter {
    /// Counter of `uuid` at `now_ms`, the GPU drawing `power_mw` from now on.
    pub fn read(&mut self, uuid: &str, power_mw: u32, now_ms: u64) -> u64 {
        match self.marks.get_mut(uuid) {
            Some((value, at, power)) => {
                *value += telemetry::energy_mj(*power, now_ms.saturating_sub(*at));
                *at = (*at).max(now_ms);
                *power = power_mw;
                *value
            }
            None => {
                self.marks.insert(uuid.to_owned(), (0, now_ms, power_mw));
                0
            }
        }
    }

    /// Forgets GPUs for which `keep` is false (nodes that went away).
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.marks.retain(|k, _| keep(k));
    }

    pub fn len(&self) -> usize {
        self.marks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.marks.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fakegpu_model::find_builtin;

    fn usage(uid: &str, min: u32, max: u32, fb: u64) -> PodUsage {
        PodUsage { pod_uid: uid.into(), util_min: min, util_max: max, fb_used_mib: fb, use_knative: false }
    }

    #[test]
    fn range_draws_cover_both_ends() {
        let draws: Vec<u32> = (0..200).map(|s| sample_range(50, 100, seed("GPU-x", "p", s))).collect();
        assert!(draws.iter().all(|&v| (50..=100).contains(&v)));
        assert!(draws.contains(&50) || draws.contains(&100), "ends reachable");
        assert_eq!((0..64).map(|s| sample_range(30, 30, s)).collect::<Vec<_>>(), vec![30; 64]);
        assert!((0..64).all(|s| (10..=20).contains(&sample_range(20, 10, s))));
        let all: std::collections::BTreeSet<u32> = (0..2000).map(|s| sample_range(0, 3, seed("g", "p", s))).collect();
        assert_eq!(all.into_iter().collect::<Vec<_>>(), vec![0, 1, 2, 3]);
    }

    #[test]
    fn utilization_sums_pods_and_caps_at_100() {
        let none = |_: &str| None;
        assert_eq!(combined_utilization("g", &[], 0, &none), 0);
        assert_eq!(combined_utilization("g", &[usage("a", 30, 30, 0), usage("b", 40, 40, 0)], 0, &none), 70);
        assert_eq!(combined_utilization("g", &[usage("a", 80, 80, 0), usage("b", 40, 40, 0)], 0, &none), 100);
    }

    #[test]
    fn knative_pods_use_the_lookup_and_default_to_zero() {
        let mut u = usage("inf", 0, 0, 0);
        u.use_knative = true;
        assert_eq!(combined_utilization("g", std::slice::from_ref(&u), 0, &|uid| (uid == "inf").then_some(37)), 37);
        assert_eq!(combined_utilization("g", &[u], 0, &|_| None), 0);
    }

    #[test]
    fn values_come_from_the_model() {
        let p = find_builtin("h100").unwrap();
        let idle = values(p, &Activity::default(), 0);
        let r0 = telemetry::readings(p, &Load::default());
        assert_eq!(idle.power_mw, r0.power_mw);
        assert_eq!(idle.gpu_temp_c, r0.gpu_temp_c);
        assert_eq!(idle.sm_clock_mhz, r0.clocks.sm_mhz);
        assert_eq!(idle.fb_used_mib, 0);
        assert_eq!(idle.fb_free_mib, p.memory.total_mib - p.memory.reserved_mib);
        assert_eq!(idle.gr_engine_active_micro, 0);

        let a = activity("g", &[usage("a", 100, 100, 1024)], 0, &|_| None);
        assert_eq!(a.memory_util, 50);
        let busy = values(p, &a, 5);
        let r = telemetry::readings(p, &Load { gpu_util: 100, memory_util: 50, memory_used_bytes: 1024 * MIB, ..Load::default() });
        assert_eq!(busy.power_mw, r.power_mw);
        assert_eq!(busy.sm_clock_mhz, p.clocks.max.sm_mhz);
        assert_eq!(busy.mem_clock_mhz, r.clocks.memory_mhz);
        assert_eq!(busy.fb_used_mib, 1024);
        assert_eq!(busy.fb_used_mib + busy.fb_free_mib + p.memory.reserved_mib, p.memory.total_mib);
        assert_eq!(busy.gr_engine_active_micro, 1_000_000);
        assert_eq!(busy.pipe_tensor_active_micro, 500_000);
        assert_eq!(busy.dram_active_micro, 500_000);
        assert_eq!(busy.energy_mj, 5);
    }

    #[test]
    fn framebuffer_is_capped_by_the_model() {
        let p = find_builtin("a100-80gb").unwrap();
        let v = values(p, &Activity { fb_used_mib: u64::MAX / 2, ..Activity::default() }, 0);
        assert_eq!(v.fb_free_mib, 0);
        assert_eq!(v.fb_used_mib, p.memory.total_mib - p.memory.reserved_mib);
    }

    #[test]
    fn energy_integrates_previous_power_and_never_decreases() {
        let mut m = EnergyMeter::default();
        assert_eq!(m.read("g", 100_000, 1_000), 0);
        assert_eq!(m.read("g", 300_000, 3_000), 200_000);
        assert_eq!(m.read("g", 300_000, 2_000), 200_000, "clock going back adds nothing");
        assert_eq!(m.read("g", 0, 4_000), 500_000);
        m.retain(|u| u != "g");
        assert!(m.is_empty());
    }
}
