//! Accepting and serving connections with bounds a slow or hostile client cannot lift:
//!
//! - **A cap on open connections** (`--web.max-connections`), below the descriptor budget.
//!   At the cap, the oldest connection that has not yet sent a complete request head is
//!   closed to make room, so a crowd of clients that never finish their headers cannot lock
//!   out a scraper, which sends its head at once; with no such connection to close, accepting
//!   waits (new clients wait in the kernel's backlog, not on a descriptor of ours).
//! - **A header deadline** (`--web.read-header-timeout`): from accept to the end of the first
//!   request's head, the TLS handshake included.
//! - **An idle deadline** (`--web.idle-timeout`): a kept-alive connection must start its next
//!   request head, and finish it, within this (hyper's header timer, which starts when the
//!   connection turns idle).
//! - **A write deadline** (`--web.request-timeout`): a client that reads nothing of an
//!   answer for this long is closed (`stall.rs`).
//! - **A shutdown that ends**: on shutdown the listener closes, connections still before
//!   their first request close at once, the others finish their request and close, and
//!   after `--web.shutdown-timeout` the rest are abandoned (the process then exits).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use axum::response::IntoResponse;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::time::Instant;
use tower::ServiceExt;

use super::auth::{Authenticator, Verdict};
use super::live::LiveWebConfig;
use super::stall::StallGuard;

/// The connection bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub read_header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub shutdown_timeout: Duration,
    /// A write of an answer that makes no progress for this long closes the connection (a
    /// client that stopped reading); `--web.request-timeout`.
    pub write_stall_timeout: Duration,
}

/// The read buffer of a connection, and so the largest request head.
const MAX_HEAD_BYTES: usize = 32 * 1024;

/// What every connection task shares.
struct Shared {
    router: Router,
    web: Arc<LiveWebConfig>,
    auth: Authenticator,
    limits: Limits,
    /// Connections still before their first complete request head, oldest first: the ones
    /// closed to make room at the cap.
    pending: Mutex<BTreeMap<u64, Arc<Notify>>>,
    shutdown: watch::Receiver<bool>,
}

/// Serves `listener` until `shutdown` resolves, then drains as the module says.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    web: Arc<LiveWebConfig>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let (stop, stopped) = watch::channel(false);
    let shared = Arc::new(Shared {
        router,
        web,
        auth: Authenticator::new(),
        limits,
        pending: Mutex::new(BTreeMap::new()),
        shutdown: stopped,
    });
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut next_id = 0u64;
    tokio::pin!(shutdown);
    loop {
        let slot = match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if let Some(oldest) = shared.pop_oldest_pending() {
                    oldest.notify_one();
                }
                tokio::select! {
                    slot = Arc::clone(&slots).acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                    () = &mut shutdown => break,
                }
            }
        };
        let (tcp, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors or memory: wait rather than spin; the bounds above
                    // make this rare.
                    tracing::warn!(%error, "accept error");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        next_id += 1;
        let id = next_id;
        let evict = Arc::new(Notify::new());
        if let Ok(mut pending) = shared.pending.lock() {
            pending.insert(id, Arc::clone(&evict));
        }
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            connection(tcp, id, evict, &shared).await;
            shared.done_pending(id);
            drop(slot);
        });
    }
    drop(listener);
    let _ = stop.send(true);
    // Every connection holds a slot until it ends: all slots back means all ended.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(limits.shutdown_timeout, slots.acquire_many(all))
        .await
        .is_err()
    {
        let open = limits.max_connections.saturating_sub(slots.available_permits());
        tracing::warn!(open, "shutdown deadline passed; closing the connections still open");
    }
}

impl Shared {
    fn pop_oldest_pending(&self) -> Option<Arc<Notify>> {
        self.pending.lock().ok()?.pop_first().map(|(_, notify)| notify)
    }

    fn done_pending(&self, id: u64) {
        if let Ok(mut pending) = self.pending.lock() {
            pending.remove(&id);
        }
    }
}

/// One connection: TLS when configured, then HTTP/1.1 under the deadlines.
async fn connection(tcp: TcpStream, id: u64, evict: Arc<Notify>, shared: &Arc<Shared>) {
    // An answer is sent as many chunks (each family's shared bytes): without TCP_NODELAY,
    // Nagle's algorithm and the client's delayed ACK stall some answers by 40 ms.
    if let Err(error) = tcp.set_nodelay(true) {
        tracing::debug!(%error, "cannot set TCP_NODELAY on a connection");
    }
    let deadline = Instant::now() + shared.limits.read_header_timeout;
    let mut shutdown = shared.shutdown.clone();
    let Some(acceptor) = shared.web.current().tls.clone() else {
        return http(tcp, id, deadline, evict, shared).await;
    };
    let allowed_sans = shared
        .web
        .current()
        .settings
        .tls
        .as_ref()
        .map(|t| t.client_allowed_sans.clone());
    let handshake = async {
        if !starts_with_tls(&tcp).await {
            refuse_plain_http(tcp).await;
            return None;
        }
        let tls = acceptor.accept(tcp).await.ok()?;
        match allowed_sans {
            Some(sans) if !sans.is_empty() && !client_named(&tls, &sans) => None,
            _ => Some(tls),
        }
    };
    let tls = tokio::select! {
        tls = tokio::time::timeout_at(deadline, handshake) => tls.ok().flatten(),
        () = evict.notified() => None,
        _ = shutdown.wait_for(|stop| *stop) => None,
    };
    if let Some(tls) = tls {
        http(tls, id, deadline, evict, shared).await;
    }
}

