//go:build ignore

/* ESP fast path of the proxy. Runs on tc/tcx ingress of the proxy's
 * client-facing and backend-facing interfaces. A datagram of a mapped
 * NAT-T flow whose payload is ESP (first word non-zero, at least an SPI and
 * a sequence number) gets the addresses and ports the proxy's sockets
 * would have sent it with, incrementally fixed checksums, and is
 * redirected to the next hop through the neighbour subsystem. Everything
 * else returns TC_ACT_UNSPEC untouched: the proxy's sockets get exactly
 * what they would have got without this program. */

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/in.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "fastpath.h"
#include "../../bpf/hdr.h"
#include "../../bpf/ipv6.h"
#include "../../bpf/load.h"

char __license[] SEC("license") = "Dual BSD/GPL";

#define EINVAL		22
#define IP_MF		0x2000
#define IP_OFFMASK	0x1fff
#define ESP_MIN		8	/* SPI and sequence number */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 32768);	/* two per flow, set by the loader */
	__type(key, struct fp_key);
	__type(value, struct fp_flow);
} flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 32768);	/* as many as flows entries */
	__type(key, __u32);
	__type(value, struct fp_counters);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FP_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

/* Never called, so never loaded: its parameter keeps enum fp_stat in the
 * object's BTF for bpf2go to generate its constants (see ../gen.go);
 * clang keeps only the types of globals, members and function
 * parameters. */
void fastpath_btf_types(enum fp_stat s)
{
}

static __always_inline void stat(enum fp_stat s)
{
	__u32 k = s;
	__u64 *c = bpf_map_lookup_elem(&stats, &k);

	if (c)
		*c += 1;
}

static __always_inline int pass(enum fp_stat why)
{
	stat(why);
	return TC_ACT_UNSPEC;
}

/* forward handles a UDP datagram whose headers have been checked: l3 and
 * l4 are the offsets of the IP and UDP headers, ip_len the IP packet's
 * length, plen the UDP payload length, check the UDP checksum field as
 * received. */
static __always_inline int forward(struct __sk_buff *skb, struct fp_key *k, __u32 l3, __u32 l4,
				   __u32 ip_len, __u32 plen, __u16 check, int v6)
{
	struct fp_flow *f = bpf_map_lookup_elem(&flows, k);

	if (!f)
		return pass(FP_UNMAPPED);

	/* RFC 3948: a zero first word is the non-ESP marker of IKE; a single
	 * 0xFF byte is a keepalive; ESP has at least an SPI and a sequence
	 * number. */
	if (plen < ESP_MIN) {
		__u8 b;
		__u32 w;

		if (plen == 1 && !LOAD(skb, l4 + 8, &b) && b == 0xff)
			return pass(FP_KEEPALIVE);
		if (plen >= 4 && !LOAD(skb, l4 + 8, &w) && w == 0)
			return pass(FP_IKE);
		return pass(FP_SHORT);
	}
	__u32 spi;

	if (LOAD(skb, l4 + 8, &spi))
		return pass(FP_MALFORMED);
	if (spi == 0)
		return pass(FP_IKE);
	if (f->in_ifindex && skb->ingress_ifindex != f->in_ifindex)
		return pass(FP_WRONG_IFACE);
	if (skb->gso_size)
		return pass(FP_GSO);
	if (v6 && check == 0)
		return pass(FP_ZERO_CSUM6);

	/* The proxy's socket would have fragmented a datagram above the
	 * route's MTU (a locked per-client MTU, say): leave those to it. */
	if (f->mtu && ip_len > f->mtu)
		return pass(FP_TOO_BIG);
	/* The helper also says whether the egress interface still exists:
	 * redirecting to a vanished one would drop the datagram. */
	__u32 mtu = 0;
	long r = bpf_check_mtu(skb, f->ifindex, &mtu, 0, 0);

	if (r < 0)
		return pass(FP_NO_DEVICE);
	if (r != BPF_MTU_CHK_RET_SUCCESS)
		return pass(FP_TOO_BIG);

	/* The first write makes the header writable (unclones); if that
	 * fails nothing has changed yet and the datagram can still go up. */
	if (v6)
		r = bpf_skb_store_bytes(skb, l3 + 8, f->hdr, 36, 0);
	else
		r = bpf_skb_store_bytes(skb, l3 + 12, f->hdr, 12, 0);
	if (r)
		return pass(FP_REWRITE_FAIL);

	/* The address difference applies to the IPv4 header checksum and to
	 * the UDP pseudo header; the port difference to the UDP checksum only
	 * (for CHECKSUM_PARTIAL skbs the helper leaves non-pseudo-header
	 * changes to whoever completes the checksum). A zero UDP checksum
	 * over IPv4 means "none" and stays zero. */
	if (!v6 && bpf_l3_csum_replace(skb, l3 + 10, 0, f->csum_addr, 0))
		goto drop;
	if (v6 || check) {
		__u64 fl = BPF_F_PSEUDO_HDR | BPF_F_MARK_MANGLED_0;

		r = -EINVAL;
		/* BPF_F_IPV6 keeps skb->csum right for CHECKSUM_COMPLETE;
		 * kernels from before the flag refuse it with -EINVAL. */
		if (v6)
			r = bpf_l4_csum_replace(skb, l4 + 6, 0, f->csum_addr, fl | BPF_F_IPV6);
		if (r == -EINVAL)
			r = bpf_l4_csum_replace(skb, l4 + 6, 0, f->csum_addr, fl);
		if (r)
			goto drop;
		if (bpf_l4_csum_replace(skb, l4 + 6, 0, f->csum_port, BPF_F_MARK_MANGLED_0))
			goto drop;
	}

	__u32 slot = f->slot;
	struct fp_counters *c = bpf_map_lookup_elem(&counters, &slot);

	if (c) {
		__sync_fetch_and_add(&c->packets, 1);
		__sync_fetch_and_add(&c->bytes, plen);
		__u64 now = bpf_ktime_get_coarse_ns();
		if (c->last_ns != now)
			c->last_ns = now;
	}
	stat(FP_REDIRECT);
	return bpf_redirect_neigh(f->ifindex, NULL, 0, 0);

drop:
	/* Unreachable in practice: the header was made writable by the
	 * store above. A half-rewritten datagram must not reach anyone. */
	stat(FP_DROPPED);
	return TC_ACT_SHOT;
}

