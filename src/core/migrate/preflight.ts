/**
 * The pre-flight of `vmctl migrate`: everything checked before anything
 * moves, each failure naming its fix. Reads both hosts, changes neither.
 */
import { VmctlError, toVmctlError } from '../errors.js';
import { assertVmName } from '../names.js';
import { LibvirtError } from '../../libvirt/errors.js';
import type { Connection, Domain } from '../../libvirt/connection.js';
import { MigrateFlags } from '../../libvirt/connection.js';
import { VirDomainXMLFlags, VirCPUCompareResult } from '../../libvirt/generated/constants.gen.js';
import type { OpContext } from '../op/context.js';
import { parseOpMarker, markerLiveness } from '../op/journal.js';
import { describeHolder } from '../op/holder.js';
import { findVm, lookupVm } from '../vm/domain.js';
import { parseVolumeXml } from '../storage/volume.js';
import { VMCTL_POOL } from '../storage/pool.js';
import { forwardPortCandidates, pickForwardPort } from '../vm/forward.js';
import { compareHypervisorCpuCached, hostCapabilities, hostIdentityCached, hostVirtType } from '../host/cache.js';
import { dataDisks, guestFacts, mediaDisks, type GuestFacts } from './facts.js';
import { readSnapshots } from './snapshots.js';
import type { DiskPlan, MigrateOptions, MigratePlan, PreflightCheck } from './types.js';

const MiB = 1024 * 1024;
const mib = (b: number | bigint) => `${Math.round(Number(b) / MiB)} MiB`;
const ver = (v: number) => `${Math.floor(v / 1_000_000)}.${Math.floor(v / 1000) % 1000}.${v % 1000}`;

async function dstConnection(op: OpContext, uri: string, checks: PreflightCheck[]): Promise<Connection> {
  try {
    const c = await op.connection(uri);
    checks.push({ id: 'destination', status: 'pass', message: `${uri} reachable and authenticated (${await c.hostname()})` });
    return c;
  } catch (e) {
    const err = toVmctlError(e);
    throw new VmctlError(err.code === 'AUTH' || err.code === 'HOST_KEY' ? err.code : 'CONNECTION', `destination ${uri} is not reachable: ${err.message}`, {
      hint: err.hint ?? 'check the URI, that libvirtd listens there, and your credentials for it (vmctl host check -c URI)',
      cause: e,
    });
  }
}

async function volumeAt(conn: Connection, path: string) {
  try {
    const v = await conn.lookupStorageVolumeByPath(path);
    return { vol: v, details: parseVolumeXml(await v.xml()) };
  } catch (e) {
    if (e instanceof LibvirtError) return undefined;
    throw e;
  }
}

/** Whether a volume is one vmctl made for this VM (listed in its vmctl metadata). */
function ownedBy(facts: GuestFacts, pool: string, name: string, path: string): boolean {
  return (facts.vmctlVolumes ?? []).some((v) => (v.pool === pool && v.name === name) || (v.path !== undefined && v.path === path));
}

