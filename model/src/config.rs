//! Node configuration: which profile, how many GPUs, which node — from a config file
//! (written by the operator) and the `FAKEGPU_*` environment variables.
//!
//! Resolution never falls back silently: a value that is present but wrong is an
//! error naming the variable or file, the key and the reason.

use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::builtin::find_builtin;
use crate::error::ConfigError;
use crate::profile::Profile;
use crate::MAX_GPUS;

pub const ENV_PROFILE: &str = "FAKEGPU_PROFILE";
pub const ENV_GPUS: &str = "FAKEGPU_GPUS";
pub const ENV_NODE: &str = "FAKEGPU_NODE";
pub const ENV_CONFIG: &str = "FAKEGPU_CONFIG";

/// Profile used when neither the environment nor a config file names one.
pub const DEFAULT_PROFILE: &str = "h100";

/// The node config file (JSON). The operator writes one per node; users may write their own.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeConfigFile {
    /// Node name used for identities; defaults to the host name.
    pub node: Option<String>,
    /// A built-in profile name, a path to a profile JSON (relative to this file), or an inline profile.
    pub profile: Option<ProfileRef>,
    /// Number of GPUs, 1..=256; defaults to the profile's `default_gpu_count`.
    pub gpus: Option<u32>,
    /// Partial profile merged over the selected one (JSON merge patch); the result is validated again.
    pub overrides: Option<serde_json::Value>,
    /// Driver version (`nvmlSystemGetDriverVersion`); defaults to the profile's `driver_version`.
    pub driver_version: Option<String>,
    /// CUDA driver version as NVML encodes it (12020 = 12.2); defaults to the profile's
    /// `cuda_driver_version`.
    pub cuda_driver_version: Option<u32>,
    /// NUMA layout of the node's GPUs and CPUs (the pool's `numa` block); absent: the first
    /// half of the GPUs on NUMA node 0, the rest on node 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numa: Option<crate::numa::NumaLayout>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ProfileRef {
    Named(String),
    Inline(Box<Profile>),
}

/// A fully resolved node: what the fake NVML, nvidia-smi and the operator simulate.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSpec {
    pub node_name: String,
    pub profile: Profile,
    pub gpu_count: u32,
    pub driver_version: String,
    pub cuda_driver_version: u32,
    /// NUMA layout; checked against `gpu_count` when resolved. None: the two-halves default.
    pub numa: Option<crate::numa::NumaLayout>,
}

impl NodeSpec {
    /// Where the node's GPUs and CPUs sit. A layout that does not fit the GPU count (only a
    /// hand-built spec can have one; resolution refuses it) falls back to the default.
    pub fn numa_placement(&self) -> crate::numa::Placement {
        crate::numa::Placement::new(self.numa.as_ref(), self.gpu_count)
            .unwrap_or_else(|_| crate::numa::Placement::two_halves(self.gpu_count))
    }

    /// `nvmlSystemGetNVMLVersion`: the NVML major paired with the driver version.
    pub fn nvml_version(&self) -> String {
        format!("12.{}", self.driver_version)
    }

    /// A node of `gpus` GPUs of a built-in profile, with the profile's driver versions.
    pub fn builtin(profile: &str, gpus: Option<u32>, node: &str) -> Result<NodeSpec, ConfigError> {
        let profile = find_builtin(profile)?.clone();
        let gpu_count = gpus.unwrap_or(profile.default_gpu_count);
        check_gpu_count(gpu_count, "--gpus", "")?;
        Ok(NodeSpec {
            node_name: node.to_string(),
            gpu_count,
            driver_version: profile.driver_version.clone(),
            cuda_driver_version: profile.cuda_driver_version,
            profile,
            numa: None,
        })
    }
}

fn check_gpu_count(count: u32, origin: &str, key: &str) -> Result<(), ConfigError> {
    if (1..=MAX_GPUS).contains(&count) {
        Ok(())
    } else {
        Err(ConfigError::invalid(origin, key, format!("GPU count {count} is outside 1..={MAX_GPUS}")))
    }
}

