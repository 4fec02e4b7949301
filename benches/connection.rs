//! Costs of the connection probes and of their scrape path, on this machine's kernel.
//! Run: `cargo bench --bench connection` (as root). Prints four tables:
//!
//! (a) loopback TCP throughput with no probes, with today's probes (the object of commit
//!     9085517, before issue 20, built here from that commit's sources) and with the new
//!     path (the current loader), rounds interleaved in one run: the medians, and the
//!     ratios to no probes within each round (median and middle half); and, from transfers
//!     of their own with the kernel's BPF run-time statistics on, the probes' CPU share: their
//!     run time summed over the transfer over the transfer's CPU time (throughput alone cannot
//!     resolve a fraction of a percent: rounds differ by 5-8% on this shared machine);
//! (b) each program's cost per event, from the kernel's BPF run-time statistics, under
//!     churn (every connection new), steady TCP, a TCP stream (the per-call cost the send
//!     and receive tracepoints still have for TCP), UDP datagrams, retransmits, and
//!     `read_tcp` per live connection read, each workload run 15 times: median, min and max;
//! (c) `BatchReader::read_all` latency across every CPU;
//! (d) scrape latency of the real binary with 50,000 live sockets, their counters read at each
//!     scrape, next to its floor: the read of the live connections alone (the probes' table
//!     and `read_tcp`), a bare walk of the TCP iterator over the same sockets (what reading
//!     them by walking the kernel's sockets costs), and a read of /proc/net/tcp.
//!
//! `cargo bench --bench connection -- b` runs only the named parts (any of `a b c d`).
//! `SONDE_BENCH_SCRAPES` (default 51) sets (d)'s rounds: 201 or more give a p99 that is not
//! the maximum. The load average is printed before and after each part: the machine may be
//! shared.
//!
//! Run by `cargo test` (no `--bench` argument) it does one small round of each, as a smoke
//! test. Without root it says so and exits (under CI=true it fails). When today's probes
//! cannot be built (no git history, no clang or make) their column says why and is left out,
//! CI or not.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use sonde::ebpf::batch::{BatchReader, STALE_AFTER};
use sonde::ebpf::loader::{self, MapBatches, error_chain};

/// The commit whose probes are "today's": the last before issue 20's rewrite.
const BASELINE_COMMIT: &str = "9085517";

struct Sizes {
    rounds: usize,
    stream_bytes: usize,
    connections: u32,
    /// Rounds of each (b) workload.
    cost_rounds: usize,
    /// Bytes of each round of the (b) TCP stream.
    cost_stream_bytes: usize,
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
            rounds: 24,
            stream_bytes: 512 << 20,
            connections: 2_000,
            cost_rounds: 15,
            cost_stream_bytes: 64 << 20,
            lossy_bytes: 4 << 20,
            read_all_runs: 2_001,
            live: 50_000,
            scrapes: std::env::var("SONDE_BENCH_SCRAPES")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(51),
        }
    } else {
        Sizes {
            rounds: 1,
            stream_bytes: 16 << 20,
            connections: 50,
            cost_rounds: 1,
            cost_stream_bytes: 4 << 20,
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
    println!(
        "new path: the probes and loader built into this benchmark, {}",
        provenance()
    );
    let foreign = foreign_bpf_programs();
    if !foreign.is_empty() {
        println!(
            "warning: other processes hold BPF programs, which may run on this benchmark's traffic in every column \
             (\"none\" included): {}",
            foreign.join(", ")
        );
    }
    // The machine is shared: its load, before and after each part, says how quiet it was.
    print_load("at the start");
    if run("a") {
        throughput(&sizes);
        print_load("after (a)");
    }
    if run("b") {
        per_event_cost(&sizes);
        print_load("after (b)");
    }
    if run("c") {
        read_all_latency(&sizes);
        print_load("after (c)");
    }
    if run("d") {
        scrape_latency(&sizes);
        print_load("after (d)");
    }
}

/// Prints the load average (1, 5 and 15 minutes) from /proc/loadavg.
fn print_load(when: &str) {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let averages: Vec<&str> = text.split_whitespace().take(3).collect();
    println!("load average {when}: {}", averages.join(" "));
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

/// Other processes holding BPF programs ("pid name (n)"): another sonde's probes, say, run
/// on every connection of this machine, so they add to every column alike.
fn foreign_bpf_programs() -> Vec<String> {
    let own = std::process::id().to_string();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for pid in procs.flatten().map(|e| e.file_name().to_string_lossy().into_owned()) {
        if pid == own || !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        let programs = fds
            .flatten()
            .filter(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t.as_os_str() == "anon_inode:bpf-prog"))
            .count();
        if programs > 0 {
            let name = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            found.push(format!("{pid} {} ({programs})", name.trim()));
        }
    }
    found
}

/// Which sources the benchmark was built from, as git says now: HEAD, and whether the probes
/// or the library have uncommitted changes.
fn provenance() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(env!("CARGO_MANIFEST_DIR"))
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim_end().to_owned())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        None => "no git history to name their commit".into(),
        Some(head) => match git(&["status", "--porcelain", "--", "ebpf-probes", "src"]) {
            Some(changed) if !changed.is_empty() => {
                let files: Vec<&str> = changed.lines().map(|l| l.get(3..).unwrap_or(l)).collect();
                format!("commit {head} with uncommitted changes to {}", files.join(", "))
            }
            _ => format!("commit {head}"),
        },
    }
}

