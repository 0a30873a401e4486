//! Named MIG configurations: NVIDIA mig-parted's file format (`version: v1`, `mig-configs`),
//! which NVIDIA's mig-manager reads for the node label `nvidia.com/mig.config`, and the variant
//! Run:ai's mig-faker reads from the node annotation `run.ai/mig.config` (mig-devices as a list
//! of `{name, position}` instead of a `name: count` map).
//!
//! A configuration turns into each GPU's [`MigLayout`] through the same creation rules NVML
//! applies ([`crate::mig`]), so a node labelled `all-1g.10gb` holds exactly the instances
//! `nvidia-smi mig -cgi … -C` would have made. [`plan`] adds what the mig-manager decides on a
//! node: which GPUs change, and a refusal, with its reason, when a GPU that would change holds
//! running work (nothing is repartitioned under a workload).
//!
//! Parsing takes a `serde_json::Value` so that callers may read YAML or JSON; every error names
//! the configuration, entry and key at fault.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::mig::{self, GiProfile, MigError, MigLayout};
use crate::profile::Profile;
use crate::state::{NodeState, Now, StateError};
use crate::NodeSpec;

/// Which GPUs of a node an entry applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Devices {
    All,
    Indices(BTreeSet<u32>),
}

/// One MIG device an entry asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MigDeviceRequest {
    /// `name: count` (mig-parted): where the driver puts them.
    Count { name: String, count: u32 },
    /// `{name, position, size}` (mig-faker): at memory slice `position`; `size`, when given,
    /// must be the profile's memory slices.
    At { name: String, position: u32, size: Option<u32> },
}

/// One entry of a named configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    pub devices: Devices,
    /// PCI device ids (`0x233010DE`) the entry is limited to; empty for every board.
    pub device_filter: Vec<u32>,
    pub mig_enabled: bool,
    pub mig_devices: Vec<MigDeviceRequest>,
}

/// A set of named configurations (a mig-parted file, or the built-in one of a board).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigConfigs {
    configs: BTreeMap<String, Vec<ConfigEntry>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MigConfigError {
    #[error("MIG configuration file: {at}: {reason}")]
    Format { at: String, reason: String },
    #[error("no MIG configuration named {name:?} (known: {known})")]
    Unknown { name: String, known: String },
    #[error("MIG configuration {config:?}, GPU {gpu}: {reason}")]
    Apply { config: String, gpu: u32, reason: String },
}

fn format_error(at: impl Into<String>, reason: impl Into<String>) -> MigConfigError {
    MigConfigError::Format { at: at.into(), reason: reason.into() }
}

/// The NVML-style layout of one GPU with MIG off.
fn disabled() -> MigLayout {
    MigLayout::default()
}

impl MigConfigs {
    /// Reads a mig-parted document: `{version: v1, mig-configs: {<name>: [entry, …]}}`.
    pub fn parse(doc: &Value) -> Result<Self, MigConfigError> {
        let top = doc.as_object().ok_or_else(|| format_error("document", "must be a mapping"))?;
        match top.get("version").and_then(Value::as_str) {
            Some("v1") => {}
            Some(other) => return Err(format_error("version", format!("{other:?} is not supported (only v1)"))),
            None => return Err(format_error("version", "missing (expected v1)")),
        }
        if let Some(key) = top.keys().find(|k| !matches!(k.as_str(), "version" | "mig-configs")) {
            return Err(format_error(key.as_str(), "unknown key"));
        }
        let named =
            top.get("mig-configs").and_then(Value::as_object).ok_or_else(|| format_error("mig-configs", "missing or not a mapping"))?;
        let mut configs = BTreeMap::new();
        for (name, entries) in named {
            let at = format!("mig-configs.{name}");
            let list = entries.as_array().ok_or_else(|| format_error(&at, "must be a list of entries"))?;
            if list.is_empty() {
                return Err(format_error(&at, "has no entries"));
            }
            let parsed = list.iter().enumerate().map(|(i, e)| parse_entry(e, &format!("{at}[{i}]"))).collect::<Result<Vec<_>, _>>()?;
            configs.insert(name.clone(), parsed);
        }
        if configs.is_empty() {
            return Err(format_error("mig-configs", "names no configuration"));
        }
        Ok(MigConfigs { configs })
    }

