//! Where a node's GPUs and CPUs sit across its NUMA zones: the one layout that the fake NVML
//! (NUMA id, CPU and memory affinity, topology), our nvidia-smi, the DRA attributes, the device
//! plugin's topology hints, the NodeResourceTopology objects and the fake podresources answer
//! all use, so that no two of them can disagree.
//!
//! A pool's `numa` block (upstream reference §12) gives the zones and, optionally, the GPUs of
//! each zone; without it the GPUs are split evenly, the remainder going to the lowest zones,
//! GPU indices in order. A node without a `numa` block keeps the two-socket default: the first
//! half of its GPUs on NUMA node 0, the rest on node 1.

use std::ops::Range;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The most zones a layout may have (more than any server has sockets or sub-NUMA clusters).
pub const MAX_ZONES: u32 = 1024;

/// A node's NUMA layout, as the node config carries it (`numa`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NumaLayout {
    /// Number of zones, 1..=1024 (`node-0` .. `node-(zones-1)`).
    pub zones: u32,
    /// GPUs of each zone, in zone order (GPU indices fill the zones in order); absent: an even
    /// split with the remainder to the lowest zones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus_per_zone: Option<Vec<u32>>,
    /// Whole CPUs of each zone: zone z owns the CPU ids `[z·n, (z+1)·n)`. Absent: the host's
    /// online CPUs divided among the zones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus_per_zone: Option<u32>,
}

/// Why a layout does not fit a node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error("`zones` is {0}; it must be 1 to {MAX_ZONES}")]
    Zones(u64),
    #[error("`gpusPerZone` {list:?} must have {zones} entries summing to the node's {gpus} GPUs")]
    GpusPerZone { list: Vec<u64>, zones: u64, gpus: u64 },
}

/// GPUs per zone for a node of `gpus` GPUs over `zones` zones: `explicit` when given (it must
/// have one entry per zone and sum to `gpus`), else an even split with the remainder to the
/// lowest zones. The single computation every consumer of the layout goes through.
pub fn split_gpus(zones: u64, explicit: Option<&[u64]>, gpus: u64) -> Result<Vec<u64>, LayoutError> {
    if zones == 0 || zones > u64::from(MAX_ZONES) {
        return Err(LayoutError::Zones(zones));
    }
    match explicit {
        Some(list) => {
            // checked_add: a hostile list cannot overflow into a matching sum.
            let sum = list.iter().try_fold(0u64, |acc, n| acc.checked_add(*n));
            if list.len() as u64 != zones || sum != Some(gpus) {
                return Err(LayoutError::GpusPerZone { list: list.to_vec(), zones, gpus });
            }
            Ok(list.to_vec())
        }
        None => Ok((0..zones).map(|z| gpus / zones + u64::from(z < gpus % zones)).collect()),
    }
}

/// The zone of each GPU (index order) for a split from [`split_gpus`].
pub fn gpu_zones(split: &[u64]) -> Vec<u32> {
    split.iter().enumerate().flat_map(|(z, n)| std::iter::repeat_n(z as u32, *n as usize)).collect()
}

/// Whole cores of a CPU quantity in millicores, rounded to the nearest (upstream: `round`).
pub fn cores_of_millis(millis: u64) -> u64 {
    millis.saturating_add(500) / 1000
}

/// The CPU ids zone `zone` owns when each zone has `per_zone` CPUs: a contiguous block.
pub fn zone_cpus(zone: u32, per_zone: u64) -> Range<u64> {
    let first = u64::from(zone).saturating_mul(per_zone);
    first..first.saturating_add(per_zone)
}

impl NumaLayout {
    /// GPUs per zone on a node of `gpus` GPUs.
    pub fn split(&self, gpus: u32) -> Result<Vec<u64>, LayoutError> {
        let explicit: Option<Vec<u64>> = self.gpus_per_zone.as_ref().map(|l| l.iter().map(|n| u64::from(*n)).collect());
        split_gpus(u64::from(self.zones), explicit.as_deref(), u64::from(gpus))
    }
}

/// The NUMA placement of a node of `gpus` GPUs under `layout` (None: the two-halves default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Zone of each GPU, index order.
    pub gpu_zone: Vec<u32>,
    /// Number of zones.
    pub zones: u32,
    /// CPUs per zone when the layout fixes it.
    pub cpus_per_zone: Option<u32>,
}

impl Placement {
    /// The placement for `gpus` GPUs; an invalid layout is an error (resolution checks it, so
    /// a resolved node always has one).
    pub fn new(layout: Option<&NumaLayout>, gpus: u32) -> Result<Placement, LayoutError> {
        match layout {
            Some(l) => Ok(Placement { gpu_zone: gpu_zones(&l.split(gpus)?), zones: l.zones, cpus_per_zone: l.cpus_per_zone }),
            None => Ok(Placement::two_halves(gpus)),
        }
    }

    /// The default without a layout: two sockets, the GPUs in halves (a single GPU: one zone).
    pub fn two_halves(gpus: u32) -> Placement {
        let zones: u32 = if gpus > 1 { 2 } else { 1 };
        // 1 or 2 zones always split; the fallback only keeps this free of panics.
        let split = split_gpus(u64::from(zones), None, u64::from(gpus)).unwrap_or_else(|_| vec![u64::from(gpus)]);
        Placement { gpu_zone: gpu_zones(&split), zones, cpus_per_zone: None }
    }

