//! Parsers for the procfs and sysfs files the container figures need beside the cgroups':
//! a process's `net/dev`, `/proc/meminfo` and a block device's `uevent`.

use super::{ParseError, bad, number};

/// Interfaces cAdvisor leaves out of container network stats.
pub const IGNORED_INTERFACE_PREFIXES: [&str; 4] = ["lo", "veth", "docker", "nerdctl"];

/// One interface of `/proc/<pid>/net/dev`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

/// `/proc/<pid>/net/dev`: two header lines, then `name: 8 receive and 8 transmit counters`.
pub fn net_dev(text: &str) -> Result<Vec<Interface>, ParseError> {
    let mut interfaces = Vec::new();
    for line in text.lines().skip(2).filter(|l| !l.trim().is_empty()) {
        let (name, counters) = line
            .split_once(':')
            .ok_or_else(|| bad(format!("expected \"name: counters\", got {line:?}")))?;
        let values = counters
            .split_ascii_whitespace()
            .map(|v| number(v, "counter"))
            .collect::<Result<Vec<u64>, _>>()?;
        if values.len() != 16 {
            return Err(bad(format!("expected 16 counters, got {} in {line:?}", values.len())));
        }
        interfaces.push(Interface {
            name: name.trim().to_owned(),
            rx_bytes: values[0],
            rx_packets: values[1],
            rx_errors: values[2],
            rx_dropped: values[3],
            tx_bytes: values[8],
            tx_packets: values[9],
            tx_errors: values[10],
            tx_dropped: values[11],
        });
    }
    Ok(interfaces)
}

/// What the root cgroup's figures need of `/proc/meminfo`, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Meminfo {
    pub mem_total: u64,
    /// `None` when the file has no such line.
    pub swap_total: Option<u64>,
    pub swap_free: Option<u64>,
}

impl Meminfo {
    /// Swap in use, when the file says.
    pub fn swap_used(&self) -> Option<u64> {
        Some(self.swap_total?.saturating_sub(self.swap_free?))
    }
}

/// `/proc/meminfo`: `Key:   value kB` lines, of which `MemTotal` must be there.
pub fn meminfo(text: &str) -> Result<Meminfo, ParseError> {
    let (mut total, mut swap_total, mut swap_free) = (None, None, None);
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let slot = match key {
            "MemTotal" => &mut total,
            "SwapTotal" => &mut swap_total,
            "SwapFree" => &mut swap_free,
            _ => continue,
        };
        let kib = value.trim().strip_suffix(" kB").unwrap_or(value.trim());
        *slot = Some(number(kib.trim(), key)?.saturating_mul(1024));
    }
    Ok(Meminfo {
        mem_total: total.ok_or_else(|| bad("meminfo lacks MemTotal"))?,
        swap_total,
        swap_free,
    })
}

/// `DEVNAME=` of a `/sys/dev/block/MAJ:MIN/uevent` file.
pub fn uevent_devname(text: &str) -> Option<&str> {
    text.lines()
        .find_map(|l| l.strip_prefix("DEVNAME="))
        .filter(|n| !n.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_dev_file() {
        let text = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo: 2300660    9397    0    0    0     0          0         0  2300660    9397    0    0    0     0       0          0\n  eth0: 128945791    5635    1    2    0     0          0         0   406485    3985    3    4    0     0       0          0\n";
        let interfaces = net_dev(text).expect("parses");
        assert_eq!(interfaces.len(), 2);
        assert_eq!(
            interfaces[1],
            Interface {
                name: "eth0".into(),
                rx_bytes: 128_945_791,
                rx_packets: 5635,
                rx_errors: 1,
                rx_dropped: 2,
                tx_bytes: 406_485,
                tx_packets: 3985,
                tx_errors: 3,
                tx_dropped: 4
            }
        );
        let header = "h1\nh2\n";
        assert!(net_dev(&format!("{header}eth0 1 2 3\n")).is_err());
        assert!(net_dev(&format!("{header}eth0: 1 2 3\n")).is_err());
        assert!(net_dev(&format!("{header}eth0: {}\n", ["x"; 16].join(" "))).is_err());
    }

    #[test]
    fn meminfo_file() {
        let text = "MemTotal:        8039724 kB\nMemFree:  100 kB\nSwapTotal:       2097148 kB\nSwapFree:        2000000 kB\nHugePages_Total:       0\n";
        assert_eq!(
            meminfo(text),
            Ok(Meminfo {
                mem_total: 8_039_724 * 1024,
                swap_total: Some(2_097_148 * 1024),
                swap_free: Some(2_000_000 * 1024),
            })
        );
        assert_eq!(meminfo(text).map(|m| m.swap_used()), Ok(Some(97_148 * 1024)));
        assert_eq!(meminfo("MemTotal: 1 kB\n").map(|m| m.swap_used()), Ok(None));
        assert!(meminfo("MemFree: 1 kB\n").is_err());
        assert!(meminfo("MemTotal: x kB\nSwapTotal: 0 kB\nSwapFree: 0 kB\n").is_err());
    }

    #[test]
    fn uevent() {
        assert_eq!(
            uevent_devname("MAJOR=253\nMINOR=0\nDEVNAME=zram0\nDEVTYPE=disk\n"),
            Some("zram0")
        );
        assert_eq!(uevent_devname("MAJOR=253\n"), None);
    }
}
