//! Reading the whole live-connection table at once. aya's iterator costs two syscalls per
//! entry (next key, then lookup); `BPF_MAP_LOOKUP_BATCH` copies thousands of entries per
//! syscall, which is what keeps a scrape of 50,000 live connections cheap.

use std::os::fd::{AsFd, AsRawFd};

use aya::maps::{HashMap, IterableMap, MapData};

use super::conn::{ConnKey, ConnStats};

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
/// Entries asked for per syscall.
const CHUNK: usize = 16384;

/// The `batch` member of the kernel's `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Every entry of the table, appended to `out`. Falls back to the per-entry iterator on
/// kernels without batch lookups. Entries that change while being read are read as they
/// are then; entries deleted meanwhile may be missing, which the tracker allows for.
pub fn read_all_entries(
    map: &HashMap<MapData, ConnKey, ConnStats>,
    out: &mut Vec<(ConnKey, ConnStats)>,
) -> std::io::Result<()> {
    let fd = IterableMap::map(map).fd().as_fd().as_raw_fd();
    let mut keys = vec![ConnKey::default(); CHUNK];
    let mut values = vec![ConnStats::default(); CHUNK];
    // The hash map's batch token is a bucket index.
    let (mut token, mut next_token) = (0u32, 0u32);
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { &token as *const u32 as u64 },
            out_batch: &mut next_token as *mut u32 as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: CHUNK as u32,
            map_fd: fd as u32,
            ..BatchAttr::default()
        };
        // SAFETY: `attr` points at buffers of CHUNK keys and values of the map's key and
        // value sizes (checked against conn.h by the layout test), and at two u32 tokens, all
        // alive for the call; the kernel writes at most `count` entries.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &mut attr as *mut BatchAttr,
                std::mem::size_of::<BatchAttr>(),
            )
        };
        let error = (rc < 0).then(std::io::Error::last_os_error);
        let filled = (attr.count as usize).min(CHUNK);
        out.extend(keys[..filled].iter().copied().zip(values[..filled].iter().copied()));
        match error.as_ref().and_then(std::io::Error::raw_os_error) {
            None => {}
            Some(libc::ENOENT) => return Ok(()),
            Some(libc::EINVAL | libc::ENOTSUP | libc::EOPNOTSUPP) if first => {
                out.extend(map.iter().flatten());
                return Ok(());
            }
            Some(_) => return Err(error.unwrap_or_else(|| std::io::Error::other("bpf batch lookup failed"))),
        }
        token = next_token;
        first = false;
    }
}
