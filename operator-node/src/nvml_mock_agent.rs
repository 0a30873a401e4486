//! `fake-gpu-operator nvml-mock-agent`: the node agent of a `gpu.backend: mock` pool (the
//! DaemonSet `nvml-mock-<pool>` of [`fakegpu_operator_core::nvml_mock`]). It lays the driver
//! root on the host from the pool's node config with this node's name, points
//! `/run/nvidia/driver` at it and marks the toolkit ready (what NVIDIA's gpu-operator waits
//! for), writes the CDI spec, then keeps the root (laid again when it vanishes or its live
//! state's MIG layouts change) until SIGTERM. `--cleanup` (the pod's preStop) tells the agent to
//! stop keeping it and takes away what it laid.
//!
//! It sees the host under `--host-root` (hostPath mounts); links and the CDI spec name host
//! paths, since the host's runtime and NVIDIA's components read them there. What it finds at
//! `/run/nvidia/driver` or the marker that it did not write (a real driver's) is left alone.

use std::path::{Path, PathBuf};

use fakegpu_driver_root::{Install, Majors, Sources};
use fakegpu_model::driver_root::DEFAULT_ROOT;
use fakegpu_operator_core::nvml_mock::{HOST_CDI, HOST_RUN_NVIDIA, IMAGE_LIB_DIR};
use thiserror::Error;

/// What the agent writes in the marker, so that cleanup removes only its own.
const MARKER_TEXT: &str = "fake-gpu-operator nvml-mock-agent\n";
/// The CDI spec's file name under the host's CDI directory.
pub const CDI_FILE: &str = "fakegpu-nvml-mock.json";

/// Flags of `fake-gpu-operator nvml-mock-agent`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The pool's node config (the ConfigMap's, without a node name).
    #[arg(long)]
    pub config: PathBuf,
    /// This node's name: the GPUs' identities derive from it.
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// Where the host's file system is mounted in this container.
    #[arg(long, default_value = "/host")]
    pub host_root: PathBuf,
    /// The driver root as the host sees it (upstream's path).
    #[arg(long, default_value = DEFAULT_ROOT)]
    pub driver_root: String,
    /// The built libnvidia-ml.so.1 and libcuda.so.1 (the operator image's).
    #[arg(long, default_value = IMAGE_LIB_DIR)]
    pub lib_dir: PathBuf,
    /// Our nvidia-smi [default: in --lib-dir].
    #[arg(long)]
    pub nvidia_smi: Option<PathBuf>,
    /// Write no CDI spec.
    #[arg(long)]
    pub no_cdi: bool,
    /// Lay no device nodes (without privileges).
    #[arg(long)]
    pub no_device_nodes: bool,
    /// Remove what an earlier run laid, and exit (the pod's preStop).
    #[arg(long)]
    pub cleanup: bool,
}

#[derive(Debug, Error)]
pub enum Error {
    #[error(transparent)]
    DriverRoot(#[from] fakegpu_driver_root::Error),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("{0}")]
    Refused(String),
}

/// The host paths the agent writes, as seen in its container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// The driver root in the container.
    pub root: PathBuf,
    /// `/run/nvidia/driver`.
    pub driver_link: PathBuf,
    /// `/run/nvidia/validations/toolkit-ready`.
    pub marker: PathBuf,
    pub cdi_spec: PathBuf,
}

impl Paths {
    pub fn new(host_root: &Path, driver_root: &str) -> Paths {
        let host = |p: &str| host_root.join(p.trim_start_matches('/'));
        Paths {
            root: host(driver_root),
            driver_link: host(HOST_RUN_NVIDIA).join("driver"),
            marker: host(HOST_RUN_NVIDIA).join("validations").join("toolkit-ready"),
            cdi_spec: host(HOST_CDI).join(CDI_FILE),
        }
    }
}

/// What [`install`] lays the root from.
fn install_options(args: &Args, paths: &Paths) -> Result<Install, Error> {
    Ok(Install {
        root: paths.root.clone(),
        config: args.config.clone(),
        node: args.node_name.clone(),
        sources: Sources::from_dir(&args.lib_dir, args.nvidia_smi.as_deref())?,
        device_nodes: !args.no_device_nodes,
        cdi_spec: (!args.no_cdi).then(|| paths.cdi_spec.clone()),
        cdi_root: Some(args.driver_root.clone()),
        majors: Majors::default(),
    })
}

