/**
 * VM lifecycle: create (template → volumes → seed → definition → start →
 * readiness), start, stop, reboot, suspend, resume, destroy, delete, info.
 * Never prints, never exits: progress goes through hooks, failures are
 * VmctlErrors, and a failed create rolls back everything it made.
 */
import { mkdtempSync, rmSync, createReadStream, statSync, readFileSync, existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomInt, randomUUID } from 'node:crypto';
import { xmlBuilder, xmlParser } from '../xml.js';
import type { Logger } from 'pino';
import { silentLogger } from '../log.js';
import { VmctlError } from '../errors.js';
import { assertVmName } from '../names.js';
import { vmStateDir } from '../paths.js';
import { vmctlVersion } from '../host/version.js';
import { loadTemplate } from '../template/load.js';
import type { TemplateOverrides } from '../template/overrides.js';
import { buildVmSpec, planDiskVolumes } from '../template/model.js';
import { buildDomainXml, parseVmctlMetadata, type VmctlDomainMetadata } from './domain-xml.js';
import { ensurePool, poolFreeBytes } from '../storage/pool.js';
import { chooseAccel, type AccelRequest } from '../host/accel.js';
import { ensureImage, type ImageInfo, type ImageProgress } from '../image/images.js';
import { buildSeedDocuments, ensureVmKeys, hostPatternFor, pinHostKey, writeSeedIso } from '../guest/cloudinit.js';
import { waitForSsh, waitForCloudInit, type GuestTarget } from '../guest/ssh.js';
import { LibvirtError } from '../../libvirt/errors.js';
import type { Connection, Domain, StoragePool, StorageVolume, DomainStateName } from '../../libvirt/connection.js';
import { VirDomainUndefineFlagsValues, VirDomainInterfaceAddressesSource } from '../../libvirt/generated/constants.gen.js';


export type WaitTarget = 'none' | 'ip' | 'ssh';
export const PHASES = ['defined', 'started', 'ip', 'sshd', 'cloud-init'] as const;
export type Phase = (typeof PHASES)[number];

export interface PhaseEvent {
  phase: Phase;
  /** ms since the command started */
  atMs: number;
  detail?: string;
}

export interface CreateHooks {
  log?: Logger;
  onPhase?: (e: PhaseEvent) => void;
  /** image import/upload/build progress */
  onProgress?: (p: ImageProgress) => void;
  /** a loud warning for the user (e.g. TCG fallback) */
  onWarning?: (message: string) => void;
  signal?: AbortSignal;
}

export interface CreateOptions {
  name: string;
  template?: string;
  overrides?: TemplateOverrides;
  accel?: AccelRequest;
  /** define only */
  start?: boolean;
  wait?: WaitTarget;
  /** overall readiness timeout (ms); default 15 min (TCG guests are slow) */
  timeoutMs?: number;
}

export interface CreateResult {
  name: string;
  uuid: string;
  domainType: 'kvm' | 'qemu';
  accelReason: string;
  image: string;
  state: DomainStateName;
  ssh?: { host: string; port: number; user: string };
  ip?: string;
  phases: PhaseEvent[];
}

/** Undo steps, run in reverse on failure. */
class Rollback {
  private steps: { what: string; undo: () => Promise<void> | void }[] = [];
  constructor(private readonly log: Logger) {}
  add(what: string, undo: () => Promise<void> | void): void {
    this.steps.push({ what, undo });
  }
  async run(): Promise<void> {
    for (const s of this.steps.reverse()) {
      try {
        await s.undo();
        this.log.info({ step: s.what }, 'rolled back');
      } catch (err) {
        this.log.warn({ step: s.what, err: (err as Error).message }, 'rollback step failed');
      }
    }
    this.steps = [];
  }
  /** success: forget the undo steps */
  commit(): void {
    this.steps = [];
  }
}

async function domainExists(conn: Connection, name: string): Promise<boolean> {
  try {
    await conn.lookupDomain(name);
    return true;
  } catch (e) {
    if (e instanceof LibvirtError && e.isNotFound()) return false;
    throw e;
  }
}

/** The guest's SSH forward: tcp to port 22 (the one vmctl picks a port for and connects through). */
function isSshForward(f: { guestPort: number; proto: 'tcp' | 'udp' }): boolean {
  return f.guestPort === 22 && f.proto === 'tcp';
}

