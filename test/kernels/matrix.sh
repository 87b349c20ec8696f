#!/usr/bin/env bash
# matrix.sh: runs ikefrag's kernel-facing tests on the kernels gateways run.
#
#   test/kernels/matrix.sh [--systemd] [KERNEL ...]
#
# KERNEL is a series (6.1, 6.12, 5.10, 6.18) or a full version such as
# 6.1.0-57-amd64. Each series resolves to the newest Debian package of it that
# the archive offers: bookworm's own 6.1 and its newer 6.12 from the host's
# sources; 5.10 (bullseye) and 6.18 (trixie) through an apt configuration
# private to this script, which never touches the host's sources (6.18 from
# trixie-backports). Default:
# 6.1 6.12 5.10 6.18.
#
# For each kernel the package is downloaded (not installed) and unpacked, a
# busybox initramfs is made, and qemu boots it with this machine's root shared
# read-only over 9p under a writable tmpfs overlay, the kernel's own modules,
# and a results directory. Inside, as root, test/kernels/guest.sh runs the
# compiled test binaries of the kernel-facing packages. The script ends with
# one table: package × kernel, pass/fail/skip, and each failure's first line.
# With --systemd the guest boots systemd as PID 1 and runs
# test/kernels/systemd.sh instead (the shipped unit under a real manager).
#
# Environment:
#   IKM_DIR   work directory (kernels, initramfs, binaries, results);
#             default /var/tmp/ikefrag-kernels, kept between runs as a cache
#   PKGS      packages to test (default: ebpf/kfeat ebpf ebpf/fastpath netcfg proxy
#             cmd/ikefragd test/lab)
#   RUN       a -test.run pattern passed to every package
#   ACCEL     kvm, tcg or auto (default): KVM only where /dev/kvm is a real
#             hardware hypervisor, since a nested PVM cannot run stock kernels
#   MEM, SMP  guest size (default 3G, 2 CPUs)
#   TIMEOUT   seconds one kernel may take in all (default 2400)
#
# Exit status: 0 when every package passed on every kernel, 1 otherwise,
# 2 when a kernel could not be fetched or booted.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
W=${IKM_DIR:-/var/tmp/ikefrag-kernels}
PKGS=${PKGS:-"ebpf/kfeat ebpf ebpf/fastpath netcfg proxy cmd/ikefragd test/lab"}
MEM=${MEM:-3G}
SMP=${SMP:-2}
TIMEOUT=${TIMEOUT:-1800}
GO=${GO:-go}
mode=tests
if [ "${1:-}" = --systemd ]; then mode=systemd; shift; fi
kernels=("$@")
[ ${#kernels[@]} -gt 0 ] || kernels=(6.1 6.12 5.10 6.18)

log() { printf 'matrix: %s\n' "$*" >&2; }

"$repo/scripts/ensure-debs.sh" qemu-system-x86 busybox-static kmod cpio zstd xz-utils bpftool >&2
mkdir -p "$W/debs" "$W/k" "$W/out" "$W/bin"

# --- private apt configuration for suites other than the host's ------------
# Only used to look up and download kernel packages of bullseye and trixie;
# the host's own sources, lists and cache stay as they are.
apt_private() {
	local suite=$1 a=$W/apt/$1
	if [ ! -e "$a/updated" ] || [ -n "$(find "$a/updated" -mmin +720)" ]; then
		mkdir -p "$a/lists/partial" "$a/cache/archives/partial" "$a/etc/preferences.d" "$a/etc/trusted.gpg.d"
		local key=/usr/share/keyrings/debian-archive-keyring.gpg
		echo "deb [signed-by=$key] http://deb.debian.org/debian $suite main" > "$a/sources.list"
		case $suite in
		*-backports) ;;
		*) echo "deb [signed-by=$key] http://deb.debian.org/debian-security $suite-security main" >> "$a/sources.list" ;;
		esac
		apt-get $(apt_opts "$suite") update -q >&2 || return 1
		touch "$a/updated"
	fi
}
apt_opts() {
	local a=$W/apt/$1
	echo "-o Dir::Etc::SourceList=$a/sources.list -o Dir::Etc::SourceParts=/dev/null" \
		"-o Dir::State::Lists=$a/lists -o Dir::Cache=$a/cache" \
		"-o Dir::Etc::Preferences=/dev/null -o Dir::Etc::PreferencesParts=$a/etc/preferences.d" \
		"-o APT::Get::List-Cleanup=0"
}

