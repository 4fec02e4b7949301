//! The connection collector on this machine's real kernel: the probes loaded by the real
//! binary, real TCP and UDP traffic over loopback or between network namespaces the test
//! makes (198.18.0.0/15), exact byte counts. These tests need root; under CI=true a test
//! that cannot run fails instead of skipping.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use common::netns::NetnsPair;
use common::*;

/// Whether the test may run: root, or (under CI) a failure.
fn privileged() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "the connection tests need root (CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN); CI must run them as root"
    );
    eprintln!("skipped: the connection tests need root");
    false
}

/// sonde with the connection collector only, and every port a label: the tests' servers
/// listen on kernel-chosen ports, which fall in the default ephemeral range.
fn start_sonde(extra: &[&str]) -> Sonde {
    let mut args = vec!["--no-collector.host", "--connection.ephemeral-port-range=1-1"];
    args.extend_from_slice(extra);
    let sonde = Sonde::start(&args);
    let text = scrape(&sonde);
    assert_eq!(
        collector_success(&text, "connection"),
        Some(1.0),
        "the probes did not load:\n{text}"
    );
    sonde
}

/// The cgroup v2 path of this process: the `id` label its connections get.
fn own_cgroup() -> String {
    let text = std::fs::read_to_string("/proc/self/cgroup").expect("read /proc/self/cgroup");
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("a cgroup v2 line")
        .to_owned()
}

fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET and sched_setaffinity only
    // touch that set, and pid 0 is the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        let rc = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        assert_eq!(rc, 0, "pin to CPU {cpu}: {}", std::io::Error::last_os_error());
    }
}

fn online_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Bytes the client of connection `i` sends (the first 4 carry `i`), and the server answers.
fn sizes(i: u32) -> (usize, usize) {
    (1_000 + 37 * i as usize, 700 + 53 * i as usize)
}

/// What a batch of connections exchanged, in total.
#[derive(Debug, Default, Clone, Copy)]
struct Exchanged {
    client_sent: u64,
    server_sent: u64,
}

/// Serves connections: reads the request (its first 4 bytes say which connection it is),
/// answers with the agreed size, then either waits for the client to close or keeps the
/// connection open (handing it to `kept`). Each connection gets its own thread, pinned in
/// turn to each CPU when `pin` is set.
fn serve(listener: TcpListener, n: u32, pin: bool, kept: Arc<Mutex<Vec<TcpStream>>>, keep: bool) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let cpus = online_cpus();
        let handlers: Vec<JoinHandle<()>> = (0..n)
            .map(|k| {
                let (mut stream, _) = listener.accept().expect("accept");
                let kept = kept.clone();
                std::thread::spawn(move || {
                    if pin {
                        pin_to_cpu(k as usize % cpus);
                    }
                    let mut id = [0u8; 4];
                    stream.read_exact(&mut id).expect("read id");
                    let (request, answer) = sizes(u32::from_le_bytes(id));
                    let mut rest = vec![0u8; request - 4];
                    stream.read_exact(&mut rest).expect("read request");
                    stream.write_all(&vec![b'a'; answer]).expect("answer");
                    if keep {
                        kept.lock().expect("kept").push(stream);
                    } else {
                        let mut end = Vec::new();
                        stream.read_to_end(&mut end).expect("read to the end");
                        assert!(end.is_empty());
                    }
                })
            })
            .collect();
        for h in handlers {
            h.join().expect("handler");
        }
    })
}

/// Makes `n` connections to `port` from `threads` client threads (pinned in turn to each
/// CPU when `pin` is set); open ones are returned.
fn clients(port: u16, n: u32, threads: u32, pin: bool, keep: bool) -> (Exchanged, Vec<TcpStream>) {
    let cpus = online_cpus();
    let handles: Vec<JoinHandle<Vec<TcpStream>>> = (0..threads)
        .map(|t| {
            std::thread::spawn(move || {
                if pin {
                    pin_to_cpu(t as usize % cpus);
                }
                let mut open = Vec::new();
                for i in (t..n).step_by(threads as usize) {
                    let (request, answer) = sizes(i);
                    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("connect");
                    let mut payload = vec![b'q'; request];
                    payload[..4].copy_from_slice(&i.to_le_bytes());
                    stream.write_all(&payload).expect("send");
                    let mut reply = vec![0u8; answer];
                    stream.read_exact(&mut reply).expect("receive");
                    if keep {
                        open.push(stream);
                    }
                }
                open
            })
        })
        .collect();
    let open = handles.into_iter().flat_map(|h| h.join().expect("client")).collect();
    let exchanged = (0..n).fold(Exchanged::default(), |mut e, i| {
        let (request, answer) = sizes(i);
        e.client_sent += request as u64;
        e.server_sent += answer as u64;
        e
    });
    (exchanged, open)
}

