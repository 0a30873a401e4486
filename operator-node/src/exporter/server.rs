//! The HTTP edge of the exporter: `GET /metrics` (the text a closure renders), `GET /healthz`,
//! 404 otherwise. HTTP/1.1 over hyper. Besides routing it owns the two ways a body is made: plain
//! text rendered per request and streamed as it is rendered ([`stream_plain`]), and gzip for
//! clients that accept it (Prometheus does), rendered ahead of the request ([`Gzip`]).

use std::convert::Infallible;
use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::{Bytes, Frame, Incoming, SizeHint};
use hyper::header::{HeaderValue, ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_TYPE, VARY};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::render::CONTENT_TYPE as METRICS_CONTENT_TYPE;
use super::ScrapeOut;

/// Renders the body of one scrape: into the (empty) buffer it is given, or in pieces into a sink.
pub type Scrape = Arc<dyn Fn(ScrapeOut<'_>) + Send + Sync>;

/// Pieces of plain text queued for the connection beyond the one hyper is writing and the one
/// being rendered: the renderer runs ahead of the socket by at most this many.
const PIECES_QUEUED: usize = 2;
/// Piece buffers kept for the next pieces and scrapes, reused rather than allocated (and
/// faulted in) again for each piece. A scrape holds at most `PIECES_QUEUED` + 3 (the piece being
/// made, the queue, and up to two that hyper buffers for the socket: it takes another while less
/// than its ~400 KB write buffer is left); the pieces beyond these are allocated per scrape.
const PIECES_KEPT: usize = 4;

/// Buffers of the streamed plain-text pieces, recycled when hyper has sent a piece.
#[derive(Default, Clone)]
struct PiecePool {
    kept: Arc<Mutex<Vec<Vec<u8>>>>,
    /// Buffers allocated because none was kept: what the streaming holds at its most.
    made: Arc<std::sync::atomic::AtomicUsize>,
}

/// One piece being sent; its buffer goes back to the pool when hyper drops it.
struct Piece {
    buf: Vec<u8>,
    pool: PiecePool,
}

impl AsRef<[u8]> for Piece {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Piece {
    fn drop(&mut self) {
        let mut kept = self.pool.kept.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() < PIECES_KEPT {
            let mut buf = std::mem::take(&mut self.buf);
            buf.clear();
            kept.push(buf);
        }
    }
}

impl PiecePool {
    fn piece(&self, text: &str) -> Bytes {
        let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut buf = kept.unwrap_or_else(|| {
            self.made.fetch_add(1, Ordering::Relaxed);
            Vec::with_capacity(text.len())
        });
        buf.extend_from_slice(text.as_bytes());
        Bytes::from_owner(Piece { buf, pool: self.clone() })
    }
}

/// A `/metrics` response body: whole (gzip, short texts) or streamed as it is rendered.
enum MetricsBody {
    Whole(Option<Bytes>),
    Streamed { pieces: tokio::sync::mpsc::Receiver<Bytes>, complete: Arc<AtomicBool> },
}

impl MetricsBody {
    fn whole(bytes: Bytes) -> MetricsBody {
        MetricsBody::Whole(Some(bytes).filter(|b| !b.is_empty()))
    }
}

impl hyper::body::Body for MetricsBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self.get_mut() {
            MetricsBody::Whole(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            MetricsBody::Streamed { pieces, complete } => pieces.poll_recv(cx).map(|piece| match piece {
                Some(b) => Some(Ok(Frame::data(b))),
                None if complete.load(Ordering::Acquire) => None,
                // The renderer stopped short (it panicked): an error makes hyper cut the
                // connection, so the client cannot take the truncated text for the whole.
                None => Some(Err(std::io::Error::other("rendering the metrics failed"))),
            }),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, MetricsBody::Whole(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            MetricsBody::Whole(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            MetricsBody::Streamed { .. } => SizeHint::default(),
        }
    }
}

/// Plain text for one request, sent as it is rendered: the scrape runs on a blocking thread and
/// hands its pieces ([`ScrapeOut::Chunks`]) through a channel of [`PIECES_QUEUED`] to the
/// response body, so that at most a few pieces are held whatever the size of the text (8,000
/// GPUs: 27 MB, which a whole body would keep resident). Without a length the body goes out with
/// chunked transfer encoding (HTTP/1.1) or until the connection closes (HTTP/1.0).
fn stream_plain(scrape: &Scrape, pool: &PiecePool) -> MetricsBody {
    let (tx, rx) = tokio::sync::mpsc::channel(PIECES_QUEUED);
    let complete = Arc::new(AtomicBool::new(false));
    let (scrape, pool, done) = (scrape.clone(), pool.clone(), complete.clone());
    tokio::task::spawn_blocking(move || {
        let mut open = true;
        scrape(ScrapeOut::Chunks(&mut |text: &str| {
            // A client gone (or a HEAD request, whose body hyper drops): the rest is not sent.
            if open {
                open = tx.blocking_send(pool.piece(text)).is_ok();
            }
        }));
        done.store(true, Ordering::Release);
        drop(tx);
        fakegpu_operator_core::common::release_free_memory();
    });
    MetricsBody::Streamed { pieces: rx, complete }
}

/// Whether an `Accept-Encoding` value admits gzip: an explicit `gzip` entry decides by its
/// q-value, else a `*` entry does (RFC 9110 §12.5.3).
pub fn accepts_gzip(accept_encoding: Option<&HeaderValue>) -> bool {
    let Some(value) = accept_encoding.and_then(|v| v.to_str().ok()) else { return false };
    let mut gzip = None;
    let mut any = None;
    for item in value.split(',') {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or_default().trim();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q=").or_else(|| p.trim().strip_prefix("Q=")))
            .map(|q| q.trim().parse::<f32>().unwrap_or(0.0))
            .next()
            .unwrap_or(1.0);
        if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
            gzip = Some(q);
        } else if coding == "*" {
            any = Some(q);
        }
    }
    gzip.or(any).is_some_and(|q| q > 0.0)
}

/// How the gzip body is kept ready.
#[derive(Debug, Clone, Copy)]
pub struct GzipOptions {
    /// A body rendered ahead is served while it is at most this old; an older one is rendered
    /// again on the request.
    pub max_age: Duration,
}

impl Default for GzipOptions {
    fn default() -> GzipOptions {
        GzipOptions { max_age: Duration::from_secs(5) }
    }
}

/// Scrapes the exporter has compressed. Compressing the 27 MB text of 8,000 GPUs takes many
/// times as long as rendering it, far more than a scrape may take, so the compressed body is made
/// ahead: a scraper such as Prometheus comes at a fixed interval, so after each gzip request the
/// next body is rendered that interval later, less twice what the last rendering took and a
/// margin, and the request finds it ready (dcgm-exporter likewise serves what it collected
/// before the request, up to 30 s earlier by default). A request that finds no body younger than
/// `max_age` waits for the rendering in progress or renders one itself. With no scraper nothing
/// is rendered: an idle exporter costs nothing.
struct Gzip {
    options: GzipOptions,
    state: Mutex<GzipState>,
    /// One rendering at a time: concurrent misses wait for it and share its body.
    rendering: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct GzipState {
    ready: Option<(Instant, Bytes)>,
    last_request: Option<Instant>,
    /// Between the last two gzip requests.
    interval: Option<Duration>,
    /// Rendering and compressing the last body.
    cost: Duration,
    /// Bumped by each request: a pending render ahead that sees a newer value was superseded.
    generation: u64,
}

/// A scraper that has not come for this many of its intervals is not rendered for any more.
const GONE_AFTER_INTERVALS: u32 = 3;
/// Started this much earlier than twice the last render's time before the expected request, for
/// a render slowed by other work.
const RENDER_MARGIN: Duration = Duration::from_millis(200);
/// A scraper that comes less often than this is not rendered for (a body rendered so far ahead
/// would be too old).
const LONGEST_INTERVAL: Duration = Duration::from_secs(600);

impl Gzip {
    fn new(options: GzipOptions) -> Gzip {
        Gzip { options, state: Mutex::default(), rendering: tokio::sync::Mutex::new(()) }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, GzipState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The body for a gzip request arriving now (`None`: rendering it failed), and the render
    /// ahead of the next one scheduled.
    async fn respond(self: &Arc<Self>, scrape: &Scrape) -> Option<Bytes> {
        let arrived = Instant::now();
        let ready = {
            let mut st = self.state();
            st.interval = st.last_request.map(|prev| arrived.duration_since(prev));
            st.last_request = Some(arrived);
            st.generation += 1;
            st.ready.as_ref().filter(|(at, _)| arrived.duration_since(*at) <= self.options.max_age).map(|(_, b)| b.clone())
        };
        let body = match ready {
            Some(b) => Some(b),
            None => self.render(scrape, true).await,
        };
        self.schedule(scrape.clone());
        body
    }

    /// Renders and compresses a body (on a blocking thread) and keeps it. For a request
    /// (`for_request`), a body that became ready while it waited for the rendering in progress
    /// (a render ahead that had not finished when it came) is taken if young enough.
    async fn render(self: &Arc<Self>, scrape: &Scrape, for_request: bool) -> Option<Bytes> {
        let _one = self.rendering.lock().await;
        if for_request {
            let young = |(at, _): &&(Instant, Bytes)| at.elapsed() <= self.options.max_age;
            if let Some((_, b)) = self.state().ready.as_ref().filter(young) {
                return Some(b.clone());
            }
        }
        let scrape = scrape.clone();
        // Room for a body like the last one: the output is not grown (and copied) by doubling.
        let room = self.state().ready.as_ref().map_or(0, |(_, b)| b.len() + b.len() / 8);
        let made = tokio::task::spawn_blocking(move || {
            let start = Instant::now();
            let body = gzip(&scrape, room);
            let cost = start.elapsed();
            fakegpu_operator_core::common::release_free_memory();
            (start, body, cost)
        })
        .await;
        match made {
            Ok((at, body, cost)) => {
                let mut st = self.state();
                st.cost = cost;
                st.ready = Some((at, body.clone()));
                Some(body)
            }
            // The render panicked (a bug in the exporter): an error rather than a stale body.
            Err(e) => {
                tracing::error!(error = %e, "gzip render failed");
                None
            }
        }
    }

    /// After a request: render the next body ahead of the request expected one interval later.
    fn schedule(self: &Arc<Self>, scrape: Scrape) {
        let (delay, generation) = {
            let st = self.state();
            let Some(interval) = st.interval.filter(|i| *i <= LONGEST_INTERVAL) else { return };
            (interval.saturating_sub(st.cost * 2 + RENDER_MARGIN), st.generation)
        };
        let me = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            {
                let st = me.state();
                // A request came meanwhile (it scheduled its own), or the scraper went away.
                let gone = match (st.last_request, st.interval) {
                    (Some(last), Some(interval)) => last.elapsed() > interval * GONE_AFTER_INTERVALS,
                    _ => true,
                };
                if st.generation != generation || gone {
                    return;
                }
            }
            me.render(&scrape, false).await;
        });
    }
}

/// One scrape, compressed as it is rendered (the whole text is never held). gzip at the fastest
/// level: 8,000 GPUs' 26.7 MiB become 6.2 MiB in 60–110 ms here; higher levels cost several times
/// as long for a smaller gain.
fn gzip(scrape: &Scrape, room: usize) -> Bytes {
    let mut enc = flate2::write::GzEncoder::new(Vec::with_capacity(room), flate2::Compression::fast());
    // Writing into a Vec cannot fail.
    scrape(ScrapeOut::Chunks(&mut |chunk: &str| enc.write_all(chunk.as_bytes()).expect("gzip into memory")));
    let mut body = enc.finish().expect("gzip into memory");
    // The body is kept until the next one replaces it: not the room reserved beyond it.
    body.shrink_to_fit();
    Bytes::from(body)
}

fn reply(status: StatusCode, ctype: &'static str, body: Bytes) -> Response<MetricsBody> {
    reply_with(status, ctype, MetricsBody::whole(body))
}

fn reply_with(status: StatusCode, ctype: &'static str, body: MetricsBody) -> Response<MetricsBody> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    r
}

async fn respond(req: &Request<Incoming>, scrape: &Scrape, pool: &PiecePool, gzip: &Arc<Gzip>) -> Response<MetricsBody> {
    match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/metrics") => {
            let mut r = if accepts_gzip(req.headers().get(ACCEPT_ENCODING)) {
                let Some(body) = gzip.respond(scrape).await else {
                    return reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", Bytes::from_static(b"rendering the metrics failed\n"));
                };
                let mut r = reply(StatusCode::OK, METRICS_CONTENT_TYPE, body);
                r.headers_mut().insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                r
            } else {
                reply_with(StatusCode::OK, METRICS_CONTENT_TYPE, stream_plain(scrape, pool))
            };
            r.headers_mut().insert(VARY, HeaderValue::from_static("Accept-Encoding"));
            r
        }
        (&Method::GET | &Method::HEAD, "/healthz" | "/readyz") => reply(StatusCode::OK, "text/plain", Bytes::from_static(b"ok\n")),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", Bytes::from_static(b"not found\n")),
    }
}

