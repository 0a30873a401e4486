//! The one path from a node's topology (what its pods do on each GPU) to the per-GPU live
//! state of the model (`fakegpu_model::state::GpuState`), shared by the status-updater (which
//! writes it to `fakegpu-state.json` beside the node config, where the fake NVML reads it) and
//! the status-exporter (which computes every metric from it with `fakegpu_model::dynamics`), so
//! that nvidia-smi over the fake NVML and the metrics report the same values at the same moment.
//!
//! Per GPU: utilization is a seeded draw from `[Σ min, Σ max]` of the pods' ranges (capped at
//! 100), redrawn every [`RANGE_PERIOD_S`] s (the model's `range` pattern); memory-controller
//! utilization is [`MEMORY_UTIL_SHARE_PERCENT`] of it; memory used is Σ `fbUsed`. Pure; the
//! adapters store it (`fakegpu_model::state_file::update`) or keep it in memory.

use fakegpu_model::config::NodeSpec;
use fakegpu_model::identity::stable_hash;
use fakegpu_model::state::{self, NodeState, Now, Pattern, PatternKind, SetRequest, StateError, Utilization};
use fakegpu_model::telemetry::MIB;

use crate::topology::{GpuUsageStatus, NodeTopology};

/// Share of the GPU utilization the memory controller is busy (the topology gives none).
pub const MEMORY_UTIL_SHARE_PERCENT: u32 = 50;
/// How long one draw from a utilization range holds. Upstream redrew at every scrape; a few
/// seconds keep nvidia-smi and a scrape taken moments apart on the same value.
pub const RANGE_PERIOD_S: u32 = 5;

/// One pod's use of a GPU: a topology `podGpuUsageStatus` entry with its pod UID.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodUsage {
    pub pod_uid: String,
    /// Utilization range in percent, both ends reachable; `min > max` is read the other way round.
    pub util_min: u32,
    pub util_max: u32,
    pub fb_used_mib: u64,
    /// Utilization comes from the pod's request rate (inference pods), not from the range.
    pub use_knative: bool,
}

impl PodUsage {
    pub fn from_status(pod_uid: &str, s: &GpuUsageStatus) -> PodUsage {
        PodUsage {
            pod_uid: pod_uid.to_owned(),
            util_min: s.utilization.min,
            util_max: s.utilization.max,
            fb_used_mib: s.fb_used,
            use_knative: s.use_knative_utilization,
        }
    }
}

/// What one GPU does: the bounds of its utilization, its framebuffer use and the seed of its draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GpuLoad {
    pub util_min: u32,
    pub util_max: u32,
    pub memory_used_bytes: u64,
    pub seed: u64,
}

/// The load of GPU `uuid` whose pods are `usages`. `knative(pod_uid)` is an inference pod's
/// utilization; only the exporter knows it (from Prometheus), the status-updater passes
/// [`no_inference`], so nvidia-smi does not see inference pods' utilization.
pub fn gpu_load(uuid: &str, usages: &[PodUsage], knative: &dyn Fn(&str) -> Option<u32>) -> GpuLoad {
    let (mut lo, mut hi, mut mib) = (0u64, 0u64, 0u64);
    for u in usages {
        let (a, b) = if u.use_knative {
            let v = knative(&u.pod_uid).unwrap_or(0);
            (v, v)
        } else {
            (u.util_min.min(u.util_max), u.util_min.max(u.util_max))
        };
        lo += u64::from(a);
        hi += u64::from(b);
        mib = mib.saturating_add(u.fb_used_mib);
    }
    GpuLoad {
        util_min: lo.min(100) as u32,
        util_max: hi.min(100) as u32,
        memory_used_bytes: mib.saturating_mul(MIB),
        // The UUID, not the index: the same GPU draws the same values in every process.
        seed: stable_hash(&[uuid]),
    }
}

/// The load of a GPU in MIG mode: each MIG device's load ([`gpu_load`] of its holder) weighted
/// by its share of the GPU's SMs (millionths, `fakegpu_model::mig::sm_share_micro`), summed;
/// framebuffer summed. What drives the board's power, clocks and temperature while its
/// instances work (each instance's own activity is drawn from its holder's range).
pub fn mig_parent_load<'a>(
    uuid: &str,
    devices: impl IntoIterator<Item = (u32, &'a [PodUsage])>,
    knative: &dyn Fn(&str) -> Option<u32>,
) -> GpuLoad {
    let (mut lo, mut hi, mut bytes) = (0u64, 0u64, 0u64);
    for (share, usages) in devices {
        let l = gpu_load(uuid, usages, knative);
        lo += u64::from(l.util_min) * u64::from(share);
        hi += u64::from(l.util_max) * u64::from(share);
        bytes = bytes.saturating_add(l.memory_used_bytes);
    }
    GpuLoad {
        // Rounded: seven 1/7 shares at 100 % make 100, not 99.
        util_min: ((lo + 500_000) / 1_000_000).min(100) as u32,
        util_max: ((hi + 500_000) / 1_000_000).min(100) as u32,
        memory_used_bytes: bytes,
        seed: stable_hash(&[uuid]),
    }
}

