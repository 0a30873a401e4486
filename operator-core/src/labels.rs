//! Node labels: NVIDIA GPU Feature Discovery's labels as GFD v0.17 writes them for the
//! simulated GPUs under their live MIG layouts, upstream fake-gpu-operator's `run.ai/fake.gpu`
//! and its deploy labels. Pure: a resolved node and each GPU's MIG layout in, the desired label
//! map out, plus the patch from the current labels. tests/gfd runs NVIDIA's GFD over the fake
//! NVML and checks this map against its output, key by key (docs/mig.md lists the keys only
//! one side writes).

use std::collections::BTreeMap;

use fakegpu_model::mig::{MigDevice, MigLayout};
use fakegpu_model::profile::Architecture;

use crate::resolve::ResolvedPool;

pub const DEPLOY_DCGM_EXPORTER: &str = "nvidia.com/gpu.deploy.dcgm-exporter";
pub const DEPLOY_DEVICE_PLUGIN: &str = "nvidia.com/gpu.deploy.device-plugin";
pub const DEPLOY_DRA_PLUGIN: &str = "nvidia.com/gpu.deploy.dra-plugin-gpu";
pub const DEPLOY_CD_PLUGIN: &str = "nvidia.com/gpu.deploy.compute-domain-dra-plugin";
/// As NVIDIA's GPU Operator: MIG-capable real nodes run the (node-side) MIG manager.
pub const DEPLOY_MIG_MANAGER: &str = "nvidia.com/gpu.deploy.mig-manager";
/// Ours: `mock` on nodes of a `gpu.backend: mock` pool. NVIDIA's own components serve those
/// nodes over the fake NVML the node agent lays, so the chart keeps our kubelet plugins and node
/// MIG manager off them by this label. The `nvidia.com/gpu.deploy.*` labels cannot say it: NVIDIA's
/// GPU Operator sets them to `true` for its own DaemonSets on the same nodes.
pub const BACKEND_LABEL: &str = "fake-gpu-operator.run.ai/backend";
pub const FAKE_GPU: &str = "run.ai/fake.gpu";
/// `nvidia.com/gpu.machine` of simulated nodes: GFD's sanitising of the DMI product name the
/// model gives a simulated machine.
pub fn machine() -> String {
    gfd_sanitise(fakegpu_model::sysfs::MACHINE_PRODUCT_NAME)
}
/// Prefix of the per-profile labels of the mixed strategy (`nvidia.com/mig-1g.10gb.count`).
pub const MIG_RESOURCE_PREFIX: &str = "nvidia.com/mig-";
/// The MIG attribute suffixes GFD writes per MIG resource (`nvidia.com/gpu.` in single,
/// `nvidia.com/mig-<profile>.` in mixed).
const MIG_ATTRIBUTES: [&str; 8] =
    ["multiprocessors", "slices.gi", "slices.ci", "engines.copy", "engines.decoder", "engines.encoder", "engines.jpeg", "engines.ofa"];

/// Every fixed label key this module may write; the ones to remove when a node leaves all
/// pools (with [`MIG_RESOURCE_PREFIX`] keys, see [`is_managed`]).
pub const MANAGED: [&str; 31] = [
    "nvidia.com/gpu.product",
    "nvidia.com/gpu.count",
    "nvidia.com/gpu.memory",
    "nvidia.com/gpu.present",
    "nvidia.com/gpu.family",
    "nvidia.com/gpu.machine",
    "nvidia.com/gpu.mode",
    "nvidia.com/gpu.compute.major",
    "nvidia.com/gpu.compute.minor",
    "nvidia.com/gpu.replicas",
    "nvidia.com/gpu.sharing-strategy",
    "nvidia.com/cuda.driver.major",
    "nvidia.com/cuda.driver.minor",
    "nvidia.com/cuda.driver.rev",
    "nvidia.com/cuda.driver-version.major",
    "nvidia.com/cuda.driver-version.minor",
    "nvidia.com/cuda.driver-version.revision",
    "nvidia.com/cuda.driver-version.full",
    "nvidia.com/cuda.runtime.major",
    "nvidia.com/cuda.runtime.minor",
    "nvidia.com/cuda.runtime-version.major",
    "nvidia.com/cuda.runtime-version.minor",
    "nvidia.com/cuda.runtime-version.full",
    "nvidia.com/mig.capable",
    "nvidia.com/mig.strategy",
    "nvidia.com/mps.capable",
    "nvidia.com/vgpu.present",
    "nvidia.com/gpu.clique",
    FAKE_GPU,
    DEPLOY_DCGM_EXPORTER,
    DEPLOY_DEVICE_PLUGIN,
];
/// Managed too (outside the array to keep its length readable).
pub const MANAGED_EXTRA: [&str; 4] = [DEPLOY_DRA_PLUGIN, DEPLOY_CD_PLUGIN, DEPLOY_MIG_MANAGER, BACKEND_LABEL];

