/**
 * npm run bench:snapshot [-- --rounds 3 --skip-boot]
 *
 * Snapshot section (bench/snapshot-ops.ts): on a running Debian guest,
 * internal snapshot create and revert through vmctl against virsh
 * snapshot-create-as / snapshot-revert (target <= 1.1x), and vmctl's own
 * external revert. Backup section:
 * (a) backup throughput: `vmctl backup` (full, running guest: pull-mode backup
 *     job, its NBD export read once; chunks with SHA-256, fsync; also the
 *     push-mode way, VMCTL_BACKUP_VIA=push: the job copies into a scratch
 *     volume read in place) against `qemu-img convert -U -t writeback -O qcow2` of
 *     the same running disk (which also copies only the data and flushes its
 *     output), with 256 MiB and 1 GiB of data: whole-command times, and each
 *     tool's fixed cost and throughput beyond it (see throughput()), medians of
 *     alternating rounds. Target: ratio ≥ 0.8. Also incrementals: nothing
 *     changed, and 128 MiB written by the guest (through QEMU) since the last
 *     point, pulled and pushed.
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
/** what the guest writes between two incrementals (bench rows "MiB changed") */
const CHANGED_MIB = 128;
const DATA_VOL = 'tbak-bench-data.qcow2';
/** The two guests of the throughput rows: the same 4 GiB disk holding this much incompressible data. */
const SIZES = [
  { vm: TINY, vol: DATA_VOL, mib: 256 },
  { vm: `${TINY}-l`, vol: 'tbak-bench-data-l.qcow2', mib: 1024 },
];

