//! Pure parsers for the cgroup (v1 and v2) and procfs file formats sonde reads. They take the
//! file's text and never touch the filesystem; every malformed line is an error, never a
//! silent zero.

/// Why a file's text could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

fn bad(what: impl Into<String>) -> ParseError {
    ParseError(what.into())
}

fn number(text: &str, context: &str) -> Result<u64, ParseError> {
    text.parse::<u64>()
        .map_err(|_| bad(format!("{context}: {text:?} is not a non-negative integer")))
}

mod ordered;
mod procfs;
mod scan;

use scan::{leading_u64, skip_decimal, to_space_or_control};

pub use ordered::{KeyOrder, flat_keyed_wanted};
pub use procfs::{IGNORED_INTERFACE_PREFIXES, Interface, Meminfo, meminfo, net_dev, uevent_devname};

/// Above this a v1 memory limit means "no limit" (the kernel writes PAGE_COUNTER_MAX pages).
pub const UNLIMITED_THRESHOLD: u64 = 1 << 62;

/// A file holding one non-negative integer (`memory.usage_in_bytes`, `pids.current`, …).
pub fn single_u64(text: &str) -> Result<u64, ParseError> {
    number(text.trim(), "value")
}

/// A v1 limit: a huge value means unlimited (`None`).
pub fn v1_limit(text: &str) -> Result<Option<u64>, ParseError> {
    single_u64(text).map(|v| (v < UNLIMITED_THRESHOLD).then_some(v))
}

/// `cpu.cfs_quota_us`: `-1` means no quota.
pub fn v1_cfs_quota(text: &str) -> Result<Option<u64>, ParseError> {
    match text.trim() {
        "-1" => Ok(None),
        other => number(other, "quota").map(Some),
    }
}

/// A v2 limit: `max` means unlimited (`None`).
pub fn v2_max(text: &str) -> Result<Option<u64>, ParseError> {
    match text.trim() {
        "max" => Ok(None),
        other => number(other, "limit").map(|v| (v < UNLIMITED_THRESHOLD).then_some(v)),
    }
}

/// `pids.max`, the same in both versions: `max` or a number.
pub fn pids_max(text: &str) -> Result<Option<u64>, ParseError> {
    match text.trim() {
        "max" => Ok(None),
        other => number(other, "pids.max").map(Some),
    }
}

/// v2 `cpu.max`: `$QUOTA $PERIOD`, the quota being `max` when unset.
pub fn v2_cpu_max(text: &str) -> Result<(Option<u64>, u64), ParseError> {
    let mut fields = text.split_whitespace();
    let (Some(quota), Some(period), None) = (fields.next(), fields.next(), fields.next()) else {
        return Err(bad(format!("expected \"$QUOTA $PERIOD\", got {:?}", text.trim())));
    };
    let quota = match quota {
        "max" => None,
        q => Some(number(q, "quota")?),
    };
    Ok((quota, number(period, "period")?))
}

/// v2 `cpu.weight` (1..=10000) converted to v1 shares as the kernel and runc do.
pub fn v2_weight_to_shares(text: &str) -> Result<u64, ParseError> {
    let weight = single_u64(text)?;
    if !(1..=10_000).contains(&weight) {
        return Err(bad(format!("cpu.weight {weight} is outside 1..=10000")));
    }
    Ok(2 + ((weight - 1) * 262_142) / 9_999)
}

