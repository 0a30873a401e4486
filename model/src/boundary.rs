//! What the two fake driver libraries (NVML, CUDA) share at their C boundary: keeping Rust's
//! panic text off the host's stderr. A panic inside an export is a bug of ours, not the host's
//! business; each library's boundary catches it and prints one line of its own, and the hook
//! installed here keeps Rust's message and backtrace (`RUST_BACKTRACE=1`) from printing too.
//!
//! Each cdylib links its own copy of the standard library, so the hook is private to the
//! library that installs it; only a program that links a library's rlib (its tests) shares it.

use std::any::Any;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Source directories of the libraries' own crates, as panic locations name them.
const OURS: [&str; 4] = ["nvml-shim/src/", "cuda-shim/src/", "model/src/", "nvml-abi/src/"];

/// Whether a panic at `file` was raised by a library: its own crates' sources, or the standard
/// library and dependencies it was compiled with. `#[track_caller]` makes `unwrap`, indexing
/// and overflow panics report the calling line, so a host program's own panics (possible only
/// when it links the rlib and so shares the hook) keep their location and their message.
pub fn raised_by_library(file: &str) -> bool {
    OURS.iter().any(|dir| file.starts_with(dir) || file.contains(&format!("/{dir}")))
        || file.starts_with("/rustc/")
        || file.contains("/registry/src/")
        || file.contains("/git/checkouts/")
}

static INSTALLED: AtomicBool = AtomicBool::new(false);
static INSTALLING: Mutex<()> = Mutex::new(());

/// Installs the hook that is silent for the libraries' panics (the boundary reports them) and
/// defers to the previous hook for anything else. Checking the location rather than marking
/// each call keeps the exports free of thread-local accesses. After the first call this is one
/// relaxed load.
#[inline]
pub fn install_quiet_panic_hook() {
    if !INSTALLED.load(Ordering::Acquire) {
        install_slow();
    }
}

#[cold]
fn install_slow() {
    let _one = INSTALLING.lock().unwrap_or_else(|e| e.into_inner());
    if INSTALLED.load(Ordering::Acquire) {
        return;
    }
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !info.location().is_some_and(|l| raised_by_library(l.file())) {
            previous(info);
        }
    }));
    INSTALLED.store(true, Ordering::Release);
}

/// Removes the hook (the library is being unloaded: the hook's code is about to go away, and
/// the box holding it would otherwise leak). A later [`install_quiet_panic_hook`] installs it again.
pub fn remove_panic_hook() {
    let _one = INSTALLING.lock().unwrap_or_else(|e| e.into_inner());
    if INSTALLED.swap(false, Ordering::AcqRel) {
        drop(std::panic::take_hook());
    }
}

/// A caught panic's message on one line, for the boundary's own report.
pub fn panic_text(payload: &(dyn Any + Send)) -> String {
    let what = payload.downcast_ref::<&str>().copied().or_else(|| payload.downcast_ref::<String>().map(String::as_str));
    what.unwrap_or("unknown cause").replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_sources_are_ours_and_a_hosts_are_not() {
        assert!(raised_by_library("nvml-shim/src/exports/mig.rs"));
        assert!(raised_by_library("/build/cuda-shim/src/memory.rs"));
        assert!(raised_by_library("model/src/state.rs"));
        assert!(raised_by_library("/rustc/abc/library/core/src/slice/index.rs"));
        assert!(!raised_by_library("src/main.rs"));
        assert!(!raised_by_library("/home/u/app/src/lib.rs"));
        assert_eq!(panic_text(&"a\nb"), "a b");
        assert_eq!(panic_text(&String::from("x")), "x");
        assert_eq!(panic_text(&42u8), "unknown cause");
    }
}
