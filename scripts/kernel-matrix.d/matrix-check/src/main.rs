//! The kernel matrix's checks of sonde's `connection` collector (and whether every collector
//! reports), run against a live sonde: each check makes loopback traffic whose figures it
//! knows exactly, scrapes `/metrics` before and after, and compares the deltas of the series
//! of its own server port (one port per check) with the truth. Counters must equal the truth
//! exactly and may never exceed it on any scrape on the way; once equal they must stay so on
//! the next scrape (nothing counted twice). Closed connections reach sonde at a later
//! scrape, so each check scrapes until the figures are in or its deadline passes.
//!
//! ```text
//! matrix-check [URL] [--wait SECONDS] [--deadline SECONDS] [--port-base PORT] [--only NAME,...]
//! ```
//!
//! URL defaults to `http://127.0.0.1:9977/metrics` (`host:port` means `/metrics` there).
//! `--wait`: how long sonde may take to report its first collection (default 120 s);
//! `--deadline`: how long each check waits for its figures (default 30 s); `--port-base`:
//! the first server port tried (default 7100; ports must lie outside sonde's
//! `--connection.ephemeral-port-range`, else the `port` label is empty). Needs root (a
//! network namespace) and a sonde with the connection collector, on the same kernel.
//!
//! Prints one line per check, `MATRIX check <name> ok|FAIL <detail>`, and exits 1 when a
//! check failed. scripts/kernel-matrix runs it in each guest and turns the lines into the
//! table's columns.

mod metrics;
mod no_udp_probe;
mod stats;
mod sys;

use metrics::Scrape;
use std::cell::Cell;
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// What a check returns: a detail line either way.
type Outcome = Result<String, String>;

/// Timeout of every socket read and write of the checks' own traffic.
const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// A check: makes its traffic and compares sonde's figures with it.
type Check = fn(&Ctx) -> Outcome;

/// The traffic checks, in the order they run (and the matrix's columns).
const CHECKS: &[(&str, Check)] = &[
    ("tcp-exact", tcp_exact),
    ("tcp-netns", tcp_netns),
    ("tcp6-exact", tcp6_exact),
    ("udp-exact", udp_exact),
    ("udp6-exact", udp6_exact),
    ("connect-failure", connect_failure),
    ("retransmits", retransmits),
    ("retransmits-gso", retransmits_gso),
    ("churn", churn),
    ("attached", attached),
    ("tcp-no-udp-probe", no_udp_probe::tcp_no_udp_probe),
    ("netns-once", netns_once),
];

/// The collectors whose `sonde_collector_success` is checked (each a check of its name).
const COLLECTORS: &[&str] = &["host", "container", "connection"];

struct Ctx {
    url: String,
    deadline: Duration,
    next_port: Cell<u16>,
}

impl Ctx {
    fn scrape(&self) -> Result<Scrape, String> {
        Scrape::fetch(&self.url)
    }

    /// A port free on 127.0.0.1 for both TCP and UDP, never handed out before.
    fn port(&self) -> Result<u16, String> {
        for _ in 0..200 {
            let port = self.next_port.get();
            self.next_port.set(port.checked_add(1).ok_or("no port left")?);
            let free = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
                && UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_ok();
            if free {
                return Ok(port);
            }
        }
        Err("no free port in 200 tries".into())
    }
}

