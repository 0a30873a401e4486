//! The status-updater's mock-backend reconciler: keeps the ConfigMaps and DaemonSets
//! `nvml-mock-<pool>` equal to what [`fakegpu_operator_core::nvml_mock`] decides. Thin: list
//! the managed objects, write the actions. Runs after every config change and every `every`
//! (a resync that also undoes edits and deletions made by hand).

use std::sync::Arc;
use std::time::Duration;

use fakegpu_operator_core::nvml_mock::{self, Action, Actual, Desired, Owner};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};
use tokio::sync::Notify;

/// Reconciles until the task is dropped. `desired` is asked afresh on each pass, with the
/// topology ConfigMap `owner_cm` as the objects' owner, read on each pass since it may have
/// been re-created (`None`: the config in force is not one to act on, e.g. the defaults after
/// an invalid config at start, which must not delete the pools' objects); `trigger` starts a
/// pass early.
pub async fn run<F>(client: Client, ns: String, owner_cm: String, desired: F, trigger: Arc<Notify>, every: Duration)
where
    F: Fn(Option<Owner>) -> Option<Desired> + Send + 'static,
{
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let mut reported: Vec<(String, String)> = Vec::new();
    loop {
        let owner = cms.get_opt(&owner_cm).await.map(|cm| cm.and_then(|c| c.metadata.uid).map(|uid| Owner { name: owner_cm.clone(), uid }));
        match owner.map(&desired) {
            Err(e) => tracing::warn!(error = %e, "nvml-mock reconcile: reading the topology ConfigMap"),
            Ok(None) => {}
            Ok(Some(want)) => {
                if want.skipped != reported {
                    for (pool, why) in &want.skipped {
                        tracing::warn!(pool = %pool, reason = %why, "mock pool: no nvml-mock objects");
                    }
                    reported = want.skipped.clone();
                }
                if let Err(e) = reconcile_once(&client, &ns, &want).await {
                    // A conflict (changed meanwhile) or an API error: the next pass starts from a new list.
                    tracing::warn!(error = %e, "nvml-mock reconcile");
                }
            }
        }
        tokio::select! {
            _ = trigger.notified() => {}
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// One pass: list what carries the managed labels, write what differs. Returns the writes made.
pub async fn reconcile_once(client: &Client, ns: &str, want: &Desired) -> Result<Vec<Action>, kube::Error> {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let dss: Api<DaemonSet> = Api::namespaced(client.clone(), ns);
    let lp = ListParams::default().labels(&nvml_mock::managed_selector());
    let actual = Actual { config_maps: cms.list(&lp).await?.items, daemon_sets: dss.list(&lp).await?.items };
    let actions = nvml_mock::actions(want, &actual);
    let pp = PostParams { field_manager: Some(fakegpu_operator_core::common::FIELD_MANAGER.to_string()), ..PostParams::default() };
    for a in &actions {
        let name = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| m.name.clone().unwrap_or_default();
        let r = match a {
            Action::CreateConfigMap(c) => cms.create(&pp, c).await.map(drop),
            Action::UpdateConfigMap(c) => cms.replace(&name(&c.metadata), &pp, c).await.map(drop),
            Action::DeleteConfigMap(n) => gone_ok(cms.delete(n, &DeleteParams::default()).await.map(drop)),
            Action::CreateDaemonSet(d) => dss.create(&pp, d).await.map(drop),
            Action::UpdateDaemonSet(d) => dss.replace(&name(&d.metadata), &pp, d).await.map(drop),
            // Background: the pods get their preStop cleanup as the DaemonSet controller deletes them.
            Action::DeleteDaemonSet(n) => gone_ok(dss.delete(n, &DeleteParams::background()).await.map(drop)),
        };
        r?;
        tracing::info!(namespace = ns, action = %a.describe(), "nvml-mock");
    }
    Ok(actions)
}

fn gone_ok(r: Result<(), kube::Error>) -> Result<(), kube::Error> {
    match r {
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        r => r,
    }
}
