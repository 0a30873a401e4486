//! The Kubernetes edges both MIG managers share (the cluster-side one for KWOK nodes, the
//! node-side one for real nodes): their request flags, what they keep of a Node, the watch of
//! the custom configurations' ConfigMap and the write of a decision (one guarded merge patch,
//! then the Warning Event of a failed request).

use std::collections::BTreeMap;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Node, ObjectReference};
use kube::api::{Patch, PatchParams};
use kube::runtime::watcher::{self, Event as WEvent};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, ResourceExt};

use super::{
    parse_custom, MigConfigError, MigConfigs, NodeWrite, CUSTOM_CONFIG_KEY, FAILED_EVENT_REASON, MIG_CONFIG_STATE_LABEL,
    MIG_LAYOUT_ANNOTATION,
};

/// A node as a manager sees it: from a watch, or from the response to its own patch.
#[derive(Debug, Clone, Default)]
pub struct NodeMeta {
    pub uid: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub version: Option<u64>,
}

impl NodeMeta {
    pub fn of(n: &Node) -> NodeMeta {
        NodeMeta {
            uid: n.metadata.uid.clone(),
            labels: n.labels().clone(),
            annotations: n.annotations().clone(),
            version: n.metadata.resource_version.as_deref().and_then(|v| v.parse().ok()),
        }
    }

    /// Whether this is an older version than `known`: a watch event from before the manager's
    /// own patch, whose response arrived first, must not replace what the patch returned.
    pub fn older_than(&self, known: &NodeMeta) -> bool {
        matches!((self.version, known.version), (Some(a), Some(b)) if a < b)
    }
}

/// Writes a decision to node `name`: one merge patch guarded by the UID the decision was made
/// for (a node re-created under the same name meanwhile is not touched), then the Warning Event
/// of a failure. `Ok(None)`: the node is gone.
pub async fn write_node(client: &Client, name: &str, meta: &NodeMeta, write: &NodeWrite) -> Result<Option<NodeMeta>, kube::Error> {
    let mut patch = write.patch();
    patch["metadata"]["uid"] = serde_json::json!(meta.uid);
    let nodes: Api<Node> = Api::all(client.clone());
    let patched = match nodes.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(None),
        r => r?,
    };
    let state = write.labels.get(MIG_CONFIG_STATE_LABEL).cloned().flatten();
    tracing::info!(node = name, state = ?state, layouts = write.annotations.contains_key(MIG_LAYOUT_ANNOTATION), "MIG state written to the node");
    if let Some(reason) = &write.event {
        failed_event(client, name, meta.uid.clone(), reason).await;
    }
    Ok(Some(NodeMeta::of(&patched)))
}

/// Where Events about a Node go: the API server accepts an Event about a cluster-scoped object
/// only in `default` (as the kubelet's node Events are).
const NODE_EVENT_NAMESPACE: &str = "default";

/// What a MIG manager honours, as flags.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RequestArgs {
    /// Also honour Run:ai mig-faker's annotation `run.ai/mig.config` (the chart's
    /// `migFaker.enabled`); it takes precedence over the label.
    #[arg(long, env = "FAKEGPU_MIG_RUNAI")]
    pub runai: bool,
    /// ConfigMap (in the namespace) with custom mig-parted configurations under `config.yaml`,
    /// overlaid on the built-in ones; none: built-ins only.
    #[arg(long, env = "FAKEGPU_MIG_CONFIGS_CM")]
    pub configs_configmap: Option<String>,
}

/// The custom configurations a ConfigMap holds, or why they cannot be used.
pub fn custom_of(cm: &ConfigMap) -> Result<MigConfigs, MigConfigError> {
    let text = cm.data.as_ref().and_then(|d| d.get(CUSTOM_CONFIG_KEY)).ok_or_else(|| MigConfigError::Format {
        at: CUSTOM_CONFIG_KEY.to_string(),
        reason: format!("missing from ConfigMap {}", cm.name_any()),
    })?;
    parse_custom(text)
}

/// Watches the custom configurations' ConfigMap `ns/name` and hands every version of it to
/// `changed` (`None`: deleted). Runs until the watch stream ends (never, with its backoff).
pub async fn watch_custom(client: Client, ns: String, name: String, mut changed: impl FnMut(Option<Result<MigConfigs, MigConfigError>>)) {
    let api: Api<ConfigMap> = Api::namespaced(client, &ns);
    let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut s = watcher::watcher(api, cfg).default_backoff().boxed();
    while let Some(ev) = s.next().await {
        let custom = match ev {
            Ok(WEvent::Apply(cm) | WEvent::InitApply(cm)) => Some(custom_of(&cm)),
            Ok(WEvent::Delete(_)) => None,
            Ok(WEvent::Init | WEvent::InitDone) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "MIG configurations ConfigMap watch");
                continue;
            }
        };
        if let Some(Err(e)) = &custom {
            tracing::warn!(configmap = %name, error = %e, "custom MIG configurations unreadable");
        }
        changed(custom);
    }
}

/// The Warning Event `MigConfigFailed` about node `name` (uid `uid`).
async fn failed_event(client: &Client, name: &str, uid: Option<String>, reason: &str) {
    tracing::warn!(node = name, reason = %reason, "MIG request failed");
    let involved = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Node".into()),
        name: Some(name.to_string()),
        uid,
        ..Default::default()
    };
    crate::common::warning_event(client, NODE_EVENT_NAMESPACE, involved, FAILED_EVENT_REASON, reason, "mig-manager").await;
}
