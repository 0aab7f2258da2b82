/**
 * `vmctl create`, in two parts:
 *
 * - planCreate: everything decided and validated, nothing changed — name,
 *   template, image, accelerator, volume names, the SSH forward's port, what
 *   "ready" means. `--dry-run` prints it.
 * - applyCreate: makes it, under the operation's lease and undo stack, with
 *   its intent recorded on the host before each change: the domain is defined
 *   first, carrying a `vmctlop:op` marker and the list of volumes it is about
 *   to get; then keys, volumes, start; the marker is cleared once the VM runs.
 *   Killed at any instant, it leaves either nothing or an incomplete VM that
 *   `list` shows and `delete` removes exactly.
 */
import { mkdtempSync, rmSync, createReadStream, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { VmctlError } from '../errors.js';
import { assertVmName } from '../names.js';
import { vmStateDir } from '../paths.js';
import { vmctlVersion } from '../host/version.js';
import { loadTemplate } from '../template/load.js';
import type { TemplateOverrides } from '../template/overrides.js';
import { buildVmSpec, planDiskVolumes, type DiskFormat, type ResolvedTemplate } from '../template/model.js';
import { buildDomainXml, userNetLease } from './domain-xml.js';
import { ensurePool, findPool, poolFreeBytes, VMCTL_POOL } from '../storage/pool.js';
import { deleteVolumeIfThere, diskVolumeName, seedVolumeName, volumeXml } from '../storage/volume.js';
import { chooseAccel, type AccelRequest } from '../host/accel.js';
import { ensureImage, findImage, type ImageInfo, type ImageProgress } from '../image/images.js';
import { buildSeedDocuments, ensureVmKeys, hostPatternFor, pinHostKey, writeSeedIso } from '../guest/cloudinit.js';
import type { GuestTarget } from '../guest/ssh.js';
import { LibvirtError } from '../../libvirt/errors.js';
import type { Connection, Domain, StoragePool, DomainStateName } from '../../libvirt/connection.js';
import type { OpContext } from '../op/context.js';
import { clearMarker, markerLiveness, markerMetadata, newMarker, parseOpMarker, recordStep, type OpMarker } from '../op/journal.js';
import { describeHolder } from '../op/holder.js';
import { forwardPortCandidates, forwardPortRange, isForwardPortTaken, isSshForward, pickForwardPort, tunnelFor } from './forward.js';
import { phaseRecorder, waitReady, type PhaseEvent, type WaitTarget } from './readiness.js';
import { describeMarker, lookupVm, missingBackingError, undefineDomain } from './domain.js';

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
  /** more cloud-config and network-config for the seed (labs: files, hosts, static addresses) */
  extraUserData?: Record<string, unknown>;
  extraNetworkConfig?: Record<string, unknown>;
  /** start the VM when the host's libvirtd starts */
  autostart?: boolean;
  /** the guest's hostname (default: the template's, else the VM name) */
  hostname?: string;
  /** SSH forward port candidates shared by several creates planned together (a lab), so they never pick the same port */
  portCandidates?: Iterator<number>;
}

export interface PlannedVolume {
  role: 'disk' | 'seed';
  disk?: string;
  name: string;
  format: DiskFormat | 'raw';
  sizeBytes: number;
  backingImage?: string;
}

