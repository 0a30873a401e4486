//! Storing the live node state: the JSON file, its generation word, and the rules that
//! make concurrent access safe.
//!
//! * `<state>` holds the JSON ([`crate::state::NodeState`]). Writers never modify it in
//!   place: they write `<state>.tmp.<pid>` and `rename` it over, so a reader opens either
//!   the old file or the new one, never a torn one.
//! * `<state>.seq` is a 64-byte file whose first 4 bytes are a native-endian `u32`
//!   generation. A writer takes `flock(LOCK_EX)` on it (writers are serialized), reads,
//!   changes and renames the JSON, then increments the generation and `FUTEX_WAKE`s
//!   every waiter. Readers map it shared and compare one word per call; they re-read the
//!   JSON only when it changed, and event waiters `FUTEX_WAIT` on it (no polling).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::config::NodeSpec;
use crate::file::{self, ReadError};
use crate::state::{self as node_state, NodeState, Now, StateError};

pub const ENV_STATE: &str = "FAKEGPU_STATE";
/// File name of the state beside the node config.
pub const DEFAULT_FILE_NAME: &str = "fakegpu-state.json";
const SEQ_LEN: usize = 64;

/// Where the state lives: `FAKEGPU_STATE`, else `fakegpu-state.json` beside the node config
/// (`FAKEGPU_CONFIG`); `None` when neither is set (then there is no live state).
pub fn state_path(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    if let Some(p) = env(ENV_STATE).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let config = PathBuf::from(env(crate::config::ENV_CONFIG).filter(|p| !p.is_empty())?);
    Some(config.parent().map_or_else(|| PathBuf::from(DEFAULT_FILE_NAME), |d| d.join(DEFAULT_FILE_NAME)))
}

/// [`state_path`] for a library loading its node: a path naming a FIFO, a device, a directory
/// or anything else that is not a regular file (or no file yet) is refused with the reason, so
/// that no reader blocks on it or floods memory from it. Both fake libraries load through this.
pub fn checked_state_path(env: &dyn Fn(&str) -> Option<String>) -> Result<Option<PathBuf>, crate::ConfigError> {
    let Some(path) = state_path(env) else { return Ok(None) };
    match file::check_regular(&path) {
        Ok(()) | Err(ReadError::NotFound) => Ok(Some(path)),
        Err(reason) => Err(crate::ConfigError::Invalid {
            origin: path.display().to_string(),
            key: String::new(),
            reason: format!("live state file {reason}"),
        }),
    }
}

/// The current time on both clocks the state uses.
pub fn now() -> Now {
    let unix_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid out-parameter.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    Now { unix_ms, boot_ms: ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000 }
}

/// The inode of this process's pid namespace (`/proc/self/ns/pid`); 0 when it cannot be read.
pub fn pid_namespace() -> u64 {
    std::fs::read_link("/proc/self/ns/pid")
        .ok()
        .and_then(|l| l.to_str()?.strip_prefix("pid:[")?.strip_suffix(']')?.parse().ok())
        .unwrap_or(0)
}

/// Whether the registered process `pid` of pid namespace `namespace` is gone. Only a process of
/// this process's own namespace can be checked; any other counts as running.
pub fn process_exited(pid: u32, namespace: u64) -> bool {
    if namespace != pid_namespace() || pid == 0 || pid > i32::MAX as u32 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists.
    let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
    rc != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

/// Removes the registered processes that have exited (see [`crate::state::sweep_exited`]);
/// writes the file only when one was found.
pub fn sweep_exited(path: &Path, spec: &NodeSpec) -> Result<bool, UpdateError<std::convert::Infallible>> {
    let ns = pid_namespace();
    let state = read(path)?;
    let any_gone = state.gpus.values().flat_map(|g| &g.processes).any(|p| p.pid_namespace == Some(ns) && process_exited(p.pid, ns));
    if !any_gone {
        return Ok(false);
    }
    update(path, spec, |s| Ok(crate::state::sweep_exited(s, &process_exited)))
}

#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    #[error("{path}: {reason}")]
    Io { path: String, reason: String },
    #[error("{path}: corrupt state: {reason}")]
    Corrupt { path: String, reason: String },
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> StateFileError {
    StateFileError::Io { path: path.display().to_string(), reason: e.to_string() }
}

/// Parses state file contents (empty = no state yet). Checks the format only; see
/// [`parse_checked`] for the values.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<NodeState, StateFileError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(NodeState::default());
    }
    let corrupt = |reason: String| StateFileError::Corrupt { path: path.display().to_string(), reason };
    let state: NodeState = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
    state.check().map_err(|e| corrupt(e.to_string()))?;
    Ok(state)
}

