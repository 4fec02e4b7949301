//! The live connections, read at each scrape: TCP ones from the probes' iterator, run in
//! each network namespace that has some (a TCP iterator walks the sockets of the namespace
//! it is created in, and the kernel's whole established hash each time), UDP ones from the
//! probes' `udp_socks` table.
//!
//! The iterator writes one [`ClosedConn`] per live TCP connection, its counts taken from the
//! kernel's own counters at that moment (docs/ARCHITECTURE.md#tcp-from-the-kernels-counters).

use std::collections::{HashMap as StdHashMap, HashSet};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use aya::maps::{HashMap, MapData, PerCpuHashMap};

use super::conn::ClosedConn;
use crate::netns;

#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("attaching the TCP iterator: {0}")]
    Attach(std::io::Error),
    #[error("starting the TCP iterator's thread: {0}")]
    Thread(std::io::Error),
    #[error("reading the UDP table: {0}")]
    Udp(String),
    #[error("reading the live TCP connections per namespace: {0}")]
    Counts(String),
}

/// What one scrape's walk over the namespaces read.
#[derive(Debug, Default)]
pub struct TcpWalk {
    pub connections: Vec<ClosedConn>,
    /// Namespaces walked: those with live TCP connections, and those never walked yet.
    pub namespaces: usize,
    /// Namespaces that could not be walked (gone meanwhile, or no right to enter), with why.
    pub failures: Vec<(u64, std::io::Error)>,
    /// Bytes the iterator wrote that did not make a whole record (none, unless the record
    /// layout and the probes disagree).
    pub malformed: usize,
}

// The bpf(2) commands and attach type this module needs, from include/uapi/linux/bpf.h (a
// stable ABI). aya's own iterator link can make one iterator only (`into_file` consumes
// it), and a scrape makes one per namespace.
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_ITER_CREATE: libc::c_long = 33;
const BPF_TRACE_ITER: u32 = 28;

