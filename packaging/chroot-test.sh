#!/bin/sh
# chroot-test.sh OLD.deb NEW.deb — the package's life on a clean Debian 12
# root: `apt install ./OLD.deb`, an edited configuration and a unit
# override, an upgrade with `apt install ./NEW.deb` (both kept), then
# `apt purge` (nothing of the package left). The root is a bookworm tarball
# made once by mmdebstrap (cached in /var/cache/ikefrag-chroot; downloading
# it needs the Debian mirror). No systemd runs in the chroot: the
# maintainer scripts skip systemctl there, as they do in any container.
set -eu
old=$1 new=$2
cache=/var/cache/ikefrag-chroot
tarball=$cache/bookworm.tar
if [ ! -s "$tarball" ]; then
	mkdir -p "$cache"
	mmdebstrap --quiet --variant=apt bookworm "$tarball.tmp"
	mv "$tarball.tmp" "$tarball"
fi
root=$(mktemp -d /var/tmp/ikefrag-chroot.XXXXXX)
cleanup() {
	umount "$root/proc" 2>/dev/null || true
	rm -rf "$root"
}
trap cleanup EXIT
tar -C "$root" -xf "$tarball"
mount -t proc proc "$root/proc"
cp "$old" "$root/tmp/old.deb"
cp "$new" "$root/tmp/new.deb"
inroot() { chroot "$root" env DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }
fail() { echo "chroot-test: FAIL: $*" >&2; exit 1; }
# Everything but what apt and dpkg keep for themselves.
snapshot() {
	inroot find / -xdev \( -path /proc -o -path /dev -o -path /tmp -o -path /var/lib/dpkg -o -path /var/lib/apt \
		-o -path /var/cache -o -path /var/log -o -path /run \) -prune -o -print | sort
	inroot sh -c 'ls -d /run/ikefrag 2>/dev/null || true'
}
snapshot >"$root/tmp/before"

inroot apt-get install -y -q ./tmp/old.deb >"$root/tmp/install.log" 2>&1 || { cat "$root/tmp/install.log"; fail "apt install ./old.deb"; }
v1=$(inroot dpkg-query -W -f '${Version}' ikefrag)
inroot test -x /usr/sbin/ikefragd || fail "no /usr/sbin/ikefragd"
inroot /usr/bin/ikefragctl --version >/dev/null || fail "ikefragctl --version"
inroot test -f /usr/share/man/man8/ikefragd.8.gz || fail "no man page"
inroot test -f /lib/systemd/system/ikefragd.service || fail "no unit"
inroot test -f /usr/share/ikefrag/prometheus/ikefrag-rules.yml || fail "no rules"
inroot /usr/sbin/ikefragd --check-config --config /etc/ikefrag/ikefragd.yaml >/dev/null 2>&1 || true # no interfaces in a chroot: only that it runs

# The administrator's edits.
echo "# edited by the administrator" >>"$root/etc/ikefrag/ikefragd.yaml"
mkdir -p "$root/etc/systemd/system/ikefragd.service.d"
printf '[Service]\nEnvironment=IKEFRAG_LOG_LEVEL=debug\n' >"$root/etc/systemd/system/ikefragd.service.d/override.conf"

inroot apt-get install -y -q ./tmp/new.deb >"$root/tmp/upgrade.log" 2>&1 || { cat "$root/tmp/upgrade.log"; fail "apt install ./new.deb"; }
v2=$(inroot dpkg-query -W -f '${Version}' ikefrag)
[ "$v1" != "$v2" ] || fail "the upgrade did not change the version ($v1)"
grep -q "edited by the administrator" "$root/etc/ikefrag/ikefragd.yaml" || fail "the upgrade lost the edited configuration"
grep -q IKEFRAG_LOG_LEVEL "$root/etc/systemd/system/ikefragd.service.d/override.conf" || fail "the upgrade lost the unit override"
echo "upgraded $v1 -> $v2; edited configuration and unit override kept"

# Purge: the override is the administrator's own file; removed here so that
# the comparison shows what the package leaves.
rm -r "$root/etc/systemd/system/ikefragd.service.d"
mkdir -p "$root/run/ikefrag" # as systemd's RuntimeDirectory would leave it after a crash
inroot apt-get purge -y -q ikefrag >"$root/tmp/purge.log" 2>&1 || { cat "$root/tmp/purge.log"; fail "apt purge"; }
snapshot >"$root/tmp/after"
if ! diff -u "$root/tmp/before" "$root/tmp/after"; then
	fail "purge left files behind (diff above)"
fi
inroot dpkg-query -W ikefrag >/dev/null 2>&1 && fail "ikefrag still known to dpkg"
echo "purged: nothing left"
