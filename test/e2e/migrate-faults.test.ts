/**
 * vmctl migrate interrupted (rig mig1 → mig2, TCG): Ctrl-C, the destination's libvirtd killed,
 * the rig network cut, and vmctl itself killed (kill -9) in the middle of a migration, and just
 * before and just after the move with --copy-storage (--recover removes the volumes it made on the
 * destination, or finishes the job). Each ends
 * with the guest running on exactly one host, its counter unbroken, no vmctl marker left, and —
 * once the fault is gone — a retry that succeeds. The migrations are made slow on purpose: the
 * guest holds random data in memory and the link is limited (--bandwidth).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { assertContinuous, counterAdvances, startCounter, startDirtying } from '../_helpers/migrate-guest.js';
import { bootGuest, cleanupMigRig, ensureVmctlPool, migRig, p2pArgs, removeGuest, run, startVmctl, virsh, vmctlRun, whereIs, type MigRig } from '../_helpers/migrate-rig.js';
import { repoRoot, waitForFileContains } from '../_helpers/rig.js';

let m: MigRig;
const base = `vmctl-migf-${process.pid}`;
const names = { int: `${base}-int`, dst: `${base}-dst`, net: `${base}-net`, kill: `${base}-kill`, cs: `${base}-cs`, pool: `${base}-pool` };
const MID = { VMCTL_FAULT: 'migrate:mid-migration:sleep=200' };

beforeAll(async () => {
  m = await migRig();
});
afterAll(async () => {
  if (m) await run('ip', ['-n', m.rig.raw['RIG_NET_NETNS']!, 'link', 'set', `vr-${m.mig2.name}`, 'up']).catch(() => undefined);
  await cleanupMigRig(m, Object.values(names));
});

/** A counting guest on mig1 holding `mib` MiB of random data (rewritten in a loop when `loop`). */
async function slowGuest(name: string, mib = 32, loop = false): Promise<string> {
  const log = await bootGuest(m, m.mig1, name, { memoryMiB: 128 });
  await waitForFileContains(log, m.rig.tinyMarker, 120_000);
  await startDirtying(m.mig1.unixUri, name, log, mib, loop);
  await startCounter(m.mig1.unixUri, name, log);
  return log;
}

/** vmctl migrating a slow guest (link limited to 1 MiB/s), held at its mid-migration fault point. */
async function slowMigration(name: string) {
  const log = await slowGuest(name);
  const p = p2pArgs(m, name, ['--bandwidth', '1']);
  const v = startVmctl(m, p.args, { netns: p.netns, env: MID });
  await v.waitStderr('fault point migrate:mid-migration');
  return { log, v };
}

/** A counting guest on mig1 whose disk is the volume `vol` of mig1's vmctl pool, and its --copy-storage all migration's arguments. */
async function copyStorageGuest(name: string, vol: string) {
  await virsh(m.mig1.unixUri, 'vol-create-as', 'vmctl', vol, '32M', '--format', 'qcow2');
  const log = await bootGuest(m, m.mig1, name, { disk: { path: join('/var/lib/vmctl/images', vol), format: 'qcow2' } });
  await waitForFileContains(log, m.rig.tinyMarker, 120_000);
  await startCounter(m.mig1.unixUri, name, log);
  return { log, p: p2pArgs(m, name, ['--copy-storage', 'all']) };
}

async function noMarkerOn(uri: string, name: string): Promise<void> {
  const xml = await virsh(uri, 'dumpxml', name);
  expect(xml).not.toContain('https://vmctl.dev/xmlns/op/1');
  expect(xml).not.toContain('https://vmctl.dev/xmlns/migrate/1');
}

/** Until mig2 has cleaned up its side of a failed incoming migration. */
async function mig2Clean(name: string, timeoutMs = 90_000): Promise<void> {
  const t0 = Date.now();
  while ((await whereIs(m, name)).mig2 !== 'none') {
    if (Date.now() - t0 > timeoutMs) throw new Error(`mig2 still has ${name}: ${(await whereIs(m, name)).mig2}`);
    await new Promise((r) => setTimeout(r, 1000));
  }
}

async function retrySucceeds(name: string, log: string): Promise<void> {
  const p = p2pArgs(m, name, ['--json']);
  const r = await vmctlRun(m, p.args, { netns: p.netns });
  expect(r.code, r.stderr).toBe(0);
  expect(await whereIs(m, name)).toEqual({ mig1: 'none', mig2: 'running' });
  await noMarkerOn(m.mig2.unixUri, name);
  assertContinuous(await counterAdvances(log, 2));
}