/// bpf(2) with an attribute block of `words` (the rest of `union bpf_attr` zero); the new fd.
fn bpf_fd(cmd: libc::c_long, words: [u32; 4]) -> std::io::Result<OwnedFd> {
    let mut attr = [0u32; 16];
    attr[..4].copy_from_slice(&words);
    // SAFETY: the attribute block is valid for its length, which is passed along; the
    // kernel reads only the fields of `cmd` and checks the rest is zero.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr) as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new fd, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// The probes' TCP iterator (`live_tcp`), linked once; each walk makes iterators of it.
pub struct TcpIterator {
    link: OwnedFd,
    /// The probes' count of live TCP connections per namespace, per CPU (`netns_conns`).
    counts: PerCpuHashMap<MapData, u32, u64>,
    /// Namespaces walked at least once: a connection older than the probes was seen there
    /// then (and counted), and every later one is counted at its handshake, so such a
    /// namespace needs walking only while its count is not 0.
    walked: HashSet<u64>,
}

impl TcpIterator {
    /// Links the loaded iterator program.
    pub fn new(program: BorrowedFd<'_>, counts: PerCpuHashMap<MapData, u32, u64>) -> Result<Self, LiveError> {
        let prog_fd = program.as_raw_fd() as u32;
        let link = bpf_fd(BPF_LINK_CREATE, [prog_fd, 0, BPF_TRACE_ITER, 0]).map_err(LiveError::Attach)?;
        Ok(Self {
            link,
            counts,
            walked: HashSet::new(),
        })
    }

    /// The live connections of the calling thread's network namespace, appended to `out`;
    /// returns the bytes left over that made no whole record.
    fn read_here(&self, buf: &mut Vec<u8>, out: &mut Vec<ClosedConn>) -> std::io::Result<usize> {
        let iter = bpf_fd(BPF_ITER_CREATE, [self.link.as_raw_fd() as u32, 0, 0, 0])?;
        buf.clear();
        File::from(iter).read_to_end(buf)?;
        let size = std::mem::size_of::<ClosedConn>();
        out.extend(buf.chunks_exact(size).filter_map(ClosedConn::from_bytes));
        Ok(buf.len() % size)
    }

    /// Every live TCP connection. `namespaces` are the network namespaces that exist (by
    /// inode, with a path that holds each); of them, those with live connections and those
    /// never walked are walked, on one thread that enters each in turn (`setns` moves only
    /// the calling thread). The counts of namespaces that are gone are deleted.
    pub fn walk(&mut self, namespaces: &StdHashMap<u64, PathBuf>) -> Result<TcpWalk, LiveError> {
        let mut live = StdHashMap::new();
        for entry in self.counts.iter() {
            match entry {
                Ok((inode, per_cpu)) => {
                    // A connection may be counted on one CPU and counted off on another.
                    let n = per_cpu.iter().fold(0u64, |sum, n| sum.wrapping_add(*n)) as i64;
                    live.insert(u64::from(inode), n);
                }
                Err(aya::maps::MapError::KeyNotFound) => {}
                Err(e) => return Err(LiveError::Counts(e.to_string())),
            }
        }
        // No namespace at all means the listing failed (this process's own is always
        // there): then nothing is taken as gone, or the counts of live ones would be lost.
        if !namespaces.is_empty() {
            for gone in live.keys().filter(|inode| !namespaces.contains_key(inode)) {
                if let Ok(inode) = u32::try_from(*gone) {
                    let _ = self.counts.remove(&inode); // gone already: nothing to do
                }
            }
            self.walked.retain(|inode| namespaces.contains_key(inode));
        }
        let own = netns::own_inode();
        let wanted = |inode: &u64| !self.walked.contains(inode) || live.get(inode).is_some_and(|n| *n > 0);
        let own_wanted = wanted(&own);
        let others: Vec<(u64, &Path)> = namespaces
            .iter()
            .filter(|(inode, _)| **inode != own && wanted(inode))
            .map(|(inode, path)| (*inode, path.as_path()))
            .collect();
        let walk = self.walk_these(own, own_wanted, &others)?;
        self.walked.extend(walk.walked.iter().copied());
        Ok(walk.result)
    }

    /// Walks this process's namespace (when `own_wanted`), then each of `others`.
    fn walk_these(&self, own: u64, own_wanted: bool, others: &[(u64, &Path)]) -> Result<Walked, LiveError> {
        std::thread::scope(|scope| {
            let worker = std::thread::Builder::new()
                .name("sonde-tcp-iter".into())
                .spawn_scoped(scope, || {
                    let mut done = Walked::default();
                    let walk = &mut done.result;
                    let mut buf = Vec::with_capacity(1 << 20);
                    if own_wanted {
                        match self.read_here(&mut buf, &mut walk.connections) {
                            Ok(left) => {
                                walk.malformed += left;
                                walk.namespaces += 1;
                                done.walked.push(own);
                            }
                            Err(e) => walk.failures.push((own, e)),
                        }
                    }
                    for (inode, path) in others {
                        let entered = netns::open(path, *inode).and_then(|file| match file {
                            Some(file) => netns::enter(&file).map(|()| true),
                            None => Ok(false), // gone, its path taken by another namespace
                        });
                        match entered.and_then(|entered| {
                            if entered {
                                self.read_here(&mut buf, &mut walk.connections).map(Some)
                            } else {
                                Ok(None)
                            }
                        }) {
                            Ok(Some(left)) => {
                                walk.malformed += left;
                                walk.namespaces += 1;
                                done.walked.push(*inode);
                            }
                            Ok(None) => {}
                            Err(e) => walk.failures.push((*inode, e)),
                        }
                    }
                    done
                })
                .map_err(LiveError::Thread)?;
            worker
                .join()
                .map_err(|_| LiveError::Thread(std::io::Error::other("the TCP iterator's thread panicked")))
        })
    }
}

/// A walk's result, and the namespaces it walked.
#[derive(Default)]
struct Walked {
    result: TcpWalk,
    walked: Vec<u64>,
}

/// The probes' table of live UDP sockets: entries by socket, holding the socket's counts.
pub struct UdpTable {
    map: HashMap<MapData, u64, ClosedConn>,
}

impl UdpTable {
    pub fn new(map: HashMap<MapData, u64, ClosedConn>) -> Self {
        Self { map }
    }

    /// Every entry, with the socket number it is kept under.
    pub fn read_all(&self, out: &mut Vec<(u64, ClosedConn)>) -> Result<(), LiveError> {
        for entry in self.map.iter() {
            match entry {
                Ok(entry) => out.push(entry),
                // Deleted by the kernel between the key and the value: gone.
                Err(aya::maps::MapError::KeyNotFound) => {}
                Err(e) => return Err(LiveError::Udp(e.to_string())),
            }
        }
        Ok(())
    }

    /// Deletes the entry of an idle socket if it still holds what was `seen`; false when a
    /// datagram came meanwhile (the entry stays). The socket, if it sends again after the
    /// delete, starts a new entry. 5.10 has no lookup-and-delete for hashes (5.14), so a
    /// datagram in the microseconds between the second look and the delete goes uncounted.
    pub fn remove_if_unchanged(&mut self, socket: u64, seen: &ClosedConn) -> Result<bool, LiveError> {
        match self.map.get(&socket, 0) {
            Ok(now) if now.stats != seen.stats => return Ok(false),
            Ok(_) => {}
            Err(aya::maps::MapError::KeyNotFound) => return Ok(true),
            Err(e) => return Err(LiveError::Udp(e.to_string())),
        }
        match self.map.remove(&socket) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(true),
            Err(e) => Err(LiveError::Udp(e.to_string())),
        }
    }
}
