//! Run:ai integration (`statusUpdater.runaiIntegration`, env `RUNAI_INTEGRATION_ENABLED`): the
//! PrometheusRule `runai/fake-gpu-operator-kwok-dcgm` that turns the fake DCGM series into the
//! `runai_dcgm_*` series Run:ai's dashboards read (upstream reference §4.5: same name, labels,
//! group and expressions). Every polling interval: once `monitoring.coreos.com/v1` serves
//! `prometheusrules` (remembered once seen) and namespace `runai` exists, the rule is created if
//! it is missing. It goes with the namespace (a namespace deleted and re-created gets it again);
//! it is never updated, as upstream.

use std::time::Duration;

use kube::api::{ApiResource, DynamicObject, GroupVersionKind, PostParams};
use kube::{Api, Client};
use serde_json::json;

use k8s_openapi::api::core::v1::Namespace;

pub const NAMESPACE: &str = "runai";
pub const RULE_NAME: &str = "fake-gpu-operator-kwok-dcgm";
pub const GROUP_NAME: &str = "kwok-dcgm-metrics";
/// Polling interval when the configured one is invalid or zero (upstream's fallback).
pub const FALLBACK_INTERVAL: Duration = Duration::from_secs(30);

pub fn resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("monitoring.coreos.com", "v1", "PrometheusRule"), "prometheusrules")
}

/// `metric` with upstream's relabelling: exported pod/namespace → `pod_name`/`pod_namespace`,
/// `Hostname` → `node`, joined with Run:ai's node-pool series.
fn expr(metric: &str) -> String {
    let relabelled = [("pod_name", "exported_pod"), ("pod_namespace", "exported_namespace"), ("node", "Hostname")]
        .iter()
        .fold(metric.to_string(), |inner, (dst, src)| format!("label_replace({inner}, \"{dst}\", \"$1\", \"{src}\", \"(.+)\")"));
    format!("{relabelled} * on(node) group_left(nodepool) runai_node_nodepool_excluded")
}

/// The rule object.
pub fn rule() -> serde_json::Value {
    let records = [
        ("runai_dcgm_gpu_utilization", "DCGM_FI_DEV_GPU_UTIL"),
        ("runai_dcgm_gpu_used_mebibytes", "DCGM_FI_DEV_FB_USED"),
        ("runai_dcgm_gpu_total_mebibytes", "(DCGM_FI_DEV_FB_USED + DCGM_FI_DEV_FB_FREE)"),
    ];
    json!({
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": RULE_NAME,
            "namespace": NAMESPACE,
            "labels": {"app": "nvidia-dcgm-exporter", "component": "status-exporter-kwok"},
        },
        "spec": {"groups": [{
            "name": GROUP_NAME,
            "rules": records.iter().map(|(record, metric)| json!({"record": record, "expr": expr(metric)})).collect::<Vec<_>>(),
        }]},
    })
}

/// A Go duration (`30s`, `2m`, `1h30m`, `500ms`, `1.5m`); invalid or zero gives
/// [`FALLBACK_INTERVAL`], as upstream.
pub fn polling_interval(text: &str) -> Duration {
    parse_go_duration(text.trim()).filter(|d| !d.is_zero()).unwrap_or(FALLBACK_INTERVAL)
}

fn parse_go_duration(mut s: &str) -> Option<Duration> {
    if s.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !s.is_empty() {
        let num_end = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
        let value: f64 = s[..num_end].parse().ok()?;
        s = &s[num_end..];
        let unit_end = s.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(s.len());
        let scale = match &s[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += value * scale;
        s = &s[unit_end..];
    }
    Some(Duration::from_secs_f64(total))
}

/// What one poll did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Poll {
    NoCrd,
    NoNamespace,
    Present,
    Created,
}

/// Keeps the rule in place.
pub struct RuleKeeper {
    client: Client,
    crd_seen: bool,
}

impl RuleKeeper {
    pub fn new(client: Client) -> RuleKeeper {
        RuleKeeper { client, crd_seen: false }
    }