/// The MIG layouts of the root's live state now.
fn live_mig(args: &Args) -> Result<std::collections::BTreeMap<u32, fakegpu_model::mig::MigLayout>, Error> {
    let paths = Paths::new(&args.host_root, &args.driver_root);
    Ok(fakegpu_driver_root::live_mig(&install_options(args, &paths)?)?)
}

/// Lays the root, the link, the marker and the CDI spec.
pub fn install(args: &Args) -> Result<fakegpu_driver_root::Laid, Error> {
    let paths = Paths::new(&args.host_root, &args.driver_root);
    // Checked first: a real driver's link means this node is not one to simulate on.
    if link_target(&paths.driver_link)?.is_some_and(|t| t != Path::new(&args.driver_root)) || is_foreign(&paths.driver_link) {
        return Err(Error::Refused(format!(
            "{}: exists and is not a link to {}; a driver is installed here, refusing to replace it",
            paths.driver_link.display(),
            args.driver_root
        )));
    }
    let laid = fakegpu_driver_root::install(&install_options(args, &paths)?)?;
    let io = |what: &Path| {
        let what = what.display().to_string();
        move |e| Error::Io(what, e)
    };
    let parent = paths.driver_link.parent().expect("a parent");
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    let tmp = parent.join(".driver.fakegpu-tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&args.driver_root, &tmp).map_err(io(&tmp))?;
    std::fs::rename(&tmp, &paths.driver_link).map_err(io(&paths.driver_link))?;
    let validations = paths.marker.parent().expect("a parent");
    std::fs::create_dir_all(validations).map_err(io(validations))?;
    if !paths.marker.exists() {
        std::fs::write(&paths.marker, MARKER_TEXT).map_err(io(&paths.marker))?;
    }
    Ok(laid)
}

/// Removes what [`install`] laid; what others put there stays.
pub fn cleanup(args: &Args) -> Result<(), Error> {
    let paths = Paths::new(&args.host_root, &args.driver_root);
    let io = |what: &Path| {
        let what = what.display().to_string();
        move |e| Error::Io(what, e)
    };
    if link_target(&paths.driver_link)?.is_some_and(|t| t == Path::new(&args.driver_root)) {
        std::fs::remove_file(&paths.driver_link).map_err(io(&paths.driver_link))?;
    }
    if std::fs::read_to_string(&paths.marker).is_ok_and(|t| t == MARKER_TEXT) {
        std::fs::remove_file(&paths.marker).map_err(io(&paths.marker))?;
        // Only when empty: NVIDIA's validator keeps its own markers there.
        let _ = std::fs::remove_dir(paths.marker.parent().expect("a parent"));
    }
    if paths.root.join(fakegpu_driver_root::MANIFEST).exists() {
        for left in fakegpu_driver_root::remove(&paths.root)? {
            tracing::warn!(dir = %left.display(), "left in place: it holds what the agent did not lay");
        }
    }
    Ok(())
}

/// The target of `path` when it is a symlink.
fn link_target(path: &Path) -> Result<Option<PathBuf>, Error> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => std::fs::read_link(path).map(Some).map_err(|e| Error::Io(path.display().to_string(), e)),
        _ => Ok(None),
    }
}

/// Something that is not a symlink (a real driver's directory or mount).
fn is_foreign(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| !m.file_type().is_symlink())
}

/// The subcommand: cleanup and exit, or install and keep the root until SIGTERM (the preStop
/// cleans up).
pub fn run(args: Args) -> anyhow::Result<()> {
    if args.cleanup {
        stop_keeping();
        cleanup(&args)?;
        tracing::info!(root = %args.driver_root, "nvml-mock driver root removed");
        return Ok(());
    }
    let laid = install(&args)?;
    tracing::info!(root = %args.driver_root, node = %laid.node, gpus = laid.gpus, profile = %laid.profile, entries = laid.entries, "nvml-mock driver root laid");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let mut stop = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())?;
        tokio::select! {
            _ = fakegpu_operator_core::common::shutdown_signal() => return Ok(()),
            _ = keep(&args) => {}
            _ = stop.recv() => tracing::info!("preStop: no longer keeping the root"),
        }
        fakegpu_operator_core::common::shutdown_signal().await;
        Ok::<(), std::io::Error>(())
    })?;
    Ok(())
}

