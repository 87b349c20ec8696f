/* IP fragment trains. Any fragment of a UDP datagram creates the train
 * (fragments arrive in any order), so state never depends on the first
 * fragment arriving first. Existing trains are updated in place with
 * atomics: an LRU insert costs several times a lookup, so it happens once
 * per train. */
#ifndef IKEFRAG_FRAG_H
#define IKEFRAG_FRAG_H

#include "common.h"
#include "config.h"
#include "counters.h"
#include "events.h"
#include "ike.h"
#include "parse.h"

struct train_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__u32 id;		/* IPv4 Identification or IPv6 fragment Identification */
	__u8 proto;
	__u8 family;
	__u8 slot;		/* interface slot: a forwarded train seen on two */
	__u8 dir;		/* interfaces is two sightings, not duplicates */
};

struct frag_rec {
	__u32 t_us;		/* arrival, microseconds after first_ns */
	__u16 off;		/* bytes */
	__u16 len;		/* fragment data bytes */
	__u16 ip_len;
	__u8 mf;
	__u8 pad;
};

/* train.flags bits */
enum train_flag {
	TF_HAVE_FIRST = 0x001,
	TF_HAVE_LAST = 0x002,
	TF_COMPLETE = 0x004,
	TF_OVERLAP = 0x008,
	TF_DUP = 0x010,
	TF_LIST_FULL = 0x020,
	TF_IKE = 0x040,		/* first fragment is IKE on our ports */
	TF_NOT_IKE = 0x080,	/* first fragment is something else: never reported */
	TF_MARKER = 0x100,	/* IKE after a non-ESP marker */
	TF_BAD = 0x200,		/* inconsistent fragment (beyond the end, second last) */
};

struct train {
	__u64 first_ns;
	__u64 last_ns;
	__u32 nfrags;		/* fragments seen, duplicates excluded; the first
				 * TRAIN_MAX_FRAGS are recorded in frags[] */
	__u32 bytes;		/* fragment data bytes, duplicates and overlaps excluded */
	__u32 end_max;		/* highest end offset seen */
	__u32 total;		/* end of the last fragment, once it arrived */
	enum train_flag flags;	/* TF_* bits; as wide as a __u32 */
	__u32 ifindex;
	__u16 sport;
	__u16 dport;
	__u16 udp_len;
	__u8 kind;		/* enum ike_kind of the first fragment */
	__u8 pad;
	__u8 ike[IKE_HDR_LEN];	/* raw IKE header from the first fragment */
	struct frag_rec frags[TRAIN_MAX_FRAGS];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);	/* set by the loader */
	__type(key, struct train_key);
	__type(value, struct train);
} trains SEC(".maps");

/* A new train is assembled here: it is too large for the 512-byte stack
 * next to everything else. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct train);
} train_scratch SEC(".maps");

struct train_event {
	struct event h;
	struct train t;
};

/* Emits a datagram record for an IKE datagram or the first fragment of
 * one: header fields plus the first cfg_capture_len bytes of UDP payload. */
static __always_inline void emit_datagram(struct __sk_buff *skb, __u32 dir, const struct pkt *pk,
					  const struct udp_info *u, struct counter_set *cs)
{
	__u32 zero = 0;
	struct dgram_buf *b = bpf_map_lookup_elem(&dgram_scratch, &zero);

	if (!b)
		return;
	event_fill(&b->h, EV_DATAGRAM, dir, pk);
	b->h.sport = u->sport;
	b->h.dport = u->dport;
	b->h.kind = u->kind;
	b->h.udp_len = u->udp_len;
	b->h.avail = u->avail;
	if (u->marker)
		b->h.ip_flags |= IPF_MARKER;

	__u32 cap = cfg_capture_len;
	if (cap > u->avail)
		cap = u->avail;
	if (cap > CAPTURE_MAX)
		cap = CAPTURE_MAX;
	if (cap > 0) {
		/* The same value, in a form every verifier bounds to
		 * [1, CAPTURE_MAX]: 6.1 does not learn a lower bound from
		 * "cap > 0" once the compiler has merged the two tests. */
		cap = ((cap - 1) & (CAPTURE_MAX - 1)) + 1;
		if (bpf_skb_load_bytes(skb, u->payload_off, b->data, cap))
			cap = 0;
	}
	b->h.cap_len = cap;
	if (bpf_ringbuf_output(&events, b, sizeof(struct event) + (cap & (CAPTURE_MAX * 2 - 1)), 0))
		count(cs, C_RINGBUF_FAIL, 0);
}