describe('vmctl migrate interrupted (rig mig1 → mig2)', () => {
  it('Ctrl-C mid-way aborts the job: the guest keeps running on mig1, nothing is left on mig2 (exit 130)', { timeout: 300_000 }, async () => {
    const name = names.int;
    const { log, v } = await slowMigration(name);
    v.child.kill('SIGINT');
    const r = await v.done;
    expect(r.code, r.stderr).toBe(130);
    expect(r.stderr).toMatch(/interrupted/);
    expect(await whereIs(m, name)).toEqual({ mig1: 'running', mig2: 'none' });
    await noMarkerOn(m.mig1.unixUri, name);
    assertContinuous(await counterAdvances(log, 2));
    await removeGuest(m, name);
  });

  it("the destination's libvirtd killed mid-way: the guest keeps running on mig1, vmctl says what happened; a retry succeeds once it is back", { timeout: 420_000 }, async () => {
    const name = names.dst;
    const { log, v } = await slowMigration(name);
    const pid = Number(readFileSync(join(m.mig2.dir, 'libvirtd.pid'), 'utf8').trim());
    process.kill(pid, 'SIGKILL');
    const r = await v.done;
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/failed: .*the guest keeps running on qemu\+unix/s);
    expect((await whereIs(m, name)).mig1).toBe('running');
    await noMarkerOn(m.mig1.unixUri, name);
    await run(join(repoRoot, 'scripts', 'test-rig.sh'), ['up'], 240_000);
    await mig2Clean(name);
    await retrySucceeds(name, log);
    await removeGuest(m, name);
  });

  it('the rig network cut mid-way (veth down): the guest keeps running on mig1, vmctl says so; a retry succeeds after the link is back', { timeout: 480_000 }, async () => {
    const name = names.net;
    const { log, v } = await slowMigration(name);
    const netns = m.rig.raw['RIG_NET_NETNS']!;
    await run('ip', ['-n', netns, 'link', 'set', `vr-${m.mig2.name}`, 'down']);
    const r = await v.done;
    await run('ip', ['-n', netns, 'link', 'set', `vr-${m.mig2.name}`, 'up']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/the guest keeps running on qemu\+unix/);
    expect((await whereIs(m, name)).mig1).toBe('running');
    await noMarkerOn(m.mig1.unixUri, name);
    assertContinuous(await counterAdvances(log, 2));
    await mig2Clean(name);
    await retrySucceeds(name, log);
    await removeGuest(m, name);
  });

  it('kill -9 of vmctl mid-migration: libvirt completes or rolls back the move; the next vmctl migrate says where it runs and cleans up', { timeout: 300_000 }, async () => {
    const name = names.kill;
    const log = await slowGuest(name, 16);
    const p = p2pArgs(m, name, ['--bandwidth', '8']);
    const r = await vmctlRun(m, p.args, { netns: p.netns, env: { VMCTL_FAULT: 'migrate:mid-migration:kill' } });
    expect(r.code).toBe(137);
    // libvirt finishes (or rolls back) the job on its own: then exactly one host runs the guest
    const jobDone = () => virsh(m.mig1.unixUri, 'domjobinfo', name).then((t) => /Job type:\s+None/.test(t), () => true);
    const t0 = Date.now();
    while (Date.now() - t0 < 180_000 && !(await jobDone())) await new Promise((res) => setTimeout(res, 1000));
    expect(await jobDone()).toBe(true);
    await new Promise((res) => setTimeout(res, 2000));
    const where = await whereIs(m, name);
    expect((where.mig1 === 'running') !== (where.mig2 === 'running'), JSON.stringify(where)).toBe(true);
    const host = where.mig2 === 'running' ? m.mig2 : m.mig1;
    expect(await virsh(host.unixUri, 'dumpxml', name)).toContain('https://vmctl.dev/xmlns/op/1');

    const rec = await vmctlRun(m, [...p.args, '--recover', '--json'], { netns: p.netns });
    expect(rec.code, rec.stderr).toBe(0);
    const out = JSON.parse(rec.stdout) as { recovered: { runsOn: string; message: string } };
    expect(out.recovered.runsOn).toBe(where.mig2 === 'running' ? 'destination' : 'source');
    expect(out.recovered.message).toMatch(where.mig2 === 'running' ? /had completed: it runs on qemu\+tcp/ : /rolled back/);
    await noMarkerOn(host.unixUri, name);
    const after = await whereIs(m, name);
    expect(after).toEqual(where.mig2 === 'running' ? { mig1: 'none', mig2: 'running' } : { mig1: 'running', mig2: 'none' });
    assertContinuous(await counterAdvances(log, 2));
    await removeGuest(m, name);
  });

  it("a failed migration with --copy-storage to a host without vmctl's pool removes the pool it made there (undo on a failure, --recover after kill -9)", { timeout: 300_000 }, async () => {
    const name = names.pool;
    const vol = `${name}.qcow2`;
    const hasPool = (uri: string) => virsh(uri, 'pool-info', 'vmctl').then(() => true, () => false);
    try {
      await ensureVmctlPool(m.mig1.unixUri);
      // mig2 as a host vmctl never stored anything on: the rig's hosts are vmctl's own, so an empty
      // pool is removed first; one still holding volumes is another test's leftover and fails loudly
      if (await hasPool(m.mig2.unixUri)) {
        const held = (await virsh(m.mig2.unixUri, 'vol-list', 'vmctl')).split('\n').slice(2).map((l) => l.trim()).filter(Boolean);
        if (held.length > 0) throw new Error(`rig host mig2's vmctl pool still holds ${held.join(', ')}: an earlier test left them`);
        await virsh(m.mig2.unixUri, 'pool-destroy', 'vmctl');
        await virsh(m.mig2.unixUri, 'pool-undefine', 'vmctl');
      }
      const { log, p } = await copyStorageGuest(name, vol);
      const r = await vmctlRun(m, p.args, { netns: p.netns, env: { VMCTL_FAULT: 'migrate:after-volumes:throw' } });
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(/made storage pool vmctl on/);
      expect(r.stderr).toMatch(/injected fault at migrate:after-volumes/);
      expect(r.stderr).toMatch(/undone +storage pool vmctl on/);
      expect(await hasPool(m.mig2.unixUri)).toBe(false);
      expect(await whereIs(m, name)).toEqual({ mig1: 'running', mig2: 'none' });
      await noMarkerOn(m.mig1.unixUri, name);
      // killed there instead: --recover removes the volume and then the pool
      const killed = await vmctlRun(m, p.args, { netns: p.netns, env: { VMCTL_FAULT: 'migrate:after-volumes:kill' } });
      expect(killed.code).toBe(137);
      expect(await hasPool(m.mig2.unixUri)).toBe(true);
      const rec = await vmctlRun(m, [...p.args, '--recover', '--json'], { netns: p.netns });
      expect(rec.code, rec.stderr).toBe(0);
      expect((JSON.parse(rec.stdout) as { recovered: { message: string } }).recovered.message).toMatch(/the 1 volume\(s\) it had made there were removed; so was the storage pool vmctl it had made there/);
      expect(await hasPool(m.mig2.unixUri)).toBe(false);
      expect(await whereIs(m, name)).toEqual({ mig1: 'running', mig2: 'none' });
      await noMarkerOn(m.mig1.unixUri, name);
      assertContinuous(await counterAdvances(log, 2));
    } finally {
      await removeGuest(m, name);
      await virsh(m.mig1.unixUri, 'vol-delete', '--pool', 'vmctl', vol).catch(() => undefined);
      await ensureVmctlPool(m.mig2.unixUri);
    }
  });

  it('kill -9 around the move with --copy-storage: before it, --recover rolls back and removes the volume made on mig2; after it, --recover finishes the job', { timeout: 300_000 }, async () => {
    const name = names.cs;
    const vol = `${name}.qcow2`; // in each rig host's own vmctl pool directory: not shared
    const vols = async (uri: string) => virsh(uri, 'vol-list', 'vmctl');
    try {
      for (const h of [m.mig1, m.mig2]) await ensureVmctlPool(h.unixUri);
      const { log, p } = await copyStorageGuest(name, vol);

      const before = await vmctlRun(m, p.args, { netns: p.netns, env: { VMCTL_FAULT: 'migrate:after-volumes:kill' } });
      expect(before.code).toBe(137);
      expect(await vols(m.mig2.unixUri)).toContain(vol);
      // another command on the VM names the way out (never "delete": the guest is fine)
      const other = await vmctlRun(m, ['-c', m.mig1.unixUri, 'start', name], { netns: p.netns });
      expect(other.code).toBe(4);
      expect(other.stderr).toMatch(/is incomplete: vmctl migrate .*--recover sets right what the interrupted migration left/s);
      const rec = await vmctlRun(m, [...p.args, '--recover', '--json'], { netns: p.netns });
      expect(rec.code, rec.stderr).toBe(0);
      expect((JSON.parse(rec.stdout) as { recovered: { message: string } }).recovered.message).toMatch(/rolled back.*the 1 volume\(s\) it had made there were removed/);
      expect(await vols(m.mig2.unixUri)).not.toContain(vol);
      expect(await whereIs(m, name)).toEqual({ mig1: 'running', mig2: 'none' });
      await noMarkerOn(m.mig1.unixUri, name);

      const after = await vmctlRun(m, p.args, { netns: p.netns, env: { VMCTL_FAULT: 'migrate:after-migrate:kill' } });
      expect(after.code).toBe(137);
      expect(await whereIs(m, name)).toEqual({ mig1: 'none', mig2: 'running' });
      const rec2 = await vmctlRun(m, [...p.args, '--recover', '--json'], { netns: p.netns });
      expect(rec2.code, rec2.stderr).toBe(0);
      expect((JSON.parse(rec2.stdout) as { recovered: { runsOn: string } }).recovered.runsOn).toBe('destination');
      await noMarkerOn(m.mig2.unixUri, name);
      // a disk vmctl did not make stays on the source
      expect(await vols(m.mig1.unixUri)).toContain(vol);
      assertContinuous(await counterAdvances(log, 2));
    } finally {
      await removeGuest(m, name);
      for (const h of [m.mig1, m.mig2]) await virsh(h.unixUri, 'vol-delete', '--pool', 'vmctl', vol).catch(() => undefined);
    }
  });
});