/**
 * The ports vmctl picks forwards from: by default below Linux's ephemeral
 * range (32768-60999), so the kernel does not hand the port to some outgoing
 * connection later. VMCTL_FORWARD_PORTS=LOW-HIGH changes it.
 */
export function forwardPortRange(env: NodeJS.ProcessEnv = process.env): { min: number; max: number } {
  const v = env.VMCTL_FORWARD_PORTS;
  if (v === undefined || v === '') return { min: 20000, max: 32767 };
  const m = /^(\d{1,5})-(\d{1,5})$/.exec(v.trim());
  const min = Number(m?.[1]);
  const max = Number(m?.[2]);
  if (!m || min < 1024 || max > 65535 || min > max) {
    throw new VmctlError('INVALID_INPUT', `VMCTL_FORWARD_PORTS=${JSON.stringify(v)} is not a port range`, { hint: 'use LOW-HIGH within 1024-65535, e.g. 20000-32767' });
  }
  return { min, max };
}

/**
 * Ports for a user-mode forward, in the order to try: from a random start,
 * onwards through the range. On this machine only ones that are free now; on
 * a remote host vmctl cannot look, and QEMU refusing to start on a taken one
 * (isForwardPortTaken) makes create try the next.
 */
function* forwardPortCandidates(): Generator<number> {
  const { min, max } = forwardPortRange();
  const n = max - min + 1;
  const first = randomInt(n);
  for (let i = 0; i < n; i++) yield min + ((first + i) % n);
}

async function pickForwardPort(conn: Connection, candidates: Iterator<number>): Promise<number> {
  const local = conn.hostLoopback === 'local';
  for (let tries = 0; tries < 50; tries++) {
    const next = candidates.next();
    if (next.done) break;
    if (!local || (await loopbackPortFree(next.value))) return next.value;
  }
  const { min, max } = forwardPortRange();
  throw new VmctlError('RESOURCE', `no free port for the SSH forward on ${conn.uri.host ?? '127.0.0.1'} in ${min}-${max}`, {
    hint: 'set VMCTL_FORWARD_PORTS=LOW-HIGH to another range, or a fixed hostPort for the SSH forward in the template',
  });
}

function loopbackPortFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

/** QEMU's "Could not set up host forwarding rule 'tcp:127.0.0.1:P-:22'" at start */
function isForwardPortTaken(e: unknown): boolean {
  return e instanceof LibvirtError && /could not set up host forwarding rule/i.test(e.message);
}

/**
 * How this machine reaches a guest's loopback forward on the libvirt host:
 * directly (local), through the connection's ssh session (qemu+ssh), or not at
 * all (qemu+tcp, qemu+tls: the forward listens on that host's loopback).
 */
export function tunnelFor(conn: Connection): Pick<GuestTarget, 'via'> {
  switch (conn.hostLoopback) {
    case 'local':
      return {};
    case 'tunnel':
      return { via: { name: conn.transport.description, open: (host, port) => conn.openTcp(host, port) } };
    case 'none':
      throw new VmctlError(
        'UNSUPPORTED',
        `a guest's SSH forward listens on the loopback of ${conn.uri.host ?? 'the libvirt host'}, which a ${conn.uri.transport} connection cannot reach`,
        { hint: `connect with qemu+ssh://${conn.uri.host ?? 'HOST'}/system instead (vmctl tunnels SSH through it), or use --wait ip` },
      );
  }
}

function volumeXml(o: { name: string; capacityBytes: number; format: 'qcow2' | 'raw'; backing?: { path: string; format: string } }): string {
  return xmlBuilder.build({
    volume: {
      name: o.name,
      capacity: { '@_unit': 'bytes', '#text': o.capacityBytes },
      ...(o.format === 'qcow2' ? { allocation: { '@_unit': 'bytes', '#text': 0 } } : {}),
      target: { format: { '@_type': o.format }, permissions: { mode: '0644' } },
      ...(o.backing ? { backingStore: { path: o.backing.path, format: { '@_type': o.backing.format } } } : {}),
    },
  }) as string;
}

async function uploadFileAsVolume(pool: StoragePool, name: string, file: string): Promise<StorageVolume> {
  const size = statSync(file).size;
  const vol = await pool.createVolume(volumeXml({ name, capacityBytes: size, format: 'raw' }));
  try {
    await vol.upload(createReadStream(file), { length: BigInt(size) });
  } catch (err) {
    await vol.delete().catch(() => undefined);
    throw err;
  }
  return vol;
}

function checkAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw new VmctlError('CONFLICT', 'interrupted', { hint: 'everything created so far was rolled back' });
}

/**
 * Room for a new VM: its overlay and seed start small, but the overlay grows as
 * the guest writes (first boot alone writes ~100 MiB), and a missing base image
 * must be uploaded first. Refuse up front instead of failing half-way.
 */
export const MIN_FREE_FOR_VM = 512n * 1024n * 1024n;

async function assertPoolRoom(conn: Connection, pool: StoragePool, poolPath: string, imageName: string): Promise<void> {
  const free = await poolFreeBytes(conn, pool);
  let need = MIN_FREE_FOR_VM;
  const present = (await pool.listVolumes()).some((v) => v.name.startsWith(`img_${imageName}.`));
  if (!present) need += 512n * 1024n * 1024n; // the image itself (the default one is ~140 MiB, qcow2-compressed)
  if (free < need) {
    const mib = (b: bigint) => `${b / (1024n * 1024n)} MiB`;
    throw new VmctlError('RESOURCE', `storage pool '${pool.name}' on ${conn.uri.original} is full: ${mib(free)} free at ${poolPath}, a new VM needs at least ${mib(need)}`, {
      hint: 'free space there, or remove unused VMs and images (vmctl delete NAME, vmctl image rm NAME)',
      details: { freeBytes: free, neededBytes: need },
    });
  }
}

/** Records readiness phases with their time since the command started, and reports each. */
function phaseRecorder(onPhase?: (e: PhaseEvent) => void) {
  const t0 = performance.now();
  const phases: PhaseEvent[] = [];
  const phase = (p: Phase, detail?: string) => {
    const e = { phase: p, atMs: Math.round(performance.now() - t0), ...(detail ? { detail } : {}) };
    phases.push(e);
    onPhase?.(e);
  };
  return { t0, phases, phase };
}

