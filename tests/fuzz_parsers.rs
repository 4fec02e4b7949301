//! Every parser of outside input driven by generated inputs, on stable Rust: real samples
//! (tests/data/fuzz_seeds, taken from a v1 host, its Docker engine and a Kubelet-shaped pod
//! list; the cgroup v2 files written by the test fixture; netlink answers built as the
//! kernel builds them and read from this machine's kernel) mutated byte-wise and, where the
//! input has a structure, structure-wise (JSON trees, lines and numbers). For each input:
//! no panic, no hang (a watchdog fails the test when one input runs for 10 s), and bounded
//! memory (a counting allocator: no input may make a parser hold more than 64 bytes per
//! input byte plus 8 MiB at once).
//!
//! The short run here (`SONDE_FUZZ_INPUTS`, default 2,000 inputs per parser, fixed seed) is
//! part of the test command; the long run is the same code:
//!
//! ```sh
//! CARGO_PROFILE_RELEASE_OVERFLOW_CHECKS=true CARGO_PROFILE_RELEASE_DEBUG_ASSERTIONS=true \
//!   SONDE_FUZZ_INPUTS=1000000 cargo test --release --test fuzz_parsers -- --nocapture --test-threads=1
//! ```
//!
//! (release speed, with arithmetic overflow still a panic, as in the debug build of the
//! short run). `SONDE_FUZZ_SEED` picks another sequence; a failing input is written to
//! `$CARGO_TARGET_TMPDIR/fuzz-<parser>-<n>.bin` and named in the failure.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cgroup_fixture::{FakeCgroup, write_v1, write_v2};

// ---- bounded memory: a counting allocator ----

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; only counts are kept.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as received.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as received.
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as received.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                let now = CURRENT.fetch_add(new_size - layout.size(), Ordering::Relaxed) + new_size - layout.size();
                PEAK.fetch_max(now, Ordering::Relaxed);
            } else {
                CURRENT.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

// ---- a small seeded generator ----

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }
    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}

/// Tokens that parsers of these formats meet at their edges.
const TOKENS: &[&str] = &[
    "\n",
    " ",
    "\t",
    "=",
    ":",
    "max",
    "-1",
    "0",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999",
    "-9223372036854775808",
    "NaN",
    "inf",
    "1e309",
    "0x10",
    "\0",
    "é",
    "\u{feff}",
    "total=",
    "avg10=",
    "some ",
    "full ",
    "8:0 ",
    "Read ",
    "Total ",
    "rbytes=",
    "\r\n",
    "(",
    ")",
    "  ",
];

