#!/usr/bin/env bash
# Builds vmctl's default guest image offline (from the Debian mirror only), as root, without
# loop devices, nbd or a bootloader:
#
#   scripts/build-image.sh debian-12 [--out FILE] [--size 3G] [--kernel cloud|generic]
#                                    [--profile tuned|stock] [--mirror URL]
#                                    [--security-mirror URL] [--keep-work]
#
# Profiles (same packages either way): "tuned" (default; $VMCTL_IMAGE_PROFILE overrides it)
# boots to sshd fast under TCG (scripts/image/profile-tuned.sh: an early shell unit applies
# the host key, user and hostname from the seed, cloud-init runs after sshd, networkd has
# the default network config pre-rendered, small initrd, masked units, no fsck); "stock"
# keeps Debian's defaults for all of that (the untuned baseline of `npm run bench:boot`).
#
# Outputs (all written under temporary names and renamed into place only on success; the
# manifest is renamed last, so "FILE.json exists" means "the set is complete"):
#   FILE            qcow2 (zstd-compressed): ext4 labelled vmctl-root, in one MBR partition
#                   (stock) or on the whole disk (tuned)
#   FILE.vmlinuz    kernel  } for direct kernel boot (libvirt <kernel>/<initrd>/<cmdline>);
#   FILE.initrd     initrd  } the image has no bootloader
#   FILE.json       manifest: format, virtual size, kernel/initrd (paths relative to the
#                   manifest's directory), cmdline, sha256s, build date, package versions
# Default FILE: <repo>/.cache/images/debian-12.qcow2
#
# Output protocol: stdout carries only machine-readable lines,
#   PROGRESS <0-100> <phase message>
#   RESULT <absolute path of FILE.json>        (last line, on success only)
# Human-readable logs go to stderr. Exit status 0 on success, non-zero on any failure (the
# EXIT trap unmounts what it mounted and removes the work dir and any partial outputs).
#
# Why direct kernel boot instead of GRUB: installing GRUB into a disk image needs a block
# device (loop/nbd) and device-map tricks, which are fragile in containers; direct boot needs
# neither, skips BIOS/bootloader time under TCG and lets vmctl own the kernel command line.
# The kernel package is held (apt-mark hold) in the image so the exported kernel keeps
# matching /lib/modules inside the guest.
#
# Caches (under <repo>/.cache, gitignored): debootstrap/ (base .debs), apt-archives/ (the
# rest, pruned to what the last build used).
set -euo pipefail

# stdout -> fd 3 (progress protocol only); everything else on stderr
exec 3>&1 1>&2

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)

SUITE=bookworm
MIRROR=${VMCTL_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${VMCTL_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
SIZE=3G
KERNEL_FLAVOUR=cloud
KEEP_WORK=0
OUT=
PROFILE=${VMCTL_IMAGE_PROFILE:-tuned}
ROOT_DEV=/dev/vda1
ROOT_LAYOUT=partition   # or whole-disk (the tuned profile): ext4 directly on the disk
FS_LABEL=vmctl-root
# net.ifnames=0: the first NIC is eth0, as vmctl's network-config says
CMDLINE_STOCK="ro rootfstype=ext4 console=tty0 console=ttyS0,115200n8 net.ifnames=0 biosdevname=0"
CMDLINE_QUIET="quiet loglevel=3 systemd.show_status=false"

# On failure the LAST stderr line is always "build-image.sh: <reason>" (callers show it).
STEP="starting" FAILED_MSG=""
log() { printf '[build-image] %s\n' "$*" >&2; }
die() { FAILED_MSG="$*"; exit 1; }
progress() { STEP=$2; printf 'PROGRESS %d %s\n' "$1" "$2" >&3; log "$2"; }
# until the real cleanup trap is set (below), only the failure line is needed
trap 'rc=$?; [ "$rc" = 0 ] || printf "build-image.sh: %s\n" "${FAILED_MSG:-failed (exit $rc)}" >&2' EXIT
usage() { sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//' >&2; }

# ---------------------------------------------------------------- arguments
[ $# -ge 1 ] || { usage; exit 2; }
case "$1" in
  -h|--help) usage; exit 0 ;;
  debian-12|debian12|bookworm) IMAGE_NAME=debian-12; shift ;;
  *) die "unknown image '$1' (supported: debian-12)" ;;
esac
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT=${2:?--out needs a file}; shift 2 ;;
    --out=*) OUT=${1#*=}; shift ;;
    --size) SIZE=${2:?}; shift 2 ;;
    --size=*) SIZE=${1#*=}; shift ;;
    --kernel) KERNEL_FLAVOUR=${2:?}; shift 2 ;;
    --kernel=*) KERNEL_FLAVOUR=${1#*=}; shift ;;
    --mirror) MIRROR=${2:?}; shift 2 ;;
    --mirror=*) MIRROR=${1#*=}; shift ;;
    --security-mirror) SECURITY_MIRROR=${2:?}; shift 2 ;;
    --security-mirror=*) SECURITY_MIRROR=${1#*=}; shift ;;
    --profile) PROFILE=${2:?--profile needs tuned or stock}; shift 2 ;;
    --profile=*) PROFILE=${1#*=}; shift ;;
    --keep-work) KEEP_WORK=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option '$1'" ;;
  esac