static __always_inline int fast4(struct __sk_buff *skb)
{
	struct ipv4_hdr ip;
	struct udp_hdr uh;
	const __u32 l3 = ETH_HLEN, l4 = ETH_HLEN + sizeof(ip);

	if (LOAD(skb, l3, &ip))
		return pass(FP_MALFORMED);
	if (ip.proto != IPPROTO_UDP)
		return pass(FP_NOT_UDP);
	if (ip.frag_off & bpf_htons(IP_MF | IP_OFFMASK))
		return pass(FP_FRAGMENT);
	if (ip.vihl != 0x45) {
		if ((ip.vihl >> 4) == 4 && (ip.vihl & 0x0f) > 5)
			return pass(FP_IP_OPTIONS);
		return pass(FP_MALFORMED);
	}
	__u32 tot = bpf_ntohs(ip.tot_len);

	if (tot < sizeof(ip) + sizeof(uh) || l3 + tot > skb->len)
		return pass(FP_MALFORMED);
	if (LOAD(skb, l4, &uh) || bpf_ntohs(uh.len) != tot - sizeof(ip))
		return pass(FP_MALFORMED);

	struct fp_key k = {
		.family = 4,
		.sport = uh.sport,
		.dport = uh.dport,
	};
	__builtin_memcpy(k.saddr, &ip.saddr, 4);
	__builtin_memcpy(k.daddr, &ip.daddr, 4);
	return forward(skb, &k, l3, l4, tot, tot - sizeof(ip) - sizeof(uh), uh.check, 0);
}

static __always_inline int fast6(struct __sk_buff *skb)
{
	struct ipv6_hdr ip;
	struct udp_hdr uh;
	const __u32 l3 = ETH_HLEN, l4 = ETH_HLEN + sizeof(ip);

	if (LOAD(skb, l3, &ip))
		return pass(FP_MALFORMED);
	if ((ip.vtcfl & bpf_htonl(0xf0000000)) != bpf_htonl(0x60000000))
		return pass(FP_MALFORMED);
	if (ip.nexthdr != IPPROTO_UDP) {
		if (!ipv6_is_ext(ip.nexthdr))
			return pass(FP_NOT_UDP);
		/* Extension headers are the stack's; the walk only says why:
		 * a fragment header anywhere in the chain makes a fragment,
		 * reassembly being the stack's job too. */
		struct ipv6_walk w;

		ipv6_walk(skb, l4, ip.nexthdr, &w);
		if (ip.nexthdr == IPV6_FRAGMENT || (w.flags & IPV6_W_FRAG_HDR))
			return pass(FP_FRAGMENT);
		return pass(FP_IP_OPTIONS);
	}
	__u32 plen = bpf_ntohs(ip.plen);

	if (plen < sizeof(uh) || l4 + plen > skb->len)
		return pass(FP_MALFORMED);
	if (LOAD(skb, l4, &uh) || bpf_ntohs(uh.len) != plen)
		return pass(FP_MALFORMED);

	struct fp_key k = {
		.family = 6,
		.sport = uh.sport,
		.dport = uh.dport,
	};
	__builtin_memcpy(k.saddr, ip.saddr, 16);
	__builtin_memcpy(k.daddr, ip.daddr, 16);
	return forward(skb, &k, l3, l4, sizeof(ip) + plen, plen - sizeof(uh), uh.check, 1);
}

SEC("tc")
int esp_fastpath(struct __sk_buff *skb)
{
	/* Only frames for this host with an untagged Ethernet header: the
	 * neighbour redirect strips exactly 14 bytes, and the stack would
	 * drop what was addressed to another MAC. */
	if (skb->vlan_present || skb->pkt_type != PACKET_HOST)
		return pass(FP_NOT_IP);
	if (skb->protocol == bpf_htons(ETH_P_IP))
		return fast4(skb);
	if (skb->protocol == bpf_htons(ETH_P_IPV6))
		return fast6(skb);
	return pass(FP_NOT_IP);
}
