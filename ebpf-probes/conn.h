/* Records shared by the probes (conn.bpf.c) and user space (src/ebpf/conn.rs).
 * Change both together: aya checks the value size of the maps user space opens typed when
 * it loads them, and a unit test in conn.rs checks every layout, the live slot's among them
 * (docs/ARCHITECTURE.md#versions). */
#ifndef SONDE_CONN_H
#define SONDE_CONN_H

#include <linux/types.h>

/* Closed-connection records per batch, and batch slots in each CPU's ring. */
#define BATCH_RECORDS 16
#define BATCH_SLOTS 4
/* Batch id of a record sent alone through the ring buffer (nested close on a CPU). */
#define UNBATCHED_ID 0xffffffffffffffffULL

enum direction { DIR_UNKNOWN = 0, DIR_OUTBOUND = 1, DIR_INBOUND = 2 };

enum conn_flags {
	/* The connection was established while the probes ran (connect or accept). */
	FLAG_CONNECTED = 1,
	/* A connect() that failed (SYN_SENT -> CLOSE). */
	FLAG_CONNECT_FAILED = 2,
	/* Bytes read or written after the socket reached CLOSE: no connection of its own. */
	FLAG_LATE = 4,
};

/* Telemetry counters (per CPU), indexed by reason. */
enum telemetry {
	TM_NO_SOCKET = 0,      /* an event without a socket pointer */
	TM_TABLE_FULL = 1,     /* the live table had no room for a new connection */
	TM_RINGBUF_FULL = 2,   /* a full batch could not be announced (still readable from the map) */
	TM_UNBATCHED_LOST = 3, /* a record sent alone could not be announced: lost */
	TM_NESTED = 4,         /* closes that arrived while the CPU was appending (sent alone) */
	TM_HOME_TAKEN = 5,     /* a socket given an overflow slot: another live socket held its home */
	TM_SLOT_LEAKED = 6,    /* a freed slot the free ring could not take (contended): not reused */
	TM_COUNT = 7,
};

/* One connection as the live table keys it. IPv4 addresses fill the first 4 bytes. */
struct conn_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__u32 netns;
	__u16 sport; /* host byte order */
	__u16 dport; /* host byte order */
	__u16 family;
	__u8 protocol;
	__u8 pad;
};

struct conn_stats {
	__u64 bytes_sent;
	__u64 bytes_received;
	__u64 sends;
	__u64 recvs;
	__u64 cgroup_id;
	/* The socket's cookie: with the key, the identity of one connection (a socket that
	 * connects again keeps its cookie, not its key). */
	__u64 cookie;
	/* The last send or receive (UDP only: user space ages idle UDP sockets out). */
	__u64 last_ns;
	__u32 tgid;
	__u32 retransmits;
	/* Smoothed RTT in microseconds, read at close. */
	__u32 srtt_us;
	__u8 direction;
	__u8 flags;
	__u16 pad;
};

struct closed_conn {
	struct conn_key key;
	__u32 pad;
	struct conn_stats stats;
};

/* One slot of the live table: a connection's while `generation` is odd (and, in a home slot,
 * `cookie` is not 0), free while it is even. User space reads the slots through mmap and skips
 * a slot whose `generation` or `cookie` changed meanwhile. An overflow slot is named by a ref,
 * (generation << 32) | index; a home slot by its index alone.
 * Everything a send or receive on a known connection reads or writes lies in the first 64
 * bytes, one cache line (the slot is 64-byte aligned: the array's values are 128 bytes); the
 * second holds what only a new connection, a close and a scrape touch
 * (docs/ARCHITECTURE.md#live-slots). */
struct live_slot {
	__u32 generation;
	__u32 tgid;
	/* The socket's cookie (unique for the host's uptime): whose slot it is. */
	__u64 cookie;
	__u64 bytes_sent;
	__u64 bytes_received;
	__u64 sends;
	__u64 recvs;
	__u64 last_ns;
	__u8 protocol; /* the key's, here in the first line */
	__u8 direction;
	__u8 flags;
	__u8 pad;
	__u32 retransmits;
	struct conn_key key;
	/* Sockets of this home that hold an overflow slot (kept across the home's owners). */
	__u32 overflowed;
	/* The socket's home (its own index in a home slot): user space, which does not know the
	 * socket's address, counts a freed overflow slot off its home's `overflowed` by it. */
	__u32 home;
	__u32 pad2;
	__u64 cgroup_id;
};

struct batch {
	__u64 id;
	__u16 len;
	__u16 cap;
	__u32 cpu;
	struct closed_conn records[BATCH_RECORDS];
};

struct batch_state {
	/* Id of the CPU's current batch; its slot is idx % BATCH_SLOTS. */
	__u64 idx;
	/* Set while appending, so a nested close on the same CPU does not tear the batch. */
	__u32 busy;
	__u32 pad;
};

#endif
