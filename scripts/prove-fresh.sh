#!/usr/bin/env bash
# Proves that host setup and the test rig come up from nothing: no /run, /tmp, rig dir, cache or
# HOME state from an earlier run. Runs, as root, in a private mount namespace *and* a private
# network namespace (so its 127.0.0.1:16509/16514/16522/16523 and its `ip netns` names never meet
# a real rig in the root netns), with
#   - empty tmpfs over /run and /tmp; HOME, VMCTL_RIG_DIR, VMCTL_TINY_DIR, VMCTL_CACHE_DIR,
#     VMCTL_DATA_DIR, XDG_CACHE_HOME: new empty dirs under that /tmp
#   - the system libvirtd's dirs isolated, so the one scripts/libvirtd.sh starts in here never
#     shares state with the machine's: /etc/libvirt = a copy of the machine's config minus defined
#     objects (domains, networks' and pools' autostart, pools, secrets); /var/lib/libvirt and
#     /var/cache/libvirt = tmpfs holding only the package's directories (owners/modes copied);
#     /var/log/libvirt = empty tmpfs
#   - its own cgroup (in every hierarchy, as the rig's hosts have), so every process it started is
#     found afterwards however it daemonized
# then:
#   1. VMCTL_SETUP_OFFLINE=1 scripts/setup-host.sh  (packages/node_modules checked, libvirtd.sh start)
#   2. scripts/test-rig.sh up       (PKI, ssh keys, netns, rig network, host1 mig1 mig2)
#   3. every rig host answers: host1 over qemu+tcp and qemu+tls, mig1/mig2 on their unix sockets
#      (test-rig.sh exec), ssh to mig1/mig2 through their loopback forwards with the rig key and
#      StrictHostKeyChecking=yes against the new known_hosts, mig1 -> mig2 over the rig network
#   4. test-rig.sh down, status (must say stopped), clean (rig dir and netns gone), libvirtd.sh stop;
#      then libvirtd.sh start + stop over stale /run pid files (naming pid 1) and a dead socket
#   5. none of the daemons named by the pid files (libvirtd, virtlogd, sshd, socat) survives, and
#      nothing at all is left in its cgroup (leftovers are listed, then killed)
# Last line: "prove-fresh: PASS (N s)" or "prove-fresh: FAIL: reason"; exit 0 / 1.
# Needs the packages and node_modules already there (scripts/setup-host.sh): no network in here.
# The tiny guest is not needed: `test-rig.sh up` boots no guest.
# Usage: scripts/prove-fresh.sh
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
self="$here/$(basename "$0")"
rig="$here/test-rig.sh"
log() { printf '[prove-fresh] %s\n' "$*" >&2; }
# shellcheck source=lib/sandbox.sh
. "$here/lib/sandbox.sh"

# ---------------------------------------------------------------------------------------------
# inside: new mount + network namespace (unshare); fd 8 = the outer side's result file
# ---------------------------------------------------------------------------------------------
inside_fail() { printf '%s\n' "$*" >&8; log "FAIL: $*"; exit 1; }

check() { # DESCRIPTION CMD...: run CMD (output to the log), fail naming DESCRIPTION
  local what=$1; shift
  if "$@" >/tmp/prove-fresh/check.out 2>&1; then log "ok: $what"
  else sed 's/^/    /' /tmp/prove-fresh/check.out >&2; inside_fail "$what (command: $*)"; fi
}

ssh_rig() { # PORT CMD...
  local port=$1; shift
  timeout 30 ssh -F /dev/null -p "$port" -i "$VMCTL_RIG_DIR/ssh/id_ed25519" -o IdentitiesOnly=yes \
    -o UserKnownHostsFile="$VMCTL_RIG_DIR/ssh/known_hosts" -o StrictHostKeyChecking=yes \
    -o BatchMode=yes -o ConnectTimeout=10 root@127.0.0.1 "$@" </dev/null
}

ssh_lands_in() { # NAME PORT: the ssh session runs in NAME's namespaces (hostname, its libvirtd)
  local got; got=$(ssh_rig "$2" hostname) || return 1
  [ "$got" = "$1" ] || { echo "hostname over ssh is '$got', expected '$1'"; return 1; }
  ssh_rig "$2" virsh -c qemu:///system version
}

