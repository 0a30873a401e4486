//! NUMA placement as the library reports it: with a node config `numa` layout (the pool's
//! `numa` block, carried by the operator) each GPU's memory affinity names its zone, its CPU
//! affinity is that zone's CPUs, GPUs of one zone share a NUMA node (`NODE`) and GPUs of
//! different zones meet across the interconnect (`SYSTEM`); without one the two-halves default
//! stays. The expected zones come from the model's layout function, which the operator's
//! NodeResourceTopology and podresources use too. Each case runs in a fresh child.

mod common;

use std::ffi::{c_uint, c_ulong};
use std::ptr::null_mut;

use fakegpu_model::numa::{gpu_zones, split_gpus};
use nvidia_ml::exports::device_ids::*;
use nvidia_ml::exports::system::*;
use nvidia_ml::exports::topology::*;
use nvml_abi::consts::*;
use nvml_abi::ret;

use common::{current_case, run_case, scratch_dir};

/// Prints per device `numa<i>=<memory affinity node>`, `cpus<i>=<first>-<last>` and
/// `anc<i>=<common ancestor with every device, comma separated>`.
fn child_report() {
    unsafe {
        assert_eq!(nvmlInit_v2(), ret::SUCCESS);
        let mut count: c_uint = 0;
        assert_eq!(nvmlDeviceGetCount_v2(&mut count), ret::SUCCESS);
        println!("count={count}");
        let devs: Vec<_> = (0..count)
            .map(|i| {
                let mut dev = null_mut();
                assert_eq!(nvmlDeviceGetHandleByIndex_v2(i, &mut dev), ret::SUCCESS);
                dev
            })
            .collect();
        for (i, dev) in devs.iter().enumerate() {
            let mut nodes = [0 as c_ulong; 4];
            assert_eq!(nvmlDeviceGetMemoryAffinity(*dev, 4, nodes.as_mut_ptr(), NVML_AFFINITY_SCOPE_NODE), ret::SUCCESS);
            let set: Vec<usize> = (0..256).filter(|b| nodes[b / 64] >> (b % 64) & 1 == 1).collect();
            assert_eq!(set.len(), 1, "one NUMA node per GPU: {set:?}");
            println!("numa{i}={}", set[0]);
            let mut cpus = [0 as c_ulong; 4];
            assert_eq!(nvmlDeviceGetCpuAffinity(*dev, 4, cpus.as_mut_ptr()), ret::SUCCESS);
            let mut within = [0 as c_ulong; 4];
            assert_eq!(nvmlDeviceGetCpuAffinityWithinScope(*dev, 4, within.as_mut_ptr(), NVML_AFFINITY_SCOPE_NODE), ret::SUCCESS);
            assert_eq!(cpus, within);
            let on: Vec<usize> = (0..256).filter(|b| cpus[b / 64] >> (b % 64) & 1 == 1).collect();
            assert!(on.windows(2).all(|w| w[1] == w[0] + 1), "contiguous CPUs: {on:?}");
            println!("cpus{i}={}-{}", on[0], on[on.len() - 1]);
            let anc: Vec<String> = devs
                .iter()
                .map(|other| {
                    let mut path: c_uint = 99;
                    assert_eq!(nvmlDeviceGetTopologyCommonAncestor(*dev, *other, &mut path), ret::SUCCESS);
                    path.to_string()
                })
                .collect();
            println!("anc{i}={}", anc.join(","));
            // A one-word mask cannot hold a node beyond 63; every zone here fits.
            let mut one = [0 as c_ulong; 1];
            assert_eq!(nvmlDeviceGetMemoryAffinity(*dev, 1, one.as_mut_ptr(), NVML_AFFINITY_SCOPE_NODE), ret::SUCCESS);
        }
        assert_eq!(nvmlShutdown(), ret::SUCCESS);
    }
}

#[test]
fn child() {
    if let Some(case) = current_case() {
        match case.as_str() {
            "report" => child_report(),
            "init" => println!("rc={}", nvmlInit_v2()),
            other => panic!("unknown case {other}"),
        }
    }
}

struct Report {
    numa: Vec<u32>,
    cpus: Vec<(u64, u64)>,
    anc: Vec<Vec<u32>>,
}

