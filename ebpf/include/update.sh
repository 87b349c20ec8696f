#!/usr/bin/env bash
# update.sh: refreshes the C headers the BPF programs are built with, so that
# `make generate` gives the same objects on any machine: libbpf's headers
# from Debian's libbpf-dev and the kernel UAPI headers from linux-libc-dev,
# exactly the files the programs include (clang -M), nothing else. Run it
# after changing an #include or moving to newer packages, then
# `make generate`, and commit both.
set -euo pipefail
cd "$(dirname "$0")"
ebpf=$(cd .. && pwd)
srcs=("$ebpf"/bpf/*.c "$ebpf"/fastpath/bpf/*.c)
CC=${BPF2GO_CC:-clang-14}
arch=/usr/include/x86_64-linux-gnu
find . -mindepth 1 -maxdepth 1 -type d -exec rm -rf {} +
for s in "${srcs[@]}"; do
	"$CC" -target bpf -M -I"$arch" "$s"
done | tr ' \\' '\n\n' | grep '^/usr/include/' | sort -u | while read -r h; do
	rel=${h#/usr/include/}
	rel=${rel#x86_64-linux-gnu/}
	mkdir -p "$(dirname "$rel")"
	cp "$h" "$rel"
done
{
	echo "# Where the headers below this directory come from (written by update.sh)."
	dpkg-query -W -f='${Package} ${Version}\n' libbpf-dev linux-libc-dev
	"$CC" --version | head -1
} > SOURCES
find . -name '*.h' | sort | sed 's|^\./||' >> SOURCES
