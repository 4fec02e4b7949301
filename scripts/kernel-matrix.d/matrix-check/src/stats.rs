//! The kernel's BPF run-time statistics of loaded programs, found by name: `BPF_ENABLE_STATS`
//! turns the counting on while its descriptor is open, `BPF_PROG_GET_NEXT_ID`,
//! `BPF_PROG_GET_FD_BY_ID` and `BPF_OBJ_GET_INFO_BY_FD` walk every loaded program and read
//! its name and `run_cnt` (all from 5.8; the matrix's floor is 5.10).

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

// bpf(2) commands (linux/bpf.h).
const BPF_PROG_GET_NEXT_ID: libc::c_long = 11;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_ENABLE_STATS: libc::c_long = 32;
const BPF_STATS_RUN_TIME: u32 = 0;

/// Offsets in `struct bpf_prog_info` (stable ABI: fields are only ever appended), checked
/// against linux/bpf.h with offsetof: `name[16]` at 64, `run_cnt` at 200.
const INFO_NAME: usize = 64;
const INFO_RUN_CNT: usize = 200;
/// The info read: up to the end of `run_cnt` (the kernel copies what both know).
const INFO_LEN: usize = 208;

/// `union bpf_attr`, as zeroed words the commands fill at the start; larger than any
/// command used here needs (the kernel checks that the unused tail is zero).
#[repr(C, align(8))]
struct Attr([u8; 128]);

impl Attr {
    fn new() -> Self {
        Attr([0; 128])
    }

    fn put_u32(&mut self, offset: usize, value: u32) -> &mut Self {
        self.0[offset..offset + 4].copy_from_slice(&value.to_ne_bytes());
        self
    }

    fn put_u64(&mut self, offset: usize, value: u64) -> &mut Self {
        self.0[offset..offset + 8].copy_from_slice(&value.to_ne_bytes());
        self
    }

    fn u32_at(&self, offset: usize) -> u32 {
        let mut word = [0u8; 4];
        word.copy_from_slice(&self.0[offset..offset + 4]);
        u32::from_ne_bytes(word)
    }
}

fn bpf(cmd: libc::c_long, attr: &mut Attr) -> io::Result<libc::c_long> {
    // SAFETY: bpf(2) reads (and for some commands writes) the attribute block we own, whose
    // size we pass; pointers inside it point at buffers the caller keeps alive.
    let ret = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut Attr, std::mem::size_of::<Attr>()) };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Keeps the kernel counting every program's runs (`run_cnt`, `run_time_ns`) while held.
pub struct StatsOn(#[allow(dead_code)] OwnedFd);

pub fn enable_stats() -> io::Result<StatsOn> {
    let fd = bpf(BPF_ENABLE_STATS, Attr::new().put_u32(0, BPF_STATS_RUN_TIME))?;
    // SAFETY: the command returned a new descriptor nobody else owns.
    Ok(StatsOn(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
}

/// A program's name as the kernel keeps it: at most 15 bytes.
pub fn kernel_name(name: &str) -> &str {
    &name[..name.len().min(15)]
}

/// For each of `names` (as the kernel keeps them, [`kernel_name`]): how many loaded
/// programs bear it and the sum of their `run_cnt`.
pub fn run_counts(names: &[&str]) -> io::Result<BTreeMap<String, (u32, u64)>> {
    let mut counts: BTreeMap<String, (u32, u64)> = names.iter().map(|n| (n.to_string(), (0, 0))).collect();
    let mut id = 0u32;
    loop {
        let mut attr = Attr::new();
        attr.put_u32(0, id);
        match bpf(BPF_PROG_GET_NEXT_ID, &mut attr) {
            Ok(_) => id = attr.u32_at(4),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(counts),
            Err(e) => return Err(e),
        }
        let fd = match bpf(BPF_PROG_GET_FD_BY_ID, Attr::new().put_u32(0, id)) {
            // SAFETY: a new descriptor nobody else owns.
            Ok(fd) => unsafe { OwnedFd::from_raw_fd(fd as i32) },
            // Unloaded in between.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(e),
        };
        let mut info = [0u64; INFO_LEN / 8];
        let mut attr = Attr::new();
        attr.put_u32(0, fd.as_raw_fd() as u32)
            .put_u32(4, INFO_LEN as u32)
            .put_u64(8, info.as_mut_ptr() as u64);
        bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
        // SAFETY: reading plain bytes of the u64 array we own.
        let bytes: &[u8] = unsafe { std::slice::from_raw_parts(info.as_ptr().cast(), INFO_LEN) };
        let raw = &bytes[INFO_NAME..INFO_NAME + 16];
        let name = String::from_utf8_lossy(&raw[..raw.iter().position(|&b| b == 0).unwrap_or(16)]).into_owned();
        if let Some(entry) = counts.get_mut(&name) {
            entry.0 += 1;
            entry.1 += info[INFO_RUN_CNT / 8];
        }
    }
}