async function planDisks(src: Connection, dst: Connection, facts: GuestFacts, opts: MigrateOptions, checks: PreflightCheck[]): Promise<DiskPlan[]> {
  const out: DiskPlan[] = [];
  const need = new Map<string, bigint>();
  for (const d of dataDisks(facts)) {
    const path = d.path;
    if (d.readonly) {
      const there = path ? await volumeAt(dst, path) : undefined;
      out.push({ target: d.target, sourcePath: path, format: d.format, how: 'readonly' });
      if (!there && path) checks.push({ id: `disk:${d.target}`, status: 'warn', message: `read-only ${d.device} ${d.target} (${path}) is not known to a pool on the destination`, fix: 'make sure the file is there at the same path' });
      continue;
    }
    const mine = await volumeAt(src, path);
    const theirs = await volumeAt(dst, path);
    const shared = theirs !== undefined && (!mine || mine.details.capacity === theirs.details.capacity);
    if (shared) {
      out.push({ target: d.target, sourcePath: path, format: d.format, how: 'shared', ...(mine ? { capacityBytes: mine.details.capacity } : {}) });
      checks.push({ id: `disk:${d.target}`, status: 'pass', message: `disk ${d.target} (${path}) is on storage the destination sees: shared` });
      continue;
    }
    if (!opts.copyStorage) {
      checks.push({ id: `disk:${d.target}`, status: 'fail', message: `disk ${d.target} (${path}) is not visible on the destination`, fix: 'add --copy-storage all (or inc, when its base image is there too), or put it on storage both hosts share' });
      out.push({ target: d.target, sourcePath: path, format: d.format, how: 'copy' });
      continue;
    }
    if (!mine) {
      checks.push({ id: `disk:${d.target}`, status: 'fail', message: `disk ${d.target} (${path}) is not in a storage pool on the source, so vmctl cannot size its copy`, fix: 'put it in a libvirt storage pool (virsh pool-define-as … dir --target DIR)' });
      continue;
    }
    const poolName = mine.vol.poolName;
    let destPath: string | undefined;
    try {
      const pool = await dst.lookupStoragePool(poolName);
      const info = await pool.info();
      const pathDir = (/<path>([^<]+)<\/path>/.exec(await pool.xml()) ?? [])[1];
      destPath = pathDir ? `${pathDir.replace(/\/$/, '')}/${mine.details.name}` : undefined;
      const exists = await pool.lookupVolume(mine.details.name).then(() => true, () => false);
      if (exists) {
        checks.push({ id: `disk:${d.target}`, status: 'fail', message: `volume ${mine.details.name} exists already in pool ${poolName} on the destination`, fix: `remove it there (virsh vol-delete ${mine.details.name} --pool ${poolName}) if it is a leftover` });
      }
      need.set(poolName, (need.get(poolName) ?? 0n) + BigInt(opts.copyStorage === 'inc' ? mine.details.allocation : Math.max(mine.details.allocation, mine.details.capacity > 0 && d.format === 'raw' ? mine.details.capacity : mine.details.allocation)));
      const want = need.get(poolName)!;
      if (info.available < want) {
        checks.push({ id: `space:${poolName}`, status: 'fail', message: `pool ${poolName} on the destination has ${mib(info.available)} free, the copies need ${mib(want)}`, fix: 'free space there or use another pool' });
      }
    } catch (e) {
      if (!(e instanceof LibvirtError)) throw e;
      if (poolName === VMCTL_POOL) {
        // vmctl's own pool: made there as vmctl's first create would make it
        out.push({ target: d.target, sourcePath: path, format: d.format, how: 'copy', capacityBytes: mine.details.capacity, destPool: poolName, destVolume: mine.details.name, createPool: true, ...(ownedBy(facts, poolName, mine.details.name, path) ? { owned: true } : {}) });
        checks.push({ id: `disk:${d.target}`, status: 'pass', message: `disk ${d.target} (${mib(mine.details.capacity)} ${d.format}) copied to pool ${poolName} there, which vmctl makes first (it has none yet)` });
        continue;
      }
      checks.push({ id: `pool:${poolName}`, status: 'fail', message: `storage pool ${poolName} (disk ${d.target}) does not exist on the destination`, fix: `define and start it there (virsh pool-define-as ${poolName} dir --target DIR; virsh pool-start ${poolName})` });
      continue;
    }
    let backingPath: string | undefined;
    if (opts.copyStorage === 'inc' && mine.details.backingPath) {
      backingPath = mine.details.backingPath;
      if (!(await volumeAt(dst, backingPath))) {
        checks.push({ id: `backing:${d.target}`, status: 'fail', message: `base image ${backingPath} of disk ${d.target} is not on the destination (--copy-storage inc copies only the overlay)`, fix: 'use --copy-storage all, or put the base image there first (vmctl image …)' });
      }
    }
    out.push({ target: d.target, sourcePath: path, format: d.format, how: 'copy', capacityBytes: mine.details.capacity, destPool: poolName, destVolume: mine.details.name, ...(destPath ? { destPath } : {}), ...(backingPath ? { backingPath } : {}), ...(ownedBy(facts, poolName, mine.details.name, path) ? { owned: true } : {}) });
    checks.push({ id: `disk:${d.target}`, status: 'pass', message: `disk ${d.target} (${mib(mine.details.capacity)} ${d.format}) copied to pool ${poolName} there (${opts.copyStorage})` });
  }
  // read-only media (the cloud-init seed): QEMU opens them on the destination, libvirt copies only writable disks
  for (const d of mediaDisks(facts)) {
    if (await volumeAt(dst, d.path)) {
      out.push({ target: d.target, sourcePath: d.path, format: d.format, how: 'readonly' });
      continue;
    }
    const mine = await volumeAt(src, d.path);
    if (!mine) {
      // not a pool volume on either side: vmctl cannot tell whether the destination has the file
      out.push({ target: d.target, sourcePath: d.path, format: d.format, how: 'readonly' });
      checks.push({ id: `media:${d.target}`, status: 'warn', message: `${d.device} ${d.target} (${d.path}) is not in a storage pool: it must be at the same path on the destination`, fix: 'make sure the file is there' });
      continue;
    }
    if (!opts.copyStorage) {
      checks.push({
        id: `media:${d.target}`,
        status: 'fail',
        message: `${d.device} ${d.target} (${d.path}) is not on the destination`,
        fix: 'add --copy-storage all (vmctl copies the medium too), or put it at the same path there',
      });
      continue;
    }
    const poolName = mine.vol.poolName;
    const pool = await dst.lookupStoragePool(poolName).catch((e: unknown) => (e instanceof LibvirtError ? undefined : Promise.reject(e)));
    const makePool = !pool && poolName === VMCTL_POOL;
    if (!pool && !makePool) {
      checks.push({ id: `pool:${poolName}`, status: 'fail', message: `storage pool ${poolName} (${d.device} ${d.target}) does not exist on the destination`, fix: `define and start it there (virsh pool-define-as ${poolName} dir --target DIR; virsh pool-start ${poolName})` });
      continue;
    }
    const owned = ownedBy(facts, poolName, mine.details.name, d.path);
    // an image's kernel/initrd (shared by the VMs of that image here) goes there as the VM's own
    // copy, recorded in its metadata, so that deleting the VM there removes it and nothing is stranded
    const boot = (d.target === 'kernel' || d.target === 'initrd') && !owned && facts.vmctlVolumes !== undefined;
    const destVolume = boot ? `${facts.name}-boot.${d.target === 'kernel' ? 'vmlinuz' : 'initrd'}` : mine.details.name;
    if (pool && (await pool.lookupVolume(destVolume).then(() => true, () => false))) {
      checks.push({ id: `media:${d.target}`, status: 'fail', message: `volume ${destVolume} exists already in pool ${poolName} on the destination`, fix: `remove it there (virsh vol-delete ${destVolume} --pool ${poolName}) if it is a leftover` });
      continue;
    }
    out.push({ target: d.target, sourcePath: d.path, format: d.format, how: 'media', capacityBytes: mine.details.capacity, destPool: poolName, destVolume, ...(owned ? { owned: true } : {}), ...(boot ? { recordAs: d.target } : {}), ...(makePool ? { createPool: true } : {}) });
    checks.push({ id: `media:${d.target}`, status: 'pass', message: `${d.device} ${d.target} (${mib(mine.details.capacity)}, read-only) uploaded to pool ${poolName} there${boot ? ` as ${destVolume}` : ''}` });
  }
  return out;
}

