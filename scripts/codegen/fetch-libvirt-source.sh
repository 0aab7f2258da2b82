#!/usr/bin/env bash
# Provides the libvirt source tree the protocol generator reads, idempotently,
# and prints its directory on stdout (diagnostics go to stderr).
#
#   LIBVIRT_SOURCE=<dir>       use that tree, fetch nothing
#   LIBVIRT_DEB_VERSION=<ver>  Debian source version to fetch (default: the one
#                              the committed src/libvirt/generated files came from)
#
# Otherwise: .cache/libvirt-src/libvirt-<upstream version>/ via
# `apt-get source --download-only libvirt=<ver>` (needs deb-src, which
# scripts/setup-host.sh enables) and dpkg-source -x (Debian patches applied).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cache="$root/.cache/libvirt-src"
# Keep in step with the header of src/libvirt/generated/*.gen.ts.
pinned="${LIBVIRT_DEB_VERSION:-9.0.0-4+deb12u2}"

log() { printf '[fetch-libvirt-source] %s\n' "$*" >&2; }
die() { printf 'fetch-libvirt-source.sh: %s\n' "$*" >&2; exit 1; }

is_tree() { [ -f "$1/src/remote/remote_protocol.x" ] && [ -f "$1/meson.build" ]; }

if [ -n "${LIBVIRT_SOURCE:-}" ]; then
  is_tree "$LIBVIRT_SOURCE" || die "LIBVIRT_SOURCE=$LIBVIRT_SOURCE is not a libvirt source tree"
  (cd "$LIBVIRT_SOURCE" && pwd)
  exit 0
fi

upstream="${pinned#*:}"        # drop an epoch
upstream="${upstream%-*}"      # drop the Debian revision
dir="$cache/libvirt-$upstream"

if is_tree "$dir"; then
  meson_ver=$(sed -n "s/^ *version: *'\([^']*\)'.*/\1/p" "$dir/meson.build" | head -n1)
  [ "$meson_ver" = "$upstream" ] || die "$dir/meson.build says version '$meson_ver', expected '$upstream'"
  echo "$dir"
  exit 0
fi

mkdir -p "$cache"
cd "$cache"

dsc="libvirt_${pinned#*:}.dsc"
if [ ! -f "$dsc" ]; then
  command -v apt-get >/dev/null || die "apt-get not found; set LIBVIRT_SOURCE=<libvirt source dir>"
  log "apt-get source --download-only libvirt=$pinned (into $cache)"
  if ! apt-get source --download-only -qq "libvirt=$pinned" >&2; then
    if [ "$(id -u)" = 0 ]; then
      log "retrying after apt-get update"
      apt-get update -qq >&2 || true
      apt-get source --download-only -qq "libvirt=$pinned" >&2 ||
        die "apt-get source libvirt=$pinned failed (is deb-src enabled? see scripts/setup-host.sh; superseded versions need LIBVIRT_SOURCE)"
    else
      die "apt-get source libvirt=$pinned failed (is deb-src enabled and apt-get update done? see scripts/setup-host.sh)"
    fi
  fi
fi
[ -f "$dsc" ] || die "$dsc missing after download"

tmp="$cache/.unpack.$$"
rm -rf "$tmp"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp"
if command -v dpkg-source >/dev/null; then
  log "dpkg-source -x $dsc"
  dpkg-source --no-check -q -x "$dsc" "$tmp/libvirt-$upstream" >&2
else
  orig=$(ls "libvirt_${upstream}.orig.tar."* 2>/dev/null | grep -v '\.asc$' | head -n1 || true)
  [ -n "$orig" ] || die "no orig tarball for $upstream and no dpkg-source"
  log "dpkg-source not found; unpacking $orig without Debian patches"
  tar -xf "$orig" -C "$tmp"
fi
is_tree "$tmp/libvirt-$upstream" || die "unpacked tree $tmp/libvirt-$upstream has no src/remote/remote_protocol.x"
mv "$tmp/libvirt-$upstream" "$dir"
echo "$dir"
