/**
 * Which accelerator guests get: "probe, don't trust".
 *
 * /dev/kvm existing, opening, and even libvirt listing a `kvm` domain type do
 * not mean KVM works (nested KVM without vmx/svm opens fine and then runs
 * guest code thousands of times slower than TCG). So vmctl runs a real guest:
 * the hand-assembled boot sector of ./accel-bootsector.ts, as a transient
 * domain through libvirt (so it probes the host that will run the VMs, remote
 * ones included), first as `<domain type='kvm'>`, then as `<domain
 * type='qemu'>` (TCG), and times each from create to gone. KVM is usable only
 * if its run finished (the guest wrote its proof sector and left through
 * isa-debug-exit) AND beat TCG.
 *
 * The boot disk is a 1 KiB raw volume in vmctl's pool, uploaded through a
 * volume stream; the domains are transient and started with AUTODESTROY, so
 * even a killed vmctl leaves no domain behind. Every path removes the domains
 * and the volume; stale probe volumes (from a vmctl killed mid-probe, older
 * than an hour) are removed on the next probe. Nothing else is touched.
 *
 * Results are cached per host (./cache.ts) for HOST_CACHE_TTL_MS;
 * `refresh` ignores the cache.
 */
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { xmlBuilder as builder, xmlParser as parser } from '../xml.js';
import type { Connection, DomainLifecycleEvent, StoragePool, StorageVolume } from '../../libvirt/connection.js';
import { LibvirtError } from '../../libvirt/errors.js';
import { VirDomainCreateFlags, VirDomainEventStoppedDetailType } from '../../libvirt/generated/constants.gen.js';
import { silentLogger, type Logger } from '../log.js';
import { VmctlError } from '../errors.js';
import { BOOT_SECTOR_SIZE, PROBE_DISK_SIZE, PROBE_ITERATIONS, DEBUG_EXIT_PORT, buildProbeDisk, hasProof } from './bootsector.js';
import { hostCapabilities, hostIdentity, readHostCache, writeHostCache, type CacheOptions } from './cache.js';
import { offersKvm, parseCapabilities } from './capabilities.js';
import { ensurePool, VMCTL_POOL, type EnsurePoolResult } from '../storage/pool.js';
import { volumeXml } from '../storage/volume.js';

export type AccelRequest = 'auto' | 'kvm' | 'tcg';
export type ProbeDomainType = 'kvm' | 'qemu';

export const PROBE_NAME_PREFIX = 'vmctl-accel-probe-';
export const QEMU_XMLNS = 'http://libvirt.org/schemas/domain/qemu/1.0';
export const DEFAULT_KVM_TIMEOUT_MS = 20_000;
export const DEFAULT_TCG_TIMEOUT_MS = 60_000;
/** KVM's budget once TCG's time is known: TCG's time plus this (a slower KVM is not usable anyway). */
const KVM_SLACK_MS = 1_000;
/** probe volumes older than this are leftovers of a killed vmctl */
const STALE_PROBE_VOLUME_MS = 3600_000;
const POLL_MS = 200;

/** One timed run of the probe guest. */
export interface ProbeRun {
  domainType: ProbeDomainType;
  /** false when the run was not attempted (see skipped) */
  attempted: boolean;
  skipped?: string;
  /** the guest ran to the end: proof sector written, then exit through isa-debug-exit, within the timeout */
  completed: boolean;
  timedOut: boolean;
  /** create → domain gone (or → given up at the timeout); null when not attempted */
  ms: number | null;
  /** domain started (create returned) → gone: guest time without libvirt's start-up */
  guestMs: number | null;
  timeoutMs: number;
  /** libvirt's 'stopped' event detail (isa-debug-exit shows as 'failed': QEMU quit on its own) */
  stopDetail?: string;
  /** why the run did not complete */
  error?: string;
}

export interface AccelProbeResult {
  host: {
    hostname: string;
    uuid?: string;
    libvirt: string;
    qemu: string;
    kernel?: string;
    endpoint: string;
    key: string;
  };
  probedAt: string;
  fromCache: boolean;
  cachePath?: string;
  iterations: number;
  kvm: ProbeRun;
  tcg: ProbeRun;
  kvmUsable: boolean;
  tcgUsable: boolean;
  /** one line for humans: the verdict and both timings */
  summary: string;
  /** what the probe created (and removed again) */
  artifacts: { pool: string; volume: string; domains: string[] };
  /** what the probe had to do to vmctl's pool (only for a fresh probe) */
  poolAction?: EnsurePoolResult['action'];
}

