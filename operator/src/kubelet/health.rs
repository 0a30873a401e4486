//! GPU health from the fake NVML's live state file (`fakegpu_model::state_file`), with the MIG
//! layouts that decide which devices exist: a GPU that fell off the bus, has uncorrectable ECC
//! errors or a critical XID is unhealthy (and so are its MIG devices), as NVIDIA's device plugin
//! decides from NVML events. Application XIDs (13, 31, 43, 45, 68, 109) are the
//! ones NVIDIA's plugin skips by default.

use std::path::Path;

use fakegpu_model::state::{Faults, GpuState, NodeState};

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

/// Reads the state file: all healthy when it does not exist; the error when it is unreadable.
pub fn read_health(state_path: &Path, count: u32) -> Result<Vec<bool>, fakegpu_model::state_file::StateFileError> {
    Ok(read_live(state_path, count)?.health)
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

/// Reads health and MIG layouts: [`Live::idle`] when the file does not exist; the error when it is unreadable.
pub fn read_live(state_path: &Path, count: u32) -> Result<Live, fakegpu_model::state_file::StateFileError> {
    Ok(Live::of(&super::devices::read_state(state_path)?, count))
}

#[cfg(test)]
mod tests {
    use super::*;

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
