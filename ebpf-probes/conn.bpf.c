// SPDX-License-Identifier: GPL-2.0
/* sonde's kernel side: per-connection bytes, calls, retransmits and state, from stable
 * tracepoints attached as BTF-typed raw tracepoints (tp_btf): plain loads of the socket's
 * fields, no tracefs needed (docs/ARCHITECTURE.md#hooks).
 *
 * Live connections sit in the `slots` array, one slot each. A socket's slot is, as a rule,
 * its home: the slot the socket's address names (see home_index), which holds the cookie of
 * the socket it belongs to (a per-socket number the kernel never reuses). A socket whose
 * home another live socket holds takes an overflow slot, above the homes, found through the
 * `sock_overflow` hash. A closed connection's final record goes into its CPU's current
 * batch, its slot is freed (an overflow slot onto the CPU's stack of free slots, or the
 * `free_ring`), and a full batch is announced through the `full_batches` ring buffer.
 *
 * The maps and records are an ABI shared with src/ebpf/
 * (docs/ARCHITECTURE.md#kernel-and-user-abi); why the probes are shaped so, with the
 * measurements, is in docs/ARCHITECTURE.md#probe-design. */
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
#define TCP_CLOSE 7

/* BPF has no fence instruction; a compiler barrier keeps the store order, which the
 * JIT preserves and x86 (TSO) makes visible in order to user space. */
#define barrier() asm volatile("" ::: "memory")

char LICENSE[] SEC("license") = "GPL";

/* Live connections, one slot each: the homes (home_mask + 1 of them, a power of two), then
 * the overflow slots. User space sets both sizes at load time (from --connection.max-live)
 * and reads the slots through mmap. */
const volatile __u64 home_mask = (1 << 15) - 1;
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct live_slot);
} slots SEC(".maps");

/* Overflow slots given back: by closes that found their CPU's stack full or busy, and by
 * user space when it ages an idle UDP socket out. A lock-free ring (a bounded queue after
 * Vyukov), not the queue map, whose spin lock is costly where the CPU that connects is not
 * the one that closes (docs/ARCHITECTURE.md#free-slots). A cell holds
 * (state << 32) | slot: state 2L waits for the push of lap L, 2L+1 holds lap L's slot, so
 * the zeroed array waits for lap 0; entry 0 of `free_ring_pos` is the next push's position,
 * entry 8 (another cache line) the next pop's. User space sizes the ring (a power of two,
 * twice what holds all the overflow slots, so a push never reaches a cell whose pop is under
 * way: it finds the ring full only under contention it gives up on) and sets the mask and
 * shift. src/ebpf/free_ring.rs is the same protocol in user space
 * (docs/ARCHITECTURE.md#free-ring). */
const volatile __u64 ring_mask = (1 << 16) - 1;
const volatile __u32 ring_shift = 16;
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 1 << 16);
	__type(key, __u32);
	__type(value, __u64);
} free_ring SEC(".maps");

#define RING_PUSH_POS 0
#define RING_POP_POS 8
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 16);
	__type(key, __u32);
	__type(value, __u64);
} free_ring_pos SEC(".maps");

/* Tries a ring operation makes when other CPUs move the position it raced for. */
#define RING_TRIES 4

/* Each CPU's own stack of freed overflow slots, so that most claims and frees take no lock
 * and touch no line another CPU writes; the shared ring takes what a full stack cannot, and
 * serves a CPU whose stack is empty or busy (a program nested in another on the same CPU). */
#define LOCAL_FREE 64
struct free_stack {
	__u32 busy;
	__u32 len;
	__u32 slots[LOCAL_FREE];
};
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct free_stack);
} free_stacks SEC(".maps");

