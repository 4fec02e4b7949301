//! Costs of the NAT (conntrack) lookup on this machine's kernel, in a network namespace the
//! benchmark makes (198.18.0.0/15 only; its DNAT rule is in that namespace's own OUTPUT chain,
//! nothing is changed in the host's) and removes. Run: `cargo bench --bench conntrack` (as
//! root). Prints three tables:
//!
//! (a) one conntrack GET round trip in the namespace: a hit (a NATed connection's entry) and
//!     a miss (a tuple conntrack never saw, `ENOENT`);
//! (b) one `ConntrackLookup` lookup: a cache miss answered in the connection's namespace (a
//!     NATed connection: one query), a cache miss found nowhere (two queries: the
//!     connection's namespace, then the host's), and a cache hit;
//! (c) the enrichment step of a scrape with 50,000 live connections of which 10,000 are
//!     NATed (real connections, closed: their entries stay for TIME_WAIT, whose conntrack
//!     timeout the benchmark raises to 10 minutes in its own namespace), conntrack off and on,
//!     at the first scrape (every connection new: one lookup each) and at later ones (none);
//! (d) scrapes of the real binary, `--no-conntrack` and with conntrack, side by side, with
//!     50,000 live sockets held by child processes in the namespace (both ends of 25,000
//!     connections, 10,000 of them dialed to a service address and DNATed): the first scrape
//!     that sees them (every outbound one looked up) and later ones.
//!
//! Run by `cargo test` (no `--bench` argument) it does one small round of each, as a smoke
//! test. Without root it says so and exits (under CI=true it fails). The machine is shared:
//! figures move with the other work on it.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::{Duration, Instant};

use common::netns::{Namespaces, batch, inode, spawn_in};
use sonde::collector::connection::series::{Direction, LabelPolicy, RemoteMode};
use sonde::collector::connection::tracker::{Enrichment, Tracker};
use sonde::conntrack::netlink::{ConntrackSocket, FiveTuple};
use sonde::conntrack::{ConntrackConfig, ConntrackLookup};
use sonde::ebpf::conn::{AF_INET, ConnKey, ConnStats, DIR_OUTBOUND, FLAG_CONNECTED, IPPROTO_TCP, LiveConn};

const LOCAL: Ipv4Addr = Ipv4Addr::new(198, 18, 30, 2);
const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 31, 9);
const BACKEND_PORT: u16 = 8080;

struct Sizes {
    rounds: usize,
    samples: usize,
    connections: usize,
    natted: usize,
    /// (d): rounds of the two variants, each with holders of its own.
    scrape_rounds: usize,
}

fn main() {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "the conntrack benchmark needs root"
        );
        println!("skipped: the conntrack benchmark needs root (CAP_NET_ADMIN for conntrack, CAP_SYS_ADMIN for setns)");
        return;
    }
    if let Ok(spec) = std::env::var("SONDE_BENCH_HOLD") {
        hold(&spec);
        return;
    }
    common::require_tool("ip");
    common::require_tool("iptables");
    let sizes = if benchmarking {
        Sizes {
            rounds: 5,
            samples: 2_001,
            connections: 50_000,
            natted: 10_000,
            scrape_rounds: 2,
        }
    } else {
        Sizes {
            rounds: 1,
            samples: 51,
            connections: 1_000,
            natted: 200,
            scrape_rounds: 1,
        }
    };
    let mut namespaces = Namespaces(Vec::new());
    let ns = namespaces.add(common::unique_name("sctb"));
    batch(
        &ns,
        "link set lo up\nlink add d0 type veth peer name d1\naddr add 198.18.30.2/24 dev d0\nlink set d0 up\n\
         link set d1 up\nroute add 198.18.31.0/24 dev d0\nroute add 198.18.32.0/24 dev d0\n",
    );
    // Port 80 for (a)-(c); 100 + i for holder i of (d), each to a listener of its own.
    for (port, to) in std::iter::once((80, BACKEND_PORT)).chain((0..HOLDERS).map(|i| (100 + i, HOLD_PORT + i))) {
        let out = Command::new("ip")
            .args(["netns", "exec", &ns, "iptables", "-w", "5", "-t", "nat", "-A", "OUTPUT"])
            .args([
                "-d",
                "198.18.31.9/32",
                "-p",
                "tcp",
                "--dport",
                &port.to_string(),
                "-j",
                "DNAT",
            ])
            .args(["--to-destination", &format!("198.18.30.2:{to}")])
            .output()
            .expect("run iptables");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    // The entries of closed connections stay for TIME_WAIT: 10 minutes in this namespace, so
    // the benchmark cannot outlast them (the sysctl is the namespace's own).
    spawn_in(&ns, || {
        std::fs::write("/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_time_wait", "600")
    })
    .join()
    .expect("the namespace thread")
    .expect("TIME_WAIT timeout of the namespace");
    let started = Instant::now();
    let natted = Natted::open(&ns, sizes.natted);
    println!(
        "{} NATed connections made and closed in {:?}",
        sizes.natted,
        started.elapsed()
    );
    let netns = inode(&ns);
    round_trips(&sizes, &ns, &natted);
    lookups(&sizes, netns, &natted);
    enrichment_per_scrape(&sizes, netns, &natted);
    drop(natted);
    scrapes_of_the_binary(&sizes, &ns);
    drop(namespaces);
}

