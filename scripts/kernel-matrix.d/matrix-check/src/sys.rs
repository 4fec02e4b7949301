//! The few system calls std has no wrapper for: a new network namespace with its loopback
//! up, a classic BPF socket filter that drops marked TCP segments, and `TCP_INFO`.

use std::io::{self, Read};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `SO_ATTACH_FILTER` and `SO_DETACH_FILTER` (asm-generic/socket.h; x86 uses these values).
/// The libc crate does not export them for Linux.
const SO_ATTACH_FILTER: libc::c_int = 26;
const SO_DETACH_FILTER: libc::c_int = 27;

/// Classic BPF opcodes (linux/bpf_common.h, linux/filter.h).
const BPF_LD: u16 = 0x00;
const BPF_ALU: u16 = 0x04;
const BPF_JMP: u16 = 0x05;
const BPF_RET: u16 = 0x06;
const BPF_MISC: u16 = 0x07;
const BPF_W: u16 = 0x00;
const BPF_B: u16 = 0x10;
const BPF_ABS: u16 = 0x20;
const BPF_IND: u16 = 0x40;
const BPF_LEN: u16 = 0x80;
const BPF_AND: u16 = 0x50;
const BPF_RSH: u16 = 0x70;
const BPF_JEQ: u16 = 0x10;
const BPF_JGT: u16 = 0x20;
const BPF_K: u16 = 0x00;
const BPF_X: u16 = 0x08;
const BPF_TAX: u16 = 0x00;

/// A pipe whose two ends close on exec: (read, write).
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: fresh descriptors nobody else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A new network namespace with its `lo` up, held by a child process of its own, as a
/// container's namespace is held by its processes: sonde finds namespaces through the
/// processes that hold them (`/proc/<pid>/ns/net`) and names under `/run/netns`, not through
/// the sockets in them. The child waits until the holder is dropped.
pub struct NetnsHolder {
    pid: libc::pid_t,
    /// Closed on drop: the child's read returns and it exits.
    release: Option<OwnedFd>,
}

impl NetnsHolder {
    pub fn spawn() -> io::Result<Self> {
        let (release_read, release_write) = pipe()?;
        // The child says on this pipe when its namespace is ready: one byte, 0 once `lo` is
        // up, else the errno that stopped it. Its namespace shows in /proc as soon as it has
        // unshared, before `lo` is up, so the parent must wait for this byte and not for
        // /proc (a connect in between fails with "Network is unreachable").
        let (ready_read, ready_write) = pipe()?;
        // SAFETY: the child calls only async-signal-safe functions (unshare, socket, ioctl,
        // close, write, read, _exit) before it exits, as a fork of a threaded process must.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            drop(release_write);
            drop(ready_read);
            let (report, status) = match new_netns_with_lo_up() {
                Ok(()) => (0u8, 0),
                Err(e) => (e.raw_os_error().unwrap_or(libc::EIO).clamp(1, 255) as u8, 1),
            };
            // SAFETY: writes one byte we own to our own pipe.
            unsafe { libc::write(ready_write.as_raw_fd(), (&report as *const u8).cast(), 1) };
            if status == 0 {
                let mut byte = 0u8;
                // SAFETY: reads into one byte we own; returns at EOF, when the parent drops
                // the holder (or dies).
                unsafe { libc::read(release_read.as_raw_fd(), (&mut byte as *mut u8).cast(), 1) };
            }
            // SAFETY: ends the child without running the parent's destructors or atexit.
            unsafe { libc::_exit(status) };
        }
        drop(release_read);
        drop(ready_write);
        // From here on, dropping the holder releases and reaps the child, whatever happens.
        let holder = Self {
            pid,
            release: Some(release_write),
        };
        let mut report = [0u8; 1];
        // The child writes its byte or exits (EOF, 0 bytes): this read always returns.
        let got = std::fs::File::from(ready_read).read(&mut report)?;
        match (got, report[0]) {
            (1, 0) => Ok(holder),
            (1, errno) => Err(io::Error::from_raw_os_error(errno.into())),
            _ => Err(io::Error::other("the namespace's process exited before it was ready")),
        }
    }

    /// Moves the calling thread (only it: a network namespace is per task) into the
    /// namespace. Sockets it makes afterwards live there.
    pub fn enter(&self) -> io::Result<()> {
        let file = std::fs::File::open(format!("/proc/{}/ns/net", self.pid))?;
        // SAFETY: a valid namespace descriptor; setns changes only this thread.
        check(unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) })
    }
}

