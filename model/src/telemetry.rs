//! Readings a GPU reports (utilization, power, temperature, clocks, memory) as a
//! function of its profile and its load. One implementation for the fake NVML,
//! nvidia-smi and the metrics exporter, so that they agree.

use crate::profile::{ClockSet, Profile};

pub const MIB: u64 = 1024 * 1024;

/// What the GPU is doing. All zero is an idle GPU.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Load {
    /// Percent of time a kernel ran, 0..=100.
    pub gpu_util: u32,
    /// Percent of time memory was read or written, 0..=100.
    pub memory_util: u32,
    pub encoder_util: u32,
    pub decoder_util: u32,
    /// Framebuffer used by processes, bytes.
    pub memory_used_bytes: u64,
}

/// Framebuffer accounting. `used` excludes `reserved` (NVML v2); v1 callers get
/// `total - free`, which includes it, exactly as the real driver does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryUsage {
    pub total: u64,
    pub reserved: u64,
    pub used: u64,
    pub free: u64,
}

impl MemoryUsage {
    pub fn used_v1(&self) -> u64 {
        self.total - self.free
    }
}

/// One sample of everything that moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readings {
    pub gpu_util: u32,
    pub memory_util: u32,
    pub encoder_util: u32,
    pub decoder_util: u32,
    pub power_mw: u32,
    pub gpu_temp_c: u32,
    pub memory_temp_c: Option<u32>,
    pub clocks: ClockSet,
    pub pstate: u32,
    pub memory: MemoryUsage,
    pub bar1_used_bytes: u64,
}

fn lerp(idle: u32, busy: u32, percent: u32) -> u32 {
    let (idle, busy, p) = (u64::from(idle), u64::from(busy), u64::from(percent.min(100)));
    if busy >= idle {
        (idle + (busy - idle) * p / 100) as u32
    } else {
        (idle - (idle - busy) * p / 100) as u32
    }
}

/// Steady-state readings of `profile` under `load`.
pub fn readings(profile: &Profile, load: &Load) -> Readings {
    let util = load.gpu_util.min(100);
    // Profiles are validated (memory at most 4 TiB), but a reading must never wrap whatever
    // it is handed: saturate instead.
    let total = profile.memory.total_mib.saturating_mul(MIB);
    let reserved = profile.memory.reserved_mib.saturating_mul(MIB).min(total);
    let used = load.memory_used_bytes.min(total - reserved);
    let busy_temp = profile.thermal.slowdown_c.saturating_sub(15).max(profile.thermal.idle_gpu_c);
    let (idle_clk, max_clk) = (profile.clocks.idle, profile.clocks.max);
    Readings {
        gpu_util: util,
        memory_util: load.memory_util.min(100),
        encoder_util: load.encoder_util.min(100),
        decoder_util: load.decoder_util.min(100),
        power_mw: lerp(profile.power.idle_draw_mw, (u64::from(profile.power.default_limit_mw) * 9 / 10) as u32, util),
        gpu_temp_c: lerp(profile.thermal.idle_gpu_c, busy_temp, util),
        memory_temp_c: profile.thermal.idle_memory_c.map(|t| lerp(t, t.saturating_add(20), util)),
        clocks: ClockSet {
            graphics_mhz: lerp(idle_clk.graphics_mhz, max_clk.graphics_mhz, util),
            sm_mhz: lerp(idle_clk.sm_mhz, max_clk.sm_mhz, util),
            memory_mhz: if util > 0 { max_clk.memory_mhz } else { idle_clk.memory_mhz },
            video_mhz: lerp(idle_clk.video_mhz, max_clk.video_mhz, util),
        },
        pstate: if util > 0 { 0 } else { profile.idle_pstate },
        memory: MemoryUsage { total, reserved, used, free: total - reserved - used },
        bar1_used_bytes: profile.memory.bar1_used_mib.saturating_mul(MIB),
    }
}

/// Energy in millijoules a GPU drawing `power_mw` has used over `elapsed_ms`.
pub fn energy_mj(power_mw: u32, elapsed_ms: u64) -> u64 {
    (u128::from(power_mw) * u128::from(elapsed_ms) / 1000).min(u128::from(u64::MAX)) as u64
}

/// The "GPU T.Limit Temp" reading: how many degrees the GPU at `gpu_temp_c` is below its T.Limit
/// (the max-operating temperature; negative past it). `None` on boards that report no T.Limit.
pub fn tlimit_margin_c(profile: &Profile, gpu_temp_c: u32) -> Option<i32> {
    profile.thermal.tlimit?;
    let limit = profile.thermal.gpu_max_c.unwrap_or(profile.thermal.slowdown_c);
    Some(limit as i32 - gpu_temp_c as i32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builtin::find_builtin;

    #[test]
    fn idle_readings_are_the_profile_values() {
        let p = find_builtin("h100").unwrap();
        let r = readings(p, &Load::default());
        assert_eq!(r.power_mw, p.power.idle_draw_mw);
        assert_eq!(r.gpu_temp_c, p.thermal.idle_gpu_c);
        assert_eq!(r.clocks, p.clocks.idle);
        assert_eq!(r.memory.used, 0);
        assert_eq!(r.memory.total - r.memory.free, r.memory.reserved);
        assert_eq!(r.memory.used_v1(), r.memory.reserved + r.memory.used);
    }

    #[test]
    fn load_moves_readings_within_limits() {
        let p = find_builtin("h100").unwrap();
        let full = readings(p, &Load { gpu_util: 100, memory_used_bytes: u64::MAX, ..Load::default() });
        assert!(full.power_mw > p.power.idle_draw_mw && full.power_mw <= p.power.default_limit_mw);
        assert!(full.gpu_temp_c < p.thermal.slowdown_c);
        assert_eq!(full.clocks.sm_mhz, p.clocks.max.sm_mhz);
        assert_eq!(full.memory.free, 0, "used is capped at what is not reserved");
        assert_eq!(full.pstate, 0);
    }

    #[test]
    fn tlimit_margin_is_the_distance_to_the_max_operating_temperature() {
        let h100 = find_builtin("h100").unwrap();
        // The H100 capture: 29 C idle, T.Limit 58 C.
        assert_eq!(tlimit_margin_c(h100, 29), Some(58));
        assert_eq!(tlimit_margin_c(h100, 90), Some(-3));
        assert_eq!(tlimit_margin_c(find_builtin("a100-40gb").unwrap(), 30), None);
    }

    #[test]
    fn energy_integrates_power() {
        assert_eq!(energy_mj(70_000, 1_000), 70_000);
        assert_eq!(energy_mj(70_000, 0), 0);
    }
}
