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

/* The IPv6 extension headers (RFC 8200 §4 and the IANA registry) that may
 * stand between the fixed header and UDP. */
static __attribute__((always_inline)) inline int ipv6_is_ext(__u8 nh)
{
	switch (nh) {
	case 0:		/* hop-by-hop */
	case 43:	/* routing */
	case 44:	/* fragment */
	case 51:	/* AH */
	case 60:	/* destination options */
	case 135:	/* mobility */
	case 139:	/* HIP */
	case 140:	/* shim6 */
		return 1;
	}
	return 0;
}

struct udp_hdr {
	__be16 sport;
	__be16 dport;
	__be16 len;
	__u16 check;
};

#endif
