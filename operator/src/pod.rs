//! What the operator needs to know about a pod (extracted once from the API object), which pods
//! hold GPUs, and the usage upstream's `calculateUsage` assigns them: utilization range from
//! `run.ai/simulated-gpu-utilization`, `workloadKind` / PodGroup priority class, `gpu-fraction`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;

use crate::config::GPU_RESOURCE;
use crate::topology::{GpuUsageStatus, Range};

pub const UTILIZATION_ANNOTATION: &str = "run.ai/simulated-gpu-utilization";
pub const FRACTION_ANNOTATION: &str = "gpu-fraction";
pub const POD_GROUP_ANNOTATION: &str = "pod-group-name";
pub const WORKLOAD_KIND_LABEL: &str = "workloadKind";
/// Written by the kubelet plugins: the GPU UUIDs really granted (docs/operator-interfaces.md).
pub const GRANT_ANNOTATION: &str = "fake-gpu-operator.run.ai/allocated-gpus";
pub const GRANT_CONTAINER_ANNOTATION: &str = "fake-gpu-operator.run.ai/allocated-gpus-container";
pub const RESERVATION_NAMESPACE: &str = "runai-reservation";
pub const IDLE_POD_PREFIX: &str = "runai-idle-gpu-";

/// `namespace/name`.
pub type PodKey = (String, String);

/// The parts of a pod the index uses.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodInfo {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub node: Option<String>,
    pub phase: String,
    /// Creation time (unix seconds): the deterministic allocation order.
    pub created: i64,
    /// GPUs wanted: the `nvidia.com/gpu` limit of the first container that has one.
    pub gpus: u32,
    /// The container recorded in `allocatedBy`.
    pub container: String,
    /// `spec.resourceClaims` is not empty (DRA).
    pub has_claims: bool,
    pub annotations: BTreeMap<String, String>,
    pub workload_kind: Option<String>,
    /// `spec.priorityClassName` of the pod's PodGroup, when the adapter looked it up.
    pub pod_group_priority: Option<String>,
    /// Devices of driver `gpu.nvidia.com` allocated to the ResourceClaims reserved for this pod
    /// (`gpu-<uuid>`), filled in by the adapter.
    pub dra_devices: Vec<String>,
}

impl PodInfo {
    pub fn key(&self) -> PodKey {
        (self.namespace.clone(), self.name.clone())
    }

    /// Extracts what matters from an API pod.
    pub fn from_pod(p: &Pod) -> PodInfo {
        let spec = p.spec.as_ref();
        let containers = spec.map(|s| s.containers.as_slice()).unwrap_or_default();
        let limit = |c: &k8s_openapi::api::core::v1::Container| -> u32 {
            c.resources
                .as_ref()
                .and_then(|r| r.limits.as_ref().and_then(|l| l.get(GPU_RESOURCE)).or(r.requests.as_ref().and_then(|l| l.get(GPU_RESOURCE))))
                .and_then(|q| q.0.parse().ok())
                .unwrap_or(0)
        };
        let with_gpu = containers.iter().find(|c| limit(c) > 0);
        let with_claims = containers.iter().find(|c| c.resources.as_ref().and_then(|r| r.claims.as_ref()).is_some_and(|v| !v.is_empty()));
        let annotations = p.metadata.annotations.clone().unwrap_or_default();
        let container = annotations
            .get(GRANT_CONTAINER_ANNOTATION)
            .cloned()
            .or_else(|| with_gpu.or(with_claims).or(containers.first()).map(|c| c.name.clone()))
            .unwrap_or_default();
        PodInfo {
            uid: p.metadata.uid.clone().unwrap_or_default(),
            namespace: p.metadata.namespace.clone().unwrap_or_default(),
            name: p.metadata.name.clone().unwrap_or_default(),
            node: spec.and_then(|s| s.node_name.clone()).filter(|n| !n.is_empty()),
            phase: p.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default(),
            created: p.metadata.creation_timestamp.as_ref().map(|t| t.0.as_second()).unwrap_or(0),
            gpus: with_gpu.map(limit).unwrap_or(0),
            container,
            has_claims: spec.and_then(|s| s.resource_claims.as_ref()).is_some_and(|c| !c.is_empty()),
            workload_kind: p.metadata.labels.as_ref().and_then(|l| l.get(WORKLOAD_KIND_LABEL).cloned()),
            annotations,
            pod_group_priority: None,
            dra_devices: Vec::new(),
        }
    }

    /// Bound, not finished, and asking for GPUs (upstream's dedicated-pod selection; DRA pods
    /// count when they carry a grant).
    pub fn holds_gpus(&self) -> bool {
        self.node.is_some() && self.phase != "Succeeded" && self.phase != "Failed" && self.wanted() > 0
    }