static __always_inline void emit_train(__u32 dir, const struct pkt *pk, struct train *t,
				       struct counter_set *cs)
{
	struct train_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);

	if (!e) {
		count(cs, C_RINGBUF_FAIL, 0);
		return;
	}
	event_fill(&e->h, EV_TRAIN, dir, pk);
	e->h.ifindex = t->ifindex;
	e->h.sport = t->sport;
	e->h.dport = t->dport;
	e->h.kind = t->kind;
	e->h.udp_len = t->udp_len;
	__builtin_memcpy(&e->t, t, sizeof(*t));
	bpf_ringbuf_submit(e, 0);
}

static __always_inline void handle_frag(struct __sk_buff *skb, __u32 dir, struct pkt *pk,
					struct counter_set *cs)
{
	__u32 start = pk->frag_off, len = pk->frag_len, end = start + len;
	int first = start == 0, last = !(pk->flags & IPF_MF);

	count(cs, first ? C_FRAG_FIRST : (last ? C_FRAG_LAST : C_FRAG_MIDDLE), pk->ip_len);

	/* Non-last fragments carry a multiple of 8 bytes; nothing is empty;
	 * nothing reaches past the 64 KiB datagram limit. */
	if (len == 0 || (!last && (len & 7)) || end > 65535) {
		count(cs, C_MALFORMED, pk->ip_len);
		return;
	}
	if (pk->proto != PROTO_UDP)
		return;

	/* The first fragment says whether the train is IKE. */
	struct udp_info u = {};
	int ours = 0;
	if (first) {
		int r = classify_udp(skb, pk, &u, 1);
		if (r == UDP_BAD) {
			count(cs, C_MALFORMED, pk->ip_len);
			return;
		}
		ours = r == UDP_OURS;
		if (ours) {
			__u32 cls = u.kind == KIND_IKEV2 ? C_IKEV2 :
				    u.kind == KIND_IKEV1 ? C_IKEV1 :
				    u.kind == KIND_ESP ? C_ESP_IN_UDP :
				    u.kind == KIND_KEEPALIVE ? C_KEEPALIVE : C_OTHER_UDP;
			count(cs, cls, pk->ip_len);
			if ((u.kind == KIND_IKEV2 || u.kind == KIND_IKEV1) && ike_length(&u) > cfg_large_ike)
				count(cs, C_IKE_LARGE, pk->ip_len);
		}
	}
	int is_ike = ours && (u.kind == KIND_IKEV2 || u.kind == KIND_IKEV1);
	__u32 first_flags = 0;
	if (first) {
		first_flags = TF_HAVE_FIRST | (is_ike ? TF_IKE : TF_NOT_IKE);
		if (is_ike && u.marker)
			first_flags |= TF_MARKER;
	}

	struct train_key key = {};
	__builtin_memcpy(key.saddr, pk->saddr, 16);
	__builtin_memcpy(key.daddr, pk->daddr, 16);
	key.id = pk->ip_id;
	key.proto = pk->proto;
	key.family = pk->family;
	key.slot = cfg_slot;
	key.dir = dir;

	__u64 now = bpf_ktime_get_ns();
	struct train *t = bpf_map_lookup_elem(&trains, &key);
	if (!t) {
		__u32 zero = 0;
		struct train *n = bpf_map_lookup_elem(&train_scratch, &zero);
		if (!n)
			return;
		__builtin_memset(n, 0, sizeof(*n));
		n->first_ns = now;
		n->last_ns = now;
		n->nfrags = 1;
		n->bytes = len;
		n->end_max = end;
		n->ifindex = cfg_ifindex;
		n->frags[0].off = start;
		n->frags[0].len = len;
		n->frags[0].ip_len = pk->ip_len;
		n->frags[0].mf = !last;
		n->flags = first_flags;
		if (last) {
			n->total = end;
			n->flags |= TF_HAVE_LAST;
		}
		if (first) {
			n->sport = u.sport;
			n->dport = u.dport;
			n->udp_len = u.udp_len;
			n->kind = ours ? u.kind : KIND_NONE;
			__builtin_memcpy(n->ike, u.ike, IKE_HDR_LEN);
		}
		long err = bpf_map_update_elem(&trains, &key, n, BPF_NOEXIST);
		if (err == 0) {
			count(cs, C_TRAIN_STARTED, 0);
			if (is_ike)
				emit_datagram(skb, dir, pk, &u, cs);
			return;
		}
		/* Another CPU created it between lookup and insert. */
		t = bpf_map_lookup_elem(&trains, &key);
		if (!t) {
			count(cs, C_LRU_INSERT_FAIL, pk->ip_len);
			return;
		}
	}

