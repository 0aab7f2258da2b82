#!/usr/bin/env bash
# Builds the "tiny guest" used by the lifecycle/integration tests: a Debian kernel plus a
# busybox-only initramfs, booted with libvirt direct kernel boot (no disk needed).
#
# Usage: scripts/build-tiny-guest.sh [--force] [OUTDIR]      (default OUTDIR: .cache/tiny)
#
# Outputs in OUTDIR:
#   vmlinuz        kernel from Debian's linux-image-6.1.0-*-amd64 (what linux-image-amd64 depends on)
#   initrd.img     gzip'd cpio: busybox-static + /init + a few modules (virtio, button, evdev)
#   manifest.json  kernel version/package, sha256 + size of both files, the console markers
#
# Guest behaviour (kernel cmdline must contain console=ttyS0; "quiet" makes it boot faster):
#   - /init mounts proc/sys/dev, loads the bundled modules, starts busybox acpid, then prints
#     VMCTL-TINY-READY on the console (ttyS0) and runs a respawning root shell on it.
#   - ACPI power button (virsh shutdown / reboot in acpi mode) -> prints VMCTL-TINY-POWEROFF
#     and powers off (poweroff -f).
#   - cmdline "vmctl.hostname=NAME" sets the hostname; it is echoed in the ready line.
#
# Idempotent: does nothing if all outputs exist and are newer than this script (use --force).
# Needs: apt-get (Debian mirror reachable, or the .deb already cached), dpkg-deb, cpio, gzip,
# /bin/busybox from busybox-static. Runs offline once OUTDIR/.debs holds the kernel .deb.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
self="$here/$(basename "$0")"

trap 'echo "build-tiny-guest.sh: failed (exit $?) at line $LINENO: $BASH_COMMAND" >&2' ERR
log() { printf '[tiny-guest] %s\n' "$*" >&2; }
die() { printf 'build-tiny-guest.sh: error: %s\n' "$*" >&2; exit 1; }

force=0
outdir=""
for a in "$@"; do
  case "$a" in
    --force|-f) force=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$self" | sed '$d'; exit 0 ;;
    -*) die "unknown option $a" ;;
    *) [ -z "$outdir" ] || die "only one OUTDIR allowed"; outdir=$a ;;
  esac
done
outdir=${outdir:-$root/.cache/tiny}
mkdir -p "$outdir"
outdir=$(cd "$outdir" && pwd)

MARKER=VMCTL-TINY-READY
POWEROFF_MARKER=VMCTL-TINY-POWEROFF
# modules to bundle (their dependencies are added automatically)
MODULES=(virtio_pci virtio_blk virtio_net virtio_console virtio_balloon button evdev)

up_to_date() {
  local f
  for f in vmlinuz initrd.img manifest.json; do
    [ -s "$outdir/$f" ] && [ "$outdir/$f" -nt "$self" ] || return 1
  done
}

# Serialize concurrent builds (several test processes may call us at once).
exec 9>"$outdir/.lock"
flock 9

if [ "$force" = 0 ] && up_to_date; then
  log "up to date: $outdir"
  exit 0
fi

for t in apt-get apt-cache dpkg-deb cpio gzip sha256sum; do
  command -v "$t" >/dev/null || die "$t not found (run scripts/setup-host.sh)"
done
busybox=/bin/busybox
[ -x "$busybox" ] || die "/bin/busybox missing (apt-get install busybox-static)"
if ldd "$busybox" >/dev/null 2>&1; then
  die "/bin/busybox is dynamically linked; install busybox-static"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/tiny-guest.XXXXXX")
trap 'rm -rf "$work"' EXIT

