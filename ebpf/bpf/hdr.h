/* Wire layouts of the IP and UDP headers, shared by every BPF program of
 * ikefrag (the observer's tc and kfree_skb programs, and the ESP fast
 * path). Only <linux/types.h> types: no kernel headers beyond those. */
#ifndef IKEFRAG_HDR_H
#define IKEFRAG_HDR_H

#include <linux/types.h>

struct ipv4_hdr {
	__u8 vihl;
	__u8 tos;
	__be16 tot_len;
	__be16 id;
	__be16 frag_off;
	__u8 ttl;
	__u8 proto;
	__u16 check;
	__be32 saddr;
	__be32 daddr;
};

struct ipv6_hdr {
	__be32 vtcfl;
	__be16 plen;
	__u8 nexthdr;
	__u8 hlim;
	__u8 saddr[16];
	__u8 daddr[16];
};

struct udp_hdr {
	__be16 sport;
	__be16 dport;
	__be16 len;
	__u16 check;
};

#endif
