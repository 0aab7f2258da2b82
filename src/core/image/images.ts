/**
 * Base images: volumes in vmctl's storage pool (src/core/pool.ts), so a remote
 * host works exactly like the local one — every byte travels through libvirt
 * volume streams (upload/download), never through a shared filesystem.
 *
 * Volume naming (one image NAME, IMAGE_NAME_RE from names.ts):
 *
 *   img_NAME.qcow2 | img_NAME.raw   the base disk (exactly one of the two)
 *   img_NAME.vmlinuz                kernel  } direct-kernel images only
 *   img_NAME.initrd                 initrd  }
 *   img_NAME.manifest.json          the manifest (raw volume holding JSON), written LAST:
 *                                   "the manifest volume exists" means "the image is complete"
 *
 * The `img_` prefix cannot collide with anything else vmctl puts in the pool:
 * VM volumes are `<vm>-<disk>.<ext>` and `<vm>-seed.iso`, and VM names only
 * contain [a-z0-9-] — never '_'. The suffixes are fixed and none is a suffix of
 * another, so a volume name maps back to exactly one (image, kind).
 *
 * Every image gets a manifest: the build manifest of scripts/build-image.sh when
 * the source had one (`FILE.json` next to the file, or `URL.json`), else a
 * synthesized one (`boot.method: 'bootloader'`); in both cases with a
 * `vmctlImport` record (source, date, sha256s, volume names) added.
 *
 * Imports roll back every volume they created on any failure or abort; an
 * existing image is only replaced with `force`, and never while it is in use.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync } from 'node:fs';
import { mkdir, mkdtemp, open, rm, stat } from 'node:fs/promises';
import { basename, dirname, join, posix } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { fileURLToPath } from 'node:url';
import { xmlBuilder, xmlParser } from '../xml.js';
import type { Logger } from 'pino';
import type { Connection, StoragePool, StorageVolume } from '../../libvirt/connection.js';
import { LibvirtError } from '../../libvirt/errors.js';
import { VmctlError } from '../errors.js';
import { assertImageName, IMAGE_NAME_RE, quote, resolveUserPath, XML_ILLEGAL_RE } from '../names.js';
import { packagePath } from '../package-root.js';
import { builtImagePath, cacheDir } from '../paths.js';
import { ensurePool } from '../storage/pool.js';

// ---------------------------------------------------------------------------------------------
// names
// ---------------------------------------------------------------------------------------------

export const IMAGE_VOLUME_PREFIX = 'img_';
export type ImageFormat = 'qcow2' | 'raw';
export type ImageVolumeKind = 'disk' | 'kernel' | 'initrd' | 'manifest';

/** Images `vmctl image build` knows how to make (scripts/build-image.sh). */
export const BUILDABLE_IMAGES = ['debian-12'] as const;
export type BuildableImage = (typeof BUILDABLE_IMAGES)[number];
export const DEFAULT_IMAGE: BuildableImage = 'debian-12';

export function isBuildableImage(name: string): name is BuildableImage {
  return (BUILDABLE_IMAGES as readonly string[]).includes(name);
}

export interface ImageVolumeNames {
  disk: string;
  kernel: string;
  initrd: string;
  manifest: string;
}

/** The volume names of image `name` (its disk volume depends on the format). */
export function imageVolumeNames(name: string, format: ImageFormat): ImageVolumeNames {
  assertImageName(name);
  return {
    disk: `${IMAGE_VOLUME_PREFIX}${name}.${format}`,
    kernel: `${IMAGE_VOLUME_PREFIX}${name}.vmlinuz`,
    initrd: `${IMAGE_VOLUME_PREFIX}${name}.initrd`,
    manifest: `${IMAGE_VOLUME_PREFIX}${name}.manifest.json`,
  };
}

const SUFFIXES: ReadonlyArray<readonly [string, ImageVolumeKind, ImageFormat | undefined]> = [
  ['.manifest.json', 'manifest', undefined],
  ['.vmlinuz', 'kernel', undefined],
  ['.initrd', 'initrd', undefined],
  ['.qcow2', 'disk', 'qcow2'],
  ['.raw', 'disk', 'raw'],
];

/** Which image a volume belongs to, or null for volumes that are not image volumes. */
export function parseImageVolumeName(volume: string): { name: string; kind: ImageVolumeKind; format?: ImageFormat } | null {
  if (!volume.startsWith(IMAGE_VOLUME_PREFIX)) return null;
  const rest = volume.slice(IMAGE_VOLUME_PREFIX.length);
  for (const [suffix, kind, format] of SUFFIXES) {
    if (!rest.endsWith(suffix)) continue;
    const name = rest.slice(0, -suffix.length);
    if (!IMAGE_NAME_RE.test(name)) return null;
    return format ? { name, kind, format } : { name, kind };
  }
  return null;
}

// ---------------------------------------------------------------------------------------------
// types
// ---------------------------------------------------------------------------------------------

export type ImageBoot = { method: 'direct-kernel'; kernelPath: string; initrdPath: string; cmdline: string } | { method: 'bootloader' };

