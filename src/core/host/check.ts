/**
 * `vmctl host check` / `vmctl doctor`: can this host run VMs, and how well?
 *
 * One result per check: PASS, WARN (VMs work, but something is missing or
 * slow) or FAIL (VMs are impossible until it is fixed), with the finding and,
 * unless PASS, the fix. What is read from the machine itself (/proc, /sys,
 * /dev) is only checked when the connection is local (a unix socket); for
 * remote hosts vmctl relies on libvirt's capabilities and the functional
 * accelerator probe, which both run on the remote host. The ISO tool is a
 * client-side tool (vmctl builds cloud-init seeds locally), so it is always
 * checked here.
 */
import { accessSync, constants as fsConstants, existsSync, openSync, closeSync, readFileSync, readdirSync, statSync, statfsSync } from 'node:fs';
import { delimiter, dirname, join } from 'node:path';
import type { Connection } from '../../libvirt/connection.js';
import { silentLogger, type Logger } from '../log.js';
import { toVmctlError } from '../errors.js';
import { hostCapabilities, hostIdentity, type CacheOptions } from './cache.js';
import { hvmGuest, offersKvm, parseCapabilities, virtFlags, type HostCapabilities } from './capabilities.js';
import { probeAccelerators, type AccelProbeResult } from './accel.js';
import { checkInterrupted, interruptedOperations } from '../op/recovery.js';
import { findPool, localAvailableBytes, poolSpace, poolTargetPath, VMCTL_POOL } from '../storage/pool.js';

export type CheckStatus = 'PASS' | 'WARN' | 'FAIL';

export interface CheckResult {
  /** stable id for scripts: 'cpu-virt', 'kvm-device', ... */
  id: string;
  /** what is checked, for humans */
  check: string;
  status: CheckStatus;
  finding: string;
  /** how to fix it; only when not PASS */
  fix?: string;
  data?: Record<string, unknown>;
}

export interface HostCheckReport {
  uri: string;
  hostname: string;
  local: boolean;
  /** false when any check FAILed: VMs are impossible on this host as it is */
  ok: boolean;
  counts: Record<CheckStatus, number>;
  checks: CheckResult[];
  /** checks that only make sense locally, skipped for a remote host */
  notChecked: { id: string; check: string; reason: string }[];
}

export interface HostCheckOptions {
  /** ignore cached capabilities and probe results */
  refresh?: boolean;
  /** run the accelerator probe when there is no cached result (default true) */
  probe?: boolean;
  log?: Logger;
  cache?: CacheOptions;
  kvmTimeoutMs?: number;
  /** for tests: where /proc, /sys and /dev are read from (default '/') */
  root?: string;
  env?: NodeJS.ProcessEnv;
}

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;
/** below this a VM's disk cannot even be created: FAIL */
export const POOL_SPACE_FAIL_BYTES = 512 * MiB;
/** below this a default VM (4 GiB disk) may run out: WARN */
export const POOL_SPACE_WARN_BYTES = 5 * GiB;
/** the libvirt release vmctl's protocol code comes from; older daemons get a warning */
const MIN_TESTED_LIBVIRT = 9_000_000;

// ---- rendering ----------------------------------------------------------------------------

/** `PASS  <check>: <finding>` or `WARN  <check>: <finding> — <fix>` */
export function renderCheckLine(c: Pick<CheckResult, 'status' | 'check' | 'finding' | 'fix'>): string {
  const fix = c.status !== 'PASS' && c.fix ? ` — ${c.fix}` : '';
  return `${c.status}  ${c.check}: ${c.finding}${fix}`;
}

export function renderSummaryLine(r: Pick<HostCheckReport, 'counts' | 'notChecked' | 'ok'>): string {
  const parts = [`${r.counts.PASS} passed`, `${r.counts.WARN} warning${r.counts.WARN === 1 ? '' : 's'}`, `${r.counts.FAIL} failed`];
  const skipped = r.notChecked.length ? `; not checked on a remote host: ${r.notChecked.map((n) => n.check).join(', ')}` : '';
  const verdict = r.ok ? 'VMs can run here' : 'VMs cannot run here until the FAILs are fixed';
  return `${parts.join(', ')}: ${verdict}${skipped}`;
}

