#!/usr/bin/env bash
# strongswan-save-keys.sh — provide strongSwan's save-keys plugin for the
# charon that is installed on this machine, and print the path of the .so.
#
# Why: the lab needs the IKE and ESP keys of every SA (to decrypt captures and
# to feed the keyed proxy), and strongSwan writes them only through its
# save-keys plugin. Debian does not build that plugin, so it is built from the
# distribution's own strongswan source package, in the configured tree that
# scripts/strongswan-source.sh provides (and keys/strongswan-plugin/build.sh
# compiles ikefrag-keys in), and cached. The lab loads it with LD_PRELOAD into
# charon alone: charon's plugin loader looks up save_keys_plugin_create with
# dlsym(RTLD_DEFAULT) before it searches the plugin directory, so no system
# file is touched.
#
# Usage:
#   test/lab/strongswan-save-keys.sh          build if needed; print the .so path
#   test/lab/strongswan-save-keys.sh --check  print the path if cached, else exit 1
#
# Cache: ${IKEFRAG_LAB_CACHE:-/var/cache/ikefrag-lab}/save-keys/<version>/
#        libstrongswan-save-keys.so, where <version> is the installed
#        strongswan-libcharon version (a charon upgrade triggers a rebuild).
#        build.log in the same directory says which source built it. The
#        source tree is cached in strongswan-src/<version>/tree.
#
# The first build needs root, the Debian mirrors and build tools (see
# scripts/strongswan-source.sh); about a minute on two cores. Concurrent
# callers serialise on a lock file and reuse the first build.
#
# ABI: the plugin reaches into libcharon's structures, whose layout depends on
# configure switches; the shared tree is configured as Debian's charon was
# (mediation on).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache_root=${IKEFRAG_LAB_CACHE:-/var/cache/ikefrag-lab}
check_only=no
case "${1:-}" in
  --check) check_only=yes ;;
  "") ;;
  -h|--help) sed -n '2,/^set /{/^set /!p}' "$0"; exit 0 ;;
  *) echo "unknown argument: $1" >&2; exit 2 ;;
esac

say() { echo "strongswan-save-keys: $*" >&2; }

installed=$(dpkg-query -W -f='${Version}' strongswan-libcharon 2>/dev/null || true)
if [ -z "$installed" ]; then
  say "strongswan-libcharon is not installed"
  exit 1
fi
# Versions such as 5.9.8-5+deb12u6 are safe as directory names except for ':'.
outdir="$cache_root/save-keys/${installed//:/_}"
so="$outdir/libstrongswan-save-keys.so"

if [ -s "$so" ]; then
  echo "$so"
  exit 0
fi
[ "$check_only" = yes ] && exit 1

# The configured tree builds save-keys as part of its configuration.
tree=$("$here/../../scripts/strongswan-source.sh")

mkdir -p "$outdir"
# One builder at a time; the others wait and then find the cached file.
exec 9>"$cache_root/save-keys/.lock"
flock 9
if [ -s "$so" ]; then
  echo "$so"
  exit 0
fi
log="$outdir/build.log"
# Up to date after the configuration; make only checks (and rebuilds a
# library deleted from the tree).
make -C "$tree/src/libcharon/plugins/save_keys" >"$log" 2>&1 ||
  { say "make failed (see $log)"; exit 1; }
built="$tree/src/libcharon/plugins/save_keys/.libs/libstrongswan-save-keys.so"
if ! nm -D --defined-only "$built" | grep -q ' save_keys_plugin_create$'; then
  say "built library lacks save_keys_plugin_create"
  exit 1
fi
install -m 0644 "$built" "$so.tmp"
mv -f "$so.tmp" "$so"
cat "$tree/.ikefrag-configured" >>"$log"
say "cached $so"
echo "$so"