/// Checks both sides of the connections to `port`: exact bytes each way, connections, and
/// how many are still open. Every scrape on the way must stay at or under the truth.
fn assert_exact_tcp(sonde: &Sonde, port: u16, n: u32, e: Exchanged, open: u32) {
    let port = port.to_string();
    let id = own_cgroup();
    let side = |direction: &'static str| -> Vec<(&'static str, &str)> {
        vec![
            ("direction", direction),
            ("port", port.as_str()),
            ("id", id.as_str()),
            ("remote", "127.0.0.1"),
        ]
    };
    let (out, inb) = (side("outbound"), side("inbound"));
    let expected = [
        ("sonde_tcp_bytes_sent_total", &out, e.client_sent),
        ("sonde_tcp_bytes_received_total", &out, e.server_sent),
        ("sonde_tcp_bytes_sent_total", &inb, e.server_sent),
        ("sonde_tcp_bytes_received_total", &inb, e.client_sent),
        ("sonde_tcp_connects_total", &out, u64::from(n)),
        ("sonde_tcp_connects_total", &inb, u64::from(n)),
        ("sonde_tcp_active_connections", &out, u64::from(open)),
        ("sonde_tcp_active_connections", &inb, u64::from(open)),
    ];
    let closed = u64::from(n - open);
    // A closed connection's live values can be in before its final record (which carries
    // the RTT): wait for both.
    let text = scrape_until(sonde, "every connection and RTT sample counted", |text| {
        // Never over the truth, on any scrape on the way.
        let over = expected
            .iter()
            .filter(|(name, _, _)| name.ends_with("_total"))
            .find(|(name, f, v)| sum(text, name, f) > *v as f64)
            .map(|(name, f, v)| format!("{name}{f:?} = {} exceeds the truth {v}", sum(text, name, f)));
        if let Some(problem) = over {
            panic!("{problem}\n{text}");
        }
        expected.iter().all(|(name, f, v)| sum(text, name, f) == *v as f64)
            && sum(text, "sonde_tcp_rtt_seconds_count", &out) == closed as f64
    });
    for (name, filter, value) in expected {
        assert_eq!(sum(&text, name, filter), value as f64, "{name} {filter:?}\n{text}");
    }
    assert_eq!(sum(&text, "sonde_tcp_rtt_seconds_count", &out), closed as f64, "{text}");
    assert_eq!(sum(&text, "sonde_tcp_connect_failures_total", &out), 0.0);
}

fn listener() -> (TcpListener, u16) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let port = listener.local_addr().expect("address").port();
    (listener, port)
}

#[test]
fn tcp_bytes_are_exact_for_100_closed_connections() {
    if !privileged() {
        return;
    }
    let sonde = start_sonde(&[]);
    let (listener, port) = listener();
    let kept = Arc::default();
    let server = serve(listener, 100, false, Arc::clone(&kept), false);
    let (exchanged, _) = clients(port, 100, 1, false, false);
    server.join().expect("server");
    assert_exact_tcp(&sonde, port, 100, exchanged, 0);
}

#[test]
fn tcp_bytes_are_exact_for_100_connections_still_open() {
    if !privileged() {
        return;
    }
    let sonde = start_sonde(&[]);
    let (listener, port) = listener();
    let kept = Arc::default();
    let server = serve(listener, 100, false, Arc::clone(&kept), true);
    let (exchanged, open) = clients(port, 100, 1, false, true);
    server.join().expect("server");
    assert_eq!(open.len(), 100);
    assert_exact_tcp(&sonde, port, 100, exchanged, 100);
    // Closing them moves the same figures into the closed totals.
    drop(open);
    kept.lock().expect("kept").clear();
    assert_exact_tcp(&sonde, port, 100, exchanged, 0);
}

/// 3,000 live sockets: more than sonde reads on one thread (its live read shares the runs of
/// read_tcp out over its threads from 1,024 connections), so the shared read is exact too.
#[test]
fn tcp_bytes_are_exact_for_1500_connections_still_open() {
    if !privileged() {
        return;
    }
    let limit = common::host::raise_fd_limit();
    assert!(
        limit >= 4_000,
        "3,000 sockets need an open-file limit over 4,000, not {limit}"
    );
    let sonde = start_sonde(&[]);
    let (listener, port) = listener();
    let kept = Arc::default();
    let server = serve(listener, 1_500, false, Arc::clone(&kept), true);
    let (exchanged, open) = clients(port, 1_500, 2, false, true);
    server.join().expect("server");
    assert_eq!(open.len(), 1_500);
    assert_exact_tcp(&sonde, port, 1_500, exchanged, 1_500);
    drop(open);
    kept.lock().expect("kept").clear();
    assert_exact_tcp(&sonde, port, 1_500, exchanged, 0);
}

#[test]
fn tcp_bytes_are_exact_with_connections_split_across_every_cpu() {
    if !privileged() {
        return;
    }
    assert!(
        online_cpus() >= 2,
        "this test spreads connections over at least two CPUs"
    );
    let sonde = start_sonde(&[]);
    let (listener, port) = listener();
    let kept = Arc::default();
    let server = serve(listener, 100, true, Arc::clone(&kept), false);
    let (exchanged, _) = clients(port, 100, online_cpus() as u32, true, false);
    server.join().expect("server");
    assert_exact_tcp(&sonde, port, 100, exchanged, 0);
}

/// A client and a server UDP socket on loopback, the client connected to the server.
fn udp_pair() -> (UdpSocket, UdpSocket, u16) {
    let server = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let port = server.local_addr().expect("address").port();
    let client = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    client.connect((Ipv4Addr::LOCALHOST, port)).expect("connect");
    for s in [&server, &client] {
        s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    }
    (client, server, port)
}

/// `rounds` requests and answers of distinct sizes; returns the bytes of each side.
fn udp_exchange(client: &UdpSocket, server: &UdpSocket, rounds: usize) -> (u64, u64) {
    let (mut requests, mut answers) = (0u64, 0u64);
    let mut buf = vec![0u8; 65_536];
    for i in 0..rounds {
        let (request, answer) = (100 + 31 * i, 60 + 17 * i);
        client.send(&vec![b'q'; request]).expect("send");
        let (got, from) = server.recv_from(&mut buf).expect("server receives");
        assert_eq!(got, request);
        server.send_to(&vec![b'a'; answer], from).expect("answer");
        assert_eq!(client.recv(&mut buf).expect("client receives"), answer);
        requests += request as u64;
        answers += answer as u64;
    }
    (requests, answers)
}

