//! Fork: CUDA's rule and the safety of the library's locks.
//!
//! A child forked after the parent initialized CUDA cannot use it: every call in the child,
//! `cuInit` included, answers CUDA_ERROR_NOT_INITIALIZED (the CUDA runtime reports it as
//! "initialization error"), as with NVIDIA's driver. A child of a parent that never called
//! `cuInit` initializes normally. The `pthread_atfork` handlers also take the library's
//! locks around `fork()`, so that no child inherits one locked by another thread.

use std::any::Any;
use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set in a child forked after `cuInit`.
static FORKED_AFTER_INIT: AtomicBool = AtomicBool::new(false);

thread_local! {
    static HELD: RefCell<Vec<Box<dyn Any>>> = const { RefCell::new(Vec::new()) };
}

/// Whether this process is a child forked after `cuInit` (one relaxed load).
#[inline]
pub(crate) fn forked_after_init() -> bool {
    FORKED_AFTER_INIT.load(Ordering::Relaxed)
}

extern "C" fn prepare() {
    let guards: Vec<Box<dyn Any>> = vec![
        Box::new(crate::runtime::lock_load()),
        crate::context::lock_registry(),
        crate::memory::lock_registry(),
        crate::exports::stream::lock_registry(),
    ];
    HELD.with(|held| held.borrow_mut().extend(guards));
}

extern "C" fn release_parent() {
    let guards = HELD.with(|held| std::mem::take(&mut *held.borrow_mut()));
    drop(guards);
}

extern "C" fn release_child() {
    if crate::runtime::initialized() {
        FORKED_AFTER_INIT.store(true, Ordering::Relaxed);
    }
    release_parent();
}

/// Registers the handlers once per process.
pub(crate) fn register() {
    static REGISTERED: AtomicBool = AtomicBool::new(false);
    if !REGISTERED.swap(true, Ordering::AcqRel) {
        // SAFETY: the handlers are plain functions that live as long as the process.
        unsafe { libc::pthread_atfork(Some(prepare), Some(release_parent), Some(release_child)) };
    }
}

extern "C" fn register_at_load() {
    register();
}

/// Runs `register_at_load` when the shared library is loaded, before any thread can be inside it.
#[used]
#[link_section = ".init_array"]
static REGISTER_AT_LOAD: extern "C" fn() = register_at_load;
