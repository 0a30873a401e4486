//! The chart's CRDs (`helm/fake-gpu-operator/crds/`), embedded so that the controller can
//! install them where no Helm runs (`fakegpu cluster up --compute-domains`, tests): the same
//! bytes Helm installs.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::Client;

/// (file name, YAML) of each CRD the chart ships.
pub const FILES: &[(&str, &str)] = &[
    (
        "resource.nvidia.com_computedomains.yaml",
        include_str!("../../../helm/fake-gpu-operator/crds/resource.nvidia.com_computedomains.yaml"),
    ),
    ("nvidia.com_clusterpolicies.yaml", include_str!("../../../helm/fake-gpu-operator/crds/nvidia.com_clusterpolicies.yaml")),
];

/// The CRDs, parsed.
pub fn parsed() -> Vec<CustomResourceDefinition> {
    FILES.iter().map(|(name, text)| serde_yaml::from_str(text).unwrap_or_else(|e| panic!("embedded {name}: {e}"))).collect()
}

/// Applies every CRD and waits (up to 30 s) until each is Established.
pub async fn install(client: &Client) -> Result<(), String> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in parsed() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(&name, &PatchParams::apply("fake-gpu-operator/compute-domain").force(), &Patch::Apply(&crd))
            .await
            .map_err(|e| format!("applying CRD {name}: {e}"))?;
        let established = |c: &CustomResourceDefinition| {
            c.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Established" && c.status == "True"))
        };
        let mut waited = Duration::ZERO;
        loop {
            if api.get(&name).await.is_ok_and(|c| established(&c)) {
                break;
            }
            if waited >= Duration::from_secs(30) {
                return Err(format!("CRD {name} not Established after 30 s"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            waited += Duration::from_millis(200);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compute_domain_crd_schema() {
        let crds = parsed();
        let cd = &crds[0];
        assert_eq!(cd.metadata.name.as_deref(), Some("computedomains.resource.nvidia.com"));
        let v = &cd.spec.versions[0];
        assert_eq!((v.name.as_str(), v.served, v.storage), ("v1beta1", true, true));
        let schema = serde_json::to_value(v.schema.as_ref().unwrap().open_api_v3_schema.as_ref().unwrap()).unwrap();
        let spec = &schema["properties"]["spec"];
        assert_eq!(spec["x-kubernetes-validations"][0]["rule"], "self == oldSelf");
        assert_eq!(spec["required"], serde_json::json!(["numNodes", "channel"]));
        let channel = &spec["properties"]["channel"];
        assert_eq!(channel["properties"]["allocationMode"]["enum"], serde_json::json!(["All", "Single"]));
        assert_eq!(channel["properties"]["resourceClaimTemplate"]["required"], serde_json::json!(["name"]));
        let node = &schema["properties"]["status"]["properties"]["nodes"]["items"];
        assert_eq!(node["required"], serde_json::json!(["name", "ipAddress", "cliqueID"]));
        // The status the controller writes fits the schema's field names.
        let status = crate::compute_domain::types::NodeStatus::default();
        let written = serde_json::to_value(status).unwrap();
        for key in written.as_object().unwrap().keys() {
            assert!(node["properties"].get(key).is_some(), "status field {key} is not in the CRD");
        }
        let policy = &crds[1];
        assert_eq!(policy.metadata.name.as_deref(), Some("clusterpolicies.nvidia.com"));
        assert_eq!(policy.spec.scope, "Cluster");
    }
}
