//! The host's filesystems from `mountinfo`, chosen and named as cAdvisor's `processMounts`
//! does: the filesystem types its plugins handle, one entry per mount source (bind mounts
//! of a device count once, the first mount wins), every `tmpfs` mount on its own (named by
//! its mountpoint) and every `overlay` mount on its own (`overlay_<major>-<minor>`).

use crate::cgroup::parse::ParseError;

/// One mount line of `mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub major: u64,
    pub minor: u64,
    /// Unescaped (`\040` is a space).
    pub mountpoint: String,
    pub fs_type: String,
    pub source: String,
}

/// A filesystem cAdvisor reports: `device` is the `device` label of its series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub device: String,
    pub major: u64,
    pub minor: u64,
    pub mountpoint: String,
    pub fs_type: String,
}

/// Parses `/proc/<pid>/mountinfo`.
pub fn mountinfo(text: &str) -> Result<Vec<Mount>, ParseError> {
    text.lines().filter(|l| !l.is_empty()).map(mount_line).collect()
}

fn mount_line(line: &str) -> Result<Mount, ParseError> {
    let bad = || ParseError(format!("mountinfo: malformed line {line:?}"));
    let mut fields = line.split(' ');
    let device = fields.nth(2).ok_or_else(bad)?;
    let (major, minor) = device.split_once(':').ok_or_else(bad)?;
    let mountpoint = fields.nth(1).ok_or_else(bad)?;
    // Optional fields end at a lone "-"; then type and source.
    let mut after = fields.skip_while(|f| *f != "-").skip(1);
    let fs_type = after.next().ok_or_else(bad)?;
    let source = after.next().ok_or_else(bad)?;
    Ok(Mount {
        major: major.parse().map_err(|_| bad())?,
        minor: minor.parse().map_err(|_| bad())?,
        mountpoint: unescape(mountpoint),
        fs_type: fs_type.to_owned(),
        source: unescape(source),
    })
}

/// Undoes the kernel's octal escapes of space, tab, newline and backslash.
fn unescape(field: &str) -> String {
    if !field.contains('\\') {
        return field.to_owned();
    }
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The filesystem types cAdvisor's plugins take (vfs, btrfs, nfs, tmpfs, overlay; zfs needs
/// its library and is not read here).
fn handled(fs_type: &str) -> bool {
    fs_type.starts_with("ext")
        || fs_type.starts_with("nfs")
        || matches!(
            fs_type,
            "xfs"
                | "btrfs"
                | "squashfs"
                | "f2fs"
                | "jfs"
                | "reiserfs"
                | "hfs"
                | "hfsplus"
                | "ntfs"
                | "vfat"
                | "fat"
                | "msdos"
                | "exfat"
                | "udf"
                | "iso9660"
                | "tmpfs"
                | "overlay"
        )
}

/// The filesystems cAdvisor reports, in mount order.
pub fn partitions(mounts: &[Mount]) -> Vec<Partition> {
    let mut out: Vec<Partition> = Vec::new();
    for m in mounts.iter().filter(|m| handled(&m.fs_type)) {
        let device = match m.fs_type.as_str() {
            "tmpfs" => m.mountpoint.clone(),
            "overlay" => format!("{}_{}-{}", m.source, m.major, m.minor),
            _ => m.source.clone(),
        };
        if out.iter().any(|p| p.device == device) {
            continue;
        }
        out.push(Partition {
            device,
            major: m.major,
            minor: m.minor,
            mountpoint: m.mountpoint.clone(),
            fs_type: m.fs_type.clone(),
        });
    }
    out
}

/// The filesystem holding a directory on device `major:minor`, as cAdvisor's
/// `GetDirFsDevice` finds it: the partition with that device number.
pub fn partition_of(partitions: &[Partition], major: u64, minor: u64) -> Option<&Partition> {
    partitions
        .iter()
        .find(|p| p.major == major && p.minor == minor && p.fs_type != "overlay" && p.fs_type != "tmpfs")
        .or_else(|| partitions.iter().find(|p| p.major == major && p.minor == minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard
23 22 0:21 / /proc rw,nosuid shared:5 - proc proc rw
24 22 0:22 / /run rw,nosuid shared:8 - tmpfs tmpfs rw,size=1000k
25 22 254:0 /var/lib/docker /var/lib/docker rw,relatime shared:1 - ext4 /dev/vda rw,discard
26 22 0:50 / /var/lib/docker/overlay2/abc/merged rw,relatime - overlay overlay rw,lowerdir=/a,upperdir=/b
27 22 0:23 / /mnt/with\\040space rw - tmpfs tmpfs rw
28 22 0:24 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
";

    #[test]
    fn mountinfo_lines() {
        let mounts = mountinfo(MOUNTINFO).expect("parse");
        assert_eq!(mounts.len(), 7);
        assert_eq!(
            mounts[3],
            Mount {
                major: 254,
                minor: 0,
                mountpoint: "/var/lib/docker".into(),
                fs_type: "ext4".into(),
                source: "/dev/vda".into()
            }
        );
        assert_eq!(mounts[5].mountpoint, "/mnt/with space");
        assert!(mountinfo("22 1 254:0 /").is_err());
        assert!(mountinfo("22 1 x:0 / / rw - ext4 /dev/vda rw").is_err());
    }

    #[test]
    fn partitions_as_cadvisor_chooses_them() {
        let parts = partitions(&mountinfo(MOUNTINFO).expect("parse"));
        let devices: Vec<&str> = parts.iter().map(|p| p.device.as_str()).collect();
        // The bind mount of /dev/vda counts once; each tmpfs by mountpoint; overlay by number;
        // proc and cgroup are not filesystems cAdvisor reports.
        assert_eq!(devices, ["/dev/vda", "/run", "overlay_0-50", "/mnt/with space"]);
        assert_eq!(parts[0].mountpoint, "/");
        assert_eq!(
            partition_of(&parts, 254, 0).map(|p| p.device.as_str()),
            Some("/dev/vda")
        );
        assert_eq!(partition_of(&parts, 9, 9), None);
    }
}