	if (t->flags & TF_COMPLETE) {
		count(cs, C_TRAIN_LATE_FRAG, pk->ip_len);
		return;
	}

	/* Compare with the recorded ranges. A fragment inside a recorded one
	 * (identical or contained) is a duplicate, as receivers treat it: a
	 * retransmission on the path or a mirrored copy. A partial overlap makes
	 * the train undeliverable: IPv6 receivers must discard the datagram
	 * (RFC 5722) and Linux does the same for IPv4 since 4.19, so such a train
	 * is flagged and never reported complete. The walk is unrolled: the
	 * oldest verifiers refuse some loop layouts, and 16 short steps cost
	 * less than a loop's bookkeeping. */
	__u32 n = t->nfrags;
	int dup = 0, overlap = 0;
#pragma unroll
	for (__u32 i = 0; i < TRAIN_MAX_FRAGS; i++) {
		if (i < n) {
			__u32 s = t->frags[i].off, e = s + t->frags[i].len;
			if (s <= start && end <= e)
				dup = 1;
			else if (start < e && s < end)
				overlap = 1;
		}
	}
	if (dup) {
		ATOMIC_OR(&t->flags, TF_DUP);
		count(cs, C_TRAIN_DUP_FRAG, pk->ip_len);
		return;
	}
	if (last && (t->flags & TF_HAVE_LAST) && t->total != end) {
		ATOMIC_OR(&t->flags, TF_BAD);
		count(cs, C_MALFORMED, pk->ip_len);
		return;
	}

	/* The fetch-and-add claims a slot even when two CPUs race. */
	__u32 idx = ATOMIC_FETCH_ADD(&t->nfrags, 1);
	if (idx < TRAIN_MAX_FRAGS) {
		t->frags[idx & (TRAIN_MAX_FRAGS - 1)].off = start;
		t->frags[idx & (TRAIN_MAX_FRAGS - 1)].len = len;
		t->frags[idx & (TRAIN_MAX_FRAGS - 1)].ip_len = pk->ip_len;
		t->frags[idx & (TRAIN_MAX_FRAGS - 1)].mf = !last;
		t->frags[idx & (TRAIN_MAX_FRAGS - 1)].t_us = (now - t->first_ns) / 1000;
	} else {
		ATOMIC_OR(&t->flags, TF_LIST_FULL);
		count(cs, C_TRAIN_LIST_FULL, 0);
	}
	if (overlap) {
		ATOMIC_OR(&t->flags, TF_OVERLAP);
		count(cs, C_TRAIN_OVERLAP, pk->ip_len);
	} else {
		ATOMIC_ADD(&t->bytes, len);
	}
	if (end > t->end_max)
		t->end_max = end;
	t->last_ns = now;
	if (first) {
		t->sport = u.sport;
		t->dport = u.dport;
		t->udp_len = u.udp_len;
		t->kind = ours ? u.kind : KIND_NONE;
		__builtin_memcpy(t->ike, u.ike, IKE_HDR_LEN);
		ATOMIC_OR(&t->flags, first_flags);
		if (is_ike)
			emit_datagram(skb, dir, pk, &u, cs);
	}
	if (last) {
		t->total = end;
		ATOMIC_OR(&t->flags, TF_HAVE_LAST);
	}

	/* Full barrier above; now read what every CPU has written. */
	__u32 f = ATOMIC_LOAD(&t->flags);
	if (!(f & TF_HAVE_LAST) || !(f & TF_HAVE_FIRST))
		return;
	if ((f & TF_OVERLAP) || ATOMIC_LOAD(&t->bytes) != t->total)
		return;
	__u32 old = ATOMIC_FETCH_OR(&t->flags, TF_COMPLETE);
	if (old & TF_COMPLETE)
		return;
	count(cs, C_TRAIN_COMPLETED, 0);
	if (old & TF_IKE)
		emit_train(dir, pk, t, cs);
}

#endif