export function formatSize(n: number): string {
  if (n >= GiB) return `${(n / GiB).toFixed(n >= 100 * GiB ? 0 : 1)} GiB`;
  return `${Math.round(n / MiB)} MiB`;
}

// ---- pure evaluations (unit-tested) -------------------------------------------------------

const FLAG_NAMES: Record<string, string> = { vmx: 'vmx (Intel VT-x)', svm: 'svm (AMD-V)' };

export function evaluateCpuFlags(flags: readonly string[], source: string): CheckResult {
  const virt = virtFlags(flags);
  const base = { id: 'cpu-virt', check: 'CPU virtualization', data: { source, flags: virt } };
  if (virt.length > 0) return { ...base, status: 'PASS', finding: `${virt.map((f) => FLAG_NAMES[f] ?? f).join(', ')} in ${source}` };
  const nestedVm = flags.includes('hypervisor') ? '; the host is itself a VM without nested virtualization' : '';
  return {
    ...base,
    status: 'WARN',
    finding: `no vmx/svm flag in ${source}${nestedVm}`,
    fix: nestedVm
      ? 'enable nested virtualization in the outer hypervisor (or use bare metal); until then guests run under TCG emulation (slow)'
      : 'enable VT-x / AMD-V in the firmware settings; until then guests run under TCG emulation (slow)',
  };
}

export function evaluatePoolSpace(available: number, capacity: number): CheckResult {
  const base = { id: 'pool-space', check: 'free space in pool', data: { available, capacity } };
  const finding = `${formatSize(available)} free of ${formatSize(capacity)}`;
  if (available < POOL_SPACE_FAIL_BYTES) {
    return { ...base, status: 'FAIL', finding, fix: `free space on the pool's filesystem: a VM disk needs at least ${formatSize(POOL_SPACE_FAIL_BYTES)}` };
  }
  if (available < POOL_SPACE_WARN_BYTES) {
    return { ...base, status: 'WARN', finding, fix: `free space on the pool's filesystem: the default VM's disk grows up to 4 GiB (${formatSize(POOL_SPACE_WARN_BYTES)} recommended)` };
  }
  return { ...base, status: 'PASS', finding };
}

export function evaluateAccel(p: AccelProbeResult): CheckResult {
  const when = p.fromCache ? ` [cached ${p.probedAt}]` : '';
  const base = { id: 'accel', check: 'accelerator probe', data: { ...p } as Record<string, unknown> };
  if (p.kvmUsable) return { ...base, status: 'PASS', finding: `${p.summary}${when}` };
  if (p.tcgUsable) {
    return {
      ...base,
      status: 'WARN',
      finding: `${p.summary}${when}`,
      fix: 'VMs work but run under TCG software emulation (much slower); for KVM the host needs working hardware virtualization (see CPU virtualization, /dev/kvm); vmctl host check --refresh probes again',
    };
  }
  return {
    ...base,
    status: 'FAIL',
    finding: `${p.summary}${when}`,
    fix: "QEMU could not run even the probe guest: look at libvirt's log for the probe domain (/var/log/libvirt/qemu/vmctl-accel-probe-*.log) and at the QEMU installation",
  };
}

// ---- local facts --------------------------------------------------------------------------

function cpuinfoFlags(root: string): string[] {
  const text = readFileSync(join(root, 'proc/cpuinfo'), 'utf8');
  const m = /^flags\s*:(.*)$/m.exec(text);
  return m ? (m[1] ?? '').trim().split(/\s+/) : [];
}

