//! The Kubelet's HTTPS API: a GET with the service account's bearer token (re-read for every
//! request, as it is rotated), a time limit and a size limit, and a count of every outcome.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use tokio::time::Instant;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use prometheus::proto::MetricFamily;

use super::settings::KubeletConfig;
use super::tls::{self, TlsError};
use crate::exposition::family::FamilyBuilder;
use crate::sync;

/// The Kubelet endpoints sonde reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Endpoint {
    Pods,
}

impl Endpoint {
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Pods => "/pods",
        }
    }
}

/// Why a request to the Kubelet failed. Every failure is retriable: nothing is cached.
#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    #[error("reading the token file {path}: {source}")]
    Token {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("GET {url}: timed out after {timeout:?}")]
    Timeout { url: String, timeout: std::time::Duration },
    #[error("GET {url}: {reason}")]
    Transport { url: String, reason: String, connect: bool },
    #[error("GET {url}: HTTP {status}: {body}")]
    Status { url: String, status: u16, body: String },
    #[error("GET {url}: the answer is larger than the {limit}-byte limit (--kubelet.max-body-size)")]
    TooLarge { url: String, limit: u64 },
    #[error("GET {url}: decoding the answer: {reason}")]
    Decode { url: String, reason: String },
}

impl KubeletError {
    /// The `code` label of `sonde_kubelet_requests_total`: the HTTP status of a refused
    /// request, else what went wrong.
    pub fn code(&self) -> String {
        match self {
            KubeletError::Token { .. } => "token_unreadable".into(),
            KubeletError::Timeout { .. } => "timeout".into(),
            KubeletError::Transport { connect: true, .. } => "connect_error".into(),
            KubeletError::Transport { .. } => "transport_error".into(),
            KubeletError::Status { status, .. } => status.to_string(),
            KubeletError::TooLarge { .. } => "body_too_large".into(),
            KubeletError::Decode { .. } => "invalid_body".into(),
        }
    }
}

type Http = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// A client of one Kubelet.
pub struct KubeletClient {
    http: Http,
    base: String,
    config: KubeletConfig,
    /// (endpoint, code) → requests.
    requests: Mutex<BTreeMap<(Endpoint, String), u64>>,
}

impl KubeletClient {
    /// A client of the Kubelet at `base` (`https://host:port`). Fails on a bad CA file.
    pub fn new(base: &str, config: &KubeletConfig) -> Result<Self, TlsError> {
        let tls = tls::client_config(config.ca_file.as_deref(), config.insecure_skip_verify)?;
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_connect_timeout(Some(config.timeout));
        tcp.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        Ok(Self {
            http: Client::builder(TokioExecutor::new()).build(connector),
            base: base.trim_end_matches('/').to_owned(),
            config: config.clone(),
            requests: Mutex::default(),
        })
    }

    /// GETs an endpoint and decodes its JSON answer, all within the timeout, or by `deadline`
    /// when that comes first (the scrape's, so a slow Kubelet is counted as a timeout rather
    /// than cut off uncounted); counts the outcome.
    pub async fn get<T: serde::de::DeserializeOwned>(
        &self,
        endpoint: Endpoint,
        deadline: Option<Instant>,
    ) -> Result<T, KubeletError> {
        let url = format!("{}{}", self.base, endpoint.path());
        let start = Instant::now();
        let until = deadline.map_or(start + self.config.timeout, |d| d.min(start + self.config.timeout));
        let fetched = tokio::time::timeout_at(until, self.fetch(&url))
            .await
            .unwrap_or_else(|_| {
                Err(KubeletError::Timeout {
                    url: url.clone(),
                    timeout: until.saturating_duration_since(start),
                })
            });
        let outcome = fetched.and_then(|body| {
            serde_json::from_slice(&body).map_err(|e| KubeletError::Decode {
                url: url.clone(),
                reason: e.to_string(),
            })
        });
        let code = outcome.as_ref().map_or_else(KubeletError::code, |_| "200".to_owned());
        *self.lock().entry((endpoint, code)).or_default() += 1;
        outcome
    }

