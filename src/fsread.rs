//! Reads of files sonde does not own (cgroupfs, procfs, sysfs, and the same paths under
//! `--path.sysfs`/`--path.procfs`) that can neither block nor grow: a file is opened
//! non-blocking and used only if it is a regular file (the kernel's pseudo-files are; a FIFO,
//! a character device such as `/dev/zero` or a socket in their place is refused at once,
//! where a plain open of a FIFO waits for a writer for ever), and at most [`MAX_FILE_BYTES`]
//! of it is read (a file that holds more is refused, not cut: a cut stats file would give
//! wrong figures).

use std::io::{ErrorKind, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// The most a single pseudo-file may hold. The largest real ones (`memory.stat` of v1,
/// `io.stat` of a host with many disks, `/proc/cpuinfo` of a few hundred CPUs) are tens of
/// kilobytes.
pub const MAX_FILE_BYTES: usize = 1 << 20;

/// Why a file was refused without being read.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("not a regular file (a {0})")]
    NotRegular(&'static str),
    #[error("larger than {MAX_FILE_BYTES} bytes")]
    TooLarge,
}

impl From<Refused> for std::io::Error {
    fn from(refused: Refused) -> Self {
        std::io::Error::new(ErrorKind::InvalidData, refused)
    }
}

/// Opens `path` for reading without blocking, with `extra` open flags (such as
/// `O_NOATIME`), and checks it is a regular file.
pub fn open_regular_with(path: &Path, extra: i32) -> std::io::Result<std::fs::File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | extra)
        .open(path)?;
    check_regular(&file)?;
    Ok(file)
}

/// Opens `path` for reading without blocking and checks it is a regular file.
pub fn open_regular(path: &Path) -> std::io::Result<std::fs::File> {
    open_regular_with(path, 0)
}

/// Refuses a file just opened that is not a regular file (`fstat`, so what was checked is
/// what was opened).
pub fn check_regular(file: &std::fs::File) -> std::io::Result<()> {
    let kind = file.metadata()?.file_type();
    if kind.is_file() {
        return Ok(());
    }
    let name = if kind.is_fifo() {
        "FIFO"
    } else if kind.is_char_device() {
        "character device"
    } else if kind.is_block_device() {
        "block device"
    } else if kind.is_socket() {
        "socket"
    } else if kind.is_dir() {
        "directory"
    } else {
        "special file"
    };
    Err(Refused::NotRegular(name).into())
}

/// Reads an open file from where it stands to its end into `buffer` (grown as needed, never
/// past [`MAX_FILE_BYTES`] and one byte) and returns its length; a file with more than
/// [`MAX_FILE_BYTES`] is refused.
pub fn read_capped(file: &mut std::fs::File, buffer: &mut Vec<u8>) -> std::io::Result<usize> {
    read_with(buffer, |buffer, filled| file.read(&mut buffer[filled..]), End::AtZero)
}

/// When a loop of reads of a pseudo-file has reached its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// At a read that returns 0: any file.
    AtZero,
    /// At a read that leaves room in the buffer: a seq_file of one record (a cgroup's
    /// `memory.stat`, `cpu.stat`), which one read copies whole when it fits. Saves the read
    /// that would return 0.
    Short,
    /// At a read that leaves room in the buffer and returned less than
    /// [`SEQ_RECORDS_ROOM`]: a seq_file of many small records (`cgroup.procs`, one line per
    /// process; `net/dev`, one per interface). One read of such a file stops at the kernel's
    /// own buffer (a page, 4 KiB at least) when the next record does not fit, short of the
    /// end, so only a read well short of a page is known to be the last.
    ShortRecords,
}

/// See [`End::ShortRecords`]: less than a page minus the largest record of such a file (a
/// `net/dev` line: a name and sixteen 20-digit counters, under 400 bytes).
pub const SEQ_RECORDS_ROOM: usize = 2048;

