/**
 * Disk data into a backup point: volumes downloaded through libvirt volume
 * streams (sparse: holes stay holes in the local file), made into the guest's
 * view locally with qemu-img, and stored as chunks of a 4 MiB grid.
 */
import { constants } from 'node:fs';
import type { BigIntStats } from 'node:fs';
import { access, open, stat, type FileHandle } from 'node:fs/promises';
import { basename } from 'node:path';
import type { Connection, StorageVolume } from '../../libvirt/connection.js';
import { LibvirtError } from '../../libvirt/errors.js';
import { VmctlError } from '../errors.js';
import { isLocalConnection } from '../host/cache.js';
import type { OpContext } from '../op/context.js';
import { CHUNK_SIZE } from './format.js';
import { xmlParser } from '../xml.js';
import type { PayloadWriter } from './chunks.js';
import { SharedBufferPool } from './hasher.js';
import { imageMap, qemuImg, type MapExtent } from './qemu-img.js';
import { NbdClient, nbdExtents, type NbdExport } from './nbd.js';

/** Byte progress of one phase as op.progress events: bytes, rate, ETA (at most every 250 ms). */
export class Meter {
  private done = 0;
  private last = 0;
  private readonly t0 = performance.now();
  constructor(
    private readonly op: OpContext,
    private readonly phase: string,
    private readonly item: string,
    private readonly total?: number,
  ) {}

  add(n: number): void {
    this.done += n;
    const now = performance.now();
    if (now - this.last >= 250) this.report(false, now);
  }

  get bytes(): number {
    return this.done;
  }

  get bytesPerSecond(): number {
    const s = (performance.now() - this.t0) / 1000;
    return s > 0 ? Math.round(this.done / s) : 0;
  }

  finish(): void {
    this.report(true, performance.now());
  }

  private report(finished: boolean, now: number): void {
    this.last = now;
    const rate = this.bytesPerSecond;
    const eta = this.total !== undefined && rate > 0 ? Math.max(0, Math.round((this.total - this.done) / rate)) : null;
    this.op.progress({
      phase: this.phase,
      item: this.item,
      done: this.done,
      ...(this.total !== undefined ? { total: this.total } : {}),
      bytesPerSecond: rate,
      etaSeconds: finished ? 0 : eta,
      finished,
    });
  }
}

export async function lookupVolumeByPath(conn: Connection, path: string): Promise<StorageVolume | undefined> {
  try {
    return await conn.lookupStorageVolumeByPath(path);
  } catch (e) {
    if (e instanceof LibvirtError && e.isNotFound()) return undefined;
    throw e;
  }
}

/**
 * The volume's file as a path to read on this machine, or undefined (then it goes through a volume
 * stream). Only for a daemon on this machine (a unix-socket connection) — data of a remote host
 * always comes through the libvirt connection — and only when the file here IS the volume: the
 * path libvirt gives exists here, carries `mustContain` (a name with the operation's id: no other file has it
 * name), is readable, and has the allocation libvirt reports (a daemon in another mount namespace
 * with a same-named file elsewhere fails this). VMCTL_BACKUP_VIA=stream forces the stream.
 */
export async function localVolumeFile(conn: Connection, vol: StorageVolume, mustContain: string): Promise<string | undefined> {
  return localVolumePath(conn, vol, mustContain, constants.R_OK, async (st) => st.blocks * 512n === (await vol.info()).allocation);
}

/**
 * The path libvirt gives for `vol` when the daemon is on this machine (VMCTL_BACKUP_VIA=stream: never),
 * the file there carries `mustContain` in its name, is a regular file vmctl may access in `mode`, and
 * `isIt` says it is the volume's own file; else undefined.
 */
