//go:build ignore

/* kfree_skb tracepoint: reports the kernel's drop reason for IP fragments,
 * for UDP packets of the IKE and NAT-T ports, and for ICMP fragmentation-
 * needed and ICMPv6 packet-too-big messages, wherever in the stack
 * they are freed (netfilter, reassembly timeout, too big, ...). It shares
 * the ring buffer with the tc programs. The few sk_buff fields it reads
 * are declared here and relocated against the running kernel (CO-RE). */

#include "common.h"
#include "hdr.h"
#include "ipv6.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

char __license[] SEC("license") = "Dual BSD/GPL";

struct ns_common {
	unsigned int inum;
} __attribute__((preserve_access_index));

struct net {
	struct ns_common ns;
} __attribute__((preserve_access_index));

typedef struct {
	struct net *net;
} possible_net_t;

struct net_device {
	int ifindex;
	possible_net_t nd_net;
} __attribute__((preserve_access_index));

struct sk_buff {
	struct net_device *dev;
	unsigned int len;
	int skb_iif;
	unsigned char *head;
	__u16 network_header;
	__u16 transport_header;
	__be16 protocol;
} __attribute__((preserve_access_index));

enum skb_drop_reason {
	SKB_NOT_DROPPED_YET = 0,
	SKB_CONSUMED = 1,
};

volatile const __u16 cfg_ike_port_be = bpf_htons(500);
volatile const __u16 cfg_natt_port_be = bpf_htons(4500);

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);	/* replaced by the tc object's ring */
} events SEC(".maps");

struct drop_counters {
	__u64 reported;
	__u64 ringbuf_fail;
	__u64 unreadable;	/* headers could not be read */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct drop_counters);
} drop_stats SEC(".maps");

static __always_inline int ours(__be16 sport, __be16 dport)
{
	return sport == cfg_ike_port_be || dport == cfg_ike_port_be ||
	       sport == cfg_natt_port_be || dport == cfg_natt_port_be;
}

