//! The MIG manager's decisions, without I/O: what a node's MIG request (NVIDIA mig-manager's
//! label `nvidia.com/mig.config`, or Run:ai mig-faker's annotation `run.ai/mig.config`) comes to,
//! given the layouts already applied and the GPUs pods hold.
//!
//! The applied layouts live on the Node itself, in the annotation [`MIG_LAYOUT_ANNOTATION`]
//! (JSON: GPU index → `MigLayout`, GPUs with MIG off omitted). Keeping them on the Node lets the
//! manager write the new layouts, `nvidia.com/mig.config.state` and `run.ai/mig-mapping` in one
//! patch, so no reader ever sees a state label that disagrees with the layouts; every reader
//! (the KWOK DRA publisher, the status-updater's topology and capacity) takes them from there.
//!
//! Precedence: when a node carries both, the Run:ai annotation is applied (and the label
//! ignored). The annotation is a full placement a scheduler chose for pods it is about to bind to
//! exact MIG devices, and `run.ai/mig-mapping` must describe what is applied; applying the
//! label's layout instead would make the mapping lie to that scheduler.
//!
//! A request that is removed (label deleted, annotation deleted or empty) changes nothing, as
//! with NVIDIA's mig-manager: the layouts stay as applied and so does the state label.

use std::collections::BTreeMap;

use fakegpu_model::mig::{self, MigLayout};
use fakegpu_model::mig_parted::{self, ConfigState, PlanError};
pub use fakegpu_model::mig_parted::{MigConfigError, MigConfigs};
use fakegpu_model::SimulatedNode;
use serde::Serialize;

use crate::topology::NodeTopology;

/// NVIDIA mig-manager's input: the name of a configuration.
pub const MIG_CONFIG_LABEL: &str = "nvidia.com/mig.config";
/// NVIDIA mig-manager's output: `pending`, `success` or `failed`.
pub const MIG_CONFIG_STATE_LABEL: &str = "nvidia.com/mig.config.state";
/// Run:ai mig-faker's input: a mig-parted document (YAML) with `{name, position}` devices.
pub const RUNAI_MIG_CONFIG_ANNOTATION: &str = "run.ai/mig.config";
/// Run:ai mig-faker's output: base64 of `{"<gpu>":[{position, device_uuid, gpu_instance_id}]}`.
pub const RUNAI_MIG_MAPPING_ANNOTATION: &str = "run.ai/mig-mapping";
/// Ours: the applied per-GPU layouts (see the module docs).
pub const MIG_LAYOUT_ANNOTATION: &str = "fake-gpu-operator.run.ai/mig-layout";
/// Ours: why the last request failed; removed on success. It also tells a reconcile that the
/// Event for this failure was already emitted.
pub const MIG_REASON_ANNOTATION: &str = "fake-gpu-operator.run.ai/mig.config.reason";
/// Reason of the Warning Event emitted when a request fails.
pub const FAILED_EVENT_REASON: &str = "MigConfigFailed";
/// The configuration of a Run:ai annotation that names more than one.
pub const RUNAI_SELECTED: &str = "selected";

/// Key of the custom configurations in their ConfigMap (as NVIDIA's
/// `default-mig-parted-config`).
pub const CUSTOM_CONFIG_KEY: &str = "config.yaml";

/// The custom configurations: a mig-parted document (YAML).
pub fn parse_custom(text: &str) -> Result<MigConfigs, MigConfigError> {
    let doc: serde_json::Value = serde_yaml::from_str(text)
        .map_err(|e| MigConfigError::Format { at: CUSTOM_CONFIG_KEY.to_string(), reason: format!("not YAML: {e}") })?;
    MigConfigs::parse(&doc)
}

