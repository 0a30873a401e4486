//! Pool resolution: a pool's config plus the profiles (built-in model profiles and custom
//! profile ConfigMaps) → what a node of that pool simulates: product, memory, GPU count,
//! driver/CUDA versions, the model profile, other devices. Pure.
//!
//! Upstream reads product/memory/count/versions from an nvml-mock profile document
//! (`device_defaults.name`, `device_defaults.memory.total_bytes`, `device_count` or
//! `len(devices)`, `system.driver_version`, `system.cuda_version`) deep-merged with the pool's
//! `overrides`. The same keys are read here; the rest of the simulation (clocks, power, PCI…)
//! comes from the model profile matching the product name, else the profile named by the pool,
//! else the model's default profile with the product name and memory patched in.

use std::collections::BTreeMap;

use fakegpu_model::config::DEFAULT_PROFILE;
use fakegpu_model::driver::{check_driver_version, cuda_text, parse_cuda_text};
use fakegpu_model::{find_builtin, Profile};
use serde_json::{json, Value};

use crate::config::{deep_merge, Backend, ClusterConfig, ConfigError, PoolConfig};
use crate::topology::OtherDevice;

/// Label of profile ConfigMaps; their name is `gpu-profile-<name>`.
pub const PROFILE_CM_LABEL: &str = "fake-gpu-operator/gpu-profile";
pub const PROFILE_CM_PREFIX: &str = "gpu-profile-";
/// Upstream key: an nvml-mock profile document (YAML).
pub const PROFILE_KEY_UPSTREAM: &str = "profile.yaml";
/// Our key: a model profile (JSON, `profiles/schema.json`).
pub const PROFILE_KEY_MODEL: &str = "profile.json";
/// Node labels that override the pool per node (`fakegpu cluster up --profile/--gpus` sets them).
pub const NODE_PROFILE_LABEL: &str = "fake-gpu-operator.run.ai/profile";
pub const NODE_GPUS_LABEL: &str = "fake-gpu-operator.run.ai/gpu-count";
/// Most GPUs per node.
pub const MAX_GPUS: u64 = fakegpu_model::MAX_GPUS as u64;

/// A custom profile ConfigMap.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CustomProfile {
    /// `profile.yaml`: nvml-mock schema, as upstream.
    pub upstream: Option<Value>,
    /// `profile.json`: a full model profile.
    pub model: Option<Profile>,
}

impl CustomProfile {
    /// Parses a profile ConfigMap's data. `cm` names it in errors.
    pub fn from_data(cm: &str, data: &BTreeMap<String, String>) -> Result<CustomProfile, ConfigError> {
        let err = |reason: String| ConfigError::Invalid { key: format!("ConfigMap {cm}"), reason };
        let upstream = match data.get(PROFILE_KEY_UPSTREAM) {
            Some(text) => {
                let v: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| err(format!("{PROFILE_KEY_UPSTREAM}: {e}")))?;
                let v = serde_json::to_value(v).map_err(|e| err(format!("{PROFILE_KEY_UPSTREAM}: {e}")))?;
                if !v.is_object() {
                    return Err(err(format!("{PROFILE_KEY_UPSTREAM}: expected a mapping")));
                }
                Some(v)
            }
            None => None,
        };
        let model = match data.get(PROFILE_KEY_MODEL) {
            Some(text) => Some(Profile::from_json(text, &format!("ConfigMap {cm} {PROFILE_KEY_MODEL}")).map_err(|e| err(e.to_string()))?),
            None => None,
        };
        if upstream.is_none() && model.is_none() {
            return Err(err(format!("has neither `{PROFILE_KEY_UPSTREAM}` nor `{PROFILE_KEY_MODEL}`")));
        }
        Ok(CustomProfile { upstream, model })
    }
}

/// Custom profiles by name (the ConfigMap name without `gpu-profile-`).
pub type Profiles = BTreeMap<String, CustomProfile>;

