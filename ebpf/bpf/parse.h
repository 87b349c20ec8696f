/* Packet parsing for the tc programs: L2 (Ethernet, 802.1Q/802.1ad), IPv4
 * with options, IPv6 with a bounded extension-header walk, UDP. The fast
 * path decides "not ours" after reading the EtherType and the fixed IP
 * header, before anything is copied. */
#ifndef IKEFRAG_PARSE_H
#define IKEFRAG_PARSE_H

#include "common.h"
#include "config.h"
#include "hdr.h"

struct ipv6_opt_hdr {
	__u8 nexthdr;
	__u8 len;
};

struct ipv6_frag_hdr {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off;
	__be32 id;
};

/* Extension headers walked before giving up; real IKE traffic carries at
 * most a fragment header, so 6 leaves room for exotic but legal chains. */
#define IPV6_MAX_EXT	6

#define IP_MF		0x2000
#define IP_DF		0x4000
#define IP_OFFMASK	0x1fff

/* Copies *dst from the packet at off: directly when the bytes are in the
 * linear part of the skb, else through bpf_skb_load_bytes (paged data).
 * Direct reads are limited to offsets below LOAD_DIRECT_MAX: the verifier
 * only proves a packet range when offset plus size stays under 64 KiB, and
 * the handlers see offsets as unknown values read back from pkt_scratch.
 * Headers sit far below it; anything beyond goes through the helper. */
#define LOAD_DIRECT_MAX	0x3fff
#define LOAD(skb, off, dst) ({						\
	void *__d = (void *)(long)(skb)->data;				\
	void *__e = (void *)(long)(skb)->data_end;			\
	__u32 __o = (off);						\
	int __r = 0;							\
	typeof(dst) __p = __d + (__o & LOAD_DIRECT_MAX);		\
	if (__o <= LOAD_DIRECT_MAX && (void *)(__p + 1) <= __e)		\
		*(dst) = *__p;						\
	else								\
		__r = bpf_skb_load_bytes((skb), __o, (dst), sizeof(*(dst))); \
	__r;								\
})

enum parse_result {
	PARSE_SKIP = 0,		/* not ours: leave at once */
	PARSE_OK = 1,
	PARSE_BAD = 2,		/* malformed or truncated: count */
	PARSE_EXT_LIMIT = 3,	/* IPv6 chain longer than the walk */
};

struct pkt {
	__u32 data_off;		/* start of fragment data (after all fragmentable-part headers) */
	__u32 l4_off;		/* start of the L4 header (valid unless a non-first fragment) */
	__u32 frag_len;		/* IP payload bytes after data_off in this packet */
	__u32 ip_id;
	__u16 ip_len;
	__u16 frag_off;		/* bytes */
	__u8 family;
	__u8 proto;
	__u8 flags;		/* IPF_* */
	__u8 pad;
	__u8 saddr[16];
	__u8 daddr[16];
};

static __always_inline int parse_l2(struct __sk_buff *skb, __u32 *off, __be16 *proto)
{
	__be16 p;

	if (cfg_no_eth) {
		*off = 0;
		*proto = skb->protocol;
		return 0;
	}
	if (LOAD(skb, 12, &p))
		return -1;
	__u32 o = 14;
	/* Up to two tags: 802.1ad outer plus 802.1Q inner. Offloaded tags
	 * are not in the data at all and need no walking. */
#pragma unroll
	for (int i = 0; i < 2; i++) {
		if (p != ETH_P_8021Q_BE && p != ETH_P_8021AD_BE)
			break;
		if (LOAD(skb, o + 2, &p))
			return -1;
		o += 4;
	}
	*off = o;
	*proto = p;
	return 0;
}

