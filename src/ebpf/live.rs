//! The live connections, read at each scrape: TCP ones from sonde's own list of the live
//! connections (every namespace at once), UDP ones from the probes' `udp_socks` table.
//!
//! A TCP connection's counts are the kernel's own counters at that moment, which only a BPF
//! program can read: sonde writes each live connection's socket into the memory-mapped
//! `live_reads` array and runs the probes' `read_tcp` over it (BPF_PROG_TEST_RUN), which
//! writes the counts beside each (docs/ARCHITECTURE.md#live-tcp). The list is kept from the
//! probes' start records (`FLAG_OPENED`, through the batches; the seed's connections too) and
//! the closes, and read whole from the probes' table (`tcp_conns`) only when it may have
//! missed one: at the first scrape, and after a loss. Connections older than the probes are in
//! the table once the `seed_tcp` iterator has run in their network namespace: once per
//! namespace, at the first scrape that finds it (a TCP iterator walks the sockets of the
//! namespace it is made in, and the kernel's whole established hash each time).

use std::collections::{HashMap as StdHashMap, HashSet};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use aya::maps::{HashMap, MapData};

use super::conn::{ClosedConn, IPPROTO_TCP, LiveConn, LiveRead, READ_CHUNK, TcpConn};
use crate::netns;

#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("linking the TCP iterator: {0}")]
    Attach(std::io::Error),
    #[error("mapping the probes' live_reads array: {0}")]
    Map(std::io::Error),
    #[error("starting the TCP iterator's thread: {0}")]
    Thread(std::io::Error),
    #[error("reading the live TCP connections' table: {0}")]
    Table(std::io::Error),
    #[error("running read_tcp: {0}")]
    Read(std::io::Error),
    #[error("reading the UDP table: {0}")]
    Udp(String),
}

/// What one scrape read of the live TCP connections (the connections themselves are
/// appended to the caller's list).
#[derive(Debug, Default)]
pub struct TcpWalk {
    /// Namespaces seeded by this scrape: those not seen by an earlier one.
    pub namespaces: usize,
    /// Namespaces that could not be seeded (gone meanwhile, or no right to enter), with why;
    /// they are tried again at the next scrape.
    pub failures: Vec<(u64, std::io::Error)>,
}

// The bpf(2) commands and attach type this module needs, from include/uapi/linux/bpf.h (a
// stable ABI). aya's own iterator link can make one iterator only (`into_file` consumes
// it), and aya has no batch lookup.
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_ITER_CREATE: libc::c_long = 33;
const BPF_TRACE_ITER: u32 = 28;

/// bpf(2) with the attribute block `attr` (`union bpf_attr`, the fields of `cmd` set and the
/// rest zero); what the kernel returned.
fn bpf(cmd: libc::c_long, attr: &mut [u64; 10]) -> std::io::Result<libc::c_long> {
    // SAFETY: the attribute block is valid for its length, which is passed along; the
    // kernel reads only the fields of `cmd` and checks the rest is zero. The pointers in it
    // point to buffers the caller keeps alive for the call, of the lengths given beside them.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            std::mem::size_of_val(attr) as libc::c_uint,
        )
    };
    if ret < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(ret)
}

