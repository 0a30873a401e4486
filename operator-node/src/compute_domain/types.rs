//! The ComputeDomain custom resource (`resource.nvidia.com/v1beta1`, namespaced) as Rust types,
//! and the opaque `ComputeDomainChannelConfig` the domain's claims carry. The schema the API
//! server enforces is the chart's CRD (`helm/fake-gpu-operator/crds/`); these types read what
//! it admits.

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta};
use serde::{Deserialize, Serialize};

pub const GROUP: &str = "resource.nvidia.com";
pub const VERSION: &str = "v1beta1";
pub const API_VERSION: &str = "resource.nvidia.com/v1beta1";
pub const KIND: &str = "ComputeDomain";
pub const PLURAL: &str = "computedomains";
/// `kind` of the opaque config in the claims.
pub const CHANNEL_CONFIG_KIND: &str = "ComputeDomainChannelConfig";

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ComputeDomain {
    pub metadata: ObjectMeta,
    pub spec: ComputeDomainSpec,
    #[serde(default)]
    pub status: Option<ComputeDomainStatus>,
}

/// Always with `apiVersion` and `kind`, which the API server needs on a create.
impl Serialize for ComputeDomain {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut m = s.serialize_struct(KIND, 5)?;
        m.serialize_field("apiVersion", API_VERSION)?;
        m.serialize_field("kind", KIND)?;
        m.serialize_field("metadata", &self.metadata)?;
        m.serialize_field("spec", &self.spec)?;
        match &self.status {
            Some(status) => m.serialize_field("status", status)?,
            None => m.skip_field("status")?,
        }
        m.end()
    }
}

impl kube::Resource for ComputeDomain {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        KIND.into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        GROUP.into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        VERSION.into()
    }
    fn api_version(_: &()) -> Cow<'_, str> {
        API_VERSION.into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        PLURAL.into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComputeDomainSpec {
    /// Nodes the domain waits for before it is Ready (0: Ready as soon as it exists).
    #[serde(default)]
    pub num_nodes: u32,
    #[serde(default)]
    pub channel: Option<Channel>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Channel {
    pub resource_claim_template: TemplateRef,
    #[serde(default)]
    pub allocation_mode: AllocationMode,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateRef {
    pub name: String,
}

/// Which IMEX channels a prepared claim gets: its one channel, or every channel of the node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum AllocationMode {
    #[default]
    Single,
    All,
}

impl std::fmt::Display for AllocationMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AllocationMode::Single => "Single",
            AllocationMode::All => "All",
        })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ComputeDomainStatus {
    /// `Ready` or `NotReady`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeStatus>,
    /// One condition, `Ready`, whose reason says why a domain is not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    pub name: String,
    /// The node's InternalIP (empty when it has none).
    pub ip_address: String,
    /// `<cluster UUID>.<clique id>` of the node's NVLink clique; empty for boards without one.
    #[serde(rename = "cliqueID")]
    pub clique_id: String,
    /// Position of the node in the domain (sorted by clique, then name).
    pub index: u32,
    pub status: String,
}

pub const READY: &str = "Ready";
pub const NOT_READY: &str = "NotReady";

/// The opaque parameters the domain's template puts in every claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelConfig {
    pub api_version: String,
    pub kind: String,
    #[serde(rename = "domainID")]
    pub domain_id: String,
    #[serde(default)]
    pub allocation_mode: AllocationMode,
}

impl ChannelConfig {
    pub fn new(domain_id: &str, allocation_mode: AllocationMode) -> ChannelConfig {
        ChannelConfig { api_version: API_VERSION.into(), kind: CHANNEL_CONFIG_KIND.into(), domain_id: domain_id.into(), allocation_mode }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_with_api_version_and_kind_and_reads_back() {
        let text = r#"{"metadata": {"name": "cd"}, "spec": {"numNodes": 2, "channel": {"resourceClaimTemplate": {"name": "t"}, "allocationMode": "All"}}}"#;
        let d: ComputeDomain = serde_json::from_str(text).unwrap();
        assert_eq!(d.spec.channel.as_ref().unwrap().allocation_mode, AllocationMode::All);
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!((v["apiVersion"].as_str(), v["kind"].as_str()), (Some(API_VERSION), Some(KIND)));
        assert!(v.get("status").is_none());
        assert_eq!(serde_json::from_value::<ComputeDomain>(v).unwrap(), d);
        // A spec without allocationMode reads as Single, the CRD's default.
        let d: ComputeDomain =
            serde_json::from_str(r#"{"metadata": {}, "spec": {"numNodes": 1, "channel": {"resourceClaimTemplate": {"name": "t"}}}}"#)
                .unwrap();
        assert_eq!(d.spec.channel.unwrap().allocation_mode, AllocationMode::Single);
    }
}
