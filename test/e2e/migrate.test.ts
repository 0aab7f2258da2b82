/**
 * vmctl migrate between the rig's netns hosts mig1 and mig2 (TCG): the tiny guest counts on its
 * serial console and into a file in its memory; it moves mig1 → mig2 live peer-to-peer over
 * qemu+tcp (vmctl running on mig1), and back over qemu+ssh with --direct (vmctl driving both
 * hosts from here); with --copy-storage all and inc; tunnelled with --keep-source and the
 * convergence options; with snapshots carried; and a guest dirtying memory
 * faster than a limited link, finished by --postcopy-after. Each ends with the guest running on
 * exactly one host, its counter unbroken (same boot id, uptime continuing).
 */
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectionId } from '../../src/core/paths.js';
import { assertContinuous, checkCountFile, counterAdvances, counterLines, startCounter, startDirtying, typeInto, sharedDir } from '../_helpers/migrate-guest.js';
import { bootGuest, cleanupMigRig, ensureVmctlPool, migRig, p2pArgs, removeGuest, virsh, vmctlRun, whereIs, type MigRig } from '../_helpers/migrate-rig.js';
import { waitForFileContains } from '../_helpers/rig.js';

let m: MigRig;
const base = `vmctl-mig-${process.pid}`;
const names = { rt: `${base}-rt`, copy: `${base}-copy`, snap: `${base}-snap`, pc: `${base}-pc`, tun: `${base}-tun`, inc: `${base}-inc` };

beforeAll(async () => {
  m = await migRig();
});
afterAll(async () => {
  if (!m) return;
  for (const h of [m.mig1, m.mig2]) {
    for (const p of ['vmctl-migtest', 'vmctl-migshared']) {
      await virsh(h.unixUri, 'pool-destroy', p).catch(() => undefined);
      await virsh(h.unixUri, 'pool-undefine', p).catch(() => undefined);
    }
  }
  await cleanupMigRig(m, Object.values(names));
});

async function definePool(uri: string, name: string, dir: string): Promise<void> {
  await virsh(uri, 'pool-define-as', name, 'dir', '--target', dir);
  await virsh(uri, 'pool-start', name);
}

