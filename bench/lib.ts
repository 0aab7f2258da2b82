/** What the benchmarks share: medians and timed child processes. */
import { spawn } from 'node:child_process';

export const median = (xs: number[]): number => {
  const a = [...xs].sort((x, y) => x - y);
  const m = a.length >> 1;
  return a.length % 2 ? a[m]! : (a[m - 1]! + a[m]!) / 2;
};

export interface Timed {
  ms: number;
  code: number;
  out: string;
  err: string;
}

/** Run a command to its end: wall time, exit code, stdout, stderr. */
export function runTimed(cmd: string, args: string[], env: NodeJS.ProcessEnv): Promise<Timed> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const c = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    c.stdout.on('data', (d: Buffer) => (out += d.toString()));
    c.stderr.on('data', (d: Buffer) => (err += d.toString()));
    c.on('error', reject);
    c.on('close', (code) => resolve({ ms: performance.now() - t0, code: code ?? 1, out, err }));
  });
}