/// Resolves the node from `env` (a variable lookup, so tests need not touch the process
/// environment) and `default_node` (the host name). Environment variables win over the file.
pub fn resolve(env: &dyn Fn(&str) -> Option<String>, default_node: &str) -> Result<NodeSpec, ConfigError> {
    let file = match env(ENV_CONFIG).filter(|p| !p.is_empty()) {
        Some(path) => Some((PathBuf::from(&path), read_config_file(Path::new(&path))?)),
        None => None,
    };
    match &file {
        Some((path, cfg)) => resolve_with(env, cfg, &path.display().to_string(), path.parent(), default_node),
        None => resolve_with(env, &NodeConfigFile::default(), "", None, default_node),
    }
}

/// Resolves a node config that is not in a file (the node config text a per-node topology
/// ConfigMap carries), exactly as [`resolve`] resolves it from a file with no `FAKEGPU_*`
/// variable set. `origin` names it in errors; a profile path in it is taken as given.
pub fn resolve_config(cfg: &NodeConfigFile, origin: &str, default_node: &str) -> Result<NodeSpec, ConfigError> {
    resolve_with(&|_| None, cfg, origin, None, default_node)
}

fn resolve_with(
    env: &dyn Fn(&str) -> Option<String>,
    file_cfg: &NodeConfigFile,
    file_origin: &str,
    base_dir: Option<&Path>,
    default_node: &str,
) -> Result<NodeSpec, ConfigError> {
    let file_origin = file_origin.to_string();

    let mut profile = match env(ENV_PROFILE).filter(|p| !p.is_empty()) {
        Some(key) => load_profile_ref(&key, None, ENV_PROFILE)?,
        None => match &file_cfg.profile {
            Some(ProfileRef::Named(key)) => load_profile_ref(key, base_dir, &file_origin)?,
            Some(ProfileRef::Inline(p)) => {
                p.validate(&format!("{file_origin} (inline profile)"))?;
                (**p).clone()
            }
            None => find_builtin(DEFAULT_PROFILE)?.clone(),
        },
    };
    if let Some(patch) = &file_cfg.overrides {
        profile = apply_overrides(&profile, patch, &file_origin)?;
    }

    let gpu_count = match env(ENV_GPUS) {
        Some(text) => {
            let count = parse_decimal(&text).ok_or_else(|| {
                ConfigError::invalid(
                    ENV_GPUS,
                    "",
                    format!("`{text}` is not a whole number in canonical decimal (digits only, no sign, space or leading zero)"),
                )
            })?;
            check_gpu_count(count, ENV_GPUS, "")?;
            count
        }
        None => match file_cfg.gpus {
            Some(count) => {
                check_gpu_count(count, &file_origin, "gpus")?;
                count
            }
            None => profile.default_gpu_count,
        },
    };

    let node_name = env(ENV_NODE)
        .filter(|n| !n.is_empty())
        .or(file_cfg.node.clone().filter(|n| !n.is_empty()))
        .unwrap_or_else(|| default_node.to_string());

    // The profile (after the overrides) states the driver; the file's keys override it.
    let driver_version = file_cfg.driver_version.clone().unwrap_or_else(|| profile.driver_version.clone());
    crate::driver::check_driver_version(&driver_version)
        .map_err(|e| ConfigError::invalid(&file_origin, "driver_version", e.to_string()))?;
    if node_name.contains('\0') || node_name.len() > 253 {
        let origin = if env(ENV_NODE).is_some_and(|n| !n.is_empty()) { ENV_NODE.to_string() } else { file_origin.clone() };
        let key = if origin == ENV_NODE { "" } else { "node" };
        return Err(ConfigError::invalid(&origin, key, "a node name is at most 253 bytes, without NUL"));
    }
    let cuda_driver_version = match file_cfg.cuda_driver_version {
        Some(v) => crate::driver::check_cuda_driver_version(u64::from(v))
            .map_err(|e| ConfigError::invalid(&file_origin, "cuda_driver_version", e.to_string()))?,
        None => profile.cuda_driver_version,
    };
    let numa = file_cfg.numa.clone();
    if let Some(layout) = &numa {
        // The count may come from FAKEGPU_GPUS: name it, since it is what no longer fits.
        layout.split(gpu_count).map_err(|e| {
            let origin = if env(ENV_GPUS).is_some() { format!("{file_origin} with {ENV_GPUS}={gpu_count}") } else { file_origin.clone() };
            ConfigError::invalid(&origin, "numa", e.to_string())
        })?;
    }
    Ok(NodeSpec { node_name, profile, gpu_count, driver_version, cuda_driver_version, numa })
}

