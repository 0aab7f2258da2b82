/**
 * Snapshots of a running Debian guest under TCG, through vmctl only: for each
 * kind vmctl makes — internal (with memory), external disk-only, external with
 * memory — write a file over SSH, snapshot, change the file, revert: the
 * snapshot's content is back and the guest is in the requested state. External
 * reverts are vmctl's own (libvirt 9.0 cannot). Then the snapshots are deleted
 * and the disk's backing chain is one layer (the VM's overlay on its image)
 * again; `vmctl delete` leaves nothing behind.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { repoRoot } from '../_helpers/rig.js';
import { ensureBuilt, vmctl } from '../_helpers/vmctl.js';

const VM = 'snapvm';
const virsh = (...args: string[]) => execFileSync('virsh', ['-c', 'qemu:///system', ...args], { encoding: 'utf8' });
const domains = () => virsh('list', '--all', '--name').split('\n').filter(Boolean);
const volumes = () =>
  virsh('vol-list', 'vmctl')
    .split('\n')
    .slice(2)
    .map((l) => l.trim().split(/\s+/)[0]!)
    .filter(Boolean)
    .sort();

describe('snapshots: create, revert each kind, delete back to one layer (TCG)', () => {
  let env: NodeJS.ProcessEnv;
  let dataDir: string;
  let before: string[];

  const ssh = async (cmd: string) => {
    const r = await vmctl(['ssh', VM, '--', 'sh', '-c', `'${cmd}'`], { env, timeoutMs: 120_000 });
    expect(r.code, r.stderr).toBe(0);
    return r.stdout;
  };
  const snap = async (...args: string[]) => {
    const r = await vmctl(['snapshot', ...args, '--json'], { env, timeoutMs: 10 * 60_000 });
    expect(r.code, r.stderr).toBe(0);
    return JSON.parse(r.stdout) as Record<string, unknown>;
  };
  const waitSsh = async () => {
    for (let i = 0; i < 180; i++) {
      const r = await vmctl(['ssh', VM, '--', 'true'], { env, timeoutMs: 60_000 });
      if (r.code === 0) return;
      await new Promise((res) => setTimeout(res, 5000));
    }
    throw new Error('guest did not come back over ssh');
  };
  const chain = () => {
    const top = virsh('domblklist', VM).split('\n').find((l) => l.trim().startsWith('vda'))!.trim().split(/\s+/)[1]!;
    return execFileSync('qemu-img', ['info', '--backing-chain', '-U', top], { encoding: 'utf8' })
      .split('\n')
      .filter((l) => l.startsWith('image: '))
      .map((l) => l.slice(7));
  };

  beforeAll(async () => {
    ensureBuilt();
    dataDir = mkdtempSync(join(tmpdir(), 'vmctl-snap-'));
    env = { VMCTL_CACHE_DIR: join(repoRoot, '.cache'), VMCTL_DATA_DIR: dataDir, LIBVIRT_DEFAULT_URI: 'qemu:///system' };
    if (domains().includes(VM)) throw new Error(`a domain named ${VM} exists; remove it before running this test`);
    before = volumes();
    const r = await vmctl(['create', VM, '--accel', 'tcg', '--wait', 'ssh'], { env, timeoutMs: 20 * 60_000 });
    expect(r.code, r.stderr).toBe(0);
  }, 25 * 60_000);

  afterAll(async () => {
    if (domains().includes(VM)) await vmctl(['delete', VM], { env });
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('internal (running, with memory): revert brings the file back, guest running', { timeout: 10 * 60_000 }, async () => {
    await ssh('echo v1 > ~/f && sync');
    const s = await snap('create', VM, 's-int', '--description', 'before v2');
    expect(s).toMatchObject({ name: 's-int', kind: 'internal', memory: true });
    await ssh('echo v2 > ~/f && sync');
    const r = await snap('revert', VM, 's-int', '--running');
    expect(r).toMatchObject({ kind: 'internal', state: 'running' });
    expect(await ssh('cat ~/f')).toBe('v1\n');
  });

  it('external disk-only: vmctl reverts it itself (new overlay on the snapshot layer), guest boots back to it', { timeout: 20 * 60_000 }, async () => {
    await ssh('echo v3 > ~/f && sync');
    const s = await snap('create', VM, 's-ext', '--disk-only');
    // the guest agent answers in vmctl's image: a disk-only snapshot of a running guest freezes its filesystems by default
    expect(s).toMatchObject({ name: 's-ext', kind: 'external', memory: false, quiesced: true });
    expect(String(s.why)).toContain('--disk-only');
    await ssh('echo v4 > ~/f && sync');
    const r = await snap('revert', VM, 's-ext', '--running');
    expect(r).toMatchObject({ kind: 'external', state: 'running' });
    expect((r.abandoned as string[]).length).toBe(1); // the overlay that held v4, kept as a branch
    await waitSsh();
    expect(await ssh('cat ~/f')).toBe('v3\n');
  });

  it('external with memory: chosen because external snapshots exist, revert restores the memory, guest paused as asked', { timeout: 10 * 60_000 }, async () => {
    await ssh('echo v5 > ~/f && sync');
    const s = await snap('create', VM, 's-mem');
    expect(s).toMatchObject({ name: 's-mem', kind: 'external', memory: true });
    expect(String(s.why)).toMatch(/already has external snapshots/);
    await ssh('echo v6 > ~/f && sync');
    const r = await snap('revert', VM, 's-mem', '--paused');
    expect(r).toMatchObject({ kind: 'external', state: 'paused' });
    expect((await vmctl(['resume', VM], { env })).code).toBe(0);
    expect(await ssh('cat ~/f')).toBe('v5\n');
  });

  it('the tree: parents and children, the current one marked; an internal snapshot under external layers says what to do', async () => {
    const list = JSON.parse((await vmctl(['snapshot', 'list', VM, '--json'], { env })).stdout) as { name: string; parent?: string; current: boolean; kind: string; depth: number }[];
    expect(list.map((s) => [s.name, s.parent ?? null, s.depth])).toEqual([
      ['s-int', null, 0],
      ['s-ext', 's-int', 1],
      ['s-mem', 's-ext', 2],
    ]);
    expect(list.find((s) => s.current)?.name).toBe('s-mem');
    const human = await vmctl(['snapshot', 'list', VM], { env });
    expect(human.stdout).toMatch(/\* +└─ s-mem +external/);
    const r = await vmctl(['snapshot', 'revert', VM, 's-int'], { env });
    expect(r.code).toBe(4);
    expect(r.stderr).toMatch(/lives in a layer that external snapshots \(s-mem, s-ext\) were taken on top of \(delete those first/);
  });

  it('deleting the snapshots merges the layers back: one layer over the image, the data kept', { timeout: 20 * 60_000 }, async () => {
    expect(chain().length).toBeGreaterThan(2);
    await snap('delete', VM, 's-mem');
    await snap('delete', VM, 's-ext');
    expect(chain().map((p) => p.split('/').pop())).toEqual([`${VM}-root.qcow2`, 'img_debian-12.qcow2']);
    // the internal one is on top again: revertable, then deletable
    await snap('delete', VM, 's-int');
    expect(JSON.parse((await vmctl(['snapshot', 'list', VM, '--json'], { env })).stdout)).toEqual([]);
    expect(await ssh('cat ~/f')).toBe('v5\n');
    const del = await vmctl(['delete', VM], { env });
    expect(del.code, del.stderr).toBe(0);
    // nothing of this VM is left (other tests' volumes may come and go meanwhile)
    expect(volumes().filter((v) => v.startsWith(`${VM}-`) || v.startsWith(`${VM}.`))).toEqual([]);
    expect(volumes()).toEqual(expect.arrayContaining(before.filter((v) => v.startsWith('img_debian-12'))));
  });
});