fn main() {
    let mut url = "http://127.0.0.1:9977/metrics".to_owned();
    let (mut wait, mut deadline, mut port_base) = (120u64, 30u64, 7100u16);
    let mut only: Option<Vec<String>> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| args.next().ok_or_else(|| format!("{flag} needs a value"));
        let parsed = match arg.as_str() {
            "--wait" => value("--wait")
                .and_then(|v| v.parse().map_err(|e| format!("--wait: {e}")))
                .map(|v| wait = v),
            "--deadline" => value("--deadline")
                .and_then(|v| v.parse().map_err(|e| format!("--deadline: {e}")))
                .map(|v| deadline = v),
            "--port-base" => value("--port-base")
                .and_then(|v| v.parse().map_err(|e| format!("--port-base: {e}")))
                .map(|v| port_base = v),
            "--only" => value("--only").map(|v| only = Some(v.split(',').map(str::to_owned).collect())),
            "-h" | "--help" => Err(String::new()),
            other if !other.starts_with('-') => {
                url = other.to_owned();
                Ok(())
            }
            other => Err(format!("unknown flag {other}")),
        };
        if let Err(problem) = parsed {
            eprintln!(
                "{problem}\nusage: matrix-check [URL] [--wait S] [--deadline S] [--port-base PORT] [--only NAME,...]"
            );
            std::process::exit(2);
        }
    }
    let known = |name: &String| COLLECTORS.contains(&name.as_str()) || CHECKS.iter().any(|(n, _)| n == name);
    if let Some(unknown) = only.iter().flatten().find(|name| !known(name)) {
        eprintln!("--only: no check named {unknown}");
        std::process::exit(2);
    }
    let ctx = Ctx {
        url,
        deadline: Duration::from_secs(deadline),
        next_port: Cell::new(port_base),
    };
    let wanted = |name: &str| only.as_ref().is_none_or(|names| names.iter().any(|n| n == name));

    let mut failed = false;
    let mut report = |name: &str, outcome: Outcome| {
        match outcome {
            Ok(detail) => println!("MATRIX check {name} ok {detail}"),
            Err(detail) => {
                failed = true;
                println!("MATRIX check {name} FAIL {}", detail.replace('\n', " | "));
            }
        }
        let _ = std::io::stdout().flush();
    };

    // sonde loads the probes at its first collection: wait until the connection collector
    // has reported once, then read every collector's outcome.
    let first = wait_for_sonde(&ctx, Duration::from_secs(wait));
    let connection_ok = match &first {
        Ok(scrape) => {
            for &collector in COLLECTORS.iter().filter(|c| wanted(c)) {
                let value = scrape.get("sonde_collector_success", &[("collector", collector)]);
                let outcome = match value {
                    Some(1.0) => Ok("sonde_collector_success 1".to_owned()),
                    Some(v) => Err(format!("sonde_collector_success {v}")),
                    None => Err("sonde_collector_success missing".to_owned()),
                };
                report(collector, outcome);
            }
            scrape.get("sonde_collector_success", &[("collector", "connection")]) == Some(1.0)
        }
        Err(problem) => {
            for &collector in COLLECTORS.iter().filter(|c| wanted(c)) {
                report(collector, Err(problem.clone()));
            }
            false
        }
    };

    for &(name, check) in CHECKS.iter().filter(|(name, _)| wanted(name)) {
        if !connection_ok {
            report(
                name,
                Err("not run: the connection collector does not report success".into()),
            );
            continue;
        }
        let start = Instant::now();
        let outcome = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&ctx))) {
            Ok(outcome) => outcome,
            Err(_) => Err("the check panicked".to_owned()),
        };
        let took = format!(" ({:.1} s)", start.elapsed().as_secs_f64());
        report(name, outcome.map(|d| d + &took).map_err(|d| d + &took));
    }
    std::process::exit(i32::from(failed));
}

/// Scrapes until `sonde_collector_success{collector="connection"}` is there.
fn wait_for_sonde(ctx: &Ctx, wait: Duration) -> Result<Scrape, String> {
    let start = Instant::now();
    loop {
        let last = match ctx.scrape() {
            Ok(scrape)
                if scrape
                    .get("sonde_collector_success", &[("collector", "connection")])
                    .is_some() =>
            {
                return Ok(scrape);
            }
            Ok(_) => "no sonde_collector_success{collector=\"connection\"} yet".to_owned(),
            Err(problem) => problem,
        };
        if start.elapsed() > wait {
            return Err(format!("sonde not ready after {} s: {last}", wait.as_secs()));
        }
        thread::sleep(Duration::from_millis(500));
    }
}

// ---- expected figures -------------------------------------------------------------------

/// Counters are compared as deltas from the scrape before the traffic; gauges as they are.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Counter,
    Gauge,
}

/// One expected figure: the sum of the series named `name` with the labels of `filter`.
struct Expect {
    name: &'static str,
    filter: Vec<(&'static str, String)>,
    want: u64,
    kind: Kind,
}

impl Expect {
    fn new(name: &'static str, direction: &'static str, port: u16, want: u64) -> Expect {
        let kind = if name.ends_with("_total") {
            Kind::Counter
        } else {
            Kind::Gauge
        };
        Expect {
            name,
            filter: vec![("direction", direction.to_owned()), ("port", port.to_string())],
            want,
            kind,
        }
    }

    fn actual(&self, before: &Scrape, now: &Scrape) -> f64 {
        let filter: Vec<(&str, &str)> = self.filter.iter().map(|(k, v)| (*k, v.as_str())).collect();
        match self.kind {
            Kind::Counter => now.sum(self.name, &filter) - before.sum(self.name, &filter),
            Kind::Gauge => now.sum(self.name, &filter),
        }
    }

