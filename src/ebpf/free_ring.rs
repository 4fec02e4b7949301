//! User space's end of the ring of free live slots (`free_ring` in ebpf-probes/conn.bpf.c):
//! a bounded lock-free queue (after Dmitry Vyukov's) that the probes push the slots of
//! closed connections into and pop slots for new ones from. User space pushes the slots of
//! the idle UDP sockets it ages out.
//!
//! A cell holds `(state << 32) | slot`. A lap is one pass of the positions over the ring:
//! state 2L waits for the push of lap L, 2L+1 holds lap L's slot, so a zeroed ring waits for
//! lap 0. A push or pop claims its position with a compare-and-swap, then writes the cell in
//! one store. conn.bpf.c implements the same protocol; change both together.
//!
//! A party that has claimed a position but not yet written its cell holds the ring up at that
//! cell: pops meanwhile find it empty. The probes are never preempted there; this process
//! may be, rarely, and then a new connection meanwhile takes a never-used slot instead (or,
//! in a table that has been full, is counted as `live_table_full`).

use std::sync::atomic::{AtomicU64, Ordering};

/// Where the next push's position lies in `free_ring_pos`, in u64s.
pub const PUSH_POSITION: usize = 0;
/// Where the next pop's position lies: a cache line away from the push's.
pub const POP_POSITION: usize = 8;
/// Entries of `free_ring_pos`.
pub const POSITIONS: usize = 16;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RingError {
    #[error("the ring of free slots is full (a slot given back twice?)")]
    Full,
    #[error("a ring of {0} cells: the length must be a power of two, with {POSITIONS} positions")]
    Shape(usize),
}

/// The ring's memory: its cells and its positions (the kernel's, mapped, or any other).
pub struct FreeRing<'a> {
    cells: &'a [AtomicU64],
    positions: &'a [AtomicU64],
    shift: u32,
}

impl<'a> FreeRing<'a> {
    pub fn new(cells: &'a [AtomicU64], positions: &'a [AtomicU64]) -> Result<Self, RingError> {
        if !cells.len().is_power_of_two() || positions.len() < POSITIONS {
            return Err(RingError::Shape(cells.len()));
        }
        Ok(Self {
            cells,
            positions,
            shift: cells.len().trailing_zeros(),
        })
    }

    /// Claims the next position of one end (`PUSH_POSITION` or `POP_POSITION`) once its cell
    /// is in the state that end waits for in this lap: 2L for a push, 2L+1 for a pop
    /// (`parity`). Returns the cell and what it held; `None` when the ring is full (push) or
    /// empty (pop).
    fn claim(&self, end: usize, parity: u32) -> Option<(&AtomicU64, u64)> {
        let next = &self.positions[end];
        let mask = (self.cells.len() - 1) as u64;
        let mut pos = next.load(Ordering::Acquire);
        loop {
            let cell = &self.cells[(pos & mask) as usize];
            // Laps wrap within u32, and the comparison with them, as in the probes.
            let want = ((pos >> self.shift) as u32).wrapping_mul(2).wrapping_add(parity);
            let held = cell.load(Ordering::Acquire);
            let ahead = ((held >> 32) as u32).wrapping_sub(want) as i32;
            if ahead < 0 {
                return None;
            }
            if ahead > 0 {
                // Another party took this position: start again from the current one.
                pos = next.load(Ordering::Acquire);
                continue;
            }
            match next.compare_exchange(pos, pos + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Some((cell, held)),
                Err(now) => pos = now,
            }
        }
    }

    /// Appends `slot`.
    pub fn push(&self, slot: u32) -> Result<(), RingError> {
        let (cell, held) = self.claim(PUSH_POSITION, 0).ok_or(RingError::Full)?;
        // State and slot in one store: a pop sees both or neither.
        cell.store(next_state(held) | u64::from(slot), Ordering::Release);
        Ok(())
    }

    /// Takes the oldest slot, as the probes do; `None` when the ring is empty. Only the
    /// probes pop in sonde: this is their half, for the tests of the protocol.
    #[cfg(test)]
    fn pop(&self) -> Option<u32> {
        let (cell, held) = self.claim(POP_POSITION, 1)?;
        cell.store(next_state(held), Ordering::Release);
        Some(held as u32)
    }
}

