/**
 * Templates: find, parse (YAML), resolve `extends`, apply CLI overrides,
 * validate (JSON Schema via ajv + cross-field rules) and normalise into a
 * TemplateSpec.
 *
 * Every problem is one line naming where it comes from:
 *   vm-templates/web.yaml: /memory: must be >= 64 (MiB)     schema / rule
 *   vm-templates/web.yaml:3:7: YAML: <parser message>        syntax
 *   --memory: must be >= 64 (MiB)                            a CLI override
 *
 * `checkTemplate()` and `validateTemplate()` return typed problems;
 * `loadTemplate()` throws VmctlError('INVALID_TEMPLATE') carrying all of them
 * (one per line in the message, the list in details.problems).
 *
 * Template directories, highest priority first: the user's
 * ($XDG_CONFIG_HOME or ~/.config)/vmctl/templates, then the vm-templates/
 * directory shipped with vmctl (found relative to this module, not the cwd).
 * A user template replaces a shipped one of the same name; it may still
 * `extends:` its own name, which then means the next directory's template.
 *
 * `extends` merge: mappings merge key by key (child wins), lists replace,
 * `null` deletes the inherited key, and two mappings whose `type` differ
 * (nics, boot) replace rather than merge.
 */
import { readFile, readdir, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { ErrorObject } from 'ajv';
import { LineCounter, parseDocument, type Document } from 'yaml';
import { VmctlError } from '../errors.js';
import { checkTemplateName, checkUserPath } from '../names.js';
import { packagePath } from '../package-root.js';
import {
  MAX_DISK_BYTES,
  MAX_MEMORY_MIB,
  MIN_DISK_BYTES,
  MIN_MEMORY_MIB,
  SIZE_RE,
} from './schema.js';
// templateSchema compiled ahead of time by ajv (npm run codegen:templates): no schema compilation at run time
import { validateTemplateSchema as validate } from './validate.gen.js';
import type { NicTemplate, ResolvedTemplate, TemplateSpec } from './model.js';

// ---------------------------------------------------------------------------
// problems

export interface TemplateProblem {
  /** the file as shown to the user, the CLI flag ("--memory") the value came from, or "" (a template name given elsewhere) */
  readonly source: string;
  /** JSON pointer into the (merged) template; "" for the whole document */
  readonly path: string;
  /** ajv keyword (minimum, additionalProperties, …) or vmctl rule (yaml, extends, duplicate, …) */
  readonly rule: string;
  /** "must be >= 64 (MiB)" */
  readonly message: string;
  /** 1-based position in the file, when known */
  readonly line?: number;
  readonly col?: number;
}

export type ValidationResult<T> = { ok: true; value: T; problems: [] } | { ok: false; problems: TemplateProblem[] };

/** One line: `file: /path: message`, `file:line:col: message` (YAML syntax) or `--flag: message`. */
export function formatProblem(p: TemplateProblem): string {
  if (p.source === '') return p.message;
  if (p.source.startsWith('--')) return `${p.source}: ${p.message}`;
  if (p.rule === 'yaml') return `${p.source}${p.line !== undefined ? `:${p.line}:${p.col ?? 1}` : ''}: ${p.message}`;
  return `${p.source}: ${p.path === '' ? '/' : p.path}: ${p.message}`;
}

/** The error loadTemplate throws: all problems, one per line. */
export function templateError(problems: readonly TemplateProblem[], templateName?: string): VmctlError {
  return new VmctlError('INVALID_TEMPLATE', problems.map(formatProblem).join('\n'), {
    hint:
      templateName === undefined
        ? 'fix the template'
        : `fix the template or the flags (vmctl validates "${templateName}" after extends and overrides)`,
    details: { problems: problems.map((p) => ({ ...p })) },
  });
}

// ---------------------------------------------------------------------------
// JSON pointers

function escapeSegment(s: string): string {
  return s.replace(/~/g, '~0').replace(/\//g, '~1');
}
export function toPointer(segments: readonly (string | number)[]): string {
  return segments.map((s) => '/' + escapeSegment(String(s))).join('');
}
function fromPointer(pointer: string): string[] {
  if (pointer === '') return [];
  return pointer
    .slice(1)
    .split('/')
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
}
function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
function hasPath(doc: unknown, segments: readonly string[]): boolean {
  let cur: unknown = doc;
  for (const s of segments) {
    if (Array.isArray(cur)) {
      const i = Number(s);
      if (!Number.isInteger(i) || i < 0 || i >= cur.length) return false;
      cur = cur[i];
    } else if (isPlainObject(cur)) {
      if (!Object.prototype.hasOwnProperty.call(cur, s)) return false;
      cur = cur[s];
    } else return false;
  }
  return true;
}

// ---------------------------------------------------------------------------
// YAML

/** A parsed template file: the plain data plus a way to find where a pointer is. */
export interface ParsedTemplateFile {
  /** as shown in messages */
  source: string;
  data: Record<string, unknown>;
  position(pointer: string): { line: number; col: number } | undefined;
}

/** How a file path is shown: relative to the cwd when inside it, ~ for the home directory. */
export function displayPath(file: string, cwd = process.cwd(), home = os.homedir()): string {
  const rel = path.relative(cwd, file);
  if (rel !== '' && !rel.startsWith('..') && !path.isAbsolute(rel)) return rel;
  if (home && (file === home || file.startsWith(home + path.sep))) return '~' + file.slice(home.length);
  return file;
}

/** Parse one template's text. `source` is how the file is named in problems. */
export function parseTemplateText(
  text: string,
  source: string,
): { ok: true; file: ParsedTemplateFile } | { ok: false; problems: TemplateProblem[] } {
  const lineCounter = new LineCounter();
  const doc: Document = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true, version: '1.2' });
  const yamlProblem = (message: string, offset: number | undefined): TemplateProblem => {
    const pos = offset === undefined ? undefined : lineCounter.linePos(offset);
    return { source, path: '', rule: 'yaml', message: `YAML: ${message}`, ...(pos ? { line: pos.line, col: pos.col } : {}) };
  };
  if (doc.errors.length > 0) {
    return {
      ok: false,
      problems: doc.errors.map((e) => {
        const msg = e.code === 'MULTIPLE_DOCS' ? "one template per file: remove the '---' document separator" : e.message.split('\n')[0] ?? e.message;
        return yamlProblem(msg, e.pos[0]);
      }),
    };
  }
  let data: unknown;
  try {
    data = doc.toJS({ maxAliasCount: 100 });
  } catch (err) {
    return { ok: false, problems: [yamlProblem((err as Error).message, undefined)] };
  }
  if (!isPlainObject(data)) {
    const what = data === null || data === undefined ? 'the file is empty' : `found ${Array.isArray(data) ? 'a list' : typeof data}`;
    return { ok: false, problems: [{ source, path: '', rule: 'type', message: `must be a mapping of template fields (${what})` }] };
  }
  const position = (pointer: string): { line: number; col: number } | undefined => {
    const segs: (string | number)[] = fromPointer(pointer).map((s) => (/^(0|[1-9][0-9]*)$/.test(s) ? Number(s) : s));
    for (let n = segs.length; n >= 0; n--) {
      const node = doc.getIn(segs.slice(0, n), true) as { range?: [number, number, number] } | undefined;
      if (node && typeof node === 'object' && Array.isArray(node.range)) {
        const p = lineCounter.linePos(node.range[0]);
        return { line: p.line, col: p.col };
      }
    }
    return undefined;
  };
  return { ok: true, file: { source, data, position } };
}

