/**
 * Validation of one (merged) template document: the JSON Schema (ajv,
 * generated ahead of time), then cross-field rules and unit normalisation
 * into a TemplateSpec.
 */
import { checkUserPath } from '../names.js';
import { describeAjvErrors, type RawProblem } from './ajv-errors.js';
import type { NicTemplate, TemplateSpec } from './model.js';
import { parseTemplateText } from './parse.js';
import type { TemplateProblem, ValidationResult } from './problems.js';
import { MAX_DISK_BYTES, MAX_MEMORY_MIB, MIN_DISK_BYTES, MIN_MEMORY_MIB } from './schema.js';
import { formatBytesExact, MIB, parseSize } from './size.js';
// templateSchema compiled ahead of time by ajv (npm run codegen:templates): no schema compilation at run time
import { validateTemplateSchema as validate } from './validate.gen.js';

export type Blame = (pointer: string) => { source: string; line?: number; col?: number };

/**
 * Validate a template document (after extends and overrides) and normalise it.
 * `doc` is not modified. `source` names the document in problems, or `blame`
 * tells, per JSON pointer, which file or flag a value came from.
 */
export function validateTemplate(doc: unknown, opts: { source?: string; blame?: Blame } = {}): ValidationResult<TemplateSpec> {
  const r = validateBlamed(doc, opts.blame ?? (() => ({ source: opts.source ?? '<template>' })));
  return r.ok ? { ok: true, value: r.spec, problems: [] } : r;
}

export function validateBlamed(
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
    return { ok: false, problems: describeAjvErrors(validate.errors) };
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
  onCrash: TemplateSpec['onCrash'];
  watchdog: TemplateSpec['watchdog'];
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
    onCrash: t.onCrash,
    watchdog: t.watchdog,
  };
  return { spec, problems };
}


/** Validate one template file on its own (no extends resolution), e.g. for an editor or `vmctl template check FILE`. */
export function validateTemplateText(text: string, source: string): ValidationResult<TemplateSpec> {
  const parsed = parseTemplateText(text, source);
  if (!parsed.ok) return { ok: false, problems: parsed.problems };
  const { extends: _ignored, ...data } = parsed.file.data;
  return validateTemplate(data, { blame: (p) => ({ source, ...parsed.file.position(p) }) });
}
