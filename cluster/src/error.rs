//! Errors of the cluster harness; each names the component or file it concerns.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("control-plane binaries not found: {0}")]
    BinariesMissing(String),
    #[error("building the control-plane binaries failed (exit {code:?}); see the output above")]
    BuildFailed { code: Option<i32> },
    #[error("a cluster is already running (run dir {run_dir}); run `fakegpu cluster down` first")]
    AlreadyRunning { run_dir: PathBuf },
    #[error("{component} failed to start: {reason}\n--- last lines of {log} ---\n{tail}")]
    ComponentFailed { component: String, reason: String, log: PathBuf, tail: String },
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("state file {path}: {source}")]
    State {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("certificate generation: {0}")]
    Pki(#[from] rcgen::Error),
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    #[error("real node: {0}")]
    RealNode(String),
    #[error("timed out after {secs} s waiting for {what}")]
    Timeout { what: String, secs: u64 },
}

impl ClusterError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ClusterError {
        let what = what.into();
        move |source| ClusterError::Io { what, source }
    }
}

pub type Result<T, E = ClusterError> = std::result::Result<T, E>;
