//! Host state the real node touches, each with its undo: routes and the bridge (through `ip`),
//! the kubelet's sysctls, v1/v2 cgroups under our own root, mounts under our directories, and
//! processes found by cgroup or by binary + argument (never by name alone).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::error::{ClusterError, Result};

/// Runs `ip args…`; the error names the command and its stderr.
pub fn ip(args: &[&str]) -> Result<String> {
    let out = Command::new("ip").args(args).output().map_err(ClusterError::io("running ip (iproute2)"))?;
    if !out.status.success() {
        return Err(ClusterError::RealNode(format!("`ip {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim())));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The sysctls every kubelet start sets on the host (and that we put back).
pub const KUBELET_SYSCTLS: [&str; 3] = ["kernel.panic", "kernel.panic_on_oops", "vm.overcommit_memory"];

fn sysctl_path(name: &str) -> PathBuf {
    Path::new("/proc/sys").join(name.replace('.', "/"))
}

pub fn read_sysctl(name: &str) -> Result<String> {
    let p = sysctl_path(name);
    Ok(std::fs::read_to_string(&p).map_err(ClusterError::io(format!("reading {}", p.display())))?.trim().to_string())
}

/// Writes back each recorded value that differs now.
pub fn restore_sysctls(saved: &[(String, String)]) -> Result<()> {
    for (name, value) in saved {
        if read_sysctl(name)? != *value {
            let p = sysctl_path(name);
            std::fs::write(&p, value).map_err(ClusterError::io(format!("restoring {} to {value}", p.display())))?;
        }
    }
    Ok(())
}

/// The cgroup file system root (`FAKEGPU_CGROUP_FS` overrides it, for tests of the checks).
pub fn cgroup_fs() -> PathBuf {
    std::env::var_os("FAKEGPU_CGROUP_FS").filter(|v| !v.is_empty()).map(PathBuf::from).unwrap_or_else(|| "/sys/fs/cgroup".into())
}

/// Directories that hold one cgroup hierarchy each: the cgroup2 root, or every v1 hierarchy
/// (the hybrid layout's `unified` excluded: the kubelet does not use it).
pub fn hierarchies(fs: &Path) -> Result<Vec<PathBuf>> {
    if fs.join("cgroup.controllers").is_file() {
        let controllers = std::fs::read_to_string(fs.join("cgroup.controllers")).unwrap_or_default();
        let missing: Vec<&str> =
            ["cpu", "memory", "pids"].into_iter().filter(|c| !controllers.split_whitespace().any(|x| x == *c)).collect();
        if !missing.is_empty() {
            return Err(ClusterError::RealNode(format!("cgroup v2 at {} lacks the controllers {}", fs.display(), missing.join(", "))));
        }
        return Ok(vec![fs.to_path_buf()]);
    }
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir(fs) {
        for e in entries.flatten() {
            let p = e.path();
            let is_link = e.file_type().is_ok_and(|t| t.is_symlink());
            if !is_link && e.file_name() != "unified" && p.join("cgroup.procs").is_file() {
                found.push(p);
            }
        }
    }
    found.sort();
    let missing: Vec<&str> =
        ["cpu", "memory", "pids", "cpuset"].into_iter().filter(|c| !fs.join(c).join("cgroup.procs").is_file()).collect();
    if !missing.is_empty() {
        return Err(ClusterError::RealNode(format!(
            "no usable cgroup controllers under {}: missing {} (cgroup v1 hierarchies or cgroup v2 with cpu, memory, pids)",
            fs.display(),
            missing.join(", ")
        )));
    }
    Ok(found)
}

/// Creates `<hierarchy>/<name>` in each hierarchy (the kubelet requires its cgroupRoot to exist);
/// a v1 cpuset child starts empty and must inherit cpus and mems before anything can join it.
pub fn create_cgroups(hierarchies: &[PathBuf], name: &str) -> Result<()> {
    for h in hierarchies {
        let d = h.join(name);
        std::fs::create_dir(&d).map_err(ClusterError::io(format!("creating cgroup {}", d.display())))?;
        if h.file_name().is_some_and(|n| n == "cpuset") {
            for f in ["cpuset.cpus", "cpuset.mems"] {
                let v = std::fs::read_to_string(h.join(f)).map_err(ClusterError::io(format!("reading {}", h.join(f).display())))?;
                std::fs::write(d.join(f), v.trim()).map_err(ClusterError::io(format!("writing {}", d.join(f).display())))?;
            }
        }
    }
    Ok(())
}

/// Every cgroup directory below (and including) `root`, deepest first.
fn cgroup_tree(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(entries) = std::fs::read_dir(&d) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
        out.push(d);
    }
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out
}

/// Pids in the cgroup trees under `roots` (containers of the node's pods).
pub fn pids_in(roots: &[PathBuf]) -> Vec<i32> {
    let mut pids: Vec<i32> = roots
        .iter()
        .flat_map(|r| cgroup_tree(r))
        .filter_map(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
        .flat_map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect::<Vec<i32>>())
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// SIGKILLs every process in our cgroups until none is left (or `timeout`).
pub fn kill_cgroup_members(roots: &[PathBuf], timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let pids = pids_in(roots);
        if pids.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(ClusterError::RealNode(format!("processes {pids:?} in the node's cgroups survived SIGKILL")));
        }
        for pid in pids {
            // SAFETY: kill(2) with a positive pid read from our own cgroup; no memory is involved.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Removes the cgroup trees (children first); a cgroup can only go once it is empty, which the
/// kernel may report a moment after its last process died.
pub fn remove_cgroups(roots: &[PathBuf]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    for root in roots {
        for d in cgroup_tree(root) {
            loop {
                match std::fs::remove_dir(&d) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(e) if Instant::now() < deadline => {
                        tracing::debug!(cgroup = %d.display(), error = %e, "cgroup busy; retrying");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    Err(e) => return Err(ClusterError::io(format!("removing cgroup {}", d.display()))(e)),
                }
            }
        }
    }
    Ok(())
}

/// Pids whose argv[0] is `binary` and whose arguments contain `arg` (the runtime's shims carry
/// our containerd's socket address).
pub fn processes_of(binary: &Path, arg: &str) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return false };
            let mut args = cmdline.split(|b| *b == 0);
            args.next() == Some(binary.as_os_str().as_encoded_bytes()) && args.any(|a| a == arg.as_bytes())
        })
        .collect()
}

/// Mount points at or below any of `dirs`, deepest first.
pub fn mounts_under(dirs: &[PathBuf]) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| dirs.iter().any(|d| p.starts_with(d)))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

/// Detaches every mount below `dirs` until none is left (stacked mounts need several passes).
pub fn unmount_all(dirs: &[PathBuf]) -> Result<()> {
    for _ in 0..10 {
        let mounts = mounts_under(dirs);
        if mounts.is_empty() {
            return Ok(());
        }
        for m in mounts {
            let Ok(c) = std::ffi::CString::new(m.as_os_str().as_encoded_bytes()) else { continue };
            // SAFETY: umount2(2) with a valid NUL-terminated path; MNT_DETACH never blocks.
            let rc = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            if rc != 0 {
                tracing::debug!(mount = %m.display(), error = %std::io::Error::last_os_error(), "umount");
            }
        }
    }
    let left = mounts_under(dirs);
    if left.is_empty() {
        Ok(())
    } else {
        Err(ClusterError::RealNode(format!("mounts left after unmounting: {left:?}")))
    }
}

/// `remove_dir_all`, refused while anything is still mounted below `dir` (it would reach
/// through a bind mount into files that are not ours).
pub fn remove_tree(dir: &Path) -> Result<()> {
    let left = mounts_under(&[dir.to_path_buf()]);
    if !left.is_empty() {
        return Err(ClusterError::RealNode(format!("not removing {}: still mounted below it: {left:?}", dir.display())));
    }
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ClusterError::io(format!("removing {}", dir.display()))(e)),
    }
}

