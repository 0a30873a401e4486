//! The four subcommands: `up` (start, wait, create nodes), `down`, `env` and `status`.

use std::io::IsTerminal;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use crate::components::{self, Ports};
use crate::error::{ClusterError, Result};
use crate::health;
use crate::nodes::{self, NodeSpec};
use crate::process;
use crate::state::{ProcessRecord, State};
use crate::{ClusterCommand, UpArgs};

pub async fn run(cmd: ClusterCommand) -> anyhow::Result<i32> {
    let run_dir = crate::paths::run_dir();
    let res = match cmd {
        ClusterCommand::Up(args) => up(&run_dir, *args).await,
        ClusterCommand::Down => down(&run_dir),
        ClusterCommand::Env => env(&run_dir),
        ClusterCommand::Status => status(&run_dir).await,
        ClusterCommand::RestartKubelet => restart_kubelet(&run_dir).await,
    };
    match res {
        Ok(code) => Ok(code),
        Err(e) => {
            eprintln!("fakegpu cluster: {e}");
            Ok(1)
        }
    }
}

fn validate(args: &UpArgs) -> Result<()> {
    if args.real_node && args.runtime_config.as_deref().is_some_and(components::disables_dra_v1) {
        return Err(ClusterError::InvalidArgument(
            "--real-node needs the Node authorizer, which needs resource.k8s.io/v1: do not disable it with --runtime-config".into(),
        ));
    }
    let label_ok = |v: &str| {
        !v.is_empty()
            && v.len() <= 40
            && v.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !v.starts_with('-')
            && !v.ends_with('-')
    };
    if !label_ok(&args.pool) {
        return Err(ClusterError::InvalidArgument(format!(
            "--pool {:?}: use 1-40 of [a-z0-9-] (it is part of node names and a label value)",
            args.pool
        )));
    }
    if let Some(p) = &args.profile {
        let ok = !p.is_empty() && p.len() <= 63 && p.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !ok {
            return Err(ClusterError::InvalidArgument(format!("--profile {p:?}: must be a valid label value")));
        }
    }
    if args.nodes > 5000 {
        return Err(ClusterError::InvalidArgument("--nodes: at most 5000".into()));
    }
    Ok(())
}

/// Holds an exclusive flock on `<run_dir>.lock` so two `up`s cannot race for the same run dir.
struct RunLock(#[allow(dead_code)] std::fs::File);

fn lock(run_dir: &Path) -> Result<RunLock> {
    use std::os::fd::AsRawFd;
    let path = run_dir.with_extension("lock");
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(ClusterError::io(format!("creating {}", parent.display())))?;
    }
    let f = std::fs::File::create(&path).map_err(ClusterError::io(format!("opening {}", path.display())))?;
    // SAFETY: flock(2) on a descriptor we own; no memory is shared with the kernel.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(ClusterError::AlreadyRunning { run_dir: run_dir.to_path_buf() });
    }
    Ok(RunLock(f))
}

/// Clears a run dir left by a cluster whose processes are all gone; refuses a live one and
/// any non-empty directory that is not ours (FAKEGPU_RUN_DIR might point anywhere).
fn prepare_run_dir(run_dir: &Path) -> Result<()> {
    match State::load(run_dir)? {
        Some(state) if !state.alive().is_empty() => return Err(ClusterError::AlreadyRunning { run_dir: run_dir.to_path_buf() }),
        Some(state) => {
            eprintln!("removing stale run dir {} (its processes are gone)", run_dir.display());
            crate::realnode::teardown(&state)?;
            std::fs::remove_dir_all(run_dir).map_err(ClusterError::io(format!("removing {}", run_dir.display())))?;
        }
        None => {
            let non_empty = std::fs::read_dir(run_dir).is_ok_and(|mut d| d.next().is_some());
            if non_empty {
                return Err(ClusterError::InvalidArgument(format!(
                    "run dir {} exists, is not empty and has no state.json; remove it or set FAKEGPU_RUN_DIR",
                    run_dir.display()
                )));
            }
        }
    }
    for sub in ["logs", "pki", "etcd", "certs/scheduler", "certs/controller-manager"] {
        let d = run_dir.join(sub);
        std::fs::create_dir_all(&d).map_err(ClusterError::io(format!("creating {}", d.display())))?;
    }
    Ok(())
}

