//! gRPC over unix sockets: binding a server socket (replacing a stale one) and dialing one.
//! Every server connection goes through [`FixAuthority`]: the kubelet sends the socket path as
//! `:authority`, which h2 would refuse.

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};
use tokio_stream::wrappers::UnixListenerStream;
use tokio_stream::{Stream, StreamExt};
use tonic::transport::{Channel, Endpoint, Uri};

use super::authority::FixAuthority;

/// Binds `path`, replacing whatever socket file was there (a previous run's). The socket is
/// bound and listening under a temporary name and then renamed into place: the kubelet dials a
/// plugin socket as soon as the file appears, and `bind` creates the file before `listen`, so a
/// socket bound in place can refuse that first connection.
pub fn bind(path: &Path) -> std::io::Result<impl Stream<Item = std::io::Result<FixAuthority<UnixStream>>> + Unpin + Send + 'static> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "socket path has no file name"))?;
    let staging = dir.join(format!(".{}.{}.tmp", name.to_string_lossy(), std::process::id()));
    let _ = std::fs::remove_file(&staging);
    let listener = UnixListener::bind(&staging)?;
    if let Err(e) = std::fs::rename(&staging, path) {
        let _ = std::fs::remove_file(&staging);
        return Err(e);
    }
    Ok(UnixListenerStream::new(listener).map(|conn| conn.map(FixAuthority::new)))
}

/// A channel that dials `path` (the URI is a placeholder tonic requires).
pub async fn connect(path: &Path) -> Result<Channel, tonic::transport::Error> {
    let path: PathBuf = path.to_path_buf();
    Endpoint::from_static("http://[::]:50051")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
}

/// The (device, inode, change time) of a file, to notice it being recreated (a new file
/// may reuse the inode number); None when absent.
pub fn file_id(path: &Path) -> Option<(u64, u64, i64, i64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino(), m.ctime(), m.ctime_nsec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bind_replaces_a_stale_socket_and_listens_once_the_path_exists() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plugin.sock");
        std::fs::write(&path, b"stale").unwrap();
        let _incoming = bind(&path).unwrap();
        // The path only ever names a listening socket: connecting right away succeeds.
        UnixStream::connect(&path).await.expect("listening as soon as the path exists");
        let names: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["plugin.sock"], "no staging file left behind");
    }
}
