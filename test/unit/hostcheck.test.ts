/**
 * Pure parts of the host check: line rendering, evaluations, capabilities
 * parsing, the probe's domain XML, the pool's target path, the per-host cache.
 */
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { XMLParser } from 'fast-xml-parser';
import { afterAll, describe, expect, it } from 'vitest';
import {
  evaluateAccel,
  evaluateCpuFlags,
  evaluatePoolSpace,
  findOnPath,
  renderCheckLine,
  renderSummaryLine,
} from '../../src/core/host/check.js';
import { offersKvm, parseCapabilities, virtFlags } from '../../src/core/host/capabilities.js';
import { probeDomainXml, summarizeProbe, type AccelProbeResult, type ProbeRun } from '../../src/core/host/accel.js';
import { describePoolXml, poolTargetPath, vmctlPoolXml } from '../../src/core/storage/pool.js';
import { hostCachePath, readHostCache, writeHostCache, type HostIdentity } from '../../src/core/host/cache.js';
import { cacheDir } from '../../src/core/paths.js';
import { parseLibvirtUri } from '../../src/libvirt/uri.js';
import { VmctlError } from '../../src/core/errors.js';

const LINE_RE = /^(PASS|WARN|FAIL) {2}[^:]+: .+$/;

describe('check lines', () => {
  it('PASS: status, check, finding — never a fix', () => {
    const line = renderCheckLine({ status: 'PASS', check: '/dev/kvm', finding: 'present', fix: 'ignored' });
    expect(line).toBe('PASS  /dev/kvm: present');
    expect(line).toMatch(LINE_RE);
  });

  it('WARN and FAIL carry the fix after an em dash', () => {
    expect(renderCheckLine({ status: 'WARN', check: 'network', finding: 'none active', fix: 'virsh net-start default' })).toBe(
      'WARN  network: none active — virsh net-start default',
    );
    expect(renderCheckLine({ status: 'FAIL', check: 'free space in pool', finding: '100 MiB free of 10 GiB', fix: 'free space' })).toBe(
      'FAIL  free space in pool: 100 MiB free of 10 GiB — free space',
    );
    expect(renderCheckLine({ status: 'WARN', check: 'x', finding: 'y' })).toBe('WARN  x: y');
  });

  it('summary line counts and names what was not checked', () => {
    expect(renderSummaryLine({ counts: { PASS: 3, WARN: 1, FAIL: 0 }, notChecked: [], ok: true })).toBe('3 passed, 1 warning, 0 failed: VMs can run here');
    const s = renderSummaryLine({
      counts: { PASS: 1, WARN: 2, FAIL: 1 },
      notChecked: [{ id: 'kvm-device', check: '/dev/kvm', reason: 'remote' }],
      ok: false,
    });
    expect(s).toBe('1 passed, 2 warnings, 1 failed: VMs cannot run here until the FAILs are fixed; not checked on a remote host: /dev/kvm');
  });
});

