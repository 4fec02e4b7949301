//! Monotonic aggregation of connections into series: totals of closed connections plus the
//! current values of live ones, each connection counted once however its close races with
//! the scrape.
//!
//! A connection's identity is its key and its socket's cookie (docs/ARCHITECTURE.md#drain).
//! The kernel deletes the live entry before the closed record becomes visible, and a scrape
//! reads the batches before the live table, so a live snapshot never holds a connection whose
//! final record was already consumed. A connection that left the live table but whose record has
//! not come yet keeps its last values until it comes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use foldhash::fast::RandomState;

use super::series::{Direction, LabelPolicy, SeriesKey};
use crate::conntrack::Nat;
use crate::ebpf::conn::{ClosedConn, ConnKey, ConnStats, FLAG_CONNECT_FAILED, FLAG_CONNECTED, IPPROTO_TCP, LiveConn};
use crate::gateway::Via;

/// What the enrichment step learns of a new connection.
#[derive(Debug, Clone, Default)]
pub struct Enrichment {
    /// Where it leaves its network namespace (of the translated destination, if NATed).
    pub via: Option<Arc<Via>>,
    /// The backend it reached, when NAT changed the destination it dialed.
    pub nat: Option<Arc<Nat>>,
}

/// The enrichment of a connection's series (gateway, NAT), asked once per connection, when
/// the tracker first sees it (so scrapes of known connections cost no lookup), with the
/// direction the label policy gave it. [`no_route`] when connections are not enriched.
pub type Route<'a> = &'a dyn Fn(&ConnKey, Direction) -> Enrichment;

/// The [`Route`] of connections that are not enriched.
pub fn no_route(_: &ConnKey, _: Direction) -> Enrichment {
    Enrichment::default()
}

/// Upper bounds (seconds) of the RTT histogram's buckets.
pub const RTT_BUCKETS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// How long a connection gone from the live table waits for its closed record before its
/// last values are taken as final.
pub const PENDING_CLOSE_TTL: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub connects: u64,
    pub connect_failures: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub retransmits: u64,
}

impl Counters {
    fn of(stats: &ConnStats) -> Self {
        Self {
            connects: u64::from(stats.flags & FLAG_CONNECTED != 0),
            connect_failures: u64::from(stats.flags & FLAG_CONNECT_FAILED != 0),
            bytes_sent: stats.bytes_sent,
            bytes_received: stats.bytes_received,
            retransmits: u64::from(stats.retransmits),
        }
    }

    fn add(&mut self, o: &Counters) {
        self.connects += o.connects;
        self.connect_failures += o.connect_failures;
        self.bytes_sent += o.bytes_sent;
        self.bytes_received += o.bytes_received;
        self.retransmits += o.retransmits;
    }

    /// Field by field maximum: a live value never goes back, even if a read was torn.
    fn raise_to(&mut self, o: &Counters) {
        self.connects = self.connects.max(o.connects);
        self.connect_failures = self.connect_failures.max(o.connect_failures);
        self.bytes_sent = self.bytes_sent.max(o.bytes_sent);
        self.bytes_received = self.bytes_received.max(o.bytes_received);
        self.retransmits = self.retransmits.max(o.retransmits);
    }
}

#[derive(Debug, Clone, Default)]
pub struct Histogram {
    /// Non-cumulative counts per bucket of [`RTT_BUCKETS`]; the last is `+Inf`.
    pub counts: [u64; RTT_BUCKETS.len() + 1],
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    fn observe(&mut self, value: f64) {
        let i = RTT_BUCKETS
            .iter()
            .position(|&b| value <= b)
            .unwrap_or(RTT_BUCKETS.len());
        self.counts[i] += 1;
        self.sum += value;
        self.count += 1;
    }

    /// (upper bound, cumulative count) without `+Inf`.
    pub fn cumulative(&self) -> Vec<(f64, u64)> {
        let mut total = 0;
        RTT_BUCKETS
            .iter()
            .zip(self.counts)
            .map(|(&b, c)| {
                total += c;
                (b, total)
            })
            .collect()
    }
}

#[derive(Debug, Default)]
struct Totals {
    counters: Counters,
    rtt: Histogram,
}

#[derive(Debug)]
struct Live {
    /// Which connection this is: a tag given back with a read is checked against it.
    identity: Identity,
    /// Index into the tracker's series.
    series: usize,
    counters: Counters,
    /// The snapshot it was last seen in; the latest one means an active connection.
    generation: u64,
    seen: Instant,
}