/// Progress lines on stderr: `[n/total] what ... detail`.
struct Progress {
    step: u32,
    total: u32,
    start: Instant,
}

impl Progress {
    fn line(&mut self, what: &str, detail: &str) {
        self.step += 1;
        eprintln!("[{}/{}] {what:<24} {detail}  (t+{:.1}s)", self.step, self.total, self.start.elapsed().as_secs_f64());
    }
}

/// The processes `up` started so far, with the state that records them.
pub(crate) struct Started {
    pub(crate) state: State,
    children: Vec<Child>,
}

impl Started {
    fn spawn(&mut self, run_dir: &Path, name: &str, args: Vec<String>) -> Result<usize> {
        let binary = self.state.bin_dir.join(name);
        self.spawn_binary(run_dir, name, binary, args, &[])
    }

    pub(crate) fn spawn_binary(
        &mut self,
        run_dir: &Path,
        name: &str,
        binary: std::path::PathBuf,
        args: Vec<String>,
        envs: &[(&str, String)],
    ) -> Result<usize> {
        let log = run_dir.join("logs").join(format!("{name}.log"));
        let (child, rec) = process::spawn_with_env(name, &binary, &args, envs, &log)?;
        self.children.push(child);
        self.state.processes.push(rec);
        self.state.save(run_dir)?;
        Ok(self.children.len() - 1)
    }

    pub(crate) fn parts(&mut self, i: usize) -> (&ProcessRecord, &mut Child) {
        (&self.state.processes[i], &mut self.children[i])
    }

    fn stop_all(&mut self) {
        if let Err(e) = crate::realnode::teardown(&self.state) {
            eprintln!("{e}");
        }
        for rec in self.state.processes.iter().rev() {
            process::stop(rec, Duration::from_secs(10));
        }
        for c in &mut self.children {
            let _ = c.try_wait();
        }
    }
}

async fn up(run_dir: &Path, args: UpArgs) -> Result<i32> {
    validate(&args)?;
    // Before the lock file or the run dir exist: a host where the node cannot work is told so
    // at once, with nothing left behind.
    let node = if args.real_node { Some(crate::realnode::preflight(args.node_bin_dir.as_deref())?) } else { None };
    let bin_dir = crate::binaries::locate_or_build(args.bin_dir.as_deref())?;
    let _lock = lock(run_dir)?;
    prepare_run_dir(run_dir)?;
    let start = Instant::now();
    let mut started = Started {
        state: State {
            bin_dir,
            kubeconfig: crate::paths::kubeconfig_in(run_dir),
            nodes: args.nodes,
            pool: args.pool.clone(),
            profile: args.profile.clone(),
            gpus: args.gpus,
            ..State::default()
        },
        children: Vec::new(),
    };
    let res = start_all(run_dir, &args, node.as_ref(), &mut started, start).await;
    if let Err(e) = res {
        started.stop_all();
        let _ = started.state.save(run_dir);
        eprintln!("stopped the components that had started; logs are in {}", run_dir.join("logs").display());
        return Err(e);
    }
    started.state.ready = true;
    started.state.save(run_dir)?;
    eprintln!(
        "cluster ready in {:.1}s: {} KWOK node(s) in pool {:?}; run: eval \"$(fakegpu cluster env)\"",
        start.elapsed().as_secs_f64(),
        args.nodes,
        args.pool
    );
    Ok(0)
}