    /// The configurations NVIDIA's default mig-parted file gives this board: `all-disabled`,
    /// `all-enabled` (MIG on, no instances), `all-<profile>` for every GPU-instance profile
    /// (`+me` spelled `.me` in the name) with as many instances as the board takes, and
    /// `all-balanced` (two 1-slice, one 2-slice and one 3-slice instance). A board without MIG
    /// has `all-disabled` only.
    pub fn builtin(profile: &Profile) -> Self {
        let all = |enabled: bool, devices: Vec<MigDeviceRequest>| {
            vec![ConfigEntry { devices: Devices::All, device_filter: Vec::new(), mig_enabled: enabled, mig_devices: devices }]
        };
        let mut configs = BTreeMap::new();
        configs.insert("all-disabled".to_string(), all(false, Vec::new()));
        let Some(gis) = mig::gi_profiles(profile) else {
            return MigConfigs { configs };
        };
        configs.insert("all-enabled".to_string(), all(true, Vec::new()));
        for gi in &gis {
            let request = MigDeviceRequest::Count { name: gi.name.clone(), count: gi.instance_count };
            configs.insert(format!("all-{}", gi.name.replace('+', ".")), all(true, vec![request]));
        }
        let by_index = |index: u32| gis.iter().find(|g| g.index == index).map(|g| g.name.clone());
        if let (Some(one), Some(two), Some(three)) =
            (by_index(mig::GI_PROFILE_1_SLICE), by_index(mig::GI_PROFILE_2_SLICE), by_index(mig::GI_PROFILE_3_SLICE))
        {
            let balanced = vec![
                MigDeviceRequest::Count { name: one, count: 2 },
                MigDeviceRequest::Count { name: two, count: 1 },
                MigDeviceRequest::Count { name: three, count: 1 },
            ];
            configs.insert("all-balanced".to_string(), all(true, balanced));
        }
        MigConfigs { configs }
    }

    /// These configurations with `other`'s added; a name both have takes `other`'s.
    pub fn overlaid(mut self, other: &MigConfigs) -> Self {
        self.configs.extend(other.configs.iter().map(|(k, v)| (k.clone(), v.clone())));
        self
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.configs.keys().map(String::as_str)
    }

    pub fn get(&self, name: &str) -> Option<&[ConfigEntry]> {
        self.configs.get(name).map(Vec::as_slice)
    }

    /// The layout each of the node's `gpu_count` GPUs gets under configuration `name`; `None`
    /// for a GPU no entry selects (left as it is, as mig-parted does). The first entry that
    /// selects a GPU decides it.
    pub fn layouts(&self, name: &str, profile: &Profile, gpu_count: u32) -> Result<Vec<Option<MigLayout>>, MigConfigError> {
        let entries = self
            .configs
            .get(name)
            .ok_or_else(|| MigConfigError::Unknown { name: name.to_string(), known: self.names().collect::<Vec<_>>().join(", ") })?;
        let device_id = profile.pci.device_id.0;
        (0..gpu_count)
            .map(|gpu| {
                let Some(entry) = entries.iter().find(|e| e.selects(gpu, device_id)) else {
                    return Ok(None);
                };
                entry.layout(profile).map(Some).map_err(|reason| MigConfigError::Apply { config: name.to_string(), gpu, reason })
            })
            .collect()
    }
}

impl ConfigEntry {
    fn selects(&self, gpu: u32, device_id: u32) -> bool {
        let by_index = match &self.devices {
            Devices::All => true,
            Devices::Indices(set) => set.contains(&gpu),
        };
        by_index && (self.device_filter.is_empty() || self.device_filter.contains(&device_id))
    }

