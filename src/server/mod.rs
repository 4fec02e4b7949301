//! The HTTP side: `/metrics` (or `--web.telemetry-path`), `/healthz`, `/readyz` and a landing
//! page, behind gzip, a per-request timeout and a shed-not-queue limit on concurrent scrapes;
//! TLS, basic authentication and headers from `--web.config.file` (the exporter-toolkit
//! format, `webconfig.rs`, reloaded by `live.rs`); connections bounded in number and time,
//! and a shutdown that ends (`listener.rs`).

mod auth;
mod body;
mod listener;
pub mod live;
mod stall;
mod tls;
pub mod webconfig;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::error_handling::HandleErrorLayer;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use tokio::net::{TcpListener, TcpSocket};
use tower::ServiceBuilder;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower_http::compression::CompressionLayer;
use tower_http::timeout::TimeoutLayer;

use crate::build_info;
use crate::collector::Collector;
use crate::exposition::{EncodeError, Format, PARALLEL_GZIP_BYTES, gzip};
use crate::scrape::{ScrapeConfig, Scraper};
use crate::settings::{self, InvalidValue};
pub use listener::Limits;
use live::LiveWebConfig;
pub use webconfig::WebConfigError;

/// The header Prometheus sends with its scrape timeout in seconds.
pub const SCRAPE_TIMEOUT_HEADER: &str = "x-prometheus-scrape-timeout-seconds";

/// What the HTTP side listens on and how much it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebConfig {
    /// `host:port` as given (`:9977` means every address); resolved when binding.
    pub listen_address: String,
    pub telemetry_path: String,
    /// Concurrent `/metrics` requests served; 0 means no limit.
    pub max_requests: usize,
    /// Hard limit on any one HTTP request, a safety net behind the scrape deadline.
    pub request_timeout: Duration,
    /// The exporter-toolkit web configuration (TLS, basic authentication, headers).
    pub config_file: Option<PathBuf>,
    pub limits: Limits,
}

/// The `--web.*` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct WebArgs {
    /// Address to listen on ([host]:port)
    #[arg(long = "web.listen-address", value_name = "ADDRESS", default_value = ":9977")]
    listen_address: String,
    /// Path under which to expose metrics
    #[arg(long = "web.telemetry-path", value_name = "PATH", default_value = "/metrics")]
    telemetry_path: String,
    /// Concurrent scrapes served; more get 503 at once (0: no limit)
    #[arg(long = "web.max-requests", value_name = "N", default_value = "40")]
    max_requests: usize,
    /// Hard limit on any one HTTP request; also closes a connection whose client reads nothing of an answer for this long
    #[arg(long = "web.request-timeout", value_name = "DURATION", default_value = "60s")]
    request_timeout: String,
    /// TLS, basic authentication and headers: an exporter-toolkit web config file (as node_exporter's); re-read when it changes and on SIGHUP
    #[arg(long = "web.config.file", value_name = "FILE")]
    web_config_file: Option<PathBuf>,
    /// Time from accepting a connection (TLS handshake included) to the end of its first request's headers
    #[arg(long = "web.read-header-timeout", value_name = "DURATION", default_value = "10s")]
    read_header_timeout: String,
    /// Time a kept-alive connection may stay idle before its next request's headers are complete
    #[arg(long = "web.idle-timeout", value_name = "DURATION", default_value = "2m")]
    idle_timeout: String,
    /// Open connections at most; at the cap the oldest one still without a complete request is closed (default: a quarter of the open-file limit, at most 2048)
    #[arg(long = "web.max-connections", value_name = "N")]
    max_connections: Option<usize>,
    /// On SIGTERM or SIGINT, time in-flight requests get to finish before sonde exits anyway
    #[arg(long = "web.shutdown-timeout", value_name = "DURATION", default_value = "15s")]
    shutdown_timeout: String,
}