/// A new fd the kernel returned.
fn owned_fd(fd: libc::c_long) -> OwnedFd {
    // SAFETY: the kernel returned a new fd, owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

/// Runs an iterator of `link` to its end, appending what it writes to `out`: `seed_tcp`
/// writes its connections there when the probes keep no live table, else nothing.
fn run_iterator(link: &OwnedFd, out: &mut Vec<u8>) -> std::io::Result<()> {
    let mut attr = [0u64; 10];
    attr[0] = u64::from(link.as_raw_fd() as u32);
    let iter = owned_fd(bpf(BPF_ITER_CREATE, &mut attr)?);
    let before = out.len();
    File::from(iter).read_to_end(out).inspect_err(|_| {
        // A walk that failed part way may have left half a record: none of it is kept
        // (the namespace is walked again at the next scrape).
        out.truncate(before);
    })?;
    Ok(())
}

/// Every entry of a hash map of `u64` keys and `TcpConn` values (BPF_MAP_LOOKUP_BATCH, 5.6),
/// in `entries`; a few thousand a call. The kernel writes the keys too: `keys` is their room.
fn read_table(map: BorrowedFd<'_>, keys: &mut Vec<u64>, entries: &mut Vec<TcpConn>) -> std::io::Result<()> {
    keys.clear();
    entries.clear();
    let mut chunk: usize = 4096;
    // The position where the next call goes on (a bucket index, for hash maps).
    let mut token = [0u64; 1];
    let mut first = true;
    loop {
        let have = keys.len();
        keys.resize(have + chunk, 0);
        entries.resize(have + chunk, TcpConn::default());
        let mut next = [0u64; 1];
        let mut attr = [0u64; 10];
        attr[0] = if first { 0 } else { token.as_ptr() as u64 };
        attr[1] = next.as_mut_ptr() as u64;
        attr[2] = keys[have..].as_mut_ptr() as u64;
        attr[3] = entries[have..].as_mut_ptr() as u64;
        attr[4] = chunk as u64 | (u64::from(map.as_raw_fd() as u32) << 32);
        let result = bpf(BPF_MAP_LOOKUP_BATCH, &mut attr);
        let got = ((attr[4] & 0xffff_ffff) as usize).min(chunk);
        keys.truncate(have + got);
        entries.truncate(have + got);
        match result {
            Ok(_) => {}
            // The end of the table (with the last entries, or none).
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
            // One bucket holds more entries than fit: again, with room for more.
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && got == 0 && chunk < 1 << 20 => {
                chunk *= 2;
                continue;
            }
            Err(e) => return Err(e),
        }
        token = next;
        first = false;
    }
}

/// The probes' `live_reads` array, mapped into this process (BPF_F_MMAPABLE, 5.5).
struct LiveReads {
    slots: std::ptr::NonNull<LiveRead>,
    capacity: usize,
    len: usize,
}

// SAFETY: the mapping is this struct's own, and used only through `&mut self`.
unsafe impl Send for LiveReads {}

impl LiveReads {
    fn map(array: BorrowedFd<'_>, capacity: u32) -> std::io::Result<Self> {
        let capacity = capacity as usize;
        let len = (capacity * std::mem::size_of::<LiveRead>()).next_multiple_of(4096);
        // SAFETY: a new shared mapping of the array's fd, of its values' size rounded up to
        // a page (the kernel maps an array's values from offset 0); no memory is aliased.
        let address = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                array.as_raw_fd(),
                0,
            )
        };
        if address == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let slots = std::ptr::NonNull::new(address.cast::<LiveRead>())
            .ok_or_else(|| std::io::Error::other("mmap returned no address"))?;
        Ok(Self { slots, capacity, len })
    }

    /// The slots, to write or read between runs of `read_tcp` (the kernel writes them only
    /// during those runs, which `&mut self` keeps apart from this borrow).
    fn slots(&mut self) -> &mut [LiveRead] {
        // SAFETY: the mapping holds `capacity` slots, `LiveRead` is plain old data, aligned
        // by the page, and only this struct refers to the mapping.
        unsafe { std::slice::from_raw_parts_mut(self.slots.as_ptr(), self.capacity) }
    }
}

impl Drop for LiveReads {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, of that length, unused from now on.
        unsafe { libc::munmap(self.slots.as_ptr().cast(), self.len) };
    }
}

