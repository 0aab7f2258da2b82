# shellcheck shell=bash
# The "tuned" build profile of scripts/build-image.sh (the default): what makes the image
# reach sshd fast under TCG. Sourced by build-image.sh, which provides $root, $repo, $here,
# in_chroot, die and log. The "stock" profile skips all of this (Debian's defaults with the
# same packages: the untuned baseline `npm run bench:boot` compares against).
#
# Critical path to sshd in this profile:
#   kernel + small initrd → systemd → vmctl-seed-early.service (shell: host key, user,
#   authorized_keys, hostname from plain files vmctl puts on the seed) → ssh.service
# in parallel: systemd-networkd with the default network config pre-rendered (DHCP on eth0).
# cloud-init's four stages run after ssh.service, in one process (vmctl-cloud-init.service),
# and find that work already done.

# kernel command line additions (appended to the common one)
# (fsck skipped, so the root fs is mounted rw by the kernel: no remount; one 8250 UART — the
# serial console — instead of probing four)
TUNED_CMDLINE="fsck.mode=skip rw 8250.nr_uarts=1"
# The root filesystem fills the whole disk (no partition table, root=/dev/vda): growing it
# to a bigger overlay is resize2fs alone (cloud-init's resizefs; its growpart module finds no
# partition to grow), instead of growpart's ~5 s of sfdisk runs under TCG.
ROOT_LAYOUT=whole-disk
ROOT_DEV=/dev/vda
# The modules a direct-kernel boot needs before the real root runs (each with its dependencies):
# the virtio disk, plus virtio-scsi for root=/dev/sda setups, and the root fs (ext4 is built into
# the cloud kernel but a module in the generic one; crc32c for metadata_csum); the seed cdrom
# (virtio-scsi), so /dev/sr0 is there before udev runs in the real root; the NIC: eth0 exists
# before udev starts, so the early unit can put QEMU's lease on it and its udev event is in
# coldplug's prioritized "net" group instead of waiting for the virtio PCI events to load the
# driver (~9 s later under TCG)
TUNED_INITRD_MODULES=(virtio_pci virtio_blk virtio_scsi sd_mod ext4 crc32c_generic sr_mod isofs virtio_net)

tuned_before_packages() {
  # small, fast initrd: only what is needed to find a virtio disk (the cloud kernel has
  # virtio as modules, ext4 built in); no resume device probing
  mkdir -p "$root/etc/initramfs-tools/conf.d"
  cat > "$root/etc/initramfs-tools/conf.d/90vmctl.conf" <<'EOF'
MODULES=list
RESUME=none
COMPRESS=gzip
EOF
  # (the same modules go into the tuned initrd that vmctl boots: tuned_initrd below)
  { echo "# vmctl: see scripts/image/profile-tuned.sh (TUNED_INITRD_MODULES)"; printf '%s\n' "${TUNED_INITRD_MODULES[@]}"; } \
    >> "$root/etc/initramfs-tools/modules"
  # No udev in the initrd: starting udevd + coldplug + settle costs ~3 s under TCG, and is not
  # needed for root=/dev/vdXN: load_modules() modprobes the list above and devtmpfs creates
  # /dev/vda1 (root=LABEL=/UUID= would need udev's /dev/disk symlinks). Scripts under
  # /etc/initramfs-tools/scripts replace the same-named ones from /usr/share.
  local d
  for d in init-top init-bottom; do
    mkdir -p "$root/etc/initramfs-tools/scripts/$d"
    cat > "$root/etc/initramfs-tools/scripts/$d/udev" <<'EOF'
#!/bin/sh
# vmctl: replaces udev's initramfs script; udev starts in the real root (systemd-udevd).
case "$1" in prereqs) exit 0 ;; esac
exit 0
EOF
    chmod 755 "$root/etc/initramfs-tools/scripts/$d/udev"
  done
}

