//! `fakegpu cluster up --real-node`: one real node on this host — the kubelet and containerd
//! (built from Go modules by tests/real-node/build.sh), runc and the bridge CNI from Debian — that
//! joins the control plane beside the KWOK nodes.
//!
//! Safety rules, in the order `start` applies them, before containerd or the kubelet run:
//! unreachable routes for the pod and Service ranges (no packet of theirs can leave the host),
//! the bridge with the node address and the Service VIP on it, and a local forwarder from the
//! VIP to the API server. The kubelet's sysctls are put back once it has set them. Nothing here
//! touches iptables. [`teardown`] undoes all of it from what `state.json` recorded.

mod config;
pub mod host;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::error::{ClusterError, Result};
use crate::state::State;

pub const NODE_NAME: &str = "fakegpu-real-node";
pub const BRIDGE: &str = "fakegpu0";
pub const POD_SUBNET: &str = "10.244.77.0/24";
/// The bridge's address: the node's InternalIP, the kubelet's serving address, the pods' route
/// to the Service range.
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 77, 1);
/// Must equal the API server's `--service-cluster-ip-range`.
pub const SERVICE_RANGE: &str = "10.0.0.0/24";
/// The `kubernetes` Service's ClusterIP (`KUBERNETES_SERVICE_HOST` in every pod).
pub const SERVICE_VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
/// Ranges made unreachable on the host: the pod range and the Service range (with kwok's fake
/// pod IPs) inside them. Local addresses still win over them (the local table comes first).
pub const GUARD_ROUTES: [&str; 2] = ["10.244.0.0/16", "10.0.0.0/16"];
/// Policy routing for packets that arrive from the bridge: after the local table (pods reach
/// the node and the VIP), this table answers everything with `unreachable`, so even a pod that
/// adds a default route via the bridge cannot get a packet forwarded off the host.
pub const BRIDGE_RULE_PRIORITY: &str = "100";
pub const BRIDGE_TABLE: &str = "4977";
pub const CGROUP_ROOT: &str = "fakegpu";
/// Fixed by the kubelet (device-plugin and pki dirs ignore --root-dir), hence one node per host.
pub const KUBELET_ROOT: &str = "/var/lib/kubelet";
/// Where the kubelet links container logs, whatever podLogsDir says.
pub const CONTAINER_LOGS: &str = "/var/log/containers";
pub const KUBELET_PORT: u16 = 10250;
pub const KUBELET_HEALTHZ_PORT: u16 = 10248;
/// Shim sockets (containerd allows at most 42 bytes here, too short for the run dir).
pub const SHIM_SOCKET_DIR: &str = "/run/fakegpu-node-shims";
/// libcni's result cache; containerd gives no way to move it.
pub const CNI_CACHE: &str = "/var/lib/cni";
/// hostPaths the chart's node pods write: the plugins' files for GPU containers, CDI specs.
pub const CHART_HOST_DIRS: [&str; 2] = ["/var/lib/fake-gpu-operator", "/var/run/cdi"];
pub const PAUSE_IMAGE: &str = "localhost/fakegpu/pause:1";
const RUNC: &str = "/usr/sbin/runc";
const CNI_PLUGINS: [&str; 3] = ["/usr/lib/cni/bridge", "/usr/lib/cni/host-local", "/usr/lib/cni/loopback"];
const NODE_BINARIES: [&str; 4] = ["kubelet", "containerd", "ctr", "containerd-shim-runc-v2"];

/// Directories of the node inside the run directory.
#[derive(Debug, Clone)]
pub struct Layout {
    pub node_dir: PathBuf,
}

impl Layout {
    pub fn new(run_dir: &Path) -> Layout {
        Layout { node_dir: run_dir.join("node") }
    }
    pub fn containerd_root(&self) -> PathBuf {
        self.node_dir.join("containerd")
    }
    pub fn containerd_state(&self) -> PathBuf {
        self.node_dir.join("containerd-state")
    }
    pub fn containerd_socket(&self) -> PathBuf {
        self.containerd_state().join("containerd.sock")
    }
    pub fn cni_conf_dir(&self) -> PathBuf {
        self.node_dir.join("cni")
    }
    pub fn pod_logs_dir(&self) -> PathBuf {
        self.node_dir.join("pod-logs")
    }
}