/// A node's GPUs and who holds them: from its per-node topology ConfigMap's data when there is
/// one (pool nodes), else from its labels `fake-gpu-operator.run.ai/profile` and `gpu-count`
/// (KWOK nodes outside the pools, as the KWOK DRA publisher reads them), with no holder known.
/// `Ok(None)`: a node without GPUs.
pub fn node_gpus(
    name: &str,
    labels: &BTreeMap<String, String>,
    topology: Option<&BTreeMap<String, String>>,
) -> Result<Option<(SimulatedNode, Holders)>, String> {
    if let Some(data) = topology {
        let Some(node) = crate::node_files::simulated_from_configmap(name, data)? else { return Ok(None) };
        let held =
            data.get(crate::topology::TOPOLOGY_KEY).and_then(|t| NodeTopology::from_yaml(t).ok()).map(|t| holders(&t)).unwrap_or_default();
        return Ok(Some((node, held)));
    }
    let Some(profile) = labels.get(crate::resolve::NODE_PROFILE_LABEL) else { return Ok(None) };
    let gpus = labels.get(crate::resolve::NODE_GPUS_LABEL).and_then(|c| c.parse().ok());
    let spec = fakegpu_model::NodeSpec::builtin(profile, gpus, name).map_err(|e| e.to_string())?;
    Ok(Some((SimulatedNode::new(spec), BTreeMap::new())))
}

/// What a node asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `nvidia.com/mig.config=<name>`: a built-in or custom named configuration.
    Named(String),
    /// `run.ai/mig.config`: the YAML document itself.
    RunAi(String),
}

/// The node's request; `runai`: whether the Run:ai annotation is honoured (the chart's
/// `migFaker.enabled`). Empty values are no request (mig-faker ignores them too).
pub fn request(labels: &BTreeMap<String, String>, annotations: &BTreeMap<String, String>, runai: bool) -> Option<Request> {
    let non_empty = |v: &String| !v.trim().is_empty();
    if runai {
        if let Some(doc) = annotations.get(RUNAI_MIG_CONFIG_ANNOTATION).filter(|v| non_empty(v)) {
            return Some(Request::RunAi(doc.clone()));
        }
    }
    labels.get(MIG_CONFIG_LABEL).filter(|v| non_empty(v)).map(|name| Request::Named(name.trim().to_string()))
}

/// Applied layouts by GPU index; a GPU not in the map has MIG off.
pub type Applied = BTreeMap<u32, MigLayout>;

/// Why the applied-layout annotation could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("annotation {MIG_LAYOUT_ANNOTATION} is not a map of GPU index to MIG layout: {0}")]
pub struct AppliedError(String);

/// The layouts applied to a node, from its annotations (none: every GPU whole).
pub fn applied(annotations: &BTreeMap<String, String>) -> Result<Applied, AppliedError> {
    annotations.get(MIG_LAYOUT_ANNOTATION).map_or(Ok(Applied::new()), |t| parse_applied(t))
}

/// The layouts of the annotation's value.
pub fn parse_applied(text: &str) -> Result<Applied, AppliedError> {
    serde_json::from_str(text).map_err(|e| AppliedError(e.to_string()))
}

/// Whether two sets of layouts partition every GPU alike (instances in any order).
pub fn same_applied(a: &Applied, b: &Applied) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|((ga, la), (gb, lb))| ga == gb && mig_parted::same_partition(la, lb))
}

/// The annotation value for `applied`; `None` (annotation removed) when every GPU is whole.
pub fn applied_value(applied: &Applied) -> Option<String> {
    let kept: Applied = applied.iter().filter(|(_, l)| **l != MigLayout::default()).map(|(g, l)| (*g, l.clone())).collect();
    (!kept.is_empty()).then(|| serde_json::to_string(&kept).expect("layouts serialise"))
}

/// GPU index → the pod holding it (`namespace/name`).
pub type Holders = BTreeMap<u32, String>;

/// Who holds each GPU of a topology, as `namespace/pod`: the pod it is allocated to, for a
/// shared GPU its first sharing pod, for a partitioned GPU the holder of its first held MIG
/// device. Free GPUs are absent.
pub fn holders(topology: &NodeTopology) -> Holders {
    let mut out = BTreeMap::new();
    for (i, g) in topology.gpus.iter().enumerate() {
        let s = &g.status;
        let holder = if !s.allocated_by.pod.is_empty() {
            Some(format!("{}/{}", s.allocated_by.namespace, s.allocated_by.pod))
        } else {
            s.shared_by
                .values()
                .chain(g.mig.iter().flatten().filter_map(|m| m.allocated_by.as_ref()))
                .next()
                .map(|c| format!("{}/{}", c.namespace, c.pod))
        };
        if let Some(h) = holder {
            out.insert(i as u32, h);
        }
    }
    out
}

