//! The live node state as the getters see it (see `fakegpu_model::state_file`).
//!
//! Hot path (every reading getter): one atomic load of the shared generation word, one
//! compare with the generation this process last loaded, and a seqlock read of the GPU's
//! small fixed-size [`Hot`] record. No lock, no thread-local, no reference count, no parse.
//! When the generation moved, the first caller re-reads the file under a mutex (others
//! keep reading the previous record meanwhile) and publishes the new records and the full
//! [`Snapshot`] (processes, MIG layout, events, fault details; read by the colder getters).
//! A file that does not parse leaves the last good state in place, with one stderr line
//! per process until a good one is read again.
//!
//! The last `nvmlShutdown` lets go of the file ([`release`]): the `.seq` mapping becomes a
//! zero page at the same address and the parsed state is dropped, so that nothing a racing
//! getter may still touch is unmapped or freed; the next `nvmlInit` maps the file again.

use std::path::PathBuf;
use std::sync::atomic::{fence, AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use fakegpu_model::state::{Faults, GpuState, Mark, NodeState, Now, Pattern, Utilization};
use fakegpu_model::state_file::{self, Generation};
use fakegpu_model::telemetry::Readings;
use fakegpu_model::{NodeSpec, Profile};

/// One parsed state, indexed by GPU.
pub(crate) struct Snapshot {
    pub gpus: Vec<GpuState>,
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
        Snapshot { gpus, next_event_seq: state.next_event_seq }
    }
}

/// What the reading getters need of one GPU: plain data, copied under a seqlock.
#[derive(Clone, Copy, Default, PartialEq)]
#[repr(C)]
pub(crate) struct Hot {
    /// Anything but the idle defaults (else the static readings apply).
    pub active: bool,
    /// Some process on the GPU is a real one that registered itself (swept when it exits).
    pub registered: bool,
    pub lost: bool,
    pub utilization: Utilization,
    pub pattern: Option<Pattern>,
    /// Set memory use or the processes' sum, whichever is larger.
    pub memory_used_bytes: u64,
    pub clock_event_reasons: u64,
    pub energy_mj: Option<Mark>,
    pub temperature_c: Option<Mark>,
    /// Readings with the temperature at its load value, precomputed when no pattern moves
    /// the utilization (then only the temperature depends on the time).
    pub base: Option<Readings>,
}

const WORDS: usize = std::mem::size_of::<Hot>().div_ceil(8);

impl Hot {
    fn of(g: &GpuState, profile: &Profile) -> Hot {
        let base = g.pattern.is_none().then(|| {
            let steady = GpuState { temperature_c: None, ..Hot::of_plain(g).gpu_state() };
            fakegpu_model::dynamics::readings(profile, &steady, Now { unix_ms: 0, boot_ms: 0 })
        });
        Hot { base, ..Hot::of_plain(g) }
    }

    fn of_plain(g: &GpuState) -> Hot {
        Hot {
            base: None,
            active: *g != GpuState::default(),
            registered: g.processes.iter().any(|p| p.pid_namespace.is_some()),
            lost: g.faults.lost,
            utilization: g.utilization,
            pattern: g.pattern,
            memory_used_bytes: fakegpu_model::dynamics::memory_used(g),
            clock_event_reasons: g.faults.clock_event_reasons,
            energy_mj: g.energy_mj,
            temperature_c: g.temperature_c,
        }
    }

    /// The state the model's dynamics need (no processes: memory use is already summed).
    pub fn gpu_state(&self) -> GpuState {
        GpuState {
            utilization: self.utilization,
            pattern: self.pattern,
            memory_used_bytes: self.memory_used_bytes,
            faults: Faults { lost: self.lost, clock_event_reasons: self.clock_event_reasons, ..Faults::default() },
            energy_mj: self.energy_mj,
            temperature_c: self.temperature_c,
            ..GpuState::default()
        }
    }

    fn to_words(self) -> [u64; WORDS] {
        let mut words = [0u64; WORDS];
        // SAFETY: Hot is Copy and fits in `words`; bytes are copied as they are.
        unsafe {
            std::ptr::copy_nonoverlapping((&self as *const Hot).cast::<u8>(), words.as_mut_ptr().cast::<u8>(), std::mem::size_of::<Hot>())
        };
        words
    }

