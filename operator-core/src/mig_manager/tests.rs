use super::*;
use fakegpu_model::NodeSpec;
use serde_json::json;

fn node(profile: &str, gpus: u32) -> SimulatedNode {
    SimulatedNode::new(NodeSpec::builtin(profile, Some(gpus), "mig-node").unwrap())
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn layout(n: &SimulatedNode, config: &str) -> MigLayout {
    mig::named_layout(&n.spec.profile, config).unwrap()
}

fn applied_of(n: &SimulatedNode, configs: &[&str]) -> String {
    let a: Applied = configs.iter().enumerate().map(|(g, c)| (g as u32, layout(n, c))).collect();
    applied_value(&a).unwrap_or_default()
}

/// Decides and writes for one node; returns the outcome and the write.
fn run(
    n: &SimulatedNode,
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
    holders: &BTreeMap<u32, String>,
    custom: Custom<'_>,
    runai: bool,
) -> (Outcome, NodeWrite) {
    let now = applied(annotations);
    let o = decide(NodeInput { labels, annotations, node: n, holders, applied: &now }, custom, Options { runai });
    let w = write(labels, annotations, &o);
    (o, w)
}

fn devices_per_gpu(o: &Outcome, n: &SimulatedNode) -> Vec<usize> {
    let Outcome::Success { applied, .. } = o else { panic!("not a success: {o:?}") };
    (0..n.gpus.len() as u32).map(|g| applied.get(&g).map_or(0, |l| mig::mig_devices(l).len())).collect()
}

const RUNAI_DOC: &str = "version: v1\nmig-configs:\n  selected:\n    - devices: [\"0\"]\n      mig-enabled: true\n      mig-devices:\n        - {name: 1g.10gb, position: 6, size: 1}\n        - {name: 4g.40gb, position: 0, size: 4}\n";

/// The request each combination of label and annotation makes.
#[test]
fn request_precedence_table() {
    let label = (MIG_CONFIG_LABEL, "all-1g.10gb");
    let annotation = (RUNAI_MIG_CONFIG_ANNOTATION, RUNAI_DOC);
    type Pairs<'a> = &'a [(&'a str, &'a str)];
    let cases: &[(Pairs<'_>, Pairs<'_>, bool, Option<Request>)] = &[
        (&[], &[], true, None),
        (&[label], &[], false, Some(Request::Named("all-1g.10gb".into()))),
        (&[label], &[], true, Some(Request::Named("all-1g.10gb".into()))),
        (&[], &[annotation], true, Some(Request::RunAi(RUNAI_DOC.into()))),
        // mig-faker off: the annotation is not ours to read.
        (&[], &[annotation], false, None),
        // Both: the annotation (module docs say why).
        (&[label], &[annotation], true, Some(Request::RunAi(RUNAI_DOC.into()))),
        (&[label], &[annotation], false, Some(Request::Named("all-1g.10gb".into()))),
        // Empty values are no request; an empty annotation leaves the label in force.
        (&[(MIG_CONFIG_LABEL, "")], &[], true, None),
        (&[label], &[(RUNAI_MIG_CONFIG_ANNOTATION, "  ")], true, Some(Request::Named("all-1g.10gb".into()))),
    ];
    for (labels, annotations, runai, want) in cases {
        assert_eq!(&request(&map(labels), &map(annotations), *runai), want, "{labels:?} {annotations:?} runai={runai}");
    }
}

#[test]
fn named_config_applies_and_writes_state_and_layout_once() {
    let n = node("h100", 2);
    let labels = map(&[(MIG_CONFIG_LABEL, "all-1g.10gb")]);
    let (o, w) = run(&n, &labels, &BTreeMap::new(), &BTreeMap::new(), None, false);
    assert_eq!(devices_per_gpu(&o, &n), vec![7, 7]);
    assert_eq!(w.labels, BTreeMap::from([(MIG_CONFIG_STATE_LABEL.to_string(), Some("success".to_string()))]));
    let value = w.annotations[MIG_LAYOUT_ANNOTATION].clone().unwrap();
    assert_eq!(value, applied_of(&n, &["all-1g.10gb", "all-1g.10gb"]));
    assert!(w.event.is_none() && !w.annotations.contains_key(RUNAI_MIG_MAPPING_ANNOTATION));
    assert_eq!(w.patch()["metadata"]["labels"][MIG_CONFIG_STATE_LABEL], "success");
    // Read back: the node as the write left it needs nothing more.
    let labels = map(&[(MIG_CONFIG_LABEL, "all-1g.10gb"), (MIG_CONFIG_STATE_LABEL, "success")]);
    let annotations = map(&[(MIG_LAYOUT_ANNOTATION, &value)]);
    let (o2, w2) = run(&n, &labels, &annotations, &BTreeMap::new(), None, false);
    assert_eq!(o2, o);
    assert!(w2.is_empty(), "{w2:?}");
    // Back to whole GPUs: the annotation goes.
    let labels = map(&[(MIG_CONFIG_LABEL, "all-disabled"), (MIG_CONFIG_STATE_LABEL, "success")]);
    let (o3, w3) = run(&n, &labels, &annotations, &BTreeMap::new(), None, false);
    assert_eq!(devices_per_gpu(&o3, &n), vec![0, 0]);
    assert_eq!(w3.annotations, BTreeMap::from([(MIG_LAYOUT_ANNOTATION.to_string(), None)]));
    assert!(w3.labels.is_empty());
}

/// Every way a request fails: state `failed`, the reason, one Event, and no layout written.
#[test]
fn failures_change_nothing_and_name_the_reason() {
    let n = node("a100-80gb", 2);
    let bad_custom = MigConfigs::parse(&json!({"version": "v2", "mig-configs": {}}));
    let held = BTreeMap::from([(1u32, "team/train".to_string())]);
    let whole = BTreeMap::new();
    type Case<'a> = (&'a str, BTreeMap<String, String>, BTreeMap<String, String>, &'a BTreeMap<u32, String>, Custom<'a>, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (
            "unknown name",
            map(&[(MIG_CONFIG_LABEL, "all-9g.99gb")]),
            map(&[]),
            &whole,
            None,
            "no MIG configuration named \"all-9g.99gb\"",
        ),
        (
            "custom ConfigMap unreadable",
            map(&[(MIG_CONFIG_LABEL, "all-1g.10gb")]),
            map(&[]),
            &whole,
            Some(&bad_custom),
            "custom MIG configurations unreadable: MIG configuration file: version: \"v2\" is not supported",
        ),
        (
            "busy GPU",
            map(&[(MIG_CONFIG_LABEL, "all-1g.10gb")]),
            map(&[]),
            &held,
            None,
            "MIG configuration \"all-1g.10gb\" would repartition GPU 1, which is in use by team/train; nothing was changed",
        ),
        (
            "run.ai annotation not YAML",
            map(&[]),
            map(&[(RUNAI_MIG_CONFIG_ANNOTATION, "version: [v1")]),
            &whole,
            None,
            "annotation run.ai/mig.config is not YAML",
        ),
        (
            "run.ai annotation malformed",
            map(&[]),
            map(&[(RUNAI_MIG_CONFIG_ANNOTATION, "version: v1\nmig-configs: {a: []}\n")]),
            &whole,
            None,
            "annotation run.ai/mig.config: MIG configuration file: mig-configs.a: has no entries",
        ),
        (
            "run.ai annotation ambiguous",
            map(&[]),
            map(&[(
                RUNAI_MIG_CONFIG_ANNOTATION,
                "version: v1\nmig-configs:\n  a: [{devices: all, mig-enabled: false}]\n  b: [{devices: all, mig-enabled: false}]\n",
            )]),
            &whole,
            None,
            "names 2 configurations and none is \"selected\"",
        ),
        (
            "does not fit",
            map(&[]),
            map(&[(
                RUNAI_MIG_CONFIG_ANNOTATION,
                "version: v1\nmig-configs:\n  selected:\n    - devices: [0]\n      mig-enabled: true\n      mig-devices: [{name: 4g.40gb, position: 2}]\n",
            )]),
            &whole,
            None,
            "GPU 0: 4g.40gb at position 2",
        ),
        (
            "applied annotation unreadable",
            map(&[(MIG_CONFIG_LABEL, "all-1g.10gb")]),
            map(&[(MIG_LAYOUT_ANNOTATION, "[1,2]")]),
            &whole,
            None,
            "annotation fake-gpu-operator.run.ai/mig-layout is not a map",
        ),
    ];
    for (what, labels, annotations, holders, custom, expected) in cases {
        let (o, w) = run(&n, &labels, &annotations, holders, custom, true);
        let Outcome::Failed { reason } = &o else { panic!("{what}: {o:?}") };
        assert!(reason.contains(expected), "{what}: {reason}");
        assert_eq!(w.labels.get(MIG_CONFIG_STATE_LABEL), Some(&Some("failed".to_string())), "{what}");
        assert!(!w.annotations.contains_key(MIG_LAYOUT_ANNOTATION), "{what}: layouts untouched");
        assert!(!w.annotations.contains_key(RUNAI_MIG_MAPPING_ANNOTATION), "{what}");
        assert_eq!(w.event.as_deref(), Some(reason.as_str()), "{what}");
        // Reconciled again as the write left it: no second Event, no write.
        let mut labels = labels.clone();
        labels.insert(MIG_CONFIG_STATE_LABEL.into(), "failed".into());
        let mut annotations = annotations.clone();
        annotations.insert(MIG_REASON_ANNOTATION.into(), reason.clone());
        let (_, again) = run(&n, &labels, &annotations, holders, custom, true);
        assert!(again.is_empty(), "{what}: {again:?}");
    }
}