/// How sonde reads the live TCP connections: the probes' `seed_tcp` iterator (linked once,
/// run once in each network namespace), their table of live connections and `read_tcp`,
/// which reads the connections' counters.
pub struct TcpIterator {
    seed: OwnedFd,
    read: OwnedFd,
    table: OwnedFd,
    reads: LiveReads,
    /// Namespaces seeded: every connection older than the probes there has its entry, and
    /// every later one gets its entry at its handshake.
    seeded: HashSet<u64>,
    /// The live connections, as the start and close records tell them (the table's entries
    /// after a full read), each in a slot that stays its own while it lives: a scrape walks
    /// this vector in order instead of a hash map.
    live: Vec<Option<Kept>>,
    /// Slots of `live` that are free.
    free: Vec<u32>,
    /// The slot of each live connection, by identity (the cookie, unique among live
    /// sockets): looked up by its start and close only, never by a scrape.
    slot_of: StdHashMap<u64, u32, foldhash::fast::RandomState>,
    /// Identities whose close came with no start before it (the start may still come, through
    /// another CPU's batch), with the read they came before, and the close itself when it
    /// needs its start to be counted (`FLAG_ABSOLUTE`): a start that comes after its close
    /// is dropped, not read, and completes the close. A start is read by the scrape after
    /// the one it was written before, so two reads are as long as one waits.
    closed_first: StdHashMap<u64, (u64, Option<ClosedConn>), foldhash::fast::RandomState>,
    /// Whether the probes keep no live table (`tables_off`): closes come with the socket's
    /// counts, to join with their start, the seed writes its connections to its output, and
    /// a loss is made good by seeding every namespace again.
    tables_off: bool,
    /// Connections older than the probes (or whose start was lost) the seed added to the
    /// list, when the probes keep no table (else the probes count them).
    first_seen: u64,
    /// The seed's output, when the probes keep no table.
    seed_out: Vec<u8>,
    /// Connections not kept because the list held as many as `live_reads` has slots, when
    /// the probes keep no table (else the probes count them, as their table is full).
    table_full: u64,
    /// Reads done.
    reads_done: u64,
    /// Whether `live` may lack a connection the table holds (at start, or after a lost
    /// record): then the next read takes the whole table.
    stale: bool,
    /// The slots of `live` being read, in the order of `live_reads`, for one read.
    reading: Vec<u32>,
    /// Where the runs of `read_tcp` are shared out when there are many connections.
    pool: Option<rayon::ThreadPool>,
    keys: Vec<u64>,
    entries: Vec<TcpConn>,
}

/// Runs `read_tcp` (the program `read`) over slots [first, end) (BPF_PROG_TEST_RUN of a raw
/// tracepoint program: its context is the arguments).
fn run_read(read: &OwnedFd, first: u32, end: u32) -> std::io::Result<()> {
    let args = [u64::from(first), u64::from(end)];
    let mut attr = [0u64; 10];
    attr[0] = u64::from(read.as_raw_fd() as u32);
    // ctx_size_in (offset 40), ctx_in (offset 48)
    attr[5] = (std::mem::size_of_val(&args) as u64) & 0xffff_ffff;
    attr[6] = args.as_ptr() as u64;
    bpf(BPF_PROG_TEST_RUN, &mut attr).map(|_| ())
}

/// Threads at most that share the runs of `read_tcp` at a scrape. Most of a scrape of many
/// connections is `read_tcp` waiting for the sockets' cold cache lines; runs on several
/// CPUs wait together.
const READ_THREADS: usize = 4;

/// From this many connections a scrape's reads are shared out; fewer are read on the
/// scrape's own thread (handing work over would cost more than it saves).
const PARALLEL_FROM: usize = 8 * READ_CHUNK as usize;

/// The pool the runs of `read_tcp` are shared out on: as many threads as this process may
/// run on at once, at most [`READ_THREADS`]; none on one CPU, or when no thread can start
/// (then a scrape reads on its own thread).
fn read_pool() -> Option<rayon::ThreadPool> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(READ_THREADS));
    if threads < 2 {
        return None;
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("sonde-live-{i}"))
        .build()
        .inspect_err(
            |e| tracing::warn!(error = %e, "the live read's threads did not start; scrapes read on one thread"),
        )
        .ok()
}

/// One connection of sonde's live list, with the tag its consumer keeps with it.
#[derive(Debug, Clone, Copy)]
struct Kept {
    conn: TcpConn,
    tag: u32,
    /// The read that first found the socket closed, when the probes keep no table; else 0.
    closed_at: u64,
}

impl Kept {
    /// The connection with its counts as `read` gives them.
    fn live_conn(&self, read: &LiveRead, slot: u32) -> LiveConn {
        let record = self.conn.record(read);
        LiveConn {
            key: record.key,
            stats: record.stats,
            slot,
            tag: self.tag,
        }
    }
}

/// The probes' parts [`TcpIterator`] uses.
pub struct TcpParts<'a> {
    /// `seed_tcp`, a TCP iterator.
    pub seed: BorrowedFd<'a>,
    /// `read_tcp`, loaded (run, not attached).
    pub read: BorrowedFd<'a>,
    /// `tcp_conns`, the table of live connections.
    pub table: BorrowedFd<'a>,
    /// `live_reads`, of `capacity` slots (the table's size).
    pub reads: BorrowedFd<'a>,
    pub capacity: u32,
    /// Whether the probes keep no live table (`tables_off` set at load).
    pub tables_off: bool,
}