/// Scrapes until the UDP byte counters of the server's port are the exchanged bytes.
fn assert_exact_udp(sonde: &Sonde, port: u16, requests: u64, answers: u64) {
    let port = port.to_string();
    let id = own_cgroup();
    let out = [("direction", "outbound"), ("port", port.as_str()), ("id", id.as_str())];
    let inb = [("direction", "inbound"), ("port", port.as_str()), ("id", id.as_str())];
    let expected = [
        ("sonde_udp_bytes_sent_total", &out, requests),
        ("sonde_udp_bytes_received_total", &out, answers),
        ("sonde_udp_bytes_sent_total", &inb, answers),
        ("sonde_udp_bytes_received_total", &inb, requests),
    ];
    let text = scrape_until(sonde, "every datagram counted", |text| {
        expected.iter().all(|(name, f, v)| sum(text, name, &f[..]) == *v as f64)
    });
    for (name, filter, value) in expected {
        assert_eq!(sum(&text, name, &filter[..]), value as f64, "{name} {filter:?}\n{text}");
    }
}

#[test]
fn udp_bytes_are_exact_for_a_known_datagram_exchange() {
    if !privileged() {
        return;
    }
    let sonde = start_sonde(&[]);
    let (client, server, port) = udp_pair();
    let (requests, answers) = udp_exchange(&client, &server, 20);
    assert_exact_udp(&sonde, port, requests, answers);
}

/// The programs `sonde_ebpf_attached` reports as attached (value 1).
fn attached_programs(text: &str) -> Vec<String> {
    let mut attached: Vec<String> = text
        .lines()
        .filter(|line| line.starts_with("sonde_ebpf_attached{") && line.ends_with("} 1"))
        .filter_map(|line| {
            let (_, rest) = line.split_once("program=\"")?;
            rest.split_once('"').map(|(program, _)| program.to_owned())
        })
        .collect();
    attached.sort();
    attached
}

#[test]
fn without_udp_no_program_runs_at_sends_and_tcp_stays_exact() {
    if !privileged() {
        return;
    }
    let sonde = start_sonde(&["--no-connection.udp"]);
    assert_eq!(
        attached_programs(&scrape(&sonde)),
        ["inet_sock_set_state", "read_tcp", "seed_tcp"],
        "only the state changes, the scrape's read and the iterator: nothing at a send or receive"
    );
    let (listener, port) = listener();
    let server = serve(listener, 100, false, Arc::default(), false);
    let (exchanged, _) = clients(port, 100, 1, false, false);
    server.join().expect("server");
    assert_exact_tcp(&sonde, port, 100, exchanged, 0);

    let (client, server, udp_port) = udp_pair();
    udp_exchange(&client, &server, 20);
    // The TCP exchange above was counted within a scrape or two; give UDP the same.
    std::thread::sleep(Duration::from_millis(500));
    let text = scrape(&sonde);
    let port = udp_port.to_string();
    for name in ["sonde_udp_bytes_sent_total", "sonde_udp_bytes_received_total"] {
        assert_eq!(sum(&text, name, &[("port", port.as_str())]), 0.0, "{name}\n{text}");
    }
}

#[test]
fn an_idle_udp_socket_leaves_the_live_table_and_its_next_datagrams_count_once() {
    if !privileged() {
        return;
    }
    let sonde = start_sonde(&["--connection.udp-idle=1s"]);
    let (client, server, port) = udp_pair();
    let (requests, answers) = udp_exchange(&client, &server, 10);
    assert_exact_udp(&sonde, port, requests, answers);
    // Idle past the window: the next scrape frees both sockets' slots and keeps their
    // figures in the totals.
    std::thread::sleep(Duration::from_millis(1500));
    assert_exact_udp(&sonde, port, requests, answers);
    let closed = sample_value(&scrape(&sonde), "sonde_connection_udp_idle_closed_total").unwrap_or(0.0);
    assert!(closed >= 2.0, "both sockets were taken as closed, counted {closed}");
    // The same sockets again: each gets a new slot, and the new bytes add to the old once.
    let (more_requests, more_answers) = udp_exchange(&client, &server, 7);
    assert_exact_udp(&sonde, port, requests + more_requests, answers + more_answers);
}

#[test]
fn udp_entries_that_sonde_deletes_make_room_for_new_sockets() {
    if !privileged() {
        return;
    }
    // A UDP table of 1,024 entries and 2,400 client sockets, 400 at a time: by the last
    // rounds, new sockets find room only because sonde deleted the idle ones; had it kept
    // them, the table would fill and count losses.
    const ROUNDS: usize = 6;
    const CLIENTS: usize = 400;
    let sonde = start_sonde(&["--connection.max-live=1024", "--connection.udp-idle=1s"]);
    let server = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    server.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let port = server.local_addr().expect("address").port();
    let (mut requests, mut answers) = (0u64, 0u64);
    let mut buf = vec![0u8; 2048];
    for round in 0..ROUNDS {
        let clients: Vec<UdpSocket> = (0..CLIENTS)
            .map(|_| {
                let client = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
                client.connect((Ipv4Addr::LOCALHOST, port)).expect("connect");
                client.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
                client
            })
            .collect();
        for (i, client) in clients.iter().enumerate() {
            let (request, answer) = (1 + (round * CLIENTS + i) % 1000, 1 + i % 700);
            client.send(&buf[..request]).expect("send");
            let (got, from) = server.recv_from(&mut buf).expect("server receives");
            assert_eq!(got, request);
            server.send_to(&buf[..answer], from).expect("answer");
            assert_eq!(client.recv(&mut buf).expect("client receives"), answer);
            requests += request as u64;
            answers += answer as u64;
        }
        drop(clients);
        assert_exact_udp(&sonde, port, requests, answers);
        // Idle past the window: this scrape gives the round's slots back.
        std::thread::sleep(Duration::from_millis(1200));
        scrape(&sonde);
    }
    let text = scrape(&sonde);
    let closed = sample_value(&text, "sonde_connection_udp_idle_closed_total").unwrap_or(0.0);
    assert!(
        closed >= (ROUNDS * CLIENTS) as f64,
        "{closed} idle UDP sockets freed\n{text}"
    );
    assert_eq!(sum(&text, "sonde_ebpf_events_lost_total", &[]), 0.0, "{text}");
    assert_exact_udp(&sonde, port, requests, answers);
}

