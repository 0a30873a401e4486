//! The cluster configuration: the `topology` ConfigMap (key `topology.yml`) in both upstream
//! formats — legacy (`gpuProduct`/`gpuCount`/`gpuMemory`/`otherDevices`) and new
//! (`gpu: {backend, profile, overrides}`) — detected as upstream detects them and normalised to
//! one shape. Pure: text in, [`ClusterConfig`] or a [`ConfigError`] naming the key out.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use thiserror::Error;

use crate::topology::OtherDevice;

pub const DEFAULT_POOL_LABEL_KEY: &str = "run.ai/simulated-gpu-node-pool";
/// Upstream chart default: `migStrategy: mixed`.
pub const DEFAULT_MIG_STRATEGY: &str = "mixed";
/// The GPU resource; never an "other device".
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";

/// A config that cannot be used. The message names the key.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    #[error("topology config is not valid YAML: {0}")]
    Yaml(String),
    #[error("topology config: `{key}`: {reason}")]
    Invalid { key: String, reason: String },
    #[error("topology config: pool `{pool}`: {reason}")]
    Pool { pool: String, reason: String },
}

fn invalid(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.into(), reason: reason.into() }
}

/// Which upstream schema a document used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Legacy,
    New,
}

/// `gpu.backend`: `fake` simulates GPUs; `mock` does too (the same topology, labels and
/// allocations) and also gets the per-pool node agent that lays the fake NVML on its nodes as a
/// host driver ([`crate::nvml_mock`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Fake,
    Mock,
}

/// One pool, normalised to the new format.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    pub backend: Backend,
    /// `gpu.profile`: a built-in profile name/alias or a custom profile ConfigMap's name.
    pub profile: Option<String>,
    /// `gpu.overrides` (upstream nvml-mock profile schema), deep-merged onto the profile.
    pub overrides: Value,
    /// Other extended resources, sorted by name, `nvidia.com/gpu` dropped.
    pub resources: Vec<OtherDevice>,
    /// The pool has no `gpu` block (Helm merges the legacy default pool into new-format
    /// documents): it resolves to 0 GPUs, as upstream.
    pub empty: bool,
    /// The `numa` block (new format): NodeResourceTopology for the pool's nodes.
    pub numa: Option<crate::nrt::NumaConfig>,
}

/// The whole cluster topology config.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    pub node_pool_label_key: String,
    pub mig_strategy: String,
    pub node_pools: BTreeMap<String, PoolConfig>,
    pub format: Format,
}

impl Default for ClusterConfig {
    /// Upstream chart defaults: pool `default`, 2 × Tesla-K80 (11441 MiB), `mixed`.
    fn default() -> Self {
        ClusterConfig::parse(
            "nodePoolLabelKey: run.ai/simulated-gpu-node-pool\nmigStrategy: mixed\nnodePools:\n  default:\n    gpuProduct: Tesla-K80\n    gpuCount: 2\n    gpuMemory: 11441\n",
        )
        .expect("default config parses")
    }
}