    fn describe(&self, actual: f64) -> String {
        let labels: Vec<String> = self.filter.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
        let delta = if self.kind == Kind::Counter { " (delta)" } else { "" };
        format!(
            "{}{{{}}}{delta} = {actual}, want {}",
            self.name,
            labels.join(","),
            self.want
        )
    }
}

/// Scrapes until every figure of `expects` is right (counters as deltas from `before`),
/// then once more, which must agree. A counter above the truth on any scrape fails at once.
fn settle(ctx: &Ctx, before: &Scrape, expects: &[Expect]) -> Result<Scrape, String> {
    let start = Instant::now();
    let wrong = |now: &Scrape| -> Vec<String> {
        expects
            .iter()
            .filter(|e| e.actual(before, now) != e.want as f64)
            .map(|e| e.describe(e.actual(before, now)))
            .collect()
    };
    loop {
        let now = ctx.scrape()?;
        if let Some(e) = expects
            .iter()
            .find(|e| e.kind == Kind::Counter && e.actual(before, &now) > e.want as f64)
        {
            return Err(format!("over the truth: {}", e.describe(e.actual(before, &now))));
        }
        let problems = wrong(&now);
        if problems.is_empty() {
            thread::sleep(Duration::from_millis(300));
            let again = ctx.scrape()?;
            let problems = wrong(&again);
            if !problems.is_empty() {
                return Err(format!(
                    "right, then changed on the next scrape: {}",
                    problems.join("; ")
                ));
            }
            return Ok(again);
        }
        if start.elapsed() > ctx.deadline {
            return Err(format!("after {} s: {}", ctx.deadline.as_secs(), problems.join("; ")));
        }
        thread::sleep(Duration::from_millis(250));
    }
}

/// Both sides of `n` connections to `port`: each client sent `a` bytes and received `b`;
/// `open` of them are still open.
fn tcp_expects(port: u16, n: u64, a: u64, b: u64, open: u64) -> Vec<Expect> {
    vec![
        Expect::new("sonde_tcp_bytes_sent_total", "outbound", port, n * a),
        Expect::new("sonde_tcp_bytes_received_total", "outbound", port, n * b),
        Expect::new("sonde_tcp_bytes_sent_total", "inbound", port, n * b),
        Expect::new("sonde_tcp_bytes_received_total", "inbound", port, n * a),
        Expect::new("sonde_tcp_connects_total", "outbound", port, n),
        Expect::new("sonde_tcp_connects_total", "inbound", port, n),
        Expect::new("sonde_tcp_connect_failures_total", "outbound", port, 0),
        Expect::new("sonde_tcp_active_connections", "outbound", port, open),
        Expect::new("sonde_tcp_active_connections", "inbound", port, open),
    ]
}

// ---- traffic -----------------------------------------------------------------------------

/// A connection's client and server ends.
struct Pair {
    client: TcpStream,
    server: TcpStream,
}

fn io_err(what: &str) -> impl Fn(std::io::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

fn with_timeouts(stream: TcpStream) -> Result<TcpStream, String> {
    stream.set_read_timeout(Some(IO_TIMEOUT)).map_err(io_err("timeout"))?;
    stream.set_write_timeout(Some(IO_TIMEOUT)).map_err(io_err("timeout"))?;
    Ok(stream)
}

/// Makes `n` connections to `listener`, on `127.0.0.1:port` (in the calling thread's network
/// namespace), one after another: the client writes `a` bytes, the server reads them all and
/// answers `b` bytes, which the client reads all. Every byte is delivered when it returns.
fn exchange(listener: TcpListener, port: u16, n: usize, a: usize, b: usize) -> Result<Vec<Pair>, String> {
    exchange_at(listener, Ipv4Addr::LOCALHOST.into(), port, n, a, b)
}

/// [`exchange`] with the server at `address`.
fn exchange_at(
    listener: TcpListener,
    address: IpAddr,
    port: u16,
    n: usize,
    a: usize,
    b: usize,
) -> Result<Vec<Pair>, String> {
    // On a failure the server thread may stay blocked in accept; the process ends anyway.
    let server = thread::spawn(move || -> Result<Vec<TcpStream>, String> {
        let mut streams = Vec::with_capacity(n);
        for _ in 0..n {
            let (stream, _) = listener.accept().map_err(io_err("accept"))?;
            let mut stream = with_timeouts(stream)?;
            let mut request = vec![0u8; a];
            stream.read_exact(&mut request).map_err(io_err("server read"))?;
            stream.write_all(&vec![b'a'; b]).map_err(io_err("server write"))?;
            streams.push(stream);
        }
        Ok(streams)
    });
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        let stream = TcpStream::connect((address, port)).map_err(io_err("connect"))?;
        let mut stream = with_timeouts(stream)?;
        stream.write_all(&vec![b'q'; a]).map_err(io_err("client write"))?;
        let mut answer = vec![0u8; b];
        stream.read_exact(&mut answer).map_err(io_err("client read"))?;
        clients.push(stream);
    }
    let mut servers = server.join().map_err(|_| "the server thread panicked".to_owned())??;
    // Pair each client with the server end whose peer it is.
    clients
        .into_iter()
        .map(|client| {
            let local = client.local_addr().map_err(io_err("address"))?;
            let i = servers
                .iter()
                .position(|s| s.peer_addr().ok() == Some(local))
                .ok_or_else(|| format!("no server end for {local}"))?;
            Ok(Pair {
                client,
                server: servers.swap_remove(i),
            })
        })
        .collect()
}

/// Closes a connection cleanly on both sides: the client shuts down its sending side, the
/// server reads the end and closes, the client reads the server's end and closes.
fn close(pair: Pair) -> Result<(), String> {
    let Pair { mut client, mut server } = pair;
    client.shutdown(Shutdown::Write).map_err(io_err("shutdown"))?;
    let mut rest = Vec::new();
    server
        .read_to_end(&mut rest)
        .map_err(io_err("server read to the end"))?;
    drop(server);
    client
        .read_to_end(&mut rest)
        .map_err(io_err("client read to the end"))?;
    if !rest.is_empty() {
        return Err(format!("{} unexpected bytes at the end", rest.len()));
    }
    Ok(())
}

/// `n` connections with `a` bytes out and `b` back each; `kept` of them stay open (idle,
/// everything delivered) during a scrape, the others are closed first; then the rest close.
fn tcp_with_kept(ctx: &Ctx, port: u16, before: &Scrape, mut pairs: Vec<Pair>, a: u64, b: u64, kept: usize) -> Outcome {
    let n = pairs.len();
    let open = pairs.split_off(n - kept);
    for pair in pairs {
        close(pair)?;
    }
    let (n64, kept64) = (n as u64, kept as u64);
    settle(ctx, before, &tcp_expects(port, n64, a, b, kept64)).map_err(|e| format!("{kept} open: {e}"))?;
    for pair in open {
        close(pair)?;
    }
    settle(ctx, before, &tcp_expects(port, n64, a, b, 0)).map_err(|e| format!("all closed: {e}"))?;
    Ok(format!(
        "port {port}: {n} connections x ({a} B out, {b} B back), {kept} open at a scrape, then all closed"
    ))
}

/// 20 connections, 10 closed and 10 open at the scrape; then all closed.
fn tcp_exact(ctx: &Ctx) -> Outcome {
    let (n, a, b, kept) = (20, 100_000, 30_000, 10);
    let port = ctx.port()?;
    let before = ctx.scrape()?;
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).map_err(io_err("bind"))?;
    let pairs = exchange(listener, port, n, a, b)?;
    tcp_with_kept(ctx, port, &before, pairs, a as u64, b as u64, kept)
}

