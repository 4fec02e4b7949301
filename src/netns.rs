//! Network namespaces by inode: the paths that hold them (a process's `/proc/<pid>/ns/net`,
//! or a name under `/run/netns`), and entering one on the calling thread. The probes name a
//! connection's namespace by its inode; the gateway lookup opens a netlink socket in it, the
//! connection collector runs the TCP iterator in it.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The inode of the namespace a path holds.
pub fn inode_of(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.ino())
}

/// The inode of this process's own network namespace (0 when it cannot be read).
pub fn own_inode() -> u64 {
    inode_of(Path::new("/proc/self/ns/net")).unwrap_or(0)
}

/// Paths that may hold a namespace: named ones first (cheap), then every process's.
pub fn candidates(procfs: &Path, named: &Path) -> impl Iterator<Item = PathBuf> {
    let named = std::fs::read_dir(named)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|entry| entry.path());
    let processes = std::fs::read_dir(procfs)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|entry| {
            entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(|entry| entry.path().join("ns/net"));
    named.chain(processes)
}

/// Every network namespace that a process or a name holds, once each, by inode.
pub fn all(procfs: &Path, named: &Path) -> HashMap<u64, PathBuf> {
    let mut found = HashMap::new();
    for path in candidates(procfs, named) {
        if let Some(inode) = inode_of(&path) {
            found.entry(inode).or_insert(path);
        }
    }
    found
}

/// Opens the namespace `path` holds, checking it is still namespace `inode` (the process
/// may have gone and its pid been reused since the path was found).
pub fn open(path: &Path, inode: u64) -> std::io::Result<Option<File>> {
    use std::os::unix::fs::OpenOptionsExt;
    // Non-blocking: a FIFO put under /run/netns would otherwise hold the open for ever (an
    // nsfs file is not a regular file, so fsread's check does not apply; the inode check
    // below and setns refuse anything else).
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    Ok((file.metadata()?.ino() == inode).then_some(file))
}

/// Moves the calling thread into the namespace `file` holds (`setns` changes only the
/// calling thread, so callers do it on a thread of their own).
pub fn enter(file: &File) -> std::io::Result<()> {
    // SAFETY: a valid namespace fd; setns changes only this thread's namespace.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
