/**
 * Once per vitest run, before any test file: remove what a killed earlier run
 * of the suite left on the main libvirtd (leftovers.ts), then build the shared
 * default guest image if it is not cached yet (.cache/images, gitignored).
 * Building takes a minute or more; doing it here keeps it out of tests that
 * hold libvirt connections open (a blocked event loop cannot answer keepalive pings).
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { sweepLeftovers } from './leftovers.js';
import { ensureBuilt } from './vmctl.js';

const repoRoot = fileURLToPath(new URL('../..', import.meta.url));

export default async function setup(): Promise<void> {
  ensureBuilt();
  await sweepLeftovers(join(repoRoot, 'test', 'fixtures', 'labs'));
  const manifest = join(repoRoot, '.cache', 'images', 'debian-12.qcow2.json');
  if (existsSync(manifest)) return;
  process.stderr.write('[global-setup] building the shared debian-12 test image (once; cached in .cache/images)\n');
  await new Promise<void>((resolve, reject) => {
    const child = spawn('bash', [join(repoRoot, 'scripts', 'build-image.sh'), 'debian-12'], { stdio: ['ignore', 'ignore', 'inherit'] });
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`scripts/build-image.sh debian-12 failed with exit code ${code}`))));
  });
}
