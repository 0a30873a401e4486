use super::*;
use crate::resolve::{resolve_all, Profiles};

const KEY: &str = "example.com/pool";

fn settings() -> Settings {
    Settings {
        namespace: "gpu-operator".into(),
        image: "fgo:1".into(),
        image_pull_policy: "IfNotPresent".into(),
        owner: Some(Owner { name: "topology".into(), uid: "uid-1".into() }),
    }
}

fn want(pools: &str) -> Desired {
    want_with(pools, KEY, &settings())
}

fn want_with(pools: &str, key: &str, s: &Settings) -> Desired {
    let cfg = ClusterConfig::parse(&format!("nodePoolLabelKey: {key}\nnodePools:\n{pools}")).unwrap();
    let resolved = resolve_all(&cfg, &Profiles::new()).unwrap();
    desired(&cfg, &resolved, s)
}

/// What the API server would return for the desired objects: as written, with a version.
fn existing(d: &Desired) -> Actual {
    let stamp = |m: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| m.resource_version = Some("7".into());
    Actual {
        config_maps: d.config_maps.values().cloned().map(|mut c| (stamp(&mut c.metadata), c).1).collect(),
        daemon_sets: d.daemon_sets.values().cloned().map(|mut x| (stamp(&mut x.metadata), x).1).collect(),
    }
}

fn described(a: &[Action]) -> Vec<String> {
    a.iter().map(Action::describe).collect()
}

const H100: &str = "  h:\n    gpu: {backend: mock, profile: h100, overrides: {device_count: 4}}\n";
const FAKE: &str = "  f:\n    gpu: {backend: fake, profile: a100-80gb}\n";

#[test]
fn a_mock_pool_gets_upstreams_objects() {
    let d = want(&format!("{H100}{FAKE}"));
    assert_eq!(d.config_maps.keys().collect::<Vec<_>>(), ["nvml-mock-h"], "fake pools get nothing");
    assert_eq!(d.daemon_sets.keys().collect::<Vec<_>>(), ["nvml-mock-h"]);
    let managed = BTreeMap::from([
        ("app.kubernetes.io/managed-by".to_string(), "fake-gpu-operator".to_string()),
        ("fake-gpu-operator/component".to_string(), "nvml-mock".to_string()),
        ("fake-gpu-operator/pool".to_string(), "h".to_string()),
    ]);
    let cm = &d.config_maps["nvml-mock-h"];
    assert_eq!(cm.metadata.namespace.as_deref(), Some("gpu-operator"));
    assert_eq!(cm.metadata.labels.as_ref(), Some(&managed));
    // Owned by the topology ConfigMap: deleting it (helm uninstall) deletes them.
    let owner = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        m.owner_references.iter().flatten().map(|o| (o.kind.clone(), o.name.clone(), o.uid.clone())).collect::<Vec<_>>()
    };
    let topology = vec![("ConfigMap".to_string(), "topology".to_string(), "uid-1".to_string())];
    assert_eq!(owner(&cm.metadata), topology);
    assert_eq!(owner(&d.daemon_sets["nvml-mock-h"].metadata), topology);
    let unowned = want_with(H100, KEY, &Settings { owner: None, ..settings() });
    assert_eq!(unowned.config_maps["nvml-mock-h"].metadata.owner_references, None);
    let text = &cm.data.as_ref().unwrap()[crate::node_files::CONFIG_KEY];

    let ds = &d.daemon_sets["nvml-mock-h"];
    assert_eq!(ds.metadata.labels.as_ref(), Some(&managed));
    let spec = &ds.spec;
    assert_eq!(spec.selector.match_labels.as_ref(), Some(&managed));
    let tmeta = spec.template.metadata.as_ref().unwrap();
    assert_eq!(tmeta.labels.as_ref(), Some(&managed));
    // The hash is of the config text the pods mount: sha256 of it, lower-case hex.
    let hash = &tmeta.annotations.as_ref().unwrap()["fake-gpu-operator/config-hash"];
    assert_eq!(hash.len(), 64);
    assert_eq!(hash, &sha256_hex(text));
    assert_eq!(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    let pod = spec.template.spec.as_ref().unwrap();
    assert_eq!(pod.node_selector.as_ref(), Some(&BTreeMap::from([(KEY.to_string(), "h".to_string())])));
    let c = &pod.containers[0];
    assert_eq!((c.name.as_str(), c.image.as_deref()), ("nvml-mock", Some("fgo:1")));
    assert_eq!(c.security_context.as_ref().and_then(|s| s.privileged), Some(true));
    let env = &c.env.as_ref().unwrap()[0];
    assert_eq!(env.name, "NODE_NAME");
    assert_eq!(env.value_from.as_ref().unwrap().field_ref.as_ref().unwrap().field_path, "spec.nodeName");
    let pre_stop = c.lifecycle.as_ref().unwrap().pre_stop.as_ref().unwrap().exec.as_ref().unwrap().command.clone().unwrap();
    assert_eq!(pre_stop.last().map(String::as_str), Some("--cleanup"));
    assert_eq!(pre_stop[1], "nvml-mock-agent");
    let volumes: BTreeMap<String, (Option<String>, Option<String>)> = pod
        .volumes
        .iter()
        .flatten()
        .map(|v| (v.name.clone(), (v.host_path.as_ref().map(|h| h.path.clone()), v.config_map.as_ref().map(|m| m.name.clone()))))
        .collect();
    let mounts: BTreeMap<String, String> = c.volume_mounts.iter().flatten().map(|m| (m.name.clone(), m.mount_path.clone())).collect();
    for (host, inside) in
        [("/var/lib/nvml-mock", "/host/var/lib/nvml-mock"), ("/var/run/cdi", "/host/var/run/cdi"), ("/run/nvidia", "/host/run/nvidia")]
    {
        let (vol, _) = volumes.iter().find(|(_, (h, _))| h.as_deref() == Some(host)).unwrap_or_else(|| panic!("hostPath {host}"));
        assert_eq!(mounts[vol], inside);
    }
    let (vol, _) = volumes.iter().find(|(_, (_, m))| m.as_deref() == Some("nvml-mock-h")).expect("the ConfigMap is mounted");
    assert_eq!(mounts[vol], CONFIG_MOUNT);
    assert!(c.args.as_ref().unwrap().contains(&format!("{CONFIG_MOUNT}/{}", crate::node_files::CONFIG_KEY)));
}