    /// GPUs to record: the grant's size if there is one, else the `nvidia.com/gpu` limit.
    pub fn wanted(&self) -> u32 {
        match self.grant() {
            Some(g) if !g.is_empty() => g.len() as u32,
            _ => self.gpus,
        }
    }

    /// UUIDs from the grant annotation (trimmed, empty items dropped), else the DRA devices
    /// allocated to the pod's claims (`gpu-<uuid>`, matched case-insensitively like upstream).
    pub fn grant(&self) -> Option<Vec<String>> {
        match self.annotations.get(GRANT_ANNOTATION) {
            Some(v) => Some(v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect()),
            None if !self.dra_devices.is_empty() => Some(self.dra_devices.clone()),
            None => None,
        }
    }

    /// Reservation pods hold GPUs for shared pods: `allocatedBy` only, no usage entry.
    pub fn is_reservation(&self) -> bool {
        self.namespace == RESERVATION_NAMESPACE
    }

    /// Upstream pod type: from `workloadKind`, else the PodGroup's priority class.
    pub fn pod_type(&self) -> Option<&str> {
        match self.workload_kind.as_deref() {
            Some("TrainingWorkload") => Some("train"),
            Some("DistributedWorkload") => Some("distributed-inference"),
            Some("InferenceWorkload") => Some("inference"),
            Some("InteractiveWorkload") => Some("interactive"),
            _ => self.pod_group_priority.as_deref(),
        }
    }

    /// `gpu-fraction`, default 1.0; unparsable or out of (0, 1] → 1.0.
    pub fn fraction(&self) -> f64 {
        self.annotations
            .get(FRACTION_ANNOTATION)
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|f| *f > 0.0 && *f <= 1.0)
            .unwrap_or(1.0)
    }

    /// Upstream's `calculateUsage` (first matching rule wins).
    pub fn usage(&self, total_mib: u64) -> GpuUsageStatus {
        let fb_used = (total_mib as f64 * self.fraction()) as u64;
        let fixed = |min, max, knative| GpuUsageStatus { utilization: Range { min, max }, fb_used, use_knative_utilization: knative };
        if self.phase != "Running" || self.name.starts_with(IDLE_POD_PREFIX) {
            return fixed(0, 0, false);
        }
        if let Some(r) = self.annotations.get(UTILIZATION_ANNOTATION).and_then(|v| parse_range(v)) {
            return fixed(r.min, r.max, false);
        }
        match self.pod_type() {
            Some("train") => fixed(80, 100, false),
            Some("build" | "interactive-preemptible" | "interactive" | "distributed") => fixed(0, 0, false),
            Some("inference" | "distributed-inference") => fixed(0, 0, true),
            _ => fixed(100, 100, false),
        }
    }
}

