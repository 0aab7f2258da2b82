/**
 * vmctl backup / verify / prune / restore against the real libvirtd (TCG), with
 * the tiny busybox guest and a 4 GiB qcow2 data disk holding 150 MiB of data:
 * a running guest's full backups pulled from the job's NBD export (and pushed
 * when pull mode cannot start), incrementals pulled through the export's dirty bitmap,
 * sizes, modes, verify refusing a flipped byte and a truncated file, kill -9 and
 * Ctrl-C mid-backup in both modes, encryption, prune, disk full, restore as a copy.
 */
import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync, openSync, writeSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { repoRoot } from '../_helpers/rig.js';
import { defineTinyDataGuest } from '../_helpers/tiny-data-guest.js';
import { ensureBuilt, startVmctl, vmctl } from '../_helpers/vmctl.js';

const tag = `tbak-${process.pid.toString(36)}${Date.now().toString(36).slice(-4)}`;
const VM = `${tag}-vm`;
const COPY = `${tag}-copy`;
const virsh = (...args: string[]) => execFileSync('virsh', ['-c', 'qemu:///system', ...args], { encoding: 'utf8' });
const volumes = () => virsh('vol-list', 'vmctl').split('\n').slice(2).map((l) => l.trim().split(/\s+/)[0]!).filter(Boolean);
const checkpoints = (dom: string) => virsh('checkpoint-list', dom, '--name').split('\n').map((s) => s.trim()).filter(Boolean);
const MiB = 1024 * 1024;

interface BackupJson {
  point: string;
  kind: string;
  via: string;
  parent?: string;
  storedBytes: number;
  disks: { target: string; virtualSize: number; dataBytes: number }[];
  consistency: { quiesced: boolean; how: string };
  notes: string[];
}

