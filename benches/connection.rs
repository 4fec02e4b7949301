//! Costs of the connection probes and of their scrape path, on this machine's kernel.
//! Run: `cargo bench --bench connection` (as root). Prints four tables:
//!
//! (a) loopback TCP throughput without and with the probes attached, rounds interleaved in
//!     one run, and the ratio of the medians;
//! (b) each program's cost per event, from the kernel's BPF run-time statistics: under churn
//!     (every connection new: inserts and closes included) and steady (long connections),
//!     each workload run 15 times: median, min and max of the rounds;
//! (c) `BatchReader::read_all` latency across every CPU;
//! (d) scrape latency of the real binary with 50,000 live connections.
//!
//! `cargo bench --bench connection -- b` runs only the named parts (any of `a b c d`).
//!
//! Run by `cargo test` (no `--bench` argument) it does one small round of each, as a smoke
//! test. Without root it says so and exits (under CI=true it fails).

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use sonde::ebpf::batch::{BatchReader, STALE_AFTER};
use sonde::ebpf::loader::{self, MapBatches};

struct Sizes {
    rounds: usize,
    stream_bytes: usize,
    connections: u32,
    /// Rounds of each (b) workload.
    cost_rounds: usize,
    /// Bytes of each round of the (b) retransmit workload.
    lossy_bytes: usize,
    read_all_runs: usize,
    live: u32,
    scrapes: usize,
}

fn main() {
    if let Some(pairs) = std::env::var("SONDE_BENCH_HOLD").ok().and_then(|v| v.parse().ok()) {
        return hold(pairs);
    }
    let benchmarking = std::env::args().any(|a| a == "--bench");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "the connection benchmark needs root"
        );
        println!("skipped: the connection benchmark needs root (CAP_BPF, CAP_PERFMON)");
        return;
    }
    let sizes = if benchmarking {
        Sizes {
            rounds: 21,
            stream_bytes: 256 << 20,
            connections: 2_000,
            cost_rounds: 15,
            lossy_bytes: 4 << 20,
            read_all_runs: 2_001,
            live: 50_000,
            scrapes: 51,
        }
    } else {
        Sizes {
            rounds: 1,
            stream_bytes: 16 << 20,
            connections: 50,
            cost_rounds: 1,
            lossy_bytes: 1 << 20,
            read_all_runs: 11,
            live: 2_000,
            scrapes: 3,
        }
    };
    let parts: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| ["a", "b", "c", "d"].contains(&a.as_str()))
        .collect();
    let run = |part: &str| parts.is_empty() || parts.iter().any(|p| p == part);
    if run("a") {
        throughput(&sizes);
    }
    if run("b") {
        per_event_cost(&sizes);
    }
    if run("c") {
        read_all_latency(&sizes);
    }
    if run("d") {
        scrape_latency(&sizes);
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Median, 99th percentile, min and max of a sorted sample.
fn spread(sorted: &[Duration]) -> (Duration, Duration, Duration, Duration) {
    let p = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
    (p(0.5), p(0.99), sorted[0], sorted[sorted.len() - 1])
}

/// Sends `bytes` over one loopback connection in `chunk`-byte writes; returns bytes/s.
fn stream(bytes: usize, chunk: usize) -> f64 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let addr = listener.local_addr().expect("address");
    let reader = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0;
        loop {
            match s.read(&mut buf).expect("read") {
                0 => return total,
                n => total += n,
            }
        }
    });
    let mut s = TcpStream::connect(addr).expect("connect");
    let data = vec![b'x'; chunk];
    let start = Instant::now();
    let mut sent = 0;
    while sent < bytes {
        s.write_all(&data).expect("write");
        sent += chunk;
    }
    drop(s);
    let got = reader.join().expect("reader");
    let elapsed = start.elapsed();
    assert_eq!(got, sent);
    sent as f64 / elapsed.as_secs_f64()
}

