/**
 * npm run bench:snapshot [-- --rounds 3]
 *
 * One guest (default template and image, booted to SSH once, under TCG), one
 * run: snapshot create/revert against virsh (bench/snapshot-ops.ts; target
 * <= 1.1x). Ratios are whole-command medians of alternating rounds measured in
 * the same run.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { benchSnapshots, printSnapshotTable, timed } from './snapshot-ops.js';

const { values } = parseArgs({ options: { rounds: { type: 'string', default: '3' } } });
const rounds = Number(values.rounds);
const repo = fileURLToPath(new URL('..', import.meta.url));
const vmctlBin = join(repo, 'bin', 'vmctl.js');
const dataDir = mkdtempSync(join(tmpdir(), 'vmctl-bench-snap-'));
const env = { ...process.env, VMCTL_CACHE_DIR: process.env.VMCTL_CACHE_DIR ?? join(repo, '.cache'), VMCTL_DATA_DIR: dataDir, LIBVIRT_DEFAULT_URI: 'qemu:///system' };
const VM = 'bench-snap';

const domains = () => execFileSync('virsh', ['-c', 'qemu:///system', 'list', '--all', '--name'], { encoding: 'utf8' }).split('\n');
if (domains().includes(VM)) throw new Error(`${VM} exists: remove it first (vmctl delete ${VM})`);
try {
  const boot = await timed(process.execPath, [vmctlBin, 'create', VM, '--accel', 'tcg', '--wait', 'ssh', '--progress', 'none'], env);
  console.log(`guest ${VM} up (create → ssh) in ${(boot / 1000).toFixed(1)} s; ${rounds} rounds`);
  printSnapshotTable(await benchSnapshots(VM, rounds, env));
} finally {
  await timed(process.execPath, [vmctlBin, 'delete', VM], env).catch(() => undefined);
  rmSync(dataDir, { recursive: true, force: true });
}
