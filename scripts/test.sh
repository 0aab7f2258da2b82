#!/usr/bin/env bash
# The whole test suite on a fresh Debian 12 machine (as root): installs what it
# needs, starts libvirtd and the test rig, builds, lints, and runs every test
# against the real daemon. A missing daemon or QEMU fails the run; nothing is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

step() { printf '\n== %s ==\n' "$*"; }

step "host setup (packages, npm ci, libvirtd)"
bash scripts/setup-host.sh

# Nothing below may rely on state an earlier run left (/run/sshd, /run/netns, pid files, the
# rig's PKI and keys, caches): this proves setup + rig from an empty /run, /tmp and rig dir, in
# private mount + network namespaces (~55 s; never touches the real rig or the main libvirtd).
step "from nothing: setup + rig in an empty /run (scripts/prove-fresh.sh)"
bash scripts/prove-fresh.sh

step "build, typecheck, lint"
npm run --silent build
npm run --silent typecheck
npm run --silent lint

step "test rig (tiny guest, sshd, tcp/tls libvirtd)"
bash scripts/build-tiny-guest.sh
# before `up`: a rig that comes up half-way is stopped again too
cleanup() { bash scripts/test-rig.sh down >/dev/null 2>&1 || true; }
trap cleanup EXIT
bash scripts/test-rig.sh up

step "vitest"
mkdir -p .cache
results=.cache/test-results.json
rm -f "$results"
set +e
npx vitest run --reporter=default --reporter=json --outputFile.json="$results" "$@"
rc=$?
set -e

# One plain closing line, and skipped tests count as failures (a skip is not a pass).
node -e '
const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
const skipped = r.numPendingTests + (r.numTodoTests || 0);
console.log(`tests: ${r.numPassedTests} passed, ${r.numFailedTests + skipped} failed` + (skipped ? ` (${skipped} skipped tests counted as failed)` : ""));
if (r.numTotalTests === 0) { console.error("no test ran"); process.exit(1); }
process.exit(skipped > 0 ? 1 : 0);
' "$results" || rc=1
exit "$rc"