/// Parses state file contents and checks every value against the node
/// ([`crate::state::validate`]): an impossible value makes the file corrupt.
pub fn parse_checked(path: &Path, bytes: &[u8], spec: &NodeSpec) -> Result<NodeState, StateFileError> {
    let state = parse(path, bytes)?;
    node_state::validate(&state, spec).map_err(|e| StateFileError::Corrupt { path: path.display().to_string(), reason: e.to_string() })?;
    Ok(state)
}

/// The file's bytes (never blocking, at most [`file::MAX_STATE_BYTES`]); `None` when missing.
fn read_bytes(path: &Path) -> Result<Option<Vec<u8>>, StateFileError> {
    match file::read_capped(path, file::MAX_STATE_BYTES) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(ReadError::NotFound) => Ok(None),
        Err(e) => Err(io_err(path, e)),
    }
}

/// Reads the state (format checked only); a missing file is the empty state.
pub fn read(path: &Path) -> Result<NodeState, StateFileError> {
    read_bytes(path)?.map_or_else(|| Ok(NodeState::default()), |bytes| parse(path, &bytes))
}

/// Reads the state and checks its values against the node; a missing file is the empty state.
pub fn read_checked(path: &Path, spec: &NodeSpec) -> Result<NodeState, StateFileError> {
    read_bytes(path)?.map_or_else(|| Ok(NodeState::default()), |bytes| parse_checked(path, &bytes, spec))
}

/// A state file that cannot be read or is corrupt, seen by a reader that keeps its last good state.
#[derive(Debug, thiserror::Error)]
#[error("{0}; keeping the last good state")]
pub struct KeptLastGood(pub StateFileError);

/// A long-running reader's view of the state file of the node `spec` (the kubelet plugins,
/// the fake CUDA): the last state that passed [`read_checked`]. An unreadable or corrupt file
/// keeps that state, and the caller hears of it once per bad spell (one log line, not one per
/// poll) until a good file is read again. The fake NVML keeps the same rule in its own
/// lock-free form.
pub struct Follower {
    path: PathBuf,
    spec: NodeSpec,
    last_good: NodeState,
    failing: bool,
}

impl Follower {
    /// Starts from the empty state (no file yet: every GPU idle and healthy).
    pub fn new(path: PathBuf, spec: NodeSpec) -> Follower {
        Follower { path, spec, last_good: NodeState::default(), failing: false }
    }

    /// Reads the file again. `Some` only for the first failure after a good read (or at start):
    /// the one line to log.
    pub fn refresh(&mut self) -> Option<KeptLastGood> {
        match read_checked(&self.path, &self.spec) {
            Ok(state) => {
                self.last_good = state;
                self.failing = false;
                None
            }
            Err(e) => (!std::mem::replace(&mut self.failing, true)).then_some(KeptLastGood(e)),
        }
    }

    /// The last good state.
    pub fn state(&self) -> &NodeState {
        &self.last_good
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn spec(&self) -> &NodeSpec {
        &self.spec
    }
}

pub fn seq_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".seq");
    PathBuf::from(s)
}

/// The shared generation word of a state file.
pub struct Generation {
    word: *const AtomicU32,
    /// The `.seq` descriptor: writers lock and bump through it. Readers close it as soon as the
    /// word is mapped (the mapping keeps the file), so that a reader holds no descriptor.
    file: Option<File>,
}

// SAFETY: the mapping is shared memory accessed only through atomics, and lives as long as self.
unsafe impl Send for Generation {}
unsafe impl Sync for Generation {}