// ---------------------------------------------------------------------------
// schema validation


function levenshtein(a: string, b: string): number {
  const prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let diag = prev[0]!;
    prev[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = prev[j]!;
      prev[j] = Math.min(prev[j]! + 1, prev[j - 1]! + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = tmp;
    }
  }
  return prev[b.length]!;
}

function suggest(word: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestD = Infinity;
  for (const c of candidates) {
    const d = levenshtein(word.toLowerCase(), c.toLowerCase());
    if (d < bestD) {
      bestD = d;
      best = c;
    }
  }
  return best !== undefined && bestD <= Math.max(1, Math.floor(best.length / 3)) ? best : undefined;
}

const TYPE_WORDS: Record<string, string> = {
  integer: 'an integer',
  number: 'a number',
  string: 'a string',
  boolean: 'true or false',
  object: 'a mapping',
  array: 'a list',
  null: 'null',
};

interface RawProblem {
  path: string;
  rule: string;
  message: string;
}

function describeAjvError(e: ErrorObject): RawProblem | null {
  const parent = (e.parentSchema ?? {}) as Record<string, unknown>;
  const custom = typeof parent['x-error'] === 'string' ? parent['x-error'] : undefined;
  const unit = typeof parent['x-unit'] === 'string' ? ` (${parent['x-unit']})` : '';
  const p = e.params as Record<string, unknown>;
  const at = e.instancePath;
  switch (e.keyword) {
    case 'required':
      return { path: at, rule: 'required', message: `missing required field "${String(p.missingProperty)}"` };
    case 'additionalProperties': {
      const field = String(p.additionalProperty);
      const allowed = Object.keys((parent.properties ?? {}) as Record<string, unknown>);
      const guess = suggest(field, allowed);
      return {
        path: `${at}/${escapeSegment(field)}`,
        rule: 'additionalProperties',
        message: guess ? `unknown field (did you mean "${guess}"?)` : `unknown field (allowed: ${allowed.join(', ')})`,
      };
    }
    case 'type': {
      if (custom) return { path: at, rule: 'type', message: custom };
      const types = String(p.type).split(',');
      return { path: at, rule: 'type', message: `must be ${types.map((t) => TYPE_WORDS[t] ?? t).join(' or ')}` };
    }
    case 'enum':
      return { path: at, rule: 'enum', message: `must be one of: ${(p.allowedValues as unknown[]).map(String).join(', ')}` };
    case 'const':
      return { path: at, rule: 'const', message: `must be ${JSON.stringify(p.allowedValue)}` };
    case 'minimum':
      return { path: at, rule: 'minimum', message: `must be >= ${String(p.limit)}${unit}` };
    case 'maximum':
      return { path: at, rule: 'maximum', message: `must be <= ${String(p.limit)}${unit}` };
    case 'pattern':
      return { path: at, rule: 'pattern', message: custom ?? `must match ${String(p.pattern)}` };
    case 'minLength':
      return { path: at, rule: 'minLength', message: p.limit === 1 ? 'must not be empty' : `must be at least ${String(p.limit)} characters` };
    case 'maxLength':
      return { path: at, rule: 'maxLength', message: `must be at most ${String(p.limit)} characters` };
    case 'minItems':
      return { path: at, rule: 'minItems', message: `must have at least ${String(p.limit)} item(s)` };
    case 'maxItems':
      return { path: at, rule: 'maxItems', message: `must have at most ${String(p.limit)} items` };
    case 'discriminator':
      // a bad tag value is already reported by the enum on `type`; a missing one by required
      return p.error === 'tag' ? { path: at, rule: 'required', message: 'missing required field "type"' } : null;
    case 'oneOf':
    case 'anyOf':
    case 'if':
      return null;
    default:
      return { path: at, rule: e.keyword, message: e.message ?? 'is invalid' };
  }
}

