//! `fake-gpu-operator compute-domain-controller`: lists every ComputeDomain, the templates and
//! claims that carry a domain label and the nodes, asks [`super::reconcile::plan`] what to
//! write, and writes it. A pass runs on any change of those objects (nodes: only when their IP
//! or clique changes; debounced) and every resync period; since a pass starts from the listed state, a restart or a missed event
//! only means the next pass does the work.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::resource::v1::{ResourceClaim, ResourceClaimTemplate};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::watcher;
use kube::Client;
use serde_json::json;

use fakegpu_operator_core::resource_api::{DraApi, DraKind};

use super::reconcile::{node_facts, plan, Action};
use super::types::ComputeDomain;
use super::{CLAIM_DOMAIN_LABEL, FINALIZER, TEMPLATE_DOMAIN_LABEL};

/// Writes in flight at once.
pub const CONCURRENCY: usize = 32;

/// What one pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassReport {
    pub domains: usize,
    pub writes: usize,
    pub took: Duration,
}

/// One full pass: list, plan, write. Templates and claims in the `resource.k8s.io` version the
/// API server serves.
pub async fn pass(dra: &DraApi) -> Result<PassReport, kube::Error> {
    let start = Instant::now();
    let client = dra.client();
    let lp = ListParams::default();
    let domains = Api::<ComputeDomain>::all(client.clone()).list(&lp).await?.items;
    let templates = dra.list::<ResourceClaimTemplate>(None, &ListParams::default().labels(TEMPLATE_DOMAIN_LABEL)).await?;
    let claims = dra.list::<ResourceClaim>(None, &ListParams::default().labels(CLAIM_DOMAIN_LABEL)).await?;
    let nodes = Api::<Node>::all(client.clone()).list(&lp).await?.items;
    let facts = nodes.iter().filter_map(|n| Some((n.metadata.name.clone()?, node_facts(n)))).collect::<BTreeMap<_, _>>();
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let actions = plan(&domains, &templates, &claims, &facts, &now);
    let writes = actions.len();
    // Actions on different objects are independent (a deleting domain's finalizer is planned
    // only once its template is gone), so they run concurrently, in order per object.
    let mut per_domain: BTreeMap<(String, String), Vec<Action>> = BTreeMap::new();
    for a in actions {
        per_domain.entry(key(&a)).or_default().push(a);
    }
    futures::stream::iter(per_domain.into_values().map(|list| {
        let dra = dra.clone();
        async move {
            for a in list {
                apply(&dra, a).await?;
            }
            Ok::<_, kube::Error>(())
        }
    }))
    .buffer_unordered(CONCURRENCY)
    .try_collect::<Vec<_>>()
    .await?;
    Ok(PassReport { domains: domains.len(), writes, took: start.elapsed() })
}

fn key(a: &Action) -> (String, String) {
    match a {
        Action::AddFinalizer { namespace, name }
        | Action::RemoveFinalizer { namespace, name }
        | Action::WriteStatus { namespace, name, .. } => (namespace.clone(), name.clone()),
        Action::DeleteTemplate { namespace, name } => (namespace.clone(), format!("template/{name}")),
        Action::CreateTemplate(t) => {
            (t.metadata.namespace.clone().unwrap_or_default(), format!("template/{}", t.metadata.name.clone().unwrap_or_default()))
        }
    }
}

