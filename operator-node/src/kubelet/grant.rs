//! Reporting a grant to the status-updater: the `allocated-gpus` pod annotation
//! (docs/operator-interfaces.md §2), written as a JSON merge patch on the pod's metadata; which
//! pods need it written (pure); and the [`Annotator`] edge that reads and patches pods (the API
//! server, or a stand-in in tests).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};

use super::ALLOCATED_GPUS_ANNOTATION;

/// `(namespace, name)` of a pod.
pub type PodKey = (String, String);

/// The merge patch that records `uuids` as the pod's GPUs.
pub fn annotation_patch(uuids: &[String]) -> serde_json::Value {
    serde_json::json!({ "metadata": { "annotations": { ALLOCATED_GPUS_ANNOTATION: uuids.join(",") } } })
}

/// Annotates pod `namespace/name` with its granted GPUs.
pub async fn annotate_pod(client: &kube::Client, namespace: &str, name: &str, uuids: &[String]) -> Result<(), kube::Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    pods.patch(name, &PatchParams::default(), &Patch::Merge(annotation_patch(uuids))).await.map(|_| ())
}

/// Whether an annotation value already names exactly `uuids`. Compared as the status-updater
/// reads it: a set, case-insensitive, whitespace around items ignored.
pub fn names_exactly(value: &str, uuids: &[String]) -> bool {
    let have: BTreeSet<String> = value.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_ascii_lowercase).collect();
    let want: BTreeSet<String> = uuids.iter().map(|u| u.to_ascii_lowercase()).collect();
    have == want
}

/// The annotations to write: each pod of `held` (its GPUs from the kubelet) that the API knows
/// (`current`: its annotation, `None` when it has none) and whose annotation is missing or names
/// other GPUs. Pods the API does not know (deleted, or not visible yet) are left for later.
pub fn plan(held: &BTreeMap<PodKey, Vec<String>>, current: &BTreeMap<PodKey, Option<String>>) -> Vec<(PodKey, Vec<String>)> {
    held.iter()
        .filter(|(key, uuids)| match current.get(*key) {
            None => false,
            Some(None) => true,
            Some(Some(value)) => !names_exactly(value, uuids),
        })
        .map(|(key, uuids)| (key.clone(), uuids.clone()))
        .collect()
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AnnotatorError(pub String);

impl From<kube::Error> for AnnotatorError {
    fn from(e: kube::Error) -> Self {
        AnnotatorError(e.to_string())
    }
}

/// Reads and patches pods. The device plugin holds one when it can reach the API server.
#[tonic::async_trait]
pub trait Annotator: Send + Sync {
    /// The grant annotation of each of `pods` the API knows (`None`: it has none); pods it does
    /// not know are absent from the result.
    async fn current(&self, pods: &[PodKey]) -> Result<BTreeMap<PodKey, Option<String>>, AnnotatorError>;
    /// Applies a JSON merge patch to pod `namespace/name`.
    async fn patch(&self, namespace: &str, name: &str, patch: serde_json::Value) -> Result<(), AnnotatorError>;
}

/// The API server as [`Annotator`].
pub struct ApiAnnotator(pub kube::Client);

#[tonic::async_trait]
impl Annotator for ApiAnnotator {
    async fn current(&self, pods: &[PodKey]) -> Result<BTreeMap<PodKey, Option<String>>, AnnotatorError> {
        let mut out = BTreeMap::new();
        // A GET per pod: only pods holding this node's GPUs are asked about (a handful).
        for (ns, name) in pods {
            if let Some(pod) = Api::<Pod>::namespaced(self.0.clone(), ns).get_opt(name).await? {
                let value = pod.metadata.annotations.as_ref().and_then(|a| a.get(ALLOCATED_GPUS_ANNOTATION)).cloned();
                out.insert((ns.clone(), name.clone()), value);
            }
        }
        Ok(out)
    }

    async fn patch(&self, namespace: &str, name: &str, patch: serde_json::Value) -> Result<(), AnnotatorError> {
        Api::<Pod>::namespaced(self.0.clone(), namespace).patch(name, &PatchParams::default(), &Patch::Merge(patch)).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> PodKey {
        ("ns".into(), name.into())
    }

    fn uuids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn patch_names_the_uuids_in_order() {
        let p = annotation_patch(&uuids(&["GPU-b", "GPU-a"]));
        assert_eq!(p["metadata"]["annotations"][ALLOCATED_GPUS_ANNOTATION], "GPU-b,GPU-a");
    }

    #[test]
    fn annotation_comparison_is_a_case_insensitive_set() {
        let u = uuids(&["GPU-A", "GPU-B"]);
        assert!(names_exactly("GPU-A,GPU-B", &u));
        assert!(names_exactly(" gpu-b , GPU-a,", &u));
        assert!(!names_exactly("GPU-A", &u));
        assert!(!names_exactly("GPU-A,GPU-B,GPU-C", &u));
        assert!(!names_exactly("", &u));
    }

    #[test]
    fn plan_writes_missing_and_different_annotations_of_known_pods_only() {
        let held = BTreeMap::from([
            (key("missing"), uuids(&["GPU-1"])),
            (key("same"), uuids(&["GPU-2", "GPU-3"])),
            (key("different"), uuids(&["GPU-4"])),
            (key("unknown-to-api"), uuids(&["GPU-5"])),
        ]);
        let current = BTreeMap::from([
            (key("missing"), None),
            (key("same"), Some("gpu-3,GPU-2".to_string())),
            (key("different"), Some("GPU-0".to_string())),
            (key("annotated-but-not-held"), Some("GPU-6".to_string())),
        ]);
        assert_eq!(plan(&held, &current), vec![(key("different"), uuids(&["GPU-4"])), (key("missing"), uuids(&["GPU-1"]))]);
        assert!(plan(&BTreeMap::new(), &current).is_empty());
    }
}
