//! Errors of the model: each names the input (file or variable), the key and the reason.

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProfileError {
    #[error("{origin}: cannot read profile: {reason}")]
    Read { origin: String, reason: String },
    #[error("{origin}: invalid profile JSON: {reason}")]
    Parse { origin: String, reason: String },
    #[error("{origin}: key `{key}`: {reason}")]
    Invalid { origin: String, key: String, reason: String },
    #[error("unknown profile `{name}` (built-in profiles: {known})")]
    Unknown { name: String, known: String },
}

/// Why a node's configuration could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    #[error(transparent)]
    Profile(#[from] ProfileError),
    #[error("{origin}: cannot read node config: {reason}")]
    Read { origin: String, reason: String },
    #[error("{origin}: {}{reason}", key_prefix(.key))]
    Invalid { origin: String, key: String, reason: String },
}

fn key_prefix(key: &str) -> String {
    if key.is_empty() {
        String::new()
    } else {
        format!("key `{key}`: ")
    }
}

impl ConfigError {
    pub(crate) fn invalid(origin: &str, key: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid { origin: origin.to_string(), key: key.to_string(), reason: reason.into() }
    }
}
