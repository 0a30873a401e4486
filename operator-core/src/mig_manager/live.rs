//! Real nodes: the applied layouts are the node's live state (the state file every process
//! loading the fake NVML reads and writes), not the annotation.
//!
//! The node-side MIG manager decides with [`super::decide`] from the live layouts, applies a
//! success to the state file ([`apply_layouts`], under the file's lock) and then makes the
//! annotation mirror what the state file holds ([`write_live`]). Mirroring rather than copying
//! the decision means one path for every change of a real node's MIG layout: a layout made
//! with NVIDIA's `nvidia-smi mig` on the node reaches the annotation, and from there the labels,
//! the topology's MIG devices and the per-MIG metrics, exactly as one the manager applied.

use fakegpu_model::state::NodeState;

use super::{
    applied, applied_value, same_applied, write, Applied, NodeWrite, Outcome, Request, MIG_CONFIG_STATE_LABEL, MIG_LAYOUT_ANNOTATION,
};
use std::collections::BTreeMap;

/// The layouts in a node's live state: every GPU whose MIG mode is current (with its
/// instances, possibly none), by index.
pub fn applied_in_state(state: &NodeState, gpu_count: u32) -> Applied {
    (0..gpu_count).filter_map(|g| state.gpu(g).filter(|s| s.mig.current).map(|s| (g, s.mig.clone()))).collect()
}

pub use fakegpu_model::mig_parted::{apply_layouts, state_holders, ApplyError};

/// Whether a real node's request is settled: this manager applied the same request and the
/// state label says `success`. NVIDIA's mig-manager applies a configuration when the label
/// changes (and when it starts) and leaves alone a layout changed by hand afterwards; so does
/// ours: a settled request is not decided again, and the annotation only mirrors the state.
pub fn settled(request: Option<&Request>, last_applied: Option<&Request>, labels: &BTreeMap<String, String>) -> bool {
    request.is_some() && request == last_applied && labels.get(MIG_CONFIG_STATE_LABEL).map(String::as_str) == Some("success")
}

/// The write for a real node: the request's outcome as [`write`] makes it, except that the
/// applied-layout annotation always mirrors `live` (the state file after any apply), with or
/// without a request.
pub fn write_live(
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
    outcome: &Outcome,
    live: &Applied,
) -> NodeWrite {
    let mut w = write(labels, annotations, outcome);
    if applied(annotations).is_ok_and(|now| same_applied(&now, live)) {
        w.annotations.remove(MIG_LAYOUT_ANNOTATION);
    } else {
        w.annotations.insert(MIG_LAYOUT_ANNOTATION.to_string(), applied_value(live));
    }
    w
}

#[cfg(test)]
mod tests {
    use super::super::{decide, NodeInput, Options, MIG_CONFIG_LABEL, MIG_CONFIG_STATE_LABEL};
    use super::*;
    use fakegpu_model::mig::MigLayout;
    use fakegpu_model::state::{Now, Process, ProcessType};
    use fakegpu_model::{mig, mig_parted, NodeSpec, SimulatedNode};

    fn node() -> SimulatedNode {
        SimulatedNode::new(NodeSpec::builtin("h100", Some(2), "real").unwrap())
    }

    fn now() -> Now {
        Now { unix_ms: 1_000, boot_ms: 1_000 }
    }

    fn labels(config: &str) -> BTreeMap<String, String> {
        BTreeMap::from([(MIG_CONFIG_LABEL.to_string(), config.to_string())])
    }

    /// Decides from the live state as the node-side manager does; applies a success.
    fn reconcile(
        n: &SimulatedNode,
        state: &mut NodeState,
        labels: &BTreeMap<String, String>,
        annotations: &BTreeMap<String, String>,
    ) -> NodeWrite {
        let live = Ok(applied_in_state(state, n.spec.gpu_count));
        let holders = state_holders(state, n.spec.gpu_count);
        let input = NodeInput { labels, annotations, node: n, holders: &holders, applied: &live };
        let mut outcome = decide(input, None, Options::default());
        if let Outcome::Success { applied, .. } = &outcome {
            if let Err(e) = apply_layouts(state, &n.spec, applied, now()) {
                outcome = Outcome::Failed { reason: e.to_string() };
            }
        }
        write_live(labels, annotations, &outcome, &applied_in_state(state, n.spec.gpu_count))
    }

    fn annotated(w: &NodeWrite) -> BTreeMap<String, String> {
        w.annotations.iter().filter_map(|(k, v)| Some((k.clone(), v.clone()?))).collect()
    }

