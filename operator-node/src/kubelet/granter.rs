//! The device plugin's grant reporter: a task beside the gRPC service that turns Allocate calls
//! into `allocated-gpus` pod annotations. Allocate does not name the pod and the kubelet records
//! the allocation only after Allocate returns, so each Allocate is handed over here (Allocate
//! never waits) and the kubelet's PodResources `List` is polled with a short backoff, for a
//! bounded time, until the devices show up under a pod. A periodic full reconcile (and one at
//! start) repairs missing or different annotations: restarts, lost events, API errors.
//! Decisions are [`podresources::held_by_pod`], [`podresources::recorded`] and [`grant::plan`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fakegpu_model::SimulatedNode;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::grant::{self, Annotator};
use super::podresources::{self, held_by_pod};
use super::proto::podresources as pb;

/// Device ids of one Allocate call, per container request.
pub type Allocation = Vec<Vec<String>>;

/// First and longest pause between PodResources polls for a pending Allocate.
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// How grants are reported.
#[derive(Clone)]
pub struct GrantConfig {
    /// The kubelet's PodResources socket.
    pub pod_resources_socket: PathBuf,
    pub annotator: Arc<dyn Annotator>,
    /// Full reconcile period.
    pub resync: Duration,
    /// How long an Allocate is looked for in PodResources before the resync is left to find it.
    pub wait: Duration,
}

impl std::fmt::Debug for GrantConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrantConfig")
            .field("pod_resources_socket", &self.pod_resources_socket)
            .field("resync", &self.resync)
            .field("wait", &self.wait)
            .finish_non_exhaustive()
    }
}

/// The reporter for one node and resource.
pub struct Granter {
    config: GrantConfig,
    node: Arc<SimulatedNode>,
    resource: String,
}

impl Granter {
    pub fn new(config: GrantConfig, node: Arc<SimulatedNode>, resource: &str) -> Granter {
        Granter { config, node, resource: resource.to_string() }
    }

    /// Writes the annotations `resp` calls for; returns how many were written. A failure for
    /// one pod is logged and the others still written.
    pub async fn apply(&self, resp: &pb::ListPodResourcesResponse) -> Result<usize, grant::AnnotatorError> {
        let node = self.node.clone();
        let canonical = move |id: &str| super::allocation::grant_id(&node, id);
        let podresources::Held { pods: held, unknown } = held_by_pod(resp, &self.resource, &canonical);
        for ((ns, name), id) in unknown {
            tracing::warn!(pod = %format!("{ns}/{name}"), device = %id, "pod holds a device that is not a GPU of this node; not annotated");
        }
        if held.is_empty() {
            return Ok(0);
        }
        let keys: Vec<grant::PodKey> = held.keys().cloned().collect();
        let current = self.config.annotator.current(&keys).await?;
        let mut written = 0;
        for ((ns, name), uuids) in grant::plan(&held, &current) {
            match self.config.annotator.patch(&ns, &name, grant::annotation_patch(&uuids)).await {
                Ok(()) => {
                    tracing::info!(pod = %format!("{ns}/{name}"), gpus = %uuids.join(","), "grant annotated");
                    written += 1;
                }
                Err(e) => tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "annotating the grant failed; the resync retries"),
            }
        }
        Ok(written)
    }

    /// Runs until every sender of `allocations` is gone.
    pub async fn run(self, mut allocations: mpsc::Receiver<Allocation>) {
        let mut pending: Vec<(Allocation, Instant)> = Vec::new();
        let mut backoff = MIN_BACKOFF;
        let mut next_poll: Option<Instant> = None;
        let mut next_resync = Instant::now();
        // Logged once per outage, not once per poll.
        let mut failing = false;
        loop {
            let wake = next_poll.map_or(next_resync, |p| p.min(next_resync));
            match tokio::time::timeout_at(wake, allocations.recv()).await {
                Ok(Some(a)) => {
                    pending.push((a, Instant::now() + self.config.wait));
                    // The kubelet records the allocation right after Allocate returns.
                    backoff = MIN_BACKOFF;
                    next_poll = Some(Instant::now() + backoff);
                    continue;
                }
                Ok(None) => return,
                Err(_elapsed) => {}
            }
            let now = Instant::now();
            let full = now >= next_resync;
            if full {
                next_resync = now + self.config.resync;
            }
            let resp = match podresources::list(&self.config.pod_resources_socket).await {
                Ok(r) => {
                    if std::mem::take(&mut failing) {
                        tracing::info!("pod-resources reachable again");
                    }
                    Some(r)
                }
                Err(e) => {
                    if !std::mem::replace(&mut failing, true) {
                        tracing::warn!(error = %e, "cannot read the kubelet's pod resources; grants wait");
                    }
                    None
                }
            };
            let seen = resp.as_ref().is_some_and(|r| pending.iter().any(|(a, _)| podresources::recorded(r, &self.resource, a)));
            if let Some(r) = resp.as_ref().filter(|_| full || seen) {
                if let Err(e) = self.apply(r).await {
                    tracing::warn!(error = %e, "reading pods for grants; the resync retries");
                }
            }
            pending.retain(|(a, deadline)| {
                if resp.as_ref().is_some_and(|r| podresources::recorded(r, &self.resource, a)) {
                    return false;
                }
                if now >= *deadline {
                    tracing::warn!(devices = ?a, "allocation not in pod-resources in time; the resync will annotate it");
                    return false;
                }
                true
            });
            next_poll = if pending.is_empty() {
                None
            } else {
                backoff = (backoff * 2).min(MAX_BACKOFF);
                Some(Instant::now() + backoff)
            };
        }
    }
}
