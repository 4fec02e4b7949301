//! Scraping `/metrics`: one blocking HTTP/1.0 GET over a plain socket, so sync tests,
//! async tests and benchmarks share it. From an async test it holds only the test's own
//! thread (a multi-thread runtime's workers keep serving any in-process stand-in); run
//! concurrent scrapes with `tokio::task::spawn_blocking`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::Sonde;

pub const OPENMETRICS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
pub const PROTOBUF_ACCEPT: &str =
    "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.9,*/*;q=0.1";
/// The text format (0.0.4).
pub const TEXT_ACCEPT: &str = "text/plain";

/// How long one scrape may take before the test fails (longer than any scrape deadline the
/// tests set).
const SCRAPE_LIMIT: Duration = Duration::from_secs(120);
/// How long [`scrape_until`] waits for its condition.
const UNTIL_LIMIT: Duration = Duration::from_secs(90);

/// What answers `/metrics`: a started sonde, or an address (a sonde in a container).
pub trait Endpoint {
    fn metrics_addr(&self) -> SocketAddr;
}

impl Endpoint for Sonde {
    fn metrics_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Endpoint for SocketAddr {
    fn metrics_addr(&self) -> SocketAddr {
        *self
    }
}

/// `GET /metrics` with this `Accept` header: the body of a 200 answer, or why there is none.
pub fn fetch(target: &impl Endpoint, accept: &str) -> Result<Vec<u8>, String> {
    let addr = target.metrics_addr();
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(10)).map_err(|e| format!("connect to {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(SCRAPE_LIMIT))
        .map_err(|e| format!("set a read timeout: {e}"))?;
    write!(
        stream,
        "GET /metrics HTTP/1.0\r\nHost: sonde\r\nAccept: {accept}\r\n\r\n"
    )
    .map_err(|e| format!("send the request to {addr}: {e}"))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .map_err(|e| format!("read the answer from {addr}: {e}"))?;
    let end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("not an HTTP answer: {:?}", String::from_utf8_lossy(&response)))?;
    let head = String::from_utf8_lossy(&response[..end]);
    let status = head.lines().next().unwrap_or_default();
    if !(status.starts_with("HTTP/1.0 200") || status.starts_with("HTTP/1.1 200")) {
        return Err(format!("{head}\n\n{}", String::from_utf8_lossy(&response[end + 4..])));
    }
    Ok(response.split_off(end + 4))
}

/// One scrape in the format `accept` asks for; it must answer 200 in UTF-8.
pub fn scrape_as(target: &impl Endpoint, accept: &str) -> String {
    let body = fetch(target, accept).unwrap_or_else(|e| panic!("scrape: {e}"));
    String::from_utf8(body).expect("a UTF-8 exposition")
}

/// One scrape in the Prometheus text format.
pub fn scrape(target: &impl Endpoint) -> String {
    scrape_as(target, TEXT_ACCEPT)
}

/// Scrapes (text format) every 100 ms until `ready` holds for a scrape, and returns that
/// scrape; fails after 90 s, with the last scrape. A scrape that fails meanwhile (the
/// endpoint not up yet) counts as not ready.
pub fn scrape_until(target: &impl Endpoint, what: &str, mut ready: impl FnMut(&str) -> bool) -> String {
    let start = Instant::now();
    loop {
        let last = match fetch(target, TEXT_ACCEPT) {
            Ok(body) => {
                let text = String::from_utf8(body).expect("a UTF-8 exposition");
                if ready(&text) {
                    return text;
                }
                text
            }
            Err(error) => format!("(the scrape failed: {error})"),
        };
        assert!(
            start.elapsed() < UNTIL_LIMIT,
            "never saw {what} in {UNTIL_LIMIT:?}; the last scrape:\n{last}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