/* Overflow slots handed out from the bottom of their part of the array, taken when no slot
 * was given back. It may pass the part's size (a claim that found the table full); user
 * space reads the overflow slots below the smaller of the two. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} slots_used SEC(".maps");

/* Overflow slots of sockets whose home another live socket holds, by cookie; user space
 * sizes it like the overflow part of `slots`. Only looked up when the home's `overflowed`
 * count says one of its sockets is there: a hash lookup is the dearest step of an event
 * (docs/ARCHITECTURE.md#overflow-slots). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u64);
} sock_overflow SEC(".maps");

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
	 * sock, where the verifier allows no direct load: a probe read, which costs about as
	 * much as the rest of the event, so only in that case (docs/ARCHITECTURE.md#hooks). */
	__u16 num = sk->__sk_common.skc_num;
	key->sport = num ? num : __builtin_bswap16(BPF_CORE_READ((struct inet_sock *)sk, inet_sport));
	key->dport = __builtin_bswap16(sk->__sk_common.skc_dport);
	key->netns = sk->__sk_common.skc_net.net->ns.inum;
	return 0;
}

/* The cgroup (v2) the socket was created in; the current task's when the socket has none. */
static __always_inline __u64 socket_cgroup(struct sock *sk, int process_context)
{
	__u64 id = sk->sk_cgrp_data.cgroup->kn->id;
	if (id == 0 && process_context)
		id = bpf_get_current_cgroup_id();
	return id;
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

/* Adds one send or receive to a live slot; atomically, as another CPU may be adding too. */
static __always_inline void add_bytes(struct live_slot *s, int ret, int sent)
{
	if (sent) {
		__sync_fetch_and_add(&s->bytes_sent, ret);
		__sync_fetch_and_add(&s->sends, 1);
	} else {
		__sync_fetch_and_add(&s->bytes_received, ret);
		__sync_fetch_and_add(&s->recvs, 1);
	}
}

/* The slot `ref` names, when it still belongs to the socket that holds the ref: live with
 * the same generation, or claimed and about to be published (generation one behind). A
 * slot that was freed, or freed and claimed again, has moved on. */
static __always_inline struct live_slot *owned_slot(__u64 ref)
{
	__u32 index = (__u32)ref;
	__u32 gen = ref >> 32;
	if (!(gen & 1))
		return NULL;
	struct live_slot *slot = bpf_map_lookup_elem(&slots, &index);
	if (!slot)
		return NULL;
	__u32 now = *(volatile __u32 *)&slot->generation;
	if (now == gen || now + 1 == gen)
		return slot;
	return NULL;
}

/* This CPU's stack of free slots, marked busy; NULL when a program that this one interrupted
 * on the same CPU holds it (the caller then uses the shared ring). */
static __always_inline struct free_stack *take_stack(void)
{
	__u32 zero = 0;
	struct free_stack *st = bpf_map_lookup_elem(&free_stacks, &zero);
	if (!st || st->busy)
		return NULL;
	st->busy = 1;
	barrier();
	return st;
}

static __always_inline void put_stack(struct free_stack *st)
{
	barrier();
	st->busy = 0;
}

/* Claims the next position of one end of the ring (RING_PUSH_POS or RING_POP_POS) once its
 * cell is in the state that end waits for in this lap: 2L for a push, 2L+1 for a pop
 * (`parity`). Returns the cell, and through *seen what it held, for the caller to write;
 * NULL when the ring is full (push) or empty (pop), or after RING_TRIES lost races. */
static __always_inline __u64 *ring_claim(__u32 end, __u32 parity, __u64 *seen)
{
	__u64 *next = bpf_map_lookup_elem(&free_ring_pos, &end);
	if (!next)
		return NULL;
	__u64 pos = *(volatile __u64 *)next;
	/* Not unrolled: the unrolled copies, inlined in every program, slowed the steady path
	 * (docs/ARCHITECTURE.md#steady-path). */
#pragma clang loop unroll(disable)
	for (int tries = 0; tries < RING_TRIES; tries++) {
		__u32 c = pos & ring_mask;
		__u64 *cell = bpf_map_lookup_elem(&free_ring, &c);
		if (!cell)
			return NULL;
		__u32 want = (__u32)(pos >> ring_shift) * 2 + parity;
		__u64 held = *(volatile __u64 *)cell;
		__s32 ahead = (__s32)((__u32)(held >> 32) - want);
		if (ahead < 0)
			return NULL; /* the previous lap is not done with this cell */
		if (ahead == 0) {
			__u64 was = __sync_val_compare_and_swap(next, pos, pos + 1);
			if (was == pos) {
				*seen = held;
				return cell;
			}
			pos = was;
		} else {
			/* Another CPU took this position: start again from the current one. */
			pos = *(volatile __u64 *)next;
		}
	}
	return NULL;
}

/* The state a claimed cell moves on to, in the high half of the cell. */
static __always_inline __u64 ring_next_state(__u64 seen)
{
	return (__u64)((__u32)(seen >> 32) + 1) << 32;
}

/* Appends a slot to the ring; 0 when it did. */
static __always_inline int ring_push(__u32 index)
{
	__u64 seen;
	__u64 *cell = ring_claim(RING_PUSH_POS, 0, &seen);
	if (!cell)
		return -1;
	/* State and slot in one store: a pop sees both or neither. */
	*(volatile __u64 *)cell = ring_next_state(seen) | index;
	return 0;
}

/* Takes the oldest slot from the ring; 0 when there was one. A push that has claimed its
 * position but not yet written its cell reads as empty. */
static __always_inline int ring_pop(__u32 *index)
{
	__u64 seen;
	__u64 *cell = ring_claim(RING_POP_POS, 1, &seen);
	if (!cell)
		return -1;
	*index = (__u32)seen;
	*(volatile __u64 *)cell = ring_next_state(seen);
	return 0;
}

/* A freed slot: from this CPU's stack, else from the ring; 0 when there is one. */
static __always_inline int pop_free(__u32 *index)
{
	struct free_stack *st = take_stack();
	if (st) {
		__u32 len = st->len;
		int found = len > 0 && len <= LOCAL_FREE;
		if (found) {
			*index = st->slots[(len - 1) & (LOCAL_FREE - 1)];
			st->len = len - 1;
		}
		put_stack(st);
		if (found)
			return 0;
	}
	return ring_pop(index);
}

/* Gives a slot back: onto this CPU's stack, else into the ring. */
static __always_inline void push_free(__u32 index)
{
	struct free_stack *st = take_stack();
	if (st) {
		__u32 len = st->len;
		int kept = len < LOCAL_FREE;
		if (kept) {
			st->slots[len & (LOCAL_FREE - 1)] = index;
			st->len = len + 1;
		}
		put_stack(st);
		if (kept)
			return;
	}
	if (ring_push(index))
		count(TM_SLOT_LEAKED);
}

/* The overflow slot `ref` names when it is the socket's with this cookie (live, or being
 * published). */
static __always_inline struct live_slot *same_socket(__u64 ref, __u64 cookie)
{
	struct live_slot *slot = owned_slot(ref);
	return slot && slot->cookie == cookie ? slot : NULL;
}

/* The index of the socket's home: its address in KiB plus a hash of its 32 KiB block, modulo
 * the homes. Sockets of one slab (made one after the other) get distinct homes a few slots
 * apart; the block's hash spreads the aligned slabs over every home. The index needs nothing
 * loaded from the socket, so the socket's line and the slot's line are fetched at once
 * (docs/ARCHITECTURE.md#home-slots). The address is taken as its distance from the `slots`
 * map: the verifier lets a program that may read kernel memory (CAP_PERFMON, which tracing
 * needs anyway) subtract one pointer from another, and turn a pointer into a number no other
 * way. */
static __always_inline __u32 home_index(struct sock *sk)
{
	__u64 addr = (__u64)((char *)sk - (char *)&slots);
	__u64 block = ((addr >> 15) * 0x9E3779B97F4A7C15ULL) >> 32;
	return (__u32)(block + (addr >> 10)) & home_mask;
}

/* The slot at `index` (NULL only if the array were smaller than the mask says). */
static __always_inline struct live_slot *slot_at(__u32 index)
{
	return bpf_map_lookup_elem(&slots, &index);
}

/* A home slot's ref: its index alone (generation 0), which no overflow ref is. */
static __always_inline int is_home(__u64 ref)
{
	return (ref >> 32) == 0;
}

/* The socket's slot, and through *ref_out its ref; NULL when it has none. */
static __always_inline struct live_slot *find_slot(struct sock *sk, __u64 cookie, __u64 *ref_out)
{
	__u32 index = home_index(sk);
	struct live_slot *home = slot_at(index);
	if (!home)
		return NULL;
	/* A home holds its socket's cookie from the end of the claim to the start of the
	 * release, and 0 otherwise; cookies are never 0 and never reused. */
	if (*(volatile __u64 *)&home->cookie == cookie) {
		*ref_out = index;
		return home;
	}
	if (*(volatile __u32 *)&home->overflowed == 0)
		return NULL;
	__u64 *entry = bpf_map_lookup_elem(&sock_overflow, &cookie);
	if (!entry)
		return NULL;
	*ref_out = *(volatile __u64 *)entry;
	return same_socket(*ref_out, cookie);
}

/* Writes a claimed slot's contents, all but the cookie and the generation. */
static __always_inline void fill(struct live_slot *slot, __u32 home, struct conn_key *key,
				 struct conn_stats *fresh)
{
	slot->home = home;
	slot->tgid = fresh->tgid;
	slot->bytes_sent = fresh->bytes_sent;
	slot->bytes_received = fresh->bytes_received;
	slot->sends = fresh->sends;
	slot->recvs = fresh->recvs;
	slot->last_ns = fresh->last_ns;
	slot->protocol = key->protocol;
	slot->direction = fresh->direction;
	slot->flags = fresh->flags;
	slot->retransmits = 0;
	slot->key = *key;
	slot->cgroup_id = fresh->cgroup_id;
}

/* Reads of a taken home's cookie while its claim is under way on another CPU (a fill takes
 * tens of ns); the claim may be this socket's, from an event racing this one. */
#define FILL_WAIT 32

/* Gives the socket an overflow slot holding `key` and `fresh`, for a socket whose home
 * another one holds. As claim() returns. */
static __always_inline struct live_slot *claim_overflow(__u64 cookie, struct live_slot *home,
							__u32 home_idx, struct conn_key *key,
							struct conn_stats *fresh, int *mine)
{
	__u32 index;
	if (pop_free(&index) != 0) {
		__u32 zero = 0;
		__u64 *used = bpf_map_lookup_elem(&slots_used, &zero);
		/* Far past any table size, so that the index below cannot wrap around. */
		if (!used || *used > 0x7fffffff) {
			count(TM_TABLE_FULL);
			return NULL;
		}
		index = (__u32)(home_mask + 1) + (__u32)__sync_fetch_and_add(used, 1);
	}
	struct live_slot *slot = bpf_map_lookup_elem(&slots, &index);
	if (!slot) {
		count(TM_TABLE_FULL);
		return NULL;
	}
	/* Free slots have an even generation; the claim makes it the next odd one. */
	__u32 gen = (slot->generation + 1) | 1;
	fill(slot, home_idx, key, fresh);
	slot->cookie = cookie;
	barrier();
	__u64 ref = ((__u64)gen << 32) | index;
	struct live_slot *other;

	if (bpf_map_update_elem(&sock_overflow, &cookie, &ref, BPF_NOEXIST) == 0) {
		/* Counted after the entry is there: a socket's event that finds the count finds
		 * the entry. */
		__sync_fetch_and_add(&home->overflowed, 1);
		count(TM_HOME_TAKEN);
		goto publish;
	}
	__u64 *entry = bpf_map_lookup_elem(&sock_overflow, &cookie);
	if (!entry) {
		count(TM_TABLE_FULL);
		goto give_back;
	}
	__u64 old = *(volatile __u64 *)entry;
	if ((other = same_socket(old, cookie)))
		goto use_other;
	/* This socket's earlier slot, freed (idle UDP aged out, or a TCP socket reconnecting). */
	__u64 was = __sync_val_compare_and_swap(entry, old, ref);
	if (was == old)
		goto publish;
	if ((other = same_socket(was, cookie)))
		goto use_other;
	goto give_back;

publish:
	/* Published after the socket's entry names it, and after its contents. */
	barrier();
	*(volatile __u32 *)&slot->generation = gen;
	*mine = 1;
	return slot;
use_other:
	/* Another CPU gave the socket a slot first: that one counts, this one goes back. */
	push_free(index);
	return other;
give_back:
	push_free(index);
	return NULL;
}

/* Gives the socket a slot holding `key` and `fresh`: its home when that is free, else an
 * overflow slot. Returns the socket's slot: the new one, or (with *mine = 0) the one another
 * CPU gave it meanwhile; NULL when the table is full. */
static __always_inline struct live_slot *claim(struct sock *sk, __u64 cookie,
					       struct conn_key *key, struct conn_stats *fresh,
					       int *mine)
{
	*mine = 0;
	__u32 home_idx = home_index(sk);
	struct live_slot *home = slot_at(home_idx);
	if (!home) {
		count(TM_TABLE_FULL);
		return NULL;
	}
	/* A free home has an even generation and cookie 0. Taking it makes the generation odd;
	 * the cookie, written last, makes it the socket's for every other event. */
	__u32 gen = *(volatile __u32 *)&home->generation;
	if (!(gen & 1) && __sync_val_compare_and_swap(&home->generation, gen, gen + 1) == gen) {
		fill(home, home_idx, key, fresh);
		barrier();
		*(volatile __u64 *)&home->cookie = cookie;
		*mine = 1;
		return home;
	}
	__u64 holder = 0;
#pragma clang loop unroll(disable)
	for (int i = 0; i < FILL_WAIT; i++) {
		holder = *(volatile __u64 *)&home->cookie;
		if (holder)
			break;
	}
	if (holder == cookie)
		return home;
	return claim_overflow(cookie, home, home_idx, key, fresh, mine);
}

/* Frees the slot of a closing socket, before its final record becomes visible. */
static __always_inline void release(struct sock *sk, __u64 cookie, __u64 ref,
				    struct live_slot *slot)
{
	if (is_home(ref)) {
		*(volatile __u64 *)&slot->cookie = 0;
		barrier();
		*(volatile __u32 *)&slot->generation = slot->generation + 1;
		return;
	}
	__u32 index = (__u32)ref;
	struct live_slot *home = slot_at(home_index(sk));
	if (bpf_map_delete_elem(&sock_overflow, &cookie) == 0 && home)
		__sync_fetch_and_sub(&home->overflowed, 1);
	barrier();
	*(volatile __u32 *)&slot->generation = (__u32)(ref >> 32) + 1;
	barrier();
	push_free(index);
}

/* The socket's cookie: read in place once the kernel has given it one, which saves the
 * helper's call on every event; the helper gives the socket its cookie the first time. */
static __always_inline __u64 cookie_of(struct sock *sk)
{
	__u64 cookie = sk->__sk_common.skc_cookie.counter;
	return cookie ? cookie : bpf_get_socket_cookie(sk);
}

/* Whether the probes count this socket's traffic: TCP and UDP over IPv4 and IPv6. Checked
 * before anything else, so the many unix-socket events cost two loads. */
static __always_inline int tracked(struct sock *sk)
{
	__u16 protocol = sk->sk_protocol;
	__u16 family = sk->__sk_common.skc_family;
	return (protocol == IPPROTO_TCP || protocol == IPPROTO_UDP) && (family == AF_INET || family == AF_INET6);
}

/* IPv4 or IPv6: all the steady path checks. The protocol lies in a line of the socket
 * that the receive path does not otherwise touch (docs/ARCHITECTURE.md#steady-path), and a
 * socket that has a slot was checked when it got one; read_key checks it for a new one. */
static __always_inline int inet_family(struct sock *sk)
{
	__u16 family = sk->__sk_common.skc_family;
	return family == AF_INET || family == AF_INET6;
}

/* The first send or receive seen on a socket that has no slot: it gets one. A call of its
 * own (a BPF-to-BPF call, JITed apart) rather than inlined, so that the steady path of
 * account() stays short and contiguous (docs/ARCHITECTURE.md#steady-path). */
static __attribute__((noinline)) void first_event(struct sock *sk, __u64 cookie, int ret, int sent)
{
	struct conn_key key = {};
	if (read_key(sk, &key))
		return;
	struct conn_stats fresh = {};
	fresh.cgroup_id = socket_cgroup(sk, 1);
	fresh.tgid = bpf_get_current_pid_tgid() >> 32;
	fresh.cookie = cookie;
	/* Only UDP keeps the time of its last event (user space ages idle UDP sockets out). */
	if (key.protocol == IPPROTO_UDP)
		fresh.last_ns = bpf_ktime_get_ns();
	/* UDP has no handshake: a socket that sends first is the client, one that receives
	 * first serves. A TCP connection first seen here was open before the probes. */
	if (key.protocol == IPPROTO_UDP)
		fresh.direction = sent ? DIR_OUTBOUND : DIR_INBOUND;
	if (sent) {
		fresh.bytes_sent = ret;
		fresh.sends = 1;
	} else {
		fresh.bytes_received = ret;
		fresh.recvs = 1;
	}
	if (key.protocol == IPPROTO_TCP && sk->__sk_common.skc_state == TCP_CLOSE) {
		/* The socket closed already (data read after the peer's FIN, say): the bytes
		 * still count, as a record of their own that is not a connection. */
		struct record_spot spot;
		if (open_record(&spot))
			return;
		spot.rec->key = key;
		spot.rec->pad = 0;
		spot.rec->stats = fresh;
		spot.rec->stats.flags = FLAG_LATE;
		close_record(&spot);
		return;
	}
	int mine;
	struct live_slot *slot = claim(sk, cookie, &key, &fresh, &mine);
	if (slot && !mine)
		add_bytes(slot, ret, sent);
}

/* Counts bytes of one send or receive on a socket. */
static __always_inline void account(struct sock *sk, int ret, int sent)
{
	if (!sk) {
		count(TM_NO_SOCKET);
		return;
	}
	if (!inet_family(sk))
		return;
	__u64 cookie = cookie_of(sk);
	__u64 ref;
	/* The usual case: a connection seen before. */
	struct live_slot *slot = find_slot(sk, cookie, &ref);
	if (slot) {
		add_bytes(slot, ret, sent);
		if (slot->tgid == 0) {
			slot->tgid = bpf_get_current_pid_tgid() >> 32;
			if (slot->cgroup_id == 0)
				slot->cgroup_id = socket_cgroup(sk, 1);
		}
		/* Only UDP needs the time of the last event (user space ages idle UDP
		 * sockets out); TCP has a close event, so its sends skip the clock read. */
		if (slot->protocol == IPPROTO_UDP)
			slot->last_ns = bpf_ktime_get_ns();
		return;
	}
	first_event(sk, cookie, ret, sent);
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(sock_send_length, struct sock *sk, int ret, int flags)
{
	if (ret <= 0)
		return 0;
	account(sk, ret, 1);
	return 0;
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(sock_recv_length, struct sock *sk, int ret, int flags)
{
	/* A peek leaves the data for the read that counts it. */
	if (ret <= 0 || (flags & MSG_PEEK))
		return 0;
	account(sk, ret, 0);
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
	if (sk->sk_protocol != IPPROTO_TCP || !tracked(sk))
		return 0;
	__u64 cookie = cookie_of(sk);
	__u64 ref = 0;
	struct live_slot *slot = find_slot(sk, cookie, &ref);

	if (newstate == TCP_ESTABLISHED) {
		__u8 direction = DIR_UNKNOWN, flags = 0;
		if (oldstate == TCP_SYN_SENT) {
			direction = DIR_OUTBOUND;
			flags = FLAG_CONNECTED;
		} else if (oldstate == TCP_SYN_RECV) {
			direction = DIR_INBOUND;
			flags = FLAG_CONNECTED;
		}
		int mine = 0;
		if (!slot) {
			struct conn_key key = {};
			if (read_key(sk, &key))
				return 0;
			struct conn_stats fresh = {};
			fresh.direction = direction;
			fresh.flags = flags;
			/* Often in softirq context: the socket knows its cgroup, the current task
			 * may not be its owner, so the tgid waits for the first send or receive. */
			fresh.cgroup_id = socket_cgroup(sk, 0);
			fresh.cookie = cookie;
			slot = claim(sk, cookie, &key, &fresh, &mine);
		}
		if (slot && !mine) {
			/* Bytes came first (a send racing the state change on another CPU). */
			slot->direction = direction;
			slot->flags |= flags;
		}
		return 0;
	}

	/* newstate == TCP_CLOSE: the final record is written into the batch. */
	struct conn_key failed = {};
	if (!slot && (oldstate != TCP_SYN_SENT || read_key(sk, &failed)))
		return 0;
	struct record_spot spot;
	if (open_record(&spot)) {
		/* No spot for the record (not expected): the slot is freed all the same. */
		if (slot)
			release(sk, cookie, ref, slot);
		return 0;
	}
	struct closed_conn *rec = spot.rec;
	rec->pad = 0;
	if (slot) {
		/* The key the connection was first seen with: its identity for user space. */
		rec->key = slot->key;
		rec->stats.bytes_sent = slot->bytes_sent;
		rec->stats.bytes_received = slot->bytes_received;
		rec->stats.sends = slot->sends;
		rec->stats.recvs = slot->recvs;
		rec->stats.cgroup_id = slot->cgroup_id;
		rec->stats.cookie = cookie;
		rec->stats.last_ns = 0;
		rec->stats.tgid = slot->tgid;
		rec->stats.retransmits = slot->retransmits;
		rec->stats.srtt_us = 0;
		rec->stats.direction = slot->direction;
		rec->stats.flags = slot->flags;
		rec->stats.pad = 0;
		release(sk, cookie, ref, slot);
	} else {
		/* A connect() that failed. */
		rec->key = failed;
		__builtin_memset(&rec->stats, 0, sizeof(rec->stats));
		rec->stats.direction = DIR_OUTBOUND;
		rec->stats.flags = FLAG_CONNECT_FAILED;
		rec->stats.cgroup_id = socket_cgroup(sk, 0);
		rec->stats.cookie = cookie;
	}
	/* A plain load through the helper's typed pointer, not a probe read
	 * (docs/ARCHITECTURE.md#hooks). */
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
	if (tp)
		rec->stats.srtt_us = tp->srtt_us >> 3;
	close_record(&spot);
	return 0;
}

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(tcp_retransmit_skb, struct sock *sk)
{
	if (!sk) {
		count(TM_NO_SOCKET);
		return 0;
	}
	__u64 ref;
	struct live_slot *slot = find_slot(sk, cookie_of(sk), &ref);
	/* A plain add, not an atomic one: the kernel retransmits with the socket locked, so a
	 * socket's retransmits never run at once, and its close (which frees the slot) takes
	 * the same lock. The store then completes while the program returns, instead of
	 * stalling it until the slot's line is this CPU's own (docs/ARCHITECTURE.md#steady-path). */
	if (slot)
		slot->retransmits += 1;
	return 0;
}
