//! Gateway enrichment on this machine's real kernel, in network namespaces the tests build
//! (addresses from 198.18.0.0/15 only) and remove, even on failure:
//!
//! ```text
//!   A (client)  a0 198.18.1.2/24 ── r0 198.18.1.1/24  R (router)  r1 198.18.2.1/24 ── b0 198.18.2.2/24  B (server)
//!               a1 198.18.3.2/24 ── q0 198.18.3.1/24  R2 (router) q1 198.18.4.1/24 ── b1 198.18.4.2/24
//! ```
//!
//! A's default route goes via R; B's via R, with A's second subnet via R2. The tests need
//! root (setns, netlink, the probes); under CI=true they fail instead of skipping. They hold
//! one lock, so the file-descriptor count of the churn test is not disturbed by the others.

mod common;

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::process::Command;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::netns::{Namespaces, batch, inode, read_one_connection, spawn_in};
use common::*;
use sonde::gateway::{GatewayConfig, GatewayLookup, Via};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serialized() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

fn run(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The A — R — B topology (with R2 beside R), removed on drop.
struct Topology {
    a: String,
    r: String,
    b: String,
    r2: String,
    _namespaces: Namespaces,
}

impl Topology {
    fn build() -> Topology {
        require_tool("ip");
        let base = unique_name("sgw");
        let mut namespaces = Namespaces(Vec::new());
        let [a, r, b, r2] = ["a", "r", "b", "q"].map(|tag| namespaces.add(format!("{base}-{tag}")));
        // Both ends of each pair are made inside the namespaces: no name meets the host's.
        for (left, ldev, right, rdev) in [
            (&a, "a0", &r, "r0"),
            (&r, "r1", &b, "b0"),
            (&a, "a1", &r2, "q0"),
            (&r2, "q1", &b, "b1"),
        ] {
            run(&[
                "link", "add", ldev, "netns", left, "type", "veth", "peer", "name", rdev, "netns", right,
            ]);
        }
        let common = "link set lo up\n";
        batch(
            &a,
            &format!(
                "{common}addr add 198.18.1.2/24 dev a0\nlink set a0 up\naddr add 198.18.3.2/24 dev a1\nlink set a1 up\n\
                 route add default via 198.18.1.1\n"
            ),
        );
        batch(
            &r,
            &format!(
                "{common}addr add 198.18.1.1/24 dev r0\nlink set r0 up\naddr add 198.18.2.1/24 dev r1\nlink set r1 up\n"
            ),
        );
        batch(
            &r2,
            &format!(
                "{common}addr add 198.18.3.1/24 dev q0\nlink set q0 up\naddr add 198.18.4.1/24 dev q1\nlink set q1 up\n\
                 route add 198.18.2.0/24 via 198.18.4.2\n"
            ),
        );
        batch(
            &b,
            &format!(
                "{common}addr add 198.18.2.2/24 dev b0\nlink set b0 up\naddr add 198.18.4.2/24 dev b1\nlink set b1 up\n\
                 route add default via 198.18.2.1\nroute add 198.18.3.0/24 via 198.18.4.1\n"
            ),
        );
        // /proc/sys/net shows the namespace of the thread that opens it.
        for router in [&r, &r2] {
            spawn_in(router, || std::fs::write("/proc/sys/net/ipv4/ip_forward", "1"))
                .join()
                .expect("the router thread")
                .expect("forwarding on");
        }
        Topology {
            a,
            r,
            b,
            r2,
            _namespaces: namespaces,
        }
    }
}

/// A server in `server_ns` (None: the host) on `addr` that reads one connection to its end;
/// a client in `client_ns` that sends `bytes` to it. Returns the server's port.
fn exchange(server_ns: Option<&str>, client_ns: Option<&str>, addr: Ipv4Addr, bytes: usize) -> u16 {
    let (tx, rx) = std::sync::mpsc::channel();
    let serve = move || read_one_connection(addr, tx);
    let server = match server_ns {
        Some(ns) => spawn_in(ns, serve),
        None => std::thread::spawn(serve),
    };
    let port = rx.recv().expect("port");
    let connect = move || {
        let target = SocketAddr::from((addr, port));
        let mut stream = TcpStream::connect_timeout(&target, Duration::from_secs(20)).expect("connect");
        stream.write_all(&vec![b'x'; bytes]).expect("send");
    };
    match client_ns {
        Some(ns) => spawn_in(ns, connect).join().expect("client"),
        None => connect(),
    }
    assert_eq!(server.join().expect("server"), bytes);
    port
}

/// As [`exchange`], with the client bound to `source` (so connections share their
/// (source, destination, netns) key whatever route they take).
fn exchange_from(server_ns: &str, client_ns: &str, source: Ipv4Addr, addr: Ipv4Addr, bytes: usize) -> u16 {
    let (tx, rx) = std::sync::mpsc::channel();
    let server = spawn_in(server_ns, move || read_one_connection(addr, tx));
    let port = rx.recv().expect("port");
    spawn_in(client_ns, move || {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        socket
            .bind(&SocketAddr::from((source, 0)).into())
            .expect("bind the source");
        socket
            .connect_timeout(&SocketAddr::from((addr, port)).into(), Duration::from_secs(20))
            .expect("connect");
        let mut stream = TcpStream::from(socket);
        stream.write_all(&vec![b'x'; bytes]).expect("send");
    })
    .join()
    .expect("client");
    assert_eq!(server.join().expect("server"), bytes);
    port
}

fn lookup(config: GatewayConfig) -> GatewayLookup {
    GatewayLookup::new(&config, "/proc".as_ref(), "/run/netns".as_ref())
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("an address")
}

fn via(gateway: &str, interface: &str, subnet: &str) -> Option<Via> {
    Some(Via {
        gateway: gateway.into(),
        interface: interface.into(),
        subnet: subnet.into(),
    })
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").expect("list fds").count()
}

// ---- through the real binary: probes, lookup, labels ----

/// The one series of `sonde_tcp_bytes_sent_total` with these labels: its gateway labels,
/// after checking it counted exactly `bytes`.
fn gateway_labels(text: &str, filter: &[(&str, &str)], bytes: usize) -> [String; 3] {
    let found = samples_with(text, "sonde_tcp_bytes_sent_total", filter);
    assert_eq!(found.len(), 1, "one series for {filter:?}:\n{text}");
    let sample = &found[0];
    assert_eq!(sample.value, bytes as f64, "{filter:?}\n{text}");
    ["gateway", "interface", "subnet"].map(|k| sample.label(k).unwrap_or("<absent>").to_owned())
}

/// A connection's series (by labels), the bytes it sent, and its gateway labels.
type Case<'a> = (&'a [(&'a str, &'a str)], usize, [&'a str; 3]);

#[test]
fn connections_through_a_router_carry_its_gateway_interface_and_subnet() {
    if !root_or_skip("connections_through_a_router_carry_its_gateway_interface_and_subnet") {
        return;
    }
    let _one = serialized();
    let topology = Topology::build();
    let sonde = Sonde::start(&["--no-collector.host", "--connection.ephemeral-port-range=1-1"]);
    let first = scrape(&sonde);
    assert_eq!(
        collector_success(&first, "connection"),
        Some(1.0),
        "the probes did not load:\n{first}"
    );
    // A → B through R; A → R inside one subnet; host → host over loopback.
    let routed = exchange(
        Some(&topology.b),
        Some(&topology.a),
        Ipv4Addr::new(198, 18, 2, 2),
        3_001,
    );
    let direct = exchange(
        Some(&topology.r),
        Some(&topology.a),
        Ipv4Addr::new(198, 18, 1, 1),
        2_002,
    );
    let loopback = exchange(None, None, Ipv4Addr::LOCALHOST, 1_003);
    let (routed, direct, loopback) = (routed.to_string(), direct.to_string(), loopback.to_string());
    let cases: [Case; 5] = [
        // A's side: the gateway is R's address on A's subnet, through A's interface.
        (
            &[("direction", "outbound"), ("port", &routed), ("remote", "198.18.2.2")],
            3_001,
            ["198.18.1.1", "a0", "198.18.1.0/24"],
        ),
        // B's side answers through its own default route, via R's address on B's subnet.
        (
            &[("direction", "inbound"), ("port", &routed), ("remote", "198.18.1.2")],
            0,
            ["198.18.2.1", "b0", "198.18.2.0/24"],
        ),
        (
            &[("direction", "outbound"), ("port", &direct), ("remote", "198.18.1.1")],
            2_002,
            ["", "", ""],
        ),
        (
            &[("direction", "inbound"), ("port", &direct), ("remote", "198.18.1.2")],
            0,
            ["", "", ""],
        ),
        (
            &[("direction", "outbound"), ("port", &loopback), ("remote", "127.0.0.1")],
            1_003,
            ["", "", ""],
        ),
    ];
    let text = scrape_until(&sonde, "every case's bytes and connect", |text| {
        cases.iter().all(|(filter, bytes, _)| {
            samples_with(text, "sonde_tcp_bytes_sent_total", filter)
                .iter()
                .map(|s| s.value)
                .sum::<f64>()
                == *bytes as f64
                && !samples_with(text, "sonde_tcp_connects_total", filter).is_empty()
        })
    });
    for (filter, bytes, expected) in cases {
        assert_eq!(
            gateway_labels(&text, filter, bytes),
            expected.map(String::from),
            "{filter:?}\n{text}"
        );
    }
    // The lookups showed in the telemetry.
    for family in [
        "sonde_gateway_route_cache_lookups_total",
        "sonde_gateway_route_cache_misses_total",
        "sonde_gateway_netlink_lookups_total",
        "sonde_gateway_subnet_cache_lookups_total",
        "sonde_gateway_subnet_cache_misses_total",
    ] {
        let value = sample_value(&text, family).unwrap_or(0.0);
        assert!(value >= 2.0, "{family} = {value}: A's and B's lookups\n{text}");
    }
    assert!(
        sample_value(&text, "sonde_gateway_route_cache_entries").unwrap_or(0.0) >= 2.0,
        "{text}"
    );
    let (ok, complaints) = promtool_check_metrics(text.as_bytes());
    assert!(ok, "promtool: {complaints}");
    drop(topology);
}

#[test]
fn no_gateway_and_no_conntrack_leave_the_labels_and_families_out() {
    if !root_or_skip("no_gateway_and_no_conntrack_leave_the_labels_and_families_out") {
        return;
    }
    let _one = serialized();
    let sonde = Sonde::start(&[
        "--no-collector.host",
        "--connection.ephemeral-port-range=1-1",
        "--no-gateway",
        "--no-conntrack",
    ]);
    // The probes load at the first scrape.
    scrape(&sonde);
    let port = exchange(None, None, Ipv4Addr::LOCALHOST, 1_234).to_string();
    let filter = [("direction", "outbound"), ("port", port.as_str())];
    let text = scrape_until(&sonde, "the 1,234 bytes", |text| {
        samples_with(text, "sonde_tcp_bytes_sent_total", &filter)
            .iter()
            .any(|s| s.value == 1_234.0)
    });
    let found = samples_with(&text, "sonde_tcp_bytes_sent_total", &filter);
    assert_eq!(found.len(), 1, "{text}");
    let keys: Vec<&str> = found[0].labels.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        ["id", "container", "pod", "namespace", "direction", "port", "remote"],
        "{text}"
    );
    assert!(!text.contains("sonde_gateway_"), "{text}");
    assert!(!text.contains("sonde_conntrack_"), "{text}");
}

// ---- the lookup itself, against the kernel ----

#[test]
fn routed_direct_and_loopback_answers_and_the_caches_count_them() {
    if !root_or_skip("routed_direct_and_loopback_answers_and_the_caches_count_them") {
        return;
    }
    let _one = serialized();
    let topology = Topology::build();
    let (a, b) = (inode(&topology.a), inode(&topology.b));
    let gw = lookup(GatewayConfig::default());
    let routed = || {
        gw.lookup_with_ips(ip("198.18.1.2"), ip("198.18.2.2"), a)
            .map(|v| (*v).clone())
    };
    assert_eq!(routed(), via("198.18.1.1", "a0", "198.18.1.0/24"));
    assert_eq!(routed(), via("198.18.1.1", "a0", "198.18.1.0/24"));
    // Same subnet: no gateway, and that answer is cached too.
    assert_eq!(gw.lookup_with_ips(ip("198.18.1.2"), ip("198.18.1.1"), a), None);
    assert_eq!(gw.lookup_with_ips(ip("198.18.1.2"), ip("198.18.1.1"), a), None);
    // B to A's second subnet goes through R2, on B's second interface.
    assert_eq!(
        gw.lookup_with_ips(ip("198.18.4.2"), ip("198.18.3.2"), b)
            .map(|v| (*v).clone()),
        via("198.18.4.1", "b1", "198.18.4.0/24")
    );
    // A local address of A's own: a local route, no gateway.
    assert_eq!(gw.lookup_with_ips(ip("198.18.1.2"), ip("198.18.3.2"), a), None);
    // The host over loopback: no gateway, and no cache entry or query for it.
    assert_eq!(gw.lookup_with_ips(ip("127.0.0.1"), ip("127.0.0.1"), 0), None);
    let s = gw.snapshot();
    assert_eq!(
        (s.route_lookups, s.route_misses, s.netlink_lookups, s.route_entries),
        (6, 4, 4, 4),
        "{s:?}"
    );
    // Two interfaces read (a0 in A, b1 in B); the repeated routed lookup never reached them.
    assert_eq!((s.subnet_lookups, s.subnet_misses), (2, 2), "{s:?}");
    assert_eq!(s.netns_handles, 2, "{s:?}");
    assert!(s.lookup_errors.is_empty() && s.netlink_errors.is_empty(), "{s:?}");
    let names: Vec<String> = gw.families().iter().map(|f| f.name().to_owned()).collect();
    for family in [
        "sonde_gateway_route_cache_lookups_total",
        "sonde_gateway_route_cache_misses_total",
        "sonde_gateway_route_cache_expirations_total",
        "sonde_gateway_route_cache_entries",
        "sonde_gateway_netlink_lookups_total",
        "sonde_gateway_subnet_cache_lookups_total",
        "sonde_gateway_subnet_cache_misses_total",
    ] {
        assert!(names.iter().any(|n| n == family), "{family} missing: {names:?}");
    }
}

#[test]
fn known_connections_are_not_looked_up_again() {
    use sonde::collector::connection::series::{Direction, LabelPolicy, RemoteMode};
    use sonde::collector::connection::tracker::{Enrichment, Tracker};
    use sonde::ebpf::conn::{AF_INET, ConnKey, ConnStats, DIR_OUTBOUND, FLAG_CONNECTED, IPPROTO_TCP, LiveConn};
    if !root_or_skip("known_connections_are_not_looked_up_again") {
        return;
    }
    let _one = serialized();
    let topology = Topology::build();
    let a = inode(&topology.a);
    let gw = Arc::new(lookup(GatewayConfig::default()));
    let mut tracker = Tracker::new(LabelPolicy {
        ephemeral_ports: 32768..=60999,
        remote: RemoteMode::Ip,
        max_series: 1_000,
    });
    // The connection collector's enrichment step: the tracker asks for a new connection's route.
    let route = |key: &ConnKey, _: Direction| Enrichment {
        via: gw.lookup(key),
        nat: None,
    };
    // 100 connections from A to B (routed) and 100 from A to R (direct).
    let conns: Vec<(ConnKey, ConnStats)> = (0..200u16)
        .map(|i| {
            let mut key = ConnKey {
                netns: a,
                sport: 40_000 + i,
                dport: 80,
                family: AF_INET,
                protocol: IPPROTO_TCP,
                ..ConnKey::default()
            };
            key.saddr[..4].copy_from_slice(&[198, 18, 1, 2]);
            key.daddr[..4].copy_from_slice(if i < 100 { &[198, 18, 2, 2] } else { &[198, 18, 1, 1] });
            let stats = ConnStats {
                bytes_sent: 10,
                cookie: u64::from(i) + 1,
                direction: DIR_OUTBOUND,
                flags: FLAG_CONNECTED,
                ..ConnStats::default()
            };
            (key, stats)
        })
        .collect();
    let mut conns: Vec<LiveConn> = conns
        .into_iter()
        .map(|(key, stats)| LiveConn::untracked(key, stats))
        .collect();
    for scrape in 0..4 {
        tracker.live_snapshot(&mut conns, Instant::now(), &route);
        let s = gw.snapshot();
        // Every connection was looked up once, at its first scrape; two went to the kernel.
        assert_eq!(
            (s.route_lookups, s.route_misses, s.netlink_lookups),
            (200, 2, 2),
            "scrape {scrape}: {s:?}"
        );
    }
    let view = tracker.view();
    let mut series: Vec<(Option<Via>, u64)> = view
        .iter()
        .map(|v| (v.key.via.as_deref().cloned(), v.counters.bytes_sent))
        .collect();
    series.sort_by_key(|(via, _)| via.is_some());
    assert_eq!(
        series,
        [(None, 1_000), (via("198.18.1.1", "a0", "198.18.1.0/24"), 1_000)]
    );
}

#[test]
fn failures_are_cached_negatively_and_counted_by_reason() {
    if !root_or_skip("failures_are_cached_negatively_and_counted_by_reason") {
        return;
    }
    let _one = serialized();
    let topology = Topology::build();
    let r2 = inode(&topology.r2);
    let gw = lookup(GatewayConfig::default());
    // R2 has no default route: the kernel answers ENETUNREACH, once.
    for _ in 0..5 {
        assert_eq!(gw.lookup_with_ips(ip("198.18.3.1"), ip("198.19.0.1"), r2), None);
    }
    // A namespace nobody holds (inode 1 is never a namespace): searched for once.
    for _ in 0..5 {
        assert_eq!(gw.lookup_with_ips(ip("198.18.3.1"), ip("198.19.0.1"), 1), None);
    }
    // Another connection of that namespace: not searched for again so soon.
    assert_eq!(gw.lookup_with_ips(ip("198.18.3.1"), ip("198.19.0.2"), 1), None);
    let s = gw.snapshot();
    assert_eq!(
        (s.route_lookups, s.route_misses, s.netlink_lookups),
        (11, 3, 1),
        "{s:?}"
    );
    assert_eq!(
        s.netlink_errors.into_iter().collect::<Vec<_>>(),
        [("ENETUNREACH".to_owned(), 1)]
    );
    assert_eq!(
        s.lookup_errors.into_iter().collect::<Vec<_>>(),
        [("netns_failed_recently", 1), ("netns_not_found", 1), ("route", 1)]
    );
    let families = gw.families();
    let errors = families
        .iter()
        .find(|f| f.name() == "sonde_gateway_netlink_errors_total")
        .expect("the errno family");
    assert_eq!(errors.get_metric()[0].get_label()[0].value(), "ENETUNREACH");
    let reasons = families
        .iter()
        .find(|f| f.name() == "sonde_gateway_lookup_errors_total")
        .expect("the reason family");
    let reasons: Vec<(&str, f64)> = reasons
        .get_metric()
        .iter()
        .map(|m| (m.get_label()[0].value(), m.get_counter().value()))
        .collect();
    assert_eq!(
        reasons,
        [("netns_failed_recently", 1.0), ("netns_not_found", 1.0), ("route", 1.0)]
    );
}

#[test]
fn a_replaced_route_is_followed_within_one_ttl() {
    if !root_or_skip("a_replaced_route_is_followed_within_one_ttl") {
        return;
    }
    let _one = serialized();
    const TTL: Duration = Duration::from_secs(2);
    let topology = Topology::build();
    let a = inode(&topology.a);
    let gw = lookup(GatewayConfig {
        route_cache_ttl: TTL,
        ..GatewayConfig::default()
    });
    let from_a = || {
        gw.lookup_with_ips(ip("198.18.1.2"), ip("198.18.2.2"), a)
            .map(|v| (*v).clone())
    };
    let before_first = Instant::now();
    assert_eq!(from_a(), via("198.18.1.1", "a0", "198.18.1.0/24"));
    let cached_at = Instant::now();
    run(&[
        "-n",
        &topology.a,
        "route",
        "replace",
        "default",
        "via",
        "198.18.3.1",
        "dev",
        "a1",
    ]);
    // Within the TTL the cached answer stands (checked only when the machine was quick
    // enough for "within" to be certain).
    let answer = from_a();
    if before_first.elapsed() < TTL {
        assert_eq!(answer, via("198.18.1.1", "a0", "198.18.1.0/24"));
    }
    // One TTL after the answer was cached, the next lookup asks the kernel again and follows
    // the new route: R2, A's second interface, and (the source being on a0) the subnet of
    // a1 that holds the gateway.
    std::thread::sleep(TTL.saturating_sub(cached_at.elapsed()) + Duration::from_millis(50));
    assert_eq!(from_a(), via("198.18.3.1", "a1", "198.18.3.0/24"));
    let s = gw.snapshot();
    assert_eq!((s.route_misses, s.netlink_lookups), (2, 2), "{s:?}");
    // Connections made now go through R2 (B reaches A's first subnet through R).
    let port = exchange(Some(&topology.b), Some(&topology.a), Ipv4Addr::new(198, 18, 2, 2), 10);
    assert!(port > 0);
}

/// The series of A's connections to B's 198.18.2.2 on `port`.
fn outbound_to_b(port: &str) -> [(&str, &str); 3] {
    [("direction", "outbound"), ("port", port), ("remote", "198.18.2.2")]
}

#[test]
fn the_binary_follows_a_replaced_route_after_one_ttl() {
    if !root_or_skip("the_binary_follows_a_replaced_route_after_one_ttl") {
        return;
    }
    let _one = serialized();
    const TTL: Duration = Duration::from_secs(2);
    let topology = Topology::build();
    let sonde = Sonde::start(&[
        "--no-collector.host",
        "--connection.ephemeral-port-range=1-1",
        "--gateway.route-cache-ttl=2s",
    ]);
    scrape(&sonde);
    let (source, server) = (Ipv4Addr::new(198, 18, 1, 2), Ipv4Addr::new(198, 18, 2, 2));
    let before = exchange_from(&topology.b, &topology.a, source, server, 501).to_string();
    let seen = |text: &str, port: &str, bytes: f64| {
        samples_with(text, "sonde_tcp_bytes_sent_total", &outbound_to_b(port))
            .iter()
            .any(|s| s.value == bytes)
    };
    let text = scrape_until(&sonde, "the first connection", |text| seen(text, &before, 501.0));
    assert_eq!(
        gateway_labels(&text, &outbound_to_b(&before), 501),
        ["198.18.1.1", "a0", "198.18.1.0/24"],
        "{text}"
    );
    // A now leaves through R2 (B still answers A's first subnet through R). After one TTL,
    // a new connection with the same source, destination and namespace is looked up anew.
    run(&[
        "-n",
        &topology.a,
        "route",
        "replace",
        "default",
        "via",
        "198.18.3.1",
        "dev",
        "a1",
    ]);
    std::thread::sleep(TTL + Duration::from_millis(100));
    let after = exchange_from(&topology.b, &topology.a, source, server, 502).to_string();
    let text = scrape_until(&sonde, "the connection after the TTL", |text| seen(text, &after, 502.0));
    assert_eq!(
        gateway_labels(&text, &outbound_to_b(&after), 502),
        ["198.18.3.1", "a1", "198.18.3.0/24"],
        "{text}"
    );
}

#[test]
fn namespace_churn_returns_fds_and_handles_to_the_start() {
    if !root_or_skip("namespace_churn_returns_fds_and_handles_to_the_start") {
        return;
    }
    let _one = serialized();
    require_tool("ip");
    const CYCLES: usize = 200;
    let gw = Arc::new(lookup(GatewayConfig::default()));
    let base = unique_name("sgwc");
    let (fds, handles) = (open_fds(), gw.netns_handles());
    for cycle in 0..CYCLES {
        let mut namespaces = Namespaces(Vec::new());
        let ns = namespaces.add(format!("{base}-{cycle}"));
        batch(
            &ns,
            "link set lo up\nlink add d0 type veth peer name d1\naddr add 198.18.9.2/24 dev d0\nlink set d0 up\n\
             link set d1 up\nroute add default via 198.18.9.1\n",
        );
        // A real connection inside the namespace (over its loopback), then the lookup of a
        // routed one, which opens a socket in the namespace. The kernel reuses a freed
        // namespace's inode for a later one, so the right answer in every cycle also shows
        // that a vanished namespace's cached answers go with it.
        let port = {
            let ns = ns.clone();
            spawn_in(&ns, || exchange(None, None, Ipv4Addr::LOCALHOST, 16))
                .join()
                .expect("exchange")
        };
        assert!(port > 0);
        assert_eq!(
            gw.lookup_with_ips(ip("198.18.9.2"), ip("198.19.1.1"), inode(&ns))
                .map(|v| (*v).clone()),
            via("198.18.9.1", "d0", "198.18.9.0/24"),
            "cycle {cycle}"
        );
        assert_eq!(gw.netns_handles(), handles + 1, "cycle {cycle}");
        drop(namespaces);
        let pruned = gw.prune_vanished();
        assert_eq!(pruned, 1, "cycle {cycle}: the deleted namespace's socket goes");
    }
    assert_eq!(gw.netns_handles(), handles);
    // Other tests of this binary run alongside and open and close a few descriptors of
    // their own: a leak here would be one (or more) per cycle, hundreds in all.
    let after = open_fds();
    assert!(
        after <= fds + 10,
        "file descriptors {fds} before {CYCLES} cycles, {after} after"
    );
    let s = gw.snapshot();
    assert_eq!(s.netlink_lookups, CYCLES as u64, "{s:?}");
    assert!(s.lookup_errors.is_empty(), "{s:?}");
}