/// What a node of a pool simulates.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedPool {
    pub pool: String,
    pub backend: Backend,
    /// `gpuProduct` in the per-node topology (raw, as configured).
    pub product: String,
    pub memory_mib: u64,
    pub gpu_count: u32,
    /// `system.driver_version` of the pool (upstream's key), else the model profile's.
    pub driver_version: String,
    /// `nvmlSystemGetCudaDriverVersion` encoding (12020 = CUDA 12.2): `system.cuda_version`
    /// of the pool, else the model profile's.
    pub cuda_driver_version: u32,
    /// Whether the pool's config (its profile document or `overrides`) set the driver
    /// version / the CUDA version; those that it did not follow the model profile, also when a
    /// node's profile label replaces it.
    pub driver_from_pool: bool,
    pub cuda_from_pool: bool,
    pub other_devices: Vec<OtherDevice>,
    /// Name of the model profile (built-in name or custom profile name).
    pub profile_name: String,
    /// The model profile with product name / memory patched where the config differs.
    pub profile: Profile,
    /// Whether `profile` is a built-in (the node config names it) or must be written inline.
    pub builtin: bool,
    /// The patch applied to the base model profile (for the node config's `overrides`).
    pub model_overrides: Option<Value>,
    /// The pool's `numa` block.
    pub numa: Option<crate::nrt::NumaConfig>,
}

impl ResolvedPool {
    /// The NUMA layout of a node of this pool (after per-node labels set its GPU count), for
    /// its node config: None without a `numa` block, without GPUs, or when the block does not
    /// fit the node.
    pub fn numa_layout(&self) -> Option<fakegpu_model::numa::NumaLayout> {
        self.numa.as_ref().filter(|_| self.gpu_count > 0).and_then(|n| n.layout(self.gpu_count))
    }

    /// The CUDA version as `major.minor` (`12.2`), as the topology's `cudaVersion` states it.
    pub fn cuda_version(&self) -> String {
        cuda_text(self.cuda_driver_version)
    }
}

/// `system.driver_version` (upstream's key in a profile document and in a pool's `overrides`):
/// None when absent, else a driver version such as `580.105.08`.
fn pool_driver_version(doc: &Value) -> Result<Option<String>, String> {
    const KEY: &str = "system.driver_version";
    match doc.pointer("/system/driver_version") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => check_driver_version(s).map(|()| Some(s.clone())).map_err(|e| format!("`{KEY}`: {e}")),
        Some(other) => Err(format!("`{KEY}`: expected a string such as \"580.105.08\" (quote it in YAML), found {other}")),
    }
}

/// `system.cuda_version` as `major.minor` (a string, or a YAML number such as 12.4 or 13):
/// None when absent, else its `nvmlSystemGetCudaDriverVersion` encoding.
fn pool_cuda_version(doc: &Value) -> Result<Option<u32>, String> {
    const KEY: &str = "system.cuda_version";
    let text = match doc.pointer("/system/cuda_version") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) if n.is_u64() => format!("{n}.0"),
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => return Err(format!("`{KEY}`: `{other}` is not `major.minor`")),
    };
    parse_cuda_text(&text).map(Some).map_err(|e| format!("`{KEY}`: {e}"))
}

/// Resolves every pool; the first failing pool's error.
pub fn resolve_all(cfg: &ClusterConfig, profiles: &Profiles) -> Result<BTreeMap<String, ResolvedPool>, ConfigError> {
    cfg.node_pools.iter().map(|(name, p)| Ok((name.clone(), resolve_pool(name, p, profiles)?))).collect()
}

