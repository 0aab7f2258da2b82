/**
 * The images in vmctl's pool: scanning its volumes into images, what uses
 * them (overlays, domains), listing, looking up and removing.
 */
import { posix } from 'node:path';
import type { Connection, StoragePool, StorageVolume } from '../../libvirt/connection.js';
import { LibvirtError } from '../../libvirt/errors.js';
import { VmctlError } from '../errors.js';
import { assertImageName, quote } from '../names.js';
import { ensurePool } from '../storage/pool.js';
import { imageVolumeNames, parseImageVolumeName, parseVolumeXml, type VolumeDetails } from '../storage/volume.js';
import { domainFileReferences, MAX_MANIFEST_BYTES, parseBuildManifest } from './inspect.js';
import { isBuildableImage, logFn, type ImageBoot, type ImageFormat, type ImageInfo, type ImageManifest, type ImageVolumeKind, type ImportRecord, type LogOptions } from './types.js';

export interface ImageVolumes {
  disk?: { vol: StorageVolume; format: ImageFormat };
  kernel?: StorageVolume;
  initrd?: StorageVolume;
  manifest?: StorageVolume;
  /** every volume of the image, in deletion order (manifest first, disk last) */
  all: StorageVolume[];
}

export interface PoolScan {
  pool: StoragePool;
  images: Map<string, ImageVolumes>;
  others: StorageVolume[];
}

export async function scanPool(conn: Connection, pool?: StoragePool): Promise<PoolScan> {
  const p = pool ?? (await ensurePool(conn)).pool;
  const images = new Map<string, ImageVolumes>();
  const others: StorageVolume[] = [];
  for (const vol of await p.listVolumes()) {
    const parsed = parseImageVolumeName(vol.name);
    if (!parsed) {
      others.push(vol);
      continue;
    }
    let entry = images.get(parsed.name);
    if (!entry) images.set(parsed.name, (entry = { all: [] }));
    entry.all.push(vol);
    if (parsed.kind === 'disk') {
      // two disks for one name (someone created both by hand): the qcow2 one wins, both get removed
      if (!entry.disk || parsed.format === 'qcow2') entry.disk = { vol, format: parsed.format! };
    } else {
      entry[parsed.kind] = vol;
    }
  }
  const order: Record<ImageVolumeKind, number> = { manifest: 0, kernel: 1, initrd: 2, disk: 3 };
  for (const entry of images.values()) {
    entry.all.sort((a, b) => order[parseImageVolumeName(a.name)!.kind] - order[parseImageVolumeName(b.name)!.kind]);
  }
  return { pool: p, images, others };
}

/** Reads a small volume through a download stream. */
export async function readSmallVolume(vol: StorageVolume, limit = MAX_MANIFEST_BYTES): Promise<Buffer> {
  const info = await vol.info();
  if (info.capacity > BigInt(limit)) throw new VmctlError('INVALID_INPUT', `volume ${vol.name} is larger than ${limit} bytes`);
  const stream = await vol.download();
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    n += chunk.length;
    if (n > limit) {
      stream.destroy();
      throw new VmctlError('INVALID_INPUT', `volume ${vol.name} is larger than ${limit} bytes`);
    }
    chunks.push(chunk);
  }
  await stream.done;
  return Buffer.concat(chunks);
}

export async function usage(conn: Connection, scan: PoolScan): Promise<{ overlays: Map<string, string[]>; domains: Map<string, string[]> }> {
  // backing-store path -> overlay volume names
  const overlays = new Map<string, string[]>();
  const details = await Promise.all(
    scan.others.map(async (v) => {
      try {
        return parseVolumeXml(await v.xml());
      } catch (e) {
        if (e instanceof LibvirtError && e.isNotFound()) return undefined; // deleted meanwhile
        throw e;
      }
    }),
  );
  for (const d of details) {
    if (!d?.backingPath) continue;
    const backing = posix.isAbsolute(d.backingPath) ? posix.normalize(d.backingPath) : posix.join(posix.dirname(d.path), d.backingPath);
    const list = overlays.get(backing) ?? [];
    list.push(d.name);
    overlays.set(backing, list);
  }
  // file path -> domain names
  const domains = new Map<string, string[]>();
  const doms = await conn.listDomains({ active: true, inactive: true });
  const xmls = await Promise.all(
    doms.map(async (d) => {
      try {
        return { name: d.name, xml: await d.xml() };
      } catch (e) {
        if (e instanceof LibvirtError && e.isNotFound()) return undefined;
        throw e;
      }
    }),
  );
  for (const x of xmls) {
    if (!x) continue;
    for (const file of domainFileReferences(x.xml)) {
      const list = domains.get(file) ?? [];
      if (!list.includes(x.name)) list.push(x.name);
      domains.set(file, list);
    }
  }
  return { overlays, domains };
}