export interface CreatePlan {
  name: string;
  uuid: string;
  template: string;
  image: string;
  /** the base image is already on the host (else it is built or uploaded first) */
  imagePresent: boolean;
  domainType: 'kvm' | 'qemu';
  accelReason: string;
  accelWarning?: string;
  pool: { name: string; exists: boolean; path?: string };
  volumes: PlannedVolume[];
  /** the SSH forward's port on the host's loopback, when vmctl picks it */
  sshPort?: number;
  cpus: number;
  memoryMiB: number;
  start: boolean;
  wait: WaitTarget;
  /** said when the wait begins */
  ipOnlyWarning?: string;
  stateDir: string;
  /** @internal what apply needs beyond the printable plan */
  readonly internal: {
    resolved: ResolvedTemplate;
    timeoutMs: number;
    portCandidates: Iterator<number>;
    extraUserData?: Record<string, unknown>;
    extraNetworkConfig?: Record<string, unknown>;
    autostart?: boolean;
    hostname?: string;
  };
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

/** Refuse a name that is taken, saying whether it is a VM or what an interrupted command left. */
async function assertNameFree(conn: Connection, name: string): Promise<void> {
  const dom = await lookupVm(conn, name);
  if (!dom) return;
  const marker = parseOpMarker(await dom.xml());
  if (marker && markerLiveness(marker) === 'alive') {
    throw new VmctlError('CONFLICT', `VM '${name}' is busy: vmctl ${marker.op} by ${describeHolder(marker)} is at step '${marker.step}' (since ${marker.since})`, {
      hint: 'wait for that command to finish',
      details: { busy: marker },
    });
  }
  if (marker) {
    throw new VmctlError('ALREADY_EXISTS', `'${name}' is an incomplete VM on ${conn.uri.original}: ${describeMarker(marker)}`, {
      hint: `vmctl delete ${name} removes what that command made; then create it again`,
      details: { incomplete: marker },
    });
  }
  throw new VmctlError('ALREADY_EXISTS', `a VM named '${name}' already exists on ${conn.uri.original}`, {
    hint: `choose another name, or remove it first with vmctl delete ${name}`,
  });
}

export async function planCreate(op: OpContext, opts: CreateOptions): Promise<CreatePlan> {
  const conn = op.conn;
  const name = assertVmName(opts.name);
  // independent checks side by side; their errors in a fixed order
  const [free, loaded] = await Promise.allSettled([assertNameFree(conn, name), loadTemplate(opts.template ?? 'default', { overrides: opts.overrides ?? {} })]);
  if (free.status === 'rejected') throw free.reason;
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
  const start = opts.start !== false;
  // decide up front what "ready" means: nothing is made before it is known to be possible
  let wait: WaitTarget = start ? (opts.wait ?? 'ssh') : 'none';
  let ipOnlyWarning: string | undefined;
  if (hasSshForward && conn.hostLoopback === 'none' && wait === 'ssh') {
    if (opts.wait === 'ssh') tunnelFor(conn); // throws: says why and what to use instead
    wait = 'ip';
    ipOnlyWarning = `over ${conn.uri.transport} vmctl cannot reach the guest's SSH forward (it listens on the loopback of ${conn.uri.host ?? 'the libvirt host'}): waiting for an IP only; use qemu+ssh://${conn.uri.host ?? 'HOST'}/system for vmctl ssh`;
  }
  const imageName = spec.image ?? 'debian-12';
  // the accelerator and the storage side do not depend on each other
  const [accelDone, poolDone, imageDone] = await Promise.allSettled([chooseAccel(conn, opts.accel ?? spec.accel, op.log), findPool(conn), findImage(conn, imageName)]);
  if (accelDone.status === 'rejected') throw accelDone.reason;
  if (poolDone.status === 'rejected') throw poolDone.reason;
  if (imageDone.status === 'rejected') throw imageDone.reason;
  const accel = accelDone.value;
  const image = imageDone.value;
  const pool = poolDone.value;
  const volumes: PlannedVolume[] = planDiskVolumes(spec, imageName).map((p) => ({
    role: 'disk',
    disk: p.disk,
    name: diskVolumeName(name, p.disk, p.format),
    format: p.format,
    sizeBytes: Math.max(p.sizeBytes, p.backingImage === imageName ? (image?.virtualSizeBytes ?? 0) : 0),
    ...(p.backingImage !== undefined ? { backingImage: p.backingImage } : {}),
  }));
  if (spec.cloudInit) volumes.push({ role: 'seed', name: seedVolumeName(name), format: 'raw', sizeBytes: 0 });
  const portCandidates = opts.portCandidates ?? forwardPortCandidates();
  const sshPort = autoSsh ? await pickForwardPort(conn, portCandidates) : undefined;
  op.throwIfAborted();
  return {
    name,
    uuid: randomUUID(),
    template: template.name,
    image: imageName,
    imagePresent: image !== undefined && image.complete,
    domainType: accel.domainType,
    accelReason: accel.reason,
    ...(accel.warning ? { accelWarning: accel.warning } : {}),
    pool: { name: VMCTL_POOL, exists: pool !== undefined, ...(pool?.description.path ? { path: pool.description.path } : {}) },
    volumes,
    ...(sshPort !== undefined ? { sshPort } : {}),
    cpus: spec.cpus,
    memoryMiB: spec.memoryMiB,
    start,
    wait,
    ...(ipOnlyWarning ? { ipOnlyWarning } : {}),
    stateDir: vmStateDir(conn.uri.original, name),
    internal: {
      resolved: template,
      timeoutMs: opts.timeoutMs ?? 15 * 60_000,
      portCandidates,
      ...(opts.extraUserData ? { extraUserData: opts.extraUserData } : {}),
      ...(opts.extraNetworkConfig ? { extraNetworkConfig: opts.extraNetworkConfig } : {}),
      ...(opts.autostart !== undefined ? { autostart: opts.autostart } : {}),
      ...(opts.hostname !== undefined ? { hostname: opts.hostname } : {}),
    },
  };
}

/**
 * Room for a new VM: its overlay and seed start small, but the overlay grows as
 * the guest writes (first boot alone writes ~100 MiB), and a missing base image
 * must be uploaded first. Refuse up front instead of failing half-way.
 */
export const MIN_FREE_FOR_VM = 512n * 1024n * 1024n;

async function assertPoolRoom(conn: Connection, pool: StoragePool, poolPath: string, imagePresent: boolean): Promise<void> {
  const free = await poolFreeBytes(conn, pool);
  let need = MIN_FREE_FOR_VM;
  if (!imagePresent) need += 512n * 1024n * 1024n; // the image itself (the default one is ~140 MiB, qcow2-compressed)
  if (free < need) {
    const mib = (b: bigint) => `${b / (1024n * 1024n)} MiB`;
    throw new VmctlError('RESOURCE', `storage pool '${pool.name}' on ${conn.uri.original} is full: ${mib(free)} free at ${poolPath}, a new VM needs at least ${mib(need)}`, {
      hint: 'free space there, or remove unused VMs and images (vmctl delete NAME, vmctl image rm NAME)',
      details: { freeBytes: free, neededBytes: need },
    });
  }
}

/** Undo of the domain: only the one with our UUID (a VM made meanwhile under the name is not ours). */
export async function removeDomainIfOurs(conn: Connection, name: string, uuid: string): Promise<void> {
  const dom = await lookupVm(conn, name);
  if (!dom || dom.uuidString !== uuid) return;
  if ((await dom.state()).state !== 'shutoff') await dom.destroy().catch(() => undefined);
  await undefineDomain(dom);
}

export async function applyCreate(op: OpContext, plan: CreatePlan): Promise<CreateResult> {
  const { name, uuid } = plan;
  const { phases, phase } = phaseRecorder(op);
  await op.lease(`vm/${name}`, `VM '${name}'`);
  const conn = op.conn;
  await assertNameFree(conn, name); // again, now that no other vmctl can claim it

  // the host's shared parts: the pool, room for the VM, the base image(s)
  const { pool, path: poolPath } = await op.step('pool', () => ensurePool(conn));
  await assertPoolRoom(conn, pool, poolPath, plan.imagePresent);
  const imageOpts = { onProgress: (p: ImageProgress) => op.progress(p), signal: op.signal, onLog: (m: string) => op.log.info(m) };
  const images = new Map<string, ImageInfo>();
  for (const v of plan.volumes) {
    if (v.backingImage !== undefined && !images.has(v.backingImage)) images.set(v.backingImage, await op.step(`image ${v.backingImage}`, () => ensureImage(conn, v.backingImage!, imageOpts)));
  }
  const existing = new Set((await pool.listVolumes()).map((v) => v.name));
  const taken = plan.volumes.find((v) => existing.has(v.name));
  if (taken) {
    throw new VmctlError('CONFLICT', `storage volume '${taken.name}' exists already in pool '${pool.name}', and no VM named '${name}' owns it`, {
      hint: `vmctl does not remove what it did not make: delete it yourself (virsh vol-delete ${taken.name} --pool ${pool.name}) or choose another VM name`,
    });
  }
  op.throwIfAborted();

  const image = images.get(plan.image);
  const t = plan.internal.resolved;
  // a direct-kernel image boots its own kernel unless the template says otherwise
  const resolved: ResolvedTemplate =
    image?.boot.method === 'direct-kernel' && t.spec.boot.type === 'disk'
      ? { ...t, spec: { ...t.spec, boot: { type: 'kernel' as const, kernel: image.boot.kernelPath, initrd: image.boot.initrdPath, cmdline: rootFor(image.boot.cmdline, t.spec.disks[0]?.bus) } } }
      : t;
  const refs = plan.volumes.map((v) => ({ ...v, pool: pool.name, path: join(poolPath, v.name) }));
  let sshPort = plan.sshPort;
  const createdAt = new Date().toISOString();
  let marker: OpMarker = newMarker('create', op.id, 'define');
  const domainXml = () =>
    buildDomainXml(
      buildVmSpec({
        name,
        template: resolved,
        domainType: plan.domainType,
        volumes: refs.filter((r) => r.role === 'disk').map((r) => ({ disk: r.disk!, pool: r.pool, name: r.name, path: r.path })),
        ...(refs.find((r) => r.role === 'seed') ? { seed: refs.find((r) => r.role === 'seed')! } : {}),
        uuid,
        image: plan.image,
        hostPort: (f) => {
          if (isSshForward(f) && sshPort !== undefined) return sshPort;
          throw new VmctlError('INTERNAL', `no port was picked for the forward to guest port ${f.guestPort}`);
        },
        vmctlVersion: vmctlVersion(),
        createdAt,
      }),
      markerMetadata(marker),
    );

  // 1. the intent, durably: the domain with the marker and the volumes it is about to get
  let dom: Domain;
  try {
    dom = await conn.defineDomain(domainXml());
  } catch (e) {
    if (e instanceof LibvirtError && e.isAlreadyExists()) await assertNameFree(conn, name); // says who has it
    throw e;
  }
  op.undo.push(`domain ${name}`, (c) => removeDomainIfOurs(c, name, uuid));
  if (plan.internal.autostart) await dom.setAutostart(true);
  phase('defined');
  await op.fault('after-define');

  // 2. client-side state: login key (reused or new) and the guest's new host key
  marker = await recordStep(dom, marker, 'keys');
  const stateDir = plan.stateDir;
  const tmp = mkdtempSync(join(tmpdir(), 'vmctl-create-'));
  try {
    op.undo.push(`state dir ${stateDir}`, () => rmSync(stateDir, { recursive: true, force: true }));
    const spec = resolved.spec;
    const keys = ensureVmKeys(stateDir, { userPublicKeys: spec.cloudInit?.sshKeys ?? [] });
    await op.fault('after-keys');

    // 3. volumes: overlays on the image (or empty disks) and the seed, side by side
    marker = await recordStep(dom, marker, 'volumes');
    const made = async (v: (typeof refs)[number], create: () => Promise<void>) => {
      op.undo.push(`volume ${v.name}`, async (c) => void (await deleteVolumeIfThere(c, v.pool, v.name)));
      await create();
    };
    const diskWork = op.step('disks', async () => {
      for (const v of refs.filter((r) => r.role === 'disk')) {
        const backing = v.backingImage !== undefined ? images.get(v.backingImage) : undefined;
        await made(v, async () => {
          const vol = await pool.createVolume(
            volumeXml({ name: v.name, capacityBytes: v.sizeBytes, format: v.format, ...(backing ? { backing: { path: backing.path, format: backing.format } } : {}) }),
          );
          if ((await vol.path()) !== v.path) throw new VmctlError('INTERNAL', `volume ${v.name} is at ${await vol.path()}, not ${v.path}`);
        });
        await op.fault('after-disk');
        op.throwIfAborted();
      }
    });
    const seedWork = op.step('seed', async () => {
      const seed = refs.find((r) => r.role === 'seed');
      if (!seed || !spec.cloudInit) return;
      const lease = userNetLease(spec.nics);
      const docs = buildSeedDocuments({
        hostname: plan.internal.hostname ?? spec.cloudInit.hostname ?? name,
        instanceId: uuid,
        user: spec.cloudInit.user,
        authorizedKeys: keys.authorizedKeys,
        hostKey: keys.hostKey,
        packages: spec.cloudInit.packages,
        runcmd: spec.cloudInit.runcmd,
        ...(plan.internal.extraUserData ? { extraUserData: plan.internal.extraUserData } : {}),
        ...(plan.internal.extraNetworkConfig ? { extraNetworkConfig: plan.internal.extraNetworkConfig } : {}),
        ...(lease ? { userNetLease: lease } : {}),
      });
      const iso = join(tmp, 'seed.iso');
      await writeSeedIso(docs, iso);
      const size = statSync(iso).size;
      await made(seed, async () => {
        const vol = await pool.createVolume(volumeXml({ name: seed.name, capacityBytes: size, format: 'raw' }));
        await vol.upload(createReadStream(iso), { length: BigInt(size) });
      });
    });
    const [disksDone, seedDone] = await Promise.allSettled([diskWork, seedWork]);
    if (disksDone.status === 'rejected') throw disksDone.reason;
    if (seedDone.status === 'rejected') throw seedDone.reason;
    await op.fault('after-volumes');
    op.throwIfAborted();

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
    const result: CreateResult = { name, uuid, domainType: plan.domainType, accelReason: plan.accelReason, image: plan.image, state: 'shutoff', phases };
    const setSsh = (port: number | undefined) => {
      if (port === undefined) return undefined;
      const target = sshTargetFor(port);
      result.ssh = { host: target.host, port: target.port, user: target.user };
      return target;
    };
    if (!plan.start) {
      await clearMarker(dom);
      setSsh(sshPort);
      return result;
    }

    // 4. start; QEMU fails when a forward's port is taken on the host (by
    // anything, at any moment): take another one and define again
    marker = await recordStep(dom, marker, 'start');
    for (let attempt = 1; ; attempt++) {
      try {
        await dom.start();
        break;
      } catch (e) {
        const missing = missingBackingError(name, e);
        if (missing) throw missing;
        if (!(sshPort !== undefined && isForwardPortTaken(e))) throw e;
        if (attempt >= 10) {
          throw new VmctlError('RESOURCE', `${attempt} ports for the SSH forward were all taken on ${conn.uri.host ?? 'this machine'} (last: 127.0.0.1:${sshPort})`, {
            hint: 'set VMCTL_FORWARD_PORTS=LOW-HIGH to a range that is free there, or a fixed hostPort for the SSH forward in the template',
            cause: e,
          });
        }
        op.log.info({ port: sshPort, attempt }, 'ssh forward port taken on the host; picking another');
        sshPort = await pickForwardPort(conn, plan.internal.portCandidates);
        dom = await conn.defineDomain(domainXml());
      }
    }
    phase('started');
    await op.fault('after-start');
    // 5. complete: the VM is whole and running
    await clearMarker(dom, true);
    result.state = 'running';
    const sshTarget = setSsh(sshPort);

    if (plan.wait !== 'none') {
      if (plan.ipOnlyWarning) op.warn(plan.ipOnlyWarning);
      const ready = await waitReady(op, dom, { target: plan.wait, ...(sshTarget ? { ssh: sshTarget } : {}), timeoutMs: plan.internal.timeoutMs, phase });
      if (ready.ip) result.ip = ready.ip;
    }
    return result;
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

/**
 * The image's kernel command line names its root as the first virtio disk
 * (/dev/vda); a root disk on another bus is the first SCSI/SATA/IDE disk (sda:
 * the seed is a cdrom, sr0).
 */
export function rootFor(cmdline: string, bus: string | undefined): string {
  if (bus === undefined || bus === 'virtio') return cmdline;
  return cmdline.replace(/(^|\s)root=\/dev\/vda(\d*)(?=\s|$)/, '$1root=/dev/sda$2');
}

/** plan + apply; with dryRun only the plan. */
export async function createVm(op: OpContext, opts: CreateOptions & { dryRun?: boolean }): Promise<CreateResult | { plan: CreatePlan }> {
  const plan = await op.step('plan', () => planCreate(op, opts));
  if (plan.accelWarning) op.warn(plan.accelWarning);
  if (opts.dryRun) return { plan };
  return applyCreate(op, plan);
}