done
case "$KERNEL_FLAVOUR" in
  cloud) KERNEL_PKG=linux-image-cloud-amd64 ;;
  generic) KERNEL_PKG=linux-image-amd64 ;;
  *) die "--kernel must be cloud or generic" ;;
esac
case "$PROFILE" in
  tuned)
    # shellcheck source=image/profile-tuned.sh
    . "$here/image/profile-tuned.sh"
    CMDLINE_BASE="root=$ROOT_DEV $CMDLINE_STOCK $CMDLINE_QUIET $TUNED_CMDLINE" ;;
  stock) CMDLINE_BASE="root=$ROOT_DEV $CMDLINE_STOCK" ;;
  *) die "--profile must be tuned or stock" ;;
esac

[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, chroot, file ownership)"
for t in debootstrap chroot mke2fs qemu-img sha256sum flock findmnt numfmt pgrep gzip; do
  command -v "$t" >/dev/null || die "missing tool '$t' (run scripts/setup-host.sh)"
done

size_num=${SIZE%B}; size_num=${size_num%i}
size_bytes=$(numfmt --from=iec "$size_num" 2>/dev/null) || die "bad --size '$SIZE'"
[ "$size_bytes" -ge $((1024 * 1024 * 1024)) ] || die "--size must be at least 1G"
size_bytes=$(( size_bytes / 1048576 * 1048576 ))

cache=$repo/.cache
[ -n "$OUT" ] || OUT=$cache/images/$IMAGE_NAME.qcow2
mkdir -p -m 0700 "$(dirname "$OUT")"   # a new output dir is owner-only (vmctl tightens an existing one)
OUT=$(cd "$(dirname "$OUT")" && pwd)/$(basename "$OUT")
outbase=$(basename "$OUT")
mkdir -p "$cache/debootstrap" "$cache/apt-archives/partial" "$cache/tmp"

# one build at a time per cache (debootstrap/apt caches are shared)
exec 9>"$cache/.build-image.lock"
flock -n 9 || die "another build-image.sh is running (lock $cache/.build-image.lock)"

# ---------------------------------------------------------------- cleanup
work=$(mktemp -d "$cache/tmp/build-image.XXXXXX")
root=$work/rootfs
tag=".tmp.$$"
tmp_outputs=("$OUT$tag" "$OUT.vmlinuz$tag" "$OUT.initrd$tag" "$OUT.json$tag")
MOUNTS=()