impl WebArgs {
    pub fn resolve(&self) -> Result<WebConfig, InvalidValue> {
        validate_listen_address(&self.listen_address)?;
        if !self.telemetry_path.starts_with('/') || self.telemetry_path.len() < 2 {
            return Err(InvalidValue::new(
                "web.telemetry-path",
                &self.telemetry_path,
                "must start with '/' and name a path other than '/'",
            ));
        }
        Ok(WebConfig {
            listen_address: self.listen_address.clone(),
            telemetry_path: self.telemetry_path.clone(),
            max_requests: self.max_requests,
            request_timeout: settings::duration("web.request-timeout", &self.request_timeout)?,
            config_file: self.web_config_file.clone(),
            limits: Limits {
                read_header_timeout: settings::duration("web.read-header-timeout", &self.read_header_timeout)?,
                idle_timeout: settings::duration("web.idle-timeout", &self.idle_timeout)?,
                max_connections: match self.max_connections {
                    Some(0) => {
                        return Err(InvalidValue::new("web.max-connections", "0", "must be at least 1"));
                    }
                    // More than the kernel's own cap on descriptors cannot be meant.
                    Some(n) if n > 1 << 20 => {
                        return Err(InvalidValue::new(
                            "web.max-connections",
                            n.to_string(),
                            "must be at most 1048576",
                        ));
                    }
                    Some(n) => n,
                    None => default_max_connections(open_file_limit()),
                },
                shutdown_timeout: settings::duration("web.shutdown-timeout", &self.shutdown_timeout)?,
                write_stall_timeout: settings::duration("web.request-timeout", &self.request_timeout)?,
            },
        })
    }
}

/// The soft limit on open files (the binary raises it to the hard limit at start).
fn open_file_limit() -> u64 {
    crate::fdlimit::soft().unwrap_or(1024)
}

/// Connections sonde takes by default under a soft limit of `soft` descriptors. The cgroup
/// reader keeps files open up to all but a reserve of min(half the limit, 4096) descriptors
/// (`cgroup/read.rs`, `KEPT_RESERVE`); connections get half of that reserve, the other half
/// stays for eBPF maps, netlink and procfs reads: 256 under the common 1024, 2048 from 16,384 up.
pub fn default_max_connections(soft: u64) -> usize {
    let reserve = (soft / 2).min(4096);
    usize::try_from((reserve / 2).max(1)).unwrap_or(2048)
}

/// Checks the shape of `[host]:port` now, so a typo fails at start with a clear message.
fn validate_listen_address(address: &str) -> Result<(), InvalidValue> {
    let invalid = |reason: &str| InvalidValue::new("web.listen-address", address, reason);
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| invalid("expected [host]:port, e.g. :9977 or 127.0.0.1:9977"))?;
    port.parse::<u16>()
        .map_err(|_| invalid("the port must be a number from 0 to 65535"))?;
    let bracketed = host.starts_with('[') && host.ends_with(']');
    if !bracketed && host.contains(':') {
        return Err(invalid("IPv6 hosts must be in brackets, e.g. [::1]:9977"));
    }
    if host.chars().any(char::is_whitespace) {
        return Err(invalid("the host contains white space"));
    }
    Ok(())
}

// The OS error is the source, not part of the message: `{:#}` prints the chain, and
// both would print it twice.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("listening on {address}")]
    Bind {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("web config file {path}")]
    WebConfig {
        path: String,
        #[source]
        source: WebConfigError,
    },
}

/// A bound, not yet serving, exporter.
pub struct Server {
    listener: TcpListener,
    router: Router,
    scraper: Arc<Scraper>,
    warm_up_timeout: Duration,
    web_config: Arc<LiveWebConfig>,
    limits: Limits,
}

struct AppState {
    scraper: Arc<Scraper>,
    telemetry_path: String,
    scrape_timeout: Duration,
    scrape_timeout_offset: Duration,
}

impl Server {
    /// Binds the listen address and builds the router over the given collectors.
    pub async fn bind(
        web: &WebConfig,
        scrape: &ScrapeConfig,
        collectors: Vec<Arc<dyn Collector>>,
    ) -> Result<Self, ServerError> {
        // The file first: a bad one fails the start before the port is taken.
        let web_config = LiveWebConfig::load(web.config_file.as_deref()).map_err(|source| ServerError::WebConfig {
            path: web
                .config_file
                .as_deref()
                .unwrap_or(std::path::Path::new(""))
                .display()
                .to_string(),
            source,
        })?;
        let listener = bind(&web.listen_address).await?;
        let scraper = Arc::new(Scraper::new(collectors));
        Ok(Self {
            listener,
            router: router(web, scrape, Arc::clone(&scraper)),
            scraper,
            warm_up_timeout: scrape.timeout,
            web_config: Arc::new(web_config),
            limits: web.limits,
        })
    }