/// Whether the root and the link are as [`install`] left them.
fn intact(args: &Args) -> bool {
    let paths = Paths::new(&args.host_root, &args.driver_root);
    paths.root.join(fakegpu_driver_root::MANIFEST).is_file()
        && link_target(&paths.driver_link).ok().flatten().is_some_and(|t| t == Path::new(&args.driver_root))
}

/// Keeps the root laid, checking every 2 s: lays it again when it vanished (a replaced agent
/// pod's preStop can run after this pod laid it: the kubelet stops a force-deleted pod while the
/// DaemonSet starts the next) and when its live state's MIG layouts change (`nvidia-smi mig`,
/// `fakegpu state mig` on the node), so the capability files, `mig-minors` users and the CDI
/// spec follow the layout as the driver's do. Never returns.
async fn keep(args: &Args) {
    let mut laid = live_mig(args).ok();
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        let now = match live_mig(args) {
            Ok(now) => Some(now),
            Err(e) => {
                tracing::debug!(error = %e, "live state unreadable");
                None
            }
        };
        let whole = intact(args);
        if whole && (now.is_none() || laid == now) {
            continue;
        }
        match install(args) {
            Ok(l) => {
                let why = if whole { "MIG layout changed" } else { "the root or its link vanished" };
                tracing::info!(entries = l.entries, "{why}: driver root laid again");
                laid = live_mig(args).ok();
            }
            Err(e) => tracing::warn!(error = %e, "laying the driver root again failed; retrying"),
        }
    }
}

