//! `fakegpu driver-root install|remove`: lays the mock backend's driver root
//! ([`fakegpu_model::driver_root`]) on disk, and takes away exactly what it laid.
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

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};

use fakegpu_model::config::{self, NodeConfigFile, ProfileRef};
use fakegpu_model::driver_root::{self, Artifact, Content, Entry, Input, Majors};
use fakegpu_model::mig::MigLayout;
use fakegpu_model::{state_file, SimulatedNode};

/// The manifest's name in the root.
pub const MANIFEST: &str = ".fakegpu-driver-root.json";

#[derive(Subcommand)]
pub enum DriverRootCmd {
    /// Lay a driver root: /proc/driver/nvidia files, device nodes, the fake libraries under
    /// their driver names, nvidia-smi and the node config the libraries find beside themselves.
    Install(InstallArgs),
    /// Remove everything `install` laid in a root (and nothing else).
    Remove(RemoveArgs),
}

#[derive(Args)]
pub struct InstallArgs {
    /// The driver root (upstream's path is /var/lib/nvml-mock/driver).
    #[arg(long)]
    root: PathBuf,
    /// The node config (profile, GPUs, node name; docs/nvml-library.md).
    #[arg(long)]
    config: PathBuf,
    /// A directory holding the built libnvidia_ml.so, libcuda.so and nvidia-smi (default:
    /// where `fakegpu lib-dir` finds the libraries; nvidia-smi beside this executable).
    #[arg(long)]
    lib_dir: Option<PathBuf>,
    /// Lay no device nodes under dev/ (creating them needs root).
    #[arg(long)]
    no_device_nodes: bool,
    /// Also write the CDI spec for the root to this file (removed with the root).
    #[arg(long)]
    cdi_spec: Option<PathBuf>,
    /// Majors for nvidia-uvm and nvidia-caps (dynamic on a real host).
    #[arg(long, default_value_t = Majors::default().uvm)]
    uvm_major: u32,
    #[arg(long, default_value_t = Majors::default().caps)]
    caps_major: u32,
}