/// Opens `<state>.seq`, creating it when `create`, as a regular file at least [`SEQ_LEN`] long.
/// The companion exists only beside a regular state file (or one not written yet): a path
/// naming a device, FIFO or directory is refused, and so is a `.seq` that is not a regular file.
fn open_seq(state: &Path, create: bool) -> Result<File, StateFileError> {
    match file::check_regular(state) {
        Ok(()) | Err(ReadError::NotFound) => {}
        Err(e) => return Err(io_err(state, e)),
    }
    let path = seq_path(state);
    let nonblock = libc::O_NONBLOCK | libc::O_CLOEXEC;
    let file = if create {
        if let Some(dir) = state.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        }
        OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(0o666).custom_flags(nonblock).open(&path)
    } else {
        OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(nonblock)
            .open(&path)
            .or_else(|_| OpenOptions::new().read(true).custom_flags(nonblock).open(&path))
    }
    .map_err(|e| io_err(&path, e))?;
    let meta = file.metadata().map_err(|e| io_err(&path, e))?;
    if !meta.file_type().is_file() {
        return Err(io_err(&path, "is not a regular file"));
    }
    if (meta.len() as usize) < SEQ_LEN {
        file.set_len(SEQ_LEN as u64).map_err(|e| io_err(&path, e))?;
    }
    Ok(file)
}

/// Maps the generation word of `file` at `at` (replacing what is there) or where the kernel picks.
fn map_seq(file: &File, at: Option<*const AtomicU32>, path: &Path) -> Result<*const AtomicU32, StateFileError> {
    let (addr, fixed) = at.map_or((std::ptr::null_mut(), 0), |a| (a.cast_mut().cast(), libc::MAP_FIXED));
    // SAFETY: mapping SEQ_LEN bytes of a file at least that long; with MAP_FIXED, `addr` is a
    // page this Generation mapped itself. Checked for MAP_FAILED.
    let ptr = unsafe { libc::mmap(addr, SEQ_LEN, libc::PROT_READ, libc::MAP_SHARED | fixed, file.as_raw_fd(), 0) };
    if ptr == libc::MAP_FAILED {
        return Err(io_err(&seq_path(path), std::io::Error::last_os_error()));
    }
    Ok(ptr.cast())
}

impl Generation {
    /// Maps `<state>.seq`, creating it when `create` (writers, and readers that may); see
    /// [`open_seq`] for what is refused.
    pub fn open(state: &Path, create: bool) -> Result<Generation, StateFileError> {
        let file = open_seq(state, create)?;
        let word = map_seq(&file, None, state)?;
        Ok(Generation { word, file: Some(file) })
    }

    /// A reader's mapping of `<state>.seq` (created when this process may), holding no descriptor.
    pub fn open_reader(state: &Path) -> Result<Generation, StateFileError> {
        let file = open_seq(state, true).or_else(|_| open_seq(state, false))?;
        let word = map_seq(&file, None, state)?;
        Ok(Generation { word, file: None })
    }

