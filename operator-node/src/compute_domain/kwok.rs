//! `fake-gpu-operator kwok-compute-domain-dra-plugin`: the `compute-domain.nvidia.com` pools of
//! every KWOK GPU node (the nodes kwok-dra-plugin publishes GPUs for), from one process, plus
//! the two DeviceClasses. A resync lists nodes and this driver's slices once and writes only
//! the pools whose content changed; pools of nodes that are gone are deleted.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::resource::v1::DeviceClass;
use kube::api::{Api, ListParams, PatchParams};
use kube::runtime::watcher;
use kube::Client;

use super::reconcile::node_clique;
use super::{channels, CHANNEL_CLASS, DAEMON_CLASS, DRIVER};
use crate::kubelet::dra::{kwok as gpu_kwok, publish};
use fakegpu_operator_core::resource_api::DraApi;

pub const FIELD_MANAGER: &str = "fake-gpu-operator/compute-domain";

/// The DeviceClasses of the driver: one channel (any id: each domain on a node gets its own)
/// and the IMEX daemon device.
pub fn device_classes() -> Vec<DeviceClass> {
    [(CHANNEL_CLASS, "channel"), (DAEMON_CLASS, "daemon")]
        .into_iter()
        .map(|(name, kind)| {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "resource.k8s.io/v1", "kind": "DeviceClass",
                "metadata": {"name": name},
                "spec": {"selectors": [{"cel": {"expression": format!("device.driver == '{DRIVER}' && device.attributes['{DRIVER}'].type == '{kind}'")}}]}
            }))
            .expect("static DeviceClass shape")
        })
        .collect()
}

/// Creates or updates both DeviceClasses.
pub async fn ensure_device_classes(client: &DraApi) -> Result<(), kube::Error> {
    for class in device_classes() {
        let name = class.metadata.name.clone().unwrap_or_default();
        client.apply(None, &name, &class, &PatchParams::apply(FIELD_MANAGER).force()).await?;
    }
    Ok(())
}

/// What one resync did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncReport {
    pub nodes: usize,
    pub writes: usize,
    pub took: Duration,
}

/// One full resync.
pub async fn sync_once(client: &DraApi, default_profile: Option<&str>, channel_count: u32) -> Result<SyncReport, kube::Error> {
    let start = Instant::now();
    let nodes = Api::<Node>::all(client.client().clone()).list(&ListParams::default()).await?.items;
    let existing = publish::list_driver_pools(client, DRIVER, None).await?;
    let mut wanted = Vec::new();
    let mut names = BTreeSet::new();
    for n in &nodes {
        let Some(name) = n.metadata.name.clone() else { continue };
        if gpu_kwok::simulated(n, None, default_profile).is_some() {
            names.insert(name.clone());
            wanted.push((name, channels::pool_devices(channel_count, node_clique(n).as_deref()), publish::node_owner(n)));
        }
    }
    let count = wanted.len();
    let mut writes = publish::sync_driver_pools(client, DRIVER, wanted, &existing, gpu_kwok::PUBLISHER).await?;
    writes += publish::delete_slices(client, publish::orphaned(&existing, gpu_kwok::PUBLISHER, &|pool| names.contains(pool))).await?;
    Ok(SyncReport { nodes: count, writes, took: start.elapsed() })
}

/// Resyncs on every Node change (debounced) and every `resync`, until the process ends.
pub async fn run(client: Client, default_profile: Option<String>, channel_count: u32, resync: Duration) -> Result<(), kube::Error> {
    let dra = DraApi::new(client.clone()).await?;
    ensure_device_classes(&dra).await?;
    let notify = std::sync::Arc::new(tokio::sync::Notify::new());
    let n2 = notify.clone();
    let nodes: Api<Node> = Api::all(client.clone());
    tokio::spawn(async move {
        let mut events = watcher(nodes, watcher::Config::default()).boxed();
        while let Some(e) = events.next().await {
            if let Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone) = e {
                n2.notify_one();
            }
        }
    });
    loop {
        match sync_once(&dra, default_profile.as_deref(), channel_count).await {
            Ok(r) if r.writes > 0 => {
                tracing::info!(nodes = r.nodes, writes = r.writes, ms = r.took.as_millis() as u64, "IMEX channel slices synced")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("IMEX channel slice sync failed: {e}"),
        }
        tokio::select! {
            _ = notify.notified() => tokio::time::sleep(Duration::from_millis(500)).await,
            _ = tokio::time::sleep(resync) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_select_by_type() {
        let c = device_classes();
        let expr = |i: usize| c[i].spec.as_ref().unwrap().selectors.as_ref().unwrap()[0].cel.as_ref().unwrap().expression.clone();
        assert_eq!(c[0].metadata.name.as_deref(), Some(CHANNEL_CLASS));
        assert_eq!(
            expr(0),
            "device.driver == 'compute-domain.nvidia.com' && device.attributes['compute-domain.nvidia.com'].type == 'channel'"
        );
        assert_eq!(c[1].metadata.name.as_deref(), Some(DAEMON_CLASS));
        assert!(expr(1).ends_with(".type == 'daemon'"));
    }
}