impl TcpIterator {
    pub fn new(parts: TcpParts<'_>) -> Result<Self, LiveError> {
        let mut attr = [0u64; 10];
        attr[0] = u64::from(parts.seed.as_raw_fd() as u32);
        attr[1] = u64::from(BPF_TRACE_ITER);
        let seed = owned_fd(bpf(BPF_LINK_CREATE, &mut attr).map_err(LiveError::Attach)?);
        let dup = |fd: BorrowedFd<'_>| fd.try_clone_to_owned().map_err(LiveError::Map);
        Ok(Self {
            seed,
            read: dup(parts.read)?,
            table: dup(parts.table)?,
            reads: LiveReads::map(parts.reads, parts.capacity).map_err(LiveError::Map)?,
            seeded: HashSet::new(),
            live: Vec::new(),
            free: Vec::new(),
            slot_of: StdHashMap::default(),
            closed_first: StdHashMap::default(),
            tables_off: parts.tables_off,
            first_seen: 0,
            seed_out: Vec::new(),
            table_full: 0,
            reads_done: 0,
            stale: true,
            reading: Vec::new(),
            pool: read_pool(),
            keys: Vec::new(),
            entries: Vec::new(),
        })
    }

    /// A record from the batches: a TCP connection's start (`FLAG_OPENED`) joins the live
    /// list, any other TCP record (a close) leaves it. A close and its start may come in
    /// either order (through different CPUs' batches): a start that comes after its close
    /// never joins. Returns the closed connection to count, if any: the record itself, or
    /// for a close written with the socket's own counts (`FLAG_ABSOLUTE`) the record joined
    /// with its start, when the start has come (before the close or now).
    pub fn record(&mut self, record: &ClosedConn) -> Option<ClosedConn> {
        use super::conn::{FLAG_ABSOLUTE, FLAG_CONNECT_FAILED, FLAG_OPENED};
        let flags = record.stats.flags;
        if record.key.protocol != IPPROTO_TCP {
            return (flags & FLAG_OPENED == 0).then_some(*record);
        }
        let cookie = record.stats.cookie;
        if flags & FLAG_OPENED != 0 {
            let start = TcpConn::opened(record);
            return match self.closed_first.remove(&cookie) {
                None => {
                    self.keep(start);
                    None
                }
                Some((_, close)) => close.map(|close| start.closed(&close)),
            };
        }
        let absolute = flags & FLAG_ABSOLUTE != 0;
        match self.forget(cookie) {
            Some(start) if absolute => Some(start.closed(record)),
            Some(_) => Some(*record),
            None if flags & FLAG_CONNECT_FAILED != 0 => Some(*record),
            None => {
                self.closed_first
                    .insert(cookie, (self.reads_done, absolute.then_some(*record)));
                // Counted now when it needs no start, else when its start comes.
                (!absolute).then_some(*record)
            }
        }
    }

    /// A live connection into the list: into its own slot when it has one already (a start
    /// the full table read or the seed had: the start replaces it), else into a free slot.
    fn keep(&mut self, conn: TcpConn) {
        // Without the probes' table, its size (--connection.max-live) bounds the list: a
        // connection beyond it is not kept, and its close is not counted, as one the table
        // had no room for.
        if self.tables_off && self.slot_of.len() >= self.reads.capacity && !self.slot_of.contains_key(&conn.cookie) {
            self.table_full += 1;
            return;
        }
        let kept = Some(Kept {
            conn,
            tag: LiveConn::NO_TAG,
            closed_at: 0,
        });
        if let Some(&slot) = self.slot_of.get(&conn.cookie) {
            self.live[slot as usize] = kept;
            return;
        }
        let slot = match self.free.pop() {
            Some(slot) => {
                self.live[slot as usize] = kept;
                slot
            }
            None => {
                self.live.push(kept);
                (self.live.len() - 1) as u32
            }
        };
        self.slot_of.insert(conn.cookie, slot);
    }

    /// The connection of this identity out of the list; None when it was not there.
    fn forget(&mut self, cookie: u64) -> Option<TcpConn> {
        let slot = self.slot_of.remove(&cookie)?;
        let kept = self.live[slot as usize].take();
        self.free.push(slot);
        kept.map(|k| k.conn)
    }

    /// Keeps each connection's `tag` (as its consumer set it) with the connection, to be
    /// given back at the next read. `conns` are a read's connections; those of no slot here
    /// (UDP) are passed over.
    pub fn keep_tags(&mut self, conns: &[LiveConn]) {
        for conn in conns {
            let kept = self.live.get_mut(conn.slot as usize).and_then(Option::as_mut);
            if let Some(kept) = kept.filter(|k| k.conn.cookie == conn.stats.cookie) {
                kept.tag = conn.tag;
            }
        }
    }

