//! `/proc/diskstats`, as cAdvisor reads it for the filesystems it reports: only devices
//! named like `sd*`, `vd*`, `xvd*` (with a partition number or not) and `dm-*` (its
//! `partitionRegex`; an NVMe filesystem finds no line and reads as zeros there too).

use crate::cgroup::parse::ParseError;

/// The first eleven counters of a diskstats line (times in milliseconds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskStats {
    pub major: u64,
    pub minor: u64,
    pub reads_completed: u64,
    pub reads_merged: u64,
    pub sectors_read: u64,
    pub read_time_ms: u64,
    pub writes_completed: u64,
    pub writes_merged: u64,
    pub sectors_written: u64,
    pub write_time_ms: u64,
    pub io_in_progress: u64,
    pub io_time_ms: u64,
    pub weighted_io_time_ms: u64,
}

/// Every line cAdvisor keeps, keyed by `/dev/<name>`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiskStatsTable(Vec<(String, DiskStats)>);

impl DiskStatsTable {
    /// The line of a filesystem: by its device name, else by its device number.
    pub fn find(&self, device: &str, major: u64, minor: u64) -> Option<&DiskStats> {
        self.0
            .iter()
            .find(|(name, _)| name == device)
            .or_else(|| self.0.iter().find(|(_, s)| s.major == major && s.minor == minor))
            .map(|(_, s)| s)
    }
}

/// cAdvisor's `partitionRegex`: `^(?:(?:s|v|xv)d[a-z]+\d*|dm-\d+)$`.
fn kept(name: &str) -> bool {
    if let Some(n) = name.strip_prefix("dm-") {
        return !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit());
    }
    let Some(rest) = ["xvd", "sd", "vd"].iter().find_map(|p| name.strip_prefix(p)) else {
        return false;
    };
    let letters = rest.bytes().take_while(u8::is_ascii_lowercase).count();
    letters > 0 && rest.bytes().skip(letters).all(|b| b.is_ascii_digit())
}

/// Parses `/proc/diskstats`.
pub fn diskstats(text: &str) -> Result<DiskStatsTable, ParseError> {
    let mut table = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let Some(name) = fields.get(2).filter(|n| kept(n)) else {
            continue;
        };
        let bad = || ParseError(format!("diskstats: malformed line {line:?}"));
        if fields.len() < 14 {
            return Err(bad());
        }
        let n = |i: usize| fields[i].parse::<u64>().map_err(|_| bad());
        table.push((
            format!("/dev/{name}"),
            DiskStats {
                major: n(0)?,
                minor: n(1)?,
                reads_completed: n(3)?,
                reads_merged: n(4)?,
                sectors_read: n(5)?,
                read_time_ms: n(6)?,
                writes_completed: n(7)?,
                writes_merged: n(8)?,
                sectors_written: n(9)?,
                write_time_ms: n(10)?,
                io_in_progress: n(11)?,
                io_time_ms: n(12)?,
                weighted_io_time_ms: n(13)?,
            },
        ));
    }
    Ok(DiskStatsTable(table))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cadvisor_keeps() {
        for name in ["sda", "sda1", "vda", "xvdb12", "dm-0"] {
            assert!(kept(name), "{name}");
        }
        for name in ["nvme0n1", "loop0", "zram0", "sd", "dm-", "vda1x", "sr0"] {
            assert!(!kept(name), "{name}");
        }
    }

    #[test]
    fn lines_by_name_or_number() {
        let text = "\
   7       0 loop0 1 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0
 254       0 vda 1851986 38162 71484770 4432673 252255 290081 282197864 1626054 3 200756 6099235 177183 20 180150248 38769 22255 1737
 254       1 vda1 10 1 20 30 40 50 60 70 0 80 90
";
        let table = diskstats(text).expect("parse");
        let vda = table.find("/dev/vda", 0, 0).expect("vda");
        assert_eq!(
            *vda,
            DiskStats {
                major: 254,
                minor: 0,
                reads_completed: 1851986,
                reads_merged: 38162,
                sectors_read: 71484770,
                read_time_ms: 4432673,
                writes_completed: 252255,
                writes_merged: 290081,
                sectors_written: 282197864,
                write_time_ms: 1626054,
                io_in_progress: 3,
                io_time_ms: 200756,
                weighted_io_time_ms: 6099235,
            }
        );
        assert_eq!(table.find("/dev/root", 254, 1).map(|s| s.reads_completed), Some(10));
        assert_eq!(table.find("/dev/loop0", 7, 0), None);
        assert!(diskstats(" 254 0 vda 1 2 3").is_err());
    }
}
