/* Shared definitions for the ikefrag BPF programs: constants, the
 * per-instance configuration and the record layouts that user space
 * decodes. Layouts here are mirrored by bpf2go-generated Go types. */
#ifndef IKEFRAG_COMMON_H
#define IKEFRAG_COMMON_H

#include <linux/bpf.h>
#include <linux/types.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define ETH_P_IP_BE	bpf_htons(0x0800)
#define ETH_P_IPV6_BE	bpf_htons(0x86DD)
#define ETH_P_8021Q_BE	bpf_htons(0x8100)
#define ETH_P_8021AD_BE	bpf_htons(0x88A8)

#define PROTO_ICMP	1
#define PROTO_UDP	17
#define PROTO_ICMPV6	58

/* Sizes user space needs too: an enum, so that bpf2go generates them for
 * the loader (tcLimit*) instead of the loader copying them. */
enum limit {
	/* The largest UDP payload prefix one event can carry. The configured
	 * capture length is clamped to it; it also sizes the per-CPU scratch
	 * buffer the event is assembled in. */
	CAPTURE_MAX = 8192,
	/* Fragments remembered per train, enough for a 64 KiB datagram cut
	 * at 4 KiB or a 5 KiB IKE message cut at 576 bytes. Later fragments
	 * are still counted, only their ranges are not kept. */
	TRAIN_MAX_FRAGS = 16,
	/* The fixed IKE header (RFC 7296 §3.1). */
	IKE_HDR_LEN = 28,
};

/* Read-modify-write on map values that several CPUs update (fragment
 * trains). The default build (-mcpu=v3) uses the fetching atomics of kernel
 * 5.12 and later. The compat build for older kernels (IKEFRAG_COMPAT,
 * -mcpu=v2) has only the non-fetching atomic add: there a fetch is a read
 * followed by that add, and OR is a plain read-modify-write, so two
 * fragments of one train handled at the same instant on two CPUs can share
 * a record slot or report a train twice. The loader says which build runs. */
#ifdef IKEFRAG_COMPAT
#define ATOMIC_LOAD(p)		(*(volatile typeof(*(p)) *)(p))
#define ATOMIC_ADD(p, v)	((void)__sync_fetch_and_add((p), (v)))
#define ATOMIC_OR(p, v)		(*(p) |= (v))
#define ATOMIC_FETCH_ADD(p, v)	({ typeof(*(p)) __o = ATOMIC_LOAD(p); ATOMIC_ADD((p), (v)); __o; })
#define ATOMIC_FETCH_OR(p, v)	({ typeof(*(p)) __o = ATOMIC_LOAD(p); *(p) = __o | (v); __o; })
#else
#define ATOMIC_LOAD(p)		__sync_fetch_and_or((p), 0)
#define ATOMIC_ADD(p, v)	((void)__sync_fetch_and_add((p), (v)))
#define ATOMIC_OR(p, v)		((void)__sync_fetch_and_or((p), (v)))
#define ATOMIC_FETCH_ADD(p, v)	__sync_fetch_and_add((p), (v))
#define ATOMIC_FETCH_OR(p, v)	__sync_fetch_and_or((p), (v))
#endif

enum direction {
	DIR_INGRESS = 0,
	DIR_EGRESS = 1,
	DIR_MAX = 2,		/* counter sets per interface slot */
};

/* Event types in the ring buffer. Packed: one byte, as event.type is. */
enum __attribute__((packed)) event_type {
	EV_DATAGRAM = 1,	/* IKE datagram or first fragment of one, payload follows */
	EV_TRAIN = 2,		/* fragment train state change, struct train follows */
	EV_TOO_BIG = 3,		/* ICMP frag-needed / packet-too-big, struct too_big follows */
	EV_DROP = 4,		/* kfree_skb with a drop reason */
};

/* Classes of packets on the IKE / NAT-T ports. */
enum ike_kind {
	KIND_NONE = 0,
	KIND_IKEV2 = 1,
	KIND_IKEV1 = 2,
	KIND_ESP = 3,		/* ESP-in-UDP on the NAT-T port */
	KIND_KEEPALIVE = 4,	/* NAT-T keepalive, one 0xFF byte */
	KIND_OTHER = 5,		/* on the ports but not parseable as any of the above */
};

/* event.ip_flags bits. Packed: one byte, as event.ip_flags is. */
enum __attribute__((packed)) ip_flag {
	IPF_DF = 0x01,
	IPF_MF = 0x02,
	IPF_FRAG = 0x04,	/* part of a fragment train */
	IPF_MARKER = 0x08,	/* payload starts with the 4-byte non-ESP marker */
};

/* Common header of every ring-buffer record. Addresses are in network
 * order (IPv4 in the first 4 bytes), everything else in host order. */
struct event {
	enum event_type type;
	__u8 dir;
	__u8 family;		/* 4 or 6 */
	__u8 proto;
	__u32 ifindex;
	__u64 ts_ns;		/* bpf_ktime_get_ns() */
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u32 ip_id;
	__u16 ip_len;		/* whole IP packet length */
	__u16 frag_off;		/* fragment offset in bytes */
	enum ip_flag ip_flags;	/* IPF_* bits */
	__u8 kind;		/* enum ike_kind */
	__u16 udp_len;		/* UDP length field (header included) */
	__u32 avail;		/* UDP payload bytes present in this packet */
	__u32 cap_len;		/* bytes of payload that follow the header */
	__u32 reason;		/* EV_DROP: drop reason; EV_TOO_BIG: MTU */
	__u32 frag_len;		/* fragment data bytes (IP payload after all IP headers) */
	__u32 netns;		/* EV_DROP: inode of the device's network namespace, 0 unknown */
};

#endif