fn gone(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

async fn apply(dra: &DraApi, action: Action) -> Result<(), kube::Error> {
    let client = dra.client();
    let pp = PatchParams::default();
    let result = match action {
        Action::AddFinalizer { namespace, name } => {
            let domains: Api<ComputeDomain> = Api::namespaced(client.clone(), &namespace);
            let current = domains.get(&name).await?;
            let mut finalizers = current.metadata.finalizers.unwrap_or_default();
            finalizers.push(FINALIZER.into());
            let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": current.metadata.resource_version}});
            domains.patch(&name, &pp, &Patch::Merge(&patch)).await.map(|_| ())
        }
        Action::RemoveFinalizer { namespace, name } => {
            let domains: Api<ComputeDomain> = Api::namespaced(client.clone(), &namespace);
            remove_finalizer(&domains, &name).await
        }
        Action::CreateTemplate(t) => match dra.create(t.metadata.namespace.as_deref(), &*t).await {
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            r => r.map(|_| ()),
        },
        Action::DeleteTemplate { namespace, name } => match remove_template_finalizer(dra, &namespace, &name).await {
            Ok(()) => dra.delete(DraKind::ResourceClaimTemplate, Some(&namespace), &name, &DeleteParams::background()).await,
            Err(e) => Err(e),
        },
        Action::WriteStatus { namespace, name, status } => {
            let domains: Api<ComputeDomain> = Api::namespaced(client.clone(), &namespace);
            domains.patch_status(&name, &pp, &Patch::Merge(&json!({"status": status}))).await.map(|_| ())
        }
    };
    match result {
        Err(e) if gone(&e) => Ok(()),
        // Someone changed the object between list and write: the next pass sees it.
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        r => r,
    }
}

async fn remove_finalizer<K>(api: &Api<K>, name: &str) -> Result<(), kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let current = api.get(name).await?;
    let finalizers = current.meta().finalizers.clone().unwrap_or_default();
    if !finalizers.iter().any(|f| f == FINALIZER) {
        return Ok(());
    }
    let kept: Vec<String> = finalizers.into_iter().filter(|f| f != FINALIZER).collect();
    let patch = json!({"metadata": {"finalizers": kept, "resourceVersion": current.meta().resource_version}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.map(|_| ())
}

/// [`remove_finalizer`] for a template, in the served `resource.k8s.io` version.
async fn remove_template_finalizer(dra: &DraApi, namespace: &str, name: &str) -> Result<(), kube::Error> {
    let current: ResourceClaimTemplate = dra.get(Some(namespace), name).await?;
    let finalizers = current.metadata.finalizers.clone().unwrap_or_default();
    if !finalizers.iter().any(|f| f == FINALIZER) {
        return Ok(());
    }
    let kept: Vec<String> = finalizers.into_iter().filter(|f| f != FINALIZER).collect();
    let patch = json!({"metadata": {"finalizers": kept, "resourceVersion": current.metadata.resource_version}});
    dra.merge::<ResourceClaimTemplate>(Some(namespace), name, &patch).await.map(|_| ())
}

fn spawn_watch<K, S>(events: S, notify: std::sync::Arc<tokio::sync::Notify>)
where
    K: Send + 'static,
    S: futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        let mut events = events.boxed();
        while let Some(e) = events.next().await {
            match e {
                Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone) => notify.notify_one(),
                Ok(_) => {}
                Err(e) => tracing::debug!("watch: {e}"),
            }
        }
    });
}

/// Wakes a pass when a node's facts (InternalIP, clique) change, not on every heartbeat.
fn spawn_node_watch(api: Api<Node>, notify: std::sync::Arc<tokio::sync::Notify>) {
    tokio::spawn(async move {
        let mut seen: BTreeMap<String, super::reconcile::NodeFacts> = BTreeMap::new();
        let mut events = watcher(api, watcher::Config::default()).boxed();
        while let Some(e) = events.next().await {
            let changed = match e {
                Ok(watcher::Event::Apply(n) | watcher::Event::InitApply(n)) => {
                    let name = n.metadata.name.clone().unwrap_or_default();
                    let facts = node_facts(&n);
                    seen.insert(name, facts.clone()).is_none_or(|old| old != facts)
                }
                Ok(watcher::Event::Delete(n)) => seen.remove(n.metadata.name.as_deref().unwrap_or_default()).is_some(),
                Ok(watcher::Event::InitDone) => true,
                Ok(watcher::Event::Init) => false,
                Err(e) => {
                    tracing::debug!("node watch: {e}");
                    false
                }
            };
            if changed {
                notify.notify_one();
            }
        }
    });
}

/// Runs passes on every change (debounced by `debounce`) and every `resync`, until the
/// process ends.
pub async fn run(client: Client, resync: Duration, debounce: Duration) -> Result<(), kube::Error> {
    let dra = DraApi::new(client.clone()).await?;
    let notify = std::sync::Arc::new(tokio::sync::Notify::new());
    spawn_watch(watcher(Api::<ComputeDomain>::all(client.clone()), watcher::Config::default()), notify.clone());
    spawn_watch(dra.watch::<ResourceClaimTemplate>(watcher::Config::default().labels(TEMPLATE_DOMAIN_LABEL)), notify.clone());
    spawn_watch(dra.watch::<ResourceClaim>(watcher::Config::default().labels(CLAIM_DOMAIN_LABEL)), notify.clone());
    spawn_node_watch(Api::<Node>::all(client.clone()), notify.clone());
    loop {
        match pass(&dra).await {
            Ok(r) if r.writes > 0 => {
                tracing::info!(domains = r.domains, writes = r.writes, ms = r.took.as_millis() as u64, "ComputeDomains reconciled")
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!("ComputeDomain pass failed: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        }
        tokio::select! {
            _ = notify.notified() => tokio::time::sleep(debounce).await,
            _ = tokio::time::sleep(resync) => {}
        }
    }
}