#[test]
fn the_config_is_the_status_updaters_node_config_without_the_node() {
    let d = want(H100);
    let text = &d.config_maps["nvml-mock-h"].data.as_ref().unwrap()[crate::node_files::CONFIG_KEY];
    let mut file = fakegpu_model::config::parse_config(text, "cm").unwrap();
    assert_eq!(file.node, None, "the agent pins its node");
    file.node = Some("node-7".into());
    let spec = fakegpu_model::config::resolve_config(&file, "cm", "node-7").unwrap();
    // The same GPUs (UUIDs) the status-updater gives node-7 of this pool.
    let cfg = ClusterConfig::parse(&format!("nodePoolLabelKey: {KEY}\nnodePools:\n{H100}")).unwrap();
    let r = &resolve_all(&cfg, &Profiles::new()).unwrap()["h"];
    assert_eq!(spec, crate::index::node_spec("node-7", r));
    assert_eq!(spec.gpu_count, 4);
    let uuids: Vec<String> = fakegpu_model::SimulatedNode::new(spec).gpus.into_iter().map(|g| g.uuid).collect();
    assert_eq!(uuids, crate::index::gpu_uuids("node-7", r));
}

#[test]
fn pools_that_cannot_have_objects_are_skipped_with_a_reason() {
    let cases = [
        ("  Big_Pool:\n    gpu: {backend: mock, profile: h100}\n", "Big_Pool", "not a valid object name"),
        ("  z:\n    gpu: {backend: mock, profile: h100, overrides: {devices: []}}\n", "z", "no GPUs"),
    ];
    for (pools, pool, why) in cases {
        let d = want(pools);
        assert!(d.config_maps.is_empty() && d.daemon_sets.is_empty(), "{pool}");
        assert_eq!(d.skipped.len(), 1, "{pool}");
        assert_eq!(d.skipped[0].0, pool);
        assert!(d.skipped[0].1.contains(why), "{pool}: {}", d.skipped[0].1);
    }
}

