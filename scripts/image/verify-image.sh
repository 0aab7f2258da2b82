#!/usr/bin/env bash
# End-to-end check of an image made by scripts/build-image.sh, under TCG, loopback only:
#   scripts/image/verify-image.sh [IMAGE.qcow2] [--smp N] [--mem MiB] [--keep] [--seed-bus ide|virtio]
#                                 [--disk-size 6G] [--timeout SECS] [--exec 'guest shell command']
#
# Builds a NoCloud seed from cloud-init/*.yaml (merged with a fresh user key and a
# pre-generated ed25519 *host* key, as vmctl does), boots a qcow2 overlay of the image with
# direct kernel boot (kernel/initrd/cmdline from IMAGE.json), user-mode networking with
# restrict=on and hostfwd=tcp:127.0.0.1:PORT-:22, then checks over ssh with
# StrictHostKeyChecking=yes against the injected host key: cloud-init status --wait = done,
# hostname from meta-data, eth0 via networkd, no password auth, fresh machine-id, qemu-guest-agent.
# Prints timings (boot -> sshd banner, boot -> cloud-init done) on stdout; logs on stderr.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

IMG=$repo/.cache/images/debian-12.qcow2
SMP=1 MEM=1024 KEEP=0 SEED_BUS=ide EXEC='' BOOT_TIMEOUT=300 DISK_SIZE=''
while [ $# -gt 0 ]; do
  case "$1" in
    --smp) SMP=$2; shift 2 ;;
    --mem) MEM=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --seed-bus) SEED_BUS=$2; shift 2 ;;
    --disk-size) DISK_SIZE=$2; shift 2 ;;    # overlay size, e.g. 6G: checks growpart+resizefs
    --timeout) BOOT_TIMEOUT=$2; shift 2 ;;   # seconds to wait for sshd (default 300)
    --exec) EXEC=$2; shift 2 ;;   # extra diagnostic command run in the guest at the end
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) IMG=$1; shift ;;
  esac
done
IMG=$(readlink -f "$IMG")
manifest=$IMG.json
[ -f "$manifest" ] || { echo "no manifest $manifest" >&2; exit 1; }
log() { printf '[verify] %s\n' "$*" >&2; }
jget() { node -e 'const m=JSON.parse(require("fs").readFileSync(process.argv[1],"utf8"));let v=m;for(const k of process.argv[2].split("."))v=v[k];console.log(v)' "$manifest" "$1"; }

dir=$(dirname "$IMG")
kernel=$dir/$(jget boot.kernel)
initrd=$dir/$(jget boot.initrd)
cmdline=$(jget boot.cmdline)

work=$(mktemp -d /tmp/vmctl-verify.XXXXXX)
qpid=
cleanup() {
  local rc=$?
  [ -n "$qpid" ] && kill "$qpid" 2>/dev/null && wait "$qpid" 2>/dev/null
  if [ "$KEEP" = 1 ]; then log "kept $work"; else rm -rf "$work"; fi
  exit "$rc"
}
trap cleanup EXIT INT TERM

# --- keys and seed
ssh-keygen -q -t ed25519 -N '' -C vmctl-verify-user -f "$work/id_ed25519"
ssh-keygen -q -t ed25519 -N '' -C vmctl-verify-host -f "$work/host_ed25519"
name=verify-$RANDOM
mkdir "$work/seed"
(cd "$repo" && node --input-type=module - "$work" "$name" <<'EOF'
import { readFileSync, writeFileSync } from 'node:fs';
import YAML from 'yaml';
const [work, name] = process.argv.slice(2);
const load = (f) => YAML.parse(readFileSync(`cloud-init/${f}`, 'utf8'));
const ud = load('user-data.yaml');
ud.users[0].ssh_authorized_keys = [readFileSync(`${work}/id_ed25519.pub`, 'utf8').trim()];
ud.ssh_keys = {
  ed25519_private: readFileSync(`${work}/host_ed25519`, 'utf8'),
  ed25519_public: readFileSync(`${work}/host_ed25519.pub`, 'utf8'),
};
// with ssh_keys present cloud-init generates none; ssh_genkeytypes only matters without it
ud.ssh_deletekeys = true;
ud.ssh_genkeytypes = ['ed25519'];
const md = load('meta-data.yaml');
md['instance-id'] = `iid-${name}`;
md['local-hostname'] = name;
writeFileSync(`${work}/seed/user-data`, '#cloud-config\n' + YAML.stringify(ud));
writeFileSync(`${work}/seed/meta-data`, YAML.stringify(md));
writeFileSync(`${work}/seed/network-config`, YAML.stringify(load('network-config.yaml')));
EOF
)
genisoimage -quiet -V cidata -r -J -o "$work/seed.iso" "$work/seed/user-data" "$work/seed/meta-data" "$work/seed/network-config"
qemu-img create -q -f qcow2 -F qcow2 -b "$IMG" "$work/disk.qcow2" ${DISK_SIZE:+"$DISK_SIZE"}

