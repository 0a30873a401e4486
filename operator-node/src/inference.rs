//! Inference utilization: GPU utilization of inference pods derived from their request rate.
//!
//! Upstream fake-gpu-operator asks Prometheus for the Knative queue-proxy request rate of the
//! pod and reports the raw requests per second as utilization percent. Here the rate is scaled:
//! `utilization % = min(100, rate / full_scale_rps × 100)`, with `full_scale_rps` configurable
//! (Helm `statusExporter.inference.fullScaleRequestsPerSecond`). The default, 100 req/s, gives
//! upstream's numbers (1 req/s = 1 %).
//!
//! Which pods are inference pods is decided once, in [`fakegpu_operator_core::pod::PodInfo::is_inference`]
//! (recorded as `useKnativeUtilization` in the topology). Pure parts here (the query, the
//! response, the scale) are separate from the thin HTTP client ([`PrometheusClient`]).

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use thiserror::Error;
use tokio::net::TcpStream;

/// Requests per second that count as 100 % by default (upstream's 1 req/s = 1 %).
pub const DEFAULT_FULL_SCALE_RPS: f64 = 100.0;

#[derive(Debug, Error)]
pub enum InferenceError {
    #[error("prometheus URL {0:?}: only http://host[:port][/prefix] is supported")]
    Url(String),
    #[error("prometheus request: {0}")]
    Http(String),
    #[error("prometheus answered HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("prometheus response: {0}")]
    Response(String),
}

/// PromQL for the request rate of the pod with UID `uid`: upstream's join of Knative's
/// `revision_app_request_count` with kube-state-metrics' `kube_pod_info` on `pod`, with two
/// fixes: `*` instead of upstream's `+` (which added kube_pod_info's value 1 to the rate) and a
/// `sum` over the pod's series (queue-proxy keeps one per response code; upstream took the first).
pub fn query_for_pod(uid: &str) -> String {
    let uid = uid.replace('\\', "\\\\").replace('"', "\\\"");
    format!("sum(rate(revision_app_request_count[1m]) * on(pod) group_left(uid) kube_pod_info{{uid=\"{uid}\"}})")
}

/// Utilization percent for `rps` requests per second with `full_scale_rps` = 100 %.
pub fn scale_to_percent(rps: f64, full_scale_rps: f64) -> u32 {
    if !rps.is_finite() || rps <= 0.0 || !full_scale_rps.is_finite() || full_scale_rps <= 0.0 {
        return 0;
    }
    (rps / full_scale_rps * 100.0).round().min(100.0) as u32
}

#[derive(Deserialize)]
struct ApiResponse {
    status: String,
    #[serde(default)]
    data: Option<ApiData>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct ApiData {
    #[serde(rename = "resultType")]
    result_type: String,
    result: Vec<ApiSample>,
}

#[derive(Deserialize)]
struct ApiSample {
    value: (f64, String),
}

/// The value of an instant-vector `/api/v1/query` answer: the sum over its samples (upstream
/// took the first; the query yields one per pod, so they agree), `None` for an empty vector.
pub fn parse_instant_value(body: &[u8]) -> Result<Option<f64>, InferenceError> {
    let r: ApiResponse = serde_json::from_slice(body).map_err(|e| InferenceError::Response(e.to_string()))?;
    if r.status != "success" {
        return Err(InferenceError::Response(r.error.unwrap_or(r.status)));
    }
    let data = r.data.ok_or_else(|| InferenceError::Response("no data".into()))?;
    if data.result_type != "vector" {
        return Err(InferenceError::Response(format!("result type {}", data.result_type)));
    }
    let mut sum = None;
    for s in data.result {
        let v: f64 = s.value.1.parse().map_err(|_| InferenceError::Response(format!("value {:?}", s.value.1)))?;
        if v.is_finite() {
            sum = Some(sum.unwrap_or(0.0) + v);
        }
    }
    Ok(sum)
}

/// `application/x-www-form-urlencoded` component encoding (RFC 3986 unreserved kept).
pub fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A parsed `http://host[:port][/prefix]` Prometheus URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    pub host: String,
    pub port: u16,
    pub prefix: String,
}

impl BaseUrl {
    pub fn parse(url: &str) -> Result<BaseUrl, InferenceError> {
        let bad = || InferenceError::Url(url.to_owned());
        let rest = url.trim().strip_prefix("http://").ok_or_else(bad)?;
        let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (h, p.parse().map_err(|_| bad())?),
            _ => (authority, 80),
        };
        if host.is_empty() || host.contains(['@', '?', '#']) {
            return Err(bad());
        }
        let prefix = path.trim_end_matches('/');
        Ok(BaseUrl { host: host.to_owned(), port, prefix: if prefix.is_empty() { String::new() } else { format!("/{prefix}") } })
    }

    /// Request target of an instant query.
    pub fn query_target(&self, promql: &str) -> String {
        format!("{}/api/v1/query?query={}", self.prefix, encode_component(promql))
    }
}