/// A number written as plain decimal digits with no sign, space or leading zero (`8`, not
/// `+8`, ` 8` or `08`): what a count in a variable must look like.
pub fn parse_decimal(text: &str) -> Option<u32> {
    let canonical = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) && (text == "0" || !text.starts_with('0'));
    canonical.then(|| text.parse().ok()).flatten()
}

/// The process environment as [`resolve`] reads it. Every `FAKEGPU_*` variable must be
/// UTF-8: one that is not is an error naming it (never treated as unset).
pub fn process_env() -> Result<impl Fn(&str) -> Option<String>, ConfigError> {
    for (key, value) in std::env::vars_os() {
        let Some(key) = key.to_str().filter(|k| k.starts_with("FAKEGPU_")) else { continue };
        if value.to_str().is_none() {
            return Err(ConfigError::invalid(key, "", format!("value {value:?} is not valid UTF-8")));
        }
    }
    Ok(|key: &str| std::env::var(key).ok())
}

/// Resolves the node of this process: its environment and its host name (what `fakegpu`
/// shows; the fake libraries add the config beside themselves, [`resolve_for_library`]).
pub fn resolve_for_process() -> Result<NodeSpec, ConfigError> {
    resolve(&process_env()?, &host_name())
}

/// The directory, beside a fake library's real file, that holds the node config it finds
/// without any variable (`<library dir>/fakegpu/config.json`; the live state defaults to
/// `fakegpu-state.json` in the same directory). A directory rather than a lone file so that a
/// container runtime can bind-mount it whole and see the state file's renames.
pub const SELF_CONFIG_DIR: &str = "fakegpu";
/// The node config's file name in [`SELF_CONFIG_DIR`].
pub const SELF_CONFIG_FILE: &str = "config.json";

/// Any of these set (non-empty) means the process chose its node itself: the config beside
/// the library is then not looked for, so that variables keep their meaning unchanged.
const NODE_VARIABLES: [&str; 5] = [ENV_CONFIG, ENV_PROFILE, ENV_GPUS, ENV_NODE, crate::state_file::ENV_STATE];

/// Where a library whose file is at `library` looks for its node config: beside the real file
/// (symlinks resolved), since a driver root links `libnvidia-ml.so.1` to the versioned file and
/// a container may mount either name. `None` when the path cannot be resolved.
pub fn config_beside(library: &Path) -> Option<PathBuf> {
    let real = std::fs::canonicalize(library).ok()?;
    Some(real.parent()?.join(SELF_CONFIG_DIR).join(SELF_CONFIG_FILE))
}

/// The file of the loaded object (shared library or executable) whose code holds `addr`, as
/// the dynamic loader names it. An address, not a pointer: it is only looked up, never read.
pub fn object_path_of(addr: usize) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: all-zero is a valid `Dl_info` (null pointers); dladdr only writes it.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is a valid out-parameter; any address may be asked about.
    if unsafe { libc::dladdr(addr as *const libc::c_void, &mut info) } == 0 || info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: dladdr set a NUL-terminated name owned by the loader, valid while loaded.
    let name = unsafe { std::ffi::CStr::from_ptr(info.dli_fname) };
    (!name.to_bytes().is_empty()).then(|| PathBuf::from(std::ffi::OsStr::from_bytes(name.to_bytes())))
}

/// The node config a library finds beside itself: `Some` when no `FAKEGPU_*` node variable is
/// set and something exists at [`config_beside`] (a FIFO or a directory there is returned too,
/// so that reading it fails with the reason instead of being skipped in silence).
pub fn self_located_config(env: &dyn Fn(&str) -> Option<String>, library: Option<&Path>) -> Option<PathBuf> {
    if NODE_VARIABLES.iter().any(|v| env(v).is_some_and(|x| !x.is_empty())) {
        return None;
    }
    let path = config_beside(library?)?;
    match std::fs::symlink_metadata(&path) {
        Ok(_) => Some(path),
        Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory) => None,
        // There but not inspectable (permissions): reading it names the reason.
        Err(_) => Some(path),
    }
}

