//! Node labels: NVIDIA GPU Feature Discovery's labels as GFD writes them for the simulated
//! GPUs, upstream fake-gpu-operator's `run.ai/fake.gpu` and its deploy labels. Pure: a
//! resolved node in, the desired label map out, plus the patch from the current labels.

use std::collections::BTreeMap;

use fakegpu_model::profile::Architecture;

use crate::resolve::ResolvedPool;

pub const DEPLOY_DCGM_EXPORTER: &str = "nvidia.com/gpu.deploy.dcgm-exporter";
pub const DEPLOY_DEVICE_PLUGIN: &str = "nvidia.com/gpu.deploy.device-plugin";
pub const DEPLOY_DRA_PLUGIN: &str = "nvidia.com/gpu.deploy.dra-plugin-gpu";
pub const DEPLOY_CD_PLUGIN: &str = "nvidia.com/gpu.deploy.compute-domain-dra-plugin";
pub const FAKE_GPU: &str = "run.ai/fake.gpu";
/// `nvidia.com/gpu.machine` of simulated nodes (GFD reads the DMI product name).
pub const MACHINE: &str = "fake-gpu-operator";

/// Every label key this module may write; the ones to remove when a node leaves all pools.
pub const MANAGED: [&str; 27] = [
    "nvidia.com/gpu.product",
    "nvidia.com/gpu.count",
    "nvidia.com/gpu.memory",
    "nvidia.com/gpu.present",
    "nvidia.com/gpu.family",
    "nvidia.com/gpu.machine",
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
    FAKE_GPU,
    DEPLOY_DCGM_EXPORTER,
    DEPLOY_DEVICE_PLUGIN,
];
/// Managed too (outside the array to keep its length readable).
pub const MANAGED_EXTRA: [&str; 2] = [DEPLOY_DRA_PLUGIN, DEPLOY_CD_PLUGIN];

/// Whether `key` is one of ours.
pub fn is_managed(key: &str) -> bool {
    MANAGED.contains(&key) || MANAGED_EXTRA.contains(&key)
}

/// Upstream's product sanitising: chars outside `[A-Za-z0-9._-]` → `-`, at most 63, trimmed
/// to alphanumerics at both ends (`NVIDIA A100-SXM4-40GB` → `NVIDIA-A100-SXM4-40GB`).
pub fn sanitise(value: &str) -> String {
    let s: String = value.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '-' }).take(63).collect();
    s.trim_matches(|c: char| !c.is_ascii_alphanumeric()).to_string()
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

/// Inputs beyond the resolved node.
#[derive(Debug, Clone, Copy)]
pub struct LabelOptions<'a> {
    pub mig_strategy: &'a str,
    /// KWOK nodes get no device-plugin / DRA / compute-domain deploy labels.
    pub kwok: bool,
    /// `DISABLE_NODE_LABELING`: no deploy labels at all (as upstream).
    pub disable_deploy_labels: bool,
}