function checkKvmDevice(root: string): CheckResult {
  const path = join(root, 'dev/kvm');
  const base = { id: 'kvm-device', check: '/dev/kvm' };
  let st;
  try {
    st = statSync(path);
  } catch {
    return {
      ...base,
      status: 'WARN',
      finding: 'missing',
      fix: 'load the KVM module (modprobe kvm_intel, or kvm_amd) on a CPU with VT-x/AMD-V; without it guests run under TCG emulation (slow)',
    };
  }
  const mode = (st.mode & 0o777).toString(8).padStart(4, '0');
  const owner = `${idName(join(root, 'etc/passwd'), st.uid)}:${idName(join(root, 'etc/group'), st.gid)}`;
  try {
    closeSync(openSync(path, fsConstants.O_RDWR));
  } catch (e) {
    return {
      ...base,
      status: 'WARN',
      finding: `present (mode ${mode}, owner ${owner}) but not accessible to this user (${(e as NodeJS.ErrnoException).code ?? 'error'})`,
      fix: 'add the user to the kvm group (usermod -aG kvm USER; log in again) — the system daemon checks its own qemu user',
      data: { mode, owner },
    };
  }
  return { ...base, status: 'PASS', finding: `present and opens read-write (mode ${mode}, owner ${owner}); whether KVM really works is up to the accelerator probe`, data: { mode, owner } };
}

/** user or group name for an id from /etc/passwd or /etc/group (the id itself when not listed) */
function idName(file: string, id: number): string {
  try {
    for (const line of readFileSync(file, 'utf8').split('\n')) {
      const f = line.split(':');
      if (f[2] === String(id) && f[0]) return f[0];
    }
  } catch {
    /* no such file */
  }
  return String(id);
}

function readParam(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch {
    return undefined;
  }
}

function checkNested(root: string): CheckResult {
  const base = { id: 'nested', check: 'nested virtualization' };
  for (const mod of ['kvm_intel', 'kvm_amd']) {
    const v = readParam(join(root, 'sys/module', mod, 'parameters/nested'));
    if (v === undefined) continue;
    const on = v === 'Y' || v === 'y' || v === '1';
    const data = { module: mod, nested: v };
    if (on) return { ...base, status: 'PASS', finding: `enabled (${mod} nested=${v}): guests can run their own KVM`, data };
    return {
      ...base,
      status: 'WARN',
      finding: `disabled (${mod} nested=${v}): guests cannot run VMs of their own`,
      fix: `only needed for hypervisors inside guests: modprobe -r ${mod} && modprobe ${mod} nested=1 (persist with "options ${mod} nested=1" in /etc/modprobe.d/kvm.conf)`,
      data,
    };
  }
  let loaded: string[] = [];
  try {
    loaded = readdirSync(join(root, 'sys/module')).filter((m) => m === 'kvm' || m.startsWith('kvm_'));
  } catch {
    /* no /sys */
  }
  return {
    ...base,
    status: 'WARN',
    finding: `unavailable: neither kvm_intel nor kvm_amd is loaded${loaded.length ? ` (loaded: ${loaded.join(', ')})` : ''}`,
    fix: 'needs hardware virtualization and kvm_intel/kvm_amd; only matters for hypervisors inside guests',
    data: { loaded },
  };
}

/** The first of the names found on PATH (executable), with its path. */
export function findOnPath(names: readonly string[], env: NodeJS.ProcessEnv = process.env): { name: string; path: string } | undefined {
  const dirs = (env['PATH'] ?? '').split(delimiter).filter(Boolean);
  for (const name of names) {
    for (const dir of dirs) {
      const p = join(dir, name);
      try {
        accessSync(p, fsConstants.X_OK);
        if (statSync(p).isFile()) return { name, path: p };
      } catch {
        /* next */
      }
    }
  }
  return undefined;
}

function checkIsoTool(env: NodeJS.ProcessEnv): CheckResult {
  const base = { id: 'iso-tool', check: 'ISO tool (cloud-init seed)' };
  const found = findOnPath(['genisoimage', 'xorriso', 'mkisofs'], env);
  if (found) return { ...base, status: 'PASS', finding: `${found.name} (${found.path}) on this machine`, data: { ...found } };
  return {
    ...base,
    status: 'WARN',
    finding: 'neither genisoimage nor xorriso is on PATH of this machine: VMs cannot get a cloud-init seed',
    fix: 'apt-get install genisoimage (or xorriso)',
  };
}