    /// The web configuration in force; [`LiveWebConfig::reload`] re-reads it (on SIGHUP).
    pub fn web_config(&self) -> Arc<LiveWebConfig> {
        Arc::clone(&self.web_config)
    }

    /// Whether answers are served over TLS.
    pub fn tls(&self) -> bool {
        self.web_config.current().tls.is_some()
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then lets in-flight requests finish, for
    /// `--web.shutdown-timeout` at most. A first collection runs at once in the background
    /// so `/readyz` turns ready without a scrape; the web config file is compared with what
    /// is in force every second.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ServerError> {
        let scraper = Arc::clone(&self.scraper);
        let timeout = self.warm_up_timeout;
        tokio::spawn(async move { scraper.scrape(timeout).await });
        let web_config = Arc::clone(&self.web_config);
        let has_file = web_config.has_file();
        let watcher = tokio::spawn(async move {
            if !has_file {
                return;
            }
            let mut every = tokio::time::interval(live::CHECK_INTERVAL);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let web_config = Arc::clone(&web_config);
                let _ = tokio::task::spawn_blocking(move || web_config.reload(false)).await;
            }
        });
        listener::serve(self.listener, self.router, self.web_config, self.limits, shutdown).await;
        watcher.abort();
        Ok(())
    }
}

/// Binds `[host]:port`; an empty host means every address, IPv6 and IPv4 where the kernel
/// has IPv6, IPv4 only where it does not.
async fn bind(address: &str) -> Result<TcpListener, ServerError> {
    let error = |source| ServerError::Bind {
        address: address.to_owned(),
        source,
    };
    match address.strip_prefix(':') {
        Some(port) => match listen(&format!("[::]:{port}")).await {
            Ok(listener) => Ok(listener),
            Err(_) => listen(&format!("0.0.0.0:{port}")).await.map_err(error),
        },
        None => listen(address).await.map_err(error),
    }
}

/// The listen backlog asked for. The kernel truncates it to `net.core.somaxconn` (listen(2)),
/// the backlog Go servers such as node_exporter and cAdvisor get. `TcpListener::bind` asks
/// for 128: a crowd of clients connecting at once overflowed it whenever sonde was off the
/// CPU for a moment, and each dropped SYN cost its client a 1 s retransmit.
const LISTEN_BACKLOG: u32 = i32::MAX as u32;

/// Listens on the first of `address`'s resolutions that binds (`TcpListener::bind`'s order
/// and address reuse), with `LISTEN_BACKLOG`.
async fn listen(address: &str) -> std::io::Result<TcpListener> {
    let mut last_error = None;
    for resolved in tokio::net::lookup_host(address).await? {
        let socket = if resolved.is_ipv6() {
            TcpSocket::new_v6()
        } else {
            TcpSocket::new_v4()
        };
        let listening = socket.and_then(|socket| {
            socket.set_reuseaddr(true)?;
            socket.bind(resolved)?;
            socket.listen(LISTEN_BACKLOG)
        });
        match listening {
            Ok(listener) => return Ok(listener),
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error
        .unwrap_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "the address resolves to no address")))
}

fn router(web: &WebConfig, scrape: &ScrapeConfig, scraper: Arc<Scraper>) -> Router {
    let state = Arc::new(AppState {
        scraper,
        telemetry_path: web.telemetry_path.clone(),
        scrape_timeout: scrape.timeout,
        scrape_timeout_offset: scrape.timeout_offset,
    });
    // Excess scrapes are refused at once: a queue would only make every scraper time out.
    let scrape_limit = (web.max_requests > 0).then(|| {
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(|_: tower::BoxError| async {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too many concurrent scrapes, try again later\n",
                )
            }))
            .load_shed()
            .layer(GlobalConcurrencyLimitLayer::new(web.max_requests))
    });
    let metrics_route = match scrape_limit {
        Some(limit) => get(metrics).layer(limit),
        None => get(metrics),
    };
    Router::new()
        .route(&web.telemetry_path, metrics_route)
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/", get(landing_page))
        .with_state(state)
        .layer(
            ServiceBuilder::new()
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::SERVICE_UNAVAILABLE,
                    web.request_timeout,
                ))
                .layer(CompressionLayer::new()),
        )
}

