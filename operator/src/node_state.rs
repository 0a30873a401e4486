//! The live node state (`fakegpu_model::state`, file `fakegpu-state.json` beside the node
//! config) that the status-updater keeps in line with the allocations, so the fake NVML on a
//! real node reports what the pods do: per GPU, utilization = the midpoint of the summed usage
//! ranges (capped at 100) and memory used = the summed `fbUsed`. Pure; the adapter stores it
//! with `fakegpu_model::state_file::update`.

use fakegpu_model::config::NodeSpec;
use fakegpu_model::state::{self, NodeState, Now, SetRequest, StateError};
use fakegpu_model::telemetry::MIB;

use crate::topology::NodeTopology;

/// Per GPU: (utilization percent, memory used bytes).
pub fn targets(t: &NodeTopology) -> Vec<(u32, u64)> {
    t.gpus
        .iter()
        .map(|g| {
            let u = &g.status.pod_gpu_usage_status;
            let util: u32 = u.values().filter(|s| !s.use_knative_utilization).map(|s| (s.utilization.min + s.utilization.max) / 2).sum();
            let mib: u64 = u.values().map(|s| s.fb_used).sum::<u64>().min(t.gpu_memory);
            (util.min(100), mib * MIB)
        })
        .collect()
}

/// Brings `st` to `targets`; GPUs already there are not touched (no rewrite, counters keep running).
pub fn apply(st: &mut NodeState, spec: &NodeSpec, targets: &[(u32, u64)], now: Now) -> Result<(), StateError> {
    let usable = (spec.profile.memory.total_mib - spec.profile.memory.reserved_mib) * MIB;
    for (i, &(util, bytes)) in targets.iter().enumerate().take(spec.gpu_count as usize) {
        let bytes = bytes.min(usable);
        let i = i as u32;
        let (cur_util, cur_bytes) = st.gpu(i).map_or((0, 0), |g| (g.utilization.gpu, g.memory_used_bytes));
        if (cur_util, cur_bytes) != (util, bytes) {
            let req = SetRequest { gpu_util: Some(util), memory_used_bytes: Some(bytes), ..Default::default() };
            state::set(st, spec, i, &req, now)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::{GpuDetails, GpuStatus, GpuUsageStatus, Range};

    fn topo() -> NodeTopology {
        let mut busy = GpuStatus::default();
        busy.pod_gpu_usage_status
            .insert("a".into(), GpuUsageStatus { utilization: Range { min: 40, max: 60 }, fb_used: 1000, use_knative_utilization: false });
        busy.pod_gpu_usage_status.insert(
            "b".into(),
            GpuUsageStatus { utilization: Range { min: 80, max: 100 }, fb_used: 99_999, use_knative_utilization: false },
        );
        NodeTopology {
            gpu_memory: 15360,
            gpus: vec![GpuDetails { id: "x".into(), status: busy }, GpuDetails::default()],
            ..Default::default()
        }
    }

    #[test]
    fn targets_sum_and_cap() {
        assert_eq!(targets(&topo()), [(100, 15360 * MIB), (0, 0)]);
    }

    #[test]
    fn apply_sets_and_is_idempotent() {
        let spec = NodeSpec::builtin("t4", Some(2), "n").unwrap();
        let now = Now { unix_ms: 1_000, boot_ms: 1_000 };
        let mut st = NodeState::default();
        let t = [(50, 1000 * MIB), (0, 0)];
        apply(&mut st, &spec, &t, now).unwrap();
        assert_eq!(st.gpu(0).unwrap().utilization.gpu, 50);
        assert_eq!(st.gpu(0).unwrap().memory_used_bytes, 1000 * MIB);
        assert!(st.gpu(1).is_none(), "idle GPU never written");
        let before = st.clone();
        apply(&mut st, &spec, &t, Now { unix_ms: 9_000, boot_ms: 9_000 }).unwrap();
        assert_eq!(st, before, "no change, no write");
        // More memory than the GPU can hand out is capped, not an error.
        apply(&mut st, &spec, &[(10, u64::MAX / 2), (0, 0)], now).unwrap();
        assert!(st.gpu(0).unwrap().memory_used_bytes < 15360 * MIB);
    }
}
