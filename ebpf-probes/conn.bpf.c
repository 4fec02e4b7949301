// SPDX-License-Identifier: GPL-2.0
/* sonde's kernel side: per-connection bytes, retransmits and state
 * (docs/ARCHITECTURE.md#hooks).
 *
 * TCP costs nothing per packet: the kernel counts every connection's bytes and retransmits
 * itself (struct tcp_sock). The probes keep, per live connection, what the socket cannot
 * tell (its key as first seen, direction, cgroup, and the counters' values then) in the
 * `tcp_conns` hash, from the state change to ESTABLISHED, and write a start record into the
 * CPU's current batch; at the change to CLOSE they write the connection's final record from
 * the counters into that batch; at a scrape user space, which keeps its list of the live
 * connections from those records (and reads the hash whole when it may have missed one),
 * has `read_tcp` read the counters of every one, all namespaces at once
 * (docs/ARCHITECTURE.md#live-tcp). Connections older than the probes get their entry from the
 * `seed_tcp` iterator, run once in each network namespace
 * (docs/ARCHITECTURE.md#tcp-from-the-kernels-counters).
 *
 * UDP has no such counters: each send and receive adds to the socket's entry in the
 * `udp_socks` hash, from the sock_send_length/sock_recv_length tracepoints (6.3) or, before
 * them, on return from udp_sendmsg/udp_recvmsg and their IPv6 twins (fexit).
 *
 * Nothing here needs an atomic operation newer than 5.10's (add without fetch): entries
 * are claimed with the hash map's own insert (docs/ARCHITECTURE.md#kernel-floor).
 *
 * The maps and records are an ABI shared with src/ebpf/
 * (docs/ARCHITECTURE.md#kernel-and-user-abi). */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

#include "kernel_types.h"
#include "conn.h"

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define MSG_PEEK 2

#define TCP_ESTABLISHED 1
#define TCP_SYN_SENT 2
#define TCP_SYN_RECV 3
#define TCP_FIN_WAIT1 4
#define TCP_FIN_WAIT2 5
#define TCP_CLOSE 7
#define TCP_CLOSE_WAIT 8
#define TCP_LAST_ACK 9
#define TCP_CLOSING 11

/* enum sock_flags: SOCK_DEAD is 0, SOCK_DONE 1, since the first git tree. */
#define SOCK_DONE 1

/* BPF has no fence instruction; a compiler barrier keeps the store order, which the
 * JIT preserves and x86 (TSO) makes visible in order to user space. */
#define barrier() asm volatile("" ::: "memory")

char LICENSE[] SEC("license") = "GPL";

/* Set by user space at load: whether tracing programs may call bpf_get_socket_cookie
 * (5.12). Before, a socket's cookie is read when the kernel has given it one, and a
 * connection without one is named by a number drawn when the probes first see it. */
const volatile __u8 cookie_helper = 0;

/* Set by user space at load when the socket's cookie names every connection (the helper
 * above): then no live TCP connection has an entry in `tcp_conns`. The start record
 * already gives user space the connection's base, direction and flags, and the close
 * record, written from the socket alone (FLAG_ABSOLUTE), is joined with it by cookie; the
 * seed writes its connections to the iterator's output. A hash insert at every handshake
 * and a lookup and delete at every close cost more than the rest of the program
 * (docs/ARCHITECTURE.md#live-tcp). Without the helper a socket's cookie may be unset at
 * the start and the identity drawn then must be kept: the table stays. */
const volatile __u8 tables_off = 0;

