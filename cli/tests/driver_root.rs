//! `fakegpu driver-root install|remove` end to end: a root laid in a temp dir serves the config's
//! GPUs to our nvidia-smi run from the root's usr/bin with LD_LIBRARY_PATH into the root and no
//! FAKEGPU_* variable (the library finds the config beside itself); install again is a no-op
//! that still works; remove leaves the directory exactly as it was, and install never replaces a
//! file it did not lay. With NVIDIA's own nvidia-smi 535 in the cache, that one sees the GPUs too.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

use common::built;
use fakegpu_model::config::{parse_config, resolve_config};
use fakegpu_model::driver_root::lib_dir;
use fakegpu_model::SimulatedNode;

const CONFIG: &str = r#"{"node":"dr-node","profile":"a100-40gb","gpus":3}"#;

fn scratch(tag: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("driver-root-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs a command with no FAKEGPU_* variable.
fn clean(mut cmd: Command) -> (i32, String, String) {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("FAKEGPU_") {
            cmd.env_remove(k);
        }
    }
    cmd.env_remove("NVIDIA_VISIBLE_DEVICES").env_remove("LD_PRELOAD");
    let out = cmd.output().expect("runs");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn fakegpu(args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fakegpu"));
    cmd.args(args);
    clean(cmd)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Every path under `dir`, relative, with its kind.
fn listing(dir: &Path) -> BTreeSet<String> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let t = e.file_type().unwrap();
            let rel = e.path().strip_prefix(base).unwrap().to_string_lossy().into_owned();
            out.insert(format!(
                "{rel} {}",
                if t.is_dir() {
                    "dir"
                } else if t.is_symlink() {
                    "link"
                } else {
                    "file"
                }
            ));
            if t.is_dir() {
                walk(base, &e.path(), out);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

/// `nvidia-smi -L` lines, as (name, UUID).
fn smi_list(smi: &Path, root: &Path) -> Vec<(String, String)> {
    let mut cmd = Command::new(smi);
    cmd.arg("-L").env("LD_LIBRARY_PATH", root.join(lib_dir()));
    let (code, out, err) = clean(cmd);
    assert_eq!(code, 0, "{} -L: {out}{err}", smi.display());
    out.lines()
        .filter(|l| l.starts_with("GPU "))
        .map(|l| {
            let (_, rest) = l.split_once(": ").unwrap();
            let (name, uuid) = rest.split_once(" (UUID: ").unwrap();
            (name.to_string(), uuid.trim_end_matches(')').to_string())
        })
        .collect()
}

fn expected() -> Vec<(String, String)> {
    let node = SimulatedNode::new(resolve_config(&parse_config(CONFIG, "test").unwrap(), "test", "unused-host").unwrap());
    node.gpus.iter().map(|g| (node.spec.profile.product_name.clone(), g.uuid.clone())).collect()
}

fn install_args<'a>(root: &'a str, config: &'a str, lib: &'a str, cdi: &'a str) -> Vec<&'a str> {
    let mut args = vec!["driver-root", "install", "--root", root, "--config", config, "--lib-dir", lib, "--cdi-spec", cdi];
    if !is_root() {
        args.push("--no-device-nodes");
    }
    args
}

#[test]
fn install_serves_the_config_to_nvidia_smi_and_remove_leaves_nothing() {
    let dir = scratch("main");
    let root = dir.join("driver");
    // Something of the host's already there, which neither install nor remove may touch.
    std::fs::create_dir_all(root.join("usr/share")).unwrap();
    std::fs::write(root.join("usr/share/keep.txt"), "host file").unwrap();
    let before = listing(&dir);
    let config = dir.join("node.json");
    std::fs::write(&config, CONFIG).unwrap();
    let cdi = dir.join("cdi.json");
    let (r, c, l, s) = (root.to_str().unwrap(), config.to_str().unwrap(), built().to_str().unwrap(), cdi.to_str().unwrap());

    for round in 0..2 {
        let (code, out, err) = fakegpu(&install_args(r, c, l, s));
        assert_eq!(code, 0, "install round {round}: {out}{err}");
        assert_eq!(smi_list(&root.join("usr/bin/nvidia-smi"), &root), expected(), "round {round}");
        let spec: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cdi).unwrap()).unwrap();
        assert_eq!(spec["kind"], "nvidia.com/gpu");
        if is_root() {
            use std::os::unix::fs::FileTypeExt;
            let meta = std::fs::symlink_metadata(root.join("dev/nvidia2")).unwrap();
            assert!(meta.file_type().is_char_device());
            use std::os::unix::fs::MetadataExt;
            assert_eq!((libc::major(meta.rdev()), libc::minor(meta.rdev())), (195, 2));
        } else {
            assert!(!root.join("dev").exists());
        }
    }

    // NVIDIA's own nvidia-smi, when the conformance suites fetched it: the same GPUs.
    let nvidia = dirs_home().join(".cache/fake-gpu-operator/nvidia-535.261.03-1/root/usr/lib/nvidia/current/nvidia-smi");
    if nvidia.is_file() {
        assert_eq!(smi_list(&nvidia, &root), expected(), "NVIDIA's nvidia-smi 535");
    } else {
        eprintln!("NVIDIA's nvidia-smi 535 is not in the cache ({}): skipped that part", nvidia.display());
    }

    let (code, out, err) = fakegpu(&["driver-root", "remove", "--root", r]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(listing(&dir), before.iter().cloned().chain(["node.json file".to_string()]).collect());
    assert_eq!(std::fs::read_to_string(root.join("usr/share/keep.txt")).unwrap(), "host file");
    // A second remove finds nothing of ours and says so.
    let (code, _, err) = fakegpu(&["driver-root", "remove", "--root", r]);
    assert_ne!(code, 0);
    assert!(err.contains(".fakegpu-driver-root.json"), "{err}");
}

#[test]
fn install_never_replaces_a_file_it_did_not_lay() {
    let dir = scratch("foreign");
    let root = dir.join("driver");
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    std::fs::write(root.join("usr/bin/nvidia-smi"), "the host's own").unwrap();
    let config = dir.join("node.json");
    std::fs::write(&config, CONFIG).unwrap();
    let cdi = dir.join("cdi.json");
    let (r, c, l, s) = (root.to_str().unwrap(), config.to_str().unwrap(), built().to_str().unwrap(), cdi.to_str().unwrap());
    let (code, _, err) = fakegpu(&install_args(r, c, l, s));
    assert_ne!(code, 0);
    assert!(err.contains("usr/bin/nvidia-smi") && err.contains("refusing"), "{err}");
    assert_eq!(std::fs::read_to_string(root.join("usr/bin/nvidia-smi")).unwrap(), "the host's own");
}

#[test]
fn a_bad_config_is_named_and_nothing_is_laid() {
    let dir = scratch("bad");
    let root = dir.join("driver");
    let config = dir.join("node.json");
    std::fs::write(&config, r#"{"gpus":0}"#).unwrap();
    let (r, c, l, s) = (root.to_str().unwrap(), config.to_str().unwrap(), built().to_str().unwrap(), "/nonexistent/cdi.json");
    let (code, _, err) = fakegpu(&install_args(r, c, l, s));
    assert_ne!(code, 0);
    assert!(err.contains("node.json") && err.contains("gpus"), "{err}");
    assert!(!root.exists());
}

fn dirs_home() -> PathBuf {
    std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root"))
}

#[test]
fn a_mig_layout_in_the_live_state_is_laid_and_undone() {
    use fakegpu_model::state::{GpuState, NodeState};
    let dir = scratch("mig");
    let root = dir.join("driver");
    let config = dir.join("node.json");
    std::fs::write(&config, CONFIG).unwrap();
    let cdi = dir.join("cdi.json");
    let (r, c, l, s) = (root.to_str().unwrap(), config.to_str().unwrap(), built().to_str().unwrap(), cdi.to_str().unwrap());
    // Without device nodes whoever runs it (the main test lays them when run as root).
    let install = || {
        let mut args = install_args(r, c, l, s);
        if !args.contains(&"--no-device-nodes") {
            args.push("--no-device-nodes");
        }
        fakegpu(&args)
    };
    let (code, out, err) = install();
    assert_eq!(code, 0, "{out}{err}");
    assert!(!root.join("proc/driver/nvidia/capabilities/gpu1").exists());
    assert!(!root.join("dev").exists());

    // The operator writes the live state beside the config in the root; install again lays
    // the capabilities of the layout it holds, and the library shows its MIG devices.
    let spec = resolve_config(&parse_config(CONFIG, "test").unwrap(), "test", "unused-host").unwrap();
    let node = SimulatedNode::new(spec.clone());
    let state_path = root.join(lib_dir()).join("fakegpu/fakegpu-state.json");
    let layout = fakegpu_model::mig::named_layout(&spec.profile, "all-1g.5gb").unwrap();
    let mut state = NodeState::default();
    state.gpus.insert("1".into(), GpuState { mig: layout.clone(), ..Default::default() });
    fakegpu_model::state_file::reset(&state_path, &spec, &state).unwrap();
    let (code, out, err) = install();
    assert_eq!(code, 0, "{out}{err}");
    assert!(!layout.gpu_instances.is_empty());
    for gi in &layout.gpu_instances {
        let access = root.join(format!("proc/driver/nvidia/capabilities/gpu1/mig/gi{}/access", gi.id));
        let text = std::fs::read_to_string(&access).unwrap();
        let minor = fakegpu_model::driver_root::gi_access_minor(1, gi.id).unwrap();
        assert!(text.starts_with(&format!("DeviceFileMinor: {minor}\n")), "{text}");
    }
    let mig = fakegpu_model::mig::gpu_mig_devices(&spec.profile, &spec.node_name, 1, &node.gpus[1].uuid, &layout);
    let mut smi = Command::new(root.join("usr/bin/nvidia-smi"));
    smi.arg("-L").env("LD_LIBRARY_PATH", root.join(lib_dir()));
    let (code, out, err) = clean(smi);
    assert_eq!(code, 0, "{out}{err}");
    let shown: Vec<&str> = out.lines().filter_map(|l| l.split("(UUID: ").nth(1)).filter(|u| u.starts_with("MIG-")).collect();
    let expected: Vec<String> = mig.iter().map(|m| format!("{})", m.uuid)).collect();
    assert_eq!(shown, expected, "{out}");
    let cdi_text = std::fs::read_to_string(&cdi).unwrap();
    assert!(cdi_text.contains(&mig[0].uuid) && cdi_text.contains("\"1:0\""));

    // MIG off again: the capabilities and their directories go.
    fakegpu_model::state_file::reset(&state_path, &spec, &NodeState::default()).unwrap();
    let (code, out, err) = install();
    assert_eq!(code, 0, "{out}{err}");
    assert!(!root.join("proc/driver/nvidia/capabilities/gpu1").exists());
    assert!(!std::fs::read_to_string(&cdi).unwrap().contains(&mig[0].uuid));

    // The root install made goes entirely, the live state with it.
    let (code, out, err) = fakegpu(&["driver-root", "remove", "--root", r]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!root.exists() && !cdi.exists());
}

#[test]
fn remove_refuses_to_follow_a_directory_replaced_by_a_symlink() {
    let dir = scratch("symlink");
    let root = dir.join("driver");
    let config = dir.join("node.json");
    std::fs::write(&config, CONFIG).unwrap();
    let cdi = dir.join("cdi.json");
    let (r, c, l, s) = (root.to_str().unwrap(), config.to_str().unwrap(), built().to_str().unwrap(), cdi.to_str().unwrap());
    let (code, out, err) = fakegpu(&install_args(r, c, l, s));
    assert_eq!(code, 0, "{out}{err}");
    // Someone swaps proc/ for a link to a directory of theirs with the same names inside.
    let elsewhere = dir.join("elsewhere");
    std::fs::rename(root.join("proc"), &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, root.join("proc")).unwrap();
    let (code, _, err) = fakegpu(&["driver-root", "remove", "--root", r]);
    assert_ne!(code, 0);
    assert!(err.contains("symlink"), "{err}");
    assert!(elsewhere.join("driver/nvidia/version").is_file());
    // Nothing was removed before the refusal.
    assert!(root.join("usr/bin/nvidia-smi").is_file());
}