    /// The entry's layout on one GPU of `profile`: GPU instances created largest first where
    /// the driver puts them (so that every combination that fits is found), each with one
    /// compute instance over all of its slices.
    fn layout(&self, profile: &Profile) -> Result<MigLayout, String> {
        if !self.mig_enabled {
            if !self.mig_devices.is_empty() {
                return Err("mig-devices given with mig-enabled: false".into());
            }
            return Ok(disabled());
        }
        let gis = mig::gi_profiles(profile).ok_or_else(|| format!("{} does not support MIG", profile.product_name))?;
        let find = |name: &str| -> Result<GiProfile, String> {
            gis.iter().find(|g| g.name == name).cloned().ok_or_else(|| {
                let known: Vec<&str> = gis.iter().map(|g| g.name.as_str()).collect();
                format!("{name:?} is not a MIG device of {} (it has {})", profile.product_name, known.join(", "))
            })
        };
        let mut wanted: Vec<(GiProfile, Option<u32>)> = Vec::new();
        for request in &self.mig_devices {
            match request {
                MigDeviceRequest::Count { name, count } => {
                    let gi = find(name)?;
                    wanted.extend(std::iter::repeat_n((gi, None), *count as usize));
                }
                MigDeviceRequest::At { name, position, size } => {
                    let gi = find(name)?;
                    if let Some(size) = size.filter(|s| *s != gi.memory_slices) {
                        return Err(format!(
                            "{name} at position {position}: size {size}, but {name} takes {} memory slices",
                            gi.memory_slices
                        ));
                    }
                    wanted.push((gi, Some(*position)));
                }
            }
        }
        // Fixed positions first, then the largest instances: a first fit from the top in that
        // order places every set of instances the board can hold.
        wanted.sort_by_key(|(gi, at)| (at.is_none(), std::cmp::Reverse((gi.memory_slices, gi.compute_slices))));
        let mut layout = MigLayout { current: true, pending: true, gpu_instances: Vec::new() };
        for (gi, at) in wanted {
            let id = mig::create_gpu_instance(profile, &mut layout, gi.index, at).map_err(|e| describe(&gi, at, e))?;
            let full = mig::ci_profiles(&gi)
                .into_iter()
                .find(|c| c.slices == gi.compute_slices)
                .ok_or_else(|| format!("{} has no full-size compute instance", gi.name))?;
            mig::create_compute_instance(profile, &mut layout, id, full.index, None).map_err(|e| describe(&gi, at, e))?;
        }
        Ok(layout)
    }
}

fn describe(gi: &GiProfile, at: Option<u32>, error: MigError) -> String {
    match (error, at) {
        (MigError::NoCapacity(_), _) => format!("the instances asked for do not fit: no room left for {}", gi.name),
        (error, Some(position)) => format!("{} at position {position}: {error}", gi.name),
        (error, None) => format!("{}: {error}", gi.name),
    }
}

fn parse_entry(entry: &Value, at: &str) -> Result<ConfigEntry, MigConfigError> {
    let map = entry.as_object().ok_or_else(|| format_error(at, "must be a mapping"))?;
    if let Some(key) = map.keys().find(|k| !matches!(k.as_str(), "devices" | "device-filter" | "mig-enabled" | "mig-devices")) {
        return Err(format_error(format!("{at}.{key}"), "unknown key"));
    }
    let devices = match map.get("devices") {
        Some(Value::String(s)) if s == "all" => Devices::All,
        Some(Value::Array(list)) => {
            let indices = list
                .iter()
                .map(|v| gpu_index(v).ok_or_else(|| format_error(format!("{at}.devices"), format!("{v} is not a GPU index"))))
                .collect::<Result<BTreeSet<u32>, _>>()?;
            if indices.is_empty() {
                return Err(format_error(format!("{at}.devices"), "selects no GPU"));
            }
            Devices::Indices(indices)
        }
        Some(other) => return Err(format_error(format!("{at}.devices"), format!("{other} is neither \"all\" nor a list of GPU indices"))),
        None => return Err(format_error(format!("{at}.devices"), "missing")),
    };
    let device_filter = match map.get("device-filter") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![device_id(s).ok_or_else(|| bad_filter(at, s))?],
        Some(Value::Array(list)) => {
            list.iter().map(|v| v.as_str().and_then(device_id).ok_or_else(|| bad_filter(at, &v.to_string()))).collect::<Result<_, _>>()?
        }
        Some(other) => return Err(bad_filter(at, &other.to_string())),
    };
    let mig_enabled = map
        .get("mig-enabled")
        .and_then(Value::as_bool)
        .ok_or_else(|| format_error(format!("{at}.mig-enabled"), "missing or not true/false"))?;
    let mig_devices = match map.get("mig-devices") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(counts)) => counts
            .iter()
            .map(|(name, count)| {
                let count = count
                    .as_u64()
                    .filter(|c| *c <= u64::from(mig::MAX_MIG_DEVICES))
                    .ok_or_else(|| format_error(format!("{at}.mig-devices.{name}"), format!("{count} is not a count from 0 to 7")))?;
                Ok(MigDeviceRequest::Count { name: name.clone(), count: count as u32 })
            })
            .collect::<Result<_, MigConfigError>>()?,
        Some(Value::Array(placed)) => {
            placed.iter().enumerate().map(|(i, d)| parse_placed(d, &format!("{at}.mig-devices[{i}]"))).collect::<Result<_, _>>()?
        }
        Some(other) => {
            return Err(format_error(format!("{at}.mig-devices"), format!("{other} is neither a name: count mapping nor a list")))
        }
    };
    Ok(ConfigEntry { devices, device_filter, mig_enabled, mig_devices })
}

