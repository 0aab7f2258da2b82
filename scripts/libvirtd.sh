#!/usr/bin/env bash
# Start/stop virtlogd + libvirtd without systemd, idempotently.
# Usage: scripts/libvirtd.sh start|stop|status
set -euo pipefail
sock=/run/libvirt/libvirt-sock
log() { printf '[libvirtd] %s\n' "$*" >&2; }

running() { [ -f "/run/$1.pid" ] && kill -0 "$(cat "/run/$1.pid")" 2>/dev/null; }

start() {
  mkdir -p /run/libvirt /var/log/libvirt
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