/// The same over IPv6 (6 connections, 3 open).
fn tcp6_exact(ctx: &Ctx) -> Outcome {
    let (n, a, b, kept) = (6, 20_000, 7_000, 3);
    let port = ctx.port()?;
    let before = ctx.scrape()?;
    let listener = TcpListener::bind((Ipv6Addr::LOCALHOST, port)).map_err(io_err("bind"))?;
    let pairs = exchange_at(listener, Ipv6Addr::LOCALHOST.into(), port, n, a, b)?;
    tcp_with_kept(ctx, port, &before, pairs, a as u64, b as u64, kept).map(|d| d + ", over IPv6")
}

/// The same in a network namespace of its own (sonde runs in the initial one).
fn tcp_netns(ctx: &Ctx) -> Outcome {
    let (n, a, b, kept) = (6, 10_000, 4_000, 3);
    let port = ctx.port()?;
    let before = ctx.scrape()?;
    // A process of its own holds the namespace (as a container's do); a thread enters it and
    // makes the sockets, which live there wherever they are used.
    let holder = sys::NetnsHolder::spawn().map_err(io_err("new network namespace"))?;
    let pairs = thread::scope(|scope| {
        scope
            .spawn(|| {
                holder.enter().map_err(io_err("entering the namespace"))?;
                let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).map_err(io_err("bind"))?;
                exchange(listener, port, n, a, b)
            })
            .join()
            .map_err(|_| "the namespace thread panicked".to_owned())?
    })?;
    let outcome = tcp_with_kept(ctx, port, &before, pairs, a as u64, b as u64, kept);
    drop(holder);
    outcome.map(|d| d + ", in a network namespace another process holds")
}

