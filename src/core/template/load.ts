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
 * The pieces, one file each: problems.ts (problems, JSON pointers), parse.ts
 * (YAML with positions), dirs.ts (template directories, listing), resolve.ts
 * (extends chains, cycles), merge.ts (the extends merge), overrides.ts (CLI
 * flags), validate.ts + ajv-errors.ts (schema and cross-field rules), size.ts.
 * This module puts them together and re-exports their public API.
 */
import { VmctlError } from '../errors.js';
import { DEFAULT_TEMPLATE, defaultTemplateDirs, userTemplateDir } from './dirs.js';
import type { ResolvedTemplate } from './model.js';
import { applyOverrides, type TemplateOverrides } from './overrides.js';
import { formatProblem, templateError, type TemplateProblem, type ValidationResult } from './problems.js';
import { resolveExtends } from './resolve.js';
import { validateBlamed, type Blame } from './validate.js';

export { formatProblem, templateError, toPointer, type TemplateProblem, type ValidationResult } from './problems.js';
export { displayPath, parseTemplateText, type ParsedTemplateFile } from './parse.js';
export { parseSize } from './size.js';
export { validateTemplate, validateTemplateText } from './validate.js';
export { mergeTemplates } from './merge.js';
export { DEFAULT_TEMPLATE, defaultTemplateDirs, listTemplates, SHIPPED_TEMPLATE_DIR, userTemplateDir, type TemplateInfo } from './dirs.js';
export { networkOverride, type TemplateOverrides } from './overrides.js';

export interface LoadTemplateOptions {
  /** template directories, highest priority first (default: defaultTemplateDirs()) */
  dirs?: readonly string[];
  overrides?: TemplateOverrides;
  /** the template name's origin in problems, e.g. "--template" (default: none) */
  nameFrom?: string;
}

/** A resolved template plus its document: the merged template after extends (and overrides) with the schema's defaults filled in. */
export interface CheckedTemplate {
  resolved: ResolvedTemplate;
  /** template syntax (memory: 512MiB, disks[].size: 4GiB…), not the normalised spec */
  document: Record<string, unknown>;
  /** the template names of the extends chain, the template itself first */
  chain: string[];
}

/** checkTemplate, also returning the resolved document and the extends chain. */
export async function checkTemplateDocument(
  name: string = DEFAULT_TEMPLATE,
  opts: LoadTemplateOptions = {},
): Promise<ValidationResult<CheckedTemplate>> {
  const fail = (problems: TemplateProblem[]): ValidationResult<CheckedTemplate> => ({ ok: false, problems });
  const resolved = await resolveExtends(name, opts.dirs ?? defaultTemplateDirs(), opts.nameFrom ?? '');
  if (!resolved.ok) return fail(resolved.problems);
  const { chain, names, merged, blame: blameFile } = resolved.value;

  const first = validateBlamed(merged, blameFile);
  if (!first.ok) return fail(first.problems);

  let { spec, defaulted: document } = first;
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
    ({ spec, defaulted: document } = second);
  }

  return { ok: true, value: { resolved: { name, files: chain.map((f) => f.source), spec }, document, chain: names }, problems: [] };
}

/** Read, resolve extends, apply overrides and validate; all problems are returned, nothing thrown for bad input. */
export async function checkTemplate(name: string = DEFAULT_TEMPLATE, opts: LoadTemplateOptions = {}): Promise<ValidationResult<ResolvedTemplate>> {
  const r = await checkTemplateDocument(name, opts);
  return r.ok ? { ok: true, value: r.value.resolved, problems: [] } : r;
}

/**
 * The error for a failed check: NOT_FOUND for an unknown top-level name,
 * INVALID_INPUT for a bad name, INVALID_TEMPLATE with every problem otherwise.
 */
export function loadError(name: string, problems: readonly TemplateProblem[]): VmctlError {
  const only = problems.length === 1 ? problems[0] : undefined;
  if (only && only.rule === 'not-found') {
    return new VmctlError('NOT_FOUND', formatProblem(only), {
      hint: `put ${name}.yaml in ${userTemplateDir()} or pick one of the listed templates`,
      details: { problems: [only] },
    });
  }
  if (only && only.rule === 'name') return new VmctlError('INVALID_INPUT', formatProblem(only), { details: { problems: [only] } });
  return templateError(problems, name);
}

/**
 * Load a template by name (default "default") with optional overrides.
 * Throws VmctlError NOT_FOUND for an unknown top-level name, INVALID_INPUT for
 * a bad name, INVALID_TEMPLATE with every problem otherwise.
 */
export async function loadTemplate(name: string = DEFAULT_TEMPLATE, opts: LoadTemplateOptions = {}): Promise<ResolvedTemplate> {
  const r = await checkTemplate(name, opts);
  if (r.ok) return r.value;
  throw loadError(name, r.problems);
}
