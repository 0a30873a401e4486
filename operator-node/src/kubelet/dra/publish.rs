//! Slice writes: lists a pool's slices, applies the [`super::slices::plan`], and keeps the
//! `gpu.nvidia.com` DeviceClass. Writes are server-side applies under one field manager, in the
//! `resource.k8s.io` version the API server serves ([`fakegpu_operator_core::resource_api`]).

use std::collections::BTreeMap;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::resource::v1::{Device, DeviceClass, ResourceSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ListParams, PatchParams};

use fakegpu_operator_core::resource_api::{DraApi, DraKind};

use super::slices::{driver_plan, Op};
use super::DRIVER;

pub const FIELD_MANAGER: &str = "fake-gpu-operator/dra";
/// Writes in flight at once when publishing many pools.
pub const CONCURRENCY: usize = 32;

/// The owner reference of a slice to its Node.
pub fn node_owner(node: &Node) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: "v1".into(),
        kind: "Node".into(),
        name: node.metadata.name.clone()?,
        uid: node.metadata.uid.clone()?,
        controller: Some(true),
        block_owner_deletion: None,
    })
}

/// Every slice of this driver, grouped by pool name.
pub async fn list_pools(client: &DraApi, node: Option<&str>) -> Result<BTreeMap<String, Vec<ResourceSlice>>, kube::Error> {
    list_driver_pools(client, DRIVER, node).await
}

/// Every slice of `driver`, grouped by pool name.
pub async fn list_driver_pools(
    client: &DraApi,
    driver: &str,
    node: Option<&str>,
) -> Result<BTreeMap<String, Vec<ResourceSlice>>, kube::Error> {
    let mut fields = format!("spec.driver={driver}");
    if let Some(n) = node {
        fields.push_str(&format!(",spec.nodeName={n}"));
    }
    let mut pools: BTreeMap<String, Vec<ResourceSlice>> = BTreeMap::new();
    for s in client.list::<ResourceSlice>(None, &ListParams::default().fields(&fields)).await? {
        pools.entry(s.spec.pool.name.clone()).or_default().push(s);
    }
    Ok(pools)
}

/// Applies the ops; returns how many writes were made.
pub async fn apply(client: &DraApi, ops: Vec<Op>) -> Result<usize, kube::Error> {
    let n = ops.len();
    for op in ops {
        match op {
            Op::Apply(slice) => {
                let name = slice.metadata.name.clone().unwrap_or_default();
                client.apply(None, &name, &*slice, &PatchParams::apply(FIELD_MANAGER).force()).await?;
            }
            Op::Delete(name) => match client.delete(DraKind::ResourceSlice, None, &name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e),
            },
        }
    }
    Ok(n)
}

/// Brings many pools to their wanted devices, [`CONCURRENCY`] pools at a time; returns the writes made.
pub async fn sync_pools(
    client: &DraApi,
    wanted: Vec<(String, Vec<Device>, Option<OwnerReference>)>,
    existing: &BTreeMap<String, Vec<ResourceSlice>>,
    publisher: &str,
) -> Result<usize, kube::Error> {
    sync_driver_pools(client, DRIVER, wanted, existing, publisher).await
}

/// [`sync_pools`] for the pools of another driver.
pub async fn sync_driver_pools(
    client: &DraApi,
    driver: &str,
    wanted: Vec<(String, Vec<Device>, Option<OwnerReference>)>,
    existing: &BTreeMap<String, Vec<ResourceSlice>>,
    publisher: &str,
) -> Result<usize, kube::Error> {
    let jobs: Vec<Vec<Op>> = wanted
        .iter()
        .map(|(node, devices, owner)| {
            driver_plan(driver, node, devices, existing.get(node).map(Vec::as_slice).unwrap_or_default(), owner.as_ref(), publisher)
        })
        .filter(|ops| !ops.is_empty())
        .collect();
    futures::stream::iter(jobs.into_iter().map(|ops| apply(client, ops)))
        .buffer_unordered(CONCURRENCY)
        .try_fold(0, |a, b| async move { Ok(a + b) })
        .await
}

/// The DeviceClass of MIG devices, as NVIDIA's driver names it.
pub const MIG_DEVICE_CLASS: &str = "mig.nvidia.com";

/// Creates or updates DeviceClass `gpu.nvidia.com` (all whole GPUs of the driver), with
/// `extendedResourceName: nvidia.com/gpu` unless the API server rejects that field, and
/// `mig.nvidia.com` (all MIG devices).
pub async fn ensure_device_class(client: &DraApi) -> Result<(), kube::Error> {
    let mig: DeviceClass = serde_json::from_value(serde_json::json!({
        "apiVersion": "resource.k8s.io/v1", "kind": "DeviceClass",
        "metadata": {"name": MIG_DEVICE_CLASS},
        "spec": {"selectors": [{"cel": {"expression": format!("device.driver == '{DRIVER}' && device.attributes['{DRIVER}'].type == 'mig'")}}]}
    }))
    .expect("DeviceClass");
    client.apply(None, MIG_DEVICE_CLASS, &mig, &PatchParams::apply(FIELD_MANAGER).force()).await?;
    let mut class: DeviceClass = serde_json::from_value(serde_json::json!({
        "apiVersion": "resource.k8s.io/v1", "kind": "DeviceClass",
        "metadata": {"name": DRIVER},
        "spec": {
            "selectors": [{"cel": {"expression": format!("device.driver == '{DRIVER}' && device.attributes['{DRIVER}'].type == 'gpu'")}}],
            "extendedResourceName": "nvidia.com/gpu"
        }
    }))
    .expect("DeviceClass");
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    match client.apply(None, DRIVER, &class, &pp).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 422 || s.code == 400 => {
            tracing::info!("the API server refuses extendedResourceName ({}); DeviceClass without it", s.message);
            if let Some(spec) = class.spec.as_mut() {
                spec.extended_resource_name = None;
            }
            client.apply(None, DRIVER, &class, &pp).await.map(|_| ())
        }
        Err(e) => Err(e),
    }
}

/// Publishes one node's pool (the node-local plugin).
pub async fn publish_node(client: &DraApi, node_name: &str, devices: Vec<Device>) -> Result<usize, kube::Error> {
    let node = Api::<Node>::all(client.client().clone()).get(node_name).await?;
    let existing = list_pools(client, Some(node_name)).await?;
    sync_pools(client, vec![(node_name.to_string(), devices, node_owner(&node))], &existing, "node").await
}

/// Slices written by `publisher` for pools `keep` rejects, for deletion.
pub fn orphaned(existing: &BTreeMap<String, Vec<ResourceSlice>>, publisher: &str, keep: &dyn Fn(&str) -> bool) -> Vec<String> {
    existing
        .iter()
        .filter(|(pool, _)| !keep(pool))
        .flat_map(|(_, s)| s.iter())
        .filter(|s| s.metadata.labels.as_ref().and_then(|l| l.get(super::slices::PUBLISHER_LABEL)).map(String::as_str) == Some(publisher))
        .filter_map(|s| s.metadata.name.clone())
        .collect()
}

/// Deletes slices by name.
pub async fn delete_slices(client: &DraApi, names: Vec<String>) -> Result<usize, kube::Error> {
    let n = names.len();
    futures::stream::iter(names.into_iter().map(|n| apply(client, vec![Op::Delete(n)])))
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(n)
}
