/* Reading packet bytes, for every tc program of ikefrag (the observer and
 * the ESP fast path). */
#ifndef IKEFRAG_LOAD_H
#define IKEFRAG_LOAD_H

#include <linux/bpf.h>
#include <linux/types.h>
#include <bpf/bpf_helpers.h>

/* Copies *dst from the packet at off: directly when the bytes are in the
 * linear part of the skb, else through bpf_skb_load_bytes (paged data).
 * Non-zero on failure. Direct reads are limited to offsets below
 * LOAD_DIRECT_MAX: the verifier only proves a packet range when offset
 * plus size stays under 64 KiB, and offsets may be unknown values (read
 * back from a map, or walked through IPv6 extension headers). Headers sit
 * far below it; anything beyond goes through the helper. */
#define LOAD_DIRECT_MAX	0x3fff
#define LOAD(skb, off, dst) ({						\
	void *__d = (void *)(long)(skb)->data;				\
	void *__e = (void *)(long)(skb)->data_end;			\
	__u32 __o = (off);						\
	int __r = 0;							\
	typeof(dst) __p = __d + (__o & LOAD_DIRECT_MAX);		\
	if (__o <= LOAD_DIRECT_MAX && (void *)(__p + 1) <= __e)		\
		*(dst) = *__p;						\
	else								\
		__r = bpf_skb_load_bytes((skb), __o, (dst), sizeof(*(dst))); \
	__r;								\
})

#endif
