/**
 * `vmctl host check` against the real daemons: the main libvirtd
 * (qemu:///system, local: /proc, /sys, /dev are read) and the rig's second
 * libvirtd over TCP (remote-style: capabilities only, no kvm domain type).
 *
 * On this machine /dev/kvm opens and libvirt offers the kvm domain type, but
 * the CPU has no vmx/svm: the functional probe must find KVM unusable (its run
 * does not finish, or is slower than TCG) while TCG runs the probe guest to
 * the end. The probe must leave no domain and no volume behind, its result is
 * cached per host (second run fast), `--refresh` probes again, and
 * chooseAccel() follows the probe.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureRig, type RigEnv } from '../_helpers/rig.js';
import { ensureBuilt, vmctl } from '../_helpers/vmctl.js';
import { Connection } from '../../src/libvirt/connection.js';
import { chooseAccel, PROBE_NAME_PREFIX, type AccelProbeResult } from '../../src/core/host/accel.js';
import { ensurePool, poolFreeBytes, SYSTEM_POOL_PATH, VMCTL_POOL } from '../../src/core/storage/pool.js';
import { buildProbeDisk, hasProof, BOOT_SECTOR_SIZE } from '../../src/core/host/bootsector.js';
import { VmctlError } from '../../src/core/errors.js';
import type { HostCheckReport } from '../../src/core/host/check.js';

const SYSTEM = 'qemu:///system';
const LINE_RE = /^(PASS|WARN|FAIL) {2}[^:]+: .+$/;

function virsh(uri: string, ...args: string[]): string {
  return execFileSync('virsh', ['-c', uri, ...args], { encoding: 'utf8' });
}

function domainNames(uri: string): string[] {
  return virsh(uri, 'list', '--all', '--name').split('\n').map((s) => s.trim()).filter(Boolean);
}

/** Volumes of vmctl's pool ([] while the pool does not exist yet). */
function volumeNames(uri: string): string[] {
  if (!virsh(uri, 'pool-list', '--all', '--name').split('\n').map((s) => s.trim()).includes(VMCTL_POOL)) return [];
  virsh(uri, 'pool-refresh', VMCTL_POOL);
  return virsh(uri, 'vol-list', VMCTL_POOL)
    .split('\n')
    .slice(2)
    .map((l) => l.trim().split(/\s+/)[0] ?? '')
    .filter(Boolean);
}

function versionsFromVirsh(uri: string): { libvirt: string; qemu: string } {
  const out = virsh(uri, 'version');
  return {
    libvirt: /Running against daemon: (\S+)/.exec(virsh(uri, 'version', '--daemon'))![1]!,
    qemu: /Running hypervisor: QEMU (\S+)/.exec(out)![1]!,
  };
}

/** df's "Avail" (f_bavail) in bytes */
function dfAvailable(path: string): number {
  return Number(execFileSync('df', ['-B1', '--output=avail', path], { encoding: 'utf8' }).split('\n')[1]!.trim());
}

function parseReport(stdout: string): HostCheckReport {
  return JSON.parse(stdout) as HostCheckReport;
}

function check(r: HostCheckReport, id: string) {
  const c = r.checks.find((x) => x.id === id);
  expect(c, `check ${id} in ${r.checks.map((x) => x.id).join(',')}`).toBeDefined();
  return c!;
}

function probeOf(r: HostCheckReport): AccelProbeResult {
  return check(r, 'accel').data as unknown as AccelProbeResult;
}

/** What a run of the probe left in libvirt: none of its own names, nothing new with its prefix. */
function expectNothingLeft(uri: string, probe: AccelProbeResult, before: { doms: string[]; vols: string[] }) {
  const doms = domainNames(uri);
  const vols = volumeNames(uri);
  for (const d of probe.artifacts.domains) expect(doms).not.toContain(d);
  expect(vols).not.toContain(probe.artifacts.volume);
  expect(doms.filter((d) => d.startsWith(PROBE_NAME_PREFIX) && !before.doms.includes(d))).toEqual([]);
  expect(vols.filter((v) => v.startsWith(PROBE_NAME_PREFIX) && !before.vols.includes(v))).toEqual([]);
}