#[derive(Args)]
pub struct RemoveArgs {
    #[arg(long)]
    root: PathBuf,
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

pub fn run(cmd: &DriverRootCmd) -> Result<i32> {
    match cmd {
        DriverRootCmd::Install(args) => install(args).map(|_| 0),
        DriverRootCmd::Remove(args) => remove(&args.root).map(|_| 0),
    }
}

/// The built files install copies.
struct Sources {
    nvml: PathBuf,
    cuda: PathBuf,
    smi: PathBuf,
}

fn sources(lib_dir: Option<&Path>) -> Result<Sources> {
    let first = |dir: &Path, names: &[&str]| names.iter().map(|n| dir.join(n)).find(|p| p.is_file());
    if let Some(dir) = lib_dir {
        let need = |names: &[&str]| first(dir, names).with_context(|| format!("{}: none of {} is there", dir.display(), names.join(", ")));
        return Ok(Sources {
            nvml: need(&["libnvidia_ml.so", "libnvidia-ml.so.1"])?,
            cuda: need(&["libcuda.so", "libcuda.so.1"])?,
            smi: need(&["nvidia-smi"])?,
        });
    }
    let nvml = crate::library::find_library()?;
    let cuda = crate::library::find_cuda_library(&nvml)?;
    let exe = std::env::current_exe().context("cannot locate the fakegpu executable")?;
    let dirs: Vec<PathBuf> = [exe.parent(), nvml.parent()].into_iter().flatten().map(Path::to_path_buf).collect();
    let smi = dirs.iter().find_map(|d| first(d, &["nvidia-smi"])).with_context(|| {
        format!("our nvidia-smi was not found beside {} (build it with `cargo build -p nvidia-smi`, or pass --lib-dir)", exe.display())
    })?;
    Ok(Sources { nvml, cuda, smi })
}

/// The node config as it goes into the root: the node name pinned (a process in a container
/// has another host name, and identities derive from it) and a profile file inlined (a path
/// would not resolve from the config's new place).
fn root_config(path: &Path) -> Result<(NodeConfigFile, SimulatedNode)> {
    let origin = path.to_str().with_context(|| format!("{}: the path is not valid UTF-8", path.display()))?.to_string();
    let file = config::read_config_file(path)?;
    let env = move |k: &str| (k == config::ENV_CONFIG).then(|| origin.clone());
    let spec = config::resolve(&env, &config::host_name())?;
    let mut written = file;
    written.node = Some(spec.node_name.clone());
    if matches!(&written.profile, Some(ProfileRef::Named(p)) if p.contains('/') || p.ends_with(".json")) {
        written.profile = Some(ProfileRef::Inline(Box::new(spec.profile.clone())));
        written.overrides = None;
    }
    Ok((written, SimulatedNode::new(spec)))
}

/// The applied MIG layouts from the live state the libraries will read (beside the config in
/// the root), when there is one.
fn applied_mig(root: &Path, node: &SimulatedNode) -> Result<BTreeMap<u32, MigLayout>> {
    let state = root.join(driver_root::lib_dir()).join(config::SELF_CONFIG_DIR).join(state_file::DEFAULT_FILE_NAME);
    if std::fs::symlink_metadata(&state).is_err() {
        return Ok(BTreeMap::new());
    }
    let state = state_file::read_checked(&state, &node.spec)?;
    Ok(state.gpus.iter().filter_map(|(k, g)| Some((k.parse().ok()?, g.mig.clone()))).collect())
}

fn read_manifest(root: &Path) -> Result<Option<Manifest>> {
    let path = root.join(MANIFEST);
    match fakegpu_model::file::read_text(&path, fakegpu_model::file::MAX_STATE_BYTES) {
        Ok(text) => Ok(Some(serde_json::from_str(&text).with_context(|| format!("{}: not a driver-root manifest", path.display()))?)),
        Err(fakegpu_model::file::ReadError::NotFound) => Ok(None),
        Err(e) => bail!("{}: {e}", path.display()),
    }
}

fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let tmp = temp_name(path);
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).with_context(|| format!("chmod {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("placing {}", path.display()))
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
            Ok(_) => bail!("{}: exists and is not a directory", full.display()),
            Err(_) => {
                std::fs::create_dir(&full).with_context(|| format!("creating {}", full.display()))?;
                made.insert(cur.to_string_lossy().into_owned());
            }
        }
    }
    Ok(())
}

fn mknod(path: &Path, mode: u32, major: u32, minor: u32) -> Result<()> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: a valid NUL-terminated path; makedev and mknod have no other preconditions.
    let rc = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | mode, libc::makedev(major, minor)) };
    if rc != 0 {
        bail!("mknod {} c {major} {minor}: {}", path.display(), std::io::Error::last_os_error());
    }
    // mknod applies the umask; the driver's modes are exact.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).with_context(|| format!("chmod {}", path.display()))
}

/// Lays one entry at `full` under a temporary name, then renames it into place.
fn lay(full: &Path, entry: &Entry, sources: &Sources) -> Result<()> {
    let tmp = temp_name(full);
    let _ = std::fs::remove_file(&tmp);
    match &entry.content {
        Content::Text(text) => return write_atomic(full, text.as_bytes(), entry.mode),
        Content::Copy(artifact) => {
            let from = match artifact {
                Artifact::Nvml => &sources.nvml,
                Artifact::Cuda => &sources.cuda,
                Artifact::NvidiaSmi => &sources.smi,
            };
            std::fs::copy(from, &tmp).with_context(|| format!("copying {} to {}", from.display(), tmp.display()))?;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(entry.mode))?;
        }
        Content::Symlink(target) => {
            std::os::unix::fs::symlink(target, &tmp).with_context(|| format!("linking {}", tmp.display()))?;
        }
        Content::CharDevice { major, minor } => mknod(&tmp, entry.mode, *major, *minor)?,
    }
    std::fs::rename(&tmp, full).with_context(|| format!("placing {}", full.display()))
}

/// Removes one entry install made, if it is still there; never follows a link and never
/// removes a directory.
fn unlay(full: &Path) -> Result<()> {
    match std::fs::symlink_metadata(full) {
        Ok(m) if m.is_dir() => bail!("{}: the manifest lists it as a file, but it is a directory; left alone", full.display()),
        Ok(_) => std::fs::remove_file(full).with_context(|| format!("removing {}", full.display())),
        Err(_) => Ok(()),
    }
}