/// Today's probes: the object of [`BASELINE_COMMIT`], built from that commit's sources by its
/// own Makefile (clang -target bpf -mcpu=v3 -O2 -g, then strip -g), and its BTF-typed
/// tracepoint programs, each with the tracepoint its section names.
struct Baseline {
    object: Vec<u8>,
    /// (program, tracepoint), from the object's `tp_btf/<tracepoint>` sections.
    tracepoints: Vec<(String, String)>,
}

impl Baseline {
    /// Builds the object, or says why it cannot (no git history, no clang, no make).
    fn build() -> Result<Self, String> {
        let repo = env!("CARGO_MANIFEST_DIR");
        let dir = tempfile::tempdir().map_err(|e| format!("a temporary directory: {e}"))?;
        for file in ["conn.bpf.c", "conn.h", "kernel_types.h", "Makefile"] {
            let spec = format!("{BASELINE_COMMIT}:ebpf-probes/{file}");
            let out = Command::new("git")
                .args(["-C", repo, "show", &spec])
                .output()
                .map_err(|e| format!("git show {spec}: {e}"))?;
            if !out.status.success() {
                return Err(format!("git show {spec}: {}", last_line(&out.stderr)));
            }
            std::fs::write(dir.path().join(file), &out.stdout).map_err(|e| format!("writing {file}: {e}"))?;
        }
        let out = Command::new("make")
            .arg("-C")
            .arg(dir.path())
            .arg("conn.bpf.o")
            .output()
            .map_err(|e| format!("make: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "building {BASELINE_COMMIT}'s probes: {}",
                last_line(&out.stderr)
            ));
        }
        let object = std::fs::read(dir.path().join("conn.bpf.o")).map_err(|e| format!("reading the object: {e}"))?;
        let tracepoints = tp_btf_programs(&object)?;
        if tracepoints.is_empty() {
            return Err(format!("{BASELINE_COMMIT}'s object has no tp_btf program"));
        }
        Ok(Self { object, tracepoints })
    }

    /// Loads the object with the map sizes it declares (aya's defaults: no override) and
    /// attaches every one of its tracepoint programs; dropping the result detaches them.
    fn load(&self) -> Result<aya::Ebpf, String> {
        let btf = aya::Btf::from_sys_fs().map_err(|e| error_chain(&e))?;
        let mut ebpf = aya::EbpfLoader::new()
            .btf(Some(&btf))
            .load(&self.object)
            .map_err(|e| error_chain(&e))?;
        for (program, tracepoint) in &self.tracepoints {
            let p: &mut aya::programs::BtfTracePoint = ebpf
                .program_mut(program)
                .ok_or_else(|| format!("program {program} is not in the object"))?
                .try_into()
                .map_err(|e: aya::programs::ProgramError| format!("{program}: {e}"))?;
            p.load(tracepoint, &btf)
                .map_err(|e| format!("{program}: {}", error_chain(&e)))?;
            p.attach().map_err(|e| format!("{program}: {}", error_chain(&e)))?;
        }
        Ok(ebpf)
    }
}

