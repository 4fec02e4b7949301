//! The check `tcp-no-udp-probe`: how many runs of sonde's UDP programs a known number of
//! TCP calls cause, read from the kernel's BPF run-time statistics ([`crate::stats`]).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream, UdpSocket};

use crate::metrics::Scrape;
use crate::{Ctx, IO_TIMEOUT, Outcome, io_err, stats, with_timeouts};

/// The UDP programs sonde attached, as (program, hook), from `sonde_ebpf_attached`.
fn attached_udp(scrape: &Scrape) -> Vec<(String, String)> {
    scrape
        .samples
        .iter()
        .filter(|s| s.name == "sonde_ebpf_attached" && s.value == 1.0)
        .filter_map(|s| {
            let label = |key: &str| s.labels.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
            Some((label("program")?, label("hook")?))
        })
        .filter(|(program, _)| program.starts_with("udp") || program.starts_with("sock_"))
        .collect()
}

/// Run counts of `names` now, summed: (sends, receives) by the program's name.
fn udp_runs(names: &[String]) -> Result<(u64, u64, String), String> {
    let kernel: Vec<&str> = names.iter().map(|n| stats::kernel_name(n)).collect();
    let counts = stats::run_counts(&kernel).map_err(io_err("reading the programs' stats"))?;
    let sum = |part: &str| counts.iter().filter(|(n, _)| n.contains(part)).map(|(_, c)| c.1).sum();
    let found: Vec<String> = counts.iter().map(|(n, c)| format!("{n} x{}", c.0)).collect();
    if let Some((name, _)) = counts.iter().find(|(_, c)| c.0 == 0) {
        return Err(format!("no loaded program is named {name}"));
    }
    Ok((sum("send"), sum("recv"), found.join(", ")))
}

/// One loopback TCP connection makes a known number of send and receive calls (1,000 round
/// trips of 1 KiB, every call counted) with the kernel's BPF run-time statistics on; the run
/// count of sonde's UDP programs must not move where UDP's own fexit programs run (TCP
/// enters no UDP program: the deterministic proof that the TCP data path pays nothing per
/// call), and moves by at least the calls where the socket tracepoints run (every TCP call
/// enters them: the detail says by how much; still ok). Then one datagram each way must move
/// both, which shows the programs found are the ones that count.
pub fn tcp_no_udp_probe(ctx: &Ctx) -> Outcome {
    const ROUNDS: usize = 1_000;
    const SIZE: usize = 1_024;
    let udp = attached_udp(&ctx.scrape()?);
    if udp.is_empty() {
        return Err("sonde attached no UDP program".into());
    }
    let fexit = udp.iter().all(|(_, hook)| hook.starts_with("fexit/"));
    let names: Vec<String> = udp.iter().map(|(program, _)| program.clone()).collect();
    let _stats = stats::enable_stats().map_err(io_err("BPF_ENABLE_STATS"))?;

    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(io_err("bind"))?;
    let port = listener.local_addr().map_err(io_err("local address"))?.port();
    let mut client = with_timeouts(TcpStream::connect((Ipv4Addr::LOCALHOST, port)).map_err(io_err("connect"))?)?;
    let (server, _) = listener.accept().map_err(io_err("accept"))?;
    let mut server = with_timeouts(server)?;
    let (mut sends, mut recvs) = (0u64, 0u64);
    let (send_before, recv_before, found) = udp_runs(&names)?;
    let data = vec![b'x'; SIZE];
    let mut buf = vec![0u8; SIZE];
    // One thread, calls counted one by one: a write of 1 KiB into an empty socket buffer
    // takes it whole, a read may return part.
    let mut transfer = |from: &mut TcpStream, to: &mut TcpStream| -> Result<(), String> {
        let mut written = 0;
        while written < SIZE {
            written += from.write(&data[written..]).map_err(io_err("write"))?;
            sends += 1;
        }
        let mut read = 0;
        while read < SIZE {
            match to.read(&mut buf[read..]).map_err(io_err("read"))? {
                0 => return Err("the peer closed".into()),
                n => read += n,
            }
            recvs += 1;
        }
        Ok(())
    };
    for _ in 0..ROUNDS {
        transfer(&mut client, &mut server)?;
        transfer(&mut server, &mut client)?;
    }
    let (send_after, recv_after, _) = udp_runs(&names)?;
    drop((client, server));
    let tcp_runs = (send_after - send_before) + (recv_after - recv_before);

    // The control: one datagram each way.
    let a = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).map_err(io_err("bind"))?;
    let b = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).map_err(io_err("bind"))?;
    a.set_read_timeout(Some(IO_TIMEOUT)).map_err(io_err("timeout"))?;
    b.set_read_timeout(Some(IO_TIMEOUT)).map_err(io_err("timeout"))?;
    let b_address = b.local_addr().map_err(io_err("local address"))?;
    a.send_to(b"ping", b_address).map_err(io_err("send"))?;
    let (_, a_address) = b.recv_from(&mut buf).map_err(io_err("receive"))?;
    b.send_to(b"pong", a_address).map_err(io_err("send"))?;
    a.recv_from(&mut buf).map_err(io_err("receive"))?;
    let (send_control, recv_control, _) = udp_runs(&names)?;
    let (send_control, recv_control) = (send_control - send_after, recv_control - recv_after);
    if send_control < 2 || recv_control < 2 {
        return Err(format!(
            "two UDP datagrams moved the UDP programs' run counts by sends +{send_control}, \
             receives +{recv_control} (want at least 2 each): the statistics or the programs found ({found}) are not the ones that count"
        ));
    }
    let calls = format!("{sends} TCP send and {recvs} receive calls");
    let control = format!("2 datagrams: sends +{send_control}, receives +{recv_control}");
    if fexit {
        if tcp_runs != 0 {
            return Err(format!(
                "fexit path ({found}): {calls} ran UDP programs {tcp_runs} times, want 0"
            ));
        }
        Ok(format!("fexit path ({found}): {calls}, UDP program runs +0; {control}"))
    } else if tcp_runs >= sends + recvs {
        Ok(format!(
            "tracepoint path ({found}): {calls} ran them {tcp_runs} times (every TCP call enters them); {control}"
        ))
    } else {
        Err(format!(
            "tracepoint path ({found}): {calls} ran them only {tcp_runs} times, want at least {}",
            sends + recvs
        ))
    }
}
