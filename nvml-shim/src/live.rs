//! The live node state as the getters see it (see `fakegpu_model::state_file`).
//!
//! Hot path: one atomic load of the shared generation word and a thread-local compare.
//! Each thread keeps the snapshot it last parsed and re-reads the file only when the
//! generation moved, so readers never lock each other and never parse on an unchanged
//! state. A file that does not parse leaves the last good snapshot in place, with one
//! stderr line per process until a good one is read again.

use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use fakegpu_model::state::{GpuState, NodeState, Now};
use fakegpu_model::state_file::{self, Generation};

/// One parsed state, indexed by GPU.
pub(crate) struct Snapshot {
    pub gpus: Vec<GpuState>,
    /// Whether GPU i has anything but the idle defaults (else the static readings apply).
    pub active: Vec<bool>,
    pub next_event_seq: u64,
}

impl Snapshot {
    fn new(state: &NodeState, gpu_count: usize) -> Snapshot {
        let mut gpus = vec![GpuState::default(); gpu_count];
        for (key, gpu) in &state.gpus {
            if let Some(slot) = key.parse::<usize>().ok().and_then(|i| gpus.get_mut(i)) {
                *slot = gpu.clone();
            }
        }
        let active = gpus.iter().map(|g| *g != GpuState::default()).collect();
        Snapshot { gpus, active, next_event_seq: state.next_event_seq }
    }
}

pub(crate) struct Live {
    pub path: Option<PathBuf>,
    pub generation: Option<Generation>,
    gpu_count: usize,
    last_good: Mutex<Option<Arc<Snapshot>>>,
    warned: AtomicBool,
    empty: Arc<Snapshot>,
}

static LIVE: OnceLock<Live> = OnceLock::new();

thread_local! {
    static CACHE: RefCell<Option<(u32, Arc<Snapshot>)>> = const { RefCell::new(None) };
}

/// Sets up the live state for a node of `gpu_count` GPUs (once per process).
pub(crate) fn init(gpu_count: usize) {
    LIVE.get_or_init(|| {
        let path = state_file::state_path(&|k| std::env::var(k).ok());
        let generation = path.as_ref().and_then(|p| match Generation::open(p, true).or_else(|_| Generation::open(p, false)) {
            Ok(g) => Some(g),
            Err(e) => {
                eprintln!("fakegpu: live state disabled: {e}");
                None
            }
        });
        let empty = Arc::new(Snapshot::new(&NodeState::default(), gpu_count));
        Live { path, generation, gpu_count, last_good: Mutex::new(None), warned: AtomicBool::new(false), empty }
    });
}

pub(crate) fn live() -> Option<&'static Live> {
    LIVE.get()
}

impl Live {
    /// Whether there is a state file at all.
    pub fn enabled(&self) -> bool {
        self.generation.is_some()
    }

    fn load(&self) -> Arc<Snapshot> {
        let Some(path) = &self.path else { return self.empty.clone() };
        match state_file::read(path) {
            Ok(state) => {
                let snap = Arc::new(Snapshot::new(&state, self.gpu_count));
                if let Ok(mut good) = self.last_good.try_lock() {
                    *good = Some(snap.clone());
                }
                self.warned.store(false, Ordering::Relaxed);
                snap
            }
            Err(e) => {
                if !self.warned.swap(true, Ordering::Relaxed) {
                    eprintln!("fakegpu: {e}; keeping the last good state");
                }
                let good = self.last_good.lock().map(|g| g.clone()).unwrap_or(None);
                good.unwrap_or_else(|| self.empty.clone())
            }
        }
    }

    /// The current generation (0 without a state file).
    #[inline]
    pub fn generation(&self) -> u32 {
        self.generation.as_ref().map_or(0, Generation::load)
    }
}

/// Runs `f` on the current snapshot (the idle one without a state file).
#[inline]
pub(crate) fn with<R>(f: impl FnOnce(&Snapshot) -> R) -> R {
    let Some(live) = live().filter(|l| l.enabled()) else {
        return f(&empty());
    };
    let gen = live.generation();
    CACHE.with(|c| {
        {
            let cached = c.borrow();
            if let Some((seen, snap)) = &*cached {
                if *seen == gen {
                    return f(snap);
                }
            }
        }
        let snap = live.load();
        *c.borrow_mut() = Some((gen, snap.clone()));
        f(&snap)
    })
}

fn empty() -> Arc<Snapshot> {
    live().map_or_else(|| Arc::new(Snapshot::new(&NodeState::default(), 0)), |l| l.empty.clone())
}

/// Runs `f` on GPU `index`'s state, or returns `None` when it is idle and healthy (or there
/// is no live state), so that callers keep their static fast path.
#[inline]
pub(crate) fn with_gpu<R>(index: u32, f: impl FnOnce(&GpuState) -> R) -> Option<R> {
    live().filter(|l| l.enabled())?;
    with(|s| {
        let i = index as usize;
        if s.active.get(i).copied().unwrap_or(false) {
            Some(f(&s.gpus[i]))
        } else {
            None
        }
    })
}

/// Whether GPU `index` fell off the bus.
#[inline]
pub(crate) fn lost(index: u32) -> bool {
    with_gpu(index, |g| g.faults.lost).unwrap_or(false)
}

/// The time for readings: wall clock from the coarse clock (cheap), uptime only when asked.
#[inline]
pub(crate) fn now_coarse() -> Now {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid out-parameter.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) };
    Now { unix_ms: ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000, boot_ms: 0 }
}