// ---------------------------------------------------------------------------
// sizes

const UNIT_BYTES: Record<string, bigint> = { m: 1024n ** 2n, g: 1024n ** 3n, t: 1024n ** 4n };
const MIB = 1024n ** 2n;

/**
 * Bytes of a size: a number in `defaultUnit`, or a string like "2GiB", "512M",
 * "1.5 GB" (binary units whatever the spelling). null if not a size.
 * Exact (BigInt) so "1.1GiB" is known not to be a whole number of MiB.
 */
export function parseSize(value: unknown, defaultUnit: 'MiB' | 'GiB'): { bytes: bigint; whole: boolean } | null {
  let intPart: string;
  let frac = '';
  let unit: string;
  if (typeof value === 'number') {
    if (!Number.isFinite(value) || value < 0) return null;
    const m = /^([0-9]+)(?:\.([0-9]+))?$/.exec(String(value));
    if (!m) return null;
    intPart = m[1]!;
    frac = m[2] ?? '';
    unit = defaultUnit[0]!.toLowerCase();
  } else if (typeof value === 'string') {
    const m = SIZE_RE.exec(value);
    if (!m) return null;
    const [whole = '0', fraction = ''] = m[1]!.split('.');
    intPart = whole;
    frac = fraction;
    unit = (m[2] ?? defaultUnit[0]!).toLowerCase();
  } else return null;
  const mult = UNIT_BYTES[unit]!;
  const scale = 10n ** BigInt(frac.length);
  const numerator = (BigInt(intPart) * scale + BigInt(frac === '' ? '0' : frac)) * mult;
  return { bytes: numerator / scale, whole: numerator % scale === 0n };
}

function formatBytesExact(bytes: bigint): string {
  for (const [u, n] of [['TiB', 1024n ** 4n], ['GiB', 1024n ** 3n], ['MiB', MIB]] as const) {
    if (bytes >= n && bytes % n === 0n) return `${bytes / n} ${u}`;
  }
  return `${bytes} bytes`;
}

// ---------------------------------------------------------------------------
// validation of one (merged) document

type Blame = (pointer: string) => { source: string; line?: number; col?: number };

/**
 * Validate a template document (after extends and overrides) and normalise it.
 * `doc` is not modified. `source` names the document in problems, or `blame`
 * tells, per JSON pointer, which file or flag a value came from.
 */
