/** Small helpers shared by the benchmarks (medians and timed runs: lib.ts). */
import { execFileSync } from 'node:child_process';

export { median } from './lib.js';

/** virsh on the system daemon, output as text (throws on failure) */
export const virsh = (...a: string[]): string => execFileSync('virsh', ['-c', 'qemu:///system', ...a], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
