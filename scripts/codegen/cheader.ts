/**
 * Extracts integer constants from libvirt's public C headers:
 *
 *   typedef enum [tag] { A = 1, B = (1 << 2), C = A | B, D, ... } virFoo;
 *   # define VIR_X 123            (object-like macros whose value is an integer expression)
 *
 * Values are evaluated with C integer-expression semantics over BigInt
 * (literals with U/L suffixes, identifiers, unary - ~ ! +, * / % + - << >> & ^ |,
 * parentheses). Anything that does not evaluate to an integer (strings,
 * function-like macros, casts, unknown names) is skipped. Preprocessor
 * conditionals are ignored, so `# ifdef VIR_ENUM_SENTINELS` `_LAST` members are kept.
 */
import { CodegenError } from './ast.js';

export interface CEnum {
  readonly name: string;
  readonly file: string;
  readonly members: readonly { readonly name: string; readonly value: bigint }[];
}

export interface CDefine {
  readonly name: string;
  readonly file: string;
  readonly value: bigint;
}

export interface CHeaderFile {
  /** path shown in diagnostics / section comments, e.g. include/libvirt/libvirt-domain.h */
  readonly file: string;
  readonly text: string;
}

export interface CConstants {
  /** in input order (files as given, then source order) */
  readonly items: readonly ({ readonly kind: 'enum'; readonly def: CEnum } | { readonly kind: 'define'; readonly def: CDefine })[];
  /** every enum member and integer macro, by name */
  readonly values: ReadonlyMap<string, bigint>;
  /** macros that were skipped, with the reason (for diagnostics) */
  readonly skipped: readonly { readonly name: string; readonly file: string; readonly reason: string }[];
}

/** Blank out comments (keeping newlines) and join backslash-continued lines. */
function stripComments(text: string): string {
  let out = '';
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    if (c === '/' && text[i + 1] === '*') {
      const end = text.indexOf('*/', i + 2);
      const stop = end < 0 ? text.length : end + 2;
      out += text.slice(i, stop).replace(/[^\n]/g, ' ');
      i = stop;
    } else if (c === '/' && text[i + 1] === '/') {
      while (i < text.length && text[i] !== '\n') {
        out += ' ';
        i++;
      }
    } else if (c === '"' || c === "'") {
      // copy string / char literals verbatim (they may contain comment markers)
      let j = i + 1;
      while (j < text.length && text[j] !== c && text[j] !== '\n') j += text[j] === '\\' ? 2 : 1;
      out += text.slice(i, j + 1);
      i = j + 1;
    } else {
      out += c;
      i++;
    }
  }
  return out.replace(/\\\r?\n/g, ' ');
}

type Tok = { t: 'num'; v: bigint } | { t: 'id'; v: string } | { t: 'op'; v: string };

function lexExpr(s: string): Tok[] | null {
  const toks: Tok[] = [];
  let i = 0;
  while (i < s.length) {
    const c = s[i] as string;
    if (/\s/.test(c)) {
      i++;
      continue;
    }
    const num = /^(0[xX][0-9a-fA-F]+|[0-9]+)([uUlL]*)/.exec(s.slice(i));
    if (num && /[0-9]/.test(c)) {
      const body = num[1] as string;
      let v: bigint;
      if (/^0[xX]/.test(body)) v = BigInt(body);
      else if (/^0[0-7]+$/.test(body)) v = BigInt('0o' + body.slice(1));
      else if (/^[0-9]+$/.test(body)) v = BigInt(body);
      else return null;
      toks.push({ t: 'num', v });
      i += num[0].length;
      if (/[A-Za-z0-9_.]/.test(s[i] ?? '')) return null; // float or odd suffix
      continue;
    }
    const id = /^[A-Za-z_][A-Za-z0-9_]*/.exec(s.slice(i));
    if (id) {
      toks.push({ t: 'id', v: id[0] });
      i += id[0].length;
      continue;
    }
    const op = /^(<<|>>|[-+~!*/%&|^()])/.exec(s.slice(i));
    if (op) {
      toks.push({ t: 'op', v: op[0] });
      i += op[0].length;
      continue;
    }
    return null;
  }
  return toks;
}

const BINARY_PREC: Record<string, number> = {
  '|': 1,
  '^': 2,
  '&': 3,
  '<<': 4,
  '>>': 4,
  '+': 5,
  '-': 5,
  '*': 6,
  '/': 6,
  '%': 6,
};