/// What one series shows at a scrape.
#[derive(Debug, Clone)]
pub struct SeriesView<'a> {
    pub key: &'a SeriesKey,
    pub counters: Counters,
    /// TCP connections in the live table now.
    pub active: u64,
    pub rtt: Option<&'a Histogram>,
}

type Identity = (ConnKey, u64);

/// Series are interned: connections refer to them by index, so a scrape sums 50,000 live
/// connections without hashing a label set for each. Live connections are kept in slots of
/// a vector, and a read gives each TCP connection back with its slot (`LiveConn::tag`), so a
/// scrape finds a connection it knows without a hash lookup; only a new connection, a
/// close, and UDP sockets (which no reader keeps tags for) look one up by identity.
pub struct Tracker {
    policy: LabelPolicy,
    series: Vec<SeriesKey>,
    index: HashMap<SeriesKey, usize, RandomState>,
    /// Closed totals, by series index.
    totals: Vec<Totals>,
    /// Live connections (present, or waiting for their record), each in its own slot while
    /// it is tracked.
    live: Vec<Option<Live>>,
    /// Free slots of `live`.
    free: Vec<u32>,
    /// The slot of each tracked live connection, by identity.
    slot_of: HashMap<Identity, u32, RandomState>,
    /// Series counted against the cap (the overflow series are not).
    capped: usize,
    /// Live snapshots taken so far.
    generation: u64,
    /// Connections counted in the overflow series because of the cap.
    pub folded: u64,
}

impl Tracker {
    pub fn new(policy: LabelPolicy) -> Self {
        Self {
            policy,
            series: Vec::new(),
            index: HashMap::default(),
            totals: Vec::new(),
            live: Vec::new(),
            free: Vec::new(),
            slot_of: HashMap::default(),
            capped: 0,
            generation: 0,
            folded: 0,
        }
    }

    fn intern(&mut self, series: SeriesKey) -> usize {
        if let Some(&i) = self.index.get(&series) {
            return i;
        }
        let i = self.series.len();
        self.series.push(series.clone());
        self.totals.push(Totals::default());
        self.index.insert(series, i);
        i
    }

    /// The series of a connection not seen before, after the cap.
    fn assign(&mut self, key: &ConnKey, stats: &ConnStats, route: Route<'_>) -> usize {
        let mut series = self.policy.series(key, stats);
        let found = route(key, series.direction.unwrap_or(Direction::Outbound));
        if let Some(nat) = &found.nat {
            self.policy.translate(&mut series, nat);
        }
        series.via = found.via;
        if let Some(&i) = self.index.get(&series) {
            return i;
        }
        if self.capped >= self.policy.max_series {
            self.folded += 1;
            return self.intern(SeriesKey::overflow(key.protocol));
        }
        self.capped += 1;
        self.intern(series)
    }

    /// A closed connection's final record.
    pub fn closed(&mut self, record: &ClosedConn, route: Route<'_>) {
        let stats = &record.stats;
        let counters = Counters::of(stats);
        let series = match self.untrack(&(record.key, stats.cookie)) {
            Some(live) => live.series,
            None => self.assign(&record.key, stats, route),
        };
        let totals = &mut self.totals[series];
        totals.counters.add(&counters);
        let completed = stats.flags & FLAG_CONNECT_FAILED == 0;
        if record.key.protocol == IPPROTO_TCP && completed && stats.srtt_us > 0 {
            totals.rtt.observe(f64::from(stats.srtt_us) / 1e6);
        }
    }

    /// The tracked connection of this identity out of its slot.
    fn untrack(&mut self, identity: &Identity) -> Option<Live> {
        let slot = self.slot_of.remove(identity)?;
        self.free.push(slot);
        self.live.get_mut(slot as usize)?.take()
    }

    /// A connection seen for the first time into a free slot; returns the slot.
    fn track(&mut self, live: Live) -> u32 {
        let identity = live.identity;
        let slot = match self.free.pop() {
            Some(slot) => {
                self.live[slot as usize] = Some(live);
                slot
            }
            None => {
                self.live.push(Some(live));
                (self.live.len() - 1) as u32
            }
        };
        self.slot_of.insert(identity, slot);
        slot
    }