#[test]
fn busy_gpu_with_the_layout_already_is_left_alone_and_success_clears_the_reason() {
    let n = node("a100-80gb", 2);
    let value = applied_of(&n, &["all-1g.10gb", "all-disabled"]);
    let held = BTreeMap::from([(0u32, "team/infer".to_string())]);
    // GPU 0 already has 7 × 1g.10gb: a pod on it does not block changing GPU 1.
    let labels = map(&[(MIG_CONFIG_LABEL, "all-1g.10gb"), (MIG_CONFIG_STATE_LABEL, "failed")]);
    let annotations = map(&[(MIG_LAYOUT_ANNOTATION, &value), (MIG_REASON_ANNOTATION, "earlier")]);
    let (o, w) = run(&n, &labels, &annotations, &held, None, false);
    assert_eq!(devices_per_gpu(&o, &n), vec![7, 7]);
    assert_eq!(w.labels[MIG_CONFIG_STATE_LABEL].as_deref(), Some("success"));
    assert_eq!(w.annotations[MIG_REASON_ANNOTATION], None);
    assert!(w.event.is_none());
    // Busy GPU 0 and a config that changes it: refused even though GPU 1 is free.
    let labels = map(&[(MIG_CONFIG_LABEL, "all-disabled")]);
    let (o, _) = run(&n, &labels, &annotations, &held, None, false);
    assert!(matches!(&o, Outcome::Failed { reason } if reason.contains("GPU 0") && reason.contains("team/infer")), "{o:?}");
}

