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

export interface RunningVmctl {
  readonly pid: number | undefined;
  /** what it wrote to stderr so far */
  stderr(): string;
  /** resolves once stderr contains `text` (fails after timeoutMs) */
  waitFor(text: string, timeoutMs?: number): Promise<void>;
  kill(sig: NodeJS.Signals): void;
  /** its exit code (128 when a signal ended it) */
  done: Promise<number>;
}

/** Start vmctl in the background, e.g. to act while it sits at a VMCTL_FAULT sleep point. */
export function startVmctl(args: string[], env: NodeJS.ProcessEnv = {}): RunningVmctl {
  ensureBuilt();
  const child = spawn(process.execPath, [join(repoRoot, 'bin', 'vmctl.js'), ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  child.stdout.resume();
  const done = new Promise<number>((res) => child.on('close', (code, signal) => res(code ?? (signal ? 128 : 1))));
  return {
    pid: child.pid,
    stderr: () => err,
    async waitFor(text, timeoutMs = 30_000) {
      const end = Date.now() + timeoutMs;
      while (!err.includes(text)) {
        if (Date.now() > end || child.exitCode !== null) throw new Error(`vmctl ${args.join(' ')} did not print ${JSON.stringify(text)}; stderr: ${err}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    },
    kill: (sig) => void child.kill(sig),
    done,
  };
}