/// What `start` changed on the host, recorded as it goes so that a failure half-way (or a
/// later `down`) undoes exactly that.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeState {
    pub name: String,
    pub node_dir: PathBuf,
    pub bin_dir: PathBuf,
    pub routes: Vec<String>,
    /// The `iif <bridge>` rule and its unreachable table are in place.
    #[serde(default)]
    pub bridge_rule: bool,
    pub bridge: bool,
    pub cgroups: Vec<PathBuf>,
    pub kubelet_root: bool,
    pub container_logs_dir: bool,
    /// /var/lib/cni did not exist before (so all of it is ours).
    #[serde(default)]
    pub cni_cache_dir: bool,
    /// Directories that did not exist before `up` and that pods of the chart fill through
    /// hostPath (plugin files, CDI specs); removed by `down` since no pod can.
    #[serde(default)]
    pub host_path_dirs: Vec<PathBuf>,
    /// The kubelet's sysctls as they were before it ran.
    pub sysctls: Vec<(String, String)>,
    /// Unix ms when the guard routes, bridge and VIP forwarder were in place.
    pub guarded_at_ms: u64,
    /// Unix ms when the kubelet was started.
    pub kubelet_started_at_ms: u64,
}

/// What the checks found: where the node's binaries and images are.
#[derive(Debug, Clone)]
pub struct Preflight {
    pub bin_dir: PathBuf,
    pub images_dir: PathBuf,
    pub hierarchies: Vec<PathBuf>,
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn why(reason: impl Into<String>) -> ClusterError {
    ClusterError::RealNode(format!("--real-node cannot work here: {}", reason.into()))
}

/// Checks everything `--real-node` needs before anything is started or written, so a bad
/// host fails at once and leaves nothing behind.
pub fn preflight(explicit_bin_dir: Option<&Path>) -> Result<Preflight> {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    if unsafe { libc::geteuid() } != 0 {
        return Err(why("it must run as root (it creates a bridge, routes, cgroups and mounts and runs the kubelet); use sudo"));
    }
    let hierarchies = host::hierarchies(&host::cgroup_fs()).map_err(|e| match e {
        ClusterError::RealNode(reason) => why(reason),
        other => other,
    })?;
    for p in cgroup_dirs(&hierarchies) {
        if p.exists() {
            return Err(why(format!("cgroup {} exists (another real node, or one not cleaned up)", p.display())));
        }
    }
    let leftover = "another kubelet runs here, or a previous node was not cleaned up";
    for (path, what) in [(KUBELET_ROOT, leftover), (SHIM_SOCKET_DIR, leftover)] {
        if Path::new(path).exists() {
            return Err(why(format!("{path} exists ({what}); only one real node per host")));
        }
    }
    if Path::new("/sys/class/net").join(BRIDGE).exists() {
        return Err(why(format!("network interface {BRIDGE} exists (another real node?)")));
    }
    let rules = host::ip(&["-4", "rule", "show"])?;
    if let Some(r) =
        rules.lines().find(|l| l.starts_with(&format!("{BRIDGE_RULE_PRIORITY}:")) || l.contains(&format!("lookup {BRIDGE_TABLE}")))
    {
        return Err(why(format!("routing rule priority {BRIDGE_RULE_PRIORITY} / table {BRIDGE_TABLE} is taken (`{r}`)")));
    }
    let routes = host::ip(&["-4", "route", "show", "table", "all"])?;
    for line in routes.lines() {
        let dst = line.split_whitespace().find(|w| w.starts_with("10.244.") || w.starts_with("10.0."));
        if let Some(dst) = dst {
            return Err(why(format!("the host already routes {dst} (`{line}`); the node needs 10.244.0.0/16 and 10.0.0.0/16 for itself")));
        }
    }
    host::port_free(Ipv4Addr::LOCALHOST, KUBELET_HEALTHZ_PORT, "kubelet healthz")?;
    host::port_free(Ipv4Addr::UNSPECIFIED, KUBELET_PORT, "kubelet")?;
    host::port_free(Ipv4Addr::UNSPECIFIED, 443, "the Service VIP forwarder")?;
    for tool in [RUNC].iter().chain(CNI_PLUGINS.iter()) {
        if !Path::new(tool).is_file() {
            return Err(why(format!("{tool} is missing (tests/real-node/build.sh installs runc and containernetworking-plugins)")));
        }
    }
    for tool in ["ip", "socat"] {
        if !Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().is_ok_and(|o| o.status.success()) {
            return Err(why(format!("`{tool}` is not on PATH (apt-get install iproute2 socat)")));
        }
    }
    let bin_dir = node_binaries(explicit_bin_dir)?;
    let images_dir = images_dir();
    let pause = images_dir.join("pause.tar");
    if !pause.is_file() {
        return Err(why(format!("the sandbox image {} is missing; run tests/real-node/images/build.sh", pause.display())));
    }
    Ok(Preflight { bin_dir, images_dir, hierarchies })
}

/// `FAKEGPU_NODE_IMAGES`, else the repo's target/images (written by tests/real-node/images/build.sh).
pub fn images_dir() -> PathBuf {
    std::env::var_os("FAKEGPU_NODE_IMAGES")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/images"))
}

fn node_binaries(explicit: Option<&Path>) -> Result<PathBuf> {
    let complete = |d: &Path| NODE_BINARIES.iter().all(|b| d.join(b).is_file());
    if let Some(d) = explicit.map(Path::to_path_buf).or_else(|| std::env::var_os("FAKEGPU_NODE_BIN_DIR").map(PathBuf::from)) {
        return if complete(&d) { Ok(d) } else { Err(why(format!("{} lacks one of {}", d.display(), NODE_BINARIES.join(", ")))) };
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/real-node/build.sh");
    let out = Command::new("bash")
        .arg(&script)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(ClusterError::io(format!("running {}", script.display())))?;
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or("").trim());
    if out.status.success() && complete(&dir) {
        Ok(dir)
    } else {
        Err(why(format!("building the node's binaries with {} failed", script.display())))
    }
}

/// Everything `start` needs from the control plane it joins.
pub(crate) struct Join<'a> {
    pub run_dir: &'a Path,
    pub pki: &'a crate::pki::Pki,
    pub api_port: u16,
    pub labels: std::collections::BTreeMap<String, String>,
    pub client: &'a kube::Client,
}