#[test]
fn connects_to_a_closed_port_are_failures() {
    if !privileged() {
        return;
    }
    let sonde = start_sonde(&[]);
    let (listener, port) = listener();
    drop(listener);
    for _ in 0..5 {
        let err = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect_err("the port is closed");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    }
    let port = port.to_string();
    let out = [("direction", "outbound"), ("port", port.as_str())];
    let text = scrape_until(&sonde, "five connect failures", |text| {
        sum(text, "sonde_tcp_connect_failures_total", &out) == 5.0
    });
    assert_eq!(sum(&text, "sonde_tcp_connect_failures_total", &out), 5.0, "{text}");
    assert_eq!(sum(&text, "sonde_tcp_connects_total", &out), 0.0, "{text}");
}

#[test]
fn a_lossy_link_yields_retransmits_and_bytes_stay_exact() {
    if !privileged() {
        return;
    }
    let sonde = start_sonde(&[]);
    let pair = NetnsPair::new("rtx");
    // One packet in ten reaching the server's namespace is dropped. The veth pair carries
    // segments of up to 64 KiB, so 2 MiB made only ~30 packets, and about one run in thirty
    // dropped none: 16 MiB make ~250 (0.9^250 ≈ 4e-12).
    pair.drop_incoming(0, "0.1");
    const BYTES: usize = 16 << 20;
    let (port, received) = pair.transfer(BYTES);
    assert_eq!(received, BYTES);
    let port = port.to_string();
    let out = [
        ("direction", "outbound"),
        ("port", port.as_str()),
        ("remote", "198.18.0.1"),
    ];
    let inb = [
        ("direction", "inbound"),
        ("port", port.as_str()),
        ("remote", "198.18.0.2"),
    ];
    let text = scrape_until(&sonde, "the bytes over the lossy link and a retransmit", |text| {
        sum(text, "sonde_tcp_bytes_sent_total", &out) == BYTES as f64
            && sum(text, "sonde_tcp_bytes_received_total", &inb) == BYTES as f64
            && sum(text, "sonde_tcp_retransmits_total", &out) > 0.0
    });
    assert_eq!(sum(&text, "sonde_tcp_bytes_sent_total", &out), BYTES as f64, "{text}");
    assert_eq!(
        sum(&text, "sonde_tcp_bytes_received_total", &inb),
        BYTES as f64,
        "{text}"
    );
    assert!(sum(&text, "sonde_tcp_retransmits_total", &out) > 0.0, "{text}");
}

#[test]
fn churn_of_20000_connections_is_monotonic_exact_and_loses_nothing() {
    if !privileged() {
        return;
    }
    const N: u32 = 20_000;
    // 40,000 sockets through 4,096 slots: every slot is freed and taken again many times.
    let sonde = start_sonde(&["--connection.max-live=4096"]);
    let (listener, port) = listener();
    let server = serve_churn(listener, N);
    let finished = Arc::new(AtomicBool::new(false));
    let port_label = port.to_string();
    let scraper = {
        let finished = finished.clone();
        let addr = sonde.addr;
        let port_label = port_label.clone();
        std::thread::spawn(move || {
            let mut previous: std::collections::BTreeMap<String, f64> = Default::default();
            let mut scrapes = 0;
            while !finished.load(Ordering::SeqCst) {
                let text = scrape(&addr);
                for line in text.lines().filter(|l| !l.starts_with('#')) {
                    let Some((series, value)) = line.rsplit_once(' ') else {
                        continue;
                    };
                    let counter = series.starts_with("sonde_") && series.contains("_total");
                    if !counter
                        || !(series.contains(&format!("port=\"{port_label}\"")) || series.starts_with("sonde_ebpf"))
                    {
                        continue;
                    }
                    let value: f64 = value.parse().expect("a number");
                    if let Some(&before) = previous.get(series) {
                        assert!(value >= before, "{series} went from {before} to {value}");
                    }
                    previous.insert(series.to_owned(), value);
                }
                scrapes += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            scrapes
        })
    };
    churn(port, N);
    server.join().expect("server");
    let text = assert_exact_churn(&sonde, port, N);
    finished.store(true, Ordering::SeqCst);
    let scrapes = scraper.join().expect("every scrape was monotonic");
    assert!(scrapes > 1, "the scraper ran during the churn");
    assert_eq!(sum(&text, "sonde_ebpf_events_lost_total", &[]), 0.0, "{text}");
}

/// Scrapes until the `n` churned connections to `port` (8 bytes out, 5 back, closed) are
/// all counted, and checks them; returns the last scrape.
fn assert_exact_churn(sonde: &Sonde, port: u16, n: u32) -> String {
    let port = port.to_string();
    let mut expected = churn_counters(&port, n).to_vec();
    for direction in ["outbound", "inbound"] {
        expected.push((
            "sonde_tcp_active_connections",
            [("direction", direction), ("port", &port)],
            0.0,
        ));
    }
    let text = scrape_until(sonde, "every connection counted", |text| {
        expected.iter().all(|(name, f, v)| sum(text, name, &f[..]) == *v)
    });
    for (name, filter, value) in expected {
        assert_eq!(sum(&text, name, &filter[..]), value, "{name} {filter:?}\n{text}");
    }
    text
}

/// A series (name and the labels `direction` and `port`) and its value.
type Expected<'a> = (&'static str, [(&'static str, &'a str); 2], f64);