    async fn crd_served(&mut self) -> Result<bool, kube::Error> {
        if !self.crd_seen {
            let ar = resource();
            match self.client.list_api_group_resources(&format!("{}/{}", ar.group, ar.version)).await {
                Ok(list) => self.crd_seen = list.resources.iter().any(|r| r.name == ar.plural),
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(self.crd_seen)
    }

    /// One poll.
    pub async fn poll(&mut self) -> Result<Poll, kube::Error> {
        if !self.crd_served().await? {
            return Ok(Poll::NoCrd);
        }
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        match namespaces.get_opt(NAMESPACE).await? {
            Some(ns) if ns.metadata.deletion_timestamp.is_none() => {}
            _ => return Ok(Poll::NoNamespace),
        }
        let rules: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), NAMESPACE, &resource());
        if rules.get_opt(RULE_NAME).await?.is_some() {
            return Ok(Poll::Present);
        }
        let obj: DynamicObject = serde_json::from_value(rule()).expect("static rule deserialises");
        match rules.create(&PostParams::default(), &obj).await {
            Ok(_) => Ok(Poll::Created),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(Poll::Present),
            Err(e) => Err(e),
        }
    }

    /// Polls every `interval` until the process ends.
    pub async fn run(mut self, interval: Duration) {
        let mut last = None;
        loop {
            match self.poll().await {
                Ok(p) => {
                    if p == Poll::Created {
                        tracing::info!(namespace = NAMESPACE, name = RULE_NAME, "PrometheusRule created");
                    } else if last != Some(p) {
                        tracing::info!(state = ?p, "Run:ai integration");
                    }
                    last = Some(p);
                }
                Err(e) => tracing::warn!("Run:ai PrometheusRule: {e}"),
            }
            tokio::time::sleep(interval).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_names_labels_and_expressions() {
        let r = rule();
        assert_eq!(r["metadata"]["name"], "fake-gpu-operator-kwok-dcgm");
        assert_eq!(r["metadata"]["namespace"], "runai");
        assert_eq!(r["metadata"]["labels"], json!({"app": "nvidia-dcgm-exporter", "component": "status-exporter-kwok"}));
        let group = &r["spec"]["groups"][0];
        assert_eq!(group["name"], "kwok-dcgm-metrics");
        let records: Vec<&str> = group["rules"].as_array().unwrap().iter().map(|x| x["record"].as_str().unwrap()).collect();
        assert_eq!(records, ["runai_dcgm_gpu_utilization", "runai_dcgm_gpu_used_mebibytes", "runai_dcgm_gpu_total_mebibytes"]);
        assert_eq!(
            group["rules"][0]["expr"],
            "label_replace(label_replace(label_replace(DCGM_FI_DEV_GPU_UTIL, \"pod_name\", \"$1\", \"exported_pod\", \"(.+)\"), \
             \"pod_namespace\", \"$1\", \"exported_namespace\", \"(.+)\"), \"node\", \"$1\", \"Hostname\", \"(.+)\") \
             * on(node) group_left(nodepool) runai_node_nodepool_excluded"
        );
        assert!(group["rules"][2]["expr"].as_str().unwrap().contains("((DCGM_FI_DEV_FB_USED + DCGM_FI_DEV_FB_FREE), \"pod_name\""));
    }

    #[test]
    fn go_durations_with_upstreams_fallback() {
        assert_eq!(polling_interval("2m"), Duration::from_secs(120));
        assert_eq!(polling_interval("5s"), Duration::from_secs(5));
        assert_eq!(polling_interval("1h30m"), Duration::from_secs(5400));
        assert_eq!(polling_interval("500ms"), Duration::from_millis(500));
        assert_eq!(polling_interval("1.5m"), Duration::from_secs(90));
        for bad in ["", "0", "0s", "2", "two minutes", "5x", "m"] {
            assert_eq!(polling_interval(bad), FALLBACK_INTERVAL, "{bad:?}");
        }
    }
}
