//go:build ignore

/* Benchmark peer: on tc ingress of the backend's interface, turns every
 * UDP datagram to cfg_port around (Ethernet, IP addresses and ports
 * swapped) and sends it back out of the same interface, so the backend
 * side of a round trip costs the same for every relay measured. Swapping
 * leaves every checksum valid. */

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

char __license[] SEC("license") = "Dual BSD/GPL";

volatile const __be16 cfg_port = bpf_htons(4500);

struct udp_ports {
	__be16 sport;
	__be16 dport;
};

static __always_inline void swap(__u8 *a, __u8 *b, int n)
{
#pragma unroll
	for (int i = 0; i < 16; i++) {
		if (i >= n)
			break;
		__u8 t = a[i];
		a[i] = b[i];
		b[i] = t;
	}
}

SEC("tc")
int udp_echo(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct udp_ports *up;
	__be16 t;

	if ((void *)(eth + 1) > end)
		return TC_ACT_OK;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		__u8 *ip = (void *)(eth + 1);

		if ((void *)(ip + 20 + sizeof(*up)) > end || ip[0] != 0x45 || ip[9] != IPPROTO_UDP ||
		    (ip[6] & 0x3f) || ip[7])
			return TC_ACT_OK;
		up = (void *)(ip + 20);
		if (up->dport != cfg_port)
			return TC_ACT_OK;
		swap(ip + 12, ip + 16, 4);
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		__u8 *ip = (void *)(eth + 1);

		if ((void *)(ip + 40 + sizeof(*up)) > end || ip[6] != IPPROTO_UDP)
			return TC_ACT_OK;
		up = (void *)(ip + 40);
		if (up->dport != cfg_port)
			return TC_ACT_OK;
		swap(ip + 8, ip + 24, 16);
	} else {
		return TC_ACT_OK;
	}
	t = up->sport;
	up->sport = up->dport;
	up->dport = t;
	swap(eth->h_dest, eth->h_source, ETH_ALEN);
	return bpf_redirect(skb->ifindex, 0);
}