async fn start_all(
    run_dir: &Path,
    args: &UpArgs,
    node: Option<&crate::realnode::Preflight>,
    s: &mut Started,
    start: Instant,
) -> Result<()> {
    let total = 6 + u32::from(!args.no_operator) + u32::from(node.is_some());
    let mut progress = Progress { step: 0, total, start };
    let identity = crate::pki::NodeIdentity { name: crate::realnode::NODE_NAME.into(), ip: crate::realnode::NODE_IP };
    let pki = crate::pki::generate(&run_dir.join("pki"), node.map(|_| &identity))?;
    let ports = Ports::allocate()?;
    record_ports(&mut s.state, &ports);
    let server = format!("https://127.0.0.1:{}", ports.apiserver);
    s.state.api_server = server.clone();
    crate::kubeconfig::write(&s.state.kubeconfig, &server, &pki)?;
    let stages = run_dir.join("kwok-stages.yaml");
    std::fs::write(&stages, components::KWOK_STAGES).map_err(ClusterError::io(format!("writing {}", stages.display())))?;
    let kc = s.state.kubeconfig.clone();

    let etcd = s.spawn(run_dir, "etcd", components::etcd(&run_dir.join("etcd"), &ports))?;
    let (rec, child) = s.parts(etcd);
    let port = ports.etcd_client;
    let t = health::wait_ready(rec, child, Duration::from_secs(30), || async move { health::http_ok(port, "/health") }).await?;
    progress.line("etcd", &format!("ready in {:.1}s", t.as_secs_f64()));

    let mut api_args = components::apiserver(&pki, &ports);
    if node.is_some() {
        api_args.extend(components::apiserver_kubelet_client(&pki));
    }
    if let Some(log) = &args.audit_log {
        let policy = run_dir.join("audit-policy.yaml");
        std::fs::write(&policy, components::AUDIT_POLICY).map_err(ClusterError::io(format!("writing {}", policy.display())))?;
        let log = std::path::absolute(log).map_err(ClusterError::io(format!("resolving {}", log.display())))?;
        api_args.extend(components::apiserver_audit(&policy, &log));
    }
    if let Some(rc) = &args.runtime_config {
        api_args.push(format!("--runtime-config={rc}"));
        if components::disables_dra_v1(rc) {
            // The Node authorizer's graph watches resource.k8s.io/v1 ResourceSlices and the API
            // server never turns ready while that informer cannot sync; with no kubelet
            // (KWOK nodes only) RBAC alone authorizes everything the cluster needs.
            api_args.retain(|a| !a.starts_with("--authorization-mode="));
            api_args.push("--authorization-mode=RBAC".into());
        }
    }
    let api = s.spawn(run_dir, "kube-apiserver", api_args)?;
    let admin = crate::kubeconfig::client_config(&kc).await?;
    let client = kube::Client::try_from(admin.clone())?;
    let (rec, child) = s.parts(api);
    let t = health::wait_ready(rec, child, Duration::from_secs(90), || async {
        health::listening(ports.apiserver) && health::kube_ok(&client, "/readyz").await
    })
    .await?;
    progress.line("kube-apiserver", &format!("ready in {:.1}s ({server})", t.as_secs_f64()));

    // The rest only needs the apiserver, so they start together and are awaited in turn.
    let cm_certs = run_dir.join("certs/controller-manager");
    let sched_certs = run_dir.join("certs/scheduler");
    let kcm = s.spawn(run_dir, "kube-controller-manager", components::controller_manager(&kc, &pki, &ports, &cm_certs))?;
    let mut sched_args = components::scheduler(&kc, &ports, &sched_certs);
    sched_args.extend(args.scheduler_args.iter().cloned());
    let sched_bin = args.scheduler_bin.clone().unwrap_or_else(|| s.state.bin_dir.join("kube-scheduler"));
    let sched = s.spawn_binary(run_dir, "kube-scheduler", sched_bin, sched_args, &[])?;
    let kwok = s.spawn(run_dir, "kwok", components::kwok(&kc, &stages, &ports))?;

    for (i, port) in [(sched, ports.scheduler), (kcm, ports.controller_manager)] {
        let c = health::component_client(&admin, port)?;
        let (rec, child) = s.parts(i);
        let name = rec.name.clone();
        let t = health::wait_ready(rec, child, Duration::from_secs(60), || async {
            health::listening(port) && health::kube_ok(&c, "/healthz").await
        })
        .await?;
        progress.line(&name, &format!("healthy after {:.1}s", t.as_secs_f64()));
    }
    let (rec, child) = s.parts(kwok);
    let port = ports.kwok;
    let t = health::wait_ready(rec, child, Duration::from_secs(60), || async move { health::http_ok(port, "/healthz") }).await?;
    progress.line("kwok", &format!("healthy after {:.1}s", t.as_secs_f64()));

    if !args.no_operator {
        start_operator(run_dir, s, args.compute_domains, &mut progress).await?;
    }

    let spec = NodeSpec { pool: args.pool.clone(), profile: args.profile.clone(), gpus: args.gpus };
    let node_start = Instant::now();
    nodes::create(&client, &spec, args.nodes).await?;
    let timeout = Duration::from_secs(60 + u64::from(args.nodes) / 10);
    let tty = std::io::stderr().is_terminal();
    let mut last = Instant::now();
    nodes::wait_ready(&client, &args.pool, args.nodes, timeout, |ready, total| {
        if tty {
            eprint!("\r      nodes Ready: {ready}/{total}   ");
        } else if last.elapsed() > Duration::from_secs(5) {
            eprintln!("      nodes Ready: {ready}/{total}");
            last = Instant::now();
        }
    })
    .await?;
    if tty {
        eprint!("\r");
    }
    progress.line("nodes", &format!("{} KWOK node(s) Ready in {:.1}s", args.nodes, node_start.elapsed().as_secs_f64()));
    if let Some(pre) = node {
        let join =
            crate::realnode::Join { run_dir, pki: &pki, api_port: ports.apiserver, labels: nodes::labels_for(&spec), client: &client };
        let t = crate::realnode::start(pre, join, s).await?;
        progress.line("real node", &format!("{} Ready {:.1}s after the kubelet started", crate::realnode::NODE_NAME, t.as_secs_f64()));
    }
    Ok(())
}

