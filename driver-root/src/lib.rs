//! Lays the mock backend's driver root ([`fakegpu_model::driver_root`]) on disk, and takes
//! away exactly what it laid: the materialiser behind `fakegpu driver-root install|remove`
//! and the node agent `fake-gpu-operator nvml-mock-agent`.
//!
//! Every path install creates is listed in a manifest in the root before it is created, so that
//! `remove` (or a later install) finds it even after an interrupted run; a path that exists
//! and no manifest lists is never overwritten or removed. Files, links and device nodes are
//! made under a temporary name and renamed into place, so a reader sees the old entry or the
//! new one, never half a file.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use fakegpu_model::config::{self, NodeConfigFile, ProfileRef};
pub use fakegpu_model::driver_root::Majors;
use fakegpu_model::driver_root::{self, Artifact, Content, Entry, Input};
use fakegpu_model::mig::MigLayout;
use fakegpu_model::{state_file, SimulatedNode};

/// The manifest's name in the root.
pub const MANIFEST: &str = ".fakegpu-driver-root.json";

/// Why a root could not be laid or removed. Refusals name the path and what protects it.
#[derive(Debug, Error)]
pub enum Error {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Config(#[from] fakegpu_model::ConfigError),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error("{0}")]
    Other(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// What failed, said where it failed (as `anyhow`'s context reads).
trait Ctx<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Ctx<T> for std::result::Result<T, std::io::Error> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io { context: what(), source })
    }
}

impl<T> Ctx<T> for std::result::Result<T, serde_json::Error> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::Other(format!("{}: {e}", what())))
    }
}

impl<T> Ctx<T> for Option<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.ok_or_else(|| Error::Other(what()))
    }
}

macro_rules! refuse {
    ($($arg:tt)*) => {
        return Err(Error::Refused(format!($($arg)*)))
    };
}

/// What [`install`] lays, and where.
#[derive(Debug, Clone)]
pub struct Install {
    /// The driver root (upstream's path is /var/lib/nvml-mock/driver).
    pub root: PathBuf,
    /// The node config (profile, GPUs, node name; docs/nvml-library.md).
    pub config: PathBuf,
    /// The node name, over the config's (the node agent's `NODE_NAME`).
    pub node: Option<String>,
    pub sources: Sources,
    /// Lay the char device nodes under dev/ (needs root).
    pub device_nodes: bool,
    /// Also write the CDI spec for the root to this file (removed with the root).
    pub cdi_spec: Option<PathBuf>,
    /// The root as the CDI spec's readers see it (the host's path, where install runs in a
    /// container that sees the host under a mount); default: the root.
    pub cdi_root: Option<String>,
    pub majors: Majors,
}

/// What [`install`] laid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Laid {
    pub root: PathBuf,
    pub entries: usize,
    pub gpus: usize,
    pub profile: String,
    pub node: String,
}

impl Sources {
    /// The built files in `dir` (`libnvidia_ml.so` or `libnvidia-ml.so.1`, `libcuda.so` or
    /// `libcuda.so.1`), nvidia-smi in `dir` unless `smi` names it.
    pub fn from_dir(dir: &Path, smi: Option<&Path>) -> Result<Sources> {
        let first = |names: &[&str]| {
            names
                .iter()
                .map(|n| dir.join(n))
                .find(|p| p.is_file())
                .ctx(|| format!("{}: none of {} is there", dir.display(), names.join(", ")))
        };
        let smi = match smi {
            Some(p) if p.is_file() => p.to_path_buf(),
            Some(p) => return Err(Error::Other(format!("{}: no such file", p.display()))),
            None => first(&["nvidia-smi"])?,
        };
        Ok(Sources { nvml: first(&["libnvidia_ml.so", "libnvidia-ml.so.1"])?, cuda: first(&["libcuda.so", "libcuda.so.1"])?, smi })
    }
}

/// What install made: entries (relative to the root), directories it created (relative; `""`
/// is the root itself) and files outside the root (absolute: the CDI spec).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    entries: BTreeSet<String>,
    dirs: BTreeSet<String>,
    #[serde(default)]
    outside: BTreeSet<PathBuf>,
}

/// The built files install copies.
#[derive(Debug, Clone)]
pub struct Sources {
    pub nvml: PathBuf,
    pub cuda: PathBuf,
    pub smi: PathBuf,
}