async function localVolumePath(conn: Connection, vol: StorageVolume, mustContain: string, mode: number, isIt: (st: BigIntStats) => Promise<boolean>): Promise<string | undefined> {
  if (!isLocalConnection(conn) || process.env['VMCTL_BACKUP_VIA'] === 'stream') return undefined;
  try {
    const path = await vol.path();
    if (!basename(path).includes(mustContain)) return undefined;
    const st = await stat(path, { bigint: true });
    if (!st.isFile()) return undefined;
    await access(path, mode);
    return (await isIt(st)) ? path : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The path of a volume just created on a daemon on this machine, when vmctl may write it in place
 * instead of uploading it through a volume stream: the file there carries the volume's name, is a
 * writable regular file, and its change time is the one libvirt reports for the volume (to the
 * nanosecond: the very file the daemon made, not a same-named one in another mount namespace).
 * VMCTL_BACKUP_VIA=stream forces the stream.
 */
export async function writableLocalVolumeFile(conn: Connection, vol: StorageVolume, mustContain: string): Promise<string | undefined> {
  return localVolumePath(conn, vol, mustContain, constants.W_OK, async (st) => {
    const doc = xmlParser.parse(await vol.xml()) as { volume?: { target?: { timestamps?: { ctime?: unknown } } } };
    const m = /^(\d+)\.(\d{1,9})$/.exec(String(doc.volume?.target?.timestamps?.ctime ?? ''));
    return m !== null && BigInt(m[1]!) * 1_000_000_000n + BigInt(m[2]!.padEnd(9, '0')) === st.ctimeNs;
  });
}

const ZEROS = Buffer.alloc(64 * 1024);
const isZero = (b: Buffer): boolean => {
  for (let i = 0; i < b.length; i += ZEROS.length) {
    const end = Math.min(i + ZEROS.length, b.length);
    if (b[i] !== 0 || b.compare(ZEROS, 0, end - i, i, end) !== 0) return false;
  }
  return true;
};

/** Download buffers: packets (256 KiB) are gathered into writes of this size, one write in flight while the next fills. */
const DOWNLOAD_WRITE = 8 * 1024 * 1024;

/**
 * Download a volume into a local file through a sparse volume stream: holes
 * arrive as hole lengths and are skipped (the local file keeps them as holes,
 * never expanded into zeros), all-zero data packets are skipped too. Data
 * packets are gathered into large writes, one in flight while the next
 * buffer fills, so the stream is read while the disk writes.
 */
export async function downloadVolume(
  op: OpContext,
  vol: StorageVolume,
  localPath: string,
  meter: Meter,
  onBytes?: (total: number) => Promise<void>,
): Promise<number> {
  const stream = await vol.downloadSparse();
  const onAbort = () => stream.abort();
  op.signal.addEventListener('abort', onAbort, { once: true });
  const fh = await open(localPath, 'wx', 0o600);
  const bufs = [Buffer.allocUnsafe(DOWNLOAD_WRITE), Buffer.allocUnsafe(DOWNLOAD_WRITE)];
  let cur = 0; // which buffer fills
  let fill = 0; // bytes in it
  let fillAt = 0; // file offset of its first byte
  let pos = 0; // file offset of the next byte of the stream
  let writing: Promise<void> = Promise.resolve();
  const flush = async () => {
    if (fill === 0) return;
    const buf = bufs[cur]!;
    const n = fill;
    const at = fillAt;
    await writing; // the other buffer is free once its write is done
    writing = writeAll(fh, buf.subarray(0, n), at);
    writing.catch(() => undefined); // awaited by the next flush or at the end
    cur ^= 1;
    fill = 0;
  };
  try {
    for await (const item of stream.sparse()) {
      if (typeof item === 'bigint') {
        await flush();
        pos += Number(item);
        continue;
      }
      if (isZero(item)) {
        await flush();
      } else {
        if (fill > 0 && fillAt + fill !== pos) await flush();
        if (fill === 0) fillAt = pos;
        for (let off = 0; off < item.length; ) {
          const n = Math.min(item.length - off, DOWNLOAD_WRITE - fill);
          item.copy(bufs[cur]!, fill, off, off + n);
          fill += n;
          off += n;
          if (fill === DOWNLOAD_WRITE) {
            await flush();
            fillAt = pos + off;
          }
        }
      }
      pos += item.length;
      meter.add(item.length);
      if (onBytes) await onBytes(pos);
    }
    await flush();
    await writing;
    await stream.done;
    await fh.truncate(pos);
    // no fsync: every download is a temporary in the point's .work directory; what is kept is the
    // payload made from it, and that is synced (PayloadWriter.finish)
    return pos;
  } catch (e) {
    stream.destroy();
    await writing.catch(() => undefined);
    op.throwIfAborted();
    throw e;
  } finally {
    op.signal.removeEventListener('abort', onAbort);
    await fh.close();
  }
}

async function writeAll(fh: FileHandle, buf: Buffer, at: number): Promise<void> {
  for (let off = 0; off < buf.length; ) {
    const { bytesWritten } = await fh.write(buf, off, buf.length - off, at + off);
    off += bytesWritten;
  }
}

/** Merge [start, end) ranges that touch, sorted. */
function mergeRanges(r: Array<[number, number]>): Array<[number, number]> {
  const s = [...r].sort((a, b) => a[0] - b[0]);
  const out: Array<[number, number]> = [];
  for (const x of s) {
    const last = out[out.length - 1];
    if (last && x[0] <= last[1]) last[1] = Math.max(last[1], x[1]);
    else out.push([x[0], x[1]]);
  }
  return out;
}

export interface StoredDisk {
  dataBytes: number;
  storedBytes: number;
}

/**
 * What storeDisk stores, in order: the disk's bytes [o, o+n) as one chunk, assembled from parts —
 * bytes read from the image file at `at`, or zeros (no `at`: an explicit zero run of an
 * incremental). Guest-contiguous extents inside one 4 MiB grid cell make one piece, however
 * scattered their clusters are in the image file (a backup job writes its target out of order),
 * so chunks stay large.
 */
export interface Piece {
  o: number;
  n: number;
  parts: Array<{ off: number; n: number; at?: number }>;
}

/** Segments [start, end) of the disk with where they are in the file (undefined: zeros), split at the grid and merged into pieces. */
export function toPieces(segments: Array<{ start: number; end: number; at?: number }>): Piece[] {
  const pieces: Piece[] = [];
  for (const seg of segments) {
    for (let c = Math.floor(seg.start / CHUNK_SIZE) * CHUNK_SIZE; c < seg.end; c += CHUNK_SIZE) {
      const lo = Math.max(seg.start, c);
      const hi = Math.min(seg.end, c + CHUNK_SIZE);
      if (hi <= lo) continue;
      const at = seg.at === undefined ? undefined : seg.at + (lo - seg.start);
      const last = pieces[pieces.length - 1];
      if (last && last.o + last.n === lo && Math.floor(last.o / CHUNK_SIZE) === Math.floor(lo / CHUNK_SIZE)) {
        const prev = last.parts[last.parts.length - 1]!;
        // a part continuing the previous one in the file (or zeros after zeros) just grows it
        if ((at === undefined && prev.at === undefined) || (at !== undefined && prev.at !== undefined && prev.at + prev.n === at)) prev.n += hi - lo;
        else last.parts.push({ off: last.n, n: hi - lo, ...(at !== undefined ? { at } : {}) });
        last.n += hi - lo;
      } else {
        pieces.push({ o: lo, n: hi - lo, parts: [{ off: 0, n: hi - lo, ...(at !== undefined ? { at } : {}) }] });
      }
    }
  }
  return pieces;
}

/**
 * Store the guest view of `image` (a local qcow2 or raw, backing chain included):
 * full — the data extents (qemu-img map of the raw view), split at the 4 MiB
 * grid, all-zero pieces skipped, so a point is as big as the guest's data; incremental — only
 * the ranges allocated in the image's top layer (a push-mode incremental target
 * holds exactly the clusters that changed), zero ones as explicit zero chunks.
 */
export async function storeDisk(
  op: OpContext,
  image: { path: string; format: string; nbd?: NbdExport },
  rawPath: string,
  kind: 'full' | 'incremental',
  writer: PayloadWriter,
  virtualSize: number,
  meter: Meter,
): Promise<StoredDisk> {
  // a pull-mode backup's export: the guest's point-in-time view, read once — a full: its data extents;
  // an incremental: what its dirty bitmap marks (zeros there stored as explicit zero chunks)
  if (image.nbd) {
    const ranges = kind === 'incremental' ? dirtyRanges(await nbdExtents(image.nbd, op.signal, dirtyContext(image.nbd))) : dataRanges(await nbdExtents(image.nbd, op.signal));
    return storePieces(op, await nbdSource(image.nbd, op.signal), rangePieces(ranges, virtualSize), kind, writer, meter);
  }
  // a qcow2 without backing file and without compressed clusters (what a backup job writes): read the
  // guest's data in place, where qemu-img map says each extent is in the file
  if (image.format === 'qcow2') {
    const map = await imageMap(image.path, 'qcow2', op.signal);
    if (map.every((e) => e.depth === 0 && (!e.data || e.offset !== undefined))) return storePieces(op, await fileSource(image.path), mappedPieces(map, kind), kind, writer, meter);
  }
  let changed: Array<[number, number]> | undefined;
  if (kind === 'incremental') {
    const map = await imageMap(image.path, image.format, op.signal);
    changed = mergeRanges(map.filter((e: MapExtent) => e.depth === 0 && (e.present ?? (e.data || e.zero))).map((e) => [e.start, e.start + e.length]));
  }
  await qemuImg(['convert', '-f', image.format, '-O', 'raw', '-S', '4k', image.path, rawPath], op.signal);
  op.throwIfAborted();
  const ranges = changed ?? dataRanges(await imageMap(rawPath, 'raw', op.signal));
  return storePieces(op, await fileSource(rawPath), rangePieces(ranges, virtualSize), kind, writer, meter);
}

/** An incremental's export: its dirty bitmap's NBD meta context. */
function dirtyContext(exp: NbdExport): string {
  if (!exp.bitmap) throw new VmctlError('INTERNAL', `the export of disk ${exp.name} has no dirty bitmap`);
  return `qemu:dirty-bitmap:${exp.bitmap}`;
}

/** The dirty extents of a dirty-bitmap map (qemu-img reports them as not data), merged. */
const dirtyRanges = (map: MapExtent[]): Array<[number, number]> => mergeRanges(map.filter((e) => !e.data).map((e) => [e.start, e.start + e.length]));

/** The data extents of a map, merged. */
const dataRanges = (map: MapExtent[]): Array<[number, number]> => mergeRanges(map.filter((e) => e.data).map((e) => [e.start, e.start + e.length]));

/** Pieces reading `ranges` (guest offsets) where they are, cut at the disk's end. */
const rangePieces = (ranges: Array<[number, number]>, virtualSize: number): Piece[] =>
  toPieces(ranges.map(([a, b]) => ({ start: a, end: Math.min(b, virtualSize), at: a })).filter((x) => x.end > x.start));

/** The pieces of a qcow2 whose data extents qemu-img map locates in the file. */
function mappedPieces(map: MapExtent[], kind: 'full' | 'incremental'): Piece[] {
  const segments: Array<{ start: number; end: number; at?: number }> = [];
  for (const e of [...map].sort((x, y) => x.start - y.start)) {
    const present = e.present ?? (e.data || e.zero);
    // unallocated (unchanged in an incremental, zero in a full) or written as zeros (explicit in an incremental)
    if (e.data) segments.push({ start: e.start, end: e.start + e.length, at: e.offset! });
    else if (kind === 'incremental' && present) segments.push({ start: e.start, end: e.start + e.length });
  }
  return toPieces(segments);
}

/** Pieces read ahead of the one being hashed/written (each at most one 4 MiB chunk). */
const READ_AHEAD = 3;

/** Where storePieces reads a piece's bytes: a local image file, or an NBD export. */
interface PieceSource {
  read(buf: Buffer, at: number): Promise<unknown>;
  close(): Promise<void>;
}

async function fileSource(path: string): Promise<PieceSource> {
  const fh = await open(path, 'r');
  return { read: (buf, at) => readAt(fh, path, buf, at), close: () => fh.close() };
}

async function nbdSource(exp: NbdExport, signal: AbortSignal): Promise<PieceSource> {
  const c = await NbdClient.open(exp, signal);
  return { read: (buf, at) => c.read(buf, at), close: () => c.close() };
}

/**
 * Reads each piece from `src` and stores it (all-zero pieces skipped, or explicit in incrementals):
 * the next reads are already under way while a piece is hashed, and the writer keeps its writes in
 * flight, so reading, hashing and writing overlap. Buffers are shared memory (hasher.ts), reused once
 * the writer is done with them.
 */
async function storePieces(op: OpContext, src: PieceSource, pieces: Piece[], kind: 'full' | 'incremental', writer: PayloadWriter, meter: Meter): Promise<StoredDisk> {
  const totals: StoredDisk = { dataBytes: 0, storedBytes: 0 };
  const buffers = new SharedBufferPool(CHUNK_SIZE);
  const hasData = (p: Piece) => p.parts.some((x) => x.at !== undefined);
  const reads: Array<Promise<Buffer>> = [];
  let next = 0;
  const readNext = () => {
    while (next < pieces.length && !hasData(pieces[next]!)) next++;
    const p = pieces[next++];
    if (!p) return;
    const buf = buffers.acquire(p.n);
    const r = Promise.all(p.parts.map((x) => (x.at === undefined ? buf.fill(0, x.off, x.off + x.n) : src.read(buf.subarray(x.off, x.off + x.n), x.at)))).then(() => buf);
    r.catch(() => undefined); // awaited in order below; never an unhandled rejection if we stop early
    reads.push(r);
  };
  try {
    for (let i = 0; i < READ_AHEAD; i++) readNext();
    for (const p of pieces) {
      op.throwIfAborted();
      if (!hasData(p)) {
        if (kind === 'incremental') writer.zero(p.o, p.n);
        meter.add(p.n);
        continue;
      }
      const buf = await reads.shift()!;
      readNext();
      if (isZero(buf)) {
        buffers.release(buf);
        if (kind === 'incremental') writer.zero(p.o, p.n);
      } else {
        totals.storedBytes += await writer.write(p.o, buf, () => buffers.release(buf));
        totals.dataBytes += p.n;
      }
      meter.add(p.n);
    }
  } finally {
    await Promise.allSettled(reads);
    await src.close();
  }
  return totals;
}

async function readAt(fh: FileHandle, path: string, buf: Buffer, at: number): Promise<Buffer> {
  const n = buf.length;
  let got = 0;
  while (got < n) {
    const { bytesRead } = await fh.read(buf, got, n - got, at + got);
    if (bytesRead === 0) throw new VmctlError('INTERNAL', `short read of ${path} at ${at + got}`);
    got += bytesRead;
  }
  return buf;
}