/// 20 datagrams each way between two UDP sockets, of distinct known sizes.
fn udp_exact(ctx: &Ctx) -> Outcome {
    udp_exact_at(ctx, Ipv4Addr::LOCALHOST.into())
}

/// The same over IPv6 (before 6.3, the IPv6 functions' own probes count it).
fn udp6_exact(ctx: &Ctx) -> Outcome {
    udp_exact_at(ctx, Ipv6Addr::LOCALHOST.into()).map(|d| d + ", over IPv6")
}

fn udp_exact_at(ctx: &Ctx, address: IpAddr) -> Outcome {
    let port = ctx.port()?;
    let before = ctx.scrape()?;
    let server = UdpSocket::bind((address, port)).map_err(io_err("bind"))?;
    let client = UdpSocket::bind((address, 0)).map_err(io_err("bind"))?;
    client.connect((address, port)).map_err(io_err("connect"))?;
    for socket in [&server, &client] {
        socket.set_read_timeout(Some(IO_TIMEOUT)).map_err(io_err("timeout"))?;
    }
    let (mut requests, mut answers) = (0u64, 0u64);
    let mut buf = vec![0u8; 65_536];
    for i in 0..20 {
        let (request, answer) = (100 + 31 * i, 60 + 17 * i);
        client.send(&vec![b'q'; request]).map_err(io_err("send"))?;
        let (got, from) = server.recv_from(&mut buf).map_err(io_err("server receive"))?;
        if got != request {
            return Err(format!("the server received {got} bytes, not {request}"));
        }
        server.send_to(&vec![b'a'; answer], from).map_err(io_err("answer"))?;
        let got = client.recv(&mut buf).map_err(io_err("client receive"))?;
        if got != answer {
            return Err(format!("the client received {got} bytes, not {answer}"));
        }
        requests += request as u64;
        answers += answer as u64;
    }
    // The client sent first: it is the outbound side.
    settle(
        ctx,
        &before,
        &[
            Expect::new("sonde_udp_bytes_sent_total", "outbound", port, requests),
            Expect::new("sonde_udp_bytes_received_total", "outbound", port, answers),
            Expect::new("sonde_udp_bytes_sent_total", "inbound", port, answers),
            Expect::new("sonde_udp_bytes_received_total", "inbound", port, requests),
        ],
    )?;
    Ok(format!(
        "port {port}: 20 datagrams each way, {requests} B out, {answers} B back"
    ))
}

/// Connects to a port nobody listens on, refused each time.
fn connect_failure(ctx: &Ctx) -> Outcome {
    const K: u64 = 5;
    let port = ctx.port()?;
    let before = ctx.scrape()?;
    for _ in 0..K {
        match TcpStream::connect((Ipv4Addr::LOCALHOST, port)) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {}
            Err(e) => return Err(format!("connect: {e}, not refused")),
            Ok(_) => return Err(format!("something listens on {port}")),
        }
    }
    settle(
        ctx,
        &before,
        &[
            Expect::new("sonde_tcp_connect_failures_total", "outbound", port, K),
            Expect::new("sonde_tcp_connects_total", "outbound", port, 0),
        ],
    )?;
    Ok(format!("port {port}: {K} refused connects"))
}

/// One connection whose server drops the client's marked segment (a socket filter) for
/// ~50 ms: the client must retransmit it.
fn retransmits(ctx: &Ctx) -> Outcome {
    retransmit_case(ctx, None, 500, Duration::from_millis(50))
}

/// The same with a 64 KiB marked write in segments of 1,000 bytes (the server announces an
/// MSS of 1,000), dropped for 500 ms: many segments lost, several timeouts, and
/// retransmissions of several segments at once once the window opens again.
fn retransmits_gso(ctx: &Ctx) -> Outcome {
    retransmit_case(ctx, Some(1_000), 64 << 10, Duration::from_millis(500))
}

