/**
 * Lab files: find (a shipped lab by name, or a path), parse (YAML with
 * positions), validate (the generated ajv validator, then cross-field rules)
 * and normalise into a LabSpec. Every problem is one line naming the file and
 * the JSON path (or line:col for YAML syntax), as for templates.
 */
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { VmctlError } from '../errors.js';
import { packagePath } from '../package-root.js';
import { describeAjvErrors } from '../template/ajv-errors.js';
import { displayPath, parseTemplateText } from '../template/parse.js';
import { formatProblem, type TemplateProblem } from '../template/problems.js';
import { parseSize } from '../template/size.js';
import { CIDR_RE, LAB_NAME_RE } from './schema.js';
import { validateLabSchema } from './validate.gen.js';

export const SHIPPED_LAB_DIR = packagePath('vm-templates/labs');

export type Localized = string | Record<string, string>;

export interface LabNetworkSpec {
  name: string;
  mode: 'isolated' | 'nat';
  subnet: string;
}

export interface LabVmSpec {
  name: string;
  template: string;
  image?: string;
  count: number;
  cpus?: number;
  memory?: number | string;
  diskSize?: number | string;
  nicModel?: string;
  diskBus?: string;
  after: string[];
  networks: (string | { network: string; address?: string })[];
  cloudInit: { packages: string[]; runcmd: string[]; files: { path: string; content: string; mode: string }[] };
  onCrash?: string;
  watchdog?: string;
  autostart?: boolean;
}

export interface LabCheckSpec {
  name: Localized;
  on: string;
  run: string;
  exit: number;
  output?: string;
  timeout: number;
  hint?: Localized;
}

export interface LabExerciseSpec {
  id: string;
  title: Localized;
  instructions?: Localized;
  checks: LabCheckSpec[];
  solution: { on: string; run: string; timeout: number }[];
}

export interface LabSpec {
  name: string;
  title?: Localized;
  description?: Localized;
  baseline: boolean;
  peers: { name: string; description?: Localized }[];
  limits: { vms: number; memory: number | string };
  networks: LabNetworkSpec[];
  vms: LabVmSpec[];
  exercises: LabExerciseSpec[];
}

export interface LoadedLab {
  spec: LabSpec;
  /** absolute path of the lab file */
  file: string;
  /** shipped with vmctl (its host-side checks run without --trust) */
  shipped: boolean;
  /** SHA-256 of the file's bytes: `lab up` of a changed file is refused while the old one is up */
  sha256: string;
}

function labError(problems: readonly TemplateProblem[]): VmctlError {
  return new VmctlError('INVALID_INPUT', problems.map(formatProblem).join('\n'), {
    hint: 'fix the lab file (vmctl lab validate FILE checks it without making anything)',
    details: { problems: problems.map((p) => ({ ...p })) },
  });
}

/** `two-tier` → the shipped lab; anything with a '/' or ending in .yaml → a file. */
export function findLabFile(nameOrPath: string): { file: string; shipped: boolean } {
  if (!nameOrPath.includes('/') && !/\.ya?ml$/.test(nameOrPath)) {
    if (!LAB_NAME_RE.test(nameOrPath)) {
      throw new VmctlError('INVALID_INPUT', `'${nameOrPath.slice(0, 40)}' is neither a lab name nor a path to a lab file`, { hint: 'vmctl lab available lists the shipped labs' });
    }
    const file = join(SHIPPED_LAB_DIR, `${nameOrPath}.yaml`);
    if (!existsSync(file)) {
      throw new VmctlError('NOT_FOUND', `no shipped lab named '${nameOrPath}'`, { hint: `shipped labs: ${shippedLabs().join(', ') || 'none'}; or give a path to a lab file` });
    }
    return { file, shipped: true };
  }
  const file = resolve(nameOrPath);
  if (!existsSync(file)) throw new VmctlError('NOT_FOUND', `lab file ${nameOrPath} does not exist`, { hint: 'give the path to a lab .yaml file, or a shipped lab name' });
  return { file, shipped: file.startsWith(SHIPPED_LAB_DIR + '/') };
}