# --- kernel -------------------------------------------------------------------------------
# the package lists may be missing (never updated, or emptied) or outdated (the kernel .deb
# they name is gone from the mirror): refresh them once, as root, and retry
updated=0
apt_update_once() {
  [ "$updated" = 0 ] && [ "$(id -u)" = 0 ] || return 1
  updated=1
  log "apt-get update (package lists missing or outdated)"
  apt-get update -qq >&2 || return 1
}
resolve_kpkg() {
  apt-cache depends linux-image-amd64 2>/dev/null \
    | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | sed -n 1p
}
kpkg=${TINY_KERNEL_PKG:-}
if [ -z "$kpkg" ]; then
  kpkg=$(resolve_kpkg)
  if [ -z "$kpkg" ] && ! ls "$outdir/.debs"/linux-image-6.1.0-*-amd64_*.deb >/dev/null 2>&1 && apt_update_once; then
    kpkg=$(resolve_kpkg)
  fi
  if [ -z "$kpkg" ]; then
    # maybe the .deb is cached from an earlier run and apt lists are gone
    cached=$(ls -1 "$outdir/.debs"/linux-image-6.1.0-*-amd64_*.deb 2>/dev/null | sort -V | tail -1 || true)
    [ -n "$cached" ] || die "cannot resolve linux-image-amd64's kernel package (try: apt-get update)"
    kpkg=$(dpkg-deb -f "$cached" Package)
  fi
fi
mkdir -p "$outdir/.debs"
deb=$(ls -1 "$outdir/.debs/${kpkg}"_*.deb 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$deb" ]; then
  log "downloading $kpkg"
  # (as root into a root-owned temp dir apt warns "Download is performed unsandboxed": harmless)
  if ! (cd "$work" && apt-get download -q "$kpkg" > "$work/apt.log" 2>&1) \
     && ! { apt_update_once && (cd "$work" && apt-get download -q "$kpkg" > "$work/apt.log" 2>&1); }; then
    grep -v 'Download is performed unsandboxed' "$work/apt.log" >&2 || true
    die "apt-get download $kpkg failed (Debian mirror reachable? try: apt-get update)"
  fi
  deb=$(ls -1 "$work/${kpkg}"_*.deb 2>/dev/null | sed -n 1p)
  [ -n "$deb" ] || die "apt-get download produced no .deb for $kpkg"
  # keep only this kernel's .deb as an offline cache
  rm -f "$outdir/.debs"/*.deb
  mv "$deb" "$outdir/.debs/"
  deb="$outdir/.debs/$(basename "$deb")"
fi
kpkg_version=$(dpkg-deb -f "$deb" Version)
log "extracting $(basename "$deb")"
dpkg-deb -x "$deb" "$work/kernel"
vmlinuz=$(ls -1 "$work/kernel/boot"/vmlinuz-* 2>/dev/null | sed -n 1p)
[ -n "$vmlinuz" ] || die "no boot/vmlinuz-* in $deb"
kver=${vmlinuz##*/vmlinuz-}
moddir="$work/kernel/lib/modules/$kver"
[ -d "$moddir" ] || die "no lib/modules/$kver in $deb"

# --- initramfs ----------------------------------------------------------------------------
rootfs="$work/rootfs"
mkdir -p "$rootfs"/{bin,sbin,usr/bin,usr/sbin,etc/acpi/PWRF,proc,sys,dev,run,tmp,root,lib/modules}
cp "$busybox" "$rootfs/bin/busybox"
# the same applet set `busybox --install -s` would create, made on the host so no guest-side
# install step is needed (and the cpio holds plain symlinks)
for path in $("$busybox" --list-full); do
  [ "$path" = bin/busybox ] && continue
  mkdir -p "$rootfs/$(dirname "$path")"
  ln -sf "/bin/busybox" "$rootfs/$path"
done