/// A connection (the server announcing `mss` when given) exchanges 1,000 bytes and 700
/// back; then the server's socket filter drops every segment of the client's `marked`
/// marked bytes for `hold`, so the client must retransmit them; the server answers 700
/// bytes more. sonde's retransmits of each side must equal the side's own count
/// (`tcpi_total_retrans`, read just before the close), and the bytes stay exact.
fn retransmit_case(ctx: &Ctx, mss: Option<i32>, marked: usize, hold: Duration) -> Outcome {
    const MARKER: u8 = 0xa5;
    let (first, answer) = (1_000usize, 700usize);
    let port = ctx.port()?;
    let before = ctx.scrape()?;
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).map_err(io_err("bind"))?;
    if let Some(mss) = mss {
        // Inherited by the accepted socket, and announced in its SYN-ACK.
        sys::set_maxseg(&listener, mss).map_err(io_err("TCP_MAXSEG"))?;
    }
    // A first exchange, unfiltered, so both sides have an RTT and nothing is in flight.
    let mut pairs = exchange(listener, port, 1, first, answer)?;
    let Pair { mut client, mut server } = pairs.pop().ok_or("no connection")?;
    sys::drop_segments_starting_with(&server, MARKER).map_err(io_err("attach the filter"))?;
    // Written by a thread: a marked write larger than the socket buffers blocks until the
    // filter is gone.
    let writer = {
        let mut client = client.try_clone().map_err(io_err("clone"))?;
        thread::spawn(move || client.write_all(&vec![MARKER; marked]).map_err(io_err("client write")))
    };
    thread::sleep(hold);
    sys::detach_filter(&server).map_err(io_err("detach the filter"))?;
    let mut got = vec![0u8; marked];
    server
        .read_exact(&mut got)
        .map_err(io_err("server read of the marked bytes"))?;
    writer.join().map_err(|_| "the writer panicked".to_owned())??;
    server.write_all(&vec![b'a'; answer]).map_err(io_err("server write"))?;
    let mut got = vec![0u8; answer];
    client.read_exact(&mut got).map_err(io_err("client read"))?;
    let client_retrans = sys::total_retrans(&client).map_err(io_err("TCP_INFO"))?;
    let server_retrans = sys::total_retrans(&server).map_err(io_err("TCP_INFO"))?;
    close(Pair { client, server })?;
    if client_retrans == 0 {
        return Err("the filter caused no retransmit (tcpi_total_retrans 0)".into());
    }
    let (sent, back) = ((first + marked) as u64, (answer * 2) as u64);
    let mut expects = tcp_expects(port, 1, sent, back, 0);
    expects.push(Expect::new(
        "sonde_tcp_retransmits_total",
        "outbound",
        port,
        client_retrans.into(),
    ));
    expects.push(Expect::new(
        "sonde_tcp_retransmits_total",
        "inbound",
        port,
        server_retrans.into(),
    ));
    settle(ctx, &before, &expects)
        .map_err(|e| format!("tcpi_total_retrans client {client_retrans}, server {server_retrans}: {e}"))?;
    Ok(format!(
        "port {port}: tcpi_total_retrans client {client_retrans}, server {server_retrans}; sonde the same; bytes exact"
    ))
}

/// The series whose values may never go down: sonde_tcp_* counters and histograms, and
/// sonde_ebpf_events_lost_total.
fn monotonic(name: &str) -> bool {
    (name.starts_with("sonde_tcp_") && name != "sonde_tcp_active_connections") || name == "sonde_ebpf_events_lost_total"
}

/// Every scrape's monotonic series against the previous scrape's.
#[derive(Default)]
struct Watch {
    previous: HashMap<String, f64>,
    scrapes: u32,
    decreases: Vec<String>,
}

impl Watch {
    fn observe(&mut self, scrape: &Scrape) {
        self.scrapes += 1;
        for sample in scrape.samples.iter().filter(|s| monotonic(&s.name)) {
            let series = sample.series();
            if let Some(&was) = self.previous.get(&series)
                && sample.value < was
            {
                self.decreases
                    .push(format!("{series} went from {was} to {}", sample.value));
            }
            self.previous.insert(series, sample.value);
        }
    }
}

