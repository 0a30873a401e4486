//! The controller's decisions, as one pure function of everything it lists: for each
//! ComputeDomain, the finalizer, the ResourceClaimTemplate it owns (created once, never
//! updated: the domain's spec is immutable), the status computed from its allocated claims,
//! the nodes they landed on and those nodes' NVLink cliques, and the clean-up of deleted
//! domains and orphaned templates. Level-triggered: the same inputs give the same plan, and a
//! plan applied leaves nothing to do (a restart writes nothing).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::resource::v1::{ResourceClaim, ResourceClaimTemplate};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::Resource;
use serde_json::json;

use super::types::{ChannelConfig, ComputeDomain, ComputeDomainStatus, NodeStatus, API_VERSION, KIND, NOT_READY, READY};
use super::{
    CHANNEL_CLASS, CHANNEL_REQUEST, CLAIM_DOMAIN_LABEL, DRIVER, FINALIZER, GFD_CLIQUE_LABEL, TEMPLATE_DOMAIN_LABEL, TEMPLATE_TARGET_LABEL,
};
use crate::kubelet::dra::kwok::{GPU_COUNT_LABEL, PROFILE_LABEL};

/// GFD's product and count labels (the status-updater writes them on every pool node).
const PRODUCT_LABEL: &str = "nvidia.com/gpu.product";
const COUNT_LABEL: &str = "nvidia.com/gpu.count";

/// The condition type carrying the reason a domain is (not) Ready.
pub const READY_CONDITION: &str = "Ready";
pub const REASON_READY: &str = "AllNodesReady";
pub const REASON_WAITING: &str = "WaitingForNodes";
pub const REASON_CLIQUES: &str = "MultipleCliques";
pub const REASON_CONFLICT: &str = "TemplateNotOwned";

/// One write the controller makes.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    AddFinalizer {
        namespace: String,
        name: String,
    },
    CreateTemplate(Box<ResourceClaimTemplate>),
    /// Remove [`FINALIZER`] from the template, then delete it.
    DeleteTemplate {
        namespace: String,
        name: String,
    },
    /// Remove [`FINALIZER`] from the (deleting) domain.
    RemoveFinalizer {
        namespace: String,
        name: String,
    },
    WriteStatus {
        namespace: String,
        name: String,
        status: Box<ComputeDomainStatus>,
    },
}

/// What the status needs to know about a node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeFacts {
    pub ip_address: String,
    pub clique_id: String,
}

/// The NVLink clique of a node as `<cluster UUID>.<clique id>`: GFD's `nvidia.com/gpu.clique`
/// label when the node has one, else the model's rule ([`fakegpu_model::fabric`]) for its
/// board (the `fake-gpu-operator.run.ai/profile` label `fakegpu cluster up` sets, else GFD's
/// `nvidia.com/gpu.product`) and GPU count. `None` for boards without an NVLink fabric.
pub fn node_clique(node: &Node) -> Option<String> {
    let labels = node.metadata.labels.clone().unwrap_or_default();
    if let Some(c) = labels.get(GFD_CLIQUE_LABEL).filter(|c| !c.is_empty()) {
        return Some(c.clone());
    }
    let profile_key = labels.get(PROFILE_LABEL).or_else(|| labels.get(PRODUCT_LABEL))?;
    let profile = fakegpu_model::find_builtin(profile_key).ok()?;
    let gpus =
        labels.get(GPU_COUNT_LABEL).or_else(|| labels.get(COUNT_LABEL)).and_then(|c| c.parse().ok()).unwrap_or(profile.default_gpu_count);
    fakegpu_model::fabric::clique_for_node(profile, gpus, node.metadata.name.as_deref()?).map(|c| c.label())
}

/// A node's InternalIP (empty when it has none) and clique.
pub fn node_facts(node: &Node) -> NodeFacts {
    let ip_address = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .and_then(|a| a.iter().find(|a| a.type_ == "InternalIP"))
        .map(|a| a.address.clone())
        .unwrap_or_default();
    NodeFacts { ip_address, clique_id: node_clique(node).unwrap_or_default() }
}