umount_all() {
  local i
  for (( i=${#MOUNTS[@]}-1; i>=0; i-- )); do
    umount "${MOUNTS[$i]}" 2>/dev/null || umount -l "${MOUNTS[$i]}" 2>/dev/null || true
  done
  MOUNTS=()
  # anything else left under the root (e.g. debootstrap interrupted mid-way)
  if [ -d "$root" ]; then
    { findmnt -rn -o TARGET | grep -F "$root/" | sort -r || true; } | while read -r m; do
      umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done
  fi
}

# Long steps run in the background and are waited for, so a signal is handled at once (bash
# defers traps until a foreground command ends); on failure/signal the step's whole process
# tree (debootstrap, chroot'd apt/dpkg, ...) is stopped before anything is unmounted.
BGPID=
run() {
  local rc=0
  "$@" &
  BGPID=$!
  wait "$BGPID" || rc=$?
  BGPID=
  return "$rc"
}
kill_tree() { # pid signal
  local c
  for c in $(pgrep -P "$1" 2>/dev/null); do kill_tree "$c" "$2"; done
  kill "-$2" "$1" 2>/dev/null || true
}

cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  if [ -n "$BGPID" ]; then
    kill_tree "$BGPID" TERM
    for _ in $(seq 50); do kill -0 "$BGPID" 2>/dev/null || break; sleep 0.2; done
    kill_tree "$BGPID" KILL
    wait "$BGPID" 2>/dev/null
    sleep 0.5
  fi
  umount_all
  rm -f "${tmp_outputs[@]}"
  if [ "$KEEP_WORK" = 1 ] && [ "$rc" != 0 ]; then
    log "keeping work dir $work"
  else
    # --one-file-system: never descend into a mount that survived (e.g. a stuck bind mount)
    rm -rf --one-file-system "$work"
  fi
  if [ "$rc" != 0 ]; then
    case "$rc" in
      130|143) FAILED_MSG=${FAILED_MSG:-"interrupted during: $STEP"} ;;
      *) FAILED_MSG=${FAILED_MSG:-"failed during: $STEP (exit $rc)"} ;;
    esac
    printf 'build-image.sh: %s\n' "$FAILED_MSG" >&2
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mount_in() { # type source target [options]
  mkdir -p "$3"
  mount -t "$1" ${4:+-o "$4"} "$2" "$3"
  MOUNTS+=("$3")
}

in_chroot() {
  env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C.UTF-8 LANG=C.UTF-8 \
    DEBIAN_FRONTEND=noninteractive DEBCONF_NONINTERACTIVE_SEEN=true \
    chroot "$root" "$@"
}

# Maps `apt-get -o APT::Status-Fd=4` lines (dlstatus:/pmstatus:pkg:PERCENT:msg) onto [lo,hi].
apt_progress() { # lo hi label
  local lo=$1 hi=$2 label=$3 last=-1 kind pct p line
  while IFS= read -r line; do
    kind=${line%%:*}
    pct=$(printf '%s' "$line" | cut -d: -f3)
    pct=${pct%%.*}
    case "$pct" in ''|*[!0-9]*) continue ;; esac
    case "$kind" in
      dlstatus) p=$(( lo + (hi - lo) * pct / 300 )) ;;             # download: first third
      pmstatus) p=$(( lo + (hi - lo) / 3 + (hi - lo) * 2 * pct / 300 )) ;;
      *) continue ;;
    esac
    if [ "$p" -gt "$last" ]; then last=$p; printf 'PROGRESS %d %s\n' "$p" "$label" >&3; fi
  done
}

apt_in_chroot() { # lo hi label apt-get-args...
  local lo=$1 hi=$2 label=$3; shift 3
  in_chroot apt-get -y -q -o APT::Status-Fd=4 -o Dpkg::Use-Pty=0 \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@" \
    4>&1 1>&2 | apt_progress "$lo" "$hi" "$label"
}

t_start=$(date +%s)
progress 1 "building $IMAGE_NAME ($SUITE, kernel $KERNEL_PKG, ${SIZE}, profile $PROFILE) -> $OUT"

