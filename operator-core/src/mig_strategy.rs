//! NVIDIA's device plugin MIG strategies (`--mig-strategy`): which extended resources a node's
//! GPUs and MIG devices become. One rule for every place that advertises them: the node device
//! plugin (device lists, real nodes) and the KWOK capacity (counts from the topology), so the
//! scheduler's view and the kubelet's agree.

use std::collections::BTreeMap;

/// NVIDIA's device plugin MIG strategies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum MigStrategy {
    /// `nvidia.com/gpu` = every GPU whole, MIG mode or not.
    #[default]
    None,
    /// `nvidia.com/gpu` = the MIG devices when the GPUs are in MIG mode (all GPUs alike, all
    /// MIG devices of one profile), else the GPUs.
    Single,
    /// `nvidia.com/gpu` = the GPUs not in MIG mode; one `nvidia.com/mig-<profile>` per profile.
    Mixed,
}

impl MigStrategy {
    /// The strategy a pool's `migStrategy` value names (`none`, `single`, `mixed`); `None` for
    /// any other value.
    pub fn parse(value: &str) -> Option<MigStrategy> {
        match value {
            "none" => Some(MigStrategy::None),
            "single" => Some(MigStrategy::Single),
            "mixed" => Some(MigStrategy::Mixed),
            _ => None,
        }
    }
}

/// One extended resource a node advertises.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    /// `nvidia.com/gpu` (GPUs, or MIG devices under `single`).
    #[default]
    Gpu,
    /// `nvidia.com/mig-<profile>` under `mixed` (NVML's profile name, e.g. `1g.10gb`).
    Mig(String),
}

/// A MIG layout the `single` strategy refuses, as NVIDIA's plugin does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StrategyError {
    #[error("mig-strategy single: all GPUs must have the same MIG mode (GPU {0} differs)")]
    MixedModes(u32),
    #[error("mig-strategy single: more than one MIG device profile on the node ({0} and {1})")]
    MixedProfiles(String, String),
}

/// One GPU as the strategies see it: the GPU itself, and while MIG mode is on its MIG devices
/// (with their profile names; none while no instances exist).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuDevices<T> {
    pub index: u32,
    pub whole: T,
    pub mig: Option<Vec<(String, T)>>,
}

/// The devices of each resource under `strategy`, in the order given; `Resource::Gpu` is always
/// present (possibly empty, so that `nvidia.com/gpu` drops to 0 when every GPU is partitioned).
pub fn resources<T>(gpus: Vec<GpuDevices<T>>, strategy: MigStrategy) -> Result<BTreeMap<Resource, Vec<T>>, StrategyError> {
    let mut out: BTreeMap<Resource, Vec<T>> = BTreeMap::from([(Resource::Gpu, Vec::new())]);
    if strategy == MigStrategy::Single {
        let first_mode = gpus.first().map(|g| g.mig.is_some());
        if let Some(g) = gpus.iter().find(|g| Some(g.mig.is_some()) != first_mode) {
            return Err(StrategyError::MixedModes(g.index));
        }
        let mut profiles = gpus.iter().flat_map(|g| g.mig.iter().flatten()).map(|(p, _)| p);
        if let Some(p) = profiles.next() {
            if let Some(q) = profiles.find(|q| *q != p) {
                return Err(StrategyError::MixedProfiles(p.clone(), q.clone()));
            }
        }
    }
    for g in gpus {
        match (strategy, g.mig) {
            (MigStrategy::None, _) | (_, None) => out.entry(Resource::Gpu).or_default().push(g.whole),
            (MigStrategy::Single, Some(devices)) => out.entry(Resource::Gpu).or_default().extend(devices.into_iter().map(|(_, d)| d)),
            (MigStrategy::Mixed, Some(devices)) => {
                for (profile, d) in devices {
                    out.entry(Resource::Mig(profile)).or_default().push(d);
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GPU i is `"g<i>"`; its MIG devices `"g<i>/<profile>"`.
    fn gpus(layouts: &[Option<&[&str]>]) -> Vec<GpuDevices<String>> {
        layouts
            .iter()
            .enumerate()
            .map(|(i, l)| GpuDevices {
                index: i as u32,
                whole: format!("g{i}"),
                mig: l.map(|ps| ps.iter().map(|p| (p.to_string(), format!("g{i}/{p}"))).collect()),
            })
            .collect()
    }

    fn r(pairs: &[(Resource, &[&str])]) -> BTreeMap<Resource, Vec<String>> {
        pairs.iter().map(|(k, v)| (k.clone(), v.iter().map(|s| s.to_string()).collect())).collect()
    }

    type Exposed = Result<BTreeMap<Resource, Vec<String>>, StrategyError>;
    type Case<'a> = (MigStrategy, Vec<Option<&'a [&'a str]>>, Exposed);

    fn mig(p: &str) -> Resource {
        Resource::Mig(p.to_string())
    }

    #[test]
    fn each_strategy_maps_gpus_and_mig_devices_as_nvidias_plugin() {
        use MigStrategy::*;
        let one: &[&str] = &["1g.10gb", "1g.10gb"];
        let two: &[&str] = &["3g.40gb", "1g.10gb"];
        let cases: Vec<Case> = vec![
            (None, vec![Some(one), Option::None], Ok(r(&[(Resource::Gpu, &["g0", "g1"])]))),
            (Mixed, vec![Option::None, Option::None], Ok(r(&[(Resource::Gpu, &["g0", "g1"])]))),
            (
                Mixed,
                vec![Some(two), Option::None, Some(&[])],
                Ok(r(&[(Resource::Gpu, &["g1"]), (mig("1g.10gb"), &["g0/1g.10gb"]), (mig("3g.40gb"), &["g0/3g.40gb"])])),
            ),
            (
                Mixed,
                vec![Some(one), Some(one)],
                Ok(r(&[(Resource::Gpu, &[]), (mig("1g.10gb"), &["g0/1g.10gb", "g0/1g.10gb", "g1/1g.10gb", "g1/1g.10gb"])])),
            ),
            (Single, vec![Option::None, Option::None], Ok(r(&[(Resource::Gpu, &["g0", "g1"])]))),
            (Single, vec![Some(one), Some(one)], Ok(r(&[(Resource::Gpu, &["g0/1g.10gb", "g0/1g.10gb", "g1/1g.10gb", "g1/1g.10gb"])]))),
            // MIG on everywhere, no instances: nothing to offer, not an error.
            (Single, vec![Some(&[]), Some(&[])], Ok(r(&[(Resource::Gpu, &[])]))),
            (Single, vec![Option::None, Some(one)], Err(StrategyError::MixedModes(1))),
            (Single, vec![Some(one), Some(two)], Err(StrategyError::MixedProfiles("1g.10gb".into(), "3g.40gb".into()))),
            (Single, vec![], Ok(r(&[(Resource::Gpu, &[])]))),
        ];
        for (strategy, layouts, want) in cases {
            assert_eq!(resources(gpus(&layouts), strategy), want, "{strategy:?} {layouts:?}");
        }
    }

    #[test]
    fn pool_values_parse() {
        assert_eq!(MigStrategy::parse("single"), Some(MigStrategy::Single));
        assert_eq!(MigStrategy::parse("mixed"), Some(MigStrategy::Mixed));
        assert_eq!(MigStrategy::parse("none"), Some(MigStrategy::None));
        assert_eq!(MigStrategy::parse(""), None);
    }
}
