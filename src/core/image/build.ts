/**
 * `vmctl image build`: runs scripts/build-image.sh (debootstrap, as root) into
 * the build cache (cacheDir()/images, owner-only), then imports the result.
 */
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, lstatSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Connection } from '../../libvirt/connection.js';
import { VmctlError } from '../errors.js';
import { assertImageName, quote } from '../names.js';
import { packagePath } from '../package-root.js';
import { builtImagePath, ensurePrivateDir } from '../paths.js';
import { findImage, inUseError } from './catalog.js';
import { importImage } from './import.js';
import { abortedError } from './progress.js';
import {
  BUILD_PROFILES,
  BUILDABLE_IMAGES,
  DEFAULT_IMAGE,
  isBuildableImage,
  logFn,
  type BuildableImage,
  type BuildImageOptions,
  type BuildProfile,
  type ImageInfo,
} from './types.js';

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

export interface BuildPlan {
  readonly image: BuildableImage;
  readonly profile: BuildProfile;
  /** the image's name in the pool and in the build cache: NAME (tuned) or NAME-stock */
  readonly poolName: string;
  /** the qcow2 the script writes (builtImagePath(poolName)) */
  readonly out: string;
  /** arguments after the script's path */
  readonly args: readonly string[];
}

/** What `vmctl image build NAME [--profile P]` builds, where, and under which name it is imported. */
export function buildPlan(name: string = DEFAULT_IMAGE, profile: string = 'tuned'): BuildPlan {
  const image = assertBuildable(name);
  if (!(BUILD_PROFILES as readonly string[]).includes(profile)) {
    throw new VmctlError('INVALID_INPUT', `unknown build profile ${quote(profile)}`, { hint: `use one of: ${BUILD_PROFILES.join(', ')}` });
  }
  const p = profile as BuildProfile;
  const poolName = p === 'tuned' ? image : `${image}-${p}`;
  const out = builtImagePath(poolName);
  return { image, profile: p, poolName, out, args: [image, '--out', out, '--profile', p] };
}

/**
 * Runs scripts/build-image.sh NAME --profile P --out builtImagePath(NAME[-P]) (the build cache,
 * an owner-only directory; the outputs are made 0600); resolves to the manifest
 * path. Does not touch libvirt.
 */
export async function buildImageFiles(name: string = DEFAULT_IMAGE, opts: Omit<BuildImageOptions, 'force'> = {}): Promise<string> {
  const { image, out, args } = buildPlan(name, opts.profile);
  const script = opts.script ?? buildScriptPath();
  if (!existsSync(script)) throw new VmctlError('NOT_FOUND', `the image build script is missing: ${script}`, { hint: 'reinstall vmctl' });
  ensurePrivateDir(dirname(out));
  opts.signal?.throwIfAborted();
  const child = spawn('bash', [script, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
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
  privateBuildOutputs(out);
  return manifest;
}

/** The files of a built image in the cache: disk, manifest, kernel, initrd. */
export function builtImageFiles(out: string): string[] {
  return [out, `${out}.json`, `${out}.vmlinuz`, `${out}.initrd`];
}

/** Makes the build's outputs owner-only (0600), whatever mode the script left them with (never through a symlink). */
function privateBuildOutputs(out: string): void {
  for (const f of builtImageFiles(out)) {
    if (existsSync(f) && lstatSync(f).isFile()) chmodSync(f, 0o600);
  }
}

/** Builds image `name` (only debian-12) with a profile into the build cache, then imports it (as NAME, or NAME-stock). */
export async function buildImage(conn: Connection, name: string = DEFAULT_IMAGE, opts: BuildImageOptions = {}): Promise<ImageInfo> {
  const { poolName: image, out } = buildPlan(name, opts.profile);
  // refuse before a long build that could not be imported anyway
  const existing = await findImage(conn, image);
  if (existing && !opts.force) {
    throw new VmctlError('ALREADY_EXISTS', `image ${quote(image)} already exists in pool 'vmctl' on ${conn.uri.original}`, {
      hint: `rebuild and replace it with --force, or remove it first: vmctl image rm ${image}`,
    });
  }
  if (existing && (existing.inUseBy.length || existing.usedByDomains.length)) throw inUseError(image, existing.inUseBy, existing.usedByDomains);
  await buildImageFiles(name, opts);
  return importImage(conn, { ...opts, source: out, name: image, force: opts.force === true });
}
