#!/usr/bin/env bash
# Runs CMD next to a test rig of its own, for development while another rig (and test run) uses
# the root network namespace: a private mount + network namespace (lo only, so its
# 127.0.0.1:16509/16514/16522/16523 and `vmctl-rig-*` netns names never meet the real rig), empty
# tmpfs over /run and /tmp, new HOME / VMCTL_RIG_DIR / VMCTL_TINY_DIR / VMCTL_CACHE_DIR /
# VMCTL_DATA_DIR under that /tmp, the system libvirtd's dirs isolated (scripts/lib/sandbox.sh,
# shared with scripts/prove-fresh.sh; the machine's libvirtd is not visible in here), and its own
# cgroup. It brings the rig up (VMCTL_RIG_HOSTS, default: all hosts), runs CMD from the repo root
# with the rig's environment, then tears the rig down and sweeps its cgroup: nothing is left.
#
# Usage: scripts/rig-sandbox.sh CMD...     e.g. scripts/rig-sandbox.sh npx vitest run test/e2e/migrate.test.ts
# The tiny guest is copied in from .cache/tiny (built there first if missing). Exit: CMD's.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
self="$here/$(basename "$0")"
rig="$here/test-rig.sh"
log() { printf '[rig-sandbox] %s\n' "$*" >&2; }
# shellcheck source=lib/sandbox.sh
. "$here/lib/sandbox.sh"

inside() {
  local tiny_src=$1; shift
  mount -t tmpfs -o mode=755,nosuid,nodev rig-sandbox-run /run
  mount -t tmpfs -o mode=1777,nosuid,nodev rig-sandbox-tmp /tmp
  ip link set lo up
  mkdir -p /run/lock; chmod 1777 /run/lock   # /var/lock: libvirt's lock files for console ptys
  local base=/tmp/rig-sandbox
  mkdir -p "$base/home" "$base/tiny"; chmod 700 "$base/home"; chmod 755 "$base" "$base/tiny"
  isolate_libvirt "$base/stage"
  cp "$tiny_src"/vmlinuz "$tiny_src"/initrd.img "$tiny_src"/manifest.json "$base/tiny/"
  export HOME=$base/home VMCTL_RIG_DIR=$base/rig VMCTL_TINY_DIR=$base/tiny VMCTL_CACHE_DIR=$base/cache \
         VMCTL_DATA_DIR=$base/data XDG_CACHE_HOME=$base/xdg-cache TMPDIR=/tmp VMCTL_IN_RIG_SANDBOX=1
  unset LIBVIRT_DEFAULT_URI SSH_AUTH_SOCK
  trap 'bash "$rig" clean >/dev/null 2>&1 || true' EXIT
  local t=$SECONDS
  bash "$rig" up >"$base/rig-up.log" 2>&1 || { cat "$base/rig-up.log" >&2; log "test-rig.sh up failed"; exit 1; }
  log "rig up in $((SECONDS - t)) s (hosts: ${VMCTL_RIG_HOSTS:-default}); running: $*"
  local rc=0
  (cd "$root" && "$@") || rc=$?
  bash "$rig" clean >/dev/null 2>&1 || log "test-rig.sh clean failed"
  trap - EXIT
  exit "$rc"
}

outside() {
  [ $# -gt 0 ] || { sed -n '2,/^set -euo/p' "$self" | sed '$d' >&2; exit 2; }
  [ "$(id -u)" = 0 ] || { echo "rig-sandbox: run as root (namespaces, libvirtd, cgroups)" >&2; exit 1; }
  local tiny=${VMCTL_TINY_DIR:-$root/.cache/tiny}
  [ -s "$tiny/manifest.json" ] || bash "$here/build-tiny-guest.sh" "$tiny" >&2
  cg_enter "rig-sandbox-$$" || { echo "rig-sandbox: no cgroup hierarchies found" >&2; exit 1; }
  trap 'cg_sweep; echo "rig-sandbox: interrupted" >&2; exit 130' INT TERM
  local rc=0
  unshare --mount --net --propagation private -- "$self" __inside "$tiny" "$@" || rc=$?
  cg_sweep
  [ -z "$LEFT" ] || log "killed what was left running: $LEFT"
  exit "$rc"
}

case "${1:-}" in
  __inside) shift; inside "$@" ;;
  *) outside "$@" ;;
esac