/* Live TCP connections by socket (see socket_id); user space sets the size
 * (--connection.max-live). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct tcp_conn);
} tcp_conns SEC(".maps");

/* The live TCP connections a scrape reads, one slot each (struct live_read); memory-mapped
 * by user space, which sets the size (--connection.max-live). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct live_read);
} live_reads SEC(".maps");

/* Live UDP sockets by socket, with their counts; user space reads them at each scrape and
 * deletes those idle for --connection.udp-idle (UDP has no close event). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct closed_conn);
} udp_socks SEC(".maps");

/* Every CPU's ring of batch slots, keyed cpu * BATCH_SLOTS + slot; user space sets the
 * size to possible CPUs * BATCH_SLOTS and drains them (docs/ARCHITECTURE.md#batches). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 256 * BATCH_SLOTS);
	__type(key, __u32);
	__type(value, struct batch);
} batches SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct batch_state);
} batch_states SEC(".maps");

/* Full batches (and records sent alone), copied out for user space. User space drains it
 * on a timer, so outputs skip the wakeup (BPF_RB_NO_WAKEUP). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20);
} full_batches SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TM_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} telemetry SEC(".maps");

/* The batch of one record sent alone: a close that interrupted an append on its CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct batch);
} scratch SEC(".maps");

static __always_inline void count(__u32 reason)
{
	__u64 *v = bpf_map_lookup_elem(&telemetry, &reason);
	if (v)
		*v += 1;
}

/* Fills `key` from the socket; returns 0 for TCP/UDP over IPv4/IPv6, -1 otherwise. */
static __always_inline int read_key(struct sock *sk, struct conn_key *key)
{
	__u16 family = sk->__sk_common.skc_family;
	__u16 protocol = sk->sk_protocol;
	if (protocol != IPPROTO_TCP && protocol != IPPROTO_UDP)
		return -1;
	if (family == AF_INET) {
		__be32 s = sk->__sk_common.skc_rcv_saddr;
		__be32 d = sk->__sk_common.skc_daddr;
		__builtin_memcpy(key->saddr, &s, 4);
		__builtin_memcpy(key->daddr, &d, 4);
	} else if (family == AF_INET6) {
		__builtin_memcpy(key->saddr, sk->__sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8, 16);
		__builtin_memcpy(key->daddr, sk->__sk_common.skc_v6_daddr.in6_u.u6_addr8, 16);
	} else {
		return -1;
	}
	key->family = family;
	key->protocol = protocol;
	/* skc_num, the bound local port, is a plain load. The kernel zeroes it when it
	 * releases the port, before the CLOSE state change is traced; then inet_sport, which
	 * stays (the tracepoint itself reads it), gives the same port. It lies past struct
	 * sock, where the verifier allows no direct load: a probe read, so only in that case
	 * (docs/ARCHITECTURE.md#hooks). */
	__u16 num = sk->__sk_common.skc_num;
	key->sport = num ? num : __builtin_bswap16(BPF_CORE_READ((struct inet_sock *)sk, inet_sport));
	key->dport = __builtin_bswap16(sk->__sk_common.skc_dport);
	key->netns = sk->__sk_common.skc_net.net->ns.inum;
	return 0;
}

/* The cgroup (v2) the socket was created in; the current task's when the socket has none
 * and the probe runs in the task's context. */
static __always_inline __u64 socket_cgroup(struct sock *sk, int process_context)
{
	__u64 id = 0;
	if (bpf_core_field_exists(sk->sk_cgrp_data.cgroup)) {
		id = sk->sk_cgrp_data.cgroup->kn->id;
	} else {
		/* Before 5.15 the word is the cgroup's pointer unless its lowest bit is set. */
		__u64 val = BPF_CORE_READ((struct sock___old *)sk, sk_cgrp_data.val);
		if (val && !(val & 1))
			id = BPF_CORE_READ((struct cgroup *)val, kn, id);
	}
	if (id == 0 && process_context)
		id = bpf_get_current_cgroup_id();
	return id;
}

/* A number for the socket, unique among live sockets: its address, taken as its distance
 * from the `tcp_conns` map (the verifier lets a program that may read kernel memory,
 * CAP_PERFMON, subtract one pointer from another, and turn a pointer into a number no other
 * way). The entry of a socket is deleted at its close, before the socket is freed. */
static __always_inline __u64 socket_id(struct sock *sk)
{
	return (__u64)((char *)sk - (char *)&tcp_conns);
}

/* The socket's cookie when it has one or the kernel lets the probes give it one; else 0. */
static __always_inline __u64 cookie_of(struct sock *sk)
{
	__u64 cookie = sk->__sk_common.skc_cookie.counter;
	if (cookie || !cookie_helper)
		return cookie;
	return bpf_get_socket_cookie(sk);
}

/* A connection's identity with its key: the socket's cookie, or a number drawn now (the
 * clock, top bit set) for a socket that has none. */
static __always_inline __u64 new_identity(struct sock *sk)
{
	__u64 cookie = cookie_of(sk);
	return cookie ? cookie : (bpf_ktime_get_ns() | (1ULL << 63));
}

/* Where a closed connection's final record is written in place (no copy through scratch
 * space): the next record of this CPU's current batch, or, for a close that interrupts an
 * append on the same CPU, the scratch batch that is sent alone. */
struct record_spot {
	struct batch_state *state; /* NULL when the record is sent alone */
	struct batch *batch;
	struct closed_conn *rec;
};