/// Each case: the config the objects were made from, the config now (with its label key), and
/// the writes expected.
#[test]
fn actions_bring_what_exists_to_what_is_wanted() {
    let two = format!("{H100}  l:\n    gpu: {{backend: mock, profile: l40s}}\n");
    let h100_8 = "  h:\n    gpu: {backend: mock, profile: h100}\n";
    let h_fake = "  h:\n    gpu: {backend: fake, profile: h100}\n";
    let s = settings();
    let cases: Vec<(&str, Desired, Desired, Vec<&str>)> = vec![
        ("nothing there", Desired::default(), want(H100), vec!["create ConfigMap nvml-mock-h", "create DaemonSet nvml-mock-h"]),
        ("in sync", want(&two), want(&two), vec![]),
        ("profile changed", want(H100), want(h100_8), vec!["update ConfigMap nvml-mock-h", "update DaemonSet nvml-mock-h"]),
        (
            "switched to fake",
            want(&two),
            want(&format!("{h_fake}  l:\n    gpu: {{backend: mock, profile: l40s}}\n")),
            vec!["delete DaemonSet nvml-mock-h", "delete ConfigMap nvml-mock-h"],
        ),
        (
            "pool removed",
            want(&two),
            want("  l:\n    gpu: {backend: mock, profile: l40s}\n"),
            vec!["delete DaemonSet nvml-mock-h", "delete ConfigMap nvml-mock-h"],
        ),
        (
            "every pool gone",
            want(&two),
            Desired::default(),
            vec![
                "delete DaemonSet nvml-mock-h",
                "delete DaemonSet nvml-mock-l",
                "delete ConfigMap nvml-mock-h",
                "delete ConfigMap nvml-mock-l",
            ],
        ),
        // Same config, nodes selected by another key: only the DaemonSet changes.
        ("relabelled", want(H100), want_with(H100, "other.example.com/pool", &s), vec!["update DaemonSet nvml-mock-h"]),
        (
            "new image",
            want(H100),
            want_with(H100, KEY, &Settings { image: "fgo:2".into(), ..settings() }),
            vec!["update DaemonSet nvml-mock-h"],
        ),
        (
            "pull policy (template hash only)",
            want(H100),
            want_with(H100, KEY, &Settings { image_pull_policy: "Always".into(), ..settings() }),
            vec!["update DaemonSet nvml-mock-h"],
        ),
        ("pool added", want(H100), want(&two), vec!["create ConfigMap nvml-mock-l", "create DaemonSet nvml-mock-l"]),
        // The topology ConfigMap was re-created: both objects follow their new owner.
        (
            "new owner",
            want(H100),
            want_with(H100, KEY, &Settings { owner: Some(Owner { name: "topology".into(), uid: "uid-2".into() }), ..settings() }),
            vec!["update ConfigMap nvml-mock-h", "update DaemonSet nvml-mock-h"],
        ),
    ];
    for (name, before, now, expect) in cases {
        let acts = actions(&now, &existing(&before));
        assert_eq!(described(&acts), expect, "{name}");
        for a in &acts {
            // Updates replace what is there: they carry its version.
            let version = match a {
                Action::UpdateConfigMap(c) => Some(c.metadata.resource_version.clone()),
                Action::UpdateDaemonSet(d) => Some(d.metadata.resource_version.clone()),
                _ => None,
            };
            assert!(version.is_none_or(|v| v.as_deref() == Some("7")), "{name}: {}", a.describe());
        }
    }
}

#[test]
fn a_changed_profile_changes_the_config_hash() {
    let hash = |d: &Desired| config_hash(&d.daemon_sets["nvml-mock-h"]).cloned().unwrap();
    let a = hash(&want(H100));
    assert_eq!(a, hash(&want(H100)), "stable");
    assert_ne!(a, hash(&want("  h:\n    gpu: {backend: mock, profile: h100}\n")), "GPU count");
    assert_ne!(a, hash(&want("  h:\n    gpu: {backend: mock, profile: a100-80gb, overrides: {device_count: 4}}\n")), "profile");
    // The label key is not in the config: the pods need not restart for it.
    assert_eq!(a, hash(&want_with(H100, "other.example.com/pool", &settings())));
}

/// A change made by hand to what exists, and the write that undoes it.
type Drift = (&'static str, fn(&mut Actual), &'static str);

#[test]
fn drift_by_hand_is_undone() {
    let d = want(H100);
    let mutations: Vec<Drift> = vec![
        (
            "container image",
            |a: &mut Actual| a.daemon_sets[0].spec.template.spec.as_mut().unwrap().containers[0].image = Some("x".into()),
            "update DaemonSet nvml-mock-h",
        ),
        (
            "container args",
            |a: &mut Actual| a.daemon_sets[0].spec.template.spec.as_mut().unwrap().containers[0].args = Some(vec![]),
            "update DaemonSet nvml-mock-h",
        ),
        (
            "lifecycle removed",
            |a: &mut Actual| a.daemon_sets[0].spec.template.spec.as_mut().unwrap().containers[0].lifecycle = None,
            "update DaemonSet nvml-mock-h",
        ),
        (
            "config hash",
            |a: &mut Actual| {
                let m = a.daemon_sets[0].spec.template.metadata.as_mut().unwrap();
                m.annotations.as_mut().unwrap().insert(CONFIG_HASH_ANNOTATION.into(), "0".into());
            },
            "update DaemonSet nvml-mock-h",
        ),
        (
            "config edited",
            |a: &mut Actual| {
                a.config_maps[0].data.as_mut().unwrap().insert(crate::node_files::CONFIG_KEY.into(), "{}".into());
            },
            "update ConfigMap nvml-mock-h",
        ),
    ];
    for (name, mutate, expect) in mutations {
        let mut a = existing(&d);
        mutate(&mut a);
        assert_eq!(described(&actions(&d, &a)), [expect], "{name}");
    }
}

#[test]
fn selector_names_every_managed_object() {
    assert_eq!(managed_selector(), "app.kubernetes.io/managed-by=fake-gpu-operator,fake-gpu-operator/component=nvml-mock");
    let d = want(H100);
    let labels = d.daemon_sets["nvml-mock-h"].metadata.labels.clone().unwrap();
    for pair in managed_selector().split(',') {
        let (k, v) = pair.split_once('=').unwrap();
        assert_eq!(labels.get(k).map(String::as_str), Some(v));
    }
}
