/* Per-CPU counters, one struct counter_set per (interface slot, direction).
 * Every early exit that loses information bumps one of these. */
#ifndef IKEFRAG_COUNTERS_H
#define IKEFRAG_COUNTERS_H

#include "common.h"
#include "config.h"

enum counter_id {
	C_IKEV2 = 0,
	C_IKEV1,
	C_ESP_IN_UDP,
	C_KEEPALIVE,
	C_OTHER_UDP,		/* on the IKE/NAT-T ports, not classifiable */
	C_FRAG_FIRST,
	C_FRAG_MIDDLE,
	C_FRAG_LAST,
	C_TRAIN_STARTED,
	C_TRAIN_COMPLETED,
	C_TRAIN_DUP_FRAG,	/* a fragment seen twice in a train */
	C_TRAIN_OVERLAP,	/* a fragment overlapping another one partially */
	C_TRAIN_LATE_FRAG,	/* a fragment after the train completed */
	C_TRAIN_LIST_FULL,	/* fragments beyond TRAIN_MAX_FRAGS */
	C_IKE_LARGE,
	C_LRU_INSERT_FAIL,
	C_RINGBUF_FAIL,
	C_MALFORMED,		/* bogus lengths, truncated headers */
	C_ICMP_TOO_BIG,
	C_EXT_HDR_LIMIT,	/* IPv6 extension chain longer than the walk */
	C_MAX,
};

struct counter {
	__u64 packets;
	__u64 bytes;
};

struct counter_set {
	struct counter c[C_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 64);	/* DIR_MAX * interface slots, set by the loader */
	__type(key, __u32);
	__type(value, struct counter_set);
} counters SEC(".maps");

static __always_inline struct counter_set *counters_get(__u32 dir)
{
	__u32 key = cfg_slot * DIR_MAX + dir;

	return bpf_map_lookup_elem(&counters, &key);
}

static __always_inline void count(struct counter_set *cs, enum counter_id id, __u32 bytes)
{
	if (!cs || id >= C_MAX)
		return;
	cs->c[id].packets++;
	cs->c[id].bytes += bytes;
}

#endif
