# Shared by scripts/prove-fresh.sh and scripts/rig-sandbox.sh: a private world for the rig.
#   isolate_libvirt STAGE   the system libvirtd's dirs as on a machine where no libvirtd ever ran
#                           (call inside a private mount namespace)
#   cg_enter NAME           move this shell into its own cgroup NAME in every hierarchy (layout of
#                           test-rig.sh __cgroup-plan); returns 1 when no hierarchy is found
#   cg_sweep                leave them, kill whatever is still in them, remove them; LEFT = the
#                           leftovers ("pid(comm) ..."), empty if none
# Needs $rig (path of scripts/test-rig.sh).

# isolate_libvirt: the system libvirtd's dirs as on a machine where no libvirtd ever ran
isolate_libvirt() { # STAGE
  local stage=$1 d pkgdirs
  mkdir -p "$stage"
  # the package's directories under /var/{lib,cache}/libvirt, with the owners and modes the
  # machine has (its postinst chowns some), read before the tmpfs hides them
  pkgdirs=$(for p in $(dpkg-query -W -f='${Package}\n' 'libvirt*' 2>/dev/null); do dpkg -L "$p" 2>/dev/null; done \
            | grep -E '^/var/(lib|cache)/libvirt(/|$)' | sort -u | while read -r d; do
                [ -d "$d" ] && stat -c '%n %u:%g %a' "$d"; done || true)
  cp -a /etc/libvirt "$stage/etc-libvirt"
  # defined objects are machine state, not package config: no domains, nothing autostarted, no
  # pools or secrets (networks keep their definitions; their dnsmasq would start only on autostart)
  find "$stage/etc-libvirt/qemu" -maxdepth 1 -name '*.xml' -delete 2>/dev/null || true
  rm -rf "$stage/etc-libvirt/qemu/autostart" "$stage/etc-libvirt/storage" "$stage/etc-libvirt/qemu/checkpoint" \
         "$stage/etc-libvirt/qemu/snapshot"
  find "$stage/etc-libvirt" -path '*/autostart/*' -delete 2>/dev/null || true
  find "$stage/etc-libvirt/secrets" -mindepth 1 -delete 2>/dev/null || true
  mount --bind "$stage/etc-libvirt" /etc/libvirt
  mount -t tmpfs -o mode=755 prove-fresh-lib /var/lib/libvirt
  mount -t tmpfs -o mode=711 prove-fresh-cache /var/cache/libvirt
  mount -t tmpfs -o mode=755 prove-fresh-log /var/log/libvirt
  local n o m
  while read -r n o m; do
    [ -n "$n" ] || continue
    mkdir -p "$n"; chown "$o" "$n"; chmod "$m" "$n"
  done <<< "$pkgdirs"
}

CG_PLAN=()
cg_dirs() { local l; for l in "${CG_PLAN[@]}"; do printf '%s\n' "${l##*$'\t'}"; done; }
cg_pids() { local d; for d in $(cg_dirs); do [ -d "$d" ] && find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null; done | sort -un; }

cg_enter() { # NAME
  local l d
  mapfile -t CG_PLAN < <(bash "$rig" __cgroup-plan "$1")
  [ "${#CG_PLAN[@]}" -gt 0 ] || return 1
  for l in "${CG_PLAN[@]}"; do
    d=${l##*$'\t'}
    mkdir -p "$d"
    if [ -f "$d/cpuset.cpus" ] && [ -z "$(cat "$d/cpuset.cpus")" ]; then
      cat "$(dirname "$d")/cpuset.cpus" > "$d/cpuset.cpus"; cat "$(dirname "$d")/cpuset.mems" > "$d/cpuset.mems"
    fi
    echo $$ > "$d/cgroup.procs"
  done
}

# leave our cgroups, kill whatever is still in them (all of it was started from here), remove
# them. Sets LEFT to the leftovers ("pid(comm) ..."), empty if none. Not in a subshell: one
# forked before the move would stay behind in the cgroup (and count as a leftover).
LEFT=
cg_sweep() {
  local d p i
  for d in $(cg_dirs); do echo $$ > "$(dirname "$d")/cgroup.procs" 2>/dev/null || true; done
  LEFT=$(for p in $(cg_pids); do printf '%s(%s) ' "$p" "$(cat "/proc/$p/comm" 2>/dev/null)"; done)
  LEFT=${LEFT% }
  if [ -n "$LEFT" ]; then
    # shellcheck disable=SC2046
    kill $(cg_pids) 2>/dev/null || true
    for i in $(seq 1 30); do [ -z "$(cg_pids)" ] && break; sleep 0.1; done
    # shellcheck disable=SC2046
    [ -z "$(cg_pids)" ] || kill -9 $(cg_pids) 2>/dev/null || true
    sleep 0.2
  fi
  for d in $(cg_dirs); do [ ! -d "$d" ] || find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true; done
}