/// Byte-wise mutations of `input`, one to eight of them.
fn mutate_bytes(rng: &mut Rng, input: &mut Vec<u8>, others: &[Vec<u8>]) {
    for _ in 0..1 + rng.below(8) {
        let len = input.len();
        match rng.below(9) {
            0 if len > 0 => {
                let i = rng.below(len);
                input[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                input[i] = [0, 0xff, b'\n', b' ', b'9', b'-', b'"', b'{', 0x80][rng.below(9)];
            }
            2 => {
                let at = rng.below(len + 1);
                let token = TOKENS[rng.below(TOKENS.len())].as_bytes();
                input.splice(at..at, token.iter().copied());
            }
            3 if len > 0 => {
                let start = rng.below(len);
                let end = (start + 1 + rng.below(64)).min(len);
                input.drain(start..end);
            }
            4 if len > 0 => {
                // Duplicate a range, sometimes many times (long lines, many entries).
                let start = rng.below(len);
                let end = (start + 1 + rng.below(256)).min(len);
                let chunk = input[start..end].to_vec();
                let times = if rng.chance(16) { 1 + rng.below(2000) } else { 1 };
                let at = rng.below(input.len() + 1);
                for _ in 0..times {
                    input.splice(at..at, chunk.iter().copied());
                }
            }
            5 if !others.is_empty() => {
                // Splice in part of another sample.
                let other = &others[rng.below(others.len())];
                if !other.is_empty() {
                    let start = rng.below(other.len());
                    let end = (start + 1 + rng.below(512)).min(other.len());
                    let at = rng.below(len + 1);
                    input.splice(at..at, other[start..end].iter().copied());
                }
            }
            6 => input.truncate(rng.below(len + 1)),
            7 => {
                let at = rng.below(len + 1);
                let random: Vec<u8> = (0..rng.below(32)).map(|_| rng.next() as u8).collect();
                input.splice(at..at, random);
            }
            _ => mutate_lines(rng, input),
        }
    }
}

/// Line- and number-wise mutations: repeat, drop or swap lines, replace a number.
fn mutate_lines(rng: &mut Rng, input: &mut Vec<u8>) {
    let text = String::from_utf8_lossy(input).into_owned();
    let mut lines: Vec<String> = text.split('\n').map(str::to_owned).collect();
    if lines.is_empty() {
        return;
    }
    let i = rng.below(lines.len());
    match rng.below(4) {
        0 => {
            let line = lines[i].clone();
            lines.insert(i, line);
        }
        1 => {
            lines.remove(i);
        }
        2 => {
            let j = rng.below(lines.len());
            lines.swap(i, j);
        }
        _ => {
            let numbers = [
                "0",
                "-1",
                "18446744073709551615",
                "18446744073709551616",
                "4294967296",
                "-0",
                "1.5",
                "",
                "00000000000000000000000001",
            ];
            let words: Vec<String> = lines[i]
                .split(' ')
                .map(|w| {
                    if w.bytes().any(|b| b.is_ascii_digit()) && rng.chance(2) {
                        numbers[rng.below(numbers.len())].to_owned()
                    } else {
                        w.to_owned()
                    }
                })
                .collect();
            lines[i] = words.join(" ");
        }
    }
    *input = lines.join("\n").into_bytes();
}

/// Structure-aware mutation of a JSON document: a node replaced by another value of any
/// type (a long string, a deep array, a huge number, null), a key removed or added.
fn mutate_json(rng: &mut Rng, value: &mut serde_json::Value) {
    fn random_value(rng: &mut Rng, depth: usize) -> serde_json::Value {
        use serde_json::json;
        match rng.below(if depth > 3 { 6 } else { 8 }) {
            0 => serde_json::Value::Null,
            1 => json!(rng.chance(2)),
            2 => json!(rng.next() as i64),
            3 => json!([1e300, -0.5, 1.5e-300, 4_294_967_296.0][rng.below(4)]),
            4 => json!("x".repeat(rng.below(4096))),
            5 => json!(
                [
                    "containerd://",
                    "docker://",
                    "",
                    "://",
                    "a://b://c",
                    "/",
                    "true",
                    "TRUE "
                ][rng.below(8)]
            ),
            6 => serde_json::Value::Array((0..rng.below(8)).map(|_| random_value(rng, depth + 1)).collect()),
            _ => serde_json::Value::Object(
                (0..rng.below(6))
                    .map(|i| (format!("k{i}"), random_value(rng, depth + 1)))
                    .collect(),
            ),
        }
    }
    // Walk down a random path, then change what is there.
    fn descend<'a>(rng: &mut Rng, node: &'a mut serde_json::Value, steps: usize) -> &'a mut serde_json::Value {
        let deeper = steps > 0
            && match &*node {
                serde_json::Value::Object(map) => !map.is_empty(),
                serde_json::Value::Array(items) => !items.is_empty(),
                _ => false,
            };
        if !deeper {
            return node;
        }
        match node {
            serde_json::Value::Object(map) => {
                let i = rng.below(map.len());
                let child = map.values_mut().nth(i).expect("a child");
                descend(rng, child, steps - 1)
            }
            serde_json::Value::Array(items) => {
                let i = rng.below(items.len());
                descend(rng, &mut items[i], steps - 1)
            }
            other => other,
        }
    }
    let steps = rng.below(8);
    let node = descend(rng, value, steps);
    match (rng.below(3), &mut *node) {
        (0, serde_json::Value::Object(map)) if !map.is_empty() => {
            let key = map.keys().nth(rng.below(map.len())).cloned().unwrap_or_default();
            map.remove(&key);
        }
        (1, serde_json::Value::Array(items)) if !items.is_empty() => {
            let item = items[rng.below(items.len())].clone();
            for _ in 0..rng.below(64) {
                items.push(item.clone());
            }
        }
        _ => *node = random_value(rng, 0),
    }
}

// ---- the parsers ----

/// One parser under test: its samples, whether they are JSON, and how it is driven.
struct Target {
    name: &'static str,
    seeds: Vec<Vec<u8>>,
    json: bool,
    run: fn(&[u8]),
}

fn seed(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/fuzz_seeds")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn seeds(names: &[&str]) -> Vec<Vec<u8>> {
    names.iter().map(|n| seed(n)).collect()
}

