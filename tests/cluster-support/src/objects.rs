//! Small predicates and builders for the objects cluster tests create and inspect.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, Pod};

pub use fakegpu_cluster::nodes::kwok_node;

/// Label put on everything a test creates, so leftovers can be found and removed by hand.
pub const TEST_LABEL: &str = "fake-gpu-operator.run.ai/test";

pub fn node_ready(n: &Node) -> bool {
    fakegpu_cluster::nodes::is_ready(n)
}

pub fn pod_running(p: &Pod) -> bool {
    p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

/// Condition `type_` of a pod with its status and reason, if present.
pub fn pod_condition(p: &Pod, type_: &str) -> Option<(String, Option<String>)> {
    p.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == type_).map(|c| (c.status.clone(), c.reason.clone()))
}

/// A KWOK node carrying the test label plus `extra` labels.
pub fn test_node(name: &str, test: &str, extra: &[(&str, &str)]) -> Node {
    let mut labels = BTreeMap::from([(TEST_LABEL.to_string(), test.to_string())]);
    labels.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    kwok_node(name, &labels)
}