/// Whether the client's (verified) certificate names one of `sans` among its subject
/// alternative names, as the toolkit's `client_allowed_sans` asks.
fn client_named(
    tls: &tokio_rustls::server::TlsStream<TcpStream>,
    sans: &[rustls::pki_types::ServerName<'static>],
) -> bool {
    let Some(cert) = tls.get_ref().1.peer_certificates().and_then(|c| c.first()) else {
        return false;
    };
    let Ok(cert) = webpki::EndEntityCert::try_from(cert) else {
        return false;
    };
    sans.iter()
        .any(|name| cert.verify_is_valid_for_subject_name(name).is_ok())
}

/// Whether the client's first byte opens a TLS handshake record (content type 22).
async fn starts_with_tls(tcp: &TcpStream) -> bool {
    let mut first = [0u8; 1];
    matches!(tcp.peek(&mut first).await, Ok(1) if first[0] == 0x16)
}

/// Tells a plain-HTTP client on the TLS port what it did, as Go's server does, then closes.
async fn refuse_plain_http(mut tcp: TcpStream) {
    let _ = tcp
        .write_all(
            b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n\
              Client sent an HTTP request to an HTTPS server.\n",
        )
        .await;
    let _ = tcp.shutdown().await;
}

async fn http<I>(io: I, id: u64, deadline: Instant, evict: Arc<Notify>, shared: &Arc<Shared>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let started = Arc::new(AtomicBool::new(false));
    let service = {
        let shared = Arc::clone(shared);
        let started = Arc::clone(&started);
        hyper::service::service_fn(move |request: Request<Incoming>| {
            if !started.swap(true, Ordering::AcqRel) {
                shared.done_pending(id);
            }
            let shared = Arc::clone(&shared);
            async move { Ok::<_, Infallible>(respond(&shared, request).await) }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(shared.limits.idle_timeout)
        // A request head larger than this gets 431. hyper's default buffer (~400 KiB) would
        // let each of the allowed connections hold that much while it dribbles its head in;
        // a scraper's head is under 1 KiB.
        .max_header_size(MAX_HEAD_BYTES)
        .max_buf_size(2 * MAX_HEAD_BYTES)
        .keep_alive(true);
    let io = StallGuard::new(io, shared.limits.write_stall_timeout);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut shutdown = shared.shutdown.clone();
    let mut before_first_request = true;
    let mut draining = false;
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            () = tokio::time::sleep_until(deadline), if before_first_request => {
                if !started.load(Ordering::Acquire) {
                    return;
                }
                before_first_request = false;
            }
            () = evict.notified(), if before_first_request => {
                if !started.load(Ordering::Acquire) {
                    return;
                }
                before_first_request = false;
            }
            _ = shutdown.wait_for(|stop| *stop), if !draining => {
                if !started.load(Ordering::Acquire) {
                    return;
                }
                // Finish the request in flight, then close.
                conn.as_mut().graceful_shutdown();
                draining = true;
            }
        }
    }
}

/// The web configuration's gate (rate limit, basic authentication) around the router, and
/// its headers on every answer.
async fn respond(shared: &Shared, request: Request<Incoming>) -> Response<Body> {
    let active = shared.web.current();
    let mut response = if active.rate_limiter.as_ref().is_some_and(|limiter| !limiter.allow()) {
        (StatusCode::TOO_MANY_REQUESTS, "Too Many Requests\n").into_response()
    } else {
        let verdict = if active.settings.users.is_empty() {
            Verdict::Allowed
        } else {
            shared
                .auth
                .check(&active.settings.users, request.headers().get(header::AUTHORIZATION))
                .await
        };
        match verdict {
            Verdict::Allowed => match shared.router.clone().oneshot(request.map(Body::new)).await {
                Ok(response) => response,
                Err(never) => match never {},
            },
            Verdict::Denied => (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic"))],
                "Unauthorized\n",
            )
                .into_response(),
            Verdict::Busy => (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, HeaderValue::from_static("1"))],
                "too many password checks at once, try again\n",
            )
                .into_response(),
        }
    };
    for (name, value) in &active.settings.headers {
        response.headers_mut().insert(name.clone(), value.clone());
    }
    response
}
