/**
 * Disaster recovery, proven by booting: a running Debian guest (vmctl create)
 * backed up (full), written to, backed up again (incremental), written to once
 * more, then destroyed with its volumes; restored on another host (rig host1,
 * over its unix URI) with --verify-boot: it boots, SSH works with the pinned
 * host key, the files written before the restored point match and the one
 * written after it is absent.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureRig, repoRoot, type RigEnv } from '../_helpers/rig.js';
import { ensureBuilt, vmctl } from '../_helpers/vmctl.js';

const VM = `tbak-dr${process.pid.toString(36).slice(-3)}`;
const virsh = (uri: string, ...args: string[]) => execFileSync('virsh', ['-c', uri, ...args], { encoding: 'utf8' });

describe('backup a running guest, restore it on another host, boot it (TCG)', () => {
  let work: string;
  let env: NodeJS.ProcessEnv;
  let rig: RigEnv;
  const one = randomBytes(24).toString('hex');
  const two = randomBytes(24).toString('hex');

  beforeAll(async () => {
    ensureBuilt();
    rig = await ensureRig();
    work = mkdtempSync(join(tmpdir(), 'vmctl-dr-'));
    env = { VMCTL_CACHE_DIR: join(repoRoot, '.cache'), VMCTL_DATA_DIR: join(work, 'data'), LIBVIRT_DEFAULT_URI: 'qemu:///system' };
  });

  afterAll(async () => {
    await vmctl(['delete', VM], { env });
    await vmctl(['delete', VM, '-c', rig.unixUri], { env });
    rmSync(work, { recursive: true, force: true });
  });

  it('full, then incremental backups of the running guest; verify passes', { timeout: 20 * 60_000 }, async () => {
    const c = await vmctl(['create', VM, '--wait', 'ssh'], { env, timeoutMs: 15 * 60_000 });
    expect(c.code, c.stderr).toBe(0);
    const ssh = (cmd: string) => vmctl(['ssh', VM, '--', 'sh', '-c', `'${cmd}'`], { env });
    expect((await ssh(`echo ${one} > one.txt && sync`)).code).toBe(0);
    const full = await vmctl(['backup', VM, '--to', join(work, 'set'), '--json'], { env, timeoutMs: 600_000 });
    expect(full.code, full.stderr).toBe(0);
    const f = JSON.parse(full.stdout) as { kind: string; consistency: { quiesced: boolean; how: string }; disks: { dataBytes: number }[] };
    expect(f.kind).toBe('full');
    process.stderr.write(`[dr] full backup: ${JSON.stringify(f.consistency)}; data ${f.disks.map((d) => d.dataBytes).join(',')}\n`);
    expect((await ssh(`echo ${two} > two.txt && sync`)).code).toBe(0);
    const inc = await vmctl(['backup', VM, '--to', join(work, 'set'), '--incremental', '--json'], { env, timeoutMs: 600_000 });
    expect(inc.code, inc.stderr).toBe(0);
    const i = JSON.parse(inc.stdout) as { kind: string; disks: { dataBytes: number }[] };
    expect(i.kind).toBe('incremental');
    expect(i.disks[0]!.dataBytes).toBeLessThan(64 * 1024 * 1024);
    expect((await ssh('echo after > three.txt && sync')).code).toBe(0);
    const v = await vmctl(['backup', 'verify', join(work, 'set')], { env, timeoutMs: 600_000 });
    expect(v.code, v.stdout + v.stderr).toBe(0);
  });

  it('the guest and its volumes destroyed, it is restored on rig host1 and boots: ssh with the pinned key, the files of the point', { timeout: 20 * 60_000 }, async () => {
    const d = await vmctl(['delete', VM], { env });
    expect(d.code, d.stderr).toBe(0);
    expect(virsh('qemu:///system', 'list', '--all', '--name')).not.toContain(VM);
    const r = await vmctl(['restore', join(work, 'set'), '-c', rig.unixUri, '--verify-boot', '--json'], { env, timeoutMs: 15 * 60_000 });
    expect(r.code, r.stderr).toBe(0);
    const res = JSON.parse(r.stdout) as { name: string; state: string; chain: string[]; phases: { phase: string; atMs: number }[]; durationMs: number };
    expect(res).toMatchObject({ name: VM, state: 'running' });
    expect(res.chain.length).toBe(2);
    expect(res.phases.map((p) => p.phase)).toEqual(expect.arrayContaining(['started', 'sshd']));
    process.stderr.write(`[dr] restore → ssh ready: ${res.phases.map((p) => `${p.phase} ${p.atMs}`).join(', ')}\n`);
    const cat = await vmctl(['ssh', VM, '-c', rig.unixUri, '--', 'sh', '-c', "'cat one.txt two.txt; test -e three.txt && echo THREE; true'"], { env });
    expect(cat.code, cat.stderr).toBe(0);
    expect(cat.stdout).toBe(`${one}\n${two}\n`);
    expect(virsh(rig.unixUri, 'domstate', VM).trim()).toBe('running');
  });
});