export function validateTemplate(doc: unknown, opts: { source?: string; blame?: Blame } = {}): ValidationResult<TemplateSpec> {
  const r = validateBlamed(doc, opts.blame ?? (() => ({ source: opts.source ?? '<template>' })));
  return r.ok ? { ok: true, value: r.spec, problems: [] } : r;
}

function validateBlamed(
  doc: unknown,
  blame: Blame,
): { ok: true; spec: TemplateSpec; defaulted: Record<string, unknown> } | { ok: false; problems: TemplateProblem[] } {
  const r = validateRaw(doc);
  if (!r.ok) return { ok: false, problems: r.problems.map((p) => ({ ...blame(p.path), ...p })) };
  return r;
}

function validateRaw(doc: unknown): { ok: true; spec: TemplateSpec; defaulted: Record<string, unknown> } | { ok: false; problems: RawProblem[] } {
  const data = structuredClone(doc);
  if (!validate(data)) {
    const seen = new Set<string>();
    const problems: RawProblem[] = [];
    for (const e of validate.errors ?? []) {
      const p = describeAjvError(e);
      if (!p) continue;
      const key = `${p.path}\0${p.message}`;
      if (seen.has(key)) continue;
      seen.add(key);
      problems.push(p);
    }
    return { ok: false, problems };
  }
  const defaulted = structuredClone(data) as Record<string, unknown>;
  const r = normalise(data as RawTemplate);
  if (r.problems.length > 0) return { ok: false, problems: r.problems };
  return { ok: true, spec: r.spec, defaulted };
}

/** The document after the schema accepted it and filled defaults. */
interface RawTemplate {
  description?: string;
  image?: string;
  cpus: number;
  memory: number | string;
  machine: TemplateSpec['machine'];
  firmware: TemplateSpec['firmware'];
  accel: TemplateSpec['accel'];
  disks: { name: string; size: number | string; bus: TemplateSpec['disks'][number]['bus']; format: 'qcow2' | 'raw'; image?: string }[];
  nics: NicTemplate[];
  boot: TemplateSpec['boot'];
  cloudInit?: TemplateSpec['cloudInit'];
  graphics: TemplateSpec['graphics'];
  serial: boolean;
}

