/* The ring buffer shared by all programs, and the helpers that fill the
 * common record header. */
#ifndef IKEFRAG_EVENTS_H
#define IKEFRAG_EVENTS_H

#include "common.h"
#include "config.h"
#include "parse.h"

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);	/* set by the loader */
} events SEC(".maps");

/* A datagram record is assembled here, then copied out with
 * bpf_ringbuf_output at its real size: reserving CAPTURE_MAX for every
 * IKE packet would waste most of the ring. */
struct dgram_buf {
	struct event h;
	__u8 data[CAPTURE_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct dgram_buf);
} dgram_scratch SEC(".maps");

static __always_inline void event_fill(struct event *e, __u8 type, __u32 dir, const struct pkt *pk)
{
	e->type = type;
	e->dir = dir;
	e->family = pk->family;
	e->proto = pk->proto;
	e->ifindex = cfg_ifindex;
	e->ts_ns = bpf_ktime_get_ns();
	__builtin_memcpy(e->saddr, pk->saddr, 16);
	__builtin_memcpy(e->daddr, pk->daddr, 16);
	e->sport = 0;
	e->dport = 0;
	e->ip_id = pk->ip_id;
	e->ip_len = pk->ip_len;
	e->frag_off = pk->frag_off;
	e->ip_flags = pk->flags;
	e->kind = 0;
	e->udp_len = 0;
	e->avail = 0;
	e->cap_len = 0;
	e->reason = 0;
	e->frag_len = pk->frag_len;
	e->netns = 0;
}

#endif