    async fn fetch(&self, url: &str) -> Result<Bytes, KubeletError> {
        let token = crate::fsread::read_to_string(&self.config.token_file).map_err(|source| KubeletError::Token {
            path: self.config.token_file.clone(),
            source,
        })?;
        let transport = |reason: String, connect: bool| KubeletError::Transport {
            url: url.to_owned(),
            reason,
            connect,
        };
        let request = http::Request::get(url)
            .header(http::header::AUTHORIZATION, format!("Bearer {}", token.trim()))
            .header(http::header::ACCEPT, "application/json")
            .body(Empty::new())
            .map_err(|e| transport(format!("building the request: {e}"), false))?;
        let response = self
            .http
            .request(request)
            .await
            .map_err(|e| transport(with_hint(chain(&e)), e.is_connect()))?;
        let status = response.status();
        let limit = self.config.max_body_bytes;
        let declared = response
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let mut body = response.into_body();
        if !status.is_success() {
            // A short excerpt says why (the Kubelet answers "Unauthorized", "Forbidden (…)").
            let excerpt = read_limited(&mut body, 512).await.unwrap_or_default();
            let excerpt: String = String::from_utf8_lossy(&excerpt).chars().take(200).collect();
            return Err(KubeletError::Status {
                url: url.to_owned(),
                status: status.as_u16(),
                body: excerpt.trim().to_owned(),
            });
        }
        let too_large = || KubeletError::TooLarge {
            url: url.to_owned(),
            limit,
        };
        if declared.is_some_and(|len| len > limit) {
            return Err(too_large());
        }
        match read_limited(&mut body, limit).await {
            Ok(bytes) if bytes.len() as u64 > limit => Err(too_large()),
            Ok(bytes) => Ok(bytes),
            Err(e) => Err(transport(format!("reading the answer: {}", chain(&e)), false)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(Endpoint, String), u64>> {
        sync::lock(&self.requests)
    }

    /// `sonde_kubelet_requests_total{endpoint,code}`.
    pub fn telemetry(&self) -> Option<MetricFamily> {
        let mut requests = FamilyBuilder::counter(
            "sonde_kubelet_requests_total",
            "Requests to the Kubelet by endpoint and outcome: the HTTP status, or timeout, connect_error, transport_error, body_too_large, invalid_body, token_unreadable.",
        );
        for ((endpoint, code), count) in self.lock().iter() {
            requests.sample(&[("code", code), ("endpoint", endpoint.path())], *count as f64);
        }
        requests.build()
    }
}

/// Reads a body until its end, or until it holds more than `limit` bytes (then returns what
/// it has, which is longer than the limit, and reads no further).
async fn read_limited(body: &mut Incoming, limit: u64) -> Result<Bytes, hyper::Error> {
    let mut bytes = BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            bytes.extend_from_slice(&data);
            if bytes.len() as u64 > limit {
                break;
            }
        }
    }
    Ok(bytes.freeze())
}

/// The fix for a TLS failure whose name alone says little.
fn with_hint(mut text: String) -> String {
    if text.contains("CaUsedAsEndEntity") {
        text.push_str(
            " (the Kubelet serves a self-signed certificate that is its own CA, which rustls refuses as a \
             server certificate: have the Kubelet serve a certificate signed by the cluster CA \
             (serverTLSBootstrap), or use --kubelet.insecure-skip-verify; see README, Kubernetes)",
        );
    }
    text
}

/// An error and its causes on one line: hyper's own message rarely says what failed.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let line = cause.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_that_is_its_own_ca_gets_a_hint() {
        let text = with_hint("client error (Connect): invalid peer certificate: CaUsedAsEndEntity".into());
        assert!(text.contains("--kubelet.insecure-skip-verify"), "{text}");
        assert!(text.contains("serverTLSBootstrap"), "{text}");
        assert_eq!(with_hint("connection refused".into()), "connection refused");
    }
}
