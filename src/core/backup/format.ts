/**
 * The backup set on disk: one directory on the machine running vmctl,
 * owner-only (0700 directories, 0600 files):
 *
 *   DIR/set.json                      format, VM, encryption parameters (salt, key check)
 *   DIR/points/<id>/manifest.json     one backup point (full or incremental), written last
 *   DIR/points/<id>/files…            its payload: disks/vda, domain.xml, snapshots/*.xml,
 *                                     seed.iso, boot/kernel, boot/initrd, state/* (client keys)
 *   DIR/points/.partial-<id>/         a point being written (removed by undo or the next run)
 *
 * Every payload file is a sequence of stored chunks (plain, compressed and/or
 * encrypted, see chunks.ts). The manifest lists per file its size, its
 * digest (SET_VERSION), and per chunk where it lands (`o`: offset in the
 * guest disk or the plain file; `n`: its plain length), where it is stored
 * (`at`, `sz`) and the SHA-256 of the stored bytes — so `verify` can name the
 * file and offset of any damage without the key. A disk file of a full point
 * holds the non-zero chunks of a 4 MiB grid (a missing cell reads as zeros);
 * one of an incremental point holds only what changed since its parent
 * (explicit zero chunks `z` included).
 */
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { VmctlError } from '../errors.js';
import { ensurePrivateDir } from '../paths.js';

export const SET_FORMAT = 'vmctl-backup';
/**
 * Version 2 (this vmctl writes it into new sets): a payload file's `sha256` is the digest of its
 * chunk list (fileDigest), and the chunks lie back to back from offset 0 — the stored bytes are
 * covered by the chunks' own SHA-256, so storing hashes every byte once, not twice. Version 1
 * (older sets, still read and verified; new points appended to a version 1 set stay version 1): a
 * payload file's `sha256` is the SHA-256 of the whole stored file.
 */
export const SET_VERSION = 2;
export const READABLE_SET_VERSIONS: readonly number[] = [1, 2];
export const CHUNK_SIZE = 4 * 1024 * 1024;

export interface SetInfo {
  format: typeof SET_FORMAT;
  version: number;
  vm: string;
  createdAt: string;
  /** present when the set is encrypted: every point of it is */
  encryption?: { cipher: 'aes-256-gcm'; kdf: 'hkdf-sha256'; salt: string; keyCheck: string };
}

export interface StoredChunk {
  /** offset of the chunk's plain bytes in the disk (or plain file) */
  o: number;
  /** plain length */
  n: number;
  /** offset of the stored bytes in the payload file */
  at: number;
  /** stored length */
  sz: number;
  /** sha256 (hex) of the stored bytes */
  sha: string;
  /** an explicit run of zeros (incrementals): nothing stored */
  z?: true;
}

export interface PayloadFile {
  /** path relative to the point directory */
  path: string;
  role: 'disk' | 'domain' | 'snapshot' | 'seed' | 'kernel' | 'initrd' | 'state';
  /** plain size (disks: the virtual size) */
  size: number;
  /** size of the stored file */
  stored: number;
  /** version 1: sha256 of the stored file; version 2: fileDigest() of the chunk list */
  sha256: string;
  chunks: StoredChunk[];
}

export interface DiskRecord {
  target: string;
  /** the file in the point (role disk) */
  file: string;
  virtualSize: number;
  format: string;
  sourcePath: string;
  /** a checkpoint (dirty bitmap) covers this disk: its next backup can be incremental */
  bitmap: boolean;
  /** bytes of guest data in this point (non-zero chunks) */
  dataBytes: number;
}

export interface SnapshotRecord {
  name: string;
  file: string;
  /** internal snapshots live inside the qcow2 file (lost by flattening); external ones in overlay files */
  location: 'internal' | 'external' | 'none';
}

export interface Manifest {
  format: typeof SET_FORMAT;
  version: number;
  id: string;
  kind: 'full' | 'incremental';
  parent?: string;
  createdAt: string;
  vm: { name: string; uuid: string; uri: string; state: string };
  template?: string;
  image?: string;
  /** the checkpoint this point created on the host (the next incremental's base) */
  checkpoint?: string;
  consistency: { quiesced: boolean; how: string };
  compression: 'none' | 'gzip';
  encrypted: boolean;
  chunkSize: number;
  disks: DiskRecord[];
  snapshots: SnapshotRecord[];
  files: PayloadFile[];
  /** sum of stored bytes */
  storedBytes: number;
  durationMs: number;
}

/**
 * The digest of a version 2 payload file: SHA-256 over its chunk list (offset, plain length, where
 * stored, stored length, the stored bytes' SHA-256, zero flag), one line per chunk. Together with
 * each chunk's own checksum and the chunks lying back to back up to `stored`, it covers every
 * stored byte and the file's layout.
 */
export function fileDigest(chunks: readonly StoredChunk[]): string {
  const h = createHash('sha256');
  for (const c of chunks) h.update(`${c.o} ${c.n} ${c.at} ${c.sz} ${c.sha} ${c.z ? 1 : 0}\n`);
  return h.digest('hex');
}

