/* The IPv6 extension-header walk (RFC 8200 §4), one for every program of
 * ikefrag: the observer's tc parser, its kfree_skb drop reporter and the
 * ESP fast path. The step is shared by all; the tc programs also share the
 * loop, which reads the packet with LOAD; the drop reporter, reading kernel
 * memory, has its own loop around the same step. */
#ifndef IKEFRAG_IPV6_H
#define IKEFRAG_IPV6_H

#include <linux/bpf.h>
#include <linux/types.h>
#include <bpf/bpf_endian.h>

#include "load.h"

#define IPV6_HOPOPTS	0
#define IPV6_ROUTING	43
#define IPV6_FRAGMENT	44
#define IPV6_AH		51
#define IPV6_DSTOPTS	60

/* Extension headers walked before giving up; real IKE traffic carries at
 * most a fragment header, so 6 leaves room for exotic but legal chains. */
#define IPV6_MAX_EXT	6

/* The IPv6 extension headers (RFC 8200 §4 and the IANA registry) that may
 * stand between the fixed header and UDP. */
static __attribute__((always_inline)) inline int ipv6_is_ext(__u8 nh)
{
	switch (nh) {
	case IPV6_HOPOPTS:
	case IPV6_ROUTING:
	case IPV6_FRAGMENT:
	case IPV6_AH:
	case IPV6_DSTOPTS:
	case 135:	/* mobility */
	case 139:	/* HIP */
	case 140:	/* shim6 */
		return 1;
	}
	return 0;
}

/* The first 8 bytes of any extension header: every one is at least that
 * long. The fragment header is exactly that. */
struct ipv6_ext_hdr {
	__u8 nexthdr;
	__u8 len;		/* in 8-byte units after the first (AH: 4-byte units after the first two) */
	__be16 frag_off;	/* fragment header: offset, M flag */
	__be32 id;		/* fragment header: identification */
};

/* ipv6_walk.flags */
#define IPV6_W_FRAG_HDR	0x01	/* a fragment header was met, atomic (RFC 6946) or not */
#define IPV6_W_FRAG	0x02	/* part of a fragmented datagram */
#define IPV6_W_MF	0x04	/* more fragments follow */

struct ipv6_walk {
	__u32 cur;		/* offset of the header nh names */
	__u32 data_off;		/* start of the fragment data: after the fragmentable part */
	__u32 frag_id;		/* IPV6_W_FRAG: identification */
	__u16 frag_off;		/* IPV6_W_FRAG: offset in bytes */
	__u8 nh;		/* type of the header at cur */
	__u8 flags;		/* IPV6_W_* */
};

static __always_inline void ipv6_walk_init(struct ipv6_walk *w, __u32 off, __u8 nh)
{
	w->cur = off;
	w->data_off = off;
	w->frag_id = 0;
	w->frag_off = 0;
	w->nh = nh;
	w->flags = 0;
}

/* Steps over the extension header x of type w->nh at w->cur. Returns 1
 * when the walk ends here: a fragment header of a non-first fragment,
 * after which everything is fragment data. */
static __always_inline int ipv6_walk_step(struct ipv6_walk *w, const struct ipv6_ext_hdr *x)
{
	if (w->nh == IPV6_FRAGMENT) {
		__u16 fo = bpf_ntohs(x->frag_off);

		w->flags |= IPV6_W_FRAG_HDR;
		w->cur += 8;
		w->data_off = w->cur;
		w->nh = x->nexthdr;
		/* Offset 0 without M is an atomic fragment (RFC 6946): a
		 * whole packet, not part of a train. */
		if (fo & 0xfff9) {
			w->flags |= IPV6_W_FRAG;
			w->frag_id = bpf_ntohl(x->id);
			w->frag_off = fo & 0xfff8;
			if (fo & 1)
				w->flags |= IPV6_W_MF;
			if (w->frag_off)
				return 1;
		}
		return 0;
	}
	if (w->nh == IPV6_AH)
		w->cur += ((__u32)x->len + 2) * 4;
	else
		w->cur += ((__u32)x->len + 1) * 8;
	w->nh = x->nexthdr;
	/* Headers after a fragment header are fragment data. */
	if (!(w->flags & IPV6_W_FRAG))
		w->data_off = w->cur;
	return 0;
}

enum ipv6_walk_result {
	IPV6_WALK_OK = 0,	/* at the upper-layer header, or in fragment data */
	IPV6_WALK_BAD = 1,	/* a header could not be read */
	IPV6_WALK_LIMIT = 2,	/* more than IPV6_MAX_EXT extension headers */
};

/* Walks the extension headers of the packet in skb from off, where a
 * header of type nh starts (the fixed header's next header). */
static __always_inline int ipv6_walk(struct __sk_buff *skb, __u32 off, __u8 nh, struct ipv6_walk *w)
{
	ipv6_walk_init(w, off, nh);
#pragma unroll
	for (int i = 0; i < IPV6_MAX_EXT; i++) {
		struct ipv6_ext_hdr x;

		if (!ipv6_is_ext(w->nh))
			return IPV6_WALK_OK;
		if (LOAD(skb, w->cur, &x))
			return IPV6_WALK_BAD;
		if (ipv6_walk_step(w, &x))
			return IPV6_WALK_OK;
	}
	return ipv6_is_ext(w->nh) ? IPV6_WALK_LIMIT : IPV6_WALK_OK;
}

#endif
