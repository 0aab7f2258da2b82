/**
 * `vmctl backup VM --to DIR`: one new point in the backup set.
 *
 * Running VM: a backup job (virDomainBackupBegin) over every disk — incremental
 * against the set's last point when that point's checkpoint is still on the
 * domain and the disks are qcow2 v3 (dirty bitmaps), with a new checkpoint made
 * in the same call — the guest's filesystems frozen through the guest agent
 * around the start of the job when the agent answers. A backup next to the
 * daemon is pulled (pull.ts): QEMU exports each disk's point-in-time view on a
 * unix socket and vmctl reads its data extents (a full) or the blocks its dirty
 * bitmap marks (an incremental) once, straight into the set, while a thin
 * scratch volume holds only what the guest overwrites meanwhile. Otherwise (a
 * remote host, pull mode refused) it is pushed: the job copies the data into
 * scratch qcow2 volumes in vmctl's pool, each read in place or downloaded
 * through a sparse volume stream, made into chunks and deleted. A stopped VM's volumes (and their backing chain) are
 * downloaded and flattened locally. Only the libvirt connection is used: no
 * shell on the host.
 *
 * Faults: the intent (checkpoint, scratch volumes) is on the domain before
 * anything is made (journal.ts); the point is written in a .partial directory
 * renamed into place last. Interrupted, the undo removes all of it; killed,
 * the next backup of the VM does (recoverInterrupted).
 */
import { readdirSync, readFileSync, renameSync, rmSync, statSync, existsSync, mkdirSync } from 'node:fs';
import { basename, join } from 'node:path';
import type { Domain, StorageVolume } from '../../libvirt/connection.js';
import { LibvirtError } from '../../libvirt/errors.js';
import { VirDomainBackupBeginFlags, VirDomainCheckpointDeleteFlags, VirDomainXMLFlags } from '../../libvirt/generated/constants.gen.js';
import { VmctlError } from '../errors.js';
import { vmStateDir } from '../paths.js';
import { xmlBuilder, xmlParser } from '../xml.js';
import type { OpContext } from '../op/context.js';
import { ensurePool } from '../storage/pool.js';
import { parseVolumeXml } from '../storage/volume.js';
import { findVm } from '../vm/domain.js';
import { parseVmctlMetadata } from '../vm/domain-xml.js';
import { manifestMac, newEncryption, openEncryption, PayloadWriter, writeSmallPayload, type Codec, type DerivedKeys } from './chunks.js';
import { dataDisks, domainFiles, checkpointName, CHECKPOINT_PREFIX, scratchVolumeName, seedDisk, type DomainDisk } from './domain-disks.js';
import { downloadVolume, localVolumeFile, lookupVolumeByPath, Meter, storeDisk } from './disk-data.js';
import {
  CHUNK_SIZE, SET_FORMAT, SET_VERSION, ensurePrivateSubdir, initSet, listPointIds, newPointId, partialDir, pointDir, readManifest, readSetInfo, writePrivateFile,
  type DiskRecord, type Manifest, type PayloadFile, type SetInfo, type SnapshotRecord,
} from './format.js';
import { clearJobRecord, deleteScratch, jobLiveness, newJobRecord, parseJobRecord, writeJobRecord, type BackupJobRecord } from './journal.js';
import { imageInfo, qemuImg } from './qemu-img.js';
import type { NbdExport } from './nbd.js';
import { endPullJob, exportBitmaps, pullSocket, removeSocketDir } from './pull.js';
import type { JobGuard, StartJobGuard } from './guard.js';

export interface BackupOptions {
  name: string;
  dir: string;
  incremental?: boolean;
  compress?: boolean;
  encrypt?: boolean;
  keyFile?: string;
  /** starts the guard that ends a pull-mode job if this process dies (guard.ts); none: the next backup does */
  guard?: StartJobGuard;
}

