//! NAT-aware connections on this machine's real kernel: conntrack, iptables DNAT rules and
//! network namespaces the tests make (addresses from 198.18.0.0/15 only) and remove, even on
//! failure:
//!
//! ```text
//!   A (client)  a0 198.19.20.2/24 ── <host veth> 198.19.20.1/24, 198.19.20.3/24   the host
//!   B (backend) b0 198.19.21.2/24 ── <host veth> 198.19.21.1/24                   (forwards)
//! ```
//!
//! B listens on 198.19.21.2:8080. Two service addresses lead there: 198.19.22.9:80, by a DNAT
//! rule in A's own OUTPUT chain, and 198.19.23.9:80, by a DNAT rule in the host's PREROUTING
//! chain (as kube-proxy's), A being routed through the host. A reaches both service subnets
//! through 198.19.20.3 and everything else (B's subnet) through 198.19.20.1, so the gateway
//! label tells the dialed path from the translated one.
//!
//! The host's rules live in chains of their own with unique names, jumped to from PREROUTING
//! and FORWARD only for these addresses, and go (jumps, chains, host veths, namespaces) when
//! the topology is dropped. The tests need root; under CI=true they fail instead of skipping.
//! They hold one lock: they share the addresses.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::netns::{Namespaces, batch, inode, run, spawn_in};
use common::*;
use sonde::conntrack::netlink::FiveTuple;
use sonde::conntrack::{ConntrackConfig, ConntrackLookup};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serialized() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 19, 20, 2);
const BACKEND: Ipv4Addr = Ipv4Addr::new(198, 19, 21, 2);
const BACKEND_PORT: u16 = 8080;
/// DNATed by a rule in A's OUTPUT chain.
const OUTPUT_VIP: Ipv4Addr = Ipv4Addr::new(198, 19, 22, 9);
/// DNATed by a rule in the host's PREROUTING chain.
const HOST_VIP: Ipv4Addr = Ipv4Addr::new(198, 19, 23, 9);
const SERVICE_PORT: u16 = 80;

/// Conntrack and NAT in the kernel: built in here; a module elsewhere, loaded if missing.
fn conntrack_loaded() {
    if !std::path::Path::new("/proc/sys/net/netfilter/nf_conntrack_max").exists() {
        require_tool("modprobe");
        for module in ["nf_conntrack", "nf_nat", "nf_conntrack_netlink"] {
            run(&["modprobe", module]);
        }
    }
}

