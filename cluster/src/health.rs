//! Readiness probes: plain HTTP for etcd and kwok, the admin client for the apiserver, and TLS
//! without verification for the scheduler's and controller-manager's self-signed serving certs.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Child;
use std::time::{Duration, Instant};

use crate::error::{ClusterError, Result};
use crate::state::ProcessRecord;

/// `GET http://127.0.0.1:{port}{path}` answered with 200.
pub fn http_ok(port: u16, path: &str) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap_or(0);
    let head = String::from_utf8_lossy(&buf[..n]);
    head.starts_with("HTTP/1.") && head.split_whitespace().nth(1) == Some("200")
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
pub fn listening(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1)).is_ok()
}

/// `GET path` through `client`, answered with 200 and body "ok". Callers check [`listening`]
/// first, which keeps the connection-refused phase cheap.
pub async fn kube_ok(client: &kube::Client, path: &str) -> bool {
    let Ok(req) = http::Request::get(path).body(Vec::new()) else {
        return false;
    };
    // kube-client's trace layer logs every non-2xx answer at ERROR; a 500 from /readyz is the
    // expected "not yet" here, so the probe runs with tracing silenced.
    use tracing::instrument::WithSubscriber;
    let probe = tokio::time::timeout(Duration::from_secs(3), client.request_text(req));
    matches!(
        probe.with_subscriber(tracing::subscriber::NoSubscriber::default()).await,
        Ok(Ok(body)) if body.trim() == "ok"
    )
}

/// A client for a component's own secure port. Its serving certificate is self-signed by the
/// component at startup, so verification is off; the port is on loopback only.
pub fn component_client(admin: &kube::Config, port: u16) -> Result<kube::Client> {
    let mut cfg = admin.clone();
    cfg.cluster_url =
        format!("https://127.0.0.1:{port}").parse().map_err(|e| ClusterError::InvalidArgument(format!("component url: {e}")))?;
    cfg.accept_invalid_certs = true;
    cfg.root_cert = None;
    Ok(kube::Client::try_from(cfg)?)
}

/// Polls `probe` every 200 ms until it passes, the child exits, or `timeout` passes. Either
/// failure names the component and carries the tail of its log.
pub async fn wait_ready<F, Fut>(rec: &ProcessRecord, child: &mut Child, timeout: Duration, mut probe: F) -> Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(failed(rec, format!("exited with {status}")));
        }
        if probe().await {
            return Ok(start.elapsed());
        }
        if start.elapsed() > timeout {
            return Err(failed(rec, format!("not ready after {} s", timeout.as_secs())));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub fn failed(rec: &ProcessRecord, reason: String) -> ClusterError {
    ClusterError::ComponentFailed {
        component: rec.name.clone(),
        reason,
        log: rec.log.clone(),
        tail: crate::process::log_tail(&rec.log, 25),
    }
}