/// Runs the report on a node config with `numa` (JSON text, None = no layout).
fn report(tag: &str, gpus: u32, numa: Option<&str>, extra_env: &[(&str, &str)]) -> Report {
    let dir = scratch_dir(tag);
    let path = dir.join("config.json");
    let numa = numa.map(|n| format!(",\"numa\":{n}")).unwrap_or_default();
    std::fs::write(&path, format!(r#"{{"node":"numa-node","profile":"h100","gpus":{gpus}{numa}}}"#)).unwrap();
    let mut env = vec![("FAKEGPU_CONFIG", path.display().to_string())];
    env.extend(extra_env.iter().map(|(k, v)| (*k, v.to_string())));
    let child = run_case("report", &env);
    child.assert_ok();
    let n: usize = child.value("count").unwrap().parse().unwrap();
    let get = |k: String| child.value(&k).unwrap_or_else(|| panic!("no {k}"));
    Report {
        numa: (0..n).map(|i| get(format!("numa{i}")).parse().unwrap()).collect(),
        cpus: (0..n)
            .map(|i| {
                let v = get(format!("cpus{i}"));
                let (a, b) = v.split_once('-').unwrap();
                (a.parse().unwrap(), b.parse().unwrap())
            })
            .collect(),
        anc: (0..n).map(|i| get(format!("anc{i}")).split(',').map(|x| x.parse().unwrap()).collect()).collect(),
    }
}

/// Same zone: NODE; other zones: SYSTEM; itself: INTERNAL.
fn check_ancestors(r: &Report) {
    for (i, row) in r.anc.iter().enumerate() {
        for (j, path) in row.iter().enumerate() {
            let want = if i == j {
                NVML_TOPOLOGY_INTERNAL
            } else if r.numa[i] == r.numa[j] {
                NVML_TOPOLOGY_NODE
            } else {
                NVML_TOPOLOGY_SYSTEM
            };
            assert_eq!(*path, want, "GPU{i}→GPU{j}");
        }
    }
}

#[test]
fn four_zones_of_two_gpus() {
    let r = report("four", 8, Some(r#"{"zones":4,"gpus_per_zone":[2,2,2,2],"cpus_per_zone":16}"#), &[]);
    assert_eq!(r.numa, vec![0, 0, 1, 1, 2, 2, 3, 3]);
    assert_eq!(r.numa, gpu_zones(&split_gpus(4, Some(&[2, 2, 2, 2]), 8).unwrap()));
    // Zone z owns CPUs [16z, 16z+16), whatever the host has.
    let want: Vec<(u64, u64)> = r.numa.iter().map(|z| (u64::from(*z) * 16, u64::from(*z) * 16 + 15)).collect();
    assert_eq!(r.cpus, want);
    check_ancestors(&r);
    assert_eq!(r.anc[0][1], NVML_TOPOLOGY_NODE);
    assert_eq!(r.anc[1][2], NVML_TOPOLOGY_SYSTEM);
}

#[test]
fn uneven_zones_even_split_and_explicit() {
    // 6 GPUs over 4 zones: 2, 2, 1, 1 (remainder to the lowest zones).
    let r = report("even", 6, Some(r#"{"zones":4,"cpus_per_zone":8}"#), &[]);
    assert_eq!(r.numa, vec![0, 0, 1, 1, 2, 3]);
    assert_eq!(r.cpus[5], (24, 31));
    check_ancestors(&r);
    // An explicit uneven list, with an empty zone.
    let r = report("explicit", 5, Some(r#"{"zones":3,"gpus_per_zone":[1,0,4],"cpus_per_zone":4}"#), &[]);
    assert_eq!(r.numa, vec![0, 2, 2, 2, 2]);
    assert_eq!(r.cpus[1], (8, 11));
    check_ancestors(&r);
}

#[test]
fn visible_devices_keep_their_host_zone() {
    // Only GPUs 1 and 6 in the container: they stay on zones 0 and 3.
    let r = report("visible", 8, Some(r#"{"zones":4,"cpus_per_zone":2}"#), &[("NVIDIA_VISIBLE_DEVICES", "1,6")]);
    assert_eq!(r.numa, vec![0, 3]);
    assert_eq!(r.cpus, vec![(0, 1), (6, 7)]);
}

#[test]
fn without_a_layout_the_gpus_are_in_halves() {
    let r = report("halves", 4, None, &[]);
    assert_eq!(r.numa, vec![0, 0, 1, 1]);
    check_ancestors(&r);
    // The host's CPUs in two halves (one CPU: both halves get it).
    // SAFETY: sysconf has no memory-safety preconditions.
    let host = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as u64;
    if host > 1 {
        assert_eq!(r.cpus[0].0, 0);
        assert_eq!(r.cpus[3].0, host / 2);
    }
}

#[test]
fn a_layout_that_does_not_fit_fails_init_with_the_reason() {
    let dir = scratch_dir("misfit");
    let path = dir.join("config.json");
    std::fs::write(&path, r#"{"profile":"h100","gpus":4,"numa":{"zones":2,"gpus_per_zone":[1,2]}}"#).unwrap();
    let child = run_case("init", &[("FAKEGPU_CONFIG", path.display().to_string())]);
    child.assert_ok();
    assert_eq!(child.value("rc"), Some(ret::INVALID_ARGUMENT.to_string()));
    assert!(child.stderr().contains("gpusPerZone") && child.stderr().contains("`numa`"), "{}", child.stderr());
}
