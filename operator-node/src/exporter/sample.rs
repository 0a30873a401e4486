//! Per-GPU metric values at a moment: every reading comes from the model's dynamics
//! ([`fakegpu_model::dynamics::readings`], [`fakegpu_model::dynamics::energy_mj`]) applied to
//! the GPU's live state, exactly as the fake NVML computes them for nvidia-smi at that instant.
//! Only the profiling ratios are derived here (DCGM has no NVML counterpart for them).
//!
//! Pure: the state and the time come in.

use fakegpu_model::dynamics;
use fakegpu_model::profile::Profile;
use fakegpu_model::state::{GpuState, Now};
use fakegpu_model::telemetry::MIB;
use fakegpu_operator_core::node_state;

use super::node::MigView;

/// Share of the graphics-engine activity reported as tensor-pipe activity.
pub const TENSOR_SHARE_PERCENT: u32 = 50;

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
    /// The values of a MIG device (GPU instance): no utilization counters are reported.
    pub mig_instance: bool,
}

/// The exported values of a GPU of `profile` in state `gpu` (the default state: idle and
/// healthy, never written) at `now`.
pub fn values(profile: &Profile, gpu: &GpuState, now: Now) -> GpuValues {
    let r = dynamics::readings(profile, gpu, now);
    let micro = |percent: u32| percent.min(100) * 10_000;
    GpuValues {
        sm_clock_mhz: r.clocks.sm_mhz,
        mem_clock_mhz: r.clocks.memory_mhz,
        memory_temp_c: r.memory_temp_c,
        gpu_temp_c: r.gpu_temp_c,
        power_mw: r.power_mw,
        energy_mj: dynamics::energy_mj(profile, gpu, now),
        // No PCIe faults are modelled.
        pcie_replays: 0,
        gpu_util: r.gpu_util,
        mem_copy_util: r.memory_util,
        enc_util: r.encoder_util,
        dec_util: r.decoder_util,
        last_xid: gpu.faults.xids.last().copied().unwrap_or(0),
        fb_free_mib: r.memory.free / MIB,
        fb_used_mib: r.memory.used / MIB,
        gr_engine_active_micro: micro(r.gpu_util),
        pipe_tensor_active_micro: micro(r.gpu_util) / 100 * TENSOR_SHARE_PERCENT,
        dram_active_micro: micro(r.memory_util),
        mig_instance: false,
    }
}

