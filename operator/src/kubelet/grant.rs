//! Reporting a grant to the status-updater: the `allocated-gpus` pod annotation
//! (docs/operator-interfaces.md §2), written as a JSON merge patch on the pod's metadata.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};

use super::ALLOCATED_GPUS_ANNOTATION;

/// The merge patch that records `uuids` as the pod's GPUs.
pub fn annotation_patch(uuids: &[String]) -> serde_json::Value {
    serde_json::json!({ "metadata": { "annotations": { ALLOCATED_GPUS_ANNOTATION: uuids.join(",") } } })
}

/// Annotates pod `namespace/name` with its granted GPUs.
pub async fn annotate_pod(client: &kube::Client, namespace: &str, name: &str, uuids: &[String]) -> Result<(), kube::Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    pods.patch(name, &PatchParams::default(), &Patch::Merge(annotation_patch(uuids))).await.map(|_| ())
}
