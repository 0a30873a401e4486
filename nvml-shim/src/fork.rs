//! Fork safety of the library's process-wide locks.
//!
//! Only the forking thread survives `fork()`. Had another thread held one of our global locks
//! at that moment (loading the node in the first `nvmlInit`, re-reading the live state, adding
//! an event set), the child would inherit it locked forever and hang on its first call into
//! the library. POSIX's remedy: `pthread_atfork` handlers that take every such lock before the
//! fork and release it on both sides, so the child starts from a consistent, unlocked state.
//!
//! The handlers are registered when the library is loaded (an ELF constructor) and, for the
//! rlib that tests link, on the first `nvmlInit`.

use std::any::Any;
use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};

thread_local! {
    /// The guards `prepare` took; dropped by `release` in the parent and in the child (the
    /// child's only thread is the forking thread's copy, so the same thread-local holds them).
    static HELD: RefCell<Vec<Box<dyn Any>>> = const { RefCell::new(Vec::new()) };
}

/// Takes the global locks, always in this order (no code path holds one of them while taking
/// an earlier one).
extern "C" fn prepare() {
    let guards: Vec<Box<dyn Any>> =
        vec![Box::new(crate::runtime::lock_load()), crate::live::lock_snapshot(), crate::exports::events::lock_registry()];
    HELD.with(|held| held.borrow_mut().extend(guards));
}

extern "C" fn release() {
    let guards = HELD.with(|held| std::mem::take(&mut *held.borrow_mut()));
    drop(guards);
}

/// Registers the handlers once per process.
pub(crate) fn register() {
    static REGISTERED: AtomicBool = AtomicBool::new(false);
    if !REGISTERED.swap(true, Ordering::AcqRel) {
        // SAFETY: the handlers are plain functions that live as long as the process (the
        // library is never unloaded while registered: its constructor runs at load time).
        unsafe { libc::pthread_atfork(Some(prepare), Some(release), Some(release)) };
    }
}

extern "C" fn register_at_load() {
    register();
}

/// Runs `register_at_load` when the shared library is loaded, before any thread can be inside it.
#[used]
#[link_section = ".init_array"]
static REGISTER_AT_LOAD: extern "C" fn() = register_at_load;