/// Whether `key` is one of ours: a fixed key, a single-strategy MIG attribute
/// (`nvidia.com/gpu.multiprocessors`, …) or a mixed-strategy `nvidia.com/mig-<profile>.*` key.
pub fn is_managed(key: &str) -> bool {
    MANAGED.contains(&key)
        || MANAGED_EXTRA.contains(&key)
        || key.strip_prefix("nvidia.com/gpu.").is_some_and(|s| MIG_ATTRIBUTES.contains(&s))
        || key.starts_with(MIG_RESOURCE_PREFIX)
}

/// Upstream's product sanitising: chars outside `[A-Za-z0-9._-]` → `-`, at most 63, trimmed
/// to alphanumerics at both ends (`NVIDIA A100-SXM4-40GB` → `NVIDIA-A100-SXM4-40GB`).
pub fn sanitise(value: &str) -> String {
    let s: String = value.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '-' }).take(63).collect();
    s.trim_matches(|c: char| !c.is_ascii_alphanumeric()).to_string()
}

/// GFD's sanitising of names in label values: characters outside `[A-Za-z0-9-_. ]` dropped,
/// runs of spaces joined by one `-` (`NVIDIA H100 80GB HBM3` → `NVIDIA-H100-80GB-HBM3`,
/// `A (B)` → `A-B`). Cut to 63 characters, a label value's limit, which GFD does not do.
pub fn gfd_sanitise(value: &str) -> String {
    let kept: String = value.chars().filter(|c| c.is_ascii_alphanumeric() || "-_. ".contains(*c)).collect();
    let s: String = kept.split_whitespace().collect::<Vec<_>>().join("-").chars().take(63).collect();
    s.trim_end_matches(|c: char| !c.is_ascii_alphanumeric()).to_string()
}

/// GFD's architecture family from the compute capability.
pub fn family(major: u32, minor: u32, arch: Architecture) -> &'static str {
    match (major, minor) {
        (1, _) => "tesla",
        (2, _) => "fermi",
        (3, _) => "kepler",
        (5, _) => "maxwell",
        (6, _) => "pascal",
        (7, m) if m < 5 => "volta",
        (7, _) => "turing",
        (8, m) if m < 9 => "ampere",
        (8, _) => "ada-lovelace",
        (9, _) => "hopper",
        (10, _) | (12, _) => "blackwell",
        _ => match arch {
            Architecture::Blackwell => "blackwell",
            _ => "undefined",
        },
    }
}

/// GFD's `nvidia.com/gpu.mode` from the GPUs' PCI class.
fn gpu_mode(class: u32) -> &'static str {
    match class {
        fakegpu_model::sysfs::PCI_CLASS_3D_CONTROLLER => "compute",
        fakegpu_model::sysfs::PCI_CLASS_VGA_CONTROLLER => "graphics",
        _ => "unknown",
    }
}

/// Inputs beyond the resolved node.
#[derive(Debug, Clone, Copy)]
pub struct LabelOptions<'a> {
    /// The node's name: a multi-node NVLink fabric's clique follows from it.
    pub node: &'a str,
    pub mig_strategy: &'a str,
    /// KWOK nodes get no device-plugin / DRA / compute-domain deploy labels.
    pub kwok: bool,
    /// `DISABLE_NODE_LABELING`: no deploy labels at all (as upstream).
    pub disable_deploy_labels: bool,
}

/// GFD's name of a MIG device type: the profile with `+` spelled `.` (`1g.10gb+me` →
/// `1g.10gb.me`), as resource names allow.
fn mig_name(d: &MigDevice) -> String {
    d.profile().replace('+', ".")
}

