/**
 * Leases a killed command leaves on the real libvirtd (qemu:///system): once the object is gone
 * too (kill -9 after the delete or lab down removed it), no later command takes that lease over,
 * so `vmctl delete` of the missing VM removes a stale one (holder dead) and leaves a held one.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { currentHolder } from '../../src/core/op/holder.js';
import { recordSecretXml, type LeaseRecord } from '../../src/core/op/lease.js';
import { repoRoot } from '../_helpers/rig.js';
import { ensureBuilt, vmctl } from '../_helpers/vmctl.js';

const tag = `tls${process.pid.toString(36)}`;
const virsh = (...args: string[]) => execFileSync('virsh', ['-q', '-c', 'qemu:///system', ...args], { encoding: 'utf8' });
const leases = () =>
  virsh('secret-list')
    .split('\n')
    .map((l) => l.trim().split(/\s+/))
    .filter((f) => (f[2] ?? '').startsWith(`vmctl-lease/vm/${tag}-`))
    .map((f) => ({ uuid: f[0]!, usage: f[2]! }));

describe('stale leases of VMs that are gone', () => {
  let work: string;
  let env: NodeJS.ProcessEnv;
  beforeAll(() => {
    ensureBuilt();
    work = mkdtempSync(join(tmpdir(), 'vmctl-leases-'));
    env = { VMCTL_DATA_DIR: join(work, 'data'), VMCTL_CACHE_DIR: join(repoRoot, '.cache'), LIBVIRT_DEFAULT_URI: 'qemu:///system' };
  });
  afterAll(() => {
    for (const l of leases()) virsh('secret-undefine', l.uuid);
    rmSync(work, { recursive: true, force: true });
  });

  const define = (vm: string, holder: Partial<LeaseRecord>) => {
    const now = Date.now();
    const record: LeaseRecord = { ...currentHolder(), op: 'delete', opId: `op-${vm}`, since: new Date(now).toISOString(), expires: new Date(now + 30_000).toISOString(), ...holder };
    const file = join(work, `${vm}.xml`);
    writeFileSync(file, recordSecretXml(`vmctl-lease/vm/${vm}`, record));
    virsh('secret-define', file);
  };

  it('vmctl delete of a missing VM removes its dead holder\'s lease, and leaves a live holder\'s', async () => {
    define(`${tag}-dead`, { pid: 2 ** 30 }); // a pid that cannot exist: the holder on this machine is gone
    define(`${tag}-live`, {}); // held by this (live) test process
    for (const vm of [`${tag}-dead`, `${tag}-live`]) {
      const r = await vmctl(['delete', vm], { env });
      expect(r.code, r.stderr).toBe(3); // NOT_FOUND
      expect(r.stderr).toMatch(new RegExp(`no VM named '${vm}'`));
    }
    expect(leases().map((l) => l.usage)).toEqual([`vmctl-lease/vm/${tag}-live`]);
  });
});
