//! What the operator needs to know about a pod (extracted once from the API object), which pods
//! hold GPUs (dedicated, reservation) or use one (shared/fractional), the upstream pod type
//! (`workloadKind`, else the PodGroup's priority class) and the usage upstream's
//! `calculateUsage` assigns: utilization range from `run.ai/simulated-gpu-utilization`, the
//! pod type, `gpu-fraction`.

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
/// Upstream's reservation namespace (`RESOURCE_RESERVATION_NAMESPACE`): its GPU pods hold
/// GPUs on behalf of shared (fractional) pods.
pub const DEFAULT_RESERVATION_NAMESPACE: &str = "runai-reservation";
/// On a reservation pod: the GPU it reserves. Written by the status-updater as the GPU UUID
/// unless present (Run:ai clients before 2.17 wrote a GPU index themselves).
pub const RESERVED_GPU_ANNOTATION: &str = "run.ai/reserve_for_gpu_index";
/// On a shared pod (deprecated): matched against a reservation pod's [`RESERVED_GPU_ANNOTATION`].
pub const SHARED_GPU_ANNOTATION: &str = "runai-gpu";
/// On a shared pod and its reservation pod: the shared-GPU group they belong to.
pub const GPU_GROUP_LABEL: &str = "runai-gpu-group";
/// Pod types whose utilization comes from request rates (Knative), upstream's
/// `useKnativeUtilization: true`.
pub const INFERENCE_POD_TYPES: [&str; 2] = ["inference", "distributed-inference"];
pub const IDLE_POD_PREFIX: &str = "runai-idle-gpu-";
/// NVIDIA's device plugin's MIG resources under the `mixed` strategy:
/// [`crate::topology::mig_resource_name`].
pub const MIG_RESOURCE_PREFIX: &str = "nvidia.com/mig-";

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
    /// MIG devices wanted under the `mixed` strategy: `nvidia.com/mig-<profile>` → count, over
    /// all containers (each container gets its own devices).
    pub mig: BTreeMap<String, u32>,
    /// The container recorded in `allocatedBy`.
    pub container: String,
    /// `spec.resourceClaims` is not empty (DRA).
    pub has_claims: bool,
    pub annotations: BTreeMap<String, String>,
    pub workload_kind: Option<String>,
    /// Label `runai-gpu-group`.
    pub gpu_group: Option<String>,
    /// `spec.priorityClassName` of the PodGroup named by `pod-group-name`; the index fills it
    /// in from the PodGroups it was given.
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
        let mut mig: BTreeMap<String, u32> = BTreeMap::new();
        for c in containers {
            let Some(r) = c.resources.as_ref() else { continue };
            // Extended resources: a limit implies the same request, a request alone is as good.
            let wanted = r.limits.as_ref().filter(|l| l.keys().any(|k| k.starts_with(MIG_RESOURCE_PREFIX))).or(r.requests.as_ref());
            for (name, q) in wanted.into_iter().flatten().filter(|(k, _)| k.starts_with(MIG_RESOURCE_PREFIX)) {
                if let Some(n) = q.0.parse::<u32>().ok().filter(|n| *n > 0) {
                    *mig.entry(name.clone()).or_default() += n;
                }
            }
        }
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
            mig,
            container,
            has_claims: spec.and_then(|s| s.resource_claims.as_ref()).is_some_and(|c| !c.is_empty()),
            workload_kind: p.metadata.labels.as_ref().and_then(|l| l.get(WORKLOAD_KIND_LABEL).cloned()),
            gpu_group: p.metadata.labels.as_ref().and_then(|l| l.get(GPU_GROUP_LABEL).cloned()).filter(|g| !g.is_empty()),
            annotations,
            pod_group_priority: None,
            dra_devices: Vec::new(),
        }
    }

    /// Bound and not finished.
    pub fn is_active(&self) -> bool {
        self.node.is_some() && self.phase != "Succeeded" && self.phase != "Failed"
    }

    /// Bound, not finished, and asking for GPUs (upstream's dedicated-pod selection; DRA pods
    /// count when they carry a grant).
    pub fn holds_gpus(&self) -> bool {
        self.is_active() && self.wanted() > 0
    }

    /// Bound, not finished, and asking for MIG devices (`nvidia.com/mig-<profile>`) or granted
    /// some.
    pub fn holds_mig_devices(&self) -> bool {
        self.is_active() && (!self.mig.is_empty() || !self.granted_mig_devices().is_empty())
    }

    /// What a shared (fractional) pod names to find its reservation pod: active, outside the
    /// reservation namespace, with a `runai-gpu-group` label or `runai-gpu` annotation, and no
    /// whole GPUs of its own (a pod that holds GPUs is recorded as a dedicated one; upstream
    /// ran both handlers and could record it twice).
    pub fn shared_ref(&self, reservation_ns: &str) -> Option<SharedRef<'_>> {
        if !self.is_active() || self.namespace == reservation_ns || self.wanted() > 0 {
            return None;
        }
        let group = self.gpu_group.as_deref();
        let gpu = self.annotations.get(SHARED_GPU_ANNOTATION).map(|v| v.trim()).filter(|v| !v.is_empty());
        (group.is_some() || gpu.is_some()).then_some(SharedRef { group, gpu })
    }

    /// `pod-group-name`, if set.
    pub fn pod_group_name(&self) -> Option<&str> {
        self.annotations.get(POD_GROUP_ANNOTATION).map(String::as_str).filter(|n| !n.is_empty())
    }

    /// The value of `run.ai/reserve_for_gpu_index`, if set.
    pub fn reserved_gpu(&self) -> Option<&str> {
        self.annotations.get(RESERVED_GPU_ANNOTATION).map(|v| v.trim())
    }

    /// GPUs to record: the grant's size if there is one, else the `nvidia.com/gpu` limit.
    pub fn wanted(&self) -> u32 {
        match self.grant() {
            Some(g) if !g.is_empty() => g.iter().filter(|u| !is_mig_device(u)).count() as u32,
            _ => self.gpus,
        }
    }

    /// The whole GPUs of the grant (see [`Self::grant`]).
    pub fn granted_gpus(&self) -> Vec<String> {
        self.grant().unwrap_or_default().into_iter().filter(|u| !is_mig_device(u)).collect()
    }

    /// The MIG devices of the grant: UUIDs from a kubelet plugin's annotation, or DRA device
    /// names (the lowercased UUID) of allocated claims.
    pub fn granted_mig_devices(&self) -> Vec<String> {
        self.grant().unwrap_or_default().into_iter().filter(|u| is_mig_device(u)).collect()
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
    pub fn is_reservation(&self, reservation_ns: &str) -> bool {
        self.namespace == reservation_ns
    }

    /// Upstream pod type: from `workloadKind`, else the PodGroup's priority class. A
    /// `workloadKind` outside upstream's four falls back to the PodGroup too, so newer Run:ai
    /// kinds still get a type when their PodGroup has one.
    pub fn pod_type(&self) -> Option<&str> {
        match self.workload_kind.as_deref() {
            Some("TrainingWorkload") => Some("train"),
            Some("DistributedWorkload") => Some("distributed-inference"),
            Some("InferenceWorkload") => Some("inference"),
            Some("InteractiveWorkload") => Some("interactive"),
            _ => self.pod_group_priority.as_deref(),
        }
    }

    /// Inference pods: utilization from their request rate (`useKnativeUtilization`).
    pub fn is_inference(&self) -> bool {
        self.pod_type().is_some_and(|t| INFERENCE_POD_TYPES.contains(&t))
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
        if self.is_inference() {
            return fixed(0, 0, true);
        }
        match self.pod_type() {
            Some("train") => fixed(80, 100, false),
            Some("build" | "interactive-preemptible" | "interactive" | "distributed") => fixed(0, 0, false),
            _ => fixed(100, 100, false),
        }
    }
}