/// The values of MIG device `mig` of a GPU whose own values are `parent` and live state
/// `parent_state`: the GPU's clocks, temperatures, power and energy (one board), the device's
/// framebuffer (the processes on its GPU instance when the state has any, as the fake NVML
/// counts them, else its holder's `fbUsed`), and activity ratios from its holder's utilization
/// range drawn exactly as a whole GPU's ([`node_state::utilization_of`], the model's dynamics).
pub fn mig_values(
    parent: &GpuValues,
    parent_state: &GpuState,
    mig: &MigView,
    knative: &dyn Fn(&str) -> Option<u32>,
    now: Now,
) -> GpuValues {
    let load = node_state::gpu_load(&mig.uuid, &mig.usages, knative);
    let (utilization, pattern) = node_state::utilization_of(&load);
    let util = dynamics::utilization(&GpuState { utilization, pattern, ..GpuState::default() }, now);
    let on_instance: Vec<u64> =
        parent_state.processes.iter().filter(|p| p.gpu_instance_id == Some(mig.gpu_instance_id)).map(|p| p.used_memory_bytes).collect();
    let used_bytes =
        if on_instance.is_empty() { load.memory_used_bytes } else { on_instance.iter().fold(0u64, |a, b| a.saturating_add(*b)) };
    let used = (used_bytes / MIB).min(mig.memory_mib);
    let micro = |percent: u32| percent.min(100) * 10_000;
    GpuValues {
        fb_used_mib: used,
        fb_free_mib: mig.memory_mib - used,
        gpu_util: util.gpu,
        mem_copy_util: util.memory,
        gr_engine_active_micro: micro(util.gpu),
        pipe_tensor_active_micro: micro(util.gpu) / 100 * TENSOR_SHARE_PERCENT,
        dram_active_micro: micro(util.memory),
        mig_instance: true,
        ..*parent
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fakegpu_model::find_builtin;
    use fakegpu_model::state::{Mark, Utilization};
    use fakegpu_model::telemetry::{self, Load};
    use fakegpu_operator_core::node_state::PodUsage;

    const T: Now = Now { unix_ms: 1_700_000_000_000, boot_ms: 3_600_000 };

    #[test]
    fn idle_gpu_reads_like_the_fake_nvml_without_state() {
        let p = find_builtin("h100").unwrap();
        let idle = values(p, &GpuState::default(), T);
        let r0 = telemetry::readings(p, &Load::default());
        assert_eq!((idle.power_mw, idle.gpu_temp_c, idle.sm_clock_mhz), (r0.power_mw, r0.gpu_temp_c, r0.clocks.sm_mhz));
        assert_eq!(idle.energy_mj, dynamics::idle_energy_mj(p, T), "idle power since boot, as nvmlDeviceGetTotalEnergyConsumption");
        assert_eq!(idle.fb_used_mib, 0);
        assert_eq!(idle.fb_free_mib, p.memory.total_mib - p.memory.reserved_mib);
        assert_eq!((idle.gr_engine_active_micro, idle.last_xid), (0, 0));
    }

    #[test]
    fn busy_gpu_values_are_the_dynamics_readings() {
        let p = find_builtin("h100").unwrap();
        let mut g = GpuState {
            utilization: Utilization { gpu: 100, memory: 50, ..Utilization::default() },
            memory_used_bytes: 1024 * MIB,
            energy_mj: Some(Mark { value: 5_000, at_unix_ms: T.unix_ms - 2_000 }),
            temperature_c: Some(Mark { value: 30, at_unix_ms: T.unix_ms - 2_000 }),
            ..GpuState::default()
        };
        g.faults.xids = vec![13, 79];
        let v = values(p, &g, T);
        let r = dynamics::readings(p, &g, T);
        assert_eq!(
            (v.power_mw, v.gpu_temp_c, v.sm_clock_mhz, v.mem_clock_mhz),
            (r.power_mw, r.gpu_temp_c, r.clocks.sm_mhz, r.clocks.memory_mhz)
        );
        assert!(
            v.gpu_temp_c > 30 && v.gpu_temp_c < telemetry::readings(p, &Load { gpu_util: 100, ..Load::default() }).gpu_temp_c,
            "warming up"
        );
        assert_eq!(v.energy_mj, 5_000 + u64::from(r.power_mw) * 2);
        assert_eq!((v.gpu_util, v.mem_copy_util, v.fb_used_mib), (100, 50, 1024));
        assert_eq!(v.fb_used_mib + v.fb_free_mib + p.memory.reserved_mib, p.memory.total_mib);
        assert_eq!((v.gr_engine_active_micro, v.pipe_tensor_active_micro, v.dram_active_micro), (1_000_000, 500_000, 500_000));
        assert_eq!(v.last_xid, 79, "the last XID injected");
    }

    /// A MIG device's framebuffer: the processes on its GPU instance when the state has any (as
    /// the fake NVML counts a MIG device's memory), capped at the instance's.
    #[test]
    fn mig_framebuffer_counts_the_instance_processes() {
        use fakegpu_model::state::Process;
        let p = find_builtin("a100-80gb").unwrap();
        let proc_on = |gi: Option<u32>, mib: u64| Process {
            pid: 1,
            name: "p".into(),
            used_memory_bytes: mib * MIB,
            kind: Default::default(),
            gpu_instance_id: gi,
            compute_instance_id: gi.map(|_| 0),
            pid_namespace: None,
        };
        let state = GpuState {
            processes: vec![proc_on(Some(7), 1024), proc_on(Some(7), 512), proc_on(Some(8), 4096), proc_on(None, 9)],
            ..GpuState::default()
        };
        let parent = values(p, &state, T);
        let holder = PodUsage { pod_uid: "u".into(), util_min: 100, util_max: 100, fb_used_mib: 9_856, use_knative: false };
        let mig = MigView {
            uuid: "MIG-a".into(),
            profile: "1g.10gb".into(),
            gpu_instance_id: 7,
            memory_mib: 9_856,
            sm_share_micro: 142_857,
            owner: None,
            usages: vec![holder],
        };
        let v = mig_values(&parent, &state, &mig, &|_| None, T);
        assert_eq!((v.fb_used_mib, v.fb_free_mib, v.gr_engine_active_micro, v.mig_instance), (1536, 9_856 - 1536, 1_000_000, true));
        assert_eq!((v.power_mw, v.sm_clock_mhz, v.energy_mj), (parent.power_mw, parent.sm_clock_mhz, parent.energy_mj));
        // No process on the instance: the holder's fbUsed; more than the instance: capped.
        let other = MigView { gpu_instance_id: 9, ..mig.clone() };
        assert_eq!(mig_values(&parent, &state, &other, &|_| None, T).fb_used_mib, 9_856);
        let greedy = GpuState { processes: vec![proc_on(Some(7), 20_000)], ..GpuState::default() };
        assert_eq!(mig_values(&parent, &greedy, &mig, &|_| None, T).fb_free_mib, 0);
    }

    #[test]
    fn framebuffer_is_capped_by_the_model() {
        let p = find_builtin("a100-80gb").unwrap();
        let v = values(p, &GpuState { memory_used_bytes: u64::MAX / 2, ..GpuState::default() }, T);
        assert_eq!(v.fb_free_mib, 0);
        assert_eq!(v.fb_used_mib, p.memory.total_mib - p.memory.reserved_mib);
    }
}
