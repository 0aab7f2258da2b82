/**
 * npm run bench:migrate [-- --rounds 2 --precopy-cap 90]
 *
 * On the rig's netns hosts mig1 and mig2 (scripts/test-rig.sh; or inside scripts/rig-sandbox.sh),
 * the same tiny guest (128 MiB, 16 MiB of random data in memory, counting on its console):
 * (a) `vmctl migrate` against `virsh migrate --live --p2p --persistent --undefinesource` (the same
 *     libvirt flags), both run inside the source host's netns, alternating tools and directions;
 *     total time = command start → exit, downtime = the destination's completed job statistics
 *     (virsh domjobinfo --completed) for both. Target: time ratio ≤ 1.05.
 * (b) a guest rewriting 32 MiB in a loop over a link limited to 8 MiB/s: plain pre-copy (given up
 *     after --precopy-cap seconds: it does not converge) against --postcopy-after 5.
 * --part a|b runs one part only; --trace FILE appends vmctl's trace log (every RPC call with its
 * time, NDJSON on stderr) of each part-(a) run to FILE (outside /tmp when run in rig-sandbox.sh).
 */
import { spawn } from 'node:child_process';
import { appendFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { join } from 'node:path';
import { startCounter, startDirtying } from '../test/_helpers/migrate-guest.js';
import { bootGuest, migRig, removeGuest, virsh, cleanupMigRig, type MigRig } from '../test/_helpers/migrate-rig.js';
import { repoRoot, waitForFileContains, type RigSshHost } from '../test/_helpers/rig.js';

const { values } = parseArgs({ options: { rounds: { type: 'string', default: '2' }, 'precopy-cap': { type: 'string', default: '90' }, part: { type: 'string' }, trace: { type: 'string' } } });
const rounds = Number(values.rounds);
const cap = Number(values['precopy-cap']);
const median = (xs: number[]) => {
  const a = [...xs].sort((x, y) => x - y);
  const k = a.length >> 1;
  return a.length % 2 ? a[k]! : (a[k - 1]! + a[k]!) / 2;
};

function timed(netns: string, cmd: string[], capS?: number): Promise<{ ms: number; code: number; out: string; err: string }> {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const c = spawn('ip', ['netns', 'exec', netns, ...cmd], { stdio: ['ignore', 'pipe', 'pipe'], env: process.env });
    let out = '';
    let err = '';
    c.stdout.on('data', (d: Buffer) => (out += d.toString()));
    c.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const t = capS ? setTimeout(() => c.kill('SIGINT'), capS * 1000) : undefined;
    c.on('close', (code) => {
      if (t) clearTimeout(t);
      resolve({ ms: performance.now() - t0, code: code ?? 1, out, err });
    });
  });
}

async function downtimeOn(h: RigSshHost, name: string): Promise<number | undefined> {
  const t = await virsh(h.unixUri, 'domjobinfo', name, '--completed').catch(() => '');
  const m = /Total downtime:\s+(\d+)\s*ms/.exec(t);
  return m ? Number(m[1]) : undefined;
}

const tcp = (h: RigSshHost) => `qemu+tcp://${h.addr}/system`;
const vmctlCmd = (from: RigSshHost, to: RigSshHost, name: string, extra: string[] = []) => [process.execPath, join(repoRoot, 'bin', 'vmctl.js'), '-c', from.unixUri, 'migrate', name, '--to', tcp(to), '--migrate-uri', `tcp://${to.addr}`, '--progress', 'none', ...extra];
const virshCmd = (from: RigSshHost, to: RigSshHost, name: string) => ['virsh', '-q', '-c', from.unixUri, 'migrate', '--live', '--p2p', '--persistent', '--undefinesource', name, tcp(to), '--migrateuri', `tcp://${to.addr}`];