/// Real connections to the service address, DNATed in the namespace to a local listener,
/// and closed (client first); `tuples` are the clients' (local, dialed).
struct Natted {
    tuples: Vec<FiveTuple>,
}

impl Natted {
    fn open(ns: &str, count: usize) -> Natted {
        let tuples = spawn_in(ns, move || {
            let listener = TcpListener::bind((LOCAL, BACKEND_PORT)).expect("bind");
            // Connections over a local route may reuse a port in TIME_WAIT (tcp_tw_reuse's
            // default): the newer connection's entry replaces the older's, so tuples are
            // counted distinct.
            let mut tuples = std::collections::HashSet::with_capacity(count);
            while tuples.len() < count {
                let mut client = TcpStream::connect((VIP, 80)).expect("connect");
                let (mut server, _) = listener.accept().expect("accept");
                client.write_all(b"x").expect("send");
                let mut byte = [0u8];
                server.read_exact(&mut byte).expect("receive");
                tuples.insert(FiveTuple {
                    protocol: IPPROTO_TCP,
                    src: client.local_addr().expect("local address"),
                    dst: SocketAddr::from((VIP, 80)),
                });
            }
            tuples.into_iter().collect()
        })
        .join()
        .expect("the connections");
        Natted { tuples }
    }
}

/// A tuple conntrack never saw.
fn unknown(i: usize) -> FiveTuple {
    FiveTuple {
        protocol: IPPROTO_TCP,
        src: SocketAddr::from((LOCAL, 20_000 + (i % 40_000) as u16)),
        dst: SocketAddr::from((Ipv4Addr::new(198, 18, 32, (i / 40_000 % 250) as u8 + 1), 443)),
    }
}

/// Median, 99th percentile, min and max of a sorted sample.
fn spread(sorted: &[Duration]) -> (Duration, Duration, Duration, Duration) {
    let p = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
    (p(0.5), p(0.99), sorted[0], sorted[sorted.len() - 1])
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn print_rows(rows: &mut [(&str, Vec<Duration>)]) {
    println!(
        "{:<52} {:>10} {:>10} {:>10} {:>10}",
        "path", "median µs", "p99 µs", "min µs", "max µs"
    );
    for (name, sample) in rows.iter_mut() {
        sample.sort();
        let (median, p99, min, max) = spread(sample);
        println!(
            "{name:<52} {:>10.1} {:>10.1} {:>10.1} {:>10.1}",
            us(median),
            us(p99),
            us(min),
            us(max)
        );
    }
}

fn round_trips(sizes: &Sizes, ns: &str, natted: &Natted) {
    let path = format!("/run/netns/{ns}");
    let mut socket = std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("open the namespace");
        // SAFETY: a valid namespace fd; setns changes only this thread's namespace.
        assert_eq!(unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
        ConntrackSocket::open().expect("a conntrack socket")
    })
    .join()
    .expect("the namespace thread");
    let (mut hits, mut misses) = (Vec::new(), Vec::new());
    // Interleaved, so drift of the machine's load touches both alike.
    for i in 0..sizes.samples {
        let tuple = natted.tuples[i % natted.tuples.len()];
        let start = Instant::now();
        let entry = socket.get(tuple).expect("a query");
        hits.push(start.elapsed());
        assert!(entry.is_some_and(|e| e.destination_translated()));
        let start = Instant::now();
        let entry = socket.get(unknown(i)).expect("a query");
        misses.push(start.elapsed());
        assert_eq!(entry, None);
    }
    println!("\n(a) one conntrack GET round trip, {} samples each", sizes.samples);
    print_rows(&mut [
        ("entry found (a NATed connection)", hits),
        ("no entry (ENOENT)", misses),
    ]);
}

