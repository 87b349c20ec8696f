#!/bin/sh
# plugin-chroot-test.sh OLD.deb NEW.deb — strongswan-plugin-ikefrag's life
# on a clean Debian 12 root with Debian's strongSwan of the version the
# plugin was built for:
#   - `apt install ./OLD.deb`; dpkg --verify (the md5sums) clean;
#   - charon of that root, started in a network namespace of its own, loads
#     the plugin through the packaged conffile (its "loaded plugins" log
#     line and `swanctl --stats`), runs while nothing listens on the
#     packaged socket path, and connects once this script listens there as
#     root in ikefragd's place;
#   - an edited conffile is kept across `apt install ./NEW.deb`, and
#     dpkg --verify then flags that conffile alone;
#   - `apt remove` keeps the conffile only, `apt purge` leaves nothing.
# The root is the bookworm tarball of chroot-test.sh plus strongswan-charon
# and strongswan-swanctl at the host's strongswan-libcharon version,
# installed once with apt from the host's Debian mirrors and cached as
# /var/cache/ikefrag-chroot/bookworm-strongswan-<version>.tar.
set -eu
old=$1 new=$2
cache=/var/cache/ikefrag-chroot
base=$cache/bookworm.tar
fail() { echo "plugin-chroot-test: FAIL: $*" >&2; exit 1; }
[ -s "$base" ] || fail "no $base (chroot-test.sh makes it with mmdebstrap)"
ver=$(dpkg-query -W -f='${Version}' strongswan-libcharon)
want=$(dpkg-deb -f "$old" Depends)
case "$want" in
*"strongswan-libcharon (= $ver)"*) ;;
*) fail "$old depends on '$want', not on the installed strongswan-libcharon $ver" ;;
esac
tarball=$cache/bookworm-strongswan-$(printf '%s' "$ver" | tr ':' '_').tar

root=$(mktemp -d /var/tmp/ikefrag-plugin-chroot.XXXXXX)
charon_pid= listener_pid=
cleanup() {
	[ -n "$charon_pid" ] && kill "$charon_pid" 2>/dev/null || true
	[ -n "$listener_pid" ] && kill "$listener_pid" 2>/dev/null || true
	umount "$root/proc" 2>/dev/null || true
	rm -rf "$root"
}
trap cleanup EXIT
inroot() { chroot "$root" env DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }

