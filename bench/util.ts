/** Small helpers shared by the benchmarks. */
import { execFileSync } from 'node:child_process';

/** virsh on the system daemon, output as text (throws on failure) */
export const virsh = (...a: string[]): string => execFileSync('virsh', ['-c', 'qemu:///system', ...a], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export function median(xs: number[]): number {
  const a = [...xs].sort((x, y) => x - y);
  const m = a.length >> 1;
  return a.length % 2 ? a[m]! : (a[m - 1]! + a[m]!) / 2;
}