/// The loop of [`read_capped`] over any `read(buffer, offset)`, until `end`.
pub fn read_with(
    buffer: &mut Vec<u8>,
    mut read: impl FnMut(&mut [u8], usize) -> std::io::Result<usize>,
    end: End,
) -> std::io::Result<usize> {
    let mut filled = 0;
    loop {
        if filled == buffer.len() {
            if filled > MAX_FILE_BYTES {
                return Err(Refused::TooLarge.into());
            }
            let grown = (buffer.len() * 2).clamp(8192, MAX_FILE_BYTES + 1);
            buffer.resize(grown, 0);
        }
        match read(buffer, filled) {
            Ok(0) => return Ok(filled),
            Ok(n) => {
                filled += n;
                let short = filled < buffer.len();
                match end {
                    End::Short if short => return Ok(filled),
                    End::ShortRecords if short && n < SEQ_RECORDS_ROOM => return Ok(filled),
                    _ => {}
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// `pread(2)` from `offset` of an open file, by the system call itself rather than glibc's
/// wrapper (which `std`'s `read_at` calls). In a process of several threads glibc's `pread`
/// is a cancellation point, and marks the thread cancellable around the call with two atomic
/// updates; sonde never cancels a thread. A cold scrape of 1,000 cgroups preads 14,000 kept
/// files: by the system call, sonde's CPU per scrape fell 0.4-0.5 ms (0.7-1.0%, two
/// binaries side by side on the same cgroups); in a C reader of the same files, with a second
/// thread, 0.5-0.9 ms of 31. Elsewhere than 64-bit Linux (where the offset would be split
/// over two registers) it is `read_at`.
pub fn pread(file: &std::fs::File, buffer: &mut [u8], offset: u64) -> std::io::Result<usize> {
    #[cfg(all(target_os = "linux", target_pointer_width = "64"))]
    {
        use std::os::fd::AsRawFd;
        let offset = libc::c_long::try_from(offset).map_err(|_| std::io::Error::from(ErrorKind::InvalidInput))?;
        // SAFETY: a descriptor `file` owns, and `buffer.len()` writable bytes at its start;
        // every argument is passed as the `long` the kernel's pread64 takes.
        let n = unsafe {
            libc::syscall(
                libc::SYS_pread64,
                libc::c_long::from(file.as_raw_fd()),
                buffer.as_mut_ptr(),
                buffer.len(),
                offset,
            )
        };
        if n < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
    #[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
    {
        std::os::unix::fs::FileExt::read_at(file, buffer, offset)
    }
}

/// Reads a whole pseudo-file as text: non-blocking, regular files only, capped.
pub fn read_to_string(path: &Path) -> std::io::Result<String> {
    let mut file = open_regular(path)?;
    let mut buffer = Vec::new();
    let len = read_capped(&mut file, &mut buffer)?;
    buffer.truncate(len);
    String::from_utf8(buffer).map_err(|e| std::io::Error::new(ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A seq_file of many records hands out at most its page per read: a read well short
    /// of a page is the end, one near a page is not.
    #[test]
    fn many_record_files_are_read_past_a_full_page() {
        let file: Vec<u8> = (0..3000u32).flat_map(|pid| format!("{pid}\n").into_bytes()).collect();
        let page = |buffer: &mut [u8], offset: usize| {
            let n = (file.len() - offset).min(4000).min(buffer.len() - offset);
            buffer[offset..offset + n].copy_from_slice(&file[offset..offset + n]);
            Ok(n)
        };
        let mut buffer = Vec::new();
        assert_eq!(
            read_with(&mut buffer, page, End::ShortRecords).expect("reads"),
            file.len()
        );
        assert_eq!(&buffer[..file.len()], &file[..]);
        // Taking any short read as the end would stop at the first page.
        assert_eq!(read_with(&mut buffer, page, End::Short).expect("reads"), 4000);
    }

    /// The system call reads what `read_at` reads, from any offset, and fails as it does.
    #[test]
    fn pread_reads_as_read_at_does() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("memory.stat");
        let text: Vec<u8> = (0..5000u32)
            .flat_map(|i| format!("key{i} {i}\n").into_bytes())
            .collect();
        std::fs::write(&path, &text).expect("write");
        let file = std::fs::File::open(&path).expect("open");
        for (offset, len) in [
            (0, 10),
            (0, 100_000),
            (7, 4096),
            (text.len() as u64 - 3, 64),
            (text.len() as u64 + 9, 8),
        ] {
            let (mut ours, mut std) = (vec![0u8; len], vec![0u8; len]);
            let n = pread(&file, &mut ours, offset).expect("pread");
            assert_eq!(n, file.read_at(&mut std, offset).expect("read_at"));
            assert_eq!(ours[..n], std[..n], "at {offset}");
        }
        let write_only = std::fs::OpenOptions::new().write(true).open(&path).expect("open");
        let error = pread(&write_only, &mut [0u8; 8], 0).expect_err("not open for reading");
        assert_eq!(error.raw_os_error(), Some(libc::EBADF));
    }

    #[test]
    fn a_fifo_is_refused_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("memory.current");
        let name = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).expect("path");
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
        let error = read_to_string(&fifo).expect_err("a FIFO is refused");
        assert_eq!(error.to_string(), "not a regular file (a FIFO)");
    }

    #[test]
    fn dev_zero_and_a_symlink_to_it_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let link = dir.path().join("memory.stat");
        std::os::unix::fs::symlink("/dev/zero", &link).expect("symlink");
        for path in [Path::new("/dev/zero"), &link] {
            let error = read_to_string(path).expect_err("a device is refused");
            assert_eq!(error.to_string(), "not a regular file (a character device)");
        }
    }

    #[test]
    fn a_file_over_the_cap_is_refused_and_one_at_it_is_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let at = dir.path().join("at");
        std::fs::write(&at, vec![b'a'; MAX_FILE_BYTES]).expect("write");
        assert_eq!(read_to_string(&at).expect("read").len(), MAX_FILE_BYTES);
        let over = dir.path().join("over");
        std::fs::write(&over, vec![b'a'; MAX_FILE_BYTES + 1]).expect("write");
        let error = read_to_string(&over).expect_err("refused");
        assert_eq!(error.to_string(), "larger than 1048576 bytes");
    }

    #[test]
    fn procfs_and_sysfs_files_are_regular() {
        for path in [
            "/proc/self/stat",
            "/proc/meminfo",
            "/sys/kernel/mm/transparent_hugepage/enabled",
        ] {
            if Path::new(path).exists() {
                assert!(!read_to_string(Path::new(path)).expect(path).is_empty(), "{path}");
            }
        }
    }
}