export interface BackupResult {
  point: string;
  kind: 'full' | 'incremental';
  parent?: string;
  dir: string;
  vm: string;
  running: boolean;
  /**
   * how the disks were read: `pull` (a running VM's point-in-time NBD export, read once), `push` (the
   * backup job copied them into scratch volumes first), `volumes` (a stopped VM's volumes)
   */
  via: 'pull' | 'push' | 'volumes';
  consistency: Manifest['consistency'];
  disks: Array<{ target: string; virtualSize: number; dataBytes: number }>;
  storedBytes: number;
  durationMs: number;
  bytesPerSecond: number;
  notes: string[];
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** What an interrupted backup of this VM left on the host, removed (its holder must be gone). */
export async function recoverInterrupted(op: OpContext, dom: Domain, running: boolean): Promise<string | undefined> {
  const rec = parseJobRecord(await dom.xml());
  if (!rec) return undefined;
  if (jobLiveness(rec) === 'alive' && rec.opId !== op.id) {
    throw new VmctlError('CONFLICT', `VM '${dom.name}' is being backed up: vmctl backup by ${rec.user}@${rec.host} pid ${rec.pid} since ${rec.since}`, { hint: 'wait for it to finish' });
  }
  if (running) {
    // a backup job still running is the dead run's (a domain has at most one); any other job is left alone
    const backupRunning = await dom.backupXml().then(
      () => true,
      () => false,
    );
    if (backupRunning) {
      await dom.abortJob().catch(() => undefined);
      for (let i = 0; i < 50 && (await dom.jobStats()).type !== 'none'; i++) await sleep(100);
    }
  }
  if (rec.checkpoint) {
    const usedBySet = rec.dir && existsSync(join(pointDir(rec.dir, rec.pointId), 'manifest.json'));
    if (!usedBySet) {
      await deleteCheckpoint(op, dom, rec.checkpoint, running);
    }
  }
  await deleteScratch(dom.conn, rec.pool, rec.scratch ? rec.scratch.split(',') : []);
  if (rec.nbd) removeSocketDir(dom.conn, rec.nbd);
  if (rec.dir) rmSync(partialDir(rec.dir, rec.pointId), { recursive: true, force: true });
  await clearJobRecord(dom, running);
  return `removed what an interrupted backup (${rec.since}, step ${rec.step}) left: ${[rec.checkpoint && `checkpoint ${rec.checkpoint}`, rec.scratch && `scratch ${rec.scratch}`].filter(Boolean).join(', ') || 'its record'}`;
}

/**
 * Delete a checkpoint an interrupted backup made. A running VM's goes with its dirty bitmaps. libvirt
 * 9.0 deletes a stopped VM's checkpoint only as metadata (the VM may have stopped under the backup:
 * its QEMU died, or its host restarted): then the bitmaps are removed from the disk files themselves
 * where vmctl can reach them (a daemon on this machine), else the warning names file and bitmap.
 */
async function deleteCheckpoint(op: OpContext, dom: Domain, name: string, running: boolean): Promise<void> {
  let cp;
  try {
    cp = await dom.lookupCheckpoint(name);
  } catch (e) {
    if (e instanceof LibvirtError && e.isNotFound()) return;
    throw e;
  }
  if (running) return cp.delete();
  const doc = xmlParser.parse(await cp.xml()) as { domaincheckpoint?: { disks?: { disk?: unknown } } };
  const listed = doc.domaincheckpoint?.disks?.disk;
  const bitmaps = (Array.isArray(listed) ? listed : listed ? [listed] : [])
    .map((d) => d as Record<string, unknown>)
    .filter((d) => d['@_checkpoint'] === 'bitmap')
    .map((d) => ({ target: String(d['@_name']), bitmap: String(d['@_bitmap'] ?? name) }));
  await cp.delete(VirDomainCheckpointDeleteFlags.VIR_DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY);
  const files = domainFiles(await dom.xml(VirDomainXMLFlags.VIR_DOMAIN_XML_INACTIVE));
  for (const b of bitmaps) {
    const source = files.disks.find((d) => d.target === b.target)?.source;
    if (!source) continue;
    const vol = await lookupVolumeByPath(dom.conn, source);
    const local = vol ? await localVolumeFile(dom.conn, vol, basename(source)) : undefined;
    const removed = local
      ? await qemuImg(['bitmap', '--remove', '-f', 'qcow2', local, b.bitmap]).then(
          () => true,
          (e: Error) => /not found/i.test(e.message),
        )
      : false;
    if (!removed) op.warn(`${dom.name} is stopped: checkpoint ${name} is gone from libvirt, but its dirty bitmap stays in ${source} on ${dom.conn.uri.original} (remove it there while the VM is stopped: qemu-img bitmap --remove ${source} ${b.bitmap})`);
  }
}

function snapshotLocation(xml: string): SnapshotRecord['location'] {
  const doc = xmlParser.parse(xml) as { domainsnapshot?: { memory?: Record<string, unknown>; disks?: { disk?: unknown } } };
  const s = doc.domainsnapshot ?? {};
  const disks = s.disks?.disk ? (Array.isArray(s.disks.disk) ? s.disks.disk : [s.disks.disk]) : [];
  const kinds = (disks as Record<string, unknown>[]).map((d) => String(d['@_snapshot'] ?? ''));
  if (kinds.includes('internal') || s.memory?.['@_snapshot'] === 'internal') return 'internal';
  if (kinds.includes('external') || s.memory?.['@_snapshot'] === 'external') return 'external';
  return 'none';
}

/** Does this disk's image hold dirty bitmaps (qcow2 v3)? Asked through libvirt's volume XML. */
async function bitmapCapable(dom: Domain, d: DomainDisk): Promise<{ ok: boolean; capacity: number; why?: string }> {
  let vol = d.source ? await lookupVolumeByPath(dom.conn, d.source) : undefined;
  if (!vol && d.source) {
    // a file made outside the storage API (an external snapshot's overlay): the pools learn of it on refresh
    for (const p of await dom.conn.listStoragePools()) await p.refresh().catch(() => undefined);
    vol = await lookupVolumeByPath(dom.conn, d.source);
  }
  const live = await dom.isActive() ? Number((await dom.blockInfo(d.target)).capacity) : undefined;
  if (!vol) return { ok: false, capacity: live ?? 0, why: `${d.source} is in no storage pool` };
  const xml = await vol.xml();
  const det = parseVolumeXml(xml);
  if (live !== undefined) det.capacity = live;
  const compat = /<compat>([^<]+)<\/compat>/.exec(xml)?.[1];
  if (d.format !== 'qcow2') return { ok: false, capacity: det.capacity, why: `${d.target} is ${d.format}: no dirty bitmaps, every backup of it is full` };
  if (compat === '0.10') return { ok: false, capacity: det.capacity, why: `${d.target} is qcow2 v2 (compat 0.10): no dirty bitmaps, every backup of it is full` };
  return { ok: true, capacity: det.capacity };
}

async function waitJob(op: OpContext, dom: Domain, meter: Meter): Promise<void> {
  let last = 0;
  for (;;) {
    if (op.signal.aborted) {
      await dom.abortJob().catch(() => undefined);
      op.throwIfAborted();
    }
    const j = await dom.jobStats();
    if (j.type === 'none') break;
    const done = Number(j.params.disk_processed ?? j.params.data_processed ?? 0);
    if (done > last) meter.add(done - last);
    last = Math.max(last, done);
    await sleep(50); // a finished job is noticed within 50 ms (each poll is one cheap call)
  }
  const c = await dom.jobStats({ completed: true });
  if (c.type !== 'completed') {
    const err = typeof c.params.errmsg === 'string' ? c.params.errmsg : c.type;
    throw /no space/i.test(err)
      ? new VmctlError('RESOURCE', `backup job of ${dom.name} failed: ${err}`, { hint: 'the host\'s vmctl pool is full: free space there, then retry' })
      : new VmctlError('LIBVIRT', `backup job of ${dom.name} ended ${c.type}: ${err}`);
  }
  meter.finish();
}

export async function takeBackup(op: OpContext, opts: BackupOptions): Promise<BackupResult> {
  const conn = op.conn;
  const t0 = performance.now();
  const notes: string[] = [];
  const dom = await findVm(conn, opts.name);
  await op.lease(`vm/${opts.name}`, `VM '${opts.name}'`);
  const state = (await dom.state()).state;
  const running = state === 'running' || state === 'paused';
  const recovered = await recoverInterrupted(op, dom, running);
  if (recovered) {
    notes.push(recovered);
    op.notice(recovered);
  }

  // the set: new, or one of this VM with the same encryption
  const dir = opts.dir;
  let info: SetInfo | undefined = readSetInfo(dir);
  let keys: DerivedKeys | undefined;
  if (info) {
    if (info.vm !== opts.name) throw new VmctlError('CONFLICT', `${dir} is the backup set of VM '${info.vm}', not '${opts.name}'`, { hint: 'give each VM its own directory' });
    if (info.encryption && !opts.keyFile) throw new VmctlError('USAGE', `the backup set ${dir} is encrypted`, { hint: 'give its key with --encrypt --key-file FILE' });
    if (!info.encryption && opts.encrypt) throw new VmctlError('CONFLICT', `the backup set ${dir} is not encrypted; its points cannot be mixed with encrypted ones`, { hint: 'start an encrypted set in a new directory' });
    keys = openEncryption(info, opts.keyFile, dir);
  } else {
    if (existsSync(dir) && readdirSync(dir).length > 0) throw new VmctlError('CONFLICT', `${dir} is not empty and not a vmctl backup set`, { hint: 'give an empty or new directory' });
    if (opts.keyFile && !opts.encrypt) throw new VmctlError('USAGE', '--key-file needs --encrypt');
    let encryption: SetInfo['encryption'];
    if (opts.encrypt) {
      if (!opts.keyFile) throw new VmctlError('USAGE', '--encrypt needs --key-file FILE', { hint: 'make a key with: head -c 32 /dev/urandom > backup.key' });
      const e = newEncryption(opts.keyFile);
      encryption = e.params;
      keys = e.keys;
    }
    info = { format: SET_FORMAT, version: SET_VERSION, vm: opts.name, createdAt: new Date().toISOString(), ...(encryption ? { encryption } : {}) };
    initSet(dir, info);
  }
  const { ids, partial } = listPointIds(dir);
  for (const p of partial) {
    rmSync(partialDir(dir, p), { recursive: true, force: true });
    op.notice(`removed the partial point ${p} an interrupted backup left in ${dir}`);
  }
  const codec: Codec = { compress: opts.compress === true, ...(keys ? { key: keys.data } : {}) };
  const setVersion = info.version;

  const liveXml = await dom.xml();
  const inactiveXml = await dom.xml(VirDomainXMLFlags.VIR_DOMAIN_XML_INACTIVE);
  const files = domainFiles(liveXml);
  const disks = dataDisks(files);
  if (disks.length === 0) notes.push('the VM has no writable file disks');
  const caps = await Promise.all(disks.map((d) => bitmapCapable(dom, d)));
  for (const c of caps) if (c.why) notes.push(c.why);

  // full or incremental
  let kind: 'full' | 'incremental' = 'full';
  let parent: Manifest | undefined;
  const last = ids.length > 0 ? readManifest(dir, ids[ids.length - 1]!) : undefined;
  if (opts.incremental) {
    const why = !running
      ? 'the VM is not running (a stopped VM is backed up by downloading its volumes)'
      : !last
        ? 'the set has no point yet'
        : !last.checkpoint
          ? `the last point ${last.id} made no checkpoint`
          : !(await dom.listCheckpoints()).some((c) => c.name === last.checkpoint)
            ? `checkpoint ${last.checkpoint} of the last point is no longer on the VM`
            : caps.some((c) => !c.ok)
              ? 'a disk cannot hold dirty bitmaps'
              : last.disks.map((d) => d.target).join() !== disks.map((d) => d.target).join()
                ? 'the VM\'s disks changed since the last point'
                : undefined;
    if (why) notes.push(`full backup, not incremental: ${why}`);
    else {
      kind = 'incremental';
      parent = last;
    }
  }
  const pointId = newPointId(kind);
  const work = partialDir(dir, pointId);
  ensurePrivateSubdir(work);
  op.undo.push(`partial point ${work}`, () => rmSync(work, { recursive: true, force: true }));
  const tmp = join(work, '.work');
  ensurePrivateSubdir(tmp);
  for (const sub of ['disks', 'snapshots', 'state', 'boot']) ensurePrivateSubdir(join(work, sub));
  const fileId = (rel: string) => `${pointId}/${rel}`;
  const payload: PayloadFile[] = [];
  const diskRecords: DiskRecord[] = [];
  let consistency: Manifest['consistency'] = { quiesced: false, how: 'the VM was shut off: its disks are at rest' };
  let newCheckpoint: string | undefined;
  const meterTotal = caps.reduce((a, c) => a + c.capacity, 0);

  // 1. each disk as a local image (the guest's view, flattened)
  // `volume`: the image is that scratch volume itself (read in place), deleted once stored, never removed as a local file
  // `nbd`: read from the pull-mode job's export (the job ends, then the scratch volumes go, after step 3)
  const localImages: Array<{ disk: DomainDisk; path: string; format: string; capacity: number; volume?: StorageVolume; nbd?: NbdExport }> = [];
  // a pull-mode job's socket, and its scratch volumes (QEMU's until the job ends)
  let pull: { dir: string; socket: string; pool: string; scratch: string[] } | undefined;
  let guard: JobGuard | undefined;
  if (running && disks.length > 0) {
    const { pool, path: poolPath } = await ensurePool(conn);
    const scratch = disks.map((d) => scratchVolumeName(opts.name, d.target, op.id));
    newCheckpoint = caps.some((c) => c.ok) ? checkpointName(pointId) : undefined;
    // a backup next to the daemon is pulled (read once from QEMU's export: a full's data, an
    // incremental's dirty blocks), one from a remote host pushed
    const pullable = pullSocket(conn, liveXml, op.id);
    if ('socket' in pullable) pull = { ...pullable, pool: pool.name, scratch };
    else op.log.debug({ why: pullable.why }, 'push-mode backup');
    const record: BackupJobRecord = newJobRecord({ opId: op.id, step: 'scratch', dir, pointId, checkpoint: newCheckpoint ?? '', pool: pool.name, scratch: scratch.join(','), ...(pull ? { nbd: pull.dir } : {}) });
    await writeJobRecord(dom, record, true);
    op.undo.push(`backup job, checkpoint and scratch volumes of ${opts.name}`, async (c) => {
      const d = await c.lookupDomain(opts.name);
      await recoverInterrupted(op, d, (await d.state()).state !== 'shutoff');
    });
    if (pull) {
      op.undo.push(`socket directory ${pull.dir}`, () => removeSocketDir(conn, pull!.dir));
      guard = opts.guard?.({ uri: conn.uri.original, vm: opts.name, opId: op.id });
    }
    const scratchPaths: string[] = [];
    for (const i of disks.keys()) {
      const vol = await pool.createVolume(
        xmlBuilder.build({
          volume: {
            '@_type': 'file',
            name: scratch[i],
            capacity: { '@_unit': 'bytes', '#text': String(caps[i]!.capacity) },
            allocation: { '@_unit': 'bytes', '#text': '0' },
            // qcow2: only the data takes room on the host, and its allocation says what an incremental changed
            target: { format: { '@_type': 'qcow2' }, compat: '1.1', permissions: { mode: '0600' } },
          },
        }) as string,
      );
      scratchPaths.push((await vol.path()) || join(poolPath, scratch[i]!));
    }
    await op.fault('after-scratch');
    // push: the job writes each disk's data into its scratch volume; pull: QEMU exports each disk's
    // view on the socket and keeps in the scratch volume only what the guest overwrites meanwhile
    const backupDoc = (mode: 'push' | 'pull') => ({
      domainbackup: {
        '@_mode': mode,
        ...(parent?.checkpoint ? { incremental: parent.checkpoint } : {}),
        ...(mode === 'pull' ? { server: { '@_transport': 'unix', '@_socket': pull!.socket } } : {}),
        disks: {
          disk: [
            ...disks.map((d, i) => ({
              '@_name': d.target,
              '@_backup': 'yes',
              '@_type': 'file',
              ...(mode === 'pull' ? { '@_exportname': d.target } : {}),
              ...(kind === 'incremental' ? { '@_backupmode': 'incremental', '@_incremental': parent!.checkpoint } : { '@_backupmode': 'full' }),
              ...(mode === 'pull' ? { scratch: { '@_file': scratchPaths[i] } } : { target: { '@_file': scratchPaths[i] } }),
              driver: { '@_type': 'qcow2' },
            })),
            ...files.disks.filter((d) => !disks.includes(d)).map((d) => ({ '@_name': d.target, '@_backup': 'no' })),
          ],
        },
      },
    });
    const checkpointDoc = newCheckpoint
      ? {
          domaincheckpoint: {
            name: newCheckpoint,
            description: `vmctl backup point ${pointId} in ${dir}`,
            disks: { disk: files.disks.filter((d) => d.target).map((d) => ({ '@_name': d.target, '@_checkpoint': disks.includes(d) && caps[disks.indexOf(d)]!.ok ? 'bitmap' : 'no' })) },
          },
        }
      : undefined;
    await writeJobRecord(dom, { ...record, step: 'begin' }, true);
    // consistency: freeze through the guest agent around the job's start (the point in time)
    let frozen = false;
    try {
      frozen = (await dom.fsFreeze()) >= 0;
      consistency = { quiesced: true, how: 'guest filesystems frozen through the guest agent while the backup began' };
    } catch (e) {
      consistency = { quiesced: false, how: `crash-consistent only: the guest agent did not freeze the filesystems (${(e as Error).message})` };
    }
    const begin = (mode: 'push' | 'pull') =>
      dom.backupBegin(xmlBuilder.build(backupDoc(mode)) as string, checkpointDoc ? (xmlBuilder.build(checkpointDoc) as string) : null, VirDomainBackupBeginFlags.VIR_DOMAIN_BACKUP_BEGIN_REUSE_EXTERNAL);
    try {
      if (pull) {
        try {
          await begin('pull');
        } catch (e) {
          // e.g. QEMU may not make a socket there (AppArmor, another mount namespace): libvirt made nothing; push instead
          if (!(e instanceof LibvirtError)) throw e;
          op.notice(`pull-mode backup could not start (${e.message}): pushing into scratch volumes instead`);
          removeSocketDir(conn, pull.dir);
          pull = undefined;
          await begin('push');
        }
      } else await begin('push');
    } finally {
      if (frozen) await dom.fsThaw().catch((e: Error) => op.warn(`could not thaw the guest's filesystems: ${e.message}`));
    }
    if (!consistency.quiesced) op.warn(`${opts.name}: ${consistency.how}`);
    await op.fault('after-checkpoint');
    if (!pull) await op.step('copy', () => waitJob(op, dom, new Meter(op, 'backup job', opts.name, meterTotal)));
    await writeJobRecord(dom, { ...record, step: 'download' }, true);
    // 2. each scratch volume: read in place when it is a file on this machine (a local daemon), else
    // downloaded through a sparse volume stream; deleted once stored (step 3)
    const dl = new Meter(op, 'download', opts.name);
    // an incremental's export exposes the blocks changed since the parent's checkpoint as a dirty bitmap
    // (libvirt names it, by default `backup-TARGET`)
    const bitmaps = pull && kind === 'incremental' ? exportBitmaps(await dom.backupXml()) : undefined;
    for (const [i, d] of disks.entries()) {
      if (pull) {
        await op.fault('mid-download');
        const bitmap = bitmaps?.get(d.target) ?? (kind === 'incremental' ? `backup-${d.target}` : undefined);
        localImages.push({ disk: d, path: scratchPaths[i]!, format: 'raw', capacity: caps[i]!.capacity, nbd: { socket: pull.socket, name: d.target, ...(bitmap ? { bitmap } : {}) } });
        continue;
      }
      const vol = await pool.lookupVolume(scratch[i]!);
      const inPlace = await localVolumeFile(conn, vol, scratch[i]!);
      if (inPlace) {
        await op.fault('mid-download');
        localImages.push({ disk: d, path: inPlace, format: 'qcow2', capacity: caps[i]!.capacity, volume: vol });
        continue;
      }
      const local = join(tmp, `${d.target}.qcow2`);
      let faulted = false;
      const onBytes = async (n: number) => {
        if (!faulted && n > 0) {
          faulted = true;
          await op.fault('mid-download');
        }
      };
      await op.step(`download ${d.target}`, () => downloadVolume(op, vol, local, dl, onBytes));
      localImages.push({ disk: d, path: local, format: 'qcow2', capacity: caps[i]!.capacity });
      await vol.delete();
    }
    dl.finish();
  } else if (disks.length > 0) {
    // stopped: download the volume and its backing chain, then flatten locally
    const dl = new Meter(op, 'download', opts.name);
    for (const d of disks) {
      let path = d.source!;
      const chain: Array<{ local: string; format: string }> = [];
      for (let depth = 0; path; depth++) {
        const vol = await lookupVolumeByPath(conn, path);
        if (!vol) throw new VmctlError('NOT_FOUND', `${path} (disk ${d.target} of ${opts.name}) is in no storage pool on ${conn.uri.original}`, { hint: 'vmctl reads disks through libvirt storage pools' });
        const det = parseVolumeXml(await vol.xml());
        const local = join(tmp, `${d.target}.${depth}.img`);
        await downloadVolume(op, vol, local, dl);
        await op.fault('mid-download');
        chain.push({ local, format: det.format });
        path = det.backingPath ?? '';
      }
      for (let k = 0; k + 1 < chain.length; k++) await qemuImg(['rebase', '-u', '-f', chain[k]!.format, '-F', chain[k + 1]!.format, '-b', chain[k + 1]!.local, chain[k]!.local]);
      const top = chain[0]!;
      localImages.push({ disk: d, path: top.local, format: top.format, capacity: (await imageInfo(top.local))['virtual-size'] });
    }
    dl.finish();
  }

  // the seed and boot files come through the connection while the disks are stored (step 3)
  const extraFiles: Array<[string | undefined, string, PayloadFile['role']]> = [
    [seedDisk(files)?.source, 'seed.iso', 'seed'],
    [files.kernel, 'boot/kernel', 'kernel'],
    [files.initrd, 'boot/initrd', 'initrd'],
  ];
  const extras = Promise.all(
    extraFiles.map(async ([path, rel, role]): Promise<{ note: string } | { rel: string; role: PayloadFile['role']; local: string } | undefined> => {
      if (!path) return undefined;
      const vol = await lookupVolumeByPath(conn, path);
      if (!vol) return { note: `${role} ${path} is in no storage pool: not in the backup (a restore needs it at the same path)` };
      const local = join(tmp, rel.replace('/', '_'));
      await downloadVolume(op, vol, local, new Meter(op, 'download', role));
      return { rel, role, local };
    }),
  ).then((xs) => xs.filter((x) => x !== undefined));
  extras.catch(() => undefined); // awaited in step 4, or after a failure below

  // 3. chunks
  const store = new Meter(op, 'store', opts.name, localImages.reduce((a, l) => a + l.capacity, 0));
  try {
    for (const l of localImages) {
      const rel = `disks/${l.disk.target}`;
      const w = await PayloadWriter.create(join(work, rel), rel, fileId(rel), codec, setVersion);
      const r = await op.step(`store ${l.disk.target}`, () => storeDisk(op, l, join(tmp, `${l.disk.target}.raw`), kind, w, l.capacity, store).catch(async (e) => {
        await w.abort();
        throw e;
      }));
      payload.push(await op.step(`sync ${l.disk.target}`, () => w.finish('disk', l.capacity)));
      rmSync(join(tmp, `${l.disk.target}.raw`), { force: true });
      if (l.volume) await l.volume.delete();
      else if (!l.nbd) rmSync(l.path, { force: true });
      diskRecords.push({ target: l.disk.target, file: rel, virtualSize: l.capacity, format: l.disk.format, sourcePath: l.disk.source!, bitmap: caps[disks.indexOf(l.disk)]?.ok ?? false, dataBytes: r.dataBytes });
    }
  } catch (e) {
    await extras.catch(() => undefined); // its downloads end with the operation (abort) or finish: none left writing
    throw e;
  }
  store.finish();
  if (pull) {
    // every export read: the job ends, its scratch volumes and socket go
    await op.step('end job', () => endPullJob(op, dom));
    await deleteScratch(conn, pull.pool, pull.scratch);
    removeSocketDir(conn, pull.dir);
  }

  // 4. definition, snapshots, seed, boot files, client state
  const small = async (rel: string, role: PayloadFile['role'], data: Buffer) => payload.push(await writeSmallPayload(join(work, rel), rel, fileId(rel), codec, role, data, CHUNK_SIZE, setVersion));
  await small('domain.xml', 'domain', Buffer.from(inactiveXml));
  const snapshots: SnapshotRecord[] = [];
  for (const s of await dom.listSnapshots()) {
    const xml = await s.xml();
    const rel = `snapshots/${s.name.replace(/[^A-Za-z0-9._-]/g, '_')}.xml`;
    await small(rel, 'snapshot', Buffer.from(xml));
    snapshots.push({ name: s.name, file: rel, location: snapshotLocation(xml) });
  }
  for (const x of await extras) {
    if ('note' in x) {
      notes.push(x.note);
      continue;
    }
    await small(x.rel, x.role, readFileSync(x.local));
    rmSync(x.local, { force: true });
  }
  const stateDir = vmStateDir(conn.uri.original, opts.name);
  if (existsSync(stateDir)) {
    for (const f of readdirSync(stateDir)) {
      if (statSync(join(stateDir, f)).isFile()) await small(`state/${f}`, 'state', readFileSync(join(stateDir, f)));
    }
  } else {
    notes.push(`no client-side state for ${opts.name} on this machine (${stateDir}): vmctl ssh to the restored VM needs its keys`);
  }
  rmSync(tmp, { recursive: true, force: true });

  // 5. the manifest, then the point appears atomically
  const meta = parseVmctlMetadata(inactiveXml);
  const manifest: Manifest & { mac?: string } = {
    format: SET_FORMAT,
    // a point is of its set's version (an older set keeps getting points of its own format)
    version: setVersion,
    id: pointId,
    kind,
    ...(parent ? { parent: parent.id } : {}),
    createdAt: new Date().toISOString(),
    vm: { name: opts.name, uuid: dom.uuidString, uri: conn.uri.original, state },
    ...(meta?.template ? { template: meta.template } : {}),
    ...(meta?.image ? { image: meta.image } : {}),
    ...(newCheckpoint ? { checkpoint: newCheckpoint } : {}),
    consistency,
    compression: codec.compress ? 'gzip' : 'none',
    encrypted: codec.key !== undefined,
    chunkSize: CHUNK_SIZE,
    disks: diskRecords,
    snapshots,
    files: payload,
    storedBytes: payload.reduce((a, f) => a + f.stored, 0),
    durationMs: Math.round(performance.now() - t0),
  };
  if (keys) manifest.mac = manifestMac(keys, JSON.stringify(manifest));
  writePrivateFile(join(work, 'manifest.json'), JSON.stringify(manifest, null, 1) + '\n');
  await op.fault('before-commit');
  op.throwIfAborted();
  if (!existsSync(dir)) mkdirSync(dir, { recursive: true, mode: 0o700 });
  renameSync(work, pointDir(dir, pointId));

  // 6. host side: the new checkpoint is this set's next incremental's base; the set's older ones go
  // (another set of the same VM keeps its own)
  if (running) {
    const ours = new Set(ids.map((id) => { try { return readManifest(dir, id).checkpoint; } catch { return undefined; } }).filter((c): c is string => c !== undefined));
    for (const c of await dom.listCheckpoints()) {
      if (c.name.startsWith(CHECKPOINT_PREFIX) && c.name !== newCheckpoint && ours.has(c.name)) await c.delete().catch((e: Error) => op.warn(`could not delete old checkpoint ${c.name}: ${e.message}`));
    }
    await clearJobRecord(dom, true);
  }
  op.undo.commit();
  guard?.release();
  const durationMs = Math.round(performance.now() - t0);
  const dataBytes = diskRecords.reduce((a, d) => a + d.dataBytes, 0);
  return {
    point: pointId,
    kind,
    ...(parent ? { parent: parent.id } : {}),
    dir,
    vm: opts.name,
    running,
    via: running && disks.length > 0 ? (pull ? 'pull' : 'push') : 'volumes',
    consistency,
    disks: diskRecords.map((d) => ({ target: d.target, virtualSize: d.virtualSize, dataBytes: d.dataBytes })),
    storedBytes: manifest.storedBytes,
    durationMs,
    bytesPerSecond: durationMs > 0 ? Math.round((dataBytes * 1000) / durationMs) : 0,
    notes,
  };
}