/** What vmctl records about an import (the `vmctlImport` key of the stored manifest). */
export interface ImportRecord {
  name: string;
  /** file path, or URL without credentials / query */
  source: string;
  importedAt: string;
  format: ImageFormat;
  sha256: string;
  fileSize: number;
  virtualSize: number;
  volumes: { disk: string; kernel?: string; initrd?: string; manifest: string };
  kernelSha256?: string;
  initrdSha256?: string;
}

export type ManifestBoot =
  | { method: 'direct-kernel'; kernel: string; initrd: string; cmdline: string; kernelSha256?: string; initrdSha256?: string; [k: string]: unknown }
  | { method: 'bootloader'; [k: string]: unknown };

/** A build manifest (scripts/build-image.sh), as stored with the image. Unknown keys are kept. */
export interface ImageManifest {
  manifestVersion: 1;
  name?: string;
  format: ImageFormat;
  virtualSize?: number;
  fileSize?: number;
  sha256?: string;
  boot: ManifestBoot;
  vmctlImport?: ImportRecord;
  [k: string]: unknown;
}

export interface ImageInfo {
  name: string;
  format: ImageFormat;
  /** length of the disk volume's file: the bytes an upload/download moves */
  sizeBytes: number;
  /** host disk space the disk volume uses */
  allocationBytes: number;
  /** the disk size a guest sees */
  virtualSizeBytes: number;
  /** disk volume path on the host */
  path: string;
  pool: string;
  volumes: { disk: string; kernel?: string; initrd?: string; manifest?: string };
  boot: ImageBoot;
  /** the stored manifest (without `vmctlImport`); null when there is none */
  manifest: ImageManifest | null;
  imported: ImportRecord | null;
  /** every volume the manifest promises is there (an import still running or interrupted: false) */
  complete: boolean;
  /** volumes in the pool whose backing store is this image (VM overlays) */
  inUseBy: string[];
  /** domains that reference the image's disk, kernel or initrd directly */
  usedByDomains: string[];
}

export type TransferPhase = 'download' | 'verify' | 'upload';

/**
 * Progress events. `done`/`total` are bytes for transfers (download of a URL,
 * verify = hashing local files, upload = all volumes of the image together)
 * and percent for builds; `total` is absent when unknown.
 */
export type ImageProgress =
  | { phase: 'build'; image: string; done: number; total: 100; message: string }
  | {
      phase: TransferPhase;
      image: string;
      /** what is being transferred right now */
      item: ImageVolumeKind;
      done: number;
      total?: number;
      bytesPerSecond: number;
      etaSeconds: number | null;
      /** last event of this phase */
      finished: boolean;
    };

export interface ImageOpOptions {
  onProgress?: (p: ImageProgress) => void;
  /** human-readable notes (what is happening, rollback results, build output) */
  onLog?: (message: string) => void;
  /** alternatively, a logger for those notes (level info) */
  log?: Logger;
  /** abort: stops transfers/builds and rolls back */
  signal?: AbortSignal;
}

export interface ImportImageOptions extends ImageOpOptions {
  /** a file path, a file:// URL or an http(s):// URL */
  source: string;
  name: string;
  /** expected sha256 of the disk file (hex) */
  sha256?: string;
  /** replace an existing image of that name (never one that is in use) */
  force?: boolean;
}

export interface BuildImageOptions extends ImageOpOptions {
  force?: boolean;
  /** the build script (default: the package's scripts/build-image.sh); for tests */
  script?: string;
}

type LogOptions = Pick<ImageOpOptions, 'onLog' | 'log'>;

function logFn(opts: LogOptions): ((m: string) => void) | undefined {
  if (opts.onLog) return opts.onLog;
  const log = opts.log;
  return log ? (m) => log.info(m) : undefined;
}

// ---------------------------------------------------------------------------------------------
// XML
// ---------------------------------------------------------------------------------------------


type XmlNode = Record<string, unknown>;

function textOf(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (v && typeof v === 'object' && typeof (v as XmlNode)['#text'] === 'string') return (v as XmlNode)['#text'] as string;
  return undefined;
}

function bytesOf(v: unknown): number {
  const t = textOf(v);
  if (t === undefined || !/^\d+$/.test(t.trim())) return 0;
  const unit = v && typeof v === 'object' ? (v as XmlNode)['@_unit'] : undefined;
  if (unit !== undefined && unit !== 'bytes' && unit !== 'B' && unit !== 'b') {
    throw new VmctlError('INTERNAL', `unexpected size unit ${String(unit)} in volume XML`);
  }
  return Number(t.trim());
}

export interface VolumeDetails {
  name: string;
  path: string;
  format: string;
  capacity: number;
  allocation: number;
  physical: number;
  backingPath?: string;
}

export function parseVolumeXml(xml: string): VolumeDetails {
  const vol = ((xmlParser.parse(xml) as XmlNode).volume ?? {}) as XmlNode;
  const target = (vol.target ?? {}) as XmlNode;
  const backing = vol.backingStore as XmlNode | undefined;
  const backingPath = backing ? textOf(backing.path) : undefined;
  const capacity = bytesOf(vol.capacity);
  const physical = bytesOf(vol.physical);
  return {
    name: textOf(vol.name) ?? '',
    path: textOf(target.path) ?? '',
    format: String(((target.format ?? {}) as XmlNode)['@_type'] ?? 'raw'),
    capacity,
    allocation: bytesOf(vol.allocation),
    physical: physical || capacity,
    ...(backingPath ? { backingPath } : {}),
  };
}