/// The scrape deadline: the scraper's own timeout less the offset, or the configured default.
pub fn scrape_deadline(headers: &HeaderMap, default: Duration, offset: Duration) -> Duration {
    headers
        .get(SCRAPE_TIMEOUT_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|secs| secs.is_finite() && *secs > 0.0)
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .map_or(default, |timeout| {
            // Subtract the margin only when something is left.
            if timeout > offset { timeout - offset } else { timeout }
        })
}

async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let deadline = scrape_deadline(&headers, state.scrape_timeout, state.scrape_timeout_offset);
    let families = state.scraper.scrape(deadline).await;
    let format = Format::negotiate(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let gzip = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(gzip::accepted);
    let encoded = if gzip && format.gzip_work(&families) >= PARALLEL_GZIP_BYTES {
        // Compressing what no earlier answer compressed is CPU work: off the async workers.
        tokio::task::spawn_blocking(move || format.encode_gzip_chunks(&families))
            .await
            .unwrap_or_else(|e| Err(EncodeError::Family(format!("compressing the answer: {e}"))))
    } else if gzip {
        // Inside a window only the scrape's own small families are new: microseconds of
        // compression, less than the hop to another thread (which, on a busy machine, can
        // wait milliseconds for a core).
        format.encode_gzip_chunks(&families)
    } else {
        format.encode_chunks(&families)
    };
    match encoded {
        Ok(chunks) => {
            // The chunks share the families' bytes: nothing is copied into one big buffer.
            let body = Body::new(body::Chunks::new(chunks));
            let mut response = ([(header::CONTENT_TYPE, format.content_type())], body).into_response();
            if gzip {
                // Already compressed: the compression layer leaves an encoded answer alone.
                response
                    .headers_mut()
                    .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                response
                    .headers_mut()
                    .insert(header::VARY, HeaderValue::from_static("accept-encoding"));
            }
            response
        }
        Err(error) => {
            tracing::error!(%error, "cannot encode the scrape");
            (StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n")).into_response()
        }
    }
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let pending = state.scraper.pending();
    if pending.is_empty() {
        "ready\n".into_response()
    } else {
        let text = format!("not ready: first collection pending for {}\n", pending.join(", "));
        (StatusCode::SERVICE_UNAVAILABLE, text).into_response()
    }
}

async fn landing_page(State(state): State<Arc<AppState>>) -> Html<String> {
    let mut rows = String::new();
    for (name, status) in state.scraper.statuses() {
        let outcome = match (status.collections, status.success) {
            (0, _) => "pending".to_owned(),
            (_, true) => "ok".to_owned(),
            (_, false) => format!("failed: {}", status.error.as_deref().unwrap_or("unknown error")),
        };
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{:.3}s</td><td>{}</td></tr>\n",
            escape_html(name),
            escape_html(&outcome),
            status.duration.as_secs_f64(),
            status.collections
        ));
    }
    let path = escape_html(&state.telemetry_path);
    Html(format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>sonde</title></head><body>\n\
         <h1>sonde {version}</h1>\n<p>revision {revision}, rustc {rustc}</p>\n\
         <ul><li><a href=\"{path}\">{path}</a> metrics</li><li><a href=\"/healthz\">/healthz</a> liveness</li>\
         <li><a href=\"/readyz\">/readyz</a> readiness</li></ul>\n\
         <h2>Collectors</h2>\n<table><tr><th>collector</th><th>last collection</th><th>duration</th><th>collections</th></tr>\n\
         {rows}</table>\n</body></html>\n",
        version = build_info::VERSION,
        revision = escape_html(build_info::REVISION),
        rustc = escape_html(build_info::RUSTC),
    ))
}

fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrape_deadline_follows_the_scraper() {
        let default = Duration::from_secs(10);
        let offset = Duration::from_millis(500);
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(SCRAPE_TIMEOUT_HEADER, v.parse().expect("header value"));
            scrape_deadline(&h, default, offset)
        };
        assert_eq!(scrape_deadline(&HeaderMap::new(), default, offset), default);
        assert_eq!(with("5"), Duration::from_millis(4500));
        assert_eq!(with("0.25"), Duration::from_millis(250));
        for bad in ["", "-1", "0", "NaN", "inf", "soon", "1e400"] {
            assert_eq!(with(bad), default, "{bad:?}");
        }
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            escape_html("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