impl Drop for NetnsHolder {
    fn drop(&mut self) {
        drop(self.release.take());
        // SAFETY: waits for our own child; the status is not needed.
        unsafe { libc::waitpid(self.pid, std::ptr::null_mut(), 0) };
    }
}

/// Moves the calling task into a new network namespace and brings its `lo` up.
fn new_netns_with_lo_up() -> io::Result<()> {
    // SAFETY: unshare takes flags only.
    check(unsafe { libc::unshare(libc::CLONE_NEWNET) })?;
    // `ip link set lo up` by ioctl: read the flags, add IFF_UP. (Until lo is up it has no
    // 127.0.0.1, so the socket for the ioctl is left unbound.)
    // SAFETY: plain socket(2); the descriptor is owned at once.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    check(fd)?;
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (to, from) in req.ifr_name.iter_mut().zip(b"lo") {
        *to = *from as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS and SIOCSIFFLAGS read and write an ifreq we own.
    unsafe {
        check(libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req))?;
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        check(libc::ioctl(fd.as_raw_fd(), libc::SIOCSIFFLAGS, &req))?;
    }
    Ok(())
}

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// Attaches to `sock` (a TCP socket) a classic BPF filter that drops every incoming segment
/// whose payload starts with `marker`; segments without payload (ACKs, FIN) and all others
/// pass. TCP runs a socket's filter on each segment it receives (`tcp_filter`), with the
/// packet starting at the TCP header, so a dropped segment is one the sender must
/// retransmit.
pub fn drop_segments_starting_with(sock: &TcpStream, marker: u8) -> io::Result<()> {
    let mut code = [
        insn(BPF_LD | BPF_B | BPF_ABS, 0, 0, 12),    // A = byte 12: data offset << 4
        insn(BPF_ALU | BPF_RSH | BPF_K, 0, 0, 2),    //
        insn(BPF_ALU | BPF_AND | BPF_K, 0, 0, 0x3c), // A = TCP header length in bytes
        insn(BPF_MISC | BPF_TAX, 0, 0, 0),           // X = A
        insn(BPF_LD | BPF_W | BPF_LEN, 0, 0, 0),     // A = segment length
        insn(BPF_JMP | BPF_JGT | BPF_X, 0, 3, 0),    // no payload: accept
        insn(BPF_LD | BPF_B | BPF_IND, 0, 0, 0),     // A = first payload byte
        insn(BPF_JMP | BPF_JEQ | BPF_K, 0, 1, u32::from(marker)), // marked: drop, else accept
        insn(BPF_RET | BPF_K, 0, 0, 0),              // drop
        insn(BPF_RET | BPF_K, 0, 0, u32::MAX),       // accept, untrimmed
    ];
    let program = libc::sock_fprog {
        len: code.len() as u16,
        filter: code.as_mut_ptr(),
    };
    // SAFETY: the kernel copies the program during the call; `code` outlives it.
    check(unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_ATTACH_FILTER,
            (&program as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    })
}

/// Detaches the filter of [`drop_segments_starting_with`].
pub fn detach_filter(sock: &TcpStream) -> io::Result<()> {
    let unused: libc::c_int = 0;
    // SAFETY: SO_DETACH_FILTER ignores its value; we pass a valid int anyway.
    check(unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_DETACH_FILTER,
            (&unused as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
}

/// Sets `TCP_MAXSEG` on a listener: the MSS its connections announce and use.
pub fn set_maxseg(listener: &std::net::TcpListener, mss: libc::c_int) -> io::Result<()> {
    // SAFETY: an int option, passed by pointer and size.
    check(unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_MAXSEG,
            (&mss as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
}

/// The socket's `tcpi_total_retrans`: segments it retransmitted over its life.
pub fn total_retrans(sock: &TcpStream) -> io::Result<u32> {
    // SAFETY: tcp_info is plain data; all zeroes is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `info`.
    check(unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    })?;
    Ok(info.tcpi_total_retrans)
}
