/**
 * Snapshot commands interrupted (kill -9 at their fault points) on a stopped
 * vmctl VM — no guest boots: external snapshots of a stopped VM are made with
 * qemu-img by libvirt, and a delete starts QEMU paused only for its merge. The
 * next snapshot command finishes the cleanup: no stray files, no QEMU left
 * running paused, no block job, and it then does its own work.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { repoRoot } from '../_helpers/rig.js';
import { ensureBuilt, vmctl } from '../_helpers/vmctl.js';

const VM = 'tsf1';
const virsh = (...args: string[]) => execFileSync('virsh', ['-c', 'qemu:///system', ...args], { encoding: 'utf8' });
const domains = () => virsh('list', '--all', '--name').split('\n').filter(Boolean);
const files = () => execFileSync('ls', ['/var/lib/vmctl/images'], { encoding: 'utf8' }).split('\n').filter((f) => f.startsWith(`${VM}-`) || f.startsWith(`${VM}.`)).sort();

interface Listed {
  name: string;
  incomplete?: { op: string; step: string };
}

describe('snapshot commands interrupted', () => {
  let env: NodeJS.ProcessEnv;
  let dataDir: string;

  /** run vmctl and require success, showing its stderr when it fails */
  const ok = async (args: string[]) => {
    const r = await vmctl(args, { env });
    expect(r.code, `vmctl ${args.join(' ')}: ${r.stderr}`).toBe(0);
    return r;
  };

  beforeAll(async () => {
    ensureBuilt();
    dataDir = mkdtempSync(join(tmpdir(), 'vmctl-snapfaults-'));
    env = { VMCTL_CACHE_DIR: join(repoRoot, '.cache'), VMCTL_DATA_DIR: dataDir, LIBVIRT_DEFAULT_URI: 'qemu:///system' };
    if (domains().includes(VM)) throw new Error(`a domain named ${VM} exists; remove it before running this test`);
    const r = await vmctl(['create', VM, '--accel', 'tcg', '--no-start'], { env, timeoutMs: 300_000 });
    expect(r.code, r.stderr).toBe(0);
  });

  afterAll(async () => {
    if (domains().includes(VM)) await vmctl(['delete', VM], { env });
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('a stopped VM gets an internal snapshot; a disk-only one is external', async () => {
    const i = await vmctl(['snapshot', 'create', VM, 'i1', '--json'], { env });
    expect(i.code, i.stderr).toBe(0);
    expect(JSON.parse(i.stdout)).toMatchObject({ kind: 'internal', memory: false });
    const bad = await vmctl(['snapshot', 'create', VM, 'bad/name'], { env });
    expect(bad.code).toBe(2);
    const dup = await vmctl(['snapshot', 'create', VM, 'i1'], { env });
    expect(dup.code).toBe(4);
    const del = await vmctl(['snapshot', 'delete', VM, 'i1'], { env });
    expect(del.code, del.stderr).toBe(0);
  });

  it('--keep N deletes the oldest beyond N; --quiesce on a stopped VM says there is nothing to freeze', async () => {
    for (const n of ['k1', 'k2', 'k3']) {
      const r = await vmctl(['snapshot', 'create', VM, n, '--keep', '2', '--quiesce', '--progress', 'plain'], { env });
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toContain('is not running, its disks are already consistent');
    }
    const names = (JSON.parse((await vmctl(['snapshot', 'list', VM, '--json'], { env })).stdout) as { name: string }[]).map((s) => s.name);
    expect(names.sort()).toEqual(['k2', 'k3']);
    for (const n of names) await ok(['snapshot', 'delete', VM, n]);
  });

  it('create killed after recording its files: the next snapshot command removes them, then works', async () => {
    const before = files();
    const k = await vmctl(['snapshot', 'create', VM, 'e1', '--disk-only'], { env: { ...env, VMCTL_FAULT: 'snapshot:after-record:kill' } });
    expect(k.code).toBe(128);
    const listed = (JSON.parse((await vmctl(['list', '--json'], { env })).stdout) as Listed[]).find((v) => v.name === VM);
    expect(listed?.incomplete).toMatchObject({ op: 'snapshot', step: 'record' });
    const r = await vmctl(['snapshot', 'create', VM, 'e1', '--disk-only', '--progress', 'plain'], { env });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/finished after an interrupted vmctl snapshot \(step 'record'\)/);
    expect(files()).toEqual([...before, `${VM}-vda.e1.qcow2`].sort());
  });

  it('delete killed after its merge (QEMU started paused for it): the next command stops QEMU, then the delete completes', async () => {
    const k = await vmctl(['snapshot', 'delete', VM, 'e1'], { env: { ...env, VMCTL_FAULT: 'snapshot-delete:after-merge:kill' } });
    expect(k.code).toBe(128);
    expect(virsh('domstate', VM).trim()).toBe('paused');
    const r = await vmctl(['snapshot', 'delete', VM, 'e1', '--progress', 'plain'], { env });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/finished after an interrupted vmctl snapshot-delete/);
    expect(virsh('domstate', VM).trim()).toBe('shut off');
    expect(virsh('domblklist', VM)).toContain(`/var/lib/vmctl/images/${VM}-root.qcow2`);
    expect(files()).toEqual([`${VM}-root.qcow2`, `${VM}-seed.iso`]);
    expect(JSON.parse((await vmctl(['snapshot', 'list', VM, '--json'], { env })).stdout)).toEqual([]);
  });

  it('revert killed after making its overlays: the next snapshot command removes them; the VM is as before', async () => {
    await ok(['snapshot', 'create', VM, 'r1', '--disk-only']);
    const before = files();
    const disk = virsh('domblklist', VM);
    const k = await vmctl(['snapshot', 'revert', VM, 'r1'], { env: { ...env, VMCTL_FAULT: 'snapshot-revert:after-overlays:kill' } });
    expect(k.code).toBe(128);
    expect(files().length).toBe(before.length + 1); // the new overlay, not yet used
    const r = await vmctl(['snapshot', 'list', VM], { env });
    expect(r.code).toBe(0);
    const again = await vmctl(['snapshot', 'create', VM, 'r2', '--disk-only', '--progress', 'plain'], { env });
    expect(again.code, again.stderr).toBe(0);
    expect(again.stderr).toMatch(/finished after an interrupted vmctl snapshot-revert \(step 'overlays'\): removed .*r1\.r/);
    expect(files()).toEqual([...before, `${VM}-vda.r2.qcow2`].sort());
    expect(disk).toContain(`${VM}-vda.r1.qcow2`);
    for (const n of ['r2', 'r1']) await ok(['snapshot', 'delete', VM, n]);
  });

  it('revert keeps the branch written since as a sibling, or deletes it with --discard', async () => {
    await ok(['snapshot', 'create', VM, 'd1', '--disk-only']);
    const kept = JSON.parse((await ok(['snapshot', 'revert', VM, 'd1', '--json'])).stdout) as { abandoned: string[]; overlays: string[] };
    expect(kept.abandoned.map((p) => p.split('/').pop())).toEqual([`${VM}-vda.d1.qcow2`]);
    expect(existsSync(kept.abandoned[0]!)).toBe(true);
    const gone = JSON.parse((await ok(['snapshot', 'revert', VM, 'd1', '--discard', '--json'])).stdout) as { abandoned: string[]; discarded: boolean };
    expect(gone.discarded).toBe(true);
    expect(gone.abandoned.map((p) => p.split('/').pop())).toEqual([kept.overlays[0]!.split('/').pop()]);
    expect(existsSync(gone.abandoned[0]!)).toBe(false);
    await ok(['snapshot', 'delete', VM, 'd1']);
    expect(files()).toEqual([`${VM}-root.qcow2`, `${VM}-seed.iso`]);
  });

  it('vmctl delete removes the files external snapshots made, and nothing else', async () => {
    await ok(['snapshot', 'create', VM, 'e2', '--disk-only']);
    const overlay = `/var/lib/vmctl/images/${VM}-vda.e2.qcow2`;
    expect(existsSync(overlay)).toBe(true);
    const d = await vmctl(['delete', VM], { env });
    expect(d.code, d.stderr).toBe(0);
    expect(existsSync(overlay)).toBe(false);
    expect(files()).toEqual([]);
  });
});