/// What `n` churned connections to `port` ([`churn`]) add to each counter of each side.
fn churn_counters(port: &str, n: u32) -> [Expected<'_>; 6] {
    let out = [("direction", "outbound"), ("port", port)];
    let inb = [("direction", "inbound"), ("port", port)];
    let n = f64::from(n);
    [
        ("sonde_tcp_connects_total", out, n),
        ("sonde_tcp_connects_total", inb, n),
        ("sonde_tcp_bytes_sent_total", out, 8.0 * n),
        ("sonde_tcp_bytes_received_total", out, 5.0 * n),
        ("sonde_tcp_bytes_sent_total", inb, 5.0 * n),
        ("sonde_tcp_bytes_received_total", inb, 8.0 * n),
    ]
}

/// `n` short connections to `port`, one after another: 8 bytes out, 5 back, closed.
fn churn(port: u16, n: u32) {
    for _ in 0..n {
        let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("connect");
        stream.write_all(&[b'q'; 8]).expect("send");
        let mut answer = [0u8; 5];
        stream.read_exact(&mut answer).expect("receive");
    }
}

/// Serves `n` connections made by [`churn`].
fn serve_churn(listener: TcpListener, n: u32) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for _ in 0..n {
            let (mut stream, _) = listener.accept().expect("accept");
            let mut request = [0u8; 8];
            stream.read_exact(&mut request).expect("request");
            stream.write_all(&[b'a'; 5]).expect("answer");
            let mut end = Vec::new();
            stream.read_to_end(&mut end).expect("end");
        }
    })
}

#[test]
fn held_connections_stay_exact_through_a_churn_that_passes_the_table_many_times() {
    if !privileged() {
        return;
    }
    // A TCP table of 1,024 entries: 400 connections held open are 800 live sockets, and
    // 2,000 short connections then pass through the 224 entries left, five times over.
    const HELD: u32 = 400;
    assert!(
        raise_fd_limit() > u64::from(4 * HELD),
        "this test holds {} sockets open",
        2 * HELD
    );
    let sonde = start_sonde(&["--connection.max-live=1024"]);
    let (held_listener, held_port) = listener();
    let kept = Arc::default();
    let server = serve(held_listener, HELD, false, Arc::clone(&kept), true);
    let (held, open) = clients(held_port, HELD, 1, false, true);
    server.join().expect("server");
    assert_exact_tcp(&sonde, held_port, HELD, held, HELD);

    const CHURN: u32 = 2_000;
    let (listener, port) = listener();
    let server = serve_churn(listener, CHURN);
    churn(port, CHURN);
    server.join().expect("server");
    let text = assert_exact_churn(&sonde, port, CHURN);
    assert_eq!(sum(&text, "sonde_ebpf_events_lost_total", &[]), 0.0, "{text}");

    // The held connections, still open through all that, then closed.
    assert_exact_tcp(&sonde, held_port, HELD, held, HELD);
    drop(open);
    kept.lock().expect("kept").clear();
    assert_exact_tcp(&sonde, held_port, HELD, held, 0);
}

#[test]
fn a_connection_older_than_sonde_counts_from_its_first_scrape() {
    if !privileged() {
        return;
    }
    // Bytes exchanged before sonde starts are not sonde's to count; those after are, exactly,
    // both while the connection is open and once it closed.
    let (listener, port) = listener();
    let mut client = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("connect");
    let (mut server, _) = listener.accept().expect("accept");
    let mut buf = vec![0u8; 1 << 16];
    let exchange = |client: &mut TcpStream, server: &mut TcpStream, out: usize, back: usize, buf: &mut [u8]| {
        client.write_all(&buf[..out]).expect("client writes");
        server.read_exact(&mut buf[..out]).expect("server reads");
        server.write_all(&buf[..back]).expect("server writes");
        client.read_exact(&mut buf[..back]).expect("client reads");
    };
    exchange(&mut client, &mut server, 50_000, 20_000, &mut buf);
    let sonde = start_sonde(&[]);
    let before = scrape(&sonde); // the first scrape: the connection's counters are its base
    // A connection whose start the probes did not see has its direction guessed: with
    // neither port ephemeral (this suite's range is 1-1) the lower one serves, so the port
    // label is the listener's or the client's, whichever is lower.
    let client_port = client.local_addr().expect("client address").port();
    let port_label = port.min(client_port).to_string();
    assert_eq!(
        sum(&before, "sonde_tcp_bytes_sent_total", &[("port", port_label.as_str())]),
        0.0,
        "{before}"
    );
    exchange(&mut client, &mut server, 3_000, 7_000, &mut buf);
    let on_port = [("port", port_label.as_str())];
    // The direction of a connection older than sonde is guessed from its ports, and both of
    // this test's are ephemeral: each side's (sent, received), whichever direction it got.
    let sides = |t: &str| -> Vec<(f64, f64)> {
        let mut sides: Vec<(f64, f64)> = ["outbound", "inbound"]
            .iter()
            .map(|direction| {
                let f = [("port", port_label.as_str()), ("direction", *direction)];
                (
                    sum(t, "sonde_tcp_bytes_sent_total", &f),
                    sum(t, "sonde_tcp_bytes_received_total", &f),
                )
            })
            .collect();
        sides.sort_by(|a, b| a.0.total_cmp(&b.0));
        sides
    };
    // Sent bytes count once the peer acknowledged them, which a delayed ACK may hold back a
    // few tens of milliseconds.
    let text = scrape_until(&sonde, "the bytes after the first scrape", |t| {
        sides(t) == [(3_000.0, 7_000.0), (7_000.0, 3_000.0)]
    });
    // Not made while sonde ran: no connect counted; both ends open.
    assert_eq!(sum(&text, "sonde_tcp_connects_total", &on_port), 0.0, "{text}");
    assert_eq!(sum(&text, "sonde_tcp_active_connections", &on_port), 2.0, "{text}");
    assert!(
        sum(&text, "sonde_ebpf_events_total", &[("event", "first_seen_live")]) >= 2.0,
        "{text}"
    );

    exchange(&mut client, &mut server, 11, 13, &mut buf);
    drop(client);
    let mut rest = Vec::new();
    server.read_to_end(&mut rest).expect("the client's close");
    drop(server);
    let text = scrape_until(&sonde, "the connection closed on both sides", |t| {
        sum(t, "sonde_tcp_active_connections", &on_port) == 0.0
    });
    assert_eq!(sides(&text), [(3_011.0, 7_013.0), (7_013.0, 3_011.0)], "{text}");
}