/// The v1 and v2 files the fixture writes for a few seeded cgroups, by file name.
fn fixture_files() -> HashMap<String, Vec<Vec<u8>>> {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut files: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
    for seed in 1..=3 {
        let mut cgroup = FakeCgroup::seeded(format!("/docker/{seed:064x}"), seed);
        cgroup.pressure = Some((seed * 1000, seed * 10));
        cgroup.pids = vec![100 + seed as u32, 200];
        for (version, sysfs) in [("v1", dir.path().join("v1")), ("v2", dir.path().join("v2"))] {
            match version {
                "v1" => write_v1(&sysfs, &cgroup),
                _ => write_v2(&sysfs, &cgroup),
            }
            .expect("write the fixture");
            for entry in walk(&sysfs) {
                let name = entry
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if let Ok(bytes) = std::fs::read(&entry) {
                    files.entry(name).or_default().push(bytes);
                }
            }
        }
    }
    files
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn text(input: &[u8]) -> std::borrow::Cow<'_, str> {
    // The reader refuses non-UTF-8 before parsing; lossy keeps such inputs useful.
    String::from_utf8_lossy(input)
}

fn targets() -> Vec<Target> {
    use sonde::cgroup::parse;
    let fixture = fixture_files();
    let from_fixture = |names: &[&str]| -> Vec<Vec<u8>> {
        names
            .iter()
            .flat_map(|n| fixture.get(*n).cloned().unwrap_or_default())
            .collect()
    };
    let mut all = vec![
        Target {
            name: "cgroup single values and limits",
            seeds: [
                seeds(&[
                    "v1.memory.usage_in_bytes",
                    "v1.memory.limit_in_bytes",
                    "v1.cpu.cfs_quota_us",
                    "v1.cpu.shares",
                    "v1.pids.max",
                    "v1.pids.current",
                    "v1.cpuacct.usage",
                ]),
                from_fixture(&["cpu.max", "memory.max", "pids.max", "cpu.weight", "memory.current", "memory.swap.max"]),
            ]
            .concat(),
            json: false,
            run: |input| {
                let t = text(input);
                let _ = parse::single_u64(&t);
                let _ = parse::v1_limit(&t);
                let _ = parse::v1_cfs_quota(&t);
                let _ = parse::v2_max(&t);
                let _ = parse::pids_max(&t);
                let _ = parse::v2_cpu_max(&t);
                let _ = parse::v2_weight_to_shares(&t);
            },
        },
        Target {
            name: "cgroup flat-keyed files (memory.stat, cpu.stat, memory.events, cpuacct.stat)",
            seeds: [
                seeds(&["v1.memory.stat", "v1.cpu.stat", "v1.cpuacct.stat", "v1.memory.oom_control"]),
                from_fixture(&["memory.stat", "cpu.stat", "memory.events"]),
            ]
            .concat(),
            json: false,
            run: |input| {
                let t = text(input);
                let mut sum = 0u64;
                let _ = parse::flat_keyed(&t, |_, v| sum = sum.wrapping_add(v));
                let _ = parse::flat_keyed_value(&t, "total_inactive_file");
            },
        },
        Target {
            name: "cgroup v1 blkio",
            seeds: seeds(&[
                "v1.blkio.throttle.io_service_bytes_recursive",
                "v1.blkio.throttle.io_serviced_recursive",
                "v1.root.blkio.throttle.io_service_bytes_recursive",
            ]),
            json: false,
            run: |input| {
                let _ = parse::v1_blkio(&text(input));
            },
        },
        Target {
            name: "cgroup v2 io.stat",
            seeds: from_fixture(&["io.stat"]),
            json: false,
            run: |input| {
                let _ = parse::v2_io_stat(&text(input));
            },
        },
        Target {
            name: "pressure (PSI)",
            seeds: [
                seeds(&["pressure.cpu", "pressure.io"]),
                from_fixture(&["cpu.pressure", "memory.pressure", "io.pressure"]),
            ]
            .concat(),
            json: false,
            run: |input| {
                let _ = parse::pressure(&text(input));
            },
        },
        Target {
            name: "procfs net/dev",
            seeds: seeds(&["net_dev"]),
            json: false,
            run: |input| {
                let _ = parse::net_dev(&text(input));
            },
        },
        Target {
            name: "cgroup.procs",
            seeds: [seeds(&["v1.cgroup.procs"]), from_fixture(&["cgroup.procs"])].concat(),
            json: false,
            run: |input| {
                let _ = parse::procs(&text(input));
            },
        },
        Target {
            name: "procfs meminfo",
            seeds: seeds(&["meminfo"]),
            json: false,
            run: |input| {
                let t = text(input);
                let _ = parse::meminfo(&t).map(|m| m.swap_used());
                let _ = sonde::collector::host::parse_meminfo_bytes(&t, "SwapTotal");
                let _ = sonde::collector::host::parse_mem_total(&t);
            },
        },
        Target {
            name: "procfs stat and <pid>/stat",
            seeds: seeds(&["proc_stat", "pid_stat"]),
            json: false,
            run: |input| {
                let t = text(input);
                let _ = sonde::procstat::btime(&t);
                let _ = sonde::procstat::process_stat(&t);
            },
        },
        Target {
            name: "sysfs cpu list, cpuinfo, uevent",
            seeds: seeds(&["cpu_online", "cpuinfo", "uevent"]),
            json: false,
            run: |input| {
                let t = text(input);
                let _ = sonde::collector::host::parse_cpu_list(&t);
                let _ = sonde::collector::host::distinct_cpuinfo_values(&t, "core id");
                let _ = parse::uevent_devname(&t);
            },
        },
        Target {
            name: "Kubelet /pods",
            seeds: seeds(&["kubelet_pods.json"]),
            json: true,
            run: |input| {
                if let Ok(list) = serde_json::from_slice::<sonde::kubelet::pods::PodList>(input) {
                    let index = sonde::kubelet::pods::PodIndex::from_list(list);
                    std::hint::black_box(index.pods.len() + index.containers.len());
                }
            },
        },
        Target {
            name: "Docker answers (list, inspect, events)",
            seeds: [
                seeds(&["docker_containers.json", "docker_inspect.json"]),
                seed("docker_events.jsonl")
                    .split(|b| *b == b'\n')
                    .filter(|l| !l.is_empty())
                    .map(<[u8]>::to_vec)
                    .collect(),
            ]
            .concat(),
            json: true,
            run: |input| {
                use bollard::models::{ContainerInspectResponse, ContainerSummary, EventMessage};
                let _ = serde_json::from_slice::<Vec<ContainerSummary>>(input);
                let _ = serde_json::from_slice::<EventMessage>(input);
                if let Ok(inspect) = serde_json::from_slice::<ContainerInspectResponse>(input) {
                    let allow = sonde::docker::labels::Allowlists {
                        labels: regex::Regex::new(".").ok(),
                        env: regex::Regex::new(".").ok(),
                    };
                    std::hint::black_box(sonde::docker::map::Known::from_inspect(&allow, &inspect));
                }
            },
        },
        Target {
            name: "netlink route, link and address answers",
            seeds: netlink_seeds(),
            json: false,
            run: |input| {
                use sonde::gateway::netlink::{decode_datagram, use_answer};
                for dump in [false, true] {
                    let mut answers = Vec::new();
                    let _ = decode_datagram(input, 7, dump, &mut answers);
                    for answer in &answers {
                        std::hint::black_box(use_answer(answer));
                    }
                }
            },
        },
        Target {
            name: "Accept, Accept-Encoding and scrape-timeout headers",
            seeds: [
                "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
                "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.7,text/plain;version=0.0.4;q=0.3",
                "text/plain",
                "gzip, deflate;q=0.5, br;q=0",
                "10.5",
            ]
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect(),
            json: false,
            run: |input| {
                let t = text(input);
                std::hint::black_box(sonde::exposition::Format::negotiate(Some(&t)));
                std::hint::black_box(sonde::exposition::gzip::accepted(&t));
                if let Ok(value) = http::HeaderValue::from_bytes(input) {
                    let mut headers = http::HeaderMap::new();
                    headers.insert("x-prometheus-scrape-timeout-seconds", value);
                    std::hint::black_box(sonde::server::scrape_deadline(
                        &headers,
                        Duration::from_secs(10),
                        Duration::from_millis(500),
                    ));
                }
            },
        },
        Target {
            name: "web config (--web.config.file, the exporter-toolkit's YAML)",
            // Shaped as the exporter-toolkit documents the file: TLS with client
            // certificates, basic auth users with bcrypt hashes, headers, HTTP server knobs.
            seeds: [
                "tls_server_config:\n  cert_file: /etc/sonde/tls.crt\n  key_file: /etc/sonde/tls.key\n  \
                 client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: /etc/sonde/ca.crt\n  \
                 min_version: TLS12\n  max_version: TLS13\n  cipher_suites:\n    - TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256\n  \
                 curve_preferences: [X25519, CurveP256]\n  client_allowed_sans: [scraper.example]\n",
                "basic_auth_users:\n  prometheus: $2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi\n  \
                 other: $2b$04$abcdefghijklmnopqrstuu5NR1kMyxTVaWuhh4mbA1YB9Z3X8VZ1G\n",
                "http_server_config:\n  http2: false\n  headers:\n    Content-Security-Policy: default-src 'self'\n    \
                 X-Frame-Options: deny\n    Strict-Transport-Security: max-age=31536000\n",
                "rate_limit:\n  interval: 1s\n  burst: 10\n",
                "",
            ]
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect(),
            json: false,
            run: |input| {
                std::hint::black_box(sonde::server::webconfig::parse_bytes(input).is_ok());
            },
        },
    ];
    // `SONDE_FUZZ_ONLY=<part of a name>` runs only the parsers whose name has it.
    if let Ok(only) = std::env::var("SONDE_FUZZ_ONLY") {
        all.retain(|t| t.name.contains(only.as_str()));
    }
    all.retain(|t| !t.seeds.is_empty());
    all
}

