/* Records shared by the probes (conn.bpf.c) and user space (src/ebpf/conn.rs).
 * Change both together: aya checks the value size of the maps user space opens typed when
 * it loads them, and a unit test in conn.rs checks every layout (docs/ARCHITECTURE.md#versions). */
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
	/* Not a closed connection's record but a TCP connection's start, written at
	 * ESTABLISHED: user space keeps its own list of the live connections from these and the
	 * closes, so a scrape need not read `tcp_conns` (docs/ARCHITECTURE.md#live-tcp). Its
	 * counts are the connection's base, and `last_ns` holds the socket's address. */
	FLAG_OPENED = 4,
	/* A close written without the live table (tables_off): its counts are the socket's
	 * own, not relative to a base, and its direction is unknown; user space joins it with
	 * the connection's start record, which holds the base, direction and flags. */
	FLAG_ABSOLUTE = 8,
};

/* Telemetry counters (per CPU), indexed by reason. */
enum telemetry {
	TM_NO_SOCKET = 0,      /* an event without a socket pointer */
	TM_TABLE_FULL = 1,     /* a live table (TCP or UDP) had no room for a new connection */
	TM_RINGBUF_FULL = 2,   /* a full batch could not be announced (still readable from the map) */
	TM_UNBATCHED_LOST = 3, /* a record sent alone could not be announced: lost */
	TM_NESTED = 4,         /* closes that arrived while the CPU was appending (sent alone) */
	TM_FIRST_SEEN_LIVE = 5, /* TCP connections older than the probes, first seen by the iterator */
	TM_COUNT = 6,
};

/* One connection as the live tables and records key it. IPv4 addresses fill the first 4
 * bytes. */
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
	/* The connection's identity with the key: the socket's cookie where the kernel gives
	 * one, else a number the probes drew when they first saw the socket (top bit set). */
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

/* A connection's record: a closed one's final figures (in a batch), a live TCP one's current
 * figures (written by the TCP iterator), and a live UDP socket's entry in `udp_socks`. */
struct closed_conn {
	struct conn_key key;
	__u32 pad;
	struct conn_stats stats;
};

/* A live TCP connection in `tcp_conns`: what its socket cannot tell at close or at a scrape.
 * Its byte counts are the kernel's own (tcp_sock), taken relative to `base_*`, their values
 * when the probes first saw the connection (docs/ARCHITECTURE.md#tcp-from-the-kernels-counters). */
struct tcp_conn {
	struct conn_key key;
	__u32 base_retrans;
	__u64 cgroup_id;
	__u64 cookie;
	__u64 base_sent;
	__u64 base_received;
	/* The socket's address, which the scrape's iterator over this table reads the
	 * counters through (docs/ARCHITECTURE.md#live-tcp). */
	__u64 sk;
	__u8 direction;
	__u8 flags;
	__u16 pad;
	__u32 pad2;
};

/* One live TCP connection as a scrape reads it (`live_reads`, a memory-mapped array): user
 * space writes the first fields from the connection's `tcp_conns` entry, `read_tcp` the rest
 * from its socket (docs/ARCHITECTURE.md#live-tcp). */
struct live_read {
	/* In: the socket's address, and the identity to check it still has. */
	__u64 sk;
	__u64 cookie;
	__u16 sport;
	__u16 dport;
	/* Out: the counts (as read_counts gives them), and `live`: 1 when the socket is still
	 * the entry's connection and live, 2 when it is the connection's and its handshake is
	 * ending (the start record comes just before the state changes), 0 otherwise. */
	__u32 retransmits;
	__u64 sent;
	__u64 received;
	__u32 live;
	__u32 pad;
};

/* Connections `read_tcp` reads in one run. */
#define READ_CHUNK 128

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
