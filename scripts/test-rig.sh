#!/usr/bin/env bash
# The vmctl integration-test rig: a throwaway PKI and extra libvirtd "hosts", each in a private
# mount namespace (own /etc/libvirt, /run/libvirt, /var/lib/libvirt, /var/cache/libvirt,
# /var/log/libvirt bind-mounted from .cache/rig/hosts/NAME) and a private cgroup namespace, so the
# main libvirtd (/run/libvirt/libvirt-sock) is neither reconfigured nor disturbed.
#
# Usage: scripts/test-rig.sh up|down|status|env|clean|restart-libvirtd NAME|restart NAME
#   up      create the PKI (once) and start the rig host(s); idempotent, fast when already up
#   down    destroy the rig hosts' running guests, stop their daemons; keeps .cache/rig
#   restart-libvirtd NAME
#           stop host NAME's libvirtd (SIGTERM) and start it again in the host's namespaces and
#           cgroups, the way `systemctl restart libvirtd` does on a real host: its guests (QEMU),
#           virtlogd and sshd run on (for tests of a daemon restarting under a command)
#   restart NAME
#           host NAME as after a reboot: its guests destroyed, its daemons stopped and started again
#   status  print the state of each rig host; exit 1 if any is not running
#   env     print KEY='value' lines (shell-style, single-quoted) describing the rig
#   clean   down, then delete .cache/rig (PKI, host state, defined domains)
#
# Rig hosts (see start_libvirt_host):
#   host1   root network namespace; listens on TCP 127.0.0.1:16509 (auth none) and
#           TLS 127.0.0.1:16514 (client certificate from the rig CA required), plus its unix
#           socket .cache/rig/hosts/host1/run/libvirt/libvirt-sock (qemu+unix:///system?socket=…).
#   mig1    network namespace vmctl-rig-mig1 (lo + rig-network eth0): a "remote host over SSH"; sshd
#           runs inside the host's mount + cgroup + network namespaces on the netns's 127.0.0.1:22;
#           socat bridges root-netns 127.0.0.1:16522 (16523, ... for further netns hosts, in
#           VMCTL_RIG_HOSTS order) to it. So qemu+ssh://root@127.0.0.1:16522/system?keyfile=
#           .cache/rig/ssh/id_ed25519&known_hosts=.cache/rig/ssh/known_hosts (`env` prints it)
#           reaches this host's libvirtd, and ssh direct-tcpip forwards to 127.0.0.1:N land on
#           the netns's loopback (where its guests' user-mode port forwards listen).
#   mig2    the same in netns vmctl-rig-mig2 (ssh on 127.0.0.1:16523).
#   Netns hosts also get a private UTS namespace (hostname = NAME) and /etc/hosts, and share the
#   "rig network" (see ensure_rig_net): eth0 10.254.0.11 (mig1), 10.254.0.12 (mig2), ... bridged
#   in netns vmctl-rig-net; nothing of it in the root netns. Their libvirtds listen there too
#   (tcp 16509, tls 16514; each has its own server cert with SANs NAME and its address), e.g.
#   for live migration between them. `down` keeps the rig network, `clean` deletes it.
# Inside a host's namespace: scripts/test-rig.sh exec NAME CMD...   (e.g. exec host1 virsh list)
#
# Environment: VMCTL_RIG_DIR (default: <repo>/.cache/rig), VMCTL_TINY_DIR (default:
# <repo>/.cache/tiny; only reported by `env`), VMCTL_RIG_HOSTS (default
# "host1 mig1:vmctl-rig-mig1 mig2:vmctl-rig-mig2"; hosts as NAME or NAME:NETNS, see RIG_HOSTS below),
# VMCTL_RIG_KVM=hide|keep (default hide, see host_init), VMCTL_RIG_SSH_PORT (default 16522: the
# first netns host's root-netns ssh port).
# Guests on rig hosts must be <domain type='qemu'> (TCG); the hosts report no 'kvm' domain type.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
self="$here/$(basename "$0")"

RIG_DIR=${VMCTL_RIG_DIR:-$root/.cache/rig}
TINY_DIR=${VMCTL_TINY_DIR:-$root/.cache/tiny}
PKI=$RIG_DIR/pki                 # pkipath-style: cacert.pem clientcert.pem clientkey.pem (+ server*)
PKI_CA=$RIG_DIR/pki-ca           # the CA's private key (not part of any pkipath)
PKI_UNTRUSTED=$RIG_DIR/pki-untrusted   # a client cert/key from an unrelated CA (negative tests)
LISTEN_ADDR=127.0.0.1
TCP_PORT=16509
TLS_PORT=16514
CGROUP_PREFIX=vmctl-rig          # cgroups are <caller's placement>/vmctl-rig-NAME per hierarchy
SSH_DIR=$RIG_DIR/ssh             # rig ssh client: id_ed25519(.pub), authorized_keys, known_hosts
SSH_PORT_BASE=${VMCTL_RIG_SSH_PORT:-16522}  # root-netns port of the first netns host's sshd, +1 per next
SSHD_BIN=/usr/sbin/sshd          # absolute: sshd re-execs itself

