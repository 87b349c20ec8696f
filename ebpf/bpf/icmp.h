/* ICMPv4 "fragmentation needed" and ICMPv6 "packet too big" about UDP
 * packets of the IKE and NAT-T ports: direct evidence of a path MTU. */
#ifndef IKEFRAG_ICMP_H
#define IKEFRAG_ICMP_H

#include "common.h"
#include "config.h"
#include "counters.h"
#include "events.h"
#include "parse.h"

struct too_big {
	__u8 orig_saddr[16];
	__u8 orig_daddr[16];
	__u16 orig_sport;
	__u16 orig_dport;
	__u8 orig_proto;
	__u8 pad[3];
};

struct too_big_event {
	struct event h;
	struct too_big tb;
};

struct icmp_hdr {
	__u8 type;
	__u8 code;
	__u16 csum;
	__be32 rest;		/* v4: unused(16) + next-hop MTU(16); v6: MTU */
};

static __always_inline void handle_icmp(struct __sk_buff *skb, __u32 dir, struct pkt *pk,
					struct counter_set *cs)
{
	struct icmp_hdr ih;
	struct too_big tb = {};
	__u32 mtu, inner = pk->l4_off + sizeof(ih);

	if (pk->frag_len < sizeof(ih) || LOAD(skb, pk->l4_off, &ih))
		return;
	if (pk->family == 4) {
		if (pk->proto != PROTO_ICMP || ih.type != 3 || ih.code != 4)
			return;
		mtu = bpf_ntohl(ih.rest) & 0xffff;
		struct ipv4_hdr ip;
		if (LOAD(skb, inner, &ip))
			goto bad;
		__u32 hl = (ip.vihl & 0x0f) * 4;
		if (hl < 20)
			goto bad;
		__builtin_memcpy(tb.orig_saddr, &ip.saddr, 4);
		__builtin_memcpy(tb.orig_daddr, &ip.daddr, 4);
		tb.orig_proto = ip.proto;
		/* Only a first fragment or a whole packet carries the ports. */
		if (ip.proto != PROTO_UDP || (bpf_ntohs(ip.frag_off) & IP_OFFMASK))
			goto counted;
		inner += hl;
	} else {
		if (pk->proto != PROTO_ICMPV6 || ih.type != 2 || ih.code != 0)
			return;
		mtu = bpf_ntohl(ih.rest);
		struct ipv6_hdr ip6;
		if (LOAD(skb, inner, &ip6))
			goto bad;
		__builtin_memcpy(tb.orig_saddr, ip6.saddr, 16);
		__builtin_memcpy(tb.orig_daddr, ip6.daddr, 16);
		tb.orig_proto = ip6.nexthdr;
		inner += sizeof(ip6);
		/* Of the quoted packet's extension headers, only a fragment
		 * header right after the fixed one is looked through. */
		if (ip6.nexthdr == IPV6_FRAGMENT) {
			struct ipv6_ext_hdr fh;
			if (LOAD(skb, inner, &fh))
				goto bad;
			tb.orig_proto = fh.nexthdr;
			if (bpf_ntohs(fh.frag_off) & 0xfff8)
				goto counted;
			inner += sizeof(fh);
		}
		if (tb.orig_proto != PROTO_UDP)
			goto counted;
	}
	struct udp_hdr uh;
	/* The quoted original may stop right after the ports. */
	if (bpf_skb_load_bytes(skb, inner, &uh, 4))
		goto counted;
	if (uh.sport != cfg_ike_port_be && uh.dport != cfg_ike_port_be &&
	    uh.sport != cfg_natt_port_be && uh.dport != cfg_natt_port_be)
		goto counted;
	tb.orig_sport = bpf_ntohs(uh.sport);
	tb.orig_dport = bpf_ntohs(uh.dport);
	count(cs, C_ICMP_TOO_BIG, pk->ip_len);

	struct too_big_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(cs, C_RINGBUF_FAIL, 0);
		return;
	}
	event_fill(&e->h, EV_TOO_BIG, dir, pk);
	e->h.reason = mtu;
	__builtin_memcpy(&e->tb, &tb, sizeof(tb));
	bpf_ringbuf_submit(e, 0);
	return;
counted:
	/* Too-big messages about other traffic are counted, not reported. */
	return;
bad:
	count(cs, C_MALFORMED, pk->ip_len);
}

#endif