/* Opens the spot for one record; 0 when there is one (close it with close_record). */
static __always_inline int open_record(struct record_spot *spot)
{
	__u32 zero = 0;
	struct batch_state *state = bpf_map_lookup_elem(&batch_states, &zero);
	if (!state)
		return -1;
	if (state->busy) {
		struct batch *alone = bpf_map_lookup_elem(&scratch, &zero);
		count(TM_NESTED);
		if (!alone)
			return -1;
		alone->id = UNBATCHED_ID;
		alone->len = 1;
		alone->cap = BATCH_RECORDS;
		alone->cpu = bpf_get_smp_processor_id();
		spot->state = NULL;
		spot->batch = alone;
		spot->rec = &alone->records[0];
		return 0;
	}
	state->busy = 1;
	__u32 cpu = bpf_get_smp_processor_id();
	__u64 idx = state->idx;
	__u32 slot = cpu * BATCH_SLOTS + (__u32)(idx % BATCH_SLOTS);
	struct batch *b = bpf_map_lookup_elem(&batches, &slot);
	if (!b)
		goto fail;
	if (b->id != idx) {
		/* A slot left from the previous lap: empty it before naming it. */
		b->len = 0;
		barrier();
		b->id = idx;
		b->cap = BATCH_RECORDS;
		b->cpu = cpu;
	}
	__u32 i = b->len;
	if (i >= BATCH_RECORDS)
		goto fail;
	spot->state = state;
	spot->batch = b;
	spot->rec = &b->records[i];
	return 0;
fail:
	state->busy = 0;
	return -1;
}

/* Makes the record visible: the batch's length grows past it (a full batch is announced and
 * the CPU moves to the next slot), or the record sent alone is announced. */
static __always_inline void close_record(struct record_spot *spot)
{
	struct batch *b = spot->batch;
	struct batch_state *state = spot->state;
	if (!state) {
		if (bpf_ringbuf_output(&full_batches, b, sizeof(*b), BPF_RB_NO_WAKEUP))
			count(TM_UNBATCHED_LOST);
		return;
	}
	/* The record is written before the length that makes it visible. */
	barrier();
	__u32 len = b->len + 1;
	b->len = len;
	if (len >= BATCH_RECORDS) {
		__u32 cpu = bpf_get_smp_processor_id();
		/* Named here too: a slot never reset (batch 0) still has zeroes there. */
		b->cpu = cpu;
		b->cap = BATCH_RECORDS;
		if (bpf_ringbuf_output(&full_batches, b, sizeof(*b), BPF_RB_NO_WAKEUP))
			count(TM_RINGBUF_FULL);
		__u64 idx = state->idx + 1;
		state->idx = idx;
		__u32 slot = cpu * BATCH_SLOTS + (__u32)(idx % BATCH_SLOTS);
		struct batch *next = bpf_map_lookup_elem(&batches, &slot);
		if (next) {
			next->len = 0;
			barrier();
			next->id = idx;
			next->cap = BATCH_RECORDS;
			next->cpu = cpu;
		}
	}
	barrier();
	state->busy = 0;
}

/* ---- TCP ---- */

/* A TCP connection's counts as its applications see them: bytes_acked and bytes_received
 * count the FIN of each side as one byte once it is acknowledged or received (and the
 * connecting side's bytes_acked its SYN, which the base taken at ESTABLISHED holds).
 * `state` is the socket's state before a change being traced, or its state now. */
struct tcp_counts {
	__u64 sent;
	__u64 received;
	__u32 retransmits;
};

/* The counts from the socket's fields (read by the caller: plain loads through a typed
 * pointer, or probe reads through an address). */
static __always_inline void counts_of(int state, __u64 sent, __u64 received, __u32 retrans,
				      __u32 snd_una, __u32 write_seq, __u64 sk_flags,
				      struct tcp_counts *c)
{
	/* Our FIN was sent in these states; it is acknowledged once nothing is left unacked
	 * (write_seq counts the FIN too). */
	int fin_sent = state == TCP_FIN_WAIT1 || state == TCP_FIN_WAIT2 || state == TCP_CLOSING ||
		       state == TCP_LAST_ACK;
	if (fin_sent && snd_una == write_seq && sent > 0)
		sent -= 1;
	/* tcp_fin() marks the socket done when the peer's FIN arrives. */
	if ((sk_flags & (1UL << SOCK_DONE)) && received > 0)
		received -= 1;
	c->sent = sent;
	c->received = received;
	c->retransmits = retrans;
}

static __always_inline void read_counts(struct tcp_sock *tp, int state, struct tcp_counts *c)
{
	struct sock *sk = (struct sock *)tp;
	counts_of(state, tp->bytes_acked, tp->bytes_received, tp->total_retrans, tp->snd_una,
		  tp->write_seq, sk->__sk_common.skc_flags, c);
}

