#!/bin/bash
# guest.sh: runs inside a kernel-matrix guest as root (test/kernels/matrix.sh).
# Records the kernel's facts, then runs the compiled test binaries of the
# kernel-facing packages, each in its package directory, with -test.v output
# to /ikm-out/PKG.log and a line per package in /ikm-out/summary.
set -u
O=/ikm-out
. "$O/env"
# What a booted system would have: /dev/net/tun for the lab's charon
# (kernel-libipsec) and a default route for ikefragd's default interface.
# The NIC is qemu's user network with restrict=on: nothing leaves the guest.
modprobe tun 2>/dev/null
dev=$(ls /sys/class/net | grep -v '^lo$' | head -1)
if [ -n "$dev" ] && ! ip route show default | grep -q .; then
	ip link set "$dev" up
	ip addr add 10.0.2.15/24 dev "$dev"
	ip route add default via 10.0.2.2
fi
{
	echo "kernel: $(uname -r)"
	echo "accel: $IKM_ACCEL"
	echo "cpus: $(nproc) memory: $(awk '/MemTotal/{print $2}' /proc/meminfo) kB"
	echo "btf: $([ -e /sys/kernel/btf/vmlinux ] && echo yes || echo no)"
	echo "memlock: $(ulimit -l)"
} > "$O/facts"
"$IKM_BIN/ikefragd" --features > "$O/features.json" 2>&1
cat "$O/facts"
# proxyrun and ikefragctl, built on the host from the same tree: the
# proxy's lab tests take them from here instead of compiling them again
export IKEFRAG_TEST_BIN=$IKM_BIN
status=0
for p in $IKM_PKGS; do
	n=$(echo "$p" | tr / _)
	cd "$IKM_REPO/$p" || { echo "$p rc=127 seconds=0" >> "$O/summary"; status=1; continue; }
	s=$(date +%s)
	# shellcheck disable=SC2086
	"$IKM_BIN/$n.test" -test.v -test.count=1 -test.timeout 30m ${IKM_RUN:+-test.run "$IKM_RUN"} > "$O/$n.log" 2>&1
	rc=$?
	[ $rc = 0 ] || status=1
	echo "$p rc=$rc seconds=$(( $(date +%s) - s ))" | tee -a "$O/summary"
done
exit $status