/** Cross-field rules and unit normalisation, after the schema passed. */
function normalise(t: RawTemplate): { spec: TemplateSpec; problems: RawProblem[] } {
  const problems: RawProblem[] = [];
  const add = (path: string, rule: string, message: string): void => {
    problems.push({ path, rule, message });
  };

  // memory
  let memoryMiB = 0;
  const mem = parseSize(t.memory, 'MiB');
  if (!mem) add('/memory', 'pattern', 'must be a size in MiB or like 512MiB or 2GiB');
  else if (!mem.whole || mem.bytes % MIB !== 0n) add('/memory', 'size', 'must be a whole number of MiB');
  else {
    memoryMiB = Number(mem.bytes / MIB);
    if (memoryMiB < MIN_MEMORY_MIB) add('/memory', 'minimum', `must be >= ${MIN_MEMORY_MIB} (MiB)`);
    else if (memoryMiB > MAX_MEMORY_MIB) add('/memory', 'maximum', `must be <= ${MAX_MEMORY_MIB} (MiB)`);
  }

  // disks
  const diskNames = new Map<string, number>();
  const disks = t.disks.map((d, i) => {
    const at = `/disks/${i}`;
    const first = diskNames.get(d.name);
    if (first !== undefined) add(`${at}/name`, 'unique', `duplicate disk name "${d.name}" (also /disks/${first}/name)`);
    else diskNames.set(d.name, i);
    let sizeBytes = 0;
    const size = parseSize(d.size, 'GiB');
    if (!size) add(`${at}/size`, 'pattern', 'must be a size in GiB or like 10GiB or 512MiB');
    else if (!size.whole || size.bytes % MIB !== 0n) add(`${at}/size`, 'size', 'must be a whole number of MiB');
    else if (size.bytes < BigInt(MIN_DISK_BYTES)) add(`${at}/size`, 'minimum', 'must be >= 1 MiB');
    else if (size.bytes > BigInt(MAX_DISK_BYTES)) add(`${at}/size`, 'maximum', `must be <= ${formatBytesExact(BigInt(MAX_DISK_BYTES))}`);
    else sizeBytes = Number(size.bytes);
    if (i === 0 && d.image !== undefined) {
      add(`${at}/image`, 'root-image', "the first disk uses the VM's image: set the top-level 'image' (or --image) instead");
    }
    if (d.bus === 'ide' && t.machine === 'q35') add(`${at}/bus`, 'machine', 'ide is not available on machine q35: use sata or virtio, or machine: pc');
    return { name: d.name, sizeBytes, bus: d.bus, format: d.format, ...(d.image !== undefined ? { image: d.image } : {}) };
  });
  if (t.machine === 'pc') {
    const ide = t.disks.filter((d) => d.bus === 'ide').length + (t.cloudInit ? 1 : 0);
    if (ide > 4) add('/disks', 'ide-slots', `machine pc has 4 IDE slots, ${ide} needed${t.cloudInit ? ' (one is the cloud-init cdrom)' : ''}: use virtio for the others`);
    if (t.disks.some((d) => d.bus === 'sata')) {
      const i = t.disks.findIndex((d) => d.bus === 'sata');
      add(`/disks/${i}/bus`, 'machine', 'sata needs machine q35: use virtio or ide, or machine: q35');
    }
  }
  if (t.boot.type === 'disk' && t.disks.length === 0) add('/disks', 'boot', 'boot type disk needs at least one disk');
  if (t.image !== undefined && t.disks.length === 0) add('/image', 'no-disk', 'the template has no disk to put the image on');

  // nics
  const macs = new Map<string, number>();
  const forwards = new Map<string, string>();
  t.nics.forEach((nic, n) => {
    if (nic.mac !== undefined) {
      const mac = nic.mac.toLowerCase();
      const firstOctet = parseInt(mac.slice(0, 2), 16);
      if (firstOctet & 1) add(`/nics/${n}/mac`, 'mac', 'must be a unicast MAC address (first octet even), e.g. 52:54:00:…');
      const other = macs.get(mac);
      if (other !== undefined) add(`/nics/${n}/mac`, 'unique', `duplicate MAC address (also /nics/${other}/mac)`);
      else macs.set(mac, n);
      nic.mac = mac;
    }
    if (nic.type !== 'user') return;
    nic.forwards.forEach((f, i) => {
      const at = `/nics/${n}/forwards/${i}`;
      if (f.hostPort > 0 && f.hostPort < 1024) {
        add(`${at}/hostPort`, 'minimum', 'must be >= 1024 (QEMU runs unprivileged), or 0 to pick a free port');
      }
      if (f.hostPort !== 0) {
        const key = `${f.proto} ${f.host}:${f.hostPort}`;
        const other = forwards.get(key);
        if (other !== undefined) add(`${at}/hostPort`, 'unique', `${key} is already forwarded by ${other}`);
        else forwards.set(key, at);
      }
    });
  });

  // boot
  if (t.boot.type === 'kernel') {
    for (const field of ['kernel', 'initrd'] as const) {
      const v = t.boot[field];
      if (v === undefined) continue;
      const problem = checkUserPath(v, { label: field, mustBeAbsolute: true });
      if (problem) add(`/boot/${field}`, 'path', problem.replace(/^invalid \w+ /, 'invalid path '));
    }
  }

  const spec: TemplateSpec = {
    ...(t.description !== undefined ? { description: t.description } : {}),
    ...(t.image !== undefined ? { image: t.image } : {}),
    cpus: t.cpus,
    memoryMiB,
    machine: t.machine,
    firmware: t.firmware,
    accel: t.accel,
    disks,
    nics: t.nics,
    boot: t.boot,
    ...(t.cloudInit !== undefined ? { cloudInit: t.cloudInit } : {}),
    graphics: t.graphics,
    serial: t.serial,
  };
  return { spec, problems };
}

// ---------------------------------------------------------------------------
// extends

