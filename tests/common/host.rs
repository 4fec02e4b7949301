//! This machine: its truth (memory, CPUs), its limits, and whether a test may run as root.

use std::process::Command;

/// Raises this process's soft limit on open files to the hard one, for tests and benchmarks
/// that hold more sockets than a default soft limit (1,024) allows (raising the hard one
/// needs CAP_SYS_RESOURCE, which containers often drop); returns the new limit.
pub fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid rlimit pointers; the soft limit only rises to the hard one.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
    limit.rlim_cur
}

/// `MemTotal` of this machine in bytes, and its online logical CPUs as `getconf` says.
pub fn host_truth() -> (f64, f64) {
    let meminfo = std::fs::read_to_string("/proc/meminfo").expect("read /proc/meminfo");
    let kb: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("MemTotal in /proc/meminfo");
    let getconf = Command::new("getconf")
        .arg("_NPROCESSORS_ONLN")
        .output()
        .expect("run getconf");
    let cpus: f64 = String::from_utf8_lossy(&getconf.stdout)
        .trim()
        .parse()
        .expect("getconf prints a number");
    (kb * 1024.0, cpus)
}

/// Whether this test can run as root. Without root it is skipped locally, but fails under
/// `CI=true`, where every test must run.
pub fn root_or_skip(test: &str) -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u32>().ok());
    if euid == Some(0) {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test} needs root, and under CI=true it must run: run the tests as root");
    }
    eprintln!("skipping {test}: it needs root");
    false
}

/// `(f_blocks·f_frsize, f_bfree·f_frsize, f_files, f_ffree)` of the filesystem holding `dir`.
pub fn statvfs(dir: &std::path::Path) -> (u64, u64, u64, u64) {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).expect("path");
    // SAFETY: statvfs fills a plain struct; the path is NUL-terminated.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    assert_eq!(
        unsafe { libc::statvfs(path.as_ptr(), &mut s) },
        0,
        "statvfs {}",
        dir.display()
    );
    let frsize = s.f_frsize as u64;
    (
        s.f_blocks as u64 * frsize,
        s.f_bfree as u64 * frsize,
        s.f_files as u64,
        s.f_ffree as u64,
    )
}

/// `du` as cAdvisor counts it, written apart from sonde's: `(bytes, entries)` of every entry
/// under `dir` on its device (`st_blocks` · 512, hard links once), `dir` included.
pub fn disk_usage(dir: &std::path::Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let top = std::fs::symlink_metadata(dir).unwrap_or_else(|e| panic!("lstat {}: {e}", dir.display()));
    let mut linked = std::collections::HashSet::new();
    let (mut bytes, mut entries) = (0, 0);
    let mut stack = vec![dir.to_path_buf()];
    let mut count = |m: &std::fs::Metadata| {
        if m.nlink() <= 1 || linked.insert(m.ino()) {
            bytes += m.blocks() * 512;
            entries += 1;
        }
    };
    count(&top);
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let Ok(m) = entry.metadata() else { continue };
            if m.dev() != top.dev() {
                continue;
            }
            count(&m);
            if m.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    (bytes, entries)
}