trap 'echo "test-rig.sh: failed (exit $?) at line $LINENO: $BASH_COMMAND" >&2' ERR
log() { printf '[test-rig] %s\n' "$*" >&2; }
die() { printf 'test-rig.sh: error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------
# PKI (certtool)
# ---------------------------------------------------------------------------------------------
certtool_q() { certtool "$@" >/dev/null 2>&1 || { certtool "$@" >&2 || true; die "certtool $* failed"; }; }

make_ca() { # DIR_FOR_KEY CERT_OUT CN
  local keydir=$1 cert=$2 cn=$3 tmpl
  mkdir -p "$keydir"; chmod 700 "$keydir"
  tmpl=$(mktemp)
  printf 'cn = "%s"\norganization = "vmctl test rig"\nca\ncert_signing_key\nexpiration_days = 3650\n' "$cn" > "$tmpl"
  certtool_q --generate-privkey --key-type=rsa --bits=2048 --outfile "$keydir/cakey.pem"
  certtool_q --generate-self-signed --load-privkey "$keydir/cakey.pem" --template "$tmpl" --outfile "$cert"
  rm -f "$tmpl"
  chmod 600 "$keydir/cakey.pem"
}

make_cert() { # CA_CERT CA_KEY OUT_CERT OUT_KEY server|client CN [EXTRA_TEMPLATE_LINES]
  local cacert=$1 cakey=$2 cert=$3 key=$4 kind=$5 cn=$6 extra=${7:-} tmpl
  tmpl=$(mktemp)
  {
    printf 'cn = "%s"\norganization = "vmctl test rig"\nexpiration_days = 3650\n' "$cn"
    printf 'signing_key\nencryption_key\n'
    if [ "$kind" = server ]; then
      printf 'tls_www_server\ndns_name = "localhost"\nip_address = "127.0.0.1"\n'
      [ -z "$extra" ] || printf '%s\n' "$extra"
    else
      printf 'tls_www_client\n'
    fi
  } > "$tmpl"
  certtool_q --generate-privkey --key-type=rsa --bits=2048 --outfile "$key"
  chmod 600 "$key"
  certtool_q --generate-certificate --load-privkey "$key" --load-ca-certificate "$cacert" \
    --load-ca-privkey "$cakey" --template "$tmpl" --outfile "$cert"
  rm -f "$tmpl"
}

ensure_pki() {
  command -v certtool >/dev/null || die "certtool not found (apt-get install gnutls-bin)"
  local f ok=1
  for f in "$PKI/cacert.pem" "$PKI_CA/cakey.pem" "$PKI/servercert.pem" "$PKI/serverkey.pem" \
           "$PKI/clientcert.pem" "$PKI/clientkey.pem"; do
    [ -s "$f" ] || ok=0
  done
  if [ "$ok" = 0 ]; then
    log "creating throwaway PKI in $PKI"
    rm -rf "$PKI" "$PKI_CA" "$PKI_UNTRUSTED"
    mkdir -p "$PKI"
    make_ca "$PKI_CA" "$PKI/cacert.pem" "vmctl test rig CA"
    make_cert "$PKI/cacert.pem" "$PKI_CA/cakey.pem" "$PKI/servercert.pem" "$PKI/serverkey.pem" server 127.0.0.1
    make_cert "$PKI/cacert.pem" "$PKI_CA/cakey.pem" "$PKI/clientcert.pem" "$PKI/clientkey.pem" client vmctl-test-client
  fi
  ok=1
  for f in cacert.pem clientcert.pem clientkey.pem; do [ -s "$PKI_UNTRUSTED/$f" ] || ok=0; done
  if [ "$ok" = 0 ]; then
    # a client cert from an unrelated CA, for "server rejects the client" tests. Its cacert.pem
    # holds both CAs: the client still trusts the rig's server cert (and libvirt's client-side
    # self-check of its own cert passes), so the failure is the server refusing the client.
    rm -rf "$PKI_UNTRUSTED"; mkdir -p "$PKI_UNTRUSTED"
    make_ca "$PKI_UNTRUSTED/ca" "$PKI_UNTRUSTED/ca/cacert.pem" "vmctl untrusted CA"
    make_cert "$PKI_UNTRUSTED/ca/cacert.pem" "$PKI_UNTRUSTED/ca/cakey.pem" \
      "$PKI_UNTRUSTED/clientcert.pem" "$PKI_UNTRUSTED/clientkey.pem" client vmctl-untrusted-client
    cat "$PKI/cacert.pem" "$PKI_UNTRUSTED/ca/cacert.pem" > "$PKI_UNTRUSTED/cacert.pem"
  fi
}

# host_server_cert NAME ADDR: a netns host's own server certificate (SANs localhost, 127.0.0.1,
# NAME, ADDR) in hosts/NAME/pki/, signed by the rig CA; regenerated when its SANs or the CA change
# (stamp file hosts/NAME/pki/stamp), never regenerates the CA. host1 uses $PKI/servercert.pem.
host_server_cert() {
  local name=$1 addr=$2 pd stamp
  pd="$(host_dir "$name")/pki"
  stamp="sans=localhost,127.0.0.1,$name,$addr ca=$(sha256sum < "$PKI/cacert.pem" | cut -c1-16)"
  if [ -s "$pd/servercert.pem" ] && [ -s "$pd/serverkey.pem" ] && [ "$(cat "$pd/stamp" 2>/dev/null)" = "$stamp" ]; then
    return 0
  fi
  log "rig host $name: creating its TLS server certificate (SANs localhost, 127.0.0.1, $name, $addr)"
  mkdir -p "$pd"; rm -f "$pd/stamp"
  make_cert "$PKI/cacert.pem" "$PKI_CA/cakey.pem" "$pd/servercert.pem" "$pd/serverkey.pem" server "$name" \
    "$(printf 'dns_name = "%s"\nip_address = "%s"' "$name" "$addr")"
  echo "$stamp" > "$pd/stamp"
}

# ---------------------------------------------------------------------------------------------
# cgroups: each host gets <placement>/vmctl-rig-NAME in every hierarchy and its own cgroup
# namespace rooted there. libvirt (no systemd) puts guests in /machine/qemu-ID-NAME.libvirt-qemu,
# an absolute path in each hierarchy; both daemons number domains from 1, so without this a rig
# guest and a main-libvirtd guest with the same name would share (and tear down) one cgroup.
# ---------------------------------------------------------------------------------------------

# Lines "MOUNTPOINT<TAB>FSTYPE<TAB>MOUNTOPTS<TAB>CGROUPDIR" for the caller's hierarchies.
cgroup_plan() { # NAME
  local name=$1
  awk -v leaf="$CGROUP_PREFIX-$name" '
    FNR == NR {                      # /proc/self/cgroup: ID:CONTROLLERS:PATH
      i = index($0, ":"); rest = substr($0, i + 1); j = index(rest, ":")
      ctl[++n] = substr(rest, 1, j - 1); path[n] = substr(rest, j + 1); next
    }
    {                                 # /proc/self/mountinfo
      sep = 0; for (k = 7; k <= NF; k++) if ($k == "-") { sep = k; break }
      if (!sep) next
      fstype = $(sep + 1); sopts = $(sep + 3)
      if (fstype != "cgroup" && fstype != "cgroup2") next
      if (seen[$5]++) next
      opts = ""; m = split(sopts, o, ",")
      for (k = 1; k <= m; k++) if (o[k] != "rw" && o[k] != "ro") opts = opts (opts == "" ? "" : ",") o[k]
      for (c = 1; c <= n; c++) {
        if (done[c]) continue
        if (fstype == "cgroup2") { if (ctl[c] != "") continue }
        else {
          if (ctl[c] == "") continue
          q = split(ctl[c], want, ","); okc = 1
          for (w = 1; w <= q; w++) { f = 0; for (k = 1; k <= m; k++) if (o[k] == want[w]) f = 1; if (!f) okc = 0 }
          if (!okc) continue
        }
        done[c] = 1
        mroot = $4; p = path[c]
        if (mroot != "/") { if (index(p, mroot) != 1) next; p = substr(p, length(mroot) + 1) }
        sub(/\/$/, "", p)
        printf "%s\t%s\t%s\t%s%s/%s\n", $5, fstype, (opts == "" ? "-" : opts), $5, p, leaf
        break
      }
    }' /proc/self/cgroup /proc/self/mountinfo
}

cgroup_prepare() { # NAME -> writes $hostdir/cgroups
  local name=$1 d; d=$(host_dir "$name")
  cgroup_plan "$name" > "$d/cgroups.new"
  [ -s "$d/cgroups.new" ] || die "no cgroup hierarchies found in /proc/self/mountinfo"
  local mp fstype opts dir
  while IFS=$'\t' read -r mp fstype opts dir; do
    mkdir -p "$dir"
    if [ -f "$dir/cpuset.cpus" ] && [ -z "$(cat "$dir/cpuset.cpus")" ]; then
      cat "$(dirname "$dir")/cpuset.cpus" > "$dir/cpuset.cpus"
      cat "$(dirname "$dir")/cpuset.mems" > "$dir/cpuset.mems"
    fi
  done < "$d/cgroups.new"
  mv "$d/cgroups.new" "$d/cgroups"
}

cgroup_enter() { # NAME PID
  local d; d=$(host_dir "$1")
  local mp fstype opts dir
  while IFS=$'\t' read -r mp fstype opts dir; do
    echo "$2" > "$dir/cgroup.procs" || die "cannot move pid $2 into $dir"
  done < "$d/cgroups"
}

cgroup_pids() { # NAME -> all pids in the host's cgroup trees
  local d; d=$(host_dir "$1")
  [ -f "$d/cgroups" ] || return 0
  local mp fstype opts dir
  while IFS=$'\t' read -r mp fstype opts dir; do
    if [ -d "$dir" ]; then find "$dir" -name cgroup.procs -exec cat {} + 2>/dev/null || true; fi
  done < "$d/cgroups" | sort -un
}

cgroup_remove() { # NAME: rmdir the (empty) trees, deepest first
  local d; d=$(host_dir "$1")
  [ -f "$d/cgroups" ] || return 0
  local mp fstype opts dir
  while IFS=$'\t' read -r mp fstype opts dir; do
    if [ -d "$dir" ]; then find "$dir" -depth -type d -exec rmdir {} \; 2>/dev/null || true; fi
  done < "$d/cgroups"
}

# ---------------------------------------------------------------------------------------------
# libvirt hosts
# ---------------------------------------------------------------------------------------------
host_dir() { printf '%s/hosts/%s' "$RIG_DIR" "$1"; }
host_sock() { printf '%s/run/libvirt/libvirt-sock' "$(host_dir "$1")"; }
host_unix_uri() { printf 'qemu+unix:///system?socket=%s' "$(host_sock "$1")"; }
read_pid() { local p; p=$(cat "$1" 2>/dev/null) || true; printf '%s' "$p"; }
# pid_alive PIDFILE: the pid in it is running *and* is the daemon the file is named after
# (a stale pidfile after a reboot may name an unrelated process; never signal that one)
pid_alive() {
  local p comm; p=$(read_pid "$1")
  [ -n "$p" ] && kill -0 "$p" 2>/dev/null || return 1
  comm=$(cat "/proc/$p/comm" 2>/dev/null) || return 1
  [[ $(cat "/proc/$p/stat" 2>/dev/null) != *") Z "* ]] || return 1   # a zombie is dead
  [ "$comm" = "$(basename "$1" .pid)" ]
}
host_running() { local d; d=$(host_dir "$1"); pid_alive "$d/libvirtd.pid" && pid_alive "$d/virtlogd.pid"; }
host_ready() { host_running "$1" && virsh -q -c "$(host_unix_uri "$1")" version >/dev/null 2>&1; }

# write the host's private /etc/libvirt (regenerated on every start; host_uuid kept)
host_write_config() { # NAME LISTEN_ADDR
  local name=$1 listen_addr=$2 d; d=$(host_dir "$name")
  mkdir -p "$d/etc/qemu" "$d/run" "$d/cache" "$d/log/qemu" "$d/lib" "$d/vmctl/images"
  [ -s "$d/host_uuid" ] || cat /proc/sys/kernel/random/uuid > "$d/host_uuid"
  local addr certdir=$PKI; addr=$(host_addr "$name")
  if [ -n "$addr" ]; then   # a netns host on the rig network: own cert, own /etc/hosts
    host_server_cert "$name" "$addr"
    certdir=$d/pki
    rig_etc_hosts > "$d/etc-hosts"
  fi
  # the qemu driver expects these owned by its user, like the Debian package creates them
  local qowner; qowner=$(stat -c %U:%G /var/lib/libvirt/qemu 2>/dev/null || echo root:root)
  if [ ! -d "$d/lib/qemu" ]; then
    mkdir -p "$d/lib/qemu" "$d/lib/images" "$d/lib/boot"
    chown "$qowner" "$d/lib/qemu"; chmod 750 "$d/lib/qemu"
  fi
  {
    echo "# generated by scripts/test-rig.sh for rig host $name"
    echo "host_uuid = \"$(cat "$d/host_uuid")\""
    echo "listen_tcp = 1"
    echo "listen_tls = 1"
    echo "listen_addr = \"$listen_addr\""
    echo "tcp_port = \"$TCP_PORT\""
    echo "tls_port = \"$TLS_PORT\""
    echo "auth_tcp = \"none\""
    echo "auth_tls = \"none\""
    echo "ca_file = \"$PKI/cacert.pem\""
    echo "cert_file = \"$certdir/servercert.pem\""
    echo "key_file = \"$certdir/serverkey.pem\""
    echo "tls_no_verify_certificate = 0"
    echo "log_outputs = \"3:file:/var/log/libvirt/libvirtd.log\""
  } > "$d/etc/libvirtd.conf"
  {
    echo "# generated by scripts/test-rig.sh for rig host $name"
    # stdio goes through this host's own virtlogd (started in the same namespace)
    echo 'stdio_handler = "logd"'
    # libvirt 9.0 cannot carry a file bind mount under /dev (our hidden /dev/kvm, see host_init)
    # into a guest's private /dev ("Unable to move ... mount to /dev/kvm"); guests share ours
    if [ "${VMCTL_RIG_KVM:-hide}" = hide ]; then echo 'namespaces = [ ]'; fi
    if [ -n "$addr" ]; then
      # netns hosts (migration tests): post-copy needs userfaultfd in the destination's QEMU, which
      # the kernel grants unprivileged processes only with vm.unprivileged_userfaultfd=1 (a global
      # sysctl the rig must not change; QEMU 7.2 does not use /dev/userfaultfd). So their QEMU runs
      # as root and keeps its capabilities (CAP_SYS_PTRACE allows userfaultfd).
      echo 'user = "root"'
      echo 'group = "root"'
      echo 'clear_emulator_capabilities = 0'
    fi
  } > "$d/etc/qemu.conf"
  echo 'log_outputs = "3:file:/var/log/libvirt/virtlogd.log"' > "$d/etc/virtlogd.conf"
}

# start_libvirt_host NAME [NETNS]
#   NAME   rig host name; state in .cache/rig/hosts/NAME
#   NETNS  optional network namespace (ip netns name, created by ensure_netns) to run it in.
#          Without it the host stays in the root netns and listens on 127.0.0.1:16509 (tcp) and
#          127.0.0.1:16514 (tls). In a netns it listens on all of that netns's addresses (only its
#          own loopback + whatever veths the rig adds), same ports; from the root netns reach it
#          through its unix socket (qemu+unix:///system?socket=.cache/rig/hosts/NAME/run/...), or
#          over ssh: host_init also starts the host's sshd (see "ssh into netns hosts" below).
start_libvirt_host() {
  local name=$1 netns=${2:-} d listen_addr=0.0.0.0
  d=$(host_dir "$name")
  if host_ready "$name"; then return 0; fi
  if host_running "$name"; then
    wait_host_ready "$name" && return 0
    die "rig host $name: daemons running but not answering; run '$self down' first"
  fi
  stop_libvirt_host "$name" quiet   # leftovers of a half-dead host (e.g. only virtlogd alive)
  # the host's /run/libvirt is a plain directory, not a tmpfs: what a dead host left there (state
  # XML of guests that no longer run, dnsmasq/virtlogd pids and sockets from before a reboot) must
  # not greet the new daemons. Nothing of the host runs any more (stop_libvirt_host), so empty it
  # the way a boot empties /run.
  rm -rf --one-file-system "$d/run"
  if [ -z "$netns" ]; then
    listen_addr=$LISTEN_ADDR
    local p
    for p in "$TCP_PORT" "$TLS_PORT"; do
      if ss -Hltn "sport = :$p" 2>/dev/null | grep -q .; then
        die "port $p is already in use (not by a rig host); cannot start rig host $name"
      fi
    done
  fi
  host_write_config "$name" "$listen_addr"
  [ -z "$netns" ] || host_ssh_prepare "$name"
  cgroup_prepare "$name"
  rm -f "$d/libvirtd.pid" "$d/virtlogd.pid" "$d/run/libvirt/libvirt-sock"
  log "starting rig host $name${netns:+ in netns $netns}"
  (
    cgroup_enter "$name" "$BASHPID"
    if [ -n "$netns" ]; then
      exec setsid ip netns exec "$netns" unshare --mount --cgroup --uts --propagation private -- "$self" __host-init "$name" "$netns"
    else
      exec setsid unshare --mount --cgroup --propagation private -- "$self" __host-init "$name"
    fi
  ) </dev/null >>"$d/log/launch.log" 2>&1 9>&- || die "rig host $name failed to start; see $d/log/launch.log"
  wait_host_ready "$name" || die "rig host $name did not come up; see $d/log/libvirtd.log and $d/log/launch.log"
}

wait_host_ready() { # NAME
  local i
  for i in $(seq 1 150); do
    host_ready "$1" && return 0
    host_running "$1" || { [ "$i" -gt 10 ] && return 1; }
    sleep 0.2
  done
  return 1
}

# Runs inside the new mount + cgroup namespace (and netns, if any); starts the daemons.
host_init() { # NAME [NETNS]
  local name=$1 netns=${2:-} d; d=$(host_dir "$name")
  echo "--- $(date -Is) host_init $name (pid $$)"
  # cgroupfs mounts that show this cgroup namespace (ip netns exec also remounts /sys)
  mount -t tmpfs -o mode=755 cgroup-root /sys/fs/cgroup
  local mp fstype opts dir
  while IFS=$'\t' read -r mp fstype opts dir; do
    mkdir -p "$mp"
    if [ "$opts" = - ]; then mount -t "$fstype" "$fstype" "$mp"
    else mount -t "$fstype" -o "$opts" "$fstype" "$mp"; fi
  done < "$d/cgroups"
  mkdir -p "$d/run/libvirt"
  local pair
  # /var/lib/vmctl too: vmctl's pool lives there, and each host has its own
  for pair in etc:/etc/libvirt run/libvirt:/run/libvirt lib:/var/lib/libvirt \
              cache:/var/cache/libvirt log:/var/log/libvirt vmctl:/var/lib/vmctl; do
    mkdir -p "${pair#*:}"
    mount --bind "$d/${pair%%:*}" "${pair#*:}"
  done
  # a netns host's /etc/hosts names the rig network's hosts (mig1, mig2, ... -> 10.254.0.1x)
  # and its own UTS namespace has hostname NAME (resolvable there; the machine's is not)
  if [ -n "$netns" ] && [ -s "$d/etc-hosts" ]; then mount --bind "$d/etc-hosts" /etc/hosts; fi
  [ -z "$netns" ] || hostname "$name"
  # KVM is not usable on this machine, yet /dev/kvm exists and qemu (probing as root) can open
  # it: libvirt then caches "KVM enabled" caps but judges /dev/kvm unusable for the qemu user, so
  # it re-probes qemu (~4 s) on every caps lookup (domain start, virConnectGetVersion, ...).
  # Hide /dev/kvm in this namespace: probing and the usability check then agree on "TCG only".
  if [ "${VMCTL_RIG_KVM:-hide}" = hide ] && [ -e /dev/kvm ]; then
    : > "$d/run/no-kvm"; chmod 000 "$d/run/no-kvm"
    mount --bind "$d/run/no-kvm" /dev/kvm
  fi
  virtlogd -d -p "$d/virtlogd.pid"
  libvirtd -d --listen -p "$d/libvirtd.pid"
  echo "started virtlogd $(cat "$d/virtlogd.pid" 2>/dev/null) libvirtd $(cat "$d/libvirtd.pid" 2>/dev/null)"
  # a netns host's sshd: its sessions inherit these mount, cgroup and network namespaces
  # (not fatal here: ensure_host_ssh retries once and then fails, pointing at sshd.log)
  [ -z "$netns" ] || host_sshd_exec "$name" || echo "sshd for rig host $name failed to start"
}

stop_libvirt_host() { # NAME [quiet]
  local name=$1 quiet=${2:-} d dom pids i
  d=$(host_dir "$name")
  [ -d "$d" ] || return 0
  if host_ready "$name"; then
    for dom in $(virsh -q -c "$(host_unix_uri "$name")" list --name 2>/dev/null); do
      [ -n "$quiet" ] || log "host $name: destroying guest $dom"
      virsh -q -c "$(host_unix_uri "$name")" destroy "$dom" >/dev/null 2>&1 || true
    done
  fi
  local f
  local pid
  for f in libvirtd virtlogd; do
    pid=$(read_pid "$d/$f.pid")
    if pid_alive "$d/$f.pid"; then
      [ -n "$quiet" ] || log "host $name: stopping $f ($pid)"
      kill "$pid" 2>/dev/null || true
      for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
  done
  # anything left in the host's cgroups was started by it (qemu, dnsmasq, ...)
  pids=$(cgroup_pids "$name" | tr '\n' ' ')
  if [ -n "${pids// /}" ]; then
    [ -n "$quiet" ] || log "host $name: terminating leftover processes: $pids"
    kill $pids 2>/dev/null || true
    for i in $(seq 1 30); do [ -z "$(cgroup_pids "$name")" ] && break; sleep 0.1; done
    pids=$(cgroup_pids "$name" | tr '\n' ' ')
    [ -n "${pids// /}" ] && kill -9 $pids 2>/dev/null || true
    sleep 0.2
  fi
  rm -f "$d/libvirtd.pid" "$d/virtlogd.pid"
  cgroup_remove "$name"
}

# restart_libvirtd NAME: only libvirtd, back in the namespaces virtlogd still holds (same mount,
# cgroup, network and UTS namespaces, same cgroups); QEMU processes are not touched.
restart_libvirtd() {
  local name=$1 d pid vl i
  d=$(host_dir "$name")
  host_ready "$name" || die "rig host $name is not running; run '$self up'"
  pid=$(read_pid "$d/libvirtd.pid"); vl=$(read_pid "$d/virtlogd.pid")
  log "host $name: restarting libvirtd ($pid); its guests run on"
  kill "$pid" 2>/dev/null || true
  for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && die "libvirtd ($pid) of rig host $name did not stop within 10 s"
  rm -f "$d/libvirtd.pid"
  (
    cgroup_enter "$name" "$BASHPID"
    exec nsenter -t "$vl" -m -C -n -u -- libvirtd -d --listen -p "$d/libvirtd.pid"
  ) </dev/null >>"$d/log/launch.log" 2>&1 9>&- || die "libvirtd of rig host $name failed to start; see $d/log/launch.log"
  wait_host_ready "$name" || die "libvirtd of rig host $name did not come back; see $d/log/libvirtd.log"
}

# restart_host NAME: down and up again, that host only (its guests are gone, as after a reboot)
restart_host() {
  local h found=
  for h in "${RIG_HOSTS[@]}"; do
    [ "$(host_name "$h")" = "$1" ] || continue
    found=1
    stop_host_ssh "$1"
    stop_libvirt_host "$1"
    start_libvirt_host "$1" "$(host_netns "$h")"
    [ -z "$(host_netns "$h")" ] || { ensure_host_ssh "$1" "$(host_netns "$h")"; write_known_hosts; }
  done
  [ -n "$found" ] || die "no rig host $1 (hosts: ${RIG_HOSTS[*]})"
}

# ---------------------------------------------------------------------------------------------
# ssh into netns hosts: a "remote host over SSH" for qemu+ssh:// tests.
#   $SSH_DIR/id_ed25519         rig client key (made once), authorized for root via
#   $SSH_DIR/authorized_keys    (rig-owned: the rig shares /root with the machine, never touch
#                               /root/.ssh)
#   $SSH_DIR/known_hosts        "[127.0.0.1]:PORT <host key>" per netns host (plain)
#   hosts/NAME/ssh/             ssh_host_ed25519_key (made once), sshd_config, sshd.pid,
#                               socat.pid + forward-port (the root-netns forwarder), sshd.log
# sshd runs inside the host's namespaces (started by host_init, or by ensure_host_ssh through
# nsenter when only sshd died) on the netns's 127.0.0.1:22. A socat in the root netns listens on
# 127.0.0.1:PORT and, per connection, runs `nsenter --net=/run/netns/NETNS socat STDIO
# TCP:127.0.0.1:22`: traffic stays on loopbacks, the two ends in different network namespaces.
# ---------------------------------------------------------------------------------------------
host_ssh_dir() { printf '%s/ssh' "$(host_dir "$1")"; }

# host_ssh_port NAME: SSH_PORT_BASE + index of NAME among the netns hosts of RIG_HOSTS; empty if
# NAME is not a netns host there
host_ssh_port() {
  local h i=0
  for h in "${RIG_HOSTS[@]}"; do
    [ -n "$(host_netns "$h")" ] || continue
    if [ "$(host_name "$h")" = "$1" ]; then printf '%s' $((SSH_PORT_BASE + i)); return 0; fi
    i=$((i + 1))
  done
}

host_ssh_uri() { # NAME
  printf 'qemu+ssh://root@%s:%s/system?keyfile=%s&known_hosts=%s' \
    "$LISTEN_ADDR" "$(host_ssh_port "$1")" "$SSH_DIR/id_ed25519" "$SSH_DIR/known_hosts"
}

ensure_ssh_client() {
  mkdir -p "$SSH_DIR"; chmod 700 "$SSH_DIR"
  if [ ! -s "$SSH_DIR/id_ed25519" ] || [ ! -s "$SSH_DIR/id_ed25519.pub" ]; then
    log "creating rig ssh client key $SSH_DIR/id_ed25519"
    rm -f "$SSH_DIR/id_ed25519" "$SSH_DIR/id_ed25519.pub"
    ssh-keygen -q -t ed25519 -N '' -C vmctl-rig-client -f "$SSH_DIR/id_ed25519"
  fi
  if ! cmp -s "$SSH_DIR/id_ed25519.pub" "$SSH_DIR/authorized_keys" 2>/dev/null; then
    install -m 600 "$SSH_DIR/id_ed25519.pub" "$SSH_DIR/authorized_keys"
  fi
}

# host_ssh_prepare NAME: host key (once) and sshd_config (regenerated), from the root namespace
host_ssh_prepare() {
  local name=$1 sd; sd=$(host_ssh_dir "$name")
  ensure_ssh_client
  mkdir -p "$sd"; chmod 700 "$sd"
  if [ ! -s "$sd/ssh_host_ed25519_key" ] || [ ! -s "$sd/ssh_host_ed25519_key.pub" ]; then
    rm -f "$sd/ssh_host_ed25519_key" "$sd/ssh_host_ed25519_key.pub"
    ssh-keygen -q -t ed25519 -N '' -C "vmctl-rig-$name" -f "$sd/ssh_host_ed25519_key"
  fi
  {
    echo "# generated by scripts/test-rig.sh for rig host $name (runs inside its network namespace)"
    echo "Port 22"
    echo "ListenAddress 127.0.0.1"
    echo "HostKey $sd/ssh_host_ed25519_key"
    echo "PidFile $sd/sshd.pid"
    echo "AuthorizedKeysFile $SSH_DIR/authorized_keys"
    echo "PermitRootLogin prohibit-password"
    echo "PubkeyAuthentication yes"
    echo "PasswordAuthentication no"
    echo "KbdInteractiveAuthentication no"
    echo "UsePAM no"
    echo "StrictModes no"
    echo "AllowStreamLocalForwarding yes"
    echo "AllowTcpForwarding yes"
    echo "X11Forwarding no"
    echo "PrintMotd no"
    echo "UseDNS no"
    echo "LogLevel VERBOSE"
  } > "$sd/sshd_config"
  # `sshd -t` checks the privilege separation directory too: on a fresh machine (or after a
  # reboot: /run is a tmpfs) nothing has made it yet
  ensure_privsep_dir
  "$SSHD_BIN" -t -f "$sd/sshd_config" || die "rig host $name: invalid $sd/sshd_config"
}

# sshd's privilege separation directory (openssh's systemd unit / init script makes it; without
# either nobody does): root-owned, not group/world-writable, or sshd refuses to start
ensure_privsep_dir() {
  mkdir -p /run/sshd
  chown root:root /run/sshd; chmod 755 /run/sshd
}

# host_sshd_exec NAME: start the host's sshd (daemonizes); must run inside the host's namespaces
host_sshd_exec() {
  local sd; sd=$(host_ssh_dir "$1")
  ensure_privsep_dir
  rm -f "$sd/sshd.pid"
  "$SSHD_BIN" -f "$sd/sshd_config" -E "$sd/sshd.log" || return 1
  echo "started sshd for rig host $1"
}

# ssh_banner PORT [NETNS]: succeed once 127.0.0.1:PORT (of NETNS, if given) sends an SSH banner
ssh_banner() {
  local port=$1 ns=${2:-} pre=()
  [ -z "$ns" ] || pre=(nsenter "--net=/run/netns/$ns")
  "${pre[@]}" timeout 5 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" && IFS= read -r -t 4 l <&3 && [[ $l == SSH-* ]]' _ "$port" \
    </dev/null >/dev/null 2>&1 9>&-
}

wait_ssh_banner() { # PORT [NETNS]
  local i
  for i in $(seq 1 50); do ssh_banner "$@" && return 0; sleep 0.1; done
  return 1
}

sshd_running() { pid_alive "$(host_ssh_dir "$1")/sshd.pid"; }
forward_running() { # NAME [PORT]: forwarder alive (and listening on PORT, if given)
  local sd; sd=$(host_ssh_dir "$1")
  pid_alive "$sd/socat.pid" || return 1
  [ -z "${2:-}" ] || [ "$(cat "$sd/forward-port" 2>/dev/null)" = "$2" ]
}

# ensure_host_ssh NAME NETNS: sshd in the (running) host's namespaces, the root-netns forwarder,
# the known_hosts entry; quick when all is there
ensure_host_ssh() {
  local name=$1 ns=$2 d sd port pid
  d=$(host_dir "$name"); sd=$(host_ssh_dir "$name"); port=$(host_ssh_port "$name")
  [ -n "$port" ] || die "rig host $name: no ssh port (not a netns host in VMCTL_RIG_HOSTS)"
  if ! sshd_running "$name" || ! ssh_banner 22 "$ns"; then
    # the host's daemons are up (start_libvirt_host) but its sshd is not: start it in their namespaces
    host_ssh_prepare "$name"
    if sshd_running "$name"; then kill "$(read_pid "$sd/sshd.pid")" 2>/dev/null || true; sleep 0.2; fi
    pid=$(read_pid "$d/libvirtd.pid")
    log "starting sshd of rig host $name in its namespaces"
    (
      cgroup_enter "$name" "$BASHPID"
      exec nsenter -t "$pid" -m -C -n -u -- "$self" __host-sshd "$name"
    ) </dev/null >>"$d/log/launch.log" 2>&1 9>&- || die "rig host $name: sshd failed to start; see $d/log/launch.log"
  fi
  wait_ssh_banner 22 "$ns" || die "rig host $name: sshd does not answer on 127.0.0.1:22 in netns $ns; see $sd/sshd.log"
  if ! forward_running "$name" "$port" || ! ssh_banner "$port"; then
    stop_ssh_forward "$name" quiet
    if ss -Hltn "sport = :$port" 2>/dev/null | grep -q .; then
      die "port $port is already in use (not by this rig host's forwarder); cannot forward to rig host $name's sshd"
    fi
    log "forwarding $LISTEN_ADDR:$port -> netns $ns 127.0.0.1:22 (rig host $name's sshd)"
    # setsid: its own process group, so `down` ends the per-connection children with it
    setsid socat "TCP-LISTEN:$port,bind=$LISTEN_ADDR,reuseaddr,fork" \
      "EXEC:nsenter --net=/run/netns/$ns socat STDIO TCP\:127.0.0.1\:22" \
      </dev/null >>"$sd/socat.log" 2>&1 9>&- &
    echo $! > "$sd/socat.pid"
    echo "$port" > "$sd/forward-port"
    wait_ssh_banner "$port" || die "rig host $name: no ssh banner on $LISTEN_ADDR:$port through the forwarder; see $sd/socat.log"
  fi
}

# known_hosts for every netns host of RIG_HOSTS (rewritten atomically when it changes)
write_known_hosts() {
  local h name port sd tmp
  tmp=$(mktemp "$SSH_DIR/.known_hosts.XXXXXX")
  for h in "${RIG_HOSTS[@]}"; do
    [ -n "$(host_netns "$h")" ] || continue
    name=$(host_name "$h"); port=$(host_ssh_port "$name"); sd=$(host_ssh_dir "$name")
    awk -v n="[$LISTEN_ADDR]:$port" '{ print n, $1, $2 }' "$sd/ssh_host_ed25519_key.pub" >> "$tmp"
  done
  chmod 644 "$tmp"
  if cmp -s "$tmp" "$SSH_DIR/known_hosts"; then rm -f "$tmp"; else mv -f "$tmp" "$SSH_DIR/known_hosts"; fi
}

stop_ssh_forward() { # NAME [quiet]
  local sd pid i; sd=$(host_ssh_dir "$1")
  if pid_alive "$sd/socat.pid"; then
    pid=$(read_pid "$sd/socat.pid")
    [ -n "${2:-}" ] || log "host $1: stopping ssh forwarder ($pid)"
    kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true
    for i in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$sd/socat.pid" "$sd/forward-port"
}

stop_host_ssh() { # NAME [quiet]
  local sd pid i; sd=$(host_ssh_dir "$1")
  [ -d "$sd" ] || return 0
  stop_ssh_forward "$@"
  if pid_alive "$sd/sshd.pid"; then
    pid=$(read_pid "$sd/sshd.pid")
    [ -n "${2:-}" ] || log "host $1: stopping sshd ($pid)"
    kill "$pid" 2>/dev/null || true
    for i in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$sd/sshd.pid"   # its sessions live in the host's cgroups: stop_libvirt_host ends them
}

# ---------------------------------------------------------------------------------------------
# Rig hosts: NAME or NAME:NETNS (see start_libvirt_host). VMCTL_RIG_HOSTS overrides, e.g.
#   VMCTL_RIG_HOSTS="host1 mig1:vmctl-rig-mig1" scripts/test-rig.sh up
# Netns hosts are the live-migration hosts: each in its own netns, connected by the rig network
# (ensure_rig_net) so migration traffic never leaves namespaces the rig created. Each netns host
# is also reachable over ssh (see "ssh into netns hosts"), on 16522, 16523, ... in this order.
read -r -a RIG_HOSTS <<< "${VMCTL_RIG_HOSTS:-host1 mig1:vmctl-rig-mig1 mig2:vmctl-rig-mig2}"
host_name() { printf '%s' "${1%%:*}"; }
host_netns() { case "$1" in *:*) printf '%s' "${1#*:}" ;; esac; }