export function shippedLabs(): string[] {
  try {
    return readdirSync(SHIPPED_LAB_DIR)
      .filter((f) => f.endsWith('.yaml'))
      .map((f) => basename(f, '.yaml'))
      .sort();
  } catch {
    return [];
  }
}

/** Validate lab text; all problems, nothing thrown. */
export function checkLabText(text: string, source: string): { ok: true; spec: LabSpec } | { ok: false; problems: TemplateProblem[] } {
  const parsed = parseTemplateText(text, source);
  if (!parsed.ok) return parsed;
  const data = structuredClone(parsed.file.data);
  const at = (path: string) => ({ source, ...parsed.file.position(path) });
  if (!validateLabSchema(data)) return { ok: false, problems: describeAjvErrors(validateLabSchema.errors).map((p) => ({ ...at(p.path), ...p })) };
  const spec = data as unknown as LabSpec;
  const problems = semanticProblems(spec).map((p) => ({ ...at(p.path), ...p }));
  return problems.length > 0 ? { ok: false, problems } : { ok: true, spec };
}

function ipToInt(ip: string): number {
  return ip.split('.').reduce((a, o) => a * 256 + Number(o), 0);
}

export function intToIp(n: number): string {
  return [24, 16, 8, 0].map((s) => Math.floor(n / 2 ** s) % 256).join('.');
}

/** network address, broadcast and prefix length of a subnet */
export function subnetRange(cidr: string): { base: number; last: number; prefix: number } {
  const [ip, len] = cidr.split('/');
  const prefix = Number(len);
  const size = 2 ** (32 - prefix);
  const base = Math.floor(ipToInt(ip!) / size) * size;
  return { base, last: base + size - 1, prefix };
}

/** The names the lab's VMs get, per VM entry: `web`, or `web-1`, `web-2` with count. */
export function instanceNames(vm: Pick<LabVmSpec, 'name' | 'count'>): string[] {
  return vm.count <= 1 ? [vm.name] : Array.from({ length: vm.count }, (_, i) => `${vm.name}-${i + 1}`);
}

/** a size in MiB (numbers are MiB), or undefined */
export function sizeMiB(v: number | string): number | undefined {
  const r = parseSize(v, 'MiB');
  return r ? Number(r.bytes / (1024n * 1024n)) : undefined;
}

