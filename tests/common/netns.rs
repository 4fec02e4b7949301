//! Two network namespaces joined by a veth pair, for traffic that must not touch the host's
//! own network (a lossy link, say).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};
use std::thread::JoinHandle;
use std::time::Duration;

use super::require_tool;

/// Two network namespaces joined by a veth pair (198.18.0.1 and 198.18.0.2), removed on drop.
pub struct NetnsPair {
    pub names: [String; 2],
    /// The veth device in each namespace.
    devices: [String; 2],
}

/// Runs a command that must succeed.
pub fn run(cmd: &[&str]) {
    let out = Command::new(cmd[0]).args(&cmd[1..]).output().expect("run a command");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl NetnsPair {
    pub fn new(tag: &str) -> Self {
        require_tool("ip");
        let pid = std::process::id();
        let pair = Self {
            names: [format!("sonde-{tag}-{pid}-a"), format!("sonde-{tag}-{pid}-b")],
            devices: [format!("sv{pid}a"), format!("sv{pid}b")],
        };
        let [a, b] = &pair.names;
        let [va, vb] = &pair.devices;
        run(&["ip", "netns", "add", a]);
        run(&["ip", "netns", "add", b]);
        run(&[
            "ip", "link", "add", va, "netns", a, "type", "veth", "peer", "name", vb, "netns", b,
        ]);
        for (ns, dev, addr) in [(a, va, "198.18.0.1/30"), (b, vb, "198.18.0.2/30")] {
            run(&["ip", "-n", ns, "addr", "add", addr, "dev", dev]);
            run(&["ip", "-n", ns, "link", "set", dev, "up"]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        pair
    }

    /// Runs `f` on a thread that has entered namespace `index`.
    pub fn spawn_in<T: Send + 'static>(&self, index: usize, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
        spawn_in(&self.names[index], f)
    }

    /// Drops a random share (`probability`, "0.1" for one in ten) of the packets reaching
    /// namespace `index`. (Not on the sender's OUTPUT: TCP takes a local drop for a send that
    /// failed and sends again as new data, no retransmit.)
    pub fn drop_incoming(&self, index: usize, probability: &str) {
        require_tool("iptables");
        run(&[
            "ip",
            "netns",
            "exec",
            &self.names[index],
            "iptables",
            "-A",
            "INPUT",
            "-m",
            "statistic",
            "--mode",
            "random",
            "--probability",
            probability,
            "-j",
            "DROP",
        ]);
    }

    /// Makes every packet one TCP segment (no 64 KiB GSO packets): a drop then costs one
    /// segment, which a fast retransmit sends again.
    pub fn one_segment_per_packet(&self) {
        for (ns, dev) in self.names.iter().zip(&self.devices) {
            run(&["ip", "-n", ns, "link", "set", "dev", dev, "gso_max_segs", "1"]);
        }
    }

    /// Sends `bytes` over one TCP connection from namespace 1 to a server in namespace 0
    /// (198.18.0.1); returns the server's port and the bytes it read.
    pub fn transfer(&self, bytes: usize) -> (u16, usize) {
        let (tx, rx) = std::sync::mpsc::channel();
        let server = self.spawn_in(0, move || read_one_connection(Ipv4Addr::new(198, 18, 0, 1), tx));
        let port = rx.recv().expect("port");
        let client = self.spawn_in(1, move || {
            let addr = SocketAddr::from((Ipv4Addr::new(198, 18, 0, 1), port));
            let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(20)).expect("connect");
            stream.write_all(&vec![b'x'; bytes]).expect("send");
        });
        client.join().expect("client");
        (port, server.join().expect("server"))
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        for ns in &self.names {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Runs `f` on a thread that has entered network namespace `ns` (a name under /run/netns).
pub fn spawn_in<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("open the namespace");
        use std::os::fd::AsRawFd;
        // SAFETY: a valid namespace fd; setns changes only this thread's namespace.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        f()
    })
}

/// Listens on `addr` (any port), says the port through `port`, then reads one connection to
/// its end; returns the bytes read. Run it in the server's namespace.
pub fn read_one_connection(addr: Ipv4Addr, port: std::sync::mpsc::Sender<u16>) -> usize {
    let listener = TcpListener::bind((addr, 0)).expect("bind");
    port.send(listener.local_addr().expect("address").port())
        .expect("send port");
    let (mut stream, _) = listener.accept().expect("accept");
    let mut got = Vec::new();
    stream.read_to_end(&mut got).expect("read");
    got.len()
}

/// Runs `ip -n <ns> -batch -` with one command a line.
pub fn batch(ns: &str, commands: &str) {
    let mut child = Command::new("ip")
        .args(["-n", ns, "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ip -batch");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(commands.as_bytes())
        .expect("write the batch");
    let out = child.wait_with_output().expect("wait for ip");
    assert!(
        out.status.success(),
        "ip -n {ns} -batch:\n{commands}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Named network namespaces, deleted when dropped.
pub struct Namespaces(pub Vec<String>);

impl Namespaces {
    pub fn add(&mut self, name: String) -> String {
        run(&["ip", "netns", "add", &name]);
        self.0.push(name.clone());
        name
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// The inode that names a named namespace to the probes and to the lookups.
pub fn inode(ns: &str) -> u32 {
    std::fs::metadata(format!("/run/netns/{ns}"))
        .expect("the namespace exists")
        .ino() as u32
}
