/**
 * What a killed earlier run of this suite left on the main libvirtd (the machine CI runs on is
 * reused: a run stopped half-way leaves its guests running, eating the cores the next run needs,
 * and its fixed names taken). Found precisely, never by name alone: every test keeps vmctl's
 * client state in a directory of its own under the temp dir (`vmctl-*`, removed by its afterAll),
 * so a VM whose state is still in such a directory when a new run begins was made by a test that
 * never finished. Labs likewise: a lab whose VMs are among those, or whose file is one of the
 * suite's fixtures. They are removed with vmctl's own commands (lab down, delete), as a user
 * would, each named on stderr; a VM vmctl did not make is refused by delete and left alone.
 */
import { connectionId } from '../../src/core/paths.js';
import { existsSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { vmctl } from './vmctl.js';

const URI = 'qemu:///system';
const say = (m: string) => process.stderr.write(`[leftovers] ${m}\n`);
const isDir = (p: string) => {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
};

/** VM state dirs for the main daemon in the suite's temp dirs: data dir → VM names */
export function staleStateDirs(root = tmpdir()): Map<string, string[]> {
  const out = new Map<string, string[]>();
  const cid = connectionId(URI);
  for (const top of readdirSync(root)) {
    if (!top.startsWith('vmctl-') || !isDir(join(root, top))) continue;
    // the data dir is the temp dir itself or one level down (work/data)
    const candidates = [join(root, top), ...readdirSync(join(root, top)).map((e) => join(root, top, e)).filter(isDir)];
    for (const data of candidates) {
      const vms = join(data, 'vms', cid);
      if (!isDir(vms)) continue;
      const names = readdirSync(vms).filter((n) => isDir(join(vms, n)));
      if (names.length > 0) out.set(data, names);
    }
  }
  return out;
}

async function json<T>(args: string[], env: NodeJS.ProcessEnv): Promise<T | undefined> {
  const r = await vmctl([...args, '--json'], { env, timeoutMs: 120_000 });
  if (r.code !== 0) return undefined;
  return JSON.parse(r.stdout) as T;
}

export async function sweepLeftovers(repoFixtures: string): Promise<void> {
  const stale = staleStateDirs();
  const base: NodeJS.ProcessEnv = { LIBVIRT_DEFAULT_URI: URI };
  const labs = (await json<{ id: string; lab: string; prefix: string; file: string }[]>(['lab', 'list'], base)) ?? [];
  const staleVms = new Map<string, string>(); // VM name → its data dir
  for (const [data, names] of stale) for (const n of names) staleVms.set(n, data);
  const domains = async () => new Set((await json<{ name: string }[]>(['list', '--all'], base))?.map((d) => d.name) ?? []);

  for (const l of labs) {
    const st = await json<{ vmStates: { name: string }[] }>(['lab', 'status', l.lab, '--prefix', l.prefix], base);
    const dataOf = st?.vmStates.map((v) => staleVms.get(v.name)).find((d) => d !== undefined);
    const fixture = l.file.includes('/test/fixtures/labs/') || l.file.startsWith(repoFixtures);
    if (!dataOf && !fixture) continue;
    say(`lab ${l.id} was left by an earlier test run: vmctl lab down ${l.lab} --prefix ${l.prefix}`);
    const r = await vmctl(['lab', 'down', l.lab, '--prefix', l.prefix], { env: { ...base, ...(dataOf ? { VMCTL_DATA_DIR: dataOf } : {}) }, timeoutMs: 300_000 });
    if (r.code !== 0) say(`  lab down failed: ${r.stderr.trim()}`);
  }
  const kept = new Set<string>();
  const left = await domains();
  for (const [name, data] of staleVms) {
    if (!left.has(name)) continue;
    say(`VM ${name} was left by an earlier test run (its state is in ${data}): vmctl delete ${name}`);
    const r = await vmctl(['delete', name], { env: { ...base, VMCTL_DATA_DIR: data }, timeoutMs: 300_000 });
    if (r.code !== 0) {
      say(`  delete failed: ${r.stderr.trim()}`);
      kept.add(data);
    }
  }
  // the temp dirs of tests that never finished (kept where a VM could not be removed)
  for (const data of stale.keys()) {
    if (kept.has(data)) continue;
    const top = join(tmpdir(), data.slice(tmpdir().length + 1).split('/')[0]!);
    if (existsSync(top)) rmSync(top, { recursive: true, force: true });
  }
}