# ---------------------------------------------------------------------------------------------
# The rig network: connects all netns hosts, nothing in the root netns. Network namespace
# $RIG_NET_NS holds bridge $RIG_NET_BRIDGE; each netns host (i = 1, 2, ... among the netns hosts
# of RIG_HOSTS) has a veth pair: `eth0` in its netns with $RIG_NET_PREFIX.(10+i)/24, the peer
# `vr-NAME` in $RIG_NET_NS enslaved to the bridge. mig1 = 10.254.0.11, mig2 = 10.254.0.12. Each
# netns host's libvirtd listens there too (0.0.0.0:16509 tcp, :16514 tls; its server cert has the
# address and NAME as SANs) and its /etc/hosts maps the host names to these addresses.
# ---------------------------------------------------------------------------------------------
RIG_NET_NS=vmctl-rig-net
RIG_NET_BRIDGE=rigbr0
RIG_NET_PREFIX=10.254.0

host_addr() { # NAME: its rig-network address; empty unless NAME is a netns host of RIG_HOSTS
  local h i=0
  for h in "${RIG_HOSTS[@]}"; do
    [ -n "$(host_netns "$h")" ] || continue
    i=$((i + 1))
    if [ "$(host_name "$h")" = "$1" ]; then printf '%s.%s' "$RIG_NET_PREFIX" $((10 + i)); return 0; fi
  done
}