# ---------------------------------------------------------------- 1. debootstrap
# minbase + init/udev; everything else comes from apt in step 2 (so it gets security updates)
BASE_INCLUDE=systemd-sysv,udev,ca-certificates,netbase,iproute2
debootstrap_progress() {
  local line p last=2
  while IFS= read -r line; do
    printf '%s\n' "$line" >&2
    case "$line" in
      "I: Retrieving Release"*) p=3 ;;
      "I: Retrieving Packages"*) p=4 ;;
      "I: Resolving dependencies"*) p=5 ;;
      "I: Retrieving libc6"*|"I: Validating libc6"*) p=10 ;;
      "I: Retrieving systemd "*|"I: Validating systemd "*) p=16 ;;
      "I: Extracting"*) p=20 ;;
      "I: Installing core packages"*) p=22 ;;
      "I: Unpacking the base system"*) p=25 ;;
      "I: Configuring the base system"*) p=30 ;;
      "I: Base system installed"*) p=34 ;;
      *) continue ;;
    esac
    if [ "$p" -gt "$last" ]; then last=$p; printf 'PROGRESS %d debootstrap: %s\n' "$p" "${line#I: }" >&3; fi
  done
}
progress 2 "debootstrap $SUITE (minbase) from $MIRROR"
step_debootstrap() {
  debootstrap --variant=minbase --arch=amd64 --include="$BASE_INCLUDE" \
    --cache-dir="$cache/debootstrap" --keyring=/usr/share/keyrings/debian-archive-keyring.gpg \
    "$SUITE" "$root" "$MIRROR" 2>&1 | debootstrap_progress
}
run step_debootstrap
[ -x "$root/bin/systemctl" ] || die "debootstrap did not produce a systemd root"
# debootstrap can leave its own proc/sys mounts behind when interrupted; ours start here
umount_all

# ---------------------------------------------------------------- 2. packages
progress 35 "configuring apt and installing packages"
cat > "$root/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $SECURITY_MIRROR $SUITE-security main
EOF
cat > "$root/etc/apt/apt.conf.d/90vmctl" <<'EOF'
// vmctl image: no recommends, no translations, keep the image small
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
EOF
cat > "$root/etc/dpkg/dpkg.cfg.d/90vmctl-nodoc" <<'EOF'
# vmctl image: drop docs/man/locales (copyright files are kept)
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
EOF
[ "$PROFILE" = tuned ] && tuned_before_packages
# no daemons started inside the chroot
printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
chmod 755 "$root/usr/sbin/policy-rc.d"
# host resolver for apt inside the chroot (replaced at the end)
rm -f "$root/etc/resolv.conf"
cp -L /etc/resolv.conf "$root/etc/resolv.conf"

mount_in proc proc "$root/proc"
mount_in sysfs sysfs "$root/sys"
mount_in devpts devpts "$root/dev/pts" newinstance,ptmxmode=0666,mode=0620
mkdir -p "$root/var/cache/apt/archives"
mount --bind "$cache/apt-archives" "$root/var/cache/apt/archives"
MOUNTS+=("$root/var/cache/apt/archives")

PKGS=(
  "$KERNEL_PKG" initramfs-tools
  systemd-resolved dbus
  cloud-init cloud-guest-utils python3-cffi-backend
  openssh-server qemu-guest-agent sudo
  isc-dhcp-client
)
run apt_in_chroot 36 40 "apt: updating indexes" update
run apt_in_chroot 40 46 "apt: security/point-release upgrades" dist-upgrade
run apt_in_chroot 46 74 "apt: installing ${#PKGS[@]} packages" install "${PKGS[@]}"
in_chroot apt-mark hold "$KERNEL_PKG" >/dev/null

# prune the deb cache to what this build installed (bounded cache)
in_chroot dpkg-query -W -f '${Package}_${Version}_${Architecture}.deb\n' \
  | sed 's/:/%3a/' | LC_ALL=C sort > "$work/used-debs"
( cd "$cache/apt-archives" && find . -maxdepth 1 -name '*.deb' -printf '%f\n' | LC_ALL=C sort \
  | LC_ALL=C comm -23 - "$work/used-debs" | xargs -r rm -f -- )