describe('vmctl host check', () => {
  let rig: RigEnv;
  let cacheHome: string;
  // (its own host cache: VMCTL_CACHE_DIR in the caller's environment would point the CLI at another)
  const env = () => ({ XDG_CACHE_HOME: cacheHome, VMCTL_CACHE_DIR: '', LIBVIRT_DEFAULT_URI: '' });
  let first: HostCheckReport;
  let firstMs = 0;

  beforeAll(async () => {
    ensureBuilt();
    rig = await ensureRig();
    cacheHome = mkdtempSync(join(tmpdir(), 'vmctl-hostcheck-cache-'));
    // vmctl's pool exists before the "nothing left behind" comparison
    const conn = await Connection.open(SYSTEM);
    try {
      await ensurePool(conn);
    } finally {
      await conn.close();
    }
  });

  afterAll(() => {
    if (cacheHome) rmSync(cacheHome, { recursive: true, force: true });
  });

  it('over qemu:///system: KVM not usable, TCG runs the probe, both timed; versions as virsh says; nothing left behind', async () => {
    const before = { doms: domainNames(SYSTEM), vols: volumeNames(SYSTEM) };
    const t0 = Date.now();
    const r = await vmctl(['host', 'check', '--json', '--connect', SYSTEM], { env: env() });
    firstMs = Date.now() - t0;
    expect(r.code, r.stderr).toBe(0); // warnings only: VMs are possible (under TCG)
    first = parseReport(r.stdout);
    expect(first.local).toBe(true);
    expect(first.ok).toBe(true);
    expect(first.notChecked).toEqual([]);

    const p = probeOf(first);
    expect(p.fromCache).toBe(false);
    expect(p.kvmUsable).toBe(false);
    expect(p.tcgUsable).toBe(true);
    // KVM was really tried (libvirt offers it here) and timed
    expect(p.kvm.attempted).toBe(true);
    expect(p.kvm.ms).toBeGreaterThan(0);
    expect(p.kvm.completed && p.kvm.ms! < p.tcg.ms!).toBe(false);
    // TCG ran the guest to the end (proof sector written, isa-debug-exit)
    expect(p.tcg).toMatchObject({ domainType: 'qemu', attempted: true, completed: true, timedOut: false });
    expect(p.tcg.ms).toBeGreaterThan(0);
    expect(p.tcg.ms).toBeLessThan(p.tcg.timeoutMs);
    expect(p.summary).toMatch(/^KVM not usable, guests use TCG \(probe: KVM .*\d+\.\d\d s.*; TCG \d+\.\d\d s\)$/);
    expect(check(first, 'accel').status).toBe('WARN');
    expect(check(first, 'libvirt-kvm').status).toBe('PASS'); // libvirt's word, which the probe overrules
    expect(check(first, 'cpu-virt')).toMatchObject({ status: 'WARN', data: { source: '/proc/cpuinfo', flags: [] } });
    expect(check(first, 'kvm-device').status).toBe('PASS');
    check(first, 'nested');

    const v = versionsFromVirsh(SYSTEM);
    expect(check(first, 'versions')).toMatchObject({ status: 'PASS', data: { libvirt: v.libvirt, qemu: v.qemu, hypervisorType: 'QEMU' } });
    expect(p.host.libvirt).toBe(v.libvirt);
    expect(p.host.qemu).toBe(v.qemu);
    expect(p.host.uuid).toBe(/<uuid>([^<]+)<\/uuid>/.exec(virsh(SYSTEM, 'capabilities'))![1]);

    expect(check(first, 'pool')).toMatchObject({ status: 'PASS', data: { type: 'dir', path: SYSTEM_POOL_PATH, active: true } });
    const space = check(first, 'pool-space').data as { available: number; capacity: number };
    expect(space.capacity).toBeGreaterThan(0);
    expect(Math.abs(space.available - dfAvailable(SYSTEM_POOL_PATH))).toBeLessThan(512 * 1024 ** 2);
    expect(check(first, 'iso-tool')).toMatchObject({ status: 'PASS' });
    check(first, 'network');
    for (const c of first.checks) {
      if (c.status === 'PASS') expect(c.fix, c.id).toBeUndefined();
      else expect(c.fix, c.id).toBeTruthy();
    }
    expect(first.counts.FAIL).toBe(0);
    expect(first.counts.PASS + first.counts.WARN).toBe(first.checks.length);

    expectNothingLeft(SYSTEM, p, before);
  }, 180_000);

  it('uses the cached probe on the second run (fast), also for the human output', async () => {
    const t0 = Date.now();
    const r = await vmctl(['doctor', '--json'], { env: { ...env(), LIBVIRT_DEFAULT_URI: SYSTEM } });
    const ms = Date.now() - t0;
    expect(r.code, r.stderr).toBe(0);
    const p = probeOf(parseReport(r.stdout));
    expect(p.fromCache).toBe(true);
    expect(p.probedAt).toBe(probeOf(first).probedAt);
    expect(p.kvm.ms).toBe(probeOf(first).kvm.ms);
    expect(ms).toBeLessThan(Math.min(10_000, firstMs / 2));
    expect(readFileSync(p.cachePath!, 'utf8')).toContain(p.host.key);

    const text = await vmctl(['host', 'check'], { env: { ...env(), LIBVIRT_DEFAULT_URI: SYSTEM } });
    expect(text.code, text.stderr).toBe(0);
    const lines = text.stdout.trim().split('\n');
    const checkLines = lines.slice(0, -1);
    expect(checkLines).toHaveLength(first.checks.length);
    for (const l of checkLines) expect(l).toMatch(LINE_RE);
    for (const l of checkLines.filter((x) => x.startsWith('PASS'))) expect(l).not.toContain(' — ');
    expect(checkLines.find((l) => /^\w+ {2}accelerator probe:/.test(l))).toMatch(/^WARN {2}accelerator probe: KVM not usable, guests use TCG .*\[cached .* — /);
    expect(lines.at(-1)).toMatch(/^\d+ passed, \d+ warnings?, 0 failed: VMs can run here$/);
  }, 60_000);

  it('--refresh ignores the cache and probes again, again leaving nothing behind', async () => {
    const before = { doms: domainNames(SYSTEM), vols: volumeNames(SYSTEM) };
    const r = await vmctl(['host', 'check', '--json', '--refresh', '--connect', SYSTEM], { env: env() });
    expect(r.code, r.stderr).toBe(0);
    const p = probeOf(parseReport(r.stdout));
    expect(p.fromCache).toBe(false);
    expect(Date.parse(p.probedAt)).toBeGreaterThan(Date.parse(probeOf(first).probedAt));
    expect(p.artifacts.volume).not.toBe(probeOf(first).artifacts.volume);
    expect(p.kvmUsable).toBe(false);
    expect(p.tcg.completed).toBe(true);
    expect(p.kvm.attempted).toBe(true);
    expectNothingLeft(SYSTEM, p, before);
  }, 180_000);

  it('over the rig (tcp, remote-style): capabilities instead of /proc, no kvm type so KVM is not tried, TCG works', async () => {
    const before = { doms: domainNames(rig.tcpUri), vols: volumeNames(rig.tcpUri) };
    const r = await vmctl(['host', 'check', '--json', '--connect', rig.tcpUri], { env: env() });
    expect(r.code, r.stderr).toBe(0);
    const rep = parseReport(r.stdout);
    expect(rep.local).toBe(false);
    expect(rep.notChecked.map((n) => n.id).sort()).toEqual(['kvm-device', 'nested']);
    expect(rep.checks.map((c) => c.id)).not.toContain('kvm-device');
    expect(check(rep, 'cpu-virt').data).toMatchObject({ source: "libvirt's host capabilities" });
    expect(check(rep, 'libvirt-kvm').status).toBe('WARN');
    const p = probeOf(rep);
    expect(p.host.uuid).toBe(rig.hostUuid); // not the main daemon's cache entry
    expect(p.kvm).toMatchObject({ attempted: false, completed: false });
    expect(p.kvm.skipped).toMatch(/kvm domain type/);
    expect(p.tcg).toMatchObject({ attempted: true, completed: true });
    expect(p.kvmUsable).toBe(false);
    const v = versionsFromVirsh(rig.tcpUri);
    expect(check(rep, 'versions').data).toMatchObject({ libvirt: v.libvirt, qemu: v.qemu });
    expect(check(rep, 'pool').status).toBe('PASS');
    expectNothingLeft(rig.tcpUri, p, before);
    expect(r.stdout).not.toContain('/proc/cpuinfo');
  }, 120_000);

  it('chooseAccel: auto gives qemu with a loud warning, explicit kvm is an error with a hint, tcg needs no probe', async () => {
    const conn = await Connection.open(SYSTEM);
    try {
      const cache = { dir: join(cacheHome, 'vmctl', 'hosts') }; // where the CLI keeps host caches (host/cache.ts hostCacheDir)
      const auto = await chooseAccel(conn, 'auto', undefined, { cache });
      expect(auto.domainType).toBe('qemu');
      expect(auto.warning).toMatch(/KVM IS NOT USABLE/);
      expect(auto.warning).toMatch(/TCG/);
      expect(auto.probe?.fromCache).toBe(true); // the CLI runs above filled the cache
      const err = await chooseAccel(conn, 'kvm', undefined, { cache }).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(VmctlError);
      expect((err as VmctlError).code).toBe('UNSUPPORTED');
      expect((err as VmctlError).message).toMatch(/KVM is not usable/);
      expect((err as VmctlError).hint).toMatch(/--accel tcg/);
      const tcg = await chooseAccel(conn, 'tcg');
      expect(tcg).toEqual({ domainType: 'qemu', reason: expect.stringMatching(/TCG/) });
    } finally {
      await conn.close();
    }
  }, 60_000);

  it('ensurePool is idempotent and reports the pool free space', async () => {
    const conn = await Connection.open(SYSTEM);
    try {
      const a = await ensurePool(conn);
      const b = await ensurePool(conn);
      expect(b.action).toBe('none');
      expect(a.path).toBe(SYSTEM_POOL_PATH);
      expect(b.pool.name).toBe(VMCTL_POOL);
      expect(virsh(SYSTEM, 'pool-info', VMCTL_POOL)).toMatch(/State:\s+running[\s\S]*Autostart:\s+yes/);
      const free = await poolFreeBytes(conn);
      const df = dfAvailable(SYSTEM_POOL_PATH);
      // what df calls available (f_bavail: not libvirt's f_bfree, which counts root's reserve), moments apart
      expect(Math.abs(Number(free) - Number(df))).toBeLessThan(512 * 1024 ** 2);
      expect(Number(free)).toBeLessThanOrEqual(Number(virsh(SYSTEM, 'pool-info', VMCTL_POOL, '--bytes').match(/Available:\s+(\d+)/)![1]));
    } finally {
      await conn.close();
    }
  });

  it("the boot sector runs on QEMU itself: writes its proof sector and exits through isa-debug-exit", () => {
    const dir = mkdtempSync(join(tmpdir(), 'vmctl-bootsector-'));
    try {
      const img = join(dir, 'probe.img');
      const disk = buildProbeDisk(1000);
      writeFileSync(img, disk);
      const r = spawnSync(
        'qemu-system-x86_64',
        ['-accel', 'tcg', '-machine', 'pc', '-m', '16', '-nodefaults', '-display', 'none', '-no-reboot',
          '-drive', `file=${img},format=raw,if=ide`, '-device', 'isa-debug-exit,iobase=0xf4,iosize=0x04'],
        { timeout: 30_000, encoding: 'utf8' },
      );
      expect(r.error).toBeUndefined();
      expect(r.status, r.stderr).toBe(1); // isa-debug-exit: (0 << 1) | 1
      const after = readFileSync(img);
      expect(hasProof(after.subarray(BOOT_SECTOR_SIZE), disk.subarray(0, BOOT_SECTOR_SIZE))).toBe(true);
      expect(after.subarray(0, BOOT_SECTOR_SIZE).equals(disk.subarray(0, BOOT_SECTOR_SIZE))).toBe(true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
