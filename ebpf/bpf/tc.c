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

/* Sizes of the parts of ring-buffer records: the common header and what
 * follows it in train and too-big records. The loader's length checks use
 * the generated Go types; TestRecordSizes compares the two (tcRecordSize*). */
enum record_size {
	EVENT_SIZE = sizeof(struct event),
	TRAIN_SIZE = sizeof(struct train),
	TOO_BIG_SIZE = sizeof(struct too_big),
};

/* Never called, so never loaded: its parameters keep in the object's BTF
 * the types that no variable or member has, for bpf2go to generate their
 * constants (see ../gen.go). clang keeps only the types of globals,
 * members and function parameters. */
void ikefrag_btf_types(enum counter_id c, enum direction d, enum limit l, enum record_size r,
		       const struct too_big *tb)
{
}

/* The parsed packet is handed to the handlers below through this per-CPU
 * slot, so that each handler can be a global function: the verifier checks
 * a global function once, on its own, instead of once for every path that
 * reaches it. That keeps every kernel's verifier within its budget (6.12
 * gave up on the inlined whole) and verification quick. Global functions
 * take only the context and scalars on the oldest supported kernels. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pkt);
} pkt_scratch SEC(".maps");

static __always_inline struct pkt *pkt_get(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&pkt_scratch, &zero);
}

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

/* fast_path decides the common untagged IPv4 cases from one bounds check
 * on the linear data, before any state is built: traffic that is neither
 * UDP nor ICMP nor a fragment leaves at once, and unfragmented ESP-in-UDP
 * is counted and leaves. It returns 1 when the packet is done with, 0 to
 * hand it to the full parser (VLAN, IPv6, IP options, IKE, anything the
 * linear data does not hold). */
static __always_inline int fast_path(struct __sk_buff *skb, __u32 dir)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	__u32 len = skb->len;
	struct {
		__u8 eth[12];
		__be16 proto;
		struct ipv4_hdr ip;
		struct udp_hdr uh;
		__u32 marker;
	} __attribute__((packed)) *h = data;

	if (cfg_no_eth || (void *)(h + 1) > end || h->proto != ETH_P_IP_BE || h->ip.vihl != 0x45)
		return 0;
	if (h->ip.frag_off & bpf_htons(IP_MF | IP_OFFMASK))
		return 0;
	if (h->ip.proto != PROTO_UDP)
		return h->ip.proto != PROTO_ICMP;
	if ((h->uh.sport != cfg_natt_port_be && h->uh.dport != cfg_natt_port_be) || h->marker == 0)
		return 0;
	__u16 tot = bpf_ntohs(h->ip.tot_len);
	__u16 ulen = bpf_ntohs(h->uh.len);
	if (ulen < sizeof(h->uh) + sizeof(h->marker) || ulen + 20 > tot || 14 + tot > len)
		return 0;
	count(counters_get(dir), C_ESP_IN_UDP, tot);
	return 1;
}

/* Global: verified once, on its own (see pkt_scratch). */
__attribute__((noinline)) int ikefrag_on_frag(struct __sk_buff *skb, __u32 dir)
{
	struct pkt *pk = pkt_get();

	if (pk && dir <= DIR_EGRESS)
		handle_frag(skb, dir, pk, counters_get(dir));
	return 0;
}

__attribute__((noinline)) int ikefrag_on_udp(struct __sk_buff *skb, __u32 dir)
{
	struct pkt *pk = pkt_get();

	if (pk && dir <= DIR_EGRESS)
		handle_udp(skb, dir, pk, counters_get(dir));
	return 0;
}

__attribute__((noinline)) int ikefrag_on_icmp(struct __sk_buff *skb, __u32 dir)
{
	struct pkt *pk = pkt_get();

	if (pk && dir <= DIR_EGRESS)
		handle_icmp(skb, dir, pk, counters_get(dir));
	return 0;
}

static __always_inline int handle(struct __sk_buff *skb, __u32 dir)
{
	if (fast_path(skb, dir))
		return TC_ACT_UNSPEC;
	/* Keep the compiler from reusing the fast path's context pointer
	 * arithmetic below: the verifier only accepts ctx field loads at a
	 * constant offset from the unmodified context pointer. */
	asm volatile("" : "+r"(skb));

	struct pkt *pk = pkt_get();
	if (!pk)
		return TC_ACT_UNSPEC;
	int r = parse_ip(skb, pk);

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
	if (pk->flags & IPF_FRAG)
		ikefrag_on_frag(skb, dir);
	else if (pk->proto == PROTO_UDP)
		ikefrag_on_udp(skb, dir);
	else if (pk->proto == PROTO_ICMP || pk->proto == PROTO_ICMPV6)
		ikefrag_on_icmp(skb, dir);
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