fn new_lookup() -> ConntrackLookup {
    ConntrackLookup::new(&ConntrackConfig::default(), "/proc".as_ref(), "/run/netns".as_ref())
}

fn lookups(sizes: &Sizes, netns: u32, natted: &Natted) {
    let (mut translated, mut nowhere, mut hit) = (Vec::new(), Vec::new(), Vec::new());
    let mut ct = new_lookup();
    for i in 0..sizes.samples {
        let which = i % natted.tuples.len();
        if which == 0 {
            // A fresh cache for each pass over the tuples; its sockets opened by a lookup
            // outside the timed ones.
            ct = new_lookup();
            ct.lookup_tuple(unknown(sizes.samples + 1), netns);
        }
        let tuple = natted.tuples[which];
        let start = Instant::now();
        let nat = ct.lookup_tuple(tuple, netns);
        translated.push(start.elapsed());
        assert!(nat.is_some());
        let start = Instant::now();
        let nat = ct.lookup_tuple(tuple, netns);
        hit.push(start.elapsed());
        assert!(nat.is_some());
        let start = Instant::now();
        let nat = ct.lookup_tuple(unknown(i), netns);
        nowhere.push(start.elapsed());
        assert!(nat.is_none());
    }
    println!("\n(b) one ConntrackLookup lookup, {} samples each", sizes.samples);
    print_rows(&mut [
        ("cache miss, translated in its namespace (1 query)", translated),
        ("cache miss, no entry anywhere (2 queries)", nowhere),
        ("cache hit", hit),
    ]);
}

/// 50,000 live connections in the namespace: the NATed ones first, then untranslated ones.
fn connections(sizes: &Sizes, netns: u32, natted: &Natted) -> Vec<(ConnKey, ConnStats)> {
    (0..sizes.connections)
        .map(|i| {
            let tuple = natted.tuples.get(i).copied().unwrap_or_else(|| unknown(i));
            let mut key = ConnKey {
                netns,
                sport: tuple.src.port(),
                dport: tuple.dst.port(),
                family: AF_INET,
                protocol: IPPROTO_TCP,
                ..ConnKey::default()
            };
            if let (std::net::IpAddr::V4(src), std::net::IpAddr::V4(dst)) = (tuple.src.ip(), tuple.dst.ip()) {
                key.saddr[..4].copy_from_slice(&src.octets());
                key.daddr[..4].copy_from_slice(&dst.octets());
            }
            let stats = ConnStats {
                bytes_sent: 100,
                cookie: i as u64 + 1,
                direction: DIR_OUTBOUND,
                flags: FLAG_CONNECTED,
                ..ConnStats::default()
            };
            (key, stats)
        })
        .collect()
}

/// Times `live_snapshot` of `conns`, enriched as the connection collector does (conntrack
/// only: the gateway has its own benchmark): the first scrape and the median of three more,
/// each given back with the tags the one before set, as the TCP reader does.
fn scrapes(conntrack: Option<&ConntrackLookup>, conns: &[(ConnKey, ConnStats)]) -> (Duration, Duration) {
    let mut tracker = Tracker::new(LabelPolicy {
        ephemeral_ports: 32768..=60999,
        remote: RemoteMode::Ip,
        max_series: 100_000,
    });
    let route = |key: &ConnKey, direction: Direction| Enrichment {
        via: None,
        nat: conntrack
            .filter(|_| direction == Direction::Outbound)
            .and_then(|c| c.lookup(key)),
    };
    let mut conns: Vec<LiveConn> = conns
        .iter()
        .map(|(key, stats)| LiveConn::untracked(*key, *stats))
        .collect();
    let start = Instant::now();
    tracker.live_snapshot(&mut conns, Instant::now(), &route);
    let first = start.elapsed();
    let mut later = Vec::new();
    for _ in 0..3 {
        let start = Instant::now();
        tracker.live_snapshot(&mut conns, Instant::now(), &route);
        later.push(start.elapsed());
    }
    later.sort();
    (first, later[1])
}