/// Brings the node up: guards first, then containerd, images, the kubelet; returns once the
/// node is Ready and the sysctls are back. Each host change is recorded in `s.state` first.
pub(crate) async fn start(pre: &Preflight, join: Join<'_>, s: &mut crate::commands::Started) -> Result<Duration> {
    let run_dir = join.run_dir;
    let l = Layout::new(run_dir);
    let node_pki = join.pki.node.clone().ok_or_else(|| why("the PKI has no kubelet certificates"))?;
    s.state.real_node =
        Some(NodeState { name: NODE_NAME.into(), node_dir: l.node_dir.clone(), bin_dir: pre.bin_dir.clone(), ..NodeState::default() });
    s.state.save(run_dir)?;
    macro_rules! record {
        ($f:expr) => {{
            let n = s.state.real_node.as_mut().expect("set above");
            #[allow(clippy::redundant_closure_call)]
            ($f)(n);
            s.state.save(run_dir)?;
        }};
    }

    // 1. Nothing of the node's ranges may leave the host, from before the first packet.
    for r in GUARD_ROUTES {
        host::ip(&["route", "add", "unreachable", r])?;
        record!(|n: &mut NodeState| n.routes.push(r.to_string()));
    }
    record!(|n: &mut NodeState| n.bridge_rule = true);
    host::ip(&["route", "add", "unreachable", "default", "table", BRIDGE_TABLE])?;
    host::ip(&["rule", "add", "iif", BRIDGE, "priority", BRIDGE_RULE_PRIORITY, "table", BRIDGE_TABLE])?;
    host::ip(&["link", "add", BRIDGE, "type", "bridge"])?;
    record!(|n: &mut NodeState| n.bridge = true);
    host::ip(&["addr", "add", &format!("{NODE_IP}/24"), "dev", BRIDGE])?;
    host::ip(&["addr", "add", &format!("{SERVICE_VIP}/32"), "dev", BRIDGE])?;
    // Pods get IPv4 only; no IPv6 address on the bridge either.
    let v6 = Path::new("/proc/sys/net/ipv6/conf").join(BRIDGE).join("disable_ipv6");
    if v6.exists() {
        std::fs::write(&v6, "1").map_err(ClusterError::io(format!("writing {}", v6.display())))?;
    }
    host::ip(&["link", "set", BRIDGE, "up"])?;
    let socat = which("socat")?;
    let fwd = s.spawn_binary(
        run_dir,
        "service-forwarder",
        socat,
        vec![format!("TCP-LISTEN:443,bind={SERVICE_VIP},reuseaddr,fork"), format!("TCP:127.0.0.1:{}", join.api_port)],
        &[],
    )?;
    let (rec, child) = s.parts(fwd);
    crate::health::wait_ready(rec, child, Duration::from_secs(10), || async {
        std::net::TcpStream::connect_timeout(&(SERVICE_VIP, 443).into(), Duration::from_millis(200)).is_ok()
    })
    .await?;
    record!(|n: &mut NodeState| n.guarded_at_ms = unix_ms());

    // 2. cgroups, directories and configuration.
    // Recorded before they exist: a failure half-way still removes the ones that were made.
    let cgroups = cgroup_dirs(&pre.hierarchies);
    record!(|n: &mut NodeState| n.cgroups = cgroups.clone());
    host::create_cgroups(&pre.hierarchies, CGROUP_ROOT)?;
    for d in [l.containerd_root(), l.containerd_state(), l.cni_conf_dir(), l.pod_logs_dir()] {
        std::fs::create_dir_all(&d).map_err(ClusterError::io(format!("creating {}", d.display())))?;
    }
    record!(|n: &mut NodeState| n.kubelet_root = true);
    std::fs::create_dir_all(KUBELET_ROOT).map_err(ClusterError::io(format!("creating {KUBELET_ROOT}")))?;
    if !Path::new(CONTAINER_LOGS).exists() {
        record!(|n: &mut NodeState| n.container_logs_dir = true);
    }
    if !Path::new(CNI_CACHE).exists() {
        record!(|n: &mut NodeState| n.cni_cache_dir = true);
    }
    let absent: Vec<PathBuf> = CHART_HOST_DIRS.iter().map(PathBuf::from).filter(|p| !p.exists()).collect();
    record!(|n: &mut NodeState| n.host_path_dirs = absent.clone());
    let write = |p: PathBuf, text: String| std::fs::write(&p, text).map_err(ClusterError::io(format!("writing {}", p.display())));
    write(l.node_dir.join("containerd.toml"), config::containerd(&l, Path::new(RUNC)))?;
    write(l.cni_conf_dir().join("10-fakegpu.conflist"), config::cni(&l))?;
    write(l.node_dir.join("kubelet.json"), config::kubelet(&l, join.pki, &node_pki))?;
    let kubelet_kc = l.node_dir.join("kubelet.kubeconfig");
    crate::kubeconfig::write_for(
        &kubelet_kc,
        &format!("https://127.0.0.1:{}", join.api_port),
        &join.pki.ca_cert,
        &node_pki.client_cert,
        &node_pki.client_key,
    )?;

    // 3. containerd (finds its shim on PATH), then the images.
    let path = format!("{}:{}", pre.bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let cd = s.spawn_binary(
        run_dir,
        "containerd",
        pre.bin_dir.join("containerd"),
        vec![format!("--config={}", l.node_dir.join("containerd.toml").display())],
        &[("PATH", path.clone())],
    )?;
    let sock = l.containerd_socket();
    let ctr = pre.bin_dir.join("ctr");
    let (rec, child) = s.parts(cd);
    crate::health::wait_ready(rec, child, Duration::from_secs(30), || async {
        sock.exists()
            && Command::new(&ctr).args(["--address", &sock.to_string_lossy(), "version"]).output().is_ok_and(|o| o.status.success())
    })
    .await?;
    import_images(&ctr, &sock, &pre.images_dir)?;

    // 4. The kubelet; its sysctls are read before and written back once the node is Ready.
    let sysctls = host::KUBELET_SYSCTLS.iter().map(|n| Ok((n.to_string(), host::read_sysctl(n)?))).collect::<Result<Vec<_>>>()?;
    record!(|n: &mut NodeState| n.sysctls = sysctls.clone());
    let labels = join.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
    let started = Instant::now();
    let kl = s.spawn_binary(
        run_dir,
        "kubelet",
        pre.bin_dir.join("kubelet"),
        vec![
            format!("--config={}", l.node_dir.join("kubelet.json").display()),
            format!("--kubeconfig={}", kubelet_kc.display()),
            format!("--root-dir={KUBELET_ROOT}"),
            format!("--hostname-override={NODE_NAME}"),
            format!("--node-ip={NODE_IP}"),
            format!("--node-labels={labels}"),
            "--v=1".into(),
        ],
        &[("PATH", path)],
    )?;
    record!(|n: &mut NodeState| n.kubelet_started_at_ms = unix_ms());
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(join.client.clone());
    let (rec, child) = s.parts(kl);
    crate::health::wait_ready(rec, child, Duration::from_secs(120), || async {
        nodes.get_opt(NODE_NAME).await.ok().flatten().is_some_and(|n| crate::nodes::is_ready(&n))
    })
    .await?;
    let ready = started.elapsed();
    host::restore_sysctls(&sysctls)?;
    Ok(ready)
}

/// Stops the kubelet and starts it again with the command line it had (read from /proc),
/// records the new pid, waits for the node to be Ready and restores the sysctls it set.
pub async fn restart_kubelet(run_dir: &Path, state: &mut State) -> Result<Duration> {
    let sysctls = state
        .real_node
        .as_ref()
        .map(|n| n.sysctls.clone())
        .ok_or_else(|| ClusterError::RealNode("this cluster has no real node".into()))?;
    let i = state.processes.iter().position(|p| p.name == "kubelet").ok_or_else(|| ClusterError::RealNode("no kubelet recorded".into()))?;
    let rec = state.processes[i].clone();
    if !crate::process::is_ours(&rec) {
        return Err(ClusterError::RealNode(format!("the kubelet (pid {}) is not running", rec.pid)));
    }
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", rec.pid)).map_err(ClusterError::io("reading the kubelet's command line"))?;
    let environ = std::fs::read(format!("/proc/{}/environ", rec.pid)).map_err(ClusterError::io("reading the kubelet's environment"))?;
    let args: Vec<String> =
        cmdline.split(|b| *b == 0).skip(1).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    let path = environ
        .split(|b| *b == 0)
        .find_map(|e| e.strip_prefix(b"PATH=").map(|v| String::from_utf8_lossy(v).into_owned()))
        .unwrap_or_default();
    if !crate::process::stop(&rec, Duration::from_secs(10)) {
        return Err(ClusterError::RealNode(format!("the kubelet (pid {}) did not stop", rec.pid)));
    }
    let (mut child, new) = crate::process::spawn_with_env("kubelet", &rec.binary, &args, &[("PATH", path)], &rec.log)?;
    state.processes[i] = new.clone();
    state.save(run_dir)?;
    let client = kube::Client::try_from(crate::kubeconfig::client_config(&state.kubeconfig).await?)?;
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client);
    // The node stays Ready in the API for a while; wait for a heartbeat from the new kubelet.
    let since = k8s_openapi::jiff::Timestamp::now();
    let t = crate::health::wait_ready(&new, &mut child, Duration::from_secs(120), || async {
        nodes.get_opt(NODE_NAME).await.ok().flatten().is_some_and(|n| {
            crate::nodes::is_ready(&n)
                && n.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.last_heartbeat_time.as_ref().is_some_and(|h| h.0 > since)))
        })
    })
    .await?;
    host::restore_sysctls(&sysctls)?;
    Ok(t)
}