fn throughput(sizes: &Sizes) {
    println!(
        "\n(a) loopback TCP throughput, {} MiB per run; rounds pair a run without and a run with the probes, \
         in alternating order; ratio = with/without per pair (median, and the middle half of the pairs)",
        sizes.stream_bytes >> 20
    );
    println!(
        "{:<10} {:>7} {:>16} {:>16} {:>12} {:>17}",
        "write", "rounds", "without MiB/s", "with MiB/s", "ratio", "ratio p25..p75"
    );
    for chunk in [64 << 10, 1 << 10] {
        let (mut without, mut with, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..sizes.rounds {
            // Alternating which runs first cancels a drift of the machine's speed.
            let probes_first = round % 2 == 1;
            let run_with = || {
                let probes = loader::load(65_536).expect("load the probes");
                let r = stream(sizes.stream_bytes, chunk);
                drop(probes);
                r
            };
            let (w, p) = if probes_first {
                let p = run_with();
                (stream(sizes.stream_bytes, chunk), p)
            } else {
                let w = stream(sizes.stream_bytes, chunk);
                (w, run_with())
            };
            without.push(w);
            with.push(p);
            ratios.push(p / w);
        }
        let quantile = |v: &mut Vec<f64>, q: f64| {
            v.sort_by(f64::total_cmp);
            v[((v.len() - 1) as f64 * q).round() as usize]
        };
        println!(
            "{:<10} {:>7} {:>16.0} {:>16.0} {:>12.3} {:>8.3}..{:<8.3}",
            format!("{} B", chunk),
            sizes.rounds,
            quantile(&mut without, 0.5) / 1048576.0,
            quantile(&mut with, 0.5) / 1048576.0,
            quantile(&mut ratios, 0.5),
            quantile(&mut ratios, 0.25),
            quantile(&mut ratios, 0.75),
        );
    }
}

/// Short request/response connections: every program runs (state changes, sends, receives).
fn exchange(connections: u32) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let addr = listener.local_addr().expect("address");
    let server = std::thread::spawn(move || {
        for _ in 0..connections {
            let (mut s, _) = listener.accept().expect("accept");
            let mut buf = [0u8; 100];
            s.read_exact(&mut buf).expect("read");
            s.write_all(&buf).expect("write");
            let mut rest = Vec::new();
            s.read_to_end(&mut rest).expect("end");
        }
    });
    for _ in 0..connections {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.write_all(&[1u8; 100]).expect("write");
        let mut buf = [0u8; 100];
        s.read_exact(&mut buf).expect("read");
    }
    server.join().expect("server");
}

/// `connections` long connections, one after the other, each `messages` echoed 100-byte
/// messages: every event but the first of each socket finds its live entry.
fn steady_exchange(connections: u32, messages: u32) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = std::thread::spawn(move || {
        for _ in 0..connections {
            let (mut s, _) = listener.accept().expect("accept");
            let mut buf = [0u8; 100];
            while s.read_exact(&mut buf).is_ok() {
                s.write_all(&buf).expect("echo");
            }
        }
    });
    for _ in 0..connections {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_nodelay(true).expect("nodelay");
        let mut buf = [0u8; 100];
        for _ in 0..messages {
            s.write_all(&[1u8; 100]).expect("write");
            s.read_exact(&mut buf).expect("read");
        }
    }
    server.join().expect("server");
}

fn per_event_cost(sizes: &Sizes) {
    let probes = loader::load(65_536).expect("load the probes");
    let stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).expect("enable BPF run-time stats");
    println!(
        "\n(b) cost per event of each program (kernel BPF run-time stats), churn: {} new connections",
        sizes.connections
    );
    print_cost(&probes.ebpf, sizes.cost_rounds, || exchange(sizes.connections));
    let messages = sizes.connections * 10;
    println!("\n(b) steady: 10 long connections, {messages} echoed 100-byte messages each");
    print_cost(&probes.ebpf, sizes.cost_rounds, || steady_exchange(10, messages));
    let lossy_mib = sizes.lossy_bytes >> 20;
    println!(
        "\n(b) retransmits: {lossy_mib} MiB over one connection between two network namespaces, one segment a packet, one packet in ten dropped"
    );
    let pair = common::netns::NetnsPair::new("bench");
    pair.one_segment_per_packet();
    pair.drop_incoming(0, "0.1");
    print_cost(&probes.ebpf, sizes.cost_rounds, || {
        assert_eq!(
            pair.transfer(sizes.lossy_bytes).1,
            sizes.lossy_bytes,
            "the server read every byte"
        );
    });
    drop(stats);
}

/// Runs `workload` `rounds` times and prints, per program, the events of one round and the
/// ns per event of the rounds: median, min and max. Interference (preemption, interrupts,
/// other tenants) only adds to a round's figure, so the min is the least disturbed one.
fn print_cost(ebpf: &aya::Ebpf, rounds: usize, workload: impl Fn()) {
    let mut per_round: std::collections::BTreeMap<String, (u64, Vec<f64>)> = Default::default();
    for _ in 0..rounds {
        let before = program_stats(ebpf);
        workload();
        let after = program_stats(ebpf);
        for ((name, t0, n0), (_, t1, n1)) in before.iter().zip(&after) {
            let events = n1 - n0;
            let entry = per_round.entry(name.clone()).or_default();
            entry.0 = events;
            if events > 0 {
                entry.1.push((t1 - t0) as f64 / events as f64);
            }
        }
    }
    println!(
        "{:<22} {:>10} {:>12} {:>8} {:>8}   ({rounds} rounds)",
        "program", "events", "median ns", "min", "max"
    );
    for (name, (events, mut costs)) in per_round {
        costs.sort_by(f64::total_cmp);
        let (median, min, max) = match costs.as_slice() {
            [] => (0.0, 0.0, 0.0),
            c => (c[c.len() / 2], c[0], c[c.len() - 1]),
        };
        println!("{name:<22} {events:>10} {median:>12.0} {min:>8.0} {max:>8.0}");
    }
}

fn program_stats(ebpf: &aya::Ebpf) -> Vec<(String, u64, u64)> {
    ebpf.programs()
        .map(|(name, program)| {
            let info = program.info().expect("program info");
            (name.to_owned(), info.run_time().as_nanos() as u64, info.run_count())
        })
        .collect()
}