/** Deep merge for extends: mappings merge, lists replace, null deletes, differing `type` replaces. */
export function mergeTemplates(parent: Record<string, unknown>, child: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = structuredClone(parent);
  for (const [k, v] of Object.entries(child)) {
    if (v === null) {
      delete out[k];
      continue;
    }
    const base = out[k];
    if (isPlainObject(base) && isPlainObject(v) && !('type' in base && 'type' in v && base.type !== v.type)) {
      out[k] = mergeTemplates(base, v);
    } else {
      out[k] = structuredClone(v);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------
// directories

/** vm-templates/ of this installation (found from src/, dist/ and dist/bundle/), without a trailing slash. */
export const SHIPPED_TEMPLATE_DIR = packagePath('vm-templates');

/** The user's template directory: $XDG_CONFIG_HOME/vmctl/templates or ~/.config/vmctl/templates. */
export function userTemplateDir(env: NodeJS.ProcessEnv = process.env, home = os.homedir()): string {
  const base = env.XDG_CONFIG_HOME && path.isAbsolute(env.XDG_CONFIG_HOME) ? env.XDG_CONFIG_HOME : path.join(home, '.config');
  return path.join(base, 'vmctl', 'templates');
}

/** Search order, highest priority first: the user's directory, then the shipped one. */
export function defaultTemplateDirs(env: NodeJS.ProcessEnv = process.env): string[] {
  return [userTemplateDir(env), SHIPPED_TEMPLATE_DIR];
}

export const DEFAULT_TEMPLATE = 'default';

export interface TemplateInfo {
  name: string;
  file: string;
  /** index in the directory list */
  dirIndex: number;
  /** the description field, when the file parses */
  description?: string;
  /** files of the same name in lower-priority directories, hidden by this one */
  shadows: string[];
}

async function namesIn(dir: string): Promise<string[]> {
  try {
    const entries = await readdir(dir, { withFileTypes: true });
    return entries
      .filter((e) => (e.isFile() || e.isSymbolicLink()) && e.name.endsWith('.yaml'))
      .map((e) => e.name.slice(0, -'.yaml'.length))
      .filter((n) => checkTemplateName(n) === null)
      .sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ENOTDIR') return [];
    throw err;
  }
}

/** Every template visible through `dirs`, by name. */
export async function listTemplates(dirs: readonly string[] = defaultTemplateDirs()): Promise<TemplateInfo[]> {
  const byName = new Map<string, TemplateInfo>();
  for (const [dirIndex, dir] of dirs.entries()) {
    for (const name of await namesIn(dir)) {
      const file = path.join(dir, `${name}.yaml`);
      const existing = byName.get(name);
      if (existing) existing.shadows.push(file);
      else byName.set(name, { name, file, dirIndex, shadows: [] });
    }
  }
  const infos = [...byName.values()].sort((a, b) => a.name.localeCompare(b.name));
  await Promise.all(
    infos.map(async (info) => {
      try {
        const parsed = parseTemplateText(await readFile(info.file, 'utf8'), info.file);
        if (parsed.ok && typeof parsed.file.data.description === 'string') info.description = parsed.file.data.description;
      } catch {
        // unreadable: loadTemplate will say why
      }
    }),
  );
  return infos;
}

async function findIn(name: string, dirs: readonly string[], from: number): Promise<{ file: string; dirIndex: number } | null> {
  for (let i = from; i < dirs.length; i++) {
    const file = path.join(dirs[i]!, `${name}.yaml`);
    try {
      if ((await stat(file)).isFile()) return { file, dirIndex: i };
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') continue;
      throw err;
    }
  }
  return null;
}

// ---------------------------------------------------------------------------
// overrides

/**
 * CLI flags applied on top of the resolved template. Values are passed as the
 * user typed them (numbers or strings); they go through the same validation
 * and problems name the flag.
 */
export interface TemplateOverrides {
  /** --cpus */
  cpus?: unknown;
  /** --memory: MiB or a size string ("2GiB") */
  memory?: unknown;
  /** --disk-size: size of the first disk, GiB or a size string */
  diskSize?: unknown;
  /** --image: base image of the first disk */
  image?: unknown;
  /** --network: "default" / "network=NAME", "bridge=br0", or "user"; replaces the first NIC */
  network?: unknown;
  /** --ssh-key: public key lines (the CLI reads the files), added to cloudInit.sshKeys */
  sshKeys?: readonly unknown[];
}

const OVERRIDE_FLAGS = {
  cpus: '--cpus',
  memory: '--memory',
  diskSize: '--disk-size',
  image: '--image',
  network: '--network',
  sshKeys: '--ssh-key',
} as const;

function numeric(v: unknown): unknown {
  return typeof v === 'string' && /^[0-9]+$/.test(v.trim()) ? Number(v.trim()) : v;
}

/** Parse --network into a NIC, keeping model/mac (and forwards, for user→user) of the NIC it replaces. */
export function networkOverride(
  value: unknown,
  previous: Record<string, unknown> | undefined,
): { nic: Record<string, unknown> } | { error: string } {
  const keep: Record<string, unknown> = {};
  if (previous?.model !== undefined) keep.model = previous.model;
  if (previous?.mac !== undefined) keep.mac = previous.mac;
  if (typeof value !== 'string') return { nic: { type: 'network', network: value, ...keep } };
  const m = /^(network|bridge|user)(?:[=:](.*))?$/s.exec(value);
  if (!m) return { nic: { type: 'network', network: value, ...keep } };
  const [, kind, arg] = m;
  if (kind === 'user') {
    if (arg !== undefined) return { error: 'user takes no argument: use --network user' };
    const forwards = previous?.type === 'user' && Array.isArray(previous.forwards) ? previous.forwards : [{ guestPort: 22 }];
    return { nic: { type: 'user', forwards, ...keep } };
  }
  if (kind === 'bridge') return { nic: { type: 'bridge', bridge: arg ?? '', ...keep } };
  return { nic: { type: 'network', network: arg ?? '', ...keep } };
}

/** Apply overrides to a validated (defaulted) document; returns the new document and which pointers are flags. */
function applyOverrides(
  doc: Record<string, unknown>,
  o: TemplateOverrides,
  templateName: string,
): { doc: Record<string, unknown>; flags: Map<string, string>; problems: TemplateProblem[] } {
  const out = structuredClone(doc);
  const flags = new Map<string, string>();
  const problems: TemplateProblem[] = [];
  const flagProblem = (flag: string, message: string): void => {
    problems.push({ source: flag, path: '', rule: 'override', message });
  };
  if (o.cpus !== undefined) {
    out.cpus = numeric(o.cpus);
    flags.set('/cpus', OVERRIDE_FLAGS.cpus);
  }
  if (o.memory !== undefined) {
    out.memory = numeric(o.memory);
    flags.set('/memory', OVERRIDE_FLAGS.memory);
  }
  if (o.diskSize !== undefined) {
    const disks = out.disks as Record<string, unknown>[];
    if (disks.length === 0) flagProblem(OVERRIDE_FLAGS.diskSize, `template "${templateName}" has no disk`);
    else {
      disks[0]!.size = numeric(o.diskSize);
      flags.set('/disks/0/size', OVERRIDE_FLAGS.diskSize);
    }
  }
  if (o.image !== undefined) {
    out.image = o.image;
    flags.set('/image', OVERRIDE_FLAGS.image);
  }
  if (o.network !== undefined) {
    const nics = out.nics as Record<string, unknown>[];
    const r = networkOverride(o.network, nics[0]);
    if ('error' in r) flagProblem(OVERRIDE_FLAGS.network, r.error);
    else {
      nics[0] = r.nic;
      flags.set('/nics/0', OVERRIDE_FLAGS.network);
    }
  }
  if (o.sshKeys !== undefined && o.sshKeys.length > 0) {
    const ci = out.cloudInit as { sshKeys: unknown[] } | undefined;
    if (!ci) flagProblem(OVERRIDE_FLAGS.sshKeys, `template "${templateName}" has no cloudInit section to install keys with`);
    else {
      for (const key of o.sshKeys) {
        flags.set(`/cloudInit/sshKeys/${ci.sshKeys.length}`, OVERRIDE_FLAGS.sshKeys);
        ci.sshKeys.push(typeof key === 'string' ? key.trim() : key);
      }
    }
  }
  return { doc: out, flags, problems };
}

// ---------------------------------------------------------------------------
// loading

export interface LoadTemplateOptions {
  /** template directories, highest priority first (default: defaultTemplateDirs()) */
  dirs?: readonly string[];
  overrides?: TemplateOverrides;
  /** the template name's origin in problems, e.g. "--template" (default: none) */
  nameFrom?: string;
}

/** Read, resolve extends, apply overrides and validate; all problems are returned, nothing thrown for bad input. */
export async function checkTemplate(name: string = DEFAULT_TEMPLATE, opts: LoadTemplateOptions = {}): Promise<ValidationResult<ResolvedTemplate>> {
  const dirs = opts.dirs ?? defaultTemplateDirs();
  const fail = (problems: TemplateProblem[]): ValidationResult<ResolvedTemplate> => ({ ok: false, problems });
  const nameSource = opts.nameFrom ?? '';

  const nameProblem = checkTemplateName(name);
  if (nameProblem) return fail([{ source: nameSource, path: '', rule: 'name', message: nameProblem }]);
  const top = await findIn(name, dirs, 0);
  if (!top) {
    const available = (await listTemplates(dirs)).map((t) => t.name);
    return fail([
      {
        source: nameSource,
        path: '',
        rule: 'not-found',
        message: `unknown template "${name}" (available: ${available.join(', ') || 'none'}; searched ${dirs.join(', ')})`,
      },
    ]);
  }

  // the chain, child first
  const chain: ParsedTemplateFile[] = [];
  const chainNames: string[] = [];
  const seen: string[] = [];
  let cur: { name: string; file: string; dirIndex: number } = { name, ...top };
  for (;;) {
    const shown = displayPath(cur.file);
    if (seen.includes(cur.file)) {
      const last = chain[chain.length - 1]!;
      const names = [...chainNames, cur.name].join(' -> ');
      return fail([
        { source: last.source, path: '/extends', rule: 'extends-cycle', message: `extends cycle: ${names}`, ...last.position('/extends') },
      ]);
    }
    seen.push(cur.file);
    let text: string;
    try {
      text = await readFile(cur.file, 'utf8');
    } catch (err) {
      return fail([{ source: shown, path: '', rule: 'read', message: `cannot read: ${(err as Error).message}` }]);
    }
    const parsed = parseTemplateText(text, shown);
    if (!parsed.ok) return fail(parsed.problems);
    chain.push(parsed.file);
    chainNames.push(cur.name);
    const parent = parsed.file.data.extends;
    if (parent === undefined) break;
    const parentProblem = typeof parent === 'string' ? checkTemplateName(parent) : 'must be a template name';
    if (parentProblem !== null) {
      return fail([{ source: shown, path: '/extends', rule: 'extends', message: parentProblem, ...parsed.file.position('/extends') }]);
    }
    const parentName = parent as string;
    // a template extending its own name means the next directory's template of that name
    const found = await findIn(parentName, dirs, parentName === cur.name ? cur.dirIndex + 1 : 0);
    if (!found) {
      const available = (await listTemplates(dirs)).map((t) => t.name);
      return fail([
        {
          source: shown,
          path: '/extends',
          rule: 'extends',
          message: `unknown template "${parentName}" (available: ${available.join(', ') || 'none'})`,
          ...parsed.file.position('/extends'),
        },
      ]);
    }
    cur = { name: parentName, ...found };
  }

  let merged: Record<string, unknown> = {};
  for (const f of [...chain].reverse()) merged = mergeTemplates(merged, f.data);
  delete merged.extends;

  const blameFile: Blame = (pointer) => {
    const segs = fromPointer(pointer);
    for (let n = segs.length; n >= 0; n--) {
      const prefix = segs.slice(0, n);
      for (const f of chain) {
        if (hasPath(f.data, prefix) && (n > 0 || f === chain[0])) {
          return { source: f.source, ...f.position(toPointer(prefix)) };
        }
      }
    }
    return { source: chain[0]!.source };
  };

  const first = validateBlamed(merged, blameFile);
  if (!first.ok) return fail(first.problems);

  let spec = first.spec;
  if (opts.overrides && Object.values(opts.overrides).some((v) => v !== undefined)) {
    const applied = applyOverrides(first.defaulted, opts.overrides, name);
    if (applied.problems.length > 0) return fail(applied.problems);
    const blame: Blame = (pointer) => {
      for (const [prefix, flag] of applied.flags) {
        if (pointer === prefix || pointer.startsWith(prefix + '/')) return { source: flag };
      }
      return blameFile(pointer);
    };
    const second = validateBlamed(applied.doc, blame);
    if (!second.ok) {
      // flag problems first: they are what the user just typed
      const sorted = [...second.problems].sort((a, b) => Number(b.source.startsWith('--')) - Number(a.source.startsWith('--')));
      return fail(sorted);
    }
    spec = second.spec;
  }

  return { ok: true, value: { name, files: chain.map((f) => f.source), spec }, problems: [] };
}

/**
 * Load a template by name (default "default") with optional overrides.
 * Throws VmctlError NOT_FOUND for an unknown top-level name, INVALID_INPUT for
 * a bad name, INVALID_TEMPLATE with every problem otherwise.
 */
export async function loadTemplate(name: string = DEFAULT_TEMPLATE, opts: LoadTemplateOptions = {}): Promise<ResolvedTemplate> {
  const r = await checkTemplate(name, opts);
  if (r.ok) return r.value;
  const only = r.problems.length === 1 ? r.problems[0] : undefined;
  if (only && only.rule === 'not-found') {
    throw new VmctlError('NOT_FOUND', formatProblem(only), {
      hint: `put ${name}.yaml in ${userTemplateDir()} or pick one of the listed templates`,
      details: { problems: [only] },
    });
  }
  if (only && only.rule === 'name') throw new VmctlError('INVALID_INPUT', formatProblem(only), { details: { problems: [only] } });
  throw templateError(r.problems, name);
}

/** Validate one template file on its own (no extends resolution), e.g. for an editor or `vmctl template check FILE`. */
export function validateTemplateText(text: string, source: string): ValidationResult<TemplateSpec> {
  const parsed = parseTemplateText(text, source);
  if (!parsed.ok) return { ok: false, problems: parsed.problems };
  const { extends: _ignored, ...data } = parsed.file.data;
  return validateTemplate(data, { blame: (p) => ({ source, ...parsed.file.position(p) }) });
}

