//! The per-CPU batch drain (`BatchReader::read_all`), after the Datadog agent's batch reader.
//!
//! The kernel appends each closed connection to the current batch of the CPU it runs on; a
//! full batch is copied to the ring buffer and the CPU moves to the next slot of its ring.
//! At scrape time nobody waits for batches to fill: `read_all` reads every CPU's current,
//! partial batch straight from the map, one job per CPU on a bounded pool of workers, and
//! remembers per CPU which batch id and offset it has consumed. When the same batch arrives
//! full later ([`BatchReader::consume_full`]), only the records past that offset are new, so
//! every record is counted exactly once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use super::conn::{BATCH_SLOTS, Batch, ClosedConn, UNBATCHED_ID};
use crate::sync;

/// Upper bound on the drain's worker threads, whatever the CPU count (as in the source).
pub const MAX_WORKERS: usize = 32;

/// How long a CPU's cursor may wait for a full batch from the ring buffer before the batch
/// is taken from the map instead (or, if the ring overwrote it, counted as lost).
pub const STALE_AFTER: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("reading batch slot {slot} of CPU {cpu}: {reason}")]
    Slot { cpu: u32, slot: u32, reason: String },
    #[error("a batch names CPU {0}, which is not a possible CPU")]
    UnknownCpu(u32),
    #[error("starting the drain's worker threads: {0}")]
    Pool(String),
}

/// Where batch slots are read from: the kernel's array map, or a fake in tests.
pub trait BatchSource: Send + Sync {
    /// The batch in slot `slot` (0..BATCH_SLOTS) of `cpu`'s ring.
    fn slot(&self, cpu: u32, slot: u32) -> Result<Batch, BatchError>;
}

/// What has been consumed on one CPU: every batch before `next_id`, and `offset` records of
/// batch `next_id`.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    next_id: u64,
    offset: usize,
    touched: Instant,
}

impl Cursor {
    fn advance(&mut self, now: Instant) {
        self.next_id += 1;
        self.offset = 0;
        self.touched = now;
    }
}

/// Counts of what the reader did, for `sonde_ebpf_*` self-metrics.
#[derive(Debug, Default)]
pub struct ReaderCounters {
    /// Partial batches read from the map that yielded records.
    pub partial: AtomicU64,
    /// Full batches consumed as they arrived from the ring buffer.
    pub full: AtomicU64,
    /// Batches that left the ring before user space saw them.
    pub lost: AtomicU64,
}

pub struct BatchReader<S> {
    source: S,
    /// Cursor per CPU id; `None` for ids that are not possible CPUs.
    cursors: Vec<Option<Mutex<Cursor>>>,
    cpus: Vec<u32>,
    /// The bounded pool the per-CPU jobs run on; its threads live as long as the reader,
    /// so a drain starts no thread.
    pool: rayon::ThreadPool,
    stale_after: Duration,
    /// `true` after `stop()`. Held only while a drain enqueues its jobs.
    stopped: Mutex<bool>,
    /// Read-held by every drain in flight, so `stop()` can wait for them.
    in_flight: RwLock<()>,
    pub counters: ReaderCounters,
}

