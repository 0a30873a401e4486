//! GPU health from the fake NVML's live state file (`fakegpu_model::state_file`), with the MIG
//! layouts that decide which devices exist: a GPU that fell off the bus, has uncorrectable ECC
//! errors or a critical XID is unhealthy (and so are its MIG devices), as NVIDIA's device plugin
//! decides from NVML events. Application XIDs (13, 31, 43, 45, 68, 109) are the
//! ones NVIDIA's plugin skips by default.
//!
//! The file is validated against the node's profile and MIG tables exactly as the fake NVML
//! validates it (`fakegpu_model::state_file::read_checked`, through a `Follower`): a corrupt
//! file keeps the last good state, with one log line per bad spell.

use std::path::Path;

use fakegpu_model::state::{Faults, GpuState, NodeState};
use fakegpu_model::state_file::{self, Follower};
use fakegpu_model::NodeSpec;

/// XIDs caused by applications, not the GPU (NVIDIA's device plugin ignores these).
pub const APPLICATION_XIDS: [u32; 6] = [13, 31, 43, 45, 68, 109];

/// Whether a GPU with these faults is healthy.
pub fn is_healthy(faults: &Faults) -> bool {
    !faults.lost && faults.ecc_volatile.dbe == 0 && faults.xids.iter().all(|x| APPLICATION_XIDS.contains(x))
}

/// Health of GPUs `0..count` in `state` (a GPU absent from it is healthy).
pub fn gpu_health(state: &NodeState, count: u32) -> Vec<bool> {
    (0..count).map(|i| state.gpu(i).is_none_or(|g| is_healthy(&g.faults))).collect()
}

/// Reads the state file of the node `spec`: all healthy when it does not exist; the error when
/// it is unreadable or holds a value impossible for the node.
pub fn read_health(state_path: &Path, spec: &NodeSpec) -> Result<Vec<bool>, state_file::StateFileError> {
    Ok(gpu_health(&state_file::read_checked(state_path, spec)?, spec.gpu_count))
}

/// What the device plugin follows in the state file: GPU health and the MIG layouts. Only
/// these, so that the frequent utilization writes do not make it resend device lists.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Live {
    /// Health of GPUs `0..count`.
    pub health: Vec<bool>,
    /// The state reduced to its MIG layouts.
    pub mig: NodeState,
}

impl Live {
    /// All healthy, no MIG: a node without a state file.
    pub fn idle(count: u32) -> Live {
        Live { health: vec![true; count as usize], mig: NodeState::default() }
    }

    pub fn of(state: &NodeState, count: u32) -> Live {
        let mut mig = NodeState::default();
        for (key, gpu) in &state.gpus {
            if gpu.mig != Default::default() {
                mig.gpus.insert(key.clone(), GpuState { mig: gpu.mig.clone(), ..Default::default() });
            }
        }
        Live { health: gpu_health(state, count), mig }
    }
}

/// Re-reads health and MIG layouts: [`Live::idle`] while the file does not exist; the last good
/// state (and one warning per bad spell) while it is unreadable or corrupt.
pub fn poll_live(follower: &mut Follower) -> Live {
    if let Some(kept) = follower.refresh() {
        tracing::warn!("{kept}");
    }
    Live::of(follower.state(), follower.spec().gpu_count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_corrupt_state_file_keeps_the_last_good_health_and_layout() {
        let dir = std::env::temp_dir().join(format!("fakegpu-health-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.json");
        let _ = std::fs::remove_file(&path);
        let spec = NodeSpec::builtin("a100-40gb", Some(2), "n").unwrap();
        let mut follower = Follower::new(path.clone(), spec.clone());
        assert_eq!(poll_live(&mut follower), Live::idle(2), "no file: all healthy, no MIG");
        state_file::update(&path, &spec, |s| {
            fakegpu_model::state::inject(s, &spec, 1, &fakegpu_model::state::Fault::Xid(79), state_file::now())
        })
        .unwrap();
        let good = poll_live(&mut follower);
        assert_eq!(good.health, [true, false]);
        // Values no node of this profile can have: GPU keys past its count, MIG ids no table has,
        // an impossible utilization. Each is refused; the last good state stays.
        for bad in [
            r#"{"version":1,"gpus":{"5":{}}}"#,
            r#"{"version":1,"gpus":{"x":{}}}"#,
            r#"{"version":1,"gpus":{"0":{"mig":{"current":true,"pending":true,"gpu_instances":[{"id":842,"profile":0,"placement":{"start":0,"size":1},"compute_instances":[]}]}}}}"#,
            r#"{"version":1,"gpus":{"0":{"utilization":{"gpu":1000}}}}"#,
        ] {
            std::fs::write(&path, bad).unwrap();
            assert_eq!(poll_live(&mut follower), good, "{bad}");
            let err = read_health(&path, &spec).unwrap_err().to_string();
            assert!(err.contains("corrupt state") && err.contains(path.to_str().unwrap()), "{bad}: {err}");
            assert!(super::super::devices::read_state(&path, &spec).is_err(), "{bad}");
        }
        // Format-valid and node-valid again: followed.
        std::fs::write(&path, r#"{"version":1,"gpus":{}}"#).unwrap();
        assert_eq!(poll_live(&mut follower), Live::idle(2));
        assert_eq!(read_health(&path, &spec).unwrap(), [true, true]);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn faults_that_make_a_gpu_unhealthy() {
        assert!(is_healthy(&Faults::default()));
        assert!(is_healthy(&Faults { xids: vec![13, 43], ..Default::default() }));
        assert!(!is_healthy(&Faults { xids: vec![79], ..Default::default() }));
        assert!(!is_healthy(&Faults { lost: true, ..Default::default() }));
        let mut dbe = Faults::default();
        dbe.ecc_volatile.dbe = 1;
        assert!(!is_healthy(&dbe));
        dbe.ecc_volatile.dbe = 0;
        dbe.ecc_volatile.sbe = 5;
        assert!(is_healthy(&dbe));
    }
}