/// The template a domain's claims come from: its name in the spec, else the domain's name.
pub fn template_name(domain: &ComputeDomain) -> String {
    domain
        .spec
        .channel
        .as_ref()
        .map(|c| c.resource_claim_template.name.clone())
        .unwrap_or_else(|| domain.metadata.name.clone().unwrap_or_default())
}

/// The ResourceClaimTemplate a domain owns: one channel of [`CHANNEL_CLASS`] per claim, the
/// opaque [`ChannelConfig`] naming the domain, labels as NVIDIA's controller sets them.
pub fn desired_template(domain: &ComputeDomain) -> ResourceClaimTemplate {
    let name = domain.metadata.name.clone().unwrap_or_default();
    let uid = domain.metadata.uid.clone().unwrap_or_default();
    let mode = domain.spec.channel.as_ref().map(|c| c.allocation_mode).unwrap_or_default();
    serde_json::from_value(json!({
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {
            "name": template_name(domain),
            "namespace": domain.metadata.namespace,
            "labels": {TEMPLATE_DOMAIN_LABEL: name, TEMPLATE_TARGET_LABEL: "workload"},
            "finalizers": [FINALIZER],
            "ownerReferences": [{"apiVersion": API_VERSION, "kind": KIND, "name": name, "uid": uid, "controller": true, "blockOwnerDeletion": true}]
        },
        "spec": {
            "metadata": {"labels": {CLAIM_DOMAIN_LABEL: name}},
            "spec": {"devices": {
                "requests": [{"name": CHANNEL_REQUEST, "exactly": {"deviceClassName": CHANNEL_CLASS, "allocationMode": "ExactCount", "count": 1}}],
                "config": [{"opaque": {"driver": DRIVER, "parameters": ChannelConfig::new(&uid, mode)}}]
            }}
        }
    }))
    .expect("static ResourceClaimTemplate shape")
}

fn owned_by(template: &ResourceClaimTemplate, uid: &str) -> bool {
    template.metadata.owner_references.iter().flatten().any(|o| o.kind == KIND && o.uid == uid)
}

/// The domain UID of a claim's opaque channel config, when it has one.
pub fn claim_domain_id(claim: &ResourceClaim) -> Option<String> {
    let alloc = claim.status.as_ref()?.allocation.as_ref()?;
    alloc
        .devices
        .as_ref()?
        .config
        .iter()
        .flatten()
        .filter_map(|c| c.opaque.as_ref())
        .filter(|o| o.driver == DRIVER)
        .find_map(|o| serde_json::from_value::<ChannelConfig>(o.parameters.0.clone()).ok().map(|c| c.domain_id))
}

/// The nodes (pools of this driver) a domain's allocated claims landed on.
pub fn domain_nodes(domain: &ComputeDomain, claims: &[ResourceClaim]) -> BTreeSet<String> {
    let (ns, name, uid) = (&domain.metadata.namespace, domain.metadata.name.as_deref(), domain.metadata.uid.as_deref());
    claims
        .iter()
        .filter(|c| &c.metadata.namespace == ns)
        .filter(|c| c.metadata.labels.as_ref().and_then(|l| l.get(CLAIM_DOMAIN_LABEL)).map(String::as_str) == name)
        .filter(|c| claim_domain_id(c).is_none_or(|id| Some(id.as_str()) == uid))
        .filter_map(|c| c.status.as_ref()?.allocation.as_ref()?.devices.as_ref()?.results.as_ref())
        .flatten()
        .filter(|r| r.driver == DRIVER)
        .map(|r| r.pool.clone())
        .collect()
}