/// Resolves one pool.
pub fn resolve_pool(name: &str, pool: &PoolConfig, profiles: &Profiles) -> Result<ResolvedPool, ConfigError> {
    let err = |reason: String| ConfigError::Pool { pool: name.into(), reason };
    // The document upstream reads the values from, and the model profile to start from.
    let (mut doc, base, base_name, builtin) = match &pool.profile {
        Some(p) => match profiles.get(p) {
            Some(custom) => {
                let doc = custom.upstream.clone().unwrap_or_else(|| json!({}));
                match &custom.model {
                    Some(m) => (doc, Some(m.clone()), p.clone(), false),
                    None => (doc, None, p.clone(), false),
                }
            }
            None => match find_builtin(p) {
                Ok(b) => (json!({}), Some(b.clone()), b.name.clone(), true),
                Err(_) => {
                    let known: Vec<String> =
                        fakegpu_model::builtin_profiles().map(|ps| ps.iter().map(|p| p.name.clone()).collect()).unwrap_or_default();
                    return Err(err(format!(
                        "profile `{p}` is neither a profile ConfigMap `{PROFILE_CM_PREFIX}{p}` nor a built-in ({})",
                        known.join(", ")
                    )));
                }
            },
        },
        None => (json!({}), None, String::new(), true),
    };
    deep_merge(&mut doc, &pool.overrides);

    let product_cfg = doc.pointer("/device_defaults/name").and_then(Value::as_str).unwrap_or("").to_string();
    // Model profile: a custom model profile; else the built-in the product names; else the
    // built-in the pool names; else the default, patched.
    let (base, base_name, builtin, matched_product) = match base {
        Some(b) if !builtin => (b, base_name, false, true),
        other => match find_builtin(&product_cfg).ok().filter(|_| !product_cfg.is_empty()) {
            Some(b) => (b.clone(), b.name.clone(), true, true),
            None => match other {
                Some(b) => (b, base_name, true, product_cfg.is_empty()),
                None => {
                    let b = find_builtin(DEFAULT_PROFILE).map_err(|e| err(e.to_string()))?.clone();
                    let n = b.name.clone();
                    (b, n, true, product_cfg.is_empty())
                }
            },
        },
    };
    let product = if product_cfg.is_empty() { base.product_name.clone() } else { product_cfg.clone() };
    let memory_mib = match doc.pointer("/device_defaults/memory/total_bytes") {
        None | Some(Value::Null) => base.memory.total_mib,
        Some(v) => {
            v.as_u64().ok_or_else(|| err(format!("`device_defaults.memory.total_bytes`: expected a whole number, found {v}")))? / 1_048_576
        }
    };
    let gpu_count = match (doc.get("device_count").and_then(Value::as_u64).filter(|c| *c > 0), doc.get("devices")) {
        (Some(c), _) => c,
        (None, Some(Value::Array(d))) => d.len() as u64,
        (None, _) => u64::from(base.default_gpu_count),
    };
    if gpu_count > MAX_GPUS {
        return Err(err(format!("{gpu_count} GPUs per node is more than {MAX_GPUS}")));
    }
    let pool_driver = pool_driver_version(&doc).map_err(err)?;
    let pool_cuda = pool_cuda_version(&doc).map_err(err)?;

    let mut patch = serde_json::Map::new();
    if !matched_product && product != base.product_name {
        patch.insert("product_name".into(), json!(product));
    }
    if memory_mib != base.memory.total_mib {
        patch.insert("memory".into(), json!({"total_mib": memory_mib}));
    }
    let (profile, model_overrides) = if patch.is_empty() || gpu_count == 0 {
        (base, None)
    } else {
        let patch = Value::Object(patch);
        let p = fakegpu_model::config::apply_overrides(&base, &patch, &format!("pool {name}")).map_err(|e| err(e.to_string()))?;
        (p, Some(patch))
    };
    Ok(ResolvedPool {
        pool: name.into(),
        backend: pool.backend,
        product: if pool.empty { String::new() } else { product },
        memory_mib: if pool.empty { 0 } else { memory_mib },
        gpu_count: if pool.empty { 0 } else { gpu_count as u32 },
        driver_version: pool_driver.clone().unwrap_or_else(|| profile.driver_version.clone()),
        cuda_driver_version: pool_cuda.unwrap_or(profile.cuda_driver_version),
        driver_from_pool: pool_driver.is_some(),
        cuda_from_pool: pool_cuda.is_some(),
        other_devices: pool.resources.clone(),
        profile_name: base_name,
        profile,
        builtin,
        model_overrides,
        numa: pool.numa.clone(),
    })
}