    /// Live connections in the list.
    pub fn len(&self) -> usize {
        self.slot_of.len()
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.slot_of.is_empty()
    }

    /// Records may have been lost (the batches were overwritten before sonde read them): the
    /// next read takes the whole table, or, when the probes keep none, seeds every namespace
    /// again (a connection whose start was lost counts from then on).
    pub fn records_lost(&mut self) {
        if self.tables_off {
            self.seeded.clear();
        } else {
            self.stale = true;
        }
    }

    /// Connections the seed added to the list when the probes keep no table (then the
    /// probes do not count them).
    pub fn first_seen(&self) -> u64 {
        self.first_seen
    }

    /// Connections the list had no room for when the probes keep no table (then the probes
    /// do not count them).
    pub fn table_full(&self) -> u64 {
        self.table_full
    }

    /// Every live TCP connection. `namespaces` are the network namespaces that exist (by
    /// inode, with a path that holds each); those not seeded yet are seeded first, on one
    /// thread that enters each in turn (`setns` moves only the calling thread).
    /// The connections, with their counts now, are appended to `out` in the order of the
    /// list's slots.
    pub fn walk(
        &mut self,
        namespaces: &StdHashMap<u64, PathBuf>,
        out: &mut Vec<LiveConn>,
    ) -> Result<TcpWalk, LiveError> {
        // No namespace at all means the listing failed (this process's own is always
        // there): then none is taken as gone.
        if !namespaces.is_empty() {
            self.seeded.retain(|inode| namespaces.contains_key(inode));
        }
        let own = netns::own_inode();
        let own_wanted = !self.seeded.contains(&own);
        let others: Vec<(u64, &Path)> = namespaces
            .iter()
            .filter(|(inode, _)| **inode != own && !self.seeded.contains(inode))
            .map(|(inode, path)| (*inode, path.as_path()))
            .collect();
        let mut walk = TcpWalk::default();
        if own_wanted || !others.is_empty() {
            let mut out = std::mem::take(&mut self.seed_out);
            out.clear();
            let seeded = self.seed_these(own, own_wanted, &others, &mut walk, &mut out)?;
            walk.namespaces = seeded.len();
            self.seeded.extend(seeded);
            if self.tables_off {
                self.keep_seeded(&out);
            }
            self.seed_out = out;
        }
        if self.stale && !self.tables_off {
            self.read_whole_table()?;
        }
        self.read_live(out)?;
        Ok(walk)
    }

    /// The connections the seed wrote (when the probes keep no table) into the list, those
    /// it does not hold already: a connection's start, if it comes later, replaces the
    /// seed's entry.
    fn keep_seeded(&mut self, out: &[u8]) {
        let size = std::mem::size_of::<TcpConn>();
        for bytes in out.chunks_exact(size) {
            // SAFETY: `TcpConn` is plain old data of `size` bytes (every bit pattern is
            // valid), read unaligned from the iterator's output, which holds whole records.
            let conn: TcpConn = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
            if !self.slot_of.contains_key(&conn.cookie) {
                self.keep(conn);
                if self.slot_of.contains_key(&conn.cookie) {
                    self.first_seen += 1;
                }
            }
        }
    }

    /// The live list from the probes' table, every entry.
    fn read_whole_table(&mut self) -> Result<(), LiveError> {
        read_table(std::os::fd::AsFd::as_fd(&self.table), &mut self.keys, &mut self.entries)
            .map_err(LiveError::Table)?;
        // Slots of connections still live stay theirs (so do the tags kept with them).
        let fresh: std::collections::HashSet<u64, foldhash::fast::RandomState> =
            self.entries.iter().map(|conn| conn.cookie).collect();
        let gone: Vec<u64> = self
            .slot_of
            .keys()
            .copied()
            .filter(|cookie| !fresh.contains(cookie))
            .collect();
        for cookie in gone {
            self.forget(cookie);
        }
        for i in 0..self.entries.len() {
            let conn = self.entries[i];
            match self.slot_of.get(&conn.cookie) {
                Some(&slot) => {
                    if let Some(kept) = self.live[slot as usize].as_mut() {
                        kept.conn = conn;
                    }
                }
                None => self.keep(conn),
            }
        }
        self.stale = false;
        Ok(())
    }