/// 2,000 short connections (8 bytes out, 5 back, closed) while scraping: no counter ever
/// decreases, the totals are exact and no event is lost.
fn churn(ctx: &Ctx) -> Outcome {
    const N: usize = 2_000;
    let port = ctx.port()?;
    let before = ctx.scrape()?;
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).map_err(io_err("bind"))?;
    let server = thread::spawn(move || -> Result<(), String> {
        for _ in 0..N {
            let (stream, _) = listener.accept().map_err(io_err("accept"))?;
            let mut stream = with_timeouts(stream)?;
            let mut request = [0u8; 8];
            stream.read_exact(&mut request).map_err(io_err("server read"))?;
            stream.write_all(&[b'a'; 5]).map_err(io_err("server write"))?;
            let mut end = Vec::new();
            stream.read_to_end(&mut end).map_err(io_err("server read to the end"))?;
        }
        Ok(())
    });
    // One scrape at a time (fetched and observed under the lock, so they stay in order): a
    // scraper thread all along, and the churn loop itself every 500 connections.
    let watch = Arc::new(Mutex::new(Watch::default()));
    let observe = |watch: &Mutex<Watch>, url: &str| -> Result<(), String> {
        let mut watch = watch.lock().map_err(|_| "poisoned".to_owned())?;
        let scrape = Scrape::fetch(url)?;
        watch.observe(&scrape);
        Ok(())
    };
    let finished = Arc::new(AtomicBool::new(false));
    let scraper = {
        let (watch, finished, url) = (watch.clone(), finished.clone(), ctx.url.clone());
        thread::spawn(move || -> Result<(), String> {
            while !finished.load(Ordering::SeqCst) {
                observe(&watch, &url)?;
                thread::sleep(Duration::from_millis(100));
            }
            Ok(())
        })
    };
    let churned = (|| -> Result<(), String> {
        for i in 0..N {
            let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).map_err(io_err("connect"))?;
            let mut stream = with_timeouts(stream)?;
            stream.write_all(&[b'q'; 8]).map_err(io_err("client write"))?;
            let mut answer = [0u8; 5];
            stream.read_exact(&mut answer).map_err(io_err("client read"))?;
            if i % 500 == 499 {
                observe(&watch, &ctx.url)?;
            }
        }
        Ok(())
    })();
    finished.store(true, Ordering::SeqCst);
    churned?;
    server.join().map_err(|_| "the server thread panicked".to_owned())??;
    scraper.join().map_err(|_| "the scraper thread panicked".to_owned())??;

    let n = N as u64;
    let last = settle(
        ctx,
        &before,
        &[
            Expect::new("sonde_tcp_connects_total", "outbound", port, n),
            Expect::new("sonde_tcp_connects_total", "inbound", port, n),
            Expect::new("sonde_tcp_bytes_sent_total", "outbound", port, 8 * n),
            Expect::new("sonde_tcp_bytes_received_total", "outbound", port, 5 * n),
            Expect::new("sonde_tcp_bytes_sent_total", "inbound", port, 5 * n),
            Expect::new("sonde_tcp_bytes_received_total", "inbound", port, 8 * n),
            Expect::new("sonde_tcp_active_connections", "outbound", port, 0),
            Expect::new("sonde_tcp_active_connections", "inbound", port, 0),
        ],
    )?;
    let mut watch = watch.lock().map_err(|_| "poisoned".to_owned())?;
    watch.observe(&last);
    if !watch.decreases.is_empty() {
        return Err(format!("decreasing counters: {}", watch.decreases.join("; ")));
    }
    let lost: Vec<String> = last
        .samples
        .iter()
        .filter(|s| s.name == "sonde_ebpf_events_lost_total" && s.value != 0.0)
        .map(|s| format!("{} {}", s.series(), s.value))
        .collect();
    if !lost.is_empty() {
        return Err(format!("events lost: {}", lost.join("; ")));
    }
    Ok(format!(
        "port {port}: {N} connections, {} scrapes, none decreasing, totals exact, nothing lost",
        watch.scrapes
    ))
}

/// This kernel's release as (major, minor), from `/proc/sys/kernel/osrelease`.
fn kernel_version() -> Result<(u32, u32), String> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").map_err(io_err("osrelease"))?;
    let mut parts = release.trim().split(['.', '-']);
    let mut number = || parts.next().and_then(|p| p.parse::<u32>().ok());
    match (number(), number()) {
        (Some(major), Some(minor)) => Ok((major, minor)),
        _ => Err(format!("cannot read the kernel release {release:?}")),
    }
}

/// Whether this kernel lets fexit programs attach, by a fact read here rather than asked of
/// sonde: ftrace's list of the functions it can hook is readable. Where ftrace is blocked
/// (the machine the matrix was written on: EPERM) fexit programs are refused too.
fn fexit_allowed() -> bool {
    ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .iter()
        .any(|dir| std::fs::File::open(format!("{dir}/available_filter_functions")).is_ok())
}

/// The programs that must run on a kernel, as `program=hook`: TCP from the state changes and
/// the counters read at scrapes everywhere; UDP from 6.9 on return from UDP's own calls where
/// the kernel allows fexit (only UDP calls enter them), else from the socket tracepoints
/// (6.3, entered by every TCP call too), and before 6.3 on return from UDP's calls, whose
/// receive lost its `noblock` argument in 5.19.
fn expected_programs(version: (u32, u32), fexit: bool) -> Vec<&'static str> {
    let mut programs = vec![
        "inet_sock_set_state=tp_btf/inet_sock_set_state",
        "seed_tcp=iter/tcp",
        "read_tcp=run",
    ];
    if version >= (6, 3) && !(version >= (6, 9) && fexit) {
        programs.extend([
            "sock_send_length=tp_btf/sock_send_length",
            "sock_recv_length=tp_btf/sock_recv_length",
        ]);
    } else {
        programs.extend([
            "udp_sendmsg_exit=fexit/udp_sendmsg",
            "udpv6_sendmsg_exit=fexit/udpv6_sendmsg",
        ]);
        if version >= (5, 19) {
            programs.extend([
                "udp_recvmsg_exit=fexit/udp_recvmsg",
                "udpv6_recvmsg_exit=fexit/udpv6_recvmsg",
            ]);
        } else {
            programs.extend([
                "udp_recvmsg_noblock_exit=fexit/udp_recvmsg",
                "udpv6_recvmsg_noblock_exit=fexit/udpv6_recvmsg",
            ]);
        }
    }
    programs.sort_unstable();
    programs
}