/// Writes GFD's labels of one MIG resource (`prefix` = `nvidia.com/gpu` in single,
/// `nvidia.com/mig-<profile>` in mixed): product, count, replicas, sharing, memory and the
/// device attributes, all from the model's MIG tables.
fn put_mig_resource(l: &mut BTreeMap<String, String>, prefix: &str, product: &str, d: &MigDevice, count: usize) {
    let a = d.attributes();
    let mut put = |k: &str, v: String| {
        l.insert(format!("{prefix}.{k}"), v);
    };
    put("product", format!("{product}-MIG-{}", gfd_sanitise(&mig_name(d))));
    put("count", count.to_string());
    put("replicas", "1".into());
    put("sharing-strategy", "none".into());
    put("memory", a.memory_mib.to_string());
    let values =
        [a.multiprocessors, a.gpu_instance_slices, a.compute_instance_slices, a.copy_engines, a.decoders, a.encoders, a.jpegs, a.ofas];
    for (k, v) in MIG_ATTRIBUTES.iter().zip(values) {
        put(k, v.to_string());
    }
}

/// The labels a node of `r` carries when its GPUs have the live MIG layouts `mig` (by GPU
/// index; a GPU past the end, or with MIG not current, is whole).
pub fn desired(r: &ResolvedPool, mig: &[MigLayout], opt: LabelOptions) -> BTreeMap<String, String> {
    let mut l = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        l.insert(k.to_string(), v);
    };
    let cc = r.profile.compute_capability;
    let product = gfd_sanitise(&r.product);
    let n = r.gpu_count as usize;
    let whole = MigLayout::default();
    let layout = |i: usize| mig.get(i).unwrap_or(&whole);
    let enabled: Vec<bool> = (0..n).map(|i| layout(i).current).collect();
    // Uuids and node name do not reach any label: only the devices' profiles do.
    let devices: Vec<MigDevice> =
        (0..n).flat_map(|i| fakegpu_model::mig::gpu_mig_devices(&r.profile, "", i as u32, "", layout(i))).collect();
    put("nvidia.com/gpu.product", product.clone());
    put("nvidia.com/gpu.count", r.gpu_count.to_string());
    put("nvidia.com/gpu.memory", r.memory_mib.to_string());
    put("nvidia.com/gpu.present", (r.gpu_count > 0).to_string());
    put("nvidia.com/gpu.family", family(cc.major, cc.minor, r.profile.architecture).to_string());
    put("nvidia.com/gpu.machine", machine());
    put("nvidia.com/gpu.mode", gpu_mode(fakegpu_model::sysfs::pci_class(&r.profile)).to_string());
    put("nvidia.com/gpu.compute.major", cc.major.to_string());
    put("nvidia.com/gpu.compute.minor", cc.minor.to_string());
    // GFD labels a whole GPU with sharing enabled (1 replica) and a MIG-enabled parent with
    // sharing off (0); where both kinds are present the whole GPU's labeler runs last and wins.
    put("nvidia.com/gpu.replicas", if n > 0 && enabled.iter().all(|e| *e) { "0" } else { "1" }.to_string());
    put("nvidia.com/gpu.sharing-strategy", "none".to_string());
    let mut parts = r.driver_version.split('.');
    let (dmaj, dmin, drev) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    put("nvidia.com/cuda.driver.major", dmaj.to_string());
    put("nvidia.com/cuda.driver.minor", dmin.to_string());
    put("nvidia.com/cuda.driver-version.major", dmaj.to_string());
    put("nvidia.com/cuda.driver-version.minor", dmin.to_string());
    put("nvidia.com/cuda.driver.rev", drev.to_string());
    put("nvidia.com/cuda.driver-version.revision", drev.to_string());
    put("nvidia.com/cuda.driver-version.full", sanitise(&r.driver_version));
    let cuda = r.cuda_driver_version;
    let (cmaj, cmin) = (cuda / 1000, (cuda % 1000) / 10);
    put("nvidia.com/cuda.runtime.major", cmaj.to_string());
    put("nvidia.com/cuda.runtime.minor", cmin.to_string());
    put("nvidia.com/cuda.runtime-version.major", cmaj.to_string());
    put("nvidia.com/cuda.runtime-version.minor", cmin.to_string());
    put("nvidia.com/cuda.runtime-version.full", format!("{cmaj}.{cmin}"));
    put("nvidia.com/mig.capable", r.profile.mig_capable.to_string());
    // No MPS sharing is configured, and the model's PCI config space has no vGPU capability.
    put("nvidia.com/mps.capable", "false".to_string());
    put("nvidia.com/vgpu.present", "false".to_string());
    // GFD labels the fabric only when it has a cluster (a single HGX baseboard reports the
    // zero UUID, and no label).
    if let Some(f) = fakegpu_model::fabric::fabric_info(opt.node, &r.profile, r.gpu_count) {
        if f.cluster_uuid != [0; 16] && f.state == fakegpu_model::fabric::FABRIC_STATE_COMPLETED {
            put("nvidia.com/gpu.clique", f.clique_label());
        }
    }
    if opt.mig_strategy != "none" {
        put("nvidia.com/mig.strategy", opt.mig_strategy.to_string());
    }
    put(FAKE_GPU, "true".to_string());
    if r.backend == crate::config::Backend::Mock {
        put(BACKEND_LABEL, "mock".to_string());
    }
    if !opt.disable_deploy_labels {
        put(DEPLOY_DCGM_EXPORTER, "true".to_string());
        if !opt.kwok {
            for k in [DEPLOY_DEVICE_PLUGIN, DEPLOY_DRA_PLUGIN, DEPLOY_CD_PLUGIN] {
                put(k, "true".to_string());
            }
            if r.profile.mig_capable {
                put(DEPLOY_MIG_MANAGER, "true".to_string());
            }
        }
    }
    // One device of each MIG type, with how many there are.
    let mut types: BTreeMap<String, (&MigDevice, usize)> = BTreeMap::new();
    for d in &devices {
        types.entry(mig_name(d)).or_insert((d, 0)).1 += 1;
    }
    match opt.mig_strategy {
        "single" if enabled.iter().any(|e| *e) => {
            // GFD's invalid-configuration labels: a MIG GPU without instances, MIG GPUs beside
            // whole ones, or more than one MIG device type.
            let empty = (0..n).any(|i| enabled[i] && !devices.iter().any(|d| d.parent_index as usize == i));
            if empty || enabled.iter().any(|e| !*e) || types.len() != 1 {
                for (k, v) in [
                    ("product", format!("{product}-MIG-INVALID")),
                    ("count", "0".into()),
                    ("replicas", "0".into()),
                    ("sharing-strategy", String::new()),
                    ("memory", "0".into()),
                ] {
                    l.insert(format!("nvidia.com/gpu.{k}"), v);
                }
            } else if let Some((d, count)) = types.values().next() {
                put_mig_resource(&mut l, "nvidia.com/gpu", &product, d, *count);
            }
        }
        "mixed" => {
            for (name, (d, count)) in &types {
                put_mig_resource(&mut l, &format!("{MIG_RESOURCE_PREFIX}{name}"), &product, d, *count);
            }
        }
        _ => {}
    }
    l
}