#[test]
fn connection_families_pass_the_strict_parsers() {
    if !privileged() {
        return;
    }
    let sonde = start_sonde(&[]);
    let (listener, port) = listener();
    let server = serve(listener, 3, false, Arc::default(), false);
    let _ = clients(port, 3, 1, false, false);
    server.join().expect("server");
    let port = port.to_string();
    scrape_until(&sonde, "six RTT samples", |text| {
        sum(text, "sonde_tcp_rtt_seconds_count", &[("port", port.as_str())]) == 6.0
    });
    let text = scrape_as(&sonde, OPENMETRICS_ACCEPT);
    let families =
        python_openmetrics_families(text.as_bytes()).unwrap_or_else(|e| panic!("strict parser refused:\n{e}\n{text}"));
    for family in [
        "sonde_tcp_rtt_seconds histogram",
        "sonde_tcp_bytes_sent counter",
        "sonde_tcp_active_connections gauge",
    ] {
        assert!(
            families.iter().any(|f| f.starts_with(family)),
            "{family} missing: {families:?}"
        );
    }
    let (ok, complaints) = promtool_check_metrics(scrape(&sonde).as_bytes());
    assert!(ok, "promtool: {complaints}");
}

#[test]
fn without_privileges_only_the_connection_collector_fails() {
    if !privileged() {
        return;
    }
    let mut sonde = Sonde::start_as_user(&[], 65534);
    let text = scrape(&sonde);
    assert_eq!(collector_success(&text, "connection"), Some(0.0), "{text}");
    assert_eq!(collector_success(&text, "host"), Some(1.0), "{text}");
    assert!(sum(&text, "sonde_tcp_bytes_sent_total", &[]) == 0.0);
    sonde.terminate();
    let log: Vec<String> = sonde.log.try_iter().collect();
    assert!(
        log.iter()
            .any(|l| l.contains("collector=connection") && l.contains("CAP_BPF")),
        "the log says why: {log:?}"
    );
}

#[test]
fn ephemeral_server_ports_never_become_a_label() {
    if !privileged() {
        return;
    }
    // The default range: the test server's kernel-chosen port is in it.
    let sonde = Sonde::start(&["--no-collector.host"]);
    scrape(&sonde);
    let (listener, port) = listener();
    assert!((32768..=60999).contains(&port), "the kernel chose {port}");
    let server = serve(listener, 5, false, Arc::default(), false);
    let (exchanged, _) = clients(port, 5, 1, false, false);
    server.join().expect("server");
    let id = own_cgroup();
    let out = [("direction", "outbound"), ("port", ""), ("id", id.as_str())];
    let text = scrape_until(&sonde, "the bytes the client sent", |text| {
        sum(text, "sonde_tcp_bytes_sent_total", &out) >= exchanged.client_sent as f64
    });
    assert!(
        sum(&text, "sonde_tcp_bytes_sent_total", &out) >= exchanged.client_sent as f64,
        "{text}"
    );
    assert!(!text.contains(&format!("port=\"{port}\"")), "{text}");
}

#[test]
fn series_beyond_the_cap_fold_into_the_overflow_series() {
    if !privileged() {
        return;
    }
    let sonde = start_sonde(&["--connection.max-series=2"]);
    for _ in 0..3 {
        let (listener, port) = listener();
        let server = serve(listener, 2, false, Arc::default(), false);
        let _ = clients(port, 2, 1, false, false);
        server.join().expect("server");
    }
    let text = scrape_until(&sonde, "four folded series", |text| {
        sum(text, "sonde_connection_series_folded_total", &[]) >= 4.0
    });
    assert!(sum(&text, "sonde_connection_series_folded_total", &[]) >= 4.0, "{text}");
    let overflow = [("remote", "overflow"), ("port", ""), ("direction", "")];
    assert!(sum(&text, "sonde_tcp_bytes_sent_total", &overflow) > 0.0, "{text}");
    let series = text
        .lines()
        .filter(|l| l.starts_with("sonde_tcp_bytes_sent_total{"))
        .count();
    // At most the two the cap allows (other traffic of the host may hold them) and the
    // overflow one.
    assert!(series <= 3, "more series than the cap allows:\n{text}");
}

#[test]
fn without_btf_only_the_connection_collector_fails_and_says_why() {
    // A host sysfs without kernel/btf: real cgroups are not needed, so no root either.
    let dir = tempfile::tempdir().expect("tempdir");
    let sysfs = dir.path().join("sys");
    let cgroup = common::cgroup_fixture::FakeCgroup::seeded(format!("/docker/{:064x}", 7), 7);
    common::cgroup_fixture::write_v2(&sysfs, &cgroup).expect("write the fake cgroup");
    let cpu = sysfs.join("devices/system/cpu");
    std::fs::create_dir_all(&cpu).expect("mkdir");
    std::fs::write(cpu.join("online"), "0-1\n").expect("write cpu/online");
    let mut sonde = Sonde::start(&[&format!("--path.sysfs={}", sysfs.display())]);
    let text = scrape(&sonde);
    for (collector, success) in [("connection", 0.0), ("host", 1.0), ("container", 1.0)] {
        assert_eq!(
            collector_success(&text, collector),
            Some(success),
            "{collector}:\n{text}"
        );
    }
    assert_eq!(sample_value(&text, "machine_cpu_cores"), Some(2.0), "{text}");
    assert!(text.contains(&format!("id=\"/docker/{:064x}\"", 7)), "{text}");
    sonde.terminate();
    let log: Vec<String> = sonde.log.try_iter().collect();
    let btf = sysfs.join("kernel/btf/vmlinux");
    assert!(
        log.iter().any(|l| l.contains("collector=connection")
            && l.contains("no BTF")
            && l.contains(&btf.display().to_string())),
        "the log says why: {log:?}"
    );
}