/// The environment a fake library resolves its node from: the process's, with `FAKEGPU_CONFIG`
/// set to the config beside the library (see [`self_located_config`]) when the process sets
/// no node variable. `anchor` is the address of one of the library's own functions. Both the
/// node and the live state path are read through it, so the state defaults beside that config
/// exactly as it does beside `FAKEGPU_CONFIG`, and the config is read by the same
/// [`read_config_file`] with the same checks.
pub fn library_env(anchor: usize) -> Result<impl Fn(&str) -> Option<String>, ConfigError> {
    let env = process_env()?;
    let found =
        match self_located_config(&env, object_path_of(anchor).as_deref()) {
            Some(path) => Some(path.into_os_string().into_string().map_err(|p| ConfigError::Read {
                origin: p.to_string_lossy().into_owned(),
                reason: "the path is not valid UTF-8".into(),
            })?),
            None => None,
        };
    Ok(move |key: &str| match (&found, key) {
        (Some(path), ENV_CONFIG) => Some(path.clone()),
        _ => env(key),
    })
}

/// Resolves the node of a fake library: [`library_env`] and the host name.
pub fn resolve_for_library(anchor: usize) -> Result<NodeSpec, ConfigError> {
    resolve(&library_env(anchor)?, &host_name())
}

/// The host name (`localhost` when the system does not say).
pub fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it or truncates.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len() - 1) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Reads and parses a node config file.
pub fn read_config_file(path: &Path) -> Result<NodeConfigFile, ConfigError> {
    let origin = path.display().to_string();
    let text = crate::file::read_text(path, crate::file::MAX_CONFIG_BYTES)
        .map_err(|e| ConfigError::Read { origin: origin.clone(), reason: e.to_string() })?;
    parse_config(&text, &origin)
}

/// Parses node config text; `origin` names it in errors.
pub fn parse_config(text: &str, origin: &str) -> Result<NodeConfigFile, ConfigError> {
    serde_json::from_str(text).map_err(|e| {
        let key = Some(json_error_key(&e)).filter(|k| !k.is_empty()).or_else(|| mistyped_key(text)).unwrap_or_default();
        ConfigError::invalid(origin, &key, e.to_string())
    })
}

/// serde_json does not name the key of a value of the wrong type (`"gpus": "8"`): the first
/// top-level key that fails on its own is it (every key of the file is optional).
fn mistyped_key(text: &str) -> Option<String> {
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text).ok()?;
    map.into_iter().find_map(|(k, v)| {
        let one = serde_json::Value::Object(std::iter::once((k.clone(), v)).collect());
        serde_json::from_value::<NodeConfigFile>(one).is_err().then_some(k)
    })
}

/// A profile given as a built-in name or a path (anything with a `/` or ending in `.json`).
fn load_profile_ref(key: &str, base: Option<&Path>, origin: &str) -> Result<Profile, ConfigError> {
    if key.contains('/') || key.ends_with(".json") {
        let path = match base {
            Some(dir) if Path::new(key).is_relative() => dir.join(key),
            _ => PathBuf::from(key),
        };
        Ok(Profile::from_path(&path)?)
    } else {
        find_builtin(key).cloned().map_err(|e| match e {
            crate::error::ProfileError::Unknown { name, known } => {
                ConfigError::invalid(origin, "profile", format!("unknown profile `{name}` (built-in: {known})"))
            }
            other => other.into(),
        })
    }
}

/// Applies a JSON merge patch (RFC 7396) to a profile and validates the result.
pub fn apply_overrides(profile: &Profile, patch: &serde_json::Value, origin: &str) -> Result<Profile, ConfigError> {
    let mut value = serde_json::to_value(profile).expect("profiles serialize");
    merge_patch(&mut value, patch);
    let origin = format!("{origin} (overrides)");
    let merged: Profile = serde_json::from_value(value).map_err(|e| ConfigError::invalid(&origin, "overrides", e.to_string()))?;
    merged.validate(&origin)?;
    Ok(merged)
}