# resolve SERIES|VERSION -> "VERSION SUITE" (SUITE empty: the host's sources)
resolve() {
	local k=$1 suite= pat
	case $k in
	6.1) pat='^linux-image-6\.1\.0-[0-9]+-amd64$' ;;
	6.12) pat='^linux-image-6\.12\.[0-9]+\+deb12-amd64$' ;;
	5.10) pat='^linux-image-5\.10\.0-[0-9]+-amd64$'; suite=bullseye ;;
	6.18) pat='^linux-image-6\.18\.[0-9]+\+deb13-amd64$'; suite=trixie-backports ;;
	*) echo "$k"; return ;;
	esac
	local opts=
	if [ -n "$suite" ]; then apt_private "$suite" || return 1; opts=$(apt_opts "$suite"); fi
	local v
	# shellcheck disable=SC2086
	v=$(apt-cache $opts search --names-only "$pat" | awk '{print $1}' | sed 's/^linux-image-//' | sort -V | tail -1)
	[ -n "$v" ] || { log "no package matches $pat"; return 1; }
	echo "$v $suite"
}

# fetch VERSION SUITE: unpack the kernel package once, and index its modules
fetch() {
	local v=$1 suite=${2:-} k=$W/k/$1
	if [ ! -e "$k/boot/vmlinuz-$v" ]; then
		if ! ls "$W/debs/linux-image-${v}_"*.deb >/dev/null 2>&1; then
			local opts=
			[ -n "$suite" ] && opts=$(apt_opts "$suite")
			# shellcheck disable=SC2086
			(cd "$W/debs" && apt-get $opts download -q "linux-image-$v" >&2) || return 1
		fi
		rm -rf "$k.tmp"; mkdir -p "$k.tmp"
		dpkg-deb -x "$W/debs/linux-image-${v}_"*.deb "$k.tmp"
		[ -d "$k.tmp/lib" ] || ln -s usr/lib "$k.tmp/lib"
		rm -rf "$k"; mv "$k.tmp" "$k"
	fi
	[ -e "$k/lib/modules/$v/modules.dep" ] || depmod -b "$k" "$v"
}

# initramfs VERSION: busybox, test/kernels/init, and the boot modules
initramfs() {
	local v=$1 k=$W/k/$1 img=$W/initrd-$1.cpio.gz
	if [ -e "$img" ] && [ "$img" -nt "$here/init" ] && [ "$img" -nt "$0" ]; then return; fi
	local r; r=$(mktemp -d)
	mkdir -p "$r"/{bin,proc,sys,dev,mods}
	cp /bin/busybox "$r/bin/busybox"
	cp "$here/init" "$r/init"
	: > "$r/modules.order"
	for m in virtio_pci virtio_net virtio_rng 9pnet_virtio 9p overlay; do
		modprobe -d "$k" -S "$v" --show-depends "$m" 2>/dev/null | awk '$1=="insmod"{print $2}'
	done | awk '!seen[$0]++' | while read -r f; do
		local b; b=$(basename "$f"); b=${b%.xz}; b=${b%.zst}
		case $f in
		*.xz) xz -dc "$f" > "$r/mods/$b" ;;
		*.zst) zstd -qdc "$f" > "$r/mods/$b" ;;
		*) cp "$f" "$r/mods/$b" ;;
		esac
		echo "$b" >> "$r/modules.order"
	done
	(cd "$r" && find . | cpio -o -H newc --quiet | gzip -1) > "$img.tmp"
	mv "$img.tmp" "$img"
	rm -rf "$r"
}

accel() {
	case ${ACCEL:-auto} in
	kvm|tcg) echo "${ACCEL}" ;;
	*)
		# a nested PVM (kvm_pvm) offers /dev/kvm but cannot run a stock kernel
		if [ -w /dev/kvm ] && ! [ -d /sys/module/kvm_pvm ] && grep -qwE 'vmx|svm' /proc/cpuinfo; then
			echo kvm
		else
			echo tcg
		fi ;;
	esac
}