describe('evaluations', () => {
  it('CPU flags: vmx/svm pass; none warns, naming a nested VM when the hypervisor flag is set', () => {
    expect(evaluateCpuFlags(['fpu', 'vmx', 'sse2'], '/proc/cpuinfo')).toMatchObject({ status: 'PASS', finding: 'vmx (Intel VT-x) in /proc/cpuinfo' });
    expect(evaluateCpuFlags(['svm'], 'caps').finding).toContain('svm (AMD-V)');
    const nested = evaluateCpuFlags(['fpu', 'hypervisor'], '/proc/cpuinfo');
    expect(nested.status).toBe('WARN');
    expect(nested.finding).toMatch(/itself a VM/);
    expect(nested.fix).toMatch(/TCG/);
    const bare = evaluateCpuFlags(['fpu'], '/proc/cpuinfo');
    expect(bare.fix).toMatch(/firmware/);
    expect(renderCheckLine(bare)).toMatch(LINE_RE);
    expect(virtFlags(['vmx', 'svm', 'vme'])).toEqual(['vmx', 'svm']);
  });

  it('pool space: FAIL below 512 MiB, WARN below 5 GiB, else PASS', () => {
    const G = 1024 ** 3;
    expect(evaluatePoolSpace(100 * 1024 ** 2, 10 * G).status).toBe('FAIL');
    expect(evaluatePoolSpace(2 * G, 10 * G)).toMatchObject({ status: 'WARN', finding: '2.0 GiB free of 10.0 GiB' });
    expect(evaluatePoolSpace(200 * G, 250 * G)).toMatchObject({ status: 'PASS', finding: '200 GiB free of 250 GiB' });
  });

  const run = (over: Partial<ProbeRun>): ProbeRun => ({
    domainType: 'kvm',
    attempted: true,
    completed: true,
    timedOut: false,
    ms: 1000,
    guestMs: 800,
    timeoutMs: 20000,
    ...over,
  });
  const probe = (kvm: ProbeRun, tcg: ProbeRun, kvmUsable: boolean, tcgUsable: boolean): AccelProbeResult => ({
    host: { hostname: 'h', libvirt: '9.0.0', qemu: '7.2.0', endpoint: 'unix:/x qemu:///system', key: 'k' },
    probedAt: '2026-01-01T00:00:00.000Z',
    fromCache: false,
    iterations: 1,
    kvm,
    tcg,
    kvmUsable,
    tcgUsable,
    summary: summarizeProbe({ kvm, tcg, kvmUsable, tcgUsable }),
    artifacts: { pool: 'vmctl', volume: 'v', domains: [] },
  });

  it('accelerator: KVM usable passes, TCG only warns, nothing fails; both timings in the finding', () => {
    const ok = evaluateAccel(probe(run({ ms: 500 }), run({ domainType: 'qemu', ms: 2500 }), true, true));
    expect(ok.status).toBe('PASS');
    expect(ok.finding).toBe('KVM usable (probe: KVM 0.50 s; TCG 2.50 s)');
    const slow = evaluateAccel(
      probe(run({ completed: false, timedOut: true, ms: 20003, error: 'x' }), run({ domainType: 'qemu', ms: 2870 }), false, true),
    );
    expect(slow.status).toBe('WARN');
    expect(slow.finding).toBe('KVM not usable, guests use TCG (probe: KVM unfinished after 20.00 s; TCG 2.87 s)');
    expect(renderCheckLine(slow)).toMatch(/^WARN {2}accelerator probe: .* — .*TCG/);
    const none = evaluateAccel(
      probe(
        { ...run({}), attempted: false, completed: false, ms: null, guestMs: null, skipped: 'libvirt on this host does not offer the kvm domain type' },
        run({ domainType: 'qemu', completed: false, ms: 300, error: 'boom' }),
        false,
        false,
      ),
    );
    expect(none.status).toBe('FAIL');
    expect(none.finding).toContain('KVM not tried (libvirt on this host does not offer the kvm domain type); TCG failed (boom)');
  });

  it('finds programs on PATH', () => {
    expect(findOnPath(['sh'], { PATH: '/nonexistent:/bin:/usr/bin' })?.name).toBe('sh');
    expect(findOnPath(['no-such-tool-vmctl'], { PATH: '/bin:/usr/bin' })).toBeUndefined();
  });
});

describe('capabilities', () => {
  const xml = `<capabilities>
  <host>
    <uuid>02df78a6-3dbe-43ac-a935-42ee11e8abb8</uuid>
    <cpu><arch>x86_64</arch><model>Broadwell</model><vendor>Intel</vendor>
      <feature name='vme'/><feature name='vmx'/><feature name='hypervisor'/></cpu>
  </host>
  <guest><os_type>hvm</os_type>
    <arch name='i686'><emulator>/usr/bin/qemu-system-i386</emulator><domain type='qemu'/></arch>
  </guest>
  <guest><os_type>hvm</os_type>
    <arch name='x86_64'><wordsize>64</wordsize><emulator>/usr/bin/qemu-system-x86_64</emulator>
      <machine>pc</machine><domain type='qemu'/><domain type='kvm'/></arch>
  </guest>
</capabilities>`;

  it('reads host uuid, CPU features and the domain types per arch', () => {
    const caps = parseCapabilities(xml);
    expect(caps.uuid).toBe('02df78a6-3dbe-43ac-a935-42ee11e8abb8');
    expect(caps.arch).toBe('x86_64');
    expect(caps.cpuFeatures).toEqual(['vme', 'vmx', 'hypervisor']);
    expect(caps.guests).toEqual([
      { osType: 'hvm', arch: 'i686', emulator: '/usr/bin/qemu-system-i386', domainTypes: ['qemu'] },
      { osType: 'hvm', arch: 'x86_64', emulator: '/usr/bin/qemu-system-x86_64', domainTypes: ['qemu', 'kvm'] },
    ]);
    expect(offersKvm(caps)).toBe(true);
    expect(offersKvm(caps, 'i686')).toBe(false);
  });

  it('a single feature and a single domain type still come out as lists', () => {
    const caps = parseCapabilities(
      "<capabilities><host><cpu><arch>x86_64</arch><feature name='svm'/></cpu></host><guest><os_type>hvm</os_type><arch name='x86_64'><domain type='qemu'/></arch></guest></capabilities>",
    );
    expect(caps.cpuFeatures).toEqual(['svm']);
    expect(offersKvm(caps)).toBe(false);
  });
});