# tuned_initrd SRC OUT KVER: the initrd vmctl boots the tuned image with. From the initrd that
# Debian's initramfs-tools built for the image (SRC, gzip) it keeps klibc's shell and the few
# tools vmctl-initrd-init uses; the modules of TUNED_INITRD_MODULES and their dependencies come
# from the image's /lib/modules in the order modprobe resolves them. An uncompressed newc cpio
# (QEMU hands it over in memory; inflating costs under TCG), reproducible: sorted, mtime 0, root.
# ~1.5 MB instead of ~16: the kernel unpacks it in a fraction of the time, and the init is a few
# insmods and a mount instead of initramfs-tools' scripts.
tuned_initrd() {
  local src=$1 out=$2 kver=$3 d m line path
  d=$(mktemp -d "$work/initrd.XXXXXX")
  mkdir -p "$d/src" "$d/new/usr/bin" "$d/new/usr/lib" "$d/new/dev" "$d/new/proc" "$d/new/root" "$d/new/etc"
  gzip -dc "$src" | (cd "$d/src" && cpio -id --quiet --no-absolute-filenames) || die "cannot unpack $src"
  ln -s usr/bin "$d/new/bin"
  ln -s usr/lib "$d/new/lib"
  cp -a "$d/src"/usr/lib/klibc-*.so "$d/new/usr/lib/" || die "no klibc in $src"
  for m in sh mount umount insmod run-init sleep; do
    [ -f "$d/src/usr/bin/$m" ] || die "no klibc $m in $src"
    cp -a "$d/src/usr/bin/$m" "$d/new/usr/bin/"
  done
  : > "$d/new/etc/vmctl-modules"
  for m in "${TUNED_INITRD_MODULES[@]}"; do
    in_chroot modprobe --set-version "$kver" --show-depends "$m" > "$d/deps" || die "modprobe cannot resolve $m for $kver"
    while read -r line; do
      case "$line" in
        "builtin "*) continue ;;
        "insmod "*) path=${line#insmod }; path=${path%% *} ;;
        *) die "unexpected modprobe line for $m: $line" ;;
      esac
      case "$path" in /lib/modules/"$kver"/*.ko) ;; *) die "module $path is not an uncompressed .ko" ;; esac
      grep -qxF "$path" "$d/new/etc/vmctl-modules" && continue
      mkdir -p "$d/new${path%/*}"
      cp "$root$path" "$d/new$path"
      echo "$path" >> "$d/new/etc/vmctl-modules"
    done < "$d/deps"
  done
  install -m 0755 "$here/image/guest/vmctl-initrd-init" "$d/new/init"
  find "$d/new" -exec touch -h -d @0 {} +
  (cd "$d/new" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --reproducible -R 0:0 --quiet) > "$out" \
    || die "cannot pack the tuned initrd"
  chmod 0600 "$out"
  rm -rf "$d"
}

tuned_configure() {
  # cloud-init: only the modules a local VM can use (each listed module is imported at
  # boot, which costs under TCG): no snap/lxd/fan/landscape/puppet/chef/salt/rmc/byobu/
  # grub-dpkg/ssh-import-id/keyboard/rsyslog/ec2, no key fingerprints on the console (vmctl
  # pins the host key it injects; printing them costs ~2 s under TCG).
  cat > "$root/etc/cloud/cloud.cfg.d/91_vmctl-tuned.cfg" <<'EOF'
# vmctl tuned image: trimmed module lists (scripts/image/profile-tuned.sh)
cloud_init_modules:
  - seed_random
  - bootcmd
  - write-files
  - growpart
  - resizefs
  - disk_setup
  - mounts
  - set_hostname
  - update_hostname
  - update_etc_hosts
  - ca-certs
  - users-groups
  - ssh
cloud_config_modules:
  - locale
  - set-passwords
  - apt-configure
  - ntp
  - timezone
  - runcmd
cloud_final_modules:
  - package-update-upgrade-install
  - write-files-deferred
  - scripts-vendor
  - scripts-per-once
  - scripts-per-boot
  - scripts-per-instance
  - scripts-user
  - phone-home
  - final-message
  - power-state-change
EOF

  # the early unit: what sshd and a login need, from plain files on the seed, in shell
  local g=$here/image/guest
  install -d -m 0755 "$root/usr/lib/vmctl"
  install -m 0755 "$g/vmctl-seed-early" "$g/vmctl-netconf" "$g/vmctl-cloud-init" "$root/usr/lib/vmctl/"
  install -m 0644 "$g/vmctl-seed-early.service" "$g/vmctl-seed-late.service" "$g/vmctl-cloud-init.service" "$root/etc/systemd/system/"
  in_chroot systemctl enable vmctl-seed-early.service vmctl-seed-late.service vmctl-cloud-init.service
  # cloud-init's stages run after sshd, in one process (see vmctl-cloud-init.service)
  in_chroot systemctl mask cloud-init-local.service cloud-init.service cloud-config.service cloud-final.service
  # sshd starts as soon as the early unit ran (host key, user, key, address in place): not after
  # sysinit.target/basic.target (which wait for journald's flush, resolved, udev, dbus…), nor
  # network.target (resolved, networkd; sshd listens on the wildcard address), nor local-fs.target
  # and systemd-tmpfiles-setup (the root fs is mounted rw by the kernel and is all there is; sshd
  # makes /run/sshd itself, RuntimeDirectory=, and a login's utmp/wtmp records are best-effort).
  # systemd-user-sessions (which removes /run/nologin) starts once the early unit ran and
  # systemd-tmpfiles-setup made /run. sshd also skips the extra `sshd -t` run before the real
  # one (a bad config fails the start just the same). The package's units with those lines
  # changed; everything else stays Debian's.
  local ssh_deps="DefaultDependencies=no\nConflicts=shutdown.target\nBefore=shutdown.target\nAfter=vmctl-seed-early.service"
  local early_deps="DefaultDependencies=no\nConflicts=shutdown.target\nBefore=shutdown.target\nAfter=systemd-tmpfiles-setup.service systemd-sysusers.service local-fs.target vmctl-seed-early.service"
  sed -e "s/^After=network.target auditd.service$/After=auditd.service\n$ssh_deps/" \
      -e '/^ExecStartPre=\/usr\/sbin\/sshd -t$/d' \
    "$root/lib/systemd/system/ssh.service" > "$root/etc/systemd/system/ssh.service"
  sed -e "s/^After=remote-fs.target nss-user-lookup.target network.target home.mount$/After=remote-fs.target nss-user-lookup.target home.mount\n$early_deps/" \
    "$root/lib/systemd/system/systemd-user-sessions.service" > "$root/etc/systemd/system/systemd-user-sessions.service"
  grep -q '^After=vmctl-seed-early.service$' "$root/etc/systemd/system/ssh.service" \
    || die "ssh.service changed upstream: cannot reorder it after vmctl-seed-early.service"
  grep -q '^After=systemd-tmpfiles-setup.service systemd-sysusers.service local-fs.target vmctl-seed-early.service$' \
    "$root/etc/systemd/system/systemd-user-sessions.service" \
    || die "systemd-user-sessions.service changed upstream: cannot reorder it after vmctl-seed-early.service"
  # no /run/nologin at boot (systemd's tmpfiles entry, removed again by systemd-user-sessions once
  # it ran): sshd is up from the moment the early unit prepared the login, and a login that reached
  # it before systemd-user-sessions ran was refused by pam_nologin (a whole second handshake, ~1 s;
  # ordering sshd after systemd-user-sessions instead made sshd ~2 s later). At shutdown
  # systemd-user-sessions still writes /run/nologin as usual.
  [ -f "$root/usr/lib/tmpfiles.d/systemd-nologin.conf" ] || die "systemd-nologin.conf moved upstream: cannot keep /run/nologin away at boot"
  ln -sf /dev/null "$root/etc/tmpfiles.d/systemd-nologin.conf"
  # sshd (the daemon; sessions move to user.slice) gets a large CPU share during boot
  mkdir -p "$root/etc/systemd/system/ssh.service.d"
  printf '[Service]\nCPUWeight=1000\n' > "$root/etc/systemd/system/ssh.service.d/90-vmctl.conf"
  # the fallback host-key unit waits for the early unit (cloud-init now runs after sshd)
  # (and, like sshd, does not wait for sysinit.target: sshd is ordered after it)
  sed -i 's/^After=cloud-init.service$/DefaultDependencies=no\nAfter=vmctl-seed-early.service/' \
    "$root/etc/systemd/system/vmctl-ssh-hostkeys.service"
  # (resolved keeps Debian's ordering: it is ordered before sysinit.target, so delaying it
  # until after sshd would be an ordering cycle through basic.target)
  # networkd starts with exactly what cloud-init renders for vmctl's default network-config
  # (rendered here by cloud-init's own code), so the network does not wait for cloud-init
  install -m 0644 "$repo/cloud-init/network-config.yaml" "$root/tmp/vmctl-network-config.yaml"
  in_chroot python3 -c '
import yaml
from cloudinit.net import network_state, networkd
with open("/tmp/vmctl-network-config.yaml") as f:
    cfg = yaml.safe_load(f)
networkd.Renderer({}).render_network_state(network_state.parse_net_config_data(cfg))
' || die "cannot pre-render the default network config with cloud-init"
  rm -f "$root/tmp/vmctl-network-config.yaml"
  ls "$root"/etc/systemd/network/*.network >/dev/null 2>&1 || die "cloud-init rendered no .network file"

  # no root fsck at boot (fstab pass 0; the image is made fresh by mke2fs)
  sed -i 's/\t0\t1$/\t0\t0/' "$root/etc/fstab"

  # units a headless TCG guest does not need: periodic maintenance, pstore, binfmt, debug
  # and config filesystems, module loads for drm/fuse/configfs/dm/loop
  local u
  for u in apt-daily.timer apt-daily-upgrade.timer apt-daily.service apt-daily-upgrade.service \
           dpkg-db-backup.timer e2scrub_all.timer e2scrub_reap.service fstrim.timer \
           systemd-pstore.service systemd-binfmt.service proc-sys-fs-binfmt_misc.automount \
           proc-sys-fs-binfmt_misc.mount sys-kernel-debug.mount sys-kernel-tracing.mount \
           sys-kernel-config.mount sys-fs-fuse-connections.mount dev-hugepages.mount \
           dev-mqueue.mount modprobe@drm.service modprobe@fuse.service modprobe@configfs.service \
           modprobe@dm_mod.service modprobe@loop.service modprobe@efi_pstore.service; do
    in_chroot systemctl mask "$u" >/dev/null 2>&1 || true
  done
  # systemd runs every generator before it loads units (~0.2-0.4 s of emulated CPU each): the
  # ones for things this image has no use for are masked (LUKS/dm-integrity/dm-verity tables,
  # GPT auto-mounts — the disk has no partition table —, hibernation resume, offline updates)
  mkdir -p "$root/etc/systemd/system-generators"
  local gen
  # (and SysV init scripts — every one in this image has a native unit —, /etc/rc.local — there is
  # none —, systemd.run= on the command line, and gettys for the console= ttys — serial-getty@ttyS0
  # is enabled)
  for gen in systemd-cryptsetup-generator systemd-gpt-auto-generator systemd-hibernate-resume-generator \
             systemd-integritysetup-generator systemd-veritysetup-generator systemd-system-update-generator \
             systemd-sysv-generator systemd-rc-local-generator systemd-run-generator systemd-getty-generator; do
    ln -sf /dev/null "$root/etc/systemd/system-generators/$gen"
  done
  mkdir -p "$root/etc/systemd/journald.conf.d"
  cat > "$root/etc/systemd/journald.conf.d/90-vmctl.conf" <<'EOF'
[Journal]
SystemMaxUse=64M
ForwardToConsole=no
EOF
}