    /// Lets go of the `.seq` file without moving the word: every waiter is woken and the
    /// mapping is replaced by an anonymous zero page at the same address, so that a thread
    /// still reading the word (a getter racing a shutdown) reads 0 instead of faulting, and
    /// the file is no longer held. [`Generation::reattach`] maps the file there again.
    pub fn detach(&self) {
        self.wake();
        // SAFETY: replaces exactly the page this Generation mapped; MAP_FIXED swaps it in one
        // step under the kernel's mapping lock, so no reader sees the address unmapped.
        unsafe {
            libc::mmap(
                self.word.cast_mut().cast(),
                SEQ_LEN,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        // A waiter that read the word between the first wake and the swap now waits on the new page.
        self.wake();
    }

    /// Maps `<state>.seq` again where [`Generation::detach`] left the zero page.
    pub fn reattach(&self, state: &Path) -> Result<(), StateFileError> {
        let file = open_seq(state, true).or_else(|_| open_seq(state, false))?;
        map_seq(&file, Some(self.word), state).map(|_| ())
    }

    fn wake(&self) {
        // SAFETY: FUTEX_WAKE on the shared word wakes waiters in every process.
        unsafe {
            libc::syscall(libc::SYS_futex, self.word, libc::FUTEX_WAKE, i32::MAX, 0usize, 0usize, 0u32);
        }
    }

    /// The current generation: one atomic load.
    #[inline]
    pub fn load(&self) -> u32 {
        // SAFETY: `word` points into a live shared mapping, 4-byte aligned (page start).
        unsafe { (*self.word).load(Ordering::Acquire) }
    }

    /// Blocks until the generation differs from `seen` or `timeout` passes (or a spurious wake).
    pub fn wait(&self, seen: u32, timeout: Duration) {
        let ts = libc::timespec { tv_sec: timeout.as_secs() as libc::time_t, tv_nsec: timeout.subsec_nanos() as libc::c_long };
        // SAFETY: FUTEX_WAIT (shared) on a word of a live mapping with a valid timespec.
        unsafe {
            libc::syscall(libc::SYS_futex, self.word, libc::FUTEX_WAIT, seen, &ts as *const libc::timespec, 0usize, 0u32);
        }
    }

    /// Increments the generation through the file and wakes every waiter. Only a writer
    /// holding the lock calls this.
    fn bump(&self) -> std::io::Result<()> {
        let next = self.load().wrapping_add(1);
        let bytes = next.to_ne_bytes();
        let file = self.file.as_ref().ok_or_else(|| std::io::Error::other("a reader's mapping cannot write"))?;
        // pwrite keeps the read-only mapping of this process valid; the page cache is shared.
        // SAFETY: writing 4 bytes from a live buffer at offset 0.
        let n = unsafe { libc::pwrite(file.as_raw_fd(), bytes.as_ptr().cast(), 4, 0) };
        if n != 4 {
            return Err(std::io::Error::last_os_error());
        }
        self.wake();
        Ok(())
    }

    fn lock(&self, path: &Path) -> Result<Locked<'_>, StateFileError> {
        let file = self.file.as_ref().ok_or_else(|| io_err(path, "a reader's mapping cannot lock"))?;
        // SAFETY: flock on an open descriptor.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io_err(path, std::io::Error::last_os_error()));
        }
        Ok(Locked(self))
    }
}

impl Drop for Generation {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what open mapped.
        unsafe { libc::munmap(self.word as *mut libc::c_void, SEQ_LEN) };
    }
}

struct Locked<'a>(&'a Generation);

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        if let Some(file) = &self.0.file {
            // SAFETY: releasing the lock taken in `lock`.
            unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_UN) };
        }
    }
}

/// Why an update did not happen: the file, the change itself (`E`), or a result that
/// readers would refuse.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError<E: std::error::Error> {
    #[error(transparent)]
    File(#[from] StateFileError),
    #[error(transparent)]
    Rejected(E),
    #[error("refused: the new state would be invalid: {0}")]
    Invalid(StateError),
}

/// Writes `state` to `path` through a temporary file and a rename.
fn replace(path: &Path, state: &NodeState) -> Result<(), StateFileError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp.{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let text = serde_json::to_vec_pretty(state).map_err(|e| io_err(path, e))?;
    let write = || -> std::io::Result<()> {
        let mut f = OpenOptions::new().write(true).create(true).truncate(true).mode(0o666).open(&tmp)?;
        f.write_all(&text)?;
        f.write_all(b"\n")?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io_err(path, e)
    })
}

/// Serialized read-modify-write of the state of the node `spec` at `path`. `change` returns
/// `Err` to leave the file untouched; the state it sees is never a torn one and always valid
/// for the node. A corrupt file is an error (the writer does not guess); [`reset`] replaces
/// it. A change whose result readers would refuse is not written.
pub fn update<T, E: std::error::Error>(
    path: &Path,
    spec: &NodeSpec,
    change: impl FnOnce(&mut NodeState) -> Result<T, E>,
) -> Result<T, UpdateError<E>> {
    let generation = Generation::open(path, true)?;
    let _locked = generation.lock(path)?;
    let mut state = read_checked(path, spec)?;
    let before = state.clone();
    let out = change(&mut state).map_err(UpdateError::Rejected)?;
    if state != before {
        node_state::validate(&state, spec).map_err(UpdateError::Invalid)?;
        replace(path, &state)?;
        generation.bump().map_err(|e| io_err(&seq_path(path), e))?;
    }
    Ok(out)
}