impl ClusterConfig {
    /// Parses a `topology.yml` document.
    pub fn parse(text: &str) -> Result<ClusterConfig, ConfigError> {
        let doc: Value = serde_yaml::from_str::<serde_yaml::Value>(text)
            .map_err(|e| ConfigError::Yaml(e.to_string()))
            .and_then(|v| serde_json::to_value(v).map_err(|e| ConfigError::Yaml(e.to_string())))?;
        let top = match doc {
            Value::Object(m) => m,
            Value::Null => serde_json::Map::new(),
            other => return Err(invalid("", format!("expected a mapping, found {}", kind(&other)))),
        };
        for key in top.keys() {
            if !["nodePoolLabelKey", "migStrategy", "nodePools", "gpuOperator"].contains(&key.as_str()) {
                return Err(invalid(key, "unknown key (known: nodePoolLabelKey, migStrategy, nodePools, gpuOperator)"));
            }
        }
        let node_pool_label_key = match top.get("nodePoolLabelKey") {
            None | Some(Value::Null) => DEFAULT_POOL_LABEL_KEY.to_string(),
            Some(Value::String(s)) if valid_label_key(s) => s.clone(),
            Some(other) => return Err(invalid("nodePoolLabelKey", format!("not a valid label key: {other}"))),
        };
        let mig_strategy = match top.get("migStrategy") {
            None | Some(Value::Null) => DEFAULT_MIG_STRATEGY.to_string(),
            Some(Value::String(s)) if ["none", "single", "mixed"].contains(&s.as_str()) => s.clone(),
            Some(other) => return Err(invalid("migStrategy", format!("{other} is not one of none, single, mixed"))),
        };
        let pools = match top.get("nodePools") {
            None | Some(Value::Null) => serde_json::Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(other) => return Err(invalid("nodePools", format!("expected a mapping, found {}", kind(other)))),
        };
        let format = detect_format(&top, &pools);
        let mut node_pools = BTreeMap::new();
        for (name, body) in &pools {
            if !valid_label_value(name) {
                return Err(ConfigError::Pool { pool: name.clone(), reason: "not a valid label value".into() });
            }
            let body = match body {
                Value::Object(m) => m,
                Value::Null => &serde_json::Map::new(),
                other => {
                    return Err(ConfigError::Pool { pool: name.clone(), reason: format!("expected a mapping, found {}", kind(other)) })
                }
            };
            let pool = match format {
                Format::Legacy => legacy_pool(name, body)?,
                Format::New => new_pool(name, body)?,
            };
            node_pools.insert(name.clone(), pool);
        }
        Ok(ClusterConfig { node_pool_label_key, mig_strategy, node_pools, format })
    }

    /// Upstream topology-server's `GET /topology` body: the legacy `ClusterTopology` with Go keys.
    /// New-format pools give their resolved product/count/memory (upstream gave zeros).
    pub fn to_go_json(&self, resolved: &BTreeMap<String, crate::resolve::ResolvedPool>) -> Value {
        let pools: serde_json::Map<String, Value> = self
            .node_pools
            .iter()
            .map(|(name, p)| {
                let r = resolved.get(name);
                let others: Vec<Value> = p.resources.iter().map(|d| json!({"Name": d.name, "Count": d.count})).collect();
                (
                    name.clone(),
                    json!({
                        "GpuCount": r.map_or(0, |r| r.gpu_count),
                        "GpuMemory": r.map_or(0, |r| r.memory_mib),
                        "GpuProduct": r.map_or("", |r| r.product.as_str()),
                        "OtherDevices": if others.is_empty() { Value::Null } else { Value::Array(others) },
                    }),
                )
            })
            .collect();
        json!({"NodePools": pools, "NodePoolLabelKey": self.node_pool_label_key, "MigStrategy": self.mig_strategy})
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// Upstream's detection: any pool with `gpu` → new; else any with `gpuProduct`/`gpuCount` →
/// legacy; else a top-level `gpuOperator` → new; else legacy.
fn detect_format(top: &serde_json::Map<String, Value>, pools: &serde_json::Map<String, Value>) -> Format {
    let has = |k: &str| pools.values().any(|p| p.get(k).is_some());
    if has("gpu") {
        Format::New
    } else if has("gpuProduct") || has("gpuCount") {
        Format::Legacy
    } else if top.contains_key("gpuOperator") {
        Format::New
    } else {
        Format::Legacy
    }
}

fn uint(pool: &str, key: &str, v: Option<&Value>) -> Result<Option<u64>, ConfigError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64()),
        Some(other) => {
            Err(ConfigError::Pool { pool: pool.into(), reason: format!("`{key}`: expected a whole number ≥ 0, found {other}") })
        }
    }
}

