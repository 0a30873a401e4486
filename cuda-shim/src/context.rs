//! Contexts: each device's primary context (retained and released by count), contexts made
//! with `cuCtxCreate`, and each thread's stack of current contexts.
//!
//! A context handle is the address of a [`Context`]. Handles are checked against the live set
//! before use, so a destroyed or foreign handle is CUDA_ERROR_INVALID_CONTEXT, never a
//! dereference. Created contexts are never freed (a destroyed one stays marked dead), so that
//! a thread holding a stale handle cannot make the library read freed memory.
//!
//! While a process holds any context on a device, it is listed in the node's live state as a
//! compute process of that GPU (see `memory`), as NVIDIA's driver lists it.

use std::cell::RefCell;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

use crate::ffi::CuResult;
use crate::runtime::runtime;
use crate::types::*;

pub(crate) struct Context {
    pub ordinal: usize,
    pub flags: AtomicU32,
    pub primary: bool,
    /// Primary: retain count. Created: 1 while alive.
    pub refs: AtomicU32,
    pub dead: AtomicBool,
}

struct Registry {
    /// Addresses of live created contexts.
    created: HashSet<usize>,
    /// Live contexts per device ordinal (primary active counts as one).
    per_device: Vec<u32>,
}

static REGISTRY: Mutex<Option<Registry>> = Mutex::new(None);
static PRIMARY: OnceLock<Box<[Context]>> = OnceLock::new();

thread_local! {
    static STACK: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

/// Holds the registry lock (around `fork()`).
pub(crate) fn lock_registry() -> Box<dyn std::any::Any> {
    Box::new(REGISTRY.lock().unwrap_or_else(|e| e.into_inner()))
}

fn with_registry<R>(f: impl FnOnce(&mut Registry) -> R) -> CuResult<R> {
    let count = runtime()?.devices.len();
    let mut guard = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    let reg = guard.get_or_insert_with(|| Registry { created: HashSet::new(), per_device: vec![0; count] });
    Ok(f(reg))
}

fn primaries() -> CuResult<&'static [Context]> {
    let rt = runtime()?;
    Ok(PRIMARY.get_or_init(|| {
        (0..rt.devices.len())
            .map(|ordinal| Context {
                ordinal,
                flags: AtomicU32::new(0),
                primary: true,
                refs: AtomicU32::new(0),
                dead: AtomicBool::new(false),
            })
            .collect()
    }))
}

/// The primary context of device `ordinal`.
pub(crate) fn primary(ordinal: usize) -> CuResult<&'static Context> {
    primaries()?.get(ordinal).ok_or(CUDA_ERROR_INVALID_DEVICE)
}

/// A caller's context handle as a live context.
pub(crate) fn context(handle: CUcontext) -> CuResult<&'static Context> {
    let addr = handle as usize;
    if addr == 0 {
        return Err(CUDA_ERROR_INVALID_CONTEXT);
    }
    let table = primaries()?;
    let base = table.as_ptr() as usize;
    let size = std::mem::size_of::<Context>();
    let offset = addr.wrapping_sub(base);
    if offset.is_multiple_of(size) && offset / size < table.len() {
        let ctx = &table[offset / size];
        return if ctx.refs.load(Ordering::Acquire) > 0 { Ok(ctx) } else { Err(CUDA_ERROR_CONTEXT_IS_DESTROYED) };
    }
    if with_registry(|r| r.created.contains(&addr))? {
        // SAFETY: the address is in the live set, so it is a leaked, never-freed Context.
        Ok(unsafe { &*(addr as *const Context) })
    } else {
        Err(CUDA_ERROR_INVALID_CONTEXT)
    }
}

pub(crate) fn handle(ctx: &Context) -> CUcontext {
    (ctx as *const Context).cast_mut().cast()
}

/// A context became live on `ordinal`: the first one registers the process on the GPU.
fn opened(ordinal: usize) -> CuResult {
    let first = with_registry(|r| {
        r.per_device[ordinal] += 1;
        r.per_device[ordinal] == 1
    })?;
    if first {
        if let Err(code) = crate::memory::register(ordinal) {
            with_registry(|r| r.per_device[ordinal] -= 1)?;
            return Err(code);
        }
    }
    Ok(())
}

/// A context on `ordinal` ended: the last one frees the device's allocations and
/// unregisters the process from the GPU.
fn closed(ordinal: usize) -> CuResult {
    let last = with_registry(|r| {
        r.per_device[ordinal] = r.per_device[ordinal].saturating_sub(1);
        r.per_device[ordinal] == 0
    })?;
    if last {
        crate::memory::release_device(ordinal);
    }
    Ok(())
}