/// Netlink answers: built as the kernel builds them (a route with a gateway and an output
/// interface, an address, a link, an error, a dump's end), and the answers this machine's
/// kernel gives to a route lookup and to link and address dumps.
fn netlink_seeds() -> Vec<Vec<u8>> {
    use netlink_packet_core::{DoneMessage, ErrorMessage, NetlinkHeader, NetlinkMessage, NetlinkPayload};
    use netlink_packet_route::address::{AddressAttribute, AddressMessage};
    use netlink_packet_route::link::{LinkAttribute, LinkMessage};
    use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteType};
    use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
    let serialize = |payload: NetlinkPayload<RouteNetlinkMessage>| {
        let mut header = NetlinkHeader::default();
        header.sequence_number = 7;
        let mut message = NetlinkMessage::new(header, payload);
        message.finalize();
        let mut out = vec![0; message.buffer_len()];
        message.serialize(&mut out);
        out
    };
    let mut route = RouteMessage::default();
    route.header.address_family = AddressFamily::Inet;
    route.header.kind = RouteType::Unicast;
    route.header.destination_prefix_length = 32;
    route.attributes = vec![
        RouteAttribute::Destination(RouteAddress::Inet("198.18.2.2".parse().expect("ip"))),
        RouteAttribute::Gateway(RouteAddress::Inet("198.18.1.1".parse().expect("ip"))),
        RouteAttribute::Oif(3),
    ];
    let mut address = AddressMessage::default();
    address.header.family = AddressFamily::Inet;
    address.header.prefix_len = 24;
    address.header.index = 3;
    address.attributes = vec![
        AddressAttribute::Address("198.18.1.2".parse().expect("ip")),
        AddressAttribute::Local("198.18.1.2".parse().expect("ip")),
    ];
    let mut link = LinkMessage::default();
    link.header.index = 3;
    link.attributes = vec![LinkAttribute::IfName("veth0".into())];
    let mut error = ErrorMessage::default();
    error.code = std::num::NonZeroI32::new(-19);
    let route = serialize(NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(route)));
    let address = serialize(NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewAddress(address)));
    let link = serialize(NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)));
    let done = serialize(NetlinkPayload::Done(DoneMessage::default()));
    let mut seeds = vec![
        route.clone(),
        [address.clone(), address.clone(), done.clone()].concat(),
        link,
        serialize(NetlinkPayload::Error(error)),
    ];
    seeds.extend(kernel_answers());
    seeds
}