describe('vmctl backup and restore (tiny guest, TCG)', () => {
  let work: string;
  let env: NodeJS.ProcessEnv;
  let poolPath: string;
  const set = () => join(work, 'set');
  // pull-mode backups' socket directories (QEMU's user must reach them: not under the private work dir)
  const nbdDir = `/run/vmctl/${tag}-nbd`;
  const sockets = () => (existsSync(nbdDir) ? readdirSync(nbdDir) : []);

  beforeAll(() => {
    ensureBuilt();
    work = mkdtempSync(join(tmpdir(), 'vmctl-bak-'));
    env = { VMCTL_DATA_DIR: join(work, 'data'), VMCTL_CACHE_DIR: join(repoRoot, '.cache'), LIBVIRT_DEFAULT_URI: 'qemu:///system', VMCTL_NBD_DIR: nbdDir };
    poolPath = defineTinyDataGuest(virsh, { tag, vm: VM, work, writes: ['write -P 0x11 0 100M', 'write -P 0x22 2G 50M'] }).poolPath;
  });

  afterAll(() => {
    for (const d of [VM, COPY]) {
      try {
        virsh('destroy', d);
      } catch {
        /* not running */
      }
      try {
        virsh('undefine', d, '--checkpoints-metadata', '--snapshots-metadata');
      } catch {
        /* gone */
      }
    }
    for (const v of volumes().filter((n) => n.startsWith(tag) || n.includes(`-${tag}-`))) virsh('vol-delete', v, '--pool', 'vmctl');
    rmSync(work, { recursive: true, force: true });
    rmSync(nbdDir, { recursive: true, force: true });
  });

  /** vmctl backup, Ctrl-C'd (once: a second one quits at once) while it waits at its mid-download fault point */
  const ctrlCMidDownload = async (extra: string[]) => {
    const child = spawn(process.execPath, [join(repoRoot, 'bin', 'vmctl.js'), 'backup', VM, '--to', set(), ...extra], {
      env: { ...process.env, ...env, VMCTL_FAULT: 'backup:mid-download:sleep=3000' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    let sent = false;
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
      if (!sent && /fault point backup:mid-download/.test(stderr)) {
        sent = true;
        child.kill('SIGINT');
      }
    });
    const code = await new Promise<number | null>((res) => child.on('close', res));
    return { code, stderr };
  };

  const backup = async (extra: string[] = [], e: NodeJS.ProcessEnv = {}) => vmctl(['backup', VM, '--to', set(), '--json', ...extra], { env: { ...env, ...e }, timeoutMs: 300_000 });

  it('backs up the running guest from its NBD export: as big as its data (not its 4 GiB), 0700/0600, said crash-consistent without an agent', { timeout: 300_000 }, async () => {
    const r = await backup();
    expect(r.code, r.stderr).toBe(0);
    const b = JSON.parse(r.stdout) as BackupJson;
    expect(b.kind).toBe('full');
    expect(b.via).toBe('pull');
    expect(sockets()).toEqual([]);
    expect(virsh('domjobinfo', VM)).toMatch(/Job type:\s+None/);
    expect(b.disks[0]!.virtualSize).toBe(4 * 1024 * MiB);
    expect(Math.abs(b.disks[0]!.dataBytes - 150 * MiB)).toBeLessThan(4 * MiB);
    expect(Math.abs(b.storedBytes - 150 * MiB)).toBeLessThan(40 * MiB); // + kernel and initrd (~9 MiB)
    expect(b.consistency.quiesced).toBe(false);
    expect(r.stderr).toMatch(/crash-consistent only/);
    expect(virsh('domstate', VM).trim()).toBe('running');
    expect(checkpoints(VM)).toEqual([`vmctl-bak-${b.point.toLowerCase()}`]);
    expect(volumes().filter((v) => v.startsWith(`vmctl-bak-${VM}-`))).toEqual([]);
    const walk = (p: string): void => {
      const st = statSync(p);
      expect(st.mode & 0o777, p).toBe(st.isDirectory() ? 0o700 : 0o600);
      if (st.isDirectory()) for (const e of readdirSync(p)) walk(join(p, e));
    };
    walk(set());
    const v = await vmctl(['backup', 'verify', set()], { env });
    expect(v.code, v.stdout + v.stderr).toBe(0);
    expect(v.stdout).toMatch(/^OK: 1 points/);
  });

  it('pushed and downloaded through the volume stream (as from a remote host) the disk is stored the same as when pulled', { timeout: 300_000 }, async () => {
    // a daemon on this machine: a full backup is pulled; VMCTL_BACKUP_VIA=stream takes the remote hosts' way (push, then the volume stream)
    const other = join(work, 'set-stream');
    const r = await vmctl(['backup', VM, '--to', other, '--json', '--progress', 'json'], { env: { ...env, VMCTL_BACKUP_VIA: 'stream' }, timeoutMs: 300_000 });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/"step":"download vda"/);
    const b = JSON.parse(r.stdout) as BackupJson;
    expect(b.via).toBe('push');
    try {
      // the guest's data as 64 KiB blocks (offset -> sha256, zero blocks left out): how the pieces fall
      // depends on where the backup job happened to put each cluster in the scratch file
      const blocks = (d: string) => {
        const id = readdirSync(join(d, 'points')).find((p) => p.endsWith('-full'))!;
        const m = JSON.parse(readFileSync(join(d, 'points', id, 'manifest.json'), 'utf8')) as { files: { role: string; path: string; chunks: { o: number; n: number; at: number; sz: number }[] }[] };
        const f = m.files.find((x) => x.role === 'disk')!;
        const data = readFileSync(join(d, 'points', id, f.path));
        const out = new Map<number, string>();
        const B = 64 * 1024;
        for (const c of f.chunks) {
          expect(c.o % B).toBe(0);
          for (let k = 0; k < c.n; k += B) {
            const blk = data.subarray(c.at + k, c.at + Math.min(k + B, c.n));
            if (blk.some((x) => x !== 0)) out.set(c.o + k, createHash('sha256').update(blk).digest('hex'));
          }
        }
        return [...out.entries()].sort((x, y) => x[0] - y[0]);
      };
      const a = blocks(other);
      expect(a.length).toBe((150 * MiB) / (64 * 1024));
      expect(a).toEqual(blocks(set())); // the guest does not write to vda
      expect(volumes().filter((v) => v.startsWith(`vmctl-bak-${VM}-`))).toEqual([]);
    } finally {
      virsh('checkpoint-delete', VM, `vmctl-bak-${b.point.toLowerCase()}`); // that set's checkpoint: the next tests count checkpoints
    }
    rmSync(other, { recursive: true, force: true });
  });

  it('an incremental holds only what changed (nothing here), and list shows its chain', { timeout: 300_000 }, async () => {
    const r = await backup(['--incremental']);
    expect(r.code, r.stderr).toBe(0);
    const b = JSON.parse(r.stdout) as BackupJson;
    expect(b.kind).toBe('incremental');
    expect(b.via).toBe('pull');
    expect(b.parent).toMatch(/-full$/);
    expect(b.disks[0]!.dataBytes).toBeLessThan(MiB);
    expect(checkpoints(VM)).toEqual([`vmctl-bak-${b.point.toLowerCase()}`]); // the older checkpoint is gone
    const l = await vmctl(['backup', 'list', set(), '--json'], { env });
    const points = (JSON.parse(l.stdout) as { points: { id: string; kind: string; chain: string[] }[] }).points;
    expect(points.map((p) => p.kind)).toEqual(['full', 'incremental']);
    expect(points[1]!.chain).toEqual([points[0]!.id, points[1]!.id]);
  });

  it('an incremental of a disk written meanwhile is pulled through the export\'s dirty bitmap: only those blocks (zeroed ones as zeros); restored at that point it reads back what was written', { timeout: 300_000 }, async () => {
    // the guest's own writes, through QEMU (the tiny guest does not write to vda): 8 MiB over data that
    // was there, 1 MiB zeroed; flushed, so the file read from outside (-U) shows them too
    const io = (cmd: string) => virsh('qemu-monitor-command', VM, '--hmp', `qemu-io -d /machine/peripheral/virtio-disk0/virtio-backend "${cmd}"`);
    for (const w of ['write -P 0x44 8M 8M', 'write -z 0 1M', 'flush']) expect(io(w).trim()).toBe('');
    const r = await backup(['--incremental']);
    expect(r.code, r.stderr).toBe(0);
    const b = JSON.parse(r.stdout) as BackupJson;
    expect([b.kind, b.via]).toEqual(['incremental', 'pull']);
    expect(b.disks[0]!.dataBytes).toBe(8 * MiB);
    expect(sockets()).toEqual([]);
    expect(virsh('domjobinfo', VM)).toMatch(/Job type:\s+None/);
    expect(checkpoints(VM)).toEqual([`vmctl-bak-${b.point.toLowerCase()}`]);
    expect(volumes().filter((v) => v.startsWith(`vmctl-bak-${VM}-`))).toEqual([]);
    const at = `${tag}-at`;
    const rr = await vmctl(['restore', set(), '--at', b.point, '--name', at], { env, timeoutMs: 300_000 });
    expect(rr.code, rr.stderr).toBe(0);
    const file = join(poolPath, `${at}-vda.qcow2`);
    for (const check of ['read -P 0 0 1M', 'read -P 0x11 1M 7M', 'read -P 0x44 8M 8M', 'read -P 0x11 16M 84M', 'read -P 0 100M 1M', 'read -P 0x22 2G 50M']) {
      const out = execFileSync('qemu-io', ['-r', '-f', 'qcow2', '-c', check, file], { encoding: 'utf8' });
      expect(out, check).not.toMatch(/Pattern verification failed/);
    }
    expect((await vmctl(['delete', at], { env })).code).toBe(0);
  });

  it('verify refuses a flipped byte and a truncated disk file, naming file and offset; restore refuses before creating anything', { timeout: 300_000 }, async () => {
    const bad = join(work, 'bad');
    cpSync(set(), bad, { recursive: true });
    const full = readdirSync(join(bad, 'points')).find((p) => p.endsWith('-full'))!;
    const diskFile = join(bad, 'points', full, 'disks', 'vda');
    const at = 5 * MiB + 123;
    const fd = openSync(diskFile, 'r+');
    const b = Buffer.alloc(1);
    execFileSync('true');
    writeSync(fd, Buffer.from([readFileSync(diskFile).subarray(at, at + 1)[0]! ^ 0xff]), 0, 1, at);
    closeSync(fd);
    void b;
    const v = await vmctl(['backup', 'verify', bad], { env });
    expect(v.code).not.toBe(0);
    expect(v.stdout).toContain(diskFile);
    const manifest = JSON.parse(readFileSync(join(bad, 'points', full, 'manifest.json'), 'utf8')) as { files: { path: string; chunks: { o: number; at: number; sz: number }[] }[] };
    const hit = manifest.files.find((f) => f.path === 'disks/vda')!.chunks.find((c) => c.at <= at && at < c.at + c.sz)!;
    expect(v.stdout).toContain(`at offset ${hit.o}: chunk at offset ${hit.o} (file offset ${hit.at}): checksum mismatch in stored bytes ${hit.at}..${hit.at + hit.sz}`);
    const before = volumes();
    const r = await vmctl(['restore', bad, '--name', `${tag}-never`], { env });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/refusing to restore from a damaged backup/);
    expect(volumes()).toEqual(before);
    expect(virsh('list', '--all', '--name')).not.toContain(`${tag}-never`);

    cpSync(set(), bad, { recursive: true, force: true });
    truncateSync(diskFile, 100 * MiB);
    const t = await vmctl(['backup', 'verify', bad, '--json'], { env });
    expect(t.code).toBe(2);
    const problems = (JSON.parse(t.stdout) as { error: { problems: { file: string; offset: number; problem: string }[] } }).error.problems;
    expect(problems[0]).toMatchObject({ file: diskFile });
    expect(problems[0]!.problem).toMatch(/truncated: 104857600 of/);
    expect(problems[0]!.offset).toBe(2048 * MiB); // the first chunk not (wholly) there: the 50 MiB at 2 GiB
  });

  it('kill -9 mid-download (push mode): the guest runs on, no block job; the next backup removes the stray checkpoint and scratch volume and works', { timeout: 300_000 }, async () => {
    // push mode: no guard process cleans up after it (a pull-mode kill: below), the next backup does
    const r = await backup(['--incremental'], { VMCTL_FAULT: 'backup:mid-download:kill', VMCTL_BACKUP_VIA: 'push' });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/fault point backup:mid-download/);
    expect(virsh('domstate', VM).trim()).toBe('running');
    expect(virsh('domjobinfo', VM)).toMatch(/Job type:\s+None/);
    expect(checkpoints(VM).length).toBe(2); // the killed run's is still there…
    expect(volumes().some((v) => v.startsWith(`vmctl-bak-${VM}-`))).toBe(true);
    expect(readdirSync(join(set(), 'points')).some((p) => p.startsWith('.partial-'))).toBe(true);
    const next = await backup(['--incremental']);
    expect(next.code, next.stderr).toBe(0);
    const b = JSON.parse(next.stdout) as BackupJson;
    expect(b.kind).toBe('incremental');
    expect(b.notes.join('\n')).toMatch(/removed what an interrupted backup .* left: checkpoint vmctl-bak-/);
    expect(checkpoints(VM)).toEqual([`vmctl-bak-${b.point.toLowerCase()}`]); // …and gone now
    expect(volumes().filter((v) => v.startsWith(`vmctl-bak-${VM}-`))).toEqual([]);
    expect(readdirSync(join(set(), 'points')).filter((p) => p.startsWith('.partial-'))).toEqual([]);
  });

  it('kill -9 right after the checkpoint was made (push mode): the same', { timeout: 300_000 }, async () => {
    const r = await backup(['--incremental'], { VMCTL_FAULT: 'backup:after-checkpoint:kill', VMCTL_BACKUP_VIA: 'push' });
    expect(r.code).not.toBe(0);
    expect(virsh('domstate', VM).trim()).toBe('running');
    const next = await backup(['--incremental']);
    expect(next.code, next.stderr).toBe(0);
    const b = JSON.parse(next.stdout) as BackupJson;
    expect(virsh('domjobinfo', VM)).toMatch(/Job type:\s+None/);
    expect(checkpoints(VM)).toEqual([`vmctl-bak-${b.point.toLowerCase()}`]);
    expect(volumes().filter((v) => v.startsWith(`vmctl-bak-${VM}-`))).toEqual([]);
  });

  it('Ctrl-C during the download undoes it all: exit 130, no new checkpoint, no scratch volume, no partial point', { timeout: 300_000 }, async () => {
    const before = checkpoints(VM);
    const { code, stderr } = await ctrlCMidDownload(['--incremental']);
    expect(code, stderr).toBe(130);
    expect(checkpoints(VM)).toEqual(before);
    expect(volumes().filter((v) => v.startsWith(`vmctl-bak-${VM}-`))).toEqual([]);
    expect(readdirSync(join(set(), 'points')).filter((p) => p.startsWith('.partial-'))).toEqual([]);
    expect(virsh('domstate', VM).trim()).toBe('running');
  });

  /**
   * A full (pull-mode) backup killed at `point`: the guest runs on, and the guard process (a pull job
   * would otherwise run until the next backup) ends the job and removes checkpoint, scratch volume,
   * socket, record and partial point once vmctl is gone.
   */
  const killedPullLeavesNothing = async (point: string, extra: string[] = []) => {
    const before = checkpoints(VM);
    const r = await backup(extra, { VMCTL_FAULT: `backup:${point}:kill` });
    expect(r.code, point).not.toBe(0);
    expect(r.stderr).toMatch(new RegExp(`fault point backup:${point}`));
    expect(virsh('domstate', VM).trim()).toBe('running');
    const t0 = Date.now();
    const clean = () => /Job type:\s+None/.test(virsh('domjobinfo', VM)) && sockets().length === 0 && !virsh('dumpxml', VM).includes('https://vmctl.dev/xmlns/backup/1');
    while (!clean() && Date.now() - t0 < 60_000) await new Promise((res) => setTimeout(res, 250));
    expect(virsh('domjobinfo', VM), point).toMatch(/Job type:\s+None/);
    expect(sockets(), point).toEqual([]);
    expect(virsh('dumpxml', VM), point).not.toContain('https://vmctl.dev/xmlns/backup/1');
    expect(checkpoints(VM), point).toEqual(before);
    expect(volumes().filter((v) => v.startsWith(`vmctl-bak-${VM}-`)), point).toEqual([]);
    expect(readdirSync(join(set(), 'points')).filter((p) => p.startsWith('.partial-')), point).toEqual([]);
  };

  it('kill -9 of a full backup after its scratch volume, and after its job began: the guard leaves nothing either time', { timeout: 300_000 }, async () => {
    await killedPullLeavesNothing('after-scratch');
    await killedPullLeavesNothing('after-checkpoint');
  });

  it('kill -9 while a full backup reads the export: the guard ends the job at once and removes checkpoint, scratch volume, socket and partial point; the next backup works', { timeout: 300_000 }, async () => {
    await killedPullLeavesNothing('mid-download');
    const next = await backup();
    expect(next.code, next.stderr).toBe(0);
    const b = JSON.parse(next.stdout) as BackupJson;
    expect([b.kind, b.via]).toEqual(['full', 'pull']);
    expect(b.notes.join('\n')).not.toMatch(/interrupted backup/); // nothing was left for it
    expect(checkpoints(VM)).toEqual([`vmctl-bak-${b.point.toLowerCase()}`]); // a full replaces the set's older ones
    expect(sockets()).toEqual([]);
  });

  it('kill -9 while an incremental reads the export: the guard leaves nothing either; the next incremental works', { timeout: 300_000 }, async () => {
    await killedPullLeavesNothing('mid-download', ['--incremental']);
    const next = await backup(['--incremental']);
    expect(next.code, next.stderr).toBe(0);
    const b = JSON.parse(next.stdout) as BackupJson;
    expect([b.kind, b.via]).toEqual(['incremental', 'pull']);
    expect(checkpoints(VM)).toEqual([`vmctl-bak-${b.point.toLowerCase()}`]);
    expect(sockets()).toEqual([]);
  });

  it('Ctrl-C while a full backup reads the export: exit 130, the job ended, no new checkpoint, scratch volume, socket or partial point', { timeout: 300_000 }, async () => {
    const before = checkpoints(VM);
    const { code, stderr } = await ctrlCMidDownload([]);
    expect(code, stderr).toBe(130);
    expect(virsh('domjobinfo', VM)).toMatch(/Job type:\s+None/);
    expect(checkpoints(VM)).toEqual(before);
    expect(volumes().filter((v) => v.startsWith(`vmctl-bak-${VM}-`))).toEqual([]);
    expect(sockets()).toEqual([]);
    expect(readdirSync(join(set(), 'points')).filter((p) => p.startsWith('.partial-'))).toEqual([]);
    expect(virsh('domstate', VM).trim()).toBe('running');
  });

  it('when QEMU cannot make the export socket, the backup says so and is pushed instead, leaving nothing behind', { timeout: 300_000 }, async () => {
    // a socket directory under the 0700 work directory: QEMU's user cannot reach it
    const hidden = join(work, 'nbd');
    const r = await backup([], { VMCTL_NBD_DIR: hidden });
    expect(r.code, r.stderr).toBe(0);
    const b = JSON.parse(r.stdout) as BackupJson;
    expect([b.kind, b.via]).toEqual(['full', 'push']);
    expect(r.stderr).toMatch(/pull-mode backup could not start \(.*\): pushing into scratch volumes instead/);
    expect(readdirSync(hidden)).toEqual([]);
    expect(virsh('domjobinfo', VM)).toMatch(/Job type:\s+None/);
    expect(checkpoints(VM)).toEqual([`vmctl-bak-${b.point.toLowerCase()}`]);
    expect(volumes().filter((v) => v.startsWith(`vmctl-bak-${VM}-`))).toEqual([]);
    expect((await vmctl(['backup', 'verify', set()], { env })).code).toBe(0);
  });

  it('prune --keep-last 1 keeps the chain the newest incremental needs and removes the older chain', { timeout: 300_000 }, async () => {
    const full = JSON.parse((await backup()).stdout) as BackupJson;
    const inc = JSON.parse((await backup(['--incremental'])).stdout) as BackupJson;
    expect([full.kind, inc.kind, inc.parent]).toEqual(['full', 'incremental', full.point]);
    const l = JSON.parse((await vmctl(['backup', 'list', set(), '--json'], { env })).stdout) as { points: { id: string }[] };
    const r = await vmctl(['backup', 'prune', set(), '--keep-last', '1', '--json'], { env });
    expect(r.code, r.stderr).toBe(0);
    const p = JSON.parse(r.stdout) as { kept: string[]; removed: string[]; keptForChains: string[] };
    expect(p.kept).toEqual([full.point, inc.point]);
    expect(p.keptForChains).toEqual([full.point]);
    expect(p.removed).toEqual(l.points.map((x) => x.id).filter((id) => id !== full.point && id !== inc.point));
    expect(p.removed.length).toBeGreaterThan(2);
    expect((await vmctl(['backup', 'verify', set()], { env })).code).toBe(0);
  });

  it('restores the newest point as a copy: identical disk (written in place: the daemon is local), fresh UUID, the boot files as its own volumes', { timeout: 300_000 }, async () => {
    const r = await vmctl(['restore', set(), '--name', COPY, '--json', '--progress', 'json'], { env, timeoutMs: 300_000 });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(new RegExp(`"step":"write ${COPY}-vda.qcow2"`));
    expect(r.stderr).not.toMatch(new RegExp(`"step":"upload ${COPY}-vda.qcow2"`));
    const res = JSON.parse(r.stdout) as { freshIdentity: boolean; volumes: { name: string }[]; uuid: string };
    expect(res.freshIdentity).toBe(true);
    expect(res.volumes.map((v) => v.name).sort()).toEqual([`${COPY}-boot.initrd`, `${COPY}-boot.vmlinuz`, `${COPY}-vda.qcow2`]);
    expect(res.uuid).not.toBe(virsh('domuuid', VM).trim());
    execFileSync('qemu-img', ['compare', '-U', join(poolPath, `${tag}-data.qcow2`), join(poolPath, `${COPY}-vda.qcow2`)]);
    const info = execFileSync('qemu-img', ['info', join(poolPath, `${COPY}-vda.qcow2`)], { encoding: 'utf8' });
    expect(info).not.toMatch(/backing file/);
    const again = await vmctl(['restore', set(), '--name', COPY], { env });
    expect(again.code).toBe(4);
    expect(again.stderr).toMatch(/already exists .* restore never touches an existing VM/);
    virsh('start', COPY);
    expect(virsh('domstate', COPY).trim()).toBe('running');
    virsh('destroy', COPY);
  });

  it('through volume streams (as to a remote host) the restored disk is the same', { timeout: 300_000 }, async () => {
    const streamed = `${tag}-streamed`;
    const r = await vmctl(['restore', set(), '--name', streamed, '--json', '--progress', 'json'], { env: { ...env, VMCTL_BACKUP_VIA: 'stream' }, timeoutMs: 300_000 });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(new RegExp(`"step":"upload ${streamed}-vda.qcow2"`));
    execFileSync('qemu-img', ['compare', '-U', join(poolPath, `${tag}-data.qcow2`), join(poolPath, `${streamed}-vda.qcow2`)]);
    expect((await vmctl(['delete', streamed], { env })).code).toBe(0);
    expect(volumes().filter((v) => v.startsWith(`${streamed}-`))).toEqual([]);
  });

  it('restore killed after the volumes leaves an incomplete VM that list shows and delete removes with exactly its volumes', { timeout: 300_000 }, async () => {
    const half = `${tag}-half`;
    const r = await vmctl(['restore', set(), '--name', half], { env: { ...env, VMCTL_FAULT: 'restore:after-volumes:kill' }, timeoutMs: 300_000 });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/fault point restore:after-volumes/);
    const l = JSON.parse((await vmctl(['list', '--all', '--json'], { env })).stdout) as { name: string; incomplete?: { op: string; step: string } }[];
    expect(l.find((v) => v.name === half)?.incomplete).toMatchObject({ op: 'restore', step: 'volumes' });
    expect(volumes().filter((v) => v.startsWith(`${half}-`)).length).toBe(3);
    const d = await vmctl(['delete', half], { env });
    expect(d.code, d.stderr).toBe(0);
    expect(volumes().filter((v) => v.startsWith(`${half}-`))).toEqual([]);
    expect(virsh('list', '--all', '--name')).not.toContain(half);
  });

  it('encrypted: round trip; a tampered ciphertext chunk is refused', { timeout: 300_000 }, async () => {
    const enc = join(work, 'enc');
    const key = join(work, 'key');
    writeFileSync(key, Buffer.alloc(32, 7), { mode: 0o600 });
    const r = await vmctl(['backup', VM, '--to', enc, '--encrypt', '--key-file', key, '--compress', '--json'], { env, timeoutMs: 300_000 });
    expect(r.code, r.stderr).toBe(0);
    const b = JSON.parse(r.stdout) as BackupJson;
    expect(b.storedBytes).toBeLessThan(40 * MiB); // repeated bytes compress
    const diskFile = join(enc, 'points', b.point, 'disks', 'vda');
    expect(readFileSync(diskFile).includes(Buffer.alloc(64, 0x11))).toBe(false);
    expect((await vmctl(['backup', 'verify', enc, '--key-file', key], { env })).code).toBe(0);
    const wrong = join(work, 'wrong');
    writeFileSync(wrong, Buffer.alloc(32, 8));
    const w = await vmctl(['backup', 'verify', enc, '--key-file', wrong], { env });
    expect(w.code).toBe(6);
    // flip a ciphertext byte and fix up the manifest's checksums, as an attacker would
    const m = JSON.parse(readFileSync(join(enc, 'points', b.point, 'manifest.json'), 'utf8')) as { files: { path: string; sha256: string; chunks: { at: number; sz: number; sha: string }[] }[] };
    const f = m.files.find((x) => x.path === 'disks/vda')!;
    const data = readFileSync(diskFile);
    data[f.chunks[0]!.at + 20]! ^= 1;
    writeFileSync(diskFile, data);
    const { createHash } = await import('node:crypto');
    f.chunks[0]!.sha = createHash('sha256').update(data.subarray(f.chunks[0]!.at, f.chunks[0]!.at + f.chunks[0]!.sz)).digest('hex');
    f.sha256 = createHash('sha256').update(data).digest('hex');
    writeFileSync(join(enc, 'points', b.point, 'manifest.json'), JSON.stringify(m));
    const t = await vmctl(['backup', 'verify', enc, '--key-file', key, '--json'], { env });
    expect(t.code).toBe(2);
    expect(t.stdout).toMatch(/manifest authentication failed/);
    expect(t.stdout).toMatch(/authentication failed \(tampered, reordered or from another file\)/);
    const rr = await vmctl(['restore', enc, '--name', `${tag}-never`, '--key-file', key], { env });
    expect(rr.code).toBe(2);
    expect(rr.stderr).toMatch(/refusing to restore/);
  });

  it('after an external snapshot: the next incremental follows the bitmap into the overlay, keeps the snapshot XML; restore says why the snapshot is not redefined', { timeout: 300_000 }, async () => {
    virsh('snapshot-create-as', VM, 'before-upgrade', '--disk-only', '--atomic', '--diskspec', `vda,file=${join(poolPath, `${tag}-snap.qcow2`)}`);
    const r = await backup(['--incremental']);
    expect(r.code, r.stderr).toBe(0);
    const b = JSON.parse(r.stdout) as BackupJson;
    expect(b.kind, b.notes.join('; ')).toBe('incremental');
    const m = JSON.parse(readFileSync(join(set(), 'points', b.point, 'manifest.json'), 'utf8')) as { snapshots: { name: string; location: string }[]; disks: { sourcePath: string }[] };
    expect(m.snapshots).toEqual([expect.objectContaining({ name: 'before-upgrade', location: 'external' })]);
    expect(m.disks[0]!.sourcePath).toBe(join(poolPath, `${tag}-snap.qcow2`));
    const copy = `${tag}-snapcopy`;
    const rr = await vmctl(['restore', set(), '--name', copy, '--json'], { env, timeoutMs: 300_000 });
    expect(rr.code, rr.stderr).toBe(0);
    const res = JSON.parse(rr.stdout) as { snapshots: { restored: string[]; notRestored: { name: string; why: string }[] } };
    expect(res.snapshots.restored).toEqual([]);
    expect(res.snapshots.notRestored).toEqual([{ name: 'before-upgrade', why: expect.stringMatching(/external snapshot: its backing files were merged/) }]);
    execFileSync('qemu-img', ['compare', '-U', join(poolPath, `${tag}-snap.qcow2`), join(poolPath, `${copy}-vda.qcow2`)]);
    expect((await vmctl(['delete', copy], { env })).code).toBe(0);
  });

  it('the VM stops under a full backup: one line naming the export that went away, its checkpoint gone with its bitmap from the stopped disk, nothing left', { timeout: 300_000 }, async () => {
    const diskFile = join(poolPath, `${tag}-data.qcow2`);
    const bitmaps = () => ((JSON.parse(execFileSync('qemu-img', ['info', '-U', '--output=json', diskFile], { encoding: 'utf8' })) as { 'format-specific'?: { data?: { bitmaps?: { name: string }[] } } })['format-specific']?.data?.bitmaps ?? []).map((b) => b.name).sort();
    const before = checkpoints(VM);
    const bitmapsBefore = bitmaps();
    const child = startVmctl(['backup', VM, '--to', set(), '--progress', 'plain'], { ...env, VMCTL_FAULT: 'backup:mid-download:sleep=3000' });
    try {
      await child.waitFor('fault point backup:mid-download', 120_000);
      expect(checkpoints(VM)).toHaveLength(before.length + 1);
      virsh('destroy', VM); // the guest goes (powered off, crashed) while vmctl is about to read its export
      const code = await child.done;
      const err = child.stderr();
      expect(code, err).toBe(5); // CONNECTION
      expect(err.trim().split('\n').at(-1), err).toMatch(/^vmctl: the backup job's export of disk vda went away \(.*\): the VM stopped or its libvirtd restarted \(see vmctl list --all, then run the backup again\)$/);
      expect(err).not.toMatch(/could not undo|WARNING: .*bitmap stays/);
      // its checkpoint is gone, from libvirt and (the daemon is local) from the disk file as well
      expect(checkpoints(VM)).toEqual(before);
      expect(bitmaps()).toEqual(bitmapsBefore);
      expect(volumes().filter((v) => v.startsWith(`vmctl-bak-${VM}-`))).toEqual([]);
      expect(sockets()).toEqual([]);
      expect(readdirSync(join(set(), 'points')).filter((p) => p.startsWith('.partial-'))).toEqual([]);
    } finally {
      if (virsh('domstate', VM).trim() !== 'running') virsh('start', VM);
    }
  });

  it('a stopped VM: its volume downloaded (sparse) and flattened locally; --incremental says why it is full; the restore is identical', { timeout: 300_000 }, async () => {
    virsh('destroy', VM);
    const stopped = join(work, 'stopped');
    const r = await vmctl(['backup', VM, '--to', stopped, '--incremental', '--json'], { env, timeoutMs: 300_000 });
    expect(r.code, r.stderr).toBe(0);
    const b = JSON.parse(r.stdout) as BackupJson;
    expect(b.kind).toBe('full');
    expect(b.notes.join('\n')).toMatch(/full backup, not incremental: the VM is not running/);
    expect(b.consistency.how).toMatch(/shut off/);
    expect(Math.abs(b.disks[0]!.dataBytes - 150 * MiB)).toBeLessThan(4 * MiB);
    const copy = `${tag}-cold`;
    const rr = await vmctl(['restore', stopped, '--name', copy], { env, timeoutMs: 300_000 });
    expect(rr.code, rr.stderr).toBe(0);
    execFileSync('qemu-img', ['compare', join(poolPath, `${tag}-data.qcow2`), join(poolPath, `${copy}-vda.qcow2`)]);
    expect((await vmctl(['delete', copy], { env })).code).toBe(0);
    virsh('start', VM);
  });

  it('disk full during a backup: a clear error, the guest unaffected, no partial files', { timeout: 300_000 }, async () => {
    const small = join(work, 'small');
    mkdirSync(small);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=60m', 'tmpfs', small]);
    try {
      const r = await vmctl(['backup', VM, '--to', join(small, 'set')], { env, timeoutMs: 300_000 });
      expect(r.code, r.stderr).toBe(8);
      expect(r.stderr).toMatch(/no space left on device/i);
      expect(readdirSync(join(small, 'set', 'points'))).toEqual([]);
      expect(virsh('domstate', VM).trim()).toBe('running');
      expect(virsh('domjobinfo', VM)).toMatch(/Job type:\s+None/);
      expect(volumes().filter((v) => v.startsWith(`vmctl-bak-${VM}-`))).toEqual([]);
      expect(sockets()).toEqual([]);
    } finally {
      execFileSync('umount', [small]);
    }
    expect(existsSync(join(small, 'set'))).toBe(false);
  });
});