    /// Zone of GPU `index` (0 for an index the node does not have).
    pub fn zone_of(&self, index: u32) -> u32 {
        self.gpu_zone.get(index as usize).copied().unwrap_or(0)
    }

    /// The CPU ids of `zone` on a host with `host_cpus` online CPUs: the layout's block of
    /// `cpus_per_zone`, else the host's CPUs divided evenly among the zones (every zone gets at
    /// least one; on a host with fewer CPUs than zones the ids wrap around).
    pub fn cpus_of(&self, zone: u32, host_cpus: u64) -> Range<u64> {
        match self.cpus_per_zone {
            Some(n) => zone_cpus(zone, u64::from(n)),
            None => {
                let host = host_cpus.max(1);
                let per = (host / u64::from(self.zones.max(1))).max(1);
                let first = (u64::from(zone) * per) % host;
                first..first + per
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn even_split_gives_the_remainder_to_the_lowest_zones() {
        assert_eq!(split_gpus(2, None, 5).unwrap(), vec![3, 2]);
        assert_eq!(split_gpus(4, None, 8).unwrap(), vec![2, 2, 2, 2]);
        assert_eq!(split_gpus(4, None, 6).unwrap(), vec![2, 2, 1, 1]);
        assert_eq!(split_gpus(3, None, 2).unwrap(), vec![1, 1, 0]);
        assert_eq!(gpu_zones(&split_gpus(4, None, 6).unwrap()), vec![0, 0, 1, 1, 2, 3]);
        assert_eq!(gpu_zones(&[1, 0, 2]), vec![0, 2, 2]);
    }

    #[test]
    fn explicit_lists_must_match_zones_and_gpus() {
        assert_eq!(split_gpus(4, Some(&[2, 2, 2, 2]), 8).unwrap(), vec![2, 2, 2, 2]);
        assert_eq!(split_gpus(2, Some(&[1, 3]), 4).unwrap(), vec![1, 3]);
        for (zones, list, gpus) in [(2u64, vec![1u64, 3], 5u64), (3, vec![1, 3], 4), (1, vec![u64::MAX, 2], 1)] {
            let e = split_gpus(zones, Some(&list), gpus).unwrap_err();
            assert!(e.to_string().contains("gpusPerZone"), "{e}");
        }
        assert_eq!(split_gpus(0, None, 2), Err(LayoutError::Zones(0)));
        assert_eq!(split_gpus(u64::from(MAX_ZONES) + 1, None, 2), Err(LayoutError::Zones(1025)));
    }

    #[test]
    fn placement_default_is_two_halves() {
        let p = Placement::new(None, 8).unwrap();
        assert_eq!(p.gpu_zone, vec![0, 0, 0, 0, 1, 1, 1, 1]);
        assert_eq!(p.zones, 2);
        let p = Placement::new(None, 3).unwrap();
        assert_eq!(p.gpu_zone, vec![0, 0, 1]);
        let one = Placement::new(None, 1).unwrap();
        assert_eq!((one.zones, one.gpu_zone.clone()), (1, vec![0]));
        // 64 host CPUs in halves.
        assert_eq!(p.cpus_of(1, 64), 32..64);
        assert_eq!(one.cpus_of(0, 64), 0..64);
    }

    #[test]
    fn placement_with_layout_and_cpus() {
        let l = NumaLayout { zones: 4, gpus_per_zone: Some(vec![1, 3, 0, 4]), cpus_per_zone: Some(12) };
        let p = Placement::new(Some(&l), 8).unwrap();
        assert_eq!(p.gpu_zone, vec![0, 1, 1, 1, 3, 3, 3, 3]);
        assert_eq!(p.zone_of(4), 3);
        assert_eq!(p.cpus_of(3, 2), 36..48, "a fixed CPU count per zone ignores the host");
        assert!(Placement::new(Some(&l), 7).is_err());
        let even = NumaLayout { zones: 4, gpus_per_zone: None, cpus_per_zone: None };
        let p = Placement::new(Some(&even), 6).unwrap();
        assert_eq!(p.gpu_zone, vec![0, 0, 1, 1, 2, 3]);
        assert_eq!(p.cpus_of(2, 16), 8..12);
        // Fewer host CPUs than zones: one each, wrapping.
        assert_eq!(p.cpus_of(3, 2), 1..2);
    }

    #[test]
    fn cores_and_zone_cpus() {
        assert_eq!(cores_of_millis(16_000), 16);
        assert_eq!(cores_of_millis(1_499), 1);
        assert_eq!(cores_of_millis(1_500), 2);
        assert_eq!(cores_of_millis(0), 0);
        assert_eq!(zone_cpus(2, 8), 16..24);
    }

    #[test]
    fn layout_json_round_trips_and_rejects_unknown_keys() {
        let l: NumaLayout = serde_json::from_str(r#"{"zones":2,"gpus_per_zone":[1,3]}"#).unwrap();
        assert_eq!(l, NumaLayout { zones: 2, gpus_per_zone: Some(vec![1, 3]), cpus_per_zone: None });
        assert_eq!(serde_json::to_string(&l).unwrap(), r#"{"zones":2,"gpus_per_zone":[1,3]}"#);
        assert!(serde_json::from_str::<NumaLayout>(r#"{"zones":2,"gpusPerZone":[1,3]}"#).is_err());
    }
}