/** A raw file volume of exactly `size` bytes (sparse), readable by QEMU. */
export function rawVolumeXml(name: string, size: number): string {
  return xmlBuilder.build({
    volume: {
      '@_type': 'file',
      name,
      capacity: { '@_unit': 'bytes', '#text': String(size) },
      allocation: { '@_unit': 'bytes', '#text': '0' },
      target: { format: { '@_type': 'raw' }, permissions: { mode: '0644' } },
    },
  }) as string;
}

/** Every file a domain's XML references (disk sources, backing chains, kernel, initrd, loader…). */
export function domainFileReferences(xml: string): Set<string> {
  const found = new Set<string>();
  const walk = (node: unknown, key: string): void => {
    if (Array.isArray(node)) {
      for (const n of node) walk(n, key);
      return;
    }
    if (node && typeof node === 'object') {
      for (const [k, v] of Object.entries(node as XmlNode)) {
        if (k === '@_file' && typeof v === 'string') found.add(v);
        else walk(v, k);
      }
      return;
    }
    if ((key === 'kernel' || key === 'initrd') && typeof node === 'string') found.add(node.trim());
  };
  walk(xmlParser.parse(xml), '');
  return found;
}

// ---------------------------------------------------------------------------------------------
// format detection
// ---------------------------------------------------------------------------------------------

export interface HeaderInspection {
  format: ImageFormat;
  /** qcow2 only: the guest-visible size from the header */
  virtualSize?: number;
}

const FOREIGN_MAGICS: ReadonlyArray<readonly [number, Buffer, string, 'image' | 'compressed']> = [
  [0, Buffer.from('KDMV'), 'a VMDK image', 'image'],
  [0, Buffer.from('# Disk DescriptorFile'), 'a VMDK descriptor', 'image'],
  [0, Buffer.from('vhdxfile'), 'a VHDX image', 'image'],
  [0, Buffer.from('conectix'), 'a VHD (vpc) image', 'image'],
  [0x40, Buffer.from([0x7f, 0x10, 0xda, 0xbe]), 'a VirtualBox VDI image', 'image'],
  [0, Buffer.from([0x4c, 0x55, 0x4b, 0x53, 0xba, 0xbe]), 'a LUKS-encrypted image', 'image'],
  [0, Buffer.from([0x1f, 0x8b]), 'gzip-compressed', 'compressed'],
  [0, Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]), 'xz-compressed', 'compressed'],
  [0, Buffer.from([0x28, 0xb5, 0x2f, 0xfd]), 'zstd-compressed', 'compressed'],
  [0, Buffer.from('BZh'), 'bzip2-compressed', 'compressed'],
];

/**
 * Detects qcow2 (by its magic) or raw from the first bytes of a file (64 KiB is
 * plenty), and refuses what vmctl cannot use as a base image: qcow2 with a
 * backing file or an external data file, encrypted, corrupt or dirty qcow2,
 * qcow v1, other image formats, compressed files.
 */
export function inspectImageHeader(head: Buffer, fileSize: number, what = 'the image'): HeaderInspection {
  if (head.length >= 4 && head.subarray(0, 4).equals(Buffer.from([0x51, 0x46, 0x49, 0xfb]))) {
    if (head.length < 72) throw new VmctlError('INVALID_INPUT', `${what} has a truncated qcow2 header`);
    const version = head.readUInt32BE(4);
    if (version !== 2 && version !== 3) {
      throw new VmctlError('UNSUPPORTED', `${what} is qcow version ${version}; vmctl imports qcow2 (versions 2 and 3) or raw`, {
        hint: 'convert it: qemu-img convert -O qcow2 FILE NEW.qcow2',
      });
    }
    const backingOffset = head.readBigUInt64BE(8);
    if (backingOffset !== 0n) {
      const len = head.readUInt32BE(16);
      const off = Number(backingOffset);
      const backing = off + len <= head.length && len <= 1023 ? head.subarray(off, off + len).toString('utf8') : undefined;
      throw new VmctlError('INVALID_INPUT', `${what} is a qcow2 overlay with a backing file${backing !== undefined ? ` (${quote(backing)})` : ''}; a base image must be self-contained`, {
        hint: 'flatten it first: qemu-img convert -O qcow2 FILE NEW.qcow2',
      });
    }
    if (head.readUInt32BE(32) !== 0) {
      throw new VmctlError('UNSUPPORTED', `${what} is an encrypted qcow2 image`, { hint: 'decrypt it with qemu-img convert first' });
    }
    if (version === 3 && head.length >= 80) {
      const incompatible = head.readBigUInt64BE(72);
      if (incompatible & 1n) {
        throw new VmctlError('INVALID_INPUT', `${what} is a dirty qcow2 image (not cleanly closed)`, { hint: 'repair it: qemu-img check -r all FILE' });
      }
      if (incompatible & 2n) {
        throw new VmctlError('INVALID_INPUT', `${what} is marked corrupt`, { hint: 'repair it: qemu-img check -r all FILE' });
      }
      if (incompatible & 4n) {
        throw new VmctlError('INVALID_INPUT', `${what} keeps its data in an external data file; a base image must be self-contained`, {
          hint: 'convert it: qemu-img convert -O qcow2 FILE NEW.qcow2',
        });
      }
    }
    const virtualSize = head.readBigUInt64BE(24);
    if (virtualSize === 0n || virtualSize > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw new VmctlError('INVALID_INPUT', `${what} has an invalid qcow2 virtual size (${virtualSize})`);
    }
    return { format: 'qcow2', virtualSize: Number(virtualSize) };
  }
  if (head.length >= 4 && head.subarray(0, 3).toString('latin1') === 'QFI') {
    throw new VmctlError('UNSUPPORTED', `${what} is not a qcow2 image vmctl understands`);
  }
  for (const [offset, magic, desc, kind] of FOREIGN_MAGICS) {
    if (head.length >= offset + magic.length && head.subarray(offset, offset + magic.length).equals(magic)) {
      throw new VmctlError('UNSUPPORTED', `${what} is ${desc}; vmctl imports qcow2 or raw disk images`, {
        hint: kind === 'compressed' ? 'decompress it first' : 'convert it: qemu-img convert -O qcow2 FILE NEW.qcow2',
      });
    }
  }
  if (fileSize === 0) throw new VmctlError('INVALID_INPUT', `${what} is empty`);
  return { format: 'raw' };
}

