#!/usr/bin/env bash
# Installs everything vmctl and its test rig need on a Debian 12 host, idempotently.
# Usage: scripts/setup-host.sh            (packages + deb-src + npm ci + libvirtd)
#        VMCTL_SETUP_OFFLINE=1 scripts/setup-host.sh
#            no package index or registry: only checks that the packages are there (fails
#            naming the fix), skips deb-src and npm ci, then starts libvirtd
#            (scripts/prove-fresh.sh runs it so, in a network namespace of its own)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)

log() { printf '[setup-host] %s\n' "$*" >&2; }

[ "$(id -u)" = 0 ] || { echo "setup-host.sh: run as root (it installs Debian packages)" >&2; exit 1; }

PKGS=(
  qemu-system-x86 qemu-utils libvirt-daemon-system libvirt-clients
  genisoimage xorriso dnsmasq-base debootstrap openssh-server openssh-client
  python3-libvirt iproute2 iptables busybox-static cpio gzip gnutls-bin
  libxml2-utils dpkg-dev util-linux procps curl ca-certificates
  e2fsprogs virtinst python3-yaml ovmf socat
)

offline=${VMCTL_SETUP_OFFLINE:-}

# deb-src for `apt-get source libvirt` (the protocol generator's input)
src_list=/etc/apt/sources.list.d/debian.sources
if [ -z "$offline" ] && [ -f "$src_list" ] && ! grep -q '^Types:.*deb-src' "$src_list"; then
  log "enabling deb-src in $src_list"
  sed -i 's/^Types: deb$/Types: deb deb-src/' "$src_list"
  stamp=stale
fi

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ -n "$offline" ] && [ "${#missing[@]}" -gt 0 ]; then
  echo "setup-host.sh: packages missing: ${missing[*]}; run 'bash scripts/setup-host.sh' (online) first" >&2; exit 1
fi
# no package lists at all (images often ship with /var/lib/apt/lists emptied): later steps
# (build-tiny-guest.sh's kernel download, apt-get source) need them
if [ -z "$offline" ] && ! ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1; then stamp=stale; fi
if [ "${#missing[@]}" -gt 0 ] || [ "${stamp:-}" = stale ]; then
  log "apt-get update"
  apt-get update -qq
fi
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing: ${missing[*]}"
  # policy-rc.d keeps package scripts from trying to start services (no systemd here)
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; created_policy=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [ -n "${created_policy:-}" ] && rm -f /usr/sbin/policy-rc.d
fi

if [ -z "$offline" ] && [ -f "$root/package-lock.json" ]; then
  if [ ! -d "$root/node_modules" ] || [ "$root/package-lock.json" -nt "$root/node_modules/.package-lock.json" ]; then
    log "npm ci"
    (cd "$root" && npm ci --no-audit --no-fund --loglevel=error)
  fi
fi

"$here/libvirtd.sh" start