/// Fails when something listens on (or holds) `addr:port`, naming the port.
pub fn port_free(addr: std::net::Ipv4Addr, port: u16, what: &str) -> Result<()> {
    std::net::TcpListener::bind((addr, port))
        .map(drop)
        .map_err(|e| ClusterError::RealNode(format!("port {port} ({what}) is in use on {addr}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("fakegpu-host-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn v1_hierarchies_need_cpu_cpuset_memory_pids_and_skip_unified() {
        let fs = tempdir("v1");
        assert!(hierarchies(&fs).unwrap_err().to_string().contains("missing cpu, memory, pids, cpuset"));
        for h in ["cpu", "cpuset", "memory", "pids", "unified"] {
            std::fs::create_dir_all(fs.join(h)).unwrap();
            std::fs::write(fs.join(h).join("cgroup.procs"), "").unwrap();
        }
        let found = hierarchies(&fs).unwrap();
        assert_eq!(found, ["cpu", "cpuset", "memory", "pids"].map(|h| fs.join(h)).to_vec());
        std::fs::remove_dir_all(&fs).unwrap();
    }

    #[test]
    fn v2_needs_its_controllers() {
        let fs = tempdir("v2");
        std::fs::write(fs.join("cgroup.controllers"), "cpuset cpu io memory").unwrap();
        assert!(hierarchies(&fs).unwrap_err().to_string().contains("lacks the controllers pids"));
        std::fs::write(fs.join("cgroup.controllers"), "cpuset cpu io memory pids").unwrap();
        assert_eq!(hierarchies(&fs).unwrap(), vec![fs.clone()]);
        std::fs::remove_dir_all(&fs).unwrap();
    }

    #[test]
    fn a_taken_port_is_named() {
        let l = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = l.local_addr().unwrap().port();
        let e = port_free(std::net::Ipv4Addr::LOCALHOST, port, "test").unwrap_err().to_string();
        assert!(e.contains(&format!("port {port} (test) is in use")), "{e}");
    }

    #[test]
    fn remove_tree_refuses_nothing_mounted_and_tolerates_absence() {
        let d = tempdir("tree");
        std::fs::write(d.join("f"), "x").unwrap();
        remove_tree(&d).unwrap();
        assert!(!d.exists());
        remove_tree(&d).unwrap();
        // /proc is a mount point: never removed through remove_tree.
        assert!(remove_tree(Path::new("/proc")).unwrap_err().to_string().contains("still mounted"));
    }
}
