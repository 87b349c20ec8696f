/* Classification of UDP packets on the IKE and NAT-T ports (RFC 7296,
 * RFC 3948): IKE on the IKE port; on the NAT-T port, a zero non-ESP marker
 * means IKE, a single 0xFF byte a keepalive, anything else ESP. */
#ifndef IKEFRAG_IKE_H
#define IKEFRAG_IKE_H

#include "common.h"
#include "config.h"
#include "parse.h"

struct udp_info {
	__u16 sport;		/* host order */
	__u16 dport;
	__u16 udp_len;
	__u8 kind;		/* enum ike_kind */
	__u8 marker;		/* IKE follows a non-ESP marker */
	__u32 avail;		/* UDP payload bytes present in this packet */
	__u32 payload_off;	/* offset of the UDP payload */
	__u8 ike[IKE_HDR_LEN];	/* raw IKE header when kind is IKEv1/IKEv2 */
};

enum {
	UDP_NOT_OURS = 0,
	UDP_OURS = 1,
	UDP_BAD = 2,
};

/* Reads the UDP header at pk->l4_off and classifies it. "first_frag"
 * relaxes the length check: a first fragment carries only part of the
 * datagram the UDP length describes. */
static __always_inline int classify_udp(struct __sk_buff *skb, const struct pkt *pk,
					struct udp_info *u, int first_frag)
{
	struct udp_hdr uh;

	if (pk->frag_len < sizeof(uh))
		return UDP_BAD;
	if (LOAD(skb, pk->l4_off, &uh))
		return UDP_BAD;

	int ike = uh.sport == cfg_ike_port_be || uh.dport == cfg_ike_port_be;
	int natt = uh.sport == cfg_natt_port_be || uh.dport == cfg_natt_port_be;
	if (!ike && !natt)
		return UDP_NOT_OURS;

	__u32 ulen = bpf_ntohs(uh.len);
	u->sport = bpf_ntohs(uh.sport);
	u->dport = bpf_ntohs(uh.dport);
	u->udp_len = ulen;
	u->marker = 0;
	u->kind = KIND_OTHER;
	u->payload_off = pk->l4_off + 8;
	if (ulen < 8)
		return UDP_BAD;
	__u32 avail = pk->frag_len - 8;
	if (first_frag) {
		/* The datagram must be longer than what this fragment holds. */
		if (ulen - 8 < avail)
			return UDP_BAD;
	} else {
		if (ulen > pk->frag_len)
			return UDP_BAD;
		avail = ulen - 8;
	}
	u->avail = avail;

	__u32 ike_off = 0;
	if (natt) {
		if (avail == 1) {
			__u8 b;

			if (LOAD(skb, u->payload_off, &b))
				return UDP_BAD;
			u->kind = b == 0xff ? KIND_KEEPALIVE : KIND_OTHER;
			return UDP_OURS;
		}
		if (avail < 4)
			return UDP_OURS;
		__u32 marker;

		if (LOAD(skb, u->payload_off, &marker))
			return UDP_BAD;
		if (marker != 0) {
			u->kind = KIND_ESP;
			return UDP_OURS;
		}
		u->marker = 1;
		ike_off = 4;
	}
	if (avail < ike_off + IKE_HDR_LEN)
		return UDP_OURS;
	struct {
		__u8 b[IKE_HDR_LEN];
	} h;
	if (LOAD(skb, u->payload_off + ike_off, &h))
		return UDP_BAD;
	__builtin_memcpy(u->ike, h.b, IKE_HDR_LEN);
	__u8 major = h.b[17] >> 4;
	if (major == 2)
		u->kind = KIND_IKEV2;
	else if (major == 1)
		u->kind = KIND_IKEV1;
	return UDP_OURS;
}

static __always_inline __u32 ike_length(const struct udp_info *u)
{
	return ((__u32)u->ike[24] << 24) | ((__u32)u->ike[25] << 16) |
	       ((__u32)u->ike[26] << 8) | (__u32)u->ike[27];
}

#endif
