//! Streams and events. Nothing runs on a simulated GPU, so every stream is always idle:
//! synchronizing returns at once, and an event's time is the host clock when it was recorded.

use std::collections::HashSet;
use std::ffi::{c_float, c_uint};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::context;
use crate::ffi::{guard, out, CuResult};
use crate::types::*;

/// `CU_EVENT_DISABLE_TIMING`.
const EVENT_DISABLE_TIMING: c_uint = 0x2;
/// The special stream handles: NULL (the default), `CU_STREAM_LEGACY`, `CU_STREAM_PER_THREAD`.
const SPECIAL_STREAMS: [usize; 3] = [0, 1, 2];

struct Event {
    flags: c_uint,
    /// CLOCK_MONOTONIC nanoseconds of the last record; 0 = never recorded.
    recorded_ns: AtomicU64,
}

#[derive(Default)]
// Boxed so that each handle's address stays put while the vectors grow.
#[allow(clippy::vec_box)]
struct Handles {
    /// Addresses of live streams and events.
    live: HashSet<usize>,
    /// Every stream and event ever made, destroyed ones included: a destroyed handle stays
    /// harmless (its address is never reused while the library is loaded). Freed at unload.
    streams: Vec<Box<u8>>,
    events: Vec<Box<Event>>,
}

static LIVE: Mutex<Option<Handles>> = Mutex::new(None);

/// Holds the handle registry lock (around `fork()`).
pub(crate) fn lock_registry() -> Box<dyn std::any::Any> {
    Box::new(LIVE.lock().unwrap_or_else(|e| e.into_inner()))
}

fn handles<R>(f: impl FnOnce(&mut Handles) -> R) -> R {
    f(LIVE.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert_with(Handles::default))
}

fn live<R>(f: impl FnOnce(&mut HashSet<usize>) -> R) -> R {
    handles(|h| f(&mut h.live))
}

/// Frees every stream and event (the library is being unloaded).
pub(crate) fn free_all() {
    drop(LIVE.lock().unwrap_or_else(|e| e.into_inner()).take());
}

fn ready() -> CuResult {
    crate::runtime::runtime()?;
    context::current().map(|_| ())
}

fn stream(s: CUstream) -> CuResult {
    if SPECIAL_STREAMS.contains(&(s as usize)) || live(|l| l.contains(&(s as usize))) {
        Ok(())
    } else {
        Err(CUDA_ERROR_INVALID_HANDLE)
    }
}

fn event(e: CUevent) -> CuResult<&'static Event> {
    if !e.is_null() && live(|l| l.contains(&(e as usize))) {
        // SAFETY: a live address is a boxed Event that only unload frees.
        Ok(unsafe { &*(e as *const Event) })
    } else {
        Err(CUDA_ERROR_INVALID_HANDLE)
    }
}

fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid out-parameter.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64).max(1)
}

#[no_mangle]
pub unsafe extern "C" fn cuStreamCreate(ps: *mut CUstream, flags: c_uint) -> CUresult {
    guard("cuStreamCreate", || {
        let out = out(ps)?;
        ready()?;
        if flags & !0x1 != 0 {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        // A distinct address per stream; the byte itself is never read.
        let s = Box::new(0u8);
        let addr = &*s as *const u8 as usize;
        handles(|h| {
            h.live.insert(addr);
            h.streams.push(s);
        });
        *out = addr as CUstream;
        Ok(())
    })
}

unsafe fn stream_destroy(name: &'static str, s: CUstream) -> CUresult {
    guard(name, || {
        ready()?;
        if live(|l| l.remove(&(s as usize))) {
            Ok(())
        } else {
            Err(CUDA_ERROR_INVALID_HANDLE)
        }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuStreamDestroy(s: CUstream) -> CUresult {
    stream_destroy("cuStreamDestroy", s)
}

#[no_mangle]
pub unsafe extern "C" fn cuStreamDestroy_v2(s: CUstream) -> CUresult {
    stream_destroy("cuStreamDestroy_v2", s)
}

/// extern "C" fn cuStreamSynchronize, cuStreamSynchronize_ptsz, cuStreamQuery, cuStreamQuery_ptsz
macro_rules! stream_waits {
    ($($name:ident),*) => {$(
        #[no_mangle]
        pub unsafe extern "C" fn $name(s: CUstream) -> CUresult {
            guard(stringify!($name), || {
                ready()?;
                stream(s)
            })
        }
    )*};
}
stream_waits!(cuStreamSynchronize, cuStreamSynchronize_ptsz, cuStreamQuery, cuStreamQuery_ptsz);

#[no_mangle]
pub unsafe extern "C" fn cuEventCreate(pe: *mut CUevent, flags: c_uint) -> CUresult {
    guard("cuEventCreate", || {
        let out = out(pe)?;
        ready()?;
        if flags & !0x7 != 0 {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let e = Box::new(Event { flags, recorded_ns: AtomicU64::new(0) });
        let addr = &*e as *const Event as usize;
        handles(|h| {
            h.live.insert(addr);
            h.events.push(e);
        });
        *out = addr as CUevent;
        Ok(())
    })
}

/// extern "C" fn cuEventRecord, cuEventRecord_ptsz
macro_rules! event_records {
    ($($name:ident),*) => {$(
        #[no_mangle]
        pub unsafe extern "C" fn $name(e: CUevent, s: CUstream) -> CUresult {
            guard(stringify!($name), || {
                ready()?;
                let e = event(e)?;
                stream(s)?;
                e.recorded_ns.store(now_ns(), Ordering::Release);
                Ok(())
            })
        }
    )*};
}
event_records!(cuEventRecord, cuEventRecord_ptsz);

#[no_mangle]
pub unsafe extern "C" fn cuEventSynchronize(e: CUevent) -> CUresult {
    guard("cuEventSynchronize", || {
        ready()?;
        event(e).map(|_| ())
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuEventQuery(e: CUevent) -> CUresult {
    guard("cuEventQuery", || {
        ready()?;
        event(e).map(|_| ())
    })
}

/// Milliseconds between two recorded events; INVALID_HANDLE when either was created without
/// timing or never recorded (CUDA's NOT_READY case cannot arise: nothing is pending).
#[no_mangle]
pub unsafe extern "C" fn cuEventElapsedTime(ms: *mut c_float, start: CUevent, end: CUevent) -> CUresult {
    guard("cuEventElapsedTime", || {
        let out = out(ms)?;
        ready()?;
        let (a, b) = (event(start)?, event(end)?);
        if (a.flags | b.flags) & EVENT_DISABLE_TIMING != 0 {
            return Err(CUDA_ERROR_INVALID_HANDLE);
        }
        let (ta, tb) = (a.recorded_ns.load(Ordering::Acquire), b.recorded_ns.load(Ordering::Acquire));
        if ta == 0 || tb == 0 {
            return Err(CUDA_ERROR_INVALID_HANDLE);
        }
        *out = ((tb as f64 - ta as f64) / 1e6) as c_float;
        Ok(())
    })
}

unsafe fn event_destroy(name: &'static str, e: CUevent) -> CUresult {
    guard(name, || {
        ready()?;
        if !e.is_null() && live(|l| l.remove(&(e as usize))) {
            Ok(())
        } else {
            Err(CUDA_ERROR_INVALID_HANDLE)
        }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuEventDestroy(e: CUevent) -> CUresult {
    event_destroy("cuEventDestroy", e)
}

#[no_mangle]
pub unsafe extern "C" fn cuEventDestroy_v2(e: CUevent) -> CUresult {
    event_destroy("cuEventDestroy_v2", e)
}
