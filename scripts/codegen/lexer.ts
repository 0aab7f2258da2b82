/**
 * Tokenizer for rpcgen .x files.
 *
 * Comments are dropped, except that the text of the last `/** ... *\/`
 * comment before a token is attached to it (`doc`), which is how the
 * `@generate` / `@readstream` / `@priority` / `@acl` annotations of the
 * procedure enums reach the parser. Lines starting with `%` are C
 * passthrough lines and become a single token.
 */
import { CodegenError, type Loc } from './ast.js';

export type TokenKind = 'ident' | 'number' | 'punct' | 'passthrough' | 'eof';

export interface Token {
  readonly kind: TokenKind;
  readonly text: string;
  readonly loc: Loc;
  /** body of the nearest preceding `/** *\/` comment, if any since the previous token */
  readonly doc?: string;
}

const PUNCT = new Set(['{', '}', '(', ')', '[', ']', '<', '>', ';', ',', '=', '*', ':']);

export function tokenize(src: string, file: string): Token[] {
  const out: Token[] = [];
  let i = 0;
  let line = 1;
  let lineStart = 0;
  let doc: string | undefined;
  const loc = (at: number): Loc => ({ file, line, col: at - lineStart + 1 });
  const push = (kind: TokenKind, text: string, at: Loc): void => {
    out.push(doc === undefined ? { kind, text, loc: at } : { kind, text, loc: at, doc });
    doc = undefined;
  };

  while (i < src.length) {
    const c = src[i] as string;
    if (c === '\n') {
      i++;
      line++;
      lineStart = i;
      continue;
    }
    if (c === ' ' || c === '\t' || c === '\r' || c === '\f' || c === '\v') {
      i++;
      continue;
    }
    // '%' passthrough: only at the start of a line (after optional blanks)
    if (c === '%' && /^[ \t]*$/.test(src.slice(lineStart, i))) {
      const at = loc(i);
      let end = src.indexOf('\n', i);
      if (end < 0) end = src.length;
      push('passthrough', src.slice(i + 1, end).replace(/\r$/, ''), at);
      i = end;
      continue;
    }
    if (c === '/' && src[i + 1] === '*') {
      const at = loc(i);
      const end = src.indexOf('*/', i + 2);
      if (end < 0) throw new CodegenError('unterminated comment', at);
      const body = src.slice(i + 2, end);
      if (body.startsWith('*') && !body.startsWith('*/')) doc = body.slice(1);
      for (let j = i; j < end; j++) {
        if (src[j] === '\n') {
          line++;
          lineStart = j + 1;
        }
      }
      i = end + 2;
      continue;
    }
    if (c === '/' && src[i + 1] === '/') {
      while (i < src.length && src[i] !== '\n') i++;
      continue;
    }
    if (/[A-Za-z_]/.test(c)) {
      const at = loc(i);
      let j = i + 1;
      while (j < src.length && /[A-Za-z0-9_]/.test(src[j] as string)) j++;
      push('ident', src.slice(i, j), at);
      i = j;
      continue;
    }
    if (/[0-9]/.test(c) || (c === '-' && /[0-9]/.test(src[i + 1] ?? ''))) {
      const at = loc(i);
      const m = /^-?(0[xX][0-9a-fA-F]+|[0-9]+)/.exec(src.slice(i, i + 40));
      if (!m) throw new CodegenError('bad number', at);
      const after = src[i + m[0].length] ?? '';
      if (/[A-Za-z0-9_]/.test(after)) throw new CodegenError(`bad number '${m[0]}${after}'`, at);
      push('number', m[0], at);
      i += m[0].length;
      continue;
    }
    if (PUNCT.has(c)) {
      push('punct', c, loc(i));
      i++;
      continue;
    }
    throw new CodegenError(`unexpected character '${c}'`, loc(i));
  }
  push('eof', '', loc(i));
  return out;
}

/** Parse an rpcgen integer literal: decimal, 0x hex, or 0-prefixed octal; optionally negative. */
export function parseIntLiteral(raw: string): bigint {
  const neg = raw.startsWith('-');
  const body = neg ? raw.slice(1) : raw;
  let v: bigint;
  if (/^0[xX]/.test(body)) v = BigInt(body);
  else if (/^0[0-7]+$/.test(body)) v = BigInt('0o' + body.slice(1));
  else if (/^[0-9]+$/.test(body)) v = BigInt(body);
  else throw new CodegenError(`bad integer literal '${raw}'`);
  return neg ? -v : v;
}

/** `@key: value` lines of a doc comment body (leading `*` and blanks stripped). */
export function parseAnnotations(doc: string | undefined): { key: string; value: string }[] {
  if (doc === undefined) return [];
  const out: { key: string; value: string }[] = [];
  for (const rawLine of doc.split('\n')) {
    const l = rawLine.replace(/^\s*\*?\s?/, '').trim();
    const m = /^@(\w+)\s*:\s*(.*?)\s*$/.exec(l);
    if (m) out.push({ key: m[1] as string, value: m[2] as string });
  }
  return out;
}