fn enrichment_per_scrape(sizes: &Sizes, netns: u32, natted: &Natted) {
    let conns = connections(sizes, netns, natted);
    let (mut off_first, mut off_later, mut on_first, mut on_later) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut last = None;
    for _ in 0..sizes.rounds {
        let (first, later) = scrapes(None, &conns);
        off_first.push(first);
        off_later.push(later);
        let ct = new_lookup();
        let (first, later) = scrapes(Some(&ct), &conns);
        on_first.push(first);
        on_later.push(later);
        let s = ct.snapshot();
        assert_eq!(
            (s.lookups, s.misses, s.translated),
            (sizes.connections as u64, sizes.connections as u64, sizes.natted as u64),
            "one lookup and one miss per connection, every NATed one translated: {s:?}"
        );
        last = Some(s);
    }
    let s = last.expect("one round at least");
    println!(
        "\n(c) enrichment per scrape, {} live connections of which {} NATed, {} rounds \
         (conntrack queries per cold scrape: {} in the connections' namespace, {} in the host's)",
        sizes.connections, sizes.natted, sizes.rounds, s.connection_queries, s.host_queries
    );
    println!(
        "{:<40} {:>10} {:>10} {:>10} {:>14}",
        "variant", "median ms", "min ms", "max ms", "vs off (ms)"
    );
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (off_first_median, off_later_median) = (median(&mut off_first), median(&mut off_later));
    for (name, sample, base) in [
        ("conntrack off, first scrape", &mut off_first, off_first_median),
        ("conntrack on, first scrape", &mut on_first, off_first_median),
        ("conntrack off, later scrapes", &mut off_later, off_later_median),
        ("conntrack on, later scrapes", &mut on_later, off_later_median),
    ] {
        let m = median(sample);
        println!(
            "{name:<40} {:>10.2} {:>10.2} {:>10.2} {:>+14.2}",
            ms(m),
            ms(sample[0]),
            ms(sample[sample.len() - 1]),
            ms(m) - ms(base)
        );
    }
}

/// (d): child processes hold the sockets (one process cannot hold 50,000 under this
/// machine's 20,000 descriptor limit), at most 12,500 each.
const HOLDERS: u16 = 4;
const HOLD_PORT: u16 = 8100;

/// Child-process mode (`SONDE_BENCH_HOLD=<ns>,<index>,<pairs>,<natted>`): enters the
/// namespace, opens `pairs` connections (both ends), the first `natted` dialed to the service
/// address (its port for this holder, DNATed to this holder's listener), and holds them until
/// standard input closes.
fn hold(spec: &str) {
    let parts: Vec<&str> = spec.split(',').collect();
    let [ns, index, pairs, natted] = parts[..] else {
        panic!("SONDE_BENCH_HOLD={spec:?}");
    };
    let number = |s: &str| s.parse::<u16>().expect("a number");
    let (index, pairs, natted) = (number(index), number(pairs), number(natted));
    common::raise_fd_limit();
    let file = std::fs::File::open(format!("/run/netns/{ns}")).expect("open the namespace");
    // SAFETY: a valid namespace fd; this process has one thread here.
    assert_eq!(unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
    let nat_listener = TcpListener::bind((LOCAL, HOLD_PORT + index)).expect("bind");
    let direct_listener = TcpListener::bind((LOCAL, 0)).expect("bind");
    let direct = direct_listener.local_addr().expect("address");
    let mut sockets = Vec::with_capacity(2 * usize::from(pairs));
    for i in 0..pairs {
        let (client, listener) = if i < natted {
            (TcpStream::connect((VIP, 100 + index)), &nat_listener)
        } else {
            (TcpStream::connect(direct), &direct_listener)
        };
        sockets.push(client.expect("connect"));
        sockets.push(listener.accept().expect("accept").0);
    }
    println!("ready {}", sockets.len());
    std::io::stdout().flush().expect("flush");
    let mut rest = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut rest);
}

