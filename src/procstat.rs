//! Leaf: parsers of procfs's `stat` files, shared by the inventory (when a container's
//! process started, when the machine booted) and the exporter's own `process_*` families.

/// `btime` of `/proc/stat`: when the machine booted, in seconds since the epoch.
pub fn btime(stat: &str) -> Option<u64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// The fields of `/proc/<pid>/stat` sonde uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessStat {
    /// User and system CPU, in clock ticks.
    pub cpu_ticks: u64,
    pub threads: u64,
    /// When the process started, in clock ticks since boot.
    pub start_ticks: u64,
    pub virtual_bytes: u64,
    pub resident_pages: u64,
}

/// Reads `/proc/<pid>/stat`: the fields after the command name, which is in parentheses and
/// may itself hold spaces and parentheses (hence the last `)`).
pub fn process_stat(text: &str) -> Option<ProcessStat> {
    let fields: Vec<&str> = text.rsplit_once(')')?.1.split_ascii_whitespace().collect();
    // Numbered from the state (field 3 of proc(5)).
    let field = |i: usize| fields.get(i)?.parse::<u64>().ok();
    Some(ProcessStat {
        // Saturating: the fields come from outside and may be any u64.
        cpu_ticks: field(11)?.saturating_add(field(12)?),
        threads: field(17)?,
        start_ticks: field(19)?,
        virtual_bytes: field(20)?,
        resident_pages: field(21)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_read_after_the_last_parenthesis() {
        // A command name with a space and a parenthesis; values from a real sonde.
        let text = "4242 (so (nde) x) S 1 4242 4242 0 -1 4194560 3620 0 0 0 731 2296 0 0 20 0 6 0 \
                    2815613 1154658304 8150 18446744073709551615 1 1 0 0 0 0 0 4096 17642 0 0 0 17 1 0 0 0 0 0\n";
        assert_eq!(
            process_stat(text),
            Some(ProcessStat {
                cpu_ticks: 731 + 2296,
                threads: 6,
                start_ticks: 2_815_613,
                virtual_bytes: 1_154_658_304,
                resident_pages: 8150,
            })
        );
        assert_eq!(process_stat("4242 (sonde) S 1 2"), None, "too few fields");
        assert_eq!(process_stat("no parenthesis"), None);
        let max = u64::MAX;
        let huge = format!("1 (x) S 1 1 1 0 -1 0 0 0 0 0 {max} {max} 0 0 20 0 1 0 5 6 7");
        assert_eq!(process_stat(&huge).map(|s| s.cpu_ticks), Some(max), "no overflow");
    }

    #[test]
    fn btime_is_the_line_of_its_name() {
        let stat = "cpu  1 2 3 4\nintr 5\nbtime 1796690000\nprocesses 99\n";
        assert_eq!(btime(stat), Some(1_796_690_000));
        assert_eq!(btime("cpu 1 2\n"), None);
        assert_eq!(btime("btime soon\n"), None);
    }
}