inside() {
  # a clean slate: nothing on /run or /tmp, loopback up (the only link in this netns). A checkout
  # under /tmp or /run (CI may clone there) is held aside and bound back at its own path.
  local hold=''
  case "$root/" in
    /tmp/*|/run/*) hold=$(mktemp -d /var/tmp/vmctl-prove-repo.XXXXXX); mount --bind "$root" "$hold" ;;
  esac
  mount -t tmpfs -o mode=755,nosuid,nodev prove-fresh-run /run
  mount -t tmpfs -o mode=1777,nosuid,nodev prove-fresh-tmp /tmp
  if [ -n "$hold" ]; then
    mkdir -p "$root"; mount --bind "$hold" "$root"; umount "$hold"; rmdir "$hold"
  fi
  ip link set lo up
  local base=/tmp/prove-fresh
  mkdir -p "$base/home"; chmod 700 "$base/home"
  isolate_libvirt /tmp/prove-fresh/stage
  export HOME=$base/home VMCTL_RIG_DIR=$base/rig VMCTL_TINY_DIR=$base/tiny VMCTL_CACHE_DIR=$base/cache \
         VMCTL_DATA_DIR=$base/data XDG_CACHE_HOME=$base/xdg-cache TMPDIR=/tmp
  unset VMCTL_RIG_HOSTS VMCTL_RIG_SSH_PORT VMCTL_RIG_KVM LIBVIRT_DEFAULT_URI SSH_AUTH_SOCK
  local t0=$SECONDS t

  # an unexpected exit still tears down what it started (the outer side sweeps the cgroup too)
  trap 'bash "$rig" clean >/dev/null 2>&1 || true; bash "$here/libvirtd.sh" stop >/dev/null 2>&1 || true' EXIT

  log "1/5 host setup from an empty /run (VMCTL_SETUP_OFFLINE=1 scripts/setup-host.sh)"
  VMCTL_SETUP_OFFLINE=1 bash "$here/setup-host.sh" || inside_fail "scripts/setup-host.sh failed from an empty /run"
  check "system libvirtd (started here) answers on /run/libvirt/libvirt-sock" virsh -c qemu:///system version
  log "    setup: $((SECONDS - t0)) s"

  log "2/5 scripts/test-rig.sh up (empty VMCTL_RIG_DIR=$VMCTL_RIG_DIR)"
  t=$SECONDS
  bash "$rig" up || inside_fail "scripts/test-rig.sh up failed from nothing"
  log "    rig up: $((SECONDS - t)) s"

  log "3/5 every rig host answers"
  t=$SECONDS
  check "host1 over qemu+tcp://127.0.0.1:16509" virsh -c 'qemu+tcp://127.0.0.1:16509/system' version
  check "host1 over qemu+tls://127.0.0.1:16514 (rig PKI)" \
    virsh -c "qemu+tls://127.0.0.1:16514/system?pkipath=$VMCTL_RIG_DIR/pki" version
  check "host1 on its unix socket" virsh -c "qemu+unix:///system?socket=$VMCTL_RIG_DIR/hosts/host1/run/libvirt/libvirt-sock" version
  local h port=16522
  for h in mig1 mig2; do
    check "$h on its unix socket (test-rig.sh exec)" bash "$rig" exec "$h" virsh -c qemu:///system version
    check "ssh root@127.0.0.1:$port ($h) with the rig key, StrictHostKeyChecking=yes" ssh_rig "$port" true
    check "ssh to $h lands in $h (hostname, its libvirtd)" ssh_lands_in "$h" "$port"
    port=$((port + 1))
  done
  check "mig1 -> mig2 over the rig network (qemu+tcp://mig2)" bash "$rig" exec mig1 virsh -c qemu+tcp://mig2/system version
  check "test-rig.sh status" bash "$rig" status

  # every daemon the pid files name, to check after `down` (pid + comm)
  local f p pids=()
  for f in /run/libvirtd.pid /run/virtlogd.pid "$VMCTL_RIG_DIR"/hosts/*/*.pid "$VMCTL_RIG_DIR"/hosts/*/ssh/*.pid; do
    [ -f "$f" ] || continue
    p=$(cat "$f"); pids+=("$p:$(cat "/proc/$p/comm" 2>/dev/null || echo '?'):$f")
  done
  [ "${#pids[@]}" = 12 ] || inside_fail "expected 12 daemon pid files (2 system + 3 hosts x 2 + 2 x sshd/socat), found ${#pids[@]}: ${pids[*]}"

  log "    checks: $((SECONDS - t)) s"
  log "4/5 test-rig.sh down, clean; libvirtd.sh stop"
  t=$SECONDS
  bash "$rig" down || inside_fail "scripts/test-rig.sh down failed"
  if bash "$rig" status >/dev/null 2>&1; then inside_fail "test-rig.sh status still reports a running rig after down"; fi
  bash "$rig" clean || inside_fail "scripts/test-rig.sh clean failed"
  [ ! -e "$VMCTL_RIG_DIR" ] || inside_fail "test-rig.sh clean left $VMCTL_RIG_DIR"
  if ip netns list | grep -q '^vmctl-rig-'; then inside_fail "test-rig.sh clean left network namespaces: $(ip netns list | tr '\n' ' ')"; fi
  bash "$here/libvirtd.sh" stop || inside_fail "scripts/libvirtd.sh stop failed"
  # a persistent /run after a reboot: pid files naming a live but unrelated process (pid 1), a
  # socket file nobody listens on. libvirtd.sh must start the daemons anyway, and stop must
  # leave pid 1 alone.
  echo 1 > /run/libvirtd.pid; echo 1 > /run/virtlogd.pid
  python3 -c 'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])' /run/libvirt/libvirt-sock
  bash "$here/libvirtd.sh" start || inside_fail "scripts/libvirtd.sh start with stale pid files (naming pid 1) and a stale socket failed"
  check "system libvirtd answers after a start over stale pid files" virsh -c qemu:///system version
  for f in /run/libvirtd.pid /run/virtlogd.pid; do
    p=$(cat "$f"); pids+=("$p:$(cat "/proc/$p/comm" 2>/dev/null || echo '?'):$f")
  done
  bash "$here/libvirtd.sh" stop || inside_fail "scripts/libvirtd.sh stop failed"
  trap - EXIT
  log "    down/clean/stop + stale-pid restart: $((SECONDS - t)) s"

  log "5/5 no daemon survives"
  local e alive=() i
  for i in $(seq 1 50); do
    alive=()
    for e in "${pids[@]}"; do
      p=${e%%:*}; f=${e#*:}; f=${f%%:*}   # f = comm
      [ "$(cat "/proc/$p/comm" 2>/dev/null)" = "$f" ] && alive+=("$e")
    done
    [ "${#alive[@]}" = 0 ] && break
    sleep 0.1
  done
  [ "${#alive[@]}" = 0 ] || inside_fail "still running after down/clean/stop: ${alive[*]}"
  log "ok: none of ${#pids[@]} daemons (${pids[*]%%:/*}) is left"
}

# ---------------------------------------------------------------------------------------------
# outside: own cgroup, the namespaces, the sweep, the verdict
# ---------------------------------------------------------------------------------------------
outside() {
  [ "$(id -u)" = 0 ] || { echo "prove-fresh: FAIL: run as root (namespaces, libvirtd, cgroups)"; exit 1; }
  local t
  for t in unshare mount ip virsh ssh timeout dpkg-query; do
    command -v "$t" >/dev/null || { echo "prove-fresh: FAIL: $t not found (run scripts/setup-host.sh)"; exit 1; }
  done
  local t0=$SECONDS res rc=0
  res=$(mktemp "${TMPDIR:-/tmp}/prove-fresh.XXXXXX")
  cg_enter "prove-fresh-$$" || { echo "prove-fresh: FAIL: no cgroup hierarchies found"; exit 1; }
  trap 'cg_sweep; rm -f "$res"; echo "prove-fresh: FAIL: interrupted"; exit 130' INT TERM
  timeout --kill-after=10 240 unshare --mount --net --propagation private -- "$self" __inside 8>"$res" </dev/null || rc=$?
  cg_sweep
  local left=$LEFT
  local why; why=$(head -n1 "$res" 2>/dev/null || true); rm -f "$res"
  if [ "$rc" != 0 ]; then
    [ "$rc" != 124 ] || why="timed out after 240 s"
    echo "prove-fresh: FAIL: ${why:-exit $rc, see the log above}${left:+ (left running, now killed: $left)}"; exit 1
  fi
  if [ -n "$left" ]; then echo "prove-fresh: FAIL: processes survived the rig's down/clean and libvirtd.sh stop (now killed): $left"; exit 1; fi
  echo "prove-fresh: PASS ($((SECONDS - t0)) s: setup + rig up/check/down/clean from an empty /run, /tmp and rig dir; nothing left running)"
}

case "${1:-}" in
  __inside) inside ;;
  "") outside ;;
  *) sed -n '2,/^set -euo/p' "$self" | sed '$d' >&2; exit 2 ;;
esac