    /// # Safety
    /// `words` must come from [`Hot::to_words`].
    unsafe fn from_words(words: &[u64; WORDS]) -> Hot {
        std::ptr::read_unaligned(words.as_ptr().cast::<Hot>())
    }
}

/// One GPU's [`Hot`] record behind a sequence lock (odd = being written).
struct HotSlot {
    seq: AtomicU32,
    words: [AtomicU64; WORDS],
    /// The temperature last computed: (slot sequence low 16 bits) << 48 | temp << 32 | coarse ms low 32 bits.
    /// Within one coarse clock tick every caller reuses it instead of recomputing the exponential.
    temp_cache: AtomicU64,
}

impl HotSlot {
    fn new(hot: Hot) -> HotSlot {
        HotSlot { seq: AtomicU32::new(0), words: hot.to_words().map(AtomicU64::new), temp_cache: AtomicU64::new(u64::MAX) }
    }

    /// Only the refresher, holding the refresh lock, writes.
    fn store(&self, hot: Hot) {
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        for (slot, w) in self.words.iter().zip(hot.to_words()) {
            slot.store(w, Ordering::Relaxed);
        }
        self.seq.store(s.wrapping_add(2), Ordering::Release);
    }

    #[inline]
    fn load(&self) -> Hot {
        self.load_seq().0
    }

    #[inline]
    fn load_seq(&self) -> (Hot, u32) {
        loop {
            let s1 = self.seq.load(Ordering::Acquire);
            if s1 & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let mut words = [0u64; WORDS];
            for (w, slot) in words.iter_mut().zip(&self.words) {
                *w = slot.load(Ordering::Relaxed);
            }
            fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) == s1 {
                // SAFETY: an unchanged even sequence means the words are one whole store.
                return (unsafe { Hot::from_words(&words) }, s1);
            }
        }
    }
}

pub(crate) struct Live {
    pub path: Option<PathBuf>,
    pub generation: Option<Generation>,
    gpu_count: usize,
    spec: NodeSpec,
    profile: Profile,
    /// Bit i of word i/64: GPU i is lost (read without the seqlock by every handle check).
    lost: Box<[AtomicU64]>,
    /// Generation the hot records and snapshot reflect (`u64::MAX`-free: starts unset).
    seen: AtomicU32,
    loaded: AtomicBool,
    hot: Box<[HotSlot]>,
    /// The full state last read, and the lock that serializes re-reads.
    snapshot: Mutex<Arc<Snapshot>>,
    warned: AtomicBool,
    /// Cleared by [`release`] at the last `nvmlShutdown`: a getter still racing it must not
    /// read the file (and so fill the snapshot) again.
    attached: AtomicBool,
}

/// The live state: null, or a leaked `Box<Live>` that only [`free`] frees.
static LIVE_PTR: AtomicPtr<Live> = AtomicPtr::new(std::ptr::null_mut());

/// Reads of [`LIVE_PTR`], as the `OnceLock` it replaces was read.
struct LiveCell;
static LIVE: LiveCell = LiveCell;

impl LiveCell {
    #[inline]
    fn get(&self) -> Option<&'static Live> {
        // SAFETY: non-null is a live Box that only `free` releases, at unload with no user left.
        unsafe { LIVE_PTR.load(Ordering::Acquire).as_ref() }
    }
}

/// Frees the live state (its mapping and descriptor): the library is being unloaded.
pub(crate) fn free() {
    let ptr = LIVE_PTR.swap(std::ptr::null_mut(), Ordering::AcqRel);
    if !ptr.is_null() {
        // SAFETY: `ptr` came from Box::into_raw in `init` and was just unpublished.
        drop(unsafe { Box::from_raw(ptr) });
    }
}

