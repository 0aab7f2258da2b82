/**
 * `vmctl restore DIR`: the VM of a backup set recreated on a host (the
 * operation's connection, local or remote) from a chosen point.
 *
 * Nothing is created before the whole chain (full point + incrementals up to
 * the chosen one) verified: every chunk's checksum, and with the key every
 * chunk authenticated. Then, like create: the lease on the new name, the
 * domain defined first carrying the intent marker and the names of the
 * volumes it is about to get, each disk rebuilt locally from the chain as a
 * compact qcow2 without backing file: converted straight into the new
 * volume's file on a daemon on this machine, else uploaded through a volume
 * stream (as the seed and boot files are), the VM's client-side state (login key, pinned host
 * key, re-pinned for the SSH forward's new port) under the target connection
 * and the new name, the marker cleared; --verify-boot starts it and waits for
 * SSH with the pinned key. An existing VM is never touched: its name is
 * refused, its UUID makes the restored one get a fresh UUID and MACs.
 */
import { createReadStream, existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Domain, StorageVolume } from '../../libvirt/connection.js';
import { LibvirtError } from '../../libvirt/errors.js';
import { VmctlError } from '../errors.js';
import { assertVmName } from '../names.js';
import { vmStateDir, ensurePrivateDir } from '../paths.js';
import type { OpContext } from '../op/context.js';
import { clearMarker, markerMetadata, newMarker, recordStep } from '../op/journal.js';
import { ensurePool, VMCTL_POOL } from '../storage/pool.js';
import { diskVolumeName, seedVolumeName, volumeXml } from '../storage/volume.js';
import { lookupVm } from '../vm/domain.js';
import { removeDomainIfOurs } from '../vm/create.js';
import { deleteVolumeIfThere } from '../storage/volume.js';
import { parseVmctlMetadata, sshForwardPort } from '../vm/domain-xml.js';
import { forwardPortCandidates, pickForwardPort, tunnelFor } from '../vm/forward.js';
import { phaseRecorder, waitReady, type PhaseEvent } from '../vm/readiness.js';
import { hostPatternFor, pinHostKey } from '../guest/cloudinit.js';
import { writePrivateFile, chainOf, pointDir, type Manifest, type PayloadFile } from './format.js';
import { openEncryption, PayloadReader, type Codec, type DerivedKeys } from './chunks.js';
import { Meter, writableLocalVolumeFile } from './disk-data.js';
import { qemuImg } from './qemu-img.js';
import { rewriteDomainXml, type RestoredVolume } from './restore-xml.js';
import { loadManifests, verifySet } from './verify.js';

export interface RestoreOptions {
  dir: string;
  name?: string;
  pool?: string;
  network?: string;
  /** a point id (or a unique prefix of one); default the newest */
  at?: string;
  keyFile?: string;
  verifyBoot?: boolean;
  timeoutMs?: number;
}

export interface RestoreResult {
  name: string;
  uuid: string;
  uri: string;
  point: string;
  chain: string[];
  freshIdentity: boolean;
  volumes: Array<{ pool: string; name: string; bytes: number }>;
  snapshots: { restored: string[]; notRestored: Array<{ name: string; why: string }> };
  ssh?: { host: string; port: number; user: string };
  state: 'shutoff' | 'running';
  phases: PhaseEvent[];
  uploadBytesPerSecond: number;
  durationMs: number;
  notes: string[];
}

function pickPoint(manifests: Map<string, Manifest>, at: string | undefined): Manifest {
  const ids = [...manifests.keys()].sort();
  if (ids.length === 0) throw new VmctlError('NOT_FOUND', 'the backup set has no points', { hint: 'vmctl backup list DIR' });
  if (!at) return manifests.get(ids[ids.length - 1]!)!;
  const hits = ids.filter((i) => i === at || i.startsWith(at));
  if (hits.length !== 1) {
    throw new VmctlError(hits.length === 0 ? 'NOT_FOUND' : 'USAGE', `--at ${at} names ${hits.length === 0 ? 'no' : 'more than one'} point of the set`, { hint: `points: ${ids.join(', ')}` });
  }
  return manifests.get(hits[0]!)!;
}

async function readPayload(dir: string, m: Manifest, f: PayloadFile, codec: Codec): Promise<Buffer> {
  const r = await PayloadReader.open(join(pointDir(dir, m.id), f.path), f, `${m.id}/${f.path}`, codec);
  try {
    return await r.readAll();
  } finally {
    await r.close();
  }
}