/// Minimal Prometheus HTTP API client (plain HTTP/1.1, one connection per query).
#[derive(Debug, Clone)]
pub struct PrometheusClient {
    base: BaseUrl,
    timeout: std::time::Duration,
}

impl PrometheusClient {
    pub fn new(url: &str) -> Result<PrometheusClient, InferenceError> {
        Ok(PrometheusClient { base: BaseUrl::parse(url)?, timeout: std::time::Duration::from_secs(5) })
    }

    /// Runs an instant query; see [`parse_instant_value`].
    pub async fn query(&self, promql: &str) -> Result<Option<f64>, InferenceError> {
        tokio::time::timeout(self.timeout, self.query_inner(promql)).await.map_err(|_| InferenceError::Http("timed out".into()))?
    }

    async fn query_inner(&self, promql: &str) -> Result<Option<f64>, InferenceError> {
        let http = |e: &dyn std::fmt::Display| InferenceError::Http(e.to_string());
        let host = self.base.host.trim_start_matches('[').trim_end_matches(']');
        let stream = TcpStream::connect((host, self.base.port)).await.map_err(|e| http(&e))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| http(&e))?;
        tokio::spawn(conn);
        let req = hyper::Request::get(self.base.query_target(promql))
            .header(hyper::header::HOST, format!("{}:{}", self.base.host, self.base.port))
            .header(hyper::header::ACCEPT, "application/json")
            .body(Empty::<Bytes>::new())
            .map_err(|e| http(&e))?;
        let resp = sender.send_request(req).await.map_err(|e| http(&e))?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.map_err(|e| http(&e))?.to_bytes();
        if status != 200 && status != 400 && status != 422 {
            return Err(InferenceError::Status { status, body: String::from_utf8_lossy(&body).chars().take(200).collect() });
        }
        parse_instant_value(&body)
    }

    /// Utilization percent of the pod with UID `uid`: 0 when Prometheus knows no rate for it.
    pub async fn pod_utilization(&self, uid: &str, full_scale_rps: f64) -> Result<u32, InferenceError> {
        Ok(self.query(&query_for_pod(uid)).await?.map_or(0, |rps| scale_to_percent(rps, full_scale_rps)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_joins_on_the_pod_uid() {
        assert_eq!(
            query_for_pod("1234-abcd"),
            r#"sum(rate(revision_app_request_count[1m]) * on(pod) group_left(uid) kube_pod_info{uid="1234-abcd"})"#
        );
        assert!(query_for_pod("a\"b").contains(r#"uid="a\"b""#));
    }

    #[test]
    fn scale() {
        assert_eq!(scale_to_percent(7.0, DEFAULT_FULL_SCALE_RPS), 7, "default = upstream's raw req/s");
        assert_eq!(scale_to_percent(20.0, 40.0), 50);
        assert_eq!(scale_to_percent(500.0, 40.0), 100);
        assert_eq!(scale_to_percent(0.004, 1.0), 0);
        for bad in [f64::NAN, -1.0, f64::INFINITY] {
            assert_eq!(scale_to_percent(bad, 10.0), 0);
        }
        assert_eq!(scale_to_percent(5.0, 0.0), 0);
    }

    #[test]
    fn parses_instant_vectors() {
        let one = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"pod":"p"},"value":[1700000000.1,"12.5"]}]}}"#;
        assert_eq!(parse_instant_value(one).unwrap(), Some(12.5));
        let empty = br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert_eq!(parse_instant_value(empty).unwrap(), None);
        let two = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"1"]},{"metric":{},"value":[1,"2"]}]}}"#;
        assert_eq!(parse_instant_value(two).unwrap(), Some(3.0));
        let nan = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"NaN"]}]}}"#;
        assert_eq!(parse_instant_value(nan).unwrap(), None);
        let err = br#"{"status":"error","errorType":"bad_data","error":"parse error"}"#;
        assert!(parse_instant_value(err).unwrap_err().to_string().contains("parse error"));
        assert!(parse_instant_value(b"not json").is_err());
    }

    #[test]
    fn urls() {
        assert_eq!(
            BaseUrl::parse("http://prometheus-operated.runai:9090").unwrap(),
            BaseUrl { host: "prometheus-operated.runai".into(), port: 9090, prefix: String::new() }
        );
        assert_eq!(BaseUrl::parse("http://p/prom/").unwrap(), BaseUrl { host: "p".into(), port: 80, prefix: "/prom".into() });
        assert_eq!(BaseUrl::parse("http://[::1]:9090").unwrap().host, "[::1]");
        for bad in ["https://p:9090", "p:9090", "http://:9090", "http://p:x"] {
            assert!(BaseUrl::parse(bad).is_err(), "{bad}");
        }
        let t = BaseUrl::parse("http://p:1/x").unwrap().query_target("rate(a[1m]) + b{uid=\"u\"}");
        assert_eq!(t, "/x/api/v1/query?query=rate%28a%5B1m%5D%29%20%2B%20b%7Buid%3D%22u%22%7D");
    }
}