export async function createVm(conn: Connection, opts: CreateOptions, hooks: CreateHooks = {}): Promise<CreateResult> {
  const log = hooks.log ?? silentLogger;
  const { t0, phases, phase } = phaseRecorder(hooks.onPhase);
  const name = assertVmName(opts.name);
  // independent checks side by side; their errors in a fixed order
  const [exists, loaded] = await Promise.allSettled([domainExists(conn, name), loadTemplate(opts.template ?? 'default', { overrides: opts.overrides ?? {} })]);
  if (exists.status === 'rejected') throw exists.reason;
  if (exists.value) {
    throw new VmctlError('ALREADY_EXISTS', `a VM named '${name}' already exists on ${conn.uri.original}`, {
      hint: `choose another name, or remove it first with vmctl delete ${name}`,
    });
  }
  if (loaded.status === 'rejected') throw loaded.reason;
  const template = loaded.value;
  const spec = template.spec;
  const forwards = spec.nics.flatMap((n) => (n.type === 'user' ? n.forwards : []));
  const hasSshForward = forwards.some(isSshForward);
  const autoSsh = forwards.some((f) => isSshForward(f) && f.hostPort === 0);
  if (autoSsh) forwardPortRange(); // a bad VMCTL_FORWARD_PORTS fails before anything is made
  const unpicked = forwards.find((f) => f.hostPort === 0 && !isSshForward(f));
  if (unpicked) {
    throw new VmctlError('INVALID_INPUT', `the ${unpicked.proto} forward to guest port ${unpicked.guestPort} has hostPort 0; vmctl picks a free port only for SSH (tcp 22)`, {
      hint: 'give that forward a fixed hostPort in the template',
    });
  }
  // decide up front what "ready" means: nothing is made before it is known to be possible
  let wait: WaitTarget = opts.wait ?? 'ssh';
  let ipOnlyWarning: string | undefined;
  if (hasSshForward && conn.hostLoopback === 'none' && wait === 'ssh') {
    if (opts.wait === 'ssh') tunnelFor(conn); // throws: says why and what to use instead
    wait = 'ip';
    // said when the wait begins (not if create fails before)
    ipOnlyWarning = `over ${conn.uri.transport} vmctl cannot reach the guest's SSH forward (it listens on the loopback of ${conn.uri.host ?? 'the libvirt host'}): waiting for an IP only; use qemu+ssh://${conn.uri.host ?? 'HOST'}/system for vmctl ssh`;
  }
  const imageName = spec.image ?? 'debian-12';
  const imageOpts = {
    ...(hooks.onProgress ? { onProgress: hooks.onProgress } : {}),
    ...(hooks.signal ? { signal: hooks.signal } : {}),
    onLog: (m: string) => log.info(m),
  };
  // the accelerator and the storage side do not depend on each other
  const [accelDone, storageDone] = await Promise.allSettled([
    chooseAccel(conn, opts.accel ?? spec.accel, log),
    (async () => {
      const { pool, path: poolPath } = await ensurePool(conn);
      await assertPoolRoom(conn, pool, poolPath, imageName);
      return { pool, image: await ensureImage(conn, imageName, imageOpts) };
    })(),
  ]);
  if (accelDone.status === 'rejected') throw accelDone.reason;
  if (storageDone.status === 'rejected') throw storageDone.reason;
  const accel = accelDone.value;
  if (accel.warning) hooks.onWarning?.(accel.warning);
  log.info({ domainType: accel.domainType, reason: accel.reason }, 'accelerator chosen');
  const { pool } = storageDone.value;
  const image: ImageInfo = storageDone.value.image;
  checkAborted(hooks.signal);

  const rollback = new Rollback(log);
  const uuid = randomUUID();
  const stateDir = vmStateDir(conn.uri.original, name);
  const tmp = mkdtempSync(join(tmpdir(), 'vmctl-create-'));
  try {
    // client-side state: login key (reused or new) and the guest's new host key
    const userPublicKeys = spec.cloudInit?.sshKeys ?? [];
    rollback.add(`state dir ${stateDir}`, () => rmSync(stateDir, { recursive: true, force: true }));
    const keys = ensureVmKeys(stateDir, { userPublicKeys });

    // the ssh forward's port: picked here (remote hosts too), re-picked if QEMU finds it taken
    const candidates = forwardPortCandidates();
    let sshPort = autoSsh ? await pickForwardPort(conn, candidates) : undefined;
    const hostPort = (f: { guestPort: number; proto: 'tcp' | 'udp' }) => {
      if (isSshForward(f) && sshPort !== undefined) return sshPort;
      throw new VmctlError('INTERNAL', `no port was picked for the forward to guest port ${f.guestPort}`);
    };

    // disks (qcow2 overlays on the image, or empty volumes) and the cloud-init
    // seed ISO are independent: make them side by side, then roll back whatever
    // was made if any part failed
    const diskWork = (async () => {
      const refs = [];
      for (const plan of planDiskVolumes(spec, imageName)) {
        const volName = `${name}-${plan.disk}.${plan.format}`;
        const backing = plan.backingImage !== undefined ? (plan.backingImage === imageName ? image : await ensureImage(conn, plan.backingImage, imageOpts)) : undefined;
        const capacity = Math.max(plan.sizeBytes, backing?.virtualSizeBytes ?? 0);
        const vol = await pool.createVolume(
          volumeXml({ name: volName, capacityBytes: capacity, format: plan.format, ...(backing ? { backing: { path: backing.path, format: backing.format } } : {}) }),
        );
        rollback.add(`volume ${volName}`, () => vol.delete());
        refs.push({ disk: plan.disk, pool: pool.name, name: volName, path: await vol.path() });
        checkAborted(hooks.signal);
      }
      return refs;
    })();
    const seedWork = (async () => {
      if (!spec.cloudInit) return undefined;
      const docs = buildSeedDocuments({
        hostname: spec.cloudInit.hostname ?? name,
        instanceId: uuid,
        user: spec.cloudInit.user,
        authorizedKeys: keys.authorizedKeys,
        hostKey: keys.hostKey,
        packages: spec.cloudInit.packages,
        runcmd: spec.cloudInit.runcmd,
      });
      const iso = join(tmp, 'seed.iso');
      await writeSeedIso(docs, iso);
      const seedName = `${name}-seed.iso`;
      const seedVol = await uploadFileAsVolume(pool, seedName, iso);
      rollback.add(`volume ${seedName}`, () => seedVol.delete());
      return { pool: pool.name, name: seedName, path: await seedVol.path() };
    })();
    const [disksDone, seedDone] = await Promise.allSettled([diskWork, seedWork]);
    if (disksDone.status === 'rejected') throw disksDone.reason;
    if (seedDone.status === 'rejected') throw seedDone.reason;
    const volRefs = disksDone.value;
    const seedRef = seedDone.value;
    checkAborted(hooks.signal);

    // a direct-kernel image boots its own kernel unless the template says otherwise
    const resolved = image.boot.method === 'direct-kernel' && spec.boot.type === 'disk'
      ? { ...template, spec: { ...spec, boot: { type: 'kernel' as const, kernel: image.boot.kernelPath, initrd: image.boot.initrdPath, cmdline: image.boot.cmdline } } }
      : template;
    const createdAt = new Date().toISOString();
    const domainXml = () =>
      buildDomainXml(
        buildVmSpec({
          name,
          template: resolved,
          domainType: accel.domainType,
          volumes: volRefs,
          ...(seedRef ? { seed: seedRef } : {}),
          uuid,
          image: imageName,
          hostPort,
          vmctlVersion: vmctlVersion(),
          createdAt,
        }),
      );
    log.debug({ name }, 'defining domain');
    const dom = await conn.defineDomain(domainXml());
    rollback.add(`domain ${name}`, () => undefineDomain(dom));
    phase('defined');

    const sshTargetFor = (port: number): GuestTarget => {
      const hostPattern = hostPatternFor('127.0.0.1', port);
      pinHostKey(stateDir, hostPattern, keys.hostKey.publicKey);
      return {
        host: '127.0.0.1',
        port,
        user: spec.cloudInit?.user ?? 'vmctl',
        knownHostsFile: keys.knownHostsFile,
        hostPattern,
        ...(keys.userKey ? { privateKey: keys.userKey.privateKey } : {}),
        ...(process.env.SSH_AUTH_SOCK && !keys.userKey ? { agent: process.env.SSH_AUTH_SOCK } : {}),
        ...(conn.hostLoopback === 'none' ? {} : tunnelFor(conn)),
      };
    };

    const result: CreateResult = {
      name,
      uuid,
      domainType: accel.domainType,
      accelReason: accel.reason,
      image: imageName,
      state: 'shutoff',
      phases,
    };
    const setSsh = (port: number | undefined) => {
      if (port === undefined) return undefined;
      const t = sshTargetFor(port);
      result.ssh = { host: t.host, port: t.port, user: t.user };
      return t;
    };
    if (opts.start === false) {
      setSsh(sshPort);
      rollback.commit();
      return result;
    }

    // QEMU fails to start when a forward's port is taken on the host (by
    // anything, at any moment): take another one and define again
    for (let attempt = 1; ; attempt++) {
      try {
        await dom.start();
        break;
      } catch (e) {
        if (!(sshPort !== undefined && isForwardPortTaken(e))) throw e;
        if (attempt >= 10) {
          throw new VmctlError('RESOURCE', `${attempt} ports for the SSH forward were all taken on ${conn.uri.host ?? 'this machine'} (last: 127.0.0.1:${sshPort})`, {
            hint: 'set VMCTL_FORWARD_PORTS=LOW-HIGH to a range that is free there, or a fixed hostPort for the SSH forward in the template',
            cause: e,
          });
        }
        log.info({ port: sshPort, attempt }, 'ssh forward port taken on the host; picking another');
        sshPort = await pickForwardPort(conn, candidates);
        await conn.defineDomain(domainXml());
      }
    }
    rollback.add(`running ${name}`, () => dom.destroy());
    phase('started');
    result.state = 'running';
    const sshTarget = setSsh(sshPort);

    if (wait !== 'none') {
      if (ipOnlyWarning) hooks.onWarning?.(ipOnlyWarning);
      const ready = await waitReady(dom, { target: wait, ssh: sshTarget, timeoutMs: opts.timeoutMs ?? 15 * 60_000, phase, signal: hooks.signal, log, t0 });
      if (ready.ip) result.ip = ready.ip;
    }
    rollback.commit();
    return result;
  } catch (err) {
    log.warn({ err: (err as Error).message }, 'create failed; rolling back');
    await rollback.run();
    throw err;
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

async function undefineDomain(dom: Domain): Promise<void> {
  const F = VirDomainUndefineFlagsValues;
  await dom.undefine(
    F.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | F.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA | F.VIR_DOMAIN_UNDEFINE_NVRAM | F.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA,
  );
}

// ---------------------------------------------------------------------------
// readiness

interface WaitOptions {
  target: 'ip' | 'ssh';
  ssh?: GuestTarget;
  timeoutMs: number;
  phase: (p: Phase, detail?: string) => void;
  signal?: AbortSignal;
  log: Logger;
  t0: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The guest's addresses: DHCP lease, then guest agent, then ARP. */
export async function guestAddresses(dom: Domain): Promise<{ source: 'lease' | 'agent' | 'arp'; addrs: string[] } | undefined> {
  const S = VirDomainInterfaceAddressesSource;
  const sources: [number, 'lease' | 'agent' | 'arp'][] = [
    [S.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE, 'lease'],
    [S.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT, 'agent'],
    [S.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_ARP, 'arp'],
  ];
  for (const [src, label] of sources) {
    try {
      const r = await dom.conn.remote.domainInterfaceAddresses({ dom: dom.ref, source: src, flags: 0 });
      const addrs = r.ifaces
        .filter((i) => i.name !== 'lo')
        .flatMap((i) => i.addrs.map((a) => a.addr))
        .filter((a) => a !== '127.0.0.1' && a !== '::1' && !a.startsWith('fe80:'));
      if (addrs.length > 0) return { source: label, addrs };
    } catch (e) {
      // agent not up yet, no lease for user-mode NICs...: try the next source
      if (!(e instanceof LibvirtError)) throw e;
    }
  }
  return undefined;
}

async function waitReady(dom: Domain, o: WaitOptions): Promise<{ ip?: string }> {
  const deadline = o.t0 + o.timeoutMs;
  let last: Phase = 'started';
  const stalled = (what: string) =>
    new VmctlError('TIMEOUT', `VM ${dom.name} did not reach '${what}' within ${Math.round(o.timeoutMs / 1000)} s (last phase reached: '${last}')`, {
      hint: `watch it boot with vmctl console ${dom.name}; the VM is left running for inspection (vmctl delete ${dom.name} removes it)`,
    });
  const assertRunning = async () => {
    const s = await dom.state();
    if (s.state !== 'running') {
      throw new VmctlError('CONFLICT', `VM ${dom.name} stopped while booting (state: ${s.state})`, { hint: `look at vmctl console ${dom.name} and the QEMU log` });
    }
  };
  // ip
  let ip: string | undefined;
  while (!ip) {
    checkAborted(o.signal);
    if (performance.now() > deadline) throw stalled('ip');
    const a = await guestAddresses(dom);
    if (a) {
      ip = a.addrs[0];
      o.phase('ip', `${ip} (${a.source})`);
      last = 'ip';
      break;
    }
    await assertRunning();
    await sleep(1000);
  }
  if (o.target === 'ip') return { ...(ip ? { ip } : {}) };
  if (!o.ssh) {
    throw new VmctlError('UNSUPPORTED', `cannot wait for ssh on ${dom.name}: it has no SSH port forward`, { hint: 'use --wait ip' });
  }
  // sshd
  const remaining = () => Math.max(1000, deadline - performance.now());
  let guest;
  try {
    guest = await waitForSsh(o.ssh, { timeoutMs: remaining(), ...(o.signal ? { signal: o.signal } : {}) });
  } catch (e) {
    if (e instanceof VmctlError && e.code === 'TIMEOUT') throw stalled('sshd');
    throw e;
  }
  o.phase('sshd', `${o.ssh.host}:${o.ssh.port}`);
  last = 'sshd';
  // cloud-init done
  try {
    const st = await waitForCloudInit(guest, { timeoutMs: remaining() });
    if (st.status !== 'done') {
      throw new VmctlError('LIBVIRT', `cloud-init on ${dom.name} ended with status '${st.status}'${st.errors.length ? `: ${st.errors.join('; ')}` : ''}`, {
        hint: `inspect with vmctl ssh ${dom.name} -- sudo cloud-init status --long`,
      });
    }
  } finally {
    guest.close();
  }
  o.phase('cloud-init');
  return { ...(ip ? { ip } : {}) };
}

// ---------------------------------------------------------------------------
// the other verbs

export async function findVm(conn: Connection, name: string): Promise<Domain> {
  assertVmName(name);
  try {
    return await conn.lookupDomain(name);
  } catch (e) {
    if (e instanceof LibvirtError && e.isNotFound()) {
      throw new VmctlError('NOT_FOUND', `no VM named '${name}' on ${conn.uri.original}`, { hint: 'see vmctl list --all' });
    }
    throw e;
  }
}

export async function startVm(
  conn: Connection,
  name: string,
  opts: { wait?: WaitTarget; timeoutMs?: number } = {},
  hooks: Pick<CreateHooks, 'log' | 'onPhase' | 'signal'> = {},
): Promise<{ phases: PhaseEvent[]; ip?: string }> {
  const { t0, phases, phase } = phaseRecorder(hooks.onPhase);
  const dom = await findVm(conn, name);
  if ((await dom.state()).state === 'running') throw new VmctlError('CONFLICT', `VM ${name} is already running`);
  const ssh = opts.wait === 'ssh' ? await vmSshTarget(conn, name, { running: false }) : undefined;
  try {
    await dom.start();
  } catch (e) {
    if (!isForwardPortTaken(e)) throw e;
    const fwd = /host forwarding rule '(?:tcp|udp):([^']+)'/i.exec((e as Error).message)?.[1] ?? 'a forwarded port';
    throw new VmctlError('CONFLICT', `VM ${name} cannot start: ${fwd} (its port forward) is taken on ${conn.uri.host ?? 'this machine'}`, {
      hint: `stop what listens there (ss -ltnp shows it), then vmctl start ${name}`,
      cause: e,
    });
  }
  phase('started');
  const wait = opts.wait ?? 'none';
  if (wait === 'none') return { phases };
  const r = await waitReady(dom, {
    target: wait,
    ...(ssh ? { ssh } : {}),
    timeoutMs: opts.timeoutMs ?? 15 * 60_000,
    phase,
    ...(hooks.signal ? { signal: hooks.signal } : {}),
    log: hooks.log ?? silentLogger,
    t0,
  });
  return { phases, ...(r.ip ? { ip: r.ip } : {}) };
}

/** Wait until the domain is shut off (events would be nicer; polling is robust across reconnects). */
async function waitShutoff(dom: Domain, timeoutMs: number): Promise<boolean> {
  const end = performance.now() + timeoutMs;
  while (performance.now() < end) {
    if ((await dom.state()).state === 'shutoff') return true;
    await sleep(500);
  }
  return false;
}

export async function stopVm(conn: Connection, name: string, opts: { force?: boolean; timeoutMs?: number } = {}): Promise<{ forced: boolean }> {
  const dom = await findVm(conn, name);
  const st = (await dom.state()).state;
  if (st === 'shutoff') throw new VmctlError('CONFLICT', `VM ${name} is not running`);
  await dom.shutdown();
  const timeoutMs = opts.timeoutMs ?? 120_000;
  if (await waitShutoff(dom, timeoutMs)) return { forced: false };
  if (!opts.force) {
    throw new VmctlError('TIMEOUT', `VM ${name} did not shut down within ${Math.round(timeoutMs / 1000)} s after the ACPI request`, {
      hint: `retry with --force to power it off, or check vmctl console ${name}`,
    });
  }
  await dom.destroy();
  return { forced: true };
}

export async function rebootVm(conn: Connection, name: string): Promise<void> {
  await (await findVm(conn, name)).reboot();
}

export async function suspendVm(conn: Connection, name: string): Promise<void> {
  await (await findVm(conn, name)).suspend();
}

export async function resumeVm(conn: Connection, name: string): Promise<void> {
  await (await findVm(conn, name)).resume();
}

export async function destroyVm(conn: Connection, name: string): Promise<void> {
  const dom = await findVm(conn, name);
  if ((await dom.state()).state === 'shutoff') throw new VmctlError('CONFLICT', `VM ${name} is not running`);
  await dom.destroy();
}

/**
 * Delete: power off, undefine (snapshot metadata, managed save, NVRAM), remove
 * the volumes vmctl created for it (recorded in its metadata) and its client
 * state. Volumes vmctl did not create are never touched.
 */
export async function deleteVm(conn: Connection, name: string, log: Logger = silentLogger): Promise<{ removedVolumes: string[] }> {
  const dom = await findVm(conn, name);
  const meta = parseVmctlMetadata(await dom.xml());
  if ((await dom.state()).state !== 'shutoff') await dom.destroy();
  await undefineDomain(dom);
  const removed: string[] = [];
  for (const v of meta?.volumes ?? []) {
    try {
      const pool = await conn.lookupStoragePool(v.pool);
      const vol = await pool.lookupVolume(v.name);
      await vol.delete();
      removed.push(`${v.pool}/${v.name}`);
    } catch (e) {
      if (e instanceof LibvirtError && e.isNotFound()) continue;
      log.warn({ volume: v.name, err: (e as Error).message }, 'could not remove volume');
      throw e;
    }
  }
  rmSync(vmStateDir(conn.uri.original, name), { recursive: true, force: true });
  return { removedVolumes: removed };
}

export interface VmInfo {
  name: string;
  uuid: string;
  state: DomainStateName;
  domainType: string;
  accel: 'kvm' | 'tcg' | string;
  vcpus: number;
  memoryMiB: number;
  disks: { target: string; source?: string; device: string }[];
  ips: string[];
  ipSource?: string;
  ssh?: { host: string; port: number; user: string };
  template?: string;
  image?: string;
  createdByVmctl: boolean;
}

export async function vmInfo(conn: Connection, name: string): Promise<VmInfo> {
  const dom = await findVm(conn, name);
  const [info, xml, st] = await Promise.all([dom.info(), dom.xml(), dom.state()]);
  const meta = parseVmctlMetadata(xml);
  const doc = xmlParser.parse(xml) as { domain: { '@_type': string; devices?: { disk?: unknown } } };
  const rawDisks = doc.domain.devices?.disk;
  const disks = (Array.isArray(rawDisks) ? rawDisks : rawDisks ? [rawDisks] : []).map((d: Record<string, unknown>) => {
    const src = d.source as Record<string, string> | undefined;
    const tgt = d.target as Record<string, string> | undefined;
    return { target: tgt?.['@_dev'] ?? '?', device: String(d['@_device'] ?? 'disk'), ...(src?.['@_file'] ? { source: src['@_file'] } : {}) };
  });
  let ips: string[] = [];
  let ipSource: string | undefined;
  if (st.state === 'running') {
    const a = await guestAddresses(dom);
    if (a) {
      ips = a.addrs;
      ipSource = a.source;
    }
  }
  const fwd = meta?.forwards.find(isSshForward);
  return {
    name: dom.name,
    uuid: dom.uuidString,
    state: st.state,
    domainType: doc.domain['@_type'],
    accel: doc.domain['@_type'] === 'kvm' ? 'kvm' : 'tcg',
    vcpus: info.nrVirtCpu,
    memoryMiB: Math.round(Number(info.maxMem) / 1024),
    disks,
    ips,
    ...(ipSource ? { ipSource } : {}),
    ...(fwd ? { ssh: { host: fwd.host, port: fwd.hostPort, user: meta?.sshUser ?? 'vmctl' } } : {}),
    ...(meta?.template ? { template: meta.template } : {}),
    ...(meta?.image ? { image: meta.image } : {}),
    createdByVmctl: meta !== null,
  };
}

/** How to reach a VM over SSH from this machine (its forward + pinned host key). */
export async function vmSshTarget(conn: Connection, name: string, opts: { running?: boolean } = {}): Promise<GuestTarget> {
  const dom = await findVm(conn, name);
  const meta: VmctlDomainMetadata | null = parseVmctlMetadata(await dom.xml());
  const fwd = meta?.forwards.find(isSshForward);
  if (!meta || !fwd) {
    throw new VmctlError('UNSUPPORTED', `VM ${name} has no SSH forward recorded by vmctl`, { hint: 'vmctl ssh works with VMs made by vmctl create' });
  }
  if (opts.running !== false && (await dom.state()).state !== 'running') {
    throw new VmctlError('CONFLICT', `VM ${name} is not running`, { hint: `vmctl start ${name}` });
  }
  const stateDir = vmStateDir(conn.uri.original, name);
  const keyFile = join(stateDir, 'id_ed25519');
  const knownHostsFile = join(stateDir, 'known_hosts');
  if (!existsSync(knownHostsFile)) {
    throw new VmctlError('HOST_KEY', `no pinned host key for ${name} on this machine (${knownHostsFile} is missing)`, {
      hint: 'vmctl ssh works from the machine and user that created the VM',
    });
  }
  return {
    host: fwd.host,
    port: fwd.hostPort,
    user: meta.sshUser ?? 'vmctl',
    knownHostsFile,
    hostPattern: hostPatternFor(fwd.host, fwd.hostPort),
    ...(existsSync(keyFile) ? { privateKey: readFileSync(keyFile, 'utf8') } : {}),
    ...(process.env.SSH_AUTH_SOCK ? { agent: process.env.SSH_AUTH_SOCK } : {}),
    ...tunnelFor(conn),
  };
}
