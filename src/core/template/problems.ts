/**
 * Template problems (one line each, naming the file, flag or position they
 * come from), the INVALID_TEMPLATE error carrying them, and the JSON-pointer
 * helpers problems are located with.
 */
import { VmctlError } from '../errors.js';

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

export function escapeSegment(s: string): string {
  return s.replace(/~/g, '~0').replace(/\//g, '~1');
}
export function toPointer(segments: readonly (string | number)[]): string {
  return segments.map((s) => '/' + escapeSegment(String(s))).join('');
}
export function fromPointer(pointer: string): string[] {
  if (pointer === '') return [];
  return pointer
    .slice(1)
    .split('/')
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
}
export function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
export function hasPath(doc: unknown, segments: readonly string[]): boolean {
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
