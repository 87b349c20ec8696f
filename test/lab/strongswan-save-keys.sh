#!/usr/bin/env bash
# strongswan-save-keys.sh — provide strongSwan's save-keys plugin for the
# charon that is installed on this machine, and print the path of the .so.
#
# Why: the lab needs the IKE and ESP keys of every SA (to decrypt captures and
# to feed the keyed proxy), and strongSwan writes them only through its
# save-keys plugin. Debian does not build that plugin, so this script builds
# just it from the distribution's own strongswan source package and caches the
# result. The lab loads it with LD_PRELOAD into charon alone: charon's plugin
# loader looks up save_keys_plugin_create with dlsym(RTLD_DEFAULT) before it
# searches the plugin directory, so no system file is touched.
#
# Usage:
#   test/lab/strongswan-save-keys.sh          build if needed; print the .so path
#   test/lab/strongswan-save-keys.sh --check  print the path if cached, else exit 1
#
# Cache: ${IKEFRAG_LAB_CACHE:-/var/cache/ikefrag-lab}/save-keys/<version>/
#        libstrongswan-save-keys.so, where <version> is the installed
#        strongswan-libcharon version (a charon upgrade triggers a rebuild).
#        build.log in the same directory keeps the last build's output.
#
# Needs root (apt-get), network access to the configured Debian mirrors and
# build tools; missing tools (dpkg-dev, build-essential, pkg-config, bzip2) are
# installed with apt-get. Takes about a minute on two cores. Concurrent callers
# serialise on a lock file and reuse the first build.
#
# ABI: the plugin reaches into libcharon's structures, whose layout depends on
# configure switches. Debian builds with mediation support (the ME define
# changes ike_sa_t and daemon_t), so the build below enables it too.
set -euo pipefail

cache_root=${IKEFRAG_LAB_CACHE:-/var/cache/ikefrag-lab}
check_only=no
case "${1:-}" in
  --check) check_only=yes ;;
  "") ;;
  -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
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

if [ "$(id -u)" -ne 0 ]; then
  say "building needs root (apt-get source); run as root"
  exit 1
fi

mkdir -p "$outdir"
# One builder at a time; the others wait and then find the cached file.
exec 9>"$cache_root/save-keys/.lock"
flock 9
if [ -s "$so" ]; then
  echo "$so"
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

work=$(mktemp -d /tmp/ikefrag-save-keys.XXXXXX)
trap 'rm -rf "$work"' EXIT
log="$outdir/build.log"
: >"$log"

# A private apt state with deb-src twins of the machine's enabled sources, so
# that neither /etc/apt nor the system's package lists change.
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

# Prefer the exact installed version; a security suite may list a version it
# does not serve yet, so fall back to the release suite and then to any.
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
say "building from $(basename "$dsc") (installed: $installed)"
# dpkg-source applies Debian's patches, so the tree matches the binaries.
dpkg-source --no-check -x "$dsc" tree >>"$log" 2>&1
cd tree

./configure --prefix=/usr --sysconfdir=/etc --libdir=/usr/lib \
  --libexecdir=/usr/lib --disable-defaults --enable-charon \
  --enable-ikev1 --enable-ikev2 --enable-mediation --enable-save-keys \
  >>"$log" 2>&1 || { say "configure failed (see $log)"; exit 1; }
# Only the plugin directory: it needs generated headers, not built libraries.
make -C src/libcharon/plugins/save_keys -j"$(nproc)" >>"$log" 2>&1 ||
  { say "make failed (see $log)"; exit 1; }

built=src/libcharon/plugins/save_keys/.libs/libstrongswan-save-keys.so
if ! nm -D --defined-only "$built" | grep -q ' save_keys_plugin_create$'; then
  say "built library lacks save_keys_plugin_create"
  exit 1
fi
install -m 0644 "$built" "$so.tmp"
mv -f "$so.tmp" "$so"
echo "source: $fetched ($(basename "$dsc"))" >>"$log"
say "cached $so"
echo "$so"