fn which(tool: &str) -> Result<PathBuf> {
    let out = Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().map_err(ClusterError::io("running sh"))?;
    let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if out.status.success() && p.is_absolute() {
        Ok(std::fs::canonicalize(&p).unwrap_or(p))
    } else {
        Err(why(format!("`{tool}` is not on PATH")))
    }
}

/// `ctr images import` of every `*.tar` in `dir` into the CRI namespace.
pub fn import_images(ctr: &Path, sock: &Path, dir: &Path) -> Result<()> {
    let mut archives: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(ClusterError::io(format!("reading {}", dir.display())))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "tar"))
        .collect();
    archives.sort();
    for a in archives {
        let out = Command::new(ctr)
            .args(["--address", &sock.to_string_lossy(), "-n", "k8s.io", "images", "import"])
            .arg(&a)
            .output()
            .map_err(ClusterError::io("running ctr"))?;
        if !out.status.success() {
            return Err(ClusterError::RealNode(format!(
                "ctr images import {} failed: {}",
                a.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
    }
    Ok(())
}

/// Undoes what `state.real_node` records, in reverse: the kubelet, the pods' processes, the
/// runtime's shims, containerd and the forwarder, mounts, the bridge, routes, cgroups,
/// directories, sysctls. Keeps going after a failure and reports all of them.
pub fn teardown(state: &State) -> Result<()> {
    let Some(n) = &state.real_node else { return Ok(()) };
    let mut errors: Vec<String> = Vec::new();
    let mut note = |r: Result<()>| {
        if let Err(e) = r {
            errors.push(e.to_string());
        }
    };
    let rec = |name: &str| state.processes.iter().find(|p| p.name == name);
    if let Some(r) = rec("kubelet") {
        crate::process::stop(r, Duration::from_secs(10));
    }
    note(host::kill_cgroup_members(&n.cgroups, Duration::from_secs(10)));
    let sock = Layout::new(n.node_dir.parent().unwrap_or(Path::new("/"))).containerd_socket();
    for pid in host::processes_of(&n.bin_dir.join("containerd-shim-runc-v2"), &sock.to_string_lossy()) {
        // SAFETY: kill(2) of a shim whose argv names our containerd's socket.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
    for name in ["containerd", "service-forwarder"] {
        if let Some(r) = rec(name) {
            if crate::process::is_ours(r) && name == "service-forwarder" {
                // socat forks a child per connection into its own process group.
                // SAFETY: kill(2) of the process group led by a pid we verified as ours.
                unsafe {
                    libc::kill(-(r.pid as libc::pid_t), libc::SIGTERM);
                }
            }
            crate::process::stop(r, Duration::from_secs(10));
        }
    }
    let dirs = [PathBuf::from(KUBELET_ROOT), n.node_dir.clone()];
    note(host::unmount_all(&dirs));
    if n.bridge && Path::new("/sys/class/net").join(BRIDGE).exists() {
        // The host ends of the pods' veth pairs: ports of our bridge. A netns may outlive its
        // last process for a moment (the kernel frees it asynchronously), so delete them here.
        for port in bridge_ports() {
            // Gone already when the kernel freed its netns meanwhile: that is the goal too.
            let gone = |p: &str| !Path::new("/sys/class/net").join(p).exists();
            if let Err(e) = host::ip(&["link", "del", &port]) {
                if !gone(&port) {
                    note(Err(e));
                }
            }
        }
        note(host::ip(&["link", "del", BRIDGE]).map(drop));
    }
    if n.bridge_rule {
        if host::ip(&["-4", "rule", "show", "priority", BRIDGE_RULE_PRIORITY]).is_ok_and(|o| o.contains(BRIDGE)) {
            note(host::ip(&["rule", "del", "priority", BRIDGE_RULE_PRIORITY]).map(drop));
        }
        if host::ip(&["-4", "route", "show", "table", BRIDGE_TABLE]).is_ok_and(|o| !o.trim().is_empty()) {
            note(host::ip(&["route", "flush", "table", BRIDGE_TABLE]).map(drop));
        }
    }
    for r in &n.routes {
        let present = host::ip(&["-4", "route", "show", "type", "unreachable", r]).is_ok_and(|o| !o.trim().is_empty());
        if present {
            note(host::ip(&["route", "del", "unreachable", r]).map(drop));
        }
    }
    note(host::remove_cgroups(&n.cgroups));
    if n.kubelet_root {
        note(host::remove_tree(Path::new(KUBELET_ROOT)));
    }
    note(remove_container_log_links(&n.node_dir, n.container_logs_dir));
    note(remove_cni_cache(n.cni_cache_dir));
    note(host::remove_tree(Path::new(SHIM_SOCKET_DIR)));
    for d in &n.host_path_dirs {
        note(host::remove_tree(d));
    }
    note(host::remove_tree(&n.node_dir));
    note(host::restore_sysctls(&n.sysctls));
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ClusterError::RealNode(format!("cleanup incomplete: {}", errors.join("; "))))
    }
}

/// Interfaces enslaved to our bridge (`/sys/class/net/<bridge>/brif/`).
fn bridge_ports() -> Vec<String> {
    let dir = Path::new("/sys/class/net").join(BRIDGE).join("brif");
    std::fs::read_dir(dir).map(|d| d.flatten().filter_map(|e| e.file_name().into_string().ok()).collect()).unwrap_or_default()
}

/// The cgroup directories of the node: one per hierarchy it creates, plus the cgroup2 side of
/// a hybrid host (`unified/`), where runc makes the same path without being asked.
fn cgroup_dirs(hierarchies: &[PathBuf]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = hierarchies.iter().map(|h| h.join(CGROUP_ROOT)).collect();
    let unified = host::cgroup_fs().join("unified");
    if unified.join("cgroup.procs").is_file() {
        dirs.push(unified.join(CGROUP_ROOT));
    }
    dirs
}

/// libcni's cached results of our network (`fakegpu-<sandbox>-eth0`) and of containerd's
/// loopback for the same sandboxes; the whole cache when it did not exist before.
fn remove_cni_cache(created: bool) -> Result<()> {
    if created {
        return host::remove_tree(Path::new(CNI_CACHE));
    }
    let results = Path::new(CNI_CACHE).join("results");
    let Ok(entries) = std::fs::read_dir(&results) else { return Ok(()) };
    let names: Vec<String> = entries.flatten().filter_map(|e| e.file_name().into_string().ok()).collect();
    let sandboxes: Vec<&str> = names.iter().filter_map(|n| n.strip_prefix("fakegpu-")?.strip_suffix("-eth0")).collect();
    for n in &names {
        let ours = n.starts_with("fakegpu-") || sandboxes.iter().any(|s| n == &format!("cni-loopback-{s}-lo"));
        if ours {
            let p = results.join(n);
            std::fs::remove_file(&p).map_err(ClusterError::io(format!("removing {}", p.display())))?;
        }
    }
    Ok(())
}

/// The kubelet's links in /var/log/containers that point into our pod-logs dir, and the
/// directory itself when it did not exist before.
fn remove_container_log_links(node_dir: &Path, created: bool) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(CONTAINER_LOGS) else { return Ok(()) };
    for e in entries.flatten() {
        if std::fs::read_link(e.path()).is_ok_and(|t| t.starts_with(node_dir)) {
            std::fs::remove_file(e.path()).map_err(ClusterError::io(format!("removing {}", e.path().display())))?;
        }
    }
    if created {
        // Only if empty: anything else in it is not ours.
        let _ = std::fs::remove_dir(CONTAINER_LOGS);
    }
    Ok(())
}