/// mig-faker's `{name, position, size}`; `size` is implied by the profile and checked if given.
fn parse_placed(device: &Value, at: &str) -> Result<MigDeviceRequest, MigConfigError> {
    let map = device.as_object().ok_or_else(|| format_error(at, "must be a mapping with name and position"))?;
    if let Some(key) = map.keys().find(|k| !matches!(k.as_str(), "name" | "position" | "size")) {
        return Err(format_error(format!("{at}.{key}"), "unknown key"));
    }
    let name = map.get("name").and_then(Value::as_str).ok_or_else(|| format_error(format!("{at}.name"), "missing or not text"))?;
    let position = map
        .get("position")
        .and_then(Value::as_u64)
        .filter(|p| *p < u64::from(mig::MEMORY_SLICES))
        .ok_or_else(|| format_error(format!("{at}.position"), "missing or not a memory slice from 0 to 7"))?;
    let size = match map.get("size") {
        None => None,
        Some(v) => Some(
            v.as_u64()
                .and_then(|s| u32::try_from(s).ok())
                .ok_or_else(|| format_error(format!("{at}.size"), format!("{v} is not a number of slices")))?,
        ),
    };
    Ok(MigDeviceRequest::At { name: name.to_string(), position: position as u32, size })
}

/// A GPU index as YAML gives it: a number, or a quoted number (`["0"]` in mig-faker's files).
fn gpu_index(v: &Value) -> Option<u32> {
    match v {
        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => s.parse().ok(),
        _ => None,
    }
}

fn device_id(s: &str) -> Option<u32> {
    let hex = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X"))?;
    (hex.len() == 8).then(|| u32::from_str_radix(hex, 16).ok()).flatten()
}

fn bad_filter(at: &str, value: &str) -> MigConfigError {
    format_error(format!("{at}.device-filter"), format!("{value} is not a PCI device id like 0x233010DE"))
}

/// The value of `nvidia.com/mig.config.state` NVIDIA's mig-manager writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigState {
    Pending,
    Success,
    Failed,
}

impl ConfigState {
    pub fn label_value(self) -> &'static str {
        match self {
            ConfigState::Pending => "pending",
            ConfigState::Success => "success",
            ConfigState::Failed => "failed",
        }
    }
}

/// What applying a configuration to a node comes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// (GPU index, its new layout) for every GPU that changes.
    pub changes: Vec<(u32, MigLayout)>,
}

/// Why a configuration is not applied; the node keeps its layouts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Config(#[from] MigConfigError),
    #[error("MIG configuration {config:?} would repartition GPU {gpu}, which is in use by {holder}")]
    Busy { config: String, gpu: u32, holder: String },
}

/// Decides the change configuration `name` makes to a node whose GPUs have `current` layouts;
/// `holder(gpu)` names what runs on a GPU (a pod), if anything. A GPU whose layout would change
/// while something holds it refuses the whole configuration: nothing is drained in silence and
/// no node is left half-applied.
pub fn plan(
    configs: &MigConfigs,
    name: &str,
    profile: &Profile,
    current: &[MigLayout],
    holder: impl Fn(u32) -> Option<String>,
) -> Result<Plan, PlanError> {
    let targets = configs.layouts(name, profile, current.len() as u32)?;
    let mut changes = Vec::new();
    for (gpu, (now, target)) in current.iter().zip(targets).enumerate() {
        let gpu = gpu as u32;
        let Some(target) = target else { continue };
        if same_partition(now, &target) {
            continue;
        }
        if let Some(holder) = holder(gpu) {
            return Err(PlanError::Busy { config: name.to_string(), gpu, holder });
        }
        changes.push((gpu, target));
    }
    Ok(Plan { changes })
}

