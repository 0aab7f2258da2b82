/**
 * The vmctl installation's root: the nearest directory above this module that
 * holds vmctl's package.json. Files shipped beside the code (vm-templates/,
 * cloud-init/, scripts/, package.json) are found from here, so the same code
 * works from src/core (tsx, vitest), dist/core (tsc) and dist/bundle (the
 * esbuild bundle, where every module is a chunk one level below dist/).
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

let cached: { dir: string; pkg: { name: string; version: string } } | undefined;

function find(): { dir: string; pkg: { name: string; version: string } } {
  if (cached) return cached;
  const start = dirname(fileURLToPath(import.meta.url));
  for (let dir = start; ; ) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: unknown; version?: unknown };
      if (pkg.name === 'vmctl') return (cached = { dir, pkg: { name: pkg.name, version: String(pkg.version) } });
    } catch {
      // no (readable) package.json here: keep walking up
    }
    const up = dirname(dir);
    if (up === dir) throw new Error(`vmctl: no package.json named "vmctl" in ${start} or any directory above it (broken installation?)`);
    dir = up;
  }
}

/** Absolute path of the package root (no trailing slash). */
export function packageRoot(): string {
  return find().dir;
}

/** Absolute path of a file or directory shipped in the package, e.g. packagePath('vm-templates'). */
export function packagePath(...segments: string[]): string {
  return join(find().dir, ...segments);
}

/** vmctl's version from its package.json. */
export function packageVersion(): string {
  return find().pkg.version;
}
