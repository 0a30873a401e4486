//! The cluster side of `gpu.backend: mock`, without I/O: for every mock pool, the ConfigMap
//! and the DaemonSet `nvml-mock-<pool>` that lay the fake NVML as a host driver on the pool's
//! nodes (upstream's names, labels and config-hash annotation,
//! docs/mock-backend.md), and the actions that bring what exists to that.
//!
//! Level-triggered: [`actions`] compares the desired objects with every object that carries the
//! managed labels, so a pool switched to `fake`, a pool removed and a pool whose nodes are
//! selected by another label key (`nodePoolLabelKey` changed) are all reconciled by the same
//! comparison, whatever happened while the operator was down.
//!
//! The ConfigMap holds the pool's node config ([`crate::node_files::CONFIG_KEY`], the format
//! the fake NVML reads) without a node name: the node agent pins its own (`NODE_NAME`), so the
//! UUIDs on a node are those the status-updater computes for it.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::{json, Value};

use crate::config::{Backend, ClusterConfig};
use crate::resolve::ResolvedPool;

#[cfg(test)]
mod tests;

/// Upstream's managed labels.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "fake-gpu-operator";
pub const COMPONENT_LABEL: &str = "fake-gpu-operator/component";
pub const COMPONENT: &str = "nvml-mock";
pub const POOL_LABEL: &str = "fake-gpu-operator/pool";
/// Pod annotation: SHA-256 (hex) of the ConfigMap's config, so a changed config rolls the pods.
pub const CONFIG_HASH_ANNOTATION: &str = "fake-gpu-operator/config-hash";
/// Ours, on the DaemonSet: SHA-256 of the pod template we want, so that a template this
/// operator version changes (mounts, env) is rolled out even where the fields upstream
/// compares are equal.
pub const TEMPLATE_HASH_ANNOTATION: &str = "fake-gpu-operator/template-hash";
/// Objects are `nvml-mock-<pool>`.
pub const NAME_PREFIX: &str = "nvml-mock-";
/// The container's name (upstream's).
pub const CONTAINER: &str = "nvml-mock";
/// The agent's subcommand of the operator binary.
pub const AGENT_SUBCOMMAND: &str = "nvml-mock-agent";
/// Where the ConfigMap is mounted in the agent's pod.
pub const CONFIG_MOUNT: &str = "/etc/nvml-mock";
/// Where the host's file system is seen in the agent's pod: the host paths below, under it.
pub const HOST_MOUNT: &str = "/host";
/// Host paths the agent writes (upstream's): the driver root's parent, the CDI specs, and
/// `/run/nvidia` (the `driver` link and `validations/toolkit-ready` NVIDIA's operator waits for).
pub const HOST_NVML_MOCK: &str = "/var/lib/nvml-mock";
pub const HOST_CDI: &str = "/var/run/cdi";
pub const HOST_RUN_NVIDIA: &str = "/run/nvidia";
/// The operator image's built libraries and nvidia-smi (Dockerfile).
pub const IMAGE_LIB_DIR: &str = "/usr/local/lib/fake-gpu-operator";
pub const IMAGE_NVIDIA_SMI: &str = "/usr/local/bin/nvidia-smi";
/// The operator binary in the image.
pub const IMAGE_BINARY: &str = "/usr/local/bin/fake-gpu-operator";

/// The label selector of every object this module manages (all pools).
pub fn managed_selector() -> String {
    format!("{MANAGED_BY_LABEL}={MANAGED_BY},{COMPONENT_LABEL}={COMPONENT}")
}

/// What the objects are made with, besides the cluster config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub namespace: String,
    /// The agent's image: the operator's own (it holds the libraries and nvidia-smi).
    pub image: String,
    pub image_pull_policy: String,
    /// The topology ConfigMap the objects come from, as their owner: deleting it (`helm
    /// uninstall`) has the garbage collector delete them, and the agents' preStop clean the
    /// hosts, even when the status-updater is gone first.
    pub owner: Option<Owner>,
}

/// A ConfigMap in the objects' namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub name: String,
    pub uid: String,
}

fn owner_references(s: &Settings) -> Value {
    match &s.owner {
        Some(o) => json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": o.name, "uid": o.uid}]),
        None => Value::Null,
    }
}

/// The objects for every mock pool, by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Desired {
    pub config_maps: BTreeMap<String, ConfigMap>,
    pub daemon_sets: BTreeMap<String, DaemonSet>,
    /// Mock pools that get no objects, and why (logged by the adapter).
    pub skipped: Vec<(String, String)>,
}

/// What is there: the objects listed by [`managed_selector`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Actual {
    pub config_maps: Vec<ConfigMap>,
    pub daemon_sets: Vec<DaemonSet>,
}

/// One write. Updates carry the desired object with the actual one's `resourceVersion` (a
/// replace that fails on a concurrent change, retried by the next reconcile).
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    CreateConfigMap(ConfigMap),
    UpdateConfigMap(ConfigMap),
    DeleteConfigMap(String),
    CreateDaemonSet(DaemonSet),
    UpdateDaemonSet(DaemonSet),
    DeleteDaemonSet(String),
}