fn read_all_latency(sizes: &Sizes) {
    let probes = loader::load(65_536).expect("load the probes");
    let cpus = probes.cpus.clone();
    let mut ring = probes.ring;
    let reader = BatchReader::new(MapBatches(probes.batches), &cpus, STALE_AFTER).expect("reader");
    exchange(sizes.connections);
    let mut records = 0usize;
    let mut times: Vec<Duration> = (0..sizes.read_all_runs)
        .map(|i| {
            if i % 10 == 0 {
                // Some closes between drains, so partial batches are there to read.
                exchange(3);
            }
            // As a scrape does: full batches from the ring buffer first (not timed).
            while let Some(item) = ring.next() {
                let batch = sonde::ebpf::conn::Batch::from_bytes(&item).expect("a batch");
                reader.consume_full(&batch, |_, r| records += r.len()).expect("consume");
            }
            let start = Instant::now();
            let seen = std::sync::atomic::AtomicUsize::new(0);
            reader
                .read_all(|_, r| {
                    seen.fetch_add(r.len(), std::sync::atomic::Ordering::Relaxed);
                })
                .expect("read_all");
            records += seen.into_inner();
            start.elapsed()
        })
        .collect();
    times.sort_unstable();
    let (median, p99, min, max) = spread(&times);
    println!(
        "\n(c) read_all across {} possible CPUs, {} runs ({records} records read)",
        cpus.len(),
        times.len()
    );
    println!("{:>10} {:>10} {:>10} {:>10}", "median µs", "p99 µs", "min µs", "max µs");
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "{:>10.1} {:>10.1} {:>10.1} {:>10.1}",
        us(median),
        us(p99),
        us(min),
        us(max)
    );
}

/// Child-process mode: holds `pairs` loopback connections (both ends) open until its
/// standard input closes. One process cannot hold 50,000 sockets under a 20,000 fd limit.
fn hold(pairs: u32) {
    common::raise_fd_limit();
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let addr = listener.local_addr().expect("address");
    let acceptor = std::thread::spawn(move || {
        (0..pairs)
            .map(|_| listener.accept().expect("accept").0)
            .collect::<Vec<_>>()
    });
    let clients: Vec<TcpStream> = (0..pairs).map(|_| TcpStream::connect(addr).expect("connect")).collect();
    let servers = acceptor.join().expect("acceptor");
    println!("ready {}", clients.len() + servers.len());
    std::io::stdout().flush().expect("flush");
    let mut rest = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut rest);
}

/// Child processes holding `sockets` live sockets in all; killed when dropped.
struct Holders(Vec<std::process::Child>);

impl Holders {
    fn start(sockets: u32) -> Self {
        use std::io::BufRead;
        const PER_CHILD: u32 = 12_500;
        let exe = std::env::current_exe().expect("own path");
        let mut children = Vec::new();
        let mut left = sockets;
        while left > 0 {
            let here = left.min(PER_CHILD);
            left -= here;
            let mut child = std::process::Command::new(&exe)
                .env("SONDE_BENCH_HOLD", (here / 2).to_string())
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("start a holder");
            let mut line = String::new();
            std::io::BufReader::new(child.stdout.take().expect("stdout"))
                .read_line(&mut line)
                .expect("holder says ready");
            assert!(line.starts_with("ready"), "holder: {line:?}");
            children.push(child);
        }
        Self(children)
    }
}

impl Drop for Holders {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn scrape_text(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).expect("connect to sonde");
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: sonde\r\n\r\n")
        .expect("request");
    let mut response = String::new();
    s.read_to_string(&mut response).expect("response");
    assert!(response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200"));
    response
}

fn scrape(addr: SocketAddr) -> usize {
    scrape_text(addr).len()
}

/// `sonde_connection_live_entries` of one scrape.
fn scrape_live_entries(addr: SocketAddr) -> u64 {
    let text = scrape_text(addr);
    common::sample_value(&text, "sonde_connection_live_entries").expect("live entries") as u64
}

fn scrape_latency(sizes: &Sizes) {
    let sonde = common::Sonde::start(&["--no-collector.host"]);
    // The probes load at the first collection: make sure it is done before connecting.
    scrape(sonde.addr);
    // Both ends of each connection are live entries.
    let holders = Holders::start(sizes.live);
    let live = scrape_live_entries(sonde.addr);
    let mut bytes = 0;
    let mut times: Vec<Duration> = (0..sizes.scrapes)
        .map(|_| {
            let start = Instant::now();
            bytes = scrape(sonde.addr);
            start.elapsed()
        })
        .collect();
    times.sort_unstable();
    let (median, p99, min, max) = spread(&times);
    drop(holders);
    println!(
        "\n(d) scrape of the real binary with {live} live-table entries ({} scrapes, {bytes} bytes each)",
        times.len(),
    );
    println!("{:>10} {:>10} {:>10} {:>10}", "median ms", "p99 ms", "min ms", "max ms");
    println!(
        "{:>10.1} {:>10.1} {:>10.1} {:>10.1}",
        ms(median),
        ms(p99),
        ms(min),
        ms(max)
    );
}