async function readHead(path: string, n = 65536): Promise<Buffer> {
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(n);
    const { bytesRead } = await fh.read(buf, 0, n, 0);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

// ---------------------------------------------------------------------------------------------
// manifests
// ---------------------------------------------------------------------------------------------

const SHA256_RE = /^[0-9a-f]{64}$/;
const PLAIN_FILE_RE = /^[A-Za-z0-9._+-]{1,255}$/;
const MAX_MANIFEST_BYTES = 1024 * 1024;

export function normalizeSha256(value: string, what = '--sha256'): string {
  const v = value.trim().toLowerCase();
  if (!SHA256_RE.test(v)) throw new VmctlError('INVALID_INPUT', `${what} must be 64 hexadecimal digits, got ${quote(value)}`);
  return v;
}

function plainFile(v: unknown, what: string, where: string): string {
  if (typeof v !== 'string' || !PLAIN_FILE_RE.test(v) || v === '.' || v === '..') {
    throw new VmctlError('INVALID_INPUT', `${where}: ${what} must be a plain file name next to the manifest, got ${quote(String(v))}`);
  }
  return v;
}

function optionalSha(v: unknown, what: string, where: string): string | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'string' || !SHA256_RE.test(v)) throw new VmctlError('INVALID_INPUT', `${where}: ${what} is not a sha256`);
  return v;
}

/** Parses and checks a build manifest (scripts/build-image.sh's FILE.json). */
export function parseBuildManifest(text: string, where: string): ImageManifest {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new VmctlError('INVALID_INPUT', `${where} is not valid JSON: ${(e as Error).message}`);
  }
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) throw new VmctlError('INVALID_INPUT', `${where} is not a JSON object`);
  const m = raw as Record<string, unknown>;
  if (m.manifestVersion !== 1) {
    throw new VmctlError('UNSUPPORTED', `${where}: manifestVersion ${JSON.stringify(m.manifestVersion)} is not supported (vmctl reads version 1)`);
  }
  if (m.format !== 'qcow2' && m.format !== 'raw') throw new VmctlError('INVALID_INPUT', `${where}: format must be "qcow2" or "raw"`);
  optionalSha(m.sha256, 'sha256', where);
  for (const k of ['virtualSize', 'fileSize'] as const) {
    if (m[k] !== undefined && !(Number.isSafeInteger(m[k]) && (m[k] as number) > 0)) throw new VmctlError('INVALID_INPUT', `${where}: ${k} is not a size`);
  }
  const boot = m.boot as Record<string, unknown> | undefined;
  if (!boot || typeof boot !== 'object') throw new VmctlError('INVALID_INPUT', `${where}: no "boot" section`);
  if (boot.method === 'direct-kernel') {
    plainFile(boot.kernel, 'boot.kernel', where);
    plainFile(boot.initrd, 'boot.initrd', where);
    if (typeof boot.cmdline !== 'string' || boot.cmdline.length > 4096 || XML_ILLEGAL_RE.test(boot.cmdline) || /[\r\n]/.test(boot.cmdline)) {
      throw new VmctlError('INVALID_INPUT', `${where}: boot.cmdline must be one line of text`);
    }
    optionalSha(boot.kernelSha256, 'boot.kernelSha256', where);
    optionalSha(boot.initrdSha256, 'boot.initrdSha256', where);
  } else if (boot.method !== 'bootloader') {
    throw new VmctlError('UNSUPPORTED', `${where}: boot.method ${JSON.stringify(boot.method)} is not supported (direct-kernel or bootloader)`);
  }
  return m as ImageManifest;
}

// ---------------------------------------------------------------------------------------------
// progress
// ---------------------------------------------------------------------------------------------

const REPORT_EVERY_MS = 200;
const RATE_WINDOW_MS = 5000;

