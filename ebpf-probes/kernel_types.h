/* The few kernel types the probes read, with only the fields they use. CO-RE
 * (preserve_access_index) relocates each field against the running kernel's BTF, so the
 * object does not depend on the kernel headers of the machine that built it. */
#ifndef SONDE_KERNEL_TYPES_H
#define SONDE_KERNEL_TYPES_H

#include <linux/types.h>

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

struct in6_addr {
	union {
		__u8 u6_addr8[16];
	} in6_u;
};

struct ns_common {
	unsigned int inum;
};

struct net {
	struct ns_common ns;
};

typedef struct {
	struct net *net;
} possible_net_t;

typedef struct {
	__s64 counter;
} atomic64_t;

struct sock_common {
	__be32 skc_daddr;
	__be32 skc_rcv_saddr;
	__be16 skc_dport;
	__u16 skc_num;
	unsigned short skc_family;
	volatile unsigned char skc_state;
	possible_net_t skc_net;
	struct in6_addr skc_v6_daddr;
	struct in6_addr skc_v6_rcv_saddr;
	atomic64_t skc_cookie;
	/* The sk_flags of struct sock (a define for this field). */
	unsigned long skc_flags;
};

struct kernfs_node {
	__u64 id;
};

struct cgroup {
	struct kernfs_node *kn;
};

/* From 5.15 on (commit 8520e224f547); before, the cgroup pointer was `val` itself, unless
 * its lowest bit said the word held net_cls/net_prio data instead. */
struct sock_cgroup_data {
	struct cgroup *cgroup;
};

struct sock_cgroup_data___old {
	__u64 val;
};

struct sock {
	struct sock_common __sk_common;
	__u16 sk_protocol;
	struct sock_cgroup_data sk_cgrp_data;
};

struct sock___old {
	struct sock_cgroup_data___old sk_cgrp_data;
};

struct inet_sock {
	__be16 inet_sport;
};

/* The kernel's own per-connection counters (bytes_acked and bytes_received from 4.1,
 * total_retrans long before). */
struct tcp_sock {
	__u32 srtt_us;
	__u32 snd_una;
	__u32 write_seq;
	__u32 total_retrans;
	__u64 bytes_received;
	__u64 bytes_acked;
};

#pragma clang attribute pop

/* The BPF iterator over TCP sockets (5.9): one call per socket of the iterator's network
 * namespace. Its context is an ABI of fixed offsets (each pointer in a 64-bit slot), so it
 * takes no relocation. */
struct seq_file;

struct bpf_iter_meta {
	struct seq_file *seq;
} __attribute__((aligned(8)));

struct bpf_iter__tcp {
	struct bpf_iter_meta *meta;
	struct sock_common *sk_common;
} __attribute__((aligned(8)));

#endif