    /// The live connections as just read. Each one's `tag` is its slot here as the last
    /// snapshot set it, or [`LiveConn::NO_TAG`]; this sets it, for the reader to give it back
    /// with the next read. Connections gone from the reads wait for their closed record;
    /// after [`PENDING_CLOSE_TTL`] their last values become final.
    pub fn live_snapshot(&mut self, entries: &mut [LiveConn], now: Instant, route: Route<'_>) {
        self.generation += 1;
        let generation = self.generation;
        for entry in entries.iter_mut() {
            let counters = Counters::of(&entry.stats);
            let identity = (entry.key, entry.stats.cookie);
            // The tag is checked, not trusted: a slot freed and taken by another connection
            // since the tag was given holds another identity.
            let tagged = match self.live.get(entry.tag as usize) {
                Some(Some(live)) if live.identity == identity => Some(entry.tag),
                _ => self.slot_of.get(&identity).copied(),
            };
            if let Some(slot) = tagged
                && let Some(Some(live)) = self.live.get_mut(slot as usize)
            {
                live.counters.raise_to(&counters);
                live.generation = generation;
                live.seen = now;
                entry.tag = slot;
                continue;
            }
            let series = self.assign(&entry.key, &entry.stats, route);
            entry.tag = self.track(Live {
                identity,
                series,
                counters,
                generation,
                seen: now,
            });
        }
        // One pass: connections gone from the reads for too long leave their last values
        // in the totals.
        for slot in 0..self.live.len() {
            let Some(live) = &self.live[slot] else { continue };
            if live.generation == generation || now.duration_since(live.seen) < PENDING_CLOSE_TTL {
                continue;
            }
            let identity = live.identity;
            if let Some(live) = self.untrack(&identity) {
                self.totals[live.series].counters.add(&live.counters);
            }
        }
    }

