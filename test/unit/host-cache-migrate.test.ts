/** The cheap host facts the migrate pre-flight relies on: cached identity, KVM/TCG, CPU comparison. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { Connection } from '../../src/libvirt/connection.js';
import { HOST_IDENTITY_TTL_MS, compareHypervisorCpuCached, forgetHostIdentity, hostCapabilities, hostIdentity, hostIdentityCached, hostVirtType } from '../../src/core/host/cache.js';

const CAPS_KVM = "<capabilities><host/><guest><os_type>hvm</os_type><arch name='x86_64'><domain type='qemu'/><domain type='kvm'/></arch></guest></capabilities>";

/** A connection that answers the few calls these functions make, counting them. */
function fakeConn(o: { hv?: number; lib?: number; domcaps?: string | Error; caps?: string; compare?: number } = {}) {
  const calls: Record<string, number> = {};
  const count = (k: string) => (calls[k] = (calls[k] ?? 0) + 1);
  const conn = {
    uri: { transport: 'tcp', remoteName: 'qemu:///system', original: 'qemu+tcp://h/system' },
    transport: { description: 'tcp:10.0.0.1:16509' },
    hostname: async () => (count('hostname'), 'h1'),
    libVersion: async () => (count('libVersion'), o.lib ?? 9_000_000),
    hypervisorType: async () => (count('hypervisorType'), 'QEMU'),
    hypervisorVersion: async () => (count('hypervisorVersion'), o.hv ?? 7_002_000),
    capabilities: async () => (count('capabilities'), o.caps ?? CAPS_KVM),
    domainCapabilities: async () => {
      count('domainCapabilities');
      if (o.domcaps instanceof Error) throw o.domcaps;
      return o.domcaps ?? '<domainCapabilities><path>/usr/bin/qemu-system-x86_64</path><domain>qemu</domain></domainCapabilities>';
    },
    compareHypervisorCpu: async () => (count('compareHypervisorCpu'), o.compare ?? 2),
  };
  return { conn: conn as unknown as Connection, calls };
}

describe('host facts for the migrate pre-flight', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vmctl-hostcache-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('hostIdentityCached asks for the hypervisor version once per host and TTL, with the same key as hostIdentity', async () => {
    const d = join(dir, 'id');
    const a = fakeConn();
    const live = await hostIdentity(a.conn);
    const b = fakeConn();
    const first = await hostIdentityCached(b.conn, { dir: d });
    expect(first).toEqual(live);
    expect(b.calls.hypervisorVersion).toBe(1);
    const c = fakeConn();
    expect(await hostIdentityCached(c.conn, { dir: d })).toEqual(live);
    expect(c.calls.hypervisorVersion).toBeUndefined();
    expect(c.calls.hostname).toBe(1);
    // expired: asked again
    const e = fakeConn();
    await hostIdentityCached(e.conn, { dir: d, now: () => Date.now() + HOST_IDENTITY_TTL_MS + 1000 });
    expect(e.calls.hypervisorVersion).toBe(1);
  });

  it('a libvirt upgrade (or another host) misses; forgetHostIdentity drops the entry', async () => {
    const d = join(dir, 'id2');
    await hostIdentityCached(fakeConn().conn, { dir: d });
    const up = fakeConn({ lib: 9_001_000, hv: 8_000_000 });
    const id = await hostIdentityCached(up.conn, { dir: d });
    expect(up.calls.hypervisorVersion).toBe(1);
    expect(id.hypervisorVersion).toBe('8.0.0');
    forgetHostIdentity(up.conn, { dir: d });
    const again = fakeConn({ lib: 9_001_000, hv: 8_000_001 });
    expect((await hostIdentityCached(again.conn, { dir: d })).hypervisorVersion).toBe('8.0.1');
    expect(again.calls.hypervisorVersion).toBe(1);
  });

  it('hostVirtType: domain capabilities of the arch on a miss, then the cache; cached capabilities first', async () => {
    const d = join(dir, 'vt');
    const a = fakeConn();
    expect(await hostVirtType(a.conn, 'x86_64', { dir: d })).toEqual({ virtType: 'qemu', from: 'domcaps' });
    expect(a.calls.domainCapabilities).toBe(1);
    expect(a.calls.capabilities).toBeUndefined();
    const b = fakeConn();
    expect(await hostVirtType(b.conn, 'x86_64', { dir: d })).toEqual({ virtType: 'qemu', from: 'domcaps-cache' });
    expect(b.calls.domainCapabilities).toBeUndefined();
    // full capabilities in the cache (another command fetched them) win
    const c = fakeConn();
    await hostCapabilities(c.conn, { dir: d });
    const c2 = fakeConn();
    expect(await hostVirtType(c2.conn, 'x86_64', { dir: d })).toEqual({ virtType: 'kvm', from: 'capabilities-cache' });
    expect(c2.calls.capabilities).toBeUndefined();
  });

  it('hostVirtType falls back to the capabilities when the domain capabilities fail', async () => {
    const a = fakeConn({ domcaps: new Error('no emulator') });
    expect((await hostVirtType(a.conn, 'x86_64', { dir: join(dir, 'vt2') })).virtType).toBe('kvm');
    expect(a.calls.capabilities).toBe(1);
  });

  it('compareHypervisorCpuCached keeps compatible answers only, per CPU definition', async () => {
    const d = join(dir, 'cpu');
    const a = fakeConn({ compare: 2 });
    expect(await compareHypervisorCpuCached(a.conn, '<cpu mode="custom"><model>Haswell</model></cpu>', { arch: 'x86_64' }, { dir: d })).toEqual({ result: 2, fromCache: false });
    const b = fakeConn({ compare: 2 });
    expect(await compareHypervisorCpuCached(b.conn, '<cpu mode="custom"><model>Haswell</model></cpu>', { arch: 'x86_64' }, { dir: d })).toEqual({ result: 2, fromCache: true });
    expect(b.calls.compareHypervisorCpu).toBeUndefined();
    const c = fakeConn({ compare: 0 });
    expect(await compareHypervisorCpuCached(c.conn, '<cpu mode="custom"><model>Skylake</model></cpu>', { arch: 'x86_64' }, { dir: d })).toEqual({ result: 0, fromCache: false });
    const c2 = fakeConn({ compare: 0 });
    await compareHypervisorCpuCached(c2.conn, '<cpu mode="custom"><model>Skylake</model></cpu>', { arch: 'x86_64' }, { dir: d });
    expect(c2.calls.compareHypervisorCpu).toBe(1);
    // older than the TTL: asked again
    const e = fakeConn({ compare: 1 });
    expect((await compareHypervisorCpuCached(e.conn, '<cpu mode="custom"><model>Haswell</model></cpu>', { arch: 'x86_64' }, { dir: d, now: () => Date.now() + HOST_IDENTITY_TTL_MS + 1000 })).fromCache).toBe(false);
  });
});