export interface ProbeOptions {
  /** ignore the cached result (and the cached capabilities) */
  refresh?: boolean;
  /** with false, never run a probe: return the cached result or undefined */
  runIfNeeded?: boolean;
  log?: Logger;
  kvmTimeoutMs?: number;
  tcgTimeoutMs?: number;
  iterations?: number;
  cache?: CacheOptions;
}

const STOP_DETAILS: Record<number, string> = {
  [VirDomainEventStoppedDetailType.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN]: 'shutdown',
  [VirDomainEventStoppedDetailType.VIR_DOMAIN_EVENT_STOPPED_DESTROYED]: 'destroyed',
  [VirDomainEventStoppedDetailType.VIR_DOMAIN_EVENT_STOPPED_CRASHED]: 'crashed',
  [VirDomainEventStoppedDetailType.VIR_DOMAIN_EVENT_STOPPED_MIGRATED]: 'migrated',
  [VirDomainEventStoppedDetailType.VIR_DOMAIN_EVENT_STOPPED_SAVED]: 'saved',
  [VirDomainEventStoppedDetailType.VIR_DOMAIN_EVENT_STOPPED_FAILED]: 'failed',
  [VirDomainEventStoppedDetailType.VIR_DOMAIN_EVENT_STOPPED_FROM_SNAPSHOT]: 'from-snapshot',
};