/// A flat-keyed file (`cpu.stat`, `memory.stat`, `memory.events`, `cpuacct.stat`,
/// `memory.oom_control`): one `key value` pair per line; calls `f` for each.
pub fn flat_keyed(text: &str, mut f: impl FnMut(&str, u64)) -> Result<(), ParseError> {
    let bytes = text.as_bytes();
    let mut at = 0;
    while at < bytes.len() {
        // The kernel's own form, `key value\n` with one space and decimal digits, read in
        // one pass over the bytes (memory.stat has ~70 lines, read per container); any
        // other line goes to the general reading below.
        let start = at;
        at = to_space_or_control(bytes, at);
        let key_end = at;
        if key_end > start
            && bytes.get(at) == Some(&b' ')
            && let Some((value, rest)) = leading_u64(&bytes[at + 1..])
            && matches!(rest.first(), None | Some(b'\n'))
        {
            // Both ends are ASCII bytes, so `start..key_end` is a str boundary.
            f(&text[start..key_end], value);
            at = bytes.len() - rest.len() + 1;
            continue;
        }
        let end = memchr::memchr(b'\n', &bytes[start..]).map_or(bytes.len(), |i| start + i);
        at = end + 1;
        // As `str::lines`: a `\r` goes with the `\n` after it, not alone at the end.
        let line = &text[start..end];
        let line = match end < bytes.len() {
            true => line.strip_suffix('\r').unwrap_or(line),
            false => line,
        };
        if line.is_empty() {
            continue;
        }
        let mut fields = line.split_ascii_whitespace();
        let (Some(key), Some(value), None) = (fields.next(), fields.next(), fields.next()) else {
            return Err(bad(format!("expected \"key value\", got {line:?}")));
        };
        f(key, number(value, key)?);
    }
    Ok(())
}

/// One key of a flat-keyed file (`oom_kill` of `memory.events`), `None` when the kernel does
/// not write it; every line is still checked.
pub fn flat_keyed_value(text: &str, wanted: &str) -> Result<Option<u64>, ParseError> {
    let mut found = None;
    flat_keyed(text, |key, value| {
        if key == wanted {
            found = Some(value);
        }
    })?;
    Ok(found)
}

/// Per-device I/O counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceIo {
    pub major: u64,
    pub minor: u64,
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub reads: u64,
    pub writes: u64,
    /// Bytes by operation, what cAdvisor's `container_blkio_device_usage_total` reports:
    /// every operation of v1's bytes file; on v2 only Read and Write, the only `io.stat`
    /// keys runc's library (cAdvisor's) maps to bytes (it skips `dbytes`).
    pub bytes_by_operation: BlkioOperations,
    /// v2 `io.stat`'s `cost.*` keys (µs), written where the `blk-iocost` controller is on for
    /// the device; runc's library (cAdvisor's) maps them to its IOCost tables.
    pub cost: IoCost,
}

/// The iocost controller's per-cgroup times for a device, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoCost {
    pub usage_us: Option<u64>,
    pub wait_us: Option<u64>,
    pub indebt_us: Option<u64>,
    pub indelay_us: Option<u64>,
}

/// The operations of a v1 blkio file, as the kernel (and cAdvisor's `operation` label)
/// spells them, in name order so a device's series come out sorted.
pub const BLKIO_OPERATIONS: [&str; 6] = ["Async", "Discard", "Read", "Sync", "Total", "Write"];

/// One device's figure per blkio operation, by index in [`BLKIO_OPERATIONS`]; `None` for
/// an operation the file has no line for (older kernels write no Discard).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlkioOperations(pub [Option<u64>; BLKIO_OPERATIONS.len()]);

impl BlkioOperations {
    pub fn get(&self, operation: &str) -> Option<u64> {
        let index = BLKIO_OPERATIONS.iter().position(|o| *o == operation)?;
        self.0[index]
    }

    /// Sets an operation's figure; an operation the kernel does not write is an error.
    pub fn set(&mut self, operation: &str, value: u64) -> Result<(), ParseError> {
        let index = BLKIO_OPERATIONS
            .iter()
            .position(|o| *o == operation)
            .ok_or_else(|| bad(format!("unknown blkio operation {operation:?}")))?;
        self.0[index] = Some(value);
        Ok(())
    }

    /// The operations present, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        BLKIO_OPERATIONS
            .iter()
            .zip(self.0)
            .filter_map(|(operation, value)| Some((*operation, value?)))
    }
}

fn device_number(text: &str) -> Result<(u64, u64), ParseError> {
    let (major, minor) = text
        .split_once(':')
        .ok_or_else(|| bad(format!("expected major:minor, got {text:?}")))?;
    Ok((number(major, "major")?, number(minor, "minor")?))
}

/// One device's lines in a v1 blkio file (bytes or operations, by file).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadWrite {
    pub major: u64,
    pub minor: u64,
    pub operations: BlkioOperations,
}

impl ReadWrite {
    pub fn read(&self) -> u64 {
        self.operations.get("Read").unwrap_or(0)
    }