/// The status of a domain: its nodes with IP and clique, Ready when `numNodes` are there and
/// they share one NVLink clique. `previous` supplies the condition's transition time when the
/// condition did not change, so an unchanged domain computes an identical status.
pub fn status(
    domain: &ComputeDomain,
    nodes: &BTreeSet<String>,
    facts: &BTreeMap<String, NodeFacts>,
    template_conflict: bool,
    now: &Time,
) -> ComputeDomainStatus {
    let mut listed: Vec<(String, String, String)> = nodes
        .iter()
        .map(|n| {
            let f = facts.get(n).cloned().unwrap_or_default();
            (f.clique_id, n.clone(), f.ip_address)
        })
        .collect();
    listed.sort();
    let mut cliques: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (clique, node, _) in &listed {
        if !clique.is_empty() {
            cliques.entry(clique).or_default().push(node);
        }
    }
    let want = domain.spec.num_nodes as usize;
    let (ready, reason, message) = if cliques.len() > 1 {
        let spans: Vec<String> = cliques.iter().map(|(c, ns)| format!("{c} ({})", ns.join(", "))).collect();
        (false, REASON_CLIQUES, format!("nodes span {} NVLink cliques, one domain needs one: {}", cliques.len(), spans.join("; ")))
    } else if template_conflict {
        (false, REASON_CONFLICT, format!("ResourceClaimTemplate {} exists and is not owned by this ComputeDomain", template_name(domain)))
    } else if want == 0 || listed.len() >= want {
        (true, REASON_READY, format!("{} of {want} nodes", listed.len()))
    } else {
        (false, REASON_WAITING, format!("{} of {want} nodes", listed.len()))
    };
    let cond_status = if ready { "True" } else { "False" };
    let previous = domain.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == READY_CONDITION));
    let since =
        previous.filter(|c| c.status == cond_status && c.reason == reason).map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
    ComputeDomainStatus {
        status: if ready { READY } else { NOT_READY }.into(),
        nodes: listed
            .into_iter()
            .enumerate()
            .map(|(i, (clique_id, name, ip_address))| NodeStatus { name, ip_address, clique_id, index: i as u32, status: READY.into() })
            .collect(),
        conditions: vec![Condition {
            type_: READY_CONDITION.into(),
            status: cond_status.into(),
            reason: reason.into(),
            message,
            last_transition_time: since,
            observed_generation: domain.metadata.generation,
        }],
    }
}

fn ns_name(domain: &ComputeDomain) -> (String, String) {
    (domain.metadata.namespace.clone().unwrap_or_default(), domain.metadata.name.clone().unwrap_or_default())
}

