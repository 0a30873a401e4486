//! The HTTP edge of the exporter: `GET /metrics` (the text a closure renders), `GET /healthz`,
//! 404 otherwise. HTTP/1.1 over hyper. Besides routing it owns the two ways a body is made: plain
//! text rendered per request into a reused buffer, and gzip for clients that accept it
//! (Prometheus does), rendered ahead of the request ([`Gzip`]).

use std::convert::Infallible;
use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
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
        scrape(ScrapeOut::Text(&mut text));
        *last = Arc::new(text);
        Bytes::from_owner(Body(last.clone()))
    }
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
            (start, body, start.elapsed())
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
    Bytes::from(enc.finish().expect("gzip into memory"))
}

fn reply(status: StatusCode, ctype: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    r
}

async fn respond(req: &Request<Incoming>, scrape: &Scrape, bodies: &Bodies, gzip: &Arc<Gzip>) -> Response<Full<Bytes>> {
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
                reply(StatusCode::OK, METRICS_CONTENT_TYPE, bodies.render(scrape))
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
    let bodies = Arc::new(Bodies::default());
    let gzip = Arc::new(Gzip::new(gzip));
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => accepted?,
            () = &mut shutdown => return Ok(()),
        };
        let (scrape, bodies, gzip) = (scrape.clone(), bodies.clone(), gzip.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let (scrape, bodies, gzip) = (scrape.clone(), bodies.clone(), gzip.clone());
                async move { Ok::<_, Infallible>(respond(&req, &scrape, &bodies, &gzip).await) }
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

    #[test]
    fn a_sent_body_buffer_is_reused_by_the_next_scrape() {
        let bodies = Bodies::default();
        // Each scrape reports the capacity of the buffer it was given, then fills 1 MB.
        let given = Arc::new(AtomicUsize::new(usize::MAX));
        let scrape: Scrape = {
            let given = given.clone();
            Arc::new(move |out: ScrapeOut<'_>| {
                let ScrapeOut::Text(out) = out else { panic!("plain text is rendered into the buffer") };
                given.store(out.capacity(), Ordering::SeqCst);
                assert!(out.is_empty(), "the buffer comes cleared");
                out.push_str(&"x".repeat(1 << 20));
            })
        };
        let first = bodies.render(&scrape);
        assert_eq!(given.load(Ordering::SeqCst), 0, "the first scrape starts from nothing");
        // While the first body is still being sent, a second scrape gets a buffer of its own.
        let second = bodies.render(&scrape);
        assert_eq!(given.load(Ordering::SeqCst), 0, "not the buffer in use");
        assert_ne!(first.as_ptr(), second.as_ptr());
        drop(first);
        // Sent (dropped): the buffer of the last body is reused.
        let at = second.as_ptr();
        drop(second);
        let third = bodies.render(&scrape);
        assert!(given.load(Ordering::SeqCst) >= 1 << 20, "buffer reused: capacity {}", given.load(Ordering::SeqCst));
        assert_eq!(third.as_ptr(), at);
        assert_eq!(third.len(), 1 << 20);
    }
}
