/**
 * `vmctl image import`: a file or URL into vmctl's pool, every byte through
 * libvirt volume streams (so a remote host works like the local one), with its
 * kernel/initrd/manifest; rolls back every volume it made on failure or abort.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { basename } from 'node:path';
import { Readable } from 'node:stream';
import type { Connection, StoragePool, StorageVolume } from '../../libvirt/connection.js';
import { LibvirtError } from '../../libvirt/errors.js';
import { VmctlError } from '../errors.js';
import { assertImageName, quote } from '../names.js';
import { ensurePool } from '../storage/pool.js';
import { imageVolumeNames, volumeXml } from '../storage/volume.js';
import { deleteVolumes, describe, getImage, inUseError, scanPool, usage } from './catalog.js';
import { inspectImageHeader, normalizeSha256, readHead } from './inspect.js';
import { abortedError, hashFile, Meter, tapped } from './progress.js';
import { parseSource, prepareFileSource, prepareUrlSource, shaMismatch, type LocalFile, type PreparedSource } from './source.js';
import { logFn, type ImageManifest, type ImageVolumeKind, type ImportImageOptions, type ImageInfo, type ImportRecord } from './types.js';

interface UploadItem {
  kind: ImageVolumeKind;
  volume: string;
  file: LocalFile;
  /** what the bytes must hash to */
  sha256: string | undefined;
}

async function refreshPool(pool: StoragePool): Promise<void> {
  // "pool has asynchronous jobs running" while another client builds a volume: retry briefly
  for (let i = 0; i < 20; i++) {
    try {
      await pool.refresh();
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 150));
    }
  }
}

async function uploadFile(vol: StorageVolume, file: LocalFile, meter: Meter, signal?: AbortSignal): Promise<string> {
  const hash = createHash('sha256');
  const src = createReadStream(file.path, { highWaterMark: 1024 * 1024, ...(signal ? { signal } : {}) }) as AsyncIterable<Buffer>;
  await vol.upload(Readable.from(tapped(src, hash, meter), { objectMode: false }), { length: BigInt(file.size) });
  return hash.digest('hex');
}

async function uploadBuffer(vol: StorageVolume, data: Buffer): Promise<void> {
  await vol.upload(Readable.from([data], { objectMode: false }), { length: BigInt(data.length) });
}

/**
 * Imports a disk image (file or URL) into vmctl's pool as image `name`, with
 * its kernel/initrd/manifest when a sibling manifest exists. See the file
 * comment for the volumes it creates; every one of them is removed again if
 * anything fails or `signal` aborts.
 */
