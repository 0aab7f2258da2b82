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
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { median, runTimed } from './lib.js';

const { values } = parseArgs({ options: { rounds: { type: 'string', default: '1' }, cpus: { type: 'string' } } });
const rounds = Number(values.rounds);
// --cpus N: both sides' VMs get N vCPUs (the lab file through a copy with `cpus: N`), else the default template's
const cpus = values.cpus === undefined ? undefined : Number(values.cpus);
const repo = fileURLToPath(new URL('..', import.meta.url));
const bin = join(repo, 'bin', 'vmctl.js');
const env = { ...process.env, VMCTL_CACHE_DIR: process.env.VMCTL_CACHE_DIR ?? join(repo, '.cache'), LIBVIRT_DEFAULT_URI: 'qemu:///system' };
const vmctl = (...a: string[]) => runTimed(process.execPath, [bin, ...a], env);
const must = (r: { code: number; err: string }, what: string) => {
  if (r.code !== 0) throw new Error(`${what} failed: ${r.err.trim().split('\n').slice(-3).join(' / ')}`);
};

function labFile(): string {
  const file = join(repo, 'bench/labs/three.yaml');
  if (cpus === undefined) return file;
  const doc = parseYaml(readFileSync(file, 'utf8')) as { vms: Record<string, unknown>[] };
  for (const vm of doc.vms) vm.cpus = cpus;
  const copy = join(mkdtempSync(join(tmpdir(), 'bench-lab-')), 'three.yaml');
  writeFileSync(copy, stringifyYaml(doc));
  return copy;
}

async function labUp(): Promise<number> {
  const r = await vmctl('lab', 'up', labFile(), '--prefix', 'bench', '--accel', 'tcg', '--progress', 'none');
  must(r, 'lab up');
  must(await vmctl('lab', 'down', 'three', '--prefix', 'bench', '--progress', 'none'), 'lab down');
  return r.ms;
}

async function sequential(): Promise<number> {
  let ms = 0;
  const names = [1, 2, 3].map((i) => `bench-seq-${i}`);
  try {
    for (const n of names) {
      const r = await vmctl('create', n, '--memory', '384MiB', ...(cpus !== undefined ? ['--cpus', String(cpus)] : []), '--accel', 'tcg', '--wait', 'ssh', '--progress', 'none');
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
console.log(`vCPUs per VM: ${cpus ?? 'the default template\'s'}; load average ${loadavg().map((x) => x.toFixed(1)).join(' ')}`);
console.log(`lab up of 3 VMs: ${(l / 1000).toFixed(1)} s (median of ${lab.length})`);
console.log(`3 sequential creates: ${(s / 1000).toFixed(1)} s (median of ${seq.length})`);
console.log(`speed-up: ${(s / l).toFixed(2)}× (target ≥ 1.8×)`);