    /// The live list's connections that are live, with their counts now, appended to `out`;
    /// those whose socket is closed leave the list.
    fn read_live(&mut self, out: &mut Vec<LiveConn>) -> Result<(), LiveError> {
        self.reads_done += 1;
        let now = self.reads_done;
        self.closed_first.retain(|_, (at, _)| now - *at <= 2);
        self.reading.clear();
        let slots = self.reads.slots();
        let mut n = 0;
        for (i, kept) in self.live.iter().enumerate() {
            let Some(kept) = kept else { continue };
            let Some(slot) = slots.get_mut(n) else { break };
            *slot = LiveRead::of(&kept.conn);
            self.reading.push(i as u32);
            n += 1;
        }
        let chunk = |c: usize| {
            let first = c as u32 * READ_CHUNK;
            (first, (first + READ_CHUNK).min(n as u32))
        };
        let chunks = n.div_ceil(READ_CHUNK as usize);
        let read = &self.read;
        match &self.pool {
            // Each run reads its own slots, and its scratch is its CPU's: runs on several
            // CPUs at once are independent (a run keeps its CPU: the kernel disables
            // preemption around it).
            Some(pool) if n >= PARALLEL_FROM => pool.install(|| {
                use rayon::prelude::*;
                (0..chunks).into_par_iter().try_for_each(|c| {
                    let (first, end) = chunk(c);
                    run_read(read, first, end)
                })
            }),
            _ => (0..chunks).try_for_each(|c| {
                let (first, end) = chunk(c);
                run_read(read, first, end)
            }),
        }
        .map_err(LiveError::Read)?;
        out.reserve(n);
        let slots = self.reads.slots();
        for (read, &i) in slots[..n].iter().zip(&self.reading) {
            let Some(kept) = &mut self.live[i as usize] else {
                continue;
            };
            match read.live {
                LiveRead::LIVE => out.push(kept.live_conn(read, i)),
                LiveRead::NOT_YET => {}
                // Without the table a close's record needs the start it is joined with:
                // a socket found closed stays in the list (not read as live) until its
                // close comes, for as long as a close may take to come (as a start
                // may, `closed_first`).
                _ if self.tables_off && (kept.closed_at == 0 || now - kept.closed_at <= 2) => {
                    if kept.closed_at == 0 {
                        kept.closed_at = now;
                    }
                }
                _ => {
                    // Out of the list (`forget`, inline: `slots` borrows `self.reads`).
                    let cookie = kept.conn.cookie;
                    self.slot_of.remove(&cookie);
                    self.live[i as usize] = None;
                    self.free.push(i);
                }
            }
        }
        Ok(())
    }

    /// Seeds this process's namespace (when `own_wanted`), then each of `others`; returns
    /// the namespaces seeded.
    fn seed_these(
        &self,
        own: u64,
        own_wanted: bool,
        others: &[(u64, &Path)],
        walk: &mut TcpWalk,
        out: &mut Vec<u8>,
    ) -> Result<Vec<u64>, LiveError> {
        let seed = &self.seed;
        std::thread::scope(|scope| {
            let worker = std::thread::Builder::new()
                .name("sonde-tcp-seed".into())
                .spawn_scoped(scope, || {
                    let mut seeded = Vec::new();
                    let mut failures = Vec::new();
                    if own_wanted {
                        match run_iterator(seed, out) {
                            Ok(()) => seeded.push(own),
                            Err(e) => failures.push((own, e)),
                        }
                    }
                    for (inode, path) in others {
                        let entered = netns::open(path, *inode).and_then(|file| match file {
                            Some(file) => netns::enter(&file).map(|()| true),
                            None => Ok(false), // gone, its path taken by another namespace
                        });
                        match entered.and_then(|entered| {
                            if entered {
                                run_iterator(seed, out).map(|()| true)
                            } else {
                                Ok(false)
                            }
                        }) {
                            Ok(true) => seeded.push(*inode),
                            Ok(false) => {}
                            Err(e) => failures.push((*inode, e)),
                        }
                    }
                    (seeded, failures)
                })
                .map_err(LiveError::Thread)?;
            let (seeded, failures) = worker
                .join()
                .map_err(|_| LiveError::Thread(std::io::Error::other("the TCP iterator's thread panicked")))?;
            walk.failures = failures;
            Ok(seeded)
        })
    }
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