rig_etc_hosts() {
  local h
  printf '# generated by scripts/test-rig.sh: a rig netns host'"'"'s /etc/hosts\n'
  printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n'
  for h in "${RIG_HOSTS[@]}"; do
    [ -z "$(host_netns "$h")" ] || printf '%s\t%s\n' "$(host_addr "$(host_name "$h")")" "$(host_name "$h")"
  done
}

ns_has_link() { ip -n "$1" link show "$2" >/dev/null 2>&1; } # NETNS DEV

# ensure_rig_net: the bridge netns and one veth pair per netns host (their netns must exist);
# skips what exists
ensure_rig_net() {
  local h name ns peer addr
  ensure_netns "$RIG_NET_NS"
  if ! ns_has_link "$RIG_NET_NS" "$RIG_NET_BRIDGE"; then
    log "creating rig network bridge $RIG_NET_BRIDGE in netns $RIG_NET_NS"
    ip -n "$RIG_NET_NS" link add "$RIG_NET_BRIDGE" type bridge
  fi
  ip -n "$RIG_NET_NS" link set "$RIG_NET_BRIDGE" up
  for h in "${RIG_HOSTS[@]}"; do
    ns=$(host_netns "$h"); [ -n "$ns" ] || continue
    name=$(host_name "$h"); addr=$(host_addr "$name"); peer="vr-$name"; peer=${peer:0:15}
    if ! ns_has_link "$ns" eth0 || ! ns_has_link "$RIG_NET_NS" "$peer"; then
      ip -n "$ns" link del eth0 2>/dev/null || true
      ip -n "$RIG_NET_NS" link del "$peer" 2>/dev/null || true
      log "rig network: $name eth0 $addr/24 (netns $ns) <-> $peer on $RIG_NET_BRIDGE (netns $RIG_NET_NS)"
      ip -n "$RIG_NET_NS" link add "$peer" type veth peer name eth0 netns "$ns"
    fi
    ip -n "$RIG_NET_NS" link set "$peer" master "$RIG_NET_BRIDGE" up
    ip -n "$ns" addr replace "$addr/24" dev eth0
    ip -n "$ns" link set eth0 up
  done
}