impl Action {
    /// `create ConfigMap nvml-mock-a` etc., for logs and tests.
    pub fn describe(&self) -> String {
        let name = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| m.name.clone().unwrap_or_default();
        match self {
            Action::CreateConfigMap(c) => format!("create ConfigMap {}", name(&c.metadata)),
            Action::UpdateConfigMap(c) => format!("update ConfigMap {}", name(&c.metadata)),
            Action::DeleteConfigMap(n) => format!("delete ConfigMap {n}"),
            Action::CreateDaemonSet(d) => format!("create DaemonSet {}", name(&d.metadata)),
            Action::UpdateDaemonSet(d) => format!("update DaemonSet {}", name(&d.metadata)),
            Action::DeleteDaemonSet(n) => format!("delete DaemonSet {n}"),
        }
    }
}

/// SHA-256 of `text`, lower-case hex.
pub fn sha256_hex(text: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `pool` can name Kubernetes objects (`nvml-mock-<pool>` must be a DNS subdomain; a
/// pool name is a label value, which may hold `_` and capitals).
fn nameable(pool: &str) -> bool {
    !pool.is_empty() && pool.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
}

/// The pool's node config as the ConfigMap carries it: the one the status-updater writes for a
/// node of the pool, without the node name.
pub fn pool_config_text(r: &ResolvedPool) -> String {
    let mut file = crate::index::config_file("", r);
    file.node = None;
    crate::node_files::config_text(&file)
}

/// The objects for every pool with `backend: mock` in `cfg` (`pools`: the resolved pools).
pub fn desired(cfg: &ClusterConfig, pools: &BTreeMap<String, ResolvedPool>, settings: &Settings) -> Desired {
    let mut out = Desired::default();
    for (name, pool) in cfg.node_pools.iter().filter(|(_, p)| p.backend == Backend::Mock) {
        let Some(r) = pools.get(name) else {
            out.skipped.push((name.clone(), "the pool did not resolve".into()));
            continue;
        };
        if !nameable(name) {
            out.skipped
                .push((name.clone(), format!("`{NAME_PREFIX}{name}` is not a valid object name (lower-case letters, digits, `-`, `.`)")));
            continue;
        }
        if r.gpu_count == 0 || pool.empty {
            out.skipped.push((name.clone(), "the pool has no GPUs".into()));
            continue;
        }
        let text = pool_config_text(r);
        let object = format!("{NAME_PREFIX}{name}");
        out.config_maps.insert(object.clone(), config_map(&object, name, &text, settings));
        out.daemon_sets.insert(object.clone(), daemon_set(&object, name, &cfg.node_pool_label_key, &sha256_hex(&text), settings));
    }
    out
}

fn labels(pool: &str) -> Value {
    json!({MANAGED_BY_LABEL: MANAGED_BY, COMPONENT_LABEL: COMPONENT, POOL_LABEL: pool})
}

fn config_map(name: &str, pool: &str, text: &str, s: &Settings) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": s.namespace, "labels": labels(pool), "ownerReferences": owner_references(s)},
        "data": {crate::node_files::CONFIG_KEY: text},
    }))
    .expect("ConfigMap shape")
}

/// The agent's command line: install (and wait), or with `--cleanup` remove what it laid.
pub fn agent_args(cleanup: bool) -> Vec<String> {
    let mut a = vec![
        AGENT_SUBCOMMAND.to_string(),
        "--config".into(),
        format!("{CONFIG_MOUNT}/{}", crate::node_files::CONFIG_KEY),
        "--host-root".into(),
        HOST_MOUNT.into(),
        "--lib-dir".into(),
        IMAGE_LIB_DIR.into(),
        "--nvidia-smi".into(),
        IMAGE_NVIDIA_SMI.into(),
    ];
    if cleanup {
        a.push("--cleanup".into());
    }
    a
}