/// Raw datagrams of this kernel's answers: a route lookup for 127.0.0.1, a link dump and an
/// address dump (as many as one receive holds). Empty where netlink cannot be used.
fn kernel_answers() -> Vec<Vec<u8>> {
    use netlink_packet_core::{NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload};
    use netlink_packet_route::address::AddressMessage;
    use netlink_packet_route::link::LinkMessage;
    use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
    use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
    use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
    let Ok(mut socket) = Socket::new(NETLINK_ROUTE) else {
        return Vec::new();
    };
    if socket.bind_auto().is_err() || socket.connect(&SocketAddr::new(0, 0)).is_err() {
        return Vec::new();
    }
    let mut route = RouteMessage::default();
    route.header.address_family = AddressFamily::Inet;
    route.header.destination_prefix_length = 32;
    route.attributes.push(RouteAttribute::Destination(RouteAddress::Inet(
        "127.0.0.1".parse().expect("ip"),
    )));
    let requests = [
        (RouteNetlinkMessage::GetRoute(route), false),
        (RouteNetlinkMessage::GetLink(LinkMessage::default()), true),
        (RouteNetlinkMessage::GetAddress(AddressMessage::default()), true),
    ];
    let mut out = Vec::new();
    for (sequence, (request, dump)) in (1u32..).zip(requests) {
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | if dump { NLM_F_DUMP } else { 0 };
        header.sequence_number = sequence;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(request));
        packet.finalize();
        let mut bytes = vec![0; packet.buffer_len()];
        packet.serialize(&mut bytes);
        if socket.send(&bytes, 0).is_err() {
            continue;
        }
        let mut buffer = vec![0u8; 64 * 1024];
        if let Ok(n) = socket.recv(&mut &mut buffer[..], 0) {
            // Renumbered to the sequence the target asks for.
            let mut datagram = buffer[..n].to_vec();
            let mut offset = 0;
            while offset + 16 <= datagram.len() {
                let length = u32::from_ne_bytes(datagram[offset..offset + 4].try_into().expect("4 bytes")) as usize;
                datagram[offset + 8..offset + 12].copy_from_slice(&7u32.to_ne_bytes());
                if length == 0 {
                    break;
                }
                offset += (length + 3) & !3;
            }
            out.push(datagram);
        }
    }
    out
}