# ---------------------------------------------------------------- 3. configure
progress 75 "configuring the guest"
kver=$(cd "$root/boot" && ls -1 vmlinuz-* | sed 's/^vmlinuz-//' | sort -V | tail -1)
[ -n "$kver" ] && [ -f "$root/boot/initrd.img-$kver" ] || die "no kernel/initrd in the image"

echo "$IMAGE_NAME" > "$root/etc/hostname"
cat > "$root/etc/hosts" <<'EOF'
127.0.0.1	localhost
::1		localhost ip6-localhost ip6-loopback
ff02::1		ip6-allnodes
ff02::2		ip6-allrouters
EOF
cat > "$root/etc/fstab" <<EOF
# <file system>	<mount point>	<type>	<options>	<dump>	<pass>
LABEL=$FS_LABEL	/	ext4	rw,noatime,errors=remount-ro	0	1
EOF
echo 'LANG=C.UTF-8' > "$root/etc/default/locale"

# cloud-init: NoCloud seed (ISO labelled cidata) or nothing; networkd renderer
cat > "$root/etc/cloud/cloud.cfg.d/90_vmctl.cfg" <<'EOF'
# vmctl image defaults (per-VM values come from the NoCloud seed: user-data, meta-data,
# network-config on an ISO labelled "cidata").
datasource_list: [ NoCloud, None ]
system_info:
  default_user:
    name: vmctl
    gecos: vmctl
    lock_passwd: true
    groups: [adm, sudo]
    sudo: ["ALL=(ALL) NOPASSWD:ALL"]
    shell: /bin/bash
  network:
    renderers: [networkd]
    activators: [networkd]
# C.UTF-8 is built into libc: nothing to generate at boot (locale-gen is slow under TCG)
locale: C.UTF-8
# ssh_pwauth is left unset on purpose: setting it makes cloud-init rewrite sshd_config and
# restart sshd at boot; /etc/ssh/sshd_config.d/90-vmctl.conf already forbids passwords.
disable_root: true
# RSA host key generation is slow under TCG; ed25519 + ecdsa when vmctl injects none
ssh_genkeytypes: [ed25519, ecdsa]
manage_etc_hosts: true
preserve_hostname: false
# keep the image's sources.list (cloud-init would otherwise regenerate it at first boot)
apt:
  preserve_sources_list: true
EOF
# (sorts after the package's 90_dpkg.cfg, so our datasource_list wins; the "debian"
# default user of cloud.cfg is replaced by system_info.default_user above)

# sshd: keys only
cat > "$root/etc/ssh/sshd_config.d/90-vmctl.conf" <<'EOF'
# vmctl image: public-key authentication only
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
PermitEmptyPasswords no
UseDNS no
EOF
# host keys are made per instance by cloud-init (or injected by vmctl); if cloud-init is
# disabled, generate them before sshd so ssh still comes up
rm -f "$root"/etc/ssh/ssh_host_*
cat > "$root/etc/systemd/system/vmctl-ssh-hostkeys.service" <<'EOF'
[Unit]
Description=Generate SSH host keys if none exist (fallback when cloud-init made none)
After=cloud-init.service
Before=ssh.service
ConditionPathExistsGlob=!/etc/ssh/ssh_host_*_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=ssh.service
EOF
in_chroot systemctl enable vmctl-ssh-hostkeys.service 

# networking: systemd-networkd (DHCP built in) + resolved; cloud-init writes the .network files
in_chroot systemctl enable systemd-networkd.service systemd-resolved.service 
mkdir -p "$root/etc/systemd/system/systemd-networkd-wait-online.service.d"
cat > "$root/etc/systemd/system/systemd-networkd-wait-online.service.d/vmctl.conf" <<'EOF'
[Service]
ExecStart=
ExecStart=/lib/systemd/systemd-networkd-wait-online --any --timeout=60
EOF
rm -f "$root/etc/resolv.conf"
ln -s ../run/systemd/resolve/stub-resolv.conf "$root/etc/resolv.conf"
# serial console login (also auto-spawned by console=ttyS0)
in_chroot systemctl enable serial-getty@ttyS0.service 

