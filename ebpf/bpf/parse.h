/* Packet parsing for the tc programs: L2 (Ethernet, 802.1Q/802.1ad), IPv4
 * with options, IPv6 with the bounded extension-header walk of ipv6.h,
 * UDP. The fast path decides "not ours" after reading the EtherType and
 * the fixed IP header, before anything is copied. */
#ifndef IKEFRAG_PARSE_H
#define IKEFRAG_PARSE_H

#include "common.h"
#include "config.h"
#include "hdr.h"
#include "ipv6.h"
#include "load.h"

#define IP_MF		0x2000
#define IP_DF		0x4000
#define IP_OFFMASK	0x1fff

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

	struct ipv6_walk w;
	int r = ipv6_walk(skb, off + 40, nh, &w);

	if (r == IPV6_WALK_BAD)
		return PARSE_BAD;
	if (r == IPV6_WALK_LIMIT)
		return PARSE_EXT_LIMIT;
	if (w.flags & IPV6_W_FRAG) {
		pk->flags |= IPF_FRAG;
		pk->ip_id = w.frag_id;
		pk->frag_off = w.frag_off;
		if (w.flags & IPV6_W_MF)
			pk->flags |= IPF_MF;
	}
	if (w.cur > end || w.data_off > end)
		return PARSE_BAD;
	pk->proto = w.nh;
	pk->l4_off = w.cur;
	pk->data_off = w.data_off;
	pk->frag_len = end - w.data_off;
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
