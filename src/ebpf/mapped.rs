//! An array map made with `BPF_F_MMAPABLE`, mapped into this process: user space reads and
//! writes it with no syscall per entry.

use std::os::fd::{AsFd, AsRawFd};
use std::ptr::NonNull;
use std::sync::atomic::AtomicU64;

use aya::maps::MapData;

/// An array map mapped into this process (read and write).
pub struct Mapped {
    pub base: NonNull<u8>,
    /// The bytes asked for; `len` is the mapping's, whole pages.
    bytes: usize,
    len: usize,
    /// Keeps the map alive alongside its mapping.
    _map: MapData,
}

impl Mapped {
    /// Maps the first `bytes` of the array (rounded up to whole pages).
    pub fn new(map: MapData, bytes: usize) -> std::io::Result<Self> {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let len = bytes.div_ceil(page).max(1) * page;
        // SAFETY: a fresh shared mapping of the map's fd; the kernel checks the length
        // against the array's size and refuses arrays made without BPF_F_MMAPABLE.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let base = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| std::io::Error::other("mmap returned null"))?;
        Ok(Self {
            base,
            bytes,
            len,
            _map: map,
        })
    }
}

impl Mapped {
    /// The mapped bytes asked for, as u64s the kernel may write meanwhile.
    pub fn u64s(&self) -> &[AtomicU64] {
        // SAFETY: the mapping is page-aligned, at least `bytes` long and lives as long as
        // `self`; atomics tolerate the kernel's concurrent writes.
        unsafe { std::slice::from_raw_parts(self.base.as_ptr().cast::<AtomicU64>(), self.bytes / 8) }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}