fn legacy_pool(name: &str, body: &serde_json::Map<String, Value>) -> Result<PoolConfig, ConfigError> {
    for key in body.keys() {
        if !["gpuProduct", "gpuCount", "gpuMemory", "otherDevices"].contains(&key.as_str()) {
            return Err(ConfigError::Pool {
                pool: name.into(),
                reason: format!("unknown key `{key}` (legacy format: gpuProduct, gpuCount, gpuMemory, otherDevices)"),
            });
        }
    }
    let product = match body.get("gpuProduct") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(ConfigError::Pool { pool: name.into(), reason: format!("`gpuProduct`: expected a string, found {other}") })
        }
    };
    let count = uint(name, "gpuCount", body.get("gpuCount"))?.unwrap_or(0);
    let memory = uint(name, "gpuMemory", body.get("gpuMemory"))?;
    let mut defaults = serde_json::Map::new();
    if !product.is_empty() {
        defaults.insert("name".into(), json!(product));
    }
    if let Some(mib) = memory {
        defaults.insert("memory".into(), json!({"total_bytes": mib * 1_048_576}));
    }
    let devices: Vec<Value> = (0..count).map(|_| json!({})).collect();
    let mut resources = Vec::new();
    match body.get("otherDevices") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let dname = item.get("name").and_then(Value::as_str).filter(|s| !s.is_empty());
                let dcount = item.get("count").and_then(Value::as_u64);
                match (dname, dcount) {
                    (Some(n), Some(c)) => resources.push(OtherDevice { name: n.into(), count: c }),
                    _ => {
                        return Err(ConfigError::Pool {
                            pool: name.into(),
                            reason: format!("`otherDevices[{i}]`: needs `name` (string) and `count` (whole number)"),
                        })
                    }
                }
            }
        }
        Some(other) => {
            return Err(ConfigError::Pool { pool: name.into(), reason: format!("`otherDevices`: expected a list, found {other}") })
        }
    }
    finish_resources(name, &mut resources)?;
    Ok(PoolConfig {
        backend: Backend::Fake,
        profile: None,
        overrides: json!({"device_defaults": defaults, "devices": devices}),
        resources,
        empty: false,
        numa: None,
    })
}

fn new_pool(name: &str, body: &serde_json::Map<String, Value>) -> Result<PoolConfig, ConfigError> {
    let err = |reason: String| ConfigError::Pool { pool: name.into(), reason };
    for key in body.keys() {
        // Legacy keys may appear in a new-format document through Helm's value merge; ignored as upstream.
        if !["gpu", "numa", "resources", "gpuProduct", "gpuCount", "gpuMemory", "otherDevices"].contains(&key.as_str()) {
            return Err(err(format!("unknown key `{key}` (new format: gpu, numa, resources)")));
        }
    }
    let mut resources = Vec::new();
    match body.get("resources") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let Some(map) = item.as_object().filter(|m| m.len() == 1) else {
                    return Err(err(format!("`resources[{i}]`: expected a single-key mapping `<resource>: <count>`")));
                };
                let (rname, rcount) = map.iter().next().expect("one entry");
                let Some(c) = rcount.as_u64() else {
                    return Err(err(format!("`resources[{i}]`: `{rname}`: expected a whole number, found {rcount}")));
                };
                if rname != GPU_RESOURCE {
                    resources.push(OtherDevice { name: rname.clone(), count: c });
                }
            }
        }
        Some(other) => return Err(err(format!("`resources`: expected a list, found {}", kind(other)))),
    }
    finish_resources(name, &mut resources)?;
    let numa = match body.get("numa") {
        None | Some(Value::Null) => None,
        Some(v) => Some(crate::nrt::NumaConfig::parse(v).map_err(err)?),
    };
    let Some(gpu) = body.get("gpu") else {
        return Ok(PoolConfig { backend: Backend::Fake, profile: None, overrides: json!({}), resources, empty: true, numa });
    };
    let gpu = gpu.as_object().ok_or_else(|| err(format!("`gpu`: expected a mapping, found {}", kind(gpu))))?;
    for key in gpu.keys() {
        if !["backend", "profile", "overrides"].contains(&key.as_str()) {
            return Err(err(format!("`gpu.{key}`: unknown key (known: backend, profile, overrides)")));
        }
    }
    let backend = match gpu.get("backend").and_then(Value::as_str) {
        None | Some("fake") | Some("") => Backend::Fake,
        Some("mock") => Backend::Mock,
        Some(other) => return Err(err(format!("`gpu.backend`: `{other}` is not one of fake, mock"))),
    };
    let profile = match gpu.get("profile") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => return Err(err(format!("`gpu.profile`: expected a string, found {other}"))),
    };
    let overrides = match gpu.get("overrides") {
        None | Some(Value::Null) => json!({}),
        Some(v @ Value::Object(_)) => v.clone(),
        Some(other) => return Err(err(format!("`gpu.overrides`: expected a mapping, found {}", kind(other)))),
    };
    if profile.is_none() && overrides.pointer("/device_defaults/name").and_then(Value::as_str).is_none_or(str::is_empty) {
        return Err(err("`gpu` needs `profile` or `overrides.device_defaults.name`".into()));
    }
    Ok(PoolConfig { backend, profile, overrides, resources, empty: false, numa })
}