// ---- the driver ----

struct Outcome {
    inputs: u64,
    elapsed: Duration,
    slowest: Duration,
    peak_extra: usize,
}

fn inputs_per_parser() -> u64 {
    std::env::var("SONDE_FUZZ_INPUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
}

fn base_seed() -> u64 {
    std::env::var("SONDE_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_5019_de00_0023)
}

fn save(name: &str, n: u64, input: &[u8]) -> String {
    let slug: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("fuzz-{slug}-{n}.bin"));
    let _ = std::fs::write(&path, input);
    path.display().to_string()
}

/// Runs one target for `count` inputs on its own thread, with a watchdog on each input.
fn fuzz(target: Target, count: u64, seed: u64) -> Result<Outcome, String> {
    let current: Arc<Mutex<(u64, Vec<u8>, Instant)>> = Arc::new(Mutex::new((0, Vec::new(), Instant::now())));
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let name = target.name;
    let shared = Arc::clone(&current);
    let worker = std::thread::spawn(move || {
        let mut rng = Rng(seed | 1);
        let started = Instant::now();
        let mut slowest = Duration::ZERO;
        let mut peak_extra = 0;
        let mut json_seeds: Vec<serde_json::Value> = Vec::new();
        if target.json {
            json_seeds = target
                .seeds
                .iter()
                .filter_map(|s| serde_json::from_slice(s).ok())
                .collect();
        }
        for n in 0..count {
            let mut input = target.seeds[rng.below(target.seeds.len())].clone();
            if target.json && !json_seeds.is_empty() && !rng.chance(4) {
                let mut value = json_seeds[rng.below(json_seeds.len())].clone();
                for _ in 0..1 + rng.below(4) {
                    mutate_json(&mut rng, &mut value);
                }
                input = serde_json::to_vec(&value).unwrap_or_default();
                if rng.chance(4) {
                    mutate_bytes(&mut rng, &mut input, &target.seeds);
                }
            } else if n > 0 {
                mutate_bytes(&mut rng, &mut input, &target.seeds);
            }
            {
                let mut slot = shared.lock().unwrap_or_else(|p| p.into_inner());
                *slot = (n, input.clone(), Instant::now());
            }
            let base = CURRENT.load(Ordering::Relaxed);
            PEAK.store(base, Ordering::Relaxed);
            let begun = Instant::now();
            let run = target.run;
            let outcome = std::panic::catch_unwind(|| run(&input));
            let took = begun.elapsed();
            slowest = slowest.max(took);
            // Other test threads allocate too: the peak is an upper bound of this input's.
            let extra = PEAK.load(Ordering::Relaxed).saturating_sub(base);
            peak_extra = peak_extra.max(extra);
            if outcome.is_err() {
                return Err(format!(
                    "{name}: input {n} panicked (saved at {})",
                    save(name, n, &input)
                ));
            }
            let bound = input.len() * 64 + (8 << 20);
            if extra > bound {
                return Err(format!(
                    "{name}: input {n} ({} bytes) held {extra} bytes at once, over {bound} (saved at {})",
                    input.len(),
                    save(name, n, &input)
                ));
            }
        }
        Ok(Outcome {
            inputs: count,
            elapsed: started.elapsed(),
            slowest,
            peak_extra,
        })
    });
    let watcher = std::thread::spawn(move || {
        while done_rx.recv_timeout(Duration::from_millis(200)).is_err() {
            let slot = current.lock().unwrap_or_else(|p| p.into_inner());
            if slot.2.elapsed() > Duration::from_secs(10) {
                return Some(format!(
                    "{name}: input {} has run for 10 s: a hang (saved at {})",
                    slot.0,
                    save(name, slot.0, &slot.1)
                ));
            }
        }
        None
    });
    loop {
        if worker.is_finished() {
            let _ = done_tx.send(());
            let _ = watcher.join();
            return worker.join().map_err(|_| format!("{name}: the worker died"))?;
        }
        if watcher.is_finished() {
            if let Ok(Some(hang)) = watcher.join() {
                return Err(hang); // the worker is left running; the test fails
            }
            return worker.join().map_err(|_| format!("{name}: the worker died"))?;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The allocation counts are the process's: one test at a time, so one test's allocations
/// are not taken for the other's.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[test]
fn every_parser_of_outside_input_survives_generated_inputs() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    // Panics are caught per input and reported; keep their messages out of the output.
    std::panic::set_hook(Box::new(|_| {}));
    let count = inputs_per_parser();
    let seed = base_seed();
    let mut failures = Vec::new();
    println!(
        "{:<80} {:>9} {:>9} {:>10} {:>12}",
        "parser", "inputs", "seconds", "slowest", "peak extra"
    );
    for (i, target) in (0u64..).zip(targets()) {
        let name = target.name;
        match fuzz(target, count, seed.wrapping_add(i.wrapping_mul(0x9e37_79b9_7f4a_7c15))) {
            Ok(outcome) => println!(
                "{name:<80} {:>9} {:>9.2} {:>8.1}ms {:>10}kB",
                outcome.inputs,
                outcome.elapsed.as_secs_f64(),
                outcome.slowest.as_secs_f64() * 1e3,
                outcome.peak_extra / 1024
            ),
            Err(failure) => {
                println!("{name:<80} FAILED: {failure}");
                failures.push(failure);
            }
        }
    }
    let _ = std::panic::take_hook();
    assert!(failures.is_empty(), "{failures:#?}");
}

/// The driver itself: a parser that panics on some inputs, or holds far more memory than
/// its input, is reported with the input saved.
#[test]
fn the_driver_reports_panics_and_memory_blowups() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    std::panic::set_hook(Box::new(|_| {}));
    let panicky = Target {
        name: "panics on a zero byte",
        seeds: vec![b"123\n456\n".to_vec()],
        json: false,
        run: |input| assert!(!input.contains(&0), "a zero byte"),
    };
    let failure = fuzz(panicky, 20_000, 1).err().expect("the panic is found");
    assert!(failure.contains("panicked (saved at"), "{failure}");
    let greedy = Target {
        name: "holds 64 MiB",
        seeds: vec![b"x".to_vec()],
        json: false,
        run: |input| {
            std::hint::black_box(vec![input.len() as u8; 64 << 20]);
        },
    };
    let failure = fuzz(greedy, 10, 1).err().expect("the blow-up is found");
    assert!(failure.contains("held"), "{failure}");
    let _ = std::panic::take_hook();
}

/// `SONDE_FUZZ_REPLAY=<saved input> cargo test --test fuzz_parsers replay -- --nocapture`
/// runs one saved input through every parser, panics shown in full; without the variable
/// it does nothing.
#[test]
fn replay() {
    let Ok(path) = std::env::var("SONDE_FUZZ_REPLAY") else {
        return;
    };
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let input = std::fs::read(&path).expect("the saved input");
    for target in targets() {
        println!("{}", target.name);
        (target.run)(&input);
    }
}
