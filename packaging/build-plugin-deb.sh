#!/bin/sh
# build-plugin-deb.sh VERSION OUTDIR — builds
# strongswan-plugin-ikefrag_<debversion>_<arch>.deb: the ikefrag-keys
# charon plugin (keys/strongswan-plugin, built or taken from its cache by
# keys/strongswan-plugin/build.sh) for the strongSwan installed on this
# machine, with dpkg-deb. Prints the path of the package.
#
# What it holds:
#   /usr/lib/ipsec/plugins/libstrongswan-ikefrag-keys.so  charon's plugin
#       directory, where Debian's libcharon-*-plugins put theirs (stripped
#       as dh_strip would)
#   /etc/strongswan.d/charon/ikefrag-keys.conf  load = yes and the socket,
#       a conffile (Debian's charon loads plugins by these snippets)
#   /usr/share/doc/strongswan-plugin-ikefrag/{copyright,changelog.gz,keys.md}
#
# Depends: strongswan-libcharon (= V), V being the strongswan-libcharon
# version the plugin was compiled for. The plugin reads libcharon's
# structures directly, whose layout may change with any rebuild of
# strongSwan, so only that exact version may load it; apt then holds back
# a strongSwan upgrade until a plugin built for the new version is
# installed with it (apt full-upgrade would remove the plugin instead).
# libc6 comes from dpkg-shlibdeps.
# Built-Using names the strongswan source version whose configured tree
# compiled it: Debian's mirror may serve only the release's source when a
# security update is installed, and the package says so.
#
# Version: <ikefrag's Debian version>-ss<strongSwan version>, the
# strongSwan version with '-' and ':' turned into '+' and '.', e.g.
# 0.0~git362.3437548-ss5.9.8+5+deb12u6. The ikefrag part is
# build-deb.sh's (from git describe; DEB_VERSION overrides it, as for the
# main package), so a newer ikefrag always sorts higher; the strongSwan
# part, as the Debian revision, orders rebuilds of one ikefrag version for
# successive strongSwan updates (5.9.8+5+deb12u6 < 5.9.8+5+deb12u7).
set -eu
version=$1 out=$2
here=$(cd "$(dirname "$0")/.." && pwd)
say() { echo "build-plugin-deb.sh: $*" >&2; }

so=$("$here/keys/strongswan-plugin/build.sh")
so=$(printf '%s\n' "$so" | tail -n1)
against=$(dirname "$so")/built-against
[ -s "$so" ] && [ -s "$against" ] || { say "no plugin or no $against"; exit 1; }
charon_package= charon_version= source_version=
while IFS='=' read -r k v; do
	case $k in
	charon_package) charon_package=$v ;;
	charon_version) charon_version=$v ;;
	source_version) source_version=$v ;;
	esac
done <"$against"
[ -n "$charon_package" ] && [ -n "$charon_version" ] && [ -n "$source_version" ] ||
	{ say "$against lacks charon_package, charon_version or source_version"; exit 1; }
# build.sh keys its cache by the installed version, so these agree unless
# strongSwan changed under a running build.
installed=$(dpkg-query -W -f='${Version}' "$charon_package" 2>/dev/null || true)
if [ "$installed" != "$charon_version" ]; then
	say "the plugin was built for $charon_package $charon_version, installed is '${installed}': rebuild"
	exit 1
fi

dv=${DEB_VERSION:-$("$here/packaging/build-deb.sh" --debversion "$version")}
case $dv in
[0-9]*) ;;
*) say "Debian version $dv does not start with a digit"; exit 2 ;;
esac
pv="$dv-ss$(printf '%s' "$charon_version" | tr -- '-:' '+.')"
arch=$(dpkg --print-architecture)

root=$(mktemp -d)
chmod 0755 "$root"
work=$(mktemp -d)
trap 'rm -rf "$root" "$work"' EXIT
umask 022

plugdir=usr/lib/ipsec/plugins
install -D -m 0644 "$so" "$root/$plugdir/libstrongswan-ikefrag-keys.so"
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$root/$plugdir/libstrongswan-ikefrag-keys.so"
install -D -m 0644 "$here/packaging/debian/plugin/ikefrag-keys.conf" "$root/etc/strongswan.d/charon/ikefrag-keys.conf"
doc=usr/share/doc/strongswan-plugin-ikefrag
install -D -m 0644 "$here/packaging/debian/plugin/copyright" "$root/$doc/copyright"
install -m 0644 "$here/docs/keys.md" "$root/$doc/keys.md"
# A one-entry changelog saying what was built for what, dated by the
# commit (SOURCE_DATE_EPOCH overrides), so a rebuild gives the same bytes.
when=${SOURCE_DATE_EPOCH:-$(git -C "$here" log -1 --format=%ct 2>/dev/null || echo 0)}
cat >"$work/changelog" <<CHANGELOG
ikefrag ($dv) unstable; urgency=medium

  * strongswan-plugin-ikefrag $pv:
    the ikefrag-keys plugin of ikefrag $version, built for
    $charon_package $charon_version
    with the strongswan $source_version source tree.

 -- ikefrag authors <ikefrag@users.noreply.github.com>  $(LC_ALL=C date -u -R -d "@$when")
CHANGELOG
gzip -9n <"$work/changelog" >"$root/$doc/changelog.gz"
chmod 0644 "$root/$doc/changelog.gz"

# libc6's version from the symbols the plugin uses (dpkg-shlibdeps reads
# debian/control of the directory it runs in). libcharon's and
# libstrongswan's symbols resolve inside charon: covered by the exact
# strongswan-libcharon dependency, which depends on libstrongswan (= V).
mkdir -p "$work/debian"
printf 'Source: ikefrag\n\nPackage: strongswan-plugin-ikefrag\nArchitecture: any\n' >"$work/debian/control"
shlibs=$(cd "$work" && dpkg-shlibdeps -O --warnings=0 "$root/$plugdir/libstrongswan-ikefrag-keys.so" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
[ -n "$shlibs" ] || { say "dpkg-shlibdeps found no library dependencies"; exit 1; }

install -d -m 0755 "$root/DEBIAN"
echo /etc/strongswan.d/charon/ikefrag-keys.conf >"$root/DEBIAN/conffiles"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat >"$root/DEBIAN/control" <<CONTROL
Package: strongswan-plugin-ikefrag
Source: ikefrag ($dv)
Version: $pv
Architecture: $arch
Maintainer: ikefrag authors <ikefrag@users.noreply.github.com>
Installed-Size: $size
Depends: $charon_package (= $charon_version), $shlibs
Enhances: strongswan-charon, charon-systemd
Suggests: ikefrag
Built-Using: strongswan (= $source_version)
Section: net
Priority: optional
Homepage: https://github.com/ikefrag/ikefrag
Description: strongSwan plugin handing IKE SA keys to ikefragd
 ikefrag-keys is a charon plugin that sends the keys of every IKEv2 SA (the
 initial SA and each rekeyed one) and each SA's deletion to ikefragd's key
 socket, so that ikefragd's proxy can re-fragment large IKE messages
 (RFC 7383) without strongSwan's save-keys debugging plugin. Keys stay in
 charon's memory: never written to disk, never logged.
 .
 Built for strongSwan $charon_version only. Configure it in
 /etc/strongswan.d/charon/ikefrag-keys.conf and restart charon.
CONTROL
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"

mkdir -p "$out"
deb="$out/strongswan-plugin-ikefrag_${pv}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