/* What the connection counted since the probes first saw it. */
static __always_inline void fill_record(struct closed_conn *rec, struct tcp_conn *conn,
					struct tcp_counts *now)
{
	rec->key = conn->key;
	rec->pad = 0;
	rec->stats.bytes_sent = now->sent > conn->base_sent ? now->sent - conn->base_sent : 0;
	rec->stats.bytes_received =
		now->received > conn->base_received ? now->received - conn->base_received : 0;
	rec->stats.sends = 0;
	rec->stats.recvs = 0;
	rec->stats.cgroup_id = conn->cgroup_id;
	rec->stats.cookie = conn->cookie;
	rec->stats.last_ns = 0;
	rec->stats.tgid = 0;
	rec->stats.retransmits = now->retransmits > conn->base_retrans ? now->retransmits - conn->base_retrans : 0;
	rec->stats.srtt_us = 0;
	rec->stats.direction = conn->direction;
	rec->stats.flags = conn->flags;
	rec->stats.pad = 0;
}

/* A new entry for the socket, its counters taken as they are now, built in `conn` (the
 * caller's, which then announces it: no second copy); 0 when the table holds it. */
static __always_inline int start_conn(struct sock *sk, struct tcp_sock *tp, int state, __u64 id,
				      __u8 direction, __u8 flags, __u64 update, struct tcp_conn *conn)
{
	__builtin_memset(conn, 0, sizeof(*conn));
	if (read_key(sk, &conn->key))
		return -1;
	struct tcp_counts now;
	read_counts(tp, state, &now);
	conn->base_sent = now.sent;
	conn->base_received = now.received;
	conn->base_retrans = now.retransmits;
	/* Often in softirq context, where the current task is not the socket's owner. */
	conn->cgroup_id = socket_cgroup(sk, 0);
	conn->cookie = new_identity(sk);
	conn->direction = direction;
	conn->flags = flags;
	/* The socket's address as a number, for the scrape's iterator: a program that may
	 * read kernel memory (CAP_PERFMON) may store a pointer. */
	conn->sk = (__u64)sk;
	if (tables_off)
		return 0;
	return bpf_map_update_elem(&tcp_conns, &id, conn, update) ? -1 : 0;
}

/* Tells user space of a connection's start (FLAG_OPENED), through the batches as closes
 * are: plain stores into the CPU's current batch, no lock. */
static __always_inline void announce_open(struct tcp_conn *conn)
{
	struct record_spot spot;
	if (open_record(&spot))
		return;
	struct closed_conn *rec = spot.rec;
	rec->key = conn->key;
	rec->pad = 0;
	rec->stats.bytes_sent = conn->base_sent;
	rec->stats.bytes_received = conn->base_received;
	rec->stats.sends = 0;
	rec->stats.recvs = 0;
	rec->stats.cgroup_id = conn->cgroup_id;
	rec->stats.cookie = conn->cookie;
	rec->stats.last_ns = conn->sk;
	rec->stats.tgid = 0;
	rec->stats.retransmits = conn->base_retrans;
	rec->stats.srtt_us = 0;
	rec->stats.direction = conn->direction;
	rec->stats.flags = conn->flags | FLAG_OPENED;
	rec->stats.pad = 0;
	close_record(&spot);
}

static __always_inline int live_state(int state)
{
	return state == TCP_ESTABLISHED || state == TCP_FIN_WAIT1 || state == TCP_FIN_WAIT2 ||
	       state == TCP_CLOSE_WAIT || state == TCP_LAST_ACK || state == TCP_CLOSING;
}

/* A connection's close without the live table (tables_off): its cookie and counts as they
 * are, for user space to join with the start, which holds the key, cgroup and direction.
 * The key is left out but for its protocol and family: at a close the local port is often
 * zeroed already and takes a probe read (read_key), and the cgroup a chase of pointers. */
