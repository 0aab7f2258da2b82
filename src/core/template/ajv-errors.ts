/** ajv errors → one readable problem each ("unknown field (did you mean "cpus"?)", "must be >= 64 (MiB)"). */
import type { ErrorObject } from 'ajv';
import { escapeSegment } from './problems.js';

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

export interface RawProblem {
  path: string;
  rule: string;
  message: string;
}

/** Every ajv error described once (same path and message: once). */
export function describeAjvErrors(errors: readonly ErrorObject[] | null | undefined): RawProblem[] {
  const seen = new Set<string>();
  const problems: RawProblem[] = [];
  for (const e of errors ?? []) {
    const p = describeAjvError(e);
    if (!p) continue;
    const key = `${p.path}\0${p.message}`;
    if (seen.has(key)) continue;
    seen.add(key);
    problems.push(p);
  }
  return problems;
}

export function describeAjvError(e: ErrorObject): RawProblem | null {
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