/// The knative lookup of a writer that knows no request rates.
pub fn no_inference(_: &str) -> Option<u32> {
    None
}

/// The pods of each GPU of `t`.
pub fn usages(t: &NodeTopology) -> Vec<Vec<PodUsage>> {
    t.gpus.iter().map(|g| g.status.pod_gpu_usage_status.iter().map(|(uid, s)| PodUsage::from_status(uid, s)).collect()).collect()
}

/// The load of every GPU of `t` (GPU index order), as the status-updater knows it.
pub fn targets(t: &NodeTopology) -> Vec<GpuLoad> {
    t.gpus.iter().zip(usages(t)).map(|(g, u)| gpu_load(&g.id, &u, &no_inference)).collect()
}

/// The utilization and pattern a GPU's state holds under `load`: the upper end of the range
/// as the set value and, for a real range, the `range` pattern down to its lower end.
pub fn utilization_of(load: &GpuLoad) -> (Utilization, Option<Pattern>) {
    let u = Utilization { gpu: load.util_max, memory: load.util_max * MEMORY_UTIL_SHARE_PERCENT / 100, encoder: 0, decoder: 0 };
    let pattern = (load.util_min < load.util_max).then_some(Pattern {
        kind: PatternKind::Range,
        seed: load.seed,
        period_s: RANGE_PERIOD_S,
        min: load.util_min,
    });
    (u, pattern)
}

/// Brings `st` to `loads`; GPUs already there are not touched (no rewrite, counters keep
/// running). A pattern other than `range` that a user set (`fakegpu state set --pattern sine`)
/// stays while the pods ask for a fixed value; framebuffer use is capped at what the board
/// can hand out.
pub fn apply(st: &mut NodeState, spec: &NodeSpec, loads: &[GpuLoad], now: Now) -> Result<(), StateError> {
    for (i, load) in loads.iter().enumerate().take(spec.gpu_count as usize) {
        apply_one(st, spec, i as u32, load, now)?;
    }
    Ok(())
}