    pub fn write(&self) -> u64 {
        self.operations.get("Write").unwrap_or(0)
    }
}

/// v1 `blkio.throttle.io_service_bytes_recursive` or `…io_serviced_recursive`: lines
/// `MAJ:MIN Op value` and a final `Total value`.
pub fn v1_blkio(text: &str) -> Result<Vec<ReadWrite>, ParseError> {
    let mut devices: Vec<ReadWrite> = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        // Four fields looked at, none collected: a Vec per line was an allocation for each
        // of a device's five operations, in each of two files, for every container.
        let mut fields = line.split_ascii_whitespace();
        match [fields.next(), fields.next(), fields.next(), fields.next()] {
            [Some("Total"), Some(value), None, None] => {
                number(value, "Total")?;
            }
            [Some(device), Some(op), Some(value), None] => {
                let value = number(value, op)?;
                let (major, minor) = device_number(device)?;
                let index = match devices.iter().position(|d| d.major == major && d.minor == minor) {
                    Some(i) => i,
                    None => {
                        devices.push(ReadWrite {
                            major,
                            minor,
                            ..ReadWrite::default()
                        });
                        devices.len() - 1
                    }
                };
                devices[index].operations.set(op, value)?;
            }
            _ => return Err(bad(format!("expected \"MAJ:MIN Op value\", got {line:?}"))),
        }
    }
    Ok(devices)
}

/// v2 `io.stat`: `MAJ:MIN rbytes=… wbytes=… rios=… wios=… dbytes=… dios=…` per line; keys
/// sonde does not use are checked for shape and skipped.
pub fn v2_io_stat(text: &str) -> Result<Vec<DeviceIo>, ParseError> {
    let mut devices = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let mut fields = line.split_ascii_whitespace();
        let device = device_number(fields.next().unwrap_or_default())?;
        let mut io = DeviceIo {
            major: device.0,
            minor: device.1,
            ..DeviceIo::default()
        };
        for field in fields {
            let (key, value) = field
                .split_once('=')
                .ok_or_else(|| bad(format!("expected key=value, got {field:?}")))?;
            // Only the keys read are numbers to parse: others may not be integers
            // (blk-iocost's `cost.vrate=100.00`), and runc's library skips them too.
            if !matches!(
                key,
                "rbytes" | "wbytes" | "rios" | "wios" | "cost.usage" | "cost.wait" | "cost.indebt" | "cost.indelay"
            ) {
                continue;
            }
            let value = number(value, key)?;
            match key {
                "rbytes" => {
                    io.read_bytes = value;
                    io.bytes_by_operation.set("Read", value)?;
                }
                "wbytes" => {
                    io.write_bytes = value;
                    io.bytes_by_operation.set("Write", value)?;
                }
                "rios" => io.reads = value,
                "wios" => io.writes = value,
                "cost.usage" => io.cost.usage_us = Some(value),
                "cost.wait" => io.cost.wait_us = Some(value),
                "cost.indebt" => io.cost.indebt_us = Some(value),
                "cost.indelay" => io.cost.indelay_us = Some(value),
                _ => {}
            }
        }
        devices.push(io);
    }
    Ok(devices)
}

/// Totals of a PSI file (`cpu.pressure`, …), in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pressure {
    /// Time some tasks were stalled ("waiting").
    pub some_us: u64,
    /// Time all tasks were stalled ("stalled"); kernels before 5.13 have no `full` for cpu.
    pub full_us: u64,
}

/// A PSI file: `some avg10=… avg60=… avg300=… total=…` and optionally a `full …` line.
pub fn pressure(text: &str) -> Result<Pressure, ParseError> {
    // Three of these per container at every scrape: the kernel's own form is read in one
    // pass over the bytes; anything else goes to the general reading, which names the fault.
    match pressure_kernel_form(text.as_bytes()) {
        Some(pressure) => Ok(pressure),
        None => pressure_general(text),
    }
}

