//! The `fakegpu` binary end to end: listing, identities, exec's environment and exit codes.

mod common;

use std::path::PathBuf;
use std::process::Command;

/// The fake NVML, built once per test run.
fn library() -> PathBuf {
    common::built().join("libnvidia_ml.so")
}

fn fakegpu() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fakegpu"));
    cmd.env("FAKEGPU_LIBRARY", library());
    cmd
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = fakegpu().args(args).env_remove("FAKEGPU_CONFIG").output().expect("fakegpu runs");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn profiles_lists_every_builtin() {
    let (code, out, _) = run(&["profiles", "--json"]);
    assert_eq!(code, 0);
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    let names: Vec<&str> = list.as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    let builtin: Vec<&str> = fakegpu_model::builtin_profiles().unwrap().iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, builtin);
    assert!(names.contains(&"h100") && names.contains(&"k80"));
}

#[test]
fn show_prints_the_model_identities() {
    let (code, out, _) = run(&["show", "--profile", "a100-80gb", "--gpus", "4", "--node", "worker-7", "--json"]);
    assert_eq!(code, 0);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["node"], "worker-7");
    let gpus = doc["gpus"].as_array().unwrap();
    assert_eq!(gpus.len(), 4);
    let spec = fakegpu_model::NodeSpec::builtin("a100-80gb", Some(4), "worker-7").unwrap();
    let node = fakegpu_model::SimulatedNode::new(spec);
    for (shown, expected) in gpus.iter().zip(&node.gpus) {
        assert_eq!(shown["uuid"], expected.uuid.as_str());
        assert_eq!(shown["serial"], expected.serial.as_str());
        assert_eq!(shown["pci_bus_id"], expected.pci.bus_id().as_str());
    }
}

#[test]
fn bad_input_is_named_and_fails() {
    for (args, needle) in [
        (vec!["show", "--gpus", "0"], "GPU count 0"),
        (vec!["show", "--gpus", "257"], "GPU count 257"),
        (vec!["show", "--profile", "h900"], "unknown profile `h900`"),
        (vec!["show", "--profile", "/nonexistent/p.json"], "/nonexistent/p.json"),
        (vec!["exec", "--gpus", "0", "--", "true"], "GPU count 0"),
    ] {
        let (code, _, err) = run(&args);
        assert_eq!(code, 2, "{args:?}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn exec_sets_the_environment_and_passes_the_exit_code() {
    let (code, out, err) = run(&[
        "exec",
        "--profile",
        "t4",
        "--gpus",
        "3",
        "--node",
        "n9",
        "--",
        "sh",
        "-c",
        "echo $FAKEGPU_PROFILE $FAKEGPU_GPUS $FAKEGPU_NODE; exit 7",
    ]);
    assert_eq!(code, 7, "{err}");
    assert_eq!(out.trim(), "t4 3 n9");

    let (code, out, err) = run(&["exec", "--preload", "--", "sh", "-c", "echo $LD_PRELOAD; ls -L \"${LD_LIBRARY_PATH%%:*}\""]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("libnvidia-ml.so.1"), "{out}");
    assert!(out.lines().any(|l| l == "libnvidia-ml.so"), "{out}");
    // The fake CUDA driver is in front too, under every name CUDA clients load.
    assert!(out.lines().next().is_some_and(|l| l.contains("libnvidia-ml.so.1") && l.contains("libcuda.so.1")), "{out}");
    for name in ["libcuda.so.1", "libcuda.so", "libcuda.so.535.261.03"] {
        assert!(out.lines().any(|l| l == name), "{name} missing: {out}");
    }

    let (code, _, err) = run(&["exec", "--", "/nonexistent/program"]);
    assert_eq!(code, 2);
    assert!(err.contains("command not found"), "{err}");
}

#[test]
fn state_mig_applies_a_named_configuration_and_refuses_a_busy_gpu() {
    let dir = tempfile_dir("state-mig");
    let state = dir.join("state.json");
    let node = ["--profile", "h100", "--gpus", "2", "--node", "n", "--state", state.to_str().unwrap()];
    let with = |extra: &[&str]| run(&[&["state", "mig"][..], &node[..], extra].concat());
    let (code, _, err) = with(&["--mig-config", "all-1g.10gb"]);
    assert_eq!(code, 0, "{err}");
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    let profile = fakegpu_model::find_builtin("h100").unwrap();
    let want = serde_json::to_value(fakegpu_model::mig::named_layout(profile, "all-1g.10gb").unwrap()).unwrap();
    assert_eq!(doc["gpus"]["0"]["mig"], want);
    assert_eq!(doc["gpus"]["1"]["mig"], want);
    // A process on GPU 1: a change that would repartition it is refused, nothing changes.
    let (code, _, err) = run(&[
        &["state", "process", "add"][..],
        &node[..],
        &["--gpu", "1", "--pid", "42", "--name", "train", "--mem", "1GiB", "--gi", "7", "--ci", "0"],
    ]
    .concat());
    assert_eq!(code, 0, "{err}");
    let before = std::fs::read_to_string(&state).unwrap();
    let (code, _, err) = with(&["--mig-config", "all-disabled"]);
    assert_eq!(code, 2);
    assert!(err.contains("GPU 1") && err.contains("state unchanged"), "{err}");
    assert_eq!(std::fs::read_to_string(&state).unwrap(), before);
    let (code, _, err) = with(&["--mig-config", "all-9g.1gb"]);
    assert_eq!(code, 2);
    assert!(err.contains("all-9g.1gb") && err.contains("all-balanced"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sysfs_writes_the_pci_tree_of_the_model_and_refuses_a_full_directory() {
    let dir = tempfile_dir("sysfs");
    let out = dir.join("sys");
    let (code, stdout, err) = run(&["sysfs", "--profile", "a100-40gb", "--gpus", "2", "--node", "n", "--out", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let node = fakegpu_model::SimulatedNode::new(fakegpu_model::NodeSpec::builtin("a100-40gb", Some(2), "n").unwrap());
    for f in fakegpu_model::sysfs::pci_devices(&node) {
        assert_eq!(std::fs::read(out.join("bus/pci/devices").join(&f.path)).unwrap(), f.contents, "{}", f.path);
    }
    assert_eq!(stdout.trim(), out.join("bus/pci/devices").to_str().unwrap());
    assert_eq!(std::fs::read_to_string(out.join("class/dmi/id/product_name")).unwrap().trim(), fakegpu_model::sysfs::MACHINE_PRODUCT_NAME);
    let (code, _, err) = run(&["sysfs", "--profile", "a100-40gb", "--out", out.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("not empty"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A fresh directory under the system temp dir for one test.
fn tempfile_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fakegpu-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
