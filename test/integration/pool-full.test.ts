/**
 * A full storage pool, for real: on the rig's second libvirtd (reached over
 * tcp, like a remote host) a small tmpfs is mounted over its vmctl pool
 * directory, inside that host's own mount namespace. `create` must refuse up
 * front, and an upload that runs out of space half-way must be rolled back;
 * both with one clear line, exit code 8, and nothing left behind.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Connection } from '../../src/libvirt/connection.js';
import { ensurePool } from '../../src/core/storage/pool.js';
import { ensureRig, repoRoot, type RigEnv } from '../_helpers/rig.js';
import { ensureBuilt, vmctl } from '../_helpers/vmctl.js';

const rigExec = (...cmd: string[]) =>
  execFileSync('bash', [join(repoRoot, 'scripts', 'test-rig.sh'), 'exec', 'host1', ...cmd], { encoding: 'utf8' });

describe('a full storage pool', () => {
  let rig: RigEnv;
  let conn: Connection;
  let poolPath: string;
  let work: string;
  let mounted = false;

  const snapshot = async () => ({
    domains: (await conn.listDomains({ inactive: true })).map((d) => d.name).sort(),
    volumes: (await (await conn.lookupStoragePool('vmctl')).listVolumes()).map((v) => v.name).sort(),
  });

  async function fillPool(size: string): Promise<void> {
    if (mounted) rigExec('umount', poolPath);
    rigExec('mount', '-t', 'tmpfs', '-o', `size=${size}`, 'vmctl-full-test', poolPath);
    mounted = true;
    await (await conn.lookupStoragePool('vmctl')).refresh();
  }

  beforeAll(async () => {
    ensureBuilt();
    rig = await ensureRig();
    conn = await Connection.open(rig.tcpUri);
    poolPath = (await ensurePool(conn)).path;
    work = mkdtempSync(join(tmpdir(), 'vmctl-full-'));
  });

  afterAll(async () => {
    if (mounted) rigExec('umount', poolPath);
    await (await conn?.lookupStoragePool('vmctl'))?.refresh().catch(() => undefined);
    await conn?.close();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('create refuses up front, naming the free space and the fix', async () => {
    await fillPool('64M');
    const before = await snapshot();
    const r = await vmctl(['create', 'fullvm', '--connect', rig.tcpUri, '--accel', 'tcg']);
    expect(r.code, r.stderr).toBe(8);
    const lines = r.stderr.trim().split('\n').filter((l) => l.startsWith('vmctl: '));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/storage pool 'vmctl' on qemu\+tcp:.* is full: \d+ MiB free at \/var\/lib\/vmctl\/images, a new VM needs at least \d+ MiB/);
    expect(lines[0]).toMatch(/vmctl delete|vmctl image rm/);
    expect(await snapshot()).toEqual(before);
  });

  it('an upload that runs out of space half-way is rolled back', async () => {
    await fillPool('4M');
    const file = join(work, 'big.raw');
    writeFileSync(file, randomBytes(16 * 1024 * 1024));
    const before = await snapshot();
    const r = await vmctl(['image', 'import', file, '--name', 'toobig', '--connect', rig.tcpUri]);
    expect(r.code, r.stderr).toBe(8);
    const lines = r.stderr.trim().split('\n').filter((l) => l.startsWith('vmctl: '));
    expect(lines.at(-1)).toMatch(/space|full/i);
    expect(await snapshot()).toEqual(before);
    expect(rigExec('ls', '-A', poolPath).trim()).toBe('');
  });
});
