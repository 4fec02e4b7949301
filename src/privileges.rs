//! Least privilege: at start, before any other thread exists (capabilities belong to each
//! thread, and new threads inherit their creator's), sonde keeps only the capabilities its
//! enabled collectors use, clears the rest from its effective, permitted, inheritable,
//! ambient and bounding sets, and sets `no_new_privs`, so nothing it runs can gain more.
//! What each collector needs was measured by running sonde with each one taken away (the
//! README's "Privileges" table): none of them needs `CAP_DAC_*` or the other root powers,
//! and only the NAT lookup needs `CAP_NET_ADMIN`.

use caps::{CapSet, Capability, CapsHashSet};

use crate::collector::CollectorSettings;

/// Why the capabilities could not be lowered.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("lowering the {set} capabilities: {source}")]
    Caps {
        set: &'static str,
        #[source]
        source: caps::errors::CapsError,
    },
    #[error("setting no_new_privs: {0}")]
    NoNewPrivs(std::io::Error),
}

/// The capabilities the enabled collectors use; the others are dropped.
/// - `connection`: `CAP_SYS_ADMIN` to enter other network namespaces (`setns`: the TCP
///   iterator and the gateway's netlink sockets, for namespaces that appear at any time)
///   and mount tracefs where it is missing; the kernel takes it for `CAP_BPF` and
///   `CAP_PERFMON` too (map creation, program loading and attaching: the first collection
///   loads the probes, on a thread started after the drop). Those two are kept only where
///   `CAP_SYS_ADMIN` is not held (see [`lower_to`]): the probes then load, and only other
///   namespaces are out of reach. `CAP_SYS_PTRACE` to open `<procfs>/<pid>/ns/net` of
///   processes with other credentials. With the NAT lookup on (not `--no-conntrack`),
///   `CAP_NET_ADMIN`: the kernel asks it of every conntrack netlink request, reads included.
/// - `container`: `CAP_SYS_PTRACE`, for a container's network namespace
///   (`<procfs>/<pid>/ns/net`) and its `net/dev`.
/// - `host`, `docker`, `kubelet`: none (world-readable files; the Docker socket and the
///   token file belong to root, which sonde stays).
pub fn needed(settings: &CollectorSettings) -> CapsHashSet {
    let mut keep = CapsHashSet::new();
    if settings.collector_enabled("connection") {
        keep.extend([
            Capability::CAP_BPF,
            Capability::CAP_PERFMON,
            Capability::CAP_SYS_ADMIN,
            Capability::CAP_SYS_PTRACE,
        ]);
        if settings.conntrack.enabled {
            keep.insert(Capability::CAP_NET_ADMIN);
        }
    }
    if settings.collector_enabled("container") {
        keep.insert(Capability::CAP_SYS_PTRACE);
    }
    keep
}

/// What was kept: the capabilities both needed and held at start.
#[derive(Debug)]
pub struct Kept {
    pub kept: CapsHashSet,
    pub dropped: usize,
}

impl Kept {
    /// The kept names, sorted, for the log.
    pub fn names(&self) -> String {
        let mut names: Vec<String> = self.kept.iter().map(ToString::to_string).collect();
        names.sort();
        names.join(",")
    }
}

/// Lowers this thread's (at start: the process's) capabilities to `needed`, and sets
/// `no_new_privs`. Call before any other thread is started. Before the drop it does, with
/// the capabilities still held, what only start needs: lifting `RLIMIT_MEMLOCK` (kernels
/// before 5.11 charge BPF maps to it; lifting it needs `CAP_SYS_RESOURCE`, which is not
/// kept) when the probes will be loaded.
pub fn lower_to(needed: &CapsHashSet) -> Result<Kept, PrivilegeError> {
    if needed.contains(&Capability::CAP_BPF) {
        crate::ebpf::loader::raise_memlock_limit();
    }
    let error = |set| move |source| PrivilegeError::Caps { set, source };
    let permitted = caps::read(None, CapSet::Permitted).map_err(error("permitted"))?;
    let mut needed = needed.clone();
    if permitted.contains(&Capability::CAP_SYS_ADMIN) && needed.contains(&Capability::CAP_SYS_ADMIN) {
        // The kernel's bpf and perf checks accept CAP_SYS_ADMIN in their stead.
        needed.remove(&Capability::CAP_BPF);
        needed.remove(&Capability::CAP_PERFMON);
    }
    let kept: CapsHashSet = permitted.intersection(&needed).copied().collect();
    let dropped = permitted.len() - kept.len();
    // The bounding set first: dropping from it needs CAP_SETPCAP, which goes next. Without
    // CAP_SETPCAP (a container that was not given it) the bounding set stays as the runtime
    // made it; with no_new_privs nothing can gain from it.
    if permitted.contains(&Capability::CAP_SETPCAP) {
        for cap in caps::all().difference(&needed) {
            if caps::has_cap(None, CapSet::Bounding, *cap).unwrap_or(false) {
                caps::drop(None, CapSet::Bounding, *cap).map_err(error("bounding"))?;
            }
        }
    }
    caps::clear(None, CapSet::Ambient).map_err(error("ambient"))?;
    caps::clear(None, CapSet::Inheritable).map_err(error("inheritable"))?;
    caps::set(None, CapSet::Effective, &kept).map_err(error("effective"))?;
    caps::set(None, CapSet::Permitted, &kept).map_err(error("permitted"))?;
    // SAFETY: PR_SET_NO_NEW_PRIVS takes plain integer arguments and changes only this
    // thread's (and its future threads') flag.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(PrivilegeError::NoNewPrivs(std::io::Error::last_os_error()));
    }
    Ok(Kept { kept, dropped })
}