/// Replaces the state with `state` whatever the file holds (used to recover a corrupt file).
/// `state` must be valid for the node `spec`, as every write.
pub fn reset(path: &Path, spec: &NodeSpec, state: &NodeState) -> Result<(), UpdateError<StateError>> {
    node_state::validate(state, spec).map_err(UpdateError::Invalid)?;
    let generation = Generation::open(path, true)?;
    let _locked = generation.lock(path)?;
    replace(path, state)?;
    Ok(generation.bump().map_err(|e| io_err(&seq_path(path), e))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{self, SetRequest};

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("fakegpu-state-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn path_resolution() {
        let env = |k: &str| match k {
            "FAKEGPU_CONFIG" => Some("/etc/fakegpu/node.json".to_string()),
            _ => None,
        };
        assert_eq!(state_path(&env), Some(PathBuf::from("/etc/fakegpu/fakegpu-state.json")));
        let env2 = |k: &str| (k == "FAKEGPU_STATE").then(|| "/run/s.json".to_string());
        assert_eq!(state_path(&env2), Some(PathBuf::from("/run/s.json")));
        assert_eq!(state_path(&|_| None), None);
    }

    #[test]
    fn updates_bump_the_generation_and_rejections_leave_the_file() {
        let dir = temp_dir("update");
        let path = dir.join("s.json");
        let spec = crate::NodeSpec::builtin("h100", Some(2), "n").unwrap();
        let reader = Generation::open(&path, true).unwrap();
        let g0 = reader.load();
        update(&path, &spec, |s| state::set(s, &spec, 1, &SetRequest { gpu_util: Some(70), ..Default::default() }, now())).unwrap();
        assert_eq!(reader.load(), g0.wrapping_add(1));
        assert_eq!(read(&path).unwrap().gpu(1).unwrap().utilization.gpu, 70);
        let before = std::fs::read(&path).unwrap();
        let r = update(&path, &spec, |s| state::set(s, &spec, 5, &SetRequest::default(), now()));
        assert!(matches!(r, Err(UpdateError::Rejected(_))));
        assert_eq!(std::fs::read(&path).unwrap(), before);
        assert_eq!(reader.load(), g0.wrapping_add(1));
        std::fs::write(&path, b"{not json").unwrap();
        assert!(matches!(read(&path), Err(StateFileError::Corrupt { .. })));
        assert!(matches!(update(&path, &spec, |_| Ok::<_, state::StateError>(())), Err(UpdateError::File(_))));
        reset(&path, &spec, &NodeState::default()).unwrap();
        assert_eq!(read(&path).unwrap(), NodeState::default());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn writers_refuse_what_readers_would_refuse() {
        let dir = temp_dir("refuse");
        let path = dir.join("s.json");
        let spec = crate::NodeSpec::builtin("h100", Some(2), "n").unwrap();
        update(&path, &spec, |s| state::set(s, &spec, 0, &SetRequest { gpu_util: Some(10), ..Default::default() }, now())).unwrap();
        let before = std::fs::read(&path).unwrap();
        // A change that bypasses the operations' own checks is still refused before the write.
        let r = update(&path, &spec, |s| {
            s.gpu_mut(&spec, 1, now())?.utilization.gpu = 1000;
            Ok::<_, state::StateError>(())
        });
        assert!(matches!(&r, Err(UpdateError::Invalid(e)) if e.to_string().contains("gpus.1.utilization.gpu")), "{r:?}");
        assert_eq!(std::fs::read(&path).unwrap(), before);
        let mut bad = NodeState::default();
        bad.gpus.insert("9".into(), Default::default());
        assert!(matches!(reset(&path, &spec, &bad), Err(UpdateError::Invalid(_))));
        // A file another program wrote with an impossible value is corrupt for readers and writers.
        std::fs::write(&path, br#"{"version":1,"gpus":{"0":{"temperature_c":{"value":65535,"at_unix_ms":0}}}}"#).unwrap();
        assert!(matches!(read_checked(&path, &spec), Err(StateFileError::Corrupt { .. })));
        assert!(matches!(update(&path, &spec, |_| Ok::<_, state::StateError>(())), Err(UpdateError::File(_))));
        // Not a regular file: refused, and no `.seq` beside it.
        assert!(read(Path::new("/dev/zero")).is_err());
        assert!(Generation::open(&dir, true).is_err());
        assert!(!seq_path(&dir).exists());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_follower_keeps_the_last_good_state_and_reports_once_per_bad_spell() {
        let dir = temp_dir("follower");
        let path = dir.join("s.json");
        let spec = crate::NodeSpec::builtin("a100-40gb", Some(2), "n").unwrap();
        let mut follower = Follower::new(path.clone(), spec.clone());
        assert!(follower.refresh().is_none(), "no file yet: the empty state");
        assert_eq!(follower.state(), &NodeState::default());
        update(&path, &spec, |s| state::set(s, &spec, 1, &SetRequest { gpu_util: Some(40), ..Default::default() }, now())).unwrap();
        assert!(follower.refresh().is_none());
        let good = follower.state().clone();
        assert_eq!(good.gpu(1).unwrap().utilization.gpu, 40);
        // Valid JSON, impossible for this node (GPU 7 of 2; MIG ids no table has): corrupt.
        for bad in [
            r#"{"version":1,"gpus":{"7":{}}}"#,
            r#"{"version":1,"gpus":{"0":{"mig":{"current":true,"pending":true,"gpu_instances":[{"id":842,"profile":0,"placement":{"start":0,"size":1},"compute_instances":[]}]}}}}"#,
            "{not json",
        ] {
            std::fs::write(&path, bad).unwrap();
            let first = follower.refresh();
            let line = first.map(|e| e.to_string()).unwrap_or_default();
            assert!(line.contains("corrupt state") && line.ends_with("keeping the last good state"), "{bad}: {line}");
            assert!(line.contains(path.to_str().unwrap()), "{line}");
            assert!(follower.refresh().is_none(), "one line per bad spell");
            assert_eq!(follower.state(), &good, "{bad}");
            // A good file ends the spell.
            update_raw(&path, &good);
            assert!(follower.refresh().is_none());
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    fn update_raw(path: &Path, state: &NodeState) {
        std::fs::write(path, serde_json::to_vec(state).unwrap()).unwrap();
    }

    #[test]
    fn a_detached_reader_reads_zero_and_sees_writes_again_once_reattached() {
        let dir = temp_dir("detach");
        let path = dir.join("s.json");
        let spec = crate::NodeSpec::builtin("h100", Some(1), "n").unwrap();
        let reader = Generation::open_reader(&path).unwrap();
        update(&path, &spec, |s| state::inject(s, &spec, 0, &state::Fault::Xid(79), now())).unwrap();
        let g = reader.load();
        assert_ne!(g, 0);
        reader.detach();
        assert_eq!(reader.load(), 0, "the zero page, not the file");
        update(&path, &spec, |s| state::inject(s, &spec, 0, &state::Fault::Xid(48), now())).unwrap();
        assert_eq!(reader.load(), 0);
        reader.reattach(&path).unwrap();
        assert_eq!(reader.load(), g.wrapping_add(1));
        // A reader cannot write through its mapping (it holds no descriptor).
        assert!(reader.lock(&path).is_err());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_waiter_is_woken_by_a_write() {
        let dir = temp_dir("wake");
        let path = dir.join("s.json");
        let spec = crate::NodeSpec::builtin("h100", Some(1), "n").unwrap();
        let gen = Generation::open(&path, true).unwrap();
        let seen = gen.load();
        let p2 = path.clone();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            update(&p2, &spec, |s| state::inject(s, &spec, 0, &state::Fault::Xid(79), now())).unwrap();
        });
        let start = std::time::Instant::now();
        while gen.load() == seen && start.elapsed() < Duration::from_secs(5) {
            gen.wait(seen, Duration::from_secs(5));
        }
        assert!(start.elapsed() < Duration::from_secs(2), "woken by the write, not the timeout");
        writer.join().unwrap();
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn concurrent_writers_are_serialized() {
        let dir = temp_dir("serial");
        let path = dir.join("s.json");
        let spec = crate::NodeSpec::builtin("h100", Some(1), "n").unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let (path, spec) = (path.clone(), spec.clone());
                std::thread::spawn(move || {
                    for k in 0..25 {
                        update(&path, &spec, |s| state::inject(s, &spec, 0, &state::Fault::Xid(t * 100 + k + 1), now())).unwrap();
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        let s = read(&path).unwrap();
        assert_eq!(s.gpu(0).unwrap().faults.xids.len(), 100, "no update lost");
        let _ = std::fs::remove_dir_all(dir);
    }
}