class EvalError extends Error {}

/** Evaluate a C integer constant expression; `lookup` resolves identifiers. */
export function evalCExpr(expr: string, lookup: (name: string) => bigint | undefined): bigint {
  const toks = lexExpr(expr);
  if (!toks || toks.length === 0) throw new EvalError(`not an integer expression: ${expr.trim()}`);
  let p = 0;
  const peek = (): Tok | undefined => toks[p];
  const unary = (): bigint => {
    const t = toks[p++];
    if (!t) throw new EvalError('unexpected end of expression');
    if (t.t === 'num') return t.v;
    if (t.t === 'id') {
      const v = lookup(t.v);
      if (v === undefined) throw new EvalError(`unknown identifier ${t.v}`);
      return v;
    }
    switch (t.v) {
      case '(': {
        const v = binary(0);
        const close = toks[p++];
        if (!close || close.t !== 'op' || close.v !== ')') throw new EvalError('missing )');
        return v;
      }
      case '-':
        return -unary();
      case '+':
        return unary();
      case '~':
        return ~unary();
      case '!':
        return unary() === 0n ? 1n : 0n;
      default:
        throw new EvalError(`unexpected ${t.v}`);
    }
  };
  const binary = (minPrec: number): bigint => {
    let left = unary();
    for (;;) {
      const t = peek();
      if (!t || t.t !== 'op') break;
      const prec = BINARY_PREC[t.v];
      if (prec === undefined || prec < minPrec) break;
      p++;
      const right = binary(prec + 1);
      switch (t.v) {
        case '|':
          left |= right;
          break;
        case '^':
          left ^= right;
          break;
        case '&':
          left &= right;
          break;
        case '<<':
          left <<= right;
          break;
        case '>>':
          left >>= right;
          break;
        case '+':
          left += right;
          break;
        case '-':
          left -= right;
          break;
        case '*':
          left *= right;
          break;
        case '/':
        case '%':
          if (right === 0n) throw new EvalError('division by zero');
          left = t.v === '/' ? left / right : left % right;
          break;
      }
    }
    return left;
  };
  const v = binary(0);
  if (p !== toks.length) throw new EvalError(`trailing tokens in: ${expr.trim()}`);
  return v;
}

/**
 * Parse the headers. `templateVars` substitutes `@NAME@` placeholders of
 * `.h.in` templates (e.g. LIBVIRT_VERSION_NUMBER in libvirt-common.h.in).
 */