/// The operator's components as local processes (crate::operator); ready when the
/// topology-server answers /healthz and the others are still alive.
async fn start_operator(run_dir: &Path, s: &mut Started, compute_domains: bool, progress: &mut Progress) -> Result<()> {
    let binary = match crate::operator::locate() {
        Ok(Some(b)) => b,
        Ok(None) => {
            progress.line(
                "operator",
                &format!("not started: no {} binary (cargo build -p fake-gpu-operator, or pass --no-operator)", crate::operator::BINARY),
            );
            return Ok(());
        }
        Err(reason) => {
            return Err(ClusterError::ComponentFailed {
                component: "operator".into(),
                reason,
                log: run_dir.join("logs"),
                tail: String::new(),
            })
        }
    };
    let ports = crate::operator::Ports { topology_server: process::free_port()?, metrics: process::free_port()? };
    let port = ports.topology_server;
    s.state.ports.insert("topology-server".into(), port);
    s.state.ports.insert("status-exporter".into(), ports.metrics);
    let kc = s.state.kubeconfig.clone();
    let mut started = Vec::new();
    let mut extra = Vec::new();
    if compute_domains {
        for (name, a) in crate::operator::compute_domain_components(&kc) {
            extra.push(s.spawn_binary(run_dir, name, binary.clone(), a, &[])?);
        }
    }
    for (name, a) in crate::operator::components(&kc, run_dir, ports) {
        started.push(s.spawn_binary(run_dir, name, binary.clone(), a, &[])?);
    }
    let server = *started.last().expect("four components");
    started.extend(extra);
    let (rec, child) = s.parts(server);
    let t = health::wait_ready(rec, child, Duration::from_secs(60), || async move { health::http_ok(port, "/healthz") }).await?;
    for i in started {
        let (rec, child) = s.parts(i);
        if let Ok(Some(status)) = child.try_wait() {
            return Err(health::failed(rec, format!("exited with {status}")));
        }
    }
    progress.line(
        "operator",
        &format!(
            "status-updater, kwok-gpu-device-plugin, status-exporter (metrics :{}), topology-server (:{port}){} up after {:.1}s",
            ports.metrics,
            if compute_domains { ", compute-domain-controller, kwok-compute-domain-dra-plugin" } else { "" },
            t.as_secs_f64()
        ),
    );
    Ok(())
}

fn record_ports(state: &mut State, p: &Ports) {
    for (k, v) in [
        ("etcd-client", p.etcd_client),
        ("etcd-peer", p.etcd_peer),
        ("kube-apiserver", p.apiserver),
        ("kube-scheduler", p.scheduler),
        ("kube-controller-manager", p.controller_manager),
        ("kwok", p.kwok),
    ] {
        state.ports.insert(k.to_string(), v);
    }
}