/// [`apply`] for GPU `index` alone.
pub fn apply_one(st: &mut NodeState, spec: &NodeSpec, index: u32, load: &GpuLoad, now: Now) -> Result<(), StateError> {
    let usable = (spec.profile.memory.total_mib - spec.profile.memory.reserved_mib) * MIB;
    let (util, range) = utilization_of(load);
    let bytes = load.memory_used_bytes.min(usable);
    let cur = st.gpu(index);
    let cur_pattern = cur.and_then(|g| g.pattern);
    let pattern = match (range, cur_pattern) {
        (None, Some(p)) if p.kind != PatternKind::Range => Some(p),
        (p, _) => p,
    };
    let (cur_util, cur_bytes) = cur.map_or((Utilization::default(), 0), |g| (g.utilization, g.memory_used_bytes));
    if (cur_util.gpu, cur_util.memory, cur_bytes, cur_pattern) == (util.gpu, util.memory, bytes, pattern) {
        return Ok(());
    }
    let req = SetRequest {
        gpu_util: Some(util.gpu),
        memory_util: Some(util.memory),
        memory_used_bytes: Some(bytes),
        pattern: Some(pattern),
        ..Default::default()
    };
    state::set(st, spec, index, &req, now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::{GpuDetails, GpuStatus, Range};
    use fakegpu_model::dynamics;

    fn topo() -> NodeTopology {
        let mut busy = GpuStatus::default();
        busy.pod_gpu_usage_status
            .insert("a".into(), GpuUsageStatus { utilization: Range { min: 40, max: 60 }, fb_used: 1000, use_knative_utilization: false });
        busy.pod_gpu_usage_status.insert(
            "b".into(),
            GpuUsageStatus { utilization: Range { min: 30, max: 10 }, fb_used: 99_999, use_knative_utilization: false },
        );
        busy.pod_gpu_usage_status
            .insert("inf".into(), GpuUsageStatus { utilization: Range { min: 0, max: 0 }, fb_used: 1, use_knative_utilization: true });
        NodeTopology {
            gpu_memory: 15360,
            gpus: vec![
                GpuDetails { id: "GPU-x".into(), status: busy, mig: None },
                GpuDetails { id: "GPU-y".into(), ..GpuDetails::default() },
            ],
            ..Default::default()
        }
    }

    /// A MIG GPU's load: each instance's range weighted by its SM share; memory summed.
    #[test]
    fn mig_parent_load_weights_instances_by_their_sms() {
        let usage = |lo: u32, hi: u32, mib: u64| {
            vec![PodUsage { pod_uid: "u".into(), util_min: lo, util_max: hi, fb_used_mib: mib, use_knative: false }]
        };
        let (a, b, free) = (usage(100, 100, 4864), usage(40, 60, 19968), Vec::new());
        // 1g (1/7 of the SMs) at 100 %, 3g (3/7) at 40–60 %, a free 3g.
        let l = mig_parent_load("GPU-m", [(142_857, &a[..]), (428_571, &b[..]), (428_571, &free[..])], &no_inference);
        assert_eq!((l.util_min, l.util_max, l.memory_used_bytes), (31, 40, (4864 + 19968) * MIB));
        assert_eq!(l.seed, gpu_load("GPU-m", &[], &no_inference).seed, "the GPU's own draws");
        let full = mig_parent_load("GPU-m", std::iter::repeat_n((142_857, &a[..]), 7), &no_inference);
        assert_eq!((full.util_min, full.util_max), (100, 100));
        let idle = mig_parent_load("GPU-m", [(1_000_000, &free[..])], &no_inference);
        assert_eq!((idle.util_min, idle.util_max, idle.memory_used_bytes), (0, 0, 0));
    }

    #[test]
    fn loads_sum_ranges_cap_and_take_inference_only_when_known() {
        let t = topo();
        let l = targets(&t);
        // 40-60 plus 10-30 (written the other way round); the inference pod adds nothing here.
        assert_eq!((l[0].util_min, l[0].util_max, l[0].memory_used_bytes), (50, 90, 101_000 * MIB));
        assert_eq!((l[1].util_min, l[1].util_max, l[1].memory_used_bytes), (0, 0, 0));
        assert_ne!(l[0].seed, l[1].seed, "seeded per GPU");
        let u = &usages(&t)[0];
        let known = gpu_load("GPU-x", u, &|uid| (uid == "inf").then_some(30));
        assert_eq!((known.util_min, known.util_max), (80, 100), "capped at 100");
        assert_eq!(known.seed, l[0].seed);
    }

    #[test]
    fn state_holds_the_range_and_the_model_draws_from_it() {
        let spec = NodeSpec::builtin("t4", Some(2), "n").unwrap();
        let now = Now { unix_ms: 1_000, boot_ms: 1_000 };
        let mut st = NodeState::default();
        let load = GpuLoad { util_min: 40, util_max: 60, memory_used_bytes: 1000 * MIB, seed: 9 };
        apply(&mut st, &spec, &[load, GpuLoad::default()], now).unwrap();
        let g = st.gpu(0).unwrap();
        assert_eq!((g.utilization.gpu, g.utilization.memory, g.memory_used_bytes), (60, 30, 1000 * MIB));
        assert_eq!(g.pattern.map(|p| (p.kind, p.min, p.seed, p.period_s)), Some((PatternKind::Range, 40, 9, RANGE_PERIOD_S)));
        let draws: Vec<u32> = (0..200).map(|k| dynamics::utilization(g, Now { unix_ms: k * 5_000, boot_ms: 0 }).gpu).collect();
        assert!(draws.iter().all(|u| (40..=60).contains(u)) && draws.contains(&40) && draws.contains(&60), "{draws:?}");
        assert!(st.gpu(1).is_none(), "idle GPU never written");
        let before = st.clone();
        apply(&mut st, &spec, &[load, GpuLoad::default()], Now { unix_ms: 9_000, boot_ms: 9_000 }).unwrap();
        assert_eq!(st, before, "no change, no write");
        // A fixed value drops the range pattern; more memory than the GPU can hand out is capped.
        let fixed = GpuLoad { util_min: 70, util_max: 70, memory_used_bytes: u64::MAX / 2, seed: 9 };
        apply(&mut st, &spec, &[fixed, GpuLoad::default()], now).unwrap();
        let g = st.gpu(0).unwrap();
        assert_eq!((g.utilization.gpu, g.pattern), (70, None));
        assert!(g.memory_used_bytes < 15360 * MIB);
    }

    #[test]
    fn a_users_pattern_survives_fixed_loads() {
        let spec = NodeSpec::builtin("t4", Some(1), "n").unwrap();
        let now = Now { unix_ms: 1_000, boot_ms: 1_000 };
        let mut st = NodeState::default();
        let sine = Pattern { kind: PatternKind::Sine, seed: 1, period_s: 60, min: 0 };
        state::set(&mut st, &spec, 0, &SetRequest { pattern: Some(Some(sine)), ..Default::default() }, now).unwrap();
        apply(&mut st, &spec, &[GpuLoad { util_min: 50, util_max: 50, ..GpuLoad::default() }], now).unwrap();
        assert_eq!((st.gpu(0).unwrap().utilization.gpu, st.gpu(0).unwrap().pattern), (50, Some(sine)));
        apply(&mut st, &spec, &[GpuLoad { util_min: 10, util_max: 50, ..GpuLoad::default() }], now).unwrap();
        assert_eq!(st.gpu(0).unwrap().pattern.map(|p| p.kind), Some(PatternKind::Range), "the pods' range wins");
    }
}