/// `cuDevicePrimaryCtxRetain`.
pub(crate) fn retain_primary(ordinal: usize) -> CuResult<&'static Context> {
    let ctx = primary(ordinal)?;
    if ctx.refs.fetch_add(1, Ordering::AcqRel) == 0 {
        if let Err(code) = opened(ordinal) {
            ctx.refs.fetch_sub(1, Ordering::AcqRel);
            return Err(code);
        }
    }
    Ok(ctx)
}

/// `cuDevicePrimaryCtxRelease`: INVALID_CONTEXT when it was not retained.
pub(crate) fn release_primary(ordinal: usize) -> CuResult {
    let ctx = primary(ordinal)?;
    let before =
        ctx.refs.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1)).map_err(|_| CUDA_ERROR_INVALID_CONTEXT)?;
    if before == 1 {
        forget_everywhere(handle(ctx) as usize);
        closed(ordinal)?;
    }
    Ok(())
}

/// `cuDevicePrimaryCtxReset`: drops every reference at once.
pub(crate) fn reset_primary(ordinal: usize) -> CuResult {
    let ctx = primary(ordinal)?;
    if ctx.refs.swap(0, Ordering::AcqRel) > 0 {
        forget_everywhere(handle(ctx) as usize);
        closed(ordinal)?;
    }
    Ok(())
}

/// `cuCtxCreate`: a new context, current on this thread.
pub(crate) fn create(ordinal: usize, flags: u32) -> CuResult<&'static Context> {
    crate::runtime::device(ordinal as CUdevice)?;
    opened(ordinal)?;
    let ctx: &'static Context = Box::leak(Box::new(Context {
        ordinal,
        flags: AtomicU32::new(flags),
        primary: false,
        refs: AtomicU32::new(1),
        dead: AtomicBool::new(false),
    }));
    with_registry(|r| r.created.insert(handle(ctx) as usize))?;
    push(ctx);
    Ok(ctx)
}

/// `cuCtxDestroy`.
pub(crate) fn destroy(handle_: CUcontext) -> CuResult {
    let ctx = context(handle_)?;
    if ctx.primary {
        // The driver refuses to destroy a primary context this way.
        return Err(CUDA_ERROR_INVALID_CONTEXT);
    }
    if !with_registry(|r| r.created.remove(&(handle_ as usize)))? {
        return Err(CUDA_ERROR_INVALID_CONTEXT);
    }
    ctx.dead.store(true, Ordering::Release);
    ctx.refs.store(0, Ordering::Release);
    forget_everywhere(handle_ as usize);
    closed(ctx.ordinal)
}

/// Removes a dead context from this thread's stack (other threads find it dead on use).
fn forget_everywhere(addr: usize) {
    STACK.with(|s| s.borrow_mut().retain(|c| *c != addr));
}

/// This thread's current context; INVALID_CONTEXT when there is none or it died.
pub(crate) fn current() -> CuResult<&'static Context> {
    let top = STACK.with(|s| s.borrow().last().copied()).ok_or(CUDA_ERROR_INVALID_CONTEXT)?;
    context(top as CUcontext).map_err(|_| CUDA_ERROR_INVALID_CONTEXT)
}

/// This thread's current context handle, NULL when none (`cuCtxGetCurrent`).
pub(crate) fn current_handle() -> CUcontext {
    STACK.with(|s| s.borrow().last().copied()).unwrap_or(0) as CUcontext
}

/// `cuCtxSetCurrent`: replaces the top of the stack; NULL pops it.
pub(crate) fn set_current(handle_: CUcontext) -> CuResult {
    if handle_.is_null() {
        STACK.with(|s| s.borrow_mut().pop());
        return Ok(());
    }
    context(handle_)?;
    STACK.with(|s| {
        let mut s = s.borrow_mut();
        s.pop();
        s.push(handle_ as usize);
    });
    Ok(())
}

pub(crate) fn push(ctx: &Context) {
    STACK.with(|s| s.borrow_mut().push(handle(ctx) as usize));
}

/// `cuCtxPopCurrent`: INVALID_CONTEXT when the stack is empty.
pub(crate) fn pop() -> CuResult<CUcontext> {
    STACK.with(|s| s.borrow_mut().pop()).map(|a| a as CUcontext).ok_or(CUDA_ERROR_INVALID_CONTEXT)
}
