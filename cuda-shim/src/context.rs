//! Contexts: each device's primary context (retained and released by count), contexts made
//! with `cuCtxCreate`, and each thread's stack of current contexts.
//!
//! A context handle is the address of a [`Context`]. Handles are checked against the live set
//! before use, so a destroyed or foreign handle is CUDA_ERROR_INVALID_CONTEXT, never a
//! dereference. Created contexts are freed only when the library is unloaded (a destroyed one
//! stays marked dead until then), so that a thread holding a stale handle cannot make the
//! library read freed memory. The primary contexts live in the runtime's table.
//!
//! While a process holds any context on a device, it is listed in the node's live state as a
//! compute process of that GPU (see `memory`), as NVIDIA's driver lists it.

use std::cell::Cell;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Mutex;

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
    /// Every context `cuCtxCreate` made, destroyed ones included; freed at unload. Boxed so
    /// that each handle's address stays put while the vector grows.
    #[allow(clippy::vec_box)]
    owned: Vec<Box<Context>>,
}

static REGISTRY: Mutex<Option<Registry>> = Mutex::new(None);

/// Frees every created context (the library is being unloaded).
pub(crate) fn free_all() {
    drop(REGISTRY.lock().unwrap_or_else(|e| e.into_inner()).take());
}

/// Whether any context (primary retained or created) is live on any device.
pub(crate) fn any_live() -> bool {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner()).as_ref().is_some_and(|r| r.per_device.iter().any(|n| *n > 0))
}

/// The primary contexts of `count` devices (held by the runtime).
pub(crate) fn primary_table(count: usize) -> Box<[Context]> {
    (0..count)
        .map(|ordinal| Context { ordinal, flags: AtomicU32::new(0), primary: true, refs: AtomicU32::new(0), dead: AtomicBool::new(false) })
        .collect()
}

thread_local! {
    /// A fixed array, not a `Vec`: a thread-local that needs dropping registers a destructor
    /// with the C library, which then never unloads the library at `dlclose` (and so never
    /// frees what it holds).
    static STACK: Stack = const { Stack { len: Cell::new(0), items: [const { Cell::new(0) }; STACK_DEPTH] } };
}

/// How deep one thread's context stack may grow (pushing deeper is OUT_OF_MEMORY).
pub(crate) const STACK_DEPTH: usize = 64;

/// One thread's stack of current contexts (addresses).
struct Stack {
    len: Cell<usize>,
    items: [Cell<usize>; STACK_DEPTH],
}

impl Stack {
    fn last(&self) -> Option<usize> {
        self.len.get().checked_sub(1).map(|i| self.items[i].get())
    }
    fn pop(&self) -> Option<usize> {
        let top = self.last()?;
        self.len.set(self.len.get() - 1);
        Some(top)
    }
    fn push(&self, addr: usize) -> CuResult {
        let n = self.len.get();
        let slot = self.items.get(n).ok_or(CUDA_ERROR_OUT_OF_MEMORY)?;
        slot.set(addr);
        self.len.set(n + 1);
        Ok(())
    }
    fn remove_all(&self, addr: usize) {
        let mut kept = 0;
        for i in 0..self.len.get() {
            let a = self.items[i].get();
            if a != addr {
                self.items[kept].set(a);
                kept += 1;
            }
        }
        self.len.set(kept);
    }
}

/// Holds the registry lock (around `fork()`).
pub(crate) fn lock_registry() -> Box<dyn std::any::Any> {
    Box::new(REGISTRY.lock().unwrap_or_else(|e| e.into_inner()))
}

fn with_registry<R>(f: impl FnOnce(&mut Registry) -> R) -> CuResult<R> {
    let count = runtime()?.devices.len();
    let mut guard = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    let reg = guard.get_or_insert_with(|| Registry { created: HashSet::new(), per_device: vec![0; count], owned: Vec::new() });
    Ok(f(reg))
}

fn primaries() -> CuResult<&'static [Context]> {
    Ok(&runtime()?.primaries)
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
        // SAFETY: the address is in the live set, so it is a boxed Context that only unload frees.
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
    if STACK.with(|s| s.len.get()) >= STACK_DEPTH {
        return Err(CUDA_ERROR_OUT_OF_MEMORY);
    }
    opened(ordinal)?;
    let boxed =
        Box::new(Context { ordinal, flags: AtomicU32::new(flags), primary: false, refs: AtomicU32::new(1), dead: AtomicBool::new(false) });
    // SAFETY: the box is owned by the registry, which only unload drops (no call is inside then).
    let ctx: &'static Context = unsafe { &*(&*boxed as *const Context) };
    with_registry(|r| {
        r.created.insert(handle(ctx) as usize);
        r.owned.push(boxed);
    })?;
    push(ctx)?;
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
    STACK.with(|s| s.remove_all(addr));
}

/// This thread's current context; INVALID_CONTEXT when there is none or it died.
pub(crate) fn current() -> CuResult<&'static Context> {
    let top = STACK.with(Stack::last).ok_or(CUDA_ERROR_INVALID_CONTEXT)?;
    context(top as CUcontext).map_err(|_| CUDA_ERROR_INVALID_CONTEXT)
}

/// This thread's current context handle, NULL when none (`cuCtxGetCurrent`).
pub(crate) fn current_handle() -> CUcontext {
    STACK.with(Stack::last).unwrap_or(0) as CUcontext
}

/// `cuCtxSetCurrent`: replaces the top of the stack; NULL pops it.
pub(crate) fn set_current(handle_: CUcontext) -> CuResult {
    if handle_.is_null() {
        STACK.with(Stack::pop);
        return Ok(());
    }
    context(handle_)?;
    STACK.with(|s| {
        s.pop();
        s.push(handle_ as usize)
    })
}

/// Makes `ctx` current on this thread; OUT_OF_MEMORY past [`STACK_DEPTH`].
pub(crate) fn push(ctx: &Context) -> CuResult {
    STACK.with(|s| s.push(handle(ctx) as usize))
}

/// `cuCtxPopCurrent`: INVALID_CONTEXT when the stack is empty.
pub(crate) fn pop() -> CuResult<CUcontext> {
    STACK.with(Stack::pop).map(|a| a as CUcontext).ok_or(CUDA_ERROR_INVALID_CONTEXT)
}