/** Counts bytes of one phase and reports rate/ETA at most every 200 ms. */
class Meter {
  private bytes = 0;
  private lastReport = 0;
  private readonly samples: Array<[number, number]> = [];
  item: ImageVolumeKind;

  constructor(
    private readonly phase: TransferPhase,
    private readonly image: string,
    private readonly total: number | null,
    item: ImageVolumeKind,
    private readonly emit: ((p: ImageProgress) => void) | undefined,
  ) {
    this.item = item;
  }

  add(n: number): void {
    this.bytes += n;
    if (Date.now() - this.lastReport >= REPORT_EVERY_MS) this.report(false);
  }

  /** switch to the next item (reported right away) */
  next(item: ImageVolumeKind): void {
    this.item = item;
    this.report(false);
  }

  finish(): void {
    this.report(true);
  }

  private report(done: boolean): void {
    if (!this.emit) return;
    const now = Date.now();
    this.lastReport = now;
    this.samples.push([now, this.bytes]);
    while (this.samples.length > 2 && now - this.samples[0]![0] > RATE_WINDOW_MS) this.samples.shift();
    const [t0, b0] = this.samples[0]!;
    const rate = now > t0 ? ((this.bytes - b0) * 1000) / (now - t0) : 0;
    const eta = this.total !== null && rate > 0 ? Math.max(0, (this.total - this.bytes) / rate) : null;
    try {
      this.emit({
        phase: this.phase,
        image: this.image,
        item: this.item,
        done: this.bytes,
        ...(this.total !== null ? { total: this.total } : {}),
        bytesPerSecond: Math.round(rate),
        etaSeconds: done ? 0 : eta === null ? null : Math.round(eta),
        finished: done,
      });
    } catch {
      // a progress renderer must never break a transfer
    }
  }
}

/** Re-yields a byte stream, hashing and counting it. */
async function* tapped(source: AsyncIterable<Buffer>, hash: ReturnType<typeof createHash>, meter: Meter): AsyncGenerator<Buffer> {
  for await (const chunk of source) {
    hash.update(chunk);
    meter.add(chunk.length);
    yield chunk;
  }
}

async function hashFile(path: string, meter: Meter, signal?: AbortSignal): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 1024 * 1024, ...(signal ? { signal } : {}) }) as AsyncIterable<Buffer>) {
    hash.update(chunk);
    meter.add(chunk.length);
  }
  return hash.digest('hex');
}

// ---------------------------------------------------------------------------------------------
// abort
// ---------------------------------------------------------------------------------------------

function abortedError(what: string, signal: AbortSignal): VmctlError {
  const reason: unknown = signal.reason;
  if (reason instanceof VmctlError) return reason;
  return new VmctlError('CONFLICT', `${what} interrupted`, { details: { aborted: true }, cause: reason });
}

/** True for errors that an abort produced (AbortError, or any error after the signal fired). */
function isAbort(err: unknown, signal?: AbortSignal): boolean {
  return signal?.aborted === true || (err instanceof Error && err.name === 'AbortError');
}

// ---------------------------------------------------------------------------------------------
// sources
// ---------------------------------------------------------------------------------------------

interface LocalFile {
  path: string;
  size: number;
  /** known when it was computed on the way (download) */
  sha256?: string;
}

interface PreparedSource {
  /** for messages and the import record: path, or URL without credentials/query */
  display: string;
  disk: LocalFile;
  manifest: ImageManifest | null;
  kernel?: LocalFile;
  initrd?: LocalFile;
  cleanup(): Promise<void>;
}

function displayUrl(u: URL): string {
  return `${u.protocol}//${u.host}${u.pathname}`;
}