impl<S: BatchSource> BatchReader<S> {
    /// A reader of the given possible CPUs' rings.
    pub fn new(source: S, cpus: &[u32], stale_after: Duration) -> Result<Self, BatchError> {
        let now = Instant::now();
        let max = cpus.iter().copied().max().map_or(0, |m| m as usize + 1);
        let mut cursors: Vec<Option<Mutex<Cursor>>> = (0..max).map(|_| None).collect();
        for &cpu in cpus {
            cursors[cpu as usize] = Some(Mutex::new(Cursor {
                next_id: 0,
                offset: 0,
                touched: now,
            }));
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(cpus.len().clamp(1, MAX_WORKERS))
            .thread_name(|i| format!("sonde-drain-{i}"))
            .build()
            .map_err(|e| BatchError::Pool(e.to_string()))?;
        Ok(Self {
            source,
            cursors,
            cpus: cpus.to_vec(),
            pool,
            stale_after,
            stopped: Mutex::new(false),
            in_flight: RwLock::new(()),
            counters: ReaderCounters::default(),
        })
    }

    fn cursor(&self, cpu: u32) -> Option<&Mutex<Cursor>> {
        self.cursors.get(cpu as usize)?.as_ref()
    }

    /// Reads every CPU's batches that are not consumed yet, concurrently, and calls `f` with
    /// each CPU's new records. A no-op after [`stop`](Self::stop). Returns the first error
    /// after every CPU has been tried.
    pub fn read_all<F>(&self, f: F) -> Result<(), BatchError>
    where
        F: Fn(u32, &[ClosedConn]) + Sync,
        S: Sync,
    {
        let stopped = sync::lock(&self.stopped);
        if *stopped {
            return Ok(());
        }
        let _drain = sync::read(&self.in_flight);
        let first_error: Mutex<Option<BatchError>> = Mutex::new(None);
        let (f, first) = (&f, &first_error);
        self.pool.in_place_scope(|scope| {
            for &cpu in &self.cpus {
                scope.spawn(move |_| {
                    if let Err(e) = self.drain_cpu(cpu, f) {
                        sync::lock(first).get_or_insert(e);
                    }
                });
            }
            // Every job is enqueued; `stop()` may now proceed to wait for them.
            drop(stopped);
        });
        sync::into_inner(first_error).map_or(Ok(()), Err)
    }

    /// Reads one CPU's unconsumed records from the map: the current batch from the recorded
    /// offset, and full batches only once they have waited longer than the ring buffer
    /// should take (the ring buffer's copy is whole; the slot may be reused under us).
    fn drain_cpu<F: Fn(u32, &[ClosedConn])>(&self, cpu: u32, f: &F) -> Result<(), BatchError> {
        let Some(cursor) = self.cursor(cpu) else {
            return Err(BatchError::UnknownCpu(cpu));
        };
        let mut c = sync::lock(cursor);
        let now = Instant::now();
        loop {
            let stale = now.duration_since(c.touched) >= self.stale_after;
            let batch = self.source.slot(cpu, (c.next_id % u64::from(BATCH_SLOTS)) as u32)?;
            if batch.id == c.next_id {
                if batch.is_full() && !stale {
                    break;
                }
                let records = batch.records_from(c.offset);
                if !records.is_empty() {
                    f(cpu, records);
                    self.counters.partial.fetch_add(1, Ordering::Relaxed);
                }
                if batch.is_full() {
                    c.advance(now);
                    continue;
                }
                if c.offset != usize::from(batch.len) {
                    c.offset = usize::from(batch.len);
                    c.touched = now;
                }
                break;
            }
            if batch.id > c.next_id && batch.id != UNBATCHED_ID && stale {
                // The ring moved past the batch and the ring buffer never brought it.
                self.counters.lost.fetch_add(1, Ordering::Relaxed);
                c.advance(now);
                continue;
            }
            // Not started yet, or still expected from the ring buffer.
            break;
        }
        Ok(())
    }

    /// Consumes a full batch (or a record sent alone) that arrived through the ring buffer:
    /// only its records past what `read_all` already read.
    pub fn consume_full<F: FnMut(u32, &[ClosedConn])>(&self, batch: &Batch, mut f: F) -> Result<(), BatchError> {
        if batch.id == UNBATCHED_ID {
            f(batch.cpu, batch.records_from(0));
            return Ok(());
        }
        let Some(cursor) = self.cursor(batch.cpu) else {
            return Err(BatchError::UnknownCpu(batch.cpu));
        };
        let mut c = sync::lock(cursor);
        let now = Instant::now();
        // Batches before this one that the ring buffer did not bring: from the map if they
        // are still there, else lost.
        while c.next_id < batch.id {
            let slot = self
                .source
                .slot(batch.cpu, (c.next_id % u64::from(BATCH_SLOTS)) as u32)?;
            if slot.id == c.next_id && slot.is_full() {
                f(batch.cpu, slot.records_from(c.offset));
                self.counters.partial.fetch_add(1, Ordering::Relaxed);
            } else {
                self.counters.lost.fetch_add(1, Ordering::Relaxed);
            }
            c.advance(now);
        }
        if batch.id == c.next_id {
            f(batch.cpu, batch.records_from(c.offset));
            self.counters.full.fetch_add(1, Ordering::Relaxed);
            c.advance(now);
        }
        // batch.id < next_id: read whole from the map already.
        Ok(())
    }

    /// Makes every later `read_all` a no-op, and waits for the drains in flight to finish.
    pub fn stop(&self) {
        *sync::lock(&self.stopped) = true;
        drop(sync::write(&self.in_flight));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ebpf::conn::BATCH_RECORDS;
    use std::collections::HashMap;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    /// The kernel side, simulated: per-CPU rings of batch slots with the probes' rules.
    #[derive(Default)]
    struct FakeKernel {
        slots: Mutex<HashMap<(u32, u32), Batch>>,
        idx: Mutex<HashMap<u32, u64>>,
        /// Called inside `slot()`, to act in the middle of a drain.
        on_read: Mutex<Option<Box<dyn Fn() + Send>>>,
    }

    impl FakeKernel {
        /// Appends a record carrying `value` in its byte count; returns the full batch the
        /// kernel would copy to the ring buffer.
        fn append(&self, cpu: u32, value: u64) -> Option<Batch> {
            let mut idx = sync::lock(&self.idx);
            let id = *idx.entry(cpu).or_default();
            let mut slots = sync::lock(&self.slots);
            let b = slots.entry((cpu, (id % u64::from(BATCH_SLOTS)) as u32)).or_default();
            if b.id != id {
                *b = Batch {
                    id,
                    cpu,
                    ..Batch::default()
                };
            }
            b.cpu = cpu;
            b.records[usize::from(b.len)].stats.bytes_sent = value;
            b.len += 1;
            if usize::from(b.len) == BATCH_RECORDS {
                let full = *b;
                idx.insert(cpu, id + 1);
                let next = slots
                    .entry((cpu, ((id + 1) % u64::from(BATCH_SLOTS)) as u32))
                    .or_default();
                *next = Batch {
                    id: id + 1,
                    cpu,
                    ..Batch::default()
                };
                return Some(full);
            }
            None
        }
    }

    impl BatchSource for Arc<FakeKernel> {
        fn slot(&self, cpu: u32, slot: u32) -> Result<Batch, BatchError> {
            if let Some(hook) = sync::lock(&self.on_read).as_ref() {
                hook();
            }
            Ok(sync::lock(&self.slots).get(&(cpu, slot)).copied().unwrap_or_default())
        }
    }

    /// Appends each value on `cpu`; returns the last batch filled.
    fn fill(kernel: &FakeKernel, cpu: u32, values: std::ops::RangeInclusive<u64>) -> Option<Batch> {
        let mut last = None;
        for v in values {
            last = kernel.append(cpu, v).or(last);
        }
        last
    }

    fn values(records: &[ClosedConn]) -> Vec<u64> {
        records.iter().map(|r| r.stats.bytes_sent).collect()
    }

    fn drain(reader: &BatchReader<Arc<FakeKernel>>) -> Vec<u64> {
        let seen = Mutex::new(Vec::new());
        reader
            .read_all(|_, records| sync::lock(&seen).extend(values(records)))
            .expect("read_all");
        let mut v = seen.into_inner().expect("not poisoned");
        v.sort_unstable();
        v
    }

    fn consume(reader: &BatchReader<Arc<FakeKernel>>, batch: &Batch) -> Vec<u64> {
        let mut seen = Vec::new();
        reader
            .consume_full(batch, |_, records| seen.extend(values(records)))
            .expect("consume_full");
        seen
    }

    #[test]
    fn a_partial_batch_then_the_same_batch_full_counts_each_record_once() {
        let kernel = Arc::new(FakeKernel::default());
        let reader = BatchReader::new(kernel.clone(), &[0, 1], STALE_AFTER).expect("reader");
        assert!(kernel.append(0, 1).is_none());
        assert!(kernel.append(0, 2).is_none());
        assert_eq!(drain(&reader), vec![1, 2]);
        // Nothing new: nothing read again.
        assert_eq!(drain(&reader), Vec::<u64>::new());
        let r = BATCH_RECORDS as u64;
        assert!(fill(&kernel, 0, 3..=r - 1).is_none());
        let full = kernel.append(0, r).expect("the last record fills the batch");
        // The full batch arrives: only the two records read at scrape time are skipped.
        assert_eq!(consume(&reader, &full), (3..=r).collect::<Vec<u64>>());
        // The next batch starts empty; the full one is not read again from the map.
        assert_eq!(drain(&reader), Vec::<u64>::new());
        assert_eq!(reader.counters.partial.load(Ordering::Relaxed), 1);
        assert_eq!(reader.counters.full.load(Ordering::Relaxed), 1);
        assert_eq!(reader.counters.lost.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_full_batch_already_read_whole_from_the_map_is_skipped_when_it_arrives() {
        let kernel = Arc::new(FakeKernel::default());
        // Stale at once: full batches are taken from the map without waiting.
        let reader = BatchReader::new(kernel.clone(), &[0], Duration::ZERO).expect("reader");
        let r = BATCH_RECORDS as u64;
        let full = fill(&kernel, 0, 1..=r).expect("full");
        kernel.append(0, r + 1);
        assert_eq!(drain(&reader), (1..=r + 1).collect::<Vec<u64>>());
        assert_eq!(consume(&reader, &full), Vec::<u64>::new());
        assert!(kernel.append(0, r + 2).is_none());
        assert_eq!(drain(&reader), vec![r + 2]);
    }

    #[test]
    fn a_full_batch_the_ring_buffer_lost_is_read_from_the_map_before_the_next_one() {
        let kernel = Arc::new(FakeKernel::default());
        let reader = BatchReader::new(kernel.clone(), &[0], STALE_AFTER).expect("reader");
        let r = BATCH_RECORDS as u64;
        let _lost_by_the_ring_buffer = fill(&kernel, 0, 1..=r);
        let second = fill(&kernel, 0, r + 1..=2 * r).expect("full");
        assert_eq!(consume(&reader, &second), (1..=2 * r).collect::<Vec<u64>>());
        assert_eq!(reader.counters.lost.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn batches_overwritten_before_anyone_read_them_are_counted_lost() {
        let kernel = Arc::new(FakeKernel::default());
        let reader = BatchReader::new(kernel.clone(), &[0], STALE_AFTER).expect("reader");
        let batches = u64::from(BATCH_SLOTS) + 1;
        let last = fill(&kernel, 0, 1..=BATCH_RECORDS as u64 * batches).expect("full batches");
        // Batch 0's slot holds batch 4, and batch 1's slot was emptied for batch 5 when 4
        // filled: 0 and 1 are gone, 2 and 3 are still in the map, 4 is the one arriving.
        let got = consume(&reader, &last);
        let r = BATCH_RECORDS as u64;
        assert_eq!(got, (2 * r + 1..=5 * r).collect::<Vec<u64>>());
        assert_eq!(reader.counters.lost.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn many_cpus_are_drained_once_each_and_exactly() {
        let cpus: Vec<u32> = (0..96).collect();
        let kernel = Arc::new(FakeKernel::default());
        let reader = BatchReader::new(kernel.clone(), &cpus, STALE_AFTER).expect("reader");
        let mut arrived = Vec::new();
        let mut seen = Vec::new();
        let mut next = 0u64;
        for round in 0..5 {
            for &cpu in &cpus {
                for _ in 0..(cpu as usize + round) % 7 {
                    next += 1;
                    arrived.extend(kernel.append(cpu, next));
                }
            }
            // A scrape, then the full batches arriving, then another scrape.
            seen.extend(drain(&reader));
            for batch in arrived.drain(..) {
                seen.extend(consume(&reader, &batch));
            }
            seen.extend(drain(&reader));
        }
        seen.sort_unstable();
        // Every record, once, whatever order partial reads and arrivals took.
        assert_eq!(seen, (1..=next).collect::<Vec<u64>>());
    }

    #[test]
    fn stop_waits_for_the_drain_in_flight_and_later_drains_do_nothing() {
        let kernel = Arc::new(FakeKernel::default());
        let reader = Arc::new(BatchReader::new(kernel.clone(), &[0, 1, 2, 3], STALE_AFTER).expect("reader"));
        kernel.append(2, 7);
        let entered = Arc::new(AtomicBool::new(false));
        let release = Arc::new(AtomicBool::new(false));
        {
            let (entered, release) = (entered.clone(), release.clone());
            *sync::lock(&kernel.on_read) = Some(Box::new(move || {
                entered.store(true, Ordering::SeqCst);
                while !release.load(Ordering::SeqCst) {
                    std::thread::yield_now();
                }
            }));
        }
        let drainer = {
            let reader = reader.clone();
            std::thread::spawn(move || drain(&reader))
        };
        while !entered.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        let stopper = {
            let reader = reader.clone();
            std::thread::spawn(move || reader.stop())
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(!stopper.is_finished(), "stop() returned while a drain was in flight");
        release.store(true, Ordering::SeqCst);
        stopper.join().expect("stop");
        assert_eq!(drainer.join().expect("drain"), vec![7], "the drain in flight finishes");
        kernel.append(3, 8);
        assert_eq!(drain(&reader), Vec::<u64>::new(), "read_all after stop is a no-op");
    }

    #[test]
    fn a_batch_naming_an_impossible_cpu_is_an_error_not_a_panic() {
        let kernel = Arc::new(FakeKernel::default());
        let reader = BatchReader::new(kernel, &[0], STALE_AFTER).expect("reader");
        let batch = Batch {
            cpu: 4000,
            len: 1,
            ..Batch::default()
        };
        assert!(matches!(
            reader.consume_full(&batch, |_, _| {}),
            Err(BatchError::UnknownCpu(4000))
        ));
    }
}
