//! The process's limit on open files (`RLIMIT_NOFILE`): the container collector keeps cgroup
//! files open within it and the server caps its connections below it.

/// The soft limit, or `None` when it cannot be read.
pub fn soft() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    (rc == 0).then_some(limit.rlim_cur)
}

/// Raises the soft limit to the hard one, as Go programs (cAdvisor, node_exporter) do at
/// start; a failure leaves the limit as it was.
pub fn raise_soft_to_hard() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit; setrlimit reads a valid one.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
