//! The live-connection table: an array of slots the probes fill, read by user space through
//! a shared mapping (no syscall per entry or per chunk), and the ring of freed overflow slots.
//!
//! The array holds the homes (a socket's home is the slot its address names, which the probes
//! write into the slot), then the overflow slots of sockets whose home another live socket
//! held. A slot belongs to a connection while its generation is odd and, for a home, its
//! cookie is not 0. The kernel writes a slot's contents before it makes the slot the
//! connection's (a home's cookie, an overflow slot's generation), and frees it (cookie 0, then
//! an even generation) before the connection's final record becomes visible; a read that sees
//! the generation or the cookie change while it copies the slot drops it, and the next scrape
//! sees the slot as it is then.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};

use aya::maps::{Array, HashMap, MapData};

use super::conn::{ConnKey, ConnStats, LiveSlot};
use super::free_ring::{FreeRing, POSITIONS, RingError};
use super::mapped::Mapped;

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("mapping the probes' {map} array: {source}")]
    Map { map: &'static str, source: std::io::Error },
    #[error("reading how many live slots were handed out: {0}")]
    Used(String),
    #[error("giving slot {index} back: {reason}")]
    Free { index: u32, reason: String },
    #[error("the probes' ring of free slots: {0}")]
    Ring(#[from] RingError),
}

/// A connection as read from its slot.
#[derive(Debug, Clone, Copy)]
pub struct LiveEntry {
    pub index: u32,
    pub generation: u32,
    pub cookie: u64,
    /// The socket's home slot.
    pub home: u32,
    pub key: ConnKey,
    pub stats: ConnStats,
}

/// The kernel's `slots` array and free ring, mapped into this process.
pub struct LiveTable {
    slots_map: Mapped,
    /// Home slots (a power of two), then overflow slots: `slots` in all.
    homes: u32,
    slots: u32,
    used: Array<MapData, u64>,
    /// The ring of free slots: its cells and its positions.
    free_cells: Mapped,
    free_positions: Mapped,
    /// Overflow slots of sockets whose home another live socket held, by cookie.
    overflow: HashMap<MapData, u64, u64>,
}

// SAFETY: the mappings are shared memory that the kernel writes concurrently anyway; every
// access goes through volatile reads or atomics, so moving the handle between threads is
// no different from using it on one.
unsafe impl Send for LiveTable {}

/// The probes' maps that make the live table.
pub struct LiveMaps {
    pub slots: MapData,
    pub homes: u32,
    pub overflow_slots: u32,
    pub used: Array<MapData, u64>,
    pub free_ring: MapData,
    pub free_ring_len: u32,
    pub free_ring_positions: MapData,
    pub overflow: HashMap<MapData, u64, u64>,
}

impl LiveTable {
    /// Maps `slots` and the free ring (made with `BPF_F_MMAPABLE`).
    pub fn new(maps: LiveMaps) -> Result<Self, TableError> {
        let homes = maps.homes.max(1);
        let slots = homes.saturating_add(maps.overflow_slots);
        let slots_map = Mapped::new(
            maps.slots,
            (slots as usize).saturating_mul(std::mem::size_of::<LiveSlot>()),
        )
        .map_err(|source| TableError::Map { map: "slots", source })?;
        let free_cells =
            Mapped::new(maps.free_ring, (maps.free_ring_len as usize).saturating_mul(8)).map_err(|source| {
                TableError::Map {
                    map: "free_ring",
                    source,
                }
            })?;
        let free_positions =
            Mapped::new(maps.free_ring_positions, POSITIONS * 8).map_err(|source| TableError::Map {
                map: "free_ring_pos",
                source,
            })?;
        FreeRing::new(free_cells.u64s(), free_positions.u64s())?;
        Ok(Self {
            slots_map,
            homes,
            slots,
            used: maps.used,
            free_cells,
            free_positions,
            overflow: maps.overflow,
        })
    }

    fn slot_ptr(&self, index: u32) -> *mut LiveSlot {
        debug_assert!(index < self.slots);
        // SAFETY: `index` is below the array's size, so the slot lies inside the mapping.
        unsafe { self.slots_map.base.as_ptr().cast::<LiveSlot>().add(index as usize) }
    }

    fn gen_of(&self, index: u32) -> &AtomicU32 {
        // SAFETY: the slot lies inside the mapping, which lives as long as `self`;
        // `generation` is a 4-byte aligned u32 at a fixed offset.
        unsafe { AtomicU32::from_ptr(std::ptr::addr_of_mut!((*self.slot_ptr(index)).generation)) }
    }

    fn cookie_of(&self, index: u32) -> &AtomicU64 {
        // SAFETY: as in `gen_of`; `cookie` is an 8-byte aligned u64 (the slots are 128-byte
        // aligned in a page-aligned mapping).
        unsafe { AtomicU64::from_ptr(std::ptr::addr_of_mut!((*self.slot_ptr(index)).cookie)) }
    }

    /// How many sockets of home `home` hold an overflow slot; None for an index that names
    /// no home (the probes wrote it, so it is checked).
    fn overflow_count_of(&self, home: u32) -> Option<&AtomicU32> {
        if home >= self.homes {
            return None;
        }
        // SAFETY: as in `gen_of`; `overflowed` is a 4-byte aligned u32.
        Some(unsafe { AtomicU32::from_ptr(std::ptr::addr_of_mut!((*self.slot_ptr(home)).overflowed)) })
    }

    /// How many sockets of home `home` hold an overflow slot now; None for an index that names
    /// no home.
    pub fn overflowed(&self, home: u32) -> Option<u32> {
        self.overflow_count_of(home).map(|count| count.load(Ordering::Acquire))
    }

    /// Overflow slots handed out so far (the ones above were never used).
    fn overflow_used(&self) -> Result<u32, TableError> {
        let used = self.used.get(&0, 0).map_err(|e| TableError::Used(e.to_string()))?;
        Ok(u32::try_from(used).unwrap_or(u32::MAX).min(self.slots - self.homes))
    }

    /// Appends every live connection to `out`.
    pub fn read_all(&self, out: &mut Vec<LiveEntry>) -> Result<(), TableError> {
        for index in 0..self.homes + self.overflow_used()? {
            let generation = self.gen_of(index).load(Ordering::Acquire);
            if generation & 1 == 0 {
                continue;
            }
            // A home's cookie is written last when it is claimed, first when it is freed.
            let cookie = self.cookie_of(index).load(Ordering::Acquire);
            if cookie == 0 {
                continue;
            }
            // SAFETY: as in `gen_of`; LiveSlot is plain old data, and a volatile read
            // tolerates the kernel writing the slot meanwhile (checked just below).
            let slot = unsafe { std::ptr::read_volatile(self.slot_ptr(index)) };
            fence(Ordering::Acquire);
            if self.cookie_of(index).load(Ordering::Relaxed) != cookie
                || self.gen_of(index).load(Ordering::Relaxed) != generation
            {
                continue;
            }
            out.push(LiveEntry {
                index,
                generation,
                cookie,
                home: slot.home,
                key: slot.key,
                stats: slot.stats(),
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
        if entry.index < self.homes {
            // A home, as the probes free it: the cookie goes first (no event finds the slot
            // from then on), then the generation becomes even (free to claim).
            let ours = self.gen_of(entry.index).load(Ordering::Acquire) == entry.generation
                && self
                    .cookie_of(entry.index)
                    .compare_exchange(entry.cookie, 0, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok();
            if ours {
                self.gen_of(entry.index)
                    .store(entry.generation.wrapping_add(1), Ordering::Release);
            }
            return Ok(ours);
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
            // gone.
            let reference = (u64::from(entry.generation) << 32) | u64::from(entry.index);
            if self.overflow.get(&entry.cookie, 0).ok() == Some(reference)
                && self.overflow.remove(&entry.cookie).is_ok()
                && let Some(count) = self.overflow_count_of(entry.home)
            {
                count.fetch_sub(1, Ordering::AcqRel);
            }
            FreeRing::new(self.free_cells.u64s(), self.free_positions.u64s())
                .and_then(|ring| ring.push(entry.index))
                .map_err(|e| TableError::Free {
                    index: entry.index,
                    reason: e.to_string(),
                })?;
        }
        Ok(freed)
    }
}
