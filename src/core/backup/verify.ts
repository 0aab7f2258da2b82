/**
 * `vmctl backup list | verify | prune DIR`: reading a backup set. verify
 * recomputes every checksum (per chunk and per file), checks sizes and the
 * chain of incrementals, and with the key also authenticates every chunk and
 * the manifests; each problem names the file and the offset.
 */
import { createHash } from 'node:crypto';
import { existsSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { VmctlError } from '../errors.js';
import { manifestMac, openEncryption, PayloadReader, type Codec, type DerivedKeys } from './chunks.js';
import { chainOf, fileDigest, listPointIds, pointDir, readManifest, requireSet, type Manifest, type SetInfo } from './format.js';

export interface PointSummary {
  id: string;
  kind: 'full' | 'incremental';
  createdAt: string;
  parent?: string;
  /** ids from the full point up to this one */
  chain: string[];
  storedBytes: number;
  dataBytes: number;
  virtualBytes: number;
  consistency: Manifest['consistency'];
  compression: Manifest['compression'];
  encrypted: boolean;
  checkpoint?: string;
}

export interface SetListing {
  dir: string;
  vm: string;
  encrypted: boolean;
  points: PointSummary[];
  /** points whose manifest cannot be read (or whose chain is broken) */
  broken: Array<{ id: string; problem: string }>;
  partial: string[];
}

export function loadManifests(dir: string): { info: SetInfo; manifests: Map<string, Manifest>; broken: Array<{ id: string; problem: string }>; partial: string[] } {
  const info = requireSet(dir);
  const { ids, partial } = listPointIds(dir);
  const manifests = new Map<string, Manifest>();
  const broken: Array<{ id: string; problem: string }> = [];
  for (const id of ids) {
    try {
      manifests.set(id, readManifest(dir, id));
    } catch (e) {
      broken.push({ id, problem: (e as Error).message });
    }
  }
  return { info, manifests, broken, partial };
}

export function listSet(dir: string): SetListing {
  const { info, manifests, broken, partial } = loadManifests(dir);
  const points: PointSummary[] = [];
  for (const m of manifests.values()) {
    let chain: string[] = [];
    try {
      chain = chainOf(manifests, m.id).map((x) => x.id);
    } catch (e) {
      broken.push({ id: m.id, problem: (e as Error).message });
    }
    points.push({
      id: m.id,
      kind: m.kind,
      createdAt: m.createdAt,
      ...(m.parent ? { parent: m.parent } : {}),
      chain,
      storedBytes: m.storedBytes,
      dataBytes: m.disks.reduce((a, d) => a + d.dataBytes, 0),
      virtualBytes: m.disks.reduce((a, d) => a + d.virtualSize, 0),
      consistency: m.consistency,
      compression: m.compression,
      encrypted: m.encrypted,
      ...(m.checkpoint ? { checkpoint: m.checkpoint } : {}),
    });
  }
  return { dir, vm: info.vm, encrypted: info.encryption !== undefined, points, broken, partial };
}

export interface Problem {
  point: string;
  file?: string;
  offset?: number;
  problem: string;
}

export interface VerifyResult {
  dir: string;
  ok: boolean;
  points: number;
  files: number;
  chunks: number;
  bytes: number;
  /** with the key: every chunk and manifest authenticated */
  authenticated: boolean;
  problems: Problem[];
}

export function checkManifestMac(m: Manifest & { mac?: string }, keys: DerivedKeys): boolean {
  const { mac, ...rest } = m;
  return mac !== undefined && manifestMac(keys, JSON.stringify(rest)) === mac;
}

/** Check the given points (default: all) of a set. */
export async function verifySet(dir: string, opts: { keyFile?: string; points?: string[]; signal?: AbortSignal } = {}): Promise<VerifyResult> {
  const { info, manifests, broken } = loadManifests(dir);
  const keys = opts.keyFile || !info.encryption ? openEncryption(info, opts.keyFile, dir) : undefined;
  const problems: Problem[] = broken.map((b) => ({ point: b.id, problem: b.problem }));
  const want = opts.points ?? [...manifests.keys()];
  let files = 0;
  let chunks = 0;
  let bytes = 0;
  for (const id of want) {
    const m = manifests.get(id) as (Manifest & { mac?: string }) | undefined;
    if (!m) continue;
    try {
      chainOf(manifests, id);
    } catch (e) {
      problems.push({ point: id, problem: (e as Error).message });
    }
    if (keys && !checkManifestMac(m, keys)) problems.push({ point: id, file: join(pointDir(dir, id), 'manifest.json'), problem: 'manifest authentication failed (tampered)' });
    const codec: Codec = { compress: m.compression === 'gzip', ...(keys ? { key: keys.data } : {}) };
    for (const f of m.files) {
      files++;
      const abs = join(pointDir(dir, id), f.path);
      if (!existsSync(abs)) {
        problems.push({ point: id, file: abs, offset: 0, problem: 'missing' });
        continue;
      }
      const size = statSync(abs).size;
      if (size < f.stored) {
        const first = f.chunks.find((c) => c.at + c.sz > size);
        problems.push({ point: id, file: abs, offset: first?.o ?? 0, problem: `truncated: ${size} of ${f.stored} bytes (chunks from disk offset ${first?.o ?? 0}, file offset ${size}, are missing)` });
      } else if (size > f.stored) {
        problems.push({ point: id, file: abs, offset: f.stored, problem: `${size - f.stored} unexpected bytes after file offset ${f.stored}` });
      }
      const v1 = (m.version ?? 1) < 2;
      if (!v1) {
        // version 2: the file's digest is that of its chunk list, whose chunks lie back to back
        if (fileDigest(f.chunks) !== f.sha256) problems.push({ point: id, file: abs, problem: 'chunk list checksum mismatch (the manifest was altered)' });
        let at = 0;
        for (const c of f.chunks) {
          if (c.at !== at) {
            problems.push({ point: id, file: abs, offset: c.o, problem: `chunk at offset ${c.o} is stored at file offset ${c.at}, not ${at} (the manifest was altered)` });
            break;
          }
          at += c.sz;
        }
        if (at !== f.stored) problems.push({ point: id, file: abs, offset: f.stored, problem: `the chunks take ${at} bytes, the manifest says the file holds ${f.stored}` });
      }
      const r = await PayloadReader.open(abs, f, `${id}/${f.path}`, codec);
      const whole = v1 ? createHash('sha256') : undefined;
      let wholeOk = true;
      try {
        for (let i = 0; i < f.chunks.length; i++) {
          if (opts.signal?.aborted) throw new VmctlError('ABORTED', 'verify interrupted');
          const c = f.chunks[i]!;
          if (c.z) continue;
          chunks++;
          if (c.at + c.sz > size) break; // reported as truncated above
          try {
            const stored = await r.stored(i);
            whole?.update(stored);
            bytes += stored.length;
            if (keys || !info.encryption) await r.plain(i);
          } catch (e) {
            wholeOk = false;
            const d = (e as VmctlError).details ?? {};
            problems.push({ point: id, file: abs, offset: Number(d.offset ?? c.o), problem: (e as Error).message.replace(`${abs}: `, '') });
          }
        }
      } finally {
        await r.close();
      }
      if (whole && wholeOk && size === f.stored && whole.digest('hex') !== f.sha256) problems.push({ point: id, file: abs, problem: 'file checksum mismatch' });
    }
  }
  return { dir, ok: problems.length === 0, points: want.length, files, chunks, bytes, authenticated: keys !== undefined, problems };
}

export interface PruneResult {
  dir: string;
  kept: string[];
  removed: string[];
  /** kept only because a kept incremental needs them */
  keptForChains: string[];
}

/** Keep the newest `keepLast` points and every point their chains need; remove the rest. */
export function pruneSet(dir: string, keepLast: number, opts: { dryRun?: boolean } = {}): PruneResult {
  if (!Number.isInteger(keepLast) || keepLast < 1) throw new VmctlError('USAGE', `--keep-last must be a whole number ≥ 1, not ${keepLast}`);
  const { manifests, broken } = loadManifests(dir);
  if (broken.length > 0) {
    throw new VmctlError('INVALID_INPUT', `cannot prune ${dir}: ${broken.map((b) => `${b.id}: ${b.problem}`).join('; ')}`, { hint: 'vmctl backup verify DIR; remove broken points by hand' });
  }
  const ids = [...manifests.keys()].sort();
  const newest = ids.slice(-keepLast);
  const keep = new Set<string>();
  const forChains: string[] = [];
  for (const id of newest) {
    for (const m of chainOf(manifests, id)) {
      if (!keep.has(m.id) && !newest.includes(m.id)) forChains.push(m.id);
      keep.add(m.id);
    }
  }
  const removed = ids.filter((id) => !keep.has(id));
  // newest first: an interrupted prune never leaves an incremental without its parent
  if (!opts.dryRun) for (const id of [...removed].reverse()) rmSync(pointDir(dir, id), { recursive: true, force: true });
  return { dir, kept: ids.filter((id) => keep.has(id)), removed, keptForChains: forChains.sort() };
}
