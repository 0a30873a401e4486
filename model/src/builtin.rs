//! The profiles shipped in `profiles/`, embedded at build time.

use std::sync::OnceLock;

use crate::error::ProfileError;
use crate::profile::Profile;

include!(concat!(env!("OUT_DIR"), "/builtin_profiles.rs"));

/// Every built-in profile, parsed and validated once per process.
pub fn builtin_profiles() -> Result<&'static [Profile], ProfileError> {
    static PARSED: OnceLock<Result<Vec<Profile>, ProfileError>> = OnceLock::new();
    PARSED
        .get_or_init(|| {
            BUILTIN_PROFILE_FILES.iter().map(|(file, text)| Profile::from_json(text, &format!("built-in profiles/{file}"))).collect()
        })
        .as_ref()
        .map(|v| v.as_slice())
        .map_err(Clone::clone)
}

/// Looks up a built-in profile by name or alias, case-insensitively.
pub fn find_builtin(key: &str) -> Result<&'static Profile, ProfileError> {
    let profiles = builtin_profiles()?;
    profiles.iter().find(|p| p.matches(key)).ok_or_else(|| ProfileError::Unknown {
        name: key.to_string(),
        known: profiles.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", "),
    })
}
