//! Costs of the gateway lookup on this machine's kernel, in network namespaces the benchmark
//! makes (198.18.0.0/15 only) and removes. Run: `cargo bench --bench gateway` (as root).
//! Prints three tables:
//!
//! (a) lookups per second on a warm route cache;
//! (b) latency of one lookup that asks the kernel: the bare `RTM_GETROUTE` round trip, and
//!     a route cache miss through `GatewayLookup` (netlink plus a subnet cache hit);
//! (c) enrichment cost per scrape: the tracker's handling of 50,000 live connections over
//!     1,000 distinct (source, destination, netns), without and with the lookup, at the
//!     first scrape (every connection new) and at later scrapes (every connection known).
//!
//! Run by `cargo test` (no `--bench` argument) it does one small round of each, as a smoke
//! test. Without root it says so and exits (under CI=true it fails).

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sonde::collector::connection::series::{Direction, LabelPolicy, RemoteMode};
use sonde::collector::connection::tracker::{Enrichment, Tracker};
use sonde::ebpf::conn::{AF_INET, ConnKey, ConnStats, DIR_OUTBOUND, FLAG_CONNECTED, IPPROTO_TCP, LiveConn};
use sonde::gateway::netlink::RouteSocket;
use sonde::gateway::{GatewayConfig, GatewayLookup};

struct Sizes {
    rounds: usize,
    warm_lookups: usize,
    netlink_samples: usize,
    connections: usize,
    namespaces: usize,
    destinations_per_namespace: usize,
}

/// Namespaces with a default route through 198.18.9.1, deleted when dropped.
struct Namespaces(Vec<String>);

impl Namespaces {
    fn make(count: usize) -> Self {
        let base = common::unique_name("sgwb");
        let mut made = Namespaces(Vec::new());
        for i in 0..count {
            let name = format!("{base}-{i}");
            ip(&["netns", "add", &name], "");
            made.0.push(name.clone());
            ip(
                &["-n", &name, "-batch", "-"],
                "link set lo up\nlink add d0 type veth peer name d1\naddr add 198.18.9.2/24 dev d0\n\
                 link set d0 up\nlink set d1 up\nroute add default via 198.18.9.1\n",
            );
        }
        made
    }

    fn inode(&self, i: usize) -> u32 {
        std::fs::metadata(format!("/run/netns/{}", self.0[i]))
            .expect("the namespace exists")
            .ino() as u32
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn ip(args: &[&str], stdin: &str) {
    let mut child = Command::new("ip")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("run ip");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write");
    assert!(child.wait().expect("wait").success(), "ip {args:?}");
}

const SOURCE: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 9, 2));

/// The `i`-th destination: 198.19.x.y, routed through the gateway.
fn destination(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 19, (i / 250) as u8, (i % 250) as u8 + 1))
}

fn main() {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "the gateway benchmark needs root"
        );
        println!("skipped: the gateway benchmark needs root (CAP_SYS_ADMIN for setns, CAP_NET_ADMIN)");
        return;
    }
    common::require_tool("ip");
    let sizes = if benchmarking {
        Sizes {
            rounds: 7,
            warm_lookups: 2_000_000,
            netlink_samples: 2_001,
            connections: 50_000,
            namespaces: 5,
            destinations_per_namespace: 200,
        }
    } else {
        Sizes {
            rounds: 1,
            warm_lookups: 20_000,
            netlink_samples: 51,
            connections: 5_000,
            namespaces: 2,
            destinations_per_namespace: 50,
        }
    };
    let namespaces = Namespaces::make(sizes.namespaces);
    warm_lookups(&sizes, &namespaces);
    netlink_latency(&sizes, &namespaces);
    enrichment_per_scrape(&sizes, &namespaces);
}

