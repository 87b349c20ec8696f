package ebpf

// The BPF objects are committed; `make generate` rebuilds them with the
// pinned compiler (Debian 12's clang 14) and only the headers in include/
// (libbpf's and the kernel UAPI ones the programs use; include/update.sh
// refreshes them), so that the same sources give the same objects on any
// machine: CI checks that it does. -mcpu=v3 gives the fetching atomics the
// fragment trains use (kernel 5.12 and later).
//go:generate go tool bpf2go -cflags "-O2 -g -Wall -Werror -mcpu=v3 -nostdinc -Iinclude" -type event -type train_key -type train -type frag_rec -type counter_set -type too_big -type event_type -type ip_flag -type train_flag -type counter_id -type limit -type record_size -type direction tc bpf/tc.c
//go:generate go tool bpf2go -cflags "-O2 -g -Wall -Werror -mcpu=v3 -nostdinc -Iinclude" -type drop_counters drop bpf/drop.c
//
// The compat build of the same programs for kernels without the fetching
// atomics (before 5.12): -mcpu=v2 and IKEFRAG_COMPAT (see ATOMIC_* in
// bpf/common.h). The loader picks it after a probe.
//go:generate go tool bpf2go -no-global-types -cflags "-O2 -g -Wall -Werror -mcpu=v2 -DIKEFRAG_COMPAT -nostdinc -Iinclude" tcCompat bpf/tc.c