/// `MIG-…` (NVML's MIG UUID) or `mig-…` (its DRA device name), as opposed to a GPU's `GPU-…`.
fn is_mig_device(id: &str) -> bool {
    id.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("mig-"))
}

/// How a shared pod names its reservation pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedRef<'a> {
    /// Label `runai-gpu-group`: the reservation pod with the same label.
    pub group: Option<&'a str>,
    /// Annotation `runai-gpu`: the reservation pod whose `run.ai/reserve_for_gpu_index` has
    /// this value (a GPU index from pre-2.17 clients, or a GPU UUID).
    pub gpu: Option<&'a str>,
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
    fn granted_mig_devices_are_not_whole_gpus() {
        let p = running("p", json!({GRANT_ANNOTATION: "GPU-a,MIG-b"}), json!({}));
        assert_eq!((p.wanted(), p.granted_gpus(), p.granted_mig_devices()), (1, vec!["GPU-a".to_string()], vec!["MIG-b".to_string()]));
        let mut dra = running("d", json!({}), json!({}));
        dra.gpus = 0;
        dra.dra_devices = vec!["mig-0a1b".into()];
        assert_eq!((dra.wanted(), dra.holds_gpus(), dra.holds_mig_devices()), (0, false, true));
    }

    #[test]
    fn mig_devices_are_summed_over_containers() {
        let p = pod(json!({
            "metadata": {"name": "m", "namespace": "ns", "uid": "u"},
            "spec": {"nodeName": "n1", "containers": [
                {"name": "a", "resources": {"limits": {"nvidia.com/mig-1g.10gb": "2", "cpu": "1"}}},
                {"name": "b", "resources": {"requests": {"nvidia.com/mig-1g.10gb": "1", "nvidia.com/mig-3g.40gb": "1", "nvidia.com/mig-2g.20gb": "0"}}},
                {"name": "c"}
            ]},
            "status": {"phase": "Running"}
        }));
        let want = BTreeMap::from([("nvidia.com/mig-1g.10gb".to_string(), 3), ("nvidia.com/mig-3g.40gb".to_string(), 1)]);
        assert_eq!(p.mig, want);
        assert!(p.holds_mig_devices());
        assert!(!p.holds_gpus(), "no whole GPU");
        assert!(!PodInfo { phase: "Succeeded".into(), ..p }.holds_mig_devices());
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

    #[test]
    fn shared_pods() {
        let res = DEFAULT_RESERVATION_NAMESPACE;
        let p = pod(json!({
            "metadata": {"name": "s", "namespace": "team", "labels": {GPU_GROUP_LABEL: "g1"},
                         "annotations": {SHARED_GPU_ANNOTATION: " GPU-abc ", FRACTION_ANNOTATION: "0.5"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "main"}]},
            "status": {"phase": "Running"}
        }));
        assert_eq!(p.gpu_group.as_deref(), Some("g1"));
        assert_eq!(p.shared_ref(res), Some(SharedRef { group: Some("g1"), gpu: Some("GPU-abc") }));
        assert!(!p.holds_gpus() && p.container == "main");
        // Either marker alone is enough; empty values are none.
        let mut only_gpu = p.clone();
        only_gpu.gpu_group = None;
        assert_eq!(only_gpu.shared_ref(res), Some(SharedRef { group: None, gpu: Some("GPU-abc") }));
        only_gpu.annotations.insert(SHARED_GPU_ANNOTATION.into(), "".into());
        assert_eq!(only_gpu.shared_ref(res), None);
        let empty_label = pod(json!({"metadata": {"name": "x", "namespace": "t", "labels": {GPU_GROUP_LABEL: ""}},
                                      "spec": {"nodeName": "n", "containers": [{"name": "c"}]}}));
        assert_eq!(empty_label.gpu_group, None);
        // Not shared: in the reservation namespace, unbound, finished, or holding whole GPUs.
        let mut inside = p.clone();
        inside.namespace = res.into();
        assert_eq!(inside.shared_ref(res), None);
        assert_eq!(inside.shared_ref("elsewhere").map(|r| r.group), Some(Some("g1")), "the namespace is configurable");
        let mut unbound = p.clone();
        unbound.node = None;
        assert_eq!(unbound.shared_ref(res), None);
        let mut done = p.clone();
        done.phase = "Succeeded".into();
        assert_eq!(done.shared_ref(res), None);
        let mut whole = p.clone();
        whole.gpus = 1;
        assert_eq!(whole.shared_ref(res), None);
        assert!(whole.holds_gpus());
    }

    #[test]
    fn reservation_pods() {
        let mut r = running("runai-reservation-gpu-x", json!({}), json!({}));
        assert!(!r.is_reservation(DEFAULT_RESERVATION_NAMESPACE));
        r.namespace = DEFAULT_RESERVATION_NAMESPACE.into();
        assert!(r.is_reservation(DEFAULT_RESERVATION_NAMESPACE));
        assert_eq!(r.reserved_gpu(), None);
        r.annotations.insert(RESERVED_GPU_ANNOTATION.into(), " 2 ".into());
        assert_eq!(r.reserved_gpu(), Some("2"));
    }

    #[test]
    fn pod_type_and_inference() {
        let mut p = running("p", json!({POD_GROUP_ANNOTATION: "pg"}), json!({}));
        assert_eq!(p.pod_group_name(), Some("pg"));
        let kinds = [
            (Some("TrainingWorkload"), None, Some("train"), false),
            (Some("InferenceWorkload"), None, Some("inference"), true),
            (Some("DistributedWorkload"), Some("train"), Some("distributed-inference"), true),
            (Some("InteractiveWorkload"), Some("inference"), Some("interactive"), false),
            (Some("TrainingWorkload"), Some("inference"), Some("train"), false),
            (None, Some("inference"), Some("inference"), true),
            (None, Some("distributed-inference"), Some("distributed-inference"), true),
            (None, Some("build"), Some("build"), false),
            (None, None, None, false),
            // A kind upstream does not know: the PodGroup decides.
            (Some("ExternalWorkload"), Some("inference"), Some("inference"), true),
        ];
        for (kind, class, want, inference) in kinds {
            p.workload_kind = kind.map(str::to_string);
            p.pod_group_priority = class.map(str::to_string);
            assert_eq!((p.pod_type(), p.is_inference()), (want, inference), "{kind:?} {class:?}");
            assert_eq!(p.usage(100).use_knative_utilization, inference, "{kind:?} {class:?}");
        }
        let none = running("p", json!({POD_GROUP_ANNOTATION: ""}), json!({}));
        assert_eq!(none.pod_group_name(), None);
    }
}
