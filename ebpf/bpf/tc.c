//go:build ignore

/* tc/tcx programs for the edge interface: classify every packet, keep
 * state only for IP fragment trains, count, and send IKE control messages
 * (never ESP) to user space. They only observe: every path returns
 * TC_ACT_UNSPEC, which is also TCX_NEXT. */

#include "common.h"
#include "config.h"
#include "counters.h"
#include "events.h"
#include "frag.h"
#include "icmp.h"
#include "ike.h"
#include "parse.h"

#define TC_ACT_UNSPEC (-1)

char __license[] SEC("license") = "Dual BSD/GPL";

static __always_inline void handle_udp(struct __sk_buff *skb, __u32 dir, struct pkt *pk,
				       struct counter_set *cs)
{
	/* ESP-in-UDP is most of the traffic on these ports: count it before
	 * the full classification copies anything. */
	struct {
		struct udp_hdr uh;
		__u32 marker;
	} esp;
	if (pk->frag_len >= sizeof(esp) && !LOAD(skb, pk->l4_off, &esp) &&
	    (esp.uh.sport == cfg_natt_port_be || esp.uh.dport == cfg_natt_port_be) && esp.marker != 0 &&
	    bpf_ntohs(esp.uh.len) >= sizeof(esp) && bpf_ntohs(esp.uh.len) <= pk->frag_len) {
		count(cs, C_ESP_IN_UDP, pk->ip_len);
		return;
	}

	struct udp_info u = {};
	int r = classify_udp(skb, pk, &u, 0);

	if (r == UDP_NOT_OURS)
		return;
	if (r == UDP_BAD) {
		count(cs, C_MALFORMED, pk->ip_len);
		return;
	}
	switch (u.kind) {
	case KIND_ESP:
		count(cs, C_ESP_IN_UDP, pk->ip_len);
		return;
	case KIND_KEEPALIVE:
		count(cs, C_KEEPALIVE, pk->ip_len);
		return;
	case KIND_IKEV2:
		count(cs, C_IKEV2, pk->ip_len);
		break;
	case KIND_IKEV1:
		count(cs, C_IKEV1, pk->ip_len);
		break;
	default:
		count(cs, C_OTHER_UDP, pk->ip_len);
		return;
	}
	if (ike_length(&u) > cfg_large_ike)
		count(cs, C_IKE_LARGE, pk->ip_len);
	emit_datagram(skb, dir, pk, &u, cs);
}

static __always_inline int handle(struct __sk_buff *skb, __u32 dir)
{
	struct pkt pk = {};
	int r = parse_ip(skb, &pk);

	if (r == PARSE_SKIP)
		return TC_ACT_UNSPEC;

	struct counter_set *cs = counters_get(dir);
	if (r == PARSE_BAD) {
		count(cs, C_MALFORMED, skb->len);
		return TC_ACT_UNSPEC;
	}
	if (r == PARSE_EXT_LIMIT) {
		count(cs, C_EXT_HDR_LIMIT, skb->len);
		return TC_ACT_UNSPEC;
	}
	if (pk.flags & IPF_FRAG)
		handle_frag(skb, dir, &pk, cs);
	else if (pk.proto == PROTO_UDP)
		handle_udp(skb, dir, &pk, cs);
	else if (pk.proto == PROTO_ICMP || pk.proto == PROTO_ICMPV6)
		handle_icmp(skb, dir, &pk, cs);
	return TC_ACT_UNSPEC;
}

SEC("tc")
int ikefrag_ingress(struct __sk_buff *skb)
{
	return handle(skb, DIR_INGRESS);
}

SEC("tc")
int ikefrag_egress(struct __sk_buff *skb)
{
	return handle(skb, DIR_EGRESS);
}