fn new_lookup() -> GatewayLookup {
    GatewayLookup::new(&GatewayConfig::default(), "/proc".as_ref(), "/run/netns".as_ref())
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

fn warm_lookups(sizes: &Sizes, namespaces: &Namespaces) {
    let gw = new_lookup();
    let keys: Vec<(IpAddr, u32)> = (0..sizes.namespaces)
        .flat_map(|n| (0..sizes.destinations_per_namespace).map(move |d| (n, d)))
        .map(|(n, d)| (destination(d), namespaces.inode(n)))
        .collect();
    for &(dst, netns) in &keys {
        assert!(gw.lookup_with_ips(SOURCE, dst, netns).is_some(), "{dst} in {netns}");
    }
    let mut rates = Vec::with_capacity(sizes.rounds);
    for _ in 0..sizes.rounds {
        let start = Instant::now();
        let mut found = 0usize;
        for i in 0..sizes.warm_lookups {
            let (dst, netns) = keys[i % keys.len()];
            found += usize::from(gw.lookup_with_ips(SOURCE, dst, netns).is_some());
        }
        let elapsed = start.elapsed();
        assert_eq!(found, sizes.warm_lookups);
        rates.push(sizes.warm_lookups as f64 / elapsed.as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    let s = gw.snapshot();
    assert_eq!(s.route_misses, keys.len() as u64, "every timed lookup hit the cache");
    println!(
        "\n(a) warm route cache: {} keys, {} lookups per round, {} rounds, one thread",
        keys.len(),
        sizes.warm_lookups,
        sizes.rounds
    );
    println!("{:>16} {:>16} {:>16}", "median lookups/s", "min", "max");
    println!(
        "{:>16.0} {:>16.0} {:>16.0}",
        rates[rates.len() / 2],
        rates[0],
        rates[rates.len() - 1]
    );
}

/// A socket opened in namespace `path` by a thread that entered it.
fn socket_in(path: String) -> RouteSocket {
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("open the namespace");
        // SAFETY: a valid namespace fd; setns changes only this thread's namespace.
        assert_eq!(unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
        RouteSocket::open().expect("a netlink socket")
    })
    .join()
    .expect("the namespace thread")
}

fn netlink_latency(sizes: &Sizes, namespaces: &Namespaces) {
    let mut socket = socket_in(format!("/run/netns/{}", namespaces.0[0]));
    let mut bare = Vec::with_capacity(sizes.netlink_samples);
    for i in 0..sizes.netlink_samples {
        let start = Instant::now();
        let route = socket.route_get(SOURCE, destination(i % 1_000)).expect("route");
        bare.push(start.elapsed());
        assert!(route.is_some());
    }
    // Misses through the lookup: a fresh cache each round of distinct keys, the namespace's
    // socket and interface already known (one lookup made first).
    let mut missed = Vec::with_capacity(sizes.netlink_samples);
    let netns = namespaces.inode(0);
    let mut gw = new_lookup();
    for i in 0..sizes.netlink_samples {
        if i % 1_000 == 0 {
            gw = new_lookup();
            // A key outside the timed ones opens the socket and reads the interface.
            gw.lookup_with_ips(SOURCE, destination(1_000), netns);
        }
        let start = Instant::now();
        let via = gw.lookup_with_ips(SOURCE, destination(i % 1_000), netns);
        missed.push(start.elapsed());
        assert!(via.is_some());
        assert_eq!(
            gw.snapshot().route_misses,
            (i % 1_000) as u64 + 2,
            "every timed lookup missed"
        );
    }
    bare.sort();
    missed.sort();
    println!(
        "\n(b) one lookup that asks the kernel, {} samples each",
        sizes.netlink_samples
    );
    println!(
        "{:<34} {:>10} {:>10} {:>10} {:>10}",
        "path", "median µs", "p99 µs", "min µs", "max µs"
    );
    for (name, sample) in [
        ("RTM_GETROUTE round trip", &bare),
        ("route cache miss (GatewayLookup)", &missed),
    ] {
        let (median, p99, min, max) = spread(sample);
        println!(
            "{name:<34} {:>10.1} {:>10.1} {:>10.1} {:>10.1}",
            us(median),
            us(p99),
            us(min),
            us(max)
        );
    }
}

fn connections(sizes: &Sizes, namespaces: &Namespaces) -> Vec<(ConnKey, ConnStats)> {
    let distinct = sizes.namespaces * sizes.destinations_per_namespace;
    (0..sizes.connections)
        .map(|i| {
            let which = i % distinct;
            let (n, d) = (
                which / sizes.destinations_per_namespace,
                which % sizes.destinations_per_namespace,
            );
            let mut key = ConnKey {
                netns: namespaces.inode(n),
                sport: 20_000 + (i / distinct) as u16,
                dport: 443,
                family: AF_INET,
                protocol: IPPROTO_TCP,
                ..ConnKey::default()
            };
            key.saddr[..4].copy_from_slice(&[198, 18, 9, 2]);
            if let IpAddr::V4(v4) = destination(d) {
                key.daddr[..4].copy_from_slice(&v4.octets());
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

fn tracker() -> Tracker {
    Tracker::new(LabelPolicy {
        ephemeral_ports: 32768..=60999,
        remote: RemoteMode::Ip,
        max_series: 10_000,
    })
}

/// Times `live_snapshot` of `conns`, enriched by `gateway` as the connection collector does:
/// the first (every connection new) and three more, each given back with the tag the one
/// before set, as the TCP reader does.
fn scrapes(gateway: Option<Arc<GatewayLookup>>, conns: &[(ConnKey, ConnStats)]) -> (Duration, Duration) {
    let mut tracker = tracker();
    let route = |key: &ConnKey, _: Direction| Enrichment {
        via: gateway.as_ref().and_then(|g| g.lookup(key)),
        nat: None,
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

fn enrichment_per_scrape(sizes: &Sizes, namespaces: &Namespaces) {
    let conns = connections(sizes, namespaces);
    let distinct = sizes.namespaces * sizes.destinations_per_namespace;
    let (mut off_first, mut off_later) = (Vec::new(), Vec::new());
    let (mut cold_first, mut cold_later) = (Vec::new(), Vec::new());
    let (mut warm_first, mut warm_later) = (Vec::new(), Vec::new());
    for _ in 0..sizes.rounds {
        // Interleaved, so drift of the machine's load touches every variant alike.
        let (first, later) = scrapes(None, &conns);
        off_first.push(first);
        off_later.push(later);
        let gw = Arc::new(new_lookup());
        let (first, later) = scrapes(Some(gw.clone()), &conns);
        cold_first.push(first);
        cold_later.push(later);
        let s = gw.snapshot();
        assert_eq!(
            (s.route_lookups, s.route_misses),
            (sizes.connections as u64, distinct as u64),
            "one lookup per new connection; one kernel query per distinct key"
        );
        // The same keys again with a warm cache: new connections, no kernel query.
        let (first, later) = scrapes(Some(gw.clone()), &conns);
        warm_first.push(first);
        warm_later.push(later);
        assert_eq!(gw.snapshot().route_misses, distinct as u64);
    }
    println!(
        "\n(c) tracker per scrape, {} live connections over {} distinct (source, destination, netns) in {} namespaces, {} rounds",
        sizes.connections, distinct, sizes.namespaces, sizes.rounds
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
        ("gateway off, first scrape", &mut off_first, off_first_median),
        (
            "gateway on, cold cache, first scrape",
            &mut cold_first,
            off_first_median,
        ),
        (
            "gateway on, warm cache, first scrape",
            &mut warm_first,
            off_first_median,
        ),
        ("gateway off, later scrapes", &mut off_later, off_later_median),
        ("gateway on, later scrapes", &mut cold_later, off_later_median),
        ("gateway on (warm), later scrapes", &mut warm_later, off_later_median),
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