# One maker at a time; the others wait and then find the tarball.
exec 9>"$cache/.strongswan-root.lock"
flock 9
if [ ! -s "$tarball" ]; then
	tar -C "$root" -xf "$base"
	mount -t proc proc "$root/proc"
	# The host's sources (its mirror and bookworm-security, which serves
	# Debian 12's strongSwan updates), the host's resolver.
	rm -f "$root/etc/apt/sources.list"
	cp /etc/apt/sources.list.d/*.sources "$root/etc/apt/sources.list.d/" 2>/dev/null || true
	[ -f /etc/apt/sources.list ] && cp /etc/apt/sources.list "$root/etc/apt/sources.list"
	cp -L /etc/resolv.conf "$root/etc/resolv.conf"
	inroot apt-get update -q >"$root/tmp/update.log" 2>&1 || { cat "$root/tmp/update.log"; fail "apt-get update in the root"; }
	inroot apt-get install -y -q --no-install-recommends "strongswan-charon=$ver" "strongswan-libcharon=$ver" \
		"libstrongswan=$ver" "strongswan-swanctl=$ver" >"$root/tmp/ss.log" 2>&1 ||
		{ cat "$root/tmp/ss.log"; fail "installing strongSwan $ver in the root"; }
	inroot apt-get clean
	rm -rf "$root/var/lib/apt/lists/"*_* "$root/tmp/"*
	umount "$root/proc"
	tar -C "$root" -cf "$tarball.tmp" .
	mv "$tarball.tmp" "$tarball"
	rm -rf "$root"
	mkdir -m 0700 "$root"
fi
exec 9>&-
tar -C "$root" -xf "$tarball"
mount -t proc proc "$root/proc"
[ "$(inroot dpkg-query -W -f '${Version}' strongswan-libcharon)" = "$ver" ] || fail "the cached root's strongswan-libcharon is not $ver"
cp "$old" "$root/tmp/old.deb"
cp "$new" "$root/tmp/new.deb"
# charon's log for the checks below (not the package's; removed before the
# final comparison).
cat >"$root/etc/strongswan.d/zz-plugin-test-log.conf" <<'EOF'
charon {
    filelog {
        plugintest {
            path = /tmp/charon.log
            default = 1
            append = no
            flush_line = yes
        }
    }
}
EOF
# Everything but what apt and dpkg keep for themselves.
snapshot() {
	inroot find / -xdev \( -path /proc -o -path /dev -o -path /tmp -o -path /var/lib/dpkg -o -path /var/lib/apt \
		-o -path /var/cache -o -path /var/log -o -path /run \) -prune -o -print | sort
}
snapshot >"$root/tmp/before"

inroot apt-get install -y -q ./tmp/old.deb >"$root/tmp/install.log" 2>&1 || { cat "$root/tmp/install.log"; fail "apt install ./old.deb"; }
v1=$(inroot dpkg-query -W -f '${Version}' strongswan-plugin-ikefrag)
inroot dpkg --verify strongswan-plugin-ikefrag || fail "dpkg --verify after install"
inroot test -f /usr/lib/ipsec/plugins/libstrongswan-ikefrag-keys.so || fail "no plugin in charon's plugin directory"
inroot dpkg-query -W -f '${Conffiles}\n' strongswan-plugin-ikefrag | grep -q '^ /etc/strongswan.d/charon/ikefrag-keys.conf ' ||
	fail "ikefrag-keys.conf is not a conffile"
echo "installed $v1"

# wait_log TEXT WHAT: charon's log gains TEXT within 15 s.
wait_log() {
	i=0
	until grep -qF "$1" "$root/tmp/charon.log" 2>/dev/null; do
		i=$((i + 1))
		if [ $i -ge 150 ] || ! kill -0 "$charon_pid" 2>/dev/null; then
			cat "$root/tmp/charon.out" "$root/tmp/charon.log" 2>/dev/null
			fail "charon did not $2 in 15 s"
		fi
		sleep 0.1
	done
}

# charon in a network namespace of its own: it binds its IKE ports and
# reads interfaces there, and nothing it does reaches the host's network.
# First as right after installing, before ikefragd listens: charon runs,
# and the plugin says once that the socket is not there.
mkdir -p -m 0700 "$root/run/ikefrag/keys"
unshare --net chroot "$root" /usr/lib/ipsec/charon >"$root/tmp/charon.out" 2>&1 &
charon_pid=$!
wait_log "ikefrag-keys: key socket '/run/ikefrag/keys/keys.sock' not there" "log the missing key socket"
wait_log "spawning" "start its worker threads"

# Then ikefragd's place: a root-owned socket at the packaged path (ikefragd
# makes its directory 0700), listening as root; it accepts and holds
# connections. The plugin retries and connects.
python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(sys.argv[1]); s.listen(4)
held = []
while True:
    c, _ = s.accept(); held.append(c)
' "$root/run/ikefrag/keys/keys.sock" &
listener_pid=$!
wait_log "ikefrag-keys: connected to '/run/ikefrag/keys/keys.sock'" "connect to the key socket"
loaded=$(grep "loaded plugins:" "$root/tmp/charon.log")
case " $loaded " in *" ikefrag-keys "*) ;; *) cat "$root/tmp/charon.log"; fail "charon's loaded plugins lack ikefrag-keys: $loaded" ;; esac
# vici's socket is a file in the root: swanctl needs no namespace.
stats=$(inroot swanctl --stats 2>&1) ||
	fail "swanctl --stats"
echo "$stats" | grep -q "loaded plugins:.* ikefrag-keys" || fail "swanctl --stats does not list ikefrag-keys: $stats"
grep -q "ikefrag-keys: sending IKE SA keys to '/run/ikefrag/keys/keys.sock' (owner uid 0" "$root/tmp/charon.log" ||
	fail "the plugin is not configured by the packaged conffile"
echo "charon loaded the plugin: $(grep -o "ikefrag-keys: connected to.*" "$root/tmp/charon.log")"
kill "$charon_pid"
wait "$charon_pid" 2>/dev/null || true
charon_pid=
kill "$listener_pid"
wait "$listener_pid" 2>/dev/null || true
listener_pid=

# The administrator's edit survives an upgrade.
sed -i 's|^    # queue = 4096|    queue = 512|' "$root/etc/strongswan.d/charon/ikefrag-keys.conf"
grep -q '^    queue = 512' "$root/etc/strongswan.d/charon/ikefrag-keys.conf" || fail "could not edit the conffile"
inroot apt-get install -y -q -o Dpkg::Options::=--force-confold ./tmp/new.deb >"$root/tmp/upgrade.log" 2>&1 ||
	{ cat "$root/tmp/upgrade.log"; fail "apt install ./new.deb"; }
v2=$(inroot dpkg-query -W -f '${Version}' strongswan-plugin-ikefrag)
[ "$v1" != "$v2" ] || fail "the upgrade did not change the version ($v1)"
grep -q '^    queue = 512' "$root/etc/strongswan.d/charon/ikefrag-keys.conf" || fail "the upgrade lost the edited conffile"
# Only the edited conffile differs from the package's sums.
inroot dpkg --verify strongswan-plugin-ikefrag >"$root/tmp/verify.log" || true
if grep -v ' c /etc/strongswan.d/charon/ikefrag-keys.conf$' "$root/tmp/verify.log" | grep .; then
	fail "dpkg --verify after the upgrade (above)"
fi
grep -q ' c /etc/strongswan.d/charon/ikefrag-keys.conf$' "$root/tmp/verify.log" ||
	fail "dpkg --verify does not see the edited conffile"
echo "upgraded $v1 -> $v2; edited conffile kept"

inroot apt-get remove -y -q strongswan-plugin-ikefrag >"$root/tmp/remove.log" 2>&1 || { cat "$root/tmp/remove.log"; fail "apt remove"; }
inroot test ! -e /usr/lib/ipsec/plugins/libstrongswan-ikefrag-keys.so || fail "remove left the plugin"
inroot test -f /etc/strongswan.d/charon/ikefrag-keys.conf || fail "remove took the conffile (only purge should)"
inroot apt-get purge -y -q strongswan-plugin-ikefrag >"$root/tmp/purge.log" 2>&1 || { cat "$root/tmp/purge.log"; fail "apt purge"; }
snapshot >"$root/tmp/after"
if ! diff -u "$root/tmp/before" "$root/tmp/after"; then
	fail "purge left files behind (diff above)"
fi
inroot dpkg-query -W strongswan-plugin-ikefrag >/dev/null 2>&1 && fail "strongswan-plugin-ikefrag still known to dpkg"
echo "purged: nothing left"