/// A node as the manager sees it.
#[derive(Debug, Clone, Copy)]
pub struct NodeInput<'a> {
    pub labels: &'a BTreeMap<String, String>,
    pub annotations: &'a BTreeMap<String, String>,
    /// Its GPUs (profile, count, UUIDs), as the fake NVML resolves them.
    pub node: &'a SimulatedNode,
    pub holders: &'a Holders,
    /// The layouts applied now: on KWOK nodes read from the annotation ([`applied`]), on real
    /// nodes from the live state ([`live::applied_in_state`]).
    pub applied: &'a Result<Applied, AppliedError>,
}

/// The custom configurations (the mig-parted ConfigMap): none, parsed, or why not.
pub type Custom<'a> = Option<&'a Result<MigConfigs, MigConfigError>>;

/// The manager's options.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Honour `run.ai/mig.config` (the chart's `migFaker.enabled`).
    pub runai: bool,
}

/// What becomes of a node's request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The node asks for nothing: nothing is written.
    NoRequest,
    /// Applied (or already so): the layouts of every GPU afterwards, and for the Run:ai path the
    /// mapping annotation's value.
    Success { applied: Applied, mapping: Option<String> },
    /// Refused: nothing changes; the reason is reported.
    Failed { reason: String },
}

/// Decides a node's request.
pub fn decide(input: NodeInput<'_>, custom: Custom<'_>, opts: Options) -> Outcome {
    let Some(req) = request(input.labels, input.annotations, opts.runai) else { return Outcome::NoRequest };
    match decide_request(&req, input, custom) {
        Ok(o) => o,
        Err(reason) => Outcome::Failed { reason },
    }
}

fn decide_request(req: &Request, input: NodeInput<'_>, custom: Custom<'_>) -> Result<Outcome, String> {
    let profile = &input.node.spec.profile;
    let (configs, name) = match req {
        Request::Named(name) => {
            let builtin = MigConfigs::builtin(profile);
            let configs = match custom {
                None => builtin,
                Some(Ok(c)) => builtin.overlaid(c),
                Some(Err(e)) => return Err(format!("custom MIG configurations unreadable: {e}")),
            };
            (configs, name.clone())
        }
        Request::RunAi(text) => {
            let doc: serde_json::Value =
                serde_yaml::from_str(text).map_err(|e| format!("annotation {RUNAI_MIG_CONFIG_ANNOTATION} is not YAML: {e}"))?;
            let configs = MigConfigs::parse(&doc).map_err(|e| format!("annotation {RUNAI_MIG_CONFIG_ANNOTATION}: {e}"))?;
            let names: Vec<&str> = configs.names().collect();
            let name = match names.as_slice() {
                [only] => only.to_string(),
                _ if configs.get(RUNAI_SELECTED).is_some() => RUNAI_SELECTED.to_string(),
                _ => {
                    return Err(format!(
                        "annotation {RUNAI_MIG_CONFIG_ANNOTATION} names {} configurations and none is {RUNAI_SELECTED:?}",
                        names.len()
                    ))
                }
            };
            (configs, name)
        }
    };
    let mut now = input.applied.clone().map_err(|e| e.to_string())?;
    let gpu_count = input.node.gpus.len() as u32;
    let current: Vec<MigLayout> = (0..gpu_count).map(|g| now.get(&g).cloned().unwrap_or_default()).collect();
    let holder = |g: u32| input.holders.get(&g).cloned();
    let plan = mig_parted::plan(&configs, &name, profile, &current, holder).map_err(|e| match e {
        // The model's message names config, GPU and pod; the user also needs to know that the
        // refusal left every GPU as it was (no partial application).
        PlanError::Busy { .. } => format!("{e}; nothing was changed"),
        PlanError::Config(c) => c.to_string(),
    })?;
    for (gpu, layout) in plan.changes {
        now.insert(gpu, layout);
    }
    now.retain(|g, l| *g < gpu_count && *l != MigLayout::default());
    let mapping = matches!(req, Request::RunAi(_)).then(|| runai_mapping(input.node, &now));
    Ok(Outcome::Success { applied: now, mapping })
}