static __always_inline int close_absolute(struct sock *sk, struct tcp_sock *tp, int oldstate,
					  __u16 family)
{
	struct record_spot spot;
	if (open_record(&spot))
		return 0;
	struct closed_conn *rec = spot.rec;
	struct tcp_counts now;
	read_counts(tp, oldstate, &now);
	__builtin_memset(&rec->key, 0, sizeof(rec->key));
	rec->key.family = family;
	rec->key.protocol = IPPROTO_TCP;
	rec->pad = 0;
	rec->stats.bytes_sent = now.sent;
	rec->stats.bytes_received = now.received;
	rec->stats.sends = 0;
	rec->stats.recvs = 0;
	rec->stats.cgroup_id = 0;
	rec->stats.cookie = cookie_of(sk);
	rec->stats.last_ns = 0;
	rec->stats.tgid = 0;
	rec->stats.retransmits = now.retransmits;
	rec->stats.srtt_us = tp->srtt_us >> 3;
	rec->stats.direction = DIR_UNKNOWN;
	rec->stats.flags = FLAG_ABSOLUTE;
	rec->stats.pad = 0;
	close_record(&spot);
	return 0;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(inet_sock_set_state, struct sock *sk, int oldstate, int newstate)
{
	if (newstate != TCP_ESTABLISHED && newstate != TCP_CLOSE)
		return 0;
	if (!sk) {
		count(TM_NO_SOCKET);
		return 0;
	}
	if (sk->sk_protocol != IPPROTO_TCP)
		return 0;
	__u16 family = sk->__sk_common.skc_family;
	if (family != AF_INET && family != AF_INET6)
		return 0;
	/* A plain load through the helper's typed pointer, not a probe read
	 * (docs/ARCHITECTURE.md#hooks). */
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
	if (!tp)
		return 0;
	__u64 id = socket_id(sk);

	if (newstate == TCP_ESTABLISHED) {
		__u8 direction = DIR_UNKNOWN;
		if (oldstate == TCP_SYN_SENT)
			direction = DIR_OUTBOUND;
		else if (oldstate == TCP_SYN_RECV)
			direction = DIR_INBOUND;
		/* The state changes after this probe returns, so no scrape saw this connection
		 * yet: its entry is new, and replaces any left at the address. */
		struct tcp_conn conn;
		if (start_conn(sk, tp, oldstate, id, direction, direction ? FLAG_CONNECTED : 0, BPF_ANY,
			       &conn))
			count(TM_TABLE_FULL);
		else
			announce_open(&conn);
		return 0;
	}

	/* newstate == TCP_CLOSE: the final record is written into the batch. */
	if (tables_off && live_state(oldstate))
		return close_absolute(sk, tp, oldstate, family);
	struct tcp_conn *conn = tables_off ? NULL : bpf_map_lookup_elem(&tcp_conns, &id);
	struct conn_key failed;
	if (!conn) {
		/* Only a connect() that failed is counted without an entry. */
		if (oldstate != TCP_SYN_SENT)
			return 0;
		__builtin_memset(&failed, 0, sizeof(failed));
		if (read_key(sk, &failed))
			return 0;
	}
	struct record_spot spot;
	if (open_record(&spot)) {
		/* No spot for the record (not expected): the entry goes all the same. */
		if (conn)
			bpf_map_delete_elem(&tcp_conns, &id);
		return 0;
	}
	struct closed_conn *rec = spot.rec;
	if (conn) {
		struct tcp_counts now;
		read_counts(tp, oldstate, &now);
		fill_record(rec, conn, &now);
		rec->stats.srtt_us = tp->srtt_us >> 3;
		bpf_map_delete_elem(&tcp_conns, &id);
	} else {
		/* A connect() that failed. */
		rec->key = failed;
		rec->pad = 0;
		__builtin_memset(&rec->stats, 0, sizeof(rec->stats));
		rec->stats.direction = DIR_OUTBOUND;
		rec->stats.flags = FLAG_CONNECT_FAILED;
		rec->stats.cgroup_id = socket_cgroup(sk, 0);
		rec->stats.cookie = new_identity(sk);
	}
	close_record(&spot);
	return 0;
}

/* Run once in each network namespace (a TCP iterator walks the sockets of the namespace it
 * is made in): every connection older than the probes gets its entry, its counters as they
 * are now for a base. Connections the probes saw established have theirs already. */
SEC("iter/tcp")
int seed_tcp(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	if (!skc)
		return 0;
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(skc);
	if (!tp)
		return 0; /* a request or time-wait socket */
	struct sock *sk = (struct sock *)tp;
	int state = sk->__sk_common.skc_state;
	if (!live_state(state))
		return 0; /* listening, connecting or closed: not a connection */
	__u64 id = socket_id(sk);
	struct tcp_conn conn;
	if (tables_off) {
		/* Every live connection, to the iterator's output: user space keeps those it
		 * did not know of (and counts them as first seen live). */
		if (start_conn(sk, tp, state, id, DIR_UNKNOWN, 0, BPF_NOEXIST, &conn) == 0)
			bpf_seq_write(ctx->meta->seq, &conn, sizeof(conn));
		return 0;
	}
	if (bpf_map_lookup_elem(&tcp_conns, &id))
		return 0;
	if (start_conn(sk, tp, state, id, DIR_UNKNOWN, 0, BPF_NOEXIST, &conn) == 0) {
		count(TM_FIRST_SEEN_LIVE);
		/* As at a handshake: user space's list of live connections learns of it. */
		announce_open(&conn);
	} else if (!bpf_map_lookup_elem(&tcp_conns, &id))
		count(TM_TABLE_FULL);
	return 0;
}

/* A copy of the parts of one socket read_tcp reads: the head of sock_common (ports, state,
 * cookie, flags) and tcp_sock's counters from write_seq to bytes_acked, each in one probe
 * read instead of one per field. A socket's fields lie on cache lines that are cold at a
 * scrape; a read of the span lets the CPU fetch those lines together. Per CPU (too big for
 * the stack). The sizes leave room over 6.18's spans (104 and 256 bytes); a kernel whose
 * span is larger is read field by field. */
#define COMMON_VIEW 160
#define TCP_VIEW 448
struct sk_view {
	__u8 common[COMMON_VIEW];
	__u8 tcp[TCP_VIEW];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sk_view);
} sk_views SEC(".maps");

