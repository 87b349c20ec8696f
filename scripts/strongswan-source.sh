#!/usr/bin/env bash
# strongswan-source.sh — provide the configured source tree of Debian's
# strongswan source package for the strongSwan installed on this machine,
# and print its path. Used by the two charon plugins the project builds:
# keys/strongswan-plugin/build.sh (ikefrag-keys) and
# test/lab/strongswan-save-keys.sh (strongSwan's save-keys, for the lab).
#
# Why: a charon plugin reaches into libcharon's structures, whose layout
# depends on the configure switches of the build that made the installed
# charon, and Debian ships no libcharon headers. So plugins are compiled
# in Debian's own source package (dpkg-source applies Debian's patches),
# configured with Debian's ABI-relevant switches: mediation on (the ME
# define changes ike_sa_t and daemon_t). The tree also builds save-keys
# (src/libcharon/plugins/save_keys/.libs/libstrongswan-save-keys.so), which
# generates the headers plugins need and gives the compile flags a
# libcharon plugin is built with.
#
# Usage:
#   scripts/strongswan-source.sh           fetch and configure if needed; print the tree
#   scripts/strongswan-source.sh --check   print the tree if cached, else exit 1
#
# Cache (${IKEFRAG_LAB_CACHE:-/var/cache/ikefrag-lab}/strongswan-src):
#   <version>/tree        the configured tree, <version> being the installed
#                         strongswan-libcharon's (':' as '_'): a charon
#                         upgrade means a new tree
#   <version>/tree/.ikefrag-configured
#                         written last: which source package was fetched
#   <version>.log         the last fetch and configure's output
# Concurrent callers serialise on <cache>/strongswan-src/.lock and reuse
# the first one's tree.
#
# The source version: the exact installed version when the mirrors serve
# it; a security update's source may be missing from them, then the
# release suite's and then any (the tree's debian/changelog says which;
# build.sh records it next to the plugin).
#
# Needs root for the first fetch (apt-get source through a private deb-src
# list: /etc/apt and the system's package lists are not touched), network
# access to the configured Debian mirrors and build tools (dpkg-dev,
# build-essential, pkg-config, bzip2; installed with apt-get when missing).
# Takes about a minute on two cores.
set -euo pipefail

cache_root=${IKEFRAG_LAB_CACHE:-/var/cache/ikefrag-lab}
check_only=no
case "${1:-}" in
  --check) check_only=yes ;;
  "") ;;
  -h|--help) sed -n '2,/^set /{/^set /!p}' "$0"; exit 0 ;;
  *) echo "unknown argument: $1" >&2; exit 2 ;;
esac

say() { echo "strongswan-source: $*" >&2; }

installed=$(dpkg-query -W -f='${Version}' strongswan-libcharon 2>/dev/null || true)
if [ -z "$installed" ]; then
  say "strongswan-libcharon is not installed"
  exit 1
fi
ver=${installed//:/_}
srcdir="$cache_root/strongswan-src"
tree="$srcdir/$ver/tree"

if [ -f "$tree/.ikefrag-configured" ]; then
  echo "$tree"
  exit 0
fi
[ "$check_only" = yes ] && exit 1
if [ "$(id -u)" -ne 0 ]; then
  say "the first build fetches Debian's strongswan source with apt-get: run as root"
  exit 1
fi

mkdir -p "$srcdir"
chmod 0755 "$cache_root" 2>/dev/null || true
# One fetcher at a time; the others wait and then find the tree.
exec 9>"$srcdir/.lock"
flock 9
if [ -f "$tree/.ikefrag-configured" ]; then
  echo "$tree"
  exit 0
fi

need=()
for p in dpkg-dev build-essential pkg-config bzip2; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >&2
fi

work=$(mktemp -d /tmp/ikefrag-strongswan-src.XXXXXX)
trap 'rm -rf "$work"' EXIT
log="$srcdir/$ver.log"
: >"$log"

# A private apt state with deb-src twins of the machine's enabled sources.
mkdir -p "$work/apt/parts" "$work/apt/lists/partial" "$work/src"
shopt -s nullglob
for f in /etc/apt/sources.list.d/*.sources; do
  sed -E 's/^Types:.*$/Types: deb-src/' "$f" >"$work/apt/parts/$(basename "$f")"
done
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
  [ -f "$f" ] || continue
  sed -nE 's/^[[:space:]]*deb[[:space:]]+/deb-src /p' "$f" >"$work/apt/parts/$(basename "$f").list"
done
shopt -u nullglob
aptopts=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$work/apt/parts"
  -o "Dir::State::Lists=$work/apt/lists" -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache=")
say "fetching source indexes"
apt-get "${aptopts[@]}" update -q >>"$log" 2>&1 || say "apt-get update reported errors (continuing)"

codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
cd "$work/src"
fetched=no
for spec in "strongswan=$installed" ${codename:+"strongswan/$codename"} strongswan; do
  if apt-get "${aptopts[@]}" source --download-only -q "$spec" >>"$log" 2>&1; then
    fetched=$spec
    break
  fi
  rm -f ./*.dsc ./*.tar.* ./*.diff.*
done
if [ "$fetched" = no ]; then
  say "could not download the strongswan source package (see $log)"
  exit 1
fi
dsc=$(ls ./strongswan_*.dsc | head -n1)
say "configuring $(basename "$dsc") (installed: $installed)"
rm -rf "${srcdir:?}/$ver"
mkdir -p "$srcdir/$ver"
dpkg-source --no-check -x "$dsc" "$tree" >>"$log" 2>&1
# dpkg-source leaves a copy of the upstream tarball beside the tree.
rm -f "$srcdir/$ver"/*.orig.tar.*
(cd "$tree" && ./configure --prefix=/usr --sysconfdir=/etc --libdir=/usr/lib \
  --libexecdir=/usr/lib --disable-defaults --enable-charon \
  --enable-ikev1 --enable-ikev2 --enable-mediation --enable-save-keys) \
  >>"$log" 2>&1 || { say "configure failed (see $log)"; exit 1; }
# Only the save-keys directory: it needs generated headers, not built
# libraries.
make -C "$tree/src/libcharon/plugins/save_keys" -j"$(nproc)" >>"$log" 2>&1 ||
  { say "make of save-keys failed (see $log)"; exit 1; }
echo "source: $fetched ($(basename "$dsc"))" >"$tree/.ikefrag-configured"
say "configured $tree"
echo "$tree"