fn last_line(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("failed")
        .trim()
        .to_owned()
}

/// The programs of a BPF ELF object in `tp_btf/<tracepoint>` sections, as (function symbol,
/// tracepoint). aya names programs by their symbol but keeps no section name, so the
/// section headers and the symbol table are read here (ELF64, little-endian).
fn tp_btf_programs(elf: &[u8]) -> Result<Vec<(String, String)>, String> {
    let bad = || "the object is not a little-endian ELF64 file".to_owned();
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        elf.get(o..o + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    if elf.get(..6) != Some(&[0x7f, b'E', b'L', b'F', 2, 1][..]) {
        return Err(bad());
    }
    let shoff = u64_at(0x28).ok_or_else(bad)? as usize;
    let shentsize = u16_at(0x3a).ok_or_else(bad)? as usize;
    let shnum = u16_at(0x3c).ok_or_else(bad)? as usize;
    let shstrndx = u16_at(0x3e).ok_or_else(bad)? as usize;
    // (type, offset, size, link, name offset) of each section.
    let sections: Vec<(u32, usize, usize, usize, usize)> = (0..shnum)
        .map(|i| {
            let h = shoff + i * shentsize;
            Some((
                u32_at(h + 4)?,
                u64_at(h + 0x18)? as usize,
                u64_at(h + 0x20)? as usize,
                u32_at(h + 0x28)? as usize,
                u32_at(h)? as usize,
            ))
        })
        .collect::<Option<_>>()
        .ok_or_else(bad)?;
    let string = |table: usize, at: usize| -> Option<String> {
        let (_, offset, size, _, _) = *sections.get(table)?;
        let bytes = elf.get(offset + at..offset + size)?;
        let end = bytes.iter().position(|&b| b == 0)?;
        Some(String::from_utf8_lossy(&bytes[..end]).into_owned())
    };
    const SHT_SYMTAB: u32 = 2;
    const STT_FUNC: u8 = 2;
    let mut found = Vec::new();
    for &(_, offset, size, strtab, _) in sections.iter().filter(|s| s.0 == SHT_SYMTAB) {
        for sym in elf.get(offset..offset + size).ok_or_else(bad)?.chunks_exact(24) {
            let info = sym[4];
            let shndx = u16::from_le_bytes([sym[6], sym[7]]) as usize;
            if info & 0xf != STT_FUNC || shndx == 0 || shndx >= sections.len() {
                continue;
            }
            let section = string(shstrndx, sections[shndx].4).ok_or_else(bad)?;
            if let Some(tracepoint) = section.strip_prefix("tp_btf/") {
                let name_at = u32::from_le_bytes(sym[..4].try_into().expect("4 bytes")) as usize;
                let name = string(strtab, name_at).ok_or_else(bad)?;
                found.push((name, tracepoint.to_owned()));
            }
        }
    }
    found.sort();
    Ok(found)
}

/// The probes attached during a throughput run.
#[derive(Clone, Copy, PartialEq)]
enum Setup {
    None,
    Today,
    New,
    /// The new path with `--no-connection.udp`: no UDP hooks, so no program at any send or
    /// receive.
    NewWithoutUdp,
}

/// The new path's probes, with or without the UDP hooks.
fn load_new(udp: bool) -> loader::Probes {
    let options = loader::Options::new(65_536);
    let options = if udp { options } else { options.without_udp() };
    loader::load_with(&options).expect("load the probes")
}

/// Runs `stream` with `setup`'s probes attached; loading and unloading are not timed.
fn stream_with(setup: Setup, baseline: Option<&Baseline>, bytes: usize, chunk: usize) -> f64 {
    match setup {
        Setup::None => stream(bytes, chunk),
        Setup::Today => {
            let probes = baseline.expect("today's object").load().expect("load today's probes");
            let r = stream(bytes, chunk);
            drop(probes);
            r
        }
        Setup::New | Setup::NewWithoutUdp => {
            let probes = load_new(setup == Setup::New);
            let r = stream(bytes, chunk);
            drop(probes);
            r
        }
    }
}

/// CPU time of this process so far (every thread, user and system: the transfer's writer and
/// reader, and the loopback's packet processing, which runs in their system calls).
fn process_cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec we own.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) } == 0;
    assert!(ok, "clock_gettime(CLOCK_PROCESS_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Run time of every loaded program of `ebpf`, summed (BPF_ENABLE_STATS must be on).
fn bpf_run_time(ebpf: &aya::Ebpf) -> u64 {
    program_stats(ebpf).iter().map(|(_, time, _)| time).sum()
}

/// One transfer with `setup`'s probes and the kernel's BPF run-time statistics on: the
/// probes' run time over the transfer's CPU time, in percent. The statistics add two clock
/// reads to every program run, so this is a transfer of its own, not one of the timed rounds
/// (and the figure is, if anything, high).
fn probe_share(setup: Setup, baseline: Option<&Baseline>, bytes: usize, chunk: usize) -> f64 {
    let run = |ebpf: &aya::Ebpf| {
        let (bpf0, cpu0) = (bpf_run_time(ebpf), process_cpu_time());
        stream(bytes, chunk);
        let (bpf1, cpu1) = (bpf_run_time(ebpf), process_cpu_time());
        (bpf1 - bpf0) as f64 / (cpu1 - cpu0).as_nanos() as f64 * 100.0
    };
    match setup {
        Setup::None => 0.0,
        Setup::Today => run(&baseline.expect("today's object").load().expect("load today's probes")),
        Setup::New | Setup::NewWithoutUdp => run(&load_new(setup == Setup::New).ebpf),
    }
}

/// The `q` quantile of `v` (sorted here).
fn quantile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

fn throughput(sizes: &Sizes) {
    // Loaded once first, so a kernel that refuses it skips the column rather than failing a round.
    let baseline = Baseline::build().and_then(|b| b.load().map(|_| b));
    let mut setups = vec![Setup::None];
    match &baseline {
        Ok(b) => {
            setups.push(Setup::Today);
            let programs: Vec<&str> = b.tracepoints.iter().map(|(p, _)| p.as_str()).collect();
            println!(
                "\ntoday's probes: {BASELINE_COMMIT}'s sources built by its Makefile ({} bytes), programs {} on their tp_btf tracepoints, map sizes as the object declares them",
                b.object.len(),
                programs.join(", ")
            );
        }
        Err(why) => println!("\ntoday's probes: skipped, their column is left out: {why}"),
    }
    setups.push(Setup::New);
    setups.push(Setup::NewWithoutUdp);
    let baseline = baseline.ok();
    println!(
        "\n(a) loopback TCP throughput, {} MiB a run, {} rounds; a round runs each setup once, in an order that turns from \
         round to round (every order as often), so a drift of the machine's speed cancels; ratio = with probes / without, \
         within a round: median and p25..p75 of the rounds",
        sizes.stream_bytes >> 20,
        sizes.rounds
    );
    let share_runs = sizes.rounds.div_ceil(4);
    println!(
        "    probe CPU share: after the rounds, {share_runs} more transfers per setup with the kernel's BPF run-time \
         statistics on (BPF_ENABLE_STATS): the probes' run time summed over the transfer / the transfer's CPU time \
         (this process, every thread, user and system), median"
    );
    println!("    no-udp: the new path with --no-connection.udp (no UDP hooks)");
    println!(
        "{:<9} {:>11} {:>12} {:>10} {:>11} {:>14} {:>9} {:>14} {:>12} {:>14} {:>12} {:>10} {:>13}",
        "write",
        "none MiB/s",
        "today MiB/s",
        "new MiB/s",
        "today/none",
        "p25..p75",
        "new/none",
        "p25..p75",
        "no-udp/none",
        "p25..p75",
        "today CPU %",
        "new CPU %",
        "no-udp CPU %"
    );
    for chunk in [64 << 10, 1 << 10] {
        let mut runs: Vec<Vec<f64>> = vec![Vec::new(); setups.len()];
        for round in 0..sizes.rounds {
            // Rotations, then the reversed rotations: every order of the setups.
            let n = setups.len();
            let mut order: Vec<usize> = (0..n).map(|i| (i + round) % n).collect();
            if (round / n) % 2 == 1 {
                order.reverse();
            }
            for i in order {
                runs[i].push(stream_with(setups[i], baseline.as_ref(), sizes.stream_bytes, chunk));
            }
        }
        let mib = |v: &[f64]| quantile(&mut v.to_vec(), 0.5) / 1048576.0;
        let column = |setup: Setup| setups.iter().position(|s| *s == setup).map(|i| &runs[i]);
        let none = column(Setup::None).expect("no probes");
        let ratios = |setup: Setup| -> (String, String, String) {
            match column(setup) {
                None => ("-".into(), "-".into(), "-".into()),
                Some(with) => {
                    let mut r: Vec<f64> = with.iter().zip(none).map(|(w, n)| w / n).collect();
                    (
                        format!("{:.0}", mib(with)),
                        format!("{:.4}", quantile(&mut r, 0.5)),
                        format!("{:.4}..{:.4}", quantile(&mut r, 0.25), quantile(&mut r, 0.75)),
                    )
                }
            }
        };
        let (today, today_ratio, today_mid) = ratios(Setup::Today);
        let (new, new_ratio, new_mid) = ratios(Setup::New);
        let (_, no_udp_ratio, no_udp_mid) = ratios(Setup::NewWithoutUdp);
        let share = |setup: Setup| -> String {
            if !setups.contains(&setup) {
                return "-".into();
            }
            let stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).expect("enable BPF run-time stats");
            let mut shares: Vec<f64> = (0..share_runs)
                .map(|_| probe_share(setup, baseline.as_ref(), sizes.stream_bytes, chunk))
                .collect();
            drop(stats);
            format!("{:.3}", quantile(&mut shares, 0.5))
        };
        println!(
            "{:<9} {:>11.0} {:>12} {:>10} {:>11} {:>14} {:>9} {:>14} {:>12} {:>14} {:>12} {:>10} {:>13}",
            format!("{chunk} B"),
            mib(none),
            today,
            new,
            today_ratio,
            today_mid,
            new_ratio,
            new_mid,
            no_udp_ratio,
            no_udp_mid,
            share(Setup::Today),
            share(Setup::New),
            share(Setup::NewWithoutUdp)
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

/// `messages` 100-byte datagrams echoed between two UDP sockets on loopback, one at a time
/// (so none is dropped): every datagram is one send and one receive on each side.
fn udp_exchange(messages: u32) {
    let server = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let client = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    for s in [&server, &client] {
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    }
    client.connect(server.local_addr().expect("address")).expect("connect");
    let echo = std::thread::spawn(move || {
        let mut buf = [0u8; 100];
        for _ in 0..messages {
            let (n, from) = server.recv_from(&mut buf).expect("receive");
            server.send_to(&buf[..n], from).expect("echo");
        }
    });
    let mut buf = [0u8; 100];
    for _ in 0..messages {
        client.send(&[1u8; 100]).expect("send");
        client.recv(&mut buf).expect("receive the echo");
    }
    echo.join().expect("echo");
}

/// `pairs` loopback connections, both ends, held open by this process.
fn open_pairs(pairs: u32) -> Vec<TcpStream> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let addr = listener.local_addr().expect("address");
    let acceptor = std::thread::spawn(move || {
        (0..pairs)
            .map(|_| listener.accept().expect("accept").0)
            .collect::<Vec<_>>()
    });
    let mut sockets: Vec<TcpStream> = (0..pairs).map(|_| TcpStream::connect(addr).expect("connect")).collect();
    sockets.extend(acceptor.join().expect("acceptor"));
    sockets
}

/// A bare walk of the probes' TCP iterator (`seed_tcp`) over this thread's network namespace,
/// with aya alone: a link made for the walk, one iterator of it read to its end. This is the
/// walk a scrape needed before issue 20's table read: the kernel visits every socket of the
/// namespace (and its whole established hash), locking each.
fn walk_iterator(ebpf: &mut aya::Ebpf, buf: &mut Vec<u8>) {
    let iter: &mut aya::programs::Iter = ebpf
        .program_mut("seed_tcp")
        .expect("seed_tcp is in the object")
        .try_into()
        .expect("seed_tcp is an iterator");
    let id = iter.attach().expect("link the iterator");
    let link = iter.take_link(id).expect("the iterator's link");
    let mut file = link.into_file().expect("an iterator of the link");
    buf.clear();
    file.read_to_end(buf).expect("read the iterator");
}

/// sonde's own read of the live TCP connections (the probes' table, then `read_tcp`), with
/// only this process's namespace to seed; returns the connections read.
fn read_live(probes: &mut loader::Probes) -> usize {
    let own =
        std::collections::HashMap::from([(sonde::netns::own_inode(), std::path::PathBuf::from("/proc/self/ns/net"))]);
    let mut conns = Vec::new();
    probes
        .tcp
        .walk(&own, &mut conns)
        .expect("read the live TCP connections");
    conns.len()
}

fn per_event_cost(sizes: &Sizes) {
    common::raise_fd_limit();
    let mut probes = loader::load(65_536).expect("load the probes");
    let stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).expect("enable BPF run-time stats");
    let attached: Vec<String> = probes
        .attached
        .iter()
        .map(|p| format!("{} ({})", p.program, p.hook))
        .collect();
    println!(
        "\n(b) cost per event of each program of the new path (kernel BPF run-time stats: run time / run count), attached: {}",
        attached.join(", ")
    );
    for missing in &probes.missing {
        println!("    not attached: {missing}");
    }

    let live = open_pairs(sizes.connections);
    println!(
        "\n(b) live TCP read: sonde's read of its table a round, {} live sockets held by this process \
         (both ends of {} loopback connections); read_tcp's events are runs of up to {} connections, \
         its cost per connection below; the first round runs seed_tcp over the namespace",
        live.len(),
        sizes.connections,
        sonde::ebpf::conn::READ_CHUNK
    );
    let mut per_connection = Vec::new();
    print_cost(&mut probes.ebpf, 1, |_| {}); // the header only
    for _ in 0..sizes.cost_rounds {
        let before = program_stats(&probes.ebpf);
        let read = read_live(&mut probes);
        let after = program_stats(&probes.ebpf);
        assert!(read >= live.len(), "the read found every held socket");
        let time = |stats: &[(String, u64, u64)]| {
            stats
                .iter()
                .find(|(name, ..)| name == "read_tcp")
                .map_or(0, |(_, t, _)| *t)
        };
        per_connection.push((time(&after) - time(&before)) as f64 / read as f64);
    }
    per_connection.sort_by(f64::total_cmp);
    println!(
        "{:<22} {:>10} {:>12.0} {:>8.0} {:>8.0}   ({} rounds; ns per connection read)",
        "read_tcp",
        live.len(),
        per_connection[per_connection.len() / 2],
        per_connection[0],
        per_connection[per_connection.len() - 1],
        sizes.cost_rounds
    );
    drop(live);

    println!(
        "\n(b) churn: {} new connections a round, each one 100-byte request and reply",
        sizes.connections
    );
    print_cost(&mut probes.ebpf, sizes.cost_rounds, |_| exchange(sizes.connections));
    let messages = sizes.connections * 10;
    println!("\n(b) steady: 10 long connections, {messages} echoed 100-byte messages each");
    print_cost(&mut probes.ebpf, sizes.cost_rounds, |_| steady_exchange(10, messages));
    println!(
        "\n(b) TCP stream: {} MiB over one loopback connection in 1 KiB writes: no program counts TCP per call, \
         but where UDP is counted from the tracepoints (6.3-6.8, and 6.9+ where fexit is refused) every TCP send \
         and receive call enters sock_send_length/sock_recv_length, which return at the protocol check: that is \
         the new path's whole per-call cost for TCP (with UDP's fexit programs, 6.9+ where allowed, TCP enters none)",
        sizes.cost_stream_bytes >> 20
    );
    print_cost(&mut probes.ebpf, sizes.cost_rounds, |_| {
        stream(sizes.cost_stream_bytes, 1 << 10);
    });
    println!(
        "\n(b) UDP: {messages} 100-byte datagrams echoed between two loopback sockets (a send and a receive each way)"
    );
    print_cost(&mut probes.ebpf, sizes.cost_rounds, |_| udp_exchange(messages));
    let lossy_mib = sizes.lossy_bytes >> 20;
    println!(
        "\n(b) retransmits: {lossy_mib} MiB over one connection between two network namespaces, one segment a packet, \
         one packet in ten dropped: no program runs per retransmit (the count is the kernel's, read at close)"
    );
    let pair = common::netns::NetnsPair::new("bench");
    pair.one_segment_per_packet();
    pair.drop_incoming(0, "0.1");
    print_cost(&mut probes.ebpf, sizes.cost_rounds, |_| {
        assert_eq!(
            pair.transfer(sizes.lossy_bytes).1,
            sizes.lossy_bytes,
            "the server read every byte"
        );
    });
    drop(stats);
}

/// Runs `workload` `rounds` times and prints, per attached program, the events of one round
/// and the ns per event of the rounds: median, min and max. Interference (preemption,
/// interrupts, other tenants) only adds to a round's figure, so the min is the least
/// disturbed one.
fn print_cost(ebpf: &mut aya::Ebpf, rounds: usize, mut workload: impl FnMut(&mut aya::Ebpf)) {
    let mut per_round: std::collections::BTreeMap<String, (u64, Vec<f64>)> = Default::default();
    for _ in 0..rounds {
        let before = program_stats(ebpf);
        workload(ebpf);
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
        "{:<22} {:>10} {:>12} {:>8} {:>8}   ({rounds} rounds; events of the last)",
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

/// Run time and run count of every loaded program (the ways this kernel did not take are
/// in the object but not loaded).
fn program_stats(ebpf: &aya::Ebpf) -> Vec<(String, u64, u64)> {
    ebpf.programs()
        .filter_map(|(name, program)| {
            let info = program.info().ok()?;
            Some((name.to_owned(), info.run_time().as_nanos() as u64, info.run_count()))
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
    let sockets = open_pairs(pairs);
    println!("ready {}", sockets.len());
    std::io::stdout().flush().expect("flush");
    let mut rest = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut rest);
}

/// Child processes holding `sockets` live sockets in all; killed when dropped.
struct Holders {
    children: Vec<std::process::Child>,
    /// Sockets the children say they hold.
    sockets: u32,
}

impl Holders {
    fn start(sockets: u32) -> Self {
        use std::io::BufRead;
        const PER_CHILD: u32 = 12_500;
        let exe = std::env::current_exe().expect("own path");
        let mut holders = Holders {
            children: Vec::new(),
            sockets: 0,
        };
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
            holders.children.push(child);
            let held = line.strip_prefix("ready ").and_then(|n| n.trim().parse::<u32>().ok());
            holders.sockets += held.unwrap_or_else(|| panic!("holder: {line:?}"));
        }
        holders
    }
}

impl Drop for Holders {
    fn drop(&mut self) {
        for child in &mut self.children {
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

/// Reads /proc/net/tcp and /proc/net/tcp6 to their end; returns their lines.
fn read_proc_net_tcp(buf: &mut Vec<u8>) -> usize {
    let mut lines = 0;
    for path in ["/proc/net/tcp", "/proc/net/tcp6"] {
        buf.clear();
        std::fs::File::open(path)
            .and_then(|mut f| f.read_to_end(buf))
            .expect("read /proc/net/tcp");
        lines += buf.iter().filter(|&&b| b == b'\n').count();
    }
    lines
}

fn print_spread(label: &str, times: &mut [Duration], floor: Option<Duration>) {
    times.sort_unstable();
    let (median, p99, min, max) = spread(times);
    let ratio = floor.map_or(String::new(), |f| {
        format!("{:.1}x", median.as_secs_f64() / f.as_secs_f64())
    });
    println!(
        "{label:<34} {:>10.2} {:>10.2} {:>10.2} {:>10.2} {ratio:>14}",
        ms(median),
        ms(p99),
        ms(min),
        ms(max)
    );
}

fn scrape_latency(sizes: &Sizes) {
    let sonde = common::Sonde::start(&["--no-collector.host"]);
    // The probes load at the first collection: make sure it is done before connecting.
    scrape(sonde.addr);
    // Both ends of each connection are live entries.
    let holders = Holders::start(sizes.live);
    assert!(
        holders.sockets >= sizes.live,
        "the holders hold {} sockets",
        holders.sockets
    );
    let text = scrape_text(sonde.addr);
    let value = |series: &str| common::sample_value(&text, series).unwrap_or(f64::NAN);
    let live = value("sonde_connection_live_entries");
    let namespaces = value("sonde_connection_namespaces_walked");
    assert!(
        live >= f64::from(holders.sockets),
        "sonde reads {live} live entries, the holders hold {} sockets",
        holders.sockets
    );
    // The floor, with this process's own copy of the probes: its read of the live
    // connections alone (its list and read_tcp, no HTTP, tracking or exposition); what a
    // read by walking the kernel's sockets costs: a bare walk of the TCP iterator in this
    // namespace (the holders'); and the kernel's text table of the same sockets.
    let mut probes = loader::load(65_536).expect("load the probes");
    let first = read_live(&mut probes); // seeds the holders' connections
    let mut walk_buf = Vec::with_capacity(8 << 20);
    let mut proc_buf = Vec::with_capacity(8 << 20);
    let proc_lines = read_proc_net_tcp(&mut proc_buf);
    let (mut scrapes, mut reads, mut walks, mut procs) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut bytes = 0;
    for _ in 0..sizes.scrapes {
        // Interleaved, so a drift of the machine's speed falls on all alike.
        let start = Instant::now();
        bytes = scrape(sonde.addr);
        scrapes.push(start.elapsed());
        let start = Instant::now();
        let records = read_live(&mut probes);
        reads.push(start.elapsed());
        assert!(records >= holders.sockets as usize, "the read found every held socket");
        let start = Instant::now();
        walk_iterator(&mut probes.ebpf, &mut walk_buf);
        walks.push(start.elapsed());
        let start = Instant::now();
        read_proc_net_tcp(&mut proc_buf);
        procs.push(start.elapsed());
    }
    drop(probes);
    let held = holders.sockets;
    drop(holders);
    let mut sorted_reads = reads.clone();
    sorted_reads.sort_unstable();
    let read_median = spread(&sorted_reads).0;
    println!(
        "\n(d) scrape of the real binary with {held} live sockets held (both ends of {} loopback connections): \
         sonde_connection_live_entries {live}, namespaces walked {namespaces}; {} rounds, each a scrape ({bytes} bytes), \
         then this process's own read of the live TCP connections ({first} read), a bare walk of the TCP iterator \
         in this namespace, and a read of /proc/net/tcp{{,6}} ({proc_lines} lines)",
        held / 2,
        sizes.scrapes,
    );
    println!(
        "{:<34} {:>10} {:>10} {:>10} {:>10} {:>14}",
        "", "median ms", "p99 ms", "min ms", "max ms", "median / read"
    );
    print_spread("scrape (sonde, over HTTP)", &mut scrapes, Some(read_median));
    print_spread("live read (list + read_tcp)", &mut reads, Some(read_median));
    print_spread("bare TCP iterator walk", &mut walks, Some(read_median));
    print_spread("read /proc/net/tcp{,6}", &mut procs, Some(read_median));
}