async function partA(m: MigRig): Promise<void> {
  const name = `vmctl-bench-mig-${process.pid}`;
  const log = await bootGuest(m, m.mig1, name);
  await waitForFileContains(log, m.rig.tinyMarker, 120_000);
  await startDirtying(m.mig1.unixUri, name, log, 16, false);
  await startCounter(m.mig1.unixUri, name, log);
  const res = { vmctl: [] as number[], virsh: [] as number[], vmctlDown: [] as number[], virshDown: [] as number[] };
  // vmctl's per-host cache (VMCTL_CACHE_DIR) starts empty: its first run per direction (each host
  // reached as source over unix and as destination over tcp: two cache entries per host) is cold
  const cold: number[] = [];
  const warm: number[] = [];
  const directions = new Set<string>();
  let at = m.mig1;
  let other = m.mig2;
  for (let r = 0; r < rounds; r++) {
    const order: ('vmctl' | 'virsh')[] = r % 2 === 0 ? ['vmctl', 'virsh'] : ['virsh', 'vmctl'];
    for (const tool of order) {
      const cmd = tool === 'vmctl' ? vmctlCmd(at, other, name, values.trace ? ['--log-level', 'trace', '--log-format', 'json'] : []) : virshCmd(at, other, name);
      const x = await timed(at.netns, cmd);
      if (tool === 'vmctl' && values.trace) appendFileSync(values.trace, `# round ${r + 1} ${at.name} -> ${other.name}: ${Math.round(x.ms)} ms\n${x.err}`);
      if (x.code !== 0) throw new Error(`${tool} migrate failed: ${x.err}`);
      res[tool].push(x.ms);
      if (tool === 'vmctl') {
        const dir = `${at.name}>${other.name}`;
        (directions.has(dir) ? warm : cold).push(x.ms);
        directions.add(dir);
      }
      const d = await downtimeOn(other, name);
      if (d !== undefined) res[tool === 'vmctl' ? 'vmctlDown' : 'virshDown'].push(d);
      console.error(`[bench] round ${r + 1} ${tool} ${at.name} → ${other.name}: ${Math.round(x.ms)} ms, downtime ${d ?? '?'} ms`);
      [at, other] = [other, at];
      await new Promise((res2) => setTimeout(res2, 1000));
    }
  }
  await removeGuest(m, name);
  const vm = median(res.vmctl);
  const vs = median(res.virsh);
  console.log('\n(a) same guest, same hosts: total time (command start → exit) and downtime, medians');
  console.log('| tool | median ms | runs (ms) | downtime ms (median) |');
  console.log('|------|-----------|-----------|----------------------|');
  console.log(`| vmctl migrate (p2p) | ${Math.round(vm)} | ${res.vmctl.map(Math.round).join(', ')} | ${median(res.vmctlDown)} |`);
  console.log(`| virsh migrate --live --p2p | ${Math.round(vs)} | ${res.virsh.map(Math.round).join(', ')} | ${median(res.virshDown)} |`);
  console.log(`ratio vmctl / virsh: ${(vm / vs).toFixed(2)}x (target ≤ 1.05x)`);
  if (cold.length && warm.length) {
    console.log(`vmctl, host cache cold (first run per direction): median ${Math.round(median(cold))} ms (${cold.map(Math.round).join(', ')}), ratio ${(median(cold) / vs).toFixed(2)}x`);
    console.log(`vmctl, host cache warm (repeated runs): median ${Math.round(median(warm))} ms (${warm.map(Math.round).join(', ')}), ratio ${(median(warm) / vs).toFixed(2)}x`);
  }
}

async function partB(m: MigRig): Promise<void> {
  const rows: string[] = [];
  for (const variant of ['pre-copy', 'postcopy-after 5'] as const) {
    const name = `vmctl-bench-pc-${process.pid}-${variant === 'pre-copy' ? 'a' : 'b'}`;
    const log = await bootGuest(m, m.mig1, name, { memoryMiB: 160 });
    await waitForFileContains(log, m.rig.tinyMarker, 120_000);
    await startDirtying(m.mig1.unixUri, name, log, 32, true);
    const extra = ['--bandwidth', '8', '--json', ...(variant === 'pre-copy' ? [] : ['--postcopy-after', '5'])];
    const x = await timed(m.mig1.netns, vmctlCmd(m.mig1, m.mig2, name, extra), variant === 'pre-copy' ? cap : undefined);
    if (x.code === 0) {
      const j = JSON.parse(x.out) as { timeMs: number; downtimeMs?: number; postcopy: boolean; postcopySwitchAtMs?: number; iterations?: number };
      rows.push(`| ${variant} | yes | ${Math.round(x.ms)} | ${j.downtimeMs ?? '?'} | ${j.postcopy ? `yes, at ${((j.postcopySwitchAtMs ?? 0) / 1000).toFixed(1)} s` : 'no'} | ${j.iterations ?? '?'} |`);
    } else {
      rows.push(`| ${variant} | no: aborted (Ctrl-C) after ${cap} s, guest still on mig1 | ${Math.round(x.ms)} | — | no | — |`);
    }
    console.error(`[bench] ${variant}: exit ${x.code} after ${Math.round(x.ms)} ms`);
    await removeGuest(m, name);
  }
  console.log('\n(b) guest rewriting 32 MiB in a loop, link limited to 8 MiB/s (vmctl migrate --bandwidth 8)');
  console.log('| variant | finished | time ms | downtime ms | post-copy | iterations |');
  console.log('|---------|----------|---------|-------------|-----------|------------|');
  for (const r of rows) console.log(r);
}

const m = await migRig();
try {
  if (values.part !== 'b') await partA(m);
  if (values.part !== 'a') await partB(m);
} finally {
  await cleanupMigRig(m, []);
}