# free loopback port
for _ in $(seq 50); do
  port=$(( 20000 + RANDOM % 20000 ))
  ss -ltnH "sport = :$port" | grep -q . || break
done
printf '[127.0.0.1]:%s %s\n' "$port" "$(cut -d' ' -f1,2 "$work/host_ed25519.pub")" > "$work/known_hosts"
SSH=(ssh -F /dev/null -i "$work/id_ed25519" -p "$port" -o BatchMode=yes -o IdentitiesOnly=yes
     -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$work/known_hosts"
     -o ConnectTimeout=10 -o LogLevel=ERROR vmctl@127.0.0.1)

if [ "$SEED_BUS" = virtio ]; then
  seed_args=(-drive "file=$work/seed.iso,format=raw,if=virtio,readonly=on")
else
  seed_args=(-drive "file=$work/seed.iso,format=raw,media=cdrom,if=ide,readonly=on")
fi

log "booting $(basename "$IMG") (TCG, $SMP vCPU, ${MEM} MiB), ssh on 127.0.0.1:$port"
t0=$(date +%s.%N)
qemu-system-x86_64 -name vmctl-verify -machine pc,accel=tcg -smp "$SMP" -m "$MEM" \
  -nodefaults -display none -vga none -no-user-config \
  -kernel "$kernel" -initrd "$initrd" -append "$cmdline" \
  -drive "file=$work/disk.qcow2,format=qcow2,if=virtio,discard=unmap" \
  "${seed_args[@]}" \
  -netdev "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:$port-:22" \
  -device virtio-net-pci,netdev=n0 \
  -device virtio-serial-pci \
  -chardev "socket,id=qga0,path=$work/qga.sock,server=on,wait=off" \
  -device virtserialport,chardev=qga0,name=org.qemu.guest_agent.0 \
  -device virtio-rng-pci \
  -serial "file:$work/console.log" -pidfile "$work/qemu.pid" &
qpid=$!