/// `"N"` or `"N-M"` (upstream regex `(\d*)-*(\d*)`), clamped to 100, both ends inclusive.
/// `None` when it is not a number or a range whose minimum exceeds its maximum.
pub fn parse_range(text: &str) -> Option<Range> {
    let t = text.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (a, rest) = t.split_at(digits_end);
    let rest = rest.trim_start_matches('-');
    let b_end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    let (b, tail) = rest.split_at(b_end);
    if !tail.is_empty() || a.is_empty() {
        return None;
    }
    let min: u32 = a.parse::<u64>().ok()?.min(100) as u32;
    let max: u32 = if b.is_empty() { min } else { b.parse::<u64>().ok()?.min(100) as u32 };
    (min <= max).then_some(Range { min, max })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> PodInfo {
        PodInfo::from_pod(&serde_json::from_value(v).unwrap())
    }

    fn running(name: &str, ann: serde_json::Value, labels: serde_json::Value) -> PodInfo {
        pod(json!({
            "metadata": {"name": name, "namespace": "ns", "uid": "u", "annotations": ann, "labels": labels, "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"nodeName": "n1", "containers": [{"name": "side"}, {"name": "main", "resources": {"limits": {"nvidia.com/gpu": "2"}}}]},
            "status": {"phase": "Running"}
        }))
    }

    #[test]
    fn extraction() {
        let p = running("p", json!({}), json!({}));
        assert_eq!((p.gpus, p.container.as_str(), p.node.as_deref()), (2, "main", Some("n1")));
        assert_eq!(p.created, 1767225600);
        assert!(p.holds_gpus());
        let unbound = pod(
            json!({"metadata": {"name": "x"}, "spec": {"containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}}),
        );
        assert!(!unbound.holds_gpus());
        let mut done = p.clone();
        done.phase = "Succeeded".into();
        assert!(!done.holds_gpus());
        done.phase = "Failed".into();
        assert!(!done.holds_gpus());
        let cpu = pod(json!({"metadata": {"name": "x"}, "spec": {"nodeName": "n", "containers": [{"name": "c"}]}}));
        assert!(!cpu.holds_gpus());
    }

    #[test]
    fn grant_annotation() {
        let p = running("p", json!({GRANT_ANNOTATION: " GPU-a, ,GPU-b,GPU-c", GRANT_CONTAINER_ANNOTATION: "side"}), json!({}));
        assert_eq!(p.grant().unwrap(), ["GPU-a", "GPU-b", "GPU-c"]);
        assert_eq!(p.wanted(), 3);
        assert_eq!(p.container, "side");
        // A DRA pod with a grant holds GPUs even without an nvidia.com/gpu limit.
        let dra = pod(json!({
            "metadata": {"name": "d", "annotations": {GRANT_ANNOTATION: "GPU-x"}},
            "spec": {"nodeName": "n", "resourceClaims": [{"name": "g", "resourceClaimName": "c"}],
                     "containers": [{"name": "c0"}, {"name": "c1", "resources": {"claims": [{"name": "g"}]}}]},
            "status": {"phase": "Running"}
        }));
        assert!(dra.has_claims && dra.holds_gpus());
        assert_eq!(dra.container, "c1");
    }

    #[test]
    fn dra_devices_are_a_grant() {
        let mut dra = pod(json!({
            "metadata": {"name": "d"},
            "spec": {"nodeName": "n", "resourceClaims": [{"name": "g", "resourceClaimName": "c"}], "containers": [{"name": "c0"}]},
            "status": {"phase": "Running"}
        }));
        assert!(!dra.holds_gpus(), "nothing allocated yet");
        dra.dra_devices = vec!["gpu-aaaa".into(), "gpu-bbbb".into()];
        assert!(dra.holds_gpus());
        assert_eq!(dra.wanted(), 2);
        // The annotation wins.
        dra.annotations.insert(GRANT_ANNOTATION.into(), "GPU-cccc".into());
        assert_eq!(dra.grant().unwrap(), ["GPU-cccc"]);
    }

    #[test]
    fn ranges() {
        let r = |min, max| Some(Range { min, max });
        assert_eq!(parse_range("40-60"), r(40, 60));
        assert_eq!(parse_range("70"), r(70, 70));
        assert_eq!(parse_range(" 0-100 "), r(0, 100));
        assert_eq!(parse_range("50--90"), r(50, 90));
        assert_eq!(parse_range("90-150"), r(90, 100));
        for bad in ["", "abc", "-5", "60-40", "4x", "1-2-3", "1.5"] {
            assert_eq!(parse_range(bad), None, "{bad}");
        }
    }

    #[test]
    fn usage_rules_in_order() {
        let u = |p: &PodInfo| {
            let s = p.usage(1000);
            (s.utilization.min, s.utilization.max, s.use_knative_utilization)
        };
        assert_eq!(
            u(&running("p", json!({UTILIZATION_ANNOTATION: "40-60"}), json!({"workloadKind": "TrainingWorkload"}))),
            (40, 60, false)
        );
        assert_eq!(u(&running("p", json!({}), json!({"workloadKind": "TrainingWorkload"}))), (80, 100, false));
        assert_eq!(u(&running("p", json!({}), json!({"workloadKind": "InteractiveWorkload"}))), (0, 0, false));
        assert_eq!(u(&running("p", json!({}), json!({"workloadKind": "InferenceWorkload"}))), (0, 0, true));
        assert_eq!(u(&running("p", json!({}), json!({"workloadKind": "DistributedWorkload"}))), (0, 0, true));
        assert_eq!(u(&running("p", json!({}), json!({}))), (100, 100, false));
        assert_eq!(u(&running("p", json!({UTILIZATION_ANNOTATION: "junk"}), json!({}))), (100, 100, false));
        assert_eq!(u(&running("runai-idle-gpu-1", json!({UTILIZATION_ANNOTATION: "50"}), json!({}))), (0, 0, false));
        let mut pending = running("p", json!({UTILIZATION_ANNOTATION: "50"}), json!({}));
        pending.phase = "Pending".into();
        assert_eq!(u(&pending), (0, 0, false));
        // PodGroup priority class when there is no workloadKind.
        let mut pg = running("p", json!({}), json!({}));
        for (class, want) in [
            ("build", (0, 0, false)),
            ("interactive-preemptible", (0, 0, false)),
            ("train", (80, 100, false)),
            ("inference", (0, 0, true)),
            ("other", (100, 100, false)),
        ] {
            pg.pod_group_priority = Some(class.into());
            assert_eq!(u(&pg), want, "{class}");
        }
    }

    #[test]
    fn fraction_to_memory() {
        assert_eq!(running("p", json!({FRACTION_ANNOTATION: "0.5"}), json!({})).usage(11441).fb_used, 5720);
        assert_eq!(running("p", json!({}), json!({})).usage(11441).fb_used, 11441);
        for bad in ["0", "-1", "2", "x"] {
            assert_eq!(running("p", json!({FRACTION_ANNOTATION: bad}), json!({})).usage(100).fb_used, 100, "{bad}");
        }
    }
}
