/**
 * The snapshot half of `npm run bench:snapshot`: on one running guest (the
 * default template and image, booted to SSH once), internal snapshot create
 * and revert through `vmctl snapshot` against `virsh snapshot-create-as` /
 * `virsh snapshot-revert` doing the same work (internal, with memory, the
 * seed left out), alternating A B A B, whole commands timed from outside.
 * Target: ratio <= 1.1. Also times vmctl's own external revert (libvirt 9.0
 * has none to compare with).
 */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { median, runTimed } from './lib.js';

const repo = fileURLToPath(new URL('..', import.meta.url));
const vmctlBin = join(repo, 'bin', 'vmctl.js');


/** A whole command's wall time; fails when the command does. */
export async function timed(cmd: string, args: string[], env: NodeJS.ProcessEnv): Promise<number> {
  const r = await runTimed(cmd, args, env);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.err.trim().split('\n').at(-1)}`);
  return r.ms;
}

export interface SnapshotBenchRow {
  op: string;
  vmctlMs: number[];
  virshMs: number[];
}

export async function benchSnapshots(vm: string, rounds: number, env: NodeJS.ProcessEnv): Promise<{ rows: SnapshotBenchRow[]; externalRevertMs: number[] }> {
  const virsh = (...a: string[]) => execFileSync('virsh', ['-c', 'qemu:///system', ...a], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  const vmctl = (...a: string[]) => timed(process.execPath, [vmctlBin, ...a, '--progress', 'none'], env);
  const vcs = (...a: string[]) => timed('virsh', ['-c', 'qemu:///system', ...a], env);
  const create: SnapshotBenchRow = { op: 'create (internal, running, with memory)', vmctlMs: [], virshMs: [] };
  const revert: SnapshotBenchRow = { op: 'revert (internal, running)', vmctlMs: [], virshMs: [] };
  const disks = (virsh('domblklist', vm).match(/^\s*(sd[a-z]+)\s/gm) ?? []).map((s) => s.trim());
  for (let i = 0; i < rounds; i++) {
    const a = `ba${i}`;
    const b = `bb${i}`;
    // the same snapshot for both: internal, memory included, the seed cdrom left out
    const virshCreate = () => vcs('snapshot-create-as', vm, b, ...disks.flatMap((d) => ['--diskspec', `${d},snapshot=no`]));
    if (i % 2 === 0) {
      create.vmctlMs.push(await vmctl('snapshot', 'create', vm, a));
      create.virshMs.push(await virshCreate());
    } else {
      create.virshMs.push(await virshCreate());
      create.vmctlMs.push(await vmctl('snapshot', 'create', vm, a));
    }
    if (i % 2 === 0) {
      revert.vmctlMs.push(await vmctl('snapshot', 'revert', vm, a, '--running'));
      revert.virshMs.push(await vcs('snapshot-revert', vm, b, '--running'));
    } else {
      revert.virshMs.push(await vcs('snapshot-revert', vm, b, '--running'));
      revert.vmctlMs.push(await vmctl('snapshot', 'revert', vm, a, '--running'));
    }
    virsh('snapshot-delete', vm, a);
    virsh('snapshot-delete', vm, b);
  }
  // vmctl's own external revert: disk-only snapshot, revert (new overlay, redefine, start)
  const externalRevertMs: number[] = [];
  for (let i = 0; i < rounds; i++) {
    await vmctl('snapshot', 'create', vm, `be${i}`, '--no-memory');
    externalRevertMs.push(await vmctl('snapshot', 'revert', vm, `be${i}`, '--running'));
    await vmctl('snapshot', 'delete', vm, `be${i}`);
  }
  return { rows: [create, revert], externalRevertMs };
}

export function printSnapshotTable(r: { rows: SnapshotBenchRow[]; externalRevertMs: number[] }): void {
  console.log('\n| operation | vmctl median ms | virsh median ms | ratio (vmctl / virsh) | runs vmctl / virsh |');
  console.log('|---|---|---|---|---|');
  for (const row of r.rows) {
    const v = median(row.vmctlMs);
    const b = median(row.virshMs);
    console.log(`| ${row.op} | ${v.toFixed(0)} | ${b.toFixed(0)} | ${(v / b).toFixed(2)}x | ${row.vmctlMs.map((x) => x.toFixed(0)).join(', ')} / ${row.virshMs.map((x) => x.toFixed(0)).join(', ')} |`);
  }
  console.log(`| revert (external disk-only, vmctl only: libvirt 9.0 cannot) | ${median(r.externalRevertMs).toFixed(0)} | - | - | ${r.externalRevertMs.map((x) => x.toFixed(0)).join(', ')} |`);
}