SEC("tp_btf/kfree_skb")
int BPF_PROG(ikefrag_kfree_skb, struct sk_buff *skb, void *location, enum skb_drop_reason reason)
{
	/* Reasons up to SKB_CONSUMED are no drops. Kernels before 6.3 have
	 * no SKB_CONSUMED (consume_skb had a tracepoint of its own): there
	 * SKB_NOT_DROPPED_YET, 0, is the only such value. */
	__u32 not_dropped = 0;
	if (bpf_core_enum_value_exists(enum skb_drop_reason, SKB_CONSUMED))
		not_dropped = bpf_core_enum_value(enum skb_drop_reason, SKB_CONSUMED);
	if ((__u32)reason <= not_dropped)
		return 0;

	__be16 proto = skb->protocol;
	__u16 nh_off = skb->network_header;
	if ((proto != ETH_P_IP_BE && proto != ETH_P_IPV6_BE) || nh_off == 0xffff)
		return 0;
	unsigned char *l3 = skb->head + nh_off;

	struct event ev = {};
	__u32 zero = 0;
	struct drop_counters *dc = bpf_map_lookup_elem(&drop_stats, &zero);
	__u32 l4 = 0;
	int has_l4 = 0;

	if (proto == ETH_P_IP_BE) {
		struct ipv4_hdr ip;
		if (bpf_probe_read_kernel(&ip, sizeof(ip), l3))
			goto unreadable;
		if ((ip.vihl >> 4) != 4)
			return 0;
		__u16 fo = bpf_ntohs(ip.frag_off);
		ev.family = 4;
		ev.proto = ip.proto;
		ev.ip_id = bpf_ntohs(ip.id);
		ev.ip_len = bpf_ntohs(ip.tot_len);
		ev.frag_off = (fo & 0x1fff) * 8;
		if (fo & 0x4000)
			ev.ip_flags |= IPF_DF;
		if (fo & 0x2000)
			ev.ip_flags |= IPF_MF;
		if (fo & 0x3fff)
			ev.ip_flags |= IPF_FRAG;
		__builtin_memcpy(ev.saddr, &ip.saddr, 4);
		__builtin_memcpy(ev.daddr, &ip.daddr, 4);
		l4 = (ip.vihl & 0x0f) * 4;
		has_l4 = (ip.proto == 17 || ip.proto == 1) && !(fo & 0x1fff);
	} else {
		struct ipv6_hdr ip6;
		if (bpf_probe_read_kernel(&ip6, sizeof(ip6), l3))
			goto unreadable;
		ev.family = 6;
		ev.ip_len = 40 + bpf_ntohs(ip6.plen);
		__builtin_memcpy(ev.saddr, ip6.saddr, 16);
		__builtin_memcpy(ev.daddr, ip6.daddr, 16);
		/* The walk of ipv6.h, over kernel memory. */
		struct ipv6_walk w;
		ipv6_walk_init(&w, 40, ip6.nexthdr);
#pragma unroll
		for (int i = 0; i < IPV6_MAX_EXT; i++) {
			struct ipv6_ext_hdr x;
			if (!ipv6_is_ext(w.nh))
				break;
			if (bpf_probe_read_kernel(&x, sizeof(x), l3 + (w.cur & 0x3ff)))
				goto unreadable;
			if (ipv6_walk_step(&w, &x))
				break;
		}
		if (w.flags & IPV6_W_FRAG) {
			ev.ip_flags |= IPF_FRAG;
			ev.ip_id = w.frag_id;
			ev.frag_off = w.frag_off;
			if (w.flags & IPV6_W_MF)
				ev.ip_flags |= IPF_MF;
		}
		__u8 nh = w.nh;
		l4 = w.cur;
		ev.proto = nh;
		has_l4 = (nh == 17 || nh == 58) && ev.frag_off == 0;
	}

	if (has_l4 && ev.proto != 17) {
		/* ICMP: only fragmentation needed (v4 type 3 code 4) and packet
		 * too big (v6 type 2) matter; dropped here they make a local
		 * path-MTU discovery black hole. Type and code go in the port
		 * fields of the record. */
		__u8 tc[2];
		if (bpf_probe_read_kernel(tc, sizeof(tc), l3 + (l4 & 0x3ff)))
			goto unreadable;
		if (!(ev.proto == 1 && tc[0] == 3 && tc[1] == 4) && !(ev.proto == 58 && tc[0] == 2))
			return 0;
		ev.sport = tc[0];
		ev.dport = tc[1];
	} else if (has_l4) {
		struct {
			__be16 sport;
			__be16 dport;
		} ports;
		if (bpf_probe_read_kernel(&ports, sizeof(ports), l3 + (l4 & 0x3ff)))
			goto unreadable;
		if (ours(ports.sport, ports.dport)) {
			ev.sport = bpf_ntohs(ports.sport);
			ev.dport = bpf_ntohs(ports.dport);
		} else if (!(ev.ip_flags & IPF_FRAG)) {
			return 0;
		}
	} else if (!(ev.ip_flags & IPF_FRAG)) {
		return 0;
	}

	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		if (dc)
			__sync_fetch_and_add(&dc->ringbuf_fail, 1);
		return 0;
	}
	ev.type = EV_DROP;
	ev.dir = 0xff;
	ev.ts_ns = bpf_ktime_get_ns();
	ev.reason = reason;
	struct net_device *dev = skb->dev;
	ev.ifindex = dev ? dev->ifindex : skb->skb_iif;
	/* The reporter sees every namespace of the host; user space keeps
	 * the drops of the namespaces it observes. */
	ev.netns = dev ? BPF_CORE_READ(dev, nd_net.net, ns.inum) : 0;
	__builtin_memcpy(e, &ev, sizeof(ev));
	bpf_ringbuf_submit(e, 0);
	if (dc)
		__sync_fetch_and_add(&dc->reported, 1);
	return 0;

unreadable:
	if (dc)
		__sync_fetch_and_add(&dc->unreadable, 1);
	return 0;
}
