/**
 * npm run bench:snapshot [-- --rounds 3 --skip-boot]
 *
 * Snapshot section (bench/snapshot-ops.ts): on a running Debian guest,
 * internal snapshot create and revert through vmctl against virsh
 * snapshot-create-as / snapshot-revert (target <= 1.1x), and vmctl's own
 * external revert. Backup section:
 * (a) backup throughput: `vmctl backup` (full, running guest: push-mode backup
 *     job into a scratch volume, sparse download, chunking with SHA-256)
 *     against a plain `qemu-img convert -U -O qcow2` of the same running disk
 *     (which also copies only the data), bytes of guest data per second,
 *     medians of alternating rounds. Target: ratio ≥ 0.8.
 * (b) restore → SSH ready: `vmctl restore --verify-boot` of a backed-up
 *     Debian guest (rebuild + upload + start + sshd with the pinned host key)
 *     next to `vmctl create --wait ssh` of the same template (the anchor: a
 *     fresh VM to sshd). Ratio restore / create.
 * Runs on qemu:///system under TCG; guests are named tbak-bench-*, one at a time.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { median, runTimed } from './lib.js';
import { benchSnapshots, printSnapshotTable } from './snapshot-ops.js';

const { values } = parseArgs({ options: { rounds: { type: 'string', default: '3' }, 'skip-boot': { type: 'boolean', default: false } } });
const rounds = Number(values.rounds);
const repo = fileURLToPath(new URL('..', import.meta.url));
const vmctlBin = join(repo, 'bin', 'vmctl.js');
const work = mkdtempSync(join(tmpdir(), 'vmctl-bench-bak-'));
const env = { ...process.env, VMCTL_CACHE_DIR: process.env.VMCTL_CACHE_DIR ?? join(repo, '.cache'), VMCTL_DATA_DIR: join(work, 'data'), LIBVIRT_DEFAULT_URI: 'qemu:///system' };
const virsh = (...a: string[]) => execFileSync('virsh', ['-c', 'qemu:///system', ...a], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
const MiB = 1024 * 1024;
const run = (cmd: string, args: string[]) => runTimed(cmd, args, env);
const must = <T extends { code: number; err: string }>(r: T, what: string): T => {
  if (r.code !== 0) throw new Error(`${what} failed: ${r.err.trim().split('\n').slice(-3).join(' / ')}`);
  return r;
};
const vmctl = (...a: string[]) => run(process.execPath, [vmctlBin, ...a]);

const TINY = 'tbak-bench-tiny';
const DATA_VOL = 'tbak-bench-data.qcow2';
const DATA_MIB = 256;

function cleanup(): void {
  for (const d of [TINY]) {
    try {
      virsh('destroy', d);
    } catch {
      /* not running */
    }
    try {
      virsh('undefine', d, '--checkpoints-metadata');
    } catch {
      /* not defined */
    }
  }
  for (const v of virsh('vol-list', 'vmctl').split('\n').map((l) => l.trim().split(/\s+/)[0] ?? '').filter((n) => n.startsWith('tbak-bench') || n.startsWith('vmctl-bak-tbak-bench'))) {
    virsh('vol-delete', v, '--pool', 'vmctl');
  }
}