# ensure_netns NAME: a network namespace with only loopback up; recorded for `clean`.
# /run/netns is made by `ip netns add` itself (fresh machine, or /run emptied by a reboot).
ensure_netns() {
  local ns=$1
  # a name listed in /run/netns but not a usable namespace any more (e.g. /run/netns/NAME left
  # as a plain file, not a nsfs bind mount): remove it, then make it anew
  if [ -e "/run/netns/$ns" ] && ! ip -n "$ns" link show lo >/dev/null 2>&1; then
    log "network namespace $ns is stale (/run/netns/$ns is no namespace); recreating it"
    ip netns del "$ns" 2>/dev/null || rm -f "/run/netns/$ns"
  fi
  if ! ip netns list | awk '{print $1}' | grep -qx "$ns"; then
    log "creating network namespace $ns"
    ip netns add "$ns"
    grep -qx "$ns" "$RIG_DIR/netns.created" 2>/dev/null || echo "$ns" >> "$RIG_DIR/netns.created"
  fi
  ip -n "$ns" link set lo up
}

rig_up() {
  [ "$(id -u)" = 0 ] || die "must run as root (starts libvirtd, creates namespaces and cgroups)"
  local t
  for t in libvirtd virtlogd virsh unshare nsenter ss ip flock; do
    command -v "$t" >/dev/null || die "$t not found (run scripts/setup-host.sh)"
  done
  local h ns any_netns=
  for h in "${RIG_HOSTS[@]}"; do [ -z "$(host_netns "$h")" ] || any_netns=1; done
  if [ -n "$any_netns" ]; then   # netns hosts are reachable over ssh
    for t in "$SSHD_BIN" ssh-keygen socat timeout; do
      command -v "$t" >/dev/null || die "$t not found (run scripts/setup-host.sh)"
    done
  fi
  ensure_pki
  [ -z "$any_netns" ] || ensure_ssh_client
  # network namespaces and the rig network first: a host's libvirtd should see its eth0
  for h in "${RIG_HOSTS[@]}"; do
    ns=$(host_netns "$h")
    [ -z "$ns" ] || ensure_netns "$ns"
  done
  [ -z "$any_netns" ] || ensure_rig_net
  for h in "${RIG_HOSTS[@]}"; do
    ns=$(host_netns "$h")
    start_libvirt_host "$(host_name "$h")" "$ns"
    [ -z "$ns" ] || ensure_host_ssh "$(host_name "$h")" "$ns"
  done
  [ -z "$any_netns" ] || write_known_hosts
}