/// `iptables` in the host's namespace, or in `ns`; must succeed.
fn iptables(ns: Option<&str>, args: &[&str]) {
    let mut cmd = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "iptables"]);
            c
        }
        None => Command::new("iptables"),
    };
    let out = cmd.args(["-w", "5"]).args(args).output().expect("run iptables");
    assert!(
        out.status.success(),
        "iptables {args:?} (in {ns:?}): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The host's rules: chains of unique names and the jumps to them, removed on drop (jumps
/// first, then the chains' rules, then the chains).
struct HostRules {
    /// (table, built-in chain, jump rule spec) of every jump added.
    jumps: Vec<(&'static str, &'static str, Vec<String>)>,
    /// (table, chain) of every chain made.
    chains: Vec<(&'static str, String)>,
}

impl HostRules {
    fn chain(&mut self, table: &'static str, name: String) -> String {
        iptables(None, &["-t", table, "-N", &name]);
        self.chains.push((table, name.clone()));
        name
    }

    fn jump(&mut self, table: &'static str, from: &'static str, spec: &[&str]) {
        let spec: Vec<String> = spec.iter().map(|s| s.to_string()).collect();
        let mut args = vec!["-t", table, "-I", from, "1"];
        args.extend(spec.iter().map(String::as_str));
        iptables(None, &args);
        self.jumps.push((table, from, spec));
    }
}

impl Drop for HostRules {
    fn drop(&mut self) {
        for (table, from, spec) in self.jumps.iter().rev() {
            let _ = Command::new("iptables")
                .args(["-w", "5", "-t", table, "-D", from])
                .args(spec)
                .status();
        }
        for (table, chain) in &self.chains {
            let _ = Command::new("iptables")
                .args(["-w", "5", "-t", table, "-F", chain])
                .status();
            let _ = Command::new("iptables")
                .args(["-w", "5", "-t", table, "-X", chain])
                .status();
        }
    }
}

/// The host's chains of a run that was killed (its drop guards never ran): `SONDE-<pid>-…`
/// of a process that no longer exists, with the jumps to them.
fn remove_rules_of_dead_runs() {
    for table in ["nat", "filter"] {
        let Ok(out) = Command::new("iptables").args(["-w", "5", "-t", table, "-S"]).output() else {
            continue;
        };
        let rules = String::from_utf8_lossy(&out.stdout).into_owned();
        let dead: Vec<&str> = rules
            .lines()
            .filter_map(|l| l.strip_prefix("-N "))
            .filter(|chain| {
                chain
                    .strip_prefix("SONDE-")
                    .and_then(|rest| rest.split('-').next())
                    .and_then(|pid| pid.parse::<u32>().ok())
                    .is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
            })
            .collect();
        for chain in &dead {
            for jump in rules
                .lines()
                .filter(|l| l.starts_with("-A ") && l.ends_with(&format!("-j {chain}")))
            {
                let spec: Vec<&str> = jump.split_whitespace().skip(1).collect();
                let _ = Command::new("iptables")
                    .args(["-w", "5", "-t", table, "-D"])
                    .args(&spec)
                    .status();
            }
        }
        for chain in &dead {
            let _ = Command::new("iptables")
                .args(["-w", "5", "-t", table, "-F", chain])
                .status();
            let _ = Command::new("iptables")
                .args(["-w", "5", "-t", table, "-X", chain])
                .status();
        }
    }
}

/// Links made in the host's namespace, deleted on drop (deleting the namespace of their
/// peer removes them too; this is for a failure before that).
struct HostLinks(Vec<String>);

impl Drop for HostLinks {
    fn drop(&mut self) {
        for link in &self.0 {
            let _ = Command::new("ip")
                .args(["link", "del", link])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

/// Client A, backend B, the host between them, the two DNAT rules. Field order is drop order:
/// the rules, then the namespaces (which take the veth pairs), then any link left.
struct Topology {
    a: String,
    b: String,
    _rules: HostRules,
    _namespaces: Namespaces,
    _links: HostLinks,
}

impl Topology {
    fn build() -> Topology {
        require_tool("ip");
        require_tool("iptables");
        conntrack_loaded();
        let base = unique_name("snat");
        let mut namespaces = Namespaces(Vec::new());
        let [a, b] = ["a", "b"].map(|tag| namespaces.add(format!("{base}-{tag}")));
        // Host-side veth names: at most 15 bytes, unique per process and build.
        static BUILDS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let (pid, build) = (std::process::id(), BUILDS.fetch_add(1, Ordering::Relaxed) % 100);
        let tag = format!("{}{build}", pid % 1_000_000);
        let (ha, hb) = (format!("sna{tag}"), format!("snb{tag}"));
        let mut links = HostLinks(Vec::new());
        for (host, peer, ns) in [(&ha, "a0", &a), (&hb, "b0", &b)] {
            run(&[
                "ip", "link", "add", host, "type", "veth", "peer", "name", peer, "netns", ns,
            ]);
            links.0.push(host.clone());
        }
        for (dev, addrs) in [
            (&ha, &["198.19.20.1/24", "198.19.20.3/24"][..]),
            (&hb, &["198.19.21.1/24"][..]),
        ] {
            for addr in addrs {
                run(&["ip", "addr", "add", addr, "dev", dev]);
            }
            run(&["ip", "link", "set", dev, "up"]);
            // Forwarding on these two interfaces only (IPv4 asks the incoming one).
            std::fs::write(format!("/proc/sys/net/ipv4/conf/{dev}/forwarding"), "1").expect("forwarding on");
        }
        batch(
            &a,
            "link set lo up\naddr add 198.19.20.2/24 dev a0\nlink set a0 up\nroute add default via 198.19.20.1\n\
             route add 198.19.22.0/24 via 198.19.20.3\nroute add 198.19.23.0/24 via 198.19.20.3\n",
        );
        batch(
            &b,
            "link set lo up\naddr add 198.19.21.2/24 dev b0\nlink set b0 up\nroute add default via 198.19.21.1\n",
        );
        let backend = format!("{BACKEND}:{BACKEND_PORT}");
        // A's own rule: OUTPUT, as a sidecar's or a CNI's in the pod's namespace.
        iptables(
            Some(&a),
            &[
                "-t",
                "nat",
                "-A",
                "OUTPUT",
                "-d",
                "198.19.22.9/32",
                "-p",
                "tcp",
                "--dport",
                "80",
                "-j",
                "DNAT",
                "--to-destination",
                &backend,
            ],
        );
        // The host's: PREROUTING, as kube-proxy's; FORWARD lets the two subnets through
        // (Docker's FORWARD policy is DROP).
        let mut rules = HostRules {
            jumps: Vec::new(),
            chains: Vec::new(),
        };
        remove_rules_of_dead_runs();
        let unique = format!("SONDE-{pid}-{build}");
        let nat = rules.chain("nat", format!("{unique}-NAT"));
        iptables(
            None,
            &[
                "-t",
                "nat",
                "-A",
                &nat,
                "-p",
                "tcp",
                "--dport",
                "80",
                "-j",
                "DNAT",
                "--to-destination",
                &backend,
            ],
        );
        rules.jump("nat", "PREROUTING", &["-d", "198.19.23.9/32", "-j", &nat]);
        let forward = rules.chain("filter", format!("{unique}-FWD"));
        iptables(None, &["-A", &forward, "-j", "ACCEPT"]);
        rules.jump(
            "filter",
            "FORWARD",
            &["-s", "198.19.20.0/24", "-d", "198.19.21.0/24", "-j", &forward],
        );
        rules.jump(
            "filter",
            "FORWARD",
            &["-s", "198.19.21.0/24", "-d", "198.19.20.0/24", "-j", &forward],
        );
        Topology {
            a,
            b,
            _rules: rules,
            _namespaces: namespaces,
            _links: links,
        }
    }

    /// A server in B on the backend's address that reads `count` connections to their end;
    /// `ready` is set once it listens. Returns the bytes of each connection.
    fn serve(&self, count: usize) -> std::thread::JoinHandle<Vec<usize>> {
        let (tx, rx) = std::sync::mpsc::channel();
        let server = spawn_in(&self.b, move || {
            let listener = TcpListener::bind((BACKEND, BACKEND_PORT)).expect("bind the backend");
            tx.send(()).expect("say ready");
            (0..count)
                .map(|_| {
                    let (mut stream, _) = listener.accept().expect("accept");
                    let mut got = Vec::new();
                    stream.read_to_end(&mut got).expect("read");
                    got.len()
                })
                .collect()
        });
        rx.recv().expect("the backend listens");
        server
    }

    /// Sends `bytes` from A to each of `services` in turn (one connection each); returns the
    /// client side's (local, dialed) addresses.
    fn dial(&self, services: Vec<(Ipv4Addr, usize)>) -> Vec<(SocketAddr, SocketAddr)> {
        spawn_in(&self.a, move || {
            services
                .into_iter()
                .map(|(vip, bytes)| {
                    let dialed = SocketAddr::from((vip, SERVICE_PORT));
                    let mut stream = TcpStream::connect_timeout(&dialed, Duration::from_secs(20)).expect("connect");
                    stream.write_all(&vec![b'x'; bytes]).expect("send");
                    (stream.local_addr().expect("local address"), dialed)
                })
                .collect()
        })
        .join()
        .expect("the client")
    }
}

fn vip_service(vip: Ipv4Addr) -> String {
    format!("{vip}:{SERVICE_PORT}")
}

// ---- the lookup itself, against the kernel ----

#[test]
fn the_lookup_asks_the_connections_namespace_then_the_hosts() {
    if !root_or_skip("the_lookup_asks_the_connections_namespace_then_the_hosts") {
        return;
    }
    let _one = serialized();
    let topology = Topology::build();
    let server = topology.serve(3);
    let conns = topology.dial(vec![(OUTPUT_VIP, 10), (HOST_VIP, 20)]);
    // The third connection goes to the backend directly: no NAT anywhere.
    let direct = spawn_in(&topology.a, || {
        let mut s = TcpStream::connect((BACKEND, BACKEND_PORT)).expect("connect directly");
        s.write_all(b"abc").expect("send");
        s.local_addr().expect("local address")
    });
    let direct = direct.join().expect("direct client");
    assert_eq!(server.join().expect("backend"), [10, 20, 3]);
    // (The entries stay in TIME_WAIT, 120 s, after the close.)
    let ct = ConntrackLookup::new(&ConntrackConfig::default(), "/proc".as_ref(), "/run/netns".as_ref());
    let a = inode(&topology.a);
    let tuple = |src: SocketAddr, dst: SocketAddr| FiveTuple { protocol: 6, src, dst };
    let backend = SocketAddr::from((BACKEND, BACKEND_PORT));
    for (local, dialed) in &conns {
        for _ in 0..3 {
            let nat = ct.lookup_tuple(tuple(*local, *dialed), a).expect("translated");
            assert_eq!((nat.backend, nat.dialed), (backend, *dialed));
        }
    }
    assert_eq!(ct.lookup_tuple(tuple(direct, backend), a), None);
    let s = ct.snapshot();
    // The OUTPUT one is answered in A (one query); the PREROUTING one and the direct one
    // are in A untranslated, then asked of the host (two queries each); repeats are cache hits.
    assert_eq!((s.lookups, s.misses, s.entries), (7, 3, 3), "{s:?}");
    assert_eq!((s.connection_queries, s.host_queries), (3, 2), "{s:?}");
    assert_eq!((s.translated, s.untranslated, s.not_found), (2, 1, 0), "{s:?}");
    assert!(s.lookup_errors.is_empty() && s.netlink_errors.is_empty(), "{s:?}");
    assert_eq!(s.netns_handles, 2, "A's and the host's: {s:?}");
    // A tuple conntrack never saw: not found in either namespace, and cached as such.
    let unknown = tuple(
        "198.19.20.2:1".parse().expect("addr"),
        "198.19.21.2:9".parse().expect("addr"),
    );
    assert_eq!(ct.lookup_tuple(unknown, a), None);
    assert_eq!(ct.lookup_tuple(unknown, a), None);
    let s = ct.snapshot();
    assert_eq!(
        (s.misses, s.not_found, s.connection_queries, s.host_queries),
        (4, 1, 4, 3),
        "{s:?}"
    );
    drop(topology);
}

#[test]
fn a_vanished_namespace_is_counted_and_cached_negatively() {
    if !root_or_skip("a_vanished_namespace_is_counted_and_cached_negatively") {
        return;
    }
    let _one = serialized();
    conntrack_loaded();
    let ct = ConntrackLookup::new(&ConntrackConfig::default(), "/proc".as_ref(), "/run/netns".as_ref());
    let tuple = |sport: u16| FiveTuple {
        protocol: 6,
        src: SocketAddr::from((CLIENT, sport)),
        dst: SocketAddr::from((HOST_VIP, SERVICE_PORT)),
    };
    // Inode 1 is never a namespace: searched for once, then not again for a while.
    for _ in 0..5 {
        assert_eq!(ct.lookup_tuple(tuple(40_000), 1), None);
    }
    assert_eq!(ct.lookup_tuple(tuple(40_001), 1), None);
    let s = ct.snapshot();
    // Each miss still asks the host (it may hold the connection's NAT); neither knows it.
    assert_eq!(
        (s.lookups, s.misses, s.connection_queries, s.host_queries),
        (6, 2, 0, 2),
        "{s:?}"
    );
    assert_eq!(
        s.lookup_errors.clone().into_iter().collect::<Vec<_>>(),
        [("netns_failed_recently", 1), ("netns_not_found", 1)]
    );
    assert!(s.netlink_errors.is_empty(), "{s:?}");
    assert_eq!(s.entries, 2, "negative answers are cached");
}

// ---- through the real binary: probes, lookups, labels ----

/// The one series of `family` with these labels, after checking it counted exactly `value`;
/// returns its gateway, interface, subnet and service labels.
fn labels_of(text: &str, family: &str, filter: &[(&str, &str)], value: usize) -> [String; 4] {
    let found = samples_with(text, family, filter);
    assert_eq!(found.len(), 1, "one {family} series for {filter:?}:\n{text}");
    assert_eq!(found[0].value, value as f64, "{filter:?}\n{text}");
    ["gateway", "interface", "subnet", "service"].map(|k| found[0].label(k).unwrap_or("<absent>").to_owned())
}

#[test]
fn a_natted_connection_reports_the_backend_the_service_and_the_translated_gateway() {
    if !root_or_skip("a_natted_connection_reports_the_backend_the_service_and_the_translated_gateway") {
        return;
    }
    let _one = serialized();
    let topology = Topology::build();
    let sonde = Sonde::start(&["--no-collector.host", "--connection.ephemeral-port-range=1-1"]);
    let first = scrape(&sonde);
    assert_eq!(collector_success(&first, "connection"), Some(1.0), "{first}");
    let server = topology.serve(2);
    topology.dial(vec![(OUTPUT_VIP, 3_001), (HOST_VIP, 2_002)]);
    assert_eq!(server.join().expect("backend"), [3_001, 2_002]);
    let port = BACKEND_PORT.to_string();
    let (output_service, host_service) = (vip_service(OUTPUT_VIP), vip_service(HOST_VIP));
    let outbound = |service: &'static str| {
        [
            ("direction", "outbound"),
            ("remote", "198.19.21.2"),
            ("port", "8080"),
            ("service", service),
        ]
    };
    let output_filter = outbound("198.19.22.9:80");
    let host_filter = outbound("198.19.23.9:80");
    assert_eq!(output_filter[3].1, output_service);
    assert_eq!(host_filter[3].1, host_service);
    let inbound = [
        ("direction", "inbound"),
        ("remote", "198.19.20.2"),
        ("port", port.as_str()),
    ];
    let text = scrape_until(&sonde, "both clients' bytes and the backend's", |text| {
        sum(text, "sonde_tcp_bytes_sent_total", &output_filter) == 3_001.0
            && sum(text, "sonde_tcp_bytes_sent_total", &host_filter) == 2_002.0
            && sum(text, "sonde_tcp_bytes_received_total", &inbound) == 5_003.0
            && sum(text, "sonde_tcp_connects_total", &inbound) == 2.0
    });
    // A's two connections: the backend's address and port, the service dialed, and the
    // gateway towards the backend (198.19.20.1), not towards the service (198.19.20.3).
    let translated_path = ["198.19.20.1", "a0", "198.19.20.0/24"];
    for (filter, bytes, service) in [
        (output_filter, 3_001, &output_service),
        (host_filter, 2_002, &host_service),
    ] {
        let [gateway, interface, subnet, found_service] =
            labels_of(&text, "sonde_tcp_bytes_sent_total", &filter, bytes);
        assert_eq!(
            [gateway.as_str(), interface.as_str(), subnet.as_str()],
            translated_path,
            "{filter:?}\n{text}"
        );
        assert_eq!(&found_service, service);
        assert_eq!(sum(&text, "sonde_tcp_connects_total", &filter), 1.0, "{text}");
    }
    // Nothing is reported under the addresses dialed.
    for vip in [OUTPUT_VIP, HOST_VIP] {
        let vip = vip.to_string();
        assert!(
            samples_with(&text, "sonde_tcp_connects_total", &[("remote", vip.as_str())]).is_empty(),
            "{vip}\n{text}"
        );
    }
    // The backend's inbound series: the client's address, its own port, no service, its
    // own gateway back to A.
    let [gateway, interface, subnet, service] = labels_of(&text, "sonde_tcp_bytes_received_total", &inbound, 5_003);
    assert_eq!(
        [gateway.as_str(), interface.as_str(), subnet.as_str(), service.as_str()],
        ["198.19.21.1", "b0", "198.19.21.0/24", ""],
        "{text}"
    );
    for family in [
        "sonde_conntrack_cache_lookups_total",
        "sonde_conntrack_cache_misses_total",
        "sonde_conntrack_cache_entries",
    ] {
        assert!(sample_value(&text, family).unwrap_or(0.0) >= 2.0, "{family}\n{text}");
    }
    assert!(
        sum(&text, "sonde_conntrack_answers_total", &[("answer", "translated")]) >= 2.0,
        "{text}"
    );
    let (ok, complaints) = promtool_check_metrics(text.as_bytes());
    assert!(ok, "promtool: {complaints}");
    drop(topology);
}

/// Values of the series of `families` whose labels mention 198.19., by family and label set.
fn our_counters(text: &str) -> BTreeMap<String, f64> {
    let mut found = BTreeMap::new();
    for family in [
        "sonde_tcp_connects_total",
        "sonde_tcp_bytes_sent_total",
        "sonde_tcp_bytes_received_total",
    ] {
        for (series, value) in series_values(text, family) {
            if series.contains("198.19.") {
                found.insert(format!("{family}{series}"), value);
            }
        }
    }
    found
}

#[test]
fn two_thousand_short_connections_through_dnat_are_resolved_while_scraping() {
    if !root_or_skip("two_thousand_short_connections_through_dnat_are_resolved_while_scraping") {
        return;
    }
    const CONNECTIONS: usize = 2_000;
    let _one = serialized();
    let topology = Topology::build();
    let sonde = Sonde::start(&["--no-collector.host"]);
    let before = scrape(&sonde);
    assert_eq!(collector_success(&before, "connection"), Some(1.0), "{before}");
    // Scrapes all along, checking that no counter of these connections ever goes back.
    let done = Arc::new(AtomicBool::new(false));
    let scraper = {
        let (addr, done) = (sonde.addr, done.clone());
        std::thread::spawn(move || {
            let mut last = BTreeMap::new();
            let mut scrapes = 0;
            while !done.load(Ordering::Relaxed) {
                let now = our_counters(&scrape(&addr));
                for (series, old) in &last {
                    let new = now.get(series).copied().unwrap_or(0.0);
                    assert!(new >= *old, "{series} went from {old} to {new}");
                }
                last = now;
                scrapes += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            scrapes
        })
    };
    let server = topology.serve(CONNECTIONS);
    let started = Instant::now();
    // Half through each rule, alternating; in bursts of 100 a scrape interval apart, so
    // scrapes fall between and during them.
    let vips: Vec<(Ipv4Addr, usize)> = (0..CONNECTIONS)
        .map(|i| (if i % 2 == 0 { OUTPUT_VIP } else { HOST_VIP }, 10))
        .collect();
    for burst in vips.chunks(100) {
        topology.dial(burst.to_vec());
        std::thread::sleep(Duration::from_millis(100));
    }
    let took = started.elapsed();
    assert_eq!(server.join().expect("backend").iter().sum::<usize>(), CONNECTIONS * 10);
    let ours = |text: &str| {
        [OUTPUT_VIP, HOST_VIP]
            .iter()
            .map(|vip| {
                let service = vip_service(*vip);
                let vip = vip.to_string();
                let resolved = sum(
                    text,
                    "sonde_tcp_connects_total",
                    &[("direction", "outbound"), ("service", &service)],
                );
                let unresolved = sum(
                    text,
                    "sonde_tcp_connects_total",
                    &[("direction", "outbound"), ("remote", &vip)],
                );
                (resolved, unresolved)
            })
            .fold((0.0, 0.0), |acc, (r, u)| (acc.0 + r, acc.1 + u))
    };
    let text = scrape_until(&sonde, "every connection counted", |text| {
        let (resolved, unresolved) = ours(text);
        resolved + unresolved == CONNECTIONS as f64
    });
    done.store(true, Ordering::Relaxed);
    let scrapes = scraper.join().expect("no counter went back");
    let (resolved, unresolved) = ours(&text);
    let share = resolved / CONNECTIONS as f64;
    let delta = |family: &str, filter: &[(&str, &str)]| sum(&text, family, filter) - sum(&before, family, filter);
    let lookups = delta("sonde_conntrack_cache_lookups_total", &[]);
    let misses = delta("sonde_conntrack_cache_misses_total", &[]);
    let in_connection = delta("sonde_conntrack_netlink_lookups_total", &[("namespace", "connection")]);
    let in_host = delta("sonde_conntrack_netlink_lookups_total", &[("namespace", "host")]);
    println!(
        "{CONNECTIONS} connections in {took:?} under {scrapes} scrapes: {resolved} resolved ({:.2}%), {unresolved} not; \
         conntrack cache lookups {lookups}, misses {misses}, queries in the connection's namespace {in_connection}, in the host's {in_host} \
         (all of this machine's new outbound connections meanwhile included)",
        share * 100.0
    );
    assert!(share >= 0.99, "{resolved} of {CONNECTIONS} resolved\n{text}");
    // One cache miss at most per connection key, and one query at most per namespace per miss.
    assert!(misses <= lookups, "{misses} misses for {lookups} lookups");
    assert!(
        in_connection <= misses && in_host <= misses,
        "{in_connection} and {in_host} queries for {misses} misses"
    );
    // Other tests' connections (mostly loopback, not looked up) share this sonde: the
    // bound allows for them, but not for a second query per connection of ours.
    assert!(
        misses < (2 * CONNECTIONS) as f64,
        "{misses} misses for {CONNECTIONS} connections of ours"
    );
    // Every translated one shows the backend.
    assert_eq!(
        sum(
            &text,
            "sonde_tcp_connects_total",
            &[("direction", "outbound"), ("remote", "198.19.21.2")]
        ),
        resolved,
        "{text}"
    );
    drop(topology);
}

#[test]
fn without_conntrack_access_connections_stay_as_dialed_and_queries_stop() {
    if !root_or_skip("without_conntrack_access_connections_stay_as_dialed_and_queries_stop") {
        return;
    }
    let _one = serialized();
    let setpriv = require_tool("setpriv");
    let topology = Topology::build();
    // sonde without CAP_NET_ADMIN: the kernel refuses every conntrack query (EPERM), as it
    // does where conntrack is missing (EPROTONOSUPPORT, EOPNOTSUPP).
    let mut cmd = Command::new(setpriv);
    cmd.args([
        "--inh-caps=-net_admin",
        "--bounding-set=-net_admin",
        env!("CARGO_BIN_EXE_sonde"),
    ]);
    let sonde = Sonde::start_command(cmd, &["--no-collector.host", "--connection.ephemeral-port-range=1-1"]);
    let first = scrape(&sonde);
    assert_eq!(collector_success(&first, "connection"), Some(1.0), "{first}");
    const CONNECTIONS: usize = 50;
    let server = topology.serve(CONNECTIONS);
    topology.dial(vec![(HOST_VIP, 7); CONNECTIONS]);
    assert_eq!(server.join().expect("backend"), vec![7; CONNECTIONS]);
    let filter = [
        ("direction", "outbound"),
        ("remote", "198.19.23.9"),
        ("port", "80"),
        ("service", ""),
    ];
    let text = scrape_until(&sonde, "the connections as dialed", |text| {
        sum(text, "sonde_tcp_connects_total", &filter) == CONNECTIONS as f64
    });
    assert_eq!(
        sum(&text, "sonde_tcp_bytes_sent_total", &filter),
        (CONNECTIONS * 7) as f64
    );
    assert!(
        samples_with(
            &text,
            "sonde_tcp_connects_total",
            &[("remote", "198.19.21.2"), ("direction", "outbound")]
        )
        .is_empty(),
        "{text}"
    );
    // The first query was refused and counted; later lookups did not ask the kernel.
    let queries = sum(&text, "sonde_conntrack_netlink_lookups_total", &[]);
    assert!((1.0..=2.0).contains(&queries), "{queries} queries\n{text}");
    assert_eq!(
        sum(&text, "sonde_conntrack_netlink_errors_total", &[("errno", "EPERM")]),
        queries,
        "{text}"
    );
    assert!(
        sum(
            &text,
            "sonde_conntrack_lookup_errors_total",
            &[("reason", "conntrack_unavailable")]
        ) >= (CONNECTIONS - 2) as f64,
        "{text}"
    );
    // Said once in the log.
    let mut said = 0;
    while let Ok(line) = sonde.log.try_recv() {
        if line.contains("conntrack is not available") {
            said += 1;
        }
    }
    assert_eq!(said, 1, "one log line");
    drop(topology);
}
