#!/usr/bin/env bash
# build.sh — build the ikefrag-keys strongSwan plugin against the strongSwan
# installed on this machine, and print the path of the .so.
#
# Why this way: a charon plugin reaches into libcharon's structures, whose
# layout depends on the configure switches of the build that made the
# installed charon. Debian ships no development headers for libcharon, so
# the plugin is compiled inside the configured tree of Debian's own
# strongswan source package (the version installed), with that tree's
# config.h and compiler flags: scripts/strongswan-source.sh provides the
# tree, which test/lab/strongswan-save-keys.sh builds save-keys in.
#
# Usage:
#   keys/strongswan-plugin/build.sh            build if needed; print the .so path
#   keys/strongswan-plugin/build.sh --check    print the path if cached, else exit 1
#   keys/strongswan-plugin/build.sh --out DIR  also copy the .so to DIR
#
# Cache (${IKEFRAG_LAB_CACHE:-/var/cache/ikefrag-lab}):
#   strongswan-src/<version>/tree   the configured source tree (fetched once per
#                                   installed strongswan-libcharon version, by
#                                   scripts/strongswan-source.sh)
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
# Needs root for the first fetch of the source (see strongswan-source.sh).
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

# Debian's strongswan source, configured as Debian's charon was (fetched
# once per installed version; shared with the lab's save-keys build).
tree=$("$here/../../scripts/strongswan-source.sh")
mkdir -p "$cache_root/ikefrag-keys"
exec 9>"$cache_root/ikefrag-keys/.lock"
flock 9
[ -s "$so" ] && [ -s "$sodir/built-against" ] && finish

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