describe('vmctl migrate (rig mig1 ⇄ mig2, TCG)', () => {
  it('moves a counting guest mig1 → mig2 live (p2p, qemu+tcp) and back (--direct, qemu+ssh): counter, boot id, uptime and file unbroken; state follows', { timeout: 420_000 }, async () => {
    const name = names.rt;
    const log = await bootGuest(m, m.mig1, name);
    await waitForFileContains(log, m.rig.tinyMarker, 120_000);
    await startCounter(m.mig1.unixUri, name, log);
    // vmctl's client-side state of the VM on mig1 (login key, pinned host key)
    const stateOf = (uri: string) => join(m.dataDir, 'vms', connectionId(uri), name);
    mkdirSync(stateOf(m.mig1.unixUri), { recursive: true });
    writeFileSync(join(stateOf(m.mig1.unixUri), 'known_hosts'), '[127.0.0.1]:2222 ssh-ed25519 AAAA\n');

    // pre-flight only
    const p = p2pArgs(m, name);
    const dry = await vmctlRun(m, [...p.args, '--dry-run', '--json'], { netns: p.netns });
    expect(dry.code, dry.stderr).toBe(0);
    const plan = JSON.parse(dry.stdout) as { plan: { ok: boolean; checks: { id: string; status: string }[]; accel: { guest: string } } };
    expect(plan.plan.ok).toBe(true);
    expect(plan.plan.checks.map((c) => c.id)).toEqual(expect.arrayContaining(['destination', 'name', 'versions', 'accel', 'cpu', 'memory']));
    expect(plan.plan.accel.guest).toBe('TCG');
    expect(await whereIs(m, name)).toEqual({ mig1: 'running', mig2: 'none' });

    const there = await vmctlRun(m, [...p.args, '--json'], { netns: p.netns });
    expect(there.code, there.stderr).toBe(0);
    const r1 = JSON.parse(there.stdout) as { runsOn: string; timeMs: number; downtimeMs?: number; bytes?: number; postcopy: boolean; mode: string };
    expect(r1).toMatchObject({ runsOn: m.mig2Tcp, mode: 'p2p', postcopy: false });
    expect(r1.bytes).toBeGreaterThan(0);
    expect(r1.downtimeMs).toBeGreaterThanOrEqual(0);
    expect(await whereIs(m, name)).toEqual({ mig1: 'none', mig2: 'running' });
    expect((await virsh(m.mig2.unixUri, 'dominfo', name)).replace(/\s+/g, ' ')).toMatch(/Persistent: yes/);
    expect(existsSync(stateOf(m.mig1.unixUri))).toBe(false);
    expect(existsSync(join(stateOf(m.mig2Tcp), 'known_hosts'))).toBe(true);
    await counterAdvances(log, 3);

    // back, vmctl driving both hosts over ssh
    const back = await vmctlRun(m, ['-c', m.mig2.sshUri, 'migrate', name, '--to', m.mig1.sshUri, '--direct', '--migrate-uri', `tcp://${m.mig1.addr}`, '--json']);
    expect(back.code, back.stderr).toBe(0);
    expect(JSON.parse(back.stdout)).toMatchObject({ mode: 'direct', runsOn: m.mig1.sshUri });
    expect(await whereIs(m, name)).toEqual({ mig1: 'running', mig2: 'none' });
    const lines = await counterAdvances(log, 3);
    assertContinuous(lines);
    const file = await checkCountFile(m.mig1.unixUri, name, log);
    expect(file.sequential).toBe(true);
    expect(file.last).toBeGreaterThanOrEqual(lines.at(-1)!.i);
    await removeGuest(m, name);
  });

  it('refuses in the pre-flight what cannot work, naming the fix (a guest of that name on the destination)', { timeout: 180_000 }, async () => {
    const name = names.rt;
    await bootGuest(m, m.mig1, name);
    await virsh(m.mig2.unixUri, 'define', join(m.work, `${name}.xml`));
    const p = p2pArgs(m, name);
    const r = await vmctlRun(m, p.args, { netns: p.netns });
    expect(r.code).toBe(4);
    expect(r.stderr).toMatch(/a guest named '.*' exists on the destination already.*remove it there first/s);
    expect(await whereIs(m, name)).toEqual({ mig1: 'running', mig2: 'shut off' });
    await removeGuest(m, name);
  });

  it('copies disks that are not shared (--copy-storage all): destination volume made first, data intact', { timeout: 300_000 }, async () => {
    const name = names.copy;
    const d1 = sharedDir(m.work, 'pool-mig1');
    const d2 = sharedDir(m.work, 'pool-mig2');
    await definePool(m.mig1.unixUri, 'vmctl-migtest', d1);
    await definePool(m.mig2.unixUri, 'vmctl-migtest', d2);
    await virsh(m.mig1.unixUri, 'vol-create-as', 'vmctl-migtest', `${name}.qcow2`, '64M', '--format', 'qcow2');
    const log = await bootGuest(m, m.mig1, name, { disk: { path: join(d1, `${name}.qcow2`), format: 'qcow2' } });
    await waitForFileContains(log, m.rig.tinyMarker, 120_000);
    await typeInto(m.mig1.unixUri, name, 'echo VMCTL-DISK-DATA-42 > /dev/vda; sync; echo WROTE-DISK');
    await waitForFileContains(log, 'WROTE-DISK\r', 30_000).catch(() => waitForFileContains(log, 'WROTE-DISK\n', 30_000));
    await startCounter(m.mig1.unixUri, name, log);

    const plain = p2pArgs(m, name);
    const refused = await vmctlRun(m, [...plain.args, '--dry-run'], { netns: plain.netns });
    expect(refused.stdout).toMatch(/FAIL .*not visible on the destination[\s\S]*--copy-storage all/);

    const p = p2pArgs(m, name, ['--copy-storage', 'all', '--json']);
    const r = await vmctlRun(m, p.args, { netns: p.netns });
    expect(r.code, r.stderr).toBe(0);
    const res = JSON.parse(r.stdout) as { disksCopied: string[]; diskBytes?: number; sourceRemoved: string[]; sourceLeft: string[] };
    expect(res.disksCopied).toEqual(['vda']);
    // a disk vmctl did not create (virsh vol-create-as above) is never removed: the source keeps it, and says so
    expect(res).toMatchObject({ sourceRemoved: [], sourceLeft: [join(d1, `${name}.qcow2`)] });
    expect(r.stderr).toMatch(/the source keeps its copy of .*vmctl did not create it/);
    expect(await virsh(m.mig1.unixUri, 'vol-list', 'vmctl-migtest')).toContain(`${name}.qcow2`);
    expect(await whereIs(m, name)).toEqual({ mig1: 'none', mig2: 'running' });
    expect(await virsh(m.mig2.unixUri, 'domblklist', name)).toContain(join(d2, `${name}.qcow2`));
    expect((await virsh(m.mig2.unixUri, 'vol-info', '--pool', 'vmctl-migtest', `${name}.qcow2`)).replace(/\s+/g, ' ')).toMatch(/Capacity: 64\.00 MiB/);
    await typeInto(m.mig2.unixUri, name, 'echo "DISK-SAYS $(head -c 18 /dev/vda)"');
    await waitForFileContains(log, 'DISK-SAYS VMCTL-DISK-DATA-42', 30_000);
    assertContinuous(await counterAdvances(log, 2));
    await removeGuest(m, name);
  });

  it('carries snapshots: their metadata leaves the source before the move and is redefined on the destination; snapshot list identical', { timeout: 300_000 }, async () => {
    const name = names.snap;
    const shared = sharedDir(m.work, 'pool-shared');
    for (const h of [m.mig1, m.mig2]) await definePool(h.unixUri, 'vmctl-migshared', shared);
    await virsh(m.mig1.unixUri, 'vol-create-as', 'vmctl-migshared', `${name}.qcow2`, '32M', '--format', 'qcow2');
    await virsh(m.mig2.unixUri, 'pool-refresh', 'vmctl-migshared');
    const log = await bootGuest(m, m.mig1, name, { disk: { path: join(shared, `${name}.qcow2`), format: 'qcow2' } });
    await waitForFileContains(log, m.rig.tinyMarker, 120_000);
    await startCounter(m.mig1.unixUri, name, log);
    await virsh(m.mig1.unixUri, 'snapshot-create-as', name, 'first', '--description', 'one');
    await virsh(m.mig1.unixUri, 'snapshot-create-as', name, 'second');
    const list = (uri: string) => virsh(uri, 'snapshot-list', name, '--parent');
    const current = (uri: string) => virsh(uri, 'snapshot-current', name, '--name');
    const before = await list(m.mig1.unixUri);
    expect(before).toMatch(/second\s.*first/);

    const dry = p2pArgs(m, name, ['--dry-run']);
    const plan = await vmctlRun(m, dry.args, { netns: dry.netns });
    expect(plan.stdout).toMatch(/PASS .*2 snapshot\(s\) carried: first, second/);
    expect(plan.stdout).toMatch(/PASS .*shared/);

    // the rig's "shared storage" is one local filesystem both hosts see: libvirt cannot know it
    // is shared, says so, and vmctl names the way out (nothing moved, snapshots back in place)
    const refused = await vmctlRun(m, p2pArgs(m, name).args, { netns: p2pArgs(m, name).netns });
    expect(refused.code).toBe(4);
    expect(refused.stderr).toMatch(/Migration without shared storage is unsafe.*add --unsafe/s);
    expect(await list(m.mig1.unixUri)).toBe(before);
    expect((await current(m.mig1.unixUri)).trim()).toBe('second');

    const p = p2pArgs(m, name, ['--unsafe', '--json']);
    const r = await vmctlRun(m, p.args, { netns: p.netns });
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout), r.stderr).toMatchObject({ snapshotsCarried: ['first', 'second'] });
    expect(await whereIs(m, name)).toEqual({ mig1: 'none', mig2: 'running' });
    expect(await list(m.mig2.unixUri)).toBe(before);
    expect((await current(m.mig2.unixUri)).trim()).toBe('second');
    expect(await virsh(m.mig2.unixUri, 'dumpxml', name)).not.toContain('vmctl.dev/xmlns/op');
    assertContinuous(await counterAdvances(log, 2));
    await removeGuest(m, name);
  });

  it('tunnelled through the libvirt connection, with --keep-source, --max-downtime, --bandwidth, --auto-converge and --compressed', { timeout: 300_000 }, async () => {
    const name = names.tun;
    const log = await bootGuest(m, m.mig1, name);
    await waitForFileContains(log, m.rig.tinyMarker, 120_000);
    await startCounter(m.mig1.unixUri, name, log);
    const args = ['-c', m.mig1.unixUri, 'migrate', name, '--to', m.mig2Tcp, '--tunnelled', '--keep-source', '--max-downtime', '300', '--bandwidth', '200', '--auto-converge', '--compressed', '--json'];
    const r = await vmctlRun(m, args, { netns: m.mig1.netns });
    expect(r.code, r.stderr).toBe(0);
    const res = JSON.parse(r.stdout) as { mode: string; sourceKept: boolean; runsOn: string; bytes?: number };
    expect(res).toMatchObject({ mode: 'tunnelled', sourceKept: true, runsOn: m.mig2Tcp });
    // the source keeps a stopped definition (no vmctl intent left in it), the guest runs on mig2 only
    expect(await whereIs(m, name)).toEqual({ mig1: 'shut off', mig2: 'running' });
    expect(await virsh(m.mig1.unixUri, 'dumpxml', '--inactive', name)).not.toContain('vmctl.dev/xmlns/op');
    assertContinuous(await counterAdvances(log, 2));
    // a kept source definition is a guest of that name there: moving back is refused in the
    // pre-flight (--dry-run exits as the real command would) until it is removed
    const back = await vmctlRun(m, ['-c', m.mig2.sshUri, 'migrate', name, '--to', m.mig1.sshUri, '--direct', '--dry-run']);
    expect(back.stdout).toMatch(/FAIL .*exists on the destination already/);
    expect(back.code).toBe(4);
    await removeGuest(m, name);
  });

  it('--copy-storage inc: only the overlay moves; its base is found on the destination at the same path', { timeout: 300_000 }, async () => {
    const name = names.inc;
    const dir = '/var/lib/vmctl/images'; // each rig host's own (private) vmctl pool directory
    const baseVol = `${name}-base.qcow2`;
    const top = `${name}.qcow2`;
    try {
      for (const h of [m.mig1, m.mig2]) await ensureVmctlPool(h.unixUri);
      for (const h of [m.mig1, m.mig2]) await virsh(h.unixUri, 'vol-create-as', 'vmctl', baseVol, '64M', '--format', 'qcow2');
      await virsh(m.mig1.unixUri, 'vol-create-as', 'vmctl', top, '64M', '--format', 'qcow2', '--backing-vol', join(dir, baseVol), '--backing-vol-format', 'qcow2');
      const log = await bootGuest(m, m.mig1, name, { disk: { path: join(dir, top), format: 'qcow2' } });
      await waitForFileContains(log, m.rig.tinyMarker, 120_000);
      await typeInto(m.mig1.unixUri, name, 'echo VMCTL-INC-DATA-7 > /dev/vda; sync; echo WROTE-INC');
      await waitForFileContains(log, 'WROTE-INC\r', 30_000).catch(() => waitForFileContains(log, 'WROTE-INC\n', 30_000));
      const p = p2pArgs(m, name, ['--copy-storage', 'inc', '--json']);
      const r = await vmctlRun(m, p.args, { netns: p.netns });
      expect(r.code, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout)).toMatchObject({ disksCopied: ['vda'] });
      expect(await whereIs(m, name)).toEqual({ mig1: 'none', mig2: 'running' });
      // the destination's overlay sits on mig2's own base
      expect(await virsh(m.mig2.unixUri, 'vol-dumpxml', '--pool', 'vmctl', top)).toContain(`<path>${join(dir, baseVol)}</path>`);
      await typeInto(m.mig2.unixUri, name, 'echo "INC-SAYS $(head -c 16 /dev/vda)"');
      await waitForFileContains(log, 'INC-SAYS VMCTL-INC-DATA-7', 30_000);
    } finally {
      await removeGuest(m, name);
      for (const h of [m.mig1, m.mig2]) for (const v of [top, baseVol]) await virsh(h.unixUri, 'vol-delete', '--pool', 'vmctl', v).catch(() => undefined);
    }
  });

  it('a guest dirtying memory faster than the link: pre-copy does not converge, --postcopy-after finishes it', { timeout: 420_000 }, async () => {
    const name = names.pc;
    const log = await bootGuest(m, m.mig1, name, { memoryMiB: 160 });
    await waitForFileContains(log, m.rig.tinyMarker, 120_000);
    await startDirtying(m.mig1.unixUri, name, log, 48);
    await startCounter(m.mig1.unixUri, name, log);
    const p = p2pArgs(m, name, ['--bandwidth', '4', '--postcopy-after', '8', '--json', '--progress', 'json']);
    const r = await vmctlRun(m, p.args, { netns: p.netns, timeoutMs: 400_000 });
    expect(r.code, r.stderr).toBe(0);
    const res = JSON.parse(r.stdout) as { postcopy: boolean; postcopySwitchAtMs: number; timeMs: number };
    expect(res.postcopy).toBe(true);
    expect(res.postcopySwitchAtMs).toBeGreaterThanOrEqual(8000);
    const events = r.stderr.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { type: string; phase?: string; detail?: string; item?: string });
    expect(events.some((e) => e.type === 'progress' && e.phase === 'migrate' && /iteration/.test(e.item ?? ''))).toBe(true);
    expect(events.find((e) => e.type === 'phase' && e.phase === 'post-copy')?.detail).toMatch(/not converging/);
    expect(await whereIs(m, name)).toEqual({ mig1: 'none', mig2: 'running' });
    assertContinuous(await counterAdvances(log, 2));
    expect(counterLines(log).length).toBeGreaterThan(3);
    await removeGuest(m, name);
  });
});
