package fastpath

// The BPF objects are committed; `make generate` rebuilds them with the
// pinned compiler and the headers in ../include (see ../gen.go).
// -mcpu=v3 for the atomic counter updates. The echo program is only used
// by the benchmark, so its Go side is a test file.
//go:generate go tool bpf2go -cflags "-O2 -g -Wall -Werror -mcpu=v3 -nostdinc -I../include" -type fp_key -type fp_flow -type fp_counters -type fp_stat fastpath bpf/fastpath.c
//go:generate go tool bpf2go -output-suffix _test -cflags "-O2 -g -Wall -Werror -mcpu=v3 -nostdinc -I../include" echo bpf/echo.c