pub fn install(args: &InstallArgs) -> Result<()> {
    let (config_file, node) = root_config(&args.config)?;
    let sources = sources(args.lib_dir.as_deref())?;
    // SAFETY: geteuid has no preconditions.
    let root_user = unsafe { libc::geteuid() } == 0;
    if !args.no_device_nodes && !root_user {
        bail!("creating the device nodes under {}/dev needs root (mknod); run as root or pass --no-device-nodes", args.root.display());
    }
    let mut made_root = BTreeSet::new();
    if !args.root.exists() {
        std::fs::create_dir_all(&args.root).with_context(|| format!("creating {}", args.root.display()))?;
        made_root.insert(String::new());
    }
    let root = args.root.canonicalize().with_context(|| format!("resolving {}", args.root.display()))?;
    let old = read_manifest(&root)?.unwrap_or_default();
    let mig = applied_mig(&root, &node)?;
    let config_json = serde_json::to_string_pretty(&config_file)? + "\n";
    let majors = Majors { uvm: args.uvm_major, caps: args.caps_major };
    let input = Input { node: &node, mig: &mig, config_json: &config_json, majors };
    let entries: Vec<Entry> = driver_root::entries(&input)
        .into_iter()
        .filter(|e| !(args.no_device_nodes && matches!(e.content, Content::CharDevice { .. })))
        .collect();

    // Nothing that exists and is not ours is touched.
    for e in &entries {
        let full = root.join(&e.path);
        if std::fs::symlink_metadata(&full).is_ok() && !old.entries.contains(&e.path) {
            bail!("{}: exists and was not laid by `fakegpu driver-root install`; refusing to replace it", full.display());
        }
    }
    let outside: BTreeSet<PathBuf> = args.cdi_spec.iter().cloned().collect();
    for path in &outside {
        if std::fs::symlink_metadata(path).is_ok() && !old.outside.contains(path) {
            bail!("{}: exists and was not written by `fakegpu driver-root install`; refusing to replace it", path.display());
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
            lay(&root.join(rel), e, &sources)?;
        }
        if let Some(path) = &args.cdi_spec {
            let spec = driver_root::cdi_spec(&input, &root.to_string_lossy());
            write_atomic(path, (serde_json::to_string_pretty(&spec)? + "\n").as_bytes(), 0o644)?;
        }
        Ok(())
    })();
    manifest.dirs = dirs;
    if result.is_err() {
        // Keep everything listed so that `remove` takes it away.
        write_manifest(&root, &manifest)?;
        return result;
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
    eprintln!(
        "fakegpu: driver root {} laid: {} entries, {} GPUs of {} on node {}",
        root.display(),
        manifest.entries.len(),
        node.gpus.len(),
        node.spec.profile.name,
        node.spec.node_name
    );
    Ok(())
}

pub fn remove(root: &Path) -> Result<()> {
    let Some(manifest) = read_manifest(root)? else {
        bail!("{}: no {MANIFEST} here; nothing that `fakegpu driver-root install` laid", root.display());
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
    std::fs::remove_file(root.join(MANIFEST)).with_context(|| format!("removing {}", root.join(MANIFEST).display()))?;
    for left in prune_dirs(root, &manifest.dirs, true)? {
        eprintln!("fakegpu: {} left in place: it holds what install did not lay", root.join(left).display());
    }
    Ok(())
}

/// `root/rel` for a manifest path: refused when it leaves the root by `..`, an absolute path,
/// or a directory on the way that is now a symlink (removing through it would reach outside).
fn inside(root: &Path, rel: &str) -> Result<PathBuf> {
    let path = Path::new(rel);
    if path.components().any(|c| !matches!(c, std::path::Component::Normal(_))) {
        bail!("{}: manifest path `{rel}` leaves the root; refusing", root.display());
    }
    let mut cur = root.to_path_buf();
    for part in path.parent().into_iter().flat_map(Path::components) {
        cur.push(part);
        if std::fs::symlink_metadata(&cur).is_ok_and(|m| m.file_type().is_symlink()) {
            bail!("{}: is now a symlink; refusing to remove `{rel}` through it", cur.display());
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
