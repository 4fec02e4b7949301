//! The live-connection table: an array of slots the probes fill, read by user space through
//! a shared mapping (no syscall per entry or per chunk), the ring of freed slots, and the
//! per-entry counts of the socket index's overflow table.
//!
//! A slot belongs to a connection while its generation is odd. The kernel writes a slot's
//! contents before making its generation odd, and makes it even (free) before the
//! connection's final record becomes visible; a read that sees the generation change while
//! it copies the slot drops it, and the next scrape sees the slot as it is then.

use std::sync::atomic::{AtomicU32, Ordering, fence};

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
    pub key: ConnKey,
    pub stats: ConnStats,
}

/// The kernel's `slots` array and `overflow_counts`, mapped into this process.
pub struct LiveTable {
    slots_map: Mapped,
    slots: u32,
    /// One count per socket index entry (`sock_index`).
    overflow_counts: Mapped,
    index_mask: u64,
    used: Array<MapData, u64>,
    /// The ring of free slots: its cells and its positions.
    free_cells: Mapped,
    free_positions: Mapped,
    /// Sockets' slots the probes could not file in their index entry, by cookie.
    overflow: HashMap<MapData, u64, u64>,
}

// SAFETY: the mappings are shared memory that the kernel writes concurrently anyway; every
// access goes through volatile reads or atomics, so moving the handle between threads is
// no different from using it on one.
unsafe impl Send for LiveTable {}

/// The probes' maps that make the live table.
pub struct LiveMaps {
    pub slots: MapData,
    pub slots_len: u32,
    pub overflow_counts: MapData,
    pub index_len: u32,
    pub used: Array<MapData, u64>,
    pub free_ring: MapData,
    pub free_ring_len: u32,
    pub free_ring_positions: MapData,
    pub overflow: HashMap<MapData, u64, u64>,
}

impl LiveTable {
    /// Maps `slots`, `overflow_counts` and the free ring (all made with `BPF_F_MMAPABLE`).
    pub fn new(maps: LiveMaps) -> Result<Self, TableError> {
        let slots = maps.slots_len;
        let slots_map = Mapped::new(
            maps.slots,
            (slots as usize).saturating_mul(std::mem::size_of::<LiveSlot>()),
        )
        .map_err(|source| TableError::Map { map: "slots", source })?;
        let overflow_counts = Mapped::new(
            maps.overflow_counts,
            (maps.index_len as usize).saturating_mul(std::mem::size_of::<u32>()),
        )
        .map_err(|source| TableError::Map {
            map: "overflow_counts",
            source,
        })?;
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
            slots,
            overflow_counts,
            index_mask: u64::from(maps.index_len.max(1) - 1),
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

    /// The overflow count of the socket index entry of `cookie`.
    fn overflow_count_of(&self, cookie: u64) -> &AtomicU32 {
        let entry = (cookie & self.index_mask) as usize;
        // SAFETY: `entry` is below the index's size (the mask), so the count lies inside the
        // mapping, which lives as long as `self`; the counts are 4-byte aligned u32s.
        unsafe { AtomicU32::from_ptr(self.overflow_counts.base.as_ptr().cast::<u32>().add(entry)) }
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
            let slot = unsafe { std::ptr::read_volatile(self.slot_ptr(index)) };
            fence(Ordering::Acquire);
            if self.gen_of(index).load(Ordering::Relaxed) != generation {
                continue;
            }
            out.push(LiveEntry {
                index,
                generation,
                cookie: slot.cookie,
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
            if self.overflow.get(&entry.cookie, 0).ok() == Some(reference)
                && self.overflow.remove(&entry.cookie).is_ok()
            {
                self.overflow_count_of(entry.cookie).fetch_sub(1, Ordering::AcqRel);
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