export function parseCHeaders(files: readonly CHeaderFile[], templateVars: Readonly<Record<string, string>> = {}): CConstants {
  // raw expressions first, evaluated lazily so forward references work
  interface Pending {
    name: string;
    file: string;
    expr: string;
    kind: 'member' | 'define';
  }
  const pending = new Map<string, Pending>();
  const enumsRaw: { name: string; file: string; members: { name: string; expr: string }[]; order: number }[] = [];
  const definesRaw: { name: string; file: string; expr: string; order: number }[] = [];
  const skipped: { name: string; file: string; reason: string }[] = [];
  let order = 0;

  for (const f of files) {
    let text = stripComments(f.text).replace(/@([A-Za-z0-9_]+)@/g, (m, v: string) => templateVars[v] ?? m);
    // #defines (collected in document order with the enums, via offsets)
    const items: { at: number; run: () => void }[] = [];
    const defRe = /^[ \t]*#[ \t]*define[ \t]+([A-Za-z_][A-Za-z0-9_]*)(\(?)([^\n]*)$/gm;
    for (let m = defRe.exec(text); m; m = defRe.exec(text)) {
      const [, name, paren, rest] = m as unknown as [string, string, string, string];
      const at = m.index;
      items.push({
        at,
        run: () => {
          if (paren) return; // function-like macro
          if (name.startsWith('_') || name.includes('__') || /_H$/.test(name)) return; // include guards / internals
          const expr = rest.trim();
          if (expr === '') return;
          definesRaw.push({ name, file: f.file, expr, order: order++ });
        },
      });
    }
    // blank out all preprocessor lines (same length: offsets stay comparable)
    text = text.replace(/^[ \t]*#[^\n]*$/gm, (l) => ' '.repeat(l.length));
    const enumRe = /\btypedef\s+enum\s*(?:[A-Za-z_][A-Za-z0-9_]*\s*)?\{([^{}]*)\}\s*([A-Za-z_][A-Za-z0-9_]*)\s*;/g;
    for (let m = enumRe.exec(text); m; m = enumRe.exec(text)) {
      const [, body, name] = m as unknown as [string, string, string];
      items.push({
        at: m.index,
        run: () => {
          const members: { name: string; expr: string }[] = [];
          let prev: string | null = null;
          for (const part of body.split(',')) {
            const s = part.trim();
            if (s === '') continue;
            const mm = /^([A-Za-z_][A-Za-z0-9_]*)\s*(?:=\s*([\s\S]+))?$/.exec(s);
            if (!mm) throw new CodegenError(`${f.file}: cannot parse enum member '${s}' in ${name}`);
            const mname = mm[1] as string;
            const expr = mm[2] !== undefined ? mm[2].trim() : prev === null ? '0' : `(${prev}) + 1`;
            members.push({ name: mname, expr });
            prev = mname;
          }
          enumsRaw.push({ name, file: f.file, members, order: order++ });
        },
      });
    }
    items.sort((a, b) => a.at - b.at);
    for (const it of items) it.run();
  }

  for (const e of enumsRaw) {
    for (const m of e.members) {
      if (pending.has(m.name)) throw new CodegenError(`${e.file}: duplicate C constant ${m.name}`);
      pending.set(m.name, { name: m.name, file: e.file, expr: m.expr, kind: 'member' });
    }
  }
  const dupDefines = new Set<string>();
  for (const d of definesRaw) {
    const prev = pending.get(d.name);
    if (prev) {
      if (prev.kind === 'member' || prev.expr !== d.expr) dupDefines.add(d.name);
      continue;
    }
    pending.set(d.name, { name: d.name, file: d.file, expr: d.expr, kind: 'define' });
  }

  const values = new Map<string, bigint>();
  const failed = new Map<string, string>();
  const visiting = new Set<string>();
  const resolve = (name: string): bigint | undefined => {
    const have = values.get(name);
    if (have !== undefined) return have;
    if (failed.has(name) || dupDefines.has(name)) return undefined;
    const p = pending.get(name);
    if (!p) return undefined;
    if (visiting.has(name)) throw new EvalError(`circular definition of ${name}`);
    visiting.add(name);
    try {
      const v = evalCExpr(p.expr, resolve);
      values.set(name, v);
      return v;
    } catch (e) {
      if (!(e instanceof EvalError)) throw e;
      failed.set(name, e.message);
      return undefined;
    } finally {
      visiting.delete(name);
    }
  };

  const items: CConstants['items'][number][] = [];
  const all: { order: number; item: CConstants['items'][number] }[] = [];
  for (const e of enumsRaw) {
    const members: { name: string; value: bigint }[] = [];
    for (const m of e.members) {
      const v = resolve(m.name);
      if (v === undefined) throw new CodegenError(`${e.file}: cannot evaluate enum member ${m.name} of ${e.name}: ${failed.get(m.name) ?? '?'}`);
      members.push({ name: m.name, value: v });
    }
    all.push({ order: e.order, item: { kind: 'enum', def: { name: e.name, file: e.file, members } } });
  }
  const seenDefine = new Set<string>();
  for (const d of definesRaw) {
    if (seenDefine.has(d.name)) continue;
    seenDefine.add(d.name);
    if (dupDefines.has(d.name)) {
      skipped.push({ name: d.name, file: d.file, reason: 'defined more than once with different values' });
      continue;
    }
    const v = resolve(d.name);
    if (v === undefined) {
      skipped.push({ name: d.name, file: d.file, reason: failed.get(d.name) ?? 'not an integer' });
      continue;
    }
    all.push({ order: d.order, item: { kind: 'define', def: { name: d.name, file: d.file, value: v } } });
  }
  all.sort((a, b) => a.order - b.order);
  for (const a of all) items.push(a.item);

  const names = new Set<string>();
  for (const it of items) {
    if (it.kind === 'enum') {
      if (names.has(it.def.name)) throw new CodegenError(`${it.def.file}: duplicate C enum type ${it.def.name}`);
      names.add(it.def.name);
    }
  }

  const exported = new Map<string, bigint>();
  for (const it of items) {
    if (it.kind === 'enum') for (const m of it.def.members) exported.set(m.name, m.value);
    else exported.set(it.def.name, it.def.value);
  }
  return { items, values: exported, skipped };
}