    #[test]
    fn a_named_config_is_written_to_the_live_state_and_mirrored() {
        let n = node();
        let mut state = NodeState::default();
        let w = reconcile(&n, &mut state, &labels("all-1g.10gb"), &BTreeMap::new());
        assert_eq!(w.labels[MIG_CONFIG_STATE_LABEL].as_deref(), Some("success"));
        let live = applied_in_state(&state, 2);
        assert_eq!(live.len(), 2);
        assert!(live.values().all(|l| l.current && mig::mig_devices(l).len() == 7));
        assert_eq!(annotated(&w)[MIG_LAYOUT_ANNOTATION], applied_value(&live).unwrap());
        // Once applied and annotated: nothing more to write, nothing changes in the state.
        let again = state.clone();
        let mut l = labels("all-1g.10gb");
        l.insert(MIG_CONFIG_STATE_LABEL.into(), "success".into());
        let w = reconcile(&n, &mut state, &l, &annotated(&w));
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(state, again);
    }

    #[test]
    fn a_request_is_settled_once_applied_with_success_until_it_changes() {
        let named = |n: &str| Some(Request::Named(n.into()));
        let mut l = labels("all-1g.10gb");
        assert!(!settled(named("all-1g.10gb").as_ref(), None, &l), "never applied by this manager (it started): apply");
        assert!(!settled(named("all-1g.10gb").as_ref(), named("all-1g.10gb").as_ref(), &l), "no success yet");
        l.insert(MIG_CONFIG_STATE_LABEL.into(), "success".into());
        assert!(settled(named("all-1g.10gb").as_ref(), named("all-1g.10gb").as_ref(), &l));
        assert!(!settled(named("all-disabled").as_ref(), named("all-1g.10gb").as_ref(), &l), "a new request");
        assert!(!settled(None, None, &l), "no request: nothing to settle");
        l.insert(MIG_CONFIG_STATE_LABEL.into(), "failed".into());
        assert!(!settled(named("all-1g.10gb").as_ref(), named("all-1g.10gb").as_ref(), &l), "failed: retried");
    }

    #[test]
    fn a_layout_made_on_the_node_without_a_request_is_mirrored() {
        let n = node();
        let mut state = NodeState::default();
        let layout = mig::named_layout(&n.spec.profile, "all-3g.40gb").unwrap();
        state.gpu_mut(&n.spec, 1, now()).unwrap().mig = layout.clone();
        let w = reconcile(&n, &mut state, &BTreeMap::new(), &BTreeMap::new());
        assert!(w.labels.is_empty() && w.event.is_none(), "no request: no state label, no event: {w:?}");
        let mirrored = super::super::parse_applied(w.annotations[MIG_LAYOUT_ANNOTATION].as_deref().unwrap()).unwrap();
        assert_eq!(mirrored.keys().copied().collect::<Vec<_>>(), [1]);
        assert!(mig_parted::same_partition(&mirrored[&1], &layout));
        // MIG switched off again on the node: the annotation goes.
        state.gpu_mut(&n.spec, 1, now()).unwrap().mig = MigLayout::default();
        let w = reconcile(&n, &mut state, &BTreeMap::new(), &annotated(&w));
        assert_eq!(w.annotations.get(MIG_LAYOUT_ANNOTATION), Some(&None));
    }

    #[test]
    fn a_gpu_with_a_process_is_not_repartitioned_and_nothing_changes() {
        let n = node();
        let mut state = NodeState::default();
        let w = reconcile(&n, &mut state, &labels("all-1g.10gb"), &BTreeMap::new());
        let applied_annotations = annotated(&w);
        state.gpu_mut(&n.spec, 1, now()).unwrap().processes.push(process(4242, "train"));
        let before = state.clone();
        let w = reconcile(&n, &mut state, &labels("all-disabled"), &applied_annotations);
        assert_eq!(w.labels[MIG_CONFIG_STATE_LABEL].as_deref(), Some("failed"));
        let event = w.event.expect("a failure is reported");
        assert!(event.contains("process 4242 (train)") && event.contains("nothing was changed"), "{event}");
        assert_eq!(state, before, "GPU 0 is free but the node is not half-applied");
        assert!(!w.annotations.contains_key(MIG_LAYOUT_ANNOTATION), "the annotation still mirrors the state");
    }

    fn process(pid: u32, name: &str) -> Process {
        Process {
            pid,
            name: name.into(),
            used_memory_bytes: 1 << 30,
            kind: ProcessType::default(),
            gpu_instance_id: None,
            compute_instance_id: None,
            pid_namespace: None,
        }
    }
}