async function checkCpu(src: Connection, dst: Connection, facts: GuestFacts, checks: PreflightCheck[]): Promise<void> {
  if (!facts.cpuXml) {
    checks.push({ id: 'cpu', status: 'pass', message: `guest CPU: QEMU's default model for ${facts.machine || facts.arch} (runs on any ${facts.arch} host)` });
    return;
  }
  if (facts.domainType === 'qemu') {
    checks.push({ id: 'cpu', status: 'pass', message: `TCG emulates the guest CPU${facts.cpuXml.includes('<model') ? ` (${(/<model[^>]*>([^<]+)</.exec(facts.cpuXml) ?? [])[1]})` : ''} on any ${facts.arch} host: nothing to compare` });
    return;
  }
  if (facts.cpuMode === 'host-passthrough') {
    checks.push({ id: 'cpu', status: 'warn', message: 'guest CPU is host-passthrough: it migrates only between identical CPUs', fix: 'define a named model (a baseline of both hosts) for hosts that differ' });
    return;
  }
  const o = { arch: facts.arch, virttype: facts.domainType, ...(facts.machine ? { machine: facts.machine } : {}) };
  let r: number;
  let cached = false;
  try {
    // per-host cache (short TTL): the same guest CPU against the same host gives the same answer
    ({ result: r, fromCache: cached } = await compareHypervisorCpuCached(dst, facts.cpuXml, o));
  } catch (e) {
    checks.push({ id: 'cpu', status: 'warn', message: `the destination could not compare the guest CPU: ${(e as Error).message}` });
    return;
  }
  if (r === VirCPUCompareResult.VIR_CPU_COMPARE_INCOMPATIBLE) {
    let suggestion = '';
    try {
      const hostCpu = (caps: string) => (/<host>[\s\S]*?(<cpu>[\s\S]*?<\/cpu>)/.exec(caps) ?? [])[1];
      const a = hostCpu((await hostCapabilities(src)).xml);
      const b = hostCpu((await hostCapabilities(dst)).xml);
      if (a && b) suggestion = (/<model[^>]*>([^<]+)<\/model>/.exec(await dst.baselineHypervisorCpu([a, b], o)) ?? [])[1] ?? '';
    } catch {
      /* no suggestion then */
    }
    checks.push({ id: 'cpu', status: 'fail', message: "the guest's CPU is not compatible with the destination host's", fix: suggestion ? `give the guest a CPU both hosts run: <cpu mode='custom'><model>${suggestion}</model></cpu>` : 'give the guest a CPU model both hosts run (virsh hypervisor-cpu-baseline)' });
    return;
  }
  checks.push({ id: 'cpu', status: 'pass', message: `guest CPU runs on the destination (${r === VirCPUCompareResult.VIR_CPU_COMPARE_IDENTICAL ? 'identical' : 'superset'}${cached ? ', as it did within the hour' : ''})` });
}