fn daemon_set(name: &str, pool: &str, pool_label_key: &str, config_hash: &str, s: &Settings) -> DaemonSet {
    let host_path = |n: &str, path: &str| json!({"name": n, "hostPath": {"path": path, "type": "DirectoryOrCreate"}});
    let pre_stop: Vec<String> = std::iter::once(IMAGE_BINARY.to_string()).chain(agent_args(true)).collect();
    let template = json!({
        "metadata": {"labels": labels(pool), "annotations": {CONFIG_HASH_ANNOTATION: config_hash}},
        "spec": {
            "nodeSelector": {pool_label_key: pool},
            // The agent talks to no API server.
            "automountServiceAccountToken": false,
            // Time for the preStop cleanup.
            "terminationGracePeriodSeconds": 60,
            "containers": [{
                "name": CONTAINER,
                "image": s.image,
                "imagePullPolicy": s.image_pull_policy,
                "command": [IMAGE_BINARY],
                "args": agent_args(false),
                "env": [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
                // mknod under the driver root and writes to host paths; the image's user is not root.
                "securityContext": {"privileged": true, "runAsUser": 0, "runAsGroup": 0},
                "lifecycle": {"preStop": {"exec": {"command": pre_stop}}},
                "volumeMounts": [
                    {"name": "host-nvml-mock", "mountPath": format!("{HOST_MOUNT}{HOST_NVML_MOCK}")},
                    {"name": "config", "mountPath": CONFIG_MOUNT, "readOnly": true},
                    {"name": "host-cdi", "mountPath": format!("{HOST_MOUNT}{HOST_CDI}")},
                    {"name": "host-run-nvidia", "mountPath": format!("{HOST_MOUNT}{HOST_RUN_NVIDIA}")},
                ],
            }],
            "volumes": [
                host_path("host-nvml-mock", HOST_NVML_MOCK),
                {"name": "config", "configMap": {"name": name}},
                host_path("host-cdi", HOST_CDI),
                host_path("host-run-nvidia", HOST_RUN_NVIDIA),
            ],
        },
    });
    let template_hash = sha256_hex(&serde_json::to_string(&template).expect("template serialises"));
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": s.namespace, "labels": labels(pool),
                     "annotations": {TEMPLATE_HASH_ANNOTATION: template_hash}, "ownerReferences": owner_references(s)},
        "spec": {"selector": {"matchLabels": labels(pool)}, "template": template},
    }))
    .expect("DaemonSet shape")
}

fn config_hash(ds: &DaemonSet) -> Option<&String> {
    ds.spec.template.metadata.as_ref()?.annotations.as_ref()?.get(CONFIG_HASH_ANNOTATION)
}

fn template_hash(ds: &DaemonSet) -> Option<&String> {
    ds.metadata.annotations.as_ref()?.get(TEMPLATE_HASH_ANNOTATION)
}

/// Whether `actual` must be replaced by `want`: upstream's fields (the first container's image,
/// command, args and lifecycle; the config hash), the node selector (a relabelled pool), the
/// labels, the owner, and our template hash.
fn daemon_set_differs(actual: &DaemonSet, want: &DaemonSet) -> bool {
    let container = |d: &DaemonSet| d.spec.template.spec.as_ref().and_then(|s| s.containers.first().cloned());
    let selector = |d: &DaemonSet| d.spec.template.spec.as_ref().and_then(|s| s.node_selector.clone());
    let (a, w) = (container(actual), container(want));
    let fields = |c: &Option<k8s_openapi::api::core::v1::Container>| {
        c.as_ref().map(|c| (c.image.clone(), c.command.clone(), c.args.clone(), c.lifecycle.clone()))
    };
    fields(&a) != fields(&w)
        || config_hash(actual) != config_hash(want)
        || template_hash(actual) != template_hash(want)
        || selector(actual) != selector(want)
        || actual.metadata.labels != want.metadata.labels
        || actual.metadata.owner_references != want.metadata.owner_references
}

fn config_map_differs(actual: &ConfigMap, want: &ConfigMap) -> bool {
    actual.data != want.data
        || actual.metadata.labels != want.metadata.labels
        || actual.metadata.owner_references != want.metadata.owner_references
}

fn with_version<T: kube::Resource>(mut want: T, actual: &T) -> T {
    want.meta_mut().resource_version = actual.meta().resource_version.clone();
    want
}

/// The writes that bring `actual` to `desired`, in a safe order: ConfigMaps before the
/// DaemonSets that mount them; DaemonSets deleted before their ConfigMaps (a pod is never left
/// without its config).
pub fn actions(desired: &Desired, actual: &Actual) -> Vec<Action> {
    let name = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| m.name.clone().unwrap_or_default();
    let have_cm: BTreeMap<String, &ConfigMap> = actual.config_maps.iter().map(|c| (name(&c.metadata), c)).collect();
    let have_ds: BTreeMap<String, &DaemonSet> = actual.daemon_sets.iter().map(|d| (name(&d.metadata), d)).collect();
    let mut out = Vec::new();
    for (n, want) in &desired.config_maps {
        match have_cm.get(n) {
            None => out.push(Action::CreateConfigMap(want.clone())),
            Some(a) if config_map_differs(a, want) => out.push(Action::UpdateConfigMap(with_version(want.clone(), a))),
            Some(_) => {}
        }
    }
    for (n, want) in &desired.daemon_sets {
        match have_ds.get(n) {
            None => out.push(Action::CreateDaemonSet(want.clone())),
            Some(a) if daemon_set_differs(a, want) => out.push(Action::UpdateDaemonSet(with_version(want.clone(), a))),
            Some(_) => {}
        }
    }
    for n in have_ds.keys().filter(|n| !desired.daemon_sets.contains_key(*n)) {
        out.push(Action::DeleteDaemonSet(n.clone()));
    }
    for n in have_cm.keys().filter(|n| !desired.config_maps.contains_key(*n)) {
        out.push(Action::DeleteConfigMap(n.clone()));
    }
    out
}