[ "$PROFILE" = tuned ] && tuned_configure

# ---------------------------------------------------------------- 4. generalize
progress 78 "generalizing (machine-id, keys, logs, caches)"
rm -f "$root/usr/sbin/policy-rc.d"
umount_all
kernel_ver_pkg=$(in_chroot dpkg-query -W -f '${Version}' "linux-image-$kver")
cloudinit_ver=$(in_chroot dpkg-query -W -f '${Version}' cloud-init)
systemd_ver=$(in_chroot dpkg-query -W -f '${Version}' systemd)
openssh_ver=$(in_chroot dpkg-query -W -f '${Version}' openssh-server)
debian_ver=$(cat "$root/etc/debian_version")
pkg_count=$(in_chroot dpkg-query -W -f '.\n' | wc -l)

# empty machine-id: systemd makes a fresh one on each clone's first boot
: > "$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id" "$root/var/lib/systemd/random-seed" \
      "$root/var/lib/systemd/credential.secret"
rm -rf "$root/var/lib/cloud" "$root"/var/log/cloud-init*
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/debconf/*-old \
       "$root"/var/lib/dpkg/*-old "$root"/var/cache/apt/archives/*.deb
mkdir -p "$root/var/lib/apt/lists/partial"
rm -rf "$root"/var/log/journal/*
find "$root/var/log" -type f -exec truncate -s 0 {} +
rm -rf "$root"/tmp/* "$root"/var/tmp/* "$root/root/.bash_history"
# docs that debootstrap unpacked before the dpkg excludes existed
find "$root/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete 2>/dev/null || true
find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/*
find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +

# ---------------------------------------------------------------- 5. disk
progress 80 "creating the ext4 filesystem"
raw=$work/disk.raw
truncate -s "$size_bytes" "$raw"
start_sector=2048
[ "$ROOT_LAYOUT" = whole-disk ] && start_sector=0
total_sectors=$(( size_bytes / 512 ))
part_sectors=$(( total_sectors - start_sector ))
le32() { printf '\\x%02x\\x%02x\\x%02x\\x%02x' $(( $1 & 255 )) $(( ($1 >> 8) & 255 )) \
           $(( ($1 >> 16) & 255 )) $(( ($1 >> 24) & 255 )); }
# MBR: disk signature, one Linux (0x83) partition from 1 MiB to the end, boot signature
# shellcheck disable=SC2059
[ "$ROOT_LAYOUT" = whole-disk ] || {
  printf "$(le32 $(( (RANDOM << 16) ^ RANDOM ^ $$ )))" | dd of="$raw" bs=1 seek=440 conv=notrunc status=none
  printf "\\x00\\xfe\\xff\\xff\\x83\\xfe\\xff\\xff$(le32 $start_sector)$(le32 $part_sectors)" \
    | dd of="$raw" bs=1 seek=446 conv=notrunc status=none
  printf '\x55\xaa' | dd of="$raw" bs=1 seek=510 conv=notrunc status=none
}
fs_uuid=$(cat /proc/sys/kernel/random/uuid)
# features pinned to what bookworm's kernel and e2fsck understand (host mke2fs may be newer)
# (mke2fs >= 1.47 knows orphan_file, which some newer hosts enable by default)
fs_features=^metadata_csum_seed
mke2fs -V 2>&1 | grep -E 'mke2fs 1\.(4[7-9]|[5-9][0-9])' >/dev/null && fs_features+=,^orphan_file
run mke2fs -q -F -t ext4 -L "$FS_LABEL" -U "$fs_uuid" -m 1 -O "$fs_features" \
  -E "offset=$(( start_sector * 512 ))" -d "$root" "$raw" "$(( part_sectors / 2 ))k"

progress 88 "exporting kernel and initrd"
install -m 0600 "$root/boot/vmlinuz-$kver" "$OUT.vmlinuz$tag"
if [ "$PROFILE" = tuned ]; then
  # tuned: a small uncompressed initrd of its own (profile-tuned.sh)
  tuned_initrd "$root/boot/initrd.img-$kver" "$OUT.initrd$tag" "$kver"
else
  install -m 0600 "$root/boot/initrd.img-$kver" "$OUT.initrd$tag"
fi

progress 90 "converting to compressed qcow2"
run qemu-img convert -q -c -f raw -O qcow2 -o compression_type=zstd "$raw" "$OUT$tag"
rm -f "$raw"

# ---------------------------------------------------------------- 6. manifest
progress 97 "writing manifest"
sha_img=$(sha256sum "$OUT$tag" | cut -d' ' -f1)
sha_k=$(sha256sum "$OUT.vmlinuz$tag" | cut -d' ' -f1)
sha_i=$(sha256sum "$OUT.initrd$tag" | cut -d' ' -f1)
file_size=$(stat -c %s "$OUT$tag")
build_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
build_secs=$(( $(date +%s) - t_start ))
json_str() { local s=${1//\\/\\\\}; s=${s//\"/\\\"}; printf '"%s"' "$s"; }
cat > "$OUT.json$tag" <<EOF
{
  "manifestVersion": 1,
  "name": "$IMAGE_NAME",
  "profile": "$PROFILE",
  "distro": { "id": "debian", "release": "12", "codename": "$SUITE", "version": $(json_str "$debian_ver") },
  "arch": "x86_64",
  "format": "qcow2",
  "image": $(json_str "$outbase"),
  "virtualSize": $size_bytes,
  "fileSize": $file_size,
  "sha256": "$sha_img",
  "boot": {
    "method": "direct-kernel",
    "kernel": $(json_str "$outbase.vmlinuz"),
    "kernelSha256": "$sha_k",
    "initrd": $(json_str "$outbase.initrd"),
    "initrdSha256": "$sha_i",
    "cmdline": $(json_str "$CMDLINE_BASE"),
    "rootDevice": "$ROOT_DEV",
    "rootLayout": "$ROOT_LAYOUT",
    "rootFsLabel": "$FS_LABEL",
    "rootFsUuid": "$fs_uuid",
    "diskBus": "virtio",
    "serialConsole": "ttyS0"
  },
  "guest": {
    "defaultUser": "vmctl",
    "cloudInitDatasource": "NoCloud",
    "seedVolumeLabel": "cidata",
    "nic": "eth0",
    "networkRenderer": "networkd",
    "guestAgent": true
  },
  "packages": {
    "kernel": { "name": "linux-image-$kver", "version": $(json_str "$kernel_ver_pkg"), "release": "$kver" },
    "cloud-init": $(json_str "$cloudinit_ver"),
    "systemd": $(json_str "$systemd_ver"),
    "openssh-server": $(json_str "$openssh_ver"),
    "count": $pkg_count
  },
  "build": {
    "date": "$build_date",
    "seconds": $build_secs,
    "mirror": $(json_str "$MIRROR"),
    "tool": "scripts/build-image.sh"
  }
}
EOF

# ---------------------------------------------------------------- 7. publish
progress 99 "publishing"
chmod 0600 "${tmp_outputs[@]}"   # owner-only, like every volume vmctl makes from them
mv -f "$OUT$tag" "$OUT"
mv -f "$OUT.vmlinuz$tag" "$OUT.vmlinuz"
mv -f "$OUT.initrd$tag" "$OUT.initrd"
mv -f "$OUT.json$tag" "$OUT.json"   # last: the manifest marks a complete set
log "done in ${build_secs}s: $OUT ($(numfmt --to=iec "$file_size") on disk, $(numfmt --to=iec "$size_bytes") virtual), kernel $kver"
progress 100 "done"
printf 'RESULT %s\n' "$OUT.json" >&3
