//! `FAKEGPU_LOG`: whether the fake driver libraries (NVML, CUDA) trace each exported call to
//! stderr. Read once per process: an environment lookup per call would dominate the getters' cost.

use std::sync::atomic::{AtomicU8, Ordering};

/// The variable; `debug` or `trace` (any case) turns tracing on.
pub const ENV_LOG: &str = "FAKEGPU_LOG";

const UNKNOWN: u8 = 0;
const OFF: u8 = 1;
const ON: u8 = 2;
static STATE: AtomicU8 = AtomicU8::new(UNKNOWN);

/// Whether calls are traced (one relaxed atomic load after the first call).
pub fn debug_enabled() -> bool {
    match STATE.load(Ordering::Relaxed) {
        ON => true,
        OFF => false,
        _ => {
            let on = std::env::var(ENV_LOG).is_ok_and(|v| v.eq_ignore_ascii_case("debug") || v.eq_ignore_ascii_case("trace"));
            STATE.store(if on { ON } else { OFF }, Ordering::Relaxed);
            on
        }
    }
}
