//! The live table as user space frees it, on this machine's kernel (as root). A test binary
//! of its own: cargo runs test binaries one at a time, so no other test's sockets take or
//! free slots of these homes while this one counts them.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::net::{Ipv4Addr, UdpSocket};

use common::*;

/// Freeing an idle UDP socket's overflow slot takes it off the count of the socket's own
/// home (which only the probes can name, from the socket's address), so that home's sockets
/// skip the overflow lookup again once none of its sockets is left there.
#[test]
fn freeing_an_overflow_slot_takes_it_off_its_own_home() {
    if !root_or_skip("freeing_an_overflow_slot_takes_it_off_its_own_home") {
        return;
    }
    // 64 homes and 64 overflow slots; 100 sockets with a slot each: at least 36 overflow.
    const SOCKETS: usize = 100;
    let mut probes = sonde::ebpf::loader::load(64).expect("load the probes");
    let homes = sonde::ebpf::loader::home_slots(64);
    let server = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let port = server.local_addr().expect("address").port();
    let clients: Vec<UdpSocket> = (0..SOCKETS)
        .map(|_| {
            let client = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
            // Connected, so the socket's key names the server's port.
            client.connect((Ipv4Addr::LOCALHOST, port)).expect("connect");
            client.send(&[7u8; 3]).expect("send");
            client
        })
        .collect();
    let ours: HashSet<u16> = clients
        .iter()
        .map(|c| c.local_addr().expect("address").port())
        .collect();

    let mut entries = Vec::new();
    probes.live.read_all(&mut entries).expect("read the live table");
    let overflowed: Vec<_> = entries
        .into_iter()
        .filter(|e| e.index >= homes && e.key.dport == port && ours.contains(&e.key.sport))
        .collect();
    assert!(
        overflowed.len() >= SOCKETS - homes as usize,
        "{SOCKETS} sockets in {homes} homes, only {} in overflow slots",
        overflowed.len()
    );
    let mut freed_per_home: BTreeMap<u32, u32> = BTreeMap::new();
    for entry in &overflowed {
        *freed_per_home.entry(entry.home).or_default() += 1;
    }
    let before: Vec<(u32, u32)> = freed_per_home
        .keys()
        .map(|&home| (home, probes.live.overflowed(home).expect("a home index")))
        .collect();
    for entry in &overflowed {
        assert!(probes.live.free(entry).expect("free"), "slot {} moved on", entry.index);
    }
    for (home, count) in before {
        let freed = freed_per_home[&home];
        assert!(
            count >= freed,
            "home {home} counted {count} overflowed sockets, {freed} of ours"
        );
        assert_eq!(
            probes.live.overflowed(home),
            Some(count - freed),
            "home {home}: {freed} of its overflow slots freed"
        );
    }
}