describe('probe domain XML', () => {
  const parser = new XMLParser({ ignoreAttributes: false, attributeNamePrefix: '@_', parseTagValue: false });

  it('is a minimal domain with the boot volume and isa-debug-exit through the qemu namespace', () => {
    const xml = probeDomainXml({ name: 'vmctl-accel-probe-x-kvm', domainType: 'kvm', pool: 'vmctl', volume: 'p.img' });
    const d = parser.parse(xml).domain;
    expect(d['@_type']).toBe('kvm');
    expect(d['@_xmlns:qemu']).toBe('http://libvirt.org/schemas/domain/qemu/1.0');
    expect(d.name).toBe('vmctl-accel-probe-x-kvm');
    expect(d.memory).toEqual({ '@_unit': 'MiB', '#text': '32' });
    expect(d.devices.disk.source).toEqual({ '@_pool': 'vmctl', '@_volume': 'p.img' });
    expect(d.devices.disk.target).toEqual({ '@_dev': 'hda', '@_bus': 'ide' });
    expect(Object.keys(d.devices).sort()).toEqual(['controller', 'disk', 'memballoon']);
    expect(d.devices.controller).toEqual({ '@_type': 'usb', '@_model': 'none' });
    expect(d['qemu:commandline']['qemu:arg']).toEqual([{ '@_value': '-device' }, { '@_value': 'isa-debug-exit,iobase=0xf4,iosize=0x04' }]);
    expect(parser.parse(probeDomainXml({ name: 'n', domainType: 'qemu', pool: 'vmctl', volume: 'v' })).domain['@_type']).toBe('qemu');
  });

  it('escapes what it is given (built by a library, not pasted)', () => {
    const xml = probeDomainXml({ name: 'a<b&"c', domainType: 'qemu', pool: 'vmctl', volume: "v'<>" });
    const d = parser.parse(xml).domain;
    expect(d.name).toBe('a<b&"c');
    expect(d.devices.disk.source['@_volume']).toBe("v'<>");
  });
});

describe('vmctl pool', () => {
  it('lives in /var/lib/vmctl/images for system URIs, local or remote', () => {
    for (const u of ['qemu:///system', 'qemu+ssh://root@h/system', 'qemu+tcp://127.0.0.1:16509/system']) {
      expect(poolTargetPath({ uri: parseLibvirtUri(u) }, {})).toBe('/var/lib/vmctl/images');
    }
  });

  it('lives under the XDG data dir for the local session daemon; a remote session is refused', () => {
    expect(poolTargetPath({ uri: parseLibvirtUri('qemu:///session') }, { HOME: '/home/u' })).toBe('/home/u/.local/share/vmctl/images');
    expect(poolTargetPath({ uri: parseLibvirtUri('qemu:///session') }, { HOME: '/home/u', XDG_DATA_HOME: '/data' })).toBe('/data/vmctl/images');
    expect(() => poolTargetPath({ uri: parseLibvirtUri('qemu+ssh://u@h/session') }, {})).toThrow(VmctlError);
  });

  it('pool XML round-trips through describePoolXml', () => {
    expect(describePoolXml(vmctlPoolXml('/var/lib/vmctl/images'))).toEqual({ type: 'dir', path: '/var/lib/vmctl/images' });
    expect(describePoolXml("<pool type='logical'><name>vmctl</name><target><path>/dev/vg</path></target></pool>").type).toBe('logical');
  });
});