fn down(run_dir: &Path) -> Result<i32> {
    let Some(state) = State::load(run_dir)? else {
        eprintln!("no cluster in {}", run_dir.display());
        return Ok(0);
    };
    // The node first: its pods, shims and mounts go before the API server they report to.
    if let Err(e) = crate::realnode::teardown(&state) {
        eprintln!("{e}; keeping {}", run_dir.display());
        return Ok(1);
    }
    let mut stuck = Vec::new();
    for rec in state.processes.iter().rev() {
        if process::is_ours(rec) {
            eprintln!("stopping {} (pid {})", rec.name, rec.pid);
            if !process::stop(rec, Duration::from_secs(10)) {
                stuck.push(format!("{} (pid {})", rec.name, rec.pid));
            }
        }
    }
    if !stuck.is_empty() {
        eprintln!("could not stop: {}; keeping {}", stuck.join(", "), run_dir.display());
        return Ok(1);
    }
    std::fs::remove_dir_all(run_dir).map_err(ClusterError::io(format!("removing {}", run_dir.display())))?;
    let _ = std::fs::remove_file(run_dir.with_extension("lock"));
    eprintln!("cluster stopped; removed {}", run_dir.display());
    Ok(0)
}

async fn restart_kubelet(run_dir: &Path) -> Result<i32> {
    let Some(mut state) = State::load(run_dir)? else {
        eprintln!("no cluster in {}", run_dir.display());
        return Ok(1);
    };
    let t = crate::realnode::restart_kubelet(run_dir, &mut state).await?;
    eprintln!("kubelet restarted; node Ready after {:.1}s", t.as_secs_f64());
    Ok(0)
}

fn sh_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}

fn env(run_dir: &Path) -> Result<i32> {
    let Some(state) = State::load(run_dir)? else {
        eprintln!("no cluster in {}; run `fakegpu cluster up` first", run_dir.display());
        return Ok(1);
    };
    println!("export KUBECONFIG={}", sh_quote(&state.kubeconfig));
    println!("export PATH={}:\"$PATH\"", sh_quote(&state.bin_dir));
    Ok(0)
}

async fn status(run_dir: &Path) -> Result<i32> {
    let Some(state) = State::load(run_dir)? else {
        println!("no cluster (run dir {})", run_dir.display());
        return Ok(1);
    };
    let mut all_alive = true;
    println!("run dir:     {}", run_dir.display());
    println!("api server:  {}", state.api_server);
    println!("kubeconfig:  {}", state.kubeconfig.display());
    println!("binaries:    {}", state.bin_dir.display());
    println!(
        "pool:        {}  profile: {}  gpus: {}",
        state.pool,
        state.profile.as_deref().unwrap_or("-"),
        state.gpus.map_or("-".to_string(), |g| g.to_string())
    );
    for rec in &state.processes {
        let alive = process::is_ours(rec);
        all_alive &= alive;
        let port = state.ports.get(&rec.name).map_or(String::new(), |p| format!(":{p}"));
        println!("  {:<24} pid {:<8} {:<8} {}", rec.name, rec.pid, if alive { "running" } else { "DEAD" }, port);
    }
    let nodes = node_summary(&state.kubeconfig).await;
    match &nodes {
        Ok((ready, total)) => println!("nodes:       {ready}/{total} Ready"),
        Err(e) => println!("nodes:       unknown ({e})"),
    }
    let healthy = all_alive && state.ready && nodes.is_ok();
    println!("status:      {}", if healthy { "ready" } else { "NOT ready" });
    Ok(if healthy { 0 } else { 1 })
}

async fn node_summary(kubeconfig: &Path) -> Result<(usize, usize)> {
    let cfg = crate::kubeconfig::client_config(kubeconfig).await?;
    let client = kube::Client::try_from(cfg)?;
    let api: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client);
    let list = tokio::time::timeout(Duration::from_secs(5), api.list(&Default::default()))
        .await
        .map_err(|_| ClusterError::Timeout { what: "the node list".into(), secs: 5 })??;
    let ready = list.items.iter().filter(|n| nodes::is_ready(n)).count();
    Ok((ready, list.items.len()))
}