/// The probes' needs with the TCP state changes' tracepoint replaced by one no kernel has,
/// the need itself required or not.
fn needs_with_a_missing_tracepoint(required: bool) -> Vec<sonde::ebpf::loader::Need> {
    use sonde::ebpf::loader::{Hook, NEEDS, Need, Program};
    const MISSING: &[&[Program]] = &[&[Program {
        program: "inet_sock_set_state",
        hook: Hook::TracePoint("sock/sonde_test_no_such_tracepoint"),
    }]];
    NEEDS
        .iter()
        .map(|n| match n.what {
            "TCP state changes" => Need {
                required,
                ways: MISSING,
                ..*n
            },
            _ => *n,
        })
        .collect()
}

#[test]
fn a_missing_required_hook_fails_the_load_and_names_it() {
    if !privileged() {
        return;
    }
    use sonde::ebpf::loader::{LoadError, Options, load_with};
    let options = Options {
        needs: needs_with_a_missing_tracepoint(true),
        ..Options::new(1024)
    };
    match load_with(&options) {
        Err(e @ LoadError::MissingHooks(_)) => {
            let reason = e.to_string();
            assert!(
                reason.contains("TCP state changes: tp_btf/sonde_test_no_such_tracepoint") && !reason.contains("UDP"),
                "{reason}"
            );
        }
        Err(e) => panic!("expected the missing hook to be named, got: {e}"),
        Ok(_) => panic!("the probes loaded without a required hook"),
    }
}

#[test]
fn a_missing_optional_hook_is_reported_and_the_rest_attach() {
    if !privileged() {
        return;
    }
    use sonde::ebpf::loader::{Options, load_with};
    let options = Options {
        needs: needs_with_a_missing_tracepoint(false),
        ..Options::new(1024)
    };
    let probes = load_with(&options).expect("the other programs load");
    let attached = attached_of(&probes);
    let mut want = vec!["seed_tcp=iter/tcp", "read_tcp=run"];
    want.extend(udp_programs_here());
    assert_eq!(attached, want);
    assert_eq!(probes.missing.len(), 1, "{:?}", probes.missing);
    assert!(
        probes.missing[0].starts_with("TCP state changes: tp_btf/sonde_test_no_such_tracepoint"),
        "{:?}",
        probes.missing
    );
}

/// The programs a load attached, in order, as `program=hook`.
fn attached_of(probes: &sonde::ebpf::loader::Probes) -> Vec<String> {
    probes
        .attached
        .iter()
        .map(|p| format!("{}={}", p.program, p.hook))
        .collect()
}

/// Whether this kernel lets fexit programs attach: its ftrace function list is readable
/// (where ftrace is blocked, as on the machine these tests were written on, reading it
/// fails with EPERM and so does loading an fexit program).
fn fexit_allowed() -> bool {
    ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .iter()
        .any(|dir| std::fs::File::open(format!("{dir}/available_filter_functions")).is_ok())
}

/// The UDP programs that must run here, as `program=hook`, by the loader's order: from 6.9
/// UDP's own fexit programs where the kernel allows fexit, else (from 6.3) the tracepoints.
fn udp_programs_here() -> Vec<&'static str> {
    let kernel = sonde::ebpf::loader::running_kernel().expect("the kernel's release");
    assert!(
        kernel >= (6, 3),
        "these expectations are for 6.3 and later, this is {kernel:?}"
    );
    udp_programs(kernel >= (6, 9) && fexit_allowed())
}

/// UDP's programs on a kernel from 6.3: its own functions' fexit programs, or the
/// tracepoints.
fn udp_programs(fexit: bool) -> Vec<&'static str> {
    if fexit {
        vec![
            "udp_sendmsg_exit=fexit/udp_sendmsg",
            "udpv6_sendmsg_exit=fexit/udpv6_sendmsg",
            "udp_recvmsg_exit=fexit/udp_recvmsg",
            "udpv6_recvmsg_exit=fexit/udpv6_recvmsg",
        ]
    } else {
        vec![
            "sock_send_length=tp_btf/sock_send_length",
            "sock_recv_length=tp_btf/sock_recv_length",
        ]
    }
}

