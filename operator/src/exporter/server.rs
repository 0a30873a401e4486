//! The HTTP edge of the exporter: `GET /metrics` (the text a closure renders), `GET /healthz`,
//! 404 otherwise. HTTP/1.1 over hyper; nothing else lives here but the body buffer's reuse.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::render::CONTENT_TYPE;

/// Renders the body of one scrape into the (empty) buffer it is given.
pub type Scrape = Arc<dyn Fn(&mut String) + Send + Sync>;

/// The body buffer, reused by the next scrape once the previous response has been sent. The text
/// for 8,000 GPUs is 27 MB: a fresh buffer per scrape would cost page faults on every scrape and
/// leave freed 27 MB blocks that the allocator keeps resident.
#[derive(Default)]
struct Bodies(Mutex<Arc<String>>);

/// A response body that shares the buffer with [`Bodies`] until hyper drops it.
struct Body(Arc<String>);

impl AsRef<[u8]> for Body {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl Bodies {
    fn render(&self, scrape: &Scrape) -> Bytes {
        let mut last = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // Still being sent (a concurrent scrape): render into a new buffer instead.
        let mut text = Arc::get_mut(&mut last).map(std::mem::take).unwrap_or_default();
        text.clear();
        scrape(&mut text);
        *last = Arc::new(text);
        Bytes::from_owner(Body(last.clone()))
    }
}

fn respond(req: &Request<Incoming>, scrape: &Scrape, bodies: &Bodies) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, ctype: &str, body: Bytes| {
        let mut r = Response::new(Full::new(body));
        *r.status_mut() = status;
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_str(ctype).expect("static content type"));
        r
    };
    match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/metrics") => reply(StatusCode::OK, CONTENT_TYPE, bodies.render(scrape)),
        (&Method::GET | &Method::HEAD, "/healthz" | "/readyz") => reply(StatusCode::OK, "text/plain", Bytes::from_static(b"ok\n")),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", Bytes::from_static(b"not found\n")),
    }
}

/// Serves on `listener` until `shutdown` completes.
pub async fn serve(listener: TcpListener, scrape: Scrape, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
    tokio::pin!(shutdown);
    let bodies = Arc::new(Bodies::default());
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => accepted?,
            () = &mut shutdown => return Ok(()),
        };
        let (scrape, bodies) = (scrape.clone(), bodies.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let (scrape, bodies) = (scrape.clone(), bodies.clone());
                async move { Ok::<_, Infallible>(respond(&req, &scrape, &bodies)) }
            });
            if let Err(e) = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await {
                tracing::debug!(%peer, error = %e, "metrics connection");
            }
        });
    }
}

/// Binds `addr` and [`serve`]s.
pub async fn bind_and_serve(addr: SocketAddr, scrape: Scrape, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /metrics");
    serve(listener, scrape, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn get(addr: SocketAddr) -> String {
        let mut conn = std::net::TcpStream::connect(addr).unwrap();
        conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: t\r\n\r\n").unwrap();
        let mut out = String::new();
        conn.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn a_sent_body_buffer_is_reused_by_the_next_scrape() {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        // Each scrape reports the capacity of the buffer it was given, then fills 1 MB.
        let given = Arc::new(AtomicUsize::new(usize::MAX));
        let scrape: Scrape = {
            let given = given.clone();
            Arc::new(move |out: &mut String| {
                given.store(out.capacity(), Ordering::SeqCst);
                assert!(out.is_empty(), "the buffer comes cleared");
                out.push_str(&"x".repeat(1 << 20));
            })
        };
        rt.spawn(serve(listener, scrape, std::future::pending()));
        let first = get(addr);
        assert!(first.ends_with(&"x".repeat(1 << 20)));
        assert_eq!(given.load(Ordering::SeqCst), 0, "the first scrape starts from nothing");
        // The first response is complete, so hyper has dropped its body: same buffer again.
        let second = get(addr);
        assert!(given.load(Ordering::SeqCst) >= 1 << 20, "buffer reused: capacity {}", given.load(Ordering::SeqCst));
        assert_eq!(first, second);
    }
}