function cleanup(): void {
  for (const d of SIZES.map((x) => x.vm)) {
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

/** A running tiny guest whose vda is a 4 GiB qcow2 holding `mib` MiB of random data in 4 places. */
function makeGuest(poolPath: string, vm: string, vol: string, mib: number): void {
  const raw = join(work, 'data.raw');
  execFileSync('truncate', ['-s', '4G', raw]);
  for (let i = 0; i < 4; i++) execFileSync('dd', ['if=/dev/urandom', `of=${raw}`, 'bs=1M', `count=${mib / 4}`, `seek=${i * 1000}`, 'conv=notrunc,sparse'], { stdio: 'ignore' });
  const q = join(work, 'data.qcow2');
  execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', '-o', 'compat=1.1', raw, q]);
  rmSync(raw);
  writeFileSync(join(work, 'vol.xml'), `<volume><name>${vol}</name><capacity>${4096 * MiB}</capacity><allocation>0</allocation><target><format type='qcow2'/><compat>1.1</compat><permissions><mode>0600</mode></permissions></target></volume>`);
  virsh('vol-create', 'vmctl', join(work, 'vol.xml'));
  virsh('vol-upload', vol, q, '--pool', 'vmctl');
  rmSync(q);
  writeFileSync(
    join(work, 'dom.xml'),
    `<domain type='qemu'><name>${vm}</name><memory unit='MiB'>96</memory><vcpu>1</vcpu><os><type arch='x86_64' machine='pc'>hvm</type><kernel>${poolPath}/tbak-bench-k.vmlinuz</kernel><initrd>${poolPath}/tbak-bench-k.initrd</initrd><cmdline>console=ttyS0 quiet</cmdline></os><devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='${poolPath}/${vol}'/><target dev='vda' bus='virtio'/></disk><serial type='pty'/><memballoon model='none'/></devices></domain>`,
  );
  virsh('define', join(work, 'dom.xml'));
  virsh('start', vm);
}

/** Where a `vmctl backup --progress json` run spent its time (ms since the operation began; the process started earlier). */
function phases(stderr: string): { job: number; store: number; sync: number; end: number; opEnd: number } {
  const ev = stderr.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { type: string; step?: string; state?: string; durationMs?: number; atMs?: number });
  const dur = (re: RegExp) => ev.filter((e) => e.type === 'step' && e.state === 'end' && re.test(e.step ?? '')).reduce((a, e) => a + (e.durationMs ?? 0), 0);
  return { job: dur(/^copy$/), store: dur(/^(download|store) /), sync: dur(/^sync /), end: dur(/^end job$/), opEnd: Math.max(0, ...ev.map((e) => e.atMs ?? 0)) };
}

/**
 * Backup throughput. Both tools copy only the data and end with it on disk: the anchor is
 * `qemu-img convert -U -t writeback -O qcow2` (qemu-img flushes its output when it closes it;
 * its default, -t unsafe, leaves the output in the page cache unflushed, also timed and shown),
 * vmctl fsyncs every file of the point. Two sizes of data on the same 4 GiB disk give each tool's
 * fixed cost per command and its throughput beyond it (MiB/s of the extra data: the slope), so the
 * whole-command ratio at 256 MiB, which the fixed costs dominate, and the throughput ratio are
 * both shown. vmctl's fixed cost includes Node's start-up, connecting, the VM's lease, the backup
 * job's setup, the checkpoint, the boot files and the manifest; the anchor has none of that (and
 * makes no point-in-time copy of a running guest: it reads the disk under the running guest).
 */
async function throughput(): Promise<void> {
  const poolPath = /<path>([^<]+)<\/path>/.exec(virsh('pool-dumpxml', 'vmctl'))![1]!;
  const tiny = process.env.VMCTL_TINY_DIR ?? join(repo, '.cache', 'tiny');
  for (const [f, v] of [['vmlinuz', 'tbak-bench-k.vmlinuz'], ['initrd.img', 'tbak-bench-k.initrd']] as const) {
    virsh('vol-create-as', 'vmctl', v, String(statSync(join(tiny, f)).size), '--format', 'raw');
    virsh('vol-upload', v, join(tiny, f), '--pool', 'vmctl');
  }
  for (const g of SIZES) makeGuest(poolPath, g.vm, g.vol, g.mib);
  const res = SIZES.map(() => ({ unsafe: [] as number[], durable: [] as number[], ours: [] as number[], push: [] as number[], job: [] as number[], store: [] as number[], sync: [] as number[], end: [] as number[], inc: [] as number[], incPull: [] as number[], incPush: [] as number[] }));
  // the guest's writes between points, through QEMU (the tiny guest does not write to vda), flushed
  const guestWrites = (vm: string, round: number) => {
    for (const c of [`write -P 0x${(0x40 + round).toString(16)} 64M ${CHANGED_MIB}M`, 'flush']) virsh('qemu-monitor-command', vm, '--hmp', `qemu-io -d /machine/peripheral/virtio-disk0/virtio-backend "${c}"`);
  };
  for (let r = 0; r < rounds; r++) {
    for (const [k, g] of SIZES.entries()) {
      const out = join(work, 'convert.qcow2');
      for (const [mode, into] of [['unsafe', res[k]!.unsafe], ['writeback', res[k]!.durable]] as const) {
        rmSync(out, { force: true });
        into.push(must(await run('qemu-img', ['convert', '-U', '-t', mode, '-O', 'qcow2', join(poolPath, g.vol), out]), 'qemu-img convert').ms);
      }
      rmSync(out, { force: true });
      const set = join(work, `set${r}`);
      const b = must(await vmctl('backup', g.vm, '--to', set, '--json', '--progress', 'json'), 'vmctl backup');
      res[k]!.ours.push(b.ms);
      const p = phases(b.err);
      res[k]!.job.push(p.job);
      res[k]!.store.push(p.store);
      res[k]!.sync.push(p.sync);
      res[k]!.end.push(p.end);
      const pushSet = join(work, `push${r}`);
      res[k]!.push.push(must(await runTimed(process.execPath, [vmctlBin, 'backup', g.vm, '--to', pushSet, '--json', '--progress', 'none'], { ...env, VMCTL_BACKUP_VIA: 'push' }), 'vmctl backup (push)').ms);
      rmSync(pushSet, { recursive: true, force: true });
      if (k === 0) {
        res[k]!.inc.push(must(await vmctl('backup', g.vm, '--to', set, '--incremental', '--json', '--progress', 'none'), 'vmctl backup --incremental').ms);
        // CHANGED_MIB written since the last point: pulled through the export's dirty bitmap, and pushed
        guestWrites(g.vm, 2 * r);
        res[k]!.incPull.push(must(await vmctl('backup', g.vm, '--to', set, '--incremental', '--json', '--progress', 'none'), 'vmctl backup --incremental (changed)').ms);
        guestWrites(g.vm, 2 * r + 1);
        res[k]!.incPush.push(must(await runTimed(process.execPath, [vmctlBin, 'backup', g.vm, '--to', set, '--incremental', '--json', '--progress', 'none'], { ...env, VMCTL_BACKUP_VIA: 'push' }), 'vmctl backup --incremental (changed, push)').ms);
      }
      rmSync(set, { recursive: true, force: true });
    }
  }
  const m = (xs: number[]) => median(xs);
  const rate = (mib: number, ms: number) => (mib * 1000) / ms;
  const [S, L] = [SIZES[0]!, SIZES[1]!];
  const [rs, rl] = [res[0]!, res[1]!];
  const slope = (a: number[], b: number[]) => ((L.mib - S.mib) * 1000) / (m(b) - m(a)); // MiB/s beyond the fixed cost
  const fixed = (a: number[], b: number[]) => m(a) - (S.mib * 1000) / slope(a, b);
  console.log(`\n### backup throughput (4 GiB disk holding ${S.mib} or ${L.mib} MiB of random data, running tiny guest; medians of ${rounds})\n`);
  console.log(`| tool | ${S.mib} MiB: median ms | MiB/s | ${L.mib} MiB: median ms | MiB/s | fixed cost ms | MiB/s beyond it | runs ${S.mib} / ${L.mib} (ms) |`);
  console.log('|------|------|------|------|------|------|------|------|');
  const row = (name: string, a: number[], b: number[]) =>
    console.log(`| ${name} | ${m(a).toFixed(0)} | ${rate(S.mib, m(a)).toFixed(0)} | ${m(b).toFixed(0)} | ${rate(L.mib, m(b)).toFixed(0)} | ${fixed(a, b).toFixed(0)} | ${slope(a, b).toFixed(0)} | ${a.map((x) => x.toFixed(0)).join(', ')} / ${b.map((x) => x.toFixed(0)).join(', ')} |`);
  row('qemu-img convert -U -t writeback (anchor: output flushed)', rs.durable, rl.durable);
  row('qemu-img convert -U (default -t unsafe: output left unflushed)', rs.unsafe, rl.unsafe);
  row('vmctl backup (full; pull mode)', rs.ours, rl.ours);
  row('vmctl backup (full; push mode, VMCTL_BACKUP_VIA=push)', rs.push, rl.push);
  console.log(`| vmctl backup --incremental (nothing changed) | ${m(rs.inc).toFixed(0)} | - | - | - | - | - | ${rs.inc.map((x) => x.toFixed(0)).join(', ')} |`);
  console.log(`| vmctl backup --incremental (${CHANGED_MIB} MiB changed; pull) | ${m(rs.incPull).toFixed(0)} | - | - | - | - | - | ${rs.incPull.map((x) => x.toFixed(0)).join(', ')} |`);
  console.log(`| vmctl backup --incremental (${CHANGED_MIB} MiB changed; push, VMCTL_BACKUP_VIA=push) | ${m(rs.incPush).toFixed(0)} | - | - | - | - | - | ${rs.incPush.map((x) => x.toFixed(0)).join(', ')} |`);
  const rest = (x: typeof rs) => m(x.ours) - m(x.job) - m(x.store) - m(x.sync) - m(x.end);
  console.log(`\nvmctl's phases (pull mode, medians, ms): push job's copy ${m(rs.job).toFixed(0)} / ${m(rl.job).toFixed(0)}, storing the data (reads, chunks, SHA-256) ${m(rs.store).toFixed(0)} / ${m(rl.store).toFixed(0)}, fsync ${m(rs.sync).toFixed(0)} / ${m(rl.sync).toFixed(0)}, ending the job ${m(rs.end).toFixed(0)} / ${m(rl.end).toFixed(0)}, the rest of the command ${rest(rs).toFixed(0)} / ${rest(rl).toFixed(0)} (${S.mib} / ${L.mib} MiB)`);
  console.log(`\nratio vmctl / qemu-img convert -t writeback (target ≥ 0.8x): whole command at ${S.mib} MiB **${(m(rs.durable) / m(rs.ours)).toFixed(2)}x**, at ${L.mib} MiB **${(m(rl.durable) / m(rl.ours)).toFixed(2)}x**, throughput beyond the fixed cost **${(slope(rs.ours, rl.ours) / slope(rs.durable, rl.durable)).toFixed(2)}x**`);
  console.log(`(against the unflushed default -t unsafe: ${(m(rs.unsafe) / m(rs.ours)).toFixed(2)}x / ${(m(rl.unsafe) / m(rl.ours)).toFixed(2)}x / ${(slope(rs.ours, rl.ours) / slope(rs.unsafe, rl.unsafe)).toFixed(2)}x)`);
  for (const g of SIZES) virsh('destroy', g.vm);
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