elapsed() { awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}'; }
banner() { timeout 5 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port; head -c 7 <&3" 2>/dev/null; }
t_ssh=
deadline=$(( $(date +%s) + BOOT_TIMEOUT ))
while [ "$(date +%s)" -lt "$deadline" ]; do
  kill -0 "$qpid" 2>/dev/null || { log "qemu exited"; tail -30 "$work/console.log" >&2; exit 1; }
  if [ "$(banner)" = "SSH-2.0" ]; then t_ssh=$(elapsed); break; fi
  sleep 1
done
[ -n "$t_ssh" ] || { log "sshd never answered"; tail -40 "$work/console.log" >&2; exit 1; }
log "sshd banner after ${t_ssh}s"

ok=0
for _ in $(seq 30); do
  if "${SSH[@]}" true 2>"$work/ssh.err"; then ok=1; break; fi
  sleep 2
done
[ "$ok" = 1 ] || { log "ssh login failed: $(cat "$work/ssh.err")"; exit 1; }
t_login=$(elapsed)
log "ssh login (pinned host key) after ${t_login}s"

status=$("${SSH[@]}" cloud-init status --wait 2>&1 | tail -1) || true
t_ci=$(elapsed)
log "cloud-init: $status after ${t_ci}s"

fail=0
check() { # description expected actual
  if [ "$2" = "$3" ]; then log "ok   $1"; else log "FAIL $1: expected '$2', got '$3'"; fail=1; fi
}
check "cloud-init status" "status: done" "$status"
check "hostname from meta-data" "$name" "$("${SSH[@]}" hostname)"
check "eth0 has the slirp DHCP address" "10.0.2.15" \
  "$("${SSH[@]}" "ip -4 -o addr show dev eth0 | awk '{print \$4}' | cut -d/ -f1")"
check "network rendered for networkd" "yes" \
  "$("${SSH[@]}" 'test -f /etc/systemd/network/10-cloud-init-eth0.network && echo yes')"
check "passwordless sudo" "root" "$("${SSH[@]}" sudo -n id -un)"
check "machine-id generated" "32" "$("${SSH[@]}" 'tr -d "\n" </etc/machine-id | wc -c')"
check "only the injected host key" "$(ssh-keygen -lf "$work/host_ed25519.pub" | cut -d' ' -f2)" \
  "$("${SSH[@]}" 'sudo awk 1 /etc/ssh/ssh_host_*_key.pub; ls -l /etc/ssh/ >&2' | ssh-keygen -lf - | cut -d' ' -f2 | tr '\n' ' ' | sed 's/ $//')"
check "sshd refuses passwords" "publickey" \
  "$("${SSH[@]}" 'sudo sshd -T' | awk '$1=="passwordauthentication"{p=$2} $1=="kbdinteractiveauthentication"{k=$2} END{print (p=="no"&&k=="no")?"publickey":"p="p",k="k}')"
if [ -n "$DISK_SIZE" ]; then
  want=$(( $(numfmt --from=iec "${DISK_SIZE%B}") / 1024 / 1024 / 1024 ))
  got=$("${SSH[@]}" "df -BG --output=size / | tail -1 | tr -dc 0-9")
  check "root fs grown to the disk (~${want}G)" yes "$([ "$got" -ge $(( want - 1 )) ] && echo yes || echo "no (${got}G)")"
fi
check "no failed units" "0" "$("${SSH[@]}" 'systemctl list-units --failed --no-legend | wc -l')"
check "serial getty" "active" "$("${SSH[@]}" 'systemctl is-active serial-getty@ttyS0.service')"
# guest agent over its virtio-serial channel
qga=$(timeout 10 node -e '
const s = require("net").connect(process.argv[1]);
let buf = "";
s.on("connect", () => s.write(JSON.stringify({ execute: "guest-sync", arguments: { id: 4242 } }) + "\n"));
s.on("data", (d) => { buf += d; if (buf.includes("\n")) { console.log(JSON.parse(buf.split("\n")[0]).return); s.destroy(); } });
' "$work/qga.sock" 2>/dev/null || true)
check "qemu-guest-agent answers" "4242" "$qga"
"${SSH[@]}" 'systemd-analyze 2>/dev/null; systemd-analyze blame 2>/dev/null | head -12; df -h / | tail -1;
  systemd-analyze critical-chain ssh.service cloud-final.service 2>/dev/null; sudo cloud-init schema --system 2>&1 | tail -5; sudo cloud-init analyze blame 2>/dev/null | head -25' >&2 || true
[ "$fail" = 0 ] || { log "console tail:"; tail -20 "$work/console.log" >&2; }
[ -z "$EXEC" ] || "${SSH[@]}" "$EXEC" >&2 || true
if [ "$KEEP" = 1 ]; then
  "${SSH[@]}" 'sudo cat /var/log/cloud-init.log' > "$work/cloud-init.log" 2>/dev/null || true
  "${SSH[@]}" 'sudo journalctl -b -o short-monotonic --no-pager' > "$work/journal.txt" 2>/dev/null || true
fi

printf 'boot_to_sshd_s=%s\nboot_to_login_s=%s\nboot_to_cloud_init_done_s=%s\nresult=%s\n' \
  "$t_ssh" "$t_login" "$t_ci" "$([ "$fail" = 0 ] && echo pass || echo fail)"
"${SSH[@]}" 'sudo poweroff' >/dev/null 2>&1 || true
for _ in $(seq 60); do kill -0 "$qpid" 2>/dev/null || break; sleep 1; done
exit "$fail"
