/**
 * Where an import reads from: a local file (with its manifest, kernel and
 * initrd next to it) or an http(s) URL, downloaded into a private temp dir of
 * the cache (hashed on the way) and removed afterwards.
 */
import { createHash } from 'node:crypto';
import { createWriteStream, existsSync } from 'node:fs';
import { mkdtemp, open, rm, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { fileURLToPath } from 'node:url';
import { VmctlError } from '../errors.js';
import { quote, resolveUserPath } from '../names.js';
import { cacheDir, ensurePrivateDir } from '../paths.js';
import { MAX_MANIFEST_BYTES, parseBuildManifest } from './inspect.js';
import { isAbort, Meter, tapped } from './progress.js';
import type { ImageManifest, ImageOpOptions, ImageVolumeKind } from './types.js';

export interface LocalFile {
  path: string;
  size: number;
  /** known when it was computed on the way (download) */
  sha256?: string;
}

export interface PreparedSource {
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

export async function prepareFileSource(path: string): Promise<PreparedSource> {
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

export async function prepareUrlSource(url: URL, image: string, expectedSha: string | undefined, opts: ImageOpOptions): Promise<PreparedSource> {
  const tmpRoot = join(cacheDir(), 'tmp');
  ensurePrivateDir(tmpRoot);
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

export function shaMismatch(what: string, expected: string, actual: string): VmctlError {
  return new VmctlError('INVALID_INPUT', `sha256 mismatch for ${what}: expected ${expected}, got ${actual}`, {
    hint: 'the file is corrupt or not the one you meant; nothing was imported',
    details: { expectedSha256: expected, actualSha256: actual },
  });
}

export function parseSource(source: string): { kind: 'url'; url: URL } | { kind: 'file'; path: string } {
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
