//! The live-connection table: an array of slots the probes fill, read by user space through
//! a shared mapping (no syscall per entry or per chunk), and the queue of freed slots.
//!
//! A slot belongs to a connection while its generation is odd. The kernel writes a slot's
//! contents before making its generation odd, and makes it even (free) before the
//! connection's final record becomes visible; a read that sees the generation change while
//! it copies the slot drops it, and the next scrape sees the slot as it is then.

use std::os::fd::{AsFd, AsRawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering, fence};

use aya::maps::{Array, HashMap, MapData, Queue};

use super::conn::{ConnKey, ConnStats, LiveSlot};

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("mapping the live table ({slots} slots): {source}")]
    Map { slots: u32, source: std::io::Error },
    #[error("reading how many live slots were handed out: {0}")]
    Used(String),
    #[error("giving slot {index} back: {reason}")]
    Free { index: u32, reason: String },
}

/// A connection as read from its slot.
#[derive(Debug, Clone, Copy)]
pub struct LiveEntry {
    pub index: u32,
    pub generation: u32,
    pub cookie: u64,
    pub key: ConnKey,
    pub stats: ConnStats,
}

/// The kernel's `slots` array, mapped into this process.
pub struct LiveTable {
    base: NonNull<LiveSlot>,
    slots: u32,
    mapped_len: usize,
    used: Array<MapData, u64>,
    free: Queue<MapData, u32>,
    /// Sockets' slots the probes could not file in their index entry, by cookie.
    overflow: HashMap<MapData, u64, u64>,
    /// Keeps the array map alive alongside its mapping.
    _map: MapData,
}

// SAFETY: the mapping is shared memory that the kernel writes concurrently anyway; every
// access goes through volatile reads or atomics, so moving the handle between threads is
// no different from using it on one.
unsafe impl Send for LiveTable {}

impl LiveTable {
    /// Maps the `slots` array (created with `BPF_F_MMAPABLE`) of `slots` entries.
    pub fn new(
        map: MapData,
        slots: u32,
        used: Array<MapData, u64>,
        free: Queue<MapData, u32>,
        overflow: HashMap<MapData, u64, u64>,
    ) -> Result<Self, TableError> {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let bytes = (slots as usize).saturating_mul(std::mem::size_of::<LiveSlot>());
        let mapped_len = bytes.div_ceil(page).max(1) * page;
        // SAFETY: a fresh shared mapping of the map's fd; the kernel checks the length
        // against the array's size and refuses arrays made without BPF_F_MMAPABLE.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                mapped_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(TableError::Map {
                slots,
                source: std::io::Error::last_os_error(),
            });
        }
        let base = NonNull::new(ptr.cast::<LiveSlot>()).ok_or_else(|| TableError::Map {
            slots,
            source: std::io::Error::other("mmap returned null"),
        })?;
        Ok(Self {
            base,
            slots,
            mapped_len,
            used,
            free,
            overflow,
            _map: map,
        })
    }

    fn gen_of(&self, index: u32) -> &AtomicU32 {
        debug_assert!(index < self.slots);
        // SAFETY: `index` is below the array's size, so the slot lies inside the mapping,
        // which lives as long as `self`; `generation` is a 4-byte aligned u32 at a fixed offset.
        unsafe {
            let slot = self.base.as_ptr().add(index as usize);
            AtomicU32::from_ptr(std::ptr::addr_of_mut!((*slot).generation))
        }
    }

    /// Slots handed out so far (the ones above were never used).
    fn used(&self) -> Result<u32, TableError> {
        let used = self.used.get(&0, 0).map_err(|e| TableError::Used(e.to_string()))?;
        Ok(u32::try_from(used).unwrap_or(u32::MAX).min(self.slots))
    }

    /// Appends every live connection to `out`.
    pub fn read_all(&self, out: &mut Vec<LiveEntry>) -> Result<(), TableError> {
        for index in 0..self.used()? {
            let generation = self.gen_of(index).load(Ordering::Acquire);
            if generation & 1 == 0 {
                continue;
            }
            // SAFETY: as in `gen_of`; LiveSlot is plain old data, and a volatile read
            // tolerates the kernel writing the slot meanwhile (checked just below).
            let slot = unsafe { std::ptr::read_volatile(self.base.as_ptr().add(index as usize)) };
            fence(Ordering::Acquire);
            if self.gen_of(index).load(Ordering::Relaxed) != generation {
                continue;
            }
            out.push(LiveEntry {
                index,
                generation,
                cookie: slot.cookie,
                key: slot.key,
                stats: slot.stats,
            });
        }
        Ok(())
    }

    /// Frees the slot of a connection user space ends (an idle UDP socket): false when the
    /// slot moved on meanwhile. The socket, if it sends again, gets a new slot.
    pub fn free(&mut self, entry: &LiveEntry) -> Result<bool, TableError> {
        if entry.index >= self.slots {
            return Ok(false);
        }
        let freed = self
            .gen_of(entry.index)
            .compare_exchange(
                entry.generation,
                entry.generation.wrapping_add(1),
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_ok();
        if freed {
            // An overflow entry naming the freed slot would stay for good: the socket may be
            // gone. (The index entry needs nothing: the next socket there takes it over.)
            let reference = (u64::from(entry.generation) << 32) | u64::from(entry.index);
            if self.overflow.get(&entry.cookie, 0).ok() == Some(reference) {
                let _ = self.overflow.remove(&entry.cookie);
            }
            self.free.push(entry.index, 0).map_err(|e| TableError::Free {
                index: entry.index,
                reason: e.to_string(),
            })?;
        }
        Ok(freed)
    }
}

impl Drop for LiveTable {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.mapped_len) };
    }
}
