//! Starting component processes detached from the terminal, recognising them later by pid,
//! stopping them, and reading the tail of their logs for error messages.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{ClusterError, Result};
use crate::state::ProcessRecord;

/// Spawns `binary args…` with stdout and stderr appended to `log`. The child gets its own
/// process group so a Ctrl-C at the terminal after `up` returned does not reach it.
pub fn spawn(name: &str, binary: &Path, args: &[String], log: &Path) -> Result<(Child, ProcessRecord)> {
    spawn_with_env(name, binary, args, &[], log)
}

/// [`spawn`] with extra environment variables (e.g. a PATH on which containerd finds its shim).
pub fn spawn_with_env(name: &str, binary: &Path, args: &[String], envs: &[(&str, String)], log: &Path) -> Result<(Child, ProcessRecord)> {
    use std::os::unix::process::CommandExt;
    let out =
        std::fs::OpenOptions::new().create(true).append(true).open(log).map_err(ClusterError::io(format!("opening {}", log.display())))?;
    let err = out.try_clone().map_err(ClusterError::io(format!("opening {}", log.display())))?;
    let child = Command::new(binary)
        .args(args)
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .map_err(|e| ClusterError::ComponentFailed {
            component: name.to_string(),
            reason: format!("cannot execute {}: {e}", binary.display()),
            log: log.to_path_buf(),
            tail: String::new(),
        })?;
    let record = ProcessRecord { name: name.to_string(), pid: child.id(), binary: binary.to_path_buf(), log: log.to_path_buf() };
    tracing::debug!(component = name, pid = record.pid, "started");
    Ok((child, record))
}

/// True when `pid` is alive, not a zombie, and still runs the recorded binary; a recycled pid
/// belongs to someone else and must never be signalled.
pub fn is_ours(rec: &ProcessRecord) -> bool {
    let proc_dir = format!("/proc/{}", rec.pid);
    let Ok(stat) = std::fs::read_to_string(format!("{proc_dir}/stat")) else {
        return false;
    };
    // The state letter follows the parenthesised command name, which may itself contain ')'.
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
    if matches!(state, Some("Z") | Some("X")) {
        return false;
    }
    let Ok(cmdline) = std::fs::read(format!("{proc_dir}/cmdline")) else {
        return false;
    };
    let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
    argv0 == rec.binary.as_os_str().as_encoded_bytes()
}

fn signal(pid: u32, sig: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) has no memory-safety preconditions; pid is positive, so exactly one process.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// SIGTERM, then SIGKILL after `grace`; returns true if the process is gone afterwards.
pub fn stop(rec: &ProcessRecord, grace: Duration) -> bool {
    if !is_ours(rec) {
        return true;
    }
    signal(rec.pid, libc::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if !is_ours(rec) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    tracing::warn!(component = %rec.name, pid = rec.pid, "did not exit on SIGTERM; sending SIGKILL");
    signal(rec.pid, libc::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if !is_ours(rec) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// The last `lines` lines of a log file (best effort; an unreadable log gives a note instead).
pub fn log_tail(log: &Path, lines: usize) -> String {
    match std::fs::read(log) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", log.display()),
    }
}

/// A free TCP port on 127.0.0.1. The listener is dropped before the component binds the port,
/// so another process could take it in between; components then fail with a clear log line.
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0)).map_err(ClusterError::io("finding a free port on 127.0.0.1"))?;
    Ok(l.local_addr().map_err(ClusterError::io("finding a free port on 127.0.0.1"))?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sleeper(dir: &Path) -> (Child, ProcessRecord) {
        let sleep = Path::new("/bin/sleep");
        spawn("sleeper", sleep, &["30".to_string()], &dir.join("sleeper.log")).expect("spawn sleep")
    }

    #[test]
    fn recognises_and_stops_own_process_only() {
        let dir = std::env::temp_dir().join(format!("fakegpu-cluster-proc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (mut child, rec) = sleeper(&dir);
        // Until the child has exec'd, /proc/<pid>/exe still names the parent.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !is_ours(&rec) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(is_ours(&rec));
        // Same pid, other binary: what a recycled pid looks like; must not be claimed.
        let other = ProcessRecord { binary: "/bin/true".into(), ..rec.clone() };
        assert!(!is_ours(&other));
        assert!(stop(&other, Duration::from_millis(100)), "a foreign pid counts as gone");
        assert!(is_ours(&rec), "stop on a foreign record must not signal the process");
        // The exited child is a zombie until reaped below; is_ours already treats it as gone.
        assert!(stop(&rec, Duration::from_secs(5)));
        let status = child.wait().unwrap();
        assert!(!status.success());
        assert!(!is_ours(&rec));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn log_tail_keeps_last_lines() {
        let dir = std::env::temp_dir().join(format!("fakegpu-cluster-tail-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("x.log");
        std::fs::write(&log, (1..=30).map(|i| format!("line {i}\n")).collect::<String>()).unwrap();
        assert_eq!(log_tail(&log, 2), "line 29\nline 30");
        assert!(log_tail(&dir.join("missing.log"), 2).starts_with("(cannot read"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
