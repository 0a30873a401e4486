//! Readings of a GPU with a live state, as a function of the state and the time.
//!
//! * Utilization is the state's, moved by an optional pattern (steady, sine, burst, range).
//! * Power, clocks and performance state follow utilization at once ([`crate::telemetry::readings`]).
//! * Temperature moves from where it stood at the last write toward its load value with
//!   time constant [`TEMP_TIME_CONSTANT_MS`].
//! * Energy is the counter at the last write plus the (mean) power since; before any write
//!   it is idle power × uptime. It is a function of the state and the clock only, so every
//!   process computes the same value and it never goes back.

use crate::profile::Profile;
use crate::state::{clock_reason, GpuState, Mark, Now, PatternKind, Utilization};
use crate::telemetry::{self, Load, Readings};

/// How fast the temperature approaches its load value (63 % of the way per constant).
pub const TEMP_TIME_CONSTANT_MS: f64 = 20_000.0;

fn mix(mut h: u64) -> u64 {
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

fn scale(u: Utilization, f: impl Fn(u32) -> u32) -> Utilization {
    Utilization { gpu: f(u.gpu), memory: f(u.memory), encoder: f(u.encoder), decoder: f(u.decoder) }
}

/// Utilization at `now`: the set values moved by the pattern.
pub fn utilization(gpu: &GpuState, now: Now) -> Utilization {
    let base = gpu.utilization;
    let Some(p) = gpu.pattern else { return base };
    let period_ms = u64::from(p.period_s.max(1)) * 1000;
    match p.kind {
        PatternKind::Steady => base,
        PatternKind::Sine => {
            let phase = (mix(p.seed) % 1000) as f64 / 1000.0;
            let x = ((now.unix_ms % period_ms) as f64 / period_ms as f64 + phase) * std::f64::consts::TAU;
            let s = x.sin();
            scale(base, |v| {
                let amp = f64::from(v.min(100 - v.min(100)));
                (f64::from(v) + amp * s).round().clamp(0.0, 100.0) as u32
            })
        }
        PatternKind::Burst => {
            if window_draw(p.seed, now, period_ms) & 1 == 0 {
                base
            } else {
                scale(base, |_| 0)
            }
        }
        PatternKind::Range => {
            let (lo, hi) = (p.min.min(base.gpu), base.gpu);
            let draw = lo + (window_draw(p.seed, now, period_ms) % (u64::from(hi - lo) + 1)) as u32;
            range_at(base, draw)
        }
    }
}

/// A seeded draw that stays the same for one window of `period_ms`, in every process.
fn window_draw(seed: u64, now: Now, period_ms: u64) -> u64 {
    let window = now.unix_ms / period_ms;
    mix(seed ^ window.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// `base` with its GPU utilization moved to `gpu` (at most `base.gpu`) and the other engines
/// scaled in proportion, so that they stay in the ratio the writer set.
fn range_at(base: Utilization, gpu: u32) -> Utilization {
    if base.gpu == 0 {
        return base;
    }
    let at = |v: u32| (u64::from(v) * u64::from(gpu) / u64::from(base.gpu)) as u32;
    Utilization { gpu, ..scale(base, at) }
}

/// The utilization the pattern averages to (what the energy counter integrates).
pub fn mean_utilization(gpu: &GpuState) -> Utilization {
    match gpu.pattern {
        Some(p) if p.kind == PatternKind::Burst => scale(gpu.utilization, |v| v / 2),
        Some(p) if p.kind == PatternKind::Range => {
            let hi = gpu.utilization.gpu;
            range_at(gpu.utilization, midpoint(p.min.min(hi), hi))
        }
        _ => gpu.utilization,
    }
}

/// Framebuffer in use: the larger of the set amount and the processes' sum.
pub fn memory_used(gpu: &GpuState) -> u64 {
    let procs = gpu.processes.iter().fold(0u64, |sum, p| sum.saturating_add(p.used_memory_bytes));
    gpu.memory_used_bytes.max(procs)
}

fn load(gpu: &GpuState, u: Utilization) -> Load {
    Load { gpu_util: u.gpu, memory_util: u.memory, encoder_util: u.encoder, decoder_util: u.decoder, memory_used_bytes: memory_used(gpu) }
}

/// Temperature (°C) at `now`.
pub fn temperature_c(profile: &Profile, gpu: &GpuState, now: Now) -> u32 {
    let target = telemetry::readings(profile, &load(gpu, utilization(gpu, now))).gpu_temp_c;
    approach(gpu.temperature_c, target, now)
}

/// Where a temperature that stood at `mark` is at `now` on its way to `target`.
#[inline]
pub fn approach(mark: Option<Mark>, target: u32, now: Now) -> u32 {
    match mark {
        None => target,
        Some(mark) => {
            let dt = now.unix_ms.saturating_sub(mark.at_unix_ms) as f64;
            if dt > 20.0 * TEMP_TIME_CONSTANT_MS {
                return target;
            }
            let from = mark.value as f64;
            let t = f64::from(target) + (from - f64::from(target)) * (-dt / TEMP_TIME_CONSTANT_MS).exp();
            t.round().max(0.0) as u32
        }
    }
}

/// Energy counter (mJ) at `now`.
pub fn energy_mj(profile: &Profile, gpu: &GpuState, now: Now) -> u64 {
    let power = telemetry::readings(profile, &load(gpu, mean_utilization(gpu))).power_mw;
    match gpu.energy_mj {
        None => telemetry::energy_mj(profile.power.idle_draw_mw, now.boot_ms),
        Some(mark) => mark.value.saturating_add(telemetry::energy_mj(power, now.unix_ms.saturating_sub(mark.at_unix_ms))),
    }
}

/// Energy counter of a GPU that has no state yet.
pub fn idle_energy_mj(profile: &Profile, now: Now) -> u64 {
    telemetry::energy_mj(profile.power.idle_draw_mw, now.boot_ms)
}

/// Clock-event reasons at `util`: GPU_IDLE when idle, plus the injected ones.
pub fn clock_event_reasons(gpu: Option<&GpuState>, gpu_util: u32) -> u64 {
    let injected = gpu.map_or(0, |g| g.faults.clock_event_reasons);
    let idle = if gpu_util == 0 { clock_reason::GPU_IDLE } else { 0 };
    idle | injected
}

/// Half way between `a` and `b`, without overflow.
fn midpoint(a: u32, b: u32) -> u32 {
    ((u64::from(a) + u64::from(b)) / 2) as u32
}

/// Everything that moves, at `now`.
pub fn readings(profile: &Profile, gpu: &GpuState, now: Now) -> Readings {
    let u = utilization(gpu, now);
    let mut r = telemetry::readings(profile, &load(gpu, u));
    r.gpu_temp_c = temperature_c(profile, gpu, now);
    if gpu.faults.clock_event_reasons & clock_reason::SLOWING != 0 {
        // A slowdown holds graphics/SM clocks at most half way between idle and maximum.
        let (idle, max) = (profile.clocks.idle, profile.clocks.max);
        r.clocks.graphics_mhz = r.clocks.graphics_mhz.min(midpoint(idle.graphics_mhz, max.graphics_mhz));
        r.clocks.sm_mhz = r.clocks.sm_mhz.min(midpoint(idle.sm_mhz, max.sm_mhz));
        if r.pstate == 0 && u.gpu > 0 {
            r.pstate = 2;
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builtin::find_builtin;
    use crate::state::Pattern;

    const T0: Now = Now { unix_ms: 1_700_000_000_000, boot_ms: 5_000_000 };

    fn at(ms: u64) -> Now {
        Now { unix_ms: T0.unix_ms + ms, boot_ms: T0.boot_ms + ms }
    }

    fn busy(util: u32) -> GpuState {
        GpuState {
            utilization: Utilization { gpu: util, memory: util / 2, ..Default::default() },
            energy_mj: Some(Mark { value: 1_000, at_unix_ms: T0.unix_ms }),
            temperature_c: Some(Mark { value: 30, at_unix_ms: T0.unix_ms }),
            ..Default::default()
        }
    }

    #[test]
    fn idle_state_reads_like_the_static_model() {
        for p in crate::builtin::builtin_profiles().unwrap() {
            let r = readings(p, &GpuState::default(), T0);
            assert_eq!(r, telemetry::readings(p, &Load::default()), "{}", p.name);
        }
    }

    #[test]
    fn power_clocks_pstate_step_with_load() {
        let p = find_builtin("h100").unwrap();
        let mut last = readings(p, &busy(0), at(0));
        for util in [10, 40, 70, 100] {
            let r = readings(p, &busy(util), at(0));
            assert!(r.power_mw > last.power_mw && r.power_mw <= p.power.default_limit_mw);
            assert!(r.clocks.sm_mhz >= last.clocks.sm_mhz);
            assert_eq!(r.pstate, 0);
            last = r;
        }
        assert_eq!(last.clocks.sm_mhz, p.clocks.max.sm_mhz);
    }

    #[test]
    fn temperature_approaches_its_load_value() {
        let p = find_builtin("h100").unwrap();
        let g = busy(100);
        let target = telemetry::readings(p, &load(&g, g.utilization)).gpu_temp_c;
        let temps: Vec<u32> = [0, 5_000, 20_000, 60_000, 600_000].iter().map(|&ms| temperature_c(p, &g, at(ms))).collect();
        assert_eq!(temps[0], 30);
        assert!(temps.windows(2).all(|w| w[0] <= w[1]), "{temps:?}");
        assert!(temps[2] > 30 && temps[2] < target);
        assert_eq!(temps[4], target);
    }

    #[test]
    fn energy_integrates_power_and_is_monotonic() {
        let p = find_builtin("a100-80gb").unwrap();
        let g = busy(50);
        let power = readings(p, &g, at(0)).power_mw;
        assert_eq!(energy_mj(p, &g, at(0)), 1_000);
        assert_eq!(energy_mj(p, &g, at(2_000)), 1_000 + u64::from(power) * 2);
        let idle = GpuState::default();
        assert_eq!(energy_mj(p, &idle, at(1_000)), idle_energy_mj(p, at(1_000)));
        assert!(energy_mj(p, &idle, at(1_000)) > energy_mj(p, &idle, at(0)));
    }

    #[test]
    fn patterns_stay_in_range_and_are_deterministic() {
        for kind in [PatternKind::Steady, PatternKind::Sine, PatternKind::Burst, PatternKind::Range] {
            let mut g = busy(60);
            g.pattern = Some(Pattern { kind, seed: 7, period_s: 10, min: 40 });
            let samples: Vec<u32> = (0..200).map(|k| utilization(&g, at(k * 997)).gpu).collect();
            assert!(samples.iter().all(|&u| u <= 100));
            let again: Vec<u32> = (0..200).map(|k| utilization(&g, at(k * 997)).gpu).collect();
            assert_eq!(samples, again);
            match kind {
                PatternKind::Steady => assert!(samples.iter().all(|&u| u == 60)),
                PatternKind::Sine => assert!(samples.iter().min() < Some(&40) && samples.iter().max() > Some(&80)),
                PatternKind::Burst => assert!(samples.contains(&0) && samples.contains(&60)),
                PatternKind::Range => {
                    assert!(samples.iter().all(|u| (40..=60).contains(u)) && samples.windows(2).any(|w| w[0] != w[1]), "{samples:?}")
                }
            }
        }
    }

    #[test]
    fn range_holds_per_window_scales_other_engines_and_averages_to_the_midpoint() {
        let p = find_builtin("h100").unwrap();
        let mut g = busy(60);
        g.utilization.memory = 30;
        g.pattern = Some(Pattern { kind: PatternKind::Range, seed: 11, period_s: 5, min: 40 });
        // One window: the same value at every instant in it (nvidia-smi and a scrape agree).
        let w = at(5_000 * 1_000);
        assert!((0..5_000).step_by(250).all(|ms| utilization(&g, w) == utilization(&g, Now { unix_ms: w.unix_ms + ms, ..w })));
        let mut seen = std::collections::BTreeMap::new();
        for k in 0..400 {
            let u = utilization(&g, at(k * 5_000));
            assert_eq!(u.memory, u.gpu / 2, "{u:?}");
            *seen.entry(u.gpu).or_insert(0u32) += 1;
        }
        assert_eq!(seen.keys().copied().collect::<Vec<_>>(), (40..=60).collect::<Vec<_>>(), "every value of the range is drawn");
        let mean = mean_utilization(&g);
        assert_eq!((mean.gpu, mean.memory), (50, 25));
        assert_eq!(energy_mj(p, &g, at(10_000)) - 1_000, u64::from(telemetry::readings(p, &load(&g, mean)).power_mw) * 10);
        // A minimum above the set value is a range of one value, not a panic.
        g.pattern = Some(Pattern { kind: PatternKind::Range, seed: 11, period_s: 5, min: 90 });
        assert!((0..50).all(|k| utilization(&g, at(k * 5_000)).gpu == 60));
        // An idle GPU stays idle.
        let idle = GpuState { pattern: g.pattern, ..GpuState::default() };
        assert_eq!(utilization(&idle, at(0)), Utilization::default());
    }

    #[test]
    fn throttle_holds_clocks_and_reports_reasons() {
        let p = find_builtin("h100").unwrap();
        let mut g = busy(100);
        g.faults.clock_event_reasons = clock_reason::SW_THERMAL_SLOWDOWN;
        let r = readings(p, &g, at(0));
        assert!(r.clocks.sm_mhz < p.clocks.max.sm_mhz);
        assert_eq!(clock_event_reasons(Some(&g), 100), clock_reason::SW_THERMAL_SLOWDOWN);
        assert_eq!(clock_event_reasons(None, 0), clock_reason::GPU_IDLE);
    }
}