static __always_inline int parse_ipv4(struct __sk_buff *skb, __u32 off, struct pkt *pk)
{
	struct ipv4_hdr ip;

	if (LOAD(skb, off, &ip))
		return PARSE_BAD;
	__u16 fo = bpf_ntohs(ip.frag_off);
	/* Fast exit: neither UDP, nor ICMP, nor a fragment. */
	if (ip.proto != PROTO_UDP && ip.proto != PROTO_ICMP && !(fo & (IP_MF | IP_OFFMASK)))
		return PARSE_SKIP;

	__u32 hl = (ip.vihl & 0x0f) * 4;
	__u32 tot = bpf_ntohs(ip.tot_len);
	if ((ip.vihl >> 4) != 4 || hl < 20 || tot < hl || off + tot > skb->len)
		return PARSE_BAD;

	pk->family = 4;
	pk->proto = ip.proto;
	pk->ip_len = tot;
	pk->ip_id = bpf_ntohs(ip.id);
	pk->frag_off = (fo & IP_OFFMASK) * 8;
	pk->flags = 0;
	if (fo & IP_DF)
		pk->flags |= IPF_DF;
	if (fo & IP_MF)
		pk->flags |= IPF_MF;
	if (fo & (IP_MF | IP_OFFMASK))
		pk->flags |= IPF_FRAG;
	pk->data_off = off + hl;
	pk->l4_off = off + hl;
	pk->frag_len = tot - hl;
	__builtin_memset(pk->saddr, 0, sizeof(pk->saddr));
	__builtin_memset(pk->daddr, 0, sizeof(pk->daddr));
	__builtin_memcpy(pk->saddr, &ip.saddr, 4);
	__builtin_memcpy(pk->daddr, &ip.daddr, 4);
	return PARSE_OK;
}

static __always_inline int parse_ipv6(struct __sk_buff *skb, __u32 off, struct pkt *pk)
{
	struct ipv6_hdr ip6;

	if (LOAD(skb, off, &ip6))
		return PARSE_BAD;
	__u8 nh = ip6.nexthdr;
	if (nh != PROTO_UDP && nh != PROTO_ICMPV6 && !ipv6_is_ext(nh))
		return PARSE_SKIP;

	__u32 plen = bpf_ntohs(ip6.plen);
	__u32 end = off + 40 + plen;
	/* Jumbograms (plen 0) cannot carry IKE; treat as malformed. */
	if ((ip6.vtcfl & bpf_htonl(0xf0000000)) != bpf_htonl(0x60000000) || plen == 0 || end > skb->len)
		return PARSE_BAD;

	pk->family = 6;
	pk->ip_len = 40 + plen;
	pk->ip_id = 0;
	pk->frag_off = 0;
	pk->flags = 0;
	__builtin_memcpy(pk->saddr, ip6.saddr, 16);
	__builtin_memcpy(pk->daddr, ip6.daddr, 16);

	__u32 cur = off + 40;
	__u32 data_off = cur;
	int done = 0;
#pragma unroll
	for (int i = 0; i < IPV6_MAX_EXT; i++) {
		if (!ipv6_is_ext(nh)) {
			done = 1;
			break;
		}
		if (nh == 44) {
			struct ipv6_frag_hdr fh;

			if (LOAD(skb, cur, &fh))
				return PARSE_BAD;
			__u16 fo = bpf_ntohs(fh.frag_off);
			cur += 8;
			data_off = cur;
			nh = fh.nexthdr;
			/* Offset 0 without M is an atomic fragment (RFC 6946):
			 * a whole packet, not part of a train. */
			if (fo & 0xfff9) {
				pk->flags |= IPF_FRAG;
				pk->ip_id = bpf_ntohl(fh.id);
				pk->frag_off = fo & 0xfff8;
				if (fo & 1)
					pk->flags |= IPF_MF;
				if (pk->frag_off) {
					/* The rest is fragment data. */
					done = 1;
					break;
				}
			}
			continue;
		}
		struct ipv6_opt_hdr oh;

		if (LOAD(skb, cur, &oh))
			return PARSE_BAD;
		if (nh == 51)
			cur += ((__u32)oh.len + 2) * 4;
		else
			cur += ((__u32)oh.len + 1) * 8;
		nh = oh.nexthdr;
		if (!(pk->flags & IPF_FRAG))
			data_off = cur;
	}
	if (!done && ipv6_is_ext(nh))
		return PARSE_EXT_LIMIT;
	if (cur > end || data_off > end)
		return PARSE_BAD;
	pk->proto = nh;
	pk->l4_off = cur;
	pk->data_off = data_off;
	pk->frag_len = end - data_off;
	return PARSE_OK;
}

static __always_inline int parse_ip(struct __sk_buff *skb, struct pkt *pk)
{
	__u32 off;
	__be16 proto;

	if (parse_l2(skb, &off, &proto))
		return PARSE_SKIP;
	if (proto == ETH_P_IP_BE)
		return parse_ipv4(skb, off, pk);
	if (proto == ETH_P_IPV6_BE)
		return parse_ipv6(skb, off, pk);
	return PARSE_SKIP;
}

#endif
