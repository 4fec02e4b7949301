//! Network namespaces by inode, and a bounded cache of one netlink socket per namespace
//! (rtnetlink for the gateway lookup, conntrack for the NAT lookup: [`NetnsSocket`]).
//!
//! The probes name a connection's namespace by its inode. sonde finds a path that holds
//! that namespace (a process's `/proc/<pid>/ns/net`, or a name under `/run/netns`), enters it
//! on a short-lived thread (`setns` changes only the calling thread), opens the socket there
//! and keeps it: a netlink socket answers for the namespace it was made in. A kept socket
//! also keeps its namespace alive, so handles of namespaces that no process and no name
//! holds any more are dropped by [`NetnsHandles::prune_vanished`].

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::netlink::RouteSocket;
use crate::netns::{self, inode_of};
use crate::sync;

/// A namespace that could not be found or entered is not tried again for this long: a scan
/// of `/proc` (and a thread) per connection of such a namespace would be a storm of its own.
pub const FAILED_TTL: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("no process and no /run/netns name holds network namespace {0}")]
    NotFound(u32),
    #[error("network namespace {0} could not be found or entered lately; not tried again yet")]
    Failed(u32),
    #[error("entering network namespace {inode} through {path}: {source}")]
    Enter {
        inode: u32,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("opening a netlink socket in network namespace {inode}: {source}")]
    Socket {
        inode: u32,
        #[source]
        source: std::io::Error,
    },
}

impl NetnsError {
    /// The `reason` label of `sonde_gateway_lookup_errors_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotFound(_) => "netns_not_found",
            Self::Failed(_) => "netns_failed_recently",
            Self::Enter { .. } => "netns_enter",
            Self::Socket { .. } => "netlink_socket",
        }
    }
}

/// A socket that answers for the network namespace it was opened in.
pub trait NetnsSocket: Sized + Send {
    /// Opens one in the calling thread's namespace.
    fn open() -> std::io::Result<Self>;
}

impl NetnsSocket for RouteSocket {
    fn open() -> std::io::Result<Self> {
        RouteSocket::open()
    }
}

/// One namespace's socket. Lookups in one namespace take turns on it.
pub struct Handle<S = RouteSocket> {
    pub socket: Mutex<S>,
    last_used: AtomicU64,
}

impl<S> Handle<S> {
    pub fn socket(&self) -> MutexGuard<'_, S> {
        sync::lock(&self.socket)
    }
}

pub struct NetnsHandles<S = RouteSocket> {
    /// sonde's own namespace (the probes' inode 0 means it too): no `setns` needed.
    own: u32,
    procfs: PathBuf,
    named: PathBuf,
    capacity: usize,
    handles: Mutex<HashMap<u32, Arc<Handle<S>>>>,
    /// Namespaces that could not be found or entered lately.
    failed: moka::sync::Cache<u32, ()>,
    ticks: AtomicU64,
}

impl<S: NetnsSocket> NetnsHandles<S> {
    /// `procfs` is where the processes' namespaces are read, `named` the directory of named
    /// namespaces (`/run/netns`); at most `capacity` sockets are kept.
    pub fn new(procfs: &Path, named: &Path, capacity: usize) -> Self {
        Self {
            own: netns::own_inode() as u32,
            procfs: procfs.to_owned(),
            named: named.to_owned(),
            capacity: capacity.max(1),
            handles: Mutex::new(HashMap::new()),
            failed: moka::sync::Cache::builder()
                .max_capacity(4096)
                .time_to_live(FAILED_TTL)
                .build(),
            ticks: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u32, Arc<Handle<S>>>> {
        sync::lock(&self.handles)
    }

    /// Sockets kept now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a socket of another namespace than sonde's own is kept (else there is
    /// nothing to prune).
    pub fn holds_foreign(&self) -> bool {
        self.lock().keys().any(|inode| *inode != self.own)
    }

    /// sonde's own namespace's inode.
    pub fn own(&self) -> u32 {
        self.own
    }

    /// The socket of namespace `inode`, opened on first use.
    pub fn get(&self, inode: u32) -> Result<Arc<Handle<S>>, NetnsError> {
        let inode = if inode == 0 { self.own } else { inode };
        let tick = self.ticks.fetch_add(1, Ordering::Relaxed);
        let mut handles = self.lock();
        if let Some(handle) = handles.get(&inode) {
            handle.last_used.store(tick, Ordering::Relaxed);
            return Ok(handle.clone());
        }
        if self.failed.contains_key(&inode) {
            return Err(NetnsError::Failed(inode));
        }
        let opened = if inode == self.own {
            S::open().map_err(|source| NetnsError::Socket { inode, source })
        } else {
            match self.find(inode) {
                Some(path) => open_in(&path, inode),
                None => Err(NetnsError::NotFound(inode)),
            }
        };
        let socket = opened.inspect_err(|_| self.failed.insert(inode, ()))?;
        if handles.len() >= self.capacity {
            // The least recently used goes; a namespace still in use comes back on demand.
            if let Some(oldest) = handles
                .iter()
                .min_by_key(|(_, h)| h.last_used.load(Ordering::Relaxed))
                .map(|(k, _)| *k)
            {
                handles.remove(&oldest);
            }
        }
        let handle = Arc::new(Handle {
            socket: Mutex::new(socket),
            last_used: AtomicU64::new(tick),
        });
        handles.insert(inode, handle.clone());
        Ok(handle)
    }

    /// Drops the sockets of namespaces that no process and no name holds any more, so the
    /// kernel can free them. Returns the inodes of those dropped.
    pub fn prune_vanished(&self) -> Vec<u32> {
        let live = self.live_inodes();
        let mut handles = self.lock();
        let mut dropped = Vec::new();
        handles.retain(|inode, _| {
            let keep = *inode == self.own || live.contains(&u64::from(*inode));
            if !keep {
                dropped.push(*inode);
            }
            keep
        });
        dropped
    }

    fn find(&self, inode: u32) -> Option<PathBuf> {
        netns::candidates(&self.procfs, &self.named).find(|path| inode_of(path) == Some(u64::from(inode)))
    }

    fn live_inodes(&self) -> HashSet<u64> {
        netns::candidates(&self.procfs, &self.named)
            .filter_map(|path| inode_of(&path))
            .collect()
    }
}

/// Opens a socket inside the namespace `path` holds, on a thread of its own that ends
/// right after: the calling thread stays where it is.
fn open_in<S: NetnsSocket>(path: &Path, inode: u32) -> Result<S, NetnsError> {
    let enter = |source| NetnsError::Enter {
        inode,
        path: path.to_owned(),
        source,
    };
    let Some(file) = netns::open(path, u64::from(inode)).map_err(enter)? else {
        return Err(NetnsError::NotFound(inode));
    };
    std::thread::scope(|scope| {
        let spawned = std::thread::Builder::new()
            .name("sonde-netns".into())
            .spawn_scoped(scope, || {
                netns::enter(&file).map_err(enter)?;
                S::open().map_err(|source| NetnsError::Socket { inode, source })
            })
            .map_err(enter)?;
        spawned
            .join()
            .unwrap_or_else(|_| Err(enter(std::io::Error::other("the namespace thread panicked"))))
    })
}