# down stops every host that has state under .cache/rig/hosts, whatever VMCTL_RIG_HOSTS says
rig_down() {
  local d
  for d in "$RIG_DIR"/hosts/*/; do
    [ -d "$d" ] || continue
    stop_host_ssh "$(basename "$d")"
    stop_libvirt_host "$(basename "$d")"
  done
  return 0
}

rig_clean() {
  rig_down
  local ns
  if [ -f "$RIG_DIR/netns.created" ]; then
    while read -r ns; do
      [ -n "$ns" ] && ip netns del "$ns" 2>/dev/null && log "deleted network namespace $ns"
    done < "$RIG_DIR/netns.created"
  fi
  rm -rf "$RIG_DIR"
  log "removed $RIG_DIR"
}

rig_status() {
  local h name rc=0 d ns port sd
  for h in "${RIG_HOSTS[@]}"; do
    name=$(host_name "$h"); d=$(host_dir "$name"); ns=$(host_netns "$h")
    if host_ready "$name"; then
      echo "$name: running (libvirtd $(read_pid "$d/libvirtd.pid"), virtlogd $(read_pid "$d/virtlogd.pid"), socket $(host_sock "$name")${ns:+, netns $ns})"
    elif host_running "$name"; then
      echo "$name: daemons running but not answering"; rc=1
    else
      echo "$name: stopped"; rc=1
    fi
    [ -n "$ns" ] || continue
    port=$(host_ssh_port "$name"); sd=$(host_ssh_dir "$name")
    if sshd_running "$name"; then
      echo "$name: sshd running ($(read_pid "$sd/sshd.pid"), netns $ns 127.0.0.1:22)"
    else
      echo "$name: sshd stopped"; rc=1
    fi
    if forward_running "$name" "$port" && ssh_banner "$port"; then
      echo "$name: ssh forward running (socat $(read_pid "$sd/socat.pid"), $LISTEN_ADDR:$port -> netns $ns 127.0.0.1:22)"
    elif forward_running "$name"; then
      echo "$name: ssh forward on $LISTEN_ADDR:$(cat "$sd/forward-port" 2>/dev/null) (socat $(read_pid "$sd/socat.pid")) not answering with an ssh banner on $port"; rc=1
    else
      echo "$name: ssh forward stopped"; rc=1
    fi
    local addr; addr=$(host_addr "$name")
    if ip -n "$ns" -4 -o addr show dev eth0 2>/dev/null | grep -q " $addr/24 " \
       && ns_has_link "$RIG_NET_NS" "$RIG_NET_BRIDGE"; then
      echo "$name: rig network $addr/24 (netns $ns eth0, bridge $RIG_NET_BRIDGE in netns $RIG_NET_NS)"
    else
      echo "$name: rig network missing ($addr/24 on eth0 in netns $ns)"; rc=1
    fi
  done
  return $rc
}

q() { local v=${2//\'/\'\\\'\'}; printf "%s='%s'\n" "$1" "$v"; }

rig_env() {
  local d; d=$(host_dir host1)
  q RIG_DIR "$RIG_DIR"
  local h n
  q RIG_HOSTS "${RIG_HOSTS[*]%%:*}"
  for h in "${RIG_HOSTS[@]}"; do
    n=$(host_name "$h" | tr 'a-z-' 'A-Z_')
    q "RIG_HOST_${n}_UNIX_URI" "$(host_unix_uri "$(host_name "$h")")"
    q "RIG_HOST_${n}_DIR" "$(host_dir "$(host_name "$h")")"
    q "RIG_HOST_${n}_NETNS" "$(host_netns "$h")"
    [ -n "$(host_netns "$h")" ] || continue
    # netns hosts: a "remote host over SSH" (root, key auth, host key in RIG_SSH_KNOWN_HOSTS)
    q "RIG_HOST_${n}_ADDR" "$(host_addr "$(host_name "$h")")"
    q "RIG_HOST_${n}_SSH_PORT" "$(host_ssh_port "$(host_name "$h")")"
    q "RIG_HOST_${n}_SSH_URI" "$(host_ssh_uri "$(host_name "$h")")"
    q "RIG_HOST_${n}_SSH_KEY" "$SSH_DIR/id_ed25519"
    q "RIG_HOST_${n}_SSH_KNOWN_HOSTS" "$SSH_DIR/known_hosts"
    q "RIG_HOST_${n}_SSH_HOST_KEY" "$(host_ssh_dir "$(host_name "$h")")/ssh_host_ed25519_key.pub"
  done
  q RIG_NET_NETNS "$RIG_NET_NS"
  q RIG_NET_BRIDGE "$RIG_NET_BRIDGE"
  q RIG_NET_CIDR "$RIG_NET_PREFIX.0/24"
  q RIG_SSH_KEY "$SSH_DIR/id_ed25519"
  q RIG_SSH_KNOWN_HOSTS "$SSH_DIR/known_hosts"
  q RIG_TCP_URI "qemu+tcp://$LISTEN_ADDR:$TCP_PORT/system"
  q RIG_TLS_URI "qemu+tls://$LISTEN_ADDR:$TLS_PORT/system?pkipath=$PKI"
  q RIG_UNIX_URI "$(host_unix_uri host1)"
  q RIG_UNIX_SOCKET "$(host_sock host1)"
  q RIG_LISTEN_ADDR "$LISTEN_ADDR"
  q RIG_TCP_PORT "$TCP_PORT"
  q RIG_TLS_PORT "$TLS_PORT"
  q RIG_PKI_PATH "$PKI"
  q RIG_CA_CERT "$PKI/cacert.pem"
  q RIG_CLIENT_CERT "$PKI/clientcert.pem"
  q RIG_CLIENT_KEY "$PKI/clientkey.pem"
  q RIG_UNTRUSTED_PKI_PATH "$PKI_UNTRUSTED"
  q RIG_HOST_UUID "$(cat "$d/host_uuid" 2>/dev/null || true)"
  q RIG_HOST_DIR "$d"
  q RIG_LIBVIRTD_LOG "$d/log/libvirtd.log"
  q RIG_QEMU_LOG_DIR "$d/log/qemu"
  q TINY_DIR "$TINY_DIR"
  q TINY_KERNEL "$TINY_DIR/vmlinuz"
  q TINY_INITRD "$TINY_DIR/initrd.img"
  q TINY_MANIFEST "$TINY_DIR/manifest.json"
  q TINY_CMDLINE "console=ttyS0 quiet"
  q TINY_READY_MARKER "VMCTL-TINY-READY"
  q TINY_POWEROFF_MARKER "VMCTL-TINY-POWEROFF"
}

with_lock() {
  mkdir -p "$RIG_DIR"
  exec 9>"$RIG_DIR/.lock"
  flock -w 300 9 || die "timed out waiting for $RIG_DIR/.lock"
  "$@"
}

case "${1:-}" in
  up) with_lock rig_up ;;
  down) [ -d "$RIG_DIR" ] || exit 0; with_lock rig_down ;;
  status) rc=0; rig_status || rc=$?; exit "$rc" ;;
  env) rig_env ;;
  clean) [ -d "$RIG_DIR" ] || exit 0; with_lock rig_clean ;;
  restart-libvirtd)
    [ $# -eq 2 ] || die "usage: $0 restart-libvirtd NAME"
    with_lock restart_libvirtd "$2" ;;
  restart)
    [ $# -eq 2 ] || die "usage: $0 restart NAME"
    with_lock restart_host "$2" ;;
  exec)
    [ $# -ge 3 ] || die "usage: $0 exec NAME CMD..."
    name=$2; shift 2
    pid_alive "$(host_dir "$name")/libvirtd.pid" || die "rig host $name is not running"
    exec nsenter -t "$(cat "$(host_dir "$name")/libvirtd.pid")" -m -C -n -u -- "$@" ;;
  __host-init) host_init "$2" "${3:-}" ;;
  __host-sshd) host_sshd_exec "$2" ;;
  __cgroup-plan) cgroup_plan "$2" ;;   # (scripts/prove-fresh.sh: its own cgroups, same layout)
  *) sed -n '2,/^set -euo/p' "$self" | sed '$d' >&2; exit 2 ;;
esac