/// One entry of `run.ai/mig-mapping`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MappedDevice {
    /// First memory slice of the GPU instance.
    pub position: u32,
    /// The MIG UUID the fake NVML reports for it (upstream made random ones).
    pub device_uuid: String,
    /// The GPU instance id NVML reports (its node in the placement tree). Upstream wrote the GI
    /// profile id from a fixed table instead.
    pub gpu_instance_id: u32,
}

/// `run.ai/mig-mapping`: base64 (standard alphabet) of the JSON `{"<gpu>": [device, …]}` for
/// every GPU with MIG devices, in NVML order.
pub fn runai_mapping(node: &SimulatedNode, applied: &Applied) -> String {
    let mut map: BTreeMap<String, Vec<MappedDevice>> = BTreeMap::new();
    for g in &node.gpus {
        let Some(layout) = applied.get(&g.index) else { continue };
        let devices = mig::gpu_mig_devices(&node.spec.profile, &node.spec.node_name, g.index, &g.uuid, layout);
        if devices.is_empty() {
            continue;
        }
        map.insert(
            g.index.to_string(),
            devices
                .into_iter()
                .map(|d| MappedDevice { position: d.placement.start, device_uuid: d.uuid, gpu_instance_id: d.gpu_instance })
                .collect(),
        );
    }
    base64(serde_json::to_string(&map).expect("mapping serialises").as_bytes())
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// One write to a node: label and annotation values to set (`None`: remove), and the message
/// of a Warning Event to emit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeWrite {
    pub labels: BTreeMap<String, Option<String>>,
    pub annotations: BTreeMap<String, Option<String>>,
    pub event: Option<String>,
}

impl NodeWrite {
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.annotations.is_empty() && self.event.is_none()
    }

    /// The JSON merge patch of the node's metadata (the Event aside).
    pub fn patch(&self) -> serde_json::Value {
        serde_json::json!({"metadata": {"labels": self.labels, "annotations": self.annotations}})
    }
}

/// The write that brings the node to `outcome`, only of what differs (empty: nothing to do).
/// An Event is emitted once per distinct failure: the reason annotation remembers it.
pub fn write(labels: &BTreeMap<String, String>, annotations: &BTreeMap<String, String>, outcome: &Outcome) -> NodeWrite {
    let mut w = NodeWrite::default();
    let mut label = |k: &str, v: Option<String>| {
        if labels.get(k) != v.as_ref() {
            w.labels.insert(k.to_string(), v);
        }
    };
    let state = match outcome {
        Outcome::NoRequest => return NodeWrite::default(),
        Outcome::Success { .. } => ConfigState::Success,
        Outcome::Failed { .. } => ConfigState::Failed,
    };
    label(MIG_CONFIG_STATE_LABEL, Some(state.label_value().to_string()));
    let mut annotation = |k: &str, v: Option<String>| {
        if annotations.get(k) != v.as_ref() {
            w.annotations.insert(k.to_string(), v);
        }
    };
    match outcome {
        Outcome::NoRequest => {}
        Outcome::Success { applied, mapping } => {
            // An equal partition written in another order is not rewritten.
            if !self::applied(annotations).is_ok_and(|now| same_applied(&now, applied)) {
                annotation(MIG_LAYOUT_ANNOTATION, applied_value(applied));
            }
            // A mapping left from an earlier Run:ai request would describe devices the label's
            // layout may have replaced: it goes when the label path applies.
            annotation(RUNAI_MIG_MAPPING_ANNOTATION, mapping.clone());
            annotation(MIG_REASON_ANNOTATION, None);
        }
        Outcome::Failed { reason } => {
            annotation(MIG_REASON_ANNOTATION, Some(reason.clone()));
            if w.annotations.contains_key(MIG_REASON_ANNOTATION) {
                w.event = Some(reason.clone());
            }
        }
    }
    w
}

pub mod live;
pub mod shared_edge;
#[cfg(test)]
mod tests;
