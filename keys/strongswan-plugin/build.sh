#!/usr/bin/env bash
# build.sh — build the ikefrag-keys strongSwan plugin against the strongSwan
# installed on this machine, and print the path of the .so.
#
# Why this way: a charon plugin reaches into libcharon's structures, whose
# layout depends on the configure switches of the build that made the
# installed charon. Debian ships no development headers for libcharon, so
# the plugin is compiled inside the configured tree of Debian's own
# strongswan source package (the version installed), with that tree's
# config.h and compiler flags, exactly as test/lab/strongswan-save-keys.sh
# builds save-keys.
#
# Usage:
#   keys/strongswan-plugin/build.sh            build if needed; print the .so path
#   keys/strongswan-plugin/build.sh --check    print the path if cached, else exit 1
#   keys/strongswan-plugin/build.sh --out DIR  also copy the .so to DIR
#
# Cache (${IKEFRAG_LAB_CACHE:-/var/cache/ikefrag-lab}):
#   strongswan-src/<version>/tree   the configured source tree (fetched once per
#                                   installed strongswan-libcharon version)
#   ikefrag-keys/<version>/<hash>/libstrongswan-ikefrag-keys.so
#                                   <hash> is the sha256 of the plugin sources,
#                                   so an edit rebuilds and a charon upgrade too.
#   ikefrag-keys/<version>/<hash>/built-against
#                                   what it was built for: the charon package
#                                   and version (charon_package=, charon_version=)
#                                   and the source package version whose tree
#                                   compiled it (source_version=); the Debian
#                                   package (packaging/build-plugin-deb.sh)
#                                   takes its Depends and Built-Using from it.
#
# Needs root for the first fetch (apt-get source through a private deb-src
# list; /etc/apt is not touched) and build tools (installed when missing).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache_root=${IKEFRAG_LAB_CACHE:-/var/cache/ikefrag-lab}
check_only=no
outdir_copy=
while [ $# -gt 0 ]; do
  case "$1" in
    --check) check_only=yes ;;
    --out) outdir_copy=$2; shift ;;
    -h|--help) sed -n '2,/^set /{/^set /!p}' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done

say() { echo "ikefrag-keys build: $*" >&2; }

installed=$(dpkg-query -W -f='${Version}' strongswan-libcharon 2>/dev/null || true)
if [ -z "$installed" ]; then
  say "strongswan-libcharon is not installed"
  exit 1
fi
ver=${installed//:/_}
srchash=$(cat "$here"/*.[ch] "$here/build.sh" | sha256sum | cut -c1-16)
sodir="$cache_root/ikefrag-keys/$ver/$srchash"
so="$sodir/libstrongswan-ikefrag-keys.so"

finish() {
  if [ -n "$outdir_copy" ]; then
    mkdir -p "$outdir_copy"
    install -m 0644 "$so" "$outdir_copy/libstrongswan-ikefrag-keys.so"
    echo "$outdir_copy/libstrongswan-ikefrag-keys.so"
  else
    echo "$so"
  fi
  exit 0
}

[ -s "$so" ] && [ -s "$sodir/built-against" ] && finish
[ "$check_only" = yes ] && exit 1

mkdir -p "$cache_root/ikefrag-keys" "$cache_root/strongswan-src"
chmod 0755 "$cache_root" 2>/dev/null || true
exec 9>"$cache_root/strongswan-src/.lock"
flock 9
[ -s "$so" ] && [ -s "$sodir/built-against" ] && finish

tree="$cache_root/strongswan-src/$ver/tree"
if [ ! -f "$tree/.ikefrag-configured" ]; then
  if [ "$(id -u)" -ne 0 ]; then
    say "the first build fetches Debian's strongswan source with apt-get: run as root"
    exit 1
  fi
  need=()
  for p in dpkg-dev build-essential pkg-config bzip2; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
  done
  if [ ${#need[@]} -gt 0 ]; then
    say "installing ${need[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >&2
  fi
  work=$(mktemp -d /tmp/ikefrag-keys-src.XXXXXX)
  trap 'rm -rf "$work"' EXIT
  log="$cache_root/strongswan-src/$ver.log"
  : >"$log"
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
  rm -rf "$cache_root/strongswan-src/$ver"
  mkdir -p "$cache_root/strongswan-src/$ver"
  dpkg-source --no-check -x "$dsc" "$tree" >>"$log" 2>&1
  # Debian's ABI-relevant switches: mediation changes ike_sa_t and daemon_t.
  (cd "$tree" && ./configure --prefix=/usr --sysconfdir=/etc --libdir=/usr/lib \
    --libexecdir=/usr/lib --disable-defaults --enable-charon \
    --enable-ikev1 --enable-ikev2 --enable-mediation --enable-save-keys) \
    >>"$log" 2>&1 || { say "configure failed (see $log)"; exit 1; }
  # The save-keys directory's Makefile gives the flags a libcharon plugin is
  # compiled with; building it once also generates the headers plugins need.
  make -C "$tree/src/libcharon/plugins/save_keys" >>"$log" 2>&1 ||
    { say "make of the reference plugin failed (see $log)"; exit 1; }
  echo "source: $fetched ($(basename "$dsc"))" >"$tree/.ikefrag-configured"
fi

ref="$tree/src/libcharon/plugins/save_keys"
# Ask that Makefile for its compile flags, so ours match what Debian's
# plugins were built with.
flags=$(make -s -C "$ref" -f Makefile -f - ikefrag-print-flags <<'MK'
ikefrag-print-flags:
	@echo $(DEFS) $(DEFAULT_INCLUDES) $(INCLUDES) $(AM_CPPFLAGS) $(CPPFLAGS) $(AM_CFLAGS) $(CFLAGS)
MK
)
mkdir -p "$sodir"
log="$sodir/build.log"
say "compiling"
# shellcheck disable=SC2086
(cd "$ref" && gcc $flags -fPIC -Wall -Wextra -Wno-unused-parameter -Werror \
  -shared -o "$so.tmp" "$here"/*.c -lpthread) >"$log" 2>&1 ||
  { cat "$log" >&2; say "compile failed (see $log)"; rm -f "$so.tmp"; exit 1; }
if ! nm -D --defined-only "$so.tmp" | grep -q ' ikefrag_keys_plugin_create$'; then
  say "built library lacks ikefrag_keys_plugin_create"
  exit 1
fi
# The mirror may lack the installed version's source (a security update):
# then the tree is the nearest release's, recorded here next to the .so.
srcver=$(dpkg-parsechangelog -l "$tree/debian/changelog" -S Version)
printf 'charon_package=strongswan-libcharon\ncharon_version=%s\nsource_version=%s\n' \
  "$installed" "$srcver" >"$sodir/built-against"
chmod 0644 "$so.tmp"
mv -f "$so.tmp" "$so"
say "cached $so"
finish
