/**
 * Locating the libvirt source tree and its versions.
 *
 * LIBVIRT_SOURCE=<dir> overrides everything; otherwise
 * scripts/codegen/fetch-libvirt-source.sh (idempotent) provides
 * .cache/libvirt-src/libvirt-<ver> and prints its path.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CodegenError } from './ast.js';

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const FETCH_SCRIPT = join(REPO_ROOT, 'scripts', 'codegen', 'fetch-libvirt-source.sh');

export interface LibvirtSource {
  readonly dir: string;
  /** upstream version from meson.build, e.g. 9.0.0 */
  readonly version: string;
  /** Debian package version, e.g. 9.0.0-4+deb12u2; null when not known */
  readonly debianVersion: string | null;
}

/** Find (fetching if needed) the libvirt source directory. */
export function locateLibvirtSource(opts: { quiet?: boolean } = {}): string {
  const env = process.env['LIBVIRT_SOURCE'];
  if (env) {
    const dir = resolve(env);
    if (!existsSync(join(dir, 'src', 'remote', 'remote_protocol.x'))) {
      throw new CodegenError(`LIBVIRT_SOURCE=${env}: no src/remote/remote_protocol.x there`);
    }
    return dir;
  }
  let out: string;
  try {
    out = execFileSync('bash', [FETCH_SCRIPT], {
      cwd: REPO_ROOT,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', opts.quiet ? 'pipe' : 'inherit'],
      maxBuffer: 1 << 20,
    });
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    throw new CodegenError(`${FETCH_SCRIPT} failed: ${err.stderr?.trim() || err.message}`);
  }
  const lines = out.trim().split('\n');
  const dir = lines[lines.length - 1]?.trim() ?? '';
  if (!dir || !existsSync(join(dir, 'src', 'remote', 'remote_protocol.x'))) {
    throw new CodegenError(`${FETCH_SCRIPT} printed '${dir}', which is not a libvirt source tree`);
  }
  return dir;
}

export function readUpstreamVersion(dir: string): string {
  const meson = readFileSync(join(dir, 'meson.build'), 'utf8');
  const m = /\bproject\s*\(\s*'libvirt'[\s\S]*?\bversion\s*:\s*'([^']+)'/.exec(meson);
  if (!m) throw new CodegenError(`${dir}/meson.build: no "version:" in project()`);
  return m[1] as string;
}

/** debian/changelog inside the tree, else a libvirt_<ver>-*.dsc next to it. */
export function readDebianVersion(dir: string, upstream: string): string | null {
  const changelog = join(dir, 'debian', 'changelog');
  if (existsSync(changelog)) {
    const m = /^libvirt \(([^)]+)\)/.exec(readFileSync(changelog, 'utf8'));
    if (m) return m[1] as string;
  }
  const parent = dirname(dir);
  const found: string[] = [];
  for (const f of readdirSync(parent).sort()) {
    if (!f.startsWith('libvirt_') || !f.endsWith('.dsc')) continue;
    const text = readFileSync(join(parent, f), 'utf8');
    if (!/^Source:\s*libvirt\s*$/m.test(text)) continue;
    const v = /^Version:\s*(\S+)\s*$/m.exec(text)?.[1];
    if (v === undefined) continue;
    const noEpoch = v.replace(/^\d+:/, '');
    if (noEpoch === upstream || noEpoch.startsWith(`${upstream}-`)) found.push(v);
  }
  if (found.length > 1) throw new CodegenError(`${parent}: several .dsc files for libvirt ${upstream}: ${found.join(', ')}`);
  return found[0] ?? null;
}

export function describeSource(dir: string): LibvirtSource {
  const version = readUpstreamVersion(dir);
  return { dir, version, debianVersion: readDebianVersion(dir, version) };
}
