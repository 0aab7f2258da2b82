/**
 * npm run bench:lab [-- --rounds 1]
 *
 * `vmctl lab up` of a 3-VM lab (bench/labs/three.yaml: the default template,
 * 384 MiB each, one isolated lab network; lab up also takes its baseline
 * snapshot) against three sequential `vmctl create NAME --memory 384MiB
 * --wait ssh` of the same VMs (each to sshd and cloud-init done, as lab up
 * waits), in the same run, alternating which goes first. Target: lab up ≥ 1.8×
 * faster. Under TCG on 2 cores three guests booting at once share two CPUs, so
 * the bound is ~2× at best; the figure is reported as measured.
 */
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { median, runTimed } from './lib.js';

const { values } = parseArgs({ options: { rounds: { type: 'string', default: '1' } } });
const rounds = Number(values.rounds);
const repo = fileURLToPath(new URL('..', import.meta.url));
const bin = join(repo, 'bin', 'vmctl.js');
const env = { ...process.env, VMCTL_CACHE_DIR: process.env.VMCTL_CACHE_DIR ?? join(repo, '.cache'), LIBVIRT_DEFAULT_URI: 'qemu:///system' };
const vmctl = (...a: string[]) => runTimed(process.execPath, [bin, ...a], env);
const must = (r: { code: number; err: string }, what: string) => {
  if (r.code !== 0) throw new Error(`${what} failed: ${r.err.trim().split('\n').slice(-3).join(' / ')}`);
};

async function labUp(): Promise<number> {
  const r = await vmctl('lab', 'up', join(repo, 'bench/labs/three.yaml'), '--prefix', 'bench', '--accel', 'tcg', '--progress', 'none');
  must(r, 'lab up');
  must(await vmctl('lab', 'down', 'three', '--prefix', 'bench', '--progress', 'none'), 'lab down');
  return r.ms;
}

async function sequential(): Promise<number> {
  let ms = 0;
  const names = [1, 2, 3].map((i) => `bench-seq-${i}`);
  try {
    for (const n of names) {
      const r = await vmctl('create', n, '--memory', '384MiB', '--accel', 'tcg', '--wait', 'ssh', '--progress', 'none');
      must(r, `create ${n}`);
      ms += r.ms;
    }
  } finally {
    for (const n of names) await vmctl('delete', n, '--progress', 'none');
  }
  return ms;
}

const lab: number[] = [];
const seq: number[] = [];
for (let r = 0; r < rounds; r++) {
  for (const which of r % 2 === 0 ? (['seq', 'lab'] as const) : (['lab', 'seq'] as const)) {
    const ms = which === 'lab' ? await labUp() : await sequential();
    (which === 'lab' ? lab : seq).push(ms);
    console.error(`[bench] round ${r + 1} ${which === 'lab' ? 'lab up (3 VMs)' : '3 × create --wait ssh'}: ${(ms / 1000).toFixed(1)} s`);
  }
}
const l = median(lab);
const s = median(seq);
console.log(`lab up of 3 VMs: ${(l / 1000).toFixed(1)} s (median of ${lab.length})`);
console.log(`3 sequential creates: ${(s / 1000).toFixed(1)} s (median of ${seq.length})`);
console.log(`speed-up: ${(s / l).toFixed(2)}× (target ≥ 1.8×)`);