/** Domain XML of a probe run: 32 MiB, one vCPU, the boot disk and isa-debug-exit, nothing else. */
export function probeDomainXml(o: { name: string; domainType: ProbeDomainType; pool: string; volume: string; memoryMiB?: number }): string {
  return builder.build({
    domain: {
      '@_type': o.domainType,
      '@_xmlns:qemu': QEMU_XMLNS,
      name: o.name,
      memory: { '@_unit': 'MiB', '#text': o.memoryMiB ?? 32 },
      vcpu: 1,
      os: { type: { '@_arch': 'x86_64', '@_machine': 'pc', '#text': 'hvm' }, boot: { '@_dev': 'hd' } },
      on_poweroff: 'destroy',
      // -no-reboot: a guest that resets (triple fault) ends instead of looping
      on_reboot: 'destroy',
      on_crash: 'destroy',
      devices: {
        disk: {
          '@_type': 'volume',
          '@_device': 'disk',
          driver: { '@_name': 'qemu', '@_type': 'raw' },
          source: { '@_pool': o.pool, '@_volume': o.volume },
          target: { '@_dev': 'hda', '@_bus': 'ide' },
        },
        controller: { '@_type': 'usb', '@_model': 'none' },
        memballoon: { '@_model': 'none' },
      },
      'qemu:commandline': {
        'qemu:arg': [{ '@_value': '-device' }, { '@_value': `isa-debug-exit,iobase=0x${DEBUG_EXIT_PORT.toString(16)},iosize=0x04` }],
      },
    },
  }) as string;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function isNotFound(e: unknown): boolean {
  return e instanceof LibvirtError && e.isNotFound();
}

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

async function uploadDisk(vol: StorageVolume, disk: Buffer): Promise<void> {
  await vol.upload(Readable.from([disk]), { length: BigInt(disk.length) });
}

async function readSecondSector(vol: StorageVolume): Promise<Buffer> {
  const stream = await vol.download({ offset: BigInt(BOOT_SECTOR_SIZE), length: BigInt(BOOT_SECTOR_SIZE) });
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  await stream.done;
  return Buffer.concat(chunks);
}

/** Destroy a probe domain by name if it still exists (it is transient: destroy removes it). */
async function destroyIfPresent(conn: Connection, name: string): Promise<void> {
  try {
    const dom = await conn.lookupDomain(name);
    await dom.destroy();
  } catch (e) {
    if (isNotFound(e) || (e instanceof LibvirtError && e.isOperationInvalid())) return;
    throw e;
  }
}

async function domainGone(conn: Connection, name: string): Promise<boolean> {
  try {
    await conn.lookupDomain(name);
    return false;
  } catch (e) {
    if (isNotFound(e)) return true;
    throw e;
  }
}

async function runOnce(
  conn: Connection,
  o: { name: string; domainType: ProbeDomainType; pool: string; vol: StorageVolume; disk: Buffer; timeoutMs: number; events: boolean; log: Logger },
): Promise<ProbeRun> {
  const run: ProbeRun = { domainType: o.domainType, attempted: true, completed: false, timedOut: false, ms: null, guestMs: null, timeoutMs: o.timeoutMs };
  // a fresh disk each run: the proof sector must be written by THIS run
  await uploadDisk(o.vol, o.disk);
  const xml = probeDomainXml({ name: o.name, domainType: o.domainType, pool: o.pool, volume: o.vol.name });

  let stopped: { at: number; detail: number } | undefined;
  let wake: (() => void) | undefined;
  const onLifecycle = (ev: DomainLifecycleEvent) => {
    if (ev.domain.name !== o.name || ev.event !== 'stopped') return;
    stopped ??= { at: performance.now(), detail: ev.detail };
    wake?.();
  };
  conn.on('lifecycle', onLifecycle);
  const t0 = performance.now();
  let tStarted: number | undefined;
  let gotDestroyed = false;
  try {
    try {
      await conn.createTransientDomain(xml, VirDomainCreateFlags.VIR_DOMAIN_START_AUTODESTROY);
      tStarted = performance.now();
    } catch (e) {
      run.ms = Math.round(performance.now() - t0);
      run.error = `libvirt could not start a ${o.domainType} domain: ${message(e)}`;
      return run;
    }
    const deadline = t0 + o.timeoutMs;
    let goneAt: number | undefined;
    while (stopped === undefined && goneAt === undefined) {
      const left = deadline - performance.now();
      if (left <= 0) break;
      await new Promise<void>((resolve) => {
        wake = resolve;
        setTimeout(resolve, Math.min(POLL_MS, left));
      });
      wake = undefined;
      if (stopped === undefined && (await domainGone(conn, o.name))) goneAt = performance.now();
    }
    if (stopped === undefined && goneAt !== undefined && o.events) {
      // gone before its event arrived: give the event a moment, for the detail
      const until = performance.now() + 500;
      while (stopped === undefined && performance.now() < until) await sleep(20);
    }
    const end = stopped?.at ?? goneAt;
    if (end === undefined) {
      run.timedOut = true;
      run.ms = Math.round(performance.now() - t0);
      run.guestMs = Math.round(performance.now() - tStarted);
      run.error = `the guest did not finish within ${(o.timeoutMs / 1000).toFixed(0)} s`;
      gotDestroyed = true;
      await destroyIfPresent(conn, o.name);
      return run;
    }
    run.ms = Math.round(end - t0);
    run.guestMs = Math.round(end - tStarted);
    if (stopped) run.stopDetail = STOP_DETAILS[stopped.detail] ?? `detail ${stopped.detail}`;
    if (stopped && stopped.detail === VirDomainEventStoppedDetailType.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN) {
      run.error = 'the guest reset or shut down before reaching the exit port';
      return run;
    }
    if (!hasProof(await readSecondSector(o.vol), o.disk.subarray(0, BOOT_SECTOR_SIZE))) {
      run.error = 'QEMU stopped but the guest never wrote its proof sector (it did not run to the end)';
      return run;
    }
    run.completed = true;
    return run;
  } finally {
    conn.off('lifecycle', onLifecycle);
    if (!gotDestroyed) await destroyIfPresent(conn, o.name).catch(() => undefined);
  }
}

/** Remove probe volumes a killed vmctl left behind (only ours: by name prefix, older than an hour). */
async function removeStaleProbeVolumes(pool: StoragePool, log: Logger): Promise<void> {
  let vols: StorageVolume[];
  try {
    vols = await pool.listVolumes();
  } catch {
    return;
  }
  for (const v of vols) {
    if (!v.name.startsWith(PROBE_NAME_PREFIX)) continue;
    try {
      const doc = parser.parse(await v.xml()) as { volume?: { target?: { timestamps?: { mtime?: unknown } } } };
      const mtime = Number(doc.volume?.target?.timestamps?.mtime);
      if (!Number.isFinite(mtime) || Date.now() - mtime * 1000 < STALE_PROBE_VOLUME_MS) continue;
      await v.delete();
      log.info({ volume: v.name }, 'removed a stale accelerator-probe volume');
    } catch {
      /* someone else removed it, or it is in use: leave it */
    }
  }
}

function fmtSeconds(ms: number | null): string {
  return ms === null ? '-' : `${(ms / 1000).toFixed(2)} s`;
}

function describeRun(label: string, r: ProbeRun): string {
  if (!r.attempted) return `${label} not tried (${r.skipped ?? 'skipped'})`;
  if (r.completed) return `${label} ${fmtSeconds(r.ms)}`;
  if (r.timedOut) return `${label} unfinished after ${fmtSeconds(r.ms)}`;
  return `${label} failed (${r.error ?? 'unknown'})`;
}

export function summarizeProbe(p: Pick<AccelProbeResult, 'kvm' | 'tcg' | 'kvmUsable' | 'tcgUsable'>): string {
  const verdict = p.kvmUsable
    ? 'KVM usable'
    : p.tcgUsable
      ? 'KVM not usable, guests use TCG'
      : 'neither KVM nor TCG could run the probe guest';
  return `${verdict} (probe: ${describeRun('KVM', p.kvm)}; ${describeRun('TCG', p.tcg)})`;
}

function skippedRun(domainType: ProbeDomainType, timeoutMs: number, why: string): ProbeRun {
  return { domainType, attempted: false, skipped: why, completed: false, timedOut: false, ms: null, guestMs: null, timeoutMs };
}

/**
 * The accelerator probe (cached per host). With `runIfNeeded: false` it only
 * reads the cache (undefined on a miss).
 */
export async function probeAccelerators(conn: Connection, opts: ProbeOptions & { runIfNeeded: false }): Promise<AccelProbeResult | undefined>;
export async function probeAccelerators(conn: Connection, opts?: ProbeOptions): Promise<AccelProbeResult>;
export async function probeAccelerators(conn: Connection, opts: ProbeOptions = {}): Promise<AccelProbeResult | undefined> {
  const log = opts.log ?? silentLogger;
  const iterations = opts.iterations ?? PROBE_ITERATIONS;
  const kvmTimeoutMs = opts.kvmTimeoutMs ?? DEFAULT_KVM_TIMEOUT_MS;
  const tcgTimeoutMs = opts.tcgTimeoutMs ?? DEFAULT_TCG_TIMEOUT_MS;
  const id = await hostIdentity(conn);
  if (!opts.refresh) {
    const hit = readHostCache<AccelProbeResult>('accel', id, opts.cache);
    if (hit && hit.value.iterations === iterations && hit.value.kvm && hit.value.tcg) {
      log.debug({ path: hit.path, probedAt: hit.value.probedAt }, 'accelerator probe: cached result');
      return { ...hit.value, fromCache: true, cachePath: hit.path };
    }
  }
  if (opts.runIfNeeded === false) return undefined;

  const caps = parseCapabilities((await hostCapabilities(conn, { ...opts.cache, refresh: opts.refresh })).xml);
  const x86 = caps.arch === undefined || caps.arch === 'x86_64' || caps.arch === 'i686';
  const ensured = await ensurePool(conn);
  const pool = ensured.pool;
  await removeStaleProbeVolumes(pool, log);

  const base = `${PROBE_NAME_PREFIX}${randomBytes(4).toString('hex')}`;
  const volName = `${base}.img`;
  const domains = { kvm: `${base}-kvm`, qemu: `${base}-tcg` };
  const disk = buildProbeDisk(iterations);
  let events = true;
  try {
    await conn.subscribeLifecycle();
  } catch (e) {
    events = false; // polling alone still works
    log.debug({ err: message(e) }, 'accelerator probe: no lifecycle events, polling');
  }

  log.info({ host: id.hostname, kvmTimeoutMs }, 'probing accelerators (a few seconds; the result is cached per host)');
  let vol: StorageVolume | undefined;
  let kvm: ProbeRun;
  let tcg: ProbeRun;
  try {
    vol = await pool.createVolume(volumeXml({ name: volName, capacityBytes: PROBE_DISK_SIZE, format: 'raw' }));
    // TCG first: KVM counts as usable only when it beats TCG, so once TCG's time is known KVM needs no
    // longer than that (plus a second of slack) — a hanging KVM costs seconds, not the full timeout
    tcg = await runOnce(conn, { name: domains.qemu, domainType: 'qemu', pool: VMCTL_POOL, vol, disk, timeoutMs: tcgTimeoutMs, events, log });
    log.debug({ run: tcg }, 'accelerator probe: tcg');
    const kvmBudgetMs = tcg.completed && tcg.ms !== null ? Math.min(kvmTimeoutMs, tcg.ms + KVM_SLACK_MS) : kvmTimeoutMs;
    if (!x86) {
      kvm = skippedRun('kvm', kvmBudgetMs, `the probe guest is x86 and the host is ${caps.arch}`);
    } else if (!offersKvm(caps, 'x86_64')) {
      kvm = skippedRun('kvm', kvmBudgetMs, 'libvirt on this host does not offer the kvm domain type');
    } else {
      kvm = await runOnce(conn, { name: domains.kvm, domainType: 'kvm', pool: VMCTL_POOL, vol, disk, timeoutMs: kvmBudgetMs, events, log });
    }
    log.debug({ run: kvm }, 'accelerator probe: kvm');
  } finally {
    // every path: no domain, no volume left behind
    for (const name of Object.values(domains)) {
      await destroyIfPresent(conn, name).catch((e: unknown) => log.warn({ domain: name, err: message(e) }, 'could not remove a probe domain'));
    }
    if (vol) {
      await vol.delete().catch((e: unknown) => {
        if (!isNotFound(e)) log.warn({ volume: volName, err: message(e) }, 'could not remove the probe volume');
      });
    }
  }

  const kvmUsable = kvm.completed && kvm.ms !== null && (!tcg.completed || (tcg.ms !== null && kvm.ms < tcg.ms));
  const tcgUsable = tcg.completed;
  const result: AccelProbeResult = {
    host: {
      hostname: id.hostname,
      ...(caps.uuid ? { uuid: caps.uuid } : {}),
      libvirt: id.libvirtVersion,
      qemu: id.hypervisorVersion,
      ...(id.kernel ? { kernel: id.kernel } : {}),
      endpoint: id.endpoint,
      key: id.key,
    },
    probedAt: new Date().toISOString(),
    fromCache: false,
    iterations,
    kvm,
    tcg,
    kvmUsable,
    tcgUsable,
    summary: summarizeProbe({ kvm, tcg, kvmUsable, tcgUsable }),
    artifacts: { pool: VMCTL_POOL, volume: volName, domains: Object.values(domains) },
    poolAction: ensured.action,
  };
  // cache only answers with a baseline: a TCG run that could not even start may be a passing problem
  if (tcg.completed || tcg.timedOut) {
    const { poolAction: _ignored, ...cacheable } = result;
    const path = writeHostCache('accel', id, cacheable, opts.cache);
    if (path) result.cachePath = path;
  }
  return result;
}

export interface AccelChoice {
  domainType: ProbeDomainType;
  reason: string;
  /** set when auto had to fall back to TCG: print it loudly (log.warn / stderr) */
  warning?: string;
  probe?: AccelProbeResult;
}

/**
 * The domain type for a new VM. `auto`: KVM when the probe says it works,
 * else TCG with a warning; `kvm`: KVM or an error (with a hint to use
 * `--accel tcg`); `tcg`: TCG, no probe.
 */
export async function chooseAccel(
  conn: Connection,
  requested: AccelRequest,
  log: Logger = silentLogger,
  opts: Omit<ProbeOptions, 'log' | 'runIfNeeded'> = {},
): Promise<AccelChoice> {
  if (requested === 'tcg') return { domainType: 'qemu', reason: 'TCG requested (--accel tcg)' };
  if (requested !== 'auto' && requested !== 'kvm') {
    throw new VmctlError('INVALID_INPUT', `unknown accelerator '${String(requested)}'`, { hint: 'use --accel auto, kvm or tcg' });
  }
  const probe = await probeAccelerators(conn, { ...opts, log });
  const when = probe.fromCache ? ` (probed ${probe.probedAt}; vmctl host check --refresh probes again)` : '';
  if (probe.kvmUsable) {
    return { domainType: 'kvm', reason: `KVM works on ${probe.host.hostname}: ${probe.summary}${when}`, probe };
  }
  if (requested === 'kvm') {
    throw new VmctlError('UNSUPPORTED', `KVM is not usable on ${probe.host.hostname}: ${probe.summary}`, {
      hint: probe.tcgUsable ? 'use --accel tcg (software emulation; slower) or --accel auto' : 'run vmctl host check to see what is wrong with this host',
      details: { probe: { kvm: probe.kvm, tcg: probe.tcg } },
    });
  }
  if (!probe.tcgUsable) {
    throw new VmctlError('UNSUPPORTED', `no accelerator can run guests on ${probe.host.hostname}: ${probe.summary}`, {
      hint: 'run vmctl host check to see what is wrong with this host',
      details: { probe: { kvm: probe.kvm, tcg: probe.tcg } },
    });
  }
  return {
    domainType: 'qemu',
    reason: `KVM not usable on ${probe.host.hostname}, using TCG: ${probe.summary}${when}`,
    warning:
      `KVM IS NOT USABLE on ${probe.host.hostname} — this VM runs under TCG software emulation, ` +
      `typically 10-50x slower than hardware virtualization. ${probe.summary}. ` +
      'Run vmctl host check for the reasons and fixes; pass --accel tcg to choose TCG explicitly and silence this warning.',
    probe,
  };
}
