/* Layouts shared by the fast-path program and its Go loader (mirrored by
 * bpf2go-generated types). Addresses and ports are in network order, as
 * on the wire; counters and times in host order. */
#ifndef IKEFRAG_FASTPATH_H
#define IKEFRAG_FASTPATH_H

#include <linux/bpf.h>
#include <linux/types.h>

/* One direction of a mapped flow as it arrives at the proxy: the sender's
 * address and port, and the proxy's address and port it was sent to. */
struct fp_key {
	__u8 family;		/* 4 or 6 */
	__u8 pad[3];
	__be16 sport;
	__be16 dport;
	__u8 saddr[16];		/* IPv4: first 4 bytes, rest zero */
	__u8 daddr[16];
};

/* What the proxy's sockets would send for a datagram matching the key.
 * hdr holds the new source address, destination address, source port and
 * destination port in wire order, so one store rewrites them: IPv4 uses
 * the first 12 bytes (the addresses end where the UDP header starts when
 * the IPv4 header has no options), IPv6 all 36. The checksum differences
 * are computed by the loader: one's complement sums of the new words
 * minus the old ones, in the byte order the kernel's checksum helpers
 * work in. The loader may replace a value in place (a new MTU, another
 * interface); the counters live apart, in the slot the value names, so
 * that they survive it. */
struct fp_flow {
	__u8 hdr[36];
	__u32 ifindex;		/* egress interface, toward the next hop */
	__u32 in_ifindex;	/* the interface datagrams of this direction arrive on */
	__u32 csum_addr;	/* address change: IPv4 header and UDP pseudo header */
	__u32 csum_port;	/* port change: UDP header */
	__u32 slot;		/* index into the counters array */
	__u16 mtu;		/* largest IP packet to send this way; 0: the interface's MTU */
	__u16 pad;
};

/* Per-direction counters, written by the program. */
struct fp_counters {
	__u64 packets;
	__u64 bytes;		/* UDP payload bytes, as the proxy counts them */
	__u64 last_ns;		/* bpf_ktime_get_coarse_ns() of the last datagram */
};

/* Per-CPU counters of the program's decisions, one slot each. */
enum fp_stat {
	FP_REDIRECT = 0,	/* rewritten and redirected */
	FP_NOT_IP,		/* not IPv4/IPv6 on untagged Ethernet to this host */
	FP_NOT_UDP,
	FP_FRAGMENT,		/* IP fragments: reassembly is the stack's job */
	FP_IP_OPTIONS,		/* IPv4 options or IPv6 extension headers */
	FP_MALFORMED,		/* truncated or inconsistent lengths */
	FP_UNMAPPED,		/* UDP of no mapped flow */
	FP_IKE,			/* mapped, non-ESP marker */
	FP_KEEPALIVE,		/* mapped, NAT-T keepalive (one 0xFF byte) */
	FP_SHORT,		/* mapped, payload shorter than an ESP header */
	FP_WRONG_IFACE,		/* mapped, arrived on another interface */
	FP_TOO_BIG,		/* larger than the egress MTU or the flow's MTU */
	FP_GSO,			/* an aggregated (GRO/GSO) skb */
	FP_NO_DEVICE,		/* the egress interface is gone */
	FP_ZERO_CSUM6,		/* UDP over IPv6 without a checksum */
	FP_REWRITE_FAIL,	/* the skb could not be made writable */
	FP_DROPPED,		/* failed half way through a rewrite: dropped */
	FP_STAT_MAX,
};

#endif