/// The node config as it goes into the root: the node name pinned (a process in a container
/// has another host name, and identities derive from it) and a profile file inlined (a path
/// would not resolve from the config's new place).
fn root_config(path: &Path, node: Option<&str>) -> Result<(NodeConfigFile, SimulatedNode)> {
    let origin = path.to_str().ctx(|| format!("{}: the path is not valid UTF-8", path.display()))?.to_string();
    let file = config::read_config_file(path)?;
    let node = node.map(str::to_string);
    let env = move |k: &str| match k {
        config::ENV_CONFIG => Some(origin.clone()),
        config::ENV_NODE => node.clone(),
        _ => None,
    };
    let spec = config::resolve(&env, &config::host_name())?;
    let mut written = file;
    written.node = Some(spec.node_name.clone());
    if matches!(&written.profile, Some(ProfileRef::Named(p)) if p.contains('/') || p.ends_with(".json")) {
        written.profile = Some(ProfileRef::Inline(Box::new(spec.profile.clone())));
        written.overrides = None;
    }
    Ok((written, SimulatedNode::new(spec)))
}

/// The MIG layouts of the live state in the root that `opts` lays (what the next install would
/// lay capability files and CDI devices for): a caller that keeps a root compares it with what
/// it laid to know when to lay again.
pub fn live_mig(opts: &Install) -> Result<BTreeMap<u32, MigLayout>> {
    let (_, node) = root_config(&opts.config, opts.node.as_deref())?;
    applied_mig(&opts.root, &node)
}

/// The applied MIG layouts from the live state the libraries will read (beside the config in
/// the root), when there is one.
fn applied_mig(root: &Path, node: &SimulatedNode) -> Result<BTreeMap<u32, MigLayout>> {
    let state = root.join(driver_root::lib_dir()).join(config::SELF_CONFIG_DIR).join(state_file::DEFAULT_FILE_NAME);
    if std::fs::symlink_metadata(&state).is_err() {
        return Ok(BTreeMap::new());
    }
    let state = state_file::read_checked(&state, &node.spec).map_err(|e| Error::Other(e.to_string()))?;
    Ok(state.gpus.iter().filter_map(|(k, g)| Some((k.parse().ok()?, g.mig.clone()))).collect())
}

fn read_manifest(root: &Path) -> Result<Option<Manifest>> {
    let path = root.join(MANIFEST);
    match fakegpu_model::file::read_text(&path, fakegpu_model::file::MAX_STATE_BYTES) {
        Ok(text) => Ok(Some(serde_json::from_str(&text).ctx(|| format!("{}: not a driver-root manifest", path.display()))?)),
        Err(fakegpu_model::file::ReadError::NotFound) => Ok(None),
        Err(e) => Err(Error::Other(format!("{}: {e}", path.display()))),
    }
}

fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let tmp = temp_name(path);
    std::fs::write(&tmp, bytes).ctx(|| format!("writing {}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).ctx(|| format!("chmod {}", tmp.display()))?;
    std::fs::rename(&tmp, path).ctx(|| format!("placing {}", path.display()))
}

fn temp_name(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.fakegpu-tmp-{}", std::process::id()))
}

fn write_manifest(root: &Path, manifest: &Manifest) -> Result<()> {
    write_atomic(&root.join(MANIFEST), &serde_json::to_vec_pretty(manifest)?, 0o644)
}

/// Creates `dir` and its missing parents under the root, recording each one it creates.
fn make_dirs(root: &Path, rel: &Path, made: &mut BTreeSet<String>) -> Result<()> {
    let mut cur = PathBuf::new();
    for part in rel.components() {
        cur.push(part);
        let full = root.join(&cur);
        match std::fs::symlink_metadata(&full) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => refuse!("{}: exists and is not a directory", full.display()),
            Err(_) => {
                std::fs::create_dir(&full).ctx(|| format!("creating {}", full.display()))?;
                made.insert(cur.to_string_lossy().into_owned());
            }
        }
    }
    Ok(())
}

fn mknod(path: &Path, mode: u32, major: u32, minor: u32) -> Result<()> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|e| Error::Other(format!("{}: {e}", path.display())))?;
    // SAFETY: a valid NUL-terminated path; makedev and mknod have no other preconditions.
    let rc = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | mode, libc::makedev(major, minor)) };
    if rc != 0 {
        refuse!("mknod {} c {major} {minor}: {}", path.display(), std::io::Error::last_os_error());
    }
    // mknod applies the umask; the driver's modes are exact.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).ctx(|| format!("chmod {}", path.display()))
}