async function localFile(path: string, what: string): Promise<LocalFile> {
  let st;
  try {
    st = await stat(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new VmctlError('NOT_FOUND', `${what} ${quote(path)} does not exist`);
    throw e;
  }
  if (!st.isFile()) throw new VmctlError('INVALID_INPUT', `${what} ${quote(path)} is not a regular file`);
  return { path, size: st.size };
}

async function readSmallFile(path: string, what: string): Promise<string> {
  const f = await localFile(path, what);
  if (f.size > MAX_MANIFEST_BYTES) throw new VmctlError('INVALID_INPUT', `${what} ${quote(path)} is larger than 1 MiB`);
  const fh = await open(path, 'r');
  try {
    return (await fh.readFile()).toString('utf8');
  } finally {
    await fh.close();
  }
}

async function prepareFileSource(path: string): Promise<PreparedSource> {
  const disk = await localFile(path, 'image file');
  const manifestPath = `${path}.json`;
  let manifest: ImageManifest | null = null;
  let kernel: LocalFile | undefined;
  let initrd: LocalFile | undefined;
  if (existsSync(manifestPath)) {
    manifest = parseBuildManifest(await readSmallFile(manifestPath, 'manifest'), `manifest ${manifestPath}`);
    if (manifest.boot.method === 'direct-kernel') {
      kernel = await localFile(join(dirname(manifestPath), manifest.boot.kernel), 'kernel (from the manifest)');
      initrd = await localFile(join(dirname(manifestPath), manifest.boot.initrd), 'initrd (from the manifest)');
    }
  }
  return { display: path, disk, manifest, ...(kernel ? { kernel } : {}), ...(initrd ? { initrd } : {}), cleanup: async () => undefined };
}

async function httpGet(url: URL, signal: AbortSignal | undefined): Promise<Response> {
  try {
    return await fetch(url, { redirect: 'follow', ...(signal ? { signal } : {}) });
  } catch (e) {
    if (isAbort(e, signal)) throw e;
    const cause = (e as { cause?: unknown }).cause;
    const detail = cause instanceof Error ? cause.message : (e as Error).message;
    const code = cause && typeof cause === 'object' ? (cause as { code?: unknown }).code : undefined;
    throw new VmctlError('CONNECTION', `cannot download ${displayUrl(url)}: ${detail}`, {
      hint: code === 'ECONNREFUSED' ? 'is the web server running?' : 'check the URL and your network',
      cause: e,
      ...(typeof code === 'string' ? { details: { errno: code } } : {}),
    });
  }
}

function httpStatusError(url: URL, res: Response): VmctlError {
  const msg = `cannot download ${displayUrl(url)}: HTTP ${res.status}${res.statusText ? ` ${res.statusText}` : ''}`;
  if (res.status === 404 || res.status === 410) return new VmctlError('NOT_FOUND', msg, { hint: 'check the URL', details: { httpStatus: res.status } });
  if (res.status === 401 || res.status === 403) return new VmctlError('AUTH', msg, { details: { httpStatus: res.status } });
  return new VmctlError('CONNECTION', msg, { details: { httpStatus: res.status } });
}

/** Streams a response body to `dest`, hashing it; throws on HTTP errors. */
async function download(
  url: URL,
  dest: string,
  item: ImageVolumeKind,
  image: string,
  opts: ImageOpOptions,
  res?: Response,
): Promise<LocalFile> {
  const response = res ?? (await httpGet(url, opts.signal));
  if (!response.ok) {
    await response.body?.cancel().catch(() => undefined);
    throw httpStatusError(url, response);
  }
  if (!response.body) throw new VmctlError('CONNECTION', `cannot download ${displayUrl(url)}: empty response`);
  const len = Number(response.headers.get('content-length'));
  const meter = new Meter('download', image, Number.isSafeInteger(len) && len > 0 ? len : null, item, opts.onProgress);
  meter.next(item);
  const hash = createHash('sha256');
  const body = Readable.fromWeb(response.body as unknown as WebReadableStream<Uint8Array>);
  try {
    const source = tapped(body as AsyncIterable<Buffer>, hash, meter);
    const sink = createWriteStream(dest, { mode: 0o600 });
    await (opts.signal ? pipeline(source, sink, { signal: opts.signal }) : pipeline(source, sink));
  } catch (e) {
    if (isAbort(e, opts.signal)) throw e;
    throw new VmctlError('CONNECTION', `download of ${displayUrl(url)} failed: ${(e as Error).message}`, { cause: e });
  }
  meter.finish();
  const size = (await stat(dest)).size;
  if (Number.isSafeInteger(len) && len > 0 && size !== len) {
    throw new VmctlError('CONNECTION', `download of ${displayUrl(url)} is truncated (${size} of ${len} bytes)`);
  }
  return { path: dest, size, sha256: hash.digest('hex') };
}

async function prepareUrlSource(url: URL, image: string, expectedSha: string | undefined, opts: ImageOpOptions): Promise<PreparedSource> {
  const tmpRoot = join(cacheDir(), 'tmp');
  await mkdir(tmpRoot, { recursive: true });
  const dir = await mkdtemp(join(tmpRoot, 'import-'));
  const cleanup = () => rm(dir, { recursive: true, force: true });
  try {
    const disk = await download(url, join(dir, 'disk'), 'disk', image, opts);
    // verify before anything else happens: a mismatch leaves nothing behind
    if (expectedSha !== undefined && disk.sha256 !== expectedSha) throw shaMismatch(displayUrl(url), expectedSha, disk.sha256!);
    const murl = new URL(url.href);
    murl.pathname += '.json';
    murl.hash = '';
    let manifest: ImageManifest | null = null;
    let kernel: LocalFile | undefined;
    let initrd: LocalFile | undefined;
    const mres = await httpGet(murl, opts.signal);
    if (mres.ok) {
      const text = await mres.text();
      if (Buffer.byteLength(text) > MAX_MANIFEST_BYTES) throw new VmctlError('INVALID_INPUT', `manifest ${displayUrl(murl)} is larger than 1 MiB`);
      manifest = parseBuildManifest(text, `manifest ${displayUrl(murl)}`);
      if (manifest.boot.method === 'direct-kernel') {
        kernel = await download(new URL(manifest.boot.kernel, murl), join(dir, 'kernel'), 'kernel', image, opts);
        initrd = await download(new URL(manifest.boot.initrd, murl), join(dir, 'initrd'), 'initrd', image, opts);
      }
    } else {
      await mres.body?.cancel().catch(() => undefined);
      // 4xx: there is no manifest (S3-style servers answer 403 for missing keys); 5xx: a real failure
      if (mres.status >= 500) throw httpStatusError(murl, mres);
      opts.onLog?.(`no manifest at ${displayUrl(murl)} (HTTP ${mres.status}): importing a bootloader image`);
    }
    return { display: displayUrl(url), disk, manifest, ...(kernel ? { kernel } : {}), ...(initrd ? { initrd } : {}), cleanup };
  } catch (e) {
    await cleanup();
    throw e;
  }
}

function shaMismatch(what: string, expected: string, actual: string): VmctlError {
  return new VmctlError('INVALID_INPUT', `sha256 mismatch for ${what}: expected ${expected}, got ${actual}`, {
    hint: 'the file is corrupt or not the one you meant; nothing was imported',
    details: { expectedSha256: expected, actualSha256: actual },
  });
}

function parseSource(source: string): { kind: 'url'; url: URL } | { kind: 'file'; path: string } {
  if (typeof source !== 'string' || source.length === 0) throw new VmctlError('INVALID_INPUT', 'give an image file or an http(s) URL');
  const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):/.exec(source)?.[1]?.toLowerCase();
  if (scheme === 'http' || scheme === 'https') {
    let url: URL;
    try {
      url = new URL(source);
    } catch {
      throw new VmctlError('INVALID_INPUT', `invalid URL ${quote(source)}`);
    }
    return { kind: 'url', url };
  }
  if (scheme === 'file') {
    try {
      return { kind: 'file', path: resolveUserPath(fileURLToPath(source), { label: 'image file' }) };
    } catch (e) {
      if (e instanceof VmctlError) throw e;
      throw new VmctlError('INVALID_INPUT', `invalid file URL ${quote(source)}`);
    }
  }
  if (scheme !== undefined && scheme.length > 1) {
    throw new VmctlError('INVALID_INPUT', `unsupported source ${quote(source)}: give a file path or an http(s):// URL`);
  }
  return { kind: 'file', path: resolveUserPath(source, { label: 'image file' }) };
}