async function throughput(): Promise<void> {
  const poolPath = /<path>([^<]+)<\/path>/.exec(virsh('pool-dumpxml', 'vmctl'))![1]!;
  // a 4 GiB disk with 256 MiB of incompressible data in 4 places
  const raw = join(work, 'data.raw');
  execFileSync('truncate', ['-s', '4G', raw]);
  for (let i = 0; i < 4; i++) execFileSync('dd', ['if=/dev/urandom', `of=${raw}`, 'bs=1M', `count=${DATA_MIB / 4}`, `seek=${i * 1000}`, 'conv=notrunc,sparse'], { stdio: 'ignore' });
  const q = join(work, 'data.qcow2');
  execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', '-o', 'compat=1.1', raw, q]);
  rmSync(raw);
  writeFileSync(join(work, 'vol.xml'), `<volume><name>${DATA_VOL}</name><capacity>${4096 * MiB}</capacity><allocation>0</allocation><target><format type='qcow2'/><compat>1.1</compat><permissions><mode>0600</mode></permissions></target></volume>`);
  virsh('vol-create', 'vmctl', join(work, 'vol.xml'));
  virsh('vol-upload', DATA_VOL, q, '--pool', 'vmctl');
  rmSync(q);
  const tiny = process.env.VMCTL_TINY_DIR ?? join(repo, '.cache', 'tiny');
  for (const [f, v] of [['vmlinuz', 'tbak-bench-k.vmlinuz'], ['initrd.img', 'tbak-bench-k.initrd']] as const) {
    virsh('vol-create-as', 'vmctl', v, String(statSync(join(tiny, f)).size), '--format', 'raw');
    virsh('vol-upload', v, join(tiny, f), '--pool', 'vmctl');
  }
  writeFileSync(
    join(work, 'dom.xml'),
    `<domain type='qemu'><name>${TINY}</name><memory unit='MiB'>96</memory><vcpu>1</vcpu><os><type arch='x86_64' machine='pc'>hvm</type><kernel>${poolPath}/tbak-bench-k.vmlinuz</kernel><initrd>${poolPath}/tbak-bench-k.initrd</initrd><cmdline>console=ttyS0 quiet</cmdline></os><devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='${poolPath}/${DATA_VOL}'/><target dev='vda' bus='virtio'/></disk><serial type='pty'/><memballoon model='none'/></devices></domain>`,
  );
  virsh('define', join(work, 'dom.xml'));
  virsh('start', TINY);
  const plain: number[] = [];
  const ours: number[] = [];
  const inc: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const out = join(work, 'convert.qcow2');
    const c = must(await run('qemu-img', ['convert', '-U', '-O', 'qcow2', join(poolPath, DATA_VOL), out]), 'qemu-img convert');
    plain.push(c.ms);
    rmSync(out, { force: true });
    const set = join(work, `set${r}`);
    const b = must(await vmctl('backup', TINY, '--to', set, '--json', '--progress', 'none'), 'vmctl backup');
    ours.push(b.ms);
    const i = must(await vmctl('backup', TINY, '--to', set, '--incremental', '--json', '--progress', 'none'), 'vmctl backup --incremental');
    inc.push(i.ms);
    rmSync(set, { recursive: true, force: true });
  }
  const rate = (ms: number) => (DATA_MIB * 1000) / ms;
  console.log(`\n### backup throughput (4 GiB disk, ${DATA_MIB} MiB of data, running tiny guest; medians of ${rounds})\n`);
  console.log('| tool | median ms | MiB/s of data | runs (ms) |');
  console.log('|------|-----------|---------------|-----------|');
  console.log(`| qemu-img convert -U -O qcow2 (anchor) | ${median(plain).toFixed(0)} | ${rate(median(plain)).toFixed(0)} | ${plain.map((x) => x.toFixed(0)).join(', ')} |`);
  console.log(`| vmctl backup (full) | ${median(ours).toFixed(0)} | ${rate(median(ours)).toFixed(0)} | ${ours.map((x) => x.toFixed(0)).join(', ')} |`);
  console.log(`| vmctl backup --incremental (nothing changed) | ${median(inc).toFixed(0)} | - | ${inc.map((x) => x.toFixed(0)).join(', ')} |`);
  console.log(`\nratio vmctl backup / qemu-img convert throughput: **${(median(plain) / median(ours)).toFixed(2)}x** (target ≥ 0.8x)`);
  virsh('destroy', TINY);
}

async function restoreToSsh(): Promise<void> {
  const vm = 'tbak-bench-deb';
  const c = must(await vmctl('create', vm, '--wait', 'ssh', '--json', '--progress', 'none'), 'vmctl create');
  const created = JSON.parse(c.out) as { phases: { phase: string; atMs: number }[] };
  // the same running guest first serves the snapshot rows
  console.log(`\n### snapshots (running Debian guest, TCG; medians of ${rounds})`);
  printSnapshotTable(await benchSnapshots(vm, rounds, env));
  const set = join(work, 'dset');
  must(await vmctl('backup', vm, '--to', set, '--progress', 'none'), 'vmctl backup');
  must(await vmctl('delete', vm), 'vmctl delete');
  const r = must(await vmctl('restore', set, '--verify-boot', '--json', '--progress', 'none'), 'vmctl restore --verify-boot');
  const restored = JSON.parse(r.out) as { phases: { phase: string; atMs: number }[]; durationMs: number };
  must(await vmctl('delete', vm), 'vmctl delete');
  const at = (p: { phase: string; atMs: number }[], n: string) => p.find((x) => x.phase === n)?.atMs ?? NaN;
  console.log('\n### restore → SSH ready (Debian guest, TCG)\n');
  console.log('| phase | vmctl restore --verify-boot (ms) | vmctl create --wait ssh (ms, anchor) | ratio |');
  console.log('|-------|----------------------------------|--------------------------------------|-------|');
  for (const p of ['started', 'sshd']) console.log(`| ${p} | ${at(restored.phases, p)} | ${at(created.phases, p)} | ${(at(restored.phases, p) / at(created.phases, p)).toFixed(2)}x |`);
}

try {
  cleanup();
  await throughput();
  cleanup();
  if (!values['skip-boot']) await restoreToSsh();
} finally {
  cleanup();
  rmSync(work, { recursive: true, force: true });
}