/// A `some` line and optionally a `full` line exactly as the kernel writes them
/// (`some avg10=%lu.%02lu avg60=… avg300=… total=%llu\n`), or `None` for anything else.
fn pressure_kernel_form(mut rest: &[u8]) -> Option<Pressure> {
    let mut result = Pressure::default();
    let mut lines = 0;
    while !rest.is_empty() {
        let (kind, mut at) = rest.split_at_checked(5)?;
        for key in [&b"avg10="[..], b" avg60=", b" avg300="] {
            at = skip_decimal(at.strip_prefix(key)?)?;
        }
        let (total, after) = leading_u64(at.strip_prefix(b" total=")?)?;
        rest = after.strip_prefix(b"\n")?;
        match (kind, lines) {
            (b"some ", 0) => result.some_us = total,
            (b"full ", 1) => result.full_us = total,
            _ => return None,
        }
        lines += 1;
    }
    (lines > 0).then_some(result)
}

fn pressure_general(text: &str) -> Result<Pressure, ParseError> {
    let mut result = Pressure::default();
    let mut saw_some = false;
    for line in text.lines().filter(|l| !l.is_empty()) {
        let mut fields = line.split_ascii_whitespace();
        let kind = fields.next().unwrap_or_default();
        let mut total = None;
        for field in fields {
            let (key, value) = field
                .split_once('=')
                .ok_or_else(|| bad(format!("expected key=value, got {field:?}")))?;
            match key {
                "total" => total = Some(number(value, "total")?),
                "avg10" | "avg60" | "avg300" => {
                    // The kernel writes `%lu.%02lu`, a number without parsing it as one.
                    if !is_decimal(value) {
                        value
                            .parse::<f64>()
                            .map_err(|_| bad(format!("{key}: {value:?} is not a number")))?;
                    }
                }
                _ => return Err(bad(format!("unknown PSI field {key:?}"))),
            }
        }
        let total = total.ok_or_else(|| bad(format!("no total in {line:?}")))?;
        match kind {
            "some" => {
                result.some_us = total;
                saw_some = true;
            }
            "full" => result.full_us = total,
            _ => return Err(bad(format!("unknown PSI line {line:?}"))),
        }
    }
    if !saw_some {
        return Err(bad("no \"some\" line"));
    }
    Ok(result)
}

/// Digits, a point, digits: a number (what `f64` parsing would accept, without its cost).
fn is_decimal(text: &str) -> bool {
    text.split_once('.').is_some_and(|(whole, fraction)| {
        !whole.is_empty()
            && !fraction.is_empty()
            && whole.bytes().all(|b| b.is_ascii_digit())
            && fraction.bytes().all(|b| b.is_ascii_digit())
    })
}

