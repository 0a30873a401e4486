//! The run directory's `state.json`: which processes `up` started (pid + binary, so `down` can
//! tell them from a recycled pid), the ports, and what was asked for (pool, profile, gpus).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{ClusterError, Result};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProcessRecord {
    pub name: String,
    pub pid: u32,
    pub binary: PathBuf,
    pub log: PathBuf,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct State {
    /// Processes in start order; `down` stops them in reverse.
    pub processes: Vec<ProcessRecord>,
    pub ports: BTreeMap<String, u16>,
    pub bin_dir: PathBuf,
    pub kubeconfig: PathBuf,
    pub api_server: String,
    pub nodes: u32,
    pub pool: String,
    pub profile: Option<String>,
    pub gpus: Option<u32>,
    /// False until every component and node was Ready.
    pub ready: bool,
    /// The real node's host changes (`up --real-node`), for `down` to undo.
    #[serde(default)]
    pub real_node: Option<crate::realnode::NodeState>,
}

impl State {
    pub fn path(run_dir: &Path) -> PathBuf {
        run_dir.join("state.json")
    }

    /// `Ok(None)` when there is no state file (no cluster started from this run dir).
    pub fn load(run_dir: &Path) -> Result<Option<State>> {
        let path = Self::path(run_dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(ClusterError::io(format!("reading {}", path.display()))(e)),
        };
        serde_json::from_str(&text).map(Some).map_err(|source| ClusterError::State { path, source })
    }

    /// Written via a temp file and rename so a concurrent `status` never reads half a file.
    pub fn save(&self, run_dir: &Path) -> Result<()> {
        let path = Self::path(run_dir);
        let tmp = run_dir.join("state.json.tmp");
        let text = serde_json::to_string_pretty(self).map_err(|source| ClusterError::State { path: path.clone(), source })?;
        std::fs::write(&tmp, text).map_err(ClusterError::io(format!("writing {}", tmp.display())))?;
        std::fs::rename(&tmp, &path).map_err(ClusterError::io(format!("writing {}", path.display())))
    }

    /// Records that are still running the binary they were started from.
    pub fn alive(&self) -> Vec<&ProcessRecord> {
        self.processes.iter().filter(|p| crate::process::is_ours(p)).collect()
    }
}