    /// Every series with its counters (closed totals plus live values) and active count.
    pub fn view(&self) -> Vec<SeriesView<'_>> {
        let mut views: Vec<SeriesView<'_>> = self
            .series
            .iter()
            .zip(&self.totals)
            .map(|(key, t)| SeriesView {
                key,
                counters: t.counters,
                active: 0,
                rtt: Some(&t.rtt).filter(|h| h.count > 0),
            })
            .collect();
        for live in self.live.iter().flatten() {
            let view = &mut views[live.series];
            view.counters.add(&live.counters);
            if live.generation == self.generation && view.key.protocol == IPPROTO_TCP {
                view.active += 1;
            }
        }
        views
    }

    /// Connections in the live view (present or waiting for their record).
    pub fn live_len(&self) -> usize {
        self.slot_of.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::connection::series::RemoteMode;
    use crate::ebpf::conn::{AF_INET, DIR_OUTBOUND};

    fn tracker(max_series: usize) -> Tracker {
        Tracker::new(LabelPolicy {
            ephemeral_ports: 32768..=60999,
            remote: RemoteMode::Ip,
            max_series,
        })
    }

    fn conn(sport: u16, dport: u16, sent: u64, cookie: u64) -> (ConnKey, ConnStats) {
        let key = ConnKey {
            sport,
            dport,
            family: AF_INET,
            protocol: IPPROTO_TCP,
            ..ConnKey::default()
        };
        let stats = ConnStats {
            bytes_sent: sent,
            cookie,
            direction: DIR_OUTBOUND,
            flags: FLAG_CONNECTED,
            srtt_us: 80,
            ..ConnStats::default()
        };
        (key, stats)
    }

    fn record(key: ConnKey, stats: ConnStats) -> ClosedConn {
        ClosedConn { key, pad: 0, stats }
    }

    /// A snapshot of these connections, read with no tag (as UDP sockets are).
    fn snapshot(t: &mut Tracker, conns: &[(ConnKey, ConnStats)], now: Instant) {
        let mut entries: Vec<LiveConn> = conns
            .iter()
            .map(|(key, stats)| LiveConn::untracked(*key, *stats))
            .collect();
        t.live_snapshot(&mut entries, now, &no_route);
    }

    fn sent(t: &Tracker) -> u64 {
        t.view().iter().map(|v| v.counters.bytes_sent).sum()
    }

    #[test]
    fn live_then_closed_counts_once_and_never_goes_back() {
        let mut t = tracker(100);
        let now = Instant::now();
        let (k, mut s) = conn(40000, 80, 10, 1);
        snapshot(&mut t, &[(k, s)], now);
        assert_eq!(sent(&t), 10);
        assert_eq!(t.view()[0].active, 1);
        // Gone from the live table, record not here yet: the last value stays.
        snapshot(&mut t, &[], now);
        assert_eq!(sent(&t), 10);
        assert_eq!(t.view()[0].active, 0);
        s.bytes_sent = 25;
        t.closed(&record(k, s), &no_route);
        snapshot(&mut t, &[], now);
        assert_eq!(sent(&t), 25);
        let view = t.view();
        assert_eq!(view.len(), 1);
        assert_eq!(view[0].counters.connects, 1);
        assert_eq!(view[0].rtt.map(|h| h.count), Some(1));
    }

    #[test]
    fn the_same_key_reused_by_a_new_connection_is_another_connection() {
        let mut t = tracker(100);
        let now = Instant::now();
        let (k, s) = conn(40000, 80, 10, 1);
        t.closed(&record(k, s), &no_route);
        let (_, s2) = conn(40000, 80, 7, 2);
        snapshot(&mut t, &[(k, s2)], now);
        assert_eq!(sent(&t), 17);
        assert_eq!(t.view()[0].counters.connects, 2);
    }

    #[test]
    fn a_record_that_never_comes_leaves_the_last_values_as_final() {
        let mut t = tracker(100);
        let start = Instant::now();
        let (k, s) = conn(40000, 80, 10, 1);
        snapshot(&mut t, &[(k, s)], start);
        snapshot(&mut t, &[], start + PENDING_CLOSE_TTL);
        assert_eq!(t.live_len(), 0);
        assert_eq!(sent(&t), 10);
    }

    /// Bytes sent per remote port.
    fn sent_by_port(t: &Tracker) -> Vec<(Option<u16>, u64)> {
        let mut v: Vec<_> = t.view().iter().map(|v| (v.key.port, v.counters.bytes_sent)).collect();
        v.sort();
        v
    }

    #[test]
    fn tags_find_connections_and_a_wrong_tag_is_checked_not_trusted() {
        let mut t = tracker(100);
        let now = Instant::now();
        let (ka, sa) = conn(40000, 81, 10, 1);
        let (kb, sb) = conn(40001, 82, 20, 2);
        let mut reads = vec![LiveConn::untracked(ka, sa), LiveConn::untracked(kb, sb)];
        t.live_snapshot(&mut reads, now, &no_route);
        let tags: Vec<u32> = reads.iter().map(|r| r.tag).collect();
        assert_eq!(tags, [0, 1], "each connection got its slot");
        // Given back with their tags: the same connections, nothing new.
        reads[0].stats.bytes_sent = 15;
        t.live_snapshot(&mut reads, now, &no_route);
        assert_eq!(t.live_len(), 2);
        assert_eq!(sent_by_port(&t), [(Some(81), 15), (Some(82), 20)]);
        // Tags swapped (as a slot freed and taken by another connection would look): each is
        // found by its identity all the same, and its tag corrected.
        reads.swap(0, 1);
        reads[0].tag = 0;
        reads[1].tag = 1;
        reads[0].stats.bytes_sent = 30;
        t.live_snapshot(&mut reads, now, &no_route);
        assert_eq!(t.live_len(), 2);
        assert_eq!(sent_by_port(&t), [(Some(81), 15), (Some(82), 30)]);
        assert_eq!((reads[0].tag, reads[1].tag), (1, 0));
        // A's close frees its slot; C takes it, and A's old tag given with C finds C's own.
        t.closed(&record(ka, sa), &no_route);
        let (kc, sc) = conn(40002, 83, 5, 3);
        let mut reads = vec![
            reads[0],
            LiveConn {
                tag: 0,
                ..LiveConn::untracked(kc, sc)
            },
        ];
        t.live_snapshot(&mut reads, now, &no_route);
        assert_eq!(reads[1].tag, 0, "C took A's freed slot");
        assert_eq!(t.live_len(), 2);
        assert_eq!(sent_by_port(&t), [(Some(81), 10), (Some(82), 30), (Some(83), 5)]);
    }

    #[test]
    fn series_beyond_the_cap_fold_into_one_overflow_series() {
        let mut t = tracker(2);
        for port in [81, 82, 83, 84] {
            let (k, s) = conn(40000, port, 5, u64::from(port));
            t.closed(&record(k, s), &no_route);
        }
        assert_eq!(t.folded, 2);
        let view = t.view();
        assert_eq!(view.len(), 3);
        let overflow = view
            .iter()
            .find(|v| v.key.remote == "overflow")
            .expect("overflow series");
        assert_eq!(overflow.counters.bytes_sent, 10);
        assert_eq!(sent(&t), 20);
    }
}