/// The model profile of a node as its per-node topology states it (`profile`, `gpuProduct`,
/// `gpuMemory`), for consumers of the topology (the status-exporter): resolved as a pool that
/// names that profile with that product and memory, by [`resolve_pool`] itself, so they compute
/// with the profile the status-updater gave the node's fake NVML. Without a profile name
/// (topologies upstream wrote) the product decides, as for a legacy pool.
pub fn topology_profile(profile: Option<&str>, product: &str, memory_mib: u64, profiles: &Profiles) -> Result<Profile, ConfigError> {
    let mut defaults = serde_json::Map::new();
    if !product.is_empty() {
        defaults.insert("name".into(), json!(product));
    }
    if memory_mib > 0 {
        defaults.insert("memory".into(), json!({"total_bytes": memory_mib * 1_048_576}));
    }
    let pool = PoolConfig {
        backend: Backend::Fake,
        profile: profile.filter(|p| !p.is_empty()).map(str::to_owned),
        overrides: json!({"device_defaults": defaults}),
        resources: Vec::new(),
        empty: false,
        numa: None,
    };
    resolve_pool("(node topology)", &pool, profiles).map(|r| r.profile)
}

/// Applies a node's own `fake-gpu-operator.run.ai/profile` / `gpu-count` labels on top of its
/// pool. A profile label replaces product, memory and profile; a count label the GPU count.
pub fn for_node(
    pool: &ResolvedPool,
    profile_label: Option<&str>,
    gpus_label: Option<&str>,
    profiles: &Profiles,
) -> Result<ResolvedPool, String> {
    let mut r = pool.clone();
    if let Some(p) = profile_label.filter(|p| !p.is_empty()) {
        let (profile, builtin) = match profiles.get(p).and_then(|c| c.model.clone()) {
            Some(m) => (m, false),
            None => (find_builtin(p).map_err(|e| format!("label {NODE_PROFILE_LABEL}={p}: {e}"))?.clone(), true),
        };
        r.product = profile.product_name.clone();
        r.memory_mib = profile.memory.total_mib;
        r.profile_name = if builtin { profile.name.clone() } else { p.to_string() };
        if gpus_label.is_none() {
            r.gpu_count = profile.default_gpu_count;
        }
        // The driver follows the node's board unless the pool set it.
        if !r.driver_from_pool {
            r.driver_version = profile.driver_version.clone();
        }
        if !r.cuda_from_pool {
            r.cuda_driver_version = profile.cuda_driver_version;
        }
        r.profile = profile;
        r.builtin = builtin;
        r.model_overrides = None;
    }
    if let Some(g) = gpus_label.filter(|g| !g.is_empty()) {
        let n: u64 = g.parse().map_err(|_| format!("label {NODE_GPUS_LABEL}={g}: not a whole number"))?;
        if n > MAX_GPUS {
            return Err(format!("label {NODE_GPUS_LABEL}={g}: more than {MAX_GPUS}"));
        }
        r.gpu_count = n as u32;
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> ClusterConfig {
        ClusterConfig::parse(text).unwrap()
    }

    #[test]
    fn legacy_default_pool_is_k80() {
        let r = resolve_all(&ClusterConfig::default(), &Profiles::new()).unwrap();
        let d = &r["default"];
        assert_eq!((d.product.as_str(), d.gpu_count, d.memory_mib), ("Tesla-K80", 2, 11441));
        assert_eq!(d.profile_name, "k80");
        assert!(d.builtin && d.model_overrides.is_none());
        // The driver is the K80 profile's (no pool sets one).
        let k80 = find_builtin("k80").unwrap();
        assert_eq!((d.driver_version.as_str(), d.cuda_driver_version), (k80.driver_version.as_str(), k80.cuda_driver_version));
        assert_eq!(d.cuda_version(), fakegpu_model::driver::cuda_text(k80.cuda_driver_version));
        assert!(!d.driver_from_pool && !d.cuda_from_pool);
    }

    #[test]
    fn legacy_unknown_product_patches_default_profile() {
        let c = cfg("nodePools:\n  x:\n    gpuProduct: Acme X1\n    gpuCount: 3\n    gpuMemory: 1000\n");
        let r = &resolve_all(&c, &Profiles::new()).unwrap()["x"];
        assert_eq!(r.product, "Acme X1");
        assert_eq!(r.profile.product_name, "Acme X1");
        assert_eq!(r.profile.memory.total_mib, 1000);
        assert_eq!(r.profile_name, DEFAULT_PROFILE);
        assert_eq!(r.model_overrides, Some(json!({"product_name": "Acme X1", "memory": {"total_mib": 1000}})));
    }

    #[test]
    fn legacy_known_product_other_memory() {
        let c = cfg("nodePools:\n  x:\n    gpuProduct: NVIDIA-A100-SXM4-40GB\n    gpuCount: 4\n    gpuMemory: 40000\n");
        let r = &resolve_all(&c, &Profiles::new()).unwrap()["x"];
        assert_eq!(r.profile_name, "a100-40gb");
        assert_eq!(r.product, "NVIDIA-A100-SXM4-40GB");
        assert_eq!(r.profile.product_name, "NVIDIA A100-SXM4-40GB");
        assert_eq!(r.model_overrides, Some(json!({"memory": {"total_mib": 40000}})));
    }

    #[test]
    fn chart_builtin_profile_configmaps_resolve_as_the_compiled_in_profiles() {
        // The chart's templates/profiles.yaml renders gpu-profile-<name> with these keys from
        // profiles/<name>.json; a pool naming it must resolve exactly as without the ConfigMap.
        for b in fakegpu_model::builtin_profiles().unwrap() {
            let yaml = format!(
                "# Built-in profile {n}\ndevice_defaults:\n  name: {name:?}\n  memory:\n    total_bytes: {bytes}\ndevice_count: {count}\n",
                n = b.name,
                name = b.product_name,
                bytes = b.memory.total_mib * 1_048_576,
                count = b.default_gpu_count
            );
            let data = BTreeMap::from([(PROFILE_KEY_UPSTREAM.to_string(), yaml)]);
            let cm = CustomProfile::from_data(&format!("gpu-profile-{}", b.name), &data).unwrap();
            let with_cm = Profiles::from([(b.name.clone(), cm)]);
            for overrides in [json!({}), json!({"device_count": 2})] {
                let pool = PoolConfig {
                    backend: Backend::Fake,
                    profile: Some(b.name.clone()),
                    overrides: overrides.clone(),
                    resources: vec![],
                    empty: false,
                    numa: None,
                };
                let a = resolve_pool("p", &pool, &with_cm).unwrap();
                let plain = resolve_pool("p", &pool, &Profiles::new()).unwrap();
                assert_eq!(
                    (&a.product, a.memory_mib, a.gpu_count, &a.profile_name, a.builtin, &a.profile, &a.model_overrides),
                    (
                        &plain.product,
                        plain.memory_mib,
                        plain.gpu_count,
                        &plain.profile_name,
                        plain.builtin,
                        &plain.profile,
                        &plain.model_overrides
                    ),
                    "{} {overrides}",
                    b.name
                );
            }
        }
    }

    #[test]
    fn new_format_builtin_profile_and_overrides() {
        let c = cfg("nodePools:\n  h:\n    gpu:\n      profile: h100\n  h4:\n    gpu:\n      profile: h100\n      overrides: {device_count: 4, system: {driver_version: 550.163.01, cuda_version: '12.4'}}\n");
        let r = resolve_all(&c, &Profiles::new()).unwrap();
        assert_eq!((r["h"].product.as_str(), r["h"].gpu_count), ("NVIDIA H100 80GB HBM3", 8));
        assert_eq!(r["h"].memory_mib, find_builtin("h100").unwrap().memory.total_mib);
        assert_eq!(r["h4"].gpu_count, 4);
        assert_eq!(r["h4"].driver_version, "550.163.01");
        assert_eq!(r["h4"].cuda_driver_version, 12040);
        let h100 = find_builtin("h100").unwrap();
        assert_eq!((r["h"].driver_version.as_str(), r["h"].cuda_driver_version), (h100.driver_version.as_str(), h100.cuda_driver_version));
    }

    #[test]
    fn driver_versions_come_from_the_profile_unless_the_pool_sets_them() {
        let c = cfg("nodePools:\n  b:\n    gpu:\n      profile: b200\n  h:\n    gpu:\n      profile: h100\n  hb:\n    gpu:\n      profile: h100\n      overrides: {system: {driver_version: \"580.105.08\"}}\n  hc:\n    gpu:\n      profile: h100\n      overrides: {system: {cuda_version: 13.0}}\n");
        let r = resolve_all(&c, &Profiles::new()).unwrap();
        let (b200, h100) = (find_builtin("b200").unwrap(), find_builtin("h100").unwrap());
        assert_ne!(b200.driver_version, h100.driver_version);
        assert_eq!((r["b"].driver_version.as_str(), r["b"].cuda_driver_version), (b200.driver_version.as_str(), b200.cuda_driver_version));
        assert_eq!((r["h"].driver_version.as_str(), r["h"].cuda_driver_version), (h100.driver_version.as_str(), h100.cuda_driver_version));
        // One key of the pair set: the other stays the profile's.
        assert_eq!((r["hb"].driver_version.as_str(), r["hb"].cuda_driver_version), ("580.105.08", h100.cuda_driver_version));
        assert_eq!((r["hc"].driver_version.as_str(), r["hc"].cuda_driver_version), (h100.driver_version.as_str(), 13000));
        // A node's profile label brings its board's driver, except what the pool set.
        let n = for_node(&r["h"], Some("b200"), None, &Profiles::new()).unwrap();
        assert_eq!((n.driver_version.as_str(), n.cuda_driver_version), (b200.driver_version.as_str(), b200.cuda_driver_version));
        let n = for_node(&r["hb"], Some("b200"), None, &Profiles::new()).unwrap();
        assert_eq!((n.driver_version.as_str(), n.cuda_driver_version), ("580.105.08", b200.cuda_driver_version));
        // The node config the fake NVML reads carries them.
        let file = crate::index::config_file("n1", &r["b"]);
        assert_eq!(
            (file.driver_version.as_deref(), file.cuda_driver_version),
            (Some(b200.driver_version.as_str()), Some(b200.cuda_driver_version))
        );
    }

    #[test]
    fn invalid_pool_driver_versions_name_the_key() {
        for (overrides, key) in [
            ("{system: {driver_version: latest}}", "`system.driver_version`"),
            ("{system: {driver_version: 580}}", "`system.driver_version`"),
            ("{system: {driver_version: 550.1}}", "`system.driver_version`"),
            ("{system: {driver_version: ''}}", "`system.driver_version`"),
            ("{system: {cuda_version: '12'}}", "`system.cuda_version`"),
            ("{system: {cuda_version: '12.2.1'}}", "`system.cuda_version`"),
            ("{system: {cuda_version: [12, 2]}}", "`system.cuda_version`"),
        ] {
            let c = cfg(&format!("nodePools:\n  p:\n    gpu:\n      profile: h100\n      overrides: {overrides}\n"));
            let e = resolve_all(&c, &Profiles::new()).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains('p'), "{overrides}: {e}");
        }
    }

    #[test]
    fn overrides_only_pool() {
        let c = cfg("nodePools:\n  o:\n    gpu:\n      overrides:\n        device_defaults: {name: Tesla T4, memory: {total_bytes: 16106127360}}\n        devices: [{}, {}]\n");
        let r = &resolve_all(&c, &Profiles::new()).unwrap()["o"];
        assert_eq!((r.profile_name.as_str(), r.gpu_count, r.memory_mib), ("t4", 2, 15360));
        assert!(r.model_overrides.is_none());
    }

    #[test]
    fn custom_upstream_profile_cm() {
        let data = BTreeMap::from([(
            PROFILE_KEY_UPSTREAM.to_string(),
            "version: '1.0'\nsystem: {driver_version: 550.163.01, cuda_version: '12.4'}\ndevice_defaults:\n  name: NVIDIA L40S\n  memory: {total_bytes: 51539607552}\ndevices: [{index: 0}, {index: 1}, {index: 2}]\n".to_string(),
        )]);
        let profiles = Profiles::from([("my-l40s".to_string(), CustomProfile::from_data("gpu-profile-my-l40s", &data).unwrap())]);
        let c = cfg("nodePools:\n  p:\n    gpu:\n      profile: my-l40s\n      overrides: {device_count: 2}\n");
        let r = &resolve_all(&c, &profiles).unwrap()["p"];
        assert_eq!((r.product.as_str(), r.gpu_count, r.memory_mib), ("NVIDIA L40S", 2, 49152));
        assert_eq!(r.profile_name, "l40s");
        assert_eq!((r.cuda_version().as_str(), r.cuda_driver_version), ("12.4", 12040));
        assert_eq!(r.driver_version, "550.163.01");
        assert_eq!(r.model_overrides, Some(json!({"memory": {"total_mib": 49152}})));
    }

    #[test]
    fn custom_model_profile_cm() {
        let mut p = find_builtin("t4").unwrap().clone();
        p.name = "t4-custom".into();
        p.aliases.clear();
        let data = BTreeMap::from([(PROFILE_KEY_MODEL.to_string(), serde_json::to_string(&p).unwrap())]);
        let profiles = Profiles::from([("t4c".to_string(), CustomProfile::from_data("gpu-profile-t4c", &data).unwrap())]);
        let c = cfg("nodePools:\n  p:\n    gpu:\n      profile: t4c\n");
        let r = &resolve_all(&c, &profiles).unwrap()["p"];
        assert_eq!(r.profile_name, "t4c");
        assert!(!r.builtin);
        assert_eq!(r.profile.name, "t4-custom");
    }

    #[test]
    fn bad_profile_cm_and_unknown_profile() {
        let e = CustomProfile::from_data("gpu-profile-x", &BTreeMap::new()).unwrap_err().to_string();
        assert!(e.contains("gpu-profile-x"), "{e}");
        let data = BTreeMap::from([(PROFILE_KEY_MODEL.to_string(), "{}".to_string())]);
        assert!(CustomProfile::from_data("gpu-profile-x", &data).is_err());
        let c = cfg("nodePools:\n  p:\n    gpu:\n      profile: h900\n");
        let e = resolve_all(&c, &Profiles::new()).unwrap_err().to_string();
        assert!(e.contains("h900") && e.contains("gpu-profile-h900") && e.contains("pool `p`"), "{e}");
        let c = cfg("nodePools:\n  p:\n    gpu:\n      profile: h100\n      overrides: {device_count: 300}\n");
        assert!(resolve_all(&c, &Profiles::new()).unwrap_err().to_string().contains("300"));
        let c = cfg("nodePools:\n  p:\n    gpu:\n      profile: h100\n      overrides: {system: {cuda_version: twelve}}\n");
        assert!(resolve_all(&c, &Profiles::new()).unwrap_err().to_string().contains("cuda_version"));
    }

    #[test]
    fn topology_profile_is_the_pools_profile() {
        let mut t4 = find_builtin("t4").unwrap().clone();
        t4.name = "t4-custom".into();
        t4.aliases.clear();
        t4.power.idle_draw_mw = 12_345;
        let upstream = "device_defaults:\n  name: NVIDIA L40S\n  memory: {total_bytes: 51539607552}\n";
        let profiles = Profiles::from([
            (
                "t4c".to_string(),
                CustomProfile::from_data(
                    "gpu-profile-t4c",
                    &BTreeMap::from([(PROFILE_KEY_MODEL.into(), serde_json::to_string(&t4).unwrap())]),
                )
                .unwrap(),
            ),
            (
                "my-l40s".to_string(),
                CustomProfile::from_data("gpu-profile-my-l40s", &BTreeMap::from([(PROFILE_KEY_UPSTREAM.into(), upstream.into())])).unwrap(),
            ),
        ]);
        let c = cfg(concat!(
            "nodePools:\n",
            "  builtin: {gpu: {profile: h100}}\n",
            "  overridden: {gpu: {profile: a100-80gb, overrides: {device_defaults: {memory: {total_bytes: 42949672960}}}}}\n",
            "  custom: {gpu: {profile: t4c}}\n",
            "  upstream: {gpu: {profile: my-l40s}}\n",
            "  legacy: {gpuProduct: Acme X1, gpuCount: 2, gpuMemory: 1000}\n",
            "  legacyknown: {gpuProduct: NVIDIA-A100-SXM4-40GB, gpuCount: 2, gpuMemory: 40000}\n",
        ));
        for (name, r) in resolve_all(&c, &profiles).unwrap() {
            // What the status-updater writes into the node's topology, and back.
            let p = topology_profile(Some(&r.profile_name), &r.product, r.memory_mib, &profiles).unwrap();
            assert_eq!(p, r.profile, "pool {name}");
        }
        assert_eq!(topology_profile(Some("t4c"), "", 0, &profiles).unwrap().power.idle_draw_mw, 12_345, "the custom profile");
        assert_eq!(topology_profile(None, "Tesla-K80", 0, &Profiles::new()).unwrap().name, "k80", "upstream topology: by product");
        assert!(topology_profile(Some("t4c"), "", 0, &Profiles::new()).is_err(), "a custom profile that is gone");
    }

    #[test]
    fn empty_pool_has_no_gpus() {
        let c = cfg("nodePools:\n  e: {}\n  h:\n    gpu: {profile: h100}\n");
        let r = resolve_all(&c, &Profiles::new()).unwrap();
        assert_eq!((r["e"].gpu_count, r["e"].product.as_str()), (0, ""));
    }

    #[test]
    fn node_labels_override_pool() {
        let pools = resolve_all(&ClusterConfig::default(), &Profiles::new()).unwrap();
        let d = &pools["default"];
        let r = for_node(d, Some("a100-80gb"), Some("8"), &Profiles::new()).unwrap();
        assert_eq!((r.profile_name.as_str(), r.gpu_count, r.product.as_str()), ("a100-80gb", 8, "NVIDIA A100-SXM4-80GB"));
        let r = for_node(d, Some("h100"), None, &Profiles::new()).unwrap();
        assert_eq!(r.gpu_count, 8);
        let r = for_node(d, None, Some("5"), &Profiles::new()).unwrap();
        assert_eq!((r.gpu_count, r.profile_name.as_str()), (5, "k80"));
        assert!(for_node(d, Some("nope"), None, &Profiles::new()).is_err());
        assert!(for_node(d, None, Some("x"), &Profiles::new()).is_err());
        assert!(for_node(d, None, Some("999"), &Profiles::new()).is_err());
    }
}