/** statfs of the nearest existing ancestor (the pool directory may not exist yet). */
function localFree(path: string): { available: number; capacity: number } | undefined {
  let p = path;
  while (!existsSync(p) && dirname(p) !== p) p = dirname(p);
  try {
    const s = statfsSync(p);
    return { available: s.bavail * s.bsize, capacity: s.blocks * s.bsize };
  } catch {
    return undefined;
  }
}

// ---- libvirt facts ------------------------------------------------------------------------

function checkVersions(libvirt: string, libNumber: number, hvType: string, qemu: string): CheckResult {
  const base = { id: 'versions', check: 'libvirt and QEMU', data: { libvirt, qemu, hypervisorType: hvType } };
  if (hvType.toUpperCase() !== 'QEMU') {
    return { ...base, status: 'FAIL', finding: `libvirt ${libvirt} with the ${hvType} driver, not QEMU`, fix: 'connect to a QEMU/KVM host: --connect qemu:///system or qemu+ssh://HOST/system' };
  }
  if (libNumber < MIN_TESTED_LIBVIRT) {
    return {
      ...base,
      status: 'WARN',
      finding: `libvirt ${libvirt}, QEMU ${qemu}: libvirt is older than the 9.0.0 vmctl is built and tested against`,
      fix: 'upgrade libvirt if a command fails with "unsupported" or "unknown procedure"',
    };
  }
  return { ...base, status: 'PASS', finding: `libvirt ${libvirt}, QEMU ${qemu}` };
}

function checkEmulator(caps: HostCapabilities): CheckResult {
  const arch = caps.arch ?? 'x86_64';
  const base = { id: 'qemu-emulator', check: `QEMU for ${arch} guests` };
  const g = hvmGuest(caps, arch);
  if (!g || g.domainTypes.length === 0) {
    return {
      ...base,
      status: 'FAIL',
      finding: `libvirt found no QEMU emulator for ${arch} hvm guests`,
      fix: 'install QEMU (apt-get install qemu-system-x86) and restart libvirtd',
    };
  }
  return { ...base, status: 'PASS', finding: `${g.emulator ?? 'emulator'} (domain types: ${g.domainTypes.join(', ')})`, data: { ...g } };
}

function checkLibvirtKvm(caps: HostCapabilities, local: boolean): CheckResult {
  const arch = caps.arch ?? 'x86_64';
  const base = { id: 'libvirt-kvm', check: 'libvirt kvm domain type' };
  if (offersKvm(caps, arch)) {
    return { ...base, status: 'PASS', finding: `offered for ${arch} guests (libvirt's word only: the accelerator probe tests it)`, data: { offered: true } };
  }
  return {
    ...base,
    status: 'WARN',
    finding: `not offered: libvirt has only TCG ('qemu') for ${arch} guests`,
    fix: local
      ? 'libvirtd found no usable /dev/kvm: load kvm_intel/kvm_amd, check /dev/kvm permissions for the qemu user, restart libvirtd'
      : 'the host has no usable /dev/kvm for libvirtd: load kvm_intel/kvm_amd there, check /dev/kvm permissions, restart libvirtd',
    data: { offered: false },
  };
}