/* A field's offset and end in its struct, on the running kernel (CO-RE). */
#define OFF(type, field) ((__u32)bpf_core_field_offset(type, field))
#define END(type, field) (OFF(type, field) + (__u32)bpf_core_field_size(type, field))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

/* The field at `at` of a view, `size` bytes wide (1, 2, 4 or 8), as a number. */
static __always_inline __u64 view_field(const __u8 *view, __u32 at, __u32 size)
{
	if (size == 8)
		return *(const __u64 *)(view + at);
	if (size == 4)
		return *(const __u32 *)(view + at);
	if (size == 2)
		return *(const __u16 *)(view + at);
	return view[at];
}

/* A field of the view of `type` that starts at `lo` in the struct. */
#define VIEW(view, lo, type, field) view_field(view, OFF(type, field) - (lo), bpf_core_field_size(type, field))

/* Reads a field of the socket at `sk` (a number, not a typed pointer: the live table's
 * entries hold it so) with a probe read, relocated by CO-RE; 0 when the read fails. */
#define SK_READ(type, sk, field)                                                             \
	({                                                                                   \
		typeof(((type *)0)->field) __v = 0;                                          \
		bpf_probe_read_kernel(                                                       \
			(void *)&__v, sizeof(__v),                                           \
			(const void *)__builtin_preserve_access_index(&((type *)(sk))->field)); \
		__v;                                                                         \
	})

/* What read_tcp needs of one socket. */
struct sk_fields {
	__u64 cookie;
	__u64 flags;
	__u64 sent;
	__u64 received;
	__u32 snd_una;
	__u32 write_seq;
	__u32 retransmits;
	__u16 dport; /* network byte order, as the socket holds it */
	__u16 num;
	__u8 state;
};

/* The fields, by two span reads where this kernel's layout lets them fit the view, else
 * one probe read per field; -1 when the socket could not be read. */
static __always_inline int read_sk_fields(__u64 sk, struct sk_fields *f)
{
	__u32 zero = 0;
	struct sk_view *view = bpf_map_lookup_elem(&sk_views, &zero);
	__u32 c_lo = MIN(MIN(OFF(struct sock, __sk_common.skc_dport), OFF(struct sock, __sk_common.skc_num)),
			 MIN(MIN(OFF(struct sock, __sk_common.skc_state), OFF(struct sock, __sk_common.skc_cookie)),
			     OFF(struct sock, __sk_common.skc_flags)));
	__u32 c_hi = MAX(MAX(END(struct sock, __sk_common.skc_dport), END(struct sock, __sk_common.skc_num)),
			 MAX(MAX(END(struct sock, __sk_common.skc_state), END(struct sock, __sk_common.skc_cookie)),
			     END(struct sock, __sk_common.skc_flags)));
	__u32 t_lo = MIN(MIN(OFF(struct tcp_sock, write_seq), OFF(struct tcp_sock, snd_una)),
			 MIN(OFF(struct tcp_sock, bytes_received), OFF(struct tcp_sock, bytes_acked)));
	__u32 t_hi = MAX(MAX(END(struct tcp_sock, write_seq), END(struct tcp_sock, snd_una)),
			 MAX(END(struct tcp_sock, bytes_received), END(struct tcp_sock, bytes_acked)));
	/* Each read is of its span's size only: a line more is a cold line more to fetch. */
	__u32 c_len = c_hi - c_lo;
	__u32 t_len = t_hi - t_lo;
	if (view && c_len <= COMMON_VIEW && t_len <= TCP_VIEW) {
		if (bpf_probe_read_kernel(view->common, c_len, (const void *)(sk + c_lo)) ||
		    bpf_probe_read_kernel(view->tcp, t_len, (const void *)(sk + t_lo)))
			return -1;
		const __u8 *c = view->common;
		const __u8 *t = view->tcp;
		f->dport = VIEW(c, c_lo, struct sock, __sk_common.skc_dport);
		f->num = VIEW(c, c_lo, struct sock, __sk_common.skc_num);
		f->state = VIEW(c, c_lo, struct sock, __sk_common.skc_state);
		f->cookie = VIEW(c, c_lo, struct sock, __sk_common.skc_cookie);
		f->flags = VIEW(c, c_lo, struct sock, __sk_common.skc_flags);
		f->write_seq = VIEW(t, t_lo, struct tcp_sock, write_seq);
		f->snd_una = VIEW(t, t_lo, struct tcp_sock, snd_una);
		f->received = VIEW(t, t_lo, struct tcp_sock, bytes_received);
		f->sent = VIEW(t, t_lo, struct tcp_sock, bytes_acked);
	} else {
		f->dport = SK_READ(struct sock, sk, __sk_common.skc_dport);
		f->num = SK_READ(struct sock, sk, __sk_common.skc_num);
		f->state = SK_READ(struct sock, sk, __sk_common.skc_state);
		f->cookie = SK_READ(struct sock, sk, __sk_common.skc_cookie.counter);
		f->flags = SK_READ(struct sock, sk, __sk_common.skc_flags);
		f->write_seq = SK_READ(struct tcp_sock, sk, write_seq);
		f->snd_una = SK_READ(struct tcp_sock, sk, snd_una);
		f->received = SK_READ(struct tcp_sock, sk, bytes_received);
		f->sent = SK_READ(struct tcp_sock, sk, bytes_acked);
	}
	/* Far from the others (about 400 bytes past bytes_acked on 6.18). */
	f->retransmits = SK_READ(struct tcp_sock, sk, total_retrans);
	return 0;
}

