//! `fake-gpu-operator nvml-mock-agent` as its DaemonSet runs it, on a temp dir standing in for
//! the host: from the ConfigMap text the status-updater computes for a mock pool and
//! `NODE_NAME`, it lays the driver root, `/run/nvidia/driver` and the toolkit marker; our
//! nvidia-smi run from the root lists exactly the UUIDs the status-updater gives that node; the
//! agent stays up until SIGTERM; the preStop command line (`--cleanup`) leaves the host as it
//! was. No cluster needed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fake_gpu_operator::config::ClusterConfig;
use fake_gpu_operator::node_files::CONFIG_KEY;
use fake_gpu_operator::nvml_mock_core::{agent_args, desired, Settings, CONFIG_MOUNT};
use fake_gpu_operator::resolve::{resolve_all, Profiles};

// The CLI's tests' builder of the native artifacts (only std: it compiles in any crate's tests).
#[path = "../../cli/tests/common/mod.rs"]
mod common;

fn listing(base: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![base.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            out.insert(e.path().strip_prefix(base).unwrap().display().to_string());
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
        }
    }
    out
}

/// The DaemonSet's command line with the pod's paths moved under `dir`.
fn agent(dir: &Path, lib: &Path, cleanup: bool) -> Command {
    let mut args = agent_args(cleanup);
    let swap = |flag: &str, value: String, args: &mut Vec<String>| {
        let i = args.iter().position(|a| a == flag).unwrap_or_else(|| panic!("{flag} in the DaemonSet's args"));
        args[i + 1] = value;
    };
    swap("--config", dir.join(format!("etc/{CONFIG_KEY}")).display().to_string(), &mut args);
    swap("--host-root", dir.join("host").display().to_string(), &mut args);
    swap("--lib-dir", lib.display().to_string(), &mut args);
    swap("--nvidia-smi", lib.join("nvidia-smi").display().to_string(), &mut args);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fake-gpu-operator"));
    cmd.args(&args).env("NODE_NAME", "gpu-node-3").env("RUST_LOG", "info");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        cmd.arg("--no-device-nodes");
    }
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("FAKEGPU_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

#[test]
fn the_agent_lays_this_nodes_gpus_and_its_prestop_takes_them_away() {
    let lib = common::built().clone();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("nvml-mock-agent-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // The hostPath directories (DirectoryOrCreate) and the ConfigMap mount.
    for d in ["host/var/lib/nvml-mock", "host/var/run/cdi", "host/run/nvidia", "etc"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    let cfg = ClusterConfig::parse("nodePools:\n  h:\n    gpu: {backend: mock, profile: h100, overrides: {device_count: 3}}\n").unwrap();
    let pools = resolve_all(&cfg, &Profiles::new()).unwrap();
    let settings = Settings { namespace: "ns".into(), image: "x".into(), image_pull_policy: "Never".into(), owner: None };
    let want = desired(&cfg, &pools, &settings);
    let text = &want.config_maps["nvml-mock-h"].data.as_ref().unwrap()[CONFIG_KEY];
    std::fs::write(dir.join(format!("etc/{CONFIG_KEY}")), text).unwrap();
    assert!(agent_args(false).contains(&format!("{CONFIG_MOUNT}/{CONFIG_KEY}")));
    let host = dir.join("host");
    let before = listing(&host);

    let log = std::fs::File::create(dir.join("agent.log")).unwrap();
    let mut child = agent(&dir, &lib, false).stdout(Stdio::null()).stderr(log).spawn().expect("agent starts");
    let marker = host.join("run/nvidia/validations/toolkit-ready");
    let start = Instant::now();
    while !marker.exists() {
        let read_log = || std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default();
        assert!(child.try_wait().unwrap().is_none(), "the agent exited: {}", read_log());
        assert!(start.elapsed() < Duration::from_secs(30), "no marker after 30 s: {}", read_log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let root = host.join("var/lib/nvml-mock/driver");
    assert_eq!(std::fs::read_link(host.join("run/nvidia/driver")).unwrap(), Path::new("/var/lib/nvml-mock/driver"));
    assert!(host.join("var/run/cdi").read_dir().unwrap().next().is_some(), "a CDI spec");

    // Our nvidia-smi from the root, with no FAKEGPU_* variable: this node's GPUs.
    let out = Command::new(root.join("usr/bin/nvidia-smi"))
        .arg("-L")
        .env("LD_LIBRARY_PATH", root.join(fakegpu_model::driver_root::lib_dir()))
        .env_remove("FAKEGPU_CONFIG")
        .env_remove("FAKEGPU_NODE")
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&out.stdout).into_owned();
    let uuids = fake_gpu_operator::index::gpu_uuids("gpu-node-3", &pools["h"]);
    assert_eq!(uuids.len(), 3);
    for u in &uuids {
        assert!(listed.contains(u.as_str()), "{u} not in:\n{listed}{}", String::from_utf8_lossy(&out.stderr));
    }
    assert_eq!(listed.lines().filter(|l| l.starts_with("GPU ")).count(), 3, "{listed}");
    assert!(listed.contains("H100"), "{listed}");

    // Up until SIGTERM, which it takes as a clean exit.
    std::thread::sleep(Duration::from_millis(300));
    assert!(child.try_wait().unwrap().is_none(), "the agent waits");
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");

    // preStop.
    let out = agent(&dir, &lib, true).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(listing(&host), before, "the host as it was");
    let _ = std::fs::remove_dir_all(&dir);
}