#[test]
fn from_6_9_udp_fexit_goes_first_and_where_refused_the_tracepoints_run() {
    if !privileged() {
        return;
    }
    use sonde::ebpf::loader::{Options, load_with};
    // The order of 6.9 and later, whatever this kernel is (from 6.3: the tracepoints exist).
    let options = Options {
        kernel: Some((6, 9)),
        ..Options::new(1024)
    };
    let probes = load_with(&options).expect("the probes load");
    let attached = attached_of(&probes);
    let fexit = fexit_allowed();
    let udp = udp_programs(fexit);
    let mut want = vec![
        "inet_sock_set_state=tp_btf/inet_sock_set_state",
        "seed_tcp=iter/tcp",
        "read_tcp=run",
    ];
    want.extend(udp);
    assert_eq!(attached, want);
    assert!(probes.missing.is_empty(), "{:?}", probes.missing);
    if fexit {
        assert!(probes.passed_over.is_empty(), "{:?}", probes.passed_over);
    } else {
        // Refused at the first program of each fexit way: said, not an error, and nothing
        // of those ways is left loaded.
        assert_eq!(probes.passed_over.len(), 2, "{:?}", probes.passed_over);
        assert!(
            probes.passed_over[0].starts_with("UDP sends: fexit/udp_sendmsg (")
                && probes.passed_over[1].starts_with("UDP receives: fexit/udp_recvmsg ("),
            "{:?}",
            probes.passed_over
        );
    }
    for name in [
        "udp_sendmsg_exit",
        "udpv6_sendmsg_exit",
        "udp_recvmsg_exit",
        "udpv6_recvmsg_exit",
    ] {
        let program = probes.ebpf.program(name).expect("in the object");
        assert_eq!(program.fd().is_ok(), fexit, "{name} loaded: {}", program.fd().is_ok());
    }
}

/// A way that attaches its first program and then fails is undone before the next way:
/// the program it attached is unloaded (its link gone), so the next way, holding the same
/// hook, is the only one that counts.
#[test]
fn a_way_that_half_attaches_is_undone_before_the_next() {
    if !privileged() {
        return;
    }
    use sonde::ebpf::loader::{Hook, NEEDS, Need, Options, Program, load_with};
    const HALF: &[Program] = &[
        Program {
            program: "sock_send_length",
            hook: Hook::TracePoint("sock/sock_send_length"),
        },
        Program {
            program: "sock_recv_length",
            hook: Hook::TracePoint("sock/sonde_test_no_such_tracepoint"),
        },
    ];
    const WAYS: &[&[Program]] = &[
        HALF,
        &[Program {
            program: "sock_recv_length",
            hook: Hook::TracePoint("sock/sock_recv_length"),
        }],
    ];
    let needs: Vec<Need> = NEEDS
        .iter()
        .filter(|n| !n.udp)
        .copied()
        .chain([Need {
            what: "UDP both ways",
            required: false,
            udp: true,
            ways: WAYS,
            first_from_6_9: None,
        }])
        .collect();
    let probes = load_with(&Options {
        needs,
        ..Options::new(1024)
    })
    .expect("the probes load");
    assert_eq!(
        probes.attached.last().map(|p| p.program),
        Some("sock_recv_length"),
        "{:?}",
        probes.attached
    );
    assert!(
        probes.passed_over[0].starts_with("UDP both ways: tp_btf/sonde_test_no_such_tracepoint"),
        "{:?}",
        probes.passed_over
    );
    let half = probes.ebpf.program("sock_send_length").expect("in the object");
    assert!(half.fd().is_err(), "the half way's first program is still loaded");
}

/// The `sonde_*` counters (`_total`) of a scrape that concern `port`, and the probes' own.
fn counters_of(text: &str, port: u16) -> std::collections::BTreeMap<String, f64> {
    let port = format!("port=\"{port}\"");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| {
            series.starts_with("sonde_")
                && series.contains("_total")
                && (series.contains(&port) || series.starts_with("sonde_ebpf"))
        })
        .map(|(series, value)| (series.to_owned(), value.parse().expect("a number")))
        .collect()
}

/// With sonde stopped (SIGSTOP) nobody reads the probes' records: a churn fills the ring
/// buffer of full batches, then each CPU's batch slots lap. What could not be read is
/// counted as lost; no counter exceeds the truth or goes down; connections made after sonde
/// resumes are counted exactly.
#[test]
fn records_lost_while_sonde_is_stopped_are_counted_and_nothing_overcounts() {
    if !privileged() {
        return;
    }
    // 4 records a connection (a start and a close of each end); the ring buffer holds about
    // 2,000 batches of 16: 16,000 connections are twice what it holds.
    const N: u32 = 16_000;
    let sonde = start_sonde(&[]);
    let (churn_listener, port) = listener();
    let server = serve_churn(churn_listener, N);
    let resume = Stopped::stop(sonde.child.id());
    churn(port, N);
    server.join().expect("server");
    drop(resume);

    let lost = |text: &str| sum(text, "sonde_ebpf_events_lost_total", &[("reason", "batch_overwritten")]);
    let first = scrape_until(&sonde, "the lost batches counted", |text| lost(text) > 0.0);
    let mut previous = counters_of(&first, port);
    let mut last = first;
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(200));
        last = scrape(&sonde);
        let now = counters_of(&last, port);
        for (series, value) in &now {
            if let Some(before) = previous.get(series) {
                assert!(value >= before, "{series} went from {before} to {value}");
            }
        }
        previous = now;
    }
    let port_label = port.to_string();
    for (name, filter, truth) in churn_counters(&port_label, N) {
        let counted = sum(&last, name, &filter[..]);
        eprintln!("{name} {filter:?}: {counted} of {truth}");
        assert!(counted <= truth, "{name} {filter:?}: {counted} counted, {truth} made");
    }
    // A connection whose close was lost is not left live: its socket is gone.
    let active = |text: &str| sum(text, "sonde_tcp_active_connections", &[("port", port_label.as_str())]);
    scrape_until(&sonde, "no connection of the churn left live", |text| {
        active(text) == 0.0
    });
    eprintln!(
        "lost: batch_overwritten {}, ring_buffer_full events {}",
        lost(&last),
        sum(&last, "sonde_ebpf_events_total", &[("event", "ring_buffer_full")])
    );

    // Running again: a churn after the loss is counted exactly.
    const AFTER: u32 = 500;
    let (after_listener, port) = listener();
    let server = serve_churn(after_listener, AFTER);
    churn(port, AFTER);
    server.join().expect("server");
    assert_exact_churn(&sonde, port, AFTER);
}