function semanticProblems(spec: LabSpec): { path: string; rule: string; message: string }[] {
  const out: { path: string; rule: string; message: string }[] = [];
  const add = (path: string, rule: string, message: string) => out.push({ path, rule, message });
  const nets = new Map<string, LabNetworkSpec>();
  spec.networks.forEach((n, i) => {
    if (nets.has(n.name)) add(`/networks/${i}/name`, 'duplicate', `network '${n.name}' is defined twice`);
    nets.set(n.name, n);
    if (CIDR_RE.test(n.subnet)) {
      const { base } = subnetRange(n.subnet);
      if (intToIp(base) !== n.subnet.split('/')[0]) add(`/networks/${i}/subnet`, 'subnet', `${n.subnet} is not a network address (did you mean ${intToIp(base)}/${n.subnet.split('/')[1]}?)`);
    }
  });
  const vmNames = new Set<string>();
  const instances = new Set<string>();
  spec.vms.forEach((vm, i) => {
    if (vmNames.has(vm.name)) add(`/vms/${i}/name`, 'duplicate', `VM '${vm.name}' is defined twice`);
    vmNames.add(vm.name);
    for (const n of instanceNames(vm)) {
      if (instances.has(n)) add(`/vms/${i}/name`, 'duplicate', `VM name '${n}' is used twice (count adds -1, -2…)`);
      instances.add(n);
    }
  });
  let total = 0;
  let memory = 0;
  spec.vms.forEach((vm, i) => {
    total += vm.count;
    memory += (vm.memory !== undefined ? sizeMiB(vm.memory) ?? 0 : 512) * vm.count;
    vm.after.forEach((a, j) => {
      if (!vmNames.has(a)) add(`/vms/${i}/after/${j}`, 'after', `'${a}' is not a VM of this lab`);
      if (a === vm.name) add(`/vms/${i}/after/${j}`, 'after', `'${a}' cannot start after itself`);
    });
    const seenNets = new Set<string>();
    vm.networks.forEach((entry, j) => {
      const name = typeof entry === 'string' ? entry : entry.network;
      const net = nets.get(name);
      if (!net) return add(`/vms/${i}/networks/${j}`, 'network', `'${name}' is not a network of this lab (networks: ${[...nets.keys()].join(', ') || 'none'})`);
      if (seenNets.has(name)) add(`/vms/${i}/networks/${j}`, 'duplicate', `network '${name}' is listed twice`);
      seenNets.add(name);
      if (typeof entry !== 'string' && entry.address !== undefined) {
        if (vm.count > 1) add(`/vms/${i}/networks/${j}/address`, 'address', 'a fixed address needs count 1 (vmctl numbers the addresses of counted VMs)');
        const { base, last } = subnetRange(net.subnet);
        const a = ipToInt(entry.address);
        if (a <= base + 1 || a >= last) add(`/vms/${i}/networks/${j}/address`, 'address', `${entry.address} is not a host address in ${net.subnet} (.1 is the gateway)`);
      }
    });
  });
  // dependency cycles
  const deps = new Map(spec.vms.map((v) => [v.name, v.after]));
  const state = new Map<string, 'visiting' | 'done'>();
  const visit = (n: string, path: string[]): void => {
    if (state.get(n) === 'done') return;
    if (state.get(n) === 'visiting') {
      add(`/vms/${spec.vms.findIndex((v) => v.name === n)}/after`, 'cycle', `start order cycle: ${[...path.slice(path.indexOf(n)), n].join(' → ')}`);
      return;
    }
    state.set(n, 'visiting');
    for (const d of deps.get(n) ?? []) if (deps.has(d)) visit(d, [...path, n]);
    state.set(n, 'done');
  };
  for (const v of spec.vms) visit(v.name, []);
  if (total > spec.limits.vms) add('/vms', 'limit', `the lab has ${total} VMs, its limit is ${spec.limits.vms} (limits.vms)`);
  const cap = sizeMiB(spec.limits.memory);
  if (cap === undefined) add('/limits/memory', 'size', 'must be a size like 4GiB');
  else if (memory > cap) add('/vms', 'limit', `the lab's VMs need ${memory} MiB, its limit is ${cap} MiB (limits.memory)`);
  const ids = new Set<string>();
  spec.exercises.forEach((ex, i) => {
    if (ids.has(ex.id)) add(`/exercises/${i}/id`, 'duplicate', `exercise '${ex.id}' is defined twice`);
    ids.add(ex.id);
    const where = (on: string, path: string) => {
      if (on !== 'host' && !instances.has(on)) add(path, 'on', `'${on}' is not a VM of this lab (VMs: ${[...instances].join(', ')})`);
    };
    ex.checks.forEach((c, j) => {
      where(c.on, `/exercises/${i}/checks/${j}/on`);
      if (c.output !== undefined) {
        try {
          new RegExp(c.output);
        } catch (e) {
          add(`/exercises/${i}/checks/${j}/output`, 'regex', `not a regular expression: ${(e as Error).message}`);
        }
      }
    });
    ex.solution.forEach((s, j) => where(s.on, `/exercises/${i}/solution/${j}/on`));
  });
  return out;
}

/** Find, read and validate a lab (throws INVALID_INPUT with every problem, NOT_FOUND). */
export function loadLab(nameOrPath: string): LoadedLab {
  const { file, shipped } = findLabFile(nameOrPath);
  let bytes: Buffer;
  try {
    bytes = readFileSync(file);
  } catch (e) {
    throw new VmctlError('NOT_FOUND', `cannot read lab file ${displayPath(file)}: ${(e as Error).message}`, { hint: 'check the path and its permissions' });
  }
  const r = checkLabText(bytes.toString('utf8'), displayPath(file));
  if (!r.ok) throw labError(r.problems);
  return { spec: r.spec, file, shipped, sha256: createHash('sha256').update(bytes).digest('hex') };
}

/** Text in the wanted language: the exact one, its base (ko-KR → ko), English, or the first there is. */
export function localize(t: Localized | undefined, lang: string): string {
  if (t === undefined) return '';
  if (typeof t === 'string') return t;
  return t[lang] ?? t[lang.split('-')[0]!] ?? t.en ?? Object.values(t)[0] ?? '';
}