async function checkPoolAndSpace(conn: Connection, probe: AccelProbeResult | undefined, local: boolean, env: NodeJS.ProcessEnv): Promise<CheckResult[]> {
  const found = await findPool(conn);
  const base = { id: 'pool', check: `storage pool '${VMCTL_POOL}'` };
  let target: string | undefined;
  try {
    target = poolTargetPath(conn, env);
  } catch {
    target = undefined;
  }
  const createCmd = target
    ? `vmctl creates it on first use, or: virsh pool-define-as ${VMCTL_POOL} dir --target ${target} && virsh pool-build ${VMCTL_POOL} && virsh pool-start ${VMCTL_POOL} && virsh pool-autostart ${VMCTL_POOL}`
    : `define a dir pool named ${VMCTL_POOL} on that host (virsh pool-define-as ${VMCTL_POOL} dir --target DIR)`;
  if (!found) {
    const out: CheckResult[] = [{ ...base, status: 'WARN', finding: 'not defined', fix: createCmd, data: { defined: false, ...(target ? { target } : {}) } }];
    const free = local && target ? localFree(target) : undefined;
    if (free) {
      const r = evaluatePoolSpace(free.available, free.capacity);
      out.push({ ...r, finding: `${r.finding} on the filesystem of ${target} (pool not defined yet)` });
    } else {
      out.push({ id: 'pool-space', check: 'free space in pool', status: 'WARN', finding: 'unknown: the pool is not defined', fix: createCmd });
    }
    return out;
  }
  const { description, active, autostart } = found;
  const data = { defined: true, type: description.type, path: description.path, active, autostart };
  const created = probe && !probe.fromCache && probe.poolAction === 'created' ? ' (created just now for the accelerator probe)' : '';
  if (description.type !== 'dir') {
    return [
      {
        ...base,
        status: 'FAIL',
        finding: `exists but is a '${description.type}' pool, not a dir pool`,
        fix: `vmctl needs '${VMCTL_POOL}' to be a dir pool and never changes pools it did not create: rename or remove this one`,
        data,
      },
    ];
  }
  const out: CheckResult[] = [];
  if (!active) {
    out.push({ ...base, status: 'WARN', finding: `dir pool at ${description.path ?? '?'}, inactive`, fix: `virsh pool-start ${VMCTL_POOL} (vmctl starts it on first use)`, data });
    out.push({ id: 'pool-space', check: 'free space in pool', status: 'WARN', finding: 'unknown: the pool is not running', fix: `virsh pool-start ${VMCTL_POOL}` });
    return out;
  }
  out.push({ ...base, status: 'PASS', finding: `dir pool at ${description.path ?? '?'}, active${autostart ? ', autostart' : ''}${created}`, data });
  const space = await poolSpace(found.pool);
  const libvirtAvailable = Number(space.available);
  // libvirt counts root-reserved blocks as free; QEMU (the qemu user) cannot use them
  const usable = local && description.path ? localAvailableBytes(description.path) : undefined;
  if (usable !== undefined && Number(usable) < libvirtAvailable) {
    const r = evaluatePoolSpace(Number(usable), Number(space.capacity));
    out.push({
      ...r,
      finding: `${r.finding} (libvirt reports ${formatSize(libvirtAvailable)}; the rest is reserved for root)`,
      data: { ...r.data, libvirtAvailable },
    });
  } else {
    out.push(evaluatePoolSpace(libvirtAvailable, Number(space.capacity)));
  }
  return out;
}

async function checkNetwork(conn: Connection): Promise<CheckResult> {
  const base = { id: 'network', check: 'network' };
  const nets = await conn.listNetworks();
  const states = await Promise.all(nets.map(async (n) => ({ name: n.name, active: await n.isActive() })));
  const active = states.filter((s) => s.active).map((s) => s.name);
  const inactive = states.filter((s) => !s.active).map((s) => s.name);
  const data = { active, inactive, userMode: true };
  const userNote = 'user-mode networking (the default template) needs none';
  if (active.length > 0) {
    return { ...base, status: 'PASS', finding: `libvirt network${active.length > 1 ? 's' : ''} active: ${active.join(', ')}; ${userNote}`, data };
  }
  if (inactive.length > 0) {
    const n = inactive.includes('default') ? 'default' : (inactive[0] as string);
    return {
      ...base,
      status: 'WARN',
      finding: `no active libvirt network (defined but inactive: ${inactive.join(', ')}); ${userNote}`,
      fix: `for NICs of type network: virsh net-start ${n} && virsh net-autostart ${n}`,
      data,
    };
  }
  return {
    ...base,
    status: 'WARN',
    finding: `no libvirt network defined; ${userNote}`,
    fix: 'for NICs of type network: virsh net-define /usr/share/libvirt/networks/default.xml && virsh net-start default && virsh net-autostart default',
    data,
  };
}

// ---- the whole check ----------------------------------------------------------------------

