/** Run the built vmctl binary (bin/vmctl.js → dist/bundle/) as a user would. */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from './rig.js';

export interface VmctlResult {
  code: number;
  stdout: string;
  stderr: string;
}

function newestMtime(dir: string): number {
  let newest = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    newest = Math.max(newest, e.isDirectory() ? newestMtime(p) : statSync(p).mtimeMs);
  }
  return newest;
}

let built = false;
/**
 * Build once per test process when the build is missing or older than src/:
 * `npm run build` (tsc → dist/, then the esbuild bundle bin/vmctl.js runs).
 */
export function ensureBuilt(): void {
  if (built) return;
  const bundle = join(repoRoot, 'dist', 'bundle', 'vmctl.mjs');
  if (!existsSync(bundle) || newestMtime(join(repoRoot, 'src')) > Math.min(newestMtime(join(repoRoot, 'dist')), statSync(bundle).mtimeMs)) {
    execFileSync('npm', ['run', '--silent', 'build'], { cwd: repoRoot, stdio: 'inherit' });
  }
  built = true;
}

export function vmctl(args: string[], opts: { env?: NodeJS.ProcessEnv; input?: string; timeoutMs?: number } = {}): Promise<VmctlResult> {
  ensureBuilt();
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(repoRoot, 'bin', 'vmctl.js'), ...args], {
      env: { ...process.env, ...opts.env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 120_000);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? (signal ? 128 : 1), stdout, stderr });
    });
    child.stdin.end(opts.input ?? '');
  });
}
