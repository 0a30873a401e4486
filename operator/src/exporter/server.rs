//! The HTTP edge of the exporter: `GET /metrics` (the text a closure renders), `GET /healthz`,
//! 404 otherwise. HTTP/1.1 over hyper; nothing else lives here.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::render::CONTENT_TYPE;

/// Renders the body of one scrape.
pub type Scrape = Arc<dyn Fn() -> String + Send + Sync>;

fn respond(req: &Request<Incoming>, scrape: &Scrape) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, ctype: &str, body: Bytes| {
        let mut r = Response::new(Full::new(body));
        *r.status_mut() = status;
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_str(ctype).expect("static content type"));
        r
    };
    match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/metrics") => reply(StatusCode::OK, CONTENT_TYPE, Bytes::from(scrape())),
        (&Method::GET | &Method::HEAD, "/healthz" | "/readyz") => reply(StatusCode::OK, "text/plain", Bytes::from_static(b"ok\n")),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", Bytes::from_static(b"not found\n")),
    }
}

/// Serves on `listener` until `shutdown` completes.
pub async fn serve(listener: TcpListener, scrape: Scrape, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => accepted?,
            () = &mut shutdown => return Ok(()),
        };
        let scrape = scrape.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let scrape = scrape.clone();
                async move { Ok::<_, Infallible>(respond(&req, &scrape)) }
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
