package ebpf

// The BPF objects are committed; `make generate` rebuilds them. The system's
// libbpf headers are used; the multiarch include directories provide
// asm/types.h for <linux/bpf.h>. -mcpu=v3 gives the fetching atomics the
// fragment trains use (kernel 5.12 and later).
//go:generate go tool bpf2go -cflags "-O2 -g -Wall -Werror -mcpu=v3 -I/usr/include/x86_64-linux-gnu -I/usr/include/aarch64-linux-gnu" -type event -type train_key -type train -type frag_rec -type counter_set tc bpf/tc.c
//go:generate go tool bpf2go -cflags "-O2 -g -Wall -Werror -mcpu=v3 -I/usr/include/x86_64-linux-gnu -I/usr/include/aarch64-linux-gnu" -type drop_counters drop bpf/drop.c
//
// The compat build of the same programs for kernels without the fetching
// atomics (before 5.12): -mcpu=v2 and IKEFRAG_COMPAT (see ATOMIC_* in
// bpf/common.h). The loader picks it after a probe.
//go:generate go tool bpf2go -cflags "-O2 -g -Wall -Werror -mcpu=v2 -DIKEFRAG_COMPAT -I/usr/include/x86_64-linux-gnu -I/usr/include/aarch64-linux-gnu" tcCompat bpf/tc.c