/* Whether the socket is still the connection whose entry gave it: the socket's memory is
 * reused for another once it is freed (after its close deleted the entry, so only a close
 * racing the scrape can show one). By cookie where the entry holds the socket's, else by
 * ports. */
static __always_inline int still_the_connection(struct live_read *r, struct sk_fields *f)
{
	if (!(r->cookie >> 63))
		return f->cookie == r->cookie;
	return f->dport == __builtin_bswap16(r->dport) && f->num == r->sport;
}

/* The counts of slots [ctx[0], ctx[1]) of `live_reads`, at most READ_CHUNK of them: run by
 * user space at each scrape (BPF_PROG_TEST_RUN; never attached), over the live connections
 * it read from `tcp_conns`. Only the connections are visited, not every socket of the
 * kernel's hash as a TCP iterator does, and every namespace at once. No socket lock is
 * taken: a close that races the scrape shows a socket that is no longer live (skipped; its
 * record follows) or the counts just before it (docs/ARCHITECTURE.md#live-tcp). */
SEC("raw_tp")
int read_tcp(__u64 *ctx)
{
	__u32 first = ctx[0];
	__u32 end = ctx[1];
	for (__u32 i = 0; i < READ_CHUNK; i++) {
		__u32 idx = first + i;
		if (idx >= end)
			break;
		struct live_read *r = bpf_map_lookup_elem(&live_reads, &idx);
		if (!r)
			break;
		__u64 sk = r->sk;
		r->live = 0;
		struct sk_fields f = {};
		if (!sk || read_sk_fields(sk, &f) || !still_the_connection(r, &f))
			continue;
		if (f.state == TCP_SYN_SENT || f.state == TCP_SYN_RECV) {
			r->live = 2;
			continue;
		}
		if (!live_state(f.state))
			continue;
		struct tcp_counts now;
		counts_of(f.state, f.sent, f.received, f.retransmits, f.snd_una, f.write_seq, f.flags, &now);
		r->sent = now.sent;
		r->received = now.received;
		r->retransmits = now.retransmits;
		r->live = 1;
	}
	return 0;
}

/* ---- UDP ---- */

/* Whether a `udp_socks` entry is this socket's, not one left by a socket that lived at the
 * same address: by cookie where the probes can have every socket's, else by ports. */
static __always_inline int same_udp_socket(struct closed_conn *entry, struct sock *sk)
{
	if (cookie_helper)
		return entry->stats.cookie == cookie_of(sk);
	return entry->key.sport == sk->__sk_common.skc_num &&
	       entry->key.dport == __builtin_bswap16(sk->__sk_common.skc_dport);
}

/* Adds one send or receive to a UDP socket's entry; atomically, as another CPU may be
 * adding too (an add without fetch: 5.10 has it). */
static __always_inline void add_datagram(struct closed_conn *entry, int ret, int sent)
{
	if (sent) {
		__sync_fetch_and_add(&entry->stats.bytes_sent, ret);
		__sync_fetch_and_add(&entry->stats.sends, 1);
	} else {
		__sync_fetch_and_add(&entry->stats.bytes_received, ret);
		__sync_fetch_and_add(&entry->stats.recvs, 1);
	}
	entry->stats.last_ns = bpf_ktime_get_ns();
}

/* The first datagram seen on a socket (or on a socket at the address of one whose entry
 * was left): a new entry. A call of its own (a BPF-to-BPF call), so that the usual path of
 * account_udp stays short. */