/// The labels a node of `r` carries.
pub fn desired(r: &ResolvedPool, opt: LabelOptions) -> BTreeMap<String, String> {
    let mut l = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        l.insert(k.to_string(), v);
    };
    let cc = r.profile.compute_capability;
    put("nvidia.com/gpu.product", sanitise(&r.product));
    put("nvidia.com/gpu.count", r.gpu_count.to_string());
    put("nvidia.com/gpu.memory", r.memory_mib.to_string());
    put("nvidia.com/gpu.present", (r.gpu_count > 0).to_string());
    put("nvidia.com/gpu.family", family(cc.major, cc.minor, r.profile.architecture).to_string());
    put("nvidia.com/gpu.machine", MACHINE.to_string());
    put("nvidia.com/gpu.compute.major", cc.major.to_string());
    put("nvidia.com/gpu.compute.minor", cc.minor.to_string());
    put("nvidia.com/gpu.replicas", "1".to_string());
    put("nvidia.com/gpu.sharing-strategy", "none".to_string());
    let mut parts = r.driver_version.split('.');
    let (dmaj, dmin, drev) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    put("nvidia.com/cuda.driver.major", dmaj.to_string());
    put("nvidia.com/cuda.driver.minor", dmin.to_string());
    put("nvidia.com/cuda.driver-version.major", dmaj.to_string());
    put("nvidia.com/cuda.driver-version.minor", dmin.to_string());
    if !drev.is_empty() {
        put("nvidia.com/cuda.driver.rev", drev.to_string());
        put("nvidia.com/cuda.driver-version.revision", drev.to_string());
    }
    put("nvidia.com/cuda.driver-version.full", sanitise(&r.driver_version));
    let cuda = r.cuda_driver_version;
    let (cmaj, cmin) = (cuda / 1000, (cuda % 1000) / 10);
    put("nvidia.com/cuda.runtime.major", cmaj.to_string());
    put("nvidia.com/cuda.runtime.minor", cmin.to_string());
    put("nvidia.com/cuda.runtime-version.major", cmaj.to_string());
    put("nvidia.com/cuda.runtime-version.minor", cmin.to_string());
    put("nvidia.com/cuda.runtime-version.full", format!("{cmaj}.{cmin}"));
    put("nvidia.com/mig.capable", r.profile.mig_capable.to_string());
    put("nvidia.com/mig.strategy", opt.mig_strategy.to_string());
    put(FAKE_GPU, "true".to_string());
    if !opt.disable_deploy_labels {
        put(DEPLOY_DCGM_EXPORTER, "true".to_string());
        if !opt.kwok {
            for k in [DEPLOY_DEVICE_PLUGIN, DEPLOY_DRA_PLUGIN, DEPLOY_CD_PLUGIN] {
                put(k, "true".to_string());
            }
        }
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

    const OPT: LabelOptions = LabelOptions { mig_strategy: "mixed", kwok: true, disable_deploy_labels: false };

    /// A board newer than the 535 driver labels its own driver and CUDA version (B200: the
    /// 580.105.08 driver of its capture, CUDA 13.0), not 535 / 12.2.
    #[test]
    fn gfd_driver_labels_follow_the_profile() {
        let l = desired(&pool(Some("b200")), OPT);
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
        let l = desired(&pool(Some("a100-40gb")), OPT);
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
            ("nvidia.com/gpu.machine", MACHINE),
            ("run.ai/fake.gpu", "true"),
            (DEPLOY_DCGM_EXPORTER, "true"),
        ];
        for (k, v) in want {
            assert_eq!(l.get(k).map(String::as_str), Some(v), "{k}");
        }
        // KWOK: no kubelet plugins to deploy.
        assert!(!l.contains_key(DEPLOY_DEVICE_PLUGIN) && !l.contains_key(DEPLOY_DRA_PLUGIN));
        assert!(l.keys().all(|k| is_managed(k)), "every written key is managed");
        assert!(l.values().all(|v| crate::config::valid_label_value(v)), "{l:?}");
    }

    #[test]
    fn real_node_and_disabled_deploy_labels() {
        let r = pool(None);
        let l = desired(&r, LabelOptions { kwok: false, ..OPT });
        for k in [DEPLOY_DCGM_EXPORTER, DEPLOY_DEVICE_PLUGIN, DEPLOY_DRA_PLUGIN, DEPLOY_CD_PLUGIN] {
            assert_eq!(l[k], "true");
        }
        let l = desired(&r, LabelOptions { kwok: false, disable_deploy_labels: true, ..OPT });
        assert!(!l.contains_key(DEPLOY_DCGM_EXPORTER) && !l.contains_key(DEPLOY_DEVICE_PLUGIN));
        assert_eq!(l["nvidia.com/gpu.product"], "Tesla-K80");
        assert_eq!(l["nvidia.com/gpu.family"], "kepler");
        assert_eq!(l["nvidia.com/mig.capable"], "false");
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
            let l = desired(&pool(Some(name)), OPT);
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
