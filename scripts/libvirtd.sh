#!/usr/bin/env bash
# Start/stop virtlogd + libvirtd without systemd, idempotently.
# Usage: scripts/libvirtd.sh start|stop|status
set -euo pipefail
sock=/run/libvirt/libvirt-sock
log() { printf '[libvirtd] %s\n' "$*" >&2; }

running() { [ -f "/run/$1.pid" ] && kill -0 "$(cat "/run/$1.pid")" 2>/dev/null; }

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
  mkdir -p /run/libvirt /var/log/libvirt
  fix_kvm_node
  if ! running virtlogd; then
    log "starting virtlogd"
    virtlogd -d -p /run/virtlogd.pid
  fi
  if ! running libvirtd; then
    log "starting libvirtd"
    rm -f "$sock"
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
  for d in libvirtd virtlogd; do
    if running "$d"; then kill "$(cat "/run/$d.pid")"; fi
  done
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  status) running libvirtd && echo running || { echo stopped; exit 1; } ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
