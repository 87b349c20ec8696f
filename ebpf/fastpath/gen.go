package fastpath

// The BPF objects are committed; `make generate` rebuilds them with the
// system's libbpf headers (the multiarch directories provide asm/types.h).
// -mcpu=v3 for the atomic counter updates. The echo program is only used
// by the benchmark, so its Go side is a test file.
//go:generate go tool bpf2go -cflags "-O2 -g -Wall -Werror -mcpu=v3 -I/usr/include/x86_64-linux-gnu -I/usr/include/aarch64-linux-gnu" -type fp_key -type fp_flow -type fp_counters fastpath bpf/fastpath.c
//go:generate go tool bpf2go -output-suffix _test -cflags "-O2 -g -Wall -Werror -mcpu=v3 -I/usr/include/x86_64-linux-gnu -I/usr/include/aarch64-linux-gnu" echo bpf/echo.c