describe('per-host cache', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vmctl-cache-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const id = (key: string): HostIdentity => ({
    key,
    hostname: 'h',
    libvirtVersion: '9.0.0',
    hypervisorType: 'QEMU',
    hypervisorVersion: '7.2.0',
    endpoint: 'unix:/run/libvirt/libvirt-sock qemu:///system',
    local: true,
  });

  it('uses $VMCTL_CACHE_DIR, else $XDG_CACHE_HOME/vmctl, else ~/.cache/vmctl', () => {
    expect(cacheDir({ VMCTL_CACHE_DIR: '/v/cache', XDG_CACHE_HOME: '/x/cache', HOME: '/home/u' })).toBe('/v/cache');
    expect(cacheDir({ XDG_CACHE_HOME: '/x/cache', HOME: '/home/u' })).toBe('/x/cache/vmctl');
    expect(cacheDir({ HOME: '/home/u' })).toBe('/home/u/.cache/vmctl');
    expect(cacheDir({ XDG_CACHE_HOME: 'relative', HOME: '/home/u' })).toBe('/home/u/.cache/vmctl');
  });

  it('writes into $VMCTL_CACHE_DIR (owner-only) when no dir is given, never into ~/.cache', () => {
    const saved = { VMCTL_CACHE_DIR: process.env.VMCTL_CACHE_DIR, HOME: process.env.HOME, XDG_CACHE_HOME: process.env.XDG_CACHE_HOME };
    const home = join(dir, 'home');
    const vmctlCache = join(dir, 'vmctl-cache-dir');
    mkdirSync(vmctlCache, { mode: 0o755 });
    chmodSync(vmctlCache, 0o755);
    try {
      process.env.HOME = home;
      delete process.env.XDG_CACHE_HOME;
      process.env.VMCTL_CACHE_DIR = vmctlCache;
      const path = writeHostCache('accel', id('env'), { ok: 1 });
      expect(path).toBe(join(vmctlCache, 'hosts', `accel-${id('env').key}.json`));
      expect(hostCachePath('accel', id('env'))).toBe(path);
      expect(readHostCache('accel', id('env'))?.value).toEqual({ ok: 1 });
      expect(statSync(join(vmctlCache, 'hosts')).mode & 0o777).toBe(0o700);
      // the cache root itself is left as it was (the QEMU user may need to pass through it)
      expect(statSync(vmctlCache).mode & 0o777).toBe(0o755);
      expect(() => statSync(join(home, '.cache'))).toThrow();
    } finally {
      for (const [k, v] of Object.entries(saved)) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    }
  });

  it('returns what was written for the same host while fresh, privately stored', () => {
    const path = writeHostCache('capabilities', id('aaa'), '<capabilities/>', { dir });
    expect(path).toBe(hostCachePath('capabilities', id('aaa'), dir));
    expect(statSync(path!).mode & 0o777).toBe(0o600);
    expect(readHostCache<string>('capabilities', id('aaa'), { dir })?.value).toBe('<capabilities/>');
  });

  it('misses for another host, another kind, an expired or a corrupt entry', () => {
    const t0 = Date.parse('2026-01-01T00:00:00Z');
    writeHostCache('accel', id('bbb'), { x: 1 }, { dir, now: () => t0 });
    expect(readHostCache('accel', id('bbb'), { dir, now: () => t0 + 1000 })?.value).toEqual({ x: 1 });
    expect(readHostCache('accel', id('ccc'), { dir, now: () => t0 })).toBeUndefined();
    expect(readHostCache('capabilities', id('bbb'), { dir, now: () => t0 })).toBeUndefined();
    expect(readHostCache('accel', id('bbb'), { dir, now: () => t0 + 8 * 24 * 3600 * 1000 })).toBeUndefined();
    expect(readHostCache('accel', id('bbb'), { dir, now: () => t0 + 1000, ttlMs: 500 })).toBeUndefined();
    const path = hostCachePath('accel', id('bbb'), dir);
    const entry = JSON.parse(readFileSync(path, 'utf8')) as { key: string };
    writeFileSync(path, JSON.stringify({ ...entry, key: 'other' }));
    expect(readHostCache('accel', id('bbb'), { dir, now: () => t0 })).toBeUndefined();
    writeFileSync(path, '{ not json');
    expect(readHostCache('accel', id('bbb'), { dir, now: () => t0 })).toBeUndefined();
  });

  it('a cache that cannot be written is not an error', () => {
    expect(writeHostCache('accel', id('ddd'), 1, { dir: '/dev/null/vmctl' })).toBeUndefined();
  });
});