/// Serves on `listener` until `shutdown` completes.
pub async fn serve(listener: TcpListener, scrape: Scrape, gzip: GzipOptions, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
    tokio::pin!(shutdown);
    let pool = PiecePool::default();
    let gzip = Arc::new(Gzip::new(gzip));
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => accepted?,
            () = &mut shutdown => return Ok(()),
        };
        let (scrape, pool, gzip) = (scrape.clone(), pool.clone(), gzip.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let (scrape, pool, gzip) = (scrape.clone(), pool.clone(), gzip.clone());
                async move { Ok::<_, Infallible>(respond(&req, &scrape, &pool, &gzip).await) }
            });
            if let Err(e) = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await {
                tracing::debug!(%peer, error = %e, "metrics connection");
            }
        });
    }
}

/// Binds `addr` and [`serve`]s.
pub async fn bind_and_serve(
    addr: SocketAddr,
    scrape: Scrape,
    gzip: GzipOptions,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /metrics");
    serve(listener, scrape, gzip, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn get(addr: SocketAddr) -> String {
        let mut conn = std::net::TcpStream::connect(addr).unwrap();
        conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: t\r\n\r\n").unwrap();
        let mut out = String::new();
        conn.read_to_string(&mut out).unwrap();
        out
    }

    /// `GET /metrics` with `Accept-Encoding: gzip`: (headers, decompressed body).
    fn get_gzip(addr: SocketAddr) -> (String, String) {
        let mut conn = std::net::TcpStream::connect(addr).unwrap();
        conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: t\r\nAccept-Encoding: gzip\r\n\r\n").unwrap();
        let mut raw = Vec::new();
        conn.read_to_end(&mut raw).unwrap();
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("end of headers") + 4;
        let headers = String::from_utf8(raw[..split].to_vec()).unwrap();
        let mut body = String::new();
        flate2::read::GzDecoder::new(&raw[split..]).read_to_string(&mut body).expect("a gzip body");
        (headers, body)
    }

    /// A server whose scrape body is `render <n>`, n counting the renders.
    fn counting_server(rt: &tokio::runtime::Runtime, gzip: GzipOptions) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let renders = Arc::new(AtomicUsize::new(0));
        let scrape: Scrape = {
            let renders = renders.clone();
            Arc::new(move |out: ScrapeOut<'_>| {
                let n = renders.fetch_add(1, Ordering::SeqCst) + 1;
                let text = format!("render {n}\n");
                match out {
                    ScrapeOut::Text(t) => t.push_str(&text),
                    // In two pieces, as a real scrape comes.
                    ScrapeOut::Chunks(sink) => {
                        sink(&text[..3]);
                        sink(&text[3..]);
                    }
                }
            })
        };
        rt.spawn(serve(listener, scrape, gzip, std::future::pending()));
        (addr, renders)
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap()
    }

    #[test]
    fn accept_encoding_values() {
        let yes = ["gzip", "GZIP", "gzip, deflate", "deflate, gzip;q=0.5", "*", "identity, *;q=0.1", "x-gzip", "br;q=1, gzip; q=0.001"];
        let no = ["", "identity", "deflate, br", "gzip;q=0", "gzip;q=0.0, *", "*;q=0", "gzipx", "gzip;q=nonsense"];
        for v in yes {
            assert!(accepts_gzip(Some(&HeaderValue::from_static(v))), "{v:?} accepts gzip");
        }
        for v in no {
            assert!(!accepts_gzip(Some(&HeaderValue::from_static(v))), "{v:?} does not accept gzip");
        }
        assert!(!accepts_gzip(None));
    }

    #[test]
    fn gzip_clients_get_the_same_text_compressed_and_others_plain_text() {
        let rt = runtime();
        let (addr, renders) = counting_server(&rt, GzipOptions::default());
        let (headers, body) = get_gzip(addr);
        assert!(headers.starts_with("HTTP/1.0 200") || headers.starts_with("HTTP/1.1 200"), "{headers}");
        let lower = headers.to_ascii_lowercase();
        assert!(lower.contains("content-encoding: gzip"), "{headers}");
        assert!(lower.contains("vary: accept-encoding"), "{headers}");
        assert!(lower.contains(&format!("content-type: {}", METRICS_CONTENT_TYPE.to_ascii_lowercase())), "{headers}");
        assert_eq!(body, "render 1\n");
        let plain = get(addr);
        assert!(!plain.to_ascii_lowercase().contains("content-encoding"), "{plain}");
        assert!(plain.ends_with("\r\n\r\nrender 2\n"), "plain text, rendered for the request: {plain}");
        assert_eq!(renders.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_regular_scraper_finds_its_body_rendered_before_it_asks() {
        let rt = runtime();
        let (addr, renders) = counting_server(&rt, GzipOptions::default());
        assert_eq!(get_gzip(addr).1, "render 1\n", "the first request renders");
        std::thread::sleep(Duration::from_millis(800));
        // 800 ms later: the body of 800 ms ago is young enough, and the interval is now known.
        assert_eq!(get_gzip(addr).1, "render 1\n");
        // The next body is rendered ahead, about 800 - 200 (margin) ms after the second request.
        let asked = Instant::now();
        while renders.load(Ordering::SeqCst) < 2 {
            assert!(asked.elapsed() < Duration::from_secs(5), "nothing rendered ahead");
            std::thread::sleep(Duration::from_millis(10));
        }
        let ahead = asked.elapsed();
        assert!(ahead >= Duration::from_millis(450), "rendered {ahead:?} after the request, not one interval later");
        std::thread::sleep(Duration::from_millis(150));
        assert_eq!(get_gzip(addr).1, "render 2\n", "served the body rendered ahead");
        assert_eq!(renders.load(Ordering::SeqCst), 2, "the request rendered nothing itself");
    }

    #[test]
    fn a_body_older_than_the_max_age_is_rendered_again() {
        let rt = runtime();
        let (addr, renders) = counting_server(&rt, GzipOptions { max_age: Duration::from_millis(50) });
        assert_eq!(get_gzip(addr).1, "render 1\n");
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(get_gzip(addr).1, "render 2\n", "200 ms old > 50 ms: rendered for the request");
        assert_eq!(renders.load(Ordering::SeqCst), 2);
    }

    /// A server whose plain text is `pieces` pieces of [`super::super::PIECE_BYTES`] (each of
    /// one repeated letter, then a newline), its piece pool, and how many pieces were rendered.
    fn streaming_server(
        rt: &tokio::runtime::Runtime,
        pieces: usize,
        panic_after: Option<usize>,
    ) -> (SocketAddr, PiecePool, Arc<AtomicUsize>) {
        let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let rendered = Arc::new(AtomicUsize::new(0));
        let scrape: Scrape = {
            let rendered = rendered.clone();
            Arc::new(move |out: ScrapeOut<'_>| {
                let ScrapeOut::Chunks(sink) = out else { panic!("plain text is streamed in pieces") };
                for i in 0..pieces {
                    if panic_after == Some(i) {
                        panic!("render failed");
                    }
                    let letter = char::from(b'a' + (i % 26) as u8);
                    sink(&format!("{}\n", letter.to_string().repeat(super::super::PIECE_BYTES - 1)));
                    rendered.fetch_add(1, Ordering::SeqCst);
                }
            })
        };
        let pool = PiecePool::default();
        let gzip = Arc::new(Gzip::new(GzipOptions::default()));
        let served = pool.clone();
        rt.spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (scrape, pool, gzip) = (scrape.clone(), served.clone(), gzip.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let (scrape, pool, gzip) = (scrape.clone(), pool.clone(), gzip.clone());
                        async move { Ok::<_, Infallible>(respond(&req, &scrape, &pool, &gzip).await) }
                    });
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        });
        (addr, pool, rendered)
    }

    /// `GET /metrics` over HTTP/1.1, read `slowly` (a pause per 64 KiB): (headers, raw body).
    fn get_11(addr: SocketAddr, slowly: bool) -> (String, Vec<u8>) {
        let mut conn = std::net::TcpStream::connect(addr).unwrap();
        conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
        let mut raw = Vec::new();
        let mut buf = vec![0; 64 * 1024];
        loop {
            match conn.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
            }
            if slowly {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("end of headers") + 4;
        (String::from_utf8(raw[..split].to_vec()).unwrap(), raw[split..].to_vec())
    }

    /// A chunked HTTP/1.1 body decoded; `None` when it lacks the last (zero) chunk.
    fn dechunk(mut raw: &[u8]) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            let eol = raw.windows(2).position(|w| w == b"\r\n")?;
            let len = usize::from_str_radix(std::str::from_utf8(&raw[..eol]).ok()?, 16).ok()?;
            if len == 0 {
                return Some(out);
            }
            out.extend_from_slice(raw.get(eol + 2..eol + 2 + len)?);
            raw = raw.get(eol + 4 + len..)?;
        }
    }

    /// Pieces a scrape holds at most (see [`PIECES_KEPT`]).
    const PIECES_HELD: usize = PIECES_QUEUED + 3;

    #[test]
    fn plain_text_is_streamed_holding_a_few_pieces_whatever_its_size() {
        let rt = runtime();
        // 24 pieces: a 24 MiB text, about 8,000 GPUs' text.
        let (addr, pool, rendered) = streaming_server(&rt, 24, None);
        for slowly in [true, false] {
            let (headers, raw) = get_11(addr, slowly);
            assert!(headers.starts_with("HTTP/1.1 200"), "{headers}");
            assert!(headers.to_ascii_lowercase().contains("transfer-encoding: chunked"), "{headers}");
            let body = dechunk(&raw).expect("a complete chunked body");
            assert_eq!(body.len(), 24 * super::super::PIECE_BYTES);
            assert!(body.chunks(super::super::PIECE_BYTES).enumerate().all(|(i, p)| p[0] == b'a' + (i % 26) as u8), "pieces in order");
        }
        assert_eq!(rendered.load(Ordering::SeqCst), 48);
        // However slowly the client read, the whole text was never held: a few piece buffers
        // were, most of them reused by the second scrape.
        let made = pool.made.load(Ordering::Relaxed);
        assert!((1..=PIECES_HELD + (PIECES_HELD - PIECES_KEPT)).contains(&made), "{made} piece buffers for 2 × 24 pieces");
        assert!(pool.kept.lock().unwrap().len() <= PIECES_KEPT);
    }

    #[test]
    fn a_render_that_fails_midway_does_not_end_the_body_as_complete() {
        let rt = runtime();
        let (addr, _, rendered) = streaming_server(&rt, 10, Some(3));
        let (headers, raw) = get_11(addr, false);
        assert!(headers.starts_with("HTTP/1.1 200"), "{headers}");
        assert_eq!(rendered.load(Ordering::SeqCst), 3);
        assert_eq!(dechunk(&raw), None, "cut short: no last chunk");
        assert!(raw.len() >= 3 * super::super::PIECE_BYTES, "what was rendered was sent: {}", raw.len());
    }
}