/// `sonde_ebpf_attached` says which way runs for each need: exactly this kernel's.
fn attached(ctx: &Ctx) -> Outcome {
    let version = kernel_version()?;
    let scrape = ctx.scrape()?;
    let mut on: Vec<String> = scrape
        .samples
        .iter()
        .filter(|s| s.name == "sonde_ebpf_attached" && s.value == 1.0)
        .map(|s| {
            let label = |key: &str| s.labels.iter().find(|(k, _)| k == key).map_or("", |(_, v)| v.as_str());
            format!("{}={}", label("program"), label("hook"))
        })
        .collect();
    on.sort_unstable();
    let fexit = fexit_allowed();
    let want = expected_programs(version, fexit);
    let allows = if fexit { "allows fexit" } else { "no fexit" };
    if on == want {
        Ok(format!("on {}.{} ({allows}): {}", version.0, version.1, on.join(" ")))
    } else {
        Err(format!(
            "on {}.{} ({allows}) sonde_ebpf_attached is 1 for [{}], expected [{}]",
            version.0,
            version.1,
            on.join(" "),
            want.join(" ")
        ))
    }
}

/// `sonde_connection_namespaces_walked` of one scrape.
fn walked(ctx: &Ctx) -> Result<f64, String> {
    ctx.scrape()?
        .get("sonde_connection_namespaces_walked", &[])
        .ok_or_else(|| "sonde_connection_namespaces_walked missing".to_owned())
}

/// A namespace is walked with the TCP iterator once: a new one at the next scrape, and not
/// again. A quiet scrape walks none (a few tries: another process may make a namespace).
fn netns_once(ctx: &Ctx) -> Outcome {
    let quiet = |what: &str| -> Result<(), String> {
        for _ in 0..5 {
            if walked(ctx)? == 0.0 {
                return Ok(());
            }
        }
        Err(format!("{what}: five scrapes in a row walked a namespace"))
    };
    quiet("before")?;
    let holder = sys::NetnsHolder::spawn().map_err(io_err("new network namespace"))?;
    let first = walked(ctx)?;
    let after = quiet("after the new namespace's walk");
    drop(holder);
    after?;
    if first < 1.0 {
        return Err(format!("the scrape after a new namespace walked {first}"));
    }
    Ok(format!(
        "a new namespace walked at the next scrape ({first}), then none"
    ))
}

#[cfg(test)]
mod tests {
    use super::expected_programs;

    #[test]
    fn each_kernel_expects_its_own_ways() {
        let has =
            |version, fexit, program: &str| expected_programs(version, fexit).iter().any(|p| p.starts_with(program));
        for fexit in [false, true] {
            assert!(has((5, 10), fexit, "udp_recvmsg_noblock_exit=") && !has((5, 10), fexit, "udp_recvmsg_exit="));
            assert!(has((6, 1), fexit, "udp_recvmsg_exit=") && !has((6, 1), fexit, "sock_recv_length="));
            // 6.3 to 6.8: the tracepoints, fexit allowed or not.
            assert!(has((6, 8), fexit, "sock_recv_length=") && !has((6, 8), fexit, "udp_sendmsg_exit="));
        }
        // From 6.9: UDP's own fexit programs where allowed, else the tracepoints.
        for version in [(6, 9), (6, 12), (6, 18)] {
            assert!(has(version, true, "udp_recvmsg_exit=") && !has(version, true, "sock_recv_length="));
            assert!(has(version, false, "sock_recv_length=") && !has(version, false, "udp_sendmsg_exit="));
        }
        for version in [(5, 10), (6, 1), (6, 8), (6, 12), (6, 18)] {
            for fexit in [false, true] {
                assert!(has(version, fexit, "read_tcp=run") && has(version, fexit, "seed_tcp=iter/tcp"));
                // One program per UDP direction with the tracepoints, one per direction and
                // family with fexit.
                let tracepoints = version >= (6, 3) && !(version >= (6, 9) && fexit);
                assert_eq!(expected_programs(version, fexit).len(), if tracepoints { 5 } else { 7 });
            }
        }
    }
}