/// The state a claimed cell moves on to, in the high half of the cell.
fn next_state(held: u64) -> u64 {
    u64::from(((held >> 32) as u32).wrapping_add(1)) << 32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory(cells: usize) -> (Vec<AtomicU64>, Vec<AtomicU64>) {
        (
            (0..cells).map(|_| AtomicU64::new(0)).collect(),
            (0..POSITIONS).map(|_| AtomicU64::new(0)).collect(),
        )
    }

    #[test]
    fn slots_come_out_in_the_order_they_went_in_over_many_laps() {
        let (cells, positions) = memory(8);
        let ring = FreeRing::new(&cells, &positions).expect("ring");
        let mut expected = std::collections::VecDeque::new();
        let mut next = 0u32;
        // Uneven pushes and pops, so the positions pass the end of the ring many times.
        for round in 0..200u32 {
            for _ in 0..(round % 5) {
                if expected.len() < 8 {
                    ring.push(next).expect("room");
                    expected.push_back(next);
                    next += 1;
                }
            }
            for _ in 0..(round % 3) {
                assert_eq!(ring.pop(), expected.pop_front());
            }
        }
        while let Some(slot) = expected.pop_front() {
            assert_eq!(ring.pop(), Some(slot));
        }
        assert_eq!(ring.pop(), None);
        assert!(
            positions[PUSH_POSITION].load(Ordering::Relaxed) > 64,
            "the test went round the ring"
        );
    }

    #[test]
    fn a_full_ring_refuses_a_push_and_keeps_what_it_holds() {
        let (cells, positions) = memory(4);
        let ring = FreeRing::new(&cells, &positions).expect("ring");
        for slot in 10..14 {
            ring.push(slot).expect("room");
        }
        assert_eq!(ring.push(99), Err(RingError::Full));
        assert_eq!(ring.pop(), Some(10));
        ring.push(14).expect("room again");
        assert_eq!(
            (0..4).map(|_| ring.pop()).collect::<Vec<_>>(),
            [11, 12, 13, 14].map(Some)
        );
        assert_eq!(ring.pop(), None);
    }

    #[test]
    fn a_ring_must_be_a_power_of_two_long() {
        let (cells, positions) = memory(6);
        assert_eq!(FreeRing::new(&cells, &positions).err(), Some(RingError::Shape(6)));
    }

    #[test]
    fn concurrent_pushes_and_pops_lose_and_duplicate_nothing() {
        const SLOTS: u32 = 64;
        const HANDOFFS: usize = 20_000;
        // Twice the slots, as the loader sizes it.
        let (cells, positions) = memory(2 * SLOTS as usize);
        let ring = FreeRing::new(&cells, &positions).expect("ring");
        for slot in 0..SLOTS {
            ring.push(slot).expect("room");
        }
        // Each thread takes a slot and gives it back, as connects and closes on different
        // CPUs do: every slot stays owned by exactly one party at a time.
        let owned: Vec<AtomicU64> = (0..SLOTS).map(|_| AtomicU64::new(0)).collect();
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    let mut done = 0;
                    while done < HANDOFFS {
                        let Some(slot) = ring.pop() else { continue };
                        assert_eq!(
                            owned[slot as usize].fetch_add(1, Ordering::AcqRel),
                            0,
                            "slot {slot} twice"
                        );
                        owned[slot as usize].fetch_sub(1, Ordering::AcqRel);
                        // A thread preempted between taking a position and writing its cell
                        // holds that cell up; the others may lap the ring up to it meanwhile
                        // and find it full (the probes, never preempted, do not). Nothing is
                        // lost: the push had no effect and is made again.
                        while ring.push(slot) == Err(RingError::Full) {
                            std::thread::yield_now();
                        }
                        done += 1;
                    }
                });
            }
        });
        let mut left: Vec<u32> = std::iter::from_fn(|| ring.pop()).collect();
        left.sort_unstable();
        assert_eq!(left, (0..SLOTS).collect::<Vec<_>>());
    }
}