export async function importImage(conn: Connection, opts: ImportImageOptions): Promise<ImageInfo> {
  const name = assertImageName(opts.name);
  const expected = opts.sha256 !== undefined && opts.sha256 !== '' ? normalizeSha256(opts.sha256) : undefined;
  const src = parseSource(opts.source);
  const { signal, onProgress } = opts;
  const onLog = logFn(opts);
  const what = `import of image ${quote(name)}`;
  signal?.throwIfAborted();

  // refuse early (before any download) when the name is taken
  const { pool } = await ensurePool(conn);
  const before = await scanPool(conn, pool);
  const existing = before.images.get(name);
  if (existing && existing.all.length > 0) {
    if (!opts.force) {
      throw new VmctlError('ALREADY_EXISTS', `image ${quote(name)} already exists in pool 'vmctl' on ${conn.uri.original}`, {
        hint: `replace it with --force, or remove it first: vmctl image rm ${name}`,
      });
    }
    if (existing.disk) {
      const info = await describe(name, existing, before, await usage(conn, before), onLog);
      if (info && (info.inUseBy.length || info.usedByDomains.length)) throw inUseError(name, info.inUseBy, info.usedByDomains);
    }
  }

  let prepared: PreparedSource;
  try {
    prepared = src.kind === 'url' ? await prepareUrlSource(src.url, name, expected, { ...opts, ...(onLog ? { onLog } : {}) }) : await prepareFileSource(src.path);
  } catch (e) {
    if (signal?.aborted) throw abortedError(what, signal);
    throw e;
  }
  const created: StorageVolume[] = [];
  try {
    const head = await readHead(prepared.disk.path);
    const inspected = inspectImageHeader(head, prepared.disk.size, `the image ${prepared.display}`);
    const manifest = prepared.manifest;
    if (manifest && manifest.format !== inspected.format) {
      throw new VmctlError('INVALID_INPUT', `the manifest next to ${prepared.display} says ${manifest.format} but the file is ${inspected.format}`);
    }
    if (manifest?.fileSize !== undefined && manifest.fileSize !== prepared.disk.size) {
      throw new VmctlError('INVALID_INPUT', `the manifest next to ${prepared.display} says ${manifest.fileSize} bytes but the file has ${prepared.disk.size}`);
    }
    const names = imageVolumeNames(name, inspected.format);
    const diskSha = expected ?? manifest?.sha256;
    if (expected !== undefined && manifest?.sha256 !== undefined && manifest.sha256 !== expected) {
      throw new VmctlError('INVALID_INPUT', `--sha256 ${expected} does not match the sha256 in the manifest next to ${prepared.display} (${manifest.sha256})`);
    }
    const items: UploadItem[] = [{ kind: 'disk', volume: names.disk, file: prepared.disk, sha256: diskSha }];
    if (manifest?.boot.method === 'direct-kernel' && prepared.kernel && prepared.initrd) {
      items.push({ kind: 'kernel', volume: names.kernel, file: prepared.kernel, sha256: manifest.boot.kernelSha256 });
      items.push({ kind: 'initrd', volume: names.initrd, file: prepared.initrd, sha256: manifest.boot.initrdSha256 });
    }

    // verify known checksums before touching the pool (downloads were hashed on the way)
    const toHash = items.filter((i) => i.sha256 !== undefined && i.file.sha256 === undefined);
    if (toHash.length) {
      const meter = new Meter('verify', name, toHash.reduce((n, i) => n + i.file.size, 0), toHash[0]!.kind, onProgress);
      for (const i of toHash) {
        meter.next(i.kind);
        i.file.sha256 = await hashFile(i.file.path, meter, signal);
      }
      meter.finish();
    }
    for (const i of items) {
      if (i.sha256 !== undefined && i.file.sha256 !== undefined && i.file.sha256 !== i.sha256) {
        throw shaMismatch(i.kind === 'disk' ? prepared.display : `the ${i.kind} of ${prepared.display}`, i.sha256, i.file.sha256);
      }
    }
    signal?.throwIfAborted();

    if (existing && existing.all.length > 0) {
      onLog?.(`replacing image ${name} (--force)`);
      const left = await deleteVolumes(existing.all, onLog);
      if (left.length) throw new VmctlError('LIBVIRT', `could not remove the old image ${quote(name)}: ${left.join(', ')} remain`);
    }

    const meter = new Meter('upload', name, items.reduce((n, i) => n + i.file.size, 0), 'disk', onProgress);
    const hashes: Partial<Record<ImageVolumeKind, string>> = {};
    for (const item of items) {
      signal?.throwIfAborted();
      let vol: StorageVolume;
      try {
        vol = await pool.createVolume(volumeXml({ name: item.volume, capacityBytes: item.file.size, format: 'raw' }));
      } catch (e) {
        if (e instanceof LibvirtError && e.isAlreadyExists()) {
          throw new VmctlError('ALREADY_EXISTS', `volume ${item.volume} appeared meanwhile: another vmctl is importing image ${quote(name)}`, {
            hint: `wait for it, or remove the leftovers: vmctl image rm ${name}`,
            cause: e,
          });
        }
        throw e;
      }
      created.push(vol);
      meter.next(item.kind);
      const sha = await uploadFile(vol, item.file, meter, signal);
      // the file changed between verification and upload (or was never verified): compare now
      if (item.sha256 !== undefined && sha !== item.sha256) throw shaMismatch(prepared.display, item.sha256, sha);
      if (item.file.sha256 !== undefined && sha !== item.file.sha256) {
        throw new VmctlError('CONFLICT', `${prepared.display} changed while it was being imported`);
      }
      hashes[item.kind] = sha;
    }
    meter.finish();

    const fileSize = prepared.disk.size;
    const virtualSize = inspected.virtualSize ?? fileSize;
    const record: ImportRecord = {
      name,
      source: prepared.display,
      importedAt: new Date().toISOString(),
      format: inspected.format,
      sha256: hashes.disk!,
      fileSize,
      virtualSize,
      volumes: {
        disk: names.disk,
        ...(hashes.kernel ? { kernel: names.kernel, initrd: names.initrd } : {}),
        manifest: names.manifest,
      },
      ...(hashes.kernel ? { kernelSha256: hashes.kernel, initrdSha256: hashes.initrd! } : {}),
    };
    const stored: ImageManifest = manifest
      ? { ...manifest, vmctlImport: record }
      : {
          manifestVersion: 1,
          name,
          format: inspected.format,
          image: basename(prepared.display),
          virtualSize,
          fileSize,
          sha256: hashes.disk!,
          boot: { method: 'bootloader' },
          vmctlImport: record,
        };
    const data = Buffer.from(JSON.stringify(stored, null, 2) + '\n', 'utf8');
    signal?.throwIfAborted();
    const mvol = await pool.createVolume(volumeXml({ name: names.manifest, capacityBytes: data.length, format: 'raw' }));
    created.push(mvol);
    await uploadBuffer(mvol, data);
    signal?.throwIfAborted();
  } catch (e) {
    const left = await deleteVolumes([...created].reverse(), onLog);
    await prepared.cleanup();
    const err = signal?.aborted ? abortedError(what, signal) : e;
    if (left.length && err instanceof VmctlError) {
      throw new VmctlError(err.code, `${err.message} (and could not remove volumes ${left.join(', ')})`, {
        hint: `remove them: vmctl image rm ${name}`,
        cause: err,
        details: { ...err.details, leftVolumes: left },
      });
    }
    if (created.length) onLog?.(`rolled back: removed ${created.length - left.length} volume(s)`);
    throw err;
  }
  await prepared.cleanup();
  await refreshPool(pool);
  return getImage(conn, name, { ...(onLog ? { onLog } : {}) });
}
