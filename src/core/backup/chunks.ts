/**
 * How payload bytes are stored: fixed-size chunks, each optionally gzip-compressed
 * and optionally sealed with AES-256-GCM (node:crypto), each with its own random
 * 96-bit nonce and 128-bit tag. The additional authenticated data binds a chunk to
 * its file (point id + path), its index in the file and its plain offset/length,
 * so chunks cannot be reordered, moved or swapped between files or points without
 * failing authentication. The key comes from a key file through HKDF-SHA256 with
 * the set's random salt; a key check value in set.json tells a wrong key apart
 * from tampering. Encrypted manifests carry an HMAC under a key derived the same way.
 *
 * Stored chunk: [nonce 12][ciphertext][tag 16] when encrypted, of
 *               [1 byte: 0 raw / 1 gzip][bytes] when compressed, else the bytes.
 */
import { createCipheriv, createDecipheriv, createHash, createHmac, hkdfSync, randomBytes, timingSafeEqual, type Hash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { gunzipSync, gzipSync } from 'node:zlib';
import { VmctlError } from '../errors.js';
import { fileDigest, SET_VERSION, type PayloadFile, type SetInfo, type StoredChunk } from './format.js';
import { ChunkHasher } from './hasher.js';

export interface Codec {
  compress: boolean;
  key?: Buffer;
}

const INFO_DATA = 'vmctl-backup v1 aes-256-gcm chunk key';
const INFO_MAC = 'vmctl-backup v1 manifest mac key';
const KEY_CHECK = 'vmctl-backup v1 key check';

export interface DerivedKeys {
  data: Buffer;
  mac: Buffer;
}

function readKeyMaterial(keyFile: string): Buffer {
  let ikm: Buffer;
  try {
    ikm = readFileSync(keyFile);
  } catch (e) {
    throw new VmctlError('INVALID_INPUT', `--key-file ${keyFile}: ${(e as Error).message}`, { cause: e });
  }
  if (ikm.length < 32) {
    throw new VmctlError('INVALID_INPUT', `--key-file ${keyFile} holds ${ikm.length} bytes; a backup key needs at least 32 random bytes`, {
      hint: `make one with: head -c 32 /dev/urandom > ${keyFile} && chmod 600 ${keyFile}`,
    });
  }
  return ikm;
}

export function deriveKeys(keyFile: string, saltHex: string): DerivedKeys {
  const ikm = readKeyMaterial(keyFile);
  const salt = Buffer.from(saltHex, 'hex');
  return {
    data: Buffer.from(hkdfSync('sha256', ikm, salt, INFO_DATA, 32)),
    mac: Buffer.from(hkdfSync('sha256', ikm, salt, INFO_MAC, 32)),
  };
}

export function keyCheckValue(keys: DerivedKeys): string {
  return createHmac('sha256', keys.mac).update(KEY_CHECK).digest('hex');
}

/** New encryption parameters for a set (random salt) and the keys. */
export function newEncryption(keyFile: string): { params: NonNullable<SetInfo['encryption']>; keys: DerivedKeys } {
  const salt = randomBytes(16).toString('hex');
  const keys = deriveKeys(keyFile, salt);
  return { params: { cipher: 'aes-256-gcm', kdf: 'hkdf-sha256', salt, keyCheck: keyCheckValue(keys) }, keys };
}

/** The keys of an encrypted set, checked against its key check value. */
export function openEncryption(info: SetInfo, keyFile: string | undefined, dir: string): DerivedKeys | undefined {
  if (!info.encryption) return undefined;
  if (!keyFile) throw new VmctlError('USAGE', `the backup set ${dir} is encrypted`, { hint: 'give its key with --key-file FILE' });
  const keys = deriveKeys(keyFile, info.encryption.salt);
  const check = Buffer.from(keyCheckValue(keys), 'hex');
  const want = Buffer.from(info.encryption.keyCheck, 'hex');
  if (check.length !== want.length || !timingSafeEqual(check, want)) {
    throw new VmctlError('AUTH', `--key-file ${keyFile} is not the key of the backup set ${dir}`, { hint: 'give the key file the set was made with' });
  }
  return keys;
}

export function manifestMac(keys: DerivedKeys, manifestJson: string): string {
  return createHmac('sha256', keys.mac).update(manifestJson).digest('hex');
}

function aad(fileId: string, index: number, o: number, n: number): Buffer {
  return Buffer.from(`vmctl-backup:${fileId}:${index}:${o}:${n}`);
}

export function encodeChunk(codec: Codec, plain: Buffer, fileId: string, index: number, o: number): Buffer {
  let body = plain;
  if (codec.compress) {
    const z = gzipSync(plain, { level: 1 });
    body = z.length < plain.length ? Buffer.concat([Buffer.from([1]), z]) : Buffer.concat([Buffer.from([0]), plain]);
  }
  if (!codec.key) return body;
  const nonce = randomBytes(12);
  const c = createCipheriv('aes-256-gcm', codec.key, nonce);
  c.setAAD(aad(fileId, index, o, plain.length));
  const ct = Buffer.concat([c.update(body), c.final()]);
  return Buffer.concat([nonce, ct, c.getAuthTag()]);
}

export function decodeChunk(codec: Codec, stored: Buffer, fileId: string, index: number, chunk: StoredChunk): Buffer {
  let body = stored;
  if (codec.key) {
    if (stored.length < 28) throw new Error('chunk too short for nonce and tag');
    const d = createDecipheriv('aes-256-gcm', codec.key, stored.subarray(0, 12));
    d.setAAD(aad(fileId, index, chunk.o, chunk.n));
    d.setAuthTag(stored.subarray(stored.length - 16));
    try {
      body = Buffer.concat([d.update(stored.subarray(12, stored.length - 16)), d.final()]);
    } catch {
      throw new Error('authentication failed (tampered, reordered or from another file)');
    }
  }
  let plain = body;
  if (codec.compress) plain = body[0] === 1 ? gunzipSync(body.subarray(1)) : body.subarray(1);
  if (plain.length !== chunk.n) throw new Error(`decodes to ${plain.length} bytes, the manifest says ${chunk.n}`);
  return plain;
}

export const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** Writes in flight per payload file. */
const MAX_WRITES_IN_FLIGHT = 4;

/**
 * Appends chunks to one payload file, recording each in the manifest's form.
 * The chunk's SHA-256 is computed as the chunk goes by (on a hashing thread
 * when its memory can be shared, hasher.ts); the file's digest is that of the
 * chunk list (version 2), or — in a version 1 set only — a running SHA-256 of
 * every stored byte on this thread, the cost version 2 removed; the
 * file writes are queued (a few in flight, in order of
 * offset) so hashing the next chunk overlaps writing this one; the file is
 * fsynced once, by finish() (a background fdatasync every 32 MiB, tried
 * before, made storing 1 GiB 0.2–2.3 s slower in each of 4 paired runs). A
 * failed write fails the next write() or finish().
 */
export class PayloadWriter {
  private readonly chunks: StoredChunk[] = [];
  /** version 1 only: the running SHA-256 of the whole stored file */
  private readonly hash: Hash | undefined;
  private at = 0;
  private readonly inFlight: Array<Promise<void>> = [];
  private failure: Error | undefined;
  private readonly hasher = new ChunkHasher();
  private constructor(
    private readonly fh: FileHandle,
    readonly path: string,
    private readonly fileId: string,
    private readonly codec: Codec,
    version: number,
  ) {
    this.hash = version < 2 ? createHash('sha256') : undefined;
  }

  /** `version`: the set's format version (format.ts), which says what the file's sha256 is. */
  static async create(absPath: string, relPath: string, fileId: string, codec: Codec, version: number = SET_VERSION): Promise<PayloadWriter> {
    return new PayloadWriter(await open(absPath, 'wx', 0o600), relPath, fileId, codec, version);
  }

  /**
   * Store `plain` as the chunk at offset o. `plain` must not change until `done` is called (it may
   * still be being written or hashed); without `done`, it must never change.
   */
  async write(o: number, plain: Buffer, done?: () => void): Promise<number> {
    if (this.failure) throw this.failure;
    const stored = encodeChunk(this.codec, plain, this.fileId, this.chunks.length, o);
    this.hash?.update(stored);
    const chunk: StoredChunk = { o, n: plain.length, at: this.at, sz: stored.length, sha: '' };
    this.chunks.push(chunk);
    const digest = this.hasher.digest(stored).then((sha) => void (chunk.sha = sha));
    this.at += stored.length;
    const settled = Promise.all([this.writeAll(stored, chunk.at), digest]).then(() => undefined);
    this.queue(done ? settled.finally(done) : settled);
    while (this.inFlight.length >= MAX_WRITES_IN_FLIGHT) await this.inFlight.shift();
    if (this.failure) throw this.failure;
    return stored.length;
  }

  private async writeAll(buf: Buffer, at: number): Promise<void> {
    for (let off = 0; off < buf.length; ) {
      const { bytesWritten } = await this.fh.write(buf, off, buf.length - off, at + off);
      off += bytesWritten;
    }
  }

  private queue(p: Promise<void>): void {
    this.inFlight.push(p.catch((e: Error) => void (this.failure ??= e)));
  }

  /** An explicit run of zeros (nothing stored). */
  zero(o: number, n: number): void {
    this.chunks.push({ o, n, at: this.at, sz: 0, sha: '', z: true });
  }

  private async settle(): Promise<void> {
    while (this.inFlight.length > 0) await this.inFlight.shift();
    await this.hasher.close();
  }

  async finish(role: PayloadFile['role'], size: number): Promise<PayloadFile> {
    await this.settle();
    if (this.failure) throw this.failure;
    await this.fh.sync();
    await this.fh.close();
    return { path: this.path, role, size, stored: this.at, sha256: this.hash ? this.hash.digest('hex') : fileDigest(this.chunks), chunks: this.chunks };
  }

  async abort(): Promise<void> {
    await this.settle().catch(() => undefined);
    await this.fh.close().catch(() => undefined);
  }
}

/** A whole small file as one payload file (chunked like the rest). */
export async function writeSmallPayload(
  absPath: string,
  relPath: string,
  fileId: string,
  codec: Codec,
  role: PayloadFile['role'],
  data: Buffer,
  chunkSize: number,
  version: number = SET_VERSION,
): Promise<PayloadFile> {
  const w = await PayloadWriter.create(absPath, relPath, fileId, codec, version);
  try {
    for (let o = 0; o < data.length; o += chunkSize) await w.write(o, data.subarray(o, Math.min(o + chunkSize, data.length)));
    return await w.finish(role, data.length);
  } catch (e) {
    await w.abort();
    throw e;
  }
}

/** Reads and checks the chunks of one payload file. */
export class PayloadReader {
  private constructor(
    private readonly fh: FileHandle,
    readonly file: PayloadFile,
    private readonly fileId: string,
    private readonly codec: Codec,
    readonly absPath: string,
  ) {}

  static async open(absPath: string, file: PayloadFile, fileId: string, codec: Codec): Promise<PayloadReader> {
    return new PayloadReader(await open(absPath, 'r'), file, fileId, codec, absPath);
  }

  /** The stored bytes of chunk i, checked against the manifest's sha256 (throws naming file and offset). */
  async stored(i: number): Promise<Buffer> {
    const c = this.file.chunks[i]!;
    const buf = Buffer.alloc(c.sz);
    const { bytesRead } = c.sz > 0 ? await this.fh.read(buf, 0, c.sz, c.at) : { bytesRead: 0 };
    if (bytesRead < c.sz) throw chunkError(this.absPath, c, `truncated: ${bytesRead} of ${c.sz} stored bytes at file offset ${c.at + bytesRead}`);
    if (sha256(buf) !== c.sha) throw chunkError(this.absPath, c, `checksum mismatch in stored bytes ${c.at}..${c.at + c.sz}`);
    return buf;
  }

  /** Plain bytes of chunk i (zeros for a zero chunk). */
  async plain(i: number): Promise<Buffer> {
    const c = this.file.chunks[i]!;
    if (c.z) return Buffer.alloc(c.n);
    const stored = await this.stored(i);
    try {
      return decodeChunk(this.codec, stored, this.fileId, i, c);
    } catch (e) {
      throw chunkError(this.absPath, c, (e as Error).message);
    }
  }

  async readAll(): Promise<Buffer> {
    const parts: Buffer[] = [];
    for (let i = 0; i < this.file.chunks.length; i++) parts.push(await this.plain(i));
    return Buffer.concat(parts);
  }

  async close(): Promise<void> {
    await this.fh.close();
  }
}

export function chunkError(absPath: string, c: StoredChunk, what: string): VmctlError {
  return new VmctlError('INVALID_INPUT', `${absPath}: chunk at offset ${c.o} (file offset ${c.at}): ${what}`, {
    hint: 'the backup set is damaged; vmctl backup verify DIR lists every problem',
    details: { file: absPath, offset: c.o, fileOffset: c.at },
  });
}