# modules: resolve dependencies from each .ko's modinfo "depends=" and write a load order
declare -A mod_path=() mod_done=()
while IFS= read -r ko; do
  n=$(basename "$ko" .ko); mod_path[${n//-/_}]=$ko
done < <(find "$moddir/kernel" -name '*.ko')
order=()
add_module() {
  local m=${1//-/_} deps d
  [ -n "${mod_done[$m]:-}" ] && return 0
  [ -n "${mod_path[$m]:-}" ] || die "module $m not found in $kpkg"
  mod_done[$m]=1
  deps=$("$busybox" strings -a "${mod_path[$m]}" | sed -n 's/^depends=//p' | sed -n 1p)
  for d in ${deps//,/ }; do add_module "$d"; done
  order+=("$m")
}
for m in "${MODULES[@]}"; do add_module "$m"; done
: > "$rootfs/etc/modules.order"
for m in "${order[@]}"; do
  cp "${mod_path[$m]}" "$rootfs/lib/modules/$m.ko"
  echo "$m" >> "$rootfs/etc/modules.order"
done

cat > "$rootfs/etc/acpi/PWRF/00000080" <<EOF
#!/bin/sh
# ACPI power button (busybox acpid runs ./PWRF/00000080 from /etc/acpi)
echo "$POWEROFF_MARKER" > /dev/console
sync
poweroff -f
EOF
chmod +x "$rootfs/etc/acpi/PWRF/00000080"
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$rootfs/etc/passwd"
printf 'root:x:0:\n' > "$rootfs/etc/group"
printf 'export PATH=/bin:/sbin:/usr/bin:/usr/sbin\nexport PS1="tiny# "\n' > "$rootfs/etc/profile"

cat > "$rootfs/init" <<EOF
#!/bin/sh
# vmctl tiny guest init (PID 1)
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
exec </dev/console >/dev/console 2>&1
name=vmctl-tiny
for arg in \$(cat /proc/cmdline); do
  case "\$arg" in vmctl.hostname=*) name=\${arg#vmctl.hostname=} ;; esac
done
hostname "\$name"
while read -r m; do
  insmod "/lib/modules/\$m.ko" 2>/dev/null || echo "tiny: insmod \$m failed"
done < /etc/modules.order
ip link set lo up 2>/dev/null
acpid -c /etc/acpi -l /run/acpid.log
echo "$MARKER hostname=\$name kernel=\$(uname -r) uptime=\$(cut -d' ' -f1 /proc/uptime)"
while :; do
  setsid cttyhack sh -l
  sleep 1
done
EOF
chmod +x "$rootfs/init"

log "packing initramfs (${#order[@]} modules: ${order[*]})"
# reproducible: fixed mtimes, sorted names, no inode numbers (cpio --reproducible), gzip -n
find "$rootfs" -mindepth 1 -exec touch -h -d @0 {} +
repro=; cpio --help 2>&1 | grep -- --reproducible >/dev/null && repro=--reproducible
(cd "$rootfs" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --owner=0:0 --quiet $repro) \
  | gzip -9n > "$work/initrd.img"
cp "$vmlinuz" "$work/vmlinuz"

sha() { sha256sum "$1" | cut -d' ' -f1; }
size() { stat -c %s "$1"; }
bbver=$("$busybox" 2>&1 | sed -n '1s/^BusyBox \(v[^ ]*\).*/\1/p')
mods_json=$(printf '"%s",' "${order[@]}"); mods_json="[${mods_json%,}]"
cat > "$work/manifest.json" <<EOF
{
  "kernelVersion": "$kver",
  "kernelPackage": "$kpkg",
  "kernelPackageVersion": "$kpkg_version",
  "busybox": "$bbver",
  "cmdline": "console=ttyS0 quiet",
  "readyMarker": "$MARKER",
  "poweroffMarker": "$POWEROFF_MARKER",
  "modules": $mods_json,
  "files": {
    "vmlinuz": { "sha256": "$(sha "$work/vmlinuz")", "size": $(size "$work/vmlinuz") },
    "initrd.img": { "sha256": "$(sha "$work/initrd.img")", "size": $(size "$work/initrd.img") }
  }
}
EOF

# install: manifest last, so a present+fresh manifest means a complete build
mv -f "$work/vmlinuz" "$outdir/vmlinuz"
mv -f "$work/initrd.img" "$outdir/initrd.img"
mv -f "$work/manifest.json" "$outdir/manifest.json"
log "built $outdir (kernel $kver, initrd $(size "$outdir/initrd.img") bytes)"