fn merge_patch(target: &mut serde_json::Value, patch: &serde_json::Value) {
    use serde_json::Value;
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.insert(k.clone(), Value::Null);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

/// serde_json reports line/column; name the key where it says one (`unknown field `x``).
fn json_error_key(e: &serde_json::Error) -> String {
    let msg = e.to_string();
    msg.split('`').nth(1).filter(|_| msg.contains("field")).unwrap_or("").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    fn temp_file(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("fakegpu-model-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn defaults_without_anything() {
        let spec = resolve(&env_of(&[]), "host-1").unwrap();
        assert_eq!(spec.profile.name, DEFAULT_PROFILE);
        assert_eq!(spec.node_name, "host-1");
        assert_eq!(spec.gpu_count, spec.profile.default_gpu_count);
        assert_eq!(
            (spec.driver_version.as_str(), spec.cuda_driver_version),
            (spec.profile.driver_version.as_str(), spec.profile.cuda_driver_version)
        );
        assert_eq!(spec.nvml_version(), format!("12.{}", spec.profile.driver_version));
    }

    #[test]
    fn driver_versions_default_to_the_profile() {
        let (h100, b200) = (find_builtin("h100").unwrap(), find_builtin("b200").unwrap());
        // The two boards state different drivers, so a constant default would be caught.
        assert_ne!(h100.driver_version, b200.driver_version);
        assert_ne!(h100.cuda_driver_version, b200.cuda_driver_version);
        for p in [h100, b200] {
            let spec = resolve(&env_of(&[(ENV_PROFILE, &p.name)]), "h").unwrap();
            assert_eq!((spec.driver_version.as_str(), spec.cuda_driver_version), (p.driver_version.as_str(), p.cuda_driver_version));
            let spec = NodeSpec::builtin(&p.name, Some(1), "h").unwrap();
            assert_eq!((spec.driver_version.as_str(), spec.cuda_driver_version), (p.driver_version.as_str(), p.cuda_driver_version));
        }
        // From a config file that names the profile, and from the profile as its overrides patch it.
        let path = temp_file("b200.json", r#"{"profile":"b200"}"#);
        let spec = resolve(&env_of(&[(ENV_CONFIG, path.to_str().unwrap())]), "h").unwrap();
        assert_eq!(spec.driver_version, b200.driver_version);
        let path =
            temp_file("patched.json", r#"{"profile":"b200","overrides":{"driver_version":"570.133.20","cuda_driver_version":12080}}"#);
        let spec = resolve(&env_of(&[(ENV_CONFIG, path.to_str().unwrap())]), "h").unwrap();
        assert_eq!((spec.driver_version.as_str(), spec.cuda_driver_version), ("570.133.20", 12080));
    }

    #[test]
    fn node_config_overrides_the_profile_driver() {
        let path = temp_file("drv.json", r#"{"profile":"b200","driver_version":"575.57.08","cuda_driver_version":12090}"#);
        let spec = resolve(&env_of(&[(ENV_CONFIG, path.to_str().unwrap())]), "h").unwrap();
        assert_eq!((spec.driver_version.as_str(), spec.cuda_driver_version), ("575.57.08", 12090));
        assert_eq!(spec.nvml_version(), "12.575.57.08");
        // Only one of the two: the other stays the profile's.
        let path = temp_file("drv-cuda.json", r#"{"profile":"h100","cuda_driver_version":12040}"#);
        let spec = resolve(&env_of(&[(ENV_CONFIG, path.to_str().unwrap())]), "h").unwrap();
        assert_eq!(
            (spec.driver_version.as_str(), spec.cuda_driver_version),
            (find_builtin("h100").unwrap().driver_version.as_str(), 12040)
        );
    }

    #[test]
    fn invalid_driver_versions_name_the_key() {
        for (name, text, key) in [
            ("drv-empty.json", r#"{"driver_version":""}"#, "`driver_version`"),
            ("drv-word.json", r#"{"driver_version":"latest"}"#, "`driver_version`"),
            ("drv-branch.json", r#"{"driver_version":"580"}"#, "`driver_version`"),
            ("drv-nul.json", r#"{"driver_version":"580.1\u0000"}"#, "`driver_version`"),
            ("cuda-odd.json", r#"{"cuda_driver_version":12021}"#, "`cuda_driver_version`"),
            ("cuda-zero.json", r#"{"cuda_driver_version":0}"#, "`cuda_driver_version`"),
            ("cuda-text.json", r#"{"cuda_driver_version":"12.2"}"#, "`cuda_driver_version`"),
            ("cuda-neg.json", r#"{"cuda_driver_version":-1}"#, "cuda_driver_version"),
            ("ovr-drv.json", r#"{"overrides":{"driver_version":"v1"}}"#, "`driver_version`"),
            ("ovr-cuda.json", r#"{"overrides":{"cuda_driver_version":5}}"#, "`cuda_driver_version`"),
        ] {
            let path = temp_file(name, text);
            let err = resolve(&env_of(&[(ENV_CONFIG, path.to_str().unwrap())]), "h").unwrap_err().to_string();
            assert!(err.contains(name) && err.contains(key), "{name}: {err}");
        }
    }

    #[test]
    fn env_selects_profile_count_and_node() {
        let spec = resolve(&env_of(&[(ENV_PROFILE, "T4"), (ENV_GPUS, "3"), (ENV_NODE, "n7")]), "h").unwrap();
        assert_eq!((spec.profile.name.as_str(), spec.gpu_count, spec.node_name.as_str()), ("t4", 3, "n7"));
    }

    #[test]
    fn gpu_count_bounds_are_enforced() {
        for bad in ["0", "257", "-1", "eight", "", " 8", "+8", "08", "8 ", "0x8"] {
            let err = resolve(&env_of(&[(ENV_GPUS, bad)]), "h").unwrap_err();
            assert!(err.to_string().starts_with(ENV_GPUS), "{err}");
        }
        assert_eq!(resolve(&env_of(&[(ENV_GPUS, "256")]), "h").unwrap().gpu_count, 256);
    }

    #[test]
    fn unknown_profile_is_named() {
        let err = resolve(&env_of(&[(ENV_PROFILE, "h900")]), "h").unwrap_err().to_string();
        assert!(err.contains("h900") && err.contains("h100"), "{err}");
    }

    #[test]
    fn config_file_with_overrides() {
        let path = temp_file(
            "node.json",
            r#"{"node":"w1","profile":"a100-40gb","gpus":4,"overrides":{"memory":{"reserved_mib":100}},"driver_version":"550.1.2"}"#,
        );
        let spec = resolve(&env_of(&[(ENV_CONFIG, path.to_str().unwrap())]), "h").unwrap();
        assert_eq!(spec.node_name, "w1");
        assert_eq!(spec.gpu_count, 4);
        assert_eq!(spec.profile.memory.reserved_mib, 100);
        assert_eq!(spec.driver_version, "550.1.2");
        // The environment wins over the file.
        let spec = resolve(&env_of(&[(ENV_CONFIG, path.to_str().unwrap()), (ENV_GPUS, "2")]), "h").unwrap();
        assert_eq!(spec.gpu_count, 2);
    }

    #[test]
    fn config_file_errors_name_file_and_key() {
        let path = temp_file("bad-key.json", r#"{"profile":"h100","gpu":4}"#);
        let err = resolve(&env_of(&[(ENV_CONFIG, path.to_str().unwrap())]), "h").unwrap_err().to_string();
        assert!(err.contains("bad-key.json") && err.contains("`gpu`"), "{err}");

        let path = temp_file("bad-override.json", r#"{"overrides":{"memory":{"totl_mib":1}}}"#);
        let err = resolve(&env_of(&[(ENV_CONFIG, path.to_str().unwrap())]), "h").unwrap_err().to_string();
        assert!(err.contains("bad-override.json") && err.contains("totl_mib"), "{err}");

        let path = temp_file("bad-count.json", r#"{"gpus":0}"#);
        let err = resolve(&env_of(&[(ENV_CONFIG, path.to_str().unwrap())]), "h").unwrap_err().to_string();
        assert!(err.contains("bad-count.json") && err.contains("`gpus`"), "{err}");

        let err = resolve(&env_of(&[(ENV_CONFIG, "/nonexistent/node.json")]), "h").unwrap_err().to_string();
        assert!(err.contains("/nonexistent/node.json"), "{err}");
    }

    #[test]
    fn numa_layout_is_carried_and_checked() {
        let path = temp_file("numa.json", r#"{"profile":"h100","gpus":8,"numa":{"zones":4,"gpus_per_zone":[2,2,2,2],"cpus_per_zone":16}}"#);
        let spec = resolve(&env_of(&[(ENV_CONFIG, path.to_str().unwrap())]), "h").unwrap();
        let p = spec.numa_placement();
        assert_eq!(p.gpu_zone, vec![0, 0, 1, 1, 2, 2, 3, 3]);
        assert_eq!(p.cpus_of(3, 4), 48..64);
        // The count from the environment no longer fits the explicit list: an error naming both.
        let err = resolve(&env_of(&[(ENV_CONFIG, path.to_str().unwrap()), (ENV_GPUS, "6")]), "h").unwrap_err().to_string();
        assert!(err.contains("numa.json") && err.contains("FAKEGPU_GPUS=6") && err.contains("`numa`"), "{err}");
        let path = temp_file("numa-bad.json", r#"{"profile":"h100","gpus":2,"numa":{"zones":0}}"#);
        let err = resolve(&env_of(&[(ENV_CONFIG, path.to_str().unwrap())]), "h").unwrap_err().to_string();
        assert!(err.contains("`numa`") && err.contains("zones"), "{err}");
        // Without a layout: halves, as before.
        let spec = resolve(&env_of(&[(ENV_GPUS, "4")]), "h").unwrap();
        assert_eq!(spec.numa_placement().gpu_zone, vec![0, 0, 1, 1]);
    }

    #[test]
    fn the_config_beside_a_library_is_found_through_its_symlinks() {
        let dir = std::env::temp_dir().join(format!("fakegpu-self-config-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (lib, other) = (dir.join("lib"), dir.join("other"));
        std::fs::create_dir_all(lib.join(SELF_CONFIG_DIR)).unwrap();
        std::fs::create_dir_all(other.join(SELF_CONFIG_DIR)).unwrap();
        std::fs::write(lib.join("libfake.so.1.2"), b"").unwrap();
        std::os::unix::fs::symlink("../lib/libfake.so.1.2", other.join("libfake.so.1")).unwrap();
        let link = other.join("libfake.so.1");
        let beside_real = lib.canonicalize().unwrap().join(SELF_CONFIG_DIR).join(SELF_CONFIG_FILE);
        assert_eq!(config_beside(&link), Some(beside_real.clone()));

        // Nothing there yet: not found, so the library keeps its defaults. A config beside the
        // link (not the real file) is not the one.
        std::fs::write(other.join(SELF_CONFIG_DIR).join(SELF_CONFIG_FILE), "{}").unwrap();
        assert_eq!(self_located_config(&env_of(&[]), Some(&link)), None);
        std::fs::write(&beside_real, r#"{"profile":"a100-40gb","gpus":3}"#).unwrap();
        let found = self_located_config(&env_of(&[]), Some(&link)).unwrap();
        assert_eq!(found, beside_real);
        // Resolved as FAKEGPU_CONFIG would be, and the state defaults beside it.
        let env = env_of(&[(ENV_CONFIG, found.to_str().unwrap())]);
        let spec = resolve(&env, "h").unwrap();
        assert_eq!((spec.profile.name.as_str(), spec.gpu_count), ("a100-40gb", 3));
        assert_eq!(crate::state_file::state_path(&env), Some(found.with_file_name(crate::state_file::DEFAULT_FILE_NAME)));

        // Any node variable means the process chose: the file is not looked for. Empty ones
        // count as unset, as everywhere else.
        for var in NODE_VARIABLES {
            assert_eq!(self_located_config(&env_of(&[(var, "x")]), Some(&link)), None, "{var}");
            assert_eq!(self_located_config(&env_of(&[(var, "")]), Some(&link)), Some(beside_real.clone()), "{var}");
        }
        assert_eq!(self_located_config(&env_of(&[]), None), None);

        // Something that is not a regular file is returned, so that reading it says why.
        std::fs::remove_file(&beside_real).unwrap();
        std::fs::create_dir(&beside_real).unwrap();
        let found = self_located_config(&env_of(&[]), Some(&link)).unwrap();
        let err = read_config_file(&found).unwrap_err().to_string();
        assert!(err.contains("config.json") && err.contains("directory"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_object_holding_an_address_is_named() {
        // A libc function lies in the C library, whatever this binary is linked as.
        let libc_path =
            object_path_of(libc::dladdr as unsafe extern "C" fn(*const libc::c_void, *mut libc::Dl_info) -> libc::c_int as usize).unwrap();
        let name = libc_path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("libc.so") || name.starts_with("libc-"), "{}", libc_path.display());
        assert_eq!(object_path_of(0), None);
    }

    #[test]
    fn profile_path_relative_to_config() {
        let h100 = serde_json::to_string(find_builtin("h100").unwrap()).unwrap().replace("\"h100\"", "\"custom\"");
        temp_file("custom.json", &h100);
        let path = temp_file("with-path.json", r#"{"profile":"./custom.json"}"#);
        let spec = resolve(&env_of(&[(ENV_CONFIG, path.to_str().unwrap())]), "h").unwrap();
        assert_eq!(spec.profile.name, "custom");
    }
}