function stripImport(m: ImageManifest): { manifest: ImageManifest; imported: ImportRecord | null } {
  const { vmctlImport, ...rest } = m;
  return { manifest: rest as ImageManifest, imported: vmctlImport ?? null };
}

export async function describe(
  name: string,
  entry: ImageVolumes,
  scan: PoolScan,
  use: { overlays: Map<string, string[]>; domains: Map<string, string[]> },
  onLog?: (m: string) => void,
): Promise<ImageInfo | undefined> {
  if (!entry.disk) return undefined;
  let d: VolumeDetails;
  try {
    d = parseVolumeXml(await entry.disk.vol.xml());
  } catch (e) {
    if (e instanceof LibvirtError && e.isNotFound()) return undefined;
    throw e;
  }
  let manifest: ImageManifest | null = null;
  let imported: ImportRecord | null = null;
  if (entry.manifest) {
    try {
      const where = `manifest volume ${entry.manifest.name}`;
      ({ manifest, imported } = stripImport(parseBuildManifest((await readSmallVolume(entry.manifest)).toString('utf8'), where)));
    } catch (e) {
      // deleted meanwhile, or its file vanished under the daemon: list the image as incomplete
      if (!(e instanceof VmctlError || (e instanceof LibvirtError && e.kind === 'remote'))) throw e;
      onLog?.(`image ${name}: unreadable manifest (${(e as Error).message})`);
    }
  }
  const dir = posix.dirname(d.path);
  let boot: ImageBoot = { method: 'bootloader' };
  let complete = manifest !== null;
  const volumes: ImageInfo['volumes'] = { disk: entry.disk.vol.name };
  if (entry.manifest) volumes.manifest = entry.manifest.name;
  if (manifest?.boot.method === 'direct-kernel') {
    const names = imageVolumeNames(name, entry.disk.format);
    boot = {
      method: 'direct-kernel',
      kernelPath: posix.join(dir, names.kernel),
      initrdPath: posix.join(dir, names.initrd),
      cmdline: manifest.boot.cmdline,
    };
    complete = complete && entry.kernel !== undefined && entry.initrd !== undefined;
  }
  if (entry.kernel) volumes.kernel = entry.kernel.name;
  if (entry.initrd) volumes.initrd = entry.initrd.name;
  const files = [d.path, ...(boot.method === 'direct-kernel' ? [boot.kernelPath, boot.initrdPath] : [])];
  const usedByDomains = [...new Set(files.flatMap((f) => use.domains.get(f) ?? []))].sort();
  return {
    name,
    format: entry.disk.format,
    sizeBytes: d.physical,
    allocationBytes: d.allocation,
    virtualSizeBytes: d.capacity,
    path: d.path,
    pool: scan.pool.name,
    volumes,
    boot,
    manifest,
    imported,
    complete,
    inUseBy: (use.overlays.get(posix.normalize(d.path)) ?? []).slice().sort(),
    usedByDomains,
  };
}

/** Every image in vmctl's pool, by name. */
export async function listImages(conn: Connection, opts: LogOptions = {}): Promise<ImageInfo[]> {
  const scan = await scanPool(conn);
  const use = await usage(conn, scan);
  const infos = await Promise.all([...scan.images].map(([name, entry]) => describe(name, entry, scan, use, logFn(opts))));
  return infos.filter((i): i is ImageInfo => i !== undefined).sort((a, b) => a.name.localeCompare(b.name));
}

