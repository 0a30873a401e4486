//! What the kube-rs adapters share: the topology ConfigMap location (flags/env as upstream),
//! reading the cluster config and profile ConfigMaps, Warning Events, the adapters' error type.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Event, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use thiserror::Error;

use crate::config::{ClusterConfig, ConfigError};
use crate::resolve::{CustomProfile, Profiles, PROFILE_CM_PREFIX};
use crate::topology::TOPOLOGY_KEY;

/// Field manager of every write (as upstream).
pub const FIELD_MANAGER: &str = "fake-gpu-operator";
/// Namespace used when neither a flag, the environment nor the in-cluster service account says.
pub const DEFAULT_NAMESPACE: &str = "gpu-operator";
const SA_NAMESPACE_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

#[derive(Debug, Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("{0}")]
    Other(String),
}

/// The component this process runs (its subcommand), named in the `User-Agent` of its API
/// requests so that the API server's audit log tells the components apart.
static COMPONENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Names this process's component (once, at start).
pub fn set_component(name: &str) {
    let _ = COMPONENT.set(name.to_string());
}

/// `fake-gpu-operator/<version> (<component>)`.
pub fn user_agent() -> String {
    let component = COMPONENT.get().map(String::as_str).unwrap_or("library");
    format!("fake-gpu-operator/{} ({component})", env!("CARGO_PKG_VERSION"))
}

/// An API client from a kubeconfig file, else kube's defaults ($KUBECONFIG, ~/.kube/config,
/// in-cluster), sending [`user_agent`].
pub async fn api_client(kubeconfig: Option<&std::path::Path>) -> Result<Client, Error> {
    let mut cfg = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| Error::Other(format!("{}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| Error::Other(format!("{}: {e}", path.display())))?
        }
        None => kube::Config::infer().await.map_err(|e| Error::Other(format!("no API server configuration: {e}")))?,
    };
    let agent = http::HeaderValue::from_str(&user_agent()).map_err(|e| Error::Other(format!("user agent: {e}")))?;
    cfg.headers.push((http::header::USER_AGENT, agent));
    Ok(Client::try_from(cfg)?)
}

/// Where the topology ConfigMaps live.
#[derive(Debug, Clone, clap::Args)]
pub struct TopologyArgs {
    /// Name of the cluster topology ConfigMap; per-node ones are `<name>-<node>`.
    #[arg(long, env = "TOPOLOGY_CM_NAME", default_value = "topology")]
    pub topology_cm: String,
    /// Namespace of the topology ConfigMaps [default: the pod's namespace, else gpu-operator].
    #[arg(long, env = "TOPOLOGY_CM_NAMESPACE")]
    pub namespace: Option<String>,
    /// Kubeconfig file [default: $KUBECONFIG, ~/.kube/config, else in-cluster].
    #[arg(long)]
    pub kubeconfig: Option<std::path::PathBuf>,
}

impl TopologyArgs {
    /// A client from `--kubeconfig`, else kube's defaults.
    pub async fn client(&self) -> Result<Client, Error> {
        api_client(self.kubeconfig.as_deref()).await
    }

    pub fn namespace(&self) -> String {
        self.namespace
            .clone()
            .filter(|n| !n.is_empty())
            .or_else(|| std::env::var("POD_NAMESPACE").ok().filter(|n| !n.is_empty()))
            .or_else(|| std::fs::read_to_string(SA_NAMESPACE_FILE).ok().map(|s| s.trim().to_string()).filter(|n| !n.is_empty()))
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string())
    }
}

/// The cluster config from its ConfigMap; `Ok(None)` when the ConfigMap or its key is absent.
pub fn config_from_cm(cm: Option<&ConfigMap>) -> Result<Option<ClusterConfig>, ConfigError> {
    match cm.and_then(|c| c.data.as_ref()).and_then(|d| d.get(TOPOLOGY_KEY)) {
        Some(text) => ClusterConfig::parse(text).map(Some),
        None => Ok(None),
    }
}

/// Custom profiles from `gpu-profile-*` ConfigMaps; broken ones are returned as errors.
pub fn profiles_from(cms: &[ConfigMap]) -> (Profiles, Vec<ConfigError>) {
    let mut profiles = Profiles::new();
    let mut errors = Vec::new();
    for cm in cms {
        let name = cm.metadata.name.clone().unwrap_or_default();
        let Some(short) = name.strip_prefix(PROFILE_CM_PREFIX) else { continue };
        let data: BTreeMap<String, String> = cm.data.clone().unwrap_or_default();
        match CustomProfile::from_data(&name, &data) {
            Ok(p) => {
                profiles.insert(short.to_string(), p);
            }
            Err(e) => errors.push(e),
        }
    }
    (profiles, errors)
}

/// Lists the profile ConfigMaps of a namespace.
pub async fn list_profiles(client: &Client, ns: &str) -> Result<Vec<ConfigMap>, kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let list = api.list(&ListParams::default().labels(&format!("{}=true", crate::resolve::PROFILE_CM_LABEL))).await?;
    Ok(list.items)
}

/// Creates a core/v1 Warning Event about `involved`.
pub async fn warning_event(client: &Client, ns: &str, involved: ObjectReference, reason: &str, message: &str, component: &str) {
    let now = k8s_openapi::jiff::Timestamp::now();
    let ev = Event {
        metadata: kube::api::ObjectMeta {
            generate_name: Some(format!("{}.", involved.name.clone().unwrap_or_else(|| "fake-gpu-operator".into()))),
            namespace: Some(ns.to_string()),
            ..Default::default()
        },
        involved_object: involved,
        reason: Some(reason.to_string()),
        message: Some(message.chars().take(1024).collect()),
        type_: Some("Warning".into()),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        event_time: Some(MicroTime(now)),
        reporting_component: Some(component.to_string()),
        reporting_instance: Some(std::env::var("HOSTNAME").unwrap_or_else(|_| component.to_string())),
        action: Some("Reconcile".into()),
        count: Some(1),
        source: Some(k8s_openapi::api::core::v1::EventSource { component: Some(component.to_string()), host: None }),
        ..Default::default()
    };
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    if let Err(e) = api.create(&PostParams::default(), &ev).await {
        tracing::warn!(error = %e, "could not create Event");
    }
}

/// An object reference to a ConfigMap.
pub fn cm_ref(ns: &str, name: &str, uid: Option<String>) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("ConfigMap".into()),
        name: Some(name.to_string()),
        namespace: Some(ns.to_string()),
        uid,
        ..Default::default()
    }
}

/// Waits for SIGINT/SIGTERM.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Hands the allocator's free pages back to the kernel. After a burst of work (a convergence, a
/// scrape) glibc keeps the pages it freed resident inside its heaps, where no threshold returns
/// them: the burst's peak would stay the component's RSS. Takes well under a millisecond for
/// these components' heaps.
pub fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free memory of the allocator's arenas to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}