/// Two layouts partition a GPU alike: same mode and the same instances (order aside).
pub fn same_partition(a: &MigLayout, b: &MigLayout) -> bool {
    let key = |l: &MigLayout| {
        let mut gis: Vec<_> = l
            .gpu_instances
            .iter()
            .map(|g| {
                let mut cis: Vec<_> = g.compute_instances.iter().map(|c| (c.profile, c.placement.start)).collect();
                cis.sort_unstable();
                (g.profile, g.placement.start, cis)
            })
            .collect();
        gis.sort();
        (l.current, gis)
    };
    key(a) == key(b)
}

/// What runs on each GPU of a live state, by index: `process <pid> (<name>)` for its first
/// process (and how many more). A GPU with work on it is not repartitioned, whoever put the work
/// there (a pod's CUDA process, one an operator simulates).
pub fn state_holders(state: &NodeState, gpu_count: u32) -> BTreeMap<u32, String> {
    (0..gpu_count)
        .filter_map(|g| {
            let procs = &state.gpu(g)?.processes;
            let p = procs.first()?;
            let more = match procs.len() - 1 {
                0 => String::new(),
                n => format!(" and {n} more"),
            };
            Some((g, format!("process {} ({}){more}", p.pid, p.name)))
        })
        .collect()
}

/// Why layouts could not be written to a live state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    #[error("GPU {gpu} is in use by {holder}")]
    Busy { gpu: u32, holder: String },
    #[error(transparent)]
    State(#[from] StateError),
}

