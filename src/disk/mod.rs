//! Filesystems and block devices as cAdvisor sees them for its `container_fs_*` families:
//! the host's mounts ([`mounts`]), `/proc/diskstats` ([`diskstats`]), `statvfs` of a
//! filesystem ([`capacity`]) and the bounded, resumable directory walk that measures a
//! writable layer off the scrape path ([`walk`]).

pub mod diskstats;
pub mod mounts;
pub mod walk;

use std::path::Path;

/// What `statvfs` says of a filesystem, as cAdvisor's `GetVfsStats` reads it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capacity {
    /// `f_blocks · f_frsize`.
    pub bytes: u64,
    /// `f_bfree · f_frsize`.
    pub free: u64,
    pub inodes: u64,
    pub inodes_free: u64,
}

/// `statvfs(path)`.
pub fn capacity(path: &Path) -> std::io::Result<Capacity> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "path holds a NUL byte"))?;
    // SAFETY: statvfs writes only into `stat`, which is a plain struct of integers; the
    // path is NUL-terminated and outlives the call.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let frsize = stat.f_frsize as u64;
    Ok(Capacity {
        bytes: (stat.f_blocks as u64).saturating_mul(frsize),
        free: (stat.f_bfree as u64).saturating_mul(frsize),
        inodes: stat.f_files as u64,
        inodes_free: stat.f_ffree as u64,
    })
}

/// `major:minor` of the device a path lies on (`st_dev`).
pub fn device_of(path: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::symlink_metadata(path)?.dev();
    Ok((libc::major(dev) as u64, libc::minor(dev) as u64))
}

/// `path` as seen under the host's root mounted at `rootfs` (`--path.rootfs`).
pub fn under_root(rootfs: &Path, path: &Path) -> std::path::PathBuf {
    rootfs.join(path.strip_prefix("/").unwrap_or(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statvfs_of_this_filesystem() {
        let c = capacity(Path::new("/")).expect("statvfs /");
        assert!(c.bytes > 0 && c.free <= c.bytes && c.inodes_free <= c.inodes);
        assert!(capacity(Path::new("/no/such/dir")).is_err());
    }

    #[test]
    fn paths_under_the_host_root() {
        assert_eq!(
            under_root(Path::new("/"), Path::new("/var/lib/x")),
            Path::new("/var/lib/x")
        );
        assert_eq!(
            under_root(Path::new("/rootfs"), Path::new("/var/lib/x")),
            Path::new("/rootfs/var/lib/x")
        );
    }
}