/// The merge patch (`Some` = set, `None` = remove) that turns `current` into `desired` for our
/// keys; other labels are left alone. Empty when nothing changes.
pub fn patch(current: &BTreeMap<String, String>, desired: &BTreeMap<String, String>) -> BTreeMap<String, Option<String>> {
    let mut p = BTreeMap::new();
    for (k, v) in desired {
        if current.get(k) != Some(v) {
            p.insert(k.clone(), Some(v.clone()));
        }
    }
    for k in current.keys() {
        if is_managed(k) && !desired.contains_key(k) {
            p.insert(k.clone(), None);
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClusterConfig;
    use crate::resolve::{for_node, resolve_all, Profiles};

    fn pool(profile: Option<&str>) -> ResolvedPool {
        let d = resolve_all(&ClusterConfig::default(), &Profiles::new()).unwrap().remove("default").unwrap();
        for_node(&d, profile, None, &Profiles::new()).unwrap()
    }

    const OPT: LabelOptions = LabelOptions { node: "n", mig_strategy: "mixed", kwok: true, disable_deploy_labels: false };

    /// A board newer than the 535 driver labels its own driver and CUDA version (B200: the
    /// 580.105.08 driver of its capture, CUDA 13.0), not 535 / 12.2.
    #[test]
    fn gfd_driver_labels_follow_the_profile() {
        let l = desired(&pool(Some("b200")), &[], OPT);
        for (k, v) in [
            ("nvidia.com/cuda.driver.major", "580"),
            ("nvidia.com/cuda.driver.minor", "105"),
            ("nvidia.com/cuda.driver.rev", "08"),
            ("nvidia.com/cuda.driver-version.full", "580.105.08"),
            ("nvidia.com/cuda.runtime.major", "13"),
            ("nvidia.com/cuda.runtime.minor", "0"),
            ("nvidia.com/cuda.runtime-version.full", "13.0"),
        ] {
            assert_eq!(l.get(k).map(String::as_str), Some(v), "{k}");
        }
    }

    #[test]
    fn gfd_labels_for_a100() {
        let l = desired(&pool(Some("a100-40gb")), &[], OPT);
        let want = [
            ("nvidia.com/gpu.product", "NVIDIA-A100-SXM4-40GB"),
            ("nvidia.com/gpu.count", "8"),
            ("nvidia.com/gpu.memory", "40960"),
            ("nvidia.com/gpu.present", "true"),
            ("nvidia.com/gpu.family", "ampere"),
            ("nvidia.com/gpu.compute.major", "8"),
            ("nvidia.com/gpu.compute.minor", "0"),
            ("nvidia.com/cuda.driver.major", "535"),
            ("nvidia.com/cuda.driver.minor", "261"),
            ("nvidia.com/cuda.driver.rev", "03"),
            ("nvidia.com/cuda.runtime.major", "12"),
            ("nvidia.com/cuda.runtime.minor", "2"),
            ("nvidia.com/gpu.replicas", "1"),
            ("nvidia.com/mig.capable", "true"),
            ("nvidia.com/mig.strategy", "mixed"),
            ("nvidia.com/gpu.machine", "fake-gpu-operator"),
            ("run.ai/fake.gpu", "true"),
            (DEPLOY_DCGM_EXPORTER, "true"),
        ];
        for (k, v) in want {
            assert_eq!(l.get(k).map(String::as_str), Some(v), "{k}");
        }
        // KWOK: no kubelet plugins to deploy.
        assert!(!l.contains_key(DEPLOY_DEVICE_PLUGIN) && !l.contains_key(DEPLOY_DRA_PLUGIN));
        // The KWOK nodes' MIG manager is the cluster-side Deployment.
        assert!(!l.contains_key(DEPLOY_MIG_MANAGER));
        // A real node of the same MIG-capable pool runs the node-side MIG manager.
        let r = pool(Some("a100-40gb"));
        assert_eq!(desired(&r, &[], LabelOptions { kwok: false, ..OPT })[DEPLOY_MIG_MANAGER], "true");
        assert!(l.keys().all(|k| is_managed(k)), "every written key is managed");
        assert!(l.values().all(|v| crate::config::valid_label_value(v)), "{l:?}");
    }

    #[test]
    fn real_node_and_disabled_deploy_labels() {
        let r = pool(None);
        let l = desired(&r, &[], LabelOptions { kwok: false, ..OPT });
        for k in [DEPLOY_DCGM_EXPORTER, DEPLOY_DEVICE_PLUGIN, DEPLOY_DRA_PLUGIN, DEPLOY_CD_PLUGIN] {
            assert_eq!(l[k], "true");
        }
        let l = desired(&r, &[], LabelOptions { kwok: false, disable_deploy_labels: true, ..OPT });
        assert!(!l.contains_key(DEPLOY_DCGM_EXPORTER) && !l.contains_key(DEPLOY_DEVICE_PLUGIN));
        assert_eq!(l["nvidia.com/gpu.product"], "Tesla-K80");
        assert_eq!(l["nvidia.com/gpu.family"], "kepler");
        assert_eq!(l["nvidia.com/mig.capable"], "false");
        assert!(!desired(&r, &[], LabelOptions { kwok: false, ..OPT }).contains_key(DEPLOY_MIG_MANAGER), "no MIG: no MIG manager");
    }

    #[test]
    fn mock_pool_nodes_are_marked() {
        let mut r = pool(Some("h100"));
        assert!(!desired(&r, &[], OPT).contains_key(BACKEND_LABEL), "fake pools carry no backend label");
        r.backend = crate::config::Backend::Mock;
        let l = desired(&r, &[], LabelOptions { kwok: false, ..OPT });
        assert_eq!(l[BACKEND_LABEL], "mock");
        assert!(is_managed(BACKEND_LABEL), "removed when the pool goes back to fake");
    }

    #[test]
    fn families() {
        use Architecture::*;
        let cases = [
            ((7, 0), "volta"),
            ((7, 5), "turing"),
            ((8, 6), "ampere"),
            ((8, 9), "ada-lovelace"),
            ((9, 0), "hopper"),
            ((10, 3), "blackwell"),
            ((6, 1), "pascal"),
            ((5, 2), "maxwell"),
        ];
        for ((a, b), f) in cases {
            assert_eq!(family(a, b, Ampere), f);
        }
        assert_eq!(family(11, 0, Blackwell), "blackwell");
        assert_eq!(family(42, 0, Hopper), "undefined");
        for name in ["t4", "l40s", "h100", "b200", "gb300", "k80"] {
            let l = desired(&pool(Some(name)), &[], OPT);
            assert_ne!(l["nvidia.com/gpu.family"], "undefined", "{name}");
        }
    }

    #[test]
    fn sanitising() {
        assert_eq!(sanitise("NVIDIA H100 80GB HBM3"), "NVIDIA-H100-80GB-HBM3");
        assert_eq!(sanitise(" (x) "), "x");
        assert_eq!(sanitise(&"a".repeat(70)).len(), 63);
        assert_eq!(sanitise(""), "");
    }

    /// An h100 node of `n` GPUs whose GPUs have the named mig-parted configurations, one per
    /// GPU (`None`: MIG off), laid out by the model as the MIG manager lays them out.
    fn h100_layouts(configs: &[Option<&str>]) -> (ResolvedPool, Vec<MigLayout>) {
        let d = resolve_all(
            &ClusterConfig::parse(&format!(
                "nodePools:\n  p:\n    gpu: {{profile: h100, overrides: {{device_count: {}}}}}\n",
                configs.len()
            ))
            .unwrap(),
            &Profiles::new(),
        )
        .unwrap()
        .remove("p")
        .unwrap();
        let layouts =
            configs.iter().map(|c| c.map(|c| fakegpu_model::mig::named_layout(&d.profile, c).unwrap()).unwrap_or_default()).collect();
        (d, layouts)
    }

    /// GFD's labels by strategy and layout, as NVIDIA's GFD v0.17.4 wrote them over the fake
    /// NVML for these layouts (tests/gfd runs it for every board; these pin the rules).
    #[test]
    fn mig_labels_by_strategy_and_layout() {
        type Want = &'static [(&'static str, Option<&'static str>)];
        let invalid: Want = &[
            ("nvidia.com/gpu.product", Some("NVIDIA-H100-80GB-HBM3-MIG-INVALID")),
            ("nvidia.com/gpu.count", Some("0")),
            ("nvidia.com/gpu.replicas", Some("0")),
            ("nvidia.com/gpu.sharing-strategy", Some("")),
            ("nvidia.com/gpu.memory", Some("0")),
            ("nvidia.com/gpu.multiprocessors", None),
        ];
        let all_1g = Some("all-1g.10gb");
        let cases: [(&str, &str, Vec<Option<&str>>, Want); 9] = [
            // Whole GPUs: the same in every strategy but for mig.strategy.
            (
                "none, MIG off",
                "none",
                vec![None, None],
                &[("nvidia.com/gpu.count", Some("2")), ("nvidia.com/gpu.replicas", Some("1")), ("nvidia.com/mig.strategy", None)],
            ),
            (
                "single, MIG off",
                "single",
                vec![None, None],
                &[("nvidia.com/gpu.product", Some("NVIDIA-H100-80GB-HBM3")), ("nvidia.com/mig.strategy", Some("single"))],
            ),
            // none with every GPU in MIG mode: whole-GPU labels, sharing off on MIG parents.
            (
                "none, all MIG",
                "none",
                vec![all_1g, all_1g],
                &[("nvidia.com/gpu.count", Some("2")), ("nvidia.com/gpu.replicas", Some("0")), ("nvidia.com/gpu.memory", Some("81559"))],
            ),
            (
                "single, all 1g",
                "single",
                vec![all_1g, all_1g],
                &[
                    ("nvidia.com/gpu.product", Some("NVIDIA-H100-80GB-HBM3-MIG-1g.10gb")),
                    ("nvidia.com/gpu.count", Some("14")),
                    ("nvidia.com/gpu.memory", Some("9984")),
                    ("nvidia.com/gpu.replicas", Some("1")),
                    ("nvidia.com/gpu.multiprocessors", Some("16")),
                    ("nvidia.com/gpu.slices.gi", Some("1")),
                    ("nvidia.com/gpu.engines.decoder", Some("1")),
                ],
            ),
            ("single, two device types", "single", vec![Some("all-balanced"), Some("all-balanced")], invalid),
            ("single, MIG on without instances", "single", vec![Some("all-enabled"), all_1g], invalid),
            ("single, MIG on and off", "single", vec![None, all_1g], invalid),
            (
                "mixed, balanced",
                "mixed",
                vec![Some("all-balanced"), None],
                &[
                    ("nvidia.com/gpu.replicas", Some("1")),
                    ("nvidia.com/mig-1g.10gb.count", Some("2")),
                    ("nvidia.com/mig-2g.20gb.count", Some("1")),
                    ("nvidia.com/mig-3g.40gb.product", Some("NVIDIA-H100-80GB-HBM3-MIG-3g.40gb")),
                    ("nvidia.com/mig-3g.40gb.memory", Some("40448")),
                    ("nvidia.com/mig-3g.40gb.slices.ci", Some("3")),
                    ("nvidia.com/gpu.multiprocessors", None),
                ],
            ),
            (
                "mixed, +me spelled .me",
                "mixed",
                vec![Some("all-1g.10gb.me")],
                &[
                    ("nvidia.com/mig-1g.10gb.me.count", Some("1")),
                    ("nvidia.com/mig-1g.10gb.me.engines.ofa", Some("1")),
                    ("nvidia.com/gpu.replicas", Some("0")),
                ],
            ),
        ];
        for (what, strategy, configs, want) in cases {
            let (r, layouts) = h100_layouts(&configs);
            let l = desired(&r, &layouts, LabelOptions { mig_strategy: strategy, ..OPT });
            for (k, v) in want {
                assert_eq!(l.get(*k).map(String::as_str), *v, "{what}: {k}");
            }
            assert!(l.keys().all(|k| is_managed(k)), "{what}: every written key is managed");
            assert!(l.values().all(|v| v.is_empty() || crate::config::valid_label_value(v)), "{what}: {l:?}");
        }
    }

    #[test]
    fn whole_gpu_labels_gfd_writes_and_the_clique() {
        let l = desired(&pool(Some("h100")), &[], OPT);
        for (k, v) in [("nvidia.com/gpu.mode", "compute"), ("nvidia.com/mps.capable", "false"), ("nvidia.com/vgpu.present", "false")] {
            assert_eq!(l[k], v, "{k}");
        }
        // A single HGX baseboard has no fabric cluster: no clique label. GB200 trays do.
        assert!(!l.contains_key("nvidia.com/gpu.clique"));
        let r = pool(Some("gb200"));
        let l = desired(&r, &[], LabelOptions { node: "rack-a-3", ..OPT });
        let want = fakegpu_model::fabric::fabric_info("rack-a-3", &r.profile, r.gpu_count).unwrap().clique_label();
        assert_eq!(l["nvidia.com/gpu.clique"], want);
    }

    #[test]
    fn gfd_sanitising() {
        assert_eq!(gfd_sanitise("NVIDIA H100 80GB HBM3"), "NVIDIA-H100-80GB-HBM3");
        assert_eq!(gfd_sanitise("A  (B)"), "A-B");
        assert_eq!(gfd_sanitise("1g.10gb"), "1g.10gb");
        assert_eq!(machine(), "fake-gpu-operator");
    }

    #[test]
    fn patch_sets_changes_and_removes_only_ours() {
        let cur = BTreeMap::from([
            ("nvidia.com/gpu.count".to_string(), "2".to_string()),
            ("nvidia.com/gpu.product".to_string(), "x".to_string()),
            ("nvidia.com/gpu.deploy.device-plugin".to_string(), "true".to_string()),
            ("team".to_string(), "a".to_string()),
        ]);
        let want = BTreeMap::from([
            ("nvidia.com/gpu.count".to_string(), "8".to_string()),
            ("nvidia.com/gpu.product".to_string(), "x".to_string()),
        ]);
        let p = patch(&cur, &want);
        assert_eq!(p.len(), 2);
        assert_eq!(p["nvidia.com/gpu.count"], Some("8".into()));
        assert_eq!(p["nvidia.com/gpu.deploy.device-plugin"], None);
        assert!(patch(&want, &want).is_empty());
        // Leaving every pool: all of ours go, the rest stays.
        let p = patch(&cur, &BTreeMap::new());
        assert_eq!(p.len(), 3);
        assert!(!p.contains_key("team"));
    }
}