#[test]
fn custom_configs_override_builtins_and_add_names() {
    let n = node("h100", 2);
    let custom = MigConfigs::parse(&json!({"version": "v1", "mig-configs": {
        "all-1g.10gb": [{"devices": "all", "mig-enabled": true, "mig-devices": {"3g.40gb": 2}}],
        "half": [{"devices": [0], "mig-enabled": true, "mig-devices": {"7g.80gb": 1}}]}}));
    let custom = Some(&custom);
    let (o, _) = run(&n, &map(&[(MIG_CONFIG_LABEL, "all-1g.10gb")]), &map(&[]), &BTreeMap::new(), custom, false);
    assert_eq!(devices_per_gpu(&o, &n), vec![2, 2]);
    let (o, _) = run(&n, &map(&[(MIG_CONFIG_LABEL, "half")]), &map(&[]), &BTreeMap::new(), custom, false);
    assert_eq!(devices_per_gpu(&o, &n), vec![1, 0]);
    // Built-ins the ConfigMap does not name stay.
    let (o, _) = run(&n, &map(&[(MIG_CONFIG_LABEL, "all-balanced")]), &map(&[]), &BTreeMap::new(), custom, false);
    assert_eq!(devices_per_gpu(&o, &n), vec![4, 4]);
}

#[test]
fn removed_request_changes_nothing() {
    let n = node("h100", 2);
    let value = applied_of(&n, &["all-1g.10gb", "all-1g.10gb"]);
    for labels in [map(&[(MIG_CONFIG_STATE_LABEL, "success")]), map(&[(MIG_CONFIG_LABEL, ""), (MIG_CONFIG_STATE_LABEL, "success")])] {
        let annotations = map(&[(MIG_LAYOUT_ANNOTATION, &value)]);
        let (o, w) = run(&n, &labels, &annotations, &BTreeMap::new(), None, true);
        assert_eq!(o, Outcome::NoRequest);
        assert!(w.is_empty());
    }
}

