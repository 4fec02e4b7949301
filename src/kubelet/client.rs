//! The Kubelet's HTTPS API: a GET with the service account's bearer token (re-read for every
//! request, as it is rotated), a time limit and a size limit, and a count of every outcome.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use bytes::{Bytes, BytesMut};
use prometheus::proto::MetricFamily;

use super::config::KubeletConfig;
use super::tls;
use crate::family::FamilyBuilder;

/// The Kubelet endpoints sonde reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Endpoint {
    Pods,
    StatsSummary,
}

impl Endpoint {
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Pods => "/pods",
            Endpoint::StatsSummary => "/stats/summary",
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

/// A client of one Kubelet.
pub struct KubeletClient {
    http: reqwest::Client,
    base: String,
    config: KubeletConfig,
    /// (endpoint, code) → requests.
    requests: Mutex<BTreeMap<(Endpoint, String), u64>>,
}

impl KubeletClient {
    /// A client of the Kubelet at `base` (`https://host:port`). Fails on a bad CA file.
    pub fn new(base: &str, config: &KubeletConfig) -> Result<Self, String> {
        let tls =
            tls::client_config(config.ca_file.as_deref(), config.insecure_skip_verify).map_err(|e| e.to_string())?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .no_proxy() // the Kubelet is on this node; a proxy from the environment is not the way
            .build()
            .map_err(|e| format!("building the Kubelet client: {}", chain(&e)))?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            config: config.clone(),
            requests: Mutex::default(),
        })
    }

    /// GETs an endpoint and decodes its JSON answer; counts the outcome.
    pub async fn get<T: serde::de::DeserializeOwned>(&self, endpoint: Endpoint) -> Result<T, KubeletError> {
        let url = format!("{}{}", self.base, endpoint.path());
        let outcome = match self.fetch(&url).await {
            Ok(body) => serde_json::from_slice(&body).map_err(|e| KubeletError::Decode {
                url: url.clone(),
                reason: e.to_string(),
            }),
            Err(e) => Err(e),
        };
        let code = outcome.as_ref().map_or_else(KubeletError::code, |_| "200".to_owned());
        *self.lock().entry((endpoint, code)).or_default() += 1;
        outcome
    }

    async fn fetch(&self, url: &str) -> Result<Bytes, KubeletError> {
        let token = std::fs::read_to_string(&self.config.token_file).map_err(|source| KubeletError::Token {
            path: self.config.token_file.clone(),
            source,
        })?;
        let transport = |e: reqwest::Error| self.transport_error(url, &e);
        let mut response = self
            .http
            .get(url)
            .bearer_auth(token.trim())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        let limit = self.config.max_body_bytes;
        if !status.is_success() {
            // A short excerpt says why (the Kubelet answers "Unauthorized", "Forbidden (…)").
            let body = response.text().await.unwrap_or_default();
            let body: String = body.chars().take(200).collect();
            return Err(KubeletError::Status {
                url: url.to_owned(),
                status: status.as_u16(),
                body: body.trim().to_owned(),
            });
        }
        let too_large = || KubeletError::TooLarge {
            url: url.to_owned(),
            limit,
        };
        if response.content_length().is_some_and(|len| len > limit) {
            return Err(too_large());
        }
        let mut body = BytesMut::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if (body.len() + chunk.len()) as u64 > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    }

    fn transport_error(&self, url: &str, e: &reqwest::Error) -> KubeletError {
        if e.is_timeout() {
            return KubeletError::Timeout {
                url: url.to_owned(),
                timeout: self.config.timeout,
            };
        }
        KubeletError::Transport {
            url: url.to_owned(),
            reason: chain(e),
            connect: e.is_connect(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(Endpoint, String), u64>> {
        self.requests.lock().unwrap_or_else(|p| p.into_inner())
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

/// An error and its causes on one line: reqwest's own message rarely says what failed.
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