// ---------------------------------------------------------------------------------------------
// pool scanning
// ---------------------------------------------------------------------------------------------

interface ImageVolumes {
  disk?: { vol: StorageVolume; format: ImageFormat };
  kernel?: StorageVolume;
  initrd?: StorageVolume;
  manifest?: StorageVolume;
  /** every volume of the image, in deletion order (manifest first, disk last) */
  all: StorageVolume[];
}

interface PoolScan {
  pool: StoragePool;
  images: Map<string, ImageVolumes>;
  others: StorageVolume[];
}

async function scanPool(conn: Connection, pool?: StoragePool): Promise<PoolScan> {
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

async function usage(conn: Connection, scan: PoolScan): Promise<{ overlays: Map<string, string[]>; domains: Map<string, string[]> }> {
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

async function describe(
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

function notFound(conn: Connection, name: string): VmctlError {
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

function inUseError(name: string, overlays: string[], domains: string[]): VmctlError {
  const parts: string[] = [];
  if (overlays.length) parts.push(`volume${overlays.length > 1 ? 's' : ''} ${overlays.join(', ')}`);
  if (domains.length) parts.push(`VM${domains.length > 1 ? 's' : ''} ${domains.join(', ')}`);
  return new VmctlError('CONFLICT', `image ${quote(name)} is in use by ${parts.join(' and ')}`, {
    hint: 'delete the VMs (and their disks) that use it first',
    details: { inUseBy: overlays, usedByDomains: domains },
  });
}

async function deleteVolumes(vols: StorageVolume[], onLog?: (m: string) => void): Promise<string[]> {
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

// ---------------------------------------------------------------------------------------------
// import
// ---------------------------------------------------------------------------------------------

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
        vol = await pool.createVolume(rawVolumeXml(item.volume, item.file.size));
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
    const mvol = await pool.createVolume(rawVolumeXml(names.manifest, data.length));
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

// ---------------------------------------------------------------------------------------------
// build
// ---------------------------------------------------------------------------------------------

/** The package's scripts/build-image.sh (found from src/core, dist/core and dist/bundle). */
export function buildScriptPath(): string {
  return packagePath('scripts', 'build-image.sh');
}

/** Parses one stdout line of build-image.sh. */
export function parseBuildLine(line: string): { kind: 'progress'; percent: number; message: string } | { kind: 'result'; path: string } | null {
  const p = /^PROGRESS (\d{1,3}) ?(.*)$/.exec(line);
  if (p) return { kind: 'progress', percent: Math.min(100, Number(p[1])), message: p[2] ?? '' };
  const r = /^RESULT (.+)$/.exec(line);
  if (r) return { kind: 'result', path: r[1]! };
  return null;
}

function assertBuildable(name: string): BuildableImage {
  assertImageName(name);
  if (!isBuildableImage(name)) {
    throw new VmctlError('UNSUPPORTED', `vmctl cannot build image ${quote(name)}; it builds: ${BUILDABLE_IMAGES.join(', ')}`, {
      hint: `import other images: vmctl image import FILE|URL --name ${name}`,
    });
  }
  return name;
}

/**
 * Runs scripts/build-image.sh NAME --out builtImagePath(NAME) (the build cache);
 * resolves to the manifest path. Does not touch libvirt.
 */
export async function buildImageFiles(name: string = DEFAULT_IMAGE, opts: Omit<BuildImageOptions, 'force'> = {}): Promise<string> {
  const image = assertBuildable(name);
  const out = builtImagePath(image);
  const script = opts.script ?? buildScriptPath();
  if (!existsSync(script)) throw new VmctlError('NOT_FOUND', `the image build script is missing: ${script}`, { hint: 'reinstall vmctl' });
  await mkdir(dirname(out), { recursive: true });
  opts.signal?.throwIfAborted();
  const child = spawn('bash', [script, image, '--out', out], { stdio: ['ignore', 'pipe', 'pipe'] });
  const tail: string[] = [];
  const onLog = logFn(opts);
  let result: string | undefined;
  const onAbort = () => child.kill('SIGTERM');
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  const lines = (stream: NodeJS.ReadableStream, fn: (line: string) => void) => {
    let buf = '';
    stream.setEncoding('utf8');
    stream.on('data', (d: string) => {
      buf += d;
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        fn(buf.slice(0, i));
        buf = buf.slice(i + 1);
      }
    });
    stream.on('end', () => {
      if (buf) fn(buf);
    });
  };
  lines(child.stdout, (line) => {
    const parsed = parseBuildLine(line);
    if (parsed?.kind === 'progress') {
      try {
        opts.onProgress?.({ phase: 'build', image, done: parsed.percent, total: 100, message: parsed.message });
      } catch {
        /* never break the build */
      }
    } else if (parsed?.kind === 'result') {
      result = parsed.path;
    }
  });
  lines(child.stderr, (line) => {
    tail.push(line);
    if (tail.length > 30) tail.shift();
    onLog?.(line);
  });
  const [code, sig] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (c, s) => resolve([c, s]));
  }).finally(() => opts.signal?.removeEventListener('abort', onAbort));
  if (opts.signal?.aborted) throw abortedError(`build of image ${quote(image)}`, opts.signal);
  if (code !== 0) {
    const text = tail.join('\n');
    const last = tail.filter((l) => l.trim()).slice(-1)[0] ?? `exit ${code ?? sig}`;
    const codeFor = /another build-image\.sh is running/.test(text)
      ? 'CONFLICT'
      : /must run as root/.test(text)
        ? 'AUTH'
        : /missing tool/.test(text)
          ? 'UNSUPPORTED'
          : /Failed to fetch|Could not resolve|Temporary failure resolving|Couldn't download|Connection (refused|timed out)/i.test(text)
            ? 'CONNECTION'
            : /No space left/i.test(text)
              ? 'RESOURCE'
              : 'INTERNAL';
    throw new VmctlError(codeFor, `building image ${image} failed: ${last.replace(/^build-image\.sh: /, '')}`, {
      hint: 'the full log is on stderr with --log-level info',
      details: { exitCode: code, signal: sig, logTail: tail.slice(-10) },
    });
  }
  const manifest = result ?? `${out}.json`;
  if (!existsSync(manifest)) throw new VmctlError('INTERNAL', `build of image ${image} reported success but ${manifest} is missing`);
  return manifest;
}

/** Builds image `name` (only debian-12) into the build cache, then imports it. */
export async function buildImage(conn: Connection, name: string = DEFAULT_IMAGE, opts: BuildImageOptions = {}): Promise<ImageInfo> {
  const image = assertBuildable(name);
  // refuse before a long build that could not be imported anyway
  const existing = await findImage(conn, image);
  if (existing && !opts.force) {
    throw new VmctlError('ALREADY_EXISTS', `image ${quote(image)} already exists in pool 'vmctl' on ${conn.uri.original}`, {
      hint: `rebuild and replace it with --force, or remove it first: vmctl image rm ${image}`,
    });
  }
  if (existing && (existing.inUseBy.length || existing.usedByDomains.length)) throw inUseError(image, existing.inUseBy, existing.usedByDomains);
  await buildImageFiles(image, opts);
  return importImage(conn, { ...opts, source: builtImagePath(image), name: image, force: opts.force === true });
}

/**
 * The image, making it available first when needed (what `vmctl create` uses):
 * in the pool → returned as is; in the local build cache → imported (uploaded
 * through a volume stream, which is how the default image reaches a remote
 * host); buildable → built, then imported.
 */
export async function ensureImage(conn: Connection, name: string, options: ImageOpOptions = {}): Promise<ImageInfo> {
  assertImageName(name);
  const onLog = logFn(options);
  const opts: ImageOpOptions = { ...options, ...(onLog ? { onLog } : {}) };
  const present = await findImage(conn, name);
  if (present) {
    if (present.complete) return present;
    throw new VmctlError('CONFLICT', `image ${quote(name)} is incomplete: an import is running or was interrupted`, {
      hint: `wait for the other import, or remove the leftovers and retry: vmctl image rm ${name}`,
      details: { volumes: present.volumes },
    });
  }
  const cached = builtImagePath(name);
  if (existsSync(`${cached}.json`) && existsSync(cached)) {
    opts.onLog?.(`importing image ${name} from the build cache ${cached}`);
    return importImage(conn, { ...opts, source: cached, name });
  }
  if (isBuildableImage(name)) {
    opts.onLog?.(`image ${name} is neither in the pool nor in the build cache: building it`);
    await buildImageFiles(name, opts);
    return importImage(conn, { ...opts, source: cached, name });
  }
  throw notFound(conn, name);
}