function codecOf(m: Manifest, keys: DerivedKeys | undefined): Codec {
  return { compress: m.compression === 'gzip', ...(keys ? { key: keys.data } : {}) };
}

export async function restoreBackup(op: OpContext, opts: RestoreOptions): Promise<RestoreResult> {
  const t0 = performance.now();
  const notes: string[] = [];
  const { info, manifests } = loadManifests(opts.dir);
  const point = pickPoint(manifests, opts.at);
  const chain = chainOf(manifests, point.id);
  const keys = openEncryption(info, opts.keyFile, opts.dir);
  // 0. the whole chain must be intact before anything is made
  const v = await op.step('verify', () => verifySet(opts.dir, { ...(opts.keyFile ? { keyFile: opts.keyFile } : {}), points: chain.map((c) => c.id), signal: op.signal }));
  if (!v.ok) {
    const p = v.problems[0]!;
    throw new VmctlError('INVALID_INPUT', `refusing to restore from a damaged backup: ${p.file ?? p.point}${p.offset !== undefined ? ` at offset ${p.offset}` : ''}: ${p.problem}`, {
      hint: `nothing was created; vmctl backup verify ${opts.dir} lists all ${v.problems.length} problem(s)`,
      details: { problems: v.problems },
    });
  }
  const conn = op.conn;
  const name = assertVmName(opts.name ?? point.vm.name);
  const fileOf = (role: PayloadFile['role']) => point.files.find((f) => f.role === role);
  const domFile = fileOf('domain');
  if (!domFile) throw new VmctlError('INVALID_INPUT', `point ${point.id} has no domain definition`);
  const sourceXml = (await readPayload(opts.dir, point, domFile, codecOf(point, keys))).toString('utf8');
  const meta = parseVmctlMetadata(sourceXml);

  await op.lease(`vm/${name}`, `VM '${name}'`);
  if (await lookupVm(conn, name)) {
    throw new VmctlError('ALREADY_EXISTS', `a VM named '${name}' already exists on ${conn.uri.original}; restore never touches an existing VM`, { hint: 'restore under another name with --name NEW' });
  }
  let uuidTaken = false;
  try {
    await conn.lookupDomainByUuid(Buffer.from(point.vm.uuid.replace(/-/g, ''), 'hex'));
    uuidTaken = true;
  } catch (e) {
    if (!(e instanceof LibvirtError && e.isNotFound())) throw e;
  }
  const freshIdentity = uuidTaken || name !== point.vm.name;
  if (freshIdentity) notes.push(uuidTaken ? `the original (UUID ${point.vm.uuid}) exists on ${conn.uri.original}: fresh UUID and MAC addresses` : 'a copy under a new name: fresh UUID and MAC addresses');

  // where the volumes go
  const poolName = opts.pool ?? VMCTL_POOL;
  const pool = poolName === VMCTL_POOL ? (await ensurePool(conn)).pool : await conn.lookupStoragePool(poolName);
  const poolXml = await pool.xml();
  const poolPath = /<target>\s*<path>([^<]+)<\/path>/.exec(poolXml)?.[1];
  if (!poolPath) throw new VmctlError('UNSUPPORTED', `storage pool '${poolName}' has no target path (vmctl restores into directory pools)`);
  const diskName = (target: string, source: string) => meta?.volumes.find((x) => x.role === 'disk' && x.path === source)?.disk ?? target;
  const planned: Array<RestoredVolume & { file: PayloadFile; size: number }> = [];
  for (const d of point.disks) {
    const disk = diskName(d.target, d.sourcePath).replace(/[^a-z0-9-]/g, '') || d.target;
    const vname = diskVolumeName(name, /^[a-z]/.test(disk) ? disk : d.target, 'qcow2');
    planned.push({ role: 'disk', target: d.target, disk, pool: poolName, name: vname, path: join(poolPath, vname), file: point.files.find((f) => f.path === d.file)!, size: d.virtualSize });
  }
  for (const [role, vname] of [['seed', seedVolumeName(name)], ['kernel', `${name}-boot.vmlinuz`], ['initrd', `${name}-boot.initrd`]] as const) {
    const f = fileOf(role);
    if (f) planned.push({ role, pool: poolName, name: vname, path: join(poolPath, vname), file: f, size: f.size });
  }
  const existing = new Set((await pool.listVolumes()).map((x) => x.name));
  const taken = planned.find((p) => existing.has(p.name));
  if (taken) throw new VmctlError('CONFLICT', `storage volume '${taken.name}' exists already in pool '${poolName}'; restore never touches what it did not make`, { hint: 'restore under another name with --name NEW, or remove that volume yourself' });
  const oldPort = sshForwardPort(sourceXml);
  const newPort = oldPort !== undefined ? await pickForwardPort(conn, forwardPortCandidates()) : undefined;
  op.throwIfAborted();

  // 1. the intent: the domain, marked, naming its volumes
  let marker = newMarker('restore', op.id, 'define');
  const xml = rewriteDomainXml(sourceXml, {
    name,
    freshIdentity,
    volumes: planned,
    ...(opts.network ? { network: opts.network } : {}),
    ...(oldPort !== undefined && newPort !== undefined ? { sshPort: { from: oldPort, to: newPort } } : {}),
    extraMetadata: markerMetadata(marker),
  });
  const dom: Domain = await conn.defineDomain(xml);
  const uuid = dom.uuidString;
  op.undo.push(`domain ${name}`, (c) => removeDomainIfOurs(c, name, uuid));
  await op.fault('after-define');

  // 2. volumes, each disk rebuilt from the chain
  marker = await recordStep(dom, marker, 'volumes');
  const tmp = mkdtempSync(join(tmpdir(), 'vmctl-restore-'));
  const volumes: RestoreResult['volumes'] = [];
  const up = new Meter(op, 'upload', name);
  /** a local file into a new volume through a volume stream (a remote daemon, or one whose file vmctl cannot write here) */
  const uploadInto = async (vol: StorageVolume, name: string, local: string) => {
    const bytes = statSync(local).size;
    const counted = async function* () {
      for await (const c of createReadStream(local, { highWaterMark: 1024 * 1024 }) as AsyncIterable<Buffer>) {
        up.add(c.length);
        yield c;
      }
    };
    await op.step(`upload ${name}`, () => vol.upload(Readable.from(counted(), { objectMode: false }), { length: BigInt(bytes) }));
    rmSync(local, { force: true });
    return bytes;
  };
  try {
    for (const p of planned) {
      op.throwIfAborted();
      if (p.role === 'disk') {
        const raw = join(tmp, `${p.target}.raw`);
        const fh = await open(raw, 'w', 0o600);
        const rebuild = new Meter(op, 'rebuild', p.target!, undefined);
        try {
          await fh.truncate(p.size);
          for (const m of chain) {
            const rec = m.disks.find((x) => x.target === p.target);
            if (!rec) throw new VmctlError('INVALID_INPUT', `point ${m.id} has no disk ${p.target}`);
            const f = m.files.find((x) => x.path === rec.file)!;
            const r = await PayloadReader.open(join(pointDir(opts.dir, m.id), f.path), f, `${m.id}/${f.path}`, codecOf(m, keys));
            try {
              for (let i = 0; i < f.chunks.length; i++) {
                const buf = await r.plain(i);
                await fh.write(buf, 0, buf.length, f.chunks[i]!.o);
                rebuild.add(buf.length);
              }
            } finally {
              await r.close();
            }
          }
        } finally {
          await fh.close();
        }
        rebuild.finish();
        op.undo.push(`volume ${p.name}`, async (c) => void (await deleteVolumeIfThere(c, p.pool, p.name)));
        const vol = await pool.createVolume(volumeXml({ name: p.name, capacityBytes: p.size, format: 'qcow2' }));
        // a daemon on this machine: the rebuilt disk converted straight into the new volume's own file
        const inPlace = await writableLocalVolumeFile(conn, vol, p.name);
        if (inPlace) {
          await op.step(`write ${p.name}`, () => qemuImg(['convert', '-n', '--target-is-zero', '-f', 'raw', '-O', 'qcow2', raw, inPlace], op.signal));
          rmSync(raw, { force: true });
          const bytes = Number((await vol.info()).allocation);
          up.add(bytes);
          volumes.push({ pool: p.pool, name: p.name, bytes });
          continue;
        }
        const local = join(tmp, `${p.target}.qcow2`);
        await qemuImg(['convert', '-f', 'raw', '-O', 'qcow2', '-o', 'compat=1.1', raw, local], op.signal);
        rmSync(raw, { force: true });
        volumes.push({ pool: p.pool, name: p.name, bytes: await uploadInto(vol, p.name, local) });
      } else {
        const local = join(tmp, p.role);
        const data = await readPayload(opts.dir, chain[chain.length - 1]!, p.file, codecOf(point, keys));
        writePrivateFile(local, data);
        op.undo.push(`volume ${p.name}`, async (c) => void (await deleteVolumeIfThere(c, p.pool, p.name)));
        const vol = await pool.createVolume(volumeXml({ name: p.name, capacityBytes: data.length, format: 'raw' }));
        volumes.push({ pool: p.pool, name: p.name, bytes: await uploadInto(vol, p.name, local) });
      }
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  up.finish();
  await op.fault('after-volumes');

  // 3. snapshots: the disks were flattened, so no snapshot's data survives
  const snapshots: RestoreResult['snapshots'] = { restored: [], notRestored: [] };
  for (const s of point.snapshots) {
    snapshots.notRestored.push({
      name: s.name,
      why:
        s.location === 'internal'
          ? 'internal snapshot: its data lived inside the qcow2 file, which the backup flattened'
          : s.location === 'external'
            ? 'external snapshot: its backing files were merged when the disk was flattened'
            : 'metadata only, of a disk state the flattened disk does not have',
    });
  }
  if (snapshots.notRestored.length) notes.push(`snapshots not restored: ${snapshots.notRestored.map((s) => `${s.name} (${s.why})`).join('; ')}; their XML stays in the set`);

  // 4. client-side state under the target connection and the new name
  marker = await recordStep(dom, marker, 'state');
  const stateDir = vmStateDir(conn.uri.original, name);
  const stateFiles = point.files.filter((f) => f.role === 'state');
  if (stateFiles.length > 0) {
    if (existsSync(stateDir)) rmSync(stateDir, { recursive: true, force: true }); // a leftover of a VM that is gone (the name is free)
    op.undo.push(`state dir ${stateDir}`, () => rmSync(stateDir, { recursive: true, force: true }));
    ensurePrivateDir(stateDir);
    for (const f of stateFiles) writePrivateFile(join(stateDir, f.path.slice('state/'.length)), await readPayload(opts.dir, point, f, codecOf(point, keys)));
    const hostPub = stateFiles.find((f) => f.path === 'state/ssh_host_ed25519_key.pub');
    if (hostPub && newPort !== undefined) {
      const pub = (await readPayload(opts.dir, point, hostPub, codecOf(point, keys))).toString('utf8').trim();
      pinHostKey(stateDir, hostPatternFor('127.0.0.1', newPort), pub);
    }
  } else notes.push('the set holds no client-side state for the VM: vmctl ssh needs keys from elsewhere');
  await op.fault('after-state');
  await clearMarker(dom);

  const { phases, phase } = phaseRecorder(op);
  phase('defined');
  const result: RestoreResult = {
    name,
    uuid,
    uri: conn.uri.original,
    point: point.id,
    chain: chain.map((c) => c.id),
    freshIdentity,
    volumes,
    snapshots,
    ...(newPort !== undefined ? { ssh: { host: '127.0.0.1', port: newPort, user: meta?.sshUser ?? 'vmctl' } } : {}),
    state: 'shutoff',
    phases,
    uploadBytesPerSecond: up.bytesPerSecond,
    durationMs: 0,
    notes,
  };
  if (opts.verifyBoot) {
    await dom.start();
    result.state = 'running';
    phase('started');
    if (newPort === undefined || stateFiles.length === 0) throw new VmctlError('UNSUPPORTED', `--verify-boot waits for SSH, and ${name} has no SSH forward or no keys in the set`);
    const keyFile = join(stateDir, 'id_ed25519');
    await waitReady(op, dom, {
      target: 'ssh',
      ssh: {
        host: '127.0.0.1',
        port: newPort,
        user: meta?.sshUser ?? 'vmctl',
        knownHostsFile: join(stateDir, 'known_hosts'),
        hostPattern: hostPatternFor('127.0.0.1', newPort),
        ...(existsSync(keyFile) ? { privateKey: readFileSync(keyFile, 'utf8') } : {}),
        ...tunnelFor(conn),
      },
      timeoutMs: opts.timeoutMs ?? 15 * 60_000,
      phase,
    });
  }
  result.durationMs = Math.round(performance.now() - t0);
  return result;
}
