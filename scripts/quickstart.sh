#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine (as root): install everything,
# build vmctl, put `vmctl` on PATH, build the default Debian 12 image offline
# (first run only), and boot the default VM to SSH-ready.
#   bash scripts/quickstart.sh [VM_NAME]        (default VM name: demo)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
name=${1:-demo}

step() { printf '\n== %s ==\n' "$*"; }

step "host setup (packages, npm ci, libvirtd)"
bash scripts/setup-host.sh

step "build vmctl"
npm run --silent build
mkdir -p /usr/local/bin
ln -sf "$root/bin/vmctl.js" /usr/local/bin/vmctl
echo "vmctl is $(command -v vmctl)"

step "host check"
vmctl host check || true   # informative: on this kind of host KVM is not usable and TCG is used

step "default VM '$name'"
state=$(vmctl info "$name" --json 2>/dev/null | node -e 'let s="";process.stdin.on("data",(d)=>(s+=d)).on("end",()=>{let v;try{v=JSON.parse(s).state}catch{}console.log(v??"missing")})' || true)
case "$state" in
  missing)   vmctl create "$name" --wait ssh ;;
  running)   echo "$name is already running" ;;
  *)         vmctl start "$name" --wait ssh ;;
esac

step "check: vmctl ssh $name -- hostname"
vmctl ssh "$name" -- hostname
echo
echo "Ready. Try: vmctl ssh $name    vmctl info $name    vmctl console $name    vmctl delete $name"