# boot VERSION SCRIPT: runs SCRIPT inside; results in $W/out/VERSION
boot() {
	local v=$1 script=$2 k=$W/k/$1 out=$W/out/$1 acc
	acc=$(accel)
	rm -rf "$out"; mkdir -p "$out"
	{
		echo "IKM_REPO=$repo"
		echo "IKM_BIN=$W/bin"
		echo "IKM_PKGS='$PKGS'"
		echo "IKM_RUN='${RUN:-}'"
		echo "IKM_ACCEL=$acc"
		echo "IKM_DEBS='$(ls "$W"/deb/*.deb 2>/dev/null | sort | tr '\n' ' ')'"
	} > "$out/env"
	local a=(-accel tcg,thread=multi -cpu max)
	[ "$acc" = kvm ] && a=(-accel kvm -cpu host)
	local append="console=ttyS0 panic=-1 oops=panic loglevel=4 ikm.script=$script"
	[ "$mode" = systemd ] && append="$append ikm.init=systemd systemd.show_status=0"
	local t0; t0=$(date +%s)
	set +e
	timeout --foreground "$TIMEOUT" qemu-system-x86_64 "${a[@]}" -smp "$SMP" -m "$MEM" \
		-nographic -no-reboot -nodefaults -serial "file:$out/serial.log" \
		-kernel "$k/boot/vmlinuz-$v" -initrd "$W/initrd-$v.cpio.gz" -append "$append" \
		-device virtio-rng-pci \
		-netdev user,id=n0,restrict=on -device virtio-net-pci,netdev=n0 \
		-fsdev local,id=host,path=/,security_model=none,readonly=on,multidevs=remap \
		-device virtio-9p-pci,fsdev=host,mount_tag=host \
		-fsdev local,id=modules,path="$k/lib/modules/$v",security_model=none,readonly=on \
		-device virtio-9p-pci,fsdev=modules,mount_tag=modules \
		-fsdev local,id=out,path="$out",security_model=none \
		-device virtio-9p-pci,fsdev=out,mount_tag=out </dev/null >/dev/null 2>&1
	local q=$?
	set -e
	echo $(( $(date +%s) - t0 )) > "$out/seconds"
	if [ $q -eq 124 ]; then
		echo "kernel run exceeded ${TIMEOUT}s" > "$out/boot-error"
	elif [ ! -e "$out/rc" ]; then
		echo "guest ended without a result (qemu status $q); last console lines: $(tail -n 3 "$out/serial.log" | tr '\n' ' ')" > "$out/boot-error"
	fi
}

# debs: two builds of the Debian package that differ only in version, for
# the systemd guest's install, upgrade and purge
debs() {
	rm -rf "$W/deb"; mkdir -p "$W/deb"
	local v
	for v in 1 2; do
		make -C "$repo" --no-print-directory deb BIN="$W/deb/b$v" DEBDIR="$W/deb" DEB_VERSION="0.0~matrix$v" GO="$GO" >&2
	done
}

build() {
	local p n
	log "building test binaries"
	# the binaries an operator would build, with their version stamp
	make -C "$repo" --no-print-directory build BIN="$W/bin" GO="$GO" >&2
	# the proxy's lab runner, which its tests would otherwise compile in
	# the guest (IKEFRAG_TEST_BIN)
	(cd "$repo" && CGO_ENABLED=0 $GO build -o "$W/bin/proxyrun" ./proxy/internal/proxyrun)
	for p in $PKGS; do
		n=$(echo "$p" | tr / _)
		(cd "$repo" && $GO test -c -o "$W/bin/$n.test" "./$p")
	done
}

declare -A ver suite_of
status=0
for k in "${kernels[@]}"; do
	r=$(resolve "$k") || { log "cannot resolve kernel $k"; status=2; continue; }
	ver[$k]=${r%% *}
	suite_of[$k]=$(echo "$r" | awk '{print $2}')
	fetch "${ver[$k]}" "${suite_of[$k]}" || { log "cannot fetch linux-image-${ver[$k]}"; status=2; unset "ver[$k]"; continue; }
	initramfs "${ver[$k]}"
done
build
[ "$mode" = systemd ] && debs

for k in "${kernels[@]}"; do
	[ -n "${ver[$k]:-}" ] || continue
	v=${ver[$k]}
	log "booting $v ($(accel))"
	if [ "$mode" = systemd ]; then boot "$v" "$here/systemd.sh"; else boot "$v" "$here/guest.sh"; fi
	log "$v done in $(cat "$W/out/$v/seconds")s"
done

if [ "$mode" = systemd ]; then
	for k in "${kernels[@]}"; do
		[ -n "${ver[$k]:-}" ] || continue
		o=$W/out/${ver[$k]}
		echo "== systemd guest on ${ver[$k]} ($(cat "$o/seconds")s)"
		cat "$o/guest.log" 2>/dev/null || true
		[ -e "$o/boot-error" ] && { cat "$o/boot-error"; status=1; }
		[ "$(cat "$o/rc" 2>/dev/null)" = 0 ] || status=1
	done
	exit $status
fi

vs=(); for k in "${kernels[@]}"; do [ -n "${ver[$k]:-}" ] && vs+=("${ver[$k]}"); done
"$here/table.sh" "$W/out" "${vs[@]}" || status=1
exit $status