export function setInfoPath(dir: string): string {
  return join(dir, 'set.json');
}

export function pointsDir(dir: string): string {
  return join(dir, 'points');
}

export function pointDir(dir: string, id: string): string {
  return join(pointsDir(dir), id);
}

export function partialDir(dir: string, id: string): string {
  return join(pointsDir(dir), `.partial-${id}`);
}

/** A sortable point id: 20261201T215301123Z-full */
export function newPointId(kind: 'full' | 'incremental', now = new Date()): string {
  return `${now.toISOString().replace(/[-:.]/g, '')}-${kind === 'full' ? 'full' : 'inc'}`;
}

const POINT_ID_RE = /^\d{8}T\d{9}Z-(full|inc)$/;

export function writePrivateFile(path: string, data: string | Buffer): void {
  writeFileSync(path, data, { mode: 0o600 });
  chmodSync(path, 0o600);
}

export function readSetInfo(dir: string): SetInfo | undefined {
  const p = setInfoPath(dir);
  if (!existsSync(p)) return undefined;
  let info: SetInfo;
  try {
    info = JSON.parse(readFileSync(p, 'utf8')) as SetInfo;
  } catch (e) {
    throw new VmctlError('INVALID_INPUT', `${p} is not a vmctl backup set description: ${(e as Error).message}`, { cause: e });
  }
  if (info.format !== SET_FORMAT) throw new VmctlError('INVALID_INPUT', `${dir} is not a vmctl backup set (${p} says format ${JSON.stringify(info.format)})`);
  if (!READABLE_SET_VERSIONS.includes(info.version)) {
    throw new VmctlError('UNSUPPORTED', `${dir} is a version ${info.version} backup set; this vmctl reads versions ${READABLE_SET_VERSIONS.join(' and ')}`, { hint: 'use the vmctl that made the set, or back up into a new directory' });
  }
  return info;
}

export function requireSet(dir: string): SetInfo {
  const info = readSetInfo(dir);
  if (!info) throw new VmctlError('NOT_FOUND', `${dir} is not a vmctl backup set (no set.json)`, { hint: 'vmctl backup VM --to DIR makes one' });
  return info;
}

export function initSet(dir: string, info: SetInfo): void {
  ensurePrivateDir(dir);
  ensurePrivateDir(pointsDir(dir));
  const tmp = `${setInfoPath(dir)}.tmp`;
  writePrivateFile(tmp, JSON.stringify(info, null, 2) + '\n');
  renameSync(tmp, setInfoPath(dir));
}

export function ensurePrivateSubdir(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o700);
}

export function readManifest(dir: string, id: string): Manifest {
  const p = join(pointDir(dir, id), 'manifest.json');
  let m: Manifest;
  try {
    m = JSON.parse(readFileSync(p, 'utf8')) as Manifest;
  } catch (e) {
    throw new VmctlError('INVALID_INPUT', `backup point ${id}: cannot read ${p}: ${(e as Error).message}`, { cause: e, details: { file: p } });
  }
  if (m.format !== SET_FORMAT || m.id !== id) throw new VmctlError('INVALID_INPUT', `backup point ${id}: ${p} is not its manifest`, { details: { file: p } });
  return m;
}

/** Point ids in the set, oldest first; partial points (being written, or left by a killed run) separately. */
export function listPointIds(dir: string): { ids: string[]; partial: string[] } {
  const pd = pointsDir(dir);
  if (!existsSync(pd)) return { ids: [], partial: [] };
  const entries = readdirSync(pd);
  return {
    ids: entries.filter((e) => POINT_ID_RE.test(e)).sort(),
    partial: entries.filter((e) => e.startsWith('.partial-')).map((e) => e.slice('.partial-'.length)),
  };
}

/** The points from the full one up to `id` (oldest first); throws naming a missing link. */
export function chainOf(manifests: Map<string, Manifest>, id: string): Manifest[] {
  const chain: Manifest[] = [];
  const first = manifests.get(id);
  if (!first) throw new VmctlError('NOT_FOUND', `no backup point ${id} in the set`, { hint: 'vmctl backup list DIR shows the points' });
  const seen = new Set<string>();
  let cur: Manifest = first;
  for (;;) {
    if (seen.has(cur.id)) throw new VmctlError('INVALID_INPUT', `backup point ${cur.id}: its chain loops`);
    seen.add(cur.id);
    chain.unshift(cur);
    if (cur.kind === 'full') return chain;
    const parentId: string | undefined = cur.parent;
    const parent: Manifest | undefined = parentId ? manifests.get(parentId) : undefined;
    if (!parent) {
      throw new VmctlError('INVALID_INPUT', `backup point ${cur.id} is incremental on ${parentId ?? '(none)'}, which is not in the set: its chain is broken`, {
        details: { point: cur.id, missing: parentId },
      });
    }
    cur = parent;
  }
}