/// Sets up the live state for the node `spec` with the state file at `path` (once per process;
/// the caller holds the load lock). A reader holds no descriptor: only the `.seq` mapping.
pub(crate) fn init(spec: &NodeSpec, path: Option<PathBuf>) {
    if LIVE.get().is_some() {
        return;
    }
    let (gpu_count, profile) = (spec.gpu_count as usize, &spec.profile);
    let generation = path.as_ref().and_then(|p| match Generation::open_reader(p) {
        Ok(g) => Some(g),
        Err(e) => {
            eprintln!("fakegpu: live state disabled: {e}");
            None
        }
    });
    let live = Live {
        path,
        generation,
        gpu_count,
        spec: spec.clone(),
        profile: profile.clone(),
        lost: (0..gpu_count.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
        seen: AtomicU32::new(0),
        loaded: AtomicBool::new(false),
        hot: (0..gpu_count).map(|_| HotSlot::new(Hot::default())).collect(),
        snapshot: Mutex::new(Arc::new(Snapshot::new(&NodeState::default(), gpu_count))),
        warned: AtomicBool::new(false),
        attached: AtomicBool::new(true),
    };
    LIVE_PTR.store(Box::into_raw(Box::new(live)), Ordering::Release);
}

/// The last `nvmlShutdown` (the caller holds the load lock): lets go of the state file and of
/// the state read from it, without freeing anything a getter racing the shutdown may still
/// touch. The `.seq` mapping becomes a zero page at the same address (see
/// [`Generation::detach`]); the snapshot (process lists, MIG layouts, events) is dropped, and
/// the hot records go back to idle. The few fixed-size records stay until unload.
pub(crate) fn release() {
    let Some(live) = LIVE.get() else { return };
    let mut snap = live.snapshot.lock().unwrap_or_else(|e| e.into_inner());
    live.attached.store(false, Ordering::Release);
    if let Some(g) = &live.generation {
        g.detach();
    }
    for slot in live.hot.iter() {
        if slot.load() != Hot::default() {
            slot.store(Hot::default());
        }
    }
    for word in live.lost.iter() {
        word.store(0, Ordering::Release);
    }
    *snap = Arc::new(Snapshot::new(&NodeState::default(), 0));
    live.loaded.store(false, Ordering::Release);
    live.warned.store(false, Ordering::Relaxed);
}

/// The first `nvmlInit` after the last shutdown (the caller holds the load lock): maps the
/// state file again; the first getter re-reads it. When the file can no longer be mapped the
/// GPUs read idle, with one line saying why.
pub(crate) fn reattach() {
    let Some(live) = LIVE.get() else { return };
    let _snap = live.snapshot.lock().unwrap_or_else(|e| e.into_inner());
    if let (Some(g), Some(path)) = (&live.generation, &live.path) {
        if let Err(e) = g.reattach(path) {
            eprintln!("fakegpu: live state disabled: {e}");
            // The zero page stays: mark it read so that the getters keep their fast path.
            live.seen.store(g.load(), Ordering::Release);
            live.loaded.store(true, Ordering::Release);
        }
    }
    live.attached.store(true, Ordering::Release);
}

pub(crate) fn live() -> Option<&'static Live> {
    LIVE.get()
}

impl Live {
    /// Brings the hot records and the snapshot up to the current generation.
    #[inline]
    fn fresh(&self) -> Option<()> {
        let gen = self.generation.as_ref()?.load();
        if gen != self.seen.load(Ordering::Acquire) || !self.loaded.load(Ordering::Acquire) {
            self.refresh(gen);
        }
        Some(())
    }

    #[cold]
    fn refresh(&self, gen: u32) {
        let Ok(mut snap) = self.snapshot.lock() else { return };
        if self.loaded.load(Ordering::Acquire) && self.seen.load(Ordering::Acquire) == gen {
            return; // another thread did it
        }
        if !self.attached.load(Ordering::Acquire) {
            return; // released by the last shutdown, which this getter raced
        }
        let Some(path) = &self.path else { return };
        match state_file::read_checked(path, &self.spec) {
            Ok(state) => {
                let next = Snapshot::new(&state, self.gpu_count);
                for (i, (slot, g)) in self.hot.iter().zip(&next.gpus).enumerate() {
                    let hot = Hot::of(g, &self.profile);
                    if slot.load() != hot {
                        slot.store(hot);
                    }
                    let bit = 1u64 << (i % 64);
                    if g.faults.lost {
                        self.lost[i / 64].fetch_or(bit, Ordering::Release);
                    } else {
                        self.lost[i / 64].fetch_and(!bit, Ordering::Release);
                    }
                }
                *snap = Arc::new(next);
                self.warned.store(false, Ordering::Relaxed);
            }
            Err(e) => {
                if !self.warned.swap(true, Ordering::Relaxed) {
                    eprintln!("fakegpu: {e}; keeping the last good state");
                }
            }
        }
        self.seen.store(gen, Ordering::Release);
        self.loaded.store(true, Ordering::Release);
    }
}