fn finish_resources(pool: &str, resources: &mut [OtherDevice]) -> Result<(), ConfigError> {
    resources.sort();
    for w in resources.windows(2) {
        if w[0].name == w[1].name {
            return Err(ConfigError::Pool { pool: pool.into(), reason: format!("resource `{}` listed twice", w[0].name) });
        }
    }
    if let Some(bad) = resources.iter().find(|r| !valid_resource_name(&r.name)) {
        return Err(ConfigError::Pool { pool: pool.into(), reason: format!("`{}` is not a valid extended resource name", bad.name) });
    }
    Ok(())
}

/// Deep merge as upstream's profile merge: maps recursively, scalars and lists replaced.
pub fn deep_merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                deep_merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, o) => *b = o.clone(),
    }
}

fn dns_label(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// A Kubernetes label key: `[prefix/]name`, prefix a DNS subdomain ≤ 253, name ≤ 63.
pub fn valid_label_key(k: &str) -> bool {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    dns_label(name, 63) && prefix.is_none_or(|p| p.len() <= 253 && p.split('.').all(|l| dns_label(l, 63) && !l.contains('_')))
}

/// A Kubernetes label value: empty, or ≤ 63 of `[A-Za-z0-9._-]` starting and ending alphanumeric.
pub fn valid_label_value(v: &str) -> bool {
    v.is_empty() || dns_label(v, 63)
}

/// An extended resource name must be a domain-prefixed label key.
fn valid_resource_name(n: &str) -> bool {
    n.contains('/') && valid_label_key(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_upstream_chart_default() {
        let c = ClusterConfig::default();
        assert_eq!(c.node_pool_label_key, DEFAULT_POOL_LABEL_KEY);
        assert_eq!(c.mig_strategy, "mixed");
        assert_eq!(c.format, Format::Legacy);
        let p = &c.node_pools["default"];
        assert_eq!(p.overrides["device_defaults"]["name"], "Tesla-K80");
        assert_eq!(p.overrides["device_defaults"]["memory"]["total_bytes"], 11441u64 * 1048576);
        assert_eq!(p.overrides["devices"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn legacy_with_other_devices_sorted() {
        let c = ClusterConfig::parse(
            "nodePoolLabelKey: example.com/pool\nmigStrategy: none\nnodePools:\n  a:\n    gpuProduct: NVIDIA-A100-SXM4-40GB\n    gpuCount: 8\n    gpuMemory: 40960\n    otherDevices:\n      - {name: nvidia.com/mig-3g.20gb, count: 2}\n      - {name: nvidia.com/mig-1g.10gb, count: 7}\n",
        )
        .unwrap();
        assert_eq!(c.node_pool_label_key, "example.com/pool");
        assert_eq!(c.mig_strategy, "none");
        let names: Vec<_> = c.node_pools["a"].resources.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["nvidia.com/mig-1g.10gb", "nvidia.com/mig-3g.20gb"]);
    }

    #[test]
    fn new_format_with_profile_and_overrides() {
        let c = ClusterConfig::parse(
            "nodePools:\n  h:\n    gpu:\n      backend: fake\n      profile: h100\n      overrides:\n        device_count: 4\n    resources:\n      - nvidia.com/gpu: 9\n      - example.com/nic: 2\n  leftover:\n    gpuProduct: Tesla-K80\n",
        )
        .unwrap();
        assert_eq!(c.format, Format::New);
        let h = &c.node_pools["h"];
        assert_eq!(h.profile.as_deref(), Some("h100"));
        assert_eq!(h.overrides["device_count"], 4);
        assert_eq!(h.resources, vec![OtherDevice { name: "example.com/nic".into(), count: 2 }]);
        // Helm's merged legacy default pool: no gpu block → empty pool, not an error.
        assert!(c.node_pools["leftover"].empty);
    }

    #[test]
    fn gpu_operator_key_means_new_format() {
        let c = ClusterConfig::parse("gpuOperator: {version: x}\nnodePools:\n  p: {}\n").unwrap();
        assert_eq!(c.format, Format::New);
        assert!(c.node_pools["p"].empty);
        assert_eq!(ClusterConfig::parse("nodePools:\n  p: {}\n").unwrap().format, Format::Legacy);
        assert_eq!(ClusterConfig::parse("").unwrap().node_pools.len(), 0);
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("nodePools: [", "not valid YAML"),
            ("- a\n- b\n", "expected a mapping"),
            ("nodePool: {}\n", "`nodePool`: unknown key"),
            ("migStrategy: some\n", "`migStrategy`"),
            ("nodePoolLabelKey: 'bad key'\n", "`nodePoolLabelKey`"),
            ("nodePools: 3\n", "`nodePools`"),
            ("nodePools:\n  a:\n    gpuCount: -1\n", "`gpuCount`"),
            ("nodePools:\n  a:\n    gpuCount: two\n", "`gpuCount`"),
            ("nodePools:\n  a:\n    gpuProduct: [x]\n", "`gpuProduct`"),
            ("nodePools:\n  a:\n    gpuCount: 1\n    gpuMemry: 1\n", "unknown key `gpuMemry`"),
            ("nodePools:\n  a:\n    gpuCount: 1\n    otherDevices: [{name: x.com/y}]\n", "otherDevices[0]"),
            ("nodePools:\n  a:\n    gpuCount: 1\n    otherDevices: [{name: bad, count: 1}]\n", "valid extended resource"),
            ("nodePools:\n  a:\n    gpu: {profile: h100, backend: docker}\n", "`gpu.backend`"),
            ("nodePools:\n  a:\n    gpu: {profile: h100, extra: 1}\n", "`gpu.extra`"),
            ("nodePools:\n  a:\n    gpu: {backend: fake}\n", "needs `profile`"),
            ("nodePools:\n  a:\n    gpu: {profile: h100, overrides: 3}\n", "`gpu.overrides`"),
            ("nodePools:\n  a:\n    gpu: {profile: h100}\n    resources: [{x.com/a: 1, x.com/b: 2}]\n", "resources[0]"),
            ("nodePools:\n  a:\n    gpu: {profile: h100}\n    resources: [{x.com/a: 1}, {x.com/a: 2}]\n", "listed twice"),
            ("nodePools:\n  'bad pool':\n    gpuCount: 1\n", "valid label value"),
        ];
        for (text, want) in cases {
            let e = ClusterConfig::parse(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn deep_merge_replaces_lists_and_scalars() {
        let mut base = json!({"a": {"b": 1, "c": [1, 2]}, "d": "x"});
        deep_merge(&mut base, &json!({"a": {"c": [3], "e": true}, "d": "y"}));
        assert_eq!(base, json!({"a": {"b": 1, "c": [3], "e": true}, "d": "y"}));
    }

    #[test]
    fn label_key_validation() {
        for ok in ["run.ai/simulated-gpu-node-pool", "pool", "a.b-c/d_e.f"] {
            assert!(valid_label_key(ok), "{ok}");
        }
        for bad in ["", "/x", "a b", "x/", "-x", "a_b.com/x", &"x".repeat(64)] {
            assert!(!valid_label_key(bad), "{bad}");
        }
    }
}