/// Writes `target` (GPU index → layout; a GPU absent has MIG off) into a live state; returns the GPUs whose partition changed. Refuses,
/// changing nothing, when one of those runs a process: callers plan from an earlier read, and
/// the state file's lock is held only around this.
pub fn apply_layouts(state: &mut NodeState, spec: &NodeSpec, target: &BTreeMap<u32, MigLayout>, now: Now) -> Result<Vec<u32>, ApplyError> {
    let whole = MigLayout::default();
    let changed: Vec<u32> = (0..spec.gpu_count)
        .filter(|g| {
            let have = state.gpu(*g).map_or(&whole, |s| &s.mig);
            !same_partition(have, target.get(g).unwrap_or(&whole))
        })
        .collect();
    let busy = state_holders(state, spec.gpu_count);
    if let Some((gpu, holder)) = changed.iter().find_map(|g| busy.get(g).map(|h| (*g, h.clone()))) {
        return Err(ApplyError::Busy { gpu, holder });
    }
    for g in &changed {
        state.gpu_mut(spec, *g, now)?.mig = target.get(g).cloned().unwrap_or_default();
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::find_builtin;
    use serde_json::json;

    fn board(name: &str) -> Profile {
        find_builtin(name).unwrap().clone()
    }

    /// (GI profile name, placement start) of every instance, top of the GPU first.
    fn instances(profile: &Profile, layout: &MigLayout) -> Vec<(String, u32)> {
        let mut out: Vec<_> =
            layout.gpu_instances.iter().map(|g| (mig::gi_profile(profile, g.profile).unwrap().name, g.placement.start)).collect();
        out.sort_by_key(|(_, start)| std::cmp::Reverse(*start));
        out
    }

    #[test]
    fn builtin_all_profile_configs_fill_the_gpu_like_nvidia_smi() {
        let h100 = board("h100");
        let configs = MigConfigs::builtin(&h100);
        let layouts = configs.layouts("all-1g.10gb", &h100, 8).unwrap();
        assert_eq!(layouts.len(), 8);
        for layout in &layouts {
            let layout = layout.as_ref().unwrap();
            assert!(layout.current);
            assert_eq!(instances(&h100, layout).len(), 7);
            assert!(layout.gpu_instances.iter().all(|g| g.compute_instances.len() == 1));
            // Equal to the layout named_layout (used where no live state exists) computes.
            assert!(same_partition(layout, &mig::named_layout(&h100, "all-1g.10gb").unwrap()));
        }
        let three = configs.layouts("all-3g.40gb", &h100, 1).unwrap()[0].clone().unwrap();
        assert_eq!(instances(&h100, &three), vec![("3g.40gb".to_string(), 4), ("3g.40gb".to_string(), 0)]);
        let me = configs.layouts("all-1g.10gb.me", &h100, 1).unwrap()[0].clone().unwrap();
        assert_eq!(instances(&h100, &me), vec![("1g.10gb+me".to_string(), 6)]);
    }

    #[test]
    fn builtin_names_follow_the_board() {
        let a100 = board("a100-40gb");
        let names: Vec<_> = MigConfigs::builtin(&a100).names().map(str::to_string).collect();
        for expected in ["all-disabled", "all-enabled", "all-balanced", "all-1g.5gb", "all-1g.5gb.me", "all-7g.40gb"] {
            assert!(names.contains(&expected.to_string()), "{expected} in {names:?}");
        }
        assert!(!names.contains(&"all-1g.10gb.me".to_string()));
        let l40s = board("l40s");
        assert_eq!(MigConfigs::builtin(&l40s).names().collect::<Vec<_>>(), vec!["all-disabled"]);
    }

    #[test]
    fn balanced_fits_in_any_order_it_is_written() {
        for name in ["a100-40gb", "a100-80gb", "h100", "h200", "b200", "gb200", "gb300"] {
            let p = board(name);
            let layout = MigConfigs::builtin(&p).layouts("all-balanced", &p, 1).unwrap()[0].clone().unwrap();
            let got = instances(&p, &layout);
            assert_eq!(got.len(), 4, "{name}: {got:?}");
            let used: u32 = layout.gpu_instances.iter().map(|g| mig::gi_profile(&p, g.profile).unwrap().compute_slices).sum();
            assert_eq!(used, 7, "{name}");
        }
        // The same set written smallest first (the order a first fit alone cannot place).
        let h100 = board("h100");
        let doc = json!({"version": "v1", "mig-configs": {"mine": [
            {"devices": "all", "mig-enabled": true, "mig-devices": {"1g.10gb": 2, "2g.20gb": 1, "3g.40gb": 1}}]}});
        let layout = MigConfigs::parse(&doc).unwrap().layouts("mine", &h100, 1).unwrap()[0].clone().unwrap();
        assert_eq!(layout.gpu_instances.len(), 4);
    }

    #[test]
    fn custom_entries_select_devices_and_boards() {
        let h100 = board("h100");
        let doc = json!({"version": "v1", "mig-configs": {"custom": [
            {"devices": [0, 1], "mig-enabled": false},
            {"devices": ["2"], "mig-enabled": true, "mig-devices": {"7g.80gb": 1}},
            {"devices": "all", "device-filter": ["0x20B010DE"], "mig-enabled": true, "mig-devices": {"1g.5gb": 7}},
            {"devices": "all", "device-filter": "0x233010DE", "mig-enabled": true, "mig-devices": {"2g.20gb": 3}}]}});
        let configs = MigConfigs::parse(&doc).unwrap();
        let layouts = configs.layouts("custom", &h100, 4).unwrap();
        assert!(!layouts[0].as_ref().unwrap().current);
        assert!(!layouts[1].as_ref().unwrap().current);
        assert_eq!(instances(&h100, layouts[2].as_ref().unwrap()), vec![("7g.80gb".to_string(), 0)]);
        // GPU 3: the A100 entry does not select an H100, the H100 one does.
        assert_eq!(instances(&h100, layouts[3].as_ref().unwrap()).len(), 3);
        assert_eq!(h100.pci.device_id.0, 0x2330_10DE);
        // A config selecting no GPU of the node leaves them alone.
        let doc = json!({"version": "v1", "mig-configs": {"few": [{"devices": [6, 7], "mig-enabled": false}]}});
        let layouts = MigConfigs::parse(&doc).unwrap().layouts("few", &h100, 4).unwrap();
        assert!(layouts.iter().all(Option::is_none));
    }

    #[test]
    fn mig_faker_positions_are_kept() {
        let a100 = board("a100-40gb");
        let doc = json!({"version": "v1", "mig-configs": {"selected": [
            {"devices": ["0"], "mig-enabled": true, "mig-devices": [
                {"name": "1g.5gb", "position": 6, "size": 1},
                {"name": "4g.20gb", "position": 0, "size": 4}]}]}});
        let layout = MigConfigs::parse(&doc).unwrap().layouts("selected", &a100, 2).unwrap();
        assert_eq!(instances(&a100, layout[0].as_ref().unwrap()), vec![("1g.5gb".to_string(), 6), ("4g.20gb".to_string(), 0)]);
        assert!(layout[1].is_none());
        let bad = json!({"version": "v1", "mig-configs": {"s": [
            {"devices": [0], "mig-enabled": true, "mig-devices": [{"name": "4g.20gb", "position": 2}]}]}});
        let err = MigConfigs::parse(&bad).unwrap().layouts("s", &a100, 1).unwrap_err().to_string();
        assert!(err.contains("GPU 0") && err.contains("4g.20gb at position 2"), "{err}");
        let bad = json!({"version": "v1", "mig-configs": {"s": [
            {"devices": [0], "mig-enabled": true, "mig-devices": [{"name": "3g.20gb", "position": 4, "size": 3}]}]}});
        let err = MigConfigs::parse(&bad).unwrap().layouts("s", &a100, 1).unwrap_err().to_string();
        assert!(err.contains("size 3, but 3g.20gb takes 4 memory slices"), "{err}");
    }

    #[test]
    fn what_does_not_fit_or_exist_is_named() {
        let h100 = board("h100");
        let doc = json!({"version": "v1", "mig-configs": {
            "too-much": [{"devices": "all", "mig-enabled": true, "mig-devices": {"3g.40gb": 2, "2g.20gb": 1}}],
            "wrong-board": [{"devices": "all", "mig-enabled": true, "mig-devices": {"1g.5gb": 7}}]}});
        let configs = MigConfigs::parse(&doc).unwrap();
        let err = configs.layouts("too-much", &h100, 1).unwrap_err().to_string();
        assert!(err.contains("\"too-much\"") && err.contains("do not fit"), "{err}");
        let err = configs.layouts("wrong-board", &h100, 1).unwrap_err().to_string();
        assert!(err.contains("\"1g.5gb\" is not a MIG device of") && err.contains("1g.10gb"), "{err}");
        let err = configs.layouts("nope", &h100, 1).unwrap_err().to_string();
        assert!(err.contains("no MIG configuration named \"nope\"") && err.contains("too-much, wrong-board"), "{err}");
        let t4 = board("t4");
        let err = MigConfigs::builtin(&h100).layouts("all-1g.10gb", &t4, 1).unwrap_err().to_string();
        assert!(err.contains("does not support MIG"), "{err}");
    }

    #[test]
    fn malformed_documents_name_the_key() {
        let cases = [
            (json!({"mig-configs": {}}), "version: missing"),
            (json!({"version": "v2", "mig-configs": {}}), "version: \"v2\" is not supported"),
            (json!({"version": "v1", "mig-configs": {}}), "mig-configs: names no configuration"),
            (json!({"version": "v1", "mig-configs": {"a": []}}), "mig-configs.a: has no entries"),
            (json!({"version": "v1", "extra": 1, "mig-configs": {"a": []}}), "extra: unknown key"),
            (json!({"version": "v1", "mig-configs": {"a": [{"devices": "some", "mig-enabled": true}]}}), "mig-configs.a[0].devices"),
            (json!({"version": "v1", "mig-configs": {"a": [{"devices": [-1], "mig-enabled": true}]}}), "-1 is not a GPU index"),
            (json!({"version": "v1", "mig-configs": {"a": [{"devices": "all"}]}}), "mig-configs.a[0].mig-enabled: missing"),
            (
                json!({"version": "v1", "mig-configs": {"a": [{"devices": "all", "mig-enabled": true, "mig-devices": {"1g.10gb": 8}}]}}),
                "mig-configs.a[0].mig-devices.1g.10gb: 8 is not a count",
            ),
            (
                json!({"version": "v1", "mig-configs": {"a": [{"devices": "all", "device-filter": "2330", "mig-enabled": true}]}}),
                "device-filter: 2330 is not a PCI device id",
            ),
            (
                json!({"version": "v1", "mig-configs": {"a": [{"devices": "all", "mig-enabled": true, "mig-devices": [{"name": "1g.5gb", "position": 9}]}]}}),
                "mig-devices[0].position",
            ),
            (
                json!({"version": "v1", "mig-configs": {"a": [{"devices": "all", "mig-enabled": true, "typo": 1}]}}),
                "mig-configs.a[0].typo: unknown key",
            ),
        ];
        for (doc, expected) in cases {
            let err = MigConfigs::parse(&doc).unwrap_err().to_string();
            assert!(err.contains(expected), "{doc}: {err}");
        }
        let doc = json!({"version": "v1", "mig-configs": {"a": [{"devices": "all", "mig-enabled": false, "mig-devices": {"1g.10gb": 1}}]}});
        let err = MigConfigs::parse(&doc).unwrap().layouts("a", &board("h100"), 1).unwrap_err().to_string();
        assert!(err.contains("mig-enabled: false"), "{err}");
    }

    #[test]
    fn custom_configs_overlay_the_builtin_ones() {
        let h100 = board("h100");
        let doc = json!({"version": "v1", "mig-configs": {"all-balanced": [{"devices": "all", "mig-enabled": true, "mig-devices": {"7g.80gb": 1}}]}});
        let configs = MigConfigs::builtin(&h100).overlaid(&MigConfigs::parse(&doc).unwrap());
        let layout = configs.layouts("all-balanced", &h100, 1).unwrap()[0].clone().unwrap();
        assert_eq!(instances(&h100, &layout), vec![("7g.80gb".to_string(), 0)]);
        assert!(configs.get("all-1g.10gb").is_some());
    }

    #[test]
    fn a_busy_gpu_refuses_a_change_but_not_an_equal_layout() {
        let h100 = board("h100");
        let configs = MigConfigs::builtin(&h100);
        let seven = mig::named_layout(&h100, "all-1g.10gb").unwrap();
        let current = vec![seven.clone(), MigLayout::default(), MigLayout::default()];
        // GPU 0 already has the layout: busy or not, it is left alone; GPUs 1 and 2 change.
        let p = plan(&configs, "all-1g.10gb", &h100, &current, |g| (g == 0).then(|| "default/train".to_string())).unwrap();
        assert_eq!(p.changes.iter().map(|(g, _)| *g).collect::<Vec<_>>(), vec![1, 2]);
        // Going back to whole GPUs would repartition the busy GPU 0: refused, nothing changes.
        let err = plan(&configs, "all-disabled", &h100, &current, |g| (g == 0).then(|| "default/train".to_string())).unwrap_err();
        assert_eq!(err, PlanError::Busy { config: "all-disabled".into(), gpu: 0, holder: "default/train".into() });
        assert!(err.to_string().contains("in use by default/train"));
        // Idle: GPU 0 goes back to whole, 1 and 2 are already whole.
        let p = plan(&configs, "all-disabled", &h100, &current, |_| None).unwrap();
        assert_eq!(p.changes.len(), 1);
        assert_eq!(p.changes[0].0, 0);
        assert!(!p.changes[0].1.current);
        // The same layout read back from a state file with instances listed in another order.
        let mut shuffled = seven.clone();
        shuffled.gpu_instances.reverse();
        assert!(same_partition(&seven, &shuffled));
        assert_eq!(ConfigState::Failed.label_value(), "failed");
    }

    fn process(pid: u32, name: &str) -> crate::state::Process {
        crate::state::Process {
            pid,
            name: name.into(),
            used_memory_bytes: 1 << 30,
            kind: Default::default(),
            gpu_instance_id: None,
            compute_instance_id: None,
            pid_namespace: None,
        }
    }

    #[test]
    fn apply_layouts_refuses_a_busy_gpu_and_leaves_others_alone() {
        let spec = NodeSpec::builtin("h100", Some(2), "n").unwrap();
        let now = Now { unix_ms: 1, boot_ms: 1 };
        let target = BTreeMap::from([(0, crate::mig::named_layout(&spec.profile, "all-2g.20gb").unwrap())]);
        let mut state = NodeState::default();
        state.gpu_mut(&spec, 0, now).unwrap().processes.extend([process(7, "late"), process(8, "other")]);
        let before = state.clone();
        assert_eq!(
            apply_layouts(&mut state, &spec, &target, now),
            Err(ApplyError::Busy { gpu: 0, holder: "process 7 (late) and 1 more".into() })
        );
        assert_eq!(state, before, "nothing written");
        // A busy GPU whose partition stays is no obstacle; MIG mode becomes current.
        let mut state = NodeState::default();
        state.gpu_mut(&spec, 1, now).unwrap().processes.push(process(9, "stays"));
        assert_eq!(apply_layouts(&mut state, &spec, &target, now), Ok(vec![0]));
        assert_eq!(state.gpu(0).unwrap().mig, target[&0]);
        assert_eq!(apply_layouts(&mut state, &spec, &target, now), Ok(vec![]), "applied: nothing changes");
        // Absent from the target: MIG off.
        assert_eq!(apply_layouts(&mut state, &spec, &BTreeMap::new(), now), Ok(vec![0]));
        assert_eq!(state.gpu(0).unwrap().mig, MigLayout::default());
    }
}