/// The hot record of GPU `index`; `None` without a live state or when the GPU is idle and
/// healthy, so that callers keep their static fast path.
#[inline]
pub(crate) fn hot(index: u32) -> Option<Hot> {
    let live = LIVE.get()?;
    live.fresh()?;
    let hot = live.hot.get(index as usize)?.load();
    hot.active.then_some(hot)
}

/// Readings of GPU `index` at `now`, `None` when it is idle and healthy (static readings apply).
#[inline]
pub(crate) fn readings(index: u32, profile: &Profile, now: Now) -> Option<Readings> {
    let live = LIVE.get()?;
    live.fresh()?;
    let slot = live.hot.get(index as usize)?;
    let (hot, seq) = slot.load_seq();
    if !hot.active {
        return None;
    }
    let Some(mut r) = hot.base else {
        return Some(fakegpu_model::dynamics::readings(profile, &hot.gpu_state(), now));
    };
    let key = (u64::from(seq & 0xFFFF) << 48) | (now.unix_ms & 0xFFFF_FFFF);
    let cached = slot.temp_cache.load(Ordering::Relaxed);
    if cached & !(0xFFFF << 32) == key {
        r.gpu_temp_c = ((cached >> 32) & 0xFFFF) as u32;
    } else {
        r.gpu_temp_c = fakegpu_model::dynamics::approach(hot.temperature_c, r.gpu_temp_c, now);
        slot.temp_cache.store(key | (u64::from(r.gpu_temp_c.min(0xFFFF)) << 32), Ordering::Relaxed);
    }
    Some(r)
}

/// Removes registered processes of GPU `index` that exited without unregistering (kill -9)
/// from the state file, so that the process lists and memory use no longer count them. Costs
/// one atomic load unless such a process is on the GPU (then a `kill(pid, 0)` per process).
pub(crate) fn sweep_exited(index: u32) {
    let Some(live) = LIVE.get() else { return };
    if !hot(index).is_some_and(|h| h.registered) {
        return;
    }
    let Some(path) = &live.path else { return };
    let gone = snapshot()
        .gpus
        .get(index as usize)
        .is_some_and(|g| g.processes.iter().any(|p| p.pid_namespace.is_some_and(|ns| state_file::process_exited(p.pid, ns))));
    if gone {
        if let Err(e) = state_file::sweep_exited(path, &live.spec) {
            eprintln!("fakegpu: could not sweep exited processes: {e}");
        }
        live.fresh();
    }
}

/// Whether GPU `index` fell off the bus.
#[inline]
pub(crate) fn lost(index: u32) -> bool {
    let Some(live) = LIVE.get() else { return false };
    if live.fresh().is_none() {
        return false;
    }
    live.lost.get(index as usize / 64).is_some_and(|w| w.load(Ordering::Acquire) & (1u64 << (index % 64)) != 0)
}

/// Holds the snapshot lock (around `fork()`, so no child inherits it mid-refresh); a dummy
/// guard when there is no live state yet.
pub(crate) fn lock_snapshot() -> Box<dyn std::any::Any> {
    match LIVE.get() {
        Some(live) => Box::new(live.snapshot.lock().unwrap_or_else(|e| e.into_inner())),
        None => Box::new(()),
    }
}

/// The current full snapshot (the idle one without a state file).
pub(crate) fn snapshot() -> Arc<Snapshot> {
    match LIVE.get() {
        Some(live) => {
            live.fresh();
            live.snapshot.lock().map(|s| s.clone()).unwrap_or_else(|e| e.into_inner().clone())
        }
        None => Arc::new(Snapshot::new(&NodeState::default(), 0)),
    }
}

/// Runs `f` on the current snapshot.
pub(crate) fn with<R>(f: impl FnOnce(&Snapshot) -> R) -> R {
    f(&snapshot())
}

/// Runs `f` on GPU `index`'s full state, or returns `None` when it is idle and healthy.
pub(crate) fn with_gpu<R>(index: u32, f: impl FnOnce(&GpuState) -> R) -> Option<R> {
    hot(index)?;
    let snap = snapshot();
    snap.gpus.get(index as usize).map(f)
}

/// The time for readings: wall clock from the coarse clock (cheap), uptime only when asked.
#[inline]
pub(crate) fn now_coarse() -> Now {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid out-parameter.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) };
    Now { unix_ms: ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000, boot_ms: 0 }
}