#[test]
fn runai_annotation_writes_the_mapping_with_nvml_uuids() {
    let n = node("a100-80gb", 2);
    let annotations = map(&[(RUNAI_MIG_CONFIG_ANNOTATION, RUNAI_DOC)]);
    // The label is there too: the annotation wins.
    let labels = map(&[(MIG_CONFIG_LABEL, "all-7g.80gb")]);
    let (o, w) = run(&n, &labels, &annotations, &BTreeMap::new(), None, true);
    assert_eq!(devices_per_gpu(&o, &n), vec![2, 0]);
    let Outcome::Success { applied, mapping: Some(mapping) } = &o else { panic!("{o:?}") };
    assert_eq!(w.annotations[RUNAI_MIG_MAPPING_ANNOTATION].as_deref(), Some(mapping.as_str()));
    assert_eq!(w.labels[MIG_CONFIG_STATE_LABEL].as_deref(), Some("success"));
    let json: serde_json::Value = serde_json::from_slice(&decode_base64(mapping)).unwrap();
    let migs = mig::gpu_mig_devices(&n.spec.profile, "mig-node", 0, &n.gpus[0].uuid, &applied[&0]);
    let want: Vec<serde_json::Value> =
        migs.iter().map(|m| json!({"position": m.placement.start, "device_uuid": m.uuid, "gpu_instance_id": m.gpu_instance})).collect();
    assert_eq!(json, json!({"0": want}));
    // 4g.40gb at slice 0 is GI 1, 1g.10gb at slice 6 is GI 13 (NVML's placement tree).
    let mut by_position: Vec<(u64, u64)> =
        json["0"].as_array().unwrap().iter().map(|d| (d["position"].as_u64().unwrap(), d["gpu_instance_id"].as_u64().unwrap())).collect();
    by_position.sort();
    assert_eq!(by_position, vec![(0, 1), (6, 13)]);
    assert!(json["0"][0]["device_uuid"].as_str().unwrap().starts_with("MIG-"));
    // The annotation removed: the label applies, and the mapping of the Run:ai request goes.
    let mut after = map(&[(RUNAI_MIG_MAPPING_ANNOTATION, mapping.as_str())]);
    after.insert(MIG_LAYOUT_ANNOTATION.into(), applied_value(applied).unwrap());
    let (o, w) = run(&n, &labels, &after, &BTreeMap::new(), None, true);
    assert_eq!(devices_per_gpu(&o, &n), vec![1, 1]);
    assert_eq!(w.annotations[RUNAI_MIG_MAPPING_ANNOTATION], None);
    assert!(w.annotations[MIG_LAYOUT_ANNOTATION].is_some());
}

#[test]
fn holders_come_from_allocations_and_sharing() {
    use crate::topology::{ContainerDetails, GpuDetails, GpuStatus};
    let pod = |ns: &str, p: &str| ContainerDetails { namespace: ns.into(), pod: p.into(), container: "c".into() };
    let mut shared = GpuStatus::default();
    shared.shared_by.insert("uid".into(), pod("team", "frac"));
    let t = NodeTopology {
        gpus: vec![
            GpuDetails { id: "GPU-0".into(), status: GpuStatus { allocated_by: pod("a", "whole"), ..Default::default() }, mig: None },
            GpuDetails { id: "GPU-1".into(), ..Default::default() },
            GpuDetails { id: "GPU-2".into(), status: shared, mig: None },
        ],
        ..Default::default()
    };
    assert_eq!(holders(&t), BTreeMap::from([(0, "a/whole".to_string()), (2, "team/frac".to_string())]));
}

#[test]
fn custom_yaml_and_node_gpus() {
    let custom = parse_custom("version: v1\nmig-configs:\n  mine:\n    - devices: all\n      mig-enabled: false\n").unwrap();
    assert!(custom.get("mine").is_some());
    let err = parse_custom("version: [").unwrap_err().to_string();
    assert!(err.contains("config.yaml: not YAML"), "{err}");
    let err = parse_custom("version: v1\nmig-configs: {}\n").unwrap_err().to_string();
    assert!(err.contains("names no configuration"), "{err}");
    // From labels: the profile's GPUs, no holders.
    let labels = map(&[(crate::resolve::NODE_PROFILE_LABEL, "h100"), (crate::resolve::NODE_GPUS_LABEL, "4")]);
    let (n, held) = node_gpus("kw", &labels, None).unwrap().unwrap();
    assert_eq!((n.gpus.len(), held.len()), (4, 0));
    assert_eq!(n.gpus[0].uuid, fakegpu_model::gpu_identity("kw", 0, &[]).uuid);
    assert!(node_gpus("kw", &map(&[]), None).unwrap().is_none());
    assert!(node_gpus("kw", &map(&[(crate::resolve::NODE_PROFILE_LABEL, "nope")]), None).is_err());
}

#[test]
fn base64_matches_the_standard_alphabet() {
    for (raw, enc) in [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("{\"0\":[]}", "eyIwIjpbXX0=")] {
        assert_eq!(base64(raw.as_bytes()), enc);
        assert_eq!(decode_base64(enc), raw.as_bytes());
    }
}

fn decode_base64(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let vals: Vec<u32> = s.bytes().filter(|b| *b != b'=').map(|b| ALPHABET.iter().position(|a| *a == b).unwrap() as u32).collect();
    let mut out = Vec::new();
    for chunk in vals.chunks(4) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, v)| acc | v << (18 - 6 * i));
        for i in 0..chunk.len().saturating_sub(1) {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}