/// The preStop runs in the agent's container while the agent (PID 1 there) still keeps the
/// root: tell it to stop first (SIGUSR1), so it does not lay again what the cleanup removes.
/// Only when PID 1 runs this same executable: anywhere else (a test, a host) nothing is sent.
fn stop_keeping() {
    let same = |a: &str, b: &str| {
        use std::os::unix::fs::MetadataExt;
        matches!((std::fs::metadata(a), std::fs::metadata(b)), (Ok(x), Ok(y)) if x.dev() == y.dev() && x.ino() == y.ino())
    };
    if std::process::id() != 1 && same("/proc/1/exe", "/proc/self/exe") {
        // SAFETY: kill with a valid signal number has no memory-safety preconditions.
        unsafe { libc::kill(1, libc::SIGUSR1) };
        // The keeper checks every 2 s and an install takes milliseconds: one in flight ends first.
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host as the kubelet leaves it for the pod (the hostPath directories exist) and the
    /// image's built files.
    fn setup() -> (tempfile::TempDir, Args) {
        let tmp = tempfile::tempdir().unwrap();
        let host = tmp.path().join("host");
        for d in ["var/lib/nvml-mock", "var/run/cdi", "run/nvidia"] {
            std::fs::create_dir_all(host.join(d)).unwrap();
        }
        let lib = tmp.path().join("image-lib");
        std::fs::create_dir_all(&lib).unwrap();
        for f in ["libnvidia-ml.so.1", "libcuda.so.1", "nvidia-smi"] {
            std::fs::write(lib.join(f), f).unwrap();
        }
        let config = tmp.path().join("config.json");
        std::fs::write(&config, r#"{"profile": "h100", "gpus": 2}"#).unwrap();
        let args = Args {
            config,
            node_name: Some("node-a".into()),
            host_root: host,
            driver_root: DEFAULT_ROOT.into(),
            lib_dir: lib,
            nvidia_smi: None,
            no_cdi: false,
            no_device_nodes: true,
            cleanup: false,
        };
        (tmp, args)
    }

    fn listing(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                out.push(e.path().strip_prefix(dir).unwrap().display().to_string());
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn install_lays_the_host_side_and_cleanup_leaves_the_host_as_it_was() {
        let (_tmp, args) = setup();
        let before = listing(&args.host_root);
        let laid = install(&args).unwrap();
        assert_eq!((laid.node.as_str(), laid.gpus), ("node-a", 2));
        let paths = Paths::new(&args.host_root, &args.driver_root);
        assert_eq!(paths.root, args.host_root.join("var/lib/nvml-mock/driver"));
        // The link names the host's path, not the container's.
        assert_eq!(std::fs::read_link(&paths.driver_link).unwrap(), Path::new("/var/lib/nvml-mock/driver"));
        assert!(paths.marker.is_file());
        // The libraries find the node config in the root, with this node's name pinned.
        let cfg = paths.root.join(fakegpu_model::driver_root::lib_dir()).join(fakegpu_model::config::SELF_CONFIG_DIR).join("config.json");
        let file = fakegpu_model::config::read_config_file(&cfg).unwrap();
        assert_eq!(file.node.as_deref(), Some("node-a"));
        // The CDI spec's host paths are the host's.
        let spec = std::fs::read_to_string(&paths.cdi_spec).unwrap();
        assert!(spec.contains("\"/var/lib/nvml-mock/driver/"), "{spec}");
        assert!(!spec.contains(&args.host_root.display().to_string()), "{spec}");

        // Twice is fine (a restarted pod).
        install(&args).unwrap();
        cleanup(&args).unwrap();
        assert_eq!(listing(&args.host_root), before);
        // Cleanup of a clean host is a no-op.
        cleanup(&args).unwrap();
    }

    #[test]
    fn a_real_drivers_link_or_marker_is_left_alone() {
        let (_tmp, args) = setup();
        let paths = Paths::new(&args.host_root, &args.driver_root);
        // A driver container's root mounted at /run/nvidia/driver.
        std::fs::create_dir_all(&paths.driver_link).unwrap();
        let err = install(&args).unwrap_err().to_string();
        assert!(err.contains("refusing"), "{err}");
        assert!(!paths.root.exists(), "nothing laid");
        std::fs::remove_dir(&paths.driver_link).unwrap();

        // A toolkit that marked itself ready: the marker stays after cleanup.
        std::fs::create_dir_all(paths.marker.parent().unwrap()).unwrap();
        std::fs::write(&paths.marker, "").unwrap();
        install(&args).unwrap();
        cleanup(&args).unwrap();
        assert!(paths.marker.exists());
        assert!(!paths.driver_link.exists() && !paths.root.exists());
    }

    #[test]
    fn a_mig_layout_made_after_install_is_seen_and_laid_again() {
        let (_tmp, args) = setup();
        install(&args).unwrap();
        let paths = Paths::new(&args.host_root, &args.driver_root);
        let laid = live_mig(&args).unwrap();
        assert!(laid.values().all(|m| !m.current));
        // nvidia-smi mig on the node: the live state in the root changes.
        let cfg_dir = paths.root.join(fakegpu_model::driver_root::lib_dir()).join(fakegpu_model::config::SELF_CONFIG_DIR);
        let spec = fakegpu_model::NodeSpec::builtin("h100", Some(2), "node-a").unwrap();
        let layout = fakegpu_model::mig::named_layout(&spec.profile, "all-3g.40gb").unwrap();
        fakegpu_model::state_file::update(&cfg_dir.join(fakegpu_model::state_file::DEFAULT_FILE_NAME), &spec, |s| {
            s.gpu_mut(&spec, 1, fakegpu_model::state_file::now()).map(|g| g.mig = layout.clone())
        })
        .unwrap();
        let now = live_mig(&args).unwrap();
        assert_ne!(now, laid, "the change is seen");
        assert_eq!(now[&1], layout);
        // Laid again: GPU 1's GPU instances get their capability files (GIs 1 and 2 of two 3g).
        install(&args).unwrap();
        let caps = paths.root.join("proc/driver/nvidia/capabilities/gpu1/mig");
        for gi in [1, 2] {
            assert!(caps.join(format!("gi{gi}/access")).is_file(), "gi{gi}: {:?}", listing(&paths.root));
        }
        cleanup(&args).unwrap();
        assert!(!paths.root.exists());
    }

    #[test]
    fn the_keeper_lays_a_vanished_root_again() {
        let (_tmp, args) = setup();
        install(&args).unwrap();
        assert!(intact(&args));
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let keeper = keep(&args);
            tokio::pin!(keeper);
            // A replaced pod's preStop removes the root after this pod laid it.
            cleanup(&args).unwrap();
            assert!(!intact(&args));
            let back = async {
                while !intact(&args) {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            };
            tokio::select! {
                _ = &mut keeper => unreachable!("the keeper never returns"),
                r = tokio::time::timeout(std::time::Duration::from_secs(10), back) => r.expect("laid again within 10 s"),
            }
        });
        // Not a test process's business to signal PID 1 (the host's init here): stop_keeping
        // sends nothing when PID 1 runs another executable.
        stop_keeping();
        cleanup(&args).unwrap();
        assert!(!intact(&args));
    }
}