static __attribute__((noinline)) void first_datagram(struct sock *sk, __u64 id, int stale, int ret,
						    int sent)
{
	struct closed_conn fresh = {};
	if (read_key(sk, &fresh.key))
		return;
	fresh.stats.cgroup_id = socket_cgroup(sk, 1);
	fresh.stats.tgid = bpf_get_current_pid_tgid() >> 32;
	fresh.stats.cookie = new_identity(sk);
	fresh.stats.last_ns = bpf_ktime_get_ns();
	/* UDP has no handshake: a socket that sends first is the client, one that receives
	 * first serves. */
	fresh.stats.direction = sent ? DIR_OUTBOUND : DIR_INBOUND;
	if (sent) {
		fresh.stats.bytes_sent = ret;
		fresh.stats.sends = 1;
	} else {
		fresh.stats.bytes_received = ret;
		fresh.stats.recvs = 1;
	}
	if (bpf_map_update_elem(&udp_socks, &id, &fresh, stale ? BPF_ANY : BPF_NOEXIST) == 0)
		return;
	/* Another CPU made the entry first: add to it. */
	struct closed_conn *entry = bpf_map_lookup_elem(&udp_socks, &id);
	if (entry)
		add_datagram(entry, ret, sent);
	else
		count(TM_TABLE_FULL);
}

/* Counts one datagram sent or received on a socket: UDP over IPv4 or IPv6 only (the
 * tracepoints fire for every socket; checked before anything else). */
static __always_inline void account_udp(struct sock *sk, int ret, int sent)
{
	if (!sk) {
		count(TM_NO_SOCKET);
		return;
	}
	if (sk->sk_protocol != IPPROTO_UDP)
		return;
	__u16 family = sk->__sk_common.skc_family;
	if (family != AF_INET && family != AF_INET6)
		return;
	__u64 id = socket_id(sk);
	struct closed_conn *entry = bpf_map_lookup_elem(&udp_socks, &id);
	if (entry && same_udp_socket(entry, sk)) {
		add_datagram(entry, ret, sent);
		return;
	}
	first_datagram(sk, id, entry != NULL, ret, sent);
}

/* 6.3 and later: the socket layer's tracepoints. */
SEC("tp_btf/sock_send_length")
int BPF_PROG(sock_send_length, struct sock *sk, int ret, int flags)
{
	if (ret > 0)
		account_udp(sk, ret, 1);
	return 0;
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(sock_recv_length, struct sock *sk, int ret, int flags)
{
	/* A peek leaves the data for the read that counts it. */
	if (ret > 0 && !(flags & MSG_PEEK))
		account_udp(sk, ret, 0);
	return 0;
}

/* Before 6.3: on return from UDP's own send and receive calls, one program per function
 * (a program attaches to one), and for receive the variant whose arguments the function
 * has: 5.19 dropped `noblock`. User space tries the older first, which a newer kernel
 * refuses, as the return value would be past its arguments (docs/ARCHITECTURE.md#hooks). */
#define UDP_SEND_EXIT(name)                                                                  \
	SEC("fexit")                                                                         \
	int BPF_PROG(name, struct sock *sk, void *msg, __u64 len, int ret)                   \
	{                                                                                    \
		if (ret > 0)                                                                 \
			account_udp(sk, ret, 1);                                             \
		return 0;                                                                    \
	}

#define UDP_RECV_EXIT(name)                                                                  \
	SEC("fexit")                                                                         \
	int BPF_PROG(name, struct sock *sk, void *msg, __u64 len, int flags, int *addr_len,  \
		     int ret)                                                                \
	{                                                                                    \
		if (ret > 0 && !(flags & MSG_PEEK))                                          \
			account_udp(sk, ret, 0);                                             \
		return 0;                                                                    \
	}

#define UDP_RECV_NOBLOCK_EXIT(name)                                                          \
	SEC("fexit")                                                                         \
	int BPF_PROG(name, struct sock *sk, void *msg, __u64 len, int noblock, int flags,    \
		     int *addr_len, int ret)                                                 \
	{                                                                                    \
		if (ret > 0 && !(flags & MSG_PEEK))                                          \
			account_udp(sk, ret, 0);                                             \
		return 0;                                                                    \
	}

UDP_SEND_EXIT(udp_sendmsg_exit)
UDP_SEND_EXIT(udpv6_sendmsg_exit)
UDP_RECV_EXIT(udp_recvmsg_exit)
UDP_RECV_EXIT(udpv6_recvmsg_exit)
UDP_RECV_NOBLOCK_EXIT(udp_recvmsg_noblock_exit)
UDP_RECV_NOBLOCK_EXIT(udpv6_recvmsg_noblock_exit)