export async function runHostChecks(conn: Connection, opts: HostCheckOptions = {}): Promise<HostCheckReport> {
  const log = opts.log ?? silentLogger;
  const root = opts.root ?? '/';
  const env = opts.env ?? process.env;
  const id = await hostIdentity(conn);
  const local = id.local;
  const checks: CheckResult[] = [];
  const notChecked: HostCheckReport['notChecked'] = [];

  const caps = parseCapabilities((await hostCapabilities(conn, { ...opts.cache, refresh: opts.refresh })).xml);

  // CPU flags: the host's own /proc when local, else what libvirt reports about the host CPU
  if (local) {
    try {
      checks.push(evaluateCpuFlags(cpuinfoFlags(root), '/proc/cpuinfo'));
    } catch (e) {
      checks.push({ id: 'cpu-virt', check: 'CPU virtualization', status: 'WARN', finding: `cannot read /proc/cpuinfo: ${(e as Error).message}`, fix: 'run on Linux with /proc mounted' });
    }
  } else if (caps.cpuFeatures.length > 0) {
    checks.push(evaluateCpuFlags(caps.cpuFeatures, "libvirt's host capabilities"));
  } else {
    checks.push({
      id: 'cpu-virt',
      check: 'CPU virtualization',
      status: 'WARN',
      finding: "unknown: libvirt's host capabilities list no CPU features",
      fix: 'check the host itself: grep -wE "vmx|svm" /proc/cpuinfo',
    });
  }

  if (local) {
    checks.push(checkKvmDevice(root));
    checks.push(checkNested(root));
  } else {
    notChecked.push({ id: 'kvm-device', check: '/dev/kvm', reason: 'remote host: libvirt kvm domain type and the accelerator probe stand in for it' });
    notChecked.push({ id: 'nested', check: 'nested virtualization', reason: 'remote host: /sys is not visible' });
  }

  checks.push(checkLibvirtKvm(caps, local));
  checks.push(checkVersions(id.libvirtVersion, await conn.libVersion(), id.hypervisorType, id.hypervisorVersion));
  checks.push(checkEmulator(caps));

  // the functional probe (cached per host)
  let probe: AccelProbeResult | undefined;
  try {
    probe = await probeAccelerators(conn, {
      log,
      ...(opts.refresh ? { refresh: true } : {}),
      ...(opts.cache ? { cache: opts.cache } : {}),
      ...(opts.kvmTimeoutMs ? { kvmTimeoutMs: opts.kvmTimeoutMs } : {}),
      ...(opts.probe === false ? { runIfNeeded: false as const } : {}),
    });
  } catch (e) {
    const err = toVmctlError(e);
    checks.push({
      id: 'accel',
      check: 'accelerator probe',
      status: 'FAIL',
      finding: `could not run: ${err.message}`,
      fix: err.hint ?? 'a host where vmctl cannot create a volume and start a domain cannot run VMs either: see the error',
    });
  }
  if (probe) checks.push(evaluateAccel(probe));
  else if (!checks.some((c) => c.id === 'accel')) {
    checks.push({ id: 'accel', check: 'accelerator probe', status: 'WARN', finding: 'not run (--no-probe) and no cached result', fix: 'vmctl host check (without --no-probe)' });
  }

  checks.push(...(await checkPoolAndSpace(conn, probe, local, env)));
  checks.push(await checkNetwork(conn));
  checks.push(checkIsoTool(env));
  checks.push(checkInterrupted(await interruptedOperations(conn)));

  const counts: Record<CheckStatus, number> = { PASS: 0, WARN: 0, FAIL: 0 };
  for (const c of checks) counts[c.status]++;
  // one key order for every check (JSON readers and humans alike); fix only when not PASS
  const ordered = checks.map(({ id: cid, check, status, finding, fix, data }) => ({
    id: cid,
    check,
    status,
    finding,
    ...(fix !== undefined && status !== 'PASS' ? { fix } : {}),
    ...(data !== undefined ? { data } : {}),
  }));
  return { uri: conn.uri.original, hostname: id.hostname, local, ok: counts.FAIL === 0, counts, checks: ordered, notChecked };
}