/// Everything the controller should write, given what it listed: every domain (all
/// namespaces), the templates labelled [`TEMPLATE_DOMAIN_LABEL`], the claims labelled
/// [`CLAIM_DOMAIN_LABEL`] and the facts of every node.
pub fn plan(
    domains: &[ComputeDomain],
    templates: &[ResourceClaimTemplate],
    claims: &[ResourceClaim],
    facts: &BTreeMap<String, NodeFacts>,
    now: &Time,
) -> Vec<Action> {
    let mut actions = Vec::new();
    let template_at = |ns: &str, name: &str| {
        templates.iter().find(|t| t.metadata.namespace.as_deref() == Some(ns) && t.metadata.name.as_deref() == Some(name))
    };
    for d in domains {
        let (namespace, name) = ns_name(d);
        let uid = d.metadata.uid.clone().unwrap_or_default();
        let has_finalizer = d.metadata.finalizers.iter().flatten().any(|f| f == FINALIZER);
        if d.meta().deletion_timestamp.is_some() {
            let owned: Vec<_> =
                templates.iter().filter(|t| t.metadata.namespace.as_deref() == Some(&namespace) && owned_by(t, &uid)).collect();
            for t in &owned {
                actions.push(Action::DeleteTemplate { namespace: namespace.clone(), name: t.metadata.name.clone().unwrap_or_default() });
            }
            // The domain goes only once its templates are gone (the next pass, woken by their deletion).
            if has_finalizer && owned.is_empty() {
                actions.push(Action::RemoveFinalizer { namespace, name });
            }
            continue;
        }
        if !has_finalizer {
            actions.push(Action::AddFinalizer { namespace: namespace.clone(), name: name.clone() });
        }
        let conflict = match template_at(&namespace, &template_name(d)) {
            None => {
                actions.push(Action::CreateTemplate(Box::new(desired_template(d))));
                false
            }
            Some(t) => !owned_by(t, &uid),
        };
        let want = status(d, &domain_nodes(d, claims), facts, conflict, now);
        if d.status.as_ref() != Some(&want) {
            actions.push(Action::WriteStatus { namespace, name, status: Box::new(want) });
        }
    }
    // Templates whose owning domain is gone (removed while the controller was down, or its
    // finalizer forced off): nothing else will delete them, since our finalizer holds them.
    let live: BTreeSet<&str> = domains.iter().filter_map(|d| d.metadata.uid.as_deref()).collect();
    for t in templates {
        let owners: Vec<&str> = t.metadata.owner_references.iter().flatten().filter(|o| o.kind == KIND).map(|o| o.uid.as_str()).collect();
        if !owners.is_empty() && owners.iter().all(|o| !live.contains(o)) {
            actions.push(Action::DeleteTemplate {
                namespace: t.metadata.namespace.clone().unwrap_or_default(),
                name: t.metadata.name.clone().unwrap_or_default(),
            });
        }
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compute_domain::types::AllocationMode;

    fn now() -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).unwrap())
    }

    fn domain(name: &str, uid: &str, num_nodes: u32, mode: &str) -> ComputeDomain {
        serde_json::from_value(json!({
            "apiVersion": API_VERSION, "kind": KIND,
            "metadata": {"name": name, "namespace": "ns", "uid": uid, "generation": 1, "finalizers": [FINALIZER]},
            "spec": {"numNodes": num_nodes, "channel": {"resourceClaimTemplate": {"name": format!("{name}-channel")}, "allocationMode": mode}}
        }))
        .unwrap()
    }

    fn claim(domain: &str, uid: Option<&str>, node: Option<&str>) -> ResourceClaim {
        let mut c = json!({"metadata": {"name": format!("{domain}-{}", node.unwrap_or("pending")), "namespace": "ns", "labels": {CLAIM_DOMAIN_LABEL: domain}}, "spec": {}});
        if let Some(n) = node {
            let mut config = json!([]);
            if let Some(u) = uid {
                config = json!([{"source": "FromClaim", "requests": [], "opaque": {"driver": DRIVER, "parameters": ChannelConfig::new(u, AllocationMode::Single)}}]);
            }
            c["status"] = json!({"allocation": {"devices": {"results": [{"request": "channel", "driver": DRIVER, "pool": n, "device": "channel-0"}], "config": config}}});
        }
        serde_json::from_value(c).unwrap()
    }

    fn facts(nodes: &[(&str, &str, &str)]) -> BTreeMap<String, NodeFacts> {
        nodes.iter().map(|(n, ip, c)| (n.to_string(), NodeFacts { ip_address: ip.to_string(), clique_id: c.to_string() })).collect()
    }

    /// Applies a plan to in-memory objects, as the API server would.
    fn apply(domains: &mut [ComputeDomain], templates: &mut Vec<ResourceClaimTemplate>, actions: &[Action]) {
        for a in actions {
            match a {
                Action::AddFinalizer { name, .. } => {
                    let d = domains.iter_mut().find(|d| d.metadata.name.as_deref() == Some(name)).unwrap();
                    d.metadata.finalizers.get_or_insert_with(Vec::new).push(FINALIZER.into());
                }
                Action::CreateTemplate(t) => templates.push((**t).clone()),
                Action::DeleteTemplate { name, .. } => templates.retain(|t| t.metadata.name.as_deref() != Some(name)),
                Action::RemoveFinalizer { name, .. } => {
                    let d = domains.iter_mut().find(|d| d.metadata.name.as_deref() == Some(name)).unwrap();
                    d.metadata.finalizers = None;
                }
                Action::WriteStatus { name, status, .. } => {
                    domains.iter_mut().find(|d| d.metadata.name.as_deref() == Some(name)).unwrap().status = Some((**status).clone());
                }
            }
        }
    }

    #[test]
    fn template_is_upstreams_shape() {
        let d = domain("cd", "uid-1", 2, "All");
        let t = serde_json::to_value(desired_template(&d)).unwrap();
        assert_eq!(t["metadata"]["name"], "cd-channel");
        assert_eq!(t["metadata"]["labels"][TEMPLATE_DOMAIN_LABEL], "cd");
        assert_eq!(t["metadata"]["labels"][TEMPLATE_TARGET_LABEL], "workload");
        assert_eq!(t["metadata"]["finalizers"][0], FINALIZER);
        assert_eq!(t["metadata"]["ownerReferences"][0]["uid"], "uid-1");
        assert_eq!(t["metadata"]["ownerReferences"][0]["controller"], true);
        assert_eq!(t["spec"]["metadata"]["labels"][CLAIM_DOMAIN_LABEL], "cd");
        let req = &t["spec"]["spec"]["devices"]["requests"][0];
        assert_eq!(req["name"], "channel");
        assert_eq!(req["exactly"], json!({"deviceClassName": CHANNEL_CLASS, "allocationMode": "ExactCount", "count": 1}));
        let params = &t["spec"]["spec"]["devices"]["config"][0]["opaque"];
        assert_eq!(params["driver"], DRIVER);
        assert_eq!(
            params["parameters"],
            json!({"apiVersion": API_VERSION, "kind": "ComputeDomainChannelConfig", "domainID": "uid-1", "allocationMode": "All"})
        );
        // No channel in the spec: the template is named after the domain.
        let mut bare = d.clone();
        bare.spec.channel = None;
        assert_eq!(template_name(&bare), "cd");
    }

    #[test]
    fn new_domain_gets_finalizer_template_and_status_then_nothing_more() {
        let mut d = domain("cd", "uid-1", 2, "Single");
        d.metadata.finalizers = None;
        let mut domains = vec![d];
        let mut templates = Vec::new();
        let first = plan(&domains, &templates, &[], &BTreeMap::new(), &now());
        assert!(matches!(first[0], Action::AddFinalizer { .. }), "{first:?}");
        assert!(matches!(first[1], Action::CreateTemplate(_)));
        let Action::WriteStatus { status, .. } = &first[2] else { panic!("{first:?}") };
        assert_eq!(status.status, NOT_READY);
        assert_eq!(status.conditions[0].reason, REASON_WAITING);
        assert_eq!(status.conditions[0].message, "0 of 2 nodes");
        apply(&mut domains, &mut templates, &first);
        // Restart (same inputs, later clock): nothing to write.
        let later = Time(k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).unwrap());
        assert_eq!(plan(&domains, &templates, &[], &BTreeMap::new(), &later), vec![]);
    }

    #[test]
    fn ready_when_num_nodes_allocated_with_ip_and_clique() {
        let d = domain("cd", "uid-1", 2, "Single");
        let templates = vec![desired_template(&d)];
        let claims = vec![claim("cd", Some("uid-1"), Some("n2")), claim("cd", Some("uid-1"), Some("n1")), claim("cd", None, None)];
        let f = facts(&[("n1", "10.0.0.1", "c.0"), ("n2", "10.0.0.2", "c.0")]);
        let actions = plan(std::slice::from_ref(&d), &templates, &claims, &f, &now());
        let [Action::WriteStatus { status, .. }] = actions.as_slice() else { panic!("{actions:?}") };
        assert_eq!(status.status, READY);
        let got: Vec<_> = status.nodes.iter().map(|n| (n.name.as_str(), n.ip_address.as_str(), n.clique_id.as_str(), n.index)).collect();
        assert_eq!(got, vec![("n1", "10.0.0.1", "c.0", 0), ("n2", "10.0.0.2", "c.0", 1)]);
        assert_eq!(status.conditions[0].status, "True");
        // One node short: NotReady, waiting.
        let s = (**status).clone();
        let short = super::status(&d, &domain_nodes(&d, &claims[..1]), &f, false, &now());
        assert_eq!((short.status.as_str(), short.conditions[0].reason.as_str()), (NOT_READY, REASON_WAITING));
        // numNodes 0: Ready with no node at all.
        let zero = domain("z", "uid-z", 0, "Single");
        assert_eq!(super::status(&zero, &BTreeSet::new(), &f, false, &now()).status, READY);
        // Unchanged status keeps its transition time.
        let mut written = d.clone();
        written.status = Some(s);
        let later = Time(k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).unwrap());
        assert_eq!(plan(&[written], &templates, &claims, &f, &later), vec![]);
    }

    #[test]
    fn two_cliques_are_not_ready_and_named() {
        let d = domain("cd", "uid-1", 4, "Single");
        let claims: Vec<_> = ["a", "b", "c", "d"].iter().map(|n| claim("cd", Some("uid-1"), Some(n))).collect();
        let f = facts(&[("a", "1", "X.0"), ("b", "2", "X.0"), ("c", "3", "X.1"), ("d", "4", "X.1")]);
        let s = status(&d, &domain_nodes(&d, &claims), &f, false, &now());
        assert_eq!(s.status, NOT_READY);
        assert_eq!(s.nodes.len(), 4, "the nodes are still listed");
        let c = &s.conditions[0];
        assert_eq!(c.reason, REASON_CLIQUES);
        assert_eq!(c.message, "nodes span 2 NVLink cliques, one domain needs one: X.0 (a, b); X.1 (c, d)");
        // Nodes without a fabric (no clique) do not split a domain.
        let plain = facts(&[("a", "1", ""), ("b", "2", ""), ("c", "3", "X.0"), ("d", "4", "")]);
        assert_eq!(status(&d, &domain_nodes(&d, &claims), &plain, false, &now()).status, READY);
    }

    #[test]
    fn transition_time_moves_only_when_the_condition_changes() {
        let mut d = domain("cd", "uid-1", 1, "Single");
        let f = facts(&[("n1", "ip", "c.0")]);
        let waiting = status(&d, &BTreeSet::new(), &f, false, &now());
        d.status = Some(waiting.clone());
        let later = Time(k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).unwrap());
        // Same condition later: same time.
        assert_eq!(status(&d, &BTreeSet::new(), &f, false, &later), waiting);
        // Ready now: the time is now.
        let ready = status(&d, &BTreeSet::from(["n1".to_string()]), &f, false, &later);
        assert_eq!(ready.conditions[0].last_transition_time, later);
        assert_eq!(ready.conditions[0].observed_generation, Some(1));
        // NotReady for another reason: the time moves too.
        let conflict = status(&d, &BTreeSet::new(), &f, true, &later);
        assert_eq!((conflict.conditions[0].reason.as_str(), &conflict.conditions[0].last_transition_time), (REASON_CONFLICT, &later));
    }

    #[test]
    fn nodes_are_indexed_by_clique_then_name_and_other_drivers_are_ignored() {
        let d = domain("cd", "uid-1", 0, "Single");
        let mut claims: Vec<_> = ["z", "a", "m"].iter().map(|n| claim("cd", Some("uid-1"), Some(n))).collect();
        let mut gpu = claim("cd", Some("uid-1"), Some("gpu-node"));
        gpu.status.as_mut().unwrap().allocation.as_mut().unwrap().devices.as_mut().unwrap().results.as_mut().unwrap()[0].driver =
            "gpu.nvidia.com".into();
        claims.push(gpu);
        let f = facts(&[("z", "1", "A.0"), ("a", "2", "B.0"), ("m", "3", "A.0")]);
        let s = status(&d, &domain_nodes(&d, &claims), &f, false, &now());
        let order: Vec<_> = s.nodes.iter().map(|n| (n.index, n.name.as_str())).collect();
        assert_eq!(order, vec![(0, "m"), (1, "z"), (2, "a")]);
        // A node the controller has no facts for (deleted) is listed without IP or clique.
        let gone = status(&d, &BTreeSet::from(["ghost".to_string()]), &f, false, &now());
        assert_eq!((gone.nodes[0].ip_address.as_str(), gone.nodes[0].clique_id.as_str()), ("", ""));
        assert_eq!(gone.status, READY);
    }

    #[test]
    fn a_deleting_domain_without_finalizer_or_templates_needs_nothing() {
        let mut d = domain("cd", "uid-1", 1, "Single");
        d.metadata.finalizers = None;
        d.metadata.deletion_timestamp = Some(now());
        assert_eq!(plan(&[d], &[], &[], &BTreeMap::new(), &now()), vec![]);
    }

    #[test]
    fn claims_of_other_domains_or_a_recreated_domain_do_not_count() {
        let d = domain("cd", "uid-2", 1, "Single");
        let claims = vec![
            claim("cd", Some("uid-1"), Some("old")),  // the previous domain of that name
            claim("other", Some("uid-2"), Some("x")), // another domain's label
            claim("cd", Some("uid-2"), Some("mine")),
        ];
        assert_eq!(domain_nodes(&d, &claims), BTreeSet::from(["mine".to_string()]));
        let mut elsewhere = claim("cd", Some("uid-2"), Some("y"));
        elsewhere.metadata.namespace = Some("other-ns".into());
        assert!(domain_nodes(&d, &[elsewhere]).is_empty());
    }

    #[test]
    fn deletion_removes_owned_template_then_finalizer_and_orphans_go() {
        let mut d = domain("cd", "uid-1", 1, "Single");
        let mut templates = vec![desired_template(&d)];
        let mut foreign = desired_template(&domain("x", "uid-x", 1, "Single"));
        foreign.metadata.name = Some("foreign".into());
        foreign.metadata.owner_references = None;
        templates.push(foreign);
        d.metadata.deletion_timestamp = Some(now());
        let actions = plan(std::slice::from_ref(&d), &templates, &[], &BTreeMap::new(), &now());
        assert_eq!(actions, vec![Action::DeleteTemplate { namespace: "ns".into(), name: "cd-channel".into() }]);
        let mut domains = vec![d.clone()];
        apply(&mut domains, &mut templates, &actions);
        let then = plan(&domains, &templates, &[], &BTreeMap::new(), &now());
        assert_eq!(then, vec![Action::RemoveFinalizer { namespace: "ns".into(), name: "cd".into() }]);
        apply(&mut domains, &mut templates, &then);
        assert_eq!(plan(&domains, &templates, &[], &BTreeMap::new(), &now()), vec![]);
        let templates = vec![desired_template(&d), templates[0].clone()];
        // The domain is gone but its template is still there: deleted as an orphan; a template
        // nobody owns is left alone.
        let orphans = plan(&[], &templates, &[], &BTreeMap::new(), &now());
        assert_eq!(orphans, vec![Action::DeleteTemplate { namespace: "ns".into(), name: "cd-channel".into() }]);
    }

    #[test]
    fn a_template_owned_by_someone_else_is_reported_not_replaced() {
        let d = domain("cd", "uid-1", 0, "Single");
        let mut t = desired_template(&d);
        t.metadata.owner_references = None;
        let actions = plan(std::slice::from_ref(&d), &[t], &[], &BTreeMap::new(), &now());
        let [Action::WriteStatus { status, .. }] = actions.as_slice() else { panic!("{actions:?}") };
        assert_eq!((status.status.as_str(), status.conditions[0].reason.as_str()), (NOT_READY, REASON_CONFLICT));
    }

    #[test]
    fn node_clique_follows_the_model_and_gfd_label_wins() {
        let node = |name: &str, labels: serde_json::Value| -> Node {
            serde_json::from_value(json!({"metadata": {"name": name, "labels": labels},
                "status": {"addresses": [{"type": "Hostname", "address": name}, {"type": "InternalIP", "address": "10.1.2.3"}]}}))
            .unwrap()
        };
        let gb = |name: &str| node(name, json!({PROFILE_LABEL: "gb200", GPU_COUNT_LABEL: "4"}));
        let f0 = node_facts(&gb("rack-000"));
        assert_eq!(f0.ip_address, "10.1.2.3");
        let model = fakegpu_model::fabric::clique_for_node(fakegpu_model::find_builtin("gb200").unwrap(), 4, "rack-000").unwrap();
        assert_eq!(f0.clique_id, model.label());
        assert_eq!(node_facts(&gb("rack-017")).clique_id, f0.clique_id);
        assert_ne!(node_facts(&gb("rack-018")).clique_id, f0.clique_id);
        // GFD's product label works too (real nodes); GFD's clique label wins.
        assert_eq!(node_clique(&node("rack-000", json!({PRODUCT_LABEL: "NVIDIA-GB200", COUNT_LABEL: "4"}))), Some(model.label()));
        assert_eq!(node_clique(&node("rack-000", json!({PROFILE_LABEL: "gb200", GFD_CLIQUE_LABEL: "abc.7"}))).as_deref(), Some("abc.7"));
        assert_eq!(node_clique(&node("rack-000", json!({PROFILE_LABEL: "h100"}))), None);
        assert_eq!(node_facts(&node("bare", json!({}))), NodeFacts::default().clone_with_ip("10.1.2.3"));
    }

    impl NodeFacts {
        fn clone_with_ip(&self, ip: &str) -> NodeFacts {
            NodeFacts { ip_address: ip.into(), ..self.clone() }
        }
    }
}