/// `cgroup.procs`: one PID per line. Returns the count and the first PID.
pub fn procs(text: &str) -> Result<(u64, Option<u32>), ParseError> {
    let mut count = 0;
    let mut first = None;
    for line in text.lines().filter(|l| !l.is_empty()) {
        let pid = line
            .trim()
            .parse::<u32>()
            .map_err(|_| bad(format!("{line:?} is not a PID")))?;
        first.get_or_insert(pid);
        count += 1;
    }
    Ok((count, first))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_values_and_limits() {
        assert_eq!(single_u64("123456\n"), Ok(123456));
        assert!(single_u64("").is_err());
        assert!(single_u64("-1\n").is_err());
        assert!(single_u64("12 34\n").is_err());
        assert_eq!(v1_limit("9223372036854771712\n"), Ok(None));
        assert_eq!(v1_limit("268435456\n"), Ok(Some(268_435_456)));
        assert_eq!(v1_cfs_quota("-1\n"), Ok(None));
        assert_eq!(v1_cfs_quota("20000\n"), Ok(Some(20_000)));
        assert!(v1_cfs_quota("-2\n").is_err());
        assert_eq!(v2_max("max\n"), Ok(None));
        assert_eq!(v2_max("1073741824\n"), Ok(Some(1 << 30)));
        assert_eq!(v2_max("0\n"), Ok(Some(0)));
        assert!(v2_max("unlimited\n").is_err());
        assert_eq!(pids_max("max\n"), Ok(None));
        assert_eq!(pids_max("4096\n"), Ok(Some(4096)));
    }

    #[test]
    fn cpu_max_and_weight() {
        assert_eq!(v2_cpu_max("max 100000\n"), Ok((None, 100_000)));
        assert_eq!(v2_cpu_max("50000 100000\n"), Ok((Some(50_000), 100_000)));
        // A zero quota is a (degenerate) quota, not "unset".
        assert_eq!(v2_cpu_max("0 100000\n"), Ok((Some(0), 100_000)));
        for bad in ["", "max", "max 100000 1", "x 100000"] {
            assert!(v2_cpu_max(bad).is_err(), "{bad:?}");
        }
        assert_eq!(v2_weight_to_shares("100\n"), Ok(2 + (99 * 262_142) / 9_999));
        assert_eq!(v2_weight_to_shares("1\n"), Ok(2));
        assert_eq!(v2_weight_to_shares("10000\n"), Ok(262_144));
        assert!(v2_weight_to_shares("0\n").is_err());
        assert!(v2_weight_to_shares("10001\n").is_err());
    }

    /// The one-pass reading gives what the general one (every line split on whitespace)
    /// gives, figures and failures, on lines mixing the kernel's form and anything else.
    #[test]
    fn flat_keyed_reads_as_a_split_of_every_line_does() {
        fn general(text: &str) -> Result<Vec<(String, u64)>, ()> {
            let mut out = Vec::new();
            for line in text.lines().filter(|l| !l.is_empty()) {
                let fields: Vec<&str> = line.split_ascii_whitespace().collect();
                let [key, value] = fields[..] else { return Err(()) };
                out.push((key.to_owned(), value.parse::<u64>().map_err(|_| ())?));
            }
            Ok(out)
        }
        let keys = ["a", "bc", "x9", "é", "", " a"];
        let gaps = [" ", " ", "  ", "\t", ""];
        let values = [
            "0",
            "7",
            "42",
            "18446744073709551615",
            "18446744073709551616",
            "+3",
            "1x",
            " ",
            "",
        ];
        let ends = ["\n", "\n", "\r\n", "\r", "", "\n\n"];
        let mut seed: u64 = 0x5eed;
        let mut next = |n: usize| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) as usize % n
        };
        let (mut valid, mut refused) = (0, 0);
        for _ in 0..20_000 {
            let mut text = String::new();
            for _ in 0..next(5) + 1 {
                for part in [&keys[..], &gaps, &values, &ends] {
                    text.push_str(part[next(part.len())]);
                }
            }
            let mut ours = Vec::new();
            let result = flat_keyed(&text, |k, v| ours.push((k.to_owned(), v)));
            match general(&text) {
                Ok(want) => {
                    valid += usize::from(!want.is_empty());
                    assert_eq!((result.is_ok(), &ours), (true, &want), "{text:?}");
                }
                Err(()) => {
                    refused += 1;
                    assert!(result.is_err(), "{text:?} read as {ours:?}");
                }
            }
        }
        assert!(valid > 1000 && refused > 1000, "{valid} read, {refused} refused");
    }

    #[test]
    fn flat_keyed_files() {
        let v2_cpu_stat = "usage_usec 2000000\nuser_usec 1500000\nsystem_usec 500000\nnr_periods 10\nnr_throttled 3\nthrottled_usec 12345\nnr_bursts 0\nburst_usec 0\n";
        let mut seen = Vec::new();
        flat_keyed(v2_cpu_stat, |k, v| seen.push((k.to_owned(), v))).expect("parses");
        assert_eq!(seen.len(), 8);
        assert_eq!(seen[5], ("throttled_usec".to_owned(), 12345));
        for bad in [
            "usage_usec\n",
            "usage_usec 1 2\n",
            "usage_usec -5\n",
            "usage_usec 1.5\n",
        ] {
            assert!(flat_keyed(bad, |_, _| {}).is_err(), "{bad:?}");
        }
        assert!(flat_keyed("", |_, _| panic!("no keys")).is_ok());
        // Outside the kernel's one-space decimal form, the general reading decides, as ever.
        let mut seen = Vec::new();
        let odd = "a  1\nb\t2\nc +3\nd 18446744073709551615\ne 0018\n f 4\ng 5 \n\n\r\nh 6\r\ni 7";
        flat_keyed(odd, |k, v| seen.push((k.to_owned(), v))).expect("parses");
        let want = [
            ("a", 1),
            ("b", 2),
            ("c", 3),
            ("d", u64::MAX),
            ("e", 18),
            ("f", 4),
            ("g", 5),
            ("h", 6),
            ("i", 7),
        ];
        assert_eq!(seen, want.map(|(k, v)| (k.to_owned(), v)));
        for bad in ["d 18446744073709551616\n", "a 1\rb 2\n", "a 1x\n", "a 1\n\r"] {
            assert!(flat_keyed(bad, |_, _| {}).is_err(), "{bad:?}");
        }
        let events = "low 0\nhigh 0\nmax 2\noom 1\noom_kill 1\n";
        assert_eq!(flat_keyed_value(events, "oom_kill"), Ok(Some(1)));
        assert_eq!(
            flat_keyed_value("oom_kill_disable 0\nunder_oom 0\n", "oom_kill"),
            Ok(None)
        );
        assert!(flat_keyed_value("oom_kill x\n", "oom_kill").is_err());
    }

    #[test]
    fn v1_blkio_files() {
        // 253:1 as a kernel before Linux 4.19 writes it: no Discard line.
        let bytes = "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 10240\n8:0 Async 2560\n8:0 Discard 512\n8:0 Total 12800\n253:1 Read 512\n253:1 Write 0\n253:1 Sync 512\n253:1 Async 0\n253:1 Total 512\nTotal 13312\n";
        let devices = v1_blkio(bytes).expect("parses");
        assert_eq!(
            devices,
            vec![
                ReadWrite {
                    major: 8,
                    minor: 0,
                    operations: BlkioOperations([
                        Some(2560),
                        Some(512),
                        Some(4096),
                        Some(10240),
                        Some(12800),
                        Some(8192)
                    ]),
                },
                ReadWrite {
                    major: 253,
                    minor: 1,
                    operations: BlkioOperations([Some(0), None, Some(512), Some(512), Some(512), Some(0)]),
                },
            ]
        );
        assert_eq!((devices[0].read(), devices[0].write()), (4096, 8192));
        assert_eq!(
            devices[1].operations.iter().collect::<Vec<_>>(),
            [("Async", 0), ("Read", 512), ("Sync", 512), ("Total", 512), ("Write", 0)]
        );
        assert_eq!(v1_blkio("Total 0\n"), Ok(vec![]));
        for bad in [
            "8:0 Read\n",
            "8-0 Read 1\n",
            "8:0 Peek 1\n",
            "Total x\n",
            "8:0 Read 1 2\n",
            "Total\n",
            "Total 1 2\n",
        ] {
            assert!(v1_blkio(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn v2_io_stat_file() {
        let text = "259:0 rbytes=1048576 wbytes=2097152 rios=16 wios=32 dbytes=4096 dios=1\n8:16 rbytes=1 wbytes=2 rios=3 wios=4\n";
        let devices = v2_io_stat(text).expect("parses");
        assert_eq!(
            devices[0],
            DeviceIo {
                major: 259,
                minor: 0,
                read_bytes: 1_048_576,
                write_bytes: 2_097_152,
                reads: 16,
                writes: 32,
                // dbytes is not mapped, as runc's library (cAdvisor's) does not.
                bytes_by_operation: BlkioOperations([None, None, Some(1_048_576), None, None, Some(2_097_152)]),
                cost: IoCost::default(),
            }
        );
        assert_eq!(devices[1].writes, 4);
        // With blk-iocost on, the kernel adds its four times (µs) after the counters.
        let costed = v2_io_stat("8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0 cost.vrate=100.00 cost.usage=7000 cost.wait=8000 cost.indebt=9 cost.indelay=10\n")
            .expect("parses");
        assert_eq!(
            costed[0].cost,
            IoCost {
                usage_us: Some(7000),
                wait_us: Some(8000),
                indebt_us: Some(9),
                indelay_us: Some(10)
            }
        );
        assert_eq!(
            devices[1].bytes_by_operation.iter().collect::<Vec<_>>(),
            [("Read", 1), ("Write", 2)]
        );
        assert_eq!(v2_io_stat(""), Ok(vec![]));
        for bad in ["259:0 rbytes\n", "259 rbytes=1\n", "259:0 rbytes=x\n"] {
            assert!(v2_io_stat(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn pressure_files() {
        let cpu = "some avg10=8.95 avg60=18.57 avg300=10.43 total=65520151\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=42\n";
        assert_eq!(
            pressure(cpu),
            Ok(Pressure {
                some_us: 65_520_151,
                full_us: 42
            })
        );
        // Kernels before 5.13 write no "full" line for cpu.
        let some_only = "some avg10=0.00 avg60=0.00 avg300=0.00 total=7\n";
        assert_eq!(pressure(some_only), Ok(Pressure { some_us: 7, full_us: 0 }));
        // The kernel's form takes the one-pass reading, with the general reading's answer.
        for text in [cpu, some_only] {
            assert_eq!(
                pressure_kernel_form(text.as_bytes()).map(Ok),
                Some(pressure_general(text))
            );
        }
        // Other forms take the general reading: a total past 19 digits, no final newline,
        // `full` before `some`.
        let max = "some avg10=0.00 avg60=0.00 avg300=0.00 total=18446744073709551615\n";
        let unterminated = "some avg10=0.00 avg60=0.00 avg300=0.00 total=5";
        let reversed =
            "full avg10=0.00 avg60=0.00 avg300=0.00 total=2\nsome avg10=1.00 avg60=0.00 avg300=0.00 total=3\n";
        for (text, expected) in [(max, (u64::MAX, 0)), (unterminated, (5, 0)), (reversed, (3, 2))] {
            assert_eq!(pressure_kernel_form(text.as_bytes()), None, "{text:?}");
            assert_eq!(
                pressure(text),
                Ok(Pressure {
                    some_us: expected.0,
                    full_us: expected.1
                }),
                "{text:?}"
            );
        }
        for bad in [
            "",
            "full avg10=0.00 avg60=0.00 avg300=0.00 total=1\n",
            "some avg10=0.00 total=x\n",
            "some avg10=zero total=1\n",
            "some avg10=0.00\n",
            "most total=1\n",
        ] {
            assert!(pressure(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn procs_file() {
        assert_eq!(procs("12\n345\n"), Ok((2, Some(12))));
        assert_eq!(procs(""), Ok((0, None)));
        assert!(procs("12\nabc\n").is_err());
    }

    /// Every parser on mangled versions of real files: errors are fine, panics are not.
    #[test]
    fn no_parser_panics_on_mangled_input() {
        let samples = [
            "usage_usec 2000000\nuser_usec 1500000\nnr_periods 10\n",
            "8:0 Read 4096\n8:0 Write 8192\nTotal 12288\n",
            "259:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0\n",
            "some avg10=8.95 avg60=18.57 avg300=10.43 total=65520151\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
            "h1\nh2\n  eth0: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\n",
            "max 100000\n",
            "9223372036854771712\n",
            "12\n345\n",
        ];
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let alphabet = b" \n\t:=-_.,0123456789maxTotalReadsome\xff\x00";
        for round in 0..20_000 {
            let mut bytes = samples[round % samples.len()].as_bytes().to_vec();
            for _ in 0..(next() % 6) {
                let at = (next() as usize) % (bytes.len() + 1);
                match next() % 3 {
                    0 if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    1 => bytes.insert(at, alphabet[(next() as usize) % alphabet.len()]),
                    _ => bytes.truncate(at),
                }
            }
            let text = String::from_utf8_lossy(&bytes);
            let _ = single_u64(&text);
            let _ = v1_limit(&text);
            let _ = v1_cfs_quota(&text);
            let _ = v2_max(&text);
            let _ = pids_max(&text);
            let _ = v2_cpu_max(&text);
            let _ = v2_weight_to_shares(&text);
            let _ = flat_keyed(&text, |_, _| {});
            let _ = v1_blkio(&text);
            let _ = v2_io_stat(&text);
            let _ = pressure(&text);
            if let Some(fast) = pressure_kernel_form(text.as_bytes()) {
                assert_eq!(pressure_general(&text), Ok(fast), "{text:?}");
            }
            let _ = net_dev(&text);
            let _ = procs(&text);
            let _ = uevent_devname(&text);
            let _ = meminfo(&text);
        }
    }
}
