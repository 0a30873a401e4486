//! The profiles shipped in `profiles/`, embedded at build time.

use std::sync::atomic::{AtomicPtr, Ordering};

use crate::error::ProfileError;
use crate::profile::Profile;

include!(concat!(env!("OUT_DIR"), "/builtin_profiles.rs"));

type Parsed = Result<Vec<Profile>, ProfileError>;

/// The parsed profiles: null, or a leaked box that only [`release_builtin_profiles`] frees.
static PARSED: AtomicPtr<Parsed> = AtomicPtr::new(std::ptr::null_mut());

/// Every built-in profile, parsed and validated once per process.
pub fn builtin_profiles() -> Result<&'static [Profile], ProfileError> {
    let mut ptr = PARSED.load(Ordering::Acquire);
    if ptr.is_null() {
        let parsed: Parsed =
            BUILTIN_PROFILE_FILES.iter().map(|(file, text)| Profile::from_json(text, &format!("built-in profiles/{file}"))).collect();
        let fresh = Box::into_raw(Box::new(parsed));
        ptr = match PARSED.compare_exchange(std::ptr::null_mut(), fresh, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => fresh,
            Err(first) => {
                // SAFETY: `fresh` was never published.
                drop(unsafe { Box::from_raw(fresh) });
                first
            }
        };
    }
    // SAFETY: published pointers stay valid until `release_builtin_profiles`, whose caller
    // guarantees that no reference is used afterwards.
    let parsed = unsafe { &*ptr };
    parsed.as_ref().map(|v| v.as_slice()).map_err(Clone::clone)
}

/// Frees the parsed profiles (the fake NVML calls it when it is unloaded, so that loading
/// and unloading it repeatedly does not leak). A later call parses them again.
///
/// # Safety
/// No reference returned by [`builtin_profiles`] or [`find_builtin`] may be used afterwards.
pub unsafe fn release_builtin_profiles() {
    let ptr = PARSED.swap(std::ptr::null_mut(), Ordering::AcqRel);
    if !ptr.is_null() {
        drop(Box::from_raw(ptr));
    }
}

/// Looks up a built-in profile by name or alias, case-insensitively.
pub fn find_builtin(key: &str) -> Result<&'static Profile, ProfileError> {
    let profiles = builtin_profiles()?;
    profiles.iter().find(|p| p.matches(key)).ok_or_else(|| ProfileError::Unknown {
        name: key.to_string(),
        known: profiles.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", "),
    })
}
