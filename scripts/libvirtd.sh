#!/usr/bin/env bash
# Start/stop virtlogd + libvirtd without systemd, idempotently.
# Usage: scripts/libvirtd.sh start|stop|status
# Assumes nothing from an earlier run: /run may be empty (fresh machine, or after a reboot: then
# pid files and sockets under a persistent /run may be stale, a pid may name an unrelated
# process), /var/log/libvirt may be missing.
set -euo pipefail
sock=/run/libvirt/libvirt-sock
log() { printf '[libvirtd] %s\n' "$*" >&2; }

[ "$(id -u)" = 0 ] || { echo "libvirtd.sh: run as root (the system libvirtd)" >&2; exit 1; }

# running NAME: /run/NAME.pid names a live process that *is* NAME (not a reused pid, no zombie)
running() {
  local p; p=$(cat "/run/$1.pid" 2>/dev/null) || return 1
  [[ $p =~ ^[0-9]+$ ]] && kill -0 "$p" 2>/dev/null || return 1
  [ "$(cat "/proc/$p/comm" 2>/dev/null)" = "$1" ] || return 1
  [[ $(cat "/proc/$p/stat" 2>/dev/null) != *") Z "* ]]
}

# /dev/kvm as udev sets it on a normal Debian host (root:kvm 0660). Without it
# libvirt sees KVM as unusable for the qemu user and throws its cached QEMU
# capabilities away on every call (~4-6 s per `virsh start` here). vmctl probes
# whether KVM really works on its own; this only restores the usual permissions.
fix_kvm_node() {
  if [ -c /dev/kvm ] && getent group kvm >/dev/null; then
    if [ "$(stat -c '%G %a' /dev/kvm)" != "kvm 660" ]; then
      log "setting /dev/kvm to root:kvm 0660 (udev's default)"
      chgrp kvm /dev/kvm && chmod 0660 /dev/kvm
    fi
  fi
}

start() {
  command -v libvirtd >/dev/null && command -v virtlogd >/dev/null ||
    { echo "libvirtd.sh: libvirtd/virtlogd not found; run scripts/setup-host.sh" >&2; exit 1; }
  getent passwd libvirt-qemu >/dev/null ||
    { echo "libvirtd.sh: user libvirt-qemu missing (libvirt-daemon-system's postinst makes it); run: apt-get install --reinstall libvirt-daemon-system" >&2; exit 1; }
  mkdir -p /run/libvirt /var/log/libvirt /var/log/libvirt/qemu
  fix_kvm_node
  if ! running virtlogd; then
    log "starting virtlogd"
    # a pid file / sockets left by a virtlogd that no longer runs (stale /run after a reboot)
    rm -f /run/virtlogd.pid /run/libvirt/virtlogd-sock /run/libvirt/virtlogd-admin-sock
    virtlogd -d -p /run/virtlogd.pid
  fi
  if ! running libvirtd; then
    log "starting libvirtd"
    rm -f /run/libvirtd.pid "$sock" /run/libvirt/libvirt-sock-ro /run/libvirt/libvirt-admin-sock
    libvirtd -d -p /run/libvirtd.pid
  fi
  for _ in $(seq 1 100); do
    if [ -S "$sock" ] && virsh -c qemu:///system version >/dev/null 2>&1; then
      log "libvirtd ready ($sock)"; return 0
    fi
    sleep 0.2
  done
  echo "libvirtd.sh: libvirtd did not come up; see /var/log/libvirt/libvirtd.log" >&2
  exit 1
}

stop() {
  local d p
  for d in libvirtd virtlogd; do
    if running "$d"; then
      p=$(cat "/run/$d.pid")
      log "stopping $d ($p)"
      kill "$p" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    fi
  done
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  status) running libvirtd && echo running || { echo stopped; exit 1; } ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