export function notFound(conn: Connection, name: string): VmctlError {
  const hint = isBuildableImage(name)
    ? `build it: vmctl image build ${name} (or import one: vmctl image import FILE|URL --name ${name})`
    : `import it: vmctl image import FILE|URL --name ${name} (vmctl image list shows what is there)`;
  return new VmctlError('NOT_FOUND', `image ${quote(name)} not found in pool 'vmctl' on ${conn.uri.original}`, { hint });
}

/** One image; NOT_FOUND (with the command that makes it) when it is not there. */
export async function getImage(conn: Connection, name: string, opts: LogOptions = {}): Promise<ImageInfo> {
  assertImageName(name);
  const scan = await scanPool(conn);
  const entry = scan.images.get(name);
  if (!entry?.disk) throw notFound(conn, name);
  const use = await usage(conn, scan);
  const info = await describe(name, entry, scan, use, logFn(opts));
  if (!info) throw notFound(conn, name);
  return info;
}

/** The image, or undefined when it is not in the pool. */
export async function findImage(conn: Connection, name: string): Promise<ImageInfo | undefined> {
  try {
    return await getImage(conn, name);
  } catch (e) {
    if (e instanceof VmctlError && e.code === 'NOT_FOUND') return undefined;
    throw e;
  }
}

// ---------------------------------------------------------------------------------------------
// remove
// ---------------------------------------------------------------------------------------------

export function inUseError(name: string, overlays: string[], domains: string[]): VmctlError {
  const parts: string[] = [];
  if (overlays.length) parts.push(`volume${overlays.length > 1 ? 's' : ''} ${overlays.join(', ')}`);
  if (domains.length) parts.push(`VM${domains.length > 1 ? 's' : ''} ${domains.join(', ')}`);
  return new VmctlError('CONFLICT', `image ${quote(name)} is in use by ${parts.join(' and ')}`, {
    hint: 'delete the VMs (and their disks) that use it first',
    details: { inUseBy: overlays, usedByDomains: domains },
  });
}

export async function deleteVolumes(vols: StorageVolume[], onLog?: (m: string) => void): Promise<string[]> {
  const left: string[] = [];
  for (const vol of vols) {
    let lastErr: unknown;
    for (let attempt = 0; attempt < 10; attempt++) {
      try {
        await vol.delete();
        lastErr = undefined;
        break;
      } catch (e) {
        if (e instanceof LibvirtError && e.isNotFound()) {
          lastErr = undefined;
          break;
        }
        lastErr = e;
        // "still in use" right after an aborted stream: the daemon lets go within moments
        if (!(e instanceof LibvirtError && e.kind === 'remote')) break;
        await new Promise((r) => setTimeout(r, 200));
      }
    }
    if (lastErr !== undefined) {
      left.push(vol.name);
      onLog?.(`could not delete volume ${vol.name}: ${(lastErr as Error).message}`);
    }
  }
  return left;
}

/** Removes an image's volumes; refuses while overlays or VMs use it. */
export async function removeImage(conn: Connection, name: string, opts: LogOptions = {}): Promise<{ name: string; removedVolumes: string[] }> {
  assertImageName(name);
  const onLog = logFn(opts);
  const scan = await scanPool(conn);
  const entry = scan.images.get(name);
  if (!entry || entry.all.length === 0) throw notFound(conn, name);
  if (entry.disk) {
    const use = await usage(conn, scan);
    const info = await describe(name, entry, scan, use, onLog);
    if (info && (info.inUseBy.length || info.usedByDomains.length)) throw inUseError(name, info.inUseBy, info.usedByDomains);
  }
  const left = await deleteVolumes(entry.all, onLog);
  if (left.length) {
    throw new VmctlError('LIBVIRT', `could not remove every volume of image ${quote(name)}: ${left.join(', ')} remain`, {
      hint: 'retry vmctl image rm',
      details: { remaining: left },
    });
  }
  return { name, removedVolumes: entry.all.map((v) => v.name) };
}