/// The holders of one round; killed when dropped.
struct Holders(Vec<std::process::Child>);

impl Holders {
    fn start(ns: &str, pairs: usize, natted: usize) -> Holders {
        use std::io::BufRead;
        let exe = std::env::current_exe().expect("own path");
        let per = pairs.div_ceil(usize::from(HOLDERS));
        let mut holders = Holders(Vec::new());
        let (mut left, mut nat_left) = (pairs, natted);
        for index in 0..HOLDERS {
            let here = left.min(per);
            let nat_here = nat_left.min(here);
            left -= here;
            nat_left -= nat_here;
            let mut child = Command::new(&exe)
                .env("SONDE_BENCH_HOLD", format!("{ns},{index},{here},{nat_here}"))
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("start a holder");
            let mut line = String::new();
            std::io::BufReader::new(child.stdout.take().expect("stdout"))
                .read_line(&mut line)
                .expect("the holder says ready");
            holders.0.push(child);
            assert_eq!(line.trim(), format!("ready {}", 2 * here), "holder {index}");
        }
        holders
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

fn timed_scrape(sonde: &common::Sonde) -> (Duration, String) {
    let start = Instant::now();
    let text = common::scrape(sonde);
    (start.elapsed(), text)
}

fn scrapes_of_the_binary(sizes: &Sizes, ns: &str) {
    let pairs = sizes.connections / 2;
    let natted = sizes.natted;
    let mut rows: Vec<(&str, Vec<Duration>, Vec<Duration>)> = vec![
        ("--no-conntrack", Vec::new(), Vec::new()),
        ("conntrack on", Vec::new(), Vec::new()),
    ];
    for _ in 0..sizes.scrape_rounds {
        // Side by side: one of each variant a round.
        for (variant, firsts, laters) in rows.iter_mut() {
            let mut args = vec!["--no-collector.host", "--connection.max-series=100000"];
            if *variant == "--no-conntrack" {
                args.push("--no-conntrack");
            }
            let sonde = common::Sonde::start(&args);
            // The probes load at the first collection, before the connections exist.
            common::scrape(&sonde);
            let holders = Holders::start(ns, pairs, natted);
            let (first, text) = timed_scrape(&sonde);
            firsts.push(first);
            let live = common::sample_value(&text, "sonde_connection_live_entries").unwrap_or(0.0);
            assert!(
                live >= (2 * pairs) as f64,
                "{live} live entries for {} sockets",
                2 * pairs
            );
            let translated: f64 =
                common::samples_containing(&text, "sonde_tcp_active_connections", &["service=\"198.18.31.9:"])
                    .iter()
                    .map(|s| s.value)
                    .sum();
            let expected = if *variant == "--no-conntrack" { 0 } else { natted };
            assert_eq!(
                translated, expected as f64,
                "{variant}: active connections with a service label"
            );
            for _ in 0..5 {
                laters.push(timed_scrape(&sonde).0);
            }
            drop(holders);
        }
    }
    println!(
        "\n(d) scrapes of the real binary, {} live sockets (both ends of {pairs} connections, {natted} of them DNATed), \
         {} rounds of each variant side by side: the first scrape that sees them, then 5 later ones a round",
        2 * pairs,
        sizes.scrape_rounds
    );
    println!(
        "{:<40} {:>10} {:>10} {:>10} {:>10}",
        "variant", "median ms", "p99 ms", "min ms", "max ms"
    );
    for (variant, firsts, laters) in rows.iter_mut() {
        for (what, sample) in [("first scrape", firsts), ("later scrapes", laters)] {
            sample.sort();
            let (median, p99, min, max) = spread(sample);
            println!(
                "{:<40} {:>10.2} {:>10.2} {:>10.2} {:>10.2}",
                format!("{variant}, {what}"),
                ms(median),
                ms(p99),
                ms(min),
                ms(max)
            );
        }
    }
}