/** The SSH forward's port: free of other guests on the destination, else a new one. */
async function checkSshPort(dst: Connection, facts: GuestFacts, checks: PreflightCheck[]): Promise<{ from: number; to: number } | undefined> {
  if (facts.sshPort === undefined) return undefined;
  const used = new Set<number>();
  for (const o of await dst.listDomains({ active: true })) {
    const p = guestFacts(await o.xml()).sshPort;
    if (p !== undefined) used.add(p);
  }
  if (!used.has(facts.sshPort)) {
    checks.push({ id: 'ssh-port', status: 'pass', message: `SSH forward port 127.0.0.1:${facts.sshPort} is not used by a guest on the destination` });
    return undefined;
  }
  const candidates = forwardPortCandidates();
  let port = await pickForwardPort(dst, candidates);
  while (used.has(port)) port = await pickForwardPort(dst, candidates);
  checks.push({ id: 'ssh-port', status: 'warn', message: `SSH forward port ${facts.sshPort} is used by another guest on the destination: re-picked ${port}` });
  return { from: facts.sshPort, to: port };
}

export async function planMigrate(op: OpContext, opts: MigrateOptions): Promise<MigratePlan> {
  const name = assertVmName(opts.name);
  const src = op.conn;
  const checks: PreflightCheck[] = [];
  const mode = opts.mode ?? 'p2p';
  if (mode === 'tunnelled' && opts.migrateUri) throw new VmctlError('USAGE', '--migrate-uri cannot be used with --tunnelled (the stream goes through the libvirt connection)');
  if (mode === 'tunnelled' && opts.copyStorage) throw new VmctlError('USAGE', '--copy-storage cannot be used with --tunnelled in libvirt 9.0', { hint: 'use the default peer-to-peer mode or --direct' });
  if (opts.postcopyAfterS !== undefined && !(opts.postcopyAfterS >= 0)) throw new VmctlError('USAGE', '--postcopy-after takes seconds ≥ 0');
  const dom: Domain = await findVm(src, name);
  const [xml, state, dst] = await Promise.all([dom.xml(VirDomainXMLFlags.VIR_DOMAIN_XML_SECURE), dom.state(), dstConnection(op, opts.to, checks)]);
  const facts = guestFacts(xml);
  const marker = parseOpMarker(xml);
  if (marker && marker.op !== 'migrate') {
    throw new VmctlError('CONFLICT', `VM '${name}' is incomplete (vmctl ${marker.op} at step ${marker.step})`, { hint: `finish or remove it first (vmctl delete ${name})` });
  }
  if (marker && markerLiveness(marker) === 'alive') {
    throw new VmctlError('CONFLICT', `VM '${name}' is busy: vmctl ${marker.op} by ${describeHolder(marker)} is at step '${marker.step}'`, { hint: 'wait for that command to finish' });
  }
  const live = state.state === 'running' || state.state === 'paused';
  if (!live) checks.push({ id: 'state', status: 'fail', message: `VM '${name}' is ${state.state}: vmctl migrate moves running guests`, fix: `start it first (vmctl start ${name})` });
  // one round trip per host, not four in a row (each is a network round trip to a remote host)
  const [srcHost, dstHost, there] = await Promise.all([src.hostname(), dst.hostname(), lookupVm(dst, name)]);
  if (src.uri.original === dst.uri.original || srcHost === dstHost) {
    checks.push({ id: 'same-host', status: 'fail', message: 'source and destination are the same host', fix: 'name another host with --to' });
  }

  if (there) checks.push({ id: 'name', status: 'fail', message: `a guest named '${name}' exists on the destination already`, fix: `remove it there first (vmctl delete ${name} -c ${opts.to}), or migrate another VM` });
  else checks.push({ id: 'name', status: 'pass', message: `no guest named '${name}' on the destination` });

  // the checks below are independent: side by side (each host answers several at once), their
  // results in a fixed order
  const part = () => [] as PreflightCheck[];
  const C = { versions: part(), accel: part(), cpu: part(), memory: part(), networks: part(), disks: part(), ssh: part(), snapshots: part() };
  let retype: string | undefined;
  const accel = { source: 'TCG', destination: 'TCG', guest: facts.domainType === 'kvm' ? 'KVM' : 'TCG' };
  let disks: DiskPlan[] = [];
  let sshPort: { from: number; to: number } | undefined;
  let snaps: Awaited<ReturnType<typeof readSnapshots>> = [];
  // the host identities hold both versions and key the host caches: with the QEMU version reused
  // for up to an hour (src/core/host/cache.ts), since asking for it can cost seconds (a QEMU probe)
  const ids = Promise.all([hostIdentityCached(src), hostIdentityCached(dst)]);
  const tasks: Promise<void>[] = [
    (async () => {
      const num = (v: string) => v.split('.').reduce((a, x) => a * 1000 + Number(x), 0);
      const [si, di] = await ids;
      const [sl, dl, sq, dq] = [num(si.libvirtVersion), num(di.libvirtVersion), num(si.hypervisorVersion), num(di.hypervisorVersion)];
      const vOk = dl >= sl && dq >= sq;
      C.versions.push({
        id: 'versions',
        status: dl < 1_002_000 ? 'fail' : vOk ? 'pass' : 'warn',
        message: `libvirt ${ver(sl)} → ${ver(dl)}, QEMU ${ver(sq)} → ${ver(dq)}`,
        ...(vOk ? {} : { fix: 'migrating to an older libvirt/QEMU may fail: upgrade the destination' }),
      });
    })(),
    (async () => {
      // KVM or TCG per host: cached capabilities, else the domain capabilities of the guest's arch
      // (one QEMU binary instead of all), cached per host
      await ids;
      const [sType, dType] = await Promise.all([hostVirtType(src, facts.arch), hostVirtType(dst, facts.arch)]);
      const dstKvm = dType.virtType === 'kvm';
      accel.source = sType.virtType === 'kvm' ? 'KVM' : 'TCG';
      accel.destination = dstKvm ? 'KVM' : 'TCG';
      if (facts.domainType === 'kvm' && !dstKvm) {
        if (opts.forceAccel) {
          retype = 'qemu';
          C.accel.push({ id: 'accel', status: 'warn', message: 'KVM guest → destination without KVM: it would run under TCG there (--force-accel)' });
        } else {
          C.accel.push({ id: 'accel', status: 'fail', message: 'the guest runs under KVM, the destination has only TCG: refused (it would be many times slower)', fix: 'migrate to a host with KVM, or add --force-accel to move it anyway' });
        }
      } else {
        C.accel.push({ id: 'accel', status: 'pass', message: `guest ${accel.guest}; source host ${accel.source}, destination host ${accel.destination}${facts.domainType === 'qemu' && dstKvm ? ' (stays TCG: a running guest cannot switch)' : ''}` });
      }
    })(),
    checkCpu(src, dst, facts, C.cpu),
    (async () => {
      const free = await dst.freeMemory();
      const needMem = BigInt(facts.memoryKiB) * 1024n;
      C.memory.push(
        free >= needMem
          ? { id: 'memory', status: 'pass', message: `${mib(needMem)} guest memory, ${mib(free)} free on the destination` }
          : { id: 'memory', status: 'fail', message: `the guest needs ${mib(needMem)}, the destination has ${mib(free)} free`, fix: 'free memory there (stop guests) or pick another host' },
      );
    })(),
    (async () => {
      for (const n of facts.networks) {
        const ok = await dst.lookupNetwork(n).then((net) => net.isActive(), () => false);
        C.networks.push(ok ? { id: `network:${n}`, status: 'pass', message: `network ${n} is active on the destination` } : { id: `network:${n}`, status: 'fail', message: `network ${n} (used by the guest) is not active on the destination`, fix: `define and start it there (virsh net-define …; virsh net-start ${n})` });
      }
    })(),
    (async () => {
      disks = await planDisks(src, dst, facts, opts, C.disks);
      if (disks.length === 0) C.disks.push({ id: 'disks', status: 'pass', message: 'no disks to share or copy' });
    })(),
    (async () => {
      sshPort = await checkSshPort(dst, facts, C.ssh);
    })(),
    (async () => {
      snaps = await readSnapshots(dom);
    })(),
  ];
  const settled = await Promise.allSettled(tasks);
  const failed = settled.find((r) => r.status === 'rejected');
  if (failed) throw (failed as PromiseRejectedResult).reason;
  if (snaps.length > 0) {
    const internalWithCopy = opts.copyStorage !== undefined && disks.some((d) => d.how === 'copy' && d.format === 'qcow2');
    C.snapshots.push(
      internalWithCopy
        ? { id: 'snapshots', status: 'fail', message: `${snaps.length} snapshot(s) live inside the qcow2 disks, which --copy-storage copies without them`, fix: 'migrate over shared storage, or delete the snapshots first' }
        : { id: 'snapshots', status: 'pass', message: `${snaps.length} snapshot(s) carried: ${snaps.map((x) => x.name).join(', ')}` },
    );
  }
  for (const k of ['versions', 'accel', 'cpu', 'memory', 'networks', 'disks', 'ssh', 'snapshots'] as const) checks.push(...C[k]);

  const F = MigrateFlags;
  let flags = F.VIR_MIGRATE_PERSIST_DEST | F.VIR_MIGRATE_ABORT_ON_ERROR;
  if (live) flags |= F.VIR_MIGRATE_LIVE;
  if (!opts.keepSource) flags |= F.VIR_MIGRATE_UNDEFINE_SOURCE;
  if (mode === 'p2p' || mode === 'tunnelled') flags |= F.VIR_MIGRATE_PEER2PEER;
  if (mode === 'tunnelled') flags |= F.VIR_MIGRATE_TUNNELLED;
  if (opts.copyStorage === 'all') flags |= F.VIR_MIGRATE_NON_SHARED_DISK;
  if (opts.copyStorage === 'inc') flags |= F.VIR_MIGRATE_NON_SHARED_INC;
  if (opts.autoConverge) flags |= F.VIR_MIGRATE_AUTO_CONVERGE;
  if (opts.postcopy || opts.postcopyAfterS !== undefined) flags |= F.VIR_MIGRATE_POSTCOPY;
  if (opts.compressed) flags |= F.VIR_MIGRATE_COMPRESSED;
  if (opts.unsafe) flags |= F.VIR_MIGRATE_UNSAFE;

  return {
    name,
    uuid: dom.uuidString,
    from: src.uri.original,
    to: opts.to,
    mode,
    live,
    checks,
    ok: !checks.some((c) => c.status === 'fail'),
    disks,
    snapshots: snaps.map((s) => s.name),
    accel,
    ...(sshPort ? { sshPort } : {}),
    flags,
    internal: { facts: retype ? { ...facts, domainType: retype } : facts, snapshotXml: snaps, opts },
  };
}

/** The pre-flight's failures as one error (each with its fix). */
export function preflightError(plan: MigratePlan): VmctlError {
  const fails = plan.checks.filter((c) => c.status === 'fail');
  const first = fails[0]!;
  return new VmctlError(first.id === 'name' ? 'ALREADY_EXISTS' : first.id.startsWith('space') || first.id === 'memory' ? 'RESOURCE' : first.id === 'accel' || first.id === 'cpu' ? 'UNSUPPORTED' : 'CONFLICT', `cannot migrate '${plan.name}' to ${plan.to}: ${fails.map((c) => c.message).join('; ')}`, {
    hint: fails.map((c) => c.fix).filter(Boolean).join('; '),
    details: { checks: plan.checks },
  });
}