/// Lays one entry at `full` under a temporary name, then renames it into place.
fn lay(full: &Path, entry: &Entry, sources: &Sources) -> Result<()> {
    let tmp = temp_name(full);
    let _ = std::fs::remove_file(&tmp);
    match &entry.content {
        Content::Text(text) => return write_atomic(full, text.as_bytes(), entry.mode),
        Content::Bytes(bytes) => return write_atomic(full, bytes, entry.mode),
        Content::Copy(artifact) => {
            let from = match artifact {
                Artifact::Nvml => &sources.nvml,
                Artifact::Cuda => &sources.cuda,
                Artifact::NvidiaSmi => &sources.smi,
            };
            std::fs::copy(from, &tmp).ctx(|| format!("copying {} to {}", from.display(), tmp.display()))?;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(entry.mode)).ctx(|| format!("chmod {}", tmp.display()))?;
        }
        Content::Symlink(target) => {
            std::os::unix::fs::symlink(target, &tmp).ctx(|| format!("linking {}", tmp.display()))?;
        }
        Content::CharDevice { major, minor } => mknod(&tmp, entry.mode, *major, *minor)?,
    }
    std::fs::rename(&tmp, full).ctx(|| format!("placing {}", full.display()))
}

/// Removes one entry install made, if it is still there; never follows a link and never
/// removes a directory.
fn unlay(full: &Path) -> Result<()> {
    match std::fs::symlink_metadata(full) {
        Ok(m) if m.is_dir() => refuse!("{}: the manifest lists it as a file, but it is a directory; left alone", full.display()),
        Ok(_) => std::fs::remove_file(full).ctx(|| format!("removing {}", full.display())),
        Err(_) => Ok(()),
    }
}

/// Lays the driver root `opts` describes; what it laid, for a summary.
pub fn install(opts: &Install) -> Result<Laid> {
    let (config_file, node) = root_config(&opts.config, opts.node.as_deref())?;
    let sources = &opts.sources;
    // SAFETY: geteuid has no preconditions.
    let root_user = unsafe { libc::geteuid() } == 0;
    if opts.device_nodes && !root_user {
        refuse!("creating the device nodes under {}/dev needs root (mknod); run as root or pass --no-device-nodes", opts.root.display());
    }
    let mut made_root = BTreeSet::new();
    if !opts.root.exists() {
        std::fs::create_dir_all(&opts.root).ctx(|| format!("creating {}", opts.root.display()))?;
        made_root.insert(String::new());
    }
    let root = opts.root.canonicalize().ctx(|| format!("resolving {}", opts.root.display()))?;
    let old = read_manifest(&root)?.unwrap_or_default();
    let mig = applied_mig(&root, &node)?;
    let config_json = serde_json::to_string_pretty(&config_file)? + "\n";
    let input = Input { node: &node, mig: &mig, config_json: &config_json, majors: opts.majors };
    let entries: Vec<Entry> = driver_root::entries(&input)
        .into_iter()
        .filter(|e| opts.device_nodes || !matches!(e.content, Content::CharDevice { .. }))
        .collect();

    // Nothing that exists and is not ours is touched.
    for e in &entries {
        let full = root.join(&e.path);
        if std::fs::symlink_metadata(&full).is_ok() && !old.entries.contains(&e.path) {
            refuse!("{}: exists and was not laid by `fakegpu driver-root install`; refusing to replace it", full.display());
        }
    }
    let outside: BTreeSet<PathBuf> = opts.cdi_spec.iter().cloned().collect();
    for path in &outside {
        if std::fs::symlink_metadata(path).is_ok() && !old.outside.contains(path) {
            refuse!("{}: exists and was not written by `fakegpu driver-root install`; refusing to replace it", path.display());
        }
    }

    // The manifest first lists everything old and new, so an interrupted run can be removed.
    let mut manifest = Manifest {
        entries: old.entries.iter().cloned().chain(entries.iter().map(|e| e.path.clone())).collect(),
        dirs: old.dirs.iter().cloned().chain(made_root).collect(),
        outside: old.outside.union(&outside).cloned().collect(),
    };
    write_manifest(&root, &manifest)?;
    let mut dirs = manifest.dirs.clone();
    let result = (|| -> Result<()> {
        for e in &entries {
            let rel = Path::new(&e.path);
            if let Some(parent) = rel.parent() {
                make_dirs(&root, parent, &mut dirs)?;
            }
            lay(&root.join(rel), e, sources)?;
        }
        if let Some(path) = &opts.cdi_spec {
            let host_root = opts.cdi_root.clone().unwrap_or_else(|| root.to_string_lossy().into_owned());
            let spec = driver_root::cdi_spec(&input, &host_root);
            write_atomic(path, (serde_json::to_string_pretty(&spec)? + "\n").as_bytes(), 0o644)?;
        }
        Ok(())
    })();
    manifest.dirs = dirs;
    if let Err(e) = result {
        // Keep everything listed so that `remove` takes it away.
        write_manifest(&root, &manifest)?;
        return Err(e);
    }
    // Entries of the last install that this one no longer has (a MIG layout undone).
    let now: BTreeSet<String> = entries.iter().map(|e| e.path.clone()).collect();
    for stale in old.entries.difference(&now) {
        unlay(&inside(&root, stale)?)?;
    }
    for stale in old.outside.difference(&outside) {
        unlay(stale)?;
    }
    // Directories only stale entries lived in (a GPU's MIG capabilities) go with them.
    manifest.dirs = prune_dirs(&root, &manifest.dirs, false)?;
    manifest.entries = now;
    manifest.outside = outside;
    write_manifest(&root, &manifest)?;
    Ok(Laid {
        root,
        entries: manifest.entries.len(),
        gpus: node.gpus.len(),
        profile: node.spec.profile.name.clone(),
        node: node.spec.node_name.clone(),
    })
}

/// Removes what [`install`] laid in `root`; returns the directories install made that were
/// left because they hold what it did not lay.
pub fn remove(root: &Path) -> Result<Vec<PathBuf>> {
    let Some(manifest) = read_manifest(root)? else {
        refuse!("{}: no {MANIFEST} here; nothing that `fakegpu driver-root install` laid", root.display());
    };
    // Every path is checked before anything is removed, so a refusal leaves the root whole.
    let paths = manifest.entries.iter().map(|rel| inside(root, rel)).collect::<Result<Vec<_>>>()?;
    for path in &paths {
        unlay(path)?;
    }
    for path in &manifest.outside {
        unlay(path)?;
    }
    // What the libraries and the operator keep beside the config (the live state, its `.seq`),
    // when install made the directory they are in.
    for rel in driver_root::runtime_files() {
        if manifest.dirs.iter().any(|d| d.is_empty() || rel.starts_with(&format!("{d}/"))) {
            unlay(&inside(root, &rel)?)?;
        }
    }
    std::fs::remove_file(root.join(MANIFEST)).ctx(|| format!("removing {}", root.join(MANIFEST).display()))?;
    Ok(prune_dirs(root, &manifest.dirs, true)?.into_iter().map(|left| root.join(left)).collect())
}

/// `root/rel` for a manifest path: refused when it leaves the root by `..`, an absolute path,
/// or a directory on the way that is now a symlink (removing through it would reach outside).
fn inside(root: &Path, rel: &str) -> Result<PathBuf> {
    let path = Path::new(rel);
    if path.components().any(|c| !matches!(c, std::path::Component::Normal(_))) {
        refuse!("{}: manifest path `{rel}` leaves the root; refusing", root.display());
    }
    let mut cur = root.to_path_buf();
    for part in path.parent().into_iter().flat_map(Path::components) {
        cur.push(part);
        if std::fs::symlink_metadata(&cur).is_ok_and(|m| m.file_type().is_symlink()) {
            refuse!("{}: is now a symlink; refusing to remove `{rel}` through it", cur.display());
        }
    }
    Ok(root.join(path))
}

/// Removes the directories install made that are empty now, deepest first, and returns the
/// ones left. `strays`: also remove temporary names an interrupted install left in them (not
/// while installing: another install may be writing them).
fn prune_dirs(root: &Path, dirs: &BTreeSet<String>, strays: bool) -> Result<BTreeSet<String>> {
    let mut order: Vec<&String> = dirs.iter().collect();
    order.sort_by_key(|d| std::cmp::Reverse(Path::new(d.as_str()).components().count()));
    let mut left = BTreeSet::new();
    for rel in order {
        let full = if rel.is_empty() { root.to_path_buf() } else { inside(root, rel)? };
        if strays {
            if let Ok(listing) = std::fs::read_dir(&full) {
                for stray in listing.flatten() {
                    let is_dir = stray.file_type().is_ok_and(|t| t.is_dir());
                    if stray.file_name().to_string_lossy().contains(".fakegpu-tmp-") && !is_dir {
                        let _ = std::fs::remove_file(stray.path());
                    }
                }
            }
        }
        // remove_dir only takes an empty directory: anything in it keeps it.
        if std::fs::remove_dir(&full).is_err() && std::fs::symlink_metadata(&full).is_ok() {
            left.insert(rel.clone());
        }
    }
    Ok(left)
}
